//! The master's Supervisor: one actor that owns every slot and worker process, and the rolling
//! reload that drives it.
//!
//! Everything that changes a slot (a start, an exit, a Ready, a deadline, a command) is a
//! message to this one task, so the rules below are applied in one place and in one order:
//! - a slot's *current* worker is the one that serves for it; a *pending* one is its replacement
//!   being started (new first: the current one is told to drain only once the new one is Ready);
//! - a current worker that exits is restarted, at once after a stable run, else with backoff;
//! - a Starting worker that is not Ready by `ready_timeout`, or a Draining one still alive after
//!   `kill_timeout`, is killed.

use std::collections::HashMap;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, Instant};

use messenger::{Hub, HubEvent, WorkerId};
use socket2::{Domain, Socket, Type};
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::control::Drain;
use crate::error::Error;
use crate::ipc::IpcStream;
use crate::options::Options;
use crate::spawn::{SpawnRequest, Spawner};
use crate::status::{Phase, SlotStatus, Status, WorkerState, WorkerStatus};

/// How long a worker whose connection ended may take to exit by itself before it is killed.
const LOST_CONNECTION_GRACE: Duration = Duration::from_millis(500);

/// A message to the Supervisor.
pub(crate) enum Cmd {
    /// Start a new worker for `slot`; once it is Ready, drain the old one (a reload step).
    Replace {
        slot: u32,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// The worker says (or the heartbeat shows) that it is not well.
    Unhealthy {
        id: WorkerId,
        reason: String,
    },
    /// Kill that worker now, with this cause for the log.
    Kill {
        id: WorkerId,
        cause: String,
    },
    /// Drain every worker and stop (`graceful`), or kill them all.
    Stop {
        graceful: bool,
    },
    /// A snapshot of every slot.
    Status {
        reply: oneshot::Sender<Status>,
    },
    Exited {
        id: WorkerId,
        status: io::Result<ExitStatus>,
    },
    Respawn {
        slot: u32,
        token: u64,
    },
    ReadyDeadline {
        id: WorkerId,
    },
    KillDeadline {
        id: WorkerId,
    },
    LostDeadline {
        id: WorkerId,
        reason: String,
    },
}

struct Proc {
    pid: u32,
    state: WorkerState,
    started: Instant,
    kill: Arc<Notify>,
    /// Why we killed it, if we did: logged with its exit.
    cause: Option<String>,
    /// Stops its heartbeat task.
    heartbeat: CancellationToken,
}

struct Pending {
    id: WorkerId,
    waiters: Vec<oneshot::Sender<Result<(), String>>>,
    /// Unhealthy replacement: if the new one fails, the old one is stopped all the same.
    stop_old_on_failure: bool,
}

#[derive(Default)]
struct Slot {
    generation: u64,
    current: Option<WorkerId>,
    pending: Option<Pending>,
    /// Quick deaths in a row (reset by a stable run).
    failures: u32,
    restarts: u64,
    /// Invalidates scheduled respawns that are no longer wanted.
    respawn_token: u64,
    respawn_at: Option<Instant>,
}

/// The Supervisor actor.
pub(crate) struct Supervisor {
    opts: Arc<Options>,
    hub: Hub,
    spawner: Spawner,
    tx: mpsc::UnboundedSender<Cmd>,
    procs: HashMap<WorkerId, Proc>,
    slots: Vec<Slot>,
    /// `Some(true)`: draining everything; `Some(false)`: killing everything.
    stopping: Option<bool>,
    phase: Arc<watch::Sender<Phase>>,
}

impl Supervisor {
    pub fn new(
        opts: Arc<Options>,
        hub: Hub,
        spawner: Spawner,
        tx: mpsc::UnboundedSender<Cmd>,
        phase: Arc<watch::Sender<Phase>>,
    ) -> Self {
        let slots = (0..opts.workers).map(|_| Slot::default()).collect();
        Supervisor {
            opts,
            hub,
            spawner,
            tx,
            procs: HashMap::new(),
            slots,
            stopping: None,
            phase,
        }
    }

