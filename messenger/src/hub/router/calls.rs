//! Calls: who runs a request (one worker taking turns, a slot's, the master, every Ready
//! worker for a `map`, once per key), passing it on, and its answer back.

use bytes::Bytes;

use super::State;
use crate::hub::pending::{Answered, OnceKey, Refused as NotForwarded};
use crate::hub::HostId;
use crate::wire::{Envelope, Kind, Members as MemberList, Target};
use crate::{Error, Peer, WorkerId};

impl State {
    /// A Ready worker that handles `event`, on this host or (joined and connected) another,
    /// taking turns among them all: spread evenly per worker, not per host.
    pub(super) fn pick(&mut self, event: &Bytes) -> Option<Peer> {
        // Not joined (or cut off): no lookup among other hosts at all.
        let remote = match self.uplink_up() {
            true => self.hosts.handled(event).cloned(),
            false => None,
        };
        let Some(name) = remote else {
            return self.pick_local(event).map(Peer::Worker);
        };
        let locals = self
            .members
            .workers()
            .filter(|id| self.handled(Peer::Worker(*id), event).is_some())
            .count();
        let remotes: Vec<(HostId, WorkerId)> = self.hosts.handlers(event).collect();
        let turn = self.take_turn(event, locals + remotes.len(), |_| Some(name))?;
        match turn.checked_sub(locals) {
            Some(i) => remotes.get(i).map(|&(host, id)| Peer::Remote {
                host,
                worker: Some(id),
            }),
            None => {
                let mut local = self.members.workers().filter(|id| {
                    self.conns
                        .get(&Peer::Worker(*id))
                        .is_some_and(|conn| conn.handlers.contains(&event[..]))
                });
                local.nth(turn).map(Peer::Worker)
            }
        }
    }

    /// A Ready worker of this host that handles `event`, taking turns; one with room in its
    /// queue if any.
    pub(super) fn pick_local(&mut self, event: &Bytes) -> Option<WorkerId> {
        // The candidates, in a vector kept from call to call.
        let mut candidates = std::mem::take(&mut self.map_workers);
        candidates.clear();
        candidates.extend(self.members.workers().filter(|id| {
            self.conns
                .get(&Peer::Worker(*id))
                .is_some_and(|conn| conn.handlers.contains(&event[..]))
        }));
        let first = candidates.first().copied();
        let name = |state: &State| state.handled(Peer::Worker(first?), event).cloned();
        let picked = self.take_turn(event, candidates.len(), name).map(|start| {
            let has_room = |id: &&WorkerId| {
                self.conns
                    .get(&Peer::Worker(**id))
                    .is_some_and(|conn| conn.out.has_room())
            };
            let (before, after) = candidates.split_at(start);
            after
                .iter()
                .chain(before)
                .find(has_room)
                .unwrap_or(&candidates[start])
                .to_owned()
        });
        self.map_workers = candidates;
        picked
    }

    /// Whose turn it is among `candidates` handlers of `event`: an index, or `None` if there
    /// are none. `name` gives the copy of the event's name a handler announced, the key kept
    /// (never a slice of this frame): asked for only the first time.
    pub(super) fn take_turn(
        &mut self,
        event: &Bytes,
        candidates: usize,
        name: impl FnOnce(&State) -> Option<Bytes>,
    ) -> Option<usize> {
        if candidates == 0 {
            return None;
        }
        let turn = match self.turns.get_mut(&event[..]) {
            Some(turn) => turn,
            None => {
                let name = name(self)?;
                if self.turns.len() > 2 * self.max_events {
                    self.turns.clear();
                }
                self.turns.entry(name).or_insert(usize::MAX)
            }
        };
        *turn = turn.wrapping_add(1);
        Some(*turn % candidates)
    }

