//! The cluster's metrics merged into families, as the endpoint renders them: series of the
//! same name and labels from many processes added up (counters and histograms) or kept apart
//! by a worker's labels (gauges).
//!
//! What a worker sends is checked once, as it arrives ([`check`]), not trusted: names and
//! label names are made valid (every other character becomes `_`), the `multiprocess_` prefix
//! is the cluster's own, a series has at most [`MAX_LABEL_BYTES`] of labels, a histogram has
//! the builder's buckets, a counter is finite and not negative. Merging, a series is dropped
//! if its type differs from its family's, if its name clashes with a histogram's lines (`x`
//! beside `x_count`, `x_sum` or `x_bucket`), or past [`MAX_FAMILY_SERIES`] series or
//! [`MAX_OUTPUT_BYTES`] of text in all. What is dropped is counted
//! (`multiprocess_metrics_dropped_series`).

use std::collections::{BTreeMap, HashMap};

use super::sample::{Calls, Sample, Series, Value};
use super::text;

/// The most series one scrape renders, and about the most bytes of text.
pub(crate) const MAX_FAMILY_SERIES: usize = 100_000;
pub(crate) const MAX_OUTPUT_BYTES: usize = 32 << 20;
/// The longest name, label name or label value, and the most bytes of labels in a series.
const MAX_TEXT: usize = 1024;
pub(crate) const MAX_LABEL_BYTES: usize = 4096;

/// The prefix of the cluster's own metrics.
pub(crate) const PREFIX: &str = "multiprocess_";

/// The family of the calls that failed, and its help.
const CALL_ERRORS: (&str, &str) = (
    "multiprocess_call_errors_total",
    "Messenger calls that failed, by kind and error code.",
);

