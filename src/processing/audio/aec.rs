//! Line / acoustic echo canceller (AEC) for one session.
//!
//! A session has two directions: the *reference* (playback) signal we send to the peer and the
//! *capture* signal we receive from it, which may carry an echo of the reference (a 2-wire
//! hybrid's line echo, ITU-T G.168, or a handset's acoustic echo, ITU-T G.167) delayed by up to
//! the tail length. [`EchoCanceller::process`] removes that echo from the capture frame in place.
//! The two frames arrive together, one tick each, and the echo of a reference frame shows up in
//! capture frames of the same or later ticks.
//!
//! # Algorithm
//!
//! **Linear echo path model.** A partitioned-block frequency-domain adaptive filter (PBFDAF, also
//! called multidelay block frequency-domain filter, MDF: J.-S. Soo and K. K. Pang, "Multidelay
//! block frequency domain adaptive filter", IEEE Trans. ASSP 38(2), 1990). Blocks are 10 ms (`N`
//! samples), FFTs are `2N` long (overlap-save), and the tail is covered by `P = ceil(tail/10 ms)`
//! partitions of `N` taps, so the delay through the canceller is zero. The update is
//! normalised per frequency bin by a smoothed reference power and weighted per partition in
//! proportion to the partition's share of the filter norm (a block version of proportionate
//! NLMS, which speeds up convergence on line echo paths whose first partitions are pure delay).
//! The gradient constraint (keep only the causal `N` taps of each partition) costs two FFTs, so
//! it is applied to one partition per block in turn, as in the "alternately unconstrained" MDF.
//!
//! **Double talk.** Two defences, both needed because near-end speech is uncorrelated with the
//! reference and therefore looks like a large error to a gradient algorithm:
//! - *Adaptive step size.* The optimal NLMS step in a bin is the share of residual echo in the
//!   error, `E|r|² / E|e|²`: it falls to almost zero when near-end speech dominates the error,
//!   which is what freezes adaptation during double talk without a detector. The residual echo
//!   is estimated as `η·|Ŷ|²`, where the leakage `η` is the regression slope of the error power on
//!   the echo-estimate power across bins (J.-M. Valin, "On adjusting the learning rate in
//!   frequency domain echo cancellation with double-talk", IEEE Trans. ASLP 15(3), 2007). Until the
//!   filter has seen enough far-end signal to make that estimate meaningful it uses a fixed step,
//!   reduced when the error is louder than the reference.
//! - *Two echo path models* (K. Ochiai, T. Araseki, T. Ogihara, "Echo canceler with two echo path
//!   models", IEEE Trans. Commun. 25(6), 1977). The filter above is the *background* filter: it
//!   adapts but never drives the output. The output is produced by a *foreground* copy, which is
//!   replaced by the background only when the background's error is lower by a statistically
//!   significant margin, and the background is reset to the foreground when it diverges. A
//!   burst of double talk can therefore cost at most the adaptation since the last good copy.
//!
//! **Residual echo suppressor.** A spectral post-filter on the linear output (the non-linear
//! processor of G.168 §3.8 in spectral form). Per bin, the residual echo is estimated as
//! `η·|Ŷ|²` (with a short decay for the echo tail) and the gain is a Wiener-like
//! `1 − γ·residual/error`, floored both at −40 dB and at a "comfort" level that keeps the
//! background noise at about −10 dB of its estimated level instead of gating it to silence. To
//! keep the canceller delay-free the gains are not applied by overlap-add (which would cost
//! 5–10 ms of delay) but turned into a causal minimum-phase filter through the real cepstrum
//! (A. V. Oppenheim, R. W. Schafer, *Discrete-Time Signal Processing*, §13.8; the same idea as
//! the low-delay "filter-bank equaliser" of H. W. Löllmann and P. Vary, EUSIPCO 2005), which is
//! applied to the linear output by overlap-save. When every gain is 1 (no reference activity)
//! the post-filter is skipped entirely, so a session without echo leaves the canceller
//! bit-exact.
//!
//! # Real-time contract
//!
//! [`EchoCanceller::new`] validates the configuration and allocates everything, FFT plans and
//! scratch included. [`EchoCanceller::process`], [`EchoCanceller::reset`],
//! [`EchoCanceller::set_residual_suppression`] and [`EchoCanceller::erle_db`] never allocate,
//! lock or panic, whatever the sample values. A frame whose length is not a whole number of
//! 10 ms blocks, or whose capture and reference lengths differ, is a caller bug: it is ignored
//! (the capture frame is left untouched and no state changes).
//!
//! ```
//! use media_core::processing::audio::aec::{AecConfig, EchoCanceller};
//!
//! let mut aec = EchoCanceller::new(AecConfig {
//!     sample_rate_hz: 8000,
//!     tail_ms: 128,
//!     ..AecConfig::default()
//! })
//! .expect("valid configuration");
//! let reference = [0i16; 160]; // the 20 ms we sent to the peer this tick
//! let mut capture = [0i16; 160]; // the 20 ms we received from it
//! aec.process(&mut capture, &reference); // echo removed in place
//! ```

use std::fmt;
use std::sync::Arc;

use realfft::num_complex::Complex;
use realfft::{ComplexToReal, RealFftPlanner, RealToComplex};

use super::config::{block_len, check_rate, DspConfigError};

type Complex32 = Complex<f32>;

const COMPONENT: &str = "aec";
/// Shortest tail accepted (ms). G.168 §6 asks line echo cancellers for at least 64 ms.
pub const MIN_TAIL_MS: u32 = 64;
/// Longest tail accepted (ms): beyond this the cost (∝ tail) exceeds the budget of a gateway lane.
pub const MAX_TAIL_MS: u32 = 128;

/// i16 sample to the internal full-scale-1.0 float.
const SAMPLE_TO_FLOAT: f32 = 1.0 / 32768.0;

// ---- Linear filter -------------------------------------------------------------------------

/// Smoothing of the per-bin reference power that normalises the step: the power is averaged
/// over about `2·P` blocks, i.e. about twice the span of the filter.
const REF_POWER_RATE_TIMES_PARTITIONS: f32 = 0.5;
/// Absolute regularisation of the per-bin normalisation, per FFT point: white noise at
/// −90 dBFS, so bins the reference never excites do not get huge steps.
const REG_ABS_PER_POINT: f32 = 1e-9;
/// Relative regularisation: 1e-3 of the mean bin power (−30 dB), for band-limited references.
const REG_REL: f32 = 1e-3;
/// Share of the mean partition norm every partition gets on top of its own in the
/// proportionate step, so an empty (pure-delay) partition can still start adapting.
const PROP_FLOOR: f32 = 0.1;
/// Fixed step used until the filter has seen enough far-end signal (see `adapted`).
const INITIAL_STEP: f32 = 0.25;
fn knob(name: &str, default: f32) -> f32 {
    use std::sync::OnceLock;
    static K: OnceLock<std::collections::HashMap<String, f32>> = OnceLock::new();
    let m = K.get_or_init(|| std::env::vars().filter_map(|(k, v)| Some((k, v.parse().ok()?))).collect());
    m.get(name).copied().unwrap_or(default)
}
fn initial_step() -> f32 { knob("ISTEP", 0.5) }
/// The fixed step phase ends once the accumulated step reaches this many times `P`.
const INITIAL_PHASE_STEPS_PER_PARTITION: f32 = 1.0;
/// Largest per-bin step (normalised); NLMS is stable below 2 and converges fastest at 1,
/// but a half step halves the misadjustment caused by noise.
const STEP_MAX: f32 = 0.5;
/// Reference block power (full scale = 1) below which the reference counts as silent
/// (−70 dBFS): no fixed-step adaptation on nothing.
const REF_ACTIVE_POWER: f32 = 1e-7;

