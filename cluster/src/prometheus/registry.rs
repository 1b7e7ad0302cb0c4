//! The `metrics` facade's recorder in each process: counters, gauges and histograms kept in
//! atomics, read into a [`Sample`] when the master asks.
//!
//! Histograms count into fixed buckets (the builder's
//! [`metrics_buckets`](crate::Builder::metrics_buckets), the same in every process), so that
//! the master adds them up exactly. The registry holds at most [`MAX_SERIES`] series: past
//! that, a new one records nowhere (logged once), so that a label with unbounded values costs
//! bounded memory.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use metrics::{
    Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};

use super::sample::{self, Sample, Series, Value};

/// The most series a process's registry keeps.
pub(crate) const MAX_SERIES: usize = 10_000;

#[derive(Clone)]
enum Handle {
    Counter(Arc<AtomicU64>),
    /// An `f64`, as its bits.
    Gauge(Arc<AtomicU64>),
    Histogram(Arc<Buckets>),
}

/// A histogram's storage.
struct Buckets {
    bounds: Arc<[f64]>,
    counts: Box<[AtomicU64]>,
    /// An `f64`, as its bits.
    sum: AtomicU64,
}

impl HistogramFn for Buckets {
    fn record(&self, value: f64) {
        if value.is_nan() {
            return;
        }
        // The first bucket whose bound is at least the value (`le`), else the last.
        let at = self.bounds.partition_point(|&b| b < value);
        self.counts[at].fetch_add(1, Ordering::Relaxed);
        let _ = self
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + value).to_bits())
            });
    }
}

/// What one process recorded.
pub(crate) struct Registry {
    series: RwLock<HashMap<Key, Handle>>,
    help: Mutex<BTreeMap<String, String>>,
    bounds: Arc<[f64]>,
    full: AtomicBool,
}

impl Registry {
    pub fn new(bounds: &[f64]) -> Registry {
        Registry {
            series: RwLock::default(),
            help: Mutex::default(),
            bounds: bounds.into(),
            full: AtomicBool::new(false),
        }
    }

    /// The handle for `key`, registered as `make` makes it if new; `None` if `key` is a
    /// metric of another type, or the registry is full.
    fn handle(&self, key: &Key, make: impl FnOnce() -> Handle) -> Option<Handle> {
        if let Some(handle) = read(&self.series).get(key) {
            return Some(handle.clone());
        }
        let mut series = self.series.write().unwrap_or_else(|e| e.into_inner());
        if let Some(handle) = series.get(key) {
            return Some(handle.clone());
        }
        if series.len() >= MAX_SERIES {
            if !self.full.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "this process recorded {MAX_SERIES} metric series: new ones (first: {}) are \
                     not kept (a label with too many values?)",
                    key.name()
                );
            }
            return None;
        }
        let handle = make();
        series.insert(key.clone(), handle.clone());
        Some(handle)
    }

    fn describe(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        let mut text = description.into_owned();
        if let Some(unit) = unit {
            text = format!("{text} ({})", unit.as_str());
        }
        let mut help = self.help.lock().unwrap_or_else(|e| e.into_inner());
        if help.len() < MAX_SERIES || help.contains_key(key.as_str()) {
            help.insert(key.as_str().to_owned(), text);
        }
    }

    /// Everything recorded so far.
    pub fn sample(&self) -> Sample {
        let series = read(&self.series)
            .iter()
            .map(|(key, handle)| Series {
                name: key.name().to_owned(),
                labels: key
                    .labels()
                    .map(|l| (l.key().to_owned(), l.value().to_owned()))
                    .collect(),
                value: match handle {
                    Handle::Counter(n) => Value::Counter(n.load(Ordering::Relaxed) as f64),
                    Handle::Gauge(bits) => {
                        Value::Gauge(f64::from_bits(bits.load(Ordering::Relaxed)))
                    }
                    Handle::Histogram(h) => Value::Histogram(sample::Histogram {
                        bounds: h.bounds.to_vec(),
                        counts: h.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect(),
                        sum: f64::from_bits(h.sum.load(Ordering::Relaxed)),
                    }),
                },
            })
            .collect();
        let help = self.help.lock().unwrap_or_else(|e| e.into_inner());
        Sample {
            series,
            help: help.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            calls: Vec::new(),
        }
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

/// The recorder installed as the process's global one: the registry it records into.
struct Installed(Arc<Registry>);

impl Recorder for Installed {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.0.describe(key, unit, description)
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.0.describe(key, unit, description)
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.0.describe(key, unit, description)
    }

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        match self.0.handle(key, || Handle::Counter(Arc::default())) {
            Some(Handle::Counter(n)) => Counter::from_arc(n),
            _ => Counter::noop(),
        }
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        match self.0.handle(key, || Handle::Gauge(Arc::default())) {
            Some(Handle::Gauge(bits)) => Gauge::from_arc(bits),
            _ => Gauge::noop(),
        }
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        let bounds = self.0.bounds.clone();
        let make = || {
            Handle::Histogram(Arc::new(Buckets {
                counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
                bounds,
                sum: AtomicU64::new(0f64.to_bits()),
            }))
        };
        match self.0.handle(key, make) {
            Some(Handle::Histogram(h)) => Histogram::from_arc(h),
            _ => Histogram::noop(),
        }
    }
}

