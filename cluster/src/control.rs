//! The cluster's own events between master and workers, named `multiprocess.*` on the wire.

use messenger::Event;
use serde::{Deserialize, Serialize};

/// Master -> worker: stop accepting, finish in-flight work, exit.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Drain;

impl Event for Drain {
    const NAME: &'static str = "multiprocess.drain";
    type Reply = ();
}

/// Worker -> master: replace me (new first), I am not well.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Unhealthy {
    pub reason: String,
}

impl Unhealthy {
    /// The most of a reason the master keeps and logs: a worker chooses it, up to a frame.
    pub const REASON_MAX: usize = 1024;

    /// A report with `reason` cut to [`REASON_MAX`](Unhealthy::REASON_MAX) bytes.
    pub fn new(reason: String) -> Unhealthy {
        Unhealthy {
            reason: clip(reason, Self::REASON_MAX),
        }
    }
}

/// `text` cut to at most `max` bytes (`max` at least 3), at a character boundary, marked with
/// `…` when cut.
pub(crate) fn clip(mut text: String, max: usize) -> String {
    debug_assert!(max >= '…'.len_utf8());
    if text.len() > max {
        let mut end = max.saturating_sub('…'.len_utf8());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

impl Event for Unhealthy {
    const NAME: &'static str = "multiprocess.unhealthy";
    type Reply = ();
}

/// Worker -> master: roll every worker; the reply says whether the rollout succeeded.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Reload;

impl Event for Reload {
    const NAME: &'static str = "multiprocess.reload";
    type Reply = Result<(), String>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_reason_is_cut_at_a_character_boundary() {
        assert_eq!(clip("short".into(), 8), "short");
        assert_eq!(clip("exactly8".into(), 8), "exactly8");
        assert_eq!(clip("123456789".into(), 8), "12345…");
        // 'é' is two bytes: never cut in half.
        assert_eq!(clip("éééé".into(), 6), "é…");
        let long = Unhealthy::new("x".repeat(1 << 20)).reason;
        assert_eq!(long.len(), Unhealthy::REASON_MAX);
        assert!(long.ends_with('…'));
    }
}
