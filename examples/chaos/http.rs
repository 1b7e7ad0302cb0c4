//! A small HTTP/1.1 client over std `TcpStream`, the steady load, and the record of every
//! request that failed.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::procfs::now_us;

/// How long a request may wait for its answer. A request on a SIGSTOPped worker waits until
/// the master kills that worker (heartbeat timeout + kill timeout), well within this.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// One HTTP/1.1 response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub close: bool,
    pub body: String,
}

/// A keep-alive connection.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Since when the worker holding this connection was holding it idle: when it was
    /// opened, or when its last response ended.
    pub idle_since: u64,
    /// Whether a request has already been answered on it.
    pub reused: bool,
}

impl Conn {
    pub fn connect(port: u16, timeout: Duration) -> io::Result<Conn> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::new(),
            idle_since: now_us(),
            reused: false,
        })
    }

    /// Whether the server has closed (or reset) this idle connection: what a pooling client
    /// checks before it reuses one.
    pub fn is_closed(&self) -> bool {
        let mut byte = 0u8;
        // SAFETY: a one-byte peek into a valid buffer on a descriptor we own.
        let n = unsafe {
            libc::recv(
                self.stream.as_raw_fd(),
                (&mut byte as *mut u8).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        // 0: EOF; > 0: bytes nobody asked for; < 0 other than EAGAIN: an error (a reset).
        n >= 0 || io::Error::last_os_error().kind() != io::ErrorKind::WouldBlock
    }

    /// Sends one request and reads its response.
    pub fn request(&mut self, method: &str, path: &str) -> io::Result<Response> {
        write!(
            self.stream,
            "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 0\r\n\r\n"
        )?;
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i;
            }
            self.fill()?;
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).to_string();
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::other(format!("bad status line in {head:?}")))?;
        let (mut len, mut close): (Option<usize>, bool) = (None, false);
        for line in lines {
            let (k, v) = line.split_once(':').unwrap_or((line, ""));
            match k.trim().to_ascii_lowercase().as_str() {
                "content-length" => len = v.trim().parse().ok(),
                "connection" => close = v.trim().eq_ignore_ascii_case("close"),
                "transfer-encoding" => {
                    return Err(io::Error::other("chunked responses are not supported"))
                }
                _ => {}
            }
        }
        let len = len.ok_or_else(|| io::Error::other("a response without content-length"))?;
        let body_start = head_end + 4;
        while self.buf.len() < body_start + len {
            self.fill()?;
        }
        let body = String::from_utf8_lossy(&self.buf[body_start..body_start + len]).to_string();
        self.buf.drain(..body_start + len);
        self.idle_since = now_us();
        self.reused = true;
        Ok(Response {
            status,
            close,
            body,
        })
    }

    fn fill(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before the response",
            ));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A request that failed: a connection error, or an answer other than 200.
#[derive(Debug, Clone)]
pub struct Failure {
    /// "load" or "control" (the driver's own POST /reload and POST /unhealthy).
    pub source: &'static str,
    pub method: &'static str,
    pub route: String,
    pub start: u64,
    pub end: u64,
    /// Since when its connection had been idle on its worker (== `start` for a new one).
    pub idle_since: u64,
    pub reused: bool,
    pub error: String,
}

/// Counters of one kind of request.
#[derive(Default)]
pub struct Counts {
    pub sent: AtomicU64,
    pub ok: AtomicU64,
    pub failed: AtomicU64,
}

impl Counts {
    pub fn get(&self) -> (u64, u64, u64) {
        (
            self.sent.load(Ordering::SeqCst),
            self.ok.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst),
        )
    }
}

/// Everything the requests tell.
#[derive(Default)]
pub struct Stats {
    pub load: Counts,
    pub control: Counts,
    pub failures: Mutex<Vec<Failure>>,
    /// Worker pid -> when it last answered `GET /pid`.
    pub serving: Mutex<HashMap<u32, u64>>,
    pub new_connections: AtomicU64,
    pub max_latency_us: AtomicU64,
}

