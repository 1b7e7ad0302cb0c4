//! An HTTP server for workers that drains without losing a request.
//!
//! `axum::serve(..).with_graceful_shutdown(..)` closes idle keep-alive connections the moment
//! the shutdown starts, but a client may be sending its next request on such a connection at
//! that very moment: that request fails (this is where think-cluster loses requests on every
//! reload). [`serve`] drains in a way that has no such race:
//! 1. it stops accepting, after taking the connections the kernel already queued for it;
//! 2. every HTTP/1 response from then on carries `Connection: close`, so a busy connection
//!    ends cleanly right after a response: the client knows not to reuse it and opens a new
//!    one, which another worker accepts. An HTTP/2 connection gets GOAWAY at once (race-free
//!    by design: the client learns which streams were taken);
//! 3. only connections still open after the idle grace ([`ServeOptions::idle_grace`]) are
//!    shut down gracefully (idle ones closed, in-flight ones finished).
//!
//! The master's `kill_timeout` bounds it all.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderValue, CONNECTION};
use http::{Request, Response, Version};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// A listener [`serve`] can accept on: a tokio `TcpListener` or `UnixListener`.
pub trait Accept: Send + 'static {
    /// An accepted connection.
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// Waits for the next connection.
    fn accept(&self) -> impl Future<Output = io::Result<Self::Io>> + Send;
    /// Takes a connection the kernel already queued, without waiting; `None` if there is none.
    fn accept_queued(&self) -> io::Result<Option<Self::Io>>;
}

impl Accept for TcpListener {
    type Io = tokio::net::TcpStream;
    async fn accept(&self) -> io::Result<Self::Io> {
        let (stream, _) = TcpListener::accept(self).await?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }
    fn accept_queued(&self) -> io::Result<Option<Self::Io>> {
        // Straight to the kernel: tokio's readiness cache may not know of queued connections yet.
        match socket2::SockRef::from(self).accept() {
            Ok((socket, _)) => {
                socket.set_nonblocking(true)?;
                let std: std::net::TcpStream = socket.into();
                Ok(Some(tokio::net::TcpStream::from_std(std)?))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl Accept for UnixListener {
    type Io = tokio::net::UnixStream;
    async fn accept(&self) -> io::Result<Self::Io> {
        Ok(UnixListener::accept(self).await?.0)
    }
    fn accept_queued(&self) -> io::Result<Option<Self::Io>> {
        match socket2::SockRef::from(self).accept() {
            Ok((socket, _)) => {
                socket.set_nonblocking(true)?;
                let std: std::os::unix::net::UnixStream = socket.into();
                Ok(Some(tokio::net::UnixStream::from_std(std)?))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Settings of [`serve_with`]: `ServeOptions::new().idle_grace(Duration::from_secs(2))`.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    idle_grace: Duration,
}

impl ServeOptions {
    /// The defaults (an `idle_grace` of 5 s).
    pub fn new() -> Self {
        ServeOptions::default()
    }

    /// How long after the drain starts connections may stay open before they are shut down
    /// gracefully (in-flight requests still finish; default 5 s). Busy keep-alive connections
    /// end long before, on their next response.
    pub fn idle_grace(mut self, grace: Duration) -> Self {
        self.idle_grace = grace;
        self
    }
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            idle_grace: Duration::from_secs(5),
        }
    }
}

/// Serves HTTP/1 and HTTP/2 on `listener` with `service` (an `axum::Router`, or any tower
/// service of hyper requests) until `shutdown` resolves (a worker's
/// [`Worker::draining`](crate::Worker::draining)), then drains without losing a request
/// (see the module docs) and returns once every connection has ended.
pub async fn serve<L, S, B>(
    listener: L,
    service: S,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()>
where
    L: Accept,
    S: tower_service::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    serve_with(listener, service, shutdown, ServeOptions::default()).await
}

/// [`serve`] with explicit [`ServeOptions`].
pub async fn serve_with<L, S, B>(
    listener: L,
    service: S,
    shutdown: impl Future<Output = ()> + Send,
    options: ServeOptions,
) -> io::Result<()>
where
    L: Accept,
    S: tower_service::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let draining = Arc::new(AtomicBool::new(false));
    let (stage_tx, stage_rx) = watch::channel(Stage::Serving);
    let mut connections = JoinSet::new();
    let spawn = |connections: &mut JoinSet<()>, io: L::Io| {
        connections.spawn(connection(
            io,
            service.clone(),
            draining.clone(),
            stage_rx.clone(),
        ));
    };
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(io) => {
                    spawn(&mut connections, io);
                    // Let the new connection start before taking the next one: a worker that
                    // drains a burst from the shared queue in a tight loop would take nearly
                    // all of it while the other workers are still waking up.
                    tokio::task::yield_now().await;
                }
                Err(e) => {
                    // EMFILE and friends: keep serving the open connections, retry shortly.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    draining.store(true, Ordering::SeqCst);
    let _ = stage_tx.send(Stage::Draining);
    while let Ok(Some(io)) = listener.accept_queued() {
        spawn(&mut connections, io);
    }
    drop(listener);
    tracing::info!(
        connections = connections.len(),
        "draining: no longer accepting"
    );
    let grace = tokio::time::sleep(options.idle_grace);
    tokio::pin!(grace);
    loop {
        tokio::select! {
            joined = connections.join_next() => if joined.is_none() { return Ok(()) },
            _ = &mut grace, if *stage_tx.borrow() != Stage::Closing => {
                let _ = stage_tx.send(Stage::Closing);
            }
        }
    }
}

/// Where a draining server is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Serving,
    /// Not accepting; HTTP/1 answers say `Connection: close`, HTTP/2 connections get GOAWAY
    /// (race-free: the client learns which streams were taken).
    Draining,
    /// The idle grace is over: every connection is shut down gracefully.
    Closing,
}

async fn connection<I, S, B>(
    io: I,
    service: S,
    draining: Arc<AtomicBool>,
    mut stage: watch::Receiver<Stage>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: tower_service::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let h2 = Arc::new(AtomicBool::new(false));
    let is_h2 = h2.clone();
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let mut service = service.clone();
        let draining = draining.clone();
        let version = req.version();
        if version == Version::HTTP_2 {
            is_h2.store(true, Ordering::Relaxed);
        }
        async move {
            std::future::poll_fn(|cx| service.poll_ready(cx)).await?;
            let mut response = service.call(req).await?;
            if draining.load(Ordering::SeqCst) && version < Version::HTTP_2 {
                response
                    .headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("close"));
            }
            Ok::<_, Infallible>(response)
        }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let mut shut = false;
    let result = loop {
        // The guard `wait_for` returns must not live across an await (it is not Send).
        let time_to_shut = async {
            stage
                .wait_for(|s| {
                    *s == Stage::Closing || (*s == Stage::Draining && h2.load(Ordering::Relaxed))
                })
                .await
                .is_ok()
        };
        tokio::select! {
            result = conn.as_mut() => break result,
            true = time_to_shut, if !shut => {
                conn.as_mut().graceful_shutdown();
                shut = true;
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!("connection ended with an error: {e}");
    }
}
