//! Channel mixing for interleaved i16 frames: mono ↔ stereo, and any N → M mix through a
//! gain matrix (5.1 → stereo per ITU-R BS.775 as the worked example).
//!
//! # Gains
//! - **Mono → stereo** duplicates the sample into both channels: each loudspeaker plays the
//!   mono signal at its original level (the usual convention for mono content, which then
//!   sits as a phantom centre).
//! - **Stereo → mono** takes the average `(L + R) / 2`, i.e. −6 dB on each channel. A
//!   correlated signal (the same in L and R, as in most voice and centre-panned content)
//!   keeps its level exactly; uncorrelated signals (independent noise, hard-panned
//!   sources) lose 3 dB, because their powers add while their amplitudes do not. The
//!   −3 dB "equal power" alternative (`(L + R) / √2`) would raise a correlated signal by
//!   3 dB and overflow at full scale; the average can never leave the i16 range, so no
//!   saturation is needed and mono → stereo → mono is exact.
//! - **5.1 → stereo** ([`ChannelMatrix::bs775_5_1_to_stereo`]): ITU-R BS.775-3 Table 2,
//!   `Lo = L + 0.707 C + 0.707 Ls`, `Ro = R + 0.707 C + 0.707 Rs` (centre and surrounds at
//!   −3 dB; LFE left out, as BS.775 does), scaled as a whole by `1 / (1 + √2)` (−7.66 dB)
//!   so that a full-scale signal in every channel reaches exactly full scale, never
//!   beyond. The relative gains are the standard's.
//!
//! # Arithmetic
//! [`ChannelMixer`] quantises its gains to Q15, rounding each row so that its quantised
//! gains add up to its exact sum, rounded (as the resampler does with its filter rows): a
//! row whose gains sum to one, such as an average over six channels, passes a signal
//! common to its inputs unchanged, where rounding each gain alone could leave it a few
//! LSB off. It sums products exactly in `i64`, then rounds to nearest with ties to even (no DC bias, unlike always rounding halves up) and
//! saturates to i16. Saturation only engages for matrices whose row gains add up to more
//! than one, and then it clips, never wraps. The fast paths for identity, mono → stereo
//! and stereo → mono give the same results as the general matrix, bit for bit (tested).
//!
//! Measured (tests below): in stereo → mono a correlated tone keeps its level (every
//! sample unchanged), uncorrelated noise drops 3.02 dB (theory 3.01); the BS.775 matrix
//! gives −7.66 dB from a front channel and −10.67 dB from the centre and surrounds.

use crate::processing::audio::config::DspConfigError;

/// Most channels a [`ChannelMatrix`] may have on either side (7.1).
pub const MAX_CHANNELS: usize = 8;
/// Largest magnitude a gain in a [`ChannelMatrix`] may have (linear, +18 dB).
pub const MAX_GAIN: f32 = 8.0;
/// Fractional bits of the quantised gains.
const GAIN_FRAC_BITS: u32 = 15;
/// Q15 one: a unit gain.
const UNIT: i32 = 1 << GAIN_FRAC_BITS;

/// Duplicates each mono sample into a stereo frame (both channels at the mono level).
///
/// Processes `min(input.len(), out.len() / 2)` frames and returns the samples written
/// (twice the frames). Called on the real-time thread; never allocates.
#[inline]
pub fn mono_to_stereo(input: &[i16], out: &mut [i16]) -> usize {
    let frames = input.len().min(out.len() / 2);
    for (o, &x) in out[..2 * frames].chunks_exact_mut(2).zip(&input[..frames]) {
        o[0] = x;
        o[1] = x;
    }
    2 * frames
}

