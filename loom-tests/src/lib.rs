//! Loom models of media-core's cross-thread protocols. The models live in `tests/`; run them
//! with
//!
//! ```text
//! RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test -p loom-tests --release --target-dir target/loom
//! ```
//!
//! Without `--cfg loom` this crate (and every test file) compiles to nothing.
//!
//! Two things every model here does, because of how loom explores:
//!
//! * The thread that stores runs first in program order (it is the model's main thread and
//!   the readers are spawned), and every model checks the set of outcomes it saw. Loom's
//!   DPOR only remembers the last access to each atomic, so a spawned thread whose first
//!   operation is a load can be left unexplored (tokio-rs/loom#392, #166): a model shaped
//!   that way passes after a single execution and proves nothing. The outcome checks make
//!   such a silent non-exploration fail the test.
//! * Loops that wait call `loom::thread::yield_now()`.

#[cfg(loom)]
pub mod ring;

/// The preemption bound used when `LOOM_MAX_PREEMPTIONS` is not set, so that a plain run
/// stays bounded (loom's own default is unbounded).
#[cfg(loom)]
pub const DEFAULT_PREEMPTIONS: usize = 2;

/// Runs `f` under loom and returns the set of values it returned across all explored
/// executions, with the number of executions (also printed, visible with `--nocapture`).
#[cfg(loom)]
// Test harness, not a real-time path: the lock only gathers results between executions.
#[allow(clippy::disallowed_types)]
pub fn outcomes<T, F>(f: F) -> (std::collections::BTreeSet<T>, usize)
where
    T: Ord + Send + 'static,
    F: Fn() -> T + Sync + Send + 'static,
{
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    let seen = std::sync::Arc::new(Mutex::new(std::collections::BTreeSet::new()));
    let runs = std::sync::Arc::new(AtomicUsize::new(0));
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(DEFAULT_PREEMPTIONS);
    }
    {
        let (seen, runs) = (seen.clone(), runs.clone());
        builder.check(move || {
            runs.fetch_add(1, Ordering::Relaxed);
            let v = f();
            seen.lock().unwrap().insert(v);
        });
    }
    let n = runs.load(Ordering::Relaxed);
    let set = std::mem::take(&mut *seen.lock().unwrap());
    eprintln!("loom: {n} executions, {} distinct outcomes", set.len());
    (set, n)
}
