//! [`FrameCodec`]: envelopes in and out of 4-byte length-prefixed frames.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::msgpack::{read_array_len, read_bin, read_uint, write_bin, write_uint};
use super::{
    Envelope, Kind, Target, DEFAULT_MAX_FRAME, ENVELOPE_OVERHEAD, MAX_NAME, PREFIX, READ_CHUNK,
};
use crate::{Error, HostId, Peer, WorkerId};

/// How many fields the envelope array has: one more, the host, when an end is on another host.
const FIELDS: u32 = 11;

/// The codec of the messenger's connections: [`Envelope`]s in 4-byte length-prefixed frames.
///
/// Both directions refuse a frame over the maximum size with [`Error::FrameTooLarge`]. The
/// encoder leaves the buffer as it was, so the connection stays usable (the messengers check
/// sizes before they queue a frame, so this only guards against misuse). The decoder cannot
/// skip what it cannot trust: a peer that sends an oversize or malformed frame gets its
/// connection closed.
///
/// Decoded frames are slices of the read buffer, which the decoder keeps small: a reader
/// starts with [`READ_CHUNK`] bytes, and a frame larger than that is read into a buffer of
/// exactly its size, after which reading goes on in a fresh small one. So a frame kept (in a
/// queue, say) keeps at most [`READ_CHUNK`] bytes alive, or its own size if larger. With a
/// limit on the read chunks its frames may keep alive ([`Builder::keep_chunks`]), the decoder
/// copies frames out instead while that many are kept: what a peer's frames pin of their read
/// buffers is then bounded whatever becomes of them.
#[derive(Debug, Clone)]
pub struct FrameCodec {
    max_frame: usize,
    kept: Option<Kept>,
}

/// The read chunks that decoded frames keep alive: a handle on each (its first frame), and the
/// chunk being read (by where its allocation ends).
#[derive(Debug, Clone)]
struct Kept {
    limit: usize,
    chunks: Vec<Bytes>,
    current: usize,
    /// The current chunk has a handle (a frame was sliced from it).
    counted: bool,
}

impl Kept {
    /// Whether a frame of the chunk ending at `end` may be sliced from it (or must be copied).
    fn may_slice(&mut self, end: usize) -> bool {
        if end != self.current {
            // A new chunk: forget the chunks no frame keeps any more.
            self.current = end;
            self.counted = false;
            self.chunks.retain(|chunk| !chunk.is_unique());
        }
        self.counted || self.chunks.len() < self.limit
    }

    fn sliced(&mut self, frame: &Bytes) {
        if !self.counted {
            self.counted = true;
            self.chunks.push(frame.clone());
        }
    }
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
    keep_chunks: Option<usize>,
}

impl Builder {
    /// The largest frame, length prefix excluded, the codec encodes or decodes.
    pub fn max_frame(mut self, bytes: usize) -> Self {
        self.max_frame = bytes;
        self
    }

    /// At most `chunks` read buffers (of [`READ_CHUNK`] bytes) are kept alive by decoded
    /// frames; past that, frames are copied out of their read buffer (default: no limit). The
    /// Hub sets one, so that what a peer sends costs it a bounded amount of memory however long
    /// the frames are kept.
    pub fn keep_chunks(mut self, chunks: usize) -> Self {
        self.keep_chunks = Some(chunks);
        self
    }

