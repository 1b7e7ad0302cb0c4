//! The user's entry point: [`Cluster::builder`]. It sits above `master` and `worker` (it runs
//! one or the other), which never import it.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{BoxError, Error};
use crate::listen::ListenAddr;
use crate::master::{self, Master, MasterBoot};
use crate::options::{ControlPath, Options};
use crate::worker::{self, Worker, WorkerBoot};

/// A master plus N worker processes.
///
/// ```no_run
/// use cluster::Cluster;
///
/// fn main() -> Result<(), cluster::Error> {
///     Cluster::builder()
///         .workers(0) // one per CPU
///         .listen("127.0.0.1:3000")
///         .worker(|w| async move {
///             let listener = w.tcp_listener(0)?;
///             w.ready().await?;
///             // ... serve on `listener` until `w.draining()` resolves
///             # drop(listener);
///             Ok(())
///         })
///         .run()
/// }
/// ```
pub struct Cluster;

impl Cluster {
    /// Starts describing a cluster.
    pub fn builder() -> Builder {
        Builder {
            opts: Options {
                workers: 0,
                ..Options::default()
            },
            master: None,
            worker: None,
            #[cfg(feature = "nats")]
            uplink: None,
        }
    }
}

/// Describes a cluster; [`run`](Builder::run) starts it.
///
/// The same binary is both the master and every worker: the master re-executes it with the
/// worker's identity in the environment, so the builder must be the same in both (build it
/// from the same code and configuration, before anything that depends on being one or the
/// other).
///
/// # Self-update: which binary new workers run
/// The master resolves its binary's path once, when it starts (`std::env::current_exe`: on
/// Linux the real path behind `/proc/self/exe`, symbolic links resolved), and every worker it
/// starts afterwards (a reload, a restart after a crash, a replacement of an unhealthy worker)
/// executes whatever file is at that path at that moment, with the master's arguments:
/// - a new binary **renamed over the path** (write it beside, then `mv`: the usual atomic
///   deploy) is what every later worker runs; [`Master::reload`] or `SIGUSR2` then rolls every
///   worker onto it. Until then, a crashed worker's replacement already runs the new binary.
/// - the file **overwritten in place** cannot be: Linux refuses to open a running binary for
///   writing (`ETXTBSY`, "text file busy"). Tools that unlink first (`install`,
///   `cp --remove-destination`) amount to a replacement, as above.
/// - the path **deleted** and nothing put back: workers start from the master's own image
///   (`/proc/self/exe`), the old code, and a warning is logged.
/// - a **symbolic link switched** to another release (`current -> v2`) is not followed: the
///   path was resolved through the link at the master's start. Rename a binary over the
///   resolved path, or restart the master.
///
/// The master itself keeps running the code it started with until it is restarted: its
/// bootstrap ran once, its handlers are the old ones, and its settings (worker count,
/// listeners, timeouts) stay those of the builder it ran. A new worker builds its own
/// [`Builder`] from the new binary: its bootstrap, its handlers and its messenger settings are
/// the new ones. Events keep their wire names and payloads are encoded with field names, so
/// old and new processes keep talking as long as the events stay compatible.
pub struct Builder {
    opts: Options,
    master: Option<MasterBoot>,
    worker: Option<WorkerBoot>,
    #[cfg(feature = "nats")]
    uplink: Option<messenger::uplink::Uplink>,
}

impl Builder {
    /// The number of worker slots; 0 (the default) means the number of CPUs. At most
    /// [`max_workers`](Builder::max_workers).
    pub fn workers(mut self, n: usize) -> Self {
        self.opts.workers = n;
        self
    }

    /// The most worker slots [`workers`](Builder::workers) may ask for (default 1024): a worker
    /// count over it is an error, so that a typo never forks a process per slot until the
    /// machine runs out.
    pub fn max_workers(mut self, n: usize) -> Self {
        self.opts.max_workers = n;
        self
    }

