//! Line / acoustic echo canceller (AEC) for one session.
//!
//! A session has two directions: the *reference* (playback) signal we send to the peer and the
//! *capture* signal we receive from it, which may carry an echo of the reference (a 2-wire
//! hybrid's line echo, ITU-T G.168, or a terminal's acoustic echo, ITU-T G.167) delayed by up
//! to the tail length. [`EchoCanceller::process`] removes that echo from the capture frame in
//! place. The two frames arrive together, one tick each; the echo of a reference frame shows up
//! in capture frames of the same or later ticks.
//!
//! # Algorithm
//!
//! **Linear echo path model.** A partitioned-block frequency-domain adaptive filter (PBFDAF, or
//! multidelay filter, MDF: J.-S. Soo, K. K. Pang, "Multidelay block frequency domain adaptive
//! filter", IEEE Trans. ASSP 38(2), 1990). Blocks are 10 ms (`N` samples), or 20 ms when the
//! frames are whole 20 ms (at 48 kHz for tails over 96 ms only; [`block_for`],
//! [`EchoCanceller::with_frame`]: a lane's sessions at 20, 40 or 60 ms ptime), FFTs `2N`
//! long (overlap-save), and the tail is covered by `P = ceil(tail / block)` partitions of
//! `N` taps, so the canceller adds no delay.
//! A 20 ms block halves the passes over the echo path model per frame (7 partitions of 161
//! bins for a 128 ms tail at 8 kHz instead of 2 × 13 of 81) and the per-block work, for
//! transforms twice as long; its trackers keep their time constants (each per-block rate is
//! converted). The update of each bin is normalised by the reference power
//! the filter actually saw in that bin (summed over the partitions with their step weights),
//! and weighted per partition two thirds uniformly, one third in proportion to the
//! partition's share of the filter norm (a block form of improved proportionate NLMS:
//! J. Benesty, S. L. Gay, "An improved PNLMS algorithm", ICASSP 2002), which speeds up
//! convergence on echo paths whose first partitions are pure delay without starving the
//! low-level tail. The gradient constraint (keep the causal `N` taps of each partition) costs
//! two FFTs, so it is enforced on one partition per block in turn, as in the alternately
//! unconstrained MDF.
//!
//! **Double talk.** Near-end speech is uncorrelated with the reference, so to a gradient
//! algorithm it looks like a large error. The defences:
//! - *Adaptive step.* The optimal step in a bin is the share of residual echo in the error,
//!   `E|r|² / E|e|²`; near-end speech inflates the error and the step falls by itself. The
//!   residual is `η·|Ŷ|²`, with the leakage `η` taken per bin from the error-to-echo-estimate
//!   power ratio learnt in far-end single talk, and never below the leakage found by
//!   regressing error power on echo-estimate power across bands (J.-M. Valin, "On adjusting
//!   the learning rate in frequency domain echo cancellation with double-talk", IEEE Trans.
//!   ASLP 15(3), 2007), which near-end speech does not bias. Until the filter has seen
//!   enough far-end signal for either to mean something, a fixed step is used, scaled down
//!   when the error is louder than the reference.
//! - *Single-talk and near-end detection.* A block is far-end single talk when the capture
//!   is explained by the echo estimate (normalised cross-correlation of capture and echo
//!   estimate, after J. Benesty, D. R. Morgan, J. H. Cho, "A new class of doubletalk
//!   detectors based on cross-correlation", IEEE Trans. SAP 8(2), 2000); only such blocks
//!   teach the leakage ratios. Near-end speech is declared when the foreground error exceeds
//!   four times the residual echo and noise seen in single talk.
//! - *Two echo path models* (K. Ochiai, T. Araseki, T. Ogihara, "Echo canceler with two echo
//!   path models", IEEE Trans. Commun. 25(6), 1977). The adaptive filter above is the
//!   *background*; the output comes from a *foreground* copy, replaced only when the
//!   background's error is lower by a statistically significant margin *and* the background
//!   removes at least half of the capture power, and during near-end speech only when its
//!   error is a quarter of the foreground's (an echo path change also looks like near-end
//!   speech). A background that diverges is reset to the foreground. A burst of double talk
//!   therefore costs at most the adaptation since the last good copy.
//! - The residual echo suppressor backs off during near-end speech (below).
//!
//! **Residual echo suppressor** (the non-linear processor of G.168 §3.8, in spectral form).
//! Per bin, the residual echo is `η_res·|Ŷ|²` (with a −6 dB per 10 ms decay for the tail that
//! outlives its estimate), `η_res` being the output-to-echo-estimate power ratio measured in
//! single-talk blocks, and the gain is `1 − 2·residual/error`, floored at −40 dB and at a
//! comfort level that keeps the background noise at about −10 dB of its tracked level instead
//! of gating it. When the error holds far more than the expected residual echo and noise
//! *and* a Geigel test (G.168) finds the capture peak louder than the echo path can make the
//! reference peaks of the tail (the path's peak gain learnt in single talk, with a 6 dB
//! margin, rather than assumed), the suppression is lifted at once and brought back over
//! 50 ms (G.168: the NLP is disabled during double talk). The level test keeps a filter that
//! is still learning new spectral content, whose error is large but no louder than echo can
//! be, from switching the suppressor off.
//!
//! To keep the canceller free of delay the gains are not applied by overlap-add (which would
//! cost 5–10 ms) but turned into a causal minimum-phase filter through the real cepstrum
//! (A. V. Oppenheim, R. W. Schafer, *Discrete-Time Signal Processing*, §13.8; the idea of
//! H. W. Löllmann, P. Vary's low-delay filter-bank equaliser, EUSIPCO 2005), liftered to
//! `N/4` quefrencies so the gain curve is smooth and the filter short, and applied to the
//! linear output by overlap-save. When every gain is 1 (no reference activity) the
//! post-filter is skipped, so a session without echo is passed through bit-exact.
//!
//! # Real-time contract
//!
//! [`EchoCanceller::new`] validates the configuration and allocates everything, FFT plans and
//! scratch included. [`EchoCanceller::process`], [`EchoCanceller::reset`],
//! [`EchoCanceller::set_residual_suppression`] and [`EchoCanceller::erle_db`] never allocate,
//! lock or panic, whatever the sample values. A frame whose length is not a whole number of
//! blocks, or whose capture and reference lengths differ, is a caller bug: it is ignored
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
use std::sync::{Arc, OnceLock};

use rustfft::num_complex::Complex;

use super::config::{
    block_len, check_rate, fast_exp, fast_ln, fast_sin_cos, rate_index, DspConfigError,
    SUPPORTED_RATES_HZ,
};
use super::ns::{plan_for_block, NsPlan};
use super::round_to_i16;
use crate::runtime::prefetch::Trickle;

type Complex32 = Complex<f32>;

const COMPONENT: &str = "aec";

/// Steps per 10 ms block at which a canceller issues the next one's state for prefetch
/// ([`Trickle::step_share`]) besides one per filter partition (in the update): with 2 such
/// blocks a frame, `2·(6 + P)` steps, 38 at 8 kHz with a 128 ms tail (about 470 lines:
/// 12-13 lines a step). Measured on aec-pcmu at 500 calls (PERF.md, session 17): against
/// the whole state in one burst, 12 steps of about 40 lines gave +12-14% calls per core
/// and these 38 steps +18-20% on top; 64 steps of about 8 lines no more.
const TRICKLE_STEPS_PER_BLOCK: usize = 6;
/// Further steps of a 20 ms block, between its transforms, which has half the steps of two
/// 10 ms blocks otherwise: +4% on aec-pcmu at 500 calls with the trickle into L2 (PERF.md,
/// session 21). Every block issues all five, the residual suppressor's where it skips its
/// transforms.
const FINE_TRICKLE_STEPS: usize = 5;

/// Shortest tail accepted, ms. G.168 asks line echo cancellers for at least 64 ms.
pub const MIN_TAIL_MS: u32 = 64;
/// Longest tail accepted, ms: cost and state grow linearly with the tail.
pub const MAX_TAIL_MS: u32 = 128;
/// At 48 kHz, 20 ms blocks only for tails longer than this, ms ([`block_for`]). There
/// the 1,920-point transforms cost more per point than the 960-point ones, so the halved
/// filter work pays only with enough partitions: with a 128 ms tail a 20 ms frame took
/// 8% fewer instructions (callgrind) and 3% less time (criterion), with 4.6 dB more ERLE
/// (the 48 kHz test: 36.7 against 32.1 dB); with 96 ms, 5% fewer instructions; with
/// 64 ms, 1% more instructions, 8% more time and 1.4 dB less ERLE (35.7 against 37.1).
pub const MIN_TAIL_MS_20MS_BLOCKS_48K: u32 = 96;
/// Most filter partitions (10 ms each) a canceller has: [`MAX_TAIL_MS`] in whole blocks.
const MAX_PARTITIONS: usize = MAX_TAIL_MS.div_ceil(10) as usize;

/// i16 sample to the internal float scale (full scale = 1.0).
const SAMPLE_TO_FLOAT: f32 = 1.0 / 32768.0;
/// Guards divisions by energies that can be exactly zero.
const TINY: f32 = 1e-20;

// ---- Linear filter -------------------------------------------------------------------------

/// Absolute regularisation of the per-bin normalisation, per FFT point: white noise at
/// −90 dBFS, so bins the reference never excites do not get huge steps.
const REG_ABS_PER_POINT: f32 = 1e-9;
/// Relative regularisation: −30 dB of the mean bin power, for band-limited references.
const REG_REL: f32 = 1e-3;
/// Each partition's step weight gets this many times the mean partition norm on top of its
/// own norm: two thirds uniform, one third proportionate.
const PROP_UNIFORM_SHARE: f32 = 2.0;
/// Fixed step of the start-up phase.
const INITIAL_STEP: f32 = 0.5;
/// The start-up phase ends once the accumulated step reaches `P` (about `2P` blocks of
/// far-end speech).
const INITIAL_STEPS_PER_PARTITION: f32 = 1.0;
/// Largest per-bin step. NLMS converges fastest at 1; half of that halves the misadjustment
/// caused by noise and undetected near-end speech.
const STEP_MAX: f32 = 0.5;
/// Mean reference power (full scale = 1) below which the reference counts as silent
/// (−70 dBFS).
const REF_ACTIVE_POWER: f32 = 1e-7;

// ---- Step-size statistics --------------------------------------------------------------------

/// Bands of the leakage regression. Summing bins into bands averages out the periodogram
/// speckle, which is uncorrelated between error and echo estimate and would bias the slope
/// to zero, and keeps the speech envelope, which carries the information.
const LEAK_BANDS: usize = 16;
/// Rate of the slow per-band means around which power fluctuations are measured (~200 ms).
const LEAK_MEAN_RATE: f32 = 0.05;
/// Largest rate of the recursive covariance giving the leakage (~200 ms); it is scaled down
/// by echo-estimate over error power, so near-end speech barely moves the estimate.
const LEAK_RATE_MAX: f32 = 0.05;
/// Bounds of the regression leakage: the slope is noisy, so never below −23 dB (the step
/// never quite stops and the filter keeps tracking) nor above 1.
const LEAK_MIN: f32 = 0.005;
/// The regression slope under-estimates the leakage while the misalignment sits in other
/// partitions than the echo estimate (during convergence); it is used as a floor, scaled.
const LEAK_FLOOR_GAIN: f32 = 3.0;
/// Smallest residual-to-error ratio credited to the reference power alone (−40 dB).
const RER_FROM_REFERENCE: f32 = 1e-4;
/// Over-estimation of the residual in the broadband residual-to-error ratio.
const RER_LEAK_GAIN: f32 = 2.0;
/// Ceiling of the broadband residual-to-error ratio.
const RER_MAX: f32 = 0.5;
/// Share of the broadband estimate in the per-bin residual (the rest is per bin).
const RER_BROADBAND_SHARE: f32 = 0.3;
/// Smoothing of the per-bin error and echo-estimate powers used in the step.
const STEP_POWER_RATE: f32 = 0.5;
/// Normalised capture/echo-estimate cross-correlation (squared) above which a block counts
/// as dominated by echo: the leakage ratios are learnt only in such blocks.
const ECHO_DOMINATED_RHO2: f32 = 0.6;
/// Rate of the per-bin leakage ratios (averaged over ~10 echo-dominated blocks).
const LEAK_RATIO_RATE: f32 = 0.1;

// ---- Two echo path models (Ochiai 1977) ---------------------------------------------------

/// Smoothing of the foreground-minus-background error energy, fast and slow.
const DIFF_FAST: f32 = 0.6;
const DIFF_SLOW: f32 = 0.85;
/// Significance (in units of the difference's variance) for the background to replace the
/// foreground, instantaneous and smoothed, and for the background to be reset.
const COPY_SIGNIFICANCE: f32 = 1.0;
const COPY_SIGNIFICANCE_SMOOTHED: f32 = 0.25;
const RESET_SIGNIFICANCE: f32 = 4.0;
/// The background replaces the foreground only if its error is below this share of the
/// capture power (it removes at least 3 dB).
const COPY_MAX_ERROR_SHARE: f32 = 0.5;
/// During near-end speech the background must have a quarter of the foreground's error.
const COPY_DURING_NEAR_END_SHARE: f32 = 0.25;
/// Geigel margin over the learnt echo path peak gain (6 dB), and the per-block release of
/// that gain's upper envelope.
const GEIGEL_MARGIN: f32 = 2.0;
const GEIGEL_RELEASE: f32 = 0.02;
/// Smoothing and rise per block of the foreground error floor of the near-end detector.
const TALK_FLOOR_SMOOTHING: f32 = 0.3;
const TALK_FLOOR_RISE: f32 = 1.002;

// ---- Residual echo suppressor --------------------------------------------------------------

/// Smoothing of the post-filter's power spectra (the previous block is half-weighted).
const RES_POWER_SMOOTHING: f32 = 0.5;
/// Over-subtraction of the residual echo estimate.
const RES_OVERSUBTRACTION: f32 = 2.0;
/// Per-block decay of the residual estimate (−6 dB per 10 ms): the echo tail outlives the
/// estimate that predicted it (reverberation, the smearing of the 20 ms analysis window).
const RES_DECAY: f32 = 0.5;
/// Lowest gain (−40 dB).
const RES_GAIN_MIN: f32 = 0.01;
/// Comfort floor: suppressed bins keep the background noise at this share of its tracked
/// power (−10 dB), so the noise does not switch on and off with the far-end speech.
const RES_COMFORT_SHARE: f32 = 0.1;
/// Rise of the background-noise tracker per block (+0.2 dB/s); it falls at once.
const NOISE_RISE: f32 = 1.000_5;
/// A gain whose residual is below −30 dB of the error is exactly 1.
const RES_UNITY: f32 = 1e-3;
/// Residual estimates below this power are flushed to zero (also keeps denormals out).
const RES_FLUSH: f32 = 1e-15;
/// Near-end speech: the error power exceeds this many times the expected residual echo
/// plus background noise (the tracker's minimum is about half the mean, hence its weight).
const NEAR_END_RATIO: f32 = 4.0;
const NEAR_END_NOISE_WEIGHT: f32 = 2.0;
/// Suppression depth regained per block after near-end speech (full after 50 ms).
const RES_DEPTH_RECOVERY: f32 = 0.2;
/// Lifter length of the minimum-phase design, as a share of `N`.
const RES_LIFTER_SHARE: usize = 4;