    /// Runs until every worker has exited after a stop. Returns whether the stop was graceful.
    pub async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Cmd>,
        mut events: mpsc::UnboundedReceiver<HubEvent>,
    ) -> bool {
        for slot in 0..self.slots.len() as u32 {
            self.start_current(slot, "boot").await;
        }
        self.phase.send_if_modified(|p| {
            let starting = *p == Phase::Starting;
            if starting {
                *p = Phase::Running;
            }
            starting
        });
        loop {
            tokio::select! {
                Some(cmd) = rx.recv() => self.handle(cmd).await,
                Some(event) = events.recv() => self.hub_event(event),
            }
            if self.stopping.is_some() && self.procs.is_empty() {
                break;
            }
        }
        self.phase.send_replace(Phase::Stopped);
        self.stopping == Some(true)
    }

    async fn handle(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Replace { slot, reply } => self.replace(slot, reply).await,
            Cmd::Unhealthy { id, reason } => self.unhealthy(id, reason).await,
            Cmd::Kill { id, cause } => self.kill(id, cause),
            Cmd::Stop { graceful } => self.stop(graceful),
            Cmd::Status { reply } => {
                let _ = reply.send(self.status());
            }
            Cmd::Exited { id, status } => self.exited(id, status).await,
            Cmd::Respawn { slot, token } => {
                let s = &mut self.slots[slot as usize];
                if s.respawn_token == token && s.current.is_none() && s.pending.is_none() {
                    s.respawn_at = None;
                    if self.stopping.is_none() {
                        self.start_current(slot, "restart").await;
                    }
                }
            }
            Cmd::ReadyDeadline { id } => {
                if self.state(id) == Some(WorkerState::Starting) {
                    let cause = format!("not Ready within {:?}", self.opts.ready_timeout);
                    self.kill(id, cause);
                }
            }
            Cmd::KillDeadline { id } => {
                if self.state(id) == Some(WorkerState::Draining) {
                    let cause = format!(
                        "still running {:?} after it was told to drain",
                        self.opts.kill_timeout
                    );
                    self.kill(id, cause);
                }
            }
            Cmd::LostDeadline { id, reason } => {
                if self.procs.contains_key(&id) {
                    self.kill(id, format!("lost its connection to the master: {reason}"));
                }
            }
        }
    }

    fn hub_event(&mut self, event: HubEvent) {
        match event {
            HubEvent::ReadyAsked(id) => {
                let s = &self.slots[id.slot as usize];
                let wanted = self.state(id) == Some(WorkerState::Starting)
                    && (s.current == Some(id) || s.pending.as_ref().map(|p| p.id) == Some(id));
                if wanted && self.hub.admit(id).is_ok() {
                    self.ready(id);
                } else {
                    self.hub.refuse(id, "not the worker its slot is starting");
                }
            }
            // Usually the process is exiting; give its exit a moment to be the cause.
            HubEvent::Closed { id, reason } if self.procs.contains_key(&id) => {
                self.after(LOST_CONNECTION_GRACE, Cmd::LostDeadline { id, reason });
            }
            _ => {}
        }
    }

    fn state(&self, id: WorkerId) -> Option<WorkerState> {
        self.procs.get(&id).map(|p| p.state)
    }

    /// Sends `cmd` to ourselves after `delay`.
    fn after(&self, delay: Duration, cmd: Cmd) {
        let tx = self.tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = tx.send(cmd);
        });
    }

    /// Starts a worker process for `slot`; it is registered as Starting.
    async fn start(&mut self, slot: u32, cause: &str) -> Result<WorkerId, String> {
        let s = &mut self.slots[slot as usize];
        s.generation += 1;
        let id = WorkerId {
            slot,
            generation: s.generation,
        };
        let spawned = async {
            let (ours, theirs) = Socket::pair(Domain::UNIX, Type::STREAM, None)?;
            let child = self
                .spawner
                .spawn(SpawnRequest {
                    slot,
                    generation: id.generation,
                    ipc: theirs.into(),
                })
                .await?;
            let ours = IpcStream::new(ours.into())?;
            Ok::<_, io::Error>((child, ours))
        };
        let (mut child, ipc) = match spawned.await {
            Ok(x) => x,
            Err(e) => {
                let err = Error::Spawn { slot, source: e };
                tracing::error!(slot, generation = id.generation, "{err}");
                return Err(err.to_string());
            }
        };
        let pid = child.id().unwrap_or(0);
        self.hub.attach(id, ipc);
        let kill = Arc::new(Notify::new());
        let tx = self.tx.clone();
        let kill2 = kill.clone();
        tokio::spawn(async move {
            let status = tokio::select! {
                status = child.wait() => status,
                _ = kill2.notified() => {
                    let _ = child.start_kill();
                    child.wait().await
                }
            };
            let _ = tx.send(Cmd::Exited { id, status });
        });
        self.procs.insert(
            id,
            Proc {
                pid,
                state: WorkerState::Starting,
                started: Instant::now(),
                kill,
                cause: None,
                heartbeat: CancellationToken::new(),
            },
        );
        self.after(self.opts.ready_timeout, Cmd::ReadyDeadline { id });
        tracing::info!(
            slot,
            generation = id.generation,
            pid,
            cause,
            "worker started"
        );
        Ok(id)
    }

    /// Starts the worker that will be the slot's current one (boot, restart).
    async fn start_current(&mut self, slot: u32, cause: &str) {
        match self.start(slot, cause).await {
            Ok(id) => self.slots[slot as usize].current = Some(id),
            Err(_) => {
                let s = &mut self.slots[slot as usize];
                s.failures += 1;
                let delay = self.opts.backoff(s.failures);
                self.schedule_respawn(slot, delay);
            }
        }
    }

    fn schedule_respawn(&mut self, slot: u32, delay: Duration) {
        let s = &mut self.slots[slot as usize];
        s.respawn_token += 1;
        s.respawn_at = Some(Instant::now() + delay);
        let token = s.respawn_token;
        self.after(delay, Cmd::Respawn { slot, token });
    }

    fn ready(&mut self, id: WorkerId) {
        let Some(proc) = self.procs.get_mut(&id) else {
            return;
        };
        if proc.state != WorkerState::Starting {
            return;
        }
        proc.state = WorkerState::Ready;
        tracing::info!(
            slot = id.slot,
            generation = id.generation,
            pid = proc.pid,
            after = ?proc.started.elapsed(),
            "worker ready"
        );
        let beat = proc.heartbeat.clone();
        self.heartbeat(id, beat);
        if self.stopping.is_some() {
            self.drain(id, "the cluster is stopping");
            return;
        }
        let s = &mut self.slots[id.slot as usize];
        if s.pending.as_ref().map(|p| p.id) == Some(id) {
            let pending = s.pending.take().expect("checked");
            let old = s.current.replace(id);
            for waiter in pending.waiters {
                let _ = waiter.send(Ok(()));
            }
            if let Some(old) = old {
                self.drain(old, &format!("replaced by generation {}", id.generation));
            }
        } else if s.current != Some(id) {
            self.drain(id, "no longer wanted in its slot");
        }
    }

    /// Tells a worker to drain, and kills it if it is still there after `kill_timeout`.
    fn drain(&mut self, id: WorkerId, why: &str) {
        let Some(proc) = self.procs.get_mut(&id) else {
            return;
        };
        if proc.state == WorkerState::Draining {
            return;
        }
        proc.state = WorkerState::Draining;
        proc.heartbeat.cancel();
        tracing::info!(
            slot = id.slot,
            generation = id.generation,
            pid = proc.pid,
            why,
            "draining worker"
        );
        self.hub.drain(id);
        let hub = self.hub.clone();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            match hub.request_worker(id, Drain).await {
                Ok(()) => {}
                // A hung worker: its kill deadline, already set, ends it.
                Err(e @ messenger::Error::Timeout { .. }) => {
                    tracing::warn!(
                        slot = id.slot,
                        generation = id.generation,
                        "drain order unanswered: {e}"
                    );
                }
                // Its connection ended first: it is on its way out (a worker whose work is done
                // may exit before its answer is written). Its kill deadline bounds the rest.
                Err(e @ (messenger::Error::WorkerGone { .. } | messenger::Error::Closed)) => {
                    tracing::debug!(
                        slot = id.slot,
                        generation = id.generation,
                        "drain order not answered, the worker is leaving: {e}"
                    );
                }
                Err(e) => {
                    let cause = format!("could not be told to drain: {e}");
                    let _ = tx.send(Cmd::Kill { id, cause });
                }
            }
        });
        self.after(self.opts.kill_timeout, Cmd::KillDeadline { id });
    }

    fn kill(&mut self, id: WorkerId, cause: String) {
        if let Some(proc) = self.procs.get_mut(&id) {
            tracing::warn!(slot = id.slot, generation = id.generation, pid = proc.pid, %cause, "killing worker");
            proc.cause.get_or_insert(cause);
            proc.kill.notify_one();
        }
    }

    /// Pings a Ready worker; one that answers nothing for `heartbeat_timeout` is unhealthy.
    fn heartbeat(&self, id: WorkerId, stop: CancellationToken) {
        let hub = self.hub.clone();
        let tx = self.tx.clone();
        let (interval, limit) = (self.opts.heartbeat_interval, self.opts.heartbeat_timeout);
        tokio::spawn(async move {
            let mut last_ok = Instant::now();
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(interval) => {}
                }
                let left = limit.saturating_sub(last_ok.elapsed());
                let answer = tokio::select! {
                    _ = stop.cancelled() => return,
                    answer = tokio::time::timeout(left, hub.ping(id)) => answer,
                };
                match answer {
                    Ok(Ok(_)) => last_ok = Instant::now(),
                    _ if last_ok.elapsed() < limit => {}
                    _ => {
                        let reason = format!("answered no heartbeat for {limit:?}");
                        let _ = tx.send(Cmd::Unhealthy { id, reason });
                        return;
                    }
                }
            }
        });
    }

    async fn unhealthy(&mut self, id: WorkerId, reason: String) {
        let Some(state) = self.state(id) else { return };
        match state {
            WorkerState::Starting => self.kill(id, format!("unhealthy before Ready: {reason}")),
            WorkerState::Ready => {
                let s = &self.slots[id.slot as usize];
                if self.stopping.is_some() || s.current != Some(id) || s.pending.is_some() {
                    return;
                }
                tracing::warn!(slot = id.slot, generation = id.generation, %reason, "worker unhealthy; starting its replacement");
                if let Ok(new) = self.start(id.slot, "replacing an unhealthy worker").await {
                    self.slots[id.slot as usize].pending = Some(Pending {
                        id: new,
                        waiters: Vec::new(),
                        stop_old_on_failure: true,
                    });
                } else {
                    self.drain(id, "unhealthy, and its replacement could not start");
                }
            }
            WorkerState::Draining | WorkerState::Exited => {}
        }
    }

    async fn replace(&mut self, slot: u32, reply: oneshot::Sender<Result<(), String>>) {
        if self.stopping.is_some() {
            let _ = reply.send(Err("the cluster is stopping".into()));
            return;
        }
        let Some(s) = self.slots.get_mut(slot as usize) else {
            let _ = reply.send(Err(format!("there is no slot {slot}")));
            return;
        };
        if let Some(pending) = &mut s.pending {
            pending.waiters.push(reply);
            return;
        }
        // The new worker supersedes any restart that was scheduled.
        s.respawn_token += 1;
        s.respawn_at = None;
        match self.start(slot, "reload").await {
            Ok(id) => {
                self.slots[slot as usize].pending = Some(Pending {
                    id,
                    waiters: vec![reply],
                    stop_old_on_failure: false,
                })
            }
            Err(e) => {
                let _ = reply.send(Err(e));
                let s = &mut self.slots[slot as usize];
                if s.current.is_none() {
                    s.failures += 1;
                    let delay = self.opts.backoff(s.failures);
                    self.schedule_respawn(slot, delay);
                }
            }
        }
    }

    fn stop(&mut self, graceful: bool) {
        let first = self.stopping.is_none();
        if graceful && first {
            self.stopping = Some(true);
            self.phase.send_replace(Phase::Stopping);
            tracing::info!(
                workers = self.procs.len(),
                "stopping: draining every worker"
            );
            // Drop our copies of the listening sockets now: once the workers have taken what
            // is queued and closed theirs, new connections are refused, never queued and reset.
            self.spawner.close_listeners();
            for s in &mut self.slots {
                s.respawn_token += 1;
                s.respawn_at = None;
                if let Some(p) = s.pending.take() {
                    for waiter in p.waiters {
                        let _ = waiter.send(Err("the cluster is stopping".into()));
                    }
                }
            }
            let ids: Vec<WorkerId> = self.procs.keys().copied().collect();
            for id in ids {
                self.drain(id, "the cluster is stopping");
            }
        } else {
            self.stopping = Some(false);
            self.phase.send_replace(Phase::Stopping);
            if first {
                self.spawner.close_listeners();
            }
            tracing::warn!(
                workers = self.procs.len(),
                "stopping at once: killing every worker"
            );
            let ids: Vec<WorkerId> = self.procs.keys().copied().collect();
            for id in ids {
                self.kill(id, "the cluster is stopping at once".into());
            }
        }
    }

    async fn exited(&mut self, id: WorkerId, status: io::Result<ExitStatus>) {
        let Some(proc) = self.procs.remove(&id) else {
            return;
        };
        proc.heartbeat.cancel();
        let lived = proc.started.elapsed();
        let status = describe(&status);
        let cause = match &proc.cause {
            Some(cause) => format!("{cause} ({status})"),
            None => status,
        };
        let expected = proc.state == WorkerState::Draining && proc.cause.is_none();
        let (slot, generation) = (id.slot, id.generation);
        if expected {
            tracing::info!(slot, generation, pid = proc.pid, %cause, "worker exited after draining");
        }
        self.hub.detach(id);
        let s = &mut self.slots[slot as usize];
        let was_pending = s.pending.as_ref().map(|p| p.id) == Some(id);
        let was_current = s.current == Some(id);
        // Only the slot's own failures count: a drained worker killed at its deadline is not one.
        if was_current || was_pending {
            s.restarts += 1;
            if lived >= self.opts.stable_after {
                s.failures = 0;
            } else {
                s.failures += 1;
            }
        }
        if was_pending {
            let pending = s.pending.take().expect("checked");
            let why = format!(
                "its replacement (generation {generation}) exited before it was Ready: {cause}"
            );
            tracing::warn!(slot, generation, pid = proc.pid, "{why}");
            for waiter in pending.waiters {
                let _ = waiter.send(Err(format!("slot {slot}: {why}")));
            }
            match s.current {
                Some(old) if pending.stop_old_on_failure => {
                    self.drain(old, "unhealthy, and its replacement failed");
                }
                Some(_) => {}
                // The current worker died while its replacement was starting.
                None if self.stopping.is_none() => {
                    let delay = self.opts.backoff(s.failures);
                    self.schedule_respawn(slot, delay);
                }
                None => {}
            }
            return;
        }
        if !was_current {
            if !expected {
                tracing::warn!(slot, generation, pid = proc.pid, %cause, "worker exited");
            }
            return;
        }
        s.current = None;
        if s.pending.is_some() {
            // Its replacement is already starting and takes the slot when Ready.
            tracing::warn!(slot, generation, pid = proc.pid, %cause, "worker exited while being replaced");
            return;
        }
        if self.stopping.is_some() {
            if !expected {
                tracing::warn!(slot, generation, pid = proc.pid, %cause, "worker exited while stopping");
            }
            return;
        }
        let delay = self.opts.backoff(s.failures);
        let ready = self.ready_summary();
        tracing::warn!(
            slot,
            generation,
            pid = proc.pid,
            %cause,
            lived = ?lived,
            restart_in = ?delay,
            %ready,
            "worker exited; restarting its slot"
        );
        if delay.is_zero() {
            self.start_current(slot, "restart after an exit").await;
        } else {
            self.schedule_respawn(slot, delay);
        }
    }

    /// "3 of 4 Ready": how degraded the cluster is, for the log.
    fn ready_summary(&self) -> String {
        let ready = self
            .procs
            .values()
            .filter(|p| p.state == WorkerState::Ready)
            .count();
        format!("{ready} of {} Ready", self.slots.len())
    }

    fn status(&self) -> Status {
        let now = Instant::now();
        let slots = self
            .slots
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mut workers: Vec<WorkerStatus> = self
                    .procs
                    .iter()
                    .filter(|(id, _)| id.slot == i as u32)
                    .map(|(id, p)| WorkerStatus {
                        generation: id.generation,
                        pid: p.pid,
                        state: p.state,
                        uptime: now.duration_since(p.started),
                    })
                    .collect();
                workers.sort_by_key(|w| w.generation);
                SlotStatus {
                    slot: i as u32,
                    workers,
                    restarts: s.restarts,
                    backoff: s.respawn_at.map(|at| at.saturating_duration_since(now)),
                }
            })
            .collect();
        Status {
            phase: *self.phase.borrow(),
            slots,
        }
    }
}

