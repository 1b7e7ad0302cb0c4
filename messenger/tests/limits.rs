//! The limits that keep a buggy or hostile peer from hurting the others: handlers running at
//! once, calls in flight, names announced, frames that break the protocol; and replies read
//! whatever the handlers do.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use messenger::testing::MockCluster;
use messenger::wire::{Envelope, FrameCodec, Hello, Kind, Target, ENVELOPE_OVERHEAD};
use messenger::{Config, Error, Event, HubEvent, Peer, WorkerId};
use serde::{Deserialize, Serialize};
use tokio::io::DuplexStream;
use tokio::sync::Notify;
use tokio_util::codec::Framed;

#[derive(Serialize, Deserialize, Event)]
#[event(name = "held", reply = u32)]
struct Held;

#[derive(Serialize, Deserialize, Event)]
#[event(name = "tick")]
struct Tick(u64);

#[derive(Serialize, Deserialize, Event)]
#[event(name = "echo", reply = u64)]
struct Echo(u64);

#[derive(Serialize, Deserialize, Event)]
#[event(name = "big", reply = String)]
struct Big(usize);

/// A peer that speaks raw frames: connected to the Hub as `id`, handshake done.
async fn raw_worker(cluster: &MockCluster, id: WorkerId) -> Framed<DuplexStream, FrameCodec> {
    raw_worker_with(cluster, id, 256 * 1024).await
}

/// The same, over a pipe of `bytes` each way.
async fn raw_worker_with(
    cluster: &MockCluster,
    id: WorkerId,
    bytes: usize,
) -> Framed<DuplexStream, FrameCodec> {
    let (hub_end, raw) = tokio::io::duplex(bytes);
    cluster.hub().attach(id, hub_end);
    let mut framed = Framed::new(raw, FrameCodec::new());
    framed.send(Hello::new(None).frame()).await.unwrap();
    let answer = framed.next().await.unwrap().unwrap();
    assert_eq!(answer.kind, Kind::Hello);
    framed
}

/// Why the next peer closed was closed (a generous deadline: it fails rather than hangs).
async fn closed_because(events: &mut tokio::sync::mpsc::UnboundedReceiver<HubEvent>) -> String {
    let closed = async {
        loop {
            match events.recv().await.unwrap() {
                HubEvent::Closed { reason, .. } => return reason,
                _ => continue,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), closed)
        .await
        .expect("a peer closed within 60 s")
}

/// A worker runs at most `max_handlers` requests at once: more are answered `Busy` at once,
/// and those running finish.
#[tokio::test]
async fn handlers_beyond_the_limit_are_busy_not_queued_without_bound() {
    let config = Config::default().max_handlers(4);
    let cluster = MockCluster::with_config(1, config).await.unwrap();
    let release = Arc::new(Notify::new());
    let running = Arc::new(AtomicUsize::new(0));
    let (r, c) = (release.clone(), running.clone());
    cluster.worker(0).on(move |_: Held| {
        let (release, running) = (r.clone(), c.clone());
        async move {
            running.fetch_add(1, Ordering::SeqCst);
            release.notified().await;
            1
        }
    });
    cluster.ready().await.unwrap();
    let master = cluster.master();
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let master = master.clone();
            tokio::spawn(async move { master.consume(Held).await })
        })
        .collect();
    // Four run and wait; the six over the limit end at once, Busy.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while calls.iter().filter(|c| c.is_finished()).count() < 6 || running.load(Ordering::SeqCst) < 4
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the calls over the limit waited"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let (finished, held): (Vec<_>, Vec<_>) = calls.into_iter().partition(|c| c.is_finished());
    assert_eq!((finished.len(), held.len()), (6, 4));
    for call in finished {
        let err = call.await.unwrap().unwrap_err();
        assert!(matches!(err, Error::Busy { .. }), "{err}");
    }
    assert_eq!(running.load(Ordering::SeqCst), 4);
    while held.iter().any(|c| !c.is_finished()) {
        release.notify_waiters();
        tokio::task::yield_now().await;
    }
    for call in held {
        assert_eq!(call.await.unwrap().unwrap(), 1);
    }
}

