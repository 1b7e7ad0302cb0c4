//! The Hub: the one place where routing rules live.
//!
//! It runs in the master. Every worker's connection ends here, and so does the master's own
//! Messenger (over an in-process link). The Hub stamps each frame with the peer its connection
//! belongs to, decides where it goes from the envelope alone (it never decodes a payload), and
//! remembers who waits for which answer, so that a peer that goes away fails its pending calls
//! at once.
//!
//! Queues: each connection has a bounded queue of `Config::queue_frames` frames. A frame for a
//! full queue is held by the task that routes it (so that sender waits: backpressure, and its
//! order is kept) for at most `Config::stall_timeout`; a connection whose queue stays full that
//! long is closed as stuck, which fails its pending calls with [`Error::WorkerGone`] and tells the
//! supervisor. `consume` prefers workers with room. Nothing is dropped without an error to
//! someone, and one slow worker holds up only the senders that address it, for a bounded time.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
// Fast hashing: every key is the project's own (peers, route ids, event names).
use futures_util::StreamExt;
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use crate::endpoint::Ping;
use crate::transport;
use crate::wire::{Envelope, Fanout, Kind, Target};
use crate::{Config, Error, Event, Messenger, Peer, Result, WorkerId};

/// Where a worker is in its life, as far as routing goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerState {
    /// Connected, not Ready yet: it may send, but gets no messages.
    Starting,
    /// Gets messages and counts for `map`.
    Ready,
    /// Being replaced or stopped: gets no new messages; its answers still reach their callers.
    Draining,
}

/// What the Hub tells its subscribers (the supervisor).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HubEvent {
    /// The worker said it is Ready.
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

struct Shared {
    config: Config,
    state: Mutex<State>,
    master: Messenger,
}

#[derive(Default)]
struct State {
    conns: HashMap<Peer, Conn>,
    /// The Ready worker of each slot; a BTreeMap, so iteration is slot order.
    ready: BTreeMap<u32, WorkerId>,
    routes: HashMap<u64, Route>,
    next_route: u64,
    /// Round-robin position per event, for `consume`.
    spread: HashMap<Bytes, usize>,
    once: OnceTable,
    subscribers: Vec<mpsc::UnboundedSender<HubEvent>>,
    /// How many done `consume_once` keys to remember.
    once_keys: usize,
    /// Which Ready set `ready` is: bumped whenever it changes (0 before any), so a `map`'s
    /// caller that knows the current one needs no [`Fanout`].
    epoch: u64,
    /// The Ready workers of the `map` being routed (kept between maps).
    map_workers: Vec<WorkerId>,
}

struct Conn {
    state: PeerState,
    handlers: HashSet<Bytes>,
    tx: mpsc::Sender<Envelope>,
    stop: CancellationToken,
}

/// A request forwarded to `responder`, whose answer goes back to `requester` as `id`.
struct Route {
    requester: Peer,
    id: u64,
    responder: Peer,
    event: Bytes,
    once: Option<OnceKey>,
}

type OnceKey = (Bytes, Bytes);

enum OnceEntry {
    Running { waiters: Vec<(Peer, u64)> },
    Done { from: Peer, body: Bytes },
}

/// `consume_once` keys: running ones with their waiters, done ones with their reply.
#[derive(Default)]
struct OnceTable {
    entries: HashMap<OnceKey, OnceEntry>,
    done: VecDeque<OnceKey>,
}

/// Frames that found their queue full: sent after the state lock is released.
type Held = Vec<(Peer, mpsc::Sender<Envelope>, Envelope)>;

