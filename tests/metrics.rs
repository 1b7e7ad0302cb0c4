//! The master's Prometheus endpoint against a running cluster: the cluster's own metrics and the
//! workers' `metrics` facade merged (counters summed, also past a worker's exit; gauges per
//! worker; histograms bucket by bucket), checked with Prometheus's own parser (`promtool`).

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use common::{ready_pids, Conn, Helper};
use nix::sys::signal::Signal;

type Labels = BTreeMap<String, String>;

/// One sample line of the text format: name, labels, value.
#[derive(Debug)]
struct Line {
    name: String,
    labels: Labels,
    value: f64,
}

/// The sample lines of a scrape (the label values these tests use have no escapes).
fn parse(text: &str) -> Vec<Line> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("name and value");
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => {
                    let labels = rest
                        .trim_end_matches('}')
                        .split("\",")
                        .map(|kv| {
                            let (k, v) = kv.split_once("=\"").expect("label");
                            (k.to_owned(), v.trim_end_matches('"').to_owned())
                        })
                        .collect();
                    (name, labels)
                }
                None => (series, Labels::new()),
            };
            let value = match value {
                "+Inf" => f64::INFINITY,
                "NaN" => f64::NAN,
                v => v.parse().unwrap_or_else(|_| panic!("value in {l:?}")),
            };
            Line {
                name: name.to_owned(),
                labels,
                value,
            }
        })
        .collect()
}

struct Scrape {
    text: String,
    lines: Vec<Line>,
}

