//! The fuzz targets' saved inputs, run through the same checks the fuzzers run, in the normal
//! test suite (stable, no fuzzing tools): every input a fuzzer found a bug with, and a few
//! corpus inputs per target. The inputs are `fuzz/regressions/<target>/*`; the checks are
//! `fuzz/src` (see `fuzz/README.md`).

use std::path::{Path, PathBuf};

#[path = "../../fuzz/src/lib.rs"]
mod checks;

/// Runs `check` on every saved input of `target` (a folder under `fuzz/regressions`), and fails
/// naming each input that failed (its panic is printed above).
fn replay(target: &str, check: fn(&[u8])) {
    let inputs = inputs(target);
    assert!(!inputs.is_empty(), "no saved inputs for {target}");
    let failed: Vec<_> = inputs
        .iter()
        .filter(|path| {
            let data = std::fs::read(path).unwrap();
            std::panic::catch_unwind(|| check(&data)).is_err()
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{target}: these inputs failed: {failed:#?}"
    );
}

/// The saved inputs of `target`, in name order.
fn inputs(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/regressions")
        .join(target);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("{}: {err}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .collect();
    paths.sort();
    paths
}

#[test]
fn frame_decoder() {
    replay("frame_decoder", checks::frame_decoder);
}

#[test]
fn envelope() {
    replay("envelope", checks::envelope);
}

#[test]
fn members() {
    replay("members", checks::members);
}

#[test]
fn hello() {
    replay("hello", checks::hello);
}

#[test]
fn credit() {
    replay("credit", checks::credit);
}

#[test]
fn error() {
    replay("error", checks::error);
}

#[test]
fn hub() {
    replay("hub", checks::hub);
}

#[cfg(feature = "nats")]
#[test]
fn announcement() {
    replay("announcement", messenger::uplink::fuzz_announcement);
}

#[cfg(feature = "nats")]
#[test]
fn frames() {
    replay("frames", messenger::uplink::fuzz_frames);
}
