//! The cluster's metrics merged into families, as the endpoint renders them: series of the
//! same name and labels from many processes added up (counters and histograms) or kept apart
//! by a worker's labels (gauges).
//!
//! What a worker sends is checked here, not trusted: names and label names are made valid
//! (every other character becomes `_`), the `multiprocess_` prefix is the cluster's own, a
//! series whose type differs from its family's or whose histogram buckets differ from the ones
//! already merged is dropped, and no more than [`MAX_FAMILY_SERIES`] series are kept in all.
//! What is dropped is counted (`multiprocess_metrics_dropped_series`).

use std::collections::BTreeMap;

use super::sample::{Sample, Series, Value};
use super::text;

/// The most series one scrape renders.
pub(crate) const MAX_FAMILY_SERIES: usize = 100_000;
/// The most labels a series keeps, and the longest name or label value.
const MAX_LABELS: usize = 32;
const MAX_TEXT: usize = 1024;

/// The prefix of the cluster's own metrics.
pub(crate) const PREFIX: &str = "multiprocess_";

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
    pub dropped: u64,
}

impl Families {
    /// Adds the cluster's own series (trusted: its names are valid and its own).
    pub fn own(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: Value) {
        self.put(Series::new(name, labels, value), Some(help));
    }

    /// Adds a process's sample: its gauges get `worker` labels (which replace any of the same
    /// names), counters and histograms are added up with the other processes'.
    pub fn sample(&mut self, sample: &Sample, worker: &[(&str, &str)]) {
        for series in &sample.series {
            let Some(mut series) = checked(series) else {
                self.dropped += 1;
                continue;
            };
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
            let help = sample
                .help
                .iter()
                .find(|(name, _)| *name == series.name)
                .map(|(_, help)| cut(help));
            self.put(series, help.as_deref());
        }
    }

    /// Adds `other`'s counters and histograms (what departed workers counted).
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
    }

    fn put(&mut self, mut series: Series, help: Option<&str>) {
        let kind = match series.value {
            Value::Counter(_) => Type::Counter,
            Value::Gauge(_) => Type::Gauge,
            Value::Histogram(ref h) if h.is_valid() => Type::Histogram,
            Value::Histogram(_) => {
                self.dropped += 1;
                return;
            }
        };
        series.labels.sort();
        series.labels.dedup_by(|a, b| a.0 == b.0);
        let full = self.series >= MAX_FAMILY_SERIES;
        if full && !self.map.contains_key(&series.name) {
            self.dropped += 1;
            return;
        }
        let family = self.map.entry(series.name).or_insert_with(|| Family {
            kind,
            help: None,
            series: BTreeMap::new(),
        });
        if family.kind != kind {
            self.dropped += 1;
            return;
        }
        if family.help.is_none() {
            family.help = help.map(str::to_owned);
        }
        match family.series.get_mut(&series.labels) {
            None if full => self.dropped += 1,
            None => {
                family.series.insert(series.labels, series.value);
                self.series += 1;
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
}

/// `series` with a valid name and labels, or `None` if it cannot be one of a worker's: a name
/// of the cluster's own, or one a histogram's rendering would clash with.
fn checked(series: &Series) -> Option<Series> {
    let name = text::metric_name(&cut(&series.name))?;
    if name.starts_with(PREFIX) || series.labels.len() > MAX_LABELS {
        return None;
    }
    if let Value::Counter(n) = series.value {
        // A counter counts up from zero.
        if !(n.is_finite() && n >= 0.0) {
            return None;
        }
    }
    let histogram = matches!(series.value, Value::Histogram(_));
    let labels = series
        .labels
        .iter()
        .filter_map(|(k, v)| Some((text::label_name(&cut(k))?, cut(v))))
        .filter(|(k, _)| !(histogram && k == "le"))
        .collect();
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
mod tests {
    use super::super::sample::Histogram;
    use super::*;

    fn sample(series: Vec<Series>) -> Sample {
        Sample {
            series,
            help: vec![("jobs_total".into(), "Jobs.".into())],
            calls: vec![],
        }
    }

    fn histogram(counts: Vec<u64>, sum: f64) -> Value {
        Value::Histogram(Histogram {
            bounds: vec![0.1, 1.0],
            counts,
            sum,
        })
    }

    #[test]
    fn counters_add_up_gauges_stay_per_worker_histograms_merge() {
        let mut families = Families::default();
        for (slot, n) in [("0", 3), ("1", 4)] {
            let s = sample(vec![
                Series::new("jobs_total", &[("q", "a")], Value::Counter(n as f64)),
                Series::new("queue_len", &[("slot", "forged")], Value::Gauge(n as f64)),
                Series::new("took", &[], histogram(vec![1, n, 0], 1.5)),
            ]);
            families.sample(&s, &[("slot", slot)]);
        }
        let jobs = &families.map["jobs_total"];
        assert_eq!(jobs.help.as_deref(), Some("Jobs."));
        assert_eq!(
            jobs.series.values().collect::<Vec<_>>(),
            [&Value::Counter(7.0)]
        );
        let gauges: Vec<_> = families.map["queue_len"].series.iter().collect();
        assert_eq!(gauges.len(), 2, "{gauges:?}");
        assert_eq!(gauges[0].0, &vec![("slot".to_owned(), "0".to_owned())]);
        let took = families.map["took"].series.values().next().unwrap();
        assert_eq!(took, &histogram(vec![2, 7, 0], 3.0));
        assert_eq!(families.dropped, 0);
    }

    #[test]
    fn what_a_worker_may_not_send_is_dropped_and_counted() {
        let mut families = Families::default();
        let s = sample(vec![
            Series::new("multiprocess_workers", &[], Value::Gauge(1e9)),
            Series::new("x", &[], Value::Counter(1.0)),
            Series::new("x", &[], Value::Gauge(1.0)),
            Series::new("h", &[], histogram(vec![1], 0.0)),
            Series::new("", &[], Value::Counter(1.0)),
            Series::new("bad name-é", &[("bad-label", "v")], Value::Counter(1.0)),
        ]);
        families.sample(&s, &[]);
        assert_eq!(families.dropped, 4);
        let names: Vec<_> = families.map.keys().cloned().collect();
        assert_eq!(names, ["bad_name__", "x"]);
        let labels = families.map["bad_name__"].series.keys().next().unwrap();
        assert_eq!(labels, &vec![("bad_label".to_owned(), "v".to_owned())]);
    }

    #[test]
    fn histograms_with_other_buckets_are_not_merged() {
        let mut families = Families::default();
        families.sample(
            &sample(vec![Series::new("h", &[], histogram(vec![1, 1, 1], 1.0))]),
            &[],
        );
        let other = Value::Histogram(Histogram {
            bounds: vec![0.5],
            counts: vec![1, 1],
            sum: 1.0,
        });
        families.sample(&sample(vec![Series::new("h", &[], other)]), &[]);
        assert_eq!(families.dropped, 1);
        assert_eq!(
            families.map["h"].series.values().next(),
            Some(&histogram(vec![1, 1, 1], 1.0))
        );
    }
}
