use messenger::Event;
use serde::{Deserialize, Serialize};

#[allow(non_camel_case_types)]
#[derive(Serialize, Deserialize, Event)]
#[event(name = "", colour = "blue")]
enum Admin {
    #[event(name = "echo")]
    Echo(String),
    Set_Level(u8),
    SetLevel(u8),
}

fn main() {}
