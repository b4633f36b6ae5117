//! End-to-end behaviour of the engine: transcoding, relay, lifecycle, bad input.

mod common;

use std::time::Duration;

use common::*;
use media_core::buffer::adaptive::JitterConfig;
use media_core::codec::audio::g711;
use media_core::{
    ClockMode, CodecSpec, DialogId, EngineConfig, EngineEvent, Error, IngressLimit, MediaEngine,
    MediaSessionParams, PayloadType, Placement, Ptime, SessionId, Topology,
};

/// Jitter settings for bit-exact tests: a fixed 60 ms delay, so no time-scale
/// modification changes the audio under test.
fn fixed_jitter() -> JitterConfig {
    JitterConfig {
        min_delay_ms: 60,
        initial_delay_ms: 60,
        ..Default::default()
    }
}

/// Frames the receive channel conceals after a stream stops before it goes quiet
/// (`JitterConfig::max_conceal_ms` = 100 ms of 20 ms frames, plus the one that crosses it).
const TRAILING: usize = 6;

fn virtual_engine(sessions: usize) -> MediaEngine {
    let e = MediaEngine::new(EngineConfig {
        clock: ClockMode::Virtual,
        sessions_per_lane: sessions,
        jitter: fixed_jitter(),
        ..Default::default()
    })
    .unwrap();
    e.start().unwrap();
    e
}

/// PCMU, 20 ms, receiving RFC 4733 telephone-event on PT 101.
fn pcmu_with_telephone_event() -> MediaSessionParams {
    let mut p = MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_20);
    p.telephone_event_pt = media_core::PayloadType::new(101);
    p
}

fn call(e: &MediaEngine, d: u64, a: CodecSpec, b: CodecSpec) -> (SessionId, SessionId) {
    let (sa, sb) = e
        .create_call(
            (DialogId(d), MediaSessionParams::new(a, Ptime::MS_20)),
            (DialogId(d + 1), MediaSessionParams::new(b, Ptime::MS_20)),
        )
        .unwrap();
    assert_eq!(sa.lane(), sb.lane());
    (sa.id, sb.id)
}

#[test]
fn pcmu_in_pcma_out_is_the_g711_transcode_of_the_input() {
    let e = virtual_engine(8);
    let (a, b) = call(&e, 1, CodecSpec::PCMU, CodecSpec::PCMA);
    let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
    let mut pkt = Vec::new();
    let mut out = Vec::new();
    for k in 0..55usize {
        rtp(
            0,
            1000 + k as u16,
            5000 + 160 * k as u32,
            42,
            k == 0,
            &ulaw_frame(k),
            &mut pkt,
        );
        ing.push(a, &pkt).unwrap();
        e.step(2).unwrap();
        out.extend(drain(&mut eg));
    }
    e.step(10).unwrap();
    out.extend(drain(&mut eg));
    assert!(
        (55..=55 + TRAILING).contains(&out.len()),
        "one PCMA packet per PCMU packet, then concealment ({})",
        out.len()
    );
    for (k, p) in out.iter().enumerate().take(50) {
        assert_eq!(p.session, b);
        assert_eq!(p.header.payload_type, 8);
        assert_eq!(
            p.header.sequence,
            out[0].header.sequence.wrapping_add(k as u16)
        );
        assert_eq!(
            p.header.timestamp,
            out[0].header.timestamp.wrapping_add(160 * k as u32)
        );
        assert_eq!(p.header.ssrc, out[0].header.ssrc);
        assert_eq!(
            p.header.marker,
            k == 0,
            "marker only on the first packet (k={k})"
        );
        let mut pcm = [0i16; 160];
        g711::ulaw_decode(&ulaw_frame(k), &mut pcm);
        let mut expect = [0u8; 160];
        g711::alaw_encode(&pcm, &mut expect);
        assert_eq!(p.payload(), &expect[..], "frame {k}");
    }
    let s = e.session_stats(a).unwrap();
    assert_eq!(
        (s.rx_packets, s.packets_decoded, s.frames_relayed),
        (55, 55, 0)
    );
    assert_eq!(s.frames_decoded, out.len() as u64);
    assert!(
        s.frames_concealed <= TRAILING as u64,
        "only trailing frames are concealed"
    );
    assert_eq!(e.session_stats(b).unwrap().tx_packets, out.len() as u64);
}

#[test]
fn every_packet_says_when_its_audio_left_the_jitter_buffer() {
    // Virtual clock: the lane's time is tick x 10 ms, and a fused lane plays, processes and
    // encodes a frame in one tick, so each packet popped after `step(1)` was played in the
    // tick just run, and never before the packet carrying its audio arrived.
    let e = virtual_engine(8);
    let (a, _b) = call(&e, 1, CodecSpec::PCMU, CodecSpec::PCMA);
    let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
    let mut pkt = Vec::new();
    let mut seen = 0;
    for tick in 0..120u64 {
        if tick % 2 == 0 && tick < 100 {
            let k = (tick / 2) as usize;
            rtp(
                0,
                k as u16,
                160 * k as u32,
                7,
                k == 0,
                &ulaw_frame(k),
                &mut pkt,
            );
            // Arrival on the lane's own clock: this tick's start.
            ing.push_at(a, &pkt, 1 + tick * 10_000_000).unwrap();
        }
        e.step(1).unwrap();
        while let Some(p) = eg.pop() {
            assert_eq!(p.played_ns(), tick * 10_000_000, "played in tick {tick}");
            let sent_tick = u64::from(p.source_timestamp()) / 80;
            assert!(
                tick >= sent_tick + 2,
                "audio that arrived in tick {sent_tick} played in tick {tick}: not buffered"
            );
            seen += 1;
        }
    }
    assert!(seen >= 50, "{seen} packets");
}

#[test]
fn same_codec_bridge_relays_payload_bytes_unchanged() {
    let e = virtual_engine(8);
    let (a, b) = call(&e, 1, CodecSpec::PCMU, CodecSpec::PCMU);
    let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
    let mut pkt = Vec::new();
    let mut out = Vec::new();
    for k in 0..25usize {
        rtp(
            0,
            k as u16,
            160 * k as u32,
            1,
            false,
            &ulaw_frame(k),
            &mut pkt,
        );
        ing.push(b, &pkt).unwrap();
        e.step(2).unwrap();
        out.extend(drain(&mut eg));
    }
    e.step(10).unwrap();
    out.extend(drain(&mut eg));
    assert!((25..=25 + TRAILING).contains(&out.len()));
    for (k, p) in out.iter().enumerate().take(20) {
        assert_eq!(p.session, a);
        assert_eq!(p.payload(), &ulaw_frame(k)[..]);
    }
    let s = e.session_stats(b).unwrap();
    assert!(s.frames_relayed >= 20, "real packets relayed byte for byte");
    assert_eq!((s.frames_decoded + s.frames_relayed) as usize, out.len());
}

#[test]
fn a_relayed_g711_call_conceals_a_loss_exactly_as_from_the_decoded_audio() {
    // The relay leaves G.711 frames undecoded (the concealer keeps their codes); a loss
    // must still be concealed from the same history as if every frame had been decoded.
    use media_core::processing::audio::plc::PcmPlc;
    for (codec, frame, law) in [
        (
            CodecSpec::PCMU,
            ulaw_frame as fn(usize) -> Vec<u8>,
            g711::Law::Ulaw,
        ),
        (CodecSpec::PCMA, alaw_frame, g711::Law::Alaw),
    ] {
        let e = virtual_engine(8);
        let (_a, b) = call(&e, 1, codec, codec);
        let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
        let pt = codec.payload_type.get();
        let (mut pkt, mut out) = (Vec::new(), Vec::new());
        let lost = 12;
        for k in (0..20usize).filter(|&k| k != lost) {
            rtp(pt, k as u16, 160 * k as u32, 3, false, &frame(k), &mut pkt);
            ing.push(b, &pkt).unwrap();
            e.step(2).unwrap();
            out.extend(drain(&mut eg));
        }
        e.step(10).unwrap();
        out.extend(drain(&mut eg));
        let s = e.session_stats(b).unwrap();
        assert!(
            s.frames_relayed >= 15,
            "{codec:?}: relayed {}",
            s.frames_relayed
        );
        // The same history, decoded, through a concealer of its own.
        let mut plc = PcmPlc::new(8000);
        let mut pcm = vec![0i16; 160];
        for k in 0..lost {
            law.decode(&frame(k), &mut pcm);
            plc.good_frame(&mut pcm);
        }
        plc.comfort_noise(&mut pcm);
        let mut want = vec![0u8; 160];
        match law {
            g711::Law::Ulaw => g711::ulaw_encode(&pcm, &mut want),
            g711::Law::Alaw => g711::alaw_encode(&pcm, &mut want),
        };
        for (k, p) in out.iter().enumerate().take(lost) {
            assert_eq!(p.payload(), &frame(k)[..], "{codec:?}: frame {k} relayed");
        }
        assert_eq!(out[lost].payload(), &want[..], "{codec:?}: concealed frame");
    }
}

#[test]
fn reordered_packets_play_in_order_and_losses_leave_timestamp_gaps() {
    let e = virtual_engine(8);
    let (a, _b) = call(&e, 1, CodecSpec::PCMU, CodecSpec::PCMU);
    let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
    let mut pkt = Vec::new();
    // Send order: 0 2 1 3 5 4 (6 lost) 7 8 9 ...
    let order: Vec<usize> = vec![0, 2, 1, 3, 5, 4, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16];
    let mut out = Vec::new();
    for &k in &order {
        rtp(
            0,
            100 + k as u16,
            160 * k as u32,
            9,
            false,
            &ulaw_frame(k),
            &mut pkt,
        );
        ing.push(a, &pkt).unwrap();
        e.step(2).unwrap();
        out.extend(drain(&mut eg));
    }
    e.step(20).unwrap();
    out.extend(drain(&mut eg));
    // Frames 0..=11 in order; frame 6 (lost) is concealed, so it matches no input frame.
    assert!(out.len() >= 12);
    for (k, p) in out.iter().enumerate().take(12) {
        match k {
            // Lost: concealed by pitch repetition, so it matches no input frame.
            6 => assert_ne!(p.payload(), &ulaw_frame(6)[..]),
            // First frame after the loss: its start is overlap-added with the concealed
            // signal (G.711 Appendix I merge); its end is the real audio again.
            7 => {
                assert_ne!(p.payload(), &ulaw_frame(7)[..]);
                assert_eq!(p.payload()[80..], ulaw_frame(7)[80..]);
            }
            _ => assert_eq!(p.payload(), &ulaw_frame(k)[..], "frame {k}"),
        }
    }
    // Our own sequence numbers and timestamps stay contiguous.
    for (k, p) in out.iter().enumerate() {
        assert_eq!(
            p.header.sequence,
            out[0].header.sequence.wrapping_add(k as u16)
        );
        assert_eq!(
            p.header.timestamp,
            out[0].header.timestamp.wrapping_add(160 * k as u32)
        );
    }
    let s = e.session_stats(a).unwrap();
    assert!(s.rx_reordered >= 1, "out-of-order arrivals counted");
    assert!(s.frames_concealed >= 1);
    assert_eq!(s.rx_late + s.rx_duplicates, 0);
}

#[test]
fn keepalive_with_empty_payload_is_counted_not_decoded() {
    // FIELD-BUGS 23: a 12-byte keepalive updates RTP stats, never reaches the decoder.
    let e = virtual_engine(4);
    let (a, _b) = call(&e, 1, CodecSpec::PCMU, CodecSpec::PCMA);
    let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
    let mut pkt = Vec::new();
    rtp(0, 1, 160, 5, false, &[], &mut pkt);
    ing.push(a, &pkt).unwrap();
    e.step(10).unwrap();
    let s = e.session_stats(a).unwrap();
    assert_eq!(
        (s.rx_packets, s.rx_empty_payloads, s.frames_decoded),
        (1, 1, 0)
    );
    assert!(drain(&mut eg).is_empty());
}

#[test]
fn payload_type_switch_without_signalling_switches_decoder_on_that_packet() {
    // FIELD-BUGS 50: both 0 and 8 negotiated; the sender switches PT mid-stream.
    let e = virtual_engine(4);
    let pa = MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_20)
        .with_rx(CodecSpec::PCMU)
        .with_rx(CodecSpec::PCMA);
    let a = e.create_media_session(DialogId(1), pa).unwrap().id;
    let b = e
        .create_media_session(
            DialogId(2),
            MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_20),
        )
        .unwrap()
        .id;
    e.bridge(a, b).unwrap();
    let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
    let mut pkt = Vec::new();
    let mut out = Vec::new();
    for k in 0..15usize {
        let (pt, payload) = if k < 5 {
            (0, ulaw_frame(k))
        } else {
            (8, alaw_frame(k))
        };
        rtp(
            pt,
            1095 + k as u16,
            160 * k as u32,
            3,
            false,
            &payload,
            &mut pkt,
        );
        ing.push(a, &pkt).unwrap();
        e.step(2).unwrap();
        out.extend(drain(&mut eg));
    }
    e.step(10).unwrap();
    out.extend(drain(&mut eg));
    assert!(
        out.len() >= 15,
        "no frame lost at the switch, no buffer reset"
    );
    for (k, p) in out.iter().enumerate().take(10) {
        let expect = if k < 5 {
            ulaw_frame(k)
        } else {
            let mut pcm = [0i16; 160];
            g711::alaw_decode(&alaw_frame(k), &mut pcm);
            let mut u = vec![0u8; 160];
            g711::ulaw_encode(&pcm, &mut u);
            u
        };
        assert_eq!(p.payload(), &expect[..], "frame {k}");
    }
    let s = e.session_stats(a).unwrap();
    assert_eq!(
        (s.frames_relayed, s.rx_resyncs, s.packets_decoded),
        (5, 0, 15)
    );
}

#[test]
fn echo_session_returns_its_own_audio() {
    let e = virtual_engine(4);
    let a = e
        .create_media_session(
            DialogId(1),
            MediaSessionParams::new(CodecSpec::PCMA, Ptime::MS_20),
        )
        .unwrap()
        .id;
    e.bridge(a, a).unwrap();
    let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
    let mut pkt = Vec::new();
    for k in 0..5usize {
        rtp(
            8,
            k as u16,
            160 * k as u32,
            3,
            false,
            &alaw_frame(k),
            &mut pkt,
        );
        ing.push(a, &pkt).unwrap();
        e.step(2).unwrap();
    }
    e.step(10).unwrap();
    let out = drain(&mut eg);
    assert!((5..=5 + TRAILING).contains(&out.len()));
    assert!(out.iter().all(|p| p.session == a));
}

#[test]
fn bad_input_is_counted_or_refused_and_never_disturbs_another_session() {
    let e = MediaEngine::new(EngineConfig {
        clock: ClockMode::Virtual,
        sessions_per_lane: 4,
        packet_slots_per_lane: Some(64),
        // A burst well inside the lane's 64 slots (the default, 64, is sized for the
        // default slot count, 8 per session + 256).
        ingress_limit: Some(IngressLimit {
            packets_per_second: 500,
            burst_packets: 16,
        }),
        max_payload_bytes: 320,
        jitter: fixed_jitter(),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(
        e.create_media_session(
            DialogId(9),
            MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_20)
        ),
        Err(Error::EngineNotRunning)
    );
    e.start().unwrap();
    assert_eq!(e.start(), Err(Error::EngineAlreadyRunning));
    let (good_a, good_b) = call(&e, 1, CodecSpec::PCMU, CodecSpec::PCMA);
    let (bad_a, _bad_b) = call(&e, 3, CodecSpec::PCMU, CodecSpec::PCMU);
    // Capacity: 4 slots, all used.
    assert!(matches!(
        e.create_media_session(
            DialogId(5),
            MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_20)
        ),
        Err(Error::CapacityExhausted { capacity: 4 })
    ));
    assert_eq!(
        e.create_media_session(
            DialogId(1),
            MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_20)
        ),
        Err(Error::DuplicateDialog(DialogId(1)))
    );
    // 60 ms PCMU = 480 bytes > max_payload_bytes 320: refused up front.
    assert!(matches!(
        e.update_media_session(
            good_a,
            MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_60)
        ),
        Err(Error::PayloadTooLarge {
            limit: 320,
            actual: 480
        })
    ));
    let ghost = SessionId::from_parts(0, 3, 999);
    assert_eq!(
        e.destroy_media_session(ghost),
        Err(Error::UnknownSession(ghost))
    );
    assert!(e.session_stats(ghost).is_err());

    let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
    assert!(e.take_rtp_handles(0).is_none(), "handles are taken once");
    let mut pkt = Vec::new();
    let mut good_out = Vec::new();
    let mut k_good = 0usize;
    let feed_good = |ing: &mut media_core::IngressHandle, k: usize, pkt: &mut Vec<u8>| {
        rtp(0, k as u16, 160 * k as u32, 77, false, &ulaw_frame(k), pkt);
        ing.push(good_a, pkt).unwrap();
    };
    let mut step = |e: &MediaEngine,
                    ing: &mut media_core::IngressHandle,
                    pkt: &mut Vec<u8>,
                    out: &mut Vec<Out>,
                    eg: &mut media_core::EgressHandle| {
        feed_good(ing, k_good, pkt);
        k_good += 1;
        e.step(2).unwrap();
        out.extend(drain(eg).into_iter().filter(|p| p.session == good_b));
    };
    step(&e, &mut ing, &mut pkt, &mut good_out, &mut eg);

    // Malformed RTP: version 1, truncated header, evil padding.
    ing.push(bad_a, &[0x40; 20]).unwrap();
    ing.push(bad_a, &[0x80, 0, 0]).unwrap();
    let mut evil = vec![0xA0u8, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0xFF];
    ing.push(bad_a, &evil).unwrap();
    step(&e, &mut ing, &mut pkt, &mut good_out, &mut eg);
    assert_eq!(e.lane_stats(0).unwrap().malformed, 3);

    // Oversized packet: typed error, counted.
    let big = vec![0x80u8; 2000];
    assert!(matches!(
        ing.push(bad_a, &big),
        Err(Error::PayloadTooLarge { .. })
    ));
    assert_eq!(e.lane_stats(0).unwrap().ingress_too_large, 1);

    // Unknown session ids (stale generation, other lane, slot out of range):
    // refused at the handle before they take a packet slot, and counted there.
    rtp(0, 1, 1, 1, false, &[0xFF; 160], &mut pkt);
    let free_before = ing.free_slots();
    for id in [
        SessionId::from_parts(0, good_a.slot(), good_a.generation() + 1),
        SessionId::from_parts(3, 0, 1),
        SessionId::from_parts(0, 4000, 1),
    ] {
        assert_eq!(ing.push(id, &pkt), Err(Error::UnknownSession(id)));
    }
    assert_eq!(
        ing.free_slots(),
        free_before,
        "refused before taking a slot"
    );
    // Unsupported payload type on a live session.
    rtp(18, 1, 1, 1, false, &[0x55; 20], &mut pkt);
    ing.push(bad_a, &pkt).unwrap();
    step(&e, &mut ing, &mut pkt, &mut good_out, &mut eg);
    let ls = e.lane_stats(0).unwrap();
    assert_eq!((ls.ingress_unknown, ls.unknown_session), (3, 0));
    assert_eq!(e.session_stats(bad_a).unwrap().rx_unsupported_pt, 1);

    // Absurd sequence and timestamp jumps and garbage payload bytes on the bad session.
    for (i, seq) in [5u16, 40000, 7, 65535, 12345].into_iter().enumerate() {
        let garbage: Vec<u8> = (0..160).map(|j| (j * 37 + i * 11) as u8).collect();
        rtp(
            0,
            seq,
            (i as u32).wrapping_mul(0x9E37_79B9),
            1,
            false,
            &garbage,
            &mut pkt,
        );
        ing.push(bad_a, &pkt).unwrap();
        step(&e, &mut ing, &mut pkt, &mut good_out, &mut eg);
    }
    // Absurd timestamp jumps re-anchor the jitter buffer (sequence tracking may resync too).
    let st = e.session_stats(bad_a).unwrap();
    assert!(st.rx_resyncs + st.jb_resyncs >= 3, "{st:?}");

    // A flood on the bad session (400 packets within one tick): the first 16 (the burst
    // of its ingress limit) take slots, the rest are refused as over its rate and
    // counted on the lane and on the session, and no slot runs out for the good session.
    rtp(0, 1, 1, 1, false, &[0xFF; 160], &mut pkt);
    let mut limited = 0;
    for _ in 0..400 {
        match ing.push(bad_a, &pkt) {
            Ok(()) => {}
            Err(err) => {
                assert_eq!(err, Error::RateLimited);
                limited += 1;
            }
        }
    }
    assert_eq!(limited, 400 - 16);
    assert_eq!(ing.rate_limited(bad_a), 400 - 16);
    assert_eq!(ing.rate_limited(good_a), 0);
    let ls = e.lane_stats(0).unwrap();
    assert_eq!((ls.ingress_rate_limited, ls.ingress_full), (400 - 16, 0));
    for _ in 0..3 {
        step(&e, &mut ing, &mut pkt, &mut good_out, &mut eg);
    }

    // A full ingress ring: packets of the bad session without arrival times (a transport
    // that does not time its packets; the per-session limit needs the time) pushed without
    // stepping until refused.
    // (The good session misses one arrival here, so its jitter buffer may then re-time by
    // expansion: frames after this point are checked for presence, not bit-exactness.)
    let exact_until = good_out.len();
    let mut refused = 0;
    for _ in 0..400 {
        if let Err(err) = ing.push_at(bad_a, &pkt, 0) {
            assert_eq!(err, Error::RingFull { ring: "ingress" });
            refused += 1;
        }
    }
    assert!(refused > 0);
    assert_eq!(e.lane_stats(0).unwrap().ingress_full, refused);
    // The lane drains the flood at its next tick; the transport's pushes succeed again.
    e.step(2).unwrap();
    assert!(ing.free_slots() > 0);

    for _ in 0..20 {
        step(&e, &mut ing, &mut pkt, &mut good_out, &mut eg);
    }
    // The good session lost nothing, in order, exact transcode of its input.
    let n = good_out.len();
    assert!(n >= 20, "good session kept flowing ({n} packets)");
    assert!(exact_until >= 5);
    for (k, p) in good_out.iter().enumerate().take(exact_until) {
        let mut pcm = [0i16; 160];
        g711::ulaw_decode(&ulaw_frame(k), &mut pcm);
        let mut a = [0u8; 160];
        g711::alaw_encode(&pcm, &mut a);
        assert_eq!(p.payload(), &a[..], "good frame {k}");
    }
    let gs = e.session_stats(good_a).unwrap();
    assert_eq!(
        (
            gs.rx_late,
            gs.rx_duplicates,
            gs.rx_resyncs,
            gs.rx_unsupported_pt
        ),
        (0, 0, 0, 0)
    );
    assert_eq!(
        gs.frames_concealed, 0,
        "the good session never needed concealment"
    );
    evil.clear();
}

