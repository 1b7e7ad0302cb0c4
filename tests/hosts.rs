//! Two masters as two hosts of one cluster, over a NATS server of the test's own: each lists
//! the other's Ready workers (`multiprocess status`), a master that stops is forgotten at once,
//! one SIGKILLed within the expiry, and a NATS server that is not there stops nothing silently.

#[path = "../messenger/tests/support/nats_server.rs"]
mod nats_server;

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::Helper;
use nats_server::NatsServer;
use nix::sys::signal::Signal;
use serde_json::Value;

/// A host: a master with `workers` workers, joined to `server`'s cluster `cluster` as `name`,
/// with an uplink expiry of `expiry_ms`.
fn host(
    server: &NatsServer,
    cluster: &str,
    name: &str,
    workers: usize,
    expiry_ms: u64,
) -> (Helper, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("ctl").join("control.sock");
    let env = [
        ("CONTROL_SOCKET", socket.display().to_string()),
        ("NATS_URL", server.url()),
        ("CLUSTER_NAME", cluster.to_owned()),
        ("HOST_NAME", name.to_owned()),
        ("HELPER_EXPIRY_MS", expiry_ms.to_string()),
    ];
    let helper = Helper::start_exe(&common::helper_exe(), workers, &env, dir);
    helper.wait_ready(workers);
    (helper, socket)
}

