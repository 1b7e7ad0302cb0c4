use messenger::Event;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Event)]
#[event(sender)]
enum Mail {
    Deliver { from: String, to: String },
}

fn main() {}
