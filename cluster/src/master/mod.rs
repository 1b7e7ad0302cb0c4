//! The master process: its handle here, its life from start to exit in `run.rs`.

use std::sync::Arc;

use messenger::{BoxFuture, Hub, Messenger, WorkerId};
use tokio::sync::{oneshot, watch};

use crate::error::{BoxError, Error};
use crate::listen::LocalAddr;
use crate::status::{Phase, Status};
use crate::supervisor::{self, Cmd, Readiness, ScaleTo};
use crate::systemd;

mod run;

pub(crate) use run::run;

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
        self.inner.supervisor.status().await
    }

    /// The other hosts of the cluster this master joined over NATS
    /// ([`Builder::nats`](crate::Builder::nats), feature `nats`), by name: each one's Ready
    /// workers and the events they handle. Empty for a cluster on one host.
    pub fn hosts(&self) -> Vec<messenger::RemoteHost> {
        self.inner.hub.hosts()
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
        self.inner.hub.delivered(WorkerId::new(slot, generation))
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