impl Scrape {
    /// Every series of `name` whose labels include `labels`.
    fn all(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&Line> {
        self.lines
            .iter()
            .filter(|l| l.name == name)
            .filter(|l| {
                labels
                    .iter()
                    .all(|(k, v)| l.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect()
    }

    /// The one series of `name` with exactly `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<_> = self
            .all(name, labels)
            .into_iter()
            .filter(|l| l.labels.len() == labels.len())
            .collect();
        assert_eq!(found.len(), 1, "{name} {labels:?} in:\n{}", self.text);
        found[0].value
    }
}

/// A cluster of `workers` with its metrics endpoint on a port of its own; the endpoint's port.
fn start(workers: usize, env: &[(&str, String)]) -> (Helper, u16) {
    let mut env = env.to_vec();
    env.push(("METRICS_ADDR", "127.0.0.1:0".into()));
    let helper = Helper::start(workers, &env);
    let line = helper.out.wait_line("the metrics endpoint", |l| {
        l.contains("metrics endpoint: http://")
    });
    let addr = line.split("http://").nth(1).unwrap();
    let port = addr.split(['/', ':']).nth(1).unwrap().parse().unwrap();
    helper.wait_ready(workers);
    (helper, port)
}

/// Scrapes the endpoint, and has `promtool` check what it answered.
fn scrape(port: u16) -> Scrape {
    scrape_linting(port, &[])
}

/// Scrapes, and has `promtool` check what it answered: it must parse, and the only lint
/// problems allowed are those of the metrics named in `unlinted` (a user's own names).
fn scrape_linting(port: u16, unlinted: &[&str]) -> Scrape {
    let response = Conn::connect(port)
        .unwrap()
        .request("GET", "/metrics")
        .unwrap();
    assert_eq!(response.status, 200, "{}", response.body);
    promtool_check(&response.body, unlinted);
    Scrape {
        lines: parse(&response.body),
        text: response.body,
    }
}

/// `promtool check metrics`: Prometheus's parser and linter.
fn promtool_check(text: &str, unlinted: &[&str]) {
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => panic!(
            "cannot run promtool ({e}): install Debian's `prometheus` package, as .ci/run does"
        ),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Exit status 3 is lint problems only, one line each, starting with the metric's name;
    // anything else (1: the text did not parse) fails.
    let only_allowed_lints = out.status.code() == Some(3)
        && said.lines().all(|l| {
            unlinted
                .iter()
                .any(|name| l.starts_with(&format!("{name} ")))
        });
    assert!(
        out.status.success() || only_allowed_lints,
        "promtool ({}): {said}\nin:\n{text}",
        out.status
    );
}

#[test]
fn every_worker_is_merged_and_promtool_reads_it() {
    let (helper, port) = start(2, &[]);
    // Until both workers have answered some: the sum below is over both.
    let mut by_slot = [0u32; 2];
    while by_slot.contains(&0) {
        let slot = helper.get("/id")["slot"].as_u64().unwrap() as usize;
        by_slot[slot] += 1;
        assert!(
            by_slot[0] + by_slot[1] < 10_000,
            "one worker took every connection"
        );
    }
    for _ in 0..10 {
        helper.get("/consume");
    }
    let s = scrape(port);

    // Counters summed over the workers, whichever took each request.
    let ids = f64::from(by_slot[0] + by_slot[1]);
    assert_eq!(s.value("helper_requests_total", &[("route", "/id")]), ids);
    assert_eq!(
        s.value("helper_requests_total", &[("route", "/consume")]),
        10.0
    );
    // A histogram merged bucket by bucket: every request, in the builder's buckets.
    let requests: f64 = s
        .all("helper_requests_total", &[])
        .iter()
        .map(|l| l.value)
        .sum();
    assert_eq!(s.value("helper_request_seconds_count", &[]), requests);
    let buckets = s.all("helper_request_seconds_bucket", &[]);
    let les: Vec<&str> = buckets.iter().map(|l| l.labels["le"].as_str()).collect();
    assert_eq!(les, ["0.001", "0.01", "0.1", "1", "+Inf"]);
    assert_eq!(buckets.last().unwrap().value, requests);
    // Gauges one per worker, labelled with its slot and generation.
    let status = helper.status();
    let mut pids: Vec<(String, f64)> = s
        .all("helper_pid", &[])
        .iter()
        .map(|l| (l.labels["slot"].clone(), l.value))
        .collect();
    pids.sort_by(|a, b| a.0.cmp(&b.0));
    let expected: Vec<(String, f64)> = ready_pids(&status)
        .iter()
        .enumerate()
        .map(|(slot, pid)| (slot.to_string(), f64::from(*pid)))
        .collect();
    assert_eq!(pids, expected);

    // The cluster's own.
    assert_eq!(s.value("multiprocess_workers", &[("state", "ready")]), 2.0);
    assert_eq!(s.value("multiprocess_slots", &[]), 2.0);
    assert!(s.value("multiprocess_messages_routed_total", &[("kind", "consume")]) >= 10.0);
    let consumes = s.value(
        "multiprocess_call_duration_seconds_count",
        &[("kind", "consume")],
    );
    assert!(consumes >= 10.0, "{consumes}");
    for slot in ["0", "1"] {
        let rss = s.all("multiprocess_resident_memory_bytes", &[("slot", slot)]);
        assert!(rss.len() == 1 && rss[0].value > 0.0, "{rss:?}");
        assert_eq!(
            s.all("multiprocess_queued_frames", &[("slot", slot)]).len(),
            1
        );
    }
    assert!(s.value("multiprocess_resident_memory_bytes", &[("slot", "master")]) > 0.0);
    assert_eq!(s.value("multiprocess_metrics_unanswered", &[]), 0.0);
    assert_eq!(s.value("multiprocess_metrics_dropped_series", &[]), 0.0);
    // The master's housekeeping (heartbeats, this scrape's collection) under a kind of its own,
    // apart from the service's calls; no call of the service's failed, and the family of
    // failures is there all the same.
    assert!(s.value("multiprocess_calls_total", &[("kind", "control")]) >= 2.0);
    assert!(s
        .all("multiprocess_calls_total", &[("kind", "request_worker")])
        .is_empty());
    assert!(s.all("multiprocess_call_errors_total", &[]).is_empty());
    assert!(
        s.text
            .contains("# TYPE multiprocess_call_errors_total counter\n"),
        "{}",
        s.text
    );

    // Anything but GET /metrics.
    let other = Conn::connect(port).unwrap().request("GET", "/").unwrap();
    assert_eq!(other.status, 404);
    let post = Conn::connect(port)
        .unwrap()
        .request("POST", "/metrics")
        .unwrap();
    assert_eq!(post.status, 405);
}

#[test]
fn sums_survive_a_crash_and_a_reload() {
    // One worker: the one that crashes counted every request.
    let (helper, port) = start(1, &[]);
    for _ in 0..20 {
        helper.get("/hello");
    }
    assert_eq!(
        scrape(port).value("helper_requests_total", &[("route", "/hello")]),
        20.0
    );
    let before = ready_pids(&helper.status());
    let _ = Conn::connect(helper.port)
        .unwrap()
        .request("POST", "/crash");
    helper.wait_status("a crashed worker replaced", |s| {
        let now = ready_pids(s);
        now.len() == 1 && now != before
    });
    let s = scrape(port);
    // What the crashed worker counted before the last scrape is still in the sum.
    assert_eq!(
        s.value("helper_requests_total", &[("route", "/hello")]),
        20.0
    );
    assert_eq!(
        s.value("multiprocess_restarts_total", &[("cause", "exited")]),
        1.0
    );
    assert_eq!(s.all("helper_pid", &[]).len(), 1, "{}", s.text);

    helper.post("/reload");
    helper.wait_ready(1);
    let s = scrape(port);
    assert_eq!(
        s.value("helper_requests_total", &[("route", "/hello")]),
        20.0
    );
    assert_eq!(
        s.value("multiprocess_reloads_total", &[("outcome", "succeeded")]),
        1.0
    );
    let generations: Vec<&str> = s
        .all("helper_pid", &[])
        .iter()
        .map(|l| l.labels["generation"].as_str())
        .collect();
    assert!(
        generations.iter().all(|g| *g != "1"),
        "the replaced workers' gauges are gone: {generations:?}"
    );
}

#[test]
fn what_a_worker_may_not_record_is_dropped_and_the_rest_still_parses() {
    let (helper, port) = start(1, &[]);
    for query in [
        // The cluster's own prefix: a worker may not forge the cluster's metrics.
        "name=multiprocess_workers&kind=gauge&value=99",
        // A name and a label value Prometheus would not take as they are.
        "name=bad%20name-%C3%A9&kind=counter&value=3&label=a%22b%5Cc%0Ad",
        // The same name as another type: the first type stays.
        "name=twice&kind=counter&value=1",
        "name=twice&kind=gauge&value=5",
    ] {
        helper.get(&format!("/record?{query}"));
    }
    // Lints of the names the test chose are its own business; the text must still parse.
    let s = scrape_linting(port, &["bad_name__", "twice"]);
    assert_eq!(s.value("multiprocess_workers", &[("state", "ready")]), 1.0);
    assert!(s.value("multiprocess_metrics_dropped_series", &[]) >= 1.0);
    assert_eq!(s.all("bad_name__", &[]).len(), 1, "{}", s.text);
    assert!(
        s.text.contains(r#"bad_name__{l="a\"b\\c\nd"} 3"#),
        "{}",
        s.text
    );
    assert_eq!(s.value("twice", &[]), 1.0);
}

#[test]
fn a_stopped_worker_does_not_hold_up_the_scrape() {
    // No heartbeat deadline in the test's way: the stopped worker stays connected.
    let env = [("HELPER_HEARTBEAT_TIMEOUT_MS", "600000".to_owned())];
    let (helper, port) = start(2, &env);
    for _ in 0..10 {
        helper.get("/hello");
    }
    let counted = scrape(port).value("helper_requests_total", &[("route", "/hello")]);
    let stopped = ready_pids(&helper.status())[0];
    let pid = nix::unistd::Pid::from_raw(stopped as i32);
    struct Resume(nix::unistd::Pid);
    impl Drop for Resume {
        fn drop(&mut self) {
            let _ = nix::sys::signal::kill(self.0, Signal::SIGCONT);
        }
    }
    nix::sys::signal::kill(pid, Signal::SIGSTOP).unwrap();
    let _resume = Resume(pid);
    let s = scrape(port);
    assert_eq!(s.value("multiprocess_metrics_unanswered", &[]), 1.0);
    // Its last sample stands in.
    assert_eq!(
        s.value("helper_requests_total", &[("route", "/hello")]),
        counted
    );
}
