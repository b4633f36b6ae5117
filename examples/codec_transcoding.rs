//! Transcodes a speech WAV through every pair of codecs media-core speaks (PCMU, PCMA,
//! G.722, Opus), each through the real engine (virtual clock, real lanes: decode, resample,
//! encode, or relay for a same-codec pair), and writes what the far end hears.
//!
//! ```text
//! cargo run --release --example codec_transcoding -- [IN.wav] [OUT_DIR]
//! ```
//! IN.wav: mono 16-bit at 8, 16 or 48 kHz (default tests/data/audio/speech1_48000.wav);
//! it is resampled to each sending codec's rate first. OUT_DIR (default
//! target/codec_transcoding) receives `FROM-TO.wav` at the sending codec's rate, time-aligned
//! with what was sent, and `FROM-sent.wav`, the reference to score against, e.g.
//! `python3 scripts/pesq_score.py OUT/pcmu-sent.wav OUT/pcmu-opus.wav nb`.
//! Prints per pair: frames played, the output's active level against the input's, and
//! whether the engine relayed or transcoded.

use std::path::PathBuf;

use media_core::codec::{CodecSpec, OpusSettings};
use media_core::integration::pipeline::{run, PipelineConfig};
use media_core::processing::format::resample::Resampler;
use media_core::quality::impairment::{simulate, ImpairmentConfig};
use media_core::Ptime;

const CODECS: [(&str, CodecSpec); 4] = [
    ("pcmu", CodecSpec::PCMU),
    ("pcma", CodecSpec::PCMA),
    ("g722", CodecSpec::G722),
    ("opus", CodecSpec::OPUS),
];

fn level_db(x: &[i16]) -> f64 {
    let p = x.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / x.len().max(1) as f64;
    10.0 * (p.max(1e-9) / (32768.0f64 * 32768.0)).log10()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--").collect();
    let input = PathBuf::from(
        args.first()
            .map(String::as_str)
            .unwrap_or("tests/data/audio/speech1_48000.wav"),
    );
    let out_dir = PathBuf::from(
        args.get(1)
            .map(String::as_str)
            .unwrap_or("target/codec_transcoding"),
    );
    std::fs::create_dir_all(&out_dir)?;
    let mut reader = hound::WavReader::open(&input)?;
    let spec = reader.spec();
    if spec.channels != 1 || spec.bits_per_sample != 16 {
        return Err(format!("{}: need mono 16-bit", input.display()).into());
    }
    let pcm: Vec<i16> = reader.samples::<i16>().collect::<Result<_, _>>()?;
    println!(
        "{}: {:.1} s at {} Hz; every pair through the engine, clean network, 20 ms packets",
        input.display(),
        pcm.len() as f64 / f64::from(spec.sample_rate),
        spec.sample_rate
    );
    println!(
        "{:<6} {:<6} {:>7} {:>10} {:>10}  path",
        "from", "to", "frames", "in dBFS", "out dBFS"
    );
    for (from_name, from) in CODECS {
        let rate = from.codec.info().sample_rate.hz();
        // The input at the sending codec's rate.
        let sent: Vec<i16> = if rate == spec.sample_rate {
            pcm.clone()
        } else {
            let chunk = spec.sample_rate as usize / 50;
            let mut r = Resampler::new(spec.sample_rate, rate, 1, chunk)?;
            let mut out = vec![0i16; r.max_output_len()];
            let mut v = Vec::with_capacity(pcm.len());
            for c in pcm.chunks_exact(chunk) {
                let n = r.process(c, &mut out);
                v.extend_from_slice(&out[..n]);
            }
            v
        };
        let wav = hound::WavSpec {
            channels: 1,
            sample_rate: rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(out_dir.join(format!("{from_name}-sent.wav")), wav)?;
        for &s in &sent {
            w.write_sample(s)?;
        }
        w.finalize()?;
        let frames = sent.len() / from.codec.frame_samples(Ptime::MS_20);
        for (to_name, to) in CODECS {
            let cfg = PipelineConfig {
                codec: from,
                to_codec: to,
                ptime: Ptime::MS_20,
                deliveries: simulate(&ImpairmentConfig::default(), frames, 20.0, 0x5eed),
                jitter: Default::default(),
                opus: OpusSettings::default(),
                dsp: Default::default(),
                far_end: None,
                dtx: false,
            };
            let r = run(&sent, &cfg)?;
            let mut w =
                hound::WavWriter::create(out_dir.join(format!("{from_name}-{to_name}.wav")), wav)?;
            for &s in &r.output {
                w.write_sample(s)?;
            }
            w.finalize()?;
            let path = if r.stats.frames_relayed > r.stats.frames_decoded {
                "relayed (no decode/encode)"
            } else {
                "transcoded"
            };
            println!(
                "{:<6} {:<6} {:>7} {:>10.1} {:>10.1}  {path}",
                from_name,
                to_name,
                r.frames_played,
                level_db(&sent),
                level_db(&r.output)
            );
        }
    }
    println!("wrote {}", out_dir.display());
    Ok(())
}
