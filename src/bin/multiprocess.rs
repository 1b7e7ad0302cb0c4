//! `multiprocess`: status and orders for a running cluster, through its master's control
//! socket (`Builder::control_socket`).
//!
//! ```text
//! multiprocess --socket PATH status [--json]   the slots, like `pm2 list` (or JSON)
//! multiprocess --socket PATH monit [SECONDS]   the same, refreshed in place (Ctrl-C ends it)
//! multiprocess --socket PATH reload            a rolling reload; waits, exit status 0 if it succeeded
//! multiprocess --socket PATH scale N           N worker slots
//! multiprocess --socket PATH stop              drain every worker, then the master exits
//! ```
//!
//! `--socket` defaults to `$MULTIPROCESS_SOCKET`. `--timeout SECONDS` (default 30) bounds the
//! wait for a connection and for an answer (a `reload` first checks, within it, that the master
//! answers, then waits for its rollout however long). An order carries its deadline (`before`,
//! milliseconds since the Unix epoch): a master that reads it later, after the CLI gave up (it
//! was stopped meanwhile, say), does not carry it out. Exit status: 0 done, 1 the master refused
//! or failed (its reason is printed), 2 a usage error, 3 no master answered.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

const USAGE: &str = "usage: multiprocess [--socket PATH] [--timeout SECONDS] <command>

commands:
  status [--json]   every slot: pid, generation, state, uptime, restarts, memory, CPU, messages
  monit [SECONDS]   the status, refreshed in place every SECONDS (default 1); Ctrl-C ends it
  reload            roll every worker, new first; waits for the outcome
  scale N           make the cluster N worker slots
  stop              drain every worker; the master exits once they have

--socket defaults to $MULTIPROCESS_SOCKET (the path given to Builder::control_socket).
--timeout (default 30, from 0.001 to 86400 seconds) bounds the wait for the master to connect
and to answer (a reload waits for its rollout however long, once the master has answered).
An order the master reads after the CLI gave up waiting is not carried out.

exit status: 0 done, 1 the master refused or failed, 2 a usage error, 3 no master answered";

/// The master's control socket, and how long to wait for it.
struct Socket {
    path: PathBuf,
    timeout: Duration,
}

impl Socket {
    fn display(&self) -> std::path::Display<'_> {
        self.path.display()
    }
}

/// How a run ends.
enum Failure {
    Usage(String),
    /// The master answered no.
    Refused(String),
    /// No master (or not one) at the other end.
    Unreachable(String),
}

fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(why)) => {
            eprintln!("multiprocess: {why}\n\n{USAGE}");
            ExitCode::from(2)
        }
        Err(Failure::Refused(why)) => {
            eprintln!("multiprocess: {why}");
            ExitCode::from(1)
        }
        Err(Failure::Unreachable(why)) => {
            eprintln!("multiprocess: {why}");
            ExitCode::from(3)
        }
    }
}

fn run(args: Vec<String>) -> Result<(), Failure> {
    let mut socket = std::env::var_os("MULTIPROCESS_SOCKET").map(PathBuf::from);
    let mut timeout = Duration::from_secs(30);
    let mut rest = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--socket" | "-s" => {
                let path = args
                    .next()
                    .ok_or_else(|| Failure::Usage("--socket needs a path".into()))?;
                socket = Some(PathBuf::from(path));
            }
            "--timeout" => {
                timeout = args
                    .next()
                    .and_then(|s| s.parse::<f64>().ok())
                    .filter(|s| s.is_finite() && *s >= 0.001 && *s <= 86400.0)
                    .map(Duration::from_secs_f64)
                    .ok_or_else(|| {
                        Failure::Usage("--timeout needs a number of seconds, 0.001 to 86400".into())
                    })?;
            }
            "--help" | "-h" | "help" => {
                let _ = out(&format!("{USAGE}\n"));
                return Ok(());
            }
            "--version" | "-V" => {
                let _ = out(&format!("multiprocess {}\n", env!("CARGO_PKG_VERSION")));
                return Ok(());
            }
            _ => rest.push(arg),
        }
    }
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    let path = socket.ok_or_else(|| {
        Failure::Usage("which master? give --socket PATH (or MULTIPROCESS_SOCKET)".into())
    })?;
    let socket = Socket { path, timeout };
    match rest.as_slice() {
        ["status"] => {
            let _ = out(&table(&status(&socket)?));
        }
        ["status", "--json"] => {
            let _ = out(&format!("{}\n", status(&socket)?));
        }
        ["monit"] => monit(&socket, Duration::from_secs(1))?,
        ["monit", seconds] => {
            let every = seconds
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s >= 0.1 && *s <= 3600.0)
                .ok_or_else(|| Failure::Usage(format!("monit every {seconds:?} seconds?")))?;
            monit(&socket, Duration::from_secs_f64(every))?
        }
        ["reload"] => {
            // Only a master that answers is waited on without limit: one stopped, or something
            // that accepts and never answers, fails within the timeout.
            status(&socket)?;
            call(&socket, &json!({"cmd": "reload"}))?;
            let _ = out("reload complete: every slot runs a new worker\n");
        }
        ["scale", n] => {
            let workers: usize = n
                .parse()
                .map_err(|_| Failure::Usage(format!("scale to {n:?} workers?")))?;
            call(&socket, &json!({"cmd": "scale", "workers": workers}))?;
            let _ = out(&format!("scaled to {}\n", plural(workers as u64, "worker")));
        }
        ["scale"] => return Err(Failure::Usage("scale needs a number of workers".into())),
        ["stop"] => {
            call(&socket, &json!({"cmd": "stop"}))?;
            let _ = out("stopping: the workers drain, then the master exits\n");
        }
        [] => return Err(Failure::Usage("no command".into())),
        other => {
            return Err(Failure::Usage(format!(
                "unknown command {:?}",
                other.join(" ")
            )))
        }
    }
    Ok(())
}

