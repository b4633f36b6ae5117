//! A real engine run: real-time lane threads, gateway calls bridging a PCMU leg to a PCMA
//! leg, a generated tone pushed as RTP every 20 ms, PCMA popped and checked, counters printed.
//!
//! `cargo run --release --example basic_session [-- --calls N --seconds S --split]`

use std::time::{Duration, Instant};

use media_core::codec::audio::g711;
use media_core::rtp::{write_header, RtpHeader, RtpPacket};
use media_core::{
    CodecSpec, DialogId, EngineConfig, EngineEvent, MediaEngine, MediaSessionParams, Ptime,
    Topology,
};

#[path = "common/args.rs"]
mod args;
use args::arg;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let calls = arg("--calls", 50u64) as usize;
    let seconds = arg("--seconds", 3u64);
    let split = std::env::args().any(|a| a == "--split");
    let topology = if split {
        Topology::Split
    } else {
        Topology::Fused
    };
    let engine = MediaEngine::new(EngineConfig {
        lanes: 2,
        sessions_per_lane: calls + 8,
        topology,
        cores: core_list(),
        ..Default::default()
    })?;
    let mut handles: Vec<_> = (0..2)
        .map(|l| engine.take_rtp_handles(l).expect("handles"))
        .collect();
    engine.start()?;
    println!("media-core basic_session: {calls} calls (PCMU leg A <-> PCMA leg B), {seconds} s, {topology:?} lanes");

    let mut legs = Vec::new();
    for i in 0..calls as u64 {
        let (a, b) = engine.create_call(
            (
                DialogId(2 * i),
                MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_20),
            ),
            (
                DialogId(2 * i + 1),
                MediaSessionParams::new(CodecSpec::PCMA, Ptime::MS_20),
            ),
        )?;
        legs.push((a, b));
    }

    // A 440 Hz tone, 8 kHz, -12 dBFS.
    let tone = |n: usize| -> i16 {
        ((n as f64 * 2.0 * std::f64::consts::PI * 440.0 / 8000.0).sin() * 8000.0) as i16
    };
    let frames = seconds * 50;
    let mut pkt = vec![0u8; 12 + 160];
    let mut pcm = [0i16; 160];
    let mut got = 0u64;
    let (mut sig, mut err) = (0f64, 0f64);
    // First timestamp seen per sending session: leg B's timestamps start at a random value
    // (RFC 3550 §5.1); the frame index is the offset from the first one.
    let mut ts0 = std::collections::HashMap::new();
    let mut out = vec![0u8; 1500];
    let start = Instant::now();
    for k in 0..frames {
        for (i, p) in pcm.iter_mut().enumerate() {
            *p = tone(k as usize * 160 + i);
        }
        g711::ulaw_encode(&pcm, &mut pkt[12..]);
        for (a, _) in &legs {
            let h = RtpHeader {
                marker: k == 0,
                payload_type: 0,
                sequence: k as u16,
                timestamp: k as u32 * 160,
                ssrc: 0x1000 + a.id.slot(),
            };
            write_header(&h, &mut pkt)?;
            handles[a.lane()].0.push(a.id, &pkt)?;
        }
        for (_, eg) in handles.iter_mut() {
            while let Some(p) = eg.pop() {
                let n = p.copy_to(&mut out).expect("buffer large enough");
                let rtp = RtpPacket::parse(&out[..n])?;
                assert_eq!(rtp.payload_type(), 8, "leg B sends PCMA");
                // Compare the PCMA audio with the tone frame its timestamp says it carries.
                let first = *ts0.entry(p.session()).or_insert(rtp.timestamp());
                let frame = rtp.timestamp().wrapping_sub(first) as usize / 160;
                let mut dec = [0i16; 160];
                g711::alaw_decode(rtp.payload(), &mut dec);
                got += 1;
                for (i, &d) in dec.iter().enumerate() {
                    let x = f64::from(tone(frame * 160 + i));
                    sig += x * x;
                    err += (x - f64::from(d)).powi(2);
                }
            }
        }
        let next = start + Duration::from_millis(20 * (k + 1));
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    std::thread::sleep(Duration::from_millis(200));
    for (_, eg) in handles.iter_mut() {
        while eg.pop().is_some() {
            got += 1;
        }
    }
    let snr = 10.0 * (sig / err.max(1.0)).log10();

    println!(
        "\nsent {} PCMU packets, received {} PCMA packets (each stream is followed by up to 100 ms of\nconcealment before the silence propagates)",
        frames * calls as u64,
        got
    );
    println!("SNR of the tone received on leg B vs the tone sent on leg A (µ-law -> A-law tandem): {snr:.1} dB");
    if snr < 30.0 {
        return Err(
            format!("audio corrupted: SNR {snr:.1} dB (a G.711 tandem gives ~33 dB)").into(),
        );
    }
    for lane in 0..2 {
        let s = engine.lane_stats(lane).expect("lane");
        println!(
            "lane {lane}: {} sessions, {} ticks, max tick {:.1} µs, last tick {:.1} µs, overruns {}, drops: unknown {} malformed {} ingress-full {}",
            engine.lane_loads()[lane],
            s.ticks,
            s.max_tick_ns as f64 / 1e3,
            s.last_tick_ns as f64 / 1e3,
            s.deadline_overruns,
            s.unknown_session + s.ingress_unknown,
            s.malformed,
            s.ingress_full
        );
    }
    let (a, b) = legs[0];
    let sa = engine.session_stats(a.id)?;
    let sb = engine.session_stats(b.id)?;
    println!(
        "call 0: leg A rx {} pkts, decoded {}, missing {}; leg B tx {} pkts ({} bytes)",
        sa.rx_packets, sa.frames_decoded, sa.frames_missing, sb.tx_packets, sb.tx_payload_bytes
    );
    for (a, b) in legs {
        engine.destroy_media_session(a.id)?;
        engine.destroy_media_session(b.id)?;
    }
    engine.flush(Duration::from_secs(1))?;
    let mut started = 0;
    let mut stopped = 0;
    for ev in engine.events() {
        match ev {
            EngineEvent::SessionStarted(_) => started += 1,
            EngineEvent::SessionStopped(_) => stopped += 1,
            other => println!("event: {other:?}"),
        }
    }
    println!("events: {started} sessions started, {stopped} stopped");
    engine.stop()?;
    println!("engine stopped; all lane threads joined");
    Ok(())
}

fn core_list() -> Vec<usize> {
    core_affinity::get_core_ids()
        .map(|v| v.into_iter().map(|c| c.id).collect())
        .unwrap_or_default()
}
