//! An endpoint application on media-core: an IVR that answers callers on PCMU, G.722 and
//! Opus, plays each a spoken prompt, collects the digits they key (RFC 4733) and records what
//! they say, through the lane's application audio handle (`MediaEngine::attach_audio`,
//! `AudioHandle`). The callers are simulated phones: each sends recorded speech and its
//! digits as RTP and decodes what the IVR sends back. Runs on the virtual clock (as fast
//! as it can, deterministic), writes each caller's recording as a WAV file and prints a
//! report.
//!
//! The callers' handsets echo the prompt back (30 ms, -12 dB); each session's echo
//! canceller takes the prompt the IVR sends as its reference, so the recordings hold the
//! callers without it (`echo -dB`: how far below the echo sent the recording is in the
//! caller's third second, listening; `--no-aec` for the comparison).
//!
//! It also says what an IVR costs: the lanes' thread CPU time per caller per 20 ms after the
//! first second (and the callers per core that implies at full load, an estimate at this
//! count: a lane's cost per session grows once its sessions' state outgrows the caches),
//! and the application side's (its `AudioHandle` writes and reads, with this example's
//! copying of what it reads into the recordings). The simulated transport (ingress pushes,
//! egress pops) and phones are not counted. `--codec pcmu|g722|opus` gives every caller
//! one codec (default: PCMU, G.722 and Opus in turn); WAV files are written for the first
//! 16 callers.
//!
//! `cargo run --release --example ivr [-- --callers N --seconds S --codec C --out DIR --no-aec]`

use std::collections::HashMap;
use std::path::PathBuf;

use media_core::codec::audio::g711;
use media_core::codec::audio::g722::{G722Decoder, G722Encoder, G722Mode};
use media_core::codec::audio::telephone_event::{digit_to_event, EventPayload};
use media_core::processing::audio::aec::AecConfig;
use media_core::processing::format::resample::Resampler;
use media_core::rtp::{write_header, RtpHeader};
use media_core::runtime::msg::DtmfSource;
use media_core::{
    ClockMode, CodecSpec, DialogId, EngineConfig, EngineEvent, MediaEngine, MediaSessionParams,
    PayloadType, Ptime, SessionId,
};

#[path = "common/args.rs"]
mod args;
use args::arg;
#[path = "common/cpu.rs"]
mod cpu;
use cpu::thread_cpu_ns;

/// The caller's side of one call: its codec, its speech, the digits it keys, and what it
/// heard from the IVR.
struct Phone {
    id: SessionId,
    codec: CodecSpec,
    /// Samples per 20 ms frame at the codec's rate.
    frame: usize,
    speech: std::rc::Rc<[i16]>,
    keys: &'static str,
    g722: Option<(G722Encoder, G722Decoder)>,
    opus: Option<(opus::Encoder, opus::Decoder)>,
    heard_energy: f64,
    heard_frames: usize,
    /// Everything it played, for its handset's echo.
    heard: Vec<i16>,
    /// Energy of that echo in what it sent in [`ECHO_WINDOW`] (before the caller speaks),
    /// and of the IVR's recording over the same frames.
    echo_sent: f64,
    echo_recorded: f64,
    /// What the IVR collected from this caller, and what it recorded.
    collected: String,
    recorded: Vec<i16>,
}

impl Phone {
    fn rate(&self) -> u32 {
        (self.frame * 50) as u32
    }

    /// Frame `k` of the caller's speech (from 3 s on: it listens to the prompt first), with
    /// the handset's echo of what it played (30 ms later, -12 dB), encoded.
    fn encode(&mut self, k: usize, out: &mut [u8]) -> usize {
        let start = (k * self.frame) % (self.speech.len() - self.frame);
        let mut pcm = [0i16; 960];
        let pcm = &mut pcm[..self.frame];
        if k >= SPEAKS_FROM {
            pcm.copy_from_slice(&self.speech[start..start + self.frame]);
        }
        let delay = self.frame * 3 / 2;
        let base = self.heard.len() as isize - (self.frame + delay) as isize;
        for (j, x) in pcm.iter_mut().enumerate() {
            if let Some(&e) = usize::try_from(base + j as isize)
                .ok()
                .and_then(|t| self.heard.get(t))
            {
                *x = x.saturating_add(e / 4);
                if ECHO_WINDOW.contains(&k) {
                    self.echo_sent += f64::from(e / 4).powi(2);
                }
            }
        }
        let pcm = &*pcm;
        if let Some((enc, _)) = self.g722.as_mut() {
            enc.encode(pcm, out)
        } else if let Some((enc, _)) = self.opus.as_mut() {
            enc.encode(pcm, out).unwrap_or(0)
        } else {
            g711::ulaw_encode(pcm, out)
        }
    }

