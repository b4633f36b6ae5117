//! The `ingress` fuzz target: hostile RTP pushed into a virtual-clock engine.
//!
//! One lane carries a bridged call for every pair of codecs (PCMU, PCMA, G.722, Opus,
//! each with RFC 4733 telephone-event on PT 101 and, at 8 kHz, RFC 3389 comfort noise
//! on PT 13). The input is read as a script of operations: push a packet (well formed
//! with fuzzed fields, or raw garbage) to one of the sessions or to a dead session id,
//! step the clock, re-INVITE a session, send a digit, attach a session to the lane's
//! application audio handle (or bridge it back), write application frames of any length
//! and content for any id. After every step the counters must add up (see [`check`]) and
//! the application reads what the lane handed it; at the end every session is destroyed
//! and every slot of every slab must be back.

#[path = "input.rs"]
mod input;

use input::Input;
use media_core::rtp::{write_header, RtpHeader};
use media_core::{
    ClockMode, CodecSpec, DialogId, EngineConfig, Error, MediaEngine, MediaSessionParams,
    PayloadType, Ptime, SessionId,
};

const SESSIONS_PER_LANE: usize = 24;
const TELEPHONE_EVENT_PT: u8 = 101;
const CN_PT: u8 = 13;
const PTIMES: [Ptime; 5] = [
    Ptime::MS_10,
    Ptime::MS_20,
    Ptime::MS_30,
    Ptime::MS_40,
    Ptime::MS_60,
];
/// Payload lengths worth trying: empty (keepalive), a telephone-event, G.722 and G.711
/// frames, and one too large for any slot.
const PAYLOAD_LENS: [usize; 9] = [0, 1, 4, 80, 160, 240, 320, 480, 1400];
const TICK_NS: u64 = 10_000_000;
const MAX_OPS: usize = 3000;

struct Leg {
    id: SessionId,
    params: MediaSessionParams,
    seq: u16,
    ts: u32,
    ssrc: u32,
    pushed_ok: u64,
}

/// What the script pushed and stepped so far.
#[derive(Default)]
struct Tally {
    pushed_ok: u64,
    pushed_err: u64,
    ticks: u64,
}

fn params(codec: CodecSpec, ptime: Ptime, wide_cn: bool) -> MediaSessionParams {
    let mut p = MediaSessionParams::new(codec, ptime);
    if matches!(codec, CodecSpec::PCMU | CodecSpec::PCMA) {
        // A sender may switch between the two without signalling.
        p = p.with_rx(CodecSpec::PCMU).with_rx(CodecSpec::PCMA);
        p.comfort_noise_pt = PayloadType::new(CN_PT);
    }
    if codec == CodecSpec::PCMA {
        // A detector on the PCMA legs' audio and DTX toward their peers (the PCMU legs
        // stay plain, so PCMU-PCMU calls still relay).
        p.dsp.vad = Some(Default::default());
        p.comfort_noise_send_pt = PayloadType::new(CN_PT);
        p.dtx = true;
    }
    if wide_cn && matches!(codec, CodecSpec::G722 | CodecSpec::OPUS) {
        // Comfort noise both ways (by the input; without it their keepalives are empty
        // payloads): the G.722-G.722 and Opus-Opus calls relay undecoded and forward their
        // sources' SIDs (and keepalives repeat them).
        p.comfort_noise_pt = PayloadType::new(CN_PT);
        p.comfort_noise_send_pt = PayloadType::new(CN_PT);
    }
    p.telephone_event_pt = PayloadType::new(TELEPHONE_EVENT_PT);
    p.telephone_event_send_pt = PayloadType::new(TELEPHONE_EVENT_PT);
    // Keepalives after 100 ms without a packet (SIDs on the PCMA, G.722 and Opus legs, or
    // the SID a relay forwarded; encoded silence on the PCMU legs): parked, detached and
    // starved legs send them.
    p.keepalive_ms = 100;
    p
}

