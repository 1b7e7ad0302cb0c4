//! What the Hub does with each frame: the routing rules, all of them, under one lock and
//! without ever waiting.
//!
//! A frame is stamped with the peer its connection belongs to, then:
//! - `Announce`: the peer handles that event from now on (at most `max_events` names);
//! - `Ready`: a request to be Ready, answered by the master (see `members.rs`);
//! - `Broadcast`: to every Ready worker that handles it, the sender included;
//! - `Request`: to one worker (`consume`: round robin among those that handle it, preferring
//!   room; `request`: a slot's Ready worker), to every Ready worker (`map`), to the master, or
//!   once per key (`consume_once`);
//! - `Reply` / `Failure`: back to the caller, from the responder it was asked of only;
//! - `Cancel`: the caller gave up; `Credit`: the peer ran broadcasts (see `conn.rs`).
//!
//! Anything else from a peer breaks the protocol, and closes its connection.

use std::sync::Arc;

use bytes::Bytes;
use rustc_hash::FxHashMap as HashMap;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::conn::{Ack, Budget, Conn, Outbound, Refused};
use super::members::{Admission, Members};
use super::once::OnceResults;
use super::pending::{Answered, OnceKey, Pending, Refused as NotForwarded};
use super::HubEvent;
use crate::transport::cost;
use crate::wire::{Credit, Envelope, Kind, Members as MemberList, Target};
use crate::{Config, Error, Peer, WorkerId};

/// The body of the reply to a granted `Ready`: MessagePack nil.
const NIL: &[u8] = &[0xc0];

pub(super) struct State {
    pub conns: HashMap<Peer, Conn>,
    pub members: Members,
    pending: Pending,
    once: OnceResults,
    /// Round-robin position per event, for `consume`; keyed by names that a Ready worker
    /// handles (the copies it announced), and cleared when it grows past what can be handled.
    turns: HashMap<Bytes, usize>,
    subscribers: Vec<mpsc::UnboundedSender<HubEvent>>,
    admission: Admission,
    max_calls: usize,
    max_events: usize,
    pub budget: Budget,
    /// Peers to close, found while routing; closed before the lock is released.
    closing: Vec<(Peer, String)>,
    /// Broadcasts each sender is owed an acknowledgement for: frames and bytes. The sender of
    /// the frames being routed is kept apart, to spare a lookup per broadcast.
    acks: HashMap<Peer, (u64, u64)>,
    acks_hot: Option<(Peer, (u64, u64))>,
    /// How many are acknowledged at a time ([`Config::credit_batch`]).
    ack_batch: (u64, u64),
    /// The Ready workers of the `map` being routed (kept between maps).
    map_workers: Vec<WorkerId>,
    /// The clock of every connection's progress.
    pub start: Instant,
}

impl State {
    pub fn new(config: &Config, admission: Admission) -> State {
        State {
            conns: HashMap::default(),
            members: Members::default(),
            pending: Pending::default(),
            once: OnceResults::new(config.once_keys, config.once_bytes),
            turns: HashMap::default(),
            subscribers: Vec::new(),
            admission,
            max_calls: config.max_calls,
            max_events: config.max_events,
            budget: Budget::of(config),
            closing: Vec::new(),
            acks: HashMap::default(),
            acks_hot: None,
            ack_batch: config.credit_batch(),
            map_workers: Vec::new(),
            start: Instant::now(),
        }
    }

    pub fn subscribe(&mut self, tx: mpsc::UnboundedSender<HubEvent>) {
        self.subscribers.push(tx);
    }

    pub fn emit(&mut self, event: HubEvent) {
        self.subscribers.retain(|tx| tx.send(event.clone()).is_ok());
    }

    /// Routes one frame from `from`. The acknowledgements of broadcasts are sent at the end of
    /// a batch (`batch_end`: nothing more is read from this peer for now), not per frame.
    pub fn route(&mut self, from: Peer, mut env: Envelope, batch_end: bool) {
        env.from = from;
        match env.kind {
            Kind::Announce => self.announce(env),
            Kind::Ready => self.ready(env),
            Kind::Broadcast => self.broadcast(env),
            Kind::Request => self.request(env),
            Kind::Reply | Kind::Failure => self.answered(env),
            Kind::Cancel => {
                let responders = self.conns.keys().copied();
                self.pending.cancel((from, env.id), responders);
            }
            Kind::Credit => self.credit(from, &env),
            Kind::Hello | Kind::Members | Kind::RunHere => {
                let reason = format!("sent a {:?} frame, which only the Hub sends", env.kind);
                self.close_later(from, reason);
            }
        }
        self.settle();
        if batch_end {
            self.flush_acks();
        }
    }

