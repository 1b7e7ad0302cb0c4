//! A cluster for the integration tests in `tests/`: they start this binary (never the test
//! harness itself) and drive it over HTTP, its stdout and its logs (stderr).
//!
//! Settings, from the environment: `PORT` (default 0: any; the master prints
//! `LISTENING <addr>` on stdout), `WORKERS` (default 2), `HELPER_*_MS` timeouts, and two
//! switch files a test can create or remove while the cluster runs:
//! `HELPER_CRASH_FILE` (a worker that starts while it exists exits at once with status 3) and
//! `HELPER_HOLD_FILE` (a worker that starts while it exists never gets Ready). With
//! `HELPER_MASTER_READY` set, the master waits for every worker to be Ready and prints
//! `MASTER READY <status as JSON>` (or `MASTER READY FAILED: <why>`). `METRICS_ADDR`: see
//! `helper/metrics.rs`.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use multiprocess::{BoxError, Cluster, Event, LocalAddr, Master, Messenger, Status, Worker};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[path = "helper/flood.rs"]
mod flood;
#[path = "helper/hostile.rs"]
mod hostile;
#[path = "helper/metrics.rs"]
mod metrics;

#[derive(Serialize, Deserialize, Event)]
#[event(name = "pid", reply = u32)]
struct Pid;

#[derive(Serialize, Deserialize, Event)]
#[event(name = "who-am-i", reply = (u32, u64, u32))]
struct WhoAmI;

#[derive(Serialize, Deserialize, Event)]
#[event(name = "tick")]
struct Tick;

#[derive(Serialize, Deserialize, Event)]
#[event(name = "ticks", reply = u64)]
struct Ticks;

#[derive(Serialize, Deserialize, Event)]
#[event(name = "work", reply = u32)]
struct Work;

#[derive(Serialize, Deserialize, Event)]
#[event(name = "work-done", reply = u64)]
struct WorkDone;

#[derive(Serialize, Deserialize, Event)]
#[event(name = "echo", reply = String)]
struct Echo(String);

#[derive(Serialize, Deserialize, Event)]
#[event(name = "master-map", reply = Result<Vec<u32>, String>)]
struct MasterMap;

#[derive(Serialize, Deserialize, Event)]
#[event(name = "status", reply = Option<Status>)]
struct StatusQuery;

/// The master's status once every worker is Ready (`Master::ready`), or why it never was.
#[derive(Serialize, Deserialize, Event)]
#[event(name = "ready-status", reply = Result<Status, String>)]
struct ReadyStatusQuery;

/// `Master::ready`, then `Master::status`.
async fn ready_status(master: &Master) -> Result<Status, String> {
    master.ready().await.map_err(|e| e.to_string())?;
    master.status().await.map_err(|e| e.to_string())
}

fn ms(name: &str, default: u64) -> Duration {
    let value = std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number of milliseconds"))
    });
    Duration::from_millis(value.unwrap_or(default))
}