    /// Plays what the IVR sent (keeps its energy: the prompt must arrive).
    fn hear(&mut self, payload: &[u8]) {
        let mut pcm = [0i16; 960];
        let n = if let Some((_, dec)) = self.g722.as_mut() {
            dec.decode(payload, &mut pcm)
        } else if let Some((_, dec)) = self.opus.as_mut() {
            dec.decode(payload, &mut pcm, false).unwrap_or(0)
        } else {
            g711::ulaw_decode(payload, &mut pcm)
        };
        self.heard_energy += pcm[..n].iter().map(|&x| f64::from(x).powi(2)).sum::<f64>();
        self.heard.extend_from_slice(&pcm[..n]);
        self.heard_frames += 1;
    }
}

/// Frames before the caller starts talking (3 s), and keying digits (3.5 s).
const SPEAKS_FROM: usize = 150;
const KEYS_FROM: usize = 175;
/// Where the echo left in the recording is measured (2-3 s: the prompt playing, the
/// caller silent, its canceller past its first 2 s).
const ECHO_WINDOW: std::ops::Range<usize> = 100..150;

fn read_wav(path: &str) -> Result<Vec<i16>, Box<dyn std::error::Error>> {
    let mut r = hound::WavReader::open(path)?;
    Ok(r.samples::<i16>().collect::<Result<_, _>>()?)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let callers: usize = arg("--callers", 6);
    let seconds: usize = arg("--seconds", 8);
    let out_dir = PathBuf::from(arg("--out", "target/ivr".to_string()));
    let aec = !std::env::args().any(|a| a == "--no-aec");
    let codecs: &[CodecSpec] = match arg("--codec", String::from("mix")).as_str() {
        "pcmu" => &[CodecSpec::PCMU],
        "g722" => &[CodecSpec::G722],
        "opus" => &[CodecSpec::OPUS],
        "mix" => &[CodecSpec::PCMU, CodecSpec::G722, CodecSpec::OPUS],
        other => return Err(format!("--codec {other}: pcmu, g722, opus or mix").into()),
    };
    std::fs::create_dir_all(&out_dir)?;

    let engine = MediaEngine::new(EngineConfig {
        clock: ClockMode::Virtual,
        sessions_per_lane: callers.max(1),
        // Every session attached: about 4 application slots each way per session (the
        // default, 64 a lane, is for a few attached among many bridged).
        app_frame_slots_per_lane: Some(4 * callers + 64),
        ..Default::default()
    })?;
    engine.start()?;
    let (mut ingress, mut egress) = engine.take_rtp_handles(0).ok_or("rtp handles")?;
    let mut audio = engine.take_audio_handle(0).ok_or("audio handle")?;

    // The prompt: recorded speech at each codec's rate (48 kHz converted from 16 kHz).
    let prompt8 = read_wav("tests/data/audio/speech2_8000.wav")?;
    let prompt16 = read_wav("tests/data/audio/speech2_16000.wav")?;
    let mut prompt48 = vec![0i16; prompt16.len() * 3];
    let mut up = Resampler::new(16_000, 48_000, 1, 320)?;
    for (i, chunk) in prompt16.chunks_exact(320).enumerate() {
        up.process(chunk, &mut prompt48[i * 960..(i + 1) * 960]);
    }
    let speech8: std::rc::Rc<[i16]> = read_wav("tests/data/audio/speech1_8000.wav")?.into();
    let speech16: std::rc::Rc<[i16]> = read_wav("tests/data/audio/speech1_16000.wav")?.into();
    let speech48: std::rc::Rc<[i16]> = read_wav("tests/data/audio/speech1_48000.wav")?.into();
    let keys = ["1234", "0#", "*9", "42#", "7", "5550123"];
    let mut phones = Vec::new();
    for i in 0..callers {
        let codec = codecs[i % codecs.len()];
        let mut p = MediaSessionParams::new(codec, Ptime::MS_20);
        p.telephone_event_pt = PayloadType::new(101);
        // The prompt comes back from the caller's handset as echo: cancel it, so the
        // recording holds the caller alone (128 ms tail).
        p.dsp.aec = aec.then(AecConfig::default);
        let id = engine.create_media_session(DialogId(i as u64 + 1), p)?.id;
        engine.attach_audio(id)?;
        let frame = match codec {
            CodecSpec::G722 => 320,
            CodecSpec::OPUS => 960,
            _ => 160,
        };
        phones.push(Phone {
            id,
            codec,
            frame,
            speech: match frame {
                320 => speech16.clone(),
                960 => speech48.clone(),
                _ => speech8.clone(),
            },
            keys: keys[i % keys.len()],
            g722: (frame == 320).then(|| {
                (
                    G722Encoder::new(G722Mode::Rate64k),
                    G722Decoder::new(G722Mode::Rate64k),
                )
            }),
            opus: (frame == 960).then(|| {
                (
                    opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip)
                        .expect("opus encoder"),
                    opus::Decoder::new(48_000, opus::Channels::Mono).expect("opus decoder"),
                )
            }),
            heard_energy: 0.0,
            heard_frames: 0,
            heard: Vec::new(),
            echo_sent: 0.0,
            echo_recorded: 0.0,
            collected: String::new(),
            recorded: Vec::new(),
        });
    }
    let index: HashMap<SessionId, usize> =
        phones.iter().enumerate().map(|(i, p)| (p.id, i)).collect();

    let mut pkt = vec![0u8; 1500];
    let frames = seconds * 50;
    // Thread CPU time in the lanes (`step`) and in the application's handle calls, from
    // the second second on (after warm-up), and the frames it covers.
    let (mut lane_ns, mut app_ns, mut timed_frames) = (0u64, 0u64, 0usize);
    for k in 0..frames {
        let timed = k >= 50;
        for (i, ph) in phones.iter_mut().enumerate() {
            // The caller keys a digit every 600 ms from 3.5 s on (100 ms each, RFC 4733
            // packets in place of its audio, as phones send them).
            let ts_step = if ph.frame == 960 { 960 } else { 160 };
            let ts = (k * ts_step) as u32;
            let digit = (k >= KEYS_FROM && (k - KEYS_FROM) % 30 < 5)
                .then(|| ph.keys.chars().nth((k - KEYS_FROM) / 30))
                .flatten()
                .and_then(digit_to_event);
            let len = match digit {
                Some(event) => {
                    let into = ((k - KEYS_FROM) % 30) as u16;
                    let ev = EventPayload {
                        event,
                        end: into == 4,
                        volume: 10,
                        duration: (into + 1) * ts_step as u16,
                    };
                    let start = ts - u32::from(into) * ts_step as u32;
                    write_rtp(&mut pkt, 101, k as u16, start, into == 0, i as u32);
                    ev.write(&mut pkt[12..])
                }
                None => {
                    write_rtp(
                        &mut pkt,
                        ph.codec.payload_type.get(),
                        k as u16,
                        ts,
                        k == 0,
                        i as u32,
                    );
                    ph.encode(k, &mut pkt[12..])
                }
            };
            ingress.push(ph.id, &pkt[..12 + len])?;
        }
        // The IVR plays its prompt, one frame per period.
        let t0 = thread_cpu_ns();
        for ph in &phones {
            let prompt = match ph.frame {
                320 => &prompt16,
                960 => &prompt48,
                _ => &prompt8,
            };
            let at = (k * ph.frame) % (prompt.len() - ph.frame);
            audio.write(ph.id, &prompt[at..at + ph.frame])?;
        }
        let t1 = thread_cpu_ns();
        engine.step(2)?;
        let t2 = thread_cpu_ns();
        while let Some(p) = egress.pop() {
            let i = index[&p.session()];
            p.with_bytes(|b| phones[i].hear(&b[12..]));
        }
        // The IVR records what each caller says (their digits arrive as events).
        let t3 = thread_cpu_ns();
        while let Some(f) = audio.read() {
            let ph = &mut phones[index[&f.session()]];
            f.with_pcm(|x| {
                if ECHO_WINDOW.contains(&k) {
                    ph.echo_recorded += x.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>();
                }
                ph.recorded.extend_from_slice(x)
            });
        }
        if timed {
            lane_ns += t2 - t1;
            app_ns += (t1 - t0) + (thread_cpu_ns() - t3);
            timed_frames += 1;
        }
        for ev in engine.events() {
            if let EngineEvent::Dtmf {
                session,
                digit,
                source: DtmfSource::Rfc4733,
                ended_ms: Some(_),
            } = ev
            {
                phones[index[&session]].collected.push(digit);
            }
        }
    }

    println!(
        "IVR: {callers} callers for {seconds} s (virtual clock), recordings in {}",
        out_dir.display()
    );
    println!(
        "{:<8} {:>6} {:>9} {:>10} {:>9} {:>11} {:>10} {:>8}",
        "caller", "codec", "keyed", "collected", "heard s", "prompt dBFS", "recorded s", "echo -dB"
    );
    let mut all_ok = true;
    for ph in &phones {
        let rate = ph.rate();
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        if ph.id.slot() < 16 {
            let path = out_dir.join(format!("caller-{}.wav", ph.id.slot()));
            let mut w = hound::WavWriter::create(&path, spec)?;
            for &x in &ph.recorded {
                w.write_sample(x)?;
            }
            w.finalize()?;
        }
        let heard = ph.heard_frames as f64 * 0.02;
        let level = 10.0
            * (ph.heard_energy / (ph.heard_frames.max(1) * ph.frame) as f64 / 32768f64.powi(2))
                .max(1e-12)
                .log10();
        // How far below the echo the caller's handset sent the recording is, over the
        // prompt's second chime (the caller silent).
        let echo_removed = 10.0 * (ph.echo_sent / ph.echo_recorded.max(1.0)).log10();
        all_ok &= !aec || seconds < 3 || echo_removed > 15.0;
        let codec = match ph.codec {
            CodecSpec::G722 => "G.722",
            CodecSpec::OPUS => "Opus",
            _ => "PCMU",
        };
        let keyed: String = ph
            .keys
            .chars()
            .take((frames + 25).saturating_sub(KEYS_FROM) / 30)
            .collect();
        all_ok &= ph.collected == keyed && heard > 0.9 * seconds as f64;
        println!(
            "{:<8} {:>6} {:>9} {:>10} {:>9.1} {:>11.1} {:>10.1} {:>8}",
            ph.id.slot(),
            codec,
            keyed,
            ph.collected,
            heard,
            level,
            ph.recorded.len() as f64 / f64::from(rate),
            format!("{echo_removed:.1}")
        );
    }
    let lane = engine.lane_stats(0).ok_or("lane")?;
    println!(
        "application frames: underruns {}, dropped in {} / out {}",
        lane.app_underruns, lane.app_in_dropped, lane.app_out_dropped
    );
    if timed_frames > 0 && callers > 0 {
        // Per caller per 20 ms frame period (two 10 ms ticks per `step(2)`).
        let per = (timed_frames * callers) as f64;
        let lane_us = lane_ns as f64 / per / 1e3;
        let app_us = app_ns as f64 / per / 1e3;
        println!(
            "cost (thread CPU, after the first second): lane {lane_us:.2} us per caller per \
             20 ms (~{:.0} callers per core at full load, at this count); application side \
             (handle writes and reads, recording copies) {app_us:.2} us",
            20_000.0 / lane_us
        );
    }
    engine.stop()?;
    if !all_ok {
        return Err("a caller's digits, the prompt or the echo cancellation failed".into());
    }
    Ok(())
}

fn write_rtp(pkt: &mut [u8], pt: u8, seq: u16, ts: u32, marker: bool, ssrc: u32) {
    let h = RtpHeader {
        marker,
        payload_type: pt,
        sequence: seq,
        timestamp: ts,
        ssrc: 0x1000 + ssrc,
    };
    // Cannot fail: the buffer holds a header.
    let _ = write_header(&h, pkt);
}
