//! Random sequences of events driving the state machine and a real Hub (workers are
//! Messengers over in-memory pipes), with the invariants checked after every step.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use messenger::{Config, Hub, HubEvent, Messenger, WorkerId};
use proptest::prelude::*;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::options;
use crate::supervisor::fleet::{Action, Event, Fleet, ScaleError, SlotState, Timer};

/// What the random sequences do.
#[derive(Debug, Clone)]
enum Op {
    /// A live worker (by index) asks to be Ready.
    AskReady(usize),
    /// A live worker's process exits.
    Exit(usize),
    /// A live worker's connection ends, its process still running.
    Lose(usize),
    /// A live worker is reported unhealthy (or misses its heartbeats).
    Unhealthy(usize),
    /// A scheduled deadline passes.
    Fire(usize),
    /// The next start of a process fails.
    FailNextSpawn,
    Reload,
    Stop(bool),
    /// Scale to this many slots.
    Scale(usize),
    /// A live worker is past the recycling policy.
    Recycle(usize),
    /// Time passes.
    Advance(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => any::<usize>().prop_map(Op::AskReady),
        2 => any::<usize>().prop_map(Op::Exit),
        1 => any::<usize>().prop_map(Op::Lose),
        1 => any::<usize>().prop_map(Op::Unhealthy),
        4 => any::<usize>().prop_map(Op::Fire),
        1 => Just(Op::FailNextSpawn),
        2 => Just(Op::Reload),
        1 => any::<bool>().prop_map(Op::Stop),
        2 => (0usize..6).prop_map(Op::Scale),
        2 => any::<usize>().prop_map(Op::Recycle),
        1 => (1u8..20).prop_map(Op::Advance),
    ]
}

/// The machine, a real Hub, and the worker "processes" (Messengers) the actions started.
struct World {
    fleet: Fleet,
    hub: Hub,
    hub_events: mpsc::UnboundedReceiver<HubEvent>,
    config: Config,
    now: Instant,
    /// Processes running, and their Messenger while connected.
    alive: BTreeMap<WorkerId, Option<Messenger>>,
    timers: Vec<Timer>,
    fail_next_spawn: bool,
    /// The newest generation admitted in each slot.
    admitted: BTreeMap<u32, u64>,
    events: VecDeque<Event>,
    /// The outcome of the last scaling.
    scaled: Option<Result<(), ScaleError>>,
}

impl World {
    async fn new(workers: usize) -> World {
        let config = Config::default()
            .request_timeout(Duration::from_secs(30))
            .busy_poll(Duration::ZERO);
        let (hub, hub_events) = Hub::supervised(config.clone()).unwrap();
        let mut world = World {
            fleet: Fleet::new(options(workers)),
            hub,
            hub_events,
            config,
            now: Instant::now(),
            alive: BTreeMap::new(),
            timers: Vec::new(),
            fail_next_spawn: false,
            admitted: BTreeMap::new(),
            events: VecDeque::new(),
            scaled: None,
        };
        world.feed(Event::Boot).await;
        world
    }

    /// Feeds `event`, and every event the actions cause, to the machine; checks what each
    /// step promises.
    async fn feed(&mut self, event: Event) {
        self.events.push_back(event);
        while let Some(event) = self.events.pop_front() {
            let fired_kill = match &event {
                Event::Timer(Timer::Kill(id)) => self
                    .fleet
                    .leaving()
                    .into_iter()
                    .find(|(l, killed)| l == id && !killed)
                    .map(|(id, _)| id),
                _ => None,
            };
            let actions = self.fleet.handle(self.now, event);
            if let Some(id) = fired_kill {
                assert!(
                    actions.contains(&Action::Kill {
                        id,
                        cause: format!(
                            "still running {:?} after it was told to drain",
                            Duration::from_secs(30)
                        )
                    }),
                    "a worker still there at its kill deadline is killed: {actions:?}"
                );
            }
            for action in &actions {
                if let Action::Drain { id, .. } = action {
                    assert!(
                        actions.contains(&Action::After {
                            delay: Duration::from_secs(30),
                            timer: Timer::Kill(*id)
                        }),
                        "a drained worker has a kill deadline: {actions:?}"
                    );
                }
            }
            for action in actions {
                self.act(action).await;
            }
        }
    }

