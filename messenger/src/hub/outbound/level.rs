//! What an [`Outbound`](super::Outbound) queue holds, shared by the Hub (which fills it under
//! its lock) and the connection's writer task (which empties it without): the frames, counted
//! and timed, and the writer's end.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::transport::Outbox;
use crate::wire::Envelope;

/// What the queue holds, shared with the writer task (which takes from it without the Hub's
/// lock), and when the writer last made progress. The window's broadcasts are counted apart
/// from the other frames: they have a bound of their own, and must not use up the room of
/// requests and answers.
pub(crate) struct Level {
    /// Frames other than the window's broadcasts, and their bytes.
    frames: AtomicUsize,
    bytes: AtomicUsize,
    /// The window's broadcasts not yet written, and their bytes.
    broadcasts: AtomicUsize,
    broadcast_bytes: AtomicUsize,
    /// Nanoseconds since the Hub's start: the last write, or the last time the queue went
    /// from empty to not.
    progress: AtomicU64,
    start: Instant,
}

impl Level {
    /// An empty queue: the Hub's end, the level both ends share, and the writer's end.
    pub fn queue(start: Instant) -> (mpsc::UnboundedSender<Queued>, Arc<Level>, Frames) {
        let (tx, rx) = mpsc::unbounded_channel();
        let level = Arc::new(Level {
            frames: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            broadcasts: AtomicUsize::new(0),
            broadcast_bytes: AtomicUsize::new(0),
            progress: AtomicU64::new(0),
            start,
        });
        let frames = Frames {
            rx,
            level: level.clone(),
        };
        (tx, level, frames)
    }

    /// Nanoseconds since the Hub's start.
    pub fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// When the writer last made progress (nanoseconds since the Hub's start): its last write,
    /// or when the queue last went from empty to not.
    pub fn progress(&self) -> u64 {
        self.progress.load(Ordering::Relaxed)
    }

    fn progressed(&self) {
        self.progress.store(self.now(), Ordering::Relaxed);
    }

    /// Frames other than the window's broadcasts.
    pub fn frames(&self) -> usize {
        self.frames.load(Ordering::Relaxed)
    }

    /// The bytes of frames other than the window's broadcasts.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// The bytes of every frame not yet written.
    pub fn all_bytes(&self) -> usize {
        self.bytes() + self.broadcast_bytes.load(Ordering::Relaxed)
    }

    /// Every frame not yet written.
    pub fn all_frames(&self) -> usize {
        self.frames() + self.broadcasts.load(Ordering::Relaxed)
    }

    /// Counts one more frame of `size` bytes (one of the window's broadcasts, or not); a
    /// queue that was empty starts its stall clock now.
    pub fn add(&self, windowed: bool, size: usize) {
        let (count, bytes) = if windowed {
            (&self.broadcasts, &self.broadcast_bytes)
        } else {
            (&self.frames, &self.bytes)
        };
        if count.fetch_add(1, Ordering::Relaxed) == 0 && self.all_frames() == 1 {
            self.progressed();
        }
        bytes.fetch_add(size, Ordering::Relaxed);
    }
}

/// A frame in the queue, and whether it is one of the window's broadcasts.
pub(crate) struct Queued {
    pub env: Envelope,
    pub windowed: bool,
}

impl Queued {
    pub fn into_envelope(self) -> Envelope {
        self.env
    }
}

/// The writer task's end of an [`Outbound`].
pub(crate) struct Frames {
    rx: mpsc::UnboundedReceiver<Queued>,
    level: Arc<Level>,
}

#[cfg(test)]
impl Frames {
    /// The next frame, if one is there.
    pub fn try_recv(&mut self) -> Option<Queued> {
        self.rx.try_recv().ok()
    }
}

impl Outbox for Frames {
    type Item = Queued;

    async fn recv_batch(&mut self, batch: &mut Vec<Queued>, limit: usize) -> usize {
        self.rx.recv_many(batch, limit).await
    }

    fn frame(item: &Queued) -> &Envelope {
        &item.env
    }

    fn written(&mut self, items: &[Queued]) {
        let (mut frames, mut bytes, mut broadcasts, mut broadcast_bytes) = (0, 0, 0, 0);
        for item in items {
            if item.windowed {
                broadcasts += 1;
                broadcast_bytes += item.env.wire_len();
            } else {
                frames += 1;
                bytes += item.env.wire_len();
            }
        }
        let level = &self.level;
        if frames > 0 {
            level.frames.fetch_sub(frames, Ordering::Relaxed);
            level.bytes.fetch_sub(bytes, Ordering::Relaxed);
        }
        if broadcasts > 0 {
            level.broadcasts.fetch_sub(broadcasts, Ordering::Relaxed);
            level
                .broadcast_bytes
                .fetch_sub(broadcast_bytes, Ordering::Relaxed);
        }
        level.progressed();
    }
}