/// Runs one input. Panics (the finding) when an invariant breaks.
pub fn run(data: &[u8]) {
    let mut inp = Input::new(data);
    // One byte of flags (the regression inputs' first byte held only the first).
    let flags = inp.u8();
    let small_slab = flags & 1 != 0;
    let wide_cn = flags & 2 != 0;
    let engine = MediaEngine::new(EngineConfig {
        clock: ClockMode::Virtual,
        sessions_per_lane: SESSIONS_PER_LANE,
        raise_priority: false,
        // 60 ms at 48 kHz (Opus): the default (20 ms of 48 kHz stereo) refuses longer ptimes.
        max_frame_samples: 2880,
        // Few packet slots make `RingFull` refusals and slab exhaustion reachable.
        packet_slots_per_lane: small_slab.then_some(24),
        ..Default::default()
    })
    .expect("engine config is valid");
    engine.start().expect("virtual engine starts");
    let (mut ingress, mut egress) = engine.take_rtp_handles(0).expect("lane 0 handles");
    let mut audio = engine.take_audio_handle(0).expect("lane 0 audio handle");
    let packet_slots = ingress.free_slots();

    let codecs = [
        CodecSpec::PCMU,
        CodecSpec::PCMA,
        CodecSpec::G722,
        CodecSpec::OPUS,
    ];
    let mut legs: Vec<Leg> = Vec::new();
    // Each leg's call partner, to bridge it back after an attachment.
    let mut peers: Vec<SessionId> = Vec::new();
    let mut dialog = 1u64;
    for (i, &a) in codecs.iter().enumerate() {
        for &b in &codecs[i..] {
            let mut ptime = inp.pick(&PTIMES);
            if ptime == Ptime::MS_30 && (a == CodecSpec::OPUS || b == CodecSpec::OPUS) {
                // Opus sessions refuse 30 ms packets (there is no such Opus frame), and a call
                // bridges one ptime: negotiation settles on 20 ms, and so does this harness.
                ptime = Ptime::MS_20;
            }
            let (pa, pb) = (params(a, ptime, wide_cn), params(b, ptime, wide_cn));
            let (ha, hb) = engine
                .create_call(
                    (DialogId(dialog), pa.clone()),
                    (DialogId(dialog + 1), pb.clone()),
                )
                .expect("every codec pair can be bridged");
            dialog += 2;
            for (h, p) in [(ha, pa), (hb, pb)] {
                peers.push(if h.id == ha.id { hb.id } else { ha.id });
                legs.push(Leg {
                    id: h.id,
                    params: p,
                    seq: inp.u16(),
                    ts: inp.u32(),
                    ssrc: inp.u32(),
                    pushed_ok: 0,
                });
            }
        }
    }
    // Ids that name no live session: a free slot, a stale generation, another lane.
    let ghosts = [
        SessionId::from_parts(0, (SESSIONS_PER_LANE - 1) as u32, 0),
        SessionId::from_parts(0, 0, legs[0].id.generation().wrapping_add(1)),
        SessionId::from_parts(1, 0, 0),
    ];
    let mut tally = Tally::default();
    engine.step(2).expect("step");
    tally.ticks += 2;
    drain(&mut egress, &legs);
    let frame_slots_free = engine.lane_stats(0).expect("lane 0").frame_slots_free;
    check(&engine, &legs, &tally);

    let mut pkt = vec![0u8; 12 + 1400];
    let mut pcm = vec![0i16; 3000];
    let mut now_ns = 1_000_000_000u64;
    let mut ops = 0;
    while !inp.is_empty() && ops < MAX_OPS {
        ops += 1;
        match inp.u8() % 16 {
            0..=2 => {
                let ticks = 1 + inp.below(6) as u64;
                engine.step(ticks).expect("step");
                tally.ticks += ticks;
                now_ns += ticks * TICK_NS;
                drain(&mut egress, &legs);
                read_app(&mut audio, &legs, inp.bool());
                check(&engine, &legs, &tally);
            }
            6 => {
                // Attach a leg to the application (its call partner then hears nothing
                // from it), or bridge it back to its partner.
                let i = inp.below(legs.len());
                let r = if inp.bool() {
                    engine.attach_audio(legs[i].id)
                } else {
                    engine.bridge(legs[i].id, peers[i])
                };
                // A re-INVITE may have given the legs different ptimes.
                assert!(
                    matches!(
                        r,
                        Ok(()) | Err(Error::BridgeMismatch { .. } | Error::RingFull { .. })
                    ),
                    "{r:?}"
                );
            }
            7 => {
                // Application frames: any length (up to past the slot), any content, for
                // a leg or a dead id; refused with a typed error or counted by the lane.
                let target = inp.below(legs.len() + ghosts.len());
                let id = legs
                    .get(target)
                    .map_or_else(|| ghosts[target - legs.len()], |l| l.id);
                let n = match inp.u8() % 4 {
                    0 => inp.below(3000),
                    1 => 160,
                    2 => 320,
                    _ => 960,
                };
                let fill = inp.u16() as i16;
                let n = n.min(pcm.len());
                pcm[..n].fill(fill);
                let r = audio.write(id, &pcm[..n]);
                if n > audio.max_frame_samples() {
                    assert!(r.is_err(), "a frame past the slot is refused");
                }
            }
            3 => {
                // Raw bytes: mostly not RTP at all.
                let target = inp.below(legs.len() + ghosts.len());
                let len = inp.below(200);
                let raw = inp.bytes(len);
                let id = legs
                    .get(target)
                    .map_or_else(|| ghosts[target - legs.len()], |l| l.id);
                push(&mut ingress, &mut legs, &mut tally, id, raw, now_ns);
            }
            4 => {
                // A re-INVITE: new ptime, same codecs.
                let i = inp.below(legs.len());
                let mut p = legs[i].params.clone();
                p.ptime = inp.pick(&PTIMES);
                if engine.update_media_session(legs[i].id, p.clone()).is_ok() {
                    legs[i].params = p;
                }
            }
            5 => {
                let i = inp.below(legs.len());
                let digit = inp.pick(&['1', '9', '*', '#', 'A', 'x']);
                let _ = engine.send_dtmf(legs[i].id, digit, u32::from(inp.u16()));
            }
            _ => {
                let target = inp.below(legs.len() + ghosts.len());
                let Some(leg) = legs.get_mut(target) else {
                    let id = ghosts[target - legs.len()];
                    let n = write_rtp(&mut inp, &mut pkt, 0, 0, 0, 0);
                    push(&mut ingress, &mut legs, &mut tally, id, &pkt[..n], now_ns);
                    continue;
                };
                let pt = match inp.u8() % 8 {
                    0 => TELEPHONE_EVENT_PT,
                    1 => CN_PT,
                    2 => inp.u8() & 0x7F,
                    3 => {
                        if leg.params.tx == CodecSpec::PCMU {
                            8
                        } else {
                            0
                        }
                    }
                    _ => leg.params.tx.payload_type.get(),
                };
                // Mostly in-order streams, with reordering, jumps, wraps and SSRC changes.
                let dseq = match inp.u8() % 8 {
                    0 => inp.u16(),
                    1 => (inp.u8() as i8) as u16,
                    _ => 1,
                };
                leg.seq = leg.seq.wrapping_add(dseq);
                let step =
                    (leg.params.tx.codec.info().clock_rate_hz / 1000) * leg.params.ptime.ms();
                let dts = match inp.u8() % 8 {
                    0 => inp.u32(),
                    1 => (i32::from(inp.u8() as i8) * step as i32) as u32,
                    2 => 0,
                    _ => step,
                };
                leg.ts = leg.ts.wrapping_add(dts);
                if inp.u8().is_multiple_of(32) {
                    leg.ssrc = inp.u32();
                }
                let (seq, ts, ssrc) = (leg.seq, leg.ts, leg.ssrc);
                let id = leg.id;
                let n = write_rtp(&mut inp, &mut pkt, pt, seq, ts, ssrc);
                let arrival = match inp.u8() % 8 {
                    0 => 0,
                    1 => now_ns.wrapping_add(u64::from(inp.u16()) * 100_000),
                    2 => inp.u64(),
                    _ => now_ns,
                };
                push(&mut ingress, &mut legs, &mut tally, id, &pkt[..n], arrival);
            }
        }
    }

    engine.step(3).expect("step");
    tally.ticks += 3;
    drain(&mut egress, &legs);
    check(&engine, &legs, &tally);

    // Teardown: every slot of every slab comes back.
    for leg in &legs {
        engine
            .destroy_media_session(leg.id)
            .expect("a live session can be destroyed");
    }
    engine.step(5).expect("step");
    drain(&mut egress, &legs);
    read_app(&mut audio, &legs, true);
    engine.step(5).expect("step");
    drain(&mut egress, &legs);
    read_app(&mut audio, &legs, true);
    assert_eq!(
        audio.free_write_slots(),
        audio.capacity(),
        "application frame slots written conserved"
    );
    assert_eq!(audio.pending(), 0, "application frame slots read conserved");
    assert_eq!(
        engine.free_session_slots(),
        SESSIONS_PER_LANE,
        "session slots conserved"
    );
    assert_eq!(ingress.free_slots(), packet_slots, "packet slots conserved");
    assert_eq!(
        egress.free_slots(),
        egress.capacity(),
        "egress slots conserved"
    );
    let lane = engine.lane_stats(0).expect("lane 0");
    assert_eq!(
        lane.frame_slots_free, frame_slots_free,
        "frame slots conserved"
    );
    assert_eq!(lane.internal_ring_full, 0, "internal rings never overflow");
}

