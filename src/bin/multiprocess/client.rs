//! Talking to the master's control socket: one request, one answer, within the timeout.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

/// The master's control socket, and how long to wait for it.
pub struct Socket {
    pub path: PathBuf,
    pub timeout: Duration,
}

impl Socket {
    pub fn display(&self) -> std::path::Display<'_> {
        self.path.display()
    }
}

/// How a run ends.
pub enum Failure {
    Usage(String),
    /// The master answered no.
    Refused(String),
    /// No master (or not one) at the other end.
    Unreachable(String),
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

/// How long past an order's deadline the CLI still waits for its answer: an order the master
/// read in time is answered, even if acting on it took a moment.
const GRACE: Duration = Duration::from_secs(2);

/// Sends one request and reads its answer: the answer's fields if it says ok. An order carries
/// its deadline (see the module's docs); a master older than that field is asked again
/// without it.
pub fn call(socket: &Socket, request: &Value) -> Result<Value, Failure> {
    if request["cmd"] == "status" {
        return exchange(socket, request, Some(socket.timeout));
    }
    let deadline = SystemTime::now() + socket.timeout;
    let millis = deadline
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut with_deadline = request.clone();
    with_deadline["before"] = json!(millis);
    // A reload may take as long as its rollout; anything else is answered at once.
    let wait = (request["cmd"] != "reload").then_some(socket.timeout + GRACE);
    match exchange(socket, &with_deadline, wait) {
        Err(Failure::Refused(why)) if why.contains("unknown field `before`") => {
            exchange(socket, request, wait)
        }
        answer => answer,
    }
}

/// Sends `request` on a connection of its own and reads its answer, waiting at most `wait`.
fn exchange(socket: &Socket, request: &Value, wait: Option<Duration>) -> Result<Value, Failure> {
    // A timeout names the wait it ran out of: the connection's, or the answer's.
    let waited = |waited: Duration| {
        move |e: std::io::Error| Failure::Unreachable(why_unreachable(socket, waited, &e))
    };
    let unreachable = waited(socket.timeout);
    socket_file(socket)?;
    let mut stream = connect(socket).map_err(unreachable)?;
    stream.set_read_timeout(wait).map_err(unreachable)?;
    stream
        .write_all(format!("{request}\n").as_bytes())
        .map_err(unreachable)?;
    let mut line = String::new();
    BufReader::new((&stream).take(16 * 1024 * 1024))
        .read_line(&mut line)
        .map_err(waited(wait.unwrap_or(socket.timeout)))?;
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
fn why_unreachable(socket: &Socket, waited: Duration, e: &std::io::Error) -> String {
    use std::io::ErrorKind;
    let path = socket.display();
    match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => format!(
            "no answer from {path} within {waited:?} (a master stopped, or busy, or not a \
             master)"
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

pub fn status(socket: &Socket) -> Result<Value, Failure> {
    let mut answer = call(socket, &json!({"cmd": "status"}))?;
    Ok(answer["status"].take())
}
