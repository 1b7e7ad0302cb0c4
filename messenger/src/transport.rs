//! The pipes under the Hub and the Messengers: a connection's writer and the handshake.
//!
//! Both ends of a connection use the same pieces over any `AsyncRead + AsyncWrite`: a Unix
//! socket between processes, an in-memory duplex in the mock transport.

use bytes::BytesMut;
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::codec::{Encoder, FramedRead};
use tokio_util::sync::CancellationToken;

use crate::wire::{Envelope, FrameCodec, Hello, Kind, PROTOCOL_VERSION};
use crate::{Config, Error, Peer};

/// How many frames the writer takes from its queue for one write.
const BATCH: usize = 256;

/// Something the writer can take frames from: the Hub's bounded queues and the Messengers'
/// outbound queues.
pub(crate) trait Outbox: Send + 'static {
    /// What the queue holds: a frame, maybe with bookkeeping.
    type Item: Send;

    /// Waits for at least one item, then takes up to `limit` more that are already there.
    /// Zero means the queue is closed.
    fn recv_batch(
        &mut self,
        batch: &mut Vec<Self::Item>,
        limit: usize,
    ) -> impl std::future::Future<Output = usize> + Send;

    /// The frame of an item.
    fn frame(item: &Self::Item) -> &Envelope;
}

impl Outbox for mpsc::Receiver<Envelope> {
    type Item = Envelope;

    async fn recv_batch(&mut self, batch: &mut Vec<Envelope>, limit: usize) -> usize {
        self.recv_many(batch, limit).await
    }

    fn frame(item: &Envelope) -> &Envelope {
        item
    }
}

/// Writes what `outbox` yields to `io`, a batch of frames per write: when busy, one system call
/// carries many frames. Ends when the outbox closes, `stop` fires, or the write fails.
pub(crate) async fn write_frames<W, O>(
    mut io: W,
    mut outbox: O,
    mut codec: FrameCodec,
    stop: CancellationToken,
) where
    W: AsyncWrite + Unpin,
    O: Outbox,
{
    let mut batch = Vec::with_capacity(BATCH);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    // Made once: a cancellation future registers with the token each time it is made.
    let stopped = stop.cancelled();
    tokio::pin!(stopped);
    loop {
        let n = tokio::select! {
            biased;
            n = outbox.recv_batch(&mut batch, BATCH) => n,
            () = &mut stopped => break,
        };
        if n == 0 {
            break;
        }
        // Encoded where they lie, then dropped in place: an envelope is not small to move.
        for item in &batch {
            let env = O::frame(item);
            // Senders check sizes before they queue; this only guards against a bug there.
            if let Err(err) = codec.encode(env, &mut buf) {
                tracing::error!(event = %env.event_name(), "frame not sent: {err}");
            }
        }
        batch.clear();
        if let Err(err) = io.write_all(&buf).await {
            tracing::debug!("connection write failed: {err}");
            break;
        }
        buf.clear();
        if buf.capacity() > 1024 * 1024 {
            // One huge frame should not pin its buffer for the connection's life.
            buf = BytesMut::with_capacity(64 * 1024);
        }
    }
    let _ = io.shutdown().await;
}

/// The codec for `config`.
pub(crate) fn codec(config: &Config) -> FrameCodec {
    FrameCodec::builder()
        .max_frame(config.max_frame)
        .new_codec()
}

/// Writes one frame at once (handshakes happen before the writer task exists).
pub(crate) async fn write_one<W: AsyncWrite + Unpin>(
    io: &mut W,
    codec: &mut FrameCodec,
    env: &Envelope,
) -> Result<(), Error> {
    let mut buf = BytesMut::new();
    codec.encode(env, &mut buf)?;
    io.write_all(&buf).await?;
    io.flush().await?;
    Ok(())
}

/// The `Hello` frame of this protocol version, telling `peer` who it is (from the Hub).
pub(crate) fn hello(peer: Option<Peer>) -> Envelope {
    let body = rmp_serde::to_vec(&Hello {
        version: PROTOCOL_VERSION,
        peer,
    })
    .unwrap_or_default();
    Envelope::new(Kind::Hello, "", body)
}

/// Reads the first frame, which must be a `Hello` of our protocol version; a `Failure` frame
/// (the Hub refusing us) becomes its error.
pub(crate) async fn read_hello<R: AsyncRead + Unpin>(
    reader: &mut FramedRead<R, FrameCodec>,
    config: &Config,
) -> Result<Hello, Error> {
    let first = tokio::time::timeout(config.handshake_timeout, reader.next())
        .await
        .map_err(|_| Error::Timeout {
            event: "hello".into(),
            after: config.handshake_timeout,
            peer: None,
        })?;
    let env = match first {
        None => return Err(Error::Closed),
        Some(frame) => frame?,
    };
    match env.kind {
        Kind::Hello => {
            let hello: Hello = rmp_serde::from_slice(&env.body).map_err(|e| Error::Malformed {
                detail: format!("hello: {e}"),
            })?;
            if hello.version != PROTOCOL_VERSION {
                return Err(Error::ProtocolMismatch {
                    ours: PROTOCOL_VERSION,
                    theirs: hello.version,
                });
            }
            Ok(hello)
        }
        Kind::Failure => Err(crate::endpoint::decode_failure(&env)),
        other => Err(Error::Malformed {
            detail: format!("expected a hello frame, got {other:?}"),
        }),
    }
}
