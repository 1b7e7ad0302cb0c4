//! Calls and broadcasts between hosts: what the Hub hands its uplink goes out on NATS, and
//! what other hosts send comes into the Hub.
//!
//! Subjects, for cluster `C`: broadcasts on `multiprocess.C.broadcast` (every host hears every
//! other's), calls to a host on `multiprocess.C.host.<its id>` with the reply subject
//! `multiprocess.C.answers.<caller's host>.<callee's host>.<batch>`, their answers on a reply
//! subject of that caller's host (only the batch's number tells NATS's "no responders" apart).
//! A message is the messenger's own frames (`wire`, read in `frames.rs`): the broadcasts, the
//! calls to one host, or the answers to one host's callers, that the uplink took from its Hub
//! in one go (`outbox.rs`), the sender stamped by its Hub as [`Peer::Remote`]. A `map`'s share
//! is answered as the host's member list and each worker's answer, held back to go in one
//! message for at most 2 ms and 4 KiB (`served.rs`).
//!
//! A call in flight fails at once when the NATS connection is lost, when NATS says nothing
//! took its message, or when its host leaves, and is never sent twice: whether it ran there is
//! unknown, so it is the caller's to try again. A call waits at most the Hub's
//! [`Config::request_timeout`] for another host (checked every tenth of it, at least every
//! second); a caller that gives up sooner has it forgotten here and there (a `Cancel` frame
//! in the next message of calls to that host).
//!
//! What other hosts cost here is bounded: the calls from them being run at once
//! ([`MAX_INBOUND`]; one more is answered `Busy`), each forgotten after twice the request
//! timeout if never answered, a `map`'s share holding back at most 4 KiB and a frame;
//! their frames at most `max_frame` each (a frame that does not decode costs only itself), in
//! the client's bounded subscription buffers, each pinning at most twice its size of its
//! message.
//!
//! Here: the relay, this host's calls and what ends them; `relay/broadcasts.rs`: broadcasts
//! and their acknowledgements; `relay/inbound.rs`: calls from other hosts run here.
//!
//! [`Config::request_timeout`]: crate::Config::request_timeout

use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use async_nats::jetstream::kv;

use super::calls::{Calls, Settle};
use super::outbox::{self, Outbox, To};
use super::served::Served;
use super::subjects::Subjects;
use super::window::{Sent, Taken};
use super::{frames, once};
use crate::hub::{HostId, Hub, Outgoing};
use crate::wire::{Envelope, FrameCodec, Kind};
use crate::{Error, Peer};

mod broadcasts;
mod inbound;

/// The most calls from other hosts run here at once.
pub(super) const MAX_INBOUND: usize = 16 * 1024;

/// How long a broadcast or an answer may wait for room in the NATS client's queue.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(1);

pub(super) struct Relay {
    hub: Hub,
    client: async_nats::Client,
    me: HostId,
    subjects: Subjects,
    codec: FrameCodec,
    timeout: Duration,
    /// Calls from other hosts being run here.
    served: Served,
    /// This host's calls waiting for other hosts' answers.
    calls: Calls,
    /// What goes out at the next [`Relay::flush`].
    outbox: Outbox,
    /// The bucket that settles `consume_once` keys, if the server has JetStream.
    store: Option<kv::Store>,
    /// This host's broadcasts until the others took them, and theirs until delivered here.
    sent: Sent,
    taken: Taken,
    /// When the other hosts last took any of this host's broadcasts, or had none to take.
    progress: Instant,
    /// When this host joined, and the membership expiry: until it has passed, a host not
    /// known may just not be heard of yet.
    joined: Instant,
    expiry: Duration,
}

impl Relay {
    pub fn new(
        hub: Hub,
        client: async_nats::Client,
        me: HostId,
        subjects: Subjects,
        store: Option<kv::Store>,
        expiry: Duration,
    ) -> Relay {
        let config = hub.config();
        let codec = FrameCodec::builder()
            .max_frame(config.max_frame)
            .new_codec();
        let timeout = config.request_timeout;
        let outbox = Outbox::new(max_payload(&client));
        Relay {
            hub,
            client,
            me,
            subjects,
            codec,
            timeout,
            served: Served::default(),
            calls: Calls::default(),
            outbox,
            store,
            sent: Sent::default(),
            taken: Taken::default(),
            progress: Instant::now(),
            joined: Instant::now(),
            expiry,
        }
    }

    /// The server's `max_payload` may differ after a reconnection.
    pub fn connected(&mut self) {
        self.outbox.set_max(max_payload(&self.client));
    }

