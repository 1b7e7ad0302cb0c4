//! The Ready set as a worker last heard of it: a `map` made while it is still the Hub's names
//! its epoch instead of asking for the member list again.

use std::sync::Arc;

use super::Shared;
use crate::wire::{Envelope, Members};
use crate::Peer;

/// The Ready set as a [`Members`] list named it. A `map` made while it is still the Hub's
/// needs no member list: the caller names its `epoch`, and only a changed set is sent again.
#[derive(Clone, Default)]
pub(super) struct ReadySet {
    /// 0: not told yet.
    pub(super) epoch: u64,
    pub(super) workers: Arc<[Peer]>,
}

impl Shared {
    /// Keeps the Ready set a member list names, for the next `map`s. Read as the frame comes,
    /// so a later call never guesses from an older set.
    pub(super) fn learn(&self, list: &Envelope) {
        // One that does not decode fails its own call.
        let Ok(Members { workers, epoch, .. }) = Members::from_bytes(&list.body) else {
            return;
        };
        let mut known = self.ready_set.lock().unwrap_or_else(|e| e.into_inner());
        if epoch > known.epoch {
            *known = ReadySet {
                epoch,
                workers: workers.into(),
            };
        }
    }

    /// The Ready set last listed, if any.
    pub(super) fn ready_set(&self) -> Option<ReadySet> {
        let known = self.ready_set.lock().unwrap_or_else(|e| e.into_inner());
        (known.epoch != 0).then(|| known.clone())
    }
}