/// Averages each interleaved stereo frame into one mono sample: `(L + R) / 2`, rounded to
/// nearest with ties to even (see the [module docs](self) for why the average).
///
/// The sum is taken in `i32`, so nothing wraps, and the average of two i16 values is
/// always an i16, so nothing saturates. Processes `min(input.len() / 2, out.len())`
/// frames (a trailing odd sample is ignored) and returns the samples written. Called on
/// the real-time thread; never allocates.
#[inline]
pub fn stereo_to_mono(input: &[i16], out: &mut [i16]) -> usize {
    let frames = (input.len() / 2).min(out.len());
    for (o, lr) in out[..frames].iter_mut().zip(input.chunks_exact(2)) {
        let sum = i32::from(lr[0]) + i32::from(lr[1]);
        // Within [-32768, 32767] for every pair, so the cast is exact.
        *o = round_shift(i64::from(sum), 1) as i16;
    }
    frames
}

/// `x / 2^shift` rounded to nearest, ties to even (`shift` ≥ 1).
#[inline(always)]
fn round_shift(x: i64, shift: u32) -> i64 {
    let half_minus_one = (1i64 << (shift - 1)) - 1;
    (x + half_minus_one + ((x >> shift) & 1)) >> shift
}

/// A channel mix: `out[o] = Σ_i gains[o][i] × in[i]` for every frame. Control-plane
/// configuration of a [`ChannelMixer`].
///
/// Gains are linear amplitude factors within ±[`MAX_GAIN`]; only the first
/// `out_channels` rows and `in_channels` columns are used. Channel order is the WAV /
/// SMPTE order (L, R, C, LFE, Ls, Rs, ...). The default is mono identity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChannelMatrix {
    /// Interleaved channels per input frame, 1..=[`MAX_CHANNELS`].
    pub in_channels: usize,
    /// Interleaved channels per output frame, 1..=[`MAX_CHANNELS`].
    pub out_channels: usize,
    /// `gains[o][i]`: linear gain from input channel `i` to output channel `o`.
    pub gains: [[f32; MAX_CHANNELS]; MAX_CHANNELS],
}

impl Default for ChannelMatrix {
    fn default() -> Self {
        ChannelMatrix::identity(1)
    }
}

impl ChannelMatrix {
    /// `channels` in, the same `channels` out, unchanged.
    pub fn identity(channels: usize) -> Self {
        let mut gains = [[0.0; MAX_CHANNELS]; MAX_CHANNELS];
        for (o, row) in gains.iter_mut().enumerate().take(channels) {
            row[o] = 1.0;
        }
        ChannelMatrix {
            in_channels: channels,
            out_channels: channels,
            gains,
        }
    }

    /// Mono → stereo: the sample duplicated at unit gain (see [`mono_to_stereo`]).
    pub fn mono_to_stereo() -> Self {
        let mut gains = [[0.0; MAX_CHANNELS]; MAX_CHANNELS];
        gains[0][0] = 1.0;
        gains[1][0] = 1.0;
        ChannelMatrix {
            in_channels: 1,
            out_channels: 2,
            gains,
        }
    }

    /// Stereo → mono: the average, 0.5 per channel (see [`stereo_to_mono`]).
    pub fn stereo_to_mono() -> Self {
        Self::average(2)
    }

    /// `channels` → mono: the average of all channels (`1 / channels` each), so a signal
    /// common to every channel keeps its level and nothing can overflow.
    pub fn average(channels: usize) -> Self {
        let mut gains = [[0.0; MAX_CHANNELS]; MAX_CHANNELS];
        let g = 1.0 / channels.max(1) as f32;
        for x in gains[0].iter_mut().take(channels) {
            *x = g;
        }
        ChannelMatrix {
            in_channels: channels,
            out_channels: 1,
            gains,
        }
    }

    /// 5.1 (L, R, C, LFE, Ls, Rs) → stereo per ITU-R BS.775-3 Table 2: centre and the
    /// same-side surround at −3 dB (1/√2) relative to the front channel, LFE dropped; the
    /// matrix is scaled by `1 / (1 + √2)` so a full-scale signal in every channel reaches
    /// exactly full scale, never beyond: front 0.414 (−7.66 dB), centre and surround 0.293 (−10.67 dB).
    pub fn bs775_5_1_to_stereo() -> Self {
        let side = std::f32::consts::FRAC_1_SQRT_2;
        let norm = 1.0 / (1.0 + 2.0 * side);
        let (front, other) = (norm, side * norm);
        let mut gains = [[0.0; MAX_CHANNELS]; MAX_CHANNELS];
        // Columns: L, R, C, LFE, Ls, Rs.
        gains[0][..6].copy_from_slice(&[front, 0.0, other, 0.0, other, 0.0]);
        gains[1][..6].copy_from_slice(&[0.0, front, other, 0.0, 0.0, other]);
        ChannelMatrix {
            in_channels: 6,
            out_channels: 2,
            gains,
        }
    }

