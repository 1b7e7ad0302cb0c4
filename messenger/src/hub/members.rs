//! The Ready set: which worker serves each slot, as the master decided.
//!
//! A worker's "I am Ready" is a request. In a cluster the supervisor answers it (the Hub only
//! carries out its decision: [`Hub::admit`](super::Hub::admit)); a Hub on its own (the mock
//! cluster) answers by the same rule the supervisor keeps: a worker may take its slot if it was
//! never drained and no newer generation has held the slot. Either way, a worker replaced or
//! drained can never take its slot back, and making one worker Ready removes the one it
//! replaces in the same step.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap as HashMap;

use crate::WorkerId;

/// Who decides whether a worker may be Ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Admission {
    /// The Hub, by the rule above.
    Auto,
    /// The supervisor, asked with [`HubEvent::ReadyAsked`](super::HubEvent::ReadyAsked).
    Supervised,
}

#[derive(Default)]
pub(super) struct Members {
    /// The Ready worker of each slot, in slot order.
    ready: BTreeMap<u32, WorkerId>,
    /// Which Ready set this is: bumped whenever it changes (0 before any), so a `map`'s caller
    /// that knows the current one needs no member list.
    epoch: u64,
    /// Per slot, the lowest generation that may still be Ready (past the newest admitted, and
    /// past any drained).
    floor: HashMap<u32, u64>,
}

impl Members {
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The Ready workers, in slot order.
    pub fn workers(&self) -> impl Iterator<Item = WorkerId> + Clone + '_ {
        self.ready.values().copied()
    }

    pub fn in_slot(&self, slot: u32) -> Option<WorkerId> {
        self.ready.get(&slot).copied()
    }

    pub fn is_ready(&self, id: WorkerId) -> bool {
        self.ready.get(&id.slot) == Some(&id)
    }

    /// Whether the Hub's own rule lets `id` be Ready.
    pub fn may_be_ready(&self, id: WorkerId) -> bool {
        id.generation >= self.floor.get(&id.slot).copied().unwrap_or(0)
    }

    /// Makes `id` its slot's Ready worker: the one it replaces, if any.
    pub fn admit(&mut self, id: WorkerId) -> Option<WorkerId> {
        let floor = self.floor.entry(id.slot).or_default();
        *floor = (*floor).max(id.generation);
        let old = self.ready.insert(id.slot, id);
        if old != Some(id) {
            self.epoch += 1;
        }
        old.filter(|old| *old != id)
    }

    /// `id` leaves the Ready set for good; `true` if it was in it.
    pub fn retire(&mut self, id: WorkerId) -> bool {
        let floor = self.floor.entry(id.slot).or_default();
        *floor = (*floor).max(id.generation.saturating_add(1));
        self.remove(id)
    }

    /// `id` is gone (its connection ended); `true` if it was Ready.
    pub fn remove(&mut self, id: WorkerId) -> bool {
        if self.is_ready(id) {
            self.ready.remove(&id.slot);
            self.epoch += 1;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_or_drained_worker_never_comes_back() {
        let mut members = Members::default();
        let (old, new) = (WorkerId::new(0, 1), WorkerId::new(0, 2));
        assert_eq!(members.admit(old), None);
        assert_eq!(members.admit(new), Some(old));
        assert!(!members.may_be_ready(old), "superseded");
        assert!(members.may_be_ready(new));
        assert!(members.retire(new));
        assert!(!members.may_be_ready(new), "drained");
        assert!(members.may_be_ready(WorkerId::new(0, 3)));
        assert_eq!(members.workers().count(), 0);
    }

    #[test]
    fn the_epoch_moves_with_every_change_and_only_then() {
        let mut members = Members::default();
        let a = WorkerId::new(0, 1);
        members.admit(a);
        let epoch = members.epoch();
        members.admit(a);
        assert_eq!(members.epoch(), epoch, "already Ready");
        assert!(!members.remove(WorkerId::new(1, 1)));
        assert_eq!(members.epoch(), epoch);
        assert!(members.remove(a));
        assert_eq!(members.epoch(), epoch + 1);
    }
}
