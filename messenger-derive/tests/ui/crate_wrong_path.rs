use messenger::Event;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Event)]
#[event(crate = "::no_such_crate")]
struct Ping;

fn main() {}
