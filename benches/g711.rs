//! G.711 frame throughput: one 20 ms frame at 8 kHz (160 samples) per iteration.
//!
//! For each law, four cases: the table-driven frame functions the lanes call
//! (`encode_table`, `decode_table`) and a plain loop over the computed sample
//! functions (`encode_computed`, `decode_computed`), which is what the tables
//! are built from.
//!
//! Run: `cargo bench --bench g711` (add `-- --quick` for a short run).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use media_core::codec::audio::g711;
use media_core::processing::simd;

/// Samples in a 20 ms frame at 8 kHz.
const FRAME_SAMPLES: usize = 160;

/// A deterministic speech-like frame: a 440 Hz tone at about -12 dBFS plus a
/// 300 Hz tone and low-level noise from a fixed-seed LCG, so that the codes
/// spread over many segments and both signs.
fn test_frame() -> [i16; FRAME_SAMPLES] {
    let mut frame = [0i16; FRAME_SAMPLES];
    let mut seed: u32 = 0x1234_5678;
    for (n, sample) in frame.iter_mut().enumerate() {
        let t = n as f64 / 8000.0;
        let tone = 8000.0 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()
            + 3000.0 * (2.0 * std::f64::consts::PI * 300.0 * t).sin();
        // Numerical Recipes LCG; top 16 bits as noise in about ±512.
        seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let noise = f64::from((seed >> 16) as u16 as i16) / 64.0;
        *sample = (tone + noise).round().clamp(-32768.0, 32767.0) as i16;
    }
    frame
}

/// Benchmarks one law: `encode`/`decode` are the frame functions,
/// `encode_sample`/`decode_sample` the computed per-sample functions. Generic
/// (not `fn` pointers) so each function is called statically and can be
/// inlined, as it is for real callers.
fn bench_law<E, D, ES, DS>(
    c: &mut Criterion,
    name: &str,
    encode: E,
    decode: D,
    encode_sample: ES,
    decode_sample: DS,
) where
    E: Fn(&[i16], &mut [u8]) -> usize,
    D: Fn(&[u8], &mut [i16]) -> usize,
    ES: Fn(i16) -> u8,
    DS: Fn(u8) -> i16,
{
    let pcm = test_frame();
    let mut codes = [0u8; FRAME_SAMPLES];
    encode(&pcm, &mut codes);
    let mut out_codes = [0u8; FRAME_SAMPLES];
    let mut out_pcm = [0i16; FRAME_SAMPLES];

    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(FRAME_SAMPLES as u64));
    // The frame functions as the lanes call them (the AVX2 build where the CPU has it),
    // then forced to the portable table-driven build.
    group.bench_function("encode_frame", |b| {
        b.iter(|| encode(black_box(&pcm), black_box(&mut out_codes)))
    });
    simd::force_portable(true);
    group.bench_function("encode_table", |b| {
        b.iter(|| encode(black_box(&pcm), black_box(&mut out_codes)))
    });
    simd::force_portable(false);
    group.bench_function("encode_computed", |b| {
        b.iter(|| {
            for (code, &x) in black_box(&mut out_codes).iter_mut().zip(black_box(&pcm)) {
                *code = encode_sample(x);
            }
        })
    });
    group.bench_function("decode_frame", |b| {
        b.iter(|| decode(black_box(&codes), black_box(&mut out_pcm)))
    });
    simd::force_portable(true);
    group.bench_function("decode_table", |b| {
        b.iter(|| decode(black_box(&codes), black_box(&mut out_pcm)))
    });
    simd::force_portable(false);
    group.bench_function("decode_computed", |b| {
        b.iter(|| {
            for (x, &code) in black_box(&mut out_pcm).iter_mut().zip(black_box(&codes)) {
                *x = decode_sample(code);
            }
        })
    });
    group.finish();
}

fn bench_ulaw(c: &mut Criterion) {
    bench_law(
        c,
        "g711_ulaw_160",
        g711::ulaw_encode,
        g711::ulaw_decode,
        g711::ulaw_encode_sample,
        g711::ulaw_decode_sample,
    );
}

fn bench_alaw(c: &mut Criterion) {
    bench_law(
        c,
        "g711_alaw_160",
        g711::alaw_encode,
        g711::alaw_decode,
        g711::alaw_encode_sample,
        g711::alaw_decode_sample,
    );
}

criterion_group!(benches, bench_ulaw, bench_alaw);
criterion_main!(benches);
