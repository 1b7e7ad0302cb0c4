use messenger::{async_trait, Event};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Event)]
#[event(reply = u32)]
enum Admin {
    Count,
}

struct Worker;

#[async_trait]
impl AdminHandler for Worker {
    async fn count(&self) -> String {
        String::new()
    }
}

fn main() {}
