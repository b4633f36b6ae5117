//! ITU-T G.722: 7 kHz audio coding within 64 kbit/s (sub-band ADPCM), RTP `G722`.
//!
//! The Recommendation's structure, which the code follows (§3 encoder principles,
//! §4 decoder principles, §5 QMF, §6 lower and §7 higher sub-band computational
//! details; block names as in §6 and §7):
//!
//! - **Transmit QMF** (§3, §5): a 24-tap quadrature mirror filter pair turns each
//!   pair of 16 kHz input samples into one lower and one higher sub-band sample at
//!   8 kHz.
//! - **Lower sub-band ADPCM encoder** (§3, §6): Block 1L (SUBTRA, QUANTL: a 6-bit
//!   adaptive quantiser), 2L (INVQAL), 3L (LOGSCL, SCALEL: the scale factor), 4L
//!   (the adaptive predictor: RECONS, PARREC, UPPOL2, UPPOL1, FILTEP, UPZERO,
//!   DELAYA, FILTEZ, PREDIC). **Higher sub-band** (§3, §7): Blocks 1H–4H, the same
//!   with a 2-bit quantiser. One octet per sample pair, `I_H1 I_H2 I_L1..I_L6`
//!   from the most significant bit.
//! - **Decoder** (§4, §6, §7): Block 5L (INVQBL from 6, 5 or 4 bits of the lower
//!   code, by mode) and 6L (LIMIT), 5H and 6H, the same Blocks 2–4 as the encoder
//!   (so both predictors track each other), then the **receive QMF**.
//!
//! # Bit-exactness
//!
//! The integer arithmetic is that of the ITU-T G.191 Software Tool Library (STL)
//! G.722 module, the ITU's reference implementation: the same table values, the
//! same truncating shifts and the same saturations, so every octet and every
//! sample is identical. `tests/g722_vectors.rs` checks this against two
//! independent implementations, with files they produced
//! (`scripts/gen_g722_vectors.sh`):
//!
//! - spandsp's `g722.c` (16 kHz audio, one octet per sample pair): encoder and
//!   decoder, all three modes, on speech, a chirp, full-scale noise and square,
//!   silence and random octets. spandsp 0.0.6 departs from the STL only on
//!   overload, and there this module follows the STL: the transmit QMF output is
//!   limited to 15 bits (spandsp keeps 16; only a full-scale input whose sub-band
//!   signal overshoots ±16384 sees it), and receive QMF output beyond 16 bits
//!   saturates (spandsp 0.0.6 wraps it round, a full-scale click; later spandsp
//!   saturates too).
//! - the STL itself, for those overload cases, and on its own G.722 test
//!   sequences (`inpsp.bin`, `codspw.cod`, `outsp1..3.bin`) in an `#[ignore]`d
//!   test that needs an STL checkout.
//!
//! # Real-time contract
//!
//! [`G722Encoder::encode`], [`G722Decoder::decode`] and both `reset`s are called
//! on the real-time thread. They work on whole frames in caller-owned buffers,
//! never allocate or lock, and never panic: every octet is a valid code word and
//! every `i16` a valid sample. The state is about 150 bytes inline in each struct.
//!
//! ```
//! use media_core::codec::audio::g722::{G722Decoder, G722Encoder, G722Mode};
//!
//! let mut enc = G722Encoder::new(G722Mode::Rate64k);
//! let mut dec = G722Decoder::new(G722Mode::Rate64k);
//! let pcm = [0i16; 320]; // 20 ms at 16 kHz
//! let mut payload = [0u8; 160];
//! let mut out = [0i16; 320];
//! assert_eq!(enc.encode(&pcm, &mut payload), 160);
//! assert_eq!(dec.decode(&payload, &mut out), 320);
//! ```

/// Linear samples per code octet: G.722 codes each pair of 16 kHz samples as one
/// octet, so 20 ms (320 samples) is 160 octets.
pub const SAMPLES_PER_OCTET: usize = 2;

/// The sampling rate of G.722's linear audio, in Hz. (RFC 3551 §4.5.2: the RTP
/// clock rate is nevertheless 8000.)
pub const SAMPLE_RATE_HZ: u32 = 16_000;

/// The G.722 mode of operation (§1.1): how many bits of each octet carry audio.
///
/// The encoder codes 64 kbit/s whatever the mode (§1): in the 56 and 48 kbit/s
/// modes the last one or two bits of each octet (`I_L6`, `I_L5`) are replaced
/// downstream by an auxiliary data channel of 8 or 16 kbit/s, and the decoder
/// ignores them. The mode therefore matters to the decoder only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum G722Mode {
    /// Mode 1: 64 kbit/s of audio, the lower sub-band decoded from 6 bits.
    #[default]
    Rate64k,
    /// Mode 2: 56 kbit/s of audio plus 8 kbit/s of data; 5 lower sub-band bits.
    Rate56k,
    /// Mode 3: 48 kbit/s of audio plus 16 kbit/s of data; 4 lower sub-band bits.
    Rate48k,
}

impl G722Mode {
    /// The audio bit rate of the mode, in bit/s.
    pub const fn audio_bit_rate_bps(self) -> u32 {
        match self {
            G722Mode::Rate64k => 64_000,
            G722Mode::Rate56k => 56_000,
            G722Mode::Rate48k => 48_000,
        }
    }
}

// ---------------------------------------------------------------------------
// Tables (G.722 §5–§7). Values are those of the Recommendation's tables, in the
// fixed-point scaling its computational details use.
// ---------------------------------------------------------------------------

/// QMF coefficients h_0..h_23 (§5, scaled by 2^13; DC gain of each half 4096).
/// The filter is symmetric (h_i = h_23-i), so this one array serves both as
/// "newest sample first" (the Recommendation's indexing) and as "oldest first"
/// (how the delay lines below are stored).
const QMF_H: [i32; 24] = [
    3, -11, -11, 53, 12, -156, 32, 362, -210, -805, 951, 3876, 3876, 951, -805, -210, 362, 32,
    -156, 12, 53, -11, -11, 3,
];

