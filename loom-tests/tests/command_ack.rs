#![cfg(loom)]
//! Model of the command / acknowledge hand-off between the control plane and a lane
//! (`EncodeStage::apply` in `src/runtime/lane.rs`).
//!
//! The control plane (main thread) pushes boxed command bundles on a ring. The stage
//! applies each one: it swaps the session state it owns with the state carried by the
//! bundle (create installs it, destroy hands it back), writes a result into the bundle,
//! pushes the bundle on the retire ring, and then stores `acked = seq` with `Release`. The
//! control plane either waits for `acked` (`Acquire`) or pops the retire ring, and then reads
//! what the stage wrote. The result lives in the crate's `sync::Cell` (a loom `UnsafeCell`),
//! so a read that the hand-off does not order is reported by loom.

use loom::thread;
use loom_tests::outcomes;
use loom_tests::ring::{ring, Consumer, Producer};
use media_core::runtime::sync::{Arc, AtomicU64, Cell, Ordering};
use std::collections::BTreeSet;

/// A value the stage writes and the control plane reads.
struct Written(Cell<u64>);

// SAFETY: written by the stage before it acknowledges / retires, read by the control plane
// after it sees that; loom checks exactly this ordering.
unsafe impl Sync for Written {}

impl Written {
    fn new() -> Arc<Self> {
        Arc::new(Written(Cell::new(0)))
    }
    fn set(&self, v: u64) {
        // SAFETY: see the `Sync` impl.
        unsafe { self.0.with_mut(|x| *x = v) }
    }
    fn get(&self) -> u64 {
        // SAFETY: see the `Sync` impl.
        unsafe { self.0.with(|x| *x) }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Create,
    Destroy,
}

struct Bundle {
    seq: u64,
    op: Op,
    /// In: the new session state (create). Out: the state the stage removed (destroy).
    state: Option<Box<u64>>,
    /// Out: written by the stage when it applies the command. The control plane keeps a
    /// second handle so that it can read it after the ack without the bundle.
    result: Arc<Written>,
}

/// The stage: applies `count` commands, acknowledging each with `ack_order`.
fn stage(
    mut commands: Consumer<Box<Bundle>>,
    mut retire: Producer<Box<Bundle>>,
    acked: Arc<AtomicU64>,
    ack_order: Ordering,
    count: usize,
) {
    let mut session: Option<Box<u64>> = None;
    for _ in 0..count {
        let (mut b, _) = commands.pop_spin();
        match b.op {
            Op::Create => b.state = std::mem::replace(&mut session, b.state.take()),
            Op::Destroy => b.state = session.take(),
        }
        b.result.set(b.seq * 10);
        let seq = b.seq;
        retire.push_spin(b);
        acked.store(seq, ack_order);
    }
}

fn bundle(seq: u64, op: Op, state: Option<u64>) -> (Box<Bundle>, Arc<Written>) {
    let result = Written::new();
    let b = Box::new(Bundle {
        seq,
        op,
        state: state.map(Box::new),
        result: result.clone(),
    });
    (b, result)
}

/// The control plane waits for `acked` and then reads the results directly (through its own
/// handle, ordered only by the ack); once it has seen `acked >= seq` the bundle must
/// already be on the retire ring, so a single non-blocking pop returns it. Returns the ack
/// value first seen after each command.
fn ack_then_read(ack_order: Ordering) -> BTreeSet<Vec<u64>> {
    let (seen, _) = outcomes(move || {
        let acked = Arc::new(AtomicU64::new(0));
        let (mut cmd_tx, cmd_rx) = ring(2);
        let (retire_tx, mut retire_rx) = ring(2);
        let lane = {
            let acked = acked.clone();
            thread::spawn(move || stage(cmd_rx, retire_tx, acked, ack_order, 2))
        };

        let (create, create_result) = bundle(1, Op::Create, Some(5));
        let (destroy, destroy_result) = bundle(2, Op::Destroy, None);
        cmd_tx.push_spin(create);
        cmd_tx.push_spin(destroy);

        let mut first_seen = Vec::new();
        for (seq, result) in [(1, &create_result), (2, &destroy_result)] {
            let a = loop {
                let a = acked.load(Ordering::Acquire);
                if a >= seq {
                    break a;
                }
                thread::yield_now();
            };
            first_seen.push(a);
            assert_eq!(
                result.get(),
                seq * 10,
                "acked but the stage's write is not visible"
            );
            let b = retire_rx.pop().expect("acked but not retired");
            assert_eq!(b.seq, seq);
            assert_eq!(b.result.get(), seq * 10);
            match b.op {
                Op::Create => assert_eq!(b.state, None),
                Op::Destroy => assert_eq!(b.state.as_deref(), Some(&5), "state lost"),
            }
        }
        lane.join().unwrap();
        first_seen
    });
    seen
}

#[test]
fn control_sees_stage_writes_after_ack() {
    let seen = ack_then_read(Ordering::Release);
    // Loom explored the control plane seeing each ack on its own and seeing the second
    // command acknowledged by the time it looked for the first.
    assert!(seen.contains(&vec![1, 2]), "{seen:?}");
    assert!(seen.contains(&vec![2, 2]), "{seen:?}");
}

/// With the ack stored `Relaxed`, reading the result after seeing the ack is a data race;
/// loom must report it. Shows the model can fail.
#[test]
#[should_panic(expected = "Causality violation")]
fn relaxed_ack_is_caught() {
    ack_then_read(Ordering::Relaxed);
}

/// The control plane pops the retire ring and reads the stage's writes from the bundle.
/// The ack is stored after the retire push, so it may lag the retired bundle by one command
/// but never more. Returns, per retired bundle, `seq - acked` as seen right after the pop.
#[test]
fn control_sees_stage_writes_on_retire() {
    let (seen, _) = outcomes(|| {
        let acked = Arc::new(AtomicU64::new(0));
        let (mut cmd_tx, cmd_rx) = ring(2);
        let (retire_tx, mut retire_rx) = ring(2);
        let lane = {
            let acked = acked.clone();
            thread::spawn(move || stage(cmd_rx, retire_tx, acked, Ordering::Release, 2))
        };

        cmd_tx.push_spin(bundle(1, Op::Create, Some(5)).0);
        cmd_tx.push_spin(bundle(2, Op::Destroy, None).0);

        let mut lag = Vec::new();
        for seq in 1..=2 {
            let (b, _) = retire_rx.pop_spin();
            assert_eq!(b.seq, seq);
            assert_eq!(
                b.result.get(),
                seq * 10,
                "retired but the stage's write is not visible"
            );
            if b.op == Op::Destroy {
                assert_eq!(b.state.as_deref(), Some(&5), "state lost");
            }
            let a = acked.load(Ordering::Acquire);
            assert!(
                a + 1 >= seq,
                "ack lags the retire ring by more than one: {a} < {seq} - 1"
            );
            lag.push(seq.saturating_sub(a));
        }
        lane.join().unwrap();
        assert_eq!(acked.load(Ordering::Acquire), 2);
        lag
    });
    // Both "retired and already acked" and "retired, ack still pending" were explored.
    assert!(seen.iter().any(|l| l.contains(&0)), "{seen:?}");
    assert!(seen.iter().any(|l| l.contains(&1)), "{seen:?}");
}