    /// Closes what routing found to close, and sends the acknowledgements owed.
    pub fn finish(&mut self) {
        self.settle();
        self.flush_acks();
    }

    /// Closes `peer` once the frame being routed is done.
    fn close_later(&mut self, peer: Peer, reason: String) {
        if peer != Peer::Master {
            self.closing.push((peer, reason));
        }
    }

    /// Closes the peers found to be closed while routing (closing one may find more).
    fn settle(&mut self) {
        while let Some((peer, reason)) = self.closing.pop() {
            self.close(peer, &reason);
        }
    }

    /// Forgets `peer`: its tasks stop, what it was asked fails with `WorkerGone`, what it
    /// asked is dropped, and the subscribers hear why. `false` if it was gone already.
    pub fn close(&mut self, peer: Peer, reason: &str) -> bool {
        let Some(conn) = self.conns.remove(&peer) else {
            return false;
        };
        conn.stop.cancel();
        self.acks.remove(&peer);
        if self.acks_hot.is_some_and(|(hot, _)| hot == peer) {
            self.acks_hot = None;
        }
        for ack in conn.out.abandon() {
            self.release(ack);
        }
        if let Peer::Worker(id) = peer {
            self.members.remove(id);
        }
        for (owed, answered) in self.pending.forget(peer) {
            let error = Error::WorkerGone {
                event: String::from_utf8_lossy(&owed.event).into(),
                peer,
            };
            let event = owed.event;
            match answered {
                Answered::Caller((caller, id)) => self.fail(caller, id, peer, event, &error),
                Answered::Once(_, waiters) => {
                    for (caller, id) in waiters {
                        self.fail(caller, id, peer, event.clone(), &error);
                    }
                }
                Answered::Unknown => {}
            }
        }
        if let Peer::Worker(id) = peer {
            tracing::info!(
                slot = id.slot,
                generation = id.generation,
                "worker connection ended: {reason}"
            );
            self.emit(HubEvent::Closed {
                id,
                reason: reason.to_owned(),
            });
        }
        self.settle();
        true
    }

    /// Queues an answer for `to`; one that does not read its answers is closed.
    fn answer(&mut self, to: Peer, env: Envelope) {
        let Some(conn) = self.conns.get_mut(&to) else {
            return;
        };
        if to == Peer::Master {
            return conn.out.control(env);
        }
        if conn.out.answer(env) == Err(Refused::Overflow) {
            let reason = format!(
                "stuck: it did not read the answers to its own calls (over twice its queue \
                 budget of {} frames, {} bytes)",
                self.budget.frames, self.budget.bytes
            );
            self.close_later(to, reason);
        }
    }

    fn fail(&mut self, to: Peer, id: u64, from: Peer, event: Bytes, error: &Error) {
        // A copy: the name must not keep the frame it came in (maybe a large one) alive.
        let event = Bytes::copy_from_slice(&event);
        self.answer(to, Envelope::failure(id, from, event, error));
    }

    /// The copy of `event`'s name that `peer` announced, if it handles it.
    fn handled(&self, peer: Peer, event: &[u8]) -> Option<&Bytes> {
        self.conns.get(&peer)?.handlers.get(event)
    }

    fn announce(&mut self, env: Envelope) {
        let Some(conn) = self.conns.get_mut(&env.from) else {
            return;
        };
        if conn.handlers.contains(&env.event) {
            return;
        }
        if conn.handlers.len() >= self.max_events {
            let reason = format!("announced more than {} event names", self.max_events);
            return self.close_later(env.from, reason);
        }
        conn.handlers.insert(Bytes::copy_from_slice(&env.event));
    }

