//! The driver's command line.

use std::time::Duration;

/// One kind of chaos the driver can cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// SIGKILL a worker.
    Kill,
    /// SIGSTOP a worker and leave it stopped: the master must replace it and kill it.
    Stop,
    /// `POST /reload`: a rolling reload.
    Reload,
    /// `POST /unhealthy`: the worker that answers reports itself unhealthy.
    Unhealthy,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Kill => "kill",
            Action::Stop => "stop",
            Action::Reload => "reload",
            Action::Unhealthy => "unhealthy",
        }
    }

    fn parse(s: &str) -> Result<Action, String> {
        Ok(match s {
            "kill" => Action::Kill,
            "stop" => Action::Stop,
            "reload" => Action::Reload,
            "unhealthy" => Action::Unhealthy,
            _ => {
                return Err(format!(
                    "unknown action {s:?} (kill, stop, reload, unhealthy)"
                ))
            }
        })
    }
}

/// Every setting of a run.
#[derive(Debug, Clone)]
pub struct Opts {
    /// How long the chaos lasts.
    pub seconds: f64,
    pub workers: usize,
    /// Concurrent keep-alive HTTP clients.
    pub clients: usize,
    pub seed: u64,
    /// The pause between two chaos actions is drawn from this range.
    pub interval: (Duration, Duration),
    pub actions: Vec<Action>,
    /// The paths the load asks for, in turn.
    pub routes: Vec<String>,
    /// Passed to the demo cluster as HEARTBEAT_TIMEOUT_MS and KILL_TIMEOUT_MS.
    pub heartbeat_timeout_ms: u64,
    pub kill_timeout_ms: u64,
    /// The deadline for the cluster to settle after the chaos (every slot Ready).
    pub settle_secs: f64,
    /// How often the master's memory and descriptors are sampled.
    pub sample_secs: f64,
    /// The master's RSS at the end may exceed its start value by this much.
    pub rss_bound_mib: u64,
    /// Where the cluster's log goes.
    pub log: Option<String>,
    /// The demo cluster binary (default: `demo-cluster` next to this executable).
    pub exe: Option<String>,
}

pub const USAGE: &str = "\
chaos: steady HTTP load on the demo cluster while workers are SIGKILLed, SIGSTOPped, reloaded
and reported unhealthy; then checks that every slot has a Ready worker, that the master's
descriptors and memory are back, and that every failed request was in flight at a SIGKILL.

options:
  --seconds S            how long the chaos lasts (default 120)
  --workers N            worker slots (default 4)
  --clients C            concurrent keep-alive HTTP clients (default 32)
  --seed X               the random seed (default: from the clock; printed)
  --interval A-B         seconds between two chaos actions, drawn from [A, B] (default 0.5-3)
  --actions LIST         which of kill,stop,reload,unhealthy (default all)
  --routes LIST          the paths the load asks for in turn (default /hello,/pid)
  --heartbeat-timeout-ms the cluster's heartbeat timeout (default 2000)
  --kill-timeout-ms      the cluster's kill timeout (default 6000)
  --settle-secs S        deadline for every slot to be Ready again (default 120)
  --sample-secs S        how often the master's RSS and descriptors are sampled (default 5)
  --rss-bound-mib M      allowed growth of the master's RSS (default 16)
  --log FILE             the cluster's log (default: a file in the temp dir)
  --exe FILE             the demo cluster binary (default: demo-cluster next to this one)
";

impl Opts {
    /// Parses the arguments; a later option overrides an earlier one.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Opts, String> {
        let mut o = Opts {
            seconds: 120.0,
            workers: 4,
            clients: 32,
            seed: clock_seed(),
            interval: (Duration::from_millis(500), Duration::from_secs(3)),
            actions: vec![
                Action::Kill,
                Action::Stop,
                Action::Reload,
                Action::Unhealthy,
            ],
            routes: vec!["/hello".into(), "/pid".into()],
            heartbeat_timeout_ms: 2000,
            kill_timeout_ms: 6000,
            settle_secs: 120.0,
            sample_secs: 5.0,
            rss_bound_mib: 16,
            log: None,
            exe: None,
        };
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            if arg == "-h" || arg == "--help" {
                return Err(String::new());
            }
            let (name, inline) = match arg.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (arg.clone(), None),
            };
            let mut value = || {
                inline
                    .clone()
                    .or_else(|| args.next())
                    .ok_or_else(|| format!("{name} needs a value"))
            };
            match name.as_str() {
                "--seconds" => o.seconds = num(&name, &value()?)?,
                "--workers" => o.workers = num(&name, &value()?)?,
                "--clients" => o.clients = num(&name, &value()?)?,
                "--seed" => o.seed = num(&name, &value()?)?,
                "--interval" => {
                    let v = value()?;
                    let (a, b) = v.split_once('-').unwrap_or((&v, &v));
                    let (a, b): (f64, f64) = (num(&name, a)?, num(&name, b)?);
                    if !(a > 0.0 && b >= a) {
                        return Err(format!("{name}: want 0 < A <= B, got {v}"));
                    }
                    o.interval = (Duration::from_secs_f64(a), Duration::from_secs_f64(b));
                }
                "--actions" => {
                    o.actions = list(&value()?)
                        .iter()
                        .map(|s| Action::parse(s))
                        .collect::<Result<_, _>>()?
                }
                "--routes" => o.routes = list(&value()?),
                "--heartbeat-timeout-ms" => o.heartbeat_timeout_ms = num(&name, &value()?)?,
                "--kill-timeout-ms" => o.kill_timeout_ms = num(&name, &value()?)?,
                "--settle-secs" => o.settle_secs = num(&name, &value()?)?,
                "--sample-secs" => o.sample_secs = num(&name, &value()?)?,
                "--rss-bound-mib" => o.rss_bound_mib = num(&name, &value()?)?,
                "--log" => o.log = Some(value()?),
                "--exe" => o.exe = Some(value()?),
                _ => return Err(format!("unknown option {arg:?}")),
            }
        }
        if o.workers == 0 || o.clients == 0 || o.routes.is_empty() {
            return Err("--workers, --clients and --routes must not be zero or empty".into());
        }
        if o.sample_secs <= 0.0 || o.seconds < 0.0 || o.settle_secs <= 0.0 {
            return Err("--seconds, --settle-secs and --sample-secs must be positive".into());
        }
        Ok(o)
    }
}

fn num<T: std::str::FromStr>(name: &str, v: &str) -> Result<T, String> {
    v.trim()
        .parse()
        .map_err(|_| format!("{name}: {v:?} is not a valid number"))
}

fn list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

fn clock_seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    t.as_nanos() as u64 ^ u64::from(std::process::id()) << 32
}

/// SplitMix64: small, seedable, good enough to pick victims and pauses.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// A duration drawn evenly from `[a, b]`.
    pub fn between(&mut self, (a, b): (Duration, Duration)) -> Duration {
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        a + (b - a).mul_f64(unit)
    }
}
