//! The NATS subjects of a cluster `C`, all under `multiprocess.C.`: `members` (announcements),
//! `broadcast`, `host.<id>` (calls to a host), `answers.<caller's host>.<callee's host>.<batch>`
//! (their answers), `acks.<id>` (the acknowledgements of a host's broadcasts). A host's id is
//! 16 hex digits.

use crate::hub::HostId;

/// The subjects of a cluster.
pub(super) struct Subjects {
    pub members: String,
    pub broadcast: String,
    prefix: String,
    acks: String,
    answers: String,
}

impl Subjects {
    pub fn of(cluster: &str) -> Subjects {
        Subjects {
            members: format!("multiprocess.{cluster}.members"),
            broadcast: format!("multiprocess.{cluster}.broadcast"),
            prefix: format!("multiprocess.{cluster}.host."),
            acks: format!("multiprocess.{cluster}.acks."),
            answers: format!("multiprocess.{cluster}.answers."),
        }
    }

    /// Where `host`'s answers to the calls of `me` in message `batch` go.
    pub fn answers(&self, me: HostId, host: HostId, batch: u64) -> String {
        format!("{}{me}.{host}.{batch}", self.answers)
    }

    /// Every answer to this host's calls.
    pub fn answers_to(&self, me: HostId) -> String {
        format!("{}{me}.>", self.answers)
    }

    /// What an answers subject names: the caller's host, the callee's, the batch.
    pub fn answer_parts(&self, subject: &str) -> Option<(HostId, HostId, u64)> {
        let mut parts = subject.strip_prefix(self.answers.as_str())?.split('.');
        let mut host = || u64::from_str_radix(parts.next()?, 16).ok().map(HostId);
        let (caller, callee) = (host()?, host()?);
        let batch = parts.next()?.parse().ok()?;
        parts.next().is_none().then_some((caller, callee, batch))
    }

    /// Where calls to `host` go.
    pub fn host(&self, host: HostId) -> String {
        format!("{}{host}", self.prefix)
    }

    /// Where the acknowledgements of `host`'s broadcasts go (see `window.rs`).
    pub fn acks(&self, host: HostId) -> String {
        format!("{}{host}", self.acks)
    }
}
