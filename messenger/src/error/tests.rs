//! Errors in and out of their wire form.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::WorkerId;
use serde::Serialize;

fn every_kind() -> Vec<Error> {
    let worker = Peer::Worker(WorkerId::new(3, 9));
    vec![
        Error::NoHandler {
            event: "e".into(),
            peer: Some(worker),
        },
        Error::NoHandler {
            event: "e".into(),
            peer: None,
        },
        Error::NoWorker { slot: 7 },
        Error::Timeout {
            event: "e".into(),
            after: Duration::from_millis(1500),
            peer: Some(Peer::Master),
        },
        Error::WorkerGone {
            event: "e".into(),
            peer: worker,
        },
        Error::Busy {
            event: "e".into(),
            peer: worker,
        },
        Error::Decode {
            event: "e".into(),
            detail: "d".into(),
        },
        Error::Encode {
            event: "e".into(),
            detail: "d".into(),
        },
        Error::FrameTooLarge { size: 10, max: 5 },
        Error::ProtocolMismatch { ours: 3, theirs: 2 },
        Error::HandlerPanicked {
            event: "e".into(),
            message: "boom".into(),
        },
        Error::Forbidden { reason: "r".into() },
        Error::Config { reason: "r".into() },
        Error::Malformed { detail: "m".into() },
        Error::Closed,
        Error::HostUnreachable {
            host: "web-2".into(),
            detail: "the NATS connection was lost".into(),
        },
        Error::WorkerGone {
            event: "e".into(),
            peer: Peer::Remote {
                host: crate::HostId(7),
                worker: Some(WorkerId::new(1, 2)),
            },
        },
        Error::Busy {
            event: "e".into(),
            peer: Peer::Remote {
                host: crate::HostId(u64::MAX),
                worker: None,
            },
        },
        Error::Io(Arc::new(std::io::Error::other("pipe"))),
        Error::Remote {
            kind: "quota".into(),
            message: "over quota".into(),
        },
    ]
}

/// Every variant comes back as itself, with the same message.
#[test]
fn every_kind_round_trips() {
    for error in every_kind() {
        let back = Error::from_wire(&error.to_wire());
        assert_eq!(back.to_string(), error.to_string(), "{error:?}");
        assert_eq!(
            std::mem::discriminant(&back),
            std::mem::discriminant(&error),
            "{error:?} came back as {back:?}"
        );
    }
}

/// What a newer version may send: a kind this one does not know, and fields it does not
/// know on a kind it does.
#[test]
fn a_newer_peers_errors_are_understood() {
    #[derive(Serialize)]
    struct Newer {
        kind: &'static str,
        message: &'static str,
        quota: u64,
        event: &'static str,
    }
    let body = rmp_serde::to_vec_named(&Newer {
        kind: "quota_exceeded",
        message: "slot 2 is over its quota",
        quota: 10,
        event: "e",
    })
    .unwrap();
    match Error::from_wire(&body) {
        Error::Remote { kind, message } => {
            assert_eq!(kind, "quota_exceeded");
            assert_eq!(message, "slot 2 is over its quota");
        }
        other => panic!("{other:?}"),
    }
    let body = rmp_serde::to_vec_named(&Newer {
        kind: "decode",
        message: "",
        quota: 10,
        event: "e",
    })
    .unwrap();
    assert!(matches!(Error::from_wire(&body), Error::Decode { event, .. } if event == "e"));
    // A remote error passes on under its own kind.
    let again = Error::from_wire(&Error::from_wire(&body).to_wire());
    assert!(matches!(again, Error::Decode { .. }));
}

/// An older or sloppier peer may leave fields out: the kind still decides.
#[test]
fn missing_fields_are_filled() {
    #[derive(Serialize)]
    struct Bare {
        kind: &'static str,
    }
    for kind in [
        "no_handler",
        "timeout",
        "closed",
        "forbidden",
        "frame_too_large",
    ] {
        let body = rmp_serde::to_vec_named(&Bare { kind }).unwrap();
        let error = Error::from_wire(&body);
        assert_eq!(error.code(), kind, "{error:?}");
    }
    // Kinds whose required field is missing still say what happened.
    let body = rmp_serde::to_vec_named(&Bare { kind: "busy" }).unwrap();
    assert!(matches!(Error::from_wire(&body), Error::Remote { .. }));
}

#[test]
fn garbage_is_malformed_not_a_panic() {
    for body in [&b""[..], b"\xc1", b"\x93\x01\x02\x03", b"\x81\xa4kind\x05"] {
        assert!(matches!(Error::from_wire(body), Error::Malformed { .. }));
    }
}

#[test]
fn a_long_error_is_cut_to_fit_and_keeps_its_kind() {
    let error = Error::HandlerPanicked {
        event: "é".repeat(400),
        message: "boom ".repeat(10_000),
    };
    for max in [40, 100, 256, 1000] {
        let body = error.to_wire_within(max);
        assert!(body.len() <= max, "{} bytes for {max}", body.len());
        let back = Error::from_wire(&body);
        assert!(matches!(back, Error::HandlerPanicked { .. }), "{back:?}");
    }
    // A kind from another version, of any length, is cut too.
    let remote = Error::Remote {
        kind: "k".repeat(5000),
        message: "m".repeat(5000),
    };
    for max in [40, 100, 256] {
        let body = remote.to_wire_within(max);
        assert!(
            !body.is_empty() && body.len() <= max,
            "{} bytes for {max}",
            body.len()
        );
    }
    // Short enough already: as it is.
    let short = Error::NoWorker { slot: 1 };
    assert_eq!(short.to_wire_within(1000), short.to_wire());
}

/// `Error::CODES` lists every variant's code, each once (metrics count errors by it).
#[test]
fn codes_list_every_kind_once() {
    // One error of each variant (`every_kind` has two of some, with and without a peer).
    let mut seen = std::collections::HashMap::new();
    for error in every_kind() {
        let previous = seen.insert(std::mem::discriminant(&error), error.code());
        assert!(previous.map_or(true, |code| code == error.code()));
    }
    let mut codes: Vec<&str> = seen.into_values().collect();
    codes.sort();
    let mut listed = Error::CODES.to_vec();
    listed.sort();
    listed.dedup();
    assert_eq!(listed.len(), Error::CODES.len(), "a code listed twice");
    assert_eq!(
        codes, listed,
        "two variants share a code, or one is not listed"
    );
}
