//! Wider vectors where the CPU has them.
//!
//! The voice-processing kernels are loops over spectrum bins and samples written so the
//! compiler vectorises them. Built for the x86-64 baseline they use 128-bit SSE2
//! vectors; a CPU with AVX2 runs 256-bit ones. Each hot kernel is therefore compiled
//! twice, the second time with AVX2 enabled (`#[target_feature]`), and picks one per
//! call with [`avx2`] (std's cached CPU check: one load). Only AVX2 is enabled, not FMA, so the compiler
//! cannot fuse a multiply and an add: both builds round every operation the same way
//! and give the same bits (tests compare them), and a gateway's output does not depend
//! on which machine it runs on. On other architectures the portable build is the only
//! one.
//!
//! Which kernels, each measured on the virtual clock on the development machine
//! (PERF.md): the noise suppressor's block (analysis, transforms, noise tracking, gains),
//! voice-pcmu at 2,000 calls +17% calls per core; the echo canceller's block and its
//! partitioned filter, aec-pcmu at 400 calls +6%; the AGC's block, 244-254 -> 127-148 ns
//! per 20 ms frame at 8 kHz (64 AGCs in turn, in cache). The voice activity detector's
//! and DTMF detector's kernels built the same way measured no gain (the Goertzel
//! recurrences are bound by their latency, not their width), so they have one build (the
//! detector now runs each half-block as two independent chains instead, which halved its
//! time). The echo canceller's partitioned filter and update are hand-written AVX2 complex
//! kernels (`aec::avx2`), exact to the portable loops' rounding, and so are the real
//! transforms' split and merge (`ns::avx2_split`), which the suppressor, the detector's
//! analysis and the echo canceller share.
//!
//! Three kernels have a third build, with AVX-512 (F, BW, DQ, VL) enabled, taken where
//! [`avx512`] says the CPU runs it: the noise suppressor's block (voice-pcmu at 2,000
//! calls +5–8% calls per core on a Zen 5 VM), the echo canceller's block (aec-pcmu at 500
//! calls +4–5%) and the AGC's block (154 -> 134 ns per 20 ms frame at 8 kHz). The same
//! bodies again, so the same bits (tests compare all three where the CPU has AVX-512).
//! Built so, the NS's analysis measured no clear gain (−2.5% to +3.6%) and keeps two
//! builds. On a CPU that splits 512-bit operations in two (Zen 4) the gain may be smaller;
//! [`limit_to_avx2`] turns these builds off to compare.

use std::sync::atomic::{AtomicU8, Ordering};

/// The widest builds kernels may take: [`WIDEST`], [`AT_MOST_AVX2`] or [`PORTABLE`]
/// (set by [`force_portable`] and [`limit_to_avx2`]).
static LIMIT: AtomicU8 = AtomicU8::new(WIDEST);
const WIDEST: u8 = 0;
const AT_MOST_AVX2: u8 = 1;
const PORTABLE: u8 = 2;

/// True when the AVX2 build of a kernel may run: the CPU has AVX2 and
/// [`force_portable`] is off. Real-time safe (two atomic loads once std has detected the
/// CPU, which [`warm_up`] makes sure of).
#[inline(always)]
pub fn avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && LIMIT.load(Ordering::Relaxed) < PORTABLE
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// True when the AVX-512 build of a kernel may run: the CPU has AVX-512 F, BW, DQ and VL
/// (every x86-64 server core with AVX-512: Intel since Skylake-SP, AMD since Zen 4) and
/// neither [`force_portable`] nor [`limit_to_avx2`] is on. Real-time safe, as [`avx2`].
#[inline(always)]
pub fn avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512dq")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx2")
            && LIMIT.load(Ordering::Relaxed) == WIDEST
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Runs the CPU detection once, on the control plane, so the first real-time call finds
/// it cached. Returns whether the AVX2 builds will run.
pub fn warm_up() -> bool {
    avx512();
    avx2()
}

