//! The demo cluster of `shared/bench/CONTRACT.md`: axum in the workers, messaging through the
//! master. `PORT` (default 3000) and `WORKERS` (default 0 = one per CPU) configure it; for the
//! chaos driver (`examples/chaos`), so do `HEARTBEAT_TIMEOUT_MS` (default: the cluster's, 30000;
//! a worker that answers no heartbeat this long is replaced) and `KILL_TIMEOUT_MS` (default
//! 10000: a draining worker still alive this long is killed). `POST /unhealthy` has the worker
//! that answers report itself unhealthy (it is replaced, new first). With `CONTROL_SOCKET` set
//! to a path, the master listens there for the `multiprocess` CLI
//! (`cargo run --bin multiprocess -- --socket PATH status`). With `METRICS_ADDR` set to an
//! address (`127.0.0.1:9100`), the master serves Prometheus metrics at `/metrics` there: the
//! cluster's own, and what the workers record (`demo_http_requests_total{route}`,
//! `demo_http_request_duration_seconds`, `demo_ticks`). `RUST_LOG` filters the logs: a level
//! (`warn`) or `target=level` pairs (`cluster=debug,info`: the cluster logs under `cluster::`, the
//! messenger under `messenger::`); default `info`. Built with the `nats` feature and given
//! `NATS_URL` (`nats://host:4222`), the master joins the other hosts of the cluster
//! `CLUSTER_NAME` (default `default`) as `HOST_NAME` (default: machine name and pid): the
//! shell's `status` lists them. (Messages across hosts are not carried yet: see README.)
//!
//! ```sh
//! cargo run --release --example demo-cluster
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use multiprocess::{metrics, BoxError, Cluster, Event, Messenger, Worker};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

/// `pid`: the worker's pid.
#[derive(Serialize, Deserialize, Event)]
#[event(name = "pid", reply = u32)]
struct Pid;

/// `tick`: counted by every worker.
#[derive(Serialize, Deserialize, Event)]
#[event(name = "tick")]
struct Tick(u64);

/// `ticks`: how many ticks this worker counted.
#[derive(Serialize, Deserialize, Event)]
#[event(name = "ticks", reply = u64)]
struct Ticks;

/// `echo`: answered by the master.
#[derive(Serialize, Deserialize, Event)]
#[event(name = "echo", reply = String)]
struct Echo(String);

fn main() -> Result<(), multiprocess::Error> {
    // RUST_LOG as `level` or `target=level,...` (tracing-subscriber's `Targets`: no regex
    // engine in every process, as `EnvFilter` would bring).
    let filter: Targets = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.is_empty() => spec.parse().map_err(|e| {
            multiprocess::Error::Config(format!("RUST_LOG={spec:?} is not a filter: {e}"))
        })?,
        _ => Targets::new().with_default(tracing::Level::INFO),
    };
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer())
        .with(filter)
        .init();
    let port: u16 = env_or("PORT", 3000)?;
    let workers: usize = env_or("WORKERS", 0)?;
    let kill_timeout = Duration::from_millis(env_or("KILL_TIMEOUT_MS", 10_000)?);
    let mut builder = Cluster::builder();
    // `multiprocess --socket $CONTROL_SOCKET status` and the rest of the CLI.
    if let Some(path) = std::env::var_os("CONTROL_SOCKET") {
        builder = builder.control_socket(path);
    }
    // Prometheus metrics at http://$METRICS_ADDR/metrics.
    if let Ok(addr) = std::env::var("METRICS_ADDR") {
        let addr = addr.parse().map_err(|_| {
            multiprocess::Error::Config(format!("METRICS_ADDR={addr:?} is not an address"))
        })?;
        builder = builder.metrics(addr);
    }
    // One host of a cluster across hosts: NATS_URL (and CLUSTER_NAME, HOST_NAME).
    if let Ok(url) = std::env::var("NATS_URL") {
        builder = join_nats(builder, url)?;
    }
    if std::env::var_os("HEARTBEAT_TIMEOUT_MS").is_some() {
        builder =
            builder.heartbeat_timeout(Duration::from_millis(env_or("HEARTBEAT_TIMEOUT_MS", 0)?));
    }
    builder
        .workers(workers)
        .listen(format!("127.0.0.1:{port}"))
        .kill_timeout(kill_timeout)
        .master(|m| async move {
            m.messenger().on(|Echo(s)| async move { s });
            Ok(())
        })
        .worker(worker)
        .run()
}

