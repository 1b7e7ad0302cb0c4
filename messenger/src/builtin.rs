//! The events every Messenger knows without being told: what the Hub and the Messenger both
//! reach, below either of them.

use crate::Event;

/// The heartbeat: every Messenger answers it, without announcing it.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct Ping;

impl Event for Ping {
    const NAME: &'static str = "multiprocess.ping";
    type Reply = ();
}
