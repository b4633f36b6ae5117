//! Time-scale modification of speech for the jitter buffer: WSOLA-style removal or
//! insertion of one pitch period, in the spirit of WebRTC NetEq's `Accelerate` and
//! `PreemptiveExpand`.
//!
//! A jitter buffer that holds too much audio plays a frame shortened by one pitch period
//! ([`TimeStretch::accelerate`]); one that is running dry plays a frame lengthened by one
//! ([`TimeStretch::expand`]). On voiced speech a whole period can be cut or repeated with a
//! cross-fade and no audible seam, because neighbouring periods are nearly identical. On
//! anything else (onsets, plosives, loud unvoiced sounds or noise) the splice would be heard, so the
//! stretcher refuses and hands the input back unchanged; the caller simply tries again on
//! a later frame.
//!
//! # Algorithm
//! Only the first 30 ms of the input are analysed; the splice point sits at 15 ms, so a
//! period of up to 15 ms has a full period on either side of it (NetEq uses the same
//! layout: its `kMinSamples` is 30 ms and the splice is at `fs_mult_120`).
//! 1. **Coarse pitch**: the 30 ms are decimated to about 4 kHz with a box-car of two
//!    decimation steps (first null at 2 kHz, the new Nyquist), and the normalised
//!    cross-correlation between the 12.5 ms after the splice point and the same span
//!    `lag` earlier is computed for every lag from 2.5 to 15 ms. The shortest local
//!    maximum within [`MULTIPLE_TOLERANCE`] of the best is taken, so a high voice loses
//!    one period rather than two or three, then refined by parabolic interpolation.
//! 2. **Fine pitch**: around that lag, at the full rate, the period `p` is chosen that
//!    maximises the normalised correlation between the two segments that will actually be
//!    cross-faded, `input[cut - p..cut]` and `input[cut..cut + p]`.
//! 3. **Decision**: stretch if that correlation is at least the threshold (default 0.9,
//!    NetEq's `kCorrelationThreshold` = 14746 in Q14), or if the two segments are quieter
//!    than the quiet level (default −50 dBFS), where no splice is audible (NetEq's
//!    "passive speech" rule, against a fixed floor instead of a noise estimate).
//!    Otherwise refuse: the signal is too loud to cut without the periodicity that hides
//!    the seam.
//! 4. **Splice**: a linear cross-fade one period long, in Q15. Linear weights sum to one,
//!    which keeps the amplitude of the strongly correlated segments this is applied to
//!    (an equal-power fade would bulge by up to 3 dB), and a convex combination of two
//!    i16 samples cannot overflow.
//!
//! Correlation sums are f32 in eight lanes (vectorised) and the normalisation is IEEE
//! arithmetic without contraction in a fixed order, so decisions are identical on every
//! platform. Nothing is allocated after
//! [`TimeStretch::new`]: the decimated signal and the coarse correlation curve live in
//! buffers sized there, and nothing else depends on the input length.

/// Shortest pitch period searched, in half-milliseconds (2.5 ms, 400 Hz).
const MIN_PERIOD_HALF_MS: u32 = 5;
/// Splice point and highest pitch period searched, in ms (≈ 67 Hz).
const CUT_MS: u32 = 15;
/// Rate the coarse pitch search runs at, Hz.
const COARSE_RATE_HZ: u32 = 4000;
/// Length of the coarse correlation window, in half-milliseconds (12.5 ms, as NetEq).
const COARSE_WINDOW_HALF_MS: u32 = 25;
/// A shorter lag whose coarse correlation is within this of the best one is preferred,
/// so periodic speech loses one period, not a multiple, when several fit in 2.5–15 ms.
pub const MULTIPLE_TOLERANCE: f32 = 0.05;
/// Default minimum normalised correlation to splice loud audio (NetEq: 14746 / 16384).
pub const DEFAULT_CORRELATION_THRESHOLD: f32 = 0.9;
/// Default level, in dBFS RMS (0 dBFS = RMS of 32768), below which audio is spliced
/// whatever its correlation.
pub const DEFAULT_QUIET_LEVEL_DBFS: f32 = -50.0;
/// Sample rates outside this range are clamped to it by [`TimeStretch::new`].
const RATE_RANGE_HZ: (u32, u32) = (8000, 48000);

