//! Sample-rate conversion between the rates media-core processes (8, 16, 24, 32 and
//! 48 kHz), mono or stereo interleaved i16, for transcoding between codecs of different
//! rates (G.711 at 8 kHz, G.722 at 16 kHz, Opus at 48 kHz).
//!
//! [`Resampler::new`] runs on the control plane: it reduces the ratio to `L/M`, designs a
//! windowed-sinc low-pass at `L ×` the input rate, splits it into `L` polyphase rows,
//! quantises them to fixed point and sizes the history buffer. [`Resampler::process`] runs on the
//! real-time thread: it allocates nothing, takes no lock and carries its state across calls.
//!
//! # Filter
//! One low-pass serves both directions: upsampling it removes the images of the input
//! spectrum, downsampling it removes what would alias. Its edges are set by the lower of the
//! two Nyquist frequencies `f_N`:
//! - passband up to `0.9 × f_N` ([`PASSBAND_EDGE`]; 3.6 kHz when 8 kHz is involved),
//! - stopband from `f_N` itself: nothing above the lower Nyquist survives, so no tone in
//!   the input aliases or images with less than the stopband attenuation, wherever it is.
//!
//! The window is Kaiser's, designed by his formulas for [`DESIGN_ATTENUATION_DB`] over that
//! transition band; the filter is then lengthened to a whole number of SIMD lanes per
//! polyphase row, and the extra length buys attenuation. The filter is centred on a delay
//! that is a whole number of input *and* output samples, so [`Resampler::latency_samples`]
//! is exact. `tests/resample.rs` measures the result through [`Resampler::process`]
//! (passband ripple, alias and image rejection, round-trip SNR, stereo independence).
//!
//! # Arithmetic
//! Fixed-point coefficients and i16 samples multiplied into `i32` accumulators, rounded and
//! saturated to i16; chosen over `f32` by benchmark (SSE2 `pmaddwd` does eight
//! multiply-adds per instruction on every x86-64, `mulps` + `addps` four, on twice the
//! bytes; SSE2 is baseline, so there is no run-time detection). Integer sums also make the
//! SIMD and portable paths bit-identical (a unit test checks it).
//! - Coefficients are Q15, plus up to three more fractional bits where they are small:
//!   downsampling by M makes them about 1/M, and rounding them at Q15 alone would lift the
//!   48 → 8 kHz stopband floor above −65 dB.
//! - Each polyphase row is rounded so its coefficients sum to exactly one: a constant input
//!   comes out unchanged, and the `L` rows have identical DC gain (no tone at the input
//!   rate when upsampling).
//! - `pmaddwd` spreads each dot product over four 32-bit lanes. Each lane's absolute
//!   coefficient sum is kept small enough that the lane cannot overflow for any input, and
//!   the lanes are shifted right before they are added, so their total cannot either:
//!   overshoot saturates, it never wraps. A unit test checks the bounds for every rate pair.
//!
//! # Timing
//! Output sample `n` (counted from construction or [`Resampler::reset`]) lies at input time
//! `n × M / L` minus the latency, and is produced by the call that delivers the input
//! sample it needs last. A call with `T` input frames therefore produces `ceil`/`floor` of
//! `T × L / M` frames depending on the phase, and whenever the input so far is a whole number
//! of 10 ms, the output so far is exactly the corresponding number of output frames:
//! 160 samples at 8 kHz give 960 at 48 kHz, every call. Splitting the input differently
//! never changes the output: the concatenation of the outputs equals one long call.

use std::f64::consts::PI;
use std::fmt;

/// Rates [`Resampler::new`] accepts, in Hz.
pub const SUPPORTED_RATES_HZ: [u32; 6] = [8_000, 12_000, 16_000, 24_000, 32_000, 48_000];
/// Passband edge as a fraction of the lower Nyquist frequency.
pub const PASSBAND_EDGE: f64 = 0.9;
/// Stopband attenuation the Kaiser design aims for, before the extra length from rounding
/// up to whole SIMD lanes. 70 dB leaves room for Q15 coefficient rounding above the
/// 60 dB the tests demand.
pub const DESIGN_ATTENUATION_DB: f64 = 70.0;
/// Most channels per frame.
pub const MAX_CHANNELS: usize = 2;
/// Polyphase rows are padded to a multiple of this many taps (one SSE2 `pmaddwd`).
const LANES: usize = 8;
/// Most fractional bits beyond Q15 a filter's coefficients get.
const MAX_EXTRA_BITS: u32 = 3;
/// Each lane is shifted right by this plus the filter's extra bits before the lanes are
/// added, which leaves a Q14 sum: the total then fits `i32` for any row whose absolute sum
/// is below 4.0 (the sharpest rows reach about 2.03). The shift drops less than one unit of
/// 2^-14 per lane, so a constant input still comes out exact.
const LANE_HEADROOM_BITS: u32 = 1;
/// Rounding constant for the final shift from Q14.
const ROUND: i32 = 1 << 13;

