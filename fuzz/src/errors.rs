//! Errors as they travel in `Failure` frames.
//!
//! The first byte is a mode: even, the rest is a failure's body as a peer may send it; odd,
//! the rest builds an error. Either way the error, sent on in a failure frame (as the Hub and
//! the messengers pass failures on), comes back as the same kind with the same message.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use messenger::wire::{Envelope, FrameCodec, Kind, DEFAULT_MAX_FRAME, ENVELOPE_OVERHEAD};
use messenger::{Error, Peer, WorkerId};
use tokio_util::codec::{Decoder, Encoder};

use super::input::Input;

pub fn error(data: &[u8]) {
    let mut input = Input::new(data);
    let error = if !input.bool() {
        // What a peer may send: any bytes. It becomes some error (a body that is not an
        // error's wire form is `Malformed`), never a panic.
        let body = Bytes::copy_from_slice(input.rest());
        Envelope::answer(Kind::Failure, 1, Peer::Master, Bytes::new(), body).error()
    } else {
        error_from(&mut input)
    };
    // However long its texts, a failure fits the smallest frame limits, and still reads as
    // an error.
    for max_frame in [256, 300, 1024] {
        let long = Bytes::from(vec![b'n'; 900]);
        let small = Envelope::failure(7, Peer::Master, long, &error, max_frame);
        assert!(
            small.payload_len() + ENVELOPE_OVERHEAD <= max_frame,
            "{error:?}: a failure of {} bytes for a limit of {max_frame}",
            small.payload_len()
        );
        let _ = small.error();
    }
    let event = Bytes::from_static(b"e");
    let failure = Envelope::failure(7, Peer::Master, event, &error, DEFAULT_MAX_FRAME);
    let back = failure.error();
    assert_eq!(
        back.to_string(),
        error.to_string(),
        "{error:?} came back as {back:?}"
    );
    assert_eq!(
        std::mem::discriminant(&back),
        std::mem::discriminant(&error),
        "{error:?} came back as {back:?}"
    );

    // And through the codec, as it crosses a connection.
    let mut codec = FrameCodec::new();
    let mut buf = BytesMut::new();
    codec.encode(&failure, &mut buf).unwrap();
    let crossed = codec.decode(&mut buf).unwrap().unwrap();
    assert_eq!(crossed.error().to_string(), error.to_string());
}

/// An error of any kind the messenger makes, with arbitrary fields. Not [`Error::Remote`]:
/// only decoding makes one (of a kind this version does not know), which the other mode
/// covers.
fn error_from(input: &mut Input) -> Error {
    let mut text = || String::from_utf8_lossy(input.bytes(64)).into_owned();
    let (a, b) = (text(), text());
    let peer = peer_from(input);
    let slot = input.u32();
    // The wire carries nanoseconds in a u64 (584 years): a call's deadline is at most
    // `MAX_DURATION` (100 years).
    let after = Duration::from_nanos(input.u64());
    let (size, max) = (input.u64() as usize, input.u64() as usize);
    let (ours, theirs) = (input.u32(), input.u32());
    match input.below(16) {
        0 => Error::NoHandler {
            event: a,
            peer: input.bool().then_some(peer),
        },
        1 => Error::NoWorker { slot },
        2 => Error::Timeout {
            event: a,
            after,
            peer: input.bool().then_some(peer),
        },
        3 => Error::WorkerGone { event: a, peer },
        4 => Error::Busy { event: a, peer },
        5 => Error::Decode {
            event: a,
            detail: b,
        },
        6 => Error::Encode {
            event: a,
            detail: b,
        },
        7 => Error::FrameTooLarge { size, max },
        8 => Error::ProtocolMismatch { ours, theirs },
        9 => Error::HandlerPanicked {
            event: a,
            message: b,
        },
        10 => Error::Forbidden { reason: a },
        11 => Error::Config { reason: a },
        12 => Error::Malformed { detail: a },
        13 => Error::Closed,
        14 => Error::Io(Arc::new(std::io::Error::other(a))),
        _ => {
            let kind = input.pick(&[
                std::io::ErrorKind::BrokenPipe,
                std::io::ErrorKind::ConnectionReset,
                std::io::ErrorKind::UnexpectedEof,
                std::io::ErrorKind::TimedOut,
            ]);
            Error::Io(Arc::new(std::io::Error::from(kind)))
        }
    }
}

fn peer_from(input: &mut Input) -> Peer {
    match input.below(3) {
        0 => Peer::Master,
        1 => Peer::Worker(WorkerId::new(input.u32(), input.u64())),
        _ => Peer::Remote {
            host: messenger::HostId(input.u64()),
            worker: input
                .bool()
                .then(|| WorkerId::new(input.u32(), input.u64())),
        },
    }
}
