//! A NATS message between hosts is a run of the messenger's own frames (`wire`), written by
//! `outbox.rs`.

use bytes::BytesMut;
use tokio_util::codec::Decoder;

use crate::wire::{Envelope, FrameCodec};

/// The frames of a message, and what was wrong with the rest of it, if anything (cut short,
/// or not a frame).
pub(super) fn decode(codec: &mut FrameCodec, payload: &[u8]) -> (Vec<Envelope>, Option<String>) {
    let mut buf = BytesMut::from(payload);
    let mut envs = Vec::new();
    loop {
        match codec.decode(&mut buf) {
            Ok(Some(env)) => envs.push(env),
            Ok(None) if buf.is_empty() => return (envs, None),
            Ok(None) => return (envs, Some("cut short".into())),
            Err(e) => return (envs, Some(format!("that does not decode: {e}"))),
        }
    }
}
