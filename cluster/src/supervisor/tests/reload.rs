//! Rolling reloads: how the state machine rolls, fails and waits.

use messenger::WorkerId;
use tokio::time::Instant;

use super::{options, spawned};
use crate::supervisor::fleet::{Action, Event, Fleet, ReloadError, Timer};

/// A worker that never gets Ready is killed at its deadline, and a reload waiting for it
/// fails, the old worker still serving.
#[test]
fn a_replacement_that_never_gets_ready_stops_the_reload_and_the_old_one_serves() {
    let now = Instant::now();
    let mut fleet = Fleet::new(options(2));
    let ids = spawned(&fleet.handle(now, Event::Boot));
    for id in &ids {
        fleet.handle(now, Event::ReadyAsked { id: *id });
    }
    let new = spawned(&fleet.handle(
        now,
        Event::Reload {
            ticket: 9,
            asker: None,
        },
    ))[0];
    let actions = fleet.handle(now, Event::Timer(Timer::Ready(new)));
    assert!(actions
        .iter()
        .any(|a| matches!(a, Action::Kill { id, .. } if *id == new)));
    let failed = actions.iter().find_map(|a| match a {
        Action::ReloadDone {
            tickets,
            result: Err(why),
        } => Some((tickets.clone(), why.clone())),
        _ => None,
    });
    let (tickets, why) = failed.expect("the reload failed");
    assert_eq!(tickets, vec![9]);
    assert!(format!("{why:?}").contains("not Ready within"), "{why:?}");
    assert_eq!(Fleet::serving(&fleet.slots()[0]), Some(ids[0]));
    assert!(fleet.slots().iter().all(|s| Fleet::serving(s).is_some()));
}

/// `Master::ready` waits for this: every slot with its Ready worker, no rollout under way or
/// asked; a stop ends the wait.
#[test]
fn the_fleet_is_ready_once_every_slot_serves_and_no_rollout_runs() {
    use crate::supervisor::fleet::Readiness;
    let now = Instant::now();
    let mut fleet = Fleet::new(options(2));
    assert_eq!(fleet.readiness(), Readiness::Waiting, "not booted");
    let ids = spawned(&fleet.handle(now, Event::Boot));
    fleet.handle(now, Event::ReadyAsked { id: ids[0] });
    assert_eq!(fleet.readiness(), Readiness::Waiting, "slot 1 starting");
    fleet.handle(now, Event::ReadyAsked { id: ids[1] });
    assert_eq!(fleet.readiness(), Readiness::Ready);
    let reload = Event::Reload {
        ticket: 1,
        asker: Some(ids[0]),
    };
    let first = spawned(&fleet.handle(now, reload))[0];
    assert_eq!(first.slot, 1, "the asker's slot goes last");
    assert_eq!(fleet.readiness(), Readiness::Waiting, "a rollout runs");
    let second = spawned(&fleet.handle(now, Event::ReadyAsked { id: first }))[0];
    assert_eq!(fleet.readiness(), Readiness::Waiting, "a rollout runs");
    fleet.handle(now, Event::ReadyAsked { id: second });
    assert_eq!(fleet.readiness(), Readiness::Ready);
    fleet.handle(now, Event::Stop { graceful: true });
    assert_eq!(fleet.readiness(), Readiness::Stopped);
}

/// A worker that asks for a reload before it is Ready (awaiting it before `ready()`) is
/// refused at once: the rollout would wait for it to get Ready, and it waits for the rollout
/// (a deadlock until its ready timeout killed it).
#[test]
fn a_reload_asked_by_a_worker_not_yet_ready_is_refused_at_once() {
    let now = Instant::now();
    let mut fleet = Fleet::new(options(2));
    let ids = spawned(&fleet.handle(now, Event::Boot));
    let actions = fleet.handle(
        now,
        Event::Reload {
            ticket: 3,
            asker: Some(ids[0]),
        },
    );
    assert!(spawned(&actions).is_empty(), "{actions:?}");
    let refused = actions.iter().any(|a| {
        matches!(a, Action::ReloadDone { tickets, result: Err(ReloadError::Failed(why)) }
            if tickets == &[3] && why.contains("before it was Ready"))
    });
    assert!(refused, "{actions:?}");
    // Once Ready, it may.
    for id in &ids {
        fleet.handle(now, Event::ReadyAsked { id: *id });
    }
    let actions = fleet.handle(
        now,
        Event::Reload {
            ticket: 4,
            asker: Some(ids[0]),
        },
    );
    assert_eq!(spawned(&actions), [WorkerId::new(1, 2)], "{actions:?}");
    // A replacement the rollout started, not yet Ready, is refused the same way.
    let replacement = WorkerId::new(1, 2);
    let actions = fleet.handle(
        now,
        Event::Reload {
            ticket: 5,
            asker: Some(replacement),
        },
    );
    let refused = actions.iter().any(|a| {
        matches!(a, Action::ReloadDone { tickets, result: Err(ReloadError::Failed(_)) }
            if tickets == &[5])
    });
    assert!(refused, "{actions:?}");
}
