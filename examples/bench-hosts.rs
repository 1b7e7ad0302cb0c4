//! Calls across hosts, measured: two clusters on this machine as two hosts of one cluster,
//! joined over a NATS server, through the public API.
//!
//! This binary is host `a`: a master and one worker, the lead, which handles `pid` only (its
//! own share of a `map`). Its master starts a second copy of the binary as host `b`: a master
//! and `--workers` workers (2) that handle `pid`, `rpid`, `tick` and `ticks`. So every call
//! measured crosses hosts (a `map` is the lead's own share and one request to `b` for the
//! others'), through both Hubs, both uplinks and the NATS server.
//!
//! ```sh
//! nats-server -a 127.0.0.1 -p 4222 &
//! cargo run --release --features nats --example bench-hosts -- --url nats://127.0.0.1:4222
//! ```
//!
//! Every worker runs a current-thread runtime (`worker_threads(1)`), as `baseline-nats`'s
//! requester does.
//!
//! Tests (each about `--seconds`, after a short warm-up), from the lead:
//! - `consume`, `consume64`: `consume(rpid)` one at a time, and 64 in flight;
//! - `map`, `map64`: `map(pid)` (one entry per worker of both hosts);
//! - `broadcast`: `broadcast(tick)` for `--seconds`, until every worker of `b` counted them
//!   all: deliveries per second.
//!
//! Prints one JSON object: each test's rate and latency percentiles.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use multiprocess::uplink::Uplink;
use multiprocess::{BoxError, Cluster, Event, Master, Messenger, Peer, Worker};

#[path = "load/run.rs"]
mod load;
use load::run_load;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[derive(Serialize, Deserialize, Event)]
#[event(name = "pid", reply = u32)]
struct Pid;

/// `pid`, handled on host `b` only.
#[derive(Serialize, Deserialize, Event)]
#[event(name = "rpid", reply = u32)]
struct RPid;

#[derive(Serialize, Deserialize, Event)]
#[event(name = "tick")]
struct Tick(u64);

#[derive(Serialize, Deserialize, Event)]
#[event(name = "ticks", reply = u64)]
struct Ticks;

/// The lead's results, to the master.
#[derive(Serialize, Deserialize, Event)]
#[event(name = "report")]
struct Report(String);

const ROLE_ENV: &str = "BENCH_HOSTS_ROLE";
const CLUSTER: &str = "bench";

#[derive(Clone)]
struct Args {
    url: String,
    workers: usize,
    seconds: f64,
    in_flight: usize,
}

fn parse_args() -> Result<Args, BoxError> {
    let mut a = Args {
        url: "nats://127.0.0.1:4222".into(),
        workers: 2,
        seconds: 2.0,
        in_flight: 64,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--url" => a.url = value()?,
            "--workers" => a.workers = value()?.parse()?,
            "--seconds" => a.seconds = value()?.parse()?,
            "--in-flight" => a.in_flight = value()?.parse()?,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    Ok(a)
}

fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let args = parse_args()?;
    let remote = std::env::var_os(ROLE_ENV).is_some();
    let (host, workers) = if remote {
        ("b", args.workers)
    } else {
        ("a", 1)
    };
    let uplink = Uplink::new(args.url.clone()).cluster(CLUSTER).host(host);
    let master_args = args.clone();
    Cluster::builder()
        .workers(workers)
        // One runtime thread per worker, as the bare requester of `baseline-nats` has: the
        // lead alone on host a would otherwise get two, and a multi-thread runtime's
        // cross-thread wake-ups cost a call one at a time about as much as a hop.
        .worker_threads(1)
        .kill_timeout(Duration::from_secs(5))
        .nats(uplink)
        .master(move |m| master(m, master_args, remote))
        .worker(move |w| worker(w, args.clone(), remote))
        .run()?;
    Ok(())
}

async fn master(m: Master, args: Args, remote: bool) -> Result<(), BoxError> {
    if remote {
        return Ok(());
    }
    let b = Command::new(std::env::current_exe()?)
        .args(["--url", &args.url, "--workers", &args.workers.to_string()])
        .env(ROLE_ENV, "b")
        .env_remove(multiprocess::WORKER_ENV)
        .stdin(Stdio::null())
        .spawn()?;
    let b = Arc::new(Mutex::new(Some(b)));
    let stop_b = move |b: &Mutex<Option<Child>>| {
        if let Some(mut child) = b.lock().expect("not poisoned").take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let _ = child.wait();
        }
    };
    let (stopper, held) = (m.clone(), b.clone());
    m.messenger().on(move |Report(text)| {
        println!("{text}");
        stop_b(&held);
        stopper.stop();
        async {}
    });
    let (stopper, held) = (m.clone(), b);
    let limit = Duration::from_secs_f64(60.0 + 10.0 * args.seconds);
    tokio::spawn(async move {
        tokio::time::sleep(limit).await;
        println!(
            "{}",
            json!({ "error": format!("no report within {limit:?}") })
        );
        stop_b(&held);
        stopper.stop();
    });
    Ok(())
}