/// The even coefficients h_0, h_2, .., h_22 (receive QMF, §5), oldest-first:
/// reversed, h_22 first.
const QMF_H_EVEN_OLDEST_FIRST: [i32; 12] =
    [-11, 53, -156, 362, -805, 3876, 951, -210, 32, 12, -11, 3];

/// The odd coefficients h_1, h_3, .., h_23, oldest-first (h_23 first).
const QMF_H_ODD_OLDEST_FIRST: [i32; 12] =
    [3, -11, 12, 32, -210, 951, 3876, -805, 362, -156, 53, -11];

/// QUANTL decision levels (§6, Block 1L), the 29 positive thresholds of the 6-bit
/// quantiser in units of the scale factor (×2^-12 after multiplication by DETL).
/// Index 0 and 30–31 are padding (0).
const Q6: [u16; 32] = [
    0, 35, 72, 110, 150, 190, 233, 276, 323, 370, 422, 473, 530, 587, 650, 714, 786, 858, 940,
    1023, 1121, 1219, 1339, 1458, 1612, 1765, 1980, 2195, 2557, 2919, 0, 0,
];

/// `Q6 << 4`: with it, `(Q6[i] * DETL) >> 12 == (Q6_X16[i] * DETL) >> 16`, and
/// both operands fit unsigned 16 bits (Q6_X16 <= 46704, DETL <= 16384), so the
/// compiler can use a 16-bit SIMD "multiply high" for all 32 thresholds at once.
const Q6_X16: [u16; 32] = {
    let mut t = [0u16; 32];
    let mut i = 0;
    while i < 32 {
        t[i] = Q6[i] << 4;
        i += 1;
    }
    t
};

/// QUANTL output code I_L by the sign of EL (0: non-negative, the
/// Recommendation's ILP; 1: negative, ILN) and the quantiser interval (1..=30;
/// 0 and 31 unused).
const IL_BY_SIGN_INTERVAL: [[u8; 32]; 2] = [
    [
        0, 61, 60, 59, 58, 57, 56, 55, 54, 53, 52, 51, 50, 49, 48, 47, 46, 45, 44, 43, 42, 41, 40,
        39, 38, 37, 36, 35, 34, 33, 32, 0,
    ],
    [
        0, 63, 62, 31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12,
        11, 10, 9, 8, 7, 6, 5, 4, 0,
    ],
];

/// QUANTH output code I_H by the sign of EH (0: non-negative, 1: negative) and
/// whether |EH| reaches the decision level (0: inner, 1: outer): the
/// Recommendation's IHP/IHN.
const IH_BY_SIGN_LEVEL: [[u8; 2]; 2] = [[3, 2], [1, 0]];

/// INVQAL/INVQBL 4-bit inverse quantiser output levels QM4 (§6, Blocks 2L/5L), by
/// the 4-bit code I_L1..I_L4.
const QM4: [i16; 16] = [
    0, -20456, -12896, -8968, -6288, -4240, -2584, -1200, 20456, 12896, 8968, 6288, 4240, 2584,
    1200, 0,
];

/// INVQBL 5-bit levels QM5 (56 kbit/s mode), by I_L1..I_L5.
const QM5: [i16; 32] = [
    -280, -280, -23352, -17560, -14120, -11664, -9752, -8184, -6864, -5712, -4696, -3784, -2960,
    -2208, -1520, -880, 23352, 17560, 14120, 11664, 9752, 8184, 6864, 5712, 4696, 3784, 2960, 2208,
    1520, 880, 280, -280,
];

/// INVQBL 6-bit levels QM6 (64 kbit/s mode), by I_L1..I_L6.
const QM6: [i16; 64] = [
    -136, -136, -136, -136, -24808, -21904, -19008, -16704, -14984, -13512, -12280, -11192, -10232,
    -9360, -8576, -7856, -7192, -6576, -6000, -5456, -4944, -4464, -4008, -3576, -3168, -2776,
    -2400, -2032, -1688, -1360, -1040, -728, 24808, 21904, 19008, 16704, 14984, 13512, 12280,
    11192, 10232, 9360, 8576, 7856, 7192, 6576, 6000, 5456, 4944, 4464, 4008, 3576, 3168, 2776,
    2400, 2032, 1688, 1360, 1040, 728, 432, 136, -432, -136,
];

/// INVQBL levels for each mode indexed by the whole 6-bit lower code of the octet,
/// so that the decoder's inner loop is one lookup whatever the mode: 56 kbit/s
/// ignores I_L6 (`QM5[il >> 1]`), 48 kbit/s ignores I_L5 and I_L6 (`QM4[il >> 2]`).
const INVQBL_64K: [i16; 64] = QM6;
const INVQBL_56K: [i16; 64] = {
    let mut t = [0i16; 64];
    let mut i = 0;
    while i < 64 {
        t[i] = QM5[i >> 1];
        i += 1;
    }
    t
};
const INVQBL_48K: [i16; 64] = {
    let mut t = [0i16; 64];
    let mut i = 0;
    while i < 64 {
        t[i] = QM4[i >> 2];
        i += 1;
    }
    t
};

/// LOGSCL (§6, Block 3L): the log scale factor multiplier W_L, already indexed
/// by the 4-bit code I_L1..I_L4 (the Recommendation's RIL → IL4 mapping, then
/// W_L(IL4)).
const WL_BY_CODE4: [i16; 16] = {
    const WL: [i16; 8] = [-60, -30, 58, 172, 334, 538, 1198, 3042];
    const RL42: [usize; 16] = [0, 7, 6, 5, 4, 3, 2, 1, 7, 6, 5, 4, 3, 2, 1, 0];
    let mut t = [0i16; 16];
    let mut i = 0;
    while i < 16 {
        t[i] = WL[RL42[i]];
        i += 1;
    }
    t
};

/// INVQAH/INVQBH (§7, Blocks 2H/5H): the 2-bit inverse quantiser levels QM2, by I_H.
const QM2: [i16; 4] = [-7408, -1616, 7408, 1616];

/// LOGSCH (§7, Block 3H): W_H, indexed by I_H (the RIH → IH2 mapping applied).
const WH_BY_CODE: [i16; 4] = [798, -214, 798, -214];

