//! The per-session voice processing chain run by the lane's DSP stage.

pub mod config;
pub mod plc;
pub mod tsm;

use super::effects::Gain;

/// Settings for a session's DSP chain (control plane).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct DspConfig {
    /// Linear gain in dB applied to received audio before it is re-encoded
    /// (0.0 = pass-through, which also allows payload relay).
    pub rx_gain_db: f32,
}

impl DspConfig {
    /// True when the chain leaves audio untouched, so same-codec legs may relay payloads.
    pub fn is_passthrough(&self) -> bool {
        self.rx_gain_db == 0.0
    }
}

/// A session's DSP chain, processing one frame in place per call.
#[derive(Debug, Clone)]
pub struct DspChain {
    gain: Option<Gain>,
}

impl DspChain {
    /// Builds the chain for `config`. Control plane.
    pub fn new(config: &DspConfig) -> Self {
        DspChain {
            gain: (!config.is_passthrough()).then(|| Gain::from_db(config.rx_gain_db)),
        }
    }

    /// True when `process` is the identity.
    pub fn is_passthrough(&self) -> bool {
        self.gain.is_none()
    }

    /// Processes one frame in place. Called on the real-time thread.
    #[inline]
    pub fn process(&mut self, frame: &mut [i16]) {
        if let Some(g) = &self.gain {
            g.apply(frame);
        }
    }
}
