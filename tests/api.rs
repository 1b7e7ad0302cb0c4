//! The public surface as a user's code meets it: what compiles (`api/pass/*.rs`) and what is
//! deliberately out of reach (`api/*.rs`, with the compiler's message in `api/*.stderr`).
//!
//! After changing the surface, regenerate the expected messages with
//! `TRYBUILD=overwrite cargo test --test api` and read the diff.

#[test]
fn api() {
    let t = trybuild::TestCases::new();
    t.pass("tests/api/pass/*.rs");
    t.compile_fail("tests/api/*.rs");
}
