//! The ring crate measured, not assumed: `rtrb` against `ringbuf` (0.4, `HeapRb` split
//! into its caching producer/consumer) for what a lane does with its SPSC rings, carrying
//! small messages (a u64 token and a 24-byte enum laid out like the lane's `Downstream`).
//!
//! Cases (criterion groups):
//! - `rings_same_thread_*_x64`: push 64 then pop 64 on one thread (the fused lane: all
//!   four stages on one thread, rings between them). Criterion time is per 64 messages.
//! - `rings_throughput_u64_1M`: a producer thread pushes [`THROUGHPUT_MSGS`] u64 as fast
//!   as it can, the consumer (this thread) pops them; both spin on full/empty. Criterion
//!   time is per 1M messages.
//! - `rings_latency_oneway_u64`: ping-pong over two rings between two threads; criterion
//!   reports round trip / 2 (one-way hand-off).
//!
//! Then a summary pass runs every case again with the two crates interleaved round by
//! round (so both see the same machine conditions) and prints `RESULT rings ...` lines:
//! - same thread: ns per message, median and min over rounds, and the median in this
//!   thread's CPU time (which leaves out time descheduled by other load);
//! - throughput: ns per message, median and min over runs, and the p10 and median over all
//!   8192-message chunks of all runs (the rate while both threads are running, which other
//!   load on the machine disturbs less);
//! - latency: `RESULT rings <crate> latency_oneway p50_ns=.. p99_ns=.. p999_ns=..` over
//!   [`LATENCY_ROUND_TRIPS`] individually timed round trips. Each sample includes one
//!   `Instant::now()`, half of which lands in the one-way figure; its cost is printed as
//!   `RESULT rings clock instant_now_ns=..`.
//!
//! `yields=` counts waits that gave up spinning (see [`SPINS_BEFORE_YIELD`]): non-zero
//! means other load disturbed the run.
//!
//! The two threads are pinned to the first two cores of the process's affinity mask when
//! it has two or more (printed as `RESULT rings machine ...`).
//!
//! Run: `cargo bench --bench rings` (about a minute).

use std::hint::{black_box, spin_loop};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringbuf::traits::{Consumer as _, Producer as _, Split as _};

/// Messages per same-thread batch (push this many, then pop them).
const BATCH: usize = 64;
/// Messages per cross-thread throughput run.
const THROUGHPUT_MSGS: u64 = 1_000_000;
/// Capacity of the cross-thread throughput ring.
const THROUGHPUT_CAPACITY: usize = 1024;
/// Timed round trips for the latency percentiles.
const LATENCY_ROUND_TRIPS: usize = 100_000;
/// Stops the echo thread.
const STOP: u64 = u64::MAX;

/// A 24-byte enum-like message, laid out like the lane's `Downstream` stage message
/// (src/runtime/msg.rs): a frame (two session slots and a slab token), a missing frame, or
/// a boxed command (a pointer here; nothing is allocated).
#[derive(Clone, Copy, Debug)]
#[allow(dead_code)] // fields exist to give the message its shape and are only moved
enum Msg {
    Frame { src: u32, dst: u32, frame: Token },
    Missing { src: u32, dst: u32 },
    Cmd(usize),
}

/// A slab token, as in src/runtime/slab.rs.
#[derive(Clone, Copy, Debug)]
#[allow(dead_code)]
struct Token {
    slab: u32,
    index: u32,
}

const _: () = assert!(std::mem::size_of::<Msg>() == 24);

impl Msg {
    /// Mostly frames, a missing frame every 16th, like a lane's steady state.
    fn nth(i: u64) -> Msg {
        let (src, dst) = (i as u32, (i as u32) ^ 1);
        if i % 16 == 15 {
            Msg::Missing { src, dst }
        } else {
            Msg::Frame {
                src,
                dst,
                frame: Token {
                    slab: 1,
                    index: i as u32,
                },
            }
        }
    }
}

/// The two crates behind one static interface, so the benchmark bodies are shared and
/// every call is monomorphised and inlinable.
trait Ring<T: Send + 'static> {
    const NAME: &'static str;
    type P: Send + 'static;
    type C: Send + 'static;
    fn with_capacity(cap: usize) -> (Self::P, Self::C);
    fn push(p: &mut Self::P, v: T) -> Result<(), T>;
    fn pop(c: &mut Self::C) -> Option<T>;
}

