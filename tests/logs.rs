//! Telling the workers' output apart: plain lines prefixed by the master when it relays them,
//! and tracing lines carrying the worker's span.

mod common;

use common::{ready_pids, Helper};

#[test]
fn every_line_a_worker_writes_says_who_wrote_it() {
    let helper = Helper::start(1, &[("HELPER_PREFIX_OUTPUT", "1".into())]);
    let pid = ready_pids(&helper.wait_ready(1))[0];
    let answer = helper.get("/print?n=3");
    assert_eq!(answer["pid"], pid);
    let prefix = format!("[worker 0.1 pid {pid}] ");
    for i in 0..3 {
        let line = format!("{prefix}printed line {i}");
        helper.out.wait_line(&line, |l| l == line);
    }
    let line = format!("{prefix}printed to stderr");
    helper.out.wait_line(&line, |l| l == line);
    // A tracing line of the worker names it in its span (and is relayed, prefixed, too).
    let span = format!("worker{{slot=0 generation=1 pid={pid}}}");
    helper
        .out
        .wait_line("a tracing line with the worker's span", |l| {
            l.starts_with(&prefix) && l.contains(&span)
        });
}

#[test]
fn without_the_relay_tracing_lines_still_say_who_wrote_them() {
    let helper = Helper::start(1, &[]);
    let pid = ready_pids(&helper.wait_ready(1))[0];
    helper.get("/print?n=1");
    helper
        .out
        .wait_line("the plain line", |l| l == "printed line 0");
    let span = format!("worker{{slot=0 generation=1 pid={pid}}}");
    helper
        .out
        .wait_line("a tracing line with the worker's span", |l| {
            l.contains(&span)
        });
}
