//! The state machine tested without processes: scenarios here, random sequences of events
//! in `property` (driving it and a real Hub, the invariants checked after every step).

use std::collections::BTreeSet;
use std::time::Duration;

use messenger::WorkerId;
use tokio::time::Instant;

use super::fleet::{Action, Event, Fleet, SlotState, Timer};
use crate::options::Options;

fn options(workers: usize) -> Options {
    Options {
        workers,
        ready_timeout: Duration::from_secs(30),
        kill_timeout: Duration::from_secs(30),
        backoff_initial: Duration::from_millis(100),
        backoff_max: Duration::from_secs(1),
        stable_after: Duration::from_secs(10),
        reload_batch: 1,
        ..Options::default()
    }
}

fn spawned(actions: &[Action]) -> Vec<WorkerId> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Spawn { id, .. } => Some(*id),
            _ => None,
        })
        .collect()
}

/// A worker that was replaced by a reload and asks to be Ready again is refused, and the
/// slot keeps its new worker (the defect: it took its slot back).
#[test]
fn a_replaced_worker_cannot_take_its_slot_back() {
    let now = Instant::now();
    let mut fleet = Fleet::new(options(1));
    let old = spawned(&fleet.handle(now, Event::Boot))[0];
    assert!(fleet
        .handle(now, Event::ReadyAsked { id: old })
        .contains(&Action::Admit(old)));
    let actions = fleet.handle(
        now,
        Event::Reload {
            ticket: 1,
            asker: None,
        },
    );
    let new = spawned(&actions)[0];
    assert_eq!(new, WorkerId::new(0, 2));
    // The old worker asks again before its replacement is Ready: it is Ready already.
    assert!(fleet
        .handle(now, Event::ReadyAsked { id: old })
        .contains(&Action::Admit(old)));
    let actions = fleet.handle(now, Event::ReadyAsked { id: new });
    assert!(actions.contains(&Action::Admit(new)));
    assert!(actions
        .iter()
        .any(|a| matches!(a, Action::Drain { id, .. } if *id == old)));
    assert!(actions
        .iter()
        .any(|a| matches!(a, Action::ReloadDone { result: Ok(()), .. })));
    // Now it is draining: refused, and the slot is the new worker's.
    let actions = fleet.handle(now, Event::ReadyAsked { id: old });
    assert!(
        matches!(&actions[..], [Action::Refuse { id, .. }] if *id == old),
        "{actions:?}"
    );
    assert_eq!(Fleet::serving(&fleet.slots()[0]), Some(new));
    // Its exit leaves the slot as it is.
    let actions = fleet.handle(
        now,
        Event::Exited {
            id: old,
            status: "exited with status 0".into(),
        },
    );
    assert!(actions.is_empty(), "{actions:?}");
    assert_eq!(Fleet::serving(&fleet.slots()[0]), Some(new));
}

/// A slot whose workers keep dying soon after their start backs off, and is empty only
/// while it does.
#[test]
fn a_crash_loop_backs_off() {
    let mut now = Instant::now();
    let mut fleet = Fleet::new(options(1));
    let mut id = spawned(&fleet.handle(now, Event::Boot))[0];
    let mut delays = Vec::new();
    for _ in 0..4 {
        now += Duration::from_millis(10);
        let status = "exited with status 1".to_owned();
        let actions = fleet.handle(now, Event::Exited { id, status });
        match actions.iter().find_map(|a| match a {
            Action::After {
                delay,
                timer: Timer::Restart { slot, retry },
            } => Some((*delay, *slot, *retry)),
            _ => None,
        }) {
            Some((delay, slot, retry)) => {
                assert!(matches!(
                    fleet.slots()[0].state,
                    SlotState::Empty { at: Some(_) }
                ));
                delays.push(delay);
                now += delay;
                let actions = fleet.handle(now, Event::Timer(Timer::Restart { slot, retry }));
                id = spawned(&actions)[0];
            }
            None => {
                delays.push(Duration::ZERO);
                id = spawned(&actions)[0];
            }
        }
    }
    assert_eq!(
        delays[0],
        Duration::ZERO,
        "the first death restarts at once"
    );
    assert!(
        delays[1] > Duration::ZERO && delays[2] > delays[1],
        "{delays:?}"
    );
}

