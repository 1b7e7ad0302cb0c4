//! The `sd_notify` protocol: the master's states, told to `NOTIFY_SOCKET` (see the module
//! docs of `systemd`).

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use crate::master::Master;
use crate::status::{Phase, Status, WorkerState};
use crate::supervisor::Readiness;

/// How long a datagram may wait for room in systemd's queue.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// The master's end of the notify socket.
pub(crate) struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
    /// Half of `WATCHDOG_USEC`, when the unit asks for pings (and they are for this process).
    watchdog: Option<Duration>,
    /// A failure to send was logged: later ones are not (the watchdog would flood the log).
    failed: AtomicBool,
}

impl Notifier {
    /// From the environment: `None` when the master is not run by systemd with a notify socket
    /// (or the variable is unusable, which is logged).
    pub fn from_env() -> Option<Notifier> {
        let path = std::env::var_os("NOTIFY_SOCKET")?;
        let addr = match path.as_encoded_bytes() {
            [b'@', name @ ..] => SocketAddr::from_abstract_name(name),
            _ => SocketAddr::from_pathname(&path),
        };
        let made = addr.and_then(|addr| Ok((UnixDatagram::unbound()?, addr)));
        let (socket, addr) = match made {
            Ok(made) => made,
            Err(err) => {
                tracing::warn!(?path, "NOTIFY_SOCKET unusable, systemd is not told: {err}");
                return None;
            }
        };
        // Blocking, bounded: a state line is retried by the kernel while systemd's queue is
        // full, for up to this long (sends run on the blocking pool).
        if let Err(err) = socket.set_write_timeout(Some(SEND_TIMEOUT)) {
            tracing::warn!("NOTIFY_SOCKET unusable, systemd is not told: {err}");
            return None;
        }
        Some(Notifier {
            socket,
            addr,
            watchdog: watchdog_interval(
                std::env::var("WATCHDOG_USEC").ok().as_deref(),
                std::env::var("WATCHDOG_PID").ok().as_deref(),
                std::process::id(),
            ),
            failed: AtomicBool::new(false),
        })
    }

    /// Sends `state` (newline-separated assignments). A datagram socket never blocks for long;
    /// a failure is logged, not fatal: the unit's own timeouts say the rest.
    pub fn send(&self, state: &str) {
        match self.socket.send_to_addr(state.as_bytes(), &self.addr) {
            Ok(_) => {
                if self.failed.swap(false, Ordering::Relaxed) {
                    tracing::info!("systemd is notified again");
                }
            }
            Err(err) => {
                if !self.failed.swap(true, Ordering::Relaxed) {
                    tracing::warn!("cannot notify systemd ({state:?}): {err}; said once");
                }
            }
        }
    }
}

/// How often to ping, from `WATCHDOG_USEC` and `WATCHDOG_PID`: half the timeout, for this
/// process only, `None` if the unit has no watchdog (or the values make no sense).
fn watchdog_interval(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    if let Some(pid) = pid {
        if pid.parse::<u32>().ok()? != own_pid {
            return None;
        }
    }
    let usec: u64 = usec?.parse().ok().filter(|&usec| usec > 0)?;
    Some(Duration::from_micros(usec / 2).max(Duration::from_millis(1)))
}

/// What systemd has been told, so each state is said once.
#[derive(Default)]
struct Told {
    /// READY=1 since the start (or since the last RELOADING=1).
    ready: bool,
    /// READY=1 was ever said: the first one waits for every slot to be Ready.
    up: bool,
    /// The reloads asked and ended, as last told.
    reloads: Reloads,
    stopping: bool,
    status: String,
}

/// Reloads asked of the master and reloads over (whatever their outcome): systemd hears
/// RELOADING=1 for each one asked (a `Type=notify-reload` unit waits for one stamped after its
/// signal, even when the master folds it into a rollout under way) and READY=1 once every one
/// asked is over.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Reloads {
    pub asked: u64,
    pub over: u64,
}

