//! Audio processing between decode and encode.
//!
//! `audio/` holds per-session voice processing run by the lane's DSP stage, `format/`
//! sample format conversion, `effects/` simple gain-style effects. Every processor is
//! built on the control plane and processes whole frames in place on the lane.

pub mod audio;
pub mod effects;
pub(crate) mod fft;
pub mod format;
pub mod simd;
