//! Beyond one host: a Hub's uplink to the Hubs of other hosts, over NATS.
//!
//! A service that outgrows one machine runs one cluster (a master and its workers) per host.
//! Each master's Hub keeps routing its own workers, and [`Hub::join`] gives it one NATS
//! connection to the others: a host with 32 workers holds one connection, not 32, and local
//! traffic never leaves the host.
//!
//! ```no_run
//! # async fn run(hub: messenger::Hub) -> messenger::Result<()> {
//! use messenger::uplink::Uplink;
//!
//! let joined = hub
//!     .join(Uplink::new("nats://10.0.0.5:4222").cluster("shop").host("web-1"))
//!     .await?;
//! // ... every host's Ready workers show in hub.hosts() ...
//! joined.leave().await; // or drop it: the others forget this host at once
//! # Ok(())
//! # }
//! ```
//!
//! **Membership.** Each Hub publishes what it has on `multiprocess.<cluster>.members`: its
//! Ready workers and the events each handles. It does so at once when a worker is made Ready
//! or a connection ends, when it hears of a host new to it (so a newcomer learns of every
//! host at once), after a reconnection, and every third of the expiry
//! ([`Uplink::expiry`], 3 s by default) as a heartbeat, which also carries what changed
//! otherwise (a worker drained, a handler registered after `ready()`). Every Hub keeps the
//! others' last word ([`Hub::hosts`]); a host not heard from for the expiry is forgotten
//! within a third of it more (so one SIGKILLed drops out), and one that stops says so and is
//! forgotten at once. While the NATS connection is down, nothing is queued: the Hub says it
//! all again once connected. Announcements are MessagePack (see `announcement.rs`).
//!
//! **Routes.** Once joined, the messenger's calls span hosts with the same typed API:
//! `broadcast` reaches every host's Ready workers (published once; each Hub delivers to its
//! own), `consume` picks among every host's handlers evenly per worker, `map` asks every Ready
//! worker of the cluster (this host's first, then the others by name;
//! [`Messenger::map_peers`](crate::Messenger::map_peers) names each), [`request_at`] names a
//! host and a slot, and `consume_once` runs once in the whole cluster (settled in a JetStream
//! key-value bucket: see `once.rs`). A sender on another host is [`Peer::Remote`] to a
//! handler. A call in flight when the NATS connection is lost fails at once with
//! [`Error::HostUnreachable`] and is never sent again (`relay.rs` has the details and the
//! bounds).
//!
//! [`request_at`]: crate::Messenger::request_at
//! [`Peer::Remote`]: crate::Peer::Remote
//!
//! **What another host may cost.** An announcement over 256 KiB, with more than 16384
//! distinct event names or 4096 workers, a host name with control characters, or one that
//! does not decode, is ignored (and logged, at most once per heartbeat with a count and the
//! last reason, cut short); at most [`Uplink::max_hosts`] hosts are known at once; the NATS
//! client buffers at most 1024 messages per subscription (each at most the server's
//! `max_payload`, 1 MiB by default). Taking in an announcement builds its index before the
//! Hub's lock is taken: routing waits only for the swap.
//!
//! **Authentication.** Whatever the NATS server asks for is the user's to give, through
//! [`Uplink::options`]: credentials, a token, TLS. Nothing is built in. A host is trusted to
//! be who it says: any client that may publish on `multiprocess.<cluster>.>` can speak for any
//! host of that cluster, so give only the masters that permission (NATS accounts and subject
//! permissions).
//!
//! Files: the settings and the joined handle here, the announcement's bytes in
//! `announcement.rs`, the connection's task in `link.rs`, calls and broadcasts in `relay.rs`
//! (on the subjects of `subjects.rs`; this host's calls waiting for answers in `calls.rs`, the
//! calls of other hosts run here in `served.rs`, the messages they all go in in `outbox.rs`,
//! the frames of a message in `frames.rs`, the broadcasts' acknowledgements in `window.rs`),
//! `consume_once` in `once.rs`; the table of other hosts and the routes across hosts are the
//! Hub's (`hub/hosts.rs`, `hub/router/remote.rs`).

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::hub::{HostId, Hub};
use crate::{Error, Result};

pub(crate) mod announcement;
mod calls;
mod frames;
mod link;
mod once;
mod outbox;
mod relay;
mod served;
mod subjects;
mod window;

/// The longest [`Joined::leave`] waits for the uplink's task (which bounds each of its own
/// waits on NATS to a second).
const LEAVE_TIMEOUT: Duration = Duration::from_secs(5);

/// The NATS client this uplink speaks with: its [`ConnectOptions`](async_nats::ConnectOptions)
/// carry the credentials and TLS settings given to [`Uplink::options`].
pub use async_nats;