/// Writes a packet into `pkt`: a valid header (with fuzzed flags: CSRCs, extension,
/// padding) over a payload of fuzzed length and bytes. Returns its length.
fn write_rtp(inp: &mut Input, pkt: &mut [u8], pt: u8, seq: u16, ts: u32, ssrc: u32) -> usize {
    let h = RtpHeader {
        marker: inp.u8().is_multiple_of(8),
        payload_type: pt,
        sequence: seq,
        timestamp: ts,
        ssrc,
    };
    let len = match inp.u8() % 4 {
        0 => inp.below(pkt.len() - 12),
        _ => inp.pick(&PAYLOAD_LENS),
    }
    .min(pkt.len() - 12);
    write_header(&h, pkt).expect("12 bytes fit");
    let flags = inp.u8();
    if flags & 0xE0 == 0xE0 {
        // Corrupt the first byte: version, padding, extension, CSRC count.
        pkt[0] = inp.u8();
    }
    let fill = inp.bytes(len);
    pkt[12..12 + fill.len()].copy_from_slice(fill);
    // The rest: a constant byte (a silence pattern, or a repeated Opus TOC byte).
    pkt[12 + fill.len()..12 + len].fill(flags);
    12 + len
}

fn push(
    ingress: &mut media_core::IngressHandle,
    legs: &mut [Leg],
    tally: &mut Tally,
    id: SessionId,
    bytes: &[u8],
    arrival_ns: u64,
) {
    match ingress.push_at(id, bytes, arrival_ns) {
        Ok(()) => {
            tally.pushed_ok += 1;
            if let Some(l) = legs.iter_mut().find(|l| l.id == id) {
                l.pushed_ok += 1;
            }
        }
        Err(_) => tally.pushed_err += 1,
    }
}

