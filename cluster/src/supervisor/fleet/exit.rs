//! A worker gone (its process exited, or its connection ended), failing (unhealthy, late), and
//! its slot carrying on without it: restarted at once or after a backoff.

use std::time::Duration;

use tokio::time::Instant;

use super::{
    Action, Fleet, Leaving, Proc, Replace, SlotState, Start, Stop, Timer, LOST_CONNECTION_GRACE,
};
use crate::options::Options;
use crate::supervisor::rollout::Step;
use messenger::WorkerId;

impl Fleet {
    /// Worker `id` is gone (`exited`), or no longer usable (its connection ended): its slot
    /// carries on without it.
    pub(super) fn gone(&mut self, now: Instant, id: WorkerId, cause: &str, exited: bool) {
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
                if slot.failures > 0 {
                    slot.last_failure = Some(now);
                }
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
        if slot.failures > 0 {
            slot.last_failure = Some(now);
        }
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
    pub(super) fn failures_after(opts: &Options, failures: u32, now: Instant, proc: &Proc) -> u32 {
        if now.saturating_duration_since(proc.started) >= opts.stable_after {
            0
        } else {
            failures.saturating_add(1)
        }
    }

    /// `proc` is gone from its slot; if its process may still run, it is killed after a grace.
    pub(super) fn leave_dead(&mut self, proc: Proc, exited: bool) {
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
    pub(super) fn restart(
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
            let new = self.start(now, slot, Start::AfterExit);
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

    pub(super) fn unhealthy(&mut self, now: Instant, id: WorkerId, reason: &str) {
        if self.stop != Stop::Running {
            return;
        }
        let Some(slot) = self.slots.get_mut(id.slot as usize) else {
            return;
        };
        match &mut slot.state {
            SlotState::Serving { current } if current.id == id => {
                tracing::warn!(
                    slot = id.slot,
                    generation = id.generation,
                    ?reason,
                    "worker unhealthy; starting its replacement"
                );
                let SlotState::Serving { current } =
                    std::mem::replace(&mut slot.state, SlotState::Empty { at: None })
                else {
                    unreachable!("matched above")
                };
                let new = self.start(now, id.slot, Start::Unhealthy);
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

    /// Worker `id` is past the recycling policy (`reason`): replaced new first, then drained;
    /// if its replacement fails, it keeps serving. One slot at a time, never during a rollout,
    /// and not in a slot whose workers died young lately (a failing binary would be retried
    /// over and over).
    pub(super) fn recycle(&mut self, now: Instant, id: WorkerId, reason: &str) {
        let busy = self.rollout.is_some()
            || self
                .slots
                .iter()
                .any(|s| matches!(s.state, SlotState::Replacing { .. }));
        if self.stop != Stop::Running || busy {
            return;
        }
        let Some(slot) = self.slots.get_mut(id.slot as usize) else {
            return;
        };
        let SlotState::Serving { current } = &slot.state else {
            return;
        };
        // Workers of this slot died young lately (a replacement that failed, say): not again
        // until `stable_after` times 2^failures has passed since, so that a broken binary is
        // not started over and over.
        let calm = slot.last_failure.map_or(true, |at| {
            let wait = self
                .opts
                .stable_after
                .saturating_mul(1 << slot.failures.min(6));
            now.saturating_duration_since(at) >= wait
        });
        if current.id != id || (slot.failures > 0 && !calm) {
            return;
        }
        let SlotState::Serving { current } =
            std::mem::replace(&mut slot.state, SlotState::Empty { at: None })
        else {
            unreachable!("matched above")
        };
        tracing::info!(slot = id.slot, generation = id.generation, pid = current.pid, %reason, "recycling worker; starting its replacement");
        let new = self.start(now, id.slot, Start::Recycle);
        let why = Replace {
            reload: false,
            unhealthy: false,
        };
        self.slots[id.slot as usize].state = SlotState::Replacing { current, new, why };
    }

    /// The starting worker `id` is killed: its slot goes on as if it had exited.
    pub(super) fn give_up_new(&mut self, now: Instant, id: WorkerId, cause: String) {
        let Some((proc, true)) = self.find(id).map(|(p, new)| (p.clone(), new)) else {
            return;
        };
        self.gone(now, id, &cause, true);
        self.kill(proc, cause);
    }

    pub(super) fn timer(&mut self, now: Instant, timer: Timer) {
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
                    let new = self.start(now, slot, Start::AfterExit);
                    self.slots[slot as usize].state = SlotState::Starting { new };
                }
            }
        }
    }
}
