//! Jitter (reorder) buffer cost per 20 ms frame: one `insert` plus one `playout` of a
//! `AdaptiveBuffer<u32, 32>` in steady state (payloads are slab tokens in the real lane),
//! with the lane's defaults: 3 frames of delay, idle after 10 missing frames (200 ms).
//!
//! Cases (arrival pattern, repeating; sequence numbers run on and wrap at 2^16):
//! - `in_order`: every packet arrives, in order.
//! - `reorder_loss`: every 5th packet swapped with its successor, and 2% loss (one packet
//!   dropped at a pseudo-random place in every 50); a lost frame is a playout only.
//! - `reorder_loss_10k_sessions`: the same pattern over 10,000 buffers (one per session,
//!   visited round-robin, each with its own phase), so each frame finds its buffer cold in
//!   L1/L2 as in a full lane. Not asked for; shows the cache cost at gateway density.
//!
//! Criterion time is per frame. Each case also prints
//! `RESULT jitter <case> ns_per_frame=.. cpu_ns_per_frame=.. played=.. missing=.. late=..`
//! from its own run of 20M frames (wall time, and this thread's CPU time, which leaves out
//! time descheduled by other load), which also checks the pattern does what it says (no
//! late packets, 2% missing).
//!
//! Anchor for comparison: speexdsp's jitter buffer put + get + tick is 0.68 µs per frame.
//!
//! Run: `cargo bench --bench jitter`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use media_core::buffer::adaptive::{AdaptiveBuffer, Insert, JitterConfig, Next};

type Jb = AdaptiveBuffer<u32, 32>;

/// The lane's default initial delay (JitterConfig::initial_delay_ms = 60 ms) in frames.
const DELAY_FRAMES: u16 = 3;
/// Pattern period in frames: a multiple of 5 (swaps) and of 50 (loss blocks).
const PERIOD: usize = 10_000;

/// Per frame of the pattern: `None` if that frame's arrival slot carries nothing (lost),
/// else the offset of the sequence number that arrives, relative to the frame index.
fn pattern(reorder_loss: bool) -> Vec<Option<i8>> {
    let mut p: Vec<Option<i8>> = vec![Some(0); PERIOD];
    if !reorder_loss {
        return p;
    }
    for (i, a) in p.iter_mut().enumerate() {
        *a = match i % 5 {
            3 => Some(1),  // packet i+1 overtakes ...
            4 => Some(-1), // ... packet i
            _ => Some(0),
        };
    }
    let mut seed: u32 = 0x2545_f491;
    for block in (0..PERIOD).step_by(50) {
        seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        p[block + (seed >> 16) as usize % 50] = None;
    }
    p
}

#[derive(Default, Debug)]
struct Counts {
    played: u64,
    missing: u64,
    idle: u64,
    late: u64,
    dup: u64,
}

/// One session: its buffer and where it is in the pattern.
struct Stream {
    jb: Jb,
    frame: u64,
}

impl Stream {
    fn new(phase: u64) -> Self {
        Stream {
            jb: Jb::new(JitterConfig {
                initial_delay_ms: u32::from(DELAY_FRAMES) * 20,
                ..Default::default()
            }),
            frame: phase,
        }
    }

    /// One 20 ms frame period: the arrival (if any), then one playout.
    #[inline]
    fn frame(&mut self, pattern: &[Option<i8>], counts: &mut Counts) {
        let n = self.frame;
        self.frame += 1;
        if let Some(off) = pattern[(n % PERIOD as u64) as usize] {
            let k = n.wrapping_add(off as u64);
            // Arrival on the sender's 20 ms grid (ns): the delay estimate runs too.
            let arrival = 1 + n * 20_000_000;
            match self
                .jb
                .insert((k * 160) as u32, 160, false, arrival, k as u32, &mut |t| {
                    black_box(t);
                }) {
                Insert::Stored | Insert::Resynced | Insert::Overflowed(_) => {}
                Insert::Late(t) => {
                    counts.late += 1;
                    black_box(t);
                }
                Insert::Duplicate(t) => {
                    counts.dup += 1;
                    black_box(t);
                }
            }
        }
        match self.jb.next(160) {
            Next::Decode { item, first, .. } => {
                counts.played += 1;
                black_box((item, first));
            }
            Next::Conceal { .. } | Next::Empty { .. } => counts.missing += 1,
            Next::Wait => counts.idle += 1,
        }
    }
}

/// CPU time of this thread (ns): unlike wall time, it excludes time spent descheduled,
/// which matters on a small machine shared with other work.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Warms `streams` past prebuffering, then times `frames` frames over them round-robin.
fn own_run(name: &str, pattern: &[Option<i8>], streams: &mut [Stream], frames: u64) {
    let mut warm = Counts::default();
    for _ in 0..100 {
        for s in streams.iter_mut() {
            s.frame(pattern, &mut warm);
        }
    }
    let mut c = Counts::default();
    let rounds = (frames / streams.len() as u64).max(1);
    let cpu = thread_cpu_ns();
    let t = Instant::now();
    for _ in 0..rounds {
        for s in streams.iter_mut() {
            s.frame(pattern, &mut c);
        }
    }
    let d = t.elapsed();
    let cpu = thread_cpu_ns() - cpu;
    let total = rounds * streams.len() as u64;
    println!(
        "RESULT jitter {name} ns_per_frame={:.2} cpu_ns_per_frame={:.2} frames={total} played={} missing={} ({:.2}%) idle={} late={} dup={}",
        d.as_nanos() as f64 / total as f64,
        cpu as f64 / total as f64,
        c.played,
        c.missing,
        100.0 * c.missing as f64 / total as f64,
        c.idle,
        c.late,
        c.dup,
    );
}

fn case(c: &mut Criterion, name: &str, reorder_loss: bool, sessions: usize) {
    let pattern = pattern(reorder_loss);
    // Phases spread so sessions are at different places in the pattern and the ring.
    let make = || -> Vec<Stream> {
        (0..sessions)
            .map(|i| Stream::new((i as u64 * 7919) % PERIOD as u64))
            .collect()
    };

    let mut streams = make();
    own_run(name, &pattern, &mut streams, 20_000_000);

    let mut streams = make();
    let mut counts = Counts::default();
    for _ in 0..100 {
        for s in streams.iter_mut() {
            s.frame(&pattern, &mut counts);
        }
    }
    let mut g = c.benchmark_group("jitter_frame");
    g.sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(1));
    let mut next = 0usize;
    g.bench_function(name, |b| {
        b.iter(|| {
            streams[next].frame(&pattern, &mut counts);
            next += 1;
            if next == streams.len() {
                next = 0;
            }
        })
    });
    g.finish();
    black_box(&counts);
}

fn jitter(c: &mut Criterion) {
    case(c, "in_order", false, 1);
    case(c, "reorder_loss", true, 1);
    case(c, "reorder_loss_10k_sessions", true, 10_000);
}

criterion_group!(benches, jitter);
criterion_main!(benches);
