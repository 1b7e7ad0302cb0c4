//! Calls and broadcasts across hosts: two Hubs (mock clusters in this process, 2 workers
//! each) joined over a real NATS server of the test's own.

#[path = "support/nats_server.rs"]
mod nats_server;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use messenger::testing::MockCluster;
use messenger::uplink::{Joined, Uplink};
use messenger::{Config, Error, Event, Hub, Peer, RemoteHost, WorkerId};
use nats_server::NatsServer;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

#[derive(Serialize, Deserialize, Event)]
#[event(name = "tick")]
struct Tick;

/// Who ran it: the host's name and the slot.
#[derive(Serialize, Deserialize, Event)]
#[event(name = "who", reply = (String, u32))]
struct Who;

/// Waits until released, counting its runs.
#[derive(Serialize, Deserialize, Event)]
#[event(name = "slow", reply = u32)]
struct Slow;

/// Handled on one host only.
#[derive(Serialize, Deserialize, Event)]
#[event(name = "local", reply = u32)]
struct Local;

const DEADLINE: Duration = Duration::from_secs(30);

/// A host named `name`: 2 Ready workers, each counting the ticks it runs in `ticks` and
/// answering `who`.
struct Host {
    cluster: MockCluster,
    ticks: Arc<[AtomicUsize; 2]>,
}

async fn host(name: &'static str, config: Config) -> Host {
    let cluster = MockCluster::with_config(2, config).await.unwrap();
    let ticks: Arc<[AtomicUsize; 2]> = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
    for (slot, worker) in cluster.workers().iter().enumerate() {
        let counted = ticks.clone();
        worker.on(move |_: Tick| {
            counted[slot].fetch_add(1, Ordering::SeqCst);
            async {}
        });
        worker.on(move |_: Who| async move { (name.to_owned(), slot as u32) });
    }
    cluster.ready().await.unwrap();
    Host { cluster, ticks }
}

async fn join(host: &Host, server: &NatsServer, cluster: &str, name: &str) -> Joined {
    let uplink = Uplink::new(server.url()).cluster(cluster).host(name);
    host.cluster.hub().join(uplink).await.expect("joined")
}

