//! Limits and deadlines shared by the Hub and every Messenger.

use std::time::Duration;

/// Limits and deadlines. The defaults suit most services; the Hub and the Messengers of one
/// cluster should use the same values.
///
/// ```
/// use messenger::Config;
/// use std::time::Duration;
///
/// let config = Config::default().request_timeout(Duration::from_secs(2));
/// assert_eq!(config.max_frame, 16 * 1024 * 1024);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// How long a call (consume, map, request, ...) waits for its replies. Default 10 s.
    pub request_timeout: Duration,
    /// The largest frame, prefix excluded, either side sends or accepts. Default 16 MiB.
    pub max_frame: usize,
    /// How many frames may wait in each queue between the Hub and a connection. Default 1024.
    pub queue_frames: usize,
    /// How long the Hub waits for room in a full queue before it closes that connection as
    /// stuck. Default 10 s.
    pub stall_timeout: Duration,
    /// How many `consume_once` keys the Hub remembers; the oldest are forgotten first.
    /// Default 4096.
    pub once_keys: usize,
    /// How long the Hub waits for a new connection's first frame. Default 10 s.
    pub handshake_timeout: Duration,
    /// How long a Messenger that waits for replies keeps polling its socket before its thread
    /// sleeps; zero never polls. Default 100 µs.
    ///
    /// Waking a sleeping thread costs more than a round trip on many machines (a virtual CPU
    /// that halted must be resumed by the host: measured on a 2-CPU KVM guest, a request to the
    /// master took 16 µs when no CPU slept and 57 µs when both ends slept between messages), so
    /// a caller that is about to get its answer is better off awake. Polling stops as soon as
    /// no call is pending, and after this long without an answer; a busy process does not poll
    /// (it has work to run).
    pub busy_poll: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            request_timeout: Duration::from_secs(10),
            max_frame: crate::wire::DEFAULT_MAX_FRAME,
            queue_frames: 1024,
            stall_timeout: Duration::from_secs(10),
            once_keys: 4096,
            handshake_timeout: Duration::from_secs(10),
            busy_poll: Duration::from_micros(100),
        }
    }
}

impl Config {
    /// Sets [`Config::request_timeout`].
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets [`Config::max_frame`].
    pub fn max_frame(mut self, bytes: usize) -> Self {
        self.max_frame = bytes;
        self
    }

    /// Sets [`Config::queue_frames`] (at least 1).
    pub fn queue_frames(mut self, frames: usize) -> Self {
        self.queue_frames = frames.max(1);
        self
    }

    /// Sets [`Config::stall_timeout`].
    pub fn stall_timeout(mut self, timeout: Duration) -> Self {
        self.stall_timeout = timeout;
        self
    }

    /// Sets [`Config::once_keys`] (at least 1).
    pub fn once_keys(mut self, keys: usize) -> Self {
        self.once_keys = keys.max(1);
        self
    }

    /// Sets [`Config::busy_poll`] (zero: never).
    pub fn busy_poll(mut self, budget: Duration) -> Self {
        self.busy_poll = budget;
        self
    }

    /// Sets [`Config::handshake_timeout`].
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }
}
