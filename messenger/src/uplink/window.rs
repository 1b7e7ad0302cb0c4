//! Flow control of broadcasts across hosts: a sender on one host is slowed down by the other
//! hosts' workers as it is by its own host's, and nothing is dropped while they keep up.
//!
//! Each host numbers the broadcasts it publishes (their `id`). A host that receives them tells
//! the sender's host, on `multiprocess.<cluster>.acks.<sender's id>`, up to which number every
//! one has left every queue there (or was lost on the way: a gap in the numbers counts as
//! done). The sender's Hub holds each broadcast's acknowledgement (the window its sender has)
//! until every other host has taken it; a host that leaves or is forgotten stops counting, and
//! a lost connection lets everything in flight go. Pure state, tested without NATS.

use std::collections::BTreeSet;

use rustc_hash::FxHashMap as HashMap;

use crate::HostId;

/// An acknowledgement is sent once it moves this far, or when nothing is left in flight.
const ACK_EVERY: u64 = 16;

/// This host's broadcasts on their way to the others.
#[derive(Debug, Default)]
pub(super) struct Sent {
    /// The next broadcast's number.
    next: u64,
    /// The broadcasts below this number were let go (their senders told).
    released: u64,
    /// For each other host: every broadcast below this number was taken there.
    cursors: HashMap<HostId, u64>,
}

impl Sent {
    /// The number of the broadcast about to be published.
    pub fn number(&mut self) -> u64 {
        let seq = self.next;
        self.next += 1;
        seq
    }

    /// A host joined: it takes the broadcasts published from now on.
    /// The other hosts of the cluster.
    pub fn hosts(&self) -> impl Iterator<Item = HostId> + '_ {
        self.cursors.keys().copied()
    }

    pub fn joined(&mut self, host: HostId) {
        self.cursors.entry(host).or_insert(self.next);
    }

    /// A host left or was forgotten: nothing is waited for from it.
    pub fn left(&mut self, host: HostId) {
        self.cursors.remove(&host);
    }

    /// `host` took every broadcast below `upto`.
    pub fn acked(&mut self, host: HostId, upto: u64) {
        if let Some(cursor) = self.cursors.get_mut(&host) {
            *cursor = (*cursor).max(upto.min(self.next));
        }
    }

    /// The connection is lost: what was in flight will never be acknowledged.
    pub fn lost(&mut self) {
        let next = self.next;
        self.cursors.values_mut().for_each(|cursor| *cursor = next);
    }

    /// How many broadcasts were published and not yet let go.
    pub fn outstanding(&self) -> u64 {
        self.next - self.released
    }

    /// How many more broadcasts every other host has taken since the last call: the Hub lets
    /// their senders send as many more.
    pub fn settle(&mut self) -> u64 {
        let low = self.cursors.values().copied().min().unwrap_or(self.next);
        let newly = low.saturating_sub(self.released);
        self.released = self.released.max(low);
        newly
    }
}

/// Other hosts' broadcasts being delivered here.
#[derive(Debug, Default)]
pub(super) struct Taken {
    hosts: HashMap<HostId, Track>,
}

#[derive(Debug)]
struct Track {
    /// The number after the highest one arrived.
    next: u64,
    /// Arrived and still in some queue here.
    in_flight: BTreeSet<u64>,
    /// The acknowledgement last sent.
    told: u64,
}

impl Taken {
    /// Broadcast `seq` of `host` arrived, to be delivered here.
    pub fn arrived(&mut self, host: HostId, seq: u64) {
        let track = self.hosts.entry(host).or_insert(Track {
            next: seq,
            in_flight: BTreeSet::new(),
            told: seq,
        });
        // One older than what came before (a sender restarted its numbers?) counts from here.
        track.next = track.next.max(seq.saturating_add(1));
        track.in_flight.insert(seq);
    }

    /// These broadcasts left every queue here: the acknowledgements to send, `(host, upto)`.
    pub fn released(&mut self, seqs: &[(HostId, u64)]) -> Vec<(HostId, u64)> {
        let mut touched: Vec<HostId> = Vec::new();
        for &(host, seq) in seqs {
            if let Some(track) = self.hosts.get_mut(&host) {
                track.in_flight.remove(&seq);
                if !touched.contains(&host) {
                    touched.push(host);
                }
            }
        }
        let mut acks = Vec::new();
        for host in touched {
            let Some(track) = self.hosts.get_mut(&host) else {
                continue;
            };
            let upto = track.in_flight.first().copied().unwrap_or(track.next);
            let due = upto >= track.told.saturating_add(ACK_EVERY)
                || (track.in_flight.is_empty() && upto > track.told);
            if due {
                track.told = upto;
                acks.push((host, upto));
            }
        }
        acks
    }

    /// Forgets a host that left.
    pub fn forget(&mut self, host: HostId) {
        self.hosts.remove(&host);
    }

    /// Forgets every host (the connection was lost: their uplinks let go of what was in
    /// flight).
    pub fn clear(&mut self) {
        self.hosts.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: HostId = HostId(1);
    const B: HostId = HostId(2);

    #[test]
    fn a_broadcast_is_let_go_once_every_other_host_took_it() {
        let mut sent = Sent::default();
        assert_eq!(sent.number(), 0);
        // No other host: let go at once.
        assert_eq!(sent.settle(), 1);
        sent.joined(A);
        sent.joined(B);
        for _ in 0..3 {
            sent.number();
        }
        assert_eq!(sent.settle(), 0);
        sent.acked(A, 4);
        assert_eq!(sent.settle(), 0, "B has taken none");
        sent.acked(B, 3);
        assert_eq!(sent.settle(), 2);
        // An acknowledgement past what was sent counts for what was sent only.
        sent.acked(B, 1000);
        assert_eq!(sent.settle(), 1);
        sent.number();
        // B leaves: only A counts; then the connection is lost: everything goes.
        sent.left(B);
        assert_eq!(sent.settle(), 0);
        sent.lost();
        assert_eq!(sent.settle(), 1);
    }

    #[test]
    fn acknowledgements_cover_gaps_and_come_in_steps() {
        let mut taken = Taken::default();
        for seq in 0..20 {
            taken.arrived(A, seq);
        }
        // Released out of order: nothing is acknowledged past the oldest still here.
        let late: Vec<_> = (1..20).map(|seq| (A, seq)).collect();
        assert_eq!(taken.released(&late), []);
        assert_eq!(taken.released(&[(A, 0)]), [(A, 20)]);
        // A gap (21..30 lost on the way) counts as done.
        taken.arrived(A, 30);
        assert_eq!(taken.released(&[(A, 30)]), [(A, 31)]);
        // Small steps wait while some are in flight.
        taken.arrived(A, 31);
        taken.arrived(A, 32);
        assert_eq!(taken.released(&[(A, 31)]), []);
        assert_eq!(taken.released(&[(A, 32)]), [(A, 33)]);
        // Another host's numbers are its own; an unknown one is ignored.
        taken.arrived(B, 7);
        assert_eq!(taken.released(&[(B, 7), (HostId(9), 1)]), [(B, 8)]);
    }
}
