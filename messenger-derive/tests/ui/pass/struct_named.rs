//! A struct with named fields: the wire name is the type's name, the reply `()`.
#![deny(warnings)]

use messenger::Event;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Event)]
struct Ping {
    seq: u64,
    payload: String,
}

/// A where clause without generics is carried over.
#[derive(Serialize, Deserialize, Event)]
#[event(name = "pong", reply = u64)]
struct Pong
where
    u64: Copy,
{
    seq: u64,
}

fn main() {
    let _ = Ping { seq: 1, payload: String::new() };
    let _ = Pong { seq: 1 };
    assert_eq!(<Ping as Event>::NAME, "Ping");
    let (): <Ping as Event>::Reply = ();
    assert_eq!(<Pong as Event>::NAME, "pong");
    let _: <Pong as Event>::Reply = 1u64;
}
