//! Sample format (bit depth) conversion between i16, the engine's working format, and
//! u8, packed 24-bit, 24-bit in a 32-bit container, i32 and f32.
//!
//! # Formats ([`SampleFormat`])
//! All integer formats are two's complement scaled to full scale, except [`SampleFormat::U8`],
//! which is offset binary (128 is silence), as in 8-bit WAV. Packed 24-bit
//! is three bytes little-endian per sample (WAV `wBitsPerSample = 24`);
//! [`SampleFormat::I24In32`] holds the 24-bit value sign-extended in the low bits of an
//! `i32` (ALSA `S24_LE`). f32 uses the `x / 32768` convention of
//! [`super::i16_to_f32`]: i16 maps onto [-1, 1) exactly, and +1.0 saturates to 32767.
//!
//! # Widening and narrowing
//! - **Widening** (i16 → i24, i32, f32; u8 → i16) is exact: a left shift, or a division by
//!   a power of two in f32, so every i16 survives a trip through a wider format and back
//!   unchanged (tested for all 65,536 values).
//! - **Narrowing** (→ i16, i16 → u8) rounds to nearest, ties to even (no DC bias), and
//!   saturates at the rails. Values outside a container's valid range (an `I24In32` beyond
//!   24 bits, f32 beyond ±1) saturate too; NaN becomes 0 and ±∞ the rails, so no input can
//!   panic or wrap.
//!
//! # Dither
//! Rounding error is correlated with the signal: a quiet tone, or a fade, turns into
//! harmonic distortion and noise modulation instead of a steady hiss. With
//! [`Dither::Tpdf`], narrowing adds triangular-PDF noise of ±1 LSB of the target (the sum
//! of two independent uniform values, Vanderkooy & Lipshitz, "Dither in Digital Audio",
//! JAES 1987) before rounding. TPDF is the least noise that makes both
//! the mean and the variance of the total error independent of the signal: the error then
//! has mean 0 and variance LSB²/4 (RMS ½ LSB: −96.3 dBFS at 16 bits, full-scale square
//! wave as 0 dBFS) whatever the input, at the cost of a total error up to ±1.5 LSB instead
//! of ±0.5 LSB. The noise comes from four interleaved xorshift64 generators (Marsaglia,
//! "Xorshift RNGs", 2003) in the converter, seeded by the caller: the output is
//! deterministic, repeatable, and the same however the stream is split into calls. Dither matters where the source has more than 16 bits
//! of real resolution (f32, 24-bit audio at low levels) or when reducing to 8 bits; a
//! speech codec's own noise usually hides it, so it is off by default.
//!
//! Measured (tests below), f32 → i16 with TPDF, 100,000 samples at each of 0, ¼, ½ and ¾
//! LSB above an integer: error mean within ±0.002 LSB, variance 0.249–0.251 LSB², largest
//! error 1.25 LSB, lag-1 correlation of the error under 0.005 (asserted: |mean| < 0.01,
//! variance 0.25 ± 0.01, |error| < 1.5, |correlation| < 0.01; the i32 and u8 paths are held
//! to the same bounds). Without dither the error is the fixed −¼ … +¼ LSB rounding of
//! the input (signal dependent) with variance 0.

use super::i16_to_f32;

/// A sample's encoding. See the [module docs](self) for each one's scaling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SampleFormat {
    /// 8-bit unsigned, offset binary (128 = silence), as in 8-bit WAV.
    U8,
    /// 16-bit signed: the engine's working format.
    I16,
    /// 24-bit signed, packed: three bytes per sample, little-endian.
    I24,
    /// 24-bit signed in the low bits of an `i32`, sign-extended (ALSA `S24_LE`).
    I24In32,
    /// 32-bit signed.
    I32,
    /// 32-bit float, full scale ±1.0 (`x / 32768` for i16).
    F32,
}

impl SampleFormat {
    /// Significant bits per sample (24 for both 24-bit layouts, 32 for f32).
    pub const fn bits(self) -> u32 {
        match self {
            SampleFormat::U8 => 8,
            SampleFormat::I16 => 16,
            SampleFormat::I24 | SampleFormat::I24In32 => 24,
            SampleFormat::I32 | SampleFormat::F32 => 32,
        }
    }

    /// Bytes one sample occupies in memory or in a file (3 for packed 24-bit, 4 for
    /// 24-bit in 32).
    pub const fn bytes_per_sample(self) -> usize {
        match self {
            SampleFormat::U8 => 1,
            SampleFormat::I16 => 2,
            SampleFormat::I24 => 3,
            SampleFormat::I24In32 | SampleFormat::I32 | SampleFormat::F32 => 4,
        }
    }

