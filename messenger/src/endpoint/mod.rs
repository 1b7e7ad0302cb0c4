//! The typed API every process holds: handlers in, calls out.
//!
//! The files: this one is the handle ([`Messenger`]) and its handlers; `calls.rs` the calls it
//! makes; `pending.rs` the calls waiting for answers; `map.rs` a `map` call; `handlers.rs` the
//! registry; `run.rs` running a handler; `reader.rs` what comes in; `link.rs` what goes out.

use std::future::Future;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::builtin::Ping;
use crate::busy::{self, BusyPoll};
use crate::stats;
use crate::transport::{self, Router};
use crate::wire::{Envelope, Hello, Kind, ENVELOPE_OVERHEAD};
use crate::{Config, Dispatch, Error, Event, Peer, Result};

mod calls;
mod gather;
mod handlers;
mod link;
mod map;
mod pending;
mod reader;
mod ready_set;
mod run;

use handlers::{erase, Erased, Handlers};
use link::{Frames, Link, Window};
use pending::Calls;
use ready_set::ReadySet;

type PanicHook = Arc<dyn Fn(&str) + Send + Sync>;

/// A process's end of the messenger: register handlers with [`on`](Messenger::on), call other
/// processes with [`broadcast`](Messenger::broadcast), [`consume`](Messenger::consume),
/// [`map`](Messenger::map) and the rest. Cheap to clone; every clone is the same end.
///
/// Every call has a deadline ([`Config::request_timeout`], or [`Messenger::with_timeout`] for one
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
    /// What its calls took.
    stats: stats::Calls,
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
            stats: stats::Calls::default(),
        });
        let batch = shared.config.credit_batch();
        tokio::spawn(reader::run_broadcasts(
            Arc::downgrade(&shared),
            broadcasts,
            batch,
        ));
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

    /// Another handle to the same Messenger, whose calls wait at most `timeout` for their
    /// replies (this one keeps its own deadline, [`Config::request_timeout`] unless set). A
    /// timeout over [`MAX_DURATION`](crate::MAX_DURATION) (100 years) counts as that.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use messenger::{Event, Messenger};
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Serialize, Deserialize, Event)]
    /// # #[event(reply = u32)]
    /// # struct Pid;
    /// async fn patient(messenger: &Messenger) -> messenger::Result<Vec<u32>> {
    ///     messenger.with_timeout(Duration::from_secs(60)).map(Pid).await
    /// }
    /// ```
    pub fn with_timeout(&self, timeout: Duration) -> Messenger {
        Messenger {
            shared: self.shared.clone(),
            timeout: timeout.min(crate::MAX_DURATION),
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

    /// Registers a handler for `E` that shares `state` (an `Arc`, cloned for each call): the
    /// short form of a closure that clones what it captures before its `async move`.
    ///
    /// ```
    /// # use std::sync::atomic::{AtomicU64, Ordering};
    /// # use std::sync::Arc;
    /// # use messenger::{Event, Messenger};
    /// # use serde::{Deserialize, Serialize};
    /// #[derive(Serialize, Deserialize, Event)]
    /// #[event(reply = u64)]
    /// struct Hit;
    ///
    /// fn handlers(messenger: &Messenger) {
    ///     let hits = Arc::new(AtomicU64::new(0));
    ///     messenger.on_with(hits, |hits, _: Hit| async move { hits.fetch_add(1, Ordering::Relaxed) + 1 });
    /// }
    /// ```
    pub fn on_with<S, E, F, Fut>(&self, state: Arc<S>, handler: F)
    where
        S: ?Sized + Send + Sync + 'static,
        E: Event,
        F: Fn(Arc<S>, E) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = E::Reply> + Send + 'static,
    {
        self.on(move |event: E| handler(state.clone(), event))
    }

    /// Registers one object that handles every case of an enum event: the
    /// `<Enum>Handler` trait that `#[derive(Event)]` writes. With `#[event(sender)]` on the
    /// enum, each method's first parameter is the sender, `from: Peer`, stamped by the Hub.
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
    ///     messenger.handle::<Admin>(Arc::new(Service));
    /// }
    /// ```
    pub fn handle<E: Dispatch>(&self, handler: Arc<E::Handler>) {
        self.on_from(move |from: Peer, event: E| event.dispatch(from, handler.clone()));
    }

    fn register(&self, name: &'static str, handler: Erased) {
        let (first, events) = self.shared.handlers.add(name, handler);
        if !first {
            return;
        }
        // The built-in ping is handled but never announced: it is not one of the names the
        // Hub counts against `max_events`.
        let announced = events - 1;
        if announced > self.shared.config.max_events {
            // The Hub closes a connection that announces more: the handler stays local.
            tracing::error!(
                event = name,
                max_events = self.shared.config.max_events,
                "too many event names: this one is not announced, and only this process runs it"
            );
            return;
        }
        let announce = Envelope::new(Kind::Announce, name, Bytes::new());
        if let Err(err) = self.shared.check_size(&announce) {
            // The Hub would close a connection that sends it.
            tracing::error!(
                event = name,
                "{err}: this event name is not announced, and only this process runs it"
            );
            return;
        }
        // Never waits: it must be queued before a later `ready()`.
        self.shared.link.send_control(announce);
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

    /// Resolves when the connection to the Hub has ended (the master went away, or
    /// [`close`](Messenger::close) was called). Pending calls have failed with
    /// [`Error::Closed`] by then.
    pub async fn closed(&self) {
        self.shared.closed.cancelled().await
    }

    /// What this Messenger's calls took since it started, one entry per [`CallKind`] in
    /// [`CallKind::ALL`] order (clones share the counts).
    ///
    /// [`CallKind`]: crate::CallKind
    /// [`CallKind::ALL`]: crate::CallKind::ALL
    pub fn call_stats(&self) -> Vec<crate::CallStats> {
        self.shared.stats.snapshot()
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
}

impl std::fmt::Debug for Messenger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Messenger")
            .field("peer", &self.shared.peer)
            .field("timeout", &self.timeout)
            .finish()
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
        self.handlers.clear();
    }
}