// ---- ERLE meter -----------------------------------------------------------------------------

/// The ERLE meter's window: this much far-end activity, ms, summed as one ratio.
const ERLE_WINDOW_MS: u32 = 1000;

/// Settings of an [`EchoCanceller`] (control plane).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AecConfig {
    /// Sample rate of both directions, Hz: 8000, 16000 or 48000.
    pub sample_rate_hz: u32,
    /// Longest echo path (delay plus dispersion) covered, ms, [`MIN_TAIL_MS`] to
    /// [`MAX_TAIL_MS`]; rounded up to whole blocks (10 or 20 ms). Cost and state grow with
    /// it.
    pub tail_ms: u32,
    /// Run the residual echo suppressor (spectral post-filter) after the linear canceller.
    /// Can be changed later with [`EchoCanceller::set_residual_suppression`].
    pub residual_suppression: bool,
}

impl Default for AecConfig {
    /// 8 kHz, 128 ms tail (line echo behind long-haul hybrids and most terminals' acoustic
    /// echo), residual suppression on.
    fn default() -> Self {
        AecConfig {
            sample_rate_hz: 8000,
            tail_ms: 128,
            residual_suppression: true,
        }
    }
}

/// Real FFTs of `2N` points: the plan every noise suppressor at the rate shares (a complex
/// FFT of `N` points and a split that vectorises, see [`NsPlan`]); the work space is in
/// [`FftWork`].
#[derive(Clone)]
struct Fft {
    plan: Arc<NsPlan>,
}

/// The transforms' work space.
#[derive(Clone)]
struct FftWork {
    /// The complex transform's values (`N`).
    z: Box<[Complex32]>,
    /// The periodogram |X|² of the last forward transform (`N + 1`).
    power: Box<[f32]>,
}

impl FftWork {
    /// Work space for the transforms of blocks of `n` samples. Control plane.
    fn new(n: usize) -> Self {
        FftWork {
            z: vec![Complex32::new(0.0, 0.0); n].into_boxed_slice(),
            power: vec![0.0; n + 1].into_boxed_slice(),
        }
    }
}

impl Fft {
    /// The transforms of blocks of `block` samples, windows of `2·block` (`None` for a
    /// length without a plan): the noise suppressor's 20 ms analyses for blocks of 80, 160
    /// and 480 samples (10 ms at 8, 16, 48 kHz; 160 is also 20 ms at 8 kHz), and 320 and
    /// 960 (20 ms at 16 and 48 kHz). Control plane.
    fn new(block: usize) -> Option<Self> {
        Some(Fft {
            plan: plan_for_block(block)?,
        })
    }

    /// Unnormalised forward transform of `input` (`2N`) into `output` (`N + 1`); the
    /// periodogram is left in `work.power`.
    fn forward(&self, work: &mut FftWork, input: &[f32], output: &mut [Complex32]) {
        let n = work.z.len();
        self.plan.forward_real_samples(
            &input[..2 * n],
            &mut output[..n + 1],
            &mut work.z,
            &mut work.power,
        );
    }

    /// Unnormalised inverse transform (the result is `2N` times the signal) of `input`
    /// (`N + 1`; the imaginary parts of DC and Nyquist are ignored) into `output` (`2N`);
    /// `unity` is `N + 1` gains of 1 ([`Shared::unity`]).
    fn inverse(&self, work: &mut FftWork, input: &[Complex32], output: &mut [f32], unity: &[f32]) {
        let n = work.z.len();
        self.plan
            .inverse_real_samples(&input[..n + 1], unity, &mut work.z, &mut output[..2 * n]);
    }
}

/// A canceller's work space for one block: what it computes and uses within the block and
/// keeps nothing of. Sized for one block length (80, 160, 320, 480 or 960 samples; 160 serves
/// 10 ms blocks at 16 kHz and 20 ms ones at 8 kHz alike). A lane's DSP stage owns one per
/// block length (in [`super::DspScratch`]) for all its sessions' cancellers, so it stays in the cache
/// while each canceller's state is fetched once; a canceller built on its own
/// ([`EchoCanceller::new`]) owns one.
#[derive(Clone)]
pub(crate) struct AecWork {
    /// Samples per block (`N`).
    block: usize,
    fft: FftWork,
    // Scratch: 2N real, N + 1 complex.
    time: Box<[f32]>,
    spec: Box<[Complex32]>,
    /// The background's echo estimate spectrum (the foreground's is in `spec`).
    spec_bg: Box<[Complex32]>,
    // This block's signals (full scale = 1).
    capture: Box<[f32]>,
    echo_fg: Box<[f32]>,
    err_fg: Box<[f32]>,
    echo_bg: Box<[f32]>,
    err_bg: Box<[f32]>,
    /// Spectrum of the zero-padded background error, then the scaled gradient input.
    err_spectrum: Box<[Complex32]>,
    /// Per-bin normaliser `Σ_q prop_q·|X_q|²`: the reference power seen by the filter,
    /// weighted like the step; computed by [`filter`] as it reads the reference history.
    ref_norm: Box<[f32]>,
    /// Per-bin step of the next update.
    step: Box<[f32]>,
    /// Spectrum of the linear output window, filtered in place.
    out_spectrum: Box<[Complex32]>,
    /// This block's Hann-windowed output and echo-estimate powers per bin.
    res_hann: Box<[f32]>,
    /// The residual suppressor's gain per bin.
    res_gain: Box<[f32]>,
    /// The post-filtered block.
    post: Box<[f32]>,
}

impl AecWork {
    /// Work space for cancellers whose blocks are `block` samples long (80, 160, 320, 480
    /// or 960: see [`block_for`]). Control plane.
    pub(crate) fn new(block: usize) -> Option<AecWork> {
        Fft::new(block)?;
        let fft = FftWork::new(block);
        let bins = block + 1;
        let zeros_c = |len: usize| vec![Complex32::new(0.0, 0.0); len].into_boxed_slice();
        let zeros = |len: usize| vec![0.0f32; len].into_boxed_slice();
        Some(AecWork {
            block,
            fft,
            time: zeros(2 * block),
            spec: zeros_c(bins),
            spec_bg: zeros_c(bins),
            capture: zeros(block),
            echo_fg: zeros(block),
            err_fg: zeros(block),
            echo_bg: zeros(block),
            err_bg: zeros(block),
            err_spectrum: zeros_c(bins),
            ref_norm: zeros(bins),
            step: zeros(bins),
            out_spectrum: zeros_c(bins),
            res_hann: zeros(2 * bins),
            res_gain: zeros(bins),
            post: zeros(block),
        })
    }

    /// Heap bytes of this work space.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        let c = std::mem::size_of::<Complex32>();
        let f = std::mem::size_of::<f32>();
        (self.fft.z.len() + self.spec.len() + self.spec_bg.len()) * c
            + (self.err_spectrum.len() + self.out_spectrum.len()) * c
            + (self.fft.power.len() + self.time.len() + self.step.len()) * f
            + self.ref_norm.len() * f
            + (self.res_hann.len() + self.res_gain.len()) * f
            + (self.capture.len() + self.echo_fg.len() + self.err_fg.len()) * f
            + (self.echo_bg.len() + self.err_bg.len() + self.post.len()) * f
    }
}

/// Which echo path model takes the other's coefficients after a block's comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ModelChange {
    /// Neither.
    Keep,
    /// The background is significantly better: the foreground becomes a copy of it.
    BackgroundToForeground,
    /// The background diverged: it restarts from the foreground.
    ForegroundToBackground,
}

/// Frequency-domain echo canceller for one mono session: see the [module docs](self).
#[derive(Clone)]
pub struct EchoCanceller {
    config: AecConfig,
    /// Samples per block (`N`; 10 or 20 ms, [`block_for`]).
    block: usize,
    /// Bins of a `2N` real FFT (`N + 1`).
    bins: usize,
    /// Filter partitions (`P`).
    partitions: usize,
    /// Steps a 20 ms frame issues the next canceller's state in (see
    /// [`TRICKLE_STEPS_PER_BLOCK`]).
    trickle_steps: usize,
    /// 20 ms blocks: the block also issues steps between the transforms of its update
    /// and its residual suppressor ([`FINE_TRICKLE_STEPS`]).
    fine: bool,
    fft: Fft,
    /// This canceller's own work space, when built on its own ([`EchoCanceller::new`]);
    /// `None` when a lane's DSP stage lends one ([`EchoCanceller::process_with`]).
    own_work: Option<Box<AecWork>>,

    // Reference history.
    /// Previous reference block (first half of the overlap-save window).
    ref_prev: Box<[f32]>,
    /// Spectra of the last `P` reference windows (a ring, `ref_head` the newest).
    ref_spectra: Box<[Complex32]>,
    ref_head: usize,

    // Two echo path models: P partitions of N + 1 bins, partition 0 = no delay.
    background: Box<[Complex32]>,
    foreground: Box<[Complex32]>,
    /// Step weight per partition (sums to 1).
    prop: Box<[f32]>,
    /// Squared norm per background partition, measured during the last update.
    partition_norm: Box<[f32]>,
    /// Next partition whose gradient constraint is enforced.
    constrain_next: usize,

    // Step-size statistics.
    /// Smoothed per-bin error and echo-estimate powers.
    err_power: Box<[f32]>,
    echo_power: Box<[f32]>,
    /// Per-bin error and echo-estimate powers averaged over echo-dominated blocks.
    leak_err: Box<[f32]>,
    leak_echo: Box<[f32]>,
    /// Slow per-band means of error and echo-estimate power (leakage regression).
    band_err_mean: Box<[f32]>,
    band_echo_mean: Box<[f32]>,
    /// Recursive covariance of error and echo-estimate band powers, variance of the latter.
    leak_cov: f32,
    leak_var: f32,
    /// Regression leakage (residual echo power over echo-estimate power).
    leak: f32,
    /// The fixed-step start-up phase is over.
    adapted: bool,
    /// Accumulated fixed step during start-up.
    initial_steps: f32,
    /// Adaptation frozen (tests measure a frozen copy of the echo path model).
    frozen: bool,
    /// Near-end detector: foreground error and echo-estimate energies averaged over
    /// echo-dominated blocks, and the tracked floor of the foreground error energy.
    talk_err: f32,
    talk_echo: f32,
    talk_err_smooth: f32,
    talk_floor: f32,
    /// Geigel detector: peak |reference| per block over the tail (a ring), and the upper
    /// envelope of the capture-to-reference peak ratio in echo-dominated blocks.
    ref_peaks: Box<[f32]>,
    ref_peak_pos: usize,
    echo_peak_ratio: f32,
    /// The block holds near-end speech (set in `process_block`, read by the suppressor).
    near_end_level: bool,

    // Two-path comparison statistics.
    diff_fast: f32,
    diff_slow: f32,
    var_fast: f32,
    var_slow: f32,

    // Residual echo suppressor.
    suppress: bool,
    /// Previous linear output and echo-estimate blocks (first halves of the windows).
    out_prev: Box<[f32]>,
    echo_prev: Box<[f32]>,
    res_err_power: Box<[f32]>,
    res_echo_power: Box<[f32]>,
    /// Output and echo-estimate power averaged over echo-dominated blocks.
    res_leak_err: Box<[f32]>,
    res_leak_echo: Box<[f32]>,
    /// Residual echo estimate per bin.
    res_residual: Box<[f32]>,
    /// Background noise tracker per bin (comfort floor, near-end detection).
    res_noise: Box<[f32]>,
    /// Constants every canceller at this rate shares.
    shared: Arc<Shared>,
    /// Share of the suppression applied (0 during near-end speech, 1 otherwise).
    res_depth: f32,

    // ERLE meter.
    /// Reference power, held over the tail (echo may still be arriving).
    ref_recent: f32,
    ref_recent_decay: f32,
    /// Capture and output energy summed over the blocks of the current window in which
    /// echo could be present, and how many such blocks it holds so far.
    erle_capture: f32,
    erle_output: f32,
    erle_blocks: u32,
    /// Blocks per window ([`ERLE_WINDOW_MS`]).
    erle_window: u32,
    /// The last whole window's ERLE, dB (NaN before the first).
    erle_last: f32,
}

impl fmt::Debug for EchoCanceller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EchoCanceller")
            .field("config", &self.config())
            .field("partitions", &self.partitions)
            .field("adapted", &self.adapted)
            .field("erle_db", &self.erle_db())
            .finish_non_exhaustive()
    }
}

impl EchoCanceller {
    /// Starts loading this canceller's buffers into cache (a hint: reads only their
    /// addresses, none of their contents), for a caller walking many sessions. It asks for
    /// all of them (about 30 KB) at once, more than a core keeps in flight: a lane instead
    /// queues them on a [`Trickle`] that the canceller before this one issues in steps
    /// (PERF.md, session 17). Called on the real-time thread.
    #[inline]
    pub fn prefetch(&self) {
        use crate::runtime::prefetch;
        prefetch::slice_l2(&self.ref_prev);
        prefetch::slice_l2(&self.ref_spectra);
        prefetch::slice_l2(&self.background);
        prefetch::slice_l2(&self.foreground);
        prefetch::slice_l2(&self.prop);
        prefetch::slice_l2(&self.partition_norm);
        prefetch::slice_l2(&self.err_power);
        prefetch::slice_l2(&self.echo_power);
        prefetch::slice_l2(&self.leak_err);
        prefetch::slice_l2(&self.leak_echo);
        prefetch::slice_l2(&self.band_err_mean);
        prefetch::slice_l2(&self.band_echo_mean);
        prefetch::slice_l2(&self.ref_peaks);
        prefetch::slice_l2(&self.out_prev);
        prefetch::slice_l2(&self.echo_prev);
        prefetch::slice_l2(&self.res_err_power);
        prefetch::slice_l2(&self.res_echo_power);
        prefetch::slice_l2(&self.res_leak_err);
        prefetch::slice_l2(&self.res_leak_echo);
        prefetch::slice_l2(&self.res_residual);
        prefetch::slice_l2(&self.res_noise);
    }

    /// Queues this canceller's buffers on `trickle` in the order a block first touches
    /// them, for the canceller processed before it to issue as its own blocks go on
    /// ([`Trickle`]). Reads only the buffers' addresses. Called on the real-time thread.
    #[inline]
    pub(crate) fn queue_prefetch(&self, trickle: &mut Trickle) {
        trickle.queue(&self.ref_prev);
        trickle.queue(&self.ref_spectra);
        trickle.queue(&self.prop);
        trickle.queue(&self.foreground);
        trickle.queue(&self.background);
        trickle.queue(&self.ref_peaks);
        trickle.queue(&self.partition_norm);
        trickle.queue(&self.err_power);
        trickle.queue(&self.echo_power);
        trickle.queue(&self.leak_err);
        trickle.queue(&self.leak_echo);
        trickle.queue(&self.band_err_mean);
        trickle.queue(&self.band_echo_mean);
        trickle.queue(&self.out_prev);
        trickle.queue(&self.echo_prev);
        trickle.queue(&self.res_err_power);
        trickle.queue(&self.res_echo_power);
        trickle.queue(&self.res_leak_err);
        trickle.queue(&self.res_leak_echo);
        trickle.queue(&self.res_residual);
        trickle.queue(&self.res_noise);
    }

