//! A worker's way into its slot: started, its process running, its request to be Ready
//! granted or refused; and its way out when told: drained or killed.

use tokio::time::Instant;

use super::{Action, Fleet, Leaving, Proc, SlotState, Stop, Timer};
use crate::supervisor::rollout::Step;
use messenger::WorkerId;

/// Why a worker is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Start {
    /// The cluster's first workers.
    Boot,
    /// In place of one that exited, or lost its connection, unasked.
    AfterExit,
    /// In place of one that reported itself unhealthy or missed its heartbeats.
    Unhealthy,
    /// In place of one past the recycling policy.
    Recycle,
    /// A rolling reload.
    Reload,
    /// A slot added by scaling.
    ScaleUp,
}

impl std::fmt::Display for Start {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Start::Boot => "boot",
            Start::AfterExit => "restart after an exit",
            Start::Unhealthy => "replacing an unhealthy worker",
            Start::Recycle => "recycling",
            Start::Reload => "reload",
            Start::ScaleUp => "scale up",
        })
    }
}

impl Fleet {
    pub(super) fn boot(&mut self, now: Instant) {
        if self.booted || self.stop != Stop::Running {
            self.booted = true;
            return;
        }
        self.booted = true;
        for slot in 0..self.slots.len() as u32 {
            let new = self.start(now, slot, Start::Boot);
            self.slots[slot as usize].state = SlotState::Starting { new };
        }
    }

    /// A new worker process for `slot`: the next generation, with its deadline to get Ready.
    pub(super) fn start(&mut self, now: Instant, slot: u32, cause: Start) -> Proc {
        match cause {
            Start::AfterExit => self.totals.restarts_exited += 1,
            Start::Unhealthy => self.totals.restarts_unhealthy += 1,
            Start::Recycle => self.totals.restarts_recycled += 1,
            Start::Boot | Start::Reload | Start::ScaleUp => {}
        }
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

    pub(super) fn spawned(&mut self, id: WorkerId, pid: u32) {
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

    pub(super) fn ready_asked(&mut self, now: Instant, id: WorkerId) {
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
    pub(super) fn drain(&mut self, proc: Proc, why: String) {
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
    pub(super) fn kill(&mut self, proc: Proc, cause: String) {
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
}
