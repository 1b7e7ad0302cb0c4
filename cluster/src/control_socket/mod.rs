//! The master's control socket: status and orders from the shell (`multiprocess` the CLI).
//!
//! A Unix stream socket, mode 0600, in a directory of its own (mode 0700), so only the master's
//! user can open it. One JSON object per line each way, answered in order:
//!
//! ```text
//! → {"cmd":"status"}
//! ← {"ok":true,"status":{"phase":"Running","slots":[{"slot":0,"restarts":0,"backoff_ms":null,
//!    "workers":[{"generation":1,"pid":4242,"state":"Ready","uptime_ms":5120,
//!                "rss_bytes":5242880,"cpu_seconds":0.31,"cpu_percent":2.5,"messages":1200}]}],
//!    "removed":[],"totals":{"restarts_exited":0,"restarts_unhealthy":0,"restarts_recycled":0,
//!              "reloads_succeeded":1,"reloads_failed":0}}}
//! → {"cmd":"reload"}            ← {"ok":true} once the rollout is over, or {"ok":false,"error":"..."}
//! → {"cmd":"scale","workers":4} ← {"ok":true,"workers":4}
//! → {"cmd":"stop"}              ← {"ok":true}, then the master drains and exits
//! ```
//!
//! A request may carry `"before"`, a deadline in milliseconds since the Unix epoch: one read
//! past it is answered `{"ok":false,...}` and not carried out (the CLI sets it to when it gives
//! up waiting, so that a master stopped meanwhile does not stop, scale or reload later, having
//! told no one).
//!
//! Anything else (a line that is not UTF-8 or not a request) gets `{"ok":false,"error":"..."}`
//! and the connection goes on; a line over 64 KiB is answered so and closes it, as does a
//! minute without a request, or a minute in which the client takes no answer. At most
//! [`MAX_CLIENTS`] connections are served at once.

use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;

use crate::error::Error;
use crate::master::Master;

mod status;

use status::CpuSamples;

/// Connections served at once; more wait to be accepted.
pub const MAX_CLIENTS: usize = 16;
/// The longest request line.
const MAX_LINE: usize = 64 * 1024;
/// How long a connection may wait between requests.
const IDLE: Duration = Duration::from_secs(60);

/// The default place of the control socket: `$XDG_RUNTIME_DIR` (or the temp dir), in a
/// directory named after the master's pid.
pub(crate) fn default_path() -> PathBuf {
    let runtime = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|dir| dir.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    runtime
        .join(format!("multiprocess-{}", std::process::id()))
        .join("control.sock")
}

/// The bound socket, removed (with its directory, if the master made it) when dropped.
pub(crate) struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
    made_dir: Option<PathBuf>,
}