/// What the last [`TimeStretch::accelerate`] or [`TimeStretch::expand`] call did.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum StretchOutcome {
    /// No call yet.
    Idle,
    /// One period of `period_samples` was removed or inserted.
    Stretched {
        /// Samples removed or inserted.
        period_samples: usize,
        /// Normalised correlation of the two cross-faded periods (−1..=1).
        correlation: f32,
        /// True when the splice was allowed because the audio was below the quiet level,
        /// not because it was periodic.
        quiet: bool,
    },
    /// The input was shorter than [`TimeStretch::min_input_len`]; it was copied unchanged.
    /// Recover: pass a longer frame (30 ms or more).
    TooShort,
    /// The audio was above the quiet level and its best correlation was below the
    /// threshold; it was copied unchanged. Recover: try again on a later frame.
    NotPeriodic {
        /// The best normalised correlation found.
        correlation: f32,
    },
    /// `out` could not hold the stretched result, or could not hold the input at all; the
    /// input was copied unchanged, truncated to `out.len()` in the second case. Recover: size `out` with
    /// [`TimeStretch::max_output_len`] (and keep inputs within `max_input_samples`).
    OutputTooSmall,
}

/// WSOLA time-scale modification by whole pitch periods, for mono i16 speech.
///
/// Built on the control plane with [`TimeStretch::new`]; [`accelerate`](Self::accelerate)
/// and [`expand`](Self::expand) run on the real-time thread without allocating.
///
/// ```
/// use media_core::processing::audio::tsm::TimeStretch;
///
/// let mut ts = TimeStretch::new(8000, 480); // 60 ms frames at 8 kHz
/// let input: Vec<i16> = (0..480)
///     .map(|n| {
///         let t = n as f64 / 8000.0;
///         let s: f64 = (1..=8).map(|k| (2.0 * std::f64::consts::PI * 125.0 * k as f64 * t).sin() / k as f64).sum();
///         (s * 6000.0) as i16
///     })
///     .collect();
/// let mut out = vec![0i16; ts.max_output_len()];
/// let n = ts.accelerate(&input, &mut out);
/// assert_eq!(n, 480 - 64); // one 8 ms period of 125 Hz removed
/// let n = ts.expand(&input, &mut out);
/// assert_eq!(n, 480 + 64); // or inserted
/// ```
#[derive(Debug, Clone)]
pub struct TimeStretch {
    sample_rate_hz: u32,
    max_input_samples: usize,
    /// Full-rate samples per coarse sample.
    decimation: usize,
    /// Splice point (15 ms) = longest period, in samples; the input needs `2 * cut`.
    cut: usize,
    /// Shortest period (2.5 ms), in samples.
    min_period: usize,
    /// Coarse lag range and correlation window, in coarse samples.
    coarse_min_lag: usize,
    coarse_max_lag: usize,
    coarse_window: usize,
    /// The first 30 ms decimated (box-car sums, not averages: integers below 2^24, exact
    /// in f32).
    coarse: Box<[f32]>,
    /// The first 30 ms as f32, for the fine search (converted once per decision).
    full: Box<[f32]>,
    /// Coarse normalised correlation, indexed by lag.
    coarse_corr: Box<[f32]>,
    correlation_threshold: f32,
    /// Quiet level as a mean square of i16 samples.
    quiet_mean_square: f64,
    last_outcome: StretchOutcome,
}

impl TimeStretch {
    /// A stretcher for mono audio at `sample_rate_hz` (8, 16, 32 or 48 kHz; other rates
    /// work with a coarse rate of `rate / round(rate / 4000)`, and rates outside
    /// 8–48 kHz are clamped into it, which only misplaces the 2.5–15 ms search range),
    /// for inputs of up to `max_input_samples`. Control plane: allocates every buffer.
    pub fn new(sample_rate_hz: u32, max_input_samples: usize) -> Self {
        let fs = sample_rate_hz.clamp(RATE_RANGE_HZ.0, RATE_RANGE_HZ.1);
        let decimation = ((fs + COARSE_RATE_HZ / 2) / COARSE_RATE_HZ).max(1) as usize;
        let cut = (fs * CUT_MS / 1000) as usize;
        let min_period = (fs * MIN_PERIOD_HALF_MS / 2000) as usize;
        // Box-car of 2 * decimation samples per coarse sample, all within the first 30 ms.
        let coarse_len = (2 * cut / decimation).saturating_sub(1);
        let coarse_cut = cut / decimation;
        let coarse_min_lag = min_period.div_ceil(decimation).max(1);
        // The coarse window starts at the splice point and must end inside the 30 ms.
        let coarse_max_lag = coarse_cut;
        let wanted_window = (fs * COARSE_WINDOW_HALF_MS / 2000) as usize / decimation;
        let coarse_window = wanted_window.min(coarse_len.saturating_sub(coarse_cut));
        TimeStretch {
            sample_rate_hz: fs,
            max_input_samples,
            decimation,
            cut,
            min_period,
            coarse_min_lag,
            coarse_max_lag,
            coarse_window,
            coarse: vec![0.0; coarse_len].into_boxed_slice(),
            full: vec![0.0; 2 * cut].into_boxed_slice(),
            coarse_corr: vec![0.0; coarse_max_lag + 1].into_boxed_slice(),
            correlation_threshold: DEFAULT_CORRELATION_THRESHOLD,
            quiet_mean_square: mean_square_of_dbfs(DEFAULT_QUIET_LEVEL_DBFS),
            last_outcome: StretchOutcome::Idle,
        }
    }

