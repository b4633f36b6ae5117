//! RealtimeSanitizer (RTSan) run of the lane path: every lane tick, ingress push and egress
//! pop of a virtual-clock engine carrying calls of every codec pair and the whole voice
//! chain runs inside an RTSan real-time scope, which aborts the process with a stack trace
//! on the first allocation, free, blocking system call, contended lock or `#[blocking]`
//! call inside it.
//!
//! Behind the `rtsan` feature, and armed only when built with `RTSAN_ENABLE=1` (otherwise
//! the `rtsan-standalone` calls are no-ops). `scripts/rt_evidence.sh` runs it:
//!
//! ```text
//! RTSAN_ENABLE=1 RTSAN_LIB_PATH=/opt/clangrt/usr/lib/llvm-22/lib/clang/22/lib/linux/libclang_rt.rtsan-x86_64.a \
//!     cargo test --release --features rtsan --test rt_safety
//! ```
//!
//! Scope: `MediaEngine::step` runs the lane ticks on the calling thread. Around the ticks
//! it only takes the engine's control-plane mutex (uncontended here: one thread) and reads
//! the clock; it allocates and frees nothing (retired state is freed by the next control
//! call). So a scope around `step` covers the lane code plus one uncontended lock, which
//! RTSan cannot see (an uncontended `std::sync::Mutex` is an atomic, no system call);
//! creating, updating and destroying sessions (which allocate) stay outside the scope.
//! RTSan does not see an uncontended lock or `thread::sleep` either: `clippy.toml` bans
//! locks in real-time modules statically.
#![cfg(feature = "rtsan")]

mod common;

use std::hint::black_box;

use common::*;
use media_core::processing::audio::DspConfig;
use media_core::{
    ClockMode, CodecSpec, DialogId, EgressHandle, EngineConfig, IngressHandle, MediaEngine,
    MediaSessionParams, PayloadType, Ptime, SampleRate, SessionId, Topology,
};
use rtsan_standalone::nonblocking;

/// True when the test binary was built with the sanitizer armed.
const ARMED: bool = option_env!("RTSAN_ENABLE").is_some();

/// The lane ticks, in a real-time scope.
#[nonblocking]
fn rt_step(e: &MediaEngine, ticks: u64) {
    black_box(e.step(ticks)).expect("virtual clock");
}

/// One received packet into a lane, in a real-time scope (rtp-core's receive thread).
#[nonblocking]
fn rt_push(ing: &mut IngressHandle, id: SessionId, pkt: &[u8], arrival_ns: u64) -> bool {
    black_box(ing.push_at(id, pkt, arrival_ns)).is_ok()
}

/// Every packet a lane produced, popped and read in a real-time scope (rtp-core's send
/// thread); returns how many.
#[nonblocking]
fn rt_pop(eg: &mut EgressHandle, scratch: &mut [u8]) -> usize {
    let mut n = 0;
    while let Some(p) = eg.pop() {
        n += usize::from(p.copy_to(scratch).is_some());
        black_box(p.header());
    }
    n
}

/// Which payload a leg receives.
#[derive(Clone, Copy, PartialEq)]
enum Feed {
    Pcmu,
    Pcma,
    G722,
    Opus,
}

struct Leg {
    id: SessionId,
    feed: Feed,
}

/// Payloads of every codec, encoded once (outside any real-time scope).
struct Frames {
    pcmu: Vec<Vec<u8>>,
    pcma: Vec<Vec<u8>>,
    g722: Vec<Vec<u8>>,
    opus: Vec<Vec<u8>>,
}

impl Frames {
    fn new() -> Self {
        use media_core::codec::{AnyEncoder, Codec};
        let enc = |c: Codec| -> Vec<Vec<u8>> {
            let mut e = AnyEncoder::new(c);
            let n = c.frame_samples(Ptime::MS_20);
            (0..50)
                .map(|k| {
                    let pcm = signal(k * n, n);
                    let mut out = vec![0u8; 1000];
                    let len = e.encode(&pcm, &mut out).expect("encodes a tone");
                    out.truncate(len);
                    out
                })
                .collect()
        };
        Frames {
            pcmu: enc(Codec::Pcmu),
            pcma: enc(Codec::Pcma),
            g722: enc(Codec::G722),
            opus: enc(Codec::Opus),
        }
    }

    fn get(&self, f: Feed, k: usize) -> (&[u8], u8, u32) {
        match f {
            Feed::Pcmu => (&self.pcmu[k % 50], 0, 160),
            Feed::Pcma => (&self.pcma[k % 50], 8, 160),
            Feed::G722 => (&self.g722[k % 50], 9, 160),
            Feed::Opus => (&self.opus[k % 50], 111, 960),
        }
    }
}

fn spec(f: Feed) -> CodecSpec {
    match f {
        Feed::Pcmu => CodecSpec::PCMU,
        Feed::Pcma => CodecSpec::PCMA,
        Feed::G722 => CodecSpec::G722,
        Feed::Opus => CodecSpec::OPUS,
    }
}

