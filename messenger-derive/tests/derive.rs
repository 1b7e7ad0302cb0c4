//! What `#[derive(Event)]` generates, checked by using it: the names, the reply types, dispatch
//! to the handler through `Arc<dyn ...Handler>`, and the MessagePack round trip.

use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use messenger::{async_trait, Dispatch, Event, Peer};
use serde::{Deserialize, Serialize};

/// Asks a worker for its process id.
#[derive(Debug, PartialEq, Serialize, Deserialize, Event)]
#[event(name = "pid", reply = u32)]
struct Pid;

#[derive(Debug, PartialEq, Serialize, Deserialize, Event)]
struct Ping {
    seq: u64,
    payload: String,
}

#[derive(Debug, PartialEq, Serialize, Deserialize, Event)]
#[event(reply = Vec<Option<String>>)]
struct Lookup(Vec<String>, bool);

/// Administration of a worker: every variant answers a `String`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
#[event(name = "admin", reply = String)]
pub enum Admin {
    Echo(String),
    Add(i32, i32),
    SetLevel {
        level: u8,
        target: Option<String>,
    },
    Shutdown,
    /// `type` is a keyword: the method is `r#type`.
    Type,
    /// `clone` is also a method of `Arc`: dispatch must still call the handler's.
    Clone {
        handler: u8,
    },
}

/// A handler that answers from the arguments and records the calls.
#[derive(Default)]
struct Worker {
    calls: Mutex<Vec<String>>,
}

impl Worker {
    fn record(&self, call: String) -> String {
        self.calls.lock().unwrap().push(call.clone());
        call
    }
}

#[async_trait]
impl AdminHandler for Worker {
    async fn echo(&self, arg0: String) -> String {
        self.record(format!("echo {arg0}"))
    }
    async fn add(&self, arg0: i32, arg1: i32) -> String {
        self.record(format!("add {}", arg0 + arg1))
    }
    async fn set_level(&self, level: u8, target: Option<String>) -> String {
        self.record(format!("set_level {level} {target:?}"))
    }
    async fn shutdown(&self) -> String {
        self.record("shutdown".to_string())
    }
    async fn r#type(&self) -> String {
        self.record("type".to_string())
    }
    async fn clone(&self, handler: u8) -> String {
        self.record(format!("clone {handler}"))
    }
}

fn assert_reply<E: Event<Reply = R>, R>() {}

#[test]
fn wire_names_default_to_the_type_name() {
    assert_eq!(<Ping as Event>::NAME, "Ping");
    assert_eq!(<Lookup as Event>::NAME, "Lookup");
}

#[test]
fn wire_names_can_be_set() {
    assert_eq!(<Pid as Event>::NAME, "pid");
    assert_eq!(<Admin as Event>::NAME, "admin");
}

#[test]
fn reply_types() {
    assert_reply::<Pid, u32>();
    assert_reply::<Ping, ()>();
    assert_reply::<Lookup, Vec<Option<String>>>();
    assert_reply::<Admin, String>();
}

#[test]
fn the_handler_of_an_enum_is_its_trait_object() {
    fn assert_handler<E: Dispatch<Handler = H>, H: ?Sized>() {}
    assert_handler::<Admin, dyn AdminHandler>();
}

#[tokio::test]
async fn dispatch_calls_the_method_of_the_variant_with_its_fields() {
    let worker = Arc::new(Worker::default());
    let handler: Arc<dyn AdminHandler> = worker.clone();
    let cases = [
        (Admin::Echo("hi".into()), "echo hi"),
        (Admin::Add(2, 3), "add 5"),
        (
            Admin::SetLevel {
                level: 4,
                target: Some("net".into()),
            },
            "set_level 4 Some(\"net\")",
        ),
        (Admin::Shutdown, "shutdown"),
        (Admin::Type, "type"),
        (Admin::Clone { handler: 7 }, "clone 7"),
    ];
    for (event, expected) in cases.clone() {
        assert_eq!(
            event.dispatch(Peer::Master, handler.clone()).await,
            expected
        );
    }
    let expected: Vec<_> = cases.iter().map(|(_, reply)| reply.to_string()).collect();
    assert_eq!(*worker.calls.lock().unwrap(), expected);
}

