//! Loom models live in `tests/`; run them with
//! `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test -p loom-tests --release --target-dir target/loom`.
//!
//! Without `--cfg loom` this crate (and every test file) compiles to nothing.

#[cfg(loom)]
pub mod ring;
