//! ITU-T G.711 pulse code modulation: µ-law (RTP `PCMU`) and A-law (RTP `PCMA`).
//!
//! Two layers:
//!
//! - **Sample functions** ([`ulaw_encode_sample`], [`ulaw_decode_sample`],
//!   [`alaw_encode_sample`], [`alaw_decode_sample`]) compute the companding law
//!   (segment search, mantissa, sign) exactly as the ITU-T G.191 Software Tool
//!   Library `g711.c` does (`ulaw_compress`, `ulaw_expand`, `alaw_compress`,
//!   `alaw_expand`). They are `const fn`, written from the standard, and are the
//!   single source of truth.
//! - **Frame functions** ([`ulaw_encode`], [`ulaw_decode`], [`alaw_encode`],
//!   [`alaw_decode`]) are what the lanes call. The portable build looks each
//!   sample up in a table that the compiler builds *from the sample functions* at
//!   compile time, so it cannot drift from the computed law; on a CPU with AVX2
//!   the law is computed 16 samples at a time instead (2-3x faster). The unit
//!   tests compare both builds with the sample functions over every input.
//!
//! Linear samples are signed 16-bit PCM. G.711 quantises a 14-bit (µ-law) or
//! 13-bit (A-law) uniform signal; as in G.191, those are the most significant
//! bits of the 16-bit word (`x >> 2`, `x >> 3`) and the ignored low bits are
//! truncated. Decoded samples are left-justified back into 16 bits, so µ-law
//! decodes to ±32124 at most and A-law to ±32256.
//!
//! Negative samples take their magnitude by one's complement (`!x`), as G.191
//! does for both laws. That makes the quantiser exactly mirror-symmetric over the
//! whole `i16` range (`x` and `!x == -1 - x` get the same code but for the sign
//! bit; `-32768` mirrors `32767`), and puts `-4..=-1` on µ-law's "negative zero"
//! code `0x7F`. Sun's widely copied `g711.c` (and Python's `audioop`) use the
//! two's-complement magnitude for µ-law instead, which moves some negative
//! inputs one step; `tests/g711_bitexact.rs` documents that difference.
//!
//! Real-time contract: every function here is safe to call on the real-time
//! thread. None allocates, locks or panics, for any input.

// ---------------------------------------------------------------------------
// Sample functions: the law, computed.
// ---------------------------------------------------------------------------

/// Encodes one linear sample to a G.711 µ-law code (the companding law computed,
/// not looked up).
///
/// Uses the 14 most significant bits of `x`. Positive samples (and zero) get
/// sign bit `0x80`; `0` encodes to `0xFF`, `-1` to `0x7F`, `32767` to `0x80` and
/// `-32768` to `0x00`. Bit-exact with ITU-T G.191 `ulaw_compress`.
///
/// Real-time safe; never panics. For whole frames prefer [`ulaw_encode`].
pub const fn ulaw_encode_sample(x: i16) -> u8 {
    // G.191: 14-bit right-justified magnitude; one's complement for negative
    // samples so the quantiser is symmetric about -0.5 over the i16 range.
    let (magnitude, sign_bit) = if x < 0 {
        ((!x >> 2) as i32, 0x00)
    } else {
        ((x >> 2) as i32, 0x80)
    };
    // G.711 Table 2: adding 33 (the offset between the µ-law and A-law decision
    // values) turns the µ-law segments into power-of-two intervals. The top
    // decision value is 8159 + 33 = 8192; clip below it.
    let mut biased = magnitude + 33;
    if biased > 0x1FFF {
        biased = 0x1FFF;
    }
    // Segment search: segment s (1..=8) covers biased values [2^(s+4), 2^(s+5)),
    // its step is 2^s.
    let mut segment = 1;
    let mut rest = biased >> 6;
    while rest != 0 {
        segment += 1;
        rest >>= 1;
    }
    // G.711 Table 2 character signals: µ-law transmits every bit but the sign
    // inverted, hence 7 - (segment - 1) and 15 - mantissa.
    let high_nibble = 8 - segment;
    let low_nibble = 0x0F - ((biased >> segment) & 0x0F);
    ((high_nibble << 4) | low_nibble | sign_bit) as u8
}

