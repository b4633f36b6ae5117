#![no_main]
//! See `fuzz/src/rfc4733.rs` for what this target drives and checks.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| media_core_fuzz::rfc4733::run(data));
