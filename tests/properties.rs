//! Property tests (issue #7, hostile input and faults): invariants of the receive path, the
//! jitter buffer, the engine's counters and its slot storage, over generated sequences of
//! packets and operations. Case counts keep the whole file well under 30 s in a debug build.

use std::cell::RefCell;
use std::collections::HashSet;

use media_core::buffer::adaptive::{AdaptiveBuffer, Insert, JitterConfig, Next};
use media_core::rtp::{write_header, RtpHeader};
use media_core::runtime::slab::{Slab, Token};
use media_core::session::receive::{
    PacketDecoder, ReceiveChannel, ReceiveConfig, StretchPool, JITTER_PACKETS,
};
use media_core::{
    ClockMode, CodecSpec, DialogId, EgressHandle, EngineConfig, MediaEngine, MediaSessionParams,
    PayloadType, Ptime, SessionId,
};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------
// Receive channel and jitter buffer
// ---------------------------------------------------------------------------------------

/// One step of a receive stream.
#[derive(Debug, Clone)]
enum RxOp {
    /// A packet: timestamp step in frames from the previous one (negative: reordered or
    /// late), duration in frames (0..=3), marker bit, arrival jitter in ms.
    Packet {
        dts_frames: i8,
        dur_frames: u8,
        marker: bool,
        jitter_ms: u8,
        corrupt: bool,
    },
    /// One frame period of playout.
    Frame,
    /// An SSRC change: the stream is reset.
    Reset,
}

fn rx_op() -> impl Strategy<Value = RxOp> {
    prop_oneof![
        4 => (-4i8..8, 0u8..4, any::<bool>(), 0u8..120, any::<bool>()).prop_map(
            |(dts_frames, dur_frames, marker, jitter_ms, corrupt)| RxOp::Packet {
                dts_frames,
                dur_frames,
                marker,
                jitter_ms,
                corrupt: corrupt && dur_frames % 2 == 1,
            }
        ),
        4 => Just(RxOp::Frame),
        1 => Just(RxOp::Reset),
    ]
}

/// Each packet's fate as the channel reports it.
#[derive(Default)]
struct Ledger {
    /// Inserted, not yet ended: what the buffer must hold between calls.
    live: HashSet<u32>,
    /// Handed to the decoder.
    played: HashSet<u32>,
    inserted: u64,
    handed_back: u64,
    released: u64,
    relayed: u64,
}

impl Ledger {
    fn end(&mut self, id: u32) {
        assert!(
            self.live.remove(&id),
            "packet {id} ended twice or was never held"
        );
    }
}

struct Decoder<'a> {
    ledger: &'a RefCell<Ledger>,
    corrupt: &'a HashSet<u32>,
}

impl PacketDecoder<u32> for Decoder<'_> {
    fn decode(&mut self, item: &u32, out: &mut [i16]) -> usize {
        let mut l = self.ledger.borrow_mut();
        assert!(
            l.live.contains(item),
            "decoding packet {item}, which is not held"
        );
        assert!(l.played.insert(*item), "packet {item} played twice");
        if self.corrupt.contains(item) {
            return 0;
        }
        for (k, s) in out.iter_mut().enumerate() {
            *s = if (k / 20) % 2 == 0 { 8000 } else { -8000 };
        }
        out.len()
    }
}

