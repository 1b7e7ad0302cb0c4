//! The user's own items named like the paths the generated code uses cannot break it.
#![deny(warnings)]
#![allow(dead_code)]
#![allow(non_camel_case_types)]

use ::messenger::Event as DeriveEvent;
use serde::{Deserialize, Serialize};

// Items with the names of the traits and types the generated code refers to.
struct Event;
struct Dispatch;
struct BoxFuture;
struct Result;
struct Option;
struct Arc;
struct Send;
struct Sync;
struct Pin;
struct Future;
struct String;
type Vec = ();
mod messenger {}
mod core {}
mod std {}
mod marker {}
fn async_trait() {}
fn unreachable() {}
// Functions named like the generated locals.
fn __handler() {}
fn __field0() {}

#[derive(Serialize, Deserialize, DeriveEvent)]
#[event(reply = u32)]
struct Ping;

/// Fields named like the generated locals and parameters.
#[derive(Serialize, Deserialize, DeriveEvent)]
enum Admin {
    Echo(u8),
    Set { handler: u8, __handler: u8, __field0: u8, arg0: u8 },
    Stop,
}

struct Handler;

#[::messenger::async_trait]
impl AdminHandler for Handler {
    async fn echo(&self, _: u8) {}
    async fn set(&self, _: u8, _: u8, _: u8, _: u8) {}
    async fn stop(&self) {}
}

fn dispatch(event: Admin) -> ::messenger::BoxFuture<'static, ()> {
    let handler: ::std::sync::Arc<dyn AdminHandler> = ::std::sync::Arc::new(Handler);
    ::messenger::Dispatch::dispatch(event, ::messenger::Peer::Master, handler)
}

/// A user `Box` in scope: fine for a struct event. (Not for an enum event: `#[async_trait]`
/// writes `Box` unqualified in the handler trait, dtolnay/async-trait#132, and so would the
/// user's own `#[async_trait] impl` of it.)
mod user_box {
    use ::messenger::Event as DeriveEvent;
    use serde::{Deserialize, Serialize};

    struct Box;

    #[derive(Serialize, Deserialize, DeriveEvent)]
    pub struct Boxed(u8);
}

fn main() {
    assert_eq!(<Ping as ::messenger::Event>::NAME, "Ping");
    let _ = (Admin::Echo(0), Admin::Set { handler: 0, __handler: 0, __field0: 0, arg0: 0 });
    let _ = (Ping, dispatch(Admin::Stop));
}
