//! The master's Supervisor: one task that owns the workers' life cycle ([`Fleet`], a state
//! machine with no I/O) and carries out what it decides.
//!
//! Everything that concerns a worker (its process started or exited, its request to be Ready,
//! its connection ending, a deadline, a reload or stop asked) is an event for this one task, so
//! the rules are applied in one place and one order. What it does in turn (start a process,
//! admit or drain a worker in the Hub, kill one, set a timer) never waits on a worker: a
//! process is started and waited for by a task of its own (`process.rs`), a drain order is sent
//! by a task of its own, heartbeats run in a task of their own (`heartbeat.rs`).
//!
//! The files: `fleet.rs` the state machine, `rollout.rs` a rolling reload, `recycle.rs` the
//! recycling policy, `in_process.rs` a worker task (single-process mode), `process.rs` a
//! worker's process, `heartbeat.rs` the heartbeats.

use std::collections::HashMap;
use std::sync::Arc;

use messenger::{Hub, HubEvent, WorkerId};
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::time::Instant;

use crate::control::Drain;
use crate::error::Error;
use crate::options::Options;
use crate::spawn::Spawner;
use crate::status::{Phase, Status};

mod fleet;
mod heartbeat;
mod in_process;
mod process;
mod recycle;
mod rollout;
#[cfg(test)]
mod tests;

pub(crate) use fleet::Readiness;
use fleet::{Action, Event, Fleet, ReloadError, ScaleError};
pub(crate) use in_process::InProcess;

/// What the master asks of its Supervisor.
pub(crate) enum Cmd {
    /// Start every worker (the master's bootstrap is done).
    Boot,
    /// Roll every worker (the slot of `asker`, the worker that asked, if any, last); the
    /// outcome goes back on `reply`.
    Reload {
        reply: oneshot::Sender<Result<(), Error>>,
        asker: Option<WorkerId>,
    },
    /// Drain every worker and stop (`graceful`), or kill them all.
    Stop { graceful: bool },
    /// Drain every worker and stop, unless a stop was asked already (then nothing more).
    StopOnce,
    /// A snapshot of every slot.
    Status(oneshot::Sender<Status>),
    /// Make the cluster `to` slots; the outcome (and the count) goes back on `reply`.
    Scale {
        to: ScaleTo,
        reply: oneshot::Sender<Result<usize, Error>>,
    },
}

/// How many slots a scaling asks for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ScaleTo {
    Exactly(usize),
    /// One more (SIGTTIN) or one fewer (SIGTTOU) than there are when it is handled.
    OneMore,
    OneFewer,
}

enum Input {
    Cmd(Cmd),
    Event(Event),
    /// Time to hold the Ready workers to the recycling policy.
    RecycleCheck,
}

/// A handle on the Supervisor: cheap to clone.
#[derive(Clone)]
pub(crate) struct Handle {
    tx: mpsc::UnboundedSender<Input>,
    phase: watch::Receiver<Phase>,
    readiness: watch::Receiver<Readiness>,
    /// The number of slots (scaling changes it).
    workers: watch::Receiver<usize>,
}

impl Handle {
    /// Sends `cmd`; `false` if the Supervisor is gone.
    pub fn send(&self, cmd: Cmd) -> bool {
        self.tx.send(Input::Cmd(cmd)).is_ok()
    }

    /// A snapshot of every slot; [`Error::Stopping`] once the Supervisor is gone.
    pub async fn status(&self) -> Result<Status, Error> {
        let (reply, rx) = oneshot::channel();
        if !self.send(Cmd::Status(reply)) {
            return Err(Error::Stopping);
        }
        rx.await.map_err(|_| Error::Stopping)
    }

    /// Worker `id` says it is not well.
    pub fn unhealthy(&self, id: WorkerId, reason: String) {
        let _ = self.tx.send(Input::Event(Event::Unhealthy { id, reason }));
    }

    pub fn phase(&self) -> watch::Receiver<Phase> {
        self.phase.clone()
    }

    /// Whether every slot has its Ready worker, no rollout under way.
    pub fn readiness(&self) -> watch::Receiver<Readiness> {
        self.readiness.clone()
    }

    /// The number of slots, as the last scaling left it.
    pub fn workers(&self) -> usize {
        *self.workers.borrow()
    }
}

