//! The calls a Messenger makes: `ready`, `broadcast`, `consume`, `consume_once`, `request` and
//! `request_master` (and `map`, in `gather.rs`), each with its deadline, and the answers they
//! wait for.

use std::future::Future;

use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::pending::Waiter;
use super::run::Started;
use super::{Messenger, Shared};
use crate::payload::{decode_answer, encode};
use crate::stats::CallKind;
use crate::transport;
use crate::wire::{Envelope, Kind, Target};
use crate::{Error, Event, Peer, Result, WorkerId};

/// Runs `future` unless `deadline` passes first.
pub(super) async fn within<F: Future>(
    deadline: std::pin::Pin<&mut tokio::time::Sleep>,
    future: F,
) -> Option<F::Output> {
    tokio::select! {
        biased;
        out = future => Some(out),
        () = deadline => None,
    }
}

/// A pending call: forgets its waiter when dropped, and tells the Hub the caller gave up
/// unless the call finished (so a timed-out or abandoned call leaves nothing behind).
pub(super) struct Call<'a> {
    shared: &'a Shared,
    pub id: u64,
    done: bool,
}

impl Call<'_> {
    pub(super) fn finish(mut self) {
        self.done = true;
    }
}

impl Drop for Call<'_> {
    fn drop(&mut self) {
        self.shared.calls.end(self.id);
        if !self.done {
            let cancel = Envelope {
                id: self.id,
                ..Envelope::new(Kind::Cancel, "", Bytes::new())
            };
            self.shared.link.send_control(cancel);
        }
    }
}

impl Messenger {
    /// Asks the master to make this worker Ready: from then on it gets messages and counts for
    /// `map`. Returns once the master granted it, so handlers registered before are known by
    /// then; [`Error::Forbidden`] if it did not (a worker that was replaced or told to drain
    /// can never be Ready again).
    pub async fn ready(&self) -> Result<()> {
        if self.is_closed() {
            return Err(Error::Closed);
        }
        let env = Envelope::new(Kind::Ready, "ready", Bytes::new());
        let answer = self.ask("ready", env).await?;
        decode_answer::<()>("ready", &answer)
    }

    /// Sends `event` to every Ready worker, this one included when it is Ready; every handler of
    /// the event runs there. Returns once the Hub has taken it: frames from one sender keep
    /// their order. Workers that have no handler for it do not get it.
    ///
    /// A process has at most [`Config::queue_frames`](crate::Config::queue_frames) broadcasts
    /// ([`Config::queue_bytes`](crate::Config::queue_bytes) bytes) that some receiver has not
    /// yet taken: past that, this waits for room, so a flood goes at the pace of its slowest
    /// receiver (one that takes nothing is closed as stuck after
    /// [`Config::stall_timeout`](crate::Config::stall_timeout)).
    pub async fn broadcast<E: Event>(&self, event: E) -> Result<()> {
        let sent = async {
            let env = self.envelope::<E>(Kind::Broadcast, Target::Hub, Bytes::new(), &event)?;
            drop(event);
            // A broadcast with room does not wait, so a loop of them would never let the
            // runtime's other tasks run (on one thread: not even the writer that sends them)
            // until the window is full. Counted against the task's budget, as a channel's
            // receive is, a loop yields now and then, and its frames leave as it goes.
            tokio::task::consume_budget().await;
            self.shared.window.take(transport::cost(&env)).await?;
            self.shared.link.send(env).await
        }
        .await;
        // Counted, not timed: a broadcast is over once queued, and timing it would cost a
        // clock read on the messenger's fastest path.
        self.shared
            .stats
            .count(CallKind::Broadcast, sent.as_ref().err());
        sent
    }

    /// Runs `event` on exactly one Ready worker that handles it, spreading calls evenly, and
    /// returns its reply. [`Error::NoHandler`] if no Ready worker handles it.
    pub async fn consume<E: Event>(&self, event: E) -> Result<E::Reply> {
        self.call(Target::Any, Bytes::new(), event).await
    }

