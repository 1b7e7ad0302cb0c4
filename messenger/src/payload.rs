//! Payloads: the user's events and replies as MessagePack, with field names (structs as maps),
//! so that a field added with `#[serde(default)]` keeps old and new processes talking.

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::wire::{Envelope, Kind};
use crate::{Error, Result};

/// A payload larger than this gets its own buffer rather than pinning a shared one.
const ARENA: usize = 16 * 1024;

thread_local! {
    /// Payloads are cut from one buffer per thread (each cut shares it, counted), instead of a
    /// vector grown and allocated per message.
    static PAYLOADS: std::cell::RefCell<bytes::BytesMut> =
        std::cell::RefCell::new(bytes::BytesMut::new());
}

/// `value` as MessagePack; `event` names it in the error.
pub(crate) fn encode<T: Serialize + ?Sized>(event: &str, value: &T) -> Result<Bytes> {
    use bytes::BufMut;
    PAYLOADS.with(|arena| {
        let mut arena = arena.borrow_mut();
        if arena.capacity() < ARENA / 64 {
            // Reclaims the buffer when every payload cut from it is gone, else starts anew.
            arena.reserve(ARENA);
        }
        let written = rmp_serde::encode::write_named(&mut (&mut *arena).writer(), value);
        let body = arena.split().freeze();
        if arena.capacity() > 4 * ARENA {
            // A huge payload grew the buffer: let it go with its payload.
            *arena = bytes::BytesMut::new();
        }
        written.map(|()| body).map_err(|e| Error::Encode {
            event: event.into(),
            detail: e.to_string(),
        })
    })
}

/// A payload as `T`; `event` names it in the error.
pub(crate) fn decode<T: DeserializeOwned>(event: &str, body: &[u8]) -> Result<T> {
    rmp_serde::from_slice(body).map_err(|e| Error::Decode {
        event: event.into(),
        detail: e.to_string(),
    })
}

/// An answer's reply, or the error it carries.
pub(crate) fn decode_answer<R: DeserializeOwned>(event: &str, answer: &Envelope) -> Result<R> {
    match answer.kind {
        Kind::Reply => decode(event, &answer.body),
        Kind::Failure => Err(answer.error()),
        other => Err(Error::Malformed {
            detail: format!("expected an answer, got {other:?}"),
        }),
    }
}
