//! The typed API every process holds: handlers in, calls out.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use rustc_hash::FxHashMap as HashMap;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::time::Instant;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use crate::busy::{self, BusyPoll};
use crate::transport::{self, Outbox};
use crate::wire::{Envelope, Fanout, Kind, Target, ENVELOPE_OVERHEAD};
use crate::{BoxFuture, Config, Dispatch, Error, Event, Peer, Result, WorkerId};

/// A handler with its types erased: MessagePack in, MessagePack out.
type Erased = Arc<dyn Fn(Bytes, Peer) -> BoxFuture<'static, Result<Bytes>> + Send + Sync>;

/// The same handler typed, for the calls a process runs itself (its own share of a `map`, a
/// `consume` the Hub gave back to it): the event and the reply are never encoded.
type Typed<E> = Arc<dyn Fn(Peer, E) -> BoxFuture<'static, <E as Event>::Reply> + Send + Sync>;

/// A registered handler: erased for frames, typed (as `Typed<E>`) for local runs.
#[derive(Clone)]
struct Handler {
    erased: Erased,
    typed: Option<Arc<dyn std::any::Any + Send + Sync>>,
}

/// How many frames a Messenger dispatches from what it has read before it lets its other tasks
/// run. Without a pause, 64 answers read at once wake 64 calls whose 64 next requests leave in
/// one write after the last is dispatched: the whole batch travels from process to process as
/// one convoy, and each process waits while the others work. Pausing every 32 lets the first
/// requests leave while the rest are dispatched (measured in `bench/ANALYSIS.md`).
const READ_RUN: usize = 32;

type PanicHook = Arc<dyn Fn(&str) + Send + Sync>;

/// The heartbeat every Messenger answers without announcing it.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct Ping;

impl Event for Ping {
    const NAME: &'static str = "multiprocess.ping";
    type Reply = ();
}

/// A process's end of the messenger: register handlers with [`on`](Messenger::on), call other
/// processes with [`broadcast`](Messenger::broadcast), [`consume`](Messenger::consume),
/// [`map`](Messenger::map) and the rest. Cheap to clone; every clone is the same end.
///
/// Every call has a deadline ([`Config::request_timeout`], or [`Messenger::timeout`] for one
/// handle) and fails with an [`Error`] rather than hang. Calls may run concurrently; each has
/// its own id, so replies never mix.
///
/// Payloads are MessagePack with field names (structs as maps), so a field added with
/// `#[serde(default)]` keeps old and new workers talking during a rolling reload.
#[derive(Clone)]
pub struct Messenger {
    shared: Arc<Shared>,
    timeout: Duration,
}

struct Shared {
    peer: Peer,
    config: Config,
    out: mpsc::UnboundedSender<Outgoing>,
    /// Bounds the frames queued by calls: a caller waits for room (backpressure).
    room: Arc<Semaphore>,
    handlers: RwLock<HashMap<Bytes, Arc<[Handler]>>>,
    pending: Mutex<HashMap<u64, Waiter>>,
    next_id: AtomicU64,
    closed: CancellationToken,
    broadcasts: mpsc::Sender<Envelope>,
    panic_hook: RwLock<Option<PanicHook>>,
    /// Polls while calls are pending and answers come in.
    busy: BusyPoll,
    /// The Ready set as the Hub last listed it.
    ready_set: Mutex<ReadySet>,
}

/// The Ready set as a [`Fanout`] listed it. A `map` made while it is still the Hub's needs no
/// fan-out frame: the caller names its `epoch`, and only a changed set is sent again.
#[derive(Clone, Default)]
struct ReadySet {
    /// 0: not told yet.
    epoch: u64,
    workers: Arc<[WorkerId]>,
}

/// A `map`'s results as its answers come, against who was asked.
struct Gathering<R> {
    workers: Arc<[WorkerId]>,
    /// This end is one of `workers` and runs its own share.
    run_here: bool,
    results: Vec<Option<Result<R>>>,
    missing: usize,
}

impl<R> Gathering<R> {
    fn new(workers: Arc<[WorkerId]>, run_here: bool) -> Gathering<R> {
        Gathering {
            results: workers.iter().map(|_| None).collect(),
            missing: workers.len(),
            workers,
            run_here,
        }
    }

    fn record(&mut self, from: Peer, result: Result<R>) {
        let Some(index) = self.workers.iter().position(|id| Peer::Worker(*id) == from) else {
            tracing::warn!(from = %from, "a map answer from a worker that was not asked");
            return;
        };
        if self.results[index].is_none() {
            self.results[index] = Some(result);
            self.missing -= 1;
        }
    }

    /// Switches to the list the Hub sent (the Ready set changed since this call's guess),
    /// keeping this end's own result if it is still asked to run its share.
    fn adopt(&mut self, fanout: Fanout, me: Peer) {
        let mut next = Gathering::new(fanout.workers.into(), fanout.run_here);
        if next.run_here {
            let own = self.workers.iter().position(|id| Peer::Worker(*id) == me);
            if let Some(result) = own.and_then(|index| self.results[index].take()) {
                next.record(me, result);
            }
        }
        *self = next;
    }
}

