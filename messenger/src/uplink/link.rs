//! The uplink's task: one NATS connection, this host's announcements out, the others' in.

use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::once;
use super::relay::Relay;
use super::subjects::Subjects;
use super::{announcement, Uplink};
use crate::hub::{Heard, HostId, Hub, HubEvent, PortRx};
use crate::{Error, Result};

/// Messages the client buffers per subscription before it drops some (a slow consumer: the
/// next heartbeats make membership good, a gap in broadcasts is counted as lost): at most this
/// many times the server's `max_payload` bytes. Room for the broadcast windows of 16 hosts
/// flooding this one at once (`hub/router/afar.rs`).
const SUBSCRIPTION_CAPACITY: usize = 1024;

/// How long one announcement may wait for room in the client's queue: the loop never waits
/// longer on NATS (a connection being re-established takes nothing from the queue).
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(1);

/// The most items taken from the Hub's queue in one go, their calls and answers gathered into
/// one message per host (`outbox.rs`).
const BATCH: usize = 256;

/// The longest reason kept for the log of ignored announcements (it may quote their bytes).
const MAX_REASON: usize = 200;

/// Who this host is, and what it last said.
struct Me {
    id: HostId,
    name: String,
    seq: u64,
}

/// Connects, subscribes, announces this host, and runs the rest in a task until `stop`.
pub(super) async fn start(
    hub: Hub,
    uplink: Uplink,
    id: HostId,
    name: String,
    port: PortRx,
    stop: CancellationToken,
) -> Result<JoinHandle<()>> {
    let (events_tx, events) = mpsc::unbounded_channel();
    let options = uplink
        .options
        .unwrap_or_default()
        .name(format!("multiprocess {name}"))
        .subscription_capacity(SUBSCRIPTION_CAPACITY)
        .event_callback(move |event| {
            let events_tx = events_tx.clone();
            async move {
                let _ = events_tx.send(event);
            }
        });
    let servers: Vec<String> = uplink
        .servers
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    let unreachable = |e: &dyn std::fmt::Display| {
        Error::from(std::io::Error::other(format!(
            "NATS at {}: {e}",
            uplink.servers
        )))
    };
    let client = options
        .connect(servers)
        .await
        .map_err(|e| unreachable(&e))?;
    let subjects = Subjects::of(&uplink.cluster);
    let subject = subjects.members.clone();
    let subscribe = |subject: String| {
        let client = client.clone();
        async move { client.subscribe(subject).await }
    };
    let subscriptions = Subscriptions {
        members: subscribe(subject.clone())
            .await
            .map_err(|e| unreachable(&e))?,
        broadcasts: subscribe(subjects.broadcast.clone())
            .await
            .map_err(|e| unreachable(&e))?,
        calls: subscribe(subjects.host(id))
            .await
            .map_err(|e| unreachable(&e))?,
        acks: subscribe(subjects.acks(id))
            .await
            .map_err(|e| unreachable(&e))?,
        answers: subscribe(subjects.answers_to(id))
            .await
            .map_err(|e| unreachable(&e))?,
    };
    let store = once::bucket(&client, &uplink.cluster, hub.config()).await;
    port.set_up(true);
    let hub_events = hub.subscribe();
    let mut me = Me { id, name, seq: 0 };
    announce(&hub, &client, &subject, &mut me, false).await;
    tracing::info!(host = %me.name, id = %me.id, cluster = %uplink.cluster, "joined over NATS");
    let run = Run {
        relay: Relay::new(
            hub.clone(),
            client.clone(),
            id,
            subjects,
            store,
            uplink.expiry,
        ),
        hub,
        client,
        subject,
        me,
        expiry: uplink.expiry,
        port,
    };
    Ok(tokio::spawn(run.run(
        subscriptions,
        events,
        hub_events,
        stop,
    )))
}

/// What the uplink hears on NATS.
struct Subscriptions {
    members: async_nats::Subscriber,
    broadcasts: async_nats::Subscriber,
    calls: async_nats::Subscriber,
    acks: async_nats::Subscriber,
    answers: async_nats::Subscriber,
}

