//! Hubs on several "hosts" (mock clusters in this process), joined over a real NATS server of
//! the test's own: membership.

#[path = "support/nats_server.rs"]
mod nats_server;

use std::time::Duration;

use messenger::testing::MockCluster;
use messenger::uplink::{async_nats, Joined, Uplink};
use messenger::{Event, Hub, RemoteHost, WorkerId};
use nats_server::NatsServer;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Event)]
#[event(name = "tick")]
struct Tick;

#[derive(Serialize, Deserialize, Event)]
#[event(name = "echo", reply = String)]
struct Echo(String);

/// What every wait allows: generous, as the machine may be loaded.
const DEADLINE: Duration = Duration::from_secs(30);

/// A host: `workers` Ready workers that handle `tick`, slot 1 `echo` as well.
async fn host(workers: u32) -> MockCluster {
    let cluster = MockCluster::new(workers).await.unwrap();
    for worker in cluster.workers() {
        worker.on(|_: Tick| async {});
    }
    if let Some(worker) = cluster.workers().get(1) {
        worker.on(|Echo(s): Echo| async move { s });
    }
    cluster.ready().await.unwrap();
    cluster
}

fn uplink(server: &NatsServer, cluster: &str, host: &str) -> Uplink {
    Uplink::new(server.url()).cluster(cluster).host(host)
}

/// `host` joins with `uplink`, which must succeed.
async fn join(host: &MockCluster, uplink: Uplink) -> Joined {
    host.hub().join(uplink).await.expect("joined")
}

