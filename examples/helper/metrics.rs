//! Metrics for `tests/metrics.rs`: with `METRICS_ADDR` set, the master serves them there (port
//! 0: it logs the port it got); every worker counts and times its HTTP requests, keeps its pid
//! in a gauge, and records what a test asks it to:
//!
//! - `GET /record?name=N&kind=counter|gauge|histogram&value=V&label=L`: records `V` in the
//!   metric `N` (any name: a hostile one too), with the label `l="L"` when given.

use std::time::Instant;

use axum::extract::{MatchedPath, Query, Request};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use multiprocess::{metrics, Builder};
use serde::Deserialize;

/// The builder, with the endpoint if `METRICS_ADDR` asks for it.
pub fn configure(builder: Builder) -> Builder {
    match std::env::var("METRICS_ADDR") {
        Ok(addr) => builder
            .metrics(addr.parse().expect("METRICS_ADDR"))
            .metrics_buckets([0.001, 0.01, 0.1, 1.0]),
        Err(_) => builder,
    }
}

/// The routes, counted and timed, and the worker's own metrics.
pub fn measured<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    metrics::describe_counter!("helper_requests_total", "HTTP requests, by route.");
    metrics::describe_histogram!("helper_request_seconds", "How long HTTP requests took.");
    metrics::describe_gauge!("helper_pid", "The worker's pid.");
    metrics::gauge!("helper_pid").set(f64::from(std::process::id()));
    router
        .route_layer(axum::middleware::from_fn(measure))
        .route("/record", get(record))
}

async fn measure(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let started = Instant::now();
    let response = next.run(req).await;
    metrics::counter!("helper_requests_total", "route" => route).increment(1);
    metrics::histogram!("helper_request_seconds").record(started.elapsed().as_secs_f64());
    response
}

#[derive(Deserialize)]
struct Record {
    name: String,
    kind: String,
    value: f64,
    label: Option<String>,
}

async fn record(Query(r): Query<Record>) -> &'static str {
    let labels: Vec<(String, String)> = r.label.into_iter().map(|l| ("l".into(), l)).collect();
    match r.kind.as_str() {
        "counter" => metrics::counter!(r.name, &labels).increment(r.value as u64),
        "gauge" => metrics::gauge!(r.name, &labels).set(r.value),
        _ => metrics::histogram!(r.name, &labels).record(r.value),
    }
    "recorded"
}