struct Run {
    hub: Hub,
    client: async_nats::Client,
    subject: String,
    me: Me,
    expiry: Duration,
    /// What the Hub hands over for other hosts.
    port: PortRx,
    relay: Relay,
}

impl Run {
    async fn run(
        mut self,
        subscriptions: Subscriptions,
        mut events: mpsc::UnboundedReceiver<async_nats::Event>,
        mut hub_events: mpsc::UnboundedReceiver<HubEvent>,
        stop: CancellationToken,
    ) {
        // However the task ends (a panic included), the Hub forgets the other hosts and lets go
        // of what it held for them.
        let _forget = Forget(self.hub.clone());
        let Subscriptions {
            mut members,
            mut broadcasts,
            mut calls,
            mut acks,
            mut answers,
        } = subscriptions;
        let mut heartbeat = tokio::time::interval(self.expiry / 3);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let timeout = self.hub.config().request_timeout;
        let mut overdue = tokio::time::interval(
            (timeout / 10).clamp(Duration::from_millis(10), Duration::from_secs(1)),
        );
        overdue.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut refused = Refused::default();
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                Some(item) = self.port.recv() => {
                    self.relay.outgoing(item).await;
                    // What else waits goes in the same messages.
                    for _ in 1..BATCH {
                        let Some(item) = self.port.try_recv() else { break };
                        self.relay.outgoing(item).await;
                    }
                }
                Some(message) = broadcasts.next() => self.relay.incoming_broadcast(&message.payload),
                Some(message) = calls.next() => self.relay.incoming_calls(message),
                Some(message) = answers.next() => self.relay.incoming_answers(&message),
                Some(message) = acks.next() => self.relay.incoming_ack(&message.payload),
                // Calls to other hosts past the request timeout fail.
                _ = overdue.tick() => self.relay.expire(),
                // A `map` share's answers held back long enough go.
                () = sleep_until(self.relay.hold_until()), if self.relay.hold_until().is_some() => {
                    self.relay.release_held();
                }
                _ = heartbeat.tick() => {
                    self.say(false).await;
                    for (id, name) in self.hub.expire_hosts(self.expiry) {
                        tracing::warn!(host = %name, %id, "host not heard from for {:?}: forgotten", self.expiry);
                        self.take_answers(&mut answers);
                        self.relay.host_left(id, &name);
                    }
                    refused.report();
                    self.relay.sweep();
                    self.relay.unstick(self.expiry);
                    let dropped = self.port.take_dropped();
                    if dropped > 0 {
                        tracing::warn!(dropped, "broadcasts across hosts dropped (NATS down, the uplink's queue full, or a worker's backlog full of another host's broadcasts)");
                    }
                }
                Some(event) = hub_events.recv() => {
                    if matches!(event, HubEvent::Ready(_) | HubEvent::Closed { .. }) {
                        self.say(false).await;
                    }
                }
                Some(event) = events.recv() => match event {
                    async_nats::Event::Connected => {
                        tracing::info!("NATS connection (re)established: announcing this host");
                        self.port.set_up(true);
                        self.relay.connected();
                        self.say(false).await;
                    }
                    async_nats::Event::Disconnected => {
                        tracing::warn!("NATS connection lost: reconnecting; calls to other hosts in flight fail");
                        self.port.set_up(false);
                        self.relay.lost();
                        self.abandon_queued("the NATS connection was lost");
                    }
                    other => tracing::debug!("NATS: {other}"),
                },
                message = members.next() => match message {
                    Some(message) => {
                        // A newcomer learns of this host now, not at its next heartbeat.
                        let heard = self.heard(&message.payload, &mut refused, &mut answers);
                        if heard == Some(Heard::Joined) {
                            self.say(false).await;
                        }
                    }
                    None => {
                        tracing::error!("the NATS subscription to membership ended: this host no longer hears the others");
                        break;
                    }
                },
            }
            self.relay.flush().await;
        }
        // Leaving: nothing more goes to other hosts, what is in flight or queued fails, and
        // this host says so once, within a bound; then the connection closes with the client.
        self.port.set_up(false);
        self.relay.lost();
        self.abandon_queued("this host is leaving the cluster");
        self.say(true).await;
        let _ = tokio::time::timeout(PUBLISH_TIMEOUT, self.client.flush()).await;
    }

    /// Fails what waits in the Hub's queue for other hosts (nothing more is taken from it
    /// while the connection is down).
    fn abandon_queued(&mut self, why: &str) {
        while let Some(item) = self.port.try_recv() {
            self.relay.abandon(item, why);
        }
    }

    async fn say(&mut self, leaving: bool) {
        announce(
            &self.hub,
            &self.client,
            &self.subject,
            &mut self.me,
            leaving,
        )
        .await;
    }

    /// Takes in the answers from other hosts already received (at most what the client
    /// buffers).
    fn take_answers(&mut self, answers: &mut async_nats::Subscriber) {
        for _ in 0..SUBSCRIPTION_CAPACITY {
            let Some(Some(message)) = answers.next().now_or_never() else {
                break;
            };
            self.relay.incoming_answers(&message);
        }
    }

    /// Takes in an announcement: what it changed, if it was another host's and sound.
    /// `answers`: the answers already here from a host that leaves are taken in first (they
    /// came before it said so).
    fn heard(
        &mut self,
        payload: &[u8],
        refused: &mut Refused,
        answers: &mut async_nats::Subscriber,
    ) -> Option<Heard> {
        let ann = match announcement::decode(payload) {
            Ok(ann) => ann,
            Err(reason) => {
                refused.note(reason);
                return None;
            }
        };
        if ann.host == self.me.id {
            return None;
        }
        let (host, id) = (ann.name.clone(), ann.host);
        let heard = self.hub.hear(ann);
        match heard {
            Heard::Joined => {
                tracing::info!(%host, %id, "host joined");
                self.relay.host_joined(id);
            }
            Heard::Left => {
                tracing::info!(%host, %id, "host left");
                self.take_answers(answers);
                self.relay.host_left(id, &host);
            }
            Heard::Changed => tracing::debug!(%host, %id, "host's workers changed"),
            Heard::Full => refused.note(format!("host {host} ({id}) is one more than max_hosts")),
            Heard::Same | Heard::Stale => {}
        }
        Some(heard)
    }
}

