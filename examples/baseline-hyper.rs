//! Machine baseline: a bare axum `/hello` server in `WORKERS` processes (default 2) sharing one
//! listening socket, bound once by this parent and inherited, with no cluster machinery
//! (no messenger, no supervisor, no drain). `bench/run.py` measures it with `wrk` the way the
//! contract driver measures the demo cluster.
//!
//! ```sh
//! PORT=3100 cargo run --release --example baseline-hyper   # prints READY once serving
//! ```
//!
//! Runs until SIGTERM or SIGINT; the children die with it (kill on drop, and PDEATHSIG).

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

use axum::routing::get;
use axum::Router;
use socket2::{Domain, Socket, Type};

const CHILD_ENV: &str = "BASELINE_HYPER_CHILD";
/// The children's copy of the listening socket.
const CHILD_FD: RawFd = 3;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), BoxError> {
    if std::env::var_os(CHILD_ENV).is_some() {
        child()
    } else {
        parent()
    }
}

/// A child process killed (and reaped) when dropped, so no exit path leaves one behind.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> Result<T, BoxError> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .map_err(|_| format!("{name}={v:?} is not valid").into()),
        Err(_) => Ok(default),
    }
}

fn parent() -> Result<(), BoxError> {
    let port: u16 = env_or("PORT", 3100)?;
    let workers: usize = env_or("WORKERS", 2)?;
    // Bound like the cluster binds: SO_REUSEADDR, backlog 1024.
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&SocketAddr::from(([127, 0, 0, 1], port)).into())?;
    socket.listen(1024)?;
    let fd = socket.as_raw_fd();

    let mut children = Vec::new();
    for _ in 0..workers {
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.env(CHILD_ENV, "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        // SAFETY: only async-signal-safe calls (prctl, fcntl, dup2) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let ok = if fd == CHILD_FD {
                    // dup2 onto itself keeps close-on-exec set: clear it instead.
                    libc::fcntl(fd, libc::F_SETFD, 0) == 0
                } else {
                    libc::dup2(fd, CHILD_FD) == CHILD_FD
                };
                if ok {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        children.push(KillOnDrop(cmd.spawn()?));
    }
    // Ready once every child says it serves (each prints one line, then nothing).
    for child in &mut children {
        let stdout = child.0.stdout.take().ok_or("no child stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        if line.trim() != "READY" {
            return Err(format!("a child failed to start: {line:?}").into());
        }
    }
    println!("READY {port}");
    std::io::stdout().flush()?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        Ok::<_, BoxError>(())
    })?;
    drop(children);
    Ok(())
}

fn child() -> Result<(), BoxError> {
    // The same runtime shape as a cluster worker by default: the CPUs shared out among the
    // processes; one thread is a current-thread runtime.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = (cpus / env_or("WORKERS", 2usize)?.max(1)).max(1);
    let runtime = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    };
    runtime.block_on(async {
        // SAFETY: the parent placed the listening socket at fd 3 for this process.
        let std = unsafe { std::net::TcpListener::from_raw_fd(CHILD_FD) };
        std.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(std)?;
        let router = Router::new().route("/hello", get(|| async { "hello world" }));
        println!("READY");
        std::io::stdout().flush()?;
        axum::serve(listener, router).await?;
        Ok(())
    })
}
