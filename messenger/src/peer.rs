//! Who is who: the master and the workers, by slot and generation.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One worker process: its slot (0..N-1, kept by its replacements) and its generation (grows
/// with every process started in that slot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct WorkerId {
    /// The slot, 0..N-1: "worker order" is slot order.
    pub slot: u32,
    /// The generation: a new process in the same slot has a higher one.
    pub generation: u64,
}

impl WorkerId {
    /// The worker in `slot`, generation `generation`.
    pub const fn new(slot: u32, generation: u64) -> Self {
        WorkerId { slot, generation }
    }
}

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "slot {} gen {}", self.slot, self.generation)
    }
}

/// One master (one host's Hub) in a cluster that spans hosts: a number drawn at random when it
/// joins, so that a master restarted on the same machine is a new host to the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct HostId(pub u64);

impl fmt::Display for HostId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// An end of the messenger: the master or one worker. The Hub stamps every message with the
/// peer its connection belongs to, so a handler can trust it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Peer {
    /// The master process.
    Master,
    /// A worker process.
    Worker(WorkerId),
    /// The master (`worker: None`) or a worker of another host, in a cluster joined over NATS
    /// (feature `nats`): as that host's Hub stamped it.
    Remote {
        /// The host.
        host: HostId,
        /// Its worker, or `None` for its master.
        worker: Option<WorkerId>,
    },
}

impl Peer {
    /// The worker's id, if this is a worker of this host.
    pub fn worker(self) -> Option<WorkerId> {
        match self {
            Peer::Worker(id) => Some(id),
            Peer::Master | Peer::Remote { .. } => None,
        }
    }

    /// The host, if this peer is on another one.
    pub fn host(self) -> Option<HostId> {
        match self {
            Peer::Remote { host, .. } => Some(host),
            Peer::Master | Peer::Worker(_) => None,
        }
    }

    /// The worker's slot, if this is a worker.
    pub fn slot(self) -> Option<u32> {
        self.worker().map(|id| id.slot)
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Master => f.write_str("the master"),
            Peer::Worker(id) => write!(f, "worker {id}"),
            Peer::Remote { host, worker: None } => write!(f, "the master of host {host}"),
            Peer::Remote {
                host,
                worker: Some(id),
            } => write!(f, "worker {id} of host {host}"),
        }
    }
}

impl From<WorkerId> for Peer {
    fn from(id: WorkerId) -> Self {
        Peer::Worker(id)
    }
}
