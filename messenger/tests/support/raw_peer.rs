//! A peer that speaks raw frames to a real Hub: what a hostile or broken worker can send.

use futures_util::{SinkExt, StreamExt};
use messenger::testing::MockCluster;
use messenger::wire::{Envelope, FrameCodec, Hello, Kind, PROTOCOL_VERSION};
use messenger::{Peer, WorkerId};
use tokio::io::DuplexStream;
use tokio_util::codec::Framed;

/// The handshake's first frame, for protocol `version`.
pub fn hello(version: u32) -> Envelope {
    Envelope::new(
        Kind::Hello,
        "",
        Hello {
            version,
            peer: None,
        }
        .to_bytes(),
    )
}

/// A peer that speaks raw frames: connected to the Hub as `id`, handshake done.
pub async fn raw_worker(cluster: &MockCluster, id: WorkerId) -> Framed<DuplexStream, FrameCodec> {
    let (hub_end, raw) = tokio::io::duplex(64 * 1024);
    cluster.hub().attach(id, hub_end);
    let mut framed = Framed::new(raw, FrameCodec::new());
    framed.send(hello(PROTOCOL_VERSION)).await.unwrap();
    let answer = framed.next().await.unwrap().unwrap();
    assert_eq!(answer.kind, Kind::Hello);
    let hello = Hello::from_bytes(&answer.body).unwrap();
    assert_eq!(
        hello.peer,
        Some(Peer::Worker(id)),
        "the Hub names the connection"
    );
    framed
}
