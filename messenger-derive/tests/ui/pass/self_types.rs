//! `Self` in the reply or in a field means the event, also in the handler trait.
#![deny(warnings)]

use std::sync::Arc;

use messenger::{async_trait, Dispatch, Event, Peer};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Event, PartialEq, Debug)]
#[event(reply = Self)]
struct Echo(u8);

#[derive(Serialize, Deserialize, Event, PartialEq, Debug)]
#[event(reply = Option<Box<Self>>)]
enum Tree {
    Leaf(u8),
    Node(Box<Self>, Vec<Self>),
}

struct Handler;

#[async_trait]
impl TreeHandler for Handler {
    async fn leaf(&self, arg0: u8) -> Option<Box<Tree>> {
        Some(Box::new(Tree::Leaf(arg0 + 1)))
    }
    async fn node(&self, arg0: Box<Tree>, _arg1: Vec<Tree>) -> Option<Box<Tree>> {
        Some(arg0)
    }
}

#[tokio::main]
async fn main() {
    let _: <Echo as Event>::Reply = Echo(1);
    let handler: Arc<dyn TreeHandler> = Arc::new(Handler);
    let node = Tree::Node(Box::new(Tree::Leaf(1)), vec![]);
    assert_eq!(node.dispatch(Peer::Master, handler.clone()).await, Some(Box::new(Tree::Leaf(1))));
    assert_eq!(Tree::Leaf(1).dispatch(Peer::Master, handler).await, Some(Box::new(Tree::Leaf(2))));
}
