//! Typed events between the processes of a cluster, routed by the master's Hub.
//!
//! Every process holds a [`Messenger`]. Events are Rust types that derive [`Event`]; the reply
//! type is part of the event's type, so `map` returns a `Vec` of it with no casts. Every
//! message goes through the [`Hub`] in the master, the one place where routing rules live.
//!
//! | call | who runs the handler | returns |
//! |---|---|---|
//! | [`broadcast`](Messenger::broadcast) | every Ready worker, the sender too; all its handlers | `()` once queued |
//! | [`consume`](Messenger::consume) | one Ready worker that handles it, spread evenly | the typed reply |
//! | [`consume_once`](Messenger::consume_once) | one worker, once per key, whoever asks | the same reply to every caller |
//! | [`map`](Messenger::map) | every Ready worker (its first handler) | `Vec<Reply>` in slot order |
//! | [`request`](Messenger::request) | the Ready worker of one slot | the typed reply |
//! | [`request_master`](Messenger::request_master) | the master's handler | the typed reply |
//!
//! Every call has a deadline; a worker that dies fails what it owed at once; errors are one
//! [`Error`] enum. The [`testing`] module runs all of it in one process, over the real Hub.
//! With the feature `nats`, Hubs on several hosts join over NATS (`uplink`) and the same
//! calls span them: see the `uplink` module.

#![warn(missing_docs)]

// Lets `#[derive(Event)]` name this crate `::messenger` from inside it too.
extern crate self as messenger;

mod builtin;
mod busy;
mod config;
mod endpoint;
mod error;
mod event;
mod hub;
mod payload;
mod peer;
mod stats;
pub mod testing;
mod transport;
#[cfg(feature = "nats")]
pub mod uplink;
// The frames between the processes: public only so that this crate's own fuzz targets,
// benchmarks and protocol tests can speak them; not part of the API, and no semver promise.
#[doc(hidden)]
pub mod wire;

pub use async_trait::async_trait;
pub use config::{Config, MAX_DURATION};
pub use endpoint::Messenger;
pub use error::{Error, Result};
pub use event::{BoxFuture, Dispatch, Event};
pub use hub::{HostId, Hub, HubEvent, PeerState, RemoteHost};
pub use messenger_derive::Event;
pub use peer::{Peer, WorkerId};
pub use stats::{CallKind, CallStats, HubStats, PeerStats, LATENCY_BUCKETS};
