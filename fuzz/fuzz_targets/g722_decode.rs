#![no_main]
//! See `fuzz/src/g722_decode.rs` for what this target drives and checks.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| media_core_fuzz::g722_decode::run(data));
