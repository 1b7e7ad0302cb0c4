//! The orders for the whole cluster: a rolling reload, and the stop.

use tokio::time::Instant;

use super::{Action, Fleet, Proc, ReloadError, Replace, SlotState, Start, Stop};
use crate::supervisor::rollout::{Next, Rollout, Step};
use messenger::WorkerId;

impl Fleet {
    pub(super) fn reload(&mut self, now: Instant, ticket: u64, asker: Option<WorkerId>) {
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
        if let Some(id) = asker.filter(|&id| self.is_starting(id)) {
            // The rollout would wait for it to get Ready, and it waits for the rollout: refused
            // at once, not a deadlock until its ready timeout.
            return self.actions.push(Action::ReloadDone {
                tickets: vec![ticket],
                result: Err(ReloadError::Failed(format!(
                    "asked by worker {id} before it was Ready: a worker asks for a reload once \
                     ready() has returned (it runs the binary as it is)"
                ))),
            });
        }
        let askers: Vec<u32> = asker.map(|id| id.slot).into_iter().collect();
        if self.rollout.is_some() {
            self.next_askers.extend(askers);
            return self.next_reload.push(ticket);
        }
        self.start_rollout(now, vec![ticket], &askers);
    }

    /// Whether `id` is a worker started and not yet Ready.
    fn is_starting(&self, id: WorkerId) -> bool {
        self.slots
            .get(id.slot as usize)
            .is_some_and(|slot| match &slot.state {
                SlotState::Starting { new } | SlotState::Replacing { new, .. } => new.id == id,
                SlotState::Empty { .. } | SlotState::Serving { .. } => false,
            })
    }

    /// Starts a rollout for `tickets`, the slots of `askers` last.
    fn start_rollout(&mut self, now: Instant, tickets: Vec<u64>, askers: &[u32]) {
        tracing::info!(
            slots = self.slots.len(),
            batch = self.opts.reload_batch,
            "reload: rolling every slot"
        );
        self.rollout = Some(Rollout::new(
            tickets,
            self.slots.len() as u32,
            self.opts.reload_batch,
            askers,
        ));
        self.rollout_step(now, Step::Next);
    }

    /// Moves the rollout on after `step`: the next batch of slots, or its end.
    pub(super) fn rollout_step(&mut self, now: Instant, step: Step) {
        let Some(rollout) = self.rollout.as_mut() else {
            return;
        };
        let next = match rollout.step(step) {
            Next::Wait => return,
            Next::Replace(slots) => slots,
            Next::Done(tickets, result) => {
                self.rollout = None;
                match &result {
                    Ok(()) => {
                        self.totals.reloads_succeeded += 1;
                        tracing::info!("reload complete: every slot runs a new worker")
                    }
                    Err(e) => {
                        self.totals.reloads_failed += 1;
                        tracing::error!("reload failed: {e}")
                    }
                }
                let result = result.map_err(ReloadError::Failed);
                self.actions.push(Action::ReloadDone { tickets, result });
                let waiting = std::mem::take(&mut self.next_reload);
                let askers = std::mem::take(&mut self.next_askers);
                if !waiting.is_empty() {
                    self.start_rollout(now, waiting, &askers);
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
    pub(super) fn replace_for_reload(&mut self, now: Instant, slot: u32) -> WorkerId {
        let state = std::mem::replace(
            &mut self.slots[slot as usize].state,
            SlotState::Empty { at: None },
        );
        let state = match state {
            SlotState::Serving { current } => {
                let new = self.start(now, slot, Start::Reload);
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
                new: self.start(now, slot, Start::Reload),
            },
        };
        let waited = match &state {
            SlotState::Replacing { new, .. } | SlotState::Starting { new } => new.id,
            _ => unreachable!("set above"),
        };
        self.slots[slot as usize].state = state;
        waited
    }

    pub(super) fn stop(&mut self, graceful: bool) {
        let first = self.stop == Stop::Running;
        if let Some(rollout) = self.rollout.take() {
            let mut tickets = rollout.tickets();
            tickets.append(&mut self.next_reload);
            self.next_askers.clear();
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
