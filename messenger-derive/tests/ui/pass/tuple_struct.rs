//! A tuple struct, with its attributes split over two `#[event(...)]` and next to serde's.
#![deny(warnings)]

use messenger::Event;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Event)]
#[event(name = "lookup")]
#[serde(transparent)]
#[event(reply = Option<String>)]
struct Lookup(String);

fn main() {
    let _ = Lookup(String::new());
    assert_eq!(<Lookup as Event>::NAME, "lookup");
    let _: <Lookup as Event>::Reply = None::<String>;
}
