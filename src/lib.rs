//! `multiprocess`: run a service as a master plus N worker processes that share its ports,
//! are supervised and reloaded without downtime, and talk with typed messages.
//!
//! One dependency for the whole SDK: the messenger's API ([`Event`], [`Messenger`], [`Hub`],
//! ...) and the cluster's ([`Cluster`], [`Worker`], [`Master`], [`serve`], ...). The cluster's
//! [`Error`] is the one `main` returns; the messenger's own is [`messenger::Error`].

#![warn(missing_docs)]

// Lets `#[derive(Event)]` in this package's examples and tests name it `::multiprocess`.
extern crate self as multiprocess;

pub use messenger::*;

pub use cluster::{
    serve, serve_with, Accept, BoxError, Builder, Cluster, Error, ListenAddr, LocalAddr, Master,
    Options, Phase, ServeOptions, SlotStatus, Status, Worker, WorkerState, WorkerStatus,
    WORKER_ENV,
};

/// The messenger crate, for what is not re-exported at the top (its [`Error`](messenger::Error)).
pub use messenger;

/// The cluster crate.
pub use cluster;

/// The README's code, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
