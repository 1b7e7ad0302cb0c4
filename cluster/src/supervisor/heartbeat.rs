//! Heartbeats: every Ready worker is pinged every `interval`; one that answers none for
//! `timeout` is reported unhealthy (and replaced, new first). One task pings them all, each
//! ping in a task of its own, so a hung worker holds up nobody's heartbeat but its own.

use std::collections::HashMap;
use std::time::Duration;

use messenger::{Hub, WorkerId};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::fleet::Event;

/// Pings the Hub's Ready workers until `report` fails (the supervisor is gone).
pub(crate) fn start(
    hub: Hub,
    interval: Duration,
    timeout: Duration,
    report: impl Fn(Event) -> bool + Send + 'static,
) {
    tokio::spawn(async move {
        let (answers, mut answered) = mpsc::unbounded_channel::<WorkerId>();
        // When each worker last answered (or was first seen Ready), and whether it was reported.
        let mut seen: HashMap<WorkerId, (Instant, bool)> = HashMap::new();
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                Some(id) = answered.recv() => {
                    if let Some(entry) = seen.get_mut(&id) {
                        *entry = (Instant::now(), false);
                    }
                    continue;
                }
            }
            let now = Instant::now();
            let ready = hub.ready_set();
            seen.retain(|id, _| ready.contains(id));
            for id in ready {
                let (last, reported) = *seen.entry(id).or_insert((now, false));
                if now.saturating_duration_since(last) >= timeout && !reported {
                    seen.insert(id, (last, true));
                    let reason = format!("answered no heartbeat for {timeout:?}");
                    if !report(Event::Unhealthy { id, reason }) {
                        return;
                    }
                    continue;
                }
                let (hub, answers) = (hub.clone(), answers.clone());
                tokio::spawn(async move {
                    if let Ok(Ok(_)) = tokio::time::timeout(timeout, hub.ping(id)).await {
                        let _ = answers.send(id);
                    }
                });
            }
        }
    });
}
