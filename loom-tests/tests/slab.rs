#![cfg(loom)]
//! Model of `media_core::runtime::slab`: slot access through unique tokens that travel
//! between threads on SPSC rings.
//!
//! The lane moves tokens through `rtrb` rings, which loom cannot instrument, so the model
//! uses `loom_tests::ring`, a ring with rtrb's orderings built on loom atomics. The slab's
//! slots are the crate's own `sync::Cell` (a loom `UnsafeCell` under `--cfg loom`), so any
//! slot access that the token hand-off does not order is reported by loom.

use loom::thread;
use loom_tests::ring::{ring_with, Orderings};
use media_core::runtime::slab::{Slab, Token};
use media_core::runtime::sync::Arc;

/// Producer writes two slots and sends their tokens; the consumer reads each (checking the
/// producer's value), writes it, and sends the token back; the producer then reads the
/// consumer's write. Rings hold one token, so the second send reuses a ring slot and waits
/// for the consumer (exercising the producer's `head` acquire as well).
fn token_round_trip(ord: Orderings) {
    loom_tests::model(move || {
        let (slab, tokens) = Slab::new(2, |_| 0u64);
        let slab = Arc::new(slab);
        let (mut to_consumer, mut from_producer) = ring_with(1, ord);
        let (mut to_producer, mut from_consumer) = ring_with(1, ord);

        let consumer = {
            let slab = slab.clone();
            thread::spawn(move || {
                for _ in 0..2 {
                    let mut t: Token = from_producer.pop_spin();
                    let i = u64::from(t.index());
                    assert_eq!(slab.with(&t, |v| *v), 100 + i, "producer's write lost");
                    slab.with_mut(&mut t, |v| *v += 1000);
                    to_producer.push_spin(t);
                }
            })
        };

        for mut t in tokens {
            let i = u64::from(t.index());
            slab.with_mut(&mut t, |v| *v = 100 + i);
            to_consumer.push_spin(t);
        }
        let mut seen = [false; 2];
        for _ in 0..2 {
            let t = from_consumer.pop_spin();
            let i = u64::from(t.index());
            assert_eq!(slab.with(&t, |v| *v), 1100 + i, "consumer's write lost");
            seen[i as usize] = true;
        }
        assert_eq!(seen, [true, true]);
        consumer.join().unwrap();
    });
}

#[test]
fn token_hand_off_orders_slot_access() {
    token_round_trip(Orderings::RTRB);
}

/// The same model over a ring whose index hand-off is `Relaxed`: loom must report the
/// unordered slot accesses. This shows the model can fail.
#[test]
#[should_panic(expected = "Causality violation")]
fn relaxed_hand_off_is_caught() {
    token_round_trip(Orderings::RELAXED);
}
