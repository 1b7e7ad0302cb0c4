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