async fn announce(
    hub: &Hub,
    client: &async_nats::Client,
    subject: &str,
    me: &mut Me,
    leaving: bool,
) {
    me.seq += 1;
    let mut ann = hub.announcement(me.id, &me.name, me.seq);
    if leaving {
        ann.leaving = true;
        ann.workers.clear();
    }
    if client.connection_state() != async_nats::connection::State::Connected {
        // Said again once connected (the `Connected` event), not queued meanwhile.
        return;
    }
    let Some(bytes) = announcement::encode(&ann) else {
        tracing::error!(
            "this host's announcement is over {} bytes: the others cannot hear of its workers",
            announcement::MAX_BYTES
        );
        return;
    };
    // Published into the client's queue; a lost connection is the client's to retry, and
    // the next heartbeat says it again.
    match tokio::time::timeout(PUBLISH_TIMEOUT, client.publish(subject.to_owned(), bytes)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!("announcement not sent: {e}"),
        Err(_) => tracing::debug!("announcement not sent: the NATS client's queue is full"),
    }
}

/// Sleeps until `at` (for ever without one).
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Makes the Hub forget the other hosts when dropped.
struct Forget(Hub);

impl Drop for Forget {
    fn drop(&mut self) {
        self.0.forget_hosts();
    }
}

/// Announcements ignored since the last report: reported at most once per heartbeat.
#[derive(Default)]
struct Refused {
    count: u64,
    last: Option<String>,
}

impl Refused {
    fn note(&mut self, mut reason: String) {
        self.count += 1;
        if reason.len() > MAX_REASON {
            let mut end = MAX_REASON;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason.truncate(end);
            reason.push_str("...");
        }
        self.last = Some(reason);
    }

    fn report(&mut self) {
        if let Some(reason) = self.last.take() {
            tracing::warn!(
                ignored = self.count,
                "announcements from other hosts ignored; the last one: {reason}"
            );
        }
        *self = Refused::default();
    }
}
