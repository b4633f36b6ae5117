//! Complex FFTs of the block sizes the voice kernels transform: 80, 160 and 480 points
//! (the real transforms of 20 ms windows at 8, 16 and 48 kHz, see
//! [`crate::processing::audio::ns`]), and 320 and 960 (the echo canceller's 40 ms windows
//! at 16 and 48 kHz), unnormalised, forwards (`e^(−2πi nk/N)`) and backwards
//! (`e^(+2πi nk/N)`).
//!
//! Each size is a product `N = N1 · 20` with `N1` = 4, 8, 16, 24 or 48, computed in four steps
//! (Cooley–Tukey with the index maps `n = n1 + N1·n2`, `k = k2 + 20·k1`) on vectors of
//! four complex values:
//! 1. 20-point transforms along `n2`, vectorised over `n1` (each row of `N1` inputs is
//!    `N1/4` vectors, so every operation is vertical);
//! 2. twiddles `W_N^(n1·k2)` from a shared table;
//! 3. 4×4 transposes, so that `k2` runs along the vectors;
//! 4. `N1`-point transforms along `n1`, vertical again, storing the output in natural
//!    order.
//!
//! The 20-, 24- and 48-point transforms are prime-factor (Good–Thomas) compositions of 4×5,
//! 8×3 and 16×3 points, which need no twiddles; the 3-, 4-, 5- and 8-point ones are the usual
//! small butterflies, and the 16-point one two 8-point halves joined by `W_16` twiddles. All
//! sizes are fixed, so every index is a constant: in the loops the compiler unrolls, or
//! (the 48-point columns) read from constant offset tables.
//!
//! Why not rustfft: for 80 points its AVX plan (a 5×16 mixed radix) cost about 900
//! instructions per call with its dispatch, transposes and helpers, where this costs about
//! 430 (callgrind, `scripts/instructions_steady.sh aec-pcmu`); the echo canceller runs 12
//! such transforms per 10 ms block (PERF.md, voice section, session 14).
//!
//! Both builds (AVX2, and the portable one on `[f32; 8]` that runs elsewhere) are the same
//! macro body over the same operations in the same order, with the same constants and
//! twiddles, and no fused multiply-add, so they give the same bits (tested).

use rustfft::num_complex::Complex;

/// `cos(2π/5)`, `cos(4π/5)`, `sin(2π/5)`, `sin(4π/5)` (each rounded once, from f64).
const C5_1: f32 = 0.309_016_994_374_947_45_f64 as f32;
const C5_2: f32 = -0.809_016_994_374_947_5_f64 as f32;
const S5_1: f32 = 0.951_056_516_295_153_5_f64 as f32;
const S5_2: f32 = 0.587_785_252_292_473_1_f64 as f32;
/// `sin(2π/3)`.
const S3: f32 = 0.866_025_403_784_438_6_f64 as f32;
/// `1/√2`.
const R2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// `cos(π/8)`, `sin(π/8)` (each rounded once, from f64).
const C16: f32 = 0.923_879_532_511_286_7_f64 as f32;
const S16: f32 = 0.382_683_432_365_089_8_f64 as f32;

/// The transform sizes there are, points: also the block lengths, in samples, whose
/// two-block windows the voice kernels transform as real sequences (10 ms at 8, 16 and
/// 48 kHz; 20 ms at 8, 16 and 48 kHz).
pub(crate) const SIZES: [usize; 5] = [80, 160, 320, 480, 960];

/// Length of the inner (vectorised) transform.
const N2: usize = 20;

/// One twiddle for the four complex lanes of a vector: the real parts and the imaginary
/// parts, each repeated for the lane's two floats (what the complex multiply needs).
#[derive(Clone, Copy)]
#[repr(C, align(32))]
struct Twiddle {
    re: [f32; 8],
    im: [f32; 8],
}

/// A planned transform of one size and direction: its twiddles. Shared read-only.
pub(crate) struct FixedFft {
    /// Points.
    n: usize,
    /// Backwards (`+i`) when true.
    inverse: bool,
    /// `W^(n1·k2)` for the vector `j` of `n1` (lanes `n1 = 4j..4j + 4`) at `[j·20 + k2]`.
    twiddles: Box<[Twiddle]>,
}

