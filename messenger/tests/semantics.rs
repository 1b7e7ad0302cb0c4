//! Every row of the messenger's semantics table, through the mock transport and the real Hub.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use messenger::testing::MockCluster;
use messenger::{Config, Error, Event, HubEvent, Peer, PeerState, WorkerId};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Event)]
#[event(name = "whoami", reply = u32)]
struct WhoAmI;

#[derive(Serialize, Deserialize, Event)]
#[event(name = "tick")]
struct Tick(u64);

#[derive(Serialize, Deserialize, Event)]
#[event(name = "echo", reply = String)]
struct Echo(String);

#[derive(Serialize, Deserialize, Event)]
#[event(name = "never", reply = u32)]
struct Never;

#[derive(Serialize, Deserialize, Event)]
#[event(name = "nobody", reply = ())]
struct Nobody;

/// Every worker answers `WhoAmI` with its slot.
fn answer_slots(cluster: &MockCluster) {
    for (slot, worker) in cluster.workers().iter().enumerate() {
        worker.on(move |_: WhoAmI| async move { slot as u32 });
    }
}

async fn ready_cluster(workers: u32) -> MockCluster {
    let cluster = MockCluster::new(workers).await.unwrap();
    answer_slots(&cluster);
    cluster.ready().await.unwrap();
    cluster
}

#[tokio::test]
async fn broadcast_reaches_every_ready_worker_the_sender_too_in_order() {
    let cluster = MockCluster::new(3).await.unwrap();
    let seen: Arc<Mutex<Vec<(usize, u64)>>> = Arc::default();
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    for (slot, worker) in cluster.workers().iter().enumerate() {
        let seen = seen.clone();
        let done_tx = done_tx.clone();
        worker.on(move |Tick(n): Tick| {
            seen.lock().unwrap().push((slot, n));
            if n == 99 {
                done_tx.send(slot).unwrap();
            }
            async {}
        });
    }
    cluster.ready().await.unwrap();

    for n in 0..100 {
        cluster.worker(1).broadcast(Tick(n)).await.unwrap();
    }
    let mut finished: Vec<usize> = Vec::new();
    for _ in 0..3 {
        finished.push(done_rx.recv().await.unwrap());
    }
    finished.sort();
    assert_eq!(
        finished,
        vec![0, 1, 2],
        "every worker, the sender (slot 1) included"
    );
    let seen = seen.lock().unwrap();
    for slot in 0..3 {
        let order: Vec<u64> = seen
            .iter()
            .filter(|(s, _)| *s == slot)
            .map(|(_, n)| *n)
            .collect();
        assert_eq!(
            order,
            (0..100).collect::<Vec<_>>(),
            "slot {slot} got the sender's order"
        );
    }
}