// ---- Leakage (Valin 2007) ------------------------------------------------------------------

/// Bands the leakage regression runs on: summing bins into bands averages out the
/// periodogram's speckle, which is uncorrelated between error and echo estimate and would
/// bias the slope towards zero, and keeps the speech envelope, which carries the signal.
const LEAK_BANDS: usize = 16;
/// Rate of the slow per-band means around which power fluctuations are measured (~200 ms).
const LEAK_MEAN_RATE: f32 = 0.05;
/// Largest rate of the recursive covariance that gives the leakage (~200 ms); it is scaled
/// down by echo-estimate/error power so that near-end speech barely moves the estimate.
const LEAK_RATE_MAX: f32 = 0.05;
/// Leakage bounds: at most 1 (residual = all of the echo estimate), at least −23 dB so the
/// step never quite stops and the canceller keeps tracking a changing path.
const LEAK_MIN: f32 = 0.005;
/// Smallest residual-to-error ratio credited to the reference power alone (−40 dB).
const RER_FROM_REFERENCE: f32 = 1e-4;
/// Over-estimation of the global residual (the regression slope is noisy).
const RER_LEAK_FACTOR: f32 = 2.0;
/// Ceiling of the global residual-to-error ratio.
const RER_MAX: f32 = 0.5;
/// Mix of the per-bin (`η·|Ŷ|²`) and the global residual estimates in the step.
const RER_GLOBAL_SHARE: f32 = 0.3;
/// Smoothing of the per-bin error and echo-estimate powers used in the step.
const STEP_POWER_RATE: f32 = 0.5;

// ---- Two echo path models (Ochiai 1977) ---------------------------------------------------

/// Smoothing of the foreground-minus-background error energy: a fast and a slow average.
const DIFF_FAST: f32 = 0.6;
const DIFF_SLOW: f32 = 0.85;
/// Significance thresholds, in units of the difference's estimated variance: the background
/// replaces the foreground when it is better by this much, and is reset when worse by more.
const COPY_SIGNIFICANCE: f32 = 1.0;
const COPY_SIGNIFICANCE_SMOOTHED: f32 = 0.25;
const RESET_SIGNIFICANCE: f32 = 4.0;
const RESET_SIGNIFICANCE_SMOOTHED: f32 = 4.0;

// ---- Residual echo suppressor --------------------------------------------------------------

/// Smoothing of the post-filter's power spectra (one 10 ms block back is half-weighted).
const RES_POWER_SMOOTHING: f32 = 0.5;
/// Over-subtraction of the residual echo estimate.
const RES_OVERSUBTRACTION: f32 = 2.0;
/// Smallest leakage the suppressor assumes (−25 dB): non-linearities and a path that moved
/// leave more residual than the linear regression sees.
const RES_LEAK_MIN: f32 = 0.003;
/// Per-block decay of the residual estimate: the echo tail outlives the estimate that made it
/// (reverberation, smearing of the 20 ms analysis window). −6 dB per 10 ms.
const RES_DECAY: f32 = 0.5;
/// Lowest gain (−40 dB).
const RES_GAIN_MIN: f32 = 0.01;
/// Comfort floor: suppressed bins keep the background noise at this share of its power
/// (−10 dB), so the noise does not switch on and off with the far-end speech.
const RES_COMFORT_SHARE: f32 = 0.1;
/// Rise of the background-noise tracker per block (+0.2 dB/s); it falls instantly.
const NOISE_RISE: f32 = 1.000_5;
/// A gain this close to 1 is 1: the residual is below −30 dB of the error.
const RES_UNITY: f32 = 1e-3;

// ---- ERLE meter -----------------------------------------------------------------------------

/// Averaging of the ERLE meter (~1 s of far-end activity).
const ERLE_RATE: f32 = 0.01;

/// Settings of an [`EchoCanceller`] (control plane).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AecConfig {
    /// Sample rate of both directions, Hz: 8000, 16000 or 48000.
    pub sample_rate_hz: u32,
    /// Longest echo path delay + dispersion covered, ms ([`MIN_TAIL_MS`]..=[`MAX_TAIL_MS`]);
    /// rounded up to whole 10 ms blocks. Cost and state grow linearly with it.
    pub tail_ms: u32,
    /// Run the residual echo suppressor (spectral post-filter) after the linear canceller.
    /// Can be changed later with [`EchoCanceller::set_residual_suppression`].
    pub residual_suppression: bool,
}

impl Default for AecConfig {
    /// 8 kHz, 128 ms tail (enough for line echo behind a long-haul hybrid and most handsets),
    /// residual suppression on.
    fn default() -> Self {
        AecConfig {
            sample_rate_hz: 8000,
            tail_ms: 128,
            residual_suppression: true,
        }
    }
}

/// Real FFT plans of one length with their scratch.
#[derive(Clone)]
struct Fft {
    forward: Arc<dyn RealToComplex<f32>>,
    inverse: Arc<dyn ComplexToReal<f32>>,
    scratch_forward: Box<[Complex32]>,
    scratch_inverse: Box<[Complex32]>,
}

impl Fft {
    fn new(len: usize) -> Self {
        let mut planner = RealFftPlanner::<f32>::new();
        let forward = planner.plan_fft_forward(len);
        let inverse = planner.plan_fft_inverse(len);
        let scratch_forward = forward.make_scratch_vec().into_boxed_slice();
        let scratch_inverse = inverse.make_scratch_vec().into_boxed_slice();
        Fft {
            forward,
            inverse,
            scratch_forward,
            scratch_inverse,
        }
    }

    /// Unnormalised forward transform; `input` (2N) is used as scratch.
    fn forward(&mut self, input: &mut [f32], output: &mut [Complex32]) {
        // Every buffer is sized from the same plan in `new`, so the only error realfft can
        // report (a length mismatch) cannot happen; ignoring the Result keeps this panic-free.
        let _ = self
            .forward
            .process_with_scratch(input, output, &mut self.scratch_forward);
    }

    /// Unnormalised inverse transform (result is `2N` times the signal); `input` is scratch.
    fn inverse(&mut self, input: &mut [Complex32], output: &mut [f32]) {
        // A real signal's DC and Nyquist bins are real; rounding must not make realfft
        // complain (it would still transform, but say so).
        if let Some(first) = input.first_mut() {
            first.im = 0.0;
        }
        if let Some(last) = input.last_mut() {
            last.im = 0.0;
        }
        let _ = self
            .inverse
            .process_with_scratch(input, output, &mut self.scratch_inverse);
    }
}

/// Frequency-domain echo canceller for one mono session: see the [module docs](self).
#[derive(Clone)]
pub struct EchoCanceller {
    config: AecConfig,
    /// Samples per 10 ms block (`N`).
    block: usize,
    /// Bins of a `2N` real FFT (`N + 1`).
    bins: usize,
    /// Filter partitions (`P`).
    partitions: usize,
    fft: Fft,
    /// Smoothing rate of `ref_power`.
    ref_power_rate: f32,

    // Scratch, 2N real and N + 1 complex.
    time: Box<[f32]>,
    spec: Box<[Complex32]>,

