//! The wire seen from outside: a raw peer that speaks frames to a real Hub, and the codec's
//! properties.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use messenger::testing::MockCluster;
use messenger::wire::{Envelope, FrameCodec, Hello, Kind, Members, Target, PROTOCOL_VERSION};
use messenger::{Config, Error, Event, HubEvent, Messenger, Peer, WorkerId};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio_util::codec::{Decoder, Encoder, Framed};

#[path = "support/raw_peer.rs"]
mod raw_peer;
use raw_peer::{hello, raw_worker};

#[derive(Serialize, Deserialize, Event)]
#[event(name = "note", reply = String)]
struct Note(String);

#[tokio::test]
async fn the_hub_refuses_another_protocol_version() {
    let cluster = MockCluster::new(0).await.unwrap();
    let mut events = cluster.hub().subscribe();
    let (hub_end, raw) = tokio::io::duplex(64 * 1024);
    cluster.hub().attach(WorkerId::new(0, 1), hub_end);
    let mut framed = Framed::new(raw, FrameCodec::new());
    framed.send(hello(PROTOCOL_VERSION + 1)).await.unwrap();

    let refusal = framed.next().await.unwrap().unwrap();
    assert_eq!(refusal.kind, Kind::Failure);
    let error = refusal.error();
    assert!(
        matches!(error, Error::ProtocolMismatch { ours, theirs } if ours == PROTOCOL_VERSION && theirs == PROTOCOL_VERSION + 1)
    );
    assert!(
        framed.next().await.is_none(),
        "then the connection is closed"
    );
    match events.recv().await.unwrap() {
        HubEvent::Closed { reason, .. } => {
            assert!(reason.contains("protocol mismatch"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_worker_refuses_a_hub_of_another_protocol_version() {
    let (fake_hub, worker_end) = tokio::io::duplex(64 * 1024);
    let hub = tokio::spawn(async move {
        let mut framed = Framed::new(fake_hub, FrameCodec::new());
        let first = framed.next().await.unwrap().unwrap();
        assert_eq!(first.kind, Kind::Hello);
        let body = Hello {
            version: 99,
            peer: Some(Peer::Worker(WorkerId::new(0, 1))),
        }
        .to_bytes();
        framed
            .send(Envelope::new(Kind::Hello, "", body))
            .await
            .unwrap();
        framed
    });
    let err = Messenger::connect(worker_end, Config::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::ProtocolMismatch {
                ours: PROTOCOL_VERSION,
                theirs: 99
            }
        ),
        "{err}"
    );
    drop(hub.await.unwrap());
}

#[tokio::test]
async fn a_hub_that_closes_at_once_is_an_error_not_a_hang() {
    let (fake_hub, worker_end) = tokio::io::duplex(1024);
    drop(fake_hub);
    let err = Messenger::connect(worker_end, Config::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Closed | Error::Io(_)), "{err}");
}

#[tokio::test]
async fn forged_sender_ids_are_overwritten_by_the_hub() {
    let cluster = MockCluster::new(1).await.unwrap();
    cluster
        .master()
        .on_from(|from: Peer, Note(text): Note| async move { format!("{text} from {from}") });
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
    cluster.worker(0).on_from(move |from: Peer, _: Note| {
        seen_tx.send(from).unwrap();
        async { String::new() }
    });
    cluster.ready().await.unwrap();
    let liar = WorkerId::new(5, 1);
    let mut raw = raw_worker(&cluster, liar).await;

    // It claims to be worker 0 (and then the master) in its frames.
    let body = Bytes::from(rmp_serde::to_vec_named(&Note("hi".into())).unwrap());
    let mut request = Envelope::new(Kind::Request, "note", body.clone());
    request.id = 1;
    request.to = Target::Master;
    request.from = Peer::Worker(WorkerId::new(0, 1));
    raw.send(request).await.unwrap();
    let answer = raw.next().await.unwrap().unwrap();
    assert_eq!(answer.kind, Kind::Reply);
    let text: String = rmp_serde::from_slice(&answer.body).unwrap();
    assert_eq!(text, "hi from worker slot 5 gen 1");

    let mut broadcast = Envelope::new(Kind::Broadcast, "note", body);
    broadcast.from = Peer::Master;
    raw.send(broadcast).await.unwrap();
    assert_eq!(seen_rx.recv().await.unwrap(), Peer::Worker(liar));
}

#[tokio::test]
async fn a_worker_cannot_address_a_worker_by_id_or_answer_what_it_was_not_asked() {
    let cluster = MockCluster::new(1).await.unwrap();
    cluster.worker(0).on(|Note(text): Note| async move { text });
    cluster.ready().await.unwrap();
    let mut raw = raw_worker(&cluster, WorkerId::new(3, 1)).await;

    let mut request = Envelope::new(
        Kind::Request,
        "note",
        rmp_serde::to_vec_named(&Note("x".into())).unwrap(),
    );
    request.id = 7;
    request.to = Target::Worker(WorkerId::new(0, 1));
    raw.send(request).await.unwrap();
    let answer = raw.next().await.unwrap().unwrap();
    assert_eq!((answer.kind, answer.id), (Kind::Failure, 7));
    assert!(matches!(answer.error(), Error::Forbidden { .. }));

    // Real calls still work.
    assert_eq!(
        cluster.master().consume(Note("real".into())).await.unwrap(),
        "real"
    );
}

/// A worker cannot answer a call that went to another worker: answers made up for every id the
/// master may be waiting on are dropped, and the real answer comes.
#[tokio::test]
async fn a_worker_cannot_answer_for_another() {
    let cluster = MockCluster::new(1).await.unwrap();
    let (started, mut running) = tokio::sync::mpsc::unbounded_channel();
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let released = std::sync::Mutex::new(Some(released));
    cluster.worker(0).on(move |Note(text): Note| {
        let wait = released.lock().unwrap().take();
        let _ = started.send(());
        async move {
            if let Some(wait) = wait {
                let _ = wait.await;
            }
            text
        }
    });
    cluster.ready().await.unwrap();
    let mut raw = raw_worker(&cluster, WorkerId::new(3, 1)).await;
    let master = cluster.master();
    let call = tokio::spawn(async move { master.consume(Note("real".into())).await });
    // The master's call is running on worker 0: answer it from elsewhere, for every id.
    running.recv().await.unwrap();
    for id in 0..64 {
        let mut forged = Envelope::new(
            Kind::Reply,
            "note",
            rmp_serde::to_vec_named("forged").unwrap(),
        );
        forged.id = id;
        forged.to = Target::Master;
        raw.send(forged).await.unwrap();
    }
    // A round trip on the raw connection: the forged answers were all routed by then.
    let mut ping = Envelope::new(
        Kind::Request,
        "note",
        rmp_serde::to_vec_named(&Note("p".into())).unwrap(),
    );
    ping.id = 1000;
    ping.to = Target::Any;
    raw.send(ping).await.unwrap();
    let answer = raw.next().await.unwrap().unwrap();
    assert_eq!((answer.kind, answer.id), (Kind::Reply, 1000));
    assert!(!call.is_finished(), "a forged answer ended the call");
    release.send(()).unwrap();
    assert_eq!(call.await.unwrap().unwrap(), "real");
}

/// An answer must name the call it answers: one that does not is not of this protocol.
#[tokio::test]
async fn an_answer_to_nobody_closes_its_sender() {
    let cluster = MockCluster::new(0).await.unwrap();
    let mut events = cluster.hub().subscribe();
    let mut raw = raw_worker(&cluster, WorkerId::new(0, 1)).await;
    raw.send(Envelope::new(Kind::Reply, "note", Vec::new()))
        .await
        .unwrap();
    match events.recv().await.unwrap() {
        HubEvent::Closed { reason, .. } => assert!(reason.contains("addressed to"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert!(raw.next().await.is_none());
}

/// A `map`'s caller that names the Hub's current Ready set gets no member list, only the
/// answers; one that names an older set (or none) gets the list first.
#[tokio::test]
async fn the_hub_lists_a_maps_workers_only_when_the_callers_set_is_stale() {
    let cluster = MockCluster::new(1).await.unwrap();
    cluster.worker(0).on(|Note(text): Note| async move { text });
    cluster.ready().await.unwrap();
    let mut raw = raw_worker(&cluster, WorkerId::new(3, 1)).await;
    let map = |id, epoch| {
        let mut request = Envelope::new(
            Kind::Request,
            "note",
            rmp_serde::to_vec_named(&Note("x".into())).unwrap(),
        );
        request.id = id;
        request.to = Target::All {
            epoch,
            run_here: false,
        };
        request
    };
    let members = |env: Envelope| {
        assert_eq!(env.kind, Kind::Members, "{env:?}");
        let list = Members::from_bytes(&env.body).unwrap();
        assert_eq!(
            env.to,
            Target::All {
                epoch: list.epoch,
                run_here: list.run_here
            },
            "a list is addressed to all"
        );
        list
    };

    raw.send(map(1, 0)).await.unwrap();
    let first = members(raw.next().await.unwrap().unwrap());
    assert_eq!(first.workers, vec![Peer::Worker(WorkerId::new(0, 1))]);
    assert!(first.epoch > 0);
    let answer = raw.next().await.unwrap().unwrap();
    assert_eq!((answer.kind, answer.id), (Kind::Reply, 1));

    raw.send(map(2, first.epoch)).await.unwrap();
    let answer = raw.next().await.unwrap().unwrap();
    assert_eq!(
        (answer.kind, answer.id),
        (Kind::Reply, 2),
        "no list: the set stands"
    );

    let joined = cluster.connect(WorkerId::new(1, 1)).await.unwrap();
    joined.on(|Note(text): Note| async move { text });
    joined.ready().await.unwrap();
    raw.send(map(3, first.epoch)).await.unwrap();
    let second = members(raw.next().await.unwrap().unwrap());
    assert_eq!(
        second.workers,
        vec![
            Peer::Worker(WorkerId::new(0, 1)),
            Peer::Worker(WorkerId::new(1, 1))
        ]
    );
    assert!(second.epoch > first.epoch);
    for _ in 0..2 {
        let answer = raw.next().await.unwrap().unwrap();
        assert_eq!((answer.kind, answer.id), (Kind::Reply, 3));
    }
}

/// With the current epoch, the Hub goes by the caller's own word on whether it runs its share:
/// it is not sent its own share when it says so, and is sent it when it does not.
#[tokio::test]
async fn the_hub_trusts_a_current_callers_run_here() {
    let cluster = MockCluster::new(1).await.unwrap();
    cluster.worker(0).on(|Note(text): Note| async move { text });
    cluster.ready().await.unwrap();
    let me = WorkerId::new(3, 1);
    let mut raw = raw_worker(&cluster, me).await;
    for event in ["note", "tick"] {
        raw.send(Envelope::new(Kind::Announce, event, Vec::new()))
            .await
            .unwrap();
    }
    let mut ready = Envelope::new(Kind::Ready, "", Vec::new());
    ready.id = 9;
    raw.send(ready).await.unwrap();
    let answer = raw.next().await.unwrap().unwrap();
    assert_eq!((answer.kind, answer.id), (Kind::Reply, 9));

    let map = |id, epoch, run_here| {
        let mut request = Envelope::new(
            Kind::Request,
            "note",
            rmp_serde::to_vec_named(&Note("x".into())).unwrap(),
        );
        request.id = id;
        request.to = Target::All { epoch, run_here };
        request
    };
    raw.send(map(1, 0, false)).await.unwrap();
    let list = raw.next().await.unwrap().unwrap();
    assert_eq!(list.kind, Kind::Members);
    let list = Members::from_bytes(&list.body).unwrap();
    assert_eq!(
        list.workers,
        vec![Peer::Worker(WorkerId::new(0, 1)), Peer::Worker(me)]
    );
    assert!(
        list.run_here,
        "a Ready caller that handles the event runs its share"
    );
    let answer = raw.next().await.unwrap().unwrap();
    assert_eq!((answer.kind, answer.id), (Kind::Reply, 1));

    raw.send(map(2, list.epoch, true)).await.unwrap();
    let answer = raw.next().await.unwrap().unwrap();
    assert_eq!(
        (answer.kind, answer.id),
        (Kind::Reply, 2),
        "only worker 0 is asked"
    );

    raw.send(map(3, list.epoch, false)).await.unwrap();
    let mut kinds = Vec::new();
    for _ in 0..2 {
        let frame = raw.next().await.unwrap().unwrap();
        kinds.push(frame.kind);
    }
    kinds.sort_by_key(|kind| *kind as u8);
    assert_eq!(
        kinds,
        vec![Kind::Request, Kind::Reply],
        "its share sent to it"
    );
}

#[tokio::test]
async fn an_oversize_frame_from_a_peer_closes_its_connection() {
    let cluster = MockCluster::with_config(0, Config::default().max_frame(1024))
        .await
        .unwrap();
    let mut events = cluster.hub().subscribe();
    let mut raw = raw_worker(&cluster, WorkerId::new(0, 1)).await;
    let mut prefix = BytesMut::new();
    prefix.put_u32(1_000_000);
    raw.get_mut().write_all(&prefix).await.unwrap();
    match events.recv().await.unwrap() {
        HubEvent::Closed { reason, .. } => assert!(reason.contains("over the maximum"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert!(raw.next().await.is_none());
}

#[tokio::test]
async fn a_peer_that_says_nothing_is_dropped_after_the_handshake_timeout() {
    tokio::time::pause();
    let config = Config::default().handshake_timeout(Duration::from_secs(3));
    let cluster = MockCluster::with_config(0, config).await.unwrap();
    let mut events = cluster.hub().subscribe();
    let (hub_end, _silent) = tokio::io::duplex(1024);
    cluster.hub().attach(WorkerId::new(0, 1), hub_end);
    match events.recv().await.unwrap() {
        HubEvent::Closed { reason, .. } => assert!(reason.contains("handshake"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

fn envelope() -> impl Strategy<Value = Envelope> {
    let kind = prop::sample::select(vec![
        Kind::Hello,
        Kind::Announce,
        Kind::Ready,
        Kind::Broadcast,
        Kind::Request,
        Kind::Reply,
        Kind::Failure,
        Kind::Members,
        Kind::Cancel,
        Kind::RunHere,
        Kind::Credit,
    ]);
    let peer = prop_oneof![
        Just(Peer::Master),
        (any::<u32>(), any::<u64>()).prop_map(|(s, g)| Peer::Worker(WorkerId::new(s, g)))
    ];
    let target = prop_oneof![
        Just(Target::Hub),
        Just(Target::Any),
        (any::<u64>(), any::<bool>()).prop_map(|(epoch, run_here)| Target::All { epoch, run_here }),
        Just(Target::Master),
        Just(Target::Once),
        any::<u32>().prop_map(Target::Slot),
        (any::<u32>(), any::<u64>()).prop_map(|(s, g)| Target::Worker(WorkerId::new(s, g))),
    ];
    (
        kind,
        any::<u64>(),
        peer,
        target,
        "[a-z.]{0,20}",
        prop::collection::vec(any::<u8>(), 0..16),
        prop::collection::vec(any::<u8>(), 0..300),
    )
        .prop_map(|(kind, id, from, to, event, key, body)| Envelope {
            kind,
            id,
            from,
            to,
            event: Bytes::from(event),
            key: Bytes::from(key),
            body: Bytes::from(body),
        })
}

proptest! {
    #[test]
    fn any_frames_round_trip_split_anywhere(frames in prop::collection::vec(envelope(), 1..8), cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6)) {
        let mut codec = FrameCodec::new();
        let mut wire = BytesMut::new();
        for frame in &frames {
            codec.encode(frame, &mut wire).unwrap();
        }
        let wire = wire.freeze();
        let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
        cuts.push(wire.len());
        cuts.sort();

        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        let mut start = 0;
        for cut in cuts {
            buf.extend_from_slice(&wire[start..cut]);
            start = cut;
            while let Some(frame) = codec.decode(&mut buf).unwrap() {
                got.push(frame);
            }
        }
        prop_assert_eq!(got, frames);
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut codec = FrameCodec::builder().max_frame(256).new_codec();
        let mut buf = BytesMut::from(&bytes[..]);
        // Ok(None), a frame, or an error: never a panic, and never a loop.
        for _ in 0..bytes.len() + 1 {
            match codec.decode(&mut buf) {
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => break,
            }
        }
    }
}

#[derive(Serialize, Deserialize, Event)]
#[event(name = "tick")]
struct Tick(String);

/// Broadcasts waiting in the Hub for a worker that reads slowly fill its window, not the room
/// of requests: a call to that worker during a flood is queued, not refused `Busy`.
#[tokio::test]
async fn a_broadcast_flood_leaves_a_slow_reader_room_for_requests() {
    let config = Config::default()
        .queue_frames(4)
        .broadcast_window(1024)
        .request_timeout(Duration::from_secs(60));
    let cluster = MockCluster::with_config(1, config).await.unwrap();
    cluster.ready().await.unwrap();
    let slow = WorkerId::new(1, 1);
    let mut raw = raw_worker(&cluster, slow).await;
    for event in ["note", "tick"] {
        raw.send(Envelope::new(Kind::Announce, event, Vec::new()))
            .await
            .unwrap();
    }
    let mut ready = Envelope::new(Kind::Ready, "", Vec::new());
    ready.id = 1;
    raw.send(ready).await.unwrap();
    loop {
        let env = raw.next().await.unwrap().unwrap();
        if (env.kind, env.id) == (Kind::Reply, 1) {
            break;
        }
        assert_ne!(env.kind, Kind::Failure, "{env:?}");
    }

    // The raw worker reads nothing now: once its pipe is full (64 KiB), broadcasts wait in
    // the Hub, far more than the queue's frame budget.
    let master = cluster.master();
    let flood = tokio::spawn(async move {
        loop {
            master.broadcast(Tick("t".repeat(1000))).await.unwrap();
        }
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while cluster.hub().queued(slow).unwrap() < 64 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the broadcasts never piled up"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    let caller = cluster.worker(0).clone();
    let call = tokio::spawn(async move { caller.request(1, Note("during".into())).await });
    // The call waits in the queue behind the broadcasts: read them until it comes.
    let request = loop {
        if call.is_finished() {
            panic!("the call ended unanswered: {:?}", call.await.unwrap());
        }
        let env = raw.next().await.unwrap().unwrap();
        if env.kind == Kind::Request {
            break env;
        }
        assert_eq!(env.kind, Kind::Broadcast, "{env:?}");
    };
    let mut reply = Envelope::new(
        Kind::Reply,
        "note",
        rmp_serde::to_vec_named("answered").unwrap(),
    );
    reply.id = request.id;
    reply.to = Target::caller(request.from);
    raw.send(reply).await.unwrap();
    assert_eq!(call.await.unwrap().unwrap(), "answered");
    flood.abort();
}