#[tokio::test]
async fn broadcast_runs_every_handler_of_the_event() {
    let cluster = MockCluster::new(1).await.unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    for _ in 0..2 {
        let (count, done_tx) = (count.clone(), done_tx.clone());
        cluster.worker(0).on(move |_: Tick| {
            count.fetch_add(1, Ordering::SeqCst);
            done_tx.send(()).unwrap();
            async {}
        });
    }
    cluster.ready().await.unwrap();
    cluster.master().broadcast(Tick(1)).await.unwrap();
    done_rx.recv().await.unwrap();
    done_rx.recv().await.unwrap();
    assert_eq!(count.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn only_ready_workers_get_messages() {
    let cluster = MockCluster::new(2).await.unwrap();
    answer_slots(&cluster);
    cluster.worker(1).ready().await.unwrap();
    // Slot 0 handles the event but is still Starting: not asked, not counted.
    assert_eq!(cluster.master().map(WhoAmI).await.unwrap(), vec![1]);
    for _ in 0..4 {
        assert_eq!(cluster.master().consume(WhoAmI).await.unwrap(), 1);
    }
    assert!(matches!(
        cluster.master().request(0, WhoAmI).await,
        Err(Error::NoWorker { slot: 0 })
    ));
    // A worker may call before it is Ready; it is not one of the workers it asks.
    assert_eq!(cluster.worker(0).consume(WhoAmI).await.unwrap(), 1);
    assert_eq!(cluster.worker(0).map(WhoAmI).await.unwrap(), vec![1]);
}

#[tokio::test]
async fn consume_runs_on_one_worker_spread_evenly() {
    let cluster = ready_cluster(3).await;
    let mut counts = [0; 3];
    for _ in 0..30 {
        counts[cluster.worker(0).consume(WhoAmI).await.unwrap() as usize] += 1;
    }
    assert_eq!(counts, [10, 10, 10]);
}

#[tokio::test]
async fn consume_with_no_handler_anywhere_is_an_error() {
    let cluster = ready_cluster(2).await;
    let err = cluster.worker(0).consume(Nobody).await.unwrap_err();
    assert!(
        matches!(err, Error::NoHandler { ref event, peer: None } if event == "nobody"),
        "{err}"
    );
    let err = cluster.master().consume(Nobody).await.unwrap_err();
    assert!(matches!(err, Error::NoHandler { .. }), "{err}");
}

#[tokio::test]
async fn consume_skips_workers_without_the_handler() {
    let cluster = MockCluster::new(3).await.unwrap();
    cluster.worker(2).on(|_: WhoAmI| async { 2 });
    cluster.ready().await.unwrap();
    for _ in 0..5 {
        assert_eq!(cluster.worker(0).consume(WhoAmI).await.unwrap(), 2);
    }
}

#[tokio::test]
async fn consume_once_runs_once_per_key_and_everyone_gets_the_reply() {
    let cluster = MockCluster::new(3).await.unwrap();
    let runs = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(tokio::sync::Notify::new());
    for (slot, worker) in cluster.workers().iter().enumerate() {
        let (runs, gate) = (runs.clone(), gate.clone());
        worker.on(move |_: WhoAmI| {
            let (runs, gate) = (runs.clone(), gate.clone());
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                gate.notified().await;
                100 + slot as u32
            }
        });
    }
    cluster.ready().await.unwrap();

    // Every worker asks while the first run is still under way.
    let calls: Vec<_> = (0..3)
        .map(|slot| {
            let worker = cluster.worker(slot).clone();
            tokio::spawn(async move { worker.consume_once("boot", WhoAmI).await })
        })
        .collect();
    while runs.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    // Make sure the others are waiting on the run before letting it finish: a fourth caller
    // through the master proves the Hub has seen earlier ones (frames are handled in order).
    let master_call = {
        let master = cluster.master();
        tokio::spawn(async move { master.consume_once("boot", WhoAmI).await })
    };
    gate.notify_one();
    let mut replies = Vec::new();
    for call in calls {
        replies.push(call.await.unwrap().unwrap());
    }
    replies.push(master_call.await.unwrap().unwrap());
    assert!(
        replies.iter().all(|r| *r == replies[0]),
        "one reply for all: {replies:?}"
    );
    // Later callers get the remembered reply without a run.
    assert_eq!(
        cluster
            .worker(2)
            .consume_once("boot", WhoAmI)
            .await
            .unwrap(),
        replies[0]
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);

    // Another key is another run.
    gate.notify_one();
    cluster
        .worker(1)
        .consume_once("other", WhoAmI)
        .await
        .unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn consume_once_does_not_remember_a_failure() {
    let cluster = MockCluster::new(1).await.unwrap();
    let attempts = Arc::new(AtomicUsize::new(0));
    let counter = attempts.clone();
    cluster.worker(0).on(move |_: WhoAmI| {
        let attempt = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            if attempt == 0 {
                panic!("first boot fails");
            }
            7
        }
    });
    cluster.ready().await.unwrap();
    let err = cluster
        .master()
        .consume_once("boot", WhoAmI)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::HandlerPanicked { .. }), "{err}");
    assert_eq!(
        cluster.master().consume_once("boot", WhoAmI).await.unwrap(),
        7
    );
    assert_eq!(
        cluster.master().consume_once("boot", WhoAmI).await.unwrap(),
        7
    );
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn consume_once_forgets_the_oldest_keys_first() {
    let cluster = MockCluster::with_config(1, Config::default().once_keys(2))
        .await
        .unwrap();
    let runs = Arc::new(AtomicUsize::new(0));
    let counter = runs.clone();
    cluster.worker(0).on(move |_: WhoAmI| {
        counter.fetch_add(1, Ordering::SeqCst);
        async { 1 }
    });
    cluster.ready().await.unwrap();
    let master = cluster.master();
    for key in ["a", "b", "c"] {
        master.consume_once(key, WhoAmI).await.unwrap();
    }
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    master.consume_once("c", WhoAmI).await.unwrap();
    master.consume_once("b", WhoAmI).await.unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 3, "b and c are remembered");
    master.consume_once("a", WhoAmI).await.unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 4, "a was forgotten");
}

#[tokio::test]
async fn map_returns_one_reply_per_ready_worker_in_slot_order() {
    let cluster = MockCluster::new(4).await.unwrap();
    answer_slots(&cluster);
    // Ready in reverse order: the result is still slot order.
    for slot in (0..4).rev() {
        cluster.worker(slot).ready().await.unwrap();
    }
    // The caller (slot 2) runs its own share itself, in its place in slot order.
    let replies: Vec<u32> = cluster.worker(2).map(WhoAmI).await.unwrap();
    assert_eq!(replies, vec![0, 1, 2, 3]);
    assert_eq!(
        cluster.master().map(WhoAmI).await.unwrap(),
        vec![0, 1, 2, 3]
    );
}

