//! The sample-rate converter, measured through its public API: exact frame counts,
//! streaming, latency, passband ripple, alias and image rejection, round-trip SNR, stereo
//! independence, no allocation in `process`, and misuse that must not panic.
//!
//! Quality figures are printed; `cargo test --release --test resample -- --nocapture`
//! shows them.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::f64::consts::PI;

use media_core::processing::format::resample::{
    ResampleError, Resampler, PASSBAND_EDGE, SUPPORTED_RATES_HZ,
};

// ---------------------------------------------------------------------------------------
// Allocation counting, per thread (tests run in parallel).

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

fn count_alloc() {
    let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
}

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        count_alloc();
        // SAFETY: same contract as ours.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        count_alloc();
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        count_alloc();
        // SAFETY: same contract as ours.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCS.with(|c| c.get())
}

// ---------------------------------------------------------------------------------------
// Signals and measurements.

/// Every ordered pair of distinct supported rates.
fn pairs() -> Vec<(u32, u32)> {
    let mut v = Vec::new();
    for &a in &SUPPORTED_RATES_HZ {
        for &b in &SUPPORTED_RATES_HZ {
            if a != b {
                v.push((a, b));
            }
        }
    }
    v
}

fn tone(freq_hz: f64, rate_hz: u32, amplitude: f64, len: usize) -> Vec<i16> {
    (0..len)
        .map(|n| {
            (amplitude * (2.0 * PI * freq_hz * n as f64 / f64::from(rate_hz)).sin()).round() as i16
        })
        .collect()
}

/// Converts `input` (mono) in 20 ms frames and returns the whole output.
fn convert(from_hz: u32, to_hz: u32, input: &[i16]) -> Vec<i16> {
    let frame = from_hz as usize / 50;
    let mut r = Resampler::new(from_hz, to_hz, 1, frame).unwrap();
    let mut out = Vec::new();
    let mut buf = vec![0i16; r.max_output_len()];
    for chunk in input.chunks(frame) {
        let n = r.process(chunk, &mut buf);
        out.extend_from_slice(&buf[..n]);
    }
    out
}

/// Least-squares fit of `a sin + b cos + dc` at `freq_hz`; returns the fitted amplitude
/// and the RMS of what the fit leaves.
fn fit(signal: &[i16], freq_hz: f64, rate_hz: u32) -> (f64, f64) {
    let w = 2.0 * PI * freq_hz / f64::from(rate_hz);
    // Normal equations for [sin, cos, 1].
    let mut m = [[0.0f64; 3]; 3];
    let mut v = [0.0f64; 3];
    for (n, &s) in signal.iter().enumerate() {
        let basis = [(w * n as f64).sin(), (w * n as f64).cos(), 1.0];
        for i in 0..3 {
            v[i] += basis[i] * f64::from(s);
            for j in 0..3 {
                m[i][j] += basis[i] * basis[j];
            }
        }
    }
    let x = solve3(m, v);
    let mut residual = 0.0;
    for (n, &s) in signal.iter().enumerate() {
        let model = x[0] * (w * n as f64).sin() + x[1] * (w * n as f64).cos() + x[2];
        residual += (f64::from(s) - model).powi(2);
    }
    (
        (x[0] * x[0] + x[1] * x[1]).sqrt(),
        (residual / signal.len() as f64).sqrt(),
    )
}

/// Solves `m x = v` by Cramer's rule (the 3 × 3 normal equations are well conditioned).
fn solve3(m: [[f64; 3]; 3], v: [f64; 3]) -> [f64; 3] {
    let det = |a: [[f64; 3]; 3]| {
        a[0][0] * (a[1][1] * a[2][2] - a[1][2] * a[2][1])
            - a[0][1] * (a[1][0] * a[2][2] - a[1][2] * a[2][0])
            + a[0][2] * (a[1][0] * a[2][1] - a[1][1] * a[2][0])
    };
    let d = det(m);
    std::array::from_fn(|col| {
        let mut a = m;
        for (row, &value) in a.iter_mut().zip(&v) {
            row[col] = value;
        }
        det(a) / d
    })
}

fn rms(signal: &[i16]) -> f64 {
    (signal.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / signal.len() as f64).sqrt()
}