/// A lane full of PCMU calls: 32 calls in 64 session slots, with the default limits and
/// slot counts (8 * 64 + 256 = 768 packet slots).
fn full_lane_of_pcmu_calls() -> (MediaEngine, Vec<(SessionId, SessionId)>) {
    let e = virtual_engine(64);
    let calls = (0..32)
        .map(|d| call(&e, 2 * d, CodecSpec::PCMU, CodecSpec::PCMU))
        .collect();
    (e, calls)
}

/// Session `s` received each of its `packets` packets once and played them all: none
/// late, duplicated or dropped from its buffer, no frame concealed.
fn assert_received_all(e: &MediaEngine, s: SessionId, packets: u64) {
    let st = e.session_stats(s).unwrap();
    assert_eq!(st.rx_packets, packets, "{s}: {st:?}");
    assert_eq!(
        (st.rx_duplicates, st.rx_late, st.jb_overflows),
        (0, 0, 0),
        "{s}"
    );
    assert_eq!(st.frames_concealed, 0, "{s}");
}

#[test]
fn flooding_peers_are_rate_limited_and_the_other_sessions_on_the_lane_lose_nothing() {
    let (e, calls) = full_lane_of_pcmu_calls();
    let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
    // Eight sessions flood: 500 packets each between two ticks (25,000 packets/s each,
    // 4,000 in all per 20 ms: five times the lane's slots). The other 56 send at 50/s.
    let flooders: Vec<SessionId> = calls.iter().take(8).map(|c| c.0).collect();
    let mut pkt = Vec::new();
    for k in 0..50usize {
        for (i, &(a, b)) in calls.iter().enumerate() {
            for (s, ssrc) in [(a, 2 * i as u32), (b, 2 * i as u32 + 1)] {
                rtp(
                    0,
                    k as u16,
                    160 * k as u32,
                    ssrc,
                    k == 0,
                    &ulaw_frame(k),
                    &mut pkt,
                );
                let copies = if flooders.contains(&s) { 500 } else { 1 };
                for _ in 0..copies {
                    match ing.push(s, &pkt) {
                        Ok(()) => {}
                        Err(err) => {
                            assert!(flooders.contains(&s), "{s}: {err}");
                            assert_eq!(err, Error::RateLimited);
                        }
                    }
                }
            }
        }
        e.step(2).unwrap();
        drain(&mut eg);
    }
    let ls = e.lane_stats(0).unwrap();
    assert_eq!(ls.ingress_full, 0, "no slot ran out");
    assert!(ls.ingress_rate_limited >= 8 * 49 * 480, "{ls:?}");
    for &s in &flooders {
        assert!(ing.rate_limited(s) >= 49 * 480);
    }
    // Every other session received every packet once and never concealed.
    for &(a, b) in &calls {
        for s in [a, b] {
            if flooders.contains(&s) {
                continue;
            }
            assert_eq!(ing.rate_limited(s), 0);
            assert_received_all(&e, s, 50);
        }
    }
    e.stop().unwrap();
}

/// An id built by hand whose generation has bits past the 24 a session id carries is no
/// session's: refused as unknown. Before, the lane took it for the session sharing its
/// low bits while the policer, keyed on the whole generation, took it for a new session:
/// alternating the two forms reset the rate limit's bucket on every packet.
#[test]
fn an_id_with_generation_bits_past_24_is_unknown() {
    let e = virtual_engine(2);
    let (a, _b) = call(&e, 1, CodecSpec::PCMU, CodecSpec::PCMU);
    let (mut ing, _eg) = e.take_rtp_handles(0).unwrap();
    let forged = SessionId::from_parts(a.lane() as u16, a.slot(), a.generation() | 1 << 24);
    let mut pkt = Vec::new();
    rtp(0, 1, 160, 7, true, &ulaw_frame(0), &mut pkt);
    assert_eq!(ing.push(forged, &pkt), Err(Error::UnknownSession(forged)));
    assert_eq!(ing.push(a, &pkt), Ok(()));
}

/// A peer sending 120 ms G.711 packets (960 bytes) has every sample of each played: the
/// far leg gets 6 × 20 ms of its audio per packet. Packets longer than
/// 120 ms (160 ms, 1,280 bytes) are refused whole, counted undecodable. Before, the
/// decode buffer had room for 60 ms packets: a 120 ms one was cut to 105 ms while the
/// timeline moved 120, 15 ms of every packet vanishing uncounted.
#[test]
fn long_g711_packets_play_whole_and_longer_ones_are_refused_counted() {
    for (ms, played) in [(120u32, true), (160, false)] {
        let e = virtual_engine(2);
        let (a, b) = call(&e, 1, CodecSpec::PCMU, CodecSpec::PCMU);
        let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
        let n = 8 * ms as usize;
        let (mut pkt, mut out) = (Vec::new(), Vec::new());
        // A 1 kHz tone at -10 dBFS, 8 packets.
        let ulaw: Vec<u8> = (0..8 * n)
            .map(|i| {
                let x = (f64::from(i as u32) * std::f64::consts::TAU / 8.0 + 0.4).sin() * 10_000.0;
                g711::ulaw_encode_sample(x as i16)
            })
            .collect();
        for k in 0..8usize {
            let ts = (k * n) as u32;
            rtp(
                0,
                k as u16,
                ts,
                3,
                k == 0,
                &ulaw[k * n..(k + 1) * n],
                &mut pkt,
            );
            ing.push(a, &pkt).unwrap();
            e.step(u64::from(ms / 10)).unwrap();
            out.extend(drain(&mut eg).into_iter().filter(|p| p.session == b));
        }
        e.step(40).unwrap();
        out.extend(drain(&mut eg).into_iter().filter(|p| p.session == b));
        let st = e.session_stats(a).unwrap();
        if played {
            assert_eq!(st.rx_undecodable, 0, "{ms} ms: {st:?}");
            assert_eq!(st.packets_decoded, 8, "{ms} ms: {st:?}");
            // Concealed: only the 100 ms after the last packet (before, also 15 ms of
            // every packet: 1,600 samples).
            assert!(st.samples_concealed <= 800, "{ms} ms: {st:?}");
            // Every sample of the 8 packets went out loud (after the start-up wait).
            let loud = out
                .iter()
                .filter(|p| {
                    p.payload()
                        .iter()
                        .filter(|&&c| c != 0xFF && c != 0x7F)
                        .count()
                        > 150
                })
                .count();
            assert!(
                loud >= 8 * ms as usize / 20 - 1,
                "{ms} ms: {loud} loud frames"
            );
        } else {
            assert_eq!(st.rx_undecodable, 8, "{ms} ms: {st:?}");
        }
    }
}

#[test]
fn an_unusable_ingress_limit_is_refused_and_none_turns_it_off() {
    for limit in [
        IngressLimit {
            packets_per_second: 0,
            burst_packets: 8,
        },
        IngressLimit {
            packets_per_second: 500,
            burst_packets: 0,
        },
    ] {
        let r = MediaEngine::new(EngineConfig {
            ingress_limit: Some(limit),
            ..Default::default()
        });
        assert!(matches!(r, Err(Error::InvalidConfig(_))), "{limit:?}");
    }
    // Off: a session may take every slot (here 400 packets in one tick, refused only when
    // the 8 * 4 + 256 = 288 slots run out).
    let e = MediaEngine::new(EngineConfig {
        clock: ClockMode::Virtual,
        sessions_per_lane: 4,
        ingress_limit: None,
        ..Default::default()
    })
    .unwrap();
    e.start().unwrap();
    let (a, _) = call(&e, 1, CodecSpec::PCMU, CodecSpec::PCMU);
    let (mut ing, _eg) = e.take_rtp_handles(0).unwrap();
    let mut pkt = Vec::new();
    rtp(0, 1, 160, 5, false, &ulaw_frame(1), &mut pkt);
    let taken = (0..400).filter(|_| ing.push(a, &pkt).is_ok()).count();
    assert_eq!(taken, 288);
    let ls = e.lane_stats(0).unwrap();
    assert_eq!((ls.ingress_rate_limited, ls.ingress_full), (0, 112));
    e.stop().unwrap();
}

#[test]
fn sessions_with_a_backlog_give_slots_back_before_the_others_lose_packets() {
    // Default slot counts: 64 session slots, 8 * 64 + 256 = 768 packet slots, a share of
    // 12 each. Forty sessions get three packets every 20 ms (a sender clock three times
    // fast, under the ingress rate limit): their jitter buffers would fill to 32 packets,
    // 1,280 slots in all. The other 24 send one packet every 20 ms.
    let (e, calls) = full_lane_of_pcmu_calls();
    let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
    let greedy: Vec<SessionId> = calls.iter().take(20).flat_map(|c| [c.0, c.1]).collect();
    let mut pkt = Vec::new();
    for k in 0..100usize {
        for (i, &(a, b)) in calls.iter().enumerate() {
            for (s, ssrc) in [(a, 2 * i as u32), (b, 2 * i as u32 + 1)] {
                let per_round = if greedy.contains(&s) { 3 } else { 1 };
                for j in 0..per_round {
                    let n = per_round * k + j;
                    rtp(
                        0,
                        n as u16,
                        160 * n as u32,
                        ssrc,
                        n == 0,
                        &ulaw_frame(n),
                        &mut pkt,
                    );
                    if let Err(err) = ing.push(s, &pkt) {
                        panic!("round {k}, {s}: {err}");
                    }
                }
            }
        }
        e.step(2).unwrap();
        drain(&mut eg);
    }
    let ls = e.lane_stats(0).unwrap();
    assert_eq!(ls.ingress_full, 0, "no slot ran out");
    assert!(ls.slot_share_drops > 0, "the backlogs were cut: {ls:?}");
    for &(a, b) in &calls {
        for s in [a, b] {
            if greedy.contains(&s) {
                let st = e.session_stats(s).unwrap();
                assert!(st.jb_overflows > 0, "{s}: {st:?}");
                continue;
            }
            assert_received_all(&e, s, 100);
        }
    }
    e.stop().unwrap();
}

#[test]
fn a_thousand_create_destroy_cycles_return_every_slot() {
    let e = MediaEngine::new(EngineConfig {
        clock: ClockMode::Virtual,
        sessions_per_lane: 8,
        lanes: 2,
        command_capacity: 64,
        ..Default::default()
    })
    .unwrap();
    e.start().unwrap();
    let mut handles: Vec<_> = (0..2).map(|l| e.take_rtp_handles(l).unwrap()).collect();
    let packet_slots: Vec<usize> = handles.iter().map(|(i, _)| i.free_slots()).collect();
    let egress_cap: Vec<usize> = handles.iter().map(|(_, o)| o.capacity()).collect();
    let mut pkt = Vec::new();
    for cycle in 0..1000u64 {
        let (a, b) = call(
            &e,
            cycle * 2,
            CodecSpec::PCMU,
            if cycle % 2 == 0 {
                CodecSpec::PCMA
            } else {
                CodecSpec::PCMU
            },
        );
        for k in 0..(cycle % 5) as usize {
            rtp(
                0,
                k as u16,
                160 * k as u32,
                1,
                false,
                &ulaw_frame(k),
                &mut pkt,
            );
            handles[a.lane()].0.push(a, &pkt).unwrap();
        }
        e.step(1 + cycle % 4).unwrap();
        for (_, eg) in handles.iter_mut() {
            drain(eg);
        }
        e.destroy_media_session(a).unwrap();
        e.destroy_media_session(b).unwrap();
        if cycle % 97 == 0 {
            e.flush(Duration::from_secs(1)).unwrap();
        }
    }
    e.flush(Duration::from_secs(1)).unwrap();
    for (_, eg) in handles.iter_mut() {
        drain(eg);
    }
    assert_eq!(e.session_count(), 0);
    assert_eq!(e.free_session_slots(), 16, "every session slot back");
    for (l, (ing, eg)) in handles.iter().enumerate() {
        assert_eq!(
            ing.free_slots(),
            packet_slots[l],
            "packet slots back on lane {l}"
        );
        assert_eq!(
            eg.free_slots(),
            egress_cap[l],
            "egress slots back on lane {l}"
        );
        let st = e.lane_stats(l).unwrap();
        assert_eq!(
            st.frame_slots_free as usize,
            4 * media_core::runtime::lane::FUSED_CHUNK,
            "frame slots back"
        );
        assert_eq!(st.internal_ring_full, 0);
    }
    let started = e
        .events()
        .filter(|ev| matches!(ev, EngineEvent::SessionStarted(_)))
        .count();
    assert!(started > 0);
}

fn realtime(topology: Topology) -> MediaEngine {
    MediaEngine::new(EngineConfig {
        topology,
        sessions_per_lane: 64,
        lanes: 2,
        raise_priority: false,
        ..Default::default()
    })
    .unwrap()
}

#[test]
fn realtime_packets_carry_the_monotonic_time_their_audio_was_played() {
    for topology in [Topology::Fused, Topology::Split] {
        let e = realtime(topology);
        e.start().unwrap();
        let (a, _b) = call(&e, 1, CodecSpec::PCMU, CodecSpec::PCMA);
        let (mut ing, mut eg) = e.take_rtp_handles(a.lane()).unwrap();
        let mut pkt = Vec::new();
        let mut checked = 0;
        let t_start = media_core::runtime::clock::monotonic_ns();
        for k in 0..40usize {
            rtp(
                0,
                k as u16,
                160 * k as u32,
                9,
                k == 0,
                &ulaw_frame(k),
                &mut pkt,
            );
            let _ = ing.push(a, &pkt);
            std::thread::sleep(Duration::from_millis(20));
            while let Some(p) = eg.pop() {
                let now = media_core::runtime::clock::monotonic_ns();
                let played = p.played_ns();
                assert!(
                    played > t_start && played <= now,
                    "{topology:?}: played at {played}, popped at {now}"
                );
                checked += 1;
            }
        }
        e.stop().unwrap();
        assert!(checked > 10, "{topology:?}: {checked} packets");
    }
}

fn traffic_while_churning(topology: Topology) {
    let e = realtime(topology);
    e.start().unwrap();
    let (mut ing0, mut eg0) = e.take_rtp_handles(0).unwrap();
    let (mut ing1, mut eg1) = e.take_rtp_handles(1).unwrap();
    let mut calls: Vec<(SessionId, SessionId)> = (0..8)
        .map(|i| call(&e, 100 + 2 * i, CodecSpec::PCMU, CodecSpec::PCMA))
        .collect();
    let mut pkt = Vec::new();
    let mut received = 0usize;
    let mut dialog = 1000;
    let mut pushed = std::collections::HashMap::<SessionId, u64>::new();
    for k in 0..60usize {
        for &(a, _) in &calls {
            rtp(
                0,
                k as u16,
                160 * k as u32,
                a.slot(),
                false,
                &ulaw_frame(k),
                &mut pkt,
            );
            let ing = if a.lane() == 0 { &mut ing0 } else { &mut ing1 };
            ing.push(a, &pkt).unwrap();
            *pushed.entry(a).or_insert(0) += 1;
        }
        std::thread::sleep(Duration::from_millis(20));
        received += drain(&mut eg0).len() + drain(&mut eg1).len();
        // Churn while traffic flows: destroy one call, create another, update a third.
        if k % 10 == 5 {
            // Destroy only once the lane has taken what was pushed for it: a packet still
            // in the ring when its session goes is rightly counted as unknown, and a loaded
            // machine can leave one there after the 20 ms sleep.
            let gone = calls[0].0;
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while e.session_stats(gone).unwrap().rx_packets < pushed[&gone]
                && std::time::Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            let (a, b) = calls.remove(0);
            e.destroy_media_session(a).unwrap();
            e.destroy_media_session(b).unwrap();
            calls.push(call(&e, dialog, CodecSpec::PCMU, CodecSpec::PCMU));
            dialog += 2;
            let (_, b) = calls[0];
            e.update_media_session(b, MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_20))
                .unwrap();
        }
    }
    e.flush(Duration::from_secs(2)).unwrap();
    std::thread::sleep(Duration::from_millis(150));
    received += drain(&mut eg0).len() + drain(&mut eg1).len();
    // 8 calls × 60 frames sent; churned calls lose at most their prebuffered frames.
    assert!(received >= 8 * 60 * 8 / 10, "received {received}");
    for l in 0..2 {
        let st = e.lane_stats(l).unwrap();
        assert!(st.ticks > 50, "lane {l} ticked");
        assert_eq!(st.internal_ring_full, 0);
        assert_eq!(
            st.unknown_session, 0,
            "no packet of a live session was refused"
        );
    }
    e.stop().unwrap();
}

#[test]
fn sessions_are_created_updated_and_destroyed_while_traffic_flows_fused() {
    traffic_while_churning(Topology::Fused);
}

#[test]
fn sessions_are_created_updated_and_destroyed_while_traffic_flows_split() {
    traffic_while_churning(Topology::Split);
}

#[test]
fn engine_starts_and_stops_twenty_times_keeping_its_sessions() {
    for topology in [Topology::Fused, Topology::Split] {
        let e = realtime(topology);
        let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
        e.start().unwrap();
        let (a, b) = call(&e, 1, CodecSpec::PCMU, CodecSpec::PCMA);
        e.stop().unwrap();
        let mut pkt = Vec::new();
        let mut seq = 0u16;
        for round in 0..20 {
            e.start().unwrap();
            for _ in 0..3 {
                rtp(
                    0,
                    seq,
                    160 * u32::from(seq),
                    5,
                    false,
                    &ulaw_frame(seq as usize),
                    &mut pkt,
                );
                ing.push(a, &pkt).unwrap();
                seq += 1;
            }
            std::thread::sleep(Duration::from_millis(15));
            e.stop().unwrap();
            assert!(!e.is_running(), "round {round}");
        }
        assert_eq!(e.stop(), Err(Error::EngineNotRunning));
        assert_eq!(e.session_count(), 2);
        // The session survived twenty restarts and still takes packets (waiting for the
        // lane rather than trusting 15 ms per round on a loaded machine).
        e.start().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while e.session_stats(a).unwrap().rx_packets == 0 && std::time::Instant::now() < deadline {
            rtp(
                0,
                seq,
                160 * u32::from(seq),
                5,
                false,
                &ulaw_frame(seq as usize),
                &mut pkt,
            );
            let _ = ing.push(a, &pkt);
            seq += 1;
            std::thread::sleep(Duration::from_millis(20));
        }
        e.stop().unwrap();
        assert!(e.session_stats(a).unwrap().rx_packets > 0);
        drain(&mut eg);
        let _ = b;
    }
}

#[test]
fn capabilities_list_g711_and_every_ptime() {
    let e = virtual_engine(4);
    let caps = e.get_media_capabilities();
    assert_eq!(caps.max_sessions, 4);
    assert!(caps
        .codecs
        .iter()
        .any(|c| c.encoding_name == "PCMU" && c.static_payload_type == Some(PayloadType::PCMU)));
    assert!(e
        .get_supported_codecs()
        .iter()
        .any(|c| c.encoding_name == "PCMA"));
    assert_eq!(caps.ptimes.len(), 5);
}

#[test]
fn bridging_refuses_mismatched_sessions() {
    let e = MediaEngine::new(EngineConfig {
        clock: ClockMode::Virtual,
        lanes: 2,
        sessions_per_lane: 4,
        ..Default::default()
    })
    .unwrap();
    e.start().unwrap();
    let a = e
        .create_media_session(
            DialogId(1),
            MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_20),
        )
        .unwrap();
    let b = e
        .create_media_session(
            DialogId(2),
            MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_20),
        )
        .unwrap();
    assert_ne!(
        a.lane(),
        b.lane(),
        "least-loaded placement spreads sessions"
    );
    assert!(matches!(
        e.bridge(a.id, b.id),
        Err(Error::BridgeMismatch { .. })
    ));
    let c = e
        .create_media_session(
            DialogId(3),
            MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_30),
        )
        .unwrap();
    assert_eq!(c.lane(), a.lane());
    assert!(matches!(
        e.bridge(a.id, c.id),
        Err(Error::BridgeMismatch { .. })
    ));
}

#[test]
fn per_session_hot_state_fits_the_budget() {
    let bytes = media_core::runtime::lane::session_state_bytes();
    println!("per-session hot state: {bytes} bytes");
    assert!(
        bytes <= 2048,
        "G.711 session hot state {bytes} B exceeds 2 KiB"
    );
}

#[test]
fn every_supported_ptime_sends_one_packet_per_ptime() {
    for ms in [10u32, 20, 30, 40, 60] {
        let e = MediaEngine::new(EngineConfig {
            clock: ClockMode::Virtual,
            sessions_per_lane: 4,
            // A fixed delay of at least one packet so nothing is time-stretched.
            jitter: JitterConfig {
                min_delay_ms: ms.max(60),
                initial_delay_ms: ms.max(60),
                ..Default::default()
            },
            ..Default::default()
        })
        .unwrap();
        e.start().unwrap();
        let p = Ptime::from_ms(ms).unwrap();
        let n = (ms * 8) as usize;
        let (a, b) = e
            .create_call(
                (DialogId(1), MediaSessionParams::new(CodecSpec::PCMU, p)),
                (DialogId(2), MediaSessionParams::new(CodecSpec::PCMA, p)),
            )
            .unwrap();
        let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
        let mut pkt = Vec::new();
        let mut out = Vec::new();
        let frames = 600 / ms as usize; // 600 ms of audio
        for k in 0..frames {
            let payload: Vec<u8> = (0..n).map(|i| ((i + k) % 251) as u8).collect();
            rtp(0, k as u16, (n * k) as u32, 1, false, &payload, &mut pkt);
            ing.push(a.id, &pkt).unwrap();
            e.step(u64::from(ms / 10)).unwrap();
            out.extend(drain(&mut eg));
        }
        e.step(40).unwrap();
        out.extend(drain(&mut eg));
        let trailing = (100 / ms as usize) + 1;
        assert!(
            (frames..=frames + trailing).contains(&out.len()),
            "{ms} ms: one packet out per packet in ({})",
            out.len()
        );
        for (k, o) in out.iter().enumerate() {
            assert_eq!(o.session, b.id);
            assert_eq!(o.payload().len(), n, "{ms} ms payload size");
            assert_eq!(
                o.header.timestamp.wrapping_sub(out[0].header.timestamp),
                (n * k) as u32
            );
        }
    }
}

