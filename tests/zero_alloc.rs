//! Non-negotiable 1: after warm-up, lane threads never allocate or free.
//!
//! A counting global allocator counts allocations and frees made on threads marked as
//! lane threads (via the engine's thread-start hook, or around `step` for the virtual
//! clock). Many sessions run through every codec and DSP path — PCMU↔PCMA transcoding,
//! same-codec relay, the gain DSP path — with reordered, lost, duplicated, malformed and
//! unknown-session packets and a flooding peer, while the control plane creates, updates
//! and destroys sessions. The transport's ingress pushes (slot hand-off, the per-session
//! rate limit) are counted too, and so is an endpoint application reading and writing
//! the audio of sessions attached to the lanes' audio handles (PCMU with an echo
//! canceller and DTMF detection, G.722, Opus). Every new hot-path feature extends this
//! test.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use media_core::processing::audio::DspConfig;
use media_core::runtime::thread::LaneThread;
use media_core::{
    AudioHandle, ClockMode, CodecSpec, DialogId, EgressHandle, EngineConfig, IngressHandle,
    MediaEngine, MediaSessionParams, Ptime, SessionId, Topology,
};

struct Counting;

thread_local! {
    static ON_LANE: Cell<bool> = const { Cell::new(false) };
}
static ALLOCS: AtomicU64 = AtomicU64::new(0);
static FREES: AtomicU64 = AtomicU64::new(0);

