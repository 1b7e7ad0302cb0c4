//! The fake worker of the `hub` check: it writes raw frames to a real Hub, and checks what the
//! Hub sends back against the protocol.
//!
//! Once its hello is answered, everything the Hub sends it must decode within the frame limit,
//! and:
//! - an answer (reply, failure, run here, a member list asked for) names an id the fake used in
//!   a request or a Ready;
//! - a request comes only for an event it announced, once it was told it is Ready, unless the
//!   master addressed it by its id;
//! - a broadcast comes only for an event it announced, once it was told it is Ready;
//! - the Hub never sends a frame only workers send.

use std::collections::HashSet;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use messenger::wire::{
    Credit, Envelope, FrameCodec, Hello, Kind, Members, Target, PROTOCOL_VERSION,
};
use messenger::{Error, Hub, Peer, WorkerId};
use tokio::io::{AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};
use tokio::time::timeout;
use tokio_util::codec::{Encoder, FramedRead};

use super::actions::{Body, Frame, HelloKind, Id, To};
use super::hub::Echo;

/// The fake's end of its pipe to the Hub.
const PIPE_BYTES: usize = 64 * 1024;
/// How long a read waits for the Hub's next frame (virtual time: free).
const READ_WAIT: Duration = Duration::from_millis(1);
/// How long a write may wait for room: a Hub that stopped reading leaves it waiting.
const WRITE_WAIT: Duration = Duration::from_millis(100);

pub struct Fake {
    pub id: WorkerId,
    reader: Option<FramedRead<ReadHalf<DuplexStream>, FrameCodec>>,
    writer: Option<WriteHalf<DuplexStream>>,
    /// Writes frames over any limit: the Hub must refuse those.
    codec: FrameCodec,
    max_frame: usize,
    /// Its hello was answered: from then on what the Hub sends is checked.
    checked: bool,
    seen: Seen,
}

/// What the fake has told the Hub and been told, for the checks. Kept when it connects again
/// under the same id: the Hub cannot tell two connections of one id apart.
#[derive(Default)]
struct Seen {
    /// The ids of its requests and Ready frames.
    asked: HashSet<u64>,
    /// The ids of its Ready frames.
    ready_calls: HashSet<u64>,
    /// It was told it is Ready.
    ready: bool,
    announced: HashSet<Bytes>,
    /// The Ready set last listed to it.
    epoch: u64,
    last_request: Option<Envelope>,
    /// The broadcasts it was sent and has not given credit for: frames, bytes.
    owed: (u64, u64),
}

impl Fake {
    /// Connects to `hub` as `id`, opening with `hello`.
    pub async fn connect(hub: &Hub, id: WorkerId, hello: &HelloKind) -> Fake {
        let max_frame = hub.config().max_frame;
        let (hub_end, end) = tokio::io::duplex(PIPE_BYTES);
        hub.attach(id, hub_end);
        let (read, write) = tokio::io::split(end);
        let mut fake = Fake {
            id,
            reader: Some(FramedRead::new(
                read,
                FrameCodec::builder().max_frame(max_frame).new_codec(),
            )),
            writer: Some(write),
            codec: FrameCodec::builder()
                .max_frame(u32::MAX as usize)
                .new_codec(),
            max_frame,
            checked: false,
            seen: Seen::default(),
        };
        fake.hello(hello).await;
        fake
    }

    /// Connects again as `id`, as a restarted process would: the old connection goes first.
    pub async fn reconnect(self, hub: &Hub, id: WorkerId, hello: &HelloKind) -> Fake {
        let Fake {
            id: old,
            reader,
            writer,
            seen,
            ..
        } = self;
        drop((reader, writer));
        let mut fake = Fake::connect(hub, id, hello).await;
        if id == old {
            fake.seen = seen;
        }
        fake
    }

