//! The ring crate measured, not assumed: `rtrb` against `ringbuf` (0.4, `HeapRb` split
//! into its caching producer/consumer) for what a lane does with its SPSC rings, carrying
//! small messages (a u64 token and a 24-byte enum-like message).
//!
//! Cases:
//! - `same_thread`: push 64 then pop 64 on one thread (the fused lane: all four stages on
//!   one thread, rings between them). Criterion time is per 64 messages.
//! - `throughput`: a producer thread pushes [`THROUGHPUT_MSGS`] u64 as fast as it can, the
//!   consumer (this thread) pops them; both spin on full/empty. Time is per 1M messages.
//! - `latency`: ping-pong over two rings between two threads; criterion reports round
//!   trip / 2 (one-way hand-off). A separate pass of [`LATENCY_ROUND_TRIPS`] timed round
//!   trips prints percentiles as
//!   `RESULT rings <crate> latency_oneway p50_ns=.. p99_ns=.. p999_ns=..` (each sample
//!   includes one `Instant::now()` call, ~half of which is in the one-way figure; the
//!   measured clock cost is printed as `RESULT rings clock ...`).
//!
//! The two threads are pinned to the first two cores when two or more exist. Each
//! cross-thread case also prints its own `RESULT` line (median and min over repeated runs)
//! so the numbers do not depend on reading criterion's output.
//!
//! Run: `cargo bench --bench rings` (about a minute).

use std::hint::{black_box, spin_loop};
use std::sync::atomic::{AtomicU32, Ordering};
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

/// A 24-byte enum-like message, shaped like a lane's stage messages: a tag plus up to two
/// words of payload (token, session, sequence/timestamp).
#[derive(Clone, Copy, Debug)]
#[allow(dead_code)] // fields exist to give the message its size and are only moved
enum Msg {
    Packet { token: u32, session: u64, seq: u16 },
    Frame { token: u32, session: u64, ts: u32 },
    Command(u64, u64),
    Tick,
}
const _: () = assert!(std::mem::size_of::<Msg>() == 24);

impl Msg {
    fn nth(i: u64) -> Msg {
        match i & 3 {
            0 => Msg::Packet {
                token: i as u32,
                session: i,
                seq: i as u16,
            },
            1 => Msg::Frame {
                token: i as u32,
                session: i,
                ts: i as u32,
            },
            2 => Msg::Command(i, !i),
            _ => Msg::Tick,
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
fn cores() -> Option<(core_affinity::CoreId, core_affinity::CoreId)> {
    let ids = core_affinity::get_core_ids()?;
    (ids.len() >= 2).then(|| (ids[0], ids[1]))
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

#[inline]
fn push_spin<R: Ring<T>, T: Send + 'static>(p: &mut R::P, mut v: T) {
    loop {
        match R::push(p, v) {
            Ok(()) => return,
            Err(back) => {
                v = back;
                spin_loop();
            }
        }
    }
}

#[inline]
fn pop_spin<R: Ring<T>, T: Send + 'static>(c: &mut R::C) -> T {
    loop {
        if let Some(v) = R::pop(c) {
            return v;
        }
        spin_loop();
    }
}

// ---------------------------------------------------------------------------------------
// a. Same thread: push 64, pop 64.

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
        b.iter(|| {
            for &m in black_box(&msgs) {
                if R::push(&mut p, m).is_err() {
                    unreachable!("ring sized to the batch");
                }
            }
            for _ in 0..BATCH {
                black_box(R::pop(&mut cons));
            }
        })
    });
    g.finish();
}

fn same_thread(c: &mut Criterion) {
    // The fused lane runs on one pinned core; so does this.
    if let Some((me, _)) = cores() {
        core_affinity::set_for_current(me);
    }
    same_thread_case::<Rtrb, u64>(c, "u64", |i| i);
    same_thread_case::<Ringbuf, u64>(c, "u64", |i| i);
    same_thread_case::<Rtrb, Msg>(c, "msg24", Msg::nth);
    same_thread_case::<Ringbuf, Msg>(c, "msg24", Msg::nth);
}

// ---------------------------------------------------------------------------------------
// b. Cross-thread throughput.