/// Decodes one G.711 µ-law code to a linear sample, left-justified in 16 bits.
///
/// `0x80` decodes to `32124`, `0x00` to `-32124`; both zero codes (`0xFF`, and
/// `0x7F`, "negative zero") decode to `0`. Bit-exact with ITU-T G.191
/// `ulaw_expand`.
///
/// Real-time safe; never panics. For whole frames prefer [`ulaw_decode`].
pub const fn ulaw_decode_sample(c: u8) -> i16 {
    // G.711 Table 2: all bits but the sign are sent inverted.
    let inverted = !c;
    let exponent = ((inverted >> 4) & 0x07) as i32;
    let mantissa = (inverted & 0x0F) as i32;
    // 14-bit step of segment `exponent + 1` is 2^(exponent + 1); times 4 to
    // left-justify in 16 bits.
    let step = 4 << (exponent + 1);
    // Leading '1', mantissa, half a step to land mid-interval (the quantised
    // value of Table 2), minus the bias 33 (scaled by 4) added by the encoder.
    // At most 16384 + 15 * 1024 + 512 - 132 = 32124: fits i16.
    let magnitude = (0x80 << exponent) + step * mantissa + step / 2 - 4 * 33;
    if c & 0x80 == 0 {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}

/// Encodes one linear sample to a G.711 A-law code (the companding law
/// computed, not looked up).
///
/// Uses the 13 most significant bits of `x`. The returned code already has the
/// even bits inverted as transmitted on the line: `0` encodes to `0xD5`, `-1`
/// to `0x55`, `32767` to `0xAA` and `-32768` to `0x2A`. Bit-exact with ITU-T
/// G.191 `alaw_compress`.
///
/// Real-time safe; never panics. For whole frames prefer [`alaw_encode`].
pub const fn alaw_encode_sample(x: i16) -> u8 {
    // 13 MSBs, x >> 3, in sign-magnitude with one's complement for negative
    // samples (G.191); the lowest bit of the 13-bit word is below A-law's finest
    // step, so the magnitude that is quantised is 12 bits: 0..=4095 >> 1.
    let (sign_bit, x13) = if x < 0 {
        (0x00, !x >> 3)
    } else {
        (0x80, x >> 3)
    };
    let mut value = (x13 >> 1) as i32; // 0..=2047
                                       // G.711 Table 1: the first two segments share the finest step, so values
                                       // below 16 are sent as-is with exponent 0.
    if value > 15 {
        // Segment search: shift the mantissa down until it is 5 bits with a
        // leading '1' (16..=31); the shift count is the exponent.
        let mut exponent = 1;
        while value > 31 {
            value >>= 1;
            exponent += 1;
        }
        // Drop the implicit leading '1', place the exponent above the mantissa.
        value = (exponent << 4) | (value - 16);
    }
    // G.711 Table 1 character signals: A-law inverts the even bits (0x55).
    ((value | sign_bit) ^ 0x55) as u8
}

/// Decodes one G.711 A-law code (as received, even bits inverted) to a linear
/// sample, left-justified in 16 bits.
///
/// `0xD5` decodes to `8`, `0x55` to `-8`, `0xAA` to `32256`, `0x2A` to
/// `-32256`. Bit-exact with ITU-T G.191 `alaw_expand`.
///
/// Real-time safe; never panics. For whole frames prefer [`alaw_decode`].
pub const fn alaw_decode_sample(c: u8) -> i16 {
    // G.711 Table 1: undo the even-bit inversion.
    let code = c ^ 0x55;
    let exponent = ((code >> 4) & 0x07) as i32;
    let mut mantissa = (code & 0x0F) as i32;
    if exponent > 0 {
        // Restore the implicit leading '1' of segments above the first.
        mantissa += 16;
    }
    // Left-justify in 16 bits and add half a step (8 = half of the finest step
    // 16): the quantised value sits mid-interval.
    let mut magnitude = (mantissa << 4) + 8;
    if exponent > 1 {
        magnitude <<= exponent - 1;
    }
    // At most (31 * 16 + 8) << 6 = 32256: fits i16. Sign bit set means positive.
    if c & 0x80 != 0 {
        magnitude as i16
    } else {
        -magnitude as i16
    }
}

// ---------------------------------------------------------------------------
// Tables, built at compile time from the sample functions.
// ---------------------------------------------------------------------------

/// Entries in the µ-law encode table: one per 14-bit input, `x >> 2`.
const ULAW_ENCODE_LEN: usize = 1 << 14;
/// Entries in the A-law encode table: one per 13-bit input, `x >> 3`.
const ALAW_ENCODE_LEN: usize = 1 << 13;

/// µ-law code for every 14-bit input, indexed by `(x as u16) >> 2` (the 14 MSBs
/// as an unsigned bit pattern). 16 KiB.
static ULAW_ENCODE_TABLE: [u8; ULAW_ENCODE_LEN] = build_ulaw_encode_table();
/// A-law code for every 13-bit input, indexed by `(x as u16) >> 3`. 8 KiB.
static ALAW_ENCODE_TABLE: [u8; ALAW_ENCODE_LEN] = build_alaw_encode_table();
/// Linear sample for every µ-law code.
static ULAW_DECODE_TABLE: [i16; 256] = build_ulaw_decode_table();
/// Linear sample for every A-law code.
static ALAW_DECODE_TABLE: [i16; 256] = build_alaw_decode_table();

const fn build_ulaw_encode_table() -> [u8; ULAW_ENCODE_LEN] {
    let mut table = [0u8; ULAW_ENCODE_LEN];
    let mut i = 0;
    while i < ULAW_ENCODE_LEN {
        // Entry i serves every x whose 14 MSBs are i; the 2 LSBs do not affect
        // the code (one's complement commutes with the arithmetic shift), so
        // x = i << 2 stands for all four.
        table[i] = ulaw_encode_sample((i << 2) as u16 as i16);
        i += 1;
    }
    table
}

const fn build_alaw_encode_table() -> [u8; ALAW_ENCODE_LEN] {
    let mut table = [0u8; ALAW_ENCODE_LEN];
    let mut i = 0;
    while i < ALAW_ENCODE_LEN {
        table[i] = alaw_encode_sample((i << 3) as u16 as i16);
        i += 1;
    }
    table
}

static ULAW_SQUARES: [u32; 256] = build_squares(&ULAW_DECODE_TABLE);
static ALAW_SQUARES: [u32; 256] = build_squares(&ALAW_DECODE_TABLE);

const fn build_squares(decoded: &[i16; 256]) -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut c = 0;
    while c < 256 {
        let v = decoded[c] as i32;
        table[c] = (v * v) as u32;
        c += 1;
    }
    table
}