/// Makes every kernel take its portable build (`true`) or the widest the CPU runs
/// (`false`, the default), for the whole process. Every build gives the same output;
/// this is for tests that check that, and for measuring the difference.
pub fn force_portable(on: bool) {
    LIMIT.store(if on { PORTABLE } else { WIDEST }, Ordering::Relaxed);
}

/// Makes the kernels that have an AVX-512 build take their AVX2 one instead (`true`), or
/// the widest again (`false`), for the whole process; as [`force_portable`], for tests
/// and measurements.
pub fn limit_to_avx2(on: bool) {
    LIMIT.store(if on { AT_MOST_AVX2 } else { WIDEST }, Ordering::Relaxed);
}

/// `avx2_or_portable!(wide, portable)`: `wide`, a call of a kernel's AVX2 build (an
/// `unsafe fn` with `#[target_feature(enable = "avx2")]`), when [`avx2`] says the CPU
/// runs it, else `portable`, the call of the same body's baseline build. Every kernel
/// dispatches through this, so the check that makes those calls sound is in one place.
/// Elsewhere than x86-64, `portable` only.
macro_rules! avx2_or_portable {
    ($wide:expr, $portable:expr $(,)?) => {{
        #[cfg(target_arch = "x86_64")]
        let out = if $crate::processing::simd::avx2() {
            // SAFETY: the CPU runs AVX2 (just checked), all an AVX2 build requires.
            unsafe { $wide }
        } else {
            $portable
        };
        #[cfg(not(target_arch = "x86_64"))]
        let out = $portable;
        out
    }};
}
pub(crate) use avx2_or_portable;

/// `avx512_avx2_or_portable!(widest, wide, portable)`: as [`avx2_or_portable`], with a
/// call of the kernel's AVX-512 build first, taken when [`avx512`] says the CPU runs it.
macro_rules! avx512_avx2_or_portable {
    ($widest:expr, $wide:expr, $portable:expr $(,)?) => {{
        #[cfg(target_arch = "x86_64")]
        let out = if $crate::processing::simd::avx512() {
            // SAFETY: the CPU runs AVX-512 F/BW/DQ/VL and AVX2 (just checked), all an
            // AVX-512 build requires.
            unsafe { $widest }
        } else {
            $crate::processing::simd::avx2_or_portable!($wide, $portable)
        };
        #[cfg(not(target_arch = "x86_64"))]
        let out = $portable;
        out
    }};
}
pub(crate) use avx512_avx2_or_portable;

