//! Who killed what, which failed request each kill explains, and the verdict.

use serde_json::{json, Value};

use crate::actions::Chaos;
use crate::cluster::LoggedKill;
use crate::http::Failure;
use crate::opts::Action;
use crate::procfs::secs;
use crate::watch::{Death, Sample};

/// A kill that took longer than this, from the signal (or the master's log line) to the
/// worker's death, is reported as slow.
pub const SLOW_KILL_US: u64 = 1_000_000;

/// A SIGKILL, by the driver or by the master, and when it struck: some time in `[lo, hi]`.
#[derive(Debug, Clone)]
pub struct Kill {
    pub pid: u32,
    pub by: &'static str,
    pub lo: u64,
    pub hi: u64,
    pub cause: String,
}

/// Every kill: the driver's SIGKILLs (from the call to the death seen), the deaths of the
/// workers it SIGSTOPped (only SIGKILL ends a stopped process: the master's, at its kill
/// deadline), and the deaths of workers the master's log says it killed. Returns the kills
/// and the deaths that were not kills (workers that exited by themselves, after a drain).
///
/// A master's kill struck after the later of its log line's timestamp (it logs, then kills)
/// and the last time the worker was seen stopped; and before the worker was seen gone.
///
/// The end of the interval is the earlier of when the watcher saw the worker gone and when the
/// master logged its exit (it had reaped it): the watcher's reads of `/proc` can be late.
pub fn kills(
    chaos: &Chaos,
    deaths: &[Death],
    logged: &[LoggedKill],
    exits: &[(u32, u64)],
) -> (Vec<Kill>, Vec<Death>) {
    let driver = chaos.signalled(Action::Kill);
    let exited = |pid: u32, lo: u64, gone: u64| {
        exits
            .iter()
            .filter(|&&(p, at)| p == pid && at >= lo)
            .map(|&(_, at)| at)
            .fold(gone, u64::min)
    };
    let stopped = chaos.signalled(Action::Stop);
    let mut kills = Vec::new();
    let mut exits = Vec::new();
    for &(pid, at) in &driver {
        let gone = deaths
            .iter()
            .find(|d| d.pid == pid)
            .map_or(u64::MAX, |d| d.gone);
        let hi = exited(pid, at, gone);
        let hi = if hi == u64::MAX { at } else { hi };
        kills.push(Kill {
            pid,
            by: "driver",
            lo: at,
            hi,
            cause: "SIGKILL by the driver".into(),
        });
    }
    for d in deaths {
        if driver.iter().any(|&(pid, _)| pid == d.pid) {
            continue;
        }
        let stop = stopped.iter().find(|&&(pid, _)| pid == d.pid);
        let log = logged.iter().find(|k| k.pid == d.pid);
        let said = log.map_or_else(|| "(no log line)".into(), |k| k.cause.clone());
        let cause = match stop {
            Some((_, at)) => format!(
                "SIGSTOPped by the driver at {:.3} s; the master: {said}",
                secs(*at)
            ),
            None if log.is_some() => said,
            None => {
                exits.push(d.clone());
                continue;
            }
        };
        let bounds = [log.and_then(|k| k.logged), d.last_stopped];
        let lo = bounds.iter().flatten().max().copied();
        let start = lo.unwrap_or(d.last_alive);
        kills.push(Kill {
            pid: d.pid,
            by: "master",
            lo: start,
            hi: exited(d.pid, start, d.gone),
            cause: if lo.is_some() {
                cause
            } else {
                format!("{cause} (no lower bound: from the last time seen alive)")
            },
        });
    }
    // Kills the master logged whose death the watcher did not see (it ends with the cluster).
    for k in logged {
        if !kills.iter().any(|x| x.pid == k.pid) {
            kills.push(Kill {
                pid: k.pid,
                by: "master",
                lo: k.logged.unwrap_or(k.at).min(k.at),
                hi: k.at + 1_000_000,
                cause: format!("{} (death not seen: up to 1 s after the log line)", k.cause),
            });
        }
    }
    kills.sort_by_key(|k| k.lo);
    (kills, exits)
}

/// How a failed request is explained.
pub struct Attribution {
    /// "in_flight": a kill struck between its start and its end; "idle_connection": a kill
    /// struck the worker that held its (reused) connection between the previous response and
    /// this request, which was then written to a dead connection; None: nothing explains it.
    pub kind: Option<&'static str>,
    pub pids: Vec<u32>,
}

pub fn attribute(f: &Failure, kills: &[Kill]) -> Attribution {
    let overlapping = |from: u64, to: u64| -> Vec<u32> {
        kills
            .iter()
            .filter(|k| k.lo <= to && k.hi >= from)
            .map(|k| k.pid)
            .collect()
    };
    let pids = overlapping(f.start, f.end);
    if !pids.is_empty() {
        return Attribution {
            kind: Some("in_flight"),
            pids,
        };
    }
    if f.reused {
        let pids = overlapping(f.idle_since, f.end);
        if !pids.is_empty() {
            return Attribution {
                kind: Some("idle_connection"),
                pids,
            };
        }
    }
    Attribution {
        kind: None,
        pids: Vec::new(),
    }
}

pub fn failure_json(f: &Failure, a: &Attribution) -> Value {
    json!({
        "source": f.source,
        "request": format!("{} {}", f.method, f.route),
        "start": round(secs(f.start)),
        "end": round(secs(f.end)),
        "connection_idle_since": round(secs(f.idle_since)),
        "reused_connection": f.reused,
        "error": f.error,
        "attributed": a.kind,
        "kills": a.pids,
    })
}

pub fn kill_json(k: &Kill) -> Value {
    json!({
        "pid": k.pid,
        "by": k.by,
        "at": round(secs(k.lo)),
        "seen_gone": round(secs(k.hi)),
        "took_s": round(secs(k.hi.saturating_sub(k.lo))),
        "cause": k.cause,
    })
}

pub fn sample_json(s: &Sample) -> Value {
    json!({
        "t": round(secs(s.at)),
        "rss_kib": s.rss_kib,
        "fds": s.fds,
        "workers": s.workers,
        "stopped": s.stopped,
        "ok": s.ok,
        "failed": s.failed,
    })
}

/// The least-squares slope of `y` over the samples, per minute.
pub fn slope_per_min(samples: &[Sample], y: impl Fn(&Sample) -> f64) -> Option<f64> {
    if samples.len() < 3 {
        return None;
    }
    let n = samples.len() as f64;
    let xs: Vec<f64> = samples.iter().map(|s| secs(s.at) / 60.0).collect();
    let ys: Vec<f64> = samples.iter().map(y).collect();
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let sxy: f64 = xs.iter().zip(&ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let sxx: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

/// Seconds with microsecond precision, as a JSON number.
pub fn round(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}
