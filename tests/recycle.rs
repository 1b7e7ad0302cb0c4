//! Recycling by policy with real processes: the worker past it is replaced new first and
//! drained, and no request fails meanwhile.

mod common;

use common::{ready_pids, request, workers, Helper, Load};

#[test]
fn a_worker_past_its_message_budget_is_replaced_without_a_failed_request() {
    let helper = Helper::start(1, &[("HELPER_RECYCLE_MESSAGES", "20".into())]);
    helper.wait_ready(1);
    let port = helper.port;
    // Every consume is given to the one worker (it runs what it asks): past 20, it is recycled.
    for n in 0..60 {
        let answer = request(port, "GET", "/consume");
        assert!(answer.is_ok(), "request {n} failed: {answer:?}");
    }
    let status = helper.wait_status("generation 2 alone Ready", |s| {
        let live = workers(s);
        live.len() == 1 && live[0].1 >= 2 && live[0].3 == "Ready"
    });
    helper
        .out
        .wait_line("the recycling", |l| l.contains("recycling worker"));
    helper.out.wait_line("the old one drained", |l| {
        l.contains("worker exited after draining")
    });
    assert_eq!(
        status["slots"][0]["restarts"], 0,
        "a recycling is not a restart: {status}"
    );
}

#[test]
fn a_worker_past_its_age_is_replaced() {
    let helper = Helper::start(2, &[("HELPER_RECYCLE_AGE_MS", "1000".into())]);
    // Recycled every second: both Ready at once is a moment, at least one is enough to start.
    helper.wait_status("a worker Ready", |s| !ready_pids(s).is_empty());
    // Under steady load, not one request fails while every worker is recycled.
    let load = Load::start(helper.port, 2, "/hello");
    // Every worker is replaced, one slot at a time, again and again: each one seen Ready
    // gives way to a newer one.
    helper.wait_status("both slots recycled at least once", |s| {
        let live = workers(s);
        (0..2).all(|slot| {
            live.iter()
                .any(|w| w.0 == slot && w.1 >= 2 && w.3 == "Ready")
        })
    });
    load.end_without_failures();
    let answer = request(helper.port, "GET", "/consume");
    assert!(answer.is_ok(), "{answer:?}");
}
