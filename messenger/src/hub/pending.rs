//! Every call the Hub has passed on and not yet answered: who asked, who owes the answer.
//!
//! A request goes to its responder as it came: the caller's id, stamped with the caller. The
//! responder's answer names them back (its `to` and `id`), so a call is found by (caller, id,
//! responder) in one lookup, and an answer is taken only from the responder the call went to.
//! A `map` is one call with a forward per worker; a `consume_once` run is a forward whose
//! answer goes to every caller waiting on its key. Each caller may have
//! [`Config::max_calls`](crate::Config::max_calls) forwards and waits pending.

use std::collections::hash_map::Entry;

use bytes::Bytes;
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use crate::Peer;

/// A `consume_once` key: the event's name and the key, both copies (never slices of a frame).
pub(super) type OnceKey = (Bytes, Bytes);

/// A caller's call: the peer and the id it chose.
pub(super) type Caller = (Peer, u64);

/// A forward: the call, and the responder it went to.
type Route = (Peer, u64, Peer);

/// Where a forward's answer goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum AnswerTo {
    /// Back to its caller.
    Caller,
    /// To everyone waiting on this `consume_once` key.
    Once(OnceKey),
}

#[derive(Debug)]
struct Forward {
    to: AnswerTo,
    /// The event's name (the copy the responder announced).
    event: Bytes,
}

/// What became of an answer.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Answered {
    /// No such call (it was cancelled or timed out, or the answer is made up).
    Unknown,
    /// Pass it to this caller.
    Caller(Caller),
    /// A `consume_once` run ended: answer these callers.
    Once(OnceKey, Vec<Caller>),
}

/// A call a leaving peer owed, to be failed.
#[derive(Debug)]
pub(super) struct Owed {
    pub event: Bytes,
}

/// Why a call cannot be forwarded.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Refused {
    /// The caller has as many calls pending as it may.
    TooMany,
    /// The caller's id is a `consume_once` run's, still running.
    InUse,
}

/// The pending calls.
#[derive(Default)]
pub(super) struct Pending {
    forwards: HashMap<Route, Forward>,
    /// The `consume_once` keys being run: the run's forward, and who waits on it.
    once: HashMap<OnceKey, (Route, HashSet<Caller>)>,
    /// Which key a caller waits on (for `Cancel`).
    once_waits: HashMap<Caller, OnceKey>,
    /// How many calls each peer has pending.
    calls: HashMap<Peer, usize>,
}

impl Pending {
    /// Counts one more call of `peer`, if it has fewer than `max`.
    fn add_call(&mut self, peer: Peer, max: usize) -> bool {
        let calls = self.calls.entry(peer).or_default();
        if *calls >= max {
            return false;
        }
        *calls += 1;
        true
    }

    fn end_call(&mut self, peer: Peer) {
        if let Entry::Occupied(mut calls) = self.calls.entry(peer) {
            *calls.get_mut() -= 1;
            if *calls.get() == 0 {
                calls.remove();
            }
        }
    }

    /// How many calls `peer` has pending.
    #[cfg(test)]
    fn calls(&self, peer: Peer) -> usize {
        self.calls.get(&peer).copied().unwrap_or(0)
    }

    /// Forwards `caller`'s call to `responder`. An id reused for the same responder while its
    /// call is pending replaces that call.
    pub fn forward(
        &mut self,
        caller: Caller,
        responder: Peer,
        event: Bytes,
        max: usize,
    ) -> Result<(), Refused> {
        self.insert(
            (caller.0, caller.1, responder),
            AnswerTo::Caller,
            event,
            max,
        )
    }

    fn insert(
        &mut self,
        route: Route,
        to: AnswerTo,
        event: Bytes,
        max: usize,
    ) -> Result<(), Refused> {
        if let Some(old) = self.forwards.get(&route) {
            if old.to != AnswerTo::Caller {
                return Err(Refused::InUse);
            }
            self.forwards.remove(&route);
            self.end_call(route.0);
        }
        if !self.add_call(route.0, max) {
            return Err(Refused::TooMany);
        }
        self.forwards.insert(route, Forward { to, event });
        Ok(())
    }

    /// Takes a forward back (its frame found no room): as if it never was.
    pub fn unforward(&mut self, caller: Caller, responder: Peer) {
        if self
            .forwards
            .remove(&(caller.0, caller.1, responder))
            .is_some()
        {
            self.end_call(caller.0);
        }
    }

    /// Whether `key` is being run.
    pub fn once_running(&self, key: &OnceKey) -> bool {
        self.once.contains_key(key)
    }