    /// Adds a TCP listener (`"127.0.0.1:3000"`; port 0 picks one, see
    /// [`Master::local_addrs`]). Workers take it with [`Worker::tcp_listener`], by the index
    /// of this call among all `listen*` calls.
    pub fn listen(mut self, addr: impl Into<String>) -> Self {
        self.opts.listeners.push(ListenAddr::Tcp(addr.into()));
        self
    }

    /// Adds a Unix-domain listener at `path` (a stale socket file there is replaced; the file
    /// is removed when the master exits). Workers take it with [`Worker::unix_listener`].
    pub fn listen_unix(mut self, path: impl Into<PathBuf>) -> Self {
        self.opts.listeners.push(ListenAddr::Unix(path.into()));
        self
    }

    /// How long a new worker may take to get Ready (default 30 s).
    pub fn ready_timeout(mut self, d: Duration) -> Self {
        self.opts.ready_timeout = d;
        self
    }

    /// How long a draining worker may take to exit before it is killed (default 30 s).
    pub fn kill_timeout(mut self, d: Duration) -> Self {
        self.opts.kill_timeout = d;
        self
    }

    /// How often Ready workers are pinged (default 1 s).
    pub fn heartbeat_interval(mut self, d: Duration) -> Self {
        self.opts.heartbeat_interval = d;
        self
    }

    /// A worker that answers no ping for this long is replaced (default 30 s).
    pub fn heartbeat_timeout(mut self, d: Duration) -> Self {
        self.opts.heartbeat_timeout = d;
        self
    }

