//! What travels: the [`Event`] trait, its handlers, and the dispatch of enum events.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::Peer;

/// A boxed, sendable future: what handlers return once type-erased.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A typed message between the processes of a cluster.
///
/// Usually derived with [`#[derive(Event)]`](crate::Event): the wire name defaults to the type's
/// name and the reply to `()`.
///
/// ```
/// use messenger::Event;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, Event)]
/// #[event(name = "pid", reply = u32)]
/// struct Pid;
///
/// assert_eq!(<Pid as Event>::NAME, "pid");
/// ```
pub trait Event: Serialize + DeserializeOwned + Send + 'static {
    /// The stable name on the wire. Processes built from different versions of the code talk as
    /// long as the names (and the MessagePack shapes) agree.
    ///
    /// Names that begin with `multiprocess.` are the cluster's own (its heartbeats, drain
    /// orders, metrics collection, reports to the master): a worker may send one in a request
    /// to its master only, and a call or broadcast of one to workers fails with
    /// [`Error::Forbidden`](crate::Error::Forbidden), so that no worker can give another the
    /// master's orders. The master sends them to the workers of its own host only (another
    /// host's Hub refuses them, as from a worker).
    const NAME: &'static str;

    /// What a handler of this event answers; `map` returns a `Vec` of it.
    type Reply: Serialize + DeserializeOwned + Send + 'static;
}

/// An event whose handler is one object with a method per case: what `#[derive(Event)]` writes
/// for an enum (`enum Admin` gets `trait AdminHandler`, one async method per variant).
///
/// Register such an object with [`Messenger::handle`](crate::Messenger::handle).
pub trait Dispatch: Event {
    /// The handler trait object, e.g. `dyn AdminHandler`.
    type Handler: ?Sized + Send + Sync + 'static;

    /// Calls the handler's method for this value's case; `from` sent it (the methods get it
    /// when the enum says `#[event(sender)]`).
    fn dispatch(self, from: Peer, handler: Arc<Self::Handler>) -> BoxFuture<'static, Self::Reply>;
}

/// The prefix of the cluster's own event names (see [`Event::NAME`]).
pub(crate) const RESERVED: &str = "multiprocess.";

/// Whether `peer` may send a frame of `kind` for the event `name` to `to`: a name of the
/// cluster's own goes to workers from the master only. A worker's request to the master may
/// carry one; a broadcast never may (it reaches workers whatever its target says).
pub(crate) fn may_send(
    peer: crate::Peer,
    kind: crate::wire::Kind,
    name: &[u8],
    to: crate::wire::Target,
) -> bool {
    peer == crate::Peer::Master
        || (kind == crate::wire::Kind::Request && matches!(to, crate::wire::Target::Master))
        || !name.starts_with(RESERVED.as_bytes())
}

/// The refusal of an event that [`may_send`] does not allow.
pub(crate) fn reserved_error(name: &[u8]) -> crate::Error {
    crate::Error::Forbidden {
        reason: format!(
            "{} is one of the cluster's own events ({RESERVED}*): only the master sends them \
             to workers",
            String::from_utf8_lossy(name)
        ),
    }
}
