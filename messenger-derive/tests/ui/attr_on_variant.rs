use messenger::Event;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Event)]
enum Admin {
    #[event(reply = String)]
    Echo(String),
    Shutdown,
}

fn main() {}