/// A G.711 companding law, for code streams handled without decoding them (a relayed
/// stream whose concealer keeps the codes and decodes only when a loss needs them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Law {
    /// µ-law (`PCMU`).
    Ulaw,
    /// A-law (`PCMA`).
    Alaw,
}

impl Law {
    /// Decodes `codes` into `out` (the shorter length); see [`ulaw_decode`].
    ///
    /// Real-time safe; never panics.
    #[inline]
    pub fn decode(self, codes: &[u8], out: &mut [i16]) -> usize {
        match self {
            Law::Ulaw => ulaw_decode(codes, out),
            Law::Alaw => alaw_decode(codes, out),
        }
    }

    /// Σ x² of the decoded samples of `codes`, without decoding them: the exact integer
    /// sum, rounded once to f32 (both builds give the same bits). The AVX2 build computes
    /// each code's magnitude from its segment and mantissa, 32 codes per pass (about
    /// half the instructions of a table lookup per code); the portable one looks up each
    /// code's square.
    ///
    /// Real-time safe; never panics.
    #[inline]
    pub fn energy(self, codes: &[u8]) -> f32 {
        crate::processing::simd::avx2_or_portable!(
            match self {
                Law::Ulaw => energy_avx2::<true>(codes),
                Law::Alaw => energy_avx2::<false>(codes),
            },
            energy_table(self, codes)
        ) as f32
    }
}

/// Σ x² of the decoded `codes` from a table of each code's square.
#[inline]
fn energy_table(law: Law, codes: &[u8]) -> u64 {
    let sq = match law {
        Law::Ulaw => &ULAW_SQUARES,
        Law::Alaw => &ALAW_SQUARES,
    };
    codes.iter().map(|&c| u64::from(sq[usize::from(c)])).sum()
}

/// [`Law::energy`]'s AVX2 build. A code's magnitude is `(base[m] + seg_base[e]) *
/// step[e] - bias`, m its low four bits and e the next three after the law's bit flip
/// (µ-law: `(8m + 132) << e - 132`, G.711 §2; A-law: `16m + 8` in segment 0, else
/// `(16m + 264) << (e - 1)`, computed here as an eighth of that and scaled by 64 at the
/// end). Each 16-bit magnitude (at most 32,124) is squared and summed in pairs by one
/// multiply-add (at most 2.07e9, within i32), two such halves add within u32, and the
/// sum is kept in u64 lanes: exact.
///
/// # Safety
/// The CPU must run AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn energy_avx2<const ULAW: bool>(codes: &[u8]) -> u64 {
    use crate::processing::simd::avx2_parts::{add_u32_to_u64, sum_u64, table16};
    use core::arch::x86_64::*;
    #[rustfmt::skip]
    let (flip, base, seg_base, step, bias, scale): (i8, [u8; 16], [u8; 8], [u8; 8], i16, u64) = match ULAW {
        true => (
            -1,
            [132, 140, 148, 156, 164, 172, 180, 188, 196, 204, 212, 220, 228, 236, 244, 252],
            [0; 8],
            [1, 2, 4, 8, 16, 32, 64, 128],
            132,
            1,
        ),
        false => (
            0x55,
            [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30],
            [1, 33, 33, 33, 33, 33, 33, 33],
            [1, 1, 2, 4, 8, 16, 32, 64],
            0,
            64,
        ),
    };
    let table8 = |t: [u8; 8]| {
        let mut w = [0u8; 16];
        w[..8].copy_from_slice(&t);
        table16(w)
    };
    let (base, seg_base, step) = (table16(base), table8(seg_base), table8(step));
    let (flip, low4, low3) = (
        _mm256_set1_epi8(flip),
        _mm256_set1_epi8(0x0F),
        _mm256_set1_epi8(0x07),
    );
    let (zero, bias) = (_mm256_setzero_si256(), _mm256_set1_epi16(bias));
    // Σ x² of 32 codes, as eight u32 lanes.
    let squares = |codes: __m256i| {
        let x = _mm256_xor_si256(codes, flip);
        let m = _mm256_and_si256(x, low4);
        let e = _mm256_and_si256(_mm256_srli_epi16::<4>(x), low3);
        let b = _mm256_add_epi8(
            _mm256_shuffle_epi8(base, m),
            _mm256_shuffle_epi8(seg_base, e),
        );
        let p = _mm256_shuffle_epi8(step, e);
        let lo = _mm256_sub_epi16(
            _mm256_mullo_epi16(_mm256_unpacklo_epi8(b, zero), _mm256_unpacklo_epi8(p, zero)),
            bias,
        );
        let hi = _mm256_sub_epi16(
            _mm256_mullo_epi16(_mm256_unpackhi_epi8(b, zero), _mm256_unpackhi_epi8(p, zero)),
            bias,
        );
        _mm256_add_epi32(_mm256_madd_epi16(lo, lo), _mm256_madd_epi16(hi, hi))
    };
    let mut acc = _mm256_setzero_si256();
    let mut chunks = codes.chunks_exact(32);
    for c in &mut chunks {
        // SAFETY: `c` is 32 bytes, what an unaligned 256-bit load reads.
        acc = add_u32_to_u64(
            acc,
            squares(unsafe { _mm256_loadu_si256(c.as_ptr().cast()) }),
        );
    }
    let mut rest = chunks.remainder();
    if let Some((half, tail)) = rest.split_first_chunk::<16>() {
        // Sixteen codes in the low half; the squares of the high half's lanes (the
        // unpacks keep each half's bytes in its own half) are masked off.
        // SAFETY: `half` is 16 bytes, what an unaligned 128-bit load reads.
        let x = _mm256_zextsi128_si256(unsafe { _mm_loadu_si128(half.as_ptr().cast()) });
        let low_half = _mm256_zextsi128_si256(_mm_set1_epi32(-1));
        acc = add_u32_to_u64(acc, _mm256_and_si256(squares(x), low_half));
        rest = tail;
    }
    let law = if ULAW { Law::Ulaw } else { Law::Alaw };
    sum_u64(acc) * scale + energy_table(law, rest)
}

