//! Loom models live in `tests/`; run them with
//! `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test -p loom-tests --release --target-dir target/loom`.
//!
//! Without `--cfg loom` this crate (and every test file) compiles to nothing.

#[cfg(loom)]
pub mod ring;

/// Runs `f` under `loom::model` and returns how many executions loom explored (also
/// printed to stderr, visible with `--nocapture`), so a model that silently stops exploring
/// shows up in the numbers.
#[cfg(loom)]
pub fn model<F>(f: F) -> usize
where
    F: Fn() + Sync + Send + 'static,
{
    use std::sync::atomic::{AtomicUsize, Ordering};
    let runs = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = runs.clone();
    loom::model(move || {
        counter.fetch_add(1, Ordering::Relaxed);
        f();
    });
    let n = runs.load(Ordering::Relaxed);
    eprintln!("loom: {n} executions explored");
    n
}
