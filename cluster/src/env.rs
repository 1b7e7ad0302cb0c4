//! The worker's identity, passed from the master to its re-executed binary in the environment.
//!
//! One variable, [`WORKER_ENV`], carries the slot, the generation, the master's pid and the file
//! descriptor numbers the worker inherited. The worker checks it against reality (its parent is
//! that master, the descriptors are sockets), then removes it from its environment so that its
//! own children are not mistaken for workers.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::Error;

/// The environment variable that makes a process a worker.
pub const WORKER_ENV: &str = "MULTIPROCESS_WORKER";

/// The environment variable that turns single-process mode on (`1`) or off (`0`), whatever
/// the builder says (see [`Builder::single_process`](crate::Builder::single_process)).
pub const SINGLE_PROCESS_ENV: &str = "MULTIPROCESS_SINGLE_PROCESS";

/// What [`SINGLE_PROCESS_ENV`] asks for, if it is set.
pub(crate) fn single_process() -> Result<Option<bool>, Error> {
    match std::env::var(SINGLE_PROCESS_ENV) {
        Err(std::env::VarError::NotPresent) => Ok(None),
        Ok(v) => switch(&v).map(Some).ok_or_else(|| {
            Error::Config(format!(
                "{SINGLE_PROCESS_ENV}={v:?}: 1 (or true, yes, on) or 0 (false, no, off)"
            ))
        }),
        Err(_) => Err(Error::Config(format!("{SINGLE_PROCESS_ENV} is not UTF-8"))),
    }
}

/// An on/off switch's value, in any case (`TRUE` as well as `true`); empty is off.
fn switch(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" | "" => Some(false),
        _ => None,
    }
}

/// The first descriptor number the master places inherited sockets at: the IPC socket, then the
/// listeners in the order they were added to the builder.
pub(crate) const FIRST_FD: RawFd = 3;

/// Set once this process has consumed a worker identity: from then on it must never become a
/// master (a test harness re-executed as a worker would otherwise start clusters of its own).
static STARTED_AS_WORKER: AtomicBool = AtomicBool::new(false);

/// The kind of an inherited listening socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListenerKind {
    Tcp,
    Unix,
}

/// What the master tells a worker about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WorkerEnv {
    pub slot: u32,
    pub generation: u64,
    pub master_pid: u32,
    pub ipc_fd: RawFd,
    pub listeners: Vec<(ListenerKind, RawFd)>,
}

impl WorkerEnv {
    /// The value of [`WORKER_ENV`] for this identity.
    pub fn encode(&self) -> String {
        let listeners: Vec<String> = self
            .listeners
            .iter()
            .map(|(kind, fd)| match kind {
                ListenerKind::Tcp => format!("tcp:{fd}"),
                ListenerKind::Unix => format!("unix:{fd}"),
            })
            .collect();
        format!(
            "v1;slot={};gen={};master={};ipc={};listeners={}",
            self.slot,
            self.generation,
            self.master_pid,
            self.ipc_fd,
            listeners.join(",")
        )
    }

    /// Parses a value of [`WORKER_ENV`].
    pub fn decode(value: &str) -> Result<Self, String> {
        let mut parts = value.split(';');
        if parts.next() != Some("v1") {
            return Err(format!("{WORKER_ENV}={value:?} has an unknown format"));
        }
        let (mut slot, mut generation, mut master, mut ipc, mut listeners) =
            (None, None, None, None, None);
        for part in parts {
            let (key, val) = part
                .split_once('=')
                .ok_or_else(|| format!("{WORKER_ENV}: malformed part {part:?}"))?;
            let bad = |_| format!("{WORKER_ENV}: bad value for {key}: {val:?}");
            match key {
                "slot" => slot = Some(val.parse().map_err(bad)?),
                "gen" => generation = Some(val.parse().map_err(bad)?),
                "master" => master = Some(val.parse().map_err(bad)?),
                "ipc" => ipc = Some(val.parse().map_err(bad)?),
                "listeners" => {
                    let mut list = Vec::new();
                    for item in val.split(',').filter(|s| !s.is_empty()) {
                        let (kind, fd) = item
                            .split_once(':')
                            .ok_or_else(|| format!("{WORKER_ENV}: bad listener {item:?}"))?;
                        let kind = match kind {
                            "tcp" => ListenerKind::Tcp,
                            "unix" => ListenerKind::Unix,
                            _ => return Err(format!("{WORKER_ENV}: bad listener kind {kind:?}")),
                        };
                        let fd = fd
                            .parse()
                            .map_err(|_| format!("{WORKER_ENV}: bad listener fd {fd:?}"))?;
                        list.push((kind, fd));
                    }
                    listeners = Some(list);
                }
                _ => return Err(format!("{WORKER_ENV}: unknown key {key:?}")),
            }
        }
        let missing = |k: &str| format!("{WORKER_ENV}: {k} is missing");
        Ok(WorkerEnv {
            slot: slot.ok_or_else(|| missing("slot"))?,
            generation: generation.ok_or_else(|| missing("gen"))?,
            master_pid: master.ok_or_else(|| missing("master"))?,
            ipc_fd: ipc.ok_or_else(|| missing("ipc"))?,
            listeners: listeners.ok_or_else(|| missing("listeners"))?,
        })
    }
}