#[test]
fn frame_slab_exhaustion_is_a_counted_drop_not_an_allocation() {
    // One frame slot, split topology stepped inline: every tick decodes more frames than
    // there are slots before the encoder returns any.
    let e = MediaEngine::new(EngineConfig {
        clock: ClockMode::Virtual,
        topology: Topology::Split,
        sessions_per_lane: 8,
        frame_slots_per_lane: Some(1),
        ..Default::default()
    })
    .unwrap();
    e.start().unwrap();
    let calls: Vec<_> = (0..4)
        .map(|i| call(&e, 10 * i, CodecSpec::PCMU, CodecSpec::PCMA))
        .collect();
    let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
    let mut pkt = Vec::new();
    for k in 0..20usize {
        for &(a, _) in &calls {
            rtp(
                0,
                k as u16,
                160 * k as u32,
                1,
                false,
                &ulaw_frame(k),
                &mut pkt,
            );
            ing.push(a, &pkt).unwrap();
        }
        e.step(2).unwrap();
        drain(&mut eg);
    }
    let exhausted: u64 = calls
        .iter()
        .map(|&(a, _)| e.session_stats(a).unwrap().slab_exhausted)
        .sum();
    let decoded: u64 = calls
        .iter()
        .map(|&(a, _)| e.session_stats(a).unwrap().frames_decoded)
        .sum();
    assert!(exhausted > 0, "slab exhaustion counted");
    assert!(decoded > 0, "the one slot keeps circulating");
    assert_eq!(e.lane_stats(0).unwrap().internal_ring_full, 0);
    e.flush(Duration::from_secs(1)).unwrap();
    assert_eq!(
        e.lane_stats(0).unwrap().frame_slots_free,
        1,
        "the slot came back"
    );
}

#[test]
fn create_call_is_both_or_neither_when_the_command_ring_is_nearly_full() {
    let e = MediaEngine::new(EngineConfig {
        sessions_per_lane: 8,
        command_capacity: 4,
        raise_priority: false,
        ..Default::default()
    })
    .unwrap();
    e.start().unwrap();
    // Real-time lanes are started but we fill the ring faster than a tick drains it.
    let mut created = 0;
    for i in 0..4u64 {
        match e.create_call(
            (
                DialogId(10 * i),
                MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_20),
            ),
            (
                DialogId(10 * i + 1),
                MediaSessionParams::new(CodecSpec::PCMA, Ptime::MS_20),
            ),
        ) {
            Ok(_) => created += 1,
            Err(err) => assert_eq!(err, Error::RingFull { ring: "commands" }),
        }
        // Never half a call.
        assert_eq!(e.session_count(), 2 * created);
    }
    // A call needs room for four commands: the empty ring of a fresh engine has it.
    assert!(created >= 1, "the first call fits a 4-command ring");
    e.stop().unwrap();
}

#[test]
fn a_refused_call_leaves_no_leg_and_frees_its_dialogs() {
    let e = virtual_engine(4);
    let err = e
        .create_call(
            (
                DialogId(1),
                MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_20),
            ),
            (
                DialogId(2),
                MediaSessionParams::new(CodecSpec::PCMA, Ptime::MS_30),
            ),
        )
        .unwrap_err();
    assert!(matches!(err, Error::BridgeMismatch { .. }), "{err:?}");
    assert_eq!(e.session_count(), 0);
    e.step(2).unwrap();
    // The same dialogs can be used again, and the slots came back.
    for _ in 0..4 {
        let (a, b) = e
            .create_call(
                (
                    DialogId(1),
                    MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_20),
                ),
                (
                    DialogId(2),
                    MediaSessionParams::new(CodecSpec::PCMA, Ptime::MS_20),
                ),
            )
            .unwrap();
        e.destroy_media_session(a.id).unwrap();
        e.destroy_media_session(b.id).unwrap();
        e.step(2).unwrap();
    }
    assert_eq!(e.session_count(), 0);
}

/// `unbridge` on real lane threads with one command slot left: refused as a whole
/// (`RingFull`) or done as a whole, never half. Before, it sent the first leg's route, then
/// failed on the second's: the engine took the call for unbridged while the lane kept
/// routing B's audio to A (A went on sending B's audio, and a retried `unbridge` was a
/// no-op).
#[test]
fn unbridge_with_a_full_command_ring_is_all_or_nothing() {
    use media_core::quality::monitor::QualityAdjustment;
    let e = MediaEngine::new(EngineConfig {
        sessions_per_lane: 4,
        command_capacity: 4,
        raise_priority: false,
        ..Default::default()
    })
    .unwrap();
    e.start().unwrap();
    let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
    let mut refused = 0;
    for round in 0..10u64 {
        let (a, b) = e
            .create_call(
                (
                    DialogId(2 * round),
                    MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_20),
                ),
                (
                    DialogId(2 * round + 1),
                    MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_20),
                ),
            )
            .unwrap();
        e.flush(std::time::Duration::from_secs(2)).unwrap();
        // Three commands queued at once: one slot of four left (the lane takes commands
        // at its next 10 ms tick).
        for _ in 0..3 {
            e.adjust_quality(QualityAdjustment::JitterBounds {
                session: a.id.to_u64(),
                min_delay_ms: 20,
                max_delay_ms: 300,
            })
            .unwrap();
        }
        match e.unbridge(a.id) {
            Ok(()) => {}
            Err(err) => {
                assert_eq!(err, Error::RingFull { ring: "commands" });
                refused += 1;
                e.flush(std::time::Duration::from_secs(2)).unwrap();
                e.unbridge(a.id).unwrap();
            }
        }
        e.flush(std::time::Duration::from_secs(2)).unwrap();
        while eg.pop().is_some() {}
        // Unbridged both ways: what either leg receives goes nowhere.
        let mut pkt = Vec::new();
        for k in 0..8u16 {
            for (id, ssrc) in [(a.id, 1), (b.id, 2)] {
                rtp(
                    0,
                    k,
                    160 * u32::from(k),
                    ssrc,
                    k == 0,
                    &ulaw_frame(k.into()),
                    &mut pkt,
                );
                ing.push(id, &pkt).unwrap();
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        let sent: Vec<_> = drain(&mut eg);
        assert!(
            sent.is_empty(),
            "round {round}: {} packets sent by {:?} after the unbridge",
            sent.len(),
            sent.first().map(|p| p.session)
        );
        e.destroy_media_session(a.id).unwrap();
        e.destroy_media_session(b.id).unwrap();
        e.flush(std::time::Duration::from_secs(2)).unwrap();
    }
    // The refusal is what this checks: the lane ticks every 10 ms, the four commands take
    // microseconds, so nearly every round meets a ring with one slot.
    assert!(refused > 0, "no unbridge met a full ring");
    e.stop().unwrap();
}

/// `create_call` against other control-plane callers filling the same small command ring:
/// every call is whole or absent, whatever the interleaving (session 15's soak once ended
/// with half a call after a refused rollback).
#[test]
fn calls_stay_whole_while_other_callers_fill_the_command_ring() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let e = std::sync::Arc::new(
        MediaEngine::new(EngineConfig {
            sessions_per_lane: 16,
            command_capacity: 16,
            raise_priority: false,
            ..Default::default()
        })
        .unwrap(),
    );
    e.start().unwrap();
    let busy = e
        .create_media_session(
            DialogId(1_000_000),
            MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_20),
        )
        .unwrap();
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let filler = {
        let (e, stop) = (e.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let _ = e.update_media_session(
                    busy.id,
                    MediaSessionParams::new(CodecSpec::PCMA, Ptime::MS_20),
                );
                // About 20 updates per 10 ms tick: the ring fills and drains all the time.
                std::thread::sleep(std::time::Duration::from_micros(500));
            }
        })
    };
    let (mut made, mut refused) = (0, 0);
    for i in 0..400u64 {
        match e.create_call(
            (
                DialogId(2 * i),
                MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_20),
            ),
            (
                DialogId(2 * i + 1),
                MediaSessionParams::new(CodecSpec::PCMA, Ptime::MS_20),
            ),
        ) {
            Ok((a, b)) => {
                made += 1;
                assert_eq!(e.session_count(), 3);
                while e.destroy_media_session(b.id).is_err() {
                    std::thread::yield_now();
                }
                while e.destroy_media_session(a.id).is_err() {
                    std::thread::yield_now();
                }
            }
            Err(err) => {
                assert_eq!(err, Error::RingFull { ring: "commands" });
                refused += 1;
            }
        }
        assert_eq!(e.session_count(), 1, "call {i} left a leg behind");
        std::thread::sleep(std::time::Duration::from_micros(300));
    }
    stop.store(true, Ordering::Relaxed);
    filler.join().unwrap();
    eprintln!("{made} calls made, {refused} refused (ring full)");
    assert!(made > 0, "{made} made, {refused} refused");
    e.stop().unwrap();
}

#[test]
fn g722_to_pcmu_bridge_resamples_and_keeps_the_tone() {
    use media_core::codec::audio::g722::{G722Decoder, G722Encoder, G722Mode};
    let e = virtual_engine(4);
    let (a, b) = e
        .create_call(
            (
                DialogId(1),
                MediaSessionParams::new(CodecSpec::G722, Ptime::MS_20),
            ),
            (
                DialogId(2),
                MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_20),
            ),
        )
        .unwrap();
    let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
    // A 1 kHz tone at 16 kHz, G.722-encoded, into leg A; PCMU out of leg B (and back).
    let tone16 = |n: usize| {
        ((n as f64 * 2.0 * std::f64::consts::PI * 1000.0 / 16000.0).sin() * 8000.0) as i16
    };
    let mut enc = G722Encoder::new(G722Mode::Rate64k);
    let mut pkt = Vec::new();
    let mut out = Vec::new();
    for k in 0..60usize {
        let pcm: Vec<i16> = (0..320).map(|i| tone16(k * 320 + i)).collect();
        let mut payload = vec![0u8; 160];
        enc.encode(&pcm, &mut payload);
        // RFC 3551: G.722 timestamps advance 160 per 20 ms (8 kHz clock).
        rtp(9, k as u16, 160 * k as u32, 3, k == 0, &payload, &mut pkt);
        ing.push(a.id, &pkt).unwrap();
        e.step(2).unwrap();
        out.extend(drain(&mut eg));
    }
    let from_b: Vec<_> = out.iter().filter(|p| p.session == b.id).collect();
    assert!(from_b.len() >= 50, "{} PCMU packets", from_b.len());
    // Decode leg B's µ-law and measure the 1 kHz tone's SNR at 8 kHz over steady frames.
    let mut pcm8 = Vec::new();
    for p in &from_b[10..50] {
        assert_eq!(p.header.payload_type, 0);
        assert_eq!(p.payload().len(), 160);
        let mut f = [0i16; 160];
        g711::ulaw_decode(p.payload(), &mut f);
        pcm8.extend_from_slice(&f);
    }
    let (snr, amp) = tone_fit(&pcm8, 1000.0, 8000.0);
    assert!(snr > 25.0, "G.722 -> resample -> PCMU tone SNR {snr:.1} dB");
    assert!((6500.0..9500.0).contains(&amp), "level kept ({amp:.0})");
    // The reverse direction: PCMU into B comes out of A as G.722 at 16 kHz.
    let mut dec = G722Decoder::new(G722Mode::Rate64k);
    for k in 0..30usize {
        rtp(
            0,
            k as u16,
            160 * k as u32,
            4,
            false,
            &ulaw_frame(k),
            &mut pkt,
        );
        ing.push(b.id, &pkt).unwrap();
        e.step(2).unwrap();
    }
    let from_a: Vec<_> = drain(&mut eg)
        .into_iter()
        .filter(|p| p.session == a.id)
        .collect();
    assert!(from_a.len() >= 20);
    for p in &from_a {
        assert_eq!(p.header.payload_type, 9);
        assert_eq!(p.payload().len(), 160, "20 ms of G.722 is 160 bytes");
        let mut f = [0i16; 320];
        assert_eq!(dec.decode(p.payload(), &mut f), 320);
    }
}

#[test]
fn opus_to_pcmu_bridge_transcodes_and_resamples_both_ways() {
    let e = virtual_engine(4);
    let (a, b) = e
        .create_call(
            (
                DialogId(1),
                MediaSessionParams::new(CodecSpec::OPUS, Ptime::MS_20),
            ),
            (
                DialogId(2),
                MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_20),
            ),
        )
        .unwrap();
    let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
    // A 440 Hz tone at 48 kHz, Opus-encoded by an independent libopus encoder.
    let mut enc = opus::Encoder::new(48000, opus::Channels::Mono, opus::Application::Voip).unwrap();
    let tone48 = |n: usize| {
        ((n as f64 * 2.0 * std::f64::consts::PI * 440.0 / 48000.0).sin() * 8000.0) as i16
    };
    let mut pkt = Vec::new();
    let mut out = Vec::new();
    for k in 0..80usize {
        let pcm: Vec<i16> = (0..960).map(|i| tone48(k * 960 + i)).collect();
        let mut payload = vec![0u8; 400];
        let n = enc.encode(&pcm, &mut payload).unwrap();
        // RFC 7587: the RTP clock is 48 kHz.
        rtp(
            111,
            k as u16,
            960 * k as u32,
            5,
            k == 0,
            &payload[..n],
            &mut pkt,
        );
        ing.push(a.id, &pkt).unwrap();
        e.step(2).unwrap();
        out.extend(drain(&mut eg));
    }
    let from_b: Vec<_> = out.iter().filter(|p| p.session == b.id).collect();
    assert!(from_b.len() >= 70, "{} PCMU packets", from_b.len());
    // The tone's SNR at 8 kHz after Opus decode + 48 -> 8 kHz + µ-law.
    let mut pcm8 = Vec::new();
    for p in &from_b[20..70] {
        assert_eq!((p.header.payload_type, p.payload().len()), (0, 160));
        let mut f = [0i16; 160];
        g711::ulaw_decode(p.payload(), &mut f);
        pcm8.extend_from_slice(&f);
    }
    let (snr, _) = tone_fit(&pcm8, 440.0, 8000.0);
    assert!(snr > 20.0, "Opus -> PCMU tone SNR {snr:.1} dB");
    // PCMU into B comes out of A as Opus with 48 kHz timestamps, decodable by libopus.
    let mut dec = opus::Decoder::new(48000, opus::Channels::Mono).unwrap();
    for k in 0..30usize {
        rtp(
            0,
            k as u16,
            160 * k as u32,
            6,
            false,
            &ulaw_frame(k),
            &mut pkt,
        );
        ing.push(b.id, &pkt).unwrap();
        e.step(2).unwrap();
    }
    let from_a: Vec<_> = drain(&mut eg)
        .into_iter()
        .filter(|p| p.session == a.id)
        .collect();
    assert!(from_a.len() >= 20);
    let ts0 = from_a[0].header.timestamp;
    for (k, p) in from_a.iter().enumerate() {
        assert_eq!(p.header.payload_type, 111);
        assert_eq!(p.header.timestamp.wrapping_sub(ts0), 960 * k as u32);
        let mut f = [0i16; 960];
        assert_eq!(dec.decode(p.payload(), &mut f, false).unwrap(), 960);
    }
}

/// A started virtual-clock engine for Opus relay tests (fixed jitter buffer, 20 ms of
/// 48 kHz frames).
fn opus_relay_engine() -> MediaEngine {
    let e = MediaEngine::new(EngineConfig {
        clock: ClockMode::Virtual,
        sessions_per_lane: 4,
        jitter: fixed_jitter(),
        max_frame_samples: 960,
        ..Default::default()
    })
    .unwrap();
    e.start().unwrap();
    e
}

/// An Opus payload whose TOC byte sizes it but that libopus refuses (code 1: two equal
/// frames in an odd number of bytes) is counted undecodable, not decoded, and plays as
/// concealment; the stream around it decodes on. In review it counted as decoded.
#[test]
fn an_opus_payload_the_decoder_refuses_is_counted_undecodable() {
    let e = virtual_engine(4);
    let (a, _b) = call(&e, 1, CodecSpec::OPUS, CodecSpec::PCMU);
    let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
    let mut enc = opus::Encoder::new(48000, opus::Channels::Mono, opus::Application::Voip).unwrap();
    let mut pkt = Vec::new();
    let corrupt = [20usize, 35, 50];
    for k in 0..60usize {
        let payload = if corrupt.contains(&k) {
            // Config 14 (hybrid fullband 10 ms), code 1: two frames, 20 ms by the TOC,
            // but 3 bytes after it cannot split into two equal frames.
            vec![0x71, 0xAA, 0xBB, 0xCC]
        } else {
            common::opus_tone_packet(&mut enc, k, 8000.0)
        };
        rtp(111, k as u16, 960 * k as u32, 7, k == 0, &payload, &mut pkt);
        ing.push(a, &pkt).unwrap();
        e.step(2).unwrap();
        drain(&mut eg);
    }
    let s = e.session_stats(a).unwrap();
    assert_eq!(s.rx_undecodable, 3, "{s:?}");
    assert!(s.packets_decoded >= 52 && s.packets_decoded <= 57, "{s:?}");
    assert!(s.frames_concealed >= 3, "{s:?}");
}

#[test]
fn opus_relay_passes_payloads_through_undecoded_and_leaves_losses_to_the_far_end() {
    let e = opus_relay_engine();
    let (a, b) = call(&e, 1, CodecSpec::OPUS, CodecSpec::OPUS);
    let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
    let mut enc = opus::Encoder::new(48000, opus::Channels::Mono, opus::Application::Voip).unwrap();
    let mut pkt = Vec::new();
    let mut sent = Vec::new();
    let mut out = Vec::new();
    let lost = [30usize, 31, 45];
    for k in 0..60usize {
        let payload = common::opus_tone_packet(&mut enc, k, 8000.0);
        if !lost.contains(&k) {
            rtp(111, k as u16, 960 * k as u32, 7, k == 0, &payload, &mut pkt);
            ing.push(b, &pkt).unwrap();
        }
        sent.push(payload);
        e.step(2).unwrap();
        out.extend(drain(&mut eg));
    }
    let from_a: Vec<_> = out.iter().filter(|p| p.session == a).collect();
    // Every packet that arrived leaves byte for byte, in order; a lost one leaves a gap in
    // the sequence of payloads (the far end's Opus decoder conceals it, with FEC from the
    // next packet), never a re-encoded concealment.
    let expected: Vec<&Vec<u8>> = (0..60)
        .filter(|k| !lost.contains(k))
        .map(|k| &sent[k])
        .collect();
    let got: Vec<&[u8]> = from_a.iter().map(|p| p.payload()).collect();
    assert!(got.len() >= 50, "{} packets", got.len());
    for (g, x) in got.iter().zip(&expected) {
        assert_eq!(*g, &x[..]);
    }
    let s = e.session_stats(b).unwrap();
    // Only the packet that starts the stream is decoded (the buffer's start-up goes through
    // the general path); every later one passes through undecoded.
    assert!(
        s.packets_decoded <= 1,
        "{} packets decoded",
        s.packets_decoded
    );
    assert_eq!(s.frames_concealed, 0);
    assert_eq!(s.frames_relayed as usize, got.len());
}

#[test]
fn an_opus_relay_to_a_leg_with_an_echo_canceller_still_decodes_its_reference() {
    // What is sent to a leg is its echo canceller's reference: relayed payloads must still
    // be decoded for it (an undecoded relay would leave the canceller without a reference).
    use media_core::processing::audio::aec::AecConfig;
    let e = opus_relay_engine();
    let mut with_aec = MediaSessionParams::new(CodecSpec::OPUS, Ptime::MS_20);
    with_aec.dsp.aec = Some(AecConfig::default());
    let (a, b) = e
        .create_call(
            (DialogId(1), with_aec),
            (
                DialogId(2),
                MediaSessionParams::new(CodecSpec::OPUS, Ptime::MS_20),
            ),
        )
        .unwrap();
    let (a, b) = (a.id, b.id);
    let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
    let mut enc = opus::Encoder::new(48000, opus::Channels::Mono, opus::Application::Voip).unwrap();
    let (mut pkt, mut sent, mut out) = (Vec::new(), Vec::new(), Vec::new());
    for k in 0..40usize {
        let payload = common::opus_tone_packet(&mut enc, k, 8000.0);
        rtp(111, k as u16, 960 * k as u32, 7, k == 0, &payload, &mut pkt);
        ing.push(b, &pkt).unwrap();
        sent.push(payload);
        e.step(2).unwrap();
        out.extend(drain(&mut eg));
    }
    let got: Vec<&[u8]> = out
        .iter()
        .filter(|p| p.session == a)
        .map(|p| p.payload())
        .collect();
    assert!(got.len() >= 30, "{} packets", got.len());
    for (g, x) in got.iter().zip(&sent) {
        assert_eq!(*g, &x[..], "still relayed byte for byte");
    }
    let s = e.session_stats(b).unwrap();
    assert_eq!(s.frames_relayed as usize, got.len());
    assert!(
        s.packets_decoded as usize >= got.len(),
        "{} packets decoded for {} relayed",
        s.packets_decoded,
        got.len()
    );
}

#[test]
fn rfc4733_digits_reach_the_control_plane_once_each_even_when_end_packets_are_lost() {
    use media_core::codec::audio::telephone_event::{digit_to_event, DtmfSender};
    use media_core::runtime::msg::DtmfSource;
    let e = virtual_engine(8);
    let pa = pcmu_with_telephone_event();
    let (a, _b) = e
        .create_call(
            (DialogId(1), pa),
            (
                DialogId(2),
                MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_20),
            ),
        )
        .unwrap();
    let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
    let mut tx = DtmfSender::new(160).unwrap();
    let mut pkt = Vec::new();
    let mut buf = [0u8; 4];
    let mut digits = "19#7".chars();
    let mut seq = 0u16;
    let mut gap = 0;
    for k in 0..150u32 {
        let ts = 160 * k;
        if tx.is_idle() {
            if gap > 0 {
                gap -= 1;
            } else if let Some(d) = digits.next() {
                tx.start(digit_to_event(d).unwrap(), 10, Some(800)).unwrap();
                gap = 3;
            }
        }
        // Audio every 20 ms; telephone events interleaved on the same stream.
        rtp(0, seq, ts, 9, k == 0, &ulaw_frame(k as usize), &mut pkt);
        seq = seq.wrapping_add(1);
        ing.push(a.id, &pkt).unwrap();
        if let Some(h) = tx.poll(ts, &mut buf) {
            // '9' loses all three of its end packets (the next digit ends it); so does the
            // last digit, '7', which only the receiver's timeout can end.
            let lost = h.end
                && (buf[0] == digit_to_event('9').unwrap()
                    || buf[0] == digit_to_event('7').unwrap());
            if !lost {
                rtp(101, seq, h.timestamp, 9, h.marker, &buf, &mut pkt);
                ing.push(a.id, &pkt).unwrap();
            }
            seq = seq.wrapping_add(1);
        }
        e.step(2).unwrap();
        drain(&mut eg);
    }
    let mut began = String::new();
    let mut ended = Vec::new();
    while let Some(ev) = e.poll_event() {
        if let media_core::EngineEvent::Dtmf {
            session,
            digit,
            source,
            ended_ms,
        } = ev
        {
            assert_eq!((session, source), (a.id, DtmfSource::Rfc4733));
            match ended_ms {
                None => began.push(digit),
                Some(ms) => ended.push((digit, ms)),
            }
        }
    }
    assert_eq!(began, "19#7");
    assert_eq!(
        ended.iter().map(|&(d, _)| d).collect::<String>(),
        "19#7",
        "{ended:?}"
    );
    // 800 timestamp units at 8 kHz = 100 ms; the timed-out '9' reports what was seen.
    assert_eq!(ended[0].1, 100);
    assert!((60..=100).contains(&ended[1].1), "{ended:?}");
    assert!((60..=100).contains(&ended[3].1), "{ended:?}");
    let s = e.session_stats(a.id).unwrap();
    assert!(s.rx_dtmf_packets >= 10);
}

