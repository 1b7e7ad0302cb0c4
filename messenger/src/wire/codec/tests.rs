//! The codec on frames built by hand: limits, malformed input, buffers kept.

use super::*;

#[test]
fn oversize_frames_are_refused_both_ways() {
    let mut codec = FrameCodec::builder().max_frame(100).new_codec();
    let mut buf = BytesMut::from(&b"keep"[..]);
    let big = Envelope::new(Kind::Broadcast, "big", vec![0u8; 200]);
    let err = codec.encode(&big, &mut buf).unwrap_err();
    assert!(
        matches!(err, Error::FrameTooLarge { max: 100, .. }),
        "{err}"
    );
    assert_eq!(
        &buf[..],
        b"keep",
        "a refused frame leaves the buffer as it was"
    );

    let mut incoming = BytesMut::new();
    incoming.put_u32(101);
    let err = codec.decode(&mut incoming).unwrap_err();
    assert!(
        matches!(
            err,
            Error::FrameTooLarge {
                size: 101,
                max: 100
            }
        ),
        "{err}"
    );
}

#[test]
fn a_frame_within_the_overhead_bound_always_encodes() {
    let mut codec = FrameCodec::builder().max_frame(1000).new_codec();
    let mut env = Envelope::new(Kind::Request, "e", vec![0u8; 1000 - ENVELOPE_OVERHEAD - 1]);
    env.id = u64::MAX;
    env.from = Peer::Worker(WorkerId::new(u32::MAX, u64::MAX));
    env.to = Target::Worker(WorkerId::new(u32::MAX, u64::MAX));
    codec.encode(&env, &mut BytesMut::new()).unwrap();
}

#[test]
fn an_envelope_array_in_a_longer_encoding_decodes_too() {
    let mut codec = FrameCodec::new();
    let sent = Envelope::new(Kind::Broadcast, "tick", vec![0x2a]);
    let mut buf = BytesMut::new();
    codec.encode(&sent, &mut buf).unwrap();
    assert_eq!(buf[4], 0x9b, "this side writes a fixarray");
    // What another MessagePack encoder may write instead: an array 16 of 11.
    let mut other = BytesMut::new();
    other.put_u32((buf.len() - 4 + 2) as u32);
    other.put_slice(&[0xdc, 0x00, 0x0b]);
    other.put_slice(&buf[5..]);
    assert_eq!(codec.decode(&mut other).unwrap().unwrap(), sent);
}

#[test]
fn malformed_frames_are_errors() {
    let mut codec = FrameCodec::new();
    let mut buf = BytesMut::new();
    buf.put_u32(3);
    buf.put_slice(&[0xc1, 0xc1, 0xc1]);
    assert!(matches!(
        codec.decode(&mut buf),
        Err(Error::Malformed { .. })
    ));
}

/// Names and keys longer than [`MAX_NAME`] are not frames of ours: a table keyed by them
/// would cost what the peer chooses.
#[test]
fn names_over_the_limit_are_malformed() {
    let mut codec = FrameCodec::new();
    for (event, key) in [(MAX_NAME + 1, 0), (1, MAX_NAME + 1)] {
        let env = Envelope {
            event: Bytes::from(vec![b'e'; event]),
            key: Bytes::from(vec![b'k'; key]),
            ..Envelope::new(Kind::Request, "", Vec::new())
        };
        let mut buf = BytesMut::new();
        codec.encode(&env, &mut buf).unwrap();
        let err = codec.decode(&mut buf).unwrap_err();
        assert!(err.to_string().contains("over the 1024 allowed"), "{err}");
    }
    let env = Envelope {
        event: Bytes::from(vec![b'e'; MAX_NAME]),
        key: Bytes::from(vec![b'k'; MAX_NAME]),
        ..Envelope::new(Kind::Request, "", Vec::new())
    };
    let mut buf = BytesMut::new();
    codec.encode(&env, &mut buf).unwrap();
    assert_eq!(codec.decode(&mut buf).unwrap(), Some(env));
}