/// Why [`Resampler::new`] refused. Nothing here happens on the real-time thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResampleError {
    /// A rate is not in [`SUPPORTED_RATES_HZ`]. Recover: negotiate one of them (every
    /// codec media-core carries runs at one).
    #[error("unsupported sample rate {rate_hz} Hz (supported: 8000, 16000, 24000, 32000, 48000)")]
    UnsupportedRate {
        /// The rate asked for.
        rate_hz: u32,
    },
    /// `channels` is not 1 or 2. Recover: mix down to stereo or mono first.
    #[error("unsupported channel count {channels} (supported: 1..={MAX_CHANNELS})")]
    UnsupportedChannels {
        /// The channel count asked for.
        channels: usize,
    },
    /// `max_input_frames` is zero or longer than one second of input. Recover: pass the
    /// frame size the session uses (for example 160 for 20 ms at 8 kHz).
    #[error("max_input_frames {frames} out of range 1..={max}")]
    InvalidMaxInputFrames {
        /// The value asked for.
        frames: usize,
        /// The largest value accepted (one second at the input rate).
        max: usize,
    },
}

/// A streaming polyphase sample-rate converter for interleaved i16 audio.
///
/// Built on the control plane with [`Resampler::new`], which allocates everything;
/// [`process`](Self::process) and [`reset`](Self::reset) run on the real-time thread.
///
/// ```
/// use media_core::processing::format::resample::Resampler;
///
/// // G.711 at 8 kHz to Opus at 48 kHz, 20 ms frames.
/// let mut up = Resampler::new(8_000, 48_000, 1, 160)?;
/// let mut down = Resampler::new(48_000, 8_000, 1, 960)?;
/// let mut wide = vec![0i16; up.max_output_len()];
/// let mut narrow = vec![0i16; down.max_output_len()];
/// let frame: Vec<i16> = (0..160).map(|n| ((n as f64 * 0.5).sin() * 8000.0) as i16).collect();
/// for _ in 0..5 {
///     assert_eq!(up.process(&frame, &mut wide), 960);
///     assert_eq!(down.process(&wide[..960], &mut narrow), 160);
/// }
/// // Group delay in output samples: 5.9 ms up, 5.5 ms down.
/// assert_eq!((up.latency_samples(), down.latency_samples()), (282, 44));
/// # Ok::<(), media_core::processing::format::resample::ResampleError>(())
/// ```
pub struct Resampler {
    from_hz: u32,
    to_hz: u32,
    channels: usize,
    max_input_frames: usize,
    engine: Engine,
}

/// Equal rates copy; the rest filter.
enum Engine {
    Passthrough,
    Polyphase(Polyphase),
}

/// One step of the phase schedule: after an output at phase `p`, the next one uses phase
/// `steps[p].next` and a window `steps[p].advance` input samples later.
#[derive(Debug, Clone, Copy)]
struct Step {
    next: usize,
    advance: usize,
}

struct Polyphase {
    /// Interpolation factor `L`.
    up: usize,
    /// Decimation factor `M`.
    down: usize,
    /// Group delay in output samples.
    latency: usize,
    filter: Filter,
    steps: Box<[Step]>,
    /// Per channel, `stride` samples: the retained history, then the new input.
    history: Box<[i16]>,
    stride: usize,
    /// Valid samples at the start of each channel's history.
    filled: usize,
    /// Phase of the next output; its window starts at history index 0.
    phase: usize,
    /// Input was taken since the last reset (a reset of a fresh state is skipped).
    used: bool,
}

/// The quantised polyphase rows.
struct Filter {
    /// `up` rows of `taps` coefficients, each reversed so that output = row · window, where
    /// the window is `taps` consecutive input samples ending at the newest one used.
    coeffs: Box<[i16]>,
    /// Taps per row (a multiple of [`LANES`]).
    taps: usize,
    /// Right shift applied to each lane before lanes are added:
    /// [`LANE_HEADROOM_BITS`] + the coefficients' fractional bits beyond 15.
    lane_shift: u32,
}

impl Filter {
    fn row(&self, phase: usize) -> &[i16] {
        &self.coeffs[phase * self.taps..(phase + 1) * self.taps]
    }
}

