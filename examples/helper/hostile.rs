//! What a hostile worker would try, through the public API, for `tests/hostile.rs`: events
//! named like the cluster's own.
//!
//! - `GET /hostile/drain?slot=N`: asks the worker of slot `N` to run a fake drain order.
//!   Answers the call's outcome (`"ok"`, or the error).
//! - `GET /hostile/unhealthy?count=C&size=N`: `C` fake unhealthy reports to the master, 64 at
//!   a time, each with an `N`-byte reason. Answers how many the master took.
//! - `GET /hostile/reloads?count=C`: `C` reloads asked of the master at once (as
//!   `Worker::request_reload` asks). Answers how many completed.

use axum::extract::Query;
use axum::routing::get;
use axum::{Json, Router};
use multiprocess::{Event, Messenger};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Named like the master's drain order.
#[derive(Serialize, Deserialize, Event)]
#[event(name = "multiprocess.drain")]
struct FakeDrain;

/// Named like a worker's unhealthy report.
#[derive(Serialize, Deserialize, Event)]
#[event(name = "multiprocess.unhealthy")]
struct FakeUnhealthy {
    reason: String,
}

/// Named like a worker's reload request.
#[derive(Serialize, Deserialize, Event)]
#[event(name = "multiprocess.reload", reply = Result<(), String>)]
struct FakeReload;

#[derive(Deserialize)]
struct Count {
    count: usize,
}

#[derive(Deserialize)]
struct Slot {
    slot: u32,
}

#[derive(Deserialize)]
struct Reports {
    count: usize,
    size: usize,
}

pub fn routes<S: Clone + Send + Sync + 'static>(msg: Messenger) -> Router<S> {
    let drain = msg.clone();
    let reload = msg.clone();
    Router::new()
        .route(
            "/hostile/reloads",
            get(move |Query(Count { count }): Query<Count>| {
                let msg = reload.clone();
                async move {
                    let mut asks = tokio::task::JoinSet::new();
                    for _ in 0..count {
                        let msg = msg.clone();
                        asks.spawn(async move { msg.request_master(FakeReload).await });
                    }
                    let complete = asks.join_all().await;
                    let complete = complete.iter().filter(|r| matches!(r, Ok(Ok(())))).count();
                    Json(json!({ "complete": complete }))
                }
            }),
        )
        .route(
            "/hostile/drain",
            get(move |Query(Slot { slot }): Query<Slot>| {
                let msg = drain.clone();
                async move {
                    let outcome = match msg.request(slot, FakeDrain).await {
                        Ok(()) => "ok".to_owned(),
                        Err(e) => e.to_string(),
                    };
                    Json(json!({ "outcome": outcome }))
                }
            }),
        )
        .route(
            "/hostile/unhealthy",
            get(move |Query(q): Query<Reports>| {
                let msg = msg.clone();
                async move { Json(reports(msg, q).await) }
            }),
        )
}

async fn reports(msg: Messenger, Reports { count, size }: Reports) -> Value {
    let reason = "x".repeat(size);
    let mut taken = 0;
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..count {
        if calls.len() >= 64 {
            taken += usize::from(matches!(calls.join_next().await, Some(Ok(Ok(())))));
        }
        let (msg, reason) = (msg.clone(), format!("{i} {reason}"));
        calls.spawn(async move { msg.request_master(FakeUnhealthy { reason }).await });
    }
    while let Some(done) = calls.join_next().await {
        taken += usize::from(matches!(done, Ok(Ok(()))));
    }
    json!({ "taken": taken })
}
