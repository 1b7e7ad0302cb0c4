use messenger::{async_trait, Event};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Event)]
enum Admin {
    Echo(String),
    Shutdown,
}

struct Worker;

#[async_trait]
impl AdminHandler for Worker {
    async fn echo(&self, _text: String) {}
}

fn main() {}
