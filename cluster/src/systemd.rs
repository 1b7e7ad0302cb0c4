//! Telling systemd how the cluster is doing: the `sd_notify` protocol of a `Type=notify` (or
//! `Type=notify-reload`) unit, spoken by the master only.
//!
//! The master sends one datagram per change to the socket named by `NOTIFY_SOCKET` (a path, or
//! `@name` in the abstract namespace), newline-separated `KEY=value` lines:
//!
//! ```text
//! READY=1                      once every slot has a Ready worker (and again after a reload)
//! STATUS=4 of 4 workers Ready  whenever that count changes, for `systemctl status`
//! RELOADING=1                  when a rolling reload starts, with MONOTONIC_USEC=<now>
//! STOPPING=1                   when the cluster starts to stop
//! WATCHDOG=1                   every half of WATCHDOG_USEC, once the supervisor answered
//! ```
//!
//! Without `NOTIFY_SOCKET` nothing is sent. The variables are not passed on to the workers:
//! systemd listens to the main process (`NotifyAccess=main`), and a worker that spoke for the
//! unit would be wrong about it.
//!
//! Socket activation: when systemd passes listening sockets (`LISTEN_FDS`, for this process's
//! `LISTEN_PID`), the master takes them as its listeners instead of binding: the first passed
//! socket is the first listener added to the builder, and so on; the counts and the kinds (TCP
//! or Unix) must agree. `LISTEN_FDNAMES` names them in the log.

use std::os::fd::RawFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use crate::error::Error;
use crate::master::Master;
use crate::status::{Phase, Status, WorkerState};
use crate::supervisor::Readiness;

/// The environment variables of the protocols, which workers do not inherit.
pub(crate) const ENV: [&str; 6] = [
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
];

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: RawFd = 3;

/// A socket systemd passed: its descriptor, and its name (`LISTEN_FDNAMES`, when given).
pub(crate) type Passed = (RawFd, Option<String>);

/// The sockets systemd passed this process (socket activation). `None` when there are none for this process (`LISTEN_PID`
/// names another, or is unset); an error when the variables make no sense.
pub(crate) fn listen_fds() -> Result<Option<Vec<Passed>>, Error> {
    let Ok(pid) = std::env::var("LISTEN_PID") else {
        return Ok(None);
    };
    if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
        return Ok(None);
    }
    let count = std::env::var("LISTEN_FDS").unwrap_or_default();
    let count: RawFd = count
        .trim()
        .parse()
        .ok()
        .filter(|&n| (0..=1024).contains(&n))
        .ok_or_else(|| Error::Config(format!("LISTEN_FDS={count:?} is not a count of sockets")))?;
    let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
    let mut names = names
        .split(':')
        .map(|n| (!n.is_empty()).then(|| n.to_owned()));
    Ok(Some(
        (0..count)
            .map(|i| (LISTEN_FDS_START + i, names.next().flatten()))
            .collect(),
    ))
}

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
        if let Err(err) = socket.set_nonblocking(true) {
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
    /// READY=1, since the start or the last reload.
    ready: bool,
    reloading: bool,
    stopping: bool,
    status: String,
}

impl Told {
    /// The datagram for the cluster as it is now, if systemd must hear of it.
    fn next(&mut self, phase: Phase, readiness: Readiness, status: String) -> Option<String> {
        let mut lines = Vec::new();
        match (phase, readiness) {
            (Phase::Stopping | Phase::Stopped, _) | (_, Readiness::Stopped) => {
                if !std::mem::replace(&mut self.stopping, true) {
                    lines.push("STOPPING=1".to_owned());
                }
            }
            (Phase::Reloading, _) => {
                if !std::mem::replace(&mut self.reloading, true) {
                    lines.push("RELOADING=1".to_owned());
                    lines.push(format!("MONOTONIC_USEC={}", monotonic_usec()));
                    self.ready = false;
                }
            }
            (_, Readiness::Ready) => {
                self.reloading = false;
                if !std::mem::replace(&mut self.ready, true) {
                    lines.push("READY=1".to_owned());
                }
            }
            (_, Readiness::Waiting) => {}
        }
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
) {
    let mut phase = master.phase();
    let mut ticker = notifier.watchdog.map(tokio::time::interval);
    let mut told = Told::default();
    loop {
        let now_phase = *phase.borrow_and_update();
        let now_readiness = *readiness.borrow_and_update();
        let status = match master.status().await {
            Ok(status) => summary(&status),
            Err(_) => "stopping".to_owned(),
        };
        if let Some(state) = told.next(now_phase, now_readiness, status) {
            notifier.send(&state);
        }
        if now_phase == Phase::Stopped {
            return;
        }
        tokio::select! {
            changed = phase.changed() => if changed.is_err() { return },
            changed = readiness.changed() => if changed.is_err() { return },
            () = tick(&mut ticker) => {
                // The supervisor answering is what the watchdog vouches for.
                if master.status().await.is_ok() {
                    notifier.send("WATCHDOG=1");
                }
            }
        }
    }
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
        assert_eq!(
            told.next(Phase::Running, Readiness::Waiting, status(0))
                .unwrap(),
            "STATUS=0 of 2 workers Ready"
        );
        assert_eq!(
            told.next(Phase::Running, Readiness::Ready, status(2))
                .unwrap(),
            "READY=1\nSTATUS=2 of 2 workers Ready"
        );
        assert_eq!(told.next(Phase::Running, Readiness::Ready, status(2)), None);
        // A crash, then the replacement: only the status moves.
        assert_eq!(
            told.next(Phase::Running, Readiness::Waiting, status(1))
                .unwrap(),
            "STATUS=1 of 2 workers Ready"
        );
        assert_eq!(
            told.next(Phase::Running, Readiness::Ready, status(2))
                .unwrap(),
            "STATUS=2 of 2 workers Ready"
        );
        // A reload: RELOADING=1 once, then READY=1 when it is over.
        let reload = told
            .next(Phase::Reloading, Readiness::Waiting, status(2))
            .unwrap();
        assert!(
            reload.starts_with("RELOADING=1\nMONOTONIC_USEC="),
            "{reload}"
        );
        assert!(!reload.contains("STATUS"), "{reload}");
        assert_eq!(
            told.next(Phase::Reloading, Readiness::Waiting, status(2)),
            None
        );
        assert_eq!(
            told.next(Phase::Running, Readiness::Ready, status(2))
                .unwrap(),
            "READY=1"
        );
        let stop = told
            .next(Phase::Stopping, Readiness::Stopped, status(2))
            .unwrap();
        assert_eq!(stop, "STOPPING=1");
        assert_eq!(
            told.next(Phase::Stopped, Readiness::Stopped, "stopping".into())
                .unwrap(),
            "STATUS=stopping"
        );
    }
}