/// Connects to the control socket, giving up after its timeout (a listener that accepts
/// nothing, its backlog full, would otherwise hold a blocking connect for ever).
fn connect(to: &Socket) -> std::io::Result<UnixStream> {
    use socket2::{Domain, SockAddr, Type};
    let socket = socket2::Socket::new(Domain::UNIX, Type::STREAM, None)?;
    // A Unix socket's blocking connect waits at most its send timeout.
    socket.set_write_timeout(Some(to.timeout))?;
    socket.connect(&SockAddr::unix(&to.path)?)?;
    socket.set_write_timeout(None)?;
    Ok(socket.into())
}

/// Sends one request and reads its answer: the answer's fields if it says ok.
fn call(socket: &Socket, request: &Value) -> Result<Value, Failure> {
    let unreachable = |e: std::io::Error| Failure::Unreachable(why_unreachable(socket, &e));
    socket_file(socket)?;
    let mut stream = connect(socket).map_err(unreachable)?;
    // A reload may take as long as its rollout; anything else is answered at once.
    if request["cmd"] != "reload" {
        stream
            .set_read_timeout(Some(socket.timeout))
            .map_err(unreachable)?;
    }
    // An order read after this CLI gave up is not carried out (see the module's docs).
    let mut request = request.clone();
    if request["cmd"] != "status" {
        let deadline = SystemTime::now() + socket.timeout;
        let millis = deadline
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        request["before"] = json!(millis);
    }
    stream
        .write_all(format!("{request}\n").as_bytes())
        .map_err(unreachable)?;
    let mut line = String::new();
    BufReader::new((&stream).take(16 * 1024 * 1024))
        .read_line(&mut line)
        .map_err(unreachable)?;
    if line.is_empty() {
        return Err(Failure::Unreachable(format!(
            "the master at {} closed the connection without answering (stopped meanwhile?)",
            socket.display()
        )));
    }
    let answer: Value = serde_json::from_str(&line).map_err(|_| {
        Failure::Unreachable(format!(
            "{} is not a multiprocess master's control socket (it answered {:?})",
            socket.display(),
            line.chars().take(80).collect::<String>()
        ))
    })?;
    match answer.get("ok").and_then(Value::as_bool) {
        Some(true) => Ok(answer),
        Some(false) => Err(Failure::Refused(
            answer["error"].as_str().unwrap_or("refused").to_owned(),
        )),
        None => Err(Failure::Unreachable(format!(
            "{} is not a multiprocess master's control socket (it answered {answer})",
            socket.display()
        ))),
    }
}

/// Why nothing answered, in an operator's words.
fn why_unreachable(socket: &Socket, e: &std::io::Error) -> String {
    use std::io::ErrorKind;
    let path = socket.display();
    match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => format!(
            "no answer from {path} within {:?} (a master stopped, or busy, or not a master)",
            socket.timeout
        ),
        ErrorKind::BrokenPipe | ErrorKind::ConnectionReset => format!(
            "{path} closed the connection without answering: not a multiprocess master's \
             control socket, or its master stopped meanwhile"
        ),
        ErrorKind::ConnectionRefused => {
            format!("nothing listens at {path} (a master that exited left its socket?)")
        }
        _ => format!("no master answers at {path}: {e}"),
    }
}