impl Resampler {
    /// A converter from `from_hz` to `to_hz` for `channels` interleaved channels, sized for
    /// inputs of up to `max_input_frames` frames per [`process`](Self::process) call
    /// (longer inputs still work: they are converted in pieces of that size). Equal rates
    /// give an exact copy with no latency. Control plane: designs the filter and allocates
    /// every buffer: `2 × (L × taps + channels × (taps + max_input_frames))` bytes, 1.6 KiB
    /// for 20 ms mono frames at 8 → 48 kHz and 4 KiB at 48 → 8 kHz.
    pub fn new(
        from_hz: u32,
        to_hz: u32,
        channels: usize,
        max_input_frames: usize,
    ) -> Result<Self, ResampleError> {
        for rate_hz in [from_hz, to_hz] {
            if !SUPPORTED_RATES_HZ.contains(&rate_hz) {
                return Err(ResampleError::UnsupportedRate { rate_hz });
            }
        }
        if channels == 0 || channels > MAX_CHANNELS {
            return Err(ResampleError::UnsupportedChannels { channels });
        }
        let max = from_hz as usize;
        if max_input_frames == 0 || max_input_frames > max {
            return Err(ResampleError::InvalidMaxInputFrames {
                frames: max_input_frames,
                max,
            });
        }
        let engine = if from_hz == to_hz {
            Engine::Passthrough
        } else {
            Engine::Polyphase(Polyphase::new(from_hz, to_hz, channels, max_input_frames))
        };
        Ok(Resampler {
            from_hz,
            to_hz,
            channels,
            max_input_frames,
            engine,
        })
    }

    /// Converts `input` (interleaved, whole frames; a trailing partial frame is ignored)
    /// and writes the output frames it completes to the start of `out`. Returns the number
    /// of samples written (frames × channels).
    ///
    /// The output count depends only on how much input has been given since construction
    /// or [`reset`](Self::reset) (see the [module docs](self)), so a fixed 10 or 20 ms
    /// frame in gives exactly the corresponding frame out. An `out` shorter than that
    /// (size it with [`max_output_len`](Self::max_output_len)) receives the frames that
    /// fit and the rest are dropped, keeping the stream in time. Called on the real-time
    /// thread: no allocation, no lock, no panic.
    pub fn process(&mut self, input: &[i16], out: &mut [i16]) -> usize {
        let ch = self.channels;
        match &mut self.engine {
            Engine::Passthrough => {
                let n = (input.len() / ch).min(out.len() / ch) * ch;
                out[..n].copy_from_slice(&input[..n]);
                n
            }
            Engine::Polyphase(p) => p.process(ch, self.max_input_frames, input, out),
        }
    }

    /// The number of samples [`process`](Self::process) will write for an input of
    /// `input_len` samples (given an `out` long enough), in the current state.
    pub fn output_len(&self, input_len: usize) -> usize {
        let frames = input_len / self.channels;
        let out_frames = match &self.engine {
            Engine::Passthrough => frames,
            Engine::Polyphase(p) => p.ready(p.filled + frames),
        };
        out_frames * self.channels
    }

    /// The longest output, in samples, of a [`process`](Self::process) call whose input
    /// is at most `max_input_frames` frames: `ceil(max_input_frames × to / from)` frames.
    pub fn max_output_len(&self) -> usize {
        let frames = (self.max_input_frames as u64 * u64::from(self.to_hz))
            .div_ceil(u64::from(self.from_hz)) as usize;
        frames * self.channels
    }

    /// Group delay in output samples (per channel): an input impulse comes out centred
    /// this many output samples later than the output time of its input position. Exact
    /// (the filter is linear-phase and centred on a whole number of samples); 0 for equal
    /// rates. Callers that align streams (echo reference, lip sync) subtract it.
    pub fn latency_samples(&self) -> usize {
        match &self.engine {
            Engine::Passthrough => 0,
            Engine::Polyphase(p) => p.latency,
        }
    }

    /// Forgets all history, as if newly built: the next call starts a new stream.
    /// Called on the real-time thread; allocates nothing, and costs a flag test when
    /// nothing was converted since the last reset (a caller may call it for every frame
    /// that bypasses the conversion).
    pub fn reset(&mut self) {
        if let Engine::Polyphase(p) = &mut self.engine {
            p.reset();
        }
    }

    /// Input rate in Hz.
    pub fn from_hz(&self) -> u32 {
        self.from_hz
    }

    /// Output rate in Hz.
    pub fn to_hz(&self) -> u32 {
        self.to_hz
    }

    /// Interleaved channels per frame.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Multiply-adds per output sample: the filter taps each output reads (0 for equal
    /// rates). The cost of a frame is about this times its output samples.
    pub fn taps_per_output(&self) -> usize {
        match &self.engine {
            Engine::Passthrough => 0,
            Engine::Polyphase(p) => p.filter.taps,
        }
    }
}

impl fmt::Debug for Resampler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resampler")
            .field("from_hz", &self.from_hz)
            .field("to_hz", &self.to_hz)
            .field("channels", &self.channels)
            .field("max_input_frames", &self.max_input_frames)
            .field("taps_per_output", &self.taps_per_output())
            .field("latency_samples", &self.latency_samples())
            .finish()
    }
}

