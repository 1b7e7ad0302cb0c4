//! `multiprocess`: a master plus N worker processes with a typed messenger.
//!
//! One dependency for the whole SDK: the messenger's API ([`Event`], [`Messenger`], [`Hub`],
//! ...) and the cluster's ([`Cluster`], [`Worker`], [`Master`], [`serve`], ...). The cluster's
//! [`Error`] is the one `main` returns; the messenger's own is [`messenger::Error`].
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
