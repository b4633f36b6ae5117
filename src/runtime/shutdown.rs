//! The shutdown hand-shake of a split lane's downstream stages.
//!
//! The ticking stage sees `stop`, applies its last commands, then sets its `done` flag
//! (release). Each downstream stage keeps polling its input; once its upstream's `done`
//! is set (acquire), everything the upstream ever pushed is visible, so one more drain
//! empties the input for good, and the stage sets its own `done`. No message is left in
//! any ring when the last stage exits. Modelled in `loom-tests/tests/shutdown.rs`.

use super::sync::{AtomicBool, Ordering};

/// Runs `run` (which drains the stage's input and returns how many messages it handled)
/// until `upstream_done` is set and the input is empty, then sets `my_done`. `idle` is
/// called with the count of consecutive empty polls (to spin, then back off).
pub fn run_until_upstream_done(
    upstream_done: &AtomicBool,
    my_done: &AtomicBool,
    mut run: impl FnMut() -> usize,
    mut idle: impl FnMut(u32),
) {
    let mut empty = 0u32;
    loop {
        if run() > 0 {
            empty = 0;
            continue;
        }
        if upstream_done.load(Ordering::Acquire) {
            // Everything upstream pushed happened before `done`; drain it and leave.
            while run() > 0 {}
            break;
        }
        empty = empty.saturating_add(1);
        idle(empty);
    }
    my_done.store(true, Ordering::Release);
}

/// Lane-failure hand-shake: what a lane thread's guard does while it unwinds from a panic.
/// It stops the lane (`stop`: the ticking stage leaves its loop), marks its own stage
/// done (`my_done`: downstream stages drain and leave instead of waiting for it), and
/// only then raises `failed` (release). The control plane polls `failed` (acquire); when
/// it sees it, the other two stores are visible too, so every thread of the lane is on
/// its way out and joining them cannot hang. Modelled in `loom-tests/tests/lane_failure.rs`.
pub fn mark_failed(stop: &AtomicBool, my_done: &AtomicBool, failed: &AtomicBool) {
    stop.store(true, Ordering::Release);
    my_done.store(true, Ordering::Release);
    failed.store(true, Ordering::Release);
}
