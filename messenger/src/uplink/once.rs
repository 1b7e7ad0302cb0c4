//! `consume_once` across hosts: a key is run once in the whole cluster, settled in a JetStream
//! key-value bucket (`multiprocess_<cluster>_once`).
//!
//! The Hub of the first caller of a key on a host asks here (callers of the same host wait on
//! that one run). The bucket's entry for the key says:
//! - nothing: an atomic create writes "running, by this host" ([`Value::Running`]); the host
//!   whose create lands runs it, on a Ready worker of any host;
//! - running: wait for the result, polling; an entry left by a host no longer in the cluster
//!   (killed mid-run, or one that could not say the run failed) is deleted, at its revision,
//!   and the create tried again. "No longer in the cluster" is trusted only once this host has
//!   been in it for the membership expiry, with room in its table of hosts (before, a host it
//!   does not know may just not be heard of yet);
//! - done: that reply, for every caller, from then on ([`Value::Done`]).
//!
//! A failed run deletes the entry (this host's entry only, at its revision), so the next
//! caller, on any host, runs it again; a run on another host that outlasts the master's
//! `request_timeout` counts as failed. A create whose acknowledgement is lost (the server
//! restarting) is ambiguous: the entry is read back, and names this attempt (a random number)
//! if the create did land; one that lands after the caller's deadline is taken back.
//!
//! The entry's key is a SHA-256 of the event's name and the key, in hex (bucket keys allow few
//! characters, and a key may be 1 KiB of anything). The bucket keeps the last value of each key,
//! on file, at most the Hub's `once_bytes` in all (the oldest dropped first by the server), each
//! value at most `max_frame`.

use std::time::Duration;

use async_nats::jetstream::kv;
use bytes::{BufMut, Bytes, BytesMut};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::hub::{HostId, Hub};
use crate::wire::Envelope;
use crate::{Error, Peer, WorkerId};

/// How often a host waiting on another's run reads the entry again.
const POLL: Duration = Duration::from_millis(20);

/// How long one write of the bucket may take, and how many times it is tried.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
const WRITE_TRIES: usize = 3;

/// Opens (or creates) the cluster's bucket: `None`, and a warning, if the server has no
/// JetStream (`consume_once` then fails across hosts, saying so).
pub(super) async fn bucket(
    client: &async_nats::Client,
    cluster: &str,
    config: &crate::Config,
) -> Option<kv::Store> {
    let js = async_nats::jetstream::new(client.clone());
    let name = format!("multiprocess_{cluster}_once");
    let wanted = kv::Config {
        bucket: name.clone(),
        description: "multiprocess: consume_once results across hosts".into(),
        history: 1,
        max_value_size: i32::try_from(config.max_frame).unwrap_or(i32::MAX),
        max_bytes: i64::try_from(config.once_bytes).unwrap_or(i64::MAX),
        storage: async_nats::jetstream::stream::StorageType::File,
        ..Default::default()
    };
    let made = match js.create_key_value(wanted).await {
        Ok(store) => Ok(store),
        // Made by another host with other settings, say: use it as it is.
        Err(e) => js.get_key_value(name.clone()).await.map_err(|_| e),
    };
    match made {
        Ok(store) => {
            // The client makes buckets that refuse new keys once full: the oldest results are
            // dropped instead, as this host's own table of them does.
            let stream = format!("KV_{name}");
            if let Ok(mut info) = js.get_stream(&stream).await {
                if let Ok(info) = info.info().await {
                    let mut config = info.config.clone();
                    if config.discard != async_nats::jetstream::stream::DiscardPolicy::Old {
                        config.discard = async_nats::jetstream::stream::DiscardPolicy::Old;
                        if let Err(e) = js.update_stream(&config).await {
                            tracing::warn!(bucket = %name, "the bucket refuses new keys once full: {e}");
                        }
                    }
                }
            }
            Some(store)
        }
        Err(e) => {
            tracing::warn!(
                bucket = %name,
                "no key-value bucket for consume_once across hosts (is JetStream enabled on the NATS server?): {e}"
            );
            None
        }
    }
}

/// What the bucket holds for a key.
#[derive(Debug, PartialEq, Eq)]
enum Value {
    /// Being run by `host`, attempt `nonce`.
    Running { host: HostId, nonce: u64 },
    /// Run: `reply` from `from`'s worker (`None`: its master).
    Done {
        host: HostId,
        worker: Option<WorkerId>,
        reply: Bytes,
    },
}

impl Value {
    fn to_bytes(&self) -> Bytes {
        let mut dst = BytesMut::new();
        match self {
            Value::Running { host, nonce } => {
                dst.put_u8(b'R');
                dst.put_u64(host.0);
                dst.put_u64(*nonce);
            }
            Value::Done {
                host,
                worker,
                reply,
            } => {
                dst.put_u8(b'D');
                dst.put_u64(host.0);
                let id = worker.unwrap_or(WorkerId::new(0, 0));
                dst.put_u8(worker.is_some().into());
                dst.put_u32(id.slot);
                dst.put_u64(id.generation);
                dst.put_slice(reply);
            }
        }
        dst.freeze()
    }