/// Call `i` of the cycle: every codec pair the engine runs (relay and transcoding), Opus at
/// 48 kHz, 8 kHz and stereo, the gain path and the whole voice chain, with RFC 4733 and
/// RFC 3389 negotiated on G.711 legs.
fn make_call(e: &MediaEngine, i: usize, dialog: u64) -> [Leg; 2] {
    use Feed::*;
    const PAIRS: [(Feed, Feed); 12] = [
        (Pcmu, Pcmu),
        (Pcmu, Pcma),
        (Pcma, Pcma),
        (G722, Pcmu),
        (G722, G722),
        (Opus, Pcmu),
        (Opus, Opus),
        (Opus, G722),
        (Pcmu, Pcmu), // voice chain
        (Pcma, Pcmu), // gain
        (Opus, Pcmu), // Opus at 8 kHz
        (Opus, Pcma), // stereo Opus
    ];
    let k = i % PAIRS.len();
    let (fa, fb) = PAIRS[k];
    let mut a = MediaSessionParams::new(spec(fa), Ptime::MS_20);
    let mut b = MediaSessionParams::new(spec(fb), Ptime::MS_20);
    for p in [&mut a, &mut b] {
        if matches!(
            p.tx.codec,
            media_core::Codec::Pcmu | media_core::Codec::Pcma
        ) {
            p.telephone_event_pt = PayloadType::new(101);
            p.telephone_event_send_pt = PayloadType::new(101);
            p.comfort_noise_pt = PayloadType::new(13);
        }
    }
    match k {
        8 => {
            a.dsp = DspConfig {
                rx_gain_db: -3.0,
                ..DspConfig::voice()
            };
            b.dsp = DspConfig::voice();
        }
        9 => {
            a.dsp = DspConfig {
                rx_gain_db: -6.0,
                ..Default::default()
            }
        }
        10 => a.opus.sample_rate = SampleRate::new(8000).expect("8 kHz"),
        11 => a.opus.stereo = true,
        _ => {}
    }
    let (ha, hb) = e
        .create_call((DialogId(dialog), a), (DialogId(dialog + 1), b))
        .expect("call created");
    [
        Leg {
            id: ha.id,
            feed: fa,
        },
        Leg {
            id: hb.id,
            feed: fb,
        },
    ]
}

struct Traffic {
    frames: Frames,
    pkt: Vec<u8>,
    held: Vec<(SessionId, Vec<u8>)>,
    scratch: Vec<u8>,
    pushed: usize,
    popped: usize,
}

impl Traffic {
    /// One 20 ms round: every leg sends frame `k` (every 13th lost, every 7th held back
    /// 15 ms = reordered, every 17th duplicated), RFC 4733 and RFC 3389 packets every 25th,
    /// plus a malformed and an unknown-session packet per lane. Packets are built outside
    /// the scope; each push runs inside it.
    fn round(
        &mut self,
        calls: &[[Leg; 2]],
        k: usize,
        io: &mut [(IngressHandle, EgressHandle)],
        rt: bool,
    ) {
        let now = 1 + k as u64 * 20_000_000;
        let mut pushed = 0;
        let mut push = |ing: &mut IngressHandle, id, pkt: &[u8], t| {
            let ok = if rt {
                rt_push(ing, id, pkt, t)
            } else {
                ing.push_at(id, pkt, t).is_ok()
            };
            pushed += usize::from(ok);
        };
        for leg in calls.iter().flatten() {
            let (payload, pt, step) = self.frames.get(leg.feed, k);
            let ssrc = 1000 + leg.id.slot();
            rtp(
                pt,
                k as u16,
                step * k as u32,
                ssrc,
                false,
                payload,
                &mut self.pkt,
            );
            if k % 13 == 0 {
                continue;
            }
            let ing = &mut io[leg.id.lane()].0;
            if k % 7 == 0 {
                self.held.push((leg.id, self.pkt.clone()));
                continue;
            }
            push(ing, leg.id, &self.pkt, now);
            if k % 17 == 0 {
                push(ing, leg.id, &self.pkt, now + 1_000_000);
            }
            if k % 25 == 0 && pt != 111 && pt != 9 {
                rtp(
                    101,
                    k as u16,
                    160 * k as u32,
                    ssrc,
                    true,
                    &[1, 0x8a, 0, 160],
                    &mut self.pkt,
                );
                push(ing, leg.id, &self.pkt, now);
                rtp(
                    13,
                    k as u16,
                    160 * k as u32,
                    ssrc,
                    false,
                    &[55, 100, 140],
                    &mut self.pkt,
                );
                push(ing, leg.id, &self.pkt, now);
            }
        }
        for (id, p) in self.held.drain(..) {
            push(&mut io[id.lane()].0, id, &p, now + 15_000_000);
        }
        for (ing, _) in io.iter_mut() {
            let lane = ing.lane() as u16;
            push(
                ing,
                SessionId::from_parts(lane, 9999, 1),
                &[0x80, 0, 0, 1],
                now,
            );
            push(ing, calls[0][0].id, &[0x80, 1, 2], now);
        }
        self.pushed += pushed;
    }