/// A frame on its way out; `counted` frames hold a unit of `room` until written.
pub(crate) struct Outgoing {
    env: Envelope,
    counted: bool,
}

enum Waiter {
    One(oneshot::Sender<Envelope>),
    Many(Answers),
}

/// The answers to a `map` as they come, kept in the pending table itself: a channel, or even a
/// shared list, allocated per call cost more than the rest of the call's bookkeeping.
#[derive(Default)]
struct Answers {
    list: Vec<Envelope>,
    /// The caller's waker while it waits.
    waker: Option<std::task::Waker>,
}

impl Drop for Answers {
    /// Forgotten (the connection closed): the waiting caller learns no more answers can come.
    fn drop(&mut self) {
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }
}

/// Runs `future` unless `deadline` passes first.
async fn within<F: Future>(
    deadline: std::pin::Pin<&mut tokio::time::Sleep>,
    future: F,
) -> Option<F::Output> {
    tokio::select! {
        biased;
        out = future => Some(out),
        () = deadline => None,
    }
}

/// The receiving side of a Messenger's outbound queue.
pub(crate) struct OutQueue {
    rx: mpsc::UnboundedReceiver<Outgoing>,
    room: Arc<Semaphore>,
}

impl OutQueue {
    /// Takes the next frame (for in-process links), giving its room back.
    pub(crate) async fn recv(&mut self) -> Option<Envelope> {
        let out = self.rx.recv().await?;
        if out.counted {
            self.room.add_permits(1);
        }
        Some(out.env)
    }
}

impl Outbox for OutQueue {
    type Item = Outgoing;

    async fn recv_batch(&mut self, batch: &mut Vec<Outgoing>, limit: usize) -> usize {
        let before = batch.len();
        let n = self.rx.recv_many(batch, limit).await;
        let counted = batch[before..].iter().filter(|out| out.counted).count();
        self.room.add_permits(counted);
        n
    }

    fn frame(item: &Outgoing) -> &Envelope {
        &item.env
    }
}

impl Messenger {
    /// Connects to a Hub over `io` (a worker's end of its socket) and checks that both ends
    /// speak the same protocol version.
    ///
    /// Must be called inside a tokio runtime: the connection's tasks are spawned on it.
    pub async fn connect<IO>(io: IO, config: Config) -> Result<Messenger>
    where
        IO: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (read, mut write) = tokio::io::split(io);
        let mut codec = transport::codec(&config);
        transport::write_one(&mut write, &mut codec, &transport::hello(None)).await?;
        let mut reader = FramedRead::with_capacity(read, codec.clone(), 64 * 1024);
        let hello = transport::read_hello(&mut reader, &config).await?;
        let peer = hello.peer.ok_or_else(|| Error::Malformed {
            detail: "the hub's hello names no peer".into(),
        })?;