/// How a Hub joins the other hosts of its cluster: the NATS servers, the cluster's name and
/// this host's. Given to [`Hub::join`].
pub struct Uplink {
    pub(crate) servers: String,
    pub(crate) cluster: String,
    pub(crate) host: Option<String>,
    pub(crate) options: Option<async_nats::ConnectOptions>,
    pub(crate) expiry: Duration,
    pub(crate) max_hosts: usize,
}

impl Uplink {
    /// The NATS servers to connect to: one URL (`nats://host:4222`, `tls://...`) or several,
    /// separated by commas. The cluster is `default`, the host named after the machine and
    /// the master's pid.
    pub fn new(servers: impl Into<String>) -> Uplink {
        Uplink {
            servers: servers.into(),
            cluster: "default".into(),
            host: None,
            options: None,
            expiry: Duration::from_secs(3),
            max_hosts: 64,
        }
    }

    /// The cluster's name: the hosts that give the same one (on the same NATS servers) are one
    /// cluster. Letters, digits, `-` and `_`, at most 64.
    pub fn cluster(mut self, name: impl Into<String>) -> Uplink {
        self.cluster = name.into();
        self
    }

    /// This host's name, shown to the others (status, logs, errors): at most 255 bytes, no
    /// control characters.
    /// Default: the machine's host name and the master's pid, as `name:pid`.
    pub fn host(mut self, name: impl Into<String>) -> Uplink {
        self.host = Some(name.into());
        self
    }

    /// The NATS client's settings: credentials, TLS, a token, timeouts. The uplink sets three
    /// of them itself, replacing what is given: the event callback (it watches the connection),
    /// the client's name, and the subscription capacity (1024 messages). Leave
    /// `retry_on_initial_connect` off (a server that cannot be reached is then a clear error
    /// from [`Hub::join`] rather than a silent wait), and `max_reconnects` unlimited (after the
    /// last attempt the client gives up for good, and this host with it).
    pub fn options(mut self, options: async_nats::ConnectOptions) -> Uplink {
        self.options = Some(options);
        self
    }

    /// How long a host may go unheard before the others forget it (its workers leave every
    /// route): 3 s by default, at least 300 ms. Each host announces itself every third of it,
    /// and checks the others at the same pace, so a host gone silent is forgotten between the
    /// expiry and a third more after it was last heard. Give every host of a cluster the same
    /// expiry: a host announces at the pace of its own.
    pub fn expiry(mut self, expiry: Duration) -> Uplink {
        self.expiry = expiry;
        self
    }

    /// The most other hosts known at once: 64 by default. One more is ignored until another
    /// leaves.
    pub fn max_hosts(mut self, hosts: usize) -> Uplink {
        self.max_hosts = hosts;
        self
    }

    fn validate(&self) -> Result<()> {
        let invalid = |reason: String| Err(Error::Config { reason });
        let cluster_ok = !self.cluster.is_empty()
            && self.cluster.len() <= 64
            && self
                .cluster
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !cluster_ok {
            return invalid(format!(
                "cluster name {:?}: 1 to 64 letters, digits, `-` or `_`",
                self.cluster
            ));
        }
        if let Some(host) = &self.host {
            if !announcement::host_name_ok(host) {
                return invalid(format!(
                    "host name {host:?}: 1 to {} bytes, no control characters",
                    announcement::MAX_HOST_NAME
                ));
            }
        }
        if self.expiry < Duration::from_millis(300) || self.expiry > crate::MAX_DURATION {
            return invalid(format!(
                "uplink expiry {:?}: at least 300 ms, at most 100 years",
                self.expiry
            ));
        }
        if self.max_hosts == 0 {
            return invalid("max_hosts 0: at least 1".into());
        }
        if self.servers.split(',').all(|s| s.trim().is_empty()) {
            return invalid("no NATS server given".into());
        }
        Ok(())
    }
}

/// A Hub's place among the other hosts, from [`Hub::join`]. [`leave`](Joined::leave) it when
/// the Hub stops: the others forget this host at once. Dropping it stops the uplink too, and
/// says so to the others only if the runtime still runs the uplink's task (not once it is
/// shutting down); otherwise they forget this host at its expiry.
pub struct Joined {
    id: HostId,
    name: String,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Joined {
    /// This host's id among the others.
    pub fn id(&self) -> HostId {
        self.id
    }

    /// This host's name among the others.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Tells the other hosts this one leaves, and closes the NATS connection once that is
    /// sent: within a few seconds whatever NATS does (with no connection, nothing is sent,
    /// and the others forget this host at its expiry).
    pub async fn leave(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            if tokio::time::timeout(LEAVE_TIMEOUT, task).await.is_err() {
                tracing::warn!("the uplink did not stop within {LEAVE_TIMEOUT:?}: left as is");
            }
        }
    }
}