/// AVX2 building blocks the hand-written kernels share (G.711 frames and energies, the
/// concealer's frame energy, the complex bins of the transforms and the echo canceller).
/// Callable only from code built with AVX2 enabled.
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2_parts {
    use core::arch::x86_64::*;
    use rustfft::num_complex::Complex;

    /// The four complex bins at `z` (interleaved `re, im`: one 256-bit vector).
    ///
    /// # Safety
    /// The CPU must run AVX2, and `z` must point to four readable bins (8 contiguous
    /// `f32`, what the unaligned load reads).
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) unsafe fn load_bins(z: *const Complex<f32>) -> __m256 {
        // SAFETY: the caller's contract.
        unsafe { _mm256_loadu_ps(z.cast()) }
    }

    /// `(re, im)` → `(im, re)` in each of the four bins of `v`.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) fn swap_re_im(v: __m256) -> __m256 {
        _mm256_permute_ps::<0b10_11_00_01>(v)
    }

    /// `re² + im²` of the four bins of `v`, in bin order, rounded as `norm_sqr` rounds it
    /// (the two squares, then one add: a horizontal add of the squares).
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) fn norm_sqr4(v: __m256) -> __m128 {
        let sq = _mm256_mul_ps(v, v);
        // [n0 n1 n0 n1 | n2 n3 n2 n3]: the first pair of each 128-bit half, joined.
        let sums = _mm256_hadd_ps(sq, sq);
        let packed = _mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(sums));
        _mm256_castps256_ps128(_mm256_castpd_ps(packed))
    }

    /// A 16-byte table in both 128-bit halves, for byte shuffles (`_mm256_shuffle_epi8`
    /// looks up within each half).
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) fn table16(t: [u8; 16]) -> __m256i {
        // SAFETY: `t` is 16 bytes, what an unaligned 128-bit load reads.
        _mm256_broadcastsi128_si256(unsafe { _mm_loadu_si128(t.as_ptr().cast()) })
    }

    /// `acc` (four u64 lanes) plus the eight u32 lanes of `x`, widened: exact.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) fn add_u32_to_u64(acc: __m256i, x: __m256i) -> __m256i {
        let zero = _mm256_setzero_si256();
        let acc = _mm256_add_epi64(acc, _mm256_unpacklo_epi32(x, zero));
        _mm256_add_epi64(acc, _mm256_unpackhi_epi32(x, zero))
    }

    /// The sum of the four u64 lanes of `acc`.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) fn sum_u64(acc: __m256i) -> u64 {
        let mut lanes = [0u64; 4];
        // SAFETY: `lanes` is 32 bytes, what an unaligned 256-bit store writes.
        unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), acc) };
        lanes.iter().sum()
    }
}

/// Serialises the tests that switch [`force_portable`] (a process-wide setting), so one
/// test's switch does not land inside another's comparison. Test builds only.
#[cfg(test)]
#[allow(clippy::disallowed_types)] // tests only: never on a lane
fn test_switch_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `run` with the widest builds, then with at most `limit` (switching back even if
/// `run` panics), and returns both results. The caller holds the test lock.
#[cfg(test)]
fn widest_then<R>(limit: u8, mut run: impl FnMut() -> R) -> (R, R) {
    struct Restore;
    impl Drop for Restore {
        fn drop(&mut self) {
            LIMIT.store(WIDEST, Ordering::Relaxed);
        }
    }
    let widest = run();
    let _restore = Restore;
    LIMIT.store(limit, Ordering::Relaxed);
    let limited = run();
    (widest, limited)
}

/// Runs `run` with the widest builds the CPU runs (AVX-512 or AVX2), then with the
/// portable ones (holding the test lock), and returns both results, for the tests that
/// compare the builds of a kernel. Test builds only.
#[cfg(test)]
pub(crate) fn both_builds<R>(run: impl FnMut() -> R) -> (R, R) {
    let _switch = test_switch_lock();
    widest_then(PORTABLE, run)
}

/// Runs `run` with the AVX-512 builds, then with the AVX2 ones, and returns both
/// results; `None` when this CPU has no AVX-512 (there is then nothing to compare). As
/// [`both_builds`], holding the test lock. Test builds only.
#[cfg(test)]
pub(crate) fn avx512_and_avx2<R>(run: impl FnMut() -> R) -> Option<(R, R)> {
    let _switch = test_switch_lock();
    avx512().then(|| widest_then(AT_MOST_AVX2, run))
}

/// True when `a` and `b` hold the same floats bit for bit. Test builds only.
#[cfg(test)]
pub(crate) fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forcing_the_portable_builds_turns_the_avx2_ones_off() {
        let _switch = test_switch_lock();
        force_portable(true);
        assert!(!avx2());
        force_portable(false);
        #[cfg(target_arch = "x86_64")]
        assert_eq!(avx2(), std::arch::is_x86_feature_detected!("avx2"));
        let had_avx512 = avx512();
        limit_to_avx2(true);
        assert!(!avx512());
        #[cfg(target_arch = "x86_64")]
        assert_eq!(avx2(), std::arch::is_x86_feature_detected!("avx2"));
        limit_to_avx2(false);
        assert_eq!(avx512(), had_avx512);
    }
}
