//! An enum with unit, tuple and struct variants: the handler trait, used as a trait object.
#![deny(warnings)]

use std::sync::Arc;

use messenger::{async_trait, Dispatch, Event, Peer};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Event)]
#[event(reply = String)]
enum Admin {
    Shutdown,
    Echo(String),
    Add(i32, i64),
    SetLogLevel { level: u8, target: Option<String> },
    Empty {},
    EmptyTuple(),
}

struct Worker;

#[async_trait]
impl AdminHandler for Worker {
    async fn shutdown(&self) -> String {
        "shutdown".into()
    }
    async fn echo(&self, arg0: String) -> String {
        arg0
    }
    async fn add(&self, arg0: i32, arg1: i64) -> String {
        (i64::from(arg0) + arg1).to_string()
    }
    async fn set_log_level(&self, level: u8, target: Option<String>) -> String {
        format!("{level} {}", target.unwrap_or_default())
    }
    async fn empty(&self) -> String {
        "empty".into()
    }
    async fn empty_tuple(&self) -> String {
        "empty tuple".into()
    }
}

#[tokio::main]
async fn main() {
    assert_eq!(<Admin as Event>::NAME, "Admin");
    let handler: Arc<dyn AdminHandler> = Arc::new(Worker);
    let set = Admin::SetLogLevel { level: 2, target: Some("net".into()) };
    assert_eq!(set.dispatch(Peer::Master, handler.clone()).await, "2 net");
    assert_eq!(Admin::Add(1, 2).dispatch(Peer::Master, handler.clone()).await, "3");
    assert_eq!(Admin::Echo("hi".into()).dispatch(Peer::Master, handler.clone()).await, "hi");
    assert_eq!(Admin::Shutdown.dispatch(Peer::Master, handler.clone()).await, "shutdown");
    assert_eq!(Admin::Empty {}.dispatch(Peer::Master, handler.clone()).await, "empty");
    assert_eq!(Admin::EmptyTuple().dispatch(Peer::Master, handler).await, "empty tuple");
}
