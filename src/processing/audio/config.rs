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

/// Position of `sample_rate_hz` in [`SUPPORTED_RATES_HZ`], for per-rate tables that every
/// component at a rate shares (one `OnceLock` each: built once on the control plane, read
/// without a lock).
pub(crate) fn rate_index(sample_rate_hz: u32) -> Option<usize> {
    SUPPORTED_RATES_HZ.iter().position(|&r| r == sample_rate_hz)
}

/// `e^x`, within 10⁻⁵ relative for any finite `x` (results below 2⁻¹²⁶ are flushed up
/// to it). Built from integer and float arithmetic only, so the per-bin loop vectorises;
/// `f32::exp` was half the cost of a noise suppressor block at 8 kHz.
#[inline]
pub(crate) fn fast_exp(x: f32) -> f32 {
    // Adding 1.5 · 2²³ rounds to an integer, which then sits in the low mantissa bits.
    const SHIFTER: f32 = 12_582_912.0;
    let t = (x * std::f32::consts::LOG2_E).clamp(-126.0, 126.0);
    let r = t + SHIFTER;
    let i = (r.to_bits() as i32).wrapping_sub(SHIFTER.to_bits() as i32);
    let f = t - (r - SHIFTER);
    // 2^f on [-1/2, 1/2]: Taylor series of e^(f ln 2) to the fifth power.
    let p = 1.0
        + f * (std::f32::consts::LN_2
            + f * (0.240_226_5 + f * (0.055_504_1 + f * (0.009_618_13 + f * 0.001_333_36))));
    // i + 127 is within 1..=253 (a normal float exponent) for any non-NaN input.
    p * f32::from_bits((i.wrapping_add(127) as u32) << 23)
}

/// Natural logarithm of a positive normal `x`, within 10⁻⁵ absolute; any other input gives
/// a finite value (never NaN or a panic).
#[inline]
pub(crate) fn fast_ln(x: f32) -> f32 {
    let bits = x.to_bits();
    let exponent = ((bits >> 23) & 0xff) as i32 - 127;
    let mantissa = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000);
    // ln m = 2 atanh(s) with s = (m − 1) / (m + 1) in [0, 1/3).
    let s = (mantissa - 1.0) / (mantissa + 1.0);
    let s2 = s * s;
    let ln_m = 2.0 * s * (1.0 + s2 * (1.0 / 3.0 + s2 * (0.2 + s2 * (1.0 / 7.0 + s2 / 9.0))));
    exponent as f32 * std::f32::consts::LN_2 + ln_m
}