/// Two digits sent back to back on a 10 ms ptime: the second starts 40 ms (Q.24) after
/// the first ends, with audio in between, in one sequence space. In review the end
/// packets alone left 20 ms, and a regenerating gateway may merge the two.
#[test]
fn digits_sent_back_to_back_leave_40_ms_between_them() {
    use media_core::codec::audio::telephone_event::EventPayload;
    let e = virtual_engine(8);
    let mut pa = MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_10);
    pa.telephone_event_send_pt = media_core::PayloadType::new(101);
    let (a, b) = e
        .create_call(
            (DialogId(1), pa),
            (
                DialogId(2),
                MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_10),
            ),
        )
        .unwrap();
    let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
    let (mut pkt, mut out) = (Vec::new(), Vec::new());
    for k in 0..80usize {
        rtp(
            0,
            k as u16,
            80 * k as u32,
            5,
            k == 0,
            &ulaw_frame(k)[..80],
            &mut pkt,
        );
        ing.push(b.id, &pkt).unwrap();
        if k == 10 {
            e.send_dtmf(a.id, '5', 100).unwrap();
            e.send_dtmf(a.id, '5', 100).unwrap();
        }
        e.step(1).unwrap();
        out.extend(drain(&mut eg).into_iter().filter(|p| p.session == a.id));
    }
    let starts: Vec<(usize, u32)> = out
        .iter()
        .enumerate()
        .filter(|(_, p)| p.header.payload_type == 101 && p.header.marker)
        .map(|(i, p)| (i, p.header.timestamp))
        .collect();
    assert_eq!(starts.len(), 2, "two digits");
    let end = starts[0].1 + 800;
    assert!(
        starts[1].1 >= end + 320,
        "{} units between",
        starts[1].1 - end
    );
    assert!(
        out[starts[0].0..starts[1].0]
            .iter()
            .any(|p| p.header.payload_type == 0),
        "audio in the gap"
    );
    for w in out.windows(2) {
        assert_eq!(w[1].header.sequence, w[0].header.sequence.wrapping_add(1));
    }
    let ends = out
        .iter()
        .filter(|p| p.header.payload_type == 101)
        .filter(|p| EventPayload::parse(p.payload()).unwrap().end)
        .count();
    assert_eq!(ends, 6);
}

#[test]
fn send_dtmf_sends_rfc4733_events_in_place_of_audio_then_resumes_audio() {
    use media_core::codec::audio::telephone_event::EventPayload;
    let e = virtual_engine(8);
    let mut pa = MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_20);
    pa.telephone_event_send_pt = media_core::PayloadType::new(101);
    let (a, b) = e
        .create_call(
            (DialogId(1), pa),
            (
                DialogId(2),
                MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_20),
            ),
        )
        .unwrap();
    // The other leg negotiated no telephone-event to send: a typed error.
    assert!(matches!(
        e.send_dtmf(b.id, '1', 100),
        Err(media_core::Error::UnsupportedParameters { .. })
    ));
    assert!(e.send_dtmf(a.id, 'x', 100).is_err());
    let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
    let mut pkt = Vec::new();
    let mut out = Vec::new();
    for k in 0..40usize {
        // B talks, so A sends audio towards its peer every 20 ms.
        rtp(
            0,
            k as u16,
            160 * k as u32,
            5,
            k == 0,
            &ulaw_frame(k),
            &mut pkt,
        );
        ing.push(b.id, &pkt).unwrap();
        if k == 10 {
            e.send_dtmf(a.id, '#', 100).unwrap();
        }
        e.step(2).unwrap();
        out.extend(drain(&mut eg).into_iter().filter(|p| p.session == a.id));
    }
    let events: Vec<_> = out
        .iter()
        .filter(|p| p.header.payload_type == 101)
        .map(|p| (p.header, EventPayload::parse(p.payload()).unwrap()))
        .collect();
    // 100 ms at 20 ms intervals: updates up to 800 units, then the end packet three times.
    assert!(events.len() >= 7, "{} event packets", events.len());
    assert!(events[0].0.marker && events[1..].iter().all(|(h, _)| !h.marker));
    let ts = events[0].0.timestamp;
    assert!(events
        .iter()
        .all(|(h, p)| h.timestamp == ts && p.event == 11));
    let ends: Vec<_> = events.iter().filter(|(_, p)| p.end).collect();
    assert_eq!(ends.len(), 3);
    assert!(ends.iter().all(|(_, p)| p.duration == 800));
    // One sequence space: audio, events and audio again, no gaps or repeats.
    for w in out.windows(2) {
        assert_eq!(w[1].header.sequence, w[0].header.sequence.wrapping_add(1));
    }
    // Audio resumed after the event, as a new talkspurt.
    let last_event = out
        .iter()
        .rposition(|p| p.header.payload_type == 101)
        .unwrap();
    let resumed = &out[last_event + 1];
    assert_eq!(resumed.header.payload_type, 0);
    assert!(resumed.header.marker);
    assert_eq!(
        e.session_stats(a.id).unwrap().tx_dtmf_packets as usize,
        events.len()
    );
}

/// A session with no peer and no application (created, not bridged yet, or left by an
/// unbridge) still keeps its send side's time: a digit asked for goes out in the next
/// frame periods, not when the session is bridged some time later (before, it waited for
/// a source to drive its sender), and the first audio after the bridge is a new talkspurt
/// whose timestamp counts the periods that passed.
#[test]
fn send_dtmf_on_a_session_with_no_peer_goes_out_at_once() {
    use media_core::codec::audio::telephone_event::EventPayload;
    let e = virtual_engine(8);
    let mut pa = MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_20);
    pa.telephone_event_send_pt = media_core::PayloadType::new(101);
    let a = e.create_media_session(DialogId(1), pa).unwrap();
    let b = e
        .create_media_session(
            DialogId(2),
            MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_20),
        )
        .unwrap();
    let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
    e.step(10).unwrap();
    e.send_dtmf(a.id, '7', 100).unwrap();
    // 200 ms, nobody talking and nothing bridged.
    e.step(40).unwrap();
    let out: Vec<_> = drain(&mut eg)
        .into_iter()
        .filter(|p| p.session == a.id)
        .collect();
    let events: Vec<_> = out
        .iter()
        .map(|p| (p.header, EventPayload::parse(p.payload()).unwrap()))
        .collect();
    assert!(
        out.iter().all(|p| p.header.payload_type == 101),
        "no audio without a source"
    );
    // 100 ms at 20 ms intervals, then the end three times.
    assert!(events.len() >= 7, "{} event packets", events.len());
    assert!(events.iter().all(|(_, p)| p.event == 7));
    assert_eq!(events.iter().filter(|(_, p)| p.end).count(), 3);
    let event_ts = events[0].0.timestamp;
    let last_seq = events.last().unwrap().0.sequence;
    // Bridged 1 s later: B talks, A sends its audio as a new talkspurt, its timestamp
    // 1 s and more beyond the digit's (time went on while A had nothing to send).
    e.step(100).unwrap();
    e.bridge(a.id, b.id).unwrap();
    let mut pkt = Vec::new();
    let mut audio = Vec::new();
    for k in 0..10usize {
        rtp(
            0,
            k as u16,
            160 * k as u32,
            5,
            k == 0,
            &ulaw_frame(k),
            &mut pkt,
        );
        ing.push(b.id, &pkt).unwrap();
        e.step(4).unwrap();
        audio.extend(drain(&mut eg).into_iter().filter(|p| p.session == a.id));
    }
    let first = audio
        .first()
        .expect("A sends B's audio once bridged")
        .header;
    assert_eq!(first.payload_type, 0);
    assert!(first.marker);
    assert_eq!(first.sequence, last_seq.wrapping_add(1));
    let elapsed = first.timestamp.wrapping_sub(event_ts);
    assert!(
        (8_000..16_000).contains(&elapsed),
        "timestamp advanced {elapsed} units"
    );
}

/// RTP keepalive (`keepalive_ms`): a leg whose source goes quiet (its bridged peer stops
/// sending; then the call is parked) sends a packet every second, a frame of encoded
/// silence or, with comfort noise negotiated, a SID frame; audio from the peer again
/// resumes the stream as before. Sequence numbers stay contiguous and timestamps follow
/// the clock. Off (the default), nothing is sent in the silence.
#[test]
fn a_leg_whose_source_is_silent_sends_keepalives() {
    for (keepalive_ms, cn) in [(1000, false), (1000, true), (0, false)] {
        let e = virtual_engine(8);
        let mut pa = MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_20);
        pa.keepalive_ms = keepalive_ms;
        if cn {
            pa.comfort_noise_send_pt = media_core::PayloadType::new(13);
        }
        let (a, b) = e
            .create_call(
                (DialogId(1), pa),
                (
                    DialogId(2),
                    MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_20),
                ),
            )
            .unwrap();
        let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
        let mut pkt = Vec::new();
        let mut out = Vec::new();
        // B talks for 1 s, is silent (sends nothing) for 4.5 s, talks for 1 s; then the
        // call is parked for 2 s.
        for k in 0..425usize {
            let talking = k < 50 || (275..325).contains(&k);
            if talking {
                rtp(
                    0,
                    k as u16,
                    160 * k as u32,
                    5,
                    k == 275,
                    &ulaw_frame(k),
                    &mut pkt,
                );
                ing.push(b.id, &pkt).unwrap();
            }
            if k == 325 {
                e.unbridge(a.id).unwrap();
            }
            e.step(2).unwrap();
            out.extend(drain(&mut eg).into_iter().filter(|p| p.session == a.id));
        }
        for w in out.windows(2) {
            assert_eq!(w[1].header.sequence, w[0].header.sequence.wrapping_add(1));
            // Timestamps track the 20 ms periods, sent or not.
            let dt = w[1].header.timestamp.wrapping_sub(w[0].header.timestamp);
            // With keepalives, never more than a second apart.
            let max = if keepalive_ms == 0 { u32::MAX } else { 8000 };
            assert!(dt % 160 == 0 && (160..=max).contains(&dt), "step {dt}");
        }
        // Keepalives: the packets a second of timestamps after the one before.
        let keepalives: Vec<_> = out
            .windows(2)
            .filter(|w| w[1].header.timestamp.wrapping_sub(w[0].header.timestamp) == 8000)
            .map(|w| &w[1])
            .collect();
        let st = e.lane_stats(0).unwrap();
        let sent = out.len();
        if keepalive_ms == 0 {
            assert!(keepalives.is_empty(), "{} 1 s gaps", keepalives.len());
            assert_eq!(st.keepalives_sent, 0);
            assert!(sent >= 95, "{sent} packets");
            continue;
        }
        // About 4 in the 4.5 s silence (after the jitter buffer's concealment ends) and 2
        // while parked, each marked.
        assert!(
            (5..=7).contains(&keepalives.len()),
            "cn {cn}: {} keepalives",
            keepalives.len()
        );
        assert_eq!(st.keepalives_sent as usize, keepalives.len());
        for k in &keepalives {
            assert!(k.header.marker);
            if cn {
                assert_eq!((k.header.payload_type, k.payload()), (13, &[127u8][..]));
            } else {
                assert_eq!(
                    (k.header.payload_type, k.payload()),
                    (0, &[0xFFu8; 160][..])
                );
            }
        }
        // The audio before and after the silence all went out as well.
        assert!(sent - keepalives.len() >= 95, "{sent} packets");
        assert_eq!(
            e.session_stats(a.id).unwrap().tx_cn_packets as usize,
            if cn { keepalives.len() } else { 0 }
        );
    }
}

/// Leg A's phone into an undecoded G.722 relay A → B (`pb` B's parameters) on a virtual
/// engine: a 1 kHz tone in frames `0..frames` except `silence`, through which it sends
/// nothing or, with `sid_every`, an RFC 3389 SID (-70 dBov) every that many frames (each
/// duplicated a frame later); its
/// first packet after the silence is marked. At the frames in `talk_sids` a SID follows
/// the audio packet (with its timestamp: a sender that takes it back at once), and the
/// packets of the frames in `lost` are lost. Returns the engine, what B sent, and the
/// payloads A's phone sent, and the egress handle.
fn g722_relay_across_silence(
    pb: MediaSessionParams,
    frames: usize,
    silence: std::ops::Range<usize>,
    sid_every: Option<usize>,
    talk_sids: &[usize],
    lost: &[usize],
) -> (
    MediaEngine,
    Vec<common::Out>,
    Vec<Vec<u8>>,
    media_core::EgressHandle,
) {
    use media_core::codec::audio::g722::{G722Encoder, G722Mode};
    let e = virtual_engine(4);
    let mut pa = MediaSessionParams::new(CodecSpec::G722, Ptime::MS_20);
    pa.comfort_noise_pt = media_core::PayloadType::new(13);
    let (a, b) = e.create_call((DialogId(1), pa), (DialogId(2), pb)).unwrap();
    let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
    let tone16 = |n: usize| {
        ((n as f64 * 2.0 * std::f64::consts::PI * 1000.0 / 16000.0).sin() * 8000.0) as i16
    };
    let mut enc = G722Encoder::new(G722Mode::Rate64k);
    let (mut pkt, mut out, mut sent) = (Vec::new(), Vec::new(), Vec::new());
    for k in 0..frames {
        // Sequence numbers: one per frame, and one more for each talk SID before.
        let seq = (k + talk_sids.iter().filter(|&&t| t < k).count()) as u16;
        if lost.contains(&k) {
            let pcm: Vec<i16> = (0..320).map(|i| tone16(k * 320 + i)).collect();
            enc.encode(&pcm, &mut [0u8; 160]);
        } else if !silence.contains(&k) {
            let pcm: Vec<i16> = (0..320).map(|i| tone16(k * 320 + i)).collect();
            let mut payload = vec![0u8; 160];
            enc.encode(&pcm, &mut payload);
            rtp(
                9,
                seq,
                160 * k as u32,
                3,
                k == silence.end,
                &payload,
                &mut pkt,
            );
            ing.push(a.id, &pkt).unwrap();
            sent.push(payload);
            if talk_sids.contains(&k) {
                rtp(13, seq + 1, 160 * k as u32, 3, false, &[60], &mut pkt);
                ing.push(a.id, &pkt).unwrap();
            }
        } else if sid_every.is_some_and(|n| k % n == 0) {
            rtp(13, seq, 160 * k as u32, 3, false, &[70], &mut pkt);
            ing.push(a.id, &pkt).unwrap();
        } else if sid_every.is_some_and(|n| k % n == 1) {
            // The network duplicates each SID, a frame period late.
            rtp(13, seq - 1, 160 * (k - 1) as u32, 3, false, &[70], &mut pkt);
            ing.push(a.id, &pkt).unwrap();
        }
        e.step(2).unwrap();
        out.extend(drain(&mut eg).into_iter().filter(|p| p.session == b.id));
    }
    (e, out, sent, eg)
}

/// The RMS of each of `packets` (G.722, none empty) decoded in order, as the far end hears
/// them.
fn g722_decoded_rms<'a>(packets: impl IntoIterator<Item = &'a common::Out>) -> Vec<f64> {
    use media_core::codec::audio::g722::{G722Decoder, G722Mode};
    let mut dec = G722Decoder::new(G722Mode::Rate64k);
    let mut pcm = vec![0i16; 320];
    packets
        .into_iter()
        .map(|p| {
            let n = dec.decode(p.payload(), &mut pcm);
            (pcm[..n].iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / n as f64).sqrt()
        })
        .collect()
}

/// An undecoded G.722 relay across a gap in the source's stream (1 s with no packets:
/// DTX without comfort noise, a hold), with and without keepalives: the far end's decoder
/// follows the source's encoder, so nothing the destination's own encoder makes may enter
/// the stream. Keepalives are empty payloads (encoded silence decoded there as a decaying
/// echo of the tone: its first 5 ms at the tone's level), and the jitter buffer's frame at
/// the restart is held back, not encoded (it decoded there at +12 dB over the tone, 22,887
/// RMS against 5,658, before). The tone comes back at its level.
#[test]
fn an_undecoded_g722_relay_sends_nothing_of_its_own_encoders_across_a_gap() {
    for keepalive_ms in [200, 0] {
        let mut pb = MediaSessionParams::new(CodecSpec::G722, Ptime::MS_20);
        pb.keepalive_ms = keepalive_ms;
        // A's phone: 1 s of tone, 1 s of nothing, 1 s of tone.
        let (e, out, sent, _) = g722_relay_across_silence(pb, 150, 50..100, None, &[], &[]);
        // Every payload B sent is one A's phone sent, or empty (a keepalive).
        let (audio, keepalives): (Vec<_>, Vec<_>) =
            out.iter().partition(|p| !p.payload().is_empty());
        assert!(
            audio
                .iter()
                .all(|p| sent.iter().any(|s| s[..] == p.payload()[..])),
            "keepalive {keepalive_ms}: B sent audio of its own encoder's"
        );
        assert!(audio.len() >= 90, "{} relayed", audio.len());
        assert_eq!(
            keepalives.len() as u64,
            e.lane_stats(0).unwrap().keepalives_sent
        );
        if keepalive_ms > 0 {
            assert!(keepalives.len() >= 4, "{} keepalives", keepalives.len());
            assert!(keepalives
                .iter()
                .all(|k| k.header.payload_type == 9 && k.header.marker));
        }
        // The far end decodes every packet in order: the tone resumes at its level.
        let rms = g722_decoded_rms(audio);
        let steady = rms[30];
        let resumed = &rms[rms.len() - 48..rms.len() - 40];
        assert!(
            resumed
                .iter()
                .all(|&r| (20.0 * (r / steady).log10()).abs() < 1.0),
            "keepalive {keepalive_ms}: resumed {resumed:?} against {steady}"
        );
    }
}

/// An undecoded G.722 relay whose source goes into silence with RFC 3389 comfort noise
/// (SIDs every 200 ms for 3 s): once the jitter buffer has gone idle it plays comfort noise,
/// which the destination's encoder made before and the far end, whose decoder follows the
/// source's encoder, decoded as a burst of 22,674 RMS against the tone's 5,657 (and +3.5 dB
/// over five frames when the tone came back). Now nothing of the destination's own encoder
/// enters the stream, and the far end hears nothing above the tone's level.
#[test]
fn an_undecoded_g722_relay_through_comfort_noise_sends_no_burst() {
    let pb = MediaSessionParams::new(CodecSpec::G722, Ptime::MS_20);
    let (_e, out, sent, _) = g722_relay_across_silence(pb, 250, 50..200, Some(10), &[], &[]);
    assert!(out.len() >= 95, "{} packets", out.len());
    assert!(
        out.iter()
            .all(|p| sent.iter().any(|s| s[..] == p.payload()[..])),
        "B sent audio of its own encoder's"
    );
    let rms = g722_decoded_rms(&out);
    let steady = rms[30];
    assert!(
        rms.iter().all(|&r| r < steady * 1.12),
        "peak frame {:.0} against the tone's {steady:.0}",
        rms.iter().cloned().fold(0.0, f64::max)
    );
}

/// The same relay through comfort noise to a destination that negotiated comfort noise
/// (payload type 19 there): each of the source's SIDs goes on to the far end as sent, with
/// B's payload type and on B's timeline (sequence numbers unbroken, timestamps a SID period
/// apart), so the far end's comfort noise follows the source's instead of silence; nothing
/// of B's own encoder enters the stream, and the tone's return is marked. Without comfort
/// noise negotiated on B (the test above), no SID goes out.
#[test]
fn an_undecoded_g722_relay_forwards_the_sources_sids_where_comfort_noise_was_negotiated() {
    let mut pb = MediaSessionParams::new(CodecSpec::G722, Ptime::MS_20);
    pb.comfort_noise_send_pt = media_core::PayloadType::new(19);
    // A SID inside the first talkspurt, taken back by the audio after it, goes nowhere,
    // nor at a loss after that.
    let (e, out, sent, _) = g722_relay_across_silence(pb, 250, 50..200, Some(10), &[20], &[30]);
    let (sids, audio): (Vec<_>, Vec<_>) = out.iter().partition(|p| p.header.payload_type == 19);
    // A's phone sent 15 SIDs (frames 50, 60, .., 190).
    assert_eq!(sids.len(), 15, "{} SIDs forwarded", sids.len());
    assert!(sids.iter().all(|p| p.payload() == [70] && !p.header.marker));
    // A SID period apart on B's timeline; the first one waited for the audio still in
    // the jitter buffer (its delay, two frames here), the others met a gap.
    let gaps: Vec<u32> = sids
        .windows(2)
        .map(|w| w[1].header.timestamp.wrapping_sub(w[0].header.timestamp))
        .collect();
    assert!(
        gaps[1..].iter().all(|&g| g == 1600) && (1120..=1600).contains(&gaps[0]),
        "{gaps:?}"
    );
    assert_eq!(e.session_stats(out[0].session).unwrap().tx_cn_packets, 15);
    assert!(audio.len() >= 95, "{} relayed", audio.len());
    assert!(
        audio
            .iter()
            .all(|p| p.header.payload_type == 9 && sent.iter().any(|s| s[..] == p.payload()[..])),
        "B sent audio of its own encoder's"
    );
    assert!(out
        .windows(2)
        .all(|w| w[1].header.sequence == w[0].header.sequence.wrapping_add(1)));
    // The first packet after the last SID is the tone's return, marked.
    let after = out
        .iter()
        .position(|p| p.header.payload_type == 9 && p.header.timestamp > sids[14].header.timestamp)
        .unwrap();
    assert!(out[after].header.marker);
    let rms = g722_decoded_rms(audio);
    let steady = rms[30];
    assert!(rms.iter().all(|&r| r < steady * 1.12));
}