/// The steady-state part of a signal of at least 250 ms: skips the start-up (filter
/// length plus latency, generously 50 ms) and keeps 200 ms.
fn steady(out: &[i16], rate_hz: u32) -> &[i16] {
    let skip = rate_hz as usize / 20;
    &out[skip..skip + rate_hz as usize / 5]
}

const AMPLITUDE: f64 = 16_000.0;

fn db(x: f64) -> f64 {
    20.0 * x.log10()
}

// ---------------------------------------------------------------------------------------
// Framing and streaming.

#[test]
fn fixed_10_and_20_ms_frames_give_exactly_the_corresponding_output_frames() {
    for &from in &SUPPORTED_RATES_HZ {
        for &to in &SUPPORTED_RATES_HZ {
            for channels in 1..=2 {
                for ms in [10usize, 20] {
                    let frame = from as usize * ms / 1000;
                    let expected = to as usize * ms / 1000 * channels;
                    let mut r = Resampler::new(from, to, channels, frame).unwrap();
                    assert!(r.max_output_len() >= expected);
                    let input = vec![1000i16; frame * channels];
                    let mut out = vec![0i16; r.max_output_len()];
                    for call in 0..25 {
                        assert_eq!(r.output_len(input.len()), expected);
                        let n = r.process(&input, &mut out);
                        assert_eq!(n, expected, "{from}->{to} ch{channels} {ms} ms call {call}");
                    }
                }
            }
        }
    }
}

/// A deterministic "speech-like" test signal: a few tones plus LCG noise.
fn test_signal(rate_hz: u32, len: usize, seed: u32) -> Vec<i16> {
    let mut s = seed;
    (0..len)
        .map(|n| {
            let t = n as f64 / f64::from(rate_hz);
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let noise = f64::from((s >> 16) as u16 as i16) / 8.0;
            (6000.0 * (2.0 * PI * 440.0 * t).sin() + 4000.0 * (2.0 * PI * 1777.0 * t).sin() + noise)
                .round() as i16
        })
        .collect()
}

#[test]
fn any_split_of_the_input_gives_the_same_output_as_one_long_call() {
    for (from, to) in pairs() {
        for channels in 1..=2 {
            let frames = from as usize / 5; // 200 ms
            let input = test_signal(from, frames * channels, from ^ to);
            // One call (converted internally in pieces of max_input_frames).
            let mut whole = Resampler::new(from, to, channels, 480.min(from as usize)).unwrap();
            let mut expected = vec![0i16; whole.output_len(input.len())];
            let n = whole.process(&input, &mut expected);
            assert_eq!(n, expected.len());
            assert_eq!(n, frames * to as usize / from as usize * channels);
            // Irregular pieces: empty, single frames, odd sizes, longer than max_input_frames.
            let mut r = Resampler::new(from, to, channels, 77).unwrap();
            let mut got = Vec::new();
            let mut out = vec![0i16; 4 * to as usize];
            let mut at = 0;
            let mut seed = 12345u32;
            while at < frames {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                let len = match seed >> 28 {
                    0 => 0,
                    1 => 1,
                    2 => 300,
                    _ => (seed >> 16) as usize % 90,
                }
                .min(frames - at);
                let piece = &input[at * channels..(at + len) * channels];
                let want = r.output_len(piece.len());
                let n = r.process(piece, &mut out);
                assert_eq!(n, want);
                got.extend_from_slice(&out[..n]);
                at += len;
            }
            assert!(
                got == expected,
                "{from}->{to} ch{channels}: split output differs"
            );
        }
    }
}

#[test]
fn equal_rates_copy_exactly_with_no_latency() {
    let input = test_signal(16_000, 640, 3);
    let mut r = Resampler::new(16_000, 16_000, 2, 320).unwrap();
    let mut out = vec![0i16; r.max_output_len()];
    assert_eq!(r.latency_samples(), 0);
    assert_eq!(r.process(&input, &mut out), 640);
    assert_eq!(out, input);
}

