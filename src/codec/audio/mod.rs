//! Audio codec implementations. Each works on whole frames with caller-owned buffers.

pub mod comfort_noise;
pub mod g711;
pub mod g722;
pub mod telephone_event;