    /// Runs `event` on one worker once per `key` for the master's lifetime, however many workers
    /// ask: every caller, also one that asks while it runs, gets the same reply. A failed run is
    /// not remembered, so the next caller tries again. The Hub remembers
    /// [`Config::once_keys`](crate::Config::once_keys) keys and
    /// [`Config::once_bytes`](crate::Config::once_bytes) bytes of replies, forgetting the oldest
    /// first. A key is at most 1024 bytes.
    ///
    /// Like `consume`, it needs a Ready worker that handles `E` when it is called: one called
    /// before any worker is Ready (say, by a worker before its own `ready()`, or by the master
    /// while its workers start) fails with [`Error::NoHandler`] and runs nothing, so the run is
    /// not "taken". A start-up task is asked for after `ready()`; the worker that asks may be
    /// the one the Hub picks to run it.
    pub async fn consume_once<E: Event>(&self, key: &str, event: E) -> Result<E::Reply> {
        if key.len() > crate::wire::MAX_NAME {
            return Err(Error::Config {
                reason: format!(
                    "a consume_once key of {} bytes, over the {} allowed",
                    key.len(),
                    crate::wire::MAX_NAME
                ),
            });
        }
        self.call(Target::Once, Bytes::copy_from_slice(key.as_bytes()), event)
            .await
    }

    /// Runs `event` on the Ready worker of `slot` and returns its reply.
    pub async fn request<E: Event>(&self, slot: u32, event: E) -> Result<E::Reply> {
        self.call(Target::Slot(slot), Bytes::new(), event).await
    }

    /// Runs `event` on the Ready worker of `slot` on the host named `host`, in a cluster joined
    /// over NATS (this host's own name included), and returns its reply.
    /// [`Error::HostUnreachable`] if no host of that name is known or it cannot be reached.
    pub async fn request_at<E: Event>(&self, host: &str, slot: u32, event: E) -> Result<E::Reply> {
        if host.is_empty() || host.len() > crate::wire::MAX_NAME {
            return Err(Error::Config {
                reason: format!(
                    "a host name of {} bytes: 1 to {} allowed",
                    host.len(),
                    crate::wire::MAX_NAME
                ),
            });
        }
        let host = Bytes::copy_from_slice(host.as_bytes());
        self.call(Target::Slot(slot), host, event).await
    }

    /// Runs `event` on the master's handler and returns its reply.
    pub async fn request_master<E: Event>(&self, event: E) -> Result<E::Reply> {
        self.call(Target::Master, Bytes::new(), event).await
    }

    /// Runs `event` on the exact worker `id`, whatever its state. Only the master may.
    pub(crate) async fn request_worker<E: Event>(
        &self,
        id: WorkerId,
        event: E,
    ) -> Result<E::Reply> {
        self.call(Target::Worker(id), Bytes::new(), event).await
    }

    /// Counts a call of `kind` begun at `started` that ended in `result`, and times it if
    /// [`Config::time_calls`](crate::Config::time_calls) says so.
    pub(super) fn counted<T>(
        &self,
        kind: CallKind,
        started: Instant,
        result: Result<T>,
    ) -> Result<T> {
        let stats = &self.shared.stats;
        if self.shared.config.time_calls {
            stats.record(kind, started.elapsed(), result.as_ref().err());
        } else {
            stats.count(kind, result.as_ref().err());
        }
        result
    }