#[test]
fn reset_starts_a_new_stream() {
    let input = test_signal(8_000, 160, 9);
    let mut fresh = Resampler::new(8_000, 48_000, 1, 160).unwrap();
    let mut used = Resampler::new(8_000, 48_000, 1, 160).unwrap();
    let mut a = vec![0i16; 960];
    let mut b = vec![0i16; 960];
    used.process(&test_signal(8_000, 100, 4), &mut b);
    used.reset();
    assert_eq!(fresh.process(&input, &mut a), used.process(&input, &mut b));
    assert_eq!(a, b);
}

// ---------------------------------------------------------------------------------------
// Latency and DC.

#[test]
fn an_impulse_peaks_exactly_latency_samples_later() {
    for (from, to) in pairs() {
        let mut r = Resampler::new(from, to, 1, from as usize / 50).unwrap();
        let mut input = vec![0i16; from as usize / 10];
        input[0] = 20_000;
        let mut out = vec![0i16; r.output_len(input.len())];
        let n = r.process(&input, &mut out);
        let peak = (0..n).max_by_key(|&i| out[i]).unwrap();
        assert_eq!(peak, r.latency_samples(), "{from}->{to}");
        // The latency is a whole number of input samples too (the same time at both rates).
        assert_eq!(
            r.latency_samples() * from as usize % to as usize,
            0,
            "{from}->{to}"
        );
    }
}

