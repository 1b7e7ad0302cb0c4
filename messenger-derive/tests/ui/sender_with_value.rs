use messenger::Event;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Event)]
#[event(sender = true)]
enum Admin {
    Flush,
}

fn main() {}
