//! What the master and the workers set up alike: the tokio runtime their process runs on, and
//! the signals they act on.

use std::io;

use tokio::signal::unix::{signal, SignalKind};

/// Builds the process's runtime: a current-thread one for `threads == 1` (nothing crosses
/// threads: no cross-thread wake-ups), else a multi-thread one with `threads` threads. `span`
/// stays entered on every runtime thread for the thread's whole life, so every log line of the
/// process carries it.
pub(crate) fn build(threads: usize, span: &tracing::Span) -> io::Result<tokio::runtime::Runtime> {
    let mut builder = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads);
        builder
    };
    let thread_span = span.clone();
    builder
        .enable_all()
        .on_thread_start(move || std::mem::forget(thread_span.clone().entered()))
        .build()
}

/// A signal a cluster process acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    /// SIGTERM.
    Terminate,
    /// SIGINT.
    Interrupt,
    /// SIGUSR2 (watched only when asked for, as the next two).
    Reload,
    /// SIGTTIN: one worker more.
    MoreWorkers,
    /// SIGTTOU: one worker fewer.
    FewerWorkers,
}

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Signal::Terminate => "SIGTERM",
            Signal::Interrupt => "SIGINT",
            Signal::Reload => "SIGUSR2",
            Signal::MoreWorkers => "SIGTTIN",
            Signal::FewerWorkers => "SIGTTOU",
        })
    }
}

/// Calls `on` with every SIGTERM and SIGINT this process gets, and every SIGUSR2, SIGTTIN and
/// SIGTTOU if `master` (otherwise they keep their default actions), from a task of its own.
/// Must be called inside the runtime.
pub(crate) fn watch_signals(
    master: bool,
    mut on: impl FnMut(Signal) + Send + 'static,
) -> io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut master_signals = match master {
        true => Some((
            signal(SignalKind::user_defined2())?,
            signal(SignalKind::from_raw(libc::SIGTTIN))?,
            signal(SignalKind::from_raw(libc::SIGTTOU))?,
        )),
        false => None,
    };
    tokio::spawn(async move {
        loop {
            let master_signal = async {
                match master_signals.as_mut() {
                    Some((usr2, ttin, ttou)) => tokio::select! {
                        Some(()) = usr2.recv() => Some(Signal::Reload),
                        Some(()) = ttin.recv() => Some(Signal::MoreWorkers),
                        Some(()) = ttou.recv() => Some(Signal::FewerWorkers),
                        else => None,
                    },
                    None => std::future::pending().await,
                }
            };
            let signal = tokio::select! {
                Some(()) = term.recv() => Signal::Terminate,
                Some(()) = int.recv() => Signal::Interrupt,
                Some(signal) = master_signal => signal,
                else => return,
            };
            on(signal);
        }
    });
    Ok(())
}