/// A caller keeps the Ready set it was last told, and guesses from it: every change still
/// reaches its next `map`, whether a worker joined, left, or the caller itself left.
#[tokio::test]
async fn a_map_after_the_ready_set_changed_asks_the_new_set() {
    let cluster = ready_cluster(2).await;
    let caller = cluster.worker(0);
    assert_eq!(caller.map(WhoAmI).await.unwrap(), vec![0, 1]);
    assert_eq!(
        caller.map(WhoAmI).await.unwrap(),
        vec![0, 1],
        "the set stands"
    );

    let joined = cluster.connect(WorkerId::new(2, 1)).await.unwrap();
    joined.on(|_: WhoAmI| async { 2 });
    joined.ready().await.unwrap();
    assert_eq!(caller.map(WhoAmI).await.unwrap(), vec![0, 1, 2]);

    cluster.hub().drain(WorkerId::new(1, 1));
    assert_eq!(caller.map(WhoAmI).await.unwrap(), vec![0, 2]);

    // The caller itself leaves: its guess said it runs its own share, the Hub's list says no.
    cluster.hub().drain(WorkerId::new(0, 1));
    assert_eq!(caller.map(WhoAmI).await.unwrap(), vec![2]);
    assert_eq!(caller.map(WhoAmI).await.unwrap(), vec![2]);

    // A caller told of an empty set asks the Hub again rather than answer alone.
    cluster.hub().drain(WorkerId::new(2, 1));
    assert_eq!(caller.map(WhoAmI).await.unwrap(), Vec::<u32>::new());
    let replacement = cluster.connect(WorkerId::new(1, 2)).await.unwrap();
    replacement.on(|_: WhoAmI| async { 1 });
    replacement.ready().await.unwrap();
    assert_eq!(caller.map(WhoAmI).await.unwrap(), vec![1]);
}

/// A worker that joins the Ready set after it learned the set runs its share once told (the
/// Hub's list corrects a guess that left it out).
#[tokio::test]
async fn a_caller_that_becomes_ready_runs_its_own_share() {
    let cluster = MockCluster::new(3).await.unwrap();
    answer_slots(&cluster);
    cluster.worker(0).ready().await.unwrap();
    cluster.worker(1).ready().await.unwrap();
    let caller = cluster.worker(2);
    assert_eq!(caller.map(WhoAmI).await.unwrap(), vec![0, 1]);
    caller.ready().await.unwrap();
    assert_eq!(caller.map(WhoAmI).await.unwrap(), vec![0, 1, 2]);
    assert_eq!(caller.map(WhoAmI).await.unwrap(), vec![0, 1, 2]);
}

/// A worker that leaves the Ready set is told so: its next `map` does not run its own share.
#[tokio::test]
async fn a_drained_caller_does_not_run_its_own_share() {
    let cluster = MockCluster::new(2).await.unwrap();
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = runs.clone();
    cluster.worker(0).on(move |_: WhoAmI| {
        counted.fetch_add(1, Ordering::SeqCst);
        async { 0 }
    });
    cluster.worker(1).on(|_: WhoAmI| async { 1 });
    cluster.ready().await.unwrap();
    let caller = cluster.worker(0);
    assert_eq!(caller.map(WhoAmI).await.unwrap(), vec![0, 1]);
    assert_eq!(runs.load(Ordering::SeqCst), 1);

    cluster.hub().drain(WorkerId::new(0, 1));
    // A round trip on the caller's connection: its answer comes after the Hub's notice.
    assert_eq!(caller.request(1, WhoAmI).await.unwrap(), 1);
    assert_eq!(caller.map(WhoAmI).await.unwrap(), vec![1]);
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "the drained caller ran its share"
    );
}

/// A caller's own share that overruns the deadline fails its entry alone: the answers already
/// in are kept.
#[tokio::test]
async fn a_late_own_share_keeps_the_answers_already_in() {
    let cluster =
        MockCluster::with_config(2, Config::default().request_timeout(Duration::from_secs(2)))
            .await
            .unwrap();
    cluster
        .worker(0)
        .on(|_: Never| std::future::pending::<u32>());
    cluster.worker(1).on(|_: Never| async { 1 });
    cluster.ready().await.unwrap();
    let caller = cluster.worker(0);
    // The first map learns the Ready set, the second guesses from it.
    for _ in 0..2 {
        let results = caller.map_each(Never).await.unwrap();
        assert_eq!(results.len(), 2);
        assert!(
            matches!(results[0], (0, Err(Error::Timeout { .. }))),
            "{results:?}"
        );
        assert!(matches!(results[1], (1, Ok(1))), "{results:?}");
    }
}

/// Maps in flight while the Ready set keeps changing: each lists one set the cluster had, and
/// none fails.
#[tokio::test]
async fn maps_while_the_ready_set_changes_list_a_set_it_had() {
    let cluster = Arc::new(ready_cluster(3).await);
    let maps = (0..8).map(|_| {
        let cluster = cluster.clone();
        tokio::spawn(async move {
            for _ in 0..100 {
                let slots = cluster.worker(0).map(WhoAmI).await.unwrap();
                assert!(
                    slots == vec![0, 1, 2] || slots == vec![0, 2],
                    "not a set the cluster had: {slots:?}"
                );
                tokio::task::yield_now().await;
            }
        })
    });
    let maps: Vec<_> = maps.collect();
    let mut replacements = Vec::new();
    for generation in 1..=50 {
        cluster.hub().drain(WorkerId::new(1, generation));
        tokio::task::yield_now().await;
        let replacement = cluster
            .connect(WorkerId::new(1, generation + 1))
            .await
            .unwrap();
        replacement.on(|_: WhoAmI| async { 1 });
        replacement.ready().await.unwrap();
        replacements.push(replacement);
        tokio::task::yield_now().await;
    }
    for map in maps {
        map.await.unwrap();
    }
}