impl Told {
    /// The datagram for the cluster as it is now, if systemd must hear of it.
    fn next(
        &mut self,
        phase: Phase,
        readiness: Readiness,
        reloads: Reloads,
        status: String,
    ) -> Option<String> {
        let mut lines = Vec::new();
        let stopping =
            matches!(phase, Phase::Stopping | Phase::Stopped) || readiness == Readiness::Stopped;
        if stopping {
            if !std::mem::replace(&mut self.stopping, true) {
                lines.push("STOPPING=1".to_owned());
            }
        } else if reloads.asked > self.reloads.asked {
            lines.push("RELOADING=1".to_owned());
            lines.push(format!("MONOTONIC_USEC={}", monotonic_usec()));
            self.ready = false;
        } else if !self.ready
            && reloads.over >= reloads.asked
            && phase != Phase::Reloading
            && (self.up || readiness == Readiness::Ready)
        {
            // Up once every slot is first Ready; after that, once every reload asked is over
            // and no rollout runs (even if a slot is backing off: the unit is running, and
            // STATUS says how well).
            lines.push("READY=1".to_owned());
            self.ready = true;
            self.up = true;
        }
        self.reloads = reloads;
        if status != self.status {
            lines.push(format!("STATUS={status}"));
            self.status = status;
        }
        (!lines.is_empty()).then(|| lines.join("\n"))
    }
}

/// `CLOCK_MONOTONIC` in microseconds, which `RELOADING=1` must carry.
fn monotonic_usec() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec for clock_gettime to write.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    (now.tv_sec as u64) * 1_000_000 + (now.tv_nsec as u64) / 1_000
}

/// "3 of 4 workers Ready".
fn summary(status: &Status) -> String {
    let ready = status
        .slots
        .iter()
        .filter(|slot| slot.workers.iter().any(|w| w.state == WorkerState::Ready))
        .count();
    format!("{ready} of {} workers Ready", status.slots.len())
}

/// Tells systemd about the cluster until it has stopped: a task of the master's.
pub(crate) async fn run(
    notifier: Notifier,
    master: Master,
    mut readiness: watch::Receiver<Readiness>,
    mut reloads: watch::Receiver<Reloads>,
) {
    let notifier = std::sync::Arc::new(notifier);
    let mut phase = master.phase();
    let mut watchdog = notifier.watchdog.map(tokio::time::interval);
    // The Ready count changes without a change of phase or readiness (a second crash): looked
    // at every second.
    let mut refresh = tokio::time::interval(Duration::from_secs(1));
    let mut told = Told::default();
    loop {
        let now_phase = *phase.borrow_and_update();
        let now_readiness = *readiness.borrow_and_update();
        let now_reloads = *reloads.borrow_and_update();
        let status = match master.status().await {
            Ok(status) => summary(&status),
            Err(_) => "stopping".to_owned(),
        };
        if let Some(state) = told.next(now_phase, now_readiness, now_reloads, status) {
            send(&notifier, state).await;
        }
        if now_phase == Phase::Stopped {
            return;
        }
        let closed = tokio::select! {
            changed = phase.changed() => changed.is_err(),
            changed = readiness.changed() => changed.is_err(),
            changed = reloads.changed() => changed.is_err(),
            _ = refresh.tick() => false,
            () = tick(&mut watchdog) => {
                // The supervisor answering is what the watchdog vouches for.
                if master.status().await.is_ok() {
                    send(&notifier, "WATCHDOG=1".to_owned()).await;
                }
                false
            }
        };
        if closed {
            // The supervisor is gone (it panicked, say): the cluster stopped all the same.
            let last = told.next(
                Phase::Stopped,
                Readiness::Stopped,
                now_reloads,
                "stopping".into(),
            );
            if let Some(state) = last {
                send(&notifier, state).await;
            }
            return;
        }
    }
}

/// Waits for [`run`] to have told systemd the cluster stopped (it returns once it has), the
/// supervisor having ended: bounded by a send's own timeout, and a second more.
pub(crate) async fn finish(task: tokio::task::JoinHandle<()>) {
    if tokio::time::timeout(SEND_TIMEOUT + Duration::from_secs(1), task)
        .await
        .is_err()
    {
        tracing::warn!("systemd was not told that the cluster stopped in time");
    }
}

