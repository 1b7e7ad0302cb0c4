//! The snapshot an operator reads: every slot, its workers and where each is in its life; and
//! the serving workers, for the recycling policy.

use tokio::time::Instant;

use messenger::WorkerId;

use super::{Fleet, Proc, SlotState};
use crate::status::{SlotStatus, Status, WorkerState, WorkerStatus};

impl Fleet {
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
        // The workers of slots taken away by scaling, draining.
        let mut removed: Vec<SlotStatus> = Vec::new();
        let mut leaving: Vec<&Proc> = self
            .leaving
            .values()
            .map(|l| &l.proc)
            .filter(|p| p.id.slot as usize >= self.slots.len())
            .collect();
        leaving.sort_by_key(|p| p.id);
        for proc in leaving {
            let w = worker(proc, WorkerState::Draining);
            match removed.last_mut() {
                Some(slot) if slot.slot == proc.id.slot => slot.workers.push(w),
                _ => removed.push(SlotStatus {
                    slot: proc.id.slot,
                    workers: vec![w],
                    // Counted while it was one of the cluster's; gone with it.
                    restarts: 0,
                    backoff: None,
                }),
            }
        }
        Status {
            phase: self.phase(),
            slots,
            removed,
            totals: self.totals.clone(),
        }
    }

    /// Every serving worker: its id, pid and start.
    pub fn serving_workers(&self) -> Vec<(WorkerId, Option<u32>, Instant)> {
        self.slots
            .iter()
            .filter_map(|s| match &s.state {
                SlotState::Serving { current } => Some((current.id, current.pid, current.started)),
                _ => None,
            })
            .collect()
    }
}
