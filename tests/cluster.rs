//! The cluster with real processes: `examples/cluster-helper` started as a master with its
//! workers, driven over HTTP, its logs and signals. Every wait is on an event, with a generous
//! deadline; every cluster is killed (its whole process group) when its test ends.

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;
use serde_json::Value;

fn id_of(v: &Value) -> (u64, u64, u32) {
    (
        v["slot"].as_u64().unwrap(),
        v["generation"].as_u64().unwrap(),
        v["pid"].as_u64().unwrap() as u32,
    )
}

fn line_has(line: &str, parts: &[&str]) -> bool {
    parts.iter().all(|p| line.contains(p))
}

#[test]
fn ready_count_matches_the_workers() {
    let helper = Helper::start(3, &[]);
    let status = helper.wait_ready(3);
    let pids: Vec<u32> = serde_json::from_value(helper.get("/map")["pids"].clone()).unwrap();
    assert_eq!(
        pids,
        ready_pids(&status),
        "map: one pid per Ready worker, in slot order"
    );
    assert_eq!(pids.iter().collect::<BTreeSet<_>>().len(), 3);
    assert_eq!(status["phase"], "Running");
}

#[test]
fn messages_cross_processes() {
    let helper = Helper::start(3, &[]);
    let status = helper.wait_ready(3);
    let pids = ready_pids(&status);

    // map: one typed reply per worker, in slot order.
    let ids: Vec<(u32, u64, u32)> = serde_json::from_value(helper.get("/ids")).unwrap();
    assert_eq!(ids.iter().map(|i| i.0).collect::<Vec<_>>(), vec![0, 1, 2]);
    assert_eq!(ids.iter().map(|i| i.2).collect::<Vec<_>>(), pids);

    // broadcast reaches every Ready worker, the sender included.
    let sender = helper.get("/broadcast")["pid"].as_u64().unwrap() as u32;
    assert!(pids.contains(&sender));
    let deadline = Instant::now() + DEADLINE;
    loop {
        let ticks: Vec<u64> = serde_json::from_value(helper.get("/ticks")).unwrap();
        if ticks == vec![1, 1, 1] {
            break;
        }
        assert!(
            ticks.iter().all(|&t| t <= 1),
            "a tick counted twice: {ticks:?}"
        );
        assert!(
            Instant::now() < deadline,
            "broadcast not delivered everywhere: {ticks:?}"
        );
    }

    // consume runs exactly once per call, on one of the workers.
    for _ in 0..12 {
        let pid = helper.get("/consume")["pid"].as_u64().unwrap() as u32;
        assert!(pids.contains(&pid));
    }
    let done: Vec<u64> = serde_json::from_value(helper.get("/work-done")).unwrap();
    assert_eq!(done.iter().sum::<u64>(), 12, "consume ran {done:?}");

    // worker -> master, and master -> every worker.
    assert_eq!(helper.get("/master/echo?s=hello"), "hello");
    let from_master: Vec<u32> = serde_json::from_value(helper.get("/master/map")).unwrap();
    assert_eq!(from_master, pids);
}

