//! Scaling at runtime with real processes: SIGTTIN and SIGTTOU to the master, as with gunicorn.

mod common;

use common::{ready_pids, request, wait_gone, Helper, Load};
use nix::sys::signal::Signal;

/// Waits for the `n`th line (counting from the first) that `pred` accepts.
fn wait_nth_line(helper: &Helper, n: usize, what: &str, pred: impl Fn(&str) -> bool) {
    let mut from = 0;
    for _ in 0..n {
        let (i, _) = helper.out.wait_line_from(from, what, &pred);
        from = i + 1;
    }
}

#[test]
fn sigttin_adds_a_worker_and_sigttou_drains_one_without_losing_its_requests() {
    let helper = Helper::start(2, &[]);
    helper.wait_ready(2);
    // Steady load all along, up and down: not one request may fail.
    let load = Load::start(helper.port, 2, "/hello");
    load.wait_more(20);

    // One more: it starts, gets Ready, and `map` reaches it.
    helper.signal(Signal::SIGTTIN);
    let status = helper.wait_ready(3);
    assert_eq!(status["slots"].as_array().unwrap().len(), 3);
    let pids = helper.get("/map")["pids"].as_array().unwrap().len();
    assert_eq!(pids, 3, "map follows the new set");

    // Requests in flight everywhere, then two fewer: whichever workers go, they finish first.
    let port = helper.port;
    let slow: Vec<_> = (0..6)
        .map(|_| std::thread::spawn(move || request(port, "GET", "/slow?ms=1500")))
        .collect();
    wait_nth_line(&helper, 6, "six slow requests started", |l| {
        l.contains("slow request started")
    });
    let before = ready_pids(&status);
    // Signals of one kind sent together may arrive as one: the second waits for the first.
    helper.signal(Signal::SIGTTOU);
    helper.wait_status("2 slots", |s| s["slots"].as_array().unwrap().len() == 2);
    helper.signal(Signal::SIGTTOU);
    for answer in slow {
        let answer = answer
            .join()
            .unwrap()
            .expect("an in-flight request is never cut");
        assert_eq!(answer["ms"], 1500);
    }
    let status = helper.wait_ready(1);
    assert_eq!(status["slots"].as_array().unwrap().len(), 1);
    assert_eq!(helper.get("/map")["pids"].as_array().unwrap().len(), 1);
    // The two removed were drained, not killed, and are gone.
    let kept = ready_pids(&status);
    let removed: Vec<u32> = before.into_iter().filter(|p| !kept.contains(p)).collect();
    assert_eq!(removed.len(), 2, "{removed:?}");
    wait_gone(&removed);
    wait_nth_line(&helper, 2, "two workers drained", |l| {
        l.contains("scaled down to")
    });
    wait_nth_line(&helper, 2, "two workers exited after draining", |l| {
        l.contains("worker exited after draining")
    });
    assert!(
        helper
            .out
            .position(|l| l.contains("killing worker"))
            .is_none(),
        "a worker was killed"
    );

    load.end_without_failures();

    // Never below one worker.
    helper.signal(Signal::SIGTTOU);
    helper.out.wait_line("a refusal to scale to 0", |l| {
        l.contains("SIGTTOU: cannot scale: 0 workers")
    });
    assert_eq!(helper.wait_ready(1)["slots"].as_array().unwrap().len(), 1);
}
