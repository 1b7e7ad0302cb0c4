//! What the fake worker of the `hub` check does, read off the fuzzer's input.
//!
//! Frames are built from a few meaningful choices (the good worker's event, ids the Hub may be
//! waiting on, the epoch the Hub last named, a body that just fits the frame limit) as well as
//! arbitrary ones, so that short inputs reach deep into the routing rules.

use std::time::Duration;

use bytes::Bytes;
use messenger::wire::{Kind, Target, PROTOCOL_VERSION};
use messenger::{Peer, WorkerId};

use super::frames::KINDS;
use super::input::Input;

/// At most this many actions per input: each input runs in a few milliseconds.
pub const MAX_ACTIONS: usize = 32;

/// The fake worker's slot (the good worker has slot 0, which the fake must not take over: a
/// worker replaced in its slot is rightly never Ready again).
pub const FAKE_SLOT: u32 = 1;

/// Generations the fake connects as: small, and long enough that the Hub's stamp of the sender
/// makes a frame longer than the fake wrote it.
const GENERATIONS: [u64; 6] = [1, 2, 3, 200, 1 << 40, u64::MAX];

#[derive(Debug)]
pub enum Action {
    /// Sends one frame.
    Send(Frame),
    /// Sends bytes that may be anything: a broken frame, a part of one.
    Garbage(Vec<u8>),
    /// Reads up to this many frames that the Hub sent (and checks them).
    Read(usize),
    /// Answers the last request the Hub forwarded to it: a reply or a failure.
    Answer { failure: bool },
    /// Gives back room for the broadcasts it was sent (honest credit).
    Credit,
    /// The master, or the good worker, makes a call (in a task; it must end by its deadline).
    Call { by_good: bool, call: Call },
    /// The master drains the fake worker.
    Drain,
    /// The master closes the fake worker's connection.
    Detach,
    /// Drops its connection and connects again as generation `generation` of its slot.
    Reconnect { generation: u64, hello: HelloKind },
    /// Lets (virtual) time pass: deadlines and the stall watchdog act.
    Sleep(Duration),
}

/// How the fake worker opens a connection.
#[derive(Debug, Clone)]
pub enum HelloKind {
    /// This protocol's hello: the Hub must answer naming the worker.
    Good,
    /// Another protocol version: the Hub must refuse it.
    Version(u32),
    /// A frame of another kind first.
    NotHello,
    /// Any bytes.
    Garbage(Vec<u8>),
    /// Nothing (the Hub gives up after its handshake timeout).
    Silent,
}

/// A frame the fake sends, some fields resolved when it is sent.
#[derive(Debug)]
pub struct Frame {
    pub kind: Kind,
    pub id: Id,
    /// Who it claims to be (the Hub overwrites it).
    pub from: Peer,
    pub to: To,
    pub event: Bytes,
    pub key: Bytes,
    pub body: Body,
}

#[derive(Debug, Clone, Copy)]
pub enum Id {
    Value(u64),
    /// The id of the last request the Hub forwarded to the fake.
    LastRequest,
}

#[derive(Debug, Clone, Copy)]
pub enum To {
    Target(Target),
    /// A `map` naming the Ready set the Hub last listed to the fake.
    KnownEpoch {
        run_here: bool,
    },
    /// The caller of the last request forwarded to the fake.
    LastCaller,
}

#[derive(Debug, Clone)]
pub enum Body {
    /// The good worker's event, well formed.
    Echo,
    /// A well-formed reply to it.
    Reply,
    Bytes(Vec<u8>),
    /// As long as the frame limit allows, give or take a few bytes (`over` - 2).
    Big {
        over: usize,
    },
}

