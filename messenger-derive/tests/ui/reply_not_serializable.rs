use messenger::Event;
use serde::{Deserialize, Serialize};

struct Handle;

#[derive(Serialize, Deserialize, Event)]
#[event(reply = Handle)]
struct Open;

fn main() {}