/// SCALEL/SCALEH (§6/§7, Block 3): the inverse-log table ILB, 2048 × 2^(i/32).
const ILB: [i16; 32] = [
    2048, 2093, 2139, 2186, 2233, 2282, 2332, 2383, 2435, 2489, 2543, 2599, 2656, 2714, 2774, 2834,
    2896, 2960, 3025, 3091, 3158, 3228, 3298, 3371, 3444, 3520, 3597, 3676, 3756, 3838, 3922, 4008,
];

/// Upper limits of NBL and NBH (LOGSCL, LOGSCH).
const NBL_MAX: i32 = 18432;
const NBH_MAX: i32 = 22528;

/// SCALEL (Block 3L) as a table: DETL for every NBL, indexed by `NBL >> 6` (the
/// low 6 bits of NBL do not enter SCALEL). Built from [`scale`] at compile time.
const DETL_BY_NBL: [i16; (NBL_MAX >> 6) as usize + 1] = {
    let mut t = [0i16; (NBL_MAX >> 6) as usize + 1];
    let mut i = 0;
    while i < t.len() {
        t[i] = scale((i as i16) << 6, 8);
        i += 1;
    }
    t
};

/// SCALEH (Block 3H) as a table, indexed by `NBH >> 6`.
const DETH_BY_NBH: [i16; (NBH_MAX >> 6) as usize + 1] = {
    let mut t = [0i16; (NBH_MAX >> 6) as usize + 1];
    let mut i = 0;
    while i < t.len() {
        t[i] = scale((i as i16) << 6, 10);
        i += 1;
    }
    t
};

/// Initial scale factors DETL and DETH (the reset values: the minimum step sizes).
const DETL_INIT: i16 = 32;
const DETH_INIT: i16 = 8;

/// Sample pairs handled per pass through the stack buffers; any frame length
/// works, in chunks of this many pairs (160 = one 20 ms frame).
const CHUNK_PAIRS: usize = 160;

// ---------------------------------------------------------------------------
// Fixed-point helpers.
// ---------------------------------------------------------------------------

/// Saturates to the 16-bit range (the reference's saturating 16-bit add/sub).
#[inline(always)]
fn sat16(x: i32) -> i16 {
    x.clamp(i16::MIN as i32, i16::MAX as i32) as i16
}

/// LIMIT (Blocks 6L/6H) and the transmit QMF output limit: 15 bits.
#[inline(always)]
fn limit15(x: i32) -> i16 {
    x.clamp(-16384, 16383) as i16
}

/// All ones (-1) when `x` and `y` differ in sign, else 0, zero counting as
/// positive: the Recommendation's `SGN[x]·SGN[y]` (UPPOL1, UPPOL2, UPZERO) as a
/// mask, so that the sign-dependent updates are arithmetic rather than branches.
/// (On speech these signs are close to random, and one mispredicted branch costs
/// more than the update.)
#[inline(always)]
fn sign_mask(x: i16, y: i16) -> i32 {
    (x ^ y) as i32 >> 31
}

/// `v` when `mask` is 0, `-v` when it is -1.
#[inline(always)]
fn negate_if(v: i32, mask: i32) -> i32 {
    (v ^ mask) - mask
}

/// SCALEL/SCALEH (Block 3): the linear scale factor DET from the log one NB,
/// through ILB and a shift by `bias - NB/2048` (`bias` 8 for the lower band, 10
/// for the higher). The shift is negative (one to the left) only at NB's maximum;
/// doubling the mantissa first makes it a right shift in every case, as
/// `(2m) >> (k + 1) == m >> k`. Used to build [`DETL_BY_NBL`] and [`DETH_BY_NBH`].
const fn scale(nb: i16, bias: i32) -> i16 {
    let mantissa = ILB[((nb >> 6) & 31) as usize] as i32;
    let shift = bias + 1 - (nb as i32 >> 11);
    (((mantissa << 1) >> (shift & 31)) << 2) as i16
}

/// LOGSCL/LOGSCH (Block 3): `NB = clamp(NB × 127/128 + W, 0, max)`.
#[inline(always)]
fn log_scale(nb: i16, w: i16, max: i32) -> i16 {
    (((nb as i32 * 127) >> 7) + w as i32).clamp(0, max) as i16
}

/// QUANTL (§6, Block 1L): the quantiser interval of the magnitude `wd` (EL, one's
/// complemented when negative): the first `i` in `1..=29` with
/// `wd < (Q6[i] × DETL) >> 12`, or 30 when there is none.
///
/// The Recommendation searches the levels one by one. Here all 32 thresholds are
/// computed and compared at once (two loops the compiler turns into 16-bit SIMD)
/// into a bit mask of "threshold <= wd". The thresholds grow with `i`, so the
/// real ones (1..=29) that are `<= wd` form a run from bit 1 up, and the answer
/// is the first clear bit above it; bit 0 and the padding bits 30 and 31 (level
/// 0) are always set, and bit 30 is forced clear to give 30 when all 29 are
/// `<= wd`. No data-dependent branch, and the thresholds depend only on DETL,
/// known a sample ahead.
#[inline(always)]
fn quantl_interval(wd: i16, det: i16) -> usize {
    let det = det as u16 as u32;
    let mut thresholds = [0u16; 32];
    for (t, &q) in thresholds.iter_mut().zip(&Q6_X16) {
        *t = ((q as u32 * det) >> 16) as u16;
    }
    let mut at_or_below = 0u32;
    for (k, &t) in thresholds.iter().enumerate() {
        // Thresholds are below 2^15 (2919 × 16384 / 4096 at most) and wd is not
        // negative, so the signed comparison is exact.
        at_or_below |= u32::from(t as i16 <= wd) << k;
    }
    (!at_or_below | 1 << 30).trailing_zeros() as usize
}

// ---------------------------------------------------------------------------
// The zero (FIR) section of the predictor: UPZERO, DELAYA and FILTEZ.
// ---------------------------------------------------------------------------