    /// Sets the minimum normalised correlation (clamped to −1..=1; NaN keeps the current
    /// value) at which audio above the quiet level is spliced. Higher refuses more often
    /// and splices more cleanly. Control plane.
    pub fn with_correlation_threshold(mut self, threshold: f32) -> Self {
        if !threshold.is_nan() {
            self.correlation_threshold = threshold.clamp(-1.0, 1.0);
        }
        self
    }

    /// Sets the level in dBFS RMS below which audio is spliced whatever its correlation
    /// (NaN keeps the current value; `f32::NEG_INFINITY` disables the rule). A caller
    /// with a background-noise estimate can pass it plus a margin (NetEq uses +9 dB).
    /// Control plane.
    pub fn with_quiet_level_dbfs(mut self, level_dbfs: f32) -> Self {
        if !level_dbfs.is_nan() {
            self.quiet_mean_square = mean_square_of_dbfs(level_dbfs);
        }
        self
    }

    /// The sample rate used (after clamping to 8–48 kHz).
    pub fn sample_rate_hz(&self) -> u32 {
        self.sample_rate_hz
    }

    /// The shortest input that can be stretched: 30 ms.
    pub fn min_input_len(&self) -> usize {
        2 * self.cut
    }

    /// The longest period that can be removed or inserted: 15 ms.
    pub fn max_period_samples(&self) -> usize {
        self.cut
    }

    /// The longest result for inputs of up to `max_input_samples`: that plus
    /// [`max_period_samples`](Self::max_period_samples). Size `out` with this.
    pub fn max_output_len(&self) -> usize {
        self.max_input_samples.saturating_add(self.cut)
    }

    /// What the last `accelerate` or `expand` call did, for counters and tests.
    pub fn last_outcome(&self) -> StretchOutcome {
        self.last_outcome
    }

    /// Removes one pitch period (2.5–15 ms) from `input` if the two periods around the
    /// 15 ms point correlate at least at the threshold (or are below the quiet level),
    /// writing `input.len() − period` samples to `out`. Otherwise copies `input` unchanged
    /// and returns `input.len()`: for inputs under 30 ms, for loud aperiodic audio, and
    /// when `out` is too small for the result.
    ///
    /// Returns the number of samples written, which never exceeds `out.len()` (if `out`
    /// cannot even hold `input`, its prefix is copied) nor, for inputs of up to
    /// `max_input_samples`, [`max_output_len`](Self::max_output_len). Longer inputs are
    /// not clamped: the analysis reads only their first 30 ms and the rest is copied.
    /// Never panics. Called on the real-time thread; does not allocate.
    pub fn accelerate(&mut self, input: &[i16], out: &mut [i16]) -> usize {
        let n = input.len();
        let Some(p) = self.decide(input).filter(|&p| self.fits(n - p, out)) else {
            return self.refuse(input, out);
        };
        let cut = self.cut;
        // [0, cut-p) as is; [cut-p, cut) fades from the period before the cut to the one
        // after it; then everything after the second period, shifted back by p.
        out[..cut - p].copy_from_slice(&input[..cut - p]);
        cross_fade(
            &input[cut - p..cut],
            &input[cut..cut + p],
            &mut out[cut - p..cut],
        );
        out[cut..n - p].copy_from_slice(&input[cut + p..]);
        n - p
    }

    /// Inserts one pitch period at the 15 ms point: the period before it is repeated,
    /// cross-faded in over the period after it, so the result is `input.len() + period`
    /// samples with no seam. Refuses exactly as [`accelerate`](Self::accelerate) does
    /// (copies `input`, returns `input.len()`), including when `out` is shorter than
    /// `input.len() + period`; the same bounds on the return value hold.
    /// Never panics. Called on the real-time thread; does not allocate.
    pub fn expand(&mut self, input: &[i16], out: &mut [i16]) -> usize {
        let n = input.len();
        let Some(p) = self.decide(input).filter(|&p| self.fits(n + p, out)) else {
            return self.refuse(input, out);
        };
        let cut = self.cut;
        // [0, cut) as is; [cut, cut+p) fades from the period after the cut (continuing
        // sample cut-1) into the period before it (ending like sample cut-1); then the
        // input from the cut onwards again.
        out[..cut].copy_from_slice(&input[..cut]);
        cross_fade(
            &input[cut..cut + p],
            &input[cut - p..cut],
            &mut out[cut..cut + p],
        );
        out[cut + p..n + p].copy_from_slice(&input[cut..]);
        n + p
    }

