//! What a master and a worker can wait on and observe, with real processes
//! (`examples/cluster-helper`): `Master::ready` and the status right after it; the outcome of
//! a reload a worker asked for, in that worker and in the master's log. Every wait is on
//! an event, with a generous deadline; every cluster is killed (its whole process group) when
//! its test ends.

mod common;

use std::collections::BTreeSet;

use common::*;
use nix::sys::signal::Signal;
use serde_json::Value;

/// Every slot of `status` holds exactly one worker, Ready, with a real pid.
fn every_slot_ready(status: &Value, n: usize) {
    assert_eq!(status["phase"], "Running", "{status}");
    let slots = status["slots"].as_array().unwrap();
    assert_eq!(slots.len(), n, "{status}");
    for slot in slots {
        let ready: Vec<&Value> = slot["workers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|w| w["state"] == "Ready")
            .collect();
        assert_eq!(ready.len(), 1, "one Ready worker per slot: {status}");
        assert_ne!(ready[0]["pid"], 0, "a Ready worker has its pid: {status}");
    }
}

#[test]
fn the_master_waits_until_every_worker_is_ready() {
    let helper = Helper::start(3, &[("HELPER_MASTER_READY", "1".into())]);
    // Waited for from the master's bootstrap, before any worker started.
    let line = helper.out.wait_line("from the master's ready()", |l| {
        l.starts_with("MASTER READY ")
    });
    let status: Value = serde_json::from_str(line.strip_prefix("MASTER READY ").unwrap())
        .unwrap_or_else(|e| panic!("{line}: {e}"));
    every_slot_ready(&status, 3);
    let pids = ready_pids(&status);
    assert_eq!(pids.len(), 3, "{status}");
    assert_eq!(
        pids,
        ready_pids(&helper.wait_ready(3)),
        "the Ready workers are those ready() saw"
    );

    // Asked while a reload runs: it resolves once the rollout is over, every slot new.
    let port = helper.port;
    let reload = std::thread::spawn(move || request(port, "POST", "/reload"));
    helper.out.wait_line("the rollout's start", |l| {
        l.contains("reload: rolling every slot")
    });
    let status = helper.get("/master/ready");
    let new = ready_pids(&status);
    assert_eq!(new.len(), 3, "{status}");
    let old: BTreeSet<u32> = pids.into_iter().collect();
    assert!(new.iter().all(|p| !old.contains(p)), "{status}");
    helper
        .out
        .wait_line("the rollout's end", |l| l.contains("reload complete"));
    assert_eq!(
        reload.join().unwrap().unwrap(),
        serde_json::json!({ "ok": true })
    );
}

#[test]
fn the_master_waiting_for_ready_workers_hears_of_a_stop() {
    let dir = tempfile::tempdir().unwrap();
    let hold = dir.path().join("hold");
    std::fs::write(&hold, b"").unwrap();
    let env = [
        ("HELPER_MASTER_READY", "1".into()),
        ("HELPER_HOLD_FILE", hold.display().to_string()),
    ];
    let mut helper = Helper::start(2, &env);
    // The workers run, and never ask to be Ready.
    helper.wait_status("2 workers started", |s| workers(s).len() == 2);
    helper.signal(Signal::SIGTERM);
    helper.out.wait_line("ready() failing", |l| {
        l.contains("MASTER READY FAILED: the cluster is stopping")
    });
    assert_eq!(helper.wait_exit().code(), Some(0));
}

/// A worker that asks for a reload from a task and does not wait for it in a request still
/// gets its outcome before it exits: its slot is replaced last, and its process waits for the
/// answer after its bootstrap returns. The master logs who asked and how it ended.
#[test]
fn a_worker_that_asked_for_a_reload_gets_its_outcome() {
    let helper = Helper::start(3, &[]);
    let old = ready_pids(&helper.wait_ready(3));
    let asker = helper.post("/reload-in-background");
    let (slot, pid) = (
        asker["slot"].as_u64().unwrap(),
        asker["pid"].as_u64().unwrap(),
    );
    helper
        .out
        .wait_line("the outcome, in the worker that asked", |l| {
            l.starts_with(&format!("RELOAD OUTCOME pid={pid} Ok(())"))
        });
    helper
        .out
        .wait_line("the outcome, in the master's log", |l| {
            l.contains(&format!(
                "reload asked by worker slot {slot} gen 1: complete"
            ))
        });
    // Its slot was the last one replaced: it was the last old worker told to drain.
    let lines = helper.out.lines();
    let drained: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("draining worker"))
        .collect();
    assert_eq!(drained.len(), 3, "{drained:#?}");
    assert!(
        drained[2].contains(&format!("pid={pid} ")),
        "{pid} was not the last: {drained:#?}"
    );
    let new = ready_pids(&helper.wait_ready(3));
    assert!(new.iter().all(|p| !old.contains(p)), "{new:?} {old:?}");
    wait_gone(&old);
}