    /// The mix media-core uses when none is given: identity for equal counts, mono
    /// duplicated into every output channel, anything to mono averaged, 5.1 → stereo per
    /// BS.775. `None` for other pairs (give an explicit matrix) and for counts outside
    /// 1..=[`MAX_CHANNELS`].
    pub fn default_for(in_channels: usize, out_channels: usize) -> Option<Self> {
        let valid = 1..=MAX_CHANNELS;
        if !valid.contains(&in_channels) || !valid.contains(&out_channels) {
            return None;
        }
        match (in_channels, out_channels) {
            (i, o) if i == o => Some(Self::identity(i)),
            (1, o) => {
                let mut gains = [[0.0; MAX_CHANNELS]; MAX_CHANNELS];
                for row in gains.iter_mut().take(o) {
                    row[0] = 1.0;
                }
                Some(ChannelMatrix {
                    in_channels: 1,
                    out_channels: o,
                    gains,
                })
            }
            (i, 1) => Some(Self::average(i)),
            (6, 2) => Some(Self::bs775_5_1_to_stereo()),
            _ => None,
        }
    }
}

/// Rounds `row` to Q15 so that the result sums to the exact sum, rounded: round each gain
/// to nearest, then move the gains whose rounding was closest to a tie, one step each,
/// until the sum is right. Zero gains stay zero. Every |gain| ≤ [`MAX_GAIN`], so nothing
/// overflows.
fn quantise_row(row: &[f32], q: &mut [i32]) {
    let exact = |i: usize| f64::from(row[i]) * f64::from(UNIT);
    for (i, q) in q.iter_mut().enumerate() {
        *q = exact(i).round() as i32;
    }
    let target = (0..row.len()).map(exact).sum::<f64>().round() as i64;
    let mut diff = target - q.iter().map(|&v| i64::from(v)).sum::<i64>();
    // |diff| ≤ row.len() / 2: each gain was off by at most one half.
    while diff != 0 {
        let dir = diff.signum() as i32;
        let Some(best) = (0..row.len()).filter(|&i| row[i] != 0.0).min_by(|&a, &b| {
            let ea = (f64::from(q[a] + dir) - exact(a)).abs();
            let eb = (f64::from(q[b] + dir) - exact(b)).abs();
            ea.total_cmp(&eb)
        }) else {
            // All gains zero: the sum is already exact.
            break;
        };
        q[best] += dir;
        diff -= i64::from(dir);
    }
}

/// What [`ChannelMixer::process`] runs; chosen once at construction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    Identity,
    MonoToStereo,
    StereoToMono,
    Matrix,
}

/// Applies a [`ChannelMatrix`] to interleaved i16 frames (see the [module docs](self)).
///
/// Built on the control plane by [`ChannelMixer::new`]; [`ChannelMixer::process`] runs on
/// the real-time thread. All state is inline (no heap) and `process` keeps none between
/// calls.
#[derive(Debug, Clone)]
pub struct ChannelMixer {
    in_channels: usize,
    out_channels: usize,
    /// Q15 gains, `[out][in]`.
    gains: [[i32; MAX_CHANNELS]; MAX_CHANNELS],
    path: Path,
}

