//! Sends a WAV file through the real engine (virtual clock, real lanes and rings) over an
//! impaired network and writes what the far end would hear.
//!
//! ```text
//! cargo run --release --example wav_pipeline -- IN.wav OUT.wav [--codec pcmu|pcma] [--to-codec C]
//!     [--loss PCT] [--burst MEAN] [--jitter-ms MS] [--drift-ppm PPM] [--seed N] [--trace FILE] [--json]
//!     [--min-delay-ms MS] [--max-delay-ms MS] [--initial-delay-ms MS]
//!     [--bitrate BPS] [--complexity N] [--fec on|off] [--opus-rate HZ]   (Opus settings; the
//!     rate, 8000/12000/16000/24000/48000, is the Opus legs' audio rate and, when --codec is
//!     opus, the rate IN.wav must have)
//!     [--aec ECHO_REF.wav]   (the far end says ECHO_REF.wav; IN.wav carries its echo, which
//!     the echo canceller on the received audio removes)
//!     [--vad] [--agc] [--ns] [--ns-rnn] [--dtmf-detect]   (voice processing on the received
//!     audio; --ns-rnn: the RNN noise suppressor, 48 kHz Opus sessions only)
//!     [--dtx]   (with --vad: the far leg sends RFC 3389 SID frames through the silences the
//!     VAD finds, and the far end plays comfort noise from them)
//! ```
//! The voice-processing flags run those components on the impaired leg's received audio;
//! the `--json` summary then lists what the engine reported: `dtmf_digits` (in order, e.g.
//! `"123#"`) and `talkspurts` (`[start_ms, end_ms]` on the simulated clock).
//!
//! `--reference-fixed MS` runs a reference receiver instead of the engine: a fixed playout
//! delay of MS after each packet's send time, late or lost frames replaced by repeating the
//! last frame (the classic fixed buffer), on the same deliveries; for comparisons.
//!
//! `--jitter-ms` is the standard deviation of a normal network delay around a 40 ms base;
//! `--burst` switches loss to Gilbert–Elliott with that mean burst length; `--trace` replays a
//! CSV (`send_index,arrival_ms[,ssrc,marker]`) instead of the model.

use media_core::buffer::adaptive::JitterConfig;
use media_core::codec::OpusSettings;
use media_core::integration::pipeline::{run, PipelineConfig};
use media_core::processing::audio::DspConfig;
use media_core::quality::impairment::{
    read_trace, simulate, ImpairmentConfig, JitterModel, LossModel,
};
use media_core::{CodecSpec, Ptime};

fn codec(name: &str) -> Result<CodecSpec, String> {
    match name.to_ascii_lowercase().as_str() {
        "pcmu" => Ok(CodecSpec::PCMU),
        "pcma" => Ok(CodecSpec::PCMA),
        "g722" => Ok(CodecSpec::G722),
        "opus" => Ok(CodecSpec::OPUS),
        other => Err(format!(
            "unsupported codec {other} (this build: pcmu, pcma)"
        )),
    }
}

