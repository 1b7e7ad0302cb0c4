//! Listening sockets: bound once by the master, inherited by every worker (one shared accept
//! queue in the kernel; why, and the spread measured: the crate docs, "Balancing connections").

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use socket2::{Domain, SockAddr, Socket, Type};

use crate::env::ListenerKind;
use crate::error::Error;

/// An address the master listens on for its workers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ListenAddr {
    /// A TCP address such as `127.0.0.1:3000` (port 0 picks a free port).
    Tcp(String),
    /// A Unix-domain socket path.
    Unix(PathBuf),
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenAddr::Tcp(a) => write!(f, "tcp://{a}"),
            ListenAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// Where a bound listener actually listens (with the port chosen for port 0).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LocalAddr {
    /// A TCP listener.
    Tcp(SocketAddr),
    /// A Unix-domain listener.
    Unix(PathBuf),
}

/// A listener bound by the master.
pub(crate) struct Bound {
    pub kind: ListenerKind,
    pub fd: OwnedFd,
    pub local: LocalAddr,
}

const BACKLOG: i32 = 1024;

/// Takes `fd`, a listening socket that systemd passed (socket activation), as the listener
/// configured as `addr`: it must be a listening stream socket of the same kind (TCP for an
/// address, Unix for a path); where it listens is whatever systemd bound.
///
/// # Safety
/// `fd` is open and owned by nobody else in this process (systemd's `LISTEN_FDS` contract).
pub(crate) unsafe fn adopt(fd: std::os::fd::RawFd, addr: &ListenAddr) -> Result<Bound, Error> {
    use std::os::fd::FromRawFd;
    let err = |detail: String| Error::Listen {
        addr: addr.to_string(),
        source: io::Error::other(format!("the socket systemd passed (fd {fd}) {detail}")),
    };
    // Looked at before it is taken: a descriptor that is not a socket (not systemd's, after
    // all) is left alone, open, to whoever has it.
    // SAFETY: fstat writes into `stat` only; a bad descriptor is an error, not UB.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut stat) } != 0 {
        return Err(err(format!("is not open: {}", io::Error::last_os_error())));
    }
    if stat.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(err("is not a socket".into()));
    }
    // SAFETY: the caller's contract, and it is a socket.
    let socket = Socket::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let io_err = |e: io::Error| err(format!("cannot be used: {e}"));
    if socket.r#type().map_err(io_err)? != Type::STREAM {
        return Err(err("is not a stream socket".into()));
    }
    if !socket.is_listener().map_err(io_err)? {
        return Err(err("is not listening".into()));
    }
    let local = socket.local_addr().map_err(io_err)?;
    let (kind, local) = match (addr, local.as_socket(), local.as_pathname()) {
        (ListenAddr::Tcp(_), Some(inet), _) => (ListenerKind::Tcp, LocalAddr::Tcp(inet)),
        (ListenAddr::Unix(_), None, Some(path)) => {
            (ListenerKind::Unix, LocalAddr::Unix(path.to_path_buf()))
        }
        (ListenAddr::Tcp(_), None, _) => return Err(err("is not a TCP socket".into())),
        (ListenAddr::Unix(_), _, _) => {
            return Err(err("is not a Unix socket bound to a path".into()))
        }
    };
    socket.set_nonblocking(true).map_err(io_err)?;
    socket.set_cloexec(true).map_err(io_err)?;
    Ok(Bound {
        kind,
        fd: socket.into(),
        local,
    })
}

pub(crate) fn bind(addr: &ListenAddr) -> Result<Bound, Error> {
    let err = |source: io::Error| Error::Listen {
        addr: addr.to_string(),
        source,
    };
    match addr {
        ListenAddr::Tcp(a) => {
            let sa = a
                .to_socket_addrs()
                .map_err(err)?
                .next()
                .ok_or_else(|| err(io::Error::other("the address resolves to nothing")))?;
            let socket = Socket::new(Domain::for_address(sa), Type::STREAM, None).map_err(err)?;
            socket.set_reuse_address(true).map_err(err)?;
            socket.bind(&sa.into()).map_err(err)?;
            socket.listen(BACKLOG).map_err(err)?;
            // Non-blocking is a property of the shared open file: set once, for every worker.
            socket.set_nonblocking(true).map_err(err)?;
            let local = socket
                .local_addr()
                .map_err(err)?
                .as_socket()
                .ok_or_else(|| err(io::Error::other("not an inet socket")))?;
            Ok(Bound {
                kind: ListenerKind::Tcp,
                fd: socket.into(),
                local: LocalAddr::Tcp(local),
            })
        }
        ListenAddr::Unix(path) => {
            remove_stale_socket(path).map_err(err)?;
            let socket = Socket::new(Domain::UNIX, Type::STREAM, None).map_err(err)?;
            socket
                .bind(&SockAddr::unix(path).map_err(err)?)
                .map_err(err)?;
            socket.listen(BACKLOG).map_err(err)?;
            socket.set_nonblocking(true).map_err(err)?;
            Ok(Bound {
                kind: ListenerKind::Unix,
                fd: socket.into(),
                local: LocalAddr::Unix(path.clone()),
            })
        }
    }
}

/// Removes a socket file that nobody listens on any more (left by a killed master); refuses to
/// touch a live one or anything that is not a socket.
fn remove_stale_socket(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(meta) if meta.file_type().is_socket() => {
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "another process listens on this socket",
                )),
                Err(_) => std::fs::remove_file(path),
            }
        }
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "the path exists and is not a socket",
        )),
    }
}
