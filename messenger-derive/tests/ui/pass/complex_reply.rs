//! Reply types with generics, commas inside `<>`, tuples and paths.
#![deny(warnings)]

use std::collections::HashMap;

use messenger::{async_trait, Event};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Event)]
#[event(reply = Vec<Option<String>>, name = "lookup")]
struct Lookup;

#[derive(Serialize, Deserialize, Event)]
#[event(reply = HashMap<String, (u8, Vec<bool>)>, name = "stats")]
enum Stats {
    All,
    One(String),
}

#[derive(Serialize, Deserialize, Event)]
#[event(reply = ::std::result::Result<u32, ::std::string::String>)]
struct Fallible;

struct Handler;

#[async_trait]
impl StatsHandler for Handler {
    async fn all(&self) -> HashMap<String, (u8, Vec<bool>)> {
        HashMap::new()
    }
    async fn one(&self, arg0: String) -> HashMap<String, (u8, Vec<bool>)> {
        HashMap::from([(arg0, (1, vec![true]))])
    }
}

fn main() {
    let _: <Lookup as Event>::Reply = vec![Some(String::new()), None];
    let _: <Stats as Event>::Reply = HashMap::<String, (u8, Vec<bool>)>::new();
    let _: <Fallible as Event>::Reply = Ok::<u32, String>(1);
    let _ = (Lookup, Fallible, Stats::All, Stats::One(String::new()), Handler);
}
