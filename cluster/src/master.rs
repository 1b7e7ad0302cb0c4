//! The master process: its handle and its life from start to exit.

use std::sync::Arc;

use messenger::{BoxFuture, Hub, Messenger, Peer, WorkerId};
use tokio::sync::{oneshot, watch};

use crate::control::{Reload, Unhealthy};
use crate::control_socket::{self, ControlSocket};
use crate::error::{BoxError, Error};
use crate::listen::{self, LocalAddr};
use crate::options::{ControlPath, Options};
use crate::runtime::{self, Signal};
use crate::spawn::{SpawnConfig, Spawner};
use crate::status::{Phase, Status};
use crate::supervisor::{self, Cmd, Readiness, ScaleTo};
use crate::systemd;

/// The master's bootstrap, as the builder keeps it.
pub(crate) type MasterBoot =
    Box<dyn FnOnce(Master) -> BoxFuture<'static, Result<(), BoxError>> + Send>;

/// What the master's bootstrap gets: the master's messenger and the calls that steer the
/// cluster. Cheap to clone.
#[derive(Clone)]
pub struct Master {
    inner: Arc<Inner>,
}

struct Inner {
    messenger: Messenger,
    /// For what the control socket reads of each worker (the messages delivered to it).
    hub: Hub,
    supervisor: supervisor::Handle,
    local_addrs: Vec<LocalAddr>,
    /// Reloads asked and over, for systemd.
    reloads: watch::Sender<systemd::Reloads>,
}

impl Master {
    /// The master's own messenger: register master handlers, or broadcast / consume / map to
    /// the workers.
    pub fn messenger(&self) -> &Messenger {
        &self.inner.messenger
    }

    /// Rolls every worker, a batch of slots at a time, new first. Resolves when the rollout is
    /// over; `Err` says where and why it stopped (the old workers of the remaining slots keep
    /// serving). Calls made while a rollout runs are coalesced into one more rollout. Asked
    /// before the workers start (in the master's bootstrap), it is done at once: they start
    /// from the binary as it is.
    ///
    /// The new workers run the file at the binary's path as it is now (a new binary renamed
    /// over it, after a deploy); the master does not: it keeps its own code, bootstrap and
    /// handlers until it is restarted. The [`Builder`](crate::Builder) docs ("Self-update")
    /// say exactly which file runs.
    pub async fn reload(&self) -> Result<(), Error> {
        self.reload_asked_by(None).await
    }

