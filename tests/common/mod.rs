//! Starting the test cluster (`examples/cluster-helper`) and talking to it.
//!
//! Every cluster runs in its own process group; dropping the [`Helper`] kills that whole group
//! and removes its temp dir, so a failing test leaves nothing behind.

#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

mod load;

// Not every test binary uses it.
#[allow(unused_imports)]
pub use load::Load;

/// How long any awaited event may take before the test fails: generous, for loaded CI machines.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// The helper binary. `cargo test` builds examples, but `cargo test --test cluster` alone does
/// not, so it is (re)built here once per test binary: the tests never run a stale helper.
pub fn helper_exe() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| example_exe(&["cluster-helper"]))
        .clone()
}

/// Builds `examples` (in this test's target dir and profile) and returns the first one's path.
pub fn example_exe(examples: &[&str]) -> PathBuf {
    let test_exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test> -> target/<profile>/examples/<name>
    let profile_dir = test_exe
        .parent()
        .and_then(Path::parent)
        .expect("profile dir");
    let target_dir = profile_dir.parent().expect("target dir");
    if let (Some(cargo), Some(manifest)) = (
        std::env::var_os("CARGO"),
        std::env::var_os("CARGO_MANIFEST_DIR"),
    ) {
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet"]);
        for example in examples {
            cmd.args(["--example", example]);
        }
        cmd.arg("--manifest-path")
            .arg(Path::new(&manifest).join("Cargo.toml"))
            .arg("--target-dir")
            .arg(target_dir);
        if profile_dir.ends_with("release") {
            cmd.arg("--release");
        }
        // The features this test was built with (`scripts/test.sh` builds with all of them):
        // the examples get the same, and cargo does not rebuild them back and forth.
        if cfg!(feature = "nats") {
            cmd.args(["--features", "nats"]);
        }
        let status = cmd.status().expect("run cargo");
        assert!(status.success(), "building {examples:?} failed: {status}");
    }
    let exe = profile_dir.join("examples").join(examples[0]);
    assert!(
        exe.exists(),
        "{} is missing: build it with `cargo build --example {}`",
        exe.display(),
        examples[0]
    );
    exe
}

/// Lines a process printed (stdout and stderr), shared with the threads that read them.
#[derive(Clone, Default)]
pub struct Output {
    lines: Arc<(Mutex<Vec<String>>, Condvar)>,
}

impl Output {
    fn collect(&self, stream: impl Read + Send + 'static) {
        let out = self.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                if std::env::var_os("HELPER_ECHO").is_some() {
                    eprintln!("| {line}");
                }
                let (lines, cv) = &*out.lines;
                lines.lock().unwrap().push(line);
                cv.notify_all();
            }
        });
    }

    /// Waits for a line that `pred` accepts (any line printed so far counts).
    pub fn wait_line(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        self.wait_line_from(0, what, pred).1
    }

    /// Waits for a line accepted by `pred` at index `from` or later; returns its index.
    pub fn wait_line_from(
        &self,
        from: usize,
        what: &str,
        pred: impl Fn(&str) -> bool,
    ) -> (usize, String) {
        let deadline = Instant::now() + DEADLINE;
        let (lines, cv) = &*self.lines;
        let mut guard = lines.lock().unwrap();
        loop {
            if let Some(i) = (from..guard.len()).find(|&i| pred(&guard[i])) {
                return (i, guard[i].clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no line {what} within {DEADLINE:?}; output:\n{}",
                guard.join("\n")
            );
            guard = cv.wait_timeout(guard, left).unwrap().0;
        }
    }

    /// Every line so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.0.lock().unwrap().clone()
    }

    /// The index of the first line accepted by `pred`.
    pub fn position(&self, pred: impl Fn(&str) -> bool) -> Option<usize> {
        self.lines.0.lock().unwrap().iter().position(|l| pred(l))
    }
}

/// A running test cluster.
pub struct Helper {
    child: Child,
    pub port: u16,
    pub out: Output,
    pub dir: tempfile::TempDir,
    exited: Option<ExitStatus>,
}

impl Helper {
    /// Starts the helper with `workers` workers and extra environment.
    pub fn start(workers: usize, env: &[(&str, String)]) -> Helper {
        Helper::start_exe(&helper_exe(), workers, env, tempfile::tempdir().unwrap())
    }

    /// Starts `exe` (a copy of the helper) with `workers` workers.
    pub fn start_exe(
        exe: &Path,
        workers: usize,
        env: &[(&str, String)],
        dir: tempfile::TempDir,
    ) -> Helper {
        let mut cmd = Command::new(exe);
        cmd.env("WORKERS", workers.to_string()).env("PORT", "0");
        for (k, v) in env {
            cmd.env(k, v);
        }
        Helper::start_command(cmd, dir)
    }

