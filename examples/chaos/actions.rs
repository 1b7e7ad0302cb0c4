//! The chaos itself: at random intervals, SIGKILL a worker, SIGSTOP one (and leave it
//! stopped), ask for a rolling reload, or have a worker report itself unhealthy.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::http::{pid_in, Stats};
use crate::opts::{Action, Opts, Rng};
use crate::procfs::{now_us, secs};
use crate::watch::Watch;

/// What the driver did, when.
#[derive(Debug, Clone)]
pub struct Event {
    pub at: u64,
    pub action: Action,
    /// The worker signalled, or the one that answered the request.
    pub pid: Option<u32>,
    /// Whether it was done (a request that failed, or no worker to pick, is not).
    pub done: bool,
    pub detail: String,
}

#[derive(Default)]
pub struct Chaos {
    pub events: Vec<Event>,
}

impl Chaos {
    /// The pids the driver sent `action`'s signal to, with when.
    pub fn signalled(&self, action: Action) -> Vec<(u32, u64)> {
        self.events
            .iter()
            .filter(|e| e.action == action && e.done)
            .filter_map(|e| Some((e.pid?, e.at)))
            .collect()
    }

    pub fn count(&self, action: Action) -> usize {
        self.events
            .iter()
            .filter(|e| e.action == action && e.done)
            .count()
    }
}

/// Causes chaos until `until` (driver time, µs); `alive` says whether the master still runs.
pub fn run(
    opts: &Opts,
    port: u16,
    watch: &Watch,
    stats: &Stats,
    rng: &mut Rng,
    until: u64,
    mut alive: impl FnMut() -> bool,
) -> Result<Chaos, String> {
    let mut chaos = Chaos::default();
    let mut stopped_by_us = BTreeSet::new();
    loop {
        let pause = rng.between(opts.interval).as_micros() as u64;
        let at = now_us() + pause;
        if at >= until {
            sleep_until(until);
            return Ok(chaos);
        }
        sleep_until(at);
        if !alive() {
            return Err("the master exited during the chaos".into());
        }
        let action = opts.actions[rng.below(opts.actions.len())];
        let event = match action {
            Action::Kill | Action::Stop => {
                signal(opts, action, watch, stats, rng, &mut stopped_by_us)
            }
            Action::Reload | Action::Unhealthy => {
                let route = if action == Action::Reload {
                    "/reload"
                } else {
                    "/unhealthy"
                };
                let at = now_us();
                let r = stats.control(port, "POST", route);
                Event {
                    at,
                    action,
                    pid: r.as_ref().and_then(|r| pid_in(&r.body)),
                    done: r.is_some(),
                    detail: match r {
                        Some(_) => format!("POST {route}"),
                        None => format!("POST {route} failed"),
                    },
                }
            }
        };
        eprintln!(
            "[{:8.3}] {:9} {} {}",
            secs(event.at),
            action.name(),
            event.pid.map_or("-".into(), |p| p.to_string()),
            event.detail
        );
        chaos.events.push(event);
    }
}

/// SIGKILL or SIGSTOP a worker: preferably one that served a request in the last 2 s (a Ready
/// worker), else any live child of the master that is not stopped. At most N-1 workers are
/// left stopped at a time, so that one is always running.
fn signal(
    opts: &Opts,
    action: Action,
    watch: &Watch,
    stats: &Stats,
    rng: &mut Rng,
    stopped_by_us: &mut BTreeSet<u32>,
) -> Event {
    let (running, stopped) = watch.live_split();
    let running: Vec<u32> = running
        .into_iter()
        .filter(|p| !stopped_by_us.contains(p))
        .collect();
    let stopped_now = stopped.len().max(
        stopped_by_us
            .iter()
            .filter(|p| watch.live.lock().unwrap().contains_key(p))
            .count(),
    );
    let serving = stats.serving_since(now_us().saturating_sub(2_000_000));
    let preferred: Vec<u32> = running
        .iter()
        .copied()
        .filter(|p| serving.contains(p))
        .collect();
    let pool = if preferred.is_empty() {
        &running
    } else {
        &preferred
    };
    let skip = |why: String| Event {
        at: now_us(),
        action,
        pid: None,
        done: false,
        detail: format!("skipped: {why}"),
    };
    if pool.is_empty() {
        return skip("no running worker".into());
    }
    if action == Action::Stop && stopped_now + 1 >= opts.workers {
        return skip(format!("{stopped_now} worker(s) already stopped"));
    }
    let pid = pool[rng.below(pool.len())];
    let sig = if action == Action::Kill {
        libc::SIGKILL
    } else {
        libc::SIGSTOP
    };
    let at = now_us();
    // SAFETY: kill has no memory-safety preconditions.
    let rc = unsafe { libc::kill(pid as i32, sig) };
    if rc != 0 {
        return skip(format!("kill({pid}): {}", std::io::Error::last_os_error()));
    }
    if action == Action::Stop {
        stopped_by_us.insert(pid);
    } else {
        watch.killed.lock().unwrap().push((pid, at));
    }
    Event {
        at,
        action,
        pid: Some(pid),
        done: true,
        detail: if action == Action::Kill {
            "SIGKILL".into()
        } else {
            "SIGSTOP (left stopped)".into()
        },
    }
}

fn sleep_until(at: u64) {
    let now = now_us();
    if at > now {
        std::thread::sleep(Duration::from_micros(at - now));
    }
}
