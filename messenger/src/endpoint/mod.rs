//! The typed API every process holds: handlers in, calls out.
//!
//! The files: this one is the handle ([`Messenger`]) and its calls; `handlers.rs` the
//! registry; `calls.rs` the calls waiting for answers; `map.rs` a `map` call; `run.rs` running
//! a handler; `reader.rs` what comes in; `link.rs` what goes out.

use std::future::Future;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::builtin::Ping;
use crate::busy::{self, BusyPoll};
use crate::payload::{decode_answer, encode};
use crate::transport;
use crate::wire::{Envelope, Hello, Kind, Members, Target, ENVELOPE_OVERHEAD};
use crate::{Config, Dispatch, Error, Event, Peer, Result, WorkerId};

mod calls;
mod handlers;
mod link;
mod map;
mod reader;
mod run;

use calls::{Answers, Calls, Waiter};
use handlers::{erase, Erased, Handlers};
pub(crate) use link::Router;
use link::{Frames, Link, Window};
use map::{MapCall, Step};
use run::Started;

type PanicHook = Arc<dyn Fn(&str) + Send + Sync>;

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
    link: Link,
    /// Room for this end's own broadcasts.
    window: Window,
    handlers: Handlers,
    calls: Calls,
    closed: CancellationToken,
    /// Broadcasts to run, in order.
    lane: mpsc::UnboundedSender<Envelope>,
    /// Requests running now (at most `max_handlers`).
    running: AtomicUsize,
    panic_hook: RwLock<Option<PanicHook>>,
    /// Polls while calls are pending and answers come in.
    busy: BusyPoll,
    /// The Ready set as the Hub last listed it.
    ready_set: Mutex<ReadySet>,
}

/// The Ready set as a [`Members`] list named it. A `map` made while it is still the Hub's
/// needs no member list: the caller names its `epoch`, and only a changed set is sent again.
#[derive(Clone, Default)]
struct ReadySet {
    /// 0: not told yet.
    epoch: u64,
    workers: Arc<[WorkerId]>,
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

impl Messenger {
    /// Connects to a Hub over `io` (a worker's end of its socket) and checks that both ends
    /// speak the same protocol version.
    ///
    /// Must be called inside a tokio runtime: the connection's tasks are spawned on it.
    pub async fn connect<IO>(io: IO, config: Config) -> Result<Messenger>
    where
        IO: AsyncRead + AsyncWrite + Send + 'static,
    {
        config.validate()?;
        let (read, mut write) = tokio::io::split(io);
        let mut codec = transport::codec(&config);
        transport::write_one(&mut write, &mut codec, &Hello::new(None).frame()).await?;
        let mut reader = transport::reader(read, codec.clone());
        let hello = transport::read_hello(&mut reader, &config).await?;
        let peer = hello.peer.ok_or_else(|| Error::Malformed {
            detail: "the hub's hello names no peer".into(),
        })?;
        let (link, frames): (Link, Frames) = Link::socket(&config);
        let messenger = Messenger::start(peer, config, link);
        let shared = messenger.shared.clone();
        tokio::spawn(transport::write_frames(
            write,
            frames,
            codec,
            shared.closed.clone(),
        ));
        tokio::spawn(reader::read(shared, reader));
        Ok(messenger)
    }

    /// The master's Messenger, whose frames the Hub behind `router` routes directly; the Hub
    /// hands it incoming frames with [`dispatch`](Messenger::dispatch).
    pub(crate) fn local(router: Weak<dyn Router>, config: Config) -> Messenger {
        Messenger::start(Peer::Master, config, Link::Local(router))
    }

    fn start(peer: Peer, config: Config, link: Link) -> Messenger {
        let (lane, broadcasts) = mpsc::unbounded_channel();
        let timeout = config.request_timeout;
        let shared = Arc::new(Shared {
            peer,
            window: Window::new(&config),
            config,
            link,
            handlers: Handlers::default(),
            calls: Calls::default(),
            closed: CancellationToken::new(),
            lane,
            running: AtomicUsize::new(0),
            panic_hook: RwLock::default(),
            busy: BusyPoll::default(),
            ready_set: Mutex::default(),
        });
        tokio::spawn(reader::run_broadcasts(Arc::downgrade(&shared), broadcasts));
        if !shared.config.busy_poll.is_zero() {
            busy::spawn(
                &shared,
                |shared| &shared.busy,
                |shared| !shared.calls.is_empty(),
                shared.config.busy_poll,
            );
        }
        let messenger = Messenger { shared, timeout };
        // Answered by every process, without being announced.
        messenger.shared.handlers.add(
            Ping::NAME,
            Arc::new(|_, _| Box::pin(async { Ok(Bytes::from_static(&[0xc0])) })),
        );
        messenger
    }

