//! The workers' life cycle as a state machine: the one owner of every worker's state.
//!
//! Each slot is in one [`SlotState`]: empty (backing off before a restart, or stopped),
//! starting its worker, serving with a Ready worker, or replacing that worker (new first). A
//! worker that left its slot (told to drain, or to be killed) is *leaving* until it exits. So
//! every worker is in exactly one place, and its state is where it is: there is nothing to keep
//! in step.
//!
//! The files: the machine's interface and its queries here, a worker's way in and out in
//! `start.rs`, a worker gone or failing in `exit.rs`, reloads and the stop in `orders.rs`, the
//! snapshot an operator reads in `status.rs`.
//!
//! [`Fleet::handle`] takes an [`Event`] (a process started or exited, a worker asked to be
//! Ready, a deadline passed, a reload or a stop was asked) and returns the [`Action`]s to take
//! (start a process, admit a worker in the Hub or refuse it, drain or kill one, set a timer,
//! answer a reload). It does no I/O, so it is tested without processes. The Hub's Ready set is
//! what the admissions and drains made it: a worker is Ready there exactly when it is its
//! slot's serving worker here.

use std::collections::BTreeMap;
use std::time::Duration;

use messenger::WorkerId;
use tokio::time::Instant;

use super::rollout::Rollout;
use crate::options::Options;
use crate::status::{Phase, Totals};

mod exit;
mod orders;
mod scale;
mod start;
mod status;

pub(crate) use scale::ScaleError;
pub(crate) use start::Start;

/// How long a worker whose connection ended may take to exit by itself before it is killed.
pub(crate) const LOST_CONNECTION_GRACE: Duration = Duration::from_millis(500);

/// One worker process.
#[derive(Debug, Clone)]
pub(crate) struct Proc {
    pub id: WorkerId,
    pub pid: Option<u32>,
    pub started: Instant,
}

/// Why a slot's serving worker is being replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Replace {
    /// A step of a rolling reload: it waits for the new worker.
    pub reload: bool,
    /// The serving worker is unhealthy: it goes even if its replacement fails.
    pub unhealthy: bool,
}

/// Where a slot is in its life.
#[derive(Debug, Clone)]
pub(crate) enum SlotState {
    /// No worker: a restart is due at `at` (backing off), or none is (the cluster stops).
    Empty { at: Option<Instant> },
    /// Its worker is starting; nothing serves.
    Starting { new: Proc },
    /// Its Ready worker serves.
    Serving { current: Proc },
    /// Its Ready worker serves while its replacement starts.
    Replacing {
        current: Proc,
        new: Proc,
        why: Replace,
    },
}

#[derive(Debug)]
pub(crate) struct Slot {
    /// The last generation started here.
    generation: u64,
    pub state: SlotState,
    /// Quick deaths in a row (reset by a stable run).
    failures: u32,
    /// How many times the slot lost a worker it did not mean to.
    restarts: u64,
    /// Tells the restart scheduled last from older ones.
    retry: u64,
    /// When a worker of it last died young (it counts in `failures`).
    last_failure: Option<Instant>,
}

/// A worker that left its slot.
#[derive(Debug)]
struct Leaving {
    proc: Proc,
    /// Why it was killed, once it was (logged with its exit).
    killed: Option<String>,
    /// It left because its connection ended, not because it was told to: its exit is news.
    lost: bool,
}

/// What happened.
#[derive(Debug, Clone)]
pub(crate) enum Event {
    /// Start every slot (the master's bootstrap is done).
    Boot,
    /// The process of worker `id` runs.
    Spawned { id: WorkerId, pid: u32 },
    /// The process of worker `id` could not be started.
    SpawnFailed { id: WorkerId, error: String },
    /// Worker `id` asks to be Ready.
    ReadyAsked { id: WorkerId },
    /// The process of worker `id` ended.
    Exited { id: WorkerId, status: String },
    /// The connection of worker `id` ended.
    Lost { id: WorkerId, reason: String },
    /// Worker `id` reported itself unhealthy, or missed its heartbeats.
    Unhealthy { id: WorkerId, reason: String },
    /// A deadline passed.
    Timer(Timer),
    /// A rolling reload is asked (by worker `asker`, if a worker asked); its outcome goes to
    /// `ticket`.
    Reload {
        ticket: u64,
        asker: Option<WorkerId>,
    },
    /// Stop: drain every worker (`graceful`) or kill them all.
    Stop { graceful: bool },
    /// Make the cluster `workers` slots; the outcome goes to `ticket` ([`Action::ScaleDone`]).
    Scale { ticket: u64, workers: usize },
    /// Worker `id` is past the recycling policy.
    Recycle { id: WorkerId, reason: String },
}