/// A stop drains every worker, refuses Ready, and is finished when every one has exited.
#[test]
fn a_stop_drains_everyone_and_ends_when_they_have_exited() {
    let now = Instant::now();
    let mut fleet = Fleet::new(options(2));
    let ids = spawned(&fleet.handle(now, Event::Boot));
    fleet.handle(now, Event::ReadyAsked { id: ids[0] });
    let actions = fleet.handle(now, Event::Stop { graceful: true });
    assert!(actions.contains(&Action::CloseListeners));
    let drained: BTreeSet<WorkerId> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Drain { id, .. } => Some(*id),
            _ => None,
        })
        .collect();
    assert_eq!(drained, ids.iter().copied().collect());
    assert!(matches!(
        &fleet.handle(now, Event::ReadyAsked { id: ids[1] })[..],
        [Action::Refuse { .. }]
    ));
    assert!(!fleet.finished());
    for id in ids {
        let status = "exited with status 0".to_owned();
        fleet.handle(now, Event::Exited { id, status });
    }
    assert!(fleet.finished() && fleet.stopped_gracefully());
}

mod property;
mod reload;

/// Boots `workers` slots and makes each first worker Ready: their ids.
fn serving(fleet: &mut Fleet, now: Instant) -> Vec<WorkerId> {
    let ids = spawned(&fleet.handle(now, Event::Boot));
    for id in &ids {
        fleet.handle(
            now,
            Event::Spawned {
                id: *id,
                pid: 100 + id.slot,
            },
        );
        assert!(fleet
            .handle(now, Event::ReadyAsked { id: *id })
            .contains(&Action::Admit(*id)));
    }
    ids
}

fn recycle(id: WorkerId) -> Event {
    Event::Recycle {
        id,
        reason: "ran too long".into(),
    }
}

/// Recycling replaces new first and drains the old one once the new one is Ready; one slot at
/// a time; a failed replacement leaves the old one serving, and its slot is left alone while
/// its workers die young.
#[test]
fn recycling_is_new_first_one_slot_at_a_time_and_never_loops_on_a_failing_binary() {
    let now = Instant::now();
    let mut fleet = Fleet::new(options(2));
    let first = serving(&mut fleet, now);

    let new = spawned(&fleet.handle(now, recycle(first[0])));
    assert_eq!(new, vec![WorkerId::new(0, 2)]);
    assert!(
        spawned(&fleet.handle(now, recycle(first[1]))).is_empty(),
        "one slot at a time"
    );
    let actions = fleet.handle(now, Event::ReadyAsked { id: new[0] });
    assert!(actions.contains(&Action::Admit(new[0])));
    assert!(actions
        .iter()
        .any(|a| matches!(a, Action::Drain { id, .. } if *id == first[0])));

    // Slot 1's replacement dies before it is Ready: the old worker keeps serving...
    let new = spawned(&fleet.handle(now, recycle(first[1])));
    assert_eq!(new, vec![WorkerId::new(1, 2)]);
    let status = "exited with status 1".to_owned();
    fleet.handle(now, Event::Exited { id: new[0], status });
    assert!(
        matches!(&fleet.slots()[1].state, SlotState::Serving { current } if current.id == first[1])
    );
    // ...and is not recycled again at once (a broken binary is not started over and over)...
    assert!(spawned(&fleet.handle(now, recycle(first[1]))).is_empty());
    let later = now + Duration::from_secs(19);
    assert!(spawned(&fleet.handle(later, recycle(first[1]))).is_empty());
    // ...but once stable_after (10 s) times 2^failures has passed, it is tried again.
    let later = now + Duration::from_secs(20);
    let again = spawned(&fleet.handle(later, recycle(first[1])));
    assert_eq!(again, vec![WorkerId::new(1, 3)]);
    fleet.handle(
        later,
        Event::Exited {
            id: again[0],
            status: "exited with status 1".into(),
        },
    );
    // A reload runs: no recycling meanwhile.
    fleet.handle(
        now,
        Event::Reload {
            ticket: 1,
            asker: None,
        },
    );
    assert!(spawned(&fleet.handle(now, recycle(WorkerId::new(0, 2)))).is_empty());
}

