//! The Hub alone: two raw peers that speak frames with the wire codec over in-memory pipes, no
//! Messenger on either side. Peer A sends requests to slot 1 (or broadcasts); peer B answers
//! each request at once. What is left is the Hub's reading, routing and writing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures_util::StreamExt;
use messenger::wire::{Credit, Envelope, FrameCodec, Hello, Kind, Target};
use messenger::{Config, Hub, Peer, WorkerId};
use tokio::io::{AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};
use tokio::sync::Mutex;
use tokio_util::codec::{Encoder, FramedRead};

/// MessagePack `nil`: the body of `()` and of unit structs.
const NIL: &[u8] = &[0xc0];

struct Raw {
    reader: FramedRead<ReadHalf<DuplexStream>, FrameCodec>,
    writer: WriteHalf<DuplexStream>,
    codec: FrameCodec,
    buf: BytesMut,
}

impl Raw {
    /// Connects as worker `slot` of `hub`, handles `events`, and gets Ready.
    async fn connect(hub: &Hub, slot: u32, events: &[&'static str]) -> Raw {
        let (hub_end, mine) = tokio::io::duplex(256 * 1024);
        hub.attach(WorkerId::new(slot, 1), hub_end);
        let (rd, writer) = tokio::io::split(mine);
        let mut raw = Raw {
            reader: FramedRead::new(rd, FrameCodec::new()),
            writer,
            codec: FrameCodec::new(),
            buf: BytesMut::new(),
        };
        raw.queue(&Hello::new(None).frame());
        raw.flush().await;
        assert_eq!(raw.next().await.kind, Kind::Hello);
        for event in events {
            raw.queue(&Envelope::new(Kind::Announce, event, Bytes::new()));
        }
        let mut ready = Envelope::new(Kind::Ready, "ready", Bytes::new());
        ready.id = 1;
        raw.queue(&ready);
        raw.flush().await;
        assert_eq!(raw.next().await.kind, Kind::Reply);
        raw
    }

    fn queue(&mut self, env: &Envelope) {
        self.codec.encode(env, &mut self.buf).unwrap();
    }

    async fn flush(&mut self) {
        self.writer.write_all(&self.buf).await.unwrap();
        self.buf.clear();
    }

    async fn next(&mut self) -> Envelope {
        self.reader.next().await.unwrap().unwrap()
    }
}

fn request(id: u64) -> Envelope {
    let mut env = Envelope::new(Kind::Request, "pid", Bytes::from_static(NIL));
    env.id = id;
    env.to = Target::Slot(1);
    env
}

fn hub(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let ticks = Arc::new(AtomicU64::new(0));
    let (_hub, a) = rt.block_on(async {
        let hub = Hub::new(Config::default()).unwrap();
        let a = Raw::connect(&hub, 0, &[]).await;
        let mut b = Raw::connect(&hub, 1, &["pid", "tick"]).await;
        let ticks = ticks.clone();
        // B: answers requests, counts broadcasts; one write per frame read.
        tokio::spawn(async move {
            while let Some(Ok(env)) = b.reader.next().await {
                match env.kind {
                    Kind::Request => {
                        let me = Peer::Worker(WorkerId::new(1, 1));
                        let reply = Envelope {
                            to: Target::caller(env.from),
                            ..Envelope::answer(Kind::Reply, env.id, me, env.event, NIL.into())
                        };
                        b.queue(&reply);
                        b.flush().await;
                    }
                    // Room for more broadcasts, given back in batches as a Messenger does.
                    Kind::Broadcast if ticks.fetch_add(1, Ordering::Relaxed) % 256 == 255 => {
                        let credit = Credit {
                            frames: 256,
                            bytes: 256 * env.wire_len() as u64,
                        };
                        b.queue(&credit.frame());
                        b.flush().await;
                    }
                    _ => {}
                }
            }
        });
        (hub, Arc::new(Mutex::new(a)))
    });

    let mut group = c.benchmark_group("hub");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Elements(1));
    group.bench_function("request_reply", |bench| {
        bench.to_async(&rt).iter_custom(|iters| {
            let a = a.clone();
            async move {
                let mut a = a.lock().await;
                let start = Instant::now();
                for id in 0..iters {
                    a.queue(&request(id + 2));
                    a.flush().await;
                    assert_eq!(a.next().await.kind, Kind::Reply);
                }
                start.elapsed()
            }
        })
    });
    group.throughput(Throughput::Elements(64));
    group.bench_function("request_reply_64_in_flight", |bench| {
        bench.to_async(&rt).iter_custom(|iters| {
            let a = a.clone();
            async move {
                let mut a = a.lock().await;
                let start = Instant::now();
                for round in 0..iters {
                    for i in 0..64 {
                        a.queue(&request(round * 64 + i + 2));
                    }
                    a.flush().await;
                    for _ in 0..64 {
                        assert_eq!(a.next().await.kind, Kind::Reply);
                    }
                }
                start.elapsed()
            }
        })
    });
    group.throughput(Throughput::Elements(1));
    group.bench_function("broadcast_delivered", |bench| {
        bench.to_async(&rt).iter_custom(|iters| {
            let (a, ticks) = (a.clone(), ticks.clone());
            async move {
                let mut a = a.lock().await;
                let target = ticks.load(Ordering::Relaxed) + iters;
                let start = Instant::now();
                for n in 0..iters {
                    a.queue(&Envelope::new(
                        Kind::Broadcast,
                        "tick",
                        Bytes::from_static(NIL),
                    ));
                    if n % 64 == 63 {
                        a.flush().await;
                    }
                }
                a.flush().await;
                // Every broadcast counted by B: waits on B's counter, not on time.
                while ticks.load(Ordering::Relaxed) < target {
                    tokio::task::yield_now().await;
                }
                start.elapsed()
            }
        })
    });
    group.finish();
}

criterion_group!(benches, hub);
criterion_main!(benches);
