//! Variants whose snake_case names are keywords (raw identifiers), or names of `Arc`'s methods,
//! and a type named with a raw identifier.
#![deny(warnings)]

use std::sync::Arc;

use messenger::{async_trait, Dispatch, Event, Peer};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Event)]
#[event(reply = String)]
enum Keywords {
    Type,
    Match(u8),
    Loop { r#in: u8 },
    Async,
    Gen,
    /// `Arc::clone` and `Arc::as_ref` must not be called instead of the handler's methods.
    Clone,
    AsRef,
}

#[allow(non_camel_case_types)]
#[derive(Serialize, Deserialize, Event)]
struct r#enum;

struct Handler;

#[async_trait]
impl KeywordsHandler for Handler {
    async fn r#type(&self) -> String {
        "type".into()
    }
    async fn r#match(&self, _arg0: u8) -> String {
        "match".into()
    }
    async fn r#loop(&self, _in: u8) -> String {
        "loop".into()
    }
    async fn r#async(&self) -> String {
        "async".into()
    }
    async fn r#gen(&self) -> String {
        "gen".into()
    }
    async fn clone(&self) -> String {
        "clone".into()
    }
    async fn as_ref(&self) -> String {
        "as_ref".into()
    }
}

#[tokio::main]
async fn main() {
    assert_eq!(<r#enum as Event>::NAME, "enum");
    let _ = r#enum;
    let handler: Arc<dyn KeywordsHandler> = Arc::new(Handler);
    assert_eq!(Keywords::Type.dispatch(Peer::Master, handler.clone()).await, "type");
    assert_eq!(Keywords::Match(1).dispatch(Peer::Master, handler.clone()).await, "match");
    assert_eq!(Keywords::Loop { r#in: 1 }.dispatch(Peer::Master, handler.clone()).await, "loop");
    assert_eq!(Keywords::Async.dispatch(Peer::Master, handler.clone()).await, "async");
    assert_eq!(Keywords::Gen.dispatch(Peer::Master, handler.clone()).await, "gen");
    assert_eq!(Keywords::Clone.dispatch(Peer::Master, handler.clone()).await, "clone");
    assert_eq!(Keywords::AsRef.dispatch(Peer::Master, handler).await, "as_ref");
}
