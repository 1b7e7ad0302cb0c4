//! Telling systemd how the cluster is doing: the `sd_notify` protocol of a `Type=notify` (or
//! `Type=notify-reload`) unit, spoken by the master only.
//!
//! The master sends one datagram per change to the socket named by `NOTIFY_SOCKET` (a path, or
//! `@name` in the abstract namespace), newline-separated `KEY=value` lines:
//!
//! ```text
//! READY=1                      once every slot has a Ready worker (and again after a reload)
//! STATUS=4 of 4 workers Ready  whenever that count changes, for `systemctl status`
//! RELOADING=1                  when a rolling reload starts, with MONOTONIC_USEC=<now>
//! STOPPING=1                   when the cluster starts to stop
//! WATCHDOG=1                   every half of WATCHDOG_USEC, once the supervisor answered
//! ```
//!
//! Without `NOTIFY_SOCKET` nothing is sent. The variables are not passed on to the workers:
//! systemd listens to the main process (`NotifyAccess=main`), and a worker that spoke for the
//! unit would be wrong about it.
//!
//! Socket activation: when systemd passes listening sockets (`LISTEN_FDS`, for this process's
//! `LISTEN_PID`), the master takes them as its listeners instead of binding: the first passed
//! socket is the first listener added to the builder, and so on; the counts and the kinds (TCP
//! or Unix) must agree. `LISTEN_FDNAMES` names them in the log.
//!
//! Files: `notify.rs` the notify protocol, `activation.rs` the sockets passed.

mod activation;
mod notify;

pub(crate) use activation::listen_fds;
pub(crate) use notify::{finish, run, Notifier, Reloads};

/// The environment variables of the protocols, which workers do not inherit.
pub(crate) const ENV: [&str; 6] = [
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
];
