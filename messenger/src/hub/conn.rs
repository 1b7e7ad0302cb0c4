//! One connection as the Hub sees it: what the peer handles, where it is in its life, and the
//! queue of what is on its way to it ([`Outbound`], in `outbound/`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use rustc_hash::FxHashSet as HashSet;
use tokio_util::sync::CancellationToken;

use super::outbound::Outbound;

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