    /// Builds a canceller for `config` that works in 10 ms blocks, so it takes frames of
    /// any whole number of 10 ms. Control plane: validates the rate and the tail
    /// ([`MIN_TAIL_MS`] to [`MAX_TAIL_MS`]) and allocates every buffer and FFT plan.
    pub fn new(config: AecConfig) -> Result<Self, DspConfigError> {
        Self::with_frame(config, block_len(config.sample_rate_hz))
    }

    /// Builds a canceller for `config` that will be fed frames of `frame_samples` (or
    /// whole multiples of them), in the longest blocks those frames allow
    /// ([`block_for`]): 20 ms when the frames are whole 20 ms (at 48 kHz with tails over
    /// [`MIN_TAIL_MS_20MS_BLOCKS_48K`] only), which halves the filter's work per frame;
    /// 10 ms otherwise. Frames that are not whole blocks are
    /// ignored, as in [`Self::process`]. Control plane, like [`Self::new`].
    pub fn with_frame(config: AecConfig, frame_samples: usize) -> Result<Self, DspConfigError> {
        let block = block_for(config.sample_rate_hz, config.tail_ms, frame_samples);
        Self::with_block(config, block)
    }

    /// Samples per block (10 or 20 ms: [`block_for`]).
    pub fn block_samples(&self) -> usize {
        self.block
    }

    /// [`Self::with_frame`] without work space of its own, for a lane's DSP stage, which
    /// lends its own to [`Self::process_with`]. Control plane.
    pub(crate) fn for_lane(
        config: AecConfig,
        frame_samples: usize,
    ) -> Result<Self, DspConfigError> {
        let block = block_for(config.sample_rate_hz, config.tail_ms, frame_samples);
        Self::build(config, block)
    }

    /// A canceller in blocks of `block` samples (10 or 20 ms at the rate) with its own
    /// work space: [`Self::with_frame`]'s, and tests' of the block length [`block_for`]
    /// does not pick. Control plane.
    fn with_block(config: AecConfig, block: usize) -> Result<Self, DspConfigError> {
        let mut aec = Self::build(config, block)?;
        aec.own_work = Some(Box::new(AecWork::new(block).ok_or(DspConfigError {
            component: COMPONENT,
            reason: "no FFT plan at this rate",
        })?));
        Ok(aec)
    }

    /// [`Self::for_lane`] in blocks of `block` samples (10 or 20 ms at the rate).
    fn build(config: AecConfig, block: usize) -> Result<Self, DspConfigError> {
        check_rate(COMPONENT, config.sample_rate_hz)?;
        // The CPU check the block kernels make, done here first (control plane).
        crate::processing::simd::warm_up();
        if !(MIN_TAIL_MS..=MAX_TAIL_MS).contains(&config.tail_ms) {
            return Err(DspConfigError {
                component: COMPONENT,
                reason: "tail must be 64 to 128 ms",
            });
        }
        // 10 or 20.
        let block_ms = (block * 1000) as u32 / config.sample_rate_hz;
        let bins = block + 1;
        let partitions = config.tail_ms.div_ceil(block_ms) as usize;
        let fft = Fft::new(block).ok_or(DspConfigError {
            component: COMPONENT,
            reason: "no FFT plan at this rate",
        })?;
        let bands = bins.div_ceil(bins.div_ceil(LEAK_BANDS));
        let zeros_c = |len: usize| vec![Complex32::new(0.0, 0.0); len].into_boxed_slice();
        let zeros = |len: usize| vec![0.0f32; len].into_boxed_slice();
        let mut aec = EchoCanceller {
            config,
            block,
            bins,
            partitions,
            trickle_steps: if block_ms == 20 {
                TRICKLE_STEPS_PER_BLOCK + FINE_TRICKLE_STEPS + partitions
            } else {
                2 * (TRICKLE_STEPS_PER_BLOCK + partitions)
            },
            fine: block_ms == 20,
            fft,
            own_work: None,
            ref_prev: zeros(block),
            ref_spectra: zeros_c(partitions * bins),
            ref_head: 0,
            background: zeros_c(partitions * bins),
            foreground: zeros_c(partitions * bins),
            prop: zeros(partitions),
            partition_norm: zeros(partitions),
            constrain_next: 0,
            err_power: zeros(bins),
            echo_power: zeros(bins),
            leak_err: zeros(bins),
            leak_echo: zeros(bins),
            band_err_mean: zeros(bands),
            band_echo_mean: zeros(bands),
            leak_cov: 0.0,
            leak_var: 0.0,
            leak: 1.0,
            adapted: false,
            initial_steps: 0.0,
            frozen: false,
            talk_err: 0.0,
            talk_echo: 0.0,
            talk_err_smooth: 0.0,
            talk_floor: 0.0,
            ref_peaks: zeros(partitions + 1),
            ref_peak_pos: 0,
            echo_peak_ratio: 1.0,
            near_end_level: false,
            diff_fast: 0.0,
            diff_slow: 0.0,
            var_fast: 0.0,
            var_slow: 0.0,
            suppress: config.residual_suppression,
            out_prev: zeros(block),
            echo_prev: zeros(block),
            res_err_power: zeros(bins),
            res_echo_power: zeros(bins),
            res_leak_err: zeros(bins),
            res_leak_echo: zeros(bins),
            res_residual: zeros(bins),
            res_noise: zeros(bins),
            shared: Shared::for_block(block, block_ms).ok_or(DspConfigError {
                component: COMPONENT,
                reason: "no tables at this rate",
            })?,
            res_depth: 1.0,
            ref_recent: 0.0,
            // Hold the reference power over the tail, falling 30 dB across it.
            ref_recent_decay: 10f32.powf(-3.0 / partitions as f32),
            erle_capture: 0.0,
            erle_output: 0.0,
            erle_blocks: 0,
            erle_window: ERLE_WINDOW_MS / block_ms,
            erle_last: f32::NAN,
        };
        aec.reset();
        Ok(aec)
    }

    /// The configuration in force (with the current residual suppression setting).
    ///
    /// Called on the real-time thread; never allocates.
    pub fn config(&self) -> AecConfig {
        AecConfig {
            residual_suppression: self.suppress,
            ..self.config
        }
    }

    /// Forgets the echo path and every statistic, as if just built (a new call on the same
    /// session, or an echo path that changed completely).
    ///
    /// Called on the real-time thread; never allocates.
    pub fn reset(&mut self) {
        let zero = Complex32::new(0.0, 0.0);
        self.ref_prev.fill(0.0);
        self.ref_spectra.fill(zero);
        self.ref_head = 0;
        self.background.fill(zero);
        self.foreground.fill(zero);
        self.prop.fill(1.0 / self.partitions as f32);
        self.partition_norm.fill(0.0);
        self.constrain_next = 0;
        self.err_power.fill(0.0);
        self.echo_power.fill(0.0);
        self.leak_err.fill(0.0);
        self.leak_echo.fill(0.0);
        self.band_err_mean.fill(0.0);
        self.band_echo_mean.fill(0.0);
        self.leak_cov = 0.0;
        self.leak_var = 0.0;
        self.leak = 1.0;
        self.adapted = false;
        self.initial_steps = 0.0;
        self.talk_err = 0.0;
        self.talk_echo = 0.0;
        self.talk_err_smooth = 0.0;
        self.talk_floor = f32::MAX;
        self.ref_peaks.fill(0.0);
        self.ref_peak_pos = 0;
        self.echo_peak_ratio = 1.0;
        self.near_end_level = false;
        self.reset_two_path_stats();
        self.out_prev.fill(0.0);
        self.echo_prev.fill(0.0);
        self.res_err_power.fill(0.0);
        self.res_echo_power.fill(0.0);
        self.res_leak_err.fill(0.0);
        self.res_leak_echo.fill(0.0);
        self.res_residual.fill(0.0);
        // Start high so the tracker settles on the first quiet blocks.
        self.res_noise.fill(f32::MAX);
        self.res_depth = 1.0;
        self.ref_recent = 0.0;
        self.erle_capture = 0.0;
        self.erle_output = 0.0;
        self.erle_blocks = 0;
        self.erle_last = f32::NAN;
    }

    /// Turns the residual echo suppressor (spectral post-filter) on or off; the linear
    /// canceller runs either way.
    ///
    /// Called on the real-time thread; never allocates.
    pub fn set_residual_suppression(&mut self, enabled: bool) {
        self.suppress = enabled;
    }

    /// Echo return loss enhancement, dB: capture energy over output energy, summed over
    /// the last whole second of blocks in which the reference was active (0 before the
    /// first). A window rather than a running average of the two powers: that one's
    /// output power kept the loud blocks of convergence for many time constants, so
    /// the reading climbed about 4 dB a second towards cancellation that was already there
    /// (26.6 dB after 6 s on a line where the echo was 66 dB down). Near-end speech is in
    /// capture and output alike, so it reads low during double talk.
    ///
    /// Called on the real-time thread; never allocates.
    pub fn erle_db(&self) -> f32 {
        self.erle_measured_db().unwrap_or(0.0)
    }

    /// [`Self::erle_db`], or `None` before the first whole window (a new canceller, or
    /// one whose far end has not yet spoken for a second): what a session reports, so
    /// that a canceller still waiting for far-end speech does not read as one that
    /// cancels nothing.
    ///
    /// Called on the real-time thread; never allocates.
    pub fn erle_measured_db(&self) -> Option<f32> {
        Some(self.erle_last).filter(|v| !v.is_nan())
    }

    /// Removes the echo of `reference` (the frame sent to the peer this tick) from `capture`
    /// (the frame received from it this tick), in place.
    ///
    /// Both frames must have the same length, a whole number of blocks (10 ms from
    /// [`Self::new`]; see [`Self::block_samples`]); otherwise the call is ignored: `capture`
    /// is left untouched and no state changes.
    ///
    /// Called on the real-time thread; never allocates.
    pub fn process(&mut self, capture: &mut [i16], reference: &[i16]) {
        // A canceller built for a lane has no work space of its own: the lane calls
        // `process_with`.
        let Some(mut work) = self.own_work.take() else {
            return;
        };
        self.process_with(capture, reference, &mut work, &mut Trickle::new());
        self.own_work = Some(work);
    }

