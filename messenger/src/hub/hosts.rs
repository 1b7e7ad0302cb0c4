//! The other hosts of a cluster that spans machines (see `uplink/`): each one's Ready workers
//! and the events each handles, as it last announced them, until it leaves or goes quiet.
//!
//! Pure state, fed by the uplink and read by the Hub; tested without NATS. What a host may
//! announce is bounded when its announcement is decoded ([`Announcement::check`]), and how many
//! hosts are known at once is bounded here, so a hostile or broken host costs bounded memory.
//!
//! [`Announcement::check`]: crate::uplink::Announcement

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use rustc_hash::FxHashMap as HashMap;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::WorkerId;

/// One master (one host's Hub) in a cluster that spans hosts: a number drawn at random when it
/// joins, so that a master restarted on the same machine is a new host to the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct HostId(pub u64);

impl fmt::Display for HostId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// What a host says of itself, checked (the uplink decodes and bounds it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Announcement {
    pub host: HostId,
    /// The name its operator gave it (for logs, status and errors).
    pub name: String,
    /// Grows with each announcement of the host: an older one arriving late is ignored.
    pub seq: u64,
    /// The host stops: forget it now rather than at its expiry.
    pub leaving: bool,
    /// Its Ready workers, in slot order, and the names of the events each handles.
    pub workers: Vec<(WorkerId, Vec<Bytes>)>,
}

/// Another host, as last heard.
struct Host {
    name: String,
    seq: u64,
    seen: Instant,
    /// Its Ready workers, in slot order.
    workers: Vec<WorkerId>,
    /// Who handles each event.
    handlers: HashMap<Bytes, Vec<WorkerId>>,
}

/// What an announcement changed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Heard {
    /// A host not known before.
    Joined,
    /// A known host, its workers or handlers changed.
    Changed,
    /// A known host, nothing changed (a heartbeat).
    Same,
    /// An announcement older than one already heard: ignored.
    Stale,
    /// The host left.
    Left,
    /// A new host while the table is full: ignored.
    Full,
}

/// Every other host known, by id.
pub(crate) struct Hosts {
    hosts: BTreeMap<HostId, Host>,
    max_hosts: usize,
}

/// Another host as [`Hub::hosts`](crate::Hub::hosts) shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RemoteHost {
    /// The host's id.
    pub id: HostId,
    /// Its name.
    pub name: String,
    /// Its Ready workers, in slot order, and the events each handles (sorted).
    pub workers: Vec<(WorkerId, Vec<String>)>,
    /// How long ago it was last heard from.
    pub last_heard: Duration,
}

impl Hosts {
    pub fn new(max_hosts: usize) -> Hosts {
        Hosts {
            hosts: BTreeMap::new(),
            max_hosts,
        }
    }

    /// Takes in what a host announced, at `now`.
    pub fn hear(&mut self, ann: Announcement, now: Instant) -> Heard {
        if ann.leaving {
            return match self.hosts.get(&ann.host) {
                Some(host) if host.seq > ann.seq => Heard::Stale,
                Some(_) => {
                    self.hosts.remove(&ann.host);
                    Heard::Left
                }
                None => Heard::Stale,
            };
        }
        let mut handlers: HashMap<Bytes, Vec<WorkerId>> = HashMap::default();
        let mut workers = Vec::with_capacity(ann.workers.len());
        for (id, events) in ann.workers {
            workers.push(id);
            for event in events {
                let by = handlers.entry(event).or_default();
                if by.last() != Some(&id) {
                    by.push(id);
                }
            }
        }
        let fresh = Host {
            name: ann.name,
            seq: ann.seq,
            seen: now,
            workers,
            handlers,
        };
        let full = self.hosts.len() >= self.max_hosts;
        match self.hosts.get_mut(&ann.host) {
            Some(host) if host.seq >= ann.seq => Heard::Stale,
            Some(host) => {
                let same = host.workers == fresh.workers
                    && host.handlers == fresh.handlers
                    && host.name == fresh.name;
                *host = fresh;
                if same {
                    Heard::Same
                } else {
                    Heard::Changed
                }
            }
            None if full => Heard::Full,
            None => {
                self.hosts.insert(ann.host, fresh);
                Heard::Joined
            }
        }
    }

    /// Forgets the hosts not heard from for `expiry`: their ids and names.
    pub fn expire(&mut self, now: Instant, expiry: Duration) -> Vec<(HostId, String)> {
        let mut gone = Vec::new();
        self.hosts.retain(|id, host| {
            let alive = now.saturating_duration_since(host.seen) < expiry;
            if !alive {
                gone.push((*id, std::mem::take(&mut host.name)));
            }
            alive
        });
        gone
    }

