//! A connection's life in the Hub: the handshake, then a reader that routes each frame, a
//! writer that empties the connection's queue onto the socket, and a watchdog that closes the
//! connection once it is stuck. The master's own Messenger has no socket: a task hands it what
//! is queued for it.

use std::sync::Weak;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio_util::codec::{Decoder, FramedRead};
use tokio_util::sync::CancellationToken;

use super::conn::Stop;
use super::outbound::Outbound;
use super::router::State;
use super::{Hub, HubEvent, Shared};
use crate::transport::{self, Outbox};
use crate::wire::{Envelope, FrameCodec, Hello};
use crate::{Messenger, Peer, WorkerId};

type Reader<IO> = FramedRead<tokio::io::ReadHalf<IO>, FrameCodec>;

/// Serves worker `id` over `io` in the background.
pub(super) fn attach<IO>(hub: Hub, id: WorkerId, io: IO)
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    tokio::spawn(async move {
        let peer = Peer::Worker(id);
        match handshake(&hub, id, io).await {
            Ok((reader, stop)) => {
                let reason = read(&hub, peer, reader, stop.clone()).await;
                let mut state = hub.lock();
                // A stopped connection was closed already (stuck, breaking the protocol, or
                // replaced by a newer one under its id, which must stay). Stopping happens only
                // under the lock, so this cannot race a newer connection.
                if !stop.is_stopped() {
                    state.close(peer, &reason);
                }
                state.finish();
            }
            Err(reason) => {
                tracing::warn!(
                    slot = id.slot,
                    generation = id.generation,
                    "worker refused: {reason}"
                );
                hub.lock().emit(HubEvent::Closed { id, reason });
            }
        }
    });
}

/// Checks the worker's protocol version and tells it who it is; then it is connected, with its
/// writer and watchdog running.
async fn handshake<IO>(hub: &Hub, id: WorkerId, io: IO) -> Result<(Reader<IO>, Stop), String>
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let config = hub.config();
    let (read, mut write) = tokio::io::split(io);
    let mut codec = transport::codec(config);
    let mut reader = transport::reader(read, transport::hub_codec(config));
    if let Err(err) = transport::read_hello(&mut reader, config).await {
        let refusal =
            Envelope::failure(0, Peer::Master, Default::default(), &err, config.max_frame);
        let _ = transport::write_one(&mut write, &mut codec, &refusal).await;
        return Err(format!("handshake failed: {err}"));
    }
    let hello = Hello::new(Some(Peer::Worker(id))).frame();
    if let Err(err) = transport::write_one(&mut write, &mut codec, &hello).await {
        return Err(format!("handshake failed: {err}"));
    }
    let stop = {
        let mut state = hub.lock();
        let (out, frames) = Outbound::new(state.budget, state.start);
        let stop = state.connect(Peer::Worker(id), out);
        let token = stop.token().clone();
        tokio::spawn(transport::write_frames(write, frames, codec, token));
        stop
    };
    let stall = config.stall_timeout;
    tokio::spawn(watch(
        std::sync::Arc::downgrade(&hub.shared),
        Peer::Worker(id),
        stop.token().clone(),
        stall,
    ));
    Ok((reader, stop))
}

/// Routes what the peer sends until its connection ends: why it ended. Never waits for
/// anything but the peer's next bytes.
///
/// What one read brought is decoded and routed under the Hub's lock, taken again every
/// [`ROUTE_RUN`] frames: a frame goes from the decoder straight to its route. (A read that
/// brought no whole frame takes the lock too, briefly: the first decode is under it.)
async fn read<IO>(hub: &Hub, peer: Peer, reader: Reader<IO>, stop: Stop) -> String
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let parts = reader.into_parts();
    let (mut io, mut codec, mut buf) = (parts.io, parts.codec, parts.read_buf);
    // Made once: a cancellation future registers with the token each time it is made.
    let stopped = stop.token().cancelled();
    tokio::pin!(stopped);
    loop {
        'decode: loop {
            let mut state = hub.lock();
            for _ in 0..ROUTE_RUN {
                // Frames read before the connection was closed (under the lock) are not this
                // peer's any more: its id may be a newer connection's.
                if stop.is_stopped() {
                    return "closed by the master".into();
                }
                match codec.decode(&mut buf) {
                    Ok(Some(env)) => state.route(peer, env, buf.is_empty()),
                    Ok(None) => break 'decode,
                    Err(err) => return format!("connection error: {err}"),
                }
            }
        }
        buf.reserve(1);
        let read = tokio::select! {
            biased;
            read = io.read_buf(&mut buf) => read,
            () = &mut stopped => return "closed by the master".into(),
        };
        match read {
            Ok(0) if buf.is_empty() => return "end of file".into(),
            Ok(0) => return "connection error: bytes remaining on stream".into(),
            Ok(_) => {}
            Err(err) => return format!("connection error: {err}"),
        }
    }
}

/// How many frames the reader routes under one hold of the Hub's lock.
const ROUTE_RUN: usize = 256;

/// Closes `peer` once it is stuck (see [`Outbound::stuck`]), looking a few times per
/// `stall`.
async fn watch(shared: Weak<Shared>, peer: Peer, stop: CancellationToken, stall: Duration) {
    let period = (stall / 4).max(Duration::from_millis(1));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(period) => {}
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let mut state = shared.lock();
        let stuck = state
            .conns
            .get(&peer)
            .and_then(|conn| conn.out.stuck(stall));
        if let Some(reason) = stuck {
            tracing::error!(%peer, "{reason}");
            state.close(peer, &reason);
            state.finish();
            return;
        }
    }
}

/// Connects the master's own Messenger: what is queued for it is handed to it by a task.
pub(super) fn connect_master(state: &mut State, master: Messenger) {
    let (out, mut frames) = Outbound::new(state.budget, state.start);
    state.connect(Peer::Master, out);
    tokio::spawn(async move {
        let mut batch = Vec::new();
        while frames.recv_batch(&mut batch, 256).await > 0 {
            frames.written(&batch);
            for item in batch.drain(..) {
                master.dispatch(item.into_envelope());
            }
        }
    });
}