impl ChannelMixer {
    /// Validates `matrix` and quantises its gains to Q15. Control plane.
    ///
    /// Fails when a channel count is outside 1..=[`MAX_CHANNELS`] or a used gain is not
    /// finite or exceeds ±[`MAX_GAIN`].
    pub fn new(matrix: ChannelMatrix) -> Result<Self, DspConfigError> {
        let err = |reason| DspConfigError {
            component: "channel_mixer",
            reason,
        };
        let valid = 1..=MAX_CHANNELS;
        if !valid.contains(&matrix.in_channels) || !valid.contains(&matrix.out_channels) {
            return Err(err("in_channels and out_channels must be within 1..=8"));
        }
        let mut gains = [[0i32; MAX_CHANNELS]; MAX_CHANNELS];
        for (q_row, row) in gains
            .iter_mut()
            .zip(&matrix.gains)
            .take(matrix.out_channels)
        {
            let row = &row[..matrix.in_channels];
            // NaN fails the comparison.
            if !row.iter().all(|g| g.abs() <= MAX_GAIN) {
                return Err(err("gains must be finite and within -8..=8"));
            }
            quantise_row(row, &mut q_row[..matrix.in_channels]);
        }
        let (i, o) = (matrix.in_channels, matrix.out_channels);
        let used = |r: usize| &gains[r][..i];
        let is_identity = i == o
            && (0..o).all(|r| {
                let row = used(r);
                row.iter()
                    .enumerate()
                    .all(|(c, &g)| g == if c == r { UNIT } else { 0 })
            });
        let path = if is_identity {
            Path::Identity
        } else if (i, o) == (1, 2) && used(0) == [UNIT] && used(1) == [UNIT] {
            Path::MonoToStereo
        } else if (i, o) == (2, 1) && used(0) == [UNIT / 2, UNIT / 2] {
            Path::StereoToMono
        } else {
            Path::Matrix
        };
        Ok(ChannelMixer {
            in_channels: i,
            out_channels: o,
            gains,
            path,
        })
    }

    /// Mixes `input` (interleaved frames of [`in_channels`](Self::in_channels)) into
    /// `out` (frames of [`out_channels`](Self::out_channels)).
    ///
    /// Processes as many whole frames as both slices hold (a trailing partial frame is
    /// ignored) and returns the samples written (frames × `out_channels`). Any input is
    /// fine, full scale included: results are rounded and saturated, never wrapped.
    /// Called on the real-time thread; never allocates.
    pub fn process(&self, input: &[i16], out: &mut [i16]) -> usize {
        let (ci, co) = (self.in_channels, self.out_channels);
        let frames = (input.len() / ci).min(out.len() / co);
        match self.path {
            Path::Identity => {
                out[..frames * co].copy_from_slice(&input[..frames * ci]);
                frames * co
            }
            Path::MonoToStereo => mono_to_stereo(&input[..frames], out),
            Path::StereoToMono => stereo_to_mono(&input[..2 * frames], out),
            Path::Matrix => {
                let gains = &self.gains[..co];
                for (o, x) in out[..frames * co]
                    .chunks_exact_mut(co)
                    .zip(input.chunks_exact(ci))
                {
                    for (y, row) in o.iter_mut().zip(gains) {
                        let acc: i64 = row[..ci]
                            .iter()
                            .zip(x)
                            .map(|(&g, &s)| i64::from(g) * i64::from(s))
                            .sum();
                        *y = round_shift(acc, GAIN_FRAC_BITS)
                            .clamp(i64::from(i16::MIN), i64::from(i16::MAX))
                            as i16;
                    }
                }
                frames * co
            }
        }
    }

    /// Channels per input frame.
    pub fn in_channels(&self) -> usize {
        self.in_channels
    }

    /// Channels per output frame.
    pub fn out_channels(&self) -> usize {
        self.out_channels
    }

