//! Voice-processing cost: one 20 ms mono frame per iteration, each component alone, at 8,
//! 16 and 48 kHz, on speech-like input (two voiced harmonics series with a syllable envelope
//! plus low-level noise; the echo canceller gets a far-end reference and its echo).
//!
//! Anchors (ANCHORS.md, 2-vCPU Zen 4 machine, per 20 ms frame): speexdsp preprocess
//! (NS + AGC + VAD) 10.1 / 20.3 / 61 µs at 8 / 16 / 48 kHz; speexdsp MDF echo canceller
//! 18.7 µs (8 kHz, 64 ms), 21.5 µs (8 kHz, 128 ms), 48 µs (16 kHz, 128 ms); spandsp DTMF
//! receiver 0.88 µs at 8 kHz. Issue goals: VAD <= 2 µs and DTMF <= 1 µs at 8 kHz.
//!
//! Run: `cargo bench --bench voice` (add `-- --quick` for a short run).

use std::f32::consts::PI;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use media_core::processing::audio::aec::{AecConfig, EchoCanceller};
use media_core::processing::audio::agc::{Agc, AgcConfig};
use media_core::processing::audio::dtmf_detector::{DtmfDetector, DtmfDetectorConfig};
use media_core::processing::audio::ns::{NoiseSuppressor, NsConfig};
use media_core::processing::audio::vad::{Vad, VadConfig};
use media_core::processing::audio::{DspChain, DspConfig, DspScratch};

/// One second of speech-like audio at `rate_hz` (50 frames of 20 ms).
fn speechlike(rate_hz: u32, seed: u32) -> Vec<i16> {
    let mut s = seed.max(1);
    (0..rate_hz as usize)
        .map(|n| {
            let t = n as f32 / rate_hz as f32;
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            let noise = (s >> 20) as f32 - 2048.0;
            let env = (0.5 + 0.5 * (2.0 * PI * 3.0 * t).sin()).powi(2);
            let f0 = 120.0 + 20.0 * (2.0 * PI * 0.7 * t).sin();
            let voiced: f32 = (1..8)
                .map(|k| (2.0 * PI * f0 * k as f32 * t).sin() / k as f32)
                .sum();
            (6000.0 * env * voiced + 0.1 * noise) as i16
        })
        .collect()
}

