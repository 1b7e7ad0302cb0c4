//! What the master can tell about itself: its phase and every slot's workers.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The master's phase, watchable through [`Master::phase`](crate::Master::phase).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Phase {
    /// Binding listeners and running the master bootstrap.
    Starting,
    /// Every slot is supervised; workers are started and replaced as needed.
    Running,
    /// A rolling reload is under way.
    Reloading,
    /// Every worker is draining; no new worker starts.
    Stopping,
    /// Every worker has exited.
    Stopped,
}

/// A worker's life cycle: `Starting -> Ready -> Draining -> Exited`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum WorkerState {
    /// Started, not yet Ready: gets no messages, does not count for `map`.
    Starting,
    /// Said it is ready: gets messages and counts for `map`.
    Ready,
    /// Told to stop accepting and finish its work.
    Draining,
    /// Gone.
    Exited,
}

/// One worker process in a [`Status`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WorkerStatus {
    /// The generation in its slot (grows with every replacement).
    pub generation: u64,
    /// The process id.
    pub pid: u32,
    /// Where it is in its life cycle.
    pub state: WorkerState,
    /// Time since it was started.
    pub uptime: Duration,
}

/// One slot in a [`Status`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SlotStatus {
    /// The slot number: 0..N-1 for the cluster's N slots, N or more for a slot that scaling
    /// took away ([`Status::removed`]).
    pub slot: u32,
    /// Its live processes: usually one; two while one replaces the other.
    pub workers: Vec<WorkerStatus>,
    /// How many times the slot lost its worker, or a replacement being started for it, other
    /// than by replacing it.
    pub restarts: u64,
    /// When the slot is backing off after repeated crashes: the time left before the next start.
    pub backoff: Option<Duration>,
}

/// A snapshot of the cluster, from [`Master::status`](crate::Master::status).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Status {
    /// The master's phase.
    pub phase: Phase,
    /// Every slot, in slot order.
    pub slots: Vec<SlotStatus>,
    /// Slots taken away by [`Master::scale`](crate::Master::scale) whose workers still drain
    /// (each one [`WorkerState::Draining`]), in slot order: gone from the cluster's count, not
    /// yet from the machine. Their `restarts` read 0 (a slot's count ends with it) and their
    /// `backoff` is `None`.
    #[serde(default)]
    pub removed: Vec<SlotStatus>,
    /// What the supervisor did since the master started.
    pub totals: Totals,
}

/// Restarts by cause and reloads by outcome, since the master started, in a [`Status`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Totals {
    /// Workers started in place of one that exited, or lost its connection, unasked (a crash,
    /// or one that never got Ready).
    pub restarts_exited: u64,
    /// Workers started in place of one that reported itself unhealthy or missed its
    /// heartbeats (new first).
    pub restarts_unhealthy: u64,
    /// Workers started in place of one past the recycling policy (new first).
    pub restarts_recycled: u64,
    /// Rolling reloads that replaced every slot.
    pub reloads_succeeded: u64,
    /// Rolling reloads that stopped where a new worker failed.
    pub reloads_failed: u64,
}

impl Status {
    /// The slots, then the removed slots whose workers still drain.
    pub fn all_slots(&self) -> impl Iterator<Item = &SlotStatus> {
        self.slots.iter().chain(&self.removed)
    }

    /// How many workers are Ready.
    pub fn ready(&self) -> usize {
        self.slots
            .iter()
            .flat_map(|s| &s.workers)
            .filter(|w| w.state == WorkerState::Ready)
            .count()
    }

    /// The pids of the Ready workers, in slot order.
    pub fn ready_pids(&self) -> Vec<u32> {
        self.slots
            .iter()
            .flat_map(|s| &s.workers)
            .filter(|w| w.state == WorkerState::Ready)
            .map(|w| w.pid)
            .collect()
    }
}