/// Options without a value.
const FLAGS: [&str; 7] = [
    "--json",
    "--vad",
    "--agc",
    "--ns",
    "--ns-rnn",
    "--dtmf-detect",
    "--dtx",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let positional: Vec<&String> = {
        let mut v = Vec::new();
        let mut i = 0;
        while i < args.len() {
            if args[i].starts_with("--") {
                i += if FLAGS.contains(&args[i].as_str()) {
                    1
                } else {
                    2
                };
            } else {
                v.push(&args[i]);
                i += 1;
            }
        }
        v
    };
    if positional.len() != 2 {
        eprintln!("usage: wav_pipeline IN.wav OUT.wav [--codec C] [--to-codec C] [--loss PCT] [--burst MEAN] [--jitter-ms MS] [--drift-ppm PPM] [--seed N] [--trace FILE] [--json]");
        std::process::exit(2);
    }
    let opt = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let num = |name: &str, d: f64| -> Result<f64, String> {
        opt(name)
            .map(|v| {
                v.parse::<f64>()
                    .map_err(|_| format!("{name}: not a number: {v}"))
            })
            .unwrap_or(Ok(d))
    };
    let json = args.iter().any(|a| a == "--json");
    let c = codec(&opt("--codec").unwrap_or_else(|| "pcmu".into()))?;
    let to = match opt("--to-codec") {
        Some(n) => codec(&n)?,
        None => c,
    };

    let mut opus = OpusSettings::default();
    if let Some(r) = opt("--opus-rate") {
        opus.sample_rate = media_core::SampleRate::new(r.parse()?)
            .filter(|&r| OpusSettings::is_opus_rate(r))
            .ok_or("--opus-rate: 8000, 12000, 16000, 24000 or 48000")?;
    }
    let mut reader = hound::WavReader::open(positional[0])?;
    let spec = reader.spec();
    let rate = match c.codec {
        media_core::Codec::Opus => opus.sample_rate.hz(),
        other => other.info().sample_rate.hz(),
    };
    if spec.channels != 1 || spec.sample_rate != rate || spec.bits_per_sample != 16 {
        return Err(format!(
            "{}: need mono 16-bit {} Hz for {:?} (got {} ch, {} bit, {} Hz)",
            positional[0], rate, c.codec, spec.channels, spec.bits_per_sample, spec.sample_rate
        )
        .into());
    }
    let input: Vec<i16> = reader.samples::<i16>().collect::<Result<_, _>>()?;
    let frame = c.codec.frame_samples(Ptime::MS_20);
    let frames = input.len() / frame;

    let deliveries = if let Some(path) = opt("--trace") {
        read_trace(&std::fs::read_to_string(&path)?)?
    } else {
        let loss_pct = num("--loss", 0.0)?;
        let loss = match opt("--burst") {
            Some(b) => LossModel::gilbert_elliott_from_mean(loss_pct, b.parse()?)?,
            None if loss_pct > 0.0 => LossModel::Iid { percent: loss_pct },
            None => LossModel::None,
        };
        let jitter_ms = num("--jitter-ms", 0.0)?;
        let cfg = ImpairmentConfig {
            seed: num("--seed", 1.0)? as u64,
            loss,
            jitter: if jitter_ms > 0.0 {
                JitterModel::Normal {
                    mean_ms: 0.0,
                    std_ms: jitter_ms,
                }
            } else {
                JitterModel::None
            },
            base_delay_ms: 40.0,
            drift_ppm: num("--drift-ppm", 0.0)?,
            ..Default::default()
        };
        simulate(&cfg, frames, 20.0, 0x1234_5678)
    };
    let jitter = JitterConfig {
        min_delay_ms: num("--min-delay-ms", 20.0)? as u32,
        max_delay_ms: num("--max-delay-ms", 500.0)? as u32,
        initial_delay_ms: num("--initial-delay-ms", 60.0)? as u32,
        ..Default::default()
    };
    if let Some(d) = opt("--reference-fixed") {
        let delay: f64 = d.parse()?;
        let out = fixed_reference(&input, frame, c, &deliveries, delay);
        write_wav(positional[1], rate, &out.0)?;
        if json {
            println!(
                "{{\"frames_played\":{},\"frames_concealed\":{},\"mean_playout_delay_ms\":{:.2},\"p95_playout_delay_ms\":{:.2}}}",
                frames, out.1, delay, delay
            );
        } else {
            println!(
                "reference fixed buffer {delay} ms: {} of {frames} frames concealed by repetition",
                out.1
            );
        }
        return Ok(());
    }
    if let Some(b) = opt("--bitrate") {
        opus.bitrate_bps = b.parse()?;
    }
    if let Some(c) = opt("--complexity") {
        opus.complexity = c.parse()?;
    }
    if let Some(f) = opt("--fec") {
        opus.inband_fec = f == "on";
    }
    let has = |f: &str| args.iter().any(|a| a == f);
    // --aec ECHO_REF.wav: the far end says ECHO_REF (sent on the far leg); IN.wav is what
    // the near end's microphone picked up (near speech plus the echo of ECHO_REF), and the
    // echo canceller on the received audio removes the echo.
    let far_end = match opt("--aec") {
        Some(path) => {
            let far_rate = match to.codec {
                media_core::Codec::Opus => opus.sample_rate.hz(),
                other => other.info().sample_rate.hz(),
            };
            let mut r = hound::WavReader::open(&path)?;
            let sp = r.spec();
            if sp.channels != 1 || sp.bits_per_sample != 16 || sp.sample_rate != far_rate {
                return Err(format!(
                    "{path}: need mono 16-bit {far_rate} Hz for the far leg ({:?})",
                    to.codec
                )
                .into());
            }
            Some(r.samples::<i16>().collect::<Result<Vec<_>, _>>()?)
        }
        None => None,
    };
    let dsp = DspConfig {
        aec: far_end.as_ref().map(|_| Default::default()),
        vad: has("--vad").then(Default::default),
        agc: has("--agc").then(Default::default),
        ns: has("--ns").then(Default::default),
        ns_rnn: has("--ns-rnn").then(Default::default),
        dtmf: has("--dtmf-detect").then(Default::default),
        ..Default::default()
    };
    let result = run(
        &input,
        &PipelineConfig {
            codec: c,
            to_codec: to,
            ptime: Ptime::MS_20,
            deliveries,
            jitter,
            opus,
            dsp,
            far_end,
            dtx: has("--dtx"),
        },
    )?;
    let mut w = hound::WavWriter::create(
        positional[1],
        hound::WavSpec {
            channels: 1,
            sample_rate: rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        },
    )?;
    for s in &result.output {
        w.write_sample(*s)?;
    }
    w.finalize()?;
    if json {
        println!("{}", result.to_json());
    } else {
        println!(
            "{} -> {} ({:?} -> {:?}), {} frames",
            positional[0], positional[1], c.codec, to.codec, frames
        );
        println!(
            "  frames played {}, concealed {}, late discards {}, duplicates {}",
            result.frames_played, result.frames_concealed, result.late_discards, result.duplicates
        );
        println!(
            "  playout delay mean {:.1} ms, p95 {:.1} ms; jitter {:.1} ms; loss {:.2}%; MOS estimate {:.2}",
            result.mean_playout_delay_ms(),
            result.p95_playout_delay_ms(),
            result.jitter_ms,
            result.loss_percent,
            result.mos_estimate
        );
        println!(
            "  time-scale: {} samples removed, {} added; jitter buffer target {} ms",
            result.stats.samples_accelerated,
            result.stats.samples_expanded,
            result.stats.jb_target_ms
        );
        println!(
            "  toward the far end: {} packets ({} SID), {} frames not sent (DTX)",
            result.far_packets, result.far_sids, result.far_frames_skipped
        );
        if let Some(erle) = result.echo_erle_db {
            println!("  echo canceller: ERLE {erle:.1} dB over its last second of far-end speech");
        }
    }
    Ok(())
}

