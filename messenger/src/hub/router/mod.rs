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
//! - `Cancel`: the caller gave up; `Credit`: the peer ran broadcasts (see `outbound/`).
//!
//! Anything else from a peer breaks the protocol, and closes its connection.
//!
//! The files: the state, the dispatch and what every route shares here (queuing, failing,
//! closing); Ready and drains in `ready.rs`; requests and their answers in `calls.rs`;
//! broadcasts, their acknowledgements and credit in `broadcast.rs`.

use bytes::Bytes;
use rustc_hash::FxHashMap as HashMap;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::conn::{Conn, Conns, Stop};
use super::hosts::Hosts;
use super::members::{Admission, Members};
use super::once::OnceResults;
use super::outbound::{AnswerRoom, Budget, Outbound};
use super::pending::{Answered, Pending};
use super::port::{Outgoing, Port};
use super::HubEvent;
use crate::event::{may_send, reserved_error};
use crate::stats::Routed;
use crate::wire::{Envelope, Kind, ENVELOPE_OVERHEAD};
use crate::{Config, Error, Peer, WorkerId};

/// The body of the reply to a granted `Ready`: MessagePack nil.
const NIL: &[u8] = &[0xc0];

mod afar;
mod broadcast;
mod calls;
mod ready;
mod remote;

