//! The wire format: length-prefixed frames, each one MessagePack [`Envelope`].
//!
//! A frame is a 4-byte big-endian length, then that many bytes of MessagePack: an array of 11
//! `[kind, id, from_kind, from_slot, from_generation, to_kind, to_slot, to_generation, event, key,
//! body]`, the integers in their shortest form and the last three as binary strings (`to_slot` and
//! `to_generation` hold a target's two numbers: a slot and a generation, or a `map`'s epoch and
//! run-here flag). `body` is the event's (or reply's) own MessagePack bytes, so the Hub routes on
//! the envelope alone and never decodes a user type. The envelope has one fixed shape, so its few
//! MessagePack types (array, unsigned integer, binary) are written and read by hand in this module
//! (no serde machinery on the hot path; payloads use rmp-serde), and decoding is zero-copy:
//! `event`, `key` and `body` are slices of the frame.
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

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use tokio_util::codec::{Decoder, Encoder};

use crate::{Error, Peer, WorkerId};

/// The protocol version sent in the first frame of every connection. 2: a `map` names the
/// caller's Ready set ([`Target::All`]) and a [`Fanout`] carries its epoch.
pub const PROTOCOL_VERSION: u32 = 2;

/// The default maximum frame size: 16 MiB.
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024;

/// An upper bound of an envelope's size without its `event`, `key` and `body` bytes. Senders
/// check `bytes + ENVELOPE_OVERHEAD` against the maximum, so a frame that passes that check is
/// never refused by the encoder.
pub const ENVELOPE_OVERHEAD: usize = 64;

const PREFIX: usize = 4;

/// What a frame is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// The first frame each way: the protocol version (and, from the Hub, who you are).
    Hello = 0,
    /// A peer handles the event named in `event` from now on.
    Announce = 1,
    /// A worker is Ready; answered with a `Reply` of the same id once the Hub has it.
    Ready = 2,
    /// A one-way event for every Ready worker.
    Broadcast = 3,
    /// A call that wants an answer, addressed by `to`.
    Request = 4,
    /// A handler's answer to the request with the same id.
    Reply = 5,
    /// A call's failure: `body` is an [`Error`].
    Failure = 6,
    /// Before a `map`'s answers: who will answer ([`Fanout`]).
    Fanout = 7,
    /// The caller gave up waiting for the request with this id.
    Cancel = 8,
}

