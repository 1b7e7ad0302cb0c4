//! The other hosts of a cluster that spans machines (see `uplink/`): each one's Ready workers
//! and the events each handles, as it last announced them, until it leaves or goes quiet.
//!
//! Pure state, fed by the uplink and read by the Hub; tested without NATS. What a host may
//! announce is bounded when its announcement is decoded (`uplink/announcement.rs`), and how
//! many hosts are known at once is bounded here, so a hostile or broken host costs bounded
//! memory. An announcement is turned into a [`Said`] before the Hub's lock is taken: the lock
//! is held only to swap it in.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use rustc_hash::FxHashMap as HashMap;
use tokio::time::Instant;

pub use crate::peer::HostId;
use crate::WorkerId;

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
#[derive(PartialEq, Eq)]
struct Host {
    name: String,
    /// Its Ready workers, in slot order, and the events each handles, as announced.
    workers: Vec<(WorkerId, Vec<Bytes>)>,
    /// Who handles each event.
    handlers: HashMap<Bytes, Vec<WorkerId>>,
}

/// An announcement made ready to take in: its index of handlers built, without the Hub's lock.
pub(crate) struct Said {
    host: HostId,
    seq: u64,
    leaving: bool,
    fresh: Host,
}

impl Said {
    pub fn new(ann: Announcement) -> Said {
        let mut handlers: HashMap<Bytes, Vec<WorkerId>> = HashMap::default();
        for (id, events) in &ann.workers {
            for event in events {
                let by = handlers.entry(event.clone()).or_default();
                if by.last() != Some(id) {
                    by.push(*id);
                }
            }
        }
        Said {
            host: ann.host,
            seq: ann.seq,
            leaving: ann.leaving,
            fresh: Host {
                name: ann.name,
                workers: ann.workers,
                handlers,
            },
        }
    }
}

/// A host's last word, and when it came.
struct Known {
    seq: u64,
    seen: Instant,
    host: Host,
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
    hosts: BTreeMap<HostId, Known>,
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
    pub fn hear(&mut self, said: Said, now: Instant) -> Heard {
        let full = self.hosts.len() >= self.max_hosts;
        match self.hosts.get_mut(&said.host) {
            Some(known) if known.seq >= said.seq => Heard::Stale,
            Some(_) if said.leaving => {
                self.hosts.remove(&said.host);
                Heard::Left
            }
            Some(known) => {
                let same = known.host == said.fresh;
                *known = Known {
                    seq: said.seq,
                    seen: now,
                    host: said.fresh,
                };
                if same {
                    Heard::Same
                } else {
                    Heard::Changed
                }
            }
            None if said.leaving => Heard::Stale,
            None if full => Heard::Full,
            None => {
                let known = Known {
                    seq: said.seq,
                    seen: now,
                    host: said.fresh,
                };
                self.hosts.insert(said.host, known);
                Heard::Joined
            }
        }
    }