impl Polyphase {
    fn new(from_hz: u32, to_hz: u32, channels: usize, max_input_frames: usize) -> Self {
        let g = gcd(from_hz, to_hz);
        let up = (to_hz / g) as usize;
        let down = (from_hz / g) as usize;
        let (filter, delay) = design(from_hz, to_hz, up, down);
        let steps = (0..up)
            .map(|p| Step {
                next: (p + down) % up,
                advance: (p + down) / up,
            })
            .collect();
        // Retained history is at most `taps - 1` samples (see `process_chunk`).
        let stride = filter.taps - 1 + max_input_frames;
        let mut poly = Polyphase {
            up,
            down,
            latency: delay / down,
            filter,
            steps,
            history: vec![0; stride * channels].into_boxed_slice(),
            stride,
            filled: 0,
            phase: 0,
            used: true,
        };
        poly.reset();
        poly
    }

    fn reset(&mut self) {
        if !std::mem::replace(&mut self.used, false) {
            return;
        }
        self.history.fill(0);
        // The first output's window ends at the first input sample: `taps - 1` zeros of
        // history before it.
        self.filled = self.filter.taps - 1;
        self.phase = 0;
    }

    /// Outputs whose windows lie within the first `filled` history samples, starting at
    /// phase `self.phase` with the window at index 0. Output `n`'s window starts at
    /// `floor((phase + n × down) / up)`.
    fn ready(&self, filled: usize) -> usize {
        let Some(starts) = (filled + 1).checked_sub(self.filter.taps) else {
            return 0;
        };
        // n × down + phase < starts × up
        (starts * self.up)
            .saturating_sub(self.phase)
            .div_ceil(self.down)
    }

    fn process(&mut self, ch: usize, chunk_frames: usize, input: &[i16], out: &mut [i16]) -> usize {
        let frames = input.len() / ch;
        let mut written = 0;
        for chunk in input[..frames * ch].chunks(chunk_frames * ch) {
            written += self.process_chunk(ch, chunk, &mut out[written * ch..]);
        }
        written * ch
    }

    /// Converts at most `stride - filled` frames; returns output frames written.
    fn process_chunk(&mut self, ch: usize, chunk: &[i16], out: &mut [i16]) -> usize {
        let n_in = chunk.len() / ch;
        self.used = true;
        let (stride, filled) = (self.stride, self.filled);
        for (c, buf) in self.history.chunks_exact_mut(stride).enumerate() {
            let dst = &mut buf[filled..filled + n_in];
            if ch == 1 {
                dst.copy_from_slice(chunk);
            } else {
                for (d, s) in dst.iter_mut().zip(chunk.iter().skip(c).step_by(ch)) {
                    *d = *s;
                }
            }
        }
        let filled = filled + n_in;
        let count = self.ready(filled);
        let emit = count.min(out.len() / ch);
        if emit > 0 {
            let (f, phase) = (&self.filter, self.phase);
            for (c, buf) in self.history.chunks_exact(stride).enumerate() {
                let buf = &buf[..filled];
                // `emit * ch <= out.len()`, so every `out[c + i * ch]`, i < emit, exists.
                let out = &mut out[c..];
                // With M = 1 every call ends on phase 0 (it consumes whole input samples).
                match (self.up, self.down) {
                    (2, 1) if phase == 0 => run_up::<2>(f, buf, out, ch, emit),
                    (3, 1) if phase == 0 => run_up::<3>(f, buf, out, ch, emit),
                    (4, 1) if phase == 0 => run_up::<4>(f, buf, out, ch, emit),
                    (6, 1) if phase == 0 => run_up::<6>(f, buf, out, ch, emit),
                    (1, down) => run_down(f, down, buf, out, ch, emit),
                    _ => run(f, &self.steps, phase, buf, out, ch, emit),
                }
            }
        }
        // Advance by every output due, written or not, and drop the consumed input.
        let t = self.phase + count * self.down;
        let consumed = t / self.up;
        self.phase = t % self.up;
        // The next output's window did not fit: it starts at `consumed` and ends past
        // `filled`, so at most `taps - 1` samples remain.
        for buf in self.history.chunks_exact_mut(stride) {
            buf.copy_within(consumed..filled, 0);
        }
        self.filled = filled - consumed;
        emit
    }
}

/// Integer upsampling (M = 1): the L outputs of each input sample share one window, so
/// they are computed together and the window is loaded once for all L rows. Writes
/// `count` outputs to `out[0]`, `out[ch]`, ...
fn run_up<const L: usize>(f: &Filter, buf: &[i16], out: &mut [i16], ch: usize, count: usize) {
    let rows: [&[i16]; L] = std::array::from_fn(|p| f.row(p));
    for (pos, first) in (0..count).step_by(L).enumerate() {
        let win = &buf[pos..pos + f.taps];
        let y = dot::<L, false, true>(rows, [win; L], f.lane_shift);
        for (i, &v) in y.iter().enumerate().take(count - first) {
            out[(first + i) * ch] = v;
        }
    }
}