    /// This host's peer as the others see it.
    fn stamped(&self, from: Peer) -> Peer {
        Peer::Remote {
            host: self.me,
            worker: from.worker(),
        }
    }

    /// Gives up an item the Hub handed over that will not be sent (the connection was lost,
    /// or the uplink stops): a call or a `consume_once` key fails at once, saying why.
    pub fn abandon(&mut self, item: Outgoing, why: &str) {
        match item {
            Outgoing::Call { host, env, owed } => {
                let error = self.unreachable(host, why);
                self.fail_unsent(&env, owed, &error);
            }
            Outgoing::Once(request) => {
                let error = Error::HostUnreachable {
                    host: "the NATS server".into(),
                    detail: why.into(),
                };
                let (event, key) = (request.event.clone(), request.key.clone());
                self.hub.once_settled(event, key, Err(error));
            }
            // Let go of by the Hub with the uplink, or lost with the connection: the other
            // hosts' uplinks fail their callers, and windows go on (see `window.rs`).
            Outgoing::Broadcast(_)
            | Outgoing::Cancel { .. }
            | Outgoing::Answer { .. }
            | Outgoing::Released(_)
            | Outgoing::OnceDone { .. } => {}
        }
    }

    /// Sends what the Hub handed over.
    pub async fn outgoing(&mut self, item: Outgoing) {
        match item {
            Outgoing::Broadcast(env) => self.broadcast(env),
            Outgoing::Released(seqs) => self.released(&seqs).await,
            Outgoing::Call { host, env, owed } => self.call(host, env, owed),
            Outgoing::Answer { to, env } => self.answer(to, env),
            Outgoing::Cancel { caller, id } => self.cancel(caller, id),
            Outgoing::Once(request) => {
                let (hub, store) = (self.hub.clone(), self.store.clone());
                let trust_absence = self.joined.elapsed() >= self.expiry;
                let settle =
                    once::settle(hub, store, self.me, request, self.timeout, trust_absence);
                tokio::spawn(settle);
            }
            Outgoing::OnceDone { event, key, reply } => {
                let store = self.store.clone();
                tokio::spawn(once::done(store, self.me, event, key, reply));
            }
        }
    }

    async fn publish(&self, subject: String, bytes: Bytes) {
        let sent = tokio::time::timeout(PUBLISH_TIMEOUT, self.client.publish(subject, bytes)).await;
        match sent {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!("not sent to other hosts: {e}"),
            Err(_) => tracing::debug!("not sent to other hosts: the NATS client's queue is full"),
        }
    }

    fn unreachable(&self, host: HostId, detail: &str) -> Error {
        Error::HostUnreachable {
            host: self.hub.host_name(host),
            detail: detail.to_owned(),
        }
    }

    /// Tells the Hub what ended calls of this host.
    fn settle(&self, settles: Vec<Settle>) {
        for settle in settles {
            match settle {
                Settle::Answer {
                    host,
                    env,
                    caller,
                    owed_by,
                } => self.hub.remote_answer(host, env, caller, owed_by),
                Settle::Fail {
                    caller,
                    id,
                    owed_by,
                    event,
                    error,
                } => self.hub.remote_failed(caller, id, owed_by, event, &error),
            }
        }
    }

    /// A call to `host`, into the next message there; every route in `owed` is answered.
    fn call(&mut self, host: HostId, env: Envelope, owed: Vec<Peer>) {
        let stamped = Envelope {
            from: self.stamped(env.from),
            ..env.clone()
        };
        match self.outbox.call(&mut self.codec, host, &stamped) {
            Ok(batch) => {
                let mut settles = Vec::new();
                self.calls.sent(host, &env, owed, batch, &mut settles);
                self.settle(settles);
            }
            Err(error) => self.fail_unsent(&env, owed, &error),
        }
    }

    /// Fails every route `owed` of `env`, a call that will not be sent.
    fn fail_unsent(&self, env: &Envelope, owed: Vec<Peer>, error: &Error) {
        for owed_by in owed {
            let event = env.event.clone();
            self.hub
                .remote_failed(env.from, env.id, owed_by, event, error);
        }
    }