    /// The work space for this canceller's block length among `works` (one per block
    /// length, as a lane's DSP stage keeps them). Called on the real-time thread.
    pub(crate) fn work_in<'a>(&self, works: &'a mut [AecWork]) -> Option<&'a mut AecWork> {
        works.iter_mut().find(|w| w.block == self.block)
    }

    /// [`Self::process`] with work space lent by the caller (a lane's DSP stage, one for
    /// all its cancellers with this block length). Work space for another block length is
    /// a caller bug: the call is ignored, as for frames of the wrong length.
    ///
    /// `trickle` holds the state of the canceller the lane processes next, which this one
    /// issues for prefetch a few lines at a time as its blocks go on
    /// ([`Self::queue_prefetch`]).
    ///
    /// Called on the real-time thread; never allocates.
    pub(crate) fn process_with(
        &mut self,
        capture: &mut [i16],
        reference: &[i16],
        work: &mut AecWork,
        trickle: &mut Trickle,
    ) {
        let n = self.block;
        if work.block != n || capture.len() != reference.len() || !capture.len().is_multiple_of(n) {
            return;
        }
        for (cap, refr) in capture.chunks_exact_mut(n).zip(reference.chunks_exact(n)) {
            self.process_block(work, trickle, cap, refr);
        }
    }

    /// One of a 20 ms block's [`FINE_TRICKLE_STEPS`].
    #[inline(always)]
    fn fine_step(&self, t: &mut Trickle) {
        if self.fine {
            t.step_share(self.trickle_steps);
        }
    }

    fn reset_two_path_stats(&mut self) {
        self.diff_fast = 0.0;
        self.diff_slow = 0.0;
        self.var_fast = 0.0;
        self.var_slow = 0.0;
    }

    /// One block; `capture.len() == reference.len() == self.block`.
    fn process_block(
        &mut self,
        w: &mut AecWork,
        t: &mut Trickle,
        capture: &mut [i16],
        reference: &[i16],
    ) {
        crate::processing::simd::avx512_avx2_or_portable!(
            self.process_block_avx512(w, t, capture, reference),
            self.process_block_avx2(w, t, capture, reference),
            self.process_block_portable(w, t, capture, reference)
        )
    }

    /// [`Self::process_block`] compiled with AVX-512 (see [`crate::processing::simd`]).
    ///
    /// # Safety
    /// The CPU must run AVX-512 F/BW/DQ/VL and AVX2 ([`crate::processing::simd::avx512`]).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,avx512f,avx512bw,avx512dq,avx512vl")]
    unsafe fn process_block_avx512(
        &mut self,
        w: &mut AecWork,
        t: &mut Trickle,
        capture: &mut [i16],
        reference: &[i16],
    ) {
        self.process_block_portable(w, t, capture, reference)
    }

    /// [`Self::process_block`] compiled with AVX2 (see [`crate::processing::simd`]).
    ///
    /// # Safety
    /// The CPU must run AVX2 ([`crate::processing::simd::avx2`]).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn process_block_avx2(
        &mut self,
        w: &mut AecWork,
        t: &mut Trickle,
        capture: &mut [i16],
        reference: &[i16],
    ) {
        self.process_block_portable(w, t, capture, reference)
    }

    /// The body of [`Self::process_block`], built into each of its three versions.
    #[inline(always)]
    fn process_block_portable(
        &mut self,
        w: &mut AecWork,
        t: &mut Trickle,
        capture: &mut [i16],
        reference: &[i16],
    ) {
        let n = self.block;
        let ref_energy = self.push_reference(w, reference);
        t.step_share(self.trickle_steps);
        for (c, &s) in w.capture.iter_mut().zip(capture.iter()) {
            *c = f32::from(s) * SAMPLE_TO_FLOAT;
        }

        // --- Both echo path models filter the reference history, which also gives the
        // step's normaliser Σ_q prop_q·|X_q|²: with it an unconstrained update moves the
        // echo estimate of every bin by exactly step·error, whatever the reference
        // spectrum. The powers are recomputed from the spectra as the filter reads them,
        // rather than kept (P·(N + 1) more floats to bring from memory every block).
        filter(
            [&self.foreground, &self.background],
            &self.ref_spectra,
            self.ref_head,
            self.bins,
            &self.prop,
            [&mut w.spec, &mut w.spec_bg],
            &mut w.ref_norm,
        );
        self.echo_and_error(w, true);
        t.step_share(self.trickle_steps);
        self.echo_and_error(w, false);
        t.step_share(self.trickle_steps);

        // --- Near-end speech: the foreground error holds much more than the residual echo
        // and noise seen in single talk.
        let fg_err = energy(&w.err_fg);
        let fg_echo = energy(&w.echo_fg);
        let rates = self.shared.rates;
        self.talk_err_smooth += rates.talk_floor_smoothing * (fg_err - self.talk_err_smooth);
        self.talk_floor = if self.talk_err_smooth < self.talk_floor {
            self.talk_err_smooth
        } else {
            self.talk_floor * rates.talk_floor_rise
        };
        let talk_ratio = if self.talk_echo > TINY {
            self.talk_err / self.talk_echo
        } else {
            1.0
        };
        // Geigel (G.168 Annex): the capture peak exceeds what the echo path passes of the
        // reference peaks over the tail, with the path's peak gain learnt in single talk
        // instead of assumed (6 dB ERL), so that a filter still learning new spectral content
        // (a large error, but no louder than echo can be) is not taken for near-end speech.
        let ref_peak = peak(reference);
        if let Some(slot) = self.ref_peaks.get_mut(self.ref_peak_pos) {
            *slot = ref_peak;
        }
        self.ref_peak_pos = (self.ref_peak_pos + 1) % self.ref_peaks.len();
        let ref_peak_tail = self.ref_peaks.iter().copied().fold(0.0f32, f32::max);
        let capture_peak = peak(capture);
        self.near_end_level = capture_peak > GEIGEL_MARGIN * self.echo_peak_ratio * ref_peak_tail;
        let near_end = self.adapted
            && fg_err
                > NEAR_END_RATIO * (talk_ratio * fg_echo + NEAR_END_NOISE_WEIGHT * self.talk_floor);

        // --- Which model drives the output; `err_fg`/`echo_fg` become this block's.
        let capture_energy = energy(&w.capture);
        let Some(change) = self.choose_model(w, capture_energy, near_end) else {
            // Cannot happen with bounded input and the regularised step, but a corrupted
            // state must not stay corrupted: start over and leave this block untouched.
            self.reset();
            return;
        };

        // --- Is the capture explained by the echo estimate (far-end single talk)?
        let cross = dot(&w.capture, &w.echo_fg);
        let echo_energy = energy(&w.echo_fg);
        let echo_dominated = !near_end
            && echo_energy > TINY
            && cross * cross > ECHO_DOMINATED_RHO2 * capture_energy * echo_energy;
        if echo_dominated {
            self.talk_err += rates.leak_ratio * (fg_err - self.talk_err);
            self.talk_echo += rates.leak_ratio * (fg_echo - self.talk_echo);
            if ref_peak_tail > TINY {
                let ratio = capture_peak / ref_peak_tail;
                self.echo_peak_ratio = if ratio > self.echo_peak_ratio {
                    ratio
                } else {
                    self.echo_peak_ratio + rates.geigel_release * (ratio - self.echo_peak_ratio)
                };
            }
        }

        // --- Adapt the background model.
        self.update_step(w, t, ref_energy, echo_dominated);
        t.step_share(self.trickle_steps);
        if !self.frozen {
            self.adapt(w, t, change);
        }
        t.step_share(self.trickle_steps);

        // --- Residual echo suppression and output.
        let post_filtered = if self.suppress {
            self.suppress_residual(w, t, echo_dominated)
        } else {
            // The suppressor's three steps, so the next canceller's state is issued whole.
            for _ in 0..3 {
                self.fine_step(t);
            }
            false
        };
        t.step_share(self.trickle_steps);
        let output: &[f32] = if post_filtered { &w.post } else { &w.err_fg };
        let output_energy = energy(output);
        for (c, &v) in capture.iter_mut().zip(output.iter()) {
            *c = round_to_i16(v * 32768.0);
        }
        self.out_prev.copy_from_slice(&w.err_fg);
        self.echo_prev.copy_from_slice(&w.echo_fg);

        // --- ERLE meter: only while echo can be present.
        self.ref_recent = (self.ref_recent * self.ref_recent_decay).max(ref_energy / n as f32);
        if self.ref_recent > REF_ACTIVE_POWER {
            self.erle_capture += capture_energy;
            self.erle_output += output_energy;
            self.erle_blocks += 1;
            if self.erle_blocks >= self.erle_window {
                self.erle_last =
                    10.0 * ((self.erle_capture + 1e-12) / (self.erle_output + 1e-12)).log10();
                self.erle_capture = 0.0;
                self.erle_output = 0.0;
                self.erle_blocks = 0;
            }
        }
    }

    /// Moves the reference history on by one block and refreshes the normaliser; returns
    /// the block's energy.
    #[inline(always)]
    fn push_reference(&mut self, w: &mut AecWork, reference: &[i16]) -> f32 {
        let n = self.block;
        let bins = self.bins;
        let p = self.partitions;
        let (older, newer) = w.time.split_at_mut(n);
        older.copy_from_slice(&self.ref_prev);
        for ((t, prev), &s) in newer
            .iter_mut()
            .zip(self.ref_prev.iter_mut())
            .zip(reference.iter())
        {
            let v = f32::from(s) * SAMPLE_TO_FLOAT;
            *t = v;
            *prev = v;
        }
        let ref_energy = energy(&self.ref_prev);
        self.ref_head = (self.ref_head + p - 1) % p;
        let head = self.ref_head;
        let newest = head * bins..(head + 1) * bins;
        self.fft
            .forward(&mut w.fft, &w.time, &mut self.ref_spectra[newest]);
        ref_energy
    }

    /// Turns the echo estimate spectrum in `spec` (`spec_bg`) into the foreground's (`fg`)
    /// or background's echo estimate and error for this block.
    #[inline(always)]
    fn echo_and_error(&mut self, w: &mut AecWork, fg: bool) {
        let n = self.block;
        let inv_fft_len = 1.0 / (2 * n) as f32;
        let spec = if fg { &w.spec } else { &w.spec_bg };
        self.fft
            .inverse(&mut w.fft, spec, &mut w.time, &self.shared.unity);
        let (echo, err) = if fg {
            (&mut w.echo_fg, &mut w.err_fg)
        } else {
            (&mut w.echo_bg, &mut w.err_bg)
        };
        for (((y, e), &d), &t) in echo
            .iter_mut()
            .zip(err.iter_mut())
            .zip(w.capture.iter())
            .zip(w.time[n..].iter())
        {
            *y = t * inv_fft_len;
            *e = d - *y;
        }
    }

    /// Two echo path models (Ochiai 1977): the background replaces the foreground when it
    /// is significantly better, is reset to it when significantly worse. Leaves the output
    /// in `err_fg`/`echo_fg` and returns which model takes the other's coefficients, which
    /// [`Self::adapt`] carries out as it updates the background; `None` if the energies
    /// are not finite.
    #[inline(always)]
    fn choose_model(
        &mut self,
        w: &mut AecWork,
        capture_energy: f32,
        near_end: bool,
    ) -> Option<ModelChange> {
        let fg_energy = energy(&w.err_fg);
        let bg_energy = energy(&w.err_bg);
        let model_diff = diff_energy(&w.echo_fg, &w.echo_bg);
        if !(fg_energy.is_finite() && bg_energy.is_finite() && model_diff.is_finite()) {
            return None;
        }
        if self.frozen {
            return Some(ModelChange::Keep);
        }
        // The errors share the near-end signal and differ by the model difference, so
        // fg − bg has a variance of about (error energy)·(model difference energy); a change
        // of model must beat that noise.
        let diff = fg_energy - bg_energy;
        let var = fg_energy * model_diff;
        let (fast, slow) = (self.shared.rates.diff_fast, self.shared.rates.diff_slow);
        self.diff_fast = fast * self.diff_fast + (1.0 - fast) * diff;
        self.diff_slow = slow * self.diff_slow + (1.0 - slow) * diff;
        self.var_fast = fast * fast * self.var_fast + (1.0 - fast).powi(2) * var;
        self.var_slow = slow * slow * self.var_slow + (1.0 - slow).powi(2) * var;
        let significant = |d: f32, v: f32, k: f32| d * d > k * v;
        let bg_better = (diff > 0.0 && significant(diff, var, COPY_SIGNIFICANCE))
            || (self.diff_fast > 0.0
                && significant(self.diff_fast, self.var_fast, COPY_SIGNIFICANCE_SMOOTHED))
            || (self.diff_slow > 0.0
                && significant(self.diff_slow, self.var_slow, COPY_SIGNIFICANCE_SMOOTHED));
        let bg_worse = (diff < 0.0 && significant(diff, var, RESET_SIGNIFICANCE))
            || (self.diff_fast < 0.0
                && significant(self.diff_fast, self.var_fast, RESET_SIGNIFICANCE))
            || (self.diff_slow < 0.0
                && significant(self.diff_slow, self.var_slow, RESET_SIGNIFICANCE));
        // During near-end speech only a background that is far better may take over (an
        // echo path change looks like near-end speech to the detector).
        let bg_cancels = bg_energy < COPY_MAX_ERROR_SHARE * capture_energy
            && (!near_end || bg_energy < COPY_DURING_NEAR_END_SHARE * fg_energy);
        if bg_better && bg_cancels {
            self.reset_two_path_stats();
            // Cross-fade from the old model's output to the new one's over the block, so
            // the switch does not click.
            let ramp = 1.0 / self.block as f32;
            for (i, ((ef, yf), (&eb, &yb))) in w
                .err_fg
                .iter_mut()
                .zip(w.echo_fg.iter_mut())
                .zip(w.err_bg.iter().zip(w.echo_bg.iter()))
                .enumerate()
            {
                let w = (i + 1) as f32 * ramp;
                *ef += w * (eb - *ef);
                *yf += w * (yb - *yf);
            }
            Some(ModelChange::BackgroundToForeground)
        } else if bg_worse {
            // The background diverged (double talk got through): back to the last good
            // model, and adapt from its error.
            self.reset_two_path_stats();
            w.err_bg.copy_from_slice(&w.err_fg);
            w.echo_bg.copy_from_slice(&w.echo_fg);
            Some(ModelChange::ForegroundToBackground)
        } else {
            Some(ModelChange::Keep)
        }
    }

    /// Computes `step` for the background update from this block's background error and
    /// echo estimate, leaving the error spectrum in `err_spectrum`.
    #[inline(always)]
    fn update_step(
        &mut self,
        w: &mut AecWork,
        t: &mut Trickle,
        ref_energy: f32,
        echo_dominated: bool,
    ) {
        let n = self.block;
        let bins = self.bins;
        let rates = self.shared.rates;
        // Error and echo estimate, zero-padded to the FFT length: the error spectrum is the
        // gradient input, and both give the powers the step comes from.
        let (zeros, tail) = w.time.split_at_mut(n);
        zeros.fill(0.0);
        tail.copy_from_slice(&w.err_bg);
        self.fft.forward(&mut w.fft, &w.time, &mut w.err_spectrum);
        self.fine_step(t);
        let (zeros, tail) = w.time.split_at_mut(n);
        zeros.fill(0.0);
        tail.copy_from_slice(&w.echo_bg);
        self.fft.forward(&mut w.fft, &w.time, &mut w.spec);

        let err_energy = energy(&w.err_bg);
        let echo_energy = energy(&w.echo_bg);
        let cross = dot(&w.err_bg, &w.echo_bg);

        // Per-bin powers, the leakage ratios learnt in echo-dominated blocks, and the band
        // powers of the leakage regression (Valin 2007): fluctuations of error and echo
        // estimate power around slow means; uncorrelated near-end speech adds no covariance.
        // Each per-bin step runs over all bins in a loop of its own, which vectorises (the
        // residual suppressor's power buffers, unused until it runs, hold the periodograms).
        let (err_f, echo_f) = w.res_hann.split_at_mut(bins);
        let (err_f, echo_f) = (&mut err_f[..bins], &mut echo_f[..bins]);
        for ((ef, yf), (e, y)) in err_f
            .iter_mut()
            .zip(echo_f.iter_mut())
            .zip(w.err_spectrum.iter().zip(w.spec.iter()))
        {
            *ef = e.norm_sqr();
            *yf = y.norm_sqr();
        }
        for ((ep, yp), (&ef, &yf)) in self
            .err_power
            .iter_mut()
            .zip(self.echo_power.iter_mut())
            .zip(err_f.iter().zip(echo_f.iter()))
        {
            // The error power jumps up at once (double-talk onset must cut the step
            // immediately) and decays smoothly.
            *ep = (*ep + rates.step_power * (ef - *ep)).max(ef);
            *yp += rates.step_power * (yf - *yp);
        }
        if echo_dominated {
            for ((le, ly), (&ef, &yf)) in self
                .leak_err
                .iter_mut()
                .zip(self.leak_echo.iter_mut())
                .zip(err_f.iter().zip(echo_f.iter()))
            {
                *le += rates.leak_ratio * (ef - *le);
                *ly += rates.leak_ratio * (yf - *ly);
            }
        }
        let band_width = bins.div_ceil(LEAK_BANDS);
        let mut cov = 0.0f32;
        let mut var = 0.0f32;
        for ((em, ym), (err_band, echo_band)) in self
            .band_err_mean
            .iter_mut()
            .zip(self.band_echo_mean.iter_mut())
            .zip(err_f.chunks(band_width).zip(echo_f.chunks(band_width)))
        {
            // In bin order, as one running sum each.
            let mut band_err = 0.0f32;
            let mut band_echo = 0.0f32;
            for (&ef, &yf) in err_band.iter().zip(echo_band) {
                band_err += ef;
                band_echo += yf;
            }
            *em += rates.leak_mean * (band_err - *em);
            *ym += rates.leak_mean * (band_echo - *ym);
            let de = band_err - *em;
            let dy = band_echo - *ym;
            cov += de * dy;
            var += dy * dy;
        }
        let rate = rates.leak_rate_max * (echo_energy / (err_energy + TINY)).min(1.0);
        self.leak_cov += rate * (cov - self.leak_cov);
        self.leak_var += rate * (var - self.leak_var);
        if self.leak_var > TINY {
            self.leak = (self.leak_cov / self.leak_var).clamp(LEAK_MIN, 1.0);
        }

        let mean_norm = lane_sum(&w.ref_norm, &w.ref_norm, |v, _| v) / bins as f32;
        let reg = REG_ABS_PER_POINT * (2 * n) as f32 + REG_REL * mean_norm;
        if !self.adapted {
            // Start-up: a fixed step while the reference is active, smaller when the error
            // is louder than the reference (then it is near-end speech rather than echo).
            let mu = if ref_energy > REF_ACTIVE_POWER * n as f32 {
                INITIAL_STEP * (ref_energy / (err_energy + TINY)).min(1.0)
            } else {
                0.0
            };
            self.initial_steps += mu;
            for (s, &nrm) in w.step.iter_mut().zip(w.ref_norm.iter()) {
                *s = mu / (nrm + reg);
            }
            if self.initial_steps > INITIAL_STEPS_PER_PARTITION * self.partitions as f32 {
                self.adapted = true;
            }
            return;
        }
        // Broadband residual-to-error ratio: the regression leakage, at least the squared
        // correlation of error and echo estimate (echo left in the error correlates with
        // the estimate), plus a floor tied to the reference power.
        let rer = ((RER_FROM_REFERENCE * ref_energy + RER_LEAK_GAIN * self.leak * echo_energy)
            / (err_energy + TINY))
            .max(cross * cross / (err_energy * echo_energy + TINY))
            .min(RER_MAX);
        let leak_floor = LEAK_FLOOR_GAIN * self.leak;
        for ((((s, &nrm), &ep), &yp), (&le, &ly)) in w
            .step
            .iter_mut()
            .zip(w.ref_norm.iter())
            .zip(self.err_power.iter())
            .zip(self.echo_power.iter())
            .zip(self.leak_err.iter().zip(self.leak_echo.iter()))
        {
            let ratio = if ly > TINY { (le / ly).min(1.0) } else { 1.0 };
            let residual = (1.0 - RER_BROADBAND_SHARE) * ratio.max(leak_floor) * yp
                + RER_BROADBAND_SHARE * rer * ep;
            // Optimal step = residual echo / error.
            let mu = (residual / (ep + TINY)).min(STEP_MAX);
            *s = mu / (nrm + reg);
        }
    }

    /// Background update `W_q += prop_q · step · conj(X_q) · E`, then the gradient constraint
    /// on one partition and new step weights. `change` (from [`Self::choose_model`]) is
    /// carried out by the same pass instead of a copy of every coefficient first: the
    /// foreground's old coefficients plus the update become the background, or the
    /// background's plus the update are written over the foreground's, whose buffer then
    /// becomes the background while the untouched one becomes the foreground.
    #[inline(always)]
    fn adapt(&mut self, w: &mut AecWork, t: &mut Trickle, change: ModelChange) {
        let bins = self.bins;
        let p = self.partitions;
        let head = self.ref_head;
        for (e, &mu) in w.err_spectrum.iter_mut().zip(w.step.iter()) {
            *e *= mu;
        }
        let (updated, from): (&mut [Complex32], Option<&[Complex32]>) = match change {
            ModelChange::Keep => (&mut self.background, None),
            ModelChange::BackgroundToForeground => (&mut self.foreground, Some(&self.background)),
            ModelChange::ForegroundToBackground => (&mut self.background, Some(&self.foreground)),
        };
        for (q, ((part, &g), norm)) in updated
            .chunks_exact_mut(bins)
            .zip(self.prop.iter())
            .zip(self.partition_norm.iter_mut())
            .enumerate()
        {
            let at = ((head + q) % p) * bins;
            let old = from.map(|f| &f[q * bins..(q + 1) * bins]);
            t.step_share(self.trickle_steps);
            *norm = update_partition(
                part,
                old,
                &self.ref_spectra[at..at + bins],
                &w.err_spectrum,
                g,
            );
        }
        if change == ModelChange::BackgroundToForeground {
            std::mem::swap(&mut self.foreground, &mut self.background);
        }
        self.constrain(w, t, self.constrain_next);
        self.constrain_next = (self.constrain_next + 1) % p;

        // Step weights: uniform plus proportionate (IPNLMS), summing to 1.
        let mut total = 0.0f32;
        for (w, &nrm) in self.prop.iter_mut().zip(self.partition_norm.iter()) {
            *w = nrm.sqrt();
            total += *w;
        }
        let floor = PROP_UNIFORM_SHARE * total / p as f32 + 1e-12;
        let denom = total + p as f32 * floor;
        for w in self.prop.iter_mut() {
            *w = (*w + floor) / denom;
        }
    }

    /// Enforces the gradient constraint on background partition `q`: its impulse response
    /// keeps only its first `N` taps, so the circular convolution stays linear.
    #[inline(always)]
    fn constrain(&mut self, w: &mut AecWork, t: &mut Trickle, q: usize) {
        let n = self.block;
        let bins = self.bins;
        let inv_fft_len = 1.0 / (2 * n) as f32;
        let at = q * bins..(q + 1) * bins;
        w.spec.copy_from_slice(&self.background[at.clone()]);
        self.fft
            .inverse(&mut w.fft, &w.spec, &mut w.time, &self.shared.unity);
        let (head, tail) = w.time.split_at_mut(n);
        for v in head.iter_mut() {
            *v *= inv_fft_len;
        }
        tail.fill(0.0);
        self.fine_step(t);
        self.fft
            .forward(&mut w.fft, &w.time, &mut self.background[at]);
    }

    /// Spectral residual echo suppression of `err_fg` into `post`. Returns false when the
    /// post-filter is transparent (every gain 1, or near-end speech), in which case `post`
    /// is not written and the linear output stands.
    #[inline(always)]
    fn suppress_residual(
        &mut self,
        w: &mut AecWork,
        t: &mut Trickle,
        echo_dominated: bool,
    ) -> bool {
        let n = self.block;
        let inv_fft_len = 1.0 / (2 * n) as f32;
        let rates = self.shared.rates;
        // Windows [previous block, this block] of the linear output and of the echo
        // estimate it removed.
        let (older, newer) = w.time.split_at_mut(n);
        older.copy_from_slice(&self.echo_prev);
        newer.copy_from_slice(&w.echo_fg);
        self.fft.forward(&mut w.fft, &w.time, &mut w.spec);
        self.fine_step(t);
        let (older, newer) = w.time.split_at_mut(n);
        older.copy_from_slice(&self.out_prev);
        newer.copy_from_slice(&w.err_fg);
        self.fft.forward(&mut w.fft, &w.time, &mut w.out_spectrum);

        // Powers through a Hann window, applied as the kernel [−¼, ½, −¼] across bins (the
        // rectangular window's sidelobes would smear loud bins into quiet ones).
        let bins = self.bins;
        let (pe, py) = w.res_hann.split_at_mut(bins);
        hann_powers(&w.out_spectrum, pe);
        hann_powers(&w.spec, py);
        let (pe, py) = (&pe[..bins], &py[..bins]);
        let ep = &mut self.res_err_power[..bins];
        let yp = &mut self.res_echo_power[..bins];
        let le = &mut self.res_leak_err[..bins];
        let ly = &mut self.res_leak_echo[..bins];
        let res = &mut self.res_residual[..bins];
        let noise = &mut self.res_noise[..bins];
        let gain = &mut w.res_gain[..bins];
        if echo_dominated {
            for k in 0..bins {
                le[k] += rates.leak_ratio * (pe[k] - le[k]);
                ly[k] += rates.leak_ratio * (py[k] - ly[k]);
            }
        }
        // Per bin, branch-free (selects), so that the loop vectorises.
        for k in 0..bins {
            ep[k] += (1.0 - RES_POWER_SMOOTHING) * (pe[k] - ep[k]);
            yp[k] += (1.0 - RES_POWER_SMOOTHING) * (py[k] - yp[k]);
            let leak = if ly[k] > TINY {
                (le[k] / ly[k]).min(1.0)
            } else {
                1.0
            };
            let residual = (leak * yp[k]).max(rates.res_decay * res[k]);
            res[k] = if residual > RES_FLUSH { residual } else { 0.0 };
            noise[k] = if ep[k] < noise[k] {
                ep[k]
            } else {
                noise[k] * rates.noise_rise
            };
            let wiener = 1.0 - RES_OVERSUBTRACTION * res[k] / ep[k];
            let comfort = (RES_COMFORT_SHARE * noise[k] / ep[k]).sqrt();
            gain[k] = if ep[k] <= 0.0 || res[k] * RES_OVERSUBTRACTION <= RES_UNITY * ep[k] {
                1.0
            } else {
                wiener.max(comfort).clamp(RES_GAIN_MIN, 1.0)
            };
        }
        // Eight-lane sums (the same bits in every build), and a test that does not stop
        // early, so that all three vectorise.
        let error_power = lane_sum(pe, pe, |e, _| e);
        let expected_power = lane_sum(res, noise, |r, n| r + NEAR_END_NOISE_WEIGHT * n);
        let all_unity = gain.iter().fold(true, |all, &g| all & (g >= 1.0));
        // Near-end speech: the error holds far more than residual echo and noise. Back off
        // at once, come back over a few blocks (G.168: NLP disabled during double talk).
        self.res_depth = if self.near_end_level && error_power > NEAR_END_RATIO * expected_power {
            0.0
        } else {
            (self.res_depth + rates.res_depth_recovery).min(1.0)
        };
        let depth = self.res_depth;
        if all_unity || depth <= 0.0 {
            // The two steps the minimum-phase filter would have issued.
            self.fine_step(t);
            self.fine_step(t);
            return false;
        }

        // Minimum-phase filter with magnitude gain^depth: fold the real cepstrum of its log
        // onto positive quefrencies (Oppenheim & Schafer §13.8); the exponential of the
        // folded cepstrum's spectrum is the filter. Causal, so no look-ahead is needed.
        for (s, &g) in w.spec.iter_mut().zip(w.res_gain.iter()) {
            *s = Complex32::new(depth * fast_ln(g), 0.0);
        }
        self.fft
            .inverse(&mut w.fft, &w.spec, &mut w.time, &self.shared.unity);
        self.fine_step(t);
        // Fold and lifter (the taper built in `new`; the FFT's scale folded in).
        for (c, &w) in w.time.iter_mut().zip(self.shared.lifter.iter()) {
            *c *= w;
        }
        self.fft.forward(&mut w.fft, &w.time, &mut w.spec);
        self.fine_step(t);
        // Overlap-save filtering of the linear output.
        for (o, c) in w.out_spectrum.iter_mut().zip(w.spec.iter()) {
            let (sin, cos) = fast_sin_cos(c.im);
            let mag = fast_exp(c.re);
            *o *= Complex32::new(mag * cos, mag * sin);
        }
        self.fft
            .inverse(&mut w.fft, &w.out_spectrum, &mut w.time, &self.shared.unity);
        for (o, &t) in w.post.iter_mut().zip(w.time[n..].iter()) {
            *o = t * inv_fft_len;
        }
        true
    }
}