/// Integer downsampling (L = 1): one row serves every output, so it is loaded once for
/// four windows `down` samples apart.
fn run_down(f: &Filter, down: usize, buf: &[i16], out: &mut [i16], ch: usize, count: usize) {
    let row = f.row(0);
    for first in (0..count).step_by(4) {
        let group = (count - first).min(4);
        // A short last group repeats its last window; the copies are discarded.
        let wins: [&[i16]; 4] = std::array::from_fn(|i| {
            let start = (first + i.min(group - 1)) * down;
            &buf[start..start + f.taps]
        });
        let y = dot::<4, true, false>([row; 4], wins, f.lane_shift);
        for (i, &v) in y.iter().enumerate().take(group) {
            out[(first + i) * ch] = v;
        }
    }
}

/// Any other ratio: four independent (row, window) pairs at a time, following the phase
/// schedule from `phase` with the first window at index 0.
fn run(
    f: &Filter,
    steps: &[Step],
    mut phase: usize,
    buf: &[i16],
    out: &mut [i16],
    ch: usize,
    count: usize,
) {
    let mut pos = 0;
    for first in (0..count).step_by(4) {
        let group = (count - first).min(4);
        let mut rows: [&[i16]; 4] = [&[]; 4];
        let mut wins: [&[i16]; 4] = [&[]; 4];
        for i in 0..4 {
            if i < group {
                rows[i] = f.row(phase);
                wins[i] = &buf[pos..pos + f.taps];
                let s = steps[phase];
                pos += s.advance;
                phase = s.next;
            } else {
                // A short last group repeats its last output; the copies are discarded.
                rows[i] = rows[i - 1];
                wins[i] = wins[i - 1];
            }
        }
        let y = dot::<4, false, false>(rows, wins, f.lane_shift);
        for (i, &v) in y.iter().enumerate().take(group) {
            out[(first + i) * ch] = v;
        }
    }
}

/// `N` fixed-point dot products `rows[i] · wins[i]` over the first `n` elements of each
/// slice (`n` the shortest length rounded down to [`LANES`]), each lane shifted right by
/// `lane_shift` before the lanes are added, then rounded from Q14 and saturated to i16.
/// With `SHARED_ROW` (`SHARED_WIN`) the caller passes `N` copies of one row (window) and it
/// is loaded once. SSE2: `pmaddwd` multiplies 8 pairs and adds neighbours into 4 lanes.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn dot<const N: usize, const SHARED_ROW: bool, const SHARED_WIN: bool>(
    rows: [&[i16]; N],
    wins: [&[i16]; N],
    lane_shift: u32,
) -> [i16; N] {
    use std::arch::x86_64::*;
    let n = rows.iter().chain(&wins).map(|s| s.len()).min().unwrap_or(0) / LANES * LANES;
    let mut y = [0i16; N];
    // SAFETY: SSE2 is part of the x86_64 baseline, so every intrinsic here is available.
    // Each load reads 8 i16 starting at index j of a slice, with j + 8 <= n <= its length;
    // each store writes 8 bytes into `four`, which has 8.
    unsafe {
        let mut acc = [_mm_setzero_si128(); N];
        let mut j = 0;
        while j < n {
            let c0 = _mm_loadu_si128(rows[0].as_ptr().add(j).cast());
            let x0 = _mm_loadu_si128(wins[0].as_ptr().add(j).cast());
            for i in 0..N {
                let c = if SHARED_ROW || i == 0 {
                    c0
                } else {
                    _mm_loadu_si128(rows[i].as_ptr().add(j).cast())
                };
                let x = if SHARED_WIN || i == 0 {
                    x0
                } else {
                    _mm_loadu_si128(wins[i].as_ptr().add(j).cast())
                };
                acc[i] = _mm_add_epi32(acc[i], _mm_madd_epi16(c, x));
            }
            j += LANES;
        }
        let shift = _mm_cvtsi32_si128(lane_shift as i32);
        for (k, group) in acc.chunks(4).enumerate() {
            // Shift each lane, then transpose-and-add: lane i of `sum` totals `group[i]`.
            let a: [__m128i; 4] = std::array::from_fn(|i| {
                group
                    .get(i)
                    .map_or(_mm_setzero_si128(), |&v| _mm_sra_epi32(v, shift))
            });
            let s01 = _mm_add_epi32(
                _mm_unpacklo_epi32(a[0], a[1]),
                _mm_unpackhi_epi32(a[0], a[1]),
            );
            let s23 = _mm_add_epi32(
                _mm_unpacklo_epi32(a[2], a[3]),
                _mm_unpackhi_epi32(a[2], a[3]),
            );
            let sum = _mm_add_epi32(_mm_unpacklo_epi64(s01, s23), _mm_unpackhi_epi64(s01, s23));
            let q = _mm_srai_epi32(_mm_add_epi32(sum, _mm_set1_epi32(ROUND)), 14);
            let mut four = [0i16; 4];
            _mm_storel_epi64(four.as_mut_ptr().cast(), _mm_packs_epi32(q, q));
            for (o, v) in y[4 * k..].iter_mut().zip(four) {
                *o = v;
            }
        }
    }
    y
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn dot<const N: usize, const SHARED_ROW: bool, const SHARED_WIN: bool>(
    rows: [&[i16]; N],
    wins: [&[i16]; N],
    lane_shift: u32,
) -> [i16; N] {
    dot_portable(rows, wins, lane_shift)
}

/// The reference for [`dot`], bit for bit: the same products in the same four lanes
/// (`pmaddwd` adds neighbouring pairs, so element j goes to lane `(j % 8) / 2`), each lane
/// summed modulo 2^32 and shifted before the lanes are added.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn dot_portable<const N: usize>(rows: [&[i16]; N], wins: [&[i16]; N], lane_shift: u32) -> [i16; N] {
    let n = rows.iter().chain(&wins).map(|s| s.len()).min().unwrap_or(0) / LANES * LANES;
    let mut y = [0i16; N];
    for ((o, r), w) in y.iter_mut().zip(rows).zip(wins) {
        let mut acc = [0i32; 4];
        for (j, (&c, &x)) in r[..n].iter().zip(&w[..n]).enumerate() {
            let lane = &mut acc[(j % LANES) / 2];
            *lane = lane.wrapping_add(i32::from(c) * i32::from(x));
        }
        let sum = acc
            .iter()
            .fold(0i32, |s, &a| s.wrapping_add(a >> lane_shift));
        *o = (sum.wrapping_add(ROUND) >> 14).clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16;
    }
    y
}

