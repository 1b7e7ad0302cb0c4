//! The verdict of a run: the checks, the human summary and the JSON line.

use std::fmt::Write;
use std::process::ExitStatus;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{json, Value};

use crate::actions::Chaos;
use crate::cluster::Log;
use crate::http::{Failure, Stats};
use crate::opts::{Action, Opts};
use crate::procfs::secs;
use crate::report::{self, round, Attribution, Kill};
use crate::settle::Settled;
use crate::watch::{Death, Sample};

/// Everything a run measured.
pub struct Outcome<'a> {
    pub opts: &'a Opts,
    pub chaos_s: f64,
    pub load_s: f64,
    pub stats: &'a Stats,
    pub failures: Vec<Failure>,
    pub attributions: Vec<Attribution>,
    pub chaos: Chaos,
    pub kills: Vec<Kill>,
    pub exits: Vec<Death>,
    pub workers_seen: usize,
    /// The longest time the watcher's reads of `/proc` took (µs): deaths are seen that late.
    pub watch_max_gap: u64,
    pub settled: Result<Settled, String>,
    /// At the start (after start-up) and at the end (after settling, the load stopped).
    pub fds: (usize, usize),
    pub rss_kib: (u64, u64),
    pub stopped: Result<(ExitStatus, Duration), String>,
    pub leftovers: Vec<u32>,
    pub samples: Vec<Sample>,
    pub master: u32,
    pub log: &'a Log,
    pub log_path: String,
    /// Thread dumps written to the log (a logged kill that had not taken effect 1 s later).
    pub dumps: usize,
}

