//! The settings a cluster runs with.

use std::time::Duration;

use messenger::MAX_DURATION;

use crate::error::Error;
use crate::listen::ListenAddr;

/// The most worker slots a cluster may have unless [`Builder::max_workers`] says otherwise: a
/// typo in a worker count should be an error, not a fork bomb.
///
/// [`Builder::max_workers`]: crate::Builder::max_workers
pub const DEFAULT_MAX_WORKERS: usize = 1024;

/// The most runtime threads a worker may ask for.
const MAX_WORKER_THREADS: usize = 4096;

/// Every setting of a cluster, set with the [`Builder`](crate::Builder) and read with
/// [`Builder::options`](crate::Builder::options). Its fields are private: a setting added later
/// breaks nobody.
#[derive(Debug, Clone)]
pub struct Options {
    /// How many worker slots (0, in the builder: one per CPU, resolved by `run`).
    pub(crate) workers: usize,
    /// The most worker slots allowed.
    pub(crate) max_workers: usize,
    /// What the master listens on, in the order the workers see the listeners.
    pub(crate) listeners: Vec<ListenAddr>,
    /// A worker that is not Ready this long after its start is killed (boot failure); a
    /// replacement in a reload that is not Ready by then stops the rollout.
    pub(crate) ready_timeout: Duration,
    /// A draining worker still alive this long after it was told to drain is killed.
    pub(crate) kill_timeout: Duration,
    /// How often the master pings each Ready worker.
    pub(crate) heartbeat_interval: Duration,
    /// A Ready worker that answers no ping for this long is unhealthy (replaced, new first).
    pub(crate) heartbeat_timeout: Duration,
    /// The first delay before restarting a slot whose workers died soon after their start
    /// twice in a row (the first such death is restarted at once).
    pub(crate) backoff_initial: Duration,
    /// The longest such delay.
    pub(crate) backoff_max: Duration,
    /// A worker that ran this long before dying is restarted at once, and its slot's backoff
    /// is reset.
    pub(crate) stable_after: Duration,
    /// How many slots a rolling reload replaces at a time.
    pub(crate) reload_batch: usize,
    /// Report a worker unhealthy when any of its threads panics.
    pub(crate) unhealthy_on_panic: bool,
    /// Fix glibc's mmap threshold in the master, so that large frames freed are given back to
    /// the system (see `memory.rs`).
    pub(crate) release_memory: bool,
    /// Runtime threads per worker process (`None`: the CPUs shared out among the workers).
    pub(crate) worker_threads: Option<usize>,
    /// The messenger's settings, for the Hub and every worker.
    pub(crate) messenger: messenger::Config,
    /// Where the master's control socket is, if it has one.
    pub(crate) control_socket: Option<ControlPath>,
    /// When a Ready worker is replaced (new first, drained) by policy.
    pub(crate) recycle: Recycle,
    /// The master relays the workers' stdout and stderr, each line prefixed with who wrote it.
    pub(crate) prefix_output: bool,
    /// The workers run as tasks in the master's process.
    pub(crate) single_process: bool,
    /// Where the metrics endpoint listens, if the cluster serves one.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) metrics: Option<std::net::SocketAddr>,
    /// The buckets of the `metrics` facade's histograms, in every process.
    pub(crate) metrics_buckets: Vec<f64>,
}

/// The recycling policy: a Ready worker past any of these is replaced, new first, and drained.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Recycle {
    /// Older than this.
    pub max_age: Option<Duration>,
    /// Resident memory over this many bytes.
    pub max_memory: Option<u64>,
    /// Given this many calls and broadcasts by the Hub.
    pub max_messages: Option<u64>,
}

impl Recycle {
    pub fn any(&self) -> bool {
        *self != Recycle::default()
    }
}

/// Where the control socket goes.
#[derive(Debug, Clone)]
pub(crate) enum ControlPath {
    At(std::path::PathBuf),
    /// `$XDG_RUNTIME_DIR/multiprocess-<pid>/control.sock` (or under the temp dir).
    Default,
}

impl Options {
    /// How many worker slots; 0 (until [`Builder::run`](crate::Builder::run) resolves it)
    /// means one per CPU.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// What the master listens on, in the order the workers see the listeners.
    pub fn listeners(&self) -> &[ListenAddr] {
        &self.listeners
    }