/// A broadcast handler that waits on a call of its own while broadcasts keep coming gets its
/// answer: the reader never stops reading (the broadcasts wait in the master, within the
/// worker's window).
#[tokio::test]
async fn a_broadcast_handler_waiting_on_a_call_gets_its_answer_during_a_flood() {
    let config = Config::default()
        .queue_frames(8)
        .broadcast_window(8)
        .request_timeout(Duration::from_secs(30));
    let cluster = MockCluster::with_config(1, config).await.unwrap();
    cluster.master().on(|Echo(n)| async move { n });
    let (done, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let worker = cluster.worker(0).clone();
    let (d, f) = (done.clone(), failed.clone());
    cluster.worker(0).on(move |Tick(n)| {
        let (worker, done, failed) = (worker.clone(), d.clone(), f.clone());
        async move {
            match worker.request_master(Echo(n)).await {
                Ok(echo) if echo == n => done.fetch_add(1, Ordering::SeqCst),
                _ => failed.fetch_add(1, Ordering::SeqCst),
            };
        }
    });
    cluster.ready().await.unwrap();
    const TICKS: u64 = 500;
    for n in 0..TICKS {
        cluster.master().broadcast(Tick(n)).await.unwrap();
    }
    while done.load(Ordering::SeqCst) + failed.load(Ordering::SeqCst) < TICKS as usize {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(failed.load(Ordering::SeqCst), 0, "a handler's call failed");
}

/// A caller has at most `max_calls` calls in flight through the Hub: more fail `Busy` (naming
/// the caller) and cost the Hub nothing.
#[tokio::test]
async fn calls_in_flight_are_bounded_per_caller() {
    let config = Config::default().max_calls(8);
    let cluster = MockCluster::with_config(1, config).await.unwrap();
    cluster
        .worker(0)
        .on(|_: Held| std::future::pending::<u32>());
    cluster.ready().await.unwrap();
    let me = WorkerId::new(5, 1);
    let mut raw = raw_worker(&cluster, me).await;
    for id in 1..=20u64 {
        let mut request = Envelope::new(Kind::Request, "held", vec![0xc0]);
        request.id = id;
        request.to = Target::Any;
        raw.send(request).await.unwrap();
    }
    for _ in 0..12 {
        let answer = raw.next().await.unwrap().unwrap();
        assert_eq!(answer.kind, Kind::Failure);
        assert!(
            matches!(answer.error(), Error::Busy { peer, .. } if peer == Peer::Worker(me)),
            "{:?}",
            answer.error()
        );
    }
}

/// A peer that announces more event names than `max_events` is closed: names are a table the
/// peer would otherwise grow without bound.
#[tokio::test]
async fn too_many_event_names_close_the_peer() {
    let config = Config::default().max_events(16);
    let cluster = MockCluster::with_config(0, config).await.unwrap();
    let mut events = cluster.hub().subscribe();
    let mut raw = raw_worker(&cluster, WorkerId::new(0, 1)).await;
    for n in 0..100 {
        let name = format!("event-{n}");
        let announce = Envelope {
            event: Bytes::from(name),
            ..Envelope::new(Kind::Announce, "", Vec::new())
        };
        if raw.send(announce).await.is_err() {
            break;
        }
    }
    let reason = closed_because(&mut events).await;
    assert!(reason.contains("more than 16 event names"), "{reason}");
}

/// Frames that break the protocol close the peer at the first one: one log line, not one per
/// frame, whatever it keeps sending.
#[tokio::test]
async fn a_peer_breaking_the_protocol_is_closed_at_once() {
    let cluster = MockCluster::new(0).await.unwrap();
    let mut events = cluster.hub().subscribe();
    let mut raw = raw_worker(&cluster, WorkerId::new(0, 1)).await;
    let mut sent = 0;
    for _ in 0..10_000 {
        if raw.send(Hello::new(None).frame()).await.is_err() {
            break;
        }
        sent += 1;
    }
    let reason = closed_because(&mut events).await;
    assert!(reason.contains("only the Hub sends"), "{reason}");
    assert!(sent >= 1);
    // One closing, however many frames it sent.
    assert!(events.try_recv().is_err());
}

/// Credit for more broadcasts than were sent is a lie: the peer is closed.
#[tokio::test]
async fn credit_for_broadcasts_never_sent_closes_the_peer() {
    let cluster = MockCluster::new(0).await.unwrap();
    let mut events = cluster.hub().subscribe();
    let mut raw = raw_worker(&cluster, WorkerId::new(0, 1)).await;
    let credit = messenger::wire::Credit {
        frames: 5,
        bytes: 100,
    };
    raw.send(credit.frame()).await.unwrap();
    let reason = closed_because(&mut events).await;
    assert!(reason.contains("gave back room"), "{reason}");
}

/// One id attached twice: the older connection ends (as if it had gone), and the newer one
/// stays, whatever the older one's task does when it ends.
#[tokio::test]
async fn a_second_connection_under_one_id_replaces_the_first_and_stays() {
    let cluster = MockCluster::new(1).await.unwrap();
    cluster.ready().await.unwrap();
    let id = WorkerId::new(7, 1);
    let older = cluster.connect(id).await.unwrap();
    let newer = cluster.connect(id).await.unwrap();
    tokio::time::timeout(Duration::from_secs(60), older.closed())
        .await
        .expect("the older connection is closed");
    newer.on(|Echo(n)| async move { n + 1 });
    newer.ready().await.unwrap();
    // Its task has ended by now; the newer connection answers still.
    tokio::task::yield_now().await;
    assert!(!newer.is_closed());
    assert_eq!(cluster.master().request(7, Echo(41)).await.unwrap(), 42);
}

/// A frame whose payload is over what a sender may send (`max_frame` less
/// `ENVELOPE_OVERHEAD`), though encoded within `max_frame`, closes its sender: stamped with
/// its sender, it could grow past the limit on its way.
#[tokio::test]
async fn a_frame_over_the_senders_limit_closes_the_peer() {
    let config = Config::default().max_frame(4096);
    let cluster = MockCluster::with_config(1, config).await.unwrap();
    cluster.ready().await.unwrap();
    let mut events = cluster.hub().subscribe();
    let mut raw = raw_worker(&cluster, WorkerId::new(5, 1)).await;
    // 4096 - ENVELOPE_OVERHEAD + 1 bytes of payload: within 4096 on the wire from this short id.
    let over = 4096 - ENVELOPE_OVERHEAD + 1;
    let mut frame = Envelope::new(Kind::Broadcast, "tick", vec![0u8; over - 4]);
    frame.to = Target::All {
        epoch: 0,
        run_here: false,
    };
    raw.send(frame).await.unwrap();
    let reason = closed_because(&mut events).await;
    assert!(
        reason.contains(&format!(
            "over the {} a frame may carry",
            4096 - ENVELOPE_OVERHEAD
        )),
        "{reason}"
    );
}

/// Answers are not held to the caller's frame budget: many answers at once (every waiter of
/// one `consume_once` key) reach a caller that reads. (Whether the 16 calls wait on the one run
/// or some come after it and get the remembered reply, every one must succeed; the fuzz input
/// `fuzz/regressions/hub/once-answers-overflow` makes the burst itself, deterministically.)
#[tokio::test]
async fn many_answers_at_once_reach_a_caller_with_a_small_queue() {
    let config = Config::default()
        .queue_frames(1)
        .request_timeout(Duration::from_secs(60));
    let cluster = MockCluster::with_config(2, config).await.unwrap();
    let release = Arc::new(Notify::new());
    let wait = release.clone();
    cluster.worker(1).on(move |_: Held| {
        let wait = wait.clone();
        async move {
            wait.notified().await;
            7
        }
    });
    cluster.ready().await.unwrap();
    let caller = cluster.worker(0).clone();
    let calls: Vec<_> = (0..16)
        .map(|_| {
            let caller = caller.clone();
            tokio::spawn(async move { caller.consume_once("k", Held).await })
        })
        .collect();
    // Every call waits on the one run: then it ends, and 16 answers come at once.
    tokio::time::sleep(Duration::from_millis(50)).await;
    release.notify_one();
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap(), 7);
    }
    assert!(!caller.is_closed());
}