    /// Copies as much of `input` as fits into `out` and returns the count; a truncated
    /// copy overrides the recorded outcome with `OutputTooSmall`, since audio was lost.
    fn refuse(&mut self, input: &[i16], out: &mut [i16]) -> usize {
        let m = input.len().min(out.len());
        out[..m].copy_from_slice(&input[..m]);
        if m < input.len() {
            self.last_outcome = StretchOutcome::OutputTooSmall;
        }
        m
    }

    /// True when `out` can hold `len` samples; records `OutputTooSmall` otherwise.
    fn fits(&mut self, len: usize, out: &[i16]) -> bool {
        let fits = len <= out.len();
        if !fits {
            self.last_outcome = StretchOutcome::OutputTooSmall;
        }
        fits
    }

    /// Finds the period to splice at the 15 ms point of `input`, or records why not.
    /// On `Some(p)`: `min_period <= p <= cut` and `input.len() >= 2 * cut`, so every
    /// slice the callers take is in bounds.
    fn decide(&mut self, input: &[i16]) -> Option<usize> {
        if input.len() < self.min_input_len() {
            self.last_outcome = StretchOutcome::TooShort;
            return None;
        }
        let cut = self.cut;
        // Fine search at the full rate, ±(half a coarse step + 1) around the coarse
        // estimate, on the very segments that will be cross-faded. Without a coarse
        // estimate (silence, nothing correlates) only the quiet rule can still allow a
        // splice, and then the longest period gains the jitter buffer the most.
        let (lo, hi) = match self.coarse_period(&input[..2 * cut]) {
            Some(centre) => {
                let radius = self.decimation / 2 + 1;
                let hi = (centre + radius).min(cut);
                (
                    centre.saturating_sub(radius).max(self.min_period).min(hi),
                    hi,
                )
            }
            None => (cut, cut),
        };
        for (d, &x) in self.full.iter_mut().zip(&input[..2 * cut]) {
            *d = f32::from(x);
        }
        let full = &self.full;
        let mut best = (lo, f32::NEG_INFINITY, 0f64);
        for p in lo..=hi {
            let (ab, aa, bb) = dot3(&full[cut - p..cut], &full[cut..cut + p]);
            let c = normalised(ab, aa, bb);
            if c > best.1 {
                best = (p, c, aa + bb);
            }
        }
        let (p, correlation, energy) = best;
        // NetEq's passive-speech rule: below the quiet level no splice is audible.
        let quiet = energy < self.quiet_mean_square * (2 * p) as f64;
        if quiet || correlation >= self.correlation_threshold {
            self.last_outcome = StretchOutcome::Stretched {
                period_samples: p,
                correlation,
                quiet,
            };
            Some(p)
        } else {
            self.last_outcome = StretchOutcome::NotPeriodic { correlation };
            None
        }
    }

    /// Coarse pitch period of the first 30 ms, in full-rate samples (interpolated), or
    /// `None` when no lag correlates positively.
    fn coarse_period(&mut self, head: &[i16]) -> Option<usize> {
        let d = self.decimation;
        for (i, c) in self.coarse.iter_mut().enumerate() {
            // coarse.len() = 2·cut/d − 1, so i·d + 2d <= 2·cut = head.len().
            *c = head[i * d..i * d + 2 * d]
                .iter()
                .map(|&s| i32::from(s))
                .sum::<i32>() as f32;
        }
        let (lo, hi, w) = (self.coarse_min_lag, self.coarse_max_lag, self.coarse_window);
        let c0 = self.cut / d;
        let x = &self.coarse[c0..c0 + w];
        let xx = dot(x, x);
        // Energy of the lagged window, slid one coarse sample per lag (exact: integer
        // squares below 2^48 summed in f64).
        let sq = |v: f32| f64::from(v) * f64::from(v);
        let mut yy: f64 = self.coarse[c0 - lo..c0 - lo + w]
            .iter()
            .map(|&v| sq(v))
            .sum();
        let mut best = f32::NEG_INFINITY;
        for lag in lo..=hi {
            let y = &self.coarse[c0 - lag..c0 - lag + w];
            if lag > lo {
                yy += sq(y[0]) - sq(self.coarse[c0 - lag + w]);
            }
            let c = normalised(dot(x, y), xx, yy.max(0.0));
            self.coarse_corr[lag] = c;
            best = best.max(c);
        }
        let corr = &self.coarse_corr;
        if best <= 0.0 {
            return None;
        }
        // The shortest local maximum near the best: one period, not a multiple. The best
        // lag itself qualifies, so `find` always succeeds; `unwrap_or` only avoids a panic.
        let is_peak = |l: usize| {
            corr[l] >= best - MULTIPLE_TOLERANCE
                && (l == lo || corr[l] >= corr[l - 1])
                && (l == hi || corr[l] >= corr[l + 1])
        };
        let lag = (lo..=hi).find(|&l| is_peak(l)).unwrap_or(hi);
        let mut frac = 0.0f32;
        if lag > lo && lag < hi {
            let (l, m, r) = (corr[lag - 1], corr[lag], corr[lag + 1]);
            let denom = l - 2.0 * m + r;
            if denom < 0.0 {
                frac = (0.5 * (l - r) / denom).clamp(-0.5, 0.5);
            }
        }
        Some(((lag as f32 + frac) * d as f32).round() as usize)
    }
}