/// Kaiser-windowed sinc low-pass at `up × from_hz`, passband to `PASSBAND_EDGE × f_N`,
/// stopband from `f_N`, `f_N` the lower Nyquist frequency; gain `up` so each polyphase row
/// has unit DC gain. Returns the quantised rows and the prototype's centre (its delay) in
/// samples at the high rate.
fn design(from_hz: u32, to_hz: u32, up: usize, down: usize) -> (Filter, usize) {
    let high_hz = f64::from(from_hz) * up as f64;
    let nyquist_hz = f64::from(from_hz.min(to_hz)) / 2.0;
    let pass_hz = PASSBAND_EDGE * nyquist_hz;
    let transition = 2.0 * PI * (nyquist_hz - pass_hz) / high_hz;
    // Cutoff in the middle of the transition band, in cycles per high-rate sample.
    let cutoff = (pass_hz + nyquist_hz) / 2.0 / high_hz;
    // Kaiser's length estimate, in high-rate samples.
    let min_len = ((DESIGN_ATTENUATION_DB - 7.95) / (2.285 * transition)).ceil() as usize + 1;
    // Centre on a multiple of up × down: a whole number of input and output samples.
    let grain = up * down;
    let delay = (min_len / 2).div_ceil(grain) * grain;
    let taps = (2 * delay + 1).div_ceil(up).div_ceil(LANES) * LANES;
    // Spend the padding on a longer filter: the largest grain-multiple delay that fits.
    let delay = (taps * up - 1) / 2 / grain * grain;
    let len = 2 * delay + 1;
    let attenuation_db = 2.285 * transition * (len - 1) as f64 + 7.95;
    let beta = kaiser_beta(attenuation_db);
    let i0_beta = bessel_i0(beta);
    let prototype: Vec<f64> = (0..taps * up)
        .map(|m| {
            if m >= len {
                return 0.0;
            }
            let t = m as f64 - delay as f64;
            let r = t / delay as f64;
            let window = bessel_i0(beta * (1.0 - r * r).max(0.0).sqrt()) / i0_beta;
            up as f64 * 2.0 * cutoff * sinc(2.0 * cutoff * t) * window
        })
        .collect();
    // Window position j holds x[i - (taps - 1 - j)], weighted by h[p + (taps - 1 - j) up].
    let rows: Vec<Vec<f64>> = (0..up)
        .map(|p| {
            (0..taps)
                .map(|j| prototype[p + (taps - 1 - j) * up])
                .collect()
        })
        .collect();
    // As many fractional bits as the coefficients and the lane bound allow.
    let filter = (0..=MAX_EXTRA_BITS)
        .rev()
        .find_map(|extra| {
            let mut coeffs = Vec::with_capacity(up * taps);
            for row in &rows {
                coeffs.extend(quantize_row(row, 15 + extra)?);
            }
            let filter = Filter {
                coeffs: coeffs.into_boxed_slice(),
                taps,
                lane_shift: LANE_HEADROOM_BITS + extra,
            };
            filter.fits_i32().then_some(filter)
        })
        // Invariant: at Q15 every coefficient is below 1 (the sinc's peak is 0.95 of
        // L × 2 × cutoff ≤ 0.95) and every lane's absolute sum below 2 (unit test).
        .expect("a Q15 filter always fits");
    (filter, delay)
}

