//! Calls and broadcasts between hosts: what the Hub hands its uplink goes out on NATS, and
//! what other hosts send comes into the Hub.
//!
//! Subjects, for cluster `C`: broadcasts on `multiprocess.C.broadcast` (every host hears every
//! other's), calls to a host on `multiprocess.C.host.<its id>` as NATS requests, the answer on
//! the request's reply subject. A message is the messenger's own frames (`wire`): one for a
//! broadcast or a call, one or more for an answer (a `map`'s share is every worker's answer),
//! the sender stamped by its Hub as [`Peer::Remote`].
//!
//! A call in flight fails at once when the NATS connection is lost (the client would keep it
//! until its timeout), and is never sent twice: whether it ran there is unknown, so it is the
//! caller's to try again. A call waits at most the Hub's [`Config::request_timeout`] for
//! another host, whatever the caller's own deadline.
//!
//! What other hosts cost here is bounded: the calls from them being run at once
//! ([`MAX_INBOUND`]; one more is answered `Busy`), each forgotten after twice the request
//! timeout if never answered; their frames at most `max_frame` each, in the client's bounded
//! subscription buffers.
//!
//! [`Config::request_timeout`]: crate::Config::request_timeout

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use rustc_hash::FxHashMap as HashMap;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use async_nats::jetstream::kv;

use super::call::Call;
use super::window::{Sent, Taken};
use super::{frames, once};
use crate::hub::{HostId, Hub, Outgoing};
use crate::wire::{Envelope, FrameCodec, Kind, Members, Target};
use crate::{Error, Peer};

/// The most calls from other hosts run here at once.
pub(super) const MAX_INBOUND: usize = 16 * 1024;

/// How long a broadcast or an answer may wait for room in the NATS client's queue.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(1);

/// The subjects of a cluster.
pub(super) struct Subjects {
    pub members: String,
    pub broadcast: String,
    prefix: String,
    acks: String,
}

impl Subjects {
    pub fn of(cluster: &str) -> Subjects {
        Subjects {
            members: format!("multiprocess.{cluster}.members"),
            broadcast: format!("multiprocess.{cluster}.broadcast"),
            prefix: format!("multiprocess.{cluster}.host."),
            acks: format!("multiprocess.{cluster}.acks."),
        }
    }

    /// Where calls to `host` go.
    pub fn host(&self, host: HostId) -> String {
        format!("{}{host}", self.prefix)
    }

    /// Where the acknowledgements of `host`'s broadcasts go (see `window.rs`).
    pub fn acks(&self, host: HostId) -> String {
        format!("{}{host}", self.acks)
    }
}

/// A call from another host being run here: where its answer goes.
struct Inbound {
    reply: async_nats::Subject,
    since: Instant,
    /// A `map`'s share: the answers so far, and how many are to come once the member list says.
    gather: Option<(Option<usize>, Vec<Envelope>)>,
}

