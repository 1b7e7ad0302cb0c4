//! The messenger over the mock transport (real Hub, real codec, in-memory pipes): the cost of
//! the routing and the Messenger machinery without the kernel.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use messenger::testing::MockCluster;
use messenger::Event;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Event)]
#[event(name = "pid", reply = u32)]
struct Pid;

#[derive(Serialize, Deserialize, Event)]
#[event(name = "tick")]
struct Tick(u64);

#[derive(Serialize, Deserialize, Event)]
#[event(name = "echo", reply = String)]
struct Echo(String);

fn mock(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let ticks = Arc::new(AtomicU64::new(0));
    let cluster = rt.block_on(async {
        let cluster = MockCluster::new(2).await.unwrap();
        for worker in cluster.workers() {
            worker.on(|_: Pid| async { std::process::id() });
            let ticks = ticks.clone();
            worker.on(move |_: Tick| {
                ticks.fetch_add(1, Ordering::Relaxed);
                async {}
            });
        }
        cluster.master().on(|Echo(text): Echo| async move { text });
        cluster.ready().await.unwrap();
        cluster
    });
    let worker = cluster.worker(0).clone();

    let mut group = c.benchmark_group("mock");
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
    group.finish();
}

criterion_group!(benches, mock);
criterion_main!(benches);
