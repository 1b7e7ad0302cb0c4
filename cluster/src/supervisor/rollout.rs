//! A rolling reload: slots replaced a batch at a time, each batch once the previous one's new
//! workers are Ready. The first replacement that fails stops the rollout there (the old
//! workers of the slots left keep serving); whoever asked hears how it ended.

use std::collections::{BTreeMap, VecDeque};

use messenger::WorkerId;

/// What happened, for the rollout.
#[derive(Debug)]
pub(crate) enum Step {
    /// Start (the first batch).
    Next,
    /// Worker `id` got Ready.
    Ready(WorkerId),
    /// Worker `id` will never be Ready, for this reason.
    Failed(WorkerId, String),
    /// Look again (a batch was just started).
    Check,
}

/// What to do next.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// Wait for the new workers of the batch under way.
    Wait,
    /// Replace the workers of these slots.
    Replace(Vec<u32>),
    /// The rollout is over: answer these tickets.
    Done(Vec<u64>, Result<(), String>),
}

#[derive(Debug)]
pub(crate) struct Rollout {
    tickets: Vec<u64>,
    /// Slots not started yet, in order.
    queue: VecDeque<u32>,
    batch: usize,
    /// The new worker each slot of the batch under way waits for.
    waiting: BTreeMap<u32, WorkerId>,
    done: usize,
    total: usize,
}

impl Rollout {
    /// A rollout of `slots` slots, `batch` at a time, for `tickets`; the slots in `last` (those
    /// of the workers that asked for it) are replaced last, so that a worker that asked learns
    /// the outcome before it is told to drain or at the same time, never a whole rollout before.
    pub fn new(tickets: Vec<u64>, slots: u32, batch: usize, last: &[u32]) -> Rollout {
        let mut queue: VecDeque<u32> = (0..slots).filter(|s| !last.contains(s)).collect();
        for &slot in last {
            if slot < slots && !queue.contains(&slot) {
                queue.push_back(slot);
            }
        }
        Rollout {
            tickets,
            queue,
            batch: batch.max(1),
            waiting: BTreeMap::new(),
            done: 0,
            total: slots as usize,
        }
    }

    /// Its tickets, to answer when it is given up.
    pub fn tickets(self) -> Vec<u64> {
        self.tickets
    }

    /// Slot `slot` of the batch waits for worker `id`.
    pub fn waiting(&mut self, slot: u32, id: WorkerId) {
        self.waiting.insert(slot, id);
    }

    pub fn step(&mut self, step: Step) -> Next {
        match step {
            Step::Ready(id) if self.waiting.get(&id.slot) == Some(&id) => {
                self.waiting.remove(&id.slot);
                self.done += 1;
            }
            Step::Failed(id, why) if self.waiting.get(&id.slot) == Some(&id) => {
                let why = format!(
                    "slot {}: {why}; stopped after {} of {} slots, the other workers keep serving",
                    id.slot, self.done, self.total
                );
                return Next::Done(std::mem::take(&mut self.tickets), Err(why));
            }
            _ => {}
        }
        if !self.waiting.is_empty() {
            return Next::Wait;
        }
        if self.queue.is_empty() {
            return Next::Done(std::mem::take(&mut self.tickets), Ok(()));
        }
        let n = self.batch.min(self.queue.len());
        Next::Replace(self.queue.drain(..n).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_follow_each_other_and_a_failure_stops_the_rollout() {
        let mut rollout = Rollout::new(vec![7], 3, 2, &[]);
        assert_eq!(rollout.step(Step::Next), Next::Replace(vec![0, 1]));
        rollout.waiting(0, WorkerId::new(0, 2));
        rollout.waiting(1, WorkerId::new(1, 2));
        assert_eq!(
            rollout.step(Step::Ready(WorkerId::new(0, 1))),
            Next::Wait,
            "not the one"
        );
        assert_eq!(rollout.step(Step::Ready(WorkerId::new(0, 2))), Next::Wait);
        assert_eq!(
            rollout.step(Step::Ready(WorkerId::new(1, 2))),
            Next::Replace(vec![2])
        );
        rollout.waiting(2, WorkerId::new(2, 2));
        match rollout.step(Step::Failed(WorkerId::new(2, 2), "it crashed".into())) {
            Next::Done(tickets, Err(why)) => {
                assert_eq!(tickets, vec![7]);
                assert!(
                    why.contains("slot 2: it crashed") && why.contains("2 of 3"),
                    "{why}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_slots_of_the_workers_that_asked_go_last() {
        let mut rollout = Rollout::new(vec![1], 4, 1, &[1, 0, 1]);
        let mut order: Vec<u32> = Vec::new();
        let mut next = rollout.step(Step::Next);
        while let Next::Replace(slots) = next {
            order.extend(&slots);
            let id = WorkerId::new(slots[0], 2);
            rollout.waiting(slots[0], id);
            next = rollout.step(Step::Ready(id));
        }
        assert_eq!(order, vec![2, 3, 1, 0]);
        assert_eq!(next, Next::Done(vec![1], Ok(())));
    }

    #[test]
    fn a_rollout_of_every_slot_ends_well() {
        let mut rollout = Rollout::new(vec![1, 2, 3], 1, 1, &[0, 0, 5]);
        assert_eq!(rollout.step(Step::Next), Next::Replace(vec![0]));
        rollout.waiting(0, WorkerId::new(0, 5));
        assert_eq!(
            rollout.step(Step::Ready(WorkerId::new(0, 5))),
            Next::Done(vec![1, 2, 3], Ok(()))
        );
    }
}
