//! Limits and deadlines shared by the Hub and every Messenger.

use std::time::Duration;

use crate::wire::{DEFAULT_MAX_FRAME, ENVELOPE_OVERHEAD, PREFIX};
use crate::Error;

/// Limits and deadlines. The defaults suit most services; the Hub and the Messengers of one
/// cluster use the same values.
///
/// Every limit is there so that a peer, buggy or hostile, costs the others a bounded amount of
/// memory and time: [`Config::validate`] says which combinations hold together.
///
/// Built from [`Config::default`] with one setter per field; the fields are public to read (and
/// the struct is `#[non_exhaustive]`, so it cannot be written as a literal and may gain fields).
/// Every use validates it first: the Hub, the mock cluster and the cluster builder refuse one
/// that does not hold together, however it was changed.
///
/// ```
/// use messenger::Config;
/// use std::time::Duration;
///
/// let config = Config::default().request_timeout(Duration::from_secs(2));
/// assert_eq!(config.max_frame, 16 * 1024 * 1024);
/// config.validate().unwrap();
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// How long a call (consume, map, request, ...) waits for its replies. Default 10 s.
    pub request_timeout: Duration,
    /// The largest frame, prefix excluded, either side sends or accepts. Default 16 MiB; at
    /// most 4 GiB - 1 (the length prefix has 4 bytes).
    pub max_frame: usize,
    /// How many frames each queue between the Hub and a connection holds. Default 4096.
    pub queue_frames: usize,
    /// How many bytes each queue between the Hub and a connection holds (frames counted by
    /// their size on the wire). Default 32 MiB; at least a maximum-size frame.
    pub queue_bytes: usize,
    /// How many broadcasts the Hub lets a worker hold that it has not run yet (and at most
    /// [`queue_bytes`](Config::queue_bytes) of them); the rest wait in the master until it
    /// gives room back. Counted apart from [`queue_frames`](Config::queue_frames), so that
    /// broadcasts never leave a request no room. Default 16384: four times a sender's window,
    /// so that a receiver has work while its room comes back through the master (see
    /// `bench/ANALYSIS.md`).
    pub broadcast_window: usize,
    /// How long a connection that has frames waiting for it may go without taking any before
    /// the Hub closes it as stuck. Default 10 s.
    pub stall_timeout: Duration,
    /// How many requests a process runs at once; more are answered with [`Error::Busy`] at
    /// once. Default 1024.
    pub max_handlers: usize,
    /// How many calls a process may have in flight through the Hub (a `map` counts once per
    /// worker asked); more fail with [`Error::Busy`]. Default 16384.
    pub max_calls: usize,
    /// How many event names a process may handle. Default 4096.
    pub max_events: usize,
    /// How many `consume_once` keys the Hub remembers; the oldest are forgotten first.
    /// Default 4096.
    pub once_keys: usize,
    /// How many bytes of `consume_once` replies the Hub remembers; the oldest are forgotten
    /// first. Default 32 MiB; at least a maximum-size frame.
    pub once_bytes: usize,
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
    /// Whether each call's duration is measured, for [`Messenger::call_stats`] (calls are
    /// counted either way). Default off: a clock read and a few atomic additions per call
    /// (measured: about 5% of the pipelined `consume` rate). A cluster with a metrics endpoint
    /// turns it on.
    ///
    /// [`Messenger::call_stats`]: crate::Messenger::call_stats
    pub time_calls: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            request_timeout: Duration::from_secs(10),
            max_frame: DEFAULT_MAX_FRAME,
            queue_frames: 4096,
            queue_bytes: 2 * DEFAULT_MAX_FRAME,
            broadcast_window: 16384,
            stall_timeout: Duration::from_secs(10),
            max_handlers: 1024,
            max_calls: 16384,
            max_events: 4096,
            once_keys: 4096,
            once_bytes: 2 * DEFAULT_MAX_FRAME,
            handshake_timeout: Duration::from_secs(10),
            busy_poll: Duration::from_micros(100),
            time_calls: false,
        }
    }
}

