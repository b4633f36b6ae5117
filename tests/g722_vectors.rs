//! G.722 against independent implementations, sample for sample.
//!
//! The files in `tests/data/g722/` were made by `scripts/gen_g722_vectors.sh`
//! (commands, versions and sha256 sums in `tests/data/g722/README.txt`):
//!
//! - by spandsp's `g722.c` (Debian libspandsp-dev 0.0.6, standard mode: 16 kHz
//!   audio, one octet per sample pair), from deterministic inputs: 4 s of speech
//!   (`speech.wav`), a 50 Hz → 7950 Hz chirp at -6 dBFS, white noise over the whole
//!   `i16` range, a full-scale 1 kHz square wave, silence, and 4000 random octets
//!   (`random.g722`) for the decoder. `NAME.g722` is spandsp's 64 kbit/s encoding
//!   of each input, `NAME.decNN.pcm` its decoding of those octets at 64, 56 and
//!   48 kbit/s;
//! - by the ITU-T G.191 STL (the ITU's reference software), for the overload
//!   cases where spandsp 0.0.6 departs from it and media-core follows the STL:
//!   `square.stl.g722` (the STL limits the transmit QMF output to 15 bits, spandsp
//!   does not) and `stl_overrides.txt` (the decoded samples where the receive QMF
//!   output exceeds 16 bits: the STL saturates, spandsp 0.0.6 wraps round).
//!
//! So every octet and every decoded sample is checked against a reference. Then:
//! a coded tone must come back with a minimum SNR in each mode, and cutting a
//! stream into frames of any size must not change a bit.

use media_core::codec::audio::g722::{G722Decoder, G722Encoder, G722Mode};

/// 20 ms at 16 kHz, how the reference vectors were coded (and how lanes call).
const FRAME_SAMPLES: usize = 320;

/// The codec's delay in samples (the transmit and receive QMFs, 24 taps each).
const CODEC_DELAY: usize = 22;

const MODES: [G722Mode; 3] = [G722Mode::Rate64k, G722Mode::Rate56k, G722Mode::Rate48k];

fn s16le(bytes: &[u8]) -> Vec<i16> {
    assert_eq!(bytes.len() % 2, 0, "odd-length s16le file");
    bytes
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

fn wav_16k_mono(bytes: &[u8]) -> Vec<i16> {
    let reader = hound::WavReader::new(std::io::Cursor::new(bytes)).expect("a valid WAV file");
    let spec = reader.spec();
    assert_eq!(
        (spec.channels, spec.sample_rate, spec.bits_per_sample),
        (1, 16_000, 16)
    );
    reader
        .into_samples::<i16>()
        .collect::<Result<_, _>>()
        .expect("readable samples")
}

fn speech() -> Vec<i16> {
    wav_16k_mono(include_bytes!("data/g722/speech.wav"))
}

/// One reference case: the input (none for the random octets), spandsp's
/// 64 kbit/s octets, and their decodings at 64, 56 and 48 kbit/s.
struct Vector {
    name: &'static str,
    input: Option<Vec<i16>>,
    octets: &'static [u8],
    decoded: [(G722Mode, &'static str, &'static [u8]); 3],
}

macro_rules! vector {
    ($name:literal, $input:expr) => {
        Vector {
            name: $name,
            input: $input,
            octets: include_bytes!(concat!("data/g722/", $name, ".g722")),
            decoded: [
                (
                    G722Mode::Rate64k,
                    concat!($name, ".dec64.pcm"),
                    include_bytes!(concat!("data/g722/", $name, ".dec64.pcm")),
                ),
                (
                    G722Mode::Rate56k,
                    concat!($name, ".dec56.pcm"),
                    include_bytes!(concat!("data/g722/", $name, ".dec56.pcm")),
                ),
                (
                    G722Mode::Rate48k,
                    concat!($name, ".dec48.pcm"),
                    include_bytes!(concat!("data/g722/", $name, ".dec48.pcm")),
                ),
            ],
        }
    };
}

fn vectors() -> Vec<Vector> {
    vec![
        vector!("speech", Some(speech())),
        vector!("sweep", Some(s16le(include_bytes!("data/g722/sweep.pcm")))),
        vector!("noise", Some(s16le(include_bytes!("data/g722/noise.pcm")))),
        vector!(
            "square",
            Some(s16le(include_bytes!("data/g722/square.pcm")))
        ),
        vector!(
            "silence",
            Some(s16le(include_bytes!("data/g722/silence.pcm")))
        ),
        vector!("random", None),
    ]
}

/// One line of `stl_overrides.txt`: where the STL's decoding differs from
/// spandsp's.
struct Override {
    file: String,
    index: usize,
    stl: i16,
    spandsp: i16,
}

fn stl_overrides() -> Vec<Override> {
    include_str!("data/g722/stl_overrides.txt")
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(fields.len(), 4, "bad override line {line:?}");
            Override {
                file: fields[0].to_owned(),
                index: fields[1].parse().expect("index"),
                stl: fields[2].parse().expect("STL value"),
                spandsp: fields[3].parse().expect("spandsp value"),
            }
        })
        .collect()
}

