//! The messaging load tool: a real cluster (master + `--workers` worker processes, the
//! `cluster` crate, Unix sockets, the Hub) measured through the public API.
//!
//! Worker slot 0 runs the measurements once every worker is Ready, hands the result to the
//! master (`request_master`), and the master prints it as one JSON line on stdout and stops
//! the cluster. A watchdog in the master stops it anyway after `--limit` seconds.
//!
//! ```sh
//! cargo run --release --example bench-cluster -- --workers 2 --seconds 2 \
//!     --tests consume,master,consume64,map64,map,broadcast,payload,cpu --sizes 64,1024,1048576
//! ```
//!
//! `--worker-threads N` sets the workers' runtime threads (default: the cluster's);
//! `--busy-poll-us N` the messenger's busy-poll budget (default: the messenger's, 100 µs; 0 never
//! polls).
//!
//! Tests (each bounded to about `--seconds`, after a short warm-up):
//! - `consume`, `master`: `consume(pid)` / `request_master(echo)` one at a time;
//! - `consume64`, `map64`: the same with `--in-flight` (64) calls outstanding from worker 0;
//! - `map`: `map(pid)` one at a time, with latency percentiles (the scaling run over N);
//! - `broadcast`: `broadcast(tick)` as fast as the queues take them, until every worker
//!   counted them all: deliveries per second;
//! - `payload`: `request(slot 1, blob)` one at a time, the handler echoing the bytes, for each
//!   of `--sizes`.
//!
//! Every test also reports the master's CPU time (utime + stime of `/proc/<ppid>/stat`, read
//! by worker 0 before and after) per operation and per routed message, a routed message being
//! one frame the Hub writes to a worker's socket (consume: 2 - 1/N on average, as on the caller's
//! own turn the Hub sends back one frame telling it to run the handler itself; request_master: 1;
//! map: 2N - 1, the calling worker running its own share; broadcast: N; request to another
//! worker: 2).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use multiprocess::{BoxError, Cluster, Event, Master, Messenger, Worker};

#[path = "load/run.rs"]
mod load;
use load::run_load;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use serde_json::{json, Value};

#[derive(Serialize, Deserialize, Event)]
#[event(name = "pid", reply = u32)]
struct Pid;

#[derive(Serialize, Deserialize, Event)]
#[event(name = "tick")]
struct Tick(u64);

#[derive(Serialize, Deserialize, Event)]
#[event(name = "ticks", reply = u64)]
struct Ticks;

#[derive(Serialize, Deserialize, Event)]
#[event(name = "echo", reply = String)]
struct Echo(String);

/// Raw bytes (MessagePack bin), echoed back by its handler.
#[derive(Serialize, Deserialize, Event)]
#[event(name = "blob", reply = ByteBuf)]
struct Blob(ByteBuf);

/// Worker 0's result, for the master to print.
#[derive(Serialize, Deserialize, Event)]
#[event(name = "report")]
struct Report(String);

#[derive(Clone, Debug)]
struct Args {
    workers: usize,
    seconds: f64,
    in_flight: usize,
    tests: Vec<String>,
    sizes: Vec<usize>,
    limit: f64,
    /// Runtime threads per worker (default: the cluster's, the CPUs shared out among the workers).
    worker_threads: Option<usize>,
    /// The messenger's busy-poll budget in microseconds (default: the messenger's).
    busy_poll_us: Option<u64>,
}

fn parse_args() -> Result<Args, BoxError> {
    let mut args = Args {
        workers: 2,
        seconds: 2.0,
        in_flight: 64,
        tests: "consume,master,consume64,map64,map,broadcast"
            .split(',')
            .map(String::from)
            .collect(),
        sizes: vec![64, 1024, 16 * 1024, 64 * 1024, 256 * 1024, 1024 * 1024],
        limit: 300.0,
        worker_threads: None,
        busy_poll_us: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--workers" => args.workers = value()?.parse()?,
            "--seconds" => args.seconds = value()?.parse()?,
            "--in-flight" => args.in_flight = value()?.parse()?,
            "--limit" => args.limit = value()?.parse()?,
            "--worker-threads" => args.worker_threads = Some(value()?.parse()?),
            "--busy-poll-us" => args.busy_poll_us = Some(value()?.parse()?),
            "--tests" => args.tests = value()?.split(',').map(String::from).collect(),
            "--sizes" => {
                args.sizes = value()?
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::parse)
                    .collect::<Result<_, _>>()?
            }
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    if args.workers == 0 {
        return Err("--workers must be at least 1".into());
    }
    Ok(args)
}

fn main() -> Result<(), BoxError> {
    let started = Instant::now();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    // The master passes its arguments on to every worker, so both parse the same.
    let args = parse_args()?;
    let (master_args, worker_args) = (args.clone(), args.clone());
    let mut builder = Cluster::builder();
    if let Some(n) = args.worker_threads {
        builder = builder.worker_threads(n);
    }
    if let Some(us) = args.busy_poll_us {
        let config = multiprocess::Config::default().busy_poll(Duration::from_micros(us));
        builder = builder.messenger_config(config);
    }
    builder
        .workers(args.workers)
        .kill_timeout(Duration::from_secs(5))
        .master(move |m| master(m, master_args, started))
        .worker(move |w| worker(w, worker_args.clone()))
        .run()?;
    Ok(())
}

