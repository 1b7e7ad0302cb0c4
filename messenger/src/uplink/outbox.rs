//! Broadcasts, calls and answers for other hosts, gathered into one NATS message per
//! destination: the frames the uplink takes from the Hub in one go (up to `link.rs`'s batch)
//! leave as one message of broadcasts and one per host that calls or answers go to, each at
//! most the server's `max_payload`, in the order they were taken.
//!
//! One message for many frames is what makes calls across hosts cheap: the NATS server, the
//! client and the kernel work per message, and under load a host's calls to another arrive in
//! bursts. A message of calls is numbered (its batch), so that a message nobody took fails
//! exactly the calls in it.

use bytes::BytesMut;
use rustc_hash::FxHashMap as HashMap;
use tokio_util::codec::Encoder;

use crate::hub::HostId;
use crate::wire::{Envelope, FrameCodec};
use crate::Error;

/// Where a message goes.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum To {
    /// Broadcasts, for every other host.
    Broadcasts,
    /// Calls to `host`, numbered `batch`.
    Calls { host: HostId, batch: u64 },
    /// Answers for callers of another host, on a reply subject it gave.
    Answers { reply: async_nats::Subject },
}

/// A message ready to go.
#[derive(Debug)]
pub(super) struct Message {
    pub to: To,
    pub payload: bytes::Bytes,
}

struct Open {
    to: To,
    buf: BytesMut,
}

pub(super) struct Outbox {
    /// The most bytes a message may carry (the server's `max_payload`).
    max: usize,
    batches: u64,
    broadcasts: Option<Open>,
    calls: HashMap<HostId, Open>,
    /// Keyed by the callers' host: any reply subject it gave reaches it.
    answers: HashMap<HostId, Open>,
    full: Vec<Message>,
}

impl Outbox {
    pub fn new(max: usize) -> Outbox {
        Outbox {
            max,
            batches: 0,
            broadcasts: None,
            calls: HashMap::default(),
            answers: HashMap::default(),
            full: Vec::new(),
        }
    }

    /// Adds `env`, a broadcast for every other host.
    pub fn broadcast(&mut self, codec: &mut FrameCodec, env: &Envelope) -> Result<(), Error> {
        let open = self.broadcasts.get_or_insert_with(|| Open {
            to: To::Broadcasts,
            buf: BytesMut::new(),
        });
        add(open, codec, env, self.max, &mut self.full, || {
            To::Broadcasts
        })
    }

    /// Adds `env`, a call to `host`: the batch it goes in, or why it cannot go.
    pub fn call(
        &mut self,
        codec: &mut FrameCodec,
        host: HostId,
        env: &Envelope,
    ) -> Result<u64, Error> {
        let batches = &mut self.batches;
        let open = self.calls.entry(host).or_insert_with(|| Open {
            to: next(batches, host),
            buf: BytesMut::new(),
        });
        let next_batch = || next(&mut self.batches, host);
        add(open, codec, env, self.max, &mut self.full, next_batch)?;
        match open.to {
            To::Calls { batch, .. } => Ok(batch),
            To::Broadcasts | To::Answers { .. } => unreachable!("a host's calls are numbered"),
        }
    }

    /// Adds `env`, an answer for a caller on `host`, who gave `reply`.
    pub fn answer(
        &mut self,
        codec: &mut FrameCodec,
        host: HostId,
        reply: &async_nats::Subject,
        env: &Envelope,
    ) -> Result<(), Error> {
        let open = self.answers.entry(host).or_insert_with(|| Open {
            to: To::Answers {
                reply: reply.clone(),
            },
            buf: BytesMut::new(),
        });
        let again = || To::Answers {
            reply: reply.clone(),
        };
        add(open, codec, env, self.max, &mut self.full, again)
    }

