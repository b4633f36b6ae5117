//! Audio codec implementations. Each works on whole frames with caller-owned buffers.

pub mod g711;
