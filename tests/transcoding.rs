//! Every transcoding pair among PCMU, PCMA, G.722 and Opus through the real engine (the
//! file pipeline: virtual clock, real lanes, a clean network): a 1 kHz tone sent in one
//! codec comes out of the other leg, decoded by the far end, still a clean tone. Same-codec
//! pairs relay (no decode/encode) and must come out bit-identical in G.711.

mod common;

use common::tone_fit;
use media_core::codec::{Codec, CodecSpec, OpusSettings};
use media_core::integration::pipeline::{run, PipelineConfig};
use media_core::quality::impairment::{simulate, ImpairmentConfig};
use media_core::{Ptime, SampleRate};

const CODECS: [CodecSpec; 4] = [
    CodecSpec::PCMU,
    CodecSpec::PCMA,
    CodecSpec::G722,
    CodecSpec::OPUS,
];

/// 2 s of a 1 kHz tone at -12 dBFS at `rate_hz`.
fn tone(rate_hz: u32) -> Vec<i16> {
    (0..2 * rate_hz as usize)
        .map(|n| {
            let t = n as f64 / f64::from(rate_hz);
            (8000.0 * (2.0 * std::f64::consts::PI * 1000.0 * t).sin()) as i16
        })
        .collect()
}

/// Tone SNR (dB) of what the far end hears when `from` is sent and `to` is sent on.
fn far_end_snr(from: CodecSpec, to: CodecSpec) -> f64 {
    far_end_snr_with(from, to, OpusSettings::default())
}

/// [`far_end_snr`] with `opus` settings on the Opus legs (their audio rate included).
fn far_end_snr_with(from: CodecSpec, to: CodecSpec, opus: OpusSettings) -> f64 {
    let rate = match from.codec {
        Codec::Opus => opus.sample_rate.hz(),
        c => c.info().sample_rate.hz(),
    };
    let input = tone(rate);
    let frames = input.len() / (rate as usize / 50);
    let cfg = PipelineConfig {
        codec: from,
        to_codec: to,
        ptime: Ptime::MS_20,
        deliveries: simulate(&ImpairmentConfig::default(), frames, 20.0, 0x1234),
        jitter: Default::default(),
        opus,
        dsp: Default::default(),
        far_end: None,
        dtx: false,
    };
    let out = run(&input, &cfg)
        .map_err(|e| format!("{e:?}"))
        .unwrap()
        .output;
    // Skip the start (buffering, codec warm-up) and the end.
    let mid = &out[out.len() / 4..out.len() * 3 / 4];
    tone_fit(mid, 1000.0, f64::from(rate)).0
}

#[test]
fn every_pair_of_codecs_transcodes_a_tone_cleanly() {
    for from in CODECS {
        for to in CODECS {
            let snr = far_end_snr(from, to);
            eprintln!("{:?} -> {:?}: {snr:.1} dB", from.codec, to.codec);
            // Measured 45.9-62.5 dB for G.711 pairs, 38.9-49.8 with G.722, 32.6-33.9 with
            // Opus (perceptual coding); a tandem is bounded by its worse leg.
            let floor = match (from.codec, to.codec) {
                (Codec::Opus, _) | (_, Codec::Opus) => 28.0,
                (Codec::G722, _) | (_, Codec::G722) => 35.0,
                _ => 40.0,
            };
            assert!(
                snr > floor,
                "{:?} -> {:?}: tone SNR {snr:.1} dB (floor {floor})",
                from.codec,
                to.codec
            );
        }
    }
}

#[test]
fn opus_at_every_internal_rate_transcodes_to_and_from_g711_and_g722() {
    // RFC 7587: the RTP clock stays 48 kHz whatever rate libopus runs at; an Opus leg at
    // 8 kHz bridged to G.711 needs no resampler at all.
    for hz in [8000, 12000, 16000, 24000] {
        let opus = OpusSettings {
            sample_rate: SampleRate::new(hz).unwrap(),
            ..OpusSettings::default()
        };
        for other in [CodecSpec::PCMU, CodecSpec::G722] {
            for (from, to) in [(CodecSpec::OPUS, other), (other, CodecSpec::OPUS)] {
                let snr = far_end_snr_with(from, to, opus);
                eprintln!("opus@{hz}: {:?} -> {:?}: {snr:.1} dB", from.codec, to.codec);
                assert!(
                    snr > 25.0,
                    "opus@{hz}: {:?} -> {:?}: tone SNR {snr:.1} dB",
                    from.codec,
                    to.codec
                );
            }
        }
    }
}

#[test]
fn stereo_opus_is_sent_as_two_channels_and_still_transcodes() {
    let opus = OpusSettings {
        stereo: true,
        ..OpusSettings::default()
    };
    for (from, to) in [
        (CodecSpec::OPUS, CodecSpec::PCMU),
        (CodecSpec::PCMU, CodecSpec::OPUS),
    ] {
        let snr = far_end_snr_with(from, to, opus);
        eprintln!(
            "stereo opus: {:?} -> {:?}: {snr:.1} dB",
            from.codec, to.codec
        );
        assert!(
            snr > 25.0,
            "{:?} -> {:?}: {snr:.1} dB",
            from.codec,
            to.codec
        );
    }
}