/// The reference decoding of `file`: spandsp's samples, with the STL's where
/// they differ. Checks that each override is what the documented difference
/// allows: spandsp's output wrapped round where the STL's saturated.
fn reference_decoding(file: &str, spandsp: &[u8], overrides: &[Override]) -> Vec<i16> {
    let mut samples = s16le(spandsp);
    for o in overrides.iter().filter(|o| o.file == file) {
        assert_eq!(samples[o.index], o.spandsp, "{file}[{}]", o.index);
        assert!(
            o.stl == i16::MAX || o.stl == i16::MIN,
            "{file}[{}]: the references differ other than by saturation",
            o.index
        );
        samples[o.index] = o.stl;
    }
    samples
}

/// Encodes `pcm` in frames of `frame` samples (the last may be shorter).
fn encode_in_frames(pcm: &[i16], frame: usize) -> Vec<u8> {
    let mut enc = G722Encoder::new(G722Mode::Rate64k);
    let mut out = vec![0u8; pcm.len() / 2];
    let mut done = 0;
    for chunk in pcm.chunks(frame) {
        done += enc.encode(chunk, &mut out[done..]);
    }
    assert_eq!(done, out.len());
    out
}

/// Decodes `octets` in `mode`, `frame` octets per call.
fn decode_in_frames(mode: G722Mode, octets: &[u8], frame: usize) -> Vec<i16> {
    let mut dec = G722Decoder::new(mode);
    let mut out = vec![0i16; octets.len() * 2];
    let mut done = 0;
    for chunk in octets.chunks(frame) {
        done += dec.decode(chunk, &mut out[done..]);
    }
    assert_eq!(done, out.len());
    out
}

/// Panics with the first difference, readably (never dumps whole buffers).
fn assert_identical<T: PartialEq + Copy + std::fmt::Debug>(
    ours: &[T],
    reference: &[T],
    what: &str,
) {
    assert_eq!(ours.len(), reference.len(), "{what}: lengths differ");
    if let Some(i) = ours.iter().zip(reference).position(|(a, b)| a != b) {
        let differing = ours.iter().zip(reference).filter(|(a, b)| a != b).count();
        panic!(
            "{what}: {differing} values differ, the first at {i}: ours {:?}, reference {:?}",
            ours[i], reference[i]
        );
    }
}

#[test]
fn encoder_output_is_bit_exact_with_spandsp_and_the_stl_on_every_input() {
    let mut checked = 0;
    for v in vectors() {
        let Some(input) = &v.input else { continue };
        let ours = encode_in_frames(input, FRAME_SAMPLES);
        if v.name == "square" {
            // The full-scale square overshoots the 15-bit sub-band range, where
            // the STL limits and spandsp does not: the STL is the reference.
            assert_ne!(
                ours, v.octets,
                "the overload case should differ from spandsp"
            );
            assert_identical(
                &ours,
                include_bytes!("data/g722/square.stl.g722"),
                "square (STL)",
            );
        } else {
            assert_identical(&ours, v.octets, v.name);
        }
        checked += 1;
    }
    assert_eq!(checked, 5);
}

#[test]
fn decoder_output_is_bit_exact_with_the_references_in_all_three_modes() {
    let overrides = stl_overrides();
    let mut checked = 0;
    for v in vectors() {
        for (mode, file, spandsp) in v.decoded {
            let reference = reference_decoding(file, spandsp, &overrides);
            let ours = decode_in_frames(mode, v.octets, FRAME_SAMPLES / 2);
            assert_identical(&ours, &reference, file);
            checked += 1;
        }
    }
    assert_eq!(checked, 18, "6 bitstreams × 3 modes");
    // Ordinary signals never reach the overload behaviour.
    for o in &overrides {
        assert!(
            ["noise.", "square.", "random."]
                .iter()
                .any(|p| o.file.starts_with(p)),
            "{}",
            o.file
        );
    }
}

