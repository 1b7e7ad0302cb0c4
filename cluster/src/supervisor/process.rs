//! A worker's process, from its start to its exit: a task of its own, so that starting and
//! waiting on one process never holds up the supervisor.

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::Arc;

use messenger::{Hub, WorkerId};
use socket2::{Domain, Socket, Type};
use tokio::sync::Notify;

use super::fleet::Event;
use crate::ipc::IpcStream;
use crate::spawn::{SpawnRequest, Spawner};

/// Starts worker `id`'s process and connects it to the Hub; reports [`Event::Spawned`] (or
/// [`Event::SpawnFailed`]), then [`Event::Exited`]. `kill` kills it, whenever it is notified
/// (before the process exists too).
pub(crate) fn start(
    spawner: Spawner,
    hub: Hub,
    id: WorkerId,
    kill: Arc<Notify>,
    report: impl Fn(Event) + Send + 'static,
) {
    // Asked for now, not in the task: the spawner then starts it before it drops the
    // listeners of a cluster that stops right after (a worker with none could not serve).
    let ordered = Socket::pair(Domain::UNIX, Type::STREAM, None).map(|(ours, theirs)| {
        let request = SpawnRequest {
            slot: id.slot,
            generation: id.generation,
            ipc: theirs.into(),
        };
        (ours, spawner.spawn(request))
    });
    tokio::spawn(async move {
        let started = async {
            let (ours, child) = ordered?;
            let child = child.await?;
            let ours = IpcStream::new(ours.into())?;
            Ok::<_, io::Error>((child, ours))
        };
        let (mut child, ipc) = match started.await {
            Ok(started) => started,
            Err(error) => {
                let error = error.to_string();
                return report(Event::SpawnFailed { id, error });
            }
        };
        // Reported before the connection is served: the worker's request to be Ready comes
        // through the Hub, so it can only follow (the supervisor reads its own events first).
        let pid = child.id().unwrap_or(0);
        let prefix = format!("[worker {}.{} pid {pid}] ", id.slot, id.generation);
        let mut relays = Vec::new();
        if let Some(out) = child.stdout.take() {
            relays.push(tokio::spawn(relay(
                out,
                tokio::io::stdout(),
                prefix.clone(),
            )));
        }
        if let Some(err) = child.stderr.take() {
            relays.push(tokio::spawn(relay(err, tokio::io::stderr(), prefix)));
        }
        report(Event::Spawned { id, pid });
        hub.attach(id, ipc);
        let status = tokio::select! {
            status = child.wait() => status,
            () = kill.notified() => {
                let _ = child.start_kill();
                child.wait().await
            }
        };
        // Its last lines (a panic while draining, say) are relayed before its exit is news,
        // within a bound: a grandchild may hold the pipe open.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
            for relay in relays {
                let _ = relay.await;
            }
        })
        .await;
        report(Event::Exited {
            id,
            status: describe(&status),
        });
    });
}

/// The longest piece of a line relayed at once.
const MAX_LINE: usize = 64 * 1024;

/// Copies `from` (a worker's stdout or stderr) to `to`, each line prefixed with `prefix`, until
/// the worker closes it: whatever has come is written at once, many lines per write. Writes go
/// through tokio's blocking pool, so a slow reader of the master's output never stalls the
/// master's own thread.
async fn relay(
    mut from: impl tokio::io::AsyncRead + Unpin,
    mut to: impl tokio::io::AsyncWrite + Unpin,
    prefix: String,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let prefix = prefix.into_bytes();
    // What was read and is not yet a whole line.
    let mut pending: Vec<u8> = Vec::with_capacity(MAX_LINE);
    let mut out: Vec<u8> = Vec::new();
    let mut broken = false;
    loop {
        let mut chunk = [0u8; 16 * 1024];
        // An error reading a worker's output ends it like its end.
        let n: usize = from.read(&mut chunk).await.unwrap_or_default();
        if n == 0 {
            if !pending.is_empty() {
                out.extend_from_slice(&prefix);
                out.append(&mut pending);
                out.push(b'\n');
                let _ = to.write_all(&out).await;
                let _ = to.flush().await;
            }
            return;
        }
        pending.extend_from_slice(&chunk[..n]);
        let mut start = 0;
        while let Some(end) = pending[start..].iter().position(|&b| b == b'\n') {
            out.extend_from_slice(&prefix);
            out.extend_from_slice(&pending[start..=start + end]);
            start += end + 1;
        }
        pending.drain(..start);
        if pending.len() >= MAX_LINE {
            // A line this long goes out in pieces, each prefixed.
            out.extend_from_slice(&prefix);
            out.append(&mut pending);
            out.push(b'\n');
        }
        if !out.is_empty() {
            // Output nobody can take any more is dropped, but still read: a worker whose
            // output pipe closed would fail (or panic) on its next line.
            if !broken && (to.write_all(&out).await.is_err() || to.flush().await.is_err()) {
                broken = true;
            }
            out.clear();
        }
    }
}

/// "exited with status 1", "killed by SIGKILL".
fn describe(status: &io::Result<ExitStatus>) -> String {
    match status {
        Err(e) => format!("could not be waited for: {e}"),
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("exited with status {code}"),
            (None, Some(sig)) => match nix::sys::signal::Signal::try_from(sig) {
                Ok(sig) => format!("killed by {sig}"),
                Err(_) => format!("killed by signal {sig}"),
            },
            _ => format!("ended: {s}"),
        },
    }
}
