//! `#[event(crate = ...)]`: the messenger crate reached through a re-export, as a string or a path.
#![deny(warnings)]

use serde::{Deserialize, Serialize};

mod reexport {
    pub use ::messenger as msg;
}

#[derive(Serialize, Deserialize, reexport::msg::Event)]
#[event(crate = "crate::reexport::msg", reply = u8)]
struct ByString;

#[derive(Serialize, Deserialize, reexport::msg::Event)]
#[event(crate = crate::reexport::msg)]
enum ByPath {
    Ping,
}

struct Handler;

#[reexport::msg::async_trait]
impl ByPathHandler for Handler {
    async fn ping(&self) {}
}

fn main() {
    assert_eq!(<ByString as reexport::msg::Event>::NAME, "ByString");
    let _: <ByString as reexport::msg::Event>::Reply = 1u8;
    let _ = (ByString, ByPath::Ping, Handler);
}