#[test]
fn garbage_octets_decode_like_the_references_in_any_call_pattern() {
    let overrides = stl_overrides();
    let v = vectors().pop().expect("the random vector is last");
    assert_eq!(v.name, "random");
    for (mode, file, spandsp) in v.decoded {
        let reference = reference_decoding(file, spandsp, &overrides);
        let whole = decode_in_frames(mode, v.octets, v.octets.len());
        assert_identical(&whole, &reference, file);
        let single = decode_in_frames(mode, v.octets, 1);
        assert_identical(&single, &reference, file);
        // An output buffer with room for fewer samples than the input needs,
        // and of odd length: only whole sample pairs are decoded.
        let mut dec = G722Decoder::new(mode);
        let mut short = [0i16; 7];
        assert_eq!(dec.decode(v.octets, &mut short), 6);
        assert_eq!(&short[..6], &reference[..6]);
    }
}

/// SNR in dB of `decoded` against `input` delayed by the codec delay, after the
/// first 0.1 s (while the scale factors adapt from their minimum).
fn snr_db(input: &[i16], decoded: &[i16], delay: usize) -> f64 {
    let (mut signal, mut noise) = (0.0f64, 0.0f64);
    for n in 1600..input.len() - delay {
        let x = f64::from(input[n]);
        let e = f64::from(decoded[n + delay]) - x;
        signal += x * x;
        noise += e * e;
    }
    10.0 * (signal / noise.max(1e-9)).log10()
}

fn tone(freq_hz: f64, amplitude: f64, samples: usize) -> Vec<i16> {
    (0..samples)
        .map(|n| {
            let t = n as f64 / 16_000.0;
            (amplitude * (2.0 * std::f64::consts::PI * freq_hz * t).sin()).round() as i16
        })
        .collect()
}

#[test]
fn the_codec_delay_is_the_qmf_pair_delay() {
    // A chirp has no periodic ambiguity: the best alignment is the delay.
    let sweep = s16le(include_bytes!("data/g722/sweep.pcm"));
    let decoded = decode_in_frames(
        G722Mode::Rate64k,
        &encode_in_frames(&sweep, FRAME_SAMPLES),
        160,
    );
    let best = (0..64)
        .max_by(|&a, &b| snr_db(&sweep, &decoded, a).total_cmp(&snr_db(&sweep, &decoded, b)))
        .expect("a delay");
    assert_eq!(best, CODEC_DELAY);
    assert!(snr_db(&sweep, &decoded, CODEC_DELAY) > 18.0);
}

#[test]
fn tones_survive_the_round_trip_with_the_expected_snr_in_each_mode() {
    // -10 dBFS tones. The lower sub-band (0-4 kHz) gets 6, 5 or 4 bits per
    // sample, about 6 dB each (measured 47.2, 41.4, 35.3 dB at 1 kHz); the
    // higher band gets 2 bits in every mode (measured 26.1 dB at 6.5 kHz).
    let cases = [
        (1000.0, G722Mode::Rate64k, 44.0),
        (1000.0, G722Mode::Rate56k, 38.0),
        (1000.0, G722Mode::Rate48k, 32.0),
        (300.0, G722Mode::Rate64k, 55.0),
        (6500.0, G722Mode::Rate64k, 23.0),
        (6500.0, G722Mode::Rate48k, 23.0),
    ];
    let mut low_band = Vec::new();
    for (freq, mode, min_snr) in cases {
        let input = tone(freq, 10_000.0, 16_000);
        let octets = encode_in_frames(&input, FRAME_SAMPLES);
        let decoded = decode_in_frames(mode, &octets, FRAME_SAMPLES / 2);
        let snr = snr_db(&input, &decoded, CODEC_DELAY);
        assert!(
            snr >= min_snr,
            "{freq} Hz at {mode:?}: SNR {snr:.1} dB < {min_snr} dB"
        );
        if freq == 1000.0 {
            low_band.push(snr);
        }
    }
    // Each lower sub-band bit given to data costs the 1 kHz tone about 6 dB.
    assert!(low_band[0] - low_band[1] > 4.0 && low_band[1] - low_band[2] > 4.0);
}

#[test]
fn a_silent_input_decodes_to_near_silence() {
    let octets = encode_in_frames(&[0i16; 3200], FRAME_SAMPLES);
    for mode in MODES {
        let decoded = decode_in_frames(mode, &octets, FRAME_SAMPLES / 2);
        let peak = decoded.iter().map(|x| x.unsigned_abs()).max().unwrap_or(0);
        assert!(peak <= 8, "{mode:?}: idle noise peak {peak}");
    }
}