/// The zero section's state, in eight 16-bit lanes: `b` holds B1..B6 (lanes 6
/// and 7 are always 0), `d2` holds 2·D(n-1)..2·D(n-8) (lanes 6 and 7 are kept
/// only so that every lane shifts alike; their B is 0). D is stored doubled
/// because FILTEZ only ever uses 2·D, and `|2·D| <= 20456` fits 16 bits (see
/// [`Band::adapt`]); its sign is D's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ZeroSection {
    b: [i16; 8],
    d2: [i16; 8],
}

impl ZeroSection {
    const fn new() -> Self {
        ZeroSection {
            b: [0; 8],
            d2: [0; 8],
        }
    }

    /// UPZERO: `B_i(n) = B_i(n-1)(1 - 2^-8) + 2^-7 SGN[D(n)]SGN[D(n-i)]`, the
    /// increment 0 when D(n) = 0; DELAYA shifts D(n) in; returns FILTEZ's
    /// `Σ B_i(n) · 2D(n-i+1)`, each product truncated (`>> 15`) before the sum,
    /// not yet saturated.
    ///
    /// `B_i(n-1) × 32640 >> 15 ± 128` stays within 16 bits for every 16-bit
    /// B_i(n-1) (the unit test `upzero_never_needs_its_saturation` checks them
    /// all), so the reference's saturation of B never acts and is left out.
    ///
    /// This is the plain version: the specification the SSE2 one is tested
    /// against, and the one used off x86_64.
    #[cfg_attr(target_arch = "x86_64", allow(dead_code))]
    #[inline(always)]
    fn update_scalar(&mut self, dx: i16) -> i32 {
        let step = i32::from(dx != 0) << 7;
        let d2 = [
            dx.wrapping_mul(2),
            self.d2[0],
            self.d2[1],
            self.d2[2],
            self.d2[3],
            self.d2[4],
            self.d2[5],
            self.d2[6],
        ];
        let mut sz = 0;
        // Taps 1..=6: B_i with D(n-i) for its sign and, after the shift, 2·D(n-i+1).
        for ((b, &d_before), &d_after) in self.b.iter_mut().zip(&self.d2).zip(&d2).take(6) {
            let inc = negate_if(step, sign_mask(d_before, dx));
            let updated = inc + ((*b as i32 * 32640) >> 15);
            *b = updated as i16;
            sz += (updated * d_after as i32) >> 15;
        }
        self.d2 = d2;
        sz
    }

    /// The same as [`update_scalar`](Self::update_scalar), all six taps at once
    /// in SSE2 (part of every x86_64 CPU): a fifth of the codec's time saved.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn update(&mut self, dx: i16) -> i32 {
        use core::arch::x86_64::*;
        // SAFETY: the intrinsics need SSE2, which the x86_64 baseline guarantees
        // (it is enabled for every x86_64 target, so no CPU this code can run on
        // lacks it). The two loads and two stores are unaligned 16-byte accesses
        // to `self.b` and `self.d2`, which are `[i16; 8]`, exactly 16 bytes, and
        // borrowed mutably for the whole block.
        unsafe {
            let b = _mm_loadu_si128(self.b.as_ptr().cast());
            let d2 = _mm_loadu_si128(self.d2.as_ptr().cast());
            // SGN[D(n)]SGN[D(n-i)] as lane masks (-1 where the signs differ), and
            // the increment ±128 on lanes 0..6 only (0 when D(n) = 0).
            let differ = _mm_srai_epi16(_mm_xor_si128(d2, _mm_set1_epi16(dx)), 15);
            let taps = _mm_set_epi16(0, 0, -1, -1, -1, -1, -1, -1);
            let step = _mm_and_si128(_mm_set1_epi16(i16::from(dx != 0) << 7), taps);
            let inc = _mm_sub_epi16(_mm_xor_si128(step, differ), differ);
            // B × 32640 >> 15 == B × 255/256 rounded down == B - ceil(B / 256),
            // and ceil(B / 256) == (B >> 8) + 1 - [B mod 256 == 0].
            let low_byte_zero =
                _mm_cmpeq_epi16(_mm_and_si128(b, _mm_set1_epi16(0xFF)), _mm_setzero_si128());
            let ceil = _mm_add_epi16(
                _mm_srai_epi16(b, 8),
                _mm_add_epi16(_mm_set1_epi16(1), low_byte_zero),
            );
            let b = _mm_add_epi16(_mm_sub_epi16(b, ceil), inc);
            // DELAYA: shift 2·D(n) in at lane 0.
            let d2 = _mm_insert_epi16(_mm_slli_si128(d2, 2), i32::from(dx) * 2, 0);
            // FILTEZ: (B × 2D) >> 15 per lane, from the 32-bit product's high and
            // low halves; exact in 16 bits because |B × 2D| >> 15 <= 20456.
            let high = _mm_mulhi_epi16(b, d2);
            let low = _mm_mullo_epi16(b, d2);
            let terms = _mm_or_si128(_mm_slli_epi16(high, 1), _mm_srli_epi16(low, 15));
            // Sum the eight terms in 32 bits.
            let pairs = _mm_madd_epi16(terms, _mm_set1_epi16(1));
            let halves = _mm_add_epi32(pairs, _mm_shuffle_epi32(pairs, 0b01_00_11_10));
            let sum = _mm_add_epi32(halves, _mm_shuffle_epi32(halves, 0b10_11_00_01));
            _mm_storeu_si128(self.b.as_mut_ptr().cast(), b);
            _mm_storeu_si128(self.d2.as_mut_ptr().cast(), d2);
            _mm_cvtsi128_si32(sum)
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    #[inline(always)]
    fn update(&mut self, dx: i16) -> i32 {
        self.update_scalar(dx)
    }
}

// ---------------------------------------------------------------------------
// One sub-band's ADPCM state: Blocks 3 (scale factor) and 4 (predictor).
// ---------------------------------------------------------------------------

/// The state one sub-band ADPCM coder keeps between samples; encoder and decoder
/// keep identical copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Band {
    /// S: the predicted signal for the current sample (PREDIC).
    s: i16,
    /// SZ: the zero section's part of S (FILTEZ).
    sz: i16,
    /// R(n-1): the previous reconstructed signal (RECONS).
    r: i16,
    /// P(n-1), P(n-2): previous partially reconstructed signals (PARREC).
    p: [i16; 2],
    /// A1, A2: pole (IIR) section coefficients (UPPOL1, UPPOL2).
    a: [i16; 2],
    /// B1..B6 and the D history (UPZERO, DELAYA).
    zero: ZeroSection,
    /// NB: the log scale factor (LOGSCL/LOGSCH).
    nb: i16,
    /// DET: the scale factor (SCALEL/SCALEH).
    det: i16,
}