    fn from_bytes(bytes: &Bytes) -> Option<Value> {
        let u64_at = |at: usize| Some(u64::from_be_bytes(bytes.get(at..at + 8)?.try_into().ok()?));
        match bytes.first()? {
            b'R' if bytes.len() == 17 => Some(Value::Running {
                host: HostId(u64_at(1)?),
                nonce: u64_at(9)?,
            }),
            b'D' if bytes.len() >= 22 => {
                let slot = u32::from_be_bytes(bytes.get(10..14)?.try_into().ok()?);
                let worker = match bytes[9] {
                    0 => None,
                    1 => Some(WorkerId::new(slot, u64_at(14)?)),
                    _ => return None,
                };
                Some(Value::Done {
                    host: HostId(u64_at(1)?),
                    worker,
                    reply: bytes.slice(22..),
                })
            }
            _ => None,
        }
    }
}

/// The bucket's key for an event's `consume_once` key.
fn entry_key(event: &[u8], key: &[u8]) -> String {
    let mut hash = Sha256::new();
    hash.update((event.len() as u64).to_be_bytes());
    hash.update(event);
    hash.update(key);
    let digest = hash.finalize();
    let mut hex = String::with_capacity(2 + 64);
    hex.push_str("k_");
    for byte in digest {
        hex.push_str(&format!("{byte:02x}"));
    }
    hex
}

/// Settles `request`'s key for this host: tells the Hub it runs it, or the result, or why not,
/// within `timeout`.
///
/// `trust_absence`: this host has been in the cluster for the membership expiry, so a host it
/// does not know (its table not full) is gone, not yet heard of.
pub(super) async fn settle(
    hub: Hub,
    store: Option<kv::Store>,
    me: HostId,
    request: Envelope,
    timeout: Duration,
    trust_absence: bool,
) {
    let (event, key) = (request.event.clone(), request.key.clone());
    let answer = |result| hub.once_settled(event.clone(), key.clone(), result);
    let Some(store) = store else {
        return answer(Err(Error::HostUnreachable {
            host: "the NATS server".into(),
            detail: "no key-value bucket (JetStream): consume_once cannot be settled across hosts"
                .into(),
        }));
    };
    let name = entry_key(&event, &key);
    let nonce = super::random_id();
    let running = Value::Running { host: me, nonce }.to_bytes();
    let deadline = Instant::now() + timeout;
    loop {
        if Instant::now() >= deadline {
            // A create of this attempt may have landed after all: take it back.
            if let Ok(Some(entry)) = store.entry(&name).await {
                let ours = Value::Running { host: me, nonce };
                if Value::from_bytes(&entry.value) == Some(ours) {
                    let _ = store
                        .delete_expect_revision(&name, Some(entry.revision))
                        .await;
                }
            }
            return answer(Err(Error::Timeout {
                event: String::from_utf8_lossy(&event).into_owned(),
                after: timeout,
                peer: None,
            }));
        }
        let created = tokio::time::timeout_at(deadline, store.create(&name, running.clone())).await;
        let mut failed = false;
        match created {
            Ok(Ok(_)) => return hub.once_won(request),
            Ok(Err(e)) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
            // Ambiguous, or failed: what the bucket holds says.
            Ok(Err(e)) => {
                tracing::debug!("consume_once: a create not acknowledged: {e}");
                failed = true;
            }
            Err(_) => continue,
        }
        let entry = match tokio::time::timeout_at(deadline, store.entry(&name)).await {
            Ok(Ok(entry)) => entry,
            Ok(Err(e)) => {
                tracing::debug!("consume_once: the entry not read: {e}");
                tokio::time::sleep(POLL).await;
                continue;
            }
            Err(_) => continue,
        };
        let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) else {
            // Deleted (a failed run) or gone: try to create it again (after a pause, if the
            // create failed: the server may be restarting, or the bucket refusing).
            if failed {
                tokio::time::sleep(POLL).await;
            }
            continue;
        };
        let gone = |host| trust_absence && hub.host_absent(host);
        match read(&entry.value, me, nonce, gone) {
            Read::Settled(from, reply) => return answer(Ok((from, reply))),
            Read::Won => return hub.once_won(request),
            Read::Clear => {
                let _ = store
                    .delete_expect_revision(&name, Some(entry.revision))
                    .await;
            }
            Read::Wait => tokio::time::sleep(POLL).await,
        }
    }
}

/// What an entry read back means to attempt `nonce` of host `me`.
#[derive(Debug, PartialEq, Eq)]
enum Read {
    /// Run: its reply, from this peer.
    Settled(Peer, Bytes),
    /// This attempt's create landed (its acknowledgement may have been lost): run it.
    Won,
    /// Left by a run that will never end, or not an entry of ours: delete it at its revision
    /// and try again.
    Clear,
    /// Another host runs it: read again later.
    Wait,
}