#[test]
fn frame_boundaries_do_not_change_a_bit_of_encoder_output() {
    let pcm = speech();
    let whole = encode_in_frames(&pcm, pcm.len());
    // Sizes below, at and above the internal chunk of 160 pairs, odd numbers of
    // pairs, and single pairs.
    for frame in [2, 14, 160, 318, 320, 322, 642, 960] {
        assert_identical(
            &encode_in_frames(&pcm, frame),
            &whole,
            &format!("frames of {frame} samples"),
        );
    }
    assert_identical(&whole, include_bytes!("data/g722/speech.g722"), "speech");
}

#[test]
fn frame_boundaries_do_not_change_a_bit_of_decoder_output() {
    let octets = include_bytes!("data/g722/speech.g722");
    for mode in MODES {
        let whole = decode_in_frames(mode, octets, octets.len());
        for frame in [1, 7, 80, 159, 160, 161, 321, 480] {
            assert_identical(
                &decode_in_frames(mode, octets, frame),
                &whole,
                &format!("{mode:?}, frames of {frame} octets"),
            );
        }
    }
}

#[test]
fn reset_starts_a_new_stream() {
    let pcm = speech();
    let first = &pcm[..FRAME_SAMPLES * 10];
    let mut enc = G722Encoder::new(G722Mode::Rate64k);
    let mut out = vec![0u8; first.len() / 2];
    enc.encode(&pcm[FRAME_SAMPLES * 50..FRAME_SAMPLES * 60], &mut out);
    enc.reset();
    enc.encode(first, &mut out);
    assert_identical(
        &out,
        &include_bytes!("data/g722/speech.g722")[..out.len()],
        "encoder after reset",
    );

    let mut dec = G722Decoder::new(G722Mode::Rate64k);
    let mut pcm_out = vec![0i16; out.len() * 2];
    dec.decode(&[0x5A; 100], &mut pcm_out);
    dec.reset();
    dec.decode(&out, &mut pcm_out);
    let reference = s16le(include_bytes!("data/g722/speech.dec64.pcm"));
    assert_identical(&pcm_out, &reference[..pcm_out.len()], "decoder after reset");
}

#[test]
fn extreme_inputs_never_panic() {
    let patterns: [&[i16]; 4] = [
        &[i16::MIN; 640],
        &[i16::MAX; 640],
        &[i16::MIN, i16::MAX, i16::MAX, i16::MIN],
        &[i16::MAX, i16::MAX, i16::MIN, i16::MIN, i16::MIN, i16::MAX],
    ];
    for pattern in patterns {
        let pcm: Vec<i16> = pattern.iter().copied().cycle().take(16_000).collect();
        let octets = encode_in_frames(&pcm, FRAME_SAMPLES);
        for mode in MODES {
            decode_in_frames(mode, &octets, FRAME_SAMPLES / 2);
        }
    }
    // Every octet value, repeated so that each drives the scale factors to a limit.
    for code in 0..=255u8 {
        for mode in MODES {
            decode_in_frames(mode, &[code; 2000], 160);
        }
    }
}

/// The STL's own G.722 test sequences (`src/g722/test_data` of
/// <https://github.com/openitu/STL>): 6 s of speech, its encoding and its decoding
/// in the three modes, all made by the ITU reference. Not committed (ITU-T
/// software licence); run with an STL checkout:
/// `G722_STL_DIR=/path/to/STL cargo test --test g722_vectors -- --ignored`.
#[test]
#[ignore = "needs an openitu/STL checkout in G722_STL_DIR"]
fn the_stl_test_sequences_match_when_an_stl_checkout_is_given() {
    let dir = std::env::var("G722_STL_DIR").expect("G722_STL_DIR set to an openitu/STL checkout");
    let data = std::path::Path::new(&dir).join("src/g722/test_data");
    let read = |name: &str| {
        std::fs::read(data.join(name))
            .unwrap_or_else(|e| panic!("{}: {e}", data.join(name).display()))
    };
    let input = s16le(&read("inpsp.bin"));
    // codspw.cod: one code per 16-bit little-endian word.
    let octets: Vec<u8> = s16le(&read("codspw.cod"))
        .iter()
        .map(|&w| u8::try_from(w).expect("8-bit codes"))
        .collect();
    assert_identical(
        &encode_in_frames(&input, FRAME_SAMPLES),
        &octets,
        "codspw.cod",
    );
    for (mode, file) in MODES
        .into_iter()
        .zip(["outsp1.bin", "outsp2.bin", "outsp3.bin"])
    {
        let ours = decode_in_frames(mode, &octets, FRAME_SAMPLES / 2);
        assert_identical(&ours, &s16le(&read(file)), file);
    }
}
