use messenger::Event;
use serde::{Deserialize, Serialize};

#[allow(non_camel_case_types)]
#[derive(Serialize, Deserialize, Event)]
enum Admin {
    Super,
    Crate,
    __,
    _2Fa,
}

fn main() {}