    async fn act(&mut self, action: Action) {
        match action {
            Action::Spawn { id, .. } => {
                if std::mem::take(&mut self.fail_next_spawn) {
                    let error = "no such file".to_owned();
                    return self.events.push_back(Event::SpawnFailed { id, error });
                }
                let (hub_end, worker_end) = tokio::io::duplex(64 * 1024);
                self.hub.attach(id, hub_end);
                let messenger = Messenger::connect(worker_end, self.config.clone())
                    .await
                    .unwrap();
                self.alive.insert(id, Some(messenger));
                self.events.push_back(Event::Spawned { id, pid: 1 });
            }
            Action::Admit(id) => {
                let connected = self.alive.get(&id).is_some_and(Option::is_some);
                match self.hub.admit(id) {
                    Ok(()) => {
                        let newest = self.admitted.entry(id.slot).or_default();
                        assert!(
                            id.generation >= *newest,
                            "{id} admitted after generation {newest}"
                        );
                        *newest = id.generation;
                    }
                    // Only a worker gone meanwhile may not be admitted.
                    Err(why) => assert!(!connected, "the Hub refused to admit {id}: {why}"),
                }
            }
            Action::Refuse { id, reason } => self.hub.refuse(id, &reason),
            Action::Drain { id, .. } => self.hub.drain(id),
            Action::Kill { id, .. } => {
                if let Some(messenger) = self.alive.remove(&id) {
                    if let Some(messenger) = messenger {
                        messenger.close();
                    }
                    let status = "killed by SIGKILL".to_owned();
                    self.events.push_back(Event::Exited { id, status });
                }
            }
            Action::After { timer, .. } => self.timers.push(timer),
            Action::ScaleDone { result, .. } => self.scaled = Some(result),
            Action::ReloadDone { .. } | Action::CloseListeners => {}
        }
    }

