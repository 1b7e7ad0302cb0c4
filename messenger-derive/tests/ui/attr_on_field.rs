use messenger::Event;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Event)]
struct Ping {
    #[event(name = "seq")]
    seq: u64,
}

fn main() {}
