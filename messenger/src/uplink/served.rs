//! Calls from other hosts being run here: where each one's answers go (its caller's reply
//! subject), and the `map` shares whose answers are held back to go in one message. Plain
//! data: what to send, and where, is returned to the relay.
//!
//! A `map`'s share is answered as this host's member list and each worker's answer. They are
//! held until the last (one message for the whole share), at most [`HOLD`] (a slow worker does
//! not hold up the others' answers: one timer for every share held) and [`HELD_BYTES`] (a
//! share too large for one NATS message goes in several).

use std::time::Duration;

use async_nats::Subject;
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use tokio::time::Instant;

use crate::wire::{Envelope, Kind, Members};
use crate::Peer;

/// The most bytes of a share's answers held back.
pub(super) const HELD_BYTES: usize = 4096;

/// The longest a share's answers are held back.
pub(super) const HOLD: Duration = Duration::from_millis(2);

/// A call: its caller (on another host, as [`Peer::Remote`]) and its id.
pub(super) type Key = (Peer, u64);

/// A call from another host being run here.
struct Call {
    reply: Subject,
    since: Instant,
    share: Option<Share>,
}

/// A `map`'s share being answered.
#[derive(Default)]
struct Share {
    /// How many answers are to come, once the member list says.
    expected: Option<usize>,
    answered: usize,
    held: Vec<Envelope>,
    held_bytes: usize,
}

#[derive(Default)]
pub(super) struct Served {
    calls: HashMap<Key, Call>,
    /// The shares with answers held back, and until when.
    holding: HashSet<Key>,
    hold_until: Option<Instant>,
}

impl Served {
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    pub fn contains(&self, key: &Key) -> bool {
        self.calls.contains_key(key)
    }

    /// A call now run here, whose answers go to `reply`; `map`: a `map`'s share.
    pub fn insert(&mut self, key: Key, reply: Subject, map: bool) {
        let call = Call {
            reply,
            since: Instant::now(),
            share: map.then(Share::default),
        };
        self.calls.insert(key, call);
    }

    /// An answer to `key` (or the member list of its share): what goes now, and where; `None`
    /// while it is held back, or if nobody waits for it.
    pub fn answer(&mut self, key: Key, env: Envelope) -> Option<(Subject, Vec<Envelope>)> {
        let Some(call) = self.calls.get_mut(&key) else {
            tracing::debug!(caller = %key.0, "an answer for another host that nobody waits for");
            return None;
        };
        let reply = call.reply.clone();
        let Some(share) = &mut call.share else {
            self.calls.remove(&key);
            return Some((reply, vec![env]));
        };
        match env.kind {
            Kind::Members => {
                share.expected = Members::from_bytes(&env.body).ok().map(|m| m.workers.len())
            }
            // The whole call refused: that alone is the answer.
            Kind::Failure if env.from == Peer::Master => share.expected = Some(0),
            _ => share.answered += 1,
        }
        share.held_bytes += env.wire_len();
        share.held.push(env);
        let done = share.expected.is_some_and(|n| share.answered >= n);
        if !done && share.held_bytes <= HELD_BYTES {
            if share.held.len() == 1 {
                self.holding.insert(key);
                self.hold_until.get_or_insert_with(|| Instant::now() + HOLD);
            }
            return None;
        }
        share.held_bytes = 0;
        let held = std::mem::take(&mut share.held);
        if done {
            self.calls.remove(&key);
            self.unhold(&key);
        }
        Some((reply, held))
    }

    /// When the answers held back must go, if any are.
    pub fn hold_until(&self) -> Option<Instant> {
        self.hold_until
    }

    /// The answers held back, to go now: each share's caller, reply subject and answers.
    pub fn release(&mut self) -> Vec<(Peer, Subject, Vec<Envelope>)> {
        self.hold_until = None;
        let mut out = Vec::new();
        for key in std::mem::take(&mut self.holding) {
            let Some(call) = self.calls.get_mut(&key) else {
                continue;
            };
            let Some(share) = call.share.as_mut().filter(|s| !s.held.is_empty()) else {
                continue;
            };
            share.held_bytes = 0;
            out.push((key.0, call.reply.clone(), std::mem::take(&mut share.held)));
        }
        out
    }