    /// Starts running `key` on `responder` for `caller`, which waits on it.
    pub fn once_run(
        &mut self,
        key: OnceKey,
        caller: Caller,
        responder: Peer,
        event: Bytes,
        max: usize,
    ) -> Result<(), Refused> {
        let route = (caller.0, caller.1, responder);
        self.insert(route, AnswerTo::Once(key.clone()), event, max)?;
        // The run counts for its first caller as the forward; its wait counts as well.
        self.once.insert(key.clone(), (route, HashSet::default()));
        if self.once_wait(key.clone(), caller, max).is_err() {
            self.forwards.remove(&route);
            self.end_call(caller.0);
            self.once.remove(&key);
            return Err(Refused::TooMany);
        }
        Ok(())
    }

    /// `caller` waits on `key`, which is being run.
    pub fn once_wait(&mut self, key: OnceKey, caller: Caller, max: usize) -> Result<(), Refused> {
        if !self.once.contains_key(&key) {
            return Ok(());
        }
        self.cancel_wait(caller);
        if !self.add_call(caller.0, max) {
            return Err(Refused::TooMany);
        }
        if let Some((_, waiters)) = self.once.get_mut(&key) {
            waiters.insert(caller);
        }
        self.once_waits.insert(caller, key);
        Ok(())
    }

    /// An answer from `from` to `caller`'s call.
    pub fn answered(&mut self, caller: Caller, from: Peer) -> Answered {
        let route = (caller.0, caller.1, from);
        let Some(forward) = self.forwards.remove(&route) else {
            return Answered::Unknown;
        };
        self.end_call(caller.0);
        match forward.to {
            AnswerTo::Caller => Answered::Caller(caller),
            AnswerTo::Once(key) => self.once_done(key),
        }
    }

    /// A `consume_once` run ended: its waiters, no longer waiting.
    fn once_done(&mut self, key: OnceKey) -> Answered {
        let waiters: Vec<Caller> = self
            .once
            .remove(&key)
            .map(|(_, waiters)| waiters.into_iter().collect())
            .unwrap_or_default();
        for caller in &waiters {
            self.once_waits.remove(caller);
            self.end_call(caller.0);
        }
        Answered::Once(key, waiters)
    }

    fn cancel_wait(&mut self, caller: Caller) {
        if let Some(key) = self.once_waits.remove(&caller) {
            self.end_call(caller.0);
            if let Some((_, waiters)) = self.once.get_mut(&key) {
                waiters.remove(&caller);
            }
        }
    }

    /// `caller` gave up; `responders` are every peer its call may have gone to. A
    /// `consume_once` run goes on for the others (and to be remembered).
    pub fn cancel(&mut self, caller: Caller, responders: impl Iterator<Item = Peer>) {
        self.cancel_wait(caller);
        for responder in responders {
            let route = (caller.0, caller.1, responder);
            if let Entry::Occupied(forward) = self.forwards.entry(route) {
                if forward.get().to == AnswerTo::Caller {
                    forward.remove();
                    self.end_call(caller.0);
                }
            }
        }
    }

    /// Forgets `peer`: what it asked is dropped (a `consume_once` run it started goes on), what
    /// it owed is returned to be failed, with who waits for each.
    pub fn forget(&mut self, peer: Peer) -> Vec<(Owed, Answered)> {
        let waits: Vec<Caller> = self
            .once_waits
            .keys()
            .filter(|(caller, _)| *caller == peer)
            .copied()
            .collect();
        for caller in waits {
            self.cancel_wait(caller);
        }
        let routes: Vec<Route> = self
            .forwards
            .keys()
            .filter(|(caller, _, responder)| *caller == peer || *responder == peer)
            .copied()
            .collect();
        let mut failed = Vec::new();
        for route in routes {
            let (caller, id, responder) = route;
            if responder != peer {
                // Asked by the leaving peer: dropped, unless others wait on it.
                if self
                    .forwards
                    .get(&route)
                    .is_some_and(|f| f.to == AnswerTo::Caller)
                {
                    self.forwards.remove(&route);
                    self.end_call(caller);
                }
                continue;
            }
            let Some(forward) = self.forwards.remove(&route) else {
                continue;
            };
            self.end_call(caller);
            let answered = match forward.to {
                AnswerTo::Caller if caller == peer => continue,
                AnswerTo::Caller => Answered::Caller((caller, id)),
                AnswerTo::Once(key) => self.once_done(key),
            };
            failed.push((
                Owed {
                    event: forward.event,
                },
                answered,
            ));
        }
        failed
    }

    /// How many forwards are pending (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.forwards.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::WorkerId;

    const A: Peer = Peer::Worker(WorkerId::new(0, 1));
    const B: Peer = Peer::Worker(WorkerId::new(1, 1));
    const C: Peer = Peer::Worker(WorkerId::new(2, 1));
    const MAX: usize = 100;

    fn key(k: &'static str) -> OnceKey {
        (Bytes::from_static(b"e"), Bytes::from_static(k.as_bytes()))
    }