impl Band {
    const fn new(det: i16) -> Self {
        Band {
            s: 0,
            sz: 0,
            r: 0,
            p: [0; 2],
            a: [0; 2],
            zero: ZeroSection::new(),
            nb: 0,
            det,
        }
    }

    /// Block 4 (§6 Block 4L, §7 Block 4H: the same for both bands, in encoder and
    /// decoder): updates the adaptive predictor with the quantised difference
    /// signal `dx` and leaves the prediction for the next sample in `self.s`.
    ///
    /// `|dx| <= 10228`: DET <= 16384 (SCALEL/SCALEH at NB's maximum) times an
    /// INVQAL/INVQAH level of at most 20456 (QM4) or 7408 (QM2), × 2^-15. Where
    /// such a bound means a saturation of the reference can never act, it is left
    /// out and the bound noted; the unit tests check the bounds.
    #[inline(always)]
    fn adapt(&mut self, dx: i16) {
        let dx32 = dx as i32;
        let (a1_old, a2_old) = (self.a[0] as i32, self.a[1] as i32);

        // RECONS: R(n) = S(n) + D(n). PARREC: P(n) = SZ(n) + D(n).
        let r = sat16(self.s as i32 + dx32);
        let p = sat16(self.sz as i32 + dx32);
        let p_flips = sign_mask(p, self.p[0]);

        // UPPOL2: A2(n) = A2(n-1)(1 - 2^-7) + 2^-7 SGN[P(n)]SGN[P(n-2)]
        //                 - 2^-7 F(A1(n-1)) SGN[P(n)]SGN[P(n-1)],
        // F(A1) = 4·A1 saturated to 16 bits (|A1| reaches 27648); |A2| <= 0.75.
        let four_a1 = sat16(a1_old << 2) as i32;
        let wd32 = negate_if(four_a1, !p_flips).min(32767);
        let sg2 = negate_if(128, sign_mask(p, self.p[1]));
        let a2 = (sg2 + (wd32 >> 7) + ((a2_old * 32512) >> 15)).clamp(-12288, 12288);

        // UPPOL1: A1(n) = A1(n-1)(1 - 2^-8) + 3·2^-8 SGN[P(n)]SGN[P(n-1)], limited
        // to ±(1 - 2^-4 - A2(n)). |A1(n-1)| <= 15360 + 12288 = 27648, so neither
        // the sum nor the limit (3072..=27648) needs the reference's saturation.
        let sg1 = negate_if(192, p_flips);
        let a1_limit = 15360 - a2;
        let a1 = (sg1 + ((a1_old * 32640) >> 15))
            .max(-a1_limit)
            .min(a1_limit);

        // FILTEP: SP = Σ A_i(n) · 2R(n-i+1), each product truncated.
        let sp = sat16(
            ((a1 * sat16(r as i32 * 2) as i32) >> 15)
                + ((a2 * sat16(self.r as i32 * 2) as i32) >> 15),
        );
        self.r = r;
        self.a = [a1 as i16, a2 as i16];
        self.p = [p, self.p[0]];

        // UPZERO, DELAYA, FILTEZ.
        self.sz = sat16(self.zero.update(dx));

        // PREDIC: S(n+1) = SP + SZ.
        self.s = sat16(sp as i32 + self.sz as i32);
    }

    /// Lower sub-band Blocks 2L–4L once the 4-bit code I_L1..I_L4 is known (the
    /// embedded 4-bit code: what every mode's decoder sees, so the predictors
    /// agree whatever bits carry data).
    #[inline(always)]
    fn update_lower(&mut self, code4: usize) {
        // INVQAL (Block 2L): DLT = DETL × QM4(I_L1..I_L4), truncated.
        let dlt = ((self.det as i32 * QM4[code4 & 15] as i32) >> 15) as i16;
        // LOGSCL, SCALEL (Block 3L).
        self.nb = log_scale(self.nb, WL_BY_CODE4[code4 & 15], NBL_MAX);
        self.det = DETL_BY_NBL[((self.nb >> 6) as usize).min(DETL_BY_NBL.len() - 1)];
        self.adapt(dlt);
    }

    /// Higher sub-band Blocks 2H–4H for the code I_H.
    #[inline(always)]
    fn update_higher(&mut self, ih: usize) {
        // INVQAH (Block 2H): DH = DETH × QM2(I_H), truncated.
        let dh = ((self.det as i32 * QM2[ih & 3] as i32) >> 15) as i16;
        // LOGSCH, SCALEH (Block 3H).
        self.nb = log_scale(self.nb, WH_BY_CODE[ih & 3], NBH_MAX);
        self.det = DETH_BY_NBH[((self.nb >> 6) as usize).min(DETH_BY_NBH.len() - 1)];
        self.adapt(dh);
    }
}

// ---------------------------------------------------------------------------
// Encoder.
// ---------------------------------------------------------------------------

/// A G.722 encoder: 16 kHz linear PCM in, one octet per sample pair out, at
/// 64 kbit/s.
///
/// Built on the control plane ([`G722Encoder::new`] does not allocate); the state
/// is inline and moves to a lane whole.
#[derive(Debug, Clone)]
pub struct G722Encoder {
    mode: G722Mode,
    /// The transmit QMF's delay line: the last 22 input samples, oldest first.
    qmf: [i16; 22],
    lower: Band,
    higher: Band,
}

