//! The bodies of the protocol's own frames: [`Hello`] and [`Members`], written and read by hand.

use bytes::{BufMut, Bytes, BytesMut};

use super::msgpack::{
    read_array_len, read_bool, read_uint, write_array_len, write_bool, write_uint,
};
use super::{Envelope, Kind, Target, PROTOCOL_VERSION};
use crate::{Error, Peer, WorkerId};

/// The body of a `Hello` frame: the protocol version and, from the Hub, who the connection is.
///
/// MessagePack `[version, peer]`, `peer` being nil, `[0]` (the master) or `[1, slot,
/// generation]`. The version comes first in every version of the protocol, so a mismatch is
/// always read and said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The sender's [`PROTOCOL_VERSION`].
    pub version: u32,
    /// From the Hub: the peer this connection is. From a worker: `None`.
    pub peer: Option<Peer>,
}

impl Hello {
    /// This protocol's hello, naming `peer` (from the Hub) or nobody (from a worker).
    pub fn new(peer: Option<Peer>) -> Hello {
        Hello {
            version: PROTOCOL_VERSION,
            peer,
        }
    }

    /// The body's bytes.
    pub fn to_bytes(&self) -> Bytes {
        let mut dst = BytesMut::with_capacity(16);
        write_array_len(&mut dst, 2);
        write_uint(&mut dst, self.version.into());
        match self.peer {
            // The Hub names only its own peers.
            None | Some(Peer::Remote { .. }) => dst.put_u8(0xc0),
            Some(Peer::Master) => {
                write_array_len(&mut dst, 1);
                write_uint(&mut dst, 0);
            }
            Some(Peer::Worker(id)) => {
                write_array_len(&mut dst, 3);
                write_uint(&mut dst, 1);
                write_uint(&mut dst, id.slot.into());
                write_uint(&mut dst, id.generation);
            }
        }
        dst.freeze()
    }

    /// This hello as a frame.
    pub fn frame(&self) -> Envelope {
        Envelope::new(Kind::Hello, "", self.to_bytes())
    }

    /// Reads a hello of this protocol version: another version is
    /// [`Error::ProtocolMismatch`], whatever follows it.
    pub fn from_bytes(body: &[u8]) -> Result<Hello, Error> {
        let malformed = || Error::Malformed {
            detail: "a hello that does not decode".into(),
        };
        let mut rd = body;
        if !matches!(read_array_len(&mut rd), Some(1..)) {
            return Err(malformed());
        }
        let theirs = read_uint(&mut rd)
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(malformed)?;
        if theirs != PROTOCOL_VERSION {
            return Err(Error::ProtocolMismatch {
                ours: PROTOCOL_VERSION,
                theirs,
            });
        }
        let peer = match rd.first() {
            Some(0xc0) => {
                rd = &rd[1..];
                None
            }
            _ => {
                let n = read_array_len(&mut rd).ok_or_else(malformed)?;
                let tag = read_uint(&mut rd);
                match (n, tag) {
                    (1, Some(0)) => Some(Peer::Master),
                    (3, Some(1)) => {
                        let slot = read_uint(&mut rd).and_then(|v| u32::try_from(v).ok());
                        let generation = read_uint(&mut rd);
                        let (Some(slot), Some(generation)) = (slot, generation) else {
                            return Err(malformed());
                        };
                        Some(Peer::Worker(WorkerId::new(slot, generation)))
                    }
                    _ => return Err(malformed()),
                }
            }
        };
        if !rd.is_empty() {
            return Err(malformed());
        }
        Ok(Hello {
            version: theirs,
            peer,
        })
    }
}

/// A `Credit` frame: room given back for broadcasts.
///
/// From a worker: it ran `frames` more of the broadcasts it was sent, of `bytes` bytes in all.
/// From the Hub: `frames` of the sender's broadcasts, of `bytes` bytes in all, have left every
/// queue they waited in. Bytes as [`Envelope::wire_len`] counts them. The count is the frame's
/// `id`; the bytes, a MessagePack unsigned integer, its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credit {
    /// How many broadcasts.
    pub frames: u64,
    /// How many bytes they were.
    pub bytes: u64,
}

