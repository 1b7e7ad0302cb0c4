//! Compile-time behaviour of `#[derive(Event)]`: the misuses give clear errors at the right
//! spans (`ui/*.rs`, expected output in `ui/*.stderr`), and the supported shapes compile
//! (`ui/pass/*.rs`).
//!
//! After changing a message, regenerate the expected output with
//! `TRYBUILD=overwrite cargo test -p multiprocess-derive --test ui` and read the diff.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
    t.pass("tests/ui/pass/*.rs");
}
