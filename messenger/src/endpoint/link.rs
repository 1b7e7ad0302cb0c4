//! How a Messenger's frames leave it: into a bounded queue that a writer task empties onto its
//! socket (a worker), or straight into the Hub's router, in the calling task (the master).
//!
//! The queue holds at most [`Config::queue_frames`] frames and [`Config::queue_bytes`] bytes
//! of calls and replies; a caller waits for room (backpressure). Control frames (announcing a
//! handler, giving up a call, giving room back) never wait: they are few, and bounded by what
//! caused them.
//!
//! [`Config::queue_frames`]: crate::Config::queue_frames
//! [`Config::queue_bytes`]: crate::Config::queue_bytes

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};

use futures_util::future::{ready, Either};
use tokio::sync::{mpsc, Semaphore, TryAcquireError};

use crate::transport::{cost, Outbox, Router};
use crate::wire::Envelope;
use crate::{Config, Error, Result};

/// A frame on its way out, and the room it holds until written.
pub(crate) struct Outgoing {
    env: Envelope,
    /// Bytes of room held (frames hold one unit each); `None` for control frames.
    cost: Option<u32>,
}

/// What became of a frame offered to a full or closed queue.
pub(super) enum Offer {
    Sent,
    /// No room: the frame is handed back.
    Full(Envelope),
    Closed,
}

pub(super) enum Link {
    Socket(Queue),
    Local(Weak<dyn Router>),
}

/// The bounded outbound queue of a socket link.
pub(super) struct Queue {
    tx: mpsc::UnboundedSender<Outgoing>,
    room: Room,
}

/// Room counted in frames and bytes: a frame takes one unit of the first and its cost of the
/// second, both or neither, and gives them back once gone.
struct Permits {
    frames: Semaphore,
    bytes: Semaphore,
}

impl Permits {
    fn new(frames: usize, bytes: usize) -> Permits {
        Permits {
            frames: Semaphore::new(frames.min(Semaphore::MAX_PERMITS)),
            bytes: Semaphore::new(bytes.min(Semaphore::MAX_PERMITS)),
        }
    }

    /// Takes room for one frame of `cost` bytes if there is some now.
    fn try_take(&self, cost: u32) -> Result<(), TryAcquireError> {
        let frame = self.frames.try_acquire()?;
        let bytes = self.bytes.try_acquire_many(cost)?;
        frame.forget();
        bytes.forget();
        Ok(())
    }

    /// Takes room for one frame of `cost` bytes, waiting for it.
    async fn take(&self, cost: u32) -> Result<()> {
        let frame = self.frames.acquire().await.map_err(|_| Error::Closed)?;
        let bytes = self
            .bytes
            .acquire_many(cost)
            .await
            .map_err(|_| Error::Closed)?;
        frame.forget();
        bytes.forget();
        Ok(())
    }

    fn give(&self, frames: usize, bytes: usize) {
        self.frames.add_permits(frames);
        self.bytes.add_permits(bytes);
    }

    fn close(&self) {
        self.frames.close();
        self.bytes.close();
    }
}

#[derive(Clone)]
struct Room {
    permits: Arc<Permits>,
    /// What one frame may cost at most: the whole byte budget.
    max_cost: u32,
}

impl Room {
    fn cost(&self, env: &Envelope) -> u32 {
        cost(env).min(self.max_cost)
    }

    fn give_back(&self, cost: u32) {
        self.permits.give(1, cost as usize);
    }
}

impl Link {
    /// A socket link and the end its writer task takes frames from.
    pub fn socket(config: &Config) -> (Link, Frames) {
        let (tx, rx) = mpsc::unbounded_channel();
        let max_cost =
            u32::try_from(config.queue_bytes.min(Semaphore::MAX_PERMITS)).unwrap_or(u32::MAX);
        let room = Room {
            permits: Arc::new(Permits::new(config.queue_frames, max_cost as usize)),
            max_cost,
        };
        let frames = Frames {
            rx,
            room: room.clone(),
        };
        (Link::Socket(Queue { tx, room }), frames)
    }

