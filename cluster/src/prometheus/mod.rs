//! The metrics endpoint: Prometheus text served by the master, the cluster's own metrics and
//! what every process recorded with the [`metrics`](https://docs.rs/metrics) facade, merged.
//!
//! Each process (the master and every worker) installs a recorder for the facade when the
//! cluster has an endpoint ([`Builder::metrics`](crate::Builder::metrics)). At a scrape the
//! master asks every connected worker for what it recorded (`multiprocess.metrics`, answered
//! by the worker's messenger, whatever its bootstrap does), and merges:
//! - **counters** are added up over the processes (and the workers that left: a sum never
//!   goes down when a worker is replaced);
//! - **gauges** stay one per process, labelled `slot` and `generation` (the master's: `slot`
//!   `"master"`);
//! - **histograms** are merged bucket by bucket: every process counts into the same buckets
//!   ([`Builder::metrics_buckets`](crate::Builder::metrics_buckets)), so the merge is exact.
//!
//! Files: `sample.rs` what a process sends, `registry.rs` the recorder, `families.rs` what
//! is checked and the merge, `text.rs` the format, `scrape.rs` a scrape, `endpoint.rs` the
//! HTTP server. They use the Hub and the supervisor's handle, not the [`Master`](crate::Master).

use crate::error::Error;

#[cfg(feature = "metrics")]
mod endpoint;
#[cfg(feature = "metrics")]
mod families;
#[cfg(feature = "metrics")]
mod registry;
#[cfg(feature = "metrics")]
mod sample;
#[cfg(feature = "metrics")]
mod scrape;
#[cfg(feature = "metrics")]
mod text;

#[cfg(feature = "metrics")]
pub(crate) use endpoint::start;

/// The buckets of the facade's histograms unless the builder says otherwise: Prometheus's
/// defaults, in seconds.
pub(crate) const DEFAULT_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The most buckets a histogram may have (the builder's, and any a worker sends).
pub(crate) const MAX_BUCKETS: usize = 64;

/// Whether histogram bounds can be bounds: finite, and strictly ascending.
pub(crate) fn finite_ascending(bounds: &[f64]) -> bool {
    bounds.iter().all(|b| b.is_finite()) && bounds.windows(2).all(|w| w[0] < w[1])
}

/// Checks the facade's histogram buckets (see [`Builder::metrics_buckets`](crate::Builder)).
pub(crate) fn validate_buckets(b: &[f64]) -> Result<(), Error> {
    if b.is_empty() || b.len() > MAX_BUCKETS || !finite_ascending(b) {
        return Err(Error::Config(format!(
            "metrics buckets {b:?}: between 1 and {MAX_BUCKETS} finite bounds, ascending"
        )));
    }
    Ok(())
}

/// In a worker: answers the master's scrapes with its messenger's calls and, with
/// `with_registry` (not in the master's own process, whose registry the master sends itself),
/// what it records with the facade, through the recorder installed here.
#[cfg(feature = "metrics")]
pub(crate) fn serve_worker(messenger: &messenger::Messenger, buckets: &[f64], with_registry: bool) {
    let registry = if with_registry {
        registry::install(buckets)
    } else {
        None
    };
    // The handler keeps the worker's messenger: a closed messenger forgets its handlers, so
    // this is freed with it.
    let own = messenger.clone();
    messenger.on(move |_: sample::Collect| {
        let sample = registry.as_ref().map(|r| r.sample()).unwrap_or_default();
        let calls = sample::Calls::of(&own);
        async move { sample::Sample { calls, ..sample } }
    });
}