fn main() -> Result<(), multiprocess::Error> {
    tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let port = std::env::var("PORT").unwrap_or_else(|_| "0".into());
    let workers = std::env::var("WORKERS").map_or(2, |w| w.parse().expect("WORKERS"));
    let mut builder = Cluster::builder()
        .workers(workers)
        .listen(format!("127.0.0.1:{port}"));
    if let Some(path) = std::env::var_os("HELPER_UNIX") {
        builder = builder.listen_unix(path);
    }
    if let Some(path) = std::env::var_os("CONTROL_SOCKET") {
        builder = builder.control_socket(path);
    }
    // One host of a cluster across hosts (tests/hosts.rs), as the demo cluster does.
    #[cfg(feature = "nats")]
    if let Ok(url) = std::env::var("NATS_URL") {
        let mut uplink = multiprocess::uplink::Uplink::new(url)
            .cluster(std::env::var("CLUSTER_NAME").unwrap_or_else(|_| "default".into()));
        if let Ok(host) = std::env::var("HOST_NAME") {
            uplink = uplink.host(host);
        }
        if let Ok(ms) = std::env::var("HELPER_EXPIRY_MS") {
            uplink = uplink.expiry(Duration::from_millis(ms.parse().expect("HELPER_EXPIRY_MS")));
        }
        builder = builder.nats(uplink);
    }
    if std::env::var_os("HELPER_PREFIX_OUTPUT").is_some() {
        builder = builder.prefix_worker_output(true);
    }
    if let Ok(n) = std::env::var("HELPER_RECYCLE_MESSAGES") {
        builder = builder.recycle_after_messages(n.parse().expect("HELPER_RECYCLE_MESSAGES"));
    }
    if let Ok(bytes) = std::env::var("HELPER_RECYCLE_MEMORY") {
        builder = builder.recycle_above_memory(bytes.parse().expect("HELPER_RECYCLE_MEMORY"));
    }
    if std::env::var_os("HELPER_RECYCLE_AGE_MS").is_some() {
        builder = builder.recycle_after(ms("HELPER_RECYCLE_AGE_MS", 0));
    }
    metrics::configure(builder)
        .worker_threads(1)
        .ready_timeout(ms("HELPER_READY_TIMEOUT_MS", 20_000))
        .kill_timeout(ms("HELPER_KILL_TIMEOUT_MS", 10_000))
        .heartbeat_interval(ms("HELPER_HEARTBEAT_INTERVAL_MS", 200))
        .heartbeat_timeout(ms("HELPER_HEARTBEAT_TIMEOUT_MS", 10_000))
        .backoff(
            ms("HELPER_BACKOFF_INITIAL_MS", 100),
            ms("HELPER_BACKOFF_MAX_MS", 10_000),
        )
        .stable_after(ms("HELPER_STABLE_AFTER_MS", 10_000))
        .master(|m| async move {
            m.messenger().on(|Echo(s)| async move { s });
            let master = m.clone();
            m.messenger().on(move |_: MasterMap| {
                let master = master.clone();
                async move { master.messenger().map(Pid).await.map_err(|e| e.to_string()) }
            });
            let master = m.clone();
            m.messenger().on(move |_: StatusQuery| {
                let master = master.clone();
                async move { master.status().await.ok() }
            });
            let master = m.clone();
            m.messenger().on(move |_: ReadyStatusQuery| {
                let master = master.clone();
                async move { ready_status(&master).await }
            });
            if std::env::var_os("HELPER_MASTER_READY").is_some() {
                // Waited for in a task: the workers start once this bootstrap returns.
                let master = m.clone();
                tokio::spawn(async move {
                    match ready_status(&master).await {
                        Ok(status) => println!("MASTER READY {}", json!(status)),
                        Err(e) => println!("MASTER READY FAILED: {e}"),
                    }
                });
            }
            if std::env::var_os("HELPER_BOOT_ASKS").is_some() {
                // The master's bootstrap asks before any worker starts: answered at once.
                let status = m.status().await?;
                let reloaded = m.reload().await;
                println!(
                    "BOOT ASKED phase={:?} slots={} reload={reloaded:?}",
                    status.phase,
                    status.slots.len()
                );
            }
            for addr in m.local_addrs() {
                if let LocalAddr::Tcp(addr) = addr {
                    println!("LISTENING {addr}");
                }
            }
            std::io::stdout().flush()?;
            if std::env::var_os("HELPER_BOOT_FAILS").is_some() {
                return Err("the master's bootstrap fails, as asked".into());
            }
            Ok(())
        })
        .worker(worker)
        .run()
}

fn switch_on(var: &str) -> bool {
    std::env::var_os(var).is_some_and(|path| std::path::Path::new(&path).exists())
}

#[derive(Clone)]
struct App {
    worker: Worker,
    msg: Messenger,
}

