//! Machine baseline: a bare tokio relay of raw frames through a middle process.
//!
//! The middle (this binary, started without a role) plays the master: it spawns two children of
//! this same binary, a client and a server, each connected to it by a `socketpair` (inherited as
//! fd 3). The client sends 4-byte big-endian length-prefixed frames; the middle reads whole
//! frames from one socket and writes them to the other; the server echoes every frame back.
//! That is the least work any router of frames between processes can do, so it bounds what the
//! messenger can reach on this machine.
//!
//! ```sh
//! cargo run --release --example baseline-relay -- --seconds 2 --in-flight 64 --sizes 64,1024
//! ```
//!
//! Prints one JSON object: round trips per second one at a time (`serial`) and with
//! `--in-flight` frames outstanding (`pipelined`), both with 64-byte payloads, then one at a time
//! for each of `--sizes`; plus the middle's CPU time per relayed frame.

use std::io::{BufReader, Read};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const ROLE_ENV: &str = "BASELINE_RELAY_ROLE";
const TESTS_ENV: &str = "BASELINE_RELAY_TESTS";
/// The children's end of their socket.
const CHILD_FD: RawFd = 3;
/// Same limit as the messenger's default `max_frame`.
const MAX_FRAME: usize = 16 * 1024 * 1024;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), BoxError> {
    match std::env::var(ROLE_ENV).as_deref() {
        Ok("client") => client(),
        Ok("server") => server(),
        Ok(other) => Err(format!("{ROLE_ENV}={other:?}: expected client or server").into()),
        Err(_) => middle(),
    }
}

// ------------------------------------------------------------------------------------------
// The middle

struct Args {
    seconds: f64,
    in_flight: usize,
    sizes: Vec<usize>,
}

fn parse_args() -> Result<Args, BoxError> {
    let mut args = Args {
        seconds: 2.0,
        in_flight: 64,
        sizes: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--seconds" => args.seconds = value()?.parse()?,
            "--in-flight" => args.in_flight = value()?.parse()?,
            "--sizes" => {
                args.sizes = value()?
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::parse)
                    .collect::<Result<_, _>>()?
            }
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    Ok(args)
}

/// A child process killed (and reaped) when dropped, so no exit path leaves one behind.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts this binary as `role` with `sock` as its fd 3. The child dies with this process.
fn spawn_child(role: &str, sock: &StdUnixStream, tests: &str) -> std::io::Result<KillOnDrop> {
    let fd = sock.as_raw_fd();
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.env(ROLE_ENV, role)
        .env(TESTS_ENV, tests)
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
    Ok(KillOnDrop(cmd.spawn()?))
}

fn middle() -> Result<(), BoxError> {
    let args = parse_args()?;
    let mut tests = vec![
        format!("serial:64:1:{}", args.seconds),
        format!("pipelined:64:{}:{}", args.in_flight, args.seconds),
    ];
    for size in &args.sizes {
        tests.push(format!("serial:{size}:1:{}", (args.seconds / 2.0).max(0.5)));
    }
    let tests = tests.join(",");
    let (client_mid, client_end) = StdUnixStream::pair()?;
    let (server_mid, server_end) = StdUnixStream::pair()?;
    // Spawned from the main thread, which lives as long as the process: PDEATHSIG follows the
    // spawning thread.
    let mut client = spawn_child("client", &client_end, &tests)?;
    let server = spawn_child("server", &server_end, &tests)?;
    drop((client_end, server_end));
    let stdout = client.0.stdout.take().ok_or("no client stdout")?;

    let frames = Arc::new(AtomicU64::new(0));
    let cpu_before = cpu_seconds("self");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let relays = runtime.block_on(async {
        let client = tokio_unix(client_mid)?;
        let server = tokio_unix(server_mid)?;
        let (client_rd, client_wr) = client.into_split();
        let (server_rd, server_wr) = server.into_split();
        let up = tokio::spawn(relay(client_rd, server_wr, frames.clone()));
        let down = tokio::spawn(relay(server_rd, client_wr, frames.clone()));
        Ok::<_, BoxError>((up, down))
    })?;

    // The client prints its result and exits; a bounded wait guards against a hung child.
    let limit = Duration::from_secs_f64(args.seconds * (4.0 + args.sizes.len() as f64) + 30.0);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = BufReader::new(stdout).read_to_string(&mut text);
        let _ = tx.send(text);
    });
    let text = rx
        .recv_timeout(limit)
        .map_err(|_| format!("the client gave no result within {limit:?}"))?;
    let cpu_after = cpu_seconds("self");
    let relayed = frames.load(Ordering::Relaxed);
    runtime.block_on(async {
        // Both relays end once the client's socket closes and the server sees end of file.
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            let _ = relays.0.await;
            let _ = relays.1.await;
        })
        .await;
    });
    drop((client, server));
    let result: Value = serde_json::from_str(text.trim())
        .map_err(|e| format!("client output {text:?} is not JSON: {e}"))?;
    let cpu = match (cpu_before, cpu_after) {
        (Some(a), Some(b)) if relayed > 0 => json!((b - a) * 1e6 / relayed as f64),
        _ => Value::Null,
    };
    let out = json!({
        "tool": "baseline-relay",
        "tests": result["tests"],
        "middle_frames": relayed,
        "middle_cpu_us_per_frame": cpu,
    });
    println!("{out}");
    Ok(())
}