const fn build_ulaw_decode_table() -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut c = 0;
    while c < 256 {
        table[c] = ulaw_decode_sample(c as u8);
        c += 1;
    }
    table
}

const fn build_alaw_decode_table() -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut c = 0;
    while c < 256 {
        table[c] = alaw_decode_sample(c as u8);
        c += 1;
    }
    table
}

// ---------------------------------------------------------------------------
// Frame functions: what the lanes call (AVX2 where the CPU has it, else tables).
// ---------------------------------------------------------------------------

/// Encodes a frame of linear samples to µ-law, one code byte per sample.
///
/// Processes `min(pcm.len(), out.len())` samples and returns that count; extra
/// input or output is left untouched (callers size `out` to the frame once, at
/// setup). Output is identical to [`ulaw_encode_sample`] on every sample.
///
/// Called on the real-time thread: no allocation, no panic. The AVX2 build computes
/// the law 16 samples at a time; the portable one looks each sample
/// up in a table.
pub fn ulaw_encode(pcm: &[i16], out: &mut [u8]) -> usize {
    crate::processing::simd::avx2_or_portable!(
        encode_avx2::<true>(pcm, out),
        ulaw_encode_table(pcm, out)
    )
}

fn ulaw_encode_table(pcm: &[i16], out: &mut [u8]) -> usize {
    let n = pcm.len().min(out.len());
    for (code, &x) in out.iter_mut().zip(pcm) {
        // The index is at most 0xFFFF >> 2 = 16383 < 16384, which the compiler
        // can see, so no bounds check is emitted.
        *code = ULAW_ENCODE_TABLE[usize::from(x as u16 >> 2)];
    }
    n
}

/// Decodes a frame of µ-law codes to linear samples.
///
/// Processes `min(codes.len(), out.len())` codes and returns that count; extra
/// input or output is left untouched. Output is identical to
/// [`ulaw_decode_sample`] on every code.
///
/// Called on the real-time thread: no allocation, no panic.
pub fn ulaw_decode(codes: &[u8], out: &mut [i16]) -> usize {
    crate::processing::simd::avx2_or_portable!(
        decode_avx2::<true>(codes, out),
        ulaw_decode_table(codes, out)
    )
}

fn ulaw_decode_table(codes: &[u8], out: &mut [i16]) -> usize {
    let n = codes.len().min(out.len());
    for (x, &code) in out.iter_mut().zip(codes) {
        *x = ULAW_DECODE_TABLE[usize::from(code)];
    }
    n
}

/// Encodes a frame of linear samples to A-law (even bits inverted, as sent),
/// one code byte per sample.
///
/// Processes `min(pcm.len(), out.len())` samples and returns that count; extra
/// input or output is left untouched. Output is identical to
/// [`alaw_encode_sample`] on every sample.
///
/// Called on the real-time thread: no allocation, no panic. The AVX2 build computes
/// the law 16 samples at a time; the portable one looks each sample
/// up in a table.
pub fn alaw_encode(pcm: &[i16], out: &mut [u8]) -> usize {
    crate::processing::simd::avx2_or_portable!(
        encode_avx2::<false>(pcm, out),
        alaw_encode_table(pcm, out)
    )
}

fn alaw_encode_table(pcm: &[i16], out: &mut [u8]) -> usize {
    let n = pcm.len().min(out.len());
    for (code, &x) in out.iter_mut().zip(pcm) {
        // Index at most 0xFFFF >> 3 = 8191 < 8192: no bounds check emitted.
        *code = ALAW_ENCODE_TABLE[usize::from(x as u16 >> 3)];
    }
    n
}

/// Decodes a frame of A-law codes (as received) to linear samples.
///
/// Processes `min(codes.len(), out.len())` codes and returns that count; extra
/// input or output is left untouched. Output is identical to
/// [`alaw_decode_sample`] on every code.
///
/// Called on the real-time thread: no allocation, no panic.
pub fn alaw_decode(codes: &[u8], out: &mut [i16]) -> usize {
    crate::processing::simd::avx2_or_portable!(
        decode_avx2::<false>(codes, out),
        alaw_decode_table(codes, out)
    )
}

fn alaw_decode_table(codes: &[u8], out: &mut [i16]) -> usize {
    let n = codes.len().min(out.len());
    for (x, &code) in out.iter_mut().zip(codes) {
        *x = ALAW_DECODE_TABLE[usize::from(code)];
    }
    n
}