    fn forward(pending: &mut Pending, caller: Caller, responder: Peer) {
        pending
            .forward(caller, responder, Bytes::from_static(b"e"), MAX)
            .unwrap();
    }

    #[test]
    fn an_answer_goes_to_its_caller_once_and_only_from_its_responder() {
        let mut pending = Pending::default();
        forward(&mut pending, (A, 7), B);
        assert_eq!(pending.calls(A), 1);
        assert_eq!(
            pending.answered((A, 7), C),
            Answered::Unknown,
            "C was not asked"
        );
        assert_eq!(pending.answered((A, 7), B), Answered::Caller((A, 7)));
        assert_eq!(pending.answered((A, 7), B), Answered::Unknown);
        assert_eq!(pending.calls(A), 0);
    }

    /// A map's shares: one call, a forward per worker; a cancel takes every one back.
    #[test]
    fn a_calls_forwards_end_one_by_one_or_together() {
        let mut pending = Pending::default();
        for responder in [A, B, C] {
            forward(&mut pending, (Peer::Master, 1), responder);
        }
        assert_eq!(pending.calls(Peer::Master), 3);
        assert_eq!(
            pending.answered((Peer::Master, 1), A),
            Answered::Caller((Peer::Master, 1))
        );
        pending.unforward((Peer::Master, 1), B);
        assert_eq!(pending.calls(Peer::Master), 1);
        pending.cancel((Peer::Master, 1), [A, B, C].into_iter());
        assert_eq!((pending.len(), pending.calls(Peer::Master)), (0, 0));
    }

    #[test]
    fn calls_are_bounded_per_caller() {
        let mut pending = Pending::default();
        for id in 0..MAX as u64 {
            forward(&mut pending, (A, id), B);
        }
        let refused = pending.forward((A, 1000), B, Bytes::new(), MAX);
        assert_eq!(refused, Err(Refused::TooMany));
        forward(&mut pending, (C, 1), B);
        // An id reused for the same responder replaces its call: still MAX.
        forward(&mut pending, (A, 0), B);
        assert_eq!(pending.calls(A), MAX);
    }

    #[test]
    fn cancels_and_forgets_leave_nothing_behind() {
        let mut pending = Pending::default();
        for id in 0..MAX as u64 {
            forward(&mut pending, (A, id), B);
        }
        for id in 0..MAX as u64 {
            pending.cancel((A, id), [B].into_iter());
        }
        assert_eq!((pending.len(), pending.calls(A)), (0, 0));

        forward(&mut pending, (A, 1), B);
        forward(&mut pending, (B, 1), A);
        let failed = pending.forget(A);
        assert_eq!(failed.len(), 1, "A owed one answer");
        assert_eq!(failed[0].1, Answered::Caller((B, 1)));
        assert_eq!(
            pending.answered((A, 1), B),
            Answered::Unknown,
            "A's call is gone"
        );
        assert_eq!(
            (pending.len(), pending.calls(A), pending.calls(B)),
            (0, 0, 0)
        );
    }

    #[test]
    fn a_once_run_answers_every_waiter_and_survives_its_first_callers_cancel() {
        let mut pending = Pending::default();
        pending
            .once_run(key("k"), (A, 1), C, Bytes::from_static(b"e"), MAX)
            .unwrap();
        assert!(pending.once_running(&key("k")));
        pending.once_wait(key("k"), (A, 2), MAX).unwrap();
        pending.once_wait(key("k"), (B, 3), MAX).unwrap();
        pending.cancel((A, 1), [B, C].into_iter());
        // The run's id cannot be taken over while it runs.
        let taken = pending.forward((A, 1), C, Bytes::new(), MAX);
        assert_eq!(taken, Err(Refused::InUse));
        match pending.answered((A, 1), C) {
            Answered::Once(k, mut waiters) => {
                waiters.sort();
                assert_eq!(k, key("k"));
                assert_eq!(waiters, vec![(A, 2), (B, 3)]);
            }
            other => panic!("{other:?}"),
        }
        assert!(!pending.once_running(&key("k")));
        assert_eq!((pending.calls(A), pending.calls(B)), (0, 0));
    }

    #[test]
    fn a_leaving_runner_fails_its_once_waiters_and_a_leaving_starter_does_not_stop_the_run() {
        let mut pending = Pending::default();
        pending
            .once_run(key("k"), (A, 1), B, Bytes::from_static(b"e"), MAX)
            .unwrap();
        pending.once_wait(key("k"), (C, 5), MAX).unwrap();
        assert!(pending.forget(A).is_empty());
        assert!(pending.once_running(&key("k")), "C still waits on it");
        let failed = pending.forget(B);
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].1, Answered::Once(key("k"), vec![(C, 5)]));
        assert_eq!((pending.calls(A), pending.calls(C)), (0, 0));
    }
}
