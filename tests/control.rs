//! The control socket and the `multiprocess` CLI against a running cluster.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{request, Conn, Helper};
use nix::sys::signal::Signal;
use serde_json::Value;

fn cli(socket: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_multiprocess"));
    cmd.arg("--socket").arg(socket).args(args);
    common::run_to_exit(&mut cmd)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The CLI found no master to answer (exit status 3), and said `why`.
fn assert_unreachable(out: &Output, why: &str) {
    assert_eq!(out.status.code(), Some(3), "{}", stderr(out));
    assert!(stderr(out).contains(why), "{}", stderr(out));
}

/// A cluster with a control socket in a directory of its own (made by the master).
fn start(workers: usize, env: &[(&str, String)]) -> (Helper, tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("ctl").join("control.sock");
    let mut env = env.to_vec();
    env.push(("CONTROL_SOCKET", socket.display().to_string()));
    let helper = Helper::start(workers, &env);
    helper.wait_ready(workers);
    (helper, dir, socket)
}

#[test]
fn status_scale_reload_and_stop_from_the_shell() {
    let (mut helper, _dir, socket) = start(2, &[]);
    // Only its user may open it.
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(socket.parent().unwrap()), 0o700);
    assert_eq!(mode(&socket), 0o600);

    for _ in 0..10 {
        request(helper.port, "GET", "/consume").unwrap();
    }
    let out = cli(&socket, &["status"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    assert!(
        table.starts_with("2 workers Ready of 2 slots, running"),
        "{table}"
    );
    assert!(table.contains("slot  pid"), "{table}");
    assert_eq!(
        table.lines().filter(|l| l.contains(" ready ")).count(),
        2,
        "{table}"
    );

    let out = cli(&socket, &["status", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let status: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let slots = status["slots"].as_array().unwrap();
    assert_eq!(slots.len(), 2);
    let mut messages = 0;
    for slot in slots {
        let worker = &slot["workers"][0];
        assert!(worker["pid"].as_u64().unwrap() > 0, "{worker}");
        assert!(
            worker["rss_bytes"].as_u64().unwrap() > 1024 * 1024,
            "{worker}"
        );
        assert!(worker["cpu_seconds"].as_f64().is_some(), "{worker}");
        assert_eq!(worker["state"], "Ready");
        messages += worker["messages"].as_u64().unwrap();
    }
    assert!(messages >= 10, "the consumes were delivered: {status}");

    let out = cli(&socket, &["scale", "3"]);
    assert!(out.status.success(), "{}", stderr(&out));
    helper.wait_ready(3);

    let out = cli(&socket, &["reload"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("reload complete"));
    let status = helper.wait_ready(3);
    assert!(
        common::workers(&status).iter().all(|w| w.1 == 2),
        "{status}"
    );
    let out = cli(&socket, &["status", "--json"]);
    let status: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(status["totals"]["reloads_succeeded"], 1, "{status}");
    assert_eq!(status["totals"]["restarts_exited"], 0, "{status}");
    let table = stdout(&cli(&socket, &["status"]));
    assert!(
        table.ends_with(
            "replacements: 0 after an exit, 0 unhealthy, 0 recycled; reloads: 1 succeeded, 0 \
             failed\n"
        ),
        "{table}"
    );

    let out = cli(&socket, &["stop"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Asked again (an ExecStop= and a signal, say): the same stop, still a drain.
    let again = cli(&socket, &["stop"]);
    assert!(
        again.status.success() || again.status.code() == Some(3),
        "{}",
        stderr(&again)
    );
    assert!(helper.wait_exit().success());
    assert!(
        helper
            .out
            .position(|l| l.contains("killing worker"))
            .is_none(),
        "a second stop killed the workers"
    );
    assert!(!socket.exists(), "the socket outlived the master");
    assert!(
        !socket.parent().unwrap().exists(),
        "its directory outlived the master"
    );
}

#[test]
fn bad_input_gets_a_clear_message_and_a_non_zero_exit() {
    let (helper, dir, socket) = start(1, &[]);
    let usage = |args: &[&str], says: &str| {
        let out = cli(&socket, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    };
    usage(&["bogus"], "unknown command \"bogus\"");
    usage(&["scale", "many"], "scale to \"many\" workers?");
    usage(&[], "no command");
    usage(&["scale"], "scale needs a number of workers");
    usage(
        &["--timeout", "0", "status"],
        "--timeout needs a number of seconds",
    );
    let out = cli(&socket, &["scale", "0"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("cannot scale: 0 workers"),
        "{}",
        stderr(&out)
    );

    // Nothing there, or not a socket.
    let out = cli(&dir.path().join("nobody.sock"), &["status"]);
    assert_unreachable(&out, "no socket at");
    let file = dir.path().join("file");
    std::fs::write(&file, b"").unwrap();
    assert_unreachable(&cli(&file, &["status"]), "is not a socket");

    // Something there, but not a master.
    let other = dir.path().join("other.sock");
    let listener = UnixListener::bind(&other).unwrap();
    let impostor = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut request = String::new();
        BufReader::new(&conn).read_line(&mut request).unwrap();
        conn.write_all(b"220 hello, I am a mail server\n").unwrap();
    });
    let out = cli(&other, &["status"]);
    impostor.join().unwrap();
    assert_unreachable(&out, "is not a multiprocess master's control socket");

    // Something that listens and takes no connection, its backlog full: the wait is bounded.
    use socket2::{Domain, SockAddr, Socket, Type};
    let stuck = dir.path().join("stuck.sock");
    let addr = SockAddr::unix(&stuck).unwrap();
    let listener = Socket::new(Domain::UNIX, Type::STREAM, None).unwrap();
    listener.bind(&addr).unwrap();
    listener.listen(0).unwrap();
    let mut queued = Vec::new();
    loop {
        let conn = Socket::new(Domain::UNIX, Type::STREAM, None).unwrap();
        conn.set_nonblocking(true).unwrap();
        match conn.connect(&addr) {
            Ok(()) => queued.push(conn),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("{e}"),
        }
        assert!(queued.len() < 1000, "the backlog never filled");
    }
    let out = cli(&stuck, &["--timeout", "0.5", "status"]);
    assert_unreachable(&out, "no answer from");
    // One that takes the connection and never answers.
    let silent = Socket::new(Domain::UNIX, Type::STREAM, None).unwrap();
    let silent_path = dir.path().join("silent.sock");
    silent.bind(&SockAddr::unix(&silent_path).unwrap()).unwrap();
    silent.listen(8).unwrap();
    let out = cli(&silent_path, &["--timeout", "0.5", "status"]);
    assert_unreachable(&out, "no answer from");
    assert!(stderr(&out).contains("within 500ms"), "{}", stderr(&out));
    // A reload too: it waits for its rollout only once a master has answered.
    let out = cli(&silent_path, &["--timeout", "0.5", "reload"]);
    assert_unreachable(&out, "within 500ms");
    let out = cli(&silent_path, &["--timeout", "forever", "status"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    drop((listener, queued, silent));

    // The protocol itself: garbage is answered and the connection goes on; a line over the
    // limit is answered and closes it.
    let conn = UnixStream::connect(&socket).unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut ask = |line: &[u8]| {
        // The master may close before it has read all of a line over the limit.
        let _ = (&conn).write_all(line);
        let mut answer = String::new();
        reader.read_line(&mut answer).unwrap();
        answer
    };
    let answer: Value = serde_json::from_str(&ask(b"{\"cmd\":\"rm -rf\"}\n")).unwrap();
    assert_eq!(answer["ok"], false);
    assert!(
        answer["error"].as_str().unwrap().contains("not a request"),
        "{answer}"
    );
    let answer: Value = serde_json::from_str(&ask(b"\xff\xfe\n")).unwrap();
    assert_eq!(answer["error"], "a request that is not UTF-8");
    let answer: Value = serde_json::from_str(&ask(b"{\"cmd\":\"status\"}\n")).unwrap();
    assert_eq!(answer["ok"], true, "{answer}");
    let mut long = vec![b'x'; 70 * 1024];
    long.push(b'\n');
    let answer: Value = serde_json::from_str(&ask(&long)).unwrap();
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("over 65536 bytes"),
        "{answer}"
    );
    assert_eq!(
        ask(b"{\"cmd\":\"status\"}\n"),
        "",
        "closed after a line over the limit"
    );
    drop(helper);
}

#[test]
fn a_master_that_stops_mid_call_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let hold = dir.path().join("hold");
    let (helper, _ctl, socket) = start(1, &[("HELPER_HOLD_FILE", hold.display().to_string())]);
    // Replacements never get Ready: the reload waits until the master is gone.
    std::fs::write(&hold, b"").unwrap();
    let reload = {
        let socket = socket.clone();
        std::thread::spawn(move || cli(&socket, &["reload"]))
    };
    helper.out.wait_line("the reload under way", |l| {
        l.contains("reload: rolling every slot")
    });
    helper.signal(Signal::SIGKILL);
    let out = reload.join().unwrap();
    assert_unreachable(&out, "closed the connection without answering");
}

#[test]
fn a_stopped_master_is_given_up_on_and_does_not_act_on_orders_later() {
    let (helper, _dir, socket) = start(1, &[]);
    helper.signal(Signal::SIGSTOP);
    // The reload's check waits the timeout; an order, 2 s more for an answer read in time.
    for (args, waited) in [
        (&["--timeout", "1", "reload"][..], "within 1s"),
        (&["--timeout", "1", "stop"], "within 3s"),
        (&["--timeout", "1", "scale", "2"], "within 3s"),
    ] {
        let out = cli(&socket, args);
        assert_unreachable(&out, "no answer from");
        assert!(stderr(&out).contains(waited), "{args:?}: {}", stderr(&out));
    }
    helper.signal(Signal::SIGCONT);
    // The stop and the scale, read past their deadlines: refused, not carried out (the reload
    // was never sent: the master did not answer first).
    let (first, _) = helper
        .out
        .wait_line_from(0, "an order refused as late", |l| {
            l.contains("past its deadline is not carried out")
        });
    helper
        .out
        .wait_line_from(first + 1, "a second order refused as late", |l| {
            l.contains("past its deadline is not carried out")
        });
    let out = cli(&socket, &["status", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let status: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(status["phase"], "Running", "{status}");
    assert_eq!(status["slots"].as_array().unwrap().len(), 1, "{status}");
    assert_eq!(status["totals"]["reloads_succeeded"], 0, "{status}");
    // The protocol says why to a client that sets a deadline already past.
    let conn = UnixStream::connect(&socket).unwrap();
    (&conn)
        .write_all(b"{\"cmd\":\"stop\",\"before\":1}\n")
        .unwrap();
    let mut answer = String::new();
    BufReader::new(&conn).read_line(&mut answer).unwrap();
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["ok"], false, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("past its deadline"),
        "{answer}"
    );
    assert_eq!(cli(&socket, &["status"]).status.code(), Some(0));
}

#[test]
fn the_workers_of_removed_slots_are_listed_while_they_drain() {
    // A drain waits for a request of a minute, well within the kill timeout.
    let (helper, _dir, socket) = start(2, &[("HELPER_KILL_TIMEOUT_MS", "300000".into())]);
    // A connection that slot 1's worker took (the one scaling down takes away), asked for a
    // request of a minute.
    let mut tries = 0;
    let mut conn = loop {
        let mut conn = Conn::connect(helper.port).unwrap();
        let id: Value = serde_json::from_str(&conn.request("GET", "/id").unwrap().body).unwrap();
        if id["slot"] == 1 {
            break conn;
        }
        tries += 1;
        assert!(tries < 10_000, "slot 1 took no connection");
    };
    let slow = std::thread::spawn(move || conn.request("GET", "/slow?ms=60000"));
    helper.out.wait_line("slot 1's slow request", |l| {
        l.contains("slow request started") && l.contains("slot=1 ")
    });
    let out = cli(&socket, &["scale", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "scaled to 1 worker\n");

    let out = cli(&socket, &["status", "--json"]);
    let status: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(status["slots"].as_array().unwrap().len(), 1, "{status}");
    let removed = status["removed"].as_array().unwrap();
    assert_eq!(removed.len(), 1, "{status}");
    assert_eq!(removed[0]["slot"], 1, "{status}");
    let worker = &removed[0]["workers"][0];
    assert_eq!(worker["state"], "Draining", "{status}");
    assert!(worker["rss_bytes"].as_u64().unwrap() > 0, "{status}");

    let table = stdout(&cli(&socket, &["status"]));
    assert!(
        table.starts_with("1 worker Ready of 1 slot, running"),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("1 (removed)") && l.contains(" draining ")),
        "{table}"
    );
    // The cluster goes down with its request: its answer does not matter.
    drop(helper);
    let _ = slow.join();
}

#[test]
fn a_stop_right_after_a_reload_ends_every_worker_cleanly() {
    let (mut helper, _dir, socket) = start(2, &[]);
    let reload = UnixStream::connect(&socket).unwrap();
    let stop = UnixStream::connect(&socket).unwrap();
    // The reload starts new workers, which the stop then drains (or refuses Ready): none may
    // fail for it, for want of a listener or of being Ready.
    (&reload).write_all(b"{\"cmd\":\"reload\"}\n").unwrap();
    (&stop).write_all(b"{\"cmd\":\"stop\"}\n").unwrap();
    let mut answer = String::new();
    BufReader::new(&stop).read_line(&mut answer).unwrap();
    assert!(answer.contains("\"ok\":true"), "{answer}");
    assert!(helper.wait_exit().success());
    assert!(
        helper
            .out
            .position(|l| l.contains("ERROR") || l.contains("worker fails"))
            .is_none(),
        "a worker failed"
    );
}