async fn master(m: Master, args: Args, started: Instant) -> Result<(), BoxError> {
    m.messenger().on(|Echo(s)| async move { s });
    // Start-up: from this process's start to every slot Ready, told by the master.
    let ready_s = Arc::new(Mutex::new(None::<f64>));
    let (seen, master) = (ready_s.clone(), m.clone());
    tokio::spawn(async move {
        if master.ready().await.is_ok() {
            *seen.lock().expect("not poisoned") = Some(started.elapsed().as_secs_f64());
        }
    });
    let stopper = m.clone();
    m.messenger().on(move |Report(text)| {
        let mut value: Value = serde_json::from_str(&text).unwrap_or_else(
            |e| json!({ "error": format!("worker 0 sent no JSON: {e}"), "text": text }),
        );
        value["startup_to_ready_s"] = json!(*ready_s.lock().expect("not poisoned"));
        println!("{value}");
        stopper.stop();
        async {}
    });
    // The watchdog: a bound on the whole run, whatever happens in the workers.
    let limit = Duration::from_secs_f64(args.limit);
    let stopper = m.clone();
    tokio::spawn(async move {
        tokio::time::sleep(limit).await;
        println!(
            "{}",
            json!({ "error": format!("no report within {limit:?}") })
        );
        stopper.stop();
    });
    Ok(())
}

async fn worker(w: Worker, args: Args) -> Result<(), BoxError> {
    let msg = w.messenger().clone();
    let ticks = Arc::new(AtomicU64::new(0));
    // Read once: a process's pid does not change, and asking the kernel costs a system call.
    let pid = std::process::id();
    msg.on(move |_: Pid| async move { pid });
    let counter = ticks.clone();
    msg.on(move |Tick(_)| {
        counter.fetch_add(1, Ordering::Relaxed);
        async {}
    });
    msg.on(move |_: Ticks| {
        let n = ticks.load(Ordering::Relaxed);
        async move { n }
    });
    msg.on(|Blob(bytes)| async move { bytes });
    w.ready().await?;
    if w.slot() == 0 {
        let result = match lead(&msg, &args).await {
            Ok(v) => v,
            Err(e) => json!({ "error": e.to_string() }),
        };
        msg.request_master(Report(result.to_string())).await?;
    }
    w.draining().await;
    Ok(())
}

