//! The root's `Result` and `Error` go together, and a messenger call's error converts with `?`.
use multiprocess::{CallError, Error, Event, Messenger};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Event)]
#[event(reply = u32)]
struct Load;

fn refuse() -> multiprocess::Result<u32> {
    Err(Error::Config("no".into()))
}

async fn least(messenger: &Messenger) -> multiprocess::Result<u32> {
    let loads: Vec<u32> = messenger.map(Load).await?;
    let busy: Result<u32, CallError> = Err(CallError::Closed);
    let _ = busy.map_err(Error::from)?;
    Ok(loads.into_iter().min().unwrap_or(0))
}

fn main() {
    let _ = refuse();
    let _ = least;
}
