//! `multiprocess`: run a service as a master plus N worker processes that share its ports,
//! are supervised and reloaded without downtime, and talk with typed messages.
//!
//! This crate re-exports the public API of `messenger` (typed events, the Hub, the mock
//! transport) and `cluster` (processes), so a service adds one dependency.

// Lets `#[derive(Event)]` in this package's examples and tests name it `::multiprocess`.
extern crate self as multiprocess;

pub use messenger::*;
