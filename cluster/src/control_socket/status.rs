//! The status the control socket answers: the fleet's, with what the master reads of each
//! worker process (`/proc`: memory, CPU) and the messages its Hub gave each one.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::master::Master;
use crate::procfs::ProcStat;
use crate::status::{SlotStatus, Status};

/// `status` as JSON, each worker's process read off the master's thread (it routes every
/// worker's messages).
pub(super) async fn read(status: &Status, master: &Master, cpu: &CpuSamples) -> Value {
    let pids: Vec<u32> = status
        .all_slots()
        .flat_map(|s| s.workers.iter().map(|w| w.pid))
        .collect();
    let procs = tokio::task::spawn_blocking(move || {
        pids.into_iter()
            .filter_map(|pid| Some((pid, ProcStat::read(pid)?)))
            .collect::<HashMap<u32, ProcStat>>()
    })
    .await
    .unwrap_or_default();
    status_json(status, master, cpu, &procs)
}

/// The status, with what the master reads of each worker process (`/proc`) and the messages
/// its Hub delivered to it.
fn status_json(
    status: &Status,
    master: &Master,
    cpu: &CpuSamples,
    procs: &HashMap<u32, ProcStat>,
) -> Value {
    let percents = std::cell::RefCell::new(HashMap::new());
    let slot_json = |slot: &SlotStatus| {
        let workers: Vec<Value> = slot
            .workers
            .iter()
            .map(|w| {
                let proc = procs.get(&w.pid);
                let cpu_seconds = proc.as_ref().map(|p| p.cpu_seconds);
                json!({
                    "generation": w.generation,
                    "pid": w.pid,
                    "state": w.state,
                    "uptime_ms": w.uptime.as_millis() as u64,
                    "rss_bytes": proc.as_ref().map(|p| p.rss_bytes),
                    "cpu_seconds": cpu_seconds,
                    "cpu_percent": cpu_seconds.map(|s| {
                        // Once per process: in single-process mode every worker is one.
                        *percents
                            .borrow_mut()
                            .entry(w.pid)
                            .or_insert_with(|| cpu.percent(w.pid, s, w.uptime))
                    }),
                    "messages": master.messages_to(slot.slot, w.generation),
                })
            })
            .collect();
        json!({
            "slot": slot.slot,
            "restarts": slot.restarts,
            "backoff_ms": slot.backoff.map(|b| b.as_millis() as u64),
            "workers": workers,
        })
    };
    let slots: Vec<Value> = status.slots.iter().map(slot_json).collect();
    let removed: Vec<Value> = status.removed.iter().map(slot_json).collect();
    let hosts: Vec<Value> = master
        .hosts()
        .into_iter()
        .map(|host| {
            let workers: Vec<Value> = host
                .workers
                .iter()
                .map(|(id, events)| {
                    json!({"slot": id.slot, "generation": id.generation, "events": events})
                })
                .collect();
            json!({
                "name": host.name,
                "id": host.id.to_string(),
                "last_heard_ms": host.last_heard.as_millis() as u64,
                "workers": workers,
            })
        })
        .collect();
    json!({
        "phase": status.phase,
        "ready": status.ready(),
        "slots": slots,
        "removed": removed,
        "totals": status.totals,
        "hosts": hosts,
    })
}

/// The last CPU reading of each worker, so that a status says its CPU use since the previous
/// one (since the process started, the first time).
#[derive(Default)]
pub(super) struct CpuSamples {
    last: Mutex<HashMap<u32, (Instant, f64)>>,
}

impl CpuSamples {
    fn percent(&self, pid: u32, cpu_seconds: f64, uptime: Duration) -> f64 {
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let (wall, cpu) = match last.insert(pid, (now, cpu_seconds)) {
            Some((at, before)) => (now.duration_since(at).as_secs_f64(), cpu_seconds - before),
            None => (uptime.as_secs_f64(), cpu_seconds),
        };
        // Forget processes long gone.
        if last.len() > 4096 {
            last.retain(|_, (at, _)| now.duration_since(*at) < Duration::from_secs(3600));
        }
        if wall <= 0.0 {
            return 0.0;
        }
        (100.0 * cpu.max(0.0) / wall * 10.0).round() / 10.0
    }
}