async fn worker(w: Worker, args: Args, remote: bool) -> Result<(), BoxError> {
    let msg = w.messenger().clone();
    let pid = std::process::id();
    msg.on(move |_: Pid| async move { pid });
    if remote {
        let ticks = Arc::new(AtomicU64::new(0));
        msg.on(move |_: RPid| async move { pid });
        let counter = ticks.clone();
        msg.on(move |Tick(_)| {
            counter.fetch_add(1, Ordering::Relaxed);
            async {}
        });
        msg.on(move |_: Ticks| {
            let n = ticks.load(Ordering::Relaxed);
            async move { n }
        });
    }
    w.ready().await?;
    if !remote {
        let result = match lead(&msg, &args).await {
            Ok(v) => v,
            Err(e) => json!({ "error": e.to_string() }),
        };
        msg.request_master(Report(result.to_string())).await?;
    }
    w.draining().await;
    Ok(())
}

/// The lead: waits for `b`'s workers, runs the tests.
async fn lead(msg: &Messenger, args: &Args) -> Result<Value, BoxError> {
    let n = args.workers;
    let deadline = Instant::now() + Duration::from_secs(60);
    while msg.map(Pid).await.map_or(0, |all| all.len()) != n + 1 {
        if Instant::now() > deadline {
            return Err(format!("host b's {n} workers not seen within 60 s").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = args.seconds;
    let mut results = serde_json::Map::new();
    let consume = || {
        let m = msg.clone();
        move || {
            let m = m.clone();
            async move { m.consume(RPid).await.map(drop) }
        }
    };
    let map = || {
        let m = msg.clone();
        move || {
            let m = m.clone();
            async move { m.map(Pid).await.map(drop) }
        }
    };
    results.insert("consume".into(), measure(secs, 1, consume()).await?);
    results.insert(
        "consume64".into(),
        measure(secs, args.in_flight, consume()).await?,
    );
    results.insert("map".into(), measure(secs, 1, map()).await?);
    results.insert("map64".into(), measure(secs, args.in_flight, map()).await?);
    results.insert("broadcast".into(), broadcast(msg, n, secs).await?);
    Ok(json!({
        "tool": "bench-hosts",
        "workers_b": n,
        "seconds": secs,
        "in_flight": args.in_flight,
        "results": results,
    }))
}

/// Runs `call` from `in_flight` tasks for about `secs` (after a warm-up): rate and latencies.
async fn measure<F, Fut>(secs: f64, in_flight: usize, call: F) -> Result<Value, BoxError>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<(), multiprocess::CallError>> + Send,
{
    run_load((secs / 5.0).min(0.3), in_flight, call.clone()).await?;
    let (mut latencies, elapsed) = run_load(secs, in_flight, call).await?;
    latencies.sort_unstable();
    let pct = |p: f64| {
        let i = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        latencies.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e6)
    };
    Ok(json!({
        "ops": latencies.len(),
        "seconds": elapsed,
        "ops_per_s": latencies.len() as f64 / elapsed,
        "latency_us": { "p50": pct(0.5), "p99": pct(0.99), "max": pct(1.0) },
    }))
}

/// Broadcasts for about `secs`, then waits (60 s at most) until `b`'s workers counted them all.
async fn broadcast(msg: &Messenger, n: usize, secs: f64) -> Result<Value, BoxError> {
    let counts = || async {
        let entries = msg.map_peers(Ticks).await?;
        let remote = entries
            .into_iter()
            .filter(|(p, _)| matches!(p, Peer::Remote { .. }));
        remote
            .map(|(_, r)| r)
            .collect::<Result<Vec<u64>, _>>()
            .map_err(BoxError::from)
    };
    let before = counts().await?;
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    let mut sent = 0u64;
    while Instant::now() < end {
        for _ in 0..64 {
            msg.broadcast(Tick(sent)).await?;
            sent += 1;
        }
    }
    let sent_s = start.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = counts().await?;
        if now.len() == n && now.iter().zip(&before).all(|(a, b)| a - b >= sent) {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("{sent} broadcasts not all delivered within 60 s: {now:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let deliveries = sent * n as u64;
    Ok(json!({
        "broadcasts": sent,
        "deliveries": deliveries,
        "seconds": elapsed,
        "send_seconds": sent_s,
        "broadcasts_per_s": sent as f64 / elapsed,
        "deliveries_per_s": deliveries as f64 / elapsed,
    }))
}
