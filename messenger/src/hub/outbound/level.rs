//! What an [`Outbound`](super::Outbound) queue holds, filled by the Hub (under its lock) and
//! emptied by the connection's writer task (without it): the frames, counted and timed, and
//! the writer's end.
//!
//! Each end counts only what it does: the Hub what it queued, in plain fields of its own, the
//! writer what it wrote, in atomics the Hub reads. What waits is the difference. So queuing a
//! frame, the Hub's work for every frame it routes, takes no atomic read-modify-write; the
//! writer takes one per count and batch.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::transport::Outbox;
use crate::wire::Envelope;

/// Frames and their bytes, the window's broadcasts counted apart from the other frames: they
/// have a bound of their own, and must not use up the room of requests and answers.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    frames: usize,
    bytes: usize,
    broadcasts: usize,
    broadcast_bytes: usize,
}

/// What the writer wrote so far (it only grows), and when it last made progress.
struct Written {
    frames: AtomicUsize,
    bytes: AtomicUsize,
    broadcasts: AtomicUsize,
    broadcast_bytes: AtomicUsize,
    /// Nanoseconds since the Hub's start: the last write, or the last time the queue went
    /// from empty to not.
    progress: AtomicU64,
    start: Instant,
}

impl Written {
    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn progressed(&self) {
        self.progress.store(self.now(), Ordering::Relaxed);
    }
}

/// The Hub's view of a queue: what it queued, less what the writer wrote.
pub(crate) struct Level {
    queued: Counts,
    written: Arc<Written>,
}

impl Level {
    /// An empty queue: the Hub's end, its level, and the writer's end.
    pub fn queue(start: Instant) -> (mpsc::UnboundedSender<Queued>, Level, Frames) {
        let (tx, rx) = mpsc::unbounded_channel();
        let written = Arc::new(Written {
            frames: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            broadcasts: AtomicUsize::new(0),
            broadcast_bytes: AtomicUsize::new(0),
            progress: AtomicU64::new(0),
            start,
        });
        let frames = Frames {
            rx,
            written: written.clone(),
        };
        let level = Level {
            queued: Counts::default(),
            written,
        };
        (tx, level, frames)
    }

    /// Nanoseconds since the Hub's start.
    pub fn now(&self) -> u64 {
        self.written.now()
    }

    /// When the writer last made progress (nanoseconds since the Hub's start): its last write,
    /// or when the queue last went from empty to not.
    pub fn progress(&self) -> u64 {
        self.written.progress.load(Ordering::Relaxed)
    }

    /// Frames other than the window's broadcasts.
    pub fn frames(&self) -> usize {
        let written = self.written.frames.load(Ordering::Relaxed);
        self.queued.frames.wrapping_sub(written)
    }

    /// The bytes of frames other than the window's broadcasts.
    pub fn bytes(&self) -> usize {
        let written = self.written.bytes.load(Ordering::Relaxed);
        self.queued.bytes.wrapping_sub(written)
    }

    fn broadcasts(&self) -> usize {
        let written = self.written.broadcasts.load(Ordering::Relaxed);
        self.queued.broadcasts.wrapping_sub(written)
    }

    /// The bytes of every frame not yet written.
    pub fn all_bytes(&self) -> usize {
        let written = self.written.broadcast_bytes.load(Ordering::Relaxed);
        self.bytes() + self.queued.broadcast_bytes.wrapping_sub(written)
    }

    /// Every frame not yet written.
    pub fn all_frames(&self) -> usize {
        self.frames() + self.broadcasts()
    }

    /// Counts one more frame of `size` bytes (one of the window's broadcasts, or not); a
    /// queue that was empty starts its stall clock now.
    pub fn add(&mut self, windowed: bool, size: usize) {
        if self.all_frames() == 0 {
            self.written.progressed();
        }
        // Counted before the frame is sent (see `Outbound::send`'s callers): the writer can
        // only count as written what was counted here first. Wrapping, as the reads subtract.
        let queued = &mut self.queued;
        let (frames, bytes) = if windowed {
            (&mut queued.broadcasts, &mut queued.broadcast_bytes)
        } else {
            (&mut queued.frames, &mut queued.bytes)
        };
        *frames = frames.wrapping_add(1);
        *bytes = bytes.wrapping_add(size);
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

/// The writer task's end of an [`Outbound`](super::Outbound).
pub(crate) struct Frames {
    rx: mpsc::UnboundedReceiver<Queued>,
    written: Arc<Written>,
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
        let mut counts = Counts::default();
        for item in items {
            if item.windowed {
                counts.broadcasts += 1;
                counts.broadcast_bytes += item.env.wire_len();
            } else {
                counts.frames += 1;
                counts.bytes += item.env.wire_len();
            }
        }
        let written = &self.written;
        // Only what was queued is written: the Hub never sees more written than it queued.
        if counts.frames > 0 {
            written.bytes.fetch_add(counts.bytes, Ordering::Relaxed);
            written.frames.fetch_add(counts.frames, Ordering::Relaxed);
        }
        if counts.broadcasts > 0 {
            written
                .broadcast_bytes
                .fetch_add(counts.broadcast_bytes, Ordering::Relaxed);
            written
                .broadcasts
                .fetch_add(counts.broadcasts, Ordering::Relaxed);
        }
        written.progressed();
    }
}
