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
mod tests {
    use super::*;
    use crate::WorkerId;

    const ME: HostId = HostId(1);
    const THERE: HostId = HostId(2);
    const CALLER: Peer = Peer::Worker(WorkerId::new(0, 1));

    fn call(to: Target) -> Envelope {
        Envelope {
            id: 7,
            from: CALLER,
            to,
            ..Envelope::new(Kind::Request, "e", Vec::new())
        }
    }

    /// An answer from `from` (in the other host's terms) to the caller.
    fn answer(kind: Kind, from: Peer, body: Bytes) -> Envelope {
        Envelope {
            id: 7,
            from,
            to: Target::Remote {
                host: ME,
                worker: CALLER.worker(),
            },
            ..Envelope::new(kind, "e", body)
        }
    }

    fn worker(slot: u32) -> WorkerId {
        WorkerId::new(slot, 1)
    }

    fn owed(slot: u32) -> Peer {
        Peer::Remote {
            host: THERE,
            worker: Some(worker(slot)),
        }
    }

    fn map(calls: &mut Calls, slots: &[u32]) {
        let all = Target::All {
            epoch: 0,
            run_here: false,
        };
        let owed = slots.iter().map(|&s| owed(s)).collect();
        calls.sent(THERE, &call(all), owed, 1, &mut Vec::new());
    }

    fn members(slots: &[u32]) -> Envelope {
        let members = Members {
            workers: slots.iter().map(|&s| Peer::Worker(worker(s))).collect(),
            run_here: false,
            epoch: 3,
        };
        answer(Kind::Members, Peer::Master, members.to_bytes())
    }

    /// (answered or failed, the route) of each settle, in order.
    fn routes(out: &[Settle]) -> Vec<(bool, Peer)> {
        out.iter()
            .map(|s| match s {
                Settle::Answer { owed_by, .. } => (true, *owed_by),
                Settle::Fail { owed_by, .. } => (false, *owed_by),
            })
            .collect()
    }

    #[test]
    fn a_consume_ends_with_its_one_answer() {
        let mut calls = Calls::default();
        calls.sent(
            THERE,
            &call(Target::Worker(worker(0))),
            vec![Peer::Remote {
                host: THERE,
                worker: None,
            }],
            1,
            &mut Vec::new(),
        );
        let mut out = Vec::new();
        let reply = answer(Kind::Reply, Peer::Worker(worker(0)), Bytes::new());
        calls.answered(ME, THERE, reply.clone(), &mut out);
        assert_eq!(
            routes(&out),
            [(
                true,
                Peer::Remote {
                    host: THERE,
                    worker: None
                }
            )]
        );
        // A second answer, or one from another host, waits for nothing.
        out.clear();
        calls.answered(ME, THERE, reply.clone(), &mut out);
        calls.answered(ME, HostId(9), reply, &mut out);
        assert!(out.is_empty());
        assert!(calls.waiting.is_empty());
    }

    #[test]
    fn a_map_share_fails_the_workers_its_host_does_not_list_and_ends_with_the_last_answer() {
        let mut calls = Calls::default();
        map(&mut calls, &[0, 1, 2]);
        let mut out = Vec::new();
        // An answer may come before the list.
        calls.answered(
            ME,
            THERE,
            answer(Kind::Reply, Peer::Worker(worker(1)), Bytes::new()),
            &mut out,
        );
        calls.answered(ME, THERE, members(&[1, 2, 5]), &mut out);
        assert_eq!(routes(&out), [(true, owed(1)), (false, owed(0))]);
        match &out[1] {
            Settle::Fail { error, .. } => assert!(matches!(error, Error::WorkerGone { .. })),
            other => panic!("{other:?}"),
        }
        // A worker not asked for: dropped.
        out.clear();
        calls.answered(
            ME,
            THERE,
            answer(Kind::Reply, Peer::Worker(worker(5)), Bytes::new()),
            &mut out,
        );
        assert!(out.is_empty());
        assert_eq!(calls.waiting.len(), 1);
        calls.answered(
            ME,
            THERE,
            answer(Kind::Failure, Peer::Worker(worker(2)), Bytes::new()),
            &mut out,
        );
        assert_eq!(routes(&out), [(true, owed(2))]);
        assert!(calls.waiting.is_empty());
    }