    // Reference history.
    /// Previous reference block (first half of the overlap-save window).
    ref_prev: Box<[f32]>,
    /// Spectra of the last `P` reference windows, a ring; `ref_head` is the newest.
    ref_spectra: Box<[Complex32]>,
    ref_head: usize,
    /// Smoothed per-bin reference power (normalises the step).
    ref_power: Box<[f32]>,
    /// |X|² of each spectrum in `ref_spectra`.
    ref_bin_power: Box<[f32]>,

    // The two echo path models: P partitions of N + 1 bins each, partition 0 = no delay.
    background: Box<[Complex32]>,
    foreground: Box<[Complex32]>,
    /// Proportionate step weight per partition (sums to 1).
    prop: Box<[f32]>,
    /// Squared norm per background partition, measured during the last update.
    partition_norm: Box<[f32]>,
    /// Next partition whose gradient constraint is enforced.
    constrain_next: usize,

    // Current block signals (full scale = 1).
    capture: Box<[f32]>,
    echo_fg: Box<[f32]>,
    err_fg: Box<[f32]>,
    echo_bg: Box<[f32]>,
    err_bg: Box<[f32]>,

    // Adaptation statistics.
    /// Spectrum of the zero-padded background error (gradient input).
    err_spectrum: Box<[Complex32]>,
    /// Per-bin step for the next update.
    step: Box<[f32]>,
    /// Smoothed per-bin error and echo-estimate power (step size).
    err_power: Box<[f32]>,
    echo_power: Box<[f32]>,
    /// Slow per-bin means of the same (leakage regression).
    err_mean: Box<[f32]>,
    echo_mean: Box<[f32]>,
    /// Recursive covariance of error and echo-estimate power, variance of the latter.
    leak_cov: f32,
    leak_var: f32,
    /// Echo leakage η: residual echo power over echo estimate power.
    leak: f32,
    /// The fixed-step start-up phase is over.
    adapted: bool,
    /// Accumulated fixed step during start-up.
    initial_steps: f32,

    // Two-path comparison statistics.
    diff_fast: f32,
    diff_slow: f32,
    var_fast: f32,
    var_slow: f32,

    // Residual echo suppressor.
    suppress: bool,
    /// Previous linear output and echo estimate blocks (overlap-save window halves).
    out_prev: Box<[f32]>,
    echo_prev: Box<[f32]>,
    /// Spectrum of the linear output window, filtered in place.
    out_spectrum: Box<[Complex32]>,
    res_err_power: Box<[f32]>,
    res_echo_power: Box<[f32]>,
    /// Residual echo estimate per bin.
    res_residual: Box<[f32]>,
    res_num: Box<[f32]>,
    step_num: Box<[f32]>,
    step_noise: Box<[f32]>,
    step_err_smooth: Box<[f32]>,
    step_den: Box<[f32]>,
    res_den: Box<[f32]>,
    /// Background noise estimate per bin (comfort floor).
    res_noise: Box<[f32]>,
    /// Gain per bin, then its minimum-phase filter.
    res_gain: Box<[f32]>,
    res_filter: Box<[Complex32]>,
    /// Scratch block for the post-filtered output.
    post: Box<[f32]>,

    pub(crate) dbg: [u32; 4],
    /// Adaptation frozen (tests measure a frozen copy of the echo path model).
    frozen: bool,

    // ERLE meter.
    /// Reference power, held for the length of the tail (echo may still be arriving).
    ref_recent: f32,
    ref_recent_decay: f32,
    erle_capture: f32,
    erle_output: f32,
}

impl fmt::Debug for EchoCanceller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EchoCanceller")
            .field("config", &self.config)
            .field("partitions", &self.partitions)
            .field("adapted", &self.adapted)
            .field("leak", &self.leak)
            .field("erle_db", &self.erle_db())
            .finish_non_exhaustive()
    }
}

impl EchoCanceller {
    /// Builds a canceller for `config`. Control plane: validates the rate and the tail
    /// ([`MIN_TAIL_MS`]..=[`MAX_TAIL_MS`]) and allocates every buffer and FFT plan.
    pub fn new(config: AecConfig) -> Result<Self, DspConfigError> {
        check_rate(COMPONENT, config.sample_rate_hz)?;
        if !(MIN_TAIL_MS..=MAX_TAIL_MS).contains(&config.tail_ms) {
            return Err(DspConfigError {
                component: COMPONENT,
                reason: "tail must be 64 to 128 ms",
            });
        }
        let block = block_len(config.sample_rate_hz);
        let bins = block + 1;
        let partitions = config.tail_ms.div_ceil(10) as usize;
        let fft_len = 2 * block;
        let zeros_c = |len: usize| vec![Complex32::new(0.0, 0.0); len].into_boxed_slice();
        let zeros = |len: usize| vec![0.0f32; len].into_boxed_slice();
        let mut aec = EchoCanceller {
            config,
            block,
            bins,
            partitions,
            fft: Fft::new(fft_len),
            ref_power_rate: (REF_POWER_RATE_TIMES_PARTITIONS / partitions as f32).min(0.5),
            time: zeros(fft_len),
            spec: zeros_c(bins),
            ref_prev: zeros(block),
            ref_spectra: zeros_c(partitions * bins),
            ref_head: 0,
            ref_power: zeros(bins),
            ref_bin_power: zeros(partitions * bins),
            background: zeros_c(partitions * bins),
            foreground: zeros_c(partitions * bins),
            prop: zeros(partitions),
            partition_norm: zeros(partitions),
            constrain_next: 0,
            capture: zeros(block),
            echo_fg: zeros(block),
            err_fg: zeros(block),
            echo_bg: zeros(block),
            err_bg: zeros(block),
            err_spectrum: zeros_c(bins),
            step: zeros(bins),
            err_power: zeros(bins),
            echo_power: zeros(bins),
            err_mean: zeros(bins.div_ceil(bins.div_ceil(LEAK_BANDS))),
            echo_mean: zeros(bins.div_ceil(bins.div_ceil(LEAK_BANDS))),
            leak_cov: 0.0,
            leak_var: 0.0,
            leak: 1.0,
            adapted: false,
            initial_steps: 0.0,
            diff_fast: 0.0,
            diff_slow: 0.0,
            var_fast: 0.0,
            var_slow: 0.0,
            suppress: config.residual_suppression,
            out_prev: zeros(block),
            echo_prev: zeros(block),
            out_spectrum: zeros_c(bins),
            res_err_power: zeros(bins),
            res_echo_power: zeros(bins),
            res_residual: zeros(bins),
            res_num: zeros(bins),
            step_num: zeros(bins),
            step_noise: zeros(bins),
            step_err_smooth: zeros(bins),
            step_den: zeros(bins),
            res_den: zeros(bins),
            res_noise: zeros(bins),
            res_gain: zeros(bins),
            res_filter: zeros_c(bins),
            post: zeros(block),
            // Echo is still arriving a tail after the reference stopped: hold the reference
            // power for the tail, falling 30 dB over it.
            ref_recent: 0.0,
            ref_recent_decay: 10f32.powf(-3.0 / partitions as f32),
            erle_capture: 0.0,
            erle_output: 0.0,
            frozen: false,
            dbg: [0; 4],
        };
        aec.reset();
        Ok(aec)
    }

    /// The configuration this canceller was built with (with the current residual
    /// suppression setting).
    pub fn config(&self) -> AecConfig {
        AecConfig {
            residual_suppression: self.suppress,
            ..self.config
        }
    }