impl Stats {
    /// Runs one request on `conn` (opening it if needed) and records it. Returns the response
    /// if it was a 200; the connection is kept only if it may be reused.
    fn run(
        &self,
        port: u16,
        conn: &mut Option<Conn>,
        source: &'static str,
        method: &'static str,
        route: &str,
    ) -> Option<Response> {
        let counts = if source == "load" {
            &self.load
        } else {
            &self.control
        };
        counts.sent.fetch_add(1, Ordering::Relaxed);
        let start = now_us();
        if conn.as_ref().is_some_and(Conn::is_closed) {
            *conn = None;
        }
        let (result, idle_since, reused) = match conn {
            Some(c) => (c.request(method, route), c.idle_since, c.reused),
            None => {
                self.new_connections.fetch_add(1, Ordering::Relaxed);
                match Conn::connect(port, REQUEST_TIMEOUT) {
                    Ok(c) => {
                        let c = conn.insert(c);
                        (c.request(method, route), start, false)
                    }
                    Err(e) => (
                        Err(io::Error::new(e.kind(), format!("connect: {e}"))),
                        start,
                        false,
                    ),
                }
            }
        };
        let end = now_us();
        self.max_latency_us
            .fetch_max(end - start, Ordering::Relaxed);
        let error = match result {
            Ok(r) if r.status == 200 => {
                counts.ok.fetch_add(1, Ordering::Relaxed);
                if r.close {
                    *conn = None;
                }
                return Some(r);
            }
            Ok(r) => {
                if r.close {
                    *conn = None;
                }
                format!("status {}: {}", r.status, r.body)
            }
            Err(e) => {
                *conn = None;
                format!("{:?}: {e}", e.kind())
            }
        };
        counts.failed.fetch_add(1, Ordering::Relaxed);
        self.failures.lock().unwrap().push(Failure {
            source,
            method,
            route: route.to_string(),
            start,
            end,
            idle_since,
            reused,
            error,
        });
        None
    }

    /// One request of the driver's own on a new connection, recorded as "control".
    pub fn control(&self, port: u16, method: &'static str, route: &str) -> Option<Response> {
        self.run(port, &mut None, "control", method, route)
    }

    /// The pids that answered `GET /pid` since `since`.
    pub fn serving_since(&self, since: u64) -> Vec<u32> {
        let serving = self.serving.lock().unwrap();
        let mut pids: Vec<u32> = serving
            .iter()
            .filter(|(_, &at)| at >= since)
            .map(|(&pid, _)| pid)
            .collect();
        pids.sort_unstable();
        pids
    }
}

/// A request for the driver's own checks (not counted): a new connection, a short deadline.
pub fn probe(port: u16, method: &str, route: &str) -> Result<Response, String> {
    let mut conn = Conn::connect(port, Duration::from_secs(15)).map_err(|e| e.to_string())?;
    let r = conn.request(method, route).map_err(|e| e.to_string())?;
    if r.status != 200 {
        return Err(format!("status {}: {}", r.status, r.body));
    }
    Ok(r)
}

/// The `pid` field of a JSON body such as `{"pid":123}`.
pub fn pid_in(body: &str) -> Option<u32> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    v.get("pid")?.as_u64().map(|p| p as u32)
}

/// The steady load: `clients` threads, each on its keep-alive connection, asking for the
/// routes in turn until stopped.
pub struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    pub fn start(port: u16, clients: usize, routes: &[String], stats: &Arc<Stats>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..clients)
            .map(|i| {
                let (stop, stats, routes) = (stop.clone(), stats.clone(), routes.to_vec());
                std::thread::Builder::new()
                    .name(format!("load-{i}"))
                    .spawn(move || {
                        let mut conn = None;
                        let mut n = i;
                        while !stop.load(Ordering::Relaxed) {
                            let route = &routes[n % routes.len()];
                            n += 1;
                            let Some(r) = stats.run(port, &mut conn, "load", "GET", route) else {
                                continue;
                            };
                            if let Some(pid) = pid_in(&r.body) {
                                stats.serving.lock().unwrap().insert(pid, now_us());
                            }
                        }
                    })
                    .expect("spawn a load thread")
            })
            .collect();
        Load { stop, threads }
    }

    /// Stops the clients once their current request is over.
    pub fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            let _ = t.join();
        }
    }
}
