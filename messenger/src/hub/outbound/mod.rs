//! Everything on its way to one peer: its queue, the window and backlog of its broadcasts.
//!
//! Frames for a peer go into its queue, which its writer task empties onto the socket. The
//! queue has a budget ([`Config::queue_frames`] and [`Config::queue_bytes`]), and what may
//! enter depends on what the frame is:
//! - a request finds no room over the budget: its caller gets [`Error::Busy`] at once;
//! - an answer (the peer asked for it) may take the queue past the frame budget: by twice the
//!   budget and `max_calls` more (how many it may be owed at once) before the peer counts as not
//!   reading, and is closed as stuck; in bytes, an answer past twice the budget is replaced by a
//!   small `Busy` failure for that call;
//! - a broadcast goes out only within the peer's *window* ([`Config::broadcast_window`] frames,
//!   and the byte budget): the broadcasts it was sent and has not yet run ([`Kind::Credit`]
//!   gives room back), so a worker holds a bounded number, and its reader never has to stop
//!   (stopping would leave the replies its handlers wait for unread). The window is counted
//!   apart from the budget above, so a flood of broadcasts never leaves requests `Busy`. The
//!   rest wait here, in the backlog. A sender learns when each of its broadcasts has left every
//!   backlog (an [`Ack`]), and has at most a budget's worth not yet acknowledged: so a backlog
//!   holds at most that for each sender, and a flood slows its sender down;
//! - the Hub's own frames (the master's orders to one worker, the Ready set's news) always go.
//!
//! So the Hub holds at most about three times the byte budget for a peer (twice in requests and
//! answers, once in its window, and up to `max_calls` more small frames), plus a budget's worth
//! of broadcasts per sender; and a peer that has frames waiting and takes none for
//! [`Config::stall_timeout`] is closed as stuck (see [`Outbound::stuck`]).
//!
//! A frame is a slice of the read buffer it came in (see [`FrameCodec`]): while it waits it
//! keeps at most [`READ_CHUNK`] (64 KiB) of that buffer alive, or its own size if larger. So the
//! memory a peer's queue keeps is bounded by its frames as well as its bytes; the tables that
//! outlive a frame (names, keys, remembered replies) keep copies.
//!
//! Files: the queue's rules here; what the queue holds, shared with the writer task that
//! empties it, in `level.rs`.
//!
//! [`FrameCodec`]: crate::wire::FrameCodec
//! [`READ_CHUNK`]: crate::wire::READ_CHUNK
//!
//! [`Config::queue_frames`]: crate::Config::queue_frames
//! [`Config::queue_bytes`]: crate::Config::queue_bytes
//! [`Config::broadcast_window`]: crate::Config::broadcast_window
//! [`Config::stall_timeout`]: crate::Config::stall_timeout
//! [`Error::Busy`]: crate::Error::Busy
//! [`Kind::Credit`]: crate::wire::Kind::Credit

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::transport::cost;
use crate::wire::{Credit, Envelope};
use crate::{Config, Peer};

mod level;

pub(super) use level::Frames;
use level::{Level, Queued};

/// Frames and bytes.
#[derive(Debug, Clone, Copy)]
pub(super) struct Budget {
    pub frames: usize,
    pub bytes: usize,
    /// The broadcasts a peer may hold and not have run ([`Config::broadcast_window`]).
    pub window: usize,
}

impl Budget {
    pub fn of(config: &Config) -> Budget {
        Budget {
            frames: config.queue_frames,
            bytes: config.queue_bytes,
            window: config.broadcast_window,
        }
    }
}

/// One broadcast, for its sender: shared by the copies of it that wait in backlogs. When the
/// last copy leaves (sent, or its peer gone), the sender may send another.
pub(super) struct Ack {
    pub sender: Peer,
    pub bytes: u64,
    /// The broadcast's sequence number, for a sender on another host (its `id`; see
    /// `router/remote.rs`).
    pub seq: u64,
}

/// A broadcast waiting for room in a peer's window.
struct Waiting {
    env: Envelope,
    ack: Arc<Ack>,
}

