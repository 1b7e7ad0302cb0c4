//! What a Hub announces of itself to the other hosts, as MessagePack, and the checks that bound
//! what another host's announcement may cost: its size, its workers, its names.
//!
//! ```text
//! [host, name, seq, leaving, [event, ...], [[slot, generation, [event index, ...]], ...]]
//! ```
//! Event names are listed once and workers name them by index, so 32 workers that handle the
//! same 50 events cost 50 names, not 1600.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::hub::{Announcement, HostId};
use crate::wire::MAX_NAME;
use crate::WorkerId;

/// The largest announcement taken in, in bytes: room for a thousand workers and as many names.
pub(crate) const MAX_BYTES: usize = 256 * 1024;

/// The most workers one host may announce.
pub(crate) const MAX_WORKERS: usize = 4096;

/// The longest host name, in bytes.
pub(crate) const MAX_HOST_NAME: usize = 255;

/// The most distinct event names one host may announce (all its workers together).
pub(crate) const MAX_EVENTS: usize = 16 * 1024;

#[derive(Serialize, Deserialize)]
struct Wire {
    host: u64,
    name: String,
    seq: u64,
    leaving: bool,
    events: Vec<ByteBuf>,
    workers: Vec<(u32, u64, Vec<u32>)>,
}

/// Encodes `ann`; `None` if it would be over [`MAX_BYTES`] (the caller says so, once).
pub(crate) fn encode(ann: &Announcement) -> Option<Bytes> {
    let mut events: Vec<ByteBuf> = Vec::new();
    let mut index = rustc_hash::FxHashMap::<&[u8], u32>::default();
    let workers = ann
        .workers
        .iter()
        .map(|(id, handled)| {
            let indices = handled
                .iter()
                .map(|event| {
                    *index.entry(&event[..]).or_insert_with(|| {
                        events.push(ByteBuf::from(event.to_vec()));
                        (events.len() - 1) as u32
                    })
                })
                .collect();
            (id.slot, id.generation, indices)
        })
        .collect();
    let wire = Wire {
        host: ann.host.0,
        name: ann.name.clone(),
        seq: ann.seq,
        leaving: ann.leaving,
        events,
        workers,
    };
    let bytes = rmp_serde::to_vec(&wire).ok()?;
    (bytes.len() <= MAX_BYTES).then(|| Bytes::from(bytes))
}

/// Whether `name` may name a host: not empty, at most [`MAX_HOST_NAME`] bytes, no control
/// characters (it is printed in logs and the shell's tables).
pub(crate) fn host_name_ok(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_HOST_NAME && !name.chars().any(char::is_control)
}

/// Decodes and checks another host's announcement: `Err` says what is wrong with it.
pub(crate) fn decode(bytes: &[u8]) -> Result<Announcement, String> {
    if bytes.len() > MAX_BYTES {
        return Err(format!(
            "{} bytes, over the {MAX_BYTES} allowed",
            bytes.len()
        ));
    }
    let wire: Wire =
        rmp_serde::from_slice(bytes).map_err(|e| format!("not an announcement: {e}"))?;
    if !host_name_ok(&wire.name) {
        return Err(format!(
            "a host name of {} bytes, empty, over {MAX_HOST_NAME} or with control characters",
            wire.name.len()
        ));
    }
    if wire.events.len() > MAX_EVENTS {
        return Err(format!(
            "{} event names, over {MAX_EVENTS}",
            wire.events.len()
        ));
    }
    if wire.workers.len() > MAX_WORKERS {
        return Err(format!(
            "{} workers, over {MAX_WORKERS}",
            wire.workers.len()
        ));
    }
    if let Some(long) = wire
        .events
        .iter()
        .find(|e| e.len() > MAX_NAME || e.is_empty())
    {
        return Err(format!("an event name of {} bytes", long.len()));
    }
    // Copies, each its own allocation: nothing kept pins the message they came in.
    let events: Vec<Bytes> = wire
        .events
        .into_iter()
        .map(|e| Bytes::from(e.into_vec()))
        .collect();
    let mut workers = Vec::with_capacity(wire.workers.len());
    let mut last_slot = None;
    for (slot, generation, indices) in wire.workers {
        if last_slot.is_some_and(|last| last >= slot) {
            return Err("workers not in slot order, or a slot twice".into());
        }
        last_slot = Some(slot);
        let mut handled = Vec::with_capacity(indices.len().min(events.len()));
        for i in indices {
            let event = events
                .get(i as usize)
                .ok_or_else(|| format!("a worker names event {i} of {}", events.len()))?;
            handled.push(event.clone());
        }
        workers.push((WorkerId::new(slot, generation), handled));
    }
    Ok(Announcement {
        host: HostId(wire.host),
        name: wire.name,
        seq: wire.seq,
        leaving: wire.leaving,
        workers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Announcement {
        let tick = Bytes::from_static(b"tick");
        Announcement {
            host: HostId(7),
            name: "web-1".into(),
            seq: 3,
            leaving: false,
            workers: vec![
                (WorkerId::new(0, 2), vec![tick.clone()]),
                (WorkerId::new(1, 1), vec![tick, Bytes::from_static(b"echo")]),
            ],
        }
    }

    #[test]
    fn an_announcement_comes_back_as_sent_with_each_name_once() {
        let bytes = encode(&sample()).unwrap();
        assert_eq!(bytes.windows(4).filter(|w| w == b"tick").count(), 1);
        assert_eq!(decode(&bytes).unwrap(), sample());
    }

    #[test]
    fn what_is_out_of_bounds_is_refused_with_a_reason() {
        let many = Announcement {
            workers: vec![(
                WorkerId::new(0, 1),
                (0..=MAX_EVENTS)
                    .map(|i| Bytes::from(format!("e{i}")))
                    .collect(),
            )],
            ..sample()
        };
        assert!(decode(&encode(&many).unwrap())
            .unwrap_err()
            .contains("event names"));
        assert!(decode(&[0xc1]).unwrap_err().contains("not an announcement"));
        assert!(decode(&vec![0; MAX_BYTES + 1])
            .unwrap_err()
            .contains("over"));
        let mut unordered = sample();
        unordered.workers.reverse();
        let bytes = encode(&unordered).unwrap();
        assert!(decode(&bytes).unwrap_err().contains("slot order"));
        let bad_index = rmp_serde::to_vec(&Wire {
            host: 1,
            name: "h".into(),
            seq: 1,
            leaving: false,
            events: vec![ByteBuf::from(b"a".to_vec())],
            workers: vec![(0, 1, vec![5])],
        })
        .unwrap();
        assert!(decode(&bad_index).unwrap_err().contains("names event 5"));
        let long_name = Announcement {
            name: "x".repeat(MAX_HOST_NAME + 1),
            ..sample()
        };
        assert!(decode(&encode(&long_name).unwrap())
            .unwrap_err()
            .contains("host name"));
    }

    #[test]
    fn a_huge_declared_length_costs_nothing() {
        // An array header claiming 2^32-1 events, and nothing after it.
        let mut bytes = vec![
            0x96, 0x01, 0xa1, b'h', 0x01, 0xc2, 0xdd, 0xff, 0xff, 0xff, 0xff,
        ];
        bytes.push(0x90);
        assert!(decode(&bytes).is_err());
    }
}
