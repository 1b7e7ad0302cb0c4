#![allow(dead_code)] // Each test binary that includes it uses its own part.

//! A NATS server of the test's own (Debian's `nats-server`, or the one `NATS_SERVER` names), on
//! a free port of the loopback, with JetStream, its log and store in a temporary directory:
//! stopped and removed when dropped, even when the test fails. It counts as started once its log says it listens on
//! its port, so a port taken by something else between finding it free and the server's bind
//! is never mistaken for the server.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl NatsServer {
    pub fn start() -> NatsServer {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "multiprocess-nats-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let mut server = NatsServer {
            child: None,
            port: 0,
            dir,
        };
        // A free port may be taken between finding it and the server binding it: try again.
        for _ in 0..5 {
            server.port = free_port();
            if server.spawn() {
                return server;
            }
        }
        let log = std::fs::read_to_string(server.dir.join("server.log")).unwrap_or_default();
        panic!("nats-server did not start on a free port; its log:\n{log}");
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Stops the server (SIGKILL: as a crash would) and starts it again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.spawn() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not come back on its port"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the server: what a NATS outage looks like to its clients.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn spawn(&mut self) -> bool {
        let log_path = self.dir.join("server.log");
        // Appended to: a restart keeps what the server said before.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("a log file");
        let before = std::fs::metadata(&log_path).map_or(0, |m| m.len()) as usize;
        let mut command = Command::new(program());
        command
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.dir.join("jetstream"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        // SAFETY: prctl is async-signal-safe; between fork and exec nothing else runs. The
        // server dies with the thread that started it, so a test binary killed outright (its
        // `Drop` never run) leaves no server behind.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn();
        let mut child = match child {
            Ok(child) => child,
            Err(e) => panic!(
                "nats-server could not be run ({e}): install Debian's nats-server package \
                 (scripts/test.sh does), or name it in NATS_SERVER"
            ),
        };
        let listening = format!(
            "Listening for client connections on 127.0.0.1:{}",
            self.port
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return false;
            }
            let said = std::fs::read(&log_path).unwrap_or_default();
            if said.len() > before && String::from_utf8_lossy(&said[before..]).contains(&listening)
            {
                self.child = Some(child);
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }
}

/// `NATS_SERVER`, else `nats-server` on the PATH, else Debian's `/usr/sbin/nats-server` (not
/// on a normal user's PATH).
fn program() -> PathBuf {
    if let Some(program) = std::env::var_os("NATS_SERVER") {
        return program.into();
    }
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|dir| dir.join("nats-server").exists()))
        .unwrap_or(false);
    if !on_path && Path::new("/usr/sbin/nats-server").exists() {
        return "/usr/sbin/nats-server".into();
    }
    "nats-server".into()
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").port()
}
