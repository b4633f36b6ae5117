//! Voice activity detection (VAD) for DTX, comfort noise and talkspurt events.
//!
//! [`Vad::process`] classifies each frame (any whole number of 10 ms blocks) as speech or
//! not and reports the start and end of talkspurts. The detector works block by block:
//!
//! 1. **Spectrum.** Every 10 ms a 20 ms sine window (the current block and the one
//!    before, 50 % overlap) is transformed with a real FFT: the noise suppressor's
//!    analysis ([`super::ns`], the periodic square-root Hann window, which is the sine
//!    window sin(πn / 2L)), so that in a chain with both the suppressor's transform of a
//!    block serves the detector too. The squared sine window meets
//!    the Princen–Bradley condition (w²(n) + w²(n + L) = 1, as in the MDCT), so every
//!    sample weighs the same in the analysis; a window over the block alone would all but
//!    ignore its edges and leave a noisier spectrum. The 50 Hz bins are summed in pairs
//!    into 100 Hz bands, and only 100 Hz – 4 kHz (8 kHz sampling) or 100 Hz – 8 kHz (16 and
//!    48 kHz) is analysed: the telephone speech band, and the band where speech has energy
//!    above a typical background.
//! 2. **Noise spectrum.** The noise per band is a recursive average (time constant about
//!    200 ms) of the blocks judged to be noise, the classic VAD-gated estimate (ITU-T
//!    G.729 Annex B, 3GPP TS 26.094 both update their background only in noise). A block
//!    is judged noise when its whitened energy (below) is under 1.5 dB and the smoothed
//!    one under the threshold, *or* when it lies below a minimum-statistics estimate
//!    (Martin, "Noise power spectral density estimation based on optimal smoothing
//!    and minimum statistics", IEEE TSAP 2001: per band, the minimum of the smoothed power
//!    over 1.5–1.75 s in six sub-windows, times a bias factor). Speech cannot raise that
//!    minimum as long as it pauses once in 1.5 s, and it does not depend on the average,
//!    so the second test keeps the average from locking below a noise that has risen
//!    (where every block would look like speech and none would update it). A rise of more
//!    than 5 dB is taken over from the minimum at once, and the detection noise never
//!    exceeds the minimum estimate by more than 2 dB; a block more than 17 dB *below* the
//!    estimate (the
//!    noise source stopped, the level fell) restarts the estimates from that block, as at
//!    the start of a stream.
//! 3. **Feature.** The mean over bands of the power-to-noise ratio — the block energy
//!    after whitening by the noise spectrum, i.e. the locally optimal detector of a weak
//!    signal in Gaussian noise of known spectrum (the first-order term of the
//!    likelihood-ratio test of Sohn, Kim & Sung, "A statistical model-based voice activity
//!    detection", IEEE SPL 1999). Unlike raw energy it weighs every band by how far it
//!    stands above *its own* noise, so a fricative's energy at 3 kHz counts even under
//!    low-frequency noise, and it does not depend on the signal level: −40 dBFS speech
//!    over a −80 dBFS floor reads the same as −6 dBFS speech over −46 dBFS. It reads 0 dB
//!    on stationary noise and is smoothed over about three blocks; the smoothed value may
//!    exceed the block's own by at most 2 dB at a high long-term SNR, so that it falls with
//!    the signal when a word ends, and by up to 11 dB at a low one, where the ends of words
//!    sink into the noise and only the smoothing carries them.
//! 4. **Decision.** A block is speech-like when the smoothed feature exceeds
//!    [`VadConfig::threshold_db`]. A talkspurt starts on one speech-like block that is
//!    also above the threshold on its own energy (over the first blocks, while the noise
//!    estimate rests on few of them, by a margin shrinking as 1 / blocks), unless its
//!    window is impulsive (2.5 ms holding three quarters of the windowed energy: a click,
//!    a key press), when it takes four such blocks in a row; the smoothing restarts from
//!    0 dB on the first window clear of a click. So clicks do not start talkspurts while
//!    speech onsets are not delayed. After a burst
//!    of at least [`VadConfig::min_burst_ms`] an optional hangover holds the talkspurt for
//!    [`VadConfig::hangover_ms`] after the last speech-like block (the AMR VAD option 1 of
//!    3GPP TS 26.094 adds hangover only after a burst, 7 frames of 20 ms in high noise and
//!    4 in low noise); it follows the long-term SNR, in full up to 15 dB and none from
//!    25 dB, where word endings are followed down to the noise floor directly. By default
//!    there is none: the smoothing of the feature already holds a talkspurt for tens of
//!    milliseconds after a word in noise, and any hangover on top measured as more frames
//!    wrong (background sent after each talkspurt) than right.
//!
//! A frame is speech if any of its blocks is; [`VadDecision::transition`] reports the frame
//! where a talkspurt starts or ends. A frame whose length is not a whole number of 10 ms
//! blocks is a caller bug: its whole blocks are processed and the rest is ignored (a frame
//! shorter than one block changes nothing).
//!
//! Measured by the tests below (20 ms frames against labels from the clean signal's
//! energy, P.56 active level − 30 dB): 96–97 % right on clean speech at 8, 16 and 48 kHz
//! and at −40 and −6 dBFS; 90.3–94.0 % with pink noise at 10 dB SNR on every file and
//! rate over seven noise seeds (speech2 at 8 kHz is the hardest, 90.3–92.1 %; see the
//! test `pink_noise_at_10_db_snr_...`); stationary pink or white noise alone reads as
//! speech in under 2 % of frames, and rises of 2–20 dB in the noise are learnt within 3 s.
//! Cost per 20 ms frame (timing loop over noisy speech, optimised build, one shared Xeon
//! core): 1.1 µs at 8 kHz, 2.1–2.6 µs at 16 kHz, 6.0–6.3 µs at 48 kHz (the 960-point
//! transform). State per stream: 144 bytes inline plus 1.7 / 3.5 / 4.2 kB at 8 / 16 /
//! 48 kHz (1.6 / 3.2 / 3.2 kB in a chain with a noise suppressor, whose analysis it reads
//! instead of keeping samples of its own), of which about 0.6 / 1.3 / 1.3 kB is read per
//! block (the ring of sub-window minima only every 25 blocks); the work buffers
//! (window, spectrum, per-band powers and noise, 2.7 / 5.4 / 14.4 kB) are lent by the
//! caller in a lane's chain ([`super::DspScratch`]), and the FFT plan and window are
//! shared by every detector and suppressor at a rate.
//!
//! Everything is allocated in [`Vad::new`]; [`Vad::process`], [`Vad::reset`] and
//! [`Vad::reconfigure`] never allocate, lock, block or panic, whatever the samples.
//!
//! ```
//! use media_core::processing::audio::vad::{Vad, VadConfig, VadTransition};
//!
//! let mut vad = Vad::new(VadConfig::default()).unwrap(); // control plane: allocates once
//! let frame = [0i16; 160]; // 20 ms at 8 kHz
//! let decision = vad.process(&frame);
//! assert!(!decision.speech);
//! if decision.transition == Some(VadTransition::TalkspurtEnd) {
//!     // start sending comfort noise (SID) ...
//! }
//! ```

use std::fmt;
use std::sync::Arc;

use super::config::{block_len, check_rate, DspConfigError};
use super::ns::{shared_plan, NsPlan, NsWork};
use super::{fast_max, fast_min};

/// Lowest frequency analysed (Hz): below it is mains hum and handling noise, not speech.
const ANALYSIS_LOW_HZ: usize = 100;
/// Highest frequency analysed at 8 kHz (Hz): the whole telephone band.
const ANALYSIS_HIGH_NARROWBAND_HZ: usize = 4_000;
/// Highest frequency analysed at 16 and 48 kHz (Hz): wideband speech; above it there is
/// little speech energy and often only noise.
const ANALYSIS_HIGH_WIDEBAND_HZ: usize = 8_000;
/// Width of the analysis bands (Hz): two bins of the 20 ms transform.
const BAND_HZ: usize = 100;

/// Smoothing per noise block of the noise average (a time constant of 20 noise blocks).
const NOISE_SMOOTHING: f32 = 0.95;
/// A block whose whitened energy is under this (1.5 dB), and whose smoothed feature is
/// under the threshold, updates the noise average.
const NOISE_GATE: f32 = 1.412_537_5;
/// A block whose energy whitened by the minimum-statistics estimate is under this
/// (0 dB) updates the noise average too, whatever the average says.
const MIN_STAT_GATE: f32 = 1.0;
/// The noise average is replaced by the minimum-statistics estimate when that is this
/// many times larger in total (5 dB): the noise has risen.
const RESEED_RATIO: f32 = 3.2;
/// The noise used for detection is at most this many times the minimum-statistics
/// estimate per band (2 dB).
const NOISE_CAP: f32 = 1.6;

/// Smoothing of the power whose minimum is tracked (per block).
const MIN_STAT_SMOOTHING: f32 = 0.7;
/// Blocks per minimum-statistics sub-window (250 ms).
const MIN_STAT_SUBWINDOW_BLOCKS: u32 = 25;
/// Sub-windows whose minima are kept: the minimum is taken over 1.5–1.75 s.
const MIN_STAT_SUBWINDOWS: usize = 6;
/// Factor from the minimum to the noise estimate: the mean-to-minimum ratio of the
/// smoothed band power of stationary noise over this window (Martin 2001 §IV), measured
/// at 2.6 for this spectrum, smoothing and window. Slightly less keeps the estimate on
/// the low side during speech, when the minimum is taken over fewer noise-only blocks.
const MIN_STAT_BIAS: f32 = 2.5;

