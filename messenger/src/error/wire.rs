//! The form an [`Error`] travels in: a MessagePack map with a `kind`, a `message` and the
//! variant's fields by name (see the parent module's docs), cut to fit a frame if need be.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::Error;
use crate::{Peer, WorkerId};

/// An error as it travels: every field optional, unknown ones ignored.
#[derive(Serialize, Deserialize, Default)]
#[serde(default)]
struct Wire<'a> {
    kind: Cow<'a, str>,
    message: Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<Cow<'a, str>>,
    /// `[0]` for the master, `[1, slot, generation]` for a worker.
    #[serde(skip_serializing_if = "Option::is_none")]
    peer: Option<Vec<u64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    slot: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    after_ns: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ours: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    theirs: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<Cow<'a, str>>,
}

fn peer_to_wire(peer: Peer) -> Vec<u64> {
    match peer {
        Peer::Master => vec![0],
        Peer::Worker(id) => vec![1, id.slot.into(), id.generation],
        Peer::Remote { host, worker: None } => vec![2, host.0],
        Peer::Remote {
            host,
            worker: Some(id),
        } => vec![3, id.slot.into(), id.generation, host.0],
    }
}

fn peer_from_wire(peer: &[u64]) -> Option<Peer> {
    match *peer {
        [0, ..] => Some(Peer::Master),
        [1, slot, generation, ..] => Some(Peer::Worker(WorkerId::new(
            u32::try_from(slot).ok()?,
            generation,
        ))),
        [2, host, ..] => Some(Peer::Remote {
            host: crate::HostId(host),
            worker: None,
        }),
        [3, slot, generation, host, ..] => Some(Peer::Remote {
            host: crate::HostId(host),
            worker: Some(WorkerId::new(u32::try_from(slot).ok()?, generation)),
        }),
        _ => None,
    }
}

fn encode(wire: &Wire) -> Bytes {
    // Strings and integers always encode; were it ever to fail, the kind alone still does.
    rmp_serde::to_vec_named(wire)
        .map(Bytes::from)
        .unwrap_or_else(|_| Bytes::from_static(b"\x81\xa4kind\xa6remote"))
}

/// Cuts `text` to at most `cap` bytes, at a character boundary, marking the cut with `…`.
fn cut(text: &mut Cow<str>, cap: usize) {
    if text.len() <= cap {
        return;
    }
    let mut end = cap.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut short = text[..end].to_owned();
    if cap >= '…'.len_utf8() {
        short.push('…');
    }
    *text = Cow::Owned(short);
}

impl Error {
    /// Every [`code`](Error::code), each once.
    pub const CODES: [&'static str; 17] = [
        "no_handler",
        "no_worker",
        "timeout",
        "worker_gone",
        "busy",
        "decode",
        "encode",
        "frame_too_large",
        "protocol_mismatch",
        "handler_panicked",
        "forbidden",
        "invalid",
        "malformed",
        "closed",
        "host_unreachable",
        "io",
        "remote",
    ];

