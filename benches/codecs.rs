//! Codec frame costs: one 20 ms frame per iteration, one direction.
//!
//! Each codec has its own function and criterion group (`g722/...`); add a codec by
//! adding a function to `criterion_group!` below.
//!
//! G.722 (64 kbit/s, 320 samples ↔ 160 octets), on the committed speech vector
//! `tests/data/g722/speech.wav` (4 s, 16 kHz):
//! - `g722/encode_20ms`, `g722/decode_20ms`: the same frame (samples 16000..16320,
//!   voiced speech) over and over, the codec state carrying on;
//! - `g722/encode_20ms_stream`, `g722/decode_20ms_stream`: each iteration takes the
//!   next of the file's 200 frames, so branch predictors cannot learn one frame.
//!
//! `scripts/gen_g722_vectors.sh --bench` times spandsp's G.722 the same two ways
//! on the same frames, for comparison on the same machine.
//!
//! Run: `cargo bench --bench codecs` (add `-- g722` to select, `--quick` for a short run).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use media_core::codec::audio::g722::{G722Decoder, G722Encoder, G722Mode};

/// 20 ms at 16 kHz.
const G722_FRAME_SAMPLES: usize = 320;
/// Where the repeated frame starts: 1 s into the speech, voiced.
const G722_FRAME_START: usize = 16_000;

fn speech_16k() -> Vec<i16> {
    let bytes: &[u8] = include_bytes!("../tests/data/g722/speech.wav");
    hound::WavReader::new(std::io::Cursor::new(bytes))
        .expect("the committed speech vector is a WAV file")
        .into_samples::<i16>()
        .collect::<Result<_, _>>()
        .expect("16-bit samples")
}

fn bench_g722(c: &mut Criterion) {
    let pcm = speech_16k();
    let frames = pcm.len() / G722_FRAME_SAMPLES;
    let pcm = &pcm[..frames * G722_FRAME_SAMPLES];
    let mut octets = vec![0u8; pcm.len() / 2];
    G722Encoder::new(G722Mode::Rate64k).encode(pcm, &mut octets);

    let frame_pcm = &pcm[G722_FRAME_START..G722_FRAME_START + G722_FRAME_SAMPLES];
    let frame_octets = &octets[G722_FRAME_START / 2..(G722_FRAME_START + G722_FRAME_SAMPLES) / 2];
    let mut out_octets = [0u8; G722_FRAME_SAMPLES / 2];
    let mut out_pcm = [0i16; G722_FRAME_SAMPLES];

    let mut group = c.benchmark_group("g722");
    group.throughput(Throughput::Elements(G722_FRAME_SAMPLES as u64));

    let mut enc = G722Encoder::new(G722Mode::Rate64k);
    group.bench_function("encode_20ms", |b| {
        b.iter(|| enc.encode(black_box(frame_pcm), black_box(&mut out_octets)))
    });
    let mut dec = G722Decoder::new(G722Mode::Rate64k);
    group.bench_function("decode_20ms", |b| {
        b.iter(|| dec.decode(black_box(frame_octets), black_box(&mut out_pcm)))
    });

    let mut enc = G722Encoder::new(G722Mode::Rate64k);
    let mut pcm_frames = pcm.chunks_exact(G722_FRAME_SAMPLES).cycle();
    group.bench_function("encode_20ms_stream", |b| {
        b.iter(|| {
            let frame = pcm_frames.next().unwrap_or(frame_pcm);
            enc.encode(black_box(frame), black_box(&mut out_octets))
        })
    });
    let mut dec = G722Decoder::new(G722Mode::Rate64k);
    let mut octet_frames = octets.chunks_exact(G722_FRAME_SAMPLES / 2).cycle();
    group.bench_function("decode_20ms_stream", |b| {
        b.iter(|| {
            let frame = octet_frames.next().unwrap_or(frame_octets);
            dec.decode(black_box(frame), black_box(&mut out_pcm))
        })
    });
    group.finish();
}

/// Opus at 48 kHz mono, 24 kbit/s, complexity 5, FEC on (the engine's VoIP defaults):
/// bare libopus calls next to the same work through media-core's `AnyEncoder`/`AnyDecoder`,
/// so the wrapper's overhead is visible in one run.
fn bench_opus(c: &mut Criterion) {
    use media_core::codec::{AnyDecoder, AnyEncoder, Codec, OpusSettings};
    let pcm: Vec<i16> = (0..960)
        .map(|i| {
            let t = i as f64 / 48000.0;
            ((2.0 * std::f64::consts::PI * 220.0 * t).sin() * 6000.0
                + (2.0 * std::f64::consts::PI * 1330.0 * t).sin() * 2000.0) as i16
        })
        .collect();
    let mut g = c.benchmark_group("opus");
    let mut bare =
        opus::Encoder::new(48000, opus::Channels::Mono, opus::Application::Voip).unwrap();
    bare.set_bitrate(opus::Bitrate::Bits(24_000)).unwrap();
    bare.set_complexity(5).unwrap();
    bare.set_inband_fec(true).unwrap();
    bare.set_packet_loss_perc(5).unwrap();
    let mut out = vec![0u8; 1275];
    g.bench_function("bare_libopus_encode_20ms", |b| {
        b.iter(|| bare.encode(black_box(&pcm), &mut out).unwrap())
    });
    let mut enc = AnyEncoder::opus(OpusSettings::default());
    g.bench_function("media_core_encode_20ms", |b| {
        b.iter(|| enc.encode(black_box(&pcm), &mut out).unwrap())
    });
    let n = enc.encode(&pcm, &mut out).unwrap();
    let packet = out[..n].to_vec();
    let mut dec_bare = opus::Decoder::new(48000, opus::Channels::Mono).unwrap();
    let mut pcm_out = vec![0i16; 960];
    g.bench_function("bare_libopus_decode_20ms", |b| {
        b.iter(|| {
            dec_bare
                .decode(black_box(&packet), &mut pcm_out, false)
                .unwrap()
        })
    });
    let mut dec = AnyDecoder::new(Codec::Opus);
    g.bench_function("media_core_decode_20ms", |b| {
        b.iter(|| dec.decode(black_box(&packet), &mut pcm_out).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench_g722, bench_opus);
criterion_main!(benches);
