//! A scrape: the cluster's own metrics read in the master (the supervisor's status, the Hub's
//! counts, `/proc`), and every process's sample, merged.
//!
//! Every connected worker is asked for its sample at once, each within the scrape's deadline;
//! one that does not answer in time is counted (`multiprocess_metrics_unanswered`) and its last
//! sample stands in. A worker that has left (exited, replaced) leaves its counters and
//! histograms behind: they stay in the sums, so that a sum never goes down when a worker is
//! replaced (what it counted after the last scrape before it left is lost). They are merged
//! last, where they fit what the live processes send: a live process's series always wins.
//!
//! Checking, merging and rendering run on tokio's blocking pool: the master's own thread routes
//! every worker's messages and must not wait for a large scrape.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use messenger::{Hub, HubStats, WorkerId};

use super::families::{check, Families, MAX_FAMILY_SERIES, MAX_OUTPUT_BYTES};
use super::registry::Registry;
use super::sample::{Calls, Collect, Sample, Value};
use super::text;
use crate::procfs::ProcStat;
use crate::status::{Status, WorkerState};
use crate::supervisor;

/// What a scrape keeps from one to the next.
#[derive(Default)]
struct Kept {
    /// Each connected worker's last sample, checked.
    last: HashMap<WorkerId, Sample>,
    /// The counters and histograms of the workers that left.
    left: Families,
}

/// Which process a `/proc` reading is of.
#[derive(Clone, Copy)]
enum Process {
    Master,
    Worker(WorkerId),
}

pub(crate) struct Scraper {
    hub: Hub,
    supervisor: supervisor::Handle,
    /// This process's registry, if the cluster's recorder is the one installed.
    registry: Option<Arc<Registry>>,
    /// The buckets every process's facade histograms count into.
    buckets: Arc<[f64]>,
    /// How long a worker has to answer.
    deadline: Duration,
    /// Taken by the scrape under way (on the blocking pool) and put back.
    kept: Option<Kept>,
}

impl Scraper {
    pub fn new(
        hub: Hub,
        supervisor: supervisor::Handle,
        registry: Option<Arc<Registry>>,
        buckets: &[f64],
        deadline: Duration,
    ) -> Scraper {
        Scraper {
            hub,
            supervisor,
            registry,
            buckets: buckets.into(),
            deadline,
            kept: Some(Kept::default()),
        }
    }

    /// The metrics, rendered.
    pub async fn scrape(&mut self) -> String {
        let hub = self.hub.stats();
        let status = self.supervisor.status().await.ok();
        let asked = hub.peers.iter().map(|peer| {
            let (hub, id, deadline) = (self.hub.clone(), peer.id, self.deadline);
            async move {
                let answer = tokio::time::timeout(deadline, hub.request_worker(id, Collect)).await;
                (id, answer.ok().and_then(Result::ok))
            }
        });
        let answers = futures_util::future::join_all(asked).await;
        let master = Sample {
            calls: Calls::of(&self.hub.messenger()),
            ..self
                .registry
                .as_ref()
                .map(|r| r.sample())
                .unwrap_or_default()
        };
        let buckets = self.buckets.clone();
        let mut kept = self.kept.take().unwrap_or_default();
        let merged = tokio::task::spawn_blocking(move || {
            let text = merge(&mut kept, answers, master, status, &hub, &buckets);
            (text, kept)
        })
        .await;
        match merged {
            Ok((text, kept)) => {
                self.kept = Some(kept);
                text
            }
            // A panic in the merge: what was kept is lost, the next scrape starts afresh.
            Err(e) => format!("# the scrape failed: {e}\n"),
        }
    }
}

/// Takes in the workers' answers, and renders everything.
fn merge(
    kept: &mut Kept,
    answers: Vec<(WorkerId, Option<Sample>)>,
    master: Sample,
    status: Option<Status>,
    hub: &HubStats,
    buckets: &[f64],
) -> String {
    let mut dropped = 0;
    let mut unanswered = 0u64;
    let connected: Vec<WorkerId> = answers.iter().map(|(id, _)| *id).collect();
    for (id, answer) in answers {
        match answer {
            Some(sample) => {
                let (sample, left_out) = check(sample, buckets);
                dropped += left_out;
                kept.last.insert(id, sample);
            }
            None => unanswered += 1,
        }
    }
    let gone: Vec<WorkerId> = kept
        .last
        .keys()
        .filter(|id| !connected.contains(id))
        .copied()
        .collect();
    for id in gone {
        if let Some(sample) = kept.last.remove(&id) {
            let mut counts = Families::default();
            counts.sample(&sample, &[]);
            kept.left.add_totals(&counts);
        }
    }

    let mut out = Families::default();
    if let Some(status) = &status {
        cluster(&mut out, status, hub);
    }
    let mut workers: Vec<_> = kept.last.iter().collect();
    workers.sort_by_key(|(id, _)| **id);
    for (id, sample) in workers {
        let (slot, generation) = (id.slot.to_string(), id.generation.to_string());
        out.sample(sample, &[("slot", &slot), ("generation", &generation)]);
    }
    let (master, left_out) = check(master, buckets);
    dropped += left_out;
    out.sample(&master, &[("slot", "master")]);
    out.add_totals(&kept.left);
    out.declare_call_errors();
    out.cluster(
        "multiprocess_metrics_unanswered",
        "Workers that did not answer this scrape in time (their last sample stands in).",
        &[],
        Value::Gauge(unanswered as f64),
    );
    let dropped = dropped + out.dropped;
    out.cluster(
        "multiprocess_metrics_dropped_series",
        &format!(
            "Series left out of this scrape: invalid, of another type than their family's, \
             clashing with a histogram's lines, or past {MAX_FAMILY_SERIES} series or \
             {MAX_OUTPUT_BYTES} bytes in all."
        ),
        &[],
        Value::Gauge(dropped as f64),
    );
    text::render(&out)
}

