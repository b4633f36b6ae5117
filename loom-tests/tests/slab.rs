#![cfg(loom)]
//! Model of `media_core::runtime::slab`: slot access through unique tokens that travel
//! between threads on SPSC rings.
//!
//! The lane moves tokens through `rtrb` rings, which loom cannot instrument, so the model
//! uses `loom_tests::ring`, a ring with rtrb's orderings built on loom atomics. The slab's
//! slots are the crate's own `sync::Cell` (a loom `UnsafeCell` under `--cfg loom`), so any
//! slot access that the token hand-off does not order is reported by loom.

use loom::thread;
use loom_tests::outcomes;
use loom_tests::ring::{ring_untracked, ring_with, Consumer, Orderings, Producer};
use media_core::runtime::slab::{Slab, Token};
use media_core::runtime::sync::Arc;
use std::collections::BTreeSet;

/// The producer (main thread) writes two slots and sends their tokens; the consumer reads
/// each (checking the producer's value), writes it, and sends the token back; the producer
/// then reads the consumer's write. Rings hold one token, so the second send reuses a ring
/// slot and may wait for the consumer (exercising the producer's `head` acquire too).
///
/// Returns, per execution, whether the producer ever found its ring full and whether the
/// consumer ever found its ring empty.
fn token_round_trip(
    make_ring: fn() -> (Producer<Token>, Consumer<Token>),
) -> BTreeSet<(bool, bool)> {
    let (seen, _) = outcomes(move || {
        let (slab, tokens) = Slab::new(2, |_| 0u64);
        let slab = Arc::new(slab);
        let (mut to_consumer, mut from_producer) = make_ring();
        let (mut to_producer, mut from_consumer) = make_ring();

        let consumer = {
            let slab = slab.clone();
            thread::spawn(move || {
                let mut waited = false;
                for _ in 0..2 {
                    let (mut t, waits): (Token, _) = from_producer.pop_spin();
                    waited |= waits > 0;
                    let i = u64::from(t.index());
                    assert_eq!(slab.with(&t, |v| *v), 100 + i, "producer's write lost");
                    slab.with_mut(&mut t, |v| *v += 1000);
                    to_producer.push_spin(t);
                }
                waited
            })
        };

        let mut producer_waited = false;
        for mut t in tokens {
            let i = u64::from(t.index());
            slab.with_mut(&mut t, |v| *v = 100 + i);
            producer_waited |= to_consumer.push_spin(t) > 0;
        }
        let mut back = [false; 2];
        for _ in 0..2 {
            let (t, _) = from_consumer.pop_spin();
            let i = u64::from(t.index());
            assert_eq!(slab.with(&t, |v| *v), 1100 + i, "consumer's write lost");
            back[i as usize] = true;
        }
        assert_eq!(back, [true, true], "a token did not come back");
        let consumer_waited = consumer.join().unwrap();
        (producer_waited, consumer_waited)
    });
    seen
}

#[test]
fn token_hand_off_orders_slot_access() {
    let seen = token_round_trip(|| ring_with(1, Orderings::RTRB));
    // Loom explored the producer meeting a full ring and the consumer an empty one.
    assert!(seen.contains(&(true, true)), "{seen:?}");
    assert!(seen.contains(&(false, false)), "{seen:?}");
}

/// The same model over a ring whose index hand-off is `Relaxed`: loom must report the
/// unordered accesses (it finds the ring's own slot first). Shows the model can fail.
#[test]
#[should_panic(expected = "Causality violation")]
fn relaxed_hand_off_is_caught() {
    token_round_trip(|| ring_with(1, Orderings::RELAXED));
}

/// As above, but the ring's own slots are hidden from loom, so the race can only be seen on
/// the slab's slots: this shows media-core's `sync::Cell` is loom-instrumented and that the
/// token hand-off is what orders slab access.
#[test]
#[should_panic(expected = "Causality violation")]
fn relaxed_hand_off_is_caught_on_slab_cells() {
    token_round_trip(|| ring_untracked(1, Orderings::RELAXED));
}
