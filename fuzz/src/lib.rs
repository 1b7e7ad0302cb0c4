//! The checks the fuzz targets run, one function per target, each taking the fuzzer's bytes.
//!
//! They live here, not in the targets, so that `messenger/tests/fuzz_regressions.rs` can run
//! them on the saved inputs of `fuzz/regressions/` in the normal test suite, on stable and
//! without fuzzing tools: it includes this file as a module (`#[path]`). So the modules name
//! each other with `super::`, never `crate::`, and use only what the messenger crate's tests
//! have (no `arbitrary`: inputs are read with [`input::Input`]).

pub mod actions;
pub mod bodies;
pub mod errors;
pub mod fake;
pub mod frames;
pub mod hub;
pub mod input;

pub use bodies::{credit, hello, members};
pub use errors::error;
pub use frames::{envelope, frame_decoder};
pub use hub::hub;
