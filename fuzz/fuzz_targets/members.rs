#![no_main]

use libfuzzer_sys::fuzz_target;

// The check is in src/, where the regression test (messenger/tests/fuzz_regressions.rs) runs it
// too.
fuzz_target!(|data: &[u8]| multiprocess_fuzz::members(data));
