//! What a Messenger's calls took, and what the Hub routed: counts an operator reads (the
//! cluster's metrics endpoint renders them in the Prometheus format).
//!
//! A Messenger counts every call it makes, by [`CallKind`]: how many, how many failed, by the
//! [`Error::code`] of their error, and, with [`Config::time_calls`](crate::Config::time_calls),
//! how long each took (in fixed buckets, the same in every process, so that the counts of many
//! processes add up to exactly what one histogram of all of them would hold). Counting costs a
//! call one relaxed atomic addition; timing, a clock read and two more.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::wire::{Envelope, Kind, Target};
use crate::{Error, PeerState, WorkerId};

/// What kind of call a Messenger made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum CallKind {
    /// [`Messenger::broadcast`](crate::Messenger::broadcast): counted, not timed (it is over
    /// once queued, and a clock read would cost the messenger's fastest path).
    Broadcast,
    /// [`Messenger::consume`](crate::Messenger::consume).
    Consume,
    /// [`Messenger::consume_once`](crate::Messenger::consume_once).
    ConsumeOnce,
    /// [`Messenger::request`](crate::Messenger::request): to a slot.
    Request,
    /// [`Messenger::request_master`](crate::Messenger::request_master).
    RequestMaster,
    /// The master's own orders to one worker by id: heartbeats, drain orders, the collection
    /// of its metrics. The cluster's housekeeping, never a call of the service's code (which
    /// has no way to address a worker by id).
    Control,
    /// [`Messenger::map`](crate::Messenger::map) and `map_each`.
    Map,
}

impl CallKind {
    /// Every kind, in order.
    pub const ALL: [CallKind; 7] = [
        CallKind::Broadcast,
        CallKind::Consume,
        CallKind::ConsumeOnce,
        CallKind::Request,
        CallKind::RequestMaster,
        CallKind::Control,
        CallKind::Map,
    ];

    /// The kind of call a request to `to` is; `None` for a target no call names.
    pub(crate) fn of(to: Target) -> Option<CallKind> {
        Some(match to {
            Target::Any => CallKind::Consume,
            Target::Once => CallKind::ConsumeOnce,
            Target::Slot(_) => CallKind::Request,
            Target::Master => CallKind::RequestMaster,
            Target::All { .. } => CallKind::Map,
            Target::Worker(_) => CallKind::Control,
            Target::Hub | Target::Remote { .. } => return None,
        })
    }

    /// Its name, as a metric label: `broadcast`, `consume`, `consume_once`, `request`,
    /// `request_master`, `control`, `map`.
    pub fn name(self) -> &'static str {
        match self {
            CallKind::Broadcast => "broadcast",
            CallKind::Consume => "consume",
            CallKind::ConsumeOnce => "consume_once",
            CallKind::Request => "request",
            CallKind::RequestMaster => "request_master",
            CallKind::Control => "control",
            CallKind::Map => "map",
        }
    }
}

/// The upper bounds of the call latency buckets, in seconds; one more bucket takes the rest
/// (`+Inf`).
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0,
];

/// What the calls of one kind took, since the Messenger started.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct CallStats {
    /// The kind of call.
    pub kind: CallKind,
    /// How many were made (the failed ones too).
    pub count: u64,
    /// The durations of the timed ones added up, in seconds.
    pub seconds: f64,
    /// How many timed ones took at most each of [`LATENCY_BUCKETS`] and more than the one
    /// before it, then how many took longer than the last (`LATENCY_BUCKETS.len() + 1`
    /// numbers, not cumulative). All zero for broadcasts, which are never timed, and for every
    /// kind unless [`Config::time_calls`](crate::Config::time_calls).
    pub buckets: Vec<u64>,
    /// How many failed, by [`Error::code`] (only the codes seen).
    pub errors: Vec<(&'static str, u64)>,
}

const BUCKETS: usize = LATENCY_BUCKETS.len() + 1;

/// [`LATENCY_BUCKETS`] in nanoseconds, to place a call without a float conversion.
const BOUNDS_NANOS: [u64; LATENCY_BUCKETS.len()] = [
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
];

/// The counts of one kind of call.
#[derive(Default)]
struct Cells {
    buckets: [AtomicU64; BUCKETS],
    nanos: AtomicU64,
    /// Calls counted, not timed.
    untimed: AtomicU64,
    errors: [AtomicU64; Error::CODES.len()],
}

