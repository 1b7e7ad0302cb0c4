//! The calls a Messenger waits on, by id: one answer for most, many for a `map`.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::task::Poll;

use rustc_hash::FxHashMap as HashMap;
use tokio::sync::oneshot;

use crate::wire::Envelope;

pub(super) enum Waiter {
    One(oneshot::Sender<Envelope>),
    Many(Answers),
}

/// The answers to a `map` as they come, kept in the table itself: a channel, or even a shared
/// list, allocated per call cost more than the rest of the call's bookkeeping.
#[derive(Default)]
pub(super) struct Answers {
    list: Vec<Envelope>,
    /// The caller's waker while it waits.
    waker: Option<std::task::Waker>,
}

impl Drop for Answers {
    /// Forgotten (the connection closed): the waiting caller learns no more answers can come.
    fn drop(&mut self) {
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }
}

#[derive(Default)]
pub(super) struct Calls {
    pending: Mutex<HashMap<u64, Waiter>>,
    next_id: AtomicU64,
    /// How many calls wait: read without the lock, to bound them.
    count: AtomicUsize,
}

impl Calls {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Waiter>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new call's id, waiting with `waiter`.
    pub fn begin(&self, waiter: Waiter) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let mut pending = self.lock();
        pending.insert(id, waiter);
        self.count.store(pending.len(), Ordering::Relaxed);
        id
    }

    /// Forgets call `id`.
    pub fn end(&self, id: u64) {
        let mut pending = self.lock();
        pending.remove(&id);
        self.count.store(pending.len(), Ordering::Relaxed);
    }

    /// Forgets every call: their callers learn the connection is closed.
    pub fn clear(&self) {
        let pending = std::mem::take(&mut *self.lock());
        self.count.store(0, Ordering::Relaxed);
        drop(pending);
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Hands an answer to its call; `false` if no call waits for it (one that gave up).
    pub fn answer(&self, env: Envelope) -> bool {
        let mut pending = self.lock();
        match pending.get_mut(&env.id) {
            Some(Waiter::Many(answers)) => {
                answers.list.push(env);
                let waker = answers.waker.take();
                drop(pending);
                if let Some(waker) = waker {
                    waker.wake();
                }
                true
            }
            Some(Waiter::One(_)) => {
                if let Some(Waiter::One(tx)) = pending.remove(&env.id) {
                    self.count.store(pending.len(), Ordering::Relaxed);
                    let _ = tx.send(env);
                }
                true
            }
            None => false,
        }
    }

    /// The answers to `map` call `id` that came since the last look; empty once no more can
    /// come (the connection closed).
    pub async fn answers(&self, id: u64) -> Vec<Envelope> {
        std::future::poll_fn(|cx| {
            let mut pending = self.lock();
            let Some(Waiter::Many(answers)) = pending.get_mut(&id) else {
                return Poll::Ready(Vec::new());
            };
            if answers.list.is_empty() {
                answers.waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
            answers.waker = None;
            Poll::Ready(std::mem::take(&mut answers.list))
        })
        .await
    }
}
