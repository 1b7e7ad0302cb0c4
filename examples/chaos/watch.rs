//! Watching the master's children: which are alive, which are stopped, and when each one
//! died (to the few milliseconds); and sampling the master's memory and descriptors.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::http::Stats;
use crate::procfs::{self, now_us, secs, Stat};

/// How often the known workers are looked at: bounds how late a death is seen.
const POLL: Duration = Duration::from_millis(2);
/// How often `/proc` is scanned for new children of the master.
const SCAN_EVERY: u32 = 10;

/// A worker that ended: it was seen alive at `last_alive` and gone (or a zombie) at `gone`.
///
/// A dying process still shows as alive for a moment after its descriptors are closed, so
/// `last_alive` is not a bound of when its connections broke; `last_stopped`, the last time it
/// was seen SIGSTOPped, is (a stopped process closes nothing until SIGKILL wakes it).
#[derive(Debug, Clone)]
pub struct Death {
    pub pid: u32,
    pub last_alive: u64,
    pub last_stopped: Option<u64>,
    pub gone: u64,
}

#[derive(Default)]
pub struct Watch {
    /// Live children of the master as last seen.
    pub live: Mutex<BTreeMap<u32, Stat>>,
    pub deaths: Mutex<Vec<Death>>,
    /// Every worker pid ever seen, with when it was first seen.
    pub seen: Mutex<BTreeMap<u32, u64>>,
    /// When the last look at the workers ended, and the longest time between two: a read of
    /// `/proc` can block in the kernel (seen: 33 s), and deaths are seen late meanwhile.
    pub last_round: AtomicU64,
    pub max_gap: AtomicU64,
    /// The driver's SIGKILLs (pid, when), for the diagnostics.
    pub killed: Mutex<Vec<(u32, u64)>>,
    stop: AtomicBool,
}

impl Watch {
    pub fn start(master: u32) -> (Arc<Watch>, JoinHandle<()>) {
        let watch = Arc::new(Watch::default());
        let w = watch.clone();
        let thread = std::thread::Builder::new()
            .name("watch".into())
            .spawn(move || w.run(master))
            .expect("spawn the watcher");
        (watch, thread)
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// The live children, stopped ones apart: (running, stopped).
    pub fn live_split(&self) -> (Vec<u32>, Vec<u32>) {
        let live = self.live.lock().unwrap();
        let running = live.iter().filter(|(_, s)| !s.stopped()).map(|(&p, _)| p);
        let stopped = live.iter().filter(|(_, s)| s.stopped()).map(|(&p, _)| p);
        (running.collect(), stopped.collect())
    }

    fn run(&self, master: u32) {
        // pid -> (start time, last seen alive, last seen stopped)
        let mut known: BTreeMap<u32, (u64, u64, Option<u64>)> = BTreeMap::new();
        let mut until_scan = 0u32;
        while !self.stop.load(Ordering::SeqCst) {
            if until_scan == 0 {
                until_scan = SCAN_EVERY;
                let now = now_us();
                for (pid, stat) in procfs::children(master) {
                    known.entry(pid).or_insert_with(|| {
                        self.seen.lock().unwrap().entry(pid).or_insert(now);
                        (stat.starttime, now, None)
                    });
                }
            }
            until_scan -= 1;
            let mut live = BTreeMap::new();
            known.retain(|&pid, (starttime, last_alive, last_stopped)| {
                let before = now_us();
                match procfs::stat(pid) {
                    Some(s) if !s.dead() && s.starttime == *starttime => {
                        *last_alive = before;
                        if s.stopped() {
                            *last_stopped = Some(before);
                        }
                        live.insert(pid, s);
                        true
                    }
                    _ => {
                        self.deaths.lock().unwrap().push(Death {
                            pid,
                            last_alive: *last_alive,
                            last_stopped: *last_stopped,
                            gone: now_us(),
                        });
                        false
                    }
                }
            });
            *self.live.lock().unwrap() = live;
            let now = now_us();
            let last = self.last_round.swap(now, Ordering::SeqCst);
            if last > 0 {
                self.max_gap.fetch_max(now - last, Ordering::SeqCst);
            }
            std::thread::sleep(POLL);
        }
    }
}

/// The master's memory and descriptors at one moment.
#[derive(Debug, Clone)]
pub struct Sample {
    pub at: u64,
    pub rss_kib: u64,
    pub fds: usize,
    pub workers: usize,
    pub stopped: usize,
    pub ok: u64,
    pub failed: u64,
}

pub fn sample(master: u32, watch: &Watch, stats: &Stats) -> Sample {
    let (running, stopped) = watch.live_split();
    let (_, ok, failed) = stats.load.get();
    Sample {
        at: now_us(),
        rss_kib: procfs::rss_kib(master).unwrap_or(0),
        fds: procfs::fd_count(master).unwrap_or(0),
        workers: running.len() + stopped.len(),
        stopped: stopped.len(),
        ok,
        failed,
    }
}

/// Samples every `every` until stopped, printing each sample.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<Sample>>,
}

impl Sampler {
    pub fn start(master: u32, every: Duration, watch: Arc<Watch>, stats: Arc<Stats>) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut samples = Vec::new();
            let mut next = now_us();
            while !flag.load(Ordering::SeqCst) {
                if now_us() >= next {
                    let s = sample(master, &watch, &stats);
                    eprintln!(
                        "[{:8.3}] sample: master rss {} KiB, fds {}, workers {} ({} stopped), \
                         load ok {} failed {}",
                        secs(s.at),
                        s.rss_kib,
                        s.fds,
                        s.workers,
                        s.stopped,
                        s.ok,
                        s.failed
                    );
                    samples.push(s);
                    next += every.as_micros() as u64;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            samples
        });
        Sampler { stop, thread }
    }

    pub fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap_or_default()
    }
}
