//! Sample-rate conversion cost: one 20 ms mono frame per iteration, media-core's
//! polyphase [`Resampler`] against rubato's fixed-ratio synchronous FFT resampler
//! (`rubato::Fft`, default BlackmanHarris2 window, both chunk sizes fixed to the 20 ms
//! frame, called through the allocation-free `process_into_buffer`).
//!
//! rubato works in `f32`; its figure includes converting the i16 frame in and out, since a
//! lane holds i16 audio (the conversion is a small part of it). Anchor (ANCHORS.md,
//! another machine): speexdsp quality 3 costs 7.1 µs for 8→48 kHz, 7.9 µs for 48→8 kHz
//! and 2.4 µs for 8↔16 kHz.
//!
//! Run: `cargo bench --bench resample` (add `-- --quick` for a short run).

use std::f64::consts::PI;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use media_core::processing::format::resample::Resampler;
use media_core::processing::format::{f32_to_i16, i16_to_f32};
use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler as _};

/// The conversions a gateway runs: G.711/G.722 legs against Opus at 48 kHz, and G.711
/// against G.722.
const PAIRS: [(u32, u32); 6] = [
    (8_000, 48_000),
    (48_000, 8_000),
    (8_000, 16_000),
    (16_000, 8_000),
    (16_000, 48_000),
    (48_000, 16_000),
];

/// A 20 ms frame of two tones and deterministic noise at about -10 dBFS.
fn frame(rate_hz: u32) -> Vec<i16> {
    let mut seed: u32 = 0x1234_5678;
    (0..rate_hz as usize / 50)
        .map(|n| {
            let t = n as f64 / f64::from(rate_hz);
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let noise = f64::from((seed >> 16) as u16 as i16) / 64.0;
            (6000.0 * (2.0 * PI * 440.0 * t).sin() + 3000.0 * (2.0 * PI * 2300.0 * t).sin() + noise)
                .round() as i16
        })
        .collect()
}

fn bench_pair(c: &mut Criterion, from_hz: u32, to_hz: u32) {
    let input = frame(from_hz);
    let (n_in, n_out) = (from_hz as usize / 50, to_hz as usize / 50);
    let mut group = c.benchmark_group(format!("resample_{}k_to_{}k", from_hz / 1000, to_hz / 1000));

    let mut ours = Resampler::new(from_hz, to_hz, 1, n_in).expect("supported rates");
    let mut out = vec![0i16; ours.max_output_len()];
    group.bench_function("media_core", |b| {
        b.iter(|| {
            let n = ours.process(black_box(&input), &mut out);
            debug_assert_eq!(n, n_out);
            black_box(&out);
        })
    });

    let mut fft = Fft::<f32>::new(from_hz as usize, to_hz as usize, n_in, 1, FixedSync::Both)
        .expect("valid rubato configuration");
    assert_eq!(
        (fft.input_frames_next(), fft.output_frames_next()),
        (n_in, n_out)
    );
    let mut in_f = vec![0f32; n_in];
    let mut out_f = vec![0f32; fft.output_frames_max()];
    let mut out_i = vec![0i16; n_out];
    group.bench_function("rubato_fft", |b| {
        b.iter(|| {
            i16_to_f32(black_box(&input), &mut in_f);
            let adapter_in = InterleavedSlice::new(&in_f, 1, n_in).expect("sized above");
            let frames_out = out_f.len();
            let mut adapter_out =
                InterleavedSlice::new_mut(&mut out_f, 1, frames_out).expect("sized above");
            let (_, written) = fft
                .process_into_buffer(&adapter_in, &mut adapter_out, None)
                .expect("fixed chunk sizes");
            f32_to_i16(&out_f[..written], &mut out_i);
            black_box(&out_i);
        })
    });
    group.finish();
}

fn resample(c: &mut Criterion) {
    for (from_hz, to_hz) in PAIRS {
        bench_pair(c, from_hz, to_hz);
    }
}

criterion_group!(benches, resample);
criterion_main!(benches);
