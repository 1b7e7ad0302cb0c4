//! The Hub: the one place where routing rules live.
//!
//! It runs in the master. Every worker's connection ends here, and so does the master's own
//! Messenger (routed in the caller's task, without a socket). The Hub stamps each frame with the
//! peer its connection belongs to, decides where it goes from the envelope alone (it never
//! decodes a payload), and remembers who waits for which answer, so that a peer that goes away
//! fails its pending calls at once.
//!
//! Nothing the Hub does waits on one peer: routing a frame takes a lock, queues, and lets go.
//! What a slow or hostile peer may cost is bounded: its queue (see `conn.rs`), its pending
//! calls ([`Config::max_calls`]), the names it announces ([`Config::max_events`]), the
//! `consume_once` replies remembered ([`Config::once_keys`], [`Config::once_bytes`]). Frames
//! are copied out of the read buffer they came in, so nothing kept pins more than its own size.
//! A peer that breaks the protocol is closed, with one log line.
//!
//! The files: `serve.rs` runs a connection (handshake, reader, writer, watchdog), `router.rs`
//! routes each frame, `conn.rs` is a connection's queue and window, `pending.rs` the calls
//! awaiting answers, `members.rs` the Ready set, `once.rs` the remembered `consume_once` replies,
//! `hosts.rs` the other hosts of a cluster that spans hosts (fed by `uplink/`).

use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use crate::builtin::Ping;
use crate::transport::Router;
use crate::wire::Envelope;
use crate::{Config, Event, HubStats, Messenger, Peer, PeerStats, Result, WorkerId};

mod conn;
mod hosts;
mod members;
mod once;
mod outbound;
mod pending;
// Without the feature `nats` nothing takes from the port (and the Hub never makes one).
#[cfg_attr(not(feature = "nats"), allow(dead_code))]
mod port;
mod router;
mod serve;

#[cfg_attr(not(feature = "nats"), allow(unused_imports))]
pub(crate) use hosts::{Announcement, Heard, Hosts, Said};
pub use hosts::{HostId, RemoteHost};
use members::Admission;
#[cfg(feature = "nats")]
pub(crate) use port::{Outgoing, PortRx};
use router::State;

/// Where a worker is in its life, as far as routing goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PeerState {
    /// Connected, not Ready yet: it may send, but gets no messages.
    Starting,
    /// Gets messages and counts for `map`.
    Ready,
    /// Replaced or told to drain: gets no new messages, and can never be Ready again; its
    /// answers still reach their callers.
    Draining,
}

/// What the Hub tells its subscribers (the supervisor).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HubEvent {
    /// The worker asks to be Ready. Only a supervised Hub ([`Hub::supervised`]) asks: answer
    /// with [`Hub::admit`] or [`Hub::refuse`].
    ReadyAsked(WorkerId),
    /// The worker was made Ready (in place of the one that held its slot, if any).
    Ready(WorkerId),
    /// The worker's connection ended; `reason` says why (end of file, an error, stuck, ...).
    Closed {
        /// The worker.
        id: WorkerId,
        /// Why the connection ended.
        reason: String,
    },
}

/// The master's router. Cheap to clone; every clone is the same Hub.
///
/// Create it inside a tokio runtime: it spawns the master's own link.
#[derive(Clone)]
pub struct Hub {
    shared: Arc<Shared>,
}

pub(crate) struct Shared {
    config: Config,
    state: Mutex<State>,
    master: Messenger,
}

impl Hub {
    /// A Hub with no workers yet, and the master's Messenger linked to it. It decides itself
    /// who may be Ready (see [`PeerState::Draining`]): what the mock cluster uses.
    pub fn new(config: Config) -> Result<Hub> {
        Self::with_admission(config, Admission::Auto)
    }

    /// A Hub whose workers' requests to be Ready are the supervisor's to answer: it hears of
    /// each as [`HubEvent::ReadyAsked`] on the returned channel (with every other event).
    pub fn supervised(config: Config) -> Result<(Hub, mpsc::UnboundedReceiver<HubEvent>)> {
        let hub = Self::with_admission(config, Admission::Supervised)?;
        let events = hub.subscribe();
        Ok((hub, events))
    }

    fn with_admission(config: Config, admission: Admission) -> Result<Hub> {
        config.validate()?;
        let shared = Arc::new_cyclic(|weak: &Weak<Shared>| {
            let router: Weak<dyn Router> = weak.clone();
            let master = Messenger::local(router, config.clone());
            let mut state = State::new(&config, admission);
            serve::connect_master(&mut state, master.clone());
            Shared {
                config,
                state: Mutex::new(state),
                master,
            }
        });
        Ok(Hub { shared })
    }

    /// The master's own Messenger: it can broadcast, consume, map and request like a worker, and
    /// its handlers answer the workers' `request_master`.
    pub fn messenger(&self) -> Messenger {
        self.shared.master.clone()
    }

