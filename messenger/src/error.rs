//! The one error type of the messenger, and the form it travels in between processes.
//!
//! An error crosses the wire as a MessagePack map with a `kind` string, a `message` (the
//! sentence [`Display`](std::fmt::Display) writes) and the variant's fields by name, each
//! optional:
//!
//! ```text
//! { "kind": "timeout", "message": "`pid` got no reply within 2s", "event": "pid", "after_ns": 2000000000 }
//! ```
//!
//! A reader ignores fields it does not know and fills those it misses, and turns a kind it does
//! not know into [`Error::Remote`] with the message: processes built from different versions
//! of the code keep understanding each other's failures during a rolling reload.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::{Peer, WorkerId};

/// Everything a messenger call can fail with. Match on the variant; the message is for people.
///
/// Errors that happen in another process (no handler there, a reply too large, a panic in the
/// handler, ...) travel back to the caller as the same variants.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No Ready worker (or, for requests to the master, not the master) handles this event.
    #[error("no handler for `{event}`{}", at(.peer))]
    NoHandler {
        /// The event's wire name.
        event: String,
        /// The peer that was asked, when one was: a `request(slot, ..)` or a `map` entry.
        peer: Option<Peer>,
    },
    /// `request(slot, ..)` named a slot that has no Ready worker.
    #[error("no Ready worker in slot {slot}")]
    NoWorker {
        /// The slot asked for.
        slot: u32,
    },
    /// No reply came before the call's deadline.
    #[error("`{event}` got no reply within {after:?}{}", at(.peer))]
    Timeout {
        /// The event's wire name.
        event: String,
        /// How long the call waited.
        after: Duration,
        /// The worker that did not answer, when known (a `map` entry).
        peer: Option<Peer>,
    },
    /// The peer running the handler disconnected (crashed, was killed, or was stopped) before it
    /// answered.
    #[error("{peer} went away before answering `{event}`")]
    WorkerGone {
        /// The event's wire name.
        event: String,
        /// The peer that went away.
        peer: Peer,
    },
    /// A limit on the way is reached: the peer's queue is full, it runs as many handlers as it
    /// may, or the caller has as many calls in flight as it may. Nothing ran; the call may be
    /// tried again.
    #[error("{peer} is too busy to take `{event}`")]
    Busy {
        /// The event's wire name.
        event: String,
        /// The peer whose limit it is.
        peer: Peer,
    },
    /// A payload (an event or a reply) did not decode into the expected type. Only this call
    /// fails.
    #[error("`{event}` did not decode: {detail}")]
    Decode {
        /// The event's wire name.
        event: String,
        /// What MessagePack decoding said.
        detail: String,
    },
    /// A value did not encode to MessagePack.
    #[error("`{event}` did not encode: {detail}")]
    Encode {
        /// The event's wire name.
        event: String,
        /// What MessagePack encoding said.
        detail: String,
    },
    /// A frame would be over the maximum frame size (see [`Config::max_frame`](crate::Config)).
    /// Nothing was sent.
    #[error("a frame of {size} bytes is over the maximum of {max} bytes")]
    FrameTooLarge {
        /// The frame's size (at least), in bytes.
        size: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The two ends of a connection speak different protocol versions.
    #[error("protocol mismatch: this side speaks version {ours}, the other side version {theirs}")]
    ProtocolMismatch {
        /// The version this side speaks.
        ours: u32,
        /// The version the other side announced.
        theirs: u32,
    },
    /// The handler panicked. The call fails; whether the process goes on is the process's
    /// choice (a cluster worker reports itself unhealthy by default, and is replaced).
    #[error("the handler of `{event}` panicked: {message}")]
    HandlerPanicked {
        /// The event's wire name.
        event: String,
        /// The panic's message.
        message: String,
    },
    /// The call is not allowed from this peer (e.g. a worker addressing a worker by id, or a
    /// worker that was replaced asking to be Ready again).
    #[error("not allowed: {reason}")]
    Forbidden {
        /// Why.
        reason: String,
    },
    /// A setting, or a name or key given to a call, is out of bounds.
    #[error("invalid: {reason}")]
    Config {
        /// Which setting or value, and why.
        reason: String,
    },
    /// Bytes on a connection that are not a frame of this protocol. The connection is closed.
    #[error("malformed frame: {detail}")]
    Malformed {
        /// What was wrong.
        detail: String,
    },
    /// The connection to the Hub is closed: nothing more can be sent or received.
    #[error("the messenger's connection is closed")]
    Closed,
    /// An I/O error on the connection.
    #[error("i/o error: {0}")]
    Io(Arc<std::io::Error>),
    /// An error of a kind this version does not know, from a peer running another version.
    #[error("{message}")]
    Remote {
        /// The kind the peer named.
        kind: String,
        /// The peer's description.
        message: String,
    },
}

fn at(peer: &Option<Peer>) -> String {
    match peer {
        Some(peer) => format!(" at {peer}"),
        None => String::new(),
    }
}

impl From<std::io::Error> for Error {
    fn from(err: std::io::Error) -> Self {
        Error::Io(Arc::new(err))
    }
}

/// The messenger's `Result`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

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
    }
}

