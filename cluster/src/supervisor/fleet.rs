//! The workers' life cycle as a state machine: the one owner of every worker's state.
//!
//! Each slot is in one [`SlotState`]: empty (backing off before a restart, or stopped),
//! starting its worker, serving with a Ready worker, or replacing that worker (new first). A
//! worker that left its slot (told to drain, or to be killed) is *leaving* until it exits. So
//! every worker is in exactly one place, and its state is where it is: there is nothing to keep
//! in step.
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

use super::rollout::{Rollout, Step};
use crate::options::Options;
use crate::status::{Phase, SlotStatus, Status, WorkerState, WorkerStatus};

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
    /// A rolling reload is asked; its outcome goes to `ticket`.
    Reload { ticket: u64 },
    /// Stop: drain every worker (`graceful`) or kill them all.
    Stop { graceful: bool },
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
    Spawn { id: WorkerId, cause: &'static str },
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
}

/// Why a reload did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReloadError {
    /// The cluster stops.
    Stopping,
    /// A new worker did not get Ready; the rollout stopped there.
    Failed(String),
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
            Event::Reload { ticket } => self.reload(now, ticket),
            Event::Stop { graceful } => self.stop(graceful),
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

    /// The pid of worker `id`, if it runs.
    pub fn pid(&self, id: WorkerId) -> Option<u32> {
        self.find(id).and_then(|(proc, _)| proc.pid)
    }

    /// A snapshot of every slot.
    pub fn status(&self, now: Instant) -> Status {
        let worker = |proc: &Proc, state| WorkerStatus {
            generation: proc.id.generation,
            pid: proc.pid.unwrap_or(0),
            state,
            uptime: now.saturating_duration_since(proc.started),
        };
        let slots = self
            .slots
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let slot = i as u32;
                let mut workers: Vec<WorkerStatus> = self
                    .leaving
                    .values()
                    .filter(|l| l.proc.id.slot == slot)
                    .map(|l| worker(&l.proc, WorkerState::Draining))
                    .collect();
                match &s.state {
                    SlotState::Empty { .. } => {}
                    SlotState::Starting { new } => workers.push(worker(new, WorkerState::Starting)),
                    SlotState::Serving { current } => {
                        workers.push(worker(current, WorkerState::Ready))
                    }
                    SlotState::Replacing { current, new, .. } => {
                        workers.push(worker(current, WorkerState::Ready));
                        workers.push(worker(new, WorkerState::Starting));
                    }
                }
                workers.sort_by_key(|w| w.generation);
                SlotStatus {
                    slot,
                    workers,
                    restarts: s.restarts,
                    backoff: match s.state {
                        SlotState::Empty { at: Some(at) } => {
                            Some(at.saturating_duration_since(now))
                        }
                        _ => None,
                    },
                }
            })
            .collect();
        Status {
            phase: self.phase(),
            slots,
        }
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

    fn boot(&mut self, now: Instant) {
        if self.booted || self.stop != Stop::Running {
            self.booted = true;
            return;
        }
        self.booted = true;
        for slot in 0..self.slots.len() as u32 {
            let new = self.start(now, slot, "boot");
            self.slots[slot as usize].state = SlotState::Starting { new };
        }
    }

    /// A new worker process for `slot`: the next generation, with its deadline to get Ready.
    fn start(&mut self, now: Instant, slot: u32, cause: &'static str) -> Proc {
        let s = &mut self.slots[slot as usize];
        s.generation += 1;
        // A restart that was scheduled is superseded.
        s.retry += 1;
        let id = WorkerId::new(slot, s.generation);
        self.actions.push(Action::Spawn { id, cause });
        self.after(self.opts.ready_timeout, Timer::Ready(id));
        Proc {
            id,
            pid: None,
            started: now,
        }
    }

    fn spawned(&mut self, id: WorkerId, pid: u32) {
        if let Some(leaving) = self.leaving.get_mut(&id) {
            leaving.proc.pid = Some(pid);
            // Told to go before it even ran.
            if let Some(cause) = leaving.killed.clone() {
                self.actions.push(Action::Kill { id, cause });
            }
            return;
        }
        let Some(slot) = self.slots.get_mut(id.slot as usize) else {
            return;
        };
        match &mut slot.state {
            SlotState::Starting { new } | SlotState::Replacing { new, .. } if new.id == id => {
                new.pid = Some(pid);
                tracing::info!(
                    slot = id.slot,
                    generation = id.generation,
                    pid,
                    "worker started"
                );
            }
            _ => {
                // Not wanted any more: it must not run.
                let cause = "started after it was given up".to_owned();
                self.actions.push(Action::Kill { id, cause });
            }
        }
    }

    fn ready_asked(&mut self, now: Instant, id: WorkerId) {
        let refuse = |reason: &str| Action::Refuse {
            id,
            reason: reason.to_owned(),
        };
        if self.stop != Stop::Running {
            return self.actions.push(refuse("the cluster is stopping"));
        }
        let Some(slot) = self.slots.get_mut(id.slot as usize) else {
            return self.actions.push(refuse("there is no such slot"));
        };
        let state = std::mem::replace(&mut slot.state, SlotState::Empty { at: None });
        let (state, old) = match state {
            SlotState::Starting { new } if new.id == id => {
                (SlotState::Serving { current: new }, None)
            }
            SlotState::Replacing { current, new, .. } if new.id == id => {
                (SlotState::Serving { current: new }, Some(current))
            }
            // Already Ready: the same answer again.
            state @ (SlotState::Serving { .. } | SlotState::Replacing { .. })
                if Fleet::serving_id(&state) == Some(id) =>
            {
                slot.state = state;
                return self.actions.push(Action::Admit(id));
            }
            other => {
                slot.state = other;
                let reason = format!(
                    "worker {id} is not the worker its slot is starting: it was replaced, told to \
                     drain, or superseded"
                );
                tracing::warn!(
                    slot = id.slot,
                    generation = id.generation,
                    "refused Ready: {reason}"
                );
                return self.actions.push(Action::Refuse { id, reason });
            }
        };
        slot.state = state;
        let pid = self.pid(id);
        let after = self
            .find(id)
            .map(|(p, _)| now.saturating_duration_since(p.started));
        tracing::info!(
            slot = id.slot,
            generation = id.generation,
            pid,
            ?after,
            "worker ready"
        );
        self.actions.push(Action::Admit(id));
        if let Some(old) = old {
            self.drain(old, format!("replaced by generation {}", id.generation));
        }
        self.rollout_step(now, Step::Ready(id));
    }

    /// Worker `proc` leaves its slot: told to drain, killed if still there after
    /// `kill_timeout`.
    fn drain(&mut self, proc: Proc, why: String) {
        let id = proc.id;
        tracing::info!(slot = id.slot, generation = id.generation, pid = proc.pid, %why, "draining worker");
        self.leaving.insert(
            id,
            Leaving {
                proc,
                killed: None,
                lost: false,
            },
        );
        self.actions.push(Action::Drain { id, why });
        self.after(self.opts.kill_timeout, Timer::Kill(id));
    }

    /// Worker `proc` leaves its slot, killed.
    fn kill(&mut self, proc: Proc, cause: String) {
        let id = proc.id;
        tracing::warn!(slot = id.slot, generation = id.generation, pid = proc.pid, %cause, "killing worker");
        self.leaving.insert(
            id,
            Leaving {
                proc,
                killed: Some(cause.clone()),
                lost: false,
            },
        );
        self.actions.push(Action::Kill { id, cause });
    }

    /// Worker `id` is gone (`exited`), or no longer usable (its connection ended): its slot
    /// carries on without it.
    fn gone(&mut self, now: Instant, id: WorkerId, cause: &str, exited: bool) {
        if let Some(leaving) = self.leaving.get(&id) {
            if exited {
                let leaving = self.leaving.remove(&id).expect("checked");
                let pid = leaving.proc.pid;
                match (leaving.killed, leaving.lost) {
                    (Some(killed), _) => {
                        tracing::warn!(slot = id.slot, generation = id.generation, pid, %cause, "worker exited: {killed}")
                    }
                    (None, true) => {
                        tracing::warn!(slot = id.slot, generation = id.generation, pid, %cause, "worker exited")
                    }
                    (None, false) => {
                        tracing::info!(slot = id.slot, generation = id.generation, pid, %cause, "worker exited after draining")
                    }
                }
            } else if leaving.killed.is_none() {
                // It was draining and its connection ended: it is on its way out; its kill
                // deadline bounds the rest.
                tracing::debug!(slot = id.slot, generation = id.generation, %cause, "draining worker left");
            }
            return;
        }
        let Some(slot) = self.slots.get_mut(id.slot as usize) else {
            return;
        };
        let state = std::mem::replace(&mut slot.state, SlotState::Empty { at: None });
        let (lost, replacement_failed, why) = match state {
            SlotState::Starting { new } if new.id == id => (new, true, None),
            SlotState::Serving { current } if current.id == id => (current, false, None),
            SlotState::Replacing { current, new, why } if new.id == id => {
                // Its replacement failed: the serving worker stays, unless it is unhealthy.
                if why.unhealthy {
                    self.drain(current, "unhealthy, and its replacement failed".into());
                } else {
                    self.slots[id.slot as usize].state = SlotState::Serving { current };
                }
                (new, true, Some(why))
            }
            SlotState::Replacing { current, new, why } if current.id == id => {
                // Its replacement is starting already and takes the slot when Ready.
                let _ = why;
                self.slots[id.slot as usize].state = SlotState::Starting { new };
                let slot = &mut self.slots[id.slot as usize];
                slot.restarts += 1;
                slot.failures = Self::failures_after(&self.opts, slot.failures, now, &current);
                tracing::warn!(slot = id.slot, generation = id.generation, pid = current.pid, %cause, "worker gone while being replaced");
                self.leave_dead(current, exited);
                return;
            }
            other => {
                slot.state = other;
                return;
            }
        };
        let slot = &mut self.slots[id.slot as usize];
        slot.restarts += 1;
        slot.failures = Self::failures_after(&self.opts, slot.failures, now, &lost);
        let lived = now.saturating_duration_since(lost.started);
        let pid = lost.pid;
        self.leave_dead(lost, exited);
        if replacement_failed {
            let why = format!("worker {id} exited before it was Ready: {cause}");
            tracing::warn!(slot = id.slot, generation = id.generation, pid, "{why}");
            self.rollout_step(now, Step::Failed(id, why));
        }
        if why.is_some_and(|why| !why.unhealthy) {
            // The serving worker stays: nothing to restart.
            return;
        }
        if matches!(self.slots[id.slot as usize].state, SlotState::Empty { .. }) {
            self.restart(now, id, lived, pid, cause, exited);
        }
    }

    /// Quick deaths in a row after `proc`'s: reset by a stable run.
    fn failures_after(opts: &Options, failures: u32, now: Instant, proc: &Proc) -> u32 {
        if now.saturating_duration_since(proc.started) >= opts.stable_after {
            0
        } else {
            failures.saturating_add(1)
        }
    }

    /// `proc` is gone from its slot; if its process may still run, it is killed after a grace.
    fn leave_dead(&mut self, proc: Proc, exited: bool) {
        if exited {
            return;
        }
        let id = proc.id;
        self.leaving.insert(
            id,
            Leaving {
                proc,
                killed: None,
                lost: true,
            },
        );
        self.after(LOST_CONNECTION_GRACE, Timer::Lost(id));
    }

    /// Starts the slot of `gone`, empty now, again: at once, or after its backoff.
    fn restart(
        &mut self,
        now: Instant,
        gone: WorkerId,
        lived: Duration,
        pid: Option<u32>,
        cause: &str,
        exited: bool,
    ) {
        if self.stop != Stop::Running {
            return;
        }
        let slot = gone.slot;
        let s = &mut self.slots[slot as usize];
        let delay = self.opts.backoff(s.failures);
        let ready = self.ready_summary();
        let generation = gone.generation;
        if exited {
            tracing::warn!(slot, generation, pid, %cause, ?lived, restart_in = ?delay, %ready, "worker exited; restarting its slot");
        } else {
            tracing::warn!(slot, generation, pid, %cause, ?lived, restart_in = ?delay, %ready, "worker lost; restarting its slot");
        }
        if delay.is_zero() {
            let new = self.start(now, slot, "restart after an exit");
            self.slots[slot as usize].state = SlotState::Starting { new };
        } else {
            let s = &mut self.slots[slot as usize];
            s.retry += 1;
            let retry = s.retry;
            s.state = SlotState::Empty {
                at: Some(now + delay),
            };
            self.after(delay, Timer::Restart { slot, retry });
        }
    }

    fn unhealthy(&mut self, now: Instant, id: WorkerId, reason: &str) {
        if self.stop != Stop::Running {
            return;
        }
        let Some(slot) = self.slots.get_mut(id.slot as usize) else {
            return;
        };
        match &mut slot.state {
            SlotState::Serving { current } if current.id == id => {
                tracing::warn!(slot = id.slot, generation = id.generation, %reason, "worker unhealthy; starting its replacement");
                let SlotState::Serving { current } =
                    std::mem::replace(&mut slot.state, SlotState::Empty { at: None })
                else {
                    unreachable!("matched above")
                };
                let new = self.start(now, id.slot, "replacing an unhealthy worker");
                let why = Replace {
                    reload: false,
                    unhealthy: true,
                };
                self.slots[id.slot as usize].state = SlotState::Replacing { current, new, why };
            }
            SlotState::Replacing { current, why, .. } if current.id == id => {
                why.unhealthy = true;
            }
            SlotState::Starting { new } | SlotState::Replacing { new, .. } if new.id == id => {
                // Not Ready yet: nothing serves on it to lose.
                self.give_up_new(now, id, format!("unhealthy before it was Ready: {reason}"));
            }
            _ => {}
        }
    }

    /// The starting worker `id` is killed: its slot goes on as if it had exited.
    fn give_up_new(&mut self, now: Instant, id: WorkerId, cause: String) {
        let Some((proc, true)) = self.find(id).map(|(p, new)| (p.clone(), new)) else {
            return;
        };
        self.gone(now, id, &cause, true);
        self.kill(proc, cause);
    }

    fn timer(&mut self, now: Instant, timer: Timer) {
        match timer {
            Timer::Ready(id) => {
                if matches!(self.find(id), Some((_, true))) {
                    let cause = format!("not Ready within {:?}", self.opts.ready_timeout);
                    self.give_up_new(now, id, cause);
                }
            }
            Timer::Kill(id) => {
                if let Some(leaving) = self.leaving.get_mut(&id) {
                    if leaving.killed.is_none() {
                        let cause = format!(
                            "still running {:?} after it was told to drain",
                            self.opts.kill_timeout
                        );
                        leaving.killed = Some(cause.clone());
                        tracing::warn!(slot = id.slot, generation = id.generation, pid = leaving.proc.pid, %cause, "killing worker");
                        self.actions.push(Action::Kill { id, cause });
                    }
                }
            }
            Timer::Lost(id) => {
                if let Some(leaving) = self.leaving.get_mut(&id) {
                    if leaving.killed.is_none() {
                        let cause = "lost its connection and did not exit".to_owned();
                        leaving.killed = Some(cause.clone());
                        self.actions.push(Action::Kill { id, cause });
                    }
                }
            }
            Timer::Restart { slot, retry } => {
                let Some(s) = self.slots.get(slot as usize) else {
                    return;
                };
                if s.retry == retry
                    && matches!(s.state, SlotState::Empty { .. })
                    && self.stop == Stop::Running
                {
                    let new = self.start(now, slot, "restart");
                    self.slots[slot as usize].state = SlotState::Starting { new };
                }
            }
        }
    }

    fn reload(&mut self, now: Instant, ticket: u64) {
        if self.stop != Stop::Running {
            return self.actions.push(Action::ReloadDone {
                tickets: vec![ticket],
                result: Err(ReloadError::Stopping),
            });
        }
        if !self.booted {
            // The workers start from the binary as it is now: nothing to roll.
            tracing::info!(
                "reload asked before the workers started: they start from the binary as it is"
            );
            return self.actions.push(Action::ReloadDone {
                tickets: vec![ticket],
                result: Ok(()),
            });
        }
        if self.rollout.is_some() {
            return self.next_reload.push(ticket);
        }
        tracing::info!(
            slots = self.slots.len(),
            batch = self.opts.reload_batch,
            "reload: rolling every slot"
        );
        self.rollout = Some(Rollout::new(
            vec![ticket],
            self.slots.len() as u32,
            self.opts.reload_batch,
        ));
        self.rollout_step(now, Step::Next);
    }

    /// Moves the rollout on after `step`: the next batch of slots, or its end.
    fn rollout_step(&mut self, now: Instant, step: Step) {
        let Some(rollout) = self.rollout.as_mut() else {
            return;
        };
        let next = match rollout.step(step) {
            super::rollout::Next::Wait => return,
            super::rollout::Next::Replace(slots) => slots,
            super::rollout::Next::Done(tickets, result) => {
                self.rollout = None;
                match &result {
                    Ok(()) => tracing::info!("reload complete: every slot runs a new worker"),
                    Err(e) => tracing::error!("reload failed: {e}"),
                }
                let result = result.map_err(ReloadError::Failed);
                self.actions.push(Action::ReloadDone { tickets, result });
                let waiting = std::mem::take(&mut self.next_reload);
                if let Some((&first, rest)) = waiting.split_first() {
                    self.reload(now, first);
                    if let Some(rollout) = self.rollout.as_mut() {
                        rollout.join(rest);
                    }
                }
                return;
            }
        };
        for slot in next {
            let waited = self.replace_for_reload(now, slot);
            if let Some(rollout) = self.rollout.as_mut() {
                rollout.waiting(slot, waited);
            }
        }
        // A batch whose slots all got Ready at once (none to wait for) moves on.
        self.rollout_step(now, Step::Check);
    }

    /// Starts replacing `slot`'s worker for a reload: the worker to wait for.
    fn replace_for_reload(&mut self, now: Instant, slot: u32) -> WorkerId {
        let state = std::mem::replace(
            &mut self.slots[slot as usize].state,
            SlotState::Empty { at: None },
        );
        let state = match state {
            SlotState::Serving { current } => {
                let new = self.start(now, slot, "reload");
                let why = Replace {
                    reload: true,
                    unhealthy: false,
                };
                SlotState::Replacing { current, new, why }
            }
            SlotState::Replacing {
                current,
                new,
                mut why,
            } => {
                why.reload = true;
                SlotState::Replacing { current, new, why }
            }
            // Starting now: it runs the binary as it is.
            SlotState::Starting { new } => SlotState::Starting { new },
            // Backing off: start it now.
            SlotState::Empty { .. } => SlotState::Starting {
                new: self.start(now, slot, "reload"),
            },
        };
        let waited = match &state {
            SlotState::Replacing { new, .. } | SlotState::Starting { new } => new.id,
            _ => unreachable!("set above"),
        };
        self.slots[slot as usize].state = state;
        waited
    }

    fn stop(&mut self, graceful: bool) {
        let first = self.stop == Stop::Running;
        if let Some(rollout) = self.rollout.take() {
            let mut tickets = rollout.tickets();
            tickets.append(&mut self.next_reload);
            self.actions.push(Action::ReloadDone {
                tickets,
                result: Err(ReloadError::Stopping),
            });
        }
        if first {
            self.actions.push(Action::CloseListeners);
        }
        let procs: Vec<Proc> = self
            .slots
            .iter_mut()
            .flat_map(|s| {
                s.retry += 1;
                match std::mem::replace(&mut s.state, SlotState::Empty { at: None }) {
                    SlotState::Empty { .. } => vec![],
                    SlotState::Starting { new } => vec![new],
                    SlotState::Serving { current } => vec![current],
                    SlotState::Replacing { current, new, .. } => vec![current, new],
                }
            })
            .collect();
        if graceful && first {
            self.stop = Stop::Draining;
            tracing::info!(
                workers = procs.len() + self.leaving.len(),
                "stopping: draining every worker"
            );
            for proc in procs {
                self.drain(proc, "the cluster is stopping".into());
            }
        } else {
            self.stop = Stop::Killing;
            tracing::warn!(
                workers = procs.len() + self.leaving.len(),
                "stopping at once: killing every worker"
            );
            for proc in procs {
                self.kill(proc, "the cluster is stopping at once".into());
            }
            let cause = "the cluster is stopping at once".to_owned();
            for (id, leaving) in &mut self.leaving {
                if leaving.killed.is_none() {
                    leaving.killed = Some(cause.clone());
                    self.actions.push(Action::Kill {
                        id: *id,
                        cause: cause.clone(),
                    });
                }
            }
        }
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

    /// Whether a stop was asked.
    pub fn stopping(&self) -> bool {
        self.stop != Stop::Running
    }
}