    /// The configuration the Hub was made with.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Receives the Hub's events: workers asking to be and made Ready, connections ending.
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<HubEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().subscribe(tx);
        rx
    }

    /// Serves worker `id` over `io`: whatever speaks on it is that worker. The handshake (the
    /// protocol version) and the connection's tasks run in the background; a refused or ended
    /// connection is reported as [`HubEvent::Closed`].
    pub fn attach<IO>(&self, id: WorkerId, io: IO)
    where
        IO: AsyncRead + AsyncWrite + Send + 'static,
    {
        serve::attach(self.clone(), id, io);
    }

    /// Makes worker `id` its slot's Ready worker, answering its request to be Ready: the worker
    /// that held the slot gets no new messages from now on (drain it). `Err` if `id` is not
    /// connected, or was drained or superseded.
    pub fn admit(&self, id: WorkerId) -> Result<(), String> {
        let mut state = self.lock();
        let admitted = state.admit(id);
        state.finish();
        admitted
    }

    /// Refuses worker `id`'s request to be Ready: it gets [`Error::Forbidden`] with `reason`.
    ///
    /// [`Error::Forbidden`]: crate::Error::Forbidden
    pub fn refuse(&self, id: WorkerId, reason: &str) {
        let mut state = self.lock();
        state.refuse(id, reason.to_owned());
        state.finish();
    }

    /// Routes no new messages to worker `id` (state Draining, for good); answers it owes still
    /// reach their callers.
    pub fn drain(&self, id: WorkerId) {
        let mut state = self.lock();
        state.drain(id);
        state.finish();
    }

    /// Closes worker `id`'s connection from the master's side.
    pub fn detach(&self, id: WorkerId) {
        let mut state = self.lock();
        state.close(Peer::Worker(id), "detached by the master");
        // The room its backlog held goes back to the senders.
        state.finish();
    }

    /// Every connected worker and its state, in slot then generation order.
    pub fn peers(&self) -> Vec<(WorkerId, PeerState)> {
        self.stats()
            .peers
            .into_iter()
            .map(|p| (p.id, p.state))
            .collect()
    }

    /// What the Hub routed since it started, and what it holds for each worker now.
    pub fn stats(&self) -> HubStats {
        let state = self.lock();
        let mut peers: Vec<_> = state
            .conns
            .workers()
            .map(|(id, conn)| {
                let at = if state.members.is_ready(id) {
                    PeerState::Ready
                } else if conn.retired {
                    PeerState::Draining
                } else {
                    PeerState::Starting
                };
                PeerStats {
                    id,
                    state: at,
                    queued_frames: conn.out.held(),
                    queued_bytes: conn.out.held_bytes_all(),
                    delivered: conn.out.delivered(),
                }
            })
            .collect();
        peers.sort_by_key(|p| p.id);
        HubStats {
            routed: state.routed.snapshot(),
            peers,
        }
    }

    /// The Ready workers, in slot order: the workers a `map` asks now.
    pub fn ready_set(&self) -> Vec<WorkerId> {
        self.lock().members.workers().collect()
    }

    /// How many frames the Hub holds for worker `id` (its queue and the broadcasts waiting for
    /// room), or `None` if it is not connected: a worker that does not keep up shows here first.
    pub fn queued(&self, id: WorkerId) -> Option<usize> {
        let state = self.lock();
        Some(state.conns.get(&Peer::Worker(id))?.out.held())
    }

    /// How many calls and broadcasts the Hub has given worker `id` since it connected: the
    /// requests and broadcasts queued for it, and the calls it was picked for as their caller
    /// (run where they were made). Its share of the traffic, for an operator; a `map`'s share
    /// that the caller runs itself does not pass the Hub and is not counted. `None` if it is
    /// not connected.
    pub fn delivered(&self, id: WorkerId) -> Option<u64> {
        let state = self.lock();
        Some(state.conns.get(&Peer::Worker(id))?.out.delivered())
    }

    /// Runs `event` on the exact worker `id`, whatever its state and however full its queue:
    /// the master's way to address one process (drain it, check it) rather than a slot.
    pub async fn request_worker<E: Event>(&self, id: WorkerId, event: E) -> Result<E::Reply> {
        self.shared.master.request_worker(id, event).await
    }

    /// A heartbeat: how long worker `id` took to answer from a task on its runtime.
    pub async fn ping(&self, id: WorkerId) -> Result<Duration> {
        let started = std::time::Instant::now();
        self.request_worker(id, Ping).await?;
        Ok(started.elapsed())
    }

    /// The other hosts of the cluster this Hub joined over NATS (`Hub::join`, feature `nats`),
    /// by name: each one's Ready workers and the events they handle, as it last announced
    /// them. Empty for a Hub on one host.
    pub fn hosts(&self) -> Vec<RemoteHost> {
        self.lock().hosts.list(tokio::time::Instant::now())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.lock()
    }
}