static GLOBAL: OnceLock<Option<Arc<Registry>>> = OnceLock::new();

/// Installs this process's registry as the `metrics` facade's global recorder, once; `None` if
/// another recorder was installed first (the process's own metrics are then not exported).
pub(crate) fn install(bounds: &[f64]) -> Option<Arc<Registry>> {
    GLOBAL
        .get_or_init(|| {
            let registry = Arc::new(Registry::new(bounds));
            match metrics::set_global_recorder(Installed(registry.clone())) {
                Ok(()) => Some(registry),
                Err(_) => {
                    tracing::warn!(
                        "a `metrics` recorder was installed before the cluster's: what this \
                         process records is not on the master's metrics endpoint"
                    );
                    None
                }
            }
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorder() -> (Arc<Registry>, Installed) {
        let registry = Arc::new(Registry::new(&[0.1, 1.0]));
        (registry.clone(), Installed(registry))
    }

    fn value(sample: &Sample, name: &str) -> Value {
        sample
            .series
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.value.clone())
            .unwrap_or_else(|| panic!("no {name} in {sample:?}"))
    }

    #[test]
    fn records_each_type() {
        let (registry, recorder) = recorder();
        metrics::with_local_recorder(&recorder, || {
            metrics::counter!("jobs_total", "queue" => "a").increment(3);
            metrics::counter!("jobs_total", "queue" => "a").increment(2);
            metrics::gauge!("temperature").set(21.5);
            metrics::gauge!("temperature").decrement(1.5);
            for v in [0.05, 0.1, 0.5, 7.0, f64::NAN] {
                metrics::histogram!("took_seconds").record(v);
            }
            metrics::describe_counter!("jobs_total", "Jobs done.");
        });
        let sample = registry.sample();
        assert_eq!(value(&sample, "jobs_total"), Value::Counter(5.0));
        assert_eq!(value(&sample, "temperature"), Value::Gauge(20.0));
        let Value::Histogram(h) = value(&sample, "took_seconds") else {
            panic!()
        };
        // 0.05 and 0.1 are at most 0.1 (le is inclusive); NaN is not recorded.
        assert_eq!(h.counts, vec![2, 1, 1]);
        assert!((h.sum - 7.65).abs() < 1e-9);
        assert_eq!(
            sample.help,
            vec![("jobs_total".into(), "Jobs done.".into())]
        );
        let labels = &sample
            .series
            .iter()
            .find(|s| s.name == "jobs_total")
            .unwrap()
            .labels;
        assert_eq!(labels, &vec![("queue".into(), "a".into())]);
    }

    #[test]
    fn a_name_keeps_its_first_type() {
        let (registry, recorder) = recorder();
        metrics::with_local_recorder(&recorder, || {
            metrics::counter!("x").increment(1);
            metrics::gauge!("x").set(5.0);
        });
        assert_eq!(registry.sample().series.len(), 1);
        assert_eq!(value(&registry.sample(), "x"), Value::Counter(1.0));
    }

    #[test]
    fn series_are_bounded() {
        let (registry, recorder) = recorder();
        metrics::with_local_recorder(&recorder, || {
            for i in 0..MAX_SERIES + 10 {
                metrics::counter!("hits_total", "id" => i.to_string()).increment(1);
            }
        });
        assert_eq!(registry.sample().series.len(), MAX_SERIES);
    }
}
