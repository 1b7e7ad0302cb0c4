use messenger::Event;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Event)]
struct Buffer<const N: usize> {
    data: Vec<u8>,
}

fn main() {}