    /// How long a new worker may take to get Ready.
    pub fn ready_timeout(&self) -> Duration {
        self.ready_timeout
    }

    /// How long a draining worker may take to exit before it is killed.
    pub fn kill_timeout(&self) -> Duration {
        self.kill_timeout
    }

    /// How many slots a rolling reload replaces at a time.
    pub fn reload_batch(&self) -> usize {
        self.reload_batch
    }

    /// The messenger's settings, for the Hub and every worker.
    pub fn messenger_config(&self) -> &messenger::Config {
        &self.messenger
    }
}

impl Options {
    /// The runtime threads of each worker: as set, or the CPUs shared out among the workers
    /// (at least one), so that all the workers together run about one thread per CPU.
    pub(crate) fn runtime_threads(&self) -> usize {
        self.worker_threads
            .unwrap_or_else(|| {
                let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
                cpus / self.workers.max(1)
            })
            .max(1)
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            workers: 1,
            max_workers: DEFAULT_MAX_WORKERS,
            listeners: Vec::new(),
            ready_timeout: Duration::from_secs(30),
            kill_timeout: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(1),
            heartbeat_timeout: Duration::from_secs(30),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            stable_after: Duration::from_secs(10),
            reload_batch: 1,
            unhealthy_on_panic: true,
            release_memory: true,
            worker_threads: None,
            messenger: messenger::Config::default(),
            control_socket: None,
            recycle: Recycle::default(),
            prefix_output: false,
            single_process: false,
            metrics: None,
            metrics_buckets: crate::prometheus::DEFAULT_BUCKETS.to_vec(),
        }
    }
}

