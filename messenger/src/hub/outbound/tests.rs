//! A connection's queue without a connection: budgets, windows, credit, the stall check.

use super::*;
use crate::transport::Outbox;
use crate::wire::Kind;

fn frame(body: usize) -> Envelope {
    Envelope::new(Kind::Broadcast, "e", vec![0u8; body])
}

fn outbound(frames: usize, bytes: usize) -> (Outbound, Frames) {
    Outbound::new(
        Budget {
            frames,
            bytes,
            window: frames,
        },
        Instant::now(),
    )
}

#[tokio::test]
async fn requests_stop_at_the_budget_answers_at_twice_its_bytes() {
    let (mut out, _frames) = outbound(2, 1000);
    out.request(frame(1)).unwrap();
    out.request(frame(1)).unwrap();
    assert_eq!(out.request(frame(1)), Err(Refused::Full));
    assert!(!out.has_room());
    // Answers may take the queue past twice the frame budget by what a peer may be owed...
    for _ in 0..2 + 8 {
        assert_eq!(out.answer_room(frame(1).wire_len(), 8), AnswerRoom::Fits);
        out.control(frame(1));
    }
    // ...and no further: then the peer is not reading.
    assert_eq!(out.answer_room(1, 8), AnswerRoom::Overflow);
    // In bytes, they stop at twice the budget.
    assert_eq!(
        out.answer_room(frame(2000).wire_len(), 100),
        AnswerRoom::OverBytes
    );
    assert_eq!(out.held(), 12);
}

#[tokio::test]
async fn bytes_count_as_well_as_frames() {
    let (mut out, _frames) = outbound(100, 1000);
    // One frame always fits an empty queue, whatever its size.
    out.request(frame(5000)).unwrap();
    assert_eq!(out.request(frame(1)), Err(Refused::Full));
}

#[tokio::test]
async fn broadcasts_wait_for_credit_and_their_acks_come_as_they_leave_the_backlog() {
    let (mut out, mut frames) = outbound(2, 1 << 20);
    let mut acks = Vec::new();
    for _ in 0..4 {
        let mut ack = None;
        out.broadcast(frame(1), &mut ack, Peer::Master);
        acks.extend(ack);
    }
    assert_eq!(acks.len(), 2, "two sent at once, two in the backlog");
    assert!(frames.try_recv().is_some() && frames.try_recv().is_some());
    assert!(
        frames.try_recv().is_none(),
        "nothing beyond the window is sent"
    );
    let mut released = Vec::new();
    let credit = |frames| Credit {
        frames,
        bytes: frames * frame(1).wire_len() as u64,
    };
    assert!(
        out.credit(credit(3), &mut released).is_err(),
        "more credit than broadcasts sent"
    );
    out.credit(credit(1), &mut released).unwrap();
    assert_eq!(released.len(), 1);
    assert!(Arc::ptr_eq(&released[0], &acks[0]));
    assert!(frames.try_recv().is_some() && frames.try_recv().is_none());
    let left = out.abandon();
    assert_eq!(left.len(), 1);
    assert!(Arc::ptr_eq(&left[0], &acks[1]));
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_takes_nothing_is_stuck_after_the_stall_timeout() {
    let stall = Duration::from_secs(10);
    let (mut out, mut frames) = outbound(2, 1 << 20);
    assert_eq!(out.stuck(stall), None, "nothing waits");
    tokio::time::advance(Duration::from_secs(60)).await;
    out.request(frame(1)).unwrap();
    assert_eq!(
        out.stuck(stall),
        None,
        "the clock starts when a frame waits"
    );
    tokio::time::advance(Duration::from_secs(9)).await;
    assert_eq!(out.stuck(stall), None);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(out.stuck(stall).unwrap().contains("to read"));
    let env = frames.try_recv().unwrap();
    frames.written(&[env]);
    assert_eq!(out.stuck(stall), None);

    for _ in 0..3 {
        out.broadcast(frame(1), &mut None, Peer::Master);
    }
    while let Some(env) = frames.try_recv() {
        frames.written(&[env]);
    }
    tokio::time::advance(stall).await;
    assert!(out.stuck(stall).unwrap().contains("broadcasts"));
    let credit = Credit {
        frames: 1,
        bytes: frame(1).wire_len() as u64,
    };
    out.credit(credit, &mut Vec::new()).unwrap();
    assert_eq!(out.stuck(stall), None, "credit is progress");
}

#[tokio::test]
async fn the_window_has_room_of_its_own_and_requests_keep_theirs() {
    let (mut out, _frames) = Outbound::new(
        Budget {
            frames: 2,
            bytes: 1000,
            window: 8,
        },
        Instant::now(),
    );
    let mut acks = Vec::new();
    for _ in 0..8 {
        let mut ack = None;
        out.broadcast(frame(1), &mut ack, Peer::Master);
        acks.extend(ack);
    }
    assert!(
        acks.is_empty(),
        "eight fit a window of eight, past the frame budget"
    );
    assert_eq!(out.held(), 8);
    // Unwritten as they are, the broadcasts leave requests and answers their budget.
    assert!(out.has_room());
    out.request(frame(1)).unwrap();
    out.request(frame(1)).unwrap();
    assert_eq!(out.request(frame(1)), Err(Refused::Full));
    assert_eq!(out.answer_room(frame(1).wire_len(), 0), AnswerRoom::Fits);
    assert_eq!(out.held(), 10);
    // The ninth broadcast waits for credit.
    let mut ack = None;
    out.broadcast(frame(1), &mut ack, Peer::Master);
    assert!(ack.is_some());
}

#[tokio::test]
async fn writing_frees_each_kind_of_room() {
    let (mut out, mut frames) = outbound(1, 1000);
    out.broadcast(frame(1), &mut None, Peer::Master);
    out.request(frame(1)).unwrap();
    assert!(!out.has_room());
    let mut batch = Vec::new();
    assert_eq!(frames.recv_batch(&mut batch, 8).await, 2);
    frames.written(&batch);
    assert!(out.has_room());
    assert_eq!(out.held(), 0);
    assert_eq!(out.stuck(Duration::ZERO), None);
}
