use messenger::Event;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Event)]
enum Admin<'a, T, U> {
    Echo(&'a str),
    Set(T, U),
}

fn main() {}