    /// Forgets the echo path and every statistic, as if just built (for a new call on the
    /// same session, or after the echo path changed completely).
    ///
    /// Called on the real-time thread; never allocates.
    pub fn reset(&mut self) {
        let zero = Complex32::new(0.0, 0.0);
        self.ref_prev.fill(0.0);
        self.ref_spectra.fill(zero);
        self.ref_head = 0;
        self.ref_power.fill(0.0);
        self.ref_bin_power.fill(0.0);
        self.background.fill(zero);
        self.foreground.fill(zero);
        self.prop.fill(1.0 / self.partitions as f32);
        self.partition_norm.fill(0.0);
        self.constrain_next = 0;
        self.err_spectrum.fill(zero);
        self.step.fill(0.0);
        self.err_power.fill(0.0);
        self.echo_power.fill(0.0);
        self.err_mean.fill(0.0);
        self.echo_mean.fill(0.0);
        self.leak_cov = 0.0;
        self.leak_var = 0.0;
        self.leak = 1.0;
        self.adapted = false;
        self.initial_steps = 0.0;
        self.reset_two_path_stats();
        self.out_prev.fill(0.0);
        self.echo_prev.fill(0.0);
        self.res_err_power.fill(0.0);
        self.res_echo_power.fill(0.0);
        self.res_residual.fill(0.0);
        self.res_num.fill(0.0);
        self.step_num.fill(0.0);
        self.step_noise.fill(f32::MAX);
        self.step_err_smooth.fill(0.0);
        self.step_den.fill(0.0);
        self.res_den.fill(0.0);
        // Start high so the tracker settles on the first quiet blocks.
        self.res_noise.fill(f32::MAX);
        self.res_gain.fill(1.0);
        self.ref_recent = 0.0;
        self.erle_capture = 0.0;
        self.erle_output = 0.0;
    }

    /// Turns the residual echo suppressor (spectral post-filter) on or off. The linear
    /// canceller keeps running either way.
    ///
    /// Called on the real-time thread; never allocates.
    pub fn set_residual_suppression(&mut self, enabled: bool) {
        self.suppress = enabled;
    }

    /// Running echo return loss enhancement, dB: capture power over output power, averaged
    /// over about the last second during which the reference was active (0 before any).
    /// Near-end speech counts as capture and output alike, so it reads low during double talk.
    ///
    /// Called on the real-time thread; never allocates.
    pub fn erle_db(&self) -> f32 {
        const TINY: f32 = 1e-12;
        10.0 * ((self.erle_capture + TINY) / (self.erle_output + TINY)).log10()
    }

    /// Removes the echo of `reference` (the frame sent to the peer this tick) from `capture`
    /// (the frame received from it this tick), in place.
    ///
    /// Both frames must have the same length, a whole number of 10 ms blocks; otherwise the
    /// call is ignored: `capture` is left untouched and no state changes.
    ///
    /// Called on the real-time thread; never allocates.
    pub fn process(&mut self, capture: &mut [i16], reference: &[i16]) {
        let n = self.block;
        if capture.len() != reference.len() || capture.len() % n != 0 {
            return;
        }
        for (cap, refr) in capture.chunks_exact_mut(n).zip(reference.chunks_exact(n)) {
            self.process_block(cap, refr);
        }
    }

    fn reset_two_path_stats(&mut self) {
        self.diff_fast = 0.0;
        self.diff_slow = 0.0;
        self.var_fast = 0.0;
        self.var_slow = 0.0;
    }