fn on_lane() -> bool {
    ON_LANE.try_with(|c| c.get()).unwrap_or(false)
}

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if on_lane() {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        if on_lane() {
            FREES.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        if on_lane() {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
            FREES.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The counters are process-wide: the two tests must not overlap (lane threads exiting at
/// the end of one would count in the other's window).
#[allow(clippy::disallowed_types)] // test harness, not real-time code
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn mark_lane_thread(_: LaneThread) {
    ON_LANE.with(|c| c.set(true));
}

fn counts() -> (u64, u64) {
    (
        ALLOCS.load(Ordering::Relaxed),
        FREES.load(Ordering::Relaxed),
    )
}

thread_local! {
    /// Legs that receive G.722 (the traffic generator sends them PT 9).
    static G722_LEGS: std::cell::RefCell<std::collections::HashSet<SessionId>> = Default::default();
    /// Legs whose input goes quiet for a second in every two (a voice chain's VAD finds
    /// the silence; the bridged leg's DTX sends SID frames through it).
    static QUIET_LEGS: std::cell::RefCell<std::collections::HashSet<SessionId>> = Default::default();
    /// Legs quiet in the other second of every two (the B legs of those calls): each leg's
    /// input is then never the other's, which an echo canceller would take for echo and
    /// cancel (the generator sends every leg the same tone and the same noise).
    static QUIET_LATE_LEGS: std::cell::RefCell<std::collections::HashSet<SessionId>> = Default::default();
    /// G.711 legs whose sender goes into DTX with comfort noise for 2.6 s in every 4 s: a
    /// SID frame, then nothing (past the jitter buffer's 2 s idle timeout), then audio
    /// again; the lane plays comfort noise through the silence.
    static CN_DTX_LEGS: std::cell::RefCell<std::collections::HashSet<SessionId>> = Default::default();
    /// A legs of relays (undecoded G.722, and PCMU) with comfort noise negotiated both
    /// ways, whose sender goes silent like `CN_DTX_LEGS`: B forwards A's SIDs.
    static SID_RELAY_LEGS: std::cell::RefCell<std::collections::HashSet<SessionId>> = Default::default();
    /// The G.711 ones among `SID_RELAY_LEGS`: PCMU relays whose B leg forwards the SIDs
    /// and then holds its comfort noise (`FrameSid::Silence`).
    static SID_RELAY_G711_LEGS: std::cell::RefCell<std::collections::HashSet<SessionId>> = Default::default();
    /// Legs that receive Opus (PT 111).
    static OPUS_LEGS: std::cell::RefCell<std::collections::HashSet<SessionId>> = Default::default();
    /// 50 frames of a tone as Opus packets (48 kHz, 20 ms), encoded once.
    static OPUS_FRAMES: Vec<Vec<u8>> = {
        let mut enc = opus::Encoder::new(48000, opus::Channels::Mono, opus::Application::Voip).unwrap();
        (0..50).map(|k| common::opus_tone_packet(&mut enc, k, 6000.0)).collect()
    };
}

/// 20 ms of quiet background noise (about -66 dBov) as µ-law or A-law.
fn quiet_frame(k: usize, alaw: bool) -> Vec<u8> {
    let pcm = background_noise(160, 30, 0x2545_F491 ^ k as u32);
    let mut out = vec![0u8; 160];
    if alaw {
        media_core::codec::audio::g711::alaw_encode(&pcm, &mut out);
    } else {
        media_core::codec::audio::g711::ulaw_encode(&pcm, &mut out);
    }
    out
}

/// 20 ms of a tone as G.722 (160 bytes).
fn g722_frame(k: usize) -> Vec<u8> {
    use media_core::codec::audio::g722::{G722Encoder, G722Mode};
    let mut enc = G722Encoder::new(G722Mode::Rate64k);
    let pcm = signal(k * 320, 320);
    let mut out = vec![0u8; 160];
    enc.encode(&pcm, &mut out);
    out
}

/// Creates `calls` bridged calls cycling through every path (all 16 ordered codec pairs
/// among PCMU, PCMA, G.722 and Opus appear, up to direction); returns (a, b) ids.
/// `voice`: a tenth of the calls run the whole voice-processing chain (the virtual-clock
/// test, which covers every path; the real-time test keeps to the cheaper ones so an
/// unoptimised build on two cores still keeps up with 20 ms of traffic per round).
fn make_calls(
    e: &MediaEngine,
    calls: usize,
    dialog0: u64,
    voice: bool,
) -> Vec<(SessionId, SessionId)> {
    (0..calls)
        .map(|i| {
            let d = dialog0 + 2 * i as u64;
            if i % 13 == 12 {
                // The remaining codec pairs (the others have their own branches): PCMA
                // against the wideband codecs, and same-codec G.722 and Opus relays.
                const PAIRS: [(CodecSpec, CodecSpec); 4] = [
                    (CodecSpec::PCMA, CodecSpec::G722),
                    (CodecSpec::PCMA, CodecSpec::OPUS),
                    (CodecSpec::G722, CodecSpec::G722),
                    (CodecSpec::OPUS, CodecSpec::OPUS),
                ];
                let (pa, pb) = PAIRS[(i / 13) % PAIRS.len()];
                let sid_relay = pa == pb && pa.codec == media_core::codec::Codec::G722;
                let leg = |spec: CodecSpec| {
                    let mut p = MediaSessionParams::new(spec, Ptime::MS_20);
                    if sid_relay {
                        p.comfort_noise_pt = media_core::PayloadType::new(13);
                        p.comfort_noise_send_pt = media_core::PayloadType::new(13);
                    }
                    if spec.codec == media_core::codec::Codec::Pcma {
                        // The generator sends PCMU or PCMA by slot parity.
                        p.with_rx(spec).with_rx(CodecSpec::PCMU)
                    } else {
                        p
                    }
                };
                let (ha, hb) = e
                    .create_call((DialogId(d), leg(pa)), (DialogId(d + 1), leg(pb)))
                    .unwrap();
                for (id, spec) in [(ha.id, pa), (hb.id, pb)] {
                    match spec.codec {
                        media_core::codec::Codec::Opus => {
                            OPUS_LEGS.with(|g| g.borrow_mut().insert(id));
                        }
                        media_core::codec::Codec::G722 => {
                            G722_LEGS.with(|g| g.borrow_mut().insert(id));
                        }
                        _ => {}
                    }
                }
                if sid_relay {
                    SID_RELAY_LEGS.with(|g| g.borrow_mut().insert(ha.id));
                }
                return (ha.id, hb.id);
            }
            if i % 11 == 10 {
                // Opus (48 kHz) <-> G.722 (16 kHz): both wideband codecs, resampling 48<->16.
                let (ha, hb) = e
                    .create_call(
                        (
                            DialogId(d),
                            MediaSessionParams::new(CodecSpec::OPUS, Ptime::MS_20),
                        ),
                        (
                            DialogId(d + 1),
                            MediaSessionParams::new(CodecSpec::G722, Ptime::MS_20),
                        ),
                    )
                    .unwrap();
                OPUS_LEGS.with(|g| g.borrow_mut().insert(ha.id));
                G722_LEGS.with(|g| g.borrow_mut().insert(hb.id));
                return (ha.id, hb.id);
            }
            if i % 7 == 6 {
                // Opus (48 kHz) <-> PCMU: libopus decode + encode, resampling both ways;
                // every other one runs Opus at 8 kHz (no resampler) or sends stereo.
                let mut opus = MediaSessionParams::new(CodecSpec::OPUS, Ptime::MS_20);
                match i % 21 {
                    6 => opus.opus.sample_rate = media_core::SampleRate::new(8000).unwrap(),
                    13 => opus.opus.stereo = true,
                    // The RNN noise suppressor (48 kHz only) and the echo canceller (at
                    // 48 kHz in 20 ms blocks: the 1,920-point transforms) on the Opus leg.
                    20 if voice => {
                        opus.dsp = DspConfig {
                            ns_rnn: Some(Default::default()),
                            aec: Some(Default::default()),
                            ..Default::default()
                        }
                    }
                    _ => {}
                }
                let (ha, hb) = e
                    .create_call(
                        (DialogId(d), opus),
                        (
                            DialogId(d + 1),
                            MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_20),
                        ),
                    )
                    .unwrap();
                OPUS_LEGS.with(|g| g.borrow_mut().insert(ha.id));
                return (ha.id, hb.id);
            }
            if i % 5 == 4 {
                // G.722 (16 kHz) <-> PCMU (8 kHz): decode, resample both ways, encode.
                let (ha, hb) = e
                    .create_call(
                        (
                            DialogId(d),
                            MediaSessionParams::new(CodecSpec::G722, Ptime::MS_20),
                        ),
                        (
                            DialogId(d + 1),
                            MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_20),
                        ),
                    )
                    .unwrap();
                G722_LEGS.with(|g| g.borrow_mut().insert(ha.id));
                return (ha.id, hb.id);
            }
            let (pa, pb) = match i % 4 {
                // Transcode PCMU -> PCMA and back.
                0 => (CodecSpec::PCMU, CodecSpec::PCMA),
                // Same codec: payload relay.
                1 => (CodecSpec::PCMU, CodecSpec::PCMU),
                2 => (CodecSpec::PCMA, CodecSpec::PCMA),
                // PCMA <-> PCMU with the DSP gain path (no relay).
                _ => (CodecSpec::PCMA, CodecSpec::PCMU),
            };
            let mut a = MediaSessionParams::new(pa, Ptime::MS_20);
            a.telephone_event_pt = media_core::PayloadType::new(101);
            a.telephone_event_send_pt = media_core::PayloadType::new(101);
            a.comfort_noise_pt = media_core::PayloadType::new(13);
            if i % 8 == 3 {
                a.dsp = DspConfig {
                    rx_gain_db: -6.0,
                    ..Default::default()
                };
            } else if voice && i % 8 == 7 {
                // The whole voice chain: echo canceller, DTMF detector, noise suppressor,
                // VAD, AGC (and gain), with the echo reference fed from the other leg.
                a.dsp = DspConfig {
                    rx_gain_db: -3.0,
                    ..DspConfig::voice()
                };
                // Whatever the generator sends it (PCMU or PCMA by slot parity) is
                // decoded, so the chain always has audio to process.
                a = a.with_rx(pa).with_rx(CodecSpec::PCMU);
            }
            let mut b = MediaSessionParams::new(pb, Ptime::MS_20)
                .with_rx(pb)
                .with_rx(CodecSpec::PCMU)
                .with_rx(CodecSpec::PCMA);
            b.telephone_event_pt = media_core::PayloadType::new(101);
            if i % 8 == 1 {
                b.comfort_noise_send_pt = media_core::PayloadType::new(13);
            }
            if voice && i % 8 == 7 {
                // DTX on the leg that sends the voice chain's audio (its VAD decides):
                // RFC 3389 SID frames through the silences of A's input.
                b.comfort_noise_send_pt = media_core::PayloadType::new(13);
                b.dtx = true;
            }
            let (ha, hb) = e
                .create_call((DialogId(d), a), (DialogId(d + 1), b))
                .unwrap();
            if voice && i % 8 == 7 {
                // Both legs, in turn: A's echo canceller, whose reference is B's audio,
                // would otherwise cancel A's input as the echo of the same tone.
                QUIET_LEGS.with(|g| g.borrow_mut().insert(ha.id));
                QUIET_LATE_LEGS.with(|g| g.borrow_mut().insert(hb.id));
            }
            if i % 8 == 1 {
                // A PCMU relay into a leg that negotiated comfort noise: A's SIDs are
                // forwarded, then B holds its comfort noise through the silence.
                SID_RELAY_LEGS.with(|g| g.borrow_mut().insert(ha.id));
                SID_RELAY_G711_LEGS.with(|g| g.borrow_mut().insert(ha.id));
            }
            if i % 8 == 0 || i % 8 == 5 {
                // A transcoded and a relayed leg with comfort noise negotiated.
                CN_DTX_LEGS.with(|g| g.borrow_mut().insert(ha.id));
            }
            (ha.id, hb.id)
        })
        .collect()
}

/// One 20 ms round of traffic: every leg of every call sends frame `k`, with reordering
/// (pairs swapped every 7th frame), loss (every 13th), duplicates (every 17th), a
/// malformed packet and an unknown-session packet per round.
/// Runs one ingress push as the transport thread would, counted like a lane thread: the
/// push path (slot hand-off, the per-session rate limit) must not allocate either.
fn as_transport<R>(f: impl FnOnce() -> R) -> R {
    ON_LANE.with(|c| c.set(true));
    let r = f();
    ON_LANE.with(|c| c.set(false));
    r
}

fn traffic_round(
    calls: &[(SessionId, SessionId)],
    k: usize,
    handles: &mut [(IngressHandle, EgressHandle)],
    pkt: &mut Vec<u8>,
    held: &mut Vec<(SessionId, Vec<u8>)>,
    stalled: &mut Vec<(SessionId, Vec<u8>)>,
) {
    // Simulated arrival time: 20 ms per round (the virtual clock's timeline).
    let now_ns = 1 + k as u64 * 20_000_000;
    // A packet beside session `s`'s audio (an event or SID on its stream: the round's
    // sequence number and 8 kHz timestamp), pushed as the transport would.
    let side = |ing: &mut IngressHandle,
                pkt: &mut Vec<u8>,
                s: SessionId,
                pt: u8,
                marker: bool,
                payload: &[u8]| {
        rtp(
            pt,
            k as u16,
            (160 * k) as u32,
            s.slot() + 1000,
            marker,
            payload,
            pkt,
        );
        let _ = as_transport(|| ing.push_at(s, pkt, now_ns));
    };
    for &(a, b) in calls {
        for s in [a, b] {
            let g722 = G722_LEGS.with(|g| g.borrow().contains(&s));
            let is_opus = OPUS_LEGS.with(|g| g.borrow().contains(&s));
            let quiet = (k % 100 >= 50 && QUIET_LEGS.with(|g| g.borrow().contains(&s)))
                || (k % 100 < 50 && QUIET_LATE_LEGS.with(|g| g.borrow().contains(&s)));
            let frame = if quiet {
                quiet_frame(k, s.slot() % 2 == 1)
            } else if is_opus {
                OPUS_FRAMES.with(|f| f[k % 50].clone())
            } else if g722 {
                g722_frame(k % 50)
            } else if s.slot() % 2 == 0 {
                ulaw_frame(k % 50)
            } else {
                alaw_frame(k % 50)
            };
            let pt = if is_opus {
                111
            } else if g722 {
                9
            } else if s.slot() % 2 == 0 {
                0
            } else {
                8
            };
            let ts_step = if is_opus { 960 } else { 160 };
            rtp(
                pt,
                k as u16,
                (ts_step * k) as u32,
                s.slot() + 1000,
                false,
                &frame,
                pkt,
            );
            let ing = &mut handles[s.lane()].0;
            if (60..190).contains(&(k % 200))
                && (CN_DTX_LEGS.with(|g| g.borrow().contains(&s))
                    || SID_RELAY_LEGS.with(|g| g.borrow().contains(&s)))
            {
                if k % 200 == 60 {
                    // The SID that starts the silence (level 50 dBov, one coefficient;
                    // never lost, so that every silence has one).
                    side(ing, pkt, s, 13, false, &[50, 120]);
                }
                continue;
            }
            if k.is_multiple_of(13) {
                continue;
            }
            if s.slot() % 7 == 3 && (300..380).contains(&(k % 400)) {
                // An outage of 80 packets: its loss leaves the 64-packet loss-pattern
                // window as one run (the sequence jump's path).
                continue;
            }
            if k.is_multiple_of(7) {
                held.push((s, pkt.clone()));
                continue;
            }
            // Every 40 rounds a fifth of the sessions stall for 4 rounds, then burst: the
            // receive path underruns (concealment), then sits above target (acceleration).
            if s.slot() % 5 == 0 && k % 40 < 4 {
                stalled.push((s, pkt.clone()));
                continue;
            }
            let _ = as_transport(|| ing.push_at(s, pkt, now_ns));
            if k.is_multiple_of(17) {
                let _ = as_transport(|| ing.push_at(s, pkt, now_ns + 1_000_000));
            }
            if k % 10 == 3 && s.slot() % 7 == 1 {
                // A second source's packet interleaved with the session's (forked early
                // media): dropped and counted until it would take over.
                pkt[8..12].copy_from_slice(&(s.slot() + 5000).to_be_bytes());
                let _ = as_transport(|| ing.push_at(s, pkt, now_ns));
            }
            if k.is_multiple_of(25) {
                // An RFC 4733 event packet, routed out of the audio path.
                side(ing, pkt, s, 101, true, &[1, 0x8a, 0, 160]);
                // An RFC 3389 SID frame (level 55 dBov, two reflection coefficients).
                side(ing, pkt, s, 13, false, &[55, 100, 140]);
            }
        }
    }
    for (s, p) in held.drain(..) {
        let _ = as_transport(|| handles[s.lane()].0.push_at(s, &p, now_ns + 15_000_000));
    }
    if k % 40 == 3 {
        for (s, p) in stalled.drain(..) {
            let _ = as_transport(|| handles[s.lane()].0.push_at(s, &p, now_ns));
        }
    }
    // A peer flooding one session (100 copies at once, every 10 rounds): the ingress limit
    // refuses what exceeds its burst, on the transport thread, without allocating.
    if k % 10 == 5 {
        let (s, _) = calls[1];
        let ing = &mut handles[s.lane()].0;
        for _ in 0..100 {
            let _ = as_transport(|| ing.push_at(s, pkt, now_ns));
        }
    }
    for (ing, _) in handles.iter_mut() {
        let _ = as_transport(|| ing.push(SessionId::from_parts(0, 9999, 1), pkt));
        let _ = as_transport(|| ing.push(calls[0].0, &[0x80, 1, 2]));
    }
}

/// Sessions attached to their lanes' application audio handles, as an IVR would have
/// them: per lane a PCMU leg, a G.722 leg and an Opus leg; with `voice` the PCMU legs run
/// an echo canceller (the application's prompt is its reference) and in-band DTMF
/// detection (the virtual-clock test; the real-time one keeps to the cheaper paths, as
/// `make_calls` does, so an unoptimised build keeps up).
fn make_app_sessions(e: &MediaEngine, dialog0: u64, voice: bool) -> Vec<(SessionId, CodecSpec)> {
    let mut out = Vec::new();
    for (i, codec) in [CodecSpec::PCMU, CodecSpec::G722, CodecSpec::OPUS]
        .into_iter()
        .cycle()
        .take(6)
        .enumerate()
    {
        let mut p = MediaSessionParams::new(codec, Ptime::MS_20);
        if voice && codec == CodecSpec::PCMU {
            p.dsp.aec = Some(Default::default());
            p.dsp.dtmf = Some(Default::default());
        }
        let h = e
            .create_media_session(DialogId(dialog0 + i as u64), p)
            .unwrap();
        e.attach_audio(h.id).unwrap();
        out.push((h.id, codec));
    }
    out
}

/// One 20 ms round of an endpoint application: each attached session receives a frame,
/// and the application writes one (a tone at the session's rate) and reads what the
/// lanes handed it, both counted like a lane thread. With `realtime` the packets carry
/// the monotonic clock's arrival time (`push`), not the round's simulated one: on real
/// lane threads a round that runs late (an unoptimised build) would otherwise make them
/// late for their playout, and the attached sessions would have little to hand over.
fn app_round(
    apps: &[(SessionId, CodecSpec)],
    k: usize,
    handles: &mut [(IngressHandle, EgressHandle)],
    audio: &mut [AudioHandle],
    pkt: &mut Vec<u8>,
    realtime: bool,
) -> usize {
    let now_ns = 1 + k as u64 * 20_000_000;
    let mut tone = [0i16; 960];
    for (i, x) in tone.iter_mut().enumerate() {
        *x = ((i as f32 * 0.07).sin() * 3000.0) as i16;
    }
    for &(s, codec) in apps {
        let (pt, ts_step, frame, samples) = match codec {
            CodecSpec::G722 => (9, 160, g722_frame(k % 50), 320),
            CodecSpec::OPUS => (111, 960, OPUS_FRAMES.with(|f| f[k % 50].clone()), 960),
            _ => (0, 160, ulaw_frame(k % 50), 160),
        };
        rtp(
            pt,
            k as u16,
            (ts_step * k) as u32,
            s.slot() + 2000,
            false,
            &frame,
            pkt,
        );
        let ing = &mut handles[s.lane()].0;
        let _ = as_transport(|| {
            if realtime {
                ing.push(s, pkt)
            } else {
                ing.push_at(s, pkt, now_ns)
            }
        });
        let _ = as_transport(|| audio[s.lane()].write(s, &tone[..samples]));
    }
    let mut read = 0;
    for a in audio.iter_mut() {
        as_transport(|| {
            while let Some(f) = a.read() {
                read += f.with_pcm(|p| usize::from(!p.is_empty()));
            }
        });
    }
    read
}

fn drain_all(handles: &mut [(IngressHandle, EgressHandle)]) -> usize {
    let mut n = 0;
    for (_, eg) in handles.iter_mut() {
        while let Some(p) = eg.pop() {
            n += p.len().min(1);
        }
    }
    n
}

/// SIDs the B legs of `SID_RELAY_LEGS` calls sent (forwarded from A: no DTX or
/// keepalives there).
/// by B leg (`g711`: of the G.711 relays only, else of all).
fn forwarded_sids(
    e: &MediaEngine,
    calls: &[(SessionId, SessionId)],
    g711: bool,
) -> std::collections::HashMap<SessionId, u64> {
    calls
        .iter()
        .filter(|(a, _)| {
            if g711 {
                SID_RELAY_G711_LEGS.with(|g| g.borrow().contains(a))
            } else {
                SID_RELAY_LEGS.with(|g| g.borrow().contains(a))
            }
        })
        .map(|&(_, b)| (b, e.session_stats(b).unwrap().tx_cn_packets))
        .collect()
}

/// SIDs forwarded since `before` (a [`forwarded_sids`] taken then) by the calls in `now`
/// (those still up).
fn forwarded_since(
    before: &std::collections::HashMap<SessionId, u64>,
    now: &std::collections::HashMap<SessionId, u64>,
) -> u64 {
    now.iter()
        .map(|(b, n)| n - before.get(b).copied().unwrap_or(0))
        .sum()
}

#[test]
fn virtual_clock_lanes_do_not_allocate_in_steady_state() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for topology in [Topology::Fused, Topology::Split] {
        let e = MediaEngine::new(EngineConfig {
            clock: ClockMode::Virtual,
            topology,
            lanes: 2,
            sessions_per_lane: 96,
            ..Default::default()
        })
        .unwrap();
        e.start().unwrap();
        let mut handles: Vec<_> = (0..2).map(|l| e.take_rtp_handles(l).unwrap()).collect();
        let mut audio: Vec<_> = (0..2).map(|l| e.take_audio_handle(l).unwrap()).collect();
        // 160 sessions.
        let mut calls = make_calls(&e, 80, 0, true);
        // One more, parked now and then below (last in the list, which the churn renews
        // from the front): PCMU with telephone-event to PCMA with comfort noise, both
        // sending keepalives after 200 ms without a packet (encoded silence and SID
        // frames).
        let parked = {
            let mut pa = MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_20);
            pa.telephone_event_send_pt = media_core::PayloadType::new(101);
            pa.keepalive_ms = 200;
            let mut pb = MediaSessionParams::new(CodecSpec::PCMA, Ptime::MS_20)
                .with_rx(CodecSpec::PCMA)
                .with_rx(CodecSpec::PCMU);
            pb.comfort_noise_send_pt = media_core::PayloadType::new(13);
            pb.keepalive_ms = 200;
            let (a, b) = e
                .create_call((DialogId(90_000), pa), (DialogId(90_001), pb))
                .unwrap();
            (a.id, b.id)
        };
        calls.push(parked);
        // Two more parked with it: a G.722 relay (its keepalives empty payloads: the far
        // end's decoder follows the source's encoder) and Opus to G.722 (encoded silence
        // from both encoders).
        let parked_wide: Vec<(SessionId, SessionId)> = [
            (CodecSpec::G722, CodecSpec::G722),
            (CodecSpec::OPUS, CodecSpec::G722),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, (ca, cb))| {
            let leg = |c| {
                let mut p = MediaSessionParams::new(c, Ptime::MS_20);
                p.keepalive_ms = 200;
                p
            };
            let d = 90_010 + 2 * i as u64;
            let (a, b) = e
                .create_call((DialogId(d), leg(ca)), (DialogId(d + 1), leg(cb)))
                .unwrap();
            for (id, c) in [(a.id, ca), (b.id, cb)] {
                if c == CodecSpec::OPUS {
                    OPUS_LEGS.with(|g| g.borrow_mut().insert(id));
                } else {
                    G722_LEGS.with(|g| g.borrow_mut().insert(id));
                }
            }
            (a.id, b.id)
        })
        .collect();
        calls.extend(&parked_wide);
        let apps = make_app_sessions(&e, 50_000, true);
        let mut app_frames = 0;
        let mut pkt = Vec::with_capacity(2048);
        let mut held = Vec::with_capacity(1024);
        let mut stalled = Vec::with_capacity(1024);
        let mut sent = 0;
        let mut measured = (0, 0);
        let mut forwarded_before = Default::default();
        let mut forwarded_g711_before = Default::default();
        let mut dialog = 10_000;
        let mut parked_before = 0;
        for k in 0..600usize {
            traffic_round(&calls, k, &mut handles, &mut pkt, &mut held, &mut stalled);
            app_frames += app_round(&apps, k, &mut handles, &mut audio, &mut pkt, false);
            if k == 100 {
                measured = counts();
                forwarded_before = forwarded_sids(&e, &calls, false);
                forwarded_g711_before = forwarded_sids(&e, &calls, true);
            }
            // Control-plane churn during the measured window (allocates on this thread,
            // outside the marked region).
            if k > 100 && k % 50 == 10 {
                // RFC 4733 digits sent on a few sessions (their event packets replace audio).
                for &(a, _) in calls.iter().step_by(9) {
                    let _ = e.send_dtmf(a, '7', 120);
                }
                // A call parked (unbridged) for 0.6 s, as a gateway holds legs between
                // transfers: its legs keep receiving with no sink, and a digit sent on
                // one goes out with no source to drive its sender (its own frame periods).
                let (a, _) = parked;
                e.unbridge(a).unwrap();
                for &(a, _) in &parked_wide {
                    e.unbridge(a).unwrap();
                }
                e.send_dtmf(a, '3', 120).unwrap();
                parked_before = e.session_stats(a).unwrap().tx_dtmf_packets;
            }
            if k > 100 && k % 50 == 40 {
                let (a, b) = parked;
                let sent_parked = e.session_stats(a).unwrap().tx_dtmf_packets - parked_before;
                assert!(
                    sent_parked >= 7,
                    "a parked leg sent its digit ({sent_parked})"
                );
                for &(a, b) in &parked_wide {
                    e.bridge(a, b).unwrap();
                }
                e.bridge(a, b).unwrap();
            }
            if k > 100 && k % 50 == 30 {
                // Quality adaptation applied on the lanes: jitter bounds everywhere, Opus
                // bitrate/FEC/complexity on the Opus senders (refused for the others).
                use media_core::quality::monitor::QualityAdjustment as Q;
                for &(a, b) in &calls {
                    for id in [a, b] {
                        let session = id.to_u64();
                        let on = k % 100 == 30;
                        e.adjust_quality(Q::JitterBounds {
                            session,
                            min_delay_ms: if on { 60 } else { 20 },
                            max_delay_ms: 500,
                        })
                        .unwrap();
                        let _ = e.adjust_quality(Q::OpusEncoder {
                            session,
                            bitrate_bps: if on { 16_000 } else { 24_000 },
                            inband_fec: on,
                            packet_loss_percent: if on { 10 } else { 5 },
                        });
                        let _ = e.adjust_quality(Q::OpusComplexity {
                            session,
                            complexity: if on { 2 } else { 5 },
                        });
                    }
                }
            }
            if k > 100 && k % 50 == 0 {
                let (a, b) = calls.remove(0);
                e.destroy_media_session(a).unwrap();
                e.destroy_media_session(b).unwrap();
                calls.extend(make_calls(&e, 1, dialog, true));
                dialog += 2;
                let (_, b) = calls[3];
                e.update_media_session(b, MediaSessionParams::new(CodecSpec::PCMA, Ptime::MS_20))
                    .unwrap();
            }
            ON_LANE.with(|c| c.set(true));
            e.step(2).unwrap();
            ON_LANE.with(|c| c.set(false));
            sent += drain_all(&mut handles);
        }
        let after = counts();
        let keepalives: u64 = (0..2)
            .map(|l| e.lane_stats(l).unwrap().keepalives_sent)
            .sum();
        println!("{topology:?}: {keepalives} keepalives");
        // Three calls, six legs, about two keepalives each per 0.6 s park, nine parks
        // (169 here in both topologies).
        assert!(
            keepalives >= 100,
            "{topology:?}: the parked legs sent keepalives ({keepalives})"
        );
        assert!(
            sent > 60_000,
            "{topology:?}: traffic flowed ({sent} packets)"
        );
        // The application's frames went both ways through every attached session.
        assert!(app_frames > 3000, "{topology:?}: {app_frames} frames read");
        for &(s, _) in &apps {
            let st = e.session_stats(s).unwrap();
            assert!(st.tx_packets > 500, "{topology:?}: {s} sent {st:?}");
        }
        let erle = e.session_quality(apps[0].0).unwrap().echo_erle_db;
        assert!(erle.is_some(), "the attached leg's canceller ran");
        assert_eq!(
            (after.0 - measured.0, after.1 - measured.1),
            (0, 0),
            "{topology:?}: allocations/frees on the lane and ingress paths during 1000 steady-state ticks"
        );
        let st = e.lane_stats(0).unwrap();
        assert!(st.malformed > 0 && st.ingress_unknown > 0);
        let limited: u64 = (0..2)
            .map(|l| e.lane_stats(l).unwrap().ingress_rate_limited)
            .sum();
        assert!(limited > 0, "the ingress rate limit refused the flood");
        // Every hot path ran in the measured window.
        let mut total = media_core::quality::SessionStats::default();
        let mut outage_runs = 0;
        for &(a, b) in &calls {
            for id in [a, b] {
                let x = e.session_stats(id).unwrap();
                total.frames_decoded += x.frames_decoded;
                total.frames_relayed += x.frames_relayed;
                total.frames_concealed += x.frames_concealed;
                total.samples_accelerated += x.samples_accelerated;
                total.samples_expanded += x.samples_expanded;
                total.rx_late += x.rx_late;
                total.rx_duplicates += x.rx_duplicates;
                total.rx_dtmf_packets += x.rx_dtmf_packets;
                total.tx_dtmf_packets += x.tx_dtmf_packets;
                total.rx_cn_packets += x.rx_cn_packets;
                total.tx_cn_packets += x.tx_cn_packets;
                total.frames_dtx += x.frames_dtx;
                total.frames_processed += x.frames_processed;
                let q = e.session_quality(id).unwrap();
                outage_runs += q.loss_pattern.burst_gap.bursts;
            }
        }
        println!("{topology:?}: {total:?}");
        // The loss pattern classified losses: the outages, at least, as bursts.
        assert!(outage_runs > 0, "loss-pattern path");
        // Legs in DTX with comfort noise kept playing through their silences (comfort
        // noise past the jitter buffer's idle timeout): few frame periods went unplayed.
        let (mut cn_missing, mut cn_played, mut cn_legs) = (0, 0, 0);
        for &(a, _) in &calls {
            if CN_DTX_LEGS.with(|g| g.borrow().contains(&a)) && a.slot() % 2 == 0 {
                let x = e.session_stats(a).unwrap();
                cn_missing += x.frames_missing;
                cn_played += x.frames_decoded + x.frames_relayed;
                cn_legs += 1;
            }
        }
        println!(
            "{topology:?}: {cn_legs} DTX legs: {cn_played} frames played, {cn_missing} missing"
        );
        // (Before comfort noise played through a signalled silence: 2,113 played, 3,537
        // missing.)
        assert!(
            cn_legs > 0 && cn_missing * 4 < cn_played,
            "comfort noise through DTX silences: {cn_played} played, {cn_missing} missing"
        );
        assert!(
            total.frames_decoded > 0 && total.frames_relayed > 0,
            "transcode and relay paths"
        );
        assert!(total.frames_concealed > 0, "concealment path");
        let foreign: u64 = (0..2)
            .map(|l| e.lane_stats(l).unwrap().foreign_ssrc_drops)
            .sum();
        assert!(foreign > 0, "a second source's packets dropped");
        assert!(total.samples_accelerated > 0, "time compression path");
        assert!(
            total.rx_duplicates > 0
                && total.rx_dtmf_packets > 0
                && total.tx_dtmf_packets > 0
                && total.rx_cn_packets > 0,
            "duplicate, RFC 4733 receive and send, and RFC 3389 paths"
        );
        assert!(
            total.tx_cn_packets > 0 && total.frames_dtx > 0,
            "DTX: SID frames sent and silent frames skipped"
        );
        let forwarded = forwarded_since(&forwarded_before, &forwarded_sids(&e, &calls, false));
        let forwarded_g711 =
            forwarded_since(&forwarded_g711_before, &forwarded_sids(&e, &calls, true));
        println!(
            "{topology:?}: {forwarded} SIDs forwarded by relays, {forwarded_g711} by PCMU relays"
        );
        assert!(forwarded_g711 > 0, "SIDs forwarded by PCMU relays");
        assert!(
            forwarded > forwarded_g711,
            "SIDs forwarded by undecoded G.722 relays"
        );
    }
}