impl Filter {
    /// Whether no lane, and no total of shifted lanes plus rounding, can leave `i32` for
    /// any input (|x| ≤ 32768).
    fn fits_i32(&self) -> bool {
        self.coeffs.chunks_exact(self.taps).all(|row| {
            let mut lanes = [0i64; 4];
            for (j, &c) in row.iter().enumerate() {
                lanes[(j % LANES) / 2] += i64::from(c).abs();
            }
            let lane_max = lanes.iter().map(|l| l * 32768).max().unwrap_or(0);
            let total: i64 = lanes.iter().map(|l| (l * 32768) >> self.lane_shift).sum();
            lane_max < 1 << 31 && total + i64::from(ROUND) < 1 << 31
        })
    }
}

/// Rounds a row to `frac_bits` fractional bits so that it sums to exactly one (unit DC
/// gain): round to nearest, then move the coefficients whose rounding was closest to a
/// tie, one step each, until the sum is right. Zero padding stays zero. `None` if a
/// coefficient does not fit i16.
fn quantize_row(row: &[f64], frac_bits: u32) -> Option<Vec<i16>> {
    let one = 1i64 << frac_bits;
    let scaled: Vec<f64> = row.iter().map(|c| c * one as f64).collect();
    let mut q: Vec<i64> = scaled.iter().map(|v| v.round() as i64).collect();
    let mut diff = one - q.iter().sum::<i64>();
    while diff != 0 {
        let dir = diff.signum();
        let best = (0..q.len()).filter(|&i| row[i] != 0.0).min_by(|&a, &b| {
            let ea = ((q[a] + dir) as f64 - scaled[a]).abs();
            let eb = ((q[b] + dir) as f64 - scaled[b]).abs();
            ea.total_cmp(&eb)
        })?;
        q[best] += dir;
        diff -= dir;
    }
    q.into_iter().map(|v| i16::try_from(v).ok()).collect()
}

/// Kaiser's β for a stopband attenuation in dB.
fn kaiser_beta(attenuation_db: f64) -> f64 {
    if attenuation_db > 50.0 {
        0.1102 * (attenuation_db - 8.7)
    } else if attenuation_db >= 21.0 {
        0.5842 * (attenuation_db - 21.0).powf(0.4) + 0.07886 * (attenuation_db - 21.0)
    } else {
        0.0
    }
}

