//! Starting a worker: re-executing the master's binary with the worker's identity in the
//! environment and its sockets at fixed descriptor numbers.
//!
//! Every `fork` happens on one dedicated thread that lives as long as the master: Linux ties
//! `PR_SET_PDEATHSIG` to the *thread* that forked, so a worker started from a short-lived
//! runtime thread would be killed when that thread exits.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::sync::mpsc as std_mpsc;

use tokio::sync::oneshot;

use crate::env::{ListenerKind, WorkerEnv, FIRST_FD, WORKER_ENV};

/// What is needed to start one worker process.
pub(crate) struct SpawnRequest {
    pub slot: u32,
    pub generation: u64,
    /// The worker's end of its socketpair.
    pub ipc: OwnedFd,
}

/// Descriptors and command line shared by every spawn.
pub(crate) struct SpawnConfig {
    /// The binary's path as resolved when the master started: after a deploy renames a new
    /// binary over it, this path names the new one (unlike `/proc/self/exe`).
    pub exe: PathBuf,
    pub args: Vec<OsString>,
    pub listeners: Vec<(ListenerKind, OwnedFd)>,
    /// The workers' stdout and stderr are pipes the master reads (to prefix their lines),
    /// rather than the master's own.
    pub piped_output: bool,
}

enum Job {
    Spawn(
        SpawnRequest,
        oneshot::Sender<io::Result<tokio::process::Child>>,
    ),
    /// Drop the master's copies of the listening sockets (the cluster is stopping).
    CloseListeners,
}

/// A handle to the thread that forks workers.
#[derive(Clone)]
pub(crate) struct Spawner {
    jobs: std_mpsc::Sender<Job>,
}

impl Spawner {
    /// Starts the spawner thread. `runtime` is entered so that children are tokio children.
    pub fn start(mut config: SpawnConfig, runtime: tokio::runtime::Handle) -> io::Result<Self> {
        let (jobs, rx) = std_mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("multiprocess-spawner".into())
            .spawn(move || {
                let _guard = runtime.enter();
                while let Ok(job) = rx.recv() {
                    match job {
                        Job::Spawn(request, reply) => {
                            let _ = reply.send(spawn(&config, request));
                        }
                        Job::CloseListeners => config.listeners.clear(),
                    }
                }
                // Never exit: the workers' PR_SET_PDEATHSIG fires when this thread ends.
                loop {
                    std::thread::park();
                }
            })?;
        Ok(Spawner { jobs })
    }

    /// Starts one worker process: the order is given now, in turn with
    /// [`close_listeners`](Spawner::close_listeners) (a worker asked for before the cluster
    /// stops gets the listeners), and the future is its outcome.
    pub fn spawn(
        &self,
        request: SpawnRequest,
    ) -> impl std::future::Future<Output = io::Result<tokio::process::Child>> {
        let (tx, rx) = oneshot::channel();
        let sent = self.jobs.send(Job::Spawn(request, tx));
        async move {
            sent.map_err(|_| io::Error::other("the spawner thread is gone"))?;
            rx.await
                .map_err(|_| io::Error::other("the spawner thread is gone"))?
        }
    }

    /// Drops the master's copies of the listening sockets; later spawns get none.
    pub fn close_listeners(&self) {
        let _ = self.jobs.send(Job::CloseListeners);
    }
}

fn spawn(config: &SpawnConfig, request: SpawnRequest) -> io::Result<tokio::process::Child> {
    let master_pid = std::process::id();
    let listeners: Vec<(ListenerKind, RawFd)> = config
        .listeners
        .iter()
        .enumerate()
        .map(|(i, (kind, _))| (*kind, FIRST_FD + 1 + i as RawFd))
        .collect();
    let env = WorkerEnv {
        slot: request.slot,
        generation: request.generation,
        master_pid,
        ipc_fd: FIRST_FD,
        listeners,
    };
    // Sources in target order: the IPC socket at FIRST_FD, then every listener.
    let sources: Vec<RawFd> = std::iter::once(request.ipc.as_raw_fd())
        .chain(config.listeners.iter().map(|(_, fd)| fd.as_raw_fd()))
        .collect();
    let exe = if config.exe.exists() {
        config.exe.clone()
    } else {
        // The binary was deleted without a replacement: run the master's own image.
        tracing::warn!(exe = %config.exe.display(), "binary is gone; starting the worker from /proc/self/exe");
        PathBuf::from("/proc/self/exe")
    };
    let mut cmd = std::process::Command::new(exe);
    cmd.args(&config.args).env(WORKER_ENV, env.encode());
    // systemd talks to the master only.
    for var in crate::systemd::ENV {
        cmd.env_remove(var);
    }
    // SAFETY: the closure runs between fork and exec and calls only async-signal-safe functions
    // (prctl, getppid, fcntl, dup2), allocating nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The master may have died before PR_SET_PDEATHSIG took effect.
            if libc::getppid() as u32 != master_pid {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            // First move every source above the targets, so that no dup2 below overwrites a
            // source not yet placed. The copies are close-on-exec; the placed ones are not.
            let above = FIRST_FD + sources.len() as RawFd;
            let mut moved = [0 as RawFd; 64];
            if sources.len() > moved.len() {
                return Err(io::Error::from_raw_os_error(libc::EMFILE));
            }
            for (i, fd) in sources.iter().enumerate() {
                let copy = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, above);
                if copy < 0 {
                    return Err(io::Error::last_os_error());
                }
                moved[i] = copy;
            }
            for (i, copy) in moved[..sources.len()].iter().enumerate() {
                if libc::dup2(*copy, FIRST_FD + i as RawFd) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    if config.piped_output {
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
    }
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(false);
    let child = cmd.spawn();
    drop(request.ipc);
    child
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// A spawn asked for before the listeners are closed gets them, even if its outcome is
    /// awaited only after (the supervisor asks, then a stop closes them at once).
    #[tokio::test]
    async fn a_spawn_asked_for_before_the_listeners_close_gets_them() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let config = SpawnConfig {
            // A dedicated program that prints its environment.
            exe: PathBuf::from("/usr/bin/env"),
            args: Vec::new(),
            listeners: vec![(ListenerKind::Tcp, OwnedFd::from(listener))],
            piped_output: true,
        };
        let spawner = Spawner::start(config, tokio::runtime::Handle::current()).unwrap();
        let request = |generation| {
            let (_, theirs) =
                socket2::Socket::pair(socket2::Domain::UNIX, socket2::Type::STREAM, None).unwrap();
            SpawnRequest {
                slot: 0,
                generation,
                ipc: theirs.into(),
            }
        };
        let before = spawner.spawn(request(1));
        spawner.close_listeners();
        let after = spawner.spawn(request(2));
        let environment = |child: io::Result<tokio::process::Child>| async move {
            let mut child = child.unwrap();
            let mut out = String::new();
            let mut stdout = child.stdout.take().unwrap();
            stdout.read_to_string(&mut out).await.unwrap();
            child.wait().await.unwrap();
            out.lines()
                .find_map(|l| l.strip_prefix(&format!("{WORKER_ENV}=")).map(str::to_owned))
                .unwrap()
        };
        let (before, after) = (
            environment(before.await).await,
            environment(after.await).await,
        );
        assert!(before.ends_with(";listeners=tcp:4"), "{before}");
        assert!(after.ends_with(";listeners="), "{after}");
    }
}