    fn pop(&mut self, io: &mut [(IngressHandle, EgressHandle)], rt: bool) {
        for (_, eg) in io.iter_mut() {
            self.popped += if rt {
                rt_pop(eg, &mut self.scratch)
            } else {
                std::iter::from_fn(|| eg.pop().map(|_| ())).count()
            };
        }
    }
}

/// Drives `rounds` rounds of 20 ms through an engine with calls of every kind, churning
/// sessions between rounds (outside the scope); every tick, push and pop after `warmup`
/// rounds runs in a real-time scope.
fn drive(topology: Topology, calls: usize, warmup: usize, rounds: usize) -> (usize, usize) {
    let e = MediaEngine::new(EngineConfig {
        clock: ClockMode::Virtual,
        topology,
        lanes: 2,
        sessions_per_lane: calls + 16,
        ..Default::default()
    })
    .expect("engine");
    e.start().expect("start");
    let mut io: Vec<_> = (0..2)
        .map(|l| e.take_rtp_handles(l).expect("handles"))
        .collect();
    let mut dialog = 0;
    let mut list: Vec<[Leg; 2]> = (0..calls)
        .map(|i| {
            dialog += 2;
            make_call(&e, i, dialog)
        })
        .collect();
    let mut t = Traffic {
        frames: Frames::new(),
        pkt: Vec::with_capacity(2048),
        held: Vec::with_capacity(4 * calls),
        scratch: vec![0u8; 2048],
        pushed: 0,
        popped: 0,
    };
    for k in 0..warmup + rounds {
        let rt = k >= warmup;
        // Control plane, outside the scope: churn, re-INVITEs, RFC 4733 digits to send.
        if k > 0 && k % 20 == 0 {
            let [a, b] = list.remove(0);
            e.destroy_media_session(a.id).expect("destroy");
            e.destroy_media_session(b.id).expect("destroy");
            dialog += 2;
            list.push(make_call(&e, k / 20, dialog));
            let leg = &list[k % list.len()][1];
            let mut p = MediaSessionParams::new(spec(leg.feed), Ptime::MS_20);
            p.dsp.rx_gain_db = 2.0;
            e.update_media_session(leg.id, p).expect("update");
        }
        if k % 50 == 10 {
            for c in list.iter().step_by(5) {
                let _ = e.send_dtmf(c[0].id, '5', 120);
            }
        }
        t.round(&list, k, &mut io, rt);
        if rt {
            rt_step(&e, 2);
        } else {
            e.step(2).expect("virtual clock");
        }
        t.pop(&mut io, rt);
    }
    e.flush(std::time::Duration::from_secs(1)).expect("flush");
    (t.pushed, t.popped)
}

#[test]
fn lane_ticks_pushes_and_pops_make_no_real_time_unsafe_call_under_rtsan() {
    if !ARMED {
        eprintln!(
            "rt_safety: built without RTSAN_ENABLE=1: rtsan-standalone is a no-op and this \
             run only exercises the paths (see scripts/rt_evidence.sh)"
        );
    }
    for topology in [Topology::Fused, Topology::Split] {
        // 48 calls = 96 sessions: every kind of call four times, through 300 rounds
        // (6 s of media) after a 50-round warm-up.
        let (pushed, popped) = drive(topology, 48, 50, 300);
        eprintln!("rt_safety {topology:?}: {pushed} packets pushed, {popped} popped in scope");
        assert!(pushed > 20_000, "{topology:?}: traffic flowed ({pushed})");
        assert!(
            popped > 20_000,
            "{topology:?}: lanes produced packets ({popped})"
        );
    }
}

/// Run by [`sanitizer_is_armed_and_catches_an_allocation_in_scope`] in a child process:
/// allocates inside a real-time scope, which an armed RTSan must abort.
#[test]
#[ignore = "canary: run in a child process by sanitizer_is_armed_and_catches_an_allocation_in_scope"]
fn canary_allocates_in_a_real_time_scope() {
    #[nonblocking]
    fn allocate() -> usize {
        black_box(vec![1u8; black_box(256)]).len()
    }
    assert_eq!(allocate(), 256);
}

#[test]
fn sanitizer_is_armed_and_catches_an_allocation_in_scope() {
    assert!(
        ARMED,
        "the rtsan feature was built without RTSAN_ENABLE=1, so RTSan is a no-op and the \
         other test proves nothing: run scripts/rt_evidence.sh (or set RTSAN_ENABLE=1 and \
         RTSAN_LIB_PATH as in this file's docs)"
    );
    let exe = std::env::current_exe().expect("test binary path");
    let out = std::process::Command::new(exe)
        .args([
            "--exact",
            "canary_allocates_in_a_real_time_scope",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .output()
        .expect("runs the canary");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("RealtimeSanitizer"),
        "an allocation in a real-time scope was not reported (status {:?}):\n{stderr}",
        out.status
    );
}