#[test]
fn a_killed_worker_is_replaced_and_the_port_never_refuses() {
    let helper = Helper::start(2, &[]);
    let status = helper.wait_ready(2);
    let victim = workers(&status)[0].clone();
    // Every worker learns the Ready set from its maps (and keeps it) before the kill.
    for _ in 0..6 {
        let pids: Vec<u32> = serde_json::from_value(helper.get("/map")["pids"].clone()).unwrap();
        assert_eq!(pids, ready_pids(&status));
    }

    let stop = Arc::new(AtomicBool::new(false));
    let (refused, served) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load = {
        let (stop, refused, served, port) =
            (stop.clone(), refused.clone(), served.clone(), helper.port);
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                match Conn::connect(port) {
                    Err(_) => {
                        refused.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(mut conn) => {
                        // A request on the very connection the killed worker held may fail;
                        // what must never happen is a refused connection.
                        if conn.request("GET", "/hello").is_ok() {
                            served.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
            }
        })
    };
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(victim.2 as i32), Signal::SIGKILL).unwrap();
    let status = helper.wait_status("slot 0 replaced", |s| {
        let ws = workers(s);
        ws.len() == 2 && ws.iter().all(|w| w.3 == "Ready") && ws[0].1 == victim.1 + 1
    });
    // Maps after the change list the replacement, whichever worker asks.
    for _ in 0..6 {
        let pids: Vec<u32> = serde_json::from_value(helper.get("/map")["pids"].clone()).unwrap();
        assert_eq!(pids, ready_pids(&status), "map after the replacement");
    }
    let before = served.load(Ordering::SeqCst);
    let deadline = Instant::now() + DEADLINE;
    while served.load(Ordering::SeqCst) < before + 50 {
        assert!(
            Instant::now() < deadline,
            "no load served after the replacement"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::SeqCst);
    load.join().unwrap();
    assert_eq!(
        refused.load(Ordering::SeqCst),
        0,
        "connections were refused"
    );
    assert_eq!(status["slots"][0]["restarts"], 1);
    helper.out.wait_line("the exit logged with its cause", |l| {
        line_has(l, &["worker exited", "slot=0", "killed by SIGKILL"])
    });
}

/// "150.3ms", "1.2s", "0ns" (a `Duration`'s Debug form) in seconds.
fn parse_duration(s: &str) -> f64 {
    let split = s
        .find(|c: char| c.is_ascii_alphabetic() || c == 'µ')
        .unwrap();
    let (num, unit) = s.split_at(split);
    let num: f64 = num.parse().unwrap();
    num * match unit {
        "s" => 1.0,
        "ms" => 1e-3,
        "µs" => 1e-6,
        "ns" => 1e-9,
        other => panic!("unit {other}"),
    }
}

#[test]
fn a_crash_loop_backs_off_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let crash = dir.path().join("crash");
    let env = [
        ("HELPER_CRASH_FILE", crash.display().to_string()),
        ("HELPER_BACKOFF_INITIAL_MS", "200".into()),
        ("HELPER_BACKOFF_MAX_MS", "800".into()),
        ("HELPER_STABLE_AFTER_MS", "60000".into()),
    ];
    let helper = Helper::start(2, &env);
    let status = helper.wait_ready(2);
    let slot1 = workers(&status)[1].2;
    std::fs::write(&crash, b"").unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(slot1 as i32), Signal::SIGKILL).unwrap();
    // Six deaths in a row: restart delays 0, then 200, 400, 800 ms, then capped at 800 ms.
    let mut delays = Vec::new();
    let mut from = 0;
    for _ in 0..6 {
        let (i, line) = helper.out.wait_line_from(from, "a restart of slot 1", |l| {
            line_has(l, &["restarting its slot", "slot=1"])
        });
        from = i + 1;
        let delay = line
            .split("restart_in=")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap();
        delays.push(parse_duration(delay));
    }
    assert_eq!(
        delays[0], 0.0,
        "the first death is restarted at once: {delays:?}"
    );
    for (i, expected) in [0.2, 0.4, 0.8, 0.8, 0.8].iter().enumerate() {
        let d = delays[i + 1];
        assert!(
            d <= *expected && d >= expected * 0.75,
            "delay {} of {delays:?}",
            i + 1
        );
    }
    // Slot 0 kept serving meanwhile, and the slot recovers once the cause is gone.
    assert_eq!(helper.get("/hello"), "hello world");
    std::fs::remove_file(&crash).unwrap();
    let status = helper.wait_ready(2);
    assert!(status["slots"][1]["restarts"].as_u64().unwrap() >= 6);
}

/// Checks, in the master's log, that `old`'s replacement got Ready before `old` was drained or
/// killed, and waits for `old` to be gone.
fn assert_replaced_new_first(helper: &Helper, old: (u64, u64, u32)) {
    let (slot, generation, pid) = old;
    let new = format!("slot={slot} generation={}", generation + 1);
    let old_tag = format!("slot={slot} generation={generation} ");
    let (ready_at, _) = helper.out.wait_line_from(0, "the replacement Ready", |l| {
        line_has(l, &["worker ready", &new])
    });
    let (stop_at, _) = helper.out.wait_line_from(0, "the old worker stopped", |l| {
        (l.contains("draining worker") || l.contains("killing worker")) && l.contains(&old_tag)
    });
    assert!(
        ready_at < stop_at,
        "the old worker was stopped before its replacement was Ready"
    );
    wait_gone(&[pid]);
    helper.wait_ready(2);
}

#[test]
fn an_unhealthy_worker_is_replaced_new_first() {
    let helper = Helper::start(2, &[]);
    helper.wait_ready(2);
    let old = id_of(&helper.post("/unhealthy"));
    helper.out.wait_line("the report", |l| {
        line_has(l, &["worker unhealthy", "asked by the test"])
    });
    assert_replaced_new_first(&helper, old);
}

