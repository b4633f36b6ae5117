//! Quality monitoring. Today: the per-session and per-lane counters the lanes publish
//! (re-exported from the runtime); loss, jitter and MOS estimation build on them.

pub use crate::runtime::stats::{LaneStats, SessionStats};
