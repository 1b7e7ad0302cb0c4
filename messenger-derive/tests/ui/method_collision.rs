use messenger::Event;
use serde::{Deserialize, Serialize};

#[allow(non_camel_case_types)]
#[derive(Serialize, Deserialize, Event)]
enum Admin {
    FooBar,
    Foo_Bar(u32),
}

fn main() {}
