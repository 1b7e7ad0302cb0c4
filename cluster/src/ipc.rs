//! The socket between the master and a worker: a Unix stream socket that wakes its process only
//! for what the process waits on.
//!
//! tokio's `UnixStream` registers with epoll for readable and writable edges at once, so each
//! time the peer reads what this end wrote, this process is woken for nothing: on a worker that
//! answers requests one at a time, every other wake-up was such a writable edge (seen with
//! `strace`). [`IpcStream`] registers for reads only; a write that finds the socket's buffer
//! full registers a duplicate of the descriptor for writability until that write gets through.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

/// A connected Unix stream socket for the messenger's frames.
pub(crate) struct IpcStream {
    /// Registered for readability only.
    read: AsyncFd<OwnedFd>,
    /// A duplicate registered for writability, only while a write waits for room.
    write: Option<AsyncFd<OwnedFd>>,
}

impl IpcStream {
    /// Takes a connected stream socket; must be called inside a tokio runtime.
    pub(crate) fn new(fd: OwnedFd) -> io::Result<IpcStream> {
        let std = std::os::unix::net::UnixStream::from(fd);
        std.set_nonblocking(true)?;
        Ok(IpcStream {
            read: register(OwnedFd::from(std), Interest::READABLE)?,
            write: None,
        })
    }

    fn fd(&self) -> RawFd {
        self.read.get_ref().as_raw_fd()
    }
}

impl AsyncRead for IpcStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            let mut guard = ready!(this.read.poll_read_ready(cx))?;
            // SAFETY: `recv` writes at most `len` bytes into the unfilled part, and exactly the
            // `n` it returns are then marked initialized and filled.
            let unfilled = unsafe { buf.unfilled_mut() };
            let len = unfilled.len();
            let result = guard.try_io(|fd| {
                let n = unsafe {
                    libc::recv(
                        fd.as_raw_fd(),
                        unfilled.as_mut_ptr().cast(),
                        len,
                        libc::MSG_DONTWAIT,
                    )
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match result {
                Ok(Ok(n)) => {
                    // A short read emptied the socket: the next data brings a new edge, so
                    // skip the read that would only say "would block".
                    if n > 0 && n < len {
                        guard.clear_ready();
                    }
                    unsafe { buf.assume_init(n) };
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for IpcStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            if let Some(write) = &this.write {
                let mut guard = ready!(write.poll_write_ready(cx))?;
                match guard.try_io(|fd| send(fd.as_raw_fd(), buf)) {
                    Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Ok(result) => {
                        // Room again: stop listening for writable edges.
                        this.write = None;
                        return Poll::Ready(result);
                    }
                    Err(_would_block) => continue,
                }
            }
            match send(this.fd(), buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Registering reports the current state, so room made since the failed
                    // send is not missed.
                    let dup = this.read.get_ref().try_clone()?;
                    this.write = Some(register(dup, Interest::WRITABLE)?);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                result => return Poll::Ready(result),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        use nix::sys::socket::{shutdown, Shutdown};
        Poll::Ready(shutdown(self.fd(), Shutdown::Write).map_err(io::Error::from))
    }
}

fn register(fd: OwnedFd, interest: Interest) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the `AsyncFd` owns the descriptor, which is neither replaced nor closed while it
    // is registered (dropping the `AsyncFd` deregisters, then closes).
    Ok(unsafe { AsyncFd::register_with_interest(fd, interest) }?)
}

/// One non-blocking `send`; `MSG_NOSIGNAL`, so a closed peer is an error, not a SIGPIPE.
fn send(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    use nix::sys::socket::MsgFlags;
    nix::sys::socket::send(fd, buf, MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL)
        .map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn pair() -> (IpcStream, IpcStream) {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        (
            IpcStream::new(a.into()).unwrap(),
            IpcStream::new(b.into()).unwrap(),
        )
    }

    #[tokio::test]
    async fn bytes_cross_both_ways() {
        let (mut a, mut b) = pair();
        a.write_all(b"ping").await.unwrap();
        let mut buf = [0; 4];
        b.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        b.write_all(b"pong").await.unwrap();
        a.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong");
    }

    /// Far more than the socket buffers hold: the writer must wait for room (the writable
    /// registration) and still deliver every byte in order.
    #[tokio::test]
    async fn a_full_buffer_waits_for_room() {
        let (mut a, mut b) = pair();
        let data: Vec<u8> = (0..8 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            a.write_all(&sent).await.unwrap();
            a.shutdown().await.unwrap();
        });
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.unwrap();
        writer.await.unwrap();
        assert_eq!(got.len(), data.len());
        assert!(got == data);
    }

    #[tokio::test]
    async fn a_closed_peer_is_an_error_not_a_signal() {
        let (mut a, b) = pair();
        drop(b);
        let err = loop {
            if let Err(e) = a.write_all(&[0; 4096]).await {
                break e;
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
        let mut buf = [0; 1];
        assert_eq!(a.read(&mut buf).await.unwrap(), 0);
    }
}
