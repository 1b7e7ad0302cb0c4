//! Short cuts are optimizations, never semantics: a call a process runs itself (a `consume` or
//! a `request` the Hub gives back to its caller, a worker's own share of a `map`) gives exactly
//! the answer the wire path gives, whatever goes wrong: a reply over the frame limit, a reply
//! that does not encode, an event that does not decode, a panic, a deadline.

use std::time::Duration;

use messenger::testing::MockCluster;
use messenger::{Config, Error, Event};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

const MAX_FRAME: usize = 4096;

/// Replies with `n` bytes.
#[derive(Serialize, Deserialize, Event)]
#[event(name = "big", reply = serde_bytes::ByteBuf)]
struct Big(usize);

/// A reply that never encodes.
#[derive(Debug, Deserialize)]
struct Unencodable;

impl Serialize for Unencodable {
    fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("this value never encodes"))
    }
}

#[derive(Serialize, Deserialize, Event)]
#[event(name = "bad_reply", reply = Unencodable)]
struct BadReply;

/// An event that encodes but never decodes.
#[derive(Serialize, Event)]
#[event(name = "undecodable", reply = u32)]
struct Undecodable(u32);

impl<'de> Deserialize<'de> for Undecodable {
    fn deserialize<D: Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(serde::de::Error::custom("this value never decodes"))
    }
}

#[derive(Serialize, Deserialize, Event)]
#[event(name = "panics", reply = u32)]
struct Panics;

#[derive(Serialize, Deserialize, Event)]
#[event(name = "never", reply = u32)]
struct Never;

/// Answers 7 after a moment (so a call run here is not over when it starts).
#[derive(Serialize, Deserialize, Event)]
#[event(name = "slow", reply = u32)]
struct Slow;

/// Two workers; only worker 0 handles the events, so a call from worker 0 is given back to it
/// (run where it is) and a call from worker 1 goes over the wire to worker 0.
async fn cluster() -> MockCluster {
    let config = Config::default()
        .max_frame(MAX_FRAME)
        .queue_bytes(2 * MAX_FRAME)
        .once_bytes(MAX_FRAME)
        .request_timeout(Duration::from_millis(500));
    let cluster = MockCluster::with_config(2, config).await.unwrap();
    let w0 = cluster.worker(0);
    w0.on(|Big(n)| async move { serde_bytes::ByteBuf::from(vec![7u8; n]) });
    w0.on(|_: BadReply| async { Unencodable });
    w0.on(|Undecodable(n)| async move { n });
    w0.on(|_: Panics| async { panic!("boom") });
    w0.on(|_: Never| std::future::pending::<u32>());
    w0.on(|_: Slow| async {
        tokio::time::sleep(Duration::from_millis(10)).await;
        7
    });
    cluster.ready().await.unwrap();
    cluster
}

/// The error's kind and what identifies it, without the peer (who ran it differs).
fn shape(error: &Error) -> String {
    match error {
        Error::FrameTooLarge { max, .. } => format!("FrameTooLarge max {max}"),
        Error::Encode { event, detail } => format!("Encode {event} {detail}"),
        Error::Decode { event, detail } => format!("Decode {event} {detail}"),
        Error::HandlerPanicked { event, message } => format!("Panicked {event} {message}"),
        Error::Timeout { event, .. } => format!("Timeout {event}"),
        other => format!("unexpected: {other:?}"),
    }
}

/// Runs the same call from both workers, each as `request` to slot 0 and as `consume`, and as
/// a `map` (worker 0's own share against worker 1's entry of... worker 0, over the wire):
/// every way must fail the same.
async fn same_everywhere<E, F>(make: F, expected: &str)
where
    E: Event,
    E::Reply: std::fmt::Debug,
    F: Fn() -> E,
{
    let cluster = cluster().await;
    let mut shapes = Vec::new();
    for slot in [0, 1] {
        let caller = cluster.worker(slot);
        let request = caller.request(0, make()).await.unwrap_err();
        let consume = caller.consume(make()).await.unwrap_err();
        shapes.push((format!("request from {slot}"), shape(&request)));
        shapes.push((format!("consume from {slot}"), shape(&consume)));
        // Slot 0's entry of a map: run by worker 0 itself when it calls, over the wire when
        // worker 1 does.
        let entries = caller.map_each(make()).await.unwrap();
        let (_, own) = entries.into_iter().find(|(s, _)| *s == 0).unwrap();
        shapes.push((format!("map from {slot}"), shape(&own.unwrap_err())));
    }
    for (how, got) in &shapes {
        assert!(got.starts_with(expected), "{how}: {got} (all: {shapes:?})");
        assert_eq!(got, &shapes[0].1, "{how} differs: {shapes:?}");
    }
}

#[tokio::test]
async fn a_reply_over_the_frame_limit_fails_the_same_run_here_or_not() {
    same_everywhere(|| Big(2 * MAX_FRAME), "FrameTooLarge").await;
}

#[tokio::test]
async fn a_reply_that_does_not_encode_fails_the_same() {
    same_everywhere(|| BadReply, "Encode bad_reply").await;
}

#[tokio::test]
async fn an_event_that_does_not_decode_fails_the_same() {
    same_everywhere(|| Undecodable(1), "Decode undecodable").await;
}

#[tokio::test]
async fn a_panic_fails_the_same() {
    same_everywhere(|| Panics, "Panicked panics boom").await;
}

#[tokio::test]
async fn a_deadline_fails_the_same() {
    same_everywhere(|| Never, "Timeout never").await;
}

/// And what works, works the same: a reply just under the limit.
#[tokio::test]
async fn a_reply_within_the_limit_succeeds_both_ways() {
    let cluster = cluster().await;
    for slot in [0, 1] {
        let reply = cluster.worker(slot).request(0, Big(MAX_FRAME - 200)).await;
        assert_eq!(reply.unwrap().len(), MAX_FRAME - 200, "from {slot}");
    }
}

/// A deadline as far as `Duration::MAX` is no deadline, run here or not (it once overflowed
/// the clock in the short cut, and panicked).
#[tokio::test]
async fn the_longest_deadline_works_both_ways() {
    let cluster = cluster().await;
    for slot in [0, 1] {
        let caller = cluster.worker(slot).with_timeout(Duration::MAX);
        assert_eq!(
            caller.request(0, Slow).await.unwrap(),
            7,
            "request from {slot}"
        );
        assert_eq!(
            caller.consume(Slow).await.unwrap(),
            7,
            "consume from {slot}"
        );
        let entries = caller.map_each(Slow).await.unwrap();
        let (_, own) = entries.into_iter().find(|(s, _)| *s == 0).unwrap();
        assert_eq!(own.unwrap(), 7, "map from {slot}");
    }
}