    /// [`reload`](Master::reload), asked by worker `asker`: its slot is replaced last.
    async fn reload_asked_by(&self, asker: Option<WorkerId>) -> Result<(), Error> {
        /// Counts the reload over however its caller ends (even one that stops waiting).
        struct Over<'a>(&'a watch::Sender<systemd::Reloads>);
        impl Drop for Over<'_> {
            fn drop(&mut self) {
                self.0.send_modify(|r| r.over += 1);
            }
        }
        self.inner.reloads.send_modify(|r| r.asked += 1);
        let _over = Over(&self.inner.reloads);
        let (reply, rx) = oneshot::channel();
        if !self.inner.supervisor.send(Cmd::Reload { reply, asker }) {
            return Err(Error::Stopping);
        }
        rx.await.map_err(|_| Error::Stopping)?
    }

    /// Resolves once every slot has a Ready worker and no rolling reload runs: at once if that
    /// is so already; after the start, once the last slot's worker is Ready; during a reload,
    /// once the rollout has ended (every slot runs its new worker, or the rollout stopped and
    /// the old workers of the slots left serve). A [`status`](Master::status) asked after it
    /// resolves shows every slot's worker Ready, with its pid.
    ///
    /// `Err(`[`Error::Stopping`]`)` if the cluster stops first (or is stopping). The workers
    /// start once the master's bootstrap has returned: awaited in the bootstrap itself it would
    /// wait forever, so spawn a task there to wait on it.
    pub async fn ready(&self) -> Result<(), Error> {
        let mut readiness = self.inner.supervisor.readiness();
        let readiness = match readiness.wait_for(|r| *r != Readiness::Waiting).await {
            Ok(r) => *r,
            Err(_) => Readiness::Stopped,
        };
        match readiness {
            Readiness::Ready => Ok(()),
            _ => Err(Error::Stopping),
        }
    }

    /// Drains every worker, then the master's `run` returns `Ok`. A second call (like a second
    /// SIGTERM) kills every worker at once.
    pub fn stop(&self) {
        self.inner.supervisor.send(Cmd::Stop { graceful: true });
    }

    /// Drains every worker and stops, unless a stop was asked already: the shell's `stop`,
    /// which asked twice is still one drain.
    pub(crate) fn stop_once(&self) {
        self.inner.supervisor.send(Cmd::StopOnce);
    }

    /// A snapshot of every slot: state, pid, generation, restarts, uptime. In the master's
    /// bootstrap, before the workers start, every slot is empty.
    pub async fn status(&self) -> Result<Status, Error> {
        let (reply, rx) = oneshot::channel();
        if !self.inner.supervisor.send(Cmd::Status(reply)) {
            return Err(Error::Stopping);
        }
        rx.await.map_err(|_| Error::Stopping)
    }

    /// The master's phase, to read or to wait on (`changed()`).
    pub fn phase(&self) -> watch::Receiver<Phase> {
        self.inner.supervisor.phase()
    }

    /// Where the listeners listen, in the order they were added (ports chosen for port 0).
    pub fn local_addrs(&self) -> &[LocalAddr] {
        &self.inner.local_addrs
    }

    /// The requests and broadcasts the Hub has delivered to the worker of `slot` and
    /// `generation`, if it is connected.
    pub(crate) fn messages_to(&self, slot: u32, generation: u64) -> Option<u64> {
        self.hub().delivered(WorkerId::new(slot, generation))
    }

    /// The Hub, for what the control socket and the metrics endpoint read of it.
    pub(crate) fn hub(&self) -> &Hub {
        &self.inner.hub
    }

    /// The number of worker slots (as the last [`scale`](Master::scale) left it).
    pub fn workers(&self) -> usize {
        self.inner.supervisor.workers()
    }

    /// Makes the cluster `workers` slots, at runtime. New slots start a worker at once, which
    /// joins the Ready set (and `map`, `consume`) once Ready; the last slots over the count
    /// are taken away, their workers drained: they get no new messages or connections, finish
    /// what they have in flight, and exit (killed only past the kill timeout, as in a reload).
    /// Resolves once the change is made, not once new workers are Ready ([`ready`](Master::ready)
    /// waits for that). SIGTTIN and SIGTTOU to the master add and remove one slot.
    ///
    /// `Err(`[`Error::Scale`]`)` for 0 or more than [`Builder::max_workers`](crate::Builder::max_workers),
    /// or while a rolling reload runs; [`Error::Stopping`] if the cluster stops.
    pub async fn scale(&self, workers: usize) -> Result<(), Error> {
        self.scale_to(ScaleTo::Exactly(workers)).await.map(drop)
    }

    /// Scales, and returns the number of slots it made.
    async fn scale_to(&self, to: ScaleTo) -> Result<usize, Error> {
        let (reply, rx) = oneshot::channel();
        if !self.inner.supervisor.send(Cmd::Scale { to, reply }) {
            return Err(Error::Stopping);
        }
        rx.await.map_err(|_| Error::Stopping)?
    }
}