/// The AVX2 build of [`ulaw_decode`] (`ULAW`) and [`alaw_decode`]: 16 codes per pass,
/// each code's magnitude computed from its segment e and mantissa m as
/// `((m << k) + seg_base[e]) * step[e] - bias) << shift` (µ-law: `(8m + 132) << e - 132`;
/// A-law: `(2m + 1) * 8` in segment 0, else `(2m + 33) * 8 << (e - 1)`), table lookups
/// by byte shuffle; the codes left over go through the table. Same output as the sample
/// functions for every code (tested).
///
/// # Safety
/// The CPU must run AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn decode_avx2<const ULAW: bool>(codes: &[u8], out: &mut [i16]) -> usize {
    use crate::processing::simd::avx2_parts::table16;
    use core::arch::x86_64::*;
    let n = codes.len().min(out.len());
    #[rustfmt::skip]
    let (flip, seg_base, step): (i16, [u8; 16], [u8; 16]) = if ULAW {
        (0xFF, [132, 132, 132, 132, 132, 132, 132, 132, 0, 0, 0, 0, 0, 0, 0, 0],
         [1, 2, 4, 8, 16, 32, 64, 128, 0, 0, 0, 0, 0, 0, 0, 0])
    } else {
        (0x55, [1, 33, 33, 33, 33, 33, 33, 33, 0, 0, 0, 0, 0, 0, 0, 0],
         [1, 1, 2, 4, 8, 16, 32, 64, 0, 0, 0, 0, 0, 0, 0, 0])
    };
    let (seg_base, step) = (table16(seg_base), table16(step));
    let flip = _mm256_set1_epi16(flip);
    let (low4, low3) = (_mm256_set1_epi16(0x0F), _mm256_set1_epi16(0x07));
    // Bit 7 of each lane's high byte: the shuffle writes 0 there, so each 16-bit lane
    // gets the table's byte and a zero high byte.
    let zero_high = _mm256_set1_epi16(i16::MIN);
    let (bias, sign) = (
        _mm256_set1_epi16(if ULAW { 132 } else { 0 }),
        _mm256_set1_epi16(0x80),
    );
    let whole = n - n % 16;
    for (c, o) in codes[..whole]
        .chunks_exact(16)
        .zip(out[..whole].chunks_exact_mut(16))
    {
        // SAFETY: `c` is 16 bytes, what an unaligned 128-bit load reads.
        let code = _mm256_cvtepu8_epi16(unsafe { _mm_loadu_si128(c.as_ptr().cast()) });
        let x = _mm256_xor_si256(code, flip);
        let m = _mm256_and_si256(x, low4);
        let e = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(x), low3), zero_high);
        let base = _mm256_add_epi16(
            if ULAW {
                _mm256_slli_epi16::<3>(m)
            } else {
                _mm256_slli_epi16::<1>(m)
            },
            _mm256_shuffle_epi8(seg_base, e),
        );
        let mut mag =
            _mm256_sub_epi16(_mm256_mullo_epi16(base, _mm256_shuffle_epi8(step, e)), bias);
        if !ULAW {
            mag = _mm256_slli_epi16::<3>(mag);
        }
        // Sign bit clear: negative (both laws).
        let neg = _mm256_cmpeq_epi16(_mm256_and_si256(code, sign), _mm256_setzero_si256());
        let v = _mm256_sub_epi16(_mm256_xor_si256(mag, neg), neg);
        // SAFETY: `o` is 16 i16s, 32 bytes, what an unaligned 256-bit store writes.
        unsafe { _mm256_storeu_si256(o.as_mut_ptr().cast(), v) };
    }
    if ULAW {
        ulaw_decode_table(&codes[whole..n], &mut out[whole..n]);
    } else {
        alaw_decode_table(&codes[whole..n], &mut out[whole..n]);
    }
    n
}