        let (messenger, outbox) = Messenger::start(peer, config);
        let stop = messenger.shared.closed.clone();
        tokio::spawn(transport::write_frames(write, outbox, codec, stop.clone()));
        let shared = messenger.shared.clone();
        tokio::spawn(async move {
            // Made once: a cancellation future registers with the token each time it is made.
            let stopped = stop.cancelled();
            tokio::pin!(stopped);
            // Frames dispatched since the read buffer was last empty or the last pause.
            let mut run = 0;
            let reason = loop {
                if reader.read_buffer().is_empty() {
                    run = 0;
                } else if run >= READ_RUN {
                    // The calls just answered send their next frames before the rest are
                    // dispatched.
                    run = 0;
                    tokio::task::yield_now().await;
                }
                run += 1;
                let frame = tokio::select! {
                    biased;
                    frame = reader.next() => frame,
                    () = &mut stopped => break "closed".to_string(),
                };
                match frame {
                    Some(Ok(env)) => {
                        // Only a broadcast may wait (for room in its lane): only then is
                        // there a future.
                        if let Some(broadcast) = shared.dispatch_now(env) {
                            shared.queue_broadcast(broadcast).await;
                        }
                    }
                    Some(Err(err)) => break err.to_string(),
                    None => break "the hub closed the connection".to_string(),
                }
            };
            tracing::debug!(peer = %shared.peer, "messenger connection ended: {reason}");
            shared.shut();
        });
        Ok(messenger)
    }

    /// A Messenger for `peer` whose frames leave through the returned queue; the caller feeds
    /// incoming frames to [`Messenger::dispatch`].
    pub(crate) fn start(peer: Peer, config: Config) -> (Messenger, OutQueue) {
        let (out, rx) = mpsc::unbounded_channel();
        let room = Arc::new(Semaphore::new(config.queue_frames));
        let (broadcasts, lane) = mpsc::channel(config.queue_frames);
        let timeout = config.request_timeout;
        let shared = Arc::new(Shared {
            peer,
            config,
            out,
            room: room.clone(),
            handlers: RwLock::default(),
            pending: Mutex::default(),
            next_id: AtomicU64::new(1),
            closed: CancellationToken::new(),
            broadcasts,
            panic_hook: RwLock::default(),
            busy: BusyPoll::default(),
            ready_set: Mutex::default(),
        });
        tokio::spawn(run_broadcasts(Arc::downgrade(&shared), lane));
        if !shared.config.busy_poll.is_zero() {
            busy::spawn(
                &shared,
                |shared| &shared.busy,
                |shared| !shared.pending_is_empty(),
                shared.config.busy_poll,
            );
        }
        let messenger = Messenger { shared, timeout };
        messenger.register::<Ping>(
            false,
            Handler {
                erased: Arc::new(|_, _| Box::pin(async { Ok(Bytes::from_static(&[0xc0])) })),
                typed: None,
            },
        );
        (messenger, OutQueue { rx, room })
    }

    /// Hands an incoming frame to this Messenger.
    pub(crate) async fn dispatch(&self, env: Envelope) {
        self.shared.dispatch(env).await
    }

    /// Who this end is, as the Hub named it.
    pub fn id(&self) -> Peer {
        self.shared.peer
    }

    /// The configuration this Messenger was made with.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// A handle to the same Messenger whose calls wait at most `timeout` for their replies.
    pub fn timeout(&self, timeout: Duration) -> Messenger {
        Messenger {
            shared: self.shared.clone(),
            timeout,
        }
    }

    /// Registers a handler for `E`. Every handler of an event runs for a `broadcast`; the first
    /// one registered answers `consume`, `map` and requests.
    ///
    /// ```
    /// # use messenger::{Event, Messenger};
    /// # use serde::{Deserialize, Serialize};
    /// #[derive(Serialize, Deserialize, Event)]
    /// #[event(reply = u32)]
    /// struct Pid;
    ///
    /// fn handlers(messenger: &Messenger) {
    ///     messenger.on(|_: Pid| async { std::process::id() });
    /// }
    /// ```
    pub fn on<E, F, Fut>(&self, handler: F)
    where
        E: Event,
        F: Fn(E) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = E::Reply> + Send + 'static,
    {
        self.on_from(move |_: Peer, event: E| handler(event))
    }

    /// Registers a handler for `E` that also learns who sent the event. The sender is stamped by
    /// the Hub from the connection it came on, so it cannot be forged.
    pub fn on_from<E, F, Fut>(&self, handler: F)
    where
        E: Event,
        F: Fn(Peer, E) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = E::Reply> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let typed: Typed<E> = {
            let handler = handler.clone();
            Arc::new(move |from: Peer, event: E| Box::pin(handler(from, event)))
        };
        let erased: Erased =
            Arc::new(
                move |body: Bytes, from: Peer| match decode::<E>(E::NAME, &body) {
                    Ok(event) => {
                        let reply = handler(from, event);
                        Box::pin(async move { encode(E::NAME, &reply.await) })
                    }
                    Err(err) => Box::pin(std::future::ready(Err(err))),
                },
            );
        self.register::<E>(
            true,
            Handler {
                erased,
                typed: Some(Arc::new(typed)),
            },
        );
    }

    /// Registers one object that handles every case of an enum event: the
    /// `<Enum>Handler` trait that `#[derive(Event)]` writes.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use messenger::{async_trait, Event, Messenger};
    /// # use serde::{Deserialize, Serialize};
    /// #[derive(Serialize, Deserialize, Event)]
    /// #[event(reply = String)]
    /// enum Admin {
    ///     Echo(String),
    ///     Flush,
    /// }
    ///
    /// struct Service;
    ///
    /// #[async_trait]
    /// impl AdminHandler for Service {
    ///     async fn echo(&self, text: String) -> String {
    ///         text
    ///     }
    ///     async fn flush(&self) -> String {
    ///         "flushed".into()
    ///     }
    /// }
    ///
    /// fn handlers(messenger: &Messenger) {
    ///     messenger.serve::<Admin>(Arc::new(Service));
    /// }
    /// ```
    pub fn serve<E: Dispatch>(&self, handler: Arc<E::Handler>) {
        self.on(move |event: E| event.dispatch(handler.clone()));
    }

    fn register<E: Event>(&self, announce: bool, handler: Handler) {
        let name = Bytes::from_static(E::NAME.as_bytes());
        let first = {
            let mut handlers = self
                .shared
                .handlers
                .write()
                .unwrap_or_else(|e| e.into_inner());
            let entry = handlers
                .entry(name.clone())
                .or_insert_with(|| Arc::from(Vec::new()));
            let first = entry.is_empty();
            let mut list = entry.to_vec();
            list.push(handler);
            *entry = Arc::from(list);
            first
        };
        if announce && first {
            // Uncounted, so it never waits: it must be queued before a later `ready()`.
            let _ = self.shared.out.send(Outgoing {
                env: Envelope::new(Kind::Announce, E::NAME, Bytes::new()),
                counted: false,
            });
        }
    }

    /// Calls `hook` with a description whenever a handler panics (the caller of that call gets
    /// [`Error::HandlerPanicked`]; the process goes on). A cluster uses it to report the worker
    /// unhealthy.
    pub fn set_panic_hook(&self, hook: impl Fn(&str) + Send + Sync + 'static) {
        *self
            .shared
            .panic_hook
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(hook));
    }

    /// Tells the Hub that this worker is Ready: from now on it gets messages and counts for
    /// `map`. Returns once the Hub has it, so handlers registered before are known by then.
    pub async fn ready(&self) -> Result<()> {
        let env = Envelope::new(Kind::Ready, "ready", Bytes::new());
        let answer = self.ask(env).await?;
        decode_answer::<()>("ready", &answer)
    }

    /// Sends `event` to every Ready worker, this one included when it is Ready; every handler of
    /// the event runs there. Returns once the frame is queued for the Hub: frames from one
    /// sender keep their order. Workers that have no handler for it do not get it.
    pub async fn broadcast<E: Event>(&self, event: E) -> Result<()> {
        let env = self.envelope::<E>(Kind::Broadcast, Target::Hub, Bytes::new(), &event)?;
        self.shared.send(env).await
    }

    /// Runs `event` on exactly one Ready worker that handles it, spreading calls evenly, and
    /// returns its reply. [`Error::NoHandler`] if no Ready worker handles it.
    pub async fn consume<E: Event>(&self, event: E) -> Result<E::Reply> {
        self.call(Target::Any, Bytes::new(), event).await
    }

    /// Runs `event` on one worker once per `key` for the master's lifetime, however many workers
    /// ask: every caller, also one that asks while it runs, gets the same reply. A failed run is
    /// not remembered, so the next caller tries again. The Hub remembers
    /// [`Config::once_keys`] keys per event, forgetting the oldest first.
    pub async fn consume_once<E: Event>(&self, key: &str, event: E) -> Result<E::Reply> {
        self.call(Target::Once, Bytes::copy_from_slice(key.as_bytes()), event)
            .await
    }

    /// Runs `event` on the Ready worker of `slot` and returns its reply.
    pub async fn request<E: Event>(&self, slot: u32, event: E) -> Result<E::Reply> {
        self.call(Target::Slot(slot), Bytes::new(), event).await
    }

    /// Runs `event` on the master's handler and returns its reply.
    pub async fn request_master<E: Event>(&self, event: E) -> Result<E::Reply> {
        self.call(Target::Master, Bytes::new(), event).await
    }

    /// Runs `event` on the exact worker `id`, whatever its state. Only the master may.
    pub(crate) async fn request_worker<E: Event>(
        &self,
        id: WorkerId,
        event: E,
    ) -> Result<E::Reply> {
        self.call(Target::Worker(id), Bytes::new(), event).await
    }

    /// Runs `event` on every Ready worker at the time of the call (its first handler) and
    /// returns the replies in slot order. Fails with the first worker's error, if any: use
    /// [`map_each`](Messenger::map_each) to keep the others' results.
    ///
    /// "At the time of the call" is when the Hub routes it. A calling worker that is Ready runs
    /// its own share at once, from the Ready set it was last told of; if it left the set while
    /// its call was on the way (the Hub tells a worker it left, so only then), its share has
    /// run but is left out of the result.
    pub async fn map<E: Event>(&self, event: E) -> Result<Vec<E::Reply>> {
        let (workers, results) = self.gather(event).await?;
        self.per_worker::<E>(&workers, results)
            .map(|(_, result)| result)
            .collect()
    }

    /// Like [`map`](Messenger::map), but every worker's own result, with its slot: a worker that
    /// has no handler, dies or does not answer in time fails its entry alone.
    pub async fn map_each<E: Event>(&self, event: E) -> Result<Vec<(u32, Result<E::Reply>)>> {
        let (workers, results) = self.gather(event).await?;
        Ok(self.per_worker::<E>(&workers, results).collect())
    }

    /// A `map`'s result for each worker asked, with its slot: an answer that never came is
    /// [`Error::Closed`] once the connection ended, else a timeout.
    fn per_worker<'a, E: Event>(
        &'a self,
        workers: &'a [WorkerId],
        results: Vec<Option<Result<E::Reply>>>,
    ) -> impl Iterator<Item = (u32, Result<E::Reply>)> + 'a {
        let closed = self.shared.closed.is_cancelled();
        workers.iter().zip(results).map(move |(id, result)| {
            let result = result.unwrap_or_else(|| {
                Err(if closed {
                    Error::Closed
                } else {
                    self.timed_out(E::NAME, Some(Peer::Worker(*id)))
                })
            });
            (id.slot, result)
        })
    }

    /// Runs a `map`: who was asked, in slot order, and each one's result if it came.
    #[allow(clippy::type_complexity)]
    async fn gather<E: Event>(
        &self,
        event: E,
    ) -> Result<(Arc<[WorkerId]>, Vec<Option<Result<E::Reply>>>)> {
        let me = self.shared.peer;
        // Guess who answers from the Ready set last listed: if the Hub's is the same it sends
        // no list, and this end runs its own share at once. Only when an answer is to come,
        // since the first frame for the call is what tells a right guess from a wrong one.
        let handles = self.shared.handles(E::NAME.as_bytes());
        let guess = self.shared.ready_set().and_then(|set| {
            let run_here = handles && me.worker().is_some_and(|id| set.workers.contains(&id));
            (set.workers.len() > usize::from(run_here)).then_some((set, run_here))
        });
        let (epoch, run_here) = guess
            .as_ref()
            .map_or((0, false), |(set, run_here)| (set.epoch, *run_here));
        let to = Target::All { epoch, run_here };
        let env = self.envelope::<E>(Kind::Request, to, Bytes::new(), &event)?;
        // One timer for the whole call, however many answers it waits for.
        let deadline = tokio::time::sleep(self.timeout);
        tokio::pin!(deadline);
        let call = self.shared.begin(Waiter::Many(Answers::default()));
        let request = Envelope { id: call.id, ..env };
        within(deadline.as_mut(), self.shared.send(request))
            .await
            .ok_or_else(|| self.timed_out(E::NAME, None))??;

        let mut gathering: Option<Gathering<E::Reply>> =
            guess.map(|(set, run_here)| Gathering::new(set.workers, run_here));
        let mut event = Some(event);
        // Whether any frame for the call came, confirming or correcting the guess.
        let mut heard = false;
        loop {
            if let Some(gathering) = &mut gathering {
                // Taken only to be run: a corrected list may yet ask for this share.
                if let Some(event) = event.take_if(|_| gathering.run_here) {
                    // This worker's own share, run here. Out of time, its entry fails; the
                    // answers already in are still taken below (the wait favours them).
                    let result = within(deadline.as_mut(), self.shared.run_here(event)).await;
                    if let Some(result) = result {
                        gathering.record(me, result);
                    }
                }
                if gathering.missing == 0 {
                    break;
                }
            }
            let answers = match within(deadline.as_mut(), self.shared.answers(call.id)).await {
                Some(answers) if !answers.is_empty() => answers,
                // Closed (no more answers can come) or out of time.
                _ => break,
            };
            heard = true;
            for answer in answers {
                match (&mut gathering, answer.kind) {
                    // The Hub refused the call (a worker's failure names the worker).
                    (_, Kind::Failure) if answer.from == Peer::Master => {
                        return Err(decode_failure(&answer))
                    }
                    (Some(gathering), Kind::Fanout) => {
                        gathering.adopt(Fanout::from_bytes(&answer.body)?, me)
                    }
                    (None, Kind::Fanout) => {
                        let Fanout {
                            workers, run_here, ..
                        } = Fanout::from_bytes(&answer.body)?;
                        gathering = Some(Gathering::new(workers.into(), run_here));
                    }
                    (Some(gathering), _) => {
                        gathering.record(answer.from, decode_answer::<E::Reply>(E::NAME, &answer))
                    }
                    (None, _) => return Err(decode_failure(&answer)),
                }
            }
        }
        call.finish();
        let closed = self.shared.closed.is_cancelled();
        match gathering {
            // Out of time with an unconfirmed guess: the entries of the set last listed fail.
            Some(gathering) if heard || !closed => Ok((gathering.workers, gathering.results)),
            // The connection ended before the Hub said anything: as without a guess.
            _ if closed => Err(Error::Closed),
            _ => Err(self.timed_out(E::NAME, None)),
        }
    }

    /// Resolves when the connection to the Hub has ended (the master went away, or
    /// [`close`](Messenger::close) was called). Pending calls have failed with
    /// [`Error::Closed`] by then.
    pub async fn closed(&self) {
        self.shared.closed.cancelled().await
    }

    /// Whether the connection to the Hub has ended.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.is_cancelled()
    }

    /// Closes the connection to the Hub: pending calls fail with [`Error::Closed`], and the
    /// Hub treats this end as gone.
    pub fn close(&self) {
        self.shared.shut();
    }

    async fn call<E: Event>(&self, to: Target, key: Bytes, event: E) -> Result<E::Reply> {
        let env = self.envelope::<E>(Kind::Request, to, key, &event)?;
        let started = Instant::now();
        let answer = self.ask(env).await?;
        if answer.kind != Kind::Fanout {
            return decode_answer::<E::Reply>(E::NAME, &answer);
        }
        // The Hub picked this very worker: run the handler here, within what is left of the
        // deadline.
        tokio::time::timeout_at(started + self.timeout, self.shared.run_here(event))
            .await
            .map_err(|_| self.timed_out(E::NAME, None))?
    }

    /// Sends a request and waits for its one answer, within the deadline.
    async fn ask(&self, env: Envelope) -> Result<Envelope> {
        let name = env.event.clone();
        let (tx, rx) = oneshot::channel();
        let call = self.shared.begin(Waiter::One(tx));
        // Queued here when there is room: the frame is not kept in this future.
        let sent = self.shared.send(Envelope { id: call.id, ..env });
        let answer = tokio::time::timeout(self.timeout, async {
            sent.await?;
            rx.await.map_err(|_| Error::Closed)
        })
        .await;
        match answer {
            Ok(answer) => {
                call.finish();
                answer
            }
            Err(_) => Err(Error::Timeout {
                event: String::from_utf8_lossy(&name).into(),
                after: self.timeout,
                peer: None,
            }),
        }
    }

    fn timed_out(&self, event: &str, peer: Option<Peer>) -> Error {
        Error::Timeout {
            event: event.into(),
            after: self.timeout,
            peer,
        }
    }

    /// Encodes `event` into an envelope, refusing one that would be over the maximum frame.
    fn envelope<E: Event>(
        &self,
        kind: Kind,
        to: Target,
        key: Bytes,
        event: &E,
    ) -> Result<Envelope> {
        let body = encode(E::NAME, event)?;
        let env = Envelope {
            kind,
            id: 0,
            from: self.shared.peer,
            to,
            event: Bytes::from_static(E::NAME.as_bytes()),
            key,
            body,
        };
        self.shared.check_size(&env)?;
        Ok(env)
    }
}

