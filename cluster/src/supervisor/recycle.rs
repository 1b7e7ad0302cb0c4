//! Recycling by policy: about once a second, the Ready workers past an age, a resident memory
//! or a number of messages are offered to the fleet, which replaces one slot at a time, new
//! first.

use std::time::Duration;

use tokio::time::Instant;

use super::fleet::Event;
use super::Supervisor;
use crate::options::Recycle;
use crate::procfs::ProcStat;

/// Calls `check` about once a second (more often for a short maximum age) until it returns
/// `false` (the supervisor is gone).
pub(super) fn start_checks(policy: &Recycle, check: impl Fn() -> bool + Send + 'static) {
    let period = policy
        .max_age
        .map_or(Duration::from_secs(1), |age| {
            (age / 4).min(Duration::from_secs(1))
        })
        .max(Duration::from_millis(10));
    tokio::spawn(async move {
        let mut every = tokio::time::interval(period);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            if !check() {
                return;
            }
        }
    });
}

impl Supervisor {
    /// The Ready workers past the recycling policy are offered to the fleet, which recycles
    /// one slot at a time.
    pub(super) fn recycle_check(&mut self) {
        let policy = &self.opts.recycle;
        let now = Instant::now();
        let past = self
            .fleet
            .serving_workers()
            .into_iter()
            .filter_map(|(id, pid, started)| {
                let age = now.saturating_duration_since(started);
                if let Some(max) = policy.max_age.filter(|max| age >= *max) {
                    return Some((id, format!("ran {age:.0?}, the most is {max:?}")));
                }
                if let Some(max) = policy.max_memory {
                    let rss = pid.and_then(ProcStat::read).map(|p| p.rss_bytes);
                    if let Some(rss) = rss.filter(|rss| rss > &max) {
                        return Some((id, format!("{rss} bytes resident, the most is {max}")));
                    }
                }
                if let Some(max) = policy.max_messages {
                    let given = self.hub.delivered(id).unwrap_or(0);
                    if given >= max {
                        return Some((id, format!("given {given} messages, the most is {max}")));
                    }
                }
                None
            })
            .collect::<Vec<_>>();
        // The fleet takes the first it may recycle now (one slot at a time) and leaves the
        // rest for later checks.
        for (id, reason) in past {
            self.handle(Event::Recycle { id, reason });
        }
    }
}