    /// The codec.
    pub fn new_codec(&self) -> FrameCodec {
        FrameCodec {
            max_frame: self.max_frame,
            kept: self.keep_chunks.map(|limit| Kept {
                limit,
                chunks: Vec::new(),
                current: 0,
                counted: false,
            }),
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
            keep_chunks: None,
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
        let whole = PREFIX + len;
        if src.len() < whole {
            if whole > READ_CHUNK && src.capacity() < whole {
                // A large frame gets a buffer of its own, exactly its size: reading fills it
                // and no more, so the frame keeps nothing else alive.
                let mut own = BytesMut::with_capacity(whole);
                own.extend_from_slice(src);
                *src = own;
            } else {
                src.reserve(whole - src.len());
            }
            return Ok(None);
        }
        // Where the read chunk's allocation ends: frames split off its front do not move it.
        let end = src.as_ptr() as usize + src.capacity();
        // A large frame has a buffer of its own: it keeps only itself alive.
        let mut kept = self.kept.as_mut().filter(|_| whole <= READ_CHUNK);
        let frame = if kept.as_mut().is_some_and(|kept| !kept.may_slice(end)) {
            let frame = Bytes::copy_from_slice(&src[PREFIX..whole]);
            src.advance(whole);
            frame
        } else {
            src.advance(PREFIX);
            let frame = src.split_to(len).freeze();
            if let Some(kept) = kept {
                kept.sliced(&frame);
            }
            frame
        };
        if whole > READ_CHUNK || src.capacity() > 2 * READ_CHUNK {
            // What follows a large frame is read into a fresh small buffer (a buffer grown
            // once would grow to its old size again).
            let mut fresh = BytesMut::with_capacity(READ_CHUNK.max(src.len()));
            fresh.extend_from_slice(src);
            *src = fresh;
        }
        decode_envelope(&frame).map(Some)
    }
}

fn malformed(detail: String) -> Error {
    Error::Malformed { detail }
}

/// The next binary field of an envelope read from `rd`, as a slice of `frame` (which `rd`
/// reads): every frame decoded goes through here, so it is kept inline.
#[inline(always)]
fn bin(frame: &Bytes, rd: &mut &[u8], field: &str) -> Result<Bytes, Error> {
    let bin = read_bin(rd).map_err(|detail| malformed(format!("envelope {field}: {detail}")))?;
    // `bin` lies within `frame`: its offset there, without `slice_ref`'s checks.
    let start = bin.as_ptr() as usize - frame.as_ptr() as usize;
    Ok(frame.slice(start..start + bin.len()))
}

/// Reads an envelope; `event`, `key` and `body` are slices of `frame`.
pub(crate) fn decode_envelope(frame: &Bytes) -> Result<Envelope, Error> {
    let mut rd: &[u8] = frame;
    let fields =
        read_array_len(&mut rd).ok_or_else(|| malformed("not an envelope: no array".into()))?;
    if fields != FIELDS && fields != FIELDS + 1 {
        return Err(malformed(format!(
            "an envelope of {fields} fields, not {FIELDS} or {}",
            FIELDS + 1
        )));
    }
    let kind: u8 = read_int(&mut rd, "kind")?;
    let id: u64 = read_int(&mut rd, "id")?;
    let from: (u8, u32, u64) = (
        read_int(&mut rd, "from")?,
        read_int(&mut rd, "from")?,
        read_int(&mut rd, "from")?,
    );
    let to = (
        read_int(&mut rd, "to")?,
        read_int(&mut rd, "to")?,
        read_int(&mut rd, "to")?,
    );
    let event = bin(frame, &mut rd, "event")?;
    let key = bin(frame, &mut rd, "key")?;
    let body = bin(frame, &mut rd, "body")?;
    let (from, to) = if fields == FIELDS {
        let from = match from {
            (0, _, _) => Peer::Master,
            (1, slot, generation) => Peer::Worker(WorkerId::new(slot, generation)),
            (tag, _, _) => return Err(malformed(format!("unknown sender kind {tag}"))),
        };
        let to = Target::from_wire(to, None);
        (
            from,
            to.ok_or_else(|| malformed(format!("bad target {to:?}")))?,
        )
    } else {
        let host = HostId(read_int(&mut rd, "host")?);
        remote_ends_in(from, to, host)?
    };
    if !rd.is_empty() {
        return Err(malformed(format!("{} bytes after the envelope", rd.len())));
    }
    let kind = Kind::from_u8(kind).ok_or_else(|| malformed(format!("unknown kind {kind}")))?;
    for (field, name) in [("event", &event), ("key", &key)] {
        if name.len() > MAX_NAME {
            return Err(malformed(format!(
                "{field} of {} bytes, over the {MAX_NAME} allowed",
                name.len()
            )));
        }
    }
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

/// The two ends of a frame with a host field: one of them, at least, on that host.
#[cold]
fn remote_ends_in(
    from: (u8, u32, u64),
    to: (u8, u64, u64),
    host: HostId,
) -> Result<(Peer, Target), Error> {
    let from = match from {
        (0, _, _) => Peer::Master,
        (1, slot, generation) => Peer::Worker(WorkerId::new(slot, generation)),
        (2, _, _) => Peer::Remote { host, worker: None },
        (3, slot, generation) => Peer::Remote {
            host,
            worker: Some(WorkerId::new(slot, generation)),
        },
        (tag, _, _) => return Err(malformed(format!("unknown sender kind {tag}"))),
    };
    let to = Target::from_wire(to, Some(host));
    let to = to.ok_or_else(|| malformed(format!("bad target {to:?}")))?;
    if from.host().is_none() && to.host().is_none() {
        return Err(malformed("a host, and no end on another host".into()));
    }
    Ok((from, to))
}

fn read_int<T: TryFrom<u64>>(rd: &mut &[u8], field: &str) -> Result<T, Error> {
    let value = read_uint(rd)
        .ok_or_else(|| malformed(format!("envelope {field}: not an unsigned integer")))?;
    T::try_from(value).map_err(|_| malformed(format!("envelope {field}: {value} is out of range")))
}

/// Writes the envelope's MessagePack straight into the buffer, with `host` as its 12th field
/// if given.
fn write_envelope(env: &Envelope, ends: Ends, host: Option<HostId>, dst: &mut BytesMut) {
    let ((from_kind, from_slot, from_generation), (to_kind, to_a, to_b)) = ends;
    let fields = FIELDS + u32::from(host.is_some());
    dst.put_u8(0x90 | fields as u8); // fixarray
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
    if let Some(host) = host {
        write_uint(dst, host.0);
    }
}

/// A frame's two ends as written: `(kind, slot, generation)` of the sender, the target's.
type Ends = ((u64, u64, u64), (u8, u64, u64));

/// The ends of a frame between two peers of this host.
#[inline(always)]
fn local_ends(env: &Envelope) -> Ends {
    let from = match env.from {
        Peer::Worker(id) => (1, id.slot.into(), id.generation),
        _ => (0, 0, 0),
    };
    (from, env.to.to_wire())
}

/// The ends and the host field of a frame with an end on another host. `Err` if its two ends
/// are on two other hosts (one host field: the Hub never routes such a frame).
#[cold]
fn remote_ends_out(env: &Envelope) -> Result<(Ends, HostId), Error> {
    let from = match env.from {
        Peer::Master => (0, 0, 0),
        Peer::Worker(id) => (1, id.slot.into(), id.generation),
        Peer::Remote { worker: None, .. } => (2, 0, 0),
        Peer::Remote {
            worker: Some(id), ..
        } => (3, id.slot.into(), id.generation),
    };
    let host = match (env.from.host(), env.to.host()) {
        (Some(a), Some(b)) if a != b => {
            return Err(malformed(format!(
                "a frame between two other hosts ({a} and {b})"
            )))
        }
        (a, b) => a.or(b).ok_or_else(|| malformed("no host".into()))?,
    };
    Ok(((from, env.to.to_wire()), host))
}

impl Encoder<&Envelope> for FrameCodec {
    type Error = Error;

    fn encode(&mut self, env: &Envelope, dst: &mut BytesMut) -> Result<(), Error> {
        let (ends, host) =
            if matches!(env.from, Peer::Remote { .. }) || matches!(env.to, Target::Remote { .. }) {
                let (ends, host) = remote_ends_out(env)?;
                (ends, Some(host))
            } else {
                (local_ends(env), None)
            };
        let start = dst.len();
        dst.reserve(PREFIX + ENVELOPE_OVERHEAD + env.payload_len());
        dst.put_u32(0);
        write_envelope(env, ends, host, dst);
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

#[cfg(test)]
mod tests;