pub(super) struct State {
    pub conns: Conns,
    pub members: Members,
    /// The other hosts, in a cluster joined over an uplink.
    pub hosts: Hosts,
    /// The uplink to them, once joined.
    pub uplink: Option<Port>,
    /// Broadcasts across hosts (`afar.rs`).
    afar: afar::Afar,
    /// The ends of `consume_once` runs not yet handed to the uplink (`remote.rs`).
    once_unsaid: std::collections::VecDeque<super::port::Outgoing>,
    pub(super) pending: Pending,
    once: OnceResults,
    /// Round-robin position per event, for `consume`; keyed by names that a Ready worker
    /// handles (the copies it announced), and cleared when it grows past what can be handled.
    turns: HashMap<Bytes, usize>,
    subscribers: Vec<mpsc::UnboundedSender<HubEvent>>,
    admission: Admission,
    max_calls: usize,
    max_events: usize,
    /// The frame limit as senders check it (`payload + ENVELOPE_OVERHEAD <= max_frame`). The
    /// decoder lets through any frame *encoded* within `max_frame`; one with a larger payload
    /// could grow past the limit when stamped with its sender, and would not fit the room
    /// receivers keep for one frame.
    max_frame: usize,
    pub budget: Budget,
    /// The frames routed, by what they were.
    pub routed: Routed,
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
            conns: Conns::default(),
            members: Members::default(),
            // No other host, and room for none, until the Hub joins a cluster.
            hosts: Hosts::new(0),
            uplink: None,
            afar: Default::default(),
            once_unsaid: Default::default(),
            pending: Pending::default(),
            once: OnceResults::new(config.once_keys, config.once_bytes),
            turns: HashMap::default(),
            subscribers: Vec::new(),
            admission,
            max_calls: config.max_calls,
            max_events: config.max_events,
            max_frame: config.max_frame,
            budget: Budget::of(config),
            routed: Routed::default(),
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
        if env.payload_len() + ENVELOPE_OVERHEAD > self.max_frame {
            // No Messenger sends one: it fails the call with `FrameTooLarge` instead.
            let reason = format!(
                "sent a {:?} frame with {} bytes of names and body, over the {} a frame may \
                 carry (max_frame less {ENVELOPE_OVERHEAD})",
                env.kind,
                env.payload_len(),
                self.max_frame.saturating_sub(ENVELOPE_OVERHEAD)
            );
            if from == Peer::Master {
                // Never the master's own Messenger, which checks sizes before it sends.
                tracing::error!("{reason}: dropped");
            }
            self.close_later(from, reason);
        } else {
            self.route_checked(env);
        }
        self.settle();
        if batch_end {
            self.flush_acks();
        }
    }

    fn route_checked(&mut self, env: Envelope) {
        let from = env.from;
        self.routed.count(&env);
        match env.kind {
            Kind::Announce => self.announce(env),
            Kind::Ready => self.ready(env),
            Kind::Broadcast | Kind::Request if !may_send(from, env.kind, &env.event, env.to) => {
                self.refuse_reserved(env)
            }
            Kind::Broadcast => self.broadcast(env),
            Kind::Request => self.request(env),
            Kind::Reply | Kind::Failure => self.answered(env),
            Kind::Cancel => {
                let responders = self.conns.keys();
                self.pending.cancel((from, env.id), responders);
                // What other hosts owe it, if anything: the uplink knows (best effort: a
                // cancellation that finds no room is let go).
                if let Some(port) = &self.uplink {
                    let _ = port.offer(Outgoing::Cancel {
                        caller: from,
                        id: env.id,
                    });
                }
            }
            Kind::Credit => self.credit(from, &env),
            Kind::Hello | Kind::Members | Kind::RunHere => {
                let reason = format!("sent a {:?} frame, which only the Hub sends", env.kind);
                self.close_later(from, reason);
            }
        }
    }

    /// A call or broadcast of one of the cluster's own events to workers, from a worker (or
    /// another host): a call fails with `Forbidden`; a broadcast, which no Messenger sends,
    /// closes its sender (another host's is dropped).
    fn refuse_reserved(&mut self, env: Envelope) {
        let error = reserved_error(&env.event);
        if env.kind == Kind::Request {
            self.fail(env.from, env.id, Peer::Master, env.event, &error);
        } else if let Some(host) = env.from.host() {
            tracing::debug!("{error}: a broadcast from another host dropped");
            self.released_afar(host, env.id);
        } else {
            self.close_later(env.from, format!("sent a broadcast: {error}"));
        }
    }

    /// Closes what routing found to close, and sends the acknowledgements owed.
    pub fn finish(&mut self) {
        self.settle();
        self.flush_acks();
    }

    /// Closes `peer` once the frame being routed is done.
    pub(super) fn close_later(&mut self, peer: Peer, reason: String) {
        if peer != Peer::Master && peer.host().is_none() {
            self.closing.push((peer, reason));
        }
    }

    /// Fails what `peer` owed, for whoever waits on it (a `consume_once` run: every waiter).
    pub(super) fn fail_owed(
        &mut self,
        peer: Peer,
        event: Bytes,
        answered: Answered,
        error: &Error,
    ) {
        match answered {
            Answered::Caller((caller, id)) => self.fail(caller, id, peer, event, error),
            Answered::Once(key, waiters) => {
                self.once_done(key, None);
                for (caller, id) in waiters {
                    self.fail(caller, id, peer, event.clone(), error);
                }
            }
            Answered::Unknown => {}
        }
    }

    /// Closes the peers found to be closed while routing (closing one may find more).
    pub(super) fn settle(&mut self) {
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
        conn.stop.stop();
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
            self.fail_owed(peer, owed.event, answered, &error);
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

    /// Queues an answer for `to`. One that would take `to`'s queue past twice its byte
    /// budget is replaced by a failure (`Busy`, naming `to` itself): that call fails, and
    /// nothing else. A peer that lets more answers wait than it can be owed is closed as stuck.
    pub(super) fn answer(&mut self, to: Peer, env: Envelope) {
        let max_frame = self.max_frame;
        if to.host().is_some() {
            return self.answer_remote(to, env);
        }
        let Some(conn) = self.conns.get_mut(&to) else {
            return;
        };
        if to == Peer::Master {
            return conn.out.control(env);
        }
        match conn.out.answer_room(env.wire_len(), self.max_calls) {
            AnswerRoom::Fits => conn.out.control(env),
            AnswerRoom::OverBytes => {
                tracing::debug!(%to, "an answer over the caller's queue budget: it gets Busy");
                let error = Error::Busy {
                    event: env.event_name(),
                    peer: to,
                };
                let event = Bytes::copy_from_slice(&env.event);
                let failure = Envelope::failure(env.id, env.from, event, &error, max_frame);
                conn.out.control(failure);
            }
            AnswerRoom::Overflow => self.not_reading(to),
        }
    }

    /// Queues a frame of the protocol's own that answers `to` (its `Ready` granted, the
    /// members of its `map`, "run it yourself"): never replaced, but held to the same bound.
    pub(super) fn tell(&mut self, to: Peer, env: Envelope) {
        if to.host().is_some() {
            return self.answer_remote(to, env);
        }
        let Some(conn) = self.conns.get_mut(&to) else {
            return;
        };
        if to != Peer::Master && conn.out.answer_room(0, self.max_calls) == AnswerRoom::Overflow {
            return self.not_reading(to);
        }
        conn.out.control(env);
    }

    fn not_reading(&mut self, peer: Peer) {
        let reason = format!(
            "stuck: it did not read the answers to its own calls (twice its queue budget of {} \
             frames and max_calls {} more waited for it)",
            self.budget.frames, self.max_calls
        );
        self.close_later(peer, reason);
    }

    pub(super) fn fail(&mut self, to: Peer, id: u64, from: Peer, event: Bytes, error: &Error) {
        // A copy: the name must not keep the frame it came in (maybe a large one) alive.
        let event = Bytes::copy_from_slice(&event);
        let failure = Envelope::failure(id, from, event, error, self.max_frame);
        self.answer(to, failure);
    }

    /// The copy of `event`'s name that `peer` announced, if it handles it.
    pub(super) fn handled(&self, peer: Peer, event: &[u8]) -> Option<&Bytes> {
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

    /// A new connection for `peer`.
    pub fn connect(&mut self, peer: Peer, out: Outbound) -> Stop {
        // The same id twice: the older connection ends, as if it had gone away.
        self.close(peer, "a new connection came under the same id");
        let conn = Conn::new(out);
        let stop = conn.stop.clone();
        self.conns.insert(peer, conn);
        stop
    }
}

pub(super) fn ready_reply(id: u64) -> Envelope {
    Envelope::answer(
        Kind::Reply,
        id,
        Peer::Master,
        Bytes::from_static(b"ready"),
        Bytes::from_static(NIL),
    )
}

pub(super) fn refusal(id: WorkerId) -> String {
    format!("worker {id} was replaced or drained: it cannot be Ready again")
}