/// Worker 0's part: wait for every worker, run the tests, return the results.
async fn lead(msg: &Messenger, args: &Args) -> Result<Value, BoxError> {
    let n = args.workers;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if msg.map(Pid).await?.len() == n {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("{n} workers not Ready within 60 s").into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let secs = args.seconds;
    // consume takes turns over the N workers; on the caller's own turn the Hub tells it to run
    // the handler itself (one frame back) instead of forwarding (two frames).
    let consume_frames = 2.0 - 1.0 / n as f64;
    let mut results = serde_json::Map::new();
    let mut record = |name: String, value: Value| {
        results.insert(name, value);
    };
    for test in &args.tests {
        let m = msg.clone();
        match test.as_str() {
            "consume" => record(
                test.clone(),
                measure(secs, 1, consume_frames, move || {
                    let m = m.clone();
                    async move { m.consume(Pid).await.map(drop) }
                })
                .await?,
            ),
            "master" => record(
                test.clone(),
                measure(secs, 1, 1.0, move || {
                    let m = m.clone();
                    async move { m.request_master(Echo("hello".into())).await.map(drop) }
                })
                .await?,
            ),
            "consume64" => record(
                test.clone(),
                measure(secs, args.in_flight, consume_frames, move || {
                    let m = m.clone();
                    async move { m.consume(Pid).await.map(drop) }
                })
                .await?,
            ),
            "map64" => record(
                test.clone(),
                measure(secs, args.in_flight, 2.0 * n as f64 - 1.0, move || {
                    let m = m.clone();
                    async move { m.map(Pid).await.map(drop) }
                })
                .await?,
            ),
            "map" => record(
                test.clone(),
                measure(secs, 1, 2.0 * n as f64 - 1.0, move || {
                    let m = m.clone();
                    async move { m.map(Pid).await.map(drop) }
                })
                .await?,
            ),
            "broadcast" => record(test.clone(), broadcast(msg, n, secs).await?),
            "payload" => {
                let slot = if n > 1 { 1 } else { 0 };
                let mut rows = Vec::new();
                for &size in &args.sizes {
                    let blob = ByteBuf::from(vec![7u8; size]);
                    let m = msg.clone();
                    let mut row = measure((secs / 2.0).max(0.5), 1, 2.0, move || {
                        let (m, blob) = (m.clone(), blob.clone());
                        async move {
                            let back = m.request(slot, Blob(blob)).await?;
                            assert_eq!(back.len(), size, "the echo lost bytes");
                            Ok(())
                        }
                    })
                    .await?;
                    row["size"] = json!(size);
                    row["mib_per_s_each_way"] =
                        json!(row["ops_per_s"].as_f64().unwrap_or(0.0) * size as f64 / 1048576.0);
                    rows.push(row);
                }
                record(test.clone(), Value::Array(rows));
            }
            other => return Err(format!("unknown test {other:?}").into()),
        }
    }
    Ok(json!({
        "tool": "bench-cluster",
        "workers": n,
        "seconds": secs,
        "in_flight": args.in_flight,
        "results": results,
    }))
}

/// Runs `call` from `in_flight` concurrent tasks for about `secs` (after a short warm-up) and
/// reports the rate, the latencies and the master's CPU per operation and per routed message
/// (`frames` messages the Hub writes per operation).
async fn measure<F, Fut>(
    secs: f64,
    in_flight: usize,
    frames: f64,
    call: F,
) -> Result<Value, BoxError>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = messenger_result::Result<()>> + Send,
{
    run_load((secs / 5.0).min(0.3), in_flight, call.clone()).await?;
    let master0 = cpu_seconds(&master_pid());
    let self0 = cpu_seconds("self");
    let faults0 = (minor_faults(&master_pid()), minor_faults("self"));
    let (mut latencies, elapsed) = run_load(secs, in_flight, call).await?;
    let master1 = cpu_seconds(&master_pid());
    let self1 = cpu_seconds("self");
    let faults1 = (minor_faults(&master_pid()), minor_faults("self"));
    let ops = latencies.len() as f64;
    latencies.sort_unstable();
    let pct = |p: f64| -> f64 {
        let i = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        latencies.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e6)
    };
    let mean = latencies.iter().map(Duration::as_secs_f64).sum::<f64>() / ops.max(1.0) * 1e6;
    let per_op = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if ops > 0.0 => json!((b - a) * 1e6 / ops),
        _ => Value::Null,
    };
    let master_per_op = per_op(master0, master1);
    Ok(json!({
        "ops": ops as u64,
        "seconds": elapsed,
        "in_flight": in_flight,
        "ops_per_s": ops / elapsed,
        "latency_us": { "mean": mean, "p50": pct(0.5), "p99": pct(0.99), "max": pct(1.0) },
        "master_cpu_us_per_op": master_per_op,
        "routed_per_op": frames,
        "master_cpu_us_per_routed": master_per_op.as_f64().map(|v| v / frames),
        "master_cpu_share": match (master0, master1) {
            (Some(a), Some(b)) => json!((b - a) / elapsed),
            _ => Value::Null,
        },
        "worker0_cpu_us_per_op": per_op(self0, self1),
        // Page faults per operation: large frames whose buffers are freed and re-allocated
        // fault their pages in again on every use.
        "master_faults_per_op": per_op(faults0.0, faults1.0).as_f64().map(|v| v / 1e6),
        "worker0_faults_per_op": per_op(faults0.1, faults1.1).as_f64().map(|v| v / 1e6),
    }))
}

/// Broadcasts for about `secs`, then waits (60 s at most) until every worker counted them all.
async fn broadcast(msg: &Messenger, n: usize, secs: f64) -> Result<Value, BoxError> {
    let before = msg.map(Ticks).await?;
    let master0 = cpu_seconds(&master_pid());
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
        let now = msg.map(Ticks).await?;
        if now.len() == before.len() && now.iter().zip(&before).all(|(a, b)| a - b >= sent) {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("{sent} broadcasts not all delivered within 60 s").into());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let master1 = cpu_seconds(&master_pid());
    let deliveries = sent * n as u64;
    let master_per_delivery = match (master0, master1) {
        (Some(a), Some(b)) if deliveries > 0 => json!((b - a) * 1e6 / deliveries as f64),
        _ => Value::Null,
    };
    Ok(json!({
        "broadcasts": sent,
        "deliveries": deliveries,
        "seconds": elapsed,
        "send_seconds": sent_s,
        "broadcasts_per_s": sent as f64 / elapsed,
        "deliveries_per_s": deliveries as f64 / elapsed,
        "master_cpu_us_per_routed": master_per_delivery,
    }))
}

/// The master is this worker's parent process.
fn master_pid() -> String {
    std::os::unix::process::parent_id().to_string()
}

/// Minor page faults of `/proc/<pid>/stat` (memory the kernel had to map and zero on touch).
fn minor_faults(pid: &str) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest: Vec<&str> = text[text.rfind(')')? + 2..].split_whitespace().collect();
    rest.get(7)?.parse::<u64>().ok().map(|n| n as f64)
}

/// utime + stime of `/proc/<pid>/stat`, in seconds (clock-tick resolution, 10 ms here).
fn cpu_seconds(pid: &str) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest: Vec<&str> = text[text.rfind(')')? + 2..].split_whitespace().collect();
    let ticks: u64 = rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| ticks as f64 / hz as f64)
}

/// A messenger call's `Result`, named apart from this file's own.
mod messenger_result {
    pub type Result<T> = std::result::Result<T, multiprocess::CallError>;
}