    /// One 10 ms block; `capture.len() == reference.len() == self.block`.
    fn process_block(&mut self, capture: &mut [i16], reference: &[i16]) {
        let n = self.block;
        let bins = self.bins;
        let p = self.partitions;
        let inv_fft_len = 1.0 / (2 * n) as f32;

        // --- Reference: overlap-save window [previous block, this block] into the ring.
        for (c, &s) in self.capture.iter_mut().zip(capture.iter()) {
            *c = f32::from(s) * SAMPLE_TO_FLOAT;
        }
        let (older, newer) = self.time.split_at_mut(n);
        older.copy_from_slice(&self.ref_prev);
        let mut ref_energy = 0.0f32;
        for ((t, prev), &s) in newer
            .iter_mut()
            .zip(self.ref_prev.iter_mut())
            .zip(reference.iter())
        {
            let v = f32::from(s) * SAMPLE_TO_FLOAT;
            *t = v;
            *prev = v;
            ref_energy += v * v;
        }
        self.ref_head = (self.ref_head + p - 1) % p;
        let head = self.ref_head;
        self.fft.forward(
            &mut self.time,
            &mut self.ref_spectra[head * bins..(head + 1) * bins],
        );
        for (pw, x) in self.ref_bin_power[head * bins..(head + 1) * bins]
            .iter_mut()
            .zip(self.ref_spectra[head * bins..(head + 1) * bins].iter())
        {
            *pw = x.norm_sqr();
        }
        let mut ref_power_sum = 0.0f32;
        if knob("NORM", 1.0) > 0.0 {
            self.ref_power.fill(0.0);
            for q in 0..p {
                let at = ((head + q) % p) * bins;
                let g = self.prop[q];
                for (pw, &x) in self.ref_power.iter_mut().zip(self.ref_bin_power[at..at + bins].iter()) {
                    *pw += g * x;
                }
            }
            ref_power_sum = self.ref_power.iter().sum();
        } else {
            let rate = self.ref_power_rate;
            for (pw, x) in self
                .ref_power
                .iter_mut()
                .zip(self.ref_spectra[head * bins..(head + 1) * bins].iter())
            {
                *pw += rate * (x.norm_sqr() - *pw);
                ref_power_sum += *pw;
            }
        }

        // --- Both echo path models filter the reference history.
        filter(
            &self.foreground,
            &self.ref_spectra,
            head,
            p,
            bins,
            &mut self.spec,
        );
        self.fft.inverse(&mut self.spec, &mut self.time);
        for (((y, e), &d), &t) in self
            .echo_fg
            .iter_mut()
            .zip(self.err_fg.iter_mut())
            .zip(self.capture.iter())
            .zip(self.time[n..].iter())
        {
            *y = t * inv_fft_len;
            *e = d - *y;
        }
        filter(
            &self.background,
            &self.ref_spectra,
            head,
            p,
            bins,
            &mut self.spec,
        );
        self.fft.inverse(&mut self.spec, &mut self.time);
        for (((y, e), &d), &t) in self
            .echo_bg
            .iter_mut()
            .zip(self.err_bg.iter_mut())
            .zip(self.capture.iter())
            .zip(self.time[n..].iter())
        {
            *y = t * inv_fft_len;
            *e = d - *y;
        }

        // --- Two echo path models: which one drives the output (Ochiai 1977).
        let mut capture_energy = 0.0f32;
        let mut fg_energy = 0.0f32;
        let mut bg_energy = 0.0f32;
        let mut model_diff = 0.0f32;
        for (((&d, &ef), &eb), (&yf, &yb)) in self
            .capture
            .iter()
            .zip(self.err_fg.iter())
            .zip(self.err_bg.iter())
            .zip(self.echo_fg.iter().zip(self.echo_bg.iter()))
        {
            capture_energy += d * d;
            fg_energy += ef * ef;
            bg_energy += eb * eb;
            model_diff += (yb - yf) * (yb - yf);
        }
        if !(fg_energy.is_finite() && bg_energy.is_finite() && model_diff.is_finite()) {
            // Cannot happen with bounded input and the regularised step, but a corrupted
            // state must not stay corrupted: start over, leaving this block untouched.
            self.reset();
            return;
        }
        // The error difference fg − bg has a variance of about (common error)·(model
        // difference): the two errors share the near-end signal and differ by the model
        // difference. A change of model must beat that noise.
        let diff = fg_energy - bg_energy;
        let var = fg_energy * model_diff;
        self.diff_fast = DIFF_FAST * self.diff_fast + (1.0 - DIFF_FAST) * diff;
        self.diff_slow = DIFF_SLOW * self.diff_slow + (1.0 - DIFF_SLOW) * diff;
        self.var_fast = DIFF_FAST * DIFF_FAST * self.var_fast + (1.0 - DIFF_FAST).powi(2) * var;
        self.var_slow = DIFF_SLOW * DIFF_SLOW * self.var_slow + (1.0 - DIFF_SLOW).powi(2) * var;
        let bg_better = (diff > 0.0 && diff * diff > COPY_SIGNIFICANCE * var)
            || (self.diff_fast > 0.0
                && self.diff_fast * self.diff_fast > COPY_SIGNIFICANCE_SMOOTHED * self.var_fast)
            || (self.diff_slow > 0.0
                && self.diff_slow * self.diff_slow > COPY_SIGNIFICANCE_SMOOTHED * self.var_slow);
        let bg_worse = (diff < 0.0 && diff * diff > RESET_SIGNIFICANCE * var)
            || (self.diff_fast < 0.0
                && self.diff_fast * self.diff_fast > RESET_SIGNIFICANCE_SMOOTHED * self.var_fast)
            || (self.diff_slow < 0.0
                && self.diff_slow * self.diff_slow > RESET_SIGNIFICANCE_SMOOTHED * self.var_slow);
        // `err_fg` becomes the linear output of this block.
        // The background must also cancel a real share of the capture: during double talk
        // the near-end speech dominates both errors and a background that fits part of it
        // by chance would otherwise look better.
        let bg_cancels = bg_energy < knob("CMAX", 0.5) * capture_energy;
        if bg_better && bg_cancels && !self.frozen {
            self.dbg[0] += 1;
            self.foreground.copy_from_slice(&self.background);
            self.reset_two_path_stats();
            // Cross-fade from the old model's output to the new one's over the block, so the
            // switch does not click.
            let ramp = 1.0 / n as f32;
            for (i, ((ef, yf), (&eb, &yb))) in self
                .err_fg
                .iter_mut()
                .zip(self.echo_fg.iter_mut())
                .zip(self.err_bg.iter().zip(self.echo_bg.iter()))
                .enumerate()
            {
                let w = (i + 1) as f32 * ramp;
                *ef += w * (eb - *ef);
                *yf += w * (yb - *yf);
            }
        } else if bg_worse && !self.frozen {
            // The background diverged (double talk got through): back to the last good model,
            // and adapt from its error.
            self.dbg[1] += 1;
            self.background.copy_from_slice(&self.foreground);
            self.reset_two_path_stats();
            self.err_bg.copy_from_slice(&self.err_fg);
            self.echo_bg.copy_from_slice(&self.echo_fg);
        }

        // --- Step size for the background update.
        // Far-end single talk: the capture is explained by the echo estimate (normalised
        // cross-correlation of capture and echo estimate, Benesty et al., "A new class of
        // doubletalk detectors based on cross-correlation", IEEE Trans. SAP 8(2), 2000).
        let mut dy = 0.0f32;
        let mut yy = 0.0f32;
        for (&d, &y) in self.capture.iter().zip(self.echo_fg.iter()) {
            dy += d * y;
            yy += y * y;
        }
        let rho = dy * dy / (capture_energy * yy + 1e-30);
        let echo_dominated = rho > knob("RHO", 0.6) && yy > REF_ACTIVE_POWER * n as f32 * 1e-2;
        if echo_dominated { self.dbg[2] += 1; }
        self.update_step(ref_energy, ref_power_sum, echo_dominated);
        if self.frozen {
            self.step.fill(0.0);
        }

        // --- Background update: W_q += prop_q · step · conj(X_q) · E, then constrain one.
        for (s, &mu) in self.err_spectrum.iter_mut().zip(self.step.iter()) {
            *s *= mu;
        }
        for q in 0..p {
            let x_at = ((head + q) % p) * bins;
            let w = &mut self.background[q * bins..(q + 1) * bins];
            let x = &self.ref_spectra[x_at..x_at + bins];
            let g = self.prop[q];
            let mut norm = 0.0f32;
            for ((w, x), e) in w.iter_mut().zip(x.iter()).zip(self.err_spectrum.iter()) {
                *w += x.conj() * e * g;
                norm += w.norm_sqr();
            }
            self.partition_norm[q] = norm;
        }
        if knob("ALLC", 0.0) > 0.0 {
            for q in 0..p {
                self.constrain(q);
            }
        } else {
            self.constrain(self.constrain_next);
        }
        self.constrain_next = (self.constrain_next + 1) % p;
        self.update_prop();

        // --- Residual echo suppression and output.
        let post_filtered = self.suppress && self.suppress_residual(echo_dominated);
        let output: &[f32] = if post_filtered {
            &self.post
        } else {
            &self.err_fg
        };
        let mut output_energy = 0.0f32;
        for (c, &v) in capture.iter_mut().zip(output.iter()) {
            output_energy += v * v;
            *c = (v * 32768.0).round().clamp(-32768.0, 32767.0) as i16;
        }
        self.out_prev.copy_from_slice(&self.err_fg);
        self.echo_prev.copy_from_slice(&self.echo_fg);

        // --- ERLE meter: only while echo can be present.
        let ref_block_power = ref_energy / n as f32;
        self.ref_recent = (self.ref_recent * self.ref_recent_decay).max(ref_block_power);
        if self.ref_recent > REF_ACTIVE_POWER {
            self.erle_capture += ERLE_RATE * (capture_energy - self.erle_capture);
            self.erle_output += ERLE_RATE * (output_energy - self.erle_output);
        }
    }