/// A large frame is read into a buffer of its own, so it keeps nothing else alive, and what
/// follows it is read into a fresh small buffer.
#[test]
fn a_frame_keeps_at_most_a_read_chunk_alive_or_its_own_size() {
    let mut codec = FrameCodec::new();
    let big = Envelope::new(Kind::Broadcast, "big", vec![7u8; 1 << 20]);
    let small = Envelope::new(Kind::Broadcast, "small", vec![1u8; 8]);
    let mut wire = BytesMut::new();
    codec.encode(&small, &mut wire).unwrap();
    codec.encode(&big, &mut wire).unwrap();
    codec.encode(&small, &mut wire).unwrap();
    // Fed as a socket would: a read buffer of one chunk, filled up to its capacity.
    let mut src = BytesMut::with_capacity(READ_CHUNK);
    let mut got = Vec::new();
    let mut fed = 0;
    let whole = {
        let mut alone = BytesMut::new();
        codec.encode(&big, &mut alone).unwrap();
        alone.len()
    };
    while got.len() < 3 {
        if let Some(frame) = codec.decode(&mut src).unwrap() {
            got.push((frame, src.capacity()));
            continue;
        }
        if got.len() == 1 && src.len() >= PREFIX {
            let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
            assert_eq!(len + PREFIX, whole, "the big frame is next");
            assert_eq!(src.capacity(), whole, "a buffer of exactly its size");
        }
        if src.len() == src.capacity() {
            src.reserve(READ_CHUNK);
        }
        let room = (src.capacity() - src.len()).min(wire.len() - fed);
        src.extend_from_slice(&wire[fed..fed + room]);
        fed += room;
    }
    assert_eq!(got[1].0, big);
    // Before and after the big frame, small frames come in buffers of one chunk.
    assert!(got.iter().all(|(_, capacity)| *capacity <= READ_CHUNK));
    assert_eq!((&got[0].0, &got[2].0), (&small, &small));
}

/// Frames kept alive (in queues, say) keep at most a few read chunks alive: past the limit,
/// frames are copied; once chunks are let go, slicing resumes.
#[test]
fn kept_frames_pin_a_bounded_number_of_read_chunks() {
    let mut codec = FrameCodec::builder().keep_chunks(2).new_codec();
    let frame = Envelope::new(Kind::Broadcast, "e", vec![1u8; 100]);
    let mut one = BytesMut::new();
    codec.encode(&frame, &mut one).unwrap();
    // Each read chunk holds one frame; every decoded frame is kept.
    let mut kept = Vec::new();
    let mut chunks = std::collections::HashSet::new();
    for _ in 0..10 {
        let mut src = BytesMut::with_capacity(READ_CHUNK);
        src.extend_from_slice(&one);
        let end = src.as_ptr() as usize + src.capacity();
        let got = codec.decode(&mut src).unwrap().unwrap();
        // Sliced: the frame's bytes lie in the read chunk.
        if (end - READ_CHUNK..end).contains(&(got.body.as_ptr() as usize)) {
            chunks.insert(end);
        }
        kept.push((got, src));
    }
    assert_eq!(
        chunks.len(),
        2,
        "two chunks kept alive, the other frames copied"
    );
    // Let every frame go: the next chunks are sliced again.
    kept.clear();
    let mut src = BytesMut::with_capacity(READ_CHUNK);
    src.extend_from_slice(&one);
    let end = src.as_ptr() as usize + src.capacity();
    let got = codec.decode(&mut src).unwrap().unwrap();
    assert!((end - READ_CHUNK..end).contains(&(got.body.as_ptr() as usize)));
}

/// A `map` target's run-here flag is 0 or 1; anything else is not a frame of ours.
#[test]
fn a_map_target_with_a_bad_flag_is_malformed() {
    let mut codec = FrameCodec::new();
    let mut env = Envelope::new(Kind::Request, "e", Vec::new());
    env.to = Target::All {
        epoch: 7,
        run_here: true,
    };
    let mut buf = BytesMut::new();
    codec.encode(&env, &mut buf).unwrap();
    assert_eq!(codec.decode(&mut buf.clone()).unwrap(), Some(env));
    // After the length, the array mark and 5 one-byte fields: the target, its 2 numbers.
    let header = 4 + 1 + 5;
    assert_eq!(&buf[header..header + 3], &[2, 7, 1], "to_kind, epoch, flag");
    buf[header + 2] = 2;
    let err = codec.decode(&mut buf).unwrap_err();
    assert!(matches!(err, Error::Malformed { .. }), "{err}");
}