/// What the uplink (`uplink/`) asks of the Hub: this host's Ready workers, and the others'.
#[cfg_attr(not(feature = "nats"), allow(dead_code))]
impl Hub {
    /// What this host says of itself: its Ready workers, in slot order, and what each handles.
    pub(crate) fn announcement(&self, host: HostId, name: &str, seq: u64) -> Announcement {
        let mut workers: Vec<(WorkerId, Vec<Bytes>)> = {
            let state = self.lock();
            let handled = |id| {
                let conn = state.conns.get(&Peer::Worker(id));
                conn.map(|conn| conn.handlers.iter().cloned().collect())
            };
            let workers = state.members.workers();
            workers
                .map(|id| (id, handled(id).unwrap_or_default()))
                .collect()
        };
        // Sorted once the lock is let go: the same handlers always say the same.
        for (_, handled) in &mut workers {
            handled.sort();
        }
        Announcement {
            host,
            name: name.to_owned(),
            seq,
            leaving: false,
            workers,
        }
    }

    /// Takes in another host's announcement.
    pub(crate) fn hear(&self, ann: Announcement) -> Heard {
        let said = hosts::Said::new(ann);
        self.lock().hosts.hear(said, tokio::time::Instant::now())
    }

    /// Forgets the hosts not heard from for `expiry`.
    pub(crate) fn expire_hosts(&self, expiry: Duration) -> Vec<(HostId, String)> {
        self.lock()
            .hosts
            .expire(tokio::time::Instant::now(), expiry)
    }

    /// Forgets every other host, and the uplink: this one left, and may join again.
    pub(crate) fn forget_hosts(&self) {
        let mut state = self.lock();
        // Forgotten first: what fails next (and may be run again) is routed to this host.
        state.hosts = hosts::Hosts::new(0);
        state.uplink_gone();
        state.finish();
    }

    /// The uplink published (or gave up on) the next `n` broadcasts it was handed.
    pub(crate) fn uplink_sent(&self, n: usize) {
        let mut state = self.lock();
        state.uplink_sent(n);
        state.finish();
    }

    /// Makes way for the others of a cluster being joined as host `me` named `name`: at most
    /// `max` of them. The uplink's end of the queue of what goes to them, bounded by the
    /// configuration's queue budget; `None` if this Hub has joined one already (and not left it).
    pub(crate) fn start_hosts(&self, max: usize, me: HostId, name: String) -> Option<port::PortRx> {
        let mut state = self.lock();
        if state.hosts.max_hosts() > 0 {
            return None;
        }
        let config = &self.shared.config;
        let (port, rx) = port::port(me, name, config.queue_frames, config.queue_bytes);
        state.hosts = hosts::Hosts::new(max);
        state.uplink = Some(port);
        Some(rx)
    }

    /// A host's name, or its id if it is not known.
    pub(crate) fn host_name(&self, host: HostId) -> String {
        let state = self.lock();
        state
            .hosts
            .name(host)
            .map_or_else(|| host.to_string(), str::to_owned)
    }

    /// Routes a frame from another host (its sender stamped as [`Peer::Remote`]).
    pub(crate) fn route_remote(&self, env: Envelope) {
        let mut state = self.lock();
        state.route_remote(env);
        state.finish();
    }

    /// An answer from `host` to a call made here, owed by `owed_by` (see `router/remote.rs`).
    pub(crate) fn remote_answer(&self, host: HostId, env: Envelope, caller: Peer, owed_by: Peer) {
        let mut state = self.lock();
        state.remote_answer(host, env, caller, owed_by);
        state.finish();
    }

    /// The uplink's word on a `consume_once` request: this host runs it.
    pub(crate) fn once_won(&self, request: Envelope) {
        let mut state = self.lock();
        state.once_won(request);
        state.finish();
    }

    /// The uplink's word on a `consume_once` key: its result, or why it cannot be had.
    pub(crate) fn once_settled(&self, event: Bytes, key: Bytes, result: Result<(Peer, Bytes)>) {
        let mut state = self.lock();
        state.once_settled(&(event, key), result);
        state.finish();
    }

    /// Whether `host` is known (heard from within its expiry).
    pub(crate) fn knows_host(&self, host: HostId) -> bool {
        self.lock().hosts.name(host).is_some()
    }

    /// Whether `host` is not in the cluster as this Hub knows it: not known, and not one left
    /// out for want of room (the table is not full).
    pub(crate) fn host_absent(&self, host: HostId) -> bool {
        let state = self.lock();
        state.hosts.name(host).is_none() && !state.hosts.is_full()
    }

    /// Drops the routes of `caller`'s call `id` owed by `owed` (other hosts' peers): the caller
    /// gave up.
    pub(crate) fn remote_cancelled(&self, caller: Peer, id: u64, owed: Vec<Peer>) {
        let mut state = self.lock();
        state.pending.cancel((caller, id), owed.into_iter());
        state.finish();
    }

    /// Fails the call `(caller, id)` owed by `owed_by`, if it still waits.
    pub(crate) fn remote_failed(
        &self,
        caller: Peer,
        id: u64,
        owed_by: Peer,
        event: Bytes,
        error: &crate::Error,
    ) {
        let mut state = self.lock();
        state.remote_failed(caller, id, owed_by, event, error);
        state.finish();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The master's Messenger routes its frames here, in the calling task.
impl Router for Shared {
    fn route(&self, env: Envelope) {
        self.lock().route(Peer::Master, env, true);
    }
}