impl Hub {
    /// A Hub with no workers yet, and the master's Messenger linked to it.
    pub fn new(config: Config) -> Hub {
        let (master, mut outbox) = Messenger::start(Peer::Master, config.clone());
        let (tx, mut inbox) = mpsc::channel(config.queue_frames);
        let mut state = State {
            once_keys: config.once_keys,
            ..State::default()
        };
        state.conns.insert(
            Peer::Master,
            Conn {
                state: PeerState::Ready,
                handlers: HashSet::default(),
                tx,
                stop: CancellationToken::new(),
            },
        );
        let hub = Hub {
            shared: Arc::new(Shared {
                config,
                state: Mutex::new(state),
                master: master.clone(),
            }),
        };

        // The master's link: no socket, no codec; the same routing.
        let weak = Arc::downgrade(&hub.shared);
        tokio::spawn(async move {
            while let Some(env) = outbox.recv().await {
                let Some(shared) = weak.upgrade() else { return };
                Hub { shared }.route(Peer::Master, env).await;
            }
        });
        tokio::spawn(async move {
            while let Some(env) = inbox.recv().await {
                master.dispatch(env).await;
            }
        });
        hub
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

    /// Receives the Hub's events: workers getting Ready and connections ending.
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<HubEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().subscribers.push(tx);
        rx
    }

    /// Serves worker `id` over `io`: whatever speaks on it is that worker. The handshake (the
    /// protocol version) and the connection's tasks run in the background; a refused or ended
    /// connection is reported as [`HubEvent::Closed`].
    pub fn attach<IO>(&self, id: WorkerId, io: IO)
    where
        IO: AsyncRead + AsyncWrite + Send + 'static,
    {
        let hub = self.clone();
        tokio::spawn(async move {
            match hub.serve(id, io).await {
                Ok(reason) => hub.disconnected(Peer::Worker(id), reason).await,
                Err(reason) => {
                    tracing::warn!(
                        slot = id.slot,
                        generation = id.generation,
                        "worker refused: {reason}"
                    );
                    hub.lock().emit(HubEvent::Closed { id, reason });
                }
            }
        });
    }

    /// Runs worker `id`'s connection: `Err` if the handshake failed (it was never connected),
    /// else why it ended.
    async fn serve<IO>(&self, id: WorkerId, io: IO) -> Result<String, String>
    where
        IO: AsyncRead + AsyncWrite + Send + 'static,
    {
        let peer = Peer::Worker(id);
        let config = &self.shared.config;
        let (read, mut write) = tokio::io::split(io);
        let mut codec = transport::codec(config);
        let mut reader = FramedRead::with_capacity(read, codec.clone(), 64 * 1024);
        if let Err(err) = transport::read_hello(&mut reader, config).await {
            let refusal = Envelope::failure(0, Peer::Master, Bytes::new(), &err);
            let _ = transport::write_one(&mut write, &mut codec, &refusal).await;
            return Err(format!("handshake failed: {err}"));
        }
        if let Err(err) =
            transport::write_one(&mut write, &mut codec, &transport::hello(Some(peer))).await
        {
            return Err(format!("handshake failed: {err}"));
        }

        let (tx, rx) = mpsc::channel(config.queue_frames);
        let stop = CancellationToken::new();
        self.lock().conns.insert(
            peer,
            Conn {
                state: PeerState::Starting,
                handlers: HashSet::default(),
                tx,
                stop: stop.clone(),
            },
        );
        tokio::spawn(transport::write_frames(write, rx, codec, stop.clone()));
        // Made once: a cancellation future registers with the token each time it is made.
        let stopped = stop.cancelled();
        tokio::pin!(stopped);
        loop {
            let frame = tokio::select! {
                biased;
                frame = reader.next() => frame,
                () = &mut stopped => return Ok("closed by the master".into()),
            };
            match frame {
                Some(Ok(env)) => {
                    // Routing never waits unless a queue is full: only then is there a future.
                    let held = self.route_now(peer, env);
                    if !held.is_empty() {
                        self.send_held(held).await;
                    }
                }
                Some(Err(err)) => return Ok(format!("connection error: {err}")),
                None => return Ok("end of file".into()),
            }
        }
    }

    /// Routes no new messages to worker `id` (state Draining); answers it owes still reach
    /// their callers.
    pub fn drain(&self, id: WorkerId) {
        let mut state = self.lock();
        if let Some(conn) = state.conns.get_mut(&Peer::Worker(id)) {
            conn.state = PeerState::Draining;
        }
        if state.leave_ready_set(id) {
            state.tell_ready_set(id);
        }
    }

    /// Closes worker `id`'s connection from the master's side.
    pub async fn detach(&self, id: WorkerId) {
        self.disconnected(Peer::Worker(id), "detached by the master".into())
            .await;
    }

