//! A scrape: the cluster's own metrics read in the master (the supervisor's status, the Hub's
//! counts, `/proc`), and every process's sample, merged.
//!
//! Every connected worker is asked for its sample at once, each within the scrape's deadline;
//! one that does not answer in time is counted (`multiprocess_metrics_unanswered`) and its last
//! sample stands in. A worker that has left (exited, replaced) leaves its counters and
//! histograms behind: they stay in the sums, so that a sum never goes down when a worker is
//! replaced (what it counted after the last scrape before it left is lost).

use std::collections::HashMap;
use std::time::Duration;

use messenger::{CallKind, Error as CallError, WorkerId};

use super::families::{Families, MAX_FAMILY_SERIES};
use super::registry::{Registry, MAX_SERIES};
use super::sample::{Calls, Collect, Sample, Value};
use super::text;
use crate::procfs::ProcStat;
use crate::status::WorkerState;
use crate::Master;

/// What a scrape keeps from one to the next.
pub(crate) struct Scraper {
    master: Master,
    /// The master's own registry, if the cluster's recorder is the master's.
    registry: Option<std::sync::Arc<Registry>>,
    /// How long a worker has to answer.
    deadline: Duration,
    /// Each connected worker's last sample.
    last: HashMap<WorkerId, Sample>,
    /// The counters and histograms of the workers that left.
    left: Families,
}

impl Scraper {
    pub fn new(
        master: Master,
        registry: Option<std::sync::Arc<Registry>>,
        deadline: Duration,
    ) -> Scraper {
        Scraper {
            master,
            registry,
            deadline,
            last: HashMap::new(),
            left: Families::default(),
        }
    }

    /// The metrics, rendered.
    pub async fn scrape(&mut self) -> String {
        let hub = self.master.hub().stats();
        let ids: Vec<WorkerId> = hub.peers.iter().map(|p| p.id).collect();
        let asked = ids.iter().map(|&id| {
            let hub = self.master.hub();
            let deadline = self.deadline;
            async move { tokio::time::timeout(deadline, hub.request_worker(id, Collect)).await }
        });
        let answers = futures_util::future::join_all(asked).await;
        let mut unanswered = 0u64;
        for (&id, answer) in ids.iter().zip(answers) {
            match answer {
                Ok(Ok(mut sample)) => {
                    sample.series.truncate(MAX_SERIES);
                    sample.help.truncate(MAX_SERIES);
                    sample.calls.truncate(CallKind::ALL.len());
                    self.last.insert(id, sample);
                }
                _ => unanswered += 1,
            }
        }
        let gone: Vec<WorkerId> = self
            .last
            .keys()
            .filter(|id| !ids.contains(id))
            .copied()
            .collect();
        for id in gone {
            if let Some(sample) = self.last.remove(&id) {
                let mut counts = Families::default();
                add_sample(&mut counts, &sample, &[]);
                self.left.add_totals(&counts);
            }
        }

        let mut out = Families::default();
        self.own(&mut out, &hub).await;
        out.own(
            "multiprocess_metrics_unanswered",
            "Workers that did not answer this scrape in time (their last sample stands in).",
            &[],
            Value::Gauge(unanswered as f64),
        );
        out.add_totals(&self.left);
        let mut workers: Vec<_> = self.last.iter().collect();
        workers.sort_by_key(|(id, _)| **id);
        for (id, sample) in workers {
            let (slot, generation) = (id.slot.to_string(), id.generation.to_string());
            add_sample(
                &mut out,
                sample,
                &[("slot", &slot), ("generation", &generation)],
            );
        }
        let master = Sample {
            series: self
                .registry
                .as_ref()
                .map(|r| r.sample().series)
                .unwrap_or_default(),
            help: self
                .registry
                .as_ref()
                .map(|r| r.sample().help)
                .unwrap_or_default(),
            calls: Calls::of(self.master.messenger()),
        };
        add_sample(&mut out, &master, &[("slot", "master")]);
        let dropped = out.dropped;
        out.own(
            "multiprocess_metrics_dropped_series",
            &format!(
                "Series left out of this scrape: invalid, of another type than their family's, \
                 or past {MAX_FAMILY_SERIES} in all."
            ),
            &[],
            Value::Gauge(dropped as f64),
        );
        text::render(&out)
    }