/// "exited with status 1", "killed by SIGKILL".
fn describe(status: &io::Result<ExitStatus>) -> String {
    match status {
        Err(e) => format!("could not be waited for: {e}"),
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("exited with status {code}"),
            (None, Some(sig)) => match nix::sys::signal::Signal::try_from(sig) {
                Ok(sig) => format!("killed by {sig}"),
                Err(_) => format!("killed by signal {sig}"),
            },
            _ => format!("ended: {s}"),
        },
    }
}

/// Coalesces reload requests and runs rollouts one at a time: every request that arrives while
/// a rollout runs is answered by the one next rollout.
pub(crate) async fn reload_loop(
    mut requests: mpsc::UnboundedReceiver<oneshot::Sender<Result<(), Error>>>,
    sup: mpsc::UnboundedSender<Cmd>,
    opts: Arc<Options>,
    phase: Arc<watch::Sender<Phase>>,
) {
    // A reload asked for (SIGUSR2) while the first workers are being started waits for them.
    let _ = phase.subscribe().wait_for(|p| *p != Phase::Starting).await;
    while let Some(first) = requests.recv().await {
        let mut waiters = vec![first];
        while let Ok(more) = requests.try_recv() {
            waiters.push(more);
        }
        let entered = phase.send_if_modified(|p| {
            let running = *p == Phase::Running;
            if running {
                *p = Phase::Reloading;
            }
            running
        });
        let result = if entered {
            rollout(&sup, &opts).await
        } else {
            Err(Error::Stopping)
        };
        phase.send_if_modified(|p| {
            let reloading = *p == Phase::Reloading;
            if reloading {
                *p = Phase::Running;
            }
            reloading
        });
        match &result {
            Ok(()) => tracing::info!("reload complete: every slot runs a new worker"),
            Err(e) => tracing::error!("{e}"),
        }
        for waiter in waiters {
            let _ = waiter.send(match &result {
                Ok(()) => Ok(()),
                Err(Error::Stopping) => Err(Error::Stopping),
                Err(Error::Reload(why)) => Err(Error::Reload(why.clone())),
                Err(e) => Err(Error::Reload(e.to_string())),
            });
        }
    }
}

async fn rollout(sup: &mpsc::UnboundedSender<Cmd>, opts: &Options) -> Result<(), Error> {
    let slots: Vec<u32> = (0..opts.workers as u32).collect();
    tracing::info!(
        slots = slots.len(),
        batch = opts.reload_batch,
        "reload: rolling every slot"
    );
    let mut done = 0;
    for batch in slots.chunks(opts.reload_batch.max(1)) {
        let mut replies = Vec::new();
        for &slot in batch {
            let (reply, rx) = oneshot::channel();
            sup.send(Cmd::Replace { slot, reply })
                .map_err(|_| Error::Stopping)?;
            replies.push(rx);
        }
        let mut failures = Vec::new();
        for rx in replies {
            match rx.await {
                Ok(Ok(())) => done += 1,
                Ok(Err(e)) => failures.push(e),
                Err(_) => return Err(Error::Stopping),
            }
        }
        if !failures.is_empty() {
            return Err(Error::Reload(format!(
                "{}; stopped after {done} of {} slots, the other workers keep serving",
                failures.join("; "),
                slots.len()
            )));
        }
    }
    Ok(())
}
