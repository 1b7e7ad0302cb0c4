//! The short chaos run of the default suite: `examples/chaos` drives the demo cluster for 15 s
//! (SIGKILL, SIGSTOP, reloads, unhealthy reports under steady HTTP load) and must pass: every
//! slot Ready again, the master's descriptors and memory back, a clean stop, and no failed
//! request that a SIGKILL does not explain. The longer runs are `scripts/chaos.sh` and
//! `scripts/soak.sh`.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The chaos lasts 15 s; start-up, settling (a stopped worker is killed ~8 s after it is
/// stopped) and the stop come on top. Generous, for a loaded CI machine: the driver bounds
/// each of its own steps.
const DEADLINE: Duration = Duration::from_secs(600);

/// Builds the driver and the demo cluster into this test's target dir and profile (the driver
/// starts the `demo-cluster` next to it), and returns the driver's path.
fn chaos_exe() -> PathBuf {
    common::example_exe(&["chaos", "demo-cluster"])
}

/// The driver, in its own process group: dropping this kills the group (the driver puts the
/// cluster in a group of its own, whose master dies with the driver by PR_SET_PDEATHSIG).
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe {
            libc::kill(-(self.0.id() as i32), libc::SIGKILL);
        }
        let _ = self.0.wait();
    }
}

fn collect(stream: impl Read + Send + 'static, into: &Arc<Mutex<Vec<String>>>) {
    let into = into.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            into.lock().unwrap().push(line);
        }
    });
}

#[test]
fn chaos_short_run_passes() {
    let exe = chaos_exe();
    let seed = std::env::var("CHAOS_SEED").unwrap_or_else(|_| "20251130".into());
    // The cluster's log goes in a directory removed at the end, pass or fail (its last lines
    // are printed when the run fails).
    let dir = tempfile::tempdir().expect("a temp dir");
    let log = dir.path().join("cluster.log");
    let mut child = Command::new(exe)
        .arg("--log")
        .arg(&log)
        .args(["--seconds", "15", "--workers", "3", "--clients", "8"])
        .args(["--seed", &seed, "--interval", "0.5-2", "--sample-secs", "2"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("start the chaos driver");
    let out = Arc::new(Mutex::new(Vec::new()));
    let err = Arc::new(Mutex::new(Vec::new()));
    collect(child.stdout.take().unwrap(), &out);
    collect(child.stderr.take().unwrap(), &err);
    let mut driver = Driver(child);
    let start = Instant::now();
    let status = loop {
        if let Some(status) = driver.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "the chaos driver did not finish within {DEADLINE:?}; it printed:\n{}",
            err.lock().unwrap().join("\n")
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    // The reader threads end at EOF, which the driver's exit brings (the cluster's own output
    // goes to its log file, not these pipes).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !out.lock().unwrap().iter().any(|l| l.starts_with('{')) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = out.lock().unwrap().join("\n");
    let cluster_log = std::fs::read_to_string(&log).unwrap_or_default();
    let tail: Vec<&str> = cluster_log.lines().rev().take(60).collect();
    let printed = format!(
        "stdout:\n{out}\nstderr:\n{}\nthe cluster's last log lines:\n{}",
        err.lock().unwrap().join("\n"),
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    );
    assert!(
        status.success(),
        "the chaos run failed ({status}):\n{printed}"
    );
    let report: Value = out
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON report:\n{printed}"));
    assert_eq!(report["result"], "pass", "{printed}");
    let requests = &report["requests"];
    assert!(requests["sent"].as_u64().unwrap() > 0, "{printed}");
    assert!(requests["ok"].as_u64().unwrap() > 0, "{printed}");
    assert_eq!(report["attributed"]["unattributed"], 0, "{printed}");
    let failed = report["failed_requests"].as_array().unwrap();
    assert!(
        failed.iter().all(|f| f["attributed"].is_string()),
        "a failed request no SIGKILL explains:\n{printed}"
    );
    let actions = &report["actions"];
    let done: u64 = ["kill", "stop", "reload", "unhealthy"]
        .iter()
        .map(|a| actions[a].as_u64().unwrap())
        .sum();
    assert!(done > 0, "no chaos happened:\n{printed}");
    assert_eq!(report["settle"]["ok"], true, "{printed}");
    assert_eq!(report["master"]["exit_code"], 0, "{printed}");
}
