//! Floods for `tests/memory.rs`: what a buggy or hostile worker can send the master, through
//! the public API.
//!
//! - `GET /flood/names?size=N`: 300 `consume` calls, each with an `N`-byte body, for 300
//!   different event names that nobody handles (each fails with `NoHandler`). Answers how many
//!   failed that way.
//! - `GET /flood/broadcast?count=C&size=N`: `C` broadcasts of `N` bytes, to every worker.
//!   Answers how many were sent.

use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use multiprocess::CallError as Error;
use multiprocess::{Event, Messenger};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use serde_json::{json, Value};

/// A large event every worker handles (and drops).
#[derive(Serialize, Deserialize, Event)]
#[event(name = "blob")]
pub struct Blob(ByteBuf);

/// An event nobody handles, named `unhandled-AB` (A, B digits): 300 names from one type.
#[derive(Serialize, Deserialize)]
struct Unhandled<const A: u8, const B: u8>(ByteBuf);

const fn name(a: u8, b: u8) -> [u8; 14] {
    let mut name = *b"unhandled-0000";
    name[10] = b'0' + a / 10;
    name[11] = b'0' + a % 10;
    name[12] = b'0' + b / 10;
    name[13] = b'0' + b % 10;
    name
}

impl<const A: u8, const B: u8> Unhandled<A, B> {
    const NAME_BYTES: [u8; 14] = name(A, B);
}

impl<const A: u8, const B: u8> Event for Unhandled<A, B> {
    const NAME: &'static str = match std::str::from_utf8(&Self::NAME_BYTES) {
        Ok(name) => name,
        Err(_) => panic!("an ASCII name"),
    };
    type Reply = ();
}

type Call = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Error>> + Send>>;

fn call<const A: u8, const B: u8>(msg: &Messenger, body: &ByteBuf) -> Call {
    let (msg, body) = (msg.clone(), body.clone());
    Box::pin(async move { msg.consume(Unhandled::<A, B>(body)).await })
}

/// One call per name `unhandled-A00` to `unhandled-A19`.
macro_rules! row {
    ($msg:ident, $body:ident, $a:literal) => {
        row!(@ $msg, $body, $a; 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19)
    };
    (@ $msg:ident, $body:ident, $a:literal; $($b:literal)*) => {
        [$( call::<$a, $b>(&$msg, &$body) ),*]
    };
}

/// One call for each of 300 names nobody handles (15 rows of 20).
fn unhandled_calls(msg: &Messenger, body: &ByteBuf) -> Vec<Call> {
    [
        row!(msg, body, 0),
        row!(msg, body, 1),
        row!(msg, body, 2),
        row!(msg, body, 3),
        row!(msg, body, 4),
        row!(msg, body, 5),
        row!(msg, body, 6),
        row!(msg, body, 7),
        row!(msg, body, 8),
        row!(msg, body, 9),
        row!(msg, body, 10),
        row!(msg, body, 11),
        row!(msg, body, 12),
        row!(msg, body, 13),
        row!(msg, body, 14),
    ]
    .into_iter()
    .flatten()
    .collect()
}

#[derive(Deserialize)]
struct Size {
    size: usize,
    #[serde(default)]
    count: usize,
}

type Answer = Result<Json<Value>, (StatusCode, String)>;

/// The flood routes, for a worker whose Messenger is `msg`.
pub fn routes<S: Clone + Send + Sync + 'static>(msg: Messenger) -> Router<S> {
    msg.on(|Blob(_)| async {});
    let names = msg.clone();
    Router::new().route(
        "/flood/{what}",
        get(move |Path(what): Path<String>, Query(q): Query<Size>| {
            let msg = names.clone();
            async move { flood(msg, &what, q).await }
        }),
    )
}

async fn flood(msg: Messenger, what: &str, Size { size, count }: Size) -> Answer {
    let body = ByteBuf::from(vec![7u8; size]);
    match what {
        "names" => {
            let mut no_handler = 0;
            let mut calls = tokio::task::JoinSet::new();
            for call in unhandled_calls(&msg, &body) {
                calls.spawn(call);
            }
            while let Some(result) = calls.join_next().await {
                match result.expect("a call does not panic") {
                    Err(Error::NoHandler { .. }) => no_handler += 1,
                    other => return Err((StatusCode::INTERNAL_SERVER_ERROR, format!("{other:?}"))),
                }
            }
            Ok(Json(json!({ "no_handler": no_handler })))
        }
        "broadcast" => {
            for _ in 0..count {
                msg.broadcast(Blob(body.clone()))
                    .await
                    .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
            }
            Ok(Json(json!({ "sent": count })))
        }
        _ => Err((StatusCode::NOT_FOUND, format!("no flood {what}"))),
    }
}