/// A G.722 relay whose source starts in RFC 3389 silence (SIDs every 200 ms for 1 s, then
/// the tone): B had relayed nothing yet, and still forwards every SID (before, none: the
/// forwarding waited for B to have relayed audio), sends nothing of its own encoder's, and
/// marks the tone's first packet.
#[test]
fn a_relay_that_starts_in_comfort_noise_forwards_the_sids() {
    let mut pb = MediaSessionParams::new(CodecSpec::G722, Ptime::MS_20);
    pb.comfort_noise_send_pt = media_core::PayloadType::new(19);
    let (_e, out, sent, _) = g722_relay_across_silence(pb, 100, 0..50, Some(10), &[], &[]);
    let sids: Vec<_> = out.iter().filter(|p| p.header.payload_type == 19).collect();
    assert_eq!(sids.len(), 5, "{} SIDs forwarded", sids.len());
    assert!(out
        .iter()
        .all(|p| p.header.payload_type == 19 || sent.iter().any(|s| s[..] == p.payload()[..])));
    let first_audio = out.iter().find(|p| p.header.payload_type == 9).unwrap();
    assert!(first_audio.header.marker);
    assert!(out.iter().filter(|p| p.header.payload_type == 9).count() >= 45);
}

/// Keepalives through the source's comfort noise in an undecoded G.722 relay. Where B
/// forwards the source's SIDs (one a second here, as senders that send only on a level
/// change do), a keepalive repeats the last one (before, it sent a SID at -127 dBov, and
/// the far end's comfort noise fell silent until the source's next SID), unmarked, on B's
/// timeline. Where B does not (no comfort noise negotiated), the frames of comfort noise
/// that B holds back count as silence for keepalives, as gaps do (before, keepalives
/// stopped once the jitter buffer played comfort noise: 2 s into the silence).
#[test]
fn keepalives_through_a_relayed_comfort_noise_repeat_the_forwarded_sid_or_keep_coming() {
    for cn in [true, false] {
        let mut pb = MediaSessionParams::new(CodecSpec::G722, Ptime::MS_20);
        pb.keepalive_ms = 300;
        if cn {
            pb.comfort_noise_send_pt = media_core::PayloadType::new(19);
        }
        let (e, out, _, _) = g722_relay_across_silence(pb, 250, 50..200, Some(50), &[], &[]);
        let keepalives = e.lane_stats(0).unwrap().keepalives_sent;
        // B's packets from the last audio before the silence to the first after it.
        let first = out
            .iter()
            .rposition(|p| p.header.timestamp < out[0].header.timestamp.wrapping_add(50 * 160))
            .unwrap();
        let last = out
            .iter()
            .position(|p| {
                p.header.marker
                    && p.header.payload_type == 9
                    && p.header.timestamp > out[first].header.timestamp
            })
            .unwrap();
        let quiet = &out[first..=last];
        // Nothing went 300 ms (15 frames) without a packet.
        let longest = quiet
            .windows(2)
            .map(|w| w[1].header.timestamp.wrapping_sub(w[0].header.timestamp) / 160)
            .max()
            .unwrap();
        assert!(longest <= 15, "cn {cn}: {longest} frames without a packet");
        if cn {
            let sids: Vec<_> = quiet[1..quiet.len() - 1].iter().collect();
            assert!(
                sids.iter().all(|p| p.header.payload_type == 19
                    && p.payload() == [70]
                    && !p.header.marker),
                "cn {cn}: {:?}",
                sids.iter()
                    .map(|p| (p.header.payload_type, p.payload().to_vec()))
                    .collect::<Vec<_>>()
            );
            // Three SIDs forwarded (frames 50, 100, 150), the rest keepalives.
            assert!(
                keepalives >= 6 && sids.len() as u64 == 3 + keepalives,
                "{} SIDs, {keepalives} keepalives",
                sids.len()
            );
        } else {
            assert!(keepalives >= 8, "cn {cn}: {keepalives} keepalives");
        }
    }
}

/// A G.722 relay (A with comfort noise, B sending it on PT 19) whose source sends a tone
/// for 1 s (50 frames) and then, in frame period `k` of each entry of `sids`, a SID
/// `(k, sequence, timestamp, level)`; B's packets, in order, over 120 periods.
fn g722_relay_with_sids(sids: &[(usize, u16, u32, u8)]) -> Vec<common::Out> {
    use media_core::codec::audio::g722::{G722Encoder, G722Mode};
    let e = virtual_engine(4);
    let mut pa = MediaSessionParams::new(CodecSpec::G722, Ptime::MS_20);
    pa.comfort_noise_pt = media_core::PayloadType::new(13);
    let mut pb = MediaSessionParams::new(CodecSpec::G722, Ptime::MS_20);
    pb.comfort_noise_send_pt = media_core::PayloadType::new(19);
    let (a, b) = e.create_call((DialogId(1), pa), (DialogId(2), pb)).unwrap();
    let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
    let mut enc = G722Encoder::new(G722Mode::Rate64k);
    let (mut pkt, mut out) = (Vec::new(), Vec::new());
    for k in 0..120usize {
        if k < 50 {
            let pcm: Vec<i16> = (0..320)
                .map(|i| ((((k * 320 + i) as f64) * 0.39).sin() * 6000.0) as i16)
                .collect();
            let mut payload = vec![0u8; 160];
            enc.encode(&pcm, &mut payload);
            rtp(9, k as u16, 160 * k as u32, 3, k == 0, &payload, &mut pkt);
            ing.push(a.id, &pkt).unwrap();
        }
        for &(_, seq, ts, level) in sids.iter().filter(|s| s.0 == k) {
            rtp(13, seq, ts, 3, false, &[level], &mut pkt);
            ing.push(a.id, &pkt).unwrap();
        }
        e.step(2).unwrap();
        out.extend(drain(&mut eg).into_iter().filter(|p| p.session == b.id));
    }
    out
}

/// An undecoded G.722 relay whose source's two SIDs of one silence arrive reordered: the
/// newer (level 70, sent at 1.2 s) first, the older (level 40, sent at 1 s) 200 ms after
/// it. B forwards the newer only: the older one after it would set the far end's comfort
/// noise back to a level the source had left.
#[test]
fn an_older_sid_arriving_after_a_newer_one_is_not_forwarded() {
    let out = g722_relay_with_sids(&[(60, 51, 160 * 60, 70), (70, 50, 160 * 50, 40)]);
    let sids: Vec<_> = out
        .iter()
        .filter(|p| p.header.payload_type == 19)
        .map(|p| p.payload().to_vec())
        .collect();
    assert_eq!(sids, [vec![70u8]]);
}

/// Two SIDs of one silence reordered while the talkspurt's last packets are still in the
/// jitter buffer: the newer (level 70) arrives first, the older (level 40) right after it,
/// both before B can forward either (B forwards a SID at the first frame period without
/// audio). The pending newer one stays; the older one does not replace it (without the
/// rule B forwarded `[40]`, a level the source had left).
#[test]
fn an_older_sid_does_not_replace_a_newer_one_waiting_to_be_forwarded() {
    let out = g722_relay_with_sids(&[(49, 51, 160 * 51, 70), (49, 50, 160 * 50, 40)]);
    let first_sid = out.iter().position(|p| p.header.payload_type == 19);
    let sids: Vec<_> = out
        .iter()
        .filter(|p| p.header.payload_type == 19)
        .map(|p| p.payload().to_vec())
        .collect();
    assert_eq!(sids, [vec![70u8]]);
    // The SID went out after the talkspurt's last packet, not before it.
    let audio_after_sids = first_sid.map_or(0, |i| {
        out[i..]
            .iter()
            .filter(|p| p.header.payload_type != 19)
            .count()
    });
    assert_eq!(audio_after_sids, 0);
}

/// A PCMU relay (A's packets relayed, concealment from their codes) whose source goes
/// silent for 2 s with a SID every 500 ms. B with comfort noise negotiated forwards the SIDs
/// and sends nothing else through the silence (before: 100 frames of PCMU comfort noise of
/// its own, 64 kbit/s of it); B without keeps sending comfort noise, encoded. Either way
/// the talk on both sides of the silence is relayed as sent.
#[test]
fn a_g711_relay_forwards_the_sources_sids_or_encodes_its_comfort_noise() {
    for cn in [true, false] {
        let e = virtual_engine(4);
        let mut pa = MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_20);
        pa.comfort_noise_pt = media_core::PayloadType::new(13);
        let mut pb = MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_20);
        if cn {
            pb.comfort_noise_send_pt = media_core::PayloadType::new(19);
        }
        let (a, b) = e.create_call((DialogId(1), pa), (DialogId(2), pb)).unwrap();
        let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
        let mut pkt = Vec::new();
        let (mut audio, mut sids, mut talk) = (0, Vec::new(), Vec::new());
        for k in 0..200usize {
            let silent = (50..150).contains(&k);
            if !silent {
                let pcm: Vec<i16> = (0..160)
                    .map(|i| ((((k * 160 + i) as f64) * 0.39).sin() * 6000.0) as i16)
                    .collect();
                let mut payload = vec![0u8; 160];
                media_core::codec::audio::g711::ulaw_encode(&pcm, &mut payload);
                rtp(0, k as u16, 160 * k as u32, 3, k == 150, &payload, &mut pkt);
                ing.push(a.id, &pkt).unwrap();
                talk.push(payload);
            } else if k % 25 == 0 {
                rtp(13, k as u16, 160 * k as u32, 3, false, &[70], &mut pkt);
                ing.push(a.id, &pkt).unwrap();
            }
            e.step(2).unwrap();
            for p in drain(&mut eg).into_iter().filter(|p| p.session == b.id) {
                match p.header.payload_type {
                    0 => {
                        audio += 1;
                    }
                    _ => sids.push(p.payload().to_vec()),
                }
            }
        }
        let st = e.session_stats(a.id).unwrap();
        if cn {
            // The four SIDs, and the talk (100 frames, less the buffer's start, plus the
            // concealment before the first SID's frame).
            assert_eq!(sids, vec![vec![70u8]; 4], "cn");
            assert!((95..=106).contains(&audio), "cn: {audio} PCMU packets");
        } else {
            assert!(sids.is_empty());
            assert!(audio >= 195, "no cn: {audio} PCMU packets");
        }
        assert!(st.frames_relayed >= 95, "{st:?}");
    }
}

/// B, repeating the SID it forwarded in keepalives, is parked while A is silent: its
/// keepalives are SIDs of silence again (in review they repeated A's background for as
/// long as B stayed parked).
#[test]
fn a_parked_leg_stops_repeating_its_former_sources_sid() {
    let mut pb = MediaSessionParams::new(CodecSpec::G722, Ptime::MS_20);
    pb.keepalive_ms = 300;
    pb.comfort_noise_send_pt = media_core::PayloadType::new(19);
    let (e, out, _, mut eg) = g722_relay_across_silence(pb, 120, 50..200, Some(50), &[], &[]);
    let b = out[0].session;
    // In A's silence: B's last packets are the SID and a keepalive repeating it.
    let last: Vec<_> = out[out.len() - 2..]
        .iter()
        .map(|p| (p.header.payload_type, p.payload().to_vec()))
        .collect();
    assert_eq!(last, [(19, vec![70]), (19, vec![70])]);
    let a = e.session_ids().into_iter().find(|&id| id != b).unwrap();
    e.unbridge(a).unwrap();
    e.step(200).unwrap();
    let parked: Vec<_> = drain(&mut eg)
        .into_iter()
        .filter(|p| p.session == b)
        .map(|p| (p.header.payload_type, p.payload().to_vec()))
        .collect();
    assert!(
        parked.len() >= 2 && parked.iter().all(|p| *p == (19, vec![127])),
        "parked: {parked:?}"
    );
}

/// A G.722 relay whose source switches to 40 ms packets mid-call (a session at 20 ms):
/// the packets no longer match the frame, so the jitter buffer decodes them and the
/// destination's encoder makes the stream from there. It goes on sending every frame
/// period (in review, holding back PCM from an undecoded stream silenced the destination
/// for the rest of the call in this case).
#[test]
fn a_relayed_g722_stream_that_changes_packet_size_keeps_flowing() {
    use media_core::codec::audio::g722::{G722Encoder, G722Mode};
    let e = virtual_engine(4);
    let (a, b) = e
        .create_call(
            (
                DialogId(1),
                MediaSessionParams::new(CodecSpec::G722, Ptime::MS_20),
            ),
            (
                DialogId(2),
                MediaSessionParams::new(CodecSpec::G722, Ptime::MS_20),
            ),
        )
        .unwrap();
    let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
    let mut enc = G722Encoder::new(G722Mode::Rate64k);
    let (mut pkt, mut late) = (Vec::new(), 0);
    let (mut seq, mut ts) = (0u16, 0u32);
    for k in 0..150usize {
        // 1 s of 20 ms packets, then 40 ms packets (one every other period).
        let ms = if k < 50 { 20 } else { 40 };
        if k < 50 || k % 2 == 0 {
            let n = 16 * ms;
            let pcm: Vec<i16> = (0..n)
                .map(|i| ((((k * 320 + i) as f64) * 0.39).sin() * 6000.0) as i16)
                .collect();
            let mut payload = vec![0u8; n / 2];
            enc.encode(&pcm, &mut payload);
            rtp(9, seq, ts, 3, k == 0, &payload, &mut pkt);
            ing.push(a.id, &pkt).unwrap();
            seq = seq.wrapping_add(1);
            ts = ts.wrapping_add(8 * ms as u32);
        }
        e.step(2).unwrap();
        let sent = drain(&mut eg)
            .into_iter()
            .filter(|p| p.session == b.id && !p.payload().is_empty())
            .count();
        if k >= 70 {
            late += sent;
        }
    }
    // 80 frame periods after the switch has settled: audio in (nearly) all of them.
    assert!(late >= 76, "B sent {late} packets in 80 periods");
}

/// The same with comfort noise both ways and the source in 40 ms packets throughout (B's
/// encoder makes the stream: the packets do not match B's 20 ms frames), silent with a SID
/// between two 1 s talkspurts: B sends every 20 ms period of both talkspurts as audio. In
/// review, forwarding the SID here (as if B relayed) dropped the talkspurt's last 20 ms,
/// which the SID was attached to, and held back the next one's first 40 ms.
#[test]
fn a_source_whose_packets_do_not_match_the_frame_keeps_its_talkspurts_whole_around_a_sid() {
    use media_core::codec::audio::g722::{G722Encoder, G722Mode};
    let e = virtual_engine(4);
    let leg = || {
        let mut p = MediaSessionParams::new(CodecSpec::G722, Ptime::MS_20);
        p.comfort_noise_pt = media_core::PayloadType::new(13);
        p.comfort_noise_send_pt = media_core::PayloadType::new(13);
        p
    };
    let (a, b) = e
        .create_call((DialogId(1), leg()), (DialogId(2), leg()))
        .unwrap();
    let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
    let mut enc = G722Encoder::new(G722Mode::Rate64k);
    let mut pkt = Vec::new();
    let mut seq = 0u16;
    let (mut audio, mut sids) = (Vec::new(), 0);
    for k in 0..170usize {
        let ts = 160 * k as u32;
        let talk = !(50..100).contains(&k);
        if talk && k % 2 == 0 {
            let pcm: Vec<i16> = (0..640)
                .map(|i| ((((k * 320 + i) as f64) * 0.39).sin() * 6000.0) as i16)
                .collect();
            let mut payload = vec![0u8; 320];
            enc.encode(&pcm, &mut payload);
            rtp(9, seq, ts, 3, k == 0 || k == 100, &payload, &mut pkt);
            ing.push(a.id, &pkt).unwrap();
            seq = seq.wrapping_add(1);
        } else if k == 50 {
            rtp(13, seq, ts, 3, false, &[60], &mut pkt);
            ing.push(a.id, &pkt).unwrap();
            seq = seq.wrapping_add(1);
        }
        e.step(2).unwrap();
        for p in drain(&mut eg).into_iter().filter(|p| p.session == b.id) {
            match p.header.payload_type {
                9 => audio.push(p.header.timestamp),
                _ => sids += 1,
            }
        }
    }
    // Each talkspurt's periods, from B's first audio packet of it to its last, all sent.
    let first = audio[0];
    let periods: Vec<u32> = audio.iter().map(|t| t.wrapping_sub(first) / 160).collect();
    let gap = periods.windows(2).position(|w| w[1] - w[0] > 1).unwrap();
    let (one, two) = periods.split_at(gap + 1);
    assert!(one.windows(2).all(|w| w[1] == w[0] + 1) && two.windows(2).all(|w| w[1] == w[0] + 1));
    assert!(
        one.len() >= 49 && two.len() >= 69,
        "talkspurts of {} and {} periods",
        one.len(),
        two.len()
    );
    // The silence between them: no longer than A's (B conceals the first periods of it).
    let silence = two[0] - one[one.len() - 1] - 1;
    assert!(
        (44..=50).contains(&silence),
        "{silence} periods of silence; {sids} SIDs"
    );
}

#[test]
fn rfc4733_digits_arriving_on_one_leg_leave_the_other_as_rfc4733() {
    use media_core::codec::audio::telephone_event::{digit_to_event, DtmfSender, EventPayload};
    let e = virtual_engine(8);
    let pa = pcmu_with_telephone_event();
    let mut pb = MediaSessionParams::new(CodecSpec::PCMA, Ptime::MS_20);
    // B's peer numbered telephone-event 96.
    pb.telephone_event_send_pt = media_core::PayloadType::new(96);
    let (a, b) = e.create_call((DialogId(1), pa), (DialogId(2), pb)).unwrap();
    let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
    let mut tx = DtmfSender::new(160).unwrap();
    let mut pkt = Vec::new();
    let mut buf = [0u8; 4];
    let mut out = Vec::new();
    let mut seq = 0u16;
    for k in 0..60u32 {
        let ts = 160 * k;
        if k == 15 {
            tx.start(digit_to_event('9').unwrap(), 10, Some(1600))
                .unwrap(); // 200 ms
        }
        match tx.poll(ts, &mut buf) {
            // The phone mutes its audio while the key is down (common), sending events only.
            Some(h) => rtp(101, seq, h.timestamp, 3, h.marker, &buf, &mut pkt),
            None => rtp(0, seq, ts, 3, k == 0, &ulaw_frame(k as usize), &mut pkt),
        }
        seq = seq.wrapping_add(1);
        ing.push(a.id, &pkt).unwrap();
        e.step(2).unwrap();
        out.extend(drain(&mut eg).into_iter().filter(|p| p.session == b.id));
    }
    let events: Vec<_> = out
        .iter()
        .filter(|p| p.header.payload_type == 96)
        .map(|p| (p.header, EventPayload::parse(p.payload()).unwrap()))
        .collect();
    assert!(events.len() >= 8, "{} event packets on B", events.len());
    assert!(events[0].0.marker);
    assert!(events.iter().all(|(_, p)| p.event == 9));
    let ends = events.iter().filter(|(_, p)| p.end).count();
    assert_eq!(ends, 3, "end packet three times");
    // B's packets stay one sequence space (audio, events, audio).
    for w in out.windows(2) {
        assert_eq!(w[1].header.sequence, w[0].header.sequence.wrapping_add(1));
    }
    assert!(out.last().is_some_and(|p| p.header.payload_type == 8));
}

/// Digits sent by `tx` on A's stream (events only while a key is down, silence
/// otherwise), minus the event packets `lost` refuses, bridged to B (PCMA, with
/// telephone-event 96 when `b_events`): what B sent, over `rounds` 20 ms rounds. `script`
/// starts digits at given rounds.
fn forward_digits(
    b_events: bool,
    rounds: u32,
    script: &[(u32, char, u32)],
    lost: impl Fn(&media_core::codec::audio::telephone_event::EventPayload) -> bool,
) -> Vec<Out> {
    use media_core::codec::audio::telephone_event::{digit_to_event, DtmfSender, EventPayload};
    let e = virtual_engine(8);
    let pa = pcmu_with_telephone_event();
    let mut pb = MediaSessionParams::new(CodecSpec::PCMA, Ptime::MS_20);
    if b_events {
        pb.telephone_event_send_pt = media_core::PayloadType::new(96);
    }
    let (a, b) = e.create_call((DialogId(1), pa), (DialogId(2), pb)).unwrap();
    let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
    let mut tx = DtmfSender::new(160).unwrap();
    let (mut pkt, mut buf, mut out, mut seq) = (Vec::new(), [0u8; 4], Vec::new(), 0u16);
    for k in 0..rounds {
        let ts = 160 * k;
        for &(at, d, duration_ts) in script {
            if at == k {
                tx.start(digit_to_event(d).unwrap(), 10, Some(duration_ts))
                    .unwrap();
            }
        }
        let send = match tx.poll(ts, &mut buf) {
            Some(h) => {
                rtp(101, seq, h.timestamp, 3, h.marker, &buf, &mut pkt);
                !lost(&EventPayload::parse(&buf).unwrap())
            }
            None => {
                rtp(0, seq, ts, 3, k == 0, &[0xFFu8; 160], &mut pkt);
                true
            }
        };
        seq = seq.wrapping_add(1);
        if send {
            ing.push(a.id, &pkt).unwrap();
        }
        e.step(2).unwrap();
        out.extend(drain(&mut eg).into_iter().filter(|p| p.session == b.id));
    }
    out
}

/// B's RFC 4733 events, in order: (marker, event, end, duration).
fn events_sent(out: &[Out]) -> Vec<(bool, u8, bool, u16)> {
    use media_core::codec::audio::telephone_event::EventPayload;
    out.iter()
        .filter(|p| p.header.payload_type == 96)
        .map(|p| {
            let e = EventPayload::parse(p.payload()).unwrap();
            (p.header.marker, e.event, e.end, e.duration)
        })
        .collect()
}

