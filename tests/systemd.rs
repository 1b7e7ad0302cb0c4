//! The master under systemd: the `sd_notify` protocol spoken to a datagram socket bound by the
//! test as `NOTIFY_SOCKET`, as systemd binds it for a `Type=notify` unit.

mod common;

use std::os::unix::net::UnixDatagram;
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
}

#[test]
fn the_master_tells_systemd_ready_reloading_stopping_and_pings_its_watchdog() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify");
    let mut systemd = Systemd::bind(&path);
    let mut helper = Helper::start(
        2,
        &[
            ("NOTIFY_SOCKET", path.display().to_string()),
            ("WATCHDOG_USEC", "200000".to_string()),
        ],
    );

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

    helper.signal(Signal::SIGTERM);
    systemd.wait_for("STOPPING=1");
    assert!(helper.wait_exit().success());
}

#[test]
fn without_notify_socket_nothing_is_sent_and_a_bad_one_is_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens there: the master logs it and serves all the same.
    let missing = dir.path().join("nobody");
    let mut helper = Helper::start(1, &[("NOTIFY_SOCKET", missing.display().to_string())]);
    helper.wait_ready(1);
    helper.signal(Signal::SIGTERM);
    assert!(helper.wait_exit().success());
}
