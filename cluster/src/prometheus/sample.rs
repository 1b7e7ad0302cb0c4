//! One process's metrics as it sends them to the master: series of counters, gauges and
//! histograms, and the help texts they were described with.

use messenger::Event;
use serde::{Deserialize, Serialize};

/// Master -> worker: your metrics, now.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Collect;

impl Event for Collect {
    const NAME: &'static str = "multiprocess.metrics";
    type Reply = Sample;
}

/// One process's metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Sample {
    /// What the process recorded with the `metrics` facade.
    pub series: Vec<Series>,
    /// Help texts, by metric name.
    pub help: Vec<(String, String)>,
    /// What its Messenger's calls took, by kind (the cluster's own metrics, kept apart from
    /// the user's, whose names may not take the cluster's prefix).
    #[serde(default)]
    pub calls: Vec<Calls>,
}

/// What one kind of call took, in one process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Calls {
    /// A [`messenger::CallKind::name`].
    pub kind: String,
    /// How many were made (timed or not).
    pub count: u64,
    /// The timed ones' durations (broadcasts are not timed).
    pub latency: Histogram,
    /// Failures, by [`messenger::Error::code`].
    pub errors: Vec<(String, u64)>,
}

impl Calls {
    /// A Messenger's counts, as sent.
    pub fn of(messenger: &messenger::Messenger) -> Vec<Calls> {
        messenger
            .call_stats()
            .into_iter()
            .map(|c| Calls {
                kind: c.kind.name().to_owned(),
                count: c.count,
                latency: Histogram {
                    bounds: messenger::LATENCY_BUCKETS.to_vec(),
                    counts: c.buckets,
                    sum: c.seconds,
                },
                errors: c
                    .errors
                    .iter()
                    .map(|(k, n)| ((*k).to_owned(), *n))
                    .collect(),
            })
            .collect()
    }
}

/// One series: a metric name, its labels, its value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Series {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum Value {
    /// A float, as Prometheus keeps counters (the facade's are whole numbers).
    Counter(f64),
    Gauge(f64),
    Histogram(Histogram),
}

/// A histogram's counts: how many values fell at or under each bound and over the one before
/// (not cumulative), then how many over the last bound; and their sum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Histogram {
    pub bounds: Vec<f64>,
    pub counts: Vec<u64>,
    pub sum: f64,
}

impl Histogram {
    /// Whether it holds together: finite bounds, strictly ascending, and one count more.
    pub fn is_valid(&self) -> bool {
        self.counts.len() == self.bounds.len() + 1
            && self.bounds.iter().all(|b| b.is_finite())
            && self.bounds.windows(2).all(|w| w[0] < w[1])
    }

    /// Adds `other`'s counts to these: `false` (and nothing added) if its bounds differ.
    pub fn add(&mut self, other: &Histogram) -> bool {
        if self.bounds != other.bounds || !other.is_valid() {
            return false;
        }
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine = mine.saturating_add(*theirs);
        }
        self.sum += other.sum;
        true
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().fold(0u64, |a, &c| a.saturating_add(c))
    }
}

impl Series {
    pub fn new(name: &str, labels: &[(&str, &str)], value: Value) -> Series {
        Series {
            name: name.to_owned(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            value,
        }
    }
}