/// A setting from the environment, or `default` when unset; a value that does not parse is an
/// error, not a silent fallback.
fn env_or<T: std::str::FromStr>(name: &str, default: T) -> Result<T, multiprocess::Error> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .map_err(|_| multiprocess::Error::Config(format!("{name}={v:?} is not valid"))),
        Err(_) => Ok(default),
    }
}

#[derive(Clone)]
struct App {
    worker: Worker,
    msg: Messenger,
    seq: Arc<AtomicU64>,
}

/// Counts and times every request by its route (the route's pattern, not the path asked:
/// a label with few values).
async fn measure(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let started = Instant::now();
    let response = next.run(req).await;
    metrics::counter!("demo_http_requests_total", "route" => route).increment(1);
    metrics::histogram!("demo_http_request_duration_seconds")
        .record(started.elapsed().as_secs_f64());
    response
}

fn describe_metrics() {
    metrics::describe_counter!("demo_http_requests_total", "HTTP requests, by route.");
    metrics::describe_histogram!(
        "demo_http_request_duration_seconds",
        metrics::Unit::Seconds,
        "How long HTTP requests took."
    );
    metrics::describe_gauge!("demo_ticks", "Ticks this worker counted.");
}

async fn worker(w: Worker) -> Result<(), BoxError> {
    // Recorded only when the metrics are served: the benchmarks' figures stay the bare path's.
    let measured = std::env::var_os("METRICS_ADDR").is_some();
    if measured {
        describe_metrics();
    }
    let msg = w.messenger().clone();
    let ticks = Arc::new(AtomicU64::new(0));
    // Read once: a process's pid does not change, and asking the kernel costs a system call.
    let pid = std::process::id();
    msg.on(move |_: Pid| async move { pid });
    let counter = ticks.clone();
    let ticks_gauge = measured.then(|| metrics::gauge!("demo_ticks"));
    msg.on(move |Tick(_)| {
        let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(gauge) = &ticks_gauge {
            gauge.set(n as f64);
        }
        async {}
    });
    let counter = ticks.clone();
    msg.on(move |_: Ticks| {
        let n = counter.load(Ordering::Relaxed);
        async move { n }
    });
    let app = App {
        worker: w.clone(),
        msg,
        seq: Arc::new(AtomicU64::new(0)),
    };
    let router = Router::new()
        .route("/hello", get(|| async { "hello world" }))
        .route(
            "/pid",
            get(|| async { Json(json!({ "pid": std::process::id() })) }),
        )
        .route("/map", get(map))
        .route("/consume", get(consume))
        .route("/broadcast", get(broadcast))
        .route("/ticks", get(ticks_all))
        .route("/bench/map", get(bench_map))
        .route("/bench/consume", get(bench_consume))
        .route("/bench/broadcast", get(bench_broadcast))
        .route("/bench/master", get(bench_master))
        .route("/slow", get(slow))
        .route("/reload", post(reload))
        .route("/crash", post(crash))
        .route("/unhealthy", post(unhealthy));
    let router = if measured {
        router.route_layer(axum::middleware::from_fn(measure))
    } else {
        router
    };
    let router = router.with_state(app);
    let listener = w.tcp_listener(0)?;
    w.ready().await?;
    multiprocess::serve(listener, router, w.draining()).await?;
    Ok(())
}

/// A messenger error as a 500 answer.
struct Failed(multiprocess::CallError);

impl IntoResponse for Failed {
    fn into_response(self) -> Response {
        let body = Json(json!({ "error": self.0.to_string() }));
        (StatusCode::INTERNAL_SERVER_ERROR, body).into_response()
    }
}

impl From<multiprocess::CallError> for Failed {
    fn from(e: multiprocess::CallError) -> Self {
        Failed(e)
    }
}

type Answer = Result<Json<serde_json::Value>, Failed>;

async fn map(State(app): State<App>) -> Answer {
    Ok(Json(json!({ "pids": app.msg.map(Pid).await? })))
}

async fn consume(State(app): State<App>) -> Answer {
    Ok(Json(json!({ "pid": app.msg.consume(Pid).await? })))
}

