//! The master process's life: the listeners bound (or taken from systemd), the Hub, the
//! workers' launcher and the supervisor started, the control socket, metrics and systemd
//! served, the bootstrap run, then supervision until every worker has exited.

use std::sync::Arc;

use messenger::{Hub, Peer, WorkerId};
use tokio::sync::watch;

use super::{Inner, Master, MasterBoot};
use crate::control::{Reload, Unhealthy};
use crate::control_socket::{self, ControlSocket};
use crate::error::Error;
use crate::listen::{self, LocalAddr};
use crate::options::{ControlPath, Options};
use crate::runtime::{self, Signal};
use crate::spawn::{SpawnConfig, Spawner};
use crate::supervisor::{self, Cmd, InProcess, Launcher, ScaleTo};
use crate::systemd;
use crate::worker::WorkerBoot;

/// The life of the master process.
pub(crate) fn run(
    mut opts: Options,
    boot: Option<MasterBoot>,
    worker_boot: WorkerBoot,
    #[cfg(feature = "nats")] uplink: Option<messenger::uplink::Uplink>,
) -> Result<(), Error> {
    // Resolved once: after a deploy renames a new binary over this path, it names the new one
    // (while /proc/self/exe keeps naming the old, deleted file).
    let exe = std::env::current_exe()?;
    let single = opts.single_process;
    if single && opts.recycle.max_memory.take().is_some() {
        tracing::warn!(
            "single-process mode: recycle_above_memory is ignored (every worker is this one \
             process, whose memory it would measure)"
        );
    }
    if !single && looks_like_test_harness(&exe) {
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
    // each other without crossing threads (broadcast throughput doubled when measured). In
    // single-process mode the workers run here too: as many threads as one worker would get.
    let threads = if single {
        opts.worker_threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1)
    } else {
        1
    };
    let runtime = runtime::build(threads, &span)?;
    let _entered = span.entered();
    let opts = Arc::new(opts);
    let result = runtime.block_on(async move {
        let (hub, hub_events) = Hub::supervised(opts.messenger.clone())?;
        // Joined before anything starts: a NATS server it cannot reach starts nothing.
        #[cfg(feature = "nats")]
        let joined = match uplink {
            Some(uplink) => Some(hub.join(uplink).await?),
            None => None,
        };
        let served: Result<(), Error> = async move {
            let launcher = if single {
                tracing::info!("single-process mode: the workers run in this process");
                Launcher::InProcess(InProcess::new(opts.clone(), worker_boot, listeners))
            } else {
                Launcher::Process(Spawner::start(
                    SpawnConfig {
                        exe,
                        args,
                        listeners,
                        piped_output: opts.prefix_output,
                    },
                    tokio::runtime::Handle::current(),
                )?)
            };
            // Running before the master's bootstrap, which may ask it for a status or a reload;
            // it starts the workers once the bootstrap is done.
            let (supervisor, supervised) =
                supervisor::start(opts.clone(), hub.clone(), hub_events, launcher);
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
                let buckets = opts.metrics_buckets.clone();
                crate::prometheus::start(hub.clone(), supervisor.clone(), addr, buckets).await?;
            }
            let notifying = systemd::Notifier::from_env().map(|notifier| {
                tokio::spawn(systemd::run(
                    notifier,
                    master.clone(),
                    supervisor.readiness(),
                    master.inner.reloads.subscribe(),
                ))
            });
            let booted = match boot {
                Some(boot) => boot(master.clone()).await,
                None => Ok(()),
            };
            let supervised = match &booted {
                Ok(()) => {
                    supervisor.send(Cmd::Boot);
                    supervised.await
                }
                Err(_) => {
                    // No worker started: the supervisor ends at once (bounded all the same).
                    supervisor.send(Cmd::Stop { graceful: false });
                    let bound = std::time::Duration::from_secs(5);
                    let _ = tokio::time::timeout(bound, supervised).await;
                    Ok(false)
                }
            };
            if let Some(task) = notifying {
                // systemd hears STOPPING=1 before the master exits: otherwise the runtime would
                // drop the task with it unsent.
                systemd::finish(task).await;
            }
            booted.map_err(Error::Bootstrap)?;
            match supervised {
                Ok(true) => {
                    tracing::info!("every worker has exited; the master exits");
                    Ok(())
                }
                _ => Err(Error::Killed),
            }
        }
        .await;
        // On every way out, an early error included: the other hosts forget this one now.
        #[cfg(feature = "nats")]
        if let Some(joined) = joined {
            joined.leave().await;
        }
        served
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
                // Logged by the supervisor when it changes something (once per worker); here
                // at debug only: a worker could report as fast as it likes. Cut short,
                // whoever sent it.
                let reason = Unhealthy::new(event.reason).reason;
                tracing::debug!(
                    slot = id.slot,
                    generation = id.generation,
                    ?reason,
                    "worker reports itself unhealthy"
                );
                sup.unhealthy(id, reason);
            }
            async {}
        });
    let m = master.clone();
    let asking = Arc::new(Asking::default());
    master.messenger().on_from(move |from: Peer, _: Reload| {
        let (m, asking) = (m.clone(), asking.clone());
        async move {
            let asker = from.worker();
            let who = asker.map_or_else(|| "the master".to_owned(), |id| format!("worker {id}"));
            // At info, one ask per worker at a time (the rest at debug): a worker that asks in a
            // loop floods nothing. Its asks are coalesced into the rollouts all the same.
            let logged = asking.first(asker);
            let level = if logged.is_some() {
                tracing::Level::INFO
            } else {
                tracing::Level::DEBUG
            };
            log(level, format_args!("reload asked by {who}"));
            let outcome = m.reload_asked_by(asker).await;
            match &outcome {
                Ok(()) => log(level, format_args!("reload asked by {who}: complete")),
                Err(e) if logged.is_some() => tracing::warn!("reload asked by {who}: {e}"),
                Err(e) => tracing::debug!("reload asked by {who}: {e}"),
            }
            drop(logged);
            // The worker makes an `Error::Reload` of the reason: sent bare, not said twice.
            outcome.map_err(|e| match e {
                Error::Reload(why) => why,
                other => other.to_string(),
            })
        }
    });
}

/// The workers whose reload ask is logged at info, and not yet answered.
#[derive(Default)]
struct Asking(std::sync::Mutex<std::collections::HashSet<WorkerId>>);

/// One worker's ask, logged: it leaves [`Asking`] when dropped.
struct Logged<'a>(&'a Asking, Option<WorkerId>);

impl Asking {
    /// `Some` if `asker` (the master: `None`) has no other ask logged and waiting.
    fn first(&self, asker: Option<WorkerId>) -> Option<Logged<'_>> {
        let Some(id) = asker else {
            return Some(Logged(self, None));
        };
        let fresh = self.0.lock().unwrap_or_else(|e| e.into_inner()).insert(id);
        // Made only when fresh: a `Logged` dropped lets its worker go.
        fresh.then(|| Logged(self, Some(id)))
    }
}

impl Drop for Logged<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.1 {
            self.0
                 .0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
        }
    }
}

/// `tracing` takes its level as a constant: info or debug, picked at run time.
fn log(level: tracing::Level, message: std::fmt::Arguments<'_>) {
    if level == tracing::Level::INFO {
        tracing::info!("{message}");
    } else {
        tracing::debug!("{message}");
    }
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
