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
//! show that the models do fail when the hand-off is unsynchronised, and
//! [`ring_untracked`] hides the ring's own slots from loom, to show that a model also catches
//! the race through the data the messages guard (e.g. media-core's slab cells).

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

/// One slot: a loom `UnsafeCell`, or (negative controls only) a plain cell loom cannot see.
enum Slot<T> {
    Tracked(UnsafeCell<MaybeUninit<T>>),
    Untracked(std::cell::UnsafeCell<MaybeUninit<T>>),
}

impl<T> Slot<T> {
    fn new(tracked: bool) -> Self {
        if tracked {
            Slot::Tracked(UnsafeCell::new(MaybeUninit::uninit()))
        } else {
            Slot::Untracked(std::cell::UnsafeCell::new(MaybeUninit::uninit()))
        }
    }

    /// # Safety
    /// Exclusive access to an empty slot.
    unsafe fn write(&self, v: T) {
        match self {
            // SAFETY: forwarded.
            Slot::Tracked(c) => c.with_mut(|p| unsafe { (*p).write(v) }),
            // SAFETY: forwarded.
            Slot::Untracked(c) => unsafe { (*c.get()).write(v) },
        };
    }

    /// # Safety
    /// No concurrent write; the slot is full and is treated as empty afterwards.
    unsafe fn take(&self) -> T {
        match self {
            // SAFETY: forwarded.
            Slot::Tracked(c) => c.with(|p| unsafe { (*p).assume_init_read() }),
            // SAFETY: forwarded.
            Slot::Untracked(c) => unsafe { (*c.get()).assume_init_read() },
        }
    }

    /// # Safety
    /// Exclusive access to a full slot.
    unsafe fn drop_value(&self) {
        match self {
            // SAFETY: forwarded.
            Slot::Tracked(c) => c.with_mut(|p| unsafe { (*p).assume_init_drop() }),
            // SAFETY: forwarded.
            Slot::Untracked(c) => unsafe { (*c.get()).assume_init_drop() },
        }
    }
}

struct Inner<T> {
    slots: Box<[Slot<T>]>,
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
            // SAFETY: slots in `head..tail` hold initialised items not yet popped, and no
            // other handle exists.
            unsafe { self.slots[i % cap].drop_value() };
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
    build(capacity, ord, true)
}

/// Negative controls only: a ring whose slots loom does not track, so that with weakened
/// `ord` the only race loom can report is on the data the messages guard.
pub fn ring_untracked<T>(capacity: usize, ord: Orderings) -> (Producer<T>, Consumer<T>) {
    build(capacity, ord, false)
}

fn build<T>(capacity: usize, ord: Orderings, tracked: bool) -> (Producer<T>, Consumer<T>) {
    assert!(capacity > 0);
    let slots = (0..capacity).map(|_| Slot::new(tracked)).collect();
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
        unsafe { slot.write(v) };
        self.tail += 1;
        self.inner.tail.store(self.tail, self.inner.ord.publish);
        Ok(())
    }

    /// Pushes `v`, yielding to the loom scheduler while the ring is full. Returns how many
    /// times it found the ring full (models use it to check backpressure was explored).
    pub fn push_spin(&mut self, mut v: T) -> usize {
        let mut waits = 0;
        loop {
            match self.push(v) {
                Ok(()) => return waits,
                Err(back) => {
                    v = back;
                    waits += 1;
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
        let v = unsafe { slot.take() };
        self.head += 1;
        self.inner.head.store(self.head, self.inner.ord.publish);
        Some(v)
    }

    /// Pops, yielding to the loom scheduler while the ring is empty. Returns the item and
    /// how many times the ring was found empty first.
    pub fn pop_spin(&mut self) -> (T, usize) {
        let mut waits = 0;
        loop {
            if let Some(v) = self.pop() {
                return (v, waits);
            }
            waits += 1;
            loom::thread::yield_now();
        }
    }

    /// Whether the ring holds no item, as far as the consumer can see.
    pub fn is_empty(&self) -> bool {
        self.inner.tail.load(self.inner.ord.observe) == self.head
    }
}