    /// Computes `self.step` for the next background update from this block's background
    /// error and echo estimate, and leaves the error spectrum in `self.err_spectrum`.
    fn update_step(&mut self, ref_energy: f32, ref_power_sum: f32, echo_dominated: bool) {
        let n = self.block;
        // Error and echo estimate of this block, zero-padded to the FFT length: the error
        // spectrum is the gradient input, and both give the powers the leakage comes from.
        let (zeros, tail) = self.time.split_at_mut(n);
        zeros.fill(0.0);
        tail.copy_from_slice(&self.err_bg);
        self.fft.forward(&mut self.time, &mut self.err_spectrum);
        let (zeros, tail) = self.time.split_at_mut(n);
        zeros.fill(0.0);
        tail.copy_from_slice(&self.echo_bg);
        self.fft.forward(&mut self.time, &mut self.spec);

        let mut err_energy = 0.0f32;
        let mut echo_energy = 0.0f32;
        let mut cross = 0.0f32;
        for (&e, &y) in self.err_bg.iter().zip(self.echo_bg.iter()) {
            err_energy += e * e;
            echo_energy += y * y;
            cross += e * y;
        }

        // Leakage η (Valin 2007): regression slope of error power on echo-estimate power
        // across bins, from fluctuations around slow means. Uncorrelated near-end speech adds
        // no covariance, and the rate shrinks when the error dominates the echo estimate.
        let bins = self.bins;
        let band_width = bins.div_ceil(LEAK_BANDS);
        let mut cov = 0.0f32;
        let mut var = 0.0f32;
        for (band, ((em, ym), (e_band, y_band))) in self
            .err_mean
            .iter_mut()
            .zip(self.echo_mean.iter_mut())
            .zip(
                self.err_spectrum
                    .chunks(band_width)
                    .zip(self.spec.chunks(band_width)),
            )
            .enumerate()
        {
            let at = band * band_width;
            let mut ef_band = 0.0f32;
            let mut yf_band = 0.0f32;
            for ((ep, yp), (e, y)) in self.err_power[at..]
                .iter_mut()
                .zip(self.echo_power[at..].iter_mut())
                .zip(e_band.iter().zip(y_band.iter()))
            {
                let ef = e.norm_sqr();
                let yf = y.norm_sqr();
                ef_band += ef;
                yf_band += yf;
                // Keep the instantaneous error power when it jumps (double talk onset), the
                // smoothed one otherwise: the step must fall at once, recover gently.
                *ep = (*ep + STEP_POWER_RATE * (ef - *ep)).max(ef);
                *yp += STEP_POWER_RATE * (yf - *yp);
            }
            *em += LEAK_MEAN_RATE * (ef_band - *em);
            *ym += LEAK_MEAN_RATE * (yf_band - *ym);
            let de = ef_band - *em;
            let dy = yf_band - *ym;
            cov += de * dy;
            var += dy * dy;
        }
        let nrise = knob("NRISE", 1.002);
        for ((sm, nz), e) in self.step_err_smooth.iter_mut().zip(self.step_noise.iter_mut()).zip(self.err_spectrum.iter()) {
            *sm += 0.3 * (e.norm_sqr() - *sm);
            *nz = if *sm < *nz { *sm } else { *nz * nrise };
        }
        let tiny = 1e-20f32;
        let rate = LEAK_RATE_MAX * (echo_energy / (err_energy + tiny)).min(1.0);
        self.leak_cov += rate * (cov - self.leak_cov);
        self.leak_var += rate * (var - self.leak_var);
        self.leak = if self.leak_var > tiny {
            (self.leak_cov / self.leak_var).clamp(LEAK_MIN, 1.0)
        } else {
            1.0
        };

        let reg = REG_ABS_PER_POINT * (2 * n) as f32 + REG_REL * ref_power_sum / self.bins as f32;
        if !self.adapted {
            // Start-up: a fixed step while the reference is active, smaller when the error
            // is louder than the reference (near-end speech rather than echo).
            let mu = if ref_energy > REF_ACTIVE_POWER * n as f32 {
                initial_step() * (ref_energy / (err_energy + tiny)).min(1.0)
            } else {
                0.0
            };
            self.initial_steps += mu;
            for (s, &pw) in self.step.iter_mut().zip(self.ref_power.iter()) {
                *s = mu / (pw + reg);
            }
            if self.initial_steps > knob("IPH", INITIAL_PHASE_STEPS_PER_PARTITION) * self.partitions as f32 {
                self.adapted = true;
            }
        } else {
            // Global residual-to-error ratio: the leakage estimate, but at least the squared
            // correlation of error and echo estimate (echo left in the error correlates with
            // the estimate), and a floor tied to the reference power.
            let mut rer = (RER_FROM_REFERENCE * ref_energy + RER_LEAK_FACTOR * self.leak * echo_energy)
                / (err_energy + tiny);
            let corr2 = cross * cross / (err_energy * echo_energy + tiny);
            rer = rer.max(corr2).min(RER_MAX);
            let leak = self.leak * knob("LG", 3.0);
            let mode = knob("STEPMODE", 1.0);
            let srate = knob("SRATE", 0.1);
            let nc = knob("NC", 1.5);
            for ((((((s, &pw), &ep), &yp), num), (den, (e, y))), nz) in self
                .step
                .iter_mut()
                .zip(self.ref_power.iter())
                .zip(self.err_power.iter())
                .zip(self.echo_power.iter())
                .zip(self.step_num.iter_mut())
                .zip(self.step_den.iter_mut().zip(self.err_spectrum.iter().zip(self.spec.iter())))
                .zip(self.step_noise.iter())
            {
                let ef = e.norm_sqr();
                if echo_dominated {
                    *num += srate * (ef - *num);
                    *den += srate * (y.norm_sqr() - *den);
                }
                let eta = if *den > 0.0 { ((*num - nc * *nz) / *den).clamp(0.0, 1.0) } else { 1.0 };
                let leak = if mode > 0.0 { eta.max(leak) } else { leak };
                // Optimal step = residual echo / error, per bin.
                let residual =
                    (1.0 - RER_GLOBAL_SHARE) * leak * yp + RER_GLOBAL_SHARE * rer * ep;
                let mu = (residual / (ep + tiny)).min(knob("SMAX", STEP_MAX));
                *s = mu / (pw + reg);
            }
        }
    }

    /// Enforces the gradient constraint on background partition `q`: its impulse response
    /// keeps only the first `N` taps, so the circular convolution stays linear.
    fn constrain(&mut self, q: usize) {
        let n = self.block;
        let bins = self.bins;
        let inv_fft_len = 1.0 / (2 * n) as f32;
        let part = &mut self.background[q * bins..(q + 1) * bins];
        self.spec.copy_from_slice(part);
        self.fft.inverse(&mut self.spec, &mut self.time);
        let (head, tail) = self.time.split_at_mut(n);
        for t in head.iter_mut() {
            *t *= inv_fft_len;
        }
        tail.fill(0.0);
        self.fft.forward(&mut self.time, part);
    }

    /// Proportionate step weights from the partition norms: partitions holding more of the
    /// echo path adapt faster (sums to 1).
    fn update_prop(&mut self) {
        let p = self.partitions as f32;
        let mut total = 0.0f32;
        for (w, &nrm) in self.prop.iter_mut().zip(self.partition_norm.iter()) {
            *w = nrm.sqrt();
            total += *w;
        }
        let floor = knob("PF", 2.0) * total / p + 1e-12;
        let denom = total + p * floor;
        for w in self.prop.iter_mut() {
            *w = (*w + floor) / denom;
        }
    }