#[tokio::test]
async fn dispatch_future_is_send_and_static() {
    fn assert_send_static<F: Send + 'static>(f: F) -> F {
        f
    }
    let handler: Arc<dyn AdminHandler> = Arc::new(Worker::default());
    let future = assert_send_static(Admin::Echo("spawned".into()).dispatch(Peer::Master, handler));
    assert_eq!(tokio::spawn(future).await.unwrap(), "echo spawned");
}

fn round_trip<E: Event + Debug + PartialEq>(event: E) {
    let bytes = rmp_serde::to_vec(&event).unwrap();
    let back: E = rmp_serde::from_slice(&bytes).unwrap();
    assert_eq!(back, event);
}

#[test]
fn events_round_trip_through_message_pack() {
    round_trip(Pid);
    round_trip(Ping {
        seq: 9,
        payload: "x".into(),
    });
    round_trip(Lookup(vec!["a".into()], true));
    round_trip(Admin::Echo("hi".into()));
    round_trip(Admin::Add(-1, 1));
    round_trip(Admin::SetLevel {
        level: 1,
        target: None,
    });
    round_trip(Admin::Shutdown);
    round_trip(Admin::Clone { handler: 0 });
}

#[test]
fn replies_round_trip_through_message_pack() {
    let reply: <Lookup as Event>::Reply = vec![Some("a".into()), None];
    let bytes = rmp_serde::to_vec(&reply).unwrap();
    let back: <Lookup as Event>::Reply = rmp_serde::from_slice(&bytes).unwrap();
    assert_eq!(back, reply);
}

/// The example of the derive's documentation, compiled and run.
mod doc_example {
    use super::*;

    /// Administration of a worker.
    #[derive(Serialize, Deserialize, Event)]
    #[event(reply = String)]
    pub enum Admin {
        Echo(String),
        SetLevel { level: u8 },
        Shutdown,
    }

    struct Worker;

    #[async_trait]
    impl AdminHandler for Worker {
        async fn echo(&self, arg0: String) -> String {
            arg0
        }
        async fn set_level(&self, level: u8) -> String {
            format!("level {level}")
        }
        async fn shutdown(&self) -> String {
            "bye".to_string()
        }
    }

    #[tokio::test]
    async fn works() {
        assert_eq!(<Pid as Event>::NAME, "pid");
        let handler: Arc<dyn AdminHandler> = Arc::new(Worker);
        let reply = Admin::SetLevel { level: 3 }
            .dispatch(Peer::Master, handler)
            .await;
        assert_eq!(reply, "level 3");
    }
}

/// With `#[event(sender)]`, each handler method learns who sent the event.
#[derive(Debug, Serialize, Deserialize, Event)]
#[event(reply = String, sender)]
enum Control {
    Hello(String),
    Stop,
}

struct Greeter;

#[async_trait]
impl ControlHandler for Greeter {
    async fn hello(&self, from: messenger::Peer, name: String) -> String {
        format!("{name} from {from}")
    }
    async fn stop(&self, from: messenger::Peer) -> String {
        format!("stopped by {from}")
    }
}

#[tokio::test]
async fn with_sender_the_methods_get_who_sent_it() {
    let handler: Arc<dyn ControlHandler> = Arc::new(Greeter);
    let worker = Peer::Worker(messenger::WorkerId::new(1, 2));
    let reply = Control::Hello("ann".into())
        .dispatch(worker, handler.clone())
        .await;
    assert_eq!(reply, format!("ann from {worker}"));
    assert_eq!(
        Control::Stop.dispatch(Peer::Master, handler).await,
        format!("stopped by {}", Peer::Master)
    );
}