/// The AVX2 build of [`ulaw_encode`] (`ULAW`) and [`alaw_encode`]: 16 samples per pass,
/// the law computed as the sample functions do, with the segment search as two nibble
/// lookups (the bit length of a 7-bit value), the mantissa's variable shift as a high
/// multiply by a power of two, and the codes packed to bytes; the samples left over go
/// through the table. Same output as the sample functions for every input (tested).
///
/// # Safety
/// The CPU must run AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn encode_avx2<const ULAW: bool>(pcm: &[i16], out: &mut [u8]) -> usize {
    use crate::processing::simd::avx2_parts::table16;
    use core::arch::x86_64::*;
    let n = pcm.len().min(out.len());
    // Per 7-bit value v = 16h + l: seg = max(high[h], low[l]) (high[0] = 0, and
    // every high[h > 0] exceeds every low[l]). µ-law: 1 + bit length of v; A-law: its
    // bit length. The multiplier's bytes (a lane's low byte indexes; high bytes index
    // entry 0): µ-law 1 << (16 - seg), whose low byte is 0; A-law 1 << (12 -
    // max(seg - 1, 0)), split in two.
    #[rustfmt::skip]
    let (high, low, mult_high, mult_low): ([u8; 16], [u8; 16], [u8; 16], [u8; 16]) = if ULAW {
        ([0, 6, 7, 7, 8, 8, 8, 8, 0, 0, 0, 0, 0, 0, 0, 0],
         [1, 2, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 5, 5, 5, 5],
         [0, 0x80, 0x40, 0x20, 0x10, 0x08, 0x04, 0x02, 0x01, 0, 0, 0, 0, 0, 0, 0],
         [0; 16])
    } else {
        ([0, 5, 6, 6, 7, 7, 7, 7, 0, 0, 0, 0, 0, 0, 0, 0],
         [0, 1, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 4, 4, 4, 4],
         [0x10, 0x10, 0x08, 0x04, 0x02, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
         [0, 0, 0, 0, 0, 0, 0x80, 0x40, 0, 0, 0, 0, 0, 0, 0, 0])
    };
    let (high, low, mult_high, mult_low) = (
        table16(high),
        table16(low),
        table16(mult_high),
        table16(mult_low),
    );
    let (low4, low_byte) = (_mm256_set1_epi16(0x0F), _mm256_set1_epi16(0xFF));
    let positive = _mm256_set1_epi16(0x80);
    let whole = n - n % 16;
    for (x, o) in pcm[..whole]
        .chunks_exact(16)
        .zip(out[..whole].chunks_exact_mut(16))
    {
        // SAFETY: `x` is 16 i16s, 32 bytes, what an unaligned 256-bit load reads.
        let x = unsafe { _mm256_loadu_si256(x.as_ptr().cast()) };
        // One's complement magnitude (G.191): !x for negative samples.
        let neg = _mm256_srai_epi16::<15>(x);
        let a = _mm256_xor_si256(x, neg);
        // µ-law: the 14-bit magnitude plus 33, clipped at 0x1FFF, and its top 7 bits;
        // A-law: the 12-bit magnitude and its top 7 bits.
        let value = if ULAW {
            _mm256_min_epi16(
                _mm256_add_epi16(_mm256_srli_epi16::<2>(a), _mm256_set1_epi16(33)),
                _mm256_set1_epi16(0x1FFF),
            )
        } else {
            _mm256_srli_epi16::<4>(a)
        };
        let v = if ULAW {
            _mm256_srli_epi16::<6>(value)
        } else {
            _mm256_srli_epi16::<4>(value)
        };
        let seg = _mm256_and_si256(
            _mm256_max_epu8(
                _mm256_shuffle_epi8(high, _mm256_srli_epi16::<4>(v)),
                _mm256_shuffle_epi8(low, _mm256_and_si256(v, low4)),
            ),
            low_byte,
        );
        let mult = _mm256_slli_epi16::<8>(_mm256_shuffle_epi8(mult_high, seg));
        let (mult, shifted) = if ULAW {
            (mult, value)
        } else {
            (
                _mm256_or_si256(mult, _mm256_shuffle_epi8(mult_low, seg)),
                _mm256_slli_epi16::<4>(value),
            )
        };
        let mant = _mm256_and_si256(_mm256_mulhi_epu16(shifted, mult), low4);
        let sign = _mm256_andnot_si256(neg, positive);
        let code = if ULAW {
            // (8 - seg) << 4 | (15 - mant), all but the sign inverted on the line.
            _mm256_or_si256(
                _mm256_sub_epi16(
                    _mm256_sub_epi16(_mm256_set1_epi16(0x8F), _mm256_slli_epi16::<4>(seg)),
                    mant,
                ),
                sign,
            )
        } else {
            // seg << 4 | mant, even bits inverted on the line.
            _mm256_xor_si256(
                _mm256_or_si256(_mm256_or_si256(_mm256_slli_epi16::<4>(seg), mant), sign),
                _mm256_set1_epi16(0x55),
            )
        };
        // Sixteen 16-bit codes (each < 256) to bytes, in order.
        let packed = _mm256_permute4x64_epi64::<0b1000>(_mm256_packus_epi16(code, code));
        // SAFETY: `o` is 16 bytes, what an unaligned 128-bit store writes.
        unsafe { _mm_storeu_si128(o.as_mut_ptr().cast(), _mm256_castsi256_si128(packed)) };
    }
    if ULAW {
        ulaw_encode_table(&pcm[whole..n], &mut out[whole..n]);
    } else {
        alaw_encode_table(&pcm[whole..n], &mut out[whole..n]);
    }
    n
}

