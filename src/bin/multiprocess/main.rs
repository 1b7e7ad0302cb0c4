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

mod client;
mod table;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::json;

use client::{call, status, Failure, Socket};
use table::{plural, table};

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
