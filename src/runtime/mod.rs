//! The data plane's machinery: lanes, their stages and rings, slabs, clocks and threads.
//!
//! A lane is four stages — jitter, decode, DSP, encode — joined by `rtrb` SPSC rings that
//! carry [`slab::Token`]s for preallocated packet and frame slots. [`Topology::Fused`] runs
//! all four on one pinned thread; [`Topology::Split`] gives each stage its own thread.
//! Nothing here allocates, locks or blocks after a lane starts, except the absolute-deadline
//! sleep between ticks.

pub mod clock;
pub mod lane;
pub mod live;
pub mod memory;
pub mod msg;
pub mod prefetch;
pub mod shutdown;
pub mod slab;
pub mod stats;
pub mod sync;
#[cfg(not(loom))]
pub mod thread;

pub use clock::ClockMode;

/// How a lane's stages are mapped to threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Topology {
    /// All stages on one thread per lane; frames stay in one core's cache.
    #[default]
    Fused,
    /// One thread per stage (four per lane), handing frames across cores through rings.
    Split,
}
