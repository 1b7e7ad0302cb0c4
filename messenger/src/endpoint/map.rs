//! A `map` call as a small state machine: who it asks, the answers as they come, and this end's
//! own share.
//!
//! The caller guesses who answers from the Ready set it was last told of; if the Hub's set is
//! another, the Hub's member list comes first and corrects the guess. A Ready caller runs its
//! own share itself (when the list says so), and the call is done once every worker asked has
//! answered, or at the deadline.

use std::sync::Arc;

use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::payload::decode_answer;
use crate::wire::{Envelope, Kind, Members};
use crate::{Error, Peer, Result};

/// A `map`'s results as its answers come, against who was asked.
struct Gathering<R> {
    workers: Arc<[Peer]>,
    /// This end is one of `workers` and runs its own share.
    run_here: bool,
    results: Vec<Option<Result<R>>>,
    missing: usize,
}

impl<R> Gathering<R> {
    fn new(workers: Arc<[Peer]>, run_here: bool) -> Gathering<R> {
        Gathering {
            results: workers.iter().map(|_| None).collect(),
            missing: workers.len(),
            workers,
            run_here,
        }
    }

    fn record(&mut self, from: Peer, result: Result<R>) {
        let Some(index) = self.workers.iter().position(|peer| *peer == from) else {
            tracing::warn!(from = %from, "a map answer from a worker that was not asked");
            return;
        };
        if self.results[index].is_none() {
            self.results[index] = Some(result);
            self.missing -= 1;
        }
    }

    /// Switches to the list the Hub sent (the Ready set changed since this call's guess),
    /// keeping this end's own result if it is still asked to run its share.
    fn adopt(&mut self, list: Members, me: Peer) {
        let mut next = Gathering::new(list.workers.into(), list.run_here);
        if next.run_here {
            let own = self.workers.iter().position(|peer| *peer == me);
            if let Some(result) = own.and_then(|index| self.results[index].take()) {
                next.record(me, result);
            }
        }
        *self = next;
    }
}

/// What the call needs next.
pub(super) enum Step {
    /// Run this end's own share: the event's bytes, as they went to the Hub.
    RunOwnShare(Bytes),
    /// Wait for answers.
    Wait,
    /// Every worker asked has answered.
    Done,
}

pub(super) struct MapCall<R> {
    me: Peer,
    /// Who is asked, once known or guessed.
    gathering: Option<Gathering<R>>,
    /// This end's own share (the event's bytes), until it is run: taken only to be run, since
    /// a corrected list may yet ask for it.
    own: Option<Bytes>,
    /// Whether any frame for the call came, confirming or correcting the guess.
    heard: bool,
}

impl<R: DeserializeOwned> MapCall<R> {
    /// A call from `me` for the event `body`, guessing `guess` (the workers, and whether `me`
    /// runs its own share) if it has one.
    pub fn new(me: Peer, guess: Option<(Arc<[Peer]>, bool)>, body: Bytes) -> Self {
        MapCall {
            me,
            gathering: guess.map(|(workers, run_here)| Gathering::new(workers, run_here)),
            own: Some(body),
            heard: false,
        }
    }

    pub fn next(&mut self) -> Step {
        let Some(gathering) = &self.gathering else {
            return Step::Wait;
        };
        if gathering.run_here {
            if let Some(request) = self.own.take() {
                return Step::RunOwnShare(request);
            }
        }
        if gathering.missing == 0 {
            Step::Done
        } else {
            Step::Wait
        }
    }

    /// This end's own share ended: its result, or `None` out of time (its entry then fails
    /// as the others' do).
    pub fn own_share(&mut self, result: Option<Result<R>>) {
        if let (Some(gathering), Some(result)) = (&mut self.gathering, result) {
            gathering.record(self.me, result);
        }
    }

    /// Frames for the call: a member list, answers, or the Hub's refusal of the whole call.
    pub fn answers(&mut self, event: &str, answers: Vec<Envelope>) -> Result<()> {
        self.heard = true;
        for answer in answers {
            match (&mut self.gathering, answer.kind) {
                // The Hub refused the call (a worker's failure names the worker).
                (_, Kind::Failure) if answer.from == Peer::Master => return Err(answer.error()),
                (Some(gathering), Kind::Members) => {
                    gathering.adopt(Members::from_bytes(&answer.body)?, self.me)
                }
                (None, Kind::Members) => {
                    let list = Members::from_bytes(&answer.body)?;
                    self.gathering = Some(Gathering::new(list.workers.into(), list.run_here));
                }
                (Some(gathering), _) => {
                    gathering.record(answer.from, decode_answer::<R>(event, &answer))
                }
                (None, _) => return Err(answer.error()),
            }
        }
        Ok(())
    }

    /// Who was asked, in slot order, and each one's result if it came. `closed`: the
    /// connection ended; `timed_out` makes the error of a call out of time.
    #[allow(clippy::type_complexity)]
    pub fn finish(
        self,
        closed: bool,
        timed_out: impl FnOnce() -> Error,
    ) -> Result<(Arc<[Peer]>, Vec<Option<Result<R>>>)> {
        match self.gathering {
            // Out of time with an unconfirmed guess: the entries of the set last listed fail.
            Some(gathering) if self.heard || !closed => Ok((gathering.workers, gathering.results)),
            // The connection ended before the Hub said anything: as without a guess.
            _ if closed => Err(Error::Closed),
            _ => Err(timed_out()),
        }
    }
}
