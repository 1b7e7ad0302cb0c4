//! Routes that cross hosts, in a cluster joined over NATS: what this Hub hands its uplink for
//! other hosts, and what the uplink brings from them.
//!
//! A frame from another host carries its sender as [`Peer::Remote`], stamped by that host's
//! Hub; an answer for a caller on another host goes to the uplink with the caller named. A call
//! to another host is kept here as routes like any other: owed by that host (`worker: None`)
//! when it may give the call to any of its workers, or by each worker for a `map`'s share; the
//! uplink answers every route, with the host's answers or a failure naming the host.

use bytes::Bytes;

use super::State;
use crate::event::may_send;
use crate::hub::pending::OnceKey;
use crate::hub::port::{Outgoing, Refusal};
use crate::hub::HostId;
use crate::wire::{Envelope, Kind, Target};
use crate::{Error, Peer, WorkerId};

impl State {
    /// Whether other hosts can be reached now: joined, and the NATS connection up.
    pub(super) fn uplink_up(&self) -> bool {
        self.uplink.as_ref().is_some_and(|port| port.is_up())
    }

    /// A host's name for errors: its name if known, else its id.
    pub(super) fn host_name(&self, host: HostId) -> String {
        self.hosts
            .name(host)
            .map_or_else(|| host.to_string(), str::to_owned)
    }

    /// Passes `env`, a call from this host, to `host`: `to` names who runs it there, `owed`
    /// the routes kept for its answers. A route that cannot be kept, or a host that cannot be
    /// reached, fails at once.
    pub(super) fn call_remote(
        &mut self,
        env: &Envelope,
        host: HostId,
        to: Target,
        owed: Vec<Peer>,
    ) {
        let caller = (env.from, env.id);
        let mut kept = Vec::with_capacity(owed.len());
        for responder in owed {
            let name = Bytes::copy_from_slice(&env.event);
            match self
                .pending
                .forward(caller, responder, name, self.max_calls)
            {
                Ok(()) => kept.push(responder),
                Err(_) => {
                    let error = Error::Busy {
                        event: env.event_name(),
                        peer: env.from,
                    };
                    self.fail(env.from, env.id, responder, env.event.clone(), &error);
                }
            }
        }
        if kept.is_empty() {
            return;
        }
        let refused = match &self.uplink {
            None => Some(Refusal::Down),
            Some(port) => {
                let call = Outgoing::Call {
                    host,
                    env: Envelope {
                        to,
                        key: Bytes::new(),
                        ..env.clone()
                    },
                    owed: kept.clone(),
                };
                port.offer(call).err()
            }
        };
        if let Some(refused) = refused {
            let error = Error::HostUnreachable {
                host: self.host_name(host),
                detail: match refused {
                    Refusal::Down => "the NATS connection is down".into(),
                    Refusal::Full => "the uplink's queue is full".into(),
                },
            };
            for responder in kept {
                self.pending.unforward(caller, responder);
                self.fail(env.from, env.id, responder, env.event.clone(), &error);
            }
        }
    }

    /// A `request_at(host, slot)`: the slot of the host named in `env.key` (this one's own
    /// name included).
    pub(super) fn request_at(&mut self, mut env: Envelope, slot: u32) {
        let own = self
            .uplink
            .as_ref()
            .is_some_and(|port| port.name.as_bytes() == &env.key[..]);
        if own {
            env.key = Bytes::new();
            return self.request(env);
        }
        let Some(host) = self.hosts.by_name(&env.key) else {
            let error = Error::HostUnreachable {
                host: String::from_utf8_lossy(&env.key).into_owned(),
                detail: "no such host in this cluster".into(),
            };
            return self.fail(env.from, env.id, Peer::Master, env.event.clone(), &error);
        };
        let owed = vec![Peer::Remote { host, worker: None }];
        self.call_remote(&env, host, Target::Slot(slot), owed);
    }

    /// A `map`'s shares on other hosts: one call per host, owed by each of its Ready workers.
    pub(super) fn map_remote(&mut self, env: &Envelope, hosts: Vec<(HostId, Vec<WorkerId>)>) {
        let all = Target::All {
            epoch: 0,
            run_here: false,
        };
        for (host, workers) in hosts {
            let owed = workers
                .into_iter()
                .map(|id| Peer::Remote {
                    host,
                    worker: Some(id),
                })
                .collect();
            self.call_remote(env, host, all, owed);
        }
    }