fn write_wav(path: &str, rate: u32, pcm: &[i16]) -> Result<(), Box<dyn std::error::Error>> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec)?;
    for s in pcm {
        w.write_sample(*s)?;
    }
    w.finalize()?;
    Ok(())
}

/// The reference receiver: frame k plays at `send_ms(k) + delay_ms`; a frame whose packet
/// has not arrived by then (lost or late) repeats the previous frame. Codec round trip
/// included, no engine. Returns the output and how many frames were repeated.
fn fixed_reference(
    input: &[i16],
    frame: usize,
    c: CodecSpec,
    deliveries: &[media_core::quality::impairment::Delivery],
    delay_ms: f64,
) -> (Vec<i16>, usize) {
    use media_core::codec::{AnyDecoder, AnyEncoder};
    let frames = input.len() / frame;
    let mut on_time = vec![false; frames];
    for d in deliveries {
        if d.send_index < frames && d.arrival_ms <= d.send_index as f64 * 20.0 + delay_ms {
            on_time[d.send_index] = true;
        }
    }
    let mut enc = AnyEncoder::new(c.codec);
    let mut dec = AnyDecoder::new(c.codec);
    let mut out = vec![0i16; input.len()];
    let mut bytes = vec![0u8; frame];
    let mut last = vec![0i16; frame];
    let mut repeated = 0;
    for k in 0..frames {
        let dst = &mut out[k * frame..(k + 1) * frame];
        if on_time[k] {
            let n = enc
                .encode(&input[k * frame..(k + 1) * frame], &mut bytes)
                .unwrap_or(0);
            dec.decode(&bytes[..n], dst).unwrap_or(0);
            last.copy_from_slice(dst);
        } else {
            dst.copy_from_slice(&last);
            repeated += 1;
        }
    }
    (out, repeated)
}