fn tokio_unix(sock: StdUnixStream) -> std::io::Result<tokio::net::UnixStream> {
    sock.set_nonblocking(true)?;
    tokio::net::UnixStream::from_std(sock)
}

/// Reads whole frames from `from` and writes them to `to`: every complete frame in a read is
/// copied out and written with one call, like a router's batched writer.
async fn relay<R, W>(mut from: R, mut to: W, frames: Arc<AtomicU64>) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut inbuf = BytesMut::with_capacity(64 * 1024);
    let mut out = BytesMut::with_capacity(64 * 1024);
    loop {
        if from.read_buf(&mut inbuf).await? == 0 {
            break;
        }
        let mut n = 0;
        while let Some(len) = frame_len(&inbuf)? {
            if inbuf.len() < 4 + len {
                inbuf.reserve(4 + len - inbuf.len());
                break;
            }
            out.extend_from_slice(&inbuf[..4 + len]);
            inbuf.advance(4 + len);
            n += 1;
        }
        if !out.is_empty() {
            to.write_all(&out).await?;
            out.clear();
            frames.fetch_add(n, Ordering::Relaxed);
        }
    }
    to.shutdown().await
}

/// The payload length of the frame at the start of `buf`, once its prefix is there.
fn frame_len(buf: &[u8]) -> std::io::Result<Option<usize>> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {len} bytes"),
        ));
    }
    Ok(Some(len))
}

/// utime + stime of `/proc/<pid>/stat`, in seconds.
fn cpu_seconds(pid: &str) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest: Vec<&str> = text[text.rfind(')')? + 2..].split_whitespace().collect();
    let ticks: u64 = rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| ticks as f64 / hz as f64)
}

// ------------------------------------------------------------------------------------------
// The children

fn child_socket() -> std::io::Result<tokio::net::UnixStream> {
    // SAFETY: the middle placed our end of the socketpair at fd 3 for this process alone.
    let sock = unsafe { StdUnixStream::from_raw_fd(CHILD_FD) };
    tokio_unix(sock)
}

fn current_thread() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// Echoes every complete frame back, batched per read, until end of file.
fn server() -> Result<(), BoxError> {
    current_thread()?.block_on(async {
        let (rd, wr) = child_socket()?.into_split();
        relay(rd, wr, Arc::new(AtomicU64::new(0))).await?;
        Ok(())
    })
}

struct Test {
    mode: String,
    size: usize,
    in_flight: usize,
    seconds: f64,
}

fn parse_tests(spec: &str) -> Result<Vec<Test>, BoxError> {
    spec.split(',')
        .map(|t| {
            let parts: Vec<&str> = t.split(':').collect();
            match parts.as_slice() {
                [mode, size, in_flight, seconds] => Ok(Test {
                    mode: mode.to_string(),
                    size: size.parse()?,
                    in_flight: in_flight.parse()?,
                    seconds: seconds.parse()?,
                }),
                _ => Err(format!("bad test {t:?}").into()),
            }
        })
        .collect()
}

fn client() -> Result<(), BoxError> {
    let tests = parse_tests(&std::env::var(TESTS_ENV)?)?;
    let results = current_thread()?.block_on(async {
        let mut sock = child_socket()?;
        let mut results = Vec::new();
        for t in &tests {
            // A short warm-up at the same shape, then the measured run.
            let warm = (t.seconds / 5.0).min(0.3);
            round_trips(&mut sock, t.size, t.in_flight, warm).await?;
            let (n, secs) = round_trips(&mut sock, t.size, t.in_flight, t.seconds).await?;
            results.push(json!({
                "mode": t.mode, "size": t.size, "in_flight": t.in_flight,
                "round_trips": n, "seconds": secs, "per_s": n as f64 / secs,
            }));
        }
        Ok::<_, BoxError>(results)
    })?;
    println!("{}", json!({ "tests": results }));
    Ok(())
}

/// Keeps `in_flight` frames of `size` bytes outstanding for `seconds`, then waits for the
/// stragglers. Returns the round trips completed and the time they took.
async fn round_trips(
    sock: &mut tokio::net::UnixStream,
    size: usize,
    in_flight: usize,
    seconds: f64,
) -> Result<(u64, f64), BoxError> {
    let mut frame = Vec::with_capacity(4 + size);
    frame.extend_from_slice(&(size as u32).to_be_bytes());
    frame.resize(4 + size, 7);
    let mut inbuf = BytesMut::with_capacity((4 + size).max(64 * 1024));
    let mut out = Vec::with_capacity(frame.len() * in_flight);
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(seconds);
    for _ in 0..in_flight {
        out.extend_from_slice(&frame);
    }
    sock.write_all(&out).await?;
    let mut outstanding = in_flight;
    let mut done = 0u64;
    while outstanding > 0 {
        if sock.read_buf(&mut inbuf).await? == 0 {
            return Err("the middle closed the connection".into());
        }
        out.clear();
        let sending = Instant::now() < end;
        while let Some(len) = frame_len(&inbuf)? {
            if inbuf.len() < 4 + len {
                inbuf.reserve(4 + len - inbuf.len());
                break;
            }
            inbuf.advance(4 + len);
            done += 1;
            if sending {
                out.extend_from_slice(&frame);
            } else {
                outstanding -= 1;
            }
        }
        if !out.is_empty() {
            sock.write_all(&out).await?;
        }
    }
    Ok((done, start.elapsed().as_secs_f64()))
}