/// The frames on their way to one peer.
pub(super) struct Outbound {
    tx: mpsc::UnboundedSender<Queued>,
    level: Level,
    budget: Budget,
    /// Broadcasts waiting for room in the window, and their bytes.
    backlog: VecDeque<Waiting>,
    backlog_bytes: usize,
    /// When the backlog last moved (or started): nanoseconds, as `Level::progress`.
    backlog_progress: u64,
    /// The broadcasts sent and not yet credited: how many, and their bytes.
    window: usize,
    window_bytes: usize,
    /// Requests and broadcasts queued for the peer so far (for an operator's status).
    delivered: u64,
}

/// Why a frame was not taken.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Refused {
    /// A request over the budget: its caller gets `Busy`.
    Full,
}

/// Whether an answer may be queued for a peer (see [`Outbound::answer_room`]).
#[derive(Debug, PartialEq, Eq)]
pub(super) enum AnswerRoom {
    Fits,
    /// Over twice the byte budget: the call gets a small `Busy` failure instead.
    OverBytes,
    /// The peer is not reading what it asked for: it is closed as stuck.
    Overflow,
}

impl Outbound {
    /// An outbound queue and the end its writer task takes frames from.
    pub fn new(budget: Budget, start: Instant) -> (Outbound, Frames) {
        let (tx, level, frames) = Level::queue(start);
        let out = Outbound {
            tx,
            level,
            budget,
            backlog: VecDeque::new(),
            backlog_bytes: 0,
            backlog_progress: 0,
            window: 0,
            window_bytes: 0,
            delivered: 0,
        };
        (out, frames)
    }

    /// Frames held for this peer: in the queue and the backlog.
    pub fn held(&self) -> usize {
        self.level.all_frames() + self.backlog.len()
    }

    /// The bytes of the frames held for this peer (as [`held`](Outbound::held) counts them).
    pub fn held_bytes_all(&self) -> usize {
        self.level.all_bytes() + self.backlog_bytes
    }

    fn held_bytes(&self) -> usize {
        self.level.bytes()
    }

    /// Whether a request would find room now (the window's broadcasts aside).
    pub fn has_room(&self) -> bool {
        self.level.frames() < self.budget.frames && self.held_bytes() < self.budget.bytes
    }

    /// Queues a frame whatever the budget: the Hub's own, few by nature.
    pub fn control(&mut self, env: Envelope) {
        self.level.add(false, env.wire_len());
        self.send(env, false);
    }

    /// Queues a broadcast the window has room for.
    fn windowed(&mut self, env: Envelope, size: usize) {
        self.window += 1;
        self.window_bytes += size;
        self.level.add(true, size);
        self.send(env, true);
    }

    fn send(&self, env: Envelope, windowed: bool) {
        // A closed queue belongs to a connection being torn down.
        let _ = self.tx.send(Queued { env, windowed });
    }

    /// Whether the queue (the window's broadcasts and the backlog aside) holds `factor`
    /// budgets, or would with `size` more bytes.
    fn over(&self, factor: usize, size: usize) -> bool {
        let frames = self.level.frames();
        frames > 0
            && (frames >= factor * self.budget.frames
                || self.held_bytes() + size > factor * self.budget.bytes)
    }

    /// Queues a request, if it fits the budget.
    pub fn request(&mut self, env: Envelope) -> Result<(), Refused> {
        if self.over(1, env.wire_len()) {
            return Err(Refused::Full);
        }
        self.delivered += 1;
        self.control(env);
        Ok(())
    }

    /// Requests and broadcasts queued for the peer so far, and calls it was told to run
    /// itself (`RunHere`).
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// One more call for the peer that did not go through its queue (it runs it itself).
    pub fn count_delivered(&mut self) {
        self.delivered += 1;
    }

    /// Whether an answer of `size` bytes may be queued. Answers are not held to the frame
    /// budget: a peer may be owed `owed_most` at once (`max_calls`: every waiter of one
    /// `consume_once` key is answered in one step), so up to that many more than twice the
    /// budget wait before the peer counts as not reading. In bytes, they are held to twice the
    /// budget.
    pub fn answer_room(&self, size: usize, owed_most: usize) -> AnswerRoom {
        let frames = self.level.frames();
        if frames >= (2 * self.budget.frames).saturating_add(owed_most) {
            AnswerRoom::Overflow
        } else if frames == 0 || self.held_bytes() + size <= 2 * self.budget.bytes {
            AnswerRoom::Fits
        } else {
            AnswerRoom::OverBytes
        }
    }

