//! Master and worker processes: shared listeners, supervision, rolling reload.
//!
//! [`Cluster::builder`] describes a cluster; [`Builder::run`] makes the process its master or,
//! when the master re-executed the binary, one of its workers. The master binds the listeners
//! once, starts one worker per slot, routes their messages through the messenger's Hub,
//! restarts crashed workers (with backoff), replaces unhealthy ones new-first, rolls them all
//! on reload (SIGUSR2, [`Master::reload`], [`Worker::request_reload`]) and drains them on
//! SIGTERM/SIGINT.
//!
//! # Balancing connections
//! Every worker accepts on the same inherited listening socket: one kernel accept queue, taken
//! from by whichever worker is free. No connection waits behind a busy, crashed or draining
//! worker; see [`listen`] for the alternative and why it was not chosen.

mod builder;
mod control;
mod env;
mod error;
pub mod listen;
mod master;
mod options;
mod serve;
mod spawn;
mod status;
mod supervisor;
mod worker;

pub use builder::{Builder, Cluster};
pub use env::WORKER_ENV;
pub use error::{BoxError, Error};
pub use listen::{ListenAddr, LocalAddr};
pub use master::Master;
pub use options::Options;
pub use serve::{serve, serve_with, Accept, ServeOptions};
pub use status::{Phase, SlotStatus, Status, WorkerState, WorkerStatus};
pub use worker::Worker;
