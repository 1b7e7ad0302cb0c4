//! The wire format: length-prefixed frames, each one MessagePack [`Envelope`].
//!
//! A frame is a 4-byte big-endian length, then that many bytes of MessagePack: an array of 11
//! `[kind, id, from_kind, from_slot, from_generation, to_kind, to_slot, to_generation, event, key,
//! body]`, the integers in their shortest form and the three names as binary strings (`to_slot`
//! and `to_generation` hold a target's two numbers: a slot and a generation, or a `map`'s epoch
//! and run-here flag). A frame one of whose ends is on another host (a cluster joined over NATS)
//! has a 12th field, that host's id. `body` is the event's (or reply's) own MessagePack bytes, so the Hub routes on
//! the envelope alone and never decodes a user type. The envelope has one fixed shape, so its few
//! MessagePack types (array, unsigned integer, binary) are written and read by hand in this module
//! (no serde machinery on the hot path; payloads use rmp-serde), and decoding is zero-copy:
//! `event`, `key` and `body` are slices of the frame, and a frame of the read buffer, which is
//! kept small ([`READ_CHUNK`]). Event names and `consume_once` keys are at most [`MAX_NAME`]
//! bytes.
//!
//! Files: the envelope here, the codec in `codec.rs`, the MessagePack primitives in
//! `msgpack.rs`, the protocol's own bodies ([`Hello`], [`Members`]) in `bodies.rs`.
//!
//! ```
//! use bytes::BytesMut;
//! use messenger::wire::{Envelope, FrameCodec, Kind};
//! use tokio_util::codec::{Decoder, Encoder};
//!
//! let mut codec = FrameCodec::new();
//! let mut buf = BytesMut::new();
//! let sent = Envelope::new(Kind::Broadcast, "tick", vec![0x2a]); // 42 as MessagePack
//! codec.encode(sent.clone(), &mut buf).unwrap();
//!
//! // a 4-byte big-endian length, then the envelope: a MessagePack array of 11 fields
//! assert_eq!(&buf[..5], &[0, 0, 0, 20, 0x9b]);
//! let got = codec.decode(&mut buf).unwrap().unwrap();
//! assert_eq!(got, sent);
//! assert!(buf.is_empty());
//! ```

use bytes::Bytes;

use crate::{Error, HostId, Peer, WorkerId};

mod bodies;
mod codec;
mod msgpack;

pub use bodies::{Credit, Hello, Members};
#[cfg(feature = "nats")]
pub(crate) use codec::decode_envelope;
pub use codec::{Builder, FrameCodec};

/// The protocol version sent in the first frame of every connection. 3: broadcast credit
/// ([`Kind::Credit`]), a consume given back to its caller is [`Kind::RunHere`], errors travel
/// in a form any version reads, names have a length limit.
pub const PROTOCOL_VERSION: u32 = 3;

/// How much a connection reads at a time: the most a small frame keeps alive of the buffer it
/// was read into (see [`FrameCodec`]).
pub const READ_CHUNK: usize = 64 * 1024;

/// The longest event name, and the longest `consume_once` key, in bytes.
pub const MAX_NAME: usize = 1024;

/// The default maximum frame size: 16 MiB.
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024;

/// An upper bound of an envelope's size without its `event`, `key` and `body` bytes. Senders
/// check `bytes + ENVELOPE_OVERHEAD` against the maximum, so a frame that passes that check is
/// never refused by the encoder.
pub const ENVELOPE_OVERHEAD: usize = 72;

/// The length prefix.
pub(crate) const PREFIX: usize = 4;

/// What a frame is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// The first frame each way: the protocol version (and, from the Hub, who you are).
    Hello = 0,
    /// A peer handles the event named in `event` from now on.
    Announce = 1,
    /// A worker asks to be Ready; answered with a `Reply` of the same id once the master grants
    /// it, or a `Failure` if it does not.
    Ready = 2,
    /// A one-way event for every Ready worker.
    Broadcast = 3,
    /// A call that wants an answer, addressed by `to`.
    Request = 4,
    /// A handler's answer to the request with the same id.
    Reply = 5,
    /// A call's failure: `body` is an [`Error`] in its wire form.
    Failure = 6,
    /// Before a `map`'s answers: who will answer ([`Members`]).
    Members = 7,
    /// The caller gave up waiting for the request with this id.
    Cancel = 8,
    /// The answer to a `consume` or `request` for which the Hub picked the caller itself: run
    /// the handler where you are.
    RunHere = 9,
    /// Room for broadcasts given back ([`Credit`]): by a worker that ran them, by the Hub to
    /// their sender once they left every queue.
    Credit = 10,
}

impl Kind {
    pub(super) fn from_u8(value: u8) -> Option<Kind> {
        Some(match value {
            0 => Kind::Hello,
            1 => Kind::Announce,
            2 => Kind::Ready,
            3 => Kind::Broadcast,
            4 => Kind::Request,
            5 => Kind::Reply,
            6 => Kind::Failure,
            7 => Kind::Members,
            8 => Kind::Cancel,
            9 => Kind::RunHere,
            10 => Kind::Credit,
            _ => return None,
        })
    }
}

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// The Hub itself (control frames) or nobody in particular.
    Hub,
    /// One Ready worker that handles the event (`consume`).
    Any,
    /// Every Ready worker (`map`).
    All {
        /// The last Ready set the caller was told of ([`Members::epoch`]; 0: none). While it is
        /// the Hub's, the caller knows who answers and no [`Members`] list comes.
        epoch: u64,
        /// With a current `epoch`: the caller runs its own share itself.
        run_here: bool,
    },
    /// The Ready worker of a slot: of this host, or with a `key`, of the host of that name
    /// (`request_at`, in a cluster joined over NATS).
    Slot(u32),
    /// The master.
    Master,
    /// One exact worker in any state; only the master may address workers so.
    Worker(WorkerId),
    /// Once per `key` (`consume_once`).
    Once,
    /// The master (`worker: None`) or a worker of another host: the caller an answer goes
    /// back to.
    Remote {
        /// The host.
        host: HostId,
        /// Its worker, or `None` for its master.
        worker: Option<WorkerId>,
    },
}