    fn ready(&mut self, env: Envelope) {
        let Peer::Worker(id) = env.from else {
            let error = Error::Forbidden {
                reason: "only a worker can be Ready".into(),
            };
            return self.fail(env.from, env.id, Peer::Master, env.event, &error);
        };
        if self.members.is_ready(id) {
            return self.answer(env.from, ready_reply(env.id));
        }
        let Some(conn) = self.conns.get_mut(&env.from) else {
            return;
        };
        // The latest request is the one answered; an earlier one still waiting is refused.
        if let Some(earlier) = conn.ready_call.replace(env.id) {
            let error = Error::Forbidden {
                reason: "asked to be Ready again before the first answer".into(),
            };
            self.fail(env.from, earlier, Peer::Master, Bytes::new(), &error);
        }
        match self.admission {
            Admission::Supervised => self.emit(HubEvent::ReadyAsked(id)),
            Admission::Auto => {
                if self.admit(id).is_err() {
                    self.refuse(id, refusal(id));
                }
            }
        }
    }

    /// Makes `id` its slot's Ready worker (see `members.rs`) and answers its request. `Err` if
    /// it is not connected, or the rule forbids it.
    pub fn admit(&mut self, id: WorkerId) -> Result<(), String> {
        let peer = Peer::Worker(id);
        let retired = match self.conns.get(&peer) {
            None => return Err(format!("worker {id} is not connected")),
            Some(conn) => conn.retired,
        };
        if retired || !self.members.may_be_ready(id) {
            return Err(refusal(id));
        }
        if let Some(old) = self.members.admit(id) {
            if let Some(conn) = self.conns.get_mut(&Peer::Worker(old)) {
                conn.retired = true;
            }
            self.tell_ready_set(old);
        }
        self.emit(HubEvent::Ready(id));
        if let Some(call) = self.conns.get_mut(&peer).and_then(|c| c.ready_call.take()) {
            self.answer(peer, ready_reply(call));
        }
        Ok(())
    }

    /// Answers `id`'s request to be Ready with a refusal.
    pub fn refuse(&mut self, id: WorkerId, reason: String) {
        let peer = Peer::Worker(id);
        if let Some(call) = self.conns.get_mut(&peer).and_then(|c| c.ready_call.take()) {
            let error = Error::Forbidden { reason };
            self.fail(
                peer,
                call,
                Peer::Master,
                Bytes::from_static(b"ready"),
                &error,
            );
        }
    }

    /// `id` gets no new messages, and may never be Ready again; what it owes still reaches its
    /// callers.
    pub fn drain(&mut self, id: WorkerId) {
        let peer = Peer::Worker(id);
        if let Some(conn) = self.conns.get_mut(&peer) {
            conn.retired = true;
        }
        self.refuse(id, "it is draining".into());
        if self.members.retire(id) {
            self.tell_ready_set(id);
        }
        self.settle();
    }

    /// Tells `left` (a worker that has just left the Ready set but stays connected) the set as
    /// it now is, unasked: its next `map` then does not run its own share on the old list.
    fn tell_ready_set(&mut self, id: WorkerId) {
        let list = MemberList {
            workers: self.members.workers().collect(),
            run_here: false,
            epoch: self.members.epoch(),
        };
        if let Some(conn) = self.conns.get_mut(&Peer::Worker(id)) {
            conn.out.control(list.frame(0));
        }
    }

