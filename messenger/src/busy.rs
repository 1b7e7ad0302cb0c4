//! Busy polling: keeping a runtime awake while answers are due (see [`Config::busy_poll`]).
//!
//! [`Config::busy_poll`]: crate::Config::busy_poll

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// The state a busy-poll task shares with its owner (a Messenger).
#[derive(Default)]
pub(crate) struct BusyPoll {
    /// Shared with the task, which must not keep its owner alive while it sleeps.
    wake: Arc<Notify>,
    polling: AtomicBool,
    progress: AtomicU64,
}

impl BusyPoll {
    /// Something happened (a call started, an answer came): poll on, or start polling.
    pub(crate) fn progress(&self) {
        self.progress.fetch_add(1, Ordering::Relaxed);
        if !self.polling.load(Ordering::Relaxed) {
            self.wake.notify_one();
        }
    }
}

/// Spawns the task that keeps the runtime polling its sockets, rather than sleeping, while
/// `waiting(owner)` holds and progress keeps coming: it stops once nothing is awaited, or when
/// nothing happened for `budget`; [`BusyPoll::progress`] starts it again. Each turn yields, so
/// every other task runs between polls. Ends with its owner.
pub(crate) fn spawn<T, B, W>(owner: &Arc<T>, busy: B, waiting: W, budget: Duration)
where
    T: Send + Sync + 'static,
    B: Fn(&T) -> &BusyPoll + Send + 'static,
    W: Fn(&T) -> bool + Send + 'static,
{
    let wake = busy(owner).wake.clone();
    let owner: Weak<T> = Arc::downgrade(owner);
    tokio::spawn(async move {
        loop {
            wake.notified().await;
            let Some(mut strong) = owner.upgrade() else {
                return;
            };
            busy(&strong).polling.store(true, Ordering::Relaxed);
            let mut seen = busy(&strong).progress.load(Ordering::Relaxed);
            let mut since = Instant::now();
            loop {
                let now = busy(&strong).progress.load(Ordering::Relaxed);
                if now != seen {
                    seen = now;
                    since = Instant::now();
                }
                if !waiting(&strong) || since.elapsed() >= budget {
                    break;
                }
                drop(strong);
                // A yielded task runs again after the runtime polled its sockets without
                // waiting for them.
                tokio::task::yield_now().await;
                strong = match owner.upgrade() {
                    Some(strong) => strong,
                    None => return,
                };
            }
            busy(&strong).polling.store(false, Ordering::Relaxed);
            // Progress made while polling stopped did not wake this task: look once more.
            if busy(&strong).progress.load(Ordering::Relaxed) != seen {
                busy(&strong).progress();
            }
        }
    });
}