    /// A call of `event` to `to`. Encoded and queued before the future is first polled (and
    /// so not kept in it): a call's future stays small.
    fn call<E: Event>(
        &self,
        to: Target,
        key: Bytes,
        event: E,
    ) -> impl Future<Output = Result<E::Reply>> + Send + '_ {
        use futures_util::future::{ready, Either};
        let started = Instant::now();
        let kind = CallKind::of(to).unwrap_or(CallKind::Control);
        let env = match self.envelope::<E>(Kind::Request, to, key, &event) {
            Ok(env) => env,
            Err(err) => return Either::Left(ready(self.counted(kind, started, Err(err)))),
        };
        drop(event);
        let body = env.body.clone();
        let asked = self.ask(E::NAME, env);
        Either::Right(async move {
            // A labelled block, not a function: the call's future awaits `asked` in place
            // (moved into a function's future, it would be held twice, and copied).
            let reply = 'reply: {
                let answer = match asked.await {
                    Ok(answer) => answer,
                    Err(err) => break 'reply Err(err),
                };
                if answer.kind != Kind::RunHere {
                    break 'reply decode_answer::<E::Reply>(E::NAME, &answer);
                }
                drop(answer);
                // The Hub picked this very worker: run the handler here, as a request frame
                // would be, within what is left of the deadline.
                let answer = match self.shared.start(&self.request_here::<E>(to, body)) {
                    Started::Now(answer) => answer,
                    // Boxed: rare, and it would make every call's future larger.
                    Started::Later(answer) => {
                        let left = self.timeout.saturating_sub(started.elapsed());
                        match Box::pin(tokio::time::timeout(left, answer)).await {
                            Ok(answer) => answer,
                            Err(_) => break 'reply Err(self.timed_out(E::NAME, None)),
                        }
                    }
                };
                decode_answer::<E::Reply>(E::NAME, &answer)
            };
            self.counted(kind, started, reply)
        })
    }

    /// Sends a request now (waiting for room if there is none) and waits for its one answer,
    /// within the deadline.
    fn ask(
        &self,
        event: &'static str,
        env: Envelope,
    ) -> impl Future<Output = Result<Envelope>> + Send + '_ {
        let (tx, rx) = oneshot::channel();
        let call = self.begin(Waiter::One(tx));
        let sent = self.shared.link.send(Envelope { id: call.id, ..env });
        async move {
            let answer = tokio::time::timeout(self.timeout, async {
                sent.await?;
                rx.await.map_err(|_| Error::Closed)
            })
            .await;
            match answer {
                Ok(answer) => {
                    call.finish();
                    answer
                }
                Err(_) => Err(self.timed_out(event, None)),
            }
        }
    }

    pub(super) fn begin(&self, waiter: Waiter) -> Call<'_> {
        let id = self.shared.calls.begin(waiter);
        self.shared.busy.progress();
        Call {
            shared: &self.shared,
            id,
            done: false,
        }
    }

    pub(super) fn timed_out(&self, event: &str, peer: Option<Peer>) -> Error {
        Error::Timeout {
            event: event.into(),
            after: self.timeout,
            peer,
        }
    }

    /// The request frame a share run here stands for: what the Hub would have sent.
    pub(super) fn request_here<E: Event>(&self, to: Target, body: Bytes) -> Envelope {
        Envelope {
            kind: Kind::Request,
            id: 0,
            from: self.shared.peer,
            to,
            event: Bytes::from_static(E::NAME.as_bytes()),
            key: Bytes::new(),
            body,
        }
    }

    /// Encodes `event` into an envelope, refusing one that would be over the maximum frame, a
    /// call beyond [`Config::max_calls`], or one of the cluster's own events to workers from a
    /// worker (see [`Event::NAME`]).
    pub(super) fn envelope<E: Event>(
        &self,
        kind: Kind,
        to: Target,
        key: Bytes,
        event: &E,
    ) -> Result<Envelope> {
        if self.is_closed() {
            return Err(Error::Closed);
        }
        if !crate::event::may_send(self.shared.peer, kind, E::NAME.as_bytes(), to) {
            return Err(crate::event::reserved_error(E::NAME.as_bytes()));
        }
        if kind == Kind::Request && self.shared.calls.len() >= self.shared.config.max_calls {
            return Err(Error::Busy {
                event: E::NAME.into(),
                peer: self.shared.peer,
            });
        }
        let body = encode(E::NAME, event)?;
        let env = Envelope {
            kind,
            id: 0,
            from: self.shared.peer,
            to,
            event: Bytes::from_static(E::NAME.as_bytes()),
            key,
            body,
        };
        self.shared.check_size(&env)?;
        Ok(env)
    }
}

impl Shared {
    /// An answer came: to its call, unless it is news of the Ready set.
    pub(super) fn answer(&self, env: Envelope) {
        self.busy.progress();
        // A list of the Ready set, kept for the next maps; id 0: sent unasked, to a worker
        // that left the set.
        if env.kind == Kind::Members {
            self.learn(&env);
            if env.id == 0 {
                return;
            }
        }
        if !self.calls.answer(env) {
            tracing::debug!("an answer for a call that gave up");
        }
    }
}