    /// Hands an incoming frame to this Messenger (the master's, from the Hub).
    pub(crate) fn dispatch(&self, env: Envelope) {
        self.shared.dispatch(env)
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
        self.register(E::NAME, erase(handler));
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

    fn register(&self, name: &'static str, handler: Erased) {
        let (first, events) = self.shared.handlers.add(name, handler);
        if !first {
            return;
        }
        if events > self.shared.config.max_events {
            // The Hub closes a connection that announces more: the handler stays local.
            tracing::error!(
                event = name,
                max_events = self.shared.config.max_events,
                "too many event names: this one is not announced, and only this process runs it"
            );
            return;
        }
        // Never waits: it must be queued before a later `ready()`.
        self.shared
            .link
            .send_control(Envelope::new(Kind::Announce, name, Bytes::new()));
    }

    /// Calls `hook` with a description whenever a handler panics (the caller of that call gets
    /// [`Error::HandlerPanicked`]). A cluster uses it to report the worker unhealthy.
    pub fn set_panic_hook(&self, hook: impl Fn(&str) + Send + Sync + 'static) {
        *self
            .shared
            .panic_hook
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(hook));
    }

    /// Asks the master to make this worker Ready: from then on it gets messages and counts for
    /// `map`. Returns once the master granted it, so handlers registered before are known by
    /// then; [`Error::Forbidden`] if it did not (a worker that was replaced or told to drain
    /// can never be Ready again).
    pub async fn ready(&self) -> Result<()> {
        if self.is_closed() {
            return Err(Error::Closed);
        }
        let env = Envelope::new(Kind::Ready, "ready", Bytes::new());
        let answer = self.ask("ready", env).await?;
        decode_answer::<()>("ready", &answer)
    }

    /// Sends `event` to every Ready worker, this one included when it is Ready; every handler of
    /// the event runs there. Returns once the Hub has taken it: frames from one sender keep
    /// their order. Workers that have no handler for it do not get it.
    ///
    /// A process has at most [`Config::queue_frames`] broadcasts ([`Config::queue_bytes`]
    /// bytes) that some receiver has not yet taken: past that, this waits for room, so a
    /// flood goes at the pace of its slowest receiver (one that takes nothing is closed as
    /// stuck after [`Config::stall_timeout`]).
    pub async fn broadcast<E: Event>(&self, event: E) -> Result<()> {
        let env = self.envelope::<E>(Kind::Broadcast, Target::Hub, Bytes::new(), &event)?;
        drop(event);
        self.shared.window.take(transport::cost(&env)).await?;
        self.shared.link.send(env).await
    }

    /// Runs `event` on exactly one Ready worker that handles it, spreading calls evenly, and
    /// returns its reply. [`Error::NoHandler`] if no Ready worker handles it.
    pub async fn consume<E: Event>(&self, event: E) -> Result<E::Reply> {
        self.call(Target::Any, Bytes::new(), event).await
    }

    /// Runs `event` on one worker once per `key` for the master's lifetime, however many workers
    /// ask: every caller, also one that asks while it runs, gets the same reply. A failed run is
    /// not remembered, so the next caller tries again. The Hub remembers
    /// [`Config::once_keys`] keys and [`Config::once_bytes`] bytes of replies, forgetting the
    /// oldest first. A key is at most [`MAX_NAME`](crate::wire::MAX_NAME) bytes.
    pub async fn consume_once<E: Event>(&self, key: &str, event: E) -> Result<E::Reply> {
        if key.len() > crate::wire::MAX_NAME {
            return Err(Error::Config {
                reason: format!(
                    "a consume_once key of {} bytes, over the {} allowed",
                    key.len(),
                    crate::wire::MAX_NAME
                ),
            });
        }
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
        let handles = self.shared.handlers.handles(E::NAME.as_bytes());
        let guess = self.shared.ready_set().and_then(|set| {
            let run_here = handles && me.worker().is_some_and(|id| set.workers.contains(&id));
            (set.workers.len() > usize::from(run_here)).then_some((set, run_here))
        });
        let (epoch, run_here) = guess
            .as_ref()
            .map_or((0, false), |(set, run_here)| (set.epoch, *run_here));
        let guess = guess.map(|(set, run_here)| (set.workers, run_here));
        let to = Target::All { epoch, run_here };
        let env = self.envelope::<E>(Kind::Request, to, Bytes::new(), &event)?;
        drop(event);
        // One timer for the whole call, however many answers it waits for.
        let deadline = tokio::time::sleep(self.timeout);
        tokio::pin!(deadline);
        let call = self.begin(Waiter::Many(Answers::default()));
        let mut map = MapCall::<E::Reply>::new(me, guess, env.body.clone());
        within(
            deadline.as_mut(),
            self.shared.link.send(Envelope { id: call.id, ..env }),
        )
        .await
        .ok_or_else(|| self.timed_out(E::NAME, None))??;
        loop {
            match map.next() {
                Step::RunOwnShare(body) => {
                    // Out of time, its entry fails; the answers already in are still taken
                    // (the wait favours them).
                    let answer = match self.shared.start(&self.request_here::<E>(to, body)) {
                        Started::Now(answer) => Some(answer),
                        Started::Later(answer) => within(deadline.as_mut(), answer).await,
                    };
                    map.own_share(answer.map(|a| decode_answer::<E::Reply>(E::NAME, &a)));
                }
                Step::Wait => {
                    match within(deadline.as_mut(), self.shared.calls.answers(call.id)).await {
                        Some(answers) if !answers.is_empty() => map.answers(E::NAME, answers)?,
                        // Closed (no more answers can come) or out of time.
                        _ => break,
                    }
                }
                Step::Done => break,
            }
        }
        call.finish();
        map.finish(self.shared.closed.is_cancelled(), || {
            self.timed_out(E::NAME, None)
        })
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

    /// A call of `event` to `to`. Encoded and queued before the future is first polled (and
    /// so not kept in it): a call's future stays small.
    fn call<E: Event>(
        &self,
        to: Target,
        key: Bytes,
        event: E,
    ) -> impl Future<Output = Result<E::Reply>> + Send + '_ {
        use futures_util::future::{ready, Either};
        let env = match self.envelope::<E>(Kind::Request, to, key, &event) {
            Ok(env) => env,
            Err(err) => return Either::Left(ready(Err(err))),
        };
        drop(event);
        let started = Instant::now();
        let body = env.body.clone();
        let asked = self.ask(E::NAME, env);
        Either::Right(async move {
            let answer = asked.await?;
            if answer.kind != Kind::RunHere {
                return decode_answer::<E::Reply>(E::NAME, &answer);
            }
            drop(answer);
            // The Hub picked this very worker: run the handler here, as a request frame would
            // be, within what is left of the deadline.
            let answer = match self.shared.start(&self.request_here::<E>(to, body)) {
                Started::Now(answer) => answer,
                // Boxed: rare, and it would make every call's future larger.
                Started::Later(answer) => {
                    Box::pin(tokio::time::timeout_at(started + self.timeout, answer))
                        .await
                        .map_err(|_| self.timed_out(E::NAME, None))?
                }
            };
            decode_answer::<E::Reply>(E::NAME, &answer)
        })
    }