#[tokio::test]
async fn map_each_reports_a_worker_without_the_handler() {
    let cluster = MockCluster::new(2).await.unwrap();
    cluster.worker(1).on(|_: WhoAmI| async { 1 });
    cluster.ready().await.unwrap();
    let results = cluster.master().map_each(WhoAmI).await.unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0].0, 0);
    assert!(matches!(
        results[0].1,
        Err(Error::NoHandler {
            peer: Some(Peer::Worker(WorkerId { slot: 0, .. })),
            ..
        })
    ));
    assert_eq!(results[1].0, 1);
    assert_eq!(*results[1].1.as_ref().unwrap(), 1);
    assert!(
        cluster.master().map(WhoAmI).await.is_err(),
        "map fails with the first error"
    );
}

#[tokio::test]
async fn a_worker_that_vanishes_mid_map_fails_its_entry_at_once() {
    let cluster = MockCluster::with_config(
        3,
        Config::default().request_timeout(Duration::from_secs(3600)),
    )
    .await
    .unwrap();
    let (started_tx, mut started_rx) = tokio::sync::mpsc::unbounded_channel();
    for (slot, worker) in cluster.workers().iter().enumerate() {
        let started_tx = started_tx.clone();
        worker.on(move |_: WhoAmI| {
            let _ = started_tx.send(slot);
            async move {
                if slot == 1 {
                    std::future::pending::<()>().await;
                }
                slot as u32
            }
        });
    }
    cluster.ready().await.unwrap();
    let master = cluster.master();
    let map = tokio::spawn(async move { master.map_each(WhoAmI).await });
    for _ in 0..3 {
        started_rx.recv().await.unwrap();
    }
    cluster.worker(1).close();
    // The deadline is an hour: finishing at all proves the Hub failed the entry at once.
    let results = map.await.unwrap().unwrap();
    assert_eq!(*results[0].1.as_ref().unwrap(), 0);
    assert!(
        matches!(results[1].1, Err(Error::WorkerGone { .. })),
        "{:?}",
        results[1].1
    );
    assert_eq!(*results[2].1.as_ref().unwrap(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_worker_that_never_answers_times_out_its_entry() {
    let cluster =
        MockCluster::with_config(2, Config::default().request_timeout(Duration::from_secs(5)))
            .await
            .unwrap();
    cluster.worker(0).on(|_: WhoAmI| async { 0 });
    cluster
        .worker(1)
        .on(|_: WhoAmI| std::future::pending::<u32>());
    cluster.ready().await.unwrap();
    let results = cluster.master().map_each(WhoAmI).await.unwrap();
    assert_eq!(*results[0].1.as_ref().unwrap(), 0);
    assert!(
        matches!(results[1].1, Err(Error::Timeout { peer: Some(_), .. })),
        "{:?}",
        results[1].1
    );
    let err = cluster.master().request(1, WhoAmI).await.unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    // The timed-out calls left nothing that blocks later ones.
    assert_eq!(cluster.master().request(0, WhoAmI).await.unwrap(), 0);
}

#[tokio::test]
async fn map_with_no_ready_worker_is_empty() {
    let cluster = MockCluster::new(0).await.unwrap();
    assert_eq!(
        cluster.master().map(WhoAmI).await.unwrap(),
        Vec::<u32>::new()
    );
}

#[tokio::test]
async fn request_reaches_the_worker_of_a_slot() {
    let cluster = ready_cluster(3).await;
    for slot in 0..3 {
        assert_eq!(cluster.worker(0).request(slot, WhoAmI).await.unwrap(), slot);
    }
    assert!(matches!(
        cluster.worker(0).request(7, WhoAmI).await,
        Err(Error::NoWorker { slot: 7 })
    ));
    let err = cluster.worker(0).request(1, Nobody).await.unwrap_err();
    assert!(
        matches!(err, Error::NoHandler { peer: Some(_), .. }),
        "{err}"
    );
}

#[tokio::test]
async fn workers_request_the_master_and_the_master_requests_workers() {
    let cluster = ready_cluster(2).await;
    let err = cluster
        .worker(0)
        .request_master(Echo("hi".into()))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::NoHandler {
                peer: Some(Peer::Master),
                ..
            }
        ),
        "{err}"
    );

    cluster
        .master()
        .on_from(|from: Peer, Echo(text): Echo| async move { format!("{text} from {from}") });
    let reply = cluster
        .worker(1)
        .request_master(Echo("hi".into()))
        .await
        .unwrap();
    assert_eq!(reply, "hi from worker slot 1 gen 1");

    let master = cluster.master();
    assert_eq!(master.request(1, WhoAmI).await.unwrap(), 1);
    assert_eq!(master.map(WhoAmI).await.unwrap(), vec![0, 1]);
    assert!(master.consume(WhoAmI).await.unwrap() < 2);
}

#[tokio::test]
async fn concurrent_calls_never_mix_their_replies() {
    let cluster = MockCluster::new(2).await.unwrap();
    for worker in cluster.workers() {
        worker.on(|Echo(text): Echo| async move {
            tokio::task::yield_now().await;
            text
        });
    }
    cluster.master().on(|Echo(text): Echo| async move { text });
    cluster.ready().await.unwrap();
    let mut calls = Vec::new();
    for i in 0..300 {
        let worker = cluster.worker(i % 2).clone();
        calls.push(tokio::spawn(async move {
            let text = format!("call {i}");
            let got = match i % 3 {
                0 => worker.consume(Echo(text.clone())).await.unwrap(),
                1 => worker.request_master(Echo(text.clone())).await.unwrap(),
                _ => worker.map(Echo(text.clone())).await.unwrap().concat(),
            };
            (text, got)
        }));
    }
    for call in calls {
        let (sent, got) = call.await.unwrap();
        assert!(
            got.starts_with(&sent) && got.len() % sent.len() == 0,
            "{sent} got {got}"
        );
    }
}

#[derive(Serialize, Deserialize)]
struct EchoNumber(u64);

impl Event for EchoNumber {
    // Same wire name as `Echo`, another shape: what a worker built from other code might send.
    const NAME: &'static str = "echo";
    type Reply = u64;
}

#[tokio::test]
async fn a_payload_that_does_not_decode_fails_only_its_call() {
    let cluster = MockCluster::new(1).await.unwrap();
    cluster.worker(0).on(|Echo(text): Echo| async move { text });
    cluster.ready().await.unwrap();
    let master = cluster.master();
    let err = master.consume(EchoNumber(5)).await.unwrap_err();
    assert!(
        matches!(err, Error::Decode { ref event, .. } if event == "echo"),
        "{err}"
    );
    assert_eq!(
        master.consume(Echo("still fine".into())).await.unwrap(),
        "still fine"
    );

    // The reply side: a reply that does not decode into the caller's type.
    let other = MockCluster::new(1).await.unwrap();
    other
        .worker(0)
        .on(|EchoNumber(n): EchoNumber| async move { n });
    other.ready().await.unwrap();
    let err = other
        .master()
        .consume(Echo("text".into()))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Decode { .. }), "{err}");
    assert_eq!(other.master().consume(EchoNumber(3)).await.unwrap(), 3);
}