/// Mean square (sample units²) of −110 dBFS: added to every band's power so that digital
/// silence has a finite, quiet noise floor.
const QUIET_MEAN_SQUARE: f32 = 32_768.0 * 32_768.0 * 1e-11;
/// Largest power-to-noise ratio one band may contribute (40 dB), so that one band cannot
/// swamp the mean.
const MAX_BAND_RATIO: f32 = 1e4;
/// A block whose whitened energy is this far below the noise estimate (−17 dB; on
/// stationary noise it stays within ±2 dB) restarts the noise estimates.
const RESTART_RATIO: f32 = 0.02;
/// Smoothing of the feature per block (about three blocks of memory).
const FEATURE_SMOOTHING: f32 = 0.7;
/// The smoothed feature may exceed the current block's by at most this factor (1.8 dB)
/// at a high long-term SNR ...
const FEATURE_MAX_CARRY: f32 = 1.5;
/// ... and by this much more (9 dB) at a low one (see [`FULL_HANGOVER_SNR_DB`]).
const FEATURE_LOW_SNR_CARRY: f32 = 8.0;

/// Long-term SNR (dB) up to which the whole hangover and the low-SNR carry apply.
const FULL_HANGOVER_SNR_DB: f32 = 15.0;
/// Long-term SNR (dB) from which no hangover and only the high-SNR carry apply.
const NO_HANGOVER_SNR_DB: f32 = 25.0;
/// Smoothing per speech block of the speech power used for the long-term SNR and of the
/// speech level (time constant 0.5 s of speech).
const SPEECH_LEVEL_SMOOTHING: f32 = 0.98;
/// Share of the windowed energy in two adjacent sub-blocks (2.5 ms of the 20 ms window)
/// above which the window is impulsive.
const CLICK_CONCENTRATION: f32 = 0.75;
/// Blocks in a row above the threshold on their own energy that start a talkspurt on an
/// impulsive window (a click shows in two or three windows; a voice whose every window
/// looks impulsive still starts one, 30 ms late).
const IMPULSIVE_ONSET_BLOCKS: u32 = 4;

/// Level reported by [`Vad::level_dbfs`] before any speech, and the floor of both levels.
pub const MIN_LEVEL_DBFS: f32 = -100.0;
/// Longest accepted [`VadConfig::hangover_ms`].
pub const MAX_HANGOVER_MS: u32 = 1_000;
/// Longest accepted [`VadConfig::min_burst_ms`].
pub const MAX_MIN_BURST_MS: u32 = 500;
/// Accepted range of [`VadConfig::threshold_db`].
pub const THRESHOLD_RANGE_DB: std::ops::RangeInclusive<f32> = 0.25..=20.0;

/// Voice activity detector settings (control plane).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VadConfig {
    /// Sample rate of the audio (8000, 16000 or 48000 Hz).
    pub sample_rate_hz: u32,
    /// How long a talkspurt is held after its last speech-like block, in ms (rounded down
    /// to whole 10 ms blocks; at most [`MAX_HANGOVER_MS`]). Applies in full when the
    /// long-term SNR is 15 dB or less, shrinks linearly to nothing at 25 dB.
    pub hangover_ms: u32,
    /// Speech-like threshold on the noise-whitened block energy, in dB above the noise
    /// (within [`THRESHOLD_RANGE_DB`]). Lower detects weaker speech and makes more false
    /// alarms in noise; raise it for a more aggressive (bandwidth-saving) detector.
    pub threshold_db: f32,
    /// Shortest run of speech-like blocks, in ms, after which the hangover applies
    /// (rounded down to blocks; at most [`MAX_MIN_BURST_MS`]); shorter bursts — usually
    /// noise — end as soon as they stop.
    pub min_burst_ms: u32,
}

impl Default for VadConfig {
    /// 8 kHz, no hangover (the feature smoothing holds a talkspurt for tens of ms after a
    /// word in noise; see the module docs), 0.5 dB threshold, 50 ms minimum burst.
    fn default() -> Self {
        VadConfig {
            sample_rate_hz: 8_000,
            hangover_ms: 0,
            threshold_db: 0.5,
            min_burst_ms: 50,
        }
    }
}

impl VadConfig {
    /// Checks every setting, naming the first one that is out of range.
    pub fn validate(&self) -> Result<(), DspConfigError> {
        check_rate("vad", self.sample_rate_hz)?;
        if self.hangover_ms > MAX_HANGOVER_MS {
            return Err(DspConfigError {
                component: "vad",
                reason: "hangover_ms must be at most 1000",
            });
        }
        if !THRESHOLD_RANGE_DB.contains(&self.threshold_db) {
            return Err(DspConfigError {
                component: "vad",
                reason: "threshold_db must be between 0.25 and 20 dB",
            });
        }
        if self.min_burst_ms > MAX_MIN_BURST_MS {
            return Err(DspConfigError {
                component: "vad",
                reason: "min_burst_ms must be at most 500",
            });
        }
        Ok(())
    }
}

/// Start or end of a talkspurt, reported on the frame where it happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VadTransition {
    /// This frame is the first speech frame after non-speech (resume sending speech).
    TalkspurtStart,
    /// This frame is the first non-speech frame after speech (start DTX / comfort noise).
    TalkspurtEnd,
}

/// The classification of one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VadDecision {
    /// True when any block of the frame belongs to a talkspurt (hangover included).
    pub speech: bool,
    /// Set on the frame where a talkspurt starts or ends.
    pub transition: Option<VadTransition>,
}

/// Voice activity detector for one mono stream; see the [module docs](self).
///
/// Built on the control plane by [`Vad::new`]; [`Vad::process`], [`Vad::reset`] and
/// [`Vad::reconfigure`] run on the real-time thread and never allocate, lock or panic.
#[derive(Clone)]
pub struct Vad {
    core: VadCore,
    /// The analysis buffers (window, transform, periodogram), shared with the noise
    /// suppressor's; a lane's chain lends one set to every session instead.
    spectral: NsWork,
    work: VadWork,
}

impl fmt::Debug for Vad {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.core.fmt(f)
    }
}

impl fmt::Debug for VadCore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vad")
            .field("config", &self.config)
            .field("in_talkspurt", &self.s.in_talkspurt)
            .field("level_dbfs", &self.level_dbfs())
            .field("noise_level_dbfs", &self.noise_level_dbfs())
            .finish_non_exhaustive()
    }
}

impl Vad {
    /// Builds a detector for `config`, allocating everything it will use. Control plane.
    pub fn new(config: VadConfig) -> Result<Vad, DspConfigError> {
        let core = VadCore::new(config, true)?;
        Ok(Vad {
            core,
            spectral: NsWork::for_rates(&[config.sample_rate_hz]),
            work: VadWork::for_rates(&[config.sample_rate_hz]),
        })
    }

    /// Changes the hangover, threshold and minimum burst without reallocating; the sample
    /// rate cannot change (build a new detector). On error nothing changes.
    ///
    /// Called on the real-time thread; never allocates.
    pub fn reconfigure(&mut self, config: VadConfig) -> Result<(), DspConfigError> {
        self.core.reconfigure(config)
    }

    /// The settings in use.
    pub fn config(&self) -> VadConfig {
        self.core.config
    }

    /// Forgets the stream: noise estimates, levels and talkspurt state start afresh.
    ///
    /// Called on the real-time thread; never allocates.
    pub fn reset(&mut self) {
        self.core.reset();
    }

    /// Classifies one frame of whole 10 ms blocks; a trailing partial block is ignored and
    /// a frame shorter than one block returns the previous decision with no transition.
    ///
    /// Called on the real-time thread; never allocates.
    pub fn process(&mut self, frame: &[i16]) -> VadDecision {
        self.core.process(frame, &mut self.spectral, &mut self.work)
    }

    /// The last frame's decision (false before any frame).
    pub fn is_speech(&self) -> bool {
        self.core.s.last_speech
    }

    /// Smoothed level of the speech blocks in dBFS RMS (0 dBFS = RMS of 32768), an
    /// estimate of the active speech level over about the last half second of speech
    /// (for AGC); [`MIN_LEVEL_DBFS`] before any speech.
    pub fn level_dbfs(&self) -> f32 {
        self.core.level_dbfs()
    }

    /// Estimated background noise level in dBFS RMS within the analysed band
    /// (100 Hz – 4 kHz at 8 kHz, 100 Hz – 8 kHz at 16 and 48 kHz), for comfort noise;
    /// at least [`MIN_LEVEL_DBFS`].
    pub fn noise_level_dbfs(&self) -> f32 {
        self.core.noise_level_dbfs()
    }

    /// Bytes of heap buffers this detector owns, not counting the FFT plans and window it
    /// shares with every detector and noise suppressor at its rate: the per-stream state
    /// plus its own work buffers (in a lane's DSP chain only the state is per session).
    pub fn heap_bytes(&self) -> usize {
        self.core.state_bytes() + self.spectral.bytes() + self.work.bytes()
    }
}