    /// The cluster's own metrics, as the master knows them.
    async fn own(&self, out: &mut Families, hub: &messenger::HubStats) {
        let Ok(status) = self.master.status().await else {
            return;
        };
        let mut by_state = [0u64; 3];
        let mut pids = Vec::new();
        for slot in &status.slots {
            for w in &slot.workers {
                let at = match w.state {
                    WorkerState::Starting => 0,
                    WorkerState::Ready => 1,
                    _ => 2,
                };
                by_state[at] += 1;
                pids.push((WorkerId::new(slot.slot, w.generation), w.pid));
            }
        }
        for (state, n) in ["starting", "ready", "draining"].iter().zip(by_state) {
            out.own(
                "multiprocess_workers",
                "Worker processes, by state.",
                &[("state", state)],
                Value::Gauge(n as f64),
            );
        }
        out.own(
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
            let labels = [("cause", cause)];
            let n = Value::Counter(n as f64);
            out.own("multiprocess_restarts_total", restarts, &labels, n);
        }
        for (outcome, n) in [
            ("succeeded", t.reloads_succeeded),
            ("failed", t.reloads_failed),
        ] {
            out.own(
                "multiprocess_reloads_total",
                "Rolling reloads, by outcome.",
                &[("outcome", outcome)],
                Value::Counter(n as f64),
            );
        }
        for (kind, n) in &hub.routed {
            out.own(
                "multiprocess_messages_routed_total",
                "Frames the Hub routed, by kind (a request by the call it is).",
                &[("kind", kind)],
                Value::Counter(*n as f64),
            );
        }
        for peer in &hub.peers {
            let (slot, generation) = (peer.id.slot.to_string(), peer.id.generation.to_string());
            let labels = [("slot", slot.as_str()), ("generation", generation.as_str())];
            out.own(
                "multiprocess_queued_frames",
                "Frames the Hub holds for a worker, not yet written to it.",
                &labels,
                Value::Gauge(peer.queued_frames as f64),
            );
            out.own(
                "multiprocess_queued_bytes",
                "Bytes of the frames the Hub holds for a worker.",
                &labels,
                Value::Gauge(peer.queued_bytes as f64),
            );
            out.own(
                "multiprocess_messages_delivered_total",
                "Calls and broadcasts the Hub gave a worker.",
                &labels,
                Value::Counter(peer.delivered as f64),
            );
        }
        pids.push((WorkerId::new(u32::MAX, 0), std::process::id()));
        let read = tokio::task::spawn_blocking(move || {
            pids.into_iter()
                .filter_map(|(id, pid)| Some((id, ProcStat::read(pid)?)))
                .collect::<Vec<_>>()
        });
        for (id, stat) in read.await.unwrap_or_default() {
            let (slot, generation) = (id.slot.to_string(), id.generation.to_string());
            let labels: &[(&str, &str)] = if id.slot == u32::MAX {
                &[("slot", "master")]
            } else {
                &[("slot", &slot), ("generation", &generation)]
            };
            out.own(
                "multiprocess_resident_memory_bytes",
                "Resident memory of each process (the master's slot is \"master\").",
                labels,
                Value::Gauge(stat.rss_bytes as f64),
            );
            out.own(
                "multiprocess_cpu_seconds_total",
                "CPU time (user and system) of each process.",
                labels,
                Value::Counter(stat.cpu_seconds),
            );
        }
    }
}

/// Adds a process's sample: the user's series, and its calls as the cluster's own families.
fn add_sample(out: &mut Families, sample: &Sample, worker: &[(&str, &str)]) {
    out.sample(sample, worker);
    for calls in &sample.calls {
        let Some(kind) = CallKind::ALL.iter().find(|k| k.name() == calls.kind) else {
            out.dropped += 1;
            continue;
        };
        out.own(
            "multiprocess_calls_total",
            "Messenger calls made, by kind, in every process (failed ones too).",
            &[("kind", kind.name())],
            Value::Counter(calls.count as f64),
        );
        if *kind != CallKind::Broadcast {
            out.own(
                "multiprocess_call_duration_seconds",
                "How long Messenger calls took, by kind, in every process (failed ones too; \
                 broadcasts are not timed).",
                &[("kind", kind.name())],
                Value::Histogram(calls.latency.clone()),
            );
        }
        for (code, n) in &calls.errors {
            let Some(code) = CallError::CODES.iter().find(|c| *c == code) else {
                out.dropped += 1;
                continue;
            };
            out.own(
                "multiprocess_call_errors_total",
                "Messenger calls that failed, by kind and error code.",
                &[("kind", kind.name()), ("code", code)],
                Value::Counter(*n as f64),
            );
        }
    }
}
