//! The handlers a Messenger runs, by event name, with their types erased: MessagePack in,
//! MessagePack out. A request (and a share a process runs itself) goes to an event's first
//! handler; a broadcast to all of them.

use std::sync::{Arc, RwLock};

use bytes::Bytes;
use rustc_hash::FxHashMap as HashMap;

use crate::payload::{decode, encode};
use crate::{BoxFuture, Event, Peer, Result};

/// A handler: the event's bytes and its sender in, the reply's bytes out.
pub(super) type Erased =
    Arc<dyn Fn(Bytes, Peer) -> BoxFuture<'static, Result<Bytes>> + Send + Sync>;

/// `handler`, for the bytes of `E` and of its reply.
pub(super) fn erase<E, F, Fut>(handler: F) -> Erased
where
    E: Event,
    F: Fn(Peer, E) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = E::Reply> + Send + 'static,
{
    Arc::new(
        move |body: Bytes, from: Peer| match decode::<E>(E::NAME, &body) {
            Ok(event) => {
                let reply = handler(from, event);
                Box::pin(async move { encode(E::NAME, &reply.await) })
            }
            Err(err) => Box::pin(std::future::ready(Err(err))),
        },
    )
}

#[derive(Default)]
pub(super) struct Handlers {
    by_name: RwLock<HashMap<Bytes, Arc<[Erased]>>>,
}

impl Handlers {
    /// Adds a handler for `name`; `true` if it is the event's first (to be announced), and
    /// how many events are handled now.
    pub fn add(&self, name: &'static str, handler: Erased) -> (bool, usize) {
        let mut by_name = self.by_name.write().unwrap_or_else(|e| e.into_inner());
        let entry = by_name
            .entry(Bytes::from_static(name.as_bytes()))
            .or_insert_with(|| Arc::from(Vec::new()));
        let first = entry.is_empty();
        let mut list = entry.to_vec();
        list.push(handler);
        *entry = Arc::from(list);
        (first, by_name.len())
    }

    /// Forgets every handler: a closed Messenger runs none, and what its handlers keep (a clone
    /// of the Messenger itself, say) is freed.
    pub fn clear(&self) {
        self.by_name
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    pub fn handles(&self, event: &[u8]) -> bool {
        let by_name = self.by_name.read().unwrap_or_else(|e| e.into_inner());
        by_name.get(event).is_some_and(|list| !list.is_empty())
    }

    /// The handler that answers requests for `event`.
    pub fn first(&self, event: &[u8]) -> Option<Erased> {
        let by_name = self.by_name.read().unwrap_or_else(|e| e.into_inner());
        by_name.get(event).and_then(|list| list.first().cloned())
    }

    /// Every handler of `event`, for a broadcast.
    pub fn all(&self, event: &[u8]) -> Option<Arc<[Erased]>> {
        let by_name = self.by_name.read().unwrap_or_else(|e| e.into_inner());
        by_name.get(event).cloned()
    }
}
