//! A fixed workload for profilers (`valgrind --tool=callgrind`): pipelined calls through the
//! mock transport on one thread, so instruction counts repeat from run to run.
//!
//! `cargo build --release -p multiprocess-messenger --example profile && valgrind --tool=callgrind
//! target/release/examples/profile consume 20000`

use messenger::testing::MockCluster;
use messenger::Event;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Event)]
#[event(name = "pid", reply = u32)]
struct Pid;

#[derive(Serialize, Deserialize, Event)]
#[event(name = "tick")]
struct Tick(u64);

fn main() {
    let mut args = std::env::args().skip(1);
    let op = args.next().unwrap_or_else(|| "consume".into());
    let calls: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(20_000);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let cluster = MockCluster::new(2).await.unwrap();
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
        for worker in cluster.workers() {
            worker.on(|_: Pid| async { 7 });
            let done_tx = done_tx.clone();
            worker.on(move |Tick(n)| {
                if n == 0 {
                    let _ = done_tx.send(());
                }
                async {}
            });
        }
        cluster.ready().await.unwrap();
        let worker = cluster.worker(0).clone();
        sizes(&worker);
        let start = std::time::Instant::now();
        for round in 0..calls / 64 {
            match op.as_str() {
                "consume" => {
                    let calls: Vec<_> = (0..64).map(|_| worker.consume(Pid)).collect();
                    for reply in futures_util::future::join_all(calls).await {
                        reply.unwrap();
                    }
                }
                "map" => {
                    let calls: Vec<_> = (0..64).map(|_| worker.map(Pid)).collect();
                    for reply in futures_util::future::join_all(calls).await {
                        reply.unwrap();
                    }
                }
                "broadcast" => {
                    for n in 0..64 {
                        worker
                            .broadcast(Tick(n + 1 + round as u64 * 64))
                            .await
                            .unwrap();
                    }
                }
                other => panic!("unknown op {other}: consume, map or broadcast"),
            }
        }
        if op == "broadcast" {
            worker.broadcast(Tick(0)).await.unwrap();
            done_rx.recv().await;
            done_rx.recv().await;
        }
        let elapsed = start.elapsed();
        println!(
            "{op}: {calls} calls in {elapsed:?}: {:.0}/s",
            calls as f64 / elapsed.as_secs_f64()
        );
    });
}

#[allow(dead_code)]
fn sizes(worker: &messenger::Messenger) {
    eprintln!(
        "map {} consume {} broadcast {}",
        std::mem::size_of_val(&worker.map(Pid)),
        std::mem::size_of_val(&worker.consume(Pid)),
        std::mem::size_of_val(&worker.broadcast(Tick(0)))
    );
}
