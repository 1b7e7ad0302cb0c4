//! The master under systemd: the `sd_notify` protocol spoken to a datagram socket bound by the
//! test as `NOTIFY_SOCKET`, as systemd binds it for a `Type=notify` unit.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{ready_pids, Helper, DEADLINE};
use nix::sys::signal::Signal;

/// What systemd would hear, in order.
struct Systemd {
    socket: UnixDatagram,
    heard: Vec<String>,
}

impl Systemd {
    fn bind(path: &std::path::Path) -> Systemd {
        let socket = UnixDatagram::bind(path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Systemd {
            socket,
            heard: Vec::new(),
        }
    }

    /// A cluster of `workers` started with `env` and `NOTIFY_SOCKET` naming a socket bound in
    /// the helper's temp dir (removed with it).
    fn start(workers: usize, env: &[(&str, String)]) -> (Systemd, Helper) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let systemd = Systemd::bind(&path);
        let mut env = env.to_vec();
        env.push(("NOTIFY_SOCKET", path.display().to_string()));
        let helper = Helper::start_exe(&common::helper_exe(), workers, &env, dir);
        (systemd, helper)
    }

    /// Waits for a datagram with the line `line` (a datagram after those already waited for),
    /// and returns that datagram.
    fn wait_for(&mut self, line: &str) -> String {
        let deadline = Instant::now() + DEADLINE;
        let mut buf = vec![0u8; 4096];
        loop {
            match self.socket.recv(&mut buf) {
                Ok(n) => {
                    let datagram = String::from_utf8(buf[..n].to_vec()).unwrap();
                    self.heard.push(datagram.clone());
                    if datagram.lines().any(|l| l == line) {
                        return datagram;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(e) => panic!("recv: {e}"),
            }
            assert!(
                Instant::now() < deadline,
                "systemd never heard {line:?} within {DEADLINE:?}; it heard {:?}",
                self.heard
            );
        }
    }

    /// Asserts that a datagram with the line `line` is already queued (after those waited
    /// for): for what must be said before the master exits.
    fn already_heard(&mut self, line: &str) {
        self.socket.set_nonblocking(true).unwrap();
        let mut buf = vec![0u8; 4096];
        while let Ok(n) = self.socket.recv(&mut buf) {
            let datagram = String::from_utf8(buf[..n].to_vec()).unwrap();
            self.heard.push(datagram.clone());
            if datagram.lines().any(|l| l == line) {
                return;
            }
        }
        panic!("systemd had not heard {line:?}; it heard {:?}", self.heard);
    }
}

#[test]
fn the_master_tells_systemd_ready_reloading_stopping_and_pings_its_watchdog() {
    let (mut systemd, mut helper) = Systemd::start(2, &[("WATCHDOG_USEC", "200000".to_string())]);

    let ready = systemd.wait_for("READY=1");
    assert!(
        ready.lines().any(|l| l == "STATUS=2 of 2 workers Ready"),
        "{ready:?}"
    );
    // Only the master speaks for the unit: the workers do not get the socket.
    let status = helper.wait_ready(2);
    for pid in ready_pids(&status) {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        for var in ["NOTIFY_SOCKET=", "WATCHDOG_USEC="] {
            assert!(
                !environ
                    .split(|&b| b == 0)
                    .any(|entry| entry.starts_with(var.as_bytes())),
                "worker {pid} inherited {var}"
            );
        }
    }
    systemd.wait_for("WATCHDOG=1");

    helper.signal(Signal::SIGUSR2);
    let reloading = systemd.wait_for("RELOADING=1");
    let usec = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .unwrap_or_else(|| panic!("RELOADING=1 without MONOTONIC_USEC: {reloading:?}"));
    assert!(usec.parse::<u64>().unwrap() > 0);
    systemd.wait_for("READY=1");

    // SIGTERM at once after the reload: the master stops within milliseconds, and must have
    // said so before it exits (it once exited with STOPPING=1 unsent, about 1 run in 80 with
    // four of these tests at once).
    helper.signal(Signal::SIGTERM);
    assert!(helper.wait_exit().success());
    systemd.already_heard("STOPPING=1");
}

/// A master whose bootstrap fails stops too: systemd hears it before the master exits.
#[test]
fn a_failed_bootstrap_says_stopping_before_the_master_exits() {
    let (mut systemd, mut helper) = Systemd::start(1, &[("HELPER_BOOT_FAILS", "1".to_string())]);
    assert!(!helper.wait_exit().success());
    systemd.already_heard("STOPPING=1");
}

#[test]
fn a_notify_socket_nobody_listens_on_is_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens there: the master logs it and serves all the same.
    let missing = dir.path().join("nobody");
    let mut helper = Helper::start(1, &[("NOTIFY_SOCKET", missing.display().to_string())]);
    helper.wait_ready(1);
    helper.signal(Signal::SIGTERM);
    assert!(helper.wait_exit().success());
}

/// Starts the helper with `listeners` passed as systemd passes them: at descriptors 3, 4, ...,
/// with `LISTEN_FDS`, `LISTEN_FDNAMES` and `LISTEN_PID` (the helper's own pid: a shell sets it
/// to its `$$` and execs the helper in its place).
fn activated_command(
    listeners: &[std::os::fd::RawFd],
    names: &str,
    env: &[(&str, String)],
) -> Command {
    activated_command_for("$$", listeners, names, env)
}

/// As [`activated_command`], with `LISTEN_PID` set to `pid` (a shell word).
fn activated_command_for(
    pid: &str,
    listeners: &[std::os::fd::RawFd],
    names: &str,
    env: &[(&str, String)],
) -> Command {
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", &format!("LISTEN_PID={pid} exec \"$0\"")])
        .arg(common::helper_exe())
        .env("LISTEN_FDS", listeners.len().to_string())
        .env("LISTEN_FDNAMES", names)
        .env("PORT", "0");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let sources = listeners.to_vec();
    // SAFETY: between fork and exec, only fcntl and dup2 (async-signal-safe), no allocation.
    unsafe {
        cmd.pre_exec(move || {
            // Above the targets first, so that placing one never overwrites another.
            let mut high = [0; 8];
            for (i, fd) in sources.iter().enumerate() {
                high[i] = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 100);
                if high[i] < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (i, fd) in high[..sources.len()].iter().enumerate() {
                // dup2 leaves the new descriptor open across exec.
                if libc::dup2(*fd, 3 + i as i32) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    cmd
}

#[test]
fn the_master_serves_on_the_sockets_systemd_passes() {
    let dir = tempfile::tempdir().unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = tcp.local_addr().unwrap().port();
    let path = dir.path().join("admin.sock");
    let unix = UnixListener::bind(&path).unwrap();
    let cmd = activated_command(
        &[tcp.as_raw_fd(), unix.as_raw_fd()],
        "web:admin",
        &[
            ("WORKERS", "2".into()),
            ("HELPER_UNIX", path.display().to_string()),
        ],
    );
    let mut helper = Helper::start_command(cmd, tempfile::tempdir().unwrap());
    assert_eq!(helper.port, port, "the master listens where systemd bound");
    let status = helper.wait_ready(2);
    // Served on both: the TCP socket (the helper's HTTP calls) and the Unix one.
    assert_eq!(helper.get("/status")["slots"].as_array().unwrap().len(), 2);
    let mut conn = UnixStream::connect(&path).unwrap();
    conn.write_all(b"GET /status HTTP/1.0\r\n\r\n").unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
    for pid in ready_pids(&status) {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        assert!(
            !environ
                .split(|&b| b == 0)
                .any(|entry| entry.starts_with(b"LISTEN_")),
            "worker {pid} inherited LISTEN_*"
        );
    }
    helper.signal(Signal::SIGTERM);
    assert!(helper.wait_exit().success());
    assert!(
        path.exists(),
        "the master removed a socket file that systemd owns"
    );
}

#[test]
fn passed_sockets_that_do_not_match_the_listeners_are_a_clear_error() {
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Two listeners (TCP and a Unix path), one socket passed.
    let mut cmd = activated_command(
        &[tcp.as_raw_fd()],
        "web",
        &[
            ("WORKERS", "1".into()),
            (
                "HELPER_UNIX",
                dir.path().join("s.sock").display().to_string(),
            ),
        ],
    );
    let out = common::run_to_exit(&mut cmd);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("systemd passed 1 listening sockets (LISTEN_FDS) but the cluster has 2"),
        "{stderr}"
    );
}

#[test]
fn a_passed_socket_of_the_wrong_kind_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    // The first listener is TCP; systemd passed a Unix socket.
    let unix = UnixListener::bind(dir.path().join("s.sock")).unwrap();
    let mut cmd = activated_command(&[unix.as_raw_fd()], "web", &[("WORKERS", "1".into())]);
    let out = common::run_to_exit(&mut cmd);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("(fd 3) is not a TCP socket"), "{stderr}");
}

#[test]
fn sockets_passed_to_another_process_are_not_taken() {
    // LISTEN_PID names another process: the master binds its own listener.
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let passed = tcp.local_addr().unwrap().port();
    let cmd = activated_command_for("1", &[tcp.as_raw_fd()], "web", &[("WORKERS", "1".into())]);
    let helper = Helper::start_command(cmd, tempfile::tempdir().unwrap());
    assert_ne!(helper.port, passed);
    helper.wait_ready(1);
    assert!(helper
        .out
        .position(|l| l.contains("socket activation"))
        .is_none());
}