#[test]
fn a_panicking_worker_is_replaced_new_first() {
    // The master logs each report at debug level (and once per worker, at warn, when it acts).
    let helper = Helper::start(2, &[("RUST_LOG", "info,cluster::master::run=debug".into())]);
    helper.wait_ready(2);
    // Five tasks panic: one report.
    let old = id_of(&helper.post("/panic"));
    helper.out.wait_line("the report", |l| {
        line_has(l, &["worker unhealthy", "panicked"])
    });
    assert_replaced_new_first(&helper, old);
    let reports = |lines: &[String]| {
        lines
            .iter()
            .filter(|l| {
                line_has(
                    l,
                    &[
                        "worker reports itself unhealthy",
                        &format!("slot={} generation={}", old.0, old.1),
                    ],
                )
            })
            .count()
    };
    assert_eq!(
        reports(&helper.out.lines()),
        1,
        "one report for five panics"
    );
}

/// A master bootstrap may ask for the status and a reload before the workers start: it gets
/// an answer at once (every slot empty; the reload is done, the workers start from the binary
/// as it is), not a hang.
#[test]
fn a_master_bootstrap_may_ask_for_status_and_reload() {
    let helper = Helper::start(2, &[("HELPER_BOOT_ASKS", "1".into())]);
    helper.out.wait_line("the bootstrap's answers", |l| {
        line_has(
            l,
            &["BOOT ASKED", "phase=Starting", "slots=2", "reload=Ok(())"],
        )
    });
    helper.wait_ready(2);
}

#[test]
fn a_hung_worker_is_replaced_new_first_then_killed() {
    let env = [
        ("HELPER_HEARTBEAT_TIMEOUT_MS", "1000".into()),
        ("HELPER_KILL_TIMEOUT_MS", "1500".into()),
    ];
    let helper = Helper::start(2, &env);
    helper.wait_ready(2);
    let old = id_of(&helper.post("/hang"));
    let tag = format!("slot={} generation={} ", old.0, old.1);
    helper.out.wait_line("the heartbeat verdict", |l| {
        line_has(l, &["worker unhealthy", "answered no heartbeat", &tag])
    });
    assert_replaced_new_first(&helper, old);
    helper
        .out
        .wait_line("the kill", |l| line_has(l, &["killing worker", &tag]));
}

#[test]
fn a_reload_under_load_fails_no_request() {
    let helper = Helper::start(2, &[]);
    let old = ready_pids(&helper.wait_ready(2));
    let stop = Arc::new(AtomicBool::new(false));
    let (failed, served) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let (stop, failed, served, errors) =
                (stop.clone(), failed.clone(), served.clone(), errors.clone());
            let port = helper.port;
            let path = if i == 0 { "/slow?ms=30" } else { "/hello" };
            std::thread::spawn(move || {
                let mut conn = None;
                while !stop.load(Ordering::SeqCst) {
                    let c = match conn.as_mut() {
                        Some(c) => c,
                        None => match Conn::connect(port) {
                            Ok(c) => conn.insert(c),
                            Err(e) => {
                                failed.fetch_add(1, Ordering::SeqCst);
                                errors.lock().unwrap().push(format!("connect: {e}"));
                                continue;
                            }
                        },
                    };
                    match c.request("GET", path) {
                        Ok(r) if r.status == 200 => {
                            served.fetch_add(1, Ordering::SeqCst);
                            if r.close {
                                conn = None;
                            }
                        }
                        Ok(r) => {
                            failed.fetch_add(1, Ordering::SeqCst);
                            errors.lock().unwrap().push(format!("status {}", r.status));
                            conn = None;
                        }
                        Err(e) => {
                            failed.fetch_add(1, Ordering::SeqCst);
                            errors.lock().unwrap().push(format!("request: {e}"));
                            conn = None;
                        }
                    }
                }
            })
        })
        .collect();
    let wait_served = |n: u64| {
        let deadline = Instant::now() + DEADLINE;
        let start = served.load(Ordering::SeqCst);
        while served.load(Ordering::SeqCst) < start + n {
            assert!(Instant::now() < deadline, "the load stalled");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    wait_served(200);
    assert_eq!(helper.post("/reload"), serde_json::json!({ "ok": true }));
    wait_served(200);
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "failed requests: {:?}",
        errors.lock().unwrap()
    );
    let new = ready_pids(&helper.wait_ready(2));
    assert!(
        new.iter().all(|p| !old.contains(p)),
        "old {old:?}, new {new:?}"
    );
    wait_gone(&old);
}