    /// The stable name of this error's kind: what it is called on the wire (so that a peer of
    /// another version reads it) and in metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Error::NoHandler { .. } => "no_handler",
            Error::NoWorker { .. } => "no_worker",
            Error::Timeout { .. } => "timeout",
            Error::WorkerGone { .. } => "worker_gone",
            Error::Busy { .. } => "busy",
            Error::Decode { .. } => "decode",
            Error::Encode { .. } => "encode",
            Error::FrameTooLarge { .. } => "frame_too_large",
            Error::ProtocolMismatch { .. } => "protocol_mismatch",
            Error::HandlerPanicked { .. } => "handler_panicked",
            Error::Forbidden { .. } => "forbidden",
            Error::Config { .. } => "invalid",
            Error::Malformed { .. } => "malformed",
            Error::Closed => "closed",
            Error::HostUnreachable { .. } => "host_unreachable",
            Error::Io(_) => "io",
            Error::Remote { .. } => "remote",
        }
    }

    /// This error's wire form (see the module docs).
    pub(crate) fn to_wire(&self) -> Bytes {
        encode(&self.wire())
    }

    /// This error's wire form in at most `max` bytes: its texts (message, detail, event name)
    /// are cut short as needed, at a character boundary; at the least, its kind alone.
    pub(crate) fn to_wire_within(&self, max: usize) -> Bytes {
        let body = self.to_wire();
        if body.len() <= max {
            return body;
        }
        let mut wire = self.wire();
        let mut cap = max / 4;
        loop {
            for text in [&mut wire.event, &mut wire.detail].into_iter().flatten() {
                cut(text, cap);
            }
            cut(&mut wire.message, cap);
            let body = encode(&wire);
            if body.len() <= max {
                return body;
            }
            if cap == 0 {
                // The kind alone (a `Remote` error passes on a kind of any length: cut it too).
                let mut kind = Wire {
                    kind: wire.kind,
                    ..Wire::default()
                };
                loop {
                    let body = encode(&kind);
                    if body.len() <= max {
                        return body;
                    }
                    if kind.kind.is_empty() {
                        return Bytes::new();
                    }
                    let half = kind.kind.len() / 2;
                    cut(&mut kind.kind, half);
                }
            }
            cap /= 2;
        }
    }

    fn wire(&self) -> Wire<'_> {
        let message = self.to_string();
        let mut wire = Wire {
            kind: Cow::Borrowed(match self {
                // Passed on as it came, so the kind stays the one its author named.
                Error::Remote { kind, .. } => kind,
                other => other.code(),
            }),
            message: Cow::Owned(message),
            ..Wire::default()
        };
        let text = |s: &str| Some(Cow::Owned(s.to_owned()));
        match self {
            Error::NoHandler { event, peer } => {
                wire.event = text(event);
                wire.peer = peer.map(peer_to_wire);
            }
            Error::NoWorker { slot } => wire.slot = Some(*slot),
            Error::Timeout { event, after, peer } => {
                wire.event = text(event);
                wire.after_ns = Some(u64::try_from(after.as_nanos()).unwrap_or(u64::MAX));
                wire.peer = peer.map(peer_to_wire);
            }
            Error::WorkerGone { event, peer } | Error::Busy { event, peer } => {
                wire.event = text(event);
                wire.peer = Some(peer_to_wire(*peer));
            }
            Error::Decode { event, detail } | Error::Encode { event, detail } => {
                wire.event = text(event);
                wire.detail = text(detail);
            }
            Error::FrameTooLarge { size, max } => {
                wire.size = Some(*size as u64);
                wire.max = Some(*max as u64);
            }
            Error::ProtocolMismatch { ours, theirs } => {
                wire.ours = Some(*ours);
                wire.theirs = Some(*theirs);
            }
            Error::HandlerPanicked { event, message } => {
                wire.event = text(event);
                wire.detail = text(message);
            }
            Error::Forbidden { reason } | Error::Config { reason } => wire.detail = text(reason),
            Error::Malformed { detail } => wire.detail = text(detail),
            Error::HostUnreachable { host, detail } => {
                wire.event = text(host);
                wire.detail = text(detail);
            }
            Error::Io(err) => wire.detail = Some(Cow::Owned(err.to_string())),
            Error::Closed | Error::Remote { .. } => {}
        }
        wire
    }

    /// Reads an error's wire form. A body that is not one becomes [`Error::Malformed`].
    pub(crate) fn from_wire(body: &[u8]) -> Error {
        let wire: Wire = match rmp_serde::from_slice(body) {
            Ok(wire) => wire,
            Err(e) => {
                return Error::Malformed {
                    detail: format!("a failure that did not decode: {e}"),
                }
            }
        };
        let event = || wire.event.as_deref().unwrap_or_default().to_owned();
        let detail = || wire.detail.as_deref().unwrap_or_default().to_owned();
        let peer = wire.peer.as_deref().and_then(peer_from_wire);
        let size = |n: Option<u64>| n.map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX));
        let remote = || Error::Remote {
            kind: wire.kind.clone().into_owned(),
            message: wire.message.clone().into_owned(),
        };
        match &*wire.kind {
            "no_handler" => Error::NoHandler {
                event: event(),
                peer,
            },
            "no_worker" => match wire.slot {
                Some(slot) => Error::NoWorker { slot },
                None => remote(),
            },
            "timeout" => Error::Timeout {
                event: event(),
                after: Duration::from_nanos(wire.after_ns.unwrap_or(0)),
                peer,
            },
            "worker_gone" | "busy" => match peer {
                Some(peer) if wire.kind == "busy" => Error::Busy {
                    event: event(),
                    peer,
                },
                Some(peer) => Error::WorkerGone {
                    event: event(),
                    peer,
                },
                None => remote(),
            },
            "decode" => Error::Decode {
                event: event(),
                detail: detail(),
            },
            "encode" => Error::Encode {
                event: event(),
                detail: detail(),
            },
            "frame_too_large" => Error::FrameTooLarge {
                size: size(wire.size),
                max: size(wire.max),
            },
            "protocol_mismatch" => Error::ProtocolMismatch {
                ours: wire.ours.unwrap_or(0),
                theirs: wire.theirs.unwrap_or(0),
            },
            "handler_panicked" => Error::HandlerPanicked {
                event: event(),
                message: detail(),
            },
            "forbidden" => Error::Forbidden { reason: detail() },
            "invalid" => Error::Config { reason: detail() },
            "malformed" => Error::Malformed { detail: detail() },
            "closed" => Error::Closed,
            "host_unreachable" => Error::HostUnreachable {
                host: event(),
                detail: detail(),
            },
            "io" => Error::Io(Arc::new(std::io::Error::other(detail()))),
            _ => remote(),
        }
    }
}