    /// Whether this mixer copies its input unchanged (equal channel counts, identity
    /// gains).
    pub fn is_identity(&self) -> bool {
        self.path == Path::Identity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rms(x: impl Iterator<Item = i16>) -> f64 {
        let (mut sum, mut n) = (0.0, 0usize);
        for v in x {
            sum += f64::from(v) * f64::from(v);
            n += 1;
        }
        (sum / n as f64).sqrt()
    }

    fn db(ratio: f64) -> f64 {
        20.0 * ratio.log10()
    }

    /// Uniform noise in [-amp, amp] from a fixed xorshift.
    fn noise(seed: u32, amp: i32, len: usize) -> Vec<i16> {
        let mut s = seed;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (((i64::from(s) * i64::from(2 * amp + 1)) >> 32) - i64::from(amp)) as i16
            })
            .collect()
    }

    /// A full-scale-ish 1 kHz tone at 48 kHz.
    fn tone(len: usize, amp: f64) -> Vec<i16> {
        (0..len)
            .map(|n| {
                (amp * (2.0 * std::f64::consts::PI * 1000.0 * n as f64 / 48_000.0).sin()).round()
                    as i16
            })
            .collect()
    }

    fn interleave(l: &[i16], r: &[i16]) -> Vec<i16> {
        l.iter().zip(r).flat_map(|(&a, &b)| [a, b]).collect()
    }

    #[test]
    fn stereo_to_mono_keeps_a_correlated_signal_at_its_level() {
        let t = tone(4800, 20_000.0);
        let stereo = interleave(&t, &t);
        let mut mono = vec![0i16; t.len()];
        assert_eq!(stereo_to_mono(&stereo, &mut mono), t.len());
        assert_eq!(mono, t, "L = R comes out unchanged, sample for sample");
        let change = db(rms(mono.iter().copied()) / rms(t.iter().copied()));
        println!("correlated tone: {change:+.4} dB");
        assert!(change.abs() < 0.001);
    }

    #[test]
    fn stereo_to_mono_lowers_uncorrelated_noise_by_3_db() {
        let (l, r) = (noise(1, 10_000, 48_000), noise(2, 10_000, 48_000));
        let stereo = interleave(&l, &r);
        let mut mono = vec![0i16; l.len()];
        stereo_to_mono(&stereo, &mut mono);
        let input = (rms(l.iter().copied()) + rms(r.iter().copied())) / 2.0;
        let change = db(rms(mono.iter().copied()) / input);
        println!("uncorrelated noise: {change:+.3} dB");
        assert!((change + 3.01).abs() < 0.1, "{change}");
        // Opposite polarity cancels completely.
        let inverted: Vec<i16> = l.iter().map(|&v| -v).collect();
        stereo_to_mono(&interleave(&l, &inverted), &mut mono);
        assert!(mono.iter().all(|&v| v == 0));
    }

    #[test]
    fn stereo_to_mono_never_overflows_at_full_scale_and_rounds_ties_to_even() {
        let cases = [
            ([i16::MAX, i16::MAX], i16::MAX),
            ([i16::MIN, i16::MIN], i16::MIN),
            ([i16::MAX, i16::MIN], 0), // -0.5 -> 0
            ([i16::MIN, i16::MAX], 0),
            ([i16::MAX, i16::MAX - 1], i16::MAX - 1), // 32766.5 -> 32766 (even)
            ([1, 0], 0),                              // 0.5 -> 0
            ([3, 0], 2),                              // 1.5 -> 2
            ([-1, 0], 0),                             // -0.5 -> 0
            ([-3, 0], -2),                            // -1.5 -> -2
            ([i16::MIN, i16::MIN + 1], i16::MIN),     // -32767.5 -> -32768 (even)
        ];
        for (lr, want) in cases {
            let mut out = [0i16; 1];
            assert_eq!(stereo_to_mono(&lr, &mut out), 1);
            assert_eq!(out[0], want, "{lr:?}");
        }
    }

    #[test]
    fn mono_to_stereo_to_mono_is_exact_for_every_i16() {
        let all: Vec<i16> = (i16::MIN..=i16::MAX).collect();
        let mut stereo = vec![0i16; 2 * all.len()];
        let mut back = vec![0i16; all.len()];
        assert_eq!(mono_to_stereo(&all, &mut stereo), stereo.len());
        assert!(stereo.chunks_exact(2).zip(&all).all(|(f, &x)| f == [x, x]));
        assert_eq!(stereo_to_mono(&stereo, &mut back), all.len());
        assert_eq!(back, all);
    }

    #[test]
    fn partial_frames_and_short_outputs_are_ignored_not_overrun() {
        let mut out = [7i16; 3];
        assert_eq!(mono_to_stereo(&[1, 2, 3], &mut out), 2);
        assert_eq!(out, [1, 1, 7]);
        assert_eq!(stereo_to_mono(&[2, 4, 6], &mut out), 1);
        assert_eq!(out[0], 3);
        let mixer = ChannelMixer::new(ChannelMatrix::bs775_5_1_to_stereo()).unwrap();
        assert_eq!(mixer.process(&[0; 11], &mut [0; 8]), 2);
        assert_eq!(mixer.process(&[0; 12], &mut [0; 3]), 2);
        assert_eq!(mixer.process(&[], &mut []), 0);
    }

    #[test]
    fn the_matrix_path_matches_the_fast_paths_bit_for_bit() {
        let x = noise(3, 32_768, 20_000);
        let fast = |m: ChannelMatrix| ChannelMixer::new(m).unwrap();
        // Same gains, forced onto the general path.
        let slow = |m: ChannelMatrix| {
            let mut mixer = ChannelMixer::new(m).unwrap();
            mixer.path = Path::Matrix;
            mixer
        };
        for m in [
            ChannelMatrix::identity(2),
            ChannelMatrix::mono_to_stereo(),
            ChannelMatrix::stereo_to_mono(),
        ] {
            let (f, s) = (fast(m), slow(m));
            assert_ne!(f.path, Path::Matrix);
            let mut a = vec![0i16; 2 * x.len()];
            let mut b = vec![1i16; 2 * x.len()];
            let n = f.process(&x, &mut a);
            assert_eq!(s.process(&x, &mut b), n);
            assert_eq!(a[..n], b[..n], "{:?}", f.path);
        }
    }

    #[test]
    fn bs775_downmix_puts_centre_and_surrounds_3_db_below_the_fronts() {
        let mixer = ChannelMixer::new(ChannelMatrix::bs775_5_1_to_stereo()).unwrap();
        let t = tone(4800, 20_000.0);
        // One input channel at a time carries the tone; measure each output's level.
        let mut level_db = [[f64::NEG_INFINITY; 2]; 6];
        for (ch, level) in level_db.iter_mut().enumerate() {
            let frames: Vec<i16> = t
                .iter()
                .flat_map(|&v| (0..6).map(move |c| if c == ch { v } else { 0 }))
                .collect();
            let mut out = vec![0i16; 2 * t.len()];
            assert_eq!(mixer.process(&frames, &mut out), out.len());
            for (o, l) in level.iter_mut().enumerate() {
                let r = rms(out.iter().skip(o).step_by(2).copied());
                *l = if r > 0.0 {
                    db(r / rms(t.iter().copied()))
                } else {
                    f64::NEG_INFINITY
                };
            }
        }
        println!("BS.775 gains (dB) per input L R C LFE Ls Rs: {level_db:.2?}");
        let near = |a: f64, b: f64| (a - b).abs() < 0.01;
        assert!(near(level_db[0][0], -7.66) && level_db[0][1] == f64::NEG_INFINITY);
        assert!(near(level_db[1][1], -7.66) && level_db[1][0] == f64::NEG_INFINITY);
        assert!(near(level_db[2][0], -10.67) && near(level_db[2][1], -10.67));
        assert!(
            level_db[3].iter().all(|&l| l == f64::NEG_INFINITY),
            "LFE dropped"
        );
        assert!(near(level_db[4][0], -10.67) && level_db[4][1] == f64::NEG_INFINITY);
        assert!(near(level_db[5][1], -10.67) && level_db[5][0] == f64::NEG_INFINITY);
        assert!(near(level_db[0][0] - level_db[2][0], 3.01));
    }

    #[test]
    fn bs775_downmix_of_full_scale_in_every_channel_stays_in_range_without_clipping() {
        let mixer = ChannelMixer::new(ChannelMatrix::bs775_5_1_to_stereo()).unwrap();
        // Q15 rows: 13573 + 9597 + 9598 = 32768, exactly unit gain, so a full-scale
        // signal common to all channels comes out at full scale, unclipped.
        for (v, want) in [(i16::MAX, i16::MAX), (i16::MIN, i16::MIN)] {
            let mut out = [0i16; 2];
            mixer.process(&[v; 6], &mut out);
            assert_eq!(out, [want; 2], "{v}");
        }
        // The worst case for any output: every channel feeding it at full scale, with the
        // other channels at the opposite rail.
        let mut out = [0i16; 2];
        mixer.process(
            &[i16::MIN, i16::MAX, i16::MIN, 0, i16::MIN, i16::MAX],
            &mut out,
        );
        assert_eq!(out[0], i16::MIN);
        let q = ChannelMixer::new(ChannelMatrix::bs775_5_1_to_stereo())
            .unwrap()
            .gains;
        assert_eq!(q[0][..6], [13_573, 0, 9_597, 0, 9_598, 0]);
        assert_eq!(q[1][..6], [0, 13_573, 9_597, 0, 0, 9_598]);
    }

    #[test]
    fn a_matrix_with_gain_above_one_saturates_instead_of_wrapping() {
        let mut m = ChannelMatrix::identity(2);
        m.gains[0] = [2.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        m.gains[1] = [-8.0, 8.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        let mixer = ChannelMixer::new(m).unwrap();
        let mut out = [0i16; 4];
        mixer.process(&[i16::MAX, i16::MAX, i16::MIN, i16::MIN], &mut out);
        assert_eq!(out, [i16::MAX, 0, i16::MIN, 0]);
        mixer.process(&[i16::MIN, i16::MAX, 0, 0], &mut out);
        assert_eq!(out, [-2, i16::MAX, 0, 0]);
        mixer.process(&[100, -50, 3, 4], &mut out);
        assert_eq!(out, [100, -1200, 14, 8]);
    }

    #[test]
    fn new_rejects_bad_channel_counts_and_gains_and_default_for_covers_the_usual_pairs() {
        let mut m = ChannelMatrix::identity(2);
        m.in_channels = 0;
        assert!(ChannelMixer::new(m).is_err());
        m.in_channels = 9;
        assert!(ChannelMixer::new(m).is_err());
        for bad in [f32::NAN, f32::INFINITY, 8.5, -9.0] {
            let mut m = ChannelMatrix::identity(2);
            m.gains[1][0] = bad;
            assert!(ChannelMixer::new(m).is_err(), "{bad}");
            // Unused cells are not checked.
            let mut m = ChannelMatrix::identity(2);
            m.gains[2][0] = bad;
            assert!(ChannelMixer::new(m).is_ok());
        }
        assert!(ChannelMixer::new(ChannelMatrix::default())
            .unwrap()
            .is_identity());
        for i in 1..=MAX_CHANNELS {
            for o in 1..=MAX_CHANNELS {
                let m = ChannelMatrix::default_for(i, o);
                assert_eq!(m.is_some(), i == o || i == 1 || o == 1 || (i, o) == (6, 2));
                if let Some(m) = m {
                    assert_eq!(ChannelMixer::new(m).unwrap().is_identity(), i == o);
                }
            }
        }
        assert_eq!(ChannelMatrix::default_for(0, 1), None);
        assert_eq!(ChannelMatrix::default_for(2, 9), None);
        // Averaging any number of channels: a common signal keeps its level exactly,
        // because each quantised row still sums to one.
        for n in 1..=MAX_CHANNELS {
            let mixer = ChannelMixer::new(ChannelMatrix::average(n)).unwrap();
            assert_eq!(mixer.gains[0][..n].iter().sum::<i32>(), UNIT, "{n}");
            for v in [30_000, i16::MAX, i16::MIN, -1] {
                let mut out = [0i16; 1];
                mixer.process(&[v; MAX_CHANNELS][..n], &mut out);
                assert_eq!(out[0], v, "{n} channels");
            }
        }
    }
}