    /// Sends a call's or a reply's frame, waiting for room. Only the wait is a future of its
    /// own (boxed): a call's future stays small when there is room, as there mostly is.
    pub fn send(&self, env: Envelope) -> impl Future<Output = Result<()>> + Send + '_ {
        type Wait<'a> = Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>>;
        match self {
            Link::Local(router) => match router.upgrade() {
                Some(router) => {
                    router.route(env);
                    Either::Left(ready(Ok(())))
                }
                None => Either::Left(ready(Err(Error::Closed))),
            },
            Link::Socket(queue) => match queue.try_send(env) {
                Offer::Sent => Either::Left(ready(Ok(()))),
                Offer::Closed => Either::Left(ready(Err(Error::Closed))),
                Offer::Full(env) => {
                    let wait: Wait<'_> = Box::pin(queue.send(env));
                    Either::Right(wait)
                }
            },
        }
    }

    /// Sends a frame now if there is room (the caller decides how to wait when there is none).
    pub fn try_send(&self, env: Envelope) -> Offer {
        match self {
            Link::Local(router) => {
                if let Some(router) = router.upgrade() {
                    router.route(env);
                }
                Offer::Sent
            }
            Link::Socket(queue) => queue.try_send(env),
        }
    }

    /// Sends a control frame, whatever the room.
    pub fn send_control(&self, env: Envelope) {
        match self {
            Link::Local(router) => {
                if let Some(router) = router.upgrade() {
                    router.route(env);
                }
            }
            Link::Socket(queue) => {
                let _ = queue.tx.send(Outgoing { env, cost: None });
            }
        }
    }

    /// No more frames leave: waiting senders fail with [`Error::Closed`].
    pub fn close(&self) {
        if let Link::Socket(queue) = self {
            queue.room.permits.close();
        }
    }
}

impl Queue {
    /// Queues `env` if there is room.
    fn try_send(&self, env: Envelope) -> Offer {
        let cost = self.room.cost(&env);
        match self.room.permits.try_take(cost) {
            Ok(()) => self.push(env, cost),
            Err(TryAcquireError::Closed) => Offer::Closed,
            Err(TryAcquireError::NoPermits) => Offer::Full(env),
        }
    }

    /// Queues `env` once there is room.
    async fn send(&self, env: Envelope) -> Result<()> {
        let cost = self.room.cost(&env);
        self.room.permits.take(cost).await?;
        match self.push(env, cost) {
            Offer::Sent => Ok(()),
            _ => Err(Error::Closed),
        }
    }

    fn push(&self, env: Envelope, cost: u32) -> Offer {
        let out = Outgoing {
            env,
            cost: Some(cost),
        };
        match self.tx.send(out) {
            Ok(()) => Offer::Sent,
            Err(_) => {
                self.room.give_back(cost);
                Offer::Closed
            }
        }
    }
}

/// The broadcasts a process may have that have not yet left every queue in the Hub: at most
/// [`Config::queue_frames`] of them and [`Config::queue_bytes`] bytes. A broadcast waits for
/// room (so a flood slows down to what its slowest receiver takes, until that receiver is
/// closed as stuck); the Hub gives room back ([`Kind::Credit`](crate::wire::Kind::Credit)).
pub(super) struct Window(Permits);

impl Window {
    pub fn new(config: &Config) -> Window {
        Window(Permits::new(config.queue_frames, config.queue_bytes))
    }

    /// Takes room for a broadcast of `cost` bytes, waiting for it; only the wait is a future
    /// of its own.
    pub fn take(&self, cost: u32) -> impl Future<Output = Result<()>> + Send + '_ {
        match self.0.try_take(cost) {
            Ok(()) => Either::Left(ready(Ok(()))),
            Err(_) => {
                let wait: Pin<Box<dyn Future<Output = Result<()>> + Send + '_>> =
                    Box::pin(self.0.take(cost));
                Either::Right(wait)
            }
        }
    }

    /// Room given back by the Hub.
    pub fn give(&self, frames: u64, bytes: u64) {
        let clamp = |n: u64| {
            usize::try_from(n)
                .unwrap_or(usize::MAX)
                .min(Semaphore::MAX_PERMITS)
        };
        self.0.give(clamp(frames), clamp(bytes));
    }

    pub fn close(&self) {
        self.0.close();
    }
}

/// The writer task's end of a socket link.
pub(crate) struct Frames {
    rx: mpsc::UnboundedReceiver<Outgoing>,
    room: Room,
}

impl Outbox for Frames {
    type Item = Outgoing;

    async fn recv_batch(&mut self, batch: &mut Vec<Outgoing>, limit: usize) -> usize {
        self.rx.recv_many(batch, limit).await
    }

    fn frame(item: &Outgoing) -> &Envelope {
        &item.env
    }

    fn written(&mut self, items: &[Outgoing]) {
        let (frames, bytes) = items
            .iter()
            .filter_map(|out| out.cost)
            .fold((0, 0), |(n, b), cost| (n + 1, b + cost as usize));
        if frames > 0 {
            self.room.permits.give(frames, bytes);
        }
    }
}
