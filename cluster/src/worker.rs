//! The worker process: its handle and its life from start to exit.

use std::future::Future;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use messenger::{BoxFuture, Messenger, Peer, WorkerId};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::control::{Drain, Reload, Unhealthy};
use crate::env::{ListenerKind, WorkerEnv};
use crate::error::{BoxError, Error};
use crate::ipc::IpcStream;
use crate::options::Options;
use crate::runtime::{self, Signal};

/// The worker's bootstrap, as the builder keeps it: run once per worker process, or once per
/// worker in single-process mode.
pub(crate) type WorkerBoot =
    Arc<dyn Fn(Worker) -> BoxFuture<'static, Result<(), BoxError>> + Send + Sync>;

/// Where a worker runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Host {
    /// A process of its own, which the master started.
    OwnProcess,
    /// A task in the master's process (single-process mode).
    MasterTask,
}

/// The listeners a worker may take, by index.
pub(crate) type Listeners = Vec<Option<(ListenerKind, OwnedFd)>>;

/// What a worker's bootstrap gets: its identity, listeners and messenger, and the calls that
/// steer its life cycle. Cheap to clone.
#[derive(Clone)]
pub struct Worker {
    inner: Arc<Inner>,
}

struct Inner {
    id: WorkerId,
    messenger: Messenger,
    listeners: Mutex<Vec<Option<(ListenerKind, OwnedFd)>>>,
    drain: CancellationToken,
    /// A rollout waits for every batch to get Ready: the reload request's deadline.
    reload_timeout: std::time::Duration,
    /// How many reloads this worker asked for are still waiting for their outcome: the process
    /// waits for them before it exits.
    reloads: watch::Sender<usize>,
    /// Set when the master refused to make this worker Ready.
    refused: Arc<AtomicBool>,
}

/// Counts a reload request as waiting for its outcome while it lives.
struct WaitingReload<'a>(&'a watch::Sender<usize>);

impl<'a> WaitingReload<'a> {
    fn new(count: &'a watch::Sender<usize>) -> Self {
        count.send_modify(|n| *n += 1);
        WaitingReload(count)
    }
}

impl Drop for WaitingReload<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

impl Worker {
    /// This worker's slot and generation.
    pub fn id(&self) -> WorkerId {
        self.inner.id
    }

    /// This worker's slot, 0..N-1 (kept by its replacements).
    pub fn slot(&self) -> u32 {
        self.inner.id.slot
    }

    /// This worker's generation in its slot (grows with every replacement).
    pub fn generation(&self) -> u64 {
        self.inner.id.generation
    }

    /// The worker's messenger: register handlers, talk to the other workers and the master.
    pub fn messenger(&self) -> &Messenger {
        &self.inner.messenger
    }

    /// Takes the TCP listener added `index`-th to the builder (counting every `listen*` call),
    /// as a tokio listener ready for [`serve`](crate::serve) or `axum::serve`.
    ///
    /// Each listener can be taken once per worker.
    pub fn tcp_listener(&self, index: usize) -> Result<tokio::net::TcpListener, Error> {
        let fd = self.take_listener(index, ListenerKind::Tcp)?;
        let std = std::net::TcpListener::from(fd);
        Ok(tokio::net::TcpListener::from_std(std)?)
    }

    /// Takes the Unix-domain listener added `index`-th to the builder.
    pub fn unix_listener(&self, index: usize) -> Result<tokio::net::UnixListener, Error> {
        let fd = self.take_listener(index, ListenerKind::Unix)?;
        let std = std::os::unix::net::UnixListener::from(fd);
        Ok(tokio::net::UnixListener::from_std(std)?)
    }

