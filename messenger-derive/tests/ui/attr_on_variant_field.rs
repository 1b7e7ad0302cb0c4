use messenger::Event;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Event)]
enum Admin {
    SetLevel {
        #[event(reply = u8)]
        level: u8,
    },
}

fn main() {}