impl Credit {
    /// This credit as a frame.
    pub fn frame(&self) -> Envelope {
        let mut body = BytesMut::with_capacity(9);
        write_uint(&mut body, self.bytes);
        Envelope {
            id: self.frames,
            ..Envelope::new(Kind::Credit, "", body.freeze())
        }
    }

    /// Reads a `Credit` frame.
    pub fn from_frame(env: &Envelope) -> Result<Credit, Error> {
        let mut rd = &env.body[..];
        let bytes = if rd.is_empty() {
            Some(0)
        } else {
            read_uint(&mut rd)
        };
        match bytes {
            Some(bytes) if rd.is_empty() => Ok(Credit {
                frames: env.id,
                bytes,
            }),
            _ => Err(Error::Malformed {
                detail: "a credit that does not decode".into(),
            }),
        }
    }
}

/// The body of a `Members` frame: who answers a `map`, in slot order.
///
/// The Hub sends one only when the caller's `epoch` (in [`Target::All`]) is not the Ready set's
/// current one: the caller keeps the last list it was told, so while the Ready set stands a
/// `map` costs no frame beyond its requests and answers. A worker that leaves the Ready set is
/// sent one unasked (id 0).
///
/// MessagePack `[[[slot, generation], ...], run_here, epoch]`; a worker of another host is
/// `[slot, generation, host]`. A list that names other hosts' workers has epoch 0: it is not the
/// Ready set of this host, and is not kept for the next calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Members {
    /// The workers asked, in order (this host's in slot order, then other hosts'): one answer
    /// comes from each. Each is a [`Peer::Worker`] or a [`Peer::Remote`] worker.
    pub workers: Vec<Peer>,
    /// The caller is one of them and runs its own share itself (no answer comes for it).
    pub run_here: bool,
    /// Which Ready set `workers` is (it changes whenever the set does).
    pub epoch: u64,
}

impl Members {
    /// The body's bytes.
    pub fn to_bytes(&self) -> Bytes {
        let mut dst = BytesMut::with_capacity(13 + self.workers.len() * 12);
        write_array_len(&mut dst, 3);
        write_array_len(&mut dst, self.workers.len());
        for peer in &self.workers {
            let (id, host) = match *peer {
                Peer::Worker(id) => (id, None),
                Peer::Remote {
                    host,
                    worker: Some(id),
                } => (id, Some(host)),
                // Only workers answer a map.
                Peer::Master | Peer::Remote { worker: None, .. } => continue,
            };
            write_array_len(&mut dst, 2 + usize::from(host.is_some()));
            write_uint(&mut dst, id.slot.into());
            write_uint(&mut dst, id.generation);
            if let Some(host) = host {
                write_uint(&mut dst, host.0);
            }
        }
        write_bool(&mut dst, self.run_here);
        write_uint(&mut dst, self.epoch);
        dst.freeze()
    }

    /// This list as a frame from the Hub: the answer to `map` call `id` (or 0, unasked).
    pub fn frame(&self, id: u64) -> Envelope {
        Envelope {
            to: Target::All {
                epoch: self.epoch,
                run_here: self.run_here,
            },
            ..Envelope::answer(
                Kind::Members,
                id,
                Peer::Master,
                Bytes::new(),
                self.to_bytes(),
            )
        }
    }