    /// Queues a broadcast within the window, or keeps it in the backlog with a share of its
    /// `ack` (made on first need).
    pub fn broadcast(&mut self, env: Envelope, ack: &mut Option<Arc<Ack>>, sender: Peer) {
        self.delivered += 1;
        let size = env.wire_len();
        if self.backlog.is_empty() && self.window_has_room(size) {
            return self.windowed(env, size);
        }
        if self.backlog.is_empty() {
            self.backlog_progress = self.level.now();
        }
        let ack = ack.get_or_insert_with(|| {
            Arc::new(Ack {
                sender,
                bytes: cost(&env).into(),
                seq: env.id,
            })
        });
        self.backlog_bytes += size;
        self.backlog.push_back(Waiting {
            env,
            ack: ack.clone(),
        });
    }

    /// A broadcast from another host, whose sender no window holds back: queued as any other
    /// while the backlog holds less than the budget (frames and bytes); `false`, and dropped,
    /// past it.
    #[inline(never)]
    pub fn broadcast_from_afar(
        &mut self,
        env: Envelope,
        ack: &mut Option<Arc<Ack>>,
        sender: Peer,
    ) -> bool {
        let size = env.wire_len();
        let full = self.backlog.len() >= self.budget.frames
            || (!self.backlog.is_empty() && self.backlog_bytes + size > self.budget.bytes);
        if full {
            return false;
        }
        self.broadcast(env, ack, sender);
        true
    }

    fn window_has_room(&self, size: usize) -> bool {
        self.window == 0
            || (self.window < self.budget.window && self.window_bytes + size <= self.budget.bytes)
    }

    /// The peer ran `credit.frames` more broadcasts, of `credit.bytes` bytes: send what now
    /// fits the window; the acks of what left the backlog go to `released`. `Err` if it claims
    /// more than it was sent.
    pub fn credit(&mut self, credit: Credit, released: &mut Vec<Arc<Ack>>) -> Result<(), String> {
        let (frames, bytes) = (
            usize::try_from(credit.frames).unwrap_or(usize::MAX),
            usize::try_from(credit.bytes).unwrap_or(usize::MAX),
        );
        if frames > self.window || bytes > self.window_bytes {
            return Err(format!(
                "gave back room for {frames} broadcasts of {bytes} bytes, but has only {} of \
                 {} bytes",
                self.window, self.window_bytes
            ));
        }
        self.window -= frames;
        self.window_bytes -= bytes;
        let moved = !self.backlog.is_empty();
        while let Some(size) = self.backlog.front().map(|w| w.env.wire_len()) {
            if !self.window_has_room(size) {
                break;
            }
            let Some(Waiting { env, ack }) = self.backlog.pop_front() else {
                break;
            };
            self.backlog_bytes -= size;
            self.windowed(env, size);
            released.push(ack);
        }
        if moved {
            self.backlog_progress = self.level.now();
        }
        Ok(())
    }

    /// The peer is gone: the acks of the broadcasts still waiting for it.
    pub fn abandon(self) -> Vec<Arc<Ack>> {
        self.backlog.into_iter().map(|w| w.ack).collect()
    }

    /// Why the peer counts as stuck, if it does: frames wait for it and it took none for
    /// `stall` (its socket is full), or broadcasts wait for room it has not given back.
    pub fn stuck(&self, stall: Duration) -> Option<String> {
        let now = self.level.now();
        let stalled = |since: u64| Duration::from_nanos(now.saturating_sub(since)) >= stall;
        let waiting = self.level.all_frames();
        if waiting > 0 && stalled(self.level.progress()) {
            return Some(format!(
                "stuck: {waiting} frames waited {stall:?} for it to read"
            ));
        }
        if !self.backlog.is_empty() && stalled(self.backlog_progress) {
            return Some(format!(
                "stuck: {} broadcasts waited {stall:?} for it to run the ones it had",
                self.backlog.len()
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests;
