//! The frame decoder and the envelope: what every byte from a peer goes through first.

use bytes::{BufMut, Bytes, BytesMut};
use messenger::wire::{
    Envelope, FrameCodec, Kind, Target, DEFAULT_MAX_FRAME, ENVELOPE_OVERHEAD, MAX_NAME, READ_CHUNK,
};
use messenger::{Error, Peer, WorkerId};
use tokio_util::codec::{Decoder, Encoder};

use super::input::Input;

/// The most bytes one input's stream may expand to: large frames (over [`READ_CHUNK`]) need
/// no large input, and no input takes long.
const MAX_STREAM: usize = 1 << 20;

/// The frame limits tried: the smallest a Hub allows, one under a read chunk, one over it,
/// the default.
const MAX_FRAMES: [usize; 4] = [256, 1024, READ_CHUNK + 1024, DEFAULT_MAX_FRAME];

pub const KINDS: [Kind; 11] = [
    Kind::Hello,
    Kind::Announce,
    Kind::Ready,
    Kind::Broadcast,
    Kind::Request,
    Kind::Reply,
    Kind::Failure,
    Kind::Members,
    Kind::Cancel,
    Kind::RunHere,
    Kind::Credit,
];

/// Arbitrary bytes read as a connection would read them, in reads of arbitrary sizes: the
/// same frames, and the same end, as when decoded from one buffer; every frame decoded
/// encodes again and comes back the same; the read buffer stays small.
pub fn frame_decoder(data: &[u8]) {
    let mut input = Input::new(data);
    let max_frame = input.pick(&MAX_FRAMES);
    let keep_chunks = input.pick(&[None, Some(0), Some(1), Some(2), Some(16)]);
    let reads: Vec<usize> = (0..1 + input.below(8))
        .map(|_| 1 + usize::from(input.u16()))
        .collect();
    let stream = stream(&mut input);

    let mut builder = FrameCodec::builder().max_frame(max_frame);
    if let Some(chunks) = keep_chunks {
        builder = builder.keep_chunks(chunks);
    }
    let (frames, end) = read_in_pieces(builder.new_codec(), &stream, &reads);
    let plain = FrameCodec::builder().max_frame(max_frame).new_codec();
    let (whole, whole_end) = read_at_once(plain.clone(), &stream);
    assert_eq!(end, whole_end, "read in pieces or at once, the same end");
    assert!(
        frames == whole,
        "read in pieces or at once, the same frames"
    );
    for env in &frames {
        assert!(env.event.len() <= MAX_NAME && env.key.len() <= MAX_NAME);
        assert!(std::str::from_utf8(&env.event).is_ok(), "{env:?}");
        round_trip(&mut plain.clone(), env);
    }
}

/// An envelope built from the input encodes (or is refused as too large, leaving the buffer
/// as it was), and decodes back to itself if it is valid, or is malformed if not. Then the
/// rest of the input, read as an envelope's MessagePack, is a frame or malformed: never a
/// panic, and a frame that decodes encodes again to the same envelope.
pub fn envelope(data: &[u8]) {
    let mut input = Input::new(data);
    let max_frame = input.pick(&MAX_FRAMES);
    let mut codec = FrameCodec::builder().max_frame(max_frame).new_codec();
    let env = envelope_from(&mut input);
    let mut buf = BytesMut::from(&b"before"[..]);
    match codec.encode(&env, &mut buf) {
        Ok(()) => {
            let mut frame = buf.split_off(6);
            assert!(frame.len() <= env.wire_len(), "wire_len is an upper bound");
            let got = codec.decode(&mut frame);
            let valid = env.event.len() <= MAX_NAME
                && env.key.len() <= MAX_NAME
                && std::str::from_utf8(&env.event).is_ok();
            match got {
                Ok(Some(got)) if valid => assert!(got == env, "{got:?} != {env:?}"),
                Err(Error::Malformed { .. }) if !valid => {}
                other => panic!("{env:?} (valid: {valid}) decoded as {other:?}"),
            }
            assert!(frame.is_empty());
        }
        Err(Error::FrameTooLarge { size, max }) => {
            assert_eq!(
                &buf[..],
                b"before",
                "a refused frame leaves the buffer as it was"
            );
            assert_eq!(max, max_frame);
            assert!(size > max_frame);
            // What the senders check before they queue: within it, a frame always encodes.
            assert!(env.payload_len() + ENVELOPE_OVERHEAD > max_frame);
        }
        Err(other) => panic!("encoding failed: {other}"),
    }

    let body = input.rest();
    let mut frame = BytesMut::with_capacity(4 + body.len());
    frame.put_u32(body.len() as u32);
    frame.put_slice(body);
    match FrameCodec::new().decode(&mut frame) {
        Ok(Some(env)) => round_trip(&mut FrameCodec::new(), &env),
        Err(Error::Malformed { .. }) => {}
        other => panic!("{body:?} decoded as {other:?}"),
    }
}

/// `env` encodes with `codec` (it decoded with the same limit) within its `wire_len`, and
/// decodes back to itself.
pub fn round_trip(codec: &mut FrameCodec, env: &Envelope) {
    let mut buf = BytesMut::new();
    codec
        .encode(env, &mut buf)
        .expect("a frame that decoded encodes again");
    assert!(buf.len() <= env.wire_len(), "wire_len is an upper bound");
    let back = codec.decode(&mut buf).expect("it decodes again");
    assert!(back.as_ref() == Some(env), "{back:?} != {env:?}");
    assert!(buf.is_empty());
}