    /// Spectral residual echo suppression of `err_fg` into `post`. Returns false when every
    /// gain is 1, in which case `post` is not written and the linear output stands.
    fn suppress_residual(&mut self, echo_dominated: bool) -> bool {
        let n = self.block;
        let inv_fft_len = 1.0 / (2 * n) as f32;
        // Windows [previous block, this block] of the linear output and of the echo
        // estimate it removed.
        let (older, newer) = self.time.split_at_mut(n);
        older.copy_from_slice(&self.echo_prev);
        newer.copy_from_slice(&self.echo_fg);
        self.fft.forward(&mut self.time, &mut self.spec);
        let (older, newer) = self.time.split_at_mut(n);
        older.copy_from_slice(&self.out_prev);
        newer.copy_from_slice(&self.err_fg);
        self.fft.forward(&mut self.time, &mut self.out_spectrum);

        let leak = (self.leak * knob("RLG", 1.0)).max(RES_LEAK_MIN);
        let last = self.bins - 1;
        let mut all_unity = true;
        for k in 0..self.bins {
            // Powers through a Hann window, applied as the 3-tap kernel [−¼, ½, −¼] across
            // bins (the rectangular window's sidelobes would smear loud bins into quiet ones).
            let pe = hann_power(&self.out_spectrum, k, last);
            let py = hann_power(&self.spec, k, last);
            let ep = &mut self.res_err_power[k];
            *ep += (1.0 - RES_POWER_SMOOTHING) * (pe - *ep);
            let yp = &mut self.res_echo_power[k];
            *yp += (1.0 - RES_POWER_SMOOTHING) * (py - *yp);
            let leak = if knob("RESMODE", 1.0) > 0.0 {
                if echo_dominated {
                    let rate = knob("ETARATE", 0.1);
                    self.res_num[k] += rate * (pe - self.res_num[k]);
                    self.res_den[k] += rate * (py - self.res_den[k]);
                }
                if self.res_den[k] > 0.0 { (self.res_num[k] / self.res_den[k]).clamp(1e-4, 1.0) } else { 1.0 }
            } else { leak };
            let residual = (leak * *yp).max(RES_DECAY * self.res_residual[k]);
            // Flush values that no longer matter (and denormals) to an exact zero.
            let residual = if residual > 1e-15 { residual } else { 0.0 };
            self.res_residual[k] = residual;
            let ep = *ep;
            let noise = &mut self.res_noise[k];
            *noise = if ep < *noise { ep } else { *noise * NOISE_RISE };
            let gain = if residual * RES_OVERSUBTRACTION <= RES_UNITY * ep || ep <= 0.0 {
                1.0
            } else {
                let wiener = 1.0 - knob("GAMMA", RES_OVERSUBTRACTION) * residual / ep;
                let comfort = (RES_COMFORT_SHARE * *noise / ep).sqrt();
                wiener.max(comfort).clamp(RES_GAIN_MIN, 1.0)
            };
            all_unity &= gain >= 1.0;
            self.res_gain[k] = gain;
        }
        if all_unity {
            return false;
        }

        // Minimum-phase filter with magnitude `gain`: fold the real cepstrum of ln(gain)
        // onto positive quefrencies (Oppenheim & Schafer §13.8); its spectrum's imaginary
        // part is the phase. Causal, so the output needs no look-ahead.
        for (s, &g) in self.spec.iter_mut().zip(self.res_gain.iter()) {
            *s = Complex32::new(g.ln(), 0.0);
        }
        self.fft.inverse(&mut self.spec, &mut self.time);
        let (low, high) = self.time.split_at_mut(n);
        if let Some((c0, rest)) = low.split_first_mut() {
            *c0 *= inv_fft_len;
            for c in rest.iter_mut() {
                *c *= 2.0 * inv_fft_len;
            }
        }
        if let Some((cn, rest)) = high.split_first_mut() {
            *cn *= inv_fft_len;
            rest.fill(0.0);
        }
        self.fft.forward(&mut self.time, &mut self.spec);
        for ((h, s), &g) in self
            .res_filter
            .iter_mut()
            .zip(self.spec.iter())
            .zip(self.res_gain.iter())
        {
            let (sin, cos) = s.im.sin_cos();
            *h = Complex32::new(g * cos, g * sin);
        }
        // Overlap-save filtering of the linear output.
        for (o, h) in self.out_spectrum.iter_mut().zip(self.res_filter.iter()) {
            *o *= h;
        }
        self.fft.inverse(&mut self.out_spectrum, &mut self.time);
        for (o, &t) in self.post.iter_mut().zip(self.time[n..].iter()) {
            *o = t * inv_fft_len;
        }
        true
    }
}

/// `out = Σ_q w_q · x_(head+q)`: the echo estimate spectrum of a partitioned filter.
fn filter(
    weights: &[Complex32],
    ref_spectra: &[Complex32],
    head: usize,
    partitions: usize,
    bins: usize,
    out: &mut [Complex32],
) {
    out.fill(Complex32::new(0.0, 0.0));
    for (q, w) in weights.chunks_exact(bins).enumerate() {
        let x_at = ((head + q) % partitions) * bins;
        let x = &ref_spectra[x_at..x_at + bins];
        for ((o, w), x) in out.iter_mut().zip(w.iter()).zip(x.iter()) {
            *o += w * x;
        }
    }
}