/// A Messenger's counts, shared by its clones.
#[derive(Default)]
pub(crate) struct Calls {
    kinds: [Cells; CallKind::ALL.len()],
}

impl Calls {
    /// Counts one call of `kind` that took `took` and ended in `error`, if it failed.
    pub fn record(&self, kind: CallKind, took: Duration, error: Option<&Error>) {
        let cells = &self.kinds[kind as usize];
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BOUNDS_NANOS
            .iter()
            .position(|&upper| nanos <= upper)
            .unwrap_or(BOUNDS_NANOS.len());
        cells.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        cells.nanos.fetch_add(nanos, Ordering::Relaxed);
        if let Some(error) = error {
            self.failed(cells, error);
        }
    }

    /// Counts one call of `kind` that is not timed (a broadcast, or any call unless
    /// [`Config::time_calls`](crate::Config::time_calls)).
    pub fn count(&self, kind: CallKind, error: Option<&Error>) {
        let cells = &self.kinds[kind as usize];
        cells.untimed.fetch_add(1, Ordering::Relaxed);
        if let Some(error) = error {
            self.failed(cells, error);
        }
    }

    #[cold]
    fn failed(&self, cells: &Cells, error: &Error) {
        let code = error.code();
        if let Some(i) = Error::CODES.iter().position(|&c| c == code) {
            cells.errors[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A snapshot of every kind, in [`CallKind::ALL`] order.
    pub fn snapshot(&self) -> Vec<CallStats> {
        CallKind::ALL
            .iter()
            .map(|&kind| {
                let cells = &self.kinds[kind as usize];
                let buckets: Vec<u64> = cells
                    .buckets
                    .iter()
                    .map(|b| b.load(Ordering::Relaxed))
                    .collect();
                let errors = Error::CODES
                    .iter()
                    .zip(&cells.errors)
                    .map(|(&code, n)| (code, n.load(Ordering::Relaxed)))
                    .filter(|&(_, n)| n > 0)
                    .collect();
                CallStats {
                    kind,
                    count: buckets.iter().sum::<u64>() + cells.untimed.load(Ordering::Relaxed),
                    seconds: cells.nanos.load(Ordering::Relaxed) as f64 / 1e9,
                    buckets,
                    errors,
                }
            })
            .collect()
    }
}

/// What the Hub routed and holds, from [`Hub::stats`](crate::Hub::stats).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HubStats {
    /// The frames the Hub routed since it started, by what they were: `announce`, `ready`,
    /// `broadcast`, `reply`, `failure`, `cancel`, then each request by its [`CallKind::name`],
    /// then `remote` (requests from other hosts, whatever call they are), then `credit`.
    pub routed: Vec<(&'static str, u64)>,
    /// Every connected worker, in slot then generation order.
    pub peers: Vec<PeerStats>,
}

/// One connected worker in a [`HubStats`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerStats {
    /// The worker.
    pub id: WorkerId,
    /// Where it is in its life, as far as routing goes.
    pub state: PeerState,
    /// The frames the Hub holds for it (its queue and the broadcasts waiting for room).
    pub queued_frames: usize,
    /// Their bytes.
    pub queued_bytes: usize,
    /// The calls and broadcasts the Hub has given it (see [`Hub::delivered`](crate::Hub::delivered)).
    pub delivered: u64,
}

/// The frames the Hub routes that are neither requests nor credits, by kind, as
/// [`HubStats::routed`] names them (requests are named by their [`CallKind`]).
const FRAMES: [(Kind, &str); 6] = [
    (Kind::Announce, "announce"),
    (Kind::Ready, "ready"),
    (Kind::Broadcast, "broadcast"),
    (Kind::Reply, "reply"),
    (Kind::Failure, "failure"),
    (Kind::Cancel, "cancel"),
];

/// The Hub's count of the frames it routed (kept under its lock: plain numbers): each frame
/// by its kind, found by the kind's number, and requests apart, by their call.
#[derive(Default)]
pub(crate) struct Routed {
    by_kind: [u64; Kind::Credit as usize + 1],
    calls: [u64; CallKind::ALL.len()],
    /// Requests from other hosts (a call picked a worker here), whatever call they are.
    remote: u64,
}

impl Routed {
    /// Counts `env`, about to be routed.
    pub fn count(&mut self, env: &Envelope) {
        match env.kind {
            Kind::Request => {
                if let Some(kind) = CallKind::of(env.to) {
                    self.calls[kind as usize] += 1;
                }
            }
            kind => self.by_kind[kind as usize] += 1,
        }
    }

    /// Counts `env`, from another host, about to be routed: a request is counted apart, as
    /// `remote` (it names the worker picked there, not the call it is).
    pub fn count_remote(&mut self, env: &Envelope) {
        match env.kind {
            Kind::Request => self.remote += 1,
            _ => self.count(env),
        }
    }

    /// Every count, with its name: the frames by kind, the requests by the call they are,
    /// the requests from other hosts, then the credits.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let frames = FRAMES
            .iter()
            .map(|(k, name)| (*name, self.by_kind[*k as usize]));
        let calls = CallKind::ALL.iter().map(|k| k.name()).zip(self.calls);
        let credits = ("credit", self.by_kind[Kind::Credit as usize]);
        let remote = ("remote", self.remote);
        frames.chain(calls).chain([remote, credits]).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bounds_in_nanoseconds_are_the_buckets() {
        for (nanos, seconds) in BOUNDS_NANOS.iter().zip(LATENCY_BUCKETS) {
            assert_eq!(
                Duration::from_nanos(*nanos),
                Duration::from_secs_f64(seconds)
            );
        }
    }

    #[test]
    fn calls_land_in_their_bucket_and_errors_by_code() {
        let calls = Calls::default();
        calls.record(CallKind::Consume, Duration::from_micros(30), None);
        calls.record(CallKind::Consume, Duration::from_micros(100), None);
        calls.record(
            CallKind::Consume,
            Duration::from_secs(60),
            Some(&Error::Closed),
        );
        let consume = &calls.snapshot()[CallKind::Consume as usize];
        assert_eq!(consume.kind, CallKind::Consume);
        assert_eq!(consume.count, 3);
        assert_eq!(consume.buckets[0], 1, "30 µs is at most 50 µs");
        assert_eq!(
            consume.buckets[1], 1,
            "100 µs is in the bucket up to 100 µs"
        );
        assert_eq!(
            consume.buckets[BUCKETS - 1],
            1,
            "a minute is past every bound"
        );
        assert_eq!(consume.errors, vec![("closed", 1)]);
        assert!((consume.seconds - 60.000_13).abs() < 1e-9);
    }

    #[test]
    fn broadcasts_are_counted_not_timed() {
        let calls = Calls::default();
        calls.count(CallKind::Broadcast, None);
        calls.count(CallKind::Broadcast, Some(&Error::Closed));
        let broadcast = &calls.snapshot()[CallKind::Broadcast as usize];
        assert_eq!(broadcast.count, 2);
        assert!(broadcast.buckets.iter().all(|&n| n == 0));
        assert_eq!(broadcast.errors, vec![("closed", 1)]);
    }

    #[test]
    fn the_hub_counts_frames_by_kind_and_requests_by_call() {
        let mut routed = Routed::default();
        let frame = |kind, to| Envelope {
            to,
            ..Envelope::new(kind, "e", bytes::Bytes::new())
        };
        routed.count(&frame(Kind::Reply, Target::Hub));
        routed.count(&frame(Kind::Request, Target::Any));
        routed.count(&frame(Kind::Request, Target::Any));
        routed.count(&frame(Kind::Request, Target::Hub));
        routed.count(&frame(Kind::Credit, Target::Hub));
        // From another host: a request names the worker picked there, not its call.
        let picked = Target::Worker(WorkerId::new(0, 1));
        routed.count_remote(&frame(Kind::Request, picked));
        routed.count_remote(&frame(Kind::Reply, Target::Hub));
        let counts: Vec<_> = routed
            .snapshot()
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .collect();
        assert_eq!(
            counts,
            [("reply", 2), ("consume", 2), ("remote", 1), ("credit", 1)]
        );
        assert_eq!(
            routed.snapshot().len(),
            FRAMES.len() + CallKind::ALL.len() + 2
        );
    }
}
