//! The wire codec alone: encode and decode one frame, by payload size.

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use messenger::wire::{Envelope, FrameCodec, Kind, Target};
use messenger::{Peer, WorkerId};
use tokio_util::codec::{Decoder, Encoder};

fn frame(size: usize) -> Envelope {
    let mut env = Envelope::new(Kind::Request, "bench.event", vec![7u8; size]);
    env.id = 123_456;
    env.from = Peer::Worker(WorkerId::new(3, 17));
    env.to = Target::Any;
    env
}

fn codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("codec");
    for size in [64usize, 1024, 64 * 1024] {
        let env = frame(size);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("encode", size), &env, |b, env| {
            let mut codec = FrameCodec::new();
            let mut buf = BytesMut::with_capacity(2 * size + 128);
            b.iter(|| {
                buf.clear();
                codec.encode(env, &mut buf).unwrap();
            });
        });
        let mut encoded = BytesMut::new();
        FrameCodec::new().encode(&env, &mut encoded).unwrap();
        group.bench_with_input(BenchmarkId::new("decode", size), &encoded, |b, encoded| {
            let mut codec = FrameCodec::new();
            b.iter(|| {
                let mut buf = encoded.clone();
                codec.decode(&mut buf).unwrap().unwrap()
            });
        });
    }
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
