//! What comes in: the reader of a worker's socket, and the lane its broadcasts run in.
//!
//! The reader never waits: answers go to their calls, requests start their handlers (a task
//! each, for those that wait), broadcasts go to the lane. So the replies a handler waits for
//! are read whatever the handlers do. The lane holds only what the Hub sent within this
//! worker's window, and gives room back ([`Kind::Credit`]) as it runs them: a flood of
//! broadcasts waits in the master, not here.

use std::sync::{Arc, Weak};

use futures_util::StreamExt;
use tokio::io::AsyncRead;
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;

use super::link::Offer;
use super::Shared;
use crate::wire::{Credit, Envelope, FrameCodec, Kind};

/// How many frames a Messenger dispatches from what it has read before it lets its other tasks
/// run. Without a pause, 64 answers read at once wake 64 calls whose 64 next requests leave in
/// one write after the last is dispatched: the whole batch travels from process to process as
/// one convoy, and each process waits while the others work. Pausing every 32 lets the first
/// requests leave while the rest are dispatched (measured in `bench/ANALYSIS.md`).
const READ_RUN: usize = 32;

/// Reads the Hub's frames until the connection ends, then shuts the Messenger.
pub(super) async fn read<R: AsyncRead + Unpin>(
    shared: Arc<Shared>,
    mut reader: FramedRead<R, FrameCodec>,
) {
    let stop = shared.closed.clone();
    // Made once: a cancellation future registers with the token each time it is made.
    let stopped = stop.cancelled();
    tokio::pin!(stopped);
    // Frames dispatched since the read buffer was last empty or the last pause.
    let mut run = 0;
    let reason = loop {
        if reader.read_buffer().is_empty() {
            run = 0;
        } else if run >= READ_RUN {
            // The calls just answered send their next frames before the rest are dispatched.
            run = 0;
            tokio::task::yield_now().await;
        }
        run += 1;
        let frame = tokio::select! {
            biased;
            frame = reader.next() => frame,
            () = &mut stopped => break "closed".to_string(),
        };
        match frame {
            Some(Ok(env)) => shared.dispatch(env),
            Some(Err(err)) => break err.to_string(),
            None => break "the hub closed the connection".to_string(),
        }
    };
    tracing::debug!(peer = %shared.peer, "messenger connection ended: {reason}");
    shared.shut();
}

impl Shared {
    /// Hands an incoming frame to what waits for it. Never waits.
    pub(super) fn dispatch(self: &Arc<Self>, env: Envelope) {
        match env.kind {
            Kind::Reply | Kind::Failure | Kind::Members | Kind::RunHere => self.answer(env),
            Kind::Request => self.handle_request(env),
            // Within the window the Hub keeps: bounded.
            Kind::Broadcast => {
                let _ = self.lane.send(env);
            }
            // Room for more of this end's broadcasts.
            Kind::Credit => match Credit::from_frame(&env) {
                Ok(credit) => self.window.give(credit.frames, credit.bytes),
                Err(err) => tracing::warn!("{err}"),
            },
            Kind::Hello | Kind::Announce | Kind::Ready | Kind::Cancel => {
                tracing::debug!(kind = ?env.kind, "unexpected frame ignored");
            }
        }
    }

    /// Runs a request's handler and sends its answer.
    fn handle_request(self: &Arc<Self>, env: Envelope) {
        match self.start(&env) {
            super::run::Started::Now(answer) => self.reply(answer),
            super::run::Started::Later(future) => {
                let shared = self.clone();
                tokio::spawn(async move {
                    let answer = future.await;
                    let _ = shared.link.send(answer).await;
                });
            }
        }
    }

    /// Queues a reply, in a task if the queue is full (a reader never waits).
    fn reply(self: &Arc<Self>, reply: Envelope) {
        if let Offer::Full(reply) = self.link.try_send(reply) {
            let shared = self.clone();
            tokio::spawn(async move {
                let _ = shared.link.send(reply).await;
            });
        }
    }
}

/// Runs broadcast handlers one frame at a time, in arrival order, so that each sender's order
/// is kept, giving the Hub room back as it goes (how many, of how many bytes), once `frames`
/// or `bytes` are owed (`Config::credit_batch`). Stops when the Messenger is gone.
pub(super) async fn run_broadcasts(
    shared: Weak<Shared>,
    mut lane: mpsc::UnboundedReceiver<Envelope>,
    (frames, bytes): (u64, u64),
) {
    let mut owed = Credit {
        frames: 0,
        bytes: 0,
    };
    while let Some(env) = lane.recv().await {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        shared.run_broadcast(&env).await;
        owed.frames += 1;
        owed.bytes += env.wire_len() as u64;
        drop(env);
        if owed.frames >= frames || owed.bytes >= bytes {
            shared.link.send_control(owed.frame());
            owed = Credit {
                frames: 0,
                bytes: 0,
            };
        }
    }
}
