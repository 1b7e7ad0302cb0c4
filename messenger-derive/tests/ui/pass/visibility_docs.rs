//! The handler trait has the enum's visibility and is documented: `missing_docs` and
//! `unreachable_pub`-free crates accept it.
#![deny(warnings, missing_docs)]

/// Public events.
pub mod events {
    use messenger::Event;
    use serde::{Deserialize, Serialize};

    /// A public enum: `AdminHandler` is public.
    #[derive(Serialize, Deserialize, Event)]
    pub enum Admin {
        /// Stops.
        Stop,
    }

    /// Only for this crate.
    #[derive(Serialize, Deserialize, Event)]
    pub(crate) enum Internal {
        /// Pings.
        Ping,
    }

    /// Private to this module.
    #[derive(Serialize, Deserialize, Event)]
    enum Private {
        /// Pongs.
        Pong,
    }

    /// Uses the private trait where it is visible.
    pub(crate) fn private_handler_is_usable() -> bool {
        let handler: Option<&dyn PrivateHandler> = None;
        let _ = Private::Pong;
        handler.is_none()
    }
}

use events::{AdminHandler, InternalHandler};

fn main() {
    let _: Option<&dyn AdminHandler> = None;
    let _: Option<&dyn InternalHandler> = None;
    let _ = (events::Admin::Stop, events::Internal::Ping);
    assert!(events::private_handler_is_usable());
}
