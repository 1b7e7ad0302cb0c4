//! One connection as the Hub sees it: what the peer handles, where it is in its life, and the
//! queue of what is on its way to it ([`Outbound`], in `outbound/`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use tokio_util::sync::CancellationToken;

use super::outbound::Outbound;
use crate::{Peer, WorkerId};

/// A connected peer.
pub(super) struct Conn {
    /// The events it handles (copies of the names it announced, never slices of a frame).
    pub handlers: HashSet<Bytes>,
    /// It was drained or superseded: it may never be Ready again.
    pub retired: bool,
    /// Its request to be Ready, waiting for the master's answer (the request's id).
    pub ready_call: Option<u64>,
    pub out: Outbound,
    /// Ends its tasks.
    pub stop: Stop,
}

/// Ends a connection's tasks, and tells its reader, under the Hub's lock, that frames it still
/// reads are no longer its peer's (the id may be a newer connection's): one load per frame,
/// where a token's own check takes a lock.
#[derive(Clone, Default)]
pub(super) struct Stop {
    token: CancellationToken,
    stopped: Arc<AtomicBool>,
}

impl Stop {
    pub fn stop(&self) {
        // Set and read under the Hub's lock: no ordering needed beyond it.
        self.stopped.store(true, Ordering::Relaxed);
        self.token.cancel();
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }

    /// What the connection's tasks wait on.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }
}

impl Conn {
    pub fn new(out: Outbound) -> Conn {
        Conn {
            handlers: HashSet::default(),
            retired: false,
            ready_call: None,
            out,
            stop: Stop::default(),
        }
    }
}

/// The connections of this host's peers, by peer: the master's and each worker's. Looked up
/// several times per frame routed, so a worker's is keyed by its [`WorkerId`] alone (a small
/// key the lookups inline), never by the wider [`Peer`].
#[derive(Default)]
pub(super) struct Conns {
    master: Option<Conn>,
    workers: HashMap<WorkerId, Conn>,
}

impl Conns {
    #[inline]
    pub fn get(&self, peer: &Peer) -> Option<&Conn> {
        match peer {
            Peer::Master => self.master.as_ref(),
            Peer::Worker(id) => self.workers.get(id),
            Peer::Remote { .. } => None,
        }
    }

    #[inline]
    pub fn get_mut(&mut self, peer: &Peer) -> Option<&mut Conn> {
        match peer {
            Peer::Master => self.master.as_mut(),
            Peer::Worker(id) => self.workers.get_mut(id),
            Peer::Remote { .. } => None,
        }
    }

    pub fn contains_key(&self, peer: &Peer) -> bool {
        self.get(peer).is_some()
    }

    /// Keeps `conn` as `peer`'s (another host's peer has none here: not kept).
    pub fn insert(&mut self, peer: Peer, conn: Conn) {
        match peer {
            Peer::Master => self.master = Some(conn),
            Peer::Worker(id) => {
                self.workers.insert(id, conn);
            }
            Peer::Remote { .. } => debug_assert!(false, "a connection for another host's peer"),
        }
    }

    pub fn remove(&mut self, peer: &Peer) -> Option<Conn> {
        match peer {
            Peer::Master => self.master.take(),
            Peer::Worker(id) => self.workers.remove(id),
            Peer::Remote { .. } => None,
        }
    }

    /// Every connected peer.
    pub fn keys(&self) -> impl Iterator<Item = Peer> + '_ {
        let master = self.master.as_ref().map(|_| Peer::Master);
        master
            .into_iter()
            .chain(self.workers.keys().map(|id| Peer::Worker(*id)))
    }

    /// Each worker's connection.
    pub fn workers(&self) -> impl Iterator<Item = (WorkerId, &Conn)> {
        self.workers.iter().map(|(id, conn)| (*id, conn))
    }
}