    async fn hello(&mut self, hello: &HelloKind) {
        let frame = |version| {
            Hello {
                version,
                peer: None,
            }
            .frame()
        };
        match hello {
            HelloKind::Good => {
                self.write_frame(&frame(PROTOCOL_VERSION)).await;
                let answer = self.next().await.expect("a good hello is answered");
                assert_eq!(answer.kind, Kind::Hello, "{answer:?}");
                let hello = Hello::from_bytes(&answer.body).expect("the Hub's hello decodes");
                assert_eq!(hello.peer, Some(Peer::Worker(self.id)), "named by the Hub");
                self.checked = true;
            }
            HelloKind::Version(version) => {
                self.write_frame(&frame(*version)).await;
                let refusal = self.next().await.expect("another version is refused");
                assert_eq!(refusal.kind, Kind::Failure, "{refusal:?}");
                let error = refusal.error();
                assert!(
                    matches!(error, Error::ProtocolMismatch { theirs, .. } if theirs == *version),
                    "{error}"
                );
            }
            HelloKind::NotHello => {
                let first = Envelope::new(Kind::Announce, "echo", Bytes::new());
                self.write_frame(&first).await;
            }
            HelloKind::Garbage(bytes) => self.write(bytes).await,
            HelloKind::Silent => {}
        }
    }

    /// Sends `frame`, resolving what refers to what the fake was told.
    pub async fn send(&mut self, frame: &Frame) {
        let last = self.seen.last_request.as_ref();
        let id = match frame.id {
            Id::Value(id) => id,
            Id::LastRequest => last.map_or(0, |env| env.id),
        };
        let to = match frame.to {
            To::Target(to) => to,
            To::KnownEpoch { run_here } => Target::All {
                epoch: self.seen.epoch,
                run_here,
            },
            To::LastCaller => last.map_or(Target::Master, |env| Target::caller(env.from)),
        };
        let mut env = Envelope {
            kind: frame.kind,
            id,
            from: frame.from,
            to,
            event: frame.event.clone(),
            key: frame.key.clone(),
            body: Bytes::new(),
        };
        env.body = match &frame.body {
            Body::Echo => encode(&Echo("fake".into())),
            Body::Reply => encode(&"forged"),
            Body::Bytes(bytes) => not_echoed(bytes),
            Body::Big { over } => self.big_body(&env, *over),
        };
        match env.kind {
            Kind::Request => {
                self.seen.asked.insert(id);
            }
            Kind::Ready => {
                self.seen.asked.insert(id);
                self.seen.ready_calls.insert(id);
            }
            Kind::Announce => {
                self.seen.announced.insert(env.event.clone());
            }
            _ => {}
        }
        self.write_frame(&env).await;
    }

    /// A body that makes `env` a frame of the limit's size, `over - 2` bytes more or less.
    fn big_body(&mut self, env: &Envelope, over: usize) -> Bytes {
        let mut buf = BytesMut::new();
        self.codec.encode(env, &mut buf).unwrap();
        // The frame with an empty body, its length prefix aside; a body over 255 bytes takes one
        // byte more of length than an empty one.
        let bare = buf.len() - 4 + 1;
        let len = (self.max_frame + over).saturating_sub(bare + 2);
        Bytes::from(vec![b'b'; len])
    }

    /// Answers the last request forwarded to it, as its handler would.
    pub async fn answer(&mut self, failure: bool) {
        let Some(request) = self.seen.last_request.clone() else {
            return;
        };
        let text = rmp_serde::from_slice::<Echo>(&request.body).map_or("?".into(), |e| e.0);
        let mut answer = if failure {
            let error = Error::HandlerPanicked {
                event: request.event_name(),
                message: "the fake failed".into(),
            };
            Envelope::failure(
                request.id,
                Peer::Master,
                request.event.clone(),
                &error,
                self.max_frame,
            )
        } else {
            let body = encode(&format!("fake:{text}"));
            Envelope::answer(Kind::Reply, request.id, Peer::Master, request.event, body)
        };
        answer.to = Target::caller(request.from);
        self.write_frame(&answer).await;
    }

