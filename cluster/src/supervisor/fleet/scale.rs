//! Scaling at runtime: slots added start a worker at once; slots taken away drain theirs (a
//! worker's in-flight work is never cut short) and are gone from `map` and `consume` as soon as
//! they are drained in the Hub.

use tokio::time::Instant;

use super::{Fleet, Slot, SlotState, Start, Stop};

/// Why the number of slots cannot change now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ScaleError {
    /// The cluster stops.
    Stopping,
    /// A rolling reload runs: its batches are counted in slots.
    Reloading,
    /// Fewer than one, or more than the cluster allows (`Builder::max_workers`).
    OutOfRange { asked: usize, max: usize },
}

impl std::fmt::Display for ScaleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScaleError::Stopping => f.write_str("the cluster is stopping"),
            ScaleError::Reloading => {
                f.write_str("a rolling reload runs; scale once it is over (Master::ready)")
            }
            ScaleError::OutOfRange { asked, max } => write!(
                f,
                "{asked} workers: a cluster has from 1 to {max} (Builder::max_workers)"
            ),
        }
    }
}

impl Fleet {
    /// Makes the cluster `workers` slots: new ones start at once (once the workers have
    /// booted), the last ones over the count drain their workers and are gone.
    pub(super) fn scale(&mut self, now: Instant, workers: usize) -> Result<(), ScaleError> {
        if self.stop != Stop::Running {
            return Err(ScaleError::Stopping);
        }
        if self.rollout.is_some() {
            return Err(ScaleError::Reloading);
        }
        let max = self.opts.max_workers;
        if workers == 0 || workers > max {
            return Err(ScaleError::OutOfRange {
                asked: workers,
                max,
            });
        }
        let from = self.slots.len();
        if workers != from {
            tracing::info!(from, to = workers, "scaling");
        }
        while self.slots.len() < workers {
            let slot = self.slots.len();
            // A slot that existed before goes on from its last generation: a worker of it may
            // still be draining, and ids are never reused.
            // So does its restart counter: a restart scheduled before it was removed is stale.
            let (generation, retry) = self.removed.get(slot).copied().unwrap_or((0, 0));
            self.slots.push(Slot {
                generation,
                state: SlotState::Empty { at: None },
                failures: 0,
                restarts: 0,
                retry,
                last_failure: None,
            });
            if self.booted {
                let new = self.start(now, slot as u32, Start::ScaleUp);
                self.slots[slot].state = SlotState::Starting { new };
            }
        }
        while self.slots.len() > workers {
            let slot = self.slots.pop().expect("more slots than asked");
            let index = self.slots.len();
            if self.removed.len() <= index {
                self.removed.resize(index + 1, (0, 0));
            }
            self.removed[index] = (slot.generation, slot.retry + 1);
            let why = || format!("scaled down to {workers} workers");
            match slot.state {
                SlotState::Empty { .. } => {}
                SlotState::Starting { new } => self.drain(new, why()),
                SlotState::Serving { current } => self.drain(current, why()),
                SlotState::Replacing { current, new, .. } => {
                    self.drain(new, why());
                    self.drain(current, why());
                }
            }
        }
        Ok(())
    }
}
