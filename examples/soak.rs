//! Soak test: real-time lanes under a mixed, churning, partly hostile load for a fixed time,
//! judged on deadline overruns, lost slots, resident-memory growth and panics.
//!
//! ```text
//! cargo run --release --example soak -- --seconds S [--calls N] [--lanes L] [--json]
//!     [--capacity C] [--load F] [--churn R] [--updates R] [--malformed-pct P]
//!     [--ssrc-changes R] [--burst-every S] [--report-every S] [--rss-slope-max K]
//!     [--routes R] [--no-fifo] [--seed N]
//! ```
//!
//! # What runs
//! - **Engine**: `ClockMode::Realtime` lanes (fused, unpinned, `raise_priority`), started
//!   under SCHED_FIFO (inherited, so the lanes get the top real-time priority; `--no-fifo`
//!   leaves them SCHED_OTHER at nice -20, which on a shared two-core machine lets other
//!   people's builds delay a tick).
//! - **Traffic thread** (SCHED_FIFO priority 1, below the lanes): owns every lane's
//!   ingress and egress handle, wakes every 1 ms on absolute deadlines and pushes one RTP
//!   packet per 20 ms on every leg of every call (each stream at its own random phase),
//!   then pops all egress. The call mix is mostly G.711 (see [`MIX`]): PCMU and PCMA relay,
//!   PCMU-PCMA transcoding, G.722-PCMU, Opus-PCMU and Opus-Opus. Payloads are real
//!   encoded frames of a tone.
//! - **Hostile input**: `--malformed-pct` (1%) of packets are replaced by garbage bytes, a
//!   truncated header, an unknown payload type, an absurd sequence/timestamp jump or an
//!   oversized packet; `--ssrc-changes` streams per second switch to a new SSRC (with new
//!   random sequence and timestamp bases); every `--burst-every` seconds each lane's ingress
//!   gets, in one go, twice as many packets (duplicates of live streams) as it has free
//!   slots: every refused push must come back as a typed `RingFull` at once and be counted
//!   by the lane (`ingress_full` must equal the refusals seen here).
//! - **Churn thread**: destroys a random call and creates a new one continuously, so that
//!   `--churn` sessions per second are created and as many destroyed (default 50/s). Each
//!   destroyed session's final counters are added to the run's totals first.
//! - **Control thread**: `--updates` times per second (default 5) calls
//!   `update_media_session` on a random live session: new jitter-buffer bounds or a new DSP
//!   gain (a non-zero gain turns a relay into decode + encode).
//! - **Route thread**: `--routes` times per second (default 2) changes a random live
//!   call's routing, as a gateway parking, transferring and playing prompts does: a bridged
//!   call is parked (`unbridge`, then an RFC 4733 digit sent on leg A with no source to
//!   drive its sender) or has leg A attached to the application audio handle
//!   (`attach_audio`, leaving B with no source); a parked call has A attached; an attached
//!   one is bridged again. The traffic thread is the application too: it owns every lane's
//!   `AudioHandle`, writes one frame of a tone per 20 ms for each attached session and
//!   reads every frame the lanes hand it. A write racing a route change or a destroy gets
//!   a typed error (`NotAttached`, `UnknownSession`), counted.
//!
//! # Load
//! `--calls` defaults to `--load` (0.7) x the capacity of the mix, where the mix capacity is
//! `--capacity` (paced relay-pcmu calls per lane that pass `sessions_per_core`'s test on this
//! machine) divided by the mix's cost relative to relay-pcmu, taken from the virtual-clock
//! table in PERF.md (calls per core: relay 12,692, pcmu-pcma 10,213, g722-pcmu 1,184,
//! opus-pcmu 110, opus-opus 22,690). The figures used are printed at start.
//!
//! # What is judged (exit code 1 if any fails)
//! - no deadline overrun (`LaneStats::deadline_overruns`, `ticks_skipped`) after the first
//!   2 s (warm-up) until the traffic stops; `--allow-overruns N` forgives N overrun ticks,
//!   `--allow-stalls N` N stalls: runs of consecutive overrun ticks of one lane (from the
//!   lanes' `DeadlineOverrun` events), each at most [`MAX_STALL_TICKS`], as one late
//!   wake-up of a lane thread leaves (it overruns, then the ticks it caught up back to
//!   back do). A skipped tick, a longer stall, or overrun ticks the events do not account
//!   for are never forgiven;
//! - nothing lost: after destroying every call and letting the lanes idle, free session
//!   slots, each lane's `frame_slots_free`, each ingress handle's free packet slots, each
//!   egress handle's free slots and each audio handle's free write slots are back at their
//!   values before the first call;
//! - when the application wrote (a session was attached while the traffic ran), it read
//!   frames too, and more than half of what it wrote was played (not dropped by the
//!   lanes);
//! - the lanes counted every refused push (`ingress_full`, `ingress_too_large` equal to the
//!   typed errors the pushes returned);
//! - resident memory (VmRSS, sampled every 0.5 s) grows by at most `--rss-slope-max` KiB per
//!   minute (least-squares slope after the RSS warm-up: the first quarter of the run, at
//!   least 10 s; judged when at least 20 s of samples remain). Default 512 KiB/min: see
//!   [`RSS_SLOPE_MAX_KIB_PER_MIN`];
//! - no panic (a panic hook counts them, on every thread, lanes included) and no `Err` from
//!   the engine other than the expected typed ones (`RingFull`, `PayloadTooLarge` for the
//!   oversized packets, `UnknownSession` for an update racing a destroy,
//!   `CapacityExhausted` while destroyed slots are being retired).
//!
//! Reports every `--report-every` seconds (default 5) and at the end; `--json` adds one JSON
//! object on stdout at the end (human lines go to stderr).

// The harness threads (traffic, churn, control) share the live-call table through a
// mutex. None of them is a lane thread; the real-time code is the engine's.
#![allow(clippy::disallowed_types)]

#[path = "common/sched.rs"]
mod sched;

use sched::set_fifo;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use media_core::buffer::adaptive::JitterConfig;
use media_core::codec::{AnyEncoder, Codec};
use media_core::processing::audio::DspConfig;
use media_core::rtp::{write_header, RtpHeader};
use media_core::runtime::clock::{monotonic_ns, sleep_until_ns};
use media_core::runtime::stats::{HistogramSnapshot, LaneStats, SessionStats};
use media_core::{
    AudioHandle, CodecSpec, DialogId, EgressHandle, EngineConfig, EngineEvent, Error,
    IngressHandle, MediaEngine, MediaSessionParams, PayloadType, Ptime, SessionId,
};

const PTIME: Ptime = Ptime::MS_20;
/// Traffic generator slot.
const SLOT_NS: u64 = 1_000_000;
/// Slots per packet period (20 ms).
const SLOTS_PER_PERIOD: u64 = 20;
/// Overruns in the first seconds are not judged (thread start, first touches of slabs).
const WARMUP_S: f64 = 2.0;

/// Longest stall (consecutive overrun ticks of one lane) that `--allow-stalls` forgives:
/// 100 ms. A late wake-up of 50 ms leaves about six (the late tick and those that catch up
/// back to back); a lane that cannot keep up overruns for longer, or falls more than 10
/// ticks behind and skips ticks, which no allowance forgives.
const MAX_STALL_TICKS: u64 = 10;

/// Overrun ticks of one lane in a row: one late wake-up and the catching up after it.
#[derive(Debug, Clone, Copy)]
struct Stall {
    lane: u16,
    first_tick: u64,
    ticks: u64,
}

/// Groups `(lane, tick, late_ns)` overruns at or after tick `from` into stalls (runs of
/// consecutive ticks on one lane).
fn stalls(overruns: &[(u16, u64, u64)], from: u64) -> Vec<Stall> {
    let mut sorted: Vec<(u16, u64)> = overruns
        .iter()
        .filter(|o| o.1 >= from)
        .map(|&(lane, tick, _)| (lane, tick))
        .collect();
    sorted.sort_unstable();
    let mut out: Vec<Stall> = Vec::new();
    for (lane, tick) in sorted {
        match out.last_mut() {
            Some(s) if s.lane == lane && s.first_tick + s.ticks == tick => s.ticks += 1,
            _ => out.push(Stall {
                lane,
                first_tick: tick,
                ticks: 1,
            }),
        }
    }
    out
}
/// Distinct tone frames per codec.
const TONE_FRAMES: usize = 50;
/// Default RSS growth limit, KiB per minute. The smallest leak worth catching is one
/// allocation per churned session: at the default churn (50 sessions created and 50
/// destroyed per second = 3,000 of each per minute) a leaked 192-byte object per session,
/// or one leaked command bundle per call, grows RSS by >= 560 KiB/min, and a leaked session
/// state (tens of KiB with codec state) by 60+ MiB/min. The limit must also sit above the
/// allocator's noise on the control plane (glibc arenas of several threads settle slowly);
/// measured here on 60 s runs: see the run's report.
const RSS_SLOPE_MAX_KIB_PER_MIN: f64 = 512.0;

/// One kind of call in the mix.
struct Kind {
    name: &'static str,
    legs: [CodecSpec; 2],
    /// Share of calls, percent.
    weight: u32,
    /// Virtual-clock calls per core (PERF.md) of this kind.
    virtual_calls_per_core: f64,
}

