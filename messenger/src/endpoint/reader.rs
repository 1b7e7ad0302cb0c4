//! What comes in: the reader of a worker's socket, and the lane its broadcasts run in.
//!
//! The reader never waits: answers go to their calls, requests start their handlers (a task
//! each, for those that wait), broadcasts go to the lane. So the replies a handler waits for
//! are read whatever the handlers do. The lane holds only what the Hub sent within this
//! worker's window, and gives room back ([`Kind::Credit`]) as it runs them: a flood of
//! broadcasts waits in the master, not here.

use std::sync::{Arc, Weak};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;
use tokio_util::codec::{Decoder, FramedRead};

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
///
/// What one read brought is decoded and dispatched straight from the decoder (a frame stream
/// would move each envelope through several layers of `Poll` and `Option` on the way), with a
/// pause every [`READ_RUN`] frames.
pub(super) async fn read<R: AsyncRead + Unpin>(
    shared: Arc<Shared>,
    reader: FramedRead<R, FrameCodec>,
) {
    // Bytes already read (with the hello's answer, say) stay in the buffer.
    let parts = reader.into_parts();
    let (mut io, mut codec, mut buf) = (parts.io, parts.codec, parts.read_buf);
    let stop = shared.closed.clone();
    // Made once: a cancellation future registers with the token each time it is made.
    let stopped = stop.cancelled();
    tokio::pin!(stopped);
    let reason = 'read: loop {
        // Frames dispatched since this read or the last pause.
        let mut run = 0;
        loop {
            if stop.is_cancelled() {
                break 'read "closed".to_string();
            }
            match codec.decode(&mut buf) {
                Ok(Some(env)) => shared.dispatch(env),
                Ok(None) => break,
                Err(err) => break 'read err.to_string(),
            }
            run += 1;
            if run == READ_RUN && !buf.is_empty() {
                // The calls just answered send their next frames before the rest are
                // dispatched.
                run = 0;
                tokio::task::yield_now().await;
            }
        }
        buf.reserve(1);
        let read = tokio::select! {
            biased;
            () = &mut stopped => break "closed".to_string(),
            read = io.read_buf(&mut buf) => read,
        };
        match read {
            Ok(0) if buf.is_empty() => break "the hub closed the connection".to_string(),
            Ok(0) => break "the hub closed the connection in the middle of a frame".to_string(),
            Ok(_) => {}
            Err(err) => break format!("i/o error: {err}"),
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
