#![no_main]

use libfuzzer_sys::fuzz_target;

// The check is the messenger's own (`uplink::fuzz_frames`): it needs the uplink's private
// reader of another host's messages. messenger/tests/fuzz_regressions.rs replays the saved
// inputs through it.
fuzz_target!(|data: &[u8]| messenger::uplink::fuzz_frames(data));