impl Target {
    /// The target an answer names: the caller it goes back to.
    pub fn caller(peer: Peer) -> Target {
        match peer {
            Peer::Master => Target::Master,
            Peer::Worker(id) => Target::Worker(id),
            Peer::Remote { host, worker } => Target::Remote { host, worker },
        }
    }

    /// The host, if this target is on another one.
    pub fn host(self) -> Option<HostId> {
        match self {
            Target::Remote { host, .. } => Some(host),
            _ => None,
        }
    }

    pub(super) fn to_wire(self) -> (u8, u64, u64) {
        match self {
            Target::Hub => (0, 0, 0),
            Target::Any => (1, 0, 0),
            Target::All { epoch, run_here } => (2, epoch, run_here.into()),
            Target::Slot(slot) => (3, slot.into(), 0),
            Target::Master => (4, 0, 0),
            Target::Worker(id) => (5, id.slot.into(), id.generation),
            Target::Once => (6, 0, 0),
            Target::Remote { worker: None, .. } => (7, 0, 0),
            Target::Remote {
                worker: Some(id), ..
            } => (8, id.slot.into(), id.generation),
        }
    }

    pub(super) fn from_wire((tag, a, b): (u8, u64, u64), host: Option<HostId>) -> Option<Target> {
        let slot = || u32::try_from(a).ok();
        Some(match tag {
            0 => Target::Hub,
            1 => Target::Any,
            2 => Target::All {
                epoch: a,
                run_here: match b {
                    0 => false,
                    1 => true,
                    _ => return None,
                },
            },
            3 => Target::Slot(slot()?),
            4 => Target::Master,
            5 => Target::Worker(WorkerId::new(slot()?, b)),
            6 => Target::Once,
            7 => Target::Remote {
                host: host?,
                worker: None,
            },
            8 => Target::Remote {
                host: host?,
                worker: Some(WorkerId::new(slot()?, b)),
            },
            _ => return None,
        })
    }
}

/// One message: routing information around the payload's own MessagePack bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// What the frame is for.
    pub kind: Kind,
    /// The request id: chosen by the caller, unique among its pending calls (0 if none).
    pub id: u64,
    /// The sender, as stamped by the Hub (a sender's own claim is overwritten).
    pub from: Peer,
    /// Where a request goes.
    pub to: Target,
    /// The event's wire name, UTF-8.
    pub event: Bytes,
    /// The `consume_once` key; empty otherwise.
    pub key: Bytes,
    /// The event's, reply's or error's MessagePack bytes.
    pub body: Bytes,
}

impl Envelope {
    /// An envelope of `kind` for `event` with `body`, from the master, to the Hub, id 0.
    pub fn new(kind: Kind, event: &'static str, body: impl Into<Bytes>) -> Self {
        Envelope {
            kind,
            id: 0,
            from: Peer::Master,
            to: Target::Hub,
            event: Bytes::from_static(event.as_bytes()),
            key: Bytes::new(),
            body: body.into(),
        }
    }

    /// An answer of `kind` (reply, failure, members, run here) to the request `id`.
    pub fn answer(kind: Kind, id: u64, from: Peer, event: Bytes, body: Bytes) -> Self {
        Envelope {
            kind,
            id,
            from,
            to: Target::Hub,
            event,
            key: Bytes::new(),
            body,
        }
    }

    /// A failure answer carrying `error`, within `max_frame` as senders count it
    /// (`payload + ENVELOPE_OVERHEAD`): the error's texts are cut short if need be, and the
    /// event's name left out when it would take more than half the room (the caller finds
    /// its call by the id; the error names the event).
    pub fn failure(id: u64, from: Peer, event: Bytes, error: &Error, max_frame: usize) -> Self {
        let room = max_frame.saturating_sub(ENVELOPE_OVERHEAD);
        let event = if event.len() <= room / 2 {
            event
        } else {
            Bytes::new()
        };
        let body = error.to_wire_within(room - event.len());
        Envelope::answer(Kind::Failure, id, from, event, body)
    }

    /// The error a `Failure` frame carries.
    pub fn error(&self) -> Error {
        Error::from_wire(&self.body)
    }

    /// The event's name as text (lossy for a peer that sent invalid UTF-8).
    pub fn event_name(&self) -> String {
        String::from_utf8_lossy(&self.event).into_owned()
    }

    /// The bytes of its names and payload.
    pub fn payload_len(&self) -> usize {
        self.event.len() + self.key.len() + self.body.len()
    }

    /// Its size as a frame, at most.
    pub fn wire_len(&self) -> usize {
        PREFIX + ENVELOPE_OVERHEAD + self.payload_len()
    }
}