#[cfg(test)]
mod tests {
    #[test]
    fn law_energy_equals_the_energy_of_the_decoded_codes() {
        let codes: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).chain(7..50).collect();
        for law in [Law::Ulaw, Law::Alaw] {
            let mut pcm = vec![0i16; codes.len()];
            assert_eq!(law.decode(&codes, &mut pcm), codes.len());
            let mut plain = vec![0i16; codes.len()];
            match law {
                Law::Ulaw => ulaw_decode(&codes, &mut plain),
                Law::Alaw => alaw_decode(&codes, &mut plain),
            };
            assert_eq!(pcm, plain);
            // Every length (the vector passes and the tail) and every start, both builds:
            // the exact sum of squares, rounded once.
            for start in [0, 1, 5, 31] {
                for len in 0..codes.len() - start {
                    let span = &codes[start..start + len];
                    let want: i64 = pcm[start..start + len]
                        .iter()
                        .map(|&v| i64::from(v) * i64::from(v))
                        .sum();
                    let (wide, narrow) = crate::processing::simd::both_builds(|| law.energy(span));
                    assert_eq!(
                        wide.to_bits(),
                        (want as f32).to_bits(),
                        "{law:?} {start}+{len}"
                    );
                    assert_eq!(narrow.to_bits(), wide.to_bits(), "{law:?} {start}+{len}");
                }
            }
        }
        assert_eq!(Law::Ulaw.energy(&[]), 0.0);
    }

    use super::*;

    fn all_inputs() -> impl Iterator<Item = i16> {
        i16::MIN..=i16::MAX
    }

    #[test]
    fn both_builds_of_the_frame_functions_match_the_sample_functions_at_every_length() {
        // Every input and code, at starts and lengths that put each one in a vector
        // pass and in the table-driven rest, and the shorter of input and output wins.
        let pcm: Vec<i16> = all_inputs().collect();
        let codes: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
        let (wide, narrow) = crate::processing::simd::both_builds(|| {
            let mut got = Vec::new();
            for (start, len) in [(0, 65536), (3, 65533), (0, 15), (7, 33), (1, 16), (9, 47)] {
                let x = &pcm[start..start + len];
                let mut u = vec![0u8; len];
                let mut a = vec![0u8; len + 5];
                assert_eq!(ulaw_encode(x, &mut u), len);
                assert_eq!(alaw_encode(x, &mut a), len);
                assert!(x.iter().zip(&u).all(|(&v, &c)| c == ulaw_encode_sample(v)));
                assert!(x.iter().zip(&a).all(|(&v, &c)| c == alaw_encode_sample(v)));
                assert_eq!(&a[len..], &[0; 5], "nothing past the input written");
                got.push((u, a));
            }
            for (start, len) in [(0, 4096), (5, 4091), (0, 1), (2, 31), (11, 16), (0, 255)] {
                let c = &codes[start..start + len];
                let mut u = vec![0i16; len];
                let mut a = vec![0i16; len];
                assert_eq!(ulaw_decode(c, &mut u[..len - len / 3]), len - len / 3);
                assert_eq!(alaw_decode(c, &mut a), len);
                assert!(c
                    .iter()
                    .zip(&u[..len - len / 3])
                    .all(|(&k, &v)| v == ulaw_decode_sample(k)));
                assert!(u[len - len / 3..].iter().all(|&v| v == 0));
                assert!(c.iter().zip(&a).all(|(&k, &v)| v == alaw_decode_sample(k)));
            }
            got
        });
        assert!(wide == narrow);
    }

    #[test]
    fn ulaw_frame_encode_matches_sample_encode_for_every_input() {
        let pcm: Vec<i16> = all_inputs().collect();
        let mut codes = vec![0u8; pcm.len()];
        assert_eq!(ulaw_encode(&pcm, &mut codes), 65536);
        for (&x, &c) in pcm.iter().zip(&codes) {
            assert_eq!(c, ulaw_encode_sample(x), "x = {x}");
        }
    }

    #[test]
    fn alaw_frame_encode_matches_sample_encode_for_every_input() {
        let pcm: Vec<i16> = all_inputs().collect();
        let mut codes = vec![0u8; pcm.len()];
        assert_eq!(alaw_encode(&pcm, &mut codes), 65536);
        for (&x, &c) in pcm.iter().zip(&codes) {
            assert_eq!(c, alaw_encode_sample(x), "x = {x}");
        }
    }

    #[test]
    fn frame_decode_matches_sample_decode_for_every_code() {
        let codes: Vec<u8> = (0..=255).collect();
        let mut pcm = [0i16; 256];
        assert_eq!(ulaw_decode(&codes, &mut pcm), 256);
        for (&c, &x) in codes.iter().zip(&pcm) {
            assert_eq!(x, ulaw_decode_sample(c), "code {c:#04x}");
        }
        assert_eq!(alaw_decode(&codes, &mut pcm), 256);
        for (&c, &x) in codes.iter().zip(&pcm) {
            assert_eq!(x, alaw_decode_sample(c), "code {c:#04x}");
        }
    }

    #[test]
    fn frame_functions_process_the_shorter_of_input_and_output() {
        let pcm = [1000i16; 10];
        let mut codes = [0u8; 4];
        assert_eq!(ulaw_encode(&pcm, &mut codes), 4);
        assert_eq!(alaw_encode(&pcm[..2], &mut codes), 2);
        assert_eq!(codes[2], ulaw_encode_sample(1000), "untouched tail");
        let mut out = [7i16; 3];
        assert_eq!(ulaw_decode(&codes, &mut out), 3);
        assert_eq!(alaw_decode(&codes[..1], &mut out), 1);
        assert_eq!(ulaw_encode(&[], &mut codes), 0);
        assert_eq!(alaw_decode(&codes, &mut []), 0);
    }

    /// Values checked by hand against G.711 Table 1 (A-law) and Table 2 (µ-law),
    /// scaled to 16 bits (µ-law ×4 from the 14-bit table, A-law ×8 from the
    /// 13-bit ±4096 table).
    #[test]
    fn hand_checked_values_from_the_standard() {
        // µ-law: zero is 1111 1111 (Table 2, all bits but the sign inverted);
        // the "negative zero" 0111 1111 also decodes to 0.
        assert_eq!(ulaw_encode_sample(0), 0xFF);
        assert_eq!(ulaw_encode_sample(3), 0xFF);
        assert_eq!(ulaw_encode_sample(-1), 0x7F);
        assert_eq!(ulaw_encode_sample(-4), 0x7F);
        assert_eq!(ulaw_decode_sample(0xFF), 0);
        assert_eq!(ulaw_decode_sample(0x7F), 0);
        // First step: 14-bit input 1 -> quantised value 2 (x4 = 8).
        assert_eq!(ulaw_encode_sample(4), 0xFE);
        assert_eq!(ulaw_decode_sample(0xFE), 8);
        // Segment boundary at decision value 31: 30 -> quantised 30 (code 0xF0),
        // 31 -> first value of the next segment, quantised 33 (code 0xEF).
        assert_eq!(ulaw_encode_sample(30 * 4), 0xF0);
        assert_eq!(ulaw_decode_sample(0xF0), 30 * 4);
        assert_eq!(ulaw_encode_sample(31 * 4), 0xEF);
        assert_eq!(ulaw_decode_sample(0xEF), 33 * 4);
        // Full scale: decision value 8159, largest quantised value 8031.
        assert_eq!(ulaw_encode_sample(i16::MAX), 0x80);
        assert_eq!(ulaw_encode_sample(i16::MIN), 0x00);
        assert_eq!(ulaw_decode_sample(0x80), 8031 * 4);
        assert_eq!(ulaw_decode_sample(0x00), -32124);

        // A-law: first interval's character signal is 1101 0101 (even bits
        // inverted), quantised value 1 of 4096 (x8 = 8).
        assert_eq!(alaw_encode_sample(0), 0xD5);
        assert_eq!(alaw_encode_sample(15), 0xD5);
        assert_eq!(alaw_encode_sample(-1), 0x55);
        assert_eq!(alaw_decode_sample(0xD5), 8);
        assert_eq!(alaw_decode_sample(0x55), -8);
        // End of the second (equal-step) segment and start of the third:
        // 16-bit 511 is 4096-scale 63 -> quantised 63; 512 -> 64..66 -> 66.
        assert_eq!(alaw_encode_sample(511), 0x9F ^ 0x55);
        assert_eq!(alaw_decode_sample(0x9F ^ 0x55), 63 * 8);
        assert_eq!(alaw_encode_sample(512), 0xA0 ^ 0x55);
        assert_eq!(alaw_decode_sample(0xA0 ^ 0x55), 66 * 8);
        // Full scale: largest quantised value 4032 (x8 = 32256).
        assert_eq!(alaw_encode_sample(i16::MAX), 0xAA);
        assert_eq!(alaw_encode_sample(i16::MIN), 0x2A);
        assert_eq!(alaw_decode_sample(0xAA), 32256);
        assert_eq!(alaw_decode_sample(0x2A), -32256);
    }

    #[test]
    fn encoders_are_mirror_symmetric_under_ones_complement() {
        // G.191: negative x takes magnitude !x, so x and -1 - x differ only in
        // the sign bit, across the whole i16 range (-32768 mirrors 32767).
        for x in 0..=i16::MAX {
            assert_eq!(
                ulaw_encode_sample(!x),
                ulaw_encode_sample(x) & 0x7F,
                "x = {x}"
            );
            assert_eq!(
                alaw_encode_sample(!x),
                alaw_encode_sample(x) ^ 0x80,
                "x = {x}"
            );
        }
    }

    #[test]
    fn decoders_are_sign_symmetric() {
        for c in 0..=0x7Fu8 {
            assert_eq!(ulaw_decode_sample(c), -ulaw_decode_sample(c | 0x80));
            assert_eq!(alaw_decode_sample(c), -alaw_decode_sample(c | 0x80));
        }
    }

    #[test]
    fn decode_encode_decode_round_trips_for_every_code() {
        for c in 0..=255u8 {
            let x = ulaw_decode_sample(c);
            assert_eq!(
                ulaw_decode_sample(ulaw_encode_sample(x)),
                x,
                "µ-law {c:#04x}"
            );
            // Codes come back exactly, except negative zero 0x7F: its value 0
            // re-encodes as positive zero 0xFF.
            let expected = if c == 0x7F { 0xFF } else { c };
            assert_eq!(ulaw_encode_sample(x), expected, "µ-law {c:#04x}");

            let x = alaw_decode_sample(c);
            assert_eq!(
                alaw_decode_sample(alaw_encode_sample(x)),
                x,
                "A-law {c:#04x}"
            );
            assert_eq!(alaw_encode_sample(x), c, "A-law {c:#04x}");
        }
    }

    #[test]
    fn quantisation_is_monotonic_and_within_half_a_step() {
        let mut prev_u = i16::MIN;
        let mut prev_a = i16::MIN;
        for x in all_inputs() {
            let u = ulaw_decode_sample(ulaw_encode_sample(x));
            let a = alaw_decode_sample(alaw_encode_sample(x));
            assert!(u >= prev_u && a >= prev_a, "not monotonic at x = {x}");
            prev_u = u;
            prev_a = a;
            // Largest step is 1024 in 16-bit units for both laws (µ-law 256 x 4,
            // A-law 128 x 8): the error is at most half of it plus the
            // truncated low bits, until µ-law clips above its top decision
            // value 8159 x 4 = 32636 (A-law's range covers all of i16).
            let (x, u, a) = (i32::from(x), i32::from(u), i32::from(a));
            if x.abs() <= 32636 {
                assert!((x - u).abs() <= 512 + 4, "µ-law error at x = {x}: {u}");
            }
            assert!((x - a).abs() <= 512 + 8, "A-law error at x = {x}: {a}");
        }
    }
}