    /// Forgets a call (its caller gave up).
    pub fn forget(&mut self, key: &Key) {
        if self.calls.remove(key).is_some() {
            self.unhold(key);
        }
    }

    /// Forgets the calls running since an instant `which` names: their keys.
    pub fn give_up(&mut self, which: impl Fn(Instant) -> bool) -> Vec<Key> {
        let gone: Vec<Key> = self
            .calls
            .iter()
            .filter(|(_, call)| which(call.since))
            .map(|(key, _)| *key)
            .collect();
        for key in &gone {
            self.calls.remove(key);
            self.unhold(key);
        }
        gone
    }

    /// Nothing else held back: no wake-up to release it.
    fn unhold(&mut self, key: &Key) {
        if self.holding.remove(key) && self.holding.is_empty() {
            self.hold_until = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::{HostId, WorkerId};

    const CALLER: Peer = Peer::Remote {
        host: HostId(9),
        worker: None,
    };

    fn reply(from: u32) -> Envelope {
        Envelope {
            from: Peer::Worker(WorkerId::new(from, 1)),
            ..Envelope::new(Kind::Reply, "e", Bytes::new())
        }
    }

    fn members(n: u32) -> Envelope {
        let members = Members {
            workers: (0..n).map(|s| Peer::Worker(WorkerId::new(s, 1))).collect(),
            run_here: false,
            epoch: 1,
        };
        Envelope::new(Kind::Members, "", members.to_bytes())
    }

    #[test]
    fn a_share_goes_in_one_message_once_complete_and_a_call_at_once() {
        let mut served = Served::default();
        served.insert((CALLER, 1), Subject::from("r"), true);
        served.insert((CALLER, 2), Subject::from("r"), false);
        assert!(served.answer((CALLER, 1), members(2)).is_none());
        assert!(served.hold_until().is_some());
        assert!(served.answer((CALLER, 1), reply(0)).is_none());
        // A plain call's answer goes at once.
        let (_, now) = served.answer((CALLER, 2), reply(0)).unwrap();
        assert_eq!(now.len(), 1);
        let (_, share) = served.answer((CALLER, 1), reply(1)).unwrap();
        assert_eq!(share.len(), 3);
        // Nothing held any more: no timer, nothing kept.
        assert!(served.hold_until().is_none());
        assert_eq!(served.len(), 0);
        assert!(served.answer((CALLER, 1), reply(1)).is_none());
    }

    #[test]
    fn held_answers_go_when_released_and_the_rest_as_it_comes() {
        let mut served = Served::default();
        served.insert((CALLER, 1), Subject::from("r"), true);
        served.answer((CALLER, 1), members(3));
        served.answer((CALLER, 1), reply(0));
        let released = served.release();
        assert_eq!(released.len(), 1);
        assert_eq!(released[0].2.len(), 2);
        assert!(served.hold_until().is_none());
        // Held again from the next answer on, until the share is complete.
        assert!(served.answer((CALLER, 1), reply(1)).is_none());
        let (_, last) = served.answer((CALLER, 1), reply(2)).unwrap();
        assert_eq!(last.len(), 2);
        assert_eq!(served.len(), 0);
    }

    #[test]
    fn a_share_past_the_byte_bound_goes_at_once_and_calls_given_up_leave_the_hold() {
        let mut served = Served::default();
        served.insert((CALLER, 1), Subject::from("r"), true);
        served.answer((CALLER, 1), members(2));
        let big = Envelope {
            from: Peer::Worker(WorkerId::new(0, 1)),
            ..Envelope::new(Kind::Reply, "e", vec![0u8; HELD_BYTES])
        };
        let (_, out) = served.answer((CALLER, 1), big).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(served.len(), 1);
        served.answer((CALLER, 1), members(2));
        assert!(served.hold_until().is_some());
        assert_eq!(served.give_up(|_| true), vec![(CALLER, 1)]);
        assert!(served.hold_until().is_none());
        assert!(served.release().is_empty());
    }
}