/// RFC 4733 events follow one source at a time. A source that starts an event (marker)
/// takes them over: a gateway that sends DTMF under an SSRC of its own, or a new source
/// after a transfer, whose first digit is heard even where its timestamps lie just behind
/// the old digit's; the digit in progress of the source it replaces ends at once. Another
/// source's packets that start nothing (a stray retransmission, forked early media) are
/// dropped, counted. And when a new audio source takes over, the old one's digit ends.
#[test]
fn rfc4733_events_follow_one_source_at_a_time() {
    use media_core::codec::audio::telephone_event::{digit_to_event, DtmfSender};
    let e = virtual_engine(4);
    let (a, _b) = e
        .create_call(
            (DialogId(1), pcmu_with_telephone_event()),
            (
                DialogId(2),
                MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_20),
            ),
        )
        .unwrap();
    let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
    let (mut old, mut separate, mut new) = (
        DtmfSender::new(160).unwrap(),
        DtmfSender::new(160).unwrap(),
        DtmfSender::new(160).unwrap(),
    );
    let (mut pkt, mut buf) = (Vec::new(), [0u8; 4]);
    let mut digits = Vec::new();
    for k in 0..70u32 {
        // Audio source 3 until round 30, then source 4 (its clock 1600 units behind 3's).
        // Source 9 sends only events: a '1' from round 5. Source 3 presses '5' at round
        // 20 and holds it; source 4 presses '7' at round 40.
        let (ssrc, seq, ts, tx) = if k < 30 {
            (3, k as u16, 160 * k, &mut old)
        } else {
            (4, 9000 + k as u16, 160 * (k - 30) + 1600, &mut new)
        };
        match k {
            20 => tx.start(digit_to_event('5').unwrap(), 10, None).unwrap(),
            40 => tx
                .start(digit_to_event('7').unwrap(), 10, Some(960))
                .unwrap(),
            _ => {}
        }
        match tx.poll(ts, &mut buf) {
            Some(h) => rtp(101, seq, h.timestamp, ssrc, h.marker, &buf, &mut pkt),
            None => rtp(0, seq, ts, ssrc, k == 30, &ulaw_frame(k as usize), &mut pkt),
        }
        ing.push(a.id, &pkt).unwrap();
        if (5..15).contains(&k) {
            if k == 5 {
                separate
                    .start(digit_to_event('1').unwrap(), 10, Some(800))
                    .unwrap();
            }
            if let Some(h) = separate.poll(50_000 + 160 * k, &mut buf) {
                rtp(
                    101,
                    700 + k as u16,
                    h.timestamp,
                    9,
                    h.marker,
                    &buf,
                    &mut pkt,
                );
                ing.push(a.id, &pkt).unwrap();
            }
        }
        if k == 25 {
            // A stray copy of source 9's last packet, while source 3's '5' is held.
            ing.push(a.id, &pkt_from_9_end()).unwrap();
        }
        e.step(2).unwrap();
        drain(&mut eg);
        poll_digits(&e, k, &mut digits);
    }
    let seen: Vec<(char, bool)> = digits.iter().map(|&(_, d, end)| (d, end)).collect();
    assert_eq!(
        seen,
        [
            ('1', false),
            ('1', true),
            ('5', false),
            ('5', true),
            ('7', false),
            ('7', true)
        ],
        "{digits:?}"
    );
    // The held '5' ended when source 4's audio took over, not 200 ms later.
    assert_eq!(digits[3].0, 30, "{digits:?}");
    assert_eq!(
        e.lane_stats(0).unwrap().foreign_ssrc_drops,
        1,
        "the stray copy"
    );
}

/// A digit is reported once however its source and the session change under it: a new
/// source that presses a key before its audio takes over keeps that digit (in review its
/// audio's takeover ended it and the next update began it again), and a re-INVITE during
/// a digit (PCMU to PCMA, events unchanged) keeps it too (in review the receiver was
/// rebuilt: the digit never ended and began a second time).
#[test]
fn a_digit_is_reported_once_across_its_own_audio_taking_over_and_a_reinvite() {
    use media_core::codec::audio::telephone_event::{digit_to_event, DtmfSender};
    for reinvite in [false, true] {
        let e = virtual_engine(4);
        let mut pb = MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_20);
        pb.telephone_event_send_pt = media_core::PayloadType::new(96);
        let (a, b) = e
            .create_call(
                (DialogId(1), pcmu_with_telephone_event()),
                (DialogId(2), pb),
            )
            .unwrap();
        let mut ends_on_b = Vec::new();
        let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
        let mut tx = DtmfSender::new(160).unwrap();
        let (mut pkt, mut buf) = (Vec::new(), [0u8; 4]);
        let mut digits = Vec::new();
        for k in 0..40u32 {
            // Source 3's audio until round 10; then source 4, which starts a '7' (400 ms)
            // with its events at round 10 and its audio (marked) at round 13, audio and
            // events both from then on. With `reinvite`, the session goes to PCMA (events
            // as before) at round 15.
            let ssrc = if k < 10 { 3 } else { 4 };
            if k == 10 {
                tx.start(digit_to_event('7').unwrap(), 10, Some(3200))
                    .unwrap();
            }
            if reinvite && k == 15 {
                let mut p = MediaSessionParams::new(CodecSpec::PCMA, Ptime::MS_20);
                p.telephone_event_pt = media_core::PayloadType::new(101);
                p.rx.push(CodecSpec::PCMU);
                e.update_media_session(a.id, p).unwrap();
            }
            let ts = 160 * k;
            if let Some(h) = tx.poll(ts, &mut buf) {
                rtp(
                    101,
                    (2 * k) as u16,
                    h.timestamp,
                    ssrc,
                    h.marker,
                    &buf,
                    &mut pkt,
                );
                ing.push(a.id, &pkt).unwrap();
            }
            if !(10..13).contains(&k) {
                rtp(
                    0,
                    (2 * k + 1) as u16,
                    ts,
                    ssrc,
                    k == 13,
                    &ulaw_frame(k as usize),
                    &mut pkt,
                );
                ing.push(a.id, &pkt).unwrap();
            }
            e.step(2).unwrap();
            for p in drain(&mut eg) {
                if p.session == b.id && p.header.payload_type == 96 {
                    let ev =
                        media_core::codec::audio::telephone_event::EventPayload::parse(p.payload())
                            .unwrap();
                    if ev.end {
                        ends_on_b.push(ev.duration);
                    }
                }
            }
            while let Some(ev) = e.poll_event() {
                if let EngineEvent::Dtmf {
                    digit, ended_ms, ..
                } = ev
                {
                    digits.push((digit, ended_ms.is_some()));
                }
            }
        }
        assert_eq!(digits, [('7', false), ('7', true)], "re-INVITE: {reinvite}");
        // B's peer gets the digit whole too: its three end packets, 400 ms long (in
        // review, the re-INVITE ended B's copy after 40 ms).
        assert_eq!(ends_on_b.len(), 3, "re-INVITE: {reinvite}: {ends_on_b:?}");
        assert!(
            ends_on_b.iter().all(|&d| d >= 3200),
            "re-INVITE: {reinvite}: {ends_on_b:?}"
        );
    }
}

/// Source 9's final '1' packet (event 1, end, 800 units), as `rfc4733_events_follow_one_
/// source_at_a_time` sends it.
/// A source that sends only RFC 4733 events (a gateway sending DTMF under an SSRC of its
/// own) takes the events over even when its marker packet was lost: at its second update
/// in a row. Before, only the marker packet could, so the whole digit was dropped. A stray
/// end packet of yet another source, even three copies back to back, starts nothing.
#[test]
fn an_events_only_source_whose_marker_packet_was_lost_is_heard() {
    use media_core::codec::audio::telephone_event::{digit_to_event, DtmfSender};
    let e = virtual_engine(4);
    let (a, _b) = e
        .create_call(
            (DialogId(1), pcmu_with_telephone_event()),
            (
                DialogId(2),
                MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_20),
            ),
        )
        .unwrap();
    let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
    let (mut audio, mut separate) = (DtmfSender::new(160).unwrap(), DtmfSender::new(160).unwrap());
    let (mut pkt, mut buf) = (Vec::new(), [0u8; 4]);
    let mut digits = Vec::new();
    for k in 0..60u32 {
        // Source 3 (audio) presses '5' at round 2; source 9 (events only) '1' at round 20,
        // its first packet lost; source 8's end packet thrice at round 40.
        if k == 2 {
            audio
                .start(digit_to_event('5').unwrap(), 10, Some(800))
                .unwrap();
        }
        match audio.poll(160 * k, &mut buf) {
            Some(h) => rtp(101, k as u16, h.timestamp, 3, h.marker, &buf, &mut pkt),
            None => rtp(
                0,
                k as u16,
                160 * k,
                3,
                k == 0,
                &ulaw_frame(k as usize),
                &mut pkt,
            ),
        }
        ing.push(a.id, &pkt).unwrap();
        if k == 20 {
            separate
                .start(digit_to_event('1').unwrap(), 10, Some(800))
                .unwrap();
        }
        if let Some(h) = separate.poll(70_000 + 160 * k, &mut buf) {
            if !h.marker {
                rtp(101, 500 + k as u16, h.timestamp, 9, false, &buf, &mut pkt);
                ing.push(a.id, &pkt).unwrap();
            }
        }
        if k == 40 {
            for _ in 0..3 {
                rtp(
                    101,
                    900,
                    90_000,
                    8,
                    false,
                    &[4, 0x80 | 10, 0x03, 0x20],
                    &mut pkt,
                );
                ing.push(a.id, &pkt).unwrap();
            }
        }
        e.step(2).unwrap();
        drain(&mut eg);
        poll_digits(&e, k, &mut digits);
    }
    let seen: Vec<(char, bool)> = digits.iter().map(|&(_, d, end)| (d, end)).collect();
    assert_eq!(
        seen,
        [('5', false), ('5', true), ('1', false), ('1', true)],
        "{digits:?}"
    );
    // '1' began with source 9's second packet (its first update).
    assert_eq!(digits[2].0, 22, "{digits:?}");
    assert_eq!(
        e.lane_stats(0).unwrap().foreign_ssrc_drops,
        4,
        "source 9's first update and source 8's three end packets"
    );
}

/// Both peers of a call flood RFC 4733 packets, each packing 320 digit events that begin
/// and end (1,280 bytes), in one tick: each packet yields at most a few reports, and the
/// reports use only the ring headroom beyond what packets and commands have reserved, so
/// another call's audio queued behind the flood all reaches its jitter buffer. Before,
/// the ~77,000 reports filled the ring to the decode stage: the audio behind them was
/// dropped, and a command arriving then was lost.
#[test]
fn a_flood_of_packed_rfc4733_events_costs_no_other_packet() {
    let e = virtual_engine(4);
    let (a, b) = e
        .create_call(
            (DialogId(1), pcmu_with_telephone_event()),
            (DialogId(2), pcmu_with_telephone_event()),
        )
        .unwrap();
    let (c, d) = call(&e, 3, CodecSpec::PCMU, CodecSpec::PCMU);
    let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
    let mut flood = Vec::new();
    for i in 0..320u32 {
        flood.extend([(i % 16) as u8, 0x80 | 10, 0, 1]);
    }
    let mut pkt = Vec::new();
    for id in [a.id, b.id] {
        for k in 0..60u16 {
            rtp(101, k, 1_000 * u32::from(k), 3, true, &flood, &mut pkt);
            ing.push(id, &pkt).unwrap();
        }
    }
    for k in 0..20u16 {
        rtp(
            0,
            k,
            160 * u32::from(k),
            5,
            k == 0,
            &ulaw_frame(k as usize),
            &mut pkt,
        );
        ing.push(c, &pkt).unwrap();
    }
    e.step(1).unwrap();
    drain(&mut eg);
    let lane = e.lane_stats(0).unwrap();
    assert_eq!(lane.internal_ring_full, 0, "{lane:?}");
    assert!(
        lane.stage_backlog_drops > 0,
        "the flood was not cut: {lane:?}"
    );
    let mut digits = 0;
    while let Some(ev) = e.poll_event() {
        if matches!(ev, EngineEvent::Dtmf { .. }) {
            digits += 1;
        }
    }
    assert!(
        digits <= 2 * 60 * 16,
        "{digits} digit reports from 120 packets"
    );
    // C's audio, all of it buffered, plays out to D.
    for k in 20..40u16 {
        rtp(
            0,
            k,
            160 * u32::from(k),
            5,
            false,
            &ulaw_frame(k as usize),
            &mut pkt,
        );
        ing.push(c, &pkt).unwrap();
        e.step(2).unwrap();
    }
    let to_d = drain(&mut eg).iter().filter(|p| p.session == d).count();
    assert!(to_d >= 18, "D got {to_d} packets");
    let st = e.session_stats(c).unwrap();
    assert_eq!((st.rx_packets, st.rx_lost), (40, 0), "{st:?}");
}

/// An update that gives a send SSRC (`tx_ssrc`) sends with it from then on, its sequence
/// and timestamp going on; one that gives none keeps the SSRC the session sends with.
/// Before, an update built the send part with a random SSRC and the lane then kept the
/// old one, so a given SSRC was ignored (and the record said otherwise).
#[test]
fn an_update_that_gives_a_send_ssrc_sends_with_it() {
    let e = virtual_engine(2);
    let mut p = MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_20);
    p.tx_ssrc = Some(0xA);
    let (a, b) = e
        .create_call(
            (DialogId(1), p.clone()),
            (
                DialogId(2),
                MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_20),
            ),
        )
        .unwrap();
    let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
    let (mut pkt, mut k) = (Vec::new(), 0u16);
    // B's peer talks for 200 ms: what A sends meanwhile, (SSRC, sequence).
    let mut sent = |e: &MediaEngine| {
        let mut out = Vec::new();
        for _ in 0..10 {
            rtp(
                0,
                k,
                160 * u32::from(k),
                5,
                k == 0,
                &ulaw_frame(k as usize),
                &mut pkt,
            );
            ing.push(b.id, &pkt).unwrap();
            k += 1;
            e.step(2).unwrap();
            out.extend(
                drain(&mut eg)
                    .into_iter()
                    .filter(|o| o.session == a.id)
                    .map(|o| (o.header.ssrc, o.header.sequence)),
            );
        }
        assert!(out.len() >= 5, "{out:?}");
        out
    };
    let first = sent(&e);
    assert!(first.iter().all(|&(s, _)| s == 0xA), "{first:?}");
    let mut q = p.clone();
    q.tx = CodecSpec::PCMA;
    q.tx_ssrc = Some(0xB);
    e.update_media_session(a.id, q.clone()).unwrap();
    let second = sent(&e);
    assert!(second.iter().all(|&(s, _)| s == 0xB), "{second:?}");
    let last = first.last().unwrap().1;
    assert_eq!(second[0].1, last.wrapping_add(1), "the sequence goes on");
    q.tx = CodecSpec::PCMU;
    q.tx_ssrc = None;
    e.update_media_session(a.id, q).unwrap();
    let third = sent(&e);
    assert!(third.iter().all(|&(s, _)| s == 0xB), "{third:?}");
}

/// A transfer: source 3 holds '5' when source 4's audio takes over (marker), and goes on
/// sending its held digit's updates for a while. '5' ends at the takeover and is never
/// begun again: an old source's updates of a digit begun long ago do not take the events
/// back (in review, two of them in a row did, and '5' began a second time).
#[test]
fn an_old_source_still_holding_a_key_after_a_transfer_does_not_take_the_events_back() {
    use media_core::codec::audio::telephone_event::{digit_to_event, DtmfSender};
    let e = virtual_engine(4);
    let (a, _b) = e
        .create_call(
            (DialogId(1), pcmu_with_telephone_event()),
            (
                DialogId(2),
                MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_20),
            ),
        )
        .unwrap();
    let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
    let mut old = DtmfSender::new(160).unwrap();
    let (mut pkt, mut buf) = (Vec::new(), [0u8; 4]);
    let mut digits = Vec::new();
    for k in 0..60u32 {
        if k == 10 {
            old.start(digit_to_event('5').unwrap(), 10, None).unwrap();
        }
        // Source 3 until round 30 (its digit's updates on until round 45); source 4's
        // audio from round 30.
        if k < 45 {
            if let Some(h) = old.poll(160 * k, &mut buf) {
                rtp(101, k as u16, h.timestamp, 3, h.marker, &buf, &mut pkt);
                ing.push(a.id, &pkt).unwrap();
            } else if k < 30 {
                rtp(
                    0,
                    k as u16,
                    160 * k,
                    3,
                    k == 0,
                    &ulaw_frame(k as usize),
                    &mut pkt,
                );
                ing.push(a.id, &pkt).unwrap();
            }
        }
        if k >= 30 {
            rtp(
                0,
                5000 + k as u16,
                80_000 + 160 * k,
                4,
                k == 30,
                &ulaw_frame(k as usize),
                &mut pkt,
            );
            ing.push(a.id, &pkt).unwrap();
        }
        e.step(2).unwrap();
        drain(&mut eg);
        poll_digits(&e, k, &mut digits);
    }
    let seen: Vec<(char, bool)> = digits.iter().map(|&(_, d, end)| (d, end)).collect();
    assert_eq!(seen, [('5', false), ('5', true)], "{digits:?}");
    assert_eq!(digits[1].0, 30, "{digits:?}");
}

/// Appends the engine's pending digit events to `digits` as (round `k`, digit, whether
/// it is the digit's end); other events are dropped.
fn poll_digits(e: &MediaEngine, k: u32, digits: &mut Vec<(u32, char, bool)>) {
    while let Some(ev) = e.poll_event() {
        if let EngineEvent::Dtmf {
            digit, ended_ms, ..
        } = ev
        {
            digits.push((k, digit, ended_ms.is_some()));
        }
    }
}

fn pkt_from_9_end() -> Vec<u8> {
    let mut pkt = Vec::new();
    rtp(
        101,
        711,
        50_000 + 160 * 5,
        9,
        false,
        &[1, 0x80 | 10, 0x03, 0x20],
        &mut pkt,
    );
    pkt
}

/// A digit whose three end packets are all lost ends on A by the RFC 4733 timeout; its
/// end is forwarded like one that arrived, so B's peer gets the digit's three end packets
/// and the next digit whole. In review, B went on sending the first digit, refused the
/// second (counted) and ended the first only with the second's end.
#[test]
fn a_digit_whose_end_packets_are_lost_ends_on_the_bridged_leg_too() {
    // '9' for 200 ms, its end packets lost; '2' for 120 ms, 600 ms later.
    let out = forward_digits(true, 100, &[(15, '9', 1600), (45, '2', 960)], |p| {
        p.event == 9 && p.end
    });
    let events = events_sent(&out);
    let nine: Vec<_> = events.iter().filter(|e| e.1 == 9).collect();
    let two: Vec<_> = events.iter().filter(|e| e.1 == 2).collect();
    assert_eq!(nine.iter().filter(|e| e.2).count(), 3, "{events:?}");
    // It lasts on B until A's timeout ended it (200 ms after its last packet).
    assert!(
        nine.iter().all(|e| e.3 <= 1600 + 1600 + 2 * 160),
        "{events:?}"
    );
    assert!(two.first().is_some_and(|e| e.0), "{events:?}");
    assert_eq!(two.iter().filter(|e| e.2).count(), 3, "{events:?}");
    assert!(two.iter().any(|e| e.2 && e.3 >= 960), "{events:?}");
}

/// A digit seen only by its end packets (every other packet of it lost) is forwarded as
/// long as it was received (120 ms): as RFC 4733 events, and in-band toward a peer without
/// telephone-event, long enough for a Q.24 detector. In review, the begin and end
/// forwarded together made a 20 ms event and a 3 ms tone.
#[test]
fn a_digit_seen_only_by_its_end_packets_is_forwarded_as_long_as_it_was_received() {
    use media_core::processing::audio::dtmf_detector::{
        DtmfDetector, DtmfDetectorConfig, DtmfEvent,
    };
    let script = [(10, '2', 960), (30, 'D', 960)];
    let out = forward_digits(true, 60, &script, |p| !p.end);
    let events = events_sent(&out);
    for event in [2, 15] {
        let ends: Vec<_> = events.iter().filter(|e| e.1 == event && e.2).collect();
        assert_eq!(ends.len(), 3, "{events:?}");
        assert!(ends.iter().all(|e| e.3 >= 960), "{events:?}");
    }
    let out = forward_digits(false, 60, &script, |p| !p.end);
    let mut heard = Vec::new();
    for p in &out {
        assert_eq!(p.header.payload_type, 8, "audio only toward B");
        let mut f = [0i16; 160];
        g711::alaw_decode(p.payload(), &mut f);
        heard.extend_from_slice(&f);
    }
    let mut det = DtmfDetector::new(DtmfDetectorConfig::default()).unwrap();
    let mut found = String::new();
    det.process(&heard, |ev| {
        if let DtmfEvent::Began { digit, .. } = ev {
            found.push(digit.to_char());
        }
    });
    assert_eq!(found, "2D");
}

#[test]
fn rfc4733_digits_toward_a_leg_without_telephone_event_are_played_in_band() {
    use media_core::codec::audio::telephone_event::{digit_to_event, DtmfSender};
    use media_core::processing::audio::dtmf_detector::{DtmfDetector, DtmfDetectorConfig};
    let e = virtual_engine(8);
    let pa = pcmu_with_telephone_event();
    // B's peer negotiated no telephone-event.
    let pb = MediaSessionParams::new(CodecSpec::PCMA, Ptime::MS_20);
    let (a, b) = e.create_call((DialogId(1), pa), (DialogId(2), pb)).unwrap();
    let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
    let mut tx = DtmfSender::new(160).unwrap();
    let mut pkt = Vec::new();
    let mut buf = [0u8; 4];
    let mut heard = Vec::new();
    let mut seq = 0u16;
    let mut digits = "2D".chars();
    let mut gap = 0;
    for k in 0..80u32 {
        let ts = 160 * k;
        if k >= 10 && tx.is_idle() {
            if gap > 0 {
                gap -= 1;
            } else if let Some(d) = digits.next() {
                tx.start(digit_to_event(d).unwrap(), 10, Some(960)).unwrap(); // 120 ms
                gap = 5;
            }
        }
        // Events only while a key is down (audio muted), silence otherwise.
        match tx.poll(ts, &mut buf) {
            Some(h) => rtp(101, seq, h.timestamp, 3, h.marker, &buf, &mut pkt),
            None => rtp(0, seq, ts, 3, k == 0, &[0xFFu8; 160], &mut pkt),
        }
        seq = seq.wrapping_add(1);
        ing.push(a.id, &pkt).unwrap();
        e.step(2).unwrap();
        for p in drain(&mut eg).into_iter().filter(|p| p.session == b.id) {
            assert_eq!(p.header.payload_type, 8, "audio only toward B");
            let mut f = [0i16; 160];
            g711::alaw_decode(p.payload(), &mut f);
            heard.extend_from_slice(&f);
        }
    }
    // A Q.24 detector on what B's peer hears finds the digits.
    let mut det = DtmfDetector::new(DtmfDetectorConfig::default()).unwrap();
    let mut found = String::new();
    det.process(&heard, |ev| {
        if let media_core::processing::audio::dtmf_detector::DtmfEvent::Began { digit, .. } = ev {
            found.push(digit.to_char());
        }
    });
    assert_eq!(found, "2D");
}

