//! Who is Ready: a worker's request to be, the master's answer, a drain, and the news to a
//! worker that leaves the set.

use bytes::Bytes;

use super::{ready_reply, refusal, State};
use crate::hub::members::Admission;
use crate::hub::HubEvent;
use crate::wire::{Envelope, Members as MemberList};
use crate::{Error, Peer, WorkerId};

impl State {
    pub(super) fn ready(&mut self, env: Envelope) {
        let Peer::Worker(id) = env.from else {
            let error = Error::Forbidden {
                reason: "only a worker can be Ready".into(),
            };
            return self.fail(env.from, env.id, Peer::Master, env.event, &error);
        };
        if self.members.is_ready(id) {
            return self.tell(env.from, ready_reply(env.id));
        }
        let Some(conn) = self.conns.get_mut(&env.from) else {
            return;
        };
        // The latest request is the one answered; an earlier one still waiting is refused.
        if let Some(earlier) = conn.ready_call.replace(env.id) {
            let error = Error::Forbidden {
                reason: "asked to be Ready again before the first answer".into(),
            };
            self.fail(env.from, earlier, Peer::Master, Bytes::new(), &error);
        }
        match self.admission {
            Admission::Supervised => self.emit(HubEvent::ReadyAsked(id)),
            Admission::Auto => {
                if self.admit(id).is_err() {
                    self.refuse(id, refusal(id));
                }
            }
        }
    }

    /// Makes `id` its slot's Ready worker (see `members.rs`) and answers its request. `Err` if
    /// it is not connected, or the rule forbids it.
    pub fn admit(&mut self, id: WorkerId) -> Result<(), String> {
        let peer = Peer::Worker(id);
        let retired = match self.conns.get(&peer) {
            None => return Err(format!("worker {id} is not connected")),
            Some(conn) => conn.retired,
        };
        if retired || !self.members.may_be_ready(id) {
            return Err(refusal(id));
        }
        if let Some(old) = self.members.admit(id) {
            if let Some(conn) = self.conns.get_mut(&Peer::Worker(old)) {
                conn.retired = true;
            }
            self.tell_ready_set(old);
        }
        self.emit(HubEvent::Ready(id));
        if let Some(call) = self.conns.get_mut(&peer).and_then(|c| c.ready_call.take()) {
            self.tell(peer, ready_reply(call));
        }
        Ok(())
    }

    /// Answers `id`'s request to be Ready with a refusal.
    pub fn refuse(&mut self, id: WorkerId, reason: String) {
        let peer = Peer::Worker(id);
        if let Some(call) = self.conns.get_mut(&peer).and_then(|c| c.ready_call.take()) {
            let error = Error::Forbidden { reason };
            self.fail(
                peer,
                call,
                Peer::Master,
                Bytes::from_static(b"ready"),
                &error,
            );
        }
    }

    /// `id` gets no new messages, and may never be Ready again; what it owes still reaches its
    /// callers.
    pub fn drain(&mut self, id: WorkerId) {
        let peer = Peer::Worker(id);
        if let Some(conn) = self.conns.get_mut(&peer) {
            conn.retired = true;
        }
        self.refuse(id, "it is draining".into());
        if self.members.retire(id) {
            self.tell_ready_set(id);
        }
        self.settle();
    }

    /// Tells `left` (a worker that has just left the Ready set but stays connected) the set as
    /// it now is, unasked: its next `map` then does not run its own share on the old list.
    pub(super) fn tell_ready_set(&mut self, id: WorkerId) {
        let list = MemberList {
            workers: self.members.workers().map(Peer::Worker).collect(),
            run_here: false,
            epoch: self.members.epoch(),
        };
        if let Some(conn) = self.conns.get_mut(&Peer::Worker(id)) {
            conn.out.control(list.frame(0));
        }
    }
}