impl Outcome<'_> {
    /// Whether the run passed, the human summary, and the JSON line.
    pub fn judge(&self) -> (bool, String, Value) {
        let o = self.opts;
        let n = o.workers;
        let count = |k: Option<&str>| self.attributions.iter().filter(|a| a.kind == k).count();
        let (in_flight, idle_conn, unexplained) = (
            count(Some("in_flight")),
            count(Some("idle_connection")),
            count(None),
        );
        let (sent, ok, failed) = self.stats.load.get();
        let (c_sent, c_ok, c_failed) = self.stats.control.get();
        let (fds_start, fds_end) = self.fds;
        let (rss_start, rss_end) = self.rss_kib;
        let rss_bound = rss_start + o.rss_bound_mib * 1024;
        let stops: Vec<(u32, u64, Option<u64>)> = self
            .chaos
            .signalled(Action::Stop)
            .into_iter()
            .map(|(pid, at)| {
                let killed = self.kills.iter().find(|k| k.pid == pid && k.by == "master");
                (pid, at, killed.map(|k| k.hi))
            })
            .collect();

        let mut problems = Vec::new();
        if sent == 0 || ok == 0 {
            problems.push(format!("the load got nowhere: {sent} sent, {ok} ok"));
        }
        if unexplained > 0 {
            problems.push(format!(
                "{unexplained} failed request(s) not explained by any SIGKILL"
            ));
        }
        if let Err(e) = &self.settled {
            problems.push(format!("not every slot got a Ready worker: {e}"));
        }
        if fds_end > fds_start {
            problems.push(format!(
                "the master has {fds_end} descriptors open, {fds_start} at the start"
            ));
        }
        if rss_end > rss_bound {
            problems.push(format!(
                "the master's RSS is {rss_end} KiB: more than {rss_start} + {} KiB",
                o.rss_bound_mib * 1024
            ));
        }
        let (exit_code, stop_s) = match &self.stopped {
            Ok((status, took)) => {
                if status.code() != Some(0) {
                    problems.push(format!("the master ended with {status} after SIGTERM"));
                }
                (status.code(), Some(took.as_secs_f64()))
            }
            Err(e) => {
                problems.push(e.clone());
                (None, None)
            }
        };
        if !self.leftovers.is_empty() {
            problems.push(format!(
                "processes of the cluster's group left after the master exited: {:?}",
                self.leftovers
            ));
        }
        let pass = problems.is_empty();

        // The trend: memory over every sample; descriptors over the quiet ones (N workers, none
        // stopped), since each live worker holds one of the master's descriptors.
        let quiet: Vec<Sample> = self
            .samples
            .iter()
            .filter(|s| s.workers == n && s.stopped == 0)
            .cloned()
            .collect();
        let rss_slope = report::slope_per_min(&self.samples, |s| s.rss_kib as f64);
        let fds_slope = report::slope_per_min(&quiet, |s| s.fds as f64);
        let actions = |a| self.chaos.count(a);
        let slow: Vec<&Kill> = self
            .kills
            .iter()
            .filter(|k| k.hi.saturating_sub(k.lo) > report::SLOW_KILL_US)
            .collect();
        let json = json!({
            "result": if pass { "pass" } else { "fail" },
            "problems": problems,
            "seed": o.seed,
            "chaos_s": round(self.chaos_s),
            "load_s": round(self.load_s),
            "workers": n,
            "clients": o.clients,
            "heartbeat_timeout_ms": o.heartbeat_timeout_ms,
            "kill_timeout_ms": o.kill_timeout_ms,
            "requests": {
                "sent": sent, "ok": ok, "failed": failed,
                "control_sent": c_sent, "control_ok": c_ok, "control_failed": c_failed,
                "new_connections": self.stats.new_connections.load(Ordering::SeqCst),
                "max_latency_s": round(secs(self.stats.max_latency_us.load(Ordering::SeqCst))),
            },
            "failed_requests": self.failures.iter().zip(&self.attributions)
                .map(|(f, a)| report::failure_json(f, a)).collect::<Vec<_>>(),
            "attributed": {
                "in_flight": in_flight, "idle_connection": idle_conn, "unattributed": unexplained,
            },
            "actions": {
                "kill": actions(Action::Kill), "stop": actions(Action::Stop),
                "reload": actions(Action::Reload), "unhealthy": actions(Action::Unhealthy),
                "skipped_or_failed": self.chaos.events.iter().filter(|e| !e.done).count(),
            },
            "kills": self.kills.iter().map(report::kill_json).collect::<Vec<_>>(),
            "slow_kills": slow.iter().map(|k| report::kill_json(k)).collect::<Vec<_>>(),
            "stops": stops.iter().map(|&(pid, at, killed)| json!({
                "pid": pid,
                "at": round(secs(at)),
                "killed_by_master_at": killed.map(|k| round(secs(k))),
                "after_s": killed.map(|k| round(secs(k.saturating_sub(at)))),
            })).collect::<Vec<_>>(),
            "worker_exits_without_kill": self.exits.len(),
            "workers_seen": self.workers_seen,
            "watch_max_gap_s": round(secs(self.watch_max_gap)),
            "settle": match &self.settled {
                Ok(s) => json!({"ok": true, "after_s": round(secs(s.after)), "pids": s.pids}),
                Err(e) => json!({"ok": false, "error": e}),
            },
            "master": {
                "pid": self.master,
                "fds_start": fds_start, "fds_end": fds_end,
                "rss_start_kib": rss_start, "rss_end_kib": rss_end, "rss_bound_kib": rss_bound,
                "exit_code": exit_code, "stop_s": stop_s.map(round),
                "leftovers": self.leftovers,
            },
            "trend": {
                "rss_kib_min": self.samples.iter().map(|s| s.rss_kib).min(),
                "rss_kib_max": self.samples.iter().map(|s| s.rss_kib).max(),
                "rss_kib_per_min": rss_slope.map(|x| (x * 10.0).round() / 10.0),
                "quiet_samples": quiet.len(),
                "fds_quiet_min": quiet.iter().map(|s| s.fds).min(),
                "fds_quiet_max": quiet.iter().map(|s| s.fds).max(),
                "fds_quiet_per_min": fds_slope.map(|x| (x * 100.0).round() / 100.0),
            },
            "samples": self.samples.iter().map(report::sample_json).collect::<Vec<_>>(),
            "log": {
                "path": self.log_path, "warn": self.log.warns, "error": self.log.errors,
                "thread_dumps": self.dumps,
            },
        });

        let mut t = String::new();
        let _ = writeln!(t, "== chaos: {} ==", if pass { "PASS" } else { "FAIL" });
        let _ = writeln!(
            t,
            "load: {sent} requests, {ok} ok, {failed} failed; the driver's own requests: {c_sent}, \
             {c_failed} failed; of all {} failed: {in_flight} in flight at a SIGKILL, {idle_conn} \
             written to a connection whose worker a SIGKILL had just cut, {unexplained} \
             unexplained",
            self.failures.len()
        );
        let by_master = self.kills.iter().filter(|k| k.by == "master").count();
        let _ = writeln!(
            t,
            "chaos over {:.1} s: {} SIGKILL, {} SIGSTOP, {} reload, {} unhealthy; {} kills in all \
             ({by_master} by the master), {} worker exits without a kill, {} workers seen",
            self.chaos_s,
            actions(Action::Kill),
            actions(Action::Stop),
            actions(Action::Reload),
            actions(Action::Unhealthy),
            self.kills.len(),
            self.exits.len(),
            self.workers_seen,
        );
        let after: Vec<f64> = stops
            .iter()
            .filter_map(|&(_, at, k)| Some(secs(k?.saturating_sub(at))))
            .collect();
        if !stops.is_empty() {
            let _ = writeln!(
                t,
                "SIGSTOPped workers killed by the master {:.2}-{:.2} s after the SIGSTOP; {} never",
                after.iter().copied().fold(f64::INFINITY, f64::min),
                after.iter().copied().fold(0.0, f64::max),
                stops.len() - after.len()
            );
        }
        if self.watch_max_gap > report::SLOW_KILL_US {
            let _ = writeln!(
                t,
                "NOTE: the driver's reads of /proc blocked for up to {:.2} s: deaths were seen \
                 that late (the kill windows are that much wider)",
                secs(self.watch_max_gap)
            );
        }
        for k in &slow {
            let _ = writeln!(
                t,
                "SLOW KILL: worker {} (by the {}) still alive {:.2} s after {:.3} s: {}",
                k.pid,
                k.by,
                secs(k.hi - k.lo),
                secs(k.lo),
                k.cause
            );
        }
        let _ = match &self.settled {
            Ok(s) => writeln!(
                t,
                "settled: every slot Ready {:.2} s after the chaos",
                secs(s.after)
            ),
            Err(e) => writeln!(t, "NOT settled: {e}"),
        };
        let _ = writeln!(
            t,
            "master: fds {fds_start} -> {fds_end}; rss {rss_start} -> {rss_end} KiB (bound \
             {rss_bound}); over {} samples rss {} KiB/min, over {} quiet ones fds {}/min",
            self.samples.len(),
            rss_slope.map_or("-".into(), |x| format!("{x:+.1}")),
            quiet.len(),
            fds_slope.map_or("-".into(), |x| format!("{x:+.2}")),
        );
        let step = self.samples.len().div_ceil(12).max(1);
        for s in self.samples.iter().step_by(step) {
            let _ = writeln!(
                t,
                "  t {:7.1} s  rss {:6} KiB  fds {:3}  workers {} ({} stopped)",
                secs(s.at),
                s.rss_kib,
                s.fds,
                s.workers,
                s.stopped
            );
        }
        let _ = writeln!(
            t,
            "stop: exit code {exit_code:?} after {}; leftovers {:?}; log {} ({} WARN, {} ERROR, \
             {} thread dumps)",
            stop_s.map_or("-".into(), |s| format!("{s:.2} s")),
            self.leftovers,
            self.log_path,
            self.log.warns,
            self.log.errors,
            self.dumps
        );
        for (f, _) in self
            .failures
            .iter()
            .zip(&self.attributions)
            .filter(|(_, a)| a.kind.is_none())
        {
            let _ = writeln!(
                t,
                "UNEXPLAINED: {} {} {:.6}-{:.6} s: {}",
                f.method,
                f.route,
                secs(f.start),
                secs(f.end),
                f.error
            );
        }
        for p in &problems {
            let _ = writeln!(t, "FAIL: {p}");
        }
        if !pass {
            let _ = writeln!(t, "last lines of the cluster's log:");
            for line in &self.log.tail {
                let _ = writeln!(t, "| {line}");
            }
        }
        (pass, t, json)
    }
}
