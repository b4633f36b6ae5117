//! A minimal bounded SPSC ring built on loom's atomics and cells.
//!
//! media-core hands tokens and command bundles between threads through `rtrb` rings, which
//! loom cannot see into. This ring reproduces the part of rtrb's protocol that orders the
//! data it carries, with the same memory orderings (rtrb 0.4, `Producer::push` /
//! `Consumer::pop`):
//!
//! * the producer loads the consumer's `head` with `Acquire` (so the consumer's read of a
//!   slot happens before the producer overwrites it), writes the slot, then stores its
//!   `tail` with `Release`;
//! * the consumer loads `tail` with `Acquire`, reads the slot, then stores `head` with
//!   `Release`.
//!
//! Slots are loom `UnsafeCell`s, so any slot access not ordered by that protocol is reported
//! as a causality violation. [`Orderings`] lets a model weaken the protocol on purpose, to
//! show that the models do fail when the hand-off is unsynchronised.

use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use std::mem::MaybeUninit;

/// The orderings the ring uses for its index hand-off.
#[derive(Debug, Clone, Copy)]
pub struct Orderings {
    /// Ordering of the stores that publish an index (`tail` after a push, `head` after a pop).
    pub publish: Ordering,
    /// Ordering of the loads of the other side's index.
    pub observe: Ordering,
}

impl Orderings {
    /// What rtrb uses: `Release` stores, `Acquire` loads.
    pub const RTRB: Orderings = Orderings {
        publish: Ordering::Release,
        observe: Ordering::Acquire,
    };
    /// Deliberately broken: everything `Relaxed`. Models using this must fail.
    pub const RELAXED: Orderings = Orderings {
        publish: Ordering::Relaxed,
        observe: Ordering::Relaxed,
    };
}

struct Inner<T> {
    slots: Box<[UnsafeCell<MaybeUninit<T>>]>,
    /// Count of items popped (written by the consumer only).
    head: AtomicUsize,
    /// Count of items pushed (written by the producer only).
    tail: AtomicUsize,
    ord: Orderings,
}

// SAFETY: a slot is written only by the producer while it is outside `head..tail` and read
// only by the consumer while it is inside; the index hand-off orders the two (and loom
// checks exactly that).
unsafe impl<T: Send> Sync for Inner<T> {}
// SAFETY: the ring owns its items.
unsafe impl<T: Send> Send for Inner<T> {}

impl<T> Drop for Inner<T> {
    fn drop(&mut self) {
        // Both ends are gone (this is the last `Arc`), so plain access is fine.
        let head = self.head.with_mut(|h| *h);
        let tail = self.tail.with_mut(|t| *t);
        let cap = self.slots.len();
        for i in head..tail {
            // SAFETY: slots in `head..tail` hold initialised items not yet popped.
            self.slots[i % cap].with_mut(|p| unsafe { (*p).assume_init_drop() });
        }
    }
}

/// The sending end.
pub struct Producer<T> {
    inner: Arc<Inner<T>>,
    tail: usize,
}

/// The receiving end.
pub struct Consumer<T> {
    inner: Arc<Inner<T>>,
    head: usize,
}

/// A ring of `capacity` slots using rtrb's orderings.
pub fn ring<T>(capacity: usize) -> (Producer<T>, Consumer<T>) {
    ring_with(capacity, Orderings::RTRB)
}

/// A ring of `capacity` slots using the given orderings.
pub fn ring_with<T>(capacity: usize, ord: Orderings) -> (Producer<T>, Consumer<T>) {
    assert!(capacity > 0);
    let slots = (0..capacity)
        .map(|_| UnsafeCell::new(MaybeUninit::uninit()))
        .collect();
    let inner = Arc::new(Inner {
        slots,
        head: AtomicUsize::new(0),
        tail: AtomicUsize::new(0),
        ord,
    });
    (
        Producer {
            inner: inner.clone(),
            tail: 0,
        },
        Consumer { inner, head: 0 },
    )
}

impl<T> Producer<T> {
    /// Pushes `v`, or gives it back if the ring is full.
    pub fn push(&mut self, v: T) -> Result<(), T> {
        let head = self.inner.head.load(self.inner.ord.observe);
        if self.tail - head == self.inner.slots.len() {
            return Err(v);
        }
        let slot = &self.inner.slots[self.tail % self.inner.slots.len()];
        // SAFETY: the slot is outside `head..tail`, so the consumer no longer reads it
        // (its last read happened before its `head` store, which we acquired).
        slot.with_mut(|p| unsafe { (*p).write(v) });
        self.tail += 1;
        self.inner.tail.store(self.tail, self.inner.ord.publish);
        Ok(())
    }

    /// Pushes `v`, yielding to the loom scheduler while the ring is full.
    pub fn push_spin(&mut self, mut v: T) {
        loop {
            match self.push(v) {
                Ok(()) => return,
                Err(back) => {
                    v = back;
                    loom::thread::yield_now();
                }
            }
        }
    }
}

impl<T> Consumer<T> {
    /// Pops the oldest item, if any.
    pub fn pop(&mut self) -> Option<T> {
        let tail = self.inner.tail.load(self.inner.ord.observe);
        if tail == self.head {
            return None;
        }
        let slot = &self.inner.slots[self.head % self.inner.slots.len()];
        // SAFETY: the slot is inside `head..tail`: the producer wrote it before its `tail`
        // store, which we acquired, and will not touch it until we publish `head`.
        let v = slot.with(|p| unsafe { (*p).assume_init_read() });
        self.head += 1;
        self.inner.head.store(self.head, self.inner.ord.publish);
        Some(v)
    }

    /// Pops, yielding to the loom scheduler while the ring is empty.
    pub fn pop_spin(&mut self) -> T {
        loop {
            if let Some(v) = self.pop() {
                return v;
            }
            loom::thread::yield_now();
        }
    }

    /// Whether the ring holds no item, as far as the consumer can see.
    pub fn is_empty(&self) -> bool {
        self.inner.tail.load(self.inner.ord.observe) == self.head
    }
}
