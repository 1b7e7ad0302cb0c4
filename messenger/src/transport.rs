//! The pipes under the Hub and the Messengers: a connection's writer and the handshake.
//!
//! Both ends of a connection use the same pieces over any `AsyncRead + AsyncWrite`: a Unix
//! socket between processes, an in-memory duplex in the mock transport.

use bytes::BytesMut;
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::{Encoder, FramedRead};
use tokio_util::sync::CancellationToken;

use crate::wire::{Envelope, FrameCodec, Hello, Kind, READ_CHUNK};
use crate::{Config, Error};

/// At most this many frames are taken for one write: when busy, one system call carries many.
const BATCH_FRAMES: usize = 256;
/// A write stops growing once this many bytes are in it (the first frame always goes), so the
/// writer's buffer stays small whatever the frames' sizes.
const BATCH_BYTES: usize = 256 * 1024;
/// The writer's buffer, once a large frame grew it, is given back past this.
const BUFFER_KEPT: usize = 1024 * 1024;

/// Where the master's frames go when it has no socket: the Hub routes them in the calling
/// task. The Messenger sends through it; the Hub implements it.
pub(crate) trait Router: Send + Sync + 'static {
    /// Routes a frame from the master.
    fn route(&self, env: Envelope);
}

/// Something the writer takes frames from: the Hub's queues and the Messengers' outbound
/// queues.
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

    /// These items were written: the room they held is free.
    fn written(&mut self, items: &[Self::Item]);
}

/// Writes what `outbox` yields to `io`, a batch of frames per write. Ends when the outbox
/// closes, `stop` fires, or the write fails.
pub(crate) async fn write_frames<W, O>(
    mut io: W,
    mut outbox: O,
    mut codec: FrameCodec,
    stop: CancellationToken,
) where
    W: AsyncWrite + Unpin,
    O: Outbox,
{
    let mut batch = Vec::with_capacity(BATCH_FRAMES);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    // Made once: a cancellation future registers with the token each time it is made.
    let stopped = stop.cancelled();
    tokio::pin!(stopped);
    loop {
        if batch.is_empty() {
            let n = tokio::select! {
                biased;
                n = outbox.recv_batch(&mut batch, BATCH_FRAMES) => n,
                () = &mut stopped => break,
            };
            if n == 0 {
                break;
            }
        }
        // Encoded where they lie, until the buffer holds a write's worth; the rest waits for
        // the next write.
        let mut frames = 0;
        for item in &batch {
            let env = O::frame(item);
            frames += 1;
            // Senders check sizes before they queue; this only guards against a bug there.
            if let Err(err) = codec.encode(env, &mut buf) {
                tracing::error!(event = %env.event_name(), "frame not sent: {err}");
            }
            if buf.len() >= BATCH_BYTES {
                break;
            }
        }
        if let Err(err) = io.write_all(&buf).await {
            tracing::debug!("connection write failed: {err}");
            break;
        }
        outbox.written(&batch[..frames]);
        if frames == batch.len() {
            batch.clear();
        } else {
            batch.drain(..frames);
        }
        buf.clear();
        if buf.capacity() > BUFFER_KEPT {
            buf = BytesMut::with_capacity(64 * 1024);
        }
    }
    let _ = io.shutdown().await;
}

/// The room a frame takes in a queue's byte budget: its size on the wire. The sender of a
/// broadcast and the Hub that acknowledges it count it the same way.
pub(crate) fn cost(env: &Envelope) -> u32 {
    u32::try_from(env.wire_len()).unwrap_or(u32::MAX)
}

/// The codec for `config`.
pub(crate) fn codec(config: &Config) -> FrameCodec {
    FrameCodec::builder()
        .max_frame(config.max_frame)
        .new_codec()
}

/// How many read chunks a peer's frames may keep alive in the Hub (1 MiB): past that, its
/// frames are copied out of their read buffer (see [`FrameCodec`]).
pub(crate) const HUB_KEPT_CHUNKS: usize = 16;

/// The Hub's codec for a peer's frames.
pub(crate) fn hub_codec(config: &Config) -> FrameCodec {
    FrameCodec::builder()
        .max_frame(config.max_frame)
        .keep_chunks(HUB_KEPT_CHUNKS)
        .new_codec()
}

/// A reader of frames from `read`, reading a chunk at a time (see [`FrameCodec`]).
pub(crate) fn reader<R: AsyncRead>(read: R, codec: FrameCodec) -> FramedRead<R, FrameCodec> {
    FramedRead::with_capacity(read, codec, READ_CHUNK)
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
        Kind::Hello => Hello::from_bytes(&env.body),
        Kind::Failure => Err(env.error()),
        other => Err(Error::Malformed {
            detail: format!("expected a hello frame, got {other:?}"),
        }),
    }
}
