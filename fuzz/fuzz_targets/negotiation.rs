#![no_main]
//! See `fuzz/src/negotiation.rs` for what this target drives and checks.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| media_core_fuzz::negotiation::run(data));
