//! Running handlers: a request that came over the wire and a share a process runs itself (its
//! own part of a `map`, a `consume` the Hub gave back to it) take the very same steps, so both
//! give the same answer: the handler limit, the first handler, the panic guard, the reply's
//! encoding and its size check. A process does not run more than
//! [`Config::max_handlers`](crate::Config::max_handlers) requests at once: more are answered
//! [`Error::Busy`](crate::Error::Busy). The Hub's own orders (heartbeats, drain) are always run.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::FutureExt;

use super::Shared;
use crate::wire::{Envelope, Kind, Target};
use crate::{BoxFuture, Error, Result};

/// A request's answer: now, or once its handler's future is done.
pub(super) enum Started {
    Now(Envelope),
    Later(BoxFuture<'static, Envelope>),
}

/// A place among the handlers running, for a handler that waits; given back when dropped.
pub(super) struct Running(Arc<Shared>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Shared {
    /// Starts the handler of `request`. Most answer at once (a lookup, a counter): the future
    /// is polled once right here, so no task is spawned for them; one that waits is handed back.
    pub(super) fn start(self: &Arc<Self>, request: &Envelope) -> Started {
        // The Hub's orders are run whatever the load; the rest take a place among the
        // handlers running, given back when the handler is done.
        let counted = !matches!(request.to, Target::Worker(_));
        if counted && self.running.fetch_add(1, Ordering::Relaxed) >= self.config.max_handlers {
            self.running.fetch_sub(1, Ordering::Relaxed);
            return Started::Now(self.answer_for(
                request,
                Err(Error::Busy {
                    event: request.event_name(),
                    peer: self.peer,
                }),
            ));
        }
        let started = self.run(request);
        match started {
            Started::Later(future) if counted => {
                let place = Running(self.clone());
                Started::Later(Box::pin(async move {
                    let _place = place;
                    future.await
                }))
            }
            started => {
                if counted {
                    self.running.fetch_sub(1, Ordering::Relaxed);
                }
                started
            }
        }
    }

    /// Runs the first handler of `request`'s event, turning a panic into its error.
    fn run(self: &Arc<Self>, request: &Envelope) -> Started {
        let Some(handler) = self.handlers.first(&request.event) else {
            let error = Error::NoHandler {
                event: request.event_name(),
                peer: Some(self.peer),
            };
            return Started::Now(self.answer_for(request, Err(error)));
        };
        // Making the future and its first poll, under one guard: `Err` is a future that waits.
        let started = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let mut future = handler(request.body.clone(), request.from);
            future.as_mut().now_or_never().ok_or(future)
        }));
        match started {
            Ok(Ok(result)) => Started::Now(self.answer_for(request, result)),
            Ok(Err(future)) => {
                let shared = self.clone();
                // What the answer needs of the request; not its body.
                let request = Envelope {
                    body: Bytes::new(),
                    ..request.clone()
                };
                Started::Later(Box::pin(async move {
                    let result = AssertUnwindSafe(future)
                        .catch_unwind()
                        .await
                        .unwrap_or_else(|panic| Err(shared.panicked(&request.event, panic)));
                    shared.answer_for(&request, result)
                }))
            }
            Err(panic) => {
                let error = self.panicked(&request.event, panic);
                Started::Now(self.answer_for(request, Err(error)))
            }
        }
    }

    /// The reply (or failure) to `request` for a handler's result: a reply over the maximum
    /// frame size is a failure.
    fn answer_for(&self, request: &Envelope, result: Result<Bytes>) -> Envelope {
        let event = request.event.clone();
        let reply = result.and_then(|body| {
            let reply = Envelope::answer(Kind::Reply, request.id, self.peer, event.clone(), body);
            self.check_size(&reply).map(|()| reply)
        });
        let answer = reply.unwrap_or_else(|err| {
            Envelope::failure(request.id, self.peer, event, &err, self.config.max_frame)
        });
        // Addressed to its caller: the Hub finds the call by it.
        Envelope {
            to: Target::caller(request.from),
            ..answer
        }
    }

    /// Runs a broadcast's handlers, one after the other; a failure is only logged (the sender
    /// does not wait for broadcast results).
    pub(super) async fn run_broadcast(&self, env: &Envelope) {
        let Some(handlers) = self.handlers.all(&env.event) else {
            tracing::debug!(event = %env.event_name(), "a broadcast with no handler here");
            return;
        };
        for handler in handlers.iter() {
            let result = self
                .guarded(&env.event, || handler(env.body.clone(), env.from))
                .await;
            if let Err(err) = result {
                tracing::warn!(event = %env.event_name(), from = %env.from, "broadcast handler failed: {err}");
            }
        }
    }

    /// Runs the future `start` makes, turning a panic (in `start` or in the future) into
    /// [`Error::HandlerPanicked`] and a call of the panic hook.
    async fn guarded<T, F>(&self, event: &[u8], start: impl FnOnce() -> F) -> Result<T>
    where
        F: std::future::Future<Output = Result<T>>,
    {
        let started = std::panic::catch_unwind(AssertUnwindSafe(start));
        let result = match started {
            Ok(future) => AssertUnwindSafe(future).catch_unwind().await,
            Err(panic) => Err(panic),
        };
        result.unwrap_or_else(|panic| Err(self.panicked(event, panic)))
    }

    /// The error for a handler of `event` that panicked; logs it and calls the panic hook.
    fn panicked(&self, event: &[u8], panic: Box<dyn std::any::Any + Send>) -> Error {
        let message = panic_message(&*panic);
        let event = String::from_utf8_lossy(event).into_owned();
        tracing::error!(event, "handler panicked: {message}");
        let hook = self
            .panic_hook
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(hook) = hook {
            hook(&format!("the handler of `{event}` panicked: {message}"));
        }
        Error::HandlerPanicked { event, message }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        text.to_string()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic with no message".into()
    }
}