/// What every canceller with one block length and duration shares, read-only once built
/// (one copy for the whole process, so thousands of sessions do not each keep and pull
/// through the cache their own).
struct Shared {
    /// Gains of 1 for the inverse transforms (`N + 1`).
    unity: Box<[f32]>,
    /// Cepstral lifter (`2N`): the log gains' cepstrum folded onto positive quefrencies
    /// with a raised-cosine taper to `N/4`, which smooths the gain curve over ~8 bins and
    /// keeps the filter well inside the `N + 1` taps overlap-save allows; the inverse
    /// FFT's `1/2N` folded in.
    lifter: Box<[f32]>,
    /// The trackers' rates for this block length.
    rates: BlockRates,
}

impl Shared {
    /// The tables for blocks of `n` samples lasting `block_ms` (control plane: built on
    /// first use; `None` for a block [`block_for`] never gives).
    fn for_block(n: usize, block_ms: u32) -> Option<Arc<Shared>> {
        static SHARED: [OnceLock<Arc<Shared>>; SUPPORTED_RATES_HZ.len() + 3] =
            [const { OnceLock::new() }; SUPPORTED_RATES_HZ.len() + 3];
        let index = match (n, block_ms) {
            (_, 10) => rate_index(u32::try_from(n * 100).ok()?)?,
            (160, 20) => SUPPORTED_RATES_HZ.len(),
            (320, 20) => SUPPORTED_RATES_HZ.len() + 1,
            (960, 20) => SUPPORTED_RATES_HZ.len() + 2,
            _ => return None,
        };
        let shared = SHARED[index].get_or_init(|| {
            Arc::new(Shared {
                unity: vec![1.0; n + 1].into_boxed_slice(),
                lifter: lifter_window(n),
                rates: BlockRates::for_block_ms(block_ms),
            })
        });
        Some(Arc::clone(shared))
    }
}

/// The per-block rates, factors and steps of the canceller's trackers, for its block
/// length. The constants above are per 10 ms block; a 20 ms block applies each twice
/// over: a smoothing rate `r` becomes `1 − (1 − r)²`, a factor `f` becomes `f²`, a step
/// `s` becomes `2s`. So every tracker follows the signal with the same time constant in
/// either block length. Not the post-filter's power smoothing
/// ([`RES_POWER_SMOOTHING`]), which weighs the previous window against this one, half
/// overlapping it in either length: converted, it measured 4.6 dB less ERLE at 8 kHz
/// (32.9 against 37.5 dB, 128 ms tail) and 0.8 dB less near-end segSNR in double talk.
#[derive(Debug, Clone, Copy)]
struct BlockRates {
    leak_mean: f32,
    leak_rate_max: f32,
    leak_ratio: f32,
    step_power: f32,
    diff_fast: f32,
    diff_slow: f32,
    geigel_release: f32,
    talk_floor_smoothing: f32,
    talk_floor_rise: f32,
    res_decay: f32,
    noise_rise: f32,
    res_depth_recovery: f32,
}

impl BlockRates {
    fn for_block_ms(block_ms: u32) -> BlockRates {
        let m = (block_ms / 10).max(1) as i32;
        // Exactly the constants for 10 ms blocks.
        let rate = |r: f32| if m == 1 { r } else { 1.0 - (1.0 - r).powi(m) };
        let factor = |f: f32| f.powi(m);
        BlockRates {
            leak_mean: rate(LEAK_MEAN_RATE),
            leak_rate_max: rate(LEAK_RATE_MAX),
            leak_ratio: rate(LEAK_RATIO_RATE),
            step_power: rate(STEP_POWER_RATE),
            diff_fast: factor(DIFF_FAST),
            diff_slow: factor(DIFF_SLOW),
            geigel_release: rate(GEIGEL_RELEASE),
            talk_floor_smoothing: rate(TALK_FLOOR_SMOOTHING),
            talk_floor_rise: factor(TALK_FLOOR_RISE),
            res_decay: factor(RES_DECAY),
            noise_rise: factor(NOISE_RISE),
            res_depth_recovery: (RES_DEPTH_RECOVERY * m as f32).min(1.0),
        }
    }
}

/// Samples per block of a canceller at `sample_rate_hz` with a tail of `tail_ms` fed
/// frames of `frame_samples`: 20 ms when the frames are whole 20 ms (the 40 ms windows'
/// real transforms of 320, 640 and 1,920 points at 8, 16 and 48 kHz), at 48 kHz only for
/// tails longer than [`MIN_TAIL_MS_20MS_BLOCKS_48K`]; else 10 ms. Half the blocks per
/// frame means half the filter and update passes over the echo path model (the model
/// keeps its taps: half as many partitions of twice the bins) and half the per-block
/// work, against transforms twice as long.
pub fn block_for(sample_rate_hz: u32, tail_ms: u32, frame_samples: usize) -> usize {
    let ten = block_len(sample_rate_hz);
    if rate_index(sample_rate_hz).is_some()
        && (sample_rate_hz != 48000 || tail_ms > MIN_TAIL_MS_20MS_BLOCKS_48K)
        && frame_samples > 0
        && frame_samples.is_multiple_of(2 * ten)
    {
        2 * ten
    } else {
        ten
    }
}

/// The residual suppressor's cepstral lifter for blocks of `n` samples (see
/// [`Shared::lifter`]). Control plane.
fn lifter_window(n: usize) -> Box<[f32]> {
    let inv_fft_len = 1.0 / (2 * n) as f32;
    let lifter = (n / RES_LIFTER_SHARE).max(2);
    let taper = std::f32::consts::PI / lifter as f32;
    (0..2 * n)
        .map(|i| {
            if i == 0 {
                inv_fft_len
            } else if i < lifter {
                2.0 * inv_fft_len * (0.5 + 0.5 * (taper * i as f32).cos())
            } else {
                0.0
            }
        })
        .collect()
}

/// Largest magnitude of a block (full scale = 1). Found among the integers (a vector of
/// them at a time; `f32::max` over floats keeps to one lane for its NaN rule), then
/// converted, which is exact: the same value as the largest of the converted samples.
fn peak(x: &[i16]) -> f32 {
    let largest = x.iter().map(|&v| v.unsigned_abs()).fold(0u16, u16::max);
    f32::from(largest) * SAMPLE_TO_FLOAT
}

