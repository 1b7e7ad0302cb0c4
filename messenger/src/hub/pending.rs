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
pub(super) type Route = (Peer, u64, Peer);

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

    /// The route of `key`'s run, if it is being run.
    pub fn once_route(&self, key: &OnceKey) -> Option<Route> {
        self.once.get(key).map(|(route, _)| *route)
    }

    /// The keys whose run `responder` owes (for a responder that is not a connection: the
    /// placeholder of runs being settled with other hosts).
    pub fn once_owed_by(&self, responder: Peer) -> Vec<OnceKey> {
        let owed = self
            .once
            .iter()
            .filter(|(_, (route, _))| route.2 == responder);
        owed.map(|(key, _)| key.clone()).collect()
    }

    /// `key`'s run goes to `responder` (it was waiting to be decided): its answer is taken
    /// from that responder from now on.
    pub fn once_reroute(&mut self, key: &OnceKey, responder: Peer) {
        let Some((route, _)) = self.once.get_mut(key) else {
            return;
        };
        let old = *route;
        let new = (old.0, old.1, responder);
        *route = new;
        if let Some(forward) = self.forwards.remove(&old) {
            if let Some(replaced) = self.forwards.insert(new, forward) {
                // A call of the same id to the same responder: this run takes its place.
                if replaced.to == AnswerTo::Caller {
                    self.end_call(old.0);
                }
            }
        }
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
        let forgotten = self.forget_where(|p| p == peer);
        forgotten
            .into_iter()
            .map(|(_, owed, answered)| (owed, answered))
            .collect()
    }

    /// Forgets every peer `gone` names, as [`forget`](Pending::forget): what each owed comes
    /// with the peer that owed it.
    pub fn forget_where(&mut self, gone: impl Fn(Peer) -> bool) -> Vec<(Peer, Owed, Answered)> {
        let waits: Vec<Caller> = self
            .once_waits
            .keys()
            .filter(|(caller, _)| gone(*caller))
            .copied()
            .collect();
        for caller in waits {
            self.cancel_wait(caller);
        }
        let routes: Vec<Route> = self
            .forwards
            .keys()
            .filter(|(caller, _, responder)| gone(*caller) || gone(*responder))
            .copied()
            .collect();
        let mut failed = Vec::new();
        for route in routes {
            let (caller, id, responder) = route;
            if !gone(responder) {
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
                AnswerTo::Caller if gone(caller) => continue,
                AnswerTo::Caller => Answered::Caller((caller, id)),
                AnswerTo::Once(key) => self.once_done(key),
            };
            failed.push((
                responder,
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
mod tests;