    /// Every connected worker and its state, in slot then generation order.
    pub fn peers(&self) -> Vec<(WorkerId, PeerState)> {
        let state = self.lock();
        let mut peers: Vec<_> = state
            .conns
            .iter()
            .filter_map(|(peer, conn)| Some((peer.worker()?, conn.state)))
            .collect();
        peers.sort_by_key(|(id, _)| *id);
        peers
    }

    /// How many frames wait in the queue to worker `id` (at most [`Config::queue_frames`]), or
    /// `None` if it is not connected: a worker that does not keep up shows here first.
    pub fn queued(&self, id: WorkerId) -> Option<usize> {
        let state = self.lock();
        let conn = state.conns.get(&Peer::Worker(id))?;
        Some(conn.tx.max_capacity() - conn.tx.capacity())
    }

    /// Runs `event` on the exact worker `id`, whatever its state: the master's way to address
    /// one process (drain it, check it) rather than a slot.
    pub async fn request_worker<E: Event>(&self, id: WorkerId, event: E) -> Result<E::Reply> {
        self.shared.master.request_worker(id, event).await
    }

    /// A heartbeat: how long worker `id` took to answer from a task on its runtime.
    pub async fn ping(&self, id: WorkerId) -> Result<Duration> {
        let started = std::time::Instant::now();
        self.request_worker(id, Ping).await?;
        Ok(started.elapsed())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Routes one frame that arrived on `from`'s connection.
    pub(crate) async fn route(&self, from: Peer, env: Envelope) {
        let held = self.route_now(from, env);
        self.send_held(held).await;
    }

    /// Routes `env`, returning the frames that found a full queue (to send with
    /// [`send_held`](Hub::send_held)).
    fn route_now(&self, from: Peer, mut env: Envelope) -> Held {
        env.from = from;
        let mut held = Held::new();
        {
            let mut state = self.lock();
            let state = &mut *state;
            match env.kind {
                Kind::Announce => {
                    if let Some(conn) = state.conns.get_mut(&from) {
                        conn.handlers.insert(env.event);
                    }
                }
                Kind::Ready => state.ready(env, &mut held),
                Kind::Broadcast => state.broadcast(env, &mut held),
                Kind::Request => state.request(env, &mut held),
                Kind::Reply | Kind::Failure => state.answered(env, &mut held),
                Kind::Cancel => state.cancel(from, env.id),
                Kind::Hello | Kind::Fanout => {
                    tracing::warn!(%from, kind = ?env.kind, "unexpected frame ignored");
                }
            }
        }
        held
    }

    /// Sends the frames that found a full queue, in order, each waiting at most the stall
    /// timeout; a queue that stays full closes its connection as stuck.
    async fn send_held(&self, held: Held) {
        for (peer, tx, env) in held {
            match tokio::time::timeout(self.shared.config.stall_timeout, tx.send(env)).await {
                Ok(_) => {}
                Err(_) => {
                    let reason = format!(
                        "stuck: its queue stayed full for {:?}",
                        self.shared.config.stall_timeout
                    );
                    tracing::error!(%peer, "{reason}");
                    Box::pin(self.disconnected(peer, reason)).await;
                }
            }
        }
    }

    /// Forgets `peer`: fails the calls it owed answers to, and tells the subscribers.
    async fn disconnected(&self, peer: Peer, reason: String) {
        let mut held = Held::new();
        {
            let mut state = self.lock();
            let Some(conn) = state.conns.remove(&peer) else {
                return;
            };
            conn.stop.cancel();
            state.forget(peer, &mut held);
            if let Peer::Worker(id) = peer {
                tracing::info!(
                    slot = id.slot,
                    generation = id.generation,
                    "worker connection ended: {reason}"
                );
                state.emit(HubEvent::Closed { id, reason });
            }
        }
        self.send_held(held).await;
    }
}

impl State {
    fn emit(&mut self, event: HubEvent) {
        self.subscribers.retain(|tx| tx.send(event.clone()).is_ok());
    }