impl Kind {
    fn from_u8(value: u8) -> Option<Kind> {
        Some(match value {
            0 => Kind::Hello,
            1 => Kind::Announce,
            2 => Kind::Ready,
            3 => Kind::Broadcast,
            4 => Kind::Request,
            5 => Kind::Reply,
            6 => Kind::Failure,
            7 => Kind::Fanout,
            8 => Kind::Cancel,
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
        /// The last Ready set the caller was told of ([`Fanout::epoch`]; 0: none). While it is
        /// the Hub's, the caller knows who answers and no [`Fanout`] comes.
        epoch: u64,
        /// With a current `epoch`: the caller runs its own share itself.
        run_here: bool,
    },
    /// The Ready worker of a slot.
    Slot(u32),
    /// The master.
    Master,
    /// One exact worker in any state; only the master may address workers so.
    Worker(WorkerId),
    /// Once per `key` (`consume_once`).
    Once,
}

impl Target {
    fn to_wire(self) -> (u8, u64, u64) {
        match self {
            Target::Hub => (0, 0, 0),
            Target::Any => (1, 0, 0),
            Target::All { epoch, run_here } => (2, epoch, run_here.into()),
            Target::Slot(slot) => (3, slot.into(), 0),
            Target::Master => (4, 0, 0),
            Target::Worker(id) => (5, id.slot.into(), id.generation),
            Target::Once => (6, 0, 0),
        }
    }

    fn from_wire((tag, a, b): (u8, u64, u64)) -> Option<Target> {
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

    /// An answer of `kind` (reply, failure, fanout) to the request `id`.
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

    /// A failure answer carrying `error`.
    pub fn failure(id: u64, from: Peer, event: Bytes, error: &Error) -> Self {
        let body = rmp_serde::to_vec(error).unwrap_or_default();
        Envelope::answer(Kind::Failure, id, from, event, body.into())
    }

    /// The event's name as text (lossy for a peer that sent invalid UTF-8).
    pub fn event_name(&self) -> String {
        String::from_utf8_lossy(&self.event).into_owned()
    }

    /// The bytes this envelope adds to its payload, at most.
    pub fn payload_len(&self) -> usize {
        self.event.len() + self.key.len() + self.body.len()
    }
}

/// The codec of the messenger's connections: [`Envelope`]s in 4-byte length-prefixed frames.
///
/// Both directions refuse a frame over the maximum size with [`Error::FrameTooLarge`]. The
/// encoder leaves the buffer as it was, so the connection stays usable (the messengers check
/// sizes before they queue a frame, so this only guards against misuse). The decoder cannot
/// skip what it cannot trust: a peer that sends an oversize or malformed frame gets its
/// connection closed.
#[derive(Debug, Clone)]
pub struct FrameCodec {
    max_frame: usize,
}

/// Configures a [`FrameCodec`].
///
/// ```
/// use messenger::wire::FrameCodec;
///
/// let codec = FrameCodec::builder().max_frame(1024).new_codec();
/// assert_eq!(codec.max_frame(), 1024);
/// ```
#[derive(Debug, Clone)]
pub struct Builder {
    max_frame: usize,
}

impl Builder {
    /// The largest frame, length prefix excluded, the codec encodes or decodes.
    pub fn max_frame(mut self, bytes: usize) -> Self {
        self.max_frame = bytes;
        self
    }

    /// The codec.
    pub fn new_codec(&self) -> FrameCodec {
        FrameCodec {
            max_frame: self.max_frame,
        }
    }
}

impl FrameCodec {
    /// A codec with the default maximum frame size ([`DEFAULT_MAX_FRAME`]).
    pub fn new() -> Self {
        Self::builder().new_codec()
    }

    /// A builder to configure a codec.
    pub fn builder() -> Builder {
        Builder {
            max_frame: DEFAULT_MAX_FRAME,
        }
    }

    /// The largest frame this codec accepts, in bytes.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }
}

impl Default for FrameCodec {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder for FrameCodec {
    type Item = Envelope;
    type Error = Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Envelope>, Error> {
        if src.len() < PREFIX {
            return Ok(None);
        }
        let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
        if len > self.max_frame {
            return Err(Error::FrameTooLarge {
                size: len,
                max: self.max_frame,
            });
        }
        if src.len() < PREFIX + len {
            src.reserve(PREFIX + len - src.len());
            return Ok(None);
        }
        src.advance(PREFIX);
        let frame = src.split_to(len).freeze();
        decode_envelope(&frame).map(Some)
    }
}

/// How many fields the envelope array has.
const FIELDS: u32 = 11;

fn decode_envelope(frame: &Bytes) -> Result<Envelope, Error> {
    let malformed = |detail: String| Error::Malformed { detail };
    let mut rd: &[u8] = frame;
    let fields =
        read_array_len(&mut rd).ok_or_else(|| malformed("not an envelope: no array".into()))?;
    if fields != FIELDS {
        return Err(malformed(format!(
            "an envelope of {fields} fields, not {FIELDS}"
        )));
    }
    let kind: u8 = read_int(&mut rd, "kind")?;
    let id: u64 = read_int(&mut rd, "id")?;
    let from = match (
        read_int::<u8>(&mut rd, "from")?,
        read_int(&mut rd, "from")?,
        read_int(&mut rd, "from")?,
    ) {
        (0, _, _) => Peer::Master,
        (1, slot, generation) => Peer::Worker(WorkerId::new(slot, generation)),
        (tag, _, _) => return Err(malformed(format!("unknown sender kind {tag}"))),
    };
    let to = (
        read_int(&mut rd, "to")?,
        read_int(&mut rd, "to")?,
        read_int(&mut rd, "to")?,
    );
    let event = read_bin(frame, &mut rd, "event")?;
    let key = read_bin(frame, &mut rd, "key")?;
    let body = read_bin(frame, &mut rd, "body")?;
    if !rd.is_empty() {
        return Err(malformed(format!("{} bytes after the envelope", rd.len())));
    }
    let kind = Kind::from_u8(kind).ok_or_else(|| malformed(format!("unknown kind {kind}")))?;
    let to = Target::from_wire(to).ok_or_else(|| malformed(format!("bad target {to:?}")))?;
    if !event.is_ascii() && std::str::from_utf8(&event).is_err() {
        return Err(malformed("an event name that is not UTF-8".into()));
    }
    Ok(Envelope {
        kind,
        id,
        from,
        to,
        event,
        key,
        body,
    })
}

fn read_int<T: TryFrom<u64>>(rd: &mut &[u8], field: &str) -> Result<T, Error> {
    let malformed = |detail: String| Error::Malformed {
        detail: format!("envelope {field}: {detail}"),
    };
    let value = read_uint(rd).ok_or_else(|| malformed("not an unsigned integer".into()))?;
    T::try_from(value).map_err(|_| malformed(format!("{value} is out of range")))
}

/// Takes `N` bytes off the front of `rd`.
fn take<const N: usize>(rd: &mut &[u8]) -> Option<[u8; N]> {
    let (bytes, rest) = rd.split_first_chunk::<N>()?;
    *rd = rest;
    Some(*bytes)
}

/// A MessagePack array's length, in any of its encodings.
fn read_array_len(rd: &mut &[u8]) -> Option<u32> {
    let [marker] = take::<1>(rd)?;
    Some(match marker {
        0x90..=0x9f => (marker & 0x0f).into(),
        0xdc => u16::from_be_bytes(take(rd)?).into(),
        0xdd => u32::from_be_bytes(take(rd)?),
        _ => return None,
    })
}

/// A MessagePack unsigned integer of any width (the mirror of [`write_uint`]).
fn read_uint(rd: &mut &[u8]) -> Option<u64> {
    let [marker] = take::<1>(rd)?;
    Some(match marker {
        0x00..=0x7f => marker.into(),
        0xcc => u8::from_be_bytes(take(rd)?).into(),
        0xcd => u16::from_be_bytes(take(rd)?).into(),
        0xce => u32::from_be_bytes(take(rd)?).into(),
        0xcf => u64::from_be_bytes(take(rd)?),
        _ => return None,
    })
}

/// Reads a binary string as a zero-copy slice of `frame`.
fn read_bin(frame: &Bytes, rd: &mut &[u8], field: &str) -> Result<Bytes, Error> {
    let malformed = |detail: &str| Error::Malformed {
        detail: format!("envelope {field}: {detail}"),
    };
    let [marker] = take::<1>(rd).ok_or_else(|| malformed("missing"))?;
    let len = match marker {
        0xc4 => take::<1>(rd).map(|b| u8::from_be_bytes(b) as usize),
        0xc5 => take::<2>(rd).map(|b| u16::from_be_bytes(b) as usize),
        0xc6 => take::<4>(rd).map(|b| u32::from_be_bytes(b) as usize),
        _ => return Err(malformed("not a binary string")),
    };
    let len = len.ok_or_else(|| malformed("cut short"))?;
    if rd.len() < len {
        return Err(malformed("cut short"));
    }
    let (bin, rest) = rd.split_at(len);
    *rd = rest;
    Ok(frame.slice_ref(bin))
}

/// Writes the envelope's MessagePack. By hand, straight into the buffer: this runs for every
/// frame, and going through `io::Write` per field cost twice as many instructions.
fn write_envelope(env: &Envelope, dst: &mut BytesMut) {
    let (from_kind, from_slot, from_generation) = match env.from {
        Peer::Master => (0, 0, 0),
        Peer::Worker(id) => (1, id.slot.into(), id.generation),
    };
    let (to_kind, to_a, to_b) = env.to.to_wire();
    dst.put_u8(0x90 | FIELDS as u8); // fixarray
    for value in [
        env.kind as u64,
        env.id,
        from_kind,
        from_slot,
        from_generation,
        to_kind.into(),
        to_a,
        to_b,
    ] {
        write_uint(dst, value);
    }
    for bin in [&env.event, &env.key, &env.body] {
        write_bin(dst, bin);
    }
}

/// A MessagePack unsigned integer in its shortest form.
fn write_uint(dst: &mut BytesMut, value: u64) {
    match value {
        0..=0x7f => dst.put_u8(value as u8),
        0x80..=0xff => {
            dst.put_u8(0xcc);
            dst.put_u8(value as u8);
        }
        0x100..=0xffff => {
            dst.put_u8(0xcd);
            dst.put_u16(value as u16);
        }
        0x1_0000..=0xffff_ffff => {
            dst.put_u8(0xce);
            dst.put_u32(value as u32);
        }
        _ => {
            dst.put_u8(0xcf);
            dst.put_u64(value);
        }
    }
}

/// A MessagePack array's length, in its shortest form.
fn write_array_len(dst: &mut BytesMut, len: usize) {
    match len {
        0..=15 => dst.put_u8(0x90 | len as u8),
        16..=0xffff => {
            dst.put_u8(0xdc);
            dst.put_u16(len as u16);
        }
        _ => {
            dst.put_u8(0xdd);
            dst.put_u32(len as u32);
        }
    }
}

/// A MessagePack binary string.
fn write_bin(dst: &mut BytesMut, bin: &[u8]) {
    match bin.len() {
        len @ 0..=0xff => {
            dst.put_u8(0xc4);
            dst.put_u8(len as u8);
        }
        len @ 0x100..=0xffff => {
            dst.put_u8(0xc5);
            dst.put_u16(len as u16);
        }
        len => {
            dst.put_u8(0xc6);
            dst.put_u32(len as u32);
        }
    }
    dst.put_slice(bin);
}

impl Encoder<&Envelope> for FrameCodec {
    type Error = Error;

    fn encode(&mut self, env: &Envelope, dst: &mut BytesMut) -> Result<(), Error> {
        let start = dst.len();
        dst.reserve(PREFIX + ENVELOPE_OVERHEAD + env.payload_len());
        dst.put_u32(0);
        write_envelope(env, dst);
        let len = dst.len() - start - PREFIX;
        if len > self.max_frame {
            dst.truncate(start);
            return Err(Error::FrameTooLarge {
                size: len,
                max: self.max_frame,
            });
        }
        dst[start..start + PREFIX].copy_from_slice(&(len as u32).to_be_bytes());
        Ok(())
    }
}

impl Encoder<Envelope> for FrameCodec {
    type Error = Error;

    fn encode(&mut self, env: Envelope, dst: &mut BytesMut) -> Result<(), Error> {
        self.encode(&env, dst)
    }
}

/// The body of a `Fanout` frame: who answers a `map`, in slot order.
///
/// The Hub sends one only when the caller's `epoch` (in [`Target::All`]) is not the Ready set's
/// current one: the caller keeps the last list it was told, so while the Ready set stands a
/// `map` costs no frame beyond its requests and answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fanout {
    /// The Ready workers asked, in slot order: one answer comes from each.
    pub workers: Vec<WorkerId>,
    /// The caller is one of them and runs its own share itself (no answer comes for it).
    pub run_here: bool,
    /// Which Ready set `workers` is (it changes whenever the set does); 0 when the list is not
    /// the Ready set (a `consume` the Hub gives back to its caller).
    pub epoch: u64,
}

impl Fanout {
    /// The MessagePack of this body (the same bytes as `rmp_serde::to_vec`), written by hand:
    /// one goes with every `consume` the Hub gives back to its caller.
    pub fn to_bytes(&self) -> Bytes {
        let mut dst = BytesMut::with_capacity(13 + self.workers.len() * 12);
        dst.put_u8(0x93);
        write_array_len(&mut dst, self.workers.len());
        for id in &self.workers {
            dst.put_u8(0x92);
            write_uint(&mut dst, id.slot.into());
            write_uint(&mut dst, id.generation);
        }
        dst.put_u8(if self.run_here { 0xc3 } else { 0xc2 });
        write_uint(&mut dst, self.epoch);
        dst.freeze()
    }

    /// This list of the Ready set as a frame from the Hub: the answer to `map` call `id` (or 0,
    /// unasked). It is addressed to all, as a `map` is, so a reader tells it from a `consume`
    /// given back to its caller (addressed to nobody) without decoding it.
    pub fn frame(&self, id: u64, event: Bytes) -> Envelope {
        Envelope {
            to: Target::All {
                epoch: self.epoch,
                run_here: self.run_here,
            },
            ..Envelope::answer(Kind::Fanout, id, Peer::Master, event, self.to_bytes())
        }
    }

    /// Reads a body written by [`to_bytes`](Fanout::to_bytes) (or `rmp_serde`).
    pub fn from_bytes(body: &[u8]) -> Result<Fanout, Error> {
        let malformed = || Error::Malformed {
            detail: "a fan-out list that does not decode".into(),
        };
        let mut rd = body;
        if read_array_len(&mut rd) != Some(3) {
            return Err(malformed());
        }
        let n = read_array_len(&mut rd).ok_or_else(malformed)? as usize;
        // Every entry takes 3 bytes at least: never trust a length beyond what is there.
        let mut workers = Vec::with_capacity(n.min(rd.len() / 3));
        for _ in 0..n {
            if read_array_len(&mut rd) != Some(2) {
                return Err(malformed());
            }
            let slot = read_uint(&mut rd).and_then(|v| u32::try_from(v).ok());
            let generation = read_uint(&mut rd);
            let (Some(slot), Some(generation)) = (slot, generation) else {
                return Err(malformed());
            };
            workers.push(WorkerId::new(slot, generation));
        }
        let run_here = match take::<1>(&mut rd) {
            Some([0xc3]) => true,
            Some([0xc2]) => false,
            _ => return Err(malformed()),
        };
        let epoch = read_uint(&mut rd).ok_or_else(malformed)?;
        if !rd.is_empty() {
            return Err(malformed());
        }
        Ok(Fanout {
            workers,
            run_here,
            epoch,
        })
    }
}

/// The body of a `Hello` frame: the protocol version and, from the Hub, who the connection is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The sender's [`PROTOCOL_VERSION`].
    pub version: u32,
    /// From the Hub: the peer this connection is. From a worker: `None`.
    pub peer: Option<Peer>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-written fan-out list is exactly what `rmp_serde` writes, and reads back.
    #[test]
    fn fanout_bytes_match_rmp_serde() {
        let lists = [
            vec![],
            vec![WorkerId::new(0, 1)],
            vec![WorkerId::new(3, 200), WorkerId::new(70_000, u64::MAX)],
            (0..20).map(|slot| WorkerId::new(slot, 1 << slot)).collect(),
        ];
        for workers in lists {
            for (run_here, epoch) in [(false, 0), (true, 1), (false, 300), (true, u64::MAX)] {
                let fanout = Fanout {
                    workers: workers.clone(),
                    run_here,
                    epoch,
                };
                let bytes = fanout.to_bytes();
                assert_eq!(&bytes[..], &rmp_serde::to_vec(&fanout).unwrap()[..]);
                assert_eq!(Fanout::from_bytes(&bytes).unwrap(), fanout);
            }
        }
        for bad in [
            &[][..],
            &[0x93, 0x91][..],
            &[0x93, 0x90, 0xc0, 1][..],
            &[0x93, 0x90, 0xc3][..],
            &[0x93, 0x90, 0xc3, 1, 0][..],
            &[0x92, 0x90, 0xc3][..],
        ] {
            assert!(matches!(
                Fanout::from_bytes(bad),
                Err(Error::Malformed { .. })
            ));
        }
        // A length that claims more entries than there are bytes fails, without allocating it.
        assert!(Fanout::from_bytes(&[0x93, 0xdd, 0xff, 0xff, 0xff, 0xff]).is_err());
    }

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
}