/// Reads an entry: `gone` says whether a host is gone from the cluster (trusted).
fn read(value: &Bytes, me: HostId, nonce: u64, gone: impl Fn(HostId) -> bool) -> Read {
    match Value::from_bytes(value) {
        Some(Value::Done {
            host,
            worker,
            reply,
        }) => {
            let from = match host == me {
                true => worker.map_or(Peer::Master, Peer::Worker),
                false => Peer::Remote { host, worker },
            };
            Read::Settled(from, reply)
        }
        Some(Value::Running {
            host,
            nonce: theirs,
        }) if host == me && theirs == nonce => Read::Won,
        // This host's own earlier attempt (it runs nothing else under this key now), or a
        // host gone from the cluster.
        Some(Value::Running { host, .. }) if host == me || gone(host) => Read::Clear,
        Some(Value::Running { .. }) => Read::Wait,
        None => {
            tracing::warn!("consume_once: an entry that is not one of ours: replaced");
            Read::Clear
        }
    }
}

/// Writes how a run of this host ended: its reply for good, or the entry deleted so that the
/// next caller runs it again.
pub(super) async fn done(
    store: Option<kv::Store>,
    me: HostId,
    event: Bytes,
    key: Bytes,
    reply: Option<(Peer, Bytes)>,
) {
    let Some(store) = store else {
        return;
    };
    let name = entry_key(&event, &key);
    for _ in 0..WRITE_TRIES {
        let written = match &reply {
            Some((from, body)) => {
                let value = Value::Done {
                    host: me,
                    worker: from.worker(),
                    reply: body.clone(),
                };
                let put = store.put(&name, value.to_bytes());
                tokio::time::timeout(WRITE_TIMEOUT, put)
                    .await
                    .map(|r| r.is_ok())
            }
            // Only the entry of this host's run: never a newer one of another host.
            None => match tokio::time::timeout(WRITE_TIMEOUT, store.entry(&name)).await {
                Ok(Ok(Some(entry))) => match Value::from_bytes(&entry.value) {
                    Some(Value::Running { host, .. }) if host == me => {
                        let delete = store.delete_expect_revision(&name, Some(entry.revision));
                        tokio::time::timeout(WRITE_TIMEOUT, delete)
                            .await
                            .map(|r| r.is_ok())
                    }
                    _ => Ok(true),
                },
                Ok(Ok(None)) => Ok(true),
                _ => Ok(false),
            },
        };
        if written == Ok(true) {
            return;
        }
    }
    tracing::warn!(
        "consume_once: the end of a run of this host could not be written to the bucket; \
         other hosts wait on it until this host leaves the cluster"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_junk_is_refused() {
        for value in [
            Value::Running {
                host: HostId(7),
                nonce: u64::MAX,
            },
            Value::Done {
                host: HostId(1),
                worker: Some(WorkerId::new(3, 9)),
                reply: Bytes::from_static(b"\x2a"),
            },
            Value::Done {
                host: HostId(1),
                worker: None,
                reply: Bytes::new(),
            },
        ] {
            assert_eq!(Value::from_bytes(&value.to_bytes()), Some(value));
        }
        for junk in [
            &b""[..],
            b"R",
            b"Rshort",
            b"D",
            b"X123456789012345678901234",
        ] {
            assert_eq!(Value::from_bytes(&Bytes::copy_from_slice(junk)), None);
        }
    }

    /// The entry is read back before concluding anything: after a create whose
    /// acknowledgement was lost (a server restarting), an entry naming this very attempt means
    /// the create landed; any other attempt of this host, or a host gone, is cleared; a live
    /// host's run is waited on; a result is every caller's.
    #[test]
    fn an_entry_read_back_settles_an_ambiguous_create() {
        let (me, other, nonce) = (HostId(1), HostId(2), 77);
        let running = |host, nonce| Value::Running { host, nonce }.to_bytes();
        let alive = |_| false;
        let all_gone = |_| true;
        assert_eq!(read(&running(me, nonce), me, nonce, alive), Read::Won);
        assert_eq!(read(&running(me, nonce + 1), me, nonce, alive), Read::Clear);
        assert_eq!(read(&running(other, nonce), me, nonce, alive), Read::Wait);
        assert_eq!(
            read(&running(other, nonce), me, nonce, all_gone),
            Read::Clear
        );
        let done = |host, worker| {
            Value::Done {
                host,
                worker,
                reply: Bytes::from_static(b"r"),
            }
            .to_bytes()
        };
        let w = WorkerId::new(2, 5);
        let reply = Bytes::from_static(b"r");
        assert_eq!(
            read(&done(me, Some(w)), me, nonce, alive),
            Read::Settled(Peer::Worker(w), reply.clone())
        );
        assert_eq!(
            read(&done(other, None), me, nonce, alive),
            Read::Settled(
                Peer::Remote {
                    host: other,
                    worker: None
                },
                reply
            )
        );
        assert_eq!(
            read(&Bytes::from_static(b"junk"), me, nonce, alive),
            Read::Clear
        );
    }

    #[test]
    fn entry_keys_are_bucket_keys_and_tell_event_from_key() {
        let a = entry_key(b"ab", b"c");
        assert_ne!(a, entry_key(b"a", b"bc"));
        assert_eq!(a.len(), 66);
        assert!(a.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
    }
}