#[tokio::test]
async fn oversize_frames_are_refused_and_the_connection_stays_usable() {
    let config = Config::default().max_frame(4096);
    let cluster = MockCluster::with_config(1, config).await.unwrap();
    cluster
        .worker(0)
        .on(|Echo(text): Echo| async move { text.repeat(100) });
    cluster.ready().await.unwrap();
    let master = cluster.master();

    let err = master.consume(Echo("x".repeat(5000))).await.unwrap_err();
    assert!(
        matches!(err, Error::FrameTooLarge { max: 4096, .. }),
        "{err}"
    );
    let err = cluster
        .worker(0)
        .broadcast(Echo("x".repeat(5000)))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::FrameTooLarge { .. }), "{err}");
    // The reply would be 100 times the request: the worker refuses it and says so.
    let err = master.consume(Echo("y".repeat(100))).await.unwrap_err();
    assert!(matches!(err, Error::FrameTooLarge { .. }), "{err}");
    // Nothing was sent, nothing broke.
    assert_eq!(
        master.consume(Echo("z".into())).await.unwrap(),
        "z".repeat(100)
    );
}

#[tokio::test]
async fn a_handler_panic_fails_its_call_and_calls_the_hook() {
    let cluster = MockCluster::new(1).await.unwrap();
    let (hook_tx, mut hook_rx) = tokio::sync::mpsc::unbounded_channel();
    cluster
        .worker(0)
        .set_panic_hook(move |what| hook_tx.send(what.to_string()).unwrap());
    cluster.worker(0).on(|Echo(text): Echo| async move {
        if text == "boom" {
            panic!("asked to");
        }
        text
    });
    cluster.ready().await.unwrap();
    let err = cluster
        .master()
        .consume(Echo("boom".into()))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::HandlerPanicked { ref message, .. } if message == "asked to"),
        "{err}"
    );
    assert!(hook_rx.recv().await.unwrap().contains("asked to"));
    assert_eq!(
        cluster.master().consume(Echo("ok".into())).await.unwrap(),
        "ok"
    );
}

/// A handler that panics after it waited (in the task its call moved to) and one that panics
/// before it even makes its future fail their calls alike, and the worker goes on.
#[tokio::test]
async fn a_handler_panic_after_a_wait_or_before_its_future_fails_its_call() {
    let cluster = MockCluster::new(1).await.unwrap();
    let (hook_tx, mut hook_rx) = tokio::sync::mpsc::unbounded_channel();
    let worker = cluster.worker(0);
    worker.set_panic_hook(move |what| hook_tx.send(what.to_string()).unwrap());
    worker.on(|Echo(text): Echo| async move {
        tokio::task::yield_now().await;
        if text == "late" {
            panic!("after a wait");
        }
        text
    });
    worker.on(|n: Tick| {
        if n.0 == 0 {
            panic!("before any future");
        }
        async {}
    });
    cluster.ready().await.unwrap();
    let master = cluster.master();
    let err = master.consume(Echo("late".into())).await.unwrap_err();
    assert!(
        matches!(err, Error::HandlerPanicked { ref message, .. } if message == "after a wait"),
        "{err}"
    );
    assert!(hook_rx.recv().await.unwrap().contains("after a wait"));
    let err = master.request(0, Tick(0)).await.unwrap_err();
    assert!(
        matches!(err, Error::HandlerPanicked { ref message, .. } if message == "before any future"),
        "{err}"
    );
    assert!(hook_rx.recv().await.unwrap().contains("before any future"));
    assert_eq!(master.consume(Echo("fine".into())).await.unwrap(), "fine");
}

