//! What a worker's floods cost the master's memory: the master's resident memory stays under a
//! stated bound while a flood lasts, and comes back down once it is over. The floods are those
//! that pinned hundreds of megabytes for the master's lifetime before (`examples/helper/flood.rs`
//! sends them through the public API):
//!
//! - 300 `consume` calls with 1 MiB bodies, each to an event name nobody handles;
//! - 1 MiB broadcasts while one receiver is SIGSTOPped, until the master cuts it off.
//!
//! The bounds follow from the defaults (`Config::queue_bytes`, 32 MiB): a stuck receiver holds
//! at most its queue's bytes and the sender's window of broadcasts waiting for it. The figures
//! are printed (`cargo test --test memory -- --nocapture`).

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{ready_pids, workers, Helper};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const MIB: u64 = 1024 * 1024;

/// The resident memory of `pid`, in bytes.
fn rss(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .expect("VmRSS");
    kib * 1024
}

/// Samples a process's resident memory in the background, to catch its peak.
struct Peak {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Peak {
    fn watch(pid: i32) -> Peak {
        let peak = Arc::new(AtomicU64::new(rss(pid)));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let (peak, stop) = (peak.clone(), stop.clone());
            move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                        if status.contains("VmRSS:") {
                            peak.fetch_max(rss(pid), Ordering::Relaxed);
                        }
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        });
        Peak {
            peak,
            stop,
            thread: Some(thread),
        }
    }

    fn take(&self) -> u64 {
        self.peak.swap(0, Ordering::Relaxed)
    }
}

impl Drop for Peak {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Prints a flood's figures, and checks that the master's memory peaked under `start +
/// peak_mib` and came back under `start + after_mib`.
fn within(flood: &str, start: u64, peak: u64, after: u64, peak_mib: u64, after_mib: u64) {
    let figures = format!(
        "{flood}: start {}, peak {}, after {}",
        mib(start),
        mib(peak),
        mib(after)
    );
    eprintln!("{figures}");
    assert!(
        peak < start + peak_mib * MIB,
        "{figures}: peak over +{peak_mib} MiB"
    );
    assert!(
        after < start + after_mib * MIB,
        "{figures}: after over +{after_mib} MiB"
    );
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / MIB as f64)
}

#[test]
fn floods_cost_the_master_bounded_memory_and_it_gives_it_back() {
    let helper = Helper::start(
        2,
        &[
            // A SIGSTOPped worker is replaced after this long without a heartbeat.
            ("HELPER_HEARTBEAT_TIMEOUT_MS", "4000".into()),
        ],
    );
    let master = helper.pid();
    let status = helper.wait_ready(2);
    // Warm up what every request touches, so the baseline is the master's working set.
    for _ in 0..50 {
        helper.get("/map");
        helper.get("/consume");
    }
    let start = rss(master);
    let peak = Peak::watch(master);

    // 300 names nobody handles, 1 MiB each: every call fails with NoHandler, and the master
    // keeps nothing of them (before: +300 MiB for good).
    let names = helper.get("/flood/names?size=1048576");
    assert_eq!(names["no_handler"], 300, "{names}");
    let names_peak = peak.take();
    let names_after = rss(master);
    within("names flood", start, names_peak, names_after, 48, 16);

    // One worker stops reading; the other broadcasts 1 MiB events to both. The master holds
    // at most the stuck worker's queue and the sender's window until it cuts the stuck one off
    // (before: 1.3 GB, and 1.0 GB for good).
    let pids = ready_pids(&status);
    let stuck = pids[1];
    kill(Pid::from_raw(stuck as i32), Signal::SIGSTOP).unwrap();
    let sent = helper.get("/flood/broadcast?count=300&size=1048576");
    assert_eq!(sent["sent"], 300, "{sent}");
    // The stuck worker is replaced, and the new one Ready.
    helper.wait_status("the stuck worker replaced", |s| {
        ready_pids(s).len() == 2 && workers(s).len() == 2 && !ready_pids(s).contains(&stuck)
    });
    let flood_peak = peak.take();
    // The last frames may still be on their way to the new worker: wait until the master's
    // memory settles (or fail the assertion below after the deadline).
    let deadline = std::time::Instant::now() + common::DEADLINE;
    let mut after = rss(master);
    while after >= start + 24 * MIB && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        after = rss(master);
    }
    within(
        "broadcast flood, one receiver stopped",
        start,
        flood_peak,
        after,
        160,
        24,
    );
}