/// How a stream of frames ended: cleanly, or with this error (its message).
#[derive(Debug, PartialEq, Eq)]
enum End {
    Clean,
    Error(String),
}

/// Decodes `stream` as [`tokio_util::codec::FramedRead`] would from a socket: a read buffer
/// of [`READ_CHUNK`] bytes, each read bringing what the socket has (the next of `reads`) up to
/// the room left, every frame decoded before the next read, `decode_eof` at the end.
fn read_in_pieces(mut codec: FrameCodec, stream: &[u8], reads: &[usize]) -> (Vec<Envelope>, End) {
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut frames = Vec::new();
    let mut fed = 0;
    // A large stream in no more than a few thousand reads, to keep each input quick.
    let least = stream.len() / 4096;
    for read in reads.iter().cycle() {
        let eof = fed == stream.len();
        loop {
            let got = if eof {
                codec.decode_eof(&mut buf)
            } else {
                codec.decode(&mut buf)
            };
            match got {
                Ok(Some(env)) => {
                    // Frames are split off a small buffer: what follows a large frame goes into
                    // a fresh one, and a buffer grown past two chunks is let go.
                    assert!(
                        buf.capacity() <= (2 * READ_CHUNK).max(buf.len()),
                        "a read buffer of {} bytes kept",
                        buf.capacity()
                    );
                    frames.push(env);
                }
                Ok(None) if eof => return (frames, End::Clean),
                Ok(None) => break,
                Err(err) => return (frames, End::Error(err.to_string())),
            }
        }
        buf.reserve(1);
        let room = buf.capacity() - buf.len();
        let n = (*read).max(least).min(room).min(stream.len() - fed);
        buf.extend_from_slice(&stream[fed..fed + n]);
        fed += n;
    }
    unreachable!("reads is never empty")
}

/// Decodes `stream` from one buffer that holds all of it.
fn read_at_once(mut codec: FrameCodec, stream: &[u8]) -> (Vec<Envelope>, End) {
    let mut buf = BytesMut::from(stream);
    let mut frames = Vec::new();
    loop {
        match codec.decode_eof(&mut buf) {
            Ok(Some(env)) => frames.push(env),
            Ok(None) => return (frames, End::Clean),
            Err(err) => return (frames, End::Error(err.to_string())),
        }
    }
}

/// A byte stream from the input: raw bytes, well-formed frames (maybe over the limit), and
/// runs of one byte (to reach the large-frame paths with a small input).
fn stream(input: &mut Input) -> Vec<u8> {
    let mut stream = Vec::new();
    let mut codec = FrameCodec::builder()
        .max_frame(u32::MAX as usize)
        .new_codec();
    while !input.is_empty() && stream.len() < MAX_STREAM {
        match input.below(3) {
            0 => stream.extend_from_slice(input.bytes(255)),
            1 => {
                let mut buf = BytesMut::new();
                codec.encode(&envelope_from(input), &mut buf).unwrap();
                stream.extend_from_slice(&buf);
            }
            _ => {
                let len = input.below(3 * READ_CHUNK);
                let byte = input.u8();
                stream.resize(stream.len() + len, byte);
            }
        }
    }
    stream.truncate(MAX_STREAM);
    stream
}

/// An envelope from the input: any kind, sender and target, names within and over the limits
/// (and not UTF-8), bodies small and over a read chunk.
pub fn envelope_from(input: &mut Input) -> Envelope {
    let kind = input.pick(&KINDS);
    let id = if input.bool() {
        input.u64()
    } else {
        input.u8().into()
    };
    let from = if input.bool() {
        Peer::Master
    } else {
        Peer::Worker(WorkerId::new(input.u32(), input.u64()))
    };
    let to = target_from(input);
    let event = name_from(input);
    let key = name_from(input);
    let body = match input.below(3) {
        0 => Bytes::copy_from_slice(input.bytes(255)),
        1 => Bytes::from(vec![input.u8(); input.below(3 * READ_CHUNK)]),
        _ => Bytes::new(),
    };
    Envelope {
        kind,
        id,
        from,
        to,
        event,
        key,
        body,
    }
}

pub fn target_from(input: &mut Input) -> Target {
    match input.below(7) {
        0 => Target::Hub,
        1 => Target::Any,
        2 => Target::All {
            epoch: input.u64(),
            run_here: input.bool(),
        },
        3 => Target::Slot(input.u32()),
        4 => Target::Master,
        5 => Target::Worker(WorkerId::new(input.u32(), input.u64())),
        _ => Target::Once,
    }
}

/// An event name or key: short, at the limit, over it, or any bytes.
fn name_from(input: &mut Input) -> Bytes {
    match input.below(4) {
        0 => Bytes::from_static(b"echo"),
        1 => Bytes::from(vec![b'n'; MAX_NAME]),
        2 => Bytes::from(vec![b'n'; MAX_NAME + 1]),
        _ => Bytes::copy_from_slice(input.bytes(64)),
    }
}