pub(super) struct Relay {
    hub: Hub,
    client: async_nats::Client,
    me: HostId,
    subjects: Subjects,
    codec: FrameCodec,
    timeout: Duration,
    inbound: HashMap<(Peer, u64), Inbound>,
    /// Fires when the connection is lost: every call in flight then fails.
    lost: CancellationToken,
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
        Relay {
            hub,
            client,
            me,
            subjects,
            codec,
            timeout,
            inbound: HashMap::default(),
            lost: CancellationToken::new(),
            store,
            sent: Sent::default(),
            taken: Taken::default(),
            progress: Instant::now(),
            joined: Instant::now(),
            expiry,
        }
    }

    fn encode(&mut self, envs: &[Envelope]) -> Result<Bytes, Error> {
        frames::encode(&mut self.codec, envs)
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
                let call = Call::new(self.hub.clone(), host, &env, owed);
                call.fail_all(&call.unreachable(why));
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
            | Outgoing::Answer { .. }
            | Outgoing::Released(_)
            | Outgoing::OnceDone { .. } => {}
        }
    }

    /// Sends what the Hub handed over.
    pub async fn outgoing(&mut self, item: Outgoing) {
        match item {
            Outgoing::Broadcast(mut env) => {
                env.from = self.stamped(env.from);
                env.id = self.sent.number();
                match self.encode(std::slice::from_ref(&env)) {
                    Ok(bytes) => self.publish(self.subjects.broadcast.clone(), bytes).await,
                    Err(e) => tracing::warn!("a broadcast for other hosts not sent: {e}"),
                }
                self.let_go();
            }
            Outgoing::Released(seqs) => {
                for (host, upto) in self.taken.released(&seqs) {
                    let mut ack = BytesMut::with_capacity(16);
                    ack.put_u64(self.me.0);
                    ack.put_u64(upto);
                    self.publish(self.subjects.acks(host), ack.freeze()).await;
                }
            }
            Outgoing::Call { host, env, owed } => self.call(host, env, owed),
            Outgoing::Answer { to, env } => self.answer(to, env).await,
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

    /// Sends a call to `host` in a task of its own, which answers every route in `owed`.
    fn call(&mut self, host: HostId, env: Envelope, owed: Vec<Peer>) {
        let call = Call::new(self.hub.clone(), host, &env, owed);
        let stamped = Envelope {
            from: self.stamped(env.from),
            ..env
        };
        match frames::encode(&mut self.codec, std::slice::from_ref(&stamped)) {
            Ok(payload) => {
                let (client, subject) = (self.client.clone(), self.subjects.host(host));
                let run = call.run(client, subject, payload, self.timeout, self.lost.clone());
                tokio::spawn(run);
            }
            Err(e) => call.fail_all(&e),
        }
    }

    /// An answer for `to`, a caller on another host, from a call run here.
    async fn answer(&mut self, to: Peer, mut env: Envelope) {
        let key = (to, env.id);
        let Some(inbound) = self.inbound.get_mut(&key) else {
            return tracing::debug!(%to, "an answer for another host that nobody waits for");
        };
        env.to = Target::caller(to);
        let done = match &mut inbound.gather {
            None => Some(vec![env]),
            Some((expected, answers)) => {
                match env.kind {
                    Kind::Members => {
                        *expected = Members::from_bytes(&env.body).ok().map(|m| m.workers.len())
                    }
                    // The whole call refused: that alone is the answer.
                    Kind::Failure if env.from == Peer::Master => *expected = Some(0),
                    _ => {}
                }
                if env.kind != Kind::Members {
                    answers.push(env);
                }
                let complete = expected.is_some_and(|n| answers.len() >= n);
                complete.then(|| std::mem::take(answers))
            }
        };
        let Some(answers) = done else {
            return;
        };
        let Some(inbound) = self.inbound.remove(&key) else {
            return;
        };
        match self.encode(&answers) {
            Ok(bytes) => {
                let sent = tokio::time::timeout(
                    PUBLISH_TIMEOUT,
                    self.client.publish(inbound.reply, bytes),
                )
                .await;
                if !matches!(sent, Ok(Ok(()))) {
                    tracing::debug!(%to, "an answer for another host not sent");
                }
            }
            Err(e) => tracing::warn!(%to, "an answer for another host not sent: {e}"),
        }
    }

    /// A broadcast from another host.
    pub fn incoming_broadcast(&mut self, payload: &[u8]) {
        for env in self.decode(payload) {
            let Some(host) = env.from.host().filter(|h| *h != self.me) else {
                continue;
            };
            if env.kind != Kind::Broadcast {
                continue;
            }
            // Only a host of the cluster is owed acknowledgements: what is kept is bounded.
            if self.hub.knows_host(host) {
                self.taken.arrived(host, env.id);
            }
            self.hub.route_remote(env);
        }
    }

    /// Another host took this host's broadcasts up to a number.
    pub fn incoming_ack(&mut self, payload: &[u8]) {
        let (Some(host), Some(upto)) = (
            payload
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes),
            payload
                .get(8..16)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes),
        ) else {
            return tracing::debug!("an acknowledgement that does not decode: dropped");
        };
        self.sent.acked(HostId(host), upto);
        self.let_go();
    }

    /// A host joined: this host's broadcasts wait for it from now on.
    pub fn host_joined(&mut self, host: HostId) {
        self.sent.joined(host);
    }

    /// A host left or was forgotten: nothing waits for it, nothing is kept of it.
    pub fn host_left(&mut self, host: HostId) {
        self.sent.left(host);
        self.taken.forget(host);
        self.let_go();
    }

    /// Tells the Hub how many more of its broadcasts every other host took.
    fn let_go(&mut self) {
        let taken = self.sent.settle();
        if taken > 0 {
            self.hub
                .uplink_sent(usize::try_from(taken).unwrap_or(usize::MAX));
        }
        if taken > 0 || self.sent.outstanding() == 0 {
            self.progress = Instant::now();
        }
    }

    /// Broadcasts no other host acknowledged for `limit` are presumed lost on the way (a
    /// subscription that overflowed drops messages): their senders go on.
    pub fn unstick(&mut self, limit: Duration) {
        if self.sent.outstanding() > 0 && self.progress.elapsed() > limit {
            tracing::warn!(
                outstanding = self.sent.outstanding(),
                "broadcasts to other hosts not acknowledged for {limit:?}: presumed lost"
            );
            self.sent.lost();
            self.let_go();
        }
    }

    /// A call from another host.
    pub async fn incoming_call(&mut self, message: async_nats::Message) {
        let Some(reply) = message.reply else {
            return tracing::debug!("a call from another host with no reply subject: dropped");
        };
        let mut envs = self.decode(&message.payload).into_iter();
        let (Some(env), None) = (envs.next(), envs.next()) else {
            return tracing::debug!("a call from another host that is not one frame: dropped");
        };
        let from = env.from;
        if env.kind != Kind::Request || !from.host().is_some_and(|h| h != self.me) {
            return tracing::debug!(%from, "a call from another host that is not one: dropped");
        }
        if self.inbound.len() >= MAX_INBOUND && !self.inbound.contains_key(&(from, env.id)) {
            let error = Error::Busy {
                event: env.event_name(),
                peer: Peer::Remote {
                    host: self.me,
                    worker: None,
                },
            };
            let max = self.codec.max_frame();
            let mut failure = Envelope::failure(env.id, Peer::Master, env.event, &error, max);
            failure.to = Target::caller(from);
            if let Ok(bytes) = self.encode(&[failure]) {
                self.publish(reply.to_string(), bytes).await;
            }
            return;
        }
        let gather = matches!(env.to, Target::All { .. }).then(|| (None, Vec::new()));
        let inbound = Inbound {
            reply,
            since: Instant::now(),
            gather,
        };
        self.inbound.insert((from, env.id), inbound);
        self.hub.route_remote(env);
    }

    /// A message's frames, or none if any of it is not a frame.
    fn decode(&mut self, payload: &[u8]) -> Vec<Envelope> {
        match frames::decode(&mut self.codec, payload) {
            (envs, None) => envs,
            (_, Some(problem)) => {
                tracing::debug!("a message from another host {problem}: dropped");
                Vec::new()
            }
        }
    }

    /// The connection is lost: the calls in flight fail now, and those run for other hosts
    /// are given up (their callers' uplinks fail them).
    pub fn lost(&mut self) {
        self.lost.cancel();
        self.lost = CancellationToken::new();
        self.give_up(|_| true);
        self.sent.lost();
        self.taken.clear();
        self.let_go();
    }

    /// Forgets the calls from other hosts not answered within twice the request timeout.
    pub fn sweep(&mut self) {
        let now = Instant::now();
        let limit = self.timeout.saturating_mul(2);
        self.give_up(|inbound| now.saturating_duration_since(inbound.since) > limit);
    }

    fn give_up(&mut self, which: impl Fn(&Inbound) -> bool) {
        let gone: Vec<(Peer, u64)> = self
            .inbound
            .iter()
            .filter(|(_, inbound)| which(inbound))
            .map(|(key, _)| *key)
            .collect();
        for (caller, id) in gone {
            self.inbound.remove(&(caller, id));
            let cancel = Envelope {
                id,
                from: caller,
                ..Envelope::new(Kind::Cancel, "", Bytes::new())
            };
            self.hub.route_remote(cancel);
        }
    }
}
