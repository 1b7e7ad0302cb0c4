//! The protocol's own bodies: the member list, the hello, the credit.
//!
//! Each check reads its first byte as a mode: even, the rest is a body as a peer may send it
//! (it must decode or be refused, never panic, and what decodes must come back the same when
//! encoded again); odd, the rest builds a value that must survive encoding and decoding.

use bytes::Bytes;
use messenger::wire::{
    Credit, Envelope, FrameCodec, Hello, Kind, Members, Target, PROTOCOL_VERSION,
};
use messenger::{Error, Peer, WorkerId};

use super::frames::round_trip;
use super::input::Input;

/// At most this many workers in a list built from the input.
const MAX_WORKERS: usize = 40;

pub fn members(data: &[u8]) {
    let mut input = Input::new(data);
    if !input.bool() {
        let body = input.rest();
        match Members::from_bytes(body) {
            Ok(list) => assert_eq!(Members::from_bytes(&list.to_bytes()).unwrap(), list),
            Err(Error::Malformed { .. }) => {}
            Err(other) => panic!("{body:?}: {other}"),
        }
        return;
    }
    let list = Members {
        workers: (0..input.below(MAX_WORKERS))
            .map(|_| {
                let id = WorkerId::new(input.u32(), input.u64());
                match input.bool() {
                    false => Peer::Worker(id),
                    true => Peer::Remote {
                        host: messenger::HostId(input.u64()),
                        worker: Some(id),
                    },
                }
            })
            .collect(),
        run_here: input.bool(),
        epoch: input.u64(),
    };
    assert_eq!(Members::from_bytes(&list.to_bytes()).unwrap(), list);
    // As the Hub sends it: a frame addressed to all, naming the same epoch.
    let frame = list.frame(input.u64());
    round_trip(&mut FrameCodec::new(), &frame);
    assert_eq!(
        frame.to,
        Target::All {
            epoch: list.epoch,
            run_here: list.run_here
        }
    );
}

pub fn hello(data: &[u8]) {
    let mut input = Input::new(data);
    if !input.bool() {
        let body = input.rest();
        match Hello::from_bytes(body) {
            Ok(hello) => {
                assert_eq!(hello.version, PROTOCOL_VERSION);
                assert_eq!(Hello::from_bytes(&hello.to_bytes()).unwrap(), hello);
            }
            Err(Error::ProtocolMismatch { ours, theirs }) => {
                assert_eq!(ours, PROTOCOL_VERSION);
                assert_ne!(theirs, PROTOCOL_VERSION);
            }
            Err(Error::Malformed { .. }) => {}
            Err(other) => panic!("{body:?}: {other}"),
        }
        return;
    }
    let version = if input.bool() {
        PROTOCOL_VERSION
    } else {
        input.u32()
    };
    let peer = match input.below(3) {
        0 => None,
        1 => Some(Peer::Master),
        _ => Some(Peer::Worker(WorkerId::new(input.u32(), input.u64()))),
    };
    let hello = Hello { version, peer };
    let frame = hello.frame();
    round_trip(&mut FrameCodec::new(), &frame);
    match Hello::from_bytes(&frame.body) {
        Ok(back) => assert!(version == PROTOCOL_VERSION && back == hello, "{back:?}"),
        // Another version is said, whatever follows it.
        Err(Error::ProtocolMismatch { theirs, .. }) => {
            assert!(version != PROTOCOL_VERSION && theirs == version)
        }
        Err(other) => panic!("{hello:?}: {other}"),
    }
}

pub fn credit(data: &[u8]) {
    let mut input = Input::new(data);
    if !input.bool() {
        let frames = input.u64();
        let env = Envelope {
            id: frames,
            ..Envelope::new(Kind::Credit, "", Bytes::copy_from_slice(input.rest()))
        };
        match Credit::from_frame(&env) {
            Ok(credit) => {
                assert_eq!(credit.frames, frames, "the count is the frame's id");
                assert_eq!(Credit::from_frame(&credit.frame()).unwrap(), credit);
            }
            Err(Error::Malformed { .. }) => {}
            Err(other) => panic!("{env:?}: {other}"),
        }
        return;
    }
    let credit = Credit {
        frames: input.u64(),
        bytes: input.u64(),
    };
    let frame = credit.frame();
    round_trip(&mut FrameCodec::new(), &frame);
    assert_eq!(Credit::from_frame(&frame).unwrap(), credit);
}
