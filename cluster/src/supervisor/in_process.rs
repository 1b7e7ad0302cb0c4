//! A worker in single-process mode: a task in the master's process, connected to the Hub over
//! an in-memory pipe, that runs the worker bootstrap as a worker process would. The supervisor
//! treats it as a process: it is started, gets Ready, is drained, replaced and killed the same
//! way (a kill aborts its task).

use std::io;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use messenger::{Hub, Messenger, WorkerId};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::fleet::Event;
use crate::env::ListenerKind;
use crate::options::Options;
use crate::worker::{self, Host, Listeners, WorkerBoot};

/// How many bytes the pipe between a worker task and the Hub buffers each way: about what a
/// Unix socket buffers, so that a worker task is held up by a slow Hub as a process would be.
const PIPE_BYTES: usize = 256 * 1024;

/// What every worker task is started with.
pub(crate) struct InProcess {
    opts: Arc<Options>,
    boot: WorkerBoot,
    /// The master's listeners (each worker takes duplicates); dropped once the cluster stops.
    listeners: Mutex<Option<Vec<(ListenerKind, OwnedFd)>>>,
}

impl InProcess {
    pub fn new(
        opts: Arc<Options>,
        boot: WorkerBoot,
        listeners: Vec<(ListenerKind, OwnedFd)>,
    ) -> Arc<InProcess> {
        Arc::new(InProcess {
            opts,
            boot,
            listeners: Mutex::new(Some(listeners)),
        })
    }

    /// Drops the master's listeners: workers started later get none.
    pub fn close_listeners(&self) {
        self.listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }

    /// Duplicates of the listeners for one worker.
    fn listeners(&self) -> io::Result<Listeners> {
        let listeners = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        let Some(listeners) = listeners.as_ref() else {
            return Ok(Vec::new());
        };
        listeners
            .iter()
            .map(|(kind, fd)| Ok(Some((*kind, fd.try_clone()?))))
            .collect()
    }

    /// Starts worker `id`'s task and connects it to the Hub; reports [`Event::Spawned`] (the
    /// master's pid) or [`Event::SpawnFailed`], then [`Event::Exited`] once its bootstrap has
    /// returned (or failed, or panicked), or `kill` aborted it.
    pub fn start(
        self: &Arc<Self>,
        hub: Hub,
        id: WorkerId,
        kill: Arc<Notify>,
        report: impl Fn(Event) + Send + 'static,
    ) {
        let this = self.clone();
        // Taken now, not in the task: a worker asked for before the cluster stops gets the
        // listeners even if they are dropped right after.
        let listeners = this.listeners();
        tokio::spawn(async move {
            let listeners = match listeners {
                Ok(listeners) => listeners,
                Err(e) => {
                    let error = format!("cannot duplicate the listeners: {e}");
                    return report(Event::SpawnFailed { id, error });
                }
            };
            let (hub_end, worker_end) = tokio::io::duplex(PIPE_BYTES);
            let pid = std::process::id();
            report(Event::Spawned { id, pid });
            hub.attach(id, hub_end);
            let span =
                tracing::info_span!("worker", slot = id.slot, generation = id.generation, pid);
            let drain = CancellationToken::new();
            let draining = drain.clone();
            let life = async move {
                let messenger = Messenger::connect(worker_end, this.opts.messenger.clone()).await?;
                let closing = messenger.clone();
                let result = worker::live(
                    id,
                    &this.opts,
                    &this.boot,
                    messenger,
                    listeners,
                    Host::MasterTask,
                    draining,
                )
                .await;
                // What a process's exit does: the connection ends.
                closing.close();
                result
            };
            let mut task = tokio::spawn(life.instrument(span));
            let ended = tokio::select! {
                ended = &mut task => ended,
                () = kill.notified() => {
                    task.abort();
                    task.await
                }
            };
            // What a process's exit ends, a task's end must end too: the Hub's end of the
            // connection (a task aborted or panicked leaves its Messenger's tasks behind), and
            // whatever the bootstrap spawned to serve until it drains (it stops accepting).
            hub.detach(id);
            drain.cancel();
            let status = match ended {
                Ok(Ok(())) => "returned".to_owned(),
                Ok(Err(e)) => format!("failed: {e}"),
                Err(e) if e.is_cancelled() => "killed (its task was aborted)".to_owned(),
                Err(_) => "panicked".to_owned(),
            };
            report(Event::Exited { id, status });
        });
    }
}
