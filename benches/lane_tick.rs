//! One lane tick with N sessions: the cost of 20 ms of media for N bridged sessions
//! (N/2 calls, both directions), measured on the virtual clock so only the lane's own work
//! is timed (pushing packets in and popping them out, rtp-core's side, is excluded).

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use media_core::codec::audio::g711;
use media_core::rtp::{write_header, RtpHeader};
use media_core::{
    ClockMode, CodecSpec, DialogId, EgressHandle, EngineConfig, IngressHandle, MediaEngine,
    MediaSessionParams, Ptime, SessionId, Topology,
};

struct Rig {
    engine: MediaEngine,
    ing: IngressHandle,
    eg: EgressHandle,
    sessions: Vec<(SessionId, u8)>,
    pkts: [Vec<u8>; 2],
    seq: u16,
}

fn rig(sessions: usize, b_codec: CodecSpec, topology: Topology) -> Rig {
    let engine = MediaEngine::new(EngineConfig {
        clock: ClockMode::Virtual,
        topology,
        sessions_per_lane: sessions,
        max_payload_bytes: 320,
        max_frame_samples: 480,
        ..Default::default()
    })
    .unwrap();
    engine.start().unwrap();
    let mut v = Vec::new();
    for i in 0..sessions / 2 {
        let (a, b) = engine
            .create_call(
                (
                    DialogId(2 * i as u64),
                    MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_20),
                ),
                (
                    DialogId(2 * i as u64 + 1),
                    MediaSessionParams::new(b_codec, Ptime::MS_20),
                ),
            )
            .unwrap();
        v.push((a.id, 0));
        v.push((b.id, b_codec.payload_type.get()));
    }
    let (ing, eg) = engine.take_rtp_handles(0).unwrap();
    let pcm: Vec<i16> = (0..160)
        .map(|i| ((i as f32 * 0.35).sin() * 6000.0) as i16)
        .collect();
    let mut u = vec![0u8; 172];
    let mut a = vec![0u8; 172];
    g711::ulaw_encode(&pcm, &mut u[12..]);
    g711::alaw_encode(&pcm, &mut a[12..]);
    Rig {
        engine,
        ing,
        eg,
        sessions: v,
        pkts: [u, a],
        seq: 0,
    }
}

impl Rig {
    fn feed(&mut self) {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        for &(id, pt) in &self.sessions {
            let p = &mut self.pkts[usize::from(pt == 8)];
            let h = RtpHeader {
                marker: false,
                payload_type: pt,
                sequence: seq,
                timestamp: u32::from(seq) * 160,
                ssrc: id.slot(),
            };
            write_header(&h, p).unwrap();
            let _ = self.ing.push(id, p);
        }
    }

    fn drain(&mut self) {
        while self.eg.pop().is_some() {}
    }

    /// 20 ms of media: two 10 ms ticks.
    fn step(&mut self) -> Duration {
        self.feed();
        let t = Instant::now();
        self.engine.step(2).unwrap();
        let d = t.elapsed();
        self.drain();
        d
    }
}

fn lane_tick(c: &mut Criterion) {
    let mut g = c.benchmark_group("lane_20ms");
    g.sample_size(20)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500));
    for &n in &[100usize, 1000, 10000] {
        for (name, codec, topo) in [
            ("pcmu-pcma-fused", CodecSpec::PCMA, Topology::Fused),
            ("relay-pcmu-fused", CodecSpec::PCMU, Topology::Fused),
            ("pcmu-pcma-split-inline", CodecSpec::PCMA, Topology::Split),
        ] {
            let mut r = rig(n, codec, topo);
            for _ in 0..10 {
                r.step();
            }
            g.throughput(Throughput::Elements(n as u64));
            g.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
                b.iter_custom(|iters| (0..iters).map(|_| r.step()).sum())
            });
        }
    }
    g.finish();
}

criterion_group!(benches, lane_tick);
criterion_main!(benches);