    /// Queues `env` for `to`, or holds it if the queue is full. A closed queue belongs to a
    /// connection being torn down, whose teardown answers for what it owed.
    fn deliver(&self, to: Peer, env: Envelope, held: &mut Held) {
        let Some(conn) = self.conns.get(&to) else {
            return;
        };
        match conn.tx.try_send(env) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(env)) => held.push((to, conn.tx.clone(), env)),
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    fn fail(&self, to: Peer, id: u64, from: Peer, event: Bytes, error: &Error, held: &mut Held) {
        self.deliver(to, Envelope::failure(id, from, event, error), held);
    }

    fn handles(&self, peer: Peer, event: &[u8]) -> bool {
        self.conns
            .get(&peer)
            .is_some_and(|conn| conn.handlers.contains(event))
    }

    fn ready(&mut self, env: Envelope, held: &mut Held) {
        let Peer::Worker(id) = env.from else {
            let error = Error::Forbidden {
                reason: "only a worker can be Ready".into(),
            };
            return self.fail(env.from, env.id, Peer::Master, env.event, &error, held);
        };
        if let Some(conn) = self.conns.get_mut(&env.from) {
            conn.state = PeerState::Ready;
        }
        // One Ready worker per slot: the new one takes over from the one it replaces, at once.
        let old = self.ready.insert(id.slot, id);
        if old != Some(id) {
            self.epoch += 1;
        }
        if let Some(old) = old.filter(|old| *old != id) {
            if let Some(conn) = self.conns.get_mut(&Peer::Worker(old)) {
                conn.state = PeerState::Draining;
            }
            self.tell_ready_set(old);
        }
        self.emit(HubEvent::Ready(id));
        self.deliver(
            env.from,
            Envelope::answer(
                Kind::Reply,
                env.id,
                Peer::Master,
                env.event,
                Bytes::from_static(&[0xc0]),
            ),
            held,
        );
    }

    fn broadcast(&self, env: Envelope, held: &mut Held) {
        for id in self.ready.values() {
            let peer = Peer::Worker(*id);
            if self.handles(peer, &env.event) {
                self.deliver(peer, env.clone(), held);
            }
        }
    }

    /// A Ready worker that handles `event`, taking turns; one with room in its queue if any.
    fn pick(&mut self, event: &Bytes) -> Option<Peer> {
        let turn = match self.spread.get_mut(event) {
            Some(turn) => {
                *turn = turn.wrapping_add(1);
                *turn
            }
            None => {
                self.spread.insert(event.clone(), 0);
                0
            }
        };
        let candidates = || {
            self.ready
                .values()
                .filter(|id| self.handles(Peer::Worker(**id), event))
        };
        let n = candidates().count();
        if n == 0 {
            return None;
        }
        let start = turn % n;
        let has_room = |id: &WorkerId| {
            self.conns
                .get(&Peer::Worker(*id))
                .is_some_and(|conn| conn.tx.capacity() > 0)
        };
        let preferred = candidates()
            .cycle()
            .skip(start)
            .take(n)
            .find(|id| has_room(id));
        preferred
            .or_else(|| candidates().nth(start))
            .map(|id| Peer::Worker(*id))
    }

    fn request(&mut self, env: Envelope, held: &mut Held) {
        let (from, id) = (env.from, env.id);
        let responder = match env.to {
            Target::Any => self.pick(&env.event).ok_or_else(|| Error::NoHandler {
                event: env.event_name(),
                peer: None,
            }),
            Target::Slot(slot) => match self.ready.get(&slot) {
                None => Err(Error::NoWorker { slot }),
                Some(worker) if self.handles(Peer::Worker(*worker), &env.event) => {
                    Ok(Peer::Worker(*worker))
                }
                Some(worker) => Err(Error::NoHandler {
                    event: env.event_name(),
                    peer: Some(Peer::Worker(*worker)),
                }),
            },
            Target::Master if self.handles(Peer::Master, &env.event) => Ok(Peer::Master),
            Target::Master => Err(Error::NoHandler {
                event: env.event_name(),
                peer: Some(Peer::Master),
            }),
            Target::Worker(_) if from != Peer::Master => Err(Error::Forbidden {
                reason: "only the master addresses a worker by its id".into(),
            }),
            Target::Worker(worker) if self.conns.contains_key(&Peer::Worker(worker)) => {
                Ok(Peer::Worker(worker))
            }
            Target::Worker(worker) => Err(Error::WorkerGone {
                event: env.event_name(),
                peer: Peer::Worker(worker),
            }),
            Target::All { .. } => return self.map(env, held),
            Target::Once => return self.once(env, held),
            Target::Hub => Err(Error::Malformed {
                detail: "a request addressed to nobody".into(),
            }),
        };
        match responder {
            // The caller was picked: it runs the handler itself, two frames fewer.
            Ok(responder)
                if responder == from
                    && from != Peer::Master
                    && matches!(env.to, Target::Any | Target::Slot(_)) =>
            {
                self.run_here(env, held)
            }
            Ok(responder) => self.forward(env, responder, None, held),
            Err(error) => self.fail(from, id, Peer::Master, env.event, &error, held),
        }
    }

