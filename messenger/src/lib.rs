//! Typed events between the processes of a cluster, routed by the master's Hub.

mod event;

pub use async_trait::async_trait;
pub use event::{BoxFuture, Dispatch, Event};
pub use messenger_derive::Event;
