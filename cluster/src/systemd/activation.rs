//! Socket activation: the listening sockets systemd passed this process.

use std::os::fd::RawFd;

use crate::error::Error;

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: RawFd = 3;

/// A socket systemd passed: its descriptor, and its name (`LISTEN_FDNAMES`, when given).
pub(crate) type Passed = (RawFd, Option<String>);

/// The sockets systemd passed this process (socket activation). `None` when there are none
/// for this process (`LISTEN_PID` names another, or is unset); an error when the variables
/// make no sense.
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