/// How workers are started.
pub(crate) enum Launcher {
    /// Each a process: the binary re-executed.
    Process(Spawner),
    /// Each a task in the master's process (single-process mode).
    InProcess(Arc<InProcess>),
}

/// Starts the Supervisor of the workers of `hub` (a supervised Hub, whose events are
/// `hub_events`). It waits for [`Cmd::Boot`] to start them; the task ends once every worker
/// has exited after a stop, with whether the stop was graceful.
pub(crate) fn start(
    opts: Arc<Options>,
    hub: Hub,
    hub_events: mpsc::UnboundedReceiver<HubEvent>,
    launcher: Launcher,
) -> (Handle, tokio::task::JoinHandle<bool>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (phase, phase_rx) = watch::channel(Phase::Starting);
    let (readiness, readiness_rx) = watch::channel(Readiness::Waiting);
    let (workers, workers_rx) = watch::channel(opts.workers);
    let report = tx.clone();
    heartbeat::start(
        hub.clone(),
        opts.heartbeat_interval,
        opts.heartbeat_timeout,
        move |event| report.send(Input::Event(event)).is_ok(),
    );
    if opts.recycle.any() {
        let tick = tx.clone();
        recycle::start_checks(&opts.recycle, move || {
            tick.send(Input::RecycleCheck).is_ok()
        });
    }
    let supervisor = Supervisor {
        opts: opts.clone(),
        fleet: Fleet::new(Options::clone(&opts)),
        hub,
        launcher,
        tx: tx.clone(),
        kills: HashMap::new(),
        reloads: HashMap::new(),
        scales: HashMap::new(),
        next_ticket: 0,
        phase,
        readiness,
        workers,
    };
    let task = tokio::spawn(supervisor.run(rx, hub_events));
    (
        Handle {
            tx,
            phase: phase_rx,
            readiness: readiness_rx,
            workers: workers_rx,
        },
        task,
    )
}

struct Supervisor {
    opts: Arc<Options>,
    fleet: Fleet,
    hub: Hub,
    launcher: Launcher,
    /// For the tasks it starts to report back.
    tx: mpsc::UnboundedSender<Input>,
    /// Kills each worker's process.
    kills: HashMap<WorkerId, Arc<Notify>>,
    /// Whoever asked for each reload under way, and each scaling.
    reloads: HashMap<u64, oneshot::Sender<Result<(), Error>>>,
    scales: HashMap<u64, (usize, oneshot::Sender<Result<usize, Error>>)>,
    next_ticket: u64,
    phase: watch::Sender<Phase>,
    readiness: watch::Sender<Readiness>,
    workers: watch::Sender<usize>,
}