struct Rtrb;
impl<T: Send + 'static> Ring<T> for Rtrb {
    const NAME: &'static str = "rtrb";
    type P = rtrb::Producer<T>;
    type C = rtrb::Consumer<T>;
    fn with_capacity(cap: usize) -> (Self::P, Self::C) {
        rtrb::RingBuffer::new(cap)
    }
    #[inline]
    fn push(p: &mut Self::P, v: T) -> Result<(), T> {
        p.push(v).map_err(|rtrb::PushError::Full(v)| v)
    }
    #[inline]
    fn pop(c: &mut Self::C) -> Option<T> {
        c.pop().ok()
    }
}

struct Ringbuf;
impl<T: Send + 'static> Ring<T> for Ringbuf {
    const NAME: &'static str = "ringbuf";
    type P = ringbuf::HeapProd<T>;
    type C = ringbuf::HeapCons<T>;
    fn with_capacity(cap: usize) -> (Self::P, Self::C) {
        ringbuf::HeapRb::new(cap).split()
    }
    #[inline]
    fn push(p: &mut Self::P, v: T) -> Result<(), T> {
        p.try_push(v)
    }
    #[inline]
    fn pop(c: &mut Self::C) -> Option<T> {
        c.try_pop()
    }
}

/// The cores to pin to: (this thread, the other thread). `None` with fewer than two.
///
/// Read once, before any pinning: `core_affinity::get_core_ids` (like
/// `available_parallelism`) reports the calling thread's affinity mask, which shrinks to
/// one core once this thread is pinned, and threads spawned afterwards inherit it.
fn cores() -> Option<(core_affinity::CoreId, core_affinity::CoreId)> {
    machine().1
}

type Cores = Option<(core_affinity::CoreId, core_affinity::CoreId)>;

/// (usable cores, cores to pin to), read on first use.
fn machine() -> (usize, Cores) {
    static MACHINE: OnceLock<(usize, Cores)> = OnceLock::new();
    *MACHINE.get_or_init(|| {
        let cpus = thread::available_parallelism().map_or(1, |n| n.get());
        let pins = core_affinity::get_core_ids()
            .filter(|ids| ids.len() >= 2)
            .map(|ids| (ids[0], ids[1]));
        (cpus, pins)
    })
}

/// Pins this thread to the first core (the measuring side).
fn pin_me() {
    if let Some((me, _)) = cores() {
        core_affinity::set_for_current(me);
    }
}

fn pin_other() {
    if let Some((_, other)) = cores() {
        core_affinity::set_for_current(other);
    }
}

/// Two-party spin barrier (a blocking one would add a wake-up to the timed region).
fn spin_barrier(arrived: &AtomicU32) {
    arrived.fetch_add(1, Ordering::AcqRel);
    while arrived.load(Ordering::Acquire) < 2 {
        spin_loop();
    }
}

/// Spins before a waiting thread yields. With both threads on their own idle cores the
/// partner answers long before this (pure busy-wait, as the brief asks); when the machine
/// is oversubscribed and the partner has been descheduled, spinning on would only burn
/// this thread's time slice, so it yields and the event is counted (printed as `yields=`;
/// non-zero means the run was disturbed by other load).
const SPINS_BEFORE_YIELD: u32 = 1 << 14;
static YIELDS: AtomicU64 = AtomicU64::new(0);

#[cold]
fn yield_now() {
    YIELDS.fetch_add(1, Ordering::Relaxed);
    thread::yield_now();
}

fn take_yields() -> u64 {
    YIELDS.swap(0, Ordering::Relaxed)
}

#[inline]
fn push_spin<R: Ring<T>, T: Send + 'static>(p: &mut R::P, mut v: T) {
    let mut spins = 0u32;
    loop {
        match R::push(p, v) {
            Ok(()) => return,
            Err(back) => {
                v = back;
                spins += 1;
                if spins == SPINS_BEFORE_YIELD {
                    spins = 0;
                    yield_now();
                } else {
                    spin_loop();
                }
            }
        }
    }
}