/// `(Σ a·b, Σ a², Σ b²)` over equal-length slices of integer-valued samples (i16 audio or
/// its box-car sums), each an eight-lane f32 [`dot`] so the compiler vectorises it.
/// Relative error ~1e-6 against the exact integer sums; the order of operations is fixed,
/// so results are identical on every platform. (Exact i64 sums, used before, cannot
/// vectorise on the baseline x86-64 target: a stretch decision cost ~47 k instructions.)
fn dot3(a: &[f32], b: &[f32]) -> (f64, f64, f64) {
    (dot(a, b), dot(a, a), dot(b, b))
}

/// Σ a·b over the common length in f32, eight lanes (one product per lane per step, the
/// shape the compiler vectorises cleanly; three sums in one loop it interleaves with
/// shuffles instead).
fn dot(a: &[f32], b: &[f32]) -> f64 {
    let mut acc = [0f32; 8];
    let (mut a8, mut b8) = (a.chunks_exact(8), b.chunks_exact(8));
    for (x, y) in (&mut a8).zip(&mut b8) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut sum: f64 = acc.iter().map(|&v| f64::from(v)).sum();
    for (&x, &y) in a8.remainder().iter().zip(b8.remainder()) {
        sum += f64::from(x) * f64::from(y);
    }
    sum
}

/// Normalised cross-correlation from the sums; 0 when either side is silent.
fn normalised(xy: f64, xx: f64, yy: f64) -> f32 {
    if xx <= 0.0 || yy <= 0.0 {
        return 0.0;
    }
    (xy / (xx * yy).sqrt()) as f32
}

/// Linear cross-fade in Q15 from `from` to `to` (equal lengths) into `out`:
/// `out[k] = from[k]·(1 − w) + to[k]·w` with `w = (k + 1) / (p + 1)`, so neither end
/// repeats a sample of `from` or `to` exactly.
fn cross_fade(from: &[i16], to: &[i16], out: &mut [i16]) {
    let p = out.len() as i64;
    for (k, ((o, &a), &b)) in out.iter_mut().zip(from).zip(to).enumerate() {
        // w < 32768 because k < p; |a·(32768 − w) + b·w| ≤ 2^30, and the result is a
        // convex combination of two i16, so it fits i16.
        let w = (((k as i64 + 1) << 15) / (p + 1)) as i32;
        let v = i32::from(a) * (32768 - w) + i32::from(b) * w;
        *o = ((v + 16384) >> 15) as i16;
    }
}