/// A worker runs its own share of a `map` (and a `consume` the Hub hands back) itself, typed,
/// with the same panic handling as a call that came in a frame.
#[tokio::test]
async fn a_panic_in_a_share_run_here_fails_that_share_and_calls_the_hook() {
    let cluster = MockCluster::new(1).await.unwrap();
    let (hook_tx, mut hook_rx) = tokio::sync::mpsc::unbounded_channel();
    let worker = cluster.worker(0).clone();
    worker.set_panic_hook(move |what| hook_tx.send(what.to_string()).unwrap());
    worker.on(|Echo(text): Echo| async move {
        if text == "boom" {
            panic!("asked to");
        }
        text
    });
    cluster.ready().await.unwrap();
    // One worker: its consume and its map both run here.
    for err in [
        worker.consume(Echo("boom".into())).await.unwrap_err(),
        worker.map(Echo("boom".into())).await.unwrap_err(),
    ] {
        assert!(
            matches!(err, Error::HandlerPanicked { ref message, .. } if message == "asked to"),
            "{err}"
        );
        assert!(hook_rx.recv().await.unwrap().contains("asked to"));
    }
    assert_eq!(worker.consume(Echo("ok".into())).await.unwrap(), "ok");
    assert_eq!(worker.map(Echo("ok".into())).await.unwrap(), ["ok"]);
}

/// Two types may share a wire name: a share run here whose handler is of the other type goes
/// through MessagePack like a frame would.
#[tokio::test]
async fn a_share_run_here_for_a_handler_of_another_type_goes_through_the_wire_format() {
    #[derive(Serialize, Deserialize, Event)]
    #[event(name = "echo", reply = String)]
    struct Shout {
        #[serde(rename = "0")]
        text: String,
    }
    let cluster = MockCluster::new(2).await.unwrap();
    for worker in cluster.workers() {
        worker.on(|Echo(text): Echo| async move { text.to_uppercase() });
    }
    cluster.ready().await.unwrap();
    let worker = cluster.worker(0);
    // Echo is a newtype (its string alone), Shout a map with one field: a handler of Echo
    // cannot read a Shout, so every share fails to decode, the one run here included.
    let each = worker.map_each(Shout { text: "hi".into() }).await.unwrap();
    assert_eq!(each.len(), 2);
    for (_, reply) in each {
        assert!(matches!(reply, Err(Error::Decode { .. })), "{reply:?}");
    }
    // The same bytes as an Echo decode fine, here and there.
    assert_eq!(worker.map(Echo("hi".into())).await.unwrap(), ["HI", "HI"]);
}

/// A `map` waiting on answers when its own connection closes ends at once: every entry still
/// missing is `Closed`.
#[tokio::test]
async fn a_map_whose_caller_closes_ends_at_once() {
    let cluster = MockCluster::with_config(
        2,
        Config::default().request_timeout(Duration::from_secs(3600)),
    )
    .await
    .unwrap();
    let (started_tx, mut started_rx) = tokio::sync::mpsc::unbounded_channel();
    cluster.worker(1).on(move |_: Never| {
        started_tx.send(()).unwrap();
        std::future::pending::<u32>()
    });
    cluster.ready().await.unwrap();
    let caller = cluster.worker(0).clone();
    let map = tokio::spawn(async move { caller.map_each(Never).await });
    started_rx.recv().await.unwrap();
    cluster.worker(0).close();
    // Whether the fan-out list had reached the caller by then is a race: either way the call
    // ends now, and slot 1's answer is `Closed`.
    match map.await.unwrap() {
        Ok(each) => {
            assert_eq!(each.len(), 2);
            assert!(
                matches!(each[0].1, Err(Error::NoHandler { .. } | Error::Closed)),
                "{each:?}"
            );
            assert!(matches!(each[1], (1, Err(Error::Closed))), "{each:?}");
        }
        Err(err) => assert!(matches!(err, Error::Closed), "{err}"),
    }
}

#[tokio::test]
async fn a_worker_that_disconnects_fails_its_pending_calls_at_once() {
    let cluster = MockCluster::with_config(
        1,
        Config::default().request_timeout(Duration::from_secs(3600)),
    )
    .await
    .unwrap();
    let (started_tx, mut started_rx) = tokio::sync::mpsc::unbounded_channel();
    cluster.worker(0).on(move |_: Never| {
        started_tx.send(()).unwrap();
        std::future::pending::<u32>()
    });
    cluster.ready().await.unwrap();
    let mut events = cluster.hub().subscribe();
    let master = cluster.master();
    let call = tokio::spawn(async move { master.consume(Never).await });
    started_rx.recv().await.unwrap();
    cluster.worker(0).close();
    let err = call.await.unwrap().unwrap_err();
    assert!(
        matches!(
            err,
            Error::WorkerGone {
                peer: Peer::Worker(WorkerId {
                    slot: 0,
                    generation: 1
                }),
                ..
            }
        ),
        "{err}"
    );
    assert!(matches!(
        events.recv().await,
        Some(HubEvent::Closed {
            id: WorkerId {
                slot: 0,
                generation: 1
            },
            ..
        })
    ));
    assert!(cluster.worker(0).is_closed());
    let err = cluster.worker(0).consume(Never).await.unwrap_err();
    assert!(matches!(err, Error::Closed), "{err}");
}