    /// The restart backoff of a slot whose workers keep dying soon after their start: the
    /// first delay and the cap (defaults 100 ms and 10 s).
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.opts.backoff_initial = initial;
        self.opts.backoff_max = max;
        self
    }

    /// A worker that ran this long counts as stable: its death is restarted at once and resets
    /// the backoff (default 10 s).
    pub fn stable_after(mut self, d: Duration) -> Self {
        self.opts.stable_after = d;
        self
    }

    /// How many slots a rolling reload replaces at a time (default 1).
    pub fn reload_batch(mut self, n: usize) -> Self {
        self.opts.reload_batch = n.max(1);
        self
    }

    /// Recycles a Ready worker once it has run this long: it is replaced new first and
    /// drained, so no request is lost (unlike an abrupt restart). One slot is recycled at a
    /// time. At least one second (a shorter age is refused). Off by default; see [`recycle_above_memory`](Builder::recycle_above_memory) and
    /// [`recycle_after_messages`](Builder::recycle_after_messages) for the other policies.
    pub fn recycle_after(mut self, age: Duration) -> Self {
        self.opts.recycle.max_age = Some(age);
        self
    }

    /// Recycles a Ready worker (new first, drained) once its resident memory is over `bytes`,
    /// as read from `/proc` about once a second: PM2's `max_memory_restart`, without losing
    /// the requests in flight.
    pub fn recycle_above_memory(mut self, bytes: u64) -> Self {
        self.opts.recycle.max_memory = Some(bytes);
        self
    }

    /// Recycles a Ready worker (new first, drained) once the Hub has given it `messages` calls
    /// and broadcasts (gunicorn's `max_requests`, for the messages through the master; what
    /// a worker serves on its own listeners is not seen by the master).
    pub fn recycle_after_messages(mut self, messages: u64) -> Self {
        self.opts.recycle.max_messages = Some(messages);
        self
    }

    /// The master relays every line its workers write to stdout and stderr, prefixed with
    /// `[worker <slot>.<generation> pid <pid>] `, to its own stdout and stderr (default off:
    /// the workers write to the master's directly). Lines written through `tracing` carry the
    /// same in their `worker{slot=.. generation=.. pid=..}` span either way; this tells apart
    /// plain `println!`s and what libraries print. It costs the master a read and a write per
    /// line (measured in the README). A line over 64 KiB is relayed in pieces, each prefixed.
    pub fn prefix_worker_output(mut self, yes: bool) -> Self {
        self.opts.prefix_output = yes;
        self
    }

    /// Whether a panic in a worker reports it unhealthy (default true).
    pub fn unhealthy_on_panic(mut self, yes: bool) -> Self {
        self.opts.unhealthy_on_panic = yes;
        self
    }

    /// Runtime threads per worker (default: the CPUs divided by the workers, at least one, so
    /// the workers together run about one thread per CPU).
    ///
    /// A worker with one thread runs a current-thread tokio runtime: nothing crosses threads,
    /// which is the fastest shape for I/O-bound services (measured in BENCHMARKS.md). Its
    /// handlers and requests share that thread, so run CPU-heavy work with
    /// `tokio::task::spawn_blocking` (`block_in_place` needs more than one thread), or ask for
    /// more threads here.
    pub fn worker_threads(mut self, n: usize) -> Self {
        self.opts.worker_threads = Some(n);
        self
    }

    /// Whether the master gives back to the system the memory a flood of large frames took,
    /// once freed (default: yes). On glibc, it fixes malloc's mmap threshold at 128 KiB in the
    /// master process: glibc otherwise raises it after the first large block freed, and later
    /// large frames then come from a heap that stays resident after they are freed (measured:
    /// 49 MiB against 12 MiB after a flood of 1 MiB broadcasts). A frame over 128 KiB then costs
    /// an mmap and munmap of its own. `MALLOC_MMAP_THRESHOLD_` in the environment takes
    /// precedence; other allocators are not touched. Workers are left alone.
    pub fn release_memory(mut self, yes: bool) -> Self {
        self.opts.release_memory = yes;
        self
    }

    /// Single-process mode: the workers run as tasks in the master's process, each with its
    /// own messenger connected to the Hub in memory, instead of as processes of their own. For
    /// a container whose orchestrator already runs replicas, and for debugging (one process to
    /// attach a debugger or profiler to). `MULTIPROCESS_SINGLE_PROCESS=1` (or `0`) in the
    /// environment overrides this setting. The worker count defaults to 1 in this mode.
    ///
    /// The same API works, with these differences (the README's "Single-process mode" has
    /// them all): a reload or a recycling restarts the worker bootstrap (new first, drained)
    /// but runs the same code, since no binary is re-executed; a panic in a worker's
    /// bootstrap ends that worker alone (it is restarted), but an abort, a stack overflow or
    /// running out of memory ends every worker and the master; a kill (past the kill timeout)
    /// aborts the bootstrap's task, closes its connection and has it drain, but does not stop
    /// the tasks it spawned; `recycle_above_memory`, `unhealthy_on_panic` and
    /// `prefix_worker_output` do nothing (logged for the first); the status shows the master's
    /// pid (and its memory and CPU) for every worker.
    pub fn single_process(mut self, yes: bool) -> Self {
        self.opts.single_process = yes;
        self
    }

    /// The master serves Prometheus metrics at `http://addr/metrics`: the cluster's own
    /// (workers by state, restarts by cause, reload outcomes, messages routed by kind, each
    /// worker's queue, memory and CPU, call latencies and errors by kind) and what every
    /// process records with the [`metrics`](crate::metrics) facade, merged at each scrape:
    /// counters added up, gauges one per worker (labels `slot`, `generation`), histograms
    /// bucket by bucket. The crate docs ("Metrics") list every metric. Port 0 picks a free
    /// port (the master logs it). A bind that fails stops the start with
    /// [`Error::Listen`](crate::Error::Listen).
    #[cfg(feature = "metrics")]
    pub fn metrics(mut self, addr: std::net::SocketAddr) -> Self {
        self.opts.metrics = Some(addr);
        self
    }

    /// The upper bounds of the buckets every process's facade histograms count into (the same
    /// everywhere, so that the master's merge is exact): 1 to 64 finite bounds, ascending.
    /// By default Prometheus's: 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10.
    #[cfg(feature = "metrics")]
    pub fn metrics_buckets(mut self, buckets: impl Into<Vec<f64>>) -> Self {
        self.opts.metrics_buckets = buckets.into();
        self
    }

    /// The master listens for the `multiprocess` CLI (status, reload, scale, stop) on a Unix
    /// socket at `path`: mode 0600, in a directory that must not be open to other users (made,
    /// mode 0700, if missing, and removed with the socket when the master exits). See
    /// [`control_socket_in_runtime_dir`](Builder::control_socket_in_runtime_dir) for a default
    /// place, and the crate docs for the protocol.
    pub fn control_socket(mut self, path: impl Into<PathBuf>) -> Self {
        self.opts.control_socket = Some(ControlPath::At(path.into()));
        self
    }

    /// The control socket (see [`control_socket`](Builder::control_socket)) at
    /// `$XDG_RUNTIME_DIR/multiprocess-<master pid>/control.sock`, or under the temp dir without
    /// a runtime directory; the master logs where.
    pub fn control_socket_in_runtime_dir(mut self) -> Self {
        self.opts.control_socket = Some(ControlPath::Default);
        self
    }

    /// The messenger's settings.
    pub fn messenger_config(mut self, config: messenger::Config) -> Self {
        self.opts.messenger = config;
        self
    }

    /// The master's bootstrap: runs once in the master, before any worker starts (register
    /// master handlers here; spawn tasks for anything long-lived).
    pub fn master<F, Fut>(mut self, f: F) -> Self
    where
        F: FnOnce(Master) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
    {
        self.master = Some(Box::new(move |m| Box::pin(f(m))));
        self
    }

    /// The worker's bootstrap: runs in every worker process (in
    /// [single-process mode](Builder::single_process), once for each worker task, and again
    /// for each replacement). Register handlers, call [`Worker::ready`], serve until
    /// [`Worker::draining`] resolves, return. Returning ends the worker process (an `Err` is
    /// logged and exits with status 1).
    pub fn worker<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(Worker) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
    {
        self.worker = Some(std::sync::Arc::new(move |w| Box::pin(f(w))));
        self
    }

    /// The master's Hub joins the other hosts of `uplink`'s cluster over NATS (feature
    /// `nats`): each host's master announces its Ready workers to the others, which
    /// [`Master::hosts`](crate::Master::hosts) and the shell's `status` list. The master joins
    /// before its workers start (a server it cannot reach is an error, and nothing starts),
    /// and leaves when it stops, so the others forget it at once; a master that dies is
    /// forgotten within the uplink's expiry. See [`messenger::uplink`].
    #[cfg(feature = "nats")]
    pub fn nats(mut self, uplink: messenger::uplink::Uplink) -> Self {
        self.uplink = Some(uplink);
        self
    }

    /// The settings as they stand.
    pub fn options(&self) -> &Options {
        &self.opts
    }

    /// Runs the cluster: as the master (binds the listeners, starts the workers, supervises
    /// them until SIGTERM/SIGINT or [`Master::stop`]), or, in a process the master started, as
    /// that worker. Decided before any async runtime exists.
    ///
    /// Returns `Ok` after a graceful stop. Settings that cannot work (a worker count over
    /// [`max_workers`](Builder::max_workers), a duration over 100 years, a messenger setting
    /// [`Config::validate`](messenger::Config::validate) refuses) are an [`Error::Config`]
    /// before anything is bound or started. A process started as a worker never becomes a
    /// master: calling `run` again in it, or with a worker identity that does not check out,
    /// is an [`Error::WorkerEnv`].
    pub fn run(mut self) -> Result<(), Error> {
        let env = crate::env::take_worker_env()?;
        if let Some(single) = crate::env::single_process()? {
            self.opts.single_process = single;
        }
        if self.opts.workers == 0 {
            self.opts.workers = if self.opts.single_process {
                1
            } else {
                std::thread::available_parallelism().map_or(1, |n| n.get())
            };
        }
        if self.opts.metrics.is_some() {
            // Call latencies are on the endpoint: every messenger times its calls.
            self.opts.messenger.time_calls = true;
        }
        self.opts.validate()?;
        let worker = self.worker.ok_or_else(|| {
            Error::Config("no worker bootstrap: call `.worker(|w| async move { .. })`".into())
        })?;
        match env {
            Some(env) => worker::run(env, self.opts, worker),
            None => master::run(
                self.opts,
                self.master,
                worker,
                #[cfg(feature = "nats")]
                self.uplink,
            ),
        }
    }
}