impl FixedFft {
    /// The transform of `n` points (80, 160, 320, 480 or 960; `None` otherwise). Control
    /// plane.
    pub(crate) fn new(n: usize, inverse: bool) -> Option<FixedFft> {
        if !SIZES.contains(&n) {
            return None;
        }
        let n1 = n / N2;
        let sign = if inverse { 1.0 } else { -1.0 };
        let mut twiddles = Vec::with_capacity(n1 / 4 * N2);
        for j in 0..n1 / 4 {
            for k2 in 0..N2 {
                let mut t = Twiddle {
                    re: [0.0; 8],
                    im: [0.0; 8],
                };
                for lane in 0..4 {
                    // Exact index products, reduced mod n, then one rounding from f64.
                    let e = ((4 * j + lane) * k2) % n;
                    let phase = sign * 2.0 * std::f64::consts::PI * e as f64 / n as f64;
                    let (s, c) = phase.sin_cos();
                    t.re[2 * lane] = c as f32;
                    t.re[2 * lane + 1] = c as f32;
                    t.im[2 * lane] = s as f32;
                    t.im[2 * lane + 1] = s as f32;
                }
                twiddles.push(t);
            }
        }
        Some(FixedFft {
            n,
            inverse,
            twiddles: twiddles.into_boxed_slice(),
        })
    }

    /// Points.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.n
    }

    /// The transform of `input` into `output` (both `n` values; false and nothing written
    /// if not, a caller bug). Real-time safe.
    pub(crate) fn process(&self, input: &[Complex<f32>], output: &mut [Complex<f32>]) -> bool {
        if input.len() != self.n || output.len() != self.n {
            return false;
        }
        // SAFETY: `Complex<f32>` is two `f32` (`repr(C)`), so each slice is 2n floats;
        // they are distinct (a shared and an exclusive borrow).
        unsafe { self.run(input.as_ptr().cast(), output.as_mut_ptr().cast()) };
        true
    }

    /// [`Self::process`] of the `n` complex values packed in pairs in `input` (`2n`
    /// floats: real, imaginary, ...), such as `2n` real samples.
    pub(crate) fn process_samples(&self, input: &[f32], output: &mut [Complex<f32>]) -> bool {
        if input.len() != 2 * self.n || output.len() != self.n {
            return false;
        }
        // SAFETY: 2n floats each, distinct borrows.
        unsafe { self.run(input.as_ptr(), output.as_mut_ptr().cast()) };
        true
    }

    /// [`Self::process`] with the output packed in pairs in `output` (`2n` floats).
    pub(crate) fn process_to_samples(&self, input: &[Complex<f32>], output: &mut [f32]) -> bool {
        if input.len() != self.n || output.len() != 2 * self.n {
            return false;
        }
        // SAFETY: 2n floats each, distinct borrows.
        unsafe { self.run(input.as_ptr().cast(), output.as_mut_ptr()) };
        true
    }

    /// # Safety
    /// `input` and `output` point to `2·n` readable and writable floats, not overlapping.
    unsafe fn run(&self, input: *const f32, output: *mut f32) {
        let tw = &self.twiddles[..];
        // The kernel of this size and direction in one build (`avx` or `portable`).
        macro_rules! by_size {
            ($build:ident) => {
                match (self.n, self.inverse) {
                    (80, false) => $build::transform::<1, false>(tw, input, output),
                    (80, true) => $build::transform::<1, true>(tw, input, output),
                    (160, false) => $build::transform::<2, false>(tw, input, output),
                    (160, true) => $build::transform::<2, true>(tw, input, output),
                    (320, false) => $build::transform::<4, false>(tw, input, output),
                    (320, true) => $build::transform::<4, true>(tw, input, output),
                    (480, false) => $build::transform::<6, false>(tw, input, output),
                    (480, true) => $build::transform::<6, true>(tw, input, output),
                    (960, false) => $build::transform::<12, false>(tw, input, output),
                    (960, true) => $build::transform::<12, true>(tw, input, output),
                    // `new` admits only the sizes above.
                    _ => {}
                }
            };
        }
        crate::processing::simd::avx2_or_portable!(
            by_size!(avx),
            // SAFETY: the caller's contract; the twiddles are this size's.
            unsafe { by_size!(portable) }
        )
    }
}

