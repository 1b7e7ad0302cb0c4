//! Single-process mode (`MULTIPROCESS_SINGLE_PROCESS=1`): the workers are tasks in the master's
//! process, with the same messenger API, reload and stop.

mod common;

use common::{request, workers, Conn, Helper, Load};
use nix::sys::signal::Signal;

fn single(workers: usize, env: &[(&str, String)]) -> Helper {
    let mut env = env.to_vec();
    env.push(("MULTIPROCESS_SINGLE_PROCESS", "1".into()));
    let helper = Helper::start(workers, &env);
    helper.wait_ready(workers);
    helper
}

/// The processes whose parent is `pid`.
fn children(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        let ppid = stat.rsplit(')').next().unwrap().split_whitespace().nth(1);
        if ppid == Some(pid.to_string().as_str()) {
            found.push(child);
        }
    }
    found
}

#[test]
fn workers_are_tasks_of_the_master_with_the_same_messenger() {
    let mut helper = single(2, &[]);
    let master = helper.pid() as u32;
    assert_eq!(children(master), Vec::<u32>::new(), "no worker process");
    let status = helper.status();
    let live = workers(&status);
    assert_eq!(live.len(), 2, "{status}");
    assert!(
        live.iter().all(|w| w.2 == master && w.3 == "Ready"),
        "{status}"
    );

    // map: one answer per worker, each the master's pid; broadcast reaches both.
    assert_eq!(
        helper.get("/map")["pids"],
        serde_json::json!([master, master])
    );
    helper.get("/broadcast");
    let ticks = helper.get("/ticks");
    assert_eq!(ticks, serde_json::json!([1, 1]), "{ticks}");
    // consume runs on both workers, spread evenly.
    for _ in 0..4 {
        assert_eq!(helper.get("/consume")["pid"], master);
    }
    assert_eq!(helper.get("/work-done"), serde_json::json!([2, 2]));
    assert_eq!(helper.get("/master/echo?s=hi"), "hi");

    helper.signal(Signal::SIGTERM);
    assert!(helper.wait_exit().success());
    helper.out.wait_line("the single-process log line", |l| {
        l.contains("single-process mode")
    });
}

#[test]
fn a_reload_restarts_the_bootstrap_new_first_without_a_failed_request() {
    let helper = single(2, &[]);
    let port = helper.port;
    let load = Load::start(port, 4, "/hello");
    for round in 1..=2 {
        let answer = Conn::connect(port)
            .unwrap()
            .request("POST", "/reload")
            .unwrap();
        assert_eq!(answer.status, 200, "reload {round}: {}", answer.body);
        let status = helper.wait_ready(2);
        let generations: Vec<u64> = workers(&status).iter().map(|w| w.1).collect();
        assert_eq!(generations, vec![1 + round, 1 + round], "{status}");
    }
    assert!(load.end_without_failures() > 0);
}

#[test]
fn an_unhealthy_worker_is_replaced_and_metrics_are_not_counted_twice() {
    let helper = single(2, &[("METRICS_ADDR", "127.0.0.1:0".into())]);
    let line = helper.out.wait_line("the metrics endpoint", |l| {
        l.contains("metrics endpoint: http://")
    });
    let metrics_port: u16 = line
        .split("http://")
        .nth(1)
        .and_then(|a| a.split(['/', ':']).nth(1))
        .unwrap()
        .parse()
        .unwrap();
    for _ in 0..7 {
        helper.get("/hello");
    }
    let scrape = Conn::connect(metrics_port)
        .unwrap()
        .request("GET", "/metrics")
        .unwrap()
        .body;
    // One registry for the whole process: counted once, not once per worker.
    assert!(
        scrape
            .lines()
            .any(|l| l == "helper_requests_total{route=\"/hello\"} 7"),
        "{scrape}"
    );
    // A worker reported unhealthy is replaced, new first, the others untouched.
    let status = helper.status();
    helper.post("/unhealthy");
    helper.wait_status("the unhealthy worker replaced", |s| {
        let live = workers(s);
        live.len() == 2 && live.iter().all(|w| w.3 == "Ready") && live != workers(&status)
    });
}

#[test]
fn a_worker_that_does_not_drain_in_time_is_killed_and_replaced() {
    let helper = single(1, &[("HELPER_KILL_TIMEOUT_MS", "300".into())]);
    let port = helper.port;
    // A request that keeps the old worker draining past its kill timeout.
    let slow = std::thread::spawn(move || request(port, "GET", "/slow?ms=3000"));
    helper
        .out
        .wait_line("the slow request", |l| l.contains("slow request started"));
    let answer = Conn::connect(port)
        .unwrap()
        .request("POST", "/reload")
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    helper.out.wait_line("the old worker killed", |l| {
        l.contains("killed (its task was aborted)")
    });
    let status = helper.wait_ready(1);
    assert_eq!(workers(&status)[0].1, 2, "{status}");
    let _ = slow.join();
    // The replacement serves.
    assert_eq!(helper.get("/hello"), "hello world");
}