/// A worker told to drain (replaced by a reload) that asks to be Ready again is refused: its
/// slot stays its replacement's, for `map` too, also once the old worker has exited.
#[test]
fn a_replaced_worker_cannot_take_its_slot_back() {
    let helper = Helper::start(2, &[("HELPER_READY_AGAIN", "1".into())]);
    let old = workers(&helper.wait_ready(2));
    helper.post("/reload");
    let status = helper.wait_status("reloaded", |s| {
        let ws = workers(s);
        ws.iter().filter(|w| w.3 == "Ready" && w.1 == 2).count() == 2
    });
    let new = ready_pids(&status);
    for _ in 0..2 {
        helper
            .out
            .wait_line("a drained worker asking to be Ready again", |l| {
                line_has(
                    l,
                    &["asked to be Ready again after draining", "not allowed"],
                )
            });
    }
    wait_gone(&old.iter().map(|w| w.2).collect::<Vec<_>>());
    for _ in 0..6 {
        let pids: Vec<u32> = serde_json::from_value(helper.get("/map")["pids"].clone()).unwrap();
        assert_eq!(pids, new, "every slot keeps its new worker");
    }
    assert_eq!(ready_pids(&helper.wait_ready(2)), new);
}

#[test]
fn a_failed_reload_keeps_the_old_workers() {
    let dir = tempfile::tempdir().unwrap();
    let hold = dir.path().join("hold");
    let env = [
        ("HELPER_HOLD_FILE", hold.display().to_string()),
        ("HELPER_READY_TIMEOUT_MS", "1500".into()),
    ];
    let helper = Helper::start(2, &env);
    let old = ready_pids(&helper.wait_ready(2));
    std::fs::write(&hold, b"").unwrap();
    let err = request(helper.port, "POST", "/reload")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("reload failed") && err.contains("not Ready within"),
        "{err}"
    );
    assert!(err.contains("stopped after 0 of 2 slots"), "{err}");
    std::fs::remove_file(&hold).unwrap();
    let status = helper.wait_ready(2);
    assert_eq!(ready_pids(&status), old, "the old workers keep serving");
    assert_eq!(status["phase"], "Running");
}

#[test]
fn a_reload_after_a_deploy_runs_the_new_binary() {
    // The cluster runs from a copy of the helper, then a "deploy" renames a new copy over it.
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("app");
    std::fs::copy(helper_exe(), &app).unwrap();
    let helper = Helper::start_exe(&app, 2, &[], dir);
    let old = ready_pids(&helper.wait_ready(2));
    let staged = helper.path("app.new");
    std::fs::copy(helper_exe(), &staged).unwrap();
    std::fs::rename(&staged, &app).unwrap();
    let new_inode = std::fs::metadata(&app).unwrap().ino();
    let master_exe = std::fs::read_link(format!("/proc/{}/exe", helper.pid())).unwrap();
    assert!(
        master_exe.display().to_string().ends_with("(deleted)"),
        "{master_exe:?}"
    );

    helper.signal(Signal::SIGUSR2);
    helper
        .out
        .wait_line("the reload's end", |l| l.contains("reload complete"));
    let new = ready_pids(&helper.wait_ready(2));
    assert!(new.iter().all(|p| !old.contains(p)));
    for pid in new {
        let exe = std::fs::metadata(format!("/proc/{pid}/exe")).unwrap();
        assert_eq!(
            exe.ino(),
            new_inode,
            "worker {pid} does not run the new binary"
        );
    }
}

#[test]
fn sigterm_finishes_the_in_flight_request_and_exits_0() {
    let mut helper = Helper::start(2, &[]);
    let pids = ready_pids(&helper.wait_ready(2));
    let port = helper.port;
    let slow = std::thread::spawn(move || request(port, "GET", "/slow?ms=1500"));
    helper
        .out
        .wait_line("the slow request", |l| l.contains("slow request started"));
    helper.signal(Signal::SIGTERM);
    let answer = slow
        .join()
        .unwrap()
        .expect("the in-flight request gets its answer");
    assert_eq!(answer["ms"], 1500);
    let status = helper.wait_exit();
    assert_eq!(status.code(), Some(0), "{status:?}");
    wait_gone(&pids);
    // Nothing listens any more.
    assert!(Conn::connect(port).is_err());
}