impl Options {
    /// Checks that the settings hold together: a clear [`Error::Config`] naming the setting
    /// otherwise, before anything is bound or started.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        let invalid = |reason: String| Err(Error::Config(reason));
        if self.workers > self.max_workers {
            return invalid(format!(
                "{} workers is over the limit of {} (raise it with Builder::max_workers)",
                self.workers, self.max_workers
            ));
        }
        if self
            .recycle
            .max_age
            .is_some_and(|age| age < Duration::from_secs(1))
            || self.recycle.max_memory == Some(0)
            || self.recycle.max_messages == Some(0)
        {
            return invalid(
                "a recycling limit of zero (or an age under a second) would replace workers as \
                 soon as they are Ready"
                    .into(),
            );
        }
        if let Some(threads) = self.worker_threads {
            if threads > MAX_WORKER_THREADS {
                return invalid(format!(
                    "worker_threads {threads} is over {MAX_WORKER_THREADS} per worker"
                ));
            }
        }
        for (name, duration) in [
            ("ready_timeout", self.ready_timeout),
            ("kill_timeout", self.kill_timeout),
            ("heartbeat_interval", self.heartbeat_interval),
            ("heartbeat_timeout", self.heartbeat_timeout),
            ("backoff initial delay", self.backoff_initial),
            ("backoff max delay", self.backoff_max),
            ("stable_after", self.stable_after),
            ("recycle max age", self.recycle.max_age.unwrap_or_default()),
        ] {
            if duration > MAX_DURATION {
                return invalid(format!(
                    "{name} {duration:?} is over {MAX_DURATION:?} (100 years)"
                ));
            }
        }
        for (name, duration) in [
            ("ready_timeout", self.ready_timeout),
            ("heartbeat_interval", self.heartbeat_interval),
            ("heartbeat_timeout", self.heartbeat_timeout),
        ] {
            if duration.is_zero() {
                return invalid(format!("{name} is zero"));
            }
        }
        if self.backoff_initial > self.backoff_max {
            return invalid(format!(
                "the backoff's initial delay {:?} is over its max {:?}",
                self.backoff_initial, self.backoff_max
            ));
        }
        self.messenger
            .validate()
            .map_err(|e| Error::Config(format!("messenger: {e}")))?;
        crate::prometheus::validate_buckets(&self.metrics_buckets)?;
        // A `map` tells its caller who answers: a list of up to `max_workers` ids (at most 15
        // bytes each) that must fit one frame.
        let list = self.max_workers.saturating_mul(15).saturating_add(128);
        if list > self.messenger.max_frame {
            return invalid(format!(
                "messenger max_frame {} cannot hold the list of {} workers a map may have \
                 ({list} bytes): raise max_frame or lower Builder::max_workers",
                self.messenger.max_frame, self.max_workers
            ));
        }
        Ok(())
    }

    /// The delay before the next start of a slot after `failures` quick deaths in a row: the
    /// first is restarted at once, then `backoff_initial` doubling up to `backoff_max`, with
    /// up to 25% jitter so that slots failing together do not restart in lock step.
    pub(crate) fn backoff(&self, failures: u32) -> Duration {
        if failures <= 1 {
            return Duration::ZERO;
        }
        let exp = self
            .backoff_initial
            .saturating_mul(1u32 << (failures - 2).min(20));
        let capped = exp.min(self.backoff_max);
        capped.mul_f64(1.0 - 0.25 * fastrand::f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_threads_share_the_cpus_out() {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let with = |workers, worker_threads| Options {
            workers,
            worker_threads,
            ..Options::default()
        };
        assert_eq!(with(1, None).runtime_threads(), cpus);
        assert_eq!(with(cpus, None).runtime_threads(), 1);
        assert_eq!(with(cpus * 4, None).runtime_threads(), 1);
        assert_eq!(with(cpus, Some(3)).runtime_threads(), 3);
        assert_eq!(with(1, Some(0)).runtime_threads(), 1);
    }

    #[test]
    fn settings_that_cannot_work_are_refused_with_their_name() {
        let cases: Vec<(Options, &str)> = vec![
            (
                Options {
                    workers: usize::MAX,
                    ..Options::default()
                },
                "max_workers",
            ),
            (
                Options {
                    workers: 100_000,
                    ..Options::default()
                },
                "over the limit of 1024",
            ),
            (
                Options {
                    ready_timeout: Duration::MAX,
                    ..Options::default()
                },
                "ready_timeout",
            ),
            (
                Options {
                    kill_timeout: Duration::MAX,
                    ..Options::default()
                },
                "kill_timeout",
            ),
            (
                Options {
                    heartbeat_interval: Duration::ZERO,
                    ..Options::default()
                },
                "heartbeat_interval is zero",
            ),
            (
                Options {
                    backoff_initial: Duration::from_secs(5),
                    backoff_max: Duration::from_secs(1),
                    ..Options::default()
                },
                "backoff",
            ),
            (
                Options {
                    worker_threads: Some(1 << 20),
                    ..Options::default()
                },
                "worker_threads",
            ),
            (
                Options {
                    messenger: messenger::Config::default().max_frame(usize::MAX),
                    ..Options::default()
                },
                "max_frame",
            ),
        ];
        for (opts, name) in cases {
            let err = opts.validate().unwrap_err().to_string();
            assert!(err.contains(name), "{name}: {err}");
        }
        let small_frames = Options {
            messenger: messenger::Config::default()
                .max_frame(4096)
                .queue_bytes(8192)
                .once_bytes(8192),
            ..Options::default()
        };
        let err = small_frames.validate().unwrap_err().to_string();
        assert!(err.contains("list of 1024 workers"), "{err}");
        Options {
            max_workers: 64,
            ..small_frames
        }
        .validate()
        .unwrap();
        Options::default().validate().unwrap();
        Options {
            workers: 5000,
            max_workers: 5000,
            ..Options::default()
        }
        .validate()
        .unwrap();
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let o = Options {
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            ..Options::default()
        };
        assert_eq!(o.backoff(0), Duration::ZERO);
        assert_eq!(o.backoff(1), Duration::ZERO);
        let second = o.backoff(2);
        assert!(second <= Duration::from_millis(100) && second >= Duration::from_millis(75));
        let fourth = o.backoff(4);
        assert!(fourth <= Duration::from_millis(400) && fourth >= Duration::from_millis(300));
        for n in 7..40 {
            let d = o.backoff(n);
            assert!(
                d <= Duration::from_secs(2) && d >= Duration::from_millis(1500),
                "{n}: {d:?}"
            );
        }
    }
}