/// Drives a PCMU-like receive channel (8 kHz, 20 ms frames) through `ops`, checking after
/// every step the invariants of [`receive_channel_plays_each_packet_at_most_once`].
fn drive_channel(ops: &[RxOp], relay_preferred: bool) {
    const FRAME: usize = 160;
    let mut ch: ReceiveChannel<u32> = ReceiveChannel::new(ReceiveConfig {
        jitter: JitterConfig::default(),
        frame_samples: FRAME,
        sample_rate_hz: 8000,
        max_packet_samples: 480,
    });
    let mut pool = StretchPool::new(60);
    let ledger = RefCell::new(Ledger::default());
    let mut corrupt = HashSet::new();
    let mut out = [0i16; FRAME];
    let mut ts = 1000u32;
    let mut now_ms = 1000u64;
    for (id, op) in (0u32..).zip(ops) {
        match *op {
            RxOp::Packet {
                dts_frames,
                dur_frames,
                marker,
                jitter_ms,
                corrupt: bad,
            } => {
                ts = ts.wrapping_add((i32::from(dts_frames) * FRAME as i32) as u32);
                let samples = usize::from(dur_frames) * FRAME;
                if samples == 0 {
                    // The lane never inserts a payload that carries no audio.
                    continue;
                }
                if bad {
                    corrupt.insert(id);
                }
                {
                    let mut l = ledger.borrow_mut();
                    l.live.insert(id);
                    l.inserted += 1;
                }
                let arrival = (now_ms + u64::from(jitter_ms)) * 1_000_000;
                let mut release = |t: u32| {
                    let mut l = ledger.borrow_mut();
                    l.end(t);
                    l.released += 1;
                };
                match ch.insert(ts, samples, marker, arrival, id, &mut release) {
                    Insert::Late(t) | Insert::Duplicate(t) => {
                        assert_eq!(t, id, "insert hands back the packet given");
                        let mut l = ledger.borrow_mut();
                        l.end(t);
                        l.handed_back += 1;
                    }
                    Insert::Stored | Insert::Resynced | Insert::Overflowed(_) => {}
                }
            }
            RxOp::Frame => {
                now_ms += 20;
                let mut release = |t: u32| {
                    let mut l = ledger.borrow_mut();
                    l.end(t);
                    l.released += 1;
                };
                let mut dec = Decoder {
                    ledger: &ledger,
                    corrupt: &corrupt,
                };
                // The test decoder cannot feed codes, so every frame is decoded.
                let rep = ch.get_frame(
                    &mut out,
                    &mut pool,
                    relay_preferred,
                    relay_preferred,
                    &mut dec,
                    &mut release,
                );
                if let Some(t) = rep.relay {
                    let mut l = ledger.borrow_mut();
                    assert!(
                        l.played.contains(&t),
                        "relayed packet {t} was never decoded"
                    );
                    l.end(t);
                    l.relayed += 1;
                }
            }
            RxOp::Reset => {
                let mut release = |t: u32| {
                    let mut l = ledger.borrow_mut();
                    l.end(t);
                    l.released += 1;
                };
                ch.reset(&mut release);
            }
        }
        let held = ch.buffer.len();
        let l = ledger.borrow();
        assert!(
            held <= JITTER_PACKETS,
            "jitter buffer holds {held} > {JITTER_PACKETS}"
        );
        assert_eq!(
            l.live.len(),
            held,
            "the buffer holds exactly the unended packets"
        );
        // The identity of the receive channel's outcomes (`Insert` and the release
        // callback): every inserted packet is handed back by `insert` (late or duplicate),
        // released (dropped on overflow, resync, staleness or reset, or consumed after
        // decoding), relayed to the caller in `FrameReport::relay`, or still held.
        assert_eq!(
            l.inserted,
            l.handed_back + l.released + l.relayed + held as u64,
            "inserted = handed back + released + relayed + held"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// A packet is played (decoded) at most once, ends exactly once, and the buffer holds
    /// at most its capacity, whatever the order, duplication, duration and timing of the
    /// stream.
    #[test]
    fn receive_channel_plays_each_packet_at_most_once(
        ops in proptest::collection::vec(rx_op(), 1..300),
        relay_preferred in any::<bool>(),
    ) {
        drive_channel(&ops, relay_preferred);
    }

    /// A small jitter buffer (capacity 4) fed arbitrary timestamps and durations never
    /// holds more than 4 packets and never hands out a packet twice.
    #[test]
    fn jitter_buffer_never_exceeds_its_capacity(
        ops in proptest::collection::vec(
            (0u8..4, any::<u32>(), 0u32..2000, any::<bool>()), 1..300),
    ) {
        const N: usize = 4;
        let mut buf: AdaptiveBuffer<u32, N> = AdaptiveBuffer::new(JitterConfig::default());
        let held: RefCell<HashSet<u32>> = RefCell::new(HashSet::new());
        let mut taken: HashSet<u32> = HashSet::new();
        let mut ts = 0u32;
        for (id, (kind, r, dur, marker)) in (0u32..).zip(ops) {
            let mut release = |t: u32| assert!(held.borrow_mut().remove(&t), "released {t} twice");
            match kind {
                0 => {
                    if let Next::Decode { item, .. } = buf.next(160) {
                        prop_assert!(taken.insert(item), "packet {item} played twice");
                        prop_assert!(held.borrow_mut().remove(&item));
                    }
                }
                1 => {
                    buf.drop_stale(&mut release);
                }
                _ => {
                    // Mostly a continuing stream, sometimes anywhere.
                    ts = if r % 4 == 0 { r } else { ts.wrapping_add(r % 640) };
                    held.borrow_mut().insert(id);
                    match buf.insert(ts, dur, marker, u64::from(r) * 1000, id, &mut release) {
                        Insert::Late(t) | Insert::Duplicate(t) => {
                            prop_assert_eq!(t, id);
                            held.borrow_mut().remove(&t);
                        }
                        _ => {}
                    }
                }
            }
            prop_assert!(buf.len() <= N, "holds {} > {}", buf.len(), N);
            prop_assert_eq!(buf.len(), held.borrow().len());
        }
    }
}

// ---------------------------------------------------------------------------------------
// Engine counters and slots
// ---------------------------------------------------------------------------------------

const SESSIONS: usize = 6;

fn engine() -> MediaEngine {
    let e = MediaEngine::new(EngineConfig {
        clock: ClockMode::Virtual,
        sessions_per_lane: SESSIONS,
        raise_priority: false,
        ..Default::default()
    })
    .expect("valid config");
    e.start().expect("starts");
    e
}

fn session_params(codec: CodecSpec) -> MediaSessionParams {
    let mut p = MediaSessionParams::new(codec, Ptime::MS_20);
    p.telephone_event_pt = PayloadType::new(101);
    if codec != CodecSpec::G722 {
        p.comfort_noise_pt = PayloadType::new(13);
    }
    p
}

/// A packet to push: to which session, with which payload type, sequence and timestamp
/// steps, payload length; or garbage.
#[derive(Debug, Clone)]
enum PushOp {
    Rtp {
        to: usize,
        pt: u8,
        dseq: i8,
        dts_frames: i8,
        len: usize,
        ssrc: u8,
    },
    Garbage {
        to: usize,
        bytes: Vec<u8>,
    },
    Step(u8),
}

fn push_op() -> impl Strategy<Value = PushOp> {
    prop_oneof![
        6 => (0usize..5, prop::sample::select(vec![0u8, 8, 9, 13, 101, 96, 0]), -3i8..6,
              -3i8..6, prop::sample::select(vec![0usize, 1, 4, 80, 160, 320, 2000]), 0u8..3)
            .prop_map(|(to, pt, dseq, dts_frames, len, ssrc)| PushOp::Rtp {
                to, pt, dseq, dts_frames, len, ssrc,
            }),
        1 => (0usize..5, proptest::collection::vec(any::<u8>(), 0..40))
            .prop_map(|(to, bytes)| PushOp::Garbage { to, bytes }),
        3 => (1u8..4).prop_map(PushOp::Step),
    ]
}

fn drain(eg: &mut EgressHandle) {
    while eg.pop().is_some() {}
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// The lane's counters add up after every whole tick (the jitter stage drains the
    /// ingress ring each tick). The exact identity the code defines:
    /// `pushes = ingress_full + ingress_too_large + ingress_rate_limited + ingress_unknown`
    /// (refused at the handle) `+ malformed +
    /// unknown_session + foreign_ssrc_drops + Σ sessions (rx_packets + rx_unsupported_pt +
    /// rx_dtmf_packets + rx_cn_packets)` (each accepted packet classified once). Within `rx_packets` the
    /// fates are exclusive but not all counted (packets flushed by a resync, still held,
    /// or relayed undecoded have no counter), so the per-session law is an
    /// inequality: `jb_duplicates + rx_empty_payloads + rx_late + jb_overflows +
    /// rx_undecodable + packets_decoded <= rx_packets`, and with the sequence tracking's
    /// `rx_duplicates` (audio, event and SID copies) added, `<= rx_packets +
    /// rx_dtmf_packets + rx_cn_packets`.
    #[test]
    fn engine_counters_add_up(ops in proptest::collection::vec(push_op(), 1..120)) {
        let e = engine();
        let (a, b) = e.create_call(
            (DialogId(1), session_params(CodecSpec::PCMU)),
            (DialogId(2), session_params(CodecSpec::PCMA)),
        ).expect("call");
        let (c, d) = e.create_call(
            (DialogId(3), session_params(CodecSpec::G722)),
            (DialogId(4), session_params(CodecSpec::PCMU)),
        ).expect("call");
        // The fifth target is an id no session has.
        let ids = [a.id, b.id, c.id, d.id, SessionId::from_parts(0, SESSIONS as u32 - 1, 9)];
        let (mut ing, mut eg) = e.take_rtp_handles(0).expect("handles");
        let (mut pushed, mut refused) = (0u64, 0u64);
        let mut seq = [0u16; 5];
        let mut ts = [0u32; 5];
        let mut pkt = vec![0u8; 12 + 2000];
        for op in ops {
            let res = match op {
                PushOp::Rtp { to, pt, dseq, dts_frames, len, ssrc } => {
                    seq[to] = seq[to].wrapping_add(dseq as u16);
                    ts[to] = ts[to].wrapping_add((i32::from(dts_frames) * 160) as u32);
                    let h = RtpHeader {
                        marker: false,
                        payload_type: pt,
                        sequence: seq[to],
                        timestamp: ts[to],
                        ssrc: u32::from(ssrc),
                    };
                    write_header(&h, &mut pkt).expect("header fits");
                    ing.push_at(ids[to], &pkt[..12 + len], 0)
                }
                PushOp::Garbage { to, bytes } => ing.push_at(ids[to], &bytes, 0),
                PushOp::Step(n) => {
                    e.step(u64::from(n)).expect("step");
                    drain(&mut eg);
                    continue;
                }
            };
            match res {
                Ok(()) => pushed += 1,
                Err(_) => refused += 1,
            }
        }
        e.step(1).expect("step");
        let lane = e.lane_stats(0).expect("lane");
        prop_assert_eq!(
            lane.ingress_full + lane.ingress_too_large + lane.ingress_rate_limited
                + lane.ingress_unknown,
            refused
        );
        let mut classified = lane.malformed + lane.unknown_session + lane.foreign_ssrc_drops;
        for id in &ids[..4] {
            let s = e.session_stats(*id).expect("live");
            classified += s.rx_packets + s.rx_unsupported_pt + s.rx_dtmf_packets + s.rx_cn_packets;
            // Each audio packet meets at most one fate after the jitter stage's sequence
            // tracking; that tracking's duplicates are audio, RFC 4733 event or RFC 3389
            // SID copies (they share the sequence space).
            let fates = s.jb_duplicates + s.rx_empty_payloads + s.rx_late + s.jb_overflows
                + s.rx_undecodable + s.packets_decoded;
            prop_assert!(fates <= s.rx_packets, "{} fates for {} packets: {:?}", fates, s.rx_packets, s);
            let seen = s.rx_packets + s.rx_dtmf_packets + s.rx_cn_packets;
            prop_assert!(
                s.rx_duplicates + fates <= seen,
                "{} duplicates and {} fates for {} packets: {:?}", s.rx_duplicates, fates, seen, s
            );
        }
        prop_assert_eq!(classified, pushed, "every accepted packet classified once: {:?}", lane);
        prop_assert_eq!(lane.internal_ring_full, 0);
    }

    /// Slots are conserved in the engine: after any sequence of creates, destroys, pushes,
    /// attachments to the application audio handle, bridges, application frames (of any
    /// length, read or left unread) and ticks, destroying what is left returns every
    /// session slot, packet slot, egress slot, frame slot and application frame slot
    /// (free + in use = capacity, with nothing in use).
    #[test]
    fn engine_slots_are_conserved(
        ops in proptest::collection::vec((0u8..7, 0usize..SESSIONS, 0u8..3), 1..60),
    ) {
        let e = engine();
        let (mut ing, mut eg) = e.take_rtp_handles(0).expect("handles");
        let mut audio = e.take_audio_handle(0).expect("audio handle");
        let app_slots = audio.capacity();
        let packet_slots = ing.free_slots();
        e.step(2).expect("step");
        let frame_slots = e.lane_stats(0).expect("lane").frame_slots_free;
        let codecs = [CodecSpec::PCMU, CodecSpec::PCMA, CodecSpec::G722];
        let mut live: Vec<Option<SessionId>> = vec![None; SESSIONS];
        let mut dialog = 0u64;
        let mut seq = 0u16;
        let mut pkt = vec![0xFFu8; 12 + 160];
        let pkt_pcm = [300i16; 320];
        for (kind, at, codec) in ops {
            match (kind, live[at]) {
                (0, None) => {
                    dialog += 1;
                    let h = e.create_media_session(
                        DialogId(dialog), session_params(codecs[usize::from(codec)]));
                    live[at] = h.ok().map(|h| h.id);
                }
                (0, Some(id)) | (1, Some(id)) => {
                    e.destroy_media_session(id).expect("destroy");
                    live[at] = None;
                }
                (4, Some(id)) => {
                    // Attached to the application, bridged to the next live session, or
                    // detached / unbridged.
                    match codec {
                        0 => e.attach_audio(id).expect("attach"),
                        1 => {
                            if let Some(other) = live.iter().flatten().find(|o| **o != id) {
                                e.bridge(id, *other).expect("same lane, same ptime");
                            }
                        }
                        _ if seq.is_multiple_of(2) => e.detach_audio(id).expect("detach"),
                        _ => e.unbridge(id).expect("unbridge"),
                    }
                }
                (5, Some(id)) => {
                    // Application frames: a G.711 or G.722 frame, or one of a wrong length.
                    let n = [160usize, 320, 77][usize::from(codec)];
                    for _ in 0..3 {
                        let _ = audio.write(id, &pkt_pcm[..n]);
                    }
                }
                (6, _) => {
                    // The application reads what is there (or leaves it, other times).
                    while audio.read().is_some() {}
                }
                (2, Some(id)) => {
                    // A few packets, so jitter buffers hold slots when it is destroyed.
                    for _ in 0..3 {
                        seq = seq.wrapping_add(1);
                        let h = RtpHeader {
                            marker: false,
                            payload_type: 0,
                            sequence: seq,
                            timestamp: u32::from(seq) * 160,
                            ssrc: 5,
                        };
                        write_header(&h, &mut pkt).expect("header fits");
                        let _ = ing.push_at(id, &pkt, 0);
                    }
                }
                _ => {
                    e.step(1 + u64::from(codec)).expect("step");
                    drain(&mut eg);
                }
            }
        }
        for id in live.iter().flatten() {
            e.destroy_media_session(*id).expect("destroy");
        }
        for _ in 0..3 {
            e.step(2).expect("step");
            drain(&mut eg);
            while audio.read().is_some() {}
        }
        prop_assert_eq!(e.free_session_slots(), SESSIONS, "session slots");
        prop_assert_eq!(audio.free_write_slots(), app_slots, "application frame slots, written");
        prop_assert_eq!(audio.pending(), 0, "application frame slots, read");
        prop_assert_eq!(ing.free_slots(), packet_slots, "packet slots");
        prop_assert_eq!(eg.free_slots(), eg.capacity(), "egress slots");
        prop_assert_eq!(e.lane_stats(0).expect("lane").frame_slots_free, frame_slots, "frame slots");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// A slab's tokens are conserved under any sequence of takes and puts across sessions
    /// and session destroys: free + in use = capacity, and no slot is held twice.
    #[test]
    fn slab_slots_are_conserved(
        capacity in 1usize..40,
        ops in proptest::collection::vec((0u8..3, 0usize..4), 0..200),
    ) {
        let (slab, tokens) = Slab::new(capacity, |i| i);
        let mut free: Vec<Token> = tokens;
        let mut sessions: Vec<Vec<Token>> = (0..4).map(|_| Vec::new()).collect();
        for (kind, s) in ops {
            match kind {
                0 => {
                    if let Some(mut t) = free.pop() {
                        slab.with_mut(&mut t, |v| *v += 1);
                        sessions[s].push(t);
                    }
                }
                1 => {
                    if let Some(t) = sessions[s].pop() {
                        free.push(t);
                    }
                }
                _ => free.append(&mut sessions[s]),
            }
            let in_use: usize = sessions.iter().map(Vec::len).sum();
            prop_assert_eq!(free.len() + in_use, slab.capacity());
            let distinct: HashSet<u32> =
                free.iter().chain(sessions.iter().flatten()).map(Token::index).collect();
            prop_assert_eq!(distinct.len(), capacity, "a slot is held twice");
        }
    }
}