async fn worker(w: Worker) -> Result<(), BoxError> {
    if switch_on("HELPER_CRASH_FILE") {
        tracing::warn!("crash switch is on: exiting with status 3");
        std::process::exit(3);
    }
    let msg = w.messenger().clone();
    let ticks = Arc::new(AtomicU64::new(0));
    let work = Arc::new(AtomicU64::new(0));
    msg.on(|_: Pid| async { std::process::id() });
    let id = w.id();
    msg.on(move |_: WhoAmI| async move { (id.slot, id.generation, std::process::id()) });
    let (t1, t2) = (ticks.clone(), ticks.clone());
    msg.on(move |_: Tick| {
        t1.fetch_add(1, Ordering::SeqCst);
        async {}
    });
    msg.on(move |_: Ticks| {
        let n = t2.load(Ordering::SeqCst);
        async move { n }
    });
    let (c1, c2) = (work.clone(), work.clone());
    msg.on(move |_: Work| {
        c1.fetch_add(1, Ordering::SeqCst);
        async { std::process::id() }
    });
    msg.on(move |_: WorkDone| {
        let n = c2.load(Ordering::SeqCst);
        async move { n }
    });
    let app = App {
        worker: w.clone(),
        msg,
    };
    let router = Router::new()
        .route("/hello", get(|| async { "hello world" }))
        .route("/id", get(id_of))
        .route("/map", get(map))
        .route("/ids", get(ids))
        .route("/consume", get(consume))
        .route("/work-done", get(work_done))
        .route("/broadcast", get(broadcast))
        .route("/ticks", get(ticks_all))
        .route("/master/echo", get(master_echo))
        .route("/master/map", get(master_map))
        .route("/status", get(status))
        .route("/master/ready", get(master_ready))
        .route("/slow", get(slow))
        .route("/print", get(print))
        .route("/unhealthy", post(unhealthy))
        .route("/hang", post(hang))
        .route("/panic", post(panic))
        .route("/reload", post(reload))
        .route("/reload-in-background", post(reload_in_background))
        .route("/crash", post(crash));
    let router = metrics::measured(router)
        .merge(flood::routes(app.msg.clone()))
        .merge(hostile::routes(app.msg.clone()))
        .with_state(app);
    let listener = w.tcp_listener(0)?;
    let unix = match std::env::var_os("HELPER_UNIX") {
        Some(_) => Some(w.unix_listener(1)?),
        None => None,
    };
    if switch_on("HELPER_HOLD_FILE") {
        tracing::warn!("hold switch is on: never getting Ready");
    } else {
        w.ready().await?;
    }

    let on_unix = async {
        match unix {
            Some(unix) => multiprocess::serve(unix, router.clone(), w.draining()).await,
            None => Ok(()),
        }
    };
    let on_tcp = multiprocess::serve(listener, router.clone(), w.draining());
    tokio::try_join!(on_tcp, on_unix)?;
    if std::env::var_os("HELPER_READY_AGAIN").is_some() {
        // A worker that misbehaves: drained, it asks to be Ready again.
        let again = w.ready().await;
        tracing::warn!("asked to be Ready again after draining: {again:?}");
    }
    Ok(())
}

type Answer = Result<Json<Value>, (StatusCode, String)>;

