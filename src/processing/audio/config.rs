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

/// `(sin x, cos x)`, within 3·10⁻⁷ absolute for |x| ≤ 1000 (further out the quadrant
/// reduction loses accuracy, and beyond ±10⁵ the value at ±10⁵ is returned: still within
/// ±1.000001; NaN gives NaN). Built from integer and float arithmetic and selects only,
/// so a loop of it vectorises, where `f32::sin_cos` is a libm call per value.
#[inline]
pub(crate) fn fast_sin_cos(x: f32) -> (f32, f32) {
    // Adding 1.5 · 2²³ rounds to an integer, which then sits in the low mantissa bits.
    const SHIFTER: f32 = 12_582_912.0;
    // π/2 in two parts (Cody–Waite): the first has trailing zero bits, so q·PIO2_HI is
    // exact for the quadrants in range.
    const PIO2_HI: f32 = 1.570_312_5;
    const PIO2_LO: f32 = 4.838_268e-4;
    // |q| ≤ 63,662 within ±10⁵: 16 bits, so q·PIO2_HI (8 significant bits) is exact.
    let x = x.clamp(-1e5, 1e5);
    let t = x * std::f32::consts::FRAC_2_PI;
    let rounded = t + SHIFTER;
    let q = (rounded.to_bits() as i32).wrapping_sub(SHIFTER.to_bits() as i32);
    let qf = rounded - SHIFTER;
    // r in [−π/4, π/4]: Taylor series of sin to r⁹ and cos to r⁸ (error < 3·10⁻⁸ there).
    let r = (x - qf * PIO2_HI) - qf * PIO2_LO;
    let r2 = r * r;
    let sin_r = r + r
        * r2
        * (-1.0 / 6.0 + r2 * (1.0 / 120.0 + r2 * (-1.0 / 5040.0 + r2 * (1.0 / 362_880.0))));
    let cos_r = 1.0 + r2 * (-0.5 + r2 * (1.0 / 24.0 + r2 * (-1.0 / 720.0 + r2 * (1.0 / 40_320.0))));
    // x = r + q·π/2: odd quadrants swap sine and cosine; the sine is negative in
    // quadrants 2 and 3, the cosine in 1 and 2 (sign bits flipped, no branches).
    let (s, c) = if q & 1 != 0 {
        (cos_r, sin_r)
    } else {
        (sin_r, cos_r)
    };
    let sin = f32::from_bits(s.to_bits() ^ (((q & 2) as u32) << 30));
    let cos = f32::from_bits(c.to_bits() ^ (((q.wrapping_add(1) & 2) as u32) << 30));
    (sin, cos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_sin_cos_is_within_3e_7_of_the_exact_values() {
        let mut worst = 0.0f64;
        for i in -2_000_000..=2_000_000 {
            let x = i as f32 * 5e-4; // −1000 … 1000
            let (s, c) = fast_sin_cos(x);
            let (es, ec) = f64::from(x).sin_cos();
            worst = worst
                .max((f64::from(s) - es).abs())
                .max((f64::from(c) - ec).abs());
        }
        assert!(worst < 3e-7, "worst error {worst:e}");
        // Far out and non-finite: bounded, never a panic.
        for x in [1e9f32, -3e38, f32::MAX, f32::MIN] {
            let (s, c) = fast_sin_cos(x);
            assert!(s.abs() <= 1.000_001 && c.abs() <= 1.000_001, "{x}: {s} {c}");
        }
        let (s, c) = fast_sin_cos(f32::NAN);
        assert!(s.is_nan() && c.is_nan());
    }
}
