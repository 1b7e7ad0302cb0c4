//! A NATS message between hosts is a run of the messenger's own frames (`wire`), written by
//! `outbox.rs`: each a 4-byte length and an envelope.
//!
//! Read here straight from the message's bytes, one frame after the other: a frame that does
//! not decode is skipped (its length says where the next begins), so one bad frame costs only
//! itself. A frame that is most of its message is a slice of it; a smaller one is copied out,
//! so that what a handler or a queue keeps of a message pins at most twice its own size (many
//! small frames in a large message would each keep the whole of it alive).

use bytes::Bytes;

use crate::wire::{decode_envelope, Envelope, PREFIX};
use crate::Error;

/// The frames of `payload` that decode, and what was wrong with the rest, if anything: frames
/// that do not decode (skipped), a length over `max_frame` or past the end (the rest dropped).
pub(super) fn decode(payload: &Bytes, max_frame: usize) -> (Vec<Envelope>, Option<String>) {
    let mut envs = Vec::new();
    let mut problem = None;
    let mut at = 0;
    while at < payload.len() {
        let Some(prefix) = payload.get(at..at + PREFIX) else {
            problem = Some("cut short".to_owned());
            break;
        };
        let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
        if len > max_frame {
            problem = Some(
                Error::FrameTooLarge {
                    size: len,
                    max: max_frame,
                }
                .to_string(),
            );
            break;
        }
        let (start, end) = (at + PREFIX, at + PREFIX + len);
        if end > payload.len() {
            problem = Some("cut short".to_owned());
            break;
        }
        let frame = match 2 * len >= payload.len() {
            true => payload.slice(start..end),
            false => Bytes::copy_from_slice(&payload[start..end]),
        };
        match decode_envelope(&frame) {
            Ok(env) => envs.push(env),
            Err(e) => problem = Some(format!("a frame that does not decode: {e}")),
        }
        at = end;
    }
    (envs, problem)
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use tokio_util::codec::Encoder;

    use super::*;
    use crate::wire::{FrameCodec, Kind};

    fn frame(body: usize) -> BytesMut {
        let mut buf = BytesMut::new();
        let env = Envelope::new(Kind::Broadcast, "e", vec![7u8; body]);
        FrameCodec::new().encode(&env, &mut buf).unwrap();
        buf
    }

    #[test]
    fn a_bad_frame_costs_only_itself_and_small_frames_do_not_pin_the_message() {
        let mut message = BytesMut::new();
        message.extend_from_slice(&frame(10));
        // A frame whose envelope is garbage, between two good ones.
        message.extend_from_slice(&[0, 0, 0, 3, 0xc1, 0xc1, 0xc1]);
        message.extend_from_slice(&frame(20));
        let payload = message.freeze();
        let (envs, problem) = decode(&payload, 1 << 20);
        assert_eq!(envs.len(), 2);
        assert!(problem.unwrap().contains("does not decode"));
        // Copied out: neither keeps the message's allocation.
        let range = payload.as_ptr() as usize..payload.as_ptr() as usize + payload.len();
        assert!(envs
            .iter()
            .all(|env| !range.contains(&(env.body.as_ptr() as usize))));
        // One frame alone is a slice of its message.
        let alone = frame(1000).freeze();
        let (envs, _) = decode(&alone, 1 << 20);
        assert!(alone.as_ptr_range().contains(&envs[0].body.as_ptr()));
        // A length past the end, or over the limit: what came before is kept.
        let mut cut = BytesMut::from(&frame(10)[..]);
        cut.extend_from_slice(&frame(100)[..50]);
        let (envs, problem) = decode(&cut.freeze(), 1 << 20);
        assert_eq!((envs.len(), problem.as_deref()), (1, Some("cut short")));
        let (envs, problem) = decode(&frame(100).freeze(), 64);
        assert!(envs.is_empty() && problem.unwrap().contains("64"));
    }
}