    /// How many hosts are known.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    pub fn max_hosts(&self) -> usize {
        self.max_hosts
    }

    /// The workers of every host that handle `event`, host by host.
    #[allow(dead_code)] // The cross-host routes read it.
    pub fn handlers<'a>(
        &'a self,
        event: &'a [u8],
    ) -> impl Iterator<Item = (HostId, WorkerId)> + 'a {
        self.hosts.iter().flat_map(move |(id, host)| {
            host.handlers
                .get(event)
                .into_iter()
                .flatten()
                .map(move |worker| (*id, *worker))
        })
    }

    /// Every host, by name then id.
    pub fn list(&self, now: Instant) -> Vec<RemoteHost> {
        let mut list: Vec<RemoteHost> = self
            .hosts
            .iter()
            .map(|(id, host)| RemoteHost {
                id: *id,
                name: host.name.clone(),
                workers: host
                    .workers
                    .iter()
                    .map(|worker| {
                        let mut events: Vec<String> = host
                            .handlers
                            .iter()
                            .filter(|(_, by)| by.contains(worker))
                            .map(|(event, _)| String::from_utf8_lossy(event).into_owned())
                            .collect();
                        events.sort();
                        (*worker, events)
                    })
                    .collect(),
                last_heard: now.saturating_duration_since(host.seen),
            })
            .collect();
        list.sort_by(|a, b| (&a.name, a.id).cmp(&(&b.name, b.id)));
        list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(host: u64, seq: u64, workers: &[(u32, &[&'static str])]) -> Announcement {
        Announcement {
            host: HostId(host),
            name: format!("h{host}"),
            seq,
            leaving: false,
            workers: workers
                .iter()
                .map(|(slot, events)| {
                    let events = events.iter().map(|e| Bytes::from_static(e.as_bytes()));
                    (WorkerId::new(*slot, 1), events.collect())
                })
                .collect(),
        }
    }

    #[test]
    fn a_host_joins_changes_repeats_and_leaves() {
        let now = Instant::now();
        let mut hosts = Hosts::new(8);
        assert_eq!(hosts.hear(ann(1, 1, &[(0, &["tick"])]), now), Heard::Joined);
        assert_eq!(hosts.hear(ann(1, 2, &[(0, &["tick"])]), now), Heard::Same);
        let two = ann(1, 3, &[(0, &["tick"]), (1, &["tick", "echo"])]);
        assert_eq!(hosts.hear(two, now), Heard::Changed);
        let ticks: Vec<_> = hosts.handlers(b"tick").collect();
        assert_eq!(
            ticks,
            [
                (HostId(1), WorkerId::new(0, 1)),
                (HostId(1), WorkerId::new(1, 1))
            ]
        );
        assert_eq!(hosts.handlers(b"echo").count(), 1);
        assert_eq!(hosts.handlers(b"nobody").count(), 0);
        let listed = hosts.list(now);
        assert_eq!(listed[0].workers[1].1, ["echo", "tick"]);
        let mut leaving = ann(1, 4, &[]);
        leaving.leaving = true;
        assert_eq!(hosts.hear(leaving, now), Heard::Left);
        assert_eq!(hosts.len(), 0);
    }

    #[test]
    fn a_late_announcement_changes_nothing() {
        let now = Instant::now();
        let mut hosts = Hosts::new(8);
        hosts.hear(ann(1, 5, &[(0, &["tick"])]), now);
        assert_eq!(hosts.hear(ann(1, 4, &[]), now), Heard::Stale);
        let mut leaving = ann(1, 3, &[]);
        leaving.leaving = true;
        assert_eq!(hosts.hear(leaving, now), Heard::Stale);
        assert_eq!(hosts.handlers(b"tick").count(), 1);
    }

    #[test]
    fn hosts_past_the_bound_are_not_kept() {
        let now = Instant::now();
        let mut hosts = Hosts::new(2);
        assert_eq!(hosts.hear(ann(1, 1, &[]), now), Heard::Joined);
        assert_eq!(hosts.hear(ann(2, 1, &[]), now), Heard::Joined);
        assert_eq!(hosts.hear(ann(3, 1, &[]), now), Heard::Full);
        // Known hosts are still heard.
        assert_eq!(hosts.hear(ann(2, 2, &[(0, &["x"])]), now), Heard::Changed);
        assert_eq!(hosts.len(), 2);
    }

    #[test]
    fn a_quiet_host_expires() {
        let start = Instant::now();
        let mut hosts = Hosts::new(8);
        hosts.hear(ann(1, 1, &[]), start);
        hosts.hear(ann(2, 1, &[]), start + Duration::from_secs(2));
        let gone = hosts.expire(start + Duration::from_secs(3), Duration::from_secs(3));
        assert_eq!(gone, [(HostId(1), "h1".to_owned())]);
        assert_eq!(hosts.list(start + Duration::from_secs(3))[0].name, "h2");
    }
}