    /// Slice elements one sample takes in [`Samples`] / [`SamplesMut`]: 3 bytes for
    /// packed 24-bit, 1 for every other format.
    pub const fn elements_per_sample(self) -> usize {
        match self {
            SampleFormat::I24 => 3,
            _ => 1,
        }
    }
}

/// Borrowed input samples, tagged with their format. Packed 24-bit is a byte slice of
/// three bytes per sample; a trailing partial sample is ignored.
#[derive(Debug, Clone, Copy)]
pub enum Samples<'a> {
    /// [`SampleFormat::U8`].
    U8(&'a [u8]),
    /// [`SampleFormat::I16`].
    I16(&'a [i16]),
    /// [`SampleFormat::I24`], 3 bytes per sample.
    I24(&'a [u8]),
    /// [`SampleFormat::I24In32`].
    I24In32(&'a [i32]),
    /// [`SampleFormat::I32`].
    I32(&'a [i32]),
    /// [`SampleFormat::F32`].
    F32(&'a [f32]),
}

/// Borrowed output buffer, tagged with its format. Packed 24-bit is a byte slice of three
/// bytes per sample.
#[derive(Debug)]
pub enum SamplesMut<'a> {
    /// [`SampleFormat::U8`].
    U8(&'a mut [u8]),
    /// [`SampleFormat::I16`].
    I16(&'a mut [i16]),
    /// [`SampleFormat::I24`], 3 bytes per sample.
    I24(&'a mut [u8]),
    /// [`SampleFormat::I24In32`].
    I24In32(&'a mut [i32]),
    /// [`SampleFormat::I32`].
    I32(&'a mut [i32]),
    /// [`SampleFormat::F32`].
    F32(&'a mut [f32]),
}

impl<'a> Samples<'a> {
    /// The format of these samples.
    pub fn format(&self) -> SampleFormat {
        match self {
            Samples::U8(_) => SampleFormat::U8,
            Samples::I16(_) => SampleFormat::I16,
            Samples::I24(_) => SampleFormat::I24,
            Samples::I24In32(_) => SampleFormat::I24In32,
            Samples::I32(_) => SampleFormat::I32,
            Samples::F32(_) => SampleFormat::F32,
        }
    }

    /// Whole samples held.
    pub fn len(&self) -> usize {
        match self {
            Samples::U8(s) => s.len(),
            Samples::I16(s) => s.len(),
            Samples::I24(s) => s.len() / 3,
            Samples::I24In32(s) | Samples::I32(s) => s.len(),
            Samples::F32(s) => s.len(),
        }
    }

    /// Whether no whole sample is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Samples `start..end` (in samples, not bytes); `end ≤ len()`.
    pub(super) fn range(self, start: usize, end: usize) -> Samples<'a> {
        match self {
            Samples::U8(s) => Samples::U8(&s[start..end]),
            Samples::I16(s) => Samples::I16(&s[start..end]),
            Samples::I24(s) => Samples::I24(&s[3 * start..3 * end]),
            Samples::I24In32(s) => Samples::I24In32(&s[start..end]),
            Samples::I32(s) => Samples::I32(&s[start..end]),
            Samples::F32(s) => Samples::F32(&s[start..end]),
        }
    }
}

impl SamplesMut<'_> {
    /// The format of this buffer.
    pub fn format(&self) -> SampleFormat {
        match self {
            SamplesMut::U8(_) => SampleFormat::U8,
            SamplesMut::I16(_) => SampleFormat::I16,
            SamplesMut::I24(_) => SampleFormat::I24,
            SamplesMut::I24In32(_) => SampleFormat::I24In32,
            SamplesMut::I32(_) => SampleFormat::I32,
            SamplesMut::F32(_) => SampleFormat::F32,
        }
    }

    /// Whole samples the buffer holds.
    pub fn len(&self) -> usize {
        match self {
            SamplesMut::U8(s) => s.len(),
            SamplesMut::I16(s) => s.len(),
            SamplesMut::I24(s) => s.len() / 3,
            SamplesMut::I24In32(s) | SamplesMut::I32(s) => s.len(),
            SamplesMut::F32(s) => s.len(),
        }
    }

    /// Whether the buffer holds no whole sample.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The buffer from sample `start` on (clamped to its length), reborrowed.
    pub(super) fn tail(&mut self, start: usize) -> SamplesMut<'_> {
        let start = start.min(self.len());
        match self {
            SamplesMut::U8(s) => SamplesMut::U8(&mut s[start..]),
            SamplesMut::I16(s) => SamplesMut::I16(&mut s[start..]),
            SamplesMut::I24(s) => SamplesMut::I24(&mut s[3 * start..]),
            SamplesMut::I24In32(s) => SamplesMut::I24In32(&mut s[start..]),
            SamplesMut::I32(s) => SamplesMut::I32(&mut s[start..]),
            SamplesMut::F32(s) => SamplesMut::F32(&mut s[start..]),
        }
    }
}

/// Whether narrowing conversions add dither.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dither {
    /// Round to nearest, ties to even. Deterministic and exact for values the target can
    /// hold.
    #[default]
    Off,
    /// Triangular-PDF dither of ±1 target LSB before rounding (see the [module docs](self)),
    /// from xorshift64 generators started from `seed` (any value, 0 included).
    Tpdf {
        /// Generator seed; equal seeds give equal output.
        seed: u64,
    },
}

/// Replaces a generator state of 0, at which xorshift would stay (any non-zero constant).
const NONZERO_SEED: u64 = 0x9E37_79B9_7F4A_7C15;

/// f32 → i16 rounding constant: adding 1.5 × 2^23 puts any |v| ≤ 2^22 where f32's spacing
/// is exactly 1, so the hardware's round-to-nearest-even rounds to an integer, and that
/// integer sits in the low mantissa bits: `bits(v + MAGIC) − bits(MAGIC)` is `round(v)`.
/// Branch-free and vectorisable, unlike `rintf` or a saturating float-to-int cast.
const ROUND_MAGIC: f32 = 12_582_912.0;

/// Widens unsigned 8-bit (offset binary) to i16, exactly: `(u − 128) × 256`.
///
/// Processes `min` of the lengths and returns the samples written. Called on the
/// real-time thread; never allocates.
#[inline]
pub fn u8_to_i16(input: &[u8], out: &mut [i16]) -> usize {
    let n = input.len().min(out.len());
    for (o, &u) in out[..n].iter_mut().zip(&input[..n]) {
        *o = (i16::from(u) - 128) << 8;
    }
    n
}

/// Widens i16 to packed 24-bit little-endian, exactly (`x × 256`, 3 bytes per sample).
///
/// Processes `min(input.len(), out.len() / 3)` samples and returns the samples written.
/// Called on the real-time thread; never allocates.
#[inline]
pub fn i16_to_i24(input: &[i16], out: &mut [u8]) -> usize {
    let n = input.len().min(out.len() / 3);
    for (o, &x) in out[..3 * n].chunks_exact_mut(3).zip(&input[..n]) {
        let b = (i32::from(x) << 8).to_le_bytes();
        o.copy_from_slice(&b[..3]);
    }
    n
}

/// Widens i16 to 24-bit in a 32-bit container (low bits, sign-extended), exactly
/// (`x × 256`).
///
/// Processes `min` of the lengths and returns the samples written. Called on the
/// real-time thread; never allocates.
#[inline]
pub fn i16_to_i24_in_i32(input: &[i16], out: &mut [i32]) -> usize {
    let n = input.len().min(out.len());
    for (o, &x) in out[..n].iter_mut().zip(&input[..n]) {
        *o = i32::from(x) << 8;
    }
    n
}

/// Widens i16 to i32, exactly (`x × 65536`).
///
/// Processes `min` of the lengths and returns the samples written. Called on the
/// real-time thread; never allocates.
#[inline]
pub fn i16_to_i32(input: &[i16], out: &mut [i32]) -> usize {
    let n = input.len().min(out.len());
    for (o, &x) in out[..n].iter_mut().zip(&input[..n]) {
        *o = i32::from(x) << 16;
    }
    n
}

/// `x / 2^shift` rounded to nearest, ties to even (`shift` ≥ 1).
#[inline(always)]
fn round_shift(x: i64, shift: u32) -> i64 {
    let half_minus_one = (1i64 << (shift - 1)) - 1;
    (x + half_minus_one + ((x >> shift) & 1)) >> shift
}

#[inline(always)]
fn saturate_i16(x: i64) -> i16 {
    x.clamp(i64::from(i16::MIN), i64::from(i16::MAX)) as i16
}

/// Sign-extends packed little-endian 24-bit.
#[inline(always)]
fn read_i24(b: &[u8]) -> i32 {
    i32::from_le_bytes([0, b[0], b[1], b[2]]) >> 8
}

/// Bit-depth conversion to and from i16, with optional TPDF dither on the narrowing
/// direction (see the [module docs](self)).
///
/// Built on the control plane by [`BitDepthConverter::new`]; the conversion methods run
/// on the real-time thread, never allocate and never panic, whatever the samples. State is
/// the dither generators (under 64 bytes, no heap).
#[derive(Debug, Clone)]
pub struct BitDepthConverter {
    dither: Dither,
    /// Four interleaved xorshift64 generators, stepped together; none is ever 0. Sample
    /// `i` of the stream takes its dither from generator `i % 4`: four independent
    /// dependency chains let the CPU overlap them instead of waiting on one.
    rng: [u64; RNG_LANES],
    /// The next generator to use; [`RNG_LANES`] when all four must step first.
    lane: usize,
}

/// Interleaved dither generators.
const RNG_LANES: usize = 4;

/// splitmix64 (Steele, Lea & Flood 2014): spreads one seed into well-mixed, distinct
/// generator states.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl BitDepthConverter {
    /// A converter that dithers as `dither` says. Control plane (cannot fail).
    pub fn new(dither: Dither) -> Self {
        let mut c = BitDepthConverter {
            dither,
            rng: [1; RNG_LANES],
            lane: RNG_LANES,
        };
        c.reset();
        c
    }

    /// Restarts the dither generator from its seed, so the following output repeats that
    /// of a new converter. Called on the real-time thread; never allocates.
    pub fn reset(&mut self) {
        let seed = match self.dither {
            Dither::Off => 0,
            Dither::Tpdf { seed } => seed,
        };
        for (k, r) in self.rng.iter_mut().enumerate() {
            let s = splitmix64(seed.wrapping_add(k as u64));
            *r = if s == 0 { NONZERO_SEED } else { s };
        }
        self.lane = RNG_LANES;
    }

    /// The dither setting.
    pub fn dither(&self) -> Dither {
        self.dither
    }

    /// Two independent uniform 32-bit values: the halves of the next generator's state
    /// (Marsaglia's xorshift64 with shifts 13, 7, 17).
    #[inline(always)]
    fn next_pair(&mut self) -> (u32, u32) {
        if self.lane >= RNG_LANES {
            for x in &mut self.rng {
                *x ^= *x << 13;
                *x ^= *x >> 7;
                *x ^= *x << 17;
            }
            self.lane = 0;
        }
        let x = self.rng[self.lane];
        self.lane += 1;
        ((x >> 32) as u32, x as u32)
    }

    /// TPDF dither in units of `2^-shift` target LSB: the difference of two uniform
    /// integers in `[0, 2^shift)`, so within `±(2^shift − 1)` (shift ≤ 32).
    #[inline(always)]
    fn tpdf(&mut self, shift: u32) -> i64 {
        let (a, b) = self.next_pair();
        i64::from(a >> (32 - shift)) - i64::from(b >> (32 - shift))
    }

    /// Narrows integers that carry `shift` extra bits below the target's LSB into `out`,
    /// each first clamped to `[lo, hi]` (the container's valid range). Writes as many as
    /// both sides hold and returns the count.
    #[inline(always)]
    fn narrow<T: Copy>(
        &mut self,
        input: impl Iterator<Item = i64>,
        out: &mut [T],
        shift: u32,
        (lo, hi): (i64, i64),
        store: impl Fn(i64) -> T,
    ) -> usize {
        let mut n = 0;
        match self.dither {
            Dither::Off => {
                for (o, x) in out.iter_mut().zip(input) {
                    *o = store(round_shift(x.clamp(lo, hi), shift));
                    n += 1;
                }
            }
            Dither::Tpdf { .. } => {
                for (o, x) in out.iter_mut().zip(input) {
                    let d = self.tpdf(shift);
                    *o = store(round_shift(x.clamp(lo, hi) + d, shift));
                    n += 1;
                }
            }
        }
        n
    }

    /// Narrows i16 to unsigned 8-bit (offset binary): `round(x / 256) + 128`, saturated
    /// to 0..=255, dithered if enabled.
    ///
    /// Processes `min` of the lengths and returns the samples written. Called on the
    /// real-time thread; never allocates.
    pub fn i16_to_u8(&mut self, input: &[i16], out: &mut [u8]) -> usize {
        let input = input.iter().map(|&x| i64::from(x));
        let range = (i64::from(i16::MIN), i64::from(i16::MAX));
        self.narrow(input, out, 8, range, |v| (v.clamp(-128, 127) + 128) as u8)
    }

    /// Narrows packed 24-bit little-endian (3 bytes per sample) to i16: rounded,
    /// saturated, dithered if enabled.
    ///
    /// Processes `min(input.len() / 3, out.len())` samples and returns the samples
    /// written. Called on the real-time thread; never allocates.
    pub fn i24_to_i16(&mut self, input: &[u8], out: &mut [i16]) -> usize {
        let input = input.chunks_exact(3).map(|b| i64::from(read_i24(b)));
        let range = (-(1i64 << 23), (1i64 << 23) - 1);
        self.narrow(input, out, 8, range, saturate_i16)
    }

    /// Narrows 24-bit in a 32-bit container to i16: values beyond 24 bits are first
    /// clamped to the 24-bit range, then rounded, saturated, dithered if enabled.
    ///
    /// Processes `min` of the lengths and returns the samples written. Called on the
    /// real-time thread; never allocates.
    pub fn i24_in_i32_to_i16(&mut self, input: &[i32], out: &mut [i16]) -> usize {
        let input = input.iter().map(|&x| i64::from(x));
        let range = (-(1i64 << 23), (1i64 << 23) - 1);
        self.narrow(input, out, 8, range, saturate_i16)
    }

    /// Narrows i32 to i16: rounded, saturated, dithered if enabled.
    ///
    /// Processes `min` of the lengths and returns the samples written. Called on the
    /// real-time thread; never allocates.
    pub fn i32_to_i16(&mut self, input: &[i32], out: &mut [i16]) -> usize {
        let input = input.iter().map(|&x| i64::from(x));
        let range = (i64::from(i32::MIN), i64::from(i32::MAX));
        self.narrow(input, out, 16, range, saturate_i16)
    }

    /// Narrows f32 (full scale ±1.0) to i16: `x × 32768` rounded to nearest (ties to
    /// even), saturated; NaN gives 0 and ±∞ the rails. Dithered if enabled.
    ///
    /// Processes `min` of the lengths and returns the samples written. Called on the
    /// real-time thread; never allocates.
    pub fn f32_to_i16(&mut self, input: &[f32], out: &mut [i16]) -> usize {
        let n = input.len().min(out.len());
        let quantise = |v: f32| {
            // NaN to 0 (a select), then clamp: the sum below is then within the range
            // where its bits encode the rounded value, and the cast is exact.
            let v = if v.is_nan() { 0.0 } else { v };
            let r = v.clamp(-32_768.0, 32_767.0) + ROUND_MAGIC;
            (r.to_bits() as i32 - ROUND_MAGIC.to_bits() as i32) as i16
        };
        match self.dither {
            Dither::Off => {
                for (o, &x) in out[..n].iter_mut().zip(&input[..n]) {
                    *o = quantise(x * 32_768.0);
                }
            }
            Dither::Tpdf { .. } => {
                // 24-bit uniform values: their difference is exact in f32.
                const SCALE: f32 = 1.0 / (1u32 << 24) as f32;
                for (o, &x) in out[..n].iter_mut().zip(&input[..n]) {
                    let (a, b) = self.next_pair();
                    let d = ((a >> 8) as i32 - (b >> 8) as i32) as f32 * SCALE;
                    *o = quantise(x * 32_768.0 + d);
                }
            }
        }
        n
    }

    /// Converts samples of any format to i16: exact for u8 and i16, rounded (and
    /// dithered if enabled) for the wider formats.
    ///
    /// Processes `min(input.len(), out.len())` samples and returns the samples written.
    /// Called on the real-time thread; never allocates.
    pub fn to_i16(&mut self, input: Samples<'_>, out: &mut [i16]) -> usize {
        match input {
            Samples::U8(s) => u8_to_i16(s, out),
            Samples::I16(s) => {
                let n = s.len().min(out.len());
                out[..n].copy_from_slice(&s[..n]);
                n
            }
            Samples::I24(s) => self.i24_to_i16(s, out),
            Samples::I24In32(s) => self.i24_in_i32_to_i16(s, out),
            Samples::I32(s) => self.i32_to_i16(s, out),
            Samples::F32(s) => self.f32_to_i16(s, out),
        }
    }

    /// Converts i16 samples to any format: exact for the wider formats, rounded (and
    /// dithered if enabled) for u8.
    ///
    /// Processes `min(input.len(), out.len())` samples and returns the samples written.
    /// Called on the real-time thread; never allocates.
    pub fn from_i16(&mut self, input: &[i16], out: SamplesMut<'_>) -> usize {
        match out {
            SamplesMut::U8(o) => self.i16_to_u8(input, o),
            SamplesMut::I16(o) => {
                let n = input.len().min(o.len());
                o[..n].copy_from_slice(&input[..n]);
                n
            }
            SamplesMut::I24(o) => i16_to_i24(input, o),
            SamplesMut::I24In32(o) => i16_to_i24_in_i32(input, o),
            SamplesMut::I32(o) => i16_to_i32(input, o),
            SamplesMut::F32(o) => i16_to_f32(input, o),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_i16() -> Vec<i16> {
        (i16::MIN..=i16::MAX).collect()
    }

    fn off() -> BitDepthConverter {
        BitDepthConverter::new(Dither::Off)
    }

    fn tpdf(seed: u64) -> BitDepthConverter {
        BitDepthConverter::new(Dither::Tpdf { seed })
    }

    #[test]
    fn every_i16_round_trips_exactly_through_each_wider_format() {
        let all = all_i16();
        for format in [
            SampleFormat::I16,
            SampleFormat::I24,
            SampleFormat::I24In32,
            SampleFormat::I32,
            SampleFormat::F32,
        ] {
            let mut c = off();
            let (mut bytes, mut ints, mut floats, mut shorts) = (
                vec![0u8; 3 * all.len()],
                vec![0i32; all.len()],
                vec![0f32; all.len()],
                vec![0i16; all.len()],
            );
            let wide = match format {
                SampleFormat::I24 => SamplesMut::I24(&mut bytes),
                SampleFormat::I24In32 => SamplesMut::I24In32(&mut ints),
                SampleFormat::I32 => SamplesMut::I32(&mut ints),
                SampleFormat::F32 => SamplesMut::F32(&mut floats),
                _ => SamplesMut::I16(&mut shorts),
            };
            assert_eq!(wide.format(), format);
            assert_eq!(c.from_i16(&all, wide), all.len());
            let wide = match format {
                SampleFormat::I24 => Samples::I24(&bytes),
                SampleFormat::I24In32 => Samples::I24In32(&ints),
                SampleFormat::I32 => Samples::I32(&ints),
                SampleFormat::F32 => Samples::F32(&floats),
                _ => Samples::I16(&shorts),
            };
            assert_eq!((wide.format(), wide.len()), (format, all.len()));
            let mut back = vec![0i16; all.len()];
            assert_eq!(c.to_i16(wide, &mut back), all.len());
            assert_eq!(back, all, "{format:?}");
        }
    }

    #[test]
    fn widening_is_the_documented_shift() {
        let x = [i16::MIN, -1, 0, 1, i16::MAX];
        let mut ints = [0i32; 5];
        i16_to_i32(&x, &mut ints);
        assert_eq!(ints, [i32::MIN, -65_536, 0, 65_536, 0x7FFF_0000]);
        i16_to_i24_in_i32(&x, &mut ints);
        assert_eq!(ints, [-(1 << 23), -256, 0, 256, 0x7F_FF00]);
        let mut bytes = [0u8; 15];
        assert_eq!(i16_to_i24(&x, &mut bytes), 5);
        assert_eq!(
            bytes,
            [0, 0, 0x80, 0, 0xFF, 0xFF, 0, 0, 0, 0, 1, 0, 0, 0xFF, 0x7F]
        );
        let mut shorts = [0i16; 4];
        u8_to_i16(&[0, 127, 128, 255], &mut shorts);
        assert_eq!(shorts, [i16::MIN, -256, 0, 0x7F00]);
    }

    #[test]
    fn every_u8_round_trips_exactly_and_i16_to_u8_rounds_ties_to_even_and_saturates() {
        let all: Vec<u8> = (0..=255).collect();
        let mut wide = vec![0i16; 256];
        let mut back = vec![0u8; 256];
        u8_to_i16(&all, &mut wide);
        off().i16_to_u8(&wide, &mut back);
        assert_eq!(back, all);
        let cases = [
            (0i16, 128u8),
            (127, 128),    // 0.496 -> 0
            (128, 128),    // 0.5 -> 0 (even)
            (129, 129),    // 0.504 -> 1
            (384, 130),    // 1.5 -> 2 (even)
            (-128, 128),   // -0.5 -> 0
            (-384, 126),   // -1.5 -> -2
            (32_639, 255), // 127.496 -> 127
            (32_640, 255), // 127.5 -> 128 -> saturates at 127
            (i16::MAX, 255),
            (i16::MIN, 0),
        ];
        for (x, want) in cases {
            let mut o = [0u8];
            off().i16_to_u8(&[x], &mut o);
            assert_eq!(o[0], want, "{x}");
        }
    }

    #[test]
    fn narrowing_rounds_to_nearest_ties_to_even_and_saturates() {
        let mut c = off();
        let mut o = [0i16; 8];
        let i32_in = [
            0x8000,
            0x1_8000,
            -0x8000,
            -0x1_8000,
            0x7FFF_7FFF,
            i32::MAX,
            i32::MIN,
            0x7FFF_8000,
        ];
        c.i32_to_i16(&i32_in, &mut o);
        assert_eq!(o, [0, 2, 0, -2, 32_767, 32_767, -32_768, 32_767]);

        let i24_in = [
            0x80,
            0x180,
            -0x80,
            -0x180,
            0x7F_FF7F,
            0x7F_FFFF,
            -(1 << 23),
            i32::MAX,
        ];
        c.i24_in_i32_to_i16(&i24_in, &mut o);
        assert_eq!(
            o,
            [0, 2, 0, -2, 32_767, 32_767, -32_768, 32_767],
            "beyond 24 bits clamps"
        );
        c.i24_in_i32_to_i16(&[i32::MIN, 0x81, -0x81, 0x17F], &mut o[..4]);
        assert_eq!(o[..4], [-32_768, 1, -1, 1]);

        let packed: Vec<u8> = [
            0x80i32,
            0x180,
            -0x80,
            -0x180,
            0x7F_FF7F,
            0x7F_FFFF,
            -(1 << 23),
            -1,
        ]
        .iter()
        .flat_map(|v| v.to_le_bytes()[..3].to_vec())
        .collect();
        assert_eq!(c.i24_to_i16(&packed, &mut o), 8);
        assert_eq!(o, [0, 2, 0, -2, 32_767, 32_767, -32_768, 0]);

        let lsb = 1.0 / 32_768.0;
        let f32_in = [
            0.5 * lsb,
            1.5 * lsb,
            -0.5 * lsb,
            -2.5 * lsb,
            1.0,
            2.0,
            -1.0,
            -1e30,
        ];
        c.f32_to_i16(&f32_in, &mut o);
        assert_eq!(o, [0, 2, 0, -2, 32_767, 32_767, -32_768, -32_768]);
        c.f32_to_i16(
            &[0.49 * lsb, 0.51 * lsb, 100.49 * lsb, -100.51 * lsb],
            &mut o[..4],
        );
        assert_eq!(o[..4], [0, 1, 100, -101]);
    }

    #[test]
    fn nan_and_infinity_convert_safely_with_and_without_dither() {
        let input = [
            f32::NAN,
            -f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MAX,
            f32::MIN,
            f32::MIN_POSITIVE,
            -0.0,
        ];
        for mut c in [off(), tpdf(7)] {
            let mut o = [1i16; 8];
            assert_eq!(c.f32_to_i16(&input, &mut o), 8);
            assert_eq!(o[..6], [0, 0, 32_767, -32_768, 32_767, -32_768]);
            assert!(o[6..].iter().all(|v| v.abs() <= 1));
        }
    }

    #[test]
    fn lengths_are_the_shorter_side_and_partial_packed_samples_are_ignored() {
        let mut c = tpdf(1);
        let mut o = [9i16; 4];
        assert_eq!(c.i24_to_i16(&[0; 7], &mut o), 2);
        assert_eq!(o[2..], [9, 9]);
        assert_eq!(c.i32_to_i16(&[0; 10], &mut o), 4);
        assert_eq!(c.f32_to_i16(&[], &mut o), 0);
        let mut bytes = [0u8; 8];
        assert_eq!(i16_to_i24(&[1, 2, 3], &mut bytes), 2);
        assert_eq!(bytes[6..], [0, 0]);
        assert_eq!(Samples::I24(&[0; 7]).len(), 2);
        assert!(Samples::F32(&[]).is_empty());
        // Packed 24-bit longer than the internal stack block.
        let long: Vec<u8> = (0..1000i32)
            .flat_map(|v| (v << 8).to_le_bytes()[..3].to_vec())
            .collect();
        let mut out = vec![0i16; 1000];
        assert_eq!(off().i24_to_i16(&long, &mut out), 1000);
        assert!(out
            .iter()
            .enumerate()
            .all(|(i, &v)| i32::from(v) == i as i32));
    }

    /// Error statistics (in target LSB) of narrowing a constant `value` (in target LSB,
    /// fractional) `n` times: mean, variance, largest |error|, lag-1 correlation.
    fn error_stats(errors: &[f64]) -> (f64, f64, f64, f64) {
        let n = errors.len() as f64;
        let mean = errors.iter().sum::<f64>() / n;
        let var = errors.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / n;
        let max = errors.iter().fold(0f64, |m, e| m.max(e.abs()));
        let lag1 = errors
            .windows(2)
            .map(|w| (w[0] - mean) * (w[1] - mean))
            .sum::<f64>()
            / n;
        let corr = if var > 0.0 { lag1 / var } else { 0.0 };
        (mean, var, max, corr)
    }

    /// TPDF: whatever the input, the total error has mean 0 and variance 1/4 LSB² (1/12 of
    /// rounding plus 1/6 of the dither) and stays within ±1.5 LSB; successive errors are
    /// uncorrelated. Without dither the error is the input's fractional part, a bias.
    #[test]
    fn tpdf_dither_error_has_zero_mean_and_quarter_lsb_variance_for_any_input() {
        const N: usize = 100_000;
        let mut out = vec![0i16; N];
        for frac in [0.0, 0.25, 0.5, 0.75] {
            let value = 100.0 + frac;
            // f32 path.
            let input = vec![(value / 32_768.0) as f32; N];
            let mut c = tpdf(0x1234);
            c.f32_to_i16(&input, &mut out);
            let errors: Vec<f64> = out.iter().map(|&v| f64::from(v) - value).collect();
            let (mean, var, max, corr) = error_stats(&errors);
            println!("f32 frac {frac}: mean {mean:+.4} var {var:.4} max {max:.3} lag-1 {corr:+.4}");
            assert!(mean.abs() < 0.01, "{frac}: mean {mean}");
            assert!((var - 0.25).abs() < 0.01, "{frac}: var {var}");
            assert!(max < 1.5, "{frac}: max {max}");
            assert!(corr.abs() < 0.01, "{frac}: lag-1 {corr}");

            // Integer paths: i32 (16 extra bits) and i16 -> u8 (8 extra bits).
            let input = vec![(value * 65_536.0) as i32; N];
            c.i32_to_i16(&input, &mut out);
            let errors: Vec<f64> = out.iter().map(|&v| f64::from(v) - value).collect();
            let (mean, var, max, _) = error_stats(&errors);
            assert!(
                mean.abs() < 0.01 && (var - 0.25).abs() < 0.01 && max < 1.5,
                "i32 {frac}: {mean} {var} {max}"
            );

            let input = vec![((value * 256.0) as i32 - 32_768) as i16; N];
            let mut bytes = vec![0u8; N];
            c.i16_to_u8(&input, &mut bytes);
            let errors: Vec<f64> = bytes.iter().map(|&v| f64::from(v) - value).collect();
            let (mean, var, max, _) = error_stats(&errors);
            // 8 bits of dither resolution: variance 1/4 − 1/(6·256²), negligible.
            assert!(
                mean.abs() < 0.01 && (var - 0.25).abs() < 0.01 && max < 1.5,
                "u8 {frac}: {mean} {var} {max}"
            );

            // Without dither: a fixed error, the (rounded-away) fraction.
            let mut plain = off();
            plain.f32_to_i16(&[(value / 32_768.0) as f32; 16], &mut out[..16]);
            let errors: Vec<f64> = out[..16].iter().map(|&v| f64::from(v) - value).collect();
            let (mean, var, _, _) = error_stats(&errors);
            let want = if frac > 0.5 { 1.0 - frac } else { -frac };
            assert!((mean - want).abs() < 1e-9 && var == 0.0, "{frac}: {mean}");
        }
    }

    #[test]
    fn dithered_exact_values_move_by_at_most_one_lsb() {
        let all = all_i16();
        let mut floats = vec![0f32; all.len()];
        i16_to_f32(&all, &mut floats);
        let mut back = vec![0i16; all.len()];
        tpdf(99).f32_to_i16(&floats, &mut back);
        assert!(all
            .iter()
            .zip(&back)
            .all(|(&a, &b)| (i32::from(a) - i32::from(b)).abs() <= 1));
        assert_ne!(all, back, "dither does move exact values");
    }

    #[test]
    fn dither_is_deterministic_for_a_seed_and_restarts_on_reset() {
        let input: Vec<f32> = (0..1000).map(|n| (n as f32 * 0.01).sin() * 0.001).collect();
        let run = |c: &mut BitDepthConverter| {
            let mut o = vec![0i16; input.len()];
            c.f32_to_i16(&input, &mut o);
            o
        };
        let (mut a, mut b, mut z) = (tpdf(5), tpdf(5), tpdf(6));
        let first = run(&mut a);
        assert_eq!(first, run(&mut b));
        assert_ne!(first, run(&mut z));
        assert_ne!(first, run(&mut a), "the generator runs on");
        a.reset();
        assert_eq!(first, run(&mut a));
        // The same stream split into odd-sized calls gets the same dither.
        let mut split = tpdf(5);
        let mut pieces = vec![0i16; input.len()];
        let mut at = 0;
        for len in [1, 2, 3, 5, 7, 11, 13, 958] {
            at += split.f32_to_i16(&input[at..at + len], &mut pieces[at..]);
        }
        assert_eq!(at, input.len());
        assert_eq!(pieces, first);
        // Seed 0 still dithers.
        let mut zero = tpdf(0);
        assert_eq!(zero.dither(), Dither::Tpdf { seed: 0 });
        let mut plain = off();
        assert_ne!(run(&mut zero), run(&mut plain));
    }
}