fn bench_rate(c: &mut Criterion, rate_hz: u32) {
    let frame = rate_hz as usize / 50;
    let input = speechlike(rate_hz, 7);
    let far = speechlike(rate_hz, 99);
    // The far end's echo: 20 ms late, -10 dB.
    let delay = rate_hz as usize / 50;
    let echo: Vec<i16> = (0..input.len())
        .map(|n| {
            let e = if n >= delay { far[n - delay] / 3 } else { 0 };
            input[n] / 4 + e
        })
        .collect();
    let frames = input.len() / frame;
    let mut buf = vec![0i16; frame];
    let mut group = c.benchmark_group(format!("voice_{}k", rate_hz / 1000));
    let mut k = 0usize;
    let mut next = |buf: &mut [i16], src: &[i16]| {
        k = (k + 1) % frames;
        buf.copy_from_slice(&src[k * frame..(k + 1) * frame]);
        k
    };

    let mut vad = Vad::new(VadConfig {
        sample_rate_hz: rate_hz,
        ..Default::default()
    })
    .expect("valid");
    group.bench_function("vad", |b| {
        b.iter(|| {
            next(&mut buf, &input);
            black_box(vad.process(black_box(&buf)));
        })
    });
    let mut dtmf = DtmfDetector::new(DtmfDetectorConfig {
        sample_rate_hz: rate_hz,
        ..Default::default()
    })
    .expect("valid");
    group.bench_function("dtmf_detector", |b| {
        b.iter(|| {
            next(&mut buf, &input);
            dtmf.process(black_box(&buf), |e| {
                black_box(e);
            });
        })
    });
    let mut agc = Agc::new(AgcConfig {
        sample_rate_hz: rate_hz,
        ..Default::default()
    })
    .expect("valid");
    group.bench_function("agc", |b| {
        b.iter(|| {
            next(&mut buf, &input);
            agc.process(black_box(&mut buf));
        })
    });
    let mut ns = NoiseSuppressor::new(NsConfig {
        sample_rate_hz: rate_hz,
        ..Default::default()
    })
    .expect("valid");
    group.bench_function("ns", |b| {
        b.iter(|| {
            next(&mut buf, &input);
            ns.process(black_box(&mut buf));
        })
    });
    // 10 ms blocks (`new`), then the blocks a session's 20 ms frames allow (`with_frame`:
    // 20 ms at 8 and 16 kHz, and at 48 kHz with the 128 ms tail).
    for (tail_ms, blocks) in [(64, "10"), (128, "10"), (64, "frame"), (128, "frame")] {
        let config = AecConfig {
            sample_rate_hz: rate_hz,
            tail_ms,
            ..Default::default()
        };
        let mut aec = if blocks == "10" {
            EchoCanceller::new(config)
        } else {
            EchoCanceller::with_frame(config, frame)
        }
        .expect("valid");
        if blocks == "frame" && aec.block_samples() * 100 == rate_hz as usize {
            continue;
        }
        let name = if blocks == "10" {
            format!("aec_{tail_ms}ms")
        } else {
            format!("aec_{tail_ms}ms_20ms_blocks")
        };
        let mut kk = 0usize;
        group.bench_function(name, |b| {
            b.iter(|| {
                kk = (kk + 1) % frames;
                buf.copy_from_slice(&echo[kk * frame..(kk + 1) * frame]);
                aec.process(black_box(&mut buf), &far[kk * frame..(kk + 1) * frame]);
            })
        });
    }
    // The whole chain as a session runs it (AEC 128 ms, DTMF, NS, VAD, AGC).
    let mut chain = DspChain::new(&DspConfig::voice(), rate_hz, frame).expect("valid");
    let mut work = DspScratch::new();
    let mut kk = 0usize;
    group.bench_function("chain_all", |b| {
        b.iter(|| {
            kk = (kk + 1) % frames;
            chain.push_reference(&far[kk * frame..(kk + 1) * frame]);
            buf.copy_from_slice(&echo[kk * frame..(kk + 1) * frame]);
            chain.process(black_box(&mut buf), &mut work, &mut |e| {
                black_box(e);
            });
        })
    });
    group.finish();
}

/// Chains of many sessions run in turn, as a lane runs them: each iteration processes one
/// 20 ms frame of the next of `SESSIONS` chains (8 kHz), so each chain's state has left the
/// cache since its last frame. The difference to the one-chain figures above is the cost
/// of fetching per-session state from memory.
fn bench_sessions(c: &mut Criterion) {
    const SESSIONS: usize = 2000;
    let rate_hz = 8000;
    let frame = rate_hz as usize / 50;
    let input = speechlike(rate_hz, 7);
    let frames = input.len() / frame;
    let mut buf = vec![0i16; frame];
    let mut work = DspScratch::new();
    let mut group = c.benchmark_group(format!("voice_8k_{SESSIONS}_sessions"));
    let none = DspConfig::default();
    let all = DspConfig::voice();
    let configs = [
        (
            "dtmf_detector",
            DspConfig {
                dtmf: all.dtmf,
                ..none
            },
        ),
        ("ns", DspConfig { ns: all.ns, ..none }),
        (
            "vad",
            DspConfig {
                vad: all.vad,
                ..none
            },
        ),
        (
            "agc",
            DspConfig {
                agc: all.agc,
                ..none
            },
        ),
        ("chain_no_aec", DspConfig { aec: None, ..all }),
    ];
    for (name, config) in configs {
        let mut chains: Vec<DspChain> = (0..SESSIONS)
            .map(|_| DspChain::new(&config, rate_hz, frame).expect("valid"))
            .collect();
        let (mut i, mut k) = (0usize, 0usize);
        group.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 1) % SESSIONS;
                if i == 0 {
                    k = (k + 1) % frames;
                }
                buf.copy_from_slice(&input[k * frame..(k + 1) * frame]);
                chains[i].process(black_box(&mut buf), &mut work, &mut |e| {
                    black_box(e);
                });
            })
        });
    }
    group.finish();
}

fn voice(c: &mut Criterion) {
    for rate in [8_000, 16_000, 48_000] {
        bench_rate(c, rate);
    }
    bench_sessions(c);
}

criterion_group!(benches, voice);
criterion_main!(benches);