/// The totals count each restart by its cause, and each rollout by how it ended.
#[test]
fn totals_count_restarts_by_cause_and_reloads_by_outcome() {
    let now = Instant::now();
    let mut fleet = Fleet::new(options(1));
    let mut worker = spawned(&fleet.handle(now, Event::Boot))[0];
    let ready = |fleet: &mut Fleet, id| {
        fleet.handle(now, Event::Spawned { id, pid: 100 });
        fleet.handle(now, Event::ReadyAsked { id })
    };
    ready(&mut fleet, worker);
    // A crash, after a stable run: restarted at once.
    let later = now + Duration::from_secs(60);
    let actions = fleet.handle(
        later,
        Event::Exited {
            id: worker,
            status: "killed by SIGSEGV".into(),
        },
    );
    worker = spawned(&actions)[0];
    ready(&mut fleet, worker);
    let unhealthy = Event::Unhealthy {
        id: worker,
        reason: "answered no heartbeat".into(),
    };
    worker = spawned(&fleet.handle(later, unhealthy))[0];
    ready(&mut fleet, worker);
    let recycle = Event::Recycle {
        id: worker,
        reason: "older than 1h".into(),
    };
    worker = spawned(&fleet.handle(later, recycle))[0];
    ready(&mut fleet, worker);
    let reload = Event::Reload {
        ticket: 1,
        asker: None,
    };
    worker = spawned(&fleet.handle(later, reload))[0];
    assert!(ready(&mut fleet, worker)
        .iter()
        .any(|a| matches!(a, Action::ReloadDone { result: Ok(()), .. })));
    // A reload whose new worker never gets Ready fails.
    let reload = Event::Reload {
        ticket: 2,
        asker: None,
    };
    let failing = spawned(&fleet.handle(later, reload))[0];
    fleet.handle(later, Event::Timer(Timer::Ready(failing)));
    let totals = fleet.status(later).totals;
    assert_eq!(
        (
            totals.restarts_exited,
            totals.restarts_unhealthy,
            totals.restarts_recycled
        ),
        (1, 1, 1),
        "{totals:?}"
    );
    assert_eq!((totals.reloads_succeeded, totals.reloads_failed), (1, 1));
}

/// The workers of slots taken away by scaling are in the status, draining, until they exit.
#[test]
fn the_status_lists_removed_slots_while_their_workers_drain() {
    use crate::status::WorkerState;
    let now = Instant::now();
    let mut fleet = Fleet::new(options(3));
    let ids = spawned(&fleet.handle(now, Event::Boot));
    for (pid, id) in ids.iter().enumerate() {
        fleet.handle(
            now,
            Event::Spawned {
                id: *id,
                pid: 100 + pid as u32,
            },
        );
        fleet.handle(now, Event::ReadyAsked { id: *id });
    }
    fleet.handle(
        now,
        Event::Scale {
            ticket: 1,
            workers: 1,
        },
    );
    let status = fleet.status(now);
    assert_eq!(status.slots.len(), 1);
    let removed: Vec<(u32, u32, WorkerState)> = status
        .removed
        .iter()
        .flat_map(|s| s.workers.iter().map(move |w| (s.slot, w.pid, w.state)))
        .collect();
    assert_eq!(
        removed,
        [
            (1, 101, WorkerState::Draining),
            (2, 102, WorkerState::Draining)
        ]
    );
    assert_eq!(status.ready(), 1);
    let status_of_exit = "exited with status 0".to_owned();
    fleet.handle(
        now,
        Event::Exited {
            id: ids[2],
            status: status_of_exit,
        },
    );
    let status = fleet.status(now);
    assert_eq!(status.removed.len(), 1);
    assert_eq!(status.removed[0].slot, 1);
}
