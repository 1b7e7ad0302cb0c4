//! The Hub's side of its uplink (a cluster joined over NATS, `uplink/`): what routing hands
//! over for other hosts, in a queue bounded in frames and bytes, never waited on.
//!
//! Routing runs under the Hub's lock and never waits, so it only offers: a call the queue has
//! no room for, or made while the NATS connection is down, fails at once; a broadcast for
//! other hosts is dropped and counted (the uplink reports the count), never held.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::wire::Envelope;
use crate::{HostId, Peer};

/// What the Hub hands to the uplink.
#[derive(Debug)]
pub(crate) enum Outgoing {
    /// A broadcast from this host, for every other one.
    Broadcast(Envelope),
    /// A call to another host: `env.to` names its worker, slot or every worker in that host's
    /// terms. One answer is owed by each of `owed` (the routes the Hub keeps for it): by the
    /// host itself (`worker: None`) for a call it may give any of its workers, by each worker
    /// for a `map`'s share.
    Call {
        host: HostId,
        env: Envelope,
        owed: Vec<Peer>,
    },
    /// A caller of this host gave up its call `id`: the routes other hosts owe it are dropped,
    /// and those hosts told.
    Cancel { caller: Peer, id: u64 },
    /// An answer (or a `map`'s member list) for a caller on another host.
    Answer { to: Peer, env: Envelope },
    /// Other hosts' broadcasts that have left every queue here: (their host, their sequence
    /// number).
    Released(Vec<(HostId, u64)>),
    /// A `consume_once` key to settle with the other hosts: who runs it, or its result. `env`
    /// is the first caller's request (its names and body copies).
    Once(Envelope),
    /// A `consume_once` run of this host ended: its reply (and who ran it) is the key's for
    /// good; a failure (`None`) lets the next caller, on any host, run it again.
    OnceDone {
        event: Bytes,
        key: Bytes,
        reply: Option<(Peer, Bytes)>,
    },
}

impl Outgoing {
    fn bytes(&self) -> usize {
        match self {
            Outgoing::Broadcast(env)
            | Outgoing::Call { env, .. }
            | Outgoing::Answer { env, .. }
            | Outgoing::Once(env) => env.wire_len(),
            Outgoing::Released(seqs) => seqs.len() * 16,
            Outgoing::Cancel { .. } => 16,
            Outgoing::OnceDone { event, key, reply } => {
                event.len() + key.len() + reply.as_ref().map_or(0, |(_, body)| body.len())
            }
        }
    }
}

/// Why the uplink did not take an item.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The NATS connection is down.
    Down,
    /// Its queue is full (frames or bytes).
    Full,
}

/// What the uplink and the Hub share: the queue's bytes, the connection's state, the drops.
#[derive(Default)]
struct Shared {
    bytes: AtomicUsize,
    connected: AtomicBool,
    dropped: AtomicU64,
}

/// The Hub's end: offers items.
pub(crate) struct Port {
    tx: mpsc::Sender<Outgoing>,
    shared: Arc<Shared>,
    max_bytes: usize,
    /// This host, among the others.
    pub me: HostId,
    pub name: String,
}

/// The uplink's end: takes them.
pub(crate) struct PortRx {
    rx: mpsc::Receiver<Outgoing>,
    shared: Arc<Shared>,
}

/// A queue of at most `frames` items and `bytes` bytes, for host `me` named `name`.
pub(crate) fn port(me: HostId, name: String, frames: usize, bytes: usize) -> (Port, PortRx) {
    let (tx, rx) = mpsc::channel(frames.max(1));
    let shared = Arc::new(Shared::default());
    let port = Port {
        tx,
        shared: shared.clone(),
        max_bytes: bytes,
        me,
        name,
    };
    (port, PortRx { rx, shared })
}

impl Port {
    /// Offers `item`; `Err` (and the item dropped) if the connection is down or the queue
    /// full. A queue that holds nothing takes one item of any size.
    pub fn offer(&self, item: Outgoing) -> Result<(), Refusal> {
        self.offer_back(item).map_err(|(refused, _)| refused)
    }

    /// Like [`offer`](Port::offer), giving a refused item back (by value: it is routing's
    /// to keep, under the Hub's lock, with no allocation).
    #[allow(clippy::result_large_err)]
    pub fn offer_back(&self, item: Outgoing) -> Result<(), (Refusal, Outgoing)> {
        if !self.is_up() {
            return Err((Refusal::Down, item));
        }
        let bytes = item.bytes();
        let held = self.shared.bytes.fetch_add(bytes, Ordering::Relaxed);
        if held > 0 && held + bytes > self.max_bytes {
            self.shared.bytes.fetch_sub(bytes, Ordering::Relaxed);
            return Err((Refusal::Full, item));
        }
        self.tx.try_send(item).map_err(|e| {
            self.shared.bytes.fetch_sub(bytes, Ordering::Relaxed);
            (Refusal::Full, e.into_inner())
        })
    }

    /// Whether the NATS connection is up.
    pub fn is_up(&self) -> bool {
        self.shared.connected.load(Ordering::Relaxed)
    }

    /// Counts a broadcast across hosts that was dropped: one for other hosts not sent, or a
    /// copy of another host's that a worker's backlog had no room for.
    pub fn dropped(&self) {
        self.shared.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

impl PortRx {
    /// The next item; `None` once the Hub let go of its end.
    pub async fn recv(&mut self) -> Option<Outgoing> {
        let item = self.rx.recv().await?;
        self.shared.bytes.fetch_sub(item.bytes(), Ordering::Relaxed);
        Some(item)
    }

    /// An item already there, if any, without waiting.
    pub fn try_recv(&mut self) -> Option<Outgoing> {
        let item = self.rx.try_recv().ok()?;
        self.shared.bytes.fetch_sub(item.bytes(), Ordering::Relaxed);
        Some(item)
    }

    pub fn set_up(&self, up: bool) {
        self.shared.connected.store(up, Ordering::Relaxed);
    }

    /// The broadcasts dropped since the last call (and counts them again from zero).
    pub fn take_dropped(&self) -> u64 {
        self.shared.dropped.swap(0, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Kind;

    fn item(bytes: usize) -> Outgoing {
        Outgoing::Broadcast(Envelope::new(Kind::Broadcast, "e", vec![0; bytes]))
    }

    #[tokio::test]
    async fn the_queue_is_bounded_in_frames_and_bytes_and_refuses_while_down() {
        let (port, mut rx) = port(HostId(1), "a".into(), 2, 1000);
        assert_eq!(port.offer(item(1)), Err(Refusal::Down));
        rx.set_up(true);
        // One item of any size fits an empty queue; nothing more then.
        assert_eq!(port.offer(item(5000)), Ok(()));
        assert_eq!(port.offer(item(1)), Err(Refusal::Full));
        assert!(rx.recv().await.is_some());
        assert_eq!(port.offer(item(1)), Ok(()));
        assert_eq!(port.offer(item(1)), Ok(()));
        assert_eq!(
            port.offer(item(1)),
            Err(Refusal::Full),
            "two frames at most"
        );
        port.dropped();
        assert_eq!(rx.take_dropped(), 1);
        assert_eq!(rx.take_dropped(), 0);
    }
}
