//! Receive-side buffering: packets wait here until their playout time.
//!
//! The buffer holds *encoded* packets (as opaque items, e.g. slab tokens), so decoding
//! happens at playout in timestamp order: stateful decoders see packets in order, and a
//! concealment stage can look ahead for forward error correction. [`adaptive`] is the
//! adaptive jitter buffer the lanes use.

pub mod adaptive;

pub use adaptive::{AdaptiveBuffer, Insert, JitterConfig, Next};

/// The jitter buffer the lanes use.
pub type JitterBuffer<T, const N: usize = 32> = AdaptiveBuffer<T, N>;
