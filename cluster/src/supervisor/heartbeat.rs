//! Heartbeats: every Ready worker is pinged every `interval`; one that answers none for
//! `timeout` is reported unhealthy (and replaced, new first). One task pings them all, each
//! ping in a task of its own, so a hung worker holds up nobody's heartbeat but its own.
//!
//! A master that itself stood still (a slow `fork`, a machine out of CPU) could read no answer
//! meanwhile: that time is not counted against the workers.

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
        let mut last_tick = Instant::now();
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
            let stood_still = now
                .saturating_duration_since(last_tick)
                .saturating_sub(interval);
            if stood_still > interval {
                tracing::warn!(
                    "the master stood still for {stood_still:?}: heartbeats missed meanwhile \
                     are not counted against the workers"
                );
                for (last, _) in seen.values_mut() {
                    // Only a worker that was still in time before the stall; never past now.
                    if last_tick.saturating_duration_since(*last) < timeout {
                        *last = (*last + stood_still).min(now);
                    }
                }
            }
            last_tick = now;
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

#[cfg(test)]
mod tests {
    use super::*;
    use messenger::testing::MockCluster;

    /// Starts heartbeats (every 20 ms, a 1 s timeout) and lets a few pass; then the master's
    /// one thread stands still for three timeouts. The reports.
    async fn heartbeats_across_a_stall(hub: &Hub) -> mpsc::UnboundedReceiver<Event> {
        let (tx, reports) = mpsc::unbounded_channel();
        let timeout = Duration::from_secs(1);
        start(hub.clone(), Duration::from_millis(20), timeout, move |e| {
            tx.send(e).is_ok()
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        std::thread::sleep(3 * timeout);
        reports
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_master_that_stood_still_does_not_blame_its_workers() {
        let cluster = MockCluster::new(2).await.unwrap();
        cluster.ready().await.unwrap();
        let mut reports = heartbeats_across_a_stall(cluster.hub()).await;
        // Heartbeats go on: every worker answers.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            reports.try_recv().is_err(),
            "a worker was reported for the master's own stall"
        );
    }

    /// ... but a worker that answers nothing is still reported, stall or not.
    #[tokio::test(flavor = "current_thread")]
    async fn a_worker_hung_across_a_stall_is_still_reported() {
        use futures_util::{SinkExt, StreamExt};
        use messenger::wire::{Envelope, FrameCodec, Hello, Kind};
        use tokio_util::codec::Framed;

        let cluster = MockCluster::new(1).await.unwrap();
        cluster.ready().await.unwrap();
        // A worker that gets Ready, then reads nothing: it answers no ping.
        let hung = WorkerId::new(5, 1);
        let (hub_end, raw) = tokio::io::duplex(64 * 1024);
        cluster.hub().attach(hung, hub_end);
        let mut raw = Framed::new(raw, FrameCodec::new());
        raw.send(Hello::new(None).frame()).await.unwrap();
        raw.next().await.unwrap().unwrap();
        let mut ready = Envelope::new(Kind::Ready, "", Vec::new());
        ready.id = 1;
        raw.send(ready).await.unwrap();
        let granted = raw.next().await.unwrap().unwrap();
        assert_eq!(granted.kind, Kind::Reply);

        let mut reports = heartbeats_across_a_stall(cluster.hub()).await;
        let report = tokio::time::timeout(Duration::from_secs(60), reports.recv())
            .await
            .expect("a report within 60 s")
            .expect("the channel is open");
        match report {
            Event::Unhealthy { id, .. } => assert_eq!(id, hung),
            _ => panic!("not an unhealthy report"),
        }
        drop(raw);
    }
}
