//! `multiprocess`: a master plus N worker processes with a typed messenger.
pub use messenger::*;
