use messenger::Event;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Event)]
#[event(reply = "Vec<u32>")]
struct Ping;

fn main() {}