    /// Tells the caller to run its request itself: a fan-out of one, itself.
    fn run_here(&mut self, env: Envelope, held: &mut Held) {
        let workers = env.from.worker().into_iter().collect();
        let body = Fanout {
            workers,
            run_here: true,
            epoch: 0,
        }
        .to_bytes();
        self.deliver(
            env.from,
            Envelope::answer(Kind::Fanout, env.id, Peer::Master, env.event, body),
            held,
        );
    }

    /// Sends a request on to `responder` under a Hub-wide id, remembering where the answer goes.
    fn forward(&mut self, env: Envelope, responder: Peer, once: Option<OnceKey>, held: &mut Held) {
        self.next_route += 1;
        let route = self.next_route;
        self.routes.insert(
            route,
            Route {
                requester: env.from,
                id: env.id,
                responder,
                event: env.event.clone(),
                once,
            },
        );
        self.deliver(responder, Envelope { id: route, ..env }, held);
    }

    fn map(&mut self, env: Envelope, held: &mut Held) {
        // A vector kept for every map, rather than one allocated per map.
        let mut workers = std::mem::take(&mut self.map_workers);
        workers.clear();
        workers.extend(self.ready.values().copied());
        let caller_ready = workers.iter().any(|id| Peer::Worker(*id) == env.from);
        let run_here = match env.to {
            // The caller knows this Ready set already, and whether it handles the event.
            Target::All { epoch, run_here } if epoch != 0 && epoch == self.epoch => {
                run_here && caller_ready
            }
            _ => {
                // A Ready caller that handles the event runs its own share itself: two
                // frames fewer, and the slowest leg of a map from a worker is gone.
                let run_here = caller_ready && self.handles(env.from, &env.event);
                // The caller learns first who will answer, so it knows when it has every
                // answer.
                let list = Fanout {
                    workers: workers.clone(),
                    run_here,
                    epoch: self.epoch,
                };
                self.deliver(env.from, list.frame(env.id, env.event.clone()), held);
                run_here
            }
        };
        for &worker in &workers {
            let peer = Peer::Worker(worker);
            if peer == env.from && run_here {
                continue;
            }
            if self.handles(peer, &env.event) {
                self.forward(env.clone(), peer, None, held);
            } else {
                let error = Error::NoHandler {
                    event: env.event_name(),
                    peer: Some(peer),
                };
                self.fail(env.from, env.id, peer, env.event.clone(), &error, held);
            }
        }
        self.map_workers = workers;
    }

    fn once(&mut self, env: Envelope, held: &mut Held) {
        let key = (env.event.clone(), env.key.clone());
        match self.once.entries.get_mut(&key) {
            Some(OnceEntry::Done { from, body }) => {
                let reply = Envelope::answer(Kind::Reply, env.id, *from, env.event, body.clone());
                self.deliver(env.from, reply, held);
            }
            Some(OnceEntry::Running { waiters }) => waiters.push((env.from, env.id)),
            None => match self.pick(&env.event) {
                None => {
                    let error = Error::NoHandler {
                        event: env.event_name(),
                        peer: None,
                    };
                    self.fail(env.from, env.id, Peer::Master, env.event, &error, held);
                }
                Some(responder) => {
                    self.once.entries.insert(
                        key.clone(),
                        OnceEntry::Running {
                            waiters: vec![(env.from, env.id)],
                        },
                    );
                    self.forward(env, responder, Some(key), held);
                }
            },
        }
    }