/// The application reads every frame the lane handed it (or, when `all` is false, leaves
/// them, so the lane runs out of slots): each names a leg and is one frame of its codec.
fn read_app(audio: &mut media_core::AudioHandle, legs: &[Leg], all: bool) {
    if !all {
        return;
    }
    while let Some(f) = audio.read() {
        let id = f.session();
        let leg = legs
            .iter()
            .find(|l| l.id == id)
            .expect("application frame for a session that exists");
        // One frame of the leg's rate at any ptime (a re-INVITE may have changed it while
        // frames of the old one were waiting to be read).
        let rate = leg.params.sample_rate().hz();
        let len = f.len();
        assert!(
            PTIMES
                .iter()
                .any(|p| len == (rate / 1000 * p.ms()) as usize),
            "{len} samples is no frame of {id:?}'s codec"
        );
    }
}

fn drain(egress: &mut media_core::EgressHandle, legs: &[Leg]) {
    let mut buf = [0u8; 1600];
    while let Some(p) = egress.pop() {
        let id = p.session();
        assert!(
            legs.iter().any(|l| l.id == id),
            "egress packet for a session that does not exist: {id:?}"
        );
        let n = p.copy_to(&mut buf).expect("egress packets fit 1600 bytes");
        assert!(n >= 12, "egress packet shorter than an RTP header");
        let h = p.header();
        let leg = legs.iter().find(|l| l.id == id).expect("checked");
        let pt = h.payload_type;
        // Audio, RFC 4733 events, and RFC 3389 SIDs (DTX, keepalives) where negotiated.
        let cn = leg.params.comfort_noise_send_pt.map(|p| p.get());
        assert!(
            pt == leg.params.tx.payload_type.get() || pt == TELEPHONE_EVENT_PT || Some(pt) == cn,
            "session {id:?} sent PT {pt}, negotiated {}",
            leg.params.tx.payload_type.get()
        );
    }
}