async fn until<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let waited = tokio::time::timeout(DEADLINE, async {
        loop {
            if let Some(found) = check() {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    waited.unwrap_or_else(|_| panic!("{what}: not within {DEADLINE:?}"))
}

/// Waits until `hub` knows another host with `workers` Ready workers.
async fn sees(hub: &Hub, workers: usize) -> Vec<RemoteHost> {
    until("the other host's workers", || {
        let hosts = hub.hosts();
        (hosts.len() == 1 && hosts[0].workers.len() == workers).then_some(hosts)
    })
    .await
}

/// Waits until `hub` knows a worker of another host that handles `event`.
async fn hears_of_handler(hub: &Hub, event: &str) {
    until(&format!("a handler of {event} on another host"), || {
        let hosts = hub.hosts();
        let workers = hosts.iter().flat_map(|h| &h.workers);
        let handled = workers
            .into_iter()
            .any(|(_, e)| e.iter().any(|e| e == event));
        handled.then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_consume_map_and_request_span_hosts() {
    let server = NatsServer::start();
    let (a, b) = (
        host("a", Config::default()).await,
        host("b", Config::default()).await,
    );
    let _ja = join(&a, &server, "routes", "a").await;
    let _jb = join(&b, &server, "routes", "b").await;
    let b_seen = sees(a.cluster.hub(), 2).await;
    sees(b.cluster.hub(), 2).await;
    let b_id = b_seen[0].id;
    let caller = a.cluster.worker(0);

    // broadcast: every worker of both hosts runs it once.
    caller.broadcast(Tick).await.unwrap();
    until("the broadcast reaches all 4 workers", || {
        let all = [&a.ticks, &b.ticks]
            .iter()
            .flat_map(|t| t.iter().map(|n| n.load(Ordering::SeqCst)))
            .collect::<Vec<_>>();
        (all == [1, 1, 1, 1]).then_some(())
    })
    .await;

    // consume: spread evenly over the 4 workers, not over the 2 hosts.
    let mut runs = std::collections::BTreeMap::new();
    for _ in 0..400 {
        let who = caller.consume(Who).await.unwrap();
        *runs.entry(who).or_insert(0) += 1;
    }
    let expected: std::collections::BTreeMap<(String, u32), i32> = [
        (("a".to_owned(), 0), 100),
        (("a".to_owned(), 1), 100),
        (("b".to_owned(), 0), 100),
        (("b".to_owned(), 1), 100),
    ]
    .into();
    assert_eq!(runs, expected);

    // map: one typed reply per Ready worker of the cluster, this host's first, then by name.
    let replies = caller.map(Who).await.unwrap();
    let names: Vec<(String, u32)> = replies;
    assert_eq!(
        names,
        [
            ("a".to_owned(), 0),
            ("a".to_owned(), 1),
            ("b".to_owned(), 0),
            ("b".to_owned(), 1)
        ]
    );
    let peers: Vec<Peer> = caller
        .map_peers(Who)
        .await
        .unwrap()
        .into_iter()
        .map(|(peer, _)| peer)
        .collect();
    let remote = |slot| Peer::Remote {
        host: b_id,
        worker: Some(WorkerId::new(slot, 1)),
    };
    assert_eq!(
        peers,
        [
            Peer::Worker(WorkerId::new(0, 1)),
            Peer::Worker(WorkerId::new(1, 1)),
            remote(0),
            remote(1)
        ]
    );
    // The same from the master, and from b's side.
    assert_eq!(a.cluster.master().map(Who).await.unwrap().len(), 4);
    assert_eq!(b.cluster.worker(1).map(Who).await.unwrap().len(), 4);

    // request: a slot of a host named.
    let at_b = caller.request_at("b", 1, Who).await.unwrap();
    assert_eq!(at_b, ("b".to_owned(), 1));
    let at_a = caller.request_at("a", 1, Who).await.unwrap();
    assert_eq!(at_a, ("a".to_owned(), 1));
    assert_eq!(caller.request(1, Who).await.unwrap(), ("a".to_owned(), 1));
    match caller.request_at("nowhere", 0, Who).await {
        Err(Error::HostUnreachable { host, .. }) => assert_eq!(host, "nowhere"),
        other => panic!("a host that is not there: {other:?}"),
    }
    match caller.request_at("b", 7, Who).await {
        Err(Error::NoWorker { slot: 7 }) => {}
        other => panic!("a slot b does not have: {other:?}"),
    }
    // An event only another host handles is consumed there; none handles it: NoHandler.
    b.cluster.worker(0).on(|_: Local| async { 7 });
    hears_of_handler(a.cluster.hub(), "local").await;
    assert_eq!(caller.consume(Local).await.unwrap(), 7);
    assert!(matches!(
        caller.consume(Slow).await,
        Err(Error::NoHandler { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_restart_fails_calls_in_flight_at_once_and_traffic_resumes() {
    let mut server = NatsServer::start();
    // A request timeout far past the test's deadline: only the lost connection can end it.
    let long = Config::default().request_timeout(Duration::from_secs(600));
    let (a, b) = (host("a", long.clone()).await, host("b", long).await);
    let runs = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(Notify::new());
    for worker in b.cluster.workers() {
        let (runs, release) = (runs.clone(), release.clone());
        worker.on(move |_: Slow| {
            let (runs, release) = (runs.clone(), release.clone());
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                release.notified().await;
                1
            }
        });
    }
    a.cluster.worker(0).on(|_: Local| async { 1 });
    let _ja = join(&a, &server, "restart", "a").await;
    let _jb = join(&b, &server, "restart", "b").await;
    until("a hears of b's slow handlers", || {
        let hosts = a.cluster.hub().hosts();
        let ok = hosts.len() == 1
            && hosts[0]
                .workers
                .iter()
                .all(|(_, e)| e.contains(&"slow".to_owned()));
        ok.then_some(())
    })
    .await;

    let caller = a.cluster.worker(1).clone();
    let in_flight = tokio::spawn(async move { caller.request_at("b", 0, Slow).await });
    until("the slow handler runs on b", || {
        (runs.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await;
    server.stop();
    let failed = tokio::time::timeout(DEADLINE, in_flight)
        .await
        .expect("the call in flight fails at once, not at its deadline")
        .unwrap();
    match failed {
        Err(Error::HostUnreachable { host, detail }) => {
            assert_eq!(host, "b");
            assert!(detail.contains("lost"), "{detail}");
        }
        other => panic!("a call in flight when NATS went down: {other:?}"),
    }
    // Local calls go on meanwhile; one for another host fails at once.
    assert_eq!(a.cluster.worker(1).consume(Local).await.unwrap(), 1);
    match a.cluster.worker(1).request_at("b", 0, Who).await {
        Err(Error::HostUnreachable { .. }) => {}
        other => panic!("a call to another host while NATS is down: {other:?}"),
    }

    server.restart();
    release.notify_waiters();
    let again = tokio::time::timeout(DEADLINE, async {
        loop {
            match a.cluster.worker(1).request_at("b", 1, Who).await {
                Ok(who) => return who,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    })
    .await
    .expect("calls across hosts resume after the restart");
    assert_eq!(again, ("b".to_owned(), 1));
    // The handler in flight ran once, and was never run again.
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

/// Counts its runs (on every host: one counter) and answers with the count.
#[derive(Serialize, Deserialize, Event)]
#[event(name = "start-up", reply = usize)]
struct StartUp;

/// Fails its first run (a panic), then answers 1.
#[derive(Serialize, Deserialize, Event)]
#[event(name = "flaky", reply = u32)]
struct Flaky;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_once_runs_once_across_hosts_under_concurrent_callers() {
    let server = NatsServer::start();
    let (a, b) = (
        host("a", Config::default()).await,
        host("b", Config::default()).await,
    );
    let runs = Arc::new(AtomicUsize::new(0));
    let flaky = Arc::new(AtomicUsize::new(0));
    for worker in a.cluster.workers().iter().chain(b.cluster.workers()) {
        let runs = runs.clone();
        worker.on(move |_: StartUp| {
            let runs = runs.clone();
            async move {
                // Long enough for every caller to come while it runs.
                tokio::time::sleep(Duration::from_millis(200)).await;
                runs.fetch_add(1, Ordering::SeqCst) + 1
            }
        });
        let flaky = flaky.clone();
        worker.on(move |_: Flaky| {
            let first = flaky.fetch_add(1, Ordering::SeqCst) == 0;
            async move {
                assert!(!first, "the first run fails");
                1
            }
        });
    }
    let _ja = join(&a, &server, "once", "a").await;
    let _jb = join(&b, &server, "once", "b").await;
    sees(a.cluster.hub(), 2).await;
    sees(b.cluster.hub(), 2).await;

    // Every worker and both masters, at once, on both hosts.
    let mut callers: Vec<messenger::Messenger> = Vec::new();
    for host in [&a, &b] {
        callers.extend(host.cluster.workers().iter().cloned());
        callers.push(host.cluster.master());
    }
    let calls: Vec<_> = callers
        .iter()
        .cloned()
        .map(|m| tokio::spawn(async move { m.consume_once("boot", StartUp).await }))
        .collect();
    for call in calls {
        assert_eq!(
            call.await.unwrap().unwrap(),
            1,
            "every caller gets the one run's reply"
        );
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    // Later callers, on either host, get it remembered; another key runs again.
    assert_eq!(
        b.cluster
            .worker(1)
            .consume_once("boot", StartUp)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        a.cluster
            .master()
            .consume_once("boot", StartUp)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        a.cluster
            .worker(0)
            .consume_once("other", StartUp)
            .await
            .unwrap(),
        2
    );
    assert_eq!(runs.load(Ordering::SeqCst), 2);

    // A failed run is not remembered, on any host: the next caller, on the other host, runs
    // it again.
    match a.cluster.worker(0).consume_once("flaky", Flaky).await {
        Err(Error::HandlerPanicked { .. }) => {}
        other => panic!("the first run fails: {other:?}"),
    }
    assert_eq!(
        b.cluster
            .worker(0)
            .consume_once("flaky", Flaky)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        a.cluster
            .worker(1)
            .consume_once("flaky", Flaky)
            .await
            .unwrap(),
        1
    );
    assert_eq!(flaky.load(Ordering::SeqCst), 2);

    // A key asked for before anyone handles it fails and leaves nothing "running" in the
    // bucket: once a handler is there, a caller on the other host runs it.
    match a.cluster.worker(0).consume_once("late", Local).await {
        Err(Error::NoHandler { .. }) => {}
        other => panic!("a key nobody handles: {other:?}"),
    }
    b.cluster.worker(1).on(|_: Local| async { 5 });
    hears_of_handler(a.cluster.hub(), "local").await;
    assert_eq!(
        b.cluster
            .worker(0)
            .consume_once("late", Local)
            .await
            .unwrap(),
        5
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_to_a_host_that_no_longer_answers_fail_at_once_naming_it() {
    let server = NatsServer::start();
    let long = Config::default().request_timeout(Duration::from_secs(600));
    let a = host("a", long).await;
    let uplink = Uplink::new(server.url())
        .cluster("ghost")
        .host("a")
        .expiry(Duration::from_secs(600));
    let _ja = a.cluster.hub().join(uplink).await.unwrap();
    // A host announced once, then killed outright (its announcement written by hand): its
    // workers stay known until the expiry, but nothing answers for it any more.
    let raw = messenger::uplink::async_nats::connect(server.url())
        .await
        .unwrap();
    let names = vec![serde_bytes::ByteBuf::from(b"who".to_vec())];
    let workers: Vec<(u32, u64, Vec<u32>)> = vec![(0, 1, vec![0]), (1, 1, vec![0])];
    let body = rmp_serde::to_vec(&(42u64, "ghost", 1u64, false, names, workers)).unwrap();
    raw.publish("multiprocess.ghost.members", body.into())
        .await
        .unwrap();
    raw.flush().await.unwrap();
    sees(a.cluster.hub(), 2).await;

    let caller = a.cluster.worker(0);
    match caller.request_at("ghost", 1, Who).await {
        Err(Error::HostUnreachable { host, .. }) => assert_eq!(host, "ghost"),
        other => panic!("a call to a host gone: {other:?}"),
    }
    // A map's entries for its workers fail, naming them; this host's still answer.
    let entries = caller.map_peers(Who).await.unwrap();
    assert_eq!(entries.len(), 4);
    assert_eq!(entries[0].1.as_ref().unwrap(), &("a".to_owned(), 0));
    for (peer, result) in &entries[2..] {
        assert_eq!(peer.host(), Some(messenger::HostId(42)));
        match result {
            Err(Error::HostUnreachable { host, .. }) => assert_eq!(host, "ghost"),
            other => panic!("a map entry of a host gone: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_broadcasts_across_hosts_is_slowed_down_not_dropped() {
    let server = NatsServer::start();
    // Small queues, so that the flood outruns them many times over.
    let small = Config::default().queue_frames(16).broadcast_window(8);
    let (a, b) = (host("a", small.clone()).await, host("b", small).await);
    let _ja = join(&a, &server, "flood", "a").await;
    let _jb = join(&b, &server, "flood", "b").await;
    sees(a.cluster.hub(), 2).await;
    sees(b.cluster.hub(), 2).await;
    let n = 5_000;
    let sender = a.cluster.worker(0).clone();
    for i in 0..n {
        sender
            .broadcast(Tick)
            .await
            .unwrap_or_else(|e| panic!("broadcast {i}: {e}"));
    }
    until("every worker of both hosts ran every broadcast", || {
        let all: Vec<usize> = [&a.ticks, &b.ticks]
            .iter()
            .flat_map(|t| t.iter().map(|n| n.load(Ordering::SeqCst)))
            .collect();
        all.iter().all(|&got| got == n).then_some(())
    })
    .await;
}

/// Answers with that many bytes.
#[derive(Serialize, Deserialize, Event)]
#[event(name = "sized", reply = serde_bytes::ByteBuf)]
struct Sized {
    reply: usize,
    #[serde(with = "serde_bytes")]
    padding: Vec<u8>,
}

/// Many calls in flight share NATS messages (a host's calls and answers taken in one go); one
/// too large for a NATS message (the server's `max_payload`, 1 MiB here) fails at once with
/// `FrameTooLarge`, whichever way it goes, and the others are not held up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_in_flight_share_messages_and_one_too_large_for_nats_fails_at_once() {
    let server = NatsServer::start();
    let long = Config::default().request_timeout(Duration::from_secs(600));
    let (a, b) = (host("a", long.clone()).await, host("b", long).await);
    let echo = |s: Sized| async move { serde_bytes::ByteBuf::from(vec![7u8; s.reply]) };
    // Every worker handles it (the map below asks all four); the calls name host b's slots.
    for worker in a.cluster.workers().iter().chain(b.cluster.workers()) {
        worker.on(echo);
    }
    let _ja = join(&a, &server, "sizes", "a").await;
    let _jb = join(&b, &server, "sizes", "b").await;
    sees(b.cluster.hub(), 2).await;
    hears_of_handler(a.cluster.hub(), "sized").await;
    let caller = a.cluster.worker(0).clone();
    let sized = |reply: usize, padding: usize| Sized {
        reply,
        padding: vec![1; padding],
    };

    let calls = (0..512).map(|i| caller.request_at("b", i as u32 % 2, sized(i, i)));
    let answers = tokio::time::timeout(DEADLINE, futures_util::future::join_all(calls))
        .await
        .expect("512 calls in flight answered");
    for (i, answer) in answers.into_iter().enumerate() {
        assert_eq!(answer.unwrap().len(), i);
    }

    let mib = 1024 * 1024;
    let too_large = |result: Result<serde_bytes::ByteBuf, Error>| match result {
        Err(Error::FrameTooLarge { size, max }) => {
            assert!(size > max && max == mib, "{size} {max}")
        }
        other => panic!("{:?}", other.map(|b| b.len())),
    };
    let call = tokio::time::timeout(DEADLINE, caller.request_at("b", 0, sized(0, 2 * mib)));
    too_large(call.await.expect("a call too large fails at once"));
    let answer = tokio::time::timeout(DEADLINE, caller.request_at("b", 1, sized(2 * mib, 0)));
    too_large(answer.await.expect("an answer too large fails at once"));
    // Just under the limit goes.
    let near = caller
        .request_at("b", 0, sized(mib - 1024, 0))
        .await
        .unwrap();
    assert_eq!(near.len(), mib - 1024);
    // A map's share too large for one message is answered in several.
    let entries = tokio::time::timeout(DEADLINE, caller.map(sized(mib * 3 / 4, 0)))
        .await
        .expect("a large map answered")
        .unwrap();
    assert_eq!(entries.len(), 4);
    for entry in entries {
        assert_eq!(entry.len(), mib * 3 / 4);
    }
}

/// Answered at once, except by slot 1 of host b, which never answers.
#[derive(Serialize, Deserialize, Event)]
#[event(name = "lazy", reply = u32)]
struct Lazy;

/// A host that leaves fails this host's calls in flight to it at once; a slow worker of a
/// `map`'s share costs only its own entry (the others' answers are not held back for it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_worker_costs_only_its_entry_and_a_host_leaving_fails_calls_to_it_at_once() {
    let server = NatsServer::start();
    let short = Config::default().request_timeout(Duration::from_secs(3));
    let (a, b) = (host("a", short.clone()).await, host("b", short).await);
    // How many calls b's lazy worker took.
    let lazy_runs = Arc::new(AtomicUsize::new(0));
    for (host, cluster) in [("a", &a.cluster), ("b", &b.cluster)] {
        for (slot, worker) in cluster.workers().iter().enumerate() {
            let runs = lazy_runs.clone();
            worker.on(move |_: Lazy| {
                let runs = runs.clone();
                async move {
                    if host == "b" && slot == 1 {
                        runs.fetch_add(1, Ordering::SeqCst);
                        std::future::pending::<()>().await;
                    }
                    slot as u32
                }
            });
        }
    }
    let _ja = join(&a, &server, "lazy", "a").await;
    let jb = join(&b, &server, "lazy", "b").await;
    sees(a.cluster.hub(), 2).await;
    hears_of_handler(a.cluster.hub(), "lazy").await;
    let caller = a.cluster.worker(0).clone();

    let entries = caller.map_peers(Lazy).await.unwrap();
    let outcome: Vec<(Option<u64>, Result<u32, String>)> = entries
        .into_iter()
        .map(|(peer, r)| (peer.host().map(|h| h.0), r.map_err(|e| e.to_string())))
        .collect();
    assert_eq!(outcome.len(), 4, "{outcome:?}");
    assert_eq!(outcome[0].1, Ok(0));
    assert_eq!(outcome[1].1, Ok(1));
    assert_eq!(outcome[2].1, Ok(0), "b's quick worker: {outcome:?}");
    assert!(outcome[3].1.is_err(), "b's lazy worker: {outcome:?}");

    // A call in flight to b's lazy worker (the caller's own deadline made long), then b
    // leaves: the call fails at once, naming b (not at the request timeout, as `Timeout`).
    let patient = caller.with_timeout(Duration::from_secs(600));
    let in_flight = tokio::spawn(async move { patient.request_at("b", 1, Lazy).await });
    until("the call runs on b", || {
        (lazy_runs.load(Ordering::SeqCst) == 2).then_some(())
    })
    .await;
    jb.leave().await;
    let ended = tokio::time::timeout(DEADLINE, in_flight)
        .await
        .expect("the call ends")
        .unwrap();
    match ended {
        Err(Error::HostUnreachable { host, .. }) => assert_eq!(host, "b"),
        other => panic!("{other:?}"),
    }
}

/// A caller that gives up a call to another host (its own deadline) frees what the call held
/// at once: here its share of `max_calls`, which would otherwise stay taken until the master's
/// request timeout (600 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_given_up_frees_its_routes_on_both_hosts() {
    let server = NatsServer::start();
    // Both Hubs hold a caller to 4 calls at once: this host's routes and the other's.
    let long = Config::default()
        .request_timeout(Duration::from_secs(600))
        .max_calls(4);
    let (a, b) = (host("a", long.clone()).await, host("b", long).await);
    for worker in b.cluster.workers() {
        worker.on(|_: Lazy| std::future::pending::<u32>());
    }
    let _ja = join(&a, &server, "cancel", "a").await;
    let _jb = join(&b, &server, "cancel", "b").await;
    sees(a.cluster.hub(), 2).await;
    hears_of_handler(a.cluster.hub(), "lazy").await;
    let impatient = a.cluster.worker(0).with_timeout(Duration::from_millis(500));
    // Twice as many calls as the caller may have in flight, one after the other.
    for i in 0..8 {
        match impatient.request_at("b", 1, Lazy).await {
            Err(Error::Timeout { .. }) => {}
            other => panic!("call {i}: {other:?}"),
        }
    }
}