/// The analysed bands at `sample_rate_hz`: (index of the first 100 Hz band, number of
/// bands).
fn band_range(sample_rate_hz: u32) -> (usize, usize) {
    let nyquist_hz = sample_rate_hz as usize / 2;
    let high_hz = if sample_rate_hz == 8_000 {
        ANALYSIS_HIGH_NARROWBAND_HZ
    } else {
        ANALYSIS_HIGH_WIDEBAND_HZ
    };
    // Bands whose both bins lie strictly below Nyquist (the Nyquist bin is not a full bin).
    let last_band = high_hz.min(nyquist_hz.saturating_sub(BAND_HZ)) / BAND_HZ;
    let first_band = ANALYSIS_LOW_HZ / BAND_HZ;
    (first_band, (last_band + 1).saturating_sub(first_band))
}

/// Per-band work buffers of one block, rewritten before they are read in every block, so
/// one set serves any number of detectors run one after another on a thread (see
/// [`super::DspScratch`]): the block's band powers, the minimum-statistics noise estimate
/// and the detection noise.
#[derive(Clone)]
pub(crate) struct VadWork {
    bands: Box<[f32]>,
}

impl VadWork {
    /// Buffers for detectors at any of `rates_hz` (control plane: allocates).
    pub(crate) fn for_rates(rates_hz: &[u32]) -> VadWork {
        let bands = rates_hz.iter().map(|&r| band_range(r).1).max().unwrap_or(0);
        VadWork {
            bands: vec![0.0; WORK_BAND_ARRAYS * bands].into_boxed_slice(),
        }
    }

    fn bytes(&self) -> usize {
        4 * self.bands.len()
    }
}

/// Per-band arrays in [`VadWork`]: power, minimum-statistics noise, detection noise.
const WORK_BAND_ARRAYS: usize = 3;
/// Per-band arrays of per-stream state read or written every block: the noise average,
/// the smoothed power whose minimum is tracked, its minimum in the current sub-window,
/// and the minimum over the last sub-windows. The ring of sub-window minima
/// ([`MIN_STAT_SUBWINDOWS`] rows, touched once per sub-window) follows them.
const STATE_BAND_ARRAYS: usize = 4;

/// The per-stream part of a detector: settings, the shared plan and what carries from
/// block to block. This is what each session of a lane keeps; the work buffers
/// ([`NsWork`], [`VadWork`]) are lent by the caller, and inside a chain with a noise
/// suppressor the analysis too (see [`VadCore::analysed_block`]).
#[derive(Clone)]
pub(crate) struct VadCore {
    config: VadConfig,
    /// 10 ms in samples: the analysis hop (the FFT is twice as long).
    block_len: usize,
    /// First analysed band (index of 100 Hz bands) and the number of bands.
    first_band: usize,
    bands: usize,
    hangover_blocks: u32,
    min_burst_blocks: u32,
    /// Added to each band's power: the band power of −110 dBFS white noise.
    power_floor: f32,
    /// [`VadConfig::threshold_db`] as a power ratio.
    threshold: f32,
    /// FFT plan and window, shared by every detector and noise suppressor at this rate.
    plan: Arc<NsPlan>,
    /// The previous block's samples: the first half of the next analysis window (none
    /// for a detector that is always handed its analysis).
    previous: Box<[i16]>,
    /// One allocation, so a block's state is one contiguous run of memory: the
    /// [`STATE_BAND_ARRAYS`] per-band arrays, then the ring of sub-window minima.
    state: Box<[f32]>,
    s: Scalars,
}

/// The scalar state of a detector.
#[derive(Debug, Clone, Copy)]
struct Scalars {
    /// Blocks processed since construction, reset or restart (saturating).
    blocks: u32,
    /// Blocks into the current minimum-statistics sub-window.
    ms_window_blocks: u32,
    /// Where `ms_window_blocks` starts (see [`VadCore::stagger`]); 0 unless staggered.
    ms_phase: u32,
    /// Next row of the ring of sub-window minima to overwrite.
    ms_ring_pos: usize,
    /// Smoothed whitened energy (linear).
    feature: f32,
    /// Speech-like blocks in a row.
    burst_blocks: u32,
    /// Blocks in a row above the threshold on their own (unsmoothed) energy.
    loud_blocks: u32,
    /// True when the last window was impulsive.
    last_impulsive: bool,
    /// True while in a talkspurt.
    in_talkspurt: bool,
    /// Hangover blocks left.
    hangover_left: u32,
    /// Σ over bands of the detection noise of the last block.
    noise_total: f32,
    /// Σ over bands of the noise average, kept up to date wherever the average changes
    /// (the recursive average of the sums is the sum of the averages), so that it is not
    /// summed again every block.
    average_total: f32,
    /// Smoothed analysed-band power of speech blocks (0 before any speech).
    speech_band_power: f32,
    /// Smoothed mean square of speech blocks (0 before any speech).
    speech_mean_square: f32,
    /// The last frame's decision.
    last_speech: bool,
}

impl Scalars {
    const START: Scalars = Scalars {
        blocks: 0,
        ms_window_blocks: 0,
        ms_phase: 0,
        ms_ring_pos: 0,
        feature: 1.0,
        burst_blocks: 0,
        loud_blocks: 0,
        last_impulsive: false,
        in_talkspurt: false,
        hangover_left: 0,
        noise_total: 0.0,
        average_total: 0.0,
        speech_band_power: 0.0,
        speech_mean_square: 0.0,
        last_speech: false,
    };
}

/// One block's per-band arrays: the work buffers and the per-stream state.
struct Bands<'a> {
    /// Power of the current block.
    power: &'a mut [f32],
    /// Minimum-statistics noise estimate (bias × minimum).
    ms_noise: &'a mut [f32],
    /// Noise used for detection: min(average, cap × minimum statistics).
    noise: &'a mut [f32],
    /// Noise average, updated by noise blocks.
    noise_average: &'a mut [f32],
    /// Smoothed power whose minimum is tracked.
    ms_smoothed: &'a mut [f32],
    /// Minimum of `ms_smoothed` in the current sub-window.
    ms_window_min: &'a mut [f32],
    /// Minimum over `ms_ring`.
    ms_ring_min: &'a mut [f32],
    /// Minima of the last sub-windows: [`MIN_STAT_SUBWINDOWS`] rows of one value per band.
    ms_ring: &'a mut [f32],
}

impl VadCore {
    /// Starts loading this state's buffers into cache (a hint: reads only their addresses,
    /// none of their contents). Real-time safe.
    #[inline]
    pub(crate) fn prefetch(&self) {
        crate::runtime::prefetch::slice(&self.previous);
        crate::runtime::prefetch::slice(&self.state);
    }

    /// Validates `config` and allocates the per-stream state; `own_analysis`: whether the
    /// detector will analyse its frames itself ([`VadCore::process`]) and so keep the
    /// previous block, or always be handed the analysis ([`VadCore::analysed_block`]).
    /// Control plane.
    pub(crate) fn new(config: VadConfig, own_analysis: bool) -> Result<VadCore, DspConfigError> {
        config.validate()?;
        let block_len = block_len(config.sample_rate_hz);
        let (first_band, bands) = band_range(config.sample_rate_hz);
        let plan = shared_plan(config.sample_rate_hz).ok_or(DspConfigError {
            component: "vad",
            reason: "sample rate must be 8000, 16000 or 48000 Hz",
        })?;
        let previous = if own_analysis { block_len } else { 0 };
        let mut vad = VadCore {
            config,
            block_len,
            first_band,
            bands,
            hangover_blocks: 0,
            min_burst_blocks: 0,
            // Two bins of E|X|² = σ² Σ w², and Σ w² = block_len for this window.
            power_floor: QUIET_MEAN_SQUARE * 2.0 * block_len as f32,
            threshold: 1.0,
            plan,
            previous: vec![0; previous].into_boxed_slice(),
            state: vec![0.0; (STATE_BAND_ARRAYS + MIN_STAT_SUBWINDOWS) * bands].into_boxed_slice(),
            s: Scalars::START,
        };
        vad.apply_settings(&config);
        vad.reset();
        Ok(vad)
    }

    /// See [`Vad::reconfigure`].
    pub(crate) fn reconfigure(&mut self, config: VadConfig) -> Result<(), DspConfigError> {
        config.validate()?;
        if config.sample_rate_hz != self.config.sample_rate_hz {
            return Err(DspConfigError {
                component: "vad",
                reason: "sample rate cannot change; build a new detector",
            });
        }
        self.apply_settings(&config);
        Ok(())
    }

    fn apply_settings(&mut self, config: &VadConfig) {
        self.config = *config;
        self.hangover_blocks = config.hangover_ms / 10;
        self.min_burst_blocks = (config.min_burst_ms / 10).max(1);
        self.threshold = 10f32.powf(config.threshold_db / 10.0);
    }

    /// Bytes of per-stream state on the heap.
    pub(crate) fn state_bytes(&self) -> usize {
        2 * self.previous.len() + 4 * self.state.len()
    }

    /// See [`Vad::reset`].
    pub(crate) fn reset(&mut self) {
        self.previous.fill(0);
        let (zeros, minima) = self.state.split_at_mut(2 * self.bands);
        // The noise average and the smoothed power start at zero, every minimum at
        // infinity.
        zeros.fill(0.0);
        minima.fill(f32::INFINITY);
        let phase = self.s.ms_phase;
        self.s = Scalars {
            ms_window_blocks: phase,
            ms_phase: phase,
            ..Scalars::START
        };
    }

