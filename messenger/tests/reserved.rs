//! The cluster's own events (`multiprocess.*`: drain orders, heartbeats, metrics collection)
//! go to workers from the master only: no worker can order another about, through its
//! Messenger or in raw frames.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use messenger::testing::MockCluster;
use messenger::wire::{Envelope, Kind, Target};
use messenger::{Error, Event, HubEvent, Peer, WorkerId};
use serde::{Deserialize, Serialize};

#[path = "support/raw_peer.rs"]
mod raw_peer;
use raw_peer::raw_worker;

/// What a hostile worker would send: an event named like the cluster's drain order.
#[derive(Serialize, Deserialize, Event)]
#[event(name = "multiprocess.drain")]
struct FakeDrain;

/// A cluster of `workers` in which every worker and the master count the `FakeDrain`s they
/// run.
async fn cluster(workers: u32) -> (MockCluster, Arc<AtomicUsize>) {
    let cluster = MockCluster::new(workers).await.unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    for i in 0..workers {
        let ran = ran.clone();
        cluster.worker(i).on(move |_: FakeDrain| {
            ran.fetch_add(1, Ordering::SeqCst);
            async {}
        });
    }
    let on_master = ran.clone();
    cluster.master().on(move |_: FakeDrain| {
        on_master.fetch_add(1, Ordering::SeqCst);
        async {}
    });
    cluster.ready().await.unwrap();
    (cluster, ran)
}

fn forbidden<T: std::fmt::Debug>(what: &str, result: Result<T, Error>) {
    match result {
        Err(Error::Forbidden { reason }) => {
            assert!(reason.contains("multiprocess.drain"), "{what}: {reason}")
        }
        other => panic!("{what}: {other:?}"),
    }
}

#[tokio::test]
async fn a_worker_cannot_send_the_clusters_own_events_to_workers() {
    let (cluster, ran) = cluster(2).await;
    let worker = cluster.worker(0);
    forbidden("request", worker.request(1, FakeDrain).await);
    // Its own slot too: the short cut answers as the wire does.
    forbidden("request to itself", worker.request(0, FakeDrain).await);
    forbidden("consume", worker.consume(FakeDrain).await);
    forbidden("consume_once", worker.consume_once("k", FakeDrain).await);
    forbidden("map", worker.map(FakeDrain).await);
    forbidden("map_each", worker.map_each(FakeDrain).await);
    forbidden("broadcast", worker.broadcast(FakeDrain).await);
    assert_eq!(ran.load(Ordering::SeqCst), 0, "a handler ran");

    // To the master it may (a worker's reports to it are such events), and the master may
    // send them to workers.
    worker.request_master(FakeDrain).await.unwrap();
    assert_eq!(ran.load(Ordering::SeqCst), 1);
    cluster.master().request(1, FakeDrain).await.unwrap();
    assert_eq!(cluster.master().map(FakeDrain).await.unwrap().len(), 2);
    assert_eq!(ran.load(Ordering::SeqCst), 4);
}

fn fake_drain(kind: Kind, id: u64, to: Target) -> Envelope {
    let mut env = Envelope::new(
        kind,
        FakeDrain::NAME,
        rmp_serde::to_vec(&FakeDrain).unwrap(),
    );
    env.id = id;
    env.to = to;
    env
}

#[tokio::test]
async fn the_hub_refuses_them_in_raw_frames_from_a_worker() {
    let (cluster, ran) = cluster(2).await;
    let mut events = cluster.hub().subscribe();
    let mut raw = raw_worker(&cluster, WorkerId::new(7, 1)).await;
    let all = Target::All {
        epoch: 0,
        run_here: false,
    };
    for (id, to) in [(1, Target::Slot(0)), (2, Target::Any), (3, all)] {
        raw.send(fake_drain(Kind::Request, id, to)).await.unwrap();
        let answer = raw.next().await.unwrap().unwrap();
        assert_eq!((answer.kind, answer.id), (Kind::Failure, id), "{to:?}");
        assert!(
            matches!(answer.error(), Error::Forbidden { .. }),
            "{to:?}: {:?}",
            answer.error()
        );
    }
    let mut once = fake_drain(Kind::Request, 4, Target::Once);
    once.key = "k".into();
    raw.send(once).await.unwrap();
    let answer = raw.next().await.unwrap().unwrap();
    assert_eq!((answer.kind, answer.id), (Kind::Failure, 4));
    // To the master: allowed.
    raw.send(fake_drain(Kind::Request, 5, Target::Master))
        .await
        .unwrap();
    let answer = raw.next().await.unwrap().unwrap();
    assert_eq!((answer.kind, answer.id), (Kind::Reply, 5));
    assert_eq!(
        ran.load(Ordering::SeqCst),
        1,
        "only the master's handler ran"
    );

    // A broadcast, which no Messenger sends, whatever target it names (one "to the master"
    // would still reach every worker): its sender is closed, and it reaches nobody.
    for (n, to) in [(8, Target::Hub), (9, Target::Master)] {
        let mut raw = raw_worker(&cluster, WorkerId::new(n, 1)).await;
        raw.send(fake_drain(Kind::Broadcast, 6, to)).await.unwrap();
        let closed = async {
            loop {
                match events.recv().await.unwrap() {
                    HubEvent::Closed { id, reason } if id == WorkerId::new(n, 1) => break reason,
                    _ => {}
                }
            }
        };
        let reason = tokio::time::timeout(Duration::from_secs(60), closed)
            .await
            .unwrap_or_else(|_| panic!("a broadcast to {to:?} did not close its sender"));
        assert!(reason.contains("multiprocess.drain"), "{to:?}: {reason}");
    }
    // The workers still answer, and ran nothing more.
    assert_eq!(cluster.master().map(FakeDrain).await.unwrap().len(), 2);
    assert_eq!(ran.load(Ordering::SeqCst), 3);
    assert_eq!(cluster.worker(0).id(), Peer::Worker(WorkerId::new(0, 1)));
}
