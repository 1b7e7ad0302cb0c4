//! Steady HTTP load on a test cluster, counting what fails.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{request, DEADLINE};

/// Steady HTTP load on a cluster: `threads` clients sending `GET path` back to back, each on
/// a new connection, until [`Load::finish`] (or the load is dropped, say by a failed
/// assertion); the first failures are kept, and all are counted.
pub struct Load {
    stop: Arc<AtomicBool>,
    served: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<Vec<String>>>,
}

impl Load {
    pub fn start(port: u16, threads: usize, path: &'static str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicU64::new(0));
        let threads = (0..threads)
            .map(|_| {
                let (stop, served) = (stop.clone(), served.clone());
                std::thread::spawn(move || {
                    let mut failed = Vec::new();
                    let mut count = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        match request(port, "GET", path) {
                            Ok(_) => {
                                served.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => {
                                count += 1;
                                if failed.len() < 20 {
                                    failed.push(e.to_string());
                                }
                            }
                        }
                    }
                    if count > failed.len() as u64 {
                        failed.push(format!("and {} more", count - failed.len() as u64));
                    }
                    failed
                })
            })
            .collect();
        Load {
            stop,
            served,
            threads,
        }
    }

    /// Requests answered so far.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// Waits until `n` more requests than now have been answered.
    pub fn wait_more(&self, n: u64) {
        let target = self.served() + n;
        let deadline = Instant::now() + DEADLINE;
        while self.served() < target {
            assert!(Instant::now() < deadline, "the load stopped being served");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Once 20 more requests are answered, stops the clients and fails the test if any request
    /// failed; how many were answered.
    pub fn end_without_failures(self) -> u64 {
        self.wait_more(20);
        let (served, failed) = self.finish();
        assert!(
            failed.is_empty(),
            "requests failed ({served} answered): {failed:?}"
        );
        served
    }

    /// Stops the clients: how many requests were answered, and the failures (the first 20 of
    /// each client, then how many more).
    pub fn finish(mut self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let failed = std::mem::take(&mut self.threads)
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        (self.served(), failed)
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
