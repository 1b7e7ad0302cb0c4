//! The `consume_once` replies the Hub remembers: at most [`Config::once_keys`] keys and
//! [`Config::once_bytes`] bytes, the oldest forgotten first. Keys and replies are copies, so a
//! remembered reply costs its own size and never keeps a read buffer alive.
//!
//! [`Config::once_keys`]: crate::Config::once_keys
//! [`Config::once_bytes`]: crate::Config::once_bytes

use std::collections::VecDeque;

use bytes::Bytes;
use rustc_hash::FxHashMap as HashMap;

use super::pending::OnceKey;
use crate::Peer;

/// A remembered reply: who ran it, and its body.
pub(super) struct Done {
    pub from: Peer,
    pub body: Bytes,
}

pub(super) struct OnceResults {
    done: HashMap<OnceKey, Done>,
    /// Oldest first.
    order: VecDeque<OnceKey>,
    bytes: usize,
    max_keys: usize,
    max_bytes: usize,
}

impl OnceResults {
    pub fn new(max_keys: usize, max_bytes: usize) -> OnceResults {
        OnceResults {
            done: HashMap::default(),
            order: VecDeque::new(),
            bytes: 0,
            max_keys,
            max_bytes,
        }
    }

    pub fn get(&self, key: &OnceKey) -> Option<&Done> {
        self.done.get(key)
    }

    fn cost(key: &OnceKey, body: &[u8]) -> usize {
        key.0.len() + key.1.len() + body.len()
    }

    /// Remembers `key`'s reply, forgetting the oldest beyond the limits.
    pub fn remember(&mut self, key: OnceKey, from: Peer, body: &[u8]) {
        let body = Bytes::copy_from_slice(body);
        self.bytes += Self::cost(&key, &body);
        if let Some(old) = self.done.insert(key.clone(), Done { from, body }) {
            // A key run again after it was forgotten and remembered anew: count it once.
            self.bytes -= Self::cost(&key, &old.body);
            self.order.retain(|k| *k != key);
        }
        self.order.push_back(key);
        while self.order.len() > self.max_keys || self.bytes > self.max_bytes {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some(done) = self.done.remove(&oldest) {
                self.bytes -= Self::cost(&oldest, &done.body);
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.done.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: u32) -> OnceKey {
        (Bytes::from_static(b"e"), Bytes::from(k.to_string()))
    }

    #[test]
    fn the_oldest_go_first_by_count_and_by_bytes() {
        let mut once = OnceResults::new(3, 1000);
        for k in 0..5 {
            once.remember(key(k), Peer::Master, &[0; 10]);
        }
        assert_eq!(once.len(), 3);
        assert!(once.get(&key(1)).is_none() && once.get(&key(2)).is_some());

        once.remember(key(9), Peer::Master, &[0; 990]);
        assert!(once.get(&key(9)).is_some(), "the newest is kept");
        assert_eq!(once.len(), 1, "the others made room for its bytes");
        assert!(once.bytes <= 1000);
    }

    #[test]
    fn a_remembered_body_is_a_copy() {
        let frame = Bytes::from(vec![1u8; 4096]);
        let mut once = OnceResults::new(3, 1 << 20);
        once.remember(key(0), Peer::Master, &frame[..8]);
        let kept = &once.get(&key(0)).unwrap().body;
        assert_eq!(&kept[..], &[1u8; 8]);
        assert_ne!(kept.as_ptr(), frame.as_ptr());
    }
}
