//! The pending-call table without a Hub: forwards, answers, `consume_once` waiters.

use super::*;
use crate::WorkerId;

const A: Peer = Peer::Worker(WorkerId::new(0, 1));
const B: Peer = Peer::Worker(WorkerId::new(1, 1));
const C: Peer = Peer::Worker(WorkerId::new(2, 1));
const MAX: usize = 100;

fn key(k: &'static str) -> OnceKey {
    (Bytes::from_static(b"e"), Bytes::from_static(k.as_bytes()))
}

fn forward(pending: &mut Pending, caller: Caller, responder: Peer) {
    pending
        .forward(caller, responder, Bytes::from_static(b"e"), MAX)
        .unwrap();
}

#[test]
fn an_answer_goes_to_its_caller_once_and_only_from_its_responder() {
    let mut pending = Pending::default();
    forward(&mut pending, (A, 7), B);
    assert_eq!(pending.calls(A), 1);
    assert_eq!(
        pending.answered((A, 7), C),
        Answered::Unknown,
        "C was not asked"
    );
    assert_eq!(pending.answered((A, 7), B), Answered::Caller((A, 7)));
    assert_eq!(pending.answered((A, 7), B), Answered::Unknown);
    assert_eq!(pending.calls(A), 0);
}

/// A map's shares: one call, a forward per worker; a cancel takes every one back.
#[test]
fn a_calls_forwards_end_one_by_one_or_together() {
    let mut pending = Pending::default();
    for responder in [A, B, C] {
        forward(&mut pending, (Peer::Master, 1), responder);
    }
    assert_eq!(pending.calls(Peer::Master), 3);
    assert_eq!(
        pending.answered((Peer::Master, 1), A),
        Answered::Caller((Peer::Master, 1))
    );
    pending.unforward((Peer::Master, 1), B);
    assert_eq!(pending.calls(Peer::Master), 1);
    pending.cancel((Peer::Master, 1), [A, B, C].into_iter());
    assert_eq!((pending.len(), pending.calls(Peer::Master)), (0, 0));
}

#[test]
fn calls_are_bounded_per_caller() {
    let mut pending = Pending::default();
    for id in 0..MAX as u64 {
        forward(&mut pending, (A, id), B);
    }
    let refused = pending.forward((A, 1000), B, Bytes::new(), MAX);
    assert_eq!(refused, Err(Refused::TooMany));
    forward(&mut pending, (C, 1), B);
    // An id reused for the same responder replaces its call: still MAX.
    forward(&mut pending, (A, 0), B);
    assert_eq!(pending.calls(A), MAX);
}

#[test]
fn cancels_and_forgets_leave_nothing_behind() {
    let mut pending = Pending::default();
    for id in 0..MAX as u64 {
        forward(&mut pending, (A, id), B);
    }
    for id in 0..MAX as u64 {
        pending.cancel((A, id), [B].into_iter());
    }
    assert_eq!((pending.len(), pending.calls(A)), (0, 0));

    forward(&mut pending, (A, 1), B);
    forward(&mut pending, (B, 1), A);
    let failed = pending.forget(A);
    assert_eq!(failed.len(), 1, "A owed one answer");
    assert_eq!(failed[0].1, Answered::Caller((B, 1)));
    assert_eq!(
        pending.answered((A, 1), B),
        Answered::Unknown,
        "A's call is gone"
    );
    assert_eq!(
        (pending.len(), pending.calls(A), pending.calls(B)),
        (0, 0, 0)
    );
}

#[test]
fn a_once_run_answers_every_waiter_and_survives_its_first_callers_cancel() {
    let mut pending = Pending::default();
    pending
        .once_run(key("k"), (A, 1), C, Bytes::from_static(b"e"), MAX)
        .unwrap();
    assert!(pending.once_running(&key("k")));
    pending.once_wait(key("k"), (A, 2), MAX).unwrap();
    pending.once_wait(key("k"), (B, 3), MAX).unwrap();
    pending.cancel((A, 1), [B, C].into_iter());
    // The run's id cannot be taken over while it runs.
    let taken = pending.forward((A, 1), C, Bytes::new(), MAX);
    assert_eq!(taken, Err(Refused::InUse));
    match pending.answered((A, 1), C) {
        Answered::Once(k, mut waiters) => {
            waiters.sort();
            assert_eq!(k, key("k"));
            assert_eq!(waiters, vec![(A, 2), (B, 3)]);
        }
        other => panic!("{other:?}"),
    }
    assert!(!pending.once_running(&key("k")));
    assert_eq!((pending.calls(A), pending.calls(B)), (0, 0));
}

#[test]
fn a_leaving_runner_fails_its_once_waiters_and_a_leaving_starter_does_not_stop_the_run() {
    let mut pending = Pending::default();
    pending
        .once_run(key("k"), (A, 1), B, Bytes::from_static(b"e"), MAX)
        .unwrap();
    pending.once_wait(key("k"), (C, 5), MAX).unwrap();
    assert!(pending.forget(A).is_empty());
    assert!(pending.once_running(&key("k")), "C still waits on it");
    let failed = pending.forget(B);
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].1, Answered::Once(key("k"), vec![(C, 5)]));
    assert_eq!((pending.calls(A), pending.calls(C)), (0, 0));
}