    #[test]
    fn a_share_refused_by_its_host_fails_every_route() {
        let mut calls = Calls::default();
        map(&mut calls, &[0, 1]);
        let mut out = Vec::new();
        let error = Error::Busy {
            event: "e".into(),
            peer: Peer::Master,
        };
        let refusal = Envelope::failure(7, Peer::Master, Bytes::from_static(b"e"), &error, 1 << 20);
        let refusal = Envelope {
            to: Target::Remote {
                host: ME,
                worker: CALLER.worker(),
            },
            ..refusal
        };
        calls.answered(ME, THERE, refusal, &mut out);
        assert_eq!(routes(&out), [(false, owed(0)), (false, owed(1))]);
        assert!(matches!(
            &out[0],
            Settle::Fail {
                error: Error::Busy { .. },
                ..
            }
        ));
        assert!(calls.waiting.is_empty());
    }

    #[test]
    fn a_message_nobody_took_fails_exactly_its_calls() {
        let mut calls = Calls::default();
        let one = vec![Peer::Remote {
            host: THERE,
            worker: None,
        }];
        let mut other = call(Target::Worker(worker(0)));
        other.id = 8;
        calls.sent(
            THERE,
            &call(Target::Worker(worker(0))),
            one.clone(),
            1,
            &mut Vec::new(),
        );
        calls.sent(THERE, &other, one.clone(), 2, &mut Vec::new());
        calls.sent(
            HostId(3),
            &call(Target::Worker(worker(0))),
            one,
            1,
            &mut Vec::new(),
        );
        let mut out = Vec::new();
        let error = Error::HostUnreachable {
            host: "there".into(),
            detail: "no responders".into(),
        };
        calls.batch_failed(THERE, 1, &error, &mut out);
        assert_eq!(out.len(), 1);
        assert!(matches!(
            &out[0],
            Settle::Fail {
                id: 7,
                error: Error::HostUnreachable { .. },
                ..
            }
        ));
        assert_eq!(calls.waiting.len(), 2);
        // The connection lost: every call fails, each naming its host.
        out.clear();
        calls.fail_all(
            |host| Error::HostUnreachable {
                host: host.to_string(),
                detail: String::new(),
            },
            &mut out,
        );
        assert_eq!(out.len(), 2);
        assert!(calls.waiting.is_empty());
    }

    #[test]
    fn an_id_used_again_owes_every_route_or_fails_the_older_call() {
        let mut calls = Calls::default();
        let host = vec![Peer::Remote {
            host: THERE,
            worker: None,
        }];
        let mut out = Vec::new();
        calls.sent(
            THERE,
            &call(Target::Worker(worker(0))),
            host.clone(),
            1,
            &mut out,
        );
        // A map under the same id: answered another way, so the consume fails now.
        let all = Target::All {
            epoch: 0,
            run_here: false,
        };
        calls.sent(THERE, &call(all), vec![owed(0), owed(1)], 2, &mut out);
        assert_eq!(routes(&out), [(false, host[0])]);
        // The same kind again: one entry owes the routes of both.
        out.clear();
        calls.sent(THERE, &call(all), vec![owed(1), owed(2)], 3, &mut out);
        assert!(out.is_empty());
        calls.answered(ME, THERE, members(&[0, 1, 2]), &mut out);
        for slot in 0..3 {
            let reply = answer(Kind::Reply, Peer::Worker(worker(slot)), Bytes::new());
            calls.answered(ME, THERE, reply, &mut out);
        }
        assert_eq!(
            routes(&out),
            [(true, owed(0)), (true, owed(1)), (true, owed(2))]
        );
        assert!(calls.waiting.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_unanswered_for_the_timeout_fails_timed_out() {
        let mut calls = Calls::default();
        map(&mut calls, &[0, 1]);
        let timeout = Duration::from_secs(10);
        let mut out = Vec::new();
        calls.expire(timeout, &mut out);
        assert!(out.is_empty());
        tokio::time::advance(timeout + Duration::from_millis(1)).await;
        calls.expire(timeout, &mut out);
        assert_eq!(routes(&out), [(false, owed(0)), (false, owed(1))]);
        assert!(matches!(
            &out[0],
            Settle::Fail {
                error: Error::Timeout { .. },
                ..
            }
        ));
        assert!(calls.waiting.is_empty());
    }
}
