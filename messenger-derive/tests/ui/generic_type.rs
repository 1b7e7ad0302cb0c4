use messenger::Event;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Event)]
struct Wrapper<T> {
    inner: T,
}

fn main() {}