/// The life of the master process.
pub(crate) fn run(opts: Options, boot: Option<MasterBoot>) -> Result<(), Error> {
    // Resolved once: after a deploy renames a new binary over this path, it names the new one
    // (while /proc/self/exe keeps naming the old, deleted file).
    let exe = std::env::current_exe()?;
    if looks_like_test_harness(&exe) {
        return Err(Error::Config(format!(
            "refusing to start workers by re-executing {}: it looks like a cargo test harness, \
             which would run the tests again in every worker; start the cluster from a \
             dedicated binary (an example or a [[bin]]) instead",
            exe.display()
        )));
    }
    if opts.release_memory {
        crate::memory::release_freed_memory();
    }
    let args = std::env::args_os().skip(1).collect();
    let mut listeners = Vec::new();
    let mut local_addrs = Vec::new();
    // The Unix socket files this master made, removed when it exits (not systemd's).
    let mut unix_paths = Vec::new();
    match systemd::listen_fds()? {
        Some(fds) => {
            if fds.len() != opts.listeners.len() {
                return Err(Error::Config(format!(
                    "systemd passed {} listening sockets (LISTEN_FDS) but the cluster has {} \
                     listeners: they are taken in order, one for each",
                    fds.len(),
                    opts.listeners.len()
                )));
            }
            for (addr, (fd, name)) in opts.listeners.iter().zip(fds) {
                // SAFETY: systemd passed `fd` to this process (LISTEN_PID is ours), and
                // nothing else takes it.
                let bound = unsafe { listen::adopt(fd, addr)? };
                tracing::info!(addr = ?bound.local, fd, name, "listening (socket activation)");
                local_addrs.push(bound.local);
                listeners.push((bound.kind, bound.fd));
            }
        }
        None => {
            for addr in &opts.listeners {
                let bound = listen::bind(addr)?;
                tracing::info!(addr = ?bound.local, "listening");
                if let LocalAddr::Unix(path) = &bound.local {
                    unix_paths.push(path.clone());
                }
                local_addrs.push(bound.local);
                listeners.push((bound.kind, bound.fd));
            }
        }
    }
    let span = tracing::info_span!("master", pid = std::process::id());
    // One thread: the master only routes and supervises, and on one thread the Hub's tasks wake
    // each other without crossing threads (broadcast throughput doubled when measured).
    let runtime = runtime::build(1, &span)?;
    let _entered = span.entered();
    let opts = Arc::new(opts);
    let result = runtime.block_on(async move {
        let (hub, hub_events) = Hub::supervised(opts.messenger.clone())?;
        let spawner = Spawner::start(
            SpawnConfig {
                exe,
                args,
                listeners,
                piped_output: opts.prefix_output,
            },
            tokio::runtime::Handle::current(),
        )?;
        // Running before the master's bootstrap, which may ask it for a status or a reload;
        // it starts the workers once the bootstrap is done.
        let (supervisor, supervised) =
            supervisor::start(opts.clone(), hub.clone(), hub_events, spawner);
        let master = Master {
            inner: Arc::new(Inner {
                messenger: hub.messenger(),
                hub: hub.clone(),
                supervisor: supervisor.clone(),
                local_addrs,
                reloads: watch::Sender::new(systemd::Reloads::default()),
            }),
        };
        control_handlers(&master);
        watch_signals(&master)?;
        if let Some(control) = &opts.control_socket {
            let path = match control {
                ControlPath::At(path) => path.clone(),
                ControlPath::Default => control_socket::default_path(),
            };
            let socket = ControlSocket::bind(&path)?;
            tracing::info!(path = %socket.path().display(), "control socket");
            tokio::spawn(socket.serve(master.clone()));
        }
        #[cfg(feature = "metrics")]
        if let Some(addr) = opts.metrics {
            crate::prometheus::start(&master, addr, &opts.metrics_buckets).await?;
        }
        if let Some(notifier) = systemd::Notifier::from_env() {
            tokio::spawn(systemd::run(
                notifier,
                master.clone(),
                supervisor.readiness(),
                master.inner.reloads.subscribe(),
            ));
        }
        if let Some(boot) = boot {
            if let Err(e) = boot(master.clone()).await {
                supervisor.send(Cmd::Stop { graceful: false });
                return Err(Error::Bootstrap(e));
            }
        }
        supervisor.send(Cmd::Boot);
        match supervised.await {
            Ok(true) => {
                tracing::info!("every worker has exited; the master exits");
                Ok(())
            }
            _ => Err(Error::Killed),
        }
    });
    for path in unix_paths {
        let _ = std::fs::remove_file(path);
    }
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}

