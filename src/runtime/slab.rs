//! Preallocated slot storage shared between the threads of a lane.
//!
//! A [`Slab`] owns a fixed number of slots, all built on the control plane. Access to
//! a slot requires its [`Token`]: tokens are created once, together with the slab, one
//! per slot, and cannot be cloned. Holding `&mut Token` therefore proves exclusive access
//! to the slot, so the accessors are safe. Tokens travel between stages through SPSC
//! rings (release on push, acquire on pop), which is what orders the slot contents
//! between threads; `loom-tests/tests/slab.rs` models that hand-off.
//!
//! Running out of tokens is how slab exhaustion shows: the stage that needs a slot
//! finds its free ring empty and counts a drop. Nothing allocates after construction.

use core::num::NonZeroU32;

use super::sync::Cell;

#[cfg(not(loom))]
static NEXT_SLAB_ID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);

/// A fresh slab id, never zero (zero is the niche that makes `Option<Token>` as small as a
/// token: jitter buffers hold dozens of them per session).
fn next_slab_id() -> NonZeroU32 {
    let id = next_raw_id();
    // Ids wrap only after 2^32 slabs; skip zero if they ever do.
    NonZeroU32::new(id).unwrap_or(NonZeroU32::MIN)
}

fn next_raw_id() -> u32 {
    #[cfg(not(loom))]
    {
        NEXT_SLAB_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }
    #[cfg(loom)]
    {
        // Loom models build few slabs; a thread-local counter keeps ids unique per model run.
        thread_local!(static NEXT: std::cell::Cell<u32> = const { std::cell::Cell::new(1) });
        NEXT.with(|n| {
            let id = n.get();
            n.set(id.wrapping_add(1));
            id
        })
    }
}

/// The right to access one slot of one slab. Not `Clone`: exactly one exists per slot.
#[derive(Debug, PartialEq, Eq)]
pub struct Token {
    slab: NonZeroU32,
    index: u32,
}

impl Token {
    /// The slot index (for diagnostics and tests).
    pub fn index(&self) -> u32 {
        self.index
    }
}

/// Fixed-capacity slot storage; see the module docs for the ownership protocol.
#[derive(Debug)]
pub struct Slab<T> {
    id: NonZeroU32,
    slots: Box<[Cell<T>]>,
    hint: usize,
}

// SAFETY: a slot is only reached through its unique `Token`; `with_mut` needs
// `&mut Token`, so at most one thread mutates a slot and never while another reads it.
// Tokens move between threads, so contents must be `Send`; shared reads through `&Token`
// from several threads need `Sync`.
unsafe impl<T: Send + Sync> Sync for Slab<T> {}
// SAFETY: the slab owns its slots; sending it sends the values.
unsafe impl<T: Send> Send for Slab<T> {}

impl<T> Slab<T> {
    /// Builds a slab from `n` values made by `make` and returns it with its `n` tokens.
    /// Control plane only: this allocates.
    pub fn new(n: usize, mut make: impl FnMut(usize) -> T) -> (Self, Vec<Token>) {
        assert!(n <= u32::MAX as usize, "slab too large");
        let id = next_slab_id();
        let slots: Box<[Cell<T>]> = (0..n).map(|i| Cell::new(make(i))).collect();
        let tokens = (0..n as u32)
            .map(|index| Token { slab: id, index })
            .collect();
        let slab = Slab { id, slots, hint: 0 };
        (slab, tokens)
    }

    /// Size hint recorded at construction for slot payload capacity (bytes), if any.
    pub fn with_capacity_hint(&self) -> usize {
        self.hint
    }

    /// Records a size hint (e.g. bytes per slot) for users of the slab. Control plane.
    pub fn set_hint(&mut self, hint: usize) {
        self.hint = hint;
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    #[inline]
    fn cell(&self, token: &Token) -> &Cell<T> {
        // Invariant: tokens are only minted by `new` for this slab's id and index range;
        // a mismatch is a wiring bug inside media-core, never caused by input.
        assert_eq!(token.slab, self.id, "token from another slab");
        &self.slots[token.index as usize]
    }

    /// Starts loading the slot `token` grants into cache (a hint: reads nothing). Real-time
    /// safe.
    #[inline]
    pub fn prefetch(&self, token: &Token) {
        if let Some(cell) = self.slots.get(token.index as usize) {
            super::prefetch::object(cell);
        }
    }

    /// Reads the slot `token` grants. Real-time safe.
    #[inline]
    pub fn with<R>(&self, token: &Token, f: impl FnOnce(&T) -> R) -> R {
        let cell = self.cell(token);
        // SAFETY: `with_mut` needs `&mut Token`, which cannot coexist with this `&Token`.
        unsafe { cell.with(f) }
    }

    /// Mutates the slot `token` grants. Real-time safe.
    #[inline]
    pub fn with_mut<R>(&self, token: &mut Token, f: impl FnOnce(&mut T) -> R) -> R {
        let cell = self.cell(token);
        // SAFETY: the token is unique and borrowed mutably, so no other access to this
        // slot exists; ring hand-off (release/acquire) ordered earlier accesses before this.
        unsafe { cell.with_mut(f) }
    }
}