/// The transforms over a vector type `V` of four complex values and its operations
/// (`add`, `sub`, `scale`, `neg_i`, `pos_i`, `cmul`, `transpose`, `load`, `store`,
/// `zero`): the first attributes go on every small transform (always inlined), the
/// second on the entry point `transform` (the AVX2 build's target feature).
macro_rules! transforms {
    ([$(#[$attr:meta])*] [$(#[$entry:meta])*]) => {
        /// Multiplies by `W_4 = ∓i` (forwards `−i`, backwards `+i`).
        $(#[$attr])*
        fn rot<const INV: bool>(v: V) -> V {
            if INV { pos_i(v) } else { neg_i(v) }
        }

        $(#[$attr])*
        fn dft3<const INV: bool>(x0: V, x1: V, x2: V) -> [V; 3] {
            let t = add(x1, x2);
            let a = add(x0, scale(t, -0.5));
            let b = rot::<INV>(scale(sub(x1, x2), S3));
            [add(x0, t), add(a, b), sub(a, b)]
        }

        $(#[$attr])*
        fn dft4<const INV: bool>(x0: V, x1: V, x2: V, x3: V) -> [V; 4] {
            let (a, b) = (add(x0, x2), sub(x0, x2));
            let (c, d) = (add(x1, x3), rot::<INV>(sub(x1, x3)));
            [add(a, c), add(b, d), sub(a, c), sub(b, d)]
        }

        $(#[$attr])*
        fn dft5<const INV: bool>(x: [V; 5]) -> [V; 5] {
            let (t1, t2) = (add(x[1], x[4]), add(x[2], x[3]));
            let (t3, t4) = (sub(x[1], x[4]), sub(x[2], x[3]));
            let a1 = add(add(x[0], scale(t1, C5_1)), scale(t2, C5_2));
            let a2 = add(add(x[0], scale(t1, C5_2)), scale(t2, C5_1));
            let b1 = rot::<INV>(add(scale(t3, S5_1), scale(t4, S5_2)));
            let b2 = rot::<INV>(sub(scale(t3, S5_2), scale(t4, S5_1)));
            [add(add(x[0], t1), t2), add(a1, b1), add(a2, b2), sub(a2, b2), sub(a1, b1)]
        }

        $(#[$attr])*
        fn dft8<const INV: bool>(x: [V; 8]) -> [V; 8] {
            let e = dft4::<INV>(x[0], x[2], x[4], x[6]);
            let o = dft4::<INV>(x[1], x[3], x[5], x[7]);
            // W_8 = (1 ∓ i)/√2, W_8² = ∓i, W_8³ = ∓i·W_8.
            let o1 = scale(add(o[1], rot::<INV>(o[1])), R2);
            let o2 = rot::<INV>(o[2]);
            let o3 = rot::<INV>(scale(add(o[3], rot::<INV>(o[3])), R2));
            [
                add(e[0], o[0]),
                add(e[1], o1),
                add(e[2], o2),
                add(e[3], o3),
                sub(e[0], o[0]),
                sub(e[1], o1),
                sub(e[2], o2),
                sub(e[3], o3),
            ]
        }

        /// `v·(c ∓ i·s)` = `c·v + s·(∓i·v)`.
        $(#[$attr])*
        fn turn<const INV: bool>(v: V, c: f32, s: f32) -> V {
            add(scale(v, c), scale(rot::<INV>(v), s))
        }

        /// 16 points as two 8-point halves (even and odd inputs), the odd one's bin `k`
        /// turned by `W_16^k`: `W_16^(k+4) = ∓i·W_16^k`, `W_16² = W_8`.
        $(#[$attr])*
        fn dft16<const INV: bool>(x: [V; 16]) -> [V; 16] {
            let e = dft8::<INV>([x[0], x[2], x[4], x[6], x[8], x[10], x[12], x[14]]);
            let o = dft8::<INV>([x[1], x[3], x[5], x[7], x[9], x[11], x[13], x[15]]);
            let w1 = turn::<INV>(o[1], C16, S16);
            let w2 = scale(add(o[2], rot::<INV>(o[2])), R2);
            let w3 = turn::<INV>(o[3], S16, C16);
            let w = [
                o[0],
                w1,
                w2,
                w3,
                rot::<INV>(o[4]),
                rot::<INV>(turn::<INV>(o[5], C16, S16)),
                rot::<INV>(scale(add(o[6], rot::<INV>(o[6])), R2)),
                rot::<INV>(turn::<INV>(o[7], S16, C16)),
            ];
            let mut y = [zero(); 16];
            for k in 0..8 {
                y[k] = add(e[k], w[k]);
                y[k + 8] = sub(e[k], w[k]);
            }
            y
        }

        /// 20 points as 4×5 (Good–Thomas): `n = (5·n1 + 4·n2) mod 20`, output
        /// `k = (5·k1 + 16·k2) mod 20`.
        $(#[$attr])*
        fn dft20<const INV: bool>(x: &mut [V; 20]) {
            let mut t = [[zero(); 5]; 4];
            for (n1, row) in t.iter_mut().enumerate() {
                let mut v = [zero(); 5];
                for (n2, v) in v.iter_mut().enumerate() {
                    *v = x[(5 * n1 + 4 * n2) % 20];
                }
                *row = dft5::<INV>(v);
            }
            for k2 in 0..5 {
                let y = dft4::<INV>(t[0][k2], t[1][k2], t[2][k2], t[3][k2]);
                for (k1, y) in y.into_iter().enumerate() {
                    x[(5 * k1 + 16 * k2) % 20] = y;
                }
            }
        }

        /// The `N = 4·M·20`-point transform of `input` into `output` (see the module).
        ///
        /// # Safety
        /// `input` and `output` hold `2N` floats each and do not overlap; `tw` holds the
        /// `M·20` twiddles of this size and direction.
        $(#[$entry])*
        pub(super) unsafe fn transform<const M: usize, const INV: bool>(
            tw: &[super::Twiddle],
            input: *const f32,
            output: *mut f32,
        ) {
            let n1 = 4 * M;
            let tw = &tw[..M * 20];
            // Steps 1–3 per vector of n1; with M > 1 the transposed rows wait in the
            // output (row n1 of 20 values at 20·n1), which step 4 then transforms in place
            // column by column.
            for j in 0..M {
                let mut v = [zero(); 20];
                for (r, v) in v.iter_mut().enumerate() {
                    // SAFETY: 2·(n1·r + 4j) + 8 ≤ 2N.
                    *v = unsafe { load(input.add(2 * (n1 * r + 4 * j))) };
                }
                dft20::<INV>(&mut v);
                for k2 in 1..20 {
                    v[k2] = cmul(v[k2], &tw[j * 20 + k2]);
                }
                for b in 0..5 {
                    let rows = transpose(v[4 * b], v[4 * b + 1], v[4 * b + 2], v[4 * b + 3]);
                    if M == 1 {
                        let y = dft4::<INV>(rows[0], rows[1], rows[2], rows[3]);
                        for (k1, y) in y.into_iter().enumerate() {
                            // SAFETY: 2·(20·k1 + 4b) + 8 ≤ 2·80.
                            unsafe { store(output.add(2 * (20 * k1 + 4 * b)), y) };
                        }
                    } else {
                        for (l, row) in rows.into_iter().enumerate() {
                            // SAFETY: 2·(20·(4j + l) + 4b) + 8 ≤ 2N.
                            unsafe { store(output.add(2 * (20 * (4 * j + l) + 4 * b)), row) };
                        }
                    }
                }
            }
            if M == 1 {
                return;
            }
            for b in 0..5 {
                if M == 2 {
                    let mut x = [zero(); 8];
                    for (r, x) in x.iter_mut().enumerate() {
                        // SAFETY: within the 2N floats, as above.
                        *x = unsafe { load(output.add(2 * (20 * r + 4 * b))) };
                    }
                    for (k1, y) in dft8::<INV>(x).into_iter().enumerate() {
                        // SAFETY: as above.
                        unsafe { store(output.add(2 * (20 * k1 + 4 * b)), y) };
                    }
                } else if M == 4 {
                    let mut x = [zero(); 16];
                    for (r, x) in x.iter_mut().enumerate() {
                        // SAFETY: within the 2N floats (M = 4, N = 320).
                        *x = unsafe { load(output.add(2 * (20 * r + 4 * b))) };
                    }
                    for (k1, y) in dft16::<INV>(x).into_iter().enumerate() {
                        // SAFETY: as above.
                        unsafe { store(output.add(2 * (20 * k1 + 4 * b)), y) };
                    }
                } else if M == 6 {
                    // 24 points as 8×3 (Good–Thomas): `n = (3·n1 + 8·n2) mod 24`, output
                    // `k = (9·k1 + 16·k2) mod 24`, read from and written to the output
                    // directly: the 3-point transforms' results wait in `t`, with no copy
                    // of the column in and out.
                    let at = |r: usize| 2 * (20 * r + 4 * b);
                    let mut t = [[zero(); 3]; 8];
                    for (n1, row) in t.iter_mut().enumerate() {
                        // SAFETY: within the 2N floats (M = 6, N = 480).
                        *row = unsafe {
                            dft3::<INV>(
                                load(output.add(at(3 * n1))),
                                load(output.add(at((3 * n1 + 8) % 24))),
                                load(output.add(at((3 * n1 + 16) % 24))),
                            )
                        };
                    }
                    for k2 in 0..3 {
                        let mut v = [zero(); 8];
                        for (n1, v) in v.iter_mut().enumerate() {
                            *v = t[n1][k2];
                        }
                        for (k1, y) in dft8::<INV>(v).into_iter().enumerate() {
                            // SAFETY: as above.
                            unsafe { store(output.add(at((9 * k1 + 16 * k2) % 24)), y) };
                        }
                    }
                } else {
                    // 48 points as 16×3 (Good–Thomas): `n = (3·n1 + 16·n2) mod 48`,
                    // output `k = (33·k1 + 16·k2) mod 48` (33 = 3·(3⁻¹ mod 16), 16 =
                    // 16·(16⁻¹ mod 3)). The three 16-point transforms first, each read
                    // from the output directly, their results waiting in `u`; then the
                    // sixteen 3-point ones, each stored to the output directly. (The other
                    // order keeps 48 vectors live into 16-point transforms, which spill:
                    // twice the instructions.)
                    // The index maps as tables of float offsets: the loops need not be
                    // unrolled for their indices to cost no arithmetic.
                    const fn offsets(k: usize, l: usize) -> [[usize; 16]; 3] {
                        let mut o = [[0; 16]; 3];
                        let mut j = 0;
                        while j < 3 {
                            let mut i = 0;
                            while i < 16 {
                                o[j][i] = 40 * ((k * i + l * j) % 48);
                                i += 1;
                            }
                            j += 1;
                        }
                        o
                    }
                    const INPUT: [[usize; 16]; 3] = offsets(3, 16);
                    const OUTPUT: [[usize; 16]; 3] = offsets(33, 16);
                    let column = output.wrapping_add(8 * b);
                    let mut u = [[zero(); 16]; 3];
                    for (u, rows) in u.iter_mut().zip(&INPUT) {
                        let mut v = [zero(); 16];
                        for (v, &at) in v.iter_mut().zip(rows) {
                            // SAFETY: within the 2N floats (M = 12, N = 960: row r of
                            // the column b at 2·(20·r + 4b), r < 48).
                            *v = unsafe { load(column.add(at)) };
                        }
                        *u = dft16::<INV>(v);
                    }
                    for k1 in 0..16 {
                        let y = dft3::<INV>(u[0][k1], u[1][k1], u[2][k1]);
                        for (y, rows) in y.into_iter().zip(&OUTPUT) {
                            // SAFETY: as above.
                            unsafe { store(column.add(rows[k1]), y) };
                        }
                    }
                }
            }
        }
    };
}

/// The AVX2 build: `V` is one 256-bit vector.
///
/// The operations are plain functions always inlined, not `#[target_feature]` ones
/// (which cannot be `inline(always)`, and which LLVM left as calls, with the vectors
/// passed through memory: twice the instructions). They are private to this module and
/// only reached through [`avx::transform`], which is built with AVX2 and only called once
/// the CPU is known to run it; that is what makes each `unsafe` intrinsic call in them
/// sound.
#[cfg(target_arch = "x86_64")]
mod avx {
    use super::{Twiddle, C16, C5_1, C5_2, R2, S16, S3, S5_1, S5_2};
    use core::arch::x86_64::*;

    type V = __m256;

    #[inline(always)]
    fn zero() -> V {
        // SAFETY: reached only from `transform` (AVX2; see the module), like every
        // operation below.
        unsafe { _mm256_setzero_ps() }
    }

    #[inline(always)]
    fn add(a: V, b: V) -> V {
        // SAFETY: see `zero`.
        unsafe { _mm256_add_ps(a, b) }
    }

    #[inline(always)]
    fn sub(a: V, b: V) -> V {
        // SAFETY: see `zero`.
        unsafe { _mm256_sub_ps(a, b) }
    }

    #[inline(always)]
    fn scale(a: V, k: f32) -> V {
        // SAFETY: see `zero`.
        unsafe { _mm256_mul_ps(a, _mm256_set1_ps(k)) }
    }

    /// `−i·v`: `(re, im)` → `(im, −re)`.
    #[inline(always)]
    fn neg_i(v: V) -> V {
        // SAFETY: see `zero`.
        unsafe {
            let swapped = _mm256_permute_ps::<0b10_11_00_01>(v);
            _mm256_xor_ps(
                swapped,
                _mm256_setr_ps(0.0, -0.0, 0.0, -0.0, 0.0, -0.0, 0.0, -0.0),
            )
        }
    }

    /// `+i·v`: `(re, im)` → `(−im, re)`.
    #[inline(always)]
    fn pos_i(v: V) -> V {
        // SAFETY: see `zero`.
        unsafe {
            let swapped = _mm256_permute_ps::<0b10_11_00_01>(v);
            _mm256_xor_ps(
                swapped,
                _mm256_setr_ps(-0.0, 0.0, -0.0, 0.0, -0.0, 0.0, -0.0, 0.0),
            )
        }
    }

    /// `a·w` per lane: `(a.re·w.re − a.im·w.im, a.im·w.re + a.re·w.im)`.
    #[inline(always)]
    fn cmul(a: V, w: &Twiddle) -> V {
        // SAFETY: see `zero`; each table is 8 floats, 32-byte aligned (`Twiddle` is
        // `align(32)`).
        unsafe {
            let (re, im) = (_mm256_load_ps(w.re.as_ptr()), _mm256_load_ps(w.im.as_ptr()));
            let swapped = _mm256_permute_ps::<0b10_11_00_01>(a);
            _mm256_addsub_ps(_mm256_mul_ps(a, re), _mm256_mul_ps(swapped, im))
        }
    }

    /// The 4×4 transpose of complex values (row `r` = vector `r`).
    #[inline(always)]
    fn transpose(r0: V, r1: V, r2: V, r3: V) -> [V; 4] {
        // SAFETY: see `zero`.
        unsafe {
            let (r0, r1) = (_mm256_castps_pd(r0), _mm256_castps_pd(r1));
            let (r2, r3) = (_mm256_castps_pd(r2), _mm256_castps_pd(r3));
            let t0 = _mm256_unpacklo_pd(r0, r1);
            let t1 = _mm256_unpackhi_pd(r0, r1);
            let t2 = _mm256_unpacklo_pd(r2, r3);
            let t3 = _mm256_unpackhi_pd(r2, r3);
            [
                _mm256_castpd_ps(_mm256_permute2f128_pd::<0x20>(t0, t2)),
                _mm256_castpd_ps(_mm256_permute2f128_pd::<0x20>(t1, t3)),
                _mm256_castpd_ps(_mm256_permute2f128_pd::<0x31>(t0, t2)),
                _mm256_castpd_ps(_mm256_permute2f128_pd::<0x31>(t1, t3)),
            ]
        }
    }

    /// # Safety
    /// `p` points to 8 readable floats.
    #[inline(always)]
    unsafe fn load(p: *const f32) -> V {
        // SAFETY: the caller's contract; AVX2, see `zero`.
        unsafe { _mm256_loadu_ps(p) }
    }

    /// # Safety
    /// `p` points to 8 writable floats.
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: V) {
        // SAFETY: the caller's contract; AVX2, see `zero`.
        unsafe { _mm256_storeu_ps(p, v) }
    }

    transforms!([#[inline(always)]] [#[target_feature(enable = "avx2")]]);
}

/// The portable build: `V` is eight floats, the same operations lane by lane.
mod portable {
    use super::{Twiddle, C16, C5_1, C5_2, R2, S16, S3, S5_1, S5_2};

    type V = [f32; 8];

    #[inline(always)]
    fn zero() -> V {
        [0.0; 8]
    }

    #[inline(always)]
    fn add(a: V, b: V) -> V {
        let mut o = [0.0; 8];
        for ((o, a), b) in o.iter_mut().zip(a).zip(b) {
            *o = a + b;
        }
        o
    }

    #[inline(always)]
    fn sub(a: V, b: V) -> V {
        let mut o = [0.0; 8];
        for ((o, a), b) in o.iter_mut().zip(a).zip(b) {
            *o = a - b;
        }
        o
    }

    #[inline(always)]
    fn scale(a: V, k: f32) -> V {
        let mut o = [0.0; 8];
        for (o, a) in o.iter_mut().zip(a) {
            *o = a * k;
        }
        o
    }

    #[inline(always)]
    fn neg_i(v: V) -> V {
        let mut o = [0.0; 8];
        for (o, v) in o.chunks_exact_mut(2).zip(v.chunks_exact(2)) {
            o[0] = v[1];
            o[1] = -v[0];
        }
        o
    }

    #[inline(always)]
    fn pos_i(v: V) -> V {
        let mut o = [0.0; 8];
        for (o, v) in o.chunks_exact_mut(2).zip(v.chunks_exact(2)) {
            o[0] = -v[1];
            o[1] = v[0];
        }
        o
    }

    #[inline(always)]
    fn cmul(a: V, w: &Twiddle) -> V {
        let mut o = [0.0; 8];
        for (p, o) in o.chunks_exact_mut(2).enumerate() {
            let (re, im) = (a[2 * p], a[2 * p + 1]);
            o[0] = re * w.re[2 * p] - im * w.im[2 * p];
            o[1] = im * w.re[2 * p + 1] + re * w.im[2 * p + 1];
        }
        o
    }

    #[inline(always)]
    fn transpose(r0: V, r1: V, r2: V, r3: V) -> [V; 4] {
        let rows = [r0, r1, r2, r3];
        let mut o = [[0.0; 8]; 4];
        for (c, o) in o.iter_mut().enumerate() {
            for (r, row) in rows.iter().enumerate() {
                o[2 * r] = row[2 * c];
                o[2 * r + 1] = row[2 * c + 1];
            }
        }
        o
    }

    /// # Safety
    /// `p` points to 8 readable floats.
    #[inline(always)]
    unsafe fn load(p: *const f32) -> V {
        // SAFETY: the caller's contract (unaligned: read as an array of floats).
        unsafe { p.cast::<V>().read_unaligned() }
    }

    /// # Safety
    /// `p` points to 8 writable floats.
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: V) {
        // SAFETY: the caller's contract.
        unsafe { p.cast::<V>().write_unaligned(v) }
    }

    transforms!([#[inline(always)]] [#[inline(always)]]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uniform(len: usize, seed: u64, amplitude: f32) -> Vec<Complex<f32>> {
        let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * amplitude
        };
        (0..len).map(|_| Complex::new(next(), next())).collect()
    }

    /// The transform in f64, by definition.
    fn dft(x: &[Complex<f32>], inverse: bool) -> Vec<(f64, f64)> {
        let n = x.len();
        let sign = if inverse { 1.0 } else { -1.0 };
        (0..n)
            .map(|k| {
                x.iter().enumerate().fold((0.0, 0.0), |(re, im), (m, v)| {
                    let phase = sign * 2.0 * std::f64::consts::PI * ((k * m) % n) as f64 / n as f64;
                    let (s, c) = phase.sin_cos();
                    let (vr, vi) = (f64::from(v.re), f64::from(v.im));
                    (re + vr * c - vi * s, im + vr * s + vi * c)
                })
            })
            .collect()
    }

    #[test]
    fn each_size_and_direction_is_the_discrete_fourier_transform() {
        for n in SIZES {
            for inverse in [false, true] {
                let fft = FixedFft::new(n, inverse).expect("a supported size");
                assert_eq!(fft.len(), n);
                for (seed, amplitude) in [(1, 1.0f32), (2, 3e4)] {
                    let x = uniform(n, seed + n as u64, amplitude);
                    let mut y = vec![Complex::new(0.0f32, 0.0); n];
                    assert!(fft.process(&x, &mut y));
                    let want = dft(&x, inverse);
                    let peak = want.iter().map(|(r, i)| r.hypot(*i)).fold(0.0, f64::max);
                    for (k, (got, (re, im))) in y.iter().zip(&want).enumerate() {
                        let err = (f64::from(got.re) - re).hypot(f64::from(got.im) - im);
                        assert!(
                            err <= 1e-6 * peak,
                            "{n} points, inverse {inverse}, bin {k}: {got} against ({re}, {im})"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn impulses_give_the_twiddles_exactly_where_they_must() {
        // An impulse at m: bin k is W^(mk), so every bin has magnitude 1 and bin 1's phase
        // says which input the transform read.
        for n in SIZES {
            let fft = FixedFft::new(n, false).expect("a supported size");
            for m in [0, 1, 7, n / 2, n - 1] {
                let mut x = vec![Complex::new(0.0f32, 0.0); n];
                x[m] = Complex::new(1.0, 0.0);
                let mut y = vec![Complex::new(0.0f32, 0.0); n];
                assert!(fft.process(&x, &mut y));
                let phase = -2.0 * std::f64::consts::PI * m as f64 / n as f64;
                assert!((f64::from(y[1].re) - phase.cos()).abs() < 1e-6, "{n}: {m}");
                assert!((f64::from(y[1].im) - phase.sin()).abs() < 1e-6, "{n}: {m}");
                assert!(y.iter().all(|v| (v.norm() - 1.0).abs() < 1e-5), "{n}: {m}");
            }
        }
    }

    #[test]
    fn forwards_then_backwards_is_n_times_the_input() {
        for n in SIZES {
            let (f, b) = (
                FixedFft::new(n, false).unwrap(),
                FixedFft::new(n, true).unwrap(),
            );
            let x = uniform(n, 9, 1.0);
            let (mut y, mut z) = (
                vec![Complex::new(0.0f32, 0.0); n],
                vec![Complex::new(0.0f32, 0.0); n],
            );
            assert!(f.process(&x, &mut y) && b.process(&y, &mut z));
            for (a, b) in x.iter().zip(&z) {
                assert!((a * n as f32 - b).norm() < 1e-4 * n as f32);
            }
        }
    }

    #[test]
    fn the_builds_give_the_same_bits() {
        use crate::processing::simd::{both_builds, same_bits};
        for n in SIZES {
            for inverse in [false, true] {
                let fft = FixedFft::new(n, inverse).unwrap();
                for (seed, amplitude) in [(3, 1.0f32), (4, 3e4), (5, 1e-18), (6, 1e15)] {
                    let x = uniform(n, seed, amplitude);
                    let run = || {
                        let mut y = vec![Complex::new(0.0f32, 0.0); n];
                        assert!(fft.process(&x, &mut y));
                        y.iter().flat_map(|c| [c.re, c.im]).collect::<Vec<f32>>()
                    };
                    let (wide, narrow) = both_builds(run);
                    assert!(
                        same_bits(&wide, &narrow),
                        "{n} points, inverse {inverse}, amplitude {amplitude}"
                    );
                }
            }
        }
    }

    #[test]
    fn other_sizes_and_mismatched_slices_are_refused() {
        assert!(FixedFft::new(64, false).is_none());
        assert!(FixedFft::new(0, true).is_none());
        let fft = FixedFft::new(80, false).unwrap();
        let x = vec![Complex::new(1.0f32, 0.0); 80];
        let mut short = vec![Complex::new(0.0f32, 0.0); 79];
        assert!(!fft.process(&x, &mut short));
        assert!(short.iter().all(|c| c.re == 0.0));
        assert!(!fft.process(&x[..40], &mut vec![Complex::new(0.0f32, 0.0); 80]));
    }
}
