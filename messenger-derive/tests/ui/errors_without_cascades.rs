//! With errors in the derive input, the generated fallback still declares what the rest of the
//! code uses (`impl Event`, `impl Dispatch`, the handler trait): only the real errors show.
use std::sync::Arc;

use messenger::{async_trait, Dispatch, Event, Peer};
use serde::{Deserialize, Serialize};

#[allow(non_camel_case_types)]
#[derive(Serialize, Deserialize, Event)]
#[event(reply = u32, colour = "blue")]
enum Admin {
    FooBar(u8),
    Foo_Bar(u8),
    #[event(name = "stop")]
    Stop,
}

struct Worker;

#[async_trait]
impl AdminHandler for Worker {
    async fn foo_bar(&self, arg0: u8) -> u32 {
        arg0.into()
    }
    async fn stop(&self) -> u32 {
        0
    }
}

fn assert_dispatch<E: Dispatch<Reply = u32>>() {}

fn main() {
    assert_dispatch::<Admin>();
    assert_eq!(<Admin as Event>::NAME, "Admin");
    let handler: Arc<dyn AdminHandler> = Arc::new(Worker);
    let _ = Admin::Stop.dispatch(Peer::Master, handler);
}