    /// A frame from another host, its sender stamped by that host's Hub.
    pub fn route_remote(&mut self, env: Envelope) {
        let from = env.from;
        let Some(host) = from.host() else {
            return tracing::debug!("a frame from another host without its host: dropped");
        };
        if self.uplink.as_ref().is_some_and(|port| port.me == host) {
            return;
        }
        self.routed.count_remote(&env);
        match (env.kind, env.to) {
            (kind @ (Kind::Broadcast | Kind::Request), to)
                if !may_send(from, kind, &env.event, to) =>
            {
                self.refuse_reserved(env)
            }
            (Kind::Broadcast, _) => self.broadcast_from_afar(env),
            // A worker picked there: it, or another that handles the event if it has gone.
            (Kind::Request, Target::Worker(id)) => {
                let named = Peer::Worker(id);
                let responder =
                    if self.members.is_ready(id) && self.handled(named, &env.event).is_some() {
                        Some(named)
                    } else {
                        self.pick_local(&env.event).map(Peer::Worker)
                    };
                match responder {
                    Some(responder) => {
                        if let Err(error) = self.forward(&env, responder) {
                            self.fail(from, env.id, Peer::Master, env.event, &error);
                        }
                    }
                    None => {
                        let error = Error::NoHandler {
                            event: env.event_name(),
                            peer: None,
                        };
                        self.fail(from, env.id, Peer::Master, env.event, &error);
                    }
                }
            }
            (Kind::Request, Target::Slot(_) | Target::All { .. }) if env.key.is_empty() => {
                self.request(env)
            }
            (Kind::Cancel, _) => {
                let responders = self.conns.keys();
                self.pending.cancel((from, env.id), responders);
            }
            (kind, to) => {
                tracing::debug!(?kind, ?to, %from, "a frame from another host that no route takes: dropped")
            }
        }
        self.settle();
    }

    /// An answer from `host` to a call made here, as that host's Hub stamped it (its sender in
    /// that host's terms, its caller in this one's as [`Target::Remote`]); `owed_by` is the
    /// route it answers.
    pub fn remote_answer(&mut self, host: HostId, mut env: Envelope, caller: Peer, owed_by: Peer) {
        let Some(me) = self.uplink.as_ref().map(|port| port.me) else {
            return;
        };
        let worker = match env.from {
            Peer::Worker(id) => Some(id),
            Peer::Master => None,
            Peer::Remote { .. } => return tracing::debug!("an answer relayed twice: dropped"),
        };
        // For the call it answers: this host's caller, as the call was made.
        let named = match env.to {
            Target::Remote { host, worker } if host == me => {
                worker.map_or(Peer::Master, Peer::Worker)
            }
            to => return tracing::debug!(?to, "an answer for another host: dropped"),
        };
        if named != caller {
            return tracing::debug!(%named, %caller, "an answer naming another caller: dropped");
        }
        env.from = Peer::Remote { host, worker };
        env.to = Target::caller(caller);
        self.answered_by(caller, owed_by, env);
        self.settle();
    }

    /// Fails the call `(caller, id)` owed by `owed_by` with `error`, if it still waits.
    pub fn remote_failed(
        &mut self,
        caller: Peer,
        id: u64,
        owed_by: Peer,
        event: Bytes,
        error: &Error,
    ) {
        let mut failure = Envelope::failure(id, owed_by, event, error, self.max_frame);
        failure.to = Target::caller(caller);
        self.answered_by(caller, owed_by, failure);
        self.settle();
    }

    /// The placeholder responder of a `consume_once` run being settled with the other hosts.
    pub(super) fn deciding(&self, peer: Peer) -> bool {
        self.uplink.as_ref().is_some_and(|port| {
            peer == Peer::Remote {
                host: port.me,
                worker: None,
            }
        })
    }

    /// A `consume_once` key neither remembered nor being run here, in a cluster joined over
    /// NATS: the uplink settles it with the other hosts (an atomic create in a key-value
    /// bucket). Meanwhile the run waits here, its responder a placeholder ("deciding"), and
    /// later callers of this host wait on it as on any run.
    pub(super) fn once_cluster(&mut self, env: Envelope, key: OnceKey) {
        let caller = (env.from, env.id);
        let Some(me) = self.uplink.as_ref().map(|port| port.me) else {
            return;
        };
        let deciding = Peer::Remote {
            host: me,
            worker: None,
        };
        let started =
            self.pending
                .once_run(key.clone(), caller, deciding, key.0.clone(), self.max_calls);
        if started.is_err() {
            let error = Error::Busy {
                event: env.event_name(),
                peer: env.from,
            };
            return self.fail(env.from, env.id, Peer::Master, env.event, &error);
        }
        // Copies: the request waits in the uplink's queue and in the bucket's round trips.
        let request = Envelope {
            event: key.0.clone(),
            key: key.1.clone(),
            body: Bytes::copy_from_slice(&env.body),
            ..env
        };
        let offered = match &self.uplink {
            Some(port) => port.offer(Outgoing::Once(request)),
            None => Err(Refusal::Down),
        };
        if offered.is_err() {
            let error = Error::HostUnreachable {
                host: "the NATS server".into(),
                detail: "the connection is down: consume_once cannot be settled across hosts"
                    .into(),
            };
            self.once_end(&key, Err(error));
        }
    }