impl Drop for Joined {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Hub {
    /// Joins the other hosts of `uplink`'s cluster over NATS: from then on this Hub announces
    /// its Ready workers to them and knows theirs ([`Hub::hosts`]). `Err` if a setting is out
    /// of bounds, no server could be reached, or this Hub has joined already (one cluster at
    /// a time); once joined, a lost connection is retried for ever (the client's own
    /// reconnection), and membership is announced again after it.
    pub async fn join(&self, uplink: Uplink) -> Result<Joined> {
        uplink.validate()?;
        let id = HostId(random_id());
        let name = uplink.host.clone().unwrap_or_else(default_host_name);
        let Some(port) = self.start_hosts(uplink.max_hosts, id, name.clone()) else {
            return Err(Error::Config {
                reason: "this Hub has joined a cluster already: leave it first".into(),
            });
        };
        let stop = CancellationToken::new();
        let joining = link::start(self.clone(), uplink, id, name.clone(), port, stop.clone());
        let started = joining.await;
        let task = started.inspect_err(|_| self.forget_hosts())?;
        Ok(Joined {
            id,
            name,
            stop,
            task: Some(task),
        })
    }
}

/// A number unlikely to be drawn by another master: the standard library's random hasher keys
/// over the pid and the time.
fn random_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    hasher.write_u128(now.as_nanos());
    hasher.finish()
}

fn default_host_name() -> String {
    let machine = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "host".into());
    let mut name = format!("{machine}:{}", std::process::id());
    let mut end = name.len().min(announcement::MAX_HOST_NAME);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name.truncate(end);
    name
}

/// The fuzz target `announcement` (`fuzz/`) and its saved inputs' replay: any bytes, as another
/// host's announcement. Not part of the API.
///
/// Decoded, it must encode back to bytes that decode to the same announcement; taken into a
/// table of hosts (bounded to 4), it must list back as announced.
#[doc(hidden)]
pub fn fuzz_announcement(data: &[u8]) {
    let Ok(ann) = announcement::decode(data) else {
        return;
    };
    let again = announcement::encode(&ann).expect("what decoded encodes within the bound");
    assert_eq!(announcement::decode(&again).as_ref(), Ok(&ann));
    let now = tokio::time::Instant::now();
    let mut hosts = crate::hub::Hosts::new(4);
    let workers = ann.workers.clone();
    let leaving = ann.leaving;
    hosts.hear(crate::hub::Said::new(ann), now);
    let listed = hosts.list(now);
    if leaving {
        assert!(listed.is_empty());
    } else {
        assert_eq!(listed[0].workers.len(), workers.len());
        for ((id, events), (listed_id, names)) in workers.iter().zip(&listed[0].workers) {
            assert_eq!(id, listed_id);
            // Each event once, in order: the same set as announced.
            assert!(names.windows(2).all(|pair| pair[0] < pair[1]), "{names:?}");
            let announced: std::collections::BTreeSet<String> = events
                .iter()
                .map(|e| String::from_utf8_lossy(e).into_owned())
                .collect();
            assert!(
                names.iter().eq(announced.iter()),
                "{names:?} vs {announced:?}"
            );
        }
    }
}

/// The fuzz target `frames` (`fuzz/`) and its saved inputs' replay: any bytes, as a NATS
/// message from another host. Not part of the API.
///
/// Read with a 64 KiB frame limit, every frame that decodes must encode back (through the
/// codec) to bytes that read back to the same envelope, and no frame may pin more than twice
/// its size of the message.
#[doc(hidden)]
pub fn fuzz_frames(data: &[u8]) {
    use tokio_util::codec::Encoder;

    let max = 64 * 1024;
    let payload = bytes::Bytes::copy_from_slice(data);
    let (envs, _) = frames::decode(&payload, max);
    let range = payload.as_ptr_range();
    let mut codec = crate::wire::FrameCodec::builder()
        .max_frame(max)
        .new_codec();
    for env in envs {
        let pinned = [&env.event, &env.key, &env.body]
            .iter()
            .any(|field| !field.is_empty() && range.contains(&field.as_ptr()));
        // The frame as read may be wider than `wire_len` (its canonical size): up to
        // `WIDEST_EXTRA` more bytes of headers and integers in their longest forms.
        const WIDEST_EXTRA: usize = 29;
        assert!(
            !pinned || 2 * (env.wire_len() + WIDEST_EXTRA) >= payload.len(),
            "a small frame pins its message"
        );
        let mut again = bytes::BytesMut::new();
        codec
            .encode(&env, &mut again)
            .expect("a frame read encodes");
        let (back, problem) = frames::decode(&again.freeze(), max);
        assert!(problem.is_none(), "{problem:?}");
        assert_eq!(back.len(), 1);
        assert_eq!(back[0], env);
    }
}