    fn take_listener(&self, index: usize, kind: ListenerKind) -> Result<OwnedFd, Error> {
        let mut listeners = self.inner.listeners.lock().expect("not poisoned");
        let entry = listeners
            .get_mut(index)
            .ok_or_else(|| Error::Listener(format!("{index} does not exist")))?;
        match entry {
            None => Err(Error::Listener(format!("{index} was already taken"))),
            Some((k, _)) if *k != kind => Err(Error::Listener(format!(
                "{index} is a {k:?} listener, not {kind:?}"
            ))),
            Some(_) => Ok(entry.take().expect("checked").1),
        }
    }

    /// Asks the master to make this worker Ready: from then on it gets messages, counts for
    /// `map`, and replaces the worker it was started to replace. Call it once the server runs
    /// (connections already queue on the inherited listener, so right before serving is fine).
    ///
    /// The master grants it only to the worker it is starting for the slot: a worker that was
    /// replaced or told to drain, or while the cluster stops, is refused
    /// ([`messenger::Error::Forbidden`]), and drains ([`Worker::draining`] resolves). A
    /// bootstrap that passes this refusal on (`worker.ready().await?`) ends the worker as
    /// drained, not failed: logged as information, exit status 0.
    pub async fn ready(&self) -> Result<(), Error> {
        match self.inner.messenger.ready().await {
            Ok(()) => Ok(()),
            Err(refused @ messenger::Error::Forbidden { .. }) => {
                tracing::warn!("not made Ready ({refused}): draining");
                self.inner.refused.store(true, Ordering::Relaxed);
                self.inner.drain.cancel();
                Err(refused.into())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Asks the master to replace this worker: a new one is started, and once it is Ready this
    /// one is told to drain.
    pub async fn report_unhealthy(&self, reason: impl Into<String>) -> Result<(), Error> {
        let report = Unhealthy::new(reason.into());
        tracing::warn!(reason = %report.reason, "reporting this worker unhealthy");
        Ok(self.inner.messenger.request_master(report).await?)
    }

    /// Asks the master for a rolling reload of every worker, this one included. Resolves when
    /// the rollout is over: `Ok` once every slot runs a new worker; [`Error::Reload`] with the
    /// reason if it stopped (at the first new worker that did not get Ready: the old workers of
    /// the slots left keep serving) or the cluster stops. Reloads asked for while one runs are
    /// coalesced into one more. The master logs the request and its outcome
    /// (`reload asked by worker slot 0 gen 1: complete`, or the reason): at info for one
    /// request of a worker at a time, at debug for the others it has waiting.
    ///
    /// What happens to this worker: it is replaced like every other, new first, and the master
    /// replaces the slots of the workers that asked last. So it keeps serving until the
    /// rollout's last step, where its replacement gets Ready: the rollout ends there, and this
    /// worker is told to drain ([`Worker::draining`] resolves) as the outcome is sent to it. If
    /// the rollout stops before its slot, it is not replaced at all.
    ///
    /// To see the outcome in this worker, await this call in a task or a request handler of
    /// its own: a request being answered keeps [`serve`](crate::serve) draining, and a worker
    /// whose bootstrap has returned still waits for the outcome of the reloads it asked for
    /// (for `kill_timeout` at most) before its process exits. Elsewhere, the outcome is in the
    /// master's log and [`Master::status`](crate::Master::status) (every slot's generation).
    ///
    /// Asked before [`ready`](Worker::ready) has returned, it fails at once with
    /// [`Error::Reload`] (the rollout would wait for this worker to get Ready, and it would
    /// wait for the rollout).
    pub async fn request_reload(&self) -> Result<(), Error> {
        let _waiting = WaitingReload::new(&self.inner.reloads);
        self.inner
            .messenger
            .with_timeout(self.inner.reload_timeout)
            .request_master(Reload)
            .await?
            .map_err(Error::Reload)
    }

    /// Resolves as soon as this worker must start draining (told by the master, refused Ready,
    /// SIGTERM, or the master lost): stop accepting, finish in-flight work, then return from
    /// the bootstrap. It does not wait for anything to be drained: hand it to
    /// [`serve`](crate::serve) or `with_graceful_shutdown`, which do the draining.
    pub fn draining(&self) -> impl Future<Output = ()> + Send + 'static {
        self.inner.drain.clone().cancelled_owned()
    }

    /// Whether this worker was told to drain.
    pub fn is_draining(&self) -> bool {
        self.inner.drain.is_cancelled()
    }
}

/// The life of a worker process, from the runtime's creation to its exit.
pub(crate) fn run(env: WorkerEnv, opts: Options, boot: WorkerBoot) -> Result<(), Error> {
    let span = tracing::info_span!(
        "worker",
        slot = env.slot,
        generation = env.generation,
        pid = std::process::id()
    );
    // One thread: a current-thread runtime, so the server, the handlers and the messenger never
    // hand work to another thread (no cross-thread wake-ups; measured: /hello +15-25%,
    // pipelined calls +25%). Every log line of this process carries the slot and generation.
    let runtime = runtime::build(opts.runtime_threads(), &span)?;
    let _entered = span.entered();
    // SAFETY: the master placed these descriptors for this process (checked to be sockets by
    // `take_worker_env`); nothing else in the process owns them.
    let ipc = unsafe { OwnedFd::from_raw_fd(env.ipc_fd) };
    let listeners = env
        .listeners
        .iter()
        .map(|(kind, fd)| Some((*kind, unsafe { OwnedFd::from_raw_fd(*fd) })))
        .collect();
    let id = WorkerId {
        slot: env.slot,
        generation: env.generation,
    };
    let result = runtime.block_on(async move {
        let ipc = IpcStream::new(ipc)?;
        let messenger = Messenger::connect(ipc, opts.messenger.clone()).await?;
        let drain = CancellationToken::new();
        live(
            id,
            &opts,
            &boot,
            messenger,
            listeners,
            Host::OwnProcess,
            drain,
        )
        .await
    });
    match &result {
        Ok(()) => tracing::info!("worker exits"),
        Err(e) => tracing::error!("worker fails: {e}"),
    }
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}

/// A worker's life once connected to the Hub: its bootstrap's run, and the wait for the reloads
/// it asked for. A worker process also watches its master, its signals and its panics; one in
/// the master's process leaves those to the master.
pub(crate) async fn live(
    id: WorkerId,
    opts: &Options,
    boot: &WorkerBoot,
    messenger: Messenger,
    listeners: Listeners,
    host: Host,
    drain: CancellationToken,
) -> Result<(), Error> {
    let on_drain = drain.clone();
    // Only the master's order counts (the Hub lets no worker send it; this holds whatever
    // the Hub).
    messenger.on_from(move |from: Peer, _: Drain| {
        if from == Peer::Master {
            if !on_drain.is_cancelled() {
                tracing::info!("told to drain");
            }
            on_drain.cancel();
        } else {
            tracing::debug!(%from, "a drain order not from the master: ignored");
        }
        async {}
    });
    #[cfg(feature = "metrics")]
    if opts.metrics.is_some() {
        // In the master's process, the facade's registry is the master's: sent once, by it.
        let with_registry = host == Host::OwnProcess;
        crate::prometheus::serve_worker(&messenger, &opts.metrics_buckets, with_registry);
    }
    if host == Host::OwnProcess {
        watch_master(&messenger, &drain, opts);
        watch_signals(&drain)?;
        if opts.unhealthy_on_panic {
            report_panics(&messenger);
        }
    }
    let worker = Worker {
        inner: Arc::new(Inner {
            id,
            messenger,
            listeners: Mutex::new(listeners),
            drain,
            reload_timeout: opts
                .ready_timeout
                .saturating_mul(u32::try_from(opts.workers + 1).unwrap_or(u32::MAX)),
            reloads: watch::Sender::new(0),
            refused: Arc::new(AtomicBool::new(false)),
        }),
    };
    let mut reloads = worker.inner.reloads.subscribe();
    let refused = worker.inner.refused.clone();
    tracing::debug!(pid = std::process::id(), "worker bootstrap starts");
    let result = match boot(worker).await {
        // Refused Ready (replaced, or the cluster stopping, before it served), and its bootstrap
        // passed that refusal on (`ready().await?`): drained before it began, not a failure.
        Err(e) if refused.load(Ordering::Relaxed) && is_refusal(&*e) => {
            tracing::info!("refused Ready, the bootstrap returned: {e}");
            Ok(())
        }
        result => result.map_err(Error::Bootstrap),
    };
    // A reload this worker asked for ends as it drains, or soon after: its outcome is not
    // lost to the exit (the master kills a worker still here after kill_timeout anyway).
    if *reloads.borrow_and_update() > 0 {
        tracing::info!("waiting for the outcome of the reload this worker asked for");
        let outcome = reloads.wait_for(|n| *n == 0);
        let _ = tokio::time::timeout(opts.kill_timeout, outcome).await;
    }
    result
}

/// Whether `error`, or an error it wraps, is the master's refusal to make a worker Ready.
fn is_refusal(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        let forbidden = |m: &messenger::Error| matches!(m, messenger::Error::Forbidden { .. });
        if e.downcast_ref::<messenger::Error>().is_some_and(forbidden)
            || matches!(e.downcast_ref::<Error>(), Some(Error::Messenger(m)) if forbidden(m))
        {
            return true;
        }
        next = e.source();
    }
    false
}

/// EOF on the IPC socket means the master is gone: drain, and exit after `kill_timeout` at the
/// latest (nobody is left to kill this process).
fn watch_master(messenger: &Messenger, drain: &CancellationToken, opts: &Options) {
    let messenger = messenger.clone();
    let drain = drain.clone();
    let kill_timeout = opts.kill_timeout;
    tokio::spawn(async move {
        messenger.closed().await;
        tracing::warn!("lost the connection to the master: draining, then exiting");
        drain.cancel();
        tokio::time::sleep(kill_timeout).await;
        tracing::error!("still running {kill_timeout:?} after the master was lost: exiting");
        std::process::exit(1);
    });
}

/// SIGTERM sent to a worker alone drains it (the master then replaces it). SIGINT, which a
/// terminal sends to the whole process group, is the master's to act on: the worker ignores it.
fn watch_signals(drain: &CancellationToken) -> Result<(), Error> {
    let drain = drain.clone();
    runtime::watch_signals(false, move |signal| match signal {
        Signal::Terminate => {
            tracing::info!("SIGTERM: draining");
            drain.cancel();
        }
        _ => tracing::debug!("{signal} ignored: the master stops the workers"),
    })?;
    Ok(())
}

/// The panic policy: a panic anywhere in the worker (a handler, a task) reports it unhealthy,
/// once: the master replaces it, and later panics have nothing to add.
fn report_panics(messenger: &Messenger) {
    let messenger = messenger.clone();
    let runtime = tokio::runtime::Handle::current();
    let previous = std::panic::take_hook();
    let reported = std::sync::atomic::AtomicBool::new(false);
    std::panic::set_hook(Box::new(move |info| {
        previous(info);
        if reported.swap(true, std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        // Cut short: a panic message of any size is reported (it must fit in a frame).
        let report = Unhealthy::new(format!("panicked: {info}"));
        let messenger = messenger.clone();
        runtime.spawn(async move {
            let _ = messenger.request_master(report).await;
        });
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_refusal_to_be_ready_counts_as_one() {
        let forbidden = || messenger::Error::Forbidden {
            reason: "the cluster is stopping".into(),
        };
        let as_returned: BoxError = Error::from(forbidden()).into();
        assert!(is_refusal(&*as_returned));
        let bare: BoxError = forbidden().into();
        assert!(is_refusal(&*bare));
        let other: BoxError = Error::from(messenger::Error::Closed).into();
        assert!(!is_refusal(&*other));
        let unrelated: BoxError = "the database is down".into();
        assert!(!is_refusal(&*unrelated));
    }
}
