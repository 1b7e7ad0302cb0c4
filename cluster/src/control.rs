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
