use messenger::Event;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Event)]
#[event(reply = u32)]
#[event(reply = u64)]
struct Ping;

fn main() {}