/// Mean square of i16 samples at `level_dbfs` RMS (0 dBFS = 32768 RMS).
fn mean_square_of_dbfs(level_dbfs: f32) -> f64 {
    let rms = 32768.0 * 10f64.powf(f64::from(level_dbfs.min(0.0)) / 20.0);
    rms * rms
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::PI;

    const RATES_HZ: [u32; 4] = [8000, 16000, 32000, 48000];

    /// A voiced-speech stand-in: harmonics of `f0_hz` below 3.4 kHz with 1/k amplitudes and
    /// fixed pseudo-random phases, scaled to a peak of about `peak`.
    fn voiced(fs: u32, f0_hz: f64, len: usize, peak: f64) -> Vec<i16> {
        let harmonics: Vec<(f64, f64)> = (1..)
            .map(|k| k as f64)
            .take_while(|k| k * f0_hz < 3400.0)
            .map(|k| (k, (k * 2.399) % (2.0 * PI)))
            .collect();
        let raw: Vec<f64> = (0..len)
            .map(|n| {
                let t = n as f64 / f64::from(fs);
                harmonics
                    .iter()
                    .map(|&(k, ph)| (2.0 * PI * k * f0_hz * t + ph).sin() / k)
                    .sum()
            })
            .collect();
        let max = raw.iter().fold(1e-9f64, |m, v| m.max(v.abs()));
        raw.iter()
            .map(|v| (v / max * peak).round() as i16)
            .collect()
    }

    /// Uniform white noise in ±`amp` from a fixed xorshift seed.
    fn noise(len: usize, amp: i32, mut seed: u32) -> Vec<i16> {
        (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                ((seed % (2 * amp as u32 + 1)) as i32 - amp) as i16
            })
            .collect()
    }

    fn max_slope(x: &[i16]) -> i32 {
        x.windows(2)
            .map(|w| (i32::from(w[1]) - i32::from(w[0])).abs())
            .max()
            .unwrap_or(0)
    }

    fn mean_square(x: &[i16]) -> f64 {
        x.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / x.len().max(1) as f64
    }

    /// Normalised correlation of `x` with itself `lag` samples later, over all of `x`.
    fn self_correlation(x: &[i16], lag: usize) -> f64 {
        let x: Vec<f32> = x.iter().map(|&v| f32::from(v)).collect();
        let (a, b) = (&x[..x.len() - lag], &x[lag..]);
        let (ab, aa, bb) = dot3(a, b);
        ab / (aa * bb).sqrt()
    }

    /// Checks a stretched voiced signal: length changed by one period ±1, still periodic,
    /// no jump beyond 1.5× the input's steepest slope, energy within 10%.
    fn assert_clean_stretch(fs: u32, input: &[i16], out: &[i16], period: f64, sign: i64) {
        let changed = (out.len() as i64 - input.len() as i64) * sign;
        assert!(
            (changed as f64 - period).abs() <= 1.0,
            "{fs} Hz: changed by {changed}, period {period:.2}"
        );
        let lag = period.round() as usize;
        let (before, after) = (self_correlation(input, lag), self_correlation(out, lag));
        assert!(
            after >= before - 0.02,
            "{fs} Hz: periodicity {after:.4} after, {before:.4} before"
        );
        let (slope_in, slope_out) = (max_slope(input), max_slope(out));
        assert!(
            f64::from(slope_out) <= 1.5 * f64::from(slope_in),
            "{fs} Hz: max jump {slope_out} vs input max slope {slope_in}"
        );
        let ratio = mean_square(out) / mean_square(input);
        assert!(
            (0.9..=1.1).contains(&ratio),
            "{fs} Hz: energy ratio {ratio:.3}"
        );
    }

    #[test]
    fn correlation_sums_match_the_exact_integer_sums() {
        let mut seed = 0x9e37_79b9u32;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        for len in [0usize, 1, 7, 8, 60, 121, 720] {
            let a: Vec<i16> = (0..len)
                .map(|i| {
                    if i % 13 == 0 {
                        i16::MIN
                    } else {
                        (next() >> 16) as i16
                    }
                })
                .collect();
            let b: Vec<i16> = (0..len).map(|_| (next() >> 16) as i16).collect();
            let exact = a.iter().zip(&b).fold((0i64, 0i64, 0i64), |s, (&x, &y)| {
                let (x, y) = (i64::from(x), i64::from(y));
                (s.0 + x * y, s.1 + x * x, s.2 + y * y)
            });
            let f = |v: &[i16]| v.iter().map(|&x| f32::from(x)).collect::<Vec<f32>>();
            let (ab, aa, bb) = dot3(&f(&a), &f(&b));
            let scale = ((exact.1 as f64) * (exact.2 as f64)).sqrt().max(1.0);
            assert!((ab - exact.0 as f64).abs() <= 1e-5 * scale, "len {len}: ab");
            assert!((aa - exact.1 as f64).abs() <= 1e-5 * (exact.1 as f64).max(1.0));
            assert!((bb - exact.2 as f64).abs() <= 1e-5 * (exact.2 as f64).max(1.0));
            // Box-car sums (i32) are summed the same way.
            let c: Vec<f32> = a.iter().map(|&x| (i32::from(x) * 12) as f32).collect();
            let (_, cc, _) = dot3(&c, &c);
            assert!(
                (cc - 144.0 * exact.1 as f64).abs() <= 1e-5 * 144.0 * (exact.1 as f64).max(1.0)
            );
        }
    }

    #[test]
    fn accelerate_removes_one_period_of_voiced_speech_cleanly() {
        for fs in RATES_HZ {
            let len = fs as usize * 60 / 1000;
            let input = voiced(fs, 120.0, len, 12000.0);
            let mut ts = TimeStretch::new(fs, len);
            let mut out = vec![0i16; ts.max_output_len()];
            let n = ts.accelerate(&input, &mut out);
            assert!(matches!(
                ts.last_outcome(),
                StretchOutcome::Stretched { quiet: false, .. }
            ));
            assert_clean_stretch(fs, &input, &out[..n], f64::from(fs) / 120.0, -1);
        }
    }

    #[test]
    fn expand_inserts_one_period_of_voiced_speech_cleanly() {
        for fs in RATES_HZ {
            let len = fs as usize * 60 / 1000;
            let input = voiced(fs, 120.0, len, 12000.0);
            let mut ts = TimeStretch::new(fs, len);
            let mut out = vec![0i16; ts.max_output_len()];
            let n = ts.expand(&input, &mut out);
            assert!(matches!(
                ts.last_outcome(),
                StretchOutcome::Stretched { quiet: false, .. }
            ));
            assert_clean_stretch(fs, &input, &out[..n], f64::from(fs) / 120.0, 1);
        }
    }

    #[test]
    fn a_high_voice_loses_one_period_not_a_multiple() {
        // 210 Hz: periods of 4.8, 9.5 and 14.3 ms all fit in the 2.5–15 ms search range.
        for fs in RATES_HZ {
            let len = fs as usize * 40 / 1000;
            let input = voiced(fs, 210.0, len, 12000.0);
            let mut ts = TimeStretch::new(fs, len);
            let mut out = vec![0i16; ts.max_output_len()];
            let n = ts.accelerate(&input, &mut out);
            assert_clean_stretch(fs, &input, &out[..n], f64::from(fs) / 210.0, -1);
        }
    }

    #[test]
    fn loud_white_noise_is_refused_at_the_default_threshold() {
        for fs in RATES_HZ {
            let len = fs as usize * 30 / 1000;
            let input = noise(len, 10000, 0x1234_5678 ^ fs);
            let mut ts = TimeStretch::new(fs, len);
            let mut out = vec![0i16; ts.max_output_len()];
            assert_eq!(ts.accelerate(&input, &mut out), len);
            assert_eq!(&out[..len], &input[..]);
            let StretchOutcome::NotPeriodic { correlation } = ts.last_outcome() else {
                panic!("{fs} Hz: {:?}", ts.last_outcome());
            };
            assert!(
                correlation < 0.5,
                "{fs} Hz: noise correlates at {correlation}"
            );
            assert_eq!(ts.expand(&input, &mut out), len);
            assert_eq!(&out[..len], &input[..]);
        }
    }

    #[test]
    fn white_noise_is_cut_when_the_threshold_allows_it() {
        let input = noise(480, 10000, 99);
        let mut ts = TimeStretch::new(16000, 480).with_correlation_threshold(-1.0);
        let mut out = vec![0i16; ts.max_output_len()];
        let n = ts.accelerate(&input, &mut out);
        let StretchOutcome::Stretched {
            period_samples,
            quiet,
            ..
        } = ts.last_outcome()
        else {
            panic!("{:?}", ts.last_outcome());
        };
        assert!(!quiet);
        assert_eq!(n, 480 - period_samples);
        assert!((40..=240).contains(&period_samples));
    }

    #[test]
    fn quiet_noise_is_cut_whatever_its_correlation() {
        // ±60 uniform ≈ RMS 35 ≈ −60 dBFS, under the −50 dBFS quiet level.
        let input = noise(240, 60, 7);
        let mut ts = TimeStretch::new(8000, 240);
        let mut out = vec![0i16; ts.max_output_len()];
        let n = ts.accelerate(&input, &mut out);
        assert!(matches!(
            ts.last_outcome(),
            StretchOutcome::Stretched { quiet: true, .. }
        ));
        assert!(n < 240);
        // With the quiet rule off, the same noise is refused.
        let mut ts = ts.with_quiet_level_dbfs(f32::NEG_INFINITY);
        assert_eq!(ts.accelerate(&input, &mut out), 240);
        assert!(matches!(
            ts.last_outcome(),
            StretchOutcome::NotPeriodic { .. }
        ));
    }

    #[test]
    fn digital_silence_loses_the_longest_period() {
        let input = vec![0i16; 480];
        let mut ts = TimeStretch::new(8000, 480);
        let mut out = vec![1i16; ts.max_output_len()];
        assert_eq!(ts.accelerate(&input, &mut out), 480 - 120);
        assert!(out[..360].iter().all(|&s| s == 0));
        assert_eq!(ts.expand(&input, &mut out), 480 + 120);
        assert!(out[..600].iter().all(|&s| s == 0));
    }

    #[test]
    fn empty_single_and_short_inputs_are_copied_unchanged() {
        for fs in RATES_HZ {
            let mut ts = TimeStretch::new(fs, 2000);
            let mut out = vec![0i16; ts.max_output_len()];
            let long = voiced(fs, 120.0, ts.min_input_len(), 12000.0);
            for len in [0, 1, 2, ts.min_input_len() / 2, ts.min_input_len() - 1] {
                let input = &long[..len];
                assert_eq!(ts.accelerate(input, &mut out), len);
                assert_eq!(&out[..len], input);
                assert_eq!(ts.last_outcome(), StretchOutcome::TooShort);
                assert_eq!(ts.expand(input, &mut out), len);
                assert_eq!(&out[..len], input);
            }
            // Exactly 30 ms is enough.
            assert!(ts.accelerate(&long, &mut out) < long.len());
        }
    }

    #[test]
    fn output_never_exceeds_max_output_len_nor_out_and_nothing_panics() {
        for fs in [8000, 16000, 48000] {
            let max_in = fs as usize * 40 / 1000;
            let mut ts = TimeStretch::new(fs, max_in);
            let signal = voiced(fs, 150.0, max_in * 2, 20000.0);
            let mut out = vec![0i16; ts.max_output_len()];
            let step = fs as usize / 8000;
            for len in (0..=max_in).step_by(step) {
                let a = ts.accelerate(&signal[..len], &mut out);
                let e = ts.expand(&signal[..len], &mut out);
                assert!(a <= len && e >= len && e <= ts.max_output_len());
            }
            // Inputs beyond max_input_samples: written length still bounded by `out`.
            for len in [max_in + 1, max_in + ts.max_period_samples(), max_in * 2] {
                let a = ts.accelerate(&signal[..len], &mut out);
                let e = ts.expand(&signal[..len], &mut out);
                assert!(a <= out.len() && e <= out.len());
            }
            // Undersized outputs: never written past; a refusal copies what fits.
            let input = &signal[..max_in];
            for cap in [
                0,
                1,
                max_in / 2,
                max_in - 1,
                max_in,
                max_in + 1,
                max_in + 40,
            ] {
                let mut small = vec![0i16; cap];
                for expand in [false, true] {
                    let n = if expand {
                        ts.expand(input, &mut small)
                    } else {
                        ts.accelerate(input, &mut small)
                    };
                    assert!(n <= cap);
                    if ts.last_outcome() == StretchOutcome::OutputTooSmall {
                        assert_eq!(n, cap.min(max_in));
                        assert_eq!(&small[..n], &input[..n]);
                    }
                }
            }
            let mut tiny = [0i16; 3];
            assert_eq!(ts.accelerate(&input[..5], &mut tiny), 3);
            assert_eq!(ts.last_outcome(), StretchOutcome::OutputTooSmall);
            assert_eq!(ts.expand(input, &mut tiny), 3);
            assert_eq!(ts.last_outcome(), StretchOutcome::OutputTooSmall);
        }
    }

    #[test]
    fn full_scale_input_does_not_overflow_the_cross_fade() {
        // A clipped 120 Hz square wave at both rails.
        let input: Vec<i16> = (0..480)
            .map(|n| {
                if (n * 120 / 8000) % 2 == 0 {
                    i16::MAX
                } else {
                    i16::MIN
                }
            })
            .collect();
        let mut ts = TimeStretch::new(8000, 480);
        let mut out = vec![0i16; ts.max_output_len()];
        let n = ts.accelerate(&input, &mut out);
        assert!(n <= 480);
        let n = ts.expand(&input, &mut out);
        assert!(n >= 480);
    }

    #[test]
    fn odd_and_out_of_range_rates_do_not_panic() {
        for (fs, max_in) in [
            (0, 0),
            (1, 10),
            (44100, 2000),
            (22050, 900),
            (u32::MAX, usize::MAX),
        ] {
            let mut ts = TimeStretch::new(fs, max_in);
            assert!(ts.max_output_len() >= max_in);
            let rate = ts.sample_rate_hz();
            assert!((8000..=48000).contains(&rate));
            let input = voiced(rate, 120.0, rate as usize * 60 / 1000, 12000.0);
            let mut out = vec![0i16; input.len() + ts.max_period_samples()];
            let n = ts.accelerate(&input, &mut out);
            if rate == 44100 || rate == 22050 {
                assert_clean_stretch(rate, &input, &out[..n], f64::from(rate) / 120.0, -1);
            }
            let _ = ts.expand(&input, &mut out);
        }
    }

    #[test]
    fn repeated_accelerate_on_a_stream_keeps_it_periodic() {
        // A jitter buffer draining: every 60 ms frame is shortened, frames are joined.
        let fs = 16000;
        let frame = 960;
        let signal = voiced(fs, 120.0, frame * 10, 12000.0);
        let mut ts = TimeStretch::new(fs, frame);
        let mut out = vec![0i16; ts.max_output_len()];
        let mut played = Vec::new();
        for chunk in signal.chunks(frame) {
            let n = ts.accelerate(chunk, &mut out);
            played.extend_from_slice(&out[..n]);
        }
        assert!(played.len() <= signal.len() - 9 * 133);
        assert!(f64::from(max_slope(&played)) <= 1.5 * f64::from(max_slope(&signal)));
        assert!(self_correlation(&played, 133) > 0.9);
    }
}
