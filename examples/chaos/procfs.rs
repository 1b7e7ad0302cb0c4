//! What `/proc` tells about the cluster's processes, and the clock every record uses.

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The driver's start: its monotonic clock and the wall clock at that moment.
fn t0() -> &'static (Instant, u64) {
    static T0: OnceLock<(Instant, u64)> = OnceLock::new();
    T0.get_or_init(|| {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        (Instant::now(), wall.as_micros() as u64)
    })
}

/// Microseconds since the driver started: the time of every record.
pub fn now_us() -> u64 {
    t0().0.elapsed().as_micros() as u64
}

/// A log line's UTC timestamp (`2026-11-30T07:20:54.858310Z`) on the driver's clock.
pub fn log_time_us(stamp: &str) -> Option<u64> {
    let (date, time) = stamp.strip_suffix('Z')?.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.splitn(3, ':').map(|x| x.parse::<i64>().ok());
    let (h, min, sec) = (t.next()??, t.next()??, t.next()??);
    let micros: i64 = format!("{frac:0<6}").get(..6)?.parse().ok()?;
    // Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let epoch_us = ((days * 86_400 + h * 3600 + min * 60 + sec) * 1_000_000) + micros;
    u64::try_from(epoch_us - t0().1 as i64).ok()
}

/// Seconds, for printing.
pub fn secs(us: u64) -> f64 {
    us as f64 / 1e6
}

/// The fields of `/proc/<pid>/stat` the driver uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// `R`, `S`, `T` (stopped), `Z` (zombie), ...
    pub state: char,
    pub ppid: u32,
    pub pgrp: u32,
    /// Clock ticks after boot: tells a process from a later one with the same pid.
    pub starttime: u64,
}

impl Stat {
    /// Whether the process has ended (a zombie has run its exit: its sockets are closed).
    pub fn dead(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }

    pub fn stopped(&self) -> bool {
        self.state == 'T'
    }
}

/// `None` when there is no such process.
pub fn stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold anything: the fields follow the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(3) ppid(4) pgrp(5) ... starttime(22), numbered from 1.
    Some(Stat {
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        pgrp: fields.get(2)?.parse().ok()?,
        starttime: fields.get(19)?.parse().ok()?,
    })
}

/// Every process (pid and stat) that `keep` accepts.
pub fn processes(keep: impl Fn(&Stat) -> bool) -> Vec<(u32, Stat)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found: Vec<(u32, Stat)> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, stat(pid)?)))
        .filter(|(_, s)| keep(s))
        .collect();
    found.sort_by_key(|p| p.0);
    found
}

/// The live (not zombie) children of `parent`.
pub fn children(parent: u32) -> Vec<(u32, Stat)> {
    processes(|s| s.ppid == parent && !s.dead())
}

/// The live processes of process group `pgrp`.
pub fn group(pgrp: u32) -> Vec<(u32, Stat)> {
    processes(|s| s.pgrp == pgrp && !s.dead())
}

/// How many descriptors `pid` has open.
pub fn fd_count(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// `VmRSS` of `pid`, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
