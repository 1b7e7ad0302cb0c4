use super::*;
use crate::WorkerId;

const ME: HostId = HostId(1);
const THERE: HostId = HostId(2);
const CALLER: Peer = Peer::Worker(WorkerId::new(0, 1));

fn call(to: Target) -> Envelope {
    Envelope {
        id: 7,
        from: CALLER,
        to,
        ..Envelope::new(Kind::Request, "e", Vec::new())
    }
}

/// An answer from `from` (in the other host's terms) to the caller.
fn answer(kind: Kind, from: Peer, body: Bytes) -> Envelope {
    Envelope {
        id: 7,
        from,
        to: Target::Remote {
            host: ME,
            worker: CALLER.worker(),
        },
        ..Envelope::new(kind, "e", body)
    }
}

fn worker(slot: u32) -> WorkerId {
    WorkerId::new(slot, 1)
}

fn owed(slot: u32) -> Peer {
    Peer::Remote {
        host: THERE,
        worker: Some(worker(slot)),
    }
}

fn map(calls: &mut Calls, slots: &[u32]) {
    let all = Target::All {
        epoch: 0,
        run_here: false,
    };
    let owed = slots.iter().map(|&s| owed(s)).collect();
    calls.sent(THERE, &call(all), owed, 1, &mut Vec::new());
}

fn members(slots: &[u32]) -> Envelope {
    let members = Members {
        workers: slots.iter().map(|&s| Peer::Worker(worker(s))).collect(),
        run_here: false,
        epoch: 3,
    };
    answer(Kind::Members, Peer::Master, members.to_bytes())
}

/// (answered or failed, the route) of each settle, in order.
fn routes(out: &[Settle]) -> Vec<(bool, Peer)> {
    out.iter()
        .map(|s| match s {
            Settle::Answer { owed_by, .. } => (true, *owed_by),
            Settle::Fail { owed_by, .. } => (false, *owed_by),
        })
        .collect()
}

#[test]
fn a_consume_ends_with_its_one_answer() {
    let mut calls = Calls::default();
    calls.sent(
        THERE,
        &call(Target::Worker(worker(0))),
        vec![Peer::Remote {
            host: THERE,
            worker: None,
        }],
        1,
        &mut Vec::new(),
    );
    let mut out = Vec::new();
    let reply = answer(Kind::Reply, Peer::Worker(worker(0)), Bytes::new());
    calls.answered(ME, THERE, reply.clone(), &mut out);
    assert_eq!(
        routes(&out),
        [(
            true,
            Peer::Remote {
                host: THERE,
                worker: None
            }
        )]
    );
    // A second answer, or one from another host, waits for nothing.
    out.clear();
    calls.answered(ME, THERE, reply.clone(), &mut out);
    calls.answered(ME, HostId(9), reply, &mut out);
    assert!(out.is_empty());
    assert!(calls.waiting.is_empty());
}

#[test]
fn a_map_share_fails_the_workers_its_host_does_not_list_and_ends_with_the_last_answer() {
    let mut calls = Calls::default();
    map(&mut calls, &[0, 1, 2]);
    let mut out = Vec::new();
    // An answer may come before the list.
    calls.answered(
        ME,
        THERE,
        answer(Kind::Reply, Peer::Worker(worker(1)), Bytes::new()),
        &mut out,
    );
    calls.answered(ME, THERE, members(&[1, 2, 5]), &mut out);
    assert_eq!(routes(&out), [(true, owed(1)), (false, owed(0))]);
    match &out[1] {
        Settle::Fail { error, .. } => assert!(matches!(error, Error::WorkerGone { .. })),
        other => panic!("{other:?}"),
    }
    // A worker not asked for: dropped.
    out.clear();
    calls.answered(
        ME,
        THERE,
        answer(Kind::Reply, Peer::Worker(worker(5)), Bytes::new()),
        &mut out,
    );
    assert!(out.is_empty());
    assert_eq!(calls.waiting.len(), 1);
    calls.answered(
        ME,
        THERE,
        answer(Kind::Failure, Peer::Worker(worker(2)), Bytes::new()),
        &mut out,
    );
    assert_eq!(routes(&out), [(true, owed(2))]);
    assert!(calls.waiting.is_empty());
}