#[test]
fn realtime_lane_threads_do_not_allocate_in_steady_state() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for topology in [Topology::Fused, Topology::Split] {
        let e = MediaEngine::new(EngineConfig {
            topology,
            lanes: 2,
            sessions_per_lane: 80,
            raise_priority: false,
            on_thread_start: Some(mark_lane_thread),
            ..Default::default()
        })
        .unwrap();
        let mut handles: Vec<_> = (0..2).map(|l| e.take_rtp_handles(l).unwrap()).collect();
        let mut audio: Vec<_> = (0..2).map(|l| e.take_audio_handle(l).unwrap()).collect();
        e.start().unwrap();
        let mut calls = make_calls(&e, 60, 0, false); // 120 sessions
        let apps = make_app_sessions(&e, 50_000, false);
        let mut app_frames = 0;
        let mut pkt = Vec::with_capacity(2048);
        let mut held = Vec::with_capacity(1024);
        let mut stalled = Vec::with_capacity(1024);
        let mut sent = 0;
        let mut dialog = 10_000;
        // Warm-up: 0.4 s.
        for k in 0..20usize {
            traffic_round(&calls, k, &mut handles, &mut pkt, &mut held, &mut stalled);
            app_round(&apps, k, &mut handles, &mut audio, &mut pkt, true);
            std::thread::sleep(Duration::from_millis(20));
            drain_all(&mut handles);
        }
        let before = counts();
        let ticks0 = e.lane_stats(0).unwrap().ticks;
        for k in 20..170usize {
            traffic_round(&calls, k, &mut handles, &mut pkt, &mut held, &mut stalled);
            app_frames += app_round(&apps, k, &mut handles, &mut audio, &mut pkt, true);
            if k % 30 == 0 {
                let (a, b) = calls.remove(0);
                e.destroy_media_session(a).unwrap();
                e.destroy_media_session(b).unwrap();
                calls.extend(make_calls(&e, 1, dialog, false));
                dialog += 2;
            }
            std::thread::sleep(Duration::from_millis(20));
            sent += drain_all(&mut handles);
        }
        e.flush(Duration::from_secs(2)).unwrap();
        let after = counts();
        let ticks = e.lane_stats(0).unwrap().ticks - ticks0;
        e.stop().unwrap();
        assert!(ticks >= 250, "{topology:?}: lane ticked ({ticks})");
        // A floor proving the window carried traffic (up to 18,000 packets), not a speed
        // check: an unoptimised build on a loaded two-core machine sends far fewer (971
        // under coverage instrumentation with two other builds running).
        assert!(sent > 200, "{topology:?}: traffic flowed ({sent} packets)");
        assert!(
            app_frames > 100,
            "{topology:?}: {app_frames} application frames read"
        );
        assert_eq!(
            (after.0 - before.0, after.1 - before.1),
            (0, 0),
            "{topology:?}: allocations/frees on lane threads in steady state"
        );
    }
}