/// A call whose leg A (PCMU or G.722, `codec`) gets 1 s of audio, then silence until
/// `rounds` 20 ms rounds have passed, with or without an RFC 3389 SID frame (level 60
/// dBov, RMS ~33; on the 8,000 Hz RTP clock both codecs signal, RFC 3551) at the start of
/// the silence; `endpoint`: A's receiver never stops producing (`max_conceal_ms` 0, comfort
/// noise through every gap), else the gateway default. B is PCMU. Returns what B's peer
/// heard, each frame with the round it came out in, and A's counters.
fn silence_after_audio(
    codec: CodecSpec,
    sid: bool,
    endpoint: bool,
    rounds: u32,
) -> (Vec<(u32, [i16; 160])>, media_core::quality::SessionStats) {
    use media_core::codec::audio::g722::{G722Encoder, G722Mode};
    let e = virtual_engine(8);
    let mut pa = MediaSessionParams::new(codec, Ptime::MS_20);
    pa.comfort_noise_pt = media_core::PayloadType::new(13);
    if endpoint {
        pa.jitter = Some(JitterConfig {
            max_conceal_ms: 0,
            ..fixed_jitter()
        });
    }
    let (a, b) = e
        .create_call(
            (DialogId(1), pa),
            (
                DialogId(2),
                MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_20),
            ),
        )
        .unwrap();
    let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
    let mut g722 = (codec == CodecSpec::G722).then(|| G722Encoder::new(G722Mode::Rate64k));
    let mut pkt = Vec::new();
    let mut heard = Vec::new();
    for k in 0..rounds {
        if k < 50 {
            let (pt, frame) = match g722.as_mut() {
                Some(enc) => {
                    let mut frame = vec![0u8; 160];
                    enc.encode(&signal(320 * k as usize, 320), &mut frame);
                    (9, frame)
                }
                None => (0, ulaw_frame(k as usize)),
            };
            rtp(pt, k as u16, 160 * k, 4, k == 0, &frame, &mut pkt);
            ing.push(a.id, &pkt).unwrap();
        } else if k == 50 && sid {
            rtp(13, k as u16, 160 * k, 4, false, &[60], &mut pkt);
            ing.push(a.id, &pkt).unwrap();
        }
        e.step(2).unwrap();
        for p in drain(&mut eg).into_iter().filter(|p| p.session == b.id) {
            let mut f = [0i16; 160];
            g711::ulaw_decode(p.payload(), &mut f);
            heard.push((k, f));
        }
    }
    (heard, e.session_stats(a.id).unwrap())
}

/// RMS of the frames' samples (0 for none).
fn frames_rms<'a>(frames: impl Iterator<Item = &'a [i16; 160]>) -> f64 {
    let (sum, n) = frames.flatten().fold((0.0, 0usize), |(sum, n), &x| {
        (sum + f64::from(x).powi(2), n + 1)
    });
    if n == 0 {
        0.0
    } else {
        (sum / n as f64).sqrt()
    }
}

/// RMS of what B's peer hears during a 1 s silence after 1 s of audio on A (an endpoint
/// receiver), with or without a SID at the start of the silence: over its last 0.5 s.
fn comfort_noise_rms(sid: bool) -> f64 {
    let (heard, a) = silence_after_audio(CodecSpec::PCMU, sid, true, 100);
    if sid {
        assert_eq!(a.rx_cn_packets, 1);
    }
    frames_rms(heard[heard.len() - 25..].iter().map(|(_, f)| f))
}

/// What B's peer hears of a 3 s silence after 1 s of audio on A (`codec`), through a
/// gateway with the default `max_conceal_ms`: frames heard in the silence and their RMS
/// (over its last 2 s, 0 if none), and A's counters; with or without a SID (level 60 dBov)
/// at its start. 3 s: longer than the jitter buffer's idle timeout (2 s), after which it
/// waits for a new talkspurt.
fn gateway_silence(codec: CodecSpec, sid: bool) -> (usize, f64, media_core::quality::SessionStats) {
    let (heard, a) = silence_after_audio(codec, sid, false, 200);
    // After the 60 ms buffer's last audio frame.
    let in_silence = heard.iter().filter(|(k, _)| *k >= 54).count();
    let rms = frames_rms(heard.iter().filter(|(k, _)| *k >= 100).map(|(_, f)| f));
    (in_silence, rms, a)
}

/// A SID at the start of A's silence (`codec`): B hears comfort noise at its level in every
/// frame period of the silence, and nothing counts as concealment of lost audio.
fn assert_signalled_silence_is_comfort_noise(codec: CodecSpec) {
    let (heard, rms, a) = gateway_silence(codec, true);
    assert_eq!(a.rx_cn_packets, 1, "{codec:?}");
    // Comfort noise the sender asked for is not concealment of lost audio.
    assert_eq!(a.frames_concealed, 0, "{codec:?}");
    // Every frame period of the silence (146 after the buffer's last audio frame).
    assert!(heard >= 145, "{codec:?}: {heard} frames of comfort noise");
    let signalled = 32768.0 * 10f64.powf(-60.0 / 20.0);
    let db = 20.0 * (rms / signalled).log10();
    assert!(
        db.abs() < 3.0,
        "{codec:?}: {rms:.1} RMS for {signalled:.1} ({db:.1} dB)"
    );
}

/// A gateway leg whose sender stops (hold, DTX without comfort noise) stops sending
/// after a short concealment, so the silence reaches the other side as silence. One whose
/// sender signalled the silence with a SID (RFC 3389 DTX) plays comfort noise at the SID's
/// level to the other leg through the whole silence: that leg never saw the SID, and
/// stopping gave its listener dead air (found with ffmpeg's RFC 3389 encoder,
/// `scripts/cn_interop.py`).
#[test]
fn a_gateway_plays_a_signalled_silence_as_comfort_noise_and_propagates_an_unsignalled_one() {
    let (heard, _, a) = gateway_silence(CodecSpec::PCMU, false);
    assert!(
        heard <= TRAILING,
        "{heard} frames sent into an unsignalled silence"
    );
    assert!(
        a.frames_concealed >= 4,
        "the unsignalled gap's first frames are concealment"
    );
    assert_signalled_silence_is_comfort_noise(CodecSpec::PCMU);
}

#[test]
fn an_rfc3389_sid_sets_the_level_of_the_comfort_noise_that_follows() {
    let signalled = 32768.0 * 10f64.powf(-60.0 / 20.0);
    let with = comfort_noise_rms(true);
    let without = comfort_noise_rms(false);
    let db = 20.0 * (with / signalled).log10();
    assert!(
        db.abs() < 3.0,
        "SID level: {with:.1} RMS for {signalled:.1} ({db:.1} dB)"
    );
    assert!(
        without > 2.0 * with,
        "without a SID the estimate differs ({without:.1})"
    );
}

/// The same through a G.722 leg: its RFC 3389 SID frames keep the 8,000 Hz RTP clock that
/// RFC 3551 gives G.722 while the leg decodes at 16 kHz, and the PCMU leg it is bridged to
/// hears comfort noise at the signalled level through the whole silence, with nothing
/// counted as concealment.
#[test]
fn a_g722_legs_signalled_silence_reaches_a_pcmu_leg_as_comfort_noise() {
    assert_signalled_silence_is_comfort_noise(CodecSpec::G722);
}

/// Lane-failure policy: a panicking lane (here a fault drill standing in for a codec bug)
/// stops loudly, alone. The control plane hears `LaneFailed` and a `SessionStopped` per
/// lost session; the other lane's calls keep flowing; new calls land on the healthy
/// lane; packets for the dead lane are refused or dropped without blocking; stop works.
fn a_panicking_lane_fails_alone(topology: Topology) {
    let e = realtime(topology);
    e.start().unwrap();
    let (mut ing0, mut eg0) = e.take_rtp_handles(0).unwrap();
    let (mut ing1, mut eg1) = e.take_rtp_handles(1).unwrap();
    let calls: Vec<(SessionId, SessionId)> = (0..4)
        .map(|i| call(&e, 100 + 2 * i, CodecSpec::PCMU, CodecSpec::PCMA))
        .collect();
    assert!(calls.iter().any(|(a, _)| a.lane() == 0));
    assert!(calls.iter().any(|(a, _)| a.lane() == 1));
    let mut pkt = Vec::new();
    let mut push_all =
        |k: usize, ing0: &mut media_core::IngressHandle, ing1: &mut media_core::IngressHandle| {
            for &(a, _) in &calls {
                rtp(
                    0,
                    k as u16,
                    160 * k as u32,
                    a.slot(),
                    false,
                    &ulaw_frame(k),
                    &mut pkt,
                );
                let ing = if a.lane() == 0 {
                    &mut *ing0
                } else {
                    &mut *ing1
                };
                // A dead lane's ring fills up: a typed refusal, never a block.
                let _ = ing.push(a, &pkt);
            }
        };
    for k in 0..10 {
        push_all(k, &mut ing0, &mut ing1);
        std::thread::sleep(Duration::from_millis(20));
        drain(&mut eg0);
        drain(&mut eg1);
    }
    e.inject_lane_fault(0).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut failed = None;
    let mut stopped = Vec::new();
    while std::time::Instant::now() < deadline && failed.is_none() {
        std::thread::sleep(Duration::from_millis(20));
        for ev in e.events() {
            match ev {
                EngineEvent::LaneFailed {
                    lane,
                    sessions_lost,
                } => failed = Some((lane, sessions_lost)),
                EngineEvent::SessionStopped(id) if failed.is_some() => stopped.push(id),
                _ => {}
            }
        }
    }
    let lane0: Vec<SessionId> = calls
        .iter()
        .flat_map(|&(a, b)| [a, b])
        .filter(|s| s.lane() == 0)
        .collect();
    assert_eq!(failed, Some((0, lane0.len() as u32)), "LaneFailed reported");
    stopped.sort();
    let mut want = lane0.clone();
    want.sort();
    assert_eq!(stopped, want, "each lost session reported");
    for &s in &lane0 {
        assert_eq!(e.session_stats(s), Err(Error::UnknownSession(s)));
    }
    // Lane 1 carries on: 30 more packets per stream, 20 ms apart; its sessions take in
    // every one and send audio on. (Counted at ingress: how much of the audio comes out
    // depends on the pusher keeping pace, which a loaded machine does not promise.)
    let before = e.lane_stats(1).unwrap().ticks;
    let lane1: Vec<SessionId> = calls
        .iter()
        .map(|&(a, _)| a)
        .filter(|s| s.lane() == 1)
        .collect();
    let rx = |e: &MediaEngine| -> u64 {
        lane1
            .iter()
            .map(|&s| e.session_stats(s).unwrap().rx_packets)
            .sum()
    };
    let rx_before = rx(&e);
    let mut out1 = 0;
    for k in 10..40 {
        push_all(k, &mut ing0, &mut ing1);
        std::thread::sleep(Duration::from_millis(20));
        drain(&mut eg0);
        out1 += drain(&mut eg1).len();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while rx(&e) < rx_before + 30 * lane1.len() as u64 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        out1 += drain(&mut eg1).len();
    }
    assert!(e.lane_stats(1).unwrap().ticks > before + 50);
    assert_eq!(
        rx(&e),
        rx_before + 30 * lane1.len() as u64,
        "lane 1 took every packet"
    );
    assert!(out1 > 0, "lane 1 sent nothing");
    // New calls go to the healthy lane.
    let (a, b) = call(&e, 900, CodecSpec::PCMU, CodecSpec::PCMU);
    assert_eq!((a.lane(), b.lane()), (1, 1));
    e.stop().unwrap();
}

/// Commands for a session of a lane that has failed, before anyone polled the engine's
/// events, are refused (`LaneFailed`), and the session is then reported stopped like the
/// lane's others. Before, a destroy was answered `Ok`, its command queued for a lane that
/// no longer reads them, and its record removed: it never got its `SessionStopped` (a
/// caller waiting for that to free the RTP port waited forever).
#[test]
fn commands_for_a_failed_lane_are_refused_and_its_sessions_reported_stopped() {
    let e = realtime(Topology::Fused);
    e.start().unwrap();
    let calls: Vec<(SessionId, SessionId)> = (0..4)
        .map(|i| call(&e, 100 + 2 * i, CodecSpec::PCMU, CodecSpec::PCMA))
        .collect();
    let (a, b) = *calls.iter().find(|(a, _)| a.lane() == 0).unwrap();
    e.inject_lane_fault(0).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        e.destroy_media_session(a),
        Err(Error::LaneFailed { lane: 0 })
    );
    assert_eq!(
        e.update_media_session(b, MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_20)),
        Err(Error::LaneFailed { lane: 0 })
    );
    let stopped: Vec<SessionId> = e
        .events()
        .filter_map(|ev| match ev {
            EngineEvent::SessionStopped(id) => Some(id),
            _ => None,
        })
        .collect();
    assert!(stopped.contains(&a) && stopped.contains(&b), "{stopped:?}");
    assert_eq!(e.destroy_media_session(a), Err(Error::UnknownSession(a)));
    e.stop().unwrap();
}

#[test]
fn a_panicking_lane_fails_alone_and_loudly_fused() {
    a_panicking_lane_fails_alone(Topology::Fused);
}

#[test]
fn a_panicking_lane_fails_alone_and_loudly_split() {
    a_panicking_lane_fails_alone(Topology::Split);
}

/// RFC 4733 packets share the audio stream's sequence numbers (one SSRC): the receive
/// statistics count them, so digits sent in place of audio are not reported as loss.
#[test]
fn telephone_events_in_place_of_audio_are_not_counted_as_loss() {
    let e = virtual_engine(8);
    let pa = pcmu_with_telephone_event();
    let (a, _b) = e
        .create_call(
            (DialogId(1), pa),
            (
                DialogId(2),
                MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_20),
            ),
        )
        .unwrap();
    let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
    let mut pkt = Vec::new();
    for k in 0..100u16 {
        if (40..50).contains(&k) {
            // A digit: event packets replace ten audio packets, same sequence space.
            let dur = 160 * (k - 39);
            let end = if k == 49 { 0x80 } else { 0 };
            let payload = [5, end | 10, (dur >> 8) as u8, dur as u8];
            rtp(101, k, 160 * 40, 7, k == 40, &payload, &mut pkt);
        } else {
            rtp(
                0,
                k,
                160 * u32::from(k),
                7,
                false,
                &ulaw_frame(k as usize),
                &mut pkt,
            );
        }
        ing.push(a.id, &pkt).unwrap();
        e.step(2).unwrap();
        drain(&mut eg);
    }
    let st = e.session_stats(a.id).unwrap();
    assert_eq!(st.rx_dtmf_packets, 10);
    assert_eq!(st.rx_expected, 100);
    assert_eq!(st.rx_lost, 0, "digits read as loss");
    let q = e.session_quality(a.id).unwrap();
    assert_eq!(q.packets_lost, 0);
}

/// A control plane that only updates (or only destroys) for a while must see the command
/// ring drain as the lane applies commands: room comes back without any other call.
#[test]
fn a_run_of_updates_alone_never_finds_the_command_ring_full_for_good() {
    let e = MediaEngine::new(EngineConfig {
        sessions_per_lane: 8,
        lanes: 1,
        command_capacity: 8,
        raise_priority: false,
        ..Default::default()
    })
    .unwrap();
    e.start().unwrap();
    let (a, _b) = call(&e, 1, CodecSpec::PCMU, CodecSpec::PCMA);
    let mut refused = 0;
    for k in 0..100u32 {
        let mut p = MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_20);
        p.dsp.rx_gain_db = (k % 7) as f32 - 3.0;
        let t0 = std::time::Instant::now();
        loop {
            match e.update_media_session(a, p.clone()) {
                Ok(()) => break,
                Err(Error::RingFull { .. }) if t0.elapsed() < Duration::from_secs(2) => {
                    refused += 1;
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(err) => panic!("update {k}: {err} after {refused} refusals"),
            }
        }
    }
    e.stop().unwrap();
}

#[test]
fn quality_monitor_turns_opus_fec_on_under_loss_and_the_encoder_follows_adjustments() {
    use media_core::engine::QualityMonitor;
    use media_core::quality::monitor::QualityAdjustment;
    let e = virtual_engine(4);
    let mut opus_params = MediaSessionParams::new(CodecSpec::OPUS, Ptime::MS_20);
    opus_params.opus.inband_fec = false;
    opus_params.opus.packet_loss_percent = 0;
    let (a, b) = e
        .create_call(
            (DialogId(1), opus_params),
            (
                DialogId(2),
                MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_20),
            ),
        )
        .unwrap();
    let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
    let mut enc = opus::Encoder::new(48000, opus::Channels::Mono, opus::Application::Voip).unwrap();
    // Lane load is not under test here (an unoptimised build's ticks are slow enough to
    // shed Opus complexity, which `suggest_complexity`'s unit test covers).
    let mut monitor = QualityMonitor::new(media_core::quality::monitor::QualityThresholds {
        lane_load_high: f64::INFINITY,
        ..Default::default()
    });
    let mut pkt = Vec::new();
    // Speech-like input into B (PCMU), so A's Opus encoder has something to spend bits on.
    let mut sizes_from_a = Vec::new();
    let mut run = |k0: usize, n: usize, lose_every: usize, sizes: &mut Vec<usize>| {
        for k in k0..k0 + n {
            let payload = opus_tone_packet(&mut enc, k, 6000.0);
            if lose_every == 0 || k % lose_every != 0 {
                rtp(111, k as u16, 960 * k as u32, 5, k == 0, &payload, &mut pkt);
                ing.push(a.id, &pkt).unwrap();
            }
            rtp(
                0,
                k as u16,
                160 * k as u32,
                6,
                k == 0,
                &ulaw_frame(k),
                &mut pkt,
            );
            ing.push(b.id, &pkt).unwrap();
            e.step(2).unwrap();
            for p in drain(&mut eg) {
                if p.session == a.id {
                    sizes.push(p.payload().len());
                }
            }
        }
    };
    // 2 s clean, then 3 s with every 10th packet lost (10%).
    run(0, 100, 0, &mut sizes_from_a);
    assert!(
        monitor.suggest_quality_adjustments(&e).is_empty(),
        "a clean call needs no adjustment"
    );
    run(100, 150, 10, &mut sizes_from_a);
    let adj = monitor.suggest_quality_adjustments(&e);
    let a_id = a.id.to_u64();
    let fec = adj.iter().find_map(|x| match *x {
        QualityAdjustment::OpusEncoder {
            session,
            bitrate_bps,
            inband_fec,
            packet_loss_percent,
        } if session == a_id => Some((bitrate_bps, inband_fec, packet_loss_percent)),
        _ => None,
    });
    assert_eq!(fec, Some((24_000, true, 10)), "{adj:?}");
    // Hysteresis: the same loss again suggests nothing new.
    run(250, 100, 10, &mut sizes_from_a);
    assert!(
        !monitor
            .suggest_quality_adjustments(&e)
            .iter()
            .any(|x| matches!(x, QualityAdjustment::OpusEncoder { .. })),
        "no flapping"
    );
    // Opus adjustments are refused for a session that does not send Opus.
    assert!(matches!(
        e.adjust_quality(QualityAdjustment::OpusEncoder {
            session: b.id.to_u64(),
            bitrate_bps: 8000,
            inband_fec: true,
            packet_loss_percent: 10,
        }),
        Err(Error::InvalidConfig(_))
    ));
    // The encoder follows an adjustment: 8 kbit/s, then 64 kbit/s, seen in payload sizes.
    let mean = |s: &[usize]| s.iter().sum::<usize>() as f64 / s.len().max(1) as f64;
    let mut low = Vec::new();
    let mut high = Vec::new();
    for (rate, sizes, k0) in [(8_000, &mut low, 350), (64_000, &mut high, 450)] {
        e.adjust_quality(QualityAdjustment::OpusEncoder {
            session: a.id.to_u64(),
            bitrate_bps: rate,
            inband_fec: false,
            packet_loss_percent: 0,
        })
        .unwrap();
        run(k0, 100, 0, sizes);
    }
    let (lo, hi) = (mean(&low[20..]), mean(&high[20..]));
    // 8 kbit/s at 20 ms is 20 bytes a packet, 64 kbit/s 160.
    assert!(
        lo < 35.0 && hi > 100.0,
        "payload bytes at 8k {lo:.0}, at 64k {hi:.0}"
    );
    e.adjust_quality(QualityAdjustment::OpusComplexity {
        session: a.id.to_u64(),
        complexity: 1,
    })
    .unwrap();
    run(550, 10, 0, &mut Vec::new());
}

#[test]
fn invalid_engine_configs_and_session_requests_are_typed_errors() {
    let base = || EngineConfig {
        clock: ClockMode::Virtual,
        sessions_per_lane: 3,
        ..Default::default()
    };
    let bad: [(&str, EngineConfig); 10] = [
        ("no lanes", EngineConfig { lanes: 0, ..base() }),
        (
            "no sessions",
            EngineConfig {
                sessions_per_lane: 0,
                ..base()
            },
        ),
        (
            "2^24 sessions",
            EngineConfig {
                sessions_per_lane: 1 << 24,
                ..base()
            },
        ),
        (
            "3 commands",
            EngineConfig {
                command_capacity: 3,
                ..base()
            },
        ),
        (
            "79-sample frames",
            EngineConfig {
                max_frame_samples: 79,
                ..base()
            },
        ),
        (
            "79-byte payloads",
            EngineConfig {
                max_payload_bytes: 79,
                ..base()
            },
        ),
        (
            "jitter min above max",
            EngineConfig {
                jitter: JitterConfig {
                    min_delay_ms: 200,
                    max_delay_ms: 100,
                    ..Default::default()
                },
                ..base()
            },
        ),
        (
            "no frame slots",
            EngineConfig {
                frame_slots_per_lane: Some(0),
                ..base()
            },
        ),
        (
            "no packet slots",
            EngineConfig {
                packet_slots_per_lane: Some(0),
                ..base()
            },
        ),
        (
            "no egress slots",
            EngineConfig {
                egress_slots_per_lane: Some(0),
                ..base()
            },
        ),
    ];
    for (what, cfg) in bad {
        assert!(
            matches!(MediaEngine::new(cfg), Err(Error::InvalidConfig(_))),
            "{what}"
        );
    }

    let e = MediaEngine::new(base()).unwrap();
    assert_eq!(e.step(1), Err(Error::EngineNotRunning));
    e.start().unwrap();
    let pcmu = || MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_20);
    // Opus has no 30 ms packet; a receive codec at another rate than the send codec's.
    assert!(matches!(
        e.create_media_session(
            DialogId(1),
            MediaSessionParams::new(CodecSpec::OPUS, Ptime::MS_30)
        ),
        Err(Error::UnsupportedParameters { .. })
    ));
    assert!(matches!(
        e.create_media_session(
            DialogId(1),
            MediaSessionParams::new(CodecSpec::G722, Ptime::MS_20).with_rx(CodecSpec::PCMU)
        ),
        Err(Error::UnsupportedParameters { .. })
    ));
    // Placement: a lane that does not exist, the lane of a session that does not.
    assert_eq!(
        e.create_media_session_at(DialogId(1), pcmu(), Placement::Lane(5)),
        Err(Error::InvalidConfig("no such lane"))
    );
    let ghost = SessionId::from_parts(0, 1, 77);
    assert_eq!(
        e.create_media_session_at(DialogId(1), pcmu(), Placement::With(ghost)),
        Err(Error::UnknownSession(ghost))
    );
    // Calls: one dialog for both legs, a dialog already served, no room for two legs.
    assert_eq!(
        e.create_call((DialogId(1), pcmu()), (DialogId(1), pcmu())),
        Err(Error::DuplicateDialog(DialogId(1)))
    );
    let one = e.create_media_session(DialogId(1), pcmu()).unwrap();
    assert_eq!(
        e.create_call((DialogId(2), pcmu()), (DialogId(1), pcmu())),
        Err(Error::DuplicateDialog(DialogId(1)))
    );
    e.create_media_session_at(DialogId(2), pcmu(), Placement::With(one.id))
        .unwrap();
    assert!(matches!(
        e.create_call((DialogId(3), pcmu()), (DialogId(4), pcmu())),
        Err(Error::CapacityExhausted { capacity: 3 })
    ));
    // Nothing refused took a slot: the third one is still free.
    e.create_media_session(DialogId(3), pcmu()).unwrap();
    e.step(2).unwrap();
    assert_eq!(e.quality_report().sessions, 3);

    // `step` drives the virtual clock only.
    let rt = MediaEngine::new(EngineConfig {
        clock: ClockMode::Realtime,
        raise_priority: false,
        ..base()
    })
    .unwrap();
    rt.start().unwrap();
    assert!(matches!(rt.step(1), Err(Error::InvalidConfig(_))));
    rt.stop().unwrap();
}

