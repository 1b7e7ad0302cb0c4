use messenger::Event;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Event)]
#[event(crate = 42)]
struct Ping;

fn main() {}