#[test]
fn standalone_real_time_processors_do_not_allocate() {
    use media_core::processing::effects::compressor::{Compressor, CompressorConfig};
    use media_core::processing::effects::eq::{ParametricEq, ParametricEqConfig};
    use media_core::processing::format::bit_depth::{Dither, SampleFormat, Samples, SamplesMut};
    use media_core::processing::format::converter::{
        AudioFormat, FormatConverter, FormatConverterConfig,
    };
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // Built on the control plane (allocates freely).
    let mut cfg = FormatConverterConfig::new(
        AudioFormat {
            sample_rate_hz: 48_000,
            channels: 2,
            sample_format: SampleFormat::F32,
        },
        AudioFormat {
            sample_rate_hz: 8_000,
            channels: 1,
            sample_format: SampleFormat::I16,
        },
        960,
    );
    cfg.dither = Dither::Tpdf { seed: 1 };
    let mut conv = FormatConverter::new(cfg).unwrap();
    let mut eq = ParametricEq::new(ParametricEqConfig::telephone_band(8_000)).unwrap();
    let mut comp = Compressor::new(CompressorConfig::limiter(8_000, -1.0)).unwrap();
    let input: Vec<f32> = (0..1920).map(|i| ((i as f32) * 0.05).sin() * 0.9).collect();
    let mut out = vec![0i16; conv.max_output_frames()];
    let before = counts();
    ON_LANE.with(|c| c.set(true));
    for _ in 0..200 {
        let n = conv
            .process(Samples::F32(&input), SamplesMut::I16(&mut out))
            .unwrap_or(0);
        eq.process(&mut out[..n]);
        comp.process(&mut out[..n]);
    }
    ON_LANE.with(|c| c.set(false));
    let after = counts();
    assert_eq!(
        (after.0 - before.0, after.1 - before.1),
        (0, 0),
        "format conversion, EQ and compressor allocate nothing per frame"
    );
    assert!(out.iter().any(|&s| s != 0), "the chain produced audio");
}
