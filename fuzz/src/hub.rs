//! The Hub fed arbitrary frame sequences by a fake worker, beside a good one.
//!
//! Per input: a real Hub (a `MockCluster`'s) in a current-thread runtime whose clock is paused,
//! so timers fire as soon as nothing else can run (deadlines, the handshake timeout and the
//! stall watchdog act at no cost in real time); a good worker that handles `echo` and is
//! Ready; the master handling `echo` too; and a fake worker doing what the input says
//! (`actions.rs`), whose received frames are checked (`fake.rs`). Then the fake goes away,
//! and:
//! - the Hub forgets it;
//! - every call made meanwhile has ended (by its deadline at the latest), and none got another
//!   call's answer;
//! - the good worker was never closed, what the Hub holds for it drains, and it still serves:
//!   the master's `consume` and `map` of its event return its replies;
//! - no task panicked (a panic in a task is caught by tokio, so it is counted here).

use std::cell::Cell;
use std::sync::Once;
use std::time::Duration;

use messenger::testing::MockCluster;
use messenger::{Config, Error, Event, Hub, HubEvent, Messenger, PeerState, WorkerId};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::{sleep, timeout};

use super::actions::{actions, Action, Call, HelloKind, FAKE_SLOT};
use super::fake::Fake;
use super::input::Input;

/// The good worker's event: it answers with the text it is sent.
#[derive(Serialize, Deserialize, Event)]
#[event(name = "echo", reply = String)]
pub struct Echo(pub String);

/// The good worker, as `MockCluster` makes it.
const GOOD: WorkerId = WorkerId::new(0, 1);

/// How long (virtual time) the Hub has to settle, and calls to end: far past every deadline.
const PATIENCE: Duration = Duration::from_secs(60);

/// Runs one input: what the fuzzer runs.
pub fn hub(data: &[u8]) {
    let mut input = Input::new(data);
    let config = config_from(&mut input);
    let (hello, actions) = actions(&mut input);
    // `FUZZ_DEBUG=1` shows what an input does (to read a failing one).
    if std::env::var_os("FUZZ_DEBUG").is_some() {
        eprintln!("{config:?}\n{hello:?}\n{actions:#?}");
    }
    let panics = panics_here();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(run(config, hello, actions));
    drop(runtime);
    assert_eq!(panics_here(), panics, "a task panicked (see above)");
}

/// Limits small enough for the input to reach them: frames, queues, calls, names, handlers.
/// Always a valid configuration.
fn config_from(input: &mut Input) -> Config {
    let max_frame = 256 + input.below(4096);
    let config = Config::default()
        .request_timeout(Duration::from_secs(1))
        .stall_timeout(Duration::from_secs(2))
        .handshake_timeout(Duration::from_secs(1))
        // It polls on the real clock; nothing to gain here.
        .busy_poll(Duration::ZERO)
        .max_frame(max_frame)
        .queue_bytes(max_frame + 4 + input.below(3 * max_frame))
        .queue_frames(1 + input.below(16))
        .max_calls(1 + input.below(16))
        .max_events(1 + input.below(8))
        .max_handlers(1 + input.below(8))
        .once_keys(1 + input.below(4))
        .once_bytes(max_frame + input.below(2 * max_frame));
    // As small as the queues, to reach the backlog (read from no more input, so that saved
    // inputs replay as they were found).
    let window = config.queue_frames;
    config.broadcast_window(window)
}