#[inline]
fn pop_spin<R: Ring<T>, T: Send + 'static>(c: &mut R::C) -> T {
    let mut spins = 0u32;
    loop {
        if let Some(v) = R::pop(c) {
            return v;
        }
        spins += 1;
        if spins == SPINS_BEFORE_YIELD {
            spins = 0;
            yield_now();
        } else {
            spin_loop();
        }
    }
}

// ---------------------------------------------------------------------------------------
// a. Same thread: push 64, pop 64.

/// Push a batch, pop it back. The ring has room for exactly one batch.
#[inline]
fn batch<R: Ring<T>, T: Copy + Send + 'static>(p: &mut R::P, c: &mut R::C, msgs: &[T]) {
    for &m in msgs {
        if R::push(p, m).is_err() {
            unreachable!("ring sized to the batch");
        }
    }
    for _ in 0..msgs.len() {
        black_box(R::pop(c));
    }
}

fn same_thread_case<R: Ring<T>, T: Copy + Send + 'static>(
    c: &mut Criterion,
    what: &str,
    make: fn(u64) -> T,
) {
    let msgs: Vec<T> = (0..BATCH as u64).map(make).collect();
    let (mut p, mut cons) = R::with_capacity(BATCH);
    let mut g = c.benchmark_group(format!("rings_same_thread_{what}_x{BATCH}"));
    g.sample_size(30)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Elements(BATCH as u64));
    g.bench_function(R::NAME, |b| {
        b.iter(|| batch::<R, T>(&mut p, &mut cons, black_box(&msgs)))
    });
    g.finish();
}

fn same_thread(c: &mut Criterion) {
    let (cpus, pins) = machine();
    let pinned = pins.map_or("no (fewer than 2 cores)".to_string(), |(a, b)| {
        format!("cores {} and {}", a.id, b.id)
    });
    println!("RESULT rings machine available_parallelism={cpus} pinned={pinned}");
    // The fused lane runs on one pinned core; so does this.
    pin_me();
    same_thread_case::<Rtrb, u64>(c, "u64", |i| i);
    same_thread_case::<Ringbuf, u64>(c, "u64", |i| i);
    same_thread_case::<Rtrb, Msg>(c, "msg24", Msg::nth);
    same_thread_case::<Ringbuf, Msg>(c, "msg24", Msg::nth);
}

// ---------------------------------------------------------------------------------------
// b. Cross-thread throughput.

/// Messages per chunk timed inside a throughput run.
const CHUNK: u64 = 8192;

/// One run: a fresh ring, a producer thread pinned to the other core, this thread pops.
/// Returns the time from both threads being ready to the last message popped; if `chunks`
/// is given, also the ns per message of every [`CHUNK`] messages popped (steady-state
/// rate while both threads run; a chunk in which either was descheduled stands out).
fn throughput_run<R: Ring<u64>>(chunks: Option<&mut Vec<f64>>) -> Duration {
    let (mut p, mut cons) = R::with_capacity(THROUGHPUT_CAPACITY);
    let ready = AtomicU32::new(0);
    let mut stamps: Vec<Instant> = Vec::with_capacity((THROUGHPUT_MSGS / CHUNK) as usize + 1);
    let want_chunks = chunks.is_some();
    let d = thread::scope(|s| {
        s.spawn(|| {
            pin_other();
            spin_barrier(&ready);
            for i in 0..THROUGHPUT_MSGS {
                push_spin::<R, u64>(&mut p, i);
            }
        });
        spin_barrier(&ready);
        let t = Instant::now();
        let mut sum = 0u64;
        if want_chunks {
            stamps.push(t);
            for i in 1..=THROUGHPUT_MSGS {
                sum = sum.wrapping_add(pop_spin::<R, u64>(&mut cons));
                if i % CHUNK == 0 {
                    stamps.push(Instant::now());
                }
            }
        } else {
            for _ in 0..THROUGHPUT_MSGS {
                sum = sum.wrapping_add(pop_spin::<R, u64>(&mut cons));
            }
        }
        let d = t.elapsed();
        assert_eq!(sum, THROUGHPUT_MSGS * (THROUGHPUT_MSGS - 1) / 2);
        d
    });
    if let Some(chunks) = chunks {
        chunks.extend(
            stamps
                .windows(2)
                .map(|w| (w[1] - w[0]).as_nanos() as f64 / CHUNK as f64),
        );
    }
    d
}