#[test]
fn receive_codecs_on_another_rtp_clock_are_refused_and_their_packets_counted() {
    // An Opus session narrowed to 8 kHz shares G.711's sample rate but not its RTP clock
    // (48 kHz vs 8 kHz). Accepted, PCMU packets 160 timestamp units apart landed on the
    // Opus timeline as 3.3 ms steps of 20 ms packets: 42 of 50 late, 45 frames concealed.
    let e = virtual_engine(4);
    let mut pa = MediaSessionParams::new(CodecSpec::OPUS, Ptime::MS_20)
        .with_rx(CodecSpec::OPUS)
        .with_rx(CodecSpec::PCMU);
    pa.opus.sample_rate = media_core::SampleRate::new(8000).unwrap();
    match e.create_media_session(DialogId(1), pa.clone()) {
        Err(Error::UnsupportedParameters { codec, reason }) => {
            assert_eq!(codec, media_core::codec::Codec::Pcmu);
            assert!(reason.contains("RTP clock"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    // Without PCMU in its receive set the session runs; a PCMU packet is then a counted
    // unsupported payload type, and the Opus stream around it plays exactly as without it.
    pa.rx.retain(|c| c.codec == media_core::codec::Codec::Opus);
    let run = |stray: bool| {
        let e = virtual_engine(4);
        let a = e.create_media_session(DialogId(1), pa.clone()).unwrap().id;
        let b = e
            .create_media_session(
                DialogId(2),
                MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_20),
            )
            .unwrap()
            .id;
        e.bridge(a, b).unwrap();
        let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
        let mut enc =
            opus::Encoder::new(8000, opus::Channels::Mono, opus::Application::Voip).unwrap();
        let mut pkt = Vec::new();
        let mut out = Vec::new();
        for k in 0..50usize {
            if stray && k == 20 {
                rtp(0, 900, 1234, 3, false, &ulaw_frame(k), &mut pkt);
                ing.push(a, &pkt).unwrap();
            }
            let payload = enc.encode_vec(&signal(160 * k, 160), 400).unwrap();
            rtp(111, k as u16, 960 * k as u32, 3, false, &payload, &mut pkt);
            ing.push(a, &pkt).unwrap();
            e.step(2).unwrap();
            out.extend(drain(&mut eg).into_iter().map(|p| p.payload().to_vec()));
        }
        (out, e.session_stats(a).unwrap())
    };
    let (clean, s0) = run(false);
    let (with_stray, s) = run(true);
    assert_eq!(s.rx_unsupported_pt, 1);
    assert_eq!((s.rx_late, s.frames_concealed), (0, 0));
    assert!(s0.packets_decoded >= 45);
    assert_eq!(s.packets_decoded, s0.packets_decoded);
    assert!(clean.len() >= 45);
    assert_eq!(clean, with_stray);
}

/// A re-INVITE from PCMU to Opus on a stream that goes on (same SSRC, sequence numbers
/// continuing, timestamps now at 48 kHz), every packet on time: the interarrival jitter
/// stays near 0 in the new units. Before, the statistics kept PCMU's 8 kHz clock: 960
/// timestamp units a packet against 160 of arrival time read as 800 units of jitter each
/// packet, on top of the timestamps' jump at the change (rx_jitter_ts 2,067 after 50
/// packets).
#[test]
fn a_codec_changing_reinvite_measures_jitter_on_the_new_codecs_clock() {
    let e = virtual_engine(4);
    let (a, _b) = call(&e, 1, CodecSpec::PCMU, CodecSpec::PCMU);
    let (mut ing, _eg) = e.take_rtp_handles(0).unwrap();
    let mut pkt = Vec::new();
    let at = |k: usize| 1 + k as u64 * 20_000_000;
    for k in 0..50usize {
        rtp(
            0,
            k as u16,
            160 * k as u32,
            3,
            false,
            &ulaw_frame(k),
            &mut pkt,
        );
        ing.push_at(a, &pkt, at(k)).unwrap();
        e.step(2).unwrap();
    }
    assert!(e.session_stats(a).unwrap().rx_jitter_ts <= 1);
    e.update_media_session(a, MediaSessionParams::new(CodecSpec::OPUS, Ptime::MS_20))
        .unwrap();
    e.step(1).unwrap();
    let mut enc =
        opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip).unwrap();
    for k in 50..100usize {
        let pcm = vec![0i16; 960];
        let payload = enc.encode_vec(&pcm, 400).unwrap();
        rtp(
            111,
            k as u16,
            500_000 + 960 * (k - 50) as u32,
            3,
            false,
            &payload,
            &mut pkt,
        );
        ing.push_at(a, &pkt, at(k)).unwrap();
        e.step(2).unwrap();
    }
    let s = e.session_stats(a).unwrap();
    assert_eq!(s.rx_packets, 100);
    assert!(
        s.rx_jitter_ts <= 6,
        "jitter {} (48 kHz units)",
        s.rx_jitter_ts
    );
}

/// A re-INVITE that changes the send clock (PCMU's 8 kHz to Opus's 48 kHz) starts a new
/// RTP stream: another SSRC, its own sequence and timestamp (RFC 7160 §4.1), so the peer
/// never reads the two clocks as one stream. One on the same clock (PCMU to PCMA)
/// continues the stream, as does one whose SSRC was given (`tx_ssrc`).
#[test]
fn a_send_clock_change_starts_a_new_rtp_stream() {
    for (to, given, same_stream) in [
        (CodecSpec::OPUS, false, false),
        (CodecSpec::PCMA, false, true),
        (CodecSpec::OPUS, true, true),
    ] {
        let e = virtual_engine(4);
        let mut pb = MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_20);
        pb.tx_ssrc = given.then_some(0x1234_5678);
        let (a, b) = e
            .create_call(
                (
                    DialogId(1),
                    MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_20),
                ),
                (DialogId(2), pb.clone()),
            )
            .unwrap();
        let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
        let mut pkt = Vec::new();
        let mut out = Vec::new();
        for k in 0..40usize {
            if k == 20 {
                let mut p = MediaSessionParams::new(to, Ptime::MS_20);
                p.tx_ssrc = pb.tx_ssrc;
                e.update_media_session(b.id, p).unwrap();
            }
            rtp(
                0,
                k as u16,
                160 * k as u32,
                3,
                k == 0,
                &ulaw_frame(k),
                &mut pkt,
            );
            ing.push(a.id, &pkt).unwrap();
            e.step(2).unwrap();
            out.extend(drain(&mut eg).into_iter().filter(|p| p.session == b.id));
        }
        let first = out.first().unwrap().header;
        let last = out.last().unwrap().header;
        assert_ne!(first.payload_type, last.payload_type, "{to:?}: updated");
        assert_eq!(
            first.ssrc == last.ssrc,
            same_stream,
            "{to:?} (SSRC given: {given})"
        );
        if same_stream {
            for w in out.windows(2) {
                assert_eq!(w[1].header.sequence, w[0].header.sequence.wrapping_add(1));
            }
        }
    }
}

/// Loss counted over a session's streams survives a re-INVITE: an SSRC change (a new
/// source, its own statistics) and then an update. Before, the update kept only the
/// current stream's statistics, so the earlier stream's expected and lost packets vanished
/// from the session's counters (41 expected and 2 lost became 21 and 0).
#[test]
fn loss_counted_before_an_ssrc_change_survives_a_reinvite() {
    let e = virtual_engine(4);
    let (a, _b) = call(&e, 1, CodecSpec::PCMU, CodecSpec::PCMU);
    let (mut ing, _eg) = e.take_rtp_handles(0).unwrap();
    let mut pkt = Vec::new();
    for k in 0..40usize {
        // SSRC 3 for 20 packets (2 of them lost), then SSRC 4.
        let (ssrc, seq) = if k < 20 { (3, k) } else { (4, 1000 + k) };
        if k == 5 || k == 9 {
            e.step(2).unwrap();
            continue;
        }
        // (The new source's first packet starts its stream: marker.)
        rtp(
            0,
            seq as u16,
            160 * k as u32,
            ssrc,
            k == 20,
            &ulaw_frame(k),
            &mut pkt,
        );
        ing.push(a, &pkt).unwrap();
        e.step(2).unwrap();
    }
    let before = e.session_stats(a).unwrap();
    assert_eq!((before.rx_expected, before.rx_lost), (40, 2));
    e.update_media_session(a, MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_20))
        .unwrap();
    e.step(1).unwrap();
    rtp(0, 1040, 160 * 40, 4, false, &ulaw_frame(40), &mut pkt);
    ing.push(a, &pkt).unwrap();
    e.step(2).unwrap();
    let after = e.session_stats(a).unwrap();
    assert_eq!((after.rx_expected, after.rx_lost), (41, 2));
}

/// A digit whose end packets are lost, held across `stop` and `start`: its lost-end
/// timeout (200 ms) still ends it after the restart. Before, the lane's clock restarted at
/// 0 while the digit's last packet was stamped with the time before the stop, so the end
/// came only once the lane had run as long again (here 3 s).
#[test]
fn a_digit_held_across_a_restart_still_times_out() {
    use media_core::codec::audio::telephone_event::EventPayload;
    let e = realtime(Topology::Fused);
    e.start().unwrap();
    let (a, _b) = e
        .create_call(
            (DialogId(1), pcmu_with_telephone_event()),
            (
                DialogId(2),
                MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_20),
            ),
        )
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let (mut ing, _eg) = e.take_rtp_handles(a.lane()).unwrap();
    let mut pkt = Vec::new();
    let mut payload = [0u8; 4];
    for k in 0..3u16 {
        let ev = EventPayload {
            event: 5,
            end: false,
            volume: 10,
            duration: 160 * (k + 1),
        };
        ev.write(&mut payload);
        rtp(101, k, 8000, 7, k == 0, &payload, &mut pkt);
        ing.push(a.id, &pkt).unwrap();
    }
    std::thread::sleep(Duration::from_millis(50));
    e.stop().unwrap();
    e.start().unwrap();
    let restarted = std::time::Instant::now();
    let mut ended = None;
    while ended.is_none() && restarted.elapsed() < Duration::from_millis(1500) {
        while let Some(ev) = e.poll_event() {
            if let EngineEvent::Dtmf {
                digit,
                ended_ms: Some(_),
                ..
            } = ev
            {
                ended = Some((digit, restarted.elapsed()));
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let (digit, after) = ended.expect("the digit's end within 1.5 s of the restart");
    assert_eq!(digit, '5');
    println!("ended {after:?} after the restart");
    e.stop().unwrap();
}

/// `flush` with a lane that fails meanwhile (a drill: `inject_lane_fault` right after a
/// call was created on it): it returns once the failure is reported instead of waiting out
/// its timeout for acknowledgements that will never come, and the lane's own reports come
/// first (each session's start before its stop). Before, flush waited the whole 5 s and
/// returned `AckTimeout` with no `LaneFailed`, and the failure's `SessionStopped` could
/// precede the lane's `SessionStarted`.
#[test]
fn flush_reports_a_lane_that_failed_and_keeps_its_events_in_order() {
    for topology in [Topology::Fused, Topology::Split] {
        let e = realtime(topology);
        e.start().unwrap();
        let (a, b) = call(&e, 1, CodecSpec::PCMU, CodecSpec::PCMA);
        e.inject_lane_fault(a.lane()).unwrap();
        // The lane has failed by the time anything is collected.
        std::thread::sleep(Duration::from_millis(300));
        let t = std::time::Instant::now();
        e.flush(Duration::from_secs(5)).unwrap();
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        let events: Vec<EngineEvent> = e.events().collect();
        let at = |want: &EngineEvent| events.iter().position(|ev| ev == want);
        assert!(
            events
                .iter()
                .any(|ev| matches!(ev, EngineEvent::LaneFailed { .. })),
            "{topology:?}: {events:?}"
        );
        for s in [a, b] {
            let stopped = at(&EngineEvent::SessionStopped(s)).expect("stopped");
            if let Some(started) = at(&EngineEvent::SessionStarted(s)) {
                assert!(started < stopped, "{topology:?}: {events:?}");
            }
        }
        e.stop().unwrap();
    }
}

/// A re-INVITE with the session's own parameters (a session-timer refresh, RFC 4028, every
/// few minutes on many trunks) changes nothing: the relayed audio goes on packet for
/// packet. Before, every update rebuilt the session: its buffered packets were dropped
/// and its playout restarted (the relayed stream differed from the plain run's), its
/// codecs and echo canceller started over and a digit in flight lost its end.
#[test]
fn a_reinvite_with_the_same_parameters_leaves_the_call_untouched() {
    let run = |refresh: bool| {
        let e = virtual_engine(4);
        let (a, b) = call(&e, 1, CodecSpec::PCMU, CodecSpec::PCMU);
        let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
        let mut pkt = Vec::new();
        let mut out = Vec::new();
        for k in 0..40usize {
            rtp(
                0,
                k as u16,
                160 * k as u32,
                3,
                k == 0,
                &ulaw_frame(k),
                &mut pkt,
            );
            ing.push(a, &pkt).unwrap();
            if refresh && k == 20 {
                e.update_media_session(a, MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_20))
                    .unwrap();
            }
            e.step(2).unwrap();
            out.extend(
                drain(&mut eg)
                    .into_iter()
                    .filter(|p| p.session == b)
                    .map(|p| p.payload().to_vec()),
            );
        }
        out
    };
    let plain = run(false);
    assert!(plain.len() >= 36);
    assert_eq!(run(true), plain);
}

/// An Opus leg whose peer asked for DTX (`usedtx=1`), fed 3 s of digital silence between
/// two stretches of tone from a PCMU leg: through the silence it sends only libopus's
/// periodic frames (one per 400 ms), not a 1-2 byte packet every 20 ms, and marks the
/// tone's return. Before, all 150 frames of the silence went out.
#[test]
fn an_opus_leg_with_dtx_sends_nothing_through_silence_but_its_periodic_frames() {
    let e = virtual_engine(4);
    let mut pb = MediaSessionParams::new(CodecSpec::OPUS, Ptime::MS_20);
    pb.opus.dtx = true;
    let (a, b) = e
        .create_call(
            (
                DialogId(1),
                MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_20),
            ),
            (DialogId(2), pb),
        )
        .unwrap();
    let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
    let mut pkt = Vec::new();
    let mut out = Vec::new();
    for k in 0..300usize {
        let payload = if (100..250).contains(&k) {
            vec![0xFF; 160]
        } else {
            ulaw_frame(k)
        };
        rtp(0, k as u16, 160 * k as u32, 3, false, &payload, &mut pkt);
        ing.push(a.id, &pkt).unwrap();
        e.step(2).unwrap();
        out.extend(drain(&mut eg).into_iter().filter(|p| p.session == b.id));
    }
    // B's timestamps from its first packet (the first frame period A's audio reached it;
    // its stream starts at a random timestamp).
    let t0 = out[0].header.timestamp;
    let rel = |p: &common::Out| p.header.timestamp.wrapping_sub(t0);
    let silence = (960 * 105)..(960 * 248);
    let in_silence: Vec<_> = out.iter().filter(|p| silence.contains(&rel(p))).collect();
    assert!(
        (3..=12).contains(&in_silence.len()),
        "{} packets through 2.9 s of silence",
        in_silence.len()
    );
    assert!(in_silence.iter().all(|p| p.payload().len() > 2));
    assert!(e.session_stats(b.id).unwrap().frames_dtx >= 100);
    // The tone's first packet after the silence is marked; the sequence has no gap.
    let back = out
        .iter()
        .find(|p| rel(p) >= silence.end && p.payload().len() > 2)
        .unwrap();
    assert!(
        rel(back) < 960 * 255,
        "the tone came back at {}",
        rel(back) / 960
    );
    assert!(back.header.marker);
    assert!(out
        .windows(2)
        .all(|w| w[1].header.sequence == w[0].header.sequence.wrapping_add(1)));
    // 150 frames of tone (less the jitter buffer's start), and the silence's few.
    assert!((140..=170).contains(&out.len()), "{}", out.len());
}

/// A re-INVITE that changes something else (here the jitter bounds) while a digit is going
/// out as RFC 4733: the digit finishes with its three end packets. Before, the update
/// replaced the sender mid-digit and no end packet went out (the far end held the key
/// until its own timeout).
#[test]
fn a_digit_being_sent_finishes_across_a_reinvite() {
    use media_core::codec::audio::telephone_event::EventPayload;
    let e = virtual_engine(4);
    let params = || {
        let mut p = MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_20);
        p.telephone_event_send_pt = media_core::PayloadType::new(101);
        p
    };
    let (a, _b) = e
        .create_call(
            (DialogId(1), params()),
            (
                DialogId(2),
                MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_20),
            ),
        )
        .unwrap();
    let (_ing, mut eg) = e.take_rtp_handles(0).unwrap();
    e.send_dtmf(a.id, '5', 200).unwrap();
    let (mut events, mut sent) = (Vec::new(), 0u64);
    for k in 0..30 {
        if k == 4 {
            let mut p = params();
            p.jitter = Some(JitterConfig {
                min_delay_ms: 40,
                ..Default::default()
            });
            e.update_media_session(a.id, p).unwrap();
        }
        e.step(2).unwrap();
        let out: Vec<_> = drain(&mut eg)
            .into_iter()
            .filter(|p| p.session == a.id)
            .collect();
        sent += out.len() as u64;
        events.extend(
            out.iter()
                .filter(|p| p.header.payload_type == 101)
                .map(|p| EventPayload::parse(p.payload()).unwrap()),
        );
    }
    let ends: Vec<_> = events.iter().filter(|ev| ev.end).collect();
    assert_eq!(ends.len(), 3, "{events:?}");
    assert!(ends.iter().all(|ev| ev.event == 5 && ev.duration == 1600));
    // The event packets count as packets sent (an RTCP sender report's count); before,
    // only `tx_dtmf_packets` counted them.
    let s = e.session_stats(a.id).unwrap();
    assert_eq!(s.tx_packets, sent);
    assert!(s.tx_dtmf_packets >= 10 && s.tx_payload_bytes >= 4 * s.tx_dtmf_packets);
}

/// Two sources on one session, interleaved (forked early media: two 183s sending to one
/// port; or an old and a new source overlapping at a transfer), neither marking its
/// packets: the session keeps the first and drops the other's (counted), instead of
/// restarting its buffer on every packet. Before: 99 resyncs in 100 packets and nothing
/// played. A source that takes over cleanly (the old one stops) costs one packet without
/// a marker, none with one.
#[test]
fn a_second_source_interleaved_with_the_first_does_not_restart_the_stream() {
    let e = virtual_engine(4);
    let (a, b) = call(&e, 1, CodecSpec::PCMU, CodecSpec::PCMU);
    let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
    let mut pkt = Vec::new();
    let mut out = 0;
    for k in 0..50usize {
        rtp(
            0,
            k as u16,
            160 * k as u32,
            3,
            false,
            &ulaw_frame(k),
            &mut pkt,
        );
        ing.push(a, &pkt).unwrap();
        rtp(
            0,
            7000 + k as u16,
            90_000 + 160 * k as u32,
            9,
            false,
            &ulaw_frame(k + 7),
            &mut pkt,
        );
        ing.push(a, &pkt).unwrap();
        e.step(2).unwrap();
        out += drain(&mut eg)
            .into_iter()
            .filter(|p| p.session == b)
            .count();
    }
    let s = e.session_stats(a).unwrap();
    assert_eq!(s.rx_resyncs, 0, "{s:?}");
    assert_eq!(e.lane_stats(0).unwrap().foreign_ssrc_drops, 50);
    assert!(out >= 45, "{out} frames sent on");
    assert_eq!(s.rx_packets, 50);

    // Clean hand-overs: a new source alone, first without a marker, then with one.
    for (marker, dropped) in [(false, 1u64), (true, 0)] {
        let e = virtual_engine(4);
        let (a, _b) = call(&e, 1, CodecSpec::PCMU, CodecSpec::PCMU);
        let (mut ing, _eg) = e.take_rtp_handles(0).unwrap();
        for k in 0..60usize {
            let (ssrc, seq) = if k < 30 { (3, k) } else { (4, 5000 + k) };
            rtp(
                0,
                seq as u16,
                160 * k as u32,
                ssrc,
                marker && k == 30,
                &ulaw_frame(k),
                &mut pkt,
            );
            ing.push(a, &pkt).unwrap();
            e.step(2).unwrap();
        }
        let s = e.session_stats(a).unwrap();
        assert_eq!(s.rx_resyncs, 1, "marker {marker}");
        assert_eq!(
            e.lane_stats(0).unwrap().foreign_ssrc_drops,
            dropped,
            "marker {marker}"
        );
        assert_eq!(s.rx_packets, 60 - dropped, "marker {marker}");
    }
}