#[test]
fn a_share_refused_by_its_host_fails_every_route() {
    let mut calls = Calls::default();
    map(&mut calls, &[0, 1]);
    let mut out = Vec::new();
    let error = Error::Busy {
        event: "e".into(),
        peer: Peer::Master,
    };
    let refusal = Envelope::failure(7, Peer::Master, Bytes::from_static(b"e"), &error, 1 << 20);
    let refusal = Envelope {
        to: Target::Remote {
            host: ME,
            worker: CALLER.worker(),
        },
        ..refusal
    };
    calls.answered(ME, THERE, refusal, &mut out);
    assert_eq!(routes(&out), [(false, owed(0)), (false, owed(1))]);
    assert!(matches!(
        &out[0],
        Settle::Fail {
            error: Error::Busy { .. },
            ..
        }
    ));
    assert!(calls.waiting.is_empty());
}

#[test]
fn a_message_nobody_took_fails_exactly_its_calls() {
    let mut calls = Calls::default();
    let one = vec![Peer::Remote {
        host: THERE,
        worker: None,
    }];
    let mut other = call(Target::Worker(worker(0)));
    other.id = 8;
    calls.sent(
        THERE,
        &call(Target::Worker(worker(0))),
        one.clone(),
        1,
        &mut Vec::new(),
    );
    calls.sent(THERE, &other, one.clone(), 2, &mut Vec::new());
    calls.sent(
        HostId(3),
        &call(Target::Worker(worker(0))),
        one,
        1,
        &mut Vec::new(),
    );
    let mut out = Vec::new();
    let error = Error::HostUnreachable {
        host: "there".into(),
        detail: "no responders".into(),
    };
    calls.batch_failed(THERE, 1, &error, &mut out);
    assert_eq!(out.len(), 1);
    assert!(matches!(
        &out[0],
        Settle::Fail {
            id: 7,
            error: Error::HostUnreachable { .. },
            ..
        }
    ));
    assert_eq!(calls.waiting.len(), 2);
    // The connection lost: every call fails, each naming its host.
    out.clear();
    calls.fail_all(
        |host| Error::HostUnreachable {
            host: host.to_string(),
            detail: String::new(),
        },
        &mut out,
    );
    assert_eq!(out.len(), 2);
    assert!(calls.waiting.is_empty());
}

#[test]
fn an_id_used_again_owes_every_route_or_fails_the_older_call() {
    let mut calls = Calls::default();
    let host = vec![Peer::Remote {
        host: THERE,
        worker: None,
    }];
    let mut out = Vec::new();
    calls.sent(
        THERE,
        &call(Target::Worker(worker(0))),
        host.clone(),
        1,
        &mut out,
    );
    // A map under the same id: answered another way, so the consume fails now.
    let all = Target::All {
        epoch: 0,
        run_here: false,
    };
    calls.sent(THERE, &call(all), vec![owed(0), owed(1)], 2, &mut out);
    assert_eq!(routes(&out), [(false, host[0])]);
    // The same kind again: one entry owes the routes of both.
    out.clear();
    calls.sent(THERE, &call(all), vec![owed(1), owed(2)], 3, &mut out);
    assert!(out.is_empty());
    calls.answered(ME, THERE, members(&[0, 1, 2]), &mut out);
    for slot in 0..3 {
        let reply = answer(Kind::Reply, Peer::Worker(worker(slot)), Bytes::new());
        calls.answered(ME, THERE, reply, &mut out);
    }
    assert_eq!(
        routes(&out),
        [(true, owed(0)), (true, owed(1)), (true, owed(2))]
    );
    assert!(calls.waiting.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_call_unanswered_for_the_timeout_fails_timed_out() {
    let mut calls = Calls::default();
    map(&mut calls, &[0, 1]);
    let timeout = Duration::from_secs(10);
    let mut out = Vec::new();
    calls.expire(timeout, &mut out);
    assert!(out.is_empty());
    tokio::time::advance(timeout + Duration::from_millis(1)).await;
    calls.expire(timeout, &mut out);
    assert_eq!(routes(&out), [(false, owed(0)), (false, owed(1))]);
    assert!(matches!(
        &out[0],
        Settle::Fail {
            error: Error::Timeout { .. },
            ..
        }
    ));
    assert!(calls.waiting.is_empty());
}