async fn broadcast(State(app): State<App>) -> Answer {
    let seq = app.seq.fetch_add(1, Ordering::Relaxed);
    app.msg.broadcast(Tick(seq)).await?;
    Ok(Json(json!({ "ok": true })))
}

async fn ticks_all(State(app): State<App>) -> Answer {
    Ok(Json(json!({ "ticks": app.msg.map(Ticks).await? })))
}

#[derive(Deserialize)]
struct N {
    n: u64,
}

async fn bench_map(State(app): State<App>, Query(N { n }): Query<N>) -> Answer {
    let start = Instant::now();
    let mut workers = 0;
    for _ in 0..n {
        workers = app.msg.map(Pid).await?.len();
    }
    let seconds = start.elapsed().as_secs_f64();
    Ok(Json(
        json!({ "op": "map", "n": n, "workers": workers, "seconds": seconds }),
    ))
}

async fn bench_consume(State(app): State<App>, Query(N { n }): Query<N>) -> Answer {
    let start = Instant::now();
    for _ in 0..n {
        app.msg.consume(Pid).await?;
    }
    let seconds = start.elapsed().as_secs_f64();
    Ok(Json(json!({ "op": "consume", "n": n, "seconds": seconds })))
}

async fn bench_broadcast(State(app): State<App>, Query(N { n }): Query<N>) -> Answer {
    let start = Instant::now();
    let baseline = app.msg.map(Ticks).await?;
    for _ in 0..n {
        let seq = app.seq.fetch_add(1, Ordering::Relaxed);
        app.msg.broadcast(Tick(seq)).await?;
    }
    loop {
        let now = app.msg.map(Ticks).await?;
        let done =
            now.len() == baseline.len() && now.iter().zip(&baseline).all(|(a, b)| a - b >= n);
        if done {
            break;
        }
        tokio::task::yield_now().await;
    }
    let seconds = start.elapsed().as_secs_f64();
    Ok(Json(
        json!({ "op": "broadcast", "n": n, "workers": baseline.len(), "seconds": seconds }),
    ))
}

async fn bench_master(State(app): State<App>, Query(N { n }): Query<N>) -> Answer {
    let start = Instant::now();
    for i in 0..n {
        app.msg.request_master(Echo(i.to_string())).await?;
    }
    let seconds = start.elapsed().as_secs_f64();
    Ok(Json(json!({ "op": "master", "n": n, "seconds": seconds })))
}

#[derive(Deserialize)]
struct Ms {
    ms: u64,
}

async fn slow(Query(Ms { ms }): Query<Ms>) -> Json<serde_json::Value> {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Json(json!({ "pid": std::process::id(), "ms": ms }))
}

async fn reload(State(app): State<App>) -> Json<serde_json::Value> {
    tokio::spawn(async move {
        if let Err(e) = app.worker.request_reload().await {
            tracing::error!("reload failed: {e}");
        }
    });
    Json(json!({ "ok": true }))
}

async fn crash() {
    tracing::warn!("POST /crash: exiting at once");
    std::process::exit(1);
}

async fn unhealthy(State(app): State<App>) -> Response {
    match app
        .worker
        .report_unhealthy("asked by POST /unhealthy")
        .await
    {
        Ok(()) => Json(json!({ "pid": std::process::id() })).into_response(),
        Err(e) => {
            let body = Json(json!({ "error": e.to_string() }));
            (StatusCode::INTERNAL_SERVER_ERROR, body).into_response()
        }
    }
}

#[cfg(feature = "nats")]
fn join_nats(
    builder: multiprocess::Builder,
    url: String,
) -> Result<multiprocess::Builder, multiprocess::Error> {
    let mut uplink = multiprocess::uplink::Uplink::new(url);
    if let Ok(cluster) = std::env::var("CLUSTER_NAME") {
        uplink = uplink.cluster(cluster);
    }
    if let Ok(host) = std::env::var("HOST_NAME") {
        uplink = uplink.host(host);
    }
    Ok(builder.nats(uplink))
}

#[cfg(not(feature = "nats"))]
fn join_nats(
    _: multiprocess::Builder,
    _: String,
) -> Result<multiprocess::Builder, multiprocess::Error> {
    Err(multiprocess::Error::Config(
        "NATS_URL is set, but this demo was built without the `nats` feature: \
         cargo run --release --features nats --example demo-cluster"
            .into(),
    ))
}