    /// Offsets the detector's minimum-statistics sub-windows by `k` blocks (modulo their
    /// length). Every sub-window's end costs a pass over the ring of minima; detectors
    /// started together (a gateway's calls created in one batch) would otherwise all pay
    /// it in the same tick, every 250 ms. The engine staggers each session's by its slot.
    /// Control plane.
    pub(crate) fn stagger(&mut self, k: u32) {
        let phase = k % MIN_STAT_SUBWINDOW_BLOCKS;
        self.s.ms_phase = phase;
        self.s.ms_window_blocks = phase;
    }

    /// Splits the state and `work` into one block's per-band arrays (None if `work` is
    /// too small: built for lower rates only, a caller bug).
    fn split<'a>(state: &'a mut [f32], work: &'a mut VadWork, bands: usize) -> Option<Bands<'a>> {
        let work = work.bands.get_mut(..WORK_BAND_ARRAYS * bands)?;
        let (power, rest) = work.split_at_mut(bands);
        let (ms_noise, noise) = rest.split_at_mut(bands);
        let (noise_average, rest) = state.split_at_mut(bands);
        let (ms_smoothed, rest) = rest.split_at_mut(bands);
        let (ms_window_min, rest) = rest.split_at_mut(bands);
        let (ms_ring_min, ms_ring) = rest.split_at_mut(bands);
        Some(Bands {
            power,
            ms_noise,
            noise,
            noise_average,
            ms_smoothed,
            ms_window_min,
            ms_ring_min,
            ms_ring,
        })
    }

    /// See [`Vad::process`]: analyses each whole block itself, with the lent buffers
    /// `spectral` and `work` (their contents on entry do not matter). Called on the
    /// real-time thread; never allocates.
    pub(crate) fn process(
        &mut self,
        frame: &[i16],
        spectral: &mut NsWork,
        work: &mut VadWork,
    ) -> VadDecision {
        let mut speech = false;
        let mut blocks = 0;
        for block in frame.chunks_exact(self.block_len) {
            if self.plan.analyse(&mut self.previous, block, spectral, true) {
                speech |= self.analysed_block(spectral, work);
                blocks += 1;
            }
        }
        self.end_frame(blocks, speech)
    }

    /// The decision on a frame of which `blocks` whole blocks were judged, `speech` when
    /// any was in a talkspurt (see [`Vad::process`]). Called on the real-time thread;
    /// never allocates.
    pub(crate) fn end_frame(&mut self, blocks: usize, speech: bool) -> VadDecision {
        if blocks == 0 {
            return VadDecision {
                speech: self.s.last_speech,
                transition: None,
            };
        }
        let transition = match (self.s.last_speech, speech) {
            (false, true) => Some(VadTransition::TalkspurtStart),
            (true, false) => Some(VadTransition::TalkspurtEnd),
            _ => None,
        };
        self.s.last_speech = speech;
        VadDecision { speech, transition }
    }

    /// See [`Vad::level_dbfs`].
    fn level_dbfs(&self) -> f32 {
        dbfs_of_mean_square(self.s.speech_mean_square)
    }

    /// See [`Vad::noise_level_dbfs`].
    fn noise_level_dbfs(&self) -> f32 {
        // Parseval for a window of 2L samples with Σ w² = L: a one-sided bin of white
        // noise of mean square σ² holds σ² L and stands for σ² / L of it, so the band's
        // mean square is Σ N / L².
        let len = self.block_len as f32;
        dbfs_of_mean_square(self.s.noise_total / (len * len))
    }

    /// Runs the detector on one 10 ms block whose analysis ([`NsPlan::analyse`] with the
    /// energies) is in `spectral`: the detector's own, or, inside a chain, the noise
    /// suppressor's of the same block, so the transform is computed once for both.
    /// Returns whether the block is in a talkspurt. Called on the real-time thread; never
    /// allocates.
    pub(crate) fn analysed_block(&mut self, spectral: &NsWork, work: &mut VadWork) -> bool {
        let bands = self.bands;
        let first_bin = 2 * self.first_band;
        let Some(bins) = spectral.power().get(first_bin..first_bin + 2 * bands) else {
            return self.s.in_talkspurt;
        };
        let Some(mut b) = Self::split(&mut self.state, work, bands) else {
            return self.s.in_talkspurt;
        };
        let floor = self.power_floor;
        for (p, pair) in b.power.iter_mut().zip(bins.chunks_exact(2)) {
            *p = pair[0] + pair[1] + floor;
        }
        let band_power = sum(b.power);
        // The click test on the windowed energy in 1.25 ms sub-blocks.
        let sub_energy = &spectral.sub_energy;
        let window_energy = sum(sub_energy);
        let densest_pair = densest_pair(sub_energy);
        let impulsive = densest_pair > CLICK_CONCENTRATION * window_energy && window_energy > 0.0;
        let block_energy = spectral.block_energy;
        let s = &mut self.s;
        // The smoothed feature would carry a click into the next blocks, where any noise
        // block above the threshold could then start a talkspurt: it restarts on the first
        // window clear of one.
        let carry_reset = s.last_impulsive && !impulsive;
        s.last_impulsive = impulsive;

        s.blocks = s.blocks.saturating_add(1);
        let (speech_like, loud_block) = if s.blocks == 1 {
            // After a reset the window's first half is silence: the block's power is half
            // of what a whole window of it would hold.
            s.start_up(b, 2.0);
            (false, false)
        } else {
            s.track_minimum(&mut b);
            let (whitened, whitened_by_minimum) = whitened_energies(&b);
            if whitened < RESTART_RATIO {
                // Far below any noise estimate: the background has dropped (a noisy
                // source went quiet, or the level fell). Learn it again from here, as at
                // the start of a stream, rather than creep down to it over a second.
                s.restart_noise_estimates(b);
                return self.in_talkspurt_after(false, false, impulsive, block_energy, band_power);
            }
            if carry_reset {
                // Restart the smoothing from the noise level (0 dB).
                s.feature = 1.0;
            }
            s.feature = (FEATURE_SMOOTHING * s.feature + (1.0 - FEATURE_SMOOTHING) * whitened)
                .min(s.max_carry() * whitened);
            let threshold = self.threshold;
            let noise_like = (whitened < NOISE_GATE && s.feature < threshold)
                || whitened_by_minimum < MIN_STAT_GATE;
            if noise_like {
                s.update_noise_average(&mut b, band_power);
            }
            // Over the first blocks the noise estimate rests on few blocks: a talkspurt
            // needs a block further above it to start (+1.8 dB on the second block,
            // +0.4 dB on the tenth).
            let onset_threshold = threshold * (1.0 + 1.0 / s.blocks as f32);
            (s.feature > threshold, whitened > onset_threshold)
        };

        self.in_talkspurt_after(speech_like, loud_block, impulsive, block_energy, band_power)
    }

    /// Updates the talkspurt state and the speech levels after one block of energy
    /// `block_energy` (Σx²) and analysed-band power `band_power`.
    fn in_talkspurt_after(
        &mut self,
        speech_like: bool,
        loud_block: bool,
        impulsive: bool,
        block_energy: f32,
        band_power: f32,
    ) -> bool {
        let block_len = self.block_len;
        let hangover_blocks = self.hangover_blocks;
        let min_burst_blocks = self.min_burst_blocks;
        let s = &mut self.s;
        if speech_like {
            s.burst_blocks = s.burst_blocks.saturating_add(1);
        } else {
            s.burst_blocks = 0;
        }
        if loud_block {
            s.loud_blocks = s.loud_blocks.saturating_add(1);
        } else {
            s.loud_blocks = 0;
        }
        let hangover = if s.burst_blocks >= min_burst_blocks {
            (s.low_snr_share() * hangover_blocks as f32).round() as u32
        } else {
            0
        };
        if speech_like {
            if s.in_talkspurt {
                s.hangover_left = s.hangover_left.max(hangover);
            } else if loud_block && (!impulsive || s.loud_blocks >= IMPULSIVE_ONSET_BLOCKS) {
                s.in_talkspurt = true;
                s.hangover_left = hangover;
            }
        } else if s.in_talkspurt {
            if s.hangover_left > 0 {
                s.hangover_left -= 1;
            } else {
                s.in_talkspurt = false;
            }
        }

        if speech_like && s.in_talkspurt {
            let mean_square = block_energy / block_len as f32;
            if s.speech_band_power == 0.0 {
                s.speech_band_power = band_power;
                s.speech_mean_square = mean_square;
            } else {
                let a = SPEECH_LEVEL_SMOOTHING;
                s.speech_band_power = a * s.speech_band_power + (1.0 - a) * band_power;
                s.speech_mean_square = a * s.speech_mean_square + (1.0 - a) * mean_square;
            }
        }
        s.in_talkspurt
    }
}

impl Scalars {
    /// Starts the noise estimates afresh from the current block (see [`Self::start_up`]).
    fn restart_noise_estimates(&mut self, b: Bands<'_>) {
        self.blocks = 1;
        self.ms_window_blocks = self.ms_phase;
        b.ms_window_min.fill(f32::INFINITY);
        b.ms_ring.fill(f32::INFINITY);
        b.ms_ring_min.fill(f32::INFINITY);
        self.feature = 1.0;
        self.start_up(b, 1.0);
    }