impl G722Encoder {
    /// A new encoder in the Recommendation's reset state.
    ///
    /// The encoder always produces 64 kbit/s code words (§1); `mode` is only
    /// recorded, for [`mode`](Self::mode), so that one value can configure both
    /// directions of a call.
    pub const fn new(mode: G722Mode) -> Self {
        G722Encoder {
            mode,
            qmf: [0; 22],
            lower: Band::new(DETL_INIT),
            higher: Band::new(DETH_INIT),
        }
    }

    /// The mode given to [`new`](Self::new).
    pub const fn mode(&self) -> G722Mode {
        self.mode
    }

    /// Octets [`encode`](Self::encode) writes for `samples` input samples
    /// (`samples / 2`; an odd last sample is not coded).
    pub const fn output_len(samples: usize) -> usize {
        samples / SAMPLES_PER_OCTET
    }

    /// Returns the encoder to its initial state, as after [`new`](Self::new).
    ///
    /// Called on the real-time thread.
    pub fn reset(&mut self) {
        *self = Self::new(self.mode);
    }

    /// Encodes 16 kHz samples, two per octet, into `out`; returns the number of
    /// octets written, `min(pcm16k.len() / 2, out.len())`.
    ///
    /// The state carries over between calls, so a stream may be cut into frames
    /// anywhere between sample pairs. A trailing odd sample is not coded (frames
    /// at 16 kHz always have an even number of samples). Never allocates or panics.
    ///
    /// Called on the real-time thread.
    pub fn encode(&mut self, pcm16k: &[i16], out: &mut [u8]) -> usize {
        let pairs = (pcm16k.len() / SAMPLES_PER_OCTET).min(out.len());
        for (pcm, out) in pcm16k[..pairs * 2]
            .chunks(CHUNK_PAIRS * 2)
            .zip(out[..pairs].chunks_mut(CHUNK_PAIRS))
        {
            self.encode_chunk(pcm, out);
        }
        pairs
    }

    /// One chunk of at most [`CHUNK_PAIRS`] pairs: `pcm.len() == 2 * out.len()`.
    #[inline(always)]
    fn encode_chunk(&mut self, pcm: &[i16], out: &mut [u8]) {
        let pairs = out.len().min(pcm.len() / 2).min(CHUNK_PAIRS);

        // Transmit QMF (§3, §5): x_L = x_A + x_B and x_H = x_A - x_B, with
        // x_A = Σ h_2i x_in(j - 2i) over the newer sample of each pair and
        // x_B = Σ h_2i+1 x_in(j - 2i - 1) over the older. Over the delay line,
        // oldest first, x_A + x_B = Σ_k h_k x[k] (h is symmetric). The sums fit
        // 32 bits (Σ|h_k| × 2^15 < 2^29); they are scaled by 2^-14 and limited
        // to 15 bits, as in the STL.
        let mut line = [0i16; 22 + 2 * CHUNK_PAIRS];
        line[..22].copy_from_slice(&self.qmf);
        line[22..22 + 2 * pairs].copy_from_slice(&pcm[..2 * pairs]);
        let mut xl = [0i16; CHUNK_PAIRS];
        let mut xh = [0i16; CHUNK_PAIRS];
        for (n, (xl, xh)) in xl.iter_mut().zip(&mut xh).enumerate().take(pairs) {
            let window = &line[2 * n..2 * n + 24];
            let (mut sum_a, mut sum_b) = (0i32, 0i32);
            for k in 0..12 {
                sum_b += window[2 * k] as i32 * QMF_H[2 * k];
                sum_a += window[2 * k + 1] as i32 * QMF_H[2 * k + 1];
            }
            *xl = limit15((sum_a + sum_b) >> 14);
            *xh = limit15((sum_a - sum_b) >> 14);
        }
        self.qmf.copy_from_slice(&line[2 * pairs..2 * pairs + 22]);

        // The two sub-band coders are independent; one loop runs both so that
        // the processor overlaps their dependency chains.
        let (lower, higher) = (&mut self.lower, &mut self.higher);
        for ((&xl, &xh), code) in xl.iter().zip(&xh).zip(out.iter_mut()).take(pairs) {
            // Block 1L. SUBTRA: EL = XL - SL. QUANTL on |EL| (one's complement
            // when negative) against levels scaled by DETL.
            let el = sat16(xl as i32 - lower.s as i32);
            let negative = (el >> 15) as usize & 1;
            let interval = quantl_interval(el ^ (el >> 15), lower.det);
            let il = IL_BY_SIGN_INTERVAL[negative][interval];
            // Blocks 2L-4L on the 4 most significant bits.
            lower.update_lower((il >> 2) as usize);

            // Block 1H. SUBTRA: EH = XH - SH. QUANTH: one decision level,
            // 564 × DETH × 2^-12, on |EH| (one's complement when negative).
            let eh = sat16(xh as i32 - higher.s as i32);
            let negative = (eh >> 15) as usize & 1;
            let outer = (eh ^ (eh >> 15)) as i32 >= (564 * higher.det as i32) >> 12;
            let ih = IH_BY_SIGN_LEVEL[negative][usize::from(outer)];
            higher.update_higher(ih as usize);

            // I_H1 I_H2 I_L1 .. I_L6, most significant bit first.
            *code = (ih << 6) | il;
        }
    }
}

impl Default for G722Encoder {
    /// A 64 kbit/s encoder.
    fn default() -> Self {
        Self::new(G722Mode::Rate64k)
    }
}

// ---------------------------------------------------------------------------
// Decoder.
// ---------------------------------------------------------------------------

/// A G.722 decoder: one octet per sample pair in, 16 kHz linear PCM out, in any of
/// the three modes.
///
/// Built on the control plane ([`G722Decoder::new`] does not allocate); the state
/// is inline and moves to a lane whole.
#[derive(Debug, Clone)]
pub struct G722Decoder {
    mode: G722Mode,
    /// The receive QMF's delay lines, oldest first: x_d = r_L - r_H and
    /// x_s = r_L + r_H.
    qmf_d: [i16; 11],
    qmf_s: [i16; 11],
    lower: Band,
    higher: Band,
}

