//! The chaos and soak driver: steady HTTP load on the demo cluster while workers are
//! SIGKILLed, SIGSTOPped (and left stopped), reloaded and reported unhealthy; then the checks.
//!
//! It starts `demo-cluster` from its own directory (build both: `cargo build --release
//! --example chaos --example demo-cluster`) in a process group of its own, and kills that
//! whole group on any way out. See `scripts/README.md` for what a run checks and reports, and
//! `--help` for the options.
//!
//! The run passes (exit status 0) when
//! - every failed request is explained by a SIGKILL (by the driver, or by the master at the
//!   kill deadline of a SIGSTOPped worker): the kill struck while the request was in flight,
//!   or struck the worker holding its keep-alive connection just before the request was
//!   written;
//! - after the chaos, within `--settle-secs`, every slot has a Ready worker (`/map` lists N
//!   distinct pids, `/hello` answers, the master has exactly those N children, none stopped);
//! - the master's descriptors are no more than at the start and its RSS is within
//!   `--rss-bound-mib` of the start;
//! - SIGTERM stops the master with status 0 and leaves no process of its group.
//!
//! Exit status: 0 pass, 1 a check failed, 2 the run could not be done, 3 the run overran its
//! time bound.

mod actions;
mod cluster;
mod diag;
mod http;
mod opts;
mod procfs;
mod report;
mod settle;
mod summary;
mod watch;

use std::sync::Arc;
use std::time::Duration;

use crate::cluster::Cluster;
use crate::http::{Load, Stats};
use crate::opts::{Opts, Rng, USAGE};
use crate::procfs::{now_us, secs};
use crate::summary::Outcome;
use crate::watch::{Sampler, Watch};

/// Start-up, the stop, and the descriptor check each get this long at most.
const STEP_DEADLINE: Duration = Duration::from_secs(60);

fn main() {
    now_us();
    let opts = match Opts::parse(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) if e.is_empty() => {
            print!("{USAGE}");
            return;
        }
        Err(e) => {
            eprintln!("chaos: {e}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    watchdog(&opts);
    let code = match run(&opts) {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            eprintln!("chaos: {e}");
            2
        }
    };
    std::process::exit(code);
}

/// The whole run is bounded: past every deadline added up (and a margin), kill the cluster's
/// group and exit 3.
fn watchdog(opts: &Opts) {
    let bound = Duration::from_secs_f64(opts.seconds + opts.settle_secs)
        + STEP_DEADLINE * 4
        + REQUEST_MARGIN;
    std::thread::spawn(move || {
        std::thread::sleep(bound);
        eprintln!("chaos: the run overran its bound of {bound:?}: killing the cluster");
        cluster::kill_group_now();
        std::process::exit(3);
    });
}

/// Time for the last requests to end after the load is told to stop.
const REQUEST_MARGIN: Duration = http::REQUEST_TIMEOUT;

fn run(opts: &Opts) -> Result<bool, String> {
    let n = opts.workers;
    eprintln!(
        "chaos: seed {}, {} s of chaos, {n} workers, {} clients, actions {:?}, every {:?}-{:?}",
        opts.seed,
        opts.seconds,
        opts.clients,
        opts.actions.iter().map(|a| a.name()).collect::<Vec<_>>(),
        opts.interval.0,
        opts.interval.1
    );
    let mut cluster = Cluster::start(opts)?;
    eprintln!(
        "chaos: master pid {} on 127.0.0.1:{}, log {}",
        cluster.pid,
        cluster.port,
        cluster.log_path.display()
    );
    let (watch, watch_thread) = Watch::start(cluster.pid);
    let diag = diag::Diag::start(watch.clone(), cluster.log.clone(), cluster.file.clone());
    let boot = settle::wait(&mut cluster, n, STEP_DEADLINE).map_err(|e| {
        let tail = cluster.log.lock().unwrap().tail.join("\n| ");
        format!("the cluster did not start: {e}\nits log:\n| {tail}")
    })?;
    let fds_start = procfs::fd_count(cluster.pid).ok_or("no /proc/<master>/fd")?;
    let rss_start = procfs::rss_kib(cluster.pid).ok_or("no VmRSS for the master")?;
    eprintln!(
        "chaos: {n} workers Ready {:?} after {:.3} s; master fds {fds_start}, rss {rss_start} KiB",
        boot.pids,
        secs(boot.after)
    );

    let stats = Arc::new(Stats::default());
    let load = Load::start(cluster.port, opts.clients, &opts.routes, &stats);
    let sampler = Sampler::start(
        cluster.pid,
        Duration::from_secs_f64(opts.sample_secs),
        watch.clone(),
        stats.clone(),
    );
    let chaos_start = now_us();
    let until = chaos_start + (opts.seconds * 1e6) as u64;
    let mut rng = Rng::new(opts.seed);
    let chaos = {
        let c = &mut cluster;
        actions::run(opts, c.port, &watch, &stats, &mut rng, until, || {
            c.try_wait().is_none()
        })?
    };
    let chaos_end = now_us();
    eprintln!("chaos: chaos over; waiting for every slot to be Ready (load goes on)");
    let settle_deadline = Duration::from_secs_f64(opts.settle_secs);
    let settled = settle::wait(&mut cluster, n, settle_deadline);
    let load_end = now_us();
    load.stop();
    let samples = sampler.stop();

    // The master's descriptors may take a moment to drop back (a connection being detached):
    // wait for it, with a deadline.
    let fds_end = settle::poll(STEP_DEADLINE, || {
        let fds = procfs::fd_count(cluster.pid).unwrap_or(usize::MAX);
        (fds <= fds_start).then_some(fds)
    })
    .unwrap_or_else(|| procfs::fd_count(cluster.pid).unwrap_or(usize::MAX));
    let rss_end = procfs::rss_kib(cluster.pid).unwrap_or(u64::MAX);

    eprintln!("chaos: stopping the cluster with SIGTERM");
    let stopped = cluster.stop(STEP_DEADLINE);
    let leftovers = cluster.leftovers();
    watch.stop();
    let _ = watch_thread.join();
    let dumps = diag.stop();

    let deaths = watch.deaths.lock().unwrap().clone();
    let log = cluster.log.lock().unwrap();
    let (kills, exits) = report::kills(&chaos, &deaths, &log.kills, &log.exits);
    let failures = stats.failures.lock().unwrap().clone();
    let outcome = Outcome {
        opts,
        chaos_s: secs(chaos_end - chaos_start),
        load_s: secs(load_end - chaos_start),
        stats: &stats,
        attributions: failures
            .iter()
            .map(|f| report::attribute(f, &kills))
            .collect(),
        failures,
        chaos,
        kills,
        exits,
        workers_seen: watch.seen.lock().unwrap().len(),
        watch_max_gap: watch.max_gap.load(std::sync::atomic::Ordering::SeqCst),
        settled,
        fds: (fds_start, fds_end),
        rss_kib: (rss_start, rss_end),
        stopped,
        leftovers: leftovers.iter().map(|p| p.0).collect(),
        samples,
        master: cluster.pid,
        log: &log,
        log_path: cluster.log_path.display().to_string(),
        dumps,
    };
    let (pass, text, json) = outcome.judge();
    // The human summary, then the JSON line last.
    print!("{text}");
    println!("{json}");
    Ok(pass)
}