/// A call made by the master or the good worker.
#[derive(Debug, Clone)]
pub enum Call {
    Consume,
    ConsumeOnce(&'static str),
    Map,
    MapEach,
    Request(u32),
    RequestMaster,
    /// A broadcast of this many bytes of text.
    Broadcast(usize),
    /// The master's heartbeat to the fake worker.
    Ping,
}

/// The first hello, then the actions.
pub fn actions(input: &mut Input) -> (HelloKind, Vec<Action>) {
    // Mostly a good hello, so that most inputs get to the routing.
    let hello = if input.below(8) < 6 {
        HelloKind::Good
    } else {
        hello_from(input)
    };
    let mut actions = Vec::new();
    while !input.is_empty() && actions.len() < MAX_ACTIONS {
        actions.push(action_from(input));
    }
    (hello, actions)
}

fn action_from(input: &mut Input) -> Action {
    match input.below(16) {
        0..=5 => Action::Send(frame_from(input)),
        6 => Action::Garbage(input.bytes(64).to_vec()),
        7 | 8 => Action::Read(1 + input.below(16)),
        9 => Action::Answer {
            failure: input.bool(),
        },
        10 => Action::Credit,
        11 | 12 => Action::Call {
            by_good: input.bool(),
            call: call_from(input),
        },
        13 => match input.below(3) {
            0 => Action::Drain,
            1 => Action::Detach,
            _ => Action::Reconnect {
                generation: input.pick(&GENERATIONS),
                hello: if input.bool() {
                    HelloKind::Good
                } else {
                    hello_from(input)
                },
            },
        },
        _ => Action::Sleep(Duration::from_millis(input.below(3000) as u64)),
    }
}

fn hello_from(input: &mut Input) -> HelloKind {
    match input.below(5) {
        0 => HelloKind::Good,
        1 => HelloKind::Version(PROTOCOL_VERSION + 1 + input.below(1000) as u32),
        2 => HelloKind::NotHello,
        3 => HelloKind::Garbage(input.bytes(32).to_vec()),
        _ => HelloKind::Silent,
    }
}

fn frame_from(input: &mut Input) -> Frame {
    // The kinds a worker sends come first, and more often.
    let kind = match input.below(16) {
        0..=2 => Kind::Request,
        3 | 4 => Kind::Broadcast,
        5 | 6 => Kind::Reply,
        7 => Kind::Failure,
        8 | 9 => Kind::Announce,
        10 => Kind::Ready,
        11 => Kind::Cancel,
        12 => Kind::Credit,
        _ => input.pick(&KINDS),
    };
    let id = match input.below(4) {
        0 | 1 => Id::Value(input.below(4) as u64),
        2 => Id::LastRequest,
        _ => Id::Value(input.u64()),
    };
    let from = match input.below(5) {
        0 => Peer::Master,
        1 => Peer::Worker(WorkerId::new(0, 1)),
        2 => Peer::Worker(WorkerId::new(FAKE_SLOT, 1)),
        // A claim to be another host's: the Hub stamps the sender whatever it says.
        3 => Peer::Remote {
            host: messenger::HostId(input.u64()),
            worker: Some(WorkerId::new(0, 1)),
        },
        _ => Peer::Worker(WorkerId::new(input.u32(), input.u64())),
    };
    let to = match input.below(11) {
        0 => To::Target(Target::Hub),
        1 | 2 => To::Target(Target::Any),
        3 => To::Target(Target::All {
            epoch: input.below(4) as u64,
            run_here: input.bool(),
        }),
        4 => To::KnownEpoch {
            run_here: input.bool(),
        },
        5 => To::Target(Target::Slot(input.below(3) as u32)),
        6 => To::Target(Target::Master),
        7 => To::Target(Target::Worker(WorkerId::new(
            input.below(3) as u32,
            input.below(3) as u64,
        ))),
        8 => To::Target(Target::Once),
        // Another host's peer, on a Hub that joined no cluster.
        9 => To::Target(Target::Remote {
            host: messenger::HostId(input.below(3) as u64),
            worker: input.bool().then(|| WorkerId::new(0, 1)),
        }),
        _ => To::LastCaller,
    };
    let event = match input.below(6) {
        0..=2 => Bytes::from_static(b"echo"),
        3 => Bytes::from_static(b"other"),
        4 => Bytes::from_static(b"multiprocess.ping"),
        _ => Bytes::copy_from_slice(input.bytes(8)),
    };
    let key = input.pick(&[&b""[..], b"k1", b"k2"]);
    let body = match input.below(6) {
        0 | 1 => Body::Echo,
        2 => Body::Reply,
        3 => Body::Big {
            over: input.below(8),
        },
        _ => Body::Bytes(input.bytes(32).to_vec()),
    };
    Frame {
        kind,
        id,
        from,
        to,
        event,
        key: Bytes::from_static(key),
        body,
    }
}

fn call_from(input: &mut Input) -> Call {
    match input.below(9) {
        0 => Call::Consume,
        1 => Call::ConsumeOnce(input.pick(&["k1", "k2"])),
        2 => Call::Map,
        3 => Call::MapEach,
        4 => Call::Request(input.below(3) as u32),
        5 => Call::RequestMaster,
        6 => Call::Broadcast(input.below(16)),
        7 => Call::Broadcast(input.below(5000)),
        _ => Call::Ping,
    }
}