impl G722Decoder {
    /// A new decoder in the Recommendation's reset state, decoding `mode`: the
    /// lower sub-band from 6 (64 kbit/s), 5 (56) or 4 (48) bits of each octet.
    pub const fn new(mode: G722Mode) -> Self {
        G722Decoder {
            mode,
            qmf_d: [0; 11],
            qmf_s: [0; 11],
            lower: Band::new(DETL_INIT),
            higher: Band::new(DETH_INIT),
        }
    }

    /// The mode the decoder decodes.
    pub const fn mode(&self) -> G722Mode {
        self.mode
    }

    /// Samples [`decode`](Self::decode) writes for `octets` code octets
    /// (`2 × octets`).
    pub const fn output_len(octets: usize) -> usize {
        octets * SAMPLES_PER_OCTET
    }

    /// Returns the decoder to its initial state, as after [`new`](Self::new).
    ///
    /// Called on the real-time thread.
    pub fn reset(&mut self) {
        *self = Self::new(self.mode);
    }

    /// Decodes G.722 octets (RTP payload order, each `I_H1 I_H2 I_L1..I_L6` from
    /// the most significant bit) into 16 kHz samples, two per octet; returns the
    /// number of samples written, `2 × min(codes.len(), out.len() / 2)`.
    ///
    /// In the 56 and 48 kbit/s modes the one or two least significant bits of
    /// each octet (auxiliary data) are ignored. Every octet is a valid code, so
    /// garbage decodes to noise, never to a panic. The state carries over between
    /// calls. Never allocates.
    ///
    /// Called on the real-time thread.
    pub fn decode(&mut self, codes: &[u8], out: &mut [i16]) -> usize {
        let octets = codes.len().min(out.len() / SAMPLES_PER_OCTET);
        let invqbl: &[i16; 64] = match self.mode {
            G722Mode::Rate64k => &INVQBL_64K,
            G722Mode::Rate56k => &INVQBL_56K,
            G722Mode::Rate48k => &INVQBL_48K,
        };
        for (codes, out) in codes[..octets]
            .chunks(CHUNK_PAIRS)
            .zip(out[..octets * 2].chunks_mut(CHUNK_PAIRS * 2))
        {
            self.decode_chunk(invqbl, codes, out);
        }
        octets * SAMPLES_PER_OCTET
    }

    /// One chunk of at most [`CHUNK_PAIRS`] octets: `out.len() == 2 * codes.len()`.
    #[inline(always)]
    fn decode_chunk(&mut self, invqbl: &[i16; 64], codes: &[u8], out: &mut [i16]) {
        let pairs = codes.len().min(out.len() / 2).min(CHUNK_PAIRS);
        let mut line_d = [0i16; 11 + CHUNK_PAIRS];
        let mut line_s = [0i16; 11 + CHUNK_PAIRS];
        line_d[..11].copy_from_slice(&self.qmf_d);
        line_s[..11].copy_from_slice(&self.qmf_s);

        let (lower, higher) = (&mut self.lower, &mut self.higher);
        for (n, &code) in codes.iter().enumerate().take(pairs) {
            let il = (code & 63) as usize;
            let ih = (code >> 6) as usize;

            // Block 5L. INVQBL: DL = DETL × QM(I_L) from the mode's 6, 5 or 4
            // bits; RECONS and LIMIT (6L): RL = SL + DL limited to 15 bits.
            let dl = (lower.det as i32 * invqbl[il] as i32) >> 15;
            let rl = limit15(lower.s as i32 + dl);
            // Blocks 2L-4L on I_L1..I_L4, as in the encoder.
            lower.update_lower(il >> 2);

            // Blocks 2H, 5H, 6H: DH = DETH × QM2(I_H); RH = SH + DH limited.
            let dh = (higher.det as i32 * QM2[ih & 3] as i32) >> 15;
            let rh = limit15(higher.s as i32 + dh);
            higher.update_higher(ih);

            // Receive QMF inputs: two 15-bit values, so no overflow.
            line_d[11 + n] = rl - rh;
            line_s[11 + n] = rl + rh;
        }

        // Receive QMF (§4, §5): x_out(j) = 2 Σ h_2i x_d(i) and x_out(j+1) =
        // 2 Σ h_2i+1 x_s(i) over the last 12 values of each line; scaled by
        // 2^-11 and saturated to 16 bits, as in the STL.
        for (n, pair) in out.chunks_exact_mut(2).enumerate().take(pairs) {
            let (window_d, window_s) = (&line_d[n..n + 12], &line_s[n..n + 12]);
            let (mut even, mut odd) = (0i32, 0i32);
            for k in 0..12 {
                even += window_d[k] as i32 * QMF_H_EVEN_OLDEST_FIRST[k];
                odd += window_s[k] as i32 * QMF_H_ODD_OLDEST_FIRST[k];
            }
            pair[0] = sat16(even >> 11);
            pair[1] = sat16(odd >> 11);
        }
        self.qmf_d.copy_from_slice(&line_d[pairs..pairs + 11]);
        self.qmf_s.copy_from_slice(&line_s[pairs..pairs + 11]);
    }
}

