//! Broadcasts across hosts, on the Hub's side: this host's on their way to the others, within
//! a window as a worker's are, and the others' delivered here.
//!
//! At most [`WINDOW`] of this host's broadcasts (and the queue budget's bytes) are handed to the
//! uplink and not yet taken by every other host; the rest wait here, each holding its sender's
//! acknowledgement as in a worker's backlog, so a sender that floods other hosts is slowed down
//! as one that floods this host's workers, and nothing waits here beyond what the senders'
//! windows allow. The uplink says when the others took them (`uplink/window.rs`).

use std::collections::VecDeque;
use std::sync::Arc;

use super::State;
use crate::hub::outbound::Ack;
use crate::hub::port::{Outgoing, Refusal};
use crate::hub::HostId;
use crate::transport::cost;
use crate::wire::Envelope;
use crate::Peer;

/// How many of this host's broadcasts may be on their way to other hosts at once.
pub(crate) const WINDOW: usize = 64;

/// Broadcasts across hosts, as the Hub holds them.
#[derive(Default)]
pub(super) struct Afar {
    /// Handed to the uplink, not yet taken by every other host: each one's acknowledgement and
    /// size.
    in_flight: VecDeque<(Arc<Ack>, usize)>,
    in_flight_bytes: usize,
    /// Waiting for room in the window.
    waiting: VecDeque<(Envelope, Arc<Ack>)>,
    /// Other hosts' broadcasts that have left every queue here: (host, sequence number).
    released: Vec<(HostId, u64)>,
}

impl State {
    /// A broadcast sent on this host, for the other hosts too if any of them handles it.
    pub(super) fn broadcast_out(&mut self, env: &Envelope, ack: &mut Option<Arc<Ack>>) {
        if env.from.host().is_some() || self.hosts.handled(&env.event).is_none() {
            return;
        }
        let ack = ack
            .get_or_insert_with(|| {
                Arc::new(Ack {
                    sender: env.from,
                    bytes: cost(env).into(),
                    seq: env.id,
                })
            })
            .clone();
        if self.afar.waiting.is_empty() && self.afar_has_room(env.wire_len()) {
            self.hand_out(env.clone(), ack);
        } else {
            self.afar.waiting.push_back((env.clone(), ack));
        }
    }

    fn afar_has_room(&self, size: usize) -> bool {
        let afar = &self.afar;
        afar.in_flight.is_empty()
            || (afar.in_flight.len() < WINDOW && afar.in_flight_bytes + size <= self.budget.bytes)
    }

    /// Hands a broadcast to the uplink; one it cannot take is dropped and counted.
    fn hand_out(&mut self, env: Envelope, ack: Arc<Ack>) {
        let size = env.wire_len();
        let offered = match &self.uplink {
            Some(port) => port.offer(Outgoing::Broadcast(env)),
            None => Err(Refusal::Down),
        };
        match offered {
            Ok(()) => {
                self.afar.in_flight.push_back((ack, size));
                self.afar.in_flight_bytes += size;
            }
            Err(_) => {
                if let Some(port) = &self.uplink {
                    port.dropped();
                }
                self.release(ack);
            }
        }
    }

    /// The other hosts have taken the next `n` broadcasts handed to the uplink (or they are
    /// lost): their senders may send more, and what waited for room goes.
    pub fn uplink_sent(&mut self, n: usize) {
        for _ in 0..n {
            let Some((ack, size)) = self.afar.in_flight.pop_front() else {
                break;
            };
            self.afar.in_flight_bytes -= size;
            self.release(ack);
        }
        while let Some(size) = self.afar.waiting.front().map(|(env, _)| env.wire_len()) {
            if !self.afar_has_room(size) {
                break;
            }
            if let Some((env, ack)) = self.afar.waiting.pop_front() {
                self.hand_out(env, ack);
            }
        }
    }

    /// The uplink is gone: every broadcast it held or that waited for it is let go, and the
    /// `consume_once` runs it was settling fail, as does every call owed by another host (the
    /// uplink answers them all when it stops, but not if its task panicked).
    pub fn uplink_gone(&mut self) {
        if let Some(me) = self.uplink.as_ref().map(|port| port.me) {
            let deciding = Peer::Remote {
                host: me,
                worker: None,
            };
            let error = crate::Error::HostUnreachable {
                host: "the cluster".into(),
                detail: "this host left it while a consume_once key was being settled".into(),
            };
            for key in self.pending.once_owed_by(deciding) {
                self.once_settled(&key, Err(error.clone()));
            }
        }
        self.uplink = None;
        // With no uplink, what fails here and is run again stays on this host.
        for (peer, owed, answered) in self.pending.forget_where(|peer| peer.host().is_some()) {
            let error = crate::Error::HostUnreachable {
                host: peer
                    .host()
                    .map_or_else(String::new, |host| host.to_string()),
                detail: "this host left the cluster with the call in flight".into(),
            };
            self.fail_owed(peer, owed.event, answered, &error);
        }
        let afar = std::mem::take(&mut self.afar);
        for (ack, _) in afar.in_flight {
            self.release(ack);
        }
        for (_, ack) in afar.waiting {
            self.release(ack);
        }
    }

    /// A broadcast from another host, for this host's Ready workers that handle it. Its
    /// sender's window is its own host's; what a worker's backlog cannot hold beyond the queue
    /// budget is dropped and counted.
    #[inline(never)]
    pub(super) fn broadcast_from_afar(&mut self, env: Envelope) {
        let sender = env.from;
        let mut ack = None;
        let mut dropped = 0;
        for id in self.members.workers() {
            if let Some(conn) = self.conns.get_mut(&Peer::Worker(id)) {
                let taken = !conn.handlers.contains(&env.event)
                    || conn.out.broadcast_from_afar(env.clone(), &mut ack, sender);
                dropped += usize::from(!taken);
            }
        }
        if let Some(port) = self.uplink.as_ref().filter(|_| dropped > 0) {
            (0..dropped).for_each(|_| port.dropped());
        }
        match (ack, sender.host()) {
            (Some(ack), _) => self.release(ack),
            (None, Some(host)) => self.afar.released.push((host, env.id)),
            (None, None) => {}
        }
    }

    /// One of another host's broadcasts left every queue here.
    pub(super) fn released_afar(&mut self, host: HostId, seq: u64) {
        self.afar.released.push((host, seq));
    }

    /// Tells the uplink which of the other hosts' broadcasts have left every queue here. What
    /// it cannot take now is told with the next ones.
    pub(super) fn tell_released(&mut self) {
        if self.afar.released.is_empty() {
            return;
        }
        let Some(port) = &self.uplink else {
            return self.afar.released.clear();
        };
        let seqs = std::mem::take(&mut self.afar.released);
        if let Err((refused, Outgoing::Released(seqs))) = port.offer_back(Outgoing::Released(seqs))
        {
            if refused == Refusal::Full {
                self.afar.released = seqs;
            }
            // Down: nobody to tell; the senders' uplinks let go of what was in flight when they
            // lose the connection, or forget this host.
        }
    }
}