impl std::fmt::Debug for Messenger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Messenger")
            .field("peer", &self.shared.peer)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// A pending call: forgets its waiter when dropped, and tells the Hub the caller gave up
/// unless the call finished (so a timed-out or abandoned call leaves nothing behind).
struct Call<'a> {
    shared: &'a Shared,
    id: u64,
    done: bool,
}

impl Call<'_> {
    fn finish(mut self) {
        self.done = true;
    }
}

impl Drop for Call<'_> {
    fn drop(&mut self) {
        self.shared
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
        if !self.done {
            let cancel = Envelope {
                id: self.id,
                ..Envelope::new(Kind::Cancel, "", Bytes::new())
            };
            let _ = self.shared.out.send(Outgoing {
                env: cancel,
                counted: false,
            });
        }
    }
}

impl Shared {
    fn begin(&self, waiter: Waiter) -> Call<'_> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, waiter);
        self.busy.progress();
        Call {
            shared: self,
            id,
            done: false,
        }
    }

    /// Queues a frame for the Hub, waiting while the queue is full. Only the wait is a future
    /// of its own (boxed): a call's future stays small when there is room, as there mostly is.
    fn send(&self, env: Envelope) -> impl Future<Output = Result<()>> + Send + '_ {
        use futures_util::future::{ready, Either};
        use tokio::sync::TryAcquireError;
        if self.closed.is_cancelled() {
            return Either::Left(ready(Err(Error::Closed)));
        }
        match self.room.try_acquire() {
            Ok(permit) => {
                permit.forget();
                Either::Left(ready(self.queue(env)))
            }
            Err(TryAcquireError::Closed) => Either::Left(ready(Err(Error::Closed))),
            Err(TryAcquireError::NoPermits) => Either::Right(Box::pin(async move {
                let permit = self.room.acquire().await.map_err(|_| Error::Closed)?;
                permit.forget();
                self.queue(env)
            })),
        }
    }

    /// Queues a frame that holds a unit of `room`.
    fn queue(&self, env: Envelope) -> Result<()> {
        self.out
            .send(Outgoing { env, counted: true })
            .map_err(|_| Error::Closed)
    }

    fn check_size(&self, env: &Envelope) -> Result<()> {
        let size = env.payload_len() + ENVELOPE_OVERHEAD;
        if size > self.config.max_frame {
            return Err(Error::FrameTooLarge {
                size,
                max: self.config.max_frame,
            });
        }
        Ok(())
    }

    fn shut(&self) {
        self.closed.cancel();
        self.room.close();
        // Dropping the waiters fails every pending call with `Closed`.
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    async fn dispatch(self: &Arc<Self>, env: Envelope) {
        if let Some(broadcast) = self.dispatch_now(env) {
            self.queue_broadcast(broadcast).await;
        }
    }

    /// Dispatches a frame without waiting; a broadcast is handed back, for
    /// [`queue_broadcast`](Shared::queue_broadcast).
    fn dispatch_now(self: &Arc<Self>, env: Envelope) -> Option<Envelope> {
        match env.kind {
            Kind::Reply | Kind::Failure | Kind::Fanout => self.answer(env),
            Kind::Request => self.handle_request(env),
            Kind::Broadcast => return Some(env),
            Kind::Hello | Kind::Announce | Kind::Ready | Kind::Cancel => {
                tracing::debug!(kind = ?env.kind, "unexpected frame ignored");
            }
        }
        None
    }

    /// Bounded: when broadcast handlers fall behind, reading waits (backpressure to the Hub).
    async fn queue_broadcast(&self, env: Envelope) {
        let _ = self.broadcasts.send(env).await;
    }

    fn pending_is_empty(&self) -> bool {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    fn answer(&self, env: Envelope) {
        self.busy.progress();
        // A list of the Ready set (addressed to all, unlike a `consume` given back to its
        // caller), kept for the next maps; id 0: sent unasked, to a worker that left the set.
        if env.kind == Kind::Fanout && matches!(env.to, Target::All { .. }) {
            self.learn(&env);
            if env.id == 0 {
                return;
            }
        }
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        match pending.get_mut(&env.id) {
            Some(Waiter::Many(answers)) => {
                answers.list.push(env);
                let waker = answers.waker.take();
                drop(pending);
                if let Some(waker) = waker {
                    waker.wake();
                }
            }
            Some(Waiter::One(_)) => {
                if let Some(Waiter::One(tx)) = pending.remove(&env.id) {
                    let _ = tx.send(env);
                }
            }
            None => tracing::debug!(id = env.id, "an answer for a call that gave up"),
        }
    }

    /// Keeps the Ready set a fan-out list names, for the next `map`s. Read as the frame comes,
    /// so a later call never guesses from an older set.
    fn learn(&self, fanout: &Envelope) {
        // One that does not decode fails its own call.
        let Ok(Fanout { workers, epoch, .. }) = Fanout::from_bytes(&fanout.body) else {
            return;
        };
        let mut known = self.ready_set.lock().unwrap_or_else(|e| e.into_inner());
        if epoch > known.epoch {
            *known = ReadySet {
                epoch,
                workers: workers.into(),
            };
        }
    }

    /// The Ready set last listed, if any.
    fn ready_set(&self) -> Option<ReadySet> {
        let known = self.ready_set.lock().unwrap_or_else(|e| e.into_inner());
        (known.epoch != 0).then(|| known.clone())
    }

    fn handles(&self, event: &[u8]) -> bool {
        let handlers = self.handlers.read().unwrap_or_else(|e| e.into_inner());
        handlers.get(event).is_some_and(|list| !list.is_empty())
    }

    /// The answers to `map` call `id` that came since the last look; empty once no more can
    /// come (the connection closed).
    async fn answers(&self, id: u64) -> Vec<Envelope> {
        std::future::poll_fn(|cx| {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            let Some(Waiter::Many(answers)) = pending.get_mut(&id) else {
                return Poll::Ready(Vec::new());
            };
            if answers.list.is_empty() {
                answers.waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
            answers.waker = None;
            Poll::Ready(std::mem::take(&mut answers.list))
        })
        .await
    }

    fn first_handler(&self, event: &[u8]) -> Option<Handler> {
        let handlers = self.handlers.read().unwrap_or_else(|e| e.into_inner());
        handlers.get(event).and_then(|list| list.first().cloned())
    }

    fn all_handlers(&self, event: &[u8]) -> Option<Arc<[Handler]>> {
        self.handlers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(event)
            .cloned()
    }

    /// Answers a request. The handler's future (boxed already, by its erased closure) is
    /// polled once right here: most answer at once (a lookup, a counter) and then no task is
    /// spawned, which saves a task and a wake-up per call; one that waits goes on in a task of
    /// its own.
    fn handle_request(self: &Arc<Self>, env: Envelope) {
        let Some(handler) = self.first_handler(&env.event) else {
            let error = Error::NoHandler {
                event: env.event_name(),
                peer: Some(self.peer),
            };
            return self.reply(self.answer_for(&env, Err(error)));
        };
        // Making the future and its first poll, under one guard: `Err` is a future that waits.
        let started = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let mut future = (handler.erased)(env.body.clone(), env.from);
            future.as_mut().now_or_never().ok_or(future)
        }));
        match started {
            Ok(Ok(result)) => self.reply(self.answer_for(&env, result)),
            Ok(Err(future)) => {
                let shared = self.clone();
                tokio::spawn(async move {
                    let result = AssertUnwindSafe(future)
                        .catch_unwind()
                        .await
                        .unwrap_or_else(|panic| Err(shared.panicked(&env.event, panic)));
                    let reply = shared.answer_for(&env, result);
                    shared.send(reply).await
                });
            }
            Err(panic) => {
                let error = self.panicked(&env.event, panic);
                self.reply(self.answer_for(&env, Err(error)))
            }
        }
    }

    /// Queues a reply, in a task if the queue is full (a reader never waits).
    fn reply(self: &Arc<Self>, reply: Envelope) {
        match self.room.try_acquire() {
            Ok(permit) => {
                permit.forget();
                let _ = self.queue(reply);
            }
            Err(_) => {
                let shared = self.clone();
                tokio::spawn(async move { shared.send(reply).await });
            }
        }
    }

    /// The reply (or failure) to `request` for a handler's result.
    fn answer_for(&self, request: &Envelope, result: Result<Bytes>) -> Envelope {
        let event = request.event.clone();
        let reply = result.and_then(|body| {
            let reply = Envelope::answer(Kind::Reply, request.id, self.peer, event.clone(), body);
            self.check_size(&reply).map(|()| reply)
        });
        reply.unwrap_or_else(|err| Envelope::failure(request.id, self.peer, event, &err))
    }

    /// Runs the first handler of `E` here, on `event` as it is: no encoding either way (the
    /// wire path if the handler under that name is of another type).
    async fn run_here<E: Event>(&self, event: E) -> Result<E::Reply> {
        let name = E::NAME.as_bytes();
        let Some(handler) = self.first_handler(name) else {
            return Err(Error::NoHandler {
                event: E::NAME.into(),
                peer: Some(self.peer),
            });
        };
        match handler
            .typed
            .as_ref()
            .and_then(|t| t.downcast_ref::<Typed<E>>())
        {
            Some(typed) => {
                let start = || {
                    let reply = typed(self.peer, event);
                    async move { Ok(reply.await) }
                };
                self.guarded(name, start).await
            }
            // Boxed: rare, and it would make every call's future larger.
            None => {
                Box::pin(async move {
                    let body = encode(E::NAME, &event)?;
                    let request = Envelope {
                        from: self.peer,
                        ..Envelope::new(Kind::Request, E::NAME, body)
                    };
                    let reply = self.run(&handler.erased, &request).await?;
                    decode(E::NAME, &reply)
                })
                .await
            }
        }
    }

    /// Runs one handler on a frame, turning a panic into an error (and a call of the panic
    /// hook).
    async fn run(&self, handler: &Erased, env: &Envelope) -> Result<Bytes> {
        self.guarded(&env.event, || handler(env.body.clone(), env.from))
            .await
    }

    /// Runs the future `start` makes, turning a panic (in `start` or in the future) into
    /// [`Error::HandlerPanicked`] and a call of the panic hook.
    async fn guarded<T, F>(&self, event: &[u8], start: impl FnOnce() -> F) -> Result<T>
    where
        F: Future<Output = Result<T>>,
    {
        let started = std::panic::catch_unwind(AssertUnwindSafe(start));
        let result = match started {
            Ok(future) => AssertUnwindSafe(future).catch_unwind().await,
            Err(panic) => Err(panic),
        };
        result.unwrap_or_else(|panic| Err(self.panicked(event, panic)))
    }

    /// The error for a handler of `event` that panicked; logs it and calls the panic hook.
    fn panicked(&self, event: &[u8], panic: Box<dyn std::any::Any + Send>) -> Error {
        let message = panic_message(&*panic);
        let event = String::from_utf8_lossy(event).into_owned();
        tracing::error!(event, "handler panicked: {message}");
        let hook = self
            .panic_hook
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(hook) = hook {
            hook(&format!("the handler of `{event}` panicked: {message}"));
        }
        Error::HandlerPanicked { event, message }
    }
}