    pub(super) fn request(&mut self, env: Envelope) {
        let from = env.from;
        let responder = match env.to {
            Target::Any => match self.pick(&env.event) {
                Some(Peer::Remote { host, worker }) => {
                    let to = worker.map_or(Target::Any, Target::Worker);
                    let owed = vec![Peer::Remote { host, worker: None }];
                    return self.call_remote(&env, host, to, owed);
                }
                Some(peer) => Ok(peer),
                None => Err(Error::NoHandler {
                    event: env.event_name(),
                    peer: None,
                }),
            },
            Target::Slot(slot) if !env.key.is_empty() => return self.request_at(env, slot),
            Target::Slot(slot) => match self.members.in_slot(slot) {
                None => Err(Error::NoWorker { slot }),
                Some(worker) if self.handled(Peer::Worker(worker), &env.event).is_some() => {
                    Ok(Peer::Worker(worker))
                }
                Some(worker) => Err(Error::NoHandler {
                    event: env.event_name(),
                    peer: Some(Peer::Worker(worker)),
                }),
            },
            Target::Master if self.handled(Peer::Master, &env.event).is_some() => Ok(Peer::Master),
            Target::Master => Err(Error::NoHandler {
                event: env.event_name(),
                peer: Some(Peer::Master),
            }),
            Target::Worker(_) if from != Peer::Master => Err(Error::Forbidden {
                reason: "only the master addresses a worker by its id".into(),
            }),
            Target::Worker(worker) => return self.order(env, worker),
            Target::All { .. } => return self.map(env),
            Target::Once => return self.once(env),
            Target::Hub => Err(Error::Malformed {
                detail: "a request addressed to nobody".into(),
            }),
            Target::Remote { .. } => Err(Error::Forbidden {
                reason: "a request addressed to another host's peer by its id".into(),
            }),
        };
        match responder {
            // The caller was picked: it runs the handler itself, two frames fewer.
            Ok(responder) if responder == from && from != Peer::Master => {
                let run_here = Envelope::answer(
                    Kind::RunHere,
                    env.id,
                    Peer::Master,
                    Bytes::new(),
                    Bytes::new(),
                );
                if let Some(conn) = self.conns.get_mut(&from) {
                    conn.out.count_delivered();
                }
                self.tell(from, run_here)
            }
            Ok(responder) => {
                if let Err(error) = self.forward(&env, responder) {
                    self.fail(from, env.id, Peer::Master, env.event, &error);
                }
            }
            Err(error) => self.fail(from, env.id, Peer::Master, env.event, &error),
        }
    }

    /// Sends `env` on to `responder`, remembering where the answer goes. `Err` if the caller
    /// has too many calls pending, or the responder's queue is full.
    pub(super) fn forward(&mut self, env: &Envelope, responder: Peer) -> Result<(), Error> {
        let caller = (env.from, env.id);
        let busy = |peer| Error::Busy {
            event: env.event_name(),
            peer,
        };
        let Some(name) = self.handled(responder, &env.event).cloned() else {
            return Err(Error::NoHandler {
                event: env.event_name(),
                peer: Some(responder),
            });
        };
        match self
            .pending
            .forward(caller, responder, name, self.max_calls)
        {
            Ok(()) => {}
            Err(NotForwarded::TooMany) => return Err(busy(env.from)),
            Err(NotForwarded::InUse) => {
                return Err(Error::Forbidden {
                    reason: "the call's id is taken by a consume_once run".into(),
                })
            }
        }
        let taken = self
            .conns
            .get_mut(&responder)
            .is_some_and(|conn| conn.out.request(env.clone()).is_ok());
        if !taken {
            self.pending.unforward(caller, responder);
            return Err(busy(responder));
        }
        Ok(())
    }

    /// The master's order to one worker, in any state (a heartbeat, a drain order): it goes
    /// whatever the worker's queue holds.
    pub(super) fn order(&mut self, env: Envelope, worker: WorkerId) {
        let responder = Peer::Worker(worker);
        let caller = (env.from, env.id);
        if !self.conns.contains_key(&responder) {
            let error = Error::WorkerGone {
                event: env.event_name(),
                peer: responder,
            };
            return self.fail(env.from, env.id, Peer::Master, env.event, &error);
        }
        // The master's own name: static, never a slice of a worker's frame.
        let forwarded = self
            .pending
            .forward(caller, responder, env.event.clone(), usize::MAX);
        if forwarded.is_ok() {
            if let Some(conn) = self.conns.get_mut(&responder) {
                conn.out.control(env);
            }
        }
    }

    pub(super) fn map(&mut self, env: Envelope) {
        let Target::All { epoch, run_here } = env.to else {
            return;
        };
        // A vector kept for every map, rather than one allocated per map.
        let mut workers = std::mem::take(&mut self.map_workers);
        workers.clear();
        workers.extend(self.members.workers());
        // A map made here asks the other hosts' Ready workers too; one made there, only ours.
        let remote = match self.uplink.is_some() && env.from.host().is_none() {
            true => self.hosts.ready(),
            false => Vec::new(),
        };
        let caller_ready = workers.iter().any(|id| Peer::Worker(*id) == env.from);
        let run_here = if epoch != 0 && epoch == self.members.epoch() && remote.is_empty() {
            // The caller knows this Ready set already, and whether it handles the event.
            run_here && caller_ready
        } else {
            // A Ready caller that handles the event runs its own share itself: two frames
            // fewer, and the slowest leg of a map from a worker is gone. The caller learns
            // first who will answer, so it knows when it has every answer.
            let run_here = caller_ready && self.handled(env.from, &env.event).is_some();
            let mut listed: Vec<Peer> = workers.iter().copied().map(Peer::Worker).collect();
            for (host, ids) in &remote {
                listed.extend(ids.iter().map(|id| Peer::Remote {
                    host: *host,
                    worker: Some(*id),
                }));
            }
            let list = MemberList {
                workers: listed,
                run_here,
                // A list beyond this host's Ready set is not one to keep (see `Members`).
                epoch: if remote.is_empty() {
                    self.members.epoch()
                } else {
                    0
                },
            }
            .frame(env.id);
            if list.wire_len() > self.max_frame {
                // Only with a frame limit too small for the cluster (the cluster's builder
                // refuses that): the call fails rather than waits for a list never sent.
                let error = Error::FrameTooLarge {
                    size: list.wire_len(),
                    max: self.max_frame,
                };
                self.map_workers = workers;
                return self.fail(env.from, env.id, Peer::Master, env.event, &error);
            }
            self.tell(env.from, list);
            run_here
        };
        for &worker in &workers {
            let peer = Peer::Worker(worker);
            if peer == env.from && run_here {
                continue;
            }
            if let Err(error) = self.forward(&env, peer) {
                self.fail(env.from, env.id, peer, env.event.clone(), &error);
            }
        }
        self.map_workers = workers;
        if !remote.is_empty() {
            self.map_remote(&env, remote);
        }
    }