    fn broadcast(&mut self, env: Envelope) {
        let sender = env.from;
        let mut ack = None;
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
            None => self.owe_ack(sender, cost(&env).into()),
        }
    }

    /// Lets go of one share of a broadcast's acknowledgement: the last one owes it its sender.
    fn release(&mut self, ack: Arc<Ack>) {
        if let Ok(ack) = Arc::try_unwrap(ack) {
            self.owe_ack(ack.sender, ack.bytes);
        }
    }

    fn owe_ack(&mut self, sender: Peer, bytes: u64) {
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
    fn flush_acks(&mut self) {
        if let Some((peer, (frames, bytes))) = self.acks_hot.take() {
            let owed = self.acks.entry(peer).or_default();
            owed.0 += frames;
            owed.1 += bytes;
        }
        let (frames, bytes) = self.ack_batch;
        let conns = &mut self.conns;
        self.acks.retain(|sender, owed| {
            if owed.0 < frames && owed.1 < bytes {
                return true;
            }
            if let Some(conn) = conns.get_mut(sender) {
                let credit = Credit {
                    frames: owed.0,
                    bytes: owed.1,
                };
                conn.out.control(credit.frame());
            }
            false
        });
    }

    fn credit(&mut self, from: Peer, env: &Envelope) {
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

    /// A Ready worker that handles `event`, taking turns; one with room in its queue if any.
    fn pick(&mut self, event: &Bytes) -> Option<WorkerId> {
        // The candidates, in a vector kept from call to call.
        let mut candidates = std::mem::take(&mut self.map_workers);
        candidates.clear();
        candidates.extend(self.members.workers().filter(|id| {
            self.conns
                .get(&Peer::Worker(*id))
                .is_some_and(|conn| conn.handlers.contains(&event[..]))
        }));
        let picked = self.take_turn(event, &candidates).map(|start| {
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

    /// Whose turn it is among `candidates` for `event`: an index, or `None` if there are none.
    fn take_turn(&mut self, event: &Bytes, candidates: &[WorkerId]) -> Option<usize> {
        let first = *candidates.first()?;
        let turn = match self.turns.get_mut(&event[..]) {
            Some(turn) => turn,
            None => {
                if self.turns.len() > 2 * self.max_events {
                    self.turns.clear();
                }
                // Keyed by the name the worker announced: a copy, not a slice of this frame.
                let name = self.handled(Peer::Worker(first), event)?.clone();
                self.turns.entry(name).or_insert(usize::MAX)
            }
        };
        *turn = turn.wrapping_add(1);
        Some(*turn % candidates.len())
    }

    fn request(&mut self, env: Envelope) {
        let from = env.from;
        let responder = match env.to {
            Target::Any => {
                self.pick(&env.event)
                    .map(Peer::Worker)
                    .ok_or_else(|| Error::NoHandler {
                        event: env.event_name(),
                        peer: None,
                    })
            }
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
                self.answer(from, run_here)
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
    fn forward(&mut self, env: &Envelope, responder: Peer) -> Result<(), Error> {
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
    fn order(&mut self, env: Envelope, worker: WorkerId) {
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

    fn map(&mut self, env: Envelope) {
        let Target::All { epoch, run_here } = env.to else {
            return;
        };
        // A vector kept for every map, rather than one allocated per map.
        let mut workers = std::mem::take(&mut self.map_workers);
        workers.clear();
        workers.extend(self.members.workers());
        let caller_ready = workers.iter().any(|id| Peer::Worker(*id) == env.from);
        let run_here = if epoch != 0 && epoch == self.members.epoch() {
            // The caller knows this Ready set already, and whether it handles the event.
            run_here && caller_ready
        } else {
            // A Ready caller that handles the event runs its own share itself: two frames
            // fewer, and the slowest leg of a map from a worker is gone. The caller learns
            // first who will answer, so it knows when it has every answer.
            let run_here = caller_ready && self.handled(env.from, &env.event).is_some();
            let list = MemberList {
                workers: workers.clone(),
                run_here,
                epoch: self.members.epoch(),
            };
            self.answer(env.from, list.frame(env.id));
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
    }

    fn once(&mut self, env: Envelope) {
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
        let Some(worker) = self.pick(&env.event) else {
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

    fn answered(&mut self, env: Envelope) {
        // An answer names its caller (the request's sender) and the caller's id.
        let caller = match env.to {
            Target::Master => Peer::Master,
            Target::Worker(id) => Peer::Worker(id),
            _ => {
                let reason = format!("sent an answer addressed to {:?}", env.to);
                return self.close_later(env.from, reason);
            }
        };
        match self.pending.answered((caller, env.id), env.from) {
            // A call given up, or an answer the peer was not asked for.
            Answered::Unknown => tracing::debug!(from = %env.from, "an answer nobody waits for"),
            Answered::Caller(_) => self.answer(caller, env),
            Answered::Once(key, waiters) => {
                // A success is remembered for every later caller; a failure is not.
                if env.kind == Kind::Reply {
                    self.once.remember(key, env.from, &env.body);
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

    /// A new connection for `peer`.
    pub fn connect(&mut self, peer: Peer, out: Outbound) -> tokio_util::sync::CancellationToken {
        let conn = Conn::new(out);
        let stop = conn.stop.clone();
        if let Some(old) = self.conns.insert(peer, conn) {
            // The same id twice: the older connection cannot be told from the newer; end it.
            old.stop.cancel();
        }
        stop
    }
}

fn ready_reply(id: u64) -> Envelope {
    Envelope::answer(
        Kind::Reply,
        id,
        Peer::Master,
        Bytes::from_static(b"ready"),
        Bytes::from_static(NIL),
    )
}

fn refusal(id: WorkerId) -> String {
    format!("worker {id} was replaced or drained: it cannot be Ready again")
}