/// Waits until `hub`'s view of the other hosts passes `check`.
async fn until(hub: &Hub, what: &str, check: impl Fn(&[RemoteHost]) -> bool) -> Vec<RemoteHost> {
    let waited = tokio::time::timeout(DEADLINE, async {
        loop {
            let hosts = hub.hosts();
            if check(&hosts) {
                return hosts;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    waited.unwrap_or_else(|_| panic!("{what}: not within {DEADLINE:?}; hosts: {:?}", hub.hosts()))
}

fn events(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_see_each_others_ready_workers_and_handlers() {
    let server = NatsServer::start();
    let (a, b) = (host(2).await, host(2).await);
    let joined_a = join(&a, uplink(&server, "see", "a")).await;
    let _joined_b = join(&b, uplink(&server, "see", "b")).await;

    let seen = until(a.hub(), "a sees b", |h| h.len() == 1).await;
    assert_eq!(seen[0].name, "b");
    assert_eq!(
        seen[0].workers,
        [
            (WorkerId::new(0, 1), events(&["tick"])),
            (WorkerId::new(1, 1), events(&["echo", "tick"])),
        ]
    );
    let seen_by_b = until(b.hub(), "b sees a", |h| h.len() == 1).await;
    assert_eq!(seen_by_b[0].name, "a");
    assert_eq!(seen_by_b[0].id, joined_a.id());

    // A worker made Ready on b is announced at once, not at the next heartbeat.
    let third = b.connect(WorkerId::new(2, 1)).await.unwrap();
    third.on(|_: Tick| async {});
    third.ready().await.unwrap();
    until(a.hub(), "a sees b's third worker", |h| {
        h.len() == 1 && h[0].workers.len() == 3
    })
    .await;
    // A Hub never lists itself.
    assert!(a.hub().hosts().iter().all(|h| h.name != "a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_leaves_is_forgotten_at_once() {
    let server = NatsServer::start();
    let (a, b) = (host(1).await, host(1).await);
    // An expiry far longer than the test's deadline: only the leaving message can do it.
    let long = Duration::from_secs(600);
    let _joined_a = join(&a, uplink(&server, "leave", "a").expiry(long)).await;
    let joined_b = join(&b, uplink(&server, "leave", "b").expiry(long)).await;
    until(a.hub(), "a sees b", |h| h.len() == 1).await;
    // b, the newcomer, hears of a at once too (a answers b's first word), not in 200 s.
    until(b.hub(), "b sees a", |h| h.len() == 1).await;
    joined_b.leave().await;
    until(a.hub(), "a forgets b", |h| h.is_empty()).await;
    // And b, having left, knows no one.
    assert!(b.hub().hosts().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_gone_silent_is_forgotten_within_the_expiry() {
    let server = NatsServer::start();
    let a = host(1).await;
    let expiry = Duration::from_secs(1);
    let _joined = join(&a, uplink(&server, "silent", "a").expiry(expiry)).await;
    // A host that announces itself once and is never heard from again, as one SIGKILLed: its
    // announcement written by hand, in the documented form
    // [host, name, seq, leaving, [event, ...], [[slot, generation, [event index, ...]], ...]].
    let raw = async_nats::connect(server.url()).await.unwrap();
    let names: Vec<serde_bytes::ByteBuf> = vec![serde_bytes::ByteBuf::from(b"tick".to_vec())];
    let workers: Vec<(u32, u64, Vec<u32>)> = vec![(0, 1, vec![0])];
    let body = rmp_serde::to_vec(&(42u64, "ghost", 1u64, false, names, workers)).unwrap();
    let started = tokio::time::Instant::now();
    raw.publish("multiprocess.silent.members", body.into())
        .await
        .unwrap();
    raw.flush().await.unwrap();
    let seen = until(a.hub(), "a hears the ghost", |h| h.len() == 1).await;
    assert_eq!(seen[0].name, "ghost");
    assert_eq!(seen[0].workers, [(WorkerId::new(0, 1), events(&["tick"]))]);
    until(a.hub(), "a forgets the ghost", |h| h.is_empty()).await;
    // Forgotten after the expiry, and within it and one heartbeat more (plus slack).
    let took = started.elapsed();
    assert!(took >= expiry, "forgotten after {took:?}");
    assert!(took < expiry * 3, "forgotten only after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_is_rebuilt_after_the_nats_server_restarts() {
    let mut server = NatsServer::start();
    let (a, b) = (host(1).await, host(1).await);
    let expiry = Duration::from_secs(1);
    let _joined_a = join(&a, uplink(&server, "restart", "a").expiry(expiry)).await;
    let _joined_b = join(&b, uplink(&server, "restart", "b").expiry(expiry)).await;
    until(a.hub(), "a sees b", |h| h.len() == 1).await;

    // An outage longer than the expiry: each forgets the other...
    server.stop();
    until(a.hub(), "a forgets b during the outage", |h| h.is_empty()).await;
    // ... and hears of it again once the server is back, with what changed meanwhile.
    let second = b.connect(WorkerId::new(1, 1)).await.unwrap();
    second.on(|_: Tick| async {});
    second.ready().await.unwrap();
    server.restart();
    until(a.hub(), "a sees b again, with its new worker", |h| {
        h.len() == 1 && h[0].workers.len() == 2
    })
    .await;
    until(b.hub(), "b sees a again", |h| h.len() == 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_announcements_cost_bounded_memory_and_change_nothing() {
    let server = NatsServer::start();
    let (a, b) = (host(1).await, host(2).await);
    let _joined_a = join(&a, uplink(&server, "hostile", "a").max_hosts(3)).await;
    let _joined_b = join(&b, uplink(&server, "hostile", "b")).await;
    until(a.hub(), "a sees b", |h| h.len() == 1).await;

    let raw = async_nats::connect(server.url()).await.unwrap();
    let subject = "multiprocess.hostile.members";
    let mut bad: Vec<Vec<u8>> = vec![
        vec![0xc1],                         // not MessagePack
        vec![0x95, 1, 2, 3, 4, 5],          // not an announcement
        vec![0; 300 * 1024],                // over 256 KiB
        vec![0xdd, 0xff, 0xff, 0xff, 0xff], // an array "of 4 billion", empty
    ];
    // Workers out of slot order, and an index past the names.
    let names = vec![serde_bytes::ByteBuf::from(b"x".to_vec())];
    let unordered: Vec<(u32, u64, Vec<u32>)> = vec![(1, 1, vec![]), (0, 1, vec![])];
    bad.push(rmp_serde::to_vec(&(7u64, "h", 1u64, false, names.clone(), unordered)).unwrap());
    let past: Vec<(u32, u64, Vec<u32>)> = vec![(0, 1, vec![9])];
    bad.push(rmp_serde::to_vec(&(8u64, "h", 1u64, false, names, past)).unwrap());
    // More distinct event names than a host may announce (16384).
    let many: Vec<serde_bytes::ByteBuf> = (0..17_000)
        .map(|i| serde_bytes::ByteBuf::from(format!("e{i}").into_bytes()))
        .collect();
    let none: Vec<(u32, u64, Vec<u32>)> = vec![];
    bad.push(rmp_serde::to_vec(&(9u64, "h", 1u64, false, many, none.clone())).unwrap());
    // A host name that would put escape sequences into an operator's terminal.
    let no_names: Vec<serde_bytes::ByteBuf> = vec![];
    let escape = (10u64, "evil\u{1b}[2J", 1u64, false, no_names, none);
    bad.push(rmp_serde::to_vec(&escape).unwrap());
    for body in bad {
        raw.publish(subject, body.into()).await.unwrap();
    }
    // Ten more hosts than a's bound of 3 (b is one): two are kept.
    for host in 100..110u64 {
        let none: Vec<(u32, u64, Vec<u32>)> = vec![];
        let names: Vec<serde_bytes::ByteBuf> = vec![];
        let body = rmp_serde::to_vec(&(host, format!("fake{host}"), 1u64, false, names, none));
        raw.publish(subject, body.unwrap().into()).await.unwrap();
    }
    raw.flush().await.unwrap();
    let hosts = until(a.hub(), "a takes in two of the fakes", |h| h.len() == 3).await;
    // b, announced first, is still there and unchanged.
    let b_seen = hosts.iter().find(|h| h.name == "b").expect("b is kept");
    assert_eq!(b_seen.workers.len(), 2);
    // And none of the broken ones made it in.
    assert!(hosts
        .iter()
        .all(|h| h.name == "b" || h.name.starts_with("fake")));
}

#[tokio::test]
async fn settings_out_of_bounds_are_refused_before_connecting() {
    let hub = MockCluster::new(0).await.unwrap();
    // Nothing listens on port 1: a setting's error comes first.
    let url = "nats://127.0.0.1:1";
    for (uplink, says) in [
        (Uplink::new(url).cluster("a.b"), "cluster name"),
        (Uplink::new(url).cluster(""), "cluster name"),
        (Uplink::new(url).host(""), "host name"),
        (Uplink::new(url).host("x".repeat(256)), "host name"),
        (Uplink::new(url).expiry(Duration::from_millis(10)), "expiry"),
        (Uplink::new(url).max_hosts(0), "max_hosts"),
        (Uplink::new(" , "), "no NATS server"),
    ] {
        let Err(err) = hub.hub().join(uplink).await else {
            panic!("joined with a setting that says {says}");
        };
        assert!(err.to_string().contains(says), "{err} should say {says}");
    }
    // A server that is not there: a clear error, naming it.
    let options = async_nats::ConnectOptions::new().connection_timeout(Duration::from_secs(2));
    let Err(err) = hub.hub().join(Uplink::new(url).options(options)).await else {
        panic!("joined a server that is not there");
    };
    assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_joins_one_cluster_at_a_time_and_may_join_again_after_leaving() {
    let server = NatsServer::start();
    let (a, b) = (host(1).await, host(1).await);
    let _joined_b = join(&b, uplink(&server, "again", "b")).await;
    let first = join(&a, uplink(&server, "again", "a")).await;
    let Err(err) = a.hub().join(uplink(&server, "other", "a")).await else {
        panic!("a Hub joined two clusters");
    };
    assert!(
        err.to_string().contains("joined a cluster already"),
        "{err}"
    );
    until(a.hub(), "a sees b", |h| h.len() == 1).await;
    first.leave().await;
    assert!(a.hub().hosts().is_empty());
    let _second = join(&a, uplink(&server, "again", "a2")).await;
    until(a.hub(), "a sees b again", |h| h.len() == 1).await;
    until(b.hub(), "b sees a under its new name", |h| {
        h.len() == 1 && h[0].name == "a2"
    })
    .await;
}
