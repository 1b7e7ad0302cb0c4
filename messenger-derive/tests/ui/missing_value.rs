use messenger::Event;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Event)]
#[event(reply = , name = "ping")]
struct Ping;

fn main() {}
