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
    tokio::spawn(async move {
        let started = async {
            let (ours, theirs) = Socket::pair(Domain::UNIX, Type::STREAM, None)?;
            let request = SpawnRequest {
                slot: id.slot,
                generation: id.generation,
                ipc: theirs.into(),
            };
            let child = spawner.spawn(request).await?;
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
        report(Event::Spawned {
            id,
            pid: child.id().unwrap_or(0),
        });
        hub.attach(id, ipc);
        let status = tokio::select! {
            status = child.wait() => status,
            () = kill.notified() => {
                let _ = child.start_kill();
                child.wait().await
            }
        };
        report(Event::Exited {
            id,
            status: describe(&status),
        });
    });
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
