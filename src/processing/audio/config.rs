//! What every voice-processing component shares: the error a control-plane constructor
//! returns, the supported rates and the 10 ms block every component works in.

/// A voice-processing component could not be built from its configuration.
///
/// Returned by constructors on the control plane only (never on a lane). Recover by
/// correcting the named setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{component}: {reason}")]
pub struct DspConfigError {
    /// The component that refused the configuration (`"vad"`, `"agc"`, ...).
    pub component: &'static str,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Sample rates every voice-processing component supports (Hz).
pub const SUPPORTED_RATES_HZ: [u32; 3] = [8_000, 16_000, 48_000];

/// Samples in one 10 ms block at `sample_rate_hz`; components process frames whose
/// length is a whole number of blocks (10, 20, 30, ... 60 ms).
#[inline]
pub const fn block_len(sample_rate_hz: u32) -> usize {
    (sample_rate_hz / 100) as usize
}

/// Checks `sample_rate_hz` is one of [`SUPPORTED_RATES_HZ`], naming `component` if not.
pub fn check_rate(component: &'static str, sample_rate_hz: u32) -> Result<(), DspConfigError> {
    if SUPPORTED_RATES_HZ.contains(&sample_rate_hz) {
        Ok(())
    } else {
        Err(DspConfigError {
            component,
            reason: "sample rate must be 8000, 16000 or 48000 Hz",
        })
    }
}