    /// Lets the Hub catch up, feeding the machine what it reports, until `done` resolves.
    async fn settle<T>(&mut self, done: impl std::future::Future<Output = T>) -> T {
        tokio::pin!(done);
        let deadline = tokio::time::sleep(Duration::from_secs(60));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                out = &mut done => return out,
                () = &mut deadline => panic!("the step never completed (a Ready request unanswered?)"),
                Some(event) = self.hub_events.recv() => {
                    let event = match event {
                        HubEvent::ReadyAsked(id) => Event::ReadyAsked { id },
                        HubEvent::Closed { id, reason } => Event::Lost { id, reason },
                        _ => continue,
                    };
                    self.feed(event).await;
                }
            }
        }
    }

    fn pick(&self, i: usize) -> Option<WorkerId> {
        let ids: Vec<WorkerId> = self.alive.keys().copied().collect();
        (!ids.is_empty()).then(|| ids[i % ids.len()])
    }

    async fn step(&mut self, op: Op) {
        let ready_before = self.ready_slots();
        match op {
            Op::AskReady(i) => {
                let Some(id) = self.pick(i) else { return };
                let Some(Some(messenger)) = self.alive.get(&id).cloned() else {
                    return;
                };
                let asked = tokio::spawn(async move { messenger.ready().await });
                let _ = self.settle(asked).await;
            }
            Op::Exit(i) => {
                let Some(id) = self.pick(i) else { return };
                if let Some(Some(messenger)) = self.alive.remove(&id) {
                    messenger.close();
                }
                let status = "exited with status 101".to_owned();
                self.feed(Event::Exited { id, status }).await;
            }
            Op::Lose(i) => {
                let Some(id) = self.pick(i) else { return };
                if let Some(Some(messenger)) = self.alive.insert(id, None) {
                    messenger.close();
                    // The Hub reports the connection's end.
                    let hub = self.hub.clone();
                    self.settle(async move {
                        while hub.peers().iter().any(|(peer, _)| *peer == id) {
                            tokio::task::yield_now().await;
                        }
                    })
                    .await;
                }
            }
            Op::Unhealthy(i) => {
                let Some(id) = self.pick(i) else { return };
                let reason = "missed its heartbeats".to_owned();
                self.feed(Event::Unhealthy { id, reason }).await;
            }
            Op::Fire(i) => {
                if self.timers.is_empty() {
                    return;
                }
                let timer = self.timers.remove(i % self.timers.len());
                self.feed(Event::Timer(timer)).await;
            }
            Op::FailNextSpawn => self.fail_next_spawn = true,
            Op::Reload => {
                self.feed(Event::Reload {
                    ticket: 1,
                    asker: None,
                })
                .await
            }
            Op::Stop(graceful) => self.feed(Event::Stop { graceful }).await,
            Op::Recycle(i) => {
                let Some(id) = self.pick(i) else { return };
                let reason = "ran too long".to_owned();
                self.feed(Event::Recycle { id, reason }).await;
            }
            Op::Scale(workers) => {
                let before = self.fleet.workers();
                self.feed(Event::Scale { ticket: 1, workers }).await;
                match self.scaled.take().expect("a scaling is always answered") {
                    Ok(()) => assert_eq!(self.fleet.workers(), workers),
                    Err(ScaleError::OutOfRange { .. }) => assert_eq!(workers, 0),
                    Err(ScaleError::Reloading | ScaleError::Stopping) => {
                        assert_eq!(self.fleet.workers(), before)
                    }
                }
            }
            Op::Advance(seconds) => self.now += Duration::from_secs(seconds.into()),
        }
        // Let the Hub route what the step sent (drains, admissions) before looking.
        let hub = self.hub.clone();
        self.settle(tokio::task::yield_now()).await;
        drop(hub);
        self.check(ready_before, &op_name(&op));
    }

    /// The slots with a Ready worker, as the machine sees them.
    fn ready_slots(&self) -> BTreeSet<u32> {
        self.fleet
            .slots()
            .iter()
            .enumerate()
            .filter(|(_, s)| Fleet::serving(s).is_some())
            .map(|(i, _)| i as u32)
            .collect()
    }

    fn check(&self, ready_before: BTreeSet<u32>, op: &str) {
        // One truth: the Hub's Ready set is the machine's serving workers, one per slot.
        let serving: Vec<WorkerId> = self
            .fleet
            .slots()
            .iter()
            .filter_map(Fleet::serving)
            .collect();
        let hub_ready: Vec<WorkerId> = self
            .hub
            .ready_set()
            .into_iter()
            .filter(|id| self.alive.get(id).is_some_and(Option::is_some))
            .collect();
        let serving_connected: Vec<WorkerId> = serving
            .iter()
            .copied()
            .filter(|id| self.alive.get(id).is_some_and(Option::is_some))
            .collect();
        assert_eq!(
            hub_ready, serving_connected,
            "after {op}: the Hub and the machine disagree"
        );
        for (slot, s) in self.fleet.slots().iter().enumerate() {
            // The Ready worker is the newest the machine admitted in its slot.
            if let Some(id) = Fleet::serving(s) {
                assert_eq!(
                    Some(&id.generation),
                    self.admitted.get(&(slot as u32)),
                    "after {op}"
                );
            }
            // A slot is empty only while it backs off (its restart is due), or when the
            // cluster stops.
            if let SlotState::Empty { at } = s.state {
                let restart_due = self
                    .timers
                    .iter()
                    .any(|t| matches!(t, Timer::Restart { slot: s, .. } if *s as usize == slot));
                assert!(
                    (at.is_some() && restart_due) || self.fleet.stopping(),
                    "after {op}: slot {slot} is empty and nothing will start it"
                );
            }
        }
        // Asking to be Ready, a reload or a recycling never takes a Ready worker away.
        if op == "AskReady" || op == "Reload" || op == "Recycle" {
            let after = self.ready_slots();
            assert!(
                after.is_superset(&ready_before),
                "after {op}: Ready slots {ready_before:?} became {after:?}"
            );
        }
    }
}

fn op_name(op: &Op) -> String {
    let name = format!("{op:?}");
    name.split('(').next().unwrap_or_default().to_owned()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Random sequences of what can happen to a cluster, on the machine and a real Hub.
    #[test]
    fn the_machine_and_the_hub_agree_whatever_happens(
        workers in 1usize..4,
        ops in prop::collection::vec(op(), 1..60),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let mut world = World::new(workers).await;
            for op in ops {
                world.step(op).await;
            }
            // Whatever happened, a stop ends with every worker gone once they exit.
            world.feed(Event::Stop { graceful: false }).await;
            let ids: Vec<WorkerId> = world.alive.keys().copied().collect();
            for id in ids {
                world.alive.remove(&id);
                let status = "killed by SIGKILL".to_owned();
                world.feed(Event::Exited { id, status }).await;
            }
            for (id, _) in world.fleet.leaving() {
                let status = "killed by SIGKILL".to_owned();
                world.feed(Event::Exited { id, status }).await;
            }
            assert!(world.fleet.finished(), "leaving: {:?}", world.fleet.leaving());
        });
    }
}