    /// First block: every noise estimate starts from its power (times `scale`) averaged
    /// over five bands, so that no band starts from a near-zero value (the minimum would
    /// remember it).
    fn start_up(&mut self, b: Bands<'_>, scale: f32) {
        let bands = b.power.len();
        let mut total = 0.0f32;
        for k in 0..bands {
            let lo = k.saturating_sub(2);
            let hi = (k + 3).min(bands);
            let mean = scale * b.power[lo..hi].iter().sum::<f32>() / (hi - lo) as f32;
            b.noise_average[k] = mean;
            b.ms_smoothed[k] = mean;
            b.ms_noise[k] = mean;
            b.noise[k] = mean;
            total += mean;
        }
        self.noise_total = total;
        self.average_total = total;
    }

    /// Minimum statistics (Martin 2001): the minimum of the smoothed power over six
    /// 250 ms sub-windows; then the detection noise min(average, cap × minimum), after
    /// taking a rise in the noise over from the minimum.
    fn track_minimum(&mut self, b: &mut Bands<'_>) {
        let a = MIN_STAT_SMOOTHING;
        for ((((p, smoothed), window_min), ring_min), ms_noise) in b
            .power
            .iter()
            .zip(b.ms_smoothed.iter_mut())
            .zip(b.ms_window_min.iter_mut())
            .zip(b.ms_ring_min.iter())
            .zip(b.ms_noise.iter_mut())
        {
            *smoothed = a * *smoothed + (1.0 - a) * p;
            *window_min = fast_min(*window_min, *smoothed);
            *ms_noise = MIN_STAT_BIAS * fast_min(*ring_min, *window_min);
        }
        let ms_total = sum(b.ms_noise);
        let average_total = self.average_total;
        // Not over the first sub-window, where the minimum of a few blocks times the bias
        // overestimates the noise.
        if ms_total > RESEED_RATIO * average_total && self.blocks > MIN_STAT_SUBWINDOW_BLOCKS {
            // The noise has risen: no block looks like noise to the average any more.
            b.noise_average.copy_from_slice(b.ms_noise);
            self.average_total = ms_total;
        }
        for ((noise, average), ms_noise) in b
            .noise
            .iter_mut()
            .zip(b.noise_average.iter())
            .zip(b.ms_noise.iter())
        {
            *noise = fast_min(*average, NOISE_CAP * ms_noise);
        }
        self.noise_total = sum(b.noise);
        self.ms_window_blocks += 1;
        if self.ms_window_blocks >= MIN_STAT_SUBWINDOW_BLOCKS {
            self.ms_window_blocks = 0;
            let bands = b.power.len();
            let row = self.ms_ring_pos * bands;
            b.ms_ring[row..row + bands].copy_from_slice(b.ms_window_min);
            self.ms_ring_pos = (self.ms_ring_pos + 1) % MIN_STAT_SUBWINDOWS;
            b.ms_window_min.fill(f32::INFINITY);
            b.ms_ring_min.fill(f32::INFINITY);
            for row in b.ms_ring.chunks_exact(bands) {
                for (m, v) in b.ms_ring_min.iter_mut().zip(row) {
                    *m = m.min(*v);
                }
            }
        }
    }

    /// Recursive average of the noise blocks; over the first blocks a running mean, so
    /// that it does not hang on to the first block. `band_power`: Σ of the block's band
    /// powers, averaged into the total the same way.
    fn update_noise_average(&mut self, b: &mut Bands<'_>, band_power: f32) {
        let a = NOISE_SMOOTHING.min(1.0 - 1.0 / self.blocks as f32);
        self.average_total = a * self.average_total + (1.0 - a) * band_power;
        for (average, p) in b.noise_average.iter_mut().zip(b.power.iter()) {
            *average = a * *average + (1.0 - a) * p;
        }
    }

    /// Share of the hangover and of the low-SNR carry at the current long-term SNR: 1 up
    /// to [`FULL_HANGOVER_SNR_DB`], 0 from [`NO_HANGOVER_SNR_DB`] (and 1 before any
    /// speech).
    fn low_snr_share(&self) -> f32 {
        let noise = self.noise_total;
        if self.speech_band_power <= 0.0 || noise <= 0.0 {
            return 1.0;
        }
        let snr_db = 10.0 * (self.speech_band_power / noise).log10();
        ((NO_HANGOVER_SNR_DB - snr_db) / (NO_HANGOVER_SNR_DB - FULL_HANGOVER_SNR_DB))
            .clamp(0.0, 1.0)
    }

    /// How far the smoothed feature may exceed the current block's (see the module docs).
    fn max_carry(&self) -> f32 {
        FEATURE_MAX_CARRY * FEATURE_LOW_SNR_CARRY.powf(self.low_snr_share())
    }
}

/// Mean over bands of power / noise, for the detection noise and for the
/// minimum-statistics estimate, each smoothed [1 2 1]/4 across bands (a smooth
/// spectrum; smoothing halves the variance of its estimate).
fn whitened_energies(b: &Bands<'_>) -> (f32, f32) {
    let bands = b.power.len() as f32;
    let (by_noise, by_minimum) = whitened(b.power, b.noise, b.ms_noise);
    (by_noise / bands, by_minimum / bands)
}

/// The largest energy of two adjacent sub-blocks (0 for fewer than two): the pairs
/// [`LANES`] at a time, the last group overlapping the one before (a maximum does not
/// mind counting a pair twice), so there is no scalar tail.
fn densest_pair(energies: &[f32]) -> f32 {
    let pairs = energies.len().saturating_sub(1);
    if pairs < LANES {
        return energies.windows(2).map(|p| p[0] + p[1]).fold(0.0, fast_max);
    }
    let mut best = [0.0f32; LANES];
    let last = pairs - LANES;
    let groups = energies.windows(LANES + 1).step_by(LANES);
    for e in groups.chain(energies.get(last..=last + LANES)) {
        for j in 0..LANES {
            best[j] = fast_max(best[j], e[j] + e[j + 1]);
        }
    }
    best.iter().copied().fold(0.0, fast_max)
}

/// Lanes of the vector loops below: four f32, one SSE register.
const LANES: usize = 4;

/// Σ power / noise over bands for two noise estimates (the detection noise and the
/// minimum statistics), each noise smoothed [1 2 1]/4 across bands (at the edges the
/// missing neighbour is replaced by the band itself), each ratio capped at
/// [`MAX_BAND_RATIO`]. Needs at least [`LANES`] + 2 bands (there are 39 or more); with
/// fewer it returns zeros.
fn whitened(power: &[f32], noise: &[f32], ms_noise: &[f32]) -> (f32, f32) {
    let bands = power.len();
    if bands < LANES + 2 || noise.len() != bands || ms_noise.len() != bands {
        return (0.0, 0.0);
    }
    // The inner bands four at a time, in four partial sums per estimate (independent
    // chains of additions, the divisions four to a vector), from equal-length slices (no
    // index arithmetic, no bounds checks); then the one or few bands left one by one.
    let inner = bands - 2;
    let whole = inner - inner % LANES;
    let (mut by_noise, mut by_minimum) = ([0.0f32; LANES], [0.0f32; LANES]);
    // One estimate per pass: with both in one loop the vectoriser pairs the two
    // estimates' ratios instead of four bands'.
    for (acc, n) in [(&mut by_noise, noise), (&mut by_minimum, ms_noise)] {
        let groups = power[1..=whole]
            .chunks_exact(LANES)
            .zip(n.windows(LANES + 2).step_by(LANES));
        for (p, n) in groups {
            add_ratios(acc, lanes(p, 0), n);
        }
        for k in whole..inner {
            acc[0] += ratio(power[k + 1], n[k], n[k + 1], n[k + 2]);
        }
    }
    let edges = |n: &[f32]| {
        let edge = |k: usize, inner: usize| {
            fast_min(power[k] / (0.75 * n[k] + 0.25 * n[inner]), MAX_BAND_RATIO)
        };
        edge(0, 1) + edge(bands - 1, bands - 2)
    };
    (
        by_noise.iter().sum::<f32>() + edges(noise),
        by_minimum.iter().sum::<f32>() + edges(ms_noise),
    )
}

/// `x[start..start + LANES]` as one vector (zeros where `x` is too short, which the
/// callers rule out).
#[inline(always)]
fn lanes(x: &[f32], start: usize) -> [f32; LANES] {
    let mut v = [0.0; LANES];
    if let Some(s) = x.get(start..start + LANES) {
        v.copy_from_slice(s);
    }
    v
}

/// `acc += p / noise` for [`LANES`] bands, `noise` (`LANES` + 2 values) holding their
/// noise and their outer neighbours'; see [`ratio`].
#[inline(always)]
fn add_ratios(acc: &mut [f32; LANES], p: [f32; LANES], noise: &[f32]) {
    let (lo, mid, hi) = (lanes(noise, 0), lanes(noise, 1), lanes(noise, 2));
    for j in 0..LANES {
        acc[j] += ratio(p[j], lo[j], mid[j], hi[j]);
    }
}

