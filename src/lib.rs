//! Run a service as a **master plus N worker processes**: the workers share the master's
//! listening ports, crashed ones are replaced, all of them reload rolling with zero failed
//! requests, and they talk to each other with **typed messages** routed through the master.
//!
//! # The shape of a program
//!
//! One binary is both the master and its workers. [`Cluster::builder`] sets it up, and `run`
//! makes this process the master or, when the master started it, one of its workers (the master
//! re-executes the same binary with [`WORKER_ENV`] set):
//!
//! ```no_run
//! use multiprocess::{Cluster, Event};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize, Event)]
//! #[event(reply = u32)]
//! struct Pid;
//!
//! fn main() -> multiprocess::Result<()> {
//!     tracing_subscriber::fmt().init(); // crashes, replacements and reloads are logged here
//!     Cluster::builder()
//!         .workers(4)
//!         .listen("127.0.0.1:3000") // bound once by the master, shared by every worker
//!         .worker(|w| async move {
//!             w.messenger().on(|_: Pid| async { std::process::id() });
//!             w.ready().await?; // Ready: it gets messages and counts for `map`
//!             let pids: Vec<u32> = w.messenger().map(Pid).await?;
//!             println!("the workers: {pids:?}");
//!             Ok(())
//!         })
//!         .run()
//! }
//! ```
//!
//! # Messages
//!
//! Events are Rust types that derive [`Event`]; the reply type is part of the event's type, so
//! results need no casts. Every process holds a [`Messenger`]:
//!
//! | call | who runs the handler | returns |
//! |---|---|---|
//! | [`broadcast`](Messenger::broadcast) | every Ready worker, the sender too | `()` once queued |
//! | [`consume`](Messenger::consume) | one Ready worker that handles it, spread evenly | the typed reply |
//! | [`consume_once`](Messenger::consume_once) | one worker, once per key, whoever asks | the same reply to every caller |
//! | [`map`](Messenger::map) | every Ready worker | `Vec<Reply>` in slot order |
//! | [`request`](Messenger::request) | the Ready worker of one slot | the typed reply |
//! | [`request_master`](Messenger::request_master) | the master | the typed reply |
//!
//! Handlers are closures ([`Messenger::on`], [`Messenger::on_from`] to learn the sender,
//! [`Messenger::on_with`] to share state) or, for an enum event, one object with a method per
//! case ([`Messenger::handle`], with the `<Enum>Handler` trait the derive writes).
//!
//! # Errors
//!
//! Two types, one for each layer:
//! - [`CallError`]: what a [`Messenger`] call fails with (no handler, a deadline, a worker that
//!   went away, a queue that is full, ...). Match on its variants; it is also what travels back
//!   from a handler that failed in another process.
//! - [`Error`]: what the cluster and your bootstrap return (a bad configuration, a port that
//!   cannot be bound, a failed reload, ...); a `CallError` converts into it with `?`
//!   (as [`Error::Messenger`]). [`Result`] is a `Result` with this error.
//!
//! ```
//! use multiprocess::{CallError, Error, Event, Messenger};
//! # use serde::{Deserialize, Serialize};
//! # #[derive(Serialize, Deserialize, Event)]
//! # #[event(reply = u32)]
//! # struct Load;
//!
//! /// The least loaded worker's load, or an error the caller can tell apart.
//! async fn least_load(messenger: &Messenger) -> multiprocess::Result<u32> {
//!     let loads: Vec<u32> = match messenger.map(Load).await {
//!         Err(CallError::NoHandler { .. }) => return Err(Error::Config("no worker reports its load".into())),
//!         other => other?, // any other `CallError` becomes `Error::Messenger`
//!     };
//!     loads.into_iter().min().ok_or_else(|| Error::Config("no Ready worker".into()))
//! }
//! ```
//!
//! # Logs
//!
//! Everything the cluster has to say (a worker that crashed and the backoff before its
//! replacement, an unhealthy one replaced, each reload's outcome, a peer cut off for breaking
//! the protocol) goes through [`tracing`](https://docs.rs/tracing): install a subscriber in
//! `main` (as above, with `tracing-subscriber`) or you will see none of it. The workers inherit
//! the master's standard output and error, so their lines and the master's end up in the same
//! place.
//!
//! # Operating it
//!
//! - [`Builder::control_socket`]: the `multiprocess` CLI (`status`, `monit`, `reload`,
//!   `scale N`, `stop`) talks to the master over a Unix socket only its user can open.
//! - [`Builder::metrics`] (feature `metrics`, on by default): Prometheus text at
//!   `http://addr/metrics`, the cluster's own metrics and what every process records with the
//!   [`metrics`] facade, merged at each scrape.
//! - [`Master::scale`], SIGTTIN / SIGTTOU; [`Builder::recycle_after`] and its siblings;
//!   systemd's notify protocol and socket activation, found in the environment.
//! - [`Builder::single_process`]: the workers as tasks of the master's process, for a container
//!   whose orchestrator runs the replicas, or for a debugger.
//!
//! The README's "Operating it" has the details of each.
//!
//! # Tests without processes
//!
//! [`testing::MockCluster`] connects N worker Messengers and the master's to the real Hub over
//! in-memory pipes, so handlers are unit-tested with the same routing rules as in production:
//!
//! ```
//! use multiprocess::testing::MockCluster;
//! use multiprocess::Event;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize, Event)]
//! #[event(reply = u32)]
//! struct Double(u32);
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), multiprocess::CallError> {
//! let cluster = MockCluster::new(2).await?;
//! for worker in cluster.workers() {
//!     worker.on(|Double(n)| async move { n * 2 });
//! }
//! cluster.ready().await?;
//! assert_eq!(cluster.worker(0).map(Double(21)).await?, vec![42, 42]);
//! # Ok(())
//! # }
//! ```
//!
//! The README has the guarantees (what each call promises, the bounds on what a worker can
//! cost the others) and `docs/design.md` the architecture, a worker's life and the wire format.

#![warn(missing_docs)]

// Lets `#[derive(Event)]` in this package's examples and tests name it `::multiprocess`.
extern crate self as multiprocess;

pub use messenger::{
    async_trait, testing, BoxFuture, CallKind, CallStats, Config, Dispatch, Event, Messenger, Peer,
    WorkerId,
};

/// What a [`Messenger`] call fails with: the messenger's error (see [Errors](crate#errors)).
pub use messenger::Error as CallError;

pub use cluster::{
    serve, serve_with, Accept, BoxError, Builder, Cluster, Error, ListenAddr, LocalAddr, Master,
    Options, Phase, ServeOptions, SlotStatus, Status, Totals, Worker, WorkerState, WorkerStatus,
    SINGLE_PROCESS_ENV, WORKER_ENV,
};

/// The [`metrics`](https://docs.rs/metrics) facade the cluster's recorder takes: what a
/// worker (or the master) records with it is on the master's endpoint
/// ([`Builder::metrics`]). Record with this one: a facade of another version records nowhere
/// the cluster sees.
#[cfg(feature = "metrics")]
pub use cluster::metrics;

/// Beyond one host: the settings of [`Builder::nats`], and the NATS client they use.
#[cfg(feature = "nats")]
pub use messenger::uplink;

pub use messenger::{HostId, RemoteHost};

/// A `Result` whose error is the cluster's [`Error`] (into which a [`CallError`] converts).
pub type Result<T, E = Error> = std::result::Result<T, E>;

// The two crates underneath are not re-exported whole: this list is the API. (They are
// published as `multiprocess-messenger` and `multiprocess-cluster`, for a program that needs
// only one layer.)

/// The README's code, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
