use messenger::Event;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Event)]
struct Borrowed<'a> {
    text: &'a str,
}

fn main() {}
