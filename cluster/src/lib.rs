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
//! from by whichever worker is free. No connection waits behind a busy, crashed, hung or
//! draining worker, and nothing queued is lost when a worker dies. The alternative, one
//! `SO_REUSEPORT` socket per worker, spreads connections by a hash of the client's address, but
//! every connection queued on a socket whose worker dies is reset, and a slow worker keeps
//! getting its share.
//!
//! Measured with the release demo cluster, 2 workers on 2 cores:
//! - short connections (one request each) spread evenly: 246 / 254 of 500 sequential ones,
//!   1007 / 993 of 2000 from 8 concurrent clients (after each accept the accept loop yields,
//!   without which the sequential split was 144 / 356);
//! - a burst of keep-alive connections opened at once can be spread unevenly: whichever worker
//!   wakes first takes most of it (wrk with 64 connections: 44 / 20, 54 / 10 and 36 / 32; with
//!   256: 73 / 183, 33 / 223 and 205 / 55). Throughput did not suffer from it in any of these
//!   runs (with a thread per worker, the default on 2 CPUs: 128k and 123k requests/s on
//!   `/hello`; the busier worker gets the CPU time the other does not use); what it costs is
//!   blast radius: a crash drops more of the open connections. A worker that drains sends
//!   `Connection: close`, so those clients reconnect and are spread again.

//! # What it exports
//! - [`Cluster`] and its [`Builder`]: describe the cluster, then run it;
//! - [`Master`] and [`Worker`]: what the master's and each worker's bootstrap get;
//! - [`serve`], [`serve_with`] (with [`ServeOptions`]), and the [`Accept`] listeners they take:
//!   HTTP that drains without losing a request;
//! - [`Status`], [`SlotStatus`], [`WorkerStatus`], [`Phase`], [`WorkerState`]: what the master
//!   tells about its workers;
//! - [`ListenAddr`], [`LocalAddr`]: where the listeners listen; [`Options`]: the settings as
//!   the builder holds them;
//! - [`Error`], [`BoxError`]; [`WORKER_ENV`], the variable that makes a process a worker.

#![warn(missing_docs)]

mod builder;
mod control;
mod control_socket;
mod env;
mod error;
mod ipc;
mod listen;
mod master;
mod memory;
mod options;
mod procfs;
mod prometheus;
mod runtime;
mod serve;
mod spawn;
mod status;
mod supervisor;
mod systemd;
mod worker;

/// The [`metrics`](https://docs.rs/metrics) facade, as the cluster's recorder takes it: record
/// with this one (a facade of another version records nowhere the cluster sees).
#[cfg(feature = "metrics")]
pub use ::metrics;
pub use builder::{Builder, Cluster};
pub use env::{SINGLE_PROCESS_ENV, WORKER_ENV};
pub use error::{BoxError, Error};
pub use listen::{ListenAddr, LocalAddr};
pub use master::Master;
pub use options::Options;
pub use serve::{serve, serve_with, Accept, ServeOptions};
pub use status::{Phase, SlotStatus, Status, Totals, WorkerState, WorkerStatus};
pub use worker::Worker;