/// A deadline, set with [`Action::After`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Timer {
    /// Worker `id` should be Ready by now.
    Ready(WorkerId),
    /// Worker `id` should have drained and exited by now.
    Kill(WorkerId),
    /// Worker `id`, whose connection ended, should have exited by now.
    Lost(WorkerId),
    /// Slot `slot` may restart (if `retry` is still its latest).
    Restart { slot: u32, retry: u64 },
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Start the process of worker `id`.
    Spawn { id: WorkerId, cause: Start },
    /// Make worker `id` its slot's Ready worker in the Hub, answering its request.
    Admit(WorkerId),
    /// Answer worker `id`'s request to be Ready with a refusal.
    Refuse { id: WorkerId, reason: String },
    /// No new messages to worker `id`, and tell it to drain.
    Drain { id: WorkerId, why: String },
    /// Kill the process of worker `id`.
    Kill { id: WorkerId, cause: String },
    /// Hand back this event after `delay`.
    After { delay: Duration, timer: Timer },
    /// Answer these reload tickets.
    ReloadDone {
        tickets: Vec<u64>,
        result: Result<(), ReloadError>,
    },
    /// Drop the master's copies of the listening sockets (the cluster stops).
    CloseListeners,
    /// Answer this scale ticket.
    ScaleDone {
        ticket: u64,
        result: Result<(), ScaleError>,
    },
}

/// Why a reload did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReloadError {
    /// The cluster stops.
    Stopping,
    /// A new worker did not get Ready; the rollout stopped there.
    Failed(String),
}

/// Whether the cluster is whole: what [`Master::ready`](crate::Master::ready) waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Readiness {
    /// Not yet: a slot has no Ready worker, the workers have not started, or a rollout runs.
    Waiting,
    /// Every slot has its Ready worker and no rollout runs (or waits to run).
    Ready,
    /// The cluster stops: it will not be whole again.
    Stopped,
}

/// How the cluster stops, once asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Running,
    Draining,
    Killing,
}

/// Every slot and every worker process.
pub(crate) struct Fleet {
    opts: Options,
    booted: bool,
    slots: Vec<Slot>,
    leaving: BTreeMap<WorkerId, Leaving>,
    stop: Stop,
    rollout: Option<Rollout>,
    /// Reloads asked while one runs: they are answered by the next one.
    next_reload: Vec<u64>,
    /// The slots of the workers that asked for those: the next rollout replaces them last.
    next_askers: Vec<u32>,
    /// The last generation and restart counter of each slot that scaling took away (by slot),
    /// so that one added again never reuses an id or takes an old restart for its own.
    removed: Vec<(u64, u64)>,
    /// Restarts by cause and reloads by outcome, since the start.
    totals: Totals,
    actions: Vec<Action>,
}

impl Fleet {
    pub fn new(opts: Options) -> Fleet {
        let slots = (0..opts.workers)
            .map(|_| Slot {
                generation: 0,
                state: SlotState::Empty { at: None },
                failures: 0,
                restarts: 0,
                retry: 0,
                last_failure: None,
            })
            .collect();
        Fleet {
            opts,
            booted: false,
            slots,
            leaving: BTreeMap::new(),
            stop: Stop::Running,
            rollout: None,
            next_reload: Vec::new(),
            next_askers: Vec::new(),
            removed: Vec::new(),
            totals: Totals::default(),
            actions: Vec::new(),
        }
    }