    /// Starts the helper as `cmd` runs it (under another program, say), in a process group of
    /// its own, and waits for its LISTENING line.
    pub fn start_command(mut cmd: Command, dir: tempfile::TempDir) -> Helper {
        cmd.env_remove(multiprocess::WORKER_ENV)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = cmd.spawn().expect("start the helper");
        let out = Output::default();
        out.collect(child.stdout.take().unwrap());
        out.collect(child.stderr.take().unwrap());
        let mut helper = Helper {
            child,
            port: 0,
            out,
            dir,
            exited: None,
        };
        let line = helper
            .out
            .wait_line("LISTENING", |l| l.starts_with("LISTENING "));
        helper.port = line.rsplit(':').next().unwrap().parse().unwrap();
        helper
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// A path in this cluster's temp dir.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn get(&self, path: &str) -> Value {
        request(self.port, "GET", path).unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    pub fn post(&self, path: &str) -> Value {
        request(self.port, "POST", path).unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    /// The master's status snapshot (asked through a worker).
    pub fn status(&self) -> Value {
        self.get("/status")
    }

    /// Waits until `pred` holds for the status snapshot; returns that snapshot.
    pub fn wait_status(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Ok(status) = request(self.port, "GET", "/status") {
                if pred(&status) {
                    return status;
                }
                assert!(
                    Instant::now() < deadline,
                    "status never {what} within {DEADLINE:?}: {status}"
                );
            }
            assert!(
                Instant::now() < deadline,
                "status never {what} within {DEADLINE:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until exactly `n` workers are Ready and no other worker is alive.
    pub fn wait_ready(&self, n: usize) -> Value {
        self.wait_status(&format!("{n} Ready"), |s| {
            ready_pids(s).len() == n && workers(s).len() == n
        })
    }

    /// Sends `sig` to the master.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).unwrap();
    }

    /// Waits for the master to exit.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                self.exited = Some(status);
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the master did not exit within {DEADLINE:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        // The whole group: the master and every worker, whatever state the test left them in.
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.pid()),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.child.wait();
    }
}

/// Every live worker in a status snapshot: (slot, generation, pid, state).
pub fn workers(status: &Value) -> Vec<(u64, u64, u32, String)> {
    let mut all = Vec::new();
    for slot in status["slots"].as_array().expect("slots") {
        for w in slot["workers"].as_array().expect("workers") {
            all.push((
                slot["slot"].as_u64().unwrap(),
                w["generation"].as_u64().unwrap(),
                w["pid"].as_u64().unwrap() as u32,
                w["state"].as_str().unwrap().to_string(),
            ));
        }
    }
    all
}

/// The pids of the Ready workers in a status snapshot.
pub fn ready_pids(status: &Value) -> Vec<u32> {
    workers(status)
        .into_iter()
        .filter(|w| w.3 == "Ready")
        .map(|w| w.2)
        .collect()
}

/// Whether process `pid` is gone (or a zombie: it ran its exit).
pub fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
    }
}

/// Waits until every pid in `pids` is gone.
pub fn wait_gone(pids: &[u32]) {
    let deadline = Instant::now() + DEADLINE;
    while !pids.iter().all(|&p| process_gone(p)) {
        assert!(Instant::now() < deadline, "processes {pids:?} still alive");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One HTTP/1.1 response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub close: bool,
    pub body: String,
}

/// A keep-alive HTTP/1.1 client connection.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    pub fn connect(port: u16) -> io::Result<Conn> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(DEADLINE))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::new(),
        })
    }

    pub fn request(&mut self, method: &str, path: &str) -> io::Result<Response> {
        write!(
            self.stream,
            "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 0\r\n\r\n"
        )?;
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i;
            }
            self.fill()?;
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).to_string();
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::other(format!("bad status line in {head:?}")))?;
        let (mut len, mut close) = (0, false);
        for line in lines {
            let (k, v) = line.split_once(':').unwrap_or((line, ""));
            match k.trim().to_ascii_lowercase().as_str() {
                "content-length" => len = v.trim().parse().unwrap_or(0),
                "connection" => close = v.trim().eq_ignore_ascii_case("close"),
                _ => {}
            }
        }
        let body_start = head_end + 4;
        while self.buf.len() < body_start + len {
            self.fill()?;
        }
        let body = String::from_utf8_lossy(&self.buf[body_start..body_start + len]).to_string();
        self.buf.drain(..body_start + len);
        Ok(Response {
            status,
            close,
            body,
        })
    }

    fn fill(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One request on a new connection; a non-200 answer is an error. The body parsed as JSON
/// (a plain-text body becomes a JSON string).
pub fn request(port: u16, method: &str, path: &str) -> io::Result<Value> {
    let response = Conn::connect(port)?.request(method, path)?;
    if response.status != 200 {
        return Err(io::Error::other(format!(
            "{method} {path}: status {}: {}",
            response.status, response.body
        )));
    }
    Ok(serde_json::from_str(&response.body).unwrap_or(Value::String(response.body)))
}

/// Runs `cmd` in its own process group to its exit (within [`DEADLINE`]) and returns what it
/// printed; the group is killed when this returns or fails, so nothing it started survives.
pub fn run_to_exit(cmd: &mut Command) -> std::process::Output {
    struct KillGroup(i32);
    impl Drop for KillGroup {
        fn drop(&mut self) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(self.0),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("start the process");
    let _guard = KillGroup(child.id() as i32);
    let deadline = Instant::now() + DEADLINE;
    while child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the process did not exit within {DEADLINE:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}
