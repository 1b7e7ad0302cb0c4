//! This host's calls to other hosts, while they wait for their answers: which routes of the
//! Hub each still owes, and what ends it (its answers, its host gone, the connection lost, its
//! time up, its caller giving up). Plain data: what to tell the Hub is returned as [`Settle`]s,
//! applied by the relay.
//!
//! A call is known by (its host, its caller here, its id): a `map` sends one call per host
//! under the same caller and id. It went out in a numbered message to that host (a batch of
//! calls), so that a message nobody took (NATS says "no responders") fails exactly its calls.
//!
//! A `consume` or `request_at` owes one answer, from the host. A `map`'s share owes one per
//! worker of that host that the caller knew of: the host first says which of them it asks (its
//! member list), and a worker it does not list fails at once, as gone; the share ends with the
//! last owed answer, or with a failure of the whole share from that host's master.

use std::collections::hash_map::Entry;
use std::time::Duration;

use bytes::Bytes;
use rustc_hash::{FxHashMap as HashMap, FxHashSet};
use tokio::time::Instant;

use crate::hub::HostId;
use crate::wire::{Envelope, Kind, Members, Target};
use crate::{Error, Peer};

/// What to tell the Hub.
#[derive(Debug)]
pub(super) enum Settle {
    /// An answer for `caller`'s call, for the route `owed_by`.
    Answer {
        host: HostId,
        env: Envelope,
        caller: Peer,
        owed_by: Peer,
    },
    /// The route `owed_by` of `caller`'s call `id` fails.
    Fail {
        caller: Peer,
        id: u64,
        owed_by: Peer,
        event: Bytes,
        error: Error,
    },
}

type Key = (HostId, Peer, u64);

struct Waiting {
    event: Bytes,
    /// The routes not answered yet.
    owed: Vec<Peer>,
    map: bool,
    /// The message it went out in.
    batch: u64,
    since: Instant,
}

#[derive(Default)]
pub(super) struct Calls {
    waiting: HashMap<Key, Waiting>,
}

impl Calls {
    /// `env`, a call from this host (its caller in this host's terms), went to `host` in
    /// message `batch`.
    pub fn sent(
        &mut self,
        host: HostId,
        env: &Envelope,
        owed: Vec<Peer>,
        batch: u64,
        out: &mut Vec<Settle>,
    ) {
        let waiting = Waiting {
            event: env.event.clone(),
            owed,
            map: matches!(env.to, Target::All { .. }),
            batch,
            since: Instant::now(),
        };
        // The same caller and id to the same host twice (a caller reusing an id): one entry
        // owes every route of both, so that each is answered.
        match self.waiting.entry((host, env.from, env.id)) {
            Entry::Vacant(entry) => {
                entry.insert(waiting);
            }
            Entry::Occupied(mut entry) => {
                tracing::debug!(%host, caller = %env.from, id = env.id, "a call sent twice");
                let old = entry.get_mut();
                if old.map != waiting.map {
                    // Answered one way or the other, not both: the older one fails.
                    let old = std::mem::replace(old, waiting);
                    let error = Error::Malformed {
                        detail: "the same call id used again before it was answered".into(),
                    };
                    for owed_by in old.owed {
                        out.push(fail(env.from, env.id, owed_by, &old.event, error.clone()));
                    }
                    return;
                }
                for owed in waiting.owed {
                    if !old.owed.contains(&owed) {
                        old.owed.push(owed);
                    }
                }
            }
        }
    }

