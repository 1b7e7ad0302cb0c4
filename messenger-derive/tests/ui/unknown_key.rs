use messenger::Event;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Event)]
#[event(nmae = "ping")]
struct Ping;

fn main() {}
