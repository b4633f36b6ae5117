#![cfg(loom)]
//! Model of `media_core::runtime::shutdown::run_until_upstream_done`, the shutdown
//! hand-shake of a split lane's downstream stages.
//!
//! A three-stage chain: the upstream stage (main thread) pushes `N` messages on ring 1 and
//! sets `done[0]`; stage 2 forwards ring 1 to ring 2 under `run_until_upstream_done`, then
//! sets `done[1]`; stage 3 consumes ring 2 the same way and sets `done[2]`. After all
//! threads join, every message must have reached stage 3, in order, and both rings must be
//! empty. The rings are `loom_tests::ring` (rtrb's orderings on loom atomics).

use loom::thread;
use loom_tests::outcomes;
use loom_tests::ring::ring;
use media_core::runtime::shutdown::run_until_upstream_done;
use media_core::runtime::sync::{Arc, AtomicBool, Ordering};
use std::collections::BTreeSet;

const N: u32 = 2;

/// Runs the chain with the upstream stage setting `done[0]` with `done_order`; returns,
/// per execution, whether stages 2 and 3 ever went idle (found their input empty before
/// their upstream was done).
fn chain(done_order: Ordering) -> BTreeSet<(bool, bool)> {
    let (seen, _) = outcomes(move || {
        let done = Arc::new([(); 3].map(|_| AtomicBool::new(false)));
        let (mut tx1, mut rx1) = ring::<u32>(2);
        let (mut tx2, mut rx2) = ring::<u32>(2);

        let stage2 = {
            let done = done.clone();
            thread::spawn(move || {
                let mut idled = false;
                run_until_upstream_done(
                    &done[0],
                    &done[1],
                    || {
                        let mut n = 0;
                        while let Some(m) = rx1.pop() {
                            tx2.push_spin(m);
                            n += 1;
                        }
                        n
                    },
                    |_| {
                        idled = true;
                        thread::yield_now();
                    },
                );
                (rx1, idled)
            })
        };
        let stage3 = {
            let done = done.clone();
            thread::spawn(move || {
                let mut got = Vec::new();
                let mut idled = false;
                run_until_upstream_done(
                    &done[1],
                    &done[2],
                    || {
                        let before = got.len();
                        while let Some(m) = rx2.pop() {
                            got.push(m);
                        }
                        got.len() - before
                    },
                    |_| {
                        idled = true;
                        thread::yield_now();
                    },
                );
                (rx2, got, idled)
            })
        };

        for m in 0..N {
            tx1.push_spin(m);
        }
        done[0].store(true, done_order);

        let (rx1, idled2) = stage2.join().unwrap();
        let (rx2, got, idled3) = stage3.join().unwrap();
        assert_eq!(got, (0..N).collect::<Vec<_>>(), "message lost in shutdown");
        assert!(rx1.is_empty(), "ring 1 not drained");
        assert!(rx2.is_empty(), "ring 2 not drained");
        assert!(done.iter().all(|d| d.load(Ordering::Acquire)));
        (idled2, idled3)
    });
    seen
}

#[test]
fn every_message_reaches_the_last_stage() {
    let seen = chain(Ordering::Release);
    // Loom explored stages finding their input empty and finding it full at every poll.
    assert!(seen.contains(&(true, true)), "{seen:?}");
    assert!(seen.contains(&(false, false)), "{seen:?}");
}

/// With `done[0]` stored `Relaxed`, stage 2 can see `done` without the pushes that preceded
/// it, drain nothing and leave: the model must catch the lost message. This shows the model
/// can fail and that the upstream's release store is load-bearing.
#[test]
#[should_panic(expected = "message lost in shutdown")]
fn relaxed_done_loses_messages() {
    chain(Ordering::Relaxed);
}
