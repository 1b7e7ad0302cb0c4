//! The demo cluster under test: started in its own process group, its log captured, and the
//! whole group killed whenever the driver leaves without a clean stop (an error, a panic, a
//! signal, or the driver's own death).

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::opts::Opts;
use crate::procfs::{self, now_us, secs};

/// The process group a signal handler must kill before the driver dies.
static GROUP: AtomicI32 = AtomicI32::new(0);

/// A kill the master logged: "killing worker ... pid=N cause=...".
#[derive(Debug, Clone)]
pub struct LoggedKill {
    /// When the driver read the line.
    pub at: u64,
    /// The line's own timestamp: the master logs before it sends SIGKILL.
    pub logged: Option<u64>,
    pub pid: u32,
    pub cause: String,
}

/// What the driver learns from the cluster's log.
#[derive(Default)]
pub struct Log {
    pub kills: Vec<LoggedKill>,
    /// Worker exits the master logged ("worker exited ... pid=N", after it reaped the worker):
    /// pid and the line's timestamp.
    pub exits: Vec<(u32, u64)>,
    pub warns: usize,
    pub errors: usize,
    /// The last lines, for the report when something goes wrong.
    pub tail: Vec<String>,
}

/// The running cluster. Dropping it kills its whole process group.
pub struct Cluster {
    child: Child,
    pub pid: u32,
    pub port: u16,
    pub log_path: PathBuf,
    pub log: Arc<Mutex<Log>>,
    /// The log file, shared with the threads that copy the cluster's output into it.
    pub file: Arc<Mutex<File>>,
    /// Set once the group is known to be empty: nothing is left to kill.
    clean: bool,
}

/// `demo-cluster` next to this executable (both are examples of the same build).
pub fn default_exe() -> PathBuf {
    let me = std::env::current_exe().expect("current_exe");
    me.with_file_name("demo-cluster")
}

/// A port that was free a moment ago: bound to 127.0.0.1:0 and released.
fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Cluster {
    pub fn start(opts: &Opts) -> Result<Cluster, String> {
        let exe = opts.exe.clone().map_or_else(default_exe, PathBuf::from);
        if !exe.exists() {
            return Err(format!(
                "{} is missing: build it with `cargo build --example demo-cluster` \
                 (same profile and target dir as this driver)",
                exe.display()
            ));
        }
        let port = free_port().map_err(|e| format!("no free port: {e}"))?;
        let log_path = opts.log.clone().map(PathBuf::from).unwrap_or_else(|| {
            std::env::temp_dir().join(format!("chaos-cluster-{}.log", std::process::id()))
        });
        let file = File::create(&log_path)
            .map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
        install_signal_handlers();
        let mut cmd = Command::new(&exe);
        cmd.env("PORT", port.to_string())
            .env("WORKERS", opts.workers.to_string())
            .env(
                "HEARTBEAT_TIMEOUT_MS",
                opts.heartbeat_timeout_ms.to_string(),
            )
            .env("KILL_TIMEOUT_MS", opts.kill_timeout_ms.to_string())
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .env_remove(multiprocess::WORKER_ENV)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        // SAFETY: prctl is async-signal-safe and allocates nothing. If the driver dies, even
        // by SIGKILL, the master gets SIGKILL (and its workers theirs, by their own setting).
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
        let pid = child.id();
        GROUP.store(pid as i32, Ordering::SeqCst);
        let log = Arc::new(Mutex::new(Log::default()));
        let file = Arc::new(Mutex::new(file));
        read_log(child.stdout.take().expect("piped"), &log, &file);
        read_log(child.stderr.take().expect("piped"), &log, &file);
        Ok(Cluster {
            child,
            pid,
            port,
            log_path,
            log,
            file,
            clean: false,
        })
    }

    /// The master's exit status, if it has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGTERM to the master, then waits for its exit within `deadline`.
    pub fn stop(&mut self, deadline: Duration) -> Result<(ExitStatus, Duration), String> {
        let start = Instant::now();
        signal(self.pid as i32, libc::SIGTERM);
        loop {
            if let Some(status) = self.try_wait() {
                return Ok((status, start.elapsed()));
            }
            if start.elapsed() > deadline {
                return Err(format!(
                    "the master did not exit within {deadline:?} of SIGTERM"
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The processes of the cluster's group still alive; an empty group is remembered so that
    /// dropping the cluster kills nothing.
    pub fn leftovers(&mut self) -> Vec<(u32, procfs::Stat)> {
        let left = procfs::group(self.pid);
        if left.is_empty() && self.try_wait().is_some() {
            self.clean = true;
            GROUP.store(0, Ordering::SeqCst);
        }
        left
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !self.clean {
            // The whole group: the master and every worker, stopped ones included.
            signal(-(self.pid as i32), libc::SIGKILL);
            let _ = self.child.wait();
            GROUP.store(0, Ordering::SeqCst);
        }
    }
}

/// Kills the cluster's whole group, if one runs (the watchdog's way out).
pub fn kill_group_now() {
    let group = GROUP.swap(0, Ordering::SeqCst);
    if group > 0 {
        signal(-group, libc::SIGKILL);
    }
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// SIGINT, SIGTERM, SIGHUP to the driver: kill the cluster's group, then die of the signal.
fn install_signal_handlers() {
    extern "C" fn on_signal(sig: libc::c_int) {
        let group = GROUP.load(Ordering::SeqCst);
        // SAFETY: kill, signal and raise are async-signal-safe.
        unsafe {
            if group > 0 {
                libc::kill(-group, libc::SIGKILL);
            }
            libc::signal(sig, libc::SIG_DFL);
            libc::raise(sig);
        }
    }
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only calls async-signal-safe functions.
        unsafe {
            libc::signal(
                sig,
                on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
            );
        }
    }
}

/// Copies the cluster's output to the log file, each line stamped with the driver's clock,
/// and picks out the kills the master logs.
fn read_log(stream: impl Read + Send + 'static, log: &Arc<Mutex<Log>>, file: &Arc<Mutex<File>>) {
    let (log, file) = (log.clone(), file.clone());
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            let at = now_us();
            let line = strip_ansi(&line);
            let _ = writeln!(file.lock().unwrap(), "[{:10.6}] {line}", secs(at));
            let mut log = log.lock().unwrap();
            if line.contains(" WARN ") {
                log.warns += 1;
            }
            if line.contains(" ERROR ") {
                log.errors += 1;
            }
            if let Some(rest) = line.split("killing worker").nth(1) {
                if let Some(pid) = field(rest, "pid") {
                    let cause = rest
                        .split_once("cause=")
                        .map_or(String::new(), |(_, c)| c.to_string());
                    let logged = line.split_whitespace().find_map(procfs::log_time_us);
                    if let Ok(pid) = pid.parse() {
                        log.kills.push(LoggedKill {
                            at,
                            logged,
                            pid,
                            cause,
                        });
                    }
                }
            }
            if line.contains(" exited") {
                let logged = line.split_whitespace().find_map(procfs::log_time_us);
                if let (Some(pid), Some(logged)) = (field(&line, "pid"), logged) {
                    if let Ok(pid) = pid.parse() {
                        log.exits.push((pid, logged));
                    }
                }
            }
            log.tail.push(line);
            if log.tail.len() > 60 {
                log.tail.remove(0);
            }
        }
    });
}

/// The value of `name=value` in a log line's fields.
fn field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.split_whitespace()
        .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ ... final byte in @..~
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) && c != '[' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