fn peer_from_wire(peer: &[u64]) -> Option<Peer> {
    match *peer {
        [0, ..] => Some(Peer::Master),
        [1, slot, generation, ..] => Some(Peer::Worker(WorkerId::new(
            u32::try_from(slot).ok()?,
            generation,
        ))),
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
    /// The stable name of this error's kind on the wire.
    fn kind(&self) -> &'static str {
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
                other => other.kind(),
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
            "io" => Error::Io(Arc::new(std::io::Error::other(detail()))),
            _ => remote(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_kind() -> Vec<Error> {
        let worker = Peer::Worker(WorkerId::new(3, 9));
        vec![
            Error::NoHandler {
                event: "e".into(),
                peer: Some(worker),
            },
            Error::NoHandler {
                event: "e".into(),
                peer: None,
            },
            Error::NoWorker { slot: 7 },
            Error::Timeout {
                event: "e".into(),
                after: Duration::from_millis(1500),
                peer: Some(Peer::Master),
            },
            Error::WorkerGone {
                event: "e".into(),
                peer: worker,
            },
            Error::Busy {
                event: "e".into(),
                peer: worker,
            },
            Error::Decode {
                event: "e".into(),
                detail: "d".into(),
            },
            Error::Encode {
                event: "e".into(),
                detail: "d".into(),
            },
            Error::FrameTooLarge { size: 10, max: 5 },
            Error::ProtocolMismatch { ours: 3, theirs: 2 },
            Error::HandlerPanicked {
                event: "e".into(),
                message: "boom".into(),
            },
            Error::Forbidden { reason: "r".into() },
            Error::Config { reason: "r".into() },
            Error::Malformed { detail: "m".into() },
            Error::Closed,
            Error::Io(Arc::new(std::io::Error::other("pipe"))),
            Error::Remote {
                kind: "quota".into(),
                message: "over quota".into(),
            },
        ]
    }

    /// Every variant comes back as itself, with the same message.
    #[test]
    fn every_kind_round_trips() {
        for error in every_kind() {
            let back = Error::from_wire(&error.to_wire());
            assert_eq!(back.to_string(), error.to_string(), "{error:?}");
            assert_eq!(
                std::mem::discriminant(&back),
                std::mem::discriminant(&error),
                "{error:?} came back as {back:?}"
            );
        }
    }

    /// What a newer version may send: a kind this one does not know, and fields it does not
    /// know on a kind it does.
    #[test]
    fn a_newer_peers_errors_are_understood() {
        #[derive(Serialize)]
        struct Newer {
            kind: &'static str,
            message: &'static str,
            quota: u64,
            event: &'static str,
        }
        let body = rmp_serde::to_vec_named(&Newer {
            kind: "quota_exceeded",
            message: "slot 2 is over its quota",
            quota: 10,
            event: "e",
        })
        .unwrap();
        match Error::from_wire(&body) {
            Error::Remote { kind, message } => {
                assert_eq!(kind, "quota_exceeded");
                assert_eq!(message, "slot 2 is over its quota");
            }
            other => panic!("{other:?}"),
        }
        let body = rmp_serde::to_vec_named(&Newer {
            kind: "decode",
            message: "",
            quota: 10,
            event: "e",
        })
        .unwrap();
        assert!(matches!(Error::from_wire(&body), Error::Decode { event, .. } if event == "e"));
        // A remote error passes on under its own kind.
        let again = Error::from_wire(&Error::from_wire(&body).to_wire());
        assert!(matches!(again, Error::Decode { .. }));
    }

    /// An older or sloppier peer may leave fields out: the kind still decides.
    #[test]
    fn missing_fields_are_filled() {
        #[derive(Serialize)]
        struct Bare {
            kind: &'static str,
        }
        for kind in [
            "no_handler",
            "timeout",
            "closed",
            "forbidden",
            "frame_too_large",
        ] {
            let body = rmp_serde::to_vec_named(&Bare { kind }).unwrap();
            let error = Error::from_wire(&body);
            assert_eq!(error.kind(), kind, "{error:?}");
        }
        // Kinds whose required field is missing still say what happened.
        let body = rmp_serde::to_vec_named(&Bare { kind: "busy" }).unwrap();
        assert!(matches!(Error::from_wire(&body), Error::Remote { .. }));
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        for body in [&b""[..], b"\xc1", b"\x93\x01\x02\x03", b"\x81\xa4kind\x05"] {
            assert!(matches!(Error::from_wire(body), Error::Malformed { .. }));
        }
    }

    #[test]
    fn a_long_error_is_cut_to_fit_and_keeps_its_kind() {
        let error = Error::HandlerPanicked {
            event: "é".repeat(400),
            message: "boom ".repeat(10_000),
        };
        for max in [40, 100, 256, 1000] {
            let body = error.to_wire_within(max);
            assert!(body.len() <= max, "{} bytes for {max}", body.len());
            let back = Error::from_wire(&body);
            assert!(matches!(back, Error::HandlerPanicked { .. }), "{back:?}");
        }
        // A kind from another version, of any length, is cut too.
        let remote = Error::Remote {
            kind: "k".repeat(5000),
            message: "m".repeat(5000),
        };
        for max in [40, 100, 256] {
            let body = remote.to_wire_within(max);
            assert!(
                !body.is_empty() && body.len() <= max,
                "{} bytes for {max}",
                body.len()
            );
        }
        // Short enough already: as it is.
        let short = Error::NoWorker { slot: 1 };
        assert_eq!(short.to_wire_within(1000), short.to_wire());
    }
}