impl ControlSocket {
    /// Binds at `path`: its directory is made (mode 0700) if missing, and must not be open to
    /// others; the socket gets mode 0600.
    pub fn bind(path: &Path) -> Result<ControlSocket, Error> {
        let err = |what: &str, source: std::io::Error| Error::Listen {
            addr: format!("control socket {}", path.display()),
            source: std::io::Error::new(source.kind(), format!("{what}: {source}")),
        };
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let made_dir = match std::fs::DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => Some(dir.to_path_buf()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => None,
            Err(e) => return Err(err("cannot make its directory", e)),
        };
        // The directory itself (not a link to one), ours, and closed to others: then nobody
        // else can put or swap anything in it.
        let meta =
            std::fs::symlink_metadata(dir).map_err(|e| err("cannot read its directory", e))?;
        let mode = meta.permissions().mode();
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        let why = if !meta.is_dir() {
            Some("is not a directory (a symbolic link?)".to_owned())
        } else if meta.uid() != euid {
            Some(format!(
                "belongs to user {}, not to this process's ({euid})",
                meta.uid()
            ))
        } else if mode & 0o077 != 0 {
            Some(format!("has mode {:o}, open to other users", mode & 0o777))
        } else {
            None
        };
        if let Some(why) = why {
            return Err(err(
                "its directory cannot be trusted",
                std::io::Error::other(format!(
                    "{} {why}; give the socket a directory of its own (mode 0700)",
                    dir.display()
                )),
            ));
        }
        match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(err("cannot look at the path", e)),
            Ok(meta) if !meta.file_type().is_socket() => {
                return Err(err(
                    "something else is there",
                    std::io::Error::other("not a socket: refusing to replace it"),
                ))
            }
            Ok(_) => {
                if someone_listens(path).map_err(|e| err("cannot probe the socket there", e))? {
                    return Err(err(
                        "another master listens there",
                        std::io::Error::other("give each master its own control socket"),
                    ));
                }
                // A socket left by a master that did not exit cleanly.
                std::fs::remove_file(path).map_err(|e| err("cannot replace a stale socket", e))?;
            }
        }
        let listener = UnixListener::bind(path).map_err(|e| err("cannot bind", e))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| err("cannot restrict it to its user", e))?;
        Ok(ControlSocket {
            listener,
            path: path.to_path_buf(),
            made_dir,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves connections until the master goes away.
    pub async fn serve(self, master: Master) {
        let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
        let cpu = Arc::new(CpuSamples::default());
        loop {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let stream = match self.listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!("control socket: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let (master, cpu) = (master.clone(), cpu.clone());
            tokio::spawn(async move {
                if let Err(e) = client(stream, &master, &cpu).await {
                    tracing::debug!("control connection ended: {e}");
                }
                drop(permit);
            });
        }
    }
}

/// Whether a process listens on the Unix socket at `path`, asked without waiting: a full
/// backlog (a busy or stopped listener) counts as listening; only a refused connection means
/// the socket is stale.
fn someone_listens(path: &Path) -> std::io::Result<bool> {
    let socket = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    match socket.connect(&socket2::SockAddr::unix(path)?) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => Ok(false),
        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok(true),
        Err(e) => Err(e),
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        if let Some(dir) = &self.made_dir {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// One request.
#[derive(Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase", deny_unknown_fields)]
enum Request {
    Status,
    Reload,
    Scale { workers: usize },
    Stop,
}

async fn client(stream: UnixStream, master: &Master, cpu: &CpuSamples) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    let mut line = Vec::new();
    loop {
        line.clear();
        let mut limited = (&mut lines).take(MAX_LINE as u64 + 1);
        let read = limited.read_until(b'\n', &mut line);
        // An idle client does not hold one of the few places for ever.
        let Ok(n) = tokio::time::timeout(IDLE, read).await else {
            return Ok(());
        };
        let n = n?;
        if n == 0 {
            return Ok(());
        }
        if line.len() > MAX_LINE {
            let answer = json!({"ok": false, "error": format!("a request over {MAX_LINE} bytes")});
            send(&mut write, &answer).await?;
            return Ok(());
        }
        let answer = match std::str::from_utf8(&line) {
            Ok(text) if text.trim().is_empty() => continue,
            Ok(text) => answer(text, master, cpu).await,
            Err(_) => json!({"ok": false, "error": "a request that is not UTF-8"}),
        };
        send(&mut write, &answer).await?;
    }
}

/// Writes one answer; a client that takes none for [`IDLE`] is dropped (it would hold one of
/// the few places for ever).
async fn send(write: &mut (impl AsyncWriteExt + Unpin), answer: &Value) -> std::io::Result<()> {
    let line = format!("{answer}\n");
    match tokio::time::timeout(IDLE, write.write_all(line.as_bytes())).await {
        Ok(written) => written,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the client read no answer for a minute",
        )),
    }
}

async fn answer(text: &str, master: &Master, cpu: &CpuSamples) -> Value {
    let (request, before) = match parse(text) {
        Ok(parsed) => parsed,
        Err(e) => {
            return json!({"ok": false, "error": format!(
                "not a request ({e}); send one JSON object per line: {{\"cmd\":\"status\"}}, \
                 \"reload\", \"stop\", or {{\"cmd\":\"scale\",\"workers\":N}}, each \
                 with \"before\": a deadline in milliseconds since the Unix epoch if wanted"
            )})
        }
    };
    if let Some(late) = before.and_then(too_late) {
        // The client gave up waiting (the master was stopped, say): it was told the order
        // failed, so carrying it out now would surprise whoever sent it.
        tracing::warn!("a control order read {late:?} past its deadline is not carried out");
        return json!({"ok": false, "error": format!(
            "read {late:?} past its deadline: not carried out"
        )});
    }
    let failed = |e: Error| json!({"ok": false, "error": e.to_string()});
    match request {
        Request::Status => match master.status().await {
            Ok(status) => json!({"ok": true, "status": status::read(&status, master, cpu).await}),
            Err(e) => failed(e),
        },
        Request::Reload => match master.reload().await {
            Ok(()) => json!({"ok": true}),
            Err(e) => failed(e),
        },
        Request::Scale { workers } => match master.scale(workers).await {
            Ok(()) => json!({"ok": true, "workers": workers}),
            Err(e) => failed(e),
        },
        Request::Stop => {
            // A second order must not turn the drain into a kill (a second signal does that):
            // asked twice from the shell, it is the same stop.
            master.stop_once();
            json!({"ok": true})
        }
    }
}

/// A request and its deadline (`before`: milliseconds since the Unix epoch), if it has one.
fn parse(text: &str) -> Result<(Request, Option<u64>), serde_json::Error> {
    let mut value: Value = serde_json::from_str(text)?;
    let before = match value.as_object_mut().and_then(|o| o.remove("before")) {
        None | Some(Value::Null) => None,
        Some(before) => Some(u64::deserialize(before)?),
    };
    let request = Request::deserialize(&value)?;
    // serde lets unknown fields through on a variant without fields: refused here.
    let fields: &[&str] = match request {
        Request::Scale { .. } => &["cmd", "workers"],
        _ => &["cmd"],
    };
    let unknown = value
        .as_object()
        .and_then(|o| o.keys().find(|k| !fields.contains(&k.as_str())));
    if let Some(field) = unknown {
        return Err(serde::de::Error::custom(format!("unknown field `{field}`")));
    }
    Ok((request, before))
}

/// How long past `before` (milliseconds since the Unix epoch) it is now, if it is.
fn too_late(before: u64) -> Option<Duration> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    now.checked_sub(Duration::from_millis(before))
        .filter(|late| !late.is_zero())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_and_its_deadline() {
        let (request, before) = parse(r#"{"cmd":"scale","workers":3,"before":1700}"#).unwrap();
        assert!(matches!(request, Request::Scale { workers: 3 }));
        assert_eq!(before, Some(1700));
        assert_eq!(parse(r#"{"cmd":"stop"}"#).unwrap().1, None);
        assert_eq!(parse(r#"{"cmd":"stop","before":null}"#).unwrap().1, None);
        for bad in [
            r#"{"cmd":"stop","before":-1}"#,
            r#"{"cmd":"stop","before":1.5}"#,
            r#"{"cmd":"stop","before":"soon"}"#,
            r#"{"cmd":"stop","after":1}"#,
            r#"[{"cmd":"stop"}]"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        let (_, max) = parse(&format!(r#"{{"cmd":"stop","before":{}}}"#, u64::MAX)).unwrap();
        assert_eq!(max, Some(u64::MAX));
        assert_eq!(too_late(u64::MAX), None, "never late");
        assert!(too_late(0).is_some_and(|late| late > Duration::from_secs(3600)));
        assert!(too_late(1).is_some());
    }
}