    /// An answer from `host`: its sender in that host's terms, its caller in this one's as
    /// [`Target::Remote`] naming this host (`me`).
    pub fn answered(&mut self, me: HostId, host: HostId, env: Envelope, out: &mut Vec<Settle>) {
        let caller = match env.to {
            Target::Remote { host, worker } if host == me => {
                worker.map_or(Peer::Master, Peer::Worker)
            }
            to => return tracing::debug!(?to, "an answer for another host: dropped"),
        };
        let key = (host, caller, env.id);
        let Entry::Occupied(mut entry) = self.waiting.entry(key) else {
            return tracing::debug!(%host, %caller, id = env.id, "an answer nobody waits for");
        };
        let waiting = entry.get_mut();
        if !waiting.map {
            let owed_by = Peer::Remote { host, worker: None };
            out.push(Settle::Answer {
                host,
                env,
                caller,
                owed_by,
            });
            entry.remove();
            return;
        }
        match (env.kind, env.from) {
            (Kind::Members, _) => {
                let Ok(members) = Members::from_bytes(&env.body) else {
                    return tracing::debug!(%host, "a member list that does not decode");
                };
                let asked: FxHashSet<Peer> = members.workers.into_iter().collect();
                let listed = |owed: &Peer| match owed {
                    Peer::Remote {
                        worker: Some(w), ..
                    } => asked.contains(&Peer::Worker(*w)),
                    _ => false,
                };
                let (kept, gone): (Vec<Peer>, Vec<Peer>) =
                    waiting.owed.iter().partition(|owed| listed(owed));
                waiting.owed = kept;
                for owed_by in gone {
                    let error = Error::WorkerGone {
                        event: String::from_utf8_lossy(&waiting.event).into_owned(),
                        peer: owed_by,
                    };
                    out.push(fail(caller, env.id, owed_by, &waiting.event, error));
                }
            }
            // The host refused the whole share.
            (Kind::Failure, Peer::Master) => {
                let error = env.error();
                for &owed_by in &waiting.owed {
                    out.push(fail(caller, env.id, owed_by, &waiting.event, error.clone()));
                }
                waiting.owed.clear();
            }
            (_, Peer::Worker(worker)) => {
                let owed_by = Peer::Remote {
                    host,
                    worker: Some(worker),
                };
                let Some(at) = waiting.owed.iter().position(|o| *o == owed_by) else {
                    return tracing::debug!(%host, %worker, "an answer from a worker not asked");
                };
                waiting.owed.swap_remove(at);
                out.push(Settle::Answer {
                    host,
                    env,
                    caller,
                    owed_by,
                });
            }
            (kind, from) => {
                return tracing::debug!(?kind, %from, "a map answer from nobody asked");
            }
        }
        if entry.get().owed.is_empty() {
            entry.remove();
        }
    }

    /// The calls that went to `host` in message `batch` fail with `error` (nothing took it).
    pub fn batch_failed(&mut self, host: HostId, batch: u64, error: &Error, out: &mut Vec<Settle>) {
        self.fail_where(
            |key, waiting| key.0 == host && waiting.batch == batch,
            error,
            out,
        );
    }

    /// `caller` gave up its call `id`: the calls of it to `hosts` are forgotten, and returned
    /// (each host and the routes it owed).
    pub fn cancel(
        &mut self,
        caller: Peer,
        id: u64,
        hosts: impl Iterator<Item = HostId>,
    ) -> Vec<(HostId, Vec<Peer>)> {
        hosts
            .filter_map(|host| {
                let waiting = self.waiting.remove(&(host, caller, id))?;
                Some((host, waiting.owed))
            })
            .collect()
    }

    /// The calls to `host` fail with `error` (it left the cluster).
    pub fn host_gone(&mut self, host: HostId, error: &Error, out: &mut Vec<Settle>) {
        self.fail_where(|key, _| key.0 == host, error, out);
    }

    /// Every call fails with the error `error_for` its host gives.
    pub fn fail_all(&mut self, error_for: impl Fn(HostId) -> Error, out: &mut Vec<Settle>) {
        for ((host, caller, id), waiting) in self.waiting.drain() {
            let error = error_for(host);
            for owed_by in waiting.owed {
                out.push(fail(caller, id, owed_by, &waiting.event, error.clone()));
            }
        }
    }

    /// The calls waiting longer than `timeout` fail, timed out.
    pub fn expire(&mut self, timeout: Duration, out: &mut Vec<Settle>) {
        let now = Instant::now();
        let late: Vec<Key> = self
            .waiting
            .iter()
            .filter(|(_, waiting)| now.saturating_duration_since(waiting.since) > timeout)
            .map(|(key, _)| *key)
            .collect();
        for key in late {
            let Some(waiting) = self.waiting.remove(&key) else {
                continue;
            };
            let (host, caller, id) = key;
            let error = Error::Timeout {
                event: String::from_utf8_lossy(&waiting.event).into_owned(),
                after: timeout,
                peer: Some(Peer::Remote { host, worker: None }),
            };
            for owed_by in waiting.owed {
                out.push(fail(caller, id, owed_by, &waiting.event, error.clone()));
            }
        }
    }

    fn fail_where(
        &mut self,
        which: impl Fn(&Key, &Waiting) -> bool,
        error: &Error,
        out: &mut Vec<Settle>,
    ) {
        let keys: Vec<Key> = self
            .waiting
            .iter()
            .filter(|(key, waiting)| which(key, waiting))
            .map(|(key, _)| *key)
            .collect();
        for key in keys {
            if let Some(waiting) = self.waiting.remove(&key) {
                for owed_by in waiting.owed {
                    out.push(fail(key.1, key.2, owed_by, &waiting.event, error.clone()));
                }
            }
        }
    }
}

fn fail(caller: Peer, id: u64, owed_by: Peer, event: &Bytes, error: Error) -> Settle {
    Settle::Fail {
        caller,
        id,
        owed_by,
        event: event.clone(),
        error,
    }
}

#[cfg(test)]
mod tests;
