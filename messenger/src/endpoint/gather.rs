//! The Messenger's `map` and `map_each`: one request to every Ready worker, its answers
//! gathered by the state machine in `map.rs`, this end's own share run here.

use std::sync::Arc;

use bytes::Bytes;
use tokio::time::Instant;

use super::calls::within;
use super::map::{MapCall, Step};
use super::pending::{Answers, Waiter};
use super::run::Started;
use super::Messenger;
use crate::payload::decode_answer;
use crate::stats::CallKind;
use crate::wire::{Envelope, Kind, Target};
use crate::{Error, Event, Peer, Result};

impl Messenger {
    /// Runs `event` on every Ready worker at the time of the call (its first handler) and
    /// returns the replies in slot order. Fails with the first worker's error, if any: use
    /// [`map_each`](Messenger::map_each) to keep the others' results.
    ///
    /// "At the time of the call" is when the Hub routes it. A calling worker that is Ready runs
    /// its own share at once, from the Ready set it was last told of; if it left the set while
    /// its call was on the way (the Hub tells a worker it left, so only then), its share has
    /// run but is left out of the result.
    pub async fn map<E: Event>(&self, event: E) -> Result<Vec<E::Reply>> {
        let started = Instant::now();
        let replies = match self.gather(event).await {
            Ok((workers, results)) => self
                .per_worker::<E>(&workers, results)
                .map(|(_, result)| result)
                .collect(),
            Err(err) => Err(err),
        };
        self.counted(CallKind::Map, started, replies)
    }

    /// Like [`map`](Messenger::map), but every worker's own result, with its slot: a worker that
    /// has no handler, dies or does not answer in time fails its entry alone. Across hosts a
    /// slot names a worker on its own host only: [`map_peers`](Messenger::map_peers) says which.
    pub async fn map_each<E: Event>(&self, event: E) -> Result<Vec<(u32, Result<E::Reply>)>> {
        let entries = self.map_peers(event).await?;
        let slot = |peer: Peer| match peer {
            Peer::Worker(id)
            | Peer::Remote {
                worker: Some(id), ..
            } => id.slot,
            Peer::Master | Peer::Remote { worker: None, .. } => 0,
        };
        Ok(entries.into_iter().map(|(p, r)| (slot(p), r)).collect())
    }

    /// Like [`map_each`](Messenger::map_each), with each worker named in full: this host's as
    /// [`Peer::Worker`], another host's as [`Peer::Remote`]. In a cluster joined over NATS the
    /// entries come host by host (this host's first, then the others' in the order of their
    /// names), each host's in slot order.
    pub async fn map_peers<E: Event>(&self, event: E) -> Result<Vec<(Peer, Result<E::Reply>)>> {
        let started = Instant::now();
        let gathered = self.gather(event).await;
        let entries = gathered
            .map(|(workers, results)| self.per_worker::<E>(&workers, results).collect::<Vec<_>>());
        // A worker's failed entry is not the call's: the call failed only if none came back.
        self.counted(CallKind::Map, started, entries)
    }

    /// A `map`'s result for each worker asked, with its slot: an answer that never came is
    /// [`Error::Closed`] once the connection ended, else a timeout.
    fn per_worker<'a, E: Event>(
        &'a self,
        workers: &'a [Peer],
        results: Vec<Option<Result<E::Reply>>>,
    ) -> impl Iterator<Item = (Peer, Result<E::Reply>)> + 'a {
        let closed = self.shared.closed.is_cancelled();
        workers.iter().zip(results).map(move |(peer, result)| {
            let result = result.unwrap_or_else(|| {
                Err(if closed {
                    Error::Closed
                } else {
                    self.timed_out(E::NAME, Some(*peer))
                })
            });
            (*peer, result)
        })
    }

    /// Runs a `map`: who was asked, in slot order, and each one's result if it came.
    #[allow(clippy::type_complexity)]
    async fn gather<E: Event>(
        &self,
        event: E,
    ) -> Result<(Arc<[Peer]>, Vec<Option<Result<E::Reply>>>)> {
        let me = self.shared.peer;
        // Guess who answers from the Ready set last listed: if the Hub's is the same it sends
        // no list, and this end runs its own share at once. Only when an answer is to come,
        // since the first frame for the call is what tells a right guess from a wrong one.
        let handles = self.shared.handlers.handles(E::NAME.as_bytes());
        let guess = self.shared.ready_set().and_then(|set| {
            let run_here = handles
                && me
                    .worker()
                    .is_some_and(|id| set.workers.contains(&Peer::Worker(id)));
            (set.workers.len() > usize::from(run_here)).then_some((set, run_here))
        });
        let (epoch, run_here) = guess
            .as_ref()
            .map_or((0, false), |(set, run_here)| (set.epoch, *run_here));
        let guess = guess.map(|(set, run_here)| (set.workers, run_here));
        let to = Target::All { epoch, run_here };
        let env = self.envelope::<E>(Kind::Request, to, Bytes::new(), &event)?;
        drop(event);
        // One timer for the whole call, however many answers it waits for.
        let deadline = tokio::time::sleep(self.timeout);
        tokio::pin!(deadline);
        let call = self.begin(Waiter::Many(Answers::default()));
        let mut map = MapCall::<E::Reply>::new(me, guess, env.body.clone());
        within(
            deadline.as_mut(),
            self.shared.link.send(Envelope { id: call.id, ..env }),
        )
        .await
        .ok_or_else(|| self.timed_out(E::NAME, None))??;
        loop {
            match map.next() {
                Step::RunOwnShare(body) => {
                    // Out of time, its entry fails; the answers already in are still taken
                    // (the wait favours them).
                    let answer = match self.shared.start(&self.request_here::<E>(to, body)) {
                        Started::Now(answer) => Some(answer),
                        Started::Later(answer) => within(deadline.as_mut(), answer).await,
                    };
                    map.own_share(answer.map(|a| decode_answer::<E::Reply>(E::NAME, &a)));
                }
                Step::Wait => {
                    match within(deadline.as_mut(), self.shared.calls.answers(call.id)).await {
                        Some(answers) if !answers.is_empty() => map.answers(E::NAME, answers)?,
                        // Closed (no more answers can come) or out of time.
                        _ => break,
                    }
                }
                Step::Done => break,
            }
        }
        call.finish();
        map.finish(self.shared.closed.is_cancelled(), || {
            self.timed_out(E::NAME, None)
        })
    }
}
