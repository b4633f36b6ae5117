//! Receive-side buffering: packets wait here, in sequence order, until their playout time.
//!
//! The buffer holds *encoded* packets (as opaque items, e.g. slab tokens), so decoding
//! happens at playout in sequence order: stateful decoders see packets in order, and a
//! later concealment stage can look ahead for forward error correction. The
//! [`JitterBuffer`] trait-free interface (`insert`, `playout`, `flush`) is what the lane
//! calls; the fixed-delay [`ReorderBuffer`] is today's implementation, to be replaced by
//! an adaptive one behind the same calls.

pub mod adaptive;
pub mod reorder;

pub use reorder::{InsertOutcome, Playout, ReorderBuffer};

/// The jitter buffer the lanes use.
pub type JitterBuffer<T> = ReorderBuffer<T>;