#[tokio::test]
async fn the_master_detaching_a_worker_closes_its_messenger() {
    let cluster = ready_cluster(1).await;
    cluster.hub().detach(WorkerId::new(0, 1));
    cluster.worker(0).closed().await;
    assert!(matches!(
        cluster.worker(0).map(WhoAmI).await,
        Err(Error::Closed)
    ));
}

#[tokio::test]
async fn a_new_ready_worker_takes_its_slot_over() {
    let cluster = ready_cluster(2).await;
    let mut events = cluster.hub().subscribe();
    let replacement = cluster.connect(WorkerId::new(1, 2)).await.unwrap();
    replacement.on(|_: WhoAmI| async { 21 });
    assert_eq!(
        cluster.hub().peers(),
        vec![
            (WorkerId::new(0, 1), PeerState::Ready),
            (WorkerId::new(1, 1), PeerState::Ready),
            (WorkerId::new(1, 2), PeerState::Starting)
        ]
    );
    replacement.ready().await.unwrap();
    assert_eq!(
        events.recv().await,
        Some(HubEvent::Ready(WorkerId::new(1, 2)))
    );
    assert_eq!(
        cluster.hub().peers()[1],
        (WorkerId::new(1, 1), PeerState::Draining)
    );
    assert_eq!(
        cluster.master().map(WhoAmI).await.unwrap(),
        vec![0, 21],
        "one worker per slot"
    );
    // The draining worker still calls out and gets answers.
    assert_eq!(cluster.worker(1).request(1, WhoAmI).await.unwrap(), 21);
    assert_eq!(cluster.worker(1).map(WhoAmI).await.unwrap(), vec![0, 21]);

    cluster.hub().drain(WorkerId::new(0, 1));
    assert_eq!(cluster.master().map(WhoAmI).await.unwrap(), vec![21]);
}

#[tokio::test]
async fn the_hub_pings_a_worker_in_any_state() {
    let cluster = MockCluster::new(1).await.unwrap();
    cluster.hub().ping(WorkerId::new(0, 1)).await.unwrap();
    let err = cluster.hub().ping(WorkerId::new(0, 9)).await.unwrap_err();
    assert!(matches!(err, Error::WorkerGone { .. }), "{err}");
    cluster
        .hub()
        .request_worker(WorkerId::new(0, 1), Nobody)
        .await
        .unwrap_err();
}