#[test]
fn a_second_signal_kills_at_once() {
    let mut helper = Helper::start(2, &[]);
    let pids = ready_pids(&helper.wait_ready(2));
    let port = helper.port;
    let slow = std::thread::spawn(move || request(port, "GET", "/slow?ms=600000"));
    helper
        .out
        .wait_line("the slow request", |l| l.contains("slow request started"));
    helper.signal(Signal::SIGTERM);
    helper.out.wait_line("the drain", |l| {
        l.contains("stopping: draining every worker")
    });
    helper.signal(Signal::SIGINT);
    let status = helper.wait_exit();
    assert_ne!(status.code(), Some(0), "a killed stop is not a clean exit");
    wait_gone(&pids);
    assert!(slow.join().unwrap().is_err());
}

#[test]
fn sigkill_of_the_master_takes_every_worker_down() {
    let mut helper = Helper::start(2, &[]);
    let pids = ready_pids(&helper.wait_ready(2));
    helper.signal(Signal::SIGKILL);
    helper.wait_exit();
    wait_gone(&pids);
}

#[test]
fn a_misdirected_worker_identity_fails_loudly() {
    for (value, expected) in [
        ("garbage", "unknown format"),
        (
            "v1;slot=0;gen=1;master=1;ipc=3;listeners=",
            "not the master pid",
        ),
    ] {
        let out = run_to_exit(
            std::process::Command::new(helper_exe())
                .env(multiprocess::WORKER_ENV, value)
                .env("PORT", "0"),
        );
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("started as a cluster worker") && stderr.contains(expected),
            "{value}: {stderr}"
        );
        assert!(!String::from_utf8_lossy(&out.stdout).contains("LISTENING"));
    }
}

/// A worker count that cannot be meant, or settings that cannot work, are a clear error before
/// anything listens or starts: no panic, no fork per slot.
#[test]
fn absurd_settings_are_a_clear_error_before_anything_starts() {
    for (var, value, expected) in [
        (
            "WORKERS",
            "18446744073709551615",
            "is over the limit of 1024",
        ),
        ("WORKERS", "100000", "is over the limit of 1024"),
        (
            "HELPER_KILL_TIMEOUT_MS",
            "18446744073709551615",
            "kill_timeout",
        ),
        (
            "HELPER_HEARTBEAT_INTERVAL_MS",
            "0",
            "heartbeat_interval is zero",
        ),
    ] {
        let out = run_to_exit(
            std::process::Command::new(helper_exe())
                .env(var, value)
                .env("PORT", "0"),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{var}={value}: {stderr}");
        assert!(
            stderr.contains("invalid configuration") && stderr.contains(expected),
            "{var}={value}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{var}={value}: {stderr}");
        assert!(!String::from_utf8_lossy(&out.stdout).contains("LISTENING"));
        assert!(!stderr.contains("listening"), "{var}={value}: {stderr}");
    }
}

#[test]
fn a_unix_listener_is_shared_and_removed_on_stop() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("app.sock");
    let mut helper = Helper::start(2, &[("HELPER_UNIX", sock.display().to_string())]);
    let pids = ready_pids(&helper.wait_ready(2));
    let mut stream = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    stream
        .write_all(b"GET /id HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let body: Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert!(pids.contains(&(body["pid"].as_u64().unwrap() as u32)));
    helper.signal(Signal::SIGTERM);
    assert_eq!(helper.wait_exit().code(), Some(0));
    assert!(
        !sock.exists(),
        "the socket file is removed when the master exits"
    );
}

#[test]
fn concurrent_reloads_are_coalesced() {
    let helper = Helper::start(2, &[]);
    let old = ready_pids(&helper.wait_ready(2));
    let port = helper.port;
    let asks: Vec<_> = (0..3)
        .map(|_| std::thread::spawn(move || request(port, "POST", "/reload")))
        .collect();
    for ask in asks {
        assert_eq!(
            ask.join().unwrap().unwrap(),
            serde_json::json!({ "ok": true })
        );
    }
    let rollouts = helper
        .out
        .lines()
        .iter()
        .filter(|l| l.contains("reload: rolling every slot"))
        .count();
    assert!(
        (1..=2).contains(&rollouts),
        "{rollouts} rollouts for 3 requests"
    );
    let new = ready_pids(&helper.wait_ready(2));
    assert!(new.iter().all(|p| !old.contains(p)));
}

#[test]
fn a_cluster_started_from_the_test_harness_is_refused() {
    // Re-executing this test binary as a worker would run every test again in every worker.
    let err = multiprocess::Cluster::builder()
        .workers(2)
        .worker(|_| async { Ok(()) })
        .run()
        .unwrap_err();
    assert!(err.to_string().contains("cargo test harness"), "{err}");
}