/// The longest deadline a setting may name: long enough to mean "never" in practice, short
/// enough that adding it to the current time cannot overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The smallest frame limit: an envelope with room for short names and a small payload.
const MIN_FRAME: usize = 256;
const _: () = assert!(MIN_FRAME >= 3 * ENVELOPE_OVERHEAD);

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

    /// Sets [`Config::queue_frames`].
    pub fn queue_frames(mut self, frames: usize) -> Self {
        self.queue_frames = frames;
        self
    }

    /// Sets [`Config::queue_bytes`].
    pub fn queue_bytes(mut self, bytes: usize) -> Self {
        self.queue_bytes = bytes;
        self
    }

    /// Sets [`Config::broadcast_window`].
    pub fn broadcast_window(mut self, frames: usize) -> Self {
        self.broadcast_window = frames;
        self
    }

    /// Sets [`Config::stall_timeout`].
    pub fn stall_timeout(mut self, timeout: Duration) -> Self {
        self.stall_timeout = timeout;
        self
    }

    /// Sets [`Config::max_handlers`].
    pub fn max_handlers(mut self, handlers: usize) -> Self {
        self.max_handlers = handlers;
        self
    }

    /// Sets [`Config::max_calls`].
    pub fn max_calls(mut self, calls: usize) -> Self {
        self.max_calls = calls;
        self
    }

    /// Sets [`Config::max_events`].
    pub fn max_events(mut self, events: usize) -> Self {
        self.max_events = events;
        self
    }

    /// Sets [`Config::once_keys`].
    pub fn once_keys(mut self, keys: usize) -> Self {
        self.once_keys = keys;
        self
    }

    /// Sets [`Config::once_bytes`].
    pub fn once_bytes(mut self, bytes: usize) -> Self {
        self.once_bytes = bytes;
        self
    }

    /// Sets [`Config::busy_poll`] (zero: never).
    pub fn busy_poll(mut self, budget: Duration) -> Self {
        self.busy_poll = budget;
        self
    }

    /// Sets [`Config::time_calls`].
    pub fn time_calls(mut self, yes: bool) -> Self {
        self.time_calls = yes;
        self
    }

    /// Sets [`Config::handshake_timeout`].
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// How much room for broadcasts is given back at a time ([`Kind::Credit`]): a quarter of
    /// a queue, in frames or in bytes, whichever comes first. Never so many bytes that a
    /// maximum-size frame would not fit in what is left, so that room given back in batches
    /// never leaves a frame waiting for ever.
    ///
    /// [`Kind::Credit`]: crate::wire::Kind::Credit
    pub(crate) fn credit_batch(&self) -> (u64, u64) {
        let frames = (self.queue_frames / 4).max(1);
        let bytes = (self.queue_bytes / 4)
            .min(self.queue_bytes.saturating_sub(self.max_frame + PREFIX))
            .max(1);
        (frames as u64, bytes as u64)
    }

    /// Checks that the settings hold together; the Hub, the mock cluster and the cluster refuse
    /// a configuration that does not, with [`Error::Config`] saying which setting and why.
    ///
    /// - `max_frame` fits the 4-byte length prefix, and is at least 256 bytes;
    /// - `queue_bytes` and `once_bytes` hold at least one maximum-size frame;
    /// - every count is at least 1;
    /// - every duration is at most [`MAX_DURATION`] (100 years), and deadlines are not zero.
    pub fn validate(&self) -> Result<(), Error> {
        let invalid = |reason: String| Err(Error::Config { reason });
        let max_prefix = u32::MAX as usize;
        if self.max_frame > max_prefix {
            return invalid(format!(
                "max_frame {} is over {max_prefix}, the most a 4-byte length can say",
                self.max_frame
            ));
        }
        if self.max_frame < MIN_FRAME {
            return invalid(format!(
                "max_frame {} is under {MIN_FRAME} bytes, too small for an envelope",
                self.max_frame
            ));
        }
        // A frame's size on the wire: its length prefix too.
        for (name, bytes, largest) in [
            (
                "queue_bytes",
                self.queue_bytes,
                self.max_frame.saturating_add(PREFIX),
            ),
            ("once_bytes", self.once_bytes, self.max_frame),
        ] {
            if bytes < largest {
                return invalid(format!(
                    "{name} {bytes} is under max_frame {}: a maximum-size frame would not fit",
                    self.max_frame
                ));
            }
        }
        for (name, count) in [
            ("queue_frames", self.queue_frames),
            ("broadcast_window", self.broadcast_window),
            ("max_handlers", self.max_handlers),
            ("max_calls", self.max_calls),
            ("max_events", self.max_events),
            ("once_keys", self.once_keys),
        ] {
            if count == 0 {
                return invalid(format!("{name} is 0: it must be at least 1"));
            }
        }
        for (name, duration, may_be_zero) in [
            ("request_timeout", self.request_timeout, false),
            ("stall_timeout", self.stall_timeout, false),
            ("handshake_timeout", self.handshake_timeout, false),
            ("busy_poll", self.busy_poll, true),
        ] {
            if duration > MAX_DURATION {
                return invalid(format!(
                    "{name} {duration:?} is over {MAX_DURATION:?} (100 years)"
                ));
            }
            if duration.is_zero() && !may_be_zero {
                return invalid(format!("{name} is zero"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_hold_together() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn settings_that_cannot_work_are_refused_with_their_name() {
        let cases = [
            (Config::default().max_frame(usize::MAX), "max_frame"),
            (Config::default().max_frame(1 << 32), "max_frame"),
            (Config::default().max_frame(10), "max_frame"),
            (Config::default().queue_bytes(1024), "queue_bytes"),
            (Config::default().once_bytes(0), "once_bytes"),
            (Config::default().queue_frames(0), "queue_frames"),
            (Config::default().max_handlers(0), "max_handlers"),
            (Config::default().max_calls(0), "max_calls"),
            (Config::default().max_events(0), "max_events"),
            (Config::default().once_keys(0), "once_keys"),
            (
                Config::default().request_timeout(Duration::MAX),
                "request_timeout",
            ),
            (
                Config::default().stall_timeout(Duration::ZERO),
                "stall_timeout",
            ),
            (
                Config::default().handshake_timeout(Duration::MAX),
                "handshake_timeout",
            ),
            (Config::default().busy_poll(Duration::MAX), "busy_poll"),
        ];
        for (config, name) in cases {
            let err = config.validate().unwrap_err();
            assert!(matches!(err, Error::Config { .. }), "{err}");
            assert!(err.to_string().contains(name), "{name}: {err}");
        }
        // The largest frame a 4-byte prefix can announce is fine, with queues to match.
        let max = u32::MAX as usize;
        Config::default()
            .max_frame(max)
            .queue_bytes(max + 4)
            .once_bytes(max)
            .validate()
            .unwrap();
        Config::default()
            .busy_poll(Duration::ZERO)
            .validate()
            .unwrap();
    }
}
