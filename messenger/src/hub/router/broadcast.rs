//! Broadcasts: each goes to every Ready worker that handles it, within each one's window; its
//! sender is acknowledged once it has left every backlog, and workers give room back with
//! `Credit` as they run them (the flow control is `outbound/`'s).

use std::sync::Arc;

use super::State;
use crate::hub::outbound::Ack;
use crate::transport::cost;
use crate::wire::{Credit, Envelope};
use crate::{Error, Peer};

impl State {
    pub(super) fn broadcast(&mut self, env: Envelope) {
        let sender = env.from;
        let mut ack = None;
        if self.uplink.is_some() {
            self.broadcast_out(&env, &mut ack);
        }
        for id in self.members.workers() {
            if let Some(conn) = self.conns.get_mut(&Peer::Worker(id)) {
                if conn.handlers.contains(&env.event) {
                    conn.out.broadcast(env.clone(), &mut ack, sender);
                }
            }
        }
        match ack {
            Some(ack) => self.release(ack),
            // Taken by every receiver at once.
            None => self.owe_ack(sender, cost(&env).into(), env.id),
        }
    }

    /// Lets go of one share of a broadcast's acknowledgement: the last one owes it its sender.
    pub(super) fn release(&mut self, ack: Arc<Ack>) {
        if let Ok(ack) = Arc::try_unwrap(ack) {
            self.owe_ack(ack.sender, ack.bytes, ack.seq);
        }
    }

    fn owe_ack(&mut self, sender: Peer, bytes: u64, seq: u64) {
        if let Some(host) = sender.host() {
            // Another host's: its uplink hears which of them left every queue here.
            return self.released_afar(host, seq);
        }
        match &mut self.acks_hot {
            Some((hot, owed)) if *hot == sender => {
                owed.0 += 1;
                owed.1 += bytes;
            }
            hot => {
                if let Some((peer, (frames, bytes))) = hot.replace((sender, (1, bytes))) {
                    let owed = self.acks.entry(peer).or_default();
                    owed.0 += frames;
                    owed.1 += bytes;
                }
            }
        }
    }

    /// Tells each sender owed a batch's worth how many of its broadcasts have left every
    /// queue.
    pub(super) fn flush_acks(&mut self) {
        self.tell_released();
        if !self.once_unsaid.is_empty() {
            self.tell_once_done();
        }
        if let Some((peer, (frames, bytes))) = self.acks_hot.take() {
            let owed = self.acks.entry(peer).or_default();
            owed.0 += frames;
            owed.1 += bytes;
        }
        let (frames, bytes) = self.ack_batch;
        let conns = &mut self.conns;
        self.acks.retain(|sender, owed| {
            // A sender gone is owed nothing.
            let Some(conn) = conns.get_mut(sender) else {
                return false;
            };
            if owed.0 < frames && owed.1 < bytes {
                return true;
            }
            let credit = Credit {
                frames: owed.0,
                bytes: owed.1,
            };
            conn.out.control(credit.frame());
            false
        });
    }

    pub(super) fn credit(&mut self, from: Peer, env: &Envelope) {
        let Some(conn) = self.conns.get_mut(&from) else {
            return;
        };
        let mut released = Vec::new();
        let credited = Credit::from_frame(env).and_then(|credit| {
            conn.out
                .credit(credit, &mut released)
                .map_err(|detail| Error::Malformed { detail })
        });
        if let Err(err) = credited {
            self.close_later(from, err.to_string());
        }
        for ack in released {
            self.release(ack);
        }
    }
}
