use messenger::Event;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Event)]
#[event(crate = "not a path")]
struct Ping;

fn main() {}