    /// Every message gathered, to be sent now.
    pub fn take(&mut self) -> Vec<Message> {
        let mut out = std::mem::take(&mut self.full);
        out.extend(self.broadcasts.take().map(close));
        out.extend(self.calls.drain().map(|(_, open)| close(open)));
        out.extend(self.answers.drain().map(|(_, open)| close(open)));
        // Opened for a frame that did not fit alone.
        out.retain(|message| !message.payload.is_empty());
        out
    }

    pub fn set_max(&mut self, max: usize) {
        self.max = max;
    }

    pub fn is_empty(&self) -> bool {
        self.full.is_empty()
            && self.broadcasts.is_none()
            && self.calls.is_empty()
            && self.answers.is_empty()
    }

    /// Forgets what was gathered (the connection was lost: the calls in it fail with the
    /// others in flight).
    pub fn clear(&mut self) {
        self.full.clear();
        self.broadcasts = None;
        self.calls.clear();
        self.answers.clear();
    }
}

fn next(batches: &mut u64, host: HostId) -> To {
    *batches += 1;
    To::Calls {
        host,
        batch: *batches,
    }
}

fn close(open: Open) -> Message {
    Message {
        to: open.to,
        payload: open.buf.freeze(),
    }
}

/// Encodes `env` at the end of `open`. When it does not fit beside what is there, it starts
/// the next message (for `next`), and the full one goes to `full`; `Err` when it does not fit
/// alone.
fn add(
    open: &mut Open,
    codec: &mut FrameCodec,
    env: &Envelope,
    max: usize,
    full: &mut Vec<Message>,
    next: impl FnOnce() -> To,
) -> Result<(), Error> {
    let start = open.buf.len();
    if let Err(e) = codec.encode(env, &mut open.buf) {
        open.buf.truncate(start);
        return Err(e);
    }
    let size = open.buf.len() - start;
    if size > max {
        open.buf.truncate(start);
        return Err(Error::FrameTooLarge { size, max });
    }
    if open.buf.len() > max {
        let fresh = Open {
            to: next(),
            buf: open.buf.split_off(start),
        };
        full.push(close(std::mem::replace(open, fresh)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Kind;

    fn call(size: usize) -> Envelope {
        Envelope::new(Kind::Request, "e", vec![0u8; size])
    }

    #[test]
    fn a_host_s_calls_share_a_message_up_to_the_limit() {
        let mut codec = FrameCodec::new();
        let mut outbox = Outbox::new(1000);
        let (a, b) = (HostId(1), HostId(2));
        let first = outbox.call(&mut codec, a, &call(100)).unwrap();
        assert_eq!(outbox.call(&mut codec, a, &call(100)).unwrap(), first);
        let other = outbox.call(&mut codec, b, &call(100)).unwrap();
        assert_ne!(other, first);
        // Over the limit: the next message, numbered anew.
        let spilled = outbox.call(&mut codec, a, &call(800)).unwrap();
        assert_ne!(spilled, first);
        assert!(matches!(
            outbox.call(&mut codec, a, &call(2000)),
            Err(Error::FrameTooLarge { max: 1000, .. })
        ));
        let mut sent = outbox.take();
        sent.sort_by_key(|m| match m.to {
            To::Calls { batch, .. } => batch,
            To::Broadcasts | To::Answers { .. } => u64::MAX,
        });
        let batches: Vec<(u64, usize)> = sent
            .iter()
            .map(|m| match m.to {
                To::Calls { batch, .. } => (batch, m.payload.len()),
                To::Broadcasts | To::Answers { .. } => unreachable!(),
            })
            .collect();
        assert_eq!(batches.len(), 3);
        assert!(batches.iter().all(|(_, len)| *len <= 1000));
        assert_eq!(batches[0].0, first);
        // Every frame decodes back, in order.
        let mut frames = 0;
        for m in &sent {
            let (envs, problem) = super::super::frames::decode(&m.payload, 1 << 20);
            assert!(problem.is_none());
            frames += envs.len();
        }
        assert_eq!(frames, 4);
        assert!(outbox.is_empty());
    }
}