/// The counter identities that hold after every whole tick (the jitter stage drains the
/// ingress ring completely each tick):
/// - every push is refused (`ingress_full` + `ingress_too_large` +
///   `ingress_rate_limited` + `ingress_unknown`) or accepted, and every accepted packet is classified exactly
///   once: malformed, unknown session, a second source's packet dropped before it took
///   over (`foreign_ssrc_drops`), or one of a session's `rx_packets` (audio),
///   `rx_unsupported_pt`, `rx_dtmf_packets`, `rx_cn_packets`;
/// - a session counts no more than was pushed to it;
/// - an audio packet has at most one fate after sequence tracking: `jb_duplicates`,
///   `rx_empty_payloads`, `rx_late`, `jb_overflows`, `rx_undecodable`, or decoded
///   (`packets_decoded`); the rest are held, were flushed by a resync or relayed undecoded;
///   sequence tracking's `rx_duplicates` are audio, event or SID copies, so with them the
///   fates are at most the session's audio, event and SID packets;
/// - at most one frame per tick per session, and no internal ring ever overflows.
fn check(engine: &MediaEngine, legs: &[Leg], tally: &Tally) {
    let lane = engine.lane_stats(0).expect("lane 0");
    assert_eq!(lane.internal_ring_full, 0, "internal ring overflowed");
    assert_eq!(
        lane.ingress_full
            + lane.ingress_too_large
            + lane.ingress_rate_limited
            + lane.ingress_unknown,
        tally.pushed_err,
        "refused pushes are counted"
    );
    // (A second source's packets dropped until it takes over count once, lane-wide.)
    let mut classified = lane.malformed + lane.unknown_session + lane.foreign_ssrc_drops;
    for leg in legs {
        let s = engine.session_stats(leg.id).expect("live session");
        let mine = s.rx_packets + s.rx_unsupported_pt + s.rx_dtmf_packets + s.rx_cn_packets;
        assert!(
            mine <= leg.pushed_ok,
            "session {:?} counted {mine} packets, {} were pushed to it: {s:?}",
            leg.id,
            leg.pushed_ok
        );
        classified += mine;
        let fates = s.jb_duplicates
            + s.rx_empty_payloads
            + s.rx_late
            + s.jb_overflows
            + s.rx_undecodable
            + s.packets_decoded;
        assert!(
            fates <= s.rx_packets,
            "session {:?}: {fates} packet fates for {} packets: {s:?}",
            leg.id,
            s.rx_packets
        );
        // The sequence tracking's duplicates are audio, RFC 4733 event or RFC 3389 SID
        // copies (they share the sequence space).
        let seen = s.rx_packets + s.rx_dtmf_packets + s.rx_cn_packets;
        assert!(
            s.rx_duplicates + fates <= seen,
            "session {:?}: {} duplicates and {fates} fates for {seen} packets: {s:?}",
            leg.id,
            s.rx_duplicates
        );
        let frames = s.frames_decoded + s.frames_relayed + s.frames_missing + s.slab_exhausted;
        assert!(
            frames <= tally.ticks + 2,
            "session {:?}: {frames} frames in {} ticks: {s:?}",
            leg.id,
            tally.ticks
        );
        assert!(
            s.tx_packets <= 2 * tally.ticks + 4,
            "session {:?}: {} packets sent in {} ticks",
            leg.id,
            s.tx_packets,
            tally.ticks
        );
    }
    assert_eq!(
        classified, tally.pushed_ok,
        "every accepted packet is classified exactly once: {lane:?}"
    );
}