/// Sends on the blocking pool: the socket may take a moment (systemd's queue full), and the
/// master's thread must not wait on it.
async fn send(notifier: &std::sync::Arc<Notifier>, state: String) {
    let notifier = notifier.clone();
    let _ = tokio::task::spawn_blocking(move || notifier.send(&state)).await;
}

async fn tick(ticker: &mut Option<tokio::time::Interval>) {
    match ticker {
        Some(ticker) => {
            ticker.tick().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_pings_at_half_its_timeout_for_this_process_only() {
        let half = Some(Duration::from_millis(500));
        assert_eq!(watchdog_interval(Some("1000000"), None, 7), half);
        assert_eq!(watchdog_interval(Some("1000000"), Some("7"), 7), half);
        assert_eq!(watchdog_interval(Some("1000000"), Some("8"), 7), None);
        assert_eq!(watchdog_interval(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval(Some("soon"), None, 7), None);
        assert_eq!(watchdog_interval(None, None, 7), None);
    }

    #[test]
    fn each_state_is_said_once() {
        let mut told = Told::default();
        let status = |n: u32| format!("{n} of 2 workers Ready");
        let none = Reloads::default();
        let next = |told: &mut Told, phase, readiness, reloads, n| {
            told.next(phase, readiness, reloads, status(n))
        };
        assert_eq!(
            next(&mut told, Phase::Running, Readiness::Waiting, none, 0).unwrap(),
            "STATUS=0 of 2 workers Ready"
        );
        assert_eq!(
            next(&mut told, Phase::Running, Readiness::Ready, none, 2).unwrap(),
            "READY=1\nSTATUS=2 of 2 workers Ready"
        );
        assert_eq!(
            next(&mut told, Phase::Running, Readiness::Ready, none, 2),
            None
        );
        // A crash, then the replacement: only the status moves.
        assert_eq!(
            next(&mut told, Phase::Running, Readiness::Waiting, none, 1).unwrap(),
            "STATUS=1 of 2 workers Ready"
        );
        assert_eq!(
            next(&mut told, Phase::Running, Readiness::Ready, none, 2).unwrap(),
            "STATUS=2 of 2 workers Ready"
        );
        // A reload asked: RELOADING=1 with the time...
        let one = Reloads { asked: 1, over: 0 };
        let reload = next(&mut told, Phase::Reloading, Readiness::Waiting, one, 2).unwrap();
        assert!(
            reload.starts_with("RELOADING=1\nMONOTONIC_USEC="),
            "{reload}"
        );
        assert_eq!(
            next(&mut told, Phase::Reloading, Readiness::Waiting, one, 2),
            None
        );
        // ...another asked while it runs: RELOADING=1 again, for the signal that asked it...
        let two = Reloads { asked: 2, over: 0 };
        let again = next(&mut told, Phase::Reloading, Readiness::Waiting, two, 2).unwrap();
        assert!(again.starts_with("RELOADING=1\n"), "{again}");
        // ...READY=1 only once both are over, whole or not.
        let first_over = Reloads { asked: 2, over: 1 };
        assert_eq!(
            next(
                &mut told,
                Phase::Reloading,
                Readiness::Waiting,
                first_over,
                2
            ),
            None
        );
        let over = Reloads { asked: 2, over: 2 };
        assert_eq!(
            next(&mut told, Phase::Running, Readiness::Waiting, over, 1).unwrap(),
            "READY=1\nSTATUS=1 of 2 workers Ready"
        );
        // A reload asked before the workers started: READY=1 still waits for them.
        let mut early = Told::default();
        let done = Reloads { asked: 1, over: 1 };
        let said = next(&mut early, Phase::Starting, Readiness::Waiting, done, 0).unwrap();
        assert!(!said.contains("READY=1"), "{said}");
        assert_eq!(
            next(&mut early, Phase::Running, Readiness::Ready, done, 2).unwrap(),
            "READY=1\nSTATUS=2 of 2 workers Ready"
        );
        let stop = next(&mut told, Phase::Stopping, Readiness::Stopped, over, 1).unwrap();
        assert_eq!(stop, "STOPPING=1");
        assert_eq!(
            told.next(Phase::Stopped, Readiness::Stopped, over, "stopping".into())
                .unwrap(),
            "STATUS=stopping"
        );
    }
}