fn status(socket: &Path) -> Value {
    let out = common::run_to_exit(
        Command::new(env!("CARGO_BIN_EXE_multiprocess"))
            .arg("--socket")
            .arg(socket)
            .args(["status", "--json"]),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Waits until the hosts `socket`'s master lists pass `check`.
fn until_hosts(socket: &Path, what: &str, check: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + common::DEADLINE;
    loop {
        let status = status(socket);
        let hosts = status["hosts"].as_array().cloned().unwrap_or_default();
        if check(&hosts) {
            return hosts;
        }
        assert!(Instant::now() < deadline, "{what}: hosts are {hosts:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn two_masters_list_each_others_workers_and_forget_one_that_goes() {
    let server = NatsServer::start();
    // An expiry far past the test's deadline: only b's word that it leaves can make a forget it.
    let (a, socket_a) = host(&server, "two", "host-a", 2, 600_000);
    let (mut b, socket_b) = host(&server, "two", "host-b", 2, 600_000);

    let seen = until_hosts(&socket_a, "a lists b's 2 workers", |h| {
        h.len() == 1 && h[0]["workers"].as_array().map_or(0, Vec::len) == 2
    });
    assert_eq!(seen[0]["name"], "host-b");
    let slots: Vec<u64> = seen[0]["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["slot"].as_u64().unwrap())
        .collect();
    assert_eq!(slots, [0, 1]);
    until_hosts(&socket_b, "b lists a", |h| {
        h.len() == 1 && h[0]["name"] == "host-a"
    });

    // The table shows the other host too.
    let out = common::run_to_exit(
        Command::new(env!("CARGO_BIN_EXE_multiprocess"))
            .arg("--socket")
            .arg(&socket_a)
            .arg("status"),
    );
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(table.contains("host host-b: 2 workers Ready"), "{table}");

    // A graceful stop: b says it leaves, and a forgets it at once.
    b.signal(Signal::SIGTERM);
    assert!(b.wait_exit().success());
    until_hosts(&socket_a, "a forgets b after its stop", |h| h.is_empty());
    drop(a);
}

#[test]
fn a_master_killed_outright_drops_out_within_the_expiry() {
    let server = NatsServer::start();
    let (_a, socket_a) = host(&server, "killed", "host-a", 1, 1000);
    let (mut b, _socket_b) = host(&server, "killed", "host-b", 1, 1000);
    until_hosts(&socket_a, "a lists b", |h| h.len() == 1);
    // SIGKILL: b says nothing; a forgets it when the expiry (1 s) has passed unheard.
    b.signal(Signal::SIGKILL);
    b.wait_exit();
    let killed = Instant::now();
    until_hosts(&socket_a, "a forgets b", |h| h.is_empty());
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(10), "forgotten after {took:?}");
}

#[test]
fn a_nats_server_out_of_reach_is_a_clear_error_and_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(common::helper_exe());
    cmd.env("WORKERS", "1")
        .env("PORT", "0")
        .env("NATS_URL", "nats://127.0.0.1:1")
        .env_remove(multiprocess::WORKER_ENV)
        .current_dir(dir.path());
    let out = common::run_to_exit(&mut cmd);
    assert!(!out.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("NATS at nats://127.0.0.1:1"), "{text}");
    assert!(!text.contains("worker started"), "{text}");
}

/// The demo cluster as one host: a master and `workers` workers on a free port, joined to
/// `server`'s cluster `cluster` as `name`; its process group is killed when dropped.
struct Demo {
    child: std::process::Child,
    port: u16,
}

impl Demo {
    fn start(server: &NatsServer, cluster: &str, name: &str, workers: usize) -> Demo {
        use std::os::unix::process::CommandExt;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let child = Command::new(common::example_exe(&["demo-cluster"]))
            .env("WORKERS", workers.to_string())
            .env("PORT", port.to_string())
            .env("NATS_URL", server.url())
            .env("CLUSTER_NAME", cluster)
            .env("HOST_NAME", name)
            .env_remove(multiprocess::WORKER_ENV)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start the demo cluster");
        Demo { child, port }
    }

    fn get(&self, path: &str) -> Option<Value> {
        common::request(self.port, "GET", path).ok()
    }

    /// Waits until `GET path` passes `check`; returns that answer.
    fn until(&self, path: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + common::DEADLINE;
        loop {
            let got = self.get(path);
            if let Some(value) = got.as_ref().filter(|v| check(v)) {
                return value.clone();
            }
            assert!(Instant::now() < deadline, "{what}: GET {path} said {got:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        let group = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(group, Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        self.kill();
    }
}

fn pids(value: &Value, field: &str) -> Vec<u64> {
    let list = value[field].as_array().cloned().unwrap_or_default();
    list.iter().filter_map(Value::as_u64).collect()
}

#[test]
fn the_demo_clusters_routes_span_hosts_and_a_killed_host_drops_out() {
    let server = NatsServer::start();
    let a = Demo::start(&server, "demo", "host-a", 2);
    let mut b = Demo::start(&server, "demo", "host-b", 2);

    // /map: every Ready worker of both hosts, 4 pids, on either host.
    let map = a.until("/map", "a's /map lists 4 pids", |v| {
        pids(v, "pids").len() == 4
    });
    let all: std::collections::BTreeSet<u64> = pids(&map, "pids").into_iter().collect();
    assert_eq!(all.len(), 4, "4 distinct workers: {map}");
    b.until("/map", "b's /map lists 4 pids", |v| {
        pids(v, "pids").len() == 4
    });

    // /consume: spread evenly over the 4 workers of both hosts.
    let mut runs = std::collections::BTreeMap::new();
    for _ in 0..40 {
        let pid = a.get("/consume").expect("GET /consume")["pid"]
            .as_u64()
            .unwrap();
        *runs.entry(pid).or_insert(0) += 1;
    }
    assert_eq!(
        runs.keys()
            .copied()
            .collect::<std::collections::BTreeSet<_>>(),
        all
    );
    assert!(runs.values().all(|&n| n == 10), "{runs:?}");

    // /broadcast on a: /ticks on b sees every worker of both hosts count it.
    let before = b.until("/ticks", "ticks", |v| pids(v, "ticks").len() == 4);
    a.get("/broadcast").expect("GET /broadcast");
    let grew = |v: &Value| {
        let now = pids(v, "ticks");
        now.len() == 4
            && now
                .iter()
                .zip(pids(&before, "ticks"))
                .all(|(n, b)| *n == b + 1)
    };
    b.until("/ticks", "all 4 workers counted the broadcast", grew);

    // b killed outright: within the expiry (3 s), a's routes span a's own workers only.
    b.kill();
    let map = a.until("/map", "a's /map drops b's workers", |v| {
        pids(v, "pids").len() == 2
    });
    let left: std::collections::BTreeSet<u64> = pids(&map, "pids").into_iter().collect();
    assert!(left.is_subset(&all));
    for _ in 0..10 {
        let pid = a.get("/consume").expect("GET /consume")["pid"]
            .as_u64()
            .unwrap();
        assert!(left.contains(&pid));
    }
}
