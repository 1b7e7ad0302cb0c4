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

use std::sync::Arc;
use std::time::Duration;

use crate::Peer;

/// Everything a messenger call can fail with. Match on the variant; the message is for people.
///
/// Errors that happen in another process (no handler there, a reply too large, a panic in the
/// handler, ...) travel back to the caller as the same variants.
///
/// An error names the event by its wire name ([`Event::NAME`](crate::Event::NAME)), which is
/// the Rust type's name unless `#[event(name = "...")]` chose another: that is the name every
/// process knows, whichever built the error (a worker of another version may not even have
/// the type). Keep the two equal, or search for the `name = "..."`, to find the type.
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
    /// A call across hosts (a cluster joined over NATS) could not reach the host it was routed
    /// to, or lost it before the answer came: the host is unknown or forgotten, the NATS
    /// connection is down or was lost with the call in flight, or the host did not answer.
    /// Whether the handler ran there is not known; it never runs twice.
    #[error("host {host} cannot be reached: {detail}")]
    HostUnreachable {
        /// The host's name (its id when the name is not known).
        host: String,
        /// What happened.
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

mod wire;

#[cfg(test)]
mod tests;