/// One run: a fresh ring, a producer thread pinned to the other core, this thread pops.
/// Returns the time from both threads being ready to the last message popped.
fn throughput_run<R: Ring<u64>>() -> Duration {
    let (mut p, mut cons) = R::with_capacity(THROUGHPUT_CAPACITY);
    let ready = AtomicU32::new(0);
    thread::scope(|s| {
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
        for _ in 0..THROUGHPUT_MSGS {
            sum = sum.wrapping_add(pop_spin::<R, u64>(&mut cons));
        }
        let d = t.elapsed();
        assert_eq!(sum, THROUGHPUT_MSGS * (THROUGHPUT_MSGS - 1) / 2);
        d
    })
}

fn throughput_case<R: Ring<u64>>(c: &mut Criterion) {
    let mut g = c.benchmark_group("rings_throughput_u64_1M");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(THROUGHPUT_MSGS));
    g.bench_function(R::NAME, |b| {
        b.iter_custom(|iters| (0..iters).map(|_| throughput_run::<R>()).sum())
    });
    g.finish();

    let mut per_msg: Vec<f64> = (0..30)
        .map(|_| throughput_run::<R>().as_nanos() as f64 / THROUGHPUT_MSGS as f64)
        .collect();
    per_msg.sort_by(f64::total_cmp);
    println!(
        "RESULT rings {} throughput_u64 median_ns_per_msg={:.2} min_ns_per_msg={:.2} runs={}",
        R::NAME,
        per_msg[per_msg.len() / 2],
        per_msg[0],
        per_msg.len()
    );
}

fn throughput(c: &mut Criterion) {
    if let Some((me, _)) = cores() {
        core_affinity::set_for_current(me);
    }
    throughput_case::<Rtrb>(c);
    throughput_case::<Ringbuf>(c);
}

// ---------------------------------------------------------------------------------------
// c. Cross-thread one-way hand-off latency (ping-pong).

#[inline]
fn round_trip<R: Ring<u64>>(ping: &mut R::P, pong: &mut R::C, v: u64) {
    push_spin::<R, u64>(ping, v);
    let back = pop_spin::<R, u64>(pong);
    debug_assert_eq!(back, v);
    black_box(back);
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn latency_case<R: Ring<u64>>(c: &mut Criterion) {
    let (mut ping, mut ping_rx) = R::with_capacity(16);
    let (mut pong_tx, mut pong) = R::with_capacity(16);
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

    let mut g = c.benchmark_group("rings_latency_oneway_u64");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    g.bench_function(R::NAME, |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            for i in 0..iters {
                round_trip::<R>(&mut ping, &mut pong, i);
            }
            t.elapsed() / 2
        })
    });
    g.finish();

    // Percentiles over individually timed round trips.
    for i in 0..10_000 {
        round_trip::<R>(&mut ping, &mut pong, i);
    }
    let mut oneway_ns: Vec<u64> = (0..LATENCY_ROUND_TRIPS as u64)
        .map(|i| {
            let t = Instant::now();
            round_trip::<R>(&mut ping, &mut pong, i);
            t.elapsed().as_nanos() as u64 / 2
        })
        .collect();
    oneway_ns.sort_unstable();
    println!(
        "RESULT rings {} latency_oneway p50_ns={} p99_ns={} p999_ns={} max_ns={} samples={}",
        R::NAME,
        pct(&oneway_ns, 0.50),
        pct(&oneway_ns, 0.99),
        pct(&oneway_ns, 0.999),
        oneway_ns[oneway_ns.len() - 1],
        oneway_ns.len()
    );

    push_spin::<R, u64>(&mut ping, STOP);
    let _ = pop_spin::<R, u64>(&mut pong);
    echo.join().expect("echo thread");
}

fn latency(c: &mut Criterion) {
    let cpus = thread::available_parallelism().map_or(1, |n| n.get());
    let pinned = cores().map_or("no (fewer than 2 cores)".to_string(), |(a, b)| {
        format!("cores {} and {}", a.id, b.id)
    });
    println!("RESULT rings machine available_parallelism={cpus} pinned={pinned}");
    if let Some((me, _)) = cores() {
        core_affinity::set_for_current(me);
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
    latency_case::<Rtrb>(c);
    latency_case::<Ringbuf>(c);
}

criterion_group!(benches, same_thread, throughput, latency);
criterion_main!(benches);
