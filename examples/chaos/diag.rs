//! When a worker SIGKILLed by the driver, or one the master logged it kills, is not seen dead a
//! second later, or the watcher's look at `/proc` has been blocked for a second, the wait
//! channel and kernel stack of every thread on the machine go into the cluster's log (`DIAG`
//! lines), for whoever looks into why. Only `comm`, `wchan` and `stack` are read: unlike `stat`
//! or `status`, they do not touch the task's memory map, which is what blocked when this was
//! seen.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::cluster::Log;
use crate::procfs::{now_us, secs};
use crate::watch::Watch;

/// At most this many dumps per run.
const MAX_DUMPS: usize = 3;
/// How late is late.
const LATE_US: u64 = 1_000_000;

/// The diagnostics thread. It is never joined: a read of `/proc` may block, and the run must
/// not wait for it.
pub struct Diag {
    stop: Arc<AtomicBool>,
    dumps: Arc<AtomicUsize>,
}

impl Diag {
    pub fn start(watch: Arc<Watch>, log: Arc<Mutex<Log>>, file: Arc<Mutex<File>>) -> Diag {
        let stop = Arc::new(AtomicBool::new(false));
        let dumps = Arc::new(AtomicUsize::new(0));
        let (flag, count) = (stop.clone(), dumps.clone());
        std::thread::spawn(move || {
            let mut looked = BTreeSet::new();
            let mut watcher_stuck = false;
            while !flag.load(Ordering::SeqCst) && count.load(Ordering::SeqCst) < MAX_DUMPS {
                let now = now_us();
                let mut why = Vec::new();
                let last = watch.last_round.load(Ordering::SeqCst);
                let stuck = last > 0 && now > last + LATE_US;
                if stuck && !watcher_stuck {
                    why.push(format!(
                        "the watcher has been reading /proc for {:.3} s",
                        secs(now - last)
                    ));
                }
                watcher_stuck = stuck;
                let mut kills: Vec<(u32, u64, &str)> = log
                    .lock()
                    .unwrap()
                    .kills
                    .iter()
                    .map(|k| (k.pid, k.at, "the master logged its kill"))
                    .collect();
                let by_us = watch.killed.lock().unwrap().clone();
                kills.extend(by_us.iter().map(|&(p, at)| (p, at, "the driver's SIGKILL")));
                let deaths: BTreeSet<u32> =
                    watch.deaths.lock().unwrap().iter().map(|d| d.pid).collect();
                for (pid, at, what) in kills {
                    if now > at + LATE_US && !deaths.contains(&pid) && looked.insert(pid) {
                        why.push(format!(
                            "worker {pid} not seen dead {:.3} s after {what}",
                            secs(now - at)
                        ));
                    }
                }
                if !why.is_empty() {
                    let why = why.join("; ");
                    dump(&why, &mut file.lock().unwrap());
                    eprintln!(
                        "[{:8.3}] DIAG: {why}: every thread dumped to the log",
                        secs(now)
                    );
                    count.fetch_add(1, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        });
        Diag { stop, dumps }
    }

    /// Stops; returns how many dumps were written.
    pub fn stop(self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        self.dumps.load(Ordering::SeqCst)
    }
}

/// Every thread of every process: pid, tid, name, wait channel, kernel stack.
fn dump(why: &str, out: &mut File) {
    let at = secs(now_us());
    let _ = writeln!(out, "[{at:10.6}] DIAG begin: {why}");
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    let mut pids: Vec<u32> = procs
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    for pid in pids {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for tid in tasks.filter_map(|t| t.ok()?.file_name().into_string().ok()) {
            let dir = format!("/proc/{pid}/task/{tid}");
            let read = |f: &str| std::fs::read_to_string(format!("{dir}/{f}")).unwrap_or_default();
            let stack: Vec<String> = read("stack")
                .lines()
                .map(|l| l.split_whitespace().last().unwrap_or("").to_string())
                .collect();
            let _ = writeln!(
                out,
                "[{at:10.6}] DIAG {pid}/{tid} ({}) wchan {} stack {}",
                read("comm").trim(),
                read("wchan"),
                stack.join(" < ")
            );
        }
    }
    let _ = writeln!(out, "[{at:10.6}] DIAG end");
}