/// Power of bin `k` of a real signal's half spectrum (`z[0..=last]`) after a Hann window,
/// using conjugate symmetry at both ends.
#[inline]
fn hann_power(z: &[Complex32], k: usize, last: usize) -> f32 {
    let here = z.get(k).copied().unwrap_or_default();
    let below = if k == 0 {
        z.get(1).map(|c| c.conj())
    } else {
        z.get(k - 1).copied()
    }
    .unwrap_or_default();
    let above = if k >= last {
        z.get(last.saturating_sub(1)).map(|c| c.conj())
    } else {
        z.get(k + 1).copied()
    }
    .unwrap_or_default();
    (here * 0.5 - (below + above) * 0.25).norm_sqr()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic xorshift32 noise in [-1, 1).
    struct XorShift(u32);

    impl XorShift {
        fn next_f32(&mut self) -> f32 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            self.0 = x;
            (x as f32 / u32::MAX as f32) * 2.0 - 1.0
        }
    }

    fn read_wav(name: &str) -> Vec<f32> {
        let path = format!("{}/tests/data/audio/{name}", env!("CARGO_MANIFEST_DIR"));
        let mut reader = hound::WavReader::open(&path).expect("test audio is present");
        reader
            .samples::<i16>()
            .map(|s| f32::from(s.expect("valid 16-bit wav")))
            .collect()
    }

    /// Synthetic echo path: `delay_ms` of pure delay, then `len_ms` of exponentially decaying
    /// random taps (−40 dB at the end), scaled to an echo return loss of `erl_db` for white
    /// input.
    fn echo_path(rate: u32, delay_ms: u32, len_ms: u32, erl_db: f32, seed: u32) -> Vec<f32> {
        let per_ms = rate as usize / 1000;
        let delay = delay_ms as usize * per_ms;
        let len = len_ms as usize * per_ms;
        let mut rng = XorShift(seed);
        let mut h = vec![0.0f32; delay + len];
        let tau = len as f32 / (100f32).ln();
        for (i, t) in h[delay..].iter_mut().enumerate() {
            *t = rng.next_f32() * (-(i as f32) / tau).exp();
        }
        let energy: f32 = h.iter().map(|v| v * v).sum();
        let scale = (10f32.powf(-erl_db / 10.0) / energy).sqrt();
        h.iter_mut().for_each(|v| *v *= scale);
        h
    }

    fn convolve(x: &[f32], h: &[f32]) -> Vec<f32> {
        let mut y = vec![0.0f32; x.len()];
        for (i, out) in y.iter_mut().enumerate() {
            let taps = h.len().min(i + 1);
            *out = (0..taps).map(|j| h[j] * x[i - j]).sum();
        }
        y
    }

    /// Echo test scenario: far-end speech through an echo path plus white noise, with
    /// near-end speech added during `double_talk_s`.
    struct Scenario {
        rate: u32,
        far: Vec<f32>,
        /// Echo + noise: the capture signal without near-end speech.
        echo_only: Vec<f32>,
        /// Near-end speech as added to the capture (zero outside double talk).
        near: Vec<f32>,
        capture: Vec<f32>,
    }

    #[allow(clippy::too_many_arguments)]
    fn scenario(
        rate: u32,
        seconds: f32,
        delay_ms: u32,
        path_ms: u32,
        erl_db: f32,
        noise_dbfs: f32,
        double_talk_s: Option<(f32, f32)>,
    ) -> Scenario {
        let len = (seconds * rate as f32) as usize;
        let far: Vec<f32> = read_wav(&format!("speech1_{rate}.wav"))[..len].to_vec();
        let h = echo_path(rate, delay_ms, path_ms, erl_db, 0x1234_5678);
        let echo = convolve(&far, &h);
        let mut rng = XorShift(0x9e37_79b9);
        // Uniform noise of the requested RMS.
        let amp = 32768.0 * 10f32.powf(noise_dbfs / 20.0) * 3f32.sqrt();
        let echo_only: Vec<f32> = echo.iter().map(|e| e + amp * rng.next_f32()).collect();
        let mut near = vec![0.0f32; len];
        if let Some((start, end)) = double_talk_s {
            let speech = read_wav(&format!("speech2_{rate}.wav"));
            let (a, b) = ((start * rate as f32) as usize, (end * rate as f32) as usize);
            // Take near-end speech from 1 s into the file so it starts talking at once.
            near[a..b].copy_from_slice(&speech[rate as usize..rate as usize + (b - a)]);
        }
        let capture = echo_only.iter().zip(&near).map(|(e, s)| e + s).collect();
        Scenario {
            rate,
            far,
            echo_only,
            near,
            capture,
        }
    }

    fn to_i16(x: &[f32]) -> Vec<i16> {
        x.iter()
            .map(|v| v.round().clamp(-32768.0, 32767.0) as i16)
            .collect()
    }

    /// Runs `aec` over `capture`/`far` in 20 ms frames from sample `from`; returns the output.
    fn run(aec: &mut EchoCanceller, capture: &[f32], far: &[f32]) -> Vec<f32> {
        let frame = 2 * block_len(aec.config.sample_rate_hz);
        let mut cap = to_i16(capture);
        let far = to_i16(far);
        for (c, r) in cap.chunks_exact_mut(frame).zip(far.chunks_exact(frame)) {
            aec.process(c, r);
        }
        cap.iter().map(|&v| f32::from(v)).collect()
    }

    fn energy(x: &[f32]) -> f64 {
        x.iter().map(|&v| f64::from(v) * f64::from(v)).sum()
    }

    /// ERLE over samples `a..b`: power of the echo-only capture over power of the output.
    fn erle_db(echo_only: &[f32], out: &[f32], a: usize, b: usize) -> f64 {
        10.0 * (energy(&echo_only[a..b]) / (energy(&out[a..b]) + 1e-9)).log10()
    }

    fn secs(rate: u32, s: f32) -> usize {
        (s * rate as f32) as usize
    }

    /// Mean segmental SNR (dB) of `out` against the clean near-end `near` over 10 ms blocks
    /// of `a..b` where the near-end is active (above −50 dBFS), each clamped to −10..35 dB.
    fn near_end_seg_snr_db(near: &[f32], out: &[f32], a: usize, b: usize, rate: u32) -> f64 {
        let blk = block_len(rate);
        let active = blk as f64 * (32768.0 * 10f64.powf(-50.0 / 20.0)).powi(2);
        let mut sum = 0.0;
        let mut count = 0;
        for start in (a..b).step_by(blk) {
            let end = (start + blk).min(b);
            let s = energy(&near[start..end]);
            if s < active {
                continue;
            }
            let err: f64 = near[start..end]
                .iter()
                .zip(&out[start..end])
                .map(|(&s, &o)| (f64::from(o) - f64::from(s)).powi(2))
                .sum();
            sum += (10.0 * (s / (err + 1e-9)).log10()).clamp(-10.0, 35.0);
            count += 1;
        }
        sum / count.max(1) as f64
    }

    fn canceller(rate: u32, tail_ms: u32, suppression: bool) -> EchoCanceller {
        EchoCanceller::new(AecConfig {
            sample_rate_hz: rate,
            tail_ms,
            residual_suppression: suppression,
        })
        .expect("valid configuration")
    }

    #[test]
    #[ignore]
    fn diag() {
        let rate = 8000;
        let n = 8 * rate as usize;
        let mut rng = XorShift(77);
        let white = std::env::var("WHITE").is_ok();
        let far: Vec<f32> = if white {
            (0..n).map(|_| 3000.0 * rng.next_f32()).collect()
        } else {
            read_wav("speech1_8000.wav")[..n].to_vec()
        };
        let h = echo_path(rate, 30, 50, 8.0, 0x1234_5678);
        let echo = convolve(&far, &h);
        let nl = knob("DNOISE", 32.0);
        let cap: Vec<f32> = echo.iter().map(|e| e + nl * rng.next_f32()).collect();
        let mut aec = canceller(rate, 128, false);
        let fr = 80;
        let c16 = to_i16(&cap);
        let f16 = to_i16(&far);
        let mut out = vec![0.0f32; n];
        let (mut res_bg, mut y_bg, mut echo_e, mut bg_out) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
        for i in 0..n / fr {
            let mut c = c16[i * fr..(i + 1) * fr].to_vec();
            aec.process(&mut c, &f16[i * fr..(i + 1) * fr]);
            for (o, v) in out[i * fr..].iter_mut().zip(&c) {
                *o = f32::from(*v);
            }
            for j in 0..fr {
                let e = echo[i * fr + j] as f64 / 32768.0;
                let yb = aec.echo_bg[j] as f64;
                res_bg += (e - yb).powi(2);
                y_bg += yb * yb;
                echo_e += e * e;
                bg_out += (aec.err_bg[j] as f64).powi(2);
            }
            if i % 50 == 49 {
                let a = (i - 49) * fr;
                let b = (i + 1) * fr;
                println!(
                    "{:.1}s erle fg {:.1} bg {:.1} true leak {:.4} est {:.4} adapted {} prop {:?}",
                    b as f32 / 8000.0,
                    erle_db(&cap, &out, a, b),
                    10.0 * (echo_e / bg_out).log10(),
                    res_bg / y_bg,
                    aec.leak,
                    aec.adapted,
                    aec.prop.iter().map(|p| (p * 100.0).round()).collect::<Vec<_>>(),
                );
                (res_bg, y_bg, echo_e, bg_out) = (0.0, 0.0, 0.0, 0.0);
            }
        }
    }

    #[test]
    #[ignore]
    fn report() {
        for (rate, tail, delay, path) in [(8000, 128, 30, 50), (8000, 64, 20, 40), (16000, 128, 30, 50)] {
            let sc = scenario(rate, 8.0, delay, path, knob("ERL", 8.0), knob("NOISE", -60.0), Some((4.5, 6.0)));
            let s = |t| secs(rate, t);
            for sup in [false, true] {
                let mut aec = canceller(rate, tail, sup);
                let mut out = Vec::new();
                let mut dbg = String::new();
                for w in 0..16 {
                    let (a, b) = (s(w as f32 * 0.5), s(w as f32 * 0.5 + 0.5));
                    out.extend(run(&mut aec, &sc.capture[a..b], &sc.far[a..b]));
                    dbg += &format!("{}/{}/{}/{:.3} ", aec.dbg[0], aec.dbg[1], aec.dbg[2], aec.leak);
                    aec.dbg = [0; 4];
                }
                let mut line = format!("rate {rate} tail {tail} sup {sup}: ");
                for w in 0..16 {
                    let (a, b) = (s(w as f32 * 0.5), s(w as f32 * 0.5 + 0.5));
                    line += &format!("{:.1} ", erle_db(&sc.echo_only, &out, a, b));
                }
                if !sup { println!("{dbg}"); }
                println!("{line}");
                println!(
                    "  single-talk ERLE 2-4.5 s {:.1} dB, after DT 6.5-8 {:.1} dB, segSNR {:.1} dB, erle_db() {:.1}",
                    erle_db(&sc.echo_only, &out, s(2.0), s(4.5)),
                    erle_db(&sc.echo_only, &out, s(6.5), s(8.0)),
                    near_end_seg_snr_db(&sc.near, &out, s(4.5), s(6.0), rate),
                    aec.erle_db()
                );
            }
        }
    }
}