    /// The uplink's word on `request`'s key: this host runs it. It goes to a Ready worker that
    /// handles it, on any host.
    pub fn once_won(&mut self, request: Envelope) {
        let key: OnceKey = (request.event.clone(), request.key.clone());
        let Some((caller, id, responder)) = self.pending.once_route(&key) else {
            return;
        };
        if !self.deciding(responder) {
            return;
        }
        let no_handler = Error::NoHandler {
            event: request.event_name(),
            peer: None,
        };
        let env = Envelope {
            from: caller,
            id,
            ..request
        };
        match self.pick(&env.event) {
            None => {
                self.once_end(&key, Err(no_handler));
                // Nothing ran: the next caller, on any host, may.
                self.once_done(key, None);
            }
            Some(Peer::Remote { host, worker }) => {
                let owed = Peer::Remote { host, worker: None };
                self.pending.once_reroute(&key, owed);
                let call = Outgoing::Call {
                    host,
                    env: Envelope {
                        to: worker.map_or(Target::Any, Target::Worker),
                        key: Bytes::new(),
                        ..env
                    },
                    owed: vec![owed],
                };
                let offered = self.uplink.as_ref().map(|port| port.offer(call));
                if !matches!(offered, Some(Ok(()))) {
                    let error = Error::HostUnreachable {
                        host: self.host_name(host),
                        detail: "the uplink could not take the call".into(),
                    };
                    self.once_end(&key, Err(error));
                }
            }
            Some(worker) => {
                self.pending.once_reroute(&key, worker);
                let taken = self
                    .conns
                    .get_mut(&worker)
                    .is_some_and(|conn| conn.out.request(env.clone()).is_ok());
                if !taken {
                    let error = Error::Busy {
                        event: env.event_name(),
                        peer: worker,
                    };
                    self.once_end(&key, Err(error));
                }
            }
        }
    }

    /// The uplink's word on `key` while it was being settled: a result (another host's run,
    /// read from the bucket), or a failure to settle it. Ignored if the key is no longer being
    /// settled (a word from before this host left and joined again, say).
    pub fn once_settled(&mut self, key: &OnceKey, result: Result<(Peer, Bytes), Error>) {
        let settling = self.pending.once_route(key);
        if settling.is_some_and(|(_, _, responder)| self.deciding(responder)) {
            self.once_end(key, result);
        }
    }

    /// The end of `key`'s run as this host hears it. Every caller waiting on it here gets it.
    pub(super) fn once_end(&mut self, key: &OnceKey, result: Result<(Peer, Bytes), Error>) {
        let Some((caller, id, responder)) = self.pending.once_route(key) else {
            return;
        };
        let mut env = match result {
            Ok((from, body)) => Envelope::answer(Kind::Reply, id, from, key.0.clone(), body),
            Err(error) => Envelope::failure(id, responder, key.0.clone(), &error, self.max_frame),
        };
        env.to = Target::caller(caller);
        self.answered_by(caller, responder, env);
        self.settle();
    }

    /// Tells the other hosts how a run of this host ended (nothing without an uplink). Never
    /// dropped while connected: what the uplink's queue has no room for now is told at the
    /// next flush.
    pub(super) fn once_done(&mut self, key: OnceKey, reply: Option<(Peer, Bytes)>) {
        if self.uplink.is_none() {
            return;
        }
        let (event, key) = key;
        self.once_unsaid
            .push_back(Outgoing::OnceDone { event, key, reply });
        self.tell_once_done();
    }

    /// Hands the uplink the ends of runs not yet told.
    pub(super) fn tell_once_done(&mut self) {
        let Some(port) = &self.uplink else {
            return self.once_unsaid.clear();
        };
        // In order: a failed run's end before the next run's.
        while let Some(item) = self.once_unsaid.pop_front() {
            match port.offer_back(item) {
                Ok(()) => {}
                Err((Refusal::Full, item)) => {
                    self.once_unsaid.push_front(item);
                    break;
                }
                // Down: the entry stays "running, by this host" until this host's next run of
                // the key, or until it leaves (see `uplink/once.rs`).
                Err((Refusal::Down, _)) => {}
            }
        }
    }

    /// Hands an answer for `to`, a caller on another host, to the uplink: one it cannot take
    /// is lost, and that caller's own uplink fails the call (its connection lost, or at its
    /// deadline).
    pub(super) fn answer_remote(&mut self, to: Peer, env: Envelope) {
        if let Some(port) = &self.uplink {
            if let Err(refused) = port.offer(Outgoing::Answer { to, env }) {
                tracing::debug!(%to, ?refused, "an answer for another host not sent");
            }
        }
    }
}