/// Whether there is a socket at the path at all: a clearer message than `connect`'s.
fn socket_file(socket: &Socket) -> Result<(), Failure> {
    use std::os::unix::fs::FileTypeExt;
    let path = socket.display();
    match std::fs::metadata(&socket.path) {
        Ok(meta) if meta.file_type().is_socket() => Ok(()),
        Ok(_) => Err(Failure::Unreachable(format!(
            "{path} is not a socket (give the path of a master's control socket)"
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Failure::Unreachable(format!(
            "no socket at {path}: is the master running, with that control socket?"
        ))),
        Err(e) => Err(Failure::Unreachable(format!("cannot reach {path}: {e}"))),
    }
}

/// "1 worker", "2 workers".
fn plural(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

fn status(socket: &Socket) -> Result<Value, Failure> {
    let mut answer = call(socket, &json!({"cmd": "status"}))?;
    Ok(answer["status"].take())
}

/// The status, refreshed in place until interrupted (or the master goes away).
fn monit(socket: &Socket, every: Duration) -> Result<(), Failure> {
    // A clear screen to start with.
    let _ = out("\x1b[2J");
    loop {
        let status = status(socket)?;
        // Home, the table (each line cleared to its end), then clear what is left below.
        let mut screen = String::from("\x1b[H");
        for line in table(&status).lines() {
            screen.push_str(line);
            screen.push_str("\x1b[K\n");
        }
        screen.push_str(&format!(
            "\nevery {every:?} from {} (Ctrl-C ends)\x1b[K\n\x1b[J",
            socket.display()
        ));
        if out(&screen).is_err() {
            return Ok(());
        }
        std::thread::sleep(every);
    }
}

/// Writes to stdout; a reader gone (`| head`) is not an error worth a panic.
fn out(text: &str) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()
}

/// `pm2 list`, for a status.
fn table(status: &Value) -> String {
    let mut rows = vec![[
        "slot", "pid", "gen", "state", "uptime", "restarts", "memory", "cpu", "messages",
    ]
    .map(String::from)];
    let slots = status["slots"].as_array().into_iter().flatten();
    let removed = status["removed"].as_array().into_iter().flatten();
    for (slot, removed) in slots.map(|s| (s, false)).chain(removed.map(|s| (s, true))) {
        let workers = slot["workers"].as_array().cloned().unwrap_or_default();
        // A slot taken away by scaling, its workers still draining.
        let number = if removed {
            format!("{} (removed)", slot["slot"])
        } else {
            slot["slot"].to_string()
        };
        if workers.is_empty() {
            let state = match slot["backoff_ms"].as_u64() {
                Some(ms) => format!("backoff {}", duration(ms)),
                None => "empty".into(),
            };
            rows.push([
                number.clone(),
                "-".into(),
                "-".into(),
                state,
                "-".into(),
                slot["restarts"].to_string(),
                "-".into(),
                "-".into(),
                "-".into(),
            ]);
        }
        for w in workers {
            rows.push([
                number.clone(),
                w["pid"].to_string(),
                w["generation"].to_string(),
                w["state"].as_str().unwrap_or("?").to_lowercase(),
                w["uptime_ms"].as_u64().map_or("-".into(), duration),
                slot["restarts"].to_string(),
                w["rss_bytes"].as_u64().map_or("-".into(), mib),
                w["cpu_percent"]
                    .as_f64()
                    .map_or("-".into(), |p| format!("{p:.1}%")),
                w["messages"].as_u64().map_or("-".into(), |m| m.to_string()),
            ]);
        }
    }
    let widths: Vec<usize> = (0..9)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = format!(
        "{} Ready of {}, {}\n",
        plural(status["ready"].as_u64().unwrap_or(0), "worker"),
        plural(
            status["slots"].as_array().map_or(0, Vec::len) as u64,
            "slot"
        ),
        status["phase"].as_str().unwrap_or("?").to_lowercase()
    );
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    let t = &status["totals"];
    if t.is_object() {
        out.push_str(&format!(
            "replacements: {} after an exit, {} unhealthy, {} recycled; reloads: {} succeeded, {} \
             failed\n",
            t["restarts_exited"],
            t["restarts_unhealthy"],
            t["restarts_recycled"],
            t["reloads_succeeded"],
            t["reloads_failed"]
        ));
    }
    // The other hosts of a cluster joined over NATS.
    for host in status["hosts"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "host {}: {} workers Ready (heard {} ms ago)\n",
            host["name"].as_str().unwrap_or("?"),
            host["workers"].as_array().map_or(0, Vec::len),
            host["last_heard_ms"]
        ));
    }
    out
}

fn duration(ms: u64) -> String {
    match ms / 1000 {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 86400 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        s => format!("{}d{}h", s / 86400, s % 86400 / 3600),
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}