fn throughput_case<R: Ring<u64>>(c: &mut Criterion) {
    let mut g = c.benchmark_group("rings_throughput_u64_1M");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(THROUGHPUT_MSGS));
    g.bench_function(R::NAME, |b| {
        b.iter_custom(|iters| (0..iters).map(|_| throughput_run::<R>(None)).sum())
    });
    g.finish();
}

fn throughput(c: &mut Criterion) {
    pin_me();
    throughput_case::<Rtrb>(c);
    throughput_case::<Ringbuf>(c);
}

// ---------------------------------------------------------------------------------------
// c. Cross-thread one-way hand-off latency (ping-pong).

/// This thread's ends of a ping-pong pair; the echo thread (pinned to the other core)
/// sends back whatever it receives.
struct PingPong<R: Ring<u64>> {
    ping: R::P,
    pong: R::C,
    echo: Option<thread::JoinHandle<()>>,
}

impl<R: Ring<u64>> PingPong<R> {
    fn start() -> Self {
        let (ping, mut ping_rx) = R::with_capacity(16);
        let (mut pong_tx, pong) = R::with_capacity(16);
        let echo = thread::spawn(move || {
            pin_other();
            loop {
                let v = pop_spin::<R, u64>(&mut ping_rx);
                push_spin::<R, u64>(&mut pong_tx, v);
                if v == STOP {
                    return;
                }
            }
        });
        PingPong {
            ping,
            pong,
            echo: Some(echo),
        }
    }

    #[inline]
    fn round_trip(&mut self, v: u64) {
        push_spin::<R, u64>(&mut self.ping, v);
        let back = pop_spin::<R, u64>(&mut self.pong);
        debug_assert_eq!(back, v);
        black_box(back);
    }

    /// `n` individually timed round trips, each as one-way ns (round trip / 2).
    fn timed(&mut self, n: usize, out: &mut Vec<u64>) {
        for i in 0..10_000 {
            self.round_trip(i);
        }
        out.extend((0..n as u64).map(|i| {
            let t = Instant::now();
            self.round_trip(i);
            t.elapsed().as_nanos() as u64 / 2
        }));
    }
}

impl<R: Ring<u64>> Drop for PingPong<R> {
    fn drop(&mut self) {
        push_spin::<R, u64>(&mut self.ping, STOP);
        let _ = pop_spin::<R, u64>(&mut self.pong);
        if let Some(echo) = self.echo.take() {
            echo.join().expect("echo thread");
        }
    }
}

fn latency_case<R: Ring<u64>>(c: &mut Criterion) {
    let mut pp = PingPong::<R>::start();
    let mut g = c.benchmark_group("rings_latency_oneway_u64");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    g.bench_function(R::NAME, |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            for i in 0..iters {
                pp.round_trip(i);
            }
            t.elapsed() / 2
        })
    });
    g.finish();
}

fn latency(c: &mut Criterion) {
    pin_me();
    latency_case::<Rtrb>(c);
    latency_case::<Ringbuf>(c);
}

// ---------------------------------------------------------------------------------------
// The RESULT lines: all cases again, the two crates interleaved round by round so that
// both see the same machine conditions (other load on a small shared machine moves
// cross-thread numbers a lot). Does not depend on criterion's output.

fn pct(sorted: &[u64], p: f64) -> u64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
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

/// (wall, thread CPU) ns per message over a run of same-thread batches.
fn same_thread_run<R: Ring<T>, T: Copy + Send + 'static>(make: fn(u64) -> T) -> (f64, f64) {
    const BATCHES: u32 = 200_000;
    let msgs: Vec<T> = (0..BATCH as u64).map(make).collect();
    let (mut p, mut c) = R::with_capacity(BATCH);
    for _ in 0..1000 {
        batch::<R, T>(&mut p, &mut c, black_box(&msgs));
    }
    let cpu = thread_cpu_ns();
    let t = Instant::now();
    for _ in 0..BATCHES {
        batch::<R, T>(&mut p, &mut c, black_box(&msgs));
    }
    let wall = t.elapsed().as_nanos() as f64;
    let cpu = (thread_cpu_ns() - cpu) as f64;
    let n = f64::from(BATCHES) * BATCH as f64;
    (wall / n, cpu / n)
}