async fn run(config: Config, hello: HelloKind, actions: Vec<Action>) {
    let cluster = MockCluster::with_config(1, config.clone())
        .await
        .expect("a valid configuration");
    let hub = cluster.hub().clone();
    let mut events = hub.subscribe();
    let master = cluster.master();
    let good = cluster.worker(0).clone();
    for messenger in [&master, &good] {
        messenger.on(|Echo(text)| async move { text });
    }
    good.ready().await.expect("the good worker is Ready");

    let mut fake = Fake::connect(&hub, WorkerId::new(FAKE_SLOT, 1), &hello).await;
    let mut calls = Vec::new();
    for (n, action) in actions.into_iter().enumerate() {
        match action {
            Action::Send(frame) => fake.send(&frame).await,
            Action::Garbage(bytes) => fake.write(&bytes).await,
            Action::Read(frames) => fake.read(frames).await,
            Action::Answer { failure } => fake.answer(failure).await,
            Action::Credit => fake.credit().await,
            Action::Call { by_good, call } => {
                let by = if by_good { &good } else { &master };
                let text = format!("call-{n}");
                let made = make_call(by.clone(), hub.clone(), fake.id, call, text);
                calls.push(tokio::spawn(made));
            }
            Action::Drain => hub.drain(fake.id),
            Action::Detach => hub.detach(fake.id),
            Action::Reconnect { generation, hello } => {
                let id = WorkerId::new(FAKE_SLOT, generation);
                fake = fake.reconnect(&hub, id, &hello).await;
            }
            Action::Sleep(time) => sleep(time).await,
        }
    }
    // What it was sent is checked, then it goes away.
    fake.read(usize::MAX).await;
    drop(fake);

    let forgotten = settles(|| hub.peers().iter().all(|(id, _)| *id == GOOD)).await;
    good_not_closed(&mut events);
    assert!(
        forgotten,
        "the fake worker is not forgotten: {:?}",
        hub.peers()
    );
    assert_eq!(hub.peers(), [(GOOD, PeerState::Ready)]);
    for call in calls {
        let outcome = timeout(PATIENCE, call)
            .await
            .expect("a call outlived its deadline")
            .expect("a call panicked");
        outcome.check();
    }
    // The stall watchdog has had time to act; what the Hub holds for the good worker drains.
    sleep(2 * config.stall_timeout).await;
    let drained = settles(|| hub.queued(GOOD) == Some(0)).await;
    good_not_closed(&mut events);
    assert!(
        drained,
        "what the Hub holds for the good worker does not drain: {:?} frames",
        hub.queued(GOOD)
    );
    let reply = master.consume(Echo("last".into())).await;
    assert_eq!(reply.expect("the good worker serves a consume"), "last");
    let replies = master.map(Echo("all".into())).await;
    assert_eq!(replies.expect("the good worker serves a map"), ["all"]);
}

/// Fails, saying why, if the Hub closed the good worker.
fn good_not_closed(events: &mut UnboundedReceiver<HubEvent>) {
    while let Ok(event) = events.try_recv() {
        if let HubEvent::Closed { id, reason } = event {
            assert!(id != GOOD, "the good worker was closed: {reason}");
        }
    }
}

/// Whether `done` holds within [`PATIENCE`], looking now and then.
async fn settles(done: impl Fn() -> bool) -> bool {
    let step = Duration::from_millis(50);
    for _ in 0..PATIENCE.as_millis() / step.as_millis() {
        if done() {
            return true;
        }
        sleep(step).await;
    }
    done()
}

/// A call's replies, to be checked once it ended.
struct Outcome {
    text: String,
    once: bool,
    replies: Vec<Result<String, Error>>,
}

impl Outcome {
    /// Any error may be right (the fake may time out, fail, be busy, send what does not
    /// decode...), and the fake may answer what it is asked with anything it likes; but an
    /// answer made from another call's event is another call's answer. (The fake never
    /// forges those texts; a `consume_once` gets the reply of the key's first run.)
    fn check(&self) {
        if self.once {
            return;
        }
        let from_fake = format!("fake:{}", self.text);
        for reply in self.replies.iter().flatten() {
            let echoed = reply.starts_with("call-") || reply.starts_with("fake:");
            assert!(
                !echoed || *reply == self.text || *reply == from_fake,
                "call `{}` got another call's answer: {reply:?}",
                self.text
            );
        }
    }
}

async fn make_call(by: Messenger, hub: Hub, fake: WorkerId, call: Call, text: String) -> Outcome {
    let echo = || Echo(text.clone());
    let once = matches!(call, Call::ConsumeOnce(_));
    let replies = match call {
        Call::Consume => vec![by.consume(echo()).await],
        Call::ConsumeOnce(key) => vec![by.consume_once(key, echo()).await],
        Call::Map => match by.map(echo()).await {
            Ok(replies) => replies.into_iter().map(Ok).collect(),
            Err(err) => vec![Err(err)],
        },
        Call::MapEach => match by.map_each(echo()).await {
            Ok(each) => each.into_iter().map(|(_, reply)| reply).collect(),
            Err(err) => vec![Err(err)],
        },
        Call::Request(slot) => vec![by.request(slot, echo()).await],
        Call::RequestMaster => vec![by.request_master(echo()).await],
        Call::Broadcast(len) => {
            let _ = by.broadcast(Echo("b".repeat(len))).await;
            Vec::new()
        }
        Call::Ping => {
            let _ = hub.ping(fake).await;
            Vec::new()
        }
    };
    Outcome {
        text,
        once,
        replies,
    }
}

thread_local! {
    static PANICS: Cell<usize> = const { Cell::new(0) };
}

/// How many panics this thread has seen. The tasks of a current-thread runtime run on the
/// thread that drives it, so this counts theirs, which tokio catches.
fn panics_here() -> usize {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.with(|panics| panics.set(panics.get() + 1));
            previous(info);
        }));
    });
    PANICS.with(Cell::get)
}
