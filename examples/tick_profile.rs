//! A fixed, deterministic lane workload for profilers (callgrind, perf): N bridged calls on
//! the virtual clock, one packet per stream per 20 ms, for F frames.
//!
//! `valgrind --tool=callgrind target/release/examples/tick_profile -- 5000 pcmu-pcma 50`
//! reports instructions per call per 20 ms in PERF.md. Arguments: calls (default 5000),
//! scenario `pcmu-pcma` or `relay-pcmu`, frames (default 50).

use std::time::Instant;

use media_core::codec::audio::g711;
use media_core::rtp::{write_header, RtpHeader};
use media_core::{
    ClockMode, CodecSpec, DialogId, EngineConfig, MediaEngine, MediaSessionParams, Ptime,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--").collect();
    let calls: usize = args.first().and_then(|s| s.parse().ok()).unwrap_or(5000);
    let relay = args.get(1).map(|s| s == "relay-pcmu").unwrap_or(false);
    let frames: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(50);
    let engine = MediaEngine::new(EngineConfig {
        clock: ClockMode::Virtual,
        sessions_per_lane: 2 * calls,
        max_payload_bytes: 320,
        max_frame_samples: 480,
        command_capacity: 4096,
        ..Default::default()
    })?;
    engine.start()?;
    let b_codec = if relay {
        CodecSpec::PCMU
    } else {
        CodecSpec::PCMA
    };
    let mut legs = Vec::new();
    for i in 0..calls as u64 {
        let (a, b) = engine.create_call(
            (
                DialogId(2 * i),
                MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_20),
            ),
            (
                DialogId(2 * i + 1),
                MediaSessionParams::new(b_codec, Ptime::MS_20),
            ),
        )?;
        legs.push((a.id, 0u8));
        legs.push((b.id, b_codec.payload_type.get()));
    }
    let (mut ing, mut eg) = engine.take_rtp_handles(0).expect("handles");
    let pcm: Vec<i16> = (0..160)
        .map(|i| ((i as f32 * 0.35).sin() * 6000.0) as i16)
        .collect();
    let mut pk = [vec![0u8; 172], vec![0u8; 172]];
    g711::ulaw_encode(&pcm, &mut pk[0][12..]);
    g711::alaw_encode(&pcm, &mut pk[1][12..]);
    let mut in_step = std::time::Duration::ZERO;
    let mut out = 0u64;
    for f in 0..frames {
        for &(id, pt) in &legs {
            let p = &mut pk[usize::from(pt == 8)];
            let h = RtpHeader {
                marker: false,
                payload_type: pt,
                sequence: f as u16,
                timestamp: f as u32 * 160,
                ssrc: id.slot(),
            };
            write_header(&h, p)?;
            ing.push_at(id, p, 1 + f as u64 * 20_000_000)?;
        }
        let t = Instant::now();
        engine.step(2)?;
        in_step += t.elapsed();
        while eg.pop().is_some() {
            out += 1;
        }
    }
    let (mut acc, mut exp, mut conc) = (0, 0, 0);
    for &(id, _) in &legs {
        let st = engine.session_stats(id)?;
        acc += st.samples_accelerated;
        exp += st.samples_expanded;
        conc += st.samples_concealed;
    }
    println!("all legs: {acc} samples accelerated, {exp} expanded, {conc} concealed");
    println!(
        "{calls} calls, {frames} frames: {out} packets out, lane time {:.3} µs per call per 20 ms",
        in_step.as_secs_f64() * 1e6 / (calls * frames) as f64
    );
    Ok(())
}