/// power / the noise smoothed [1 2 1]/4 (`lo`, `mid`, `hi`: the band's noise and its
/// neighbours'), capped at [`MAX_BAND_RATIO`].
#[inline(always)]
fn ratio(power: f32, lo: f32, mid: f32, hi: f32) -> f32 {
    fast_min(power / (0.25 * (lo + hi) + 0.5 * mid), MAX_BAND_RATIO)
}

/// Σx, in [`LANES`] partial sums so that the additions vectorise instead of waiting on
/// each other (a sequential f32 sum does not: its order is part of its result); the
/// values left over go one to each partial sum.
fn sum(x: &[f32]) -> f32 {
    let len = x.len();
    let whole = len - len % LANES;
    let mut acc = [0.0f32; LANES];
    for chunk in x[..whole].chunks_exact(LANES) {
        for (a, v) in acc.iter_mut().zip(chunk) {
            *a += v;
        }
    }
    for (a, v) in acc.iter_mut().zip(&x[whole..]) {
        *a += v;
    }
    acc.iter().sum()
}

/// dBFS RMS of a mean square in sample units², at least [`MIN_LEVEL_DBFS`].
fn dbfs_of_mean_square(mean_square: f32) -> f32 {
    if mean_square > 0.0 {
        (10.0 * (mean_square / (32_768.0 * 32_768.0)).log10()).max(MIN_LEVEL_DBFS)
    } else {
        MIN_LEVEL_DBFS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEECH1_8K: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/audio/speech1_8000.wav"
    );
    const SPEECH2_8K: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/audio/speech2_8000.wav"
    );
    const SPEECH1_16K: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/audio/speech1_16000.wav"
    );
    const SPEECH2_16K: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/audio/speech2_16000.wav"
    );
    const SPEECH1_48K: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/audio/speech1_48000.wav"
    );
    const ALL_FILES: [&str; 5] = [
        SPEECH1_8K,
        SPEECH2_8K,
        SPEECH1_16K,
        SPEECH2_16K,
        SPEECH1_48K,
    ];

    /// Blocks below (active speech level − this) in the clean signal are labelled
    /// non-speech: 30 dB is 9–10 dB above the recordings' own background (about
    /// −60 dBFS against an active level of −21 to −23 dBFS).
    const LABEL_MARGIN_DB: f64 = 30.0;

    fn read_wav(path: &str) -> (u32, Vec<i16>) {
        let mut reader = hound::WavReader::open(path).expect("test WAV file opens");
        let rate = reader.spec().sample_rate;
        let samples = reader
            .samples::<i16>()
            .collect::<Result<Vec<_>, _>>()
            .expect("test WAV file holds 16-bit samples");
        (rate, samples)
    }

    /// Marsaglia xorshift32; uniform in [-1, 1).
    struct XorShift32(u32);

    impl XorShift32 {
        fn next_f64(&mut self) -> f64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            self.0 = x;
            f64::from(x) / 2_147_483_648.0 - 1.0
        }
    }

    /// Pink noise by Paul Kellet's refined filter of white noise.
    fn pink_noise(len: usize, seed: u32) -> Vec<f64> {
        let mut rng = XorShift32(seed);
        let mut b = [0.0f64; 7];
        (0..len)
            .map(|_| {
                let w = rng.next_f64();
                b[0] = 0.99886 * b[0] + w * 0.0555179;
                b[1] = 0.99332 * b[1] + w * 0.0750759;
                b[2] = 0.96900 * b[2] + w * 0.1538520;
                b[3] = 0.86650 * b[3] + w * 0.3104856;
                b[4] = 0.55000 * b[4] + w * 0.5329522;
                b[5] = -0.7616 * b[5] - w * 0.0168980;
                let out = b.iter().sum::<f64>() + w * 0.5362;
                b[6] = w * 0.115926;
                out
            })
            .collect()
    }

    fn white_noise(len: usize, seed: u32, rms: f64) -> Vec<i16> {
        let mut rng = XorShift32(seed);
        // Uniform in [-1, 1) has RMS 1/√3.
        (0..len)
            .map(|_| (rng.next_f64() * rms * 3f64.sqrt()).round() as i16)
            .collect()
    }

    fn mean_square(x: &[f64]) -> f64 {
        x.iter().map(|v| v * v).sum::<f64>() / x.len().max(1) as f64
    }

    /// Active speech level (mean square) by ITU-T P.56 method B: envelope with 30 ms time
    /// constant, 200 ms hangover, thresholds in 6 dB steps, 15.9 dB margin.
    fn active_level_mean_square(x: &[f64], rate: u32) -> f64 {
        const THRESHOLDS: usize = 16;
        const MARGIN_DB: f64 = 15.9;
        let g = (-1.0 / (f64::from(rate) * 0.03)).exp();
        let hangover = (0.2 * f64::from(rate)).round() as u64;
        let mut p = 0.0;
        let mut q = 0.0;
        let mut active = [0u64; THRESHOLDS];
        let mut since = [u64::MAX / 2; THRESHOLDS];
        for &v in x {
            p = g * p + (1.0 - g) * v.abs();
            q = g * q + (1.0 - g) * p;
            for j in 0..THRESHOLDS {
                if q >= f64::from(1u32 << j) {
                    since[j] = 0;
                } else {
                    since[j] = since[j].saturating_add(1);
                }
                if since[j] <= hangover {
                    active[j] += 1;
                }
            }
        }
        let energy: f64 = x.iter().map(|v| v * v).sum();
        let level_db = |j: usize| 10.0 * (energy / active[j].max(1) as f64).log10();
        let diff = |j: usize| level_db(j) - 20.0 * f64::from(1u32 << j).log10();
        // The first threshold where level − threshold falls through the margin,
        // interpolated between it and the one below.
        let crossing = (1..THRESHOLDS)
            .find(|&j| active[j] > 0 && diff(j) <= MARGIN_DB && diff(j - 1) > MARGIN_DB);
        let db = match crossing {
            Some(j) => {
                let t = (diff(j - 1) - MARGIN_DB) / (diff(j - 1) - diff(j));
                level_db(j - 1) + t * (level_db(j) - level_db(j - 1))
            }
            None => level_db(0),
        };
        10f64.powf(db / 10.0)
    }

    /// Reference labels per 20 ms frame from the clean signal: a 10 ms block is speech if
    /// its energy is above the active speech level − [`LABEL_MARGIN_DB`], a frame if
    /// either of its blocks is. Returns the labels and the active level (mean square).
    fn reference_labels(clean: &[i16], rate: u32) -> (Vec<bool>, f64) {
        let x: Vec<f64> = clean.iter().map(|&v| f64::from(v)).collect();
        let active = active_level_mean_square(&x, rate);
        let threshold = active * 10f64.powf(-LABEL_MARGIN_DB / 10.0);
        let block = block_len(rate);
        let labels = x
            .chunks_exact(2 * block)
            .map(|frame| {
                frame
                    .chunks_exact(block)
                    .any(|b| mean_square(b) > threshold)
            })
            .collect();
        (labels, active)
    }

    fn decisions(config: VadConfig, samples: &[i16], frame_ms: usize) -> Vec<bool> {
        let mut vad = Vad::new(config).expect("valid config");
        let frame = block_len(config.sample_rate_hz) * frame_ms / 10;
        samples
            .chunks_exact(frame)
            .map(|f| vad.process(f).speech)
            .collect()
    }

    fn accuracy(decisions: &[bool], labels: &[bool]) -> f64 {
        let n = decisions.len().min(labels.len());
        let right = decisions[..n]
            .iter()
            .zip(&labels[..n])
            .filter(|(d, l)| d == l)
            .count();
        right as f64 / n as f64
    }

    fn config_for(rate: u32) -> VadConfig {
        VadConfig {
            sample_rate_hz: rate,
            ..VadConfig::default()
        }
    }

    /// Adds pink noise `snr_db` below the clean signal's active level.
    fn with_pink_noise(clean: &[i16], active: f64, snr_db: f64, seed: u32) -> Vec<i16> {
        let noise = pink_noise(clean.len(), seed);
        let gain = (active * 10f64.powf(-snr_db / 10.0) / mean_square(&noise)).sqrt();
        clean
            .iter()
            .zip(&noise)
            .map(|(&c, &n)| (f64::from(c) + gain * n).round().clamp(-32768.0, 32767.0) as i16)
            .collect()
    }

    fn scaled(clean: &[i16], gain: f64) -> Vec<i16> {
        clean
            .iter()
            .map(|&c| (f64::from(c) * gain).round().clamp(-32768.0, 32767.0) as i16)
            .collect()
    }

    fn speech_share(decisions: &[bool]) -> f64 {
        decisions.iter().filter(|&&d| d).count() as f64 / decisions.len().max(1) as f64
    }

    #[test]
    fn default_config_is_8_khz_and_valid() {
        let config = VadConfig::default();
        assert_eq!(config.sample_rate_hz, 8_000);
        assert!(config.validate().is_ok());
        assert!(Vad::new(config).is_ok());
    }

    #[test]
    fn new_rejects_unsupported_rates_and_out_of_range_settings() {
        let bad = [
            VadConfig {
                sample_rate_hz: 44_100,
                ..VadConfig::default()
            },
            VadConfig {
                hangover_ms: MAX_HANGOVER_MS + 10,
                ..VadConfig::default()
            },
            VadConfig {
                threshold_db: f32::NAN,
                ..VadConfig::default()
            },
            VadConfig {
                threshold_db: 0.0,
                ..VadConfig::default()
            },
            VadConfig {
                min_burst_ms: MAX_MIN_BURST_MS + 10,
                ..VadConfig::default()
            },
        ];
        for config in bad {
            let err = Vad::new(config).expect_err("invalid config is refused");
            assert_eq!(err.component, "vad");
        }
        for rate in [8_000, 16_000, 48_000] {
            assert!(Vad::new(config_for(rate)).is_ok());
        }
    }

    #[test]
    fn reconfigure_changes_settings_but_not_the_rate() {
        let mut vad = Vad::new(VadConfig::default()).expect("valid config");
        let louder = VadConfig {
            threshold_db: 3.0,
            hangover_ms: 60,
            ..VadConfig::default()
        };
        assert!(vad.reconfigure(louder).is_ok());
        assert_eq!(vad.config(), louder);
        assert!(vad.reconfigure(config_for(16_000)).is_err());
        assert!(vad
            .reconfigure(VadConfig {
                threshold_db: -1.0,
                ..VadConfig::default()
            })
            .is_err());
        assert_eq!(vad.config(), louder);
    }

    #[test]
    fn hostile_frames_never_panic_and_digital_silence_is_never_speech() {
        for rate in [8_000u32, 16_000, 48_000] {
            let block = block_len(rate);
            let mut vad = Vad::new(config_for(rate)).expect("valid config");
            let silence = vec![0i16; 2 * block];
            for _ in 0..300 {
                assert!(!vad.process(&silence).speech);
            }
            assert_eq!(vad.level_dbfs(), MIN_LEVEL_DBFS);
            assert!(vad.noise_level_dbfs() < -100.0 + 1e-3);
            let square: Vec<i16> = (0..6 * block)
                .map(|n| if (n / 4) % 2 == 0 { i16::MAX } else { i16::MIN })
                .collect();
            let frames: [Vec<i16>; 7] = [
                square,
                vec![i16::MIN; 2 * block],
                vec![i16::MAX; 3 * block],
                white_noise(2 * block, 7, 30_000.0),
                vec![1000; block + 7], // not whole blocks
                vec![5; block - 1],    // shorter than a block
                Vec::new(),
            ];
            for _ in 0..50 {
                for frame in &frames {
                    let d = vad.process(frame);
                    assert_eq!(d.speech, vad.is_speech());
                    assert!(vad.level_dbfs().is_finite());
                    assert!(vad.noise_level_dbfs().is_finite());
                }
            }
        }
    }

    #[test]
    fn partial_blocks_are_ignored_and_short_frames_change_nothing() {
        let (_, speech) = read_wav(SPEECH1_8K);
        let mut whole = Vad::new(VadConfig::default()).expect("valid config");
        let mut ragged = Vad::new(VadConfig::default()).expect("valid config");
        for frame in speech[..8_000 * 4].chunks_exact(160) {
            let a = whole.process(frame);
            // The same 20 ms with 30 junk samples after it, then a lone partial block.
            let mut padded = frame.to_vec();
            padded.extend_from_slice(&[i16::MAX; 30]);
            let b = ragged.process(&padded);
            assert_eq!(a, b);
            let c = ragged.process(&[i16::MIN; 79]);
            assert_eq!(c.speech, b.speech);
            assert_eq!(c.transition, None);
        }
    }

    #[test]
    fn frame_length_does_not_change_what_is_detected() {
        // A 20 ms frame is speech when either of its 10 ms blocks is.
        let (_, speech) = read_wav(SPEECH2_8K);
        let speech = &speech[..8_000 * 5];
        let ten = decisions(VadConfig::default(), speech, 10);
        let twenty = decisions(VadConfig::default(), speech, 20);
        for (pair, frame) in ten.chunks_exact(2).zip(&twenty) {
            assert_eq!(pair[0] || pair[1], *frame);
        }
    }

    #[test]
    fn clean_speech_is_classified_95_percent_right() {
        for path in ALL_FILES {
            let (rate, clean) = read_wav(path);
            let (labels, _) = reference_labels(&clean, rate);
            let acc = accuracy(&decisions(config_for(rate), &clean, 20), &labels);
            eprintln!("clean {path}: {:.1} % of 20 ms frames right", acc * 100.0);
            assert!(acc >= 0.95, "{path}: clean accuracy {acc:.3}");
        }
    }

    fn pink_noise_accuracy(path: &str, seed: u32) -> f64 {
        let (rate, clean) = read_wav(path);
        let (labels, active) = reference_labels(&clean, rate);
        let noisy = with_pink_noise(&clean, active, 10.0, seed);
        let acc = accuracy(&decisions(config_for(rate), &noisy, 20), &labels);
        eprintln!(
            "pink 10 dB {path}, seed {seed:#x}: {:.1} % of 20 ms frames right",
            acc * 100.0
        );
        acc
    }

    /// Measured over seeds 0x9E3779B9, 1 and 2 (and 4 more while tuning): speech1 at
    /// 8 kHz 92.1–94.0 %, speech2 at 8 kHz 90.3–92.1 %, speech1 at 16 kHz 91.3–93.1 %,
    /// speech2 at 16 kHz 91.3–92.7 %, speech1 at 48 kHz 91.8–93.1 %. speech2 at 8 kHz is
    /// the hardest: 81 % of its frames are labelled speech, over a third of its speech
    /// blocks lie under the noise, and its pauses between words are mostly 20–40 ms, too
    /// short for the noise to show through the smoothing.
    #[test]
    fn pink_noise_at_10_db_snr_is_classified_90_percent_right() {
        let wanted = [
            (SPEECH1_8K, 0.91),
            (SPEECH2_8K, 0.90),
            (SPEECH1_16K, 0.91),
            (SPEECH2_16K, 0.91),
            (SPEECH1_48K, 0.91),
        ];
        for (path, wanted) in wanted {
            for seed in [0x9E37_79B9, 1, 2] {
                let acc = pink_noise_accuracy(path, seed);
                assert!(
                    acc >= wanted,
                    "{path}, seed {seed:#x}: pink-noise accuracy {acc:.3}"
                );
            }
        }
    }

    #[test]
    fn state_is_small() {
        for rate in [8_000u32, 16_000, 48_000] {
            let vad = Vad::new(config_for(rate)).expect("valid config");
            let (_, bands) = band_range(rate);
            let per_stream = vad.core.state_bytes();
            let fed = VadCore::new(config_for(rate), false).expect("valid config");
            eprintln!(
                "state at {rate} Hz: {} bytes inline + {per_stream} bytes per stream \
                 ({} when handed the analysis) + {} bytes of lendable work buffers",
                std::mem::size_of::<VadCore>(),
                fed.state_bytes(),
                vad.heap_bytes() - per_stream
            );
            // Ten per-band arrays and, when it analyses itself, the previous block.
            assert_eq!(fed.state_bytes(), 4 * 10 * bands);
            assert_eq!(per_stream, fed.state_bytes() + 2 * block_len(rate));
            assert!(vad.heap_bytes() <= 20 * 1024);
            assert!(Arc::ptr_eq(&vad.core.plan, &fed.plan));
        }
    }

    #[test]
    fn speech_at_minus_40_and_minus_6_dbfs_is_detected_alike() {
        for path in [SPEECH1_8K, SPEECH1_16K] {
            let (rate, clean) = read_wav(path);
            let (labels, active) = reference_labels(&clean, rate);
            let full_scale = 32_768.0f64 * 32_768.0;
            for level_dbfs in [-40.0, -6.0] {
                let gain = (full_scale * 10f64.powf(level_dbfs / 10.0) / active).sqrt();
                let speech = scaled(&clean, gain);
                let config = config_for(rate);
                let acc = accuracy(&decisions(config, &speech, 20), &labels);
                eprintln!("{level_dbfs} dBFS {path}: {:.1} % right", acc * 100.0);
                assert!(
                    acc >= 0.95,
                    "{path} at {level_dbfs} dBFS: accuracy {acc:.3}"
                );
            }
        }
    }

    #[test]
    fn a_34_db_level_jump_is_followed_at_once() {
        // The same speech at -40 dBFS, then at -6 dBFS, then at -40 dBFS again.
        let (rate, clean) = read_wav(SPEECH2_8K);
        let clean = &clean[..8_000 * 6];
        let (labels, active) = reference_labels(clean, rate);
        let full_scale = 32_768.0f64 * 32_768.0;
        let gain = |db: f64| (full_scale * 10f64.powf(db / 10.0) / active).sqrt();
        let mut signal = scaled(clean, gain(-40.0));
        signal.extend(scaled(clean, gain(-6.0)));
        signal.extend(scaled(clean, gain(-40.0)));
        let all = decisions(config_for(rate), &signal, 20);
        for (part, decided) in all.chunks(labels.len()).enumerate().skip(1) {
            let acc = accuracy(decided, &labels);
            eprintln!("level jump, part {part}: {:.1} % right", acc * 100.0);
            assert!(acc >= 0.93, "part {part}: accuracy {acc:.3}");
        }
    }

    #[test]
    fn stationary_noise_alone_is_rarely_speech() {
        for rate in [8_000u32, 16_000, 48_000] {
            let len = rate as usize * 8;
            let pink = pink_noise(len, 12_345);
            let gain = (1000.0f64 * 1000.0 / mean_square(&pink)).sqrt();
            let pink: Vec<i16> = pink.iter().map(|v| (v * gain).round() as i16).collect();
            let white = white_noise(len, 777, 300.0);
            for (name, noise) in [("pink", pink), ("white", white)] {
                let share = speech_share(&decisions(config_for(rate), &noise, 20));
                eprintln!("{name} noise at {rate} Hz: {:.1} % speech", share * 100.0);
                assert!(
                    share <= 0.02,
                    "{name} noise at {rate} Hz: {share:.3} speech"
                );
            }
        }
    }

    #[test]
    fn rises_of_2_to_20_db_in_noise_are_learnt_within_3_seconds() {
        // A small rise leaves the noise average a little low, where every block looks
        // slightly like speech and the speech-gated update alone would never catch up.
        let rate = 8_000u32;
        let pink = pink_noise(rate as usize * 9, 4242);
        let gain = (100.0f64 * 100.0 / mean_square(&pink)).sqrt();
        for rise_db in [2.0f64, 6.0, 20.0] {
            let after = gain * 10f64.powf(rise_db / 20.0);
            let noise: Vec<i16> = pink
                .iter()
                .enumerate()
                .map(|(n, v)| {
                    let g = if n < rate as usize * 3 { gain } else { after };
                    (v * g).round() as i16
                })
                .collect();
            let decided = decisions(config_for(rate), &noise, 20);
            // 50 frames a second: the last 3 s, from 3 s after the rise.
            let late = speech_share(&decided[300..]);
            assert!(
                late <= 0.05,
                "{late:.3} speech 3 s after a {rise_db} dB rise"
            );
        }
    }

    #[test]
    fn clicks_do_not_start_a_talkspurt() {
        for rate in [8_000u32, 48_000] {
            let block = block_len(rate);
            let mut signal = white_noise(rate as usize * 4, 99, 30.0);
            // A 1 ms full-scale click every 200 ms after the first second, some of them
            // straddling a block boundary.
            let click_len = rate as usize / 1000;
            let mut start = rate as usize;
            while start + click_len < signal.len() {
                for (n, s) in signal[start..start + click_len].iter_mut().enumerate() {
                    *s = if n % 2 == 0 { 30_000 } else { -30_000 };
                }
                start += rate as usize / 5 + block / 3;
            }
            let mut vad = Vad::new(config_for(rate)).expect("valid config");
            for (i, frame) in signal.chunks_exact(2 * block).enumerate() {
                let d = vad.process(frame);
                assert!(
                    d.transition.is_none(),
                    "a click started a talkspurt at {rate} Hz, frame {i}"
                );
            }
        }
    }

    #[test]
    fn talkspurt_events_alternate_and_match_the_decisions() {
        let (rate, clean) = read_wav(SPEECH1_8K);
        let (_, active) = reference_labels(&clean, rate);
        let noisy = with_pink_noise(&clean, active, 15.0, 1);
        let mut vad = Vad::new(config_for(rate)).expect("valid config");
        let mut previous = false;
        let mut starts = 0;
        for frame in noisy.chunks_exact(160) {
            let d = vad.process(frame);
            let expected = match (previous, d.speech) {
                (false, true) => Some(VadTransition::TalkspurtStart),
                (true, false) => Some(VadTransition::TalkspurtEnd),
                _ => None,
            };
            assert_eq!(d.transition, expected);
            starts += usize::from(expected == Some(VadTransition::TalkspurtStart));
            previous = d.speech;
        }
        // 13 s of read speech: a few talkspurts, not one per syllable.
        assert!((3..=40).contains(&starts), "{starts} talkspurts");
    }

    #[test]
    fn hangover_holds_a_talkspurt_after_speech_stops_in_noise() {
        let rate = 8_000u32;
        let block = block_len(rate);
        // 2 s of noise, 0.5 s of a 1 kHz tone 8 dB above it, 1 s of noise.
        let mut signal = white_noise(rate as usize * 2, 5, 300.0);
        let tone_rms = 300.0 * 10f64.powf(8.0 / 20.0);
        let mut tone = white_noise(rate as usize / 2, 6, 300.0);
        for (n, s) in tone.iter_mut().enumerate() {
            let phase = 2.0 * std::f64::consts::PI * 1000.0 * n as f64 / f64::from(rate);
            *s = (f64::from(*s) + tone_rms * 2f64.sqrt() * phase.sin()).round() as i16;
        }
        signal.extend(tone);
        signal.extend(white_noise(rate as usize, 7, 300.0));
        let held = |hangover_ms: u32| {
            let config = VadConfig {
                hangover_ms,
                ..VadConfig::default()
            };
            let blocks = decisions(config, &signal, 10);
            let tone_end = rate as usize * 5 / 2 / block;
            assert!(blocks[tone_end - 10..tone_end].iter().all(|&d| d));
            blocks[tone_end..].iter().take_while(|&&d| d).count()
        };
        // Without hangover the smoothed feature alone holds the talkspurt while it decays
        // from 8 dB to the threshold (at this SNR it may exceed the block's own by 11 dB).
        let smoothing_only = held(0);
        assert!(
            (4..=12).contains(&smoothing_only),
            "no hangover: held {smoothing_only} blocks"
        );
        // The hangover (in full at this SNR) adds its length after that.
        let with_hangover = held(120);
        assert!(
            (smoothing_only + 12..=smoothing_only + 14).contains(&with_hangover),
            "120 ms hangover: held {with_hangover} blocks, {smoothing_only} without"
        );
    }

    #[test]
    fn level_estimates_follow_the_speech_and_the_noise() {
        let (rate, clean) = read_wav(SPEECH1_8K);
        let (_, active) = reference_labels(&clean, rate);
        let noisy = with_pink_noise(&clean, active, 15.0, 3);
        let mut vad = Vad::new(config_for(rate)).expect("valid config");
        for frame in noisy.chunks_exact(160) {
            vad.process(frame);
        }
        let active_dbfs = 10.0 * (active / (32_768.0f64 * 32_768.0)).log10();
        let level = f64::from(vad.level_dbfs());
        eprintln!("speech level {level:.1} dBFS, P.56 active level {active_dbfs:.1} dBFS");
        assert!((level - active_dbfs).abs() <= 3.0);

        // Noise alone: the estimate matches the noise power within the analysed band.
        let white = white_noise(rate as usize * 4, 11, 300.0);
        let mut vad = Vad::new(config_for(rate)).expect("valid config");
        for frame in white.chunks_exact(160) {
            vad.process(frame);
        }
        // Bands 1–39 span 75 Hz – 3.975 kHz (two 50 Hz bins each): 3.9 kHz of a flat
        // 0 – 4 kHz spectrum.
        let band_dbfs = 20.0 * (300.0f64 / 32_768.0).log10() + 10.0 * (3.9f64 / 4.0).log10();
        let noise = f64::from(vad.noise_level_dbfs());
        eprintln!("noise estimate {noise:.1} dBFS, in-band noise {band_dbfs:.1} dBFS");
        assert!((noise - band_dbfs).abs() <= 1.0);
    }

    #[test]
    fn staggered_detectors_end_their_sub_windows_at_other_blocks_and_keep_it_through_reset() {
        let (rate, clean) = read_wav(SPEECH1_8K);
        let speech = &clean[..rate as usize * 3];
        let mut plain = Vad::new(config_for(rate)).expect("valid config");
        let mut staggered = Vad::new(config_for(rate)).expect("valid config");
        staggered.core.stagger(10 + MIN_STAT_SUBWINDOW_BLOCKS);
        // 10 ms blocks; the first starts the estimates, the sub-windows count from the
        // second: the staggered detector's first ends 15 blocks on, the plain one's 25.
        let ring_pos = |v: &Vad| v.core.s.ms_ring_pos;
        let mut ends = [Vec::new(), Vec::new()];
        let run = |plain: &mut Vad, staggered: &mut Vad, ends: &mut [Vec<usize>; 2]| {
            for (i, f) in speech.chunks_exact(80).enumerate() {
                for (v, e) in [&mut *plain, &mut *staggered]
                    .into_iter()
                    .zip(ends.iter_mut())
                {
                    let before = ring_pos(v);
                    v.process(f);
                    if ring_pos(v) != before {
                        e.push(i);
                    }
                }
            }
        };
        run(&mut plain, &mut staggered, &mut ends);
        assert_eq!(ends[0][..3], [25, 50, 75]);
        assert_eq!(ends[1][..3], [15, 40, 65]);
        plain.reset();
        staggered.reset();
        let mut ends_again = [Vec::new(), Vec::new()];
        run(&mut plain, &mut staggered, &mut ends_again);
        assert_eq!(ends_again, ends, "reset keeps the stagger");
    }

    #[test]
    fn reset_starts_afresh() {
        let (rate, clean) = read_wav(SPEECH1_8K);
        let speech = &clean[..rate as usize * 3];
        let mut vad = Vad::new(config_for(rate)).expect("valid config");
        let first: Vec<VadDecision> = speech.chunks_exact(160).map(|f| vad.process(f)).collect();
        vad.reset();
        assert!(!vad.is_speech());
        assert_eq!(vad.level_dbfs(), MIN_LEVEL_DBFS);
        let second: Vec<VadDecision> = speech.chunks_exact(160).map(|f| vad.process(f)).collect();
        assert_eq!(first, second);
    }
}