/// Runs broadcast handlers one frame at a time, in arrival order, so that each sender's order
/// is kept. Stops when the Messenger is gone.
async fn run_broadcasts(shared: std::sync::Weak<Shared>, mut lane: mpsc::Receiver<Envelope>) {
    while let Some(env) = lane.recv().await {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let Some(handlers) = shared.all_handlers(&env.event) else {
            tracing::debug!(event = %env.event_name(), "a broadcast with no handler here");
            continue;
        };
        for handler in handlers.iter() {
            if let Err(err) = shared.run(&handler.erased, &env).await {
                // The sender does not wait for broadcast results: say it here.
                tracing::warn!(event = %env.event_name(), from = %env.from, "broadcast handler failed: {err}");
            }
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        text.to_string()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic with no message".into()
    }
}

/// A payload larger than this gets its own buffer rather than pinning a shared one.
const ARENA: usize = 16 * 1024;

thread_local! {
    /// Payloads are cut from one buffer per thread (each cut shares it, counted), instead of a
    /// vector grown and allocated per message.
    static PAYLOADS: std::cell::RefCell<bytes::BytesMut> =
        std::cell::RefCell::new(bytes::BytesMut::new());
}

fn encode<T: Serialize + ?Sized>(event: &str, value: &T) -> Result<Bytes> {
    use bytes::BufMut;
    PAYLOADS.with(|arena| {
        let mut arena = arena.borrow_mut();
        if arena.capacity() < ARENA / 64 {
            // Reclaims the buffer when every payload cut from it is gone, else starts anew.
            arena.reserve(ARENA);
        }
        let written = rmp_serde::encode::write_named(&mut (&mut *arena).writer(), value);
        let body = arena.split().freeze();
        if arena.capacity() > 4 * ARENA {
            // A huge payload grew the buffer: let it go with its payload.
            *arena = bytes::BytesMut::new();
        }
        written.map(|()| body).map_err(|e| Error::Encode {
            event: event.into(),
            detail: e.to_string(),
        })
    })
}

fn decode<T: DeserializeOwned>(event: &str, body: &[u8]) -> Result<T> {
    rmp_serde::from_slice(body).map_err(|e| Error::Decode {
        event: event.into(),
        detail: e.to_string(),
    })
}

/// The error a `Failure` frame carries.
pub(crate) fn decode_failure(env: &Envelope) -> Error {
    rmp_serde::from_slice(&env.body).unwrap_or_else(|e| Error::Malformed {
        detail: format!("a failure that did not decode: {e}"),
    })
}

fn decode_answer<R: DeserializeOwned>(event: &str, answer: &Envelope) -> Result<R> {
    match answer.kind {
        Kind::Reply => decode(event, &answer.body),
        Kind::Failure => Err(decode_failure(answer)),
        other => Err(Error::Malformed {
            detail: format!("expected an answer, got {other:?}"),
        }),
    }
}