/// Whether this process runs as a master (`None`) or as a worker (`Some`), decided once, before
/// any runtime exists.
///
/// A process that was started as a worker can never become a master: a second call fails, and
/// so does a worker identity that does not check out (wrong parent, missing descriptors).
pub(crate) fn take_worker_env() -> Result<Option<WorkerEnv>, Error> {
    if STARTED_AS_WORKER.load(Ordering::SeqCst) {
        return Err(Error::WorkerEnv(
            "it already ran as a worker and cannot start a master (was a test harness or a \
             program that starts several clusters re-executed as a worker?)"
                .into(),
        ));
    }
    let Some(value) = std::env::var_os(WORKER_ENV) else {
        return Ok(None);
    };
    STARTED_AS_WORKER.store(true, Ordering::SeqCst);
    // Removed before anything else can spawn a child, so grandchildren never inherit it.
    std::env::remove_var(WORKER_ENV);
    let value = value
        .into_string()
        .map_err(|v| Error::WorkerEnv(format!("{WORKER_ENV}={v:?} is not UTF-8")))?;
    let env = WorkerEnv::decode(&value).map_err(Error::WorkerEnv)?;
    let parent = std::os::unix::process::parent_id();
    if parent != env.master_pid {
        return Err(Error::WorkerEnv(format!(
            "its parent is pid {parent}, not the master pid {} named in {WORKER_ENV}: the variable \
             was inherited by a process the master did not start",
            env.master_pid
        )));
    }
    for fd in std::iter::once(env.ipc_fd).chain(env.listeners.iter().map(|(_, fd)| *fd)) {
        if !is_socket(fd) {
            return Err(Error::WorkerEnv(format!(
                "descriptor {fd} named in {WORKER_ENV} is not an open socket"
            )));
        }
    }
    Ok(Some(env))
}

fn is_socket(fd: RawFd) -> bool {
    // SAFETY: fstat only writes into the zeroed struct we own.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        libc::fstat(fd, &mut st) == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFSOCK
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let env = WorkerEnv {
            slot: 2,
            generation: 7,
            master_pid: 1234,
            ipc_fd: 3,
            listeners: vec![(ListenerKind::Tcp, 4), (ListenerKind::Unix, 5)],
        };
        assert_eq!(WorkerEnv::decode(&env.encode()), Ok(env));
    }

    #[test]
    fn rejects_garbage() {
        assert!(WorkerEnv::decode("").is_err());
        assert!(WorkerEnv::decode("v2;slot=1").is_err());
        assert!(WorkerEnv::decode("v1;slot=x;gen=1;master=1;ipc=3;listeners=").is_err());
        for on in ["1", "true", "TRUE", "Yes", "on"] {
            assert_eq!(switch(on), Some(true), "{on}");
        }
        for off in ["0", "false", "False", "NO", "off", ""] {
            assert_eq!(switch(off), Some(false), "{off}");
        }
        assert_eq!(switch("maybe"), None);
        assert!(WorkerEnv::decode("v1;slot=1;gen=1;master=1;listeners=").is_err());
        assert!(WorkerEnv::decode("v1;slot=1;gen=1;master=1;ipc=3;listeners=udp:4").is_err());
    }
}
