//! Broadcasts between hosts, flow-controlled end to end (`window.rs`): this host's go out
//! numbered, the others' come in and are acknowledged once they have left every queue here.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::time::Instant;

use super::Relay;
use crate::hub::HostId;
use crate::wire::{Envelope, Kind};

impl Relay {
    /// A broadcast of this host, numbered, into the next message of broadcasts.
    pub(super) fn broadcast(&mut self, mut env: Envelope) {
        env.from = self.stamped(env.from);
        env.id = self.sent.number();
        if let Err(e) = self.outbox.broadcast(&mut self.codec, &env) {
            tracing::warn!("a broadcast for other hosts not sent: {e}");
        }
        self.let_go();
    }

    /// Other hosts' broadcasts that have left every queue here: their senders are told.
    pub(super) async fn released(&mut self, seqs: &[(HostId, u64)]) {
        for (host, upto) in self.taken.released(seqs) {
            let mut ack = BytesMut::with_capacity(16);
            ack.put_u64(self.me.0);
            ack.put_u64(upto);
            self.publish(self.subjects.acks(host), ack.freeze()).await;
        }
    }

    /// A broadcast from another host.
    pub fn incoming_broadcast(&mut self, payload: &Bytes) {
        for env in self.decode(payload) {
            let Some(host) = env.from.host().filter(|h| *h != self.me) else {
                continue;
            };
            if env.kind != Kind::Broadcast {
                continue;
            }
            // Only a host of the cluster is owed acknowledgements: what is kept is bounded.
            if self.hub.knows_host(host) {
                self.taken.arrived(host, env.id);
            }
            self.hub.route_remote(env);
        }
    }

    /// Another host took this host's broadcasts up to a number.
    pub fn incoming_ack(&mut self, payload: &[u8]) {
        let (Some(host), Some(upto)) = (
            payload
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes),
            payload
                .get(8..16)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes),
        ) else {
            return tracing::debug!("an acknowledgement that does not decode: dropped");
        };
        self.sent.acked(HostId(host), upto);
        self.let_go();
    }

    /// A host joined: this host's broadcasts wait for it from now on.
    pub fn host_joined(&mut self, host: HostId) {
        self.sent.joined(host);
    }

    /// Tells the Hub how many more of its broadcasts every other host took.
    pub(super) fn let_go(&mut self) {
        let taken = self.sent.settle();
        if taken > 0 {
            self.hub
                .uplink_sent(usize::try_from(taken).unwrap_or(usize::MAX));
        }
        if taken > 0 || self.sent.outstanding() == 0 {
            self.progress = Instant::now();
        }
    }

    /// Broadcasts no other host acknowledged for `limit` are presumed lost on the way (a
    /// subscription that overflowed drops messages): their senders go on.
    pub fn unstick(&mut self, limit: Duration) {
        if self.sent.outstanding() > 0 && self.progress.elapsed() > limit {
            tracing::warn!(
                outstanding = self.sent.outstanding(),
                "broadcasts to other hosts not acknowledged for {limit:?}: presumed lost"
            );
            self.sent.lost();
            self.let_go();
        }
    }
}
