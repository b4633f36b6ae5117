#![cfg(loom)]
//! Model of the lane-failure hand-shake, `media_core::runtime::shutdown::mark_failed`: what
//! a lane thread's guard does while it unwinds from a panic, against the ticking stage
//! (which runs until `stop`) and the control plane (which polls `failed`, then joins the
//! lane's threads and forgets its sessions).
//!
//! The failing stage is the main thread (it stores first; see the crate docs on why the
//! storing thread must be the main one). The control plane must find `stop` and the failing
//! stage's `done` visible as soon as it sees `failed`: it then joins every thread of the
//! lane, and a stage that could still miss `stop` or its upstream's `done` would keep the
//! join waiting. The ticking stage must leave its loop in every execution.

use loom::thread;
use loom_tests::outcomes;
use loom_tests::ring::ring;
use media_core::runtime::shutdown::mark_failed;
use media_core::runtime::sync::{Arc, AtomicBool, Ordering};
use std::collections::BTreeSet;

struct Flags {
    stop: AtomicBool,
    done: [AtomicBool; 2],
    failed: AtomicBool,
}

/// Runs the model with `fail` as the failing stage's hand-shake; returns, per execution,
/// (whether the ticking stage ticked before it saw `stop`, whether the control plane's poll
/// saw `failed`).
fn model(fail: fn(&Flags)) -> BTreeSet<(u32, bool)> {
    let (seen, _) = outcomes(move || {
        let f = Arc::new(Flags {
            stop: AtomicBool::new(false),
            done: [AtomicBool::new(false), AtomicBool::new(false)],
            failed: AtomicBool::new(false),
        });
        let (mut tx, mut rx) = ring::<u32>(1);

        // Stage 0: ticks until `stop` (pushing one message: a full ring is a counted
        // drop, never a wait).
        let tick = {
            let f = f.clone();
            thread::spawn(move || {
                let mut ticks = 0u32;
                while !f.stop.load(Ordering::Acquire) {
                    if ticks == 0 {
                        let _ = tx.push(ticks);
                    }
                    ticks = 1;
                    thread::yield_now();
                }
                f.done[0].store(true, Ordering::Release);
                ticks
            })
        };
        // Control plane: one `collect_all` poll of `failed`; when set, `fail_lane` joins
        // the lane, so everything that makes the lane's threads leave must be visible.
        let control = {
            let f = f.clone();
            thread::spawn(move || {
                let seen = f.failed.load(Ordering::Acquire);
                if seen {
                    assert!(f.stop.load(Ordering::Relaxed), "failed seen before stop");
                    assert!(f.done[1].load(Ordering::Relaxed), "failed seen before done");
                }
                seen
            })
        };

        // Stage 1 (this thread) takes what is there, then panics: its guard runs `fail`.
        let _ = rx.pop();
        fail(&f);

        let ticks = tick.join().unwrap();
        let saw_failed = control.join().unwrap();
        assert!(
            f.done[0].load(Ordering::Acquire),
            "ticking stage did not finish"
        );
        (ticks, saw_failed)
    });
    seen
}

#[test]
fn the_control_plane_sees_a_stopped_lane_when_it_sees_failed() {
    let seen = model(|f| mark_failed(&f.stop, &f.done[1], &f.failed));
    // Loom explored the ticking stage stopping before its first tick and after it, and
    // the control plane's poll before and after the failure.
    assert!(seen.iter().any(|&(t, _)| t == 0), "{seen:?}");
    assert!(seen.iter().any(|&(t, _)| t > 0), "{seen:?}");
    assert!(seen.iter().any(|&(_, f)| f), "{seen:?}");
    assert!(seen.iter().any(|&(_, f)| !f), "{seen:?}");
}

/// The order the guard used before the model existed: `failed` first. The control plane
/// can then see `failed` while `stop` is still invisible to it (and join a lane whose
/// ticking stage has not been told to stop). The model must catch it.
#[test]
#[should_panic(expected = "failed seen before")]
fn raising_failed_first_is_caught() {
    model(|f| {
        f.failed.store(true, Ordering::Release);
        f.stop.store(true, Ordering::Release);
        f.done[1].store(true, Ordering::Release);
    });
}
