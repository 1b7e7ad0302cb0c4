//! A unit struct.
#![deny(warnings)]

use messenger::Event;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Event)]
#[event(name = "pid", reply = u32)]
struct Pid;

fn main() {
    assert_eq!(<Pid as Event>::NAME, "pid");
    let _: <Pid as Event>::Reply = 7u32;
}
