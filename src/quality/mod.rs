//! Quality monitoring: RFC 3550 receive statistics, the ITU-T G.107 E-model, RFC 3611
//! VoIP metrics, and a seeded network impairment model for tests and simulations.

pub mod emodel;
pub mod impairment;
pub mod monitor;
pub mod rtp_stats;
pub mod xr;

pub use crate::runtime::stats::{LaneStats, SessionStats};