    /// Forgets the hosts not heard from for `expiry`: their ids and names.
    pub fn expire(&mut self, now: Instant, expiry: Duration) -> Vec<(HostId, String)> {
        let mut gone = Vec::new();
        self.hosts.retain(|id, known| {
            let alive = now.saturating_duration_since(known.seen) < expiry;
            if !alive {
                gone.push((*id, std::mem::take(&mut known.host.name)));
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

    /// Whether a new host would be turned away.
    pub fn is_full(&self) -> bool {
        self.hosts.len() >= self.max_hosts
    }

    pub fn max_hosts(&self) -> usize {
        self.max_hosts
    }

    /// Whether any host knows of a handler of `event`: the copy of its name, if so. (Inline:
    /// on every `consume` and broadcast, where there is usually no other host.)
    #[inline]
    pub fn handled(&self, event: &[u8]) -> Option<&Bytes> {
        if self.hosts.is_empty() {
            return None;
        }
        self.handled_by_some(event)
    }

    fn handled_by_some(&self, event: &[u8]) -> Option<&Bytes> {
        let mut names = self.hosts.values();
        names.find_map(|known| known.host.handlers.get_key_value(event).map(|(k, _)| k))
    }

    /// The host of that name, if known.
    pub fn by_name(&self, name: &[u8]) -> Option<HostId> {
        let mut hosts = self.hosts.iter();
        hosts
            .find(|(_, known)| known.host.name.as_bytes() == name)
            .map(|(id, _)| *id)
    }

    /// A host's name, if known.
    pub fn name(&self, host: HostId) -> Option<&str> {
        self.hosts.get(&host).map(|known| known.host.name.as_str())
    }

    /// Every host with Ready workers, by name then id, and its Ready workers in slot order:
    /// who a `map` asks beyond this host.
    pub fn ready(&self) -> Vec<(HostId, Vec<WorkerId>)> {
        let mut hosts: Vec<(&str, HostId, Vec<WorkerId>)> = self
            .hosts
            .iter()
            .filter(|(_, known)| !known.host.workers.is_empty())
            .map(|(id, known)| {
                let workers = known.host.workers.iter().map(|(w, _)| *w).collect();
                (known.host.name.as_str(), *id, workers)
            })
            .collect();
        hosts.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        hosts.into_iter().map(|(_, id, w)| (id, w)).collect()
    }

    /// The workers of every host that handle `event`, host by host.
    pub fn handlers<'a>(
        &'a self,
        event: &'a [u8],
    ) -> impl Iterator<Item = (HostId, WorkerId)> + 'a {
        self.hosts.iter().flat_map(move |(id, known)| {
            known
                .host
                .handlers
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
            .map(|(id, known)| RemoteHost {
                id: *id,
                name: known.host.name.clone(),
                workers: known
                    .host
                    .workers
                    .iter()
                    .map(|(worker, events)| {
                        let mut names: Vec<String> = events
                            .iter()
                            .map(|e| String::from_utf8_lossy(e).into_owned())
                            .collect();
                        names.sort();
                        names.dedup();
                        (*worker, names)
                    })
                    .collect(),
                last_heard: now.saturating_duration_since(known.seen),
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
        assert_eq!(
            hosts.hear(Said::new(ann(1, 1, &[(0, &["tick"])])), now),
            Heard::Joined
        );
        assert_eq!(
            hosts.hear(Said::new(ann(1, 2, &[(0, &["tick"])])), now),
            Heard::Same
        );
        let two = ann(1, 3, &[(0, &["tick"]), (1, &["tick", "echo"])]);
        assert_eq!(hosts.hear(Said::new(two), now), Heard::Changed);
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
        assert_eq!(hosts.hear(Said::new(leaving), now), Heard::Left);
        assert_eq!(hosts.len(), 0);
    }

    #[test]
    fn a_late_announcement_changes_nothing() {
        let now = Instant::now();
        let mut hosts = Hosts::new(8);
        hosts.hear(Said::new(ann(1, 5, &[(0, &["tick"])])), now);
        assert_eq!(hosts.hear(Said::new(ann(1, 4, &[])), now), Heard::Stale);
        let mut leaving = ann(1, 3, &[]);
        leaving.leaving = true;
        assert_eq!(hosts.hear(Said::new(leaving), now), Heard::Stale);
        assert_eq!(hosts.handlers(b"tick").count(), 1);
    }

    #[test]
    fn hosts_past_the_bound_are_not_kept() {
        let now = Instant::now();
        let mut hosts = Hosts::new(2);
        assert_eq!(hosts.hear(Said::new(ann(1, 1, &[])), now), Heard::Joined);
        assert_eq!(hosts.hear(Said::new(ann(2, 1, &[])), now), Heard::Joined);
        assert_eq!(hosts.hear(Said::new(ann(3, 1, &[])), now), Heard::Full);
        // Known hosts are still heard.
        assert_eq!(
            hosts.hear(Said::new(ann(2, 2, &[(0, &["x"])])), now),
            Heard::Changed
        );
        assert_eq!(hosts.len(), 2);
    }

    #[test]
    fn a_quiet_host_expires() {
        let start = Instant::now();
        let mut hosts = Hosts::new(8);
        hosts.hear(Said::new(ann(1, 1, &[])), start);
        hosts.hear(Said::new(ann(2, 1, &[])), start + Duration::from_secs(2));
        let gone = hosts.expire(start + Duration::from_secs(3), Duration::from_secs(3));
        assert_eq!(gone, [(HostId(1), "h1".to_owned())]);
        assert_eq!(hosts.list(start + Duration::from_secs(3))[0].name, "h2");
    }
}
