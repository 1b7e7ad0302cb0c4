//! Waiting for the cluster to be whole: every slot with a Ready worker.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::cluster::Cluster;
use crate::http::probe;
use crate::procfs::{self, now_us};

/// The cluster as it was when it was whole.
pub struct Settled {
    /// The Ready workers, in slot order (as `/map` lists them).
    pub pids: Vec<u32>,
    /// How long it took, µs.
    pub after: u64,
}

/// Waits until `/map` lists `n` distinct pids, `/hello` answers, and the master's children are
/// exactly those pids, none stopped. The error tells what was last seen.
pub fn wait(cluster: &mut Cluster, n: usize, deadline: Duration) -> Result<Settled, String> {
    let start = now_us();
    let mut last = String::from("nothing checked yet");
    let found = poll(deadline, || {
        if let Some(status) = cluster.try_wait() {
            last = format!("the master exited: {status}");
            return Some(None);
        }
        let children = procfs::children(cluster.pid);
        let running: BTreeSet<u32> = children
            .iter()
            .filter(|(_, s)| !s.stopped())
            .map(|p| p.0)
            .collect();
        if children.len() != n || running.len() != n {
            let states: Vec<String> = children
                .iter()
                .map(|(p, s)| format!("{p}:{}", s.state))
                .collect();
            last = format!(
                "the master has {} children (pid:state) {states:?}",
                children.len()
            );
            return None;
        }
        // Only now: a `map` waits for every Ready worker, a stopped one too.
        let pids = match probe(cluster.port, "GET", "/map") {
            Ok(r) => match pids_of(&r.body) {
                Some(p) => p,
                None => {
                    last = format!("GET /map: unexpected body {:?}", r.body);
                    return None;
                }
            },
            Err(e) => {
                last = format!("GET /map: {e}");
                return None;
            }
        };
        let distinct: BTreeSet<u32> = pids.iter().copied().collect();
        if pids.len() != n || distinct != running {
            last = format!("GET /map lists {pids:?}; the master's children are {running:?}");
            return None;
        }
        if let Err(e) = probe(cluster.port, "GET", "/hello") {
            last = format!("GET /hello: {e}");
            return None;
        }
        Some(Some(pids))
    });
    match found {
        Some(Some(pids)) => Ok(Settled {
            pids,
            after: now_us() - start,
        }),
        Some(None) => Err(last),
        None => Err(format!("not within {deadline:?}; last seen: {last}")),
    }
}

fn pids_of(body: &str) -> Option<Vec<u32>> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    v.get("pids")?
        .as_array()?
        .iter()
        .map(|p| p.as_u64().map(|p| p as u32))
        .collect()
}

/// Calls `check` every 100 ms until it returns `Some`, or `deadline` passes (then `None`).
pub fn poll<T>(deadline: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + deadline;
    loop {
        if let Some(x) = check() {
            return Some(x);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