#[tokio::test]
async fn the_master_cannot_be_ready() {
    let cluster = MockCluster::new(0).await.unwrap();
    assert!(matches!(
        cluster.master().ready().await,
        Err(Error::Forbidden { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_worker_costs_bounded_memory_and_does_not_stop_the_others() {
    let config = Config::default()
        .queue_frames(4)
        .broadcast_window(4)
        .stall_timeout(Duration::from_secs(2));
    let cluster = MockCluster::with_config(3, config).await.unwrap();
    let stuck = WorkerId::new(0, 1);
    // Slot 0 takes the first tick and never finishes it: its queues fill up and stay full.
    cluster.worker(0).on(|_: Tick| std::future::pending::<()>());
    let counts: Vec<Arc<AtomicUsize>> = (0..3).map(|_| Arc::default()).collect();
    for (slot, count) in counts.iter().enumerate().skip(1) {
        let count = count.clone();
        cluster.worker(slot as u32).on(move |_: Tick| {
            count.fetch_add(1, Ordering::SeqCst);
            async {}
        });
    }
    for slot in 1..3u32 {
        cluster
            .worker(slot)
            .on(move |_: WhoAmI| async move { slot });
    }
    cluster.ready().await.unwrap();
    let mut events = cluster.hub().subscribe();

    const TICKS: u64 = 50_000;
    let master = cluster.master();
    let flood = tokio::spawn(async move {
        for n in 0..TICKS {
            master.broadcast(Tick(n)).await.unwrap();
        }
    });
    // Wait (generously) until the Hub holds a budget's worth for the stuck worker, and never
    // more than its window (4, unwritten until its pipe takes them) and the broadcasts its
    // paused sender may have unacknowledged (4, in the backlog): the bound of protocol 3
    // (hub/conn.rs), where the router no longer waits with one broadcast in hand...
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let held = cluster.hub().queued(stuck).unwrap();
        assert!(
            held <= 4 + 4,
            "the Hub holds {held} frames for the stuck worker"
        );
        if held >= 4 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the queue to the stuck worker never filled"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // ...and, meanwhile, the others still talk.
    assert_eq!(cluster.worker(1).request(2, WhoAmI).await.unwrap(), 2);
    for _ in 0..4 {
        assert_ne!(cluster.worker(2).consume(WhoAmI).await.unwrap(), 0);
    }

    // The stuck worker is closed with a reason, and nothing else was lost.
    let closed = tokio::time::timeout(Duration::from_secs(60), events.recv())
        .await
        .unwrap()
        .unwrap();
    match closed {
        HubEvent::Closed { id, reason } => {
            assert_eq!(id, stuck);
            assert!(reason.contains("stuck"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    flood.await.unwrap();
    while counts[1].load(Ordering::SeqCst) < TICKS as usize
        || counts[2].load(Ordering::SeqCst) < TICKS as usize
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "ticks lost: {:?}",
            counts
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(cluster.hub().queued(stuck), None);
}

#[derive(Serialize, Deserialize, Event)]
#[event(reply = String)]
enum Admin {
    Echo(String),
    Join { left: String, right: String },
    Flush,
}

struct AdminService {
    slot: u32,
}

#[messenger::async_trait]
impl AdminHandler for AdminService {
    async fn echo(&self, text: String) -> String {
        format!("{} says {text}", self.slot)
    }
    async fn join(&self, left: String, right: String) -> String {
        left + &right
    }
    async fn flush(&self) -> String {
        "flushed".into()
    }
}

#[tokio::test]
async fn an_enum_event_is_served_by_one_handler_object() {
    let cluster = MockCluster::new(2).await.unwrap();
    for (slot, worker) in cluster.workers().iter().enumerate() {
        worker.handle::<Admin>(Arc::new(AdminService { slot: slot as u32 }));
    }
    cluster.ready().await.unwrap();
    let master = cluster.master();
    assert_eq!(
        master.request(1, Admin::Echo("hi".into())).await.unwrap(),
        "1 says hi"
    );
    let join = Admin::Join {
        left: "a".into(),
        right: "b".into(),
    };
    assert_eq!(master.consume(join).await.unwrap(), "ab");
    assert_eq!(
        master.map(Admin::Flush).await.unwrap(),
        vec!["flushed", "flushed"]
    );
}

/// CPU time of the calling thread, from the kernel's scheduler statistics.
fn thread_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
    let ns: u64 = stat.split_whitespace().next().unwrap().parse().unwrap();
    Duration::from_nanos(ns)
}

/// A caller polls for its answer for `busy_poll` at most, then sleeps: a call that takes long
/// costs next to no CPU while it waits. (Everything runs on this test's one thread.)
#[tokio::test]
async fn a_long_wait_does_not_spin() {
    for budget in [Duration::ZERO, Duration::from_millis(1)] {
        let config = Config::default().busy_poll(budget);
        let cluster = MockCluster::with_config(1, config).await.unwrap();
        cluster.worker(0).on(|_: WhoAmI| async {
            tokio::time::sleep(Duration::from_millis(400)).await;
            7
        });
        cluster.ready().await.unwrap();
        let master = cluster.master();
        let cpu = thread_cpu();
        assert_eq!(master.consume(WhoAmI).await.unwrap(), 7);
        let used = thread_cpu() - cpu;
        assert!(
            used < Duration::from_millis(200),
            "{used:?} of CPU for a 400 ms wait"
        );
    }
}

/// With `#[event(sender)]`, the handler object's methods learn who sent each event.
#[derive(Serialize, Deserialize, Event)]
#[event(reply = String, sender)]
enum Desk {
    Hello,
    Sign(String),
}

struct DeskService;

#[messenger::async_trait]
impl DeskHandler for DeskService {
    async fn hello(&self, from: Peer) -> String {
        format!("hello, {from}")
    }
    async fn sign(&self, from: Peer, text: String) -> String {
        format!("{text}, signed for {from}")
    }
}

#[tokio::test]
async fn an_enum_handler_object_learns_the_sender() {
    let cluster = MockCluster::new(2).await.unwrap();
    cluster.worker(1).handle::<Desk>(Arc::new(DeskService));
    cluster.ready().await.unwrap();
    let caller = cluster.worker(0).id();
    assert_eq!(
        cluster.worker(0).request(1, Desk::Hello).await.unwrap(),
        format!("hello, {caller}")
    );
    assert_eq!(
        cluster
            .master()
            .consume(Desk::Sign("memo".into()))
            .await
            .unwrap(),
        format!("memo, signed for {}", Peer::Master)
    );
}

#[tokio::test]
async fn a_handler_with_state_shares_it_across_calls() {
    let cluster = MockCluster::new(1).await.unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    cluster
        .worker(0)
        .on_with(seen.clone(), |seen, _: WhoAmI| async move {
            seen.fetch_add(1, Ordering::SeqCst) as u32 + 1
        });
    cluster.ready().await.unwrap();
    for n in 1..=3 {
        assert_eq!(cluster.master().consume(WhoAmI).await.unwrap(), n);
    }
    assert_eq!(seen.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn with_timeout_gives_another_handle_with_its_own_deadline() {
    let config = Config::default().request_timeout(Duration::from_secs(60));
    let cluster = MockCluster::with_config(1, config).await.unwrap();
    cluster
        .worker(0)
        .on(|_: Never| std::future::pending::<u32>());
    cluster.ready().await.unwrap();
    let master = cluster.master();
    let short = master.with_timeout(Duration::from_millis(50));
    match short.consume(Never).await {
        Err(Error::Timeout { after, .. }) => assert_eq!(after, Duration::from_millis(50)),
        other => panic!("{other:?}"),
    }
    // The handle it came from keeps its own deadline.
    assert_eq!(master.config().request_timeout, Duration::from_secs(60));
    let long = tokio::time::timeout(Duration::from_millis(200), master.consume(Never)).await;
    assert!(long.is_err(), "the original handle gave up early: {long:?}");
}