    /// A caller of this host gave up its call `id`: what other hosts owed it is dropped here,
    /// and each of them is told (in the next message of calls there), so that it forgets it
    /// too.
    fn cancel(&mut self, caller: Peer, id: u64) {
        for (host, owed) in self.calls.cancel(caller, id, self.sent.hosts()) {
            self.hub.remote_cancelled(caller, id, owed);
            let cancel = Envelope {
                id,
                from: self.stamped(caller),
                ..Envelope::new(Kind::Cancel, "", Bytes::new())
            };
            if let Err(e) = self.outbox.call(&mut self.codec, host, &cancel) {
                tracing::debug!(%host, "a cancellation not sent: {e}");
            }
        }
    }

    /// Sends what was gathered for other hosts. A message of calls that cannot be sent fails
    /// its calls at once.
    pub async fn flush(&mut self) {
        if self.outbox.is_empty() {
            return;
        }
        for message in self.outbox.take() {
            let outbox::Message { to, payload } = message;
            match to {
                To::Calls { host, batch } => {
                    let subject = self.subjects.host(host);
                    let reply = self.subjects.answers(self.me, host, batch);
                    let publish = self.client.publish_with_reply(subject, reply, payload);
                    let sent = tokio::time::timeout(PUBLISH_TIMEOUT, publish).await;
                    let detail = match sent {
                        Ok(Ok(())) => continue,
                        Ok(Err(e)) => format!("not sent: {e}"),
                        Err(_) => "not sent: the NATS client's queue is full".to_owned(),
                    };
                    let error = self.unreachable(host, &detail);
                    let mut settles = Vec::new();
                    self.calls.batch_failed(host, batch, &error, &mut settles);
                    self.settle(settles);
                }
                To::Broadcasts => {
                    let subject = self.subjects.broadcast.clone();
                    self.publish(subject, payload).await;
                }
                To::Answers { reply } => self.publish(reply.to_string(), payload).await,
            }
        }
    }

    /// Answers from another host to this host's calls.
    pub fn incoming_answers(&mut self, message: &async_nats::Message) {
        let parts = self.subjects.answer_parts(&message.subject);
        let Some((_, host, batch)) = parts.filter(|(caller, ..)| *caller == self.me) else {
            return tracing::debug!(subject = %message.subject, "answers on a subject not this host's: dropped");
        };
        let mut settles = Vec::new();
        if message.status == Some(async_nats::StatusCode::NO_RESPONDERS) {
            let error =
                self.unreachable(host, "nothing answers for it on NATS (stopped or killed?)");
            self.calls.batch_failed(host, batch, &error, &mut settles);
        } else {
            for env in self.decode(&message.payload) {
                self.calls.answered(self.me, host, env, &mut settles);
            }
        }
        self.settle(settles);
    }

    /// Fails this host's calls that waited longer than the request timeout.
    pub fn expire(&mut self) {
        let mut settles = Vec::new();
        self.calls.expire(self.timeout, &mut settles);
        self.settle(settles);
    }

    /// A host left or was forgotten: nothing waits for it, nothing is kept of it.
    pub fn host_left(&mut self, host: HostId, name: &str) {
        // Its calls from this host are never answered now.
        let error = Error::HostUnreachable {
            host: name.to_owned(),
            detail: "it left the cluster with the call in flight".to_owned(),
        };
        let mut settles = Vec::new();
        self.calls.host_gone(host, &error, &mut settles);
        self.settle(settles);
        self.sent.left(host);
        self.taken.forget(host);
        self.let_go();
    }

    /// A message's frames that decode (what does not is logged and skipped).
    fn decode(&self, payload: &Bytes) -> Vec<Envelope> {
        let (envs, problem) = frames::decode(payload, self.codec.max_frame());
        if let Some(problem) = problem {
            tracing::debug!("a message from another host, {problem}: skipped");
        }
        envs
    }

    /// The connection is lost: the calls in flight fail now, and those run for other hosts
    /// are given up (their callers' uplinks fail them).
    pub fn lost(&mut self) {
        let mut settles = Vec::new();
        let detail = "the NATS connection was lost with the call in flight";
        let hub = self.hub.clone();
        let error_for = |host| Error::HostUnreachable {
            host: hub.host_name(host),
            detail: detail.to_owned(),
        };
        self.calls.fail_all(error_for, &mut settles);
        self.settle(settles);
        self.outbox.clear();
        self.give_up(|_| true);
        self.sent.lost();
        self.taken.clear();
        self.let_go();
    }
}

/// The most bytes the server takes in one message (1 MiB unless configured otherwise).
fn max_payload(client: &async_nats::Client) -> usize {
    match client.server_info().max_payload {
        0 => 1024 * 1024,
        max => max,
    }
}
