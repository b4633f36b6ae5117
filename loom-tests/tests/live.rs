#![cfg(loom)]
//! Model of `media_core::runtime::live::LiveTable`: the control plane records which
//! session holds a lane slot; the transport's ingress handle checks each packet's id
//! against it before the packet takes a packet slot.
//!
//! The control plane (main thread) creates a session in slot 0 (generation 1), tells the
//! transport so (the id handed back by `create_media_session`, modelled by a Release store
//! of a flag), destroys it, tells the transport again, and reuses the slot for generation 2.
//! The transport (spawned) pushes for generation 1 twice. What the engine promises:
//! - a push made after the transport learnt of the destroy refuses generation 1, even
//!   once generation 2 holds the slot (asserted in every execution);
//! - pushes before the create (refused), between create and destroy (admitted) and after
//!   the destroy (refused) all occur among the executions, so the model did explore.

use loom::thread;
use loom_tests::outcomes;
use media_core::runtime::live::LiveTable;
use media_core::runtime::sync::{Arc, AtomicU32, Ordering};

/// What the transport knew (0: nothing, 1: created, 2: destroyed) when it pushed, and
/// whether its push for generation 1 was admitted.
type Push = (u32, bool);

#[test]
fn a_push_after_create_is_admitted_and_after_destroy_refused() {
    let (seen, runs) = outcomes(|| {
        let table = Arc::new(LiveTable::new(2));
        let told = Arc::new(AtomicU32::new(0));
        let transport = {
            let (table, told) = (table.clone(), told.clone());
            thread::spawn(move || -> [Push; 2] {
                std::array::from_fn(|_| {
                    let knew = told.load(Ordering::Acquire);
                    let admitted = table.is_live(0, 1);
                    if knew == 2 {
                        assert!(!admitted, "generation 1 admitted after its destroy");
                    }
                    (knew, admitted)
                })
            })
        };
        table.set(0, 1);
        told.store(1, Ordering::Release);
        table.clear(0);
        told.store(2, Ordering::Release);
        table.set(0, 2);
        transport.join().unwrap()
    });
    // Loom explored the interleavings: pushes before the create, between create and
    // destroy (admitted), and after the destroy (refused) were all seen.
    let flat: Vec<Push> = seen.iter().flatten().copied().collect();
    assert!(flat.contains(&(0, false)), "{seen:?}");
    assert!(flat.contains(&(1, true)), "{seen:?}");
    assert!(flat.contains(&(2, false)), "{seen:?}");
    assert!(runs > 3, "{runs} executions");
}
