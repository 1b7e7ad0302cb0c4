//! The mock transport: a whole cluster's messaging in one process, for unit tests.
//!
//! [`MockCluster`] connects N worker [`Messenger`]s and the master's to a real [`Hub`] over
//! in-memory pipes that carry the real frames. It replaces the sockets, not the rules: the same
//! Hub, codec and Messenger code run in your tests and in production.
//!
//! ```
//! use messenger::testing::MockCluster;
//! use messenger::Event;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize, Event)]
//! #[event(reply = u32)]
//! struct Slot;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), messenger::Error> {
//! let cluster = MockCluster::new(3).await?;
//! for (slot, worker) in cluster.workers().iter().enumerate() {
//!     worker.on(move |_: Slot| async move { slot as u32 });
//! }
//! cluster.ready().await?;
//!
//! assert_eq!(cluster.worker(0).map(Slot).await?, vec![0, 1, 2]);
//! assert!(cluster.master().consume(Slot).await? < 3);
//! # Ok(())
//! # }
//! ```

use crate::{Config, Messenger, Result, WorkerId};

/// The Hub a [`MockCluster`] runs, and what it tells its subscribers: for tests that watch
/// workers come and go, or hold one up.
pub use crate::hub::{Hub, HubEvent, PeerState};

/// How many bytes each in-memory pipe buffers per direction.
const PIPE_BYTES: usize = 256 * 1024;

/// A Hub, its master Messenger and N worker Messengers, all in this process.
///
/// Create it inside a tokio runtime (`#[tokio::test]`).
pub struct MockCluster {
    hub: Hub,
    workers: Vec<Messenger>,
}

impl MockCluster {
    /// `workers` workers in slots `0..workers`, generation 1, connected but not Ready yet:
    /// register their handlers, then call [`ready`](MockCluster::ready).
    pub async fn new(workers: u32) -> Result<MockCluster> {
        Self::with_config(workers, Config::default()).await
    }

    /// Like [`new`](MockCluster::new), with `config` for the Hub and every Messenger.
    pub async fn with_config(workers: u32, config: Config) -> Result<MockCluster> {
        let mut cluster = MockCluster {
            hub: Hub::new(config)?,
            workers: Vec::new(),
        };
        for slot in 0..workers {
            let worker = cluster.connect(WorkerId::new(slot, 1)).await?;
            cluster.workers.push(worker);
        }
        Ok(cluster)
    }

    /// The Hub: its events, states and master-only calls.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// The master's Messenger.
    pub fn master(&self) -> Messenger {
        self.hub.messenger()
    }

    /// The worker Messenger made for `slot` by [`new`](MockCluster::new).
    ///
    /// # Panics
    /// If there is no such slot (a bug in the test).
    pub fn worker(&self, slot: u32) -> &Messenger {
        &self.workers[slot as usize]
    }

    /// The worker Messengers made by [`new`](MockCluster::new), in slot order.
    pub fn workers(&self) -> &[Messenger] {
        &self.workers
    }

    /// Makes every worker of [`workers`](MockCluster::workers) Ready, in slot order.
    pub async fn ready(&self) -> Result<()> {
        for worker in &self.workers {
            worker.ready().await?;
        }
        Ok(())
    }

    /// Connects one more worker as `id` (a replacement in a slot, say) and returns its
    /// Messenger, not Ready yet.
    pub async fn connect(&self, id: WorkerId) -> Result<Messenger> {
        let (hub_end, worker_end) = tokio::io::duplex(PIPE_BYTES);
        self.hub.attach(id, hub_end);
        Messenger::connect(worker_end, self.hub.config().clone()).await
    }
}
