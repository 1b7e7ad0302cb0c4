//! Calls from other hosts, run here: taken in from a message of calls, their answers (a
//! `map`'s share held back a little, `served.rs`) into the next message to the caller's host.

use bytes::Bytes;
use tokio::time::Instant;

use super::{Relay, MAX_INBOUND};
use crate::hub::HostId;
use crate::wire::{Envelope, Kind, Target};
use crate::{Error, Peer};

impl Relay {
    /// An answer for `to`, a caller on another host, from a call run here (or the member list
    /// of a `map`'s share): into the next message to `to`'s host, or held back.
    pub(super) fn answer(&mut self, to: Peer, mut env: Envelope) {
        let Some(host) = to.host() else {
            return;
        };
        env.to = Target::caller(to);
        if let Some((reply, envs)) = self.served.answer((to, env.id), env) {
            for env in envs {
                self.answer_to(host, &reply, env);
            }
        }
    }

    /// When the answers held back must go, if any are.
    pub fn hold_until(&self) -> Option<Instant> {
        self.served.hold_until()
    }

    /// Sends the answers held back (into the next messages).
    pub fn release_held(&mut self) {
        for (caller, reply, envs) in self.served.release() {
            let Some(host) = caller.host() else {
                continue;
            };
            for env in envs {
                self.answer_to(host, &reply, env);
            }
        }
    }

    fn answer_to(&mut self, host: HostId, reply: &async_nats::Subject, env: Envelope) {
        let to = env.to;
        if let Err(error) = self.outbox.answer(&mut self.codec, host, reply, &env) {
            // Too large for a NATS message: the caller is told so rather than left waiting.
            let max = self.codec.max_frame();
            let mut failure = Envelope::failure(env.id, env.from, env.event, &error, max);
            failure.to = to;
            if let Err(e) = self.outbox.answer(&mut self.codec, host, reply, &failure) {
                tracing::warn!(?to, "an answer for another host not sent: {e}");
            }
        }
    }

    /// Calls from another host: each frame one, from the host whose answers subject the
    /// message names as its reply (a frame that is not, is dropped).
    pub fn incoming_calls(&mut self, message: async_nats::Message) {
        let host = message.reply.as_ref().and_then(|reply| {
            let (caller, callee, _) = self.subjects.answer_parts(reply)?;
            (callee == self.me && caller != self.me).then_some(caller)
        });
        let (Some(host), Some(reply)) = (host, message.reply) else {
            return tracing::debug!("calls from another host without its answers subject: dropped");
        };
        for env in self.decode(&message.payload) {
            let from = env.from;
            if env.kind == Kind::Cancel && from.host() == Some(host) {
                // Its caller gave up: forgotten here, its routes here dropped.
                self.served.forget(&(from, env.id));
                self.hub.route_remote(env);
                continue;
            }
            if env.kind != Kind::Request || from.host() != Some(host) {
                tracing::debug!(%from, kind = ?env.kind, "a call from another host that is not one: dropped");
                continue;
            }
            if self.served.len() >= MAX_INBOUND && !self.served.contains(&(from, env.id)) {
                let error = Error::Busy {
                    event: env.event_name(),
                    peer: Peer::Remote {
                        host: self.me,
                        worker: None,
                    },
                };
                let max = self.codec.max_frame();
                let mut failure = Envelope::failure(env.id, Peer::Master, env.event, &error, max);
                failure.to = Target::caller(from);
                if let Err(e) = self.outbox.answer(&mut self.codec, host, &reply, &failure) {
                    tracing::debug!(%from, "a refusal for another host not sent: {e}");
                }
                continue;
            }
            let map = matches!(env.to, Target::All { .. });
            self.served.insert((from, env.id), reply.clone(), map);
            self.hub.route_remote(env);
        }
    }

    /// Forgets the calls from other hosts not answered within twice the request timeout.
    pub fn sweep(&mut self) {
        let now = Instant::now();
        let limit = self.timeout.saturating_mul(2);
        self.give_up(|since| now.saturating_duration_since(since) > limit);
    }

    /// Forgets the calls from other hosts running since an instant `which` names: their
    /// routes here are cancelled.
    pub(super) fn give_up(&mut self, which: impl Fn(Instant) -> bool) {
        for (caller, id) in self.served.give_up(which) {
            let cancel = Envelope {
                id,
                from: caller,
                ..Envelope::new(Kind::Cancel, "", Bytes::new())
            };
            self.hub.route_remote(cancel);
        }
    }
}