    /// Reads a body written by [`to_bytes`](Members::to_bytes).
    pub fn from_bytes(body: &[u8]) -> Result<Members, Error> {
        let malformed = || Error::Malformed {
            detail: "a member list that does not decode".into(),
        };
        let mut rd = body;
        if read_array_len(&mut rd) != Some(3) {
            return Err(malformed());
        }
        let n = read_array_len(&mut rd).ok_or_else(malformed)? as usize;
        // Every entry takes 3 bytes at least: never trust a length beyond what is there.
        let mut workers = Vec::with_capacity(n.min(rd.len() / 3));
        for _ in 0..n {
            let fields = read_array_len(&mut rd);
            if !matches!(fields, Some(2 | 3)) {
                return Err(malformed());
            }
            let slot = read_uint(&mut rd).and_then(|v| u32::try_from(v).ok());
            let generation = read_uint(&mut rd);
            let (Some(slot), Some(generation)) = (slot, generation) else {
                return Err(malformed());
            };
            let id = WorkerId::new(slot, generation);
            workers.push(if fields == Some(3) {
                let host = read_uint(&mut rd).ok_or_else(malformed)?;
                Peer::Remote {
                    host: crate::HostId(host),
                    worker: Some(id),
                }
            } else {
                Peer::Worker(id)
            });
        }
        let run_here = read_bool(&mut rd).ok_or_else(malformed)?;
        let epoch = read_uint(&mut rd).ok_or_else(malformed)?;
        if !rd.is_empty() {
            return Err(malformed());
        }
        Ok(Members {
            workers,
            run_here,
            epoch,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_lists_round_trip() {
        let w = |slot, generation| Peer::Worker(WorkerId::new(slot, generation));
        let lists = [
            vec![],
            vec![w(0, 1)],
            vec![w(3, 200), w(70_000, u64::MAX)],
            (0..20).map(|slot| w(slot, 1 << slot)).collect(),
            vec![
                w(0, 1),
                Peer::Remote {
                    host: crate::HostId(u64::MAX),
                    worker: Some(WorkerId::new(1, 2)),
                },
            ],
        ];
        for workers in lists {
            for (run_here, epoch) in [(false, 0), (true, 1), (false, 300), (true, u64::MAX)] {
                let members = Members {
                    workers: workers.clone(),
                    run_here,
                    epoch,
                };
                assert_eq!(Members::from_bytes(&members.to_bytes()).unwrap(), members);
            }
        }
        for bad in [
            &[][..],
            &[0x93, 0x91][..],
            &[0x93, 0x90, 0xc0, 1][..],
            &[0x93, 0x90, 0xc3][..],
            &[0x93, 0x90, 0xc3, 1, 0][..],
            &[0x92, 0x90, 0xc3][..],
        ] {
            assert!(matches!(
                Members::from_bytes(bad),
                Err(Error::Malformed { .. })
            ));
        }
        // A length that claims more entries than there are bytes fails, without allocating it.
        assert!(Members::from_bytes(&[0x93, 0xdd, 0xff, 0xff, 0xff, 0xff]).is_err());
    }

    #[test]
    fn credits_round_trip() {
        for credit in [
            Credit {
                frames: 0,
                bytes: 0,
            },
            Credit {
                frames: 7,
                bytes: u64::MAX,
            },
        ] {
            assert_eq!(Credit::from_frame(&credit.frame()).unwrap(), credit);
        }
        let bare = Envelope::new(Kind::Credit, "", Bytes::new());
        assert_eq!(
            Credit::from_frame(&bare).unwrap(),
            Credit {
                frames: 0,
                bytes: 0
            }
        );
        let bad = Envelope::new(Kind::Credit, "", vec![0xc1]);
        assert!(Credit::from_frame(&bad).is_err());
    }

    #[test]
    fn hellos_round_trip_and_another_version_is_a_mismatch() {
        for peer in [
            None,
            Some(Peer::Master),
            Some(Peer::Worker(WorkerId::new(u32::MAX, u64::MAX))),
        ] {
            let hello = Hello::new(peer);
            assert_eq!(Hello::from_bytes(&hello.to_bytes()).unwrap(), hello);
        }
        let other = Hello {
            version: PROTOCOL_VERSION + 1,
            peer: None,
        };
        assert!(matches!(
            Hello::from_bytes(&other.to_bytes()),
            Err(Error::ProtocolMismatch { theirs, .. }) if theirs == PROTOCOL_VERSION + 1
        ));
        // A future version may send more after its version: still a mismatch, said clearly.
        assert!(matches!(
            Hello::from_bytes(&[0x95, 0x63, 1, 2, 3, 4]),
            Err(Error::ProtocolMismatch { theirs: 0x63, .. })
        ));
        for bad in [&[][..], &[0x90], &[0x92, 3, 0x91, 7], &[0x92, 3, 0xc0, 0]] {
            assert!(Hello::from_bytes(bad).is_err(), "{bad:?}");
        }
    }
}