fn failed(e: impl std::fmt::Display) -> (StatusCode, String) {
    (StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

async fn id_of(State(app): State<App>) -> Json<Value> {
    Json(json!({
        "pid": std::process::id(),
        "slot": app.worker.slot(),
        "generation": app.worker.generation(),
    }))
}

async fn map(State(app): State<App>) -> Answer {
    Ok(Json(
        json!({ "pids": app.msg.map(Pid).await.map_err(failed)? }),
    ))
}

async fn ids(State(app): State<App>) -> Answer {
    Ok(Json(json!(app.msg.map(WhoAmI).await.map_err(failed)?)))
}

async fn consume(State(app): State<App>) -> Answer {
    Ok(Json(
        json!({ "pid": app.msg.consume(Work).await.map_err(failed)? }),
    ))
}

async fn work_done(State(app): State<App>) -> Answer {
    Ok(Json(json!(app.msg.map(WorkDone).await.map_err(failed)?)))
}

async fn broadcast(State(app): State<App>) -> Answer {
    app.msg.broadcast(Tick).await.map_err(failed)?;
    Ok(Json(json!({ "ok": true, "pid": std::process::id() })))
}

async fn ticks_all(State(app): State<App>) -> Answer {
    Ok(Json(json!(app.msg.map(Ticks).await.map_err(failed)?)))
}

#[derive(Deserialize)]
struct S {
    s: String,
}

async fn master_echo(State(app): State<App>, Query(S { s }): Query<S>) -> Answer {
    let echoed = app.msg.request_master(Echo(s)).await.map_err(failed)?;
    Ok(Json(json!(echoed)))
}

async fn master_map(State(app): State<App>) -> Answer {
    let pids = app.msg.request_master(MasterMap).await.map_err(failed)?;
    Ok(Json(json!(pids.map_err(failed)?)))
}

async fn status(State(app): State<App>) -> Answer {
    let status = app.msg.request_master(StatusQuery).await.map_err(failed)?;
    Ok(Json(json!(status)))
}

async fn master_ready(State(app): State<App>) -> Answer {
    let status = app
        .msg
        .request_master(ReadyStatusQuery)
        .await
        .map_err(failed)?;
    Ok(Json(json!(status.map_err(failed)?)))
}

#[derive(Deserialize)]
struct Ms {
    ms: u64,
}

#[derive(Deserialize)]
struct N {
    n: u64,
}

/// Prints `n` lines to stdout and one to stderr, plainly (no tracing).
async fn print(Query(N { n }): Query<N>) -> Json<Value> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for i in 0..n {
        let _ = writeln!(out, "printed line {i}");
    }
    let _ = out.flush();
    eprintln!("printed to stderr");
    tracing::info!(n, "printed");
    Json(json!({ "pid": std::process::id(), "n": n }))
}

async fn slow(Query(Ms { ms }): Query<Ms>) -> Json<Value> {
    tracing::info!(ms, "slow request started");
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Json(json!({ "pid": std::process::id(), "ms": ms }))
}

async fn unhealthy(State(app): State<App>) -> Answer {
    app.worker
        .report_unhealthy("asked by the test")
        .await
        .map_err(failed)?;
    Ok(id_of(State(app)).await)
}

async fn crash() {
    std::process::exit(1);
}

async fn hang(State(app): State<App>) -> Json<Value> {
    tokio::spawn(async {
        // Let the answer go out first, then block the runtime's only thread for good.
        tokio::time::sleep(Duration::from_millis(100)).await;
        tracing::warn!("hanging the runtime");
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    });
    id_of(State(app)).await
}

async fn panic(State(app): State<App>) -> Json<Value> {
    // Several tasks panic: the worker reports itself once.
    for _ in 0..5 {
        tokio::spawn(async { panic!("a task panicked, as the test asked") });
    }
    id_of(State(app)).await
}

/// Asks for a reload from a task of this worker and answers at once: the task prints
/// `RELOAD OUTCOME pid=<pid> <result>` when the outcome comes, whatever became of the worker.
async fn reload_in_background(State(app): State<App>) -> Json<Value> {
    let worker = app.worker.clone();
    tokio::spawn(async move {
        let outcome = worker.request_reload().await;
        println!("RELOAD OUTCOME pid={} {outcome:?}", std::process::id());
    });
    id_of(State(app)).await
}

async fn reload(State(app): State<App>) -> Answer {
    app.worker.request_reload().await.map_err(failed)?;
    Ok(Json(json!({ "ok": true })))
}