    /// Gives back room for the broadcasts it was sent.
    pub async fn credit(&mut self) {
        let (frames, bytes) = std::mem::take(&mut self.seen.owed);
        self.write_frame(&Credit { frames, bytes }.frame()).await;
    }

    async fn write_frame(&mut self, env: &Envelope) {
        let mut buf = BytesMut::new();
        self.codec.encode(env, &mut buf).unwrap();
        self.write(&buf).await;
    }

    /// Writes `bytes`, unless the connection is gone (or the Hub stopped reading it).
    pub async fn write(&mut self, bytes: &[u8]) {
        let Some(writer) = self.writer.as_mut() else {
            return;
        };
        if !matches!(
            timeout(WRITE_WAIT, writer.write_all(bytes)).await,
            Ok(Ok(()))
        ) {
            self.writer = None;
        }
    }

    /// Reads and checks up to `frames` frames, as long as they come soon.
    pub async fn read(&mut self, frames: usize) {
        for _ in 0..frames {
            let Some(env) = self.next().await else {
                return;
            };
            if self.checked {
                self.check(env);
            }
        }
    }

    /// The next frame from the Hub, if one comes soon.
    async fn next(&mut self) -> Option<Envelope> {
        let reader = self.reader.as_mut()?;
        match timeout(READ_WAIT, reader.next()).await {
            Err(_) => None,
            Ok(None) => {
                self.reader = None;
                None
            }
            Ok(Some(Err(err))) => panic!("the Hub sent what does not decode: {err}"),
            Ok(Some(Ok(env))) => Some(env),
        }
    }

    /// Checks a frame from the Hub against the protocol (see the module docs).
    fn check(&mut self, env: Envelope) {
        let seen = &mut self.seen;
        match env.kind {
            Kind::Reply | Kind::Failure | Kind::RunHere => {
                assert!(
                    seen.asked.contains(&env.id),
                    "an answer to no call: {env:?}"
                );
                let granted = env.kind == Kind::Reply
                    && seen.ready_calls.contains(&env.id)
                    && &env.event[..] == b"ready";
                seen.ready |= granted;
            }
            Kind::Members => {
                let list = Members::from_bytes(&env.body).expect("a member list decodes");
                let to = Target::All {
                    epoch: list.epoch,
                    run_here: list.run_here,
                };
                assert_eq!(env.to, to, "a member list is addressed to all");
                // Id 0: unasked, to a worker that left the Ready set.
                assert!(env.id == 0 || seen.asked.contains(&env.id), "{env:?}");
                seen.epoch = list.epoch;
            }
            Kind::Request => {
                let order = env.to == Target::Worker(self.id);
                assert!(
                    order || (seen.ready && seen.announced.contains(&env.event)),
                    "a request it should not get (Ready: {}): {env:?}",
                    seen.ready
                );
                seen.last_request = Some(env);
            }
            Kind::Broadcast => {
                assert!(
                    seen.ready && seen.announced.contains(&env.event),
                    "a broadcast it should not get (Ready: {}): {env:?}",
                    seen.ready
                );
                seen.owed.0 += 1;
                seen.owed.1 += env.wire_len() as u64;
            }
            Kind::Credit => {
                Credit::from_frame(&env).expect("the Hub's credit decodes");
            }
            Kind::Hello | Kind::Announce | Kind::Ready | Kind::Cancel => {
                panic!("the Hub sent a frame only workers send: {env:?}")
            }
        }
    }
}

/// `bytes`, unless they are a text a handler makes (see `Outcome::check` in `hub.rs`): the
/// fake answers anything, but never another call's answer.
fn not_echoed(bytes: &[u8]) -> Bytes {
    match rmp_serde::from_slice::<String>(bytes) {
        Ok(text) if text.starts_with("call-") || text.starts_with("fake:") => Bytes::new(),
        _ => Bytes::copy_from_slice(bytes),
    }
}

fn encode<T: serde::Serialize + ?Sized>(value: &T) -> Bytes {
    Bytes::from(rmp_serde::to_vec_named(value).unwrap())
}