/// The call mix: mostly G.711, some G.722 and Opus.
#[rustfmt::skip]
const MIX: &[Kind] = &[
    Kind { name: "relay-pcmu", legs: [CodecSpec::PCMU, CodecSpec::PCMU], weight: 45, virtual_calls_per_core: 12_692.0 },
    Kind { name: "pcmu-pcma", legs: [CodecSpec::PCMU, CodecSpec::PCMA], weight: 30, virtual_calls_per_core: 10_213.0 },
    Kind { name: "relay-pcma", legs: [CodecSpec::PCMA, CodecSpec::PCMA], weight: 10, virtual_calls_per_core: 12_692.0 },
    Kind { name: "g722-pcmu", legs: [CodecSpec::G722, CodecSpec::PCMU], weight: 10, virtual_calls_per_core: 1_184.0 },
    Kind { name: "opus-pcmu", legs: [CodecSpec::OPUS, CodecSpec::PCMU], weight: 2, virtual_calls_per_core: 110.0 },
    Kind { name: "opus-opus", legs: [CodecSpec::OPUS, CodecSpec::OPUS], weight: 3, virtual_calls_per_core: 22_690.0 },
];

/// Cost of the mix per call relative to a relay-pcmu call.
fn mix_cost() -> f64 {
    let relay = MIX[0].virtual_calls_per_core;
    let total: u32 = MIX.iter().map(|k| k.weight).sum();
    MIX.iter()
        .map(|k| f64::from(k.weight) * relay / k.virtual_calls_per_core)
        .sum::<f64>()
        / f64::from(total)
}

// ---------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------

struct Opts {
    seconds: f64,
    calls: Option<usize>,
    lanes: usize,
    json: bool,
    capacity: f64,
    load: f64,
    churn: f64,
    updates: f64,
    routes: f64,
    malformed: f64,
    ssrc_changes: f64,
    burst_every_s: f64,
    report_s: f64,
    rss_slope_max: f64,
    fifo: bool,
    mlock: bool,
    seed: u64,
    /// Overruns (plus skipped ticks) after warm-up tolerated before the run fails.
    allow_overruns: u64,
    allow_stalls: u64,
}

/// Paced relay-pcmu capacity assumed per lane when `--capacity` is not given: see the
/// usage text.
const DEFAULT_CAPACITY: f64 = 968.0;

const USAGE: &str = "usage: soak --seconds S [--calls N] [--lanes L] [--json] [options]
  --seconds        run time, seconds (default 60)
  --calls          concurrent calls (default: --load x the mix capacity, printed)
  --lanes          lanes (default 1: on two cores, one for the lane, one for traffic)
  --json           one JSON object on stdout at the end (human lines go to stderr)
  --capacity       paced relay-pcmu calls one lane sustains (sessions_per_core --mode paced
                   --scenario relay-pcmu --seconds 3 --fifo); default 968, measured
                   so on the shared 2-vCPU machine (load average 9) on 2026-11-26
  --load           fraction of the mix capacity to run (default 0.7)
  --churn          sessions created per second, as many destroyed (default 50)
  --updates        update_media_session calls per second (default 5)
  --routes         calls parked, attached to the application or bridged again per second
                   (default 2)
  --malformed-pct  percent of packets replaced by malformed ones (default 1)
  --ssrc-changes   streams switching SSRC per second (default 4)
  --burst-every    seconds between ring-full bursts (default 5; 0 = none)
  --report-every   seconds between reports (default 5)
  --rss-slope-max  RSS growth limit, KiB per minute (default 512)
  --no-fifo        leave lanes and traffic SCHED_OTHER (lanes at nice -20)
  --no-mlock       do not lock the process's memory (mlockall): lanes then take page
                   faults when they first touch slab pages and fresh session state
  --seed           PRNG seed (default 1)
  --allow-overruns overruns after warm-up that still pass (default 0)
  --allow-stalls   stalls after warm-up that still pass, each at most 10 consecutive overrun
                   ticks of one lane: a late wake-up and the ticks catching up after it
                   (default 0; CI's 60 s smoke run on shared VMs allows a few, each reported)";

fn parse_args() -> Result<Opts, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut o = Opts {
        seconds: 60.0,
        calls: None,
        lanes: 1,
        json: false,
        capacity: DEFAULT_CAPACITY,
        load: 0.7,
        churn: 50.0,
        updates: 5.0,
        routes: 2.0,
        malformed: 0.01,
        ssrc_changes: 4.0,
        burst_every_s: 5.0,
        report_s: 5.0,
        rss_slope_max: RSS_SLOPE_MAX_KIB_PER_MIN,
        fifo: true,
        mlock: true,
        seed: 1,
        allow_overruns: 0,
        allow_stalls: 0,
    };
    let mut i = 0;
    while i < args.len() {
        let flag = args[i].as_str();
        match flag {
            "--json" => {
                o.json = true;
                i += 1;
                continue;
            }
            "--no-fifo" => {
                o.fifo = false;
                i += 1;
                continue;
            }
            "--no-mlock" => {
                o.mlock = false;
                i += 1;
                continue;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => {}
        }
        let v = args
            .get(i + 1)
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let num = |v: &str| -> Result<f64, String> {
            v.parse::<f64>()
                .ok()
                .filter(|x| x.is_finite() && *x >= 0.0)
                .ok_or_else(|| format!("bad value {v:?} for {flag}"))
        };
        match flag {
            "--seconds" => o.seconds = num(v)?,
            "--calls" => o.calls = Some(num(v)? as usize),
            "--lanes" => o.lanes = (num(v)? as usize).max(1),
            "--capacity" => o.capacity = num(v)?,
            "--load" => o.load = num(v)?,
            "--churn" => o.churn = num(v)?,
            "--updates" => o.updates = num(v)?,
            "--routes" => o.routes = num(v)?,
            "--malformed-pct" => o.malformed = num(v)? / 100.0,
            "--ssrc-changes" => o.ssrc_changes = num(v)?,
            "--burst-every" => o.burst_every_s = num(v)?,
            "--report-every" => o.report_s = num(v)?.max(0.5),
            "--rss-slope-max" => o.rss_slope_max = num(v)?,
            "--seed" => o.seed = num(v)? as u64,
            "--allow-overruns" => o.allow_overruns = num(v)? as u64,
            "--allow-stalls" => o.allow_stalls = num(v)? as u64,
            _ => return Err(format!("unknown flag {flag}\n{USAGE}")),
        }
        i += 2;
    }
    if o.seconds < 1.0 {
        return Err("--seconds must be at least 1".into());
    }
    Ok(o)
}

// ---------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------

/// xorshift64*: a small seeded PRNG (reproducible choices per seed).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
    fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

static PANICS: AtomicU64 = AtomicU64::new(0);

/// Resident set size of this process, KiB (VmRSS in /proc/self/status).
fn rss_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Page faults (minor, major) of this process's lane threads (named `mc-lane*`) so far:
/// a lane touching memory for the first time (slab pages, freshly allocated session
/// state) takes a page fault, which on a virtual machine can cost far more than on metal.
fn lane_faults() -> (u64, u64) {
    let mut total = (0, 0);
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return total;
    };
    for t in dir.flatten() {
        let p = t.path();
        let comm = std::fs::read_to_string(p.join("comm")).unwrap_or_default();
        if !comm.starts_with("mc-lane") {
            continue;
        }
        let stat = std::fs::read_to_string(p.join("stat")).unwrap_or_default();
        // Fields after the parenthesised name: state is field 3, minflt 10, majflt 12.
        let Some(rest) = stat.rsplit_once(')').map(|r| r.1) else {
            continue;
        };
        let f: Vec<u64> = rest
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        if f.len() > 9 {
            total.0 += f[7];
            total.1 += f[9];
        }
    }
    total
}

/// Time the hypervisor ran something else while this guest's vCPUs wanted to run
/// ("steal" in /proc/stat, all CPUs), ms: a lane can overrun through no fault of its own.
fn steal_ms() -> u64 {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("cpu "))
        .and_then(|l| l.split_whitespace().nth(8))
        .and_then(|v| v.parse::<u64>().ok())
        // USER_HZ is 100 on Linux: one tick = 10 ms.
        .map_or(0, |t| t * 10)
}