fn summary_same_thread<T: Copy + Send + 'static>(what: &str, make: fn(u64) -> T)
where
    Rtrb: Ring<T>,
    Ringbuf: Ring<T>,
{
    const ROUNDS: usize = 15;
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        a.push(same_thread_run::<Rtrb, T>(make));
        b.push(same_thread_run::<Ringbuf, T>(make));
    }
    for (name, v) in [("rtrb", a), ("ringbuf", b)] {
        let wall = sorted(v.iter().map(|x| x.0).collect());
        let cpu = sorted(v.iter().map(|x| x.1).collect());
        println!(
            "RESULT rings {name} same_thread_{what} median_ns_per_msg={:.2} min_ns_per_msg={:.2} \
             median_cpu_ns_per_msg={:.2} rounds={ROUNDS}",
            wall[wall.len() / 2],
            wall[0],
            cpu[cpu.len() / 2],
        );
    }
}

fn summary(_: &mut Criterion) {
    pin_me();
    summary_same_thread::<u64>("u64", |i| i);
    summary_same_thread::<Msg>("msg24", Msg::nth);

    const TP_ROUNDS: usize = 20;
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let (mut ca, mut cb) = (Vec::new(), Vec::new());
    let (mut ya, mut yb) = (0, 0);
    take_yields();
    for _ in 0..TP_ROUNDS {
        a.push(throughput_run::<Rtrb>(Some(&mut ca)).as_nanos() as f64 / THROUGHPUT_MSGS as f64);
        ya += take_yields();
        b.push(throughput_run::<Ringbuf>(Some(&mut cb)).as_nanos() as f64 / THROUGHPUT_MSGS as f64);
        yb += take_yields();
    }
    for (name, v, c, y) in [
        ("rtrb", sorted(a), sorted(ca), ya),
        ("ringbuf", sorted(b), sorted(cb), yb),
    ] {
        println!(
            "RESULT rings {name} throughput_u64 median_ns_per_msg={:.2} min_ns_per_msg={:.2} runs={TP_ROUNDS} yields={y} \
             chunk{CHUNK}_p10_ns_per_msg={:.2} chunk{CHUNK}_p50_ns_per_msg={:.2} chunks={}",
            v[v.len() / 2],
            v[0],
            c[c.len() / 10],
            c[c.len() / 2],
            c.len()
        );
    }

    // The cost of one Instant::now(), included once in each timed round trip.
    let n = 1_000_000u32;
    let t = Instant::now();
    for _ in 0..n {
        black_box(Instant::now());
    }
    println!(
        "RESULT rings clock instant_now_ns={:.1}",
        t.elapsed().as_nanos() as f64 / f64::from(n)
    );

    const LAT_ROUNDS: usize = 5;
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let (mut ya, mut yb) = (0, 0);
    let mut pa = PingPong::<Rtrb>::start();
    let mut pb = PingPong::<Ringbuf>::start();
    take_yields();
    for _ in 0..LAT_ROUNDS {
        pa.timed(LATENCY_ROUND_TRIPS / LAT_ROUNDS, &mut a);
        ya += take_yields();
        pb.timed(LATENCY_ROUND_TRIPS / LAT_ROUNDS, &mut b);
        yb += take_yields();
    }
    drop((pa, pb));
    for (name, mut v, y) in [("rtrb", a, ya), ("ringbuf", b, yb)] {
        v.sort_unstable();
        println!(
            "RESULT rings {name} latency_oneway p50_ns={} p99_ns={} p999_ns={} max_ns={} samples={} yields={y}",
            pct(&v, 0.50),
            pct(&v, 0.99),
            pct(&v, 0.999),
            v[v.len() - 1],
            v.len()
        );
    }
}

criterion_group!(benches, same_thread, throughput, latency, summary);
criterion_main!(benches);