/// A histogram's lines: `x_bucket`, `x_sum`, `x_count`.
const HISTOGRAM_SUFFIXES: [&str; 3] = ["_bucket", "_sum", "_count"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Type {
    Counter,
    Gauge,
    Histogram,
}

pub(crate) type Labels = Vec<(String, String)>;

#[derive(Debug)]
pub(crate) struct Family {
    pub kind: Type,
    pub help: Option<String>,
    pub series: BTreeMap<Labels, Value>,
}

/// Every family, by name.
#[derive(Debug, Default)]
pub(crate) struct Families {
    pub map: BTreeMap<String, Family>,
    series: usize,
    bytes: usize,
    pub dropped: u64,
}

impl Families {
    /// Adds one of the cluster's own series (its names are valid and its own).
    pub fn cluster(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: Value) {
        self.put(Series::new(name, labels, value), Some(help));
    }

    /// Adds a process's [`check`]ed sample: its gauges get `worker` labels (which replace any
    /// of the same names), counters and histograms are added up with the other processes'.
    pub fn sample(&mut self, sample: &Sample, worker: &[(&str, &str)]) {
        let help: HashMap<&str, &str> = sample
            .help
            .iter()
            .map(|(name, help)| (name.as_str(), help.as_str()))
            .collect();
        for series in &sample.series {
            let mut series = series.clone();
            if let Value::Gauge(_) = series.value {
                series
                    .labels
                    .retain(|(k, _)| !worker.iter().any(|(w, _)| w == k));
                series.labels.extend(
                    worker
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
                );
            }
            let help = help.get(series.name.as_str()).copied();
            self.put(series, help);
        }
        for calls in &sample.calls {
            self.calls(calls);
        }
    }

    /// A process's calls, as the cluster's own families.
    fn calls(&mut self, calls: &Calls) {
        let kind = calls.kind.as_str();
        self.cluster(
            "multiprocess_calls_total",
            "Messenger calls made, by kind, in every process (failed ones too).",
            &[("kind", kind)],
            Value::Counter(calls.count as f64),
        );
        if kind != messenger::CallKind::Broadcast.name() {
            self.cluster(
                "multiprocess_call_duration_seconds",
                "How long Messenger calls took, by kind, in every process (failed ones too; \
                 broadcasts are not timed).",
                &[("kind", kind)],
                Value::Histogram(calls.latency.clone()),
            );
        }
        for (code, n) in &calls.errors {
            self.cluster(
                CALL_ERRORS.0,
                CALL_ERRORS.1,
                &[("kind", kind), ("code", code)],
                Value::Counter(*n as f64),
            );
        }
    }

    /// Makes sure the family of the calls that failed is there, with its help and type, before
    /// any call failed: an alert on it finds it (with no series) rather than nothing.
    pub fn declare_call_errors(&mut self) {
        let (name, help) = CALL_ERRORS;
        self.map.entry(name.to_owned()).or_insert_with(|| Family {
            kind: Type::Counter,
            help: Some(help.to_owned()),
            series: BTreeMap::new(),
        });
    }

    /// Adds `other`'s counters and histograms (what departed workers counted), where they fit
    /// the families already here.
    pub fn add_totals(&mut self, other: &Families) {
        for (name, family) in &other.map {
            if family.kind == Type::Gauge {
                continue;
            }
            for (labels, value) in &family.series {
                let series = Series {
                    name: name.clone(),
                    labels: labels.clone(),
                    value: value.clone(),
                };
                self.put(series, family.help.as_deref());
            }
        }
        self.dropped += other.dropped;
    }

    fn put(&mut self, mut series: Series, help: Option<&str>) {
        let kind = match series.value {
            Value::Counter(_) => Type::Counter,
            Value::Gauge(_) => Type::Gauge,
            Value::Histogram(ref h) if h.is_valid() => Type::Histogram,
            Value::Histogram(_) => return self.dropped += 1,
        };
        series.labels.sort();
        series.labels.dedup_by(|a, b| a.0 == b.0);
        if !self.map.contains_key(&series.name) && self.clashes(&series.name, kind) {
            return self.dropped += 1;
        }
        let size = text_bytes(&series);
        let full = self.series >= MAX_FAMILY_SERIES || self.bytes + size > MAX_OUTPUT_BYTES;
        if full && !self.map.contains_key(&series.name) {
            return self.dropped += 1;
        }
        let family = self.map.entry(series.name).or_insert_with(|| Family {
            kind,
            help: None,
            series: BTreeMap::new(),
        });
        if family.kind != kind {
            return self.dropped += 1;
        }
        if family.help.is_none() {
            family.help = help.map(str::to_owned);
        }
        match family.series.get_mut(&series.labels) {
            None if full => self.dropped += 1,
            None => {
                family.series.insert(series.labels, series.value);
                self.series += 1;
                self.bytes += size;
            }
            Some(value) => match (value, series.value) {
                (Value::Counter(n), Value::Counter(m)) => *n += m,
                (Value::Gauge(x), Value::Gauge(y)) => *x = y,
                (Value::Histogram(h), Value::Histogram(g)) => {
                    if !h.add(&g) {
                        self.dropped += 1;
                    }
                }
                _ => self.dropped += 1,
            },
        }
    }

    /// Whether a new family `name` of type `kind` would render a line another family renders:
    /// a histogram `x` has the lines `x_bucket`, `x_sum` and `x_count`.
    fn clashes(&self, name: &str, kind: Type) -> bool {
        let histogram_named = |n: &str| {
            self.map
                .get(n)
                .is_some_and(|family| family.kind == Type::Histogram)
        };
        let is_a_line_of_a_histogram = HISTOGRAM_SUFFIXES
            .iter()
            .any(|suffix| name.strip_suffix(suffix).is_some_and(histogram_named));
        let has_a_line_taken = kind == Type::Histogram
            && HISTOGRAM_SUFFIXES
                .iter()
                .any(|suffix| self.map.contains_key(&format!("{name}{suffix}")));
        is_a_line_of_a_histogram || has_a_line_taken
    }
}

/// About how many bytes of text `series` renders to.
fn text_bytes(series: &Series) -> usize {
    let labels: usize = series
        .labels
        .iter()
        .map(|(k, v)| k.len() + v.len() + 4)
        .sum();
    let line = series.name.len() + labels + 40;
    match &series.value {
        Value::Histogram(h) => line * (h.bounds.len() + 3),
        _ => line,
    }
}

/// A sample from a worker as the merge takes it, and how many of its series were left out:
/// every series valid and within bounds (see the module docs), its user histograms in
/// `buckets`, its calls of known kinds and codes, with the messenger's latency buckets.
pub(crate) fn check(sample: Sample, buckets: &[f64]) -> (Sample, u64) {
    let mut dropped = 0;
    let series: Vec<Series> = sample
        .series
        .iter()
        .filter_map(|s| {
            let checked = checked(s, buckets);
            dropped += u64::from(checked.is_none());
            checked
        })
        .collect();
    let help = sample
        .help
        .iter()
        .filter_map(|(name, help)| Some((text::metric_name(&cut(name))?, cut(help))))
        .collect();
    let calls = sample
        .calls
        .into_iter()
        .filter(|c| {
            let known = messenger::CallKind::ALL.iter().any(|k| k.name() == c.kind)
                && c.latency.bounds == messenger::LATENCY_BUCKETS
                && c.latency.is_valid()
                && c.errors
                    .iter()
                    .all(|(code, _)| messenger::Error::CODES.contains(&code.as_str()));
            dropped += u64::from(!known);
            known
        })
        .collect();
    (
        Sample {
            series,
            help,
            calls,
        },
        dropped,
    )
}

/// `series` with a valid name and labels, or `None` if it cannot be one of a worker's.
fn checked(series: &Series, buckets: &[f64]) -> Option<Series> {
    let name = text::metric_name(&cut(&series.name))?;
    if name.starts_with(PREFIX) {
        return None;
    }
    match &series.value {
        // A counter counts up from zero.
        Value::Counter(n) if !(n.is_finite() && *n >= 0.0) => return None,
        Value::Histogram(h) if h.bounds != buckets || !h.is_valid() => return None,
        _ => {}
    }
    let histogram = matches!(series.value, Value::Histogram(_));
    let labels: Labels = series
        .labels
        .iter()
        .filter_map(|(k, v)| Some((text::label_name(&cut(k))?, cut(v))))
        .filter(|(k, _)| !(histogram && k == "le"))
        .collect();
    let bytes: usize = labels.iter().map(|(k, v)| k.len() + v.len()).sum();
    if bytes > MAX_LABEL_BYTES {
        return None;
    }
    Some(Series {
        name,
        labels,
        value: series.value.clone(),
    })
}

/// At most [`MAX_TEXT`] bytes of `s`, cut at a character boundary.
fn cut(s: &str) -> String {
    let mut end = s.len().min(MAX_TEXT);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

#[cfg(test)]
mod tests;