/// Modified Bessel function of the first kind, order 0 (power series).
fn bessel_i0(x: f64) -> f64 {
    let mut sum = 1.0;
    let mut term = 1.0;
    let half = x / 2.0;
    for k in 1..64 {
        term *= half / k as f64;
        let t2 = term * term;
        sum += t2;
        if t2 < sum * 1e-17 {
            break;
        }
    }
    sum
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        (PI * x).sin() / (PI * x)
    }
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_pairs() -> impl Iterator<Item = (u32, u32)> {
        SUPPORTED_RATES_HZ
            .iter()
            .flat_map(|&a| SUPPORTED_RATES_HZ.iter().map(move |&b| (a, b)))
            .filter(|(a, b)| a != b)
    }

    fn design_for(from: u32, to: u32) -> (Filter, usize, usize, usize) {
        let g = gcd(from, to);
        let (up, down) = ((to / g) as usize, (from / g) as usize);
        let (filter, delay) = design(from, to, up, down);
        (filter, delay, up, down)
    }

    /// After a reset the next frame converts as on a new resampler (nothing of the audio
    /// before it leaks in), however many resets came between, at every rate pair.
    #[test]
    fn a_reset_forgets_the_audio_before_it_once_or_repeated() {
        for (from, to) in all_pairs() {
            let frame = (from / 50) as usize;
            let tone = |k: usize| {
                (0..frame)
                    .map(|i| ((((k * frame + i) as f64) * 0.3).sin() * 12_000.0) as i16)
                    .collect::<Vec<_>>()
            };
            let mut fresh = Resampler::new(from, to, 1, frame).unwrap();
            let mut want = vec![0i16; fresh.max_output_len()];
            let n = fresh.process(&tone(7), &mut want);
            let mut used = Resampler::new(from, to, 1, frame).unwrap();
            let mut out = vec![0i16; used.max_output_len()];
            for k in 0..3 {
                used.process(&tone(k), &mut out);
            }
            for resets in 1..=3 {
                for _ in 0..resets {
                    used.reset();
                }
                let m = used.process(&tone(7), &mut out);
                assert_eq!(
                    (m, &out[..m]),
                    (n, &want[..n]),
                    "{from} -> {to}, {resets} resets"
                );
            }
        }
    }

    #[test]
    fn simd_kernel_matches_portable_reference_bit_for_bit() {
        let mut seed = 0x2545_f491_u32;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed as i16
        };
        for len in [8usize, 16, 96, 536] {
            for extreme in [false, true] {
                let data: Vec<Vec<i16>> = (0..8)
                    .map(|_| {
                        (0..len)
                            .map(|_| match (extreme, next() & 1) {
                                (true, 0) => i16::MIN,
                                (true, _) => i16::MAX,
                                _ => next(),
                            })
                            .collect()
                    })
                    .collect();
                let rows = [&data[0][..], &data[1][..], &data[2][..], &data[3][..]];
                let wins = [&data[4][..], &data[5][..], &data[6][..], &data[7][..]];
                for shift in 1..=4 {
                    assert_eq!(
                        dot::<4, false, false>(rows, wins, shift),
                        dot_portable(rows, wins, shift)
                    );
                    let shared_row = [rows[0]; 4];
                    assert_eq!(
                        dot::<4, true, false>(shared_row, wins, shift),
                        dot_portable(shared_row, wins, shift)
                    );
                    let six_rows = [rows[0], rows[1], rows[2], rows[3], wins[0], wins[1]];
                    let shared_win = [wins[2]; 6];
                    assert_eq!(
                        dot::<6, false, true>(six_rows, shared_win, shift),
                        dot_portable(six_rows, shared_win, shift)
                    );
                }
            }
        }
    }

    #[test]
    fn every_row_sums_to_one_and_no_sum_can_overflow() {
        for (from, to) in all_pairs() {
            let (f, delay, up, down) = design_for(from, to);
            assert_eq!(f.taps % LANES, 0);
            assert_eq!(delay % (up * down), 0);
            assert!(f.fits_i32(), "{from}->{to}");
            let one = 1i32 << (15 + f.lane_shift - LANE_HEADROOM_BITS);
            for p in 0..up {
                assert_eq!(f.row(p).iter().map(|&c| i32::from(c)).sum::<i32>(), one);
            }
        }
        // The bound is tight enough to matter: doubling any filter's scale breaks it, or
        // breaks i16.
        let (f, _, _, _) = design_for(8_000, 16_000);
        let max_row_l1 = (0..2)
            .map(|p| f.row(p).iter().map(|&c| i64::from(c).abs()).sum::<i64>())
            .max()
            .unwrap();
        assert!(
            max_row_l1 > 2 * 32768,
            "8 -> 16 kHz rows sum above 2.0 in absolute value"
        );
    }

    /// |H(f)| / L of the quantised prototype, `f` in Hz at the high rate `up × from`.
    fn gain(f: &Filter, up: usize, high_hz: f64, freq: f64) -> f64 {
        let (mut re, mut im) = (0.0, 0.0);
        for p in 0..up {
            for (j, &c) in f.row(p).iter().enumerate() {
                let m = p + (f.taps - 1 - j) * up;
                let w = 2.0 * PI * freq / high_hz * m as f64;
                re += f64::from(c) * w.cos();
                im -= f64::from(c) * w.sin();
            }
        }
        let one = f64::from(1u32 << (15 + f.lane_shift - LANE_HEADROOM_BITS));
        (re * re + im * im).sqrt() / one / up as f64
    }

    /// The quantised filter itself, on a dense grid: passband within 0.1 dB up to 0.9 of
    /// the lower Nyquist, at least 60 dB down from the lower Nyquist to half the high rate
    /// (every image and every alias comes from that range).
    #[test]
    fn quantised_filters_meet_the_passband_and_stopband_on_a_dense_grid() {
        for (from, to) in all_pairs() {
            let (f, _, up, _) = design_for(from, to);
            let high_hz = f64::from(from) * up as f64;
            let nyquist = f64::from(from.min(to)) / 2.0;
            let (mut lo, mut hi) = (f64::MAX, f64::MIN);
            for k in 0..=200 {
                let freq = PASSBAND_EDGE * nyquist * f64::from(k) / 200.0;
                let db = 20.0 * gain(&f, up, high_hz, freq).log10();
                lo = lo.min(db);
                hi = hi.max(db);
            }
            let mut stop = f64::MIN;
            let points = 3000;
            for k in 0..=points {
                let freq = nyquist + (high_hz / 2.0 - nyquist) * f64::from(k) / f64::from(points);
                stop = stop.max(20.0 * gain(&f, up, high_hz, freq).log10());
            }
            println!(
                "{from:>5}->{to:<5} taps {:>3} extra bits {}  passband {lo:+.4}..{hi:+.4} dB  stopband {stop:.1} dB",
                f.taps,
                f.lane_shift - LANE_HEADROOM_BITS
            );
            assert!(hi - lo <= 0.1, "{from}->{to}: ripple {}", hi - lo);
            assert!(stop <= -60.0, "{from}->{to}: stopband {stop}");
        }
    }
}