/// `Σ |z|²`, with eight partial sums so that the compiler can vectorise it.
fn norm_sqr_sum(z: &[Complex32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let chunks = z.chunks_exact(4);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, v) in acc.chunks_exact_mut(2).zip(c.iter()) {
            if let [re, im] = a {
                *re += v.re * v.re;
                *im += v.im * v.im;
            }
        }
    }
    acc.iter().sum::<f32>() + rest.iter().map(|v| v.norm_sqr()).sum::<f32>()
}

/// Energy of a block.
#[inline(always)]
fn energy(x: &[f32]) -> f32 {
    dot(x, x)
}

/// `Σ a·b` over the samples both hold, summed as [`lane_sum`] sums.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    lane_sum(a, b, |x, y| x * y)
}

/// `Σ (b − a)²` over the samples both hold, summed as [`lane_sum`] sums.
#[inline(always)]
fn diff_energy(a: &[f32], b: &[f32]) -> f32 {
    lane_sum(a, b, |x, y| (y - x) * (y - x))
}

/// `Σ term(a, b)` over the samples both hold, in eight running sums (lane `k` takes
/// samples `k`, `k + 8`, ...) so that the loop vectorises, then added in lane order, then
/// the samples left over: the same bits in every build.
#[inline(always)]
fn lane_sum(a: &[f32], b: &[f32], term: impl Fn(f32, f32) -> f32) -> f32 {
    let n = a.len().min(b.len());
    let whole = n - n % 8;
    let mut acc = [0.0f32; 8];
    for (x, y) in a[..whole].chunks_exact(8).zip(b[..whole].chunks_exact(8)) {
        for k in 0..8 {
            acc[k] += term(x[k], y[k]);
        }
    }
    let mut sum = acc.iter().sum::<f32>();
    for (&x, &y) in a[whole..n].iter().zip(&b[whole..n]) {
        sum += term(x, y);
    }
    sum
}

/// `out[m] = Σ_q w[m]_q · x_(head+q)` for both echo path models `m` (foreground,
/// background): their echo estimate spectra, in one pass over the reference history, and
/// in the same pass the step's normaliser `norm = Σ_q prop_q · |x_(head+q)|²` (`prop`:
/// one weight per partition). Built twice, by hand with AVX2 and portable (see [`crate::processing::simd`]); both
/// round every operation alike and sum in partition order, so they give the same bits
/// (tested).
fn filter(
    weights: [&[Complex32]; 2],
    ref_spectra: &[Complex32],
    head: usize,
    bins: usize,
    prop: &[f32],
    out: [&mut [Complex32]; 2],
    norm: &mut [f32],
) {
    crate::processing::simd::avx2_or_portable!(
        avx2::filter(weights, ref_spectra, head, bins, prop, out, norm),
        filter_portable(weights, ref_spectra, head, bins, prop, out, norm),
    )
}

/// The portable build of [`filter`].
fn filter_portable(
    weights: [&[Complex32]; 2],
    ref_spectra: &[Complex32],
    head: usize,
    bins: usize,
    prop: &[f32],
    out: [&mut [Complex32]; 2],
    norm: &mut [f32],
) {
    let partitions = prop.len();
    let norm = &mut norm[..bins];
    norm.fill(0.0);
    for (q, &g) in prop.iter().enumerate() {
        let at = ((head + q) % partitions) * bins;
        for (nrm, x) in norm.iter_mut().zip(ref_spectra[at..at + bins].iter()) {
            *nrm += g * x.norm_sqr();
        }
    }
    for (weights, out) in weights.into_iter().zip(out) {
        let partitions = weights.len() / bins.max(1);
        out.fill(Complex32::new(0.0, 0.0));
        for (q, w) in weights.chunks_exact(bins).enumerate() {
            let at = ((head + q) % partitions) * bins;
            for ((o, w), x) in out
                .iter_mut()
                .zip(w.iter())
                .zip(ref_spectra[at..at + bins].iter())
            {
                *o += w * x;
            }
        }
    }
}

/// One partition's background update `w = old + conj(x) · e · g` (`e` already scaled by
/// the step; `old` is `w` itself when `None`), returning the partition's new squared norm
/// `Σ |w|²` as [`norm_sqr_sum`] sums it. Built twice, by hand with AVX2 and portable; the
/// same bits either way (tested).
fn update_partition(
    w: &mut [Complex32],
    old: Option<&[Complex32]>,
    x: &[Complex32],
    e: &[Complex32],
    g: f32,
) -> f32 {
    crate::processing::simd::avx2_or_portable!(
        avx2::update_partition(w, old, x, e, g),
        update_partition_portable(w, old, x, e, g),
    )
}

/// The portable build of [`update_partition`].
fn update_partition_portable(
    w: &mut [Complex32],
    old: Option<&[Complex32]>,
    x: &[Complex32],
    e: &[Complex32],
    g: f32,
) -> f32 {
    match old {
        Some(old) => {
            for (((w, &o), x), e) in w.iter_mut().zip(old.iter()).zip(x.iter()).zip(e.iter()) {
                *w = o + x.conj() * e * g;
            }
        }
        None => {
            for ((w, x), e) in w.iter_mut().zip(x.iter()).zip(e.iter()) {
                *w += x.conj() * e * g;
            }
        }
    }
    norm_sqr_sum(w)
}

/// The AVX2 builds of the partitioned filter's kernels. `Complex32` is two `f32`s, so a
/// slice of them is interleaved `re, im` and one 256-bit vector holds four bins. A
/// product is rounded as `num_complex` rounds it (`re = a.re·b.re − a.im·b.im`,
/// `im = a.re·b.im + a.im·b.re`: the two products of each part in one `addsub`), and sums
/// run in the portable loops' order, so the output is bit for bit theirs.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{filter_portable, update_partition_portable, Complex32, MAX_PARTITIONS};
    use crate::processing::simd::avx2_parts::{load_bins, norm_sqr4, swap_re_im};
    use core::arch::x86_64::*;

    /// `a · b` for four bins.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn cmul(a: __m256, b: __m256) -> __m256 {
        let (a_re, a_im) = (_mm256_moveldup_ps(a), _mm256_movehdup_ps(a));
        _mm256_addsub_ps(_mm256_mul_ps(a_re, b), _mm256_mul_ps(a_im, swap_re_im(b)))
    }

    /// Stores four bins at the start of `z`.
    ///
    /// # Safety
    /// The CPU must run AVX2, and `z` must hold at least four bins.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn store(z: &mut [Complex32], v: __m256) {
        debug_assert!(z.len() >= 4);
        // SAFETY: the caller's contract.
        unsafe { _mm256_storeu_ps(z.as_mut_ptr().cast(), v) }
    }

    /// [`super::filter`]: eight bins at a time, each summed over the partitions in a
    /// register for both models (four independent sums, so the additions overlap), each
    /// reference bin loaded once for both.
    ///
    /// # Safety
    /// The CPU must run AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn filter(
        weights: [&[Complex32]; 2],
        ref_spectra: &[Complex32],
        head: usize,
        bins: usize,
        prop: &[f32],
        out: [&mut [Complex32]; 2],
        norm: &mut [f32],
    ) {
        let p = weights[0].len() / bins.max(1);
        if bins == 0
            || p == 0
            || p > MAX_PARTITIONS
            || head >= p
            || prop.len() != p
            || weights[1].len() / bins != p
            || weights.iter().any(|w| w.len() < p * bins)
            || ref_spectra.len() < p * bins
            || out.iter().any(|o| o.len() < bins)
            || norm.len() < bins
        {
            // Not a canceller's shapes; the portable build handles (or refuses) it alike.
            return filter_portable(weights, ref_spectra, head, bins, prop, out, norm);
        }
        let [out_fg, out_bg] = out;
        let whole = bins - bins % 4;
        // Per partition, the offsets of its weights and of its reference spectrum (the
        // ring read from `head`), within `p · bins` of all three slices (checked above),
        // worked out once instead of for every run of bins.
        let mut offsets = [(0usize, 0usize, 0.0f32); MAX_PARTITIONS];
        for ((q, o), &g) in offsets.iter_mut().enumerate().zip(prop) {
            let at = if head + q >= p {
                head + q - p
            } else {
                head + q
            };
            *o = (q * bins, at * bins, g);
        }
        let offsets = &offsets[..p];
        let (fg, bg, x_base) = (
            weights[0].as_ptr(),
            weights[1].as_ptr(),
            ref_spectra.as_ptr(),
        );
        let mut k = 0;
        while k + 8 <= whole {
            let mut acc = [_mm256_setzero_ps(); 4];
            // Σ prop_q·|x|² of bins k, k+1, k+4, k+5 | k+2, k+3, k+6, k+7 (the order
            // `hadd` leaves them in); each |x|² is re² + im², rounded as `norm_sqr` does.
            let mut acc_norm = _mm256_setzero_ps();
            for &(w_at, x_at, g) in offsets {
                // SAFETY: AVX2 (this function's contract); bins k..k + 8 of partition q
                // lie within the three slices (k + 8 <= bins).
                unsafe {
                    let (x0, x1) = (
                        load_bins(x_base.add(x_at + k)),
                        load_bins(x_base.add(x_at + k + 4)),
                    );
                    let (f, b) = (fg.add(w_at + k), bg.add(w_at + k));
                    acc[0] = _mm256_add_ps(acc[0], cmul(load_bins(f), x0));
                    acc[1] = _mm256_add_ps(acc[1], cmul(load_bins(f.add(4)), x1));
                    acc[2] = _mm256_add_ps(acc[2], cmul(load_bins(b), x0));
                    acc[3] = _mm256_add_ps(acc[3], cmul(load_bins(b.add(4)), x1));
                    let power = _mm256_hadd_ps(_mm256_mul_ps(x0, x0), _mm256_mul_ps(x1, x1));
                    acc_norm = _mm256_add_ps(acc_norm, _mm256_mul_ps(_mm256_set1_ps(g), power));
                }
            }
            // Pairs of bins back in order: (k, k+1), (k+2, k+3), (k+4, k+5), (k+6, k+7).
            let acc_norm = _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(
                _mm256_castps_pd(acc_norm),
            ));
            // SAFETY: chunks of 4 bins within both outputs and 8 values within `norm`
            // (k + 8 <= bins <= their lengths).
            unsafe {
                store(&mut out_fg[k..k + 4], acc[0]);
                store(&mut out_fg[k + 4..k + 8], acc[1]);
                store(&mut out_bg[k..k + 4], acc[2]);
                store(&mut out_bg[k + 4..k + 8], acc[3]);
                _mm256_storeu_ps(norm.as_mut_ptr().add(k), acc_norm);
            }
            k += 8;
        }
        while k < whole {
            let mut acc = [_mm256_setzero_ps(); 2];
            // As above: bins k, k+1, k, k+1 | k+2, k+3, k+2, k+3.
            let mut acc_norm = _mm256_setzero_ps();
            for &(w_at, x_at, g) in offsets {
                // SAFETY: as above, for bins k..k + 4.
                unsafe {
                    let x = load_bins(x_base.add(x_at + k));
                    acc[0] = _mm256_add_ps(acc[0], cmul(load_bins(fg.add(w_at + k)), x));
                    acc[1] = _mm256_add_ps(acc[1], cmul(load_bins(bg.add(w_at + k)), x));
                    let square = _mm256_mul_ps(x, x);
                    let power = _mm256_hadd_ps(square, square);
                    acc_norm = _mm256_add_ps(acc_norm, _mm256_mul_ps(_mm256_set1_ps(g), power));
                }
            }
            let acc_norm = _mm256_castpd_ps(_mm256_permute4x64_pd::<0b00_10_10_00>(
                _mm256_castps_pd(acc_norm),
            ));
            // SAFETY: as above, for 4 bins and 4 values of `norm` (k + 4 <= bins).
            unsafe {
                store(&mut out_fg[k..k + 4], acc[0]);
                store(&mut out_bg[k..k + 4], acc[1]);
                _mm_storeu_ps(norm.as_mut_ptr().add(k), _mm256_castps256_ps128(acc_norm));
            }
            k += 4;
        }
        for k in whole..bins {
            let mut nrm = 0.0f32;
            let mut at = head;
            for &g in prop {
                nrm += g * ref_spectra[at * bins + k].norm_sqr();
                at = if at + 1 == p { 0 } else { at + 1 };
            }
            norm[k] = nrm;
        }
        for (weights, out) in weights.into_iter().zip([out_fg, out_bg]) {
            for k in whole..bins {
                let mut o = Complex32::new(0.0, 0.0);
                let mut at = head;
                for q in 0..p {
                    o += weights[q * bins + k] * ref_spectra[at * bins + k];
                    at = if at + 1 == p { 0 } else { at + 1 };
                }
                out[k] = o;
            }
        }
    }

    /// The inner bins of [`super::hann_powers`] (`z.len() >= 3`), four at a time:
    /// `|½·z[k] − ¼·(z[k−1] + z[k+1])|²` as the portable loop rounds it, `re² + im²` by a
    /// horizontal add. Returns the first bin left to the caller (from 1 on).
    ///
    /// # Safety
    /// The CPU must run AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn hann_powers_inner(z: &[Complex32], out: &mut [f32]) -> usize {
        let last = z.len().min(out.len()).saturating_sub(1);
        let (half, quarter) = (_mm256_set1_ps(0.5), _mm256_set1_ps(0.25));
        let (zp, op) = (z.as_ptr(), out.as_mut_ptr());
        let mut k = 1;
        // Bins k..k + 4 and their neighbours k − 1..k + 5, all within z (k + 4 <= last).
        while k + 4 <= last {
            // SAFETY: AVX2 (this function's contract); z[k − 1..k + 5] lies within z
            // (k ≥ 1, k + 5 <= last + 1 = len) and out[k..k + 4] within out.
            unsafe {
                let here = load_bins(zp.add(k));
                let below = load_bins(zp.add(k - 1));
                let above = load_bins(zp.add(k + 1));
                let t = _mm256_sub_ps(
                    _mm256_mul_ps(here, half),
                    _mm256_mul_ps(_mm256_add_ps(below, above), quarter),
                );
                _mm_storeu_ps(op.add(k), norm_sqr4(t));
            }
            k += 4;
        }
        k
    }

    /// [`super::update_partition`], four bins at a time; the squared norm summed in eight
    /// lanes as [`super::norm_sqr_sum`] sums it.
    ///
    /// # Safety
    /// The CPU must run AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn update_partition(
        w: &mut [Complex32],
        old: Option<&[Complex32]>,
        x: &[Complex32],
        e: &[Complex32],
        g: f32,
    ) -> f32 {
        let n = w.len();
        if x.len() < n || e.len() < n || old.is_some_and(|o| o.len() < n) {
            // Not a canceller's shapes; the portable build handles them alike.
            return update_partition_portable(w, old, x, e, g);
        }
        let whole = n - n % 4;
        let (gain, sign) = (_mm256_set1_ps(g), _mm256_set1_ps(-0.0));
        let mut acc = _mm256_setzero_ps();
        // Raw pointers throughout the vector loop, as `old` may be `w` itself.
        let to = w.as_mut_ptr();
        let from = old.map_or(to.cast_const(), <[Complex32]>::as_ptr);
        let (x_at, e_at) = (x.as_ptr(), e.as_ptr());
        let mut k = 0;
        while k < whole {
            // SAFETY: AVX2 (this function's contract); bins k..k + 4 lie within all four
            // slices (k + 4 <= whole <= n, and each holds at least n, checked above).
            unsafe {
                let (xv, ev) = (load_bins(x_at.add(k)), load_bins(e_at.add(k)));
                // conj(x) · e: x's imaginary parts negated (exactly, as `conj` does).
                let x_re = _mm256_moveldup_ps(xv);
                let x_im = _mm256_xor_ps(_mm256_movehdup_ps(xv), sign);
                let product =
                    _mm256_addsub_ps(_mm256_mul_ps(x_re, ev), _mm256_mul_ps(x_im, swap_re_im(ev)));
                let updated = _mm256_add_ps(load_bins(from.add(k)), _mm256_mul_ps(product, gain));
                _mm256_storeu_ps(to.add(k).cast(), updated);
                acc = _mm256_add_ps(acc, _mm256_mul_ps(updated, updated));
            }
            k += 4;
        }
        for k in whole..n {
            let o = match old {
                Some(o) => o[k],
                None => w[k],
            };
            w[k] = o + x[k].conj() * e[k] * g;
        }
        let mut lanes = [0.0f32; 8];
        // SAFETY: `lanes` is 8 `f32`, what the unaligned 256-bit store writes.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc) };
        lanes.iter().sum::<f32>() + w[whole..].iter().map(|v| v.norm_sqr()).sum::<f32>()
    }
}