#[test]
fn a_constant_input_comes_out_unchanged() {
    for (from, to) in pairs() {
        for value in [12_345i16, -32_768, 32_767, -1] {
            let input = vec![value; from as usize / 10];
            let out = convert(from, to, &input);
            // After the filter has filled (two latencies cover its length).
            let settled = &out[2 * Resampler::new(from, to, 1, 1).unwrap().latency_samples() + 2..];
            assert!(
                settled.iter().all(|&s| s == value),
                "{from}->{to} value {value}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Quality.

#[test]
fn passband_ripple_is_within_0_1_db_up_to_0_9_of_the_lower_nyquist() {
    println!("pair         passband gain min..max (dB)   ripple (dB)");
    let mut worst = 0.0f64;
    for (from, to) in pairs() {
        let edge_hz = PASSBAND_EDGE * f64::from(from.min(to)) / 2.0;
        let (mut lo, mut hi) = (f64::MAX, f64::MIN);
        for k in 0..=40 {
            let f = 50.0 + (edge_hz - 50.0) * f64::from(k) / 40.0;
            let input = tone(f, from, AMPLITUDE, from as usize * 3 / 10);
            let out = convert(from, to, &input);
            let (amplitude, _) = fit(steady(&out, to), f, to);
            let (reference, _) = fit(steady(&input, from), f, from);
            let gain = db(amplitude / reference);
            lo = lo.min(gain);
            hi = hi.max(gain);
        }
        println!(
            "{from:>5}->{to:<5}  {lo:+.4} .. {hi:+.4}             {:.4}",
            hi - lo
        );
        assert!(hi - lo <= 0.1, "{from}->{to}: ripple {} dB", hi - lo);
        assert!(
            lo.abs() <= 0.1 && hi.abs() <= 0.1,
            "{from}->{to}: gain {lo}..{hi} dB"
        );
        worst = worst.max(hi - lo);
    }
    println!("worst passband ripple: {worst:.4} dB");
}

/// Tones above the output Nyquist, when downsampling: whatever comes out is alias.
#[test]
fn tones_above_the_lower_nyquist_alias_at_least_60_db_down() {
    println!("pair         tone (Hz)   alias rejection (dB)");
    let mut worst = f64::MAX;
    for (from, to) in pairs().into_iter().filter(|(f, t)| f > t) {
        let nyquist = f64::from(to) / 2.0;
        let mut freqs: Vec<f64> = [1.01, 1.05, 1.25, 1.5, 1.9, 2.1, 2.6, 3.3, 4.2, 5.3]
            .iter()
            .map(|k| k * nyquist)
            .filter(|&f| f < f64::from(from) / 2.0 * 0.99)
            .collect();
        if (from, to) == (48_000, 8_000) {
            freqs.extend([5_000.0, 6_000.0, 10_000.0]);
        }
        for f in freqs {
            let input = tone(f, from, 30_000.0, from as usize * 3 / 10);
            let out = convert(from, to, &input);
            let rejection = db(rms(steady(&input, from)) / rms(steady(&out, to)).max(1e-9));
            println!("{from:>5}->{to:<5}  {f:>8.0}    {rejection:.1}");
            assert!(
                rejection >= 60.0,
                "{from}->{to} tone {f} Hz: {rejection} dB"
            );
            worst = worst.min(rejection);
        }
    }
    println!("worst alias rejection: {worst:.1} dB");
}

/// Tones in the input band: everything but the tone (images when upsampling, anything
/// else the conversion adds) must be at least 60 dB down, up to the lower Nyquist.
#[test]
fn images_and_other_spurious_output_are_at_least_60_db_down() {
    println!("pair         tone (Hz)   spurious-free range (dB)");
    let mut worst = f64::MAX;
    for (from, to) in pairs() {
        let nyquist = f64::from(from.min(to)) / 2.0;
        for k in [0.01, 0.1, 0.3, 0.5, 0.7, 0.9, 0.95, 0.99] {
            let f = k * nyquist;
            let input = tone(f, from, 30_000.0, from as usize * 3 / 10);
            let out = convert(from, to, &input);
            let (_, residual) = fit(steady(&out, to), f, to);
            let rejection = db(rms(steady(&input, from)) / residual.max(1e-9));
            println!("{from:>5}->{to:<5}  {f:>8.0}    {rejection:.1}");
            assert!(
                rejection >= 60.0,
                "{from}->{to} tone {f} Hz: {rejection} dB"
            );
            worst = worst.min(rejection);
        }
    }
    println!("worst spurious-free range: {worst:.1} dB");
}

#[test]
fn a_tone_through_8_to_48_to_8_khz_keeps_an_snr_of_at_least_50_db() {
    let up = Resampler::new(8_000, 48_000, 1, 160).unwrap();
    let down = Resampler::new(48_000, 8_000, 1, 960).unwrap();
    // Round-trip delay at 8 kHz: both latencies are whole numbers of 8 kHz samples.
    let delay = up.latency_samples() / 6 + down.latency_samples();
    println!("8->48->8 kHz, delay {delay} samples at 8 kHz");
    println!("tone (Hz)   SNR vs delayed input (dB)   SNR vs fitted tone (dB)");
    let mut worst = f64::MAX;
    for f in [200.0, 300.0, 1_000.0, 2_000.0, 3_100.0, 3_400.0, 3_600.0] {
        let input = tone(f, 8_000, 30_000.0, 4_000);
        let wide = convert(8_000, 48_000, &input);
        let back = convert(48_000, 8_000, &wide);
        let span = 800..3_200;
        let signal: f64 = span.clone().map(|n| f64::from(input[n]).powi(2)).sum();
        let error: f64 = span
            .clone()
            .map(|n| (f64::from(back[n + delay]) - f64::from(input[n])).powi(2))
            .sum();
        let snr = 10.0 * (signal / error).log10();
        let (_, residual) = fit(&back[span.start + delay..span.end + delay], f, 8_000);
        let snr_fit = db(rms(&input[span]) / residual);
        println!("{f:>8.0}    {snr:>6.1}                      {snr_fit:.1}");
        assert!(snr >= 50.0, "{f} Hz: SNR {snr} dB");
        worst = worst.min(snr);
    }
    println!("worst round-trip SNR: {worst:.1} dB");
}

#[test]
fn stereo_channels_are_converted_independently() {
    for (from, to) in pairs() {
        let frames = from as usize / 10;
        let left = tone(1_000.0, from, 20_000.0, frames);
        let right = test_signal(from, frames, 77);
        let mono = |x: &[i16]| {
            let mut r = Resampler::new(from, to, 1, frames).unwrap();
            let mut out = vec![0i16; r.max_output_len()];
            let n = r.process(x, &mut out);
            out.truncate(n);
            out
        };
        let interleave = |l: &[i16], r: &[i16]| -> Vec<i16> {
            l.iter().zip(r).flat_map(|(&a, &b)| [a, b]).collect()
        };
        let silence = vec![0i16; frames];
        for (l, r) in [(&left, &right), (&left, &silence), (&silence, &right)] {
            let mut st = Resampler::new(from, to, 2, frames).unwrap();
            let mut out = vec![0i16; st.max_output_len()];
            let n = st.process(&interleave(l, r), &mut out);
            let (ol, or): (Vec<i16>, Vec<i16>) =
                out[..n].chunks_exact(2).map(|p| (p[0], p[1])).unzip();
            // Bit-exact: nothing of one channel reaches the other.
            assert_eq!(ol, mono(l), "{from}->{to} left");
            assert_eq!(or, mono(r), "{from}->{to} right");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Real-time contract and misuse.

#[test]
fn process_and_reset_never_allocate() {
    for (from, to) in pairs() {
        for channels in 1..=2 {
            let frame = from as usize / 50;
            let input = test_signal(from, frame * channels, 5);
            let long = test_signal(from, 3 * frame * channels + 1, 6);
            let mut r = Resampler::new(from, to, channels, frame).unwrap();
            let mut out = vec![0i16; 4 * r.max_output_len()];
            let before = allocations();
            for _ in 0..10 {
                r.process(&input, &mut out);
            }
            r.process(&long, &mut out);
            r.process(&input, &mut out[..7]);
            r.reset();
            r.process(&input, &mut out);
            assert_eq!(allocations(), before, "{from}->{to} ch{channels}");
        }
    }
}

#[test]
fn a_short_output_buffer_truncates_and_keeps_the_stream_in_time() {
    let input = test_signal(8_000, 480, 8);
    let mut reference = Resampler::new(8_000, 48_000, 1, 160).unwrap();
    let mut r = Resampler::new(8_000, 48_000, 1, 160).unwrap();
    let mut full = vec![0i16; 960];
    let mut short = vec![0i16; 500];
    for frame in input.chunks(160) {
        let n = reference.process(frame, &mut full);
        assert_eq!(n, 960);
        assert_eq!(r.process(frame, &mut short), 500);
        assert_eq!(short[..], full[..500]);
    }
    // Nothing at all for empty or too-short buffers and inputs; no panic.
    assert_eq!(r.process(&input[..160], &mut []), 0);
    assert_eq!(r.process(&[], &mut full), 0);
    let mut st = Resampler::new(8_000, 48_000, 2, 160).unwrap();
    assert_eq!(st.process(&input[..3], &mut full[..1]), 0);
    assert_eq!(st.process(&input[..3], &mut full), 12); // one whole frame in, six out; the odd sample ignored
}

#[test]
fn bad_configurations_are_refused() {
    assert_eq!(
        Resampler::new(44_100, 48_000, 1, 160).unwrap_err(),
        ResampleError::UnsupportedRate { rate_hz: 44_100 }
    );
    assert_eq!(
        Resampler::new(8_000, 11_025, 1, 160).unwrap_err(),
        ResampleError::UnsupportedRate { rate_hz: 11_025 }
    );
    assert_eq!(
        Resampler::new(8_000, 16_000, 0, 160).unwrap_err(),
        ResampleError::UnsupportedChannels { channels: 0 }
    );
    assert_eq!(
        Resampler::new(8_000, 16_000, 3, 160).unwrap_err(),
        ResampleError::UnsupportedChannels { channels: 3 }
    );
    assert_eq!(
        Resampler::new(8_000, 16_000, 1, 0).unwrap_err(),
        ResampleError::InvalidMaxInputFrames {
            frames: 0,
            max: 8_000
        }
    );
    assert!(Resampler::new(8_000, 16_000, 1, 8_001).is_err());
}

#[test]
fn filter_sizes_and_latencies_are_reported() {
    println!("pair         taps/output  latency (output samples, ms)");
    for (from, to) in pairs() {
        let r = Resampler::new(from, to, 1, from as usize / 50).unwrap();
        let ms = r.latency_samples() as f64 * 1000.0 / f64::from(to);
        println!(
            "{from:>5}->{to:<5}  {:>5}        {:>4} ({ms:.2} ms)",
            r.taps_per_output(),
            r.latency_samples()
        );
        assert!(ms < 10.0, "{from}->{to}: {ms} ms");
    }
}
