//! A hostile worker, through the public API, against a real cluster: events named like the
//! cluster's own (`examples/helper/hostile.rs`).

mod common;

use common::{ready_pids, Helper};
use nix::sys::signal::Signal;

/// The master's log lines.
fn master_lines(helper: &Helper) -> Vec<String> {
    helper
        .out
        .lines()
        .into_iter()
        .filter(|l| l.contains("master{"))
        .collect()
}

#[test]
fn a_worker_cannot_order_another_to_drain() {
    let mut helper = Helper::start(2, &[]);
    let before = ready_pids(&helper.wait_ready(2));
    for slot in [0, 1] {
        let answer = helper.get(&format!("/hostile/drain?slot={slot}"));
        let outcome = answer["outcome"].as_str().unwrap();
        assert!(
            outcome.contains("multiprocess.drain") && outcome.contains("only the master"),
            "slot {slot}: {outcome}"
        );
    }
    // Nothing moved: the same two workers serve, and none was told to drain.
    assert_eq!(ready_pids(&helper.wait_ready(2)), before);
    assert!(
        helper
            .out
            .position(|l| l.contains("told to drain"))
            .is_none(),
        "{:?}",
        helper.out.lines()
    );
    helper.signal(Signal::SIGTERM);
    assert!(helper.wait_exit().success());
}

#[test]
fn unhealthy_reports_in_a_loop_do_not_flood_the_masters_log() {
    let mut helper = Helper::start(2, &[]);
    let before = ready_pids(&helper.wait_ready(2));
    // 2,000 reports of 4 KiB reasons from one worker, 64 at a time.
    let answer = helper.get("/hostile/unhealthy?count=2000&size=4096");
    assert!(answer["taken"].as_u64().unwrap() > 0, "{answer}");
    // The reporter is replaced once, new first: one line for it.
    helper.out.wait_line("the replacement", |l| {
        l.contains("master{") && l.contains("worker unhealthy; starting its replacement")
    });
    helper.wait_status("the reporter replaced", |s| {
        let now = ready_pids(s);
        now.len() == 2 && now.iter().filter(|p| before.contains(p)).count() == 1
    });
    let lines = master_lines(&helper);
    let about = lines.iter().filter(|l| l.contains("unhealthy")).count();
    assert!(about <= 2, "{about} lines about it: {lines:#?}");
    let longest = lines.iter().map(String::len).max().unwrap_or(0);
    assert!(longest < 2048, "a master line of {longest} bytes");
    helper.signal(Signal::SIGTERM);
    assert!(helper.wait_exit().success());
}

#[test]
fn reloads_asked_in_a_loop_do_not_flood_the_masters_log() {
    let mut helper = Helper::start(2, &[]);
    helper.wait_ready(2);
    // 300 reloads asked at once by one worker: coalesced into the rollouts, as always.
    let answer = helper.get("/hostile/reloads?count=300");
    assert_eq!(answer["complete"].as_u64(), Some(300), "{answer}");
    helper.wait_ready(2);
    // One ask and its outcome at info per rollout it waited for (at most two: the one under
    // way, and the one more the others were folded into), not 600 lines.
    let lines = master_lines(&helper);
    let about = lines
        .iter()
        .filter(|l| l.contains("reload asked by"))
        .count();
    assert!(about <= 4, "{about} lines: {lines:#?}");
    helper.signal(Signal::SIGTERM);
    assert!(helper.wait_exit().success());
}