    pub(super) fn once(&mut self, env: Envelope) {
        let key: OnceKey = (
            Bytes::copy_from_slice(&env.event),
            Bytes::copy_from_slice(&env.key),
        );
        let caller = (env.from, env.id);
        if let Some(done) = self.once.get(&key) {
            let reply = Envelope::answer(Kind::Reply, env.id, done.from, key.0, done.body.clone());
            return self.answer(env.from, reply);
        }
        let busy = |peer| Error::Busy {
            event: env.event_name(),
            peer,
        };
        if self.pending.once_running(&key) {
            if self.pending.once_wait(key, caller, self.max_calls).is_err() {
                self.fail(
                    env.from,
                    env.id,
                    Peer::Master,
                    env.event.clone(),
                    &busy(env.from),
                );
            }
            return;
        }
        if self.uplink.is_some() {
            // Settled with the other hosts first.
            return self.once_cluster(env, key);
        }
        let Some(worker) = self.pick_local(&env.event) else {
            let error = Error::NoHandler {
                event: env.event_name(),
                peer: None,
            };
            return self.fail(env.from, env.id, Peer::Master, env.event, &error);
        };
        let responder = Peer::Worker(worker);
        let name = self
            .handled(responder, &env.event)
            .cloned()
            .unwrap_or_default();
        let started = self
            .pending
            .once_run(key, caller, responder, name, self.max_calls);
        if let Err(refused) = started {
            let error = match refused {
                NotForwarded::TooMany => busy(env.from),
                NotForwarded::InUse => Error::Forbidden {
                    reason: "the call's id is taken by a consume_once run".into(),
                },
            };
            return self.fail(env.from, env.id, Peer::Master, env.event.clone(), &error);
        }
        let taken = self
            .conns
            .get_mut(&responder)
            .is_some_and(|conn| conn.out.request(env.clone()).is_ok());
        if !taken {
            // As if the run failed at once: every caller (only this one) hears it.
            if let Answered::Once(_, waiters) = self.pending.answered(caller, responder) {
                for (peer, id) in waiters {
                    self.fail(peer, id, Peer::Master, env.event.clone(), &busy(responder));
                }
            }
        }
    }

    pub(super) fn answered(&mut self, env: Envelope) {
        // An answer names its caller (the request's sender) and the caller's id.
        let caller = match env.to {
            Target::Master => Peer::Master,
            Target::Worker(id) => Peer::Worker(id),
            Target::Remote { host, worker } => Peer::Remote { host, worker },
            _ => {
                let reason = format!("sent an answer addressed to {:?}", env.to);
                return self.close_later(env.from, reason);
            }
        };
        self.answered_by(caller, env.from, env);
    }

    /// An answer to `caller`'s call, from the responder the route was kept for (`owed_by`:
    /// its sender, or for a call to another host, that host).
    pub(super) fn answered_by(&mut self, caller: Peer, owed_by: Peer, env: Envelope) {
        match self.pending.answered((caller, env.id), owed_by) {
            // A call given up, or an answer the peer was not asked for.
            Answered::Unknown => tracing::debug!(from = %env.from, "an answer nobody waits for"),
            Answered::Caller(_) => self.answer(caller, env),
            Answered::Once(key, waiters) => {
                // A success is remembered for every later caller; a failure is not.
                if env.kind == Kind::Reply {
                    self.once.remember(key.clone(), env.from, &env.body);
                }
                if !self.deciding(owed_by) {
                    // A run of this host: its result is the cluster's.
                    let reply = (env.kind == Kind::Reply).then(|| (env.from, env.body.clone()));
                    self.once_done(key, reply);
                }
                let answer = Envelope {
                    event: Bytes::copy_from_slice(&env.event),
                    body: Bytes::copy_from_slice(&env.body),
                    ..env
                };
                for (caller, id) in waiters {
                    self.answer(
                        caller,
                        Envelope {
                            id,
                            ..answer.clone()
                        },
                    );
                }
            }
        }
    }
}