/// A caller that reads none of its answers is closed once more wait than it could be owed
/// (twice its queue budget and `max_calls`): answers to requests nobody handles, which never
/// hold a call's place, cannot make the master's memory grow without bound.
#[tokio::test]
async fn a_caller_that_reads_no_answers_is_closed_not_grown() {
    let config = Config::default().queue_frames(4).max_calls(8);
    let cluster = MockCluster::with_config(1, config).await.unwrap();
    cluster.ready().await.unwrap();
    let mut events = cluster.hub().subscribe();
    let mut raw = raw_worker_with(&cluster, WorkerId::new(5, 1), 4096).await;
    let sender = async {
        for id in 1..=100_000u64 {
            let mut request = Envelope::new(Kind::Request, "nobody", vec![0xc0]);
            request.id = id;
            request.to = Target::Any;
            if raw.send(request).await.is_err() {
                return;
            }
        }
    };
    let (reason, ()) = tokio::join!(closed_because(&mut events), sender);
    assert!(reason.contains("did not read the answers"), "{reason}");
}

/// Answers past twice the caller's queue bytes become `Busy` for those calls alone: the caller
/// is not closed, and reads every other answer.
#[tokio::test]
async fn answers_past_twice_the_queue_bytes_become_busy_for_those_calls() {
    let config = Config::default()
        .max_frame(4096)
        .queue_bytes(8192)
        .request_timeout(Duration::from_secs(60));
    let cluster = MockCluster::with_config(1, config).await.unwrap();
    cluster.worker(0).on(|Big(n)| async move { "x".repeat(n) });
    cluster.ready().await.unwrap();
    let me = WorkerId::new(5, 1);
    // A small pipe: what the caller does not read stays in the master.
    let mut raw = raw_worker_with(&cluster, me, 1024).await;
    const CALLS: u64 = 20;
    for id in 1..=CALLS {
        let mut request =
            Envelope::new(Kind::Request, "big", rmp_serde::to_vec(&Big(3000)).unwrap());
        request.id = id;
        request.to = Target::Any;
        raw.send(request).await.unwrap();
    }
    let (mut replies, mut busy) = (0, 0);
    for _ in 0..CALLS {
        let answer = tokio::time::timeout(Duration::from_secs(60), raw.next())
            .await
            .expect("an answer within 60 s")
            .unwrap()
            .unwrap();
        match answer.kind {
            Kind::Reply => replies += 1,
            Kind::Failure => {
                assert!(
                    matches!(answer.error(), Error::Busy { peer, .. } if peer == Peer::Worker(me)),
                    "{:?}",
                    answer.error()
                );
                busy += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(replies > 0 && busy > 0, "{replies} replies, {busy} Busy");
}
