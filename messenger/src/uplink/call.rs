//! A call to another host: one NATS request in a task of its own, which answers every route the
//! Hub keeps for the call, with the host's answers or a failure naming the host.

use std::time::Duration;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::frames;
use crate::hub::{HostId, Hub};
use crate::wire::{Envelope, FrameCodec, Kind, Target};
use crate::{Error, Peer};

pub(super) struct Call {
    hub: Hub,
    host: HostId,
    caller: Peer,
    id: u64,
    event: Bytes,
    /// The routes the Hub keeps for it.
    owed: Vec<Peer>,
    /// A `map`'s share: one answer per worker, each its own route.
    map: bool,
}

impl Call {
    /// `env`, a call from this host to `host`, owed by `owed`.
    pub fn new(hub: Hub, host: HostId, env: &Envelope, owed: Vec<Peer>) -> Call {
        Call {
            hub,
            host,
            caller: env.from,
            id: env.id,
            event: env.event.clone(),
            owed,
            map: matches!(env.to, Target::All { .. }),
        }
    }

    /// Sends `payload` to `subject` and answers every route, within `timeout`; at once when
    /// `lost` fires (the connection was lost: whether it ran there is unknown, and it is not
    /// sent again).
    pub async fn run(
        self,
        client: async_nats::Client,
        subject: String,
        payload: Bytes,
        timeout: Duration,
        lost: CancellationToken,
    ) {
        let request = async_nats::Request::new()
            .payload(payload)
            .timeout(Some(timeout));
        let answered = tokio::select! {
            answered = client.send_request(subject, request) => answered,
            () = lost.cancelled() => {
                let detail = "the NATS connection was lost with the call in flight";
                return self.fail_all(&self.unreachable(detail));
            }
        };
        match answered {
            Ok(message) => self.answered(&message.payload),
            Err(e) => {
                use async_nats::client::RequestErrorKind as Kind;
                let error = match e.kind() {
                    Kind::NoResponders => {
                        self.unreachable("nothing answers for it on NATS (stopped or killed?)")
                    }
                    Kind::TimedOut => Error::Timeout {
                        event: String::from_utf8_lossy(&self.event).into_owned(),
                        after: timeout,
                        peer: Some(Peer::Remote {
                            host: self.host,
                            worker: None,
                        }),
                    },
                    Kind::Other => self.unreachable(&e.to_string()),
                };
                self.fail_all(&error);
            }
        }
    }

    pub fn unreachable(&self, detail: &str) -> Error {
        Error::HostUnreachable {
            host: self.hub.host_name(self.host),
            detail: detail.to_owned(),
        }
    }

    pub fn fail_all(&self, error: &Error) {
        for &owed in &self.owed {
            let event = self.event.clone();
            self.hub
                .remote_failed(self.caller, self.id, owed, event, error);
        }
    }

    /// The host's answers: each to its route; a route left unanswered fails (a worker of a
    /// `map` the host no longer had).
    fn answered(&self, payload: &[u8]) {
        let mut codec = FrameCodec::builder()
            .max_frame(self.hub.config().max_frame)
            .new_codec();
        let (envs, problem) = frames::decode(&mut codec, payload);
        if let Some(problem) = problem {
            tracing::debug!(host = %self.host, "an answer {problem}: the rest dropped");
        }
        for env in envs {
            if env.id != self.id {
                tracing::debug!(host = %self.host, "an answer for another call: dropped");
                continue;
            }
            if self.map && env.kind == Kind::Failure && env.from == Peer::Master {
                // The host refused the whole share.
                return self.fail_all(&env.error());
            }
            let owed_by = Peer::Remote {
                host: self.host,
                worker: if self.map { env.from.worker() } else { None },
            };
            self.hub.remote_answer(self.host, env, self.caller, owed_by);
        }
        for &owed in &self.owed {
            let error = Error::WorkerGone {
                event: String::from_utf8_lossy(&self.event).into_owned(),
                peer: owed,
            };
            let event = self.event.clone();
            self.hub
                .remote_failed(self.caller, self.id, owed, event, &error);
        }
    }
}