/// Least-squares slope of `(x, y)`, y per x unit; `None` under 3 points.
fn slope(points: &[(f64, f64)]) -> Option<f64> {
    if points.len() < 3 {
        return None;
    }
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

fn is_expected(e: &Error) -> bool {
    matches!(
        e,
        Error::RingFull { .. }
            | Error::UnknownSession(_)
            | Error::CapacityExhausted { .. }
            | Error::LaneFailed { .. }
    )
}

/// Counters shared by the harness threads.
#[derive(Default)]
struct Counters {
    pushed: AtomicU64,
    push_ring_full: AtomicU64,
    push_too_large: AtomicU64,
    push_rate_limited: AtomicU64,
    /// Pushes refused as `UnknownSession` (a stream racing its session's destroy).
    push_unknown: AtomicU64,
    popped: AtomicU64,
    malformed_garbage: AtomicU64,
    malformed_truncated: AtomicU64,
    malformed_unknown_pt: AtomicU64,
    malformed_jump: AtomicU64,
    malformed_oversized: AtomicU64,
    ssrc_changes: AtomicU64,
    bursts: AtomicU64,
    burst_pushes: AtomicU64,
    burst_refused: AtomicU64,
    burst_max_push_ns: AtomicU64,
    max_push_ns: AtomicU64,
    gen_late_slots: AtomicU64,
    calls_created: AtomicU64,
    calls_destroyed: AtomicU64,
    create_refused: AtomicU64,
    destroy_refused: AtomicU64,
    updates_ok: AtomicU64,
    updates_refused: AtomicU64,
    parked: AtomicU64,
    attached: AtomicU64,
    rebridged: AtomicU64,
    /// Route changes refused with a typed error (a full command ring).
    routes_refused: AtomicU64,
    /// Digits sent on parked legs, and those refused (typed: a full command ring).
    parked_digits: AtomicU64,
    parked_digits_refused: AtomicU64,
    app_written: AtomicU64,
    /// Writes refused with a typed error: `RingFull` (no free write slot) or a race with a
    /// route change or destroy (`NotAttached`, `UnknownSession`).
    app_write_full: AtomicU64,
    app_write_raced: AtomicU64,
    app_read: AtomicU64,
    unexpected_errors: AtomicU64,
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// A live call.
#[derive(Clone, Copy)]
struct Call {
    a: SessionId,
    b: SessionId,
    kind: usize,
    route: Routing,
}

/// Where a call's audio goes (changed by the route thread).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Routing {
    /// A and B bridged (as created).
    Bridged,
    /// Unbridged: both legs receive with no sink and send no audio.
    Parked,
    /// Leg A attached to the application (the traffic thread); B has no source.
    Attached,
}

enum TrafficCmd {
    Add(Call),
    Remove(Call),
    /// Write `samples`-sample frames for this session from now on.
    Attach(SessionId, usize),
    Detach(SessionId),
}

struct Shared {
    engine: MediaEngine,
    stop: AtomicBool,
    live: Mutex<Vec<Call>>,
    inbox: Mutex<Vec<TrafficCmd>>,
    totals: Mutex<SessionStats>,
    errors: Mutex<Vec<String>>,
    /// Every update issued: (monotonic ns, what), to name the command behind an overrun.
    update_log: Mutex<Vec<(u64, String)>>,
    /// Control threads still in their pre-warm phase.
    prewarm_left: AtomicU64,
    c: Counters,
}

impl Shared {
    fn unexpected(&self, what: &str, e: &Error) {
        add(&self.c.unexpected_errors, 1);
        let mut v = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        if v.len() < 20 {
            v.push(format!("{what}: {e}"));
        }
    }

    /// Adds a session's final counters to the run's totals.
    fn account(&self, id: SessionId) {
        if let Ok(s) = self.engine.session_stats(id) {
            let mut t = self.totals.lock().unwrap_or_else(|p| p.into_inner());
            add_stats(&mut t, &s);
        }
    }
}

fn add_stats(t: &mut SessionStats, s: &SessionStats) {
    t.rx_packets += s.rx_packets;
    t.rx_unsupported_pt += s.rx_unsupported_pt;
    t.rx_late += s.rx_late;
    t.rx_duplicates += s.rx_duplicates;
    t.jb_duplicates += s.jb_duplicates;
    t.rx_resyncs += s.rx_resyncs;
    t.jb_resyncs += s.jb_resyncs;
    t.rx_undecodable += s.rx_undecodable;
    t.jb_overflows += s.jb_overflows;
    t.slab_exhausted += s.slab_exhausted;
    t.no_sink += s.no_sink;
    t.tx_egress_full += s.tx_egress_full;
    t.codec_errors += s.codec_errors;
    t.frames_decoded += s.frames_decoded;
    t.frames_relayed += s.frames_relayed;
    t.frames_concealed += s.frames_concealed;
    t.tx_packets += s.tx_packets;
}

fn params(spec: CodecSpec) -> MediaSessionParams {
    let mut p = MediaSessionParams::new(spec, PTIME);
    // Digits can be sent on any leg (the route thread sends one on each call it parks).
    p.telephone_event_pt = PayloadType::new(101);
    p.telephone_event_send_pt = PayloadType::new(101);
    // A parked leg, and B while A is attached, keep their streams alive.
    p.keepalive_ms = 1000;
    p
}

fn pick_kind(rng: &mut Rng) -> usize {
    let total: u32 = MIX.iter().map(|k| k.weight).sum();
    let mut r = rng.below(u64::from(total)) as u32;
    for (i, k) in MIX.iter().enumerate() {
        if r < k.weight {
            return i;
        }
        r -= k.weight;
    }
    0
}

// ---------------------------------------------------------------------------------------
// Traffic
// ---------------------------------------------------------------------------------------

/// Encoded tone frames per codec.
struct Payloads {
    pcmu: Vec<Vec<u8>>,
    pcma: Vec<Vec<u8>>,
    g722: Vec<Vec<u8>>,
    opus: Vec<Vec<u8>>,
}

impl Payloads {
    fn new() -> Result<Self, String> {
        let make = |c: Codec| -> Result<Vec<Vec<u8>>, String> {
            let mut enc = AnyEncoder::new(c);
            let samples = c.frame_samples(PTIME);
            let rate = c.info().sample_rate.hz() as f64;
            (0..TONE_FRAMES)
                .map(|f| {
                    let pcm: Vec<i16> = (0..samples)
                        .map(|i| {
                            let n = (f * samples + i) as f64;
                            ((n * 2.0 * std::f64::consts::PI * 440.0 / rate).sin() * 8000.0) as i16
                        })
                        .collect();
                    let mut out = vec![0u8; 1000];
                    let n = enc
                        .encode(&pcm, &mut out)
                        .map_err(|e| format!("encoding a tone with {c:?}: {e:?}"))?;
                    out.truncate(n);
                    Ok(out)
                })
                .collect()
        };
        Ok(Payloads {
            pcmu: make(Codec::Pcmu)?,
            pcma: make(Codec::Pcma)?,
            g722: make(Codec::G722)?,
            opus: make(Codec::Opus)?,
        })
    }

    fn frames(&self, c: Codec) -> &[Vec<u8>] {
        match c {
            Codec::Pcmu => &self.pcmu,
            Codec::Pcma => &self.pcma,
            Codec::G722 => &self.g722,
            Codec::Opus => &self.opus,
            // Codec is non-exhaustive; the mix uses only the four above.
            _ => &self.pcmu,
        }
    }
}

/// One leg's stream into the engine.
struct Stream {
    id: SessionId,
    codec: Codec,
    pt: u8,
    ts_step: u32,
    phase: u64,
    seq: u16,
    ts: u32,
    ssrc: u32,
    frame: usize,
}

impl Stream {
    fn new(id: SessionId, spec: CodecSpec, rng: &mut Rng) -> Self {
        Stream {
            id,
            codec: spec.codec,
            pt: spec.payload_type.get(),
            ts_step: spec.codec.timestamp_step(PTIME),
            phase: rng.below(SLOTS_PER_PERIOD),
            seq: rng.next() as u16,
            ts: rng.next() as u32,
            ssrc: rng.next() as u32,
            frame: 0,
        }
    }

    /// Writes the stream's packet with sequence `seq` and timestamp `ts` into `buf`.
    fn write(&self, p: &Payloads, seq: u16, ts: u32, pt: u8, buf: &mut [u8]) -> usize {
        let payload = &p.frames(self.codec)[self.frame % TONE_FRAMES];
        let h = RtpHeader {
            marker: false,
            payload_type: pt,
            sequence: seq,
            timestamp: ts,
            ssrc: self.ssrc,
        };
        // Cannot fail: `buf` holds more than a header and the largest tone frame.
        let _ = write_header(&h, buf);
        buf[12..12 + payload.len()].copy_from_slice(payload);
        12 + payload.len()
    }
}

struct Traffic {
    sh: Arc<Shared>,
    io: Vec<(IngressHandle, EgressHandle)>,
    /// Every lane's application audio handle, and the sessions attached to them with
    /// their frame lengths.
    audio: Vec<AudioHandle>,
    attached: Vec<(SessionId, usize)>,
    /// A tone long enough for the longest frame (48 kHz, 20 ms).
    tone: Vec<i16>,
    payloads: Payloads,
    streams: Vec<Stream>,
    rng: Rng,
    buf: Vec<u8>,
    malformed: f64,
}

impl Traffic {
    fn push(&mut self, lane: usize, id: SessionId, len: usize, now: u64) -> Result<(), ()> {
        let t0 = monotonic_ns();
        let r = self.io[lane].0.push_at(id, &self.buf[..len], now);
        let dt = monotonic_ns() - t0;
        self.sh.c.max_push_ns.fetch_max(dt, Ordering::Relaxed);
        match r {
            Ok(()) => {
                add(&self.sh.c.pushed, 1);
                Ok(())
            }
            Err(Error::RingFull { .. }) => {
                add(&self.sh.c.push_ring_full, 1);
                Err(())
            }
            Err(Error::PayloadTooLarge { .. }) => {
                add(&self.sh.c.push_too_large, 1);
                Err(())
            }
            Err(Error::RateLimited) => {
                add(&self.sh.c.push_rate_limited, 1);
                Err(())
            }
            Err(Error::UnknownSession(_)) => {
                add(&self.sh.c.push_unknown, 1);
                Err(())
            }
            Err(e) => {
                self.sh.unexpected("IngressHandle::push", &e);
                Err(())
            }
        }
    }

    /// Sends stream `i`'s next packet (or a malformed one in its place).
    fn send(&mut self, i: usize, now: u64) {
        let s = &self.streams[i];
        let (id, lane) = (s.id, s.id.lane());
        let mut len = s.write(&self.payloads, s.seq, s.ts, s.pt, &mut self.buf);
        if self.rng.chance(self.malformed) {
            let c = &self.sh.c;
            match self.rng.below(5) {
                0 => {
                    len = 1 + self.rng.below(200) as usize;
                    for b in &mut self.buf[..len] {
                        *b = self.rng.next() as u8;
                    }
                    add(&c.malformed_garbage, 1);
                }
                1 => {
                    len = 1 + self.rng.below(11) as usize;
                    add(&c.malformed_truncated, 1);
                }
                2 => {
                    // 77: in the dynamic range, negotiated by no session here.
                    len = s.write(&self.payloads, s.seq, s.ts, 77, &mut self.buf);
                    add(&c.malformed_unknown_pt, 1);
                }
                3 => {
                    let jump = 10_000 + self.rng.below(40_000) as u16;
                    let tjump = (1u32 << 30).wrapping_add(self.rng.next() as u32 >> 2);
                    len = s.write(
                        &self.payloads,
                        s.seq.wrapping_add(jump),
                        s.ts.wrapping_add(tjump),
                        s.pt,
                        &mut self.buf,
                    );
                    add(&c.malformed_jump, 1);
                }
                _ => {
                    len = self.io[lane].0.max_packet_bytes() + 1 + self.rng.below(100) as usize;
                    add(&c.malformed_oversized, 1);
                }
            }
        }
        let _ = self.push(lane, id, len, now);
        let s = &mut self.streams[i];
        s.seq = s.seq.wrapping_add(1);
        s.ts = s.ts.wrapping_add(s.ts_step);
        s.frame += 1;
    }

    /// Pushes twice as many packets as each lane has free slots, in one go: duplicates of
    /// the lane's streams' previous packets.
    fn burst(&mut self, now: u64) {
        add(&self.sh.c.bursts, 1);
        for lane in 0..self.io.len() {
            let idx: Vec<usize> = (0..self.streams.len())
                .filter(|&i| self.streams[i].id.lane() == lane)
                .collect();
            if idx.is_empty() {
                continue;
            }
            let n = 2 * self.io[lane].0.free_slots() + 64;
            let (mut refused, mut max_ns) = (0u64, 0u64);
            for k in 0..n {
                let s = &self.streams[idx[k % idx.len()]];
                let id = s.id;
                let len = s.write(
                    &self.payloads,
                    s.seq.wrapping_sub(1),
                    s.ts.wrapping_sub(s.ts_step),
                    s.pt,
                    &mut self.buf,
                );
                let t0 = monotonic_ns();
                if self.push(lane, id, len, now).is_err() {
                    refused += 1;
                }
                max_ns = max_ns.max(monotonic_ns() - t0);
            }
            add(&self.sh.c.burst_pushes, n as u64);
            add(&self.sh.c.burst_refused, refused);
            self.sh
                .c
                .burst_max_push_ns
                .fetch_max(max_ns, Ordering::Relaxed);
        }
    }

    /// The application's 20 ms: one frame of the tone for every attached session.
    fn write_app_frames(&mut self) {
        let c = &self.sh.c;
        for &(id, samples) in &self.attached {
            let Some(audio) = self.audio.get_mut(id.lane()) else {
                continue;
            };
            match audio.write(id, &self.tone[..samples.min(self.tone.len())]) {
                Ok(()) => add(&c.app_written, 1),
                Err(Error::RingFull { .. }) => add(&c.app_write_full, 1),
                Err(Error::NotAttached(_) | Error::UnknownSession(_)) => add(&c.app_write_raced, 1),
                Err(e) => self.sh.unexpected("AudioHandle::write", &e),
            }
        }
    }

    /// Reads (and drops) every frame the lanes handed the application.
    fn read_app_frames(&mut self) {
        let mut read = 0;
        for audio in &mut self.audio {
            while let Some(f) = audio.read() {
                read += u64::from(!f.is_empty());
            }
        }
        add(&self.sh.c.app_read, read);
    }

    fn run(mut self, ssrc_changes_per_s: f64, burst_every_s: f64) -> Self {
        let t0 = monotonic_ns() + SLOT_NS;
        let ssrc_every = if ssrc_changes_per_s > 0.0 {
            ((1000.0 / ssrc_changes_per_s) as u64).max(1)
        } else {
            u64::MAX
        };
        let burst_every = if burst_every_s > 0.0 {
            ((burst_every_s * 1000.0) as u64).max(1)
        } else {
            u64::MAX
        };
        let mut n: u64 = 0;
        while !self.sh.stop.load(Ordering::Relaxed) {
            let deadline = t0 + n * SLOT_NS;
            sleep_until_ns(deadline);
            let now = monotonic_ns();
            if now > deadline + 10 * SLOT_NS {
                add(&self.sh.c.gen_late_slots, 1);
            }
            if let Ok(mut inbox) = self.sh.inbox.try_lock() {
                for cmd in inbox.drain(..) {
                    match cmd {
                        TrafficCmd::Add(call) => {
                            let k = &MIX[call.kind];
                            let sa = Stream::new(call.a, k.legs[0], &mut self.rng);
                            let sb = Stream::new(call.b, k.legs[1], &mut self.rng);
                            self.streams.push(sa);
                            self.streams.push(sb);
                        }
                        TrafficCmd::Remove(call) => {
                            self.streams.retain(|s| s.id != call.a && s.id != call.b);
                            self.attached.retain(|(s, _)| *s != call.a && *s != call.b);
                        }
                        TrafficCmd::Attach(id, samples) => self.attached.push((id, samples)),
                        TrafficCmd::Detach(id) => self.attached.retain(|(s, _)| *s != id),
                    }
                }
            }
            let phase = n % SLOTS_PER_PERIOD;
            for i in 0..self.streams.len() {
                if self.streams[i].phase == phase {
                    self.send(i, now);
                }
            }
            if n % ssrc_every == ssrc_every - 1 && !self.streams.is_empty() {
                let i = self.rng.below(self.streams.len() as u64) as usize;
                let s = &mut self.streams[i];
                s.ssrc = self.rng.next() as u32;
                s.seq = self.rng.next() as u16;
                s.ts = self.rng.next() as u32;
                add(&self.sh.c.ssrc_changes, 1);
            }
            if n % burst_every == burst_every - 1 {
                self.burst(now);
            }
            if phase == 0 {
                self.write_app_frames();
            }
            let mut popped = 0;
            for (_, eg) in self.io.iter_mut() {
                while let Some(p) = eg.pop() {
                    popped += u64::from(!p.is_empty());
                }
            }
            add(&self.sh.c.popped, popped);
            self.read_app_frames();
            n += 1;
        }
        self
    }
}

// ---------------------------------------------------------------------------------------
// Churn and control
// ---------------------------------------------------------------------------------------

fn create_call(sh: &Shared, kind: usize, dialog: &mut u64) -> Option<Call> {
    let k = &MIX[kind];
    let d = *dialog;
    *dialog += 2;
    match sh.engine.create_call(
        (DialogId(d), params(k.legs[0])),
        (DialogId(d + 1), params(k.legs[1])),
    ) {
        Ok((a, b)) => {
            add(&sh.c.calls_created, 1);
            Some(Call {
                a: a.id,
                b: b.id,
                kind,
                route: Routing::Bridged,
            })
        }
        Err(e) if is_expected(&e) => {
            add(&sh.c.create_refused, 1);
            // The lanes take commands every tick: give them one.
            std::thread::sleep(Duration::from_millis(2));
            None
        }
        Err(e) => {
            sh.unexpected("create_call", &e);
            None
        }
    }
}

/// Destroys both legs (final counters accounted first). A full command ring (typed
/// `RingFull`) is waited out: the lanes apply commands every tick.
fn destroy_call(sh: &Shared, call: Call) {
    for id in [call.a, call.b] {
        sh.account(id);
        let t0 = Instant::now();
        loop {
            match sh.engine.destroy_media_session(id) {
                Ok(()) => break,
                Err(Error::RingFull { .. }) if t0.elapsed() < Duration::from_secs(5) => {
                    add(&sh.c.destroy_refused, 1);
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => {
                    sh.unexpected("destroy_media_session", &e);
                    break;
                }
            }
        }
    }
    add(&sh.c.calls_destroyed, 1);
}

/// Runs `work` until the run stops: `prewarm` times as fast as the lanes take the commands
/// (the pre-warm; counted down in `prewarm_left` when done), then `per_s` times a second on
/// absolute deadlines, or no more when `per_s` is 0. The control threads' common loop.
fn paced(sh: &Shared, per_s: f64, prewarm: u64, mut work: impl FnMut()) {
    let period = if per_s > 0.0 {
        (1e9 / per_s) as u64
    } else {
        u64::MAX / 4
    };
    let mut t0 = monotonic_ns();
    let mut n = 1;
    let mut k = 0;
    while !sh.stop.load(Ordering::Relaxed) {
        k += 1;
        if k == prewarm + 1 {
            sh.prewarm_left.fetch_sub(1, Ordering::SeqCst);
            t0 = monotonic_ns();
        }
        if k > prewarm {
            if per_s <= 0.0 {
                return;
            }
            sleep_until_ns(t0 + n * period);
            n += 1;
        }
        work();
    }
}

/// Destroys a random call and creates one, `prewarm` times as fast as the lanes take the
/// commands, then paced at `sessions_per_s` until stopped.
fn churn_thread(sh: Arc<Shared>, sessions_per_s: f64, seed: u64, mut dialog: u64, prewarm: u64) {
    let mut rng = Rng::new(seed ^ 0xC0FFEE);
    // One iteration destroys one call (2 sessions) and creates one (2 sessions).
    paced(&sh, sessions_per_s / 2.0, prewarm, || {
        let victim = {
            let mut live = sh.live.lock().unwrap_or_else(|p| p.into_inner());
            if live.is_empty() {
                None
            } else {
                let i = rng.below(live.len() as u64) as usize;
                Some(live.swap_remove(i))
            }
        };
        if let Some(call) = victim {
            destroy_call(&sh, call);
            sh.inbox
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(TrafficCmd::Remove(call));
        }
        if let Some(call) = create_call(&sh, pick_kind(&mut rng), &mut dialog) {
            sh.live.lock().unwrap_or_else(|p| p.into_inner()).push(call);
            sh.inbox
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(TrafficCmd::Add(call));
        }
    });
}

/// Updates a random live session, `prewarm` times as fast as the lanes take the commands,
/// then paced at `per_s` until stopped.
fn update_thread(sh: Arc<Shared>, per_s: f64, seed: u64, prewarm: u64) {
    let mut rng = Rng::new(seed ^ 0xBADC0DE);
    paced(&sh, per_s, prewarm, || {
        let pick = {
            let live = sh.live.lock().unwrap_or_else(|p| p.into_inner());
            if live.is_empty() {
                return;
            }
            live[rng.below(live.len() as u64) as usize]
        };
        let k = &MIX[pick.kind];
        let leg = rng.below(2) as usize;
        let id = [pick.a, pick.b][leg];
        let mut p = params(k.legs[leg]);
        let what = if rng.below(2) == 0 {
            let j = JitterConfig {
                min_delay_ms: 20 + 10 * rng.below(5) as u32,
                max_delay_ms: 200 + 50 * rng.below(7) as u32,
                ..JitterConfig::default()
            };
            p.jitter = Some(j);
            format!("jitter {}..{} ms", j.min_delay_ms, j.max_delay_ms)
        } else {
            p.dsp = DspConfig {
                rx_gain_db: [0.0, -6.0, 3.0][rng.below(3) as usize],
                ..DspConfig::default()
            };
            format!("gain {} dB", p.dsp.rx_gain_db)
        };
        sh.update_log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((
                monotonic_ns(),
                format!(
                    "{} leg {} ({:?}): {what}",
                    k.name,
                    "AB".as_bytes()[leg] as char,
                    k.legs[leg].codec
                ),
            ));
        match sh.engine.update_media_session(id, p) {
            Ok(()) => add(&sh.c.updates_ok, 1),
            Err(e) if is_expected(&e) => add(&sh.c.updates_refused, 1),
            Err(e) => sh.unexpected("update_media_session", &e),
        }
    });
}

/// Changes a random live call's routing (see [`Routing`]), `prewarm` times as fast as the
/// lanes take the commands, then paced at `per_s` until stopped. The change is made, and
/// the traffic thread told, under the live-call table's lock: the churn thread takes a call
/// out of the table before destroying it, so no call is routed after its destroy and the
/// traffic thread hears of an attachment before the call's removal.
fn route_thread(sh: Arc<Shared>, per_s: f64, seed: u64, prewarm: u64) {
    let mut rng = Rng::new(seed ^ 0x0A7AC4);
    paced(&sh, per_s, prewarm, || {
        let mut live = sh.live.lock().unwrap_or_else(|p| p.into_inner());
        if live.is_empty() {
            drop(live);
            std::thread::sleep(Duration::from_millis(1));
            return;
        }
        let i = rng.below(live.len() as u64) as usize;
        let call = live[i];
        let e = &sh.engine;
        let (next, r) = match call.route {
            Routing::Bridged if rng.chance(0.5) => (Routing::Parked, e.unbridge(call.a)),
            Routing::Bridged | Routing::Parked => (Routing::Attached, e.attach_audio(call.a)),
            Routing::Attached => (Routing::Bridged, e.bridge(call.a, call.b)),
        };
        match r {
            Ok(()) => {
                live[i].route = next;
                let (counter, cmd) = match next {
                    Routing::Parked => (&sh.c.parked, None),
                    Routing::Attached => {
                        let samples = params(MIX[call.kind].legs[0]).frame_samples();
                        (&sh.c.attached, Some(TrafficCmd::Attach(call.a, samples)))
                    }
                    Routing::Bridged => (&sh.c.rebridged, Some(TrafficCmd::Detach(call.a))),
                };
                add(counter, 1);
                if let Some(cmd) = cmd {
                    sh.inbox.lock().unwrap_or_else(|p| p.into_inner()).push(cmd);
                }
                if next == Routing::Parked {
                    match e.send_dtmf(call.a, '5', 100) {
                        Ok(()) => add(&sh.c.parked_digits, 1),
                        Err(e) if is_expected(&e) => add(&sh.c.parked_digits_refused, 1),
                        Err(e) => sh.unexpected("send_dtmf", &e),
                    }
                }
            }
            Err(e) if is_expected(&e) => add(&sh.c.routes_refused, 1),
            Err(e) => sh.unexpected("routing", &e),
        }
    });
}

// ---------------------------------------------------------------------------------------
// Reports
// ---------------------------------------------------------------------------------------

fn lane_drops(s: &LaneStats) -> [(&'static str, u64); 10] {
    [
        ("unknown_session", s.unknown_session),
        ("malformed", s.malformed),
        ("ingress_full", s.ingress_full),
        ("ingress_too_large", s.ingress_too_large),
        ("ingress_rate_limited", s.ingress_rate_limited),
        ("ingress_unknown", s.ingress_unknown),
        ("slot_share_drops", s.slot_share_drops),
        ("internal_ring_full", s.internal_ring_full),
        ("stage_backlog_drops", s.stage_backlog_drops),
        ("events_dropped", s.events_dropped),
    ]
}

fn session_drops(s: &SessionStats) -> [(&'static str, u64); 10] {
    [
        ("rx_unsupported_pt", s.rx_unsupported_pt),
        ("rx_late", s.rx_late),
        ("rx_duplicates", s.rx_duplicates),
        ("jb_duplicates", s.jb_duplicates),
        ("rx_undecodable", s.rx_undecodable),
        ("jb_overflows", s.jb_overflows),
        ("slab_exhausted", s.slab_exhausted),
        ("no_sink", s.no_sink),
        ("tx_egress_full", s.tx_egress_full),
        ("codec_errors", s.codec_errors),
    ]
}

fn sum_lanes(engine: &MediaEngine, lanes: usize) -> LaneStats {
    let mut t = LaneStats::default();
    for l in 0..lanes {
        if let Some(s) = engine.lane_stats(l) {
            t.ticks += s.ticks;
            t.deadline_overruns += s.deadline_overruns;
            t.ticks_skipped += s.ticks_skipped;
            t.max_tick_ns = t.max_tick_ns.max(s.max_tick_ns);
            t.unknown_session += s.unknown_session;
            t.malformed += s.malformed;
            t.ingress_full += s.ingress_full;
            t.ingress_too_large += s.ingress_too_large;
            t.ingress_rate_limited += s.ingress_rate_limited;
            t.ingress_unknown += s.ingress_unknown;
            t.slot_share_drops += s.slot_share_drops;
            t.internal_ring_full += s.internal_ring_full;
            t.stage_backlog_drops += s.stage_backlog_drops;
            t.events_dropped += s.events_dropped;
            t.frame_slots_free += s.frame_slots_free;
            t.commands_applied += s.commands_applied;
            t.app_underruns += s.app_underruns;
            t.app_in_dropped += s.app_in_dropped;
            t.app_frames_unknown += s.app_frames_unknown;
            t.app_out_dropped += s.app_out_dropped;
            t.keepalives_sent += s.keepalives_sent;
        }
    }
    t
}

fn hist_all(engine: &MediaEngine, lanes: usize) -> Vec<HistogramSnapshot> {
    (0..lanes)
        .filter_map(|l| engine.lane_tick_histogram(l))
        .collect()
}

/// Tick-time quantiles (ns) over every lane's window: the worst lane's.
fn tick_quantiles(now: &[HistogramSnapshot], then: &[HistogramSnapshot]) -> [u64; 4] {
    let mut q = [0u64; 4];
    for (a, b) in now.iter().zip(then) {
        let w = a.since(b);
        let v = [
            w.quantile(0.5),
            w.quantile(0.99),
            w.quantile(0.999),
            w.max(),
        ];
        for (x, y) in q.iter_mut().zip(v) {
            *x = (*x).max(y);
        }
    }
    q
}

struct Out {
    json: bool,
}

impl Out {
    fn line(&self, s: &str) {
        if self.json {
            eprintln!("{s}");
        } else {
            println!("{s}");
        }
    }
}

fn ms(ns: u64) -> String {
    format!("{:.2} ms", ns as f64 / 1e6)
}

// ---------------------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------------------

fn main() {
    let o = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        default_hook(info);
    }));
    match run(&o) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("soak: {e}");
            std::process::exit(1);
        }
    }
}