impl Default for G722Decoder {
    /// A 64 kbit/s decoder.
    fn default() -> Self {
        Self::new(G722Mode::Rate64k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// QUANTL as the Recommendation states it: a search over the levels.
    fn quantl_interval_linear(wd: i16, det: i16) -> usize {
        for (i, &q) in Q6.iter().enumerate().take(30).skip(1) {
            if (wd as i32) < ((q as i32 * det as i32) >> 12) {
                return i;
            }
        }
        30
    }

    /// A small deterministic generator (xorshift32) for the randomised checks.
    fn xorshift(state: &mut u32) -> u32 {
        *state ^= *state << 13;
        *state ^= *state >> 17;
        *state ^= *state << 5;
        *state
    }

    #[test]
    fn quantl_mask_matches_the_level_search_at_every_scale_factor() {
        let mut dets: Vec<i16> = DETL_BY_NBL.to_vec();
        dets.sort_unstable();
        dets.dedup();
        assert_eq!(dets.first(), Some(&DETL_INIT));
        for &det in &dets {
            // Every threshold ±1, and a stride over the rest of the range.
            let mut probes: Vec<i32> = (0..=32767).step_by(97).collect();
            for &q in &Q6[1..30] {
                let t = (q as i32 * det as i32) >> 12;
                probes.extend([t - 1, t, t + 1]);
            }
            probes.push(32767);
            for wd in probes.into_iter().filter(|wd| (0..=32767).contains(wd)) {
                let wd = wd as i16;
                assert_eq!(
                    quantl_interval(wd, det),
                    quantl_interval_linear(wd, det),
                    "wd {wd} det {det}"
                );
            }
        }
    }

    #[test]
    fn scale_factor_tables_match_scalel_and_scaleh() {
        for nb in 0..=NBH_MAX as i16 {
            // The reference's SCALEL/SCALEH, shift direction and all.
            let reference = |bias: i32| {
                let mantissa = ILB[((nb >> 6) & 31) as usize] as i32;
                let shift = bias - (nb as i32 >> 11);
                let wd3 = if shift < 0 {
                    mantissa << -shift
                } else {
                    mantissa >> shift
                };
                (wd3 << 2) as i16
            };
            assert_eq!(DETH_BY_NBH[(nb >> 6) as usize], reference(10), "NBH {nb}");
            if nb as i32 <= NBL_MAX {
                assert_eq!(DETL_BY_NBL[(nb >> 6) as usize], reference(8), "NBL {nb}");
            }
        }
        assert_eq!((DETL_BY_NBL[0], DETH_BY_NBH[0]), (DETL_INIT, DETH_INIT));
        let max_det = DETL_BY_NBL.iter().chain(&DETH_BY_NBH).copied().max();
        assert_eq!(max_det, Some(16384));
    }

    #[test]
    fn quantised_differences_stay_within_the_bound_the_predictor_relies_on() {
        // |dx| <= 10228, so 2·dx fits 16 bits in the zero section.
        let max_dlt = QM4.iter().map(|&q| ((16384 * q as i32) >> 15).abs()).max();
        let max_dh = QM2.iter().map(|&q| ((16384 * q as i32) >> 15).abs()).max();
        assert_eq!(max_dlt, Some(10228));
        assert!(max_dh < max_dlt);
    }

    #[test]
    fn upzero_never_needs_its_saturation() {
        for b in i16::MIN..=i16::MAX {
            for inc in [-128, 0, 128] {
                let updated = inc + ((b as i32 * 32640) >> 15);
                assert_eq!(updated, sat16(updated) as i32, "B {b} inc {inc}");
            }
        }
    }

    #[test]
    fn the_sse2_zero_section_matches_the_plain_one() {
        let mut seed = 0x9E37_79B9;
        let mut fast = ZeroSection::new();
        let mut plain = ZeroSection::new();
        for step in 0..200_000 {
            // Every few thousand steps, jump to an arbitrary state (B anywhere
            // in 16 bits) to cover what slow adaptation rarely reaches.
            if step % 5000 == 0 {
                for i in 0..6 {
                    fast.b[i] = xorshift(&mut seed) as i16;
                    fast.d2[i] = ((xorshift(&mut seed) % 20457) as i16 - 10228) * 2;
                }
                plain = fast;
            }
            let r = xorshift(&mut seed);
            let dx = match r % 4 {
                0 => 0,
                1 => [10228, -10228, 1, -1][(r >> 8) as usize % 4],
                _ => ((r >> 8) % 20457) as i16 - 10228,
            };
            assert_eq!(fast.update(dx), plain.update_scalar(dx), "step {step}");
            assert_eq!(fast, plain, "step {step}");
        }
    }

    #[test]
    fn mode_tables_ignore_the_auxiliary_bits() {
        for il in 0..64 {
            assert_eq!(INVQBL_56K[il], QM5[il >> 1]);
            assert_eq!(INVQBL_48K[il], QM4[il >> 2]);
            assert_eq!(INVQBL_64K[il], QM6[il]);
        }
    }

    #[test]
    fn short_and_odd_buffers_are_bounded_by_the_smaller_side() {
        let mut enc = G722Encoder::default();
        let pcm = [1000i16; 7];
        let mut out = [0u8; 8];
        assert_eq!(enc.encode(&pcm, &mut out), 3);
        assert_eq!(enc.encode(&pcm, &mut out[..1]), 1);
        assert_eq!(enc.encode(&[], &mut out), 0);
        assert_eq!(G722Encoder::output_len(7), 3);

        let mut dec = G722Decoder::new(G722Mode::Rate48k);
        let mut pcm_out = [0i16; 5];
        assert_eq!(dec.decode(&[0xFF; 4], &mut pcm_out), 4);
        assert_eq!(dec.decode(&[0xFF; 4], &mut pcm_out[..1]), 0);
        assert_eq!(dec.decode(&[], &mut pcm_out), 0);
        assert_eq!(G722Decoder::output_len(4), 8);
    }

    #[test]
    fn reset_restores_the_initial_state() {
        let mut enc = G722Encoder::new(G722Mode::Rate56k);
        let mut dec = G722Decoder::new(G722Mode::Rate56k);
        let mut seed = 1;
        let pcm: Vec<i16> = (0..640).map(|_| xorshift(&mut seed) as i16).collect();
        let mut codes = [0u8; 320];
        let mut out = [0i16; 640];
        enc.encode(&pcm, &mut codes);
        dec.decode(&codes, &mut out);
        enc.reset();
        dec.reset();
        let fresh_enc = G722Encoder::new(G722Mode::Rate56k);
        let fresh_dec = G722Decoder::new(G722Mode::Rate56k);
        assert_eq!(enc.qmf, fresh_enc.qmf);
        assert_eq!((enc.lower, enc.higher), (fresh_enc.lower, fresh_enc.higher));
        assert_eq!((dec.qmf_d, dec.qmf_s), (fresh_dec.qmf_d, fresh_dec.qmf_s));
        assert_eq!((dec.lower, dec.higher), (fresh_dec.lower, fresh_dec.higher));
        assert_eq!(
            (enc.mode(), dec.mode()),
            (G722Mode::Rate56k, G722Mode::Rate56k)
        );
    }
}
