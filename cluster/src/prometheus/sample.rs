//! One process's metrics as it sends them to the master: series of counters, gauges and
//! histograms, the help texts they were described with, and its calls.
//!
//! What comes from a worker is bounded as it is decoded: a list longer than a well-behaved
//! process ever sends (its registry holds at most [`MAX_SERIES`] series) fails the whole
//! sample, which the scrape counts as unanswered.

use std::fmt;
use std::marker::PhantomData;

use messenger::Event;
use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::registry::MAX_SERIES;
use super::{finite_ascending, MAX_BUCKETS};

/// The most labels a series has.
pub(crate) const MAX_LABELS: usize = 32;

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
    #[serde(deserialize_with = "at_most::<_, _, MAX_SERIES>")]
    pub series: Vec<Series>,
    /// Help texts, by metric name.
    #[serde(deserialize_with = "at_most::<_, _, MAX_SERIES>")]
    pub help: Vec<(String, String)>,
    /// What its Messenger's calls took, by kind (the cluster's own metrics, kept apart from
    /// the user's, whose names may not take the cluster's prefix).
    #[serde(default, deserialize_with = "at_most::<_, _, 16>")]
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
    #[serde(deserialize_with = "at_most::<_, _, 32>")]
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
    #[serde(deserialize_with = "at_most::<_, _, MAX_LABELS>")]
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
    #[serde(deserialize_with = "at_most::<_, _, MAX_BUCKETS>")]
    pub bounds: Vec<f64>,
    #[serde(deserialize_with = "at_most::<_, _, { MAX_BUCKETS + 1 }>")]
    pub counts: Vec<u64>,
    pub sum: f64,
}

impl Histogram {
    /// Whether it holds together: finite bounds, strictly ascending, and one count more.
    pub fn is_valid(&self) -> bool {
        self.counts.len() == self.bounds.len() + 1 && finite_ascending(&self.bounds)
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

/// A list of at most `N` elements: a longer one is an error as soon as its `N + 1`th element
/// comes, before it is decoded.
fn at_most<'de, D, T, const N: usize>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct AtMost<T, const N: usize>(PhantomData<T>);

    impl<'de, T: Deserialize<'de>, const N: usize> Visitor<'de> for AtMost<T, N> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a list of at most {N} elements")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(N).min(1024));
            while let Some(element) = seq.next_element()? {
                if out.len() == N {
                    return Err(serde::de::Error::custom(format!("more than {N} elements")));
                }
                out.push(element);
            }
            Ok(out)
        }
    }

    deserializer.deserialize_seq(AtMost::<T, N>(PhantomData))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_over_its_bound_fails_the_sample() {
        let labels: Vec<(String, String)> = (0..MAX_LABELS + 1)
            .map(|i| (format!("l{i}"), String::new()))
            .collect();
        let series = Series {
            name: "x".into(),
            labels,
            value: Value::Counter(1.0),
        };
        let sample = Sample {
            series: vec![series.clone()],
            ..Sample::default()
        };
        let bytes = rmp_serde::to_vec_named(&sample).unwrap();
        let err = rmp_serde::from_slice::<Sample>(&bytes).unwrap_err();
        assert!(err.to_string().contains("more than 32"), "{err}");
        let mut fits = series;
        fits.labels.pop();
        let sample = Sample {
            series: vec![fits],
            ..Sample::default()
        };
        let bytes = rmp_serde::to_vec_named(&sample).unwrap();
        assert_eq!(rmp_serde::from_slice::<Sample>(&bytes).unwrap(), sample);
    }
}
