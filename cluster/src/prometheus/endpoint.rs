//! The HTTP server of the metrics endpoint: `GET /metrics` (or `HEAD`) answers the metrics;
//! anything else gets 404 or 405. It has no authentication: bind it where only the scraper
//! reaches (loopback, a private network).
//!
//! One scrape runs at a time (others wait for it). At most [`MAX_CONNECTIONS`] connections are
//! served at once (more are closed at once); a connection that sends no request head within
//! 30 s is closed, and one open for a minute is closed once its request under way is answered.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use messenger::Hub;
use tokio::net::TcpListener;
use tokio::sync::{Mutex, Semaphore};

use super::scrape::Scraper;
use super::{registry, text};
use crate::error::Error;
use crate::supervisor;

/// A scraper holds one connection, an operator with `curl` another: many more is a client
/// gone wrong, and each one costs the master a task.
const MAX_CONNECTIONS: usize = 64;

/// Binds the endpoint and serves it from a task of the master's runtime.
pub(crate) async fn start(
    hub: Hub,
    supervisor: supervisor::Handle,
    addr: SocketAddr,
    buckets: Vec<f64>,
) -> Result<(), Error> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Listen {
            addr: format!("{addr} (metrics)"),
            source,
        })?;
    let local = listener.local_addr()?;
    tracing::info!(addr = %local, "metrics endpoint: http://{local}/metrics");
    let registry = registry::install(&buckets);
    // A worker has the messenger's request timeout to answer, at most 5 s (Prometheus's
    // default scrape timeout is 10 s).
    let deadline = hub.config().request_timeout.min(Duration::from_secs(5));
    let scraper = Scraper::new(hub, supervisor, registry, &buckets, deadline);
    tokio::spawn(serve(listener, Arc::new(Mutex::new(scraper))));
    Ok(())
}

async fn serve(listener: TcpListener, scraper: Arc<Mutex<Scraper>>) {
    let room = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors, most likely: try again soon rather than spin.
                tracing::warn!("metrics endpoint: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = room.clone().try_acquire_owned() else {
            continue;
        };
        let scraper = scraper.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let scraper = scraper.clone();
                async move { Ok::<_, Infallible>(answer(req, &scraper).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30))
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                () = tokio::time::sleep(Duration::from_secs(60)) => {
                    // Closed between requests, never in the middle of an answer.
                    connection.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(30), connection).await;
                }
            }
            drop(permit);
        });
    }
}

async fn answer(req: Request<Incoming>, scraper: &Mutex<Scraper>) -> Response<String> {
    let reply = |status: StatusCode, body: &str| {
        let mut response = Response::new(body.to_owned());
        *response.status_mut() = status;
        response
    };
    if req.uri().path() != "/metrics" {
        return reply(
            StatusCode::NOT_FOUND,
            "not found: the metrics are at /metrics\n",
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut response = reply(StatusCode::METHOD_NOT_ALLOWED, "GET or HEAD\n");
        response.headers_mut().insert(
            http::header::ALLOW,
            http::HeaderValue::from_static("GET, HEAD"),
        );
        return response;
    }
    let body = scraper.lock().await.scrape().await;
    let mut response = Response::new(if req.method() == Method::HEAD {
        String::new()
    } else {
        body
    });
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(text::CONTENT_TYPE),
    );
    response
}
