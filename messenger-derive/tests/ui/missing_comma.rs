use messenger::Event;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Event)]
#[event(name = "ping" reply = u32)]
struct Ping;

fn main() {}