    /// Sends a request now (waiting for room if there is none) and waits for its one answer,
    /// within the deadline.
    fn ask(
        &self,
        event: &'static str,
        env: Envelope,
    ) -> impl Future<Output = Result<Envelope>> + Send + '_ {
        let (tx, rx) = oneshot::channel();
        let call = self.begin(Waiter::One(tx));
        let sent = self.shared.link.send(Envelope { id: call.id, ..env });
        async move {
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
                Err(_) => Err(self.timed_out(event, None)),
            }
        }
    }

    fn begin(&self, waiter: Waiter) -> Call<'_> {
        let id = self.shared.calls.begin(waiter);
        self.shared.busy.progress();
        Call {
            shared: &self.shared,
            id,
            done: false,
        }
    }

    fn timed_out(&self, event: &str, peer: Option<Peer>) -> Error {
        Error::Timeout {
            event: event.into(),
            after: self.timeout,
            peer,
        }
    }

    /// The request frame a share run here stands for: what the Hub would have sent.
    fn request_here<E: Event>(&self, to: Target, body: Bytes) -> Envelope {
        Envelope {
            kind: Kind::Request,
            id: 0,
            from: self.shared.peer,
            to,
            event: Bytes::from_static(E::NAME.as_bytes()),
            key: Bytes::new(),
            body,
        }
    }

    /// Encodes `event` into an envelope, refusing one that would be over the maximum frame, or
    /// a call beyond [`Config::max_calls`].
    fn envelope<E: Event>(
        &self,
        kind: Kind,
        to: Target,
        key: Bytes,
        event: &E,
    ) -> Result<Envelope> {
        if self.is_closed() {
            return Err(Error::Closed);
        }
        if kind == Kind::Request && self.shared.calls.len() >= self.shared.config.max_calls {
            return Err(Error::Busy {
                event: E::NAME.into(),
                peer: self.shared.peer,
            });
        }
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
        self.shared.calls.end(self.id);
        if !self.done {
            let cancel = Envelope {
                id: self.id,
                ..Envelope::new(Kind::Cancel, "", Bytes::new())
            };
            self.shared.link.send_control(cancel);
        }
    }
}

impl Shared {
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
        self.link.close();
        self.window.close();
        // Dropping the waiters fails every pending call with `Closed`.
        self.calls.clear();
    }

    /// An answer came: to its call, unless it is news of the Ready set.
    fn answer(&self, env: Envelope) {
        self.busy.progress();
        // A list of the Ready set, kept for the next maps; id 0: sent unasked, to a worker
        // that left the set.
        if env.kind == Kind::Members {
            self.learn(&env);
            if env.id == 0 {
                return;
            }
        }
        if !self.calls.answer(env) {
            tracing::debug!("an answer for a call that gave up");
        }
    }

    /// Keeps the Ready set a member list names, for the next `map`s. Read as the frame comes,
    /// so a later call never guesses from an older set.
    fn learn(&self, list: &Envelope) {
        // One that does not decode fails its own call.
        let Ok(Members { workers, epoch, .. }) = Members::from_bytes(&list.body) else {
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
}