fn run(o: &Opts) -> Result<bool, String> {
    let out = Out { json: o.json };
    let cost = mix_cost();
    let mix_capacity = o.capacity / cost * o.lanes as f64;
    let calls = o
        .calls
        .unwrap_or_else(|| ((o.load * mix_capacity) as usize).max(1));
    let per_lane = calls.div_ceil(o.lanes);
    // Live sessions plus room for the slots of destroyed sessions awaiting retirement.
    let sessions_per_lane = 2 * per_lane + (per_lane / 4).max(64);
    let mix: Vec<String> = MIX
        .iter()
        .map(|k| format!("{} {}%", k.name, k.weight))
        .collect();
    out.line(&format!(
        "soak: {calls} calls ({} sessions) on {} lane(s), {} session slots per lane, {} s",
        2 * calls,
        o.lanes,
        sessions_per_lane,
        o.seconds
    ));
    out.line(&format!("  mix: {}", mix.join(", ")));
    out.line(&format!(
        "  load: {}: --capacity {:.0} relay-pcmu calls per lane / mix cost {cost:.2} x relay = {mix_capacity:.0} mix calls; x --load {:.2} = {:.0}",
        if o.calls.is_some() { "--calls given" } else { "default" },
        o.capacity,
        o.load,
        o.load * mix_capacity
    ));
    out.line(&format!(
        "  churn {} sessions/s created and destroyed, {} updates/s, {}% malformed, {} SSRC changes/s, ring-full burst every {} s",
        o.churn,
        o.updates,
        o.malformed * 100.0,
        o.ssrc_changes,
        o.burst_every_s
    ));

    let mut mlocked = false;
    if o.mlock {
        // SAFETY: mlockall takes flags only; it locks current and future mappings.
        let rc = unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) };
        mlocked = rc == 0;
        if !mlocked {
            out.line("  mlockall refused (needs CAP_IPC_LOCK or a large RLIMIT_MEMLOCK): memory not locked");
        }
    }
    out.line(&format!(
        "  memory: {}",
        if mlocked {
            "locked (mlockall current and future: every page is faulted in when mapped, never on a lane's first touch)"
        } else {
            "not locked"
        }
    ));
    let payloads = Payloads::new()?;
    let engine = MediaEngine::new(EngineConfig {
        lanes: o.lanes,
        sessions_per_lane,
        ..Default::default()
    })
    .map_err(|e| format!("building the engine: {e}"))?;
    let io: Vec<_> = (0..o.lanes)
        .map(|l| engine.take_rtp_handles(l).expect("handles of a new lane"))
        .collect();
    let audio: Vec<AudioHandle> = (0..o.lanes)
        .map(|l| {
            engine
                .take_audio_handle(l)
                .expect("audio handle of a new lane")
        })
        .collect();
    let audio_free0: Vec<usize> = audio.iter().map(|a| a.free_write_slots()).collect();
    let audio_cap: Vec<usize> = audio.iter().map(|a| a.capacity()).collect();
    let ingress_free0: Vec<usize> = io.iter().map(|(i, _)| i.free_slots()).collect();
    let egress_cap: Vec<usize> = io.iter().map(|(_, e)| e.capacity()).collect();
    let io_max_packet = io
        .iter()
        .map(|(i, _)| i.max_packet_bytes())
        .max()
        .unwrap_or(0);
    let mut fifo = o.fifo;
    if fifo {
        if let Err(e) = set_fifo(true) {
            out.line(&format!(
                "  SCHED_FIFO refused ({e}): lanes run SCHED_OTHER at nice -20; other processes may delay ticks"
            ));
            fifo = false;
        }
    }
    let lane_start_ns = monotonic_ns();
    let started = engine.start();
    if fifo {
        set_fifo(false)?;
    }
    started.map_err(|e| format!("starting the engine: {e}"))?;
    out.line(&format!(
        "  scheduling: {}",
        if fifo {
            "lanes SCHED_FIFO at the top priority, traffic thread SCHED_FIFO 1"
        } else {
            "SCHED_OTHER (lanes nice -20)"
        }
    ));
    std::thread::sleep(Duration::from_millis(50));
    let free_slots0 = engine.free_session_slots();
    let frame_free0: Vec<u64> = (0..o.lanes)
        .map(|l| engine.lane_stats(l).map_or(0, |s| s.frame_slots_free))
        .collect();
    let rss0 = rss_kib().unwrap_or(0);

    let sh = Arc::new(Shared {
        engine,
        stop: AtomicBool::new(false),
        live: Mutex::new(Vec::with_capacity(calls + 16)),
        inbox: Mutex::new(Vec::new()),
        totals: Mutex::new(SessionStats::default()),
        errors: Mutex::new(Vec::new()),
        update_log: Mutex::new(Vec::new()),
        prewarm_left: AtomicU64::new(3),
        c: Counters::default(),
    });

    // Initial population (a full command ring is waited out: the lanes apply commands
    // every tick).
    let mut rng = Rng::new(o.seed);
    let mut dialog = 0u64;
    let setup = Instant::now();
    let mut initial = Vec::with_capacity(calls);
    while initial.len() < calls {
        if setup.elapsed() > Duration::from_secs(60) {
            return Err(format!(
                "could only create {} of {calls} calls in 60 s",
                initial.len()
            ));
        }
        match create_call(&sh, pick_kind(&mut rng), &mut dialog) {
            Some(c) => initial.push(c),
            None => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    let refused_at_setup = get(&sh.c.create_refused);
    let max_packet = io_max_packet;
    let mut traffic = Traffic {
        sh: sh.clone(),
        io,
        audio,
        attached: Vec::with_capacity(calls + 16),
        tone: (0..960)
            .map(|i| ((f64::from(i) * 0.0575).sin() * 6000.0) as i16)
            .collect(),
        payloads,
        streams: Vec::with_capacity(2 * calls + 64),
        rng: Rng::new(o.seed ^ 0x7AFF1C),
        buf: vec![0u8; max_packet + 256],
        malformed: o.malformed,
    };
    for c in &initial {
        let k = &MIX[c.kind];
        let sa = Stream::new(c.a, k.legs[0], &mut traffic.rng);
        let sb = Stream::new(c.b, k.legs[1], &mut traffic.rng);
        traffic.streams.push(sa);
        traffic.streams.push(sb);
    }
    sh.live
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .extend(initial);
    out.line(&format!(
        "  setup: {calls} calls created in {:.2} s ({refused_at_setup} refusals waited out); RSS {rss0} KiB before, {} KiB after",
        setup.elapsed().as_secs_f64(),
        rss_kib().unwrap_or(0)
    ));

    // Pre-warm the control plane before the clock starts: each control thread runs its
    // work as fast as the lanes take it (churn: the population replaced twice over;
    // updates: 200), so the allocator's arenas of those threads reach their working size
    // before resident memory is judged. No traffic flows meanwhile.
    let prewarm_churn = if o.churn > 0.0 { 2 * calls as u64 } else { 0 };
    let prewarm_updates = if o.updates > 0.0 { 200 } else { 0 };
    let prewarm_routes = if o.routes > 0.0 { 100 } else { 0 };
    let (s1, s2, s3) = (sh.clone(), sh.clone(), sh.clone());
    let (churn, updates, routes, seed) = (o.churn, o.updates, o.routes, o.seed);
    let churn_h = std::thread::Builder::new()
        .name("soak-churn".into())
        .spawn(move || churn_thread(s1, churn, seed, dialog, prewarm_churn))
        .map_err(|e| format!("spawning the churn thread: {e}"))?;
    let update_h = std::thread::Builder::new()
        .name("soak-control".into())
        .spawn(move || update_thread(s2, updates, seed, prewarm_updates))
        .map_err(|e| format!("spawning the control thread: {e}"))?;
    let route_h = std::thread::Builder::new()
        .name("soak-routes".into())
        .spawn(move || route_thread(s3, routes, seed, prewarm_routes))
        .map_err(|e| format!("spawning the route thread: {e}"))?;
    let pw = Instant::now();
    while sh.prewarm_left.load(Ordering::SeqCst) > 0 {
        if pw.elapsed() > Duration::from_secs(120) {
            return Err("the control plane pre-warm took over 120 s".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    for e in sh.engine.events() {
        if let EngineEvent::DeadlineOverrun { .. } = e {
            out.line("  (an overrun during the pre-warm: not judged)");
        }
    }
    let created_pw = get(&sh.c.calls_created);
    out.line(&format!(
        "  pre-warm: {prewarm_churn} churn iterations, {prewarm_updates} updates and {prewarm_routes} route changes in {:.2} s; RSS {} KiB",
        pw.elapsed().as_secs_f64(),
        rss_kib().unwrap_or(0)
    ));

    // Start the traffic.
    let (ssrc_rate, burst_s) = (o.ssrc_changes, o.burst_every_s);
    let traffic_fifo = fifo;
    let traffic_h = std::thread::Builder::new()
        .name("soak-traffic".into())
        .spawn(move || {
            if traffic_fifo {
                let _ = set_fifo(true);
            }
            traffic.run(ssrc_rate, burst_s)
        })
        .map_err(|e| format!("spawning the traffic thread: {e}"))?;
    let engine = &sh.engine;
    let t0 = Instant::now();
    let lanes0 = sum_lanes(engine, o.lanes);
    let hist0 = hist_all(engine, o.lanes);
    let mut warm: Option<(LaneStats, Vec<HistogramSnapshot>)> = None;
    let mut rss: Vec<(f64, f64)> = Vec::new();
    let mut last_report = (0.0, lanes0, hist0.clone());
    let faults0 = lane_faults();
    let steal0 = steal_ms();
    let mut last_steal = steal0;
    let mut last_faults = faults0;
    let mut warm_faults = faults0;
    let mut overrun_events = 0u64;
    let mut warm_at_ns = monotonic_ns();
    let mut overrun_list: Vec<(u16, u64, u64)> = Vec::new();
    let mut other_events = 0u64;
    let mut next_sample = 0.0;
    loop {
        let t = t0.elapsed().as_secs_f64();
        if t >= o.seconds {
            break;
        }
        if t >= next_sample {
            rss.push((t, rss_kib().unwrap_or(0) as f64));
            next_sample += 0.5;
        }
        if warm.is_none() && t >= WARMUP_S.min(o.seconds / 2.0) {
            warm_at_ns = monotonic_ns();
            warm = Some((sum_lanes(engine, o.lanes), hist_all(engine, o.lanes)));
            warm_faults = lane_faults();
        }
        for e in engine.events() {
            match e {
                EngineEvent::DeadlineOverrun {
                    lane,
                    tick,
                    late_ns,
                } => {
                    overrun_events += 1;
                    overrun_list.push((lane, tick, late_ns));
                }
                EngineEvent::PriorityFailed { .. } | EngineEvent::PinFailed { .. } => {
                    out.line(&format!("  event: {e:?}"));
                    other_events += 1;
                }
                _ => {}
            }
        }
        if t - last_report.0 >= o.report_s {
            let now = sum_lanes(engine, o.lanes);
            let h = hist_all(engine, o.lanes);
            let q = tick_quantiles(&h, &last_report.2);
            let warm_overruns = warm.as_ref().map_or(0, |w| {
                now.deadline_overruns - w.0.deadline_overruns + now.ticks_skipped
                    - w.0.ticks_skipped
            });
            let faults = lane_faults();
            let drops: Vec<String> = lane_drops(&now)
                .iter()
                .filter(|(_, v)| *v > 0)
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            out.line(&format!(
                "[{t:5.1} s] calls {} | ticks {} overruns {} (after warm-up {warm_overruns}) | tick p50 {} p99.9 {} max {} | lane page faults {} | vCPU steal {} ms | lane drops: {} | RSS {} KiB | churn +{} -{} | updates {} | bursts {} | unexpected errors {} | panics {}",
                sh.live.lock().unwrap_or_else(|p| p.into_inner()).len(),
                now.ticks - lanes0.ticks,
                now.deadline_overruns - lanes0.deadline_overruns,
                ms(q[0]),
                ms(q[2]),
                ms(q[3]),
                faults.0 + faults.1 - last_faults.0 - last_faults.1,
                steal_ms() - last_steal,
                if drops.is_empty() { "none".into() } else { drops.join(", ") },
                rss.last().map_or(0.0, |r| r.1),
                get(&sh.c.calls_created),
                get(&sh.c.calls_destroyed),
                get(&sh.c.updates_ok),
                get(&sh.c.bursts),
                get(&sh.c.unexpected_errors),
                PANICS.load(Ordering::SeqCst)
            ));
            last_report = (t, now, h);
            last_faults = faults;
            last_steal = steal_ms();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let run_s = t0.elapsed().as_secs_f64();
    // End of the judged window: before the load stops.
    let end = sum_lanes(engine, o.lanes);
    let hist_end = hist_all(engine, o.lanes);
    let faults_end = lane_faults();
    let steal_run = steal_ms() - steal0;
    let warm = warm.unwrap_or((lanes0, hist0.clone()));
    let live_calls = sh.live.lock().unwrap_or_else(|p| p.into_inner()).len();

    sh.stop.store(true, Ordering::Relaxed);
    let mut thread_panics = 0;
    let traffic = match traffic_h.join() {
        Ok(t) => Some(t),
        Err(_) => {
            thread_panics += 1;
            None
        }
    };
    thread_panics += u64::from(churn_h.join().is_err())
        + u64::from(update_h.join().is_err())
        + u64::from(route_h.join().is_err());
    let Some(mut traffic) = traffic else {
        return Err("the traffic thread panicked".into());
    };

    // Teardown: destroy everything, let the lanes idle, check nothing was lost.
    let teardown = Instant::now();
    let remaining: Vec<Call> =
        std::mem::take(&mut *sh.live.lock().unwrap_or_else(|p| p.into_inner()));
    for (i, c) in remaining.into_iter().enumerate() {
        destroy_call(&sh, c);
        // Keep popping: the lanes still send (concealment) until each session goes.
        if i % 8 == 0 {
            for (_, eg) in traffic.io.iter_mut() {
                while eg.pop().is_some() {}
            }
        }
    }
    if let Err(e) = engine.flush(Duration::from_secs(5)) {
        sh.unexpected("flush", &e);
    }
    std::thread::sleep(Duration::from_millis(200));
    for (_, eg) in traffic.io.iter_mut() {
        while eg.pop().is_some() {}
    }
    if let Err(e) = engine.flush(Duration::from_secs(5)) {
        sh.unexpected("flush", &e);
    }
    std::thread::sleep(Duration::from_millis(100));
    let teardown_s = teardown.elapsed().as_secs_f64();
    let final_lanes = sum_lanes(engine, o.lanes);
    let free_slots1 = engine.free_session_slots();
    let sessions_left = engine.session_count();
    let frame_free1: Vec<u64> = (0..o.lanes)
        .map(|l| engine.lane_stats(l).map_or(0, |s| s.frame_slots_free))
        .collect();
    let ingress_free1: Vec<usize> = traffic.io.iter().map(|(i, _)| i.free_slots()).collect();
    let egress_free1: Vec<usize> = traffic.io.iter().map(|(_, e)| e.free_slots()).collect();
    // Frames the lanes handed over after the traffic stopped (their sessions' last
    // periods) are read, as an application would, before its slots are counted.
    traffic.read_app_frames();
    let audio_free1: Vec<usize> = traffic.audio.iter().map(|a| a.free_write_slots()).collect();
    // Every frame read was dropped, so every slot the lanes hand received audio over in
    // is back with them.
    let audio_read_free1: Vec<usize> = traffic
        .audio
        .iter()
        .map(|a| a.free_read_slots() + a.pending())
        .collect();
    for e in engine.events() {
        if let EngineEvent::DeadlineOverrun {
            lane,
            tick,
            late_ns,
        } = e
        {
            overrun_events += 1;
            overrun_list.push((lane, tick, late_ns));
        }
    }
    let totals = *sh.totals.lock().unwrap_or_else(|p| p.into_inner());

    // Judge.
    let steady_overruns = end.deadline_overruns - warm.0.deadline_overruns;
    let steady_skipped = end.ticks_skipped - warm.0.ticks_skipped;
    let q = tick_quantiles(&hist_end, &warm.1);
    let rss_warmup = (o.seconds / 2.0).max(10.0);
    let rss_window: Vec<(f64, f64)> = rss
        .iter()
        .filter(|p| p.0 >= rss_warmup)
        .map(|&(t, k)| (t / 60.0, k))
        .collect();
    let judged_rss = rss_window
        .last()
        .is_some_and(|l| l.0 * 60.0 - rss_warmup >= 20.0);
    let rss_slope = slope(&rss_window);
    let slots_ok = free_slots1 == free_slots0
        && sessions_left == 0
        && frame_free1 == frame_free0
        && ingress_free1 == ingress_free0
        && egress_free1 == egress_cap
        && audio_free1 == audio_free0
        && audio_read_free1 == audio_cap;
    let refused = get(&sh.c.push_ring_full);
    let too_large = get(&sh.c.push_too_large);
    let rate_limited = get(&sh.c.push_rate_limited);
    let unknown = get(&sh.c.push_unknown);
    let counted_ok = final_lanes.ingress_full == refused
        && final_lanes.ingress_too_large == too_large
        && final_lanes.ingress_rate_limited == rate_limited
        && final_lanes.ingress_unknown == unknown;
    let panics = PANICS.load(Ordering::SeqCst) + thread_panics;
    let unexpected = get(&sh.c.unexpected_errors);
    let rss_ok = !judged_rss || rss_slope.is_none_or(|s| s <= o.rss_slope_max);
    let mut fails = Vec::new();
    // The steady window's overruns as stalls (a late wake-up and the ticks that caught up
    // after it), when the events account for every overrun tick the counters saw.
    let warm_tick = warm_at_ns.saturating_sub(lane_start_ns) / 10_000_000;
    let steady_stalls = stalls(&overrun_list, warm_tick);
    let stall_ticks: u64 = steady_stalls.iter().map(|s| s.ticks).sum();
    let stalls_ok = steady_skipped == 0
        && stall_ticks == steady_overruns
        && steady_stalls.len() as u64 <= o.allow_stalls
        && steady_stalls.iter().all(|s| s.ticks <= MAX_STALL_TICKS);
    if steady_overruns + steady_skipped > o.allow_overruns && !stalls_ok {
        fails.push(format!(
            "{steady_overruns} deadline overruns ({} stalls, longest {} ticks) and {steady_skipped} skipped ticks after warm-up",
            steady_stalls.len(),
            steady_stalls.iter().map(|s| s.ticks).max().unwrap_or(0)
        ));
    }
    if !slots_ok {
        fails.push("slots lost (see the slot line)".to_string());
    }
    if !counted_ok {
        fails.push("refused pushes not all counted by the lanes".to_string());
    }
    // The application wrote whenever a session was attached while the traffic ran: then
    // it must have heard its sessions, and most of what it wrote must have been played
    // (not dropped by the lanes as unknown or unwanted).
    let written = get(&sh.c.app_written);
    let played = written
        .saturating_sub(final_lanes.app_in_dropped)
        .saturating_sub(final_lanes.app_frames_unknown);
    let app_ok = written == 0 || (get(&sh.c.app_read) > 0 && 2 * played > written);
    if !app_ok {
        fails.push(format!(
            "the application's audio did not flow: {written} frames written, {played} played, {} read",
            get(&sh.c.app_read)
        ));
    }
    if !rss_ok {
        fails.push(format!(
            "RSS grows {:.0} KiB/min > {:.0}",
            rss_slope.unwrap_or(0.0),
            o.rss_slope_max
        ));
    }
    if panics > 0 {
        fails.push(format!("{panics} panics"));
    }
    if unexpected > 0 {
        fails.push(format!("{unexpected} unexpected errors"));
    }

    // Final report.
    let c = &sh.c;
    out.line(&format!(
        "--- soak result after {run_s:.1} s (steady window {:.1}-{run_s:.1} s) ---",
        WARMUP_S.min(o.seconds / 2.0)
    ));
    out.line(&format!(
        "lanes: {} ticks, deadline overruns {} total / {steady_overruns} after warm-up in {} stall(s) (longest {} ticks), ticks skipped {steady_skipped}, overrun events {overrun_events}; tick p50 {} p99 {} p99.9 {} max {} (of a 10 ms tick; worst lane, steady window); lane-thread page faults {} in warm-up, {} in the steady window; vCPU steal {steal_run} ms",
        end.ticks - lanes0.ticks,
        end.deadline_overruns - lanes0.deadline_overruns,
        steady_stalls.len(),
        steady_stalls.iter().map(|s| s.ticks).max().unwrap_or(0),
        ms(q[0]),
        ms(q[1]),
        ms(q[2]),
        ms(q[3]),
        warm_faults.0 + warm_faults.1 - faults0.0 - faults0.1,
        faults_end.0 + faults_end.1 - warm_faults.0 - warm_faults.1
    ));
    // Every session was accounted when destroyed (the last ones in the teardown).
    let total_s = totals;
    out.line(&format!(
        "traffic: pushed {} ok, popped {}; calls at end {live_calls}; churn: {} calls created, {} destroyed ({:.1} sessions/s each way), {} create / {} destroy refusals (typed, retried); teardown {:.2} s; updates {} ok, {} refused (typed); generator slots > 10 ms late: {}",
        get(&c.pushed),
        get(&c.popped),
        get(&c.calls_created),
        get(&c.calls_destroyed),
        2.0 * (get(&c.calls_created) - created_pw) as f64 / run_s,
        get(&c.create_refused),
        get(&c.destroy_refused),
        teardown_s,
        get(&c.updates_ok),
        get(&c.updates_refused),
        get(&c.gen_late_slots)
    ));
    out.line(&format!(
        "injected: garbage {}, truncated {}, unknown PT {}, seq/ts jumps {}, oversized {}, SSRC changes {}; bursts {} ({} pushes, {} refused, longest push in a burst {:.1} us, longest push overall {:.1} us)",
        get(&c.malformed_garbage),
        get(&c.malformed_truncated),
        get(&c.malformed_unknown_pt),
        get(&c.malformed_jump),
        get(&c.malformed_oversized),
        get(&c.ssrc_changes),
        get(&c.bursts),
        get(&c.burst_pushes),
        get(&c.burst_refused),
        get(&c.burst_max_push_ns) as f64 / 1e3,
        get(&c.max_push_ns) as f64 / 1e3
    ));
    out.line(&format!(
        "routes: {} parked ({} digits sent on them, {} refused), {} attached, {} bridged again, {} refused (typed); application audio: {} frames written, {} refused with no free slot, {} raced a route change or destroy (typed), {} read; lanes: underruns {}, written frames dropped {}, for unknown sessions {}, frames for the application dropped {}",
        get(&c.parked),
        get(&c.parked_digits),
        get(&c.parked_digits_refused),
        get(&c.attached),
        get(&c.rebridged),
        get(&c.routes_refused),
        get(&c.app_written),
        get(&c.app_write_full),
        get(&c.app_write_raced),
        get(&c.app_read),
        final_lanes.app_underruns,
        final_lanes.app_in_dropped,
        final_lanes.app_frames_unknown,
        final_lanes.app_out_dropped
    ));
    out.line(&format!(
        "keepalives sent (legs with nothing to send for 1 s): {}",
        final_lanes.keepalives_sent
    ));
    let ld: Vec<String> = lane_drops(&final_lanes)
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    out.line(&format!("drops (lanes): {}", ld.join(", ")));
    out.line(&format!(
        "  refused pushes counted: ingress_full {} = RingFull errors {refused}, ingress_too_large {} = PayloadTooLarge errors {too_large}, ingress_rate_limited {} = RateLimited errors {rate_limited}, ingress_unknown {} = UnknownSession errors {unknown}: {}",
        final_lanes.ingress_full,
        final_lanes.ingress_too_large,
        final_lanes.ingress_rate_limited,
        final_lanes.ingress_unknown,
        if counted_ok { "yes" } else { "NO" }
    ));
    let sd: Vec<String> = session_drops(&total_s)
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    out.line(&format!(
        "drops (sessions, summed over every session of the run): {}; rx_resyncs {}; rx_packets {}, frames decoded {} relayed {} concealed {}, tx_packets {}",
        sd.join(", "),
        total_s.rx_resyncs,
        total_s.rx_packets,
        total_s.frames_decoded,
        total_s.frames_relayed,
        total_s.frames_concealed,
        total_s.tx_packets
    ));
    let rss_first = rss_window.first().map_or(0.0, |p| p.1);
    let rss_last = rss.last().map_or(0.0, |p| p.1);
    out.line(&format!(
        "memory: VmRSS {rss0} KiB before the calls, {rss_first:.0} KiB at {rss_warmup:.0} s, {rss_last:.0} KiB at the end; slope after {rss_warmup:.0} s: {} (limit {:.0} KiB/min{})",
        rss_slope.map_or("n/a".into(), |s| format!("{s:.1} KiB/min")),
        o.rss_slope_max,
        if judged_rss { "" } else { "; not judged: under 20 s of samples after the RSS warm-up" }
    ));
    let series: Vec<String> = rss
        .iter()
        .step_by(10)
        .map(|(t, k)| format!("{t:.0}s {k:.0}"))
        .collect();
    out.line(&format!("  VmRSS KiB every 5 s: {}", series.join(", ")));
    out.line(&format!(
        "slots after destroying everything: session slots free {free_slots1} (start {free_slots0}), sessions left {sessions_left}, frame_slots_free {frame_free1:?} (start {frame_free0:?}), ingress packet slots free {ingress_free1:?} (start {ingress_free0:?}), egress slots free {egress_free1:?} (of {egress_cap:?}), audio write slots free {audio_free1:?} (start {audio_free0:?}), audio read slots free or to read {audio_read_free1:?} (of {audio_cap:?}): {}",
        if slots_ok { "nothing lost" } else { "LOST" }
    ));
    let errs = sh.errors.lock().unwrap_or_else(|p| p.into_inner()).clone();
    out.line(&format!(
        "panics {panics}, unexpected errors {unexpected}{}{}",
        if errs.is_empty() {
            String::new()
        } else {
            format!(": {}", errs.join("; "))
        },
        if other_events > 0 {
            format!(", {other_events} pin/priority events")
        } else {
            String::new()
        }
    ));
    // Name the control commands issued just before each overrun (the lane applies a
    // command at its next tick).
    let log = sh
        .update_log
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    for &(_, tick, late_ns) in overrun_list.iter().take(20) {
        let at = lane_start_ns + tick * 10_000_000;
        let near: Vec<String> = log
            .iter()
            .filter(|(t, _)| *t + 30_000_000 >= at && *t <= at + 10_000_000)
            .map(|(t, w)| format!("{:+.1} ms {w}", (*t as f64 - at as f64) / 1e6))
            .collect();
        out.line(&format!(
            "  overrun at lane tick {tick} ({:.1} s, {:.2} ms late); updates issued within 30 ms before: {}",
            (at - lane_start_ns) as f64 / 1e9,
            late_ns as f64 / 1e6,
            if near.is_empty() { "none".into() } else { near.join("; ") }
        ));
    }
    let pass = fails.is_empty();
    out.line(&if pass {
        "PASS".to_string()
    } else {
        format!("FAIL: {}", fails.join("; "))
    });

    if o.json {
        let mut j = String::from("{");
        let _ = write!(j, "\"pass\":{pass}");
        let _ = write!(j, ",\"seconds\":{run_s:.3}");
        let _ = write!(
            j,
            ",\"calls\":{calls},\"lanes\":{},\"fifo\":{fifo},\"mlock\":{mlocked}",
            o.lanes
        );
        let _ = write!(
            j,
            ",\"capacity\":{},\"mix_cost\":{cost:.4},\"load\":{}",
            o.capacity, o.load
        );
        let _ = write!(
            j,
            ",\"overruns_total\":{},\"overruns_steady\":{steady_overruns},\"ticks_skipped_steady\":{steady_skipped},\"stalls_steady\":{}",
            end.deadline_overruns - lanes0.deadline_overruns,
            steady_stalls.len()
        );
        let _ = write!(
            j,
            ",\"tick_ns\":{{\"p50\":{},\"p99\":{},\"p999\":{},\"max\":{}}}",
            q[0], q[1], q[2], q[3]
        );
        let lanes_j: Vec<String> = lane_drops(&final_lanes)
            .iter()
            .map(|(k, v)| format!("\"{k}\":{v}"))
            .collect();
        let sess_j: Vec<String> = session_drops(&total_s)
            .iter()
            .map(|(k, v)| format!("\"{k}\":{v}"))
            .collect();
        let _ = write!(
            j,
            ",\"drops\":{{\"lane\":{{{}}},\"session\":{{{}}}}}",
            lanes_j.join(","),
            sess_j.join(",")
        );
        let _ = write!(
            j,
            ",\"rss_kib\":{{\"before\":{rss0},\"end\":{rss_last:.0},\"slope_kib_per_min\":{},\"limit\":{},\"judged\":{judged_rss}}}",
            rss_slope.map_or("null".into(), |s| format!("{s:.2}")),
            o.rss_slope_max
        );
        let _ = write!(
            j,
            ",\"slots\":{{\"ok\":{slots_ok},\"session_free\":[{free_slots0},{free_slots1}],\"frame_free\":[{:?},{:?}],\"ingress_free\":[{:?},{:?}]}}",
            frame_free0, frame_free1, ingress_free0, ingress_free1
        );
        let _ = write!(
            j,
            ",\"churn\":{{\"created\":{},\"destroyed\":{}}},\"updates\":{},\"bursts\":{},\"pushed\":{},\"popped\":{}",
            get(&c.calls_created),
            get(&c.calls_destroyed),
            get(&c.updates_ok),
            get(&c.bursts),
            get(&c.pushed),
            get(&c.popped)
        );
        let _ = write!(
            j,
            ",\"routes\":{{\"parked\":{},\"attached\":{},\"rebridged\":{},\"refused\":{}}},\"app_audio\":{{\"written\":{},\"read\":{},\"underruns\":{}}}",
            get(&c.parked),
            get(&c.attached),
            get(&c.rebridged),
            get(&c.routes_refused),
            get(&c.app_written),
            get(&c.app_read),
            final_lanes.app_underruns
        );
        let _ = write!(j, ",\"panics\":{panics},\"unexpected_errors\":{unexpected}");
        j.push('}');
        println!("{j}");
    }
    let _ = engine.stop();
    Ok(pass)
}