    /// Takes in `event`, which happened at `now`: the actions to take.
    pub fn handle(&mut self, now: Instant, event: Event) -> Vec<Action> {
        match event {
            Event::Boot => self.boot(now),
            Event::Spawned { id, pid } => self.spawned(id, pid),
            Event::SpawnFailed { id, error } => {
                tracing::error!(
                    slot = id.slot,
                    generation = id.generation,
                    "cannot start worker: {error}"
                );
                self.gone(now, id, &format!("could not be started: {error}"), true)
            }
            Event::ReadyAsked { id } => self.ready_asked(now, id),
            Event::Exited { id, status } => self.gone(now, id, &status, true),
            Event::Lost { id, reason } => {
                self.gone(now, id, &format!("lost its connection: {reason}"), false)
            }
            Event::Unhealthy { id, reason } => self.unhealthy(now, id, &reason),
            Event::Timer(timer) => self.timer(now, timer),
            Event::Reload { ticket, asker } => self.reload(now, ticket, asker),
            Event::Stop { graceful } => self.stop(graceful),
            Event::Recycle { id, reason } => self.recycle(now, id, &reason),
            Event::Scale { ticket, workers } => {
                let result = self.scale(now, workers);
                self.actions.push(Action::ScaleDone { ticket, result });
            }
        }
        std::mem::take(&mut self.actions)
    }

    /// The phase the master is in.
    pub fn phase(&self) -> Phase {
        match self.stop {
            Stop::Running if !self.booted => Phase::Starting,
            Stop::Running if self.rollout.is_some() => Phase::Reloading,
            Stop::Running => Phase::Running,
            _ if self.finished() => Phase::Stopped,
            _ => Phase::Stopping,
        }
    }

    /// Whether every slot has its Ready worker, with no rollout under way or asked.
    pub fn readiness(&self) -> Readiness {
        if self.stop != Stop::Running {
            Readiness::Stopped
        } else if self.booted
            && self.rollout.is_none()
            && self.next_reload.is_empty()
            && self.slots.iter().all(|s| Fleet::serving(s).is_some())
        {
            Readiness::Ready
        } else {
            Readiness::Waiting
        }
    }

    /// Whether every worker is gone after a stop.
    pub fn finished(&self) -> bool {
        self.stop != Stop::Running
            && self.leaving.is_empty()
            && self
                .slots
                .iter()
                .all(|s| matches!(s.state, SlotState::Empty { .. }))
    }

    /// Whether the stop, if any, was graceful.
    pub fn stopped_gracefully(&self) -> bool {
        self.stop == Stop::Draining
    }

    /// The slot's serving worker, Ready in the Hub.
    pub fn serving(slot: &Slot) -> Option<WorkerId> {
        Fleet::serving_id(&slot.state)
    }

    fn serving_id(state: &SlotState) -> Option<WorkerId> {
        match state {
            SlotState::Serving { current } | SlotState::Replacing { current, .. } => {
                Some(current.id)
            }
            _ => None,
        }
    }

    /// How many slots there are.
    pub fn workers(&self) -> usize {
        self.slots.len()
    }

    /// The pid of worker `id`, if it runs.
    pub fn pid(&self, id: WorkerId) -> Option<u32> {
        self.find(id).and_then(|(proc, _)| proc.pid)
    }

    /// "3 of 4 Ready": how degraded the cluster is, for the log.
    fn ready_summary(&self) -> String {
        let ready = self.slots.iter().filter_map(Fleet::serving).count();
        format!("{ready} of {} Ready", self.slots.len())
    }

    /// Worker `id`, wherever it is, and whether it is its slot's starting worker.
    fn find(&self, id: WorkerId) -> Option<(&Proc, bool)> {
        if let Some(leaving) = self.leaving.get(&id) {
            return Some((&leaving.proc, false));
        }
        match &self.slots.get(id.slot as usize)?.state {
            SlotState::Starting { new } | SlotState::Replacing { new, .. } if new.id == id => {
                Some((new, true))
            }
            SlotState::Serving { current } | SlotState::Replacing { current, .. }
                if current.id == id =>
            {
                Some((current, false))
            }
            _ => None,
        }
    }

    fn after(&mut self, delay: Duration, timer: Timer) {
        self.actions.push(Action::After { delay, timer });
    }

    /// Whether a stop was asked.
    pub fn stopping(&self) -> bool {
        self.stop != Stop::Running
    }
}

#[cfg(test)]
impl Fleet {
    pub fn slots(&self) -> &[Slot] {
        &self.slots
    }

    /// The workers that left their slot, and whether each was told to die.
    pub fn leaving(&self) -> Vec<(WorkerId, bool)> {
        self.leaving
            .iter()
            .map(|(id, l)| (*id, l.killed.is_some()))
            .collect()
    }
}
