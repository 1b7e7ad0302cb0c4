//! The messenger over real sockets in one process: a Hub and two worker Messengers connected by
//! `UnixStream::pair()`, so every frame crosses the kernel twice per hop, as between processes,
//! without the processes (their scheduling is what `examples/bench-cluster` adds).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use messenger::{Config, Event, Hub, Messenger, WorkerId};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

#[derive(Serialize, Deserialize, Event)]
#[event(name = "pid", reply = u32)]
struct Pid;

#[derive(Serialize, Deserialize, Event)]
#[event(name = "tick")]
struct Tick(u64);

#[derive(Serialize, Deserialize, Event)]
#[event(name = "echo", reply = String)]
struct Echo(String);

#[derive(Serialize, Deserialize, Event)]
#[event(name = "blob", reply = ByteBuf)]
struct Blob(ByteBuf);

/// A Hub and `n` Ready workers, each on its own Unix socket pair.
async fn cluster(n: u32, ticks: Arc<AtomicU64>) -> (Hub, Vec<Messenger>) {
    let config = Config::default();
    let hub = Hub::new(config.clone()).unwrap();
    hub.messenger().on(|Echo(text): Echo| async move { text });
    let mut workers = Vec::new();
    for slot in 0..n {
        let (hub_end, worker_end) = tokio::net::UnixStream::pair().unwrap();
        hub.attach(WorkerId::new(slot, 1), hub_end);
        let worker = Messenger::connect(worker_end, config.clone())
            .await
            .unwrap();
        worker.on(|_: Pid| async { std::process::id() });
        let ticks = ticks.clone();
        worker.on(move |_: Tick| {
            ticks.fetch_add(1, Ordering::Relaxed);
            async {}
        });
        worker.on(|Blob(bytes)| async move { bytes });
        worker.ready().await.unwrap();
        workers.push(worker);
    }
    (hub, workers)
}

fn socket(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let ticks = Arc::new(AtomicU64::new(0));
    let (_hub, workers) = rt.block_on(cluster(2, ticks.clone()));
    let worker = workers[0].clone();

    let mut group = c.benchmark_group("socket");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Elements(1));
    group.bench_function("consume", |b| {
        b.to_async(&rt)
            .iter(|| async { worker.consume(Pid).await.unwrap() })
    });
    group.bench_function("map_2_workers", |b| {
        b.to_async(&rt)
            .iter(|| async { worker.map(Pid).await.unwrap() })
    });
    group.bench_function("request_master", |b| {
        b.to_async(&rt)
            .iter(|| async { worker.request_master(Echo("hello".into())).await.unwrap() })
    });
    group.bench_function("broadcast_delivered_2_workers", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (worker, ticks) = (worker.clone(), ticks.clone());
            async move {
                let target = ticks.load(Ordering::Relaxed) + 2 * iters;
                let start = std::time::Instant::now();
                for n in 0..iters {
                    worker.broadcast(Tick(n)).await.unwrap();
                }
                // Every tick counted: waits on the handlers' own counter, not on time.
                while ticks.load(Ordering::Relaxed) < target {
                    tokio::task::yield_now().await;
                }
                start.elapsed()
            }
        })
    });
    group.throughput(Throughput::Elements(64));
    group.bench_function("consume_64_in_flight", |b| {
        b.to_async(&rt).iter(|| async {
            let calls: Vec<_> = (0..64).map(|_| worker.consume(Pid)).collect();
            for reply in futures_util::future::join_all(calls).await {
                reply.unwrap();
            }
        })
    });
    group.bench_function("map_64_in_flight", |b| {
        b.to_async(&rt).iter(|| async {
            let calls: Vec<_> = (0..64).map(|_| worker.map(Pid)).collect();
            for reply in futures_util::future::join_all(calls).await {
                reply.unwrap();
            }
        })
    });
    group.finish();

    // Worker 0 asks worker 1 to echo `size` bytes: two hops each way through the Hub.
    let mut group = c.benchmark_group("socket_request_payload");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    for size in [64usize, 1024, 64 * 1024, 1024 * 1024] {
        let blob = ByteBuf::from(vec![7u8; size]);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &blob, |b, blob| {
            b.to_async(&rt).iter(|| async {
                let back = worker.request(1, Blob(blob.clone())).await.unwrap();
                assert_eq!(back.len(), size);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, socket);
criterion_main!(benches);