impl Supervisor {
    async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Input>,
        mut hub_events: mpsc::UnboundedReceiver<HubEvent>,
    ) -> bool {
        loop {
            let input = tokio::select! {
                // Its own events first: a process's start, reported before its connection is
                // served, is taken in before anything the Hub reports about that worker.
                biased;
                Some(input) = rx.recv() => input,
                Some(event) = hub_events.recv() => match event {
                    HubEvent::ReadyAsked(id) => Input::Event(Event::ReadyAsked { id }),
                    HubEvent::Closed { id, reason } => Input::Event(Event::Lost { id, reason }),
                    _ => continue,
                },
                else => break,
            };
            match input {
                Input::Event(event) => self.handle(event),
                Input::Cmd(cmd) => self.command(cmd),
                Input::RecycleCheck => self.recycle_check(),
            }
            let phase = self.fleet.phase();
            self.phase
                .send_if_modified(|p| std::mem::replace(p, phase) != phase);
            let readiness = self.fleet.readiness();
            self.readiness
                .send_if_modified(|r| std::mem::replace(r, readiness) != readiness);
            if self.fleet.finished() {
                break;
            }
        }
        self.phase.send_replace(Phase::Stopped);
        self.readiness.send_replace(Readiness::Stopped);
        self.fleet.stopped_gracefully()
    }

    fn command(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Boot => self.handle(Event::Boot),
            Cmd::Reload { reply, asker } => {
                self.next_ticket += 1;
                let ticket = self.next_ticket;
                self.reloads.insert(ticket, reply);
                self.handle(Event::Reload { ticket, asker });
            }
            Cmd::Stop { graceful } => self.handle(Event::Stop { graceful }),
            Cmd::StopOnce => {
                if !self.fleet.stopping() {
                    self.handle(Event::Stop { graceful: true });
                }
            }
            Cmd::Status(reply) => {
                let _ = reply.send(self.fleet.status(Instant::now()));
            }
            Cmd::Scale { to, reply } => {
                let now = self.fleet.workers();
                let workers = match to {
                    ScaleTo::Exactly(n) => n,
                    ScaleTo::OneMore => now + 1,
                    ScaleTo::OneFewer => now.saturating_sub(1),
                };
                self.next_ticket += 1;
                let ticket = self.next_ticket;
                self.scales.insert(ticket, (workers, reply));
                self.handle(Event::Scale { ticket, workers });
            }
        }
    }

    fn handle(&mut self, event: Event) {
        match &event {
            Event::Exited { id, .. } => {
                self.kills.remove(id);
                // Its pending calls fail now, not when the Hub reads the end of its socket.
                self.hub.detach(*id);
            }
            Event::SpawnFailed { id, .. } => {
                self.kills.remove(id);
            }
            _ => {}
        }
        for action in self.fleet.handle(Instant::now(), event) {
            self.act(action);
        }
    }

    fn act(&mut self, action: Action) {
        match action {
            Action::Spawn { id, cause } => {
                tracing::debug!(
                    slot = id.slot,
                    generation = id.generation,
                    %cause,
                    "starting worker"
                );
                let kill = Arc::new(Notify::new());
                self.kills.insert(id, kill.clone());
                let tx = self.tx.clone();
                let report = move |event| {
                    let _ = tx.send(Input::Event(event));
                };
                match &self.launcher {
                    Launcher::Process(spawner) => {
                        process::start(spawner.clone(), self.hub.clone(), id, kill, report)
                    }
                    Launcher::InProcess(tasks) => tasks.start(self.hub.clone(), id, kill, report),
                }
            }
            Action::Admit(id) => {
                if let Err(why) = self.hub.admit(id) {
                    // Gone meanwhile: its connection's end is on its way as an event.
                    tracing::debug!(
                        slot = id.slot,
                        generation = id.generation,
                        "not admitted: {why}"
                    );
                }
            }
            Action::Refuse { id, reason } => self.hub.refuse(id, &reason),
            Action::Drain { id, why: _ } => {
                self.hub.drain(id);
                let hub = self.hub.clone();
                tokio::spawn(async move {
                    match hub.request_worker(id, Drain).await {
                        Ok(()) => {}
                        // Gone, or going: its kill deadline, already set, bounds the rest.
                        Err(e) => tracing::debug!(
                            slot = id.slot,
                            generation = id.generation,
                            "drain order not answered: {e}"
                        ),
                    }
                });
            }
            Action::Kill { id, cause: _ } => {
                if let Some(kill) = self.kills.get(&id) {
                    kill.notify_one();
                }
            }
            Action::After { delay, timer } => {
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = tx.send(Input::Event(Event::Timer(timer)));
                });
            }
            Action::ReloadDone { tickets, result } => {
                for ticket in tickets {
                    if let Some(reply) = self.reloads.remove(&ticket) {
                        let _ = reply.send(match &result {
                            Ok(()) => Ok(()),
                            Err(ReloadError::Stopping) => Err(Error::Stopping),
                            Err(ReloadError::Failed(why)) => Err(Error::Reload(why.clone())),
                        });
                    }
                }
            }
            Action::CloseListeners => match &self.launcher {
                Launcher::Process(spawner) => spawner.close_listeners(),
                Launcher::InProcess(tasks) => tasks.close_listeners(),
            },
            Action::ScaleDone { ticket, result } => {
                // Published before the answer: whoever awaited the scaling reads the new count.
                self.workers.send_replace(self.fleet.workers());
                if let Some((workers, reply)) = self.scales.remove(&ticket) {
                    let _ = reply.send(result.map(|()| workers).map_err(|e| match e {
                        ScaleError::Stopping => Error::Stopping,
                        other => Error::Scale(other.to_string()),
                    }));
                }
            }
        }
    }
}