    fn answered(&mut self, env: Envelope, held: &mut Held) {
        match self.routes.get(&env.id) {
            None => return tracing::debug!(from = %env.from, "an answer nobody waits for"),
            Some(route) if route.responder != env.from => {
                return tracing::warn!(from = %env.from, "an answer to a request it was not asked: ignored");
            }
            Some(_) => {}
        }
        let Some(route) = self.routes.remove(&env.id) else {
            return;
        };
        match route.once {
            Some(key) => self.once_done(key, env, held),
            None => self.deliver(
                route.requester,
                Envelope {
                    id: route.id,
                    ..env
                },
                held,
            ),
        }
    }

    /// A `consume_once` run ended: answer every waiter; remember a success, forget a failure.
    fn once_done(&mut self, key: OnceKey, answer: Envelope, held: &mut Held) {
        let Some(OnceEntry::Running { waiters }) = self.once.entries.remove(&key) else {
            return;
        };
        if answer.kind == Kind::Reply {
            self.once.entries.insert(
                key.clone(),
                OnceEntry::Done {
                    from: answer.from,
                    body: answer.body.clone(),
                },
            );
            self.once.done.push_back(key);
            while self.once.done.len() > self.once_keys {
                if let Some(oldest) = self.once.done.pop_front() {
                    self.once.entries.remove(&oldest);
                }
            }
        }
        for (peer, id) in waiters {
            self.deliver(
                peer,
                Envelope {
                    id,
                    ..answer.clone()
                },
                held,
            );
        }
    }

    fn cancel(&mut self, from: Peer, id: u64) {
        self.routes.retain(|_, route| {
            route.once.is_some() || !(route.requester == from && route.id == id)
        });
        for entry in self.once.entries.values_mut() {
            if let OnceEntry::Running { waiters } = entry {
                waiters.retain(|waiter| *waiter != (from, id));
            }
        }
    }

    /// Worker `id` gets no more messages or shares of a `map`; `false` if it had none already.
    fn leave_ready_set(&mut self, id: WorkerId) -> bool {
        let was_ready = self.ready.get(&id.slot) == Some(&id);
        if was_ready {
            self.ready.remove(&id.slot);
            self.epoch += 1;
        }
        was_ready
    }

    /// Tells worker `id`, which has just left the Ready set but stays connected, the set as it
    /// now is, unasked: its next `map` then does not run its own share on the old list (for the
    /// Hub to drop). Best effort: with its queue full, it learns from that `map`'s list instead.
    fn tell_ready_set(&self, id: WorkerId) {
        let Some(conn) = self.conns.get(&Peer::Worker(id)) else {
            return;
        };
        let list = Fanout {
            workers: self.ready.values().copied().collect(),
            run_here: false,
            epoch: self.epoch,
        };
        let _ = conn.tx.try_send(list.frame(0, Bytes::new()));
    }

    /// Drops `peer` from routing: what it was asked fails with `WorkerGone`, what it asked is
    /// forgotten.
    fn forget(&mut self, peer: Peer, held: &mut Held) {
        if let Peer::Worker(id) = peer {
            self.leave_ready_set(id);
        }
        let owed: Vec<u64> = self
            .routes
            .iter()
            .filter(|(_, route)| {
                route.responder == peer || (route.requester == peer && route.once.is_none())
            })
            .map(|(route, _)| *route)
            .collect();
        for route_id in owed {
            let Some(route) = self.routes.remove(&route_id) else {
                continue;
            };
            if route.responder != peer {
                continue;
            }
            let error = Error::WorkerGone {
                event: String::from_utf8_lossy(&route.event).into(),
                peer,
            };
            let failure = Envelope::failure(route.id, peer, route.event.clone(), &error);
            match route.once {
                Some(key) => self.once_done(key, failure, held),
                None => self.deliver(route.requester, failure, held),
            }
        }
        for entry in self.once.entries.values_mut() {
            if let OnceEntry::Running { waiters } = entry {
                waiters.retain(|(waiter, _)| *waiter != peer);
            }
        }
    }
}