/// [`hann_power`] of every bin of `z` into `out` (as many bins as both hold), the inner
/// bins in one loop that vectorises.
fn hann_powers(z: &[Complex32], out: &mut [f32]) {
    let bins = z.len().min(out.len());
    let (z, out) = (&z[..bins], &mut out[..bins]);
    if bins < 3 {
        for (k, o) in out.iter_mut().enumerate() {
            *o = hann_power(z, k, bins.saturating_sub(1));
        }
        return;
    }
    let last = bins - 1;
    out[0] = hann_power(z, 0, last);
    out[last] = hann_power(z, last, last);
    let done = crate::processing::simd::avx2_or_portable!(avx2::hann_powers_inner(z, out), 1);
    for (((o, &here), &below), &above) in out[done..last]
        .iter_mut()
        .zip(&z[done..last])
        .zip(&z[done - 1..last - 1])
        .zip(&z[done + 1..])
    {
        *o = (here * 0.5 - (below + above) * 0.25).norm_sqr();
    }
}

/// Power of bin `k` of a real signal's half spectrum `z[0..=last]` after a Hann window,
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

    /// Deterministic xorshift32 noise, uniform in [-1, 1).
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
    fn echo_path(rate: u32, delay_ms: u32, len_ms: u32, erl_db: f32) -> Vec<f32> {
        let per_ms = rate as usize / 1000;
        let delay = delay_ms as usize * per_ms;
        let len = len_ms as usize * per_ms;
        let mut rng = XorShift(0x1234_5678);
        let mut h = vec![0.0f32; delay + len];
        let tau = len as f32 / 100f32.ln();
        for (i, t) in h[delay..].iter_mut().enumerate() {
            *t = rng.next_f32() * (-(i as f32) / tau).exp();
        }
        let gain = h.iter().map(|v| v * v).sum::<f32>();
        let scale = (10f32.powf(-erl_db / 10.0) / gain).sqrt();
        h.iter_mut().for_each(|v| *v *= scale);
        h
    }

    fn convolve(x: &[f32], h: &[f32]) -> Vec<f32> {
        (0..x.len())
            .map(|i| (0..h.len().min(i + 1)).map(|j| h[j] * x[i - j]).sum())
            .collect()
    }

    /// Far-end speech through an echo path plus white noise, with near-end speech added
    /// during `double_talk_s` (a window in seconds).
    struct Scenario {
        rate: u32,
        far: Vec<f32>,
        echo: Vec<f32>,
        noise: Vec<f32>,
        near: Vec<f32>,
        capture: Vec<f32>,
    }

    /// Echo path of the quality tests: 30 ms delay, 50 ms of decaying room/line response
    /// (80 ms in all), echo return loss 6 dB, white noise at −60 dBFS.
    const DELAY_MS: u32 = 30;
    const PATH_MS: u32 = 50;
    const ERL_DB: f32 = 6.0;
    const NOISE_DBFS: f32 = -60.0;

    fn scenario(rate: u32, seconds: f32, double_talk_s: Option<(f32, f32)>) -> Scenario {
        scenario_with(rate, seconds, DELAY_MS, PATH_MS, double_talk_s)
    }

    fn scenario_with(
        rate: u32,
        seconds: f32,
        delay_ms: u32,
        path_ms: u32,
        double_talk_s: Option<(f32, f32)>,
    ) -> Scenario {
        let len = (seconds * rate as f32) as usize;
        let far: Vec<f32> = read_wav(&format!("speech1_{rate}.wav"))[..len].to_vec();
        let echo = convolve(&far, &echo_path(rate, delay_ms, path_ms, ERL_DB));
        let mut rng = XorShift(0x9e37_79b9);
        let amp = 32768.0 * 10f32.powf(NOISE_DBFS / 20.0) * 3f32.sqrt();
        let noise: Vec<f32> = (0..len).map(|_| amp * rng.next_f32()).collect();
        let mut near = vec![0.0f32; len];
        if let Some((start, end)) = double_talk_s {
            let speech = read_wav(&format!("speech2_{rate}.wav"));
            let (a, b) = (secs(rate, start), secs(rate, end));
            // From 1 s into the file, where the talker is already speaking.
            let from = rate as usize;
            near[a..b].copy_from_slice(&speech[from..from + (b - a)]);
        }
        let capture = (0..len).map(|i| echo[i] + noise[i] + near[i]).collect();
        Scenario {
            rate,
            far,
            echo,
            noise,
            near,
            capture,
        }
    }

    impl Scenario {
        /// The capture without near-end speech.
        fn echo_only(&self) -> Vec<f32> {
            self.echo
                .iter()
                .zip(&self.noise)
                .map(|(e, n)| e + n)
                .collect()
        }

        /// ERLE (dB) of `out` over `from_s..to_s`: power of the echo-only capture over power
        /// of the output, summed over the 10 ms blocks where the far end is heard (echo at
        /// least 10 dB above the noise), i.e. far-end talk spurts, not its pauses.
        fn erle_db(&self, out: &[f32], from_s: f32, to_s: f32) -> f64 {
            let blk = block_len(self.rate);
            let echo_only = self.echo_only();
            let (mut num, mut den) = (0.0, 0.0);
            for start in (secs(self.rate, from_s)..secs(self.rate, to_s)).step_by(blk) {
                let r = start..start + blk;
                if energy64(&self.echo[r.clone()]) < 10.0 * energy64(&self.noise[r.clone()]) {
                    continue;
                }
                num += energy64(&echo_only[r.clone()]);
                den += energy64(&out[r]);
            }
            10.0 * (num / (den + 1e-9)).log10()
        }

        /// ERLE (dB) over every block of `from_s..to_s`, far-end pauses (noise only)
        /// included.
        fn erle_all_blocks_db(&self, out: &[f32], from_s: f32, to_s: f32) -> f64 {
            let r = secs(self.rate, from_s)..secs(self.rate, to_s);
            let echo_only = self.echo_only();
            10.0 * (energy64(&echo_only[r.clone()]) / (energy64(&out[r]) + 1e-9)).log10()
        }

        /// Mean segmental SNR (dB) of `out` against the clean near-end speech over the 10 ms
        /// blocks of `from_s..to_s` where the near end talks (above −50 dBFS), each block
        /// clamped to −10..35 dB.
        fn near_end_seg_snr_db(&self, out: &[f32], from_s: f32, to_s: f32) -> f64 {
            let blk = block_len(self.rate);
            let active = blk as f64 * (32768.0 * 10f64.powf(-50.0 / 20.0)).powi(2);
            let (mut sum, mut count) = (0.0, 0);
            for start in (secs(self.rate, from_s)..secs(self.rate, to_s)).step_by(blk) {
                let r = start..start + blk;
                let s = energy64(&self.near[r.clone()]);
                if s < active {
                    continue;
                }
                let err: f64 = self.near[r.clone()]
                    .iter()
                    .zip(&out[r])
                    .map(|(&s, &o)| (f64::from(o) - f64::from(s)).powi(2))
                    .sum();
                sum += (10.0 * (s / (err + 1e-9)).log10()).clamp(-10.0, 35.0);
                count += 1;
            }
            sum / f64::from(count.max(1))
        }

        /// Correlation coefficient of `out` with the clean near-end speech over a window.
        fn near_end_correlation(&self, out: &[f32], from_s: f32, to_s: f32) -> f64 {
            let r = secs(self.rate, from_s)..secs(self.rate, to_s);
            let cross: f64 = self.near[r.clone()]
                .iter()
                .zip(&out[r.clone()])
                .map(|(&s, &o)| f64::from(s) * f64::from(o))
                .sum();
            cross / (energy64(&self.near[r.clone()]) * energy64(&out[r])).sqrt()
        }
    }

    fn secs(rate: u32, s: f32) -> usize {
        (s * rate as f32) as usize
    }

    fn energy64(x: &[f32]) -> f64 {
        x.iter().map(|&v| f64::from(v) * f64::from(v)).sum()
    }

    fn to_i16(x: &[f32]) -> Vec<i16> {
        x.iter()
            .map(|v| v.round().clamp(-32768.0, 32767.0) as i16)
            .collect()
    }

    /// Runs `aec` over `capture` against `far` in 20 ms frames and returns the output.
    fn run(aec: &mut EchoCanceller, capture: &[f32], far: &[f32]) -> Vec<f32> {
        let frame = aec.config.sample_rate_hz as usize / 50;
        let mut cap = to_i16(capture);
        let far = to_i16(far);
        for (c, r) in cap.chunks_exact_mut(frame).zip(far.chunks_exact(frame)) {
            aec.process(c, r);
        }
        cap.iter().map(|&v| f32::from(v)).collect()
    }

    fn config(rate: u32, tail_ms: u32, residual_suppression: bool) -> AecConfig {
        AecConfig {
            sample_rate_hz: rate,
            tail_ms,
            residual_suppression,
        }
    }

    fn canceller(rate: u32, tail_ms: u32, residual_suppression: bool) -> EchoCanceller {
        EchoCanceller::new(config(rate, tail_ms, residual_suppression))
            .expect("valid configuration")
    }

    /// A canceller for 20 ms frames, as a session at 20 ms ptime builds it: 20 ms blocks
    /// (at 48 kHz, for tails over 96 ms only).
    fn canceller_20(rate: u32, tail_ms: u32, residual_suppression: bool) -> EchoCanceller {
        let config = config(rate, tail_ms, residual_suppression);
        EchoCanceller::with_frame(config, rate as usize / 50).expect("valid configuration")
    }

    /// Builds a canceller for a rate, a tail and residual suppression on or off.
    type Maker = fn(u32, u32, bool) -> EchoCanceller;

    /// Both block lengths, for the tests that hold for each.
    const MAKERS: [(&str, Maker); 2] =
        [("10 ms blocks", canceller), ("20 ms blocks", canceller_20)];

    /// A canceller in 20 ms blocks whatever [`block_for`] would pick (at 48 kHz, tails of
    /// 96 ms and less take 10 ms blocks in a session).
    fn canceller_20_blocks(rate: u32, tail_ms: u32, residual_suppression: bool) -> EchoCanceller {
        let config = config(rate, tail_ms, residual_suppression);
        EchoCanceller::with_block(config, rate as usize / 50).expect("valid configuration")
    }

    /// The wideband and fullband convergence check: `make` with and without the
    /// suppressor on `sc`, ERLE ≥ 30 dB from 2 s to 4 s with it and ≥ 12 dB without.
    fn assert_converges_within_2_s(sc: &Scenario, blocks: &str, make: Maker, tail_ms: u32) {
        let rate = sc.rate;
        let mut full = make(rate, tail_ms, true);
        let mut linear = make(rate, tail_ms, false);
        let out = run(&mut full, &sc.capture, &sc.far);
        let out_linear = run(&mut linear, &sc.capture, &sc.far);
        let erle = sc.erle_db(&out, 2.0, 4.0);
        let erle_linear = sc.erle_db(&out_linear, 2.0, 4.0);
        let khz = rate / 1000;
        println!(
            "{blocks}: {khz} kHz, {tail_ms} ms tail: ERLE 2-4 s {erle:.1} dB ({erle_linear:.1} dB \
             linear only), state {} + {} B",
            std::mem::size_of::<EchoCanceller>(),
            heap_bytes(&full)
        );
        assert!(out.iter().all(|v| v.is_finite()));
        assert!(
            erle >= 30.0,
            "{blocks}, {khz} kHz, {tail_ms} ms: ERLE {erle:.1} dB"
        );
        assert!(
            erle_linear >= 12.0,
            "{blocks}, {khz} kHz, {tail_ms} ms: linear ERLE {erle_linear:.1} dB"
        );
    }

    /// Heap bytes of a canceller's state (FFT plans' twiddles and the work space, which a
    /// lane shares among its cancellers, not included).
    fn heap_bytes(aec: &EchoCanceller) -> usize {
        let c = std::mem::size_of::<Complex32>();
        let f = std::mem::size_of::<f32>();
        let complex = [&aec.ref_spectra, &aec.background, &aec.foreground];
        let real = [
            &aec.ref_prev,
            &aec.prop,
            &aec.partition_norm,
            &aec.err_power,
            &aec.echo_power,
            &aec.leak_err,
            &aec.leak_echo,
            &aec.band_err_mean,
            &aec.band_echo_mean,
            &aec.ref_peaks,
            &aec.out_prev,
            &aec.echo_prev,
            &aec.res_err_power,
            &aec.res_echo_power,
            &aec.res_leak_err,
            &aec.res_leak_echo,
            &aec.res_residual,
            &aec.res_noise,
        ];
        complex.iter().map(|b| b.len() * c).sum::<usize>()
            + real.iter().map(|b| b.len() * f).sum::<usize>()
    }

    #[test]
    fn configuration_outside_the_supported_rates_and_tails_is_refused() {
        for (rate, tail) in [
            (11_025, 128),
            (44_100, 64),
            (8000, 63),
            (8000, 129),
            (16000, 0),
        ] {
            let err = EchoCanceller::new(AecConfig {
                sample_rate_hz: rate,
                tail_ms: tail,
                residual_suppression: true,
            })
            .expect_err("unsupported configuration");
            assert_eq!(err.component, "aec");
        }
        for rate in [8000, 16000, 48000] {
            for tail in [64, 100, 128] {
                let aec = canceller(rate, tail, true);
                assert_eq!(aec.partitions, tail.div_ceil(10) as usize);
                assert_eq!(aec.block_samples(), block_len(rate));
                // For 20 ms frames: 20 ms blocks (the tail in whole 20 ms partitions), at
                // 48 kHz for tails over 96 ms only; frames of 10 or 30 ms keep 10 ms blocks.
                let aec = canceller_20(rate, tail, true);
                let block_ms = if rate == 48000 && tail <= 96 { 10 } else { 20 };
                assert_eq!(aec.partitions, tail.div_ceil(block_ms) as usize);
                assert_eq!(
                    aec.block_samples(),
                    rate as usize * block_ms as usize / 1000
                );
            }
        }
        for frame in [0, 80, 240, 320, 480] {
            let expected = if frame > 0 && frame % 160 == 0 {
                160
            } else {
                80
            };
            for tail in [64, 128] {
                assert_eq!(block_for(8000, tail, frame), expected, "{frame}");
                assert_eq!(block_for(16000, tail, 2 * frame), 2 * expected, "{frame}");
            }
            assert_eq!(block_for(48000, 64, 6 * frame), 480, "{frame}");
            assert_eq!(block_for(48000, 96, 6 * frame), 480, "{frame}");
            assert_eq!(block_for(48000, 97, 6 * frame), 6 * expected, "{frame}");
            assert_eq!(block_for(48000, 128, 6 * frame), 6 * expected, "{frame}");
        }
    }

    #[test]
    fn frames_of_mismatched_or_partial_length_are_left_untouched() {
        for (blocks, make) in MAKERS {
            let mut aec = make(8000, 64, true);
            let reference: Vec<i16> = (0..240).map(|i| ((i * 37) % 2000) as i16 - 1000).collect();
            // With 20 ms blocks a 10 ms frame is partial too.
            let short = (aec.block == 160).then_some((80, 80));
            for (cap_len, ref_len) in [(160, 80), (150, 150), (80, 160), (1, 1)]
                .into_iter()
                .chain(short)
            {
                let mut capture: Vec<i16> = (0..cap_len).map(|i| (i * 11) as i16).collect();
                let before = capture.clone();
                aec.process(&mut capture, &reference[..ref_len]);
                assert_eq!(capture, before, "{blocks}: {cap_len}/{ref_len}");
            }
            aec.process(&mut [], &[]);
            // Nothing was learnt from the rejected frames.
            assert!(aec.background.iter().all(|w| w.norm_sqr() == 0.0));
        }
    }

    /// Sessions without echo must not be damaged: with a silent reference the output is the
    /// input, bit for bit, both on a fresh canceller and once the reference has gone quiet
    /// for a tail after the canceller had converged on an echo.
    #[test]
    fn silent_reference_leaves_the_capture_bit_exact() {
        for (blocks, make) in MAKERS {
            let rate = 8000;
            let near = read_wav("speech2_8000.wav");
            let silence = vec![0.0f32; 2 * rate as usize];
            let capture = &near[..2 * rate as usize];

            let mut fresh = make(rate, 128, true);
            assert_eq!(run(&mut fresh, capture, &silence), capture);

            let sc = scenario(rate, 2.0, None);
            let mut used = make(rate, 128, true);
            run(&mut used, &sc.capture, &sc.far);
            let out = run(&mut used, capture, &silence);
            // The echo of the last far-end frames, and the suppressor's memory of it, are gone
            // after the tail plus 100 ms.
            let settled = secs(rate, 0.25);
            assert!(out[settled..] == capture[settled..], "{blocks}");
        }
    }

    #[test]
    fn hostile_input_neither_panics_nor_corrupts_the_state() {
        for (blocks, make) in MAKERS {
            for rate in [8000, 16000, 48000] {
                let mut aec = make(rate, 128, true);
                let n = 2 * block_len(rate);
                let mut rng = XorShift(7);
                let signals: [Box<dyn Fn(usize) -> i16>; 6] = [
                    Box::new(|_| i16::MIN),
                    Box::new(|_| i16::MAX),
                    Box::new(|i| if (i / 7) % 2 == 0 { i16::MAX } else { i16::MIN }),
                    Box::new(|_| 0),
                    Box::new(|i| if i % 2 == 0 { i16::MIN } else { i16::MAX }),
                    Box::new(|i| (i as i16).wrapping_mul(7919)),
                ];
                for (a, cap_sig) in signals.iter().enumerate() {
                    for (b, ref_sig) in signals.iter().enumerate() {
                        for frame in 0..20 {
                            let mut capture: Vec<i16> =
                                (0..n).map(|i| cap_sig(i + frame * n)).collect();
                            let reference: Vec<i16> = (0..n)
                                .map(|i| {
                                    let noise = (rng.next_f32() * 100.0) as i16;
                                    ref_sig(i + frame * n).saturating_add(noise)
                                })
                                .collect();
                            aec.process(&mut capture, &reference);
                        }
                        assert!(aec.erle_db().is_finite(), "{blocks}: {a}/{b}");
                        assert!(aec
                            .background
                            .iter()
                            .all(|w| w.re.is_finite() && w.im.is_finite()));
                    }
                }
                // Still works afterwards: silence in, silence out.
                aec.reset();
                let mut capture = vec![0i16; n];
                aec.process(&mut capture, &vec![0i16; n]);
                assert!(capture.iter().all(|&s| s == 0));
            }
        }
    }

    #[test]
    fn reset_forgets_the_echo_path() {
        for (blocks, make) in MAKERS {
            let sc = scenario(8000, 2.0, None);
            let mut aec = make(8000, 64, true);
            run(&mut aec, &sc.capture, &sc.far);
            assert!(aec.erle_db() > 10.0);
            assert!(aec.erle_measured_db().is_some_and(|v| v > 10.0));
            aec.reset();
            assert_eq!(aec.erle_db(), 0.0, "{blocks}");
            assert_eq!(aec.erle_measured_db(), None, "{blocks}");
            assert!(aec.foreground.iter().all(|w| w.norm_sqr() == 0.0));
            // With no model, the first frame of echo passes unchanged.
            let (a, b) = (secs(8000, 1.0), secs(8000, 1.02));
            let out = run(&mut aec, &sc.capture[a..b], &sc.far[a..b]);
            assert_eq!(
                out,
                to_i16(&sc.capture[a..b])
                    .iter()
                    .map(|&v| f32::from(v))
                    .collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn turning_residual_suppression_off_gives_the_linear_canceller_alone() {
        for (blocks, make) in MAKERS {
            let sc = scenario(8000, 2.0, None);
            let mut switched = make(8000, 64, true);
            switched.set_residual_suppression(false);
            assert!(!switched.config().residual_suppression);
            let mut linear = make(8000, 64, false);
            assert_eq!(
                run(&mut switched, &sc.capture, &sc.far),
                run(&mut linear, &sc.capture, &sc.far),
                "{blocks}"
            );
        }
    }

    /// 8 kHz speech through an 80 ms echo path: ERLE ≥ 30 dB with the residual echo
    /// suppressor from 2 s on, for a 128 ms tail and for a 64 ms tail (20 ms delay, 40 ms
    /// path); the linear filter alone must give at least 15 dB.
    #[test]
    fn speech_echo_at_8_khz_is_cancelled_by_30_db_within_2_s() {
        for (blocks, make) in MAKERS {
            for (tail, delay, path) in [(128, DELAY_MS, PATH_MS), (64, 20, 40)] {
                let sc = scenario_with(8000, 5.0, delay, path, None);
                let mut full = make(8000, tail, true);
                let mut linear = make(8000, tail, false);
                let out = run(&mut full, &sc.capture, &sc.far);
                let out_linear = run(&mut linear, &sc.capture, &sc.far);
                let erle = sc.erle_db(&out, 2.0, 5.0);
                let erle_linear = sc.erle_db(&out_linear, 2.0, 5.0);
                println!(
                    "{blocks}: 8 kHz, {tail} ms tail: ERLE 2-5 s {erle:.1} dB ({erle_linear:.1} dB linear only; \
                     {:.1} dB counting far-end pauses), 0.5-1 s {:.1} dB, 1-2 s {:.1} dB, \
                     meter {:.1} dB, state {} + {} B, work space (per lane) {} B",
                    sc.erle_all_blocks_db(&out, 2.0, 5.0),
                    sc.erle_db(&out, 0.5, 1.0),
                    sc.erle_db(&out, 1.0, 2.0),
                    full.erle_db(),
                    std::mem::size_of::<EchoCanceller>(),
                    heap_bytes(&full),
                    full.own_work.as_ref().map_or(0, |w| w.bytes()),
                );
                assert!(erle >= 30.0, "{tail} ms: ERLE {erle:.1} dB");
                assert!(
                    erle_linear >= 15.0,
                    "{tail} ms: linear ERLE {erle_linear:.1} dB"
                );
                // The canceller's own meter (its last whole second) reads what the test
                // measures over the last second.
                let last = sc.erle_all_blocks_db(&out, 4.0, 5.0);
                let meter = f64::from(full.erle_db());
                println!("{blocks}, {tail} ms: meter {meter:.1} dB, 4-5 s {last:.1} dB");
                assert!(
                    (meter - last).abs() < 3.0,
                    "meter {meter:.1}, 4-5 s {last:.1} dB"
                );
            }
        }
    }

    /// The AVX-512 and AVX2 builds of the block kernels (see `processing::simd`) round
    /// every operation as the portable one does: the same output bits, with residual
    /// suppression, at 8 and 16 kHz through double talk and at 48 kHz in single talk with
    /// the 128 ms tail, which takes 20 ms blocks there (the AVX-512 comparison where the
    /// CPU has it).
    #[test]
    fn the_avx512_avx2_and_portable_builds_give_the_same_bits() {
        for (blocks, make) in MAKERS {
            use crate::processing::simd::{avx512_and_avx2, both_builds, same_bits};
            for rate in [8000, 16000, 48000] {
                // (No near-end speech file at 48 kHz here: single talk.)
                let (tail, double_talk) = if rate == 48000 {
                    (128, None)
                } else {
                    (64, Some((1.5, 2.5)))
                };
                let s = scenario(rate, 3.0, double_talk);
                let go = || run(&mut make(rate, tail, true), &s.capture, &s.far);
                let (wide, narrow) = both_builds(go);
                assert!(
                    same_bits(&wide, &narrow),
                    "{blocks}: {rate} Hz: the builds differ"
                );
                // Not trivially equal: the canceller changed the capture.
                assert!(wide.iter().zip(&s.capture).any(|(&a, &b)| a != b.round()));
                if let Some((widest, avx2)) = avx512_and_avx2(go) {
                    assert!(
                        same_bits(&widest, &avx2),
                        "{rate} Hz: AVX-512 and AVX2 differ"
                    );
                    assert!(
                        same_bits(&widest, &narrow),
                        "{rate} Hz: AVX-512 and portable differ"
                    );
                }
            }
        }
    }

    /// Double talk from 4.5 to 6 s: the echo path model survives it (a frozen copy taken at
    /// any point of it still cancels > 10 dB of echo alone), the ERLE is back to ≥ 25 dB
    /// a quarter second after it ends, and the near-end speech comes through.
    #[test]
    fn double_talk_neither_derails_the_filter_nor_loses_the_near_end() {
        for (blocks, make) in MAKERS {
            let rate = 8000;
            let (dt_start, dt_end) = (4.5, 6.0);
            let sc = scenario(rate, 8.0, Some((dt_start, dt_end)));
            let echo_only = sc.echo_only();
            let mut aec = make(rate, 128, true);
            let mut linear = make(rate, 128, false);
            let mut out = run(
                &mut aec,
                &sc.capture[..secs(rate, dt_start)],
                &sc.far[..secs(rate, dt_start)],
            );
            let mut out_linear = run(
                &mut linear,
                &sc.capture[..secs(rate, dt_start)],
                &sc.far[..secs(rate, dt_start)],
            );
            // Each quarter second, a frozen copy of the linear canceller is measured on the
            // same stretch of echo alone (2.5-4.5 s, already heard in single talk), so that
            // only a change of the model can change the figure.
            let (eval_from, eval_to) = (2.25, 4.5);
            let (ea, eb) = (secs(rate, eval_from), secs(rate, eval_to));
            let mut frozen_erle = Vec::new();
            let mut t = dt_start;
            loop {
                let mut frozen = linear.clone();
                frozen.frozen = true;
                let mut frozen_out = vec![0.0f32; ea];
                frozen_out.extend(run(&mut frozen, &echo_only[ea..eb], &sc.far[ea..eb]));
                frozen_erle.push(sc.erle_db(&frozen_out, eval_from + 0.25, eval_to));
                if t >= dt_end {
                    break;
                }
                let (a, b) = (secs(rate, t), secs(rate, t + 0.25));
                out.extend(run(&mut aec, &sc.capture[a..b], &sc.far[a..b]));
                out_linear.extend(run(&mut linear, &sc.capture[a..b], &sc.far[a..b]));
                t += 0.25;
            }
            let worst_frozen = frozen_erle.iter().copied().fold(f64::MAX, f64::min);
            println!("{blocks}: frozen copies: {frozen_erle:.1?}");
            let rest = secs(rate, dt_end)..sc.capture.len();
            out.extend(run(
                &mut aec,
                &sc.capture[rest.clone()],
                &sc.far[rest.clone()],
            ));
            out_linear.extend(run(&mut linear, &sc.capture[rest.clone()], &sc.far[rest]));

            let recovered = sc.erle_db(&out, dt_end + 0.25, 8.0);
            let recovered_linear = sc.erle_db(&out_linear, dt_end + 0.25, 8.0);
            let seg_snr = sc.near_end_seg_snr_db(&out, dt_start, dt_end);
            let seg_snr_linear = sc.near_end_seg_snr_db(&out_linear, dt_start, dt_end);
            let capture_seg_snr = sc.near_end_seg_snr_db(&sc.capture, dt_start, dt_end);
            let corr = sc.near_end_correlation(&out, dt_start, dt_end);
            println!(
                "double talk: frozen-copy ERLE >= {worst_frozen:.1} dB, ERLE after {recovered:.1} dB \
                 ({recovered_linear:.1} linear), near-end segSNR {seg_snr:.1} dB ({seg_snr_linear:.1} \
                 linear, {capture_seg_snr:.1} unprocessed), correlation {corr:.3}"
            );
            assert!(worst_frozen > 10.0, "frozen copy {worst_frozen:.1} dB");
            assert!(recovered >= 25.0, "after double talk {recovered:.1} dB");
            assert!(seg_snr >= 15.0, "near-end segSNR {seg_snr:.1} dB");
            assert!(corr >= 0.9, "near-end correlation {corr:.3}");
        }
    }

    /// 16 kHz: converges like 8 kHz (ERLE ≥ 30 dB with the suppressor from 2 s on; the
    /// linear filter alone at least 12 dB: the 4-8 kHz band holds little speech and the same
    /// white noise, so it converges more slowly there).
    #[test]
    fn speech_echo_at_16_khz_is_cancelled_by_30_db_within_2_s() {
        let sc = scenario(16000, 4.0, None);
        for (blocks, make) in MAKERS {
            assert_converges_within_2_s(&sc, blocks, make, 128);
        }
    }

    /// 48 kHz, in 10 ms blocks and in 20 ms ones (the 1,920-point transforms), at both
    /// ends of the tail range: converges like 16 kHz, ERLE ≥ 30 dB with the suppressor
    /// from 2 s on.
    #[test]
    fn speech_echo_at_48_khz_is_cancelled_by_30_db_within_2_s() {
        let sc = scenario(48000, 4.0, None);
        let makers: [(&str, Maker); 2] = [
            ("10 ms blocks", canceller),
            ("20 ms blocks", canceller_20_blocks),
        ];
        for tail in [64, 128] {
            for (blocks, make) in makers {
                assert_converges_within_2_s(&sc, blocks, make, tail);
            }
        }
    }
}
