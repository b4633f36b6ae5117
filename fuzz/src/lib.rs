//! Harnesses of the media-core fuzz targets, one module per target (`run(data)`), kept in
//! plain files so `tests/fuzz_regressions.rs` drives crash inputs through the very same code
//! (it includes these files with `#[path]`).

// Each harness file includes the small input reader (fuzz/src/input.rs) itself, so every
// one compiles on its own, here and in the fuzz crate.
#![allow(clippy::duplicate_mod)]

pub mod g722_decode;
pub mod ingress;
pub mod jitter;
pub mod negotiation;
pub mod opus_decode;
pub mod rfc4733;