/// The master's side of the workers' control calls.
fn control_handlers(master: &Master) {
    let sup = master.inner.supervisor.clone();
    master
        .messenger()
        .on_from(move |from: Peer, event: Unhealthy| {
            if let Peer::Worker(id) = from {
                tracing::info!(slot = id.slot, generation = id.generation, reason = %event.reason, "worker reports itself unhealthy");
                sup.unhealthy(id, event.reason);
            }
            async {}
        });
    let m = master.clone();
    master.messenger().on_from(move |from: Peer, _: Reload| {
        let m = m.clone();
        async move {
            let asker = from.worker();
            let who = asker.map_or_else(|| "the master".to_owned(), |id| format!("worker {id}"));
            tracing::info!("reload asked by {who}");
            let outcome = m.reload_asked_by(asker).await;
            match &outcome {
                Ok(()) => tracing::info!("reload asked by {who}: complete"),
                Err(e) => tracing::warn!("reload asked by {who}: {e}"),
            }
            // The worker makes an `Error::Reload` of the reason: sent bare, not said twice.
            outcome.map_err(|e| match e {
                Error::Reload(why) => why,
                other => other.to_string(),
            })
        }
    });
}

/// SIGTERM / SIGINT: drain and stop (a second one kills); SIGUSR2: rolling reload; SIGTTIN /
/// SIGTTOU: one worker more / fewer.
fn watch_signals(master: &Master) -> Result<(), Error> {
    let master = master.clone();
    runtime::watch_signals(true, move |signal| match signal {
        Signal::Terminate | Signal::Interrupt => {
            tracing::info!("{signal}");
            master.stop();
        }
        Signal::MoreWorkers | Signal::FewerWorkers => {
            let master = master.clone();
            let to = match signal {
                Signal::MoreWorkers => ScaleTo::OneMore,
                _ => ScaleTo::OneFewer,
            };
            tokio::spawn(async move {
                match master.scale_to(to).await {
                    Ok(workers) => tracing::info!("{signal}: {workers} workers"),
                    Err(e) => tracing::error!("{signal}: {e}"),
                }
            });
        }
        Signal::Reload => {
            tracing::info!("SIGUSR2: reload");
            let master = master.clone();
            tokio::spawn(async move {
                if let Err(e) = master.reload().await {
                    tracing::error!("reload asked by SIGUSR2 failed: {e}");
                }
            });
        }
    })?;
    Ok(())
}

/// Whether `exe` is a test binary built by cargo (`target/<profile>/deps/<name>-<16 hex>`):
/// re-executing one as a worker runs its tests again, and a test that starts a cluster would
/// start one more in every worker.
fn looks_like_test_harness(exe: &std::path::Path) -> bool {
    let in_deps = exe
        .parent()
        .and_then(|p| p.file_name())
        .is_some_and(|d| d == "deps");
    let hashed = exe
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.rsplit_once('-'))
        .is_some_and(|(_, hash)| hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()));
    in_deps && hashed
}

#[cfg(test)]
mod tests {
    use super::looks_like_test_harness;
    use std::path::Path;

    #[test]
    fn test_harnesses_are_recognised() {
        assert!(looks_like_test_harness(Path::new(
            "/w/target/debug/deps/cluster-653d3c72ebc678c2"
        )));
        assert!(looks_like_test_harness(&std::env::current_exe().unwrap()));
        assert!(!looks_like_test_harness(Path::new(
            "/w/target/debug/examples/demo-cluster"
        )));
        assert!(!looks_like_test_harness(Path::new(
            "/w/target/release/my-server"
        )));
        assert!(!looks_like_test_harness(Path::new("/usr/bin/deps/app")));
    }
}