/// The cluster's own metrics, as the master knows them.
fn cluster(out: &mut Families, status: &Status, hub: &HubStats) {
    let mut by_state = [0u64; 3];
    let master_pid = std::process::id();
    let mut procs = vec![(Process::Master, master_pid)];
    for slot in status.all_slots() {
        for w in &slot.workers {
            let at = match w.state {
                WorkerState::Starting => 0,
                WorkerState::Ready => 1,
                _ => 2,
            };
            by_state[at] += 1;
            // A worker in the master's process (single-process mode) is the master's reading.
            if w.pid != master_pid {
                procs.push((
                    Process::Worker(WorkerId::new(slot.slot, w.generation)),
                    w.pid,
                ));
            }
        }
    }
    for (state, n) in ["starting", "ready", "draining"].iter().zip(by_state) {
        out.cluster(
            "multiprocess_workers",
            "Worker processes, by state.",
            &[("state", state)],
            Value::Gauge(n as f64),
        );
    }
    out.cluster(
        "multiprocess_slots",
        "Worker slots.",
        &[],
        Value::Gauge(status.slots.len() as f64),
    );
    let t = &status.totals;
    let restarts = "Workers started in place of another, by why: it exited unasked, was \
                    unhealthy, or was recycled.";
    for (cause, n) in [
        ("exited", t.restarts_exited),
        ("unhealthy", t.restarts_unhealthy),
        ("recycled", t.restarts_recycled),
    ] {
        let n = Value::Counter(n as f64);
        out.cluster(
            "multiprocess_restarts_total",
            restarts,
            &[("cause", cause)],
            n,
        );
    }
    for (outcome, n) in [
        ("succeeded", t.reloads_succeeded),
        ("failed", t.reloads_failed),
    ] {
        out.cluster(
            "multiprocess_reloads_total",
            "Rolling reloads, by outcome.",
            &[("outcome", outcome)],
            Value::Counter(n as f64),
        );
    }
    for (kind, n) in &hub.routed {
        out.cluster(
            "multiprocess_messages_routed_total",
            "Frames the Hub routed, by kind (a request by the call it is).",
            &[("kind", kind)],
            Value::Counter(*n as f64),
        );
    }
    for peer in &hub.peers {
        let (slot, generation) = (peer.id.slot.to_string(), peer.id.generation.to_string());
        let labels = [("slot", slot.as_str()), ("generation", generation.as_str())];
        out.cluster(
            "multiprocess_queued_frames",
            "Frames the Hub holds for a worker, not yet written to it.",
            &labels,
            Value::Gauge(peer.queued_frames as f64),
        );
        out.cluster(
            "multiprocess_queued_bytes",
            "Bytes of the frames the Hub holds for a worker.",
            &labels,
            Value::Gauge(peer.queued_bytes as f64),
        );
        out.cluster(
            "multiprocess_messages_delivered_total",
            "Calls and broadcasts the Hub gave a worker.",
            &labels,
            Value::Counter(peer.delivered as f64),
        );
    }
    for (process, pid) in procs {
        let Some(stat) = ProcStat::read(pid) else {
            continue;
        };
        let (slot, generation) = match process {
            Process::Master => ("master".to_owned(), None),
            Process::Worker(id) => (id.slot.to_string(), Some(id.generation.to_string())),
        };
        let mut labels = vec![("slot", slot.as_str())];
        labels.extend(generation.as_deref().map(|g| ("generation", g)));
        out.cluster(
            "multiprocess_resident_memory_bytes",
            "Resident memory of each process (the master's slot is \"master\").",
            &labels,
            Value::Gauge(stat.rss_bytes as f64),
        );
        out.cluster(
            "multiprocess_cpu_seconds_total",
            "CPU time (user and system) of each process.",
            &labels,
            Value::Counter(stat.cpu_seconds),
        );
    }
}
