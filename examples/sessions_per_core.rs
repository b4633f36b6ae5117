//! Sessions per core: how many bidirectional gateway calls one core sustains, measured
//! against the lane deadlines (paced) or as raw lane throughput (virtual clock).
//!
//! ```text
//! cargo run --release --example sessions_per_core -- [--scenario NAME] [--topology fused|split]
//!     [--lanes N] [--cores LIST] [--seconds S] [--mode paced|virtual] [--json] [--headroom F]
//!     [--start N] [--max N] [--jitter-ms J] [--loss-pct P] [--seed N] [--gen-core C]
//!     [--warmup S] [--fifo] [--step2] [--strict] [--iterations N] [--half-plain]
//! ```
//!
//! # What is counted
//! A *session* in every figure here is one bidirectional gateway call: two engine sessions
//! bridged with [`MediaEngine::create_call`], each direction jitter-buffered, decoded (or
//! relayed), processed and encoded. Sessions per core = calls / cores assigned to lane
//! threads (fused: one thread per lane; split: four threads per lane; the distinct cores
//! actually assigned are counted, so four split threads sharing one core count as one).
//!
//! # Paced mode (the figure that counts)
//! Real-time lanes pinned to cores, a traffic generator thread pinned to a core no lane
//! uses. The generator owns every lane's ingress and egress handles. Each stream (two per
//! call: each leg sends to the engine) sends one RTP packet per 20 ms at a seeded random
//! phase within the period (calls do not all start on the same millisecond); each packet
//! is lost with probability `--loss-pct` and otherwise delayed by a seeded random
//! 0..=`--jitter-ms` before it is pushed (reordering needs a jitter above the 20 ms
//! packet spacing). The generator works in 1 ms slots on absolute deadlines and pops all
//! egress every slot. It measures its own lateness: a slot started more than one lane
//! tick (10 ms) after its deadline makes the step *invalid* (the traffic the lane saw was
//! not the traffic asked for), which is reported as a generator limit, never as a lane
//! failure.
//!
//! Ramp: start at `--start` calls, double while the step passes, then bisect between the
//! last pass and the first fail to within 5 % (or stop at `--max`). Then, as the goals are
//! stated for 60 s, the largest passing count is run again for `--confirm` seconds
//! (default 60), 5 % fewer calls at a time until one passes (up to six tries); the
//! confirmed count is the result (`--confirm 0`: the ramp's count is). Each step builds a
//! fresh engine whose capacity matches the count (the engine preallocates
//! `sessions_per_lane` slots and its tick walks them), creates the calls, warms up
//! (`--warmup`, 1 s), snapshots `lane_stats` and `lane_tick_histogram`, runs the window
//! (`--seconds`), snapshots again and judges the difference. Pass = no deadline overrun in
//! the window, p99.9 tick processing time below `--headroom` x the 10 ms tick period, and
//! the generator kept up (`--strict`: and the engine dropped nothing). Lanes tick every
//! 10 ms and each tick processes the 20 ms sessions whose phase is due (half of them), so
//! the budget per tick is 10 ms. With several lanes every lane must pass; the percentiles
//! shown are those of the lane with the highest p99.9.
//!
//! Slices: the window is also cut into 0.5 s slices and each slice's tick median is
//! reported (typical, worst and when, and how many exceed 1.25 x the typical one; JSON
//! `tick_slices`). The calls and traffic are the same in every slice, so the lane's work
//! per tick is too: slices far above the others mean the machine ran slower for a while
//! (a shared host's other tenants, clock frequency), which tells a window failed on the
//! host from one failed on the lane's cost. Informative only: the verdict is unchanged.
//!
//! Scheduling: the engine's `raise_priority` keeps the calling thread's policy, which is
//! SCHED_OTHER, where it means nice -20; with autogroup scheduling that does not protect
//! the lanes from other sessions' processes. `--fifo` starts lanes and generator under
//! SCHED_FIFO (inherited), so `raise_priority` gives them the top real-time priority.
//!
//! Memory: RSS (`/proc/self/statm`) just before building the engine (after returning freed
//! heap to the OS) and after building it and creating the calls, divided by the engine's
//! session slots and by the calls; also after the window (slabs touched by traffic).
//!
//! Pages: a lane with thousands of sessions touches more memory per tick than the TLB
//! maps with 4 KiB pages, so every few sessions cost a page walk. After creating the
//! calls, before any traffic, the harness calls `MediaEngine::use_huge_pages(true)`,
//! which puts the process's anonymous memory on transparent huge pages (see
//! `media_core::runtime::memory`; what PERF.md recommends a gateway do after creating a
//! batch of sessions), unless `--no-huge-pages` is given. The report states what the
//! kernel did and the anonymous memory in huge pages (`AnonHugePages`).
//!
//! # Virtual mode
//! `ClockMode::Virtual`, one thread, as fast as possible: per 10 ms tick the traffic the
//! generator releases in it (virtual time) is pushed, `engine.step(1)` runs the tick, every
//! egress packet is popped; two ticks = 20 ms of media. (`--step2`: push the whole 20 ms,
//! then `engine.step(2)`; every packet of the period then lands in one tick.) Reports
//! frames/s, lane time per 20 ms (inside `step` only, and including the push/pop work) and
//! the implied calls per core = calls x 20 ms / lane time per 20 ms, from wall time as
//! asked and from the thread's CPU time (which preemption on a busy machine does not
//! inflate).
//!
//! # Engine latency
//! Every egress packet carries `OutboundPacket::source_timestamp`: the RTP timestamp, on
//! the receiving leg's stream, of the audio it carries. The generator knows each stream's
//! initial timestamp, so that gives the frame number, hence the input packet (the one
//! holding the frame's last sample: the frame could not be played before it arrived), whose
//! push time the generator logged. That works for every codec and survives loss,
//! reordering, concealment and time-scale modification (a concealed frame whose packet
//! never arrived matches nothing and is counted as unmatched). Reported per packet:
//! - through the engine: pop time - push time (jitter buffering included);
//! - added: pop - push - the session's jitter buffer target (`SessionStats::jb_target_ms`,
//!   re-read every 0.5 s): what the engine adds to the delay its adaptive buffer chose. A
//!   packet that arrived with less delay than the target covers waits correspondingly
//!   longer, so this spreads downwards by up to the jitter;
//! - added vs unjittered arrival: pop - nominal send time (the push time with no network
//!   jitter) - target: the same without that spread;
//! - paced mode, split at the jitter buffer with `OutboundPacket::played_ns` (the start of
//!   the lane tick that played the frame out of the buffer, on the monotonic clock): after
//!   the jitter buffer = pop - that tick (decode, processing, encode, stage hand-offs and
//!   the egress ring: the latency the engine's pipeline adds to its buffer's delay, the
//!   figure issue 3's goal of at most one ptime is about), and the buffer's own delay =
//!   that tick - push (what WebRTC's `jitterBufferDelay` counts: arrival to playout, the
//!   wait for the next tick included), also shown beyond the session's target.
//!
//! The generator pushes with `push_at(.., arrival_ns)` so the engine's jitter estimate sees
//! the real arrival times. As a cross-check the first 8 samples of every payload also carry
//! the frame number (16 widely spaced PCM levels, which survive relay and a G.711 tandem);
//! where a frame starts on a packet boundary the two must agree. Around time-scale
//! modification the engine's source timestamp is approximate by up to one pitch period
//! (its documented precision), which can move the matched packet by one.
//!
//! # Bare baseline
//! The codec calls alone for one call, both directions, in a tight loop on the same audio
//! (pcmu-pcma: mu-law decode + A-law encode + A-law decode + mu-law encode of 160-sample
//! frames; relay: a 160-byte copy each way). baseline calls per core = 20 ms / cost per
//! call per 20 ms; `ratio` = pipeline calls per core / baseline calls per core.

#[path = "common/cpu.rs"]
mod cpu;
#[path = "common/sched.rs"]
mod sched;

use cpu::thread_cpu_ns;

use sched::set_fifo;
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use media_core::codec::audio::g711;
use media_core::codec::{AnyDecoder, AnyEncoder, Codec, OpusSettings};
use media_core::processing::audio::{DspChain, DspConfig, DspScratch};
use media_core::rtp::{write_header, RtpHeader, RTP_HEADER_LEN};
use media_core::runtime::clock::{monotonic_ns, sleep_until_ns};
use media_core::runtime::lane::session_state_bytes;
use media_core::runtime::memory::HugePages;
use media_core::runtime::stats::{HistogramSnapshot, LaneStats, SessionStats};
use media_core::{
    ClockMode, CodecSpec, DialogId, EgressHandle, EngineConfig, EngineEvent, IngressHandle,
    MediaEngine, MediaSessionParams, Ptime, SessionId, Topology,
};

// ---------------------------------------------------------------------------------------
// Scenarios: adding one is one line (the baseline, the audio and the latency tag follow
// from the two codecs).
// ---------------------------------------------------------------------------------------

struct Scenario {
    name: &'static str,
    /// Codec of leg A (the first session of the call) and of leg B.
    legs: [CodecSpec; 2],
    /// Voice processing on both legs' received audio.
    dsp: fn() -> DspConfig,
    /// Audio rate of the Opus legs (48000 unless the scenario runs Opus narrowband).
    opus_hz: u32,
    about: &'static str,
}

impl Scenario {
    /// Opus settings of the scenario's Opus legs (the defaults at `opus_hz`).
    fn opus(&self) -> OpusSettings {
        OpusSettings {
            sample_rate: media_core::SampleRate::new(self.opus_hz)
                .unwrap_or(media_core::SampleRate::HZ_48000),
            ..OpusSettings::default()
        }
    }

    /// Samples per 20 ms frame of `c` as this scenario runs it.
    fn frame_samples(&self, c: Codec) -> usize {
        self.rate(c).samples_in(PTIME)
    }

    /// The audio rate `c` runs at in this scenario.
    fn rate(&self, c: Codec) -> media_core::SampleRate {
        match c {
            Codec::Opus => self.opus().sample_rate,
            c => c.info().sample_rate,
        }
    }
}

fn no_dsp() -> DspConfig {
    DspConfig::default()
}

/// VAD + AGC + noise suppression + DTMF detection (no echo canceller).
fn voice_dsp() -> DspConfig {
    DspConfig {
        aec: None,
        ..DspConfig::voice()
    }
}

/// The echo canceller alone (128 ms tail).
fn aec_dsp() -> DspConfig {
    DspConfig {
        aec: Some(Default::default()),
        ..DspConfig::default()
    }
}

#[rustfmt::skip]
const SCENARIOS: &[Scenario] = &[
    Scenario { name: "relay-pcmu", legs: [CodecSpec::PCMU, CodecSpec::PCMU], dsp: no_dsp, opus_hz: 48000, about: "PCMU both legs: jitter buffer, payload relayed when unmodified" },
    Scenario { name: "pcmu-pcma", dsp: no_dsp, legs: [CodecSpec::PCMU, CodecSpec::PCMA], opus_hz: 48000, about: "leg A PCMU, leg B PCMA: decode + encode both directions" },
    Scenario { name: "g722-pcmu", dsp: no_dsp, legs: [CodecSpec::G722, CodecSpec::PCMU], opus_hz: 48000, about: "leg A G.722 (16 kHz), leg B PCMU: decode, 16<->8 kHz resampling, encode both directions" },
    Scenario { name: "opus-pcmu", dsp: no_dsp, legs: [CodecSpec::OPUS, CodecSpec::PCMU], opus_hz: 48000, about: "leg A Opus 48 kHz (24 kbit/s, complexity 5, FEC on), leg B PCMU: decode, 48<->8 kHz resampling, encode" },
    Scenario { name: "opus8-pcmu", dsp: no_dsp, legs: [CodecSpec::OPUS, CodecSpec::PCMU], opus_hz: 8000, about: "leg A Opus run at 8 kHz (narrowband; 24 kbit/s, complexity 5, FEC on; RTP clock still 48 kHz), leg B PCMU: decode + encode, no resampling" },
    Scenario { name: "voice-pcmu", legs: [CodecSpec::PCMU, CodecSpec::PCMU], dsp: voice_dsp, opus_hz: 48000, about: "PCMU both legs with VAD + AGC + noise suppression + DTMF detection on each leg's received audio (decode, process, encode)" },
    Scenario { name: "aec-pcmu", legs: [CodecSpec::PCMU, CodecSpec::PCMU], dsp: aec_dsp, opus_hz: 48000, about: "PCMU both legs with a 128 ms echo canceller on each leg (decode, cancel, encode)" },
    Scenario { name: "opus-opus", dsp: no_dsp, legs: [CodecSpec::OPUS, CodecSpec::OPUS], opus_hz: 48000, about: "Opus both legs: jitter buffer, payload relayed when unmodified (Opus PLC/FEC when not)" },
];

// ---------------------------------------------------------------------------------------
// Constants
// ---------------------------------------------------------------------------------------

const PTIME: Ptime = Ptime::MS_20;
const PTIME_NS: u64 = 20_000_000;
/// The lane tick period.
const TICK_NS: u64 = Ptime::TICK_MS as u64 * 1_000_000;
/// Generator slot: it wakes every millisecond.
const SLOT_NS: u64 = 1_000_000;
const SLOTS_PER_FRAME: u64 = PTIME_NS / SLOT_NS;
/// A generator slot started later than this after its deadline makes the step invalid.
const GEN_LATE_LIMIT_NS: u64 = TICK_NS;
/// Push times kept per stream (16 x 20 ms = 320 ms of history).
const LOG_RING: usize = 16;
const LOG_T_MASK: u64 = (1 << 40) - 1;
const TAG_NIBBLES: usize = 8;
/// Latency samples are recorded with this offset so early (negative) values fit (recorded
/// at 4 significant digits: 0.02 ms resolution around the offset).
const LAT_OFFSET_US: i64 = 200_000;
/// Distinct tone frames (1 s of a 440 Hz tone at 8 kHz is a whole number of periods).
const TONE_FRAMES: usize = 50;
const MAX_PAYLOAD: usize = 320;

// ---------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Paced,
    Virtual,
}

#[derive(Clone)]
struct Opts {
    scenario: &'static Scenario,
    topology: Topology,
    lanes: usize,
    cores: Option<Vec<usize>>,
    gen_core: Option<usize>,
    seconds: f64,
    /// Virtual mode: a fixed number of 20 ms iterations instead of `seconds` of wall time.
    iterations: Option<u64>,
    warmup: f64,
    mode: Mode,
    json: bool,
    headroom: f64,
    start: usize,
    max: usize,
    jitter_ms: f64,
    loss: f64,
    seed: u64,
    fifo: bool,
    step2: bool,
    /// Every other call created without voice processing (a lane mixing the two).
    half_plain: bool,
    strict: bool,
    huge_pages: bool,
    /// Paced: after the ramp, rerun the largest passing count for this many seconds,
    /// stepping down 5% until one passes (0: no confirmation).
    confirm: f64,
    /// Virtual: write each measured tick's time inside `step`, ns, one per line.
    tick_log: Option<String>,
    /// The widest kernel builds the voice-processing kernels may take (`--simd`).
    simd: &'static str,
}

const USAGE: &str =
    "usage: sessions_per_core [--scenario NAME] [--topology fused|split] [--lanes N]
    [--cores LIST] [--seconds S] [--mode paced|virtual] [--json] [--headroom F]
    [--start N] [--max N] [--jitter-ms J] [--loss-pct P] [--seed N] [--gen-core C] [--warmup S]
    [--fifo] [--step2] [--strict] [--iterations N] [--no-huge-pages] [--confirm S]
    [--tick-log FILE] [--half-plain] [--simd widest|avx2|portable]
  --scenario   one of the scenario table (default pcmu-pcma)
  --topology   fused (one thread per lane, default) or split (four threads per lane)
  --lanes      lanes (default 1)
  --cores      cores for lane threads, e.g. 0,1 or 0-3 (default: the first cores, leaving
               one free for the generator)
  --seconds    measurement window per step (default 10)
  --confirm    paced: rerun the largest passing count for S seconds, 5% lower until one
               passes (up to 6 tries); that count is the result (default 60, 0: off)
  --mode       paced (real-time lanes, ramp; default) or virtual (virtual clock, one count)
  --json       print one JSON object at the end (human lines go to stderr)
  --headroom   pass if p99.9 tick time < F x the 10 ms tick (default 0.5)
  --start      first call count (default 1000 paced, 5000 virtual)
  --max        largest call count tried (default 500000)
  --jitter-ms  each packet is delayed by a random 0..=J ms (default 20)
  --loss-pct   packet loss, percent (default 1)
  --seed       PRNG seed (default 1)
  --gen-core   core for the traffic generator (default: the first core no lane uses)
  --warmup     warm-up per step, seconds (default 1)
  --fifo       paced: start lane and generator threads under SCHED_FIFO, so the engine's
               raise_priority gives them the top real-time priority (needs CAP_SYS_NICE;
               default: SCHED_OTHER, where raise_priority means nice -20)
  --iterations virtual: measure exactly N x 20 ms instead of --seconds of wall time, so
               the work is the same on every run (for instruction counts, e.g. callgrind)
  --step2      virtual: push 20 ms of traffic then step(2), instead of pushing each 10 ms
               tick's traffic before its own step(1)
  --half-plain every other call without the scenario's voice processing (e.g. aec-pcmu:
               half the calls cancel echo, half are relayed), as on a lane that mixes
               them; the bare baseline stays the scenario's full chains
  --no-huge-pages  leave memory on the pages the allocator gave it (by default the
               harness calls MediaEngine::use_huge_pages(true) after creating the calls)
  --simd       the widest builds the voice-processing kernels may take: widest (default:
               AVX-512 where the CPU has it, else AVX2), avx2, or portable (SSE2); every
               build gives the same audio, so this compares their speed
  --tick-log   virtual: write the time inside step of each measured tick (ns, one per
               line) to FILE, to find work that recurs at some period (e.g. every 100 ms)
  --strict     a step passes only if the engine also dropped nothing in its window (by
               default drops are reported but, as specified, do not fail a step; in the
               split topology the tick time covers the jitter thread only, so drops are
               how an overloaded decode/DSP/encode thread shows)";

fn parse_cores(s: &str) -> Result<Vec<usize>, String> {
    let mut v = Vec::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        let bad = || format!("bad core list {s:?}");
        if let Some((a, b)) = part.split_once('-') {
            let a: usize = a.trim().parse().map_err(|_| bad())?;
            let b: usize = b.trim().parse().map_err(|_| bad())?;
            if b < a {
                return Err(bad());
            }
            v.extend(a..=b);
        } else {
            v.push(part.trim().parse().map_err(|_| bad())?);
        }
    }
    if v.is_empty() {
        return Err(format!("empty core list {s:?}"));
    }
    Ok(v)
}

fn parse_args() -> Result<Opts, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut o = Opts {
        scenario: &SCENARIOS[1],
        topology: Topology::Fused,
        lanes: 1,
        cores: None,
        gen_core: None,
        seconds: 10.0,
        iterations: None,
        warmup: 1.0,
        mode: Mode::Paced,
        json: false,
        headroom: 0.5,
        start: 0,
        max: 500_000,
        jitter_ms: 20.0,
        loss: 0.01,
        seed: 1,
        fifo: false,
        step2: false,
        half_plain: false,
        strict: false,
        huge_pages: true,
        confirm: 60.0,
        tick_log: None,
        simd: "widest",
    };
    let mut start = None;
    let mut i = 0;
    while i < args.len() {
        let flag = args[i].as_str();
        if matches!(
            flag,
            "--json" | "--fifo" | "--step2" | "--strict" | "--no-huge-pages" | "--half-plain"
        ) {
            match flag {
                "--json" => o.json = true,
                "--fifo" => o.fifo = true,
                "--strict" => o.strict = true,
                "--no-huge-pages" => o.huge_pages = false,
                "--half-plain" => o.half_plain = true,
                _ => o.step2 = true,
            }
            i += 1;
            continue;
        }
        if flag == "--help" || flag == "-h" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let val = args
            .get(i + 1)
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?
            .as_str();
        let num = |v: &str| -> Result<f64, String> {
            v.parse::<f64>()
                .ok()
                .filter(|x| x.is_finite() && *x >= 0.0)
                .ok_or_else(|| format!("{flag}: bad number {v:?}"))
        };
        let int = |v: &str| -> Result<usize, String> {
            v.replace('_', "")
                .parse::<usize>()
                .map_err(|_| format!("{flag}: bad integer {v:?}"))
        };
        match flag {
            "--scenario" => {
                o.scenario = SCENARIOS.iter().find(|s| s.name == val).ok_or_else(|| {
                    let names: Vec<_> = SCENARIOS.iter().map(|s| s.name).collect();
                    format!("unknown scenario {val:?}; known: {}", names.join(", "))
                })?
            }
            "--topology" => {
                o.topology = match val {
                    "fused" => Topology::Fused,
                    "split" => Topology::Split,
                    _ => return Err(format!("--topology: fused or split, not {val:?}")),
                }
            }
            "--mode" => {
                o.mode = match val {
                    "paced" => Mode::Paced,
                    "virtual" => Mode::Virtual,
                    _ => return Err(format!("--mode: paced or virtual, not {val:?}")),
                }
            }
            "--lanes" => o.lanes = int(val)?,
            "--cores" => o.cores = Some(parse_cores(val)?),
            "--gen-core" => o.gen_core = Some(int(val)?),
            "--seconds" => o.seconds = num(val)?,
            "--confirm" => o.confirm = num(val)?,
            "--warmup" => o.warmup = num(val)?,
            "--iterations" => o.iterations = Some(int(val)?.max(1) as u64),
            "--headroom" => o.headroom = num(val)?,
            "--start" => start = Some(int(val)?),
            "--max" => o.max = int(val)?,
            "--tick-log" => o.tick_log = Some(val.to_string()),
            "--simd" => {
                o.simd = match val {
                    "widest" => "widest",
                    "avx2" => "avx2",
                    "portable" => "portable",
                    _ => return Err(format!("--simd: widest, avx2 or portable, not {val:?}")),
                }
            }
            "--jitter-ms" => o.jitter_ms = num(val)?,
            "--loss-pct" => o.loss = num(val)? / 100.0,
            "--seed" => o.seed = int(val)? as u64,
            _ => return Err(format!("unknown option {flag:?}\n{USAGE}")),
        }
        i += 2;
    }
    if o.lanes == 0 || o.lanes > 1024 {
        return Err("--lanes must be 1..=1024".into());
    }
    if o.seconds <= 0.0 {
        return Err("--seconds must be positive".into());
    }
    if o.loss > 1.0 {
        return Err("--loss-pct must be 0..=100".into());
    }
    if o.jitter_ms > 1000.0 {
        return Err("--jitter-ms must be at most 1000".into());
    }
    o.start = start.unwrap_or(match o.mode {
        Mode::Paced => 1000,
        Mode::Virtual => 5000,
    });
    o.max = o.max.max(1);
    o.start = o.start.clamp(1, o.max);
    Ok(o)
}

// ---------------------------------------------------------------------------------------
// Cores
// ---------------------------------------------------------------------------------------

struct CorePlan {
    /// What `EngineConfig::cores` gets (the engine assigns thread i to `lane_cores[i % len]`).
    lane_cores: Vec<usize>,
    /// The distinct cores lane threads are actually pinned to.
    used: Vec<usize>,
    gen_core: Option<usize>,
    threads_per_lane: usize,
}

fn plan_cores(o: &Opts) -> Result<CorePlan, String> {
    let available: Vec<usize> = core_affinity::get_core_ids()
        .map(|v| v.into_iter().map(|c| c.id).collect())
        .unwrap_or_default();
    let tpl = match o.topology {
        Topology::Fused => 1,
        Topology::Split => 4,
    };
    let threads = o.lanes * tpl;
    let lane_cores = match &o.cores {
        Some(c) => c.clone(),
        None if available.is_empty() => vec![0],
        None => {
            // Leave one core for the generator where there is more than one.
            let k = threads.min(available.len().saturating_sub(1)).max(1);
            available[..k].to_vec()
        }
    };
    if let Some(&bad) = lane_cores
        .iter()
        .find(|c| !available.is_empty() && !available.contains(c))
    {
        return Err(format!(
            "core {bad} is not available to this process (available: {available:?})"
        ));
    }
    let used: BTreeSet<usize> = (0..threads)
        .map(|t| lane_cores[t % lane_cores.len()])
        .collect();
    let gen_core = o
        .gen_core
        .or_else(|| available.iter().copied().find(|c| !used.contains(c)));
    Ok(CorePlan {
        lane_cores,
        used: used.into_iter().collect(),
        gen_core,
        threads_per_lane: tpl,
    })
}

// ---------------------------------------------------------------------------------------
// Deterministic PRNG (splitmix64 seeding, xorshift64*)
// ---------------------------------------------------------------------------------------

fn splitmix64(s: &mut u64) -> u64 {
    *s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *s;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        let mut s = seed;
        Rng(splitmix64(&mut s) | 1)
    }

    #[inline]
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n`.
    #[inline]
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }
}

// ---------------------------------------------------------------------------------------
// Codecs: bare functions for the baseline, audio and the latency tag
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy)]
struct G711Fns {
    enc: fn(&[i16], &mut [u8]) -> usize,
    dec: fn(&[u8], &mut [i16]) -> usize,
    enc1: fn(i16) -> u8,
    dec1: fn(u8) -> i16,
}

fn g711_fns(c: Codec) -> Option<G711Fns> {
    match c {
        Codec::Pcmu => Some(G711Fns {
            enc: g711::ulaw_encode,
            dec: g711::ulaw_decode,
            enc1: g711::ulaw_encode_sample,
            dec1: g711::ulaw_decode_sample,
        }),
        Codec::Pcma => Some(G711Fns {
            enc: g711::alaw_encode,
            dec: g711::alaw_decode,
            enc1: g711::alaw_encode_sample,
            dec1: g711::alaw_decode_sample,
        }),
        _ => None,
    }
}

/// The PCM level carrying nibble `n` of the frame-number tag.
fn tag_level(n: usize) -> i16 {
    -22_500 + 3_000 * n as i16
}

/// Per leg: what the generator sends and how a frame number is read back.
struct LegAudio {
    pt: u8,
    ts_step: u32,
    frames: Vec<Vec<u8>>,
    /// Code for each tag nibble when this leg's codec carries the audio into the engine.
    tag_codes: Option<[u8; 16]>,
    /// Tag nibble of each code when this leg's codec carries audio out (0xFF: none).
    tag_lut: Option<[u8; 256]>,
}

fn tone(n: usize) -> i16 {
    ((n as f64 * 2.0 * std::f64::consts::PI * 440.0 / 8000.0).sin() * 8000.0) as i16
}

fn tone_pcm(frame: usize, samples: usize) -> Vec<i16> {
    (0..samples).map(|i| tone(frame * samples + i)).collect()
}

fn leg_audio(sc: &Scenario, spec: CodecSpec) -> Result<LegAudio, String> {
    let c = spec.codec;
    let samples = sc.frame_samples(c);
    let mut enc = AnyEncoder::with_settings(c, sc.opus());
    let mut frames = Vec::with_capacity(TONE_FRAMES);
    for f in 0..TONE_FRAMES {
        let mut out = vec![0u8; MAX_PAYLOAD];
        let n = enc
            .encode(&tone_pcm(f, samples), &mut out)
            .map_err(|e| format!("encoding the tone with {c:?}: {e:?}"))?;
        out.truncate(n);
        frames.push(out);
    }
    let fns = g711_fns(c);
    Ok(LegAudio {
        pt: spec.payload_type.get(),
        ts_step: c.timestamp_step(PTIME),
        frames,
        tag_codes: fns.map(|f| std::array::from_fn(|n| (f.enc1)(tag_level(n)))),
        tag_lut: fns.map(|f| {
            std::array::from_fn(|code| {
                let x = i32::from((f.dec1)(code as u8));
                let n = ((x + 22_500 + 1_500) / 3_000).clamp(0, 15) as usize;
                if (x - i32::from(tag_level(n))).abs() <= 1_200 {
                    n as u8
                } else {
                    0xFF
                }
            })
        }),
    })
}

/// True if a tag written by `src` arrives readable after the engine's path to `dst` (the
/// engine relays payload bytes when the codecs match, else decodes and re-encodes).
fn tag_survives(src: Codec, dst: Codec, a: &LegAudio, b: &LegAudio) -> bool {
    let (Some(codes), Some(lut)) = (a.tag_codes, b.tag_lut) else {
        return false;
    };
    let (Some(fs), Some(fd)) = (g711_fns(src), g711_fns(dst)) else {
        return false;
    };
    (0..16).all(|n| {
        let out = if src == dst {
            codes[n]
        } else {
            (fd.enc1)((fs.dec1)(codes[n]))
        };
        usize::from(lut[usize::from(out)]) == n
    })
}

fn decode_tag(bytes: &[u8], lut: &[u8; 256]) -> Option<u32> {
    let tag = bytes.get(RTP_HEADER_LEN..RTP_HEADER_LEN + TAG_NIBBLES)?;
    let mut k = 0u32;
    for (i, &b) in tag.iter().enumerate() {
        let n = lut[usize::from(b)];
        if n == 0xFF {
            return None;
        }
        k |= u32::from(n) << (4 * i);
    }
    Some(k)
}

// ---------------------------------------------------------------------------------------
// Traffic generator (shared by both modes)
// ---------------------------------------------------------------------------------------

struct Stream {
    /// The engine session this stream sends to.
    id: SessionId,
    /// 0 = leg A codec, 1 = leg B codec.
    leg: u8,
    ssrc: u32,
    seq0: u16,
    ts0: u32,
    phase_us: u32,
}

#[derive(Clone, Copy)]
struct Pending {
    stream: u32,
    k: u32,
    release_us: u64,
}

enum Clock {
    Paced { t0_ns: u64 },
    Virtual { now_us: u64 },
}

struct GenStats {
    sent: u64,
    lost: u64,
    push_errors: u64,
    popped: u64,
    matched: u64,
    unmatched: u64,
    /// Frames whose payload tag could be read and compared with the frame number derived
    /// from `source_timestamp`, and how many of those disagreed.
    tag_checked: u64,
    tag_mismatch: u64,
    /// pop - push, µs + `LAT_OFFSET_US`.
    total_us: Histogram<u64>,
    /// pop - push - jitter buffer target, µs + `LAT_OFFSET_US`.
    added_us: Histogram<u64>,
    /// pop - nominal (unjittered) send time - jitter buffer target, µs + `LAT_OFFSET_US`.
    added_nominal_us: Histogram<u64>,
    /// Paced only: pop - the start of the tick that played the frame out of the jitter
    /// buffer (`OutboundPacket::played_ns`), µs + `LAT_OFFSET_US`.
    after_jb_us: Histogram<u64>,
    /// Paced only: the jitter buffer's own delay, that tick - push, µs + `LAT_OFFSET_US`.
    jb_delay_us: Histogram<u64>,
    /// Paced only: the same minus the session's target, µs + `LAT_OFFSET_US`.
    jb_over_target_us: Histogram<u64>,
    /// Slot start lateness, ns.
    late_ns: Histogram<u64>,
    late_slots: u64,
    busy_ns: u64,
    slots: u64,
}

fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LAT_OFFSET_US as u64 + 10_000_000, 4)
        .expect("valid histogram bounds")
}

impl GenStats {
    fn new() -> Self {
        GenStats {
            sent: 0,
            lost: 0,
            push_errors: 0,
            popped: 0,
            matched: 0,
            unmatched: 0,
            tag_checked: 0,
            tag_mismatch: 0,
            total_us: latency_histogram(),
            added_us: latency_histogram(),
            added_nominal_us: latency_histogram(),
            after_jb_us: latency_histogram(),
            jb_delay_us: latency_histogram(),
            jb_over_target_us: latency_histogram(),
            late_ns: Histogram::new_with_bounds(1, 3_600_000_000_000, 3)
                .expect("valid histogram bounds"),
            late_slots: 0,
            busy_ns: 0,
            slots: 0,
        }
    }
}

/// Per stream, the jitter buffer target delay (ms) of the session receiving it, as the
/// engine last reported it (`SessionStats::jb_target_ms`); written by the control thread,
/// read by the generator.
type Targets = Arc<[AtomicU32]>;

struct Traffic {
    io: Vec<(IngressHandle, EgressHandle)>,
    streams: Vec<Stream>,
    /// Streams by the millisecond of the 20 ms period they send on.
    by_phase: Vec<Vec<u32>>,
    /// Packets waiting for their (jittered) release, by 1 ms slot.
    wheel: Vec<Vec<Pending>>,
    /// Per lane, per session slot: the stream whose audio that session sends out.
    out_map: Vec<Vec<u32>>,
    /// Per stream, `LOG_RING` entries: frame number (24 bits) << 40 | push time µs + 1.
    log: Vec<u64>,
    targets: Targets,
    legs: [LegAudio; 2],
    tagged: bool,
    rng: Rng,
    jitter_us: u64,
    loss_p: u64,
    clock: Clock,
    recording: bool,
    buf: Vec<u8>,
    st: GenStats,
}

struct TrafficSetup<'a> {
    calls: &'a [(SessionId, SessionId)],
    legs: [LegAudio; 2],
    tagged: bool,
    sessions_per_lane: usize,
    targets: Targets,
    clock: Clock,
}

/// Virtual time starts here, so no arrival time is 0 (which the engine reads as unknown).
const VIRTUAL_EPOCH_US: u64 = 1_000_000;

impl Traffic {
    fn new(o: &Opts, io: Vec<(IngressHandle, EgressHandle)>, s: TrafficSetup<'_>) -> Self {
        let mut rng = Rng::new(o.seed);
        let mut streams = Vec::with_capacity(2 * s.calls.len());
        let mut by_phase = vec![Vec::new(); SLOTS_PER_FRAME as usize];
        let mut out_map = vec![vec![u32::MAX; s.sessions_per_lane]; io.len()];
        for &(a, b) in s.calls {
            for (leg, id) in [(0u8, a), (1u8, b)] {
                let r = rng.next();
                let phase_us = rng.below(PTIME_NS / 1000) as u32;
                by_phase[(phase_us / 1000) as usize].push(streams.len() as u32);
                streams.push(Stream {
                    id,
                    leg,
                    ssrc: r as u32,
                    seq0: (r >> 32) as u16,
                    ts0: (r >> 16) as u32 ^ rng.next() as u32,
                    phase_us,
                });
            }
            let ia = streams.len() as u32 - 2;
            // Session b sends out what was pushed to a, and a what was pushed to b.
            out_map[b.lane()][b.slot() as usize] = ia;
            out_map[a.lane()][a.slot() as usize] = ia + 1;
        }
        let jitter_us = (o.jitter_ms * 1000.0).round() as u64;
        let wheel_len = ((jitter_us / 1000) as usize + 3).next_power_of_two();
        let log = vec![0u64; streams.len() * LOG_RING];
        Traffic {
            io,
            streams,
            by_phase,
            wheel: vec![Vec::new(); wheel_len],
            out_map,
            log,
            targets: s.targets,
            legs: s.legs,
            tagged: s.tagged,
            rng,
            jitter_us,
            loss_p: (o.loss.clamp(0.0, 1.0) * 18_446_744_073_709_551_616.0) as u64,
            clock: s.clock,
            recording: false,
            buf: vec![0u8; RTP_HEADER_LEN + MAX_PAYLOAD],
            st: GenStats::new(),
        }
    }

    /// Microseconds on the generator's timeline (paced: since `t0_ns`; virtual: media time
    /// from `VIRTUAL_EPOCH_US`).
    fn now_us(&self) -> u64 {
        match self.clock {
            Clock::Paced { t0_ns } => monotonic_ns().saturating_sub(t0_ns) / 1000,
            Clock::Virtual { now_us } => now_us,
        }
    }

    /// Generator slot `s` (1 ms): schedules the packets of the streams whose send phase is
    /// this millisecond, then pushes every packet whose jittered release is due.
    fn emit(&mut self, s: u64) {
        let Traffic {
            io,
            streams,
            by_phase,
            wheel,
            log,
            legs,
            tagged,
            rng,
            jitter_us,
            loss_p,
            clock,
            recording,
            buf,
            st,
            ..
        } = self;
        let k = (s / SLOTS_PER_FRAME) as u32;
        let frame_us = u64::from(k) * (PTIME_NS / 1000);
        let mask = wheel.len() - 1;
        for &si in &by_phase[(s % SLOTS_PER_FRAME) as usize] {
            if rng.next() < *loss_p {
                if *recording {
                    st.lost += 1;
                }
                continue;
            }
            let d = if *jitter_us > 0 {
                rng.below(*jitter_us + 1)
            } else {
                0
            };
            let release_us = frame_us + u64::from(streams[si as usize].phase_us) + d;
            wheel[(release_us / 1000) as usize & mask].push(Pending {
                stream: si,
                k,
                release_us,
            });
        }
        let idx = s as usize & mask;
        let mut due = std::mem::take(&mut wheel[idx]);
        for p in &due {
            let stream = &streams[p.stream as usize];
            let leg = &legs[usize::from(stream.leg)];
            let payload = &leg.frames[p.k as usize % TONE_FRAMES];
            let n = RTP_HEADER_LEN + payload.len();
            buf[RTP_HEADER_LEN..n].copy_from_slice(payload);
            if *tagged && payload.len() >= TAG_NIBBLES {
                if let Some(codes) = &leg.tag_codes {
                    for (i, b) in buf[RTP_HEADER_LEN..RTP_HEADER_LEN + TAG_NIBBLES]
                        .iter_mut()
                        .enumerate()
                    {
                        *b = codes[(p.k >> (4 * i)) as usize & 15];
                    }
                }
            }
            let h = RtpHeader {
                marker: p.k == 0,
                payload_type: leg.pt,
                sequence: stream.seq0.wrapping_add(p.k as u16),
                timestamp: stream.ts0.wrapping_add(p.k.wrapping_mul(leg.ts_step)),
                ssrc: stream.ssrc,
            };
            // Cannot fail: the buffer holds a header and the payload type is below 128.
            let _ = write_header(&h, &mut buf[..n]);
            // The arrival time goes to the engine (its jitter estimate) and to the log.
            let (t_us, arrival_ns) = match clock {
                Clock::Paced { t0_ns } => {
                    let now = monotonic_ns();
                    (now.saturating_sub(*t0_ns) / 1000, now)
                }
                Clock::Virtual { .. } => {
                    let t = VIRTUAL_EPOCH_US + p.release_us;
                    (t, t * 1000)
                }
            };
            match io[stream.id.lane()]
                .0
                .push_at(stream.id, &buf[..n], arrival_ns)
            {
                Ok(()) => {
                    log[p.stream as usize * LOG_RING + p.k as usize % LOG_RING] =
                        (u64::from(p.k) & 0xFF_FFFF) << 40 | ((t_us + 1) & LOG_T_MASK);
                    if *recording {
                        st.sent += 1;
                    }
                }
                Err(_) => {
                    if *recording {
                        st.push_errors += 1;
                    }
                }
            }
        }
        due.clear();
        wheel[idx] = due;
    }

    /// Pops every egress packet of every lane; while recording, finds the input packet
    /// each one carries (see the module docs) and records its latency.
    fn pop_all(&mut self) {
        let now_us = self.now_us();
        let (virtual_epoch, paced_t0_ns) = match self.clock {
            Clock::Paced { t0_ns } => (0, Some(t0_ns)),
            Clock::Virtual { .. } => (VIRTUAL_EPOCH_US, None),
        };
        let Traffic {
            io,
            streams,
            out_map,
            log,
            targets,
            legs,
            tagged,
            recording,
            st,
            ..
        } = self;
        for (lane, (_, eg)) in io.iter_mut().enumerate() {
            while let Some(p) = eg.pop() {
                if !*recording {
                    continue;
                }
                st.popped += 1;
                let si = out_map[lane]
                    .get(p.session().slot() as usize)
                    .copied()
                    .unwrap_or(u32::MAX);
                let Some(stream) = streams.get(si as usize) else {
                    st.unmatched += 1;
                    continue;
                };
                let in_leg = &legs[usize::from(stream.leg)];
                let step = in_leg.ts_step.max(1);
                // The frame's first sample on the input stream's timeline; the input packet
                // it waited for is the one holding its last sample.
                let off = p.source_timestamp().wrapping_sub(stream.ts0);
                let first_k = off / step;
                let k = off.div_ceil(step);
                if *tagged && off % step == 0 {
                    if let Some(lut) = &legs[1 - usize::from(stream.leg)].tag_lut {
                        if let Some(tag) = p.with_bytes(|b| decode_tag(b, lut)) {
                            st.tag_checked += 1;
                            if tag != first_k {
                                st.tag_mismatch += 1;
                            }
                        }
                    }
                }
                let e = log[si as usize * LOG_RING + k as usize % LOG_RING];
                if e >> 40 != u64::from(k) & 0xFF_FFFF || e & LOG_T_MASK == 0 {
                    // Concealment (its packet was lost) or a frame older than the log.
                    st.unmatched += 1;
                    continue;
                }
                let pushed = ((e & LOG_T_MASK) - 1) as i64;
                let target_us = i64::from(targets[si as usize].load(Ordering::Relaxed)) * 1000;
                let nominal = virtual_epoch as i64
                    + i64::from(k) * (PTIME_NS / 1000) as i64
                    + i64::from(stream.phase_us);
                let now = now_us as i64;
                let rec = |h: &mut Histogram<u64>, v: i64| {
                    h.saturating_record((v + LAT_OFFSET_US).max(1) as u64)
                };
                rec(&mut st.total_us, now - pushed);
                rec(&mut st.added_us, now - pushed - target_us);
                rec(&mut st.added_nominal_us, now - nominal - target_us);
                // Real time: the lane stamps frames with its monotonic tick start, the
                // generator's timebase. (On the virtual clock the lane's is tick x 10 ms
                // and a frame is popped right after the step that played it.)
                if let Some(t0) = paced_t0_ns.filter(|_| p.played_ns() != 0) {
                    let played = (p.played_ns().saturating_sub(t0) / 1000) as i64;
                    rec(&mut st.after_jb_us, now - played);
                    rec(&mut st.jb_delay_us, played - pushed);
                    rec(&mut st.jb_over_target_us, played - pushed - target_us);
                }
                st.matched += 1;
            }
        }
    }
}

struct GenThreadReport {
    pinned: Option<bool>,
    priority_raised: bool,
}

/// The paced generator: 1 ms slots on absolute deadlines from `t0_ns`, recording from
/// slot `warm_slots` on, until `end_slots`.
fn generator_thread(
    mut tr: Traffic,
    core: Option<usize>,
    t0_ns: u64,
    warm_slots: u64,
    end_slots: u64,
) -> (Traffic, GenThreadReport) {
    let pinned = core.map(|id| core_affinity::set_for_current(core_affinity::CoreId { id }));
    let priority_raised =
        thread_priority::set_current_thread_priority(thread_priority::ThreadPriority::Max).is_ok();
    for s in 0..end_slots {
        let deadline = t0_ns + s * SLOT_NS;
        sleep_until_ns(deadline);
        let start = monotonic_ns();
        let rec = s >= warm_slots;
        tr.recording = rec;
        if rec {
            let late = start.saturating_sub(deadline);
            tr.st.late_ns.saturating_record(late.max(1));
            if late > GEN_LATE_LIMIT_NS {
                tr.st.late_slots += 1;
            }
            tr.st.slots += 1;
        }
        tr.emit(s);
        tr.pop_all();
        if rec {
            tr.st.busy_ns += monotonic_ns() - start;
        }
    }
    tr.recording = false;
    (
        tr,
        GenThreadReport {
            pinned,
            priority_raised,
        },
    )
}

// ---------------------------------------------------------------------------------------
// Engine counters
// ---------------------------------------------------------------------------------------

macro_rules! agg {
    ($name:ident from $src:ident { $($f:ident),* $(,)? }) => {
        #[derive(Debug, Default, Clone, Copy)]
        struct $name { $($f: u64,)* }
        impl $name {
            fn accumulate(&mut self, s: &$src) { $(self.$f += s.$f;)* }
            fn since(&self, e: &$name) -> $name {
                $name { $($f: self.$f.saturating_sub(e.$f),)* }
            }
            #[allow(dead_code)]
            fn plus(&mut self, o: &$name) { $(self.$f += o.$f;)* }
        }
    };
}

agg!(LaneAgg from LaneStats {
    ticks, deadline_overruns, ticks_skipped, unknown_session, malformed, ingress_full,
    ingress_too_large, ingress_rate_limited, ingress_unknown, internal_ring_full, stage_backlog_drops,
    events_dropped,
});

agg!(SessAgg from SessionStats {
    rx_packets, rx_late, rx_duplicates, jb_duplicates, rx_resyncs, jb_resyncs,
    rx_unsupported_pt, rx_undecodable, rx_reordered, jb_overflows, packets_decoded,
    frames_decoded, frames_relayed, frames_missing, frames_concealed, samples_concealed,
    samples_accelerated, samples_expanded, slab_exhausted, no_sink, frames_processed,
    tx_packets, tx_egress_full, codec_errors,
});

struct Snap {
    lanes: Vec<LaneAgg>,
    hists: Vec<HistogramSnapshot>,
    sess: SessAgg,
    /// Per engine session in stream order (a0, b0, a1, ...): jitter buffer target and
    /// level, ms (gauges).
    jb_target: Vec<u32>,
    jb_level: Vec<u32>,
}

fn lane_snap(engine: &MediaEngine, lanes: usize) -> (Vec<LaneAgg>, Vec<HistogramSnapshot>) {
    let mut l = Vec::with_capacity(lanes);
    let mut h = Vec::with_capacity(lanes);
    for i in 0..lanes {
        let mut a = LaneAgg::default();
        a.accumulate(&engine.lane_stats(i).expect("lane exists"));
        l.push(a);
        h.push(engine.lane_tick_histogram(i).expect("lane exists"));
    }
    (l, h)
}

fn snap(engine: &MediaEngine, lanes: usize, calls: &[(SessionId, SessionId)]) -> Snap {
    let (l, h) = lane_snap(engine, lanes);
    let mut sess = SessAgg::default();
    let mut jb_target = Vec::with_capacity(2 * calls.len());
    let mut jb_level = Vec::with_capacity(2 * calls.len());
    for &(a, b) in calls {
        for id in [a, b] {
            let s = engine.session_stats(id).unwrap_or_default();
            sess.accumulate(&s);
            jb_target.push(s.jb_target_ms as u32);
            jb_level.push(s.jb_level_ms as u32);
        }
    }
    Snap {
        lanes: l,
        hists: h,
        sess,
        jb_target,
        jb_level,
    }
}

/// Refreshes the generator's view of each stream's jitter buffer target.
fn publish_targets(targets: &Targets, jb_target: &[u32]) {
    for (t, &v) in targets.iter().zip(jb_target) {
        t.store(v, Ordering::Relaxed);
    }
}

/// Reads only the jitter buffer targets (for refreshes during a window).
fn read_targets(engine: &MediaEngine, calls: &[(SessionId, SessionId)], targets: &Targets) {
    for (i, &(a, b)) in calls.iter().enumerate() {
        for (j, id) in [a, b].into_iter().enumerate() {
            if let Ok(s) = engine.session_stats(id) {
                targets[2 * i + j].store(s.jb_target_ms as u32, Ordering::Relaxed);
            }
        }
    }
}

/// p50, p95 and max of a gauge across sessions.
fn spread(v: &[u32]) -> [u32; 3] {
    if v.is_empty() {
        return [0; 3];
    }
    let mut w = v.to_vec();
    w.sort_unstable();
    let at = |q: f64| w[((q * (w.len() - 1) as f64).round() as usize).min(w.len() - 1)];
    [at(0.5), at(0.95), w[w.len() - 1]]
}

#[derive(Debug, Default, Clone, Copy)]
struct TickFigures {
    p50: u64,
    p99: u64,
    p999: u64,
    max: u64,
    count: u64,
    /// The lane the percentiles come from (the one with the highest p99.9).
    lane: usize,
}

/// The tick median of each 0.5 s slice of a paced window (of the lane with the highest
/// p99.9 in that slice). The lane's work per tick is the same in every slice (the same
/// calls, the same traffic), so slices whose median rises well above the others' show the
/// machine slowing down for a while (another tenant's load on a shared host, frequency),
/// not the load: a window failed in such a stretch says little about the lane's cost.
#[derive(Debug, Clone, Default)]
struct Slices {
    /// Median over the slices of their tick medians, ns.
    median_p50: u64,
    /// The slowest slice's tick median, ns, and when it ended (s into the window).
    worst_p50: u64,
    worst_at_s: f64,
    /// Slices whose tick median exceeds 1.25 × `median_p50`, and slices in all.
    slow: usize,
    count: usize,
}

impl Slices {
    /// From (end of slice in s, its tick median in ns) pairs.
    fn from(p50s: &[(f64, u64)]) -> Option<Slices> {
        let mut v: Vec<u64> = p50s.iter().map(|x| x.1).collect();
        v.sort_unstable();
        let median_p50 = *v.get(v.len() / 2)?;
        let &(worst_at_s, worst_p50) = p50s.iter().max_by_key(|x| x.1)?;
        Some(Slices {
            median_p50,
            worst_p50,
            worst_at_s,
            slow: p50s
                .iter()
                .filter(|x| x.1 as f64 > 1.25 * median_p50 as f64)
                .count(),
            count: p50s.len(),
        })
    }
}

/// Per-lane windows; the figures of the lane with the highest p99.9 (every lane must
/// meet the budget), max over all lanes.
fn tick_figures(before: &[HistogramSnapshot], after: &[HistogramSnapshot]) -> TickFigures {
    let mut t = TickFigures::default();
    let mut worst = None;
    for (i, (a, b)) in before.iter().zip(after).enumerate() {
        let w = b.since(a);
        let p999 = w.quantile(0.999);
        t.max = t.max.max(w.max());
        t.count += w.count();
        if worst.is_none_or(|(_, p)| p999 > p) {
            worst = Some((i, p999));
            t.lane = i;
            t.p50 = w.quantile(0.5);
            t.p99 = w.quantile(0.99);
            t.p999 = p999;
        }
    }
    t
}

#[derive(Debug, Default, Clone, Copy)]
struct Drops {
    unknown_session: u64,
    malformed: u64,
    ingress_full: u64,
    ingress_too_large: u64,
    ingress_rate_limited: u64,
    internal_ring_full: u64,
    stage_backlog_drops: u64,
    jb_overflows: u64,
    slab_exhausted: u64,
    tx_egress_full: u64,
}

impl Drops {
    fn of(l: &LaneAgg, s: &SessAgg) -> Self {
        Drops {
            // Refused at the handle or dropped by the lane.
            unknown_session: l.unknown_session + l.ingress_unknown,
            malformed: l.malformed,
            ingress_full: l.ingress_full,
            ingress_too_large: l.ingress_too_large,
            ingress_rate_limited: l.ingress_rate_limited,
            internal_ring_full: l.internal_ring_full,
            stage_backlog_drops: l.stage_backlog_drops,
            jb_overflows: s.jb_overflows,
            slab_exhausted: s.slab_exhausted,
            tx_egress_full: s.tx_egress_full,
        }
    }

    fn fields(&self) -> [(&'static str, u64); 10] {
        [
            ("unknown_session", self.unknown_session),
            ("malformed", self.malformed),
            ("ingress_full", self.ingress_full),
            ("ingress_too_large", self.ingress_too_large),
            ("ingress_rate_limited", self.ingress_rate_limited),
            ("internal_ring_full", self.internal_ring_full),
            ("stage_backlog_drops", self.stage_backlog_drops),
            ("jitter_buffer_overflows", self.jb_overflows),
            ("frame_slab_exhausted", self.slab_exhausted),
            ("egress_full", self.tx_egress_full),
        ]
    }

    fn total(&self) -> u64 {
        self.fields().iter().map(|(_, v)| v).sum()
    }
}

// ---------------------------------------------------------------------------------------
// Memory
// ---------------------------------------------------------------------------------------

fn rss_bytes() -> u64 {
    let Ok(s) = std::fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    let pages: u64 = s
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions; _SC_PAGESIZE is always valid.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * page.max(1) as u64
}

/// Returns freed heap memory to the OS so the next RSS baseline is not inflated by what
/// the previous step's engine left in the allocator.
fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; no pointers are invalidated.
    unsafe {
        libc::malloc_trim(0);
    }
}

// ---------------------------------------------------------------------------------------
// Steps
// ---------------------------------------------------------------------------------------

#[derive(Debug, Default, Clone, Copy)]
struct Latency {
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    min_ms: f64,
    samples: u64,
}

#[derive(Debug, Default, Clone, Copy)]
struct VirtualFigures {
    iterations: u64,
    step_ns_per_20ms: f64,
    total_ns_per_20ms: f64,
    frames_per_s_lane: f64,
    frames_per_s_wall: f64,
    calls_per_core_step: f64,
    calls_per_core_total: f64,
    /// The same two figures from the thread's CPU time (immune to preemption).
    step_cpu_ns_per_20ms: f64,
    total_cpu_ns_per_20ms: f64,
    calls_per_core_step_cpu: f64,
    calls_per_core_total_cpu: f64,
}

#[derive(Debug, Default, Clone)]
struct StepResult {
    calls: usize,
    /// A run of the confirmation stage (`--confirm`), not of the ramp.
    confirm: bool,
    capacity: usize,
    pass: bool,
    /// The generator kept up (paced); always true on the virtual clock.
    valid: bool,
    window_s: f64,
    tick: TickFigures,
    lane: LaneAgg,
    sess: SessAgg,
    drops: Drops,
    gen_sent: u64,
    gen_lost: u64,
    gen_push_errors: u64,
    gen_popped: u64,
    gen_late_p999_ns: u64,
    gen_late_max_ns: u64,
    gen_late_slots: u64,
    gen_busy: f64,
    /// Paced: the tick median in each 0.5 s slice of the window (see [`Slices`]).
    slices: Option<Slices>,
    gen_pinned: Option<bool>,
    gen_priority: bool,
    /// pop - push.
    total_latency: Option<Latency>,
    /// pop - push - jitter buffer target.
    added_latency: Option<Latency>,
    /// pop - nominal send time - jitter buffer target.
    added_nominal: Option<Latency>,
    /// Paced: pop - the tick that played the frame (what the engine adds after its buffer).
    after_jb: Option<Latency>,
    /// Paced: that tick - push (the jitter buffer's own delay), and the same minus target.
    jb_delay: Option<Latency>,
    jb_over_target: Option<Latency>,
    matched: u64,
    unmatched: u64,
    tag_checked: u64,
    tag_mismatch: u64,
    /// Jitter buffer target and level across sessions at the end of the window, ms:
    /// p50, p95, max.
    jb_target: [u32; 3],
    jb_level: [u32; 3],
    rss_before: u64,
    rss_built: u64,
    huge_pages: Option<HugePages>,
    rss_after: u64,
    create_s: f64,
    create_flushes: usize,
    lane_events: Vec<String>,
    virt: Option<VirtualFigures>,
}

impl StepResult {
    fn rss_per_session(&self) -> f64 {
        self.rss_built.saturating_sub(self.rss_before) as f64 / self.capacity.max(1) as f64
    }
    fn rss_per_call(&self) -> f64 {
        self.rss_built.saturating_sub(self.rss_before) as f64 / self.calls.max(1) as f64
    }
    fn rss_per_call_after(&self) -> f64 {
        self.rss_after.saturating_sub(self.rss_before) as f64 / self.calls.max(1) as f64
    }
}

struct Built {
    engine: MediaEngine,
    io: Vec<(IngressHandle, EgressHandle)>,
    calls: Vec<(SessionId, SessionId)>,
    capacity: usize,
    sessions_per_lane: usize,
    create_s: f64,
    flushes: usize,
    rss_before: u64,
    rss_built: u64,
    /// What `use_huge_pages` did (`None`: `--no-huge-pages`).
    huge_pages: Option<HugePages>,
    lane_events: Vec<String>,
}

fn params(sc: &Scenario, spec: CodecSpec) -> MediaSessionParams {
    let mut p = MediaSessionParams::new(spec, PTIME);
    p.dsp = (sc.dsp)();
    p.opus = sc.opus();
    p
}

fn build(o: &Opts, plan: &CorePlan, calls: usize) -> Result<Built, String> {
    trim_heap();
    let rss_before = rss_bytes();
    let sessions_per_lane = 2 * calls.div_ceil(o.lanes) + 16;
    let engine = MediaEngine::new(EngineConfig {
        clock: match o.mode {
            Mode::Paced => ClockMode::Realtime,
            Mode::Virtual => ClockMode::Virtual,
        },
        cores: match o.mode {
            Mode::Paced => plan.lane_cores.clone(),
            Mode::Virtual => Vec::new(),
        },
        topology: o.topology,
        lanes: o.lanes,
        raise_priority: true,
        sessions_per_lane,
        max_payload_bytes: MAX_PAYLOAD,
        // The longer of the two legs' frames (Opus at 48 kHz: 960 samples per 20 ms).
        max_frame_samples: o
            .scenario
            .legs
            .iter()
            .map(|l| l.codec.frame_samples(PTIME))
            .max()
            .unwrap_or(160)
            .max(480),
        ..Default::default()
    })
    .map_err(|e| format!("building the engine: {e}"))?;
    let io = (0..o.lanes)
        .map(|l| engine.take_rtp_handles(l).expect("handles of a lane"))
        .collect();
    let fifo = o.fifo && o.mode == Mode::Paced;
    if fifo {
        set_fifo(true)?;
    }
    let started = engine.start();
    if fifo {
        set_fifo(false)?;
    }
    started.map_err(|e| format!("starting the engine: {e}"))?;
    // `create_call` is not atomic when the command ring fills between its commands (see
    // the report), so calls are created in batches that always fit the ring (4 commands
    // per call) and the lanes apply each batch before the next.
    let batch = (engine.config().command_capacity / 4)
        .saturating_sub(2)
        .max(1);
    let t = Instant::now();
    let mut flushes = 0;
    let mut v = Vec::with_capacity(calls);
    let [la, lb] = o.scenario.legs;
    for i in 0..calls as u64 {
        if i > 0 && i % batch as u64 == 0 {
            engine
                .flush(Duration::from_secs(10))
                .map_err(|e| format!("waiting for the lanes to apply creates: {e}"))?;
            flushes += 1;
        }
        let leg = |spec| {
            let mut p = params(o.scenario, spec);
            if o.half_plain && i % 2 == 0 {
                p.dsp = no_dsp();
            }
            p
        };
        let (a, b) = engine
            .create_call((DialogId(2 * i), leg(la)), (DialogId(2 * i + 1), leg(lb)))
            .map_err(|e| format!("creating call {i} of {calls}: {e}"))?;
        v.push((a.id, b.id));
    }
    engine
        .flush(Duration::from_secs(10))
        .map_err(|e| format!("waiting for the lanes to apply creates: {e}"))?;
    let create_s = t.elapsed().as_secs_f64();
    // Before any traffic, while the lanes are idle (see the module docs, "Pages").
    let huge_pages = o.huge_pages.then(|| engine.use_huge_pages(true));
    let rss_built = rss_bytes();
    let lane_events = engine
        .events()
        .filter_map(|e| match e {
            EngineEvent::SessionStarted(_)
            | EngineEvent::SessionStopped(_)
            | EngineEvent::DeadlineOverrun { .. } => None,
            other => Some(format!("{other:?}")),
        })
        .collect();
    Ok(Built {
        engine,
        io,
        calls: v,
        capacity: sessions_per_lane * o.lanes,
        sessions_per_lane,
        create_s,
        flushes,
        rss_before,
        rss_built,
        huge_pages,
        lane_events,
    })
}

fn traffic_for(o: &Opts, b: &mut Built, clock: Clock) -> Result<(Traffic, Targets), String> {
    let [sa, sb] = o.scenario.legs;
    let legs = [leg_audio(o.scenario, sa)?, leg_audio(o.scenario, sb)?];
    let tagged = tag_survives(sa.codec, sb.codec, &legs[0], &legs[1])
        && tag_survives(sb.codec, sa.codec, &legs[1], &legs[0]);
    let initial = b.engine.config().jitter.initial_delay_ms;
    let targets: Targets = (0..2 * b.calls.len())
        .map(|_| AtomicU32::new(initial))
        .collect();
    let tr = Traffic::new(
        o,
        std::mem::take(&mut b.io),
        TrafficSetup {
            calls: &b.calls,
            legs,
            tagged,
            sessions_per_lane: b.sessions_per_lane,
            targets: targets.clone(),
            clock,
        },
    );
    Ok((tr, targets))
}

fn latency_of(h: &Histogram<u64>) -> Option<Latency> {
    if h.is_empty() {
        return None;
    }
    let ms = |v: u64| (v as i64 - LAT_OFFSET_US) as f64 / 1000.0;
    Some(Latency {
        p50_ms: ms(h.value_at_quantile(0.5)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        max_ms: ms(h.max()),
        min_ms: ms(h.min()),
        samples: h.len(),
    })
}

fn finish_step(o: &Opts, b: &Built, before: &Snap, after: &Snap, tr: &Traffic) -> StepResult {
    let tick = tick_figures(&before.hists, &after.hists);
    let mut lane = LaneAgg::default();
    for (x, y) in before.lanes.iter().zip(&after.lanes) {
        lane.plus(&y.since(x));
    }
    let sess = after.sess.since(&before.sess);
    let st = &tr.st;
    let valid = st.late_slots == 0;
    let budget = o.headroom * TICK_NS as f64;
    StepResult {
        calls: b.calls.len(),
        capacity: b.capacity,
        pass: valid
            && lane.deadline_overruns == 0
            && (tick.p999 as f64) < budget
            && (!o.strict || Drops::of(&lane, &sess).total() == 0),
        valid,
        tick,
        lane,
        sess,
        drops: Drops::of(&lane, &sess),
        gen_sent: st.sent,
        gen_lost: st.lost,
        gen_push_errors: st.push_errors,
        gen_popped: st.popped,
        gen_late_p999_ns: if st.late_ns.is_empty() {
            0
        } else {
            st.late_ns.value_at_quantile(0.999)
        },
        gen_late_max_ns: if st.late_ns.is_empty() {
            0
        } else {
            st.late_ns.max()
        },
        gen_late_slots: st.late_slots,
        total_latency: latency_of(&st.total_us),
        added_latency: latency_of(&st.added_us),
        added_nominal: latency_of(&st.added_nominal_us),
        after_jb: latency_of(&st.after_jb_us),
        jb_delay: latency_of(&st.jb_delay_us),
        jb_over_target: latency_of(&st.jb_over_target_us),
        matched: st.matched,
        tag_checked: st.tag_checked,
        tag_mismatch: st.tag_mismatch,
        jb_target: spread(&after.jb_target),
        jb_level: spread(&after.jb_level),
        unmatched: st.unmatched,
        rss_before: b.rss_before,
        rss_built: b.rss_built,
        huge_pages: b.huge_pages,
        create_s: b.create_s,
        create_flushes: b.flushes,
        lane_events: b.lane_events.clone(),
        ..Default::default()
    }
}

fn run_paced_step(
    o: &Opts,
    plan: &CorePlan,
    calls: usize,
    out: &mut Out,
) -> Result<StepResult, String> {
    out.progress(&format!(
        "[paced] {calls} calls: building the engine and creating the calls"
    ));
    let mut b = build(o, plan, calls)?;
    let lanes = o.lanes;
    let t0_ns = monotonic_ns() + 20_000_000;
    let (tr, targets) = traffic_for(o, &mut b, Clock::Paced { t0_ns })?;
    let warm_slots = (o.warmup * 1e9 / SLOT_NS as f64).round() as u64;
    let end_slots = warm_slots + (o.seconds * 1e9 / SLOT_NS as f64).round().max(1.0) as u64;
    let gen_core = plan.gen_core;
    if o.fifo {
        set_fifo(true)?;
    }
    let gen = std::thread::Builder::new()
        .name("spc-generator".into())
        .spawn(move || generator_thread(tr, gen_core, t0_ns, warm_slots, end_slots));
    if o.fifo {
        set_fifo(false)?;
    }
    let gen = gen.map_err(|e| format!("spawning the generator: {e}"))?;
    out.progress(&format!(
        "[paced] {calls} calls: warming up for {} s",
        o.warmup
    ));
    let w0 = t0_ns + warm_slots * SLOT_NS;
    let w1 = t0_ns + end_slots * SLOT_NS;
    // Refresh the jitter buffer targets the latency figures subtract while warming up,
    // then every 0.5 s.
    let mut next = t0_ns;
    while next + 500_000_000 < w0 {
        next += 500_000_000;
        sleep_until_ns(next);
        read_targets(&b.engine, &b.calls, &targets);
    }
    sleep_until_ns(w0);
    let before = snap(&b.engine, lanes, &b.calls);
    publish_targets(&targets, &before.jb_target);
    let mut next = w0;
    let mut slice_from = before.hists.clone();
    let mut slice_p50s = Vec::new();
    loop {
        next = (next + 500_000_000).min(w1);
        sleep_until_ns(next);
        if next >= w1 {
            break;
        }
        read_targets(&b.engine, &b.calls, &targets);
        let (l, h) = lane_snap(&b.engine, lanes);
        slice_p50s.push(((next - w0) as f64 / 1e9, tick_figures(&slice_from, &h).p50));
        if out.live {
            let t = tick_figures(&before.hists, &h);
            let ov: u64 = l
                .iter()
                .zip(&before.lanes)
                .map(|(x, y)| x.deadline_overruns - y.deadline_overruns)
                .sum();
            out.progress(&format!(
                "[paced] {calls} calls: {:.1}/{:.1} s  tick p50 {} p99 {} p99.9 {} max {}  overruns {ov}",
                (next - w0) as f64 / 1e9,
                o.seconds,
                ms(t.p50),
                ms(t.p99),
                ms(t.p999),
                ms(t.max),
            ));
        }
        slice_from = h;
    }
    let after = snap(&b.engine, lanes, &b.calls);
    slice_p50s.push((
        (w1 - w0) as f64 / 1e9,
        tick_figures(&slice_from, &after.hists).p50,
    ));
    let (tr, rep) = gen
        .join()
        .map_err(|_| "the generator thread panicked".to_string())?;
    let mut r = finish_step(o, &b, &before, &after, &tr);
    r.window_s = (w1 - w0) as f64 / 1e9;
    r.gen_busy = tr.st.busy_ns as f64 / (w1 - w0) as f64;
    r.slices = Slices::from(&slice_p50s);
    r.gen_pinned = rep.pinned;
    r.gen_priority = rep.priority_raised;
    r.rss_after = rss_bytes();
    drop(tr);
    b.engine.stop().map_err(|e| format!("stopping: {e}"))?;
    Ok(r)
}

fn run_virtual_step(
    o: &Opts,
    plan: &CorePlan,
    calls: usize,
    out: &mut Out,
) -> Result<StepResult, String> {
    if let Some(&c) = plan.used.first() {
        core_affinity::set_for_current(core_affinity::CoreId { id: c });
    }
    let mut b = build(o, plan, calls)?;
    let lanes = o.lanes;
    let (mut tr, targets) = traffic_for(
        o,
        &mut b,
        Clock::Virtual {
            now_us: VIRTUAL_EPOCH_US,
        },
    )?;
    let engine = &b.engine;
    // Generator slot (ms of media) of the next push.
    let mut k: u64 = 0;
    // Returns wall ns inside step, wall ns of the iteration, and the same in CPU time.
    // One iteration = 20 ms of media. Default: per 10 ms tick, push the traffic released
    // during that tick, `step(1)`, pop; with --step2, push the whole 20 ms, `step(2)`, pop.
    // Returns wall ns inside step, wall ns of the iteration, and the same in CPU time.
    let (chunks, ticks) = if o.step2 { (1, 2) } else { (2, 1) };
    let slots_per_chunk = SLOTS_PER_FRAME / chunks;
    // Filled outside `step`, so the lane's own allocation-free run is not what grows it.
    let mut tick_log: Vec<u64> = Vec::with_capacity(if o.tick_log.is_some() { 1 << 16 } else { 0 });
    let mut iterate = |tr: &mut Traffic| -> Result<[u64; 4], String> {
        let t_a = monotonic_ns();
        let c_a = thread_cpu_ns();
        let (mut step_ns, mut step_cpu) = (0, 0);
        for _ in 0..chunks {
            tr.clock = Clock::Virtual {
                now_us: VIRTUAL_EPOCH_US + k * SLOT_NS / 1000,
            };
            for s in k..k + slots_per_chunk {
                tr.emit(s);
            }
            let c_b = thread_cpu_ns();
            let t_b = monotonic_ns();
            engine.step(ticks).map_err(|e| format!("step: {e}"))?;
            let t_c = monotonic_ns();
            let c_c = thread_cpu_ns();
            step_ns += t_c - t_b;
            step_cpu += c_c - c_b;
            if o.tick_log.is_some() && tr.recording {
                tick_log.push(t_c - t_b);
            }
            k += slots_per_chunk;
            tr.clock = Clock::Virtual {
                now_us: VIRTUAL_EPOCH_US + k * SLOT_NS / 1000,
            };
            tr.pop_all();
        }
        Ok([
            step_ns,
            monotonic_ns() - t_a,
            step_cpu,
            thread_cpu_ns() - c_a,
        ])
    };
    for i in 0..(o.warmup * 50.0).round() as u64 {
        iterate(&mut tr)?;
        if i % 25 == 24 {
            read_targets(engine, &b.calls, &targets);
        }
    }
    let before = snap(engine, lanes, &b.calls);
    publish_targets(&targets, &before.jb_target);
    tr.recording = true;
    let w0 = monotonic_ns();
    let w1 = w0 + (o.seconds * 1e9) as u64;
    let mut sum = [0u64; 4];
    let mut iters = 0u64;
    let mut next_progress = w0 + 500_000_000;
    loop {
        let d = iterate(&mut tr)?;
        for (a, x) in sum.iter_mut().zip(d) {
            *a += x;
        }
        let step_ns = sum[0];
        iters += 1;
        if iters.is_multiple_of(25) {
            // Every 0.5 s of media, outside the timed iteration.
            read_targets(engine, &b.calls, &targets);
        }
        let now = monotonic_ns();
        if o.iterations.map_or(now >= w1, |n| iters >= n) {
            break;
        }
        if out.live && now >= next_progress {
            next_progress = now + 500_000_000;
            let per = step_ns as f64 / iters as f64;
            let cpu = sum[2] as f64 / iters as f64;
            out.progress(&format!(
                "[virtual] {calls} calls: {:.1}/{:.1} s  {iters} x 20 ms  lane {:.3} ms per 20 ms (CPU {:.3})  -> {:.0} calls/core (CPU time: {:.0})",
                (now - w0) as f64 / 1e9,
                o.seconds,
                per / 1e6,
                cpu / 1e6,
                calls as f64 * PTIME_NS as f64 / per,
                calls as f64 * PTIME_NS as f64 / cpu
            ));
        }
    }
    let wall = (monotonic_ns() - w0) as f64;
    tr.recording = false;
    if let Some(path) = &o.tick_log {
        let text: String = tick_log.iter().map(|ns| format!("{ns}\n")).collect();
        std::fs::write(path, text).map_err(|e| format!("--tick-log {path}: {e}"))?;
        out.line(&format!(
            "  tick log: {} ticks written to {path}",
            tick_log.len()
        ));
    }
    let after = snap(engine, lanes, &b.calls);
    let mut r = finish_step(o, &b, &before, &after, &tr);
    let per = |x: u64| x as f64 / iters.max(1) as f64;
    let (step_per, total_per) = (per(sum[0]), per(sum[1]));
    let (step_cpu, total_cpu) = (per(sum[2]), per(sum[3]));
    let frames = r.sess.tx_packets as f64;
    let implied = |ns: f64| calls as f64 * PTIME_NS as f64 / ns;
    r.virt = Some(VirtualFigures {
        iterations: iters,
        step_ns_per_20ms: step_per,
        total_ns_per_20ms: total_per,
        step_cpu_ns_per_20ms: step_cpu,
        total_cpu_ns_per_20ms: total_cpu,
        calls_per_core_step_cpu: implied(step_cpu),
        calls_per_core_total_cpu: implied(total_cpu),
        frames_per_s_lane: frames / (sum[0] as f64 / 1e9),
        frames_per_s_wall: frames / (wall / 1e9),
        calls_per_core_step: implied(step_per),
        calls_per_core_total: implied(total_per),
    });
    r.window_s = wall / 1e9;
    r.valid = true;
    // No deadlines on the virtual clock: pass means the p99.9 tick fits the budget.
    r.pass =
        (r.tick.p999 as f64) < o.headroom * TICK_NS as f64 && (!o.strict || r.drops.total() == 0);
    r.rss_after = rss_bytes();
    drop(tr);
    b.engine.stop().map_err(|e| format!("stopping: {e}"))?;
    Ok(r)
}

// ---------------------------------------------------------------------------------------
// Bare baseline
// ---------------------------------------------------------------------------------------

/// Nanoseconds of codec work for one call (both directions) per 20 ms, and what was timed.
fn baseline(sc: &Scenario) -> Result<(f64, String), String> {
    let [sa, sb] = sc.legs;
    let (ca, cb) = (sa.codec, sb.codec);
    let la = leg_audio(sc, sa)?;
    let lb = leg_audio(sc, sb)?;
    let samples = sc.frame_samples(ca);
    let (na, nb) = (samples, sc.frame_samples(cb));
    // Decoded frames may differ in length between the legs (G.722 16 kHz, Opus 48 kHz): the
    // codec calls alone take each encoder's own frame length (no resampling is timed here;
    // the pipeline does resample, so the ratio includes it).
    let mut pcm = vec![0i16; na.max(nb)];
    let mut out_a = vec![0u8; MAX_PAYLOAD];
    let mut out_b = vec![0u8; MAX_PAYLOAD];
    let mut anyd = [
        AnyDecoder::with_rate(ca, sc.rate(ca)),
        AnyDecoder::with_rate(cb, sc.rate(cb)),
    ];
    let mut anye = [
        AnyEncoder::with_settings(ca, sc.opus()),
        AnyEncoder::with_settings(cb, sc.opus()),
    ];
    let g = (g711_fns(ca), g711_fns(cb));
    let dsp = (sc.dsp)();
    let relay = ca == cb && dsp.is_passthrough();
    // With voice processing, the same components run bare on each leg's decoded audio.
    let mut chains = [
        DspChain::new(&dsp, sc.rate(ca).hz(), sc.rate(ca).samples_in(Ptime::MS_20))
            .map_err(|e| e.to_string())?,
        DspChain::new(&dsp, sc.rate(cb).hz(), sc.rate(cb).samples_in(Ptime::MS_20))
            .map_err(|e| e.to_string())?,
    ];
    let with_dsp = !dsp.is_passthrough();
    // The chains borrow one set of work buffers, as on a lane.
    let mut work = DspScratch::new();
    let what;
    // One call, both directions, frame i of the same tone the generator sends.
    let mut one = |i: usize| {
        let pa = std::hint::black_box(&la.frames[i % TONE_FRAMES][..]);
        let pb = std::hint::black_box(&lb.frames[i % TONE_FRAMES][..]);
        if relay {
            out_b[..pa.len()].copy_from_slice(pa);
            out_a[..pb.len()].copy_from_slice(pb);
        } else if let (Some(fa), Some(fb)) = g {
            (fa.dec)(pa, &mut pcm[..na]);
            if with_dsp {
                chains[1].push_reference(&pcm[..na]);
                chains[0].process(&mut pcm[..na], &mut work, &mut |_| {});
            }
            (fb.enc)(&pcm[..nb], &mut out_b);
            (fb.dec)(pb, &mut pcm[..nb]);
            if with_dsp {
                chains[0].push_reference(&pcm[..nb]);
                chains[1].process(&mut pcm[..nb], &mut work, &mut |_| {});
            }
            (fa.enc)(&pcm[..na], &mut out_a);
        } else {
            let _ = anyd[0].decode(pa, &mut pcm);
            let _ = anye[1].encode(&pcm[..nb], &mut out_b);
            let _ = anyd[1].decode(pb, &mut pcm);
            let _ = anye[0].encode(&pcm[..na], &mut out_a);
        }
        std::hint::black_box((&out_a, &out_b));
    };
    if relay {
        what = format!("a {}-byte copy each way (relay)", la.frames[0].len());
    } else if g.0.is_some() && g.1.is_some() {
        what = format!(
            "{ca:?} decode + {cb:?} encode + {cb:?} decode + {ca:?} encode of {samples}-sample frames (g711 frame functions){}",
            if with_dsp { ", each leg's DSP chain run bare in between" } else { "" }
        );
    } else {
        what = format!("{ca:?}/{cb:?} decode + encode both directions (AnyDecoder/AnyEncoder)");
    }
    // Calibrate to ~50 ms per round; keep the best of 7 rounds, timed in thread CPU time
    // so that preemption on a busy machine does not count (noise only adds time).
    let mut n = 1000usize;
    loop {
        let t = Instant::now();
        for i in 0..n {
            one(i);
        }
        if t.elapsed() >= Duration::from_millis(20) || n >= 1 << 30 {
            break;
        }
        n *= 2;
    }
    let n = n * 5 / 2;
    let mut best = f64::MAX;
    for _ in 0..7 {
        let c = thread_cpu_ns();
        for i in 0..n {
            one(i);
        }
        best = best.min((thread_cpu_ns() - c) as f64 / n as f64);
    }
    Ok((best, what))
}

// ---------------------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------------------

/// Human-readable lines: stdout, or stderr when `--json` owns stdout. A live progress line
/// is redrawn in place when that stream is a terminal.
struct Out {
    to_stderr: bool,
    live: bool,
    progress_shown: bool,
}

impl Out {
    fn new(json: bool) -> Self {
        let live = if json {
            std::io::stderr().is_terminal()
        } else {
            std::io::stdout().is_terminal()
        };
        Out {
            to_stderr: json,
            live,
            progress_shown: false,
        }
    }

    fn write(&mut self, s: &str) {
        if self.to_stderr {
            let mut e = std::io::stderr().lock();
            let _ = e.write_all(s.as_bytes());
            let _ = e.flush();
        } else {
            let mut o = std::io::stdout().lock();
            let _ = o.write_all(s.as_bytes());
            let _ = o.flush();
        }
    }

    fn line(&mut self, s: &str) {
        if self.progress_shown {
            self.write("\r\x1b[2K");
            self.progress_shown = false;
        }
        self.write(&format!("{s}\n"));
    }

    fn progress(&mut self, s: &str) {
        if self.live {
            self.write(&format!("\r\x1b[2K{s}"));
            self.progress_shown = true;
        }
    }
}

fn ms(ns: u64) -> String {
    format!("{:.3} ms", ns as f64 / 1e6)
}

/// Confirmation runs before giving up (each 5% fewer calls than the last).
const CONFIRM_TRIES: usize = 6;

fn step_line(o: &Opts, r: &StepResult) -> String {
    let verdict = if !r.valid {
        "INVALID (generator fell behind)"
    } else if r.pass && r.drops.total() > 0 {
        "pass, but the engine dropped (see --strict)"
    } else if r.pass {
        "pass"
    } else {
        "FAIL"
    };
    let mut s = format!(
        "{:>7} calls: {verdict:<4}  tick p50 {} p99 {} p99.9 {} max {} ({} ticks)",
        r.calls,
        ms(r.tick.p50),
        ms(r.tick.p99),
        ms(r.tick.p999),
        ms(r.tick.max),
        r.tick.count
    );
    if o.mode == Mode::Paced {
        let _ = write!(
            s,
            " | overruns {} | drops {} | generator late p99.9 {} max {}, busy {:.0}%",
            r.lane.deadline_overruns,
            r.drops.total(),
            ms(r.gen_late_p999_ns),
            ms(r.gen_late_max_ns),
            r.gen_busy * 100.0
        );
        if let Some(sl) = &r.slices {
            let _ = write!(
                s,
                " | 0.5 s slices: p50 {} typical, {} at worst ({:.1} s), {} of {} above 1.25x",
                ms(sl.median_p50),
                ms(sl.worst_p50),
                sl.worst_at_s,
                sl.slow,
                sl.count
            );
        }
    } else if let Some(v) = r.virt {
        let _ = write!(
            s,
            " | lane {:.3} ms per 20 ms (with push/pop {:.3}) -> {:.0} calls/core | drops {}",
            v.step_ns_per_20ms / 1e6,
            v.total_ns_per_20ms / 1e6,
            v.calls_per_core_step,
            r.drops.total()
        );
    }
    if let Some(l) = r.added_latency {
        let _ = write!(s, " | added latency p50 {:.1} ms", l.p50_ms);
    }
    if r.drops.total() > 0 {
        let d: Vec<String> = r
            .drops
            .fields()
            .iter()
            .filter(|(_, v)| *v > 0)
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let _ = write!(s, "\n           drops: {}", d.join(", "));
    }
    if r.lane.ticks_skipped > 0 {
        let _ = write!(s, "\n           ticks skipped: {}", r.lane.ticks_skipped);
    }
    s
}

fn json_str(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn json_f(v: f64) -> String {
    if !v.is_finite() {
        "null".into()
    } else if v.abs() >= 1000.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.6}")
    }
}

// ---------------------------------------------------------------------------------------
// Plot
// ---------------------------------------------------------------------------------------

/// Registers a system TrueType font for chart text, if one is found (`SPC_PLOT_FONT`
/// names one explicitly; `SPC_PLOT_FONT=none` forces a chart without text).
fn load_font() -> bool {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Ok(p) = std::env::var("SPC_PLOT_FONT") {
        if p == "none" {
            return false;
        }
        candidates.push(p.into());
    }
    for p in [
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/TTF/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
        "/usr/share/fonts/liberation/LiberationSans-Regular.ttf",
        "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
        "/System/Library/Fonts/Supplemental/Arial.ttf",
        "C:\\Windows\\Fonts\\arial.ttf",
    ] {
        candidates.push(p.into());
    }
    for p in candidates {
        if let Ok(bytes) = std::fs::read(&p) {
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font(
                "sans-serif",
                plotters::style::FontStyle::Normal,
                bytes,
            )
            .is_ok()
            {
                return true;
            }
        }
    }
    false
}

/// Tick time p50/p99/p99.9 (ms) against call count, one point per step (filled: pass;
/// hollow: fail or invalid), the pass limit as a black line. Returns whether it has text.
fn plot(path: &Path, title: &str, steps: &[StepResult], limit_ns: f64) -> Result<bool, String> {
    use plotters::prelude::*;
    let e = |x: &dyn std::fmt::Display| format!("plot: {x}");
    let text = load_font();
    let mut pts: Vec<&StepResult> = steps.iter().collect();
    pts.sort_by_key(|r| r.calls);
    let xmax = pts.iter().map(|r| r.calls).max().unwrap_or(1) as f64 * 1.08;
    let ymax = pts
        .iter()
        .map(|r| r.tick.p999 as f64)
        .fold(limit_ns, f64::max)
        / 1e6
        * 1.15;
    let root = BitMapBackend::new(path, (1100, 650)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let mut cb = ChartBuilder::on(&root);
    cb.margin(25);
    if text {
        cb.caption(title, ("sans-serif", 22))
            .x_label_area_size(50)
            .y_label_area_size(80);
    }
    let mut chart = cb
        .build_cartesian_2d(0f64..xmax, 0f64..ymax)
        .map_err(|x| e(&x))?;
    if text {
        chart
            .configure_mesh()
            .x_desc("calls (2 engine sessions each)")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.1}"))
            .y_desc("tick processing time, ms")
            .label_style(("sans-serif", 15))
            .draw()
            .map_err(|x| e(&x))?;
    } else {
        chart
            .configure_mesh()
            .x_labels(10)
            .y_labels(10)
            .draw()
            .map_err(|x| e(&x))?;
    }
    type Series = (&'static str, RGBColor, fn(&StepResult) -> u64);
    let series: [Series; 3] = [
        ("p50", RGBColor(30, 100, 200), |r| r.tick.p50),
        ("p99", RGBColor(230, 140, 20), |r| r.tick.p99),
        ("p99.9", RGBColor(200, 30, 30), |r| r.tick.p999),
    ];
    for (name, color, f) in series {
        let line: Vec<(f64, f64)> = pts
            .iter()
            .map(|r| (r.calls as f64, f(r) as f64 / 1e6))
            .collect();
        let s = chart
            .draw_series(LineSeries::new(line, color.stroke_width(2)))
            .map_err(|x| e(&x))?;
        if text {
            s.label(name).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        }
        chart
            .draw_series(pts.iter().map(|r| {
                let style = if r.pass {
                    color.filled()
                } else {
                    color.stroke_width(2)
                };
                Circle::new((r.calls as f64, f(r) as f64 / 1e6), 5, style)
            }))
            .map_err(|x| e(&x))?;
    }
    let s = chart
        .draw_series(LineSeries::new(
            vec![(0.0, limit_ns / 1e6), (xmax, limit_ns / 1e6)],
            BLACK.stroke_width(1),
        ))
        .map_err(|x| e(&x))?;
    if text {
        s.label("pass limit (p99.9)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 15))
            .draw()
            .map_err(|x| e(&x))?;
    }
    root.present().map_err(|x| e(&x))?;
    Ok(text)
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

// ---------------------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------------------

fn topo_name(t: Topology) -> &'static str {
    match t {
        Topology::Fused => "fused",
        Topology::Split => "split",
    }
}

fn main() {
    match run() {
        Ok(()) => {}
        Err(e) => {
            eprintln!("sessions_per_core: {e}");
            std::process::exit(2);
        }
    }
}

fn run() -> Result<(), String> {
    let o = parse_args()?;
    let plan = plan_cores(&o)?;
    let mut out = Out::new(o.json);
    match o.simd {
        "avx2" => media_core::processing::simd::limit_to_avx2(true),
        "portable" => media_core::processing::simd::force_portable(true),
        _ => {}
    }
    if o.simd != "widest" {
        out.line(&format!(
            "  --simd {}: voice-processing kernels at most {}",
            o.simd, o.simd
        ));
    }
    let sc = o.scenario;
    let mode = match o.mode {
        Mode::Paced => "paced",
        Mode::Virtual => "virtual",
    };
    let budget_ns = TICK_NS as f64;
    let limit_ns = o.headroom * budget_ns;

    out.line(&format!(
        "sessions_per_core: scenario {} ({}){}, mode {mode}, topology {}, {} lane(s)",
        sc.name,
        sc.about,
        if o.half_plain {
            "; every other call without voice processing (--half-plain)"
        } else {
            ""
        },
        topo_name(o.topology),
        o.lanes
    ));
    match o.mode {
        Mode::Paced => {
            out.line(&format!(
                "  lane threads: {} per lane on cores {:?} -> {} core(s) used by lanes; generator on {}",
                plan.threads_per_lane,
                plan.lane_cores,
                plan.used.len(),
                plan.gen_core
                    .map(|c| if plan.used.contains(&c) {
                        format!("core {c} (shared with lane threads: results are suspect)")
                    } else {
                        format!("core {c}")
                    })
                    .unwrap_or_else(|| "no free core (unpinned; results are suspect)".into())
            ));
            out.line(&format!(
                "  budget: lanes tick every 10 ms and each tick processes the 20 ms sessions whose phase is due, so the budget per tick is 10 ms; pass = 0 deadline overruns, p99.9 tick < {} x 10 ms = {}, generator kept up (no 1 ms slot started > {} late){}",
                o.headroom,
                ms(limit_ns as u64),
                ms(GEN_LATE_LIMIT_NS),
                if o.strict { ", no engine drops (--strict)" } else { "" }
            ));
            out.line(if o.fifo {
                "  scheduling: lanes and generator under SCHED_FIFO at the top priority (--fifo)"
            } else {
                "  scheduling: SCHED_OTHER, lanes and generator at nice -20 (with autogroup scheduling nice only ranks threads within this session: on a shared machine use --fifo)"
            });
            if o.topology == Topology::Split {
                out.line("  split: the tick time is the jitter stage's (the thread that keeps the tick); decode/DSP/encode threads poll their rings");
            }
        }
        Mode::Virtual => out.line(&format!(
            "  virtual clock on one thread (pinned to core {}), as fast as possible: {}",
            plan.used.first().map_or("none".into(), |c| c.to_string()),
            if o.step2 {
                "push 20 ms of traffic, engine.step(2), pop all (--step2)"
            } else {
                "per 10 ms tick, push the traffic released in it, engine.step(1), pop all; two ticks per 20 ms"
            }
        )),
    }
    out.line(&format!(
        "  traffic: 2 streams per call, 1 packet per 20 ms each, jitter 0..={} ms, loss {}%, seed {}; window {} s after {} s warm-up",
        o.jitter_ms,
        o.loss * 100.0,
        o.seed,
        o.seconds,
        o.warmup
    ));

    let (base_ns, base_what) = baseline(sc)?;
    let baseline_calls = PTIME_NS as f64 / base_ns;
    out.line(&format!(
        "  bare baseline: {base_what}: {:.1} ns (thread CPU time) per call per 20 ms -> {:.0} calls per core",
        base_ns, baseline_calls
    ));

    let mut steps: Vec<StepResult> = Vec::new();
    let mut reached_max = false;
    let mut generator_limited = false;
    match o.mode {
        Mode::Virtual => {
            let r = run_virtual_step(&o, &plan, o.start, &mut out)?;
            out.line(&step_line(&o, &r));
            steps.push(r);
        }
        Mode::Paced => {
            let mut last_pass: Option<usize> = None;
            let mut first_fail: Option<usize> = None;
            let mut n = o.start;
            let mut retried = false;
            loop {
                let r = run_paced_step(&o, &plan, n, &mut out)?;
                out.line(&step_line(&o, &r));
                for ev in &r.lane_events {
                    out.line(&format!("    lane event: {ev}"));
                }
                if r.gen_pinned == Some(false) {
                    out.line("    generator: could not pin to its core");
                }
                let (pass, valid) = (r.pass, r.valid);
                steps.push(r);
                if !valid && !retried {
                    // One retry: a noisy neighbour can delay a slot once.
                    out.line(if o.fifo {
                        "    generator fell behind; retrying this count once"
                    } else {
                        "    generator fell behind; retrying this count once (on a shared machine, --fifo keeps other processes from delaying it)"
                    });
                    retried = true;
                    continue;
                }
                retried = false;
                if !valid {
                    generator_limited = true;
                }
                if pass {
                    last_pass = last_pass.max(Some(n));
                } else {
                    first_fail = Some(first_fail.map_or(n, |f| f.min(n)));
                }
                n = match (last_pass, first_fail) {
                    (_, None) => {
                        if n >= o.max {
                            reached_max = true;
                            break;
                        }
                        (n * 2).min(o.max)
                    }
                    (None, Some(f)) => {
                        if f <= 1 {
                            break;
                        }
                        f / 2
                    }
                    (Some(p), Some(f)) => {
                        if (f - p) as f64 <= 0.05 * p as f64 || f - p <= 1 {
                            break;
                        }
                        (p + f) / 2
                    }
                };
            }
            // The goal is stated for a long window (60 s): short ramp windows see fewer
            // rare slow ticks, so the ramp's count is confirmed over the long one.
            if let (true, Some(mut n)) = (o.confirm > 0.0, last_pass) {
                let mut oc = o.clone();
                oc.seconds = o.confirm;
                let mut retried = false;
                for _ in 0..CONFIRM_TRIES {
                    out.line(&format!("  confirming {n} calls over {} s", o.confirm));
                    let mut r = run_paced_step(&oc, &plan, n, &mut out)?;
                    r.confirm = true;
                    out.line(&step_line(&oc, &r));
                    let (pass, valid) = (r.pass, r.valid);
                    steps.push(r);
                    if !valid {
                        // The generator's fault, not the lane's: the same count once more,
                        // then stop (reported as a generator limit).
                        if retried {
                            generator_limited = true;
                            break;
                        }
                        retried = true;
                        continue;
                    }
                    if pass || n <= 1 {
                        break;
                    }
                    n = n * 95 / 100;
                }
            }
        }
    }

    // The reported step: the largest passing count (virtual: the one run), of the
    // confirmation runs when any of them was valid (a generator that fell behind in all
    // of them leaves the ramp's count, reported with the generator limit).
    let confirming = steps.iter().any(|r| r.confirm && r.valid);
    let best = steps
        .iter()
        .filter(|r| r.pass && r.confirm == confirming)
        .max_by_key(|r| r.calls)
        .or_else(|| (o.mode == Mode::Virtual).then(|| &steps[0]));
    let cores_used = match o.mode {
        Mode::Paced => plan.used.len(),
        Mode::Virtual => 1,
    };
    let calls = best.map_or(0, |r| r.calls);
    let spc = match (o.mode, best) {
        (Mode::Virtual, Some(r)) => r.virt.map_or(0.0, |v| v.calls_per_core_step),
        _ => calls as f64 / cores_used as f64,
    };
    let ratio = spc / baseline_calls;
    let hot = session_state_bytes();

    let plot_path = target_dir().join(format!(
        "sessions_per_core-{}-{}.png",
        sc.name,
        topo_name(o.topology)
    ));
    let title = format!(
        "media-core {} {} {} ({} lane(s), {} core(s)): lane tick time per step",
        sc.name,
        mode,
        topo_name(o.topology),
        o.lanes,
        cores_used
    );
    let _ = std::fs::create_dir_all(target_dir());
    let plotted = plot(&plot_path, &title, &steps, limit_ns);

    // Summary.
    out.line("");
    out.line(&format!(
        "== result: {} / {mode} / {} / {} lane(s) / {} core(s) for lanes",
        sc.name,
        topo_name(o.topology),
        o.lanes,
        cores_used
    ));
    match (o.mode, best) {
        (Mode::Paced, Some(r)) => out.line(&format!(
            "sessions per core: {spc:.0}  (largest passing count {} calls = {} engine sessions on {} core(s), {} s window{}{})",
            r.calls,
            2 * r.calls,
            cores_used,
            r.window_s.round(),
            if r.confirm { ", confirmed after the ramp" } else { "" },
            if reached_max && r.calls >= o.max { ", reached --max" } else { "" }
        )),
        (Mode::Paced, None) if confirming => out.line(&format!(
            "sessions per core: 0  (the ramp passed {} calls in {} s windows, but no count passed over {} s)",
            steps.iter().filter(|r| r.pass && !r.confirm).map(|r| r.calls).max().unwrap_or(0),
            o.seconds,
            o.confirm
        )),
        (Mode::Paced, None) => out.line(&format!(
            "sessions per core: 0  (no count passed; smallest tried {})",
            steps.iter().map(|r| r.calls).min().unwrap_or(0)
        )),
        (Mode::Virtual, Some(r)) => {
            let v = r.virt.unwrap_or_default();
            out.line(&format!(
                "implied sessions per core: {:.0} (lane time inside step) / {:.0} (including push+pop)  = {} calls x 20 ms / {:.3} ms (/ {:.3} ms) per 20 ms",
                v.calls_per_core_step,
                v.calls_per_core_total,
                r.calls,
                v.step_ns_per_20ms / 1e6,
                v.total_ns_per_20ms / 1e6
            ));
            out.line(&format!(
                "  from thread CPU time: {:.0} / {:.0}  ({:.3} ms / {:.3} ms of CPU per 20 ms)",
                v.calls_per_core_step_cpu,
                v.calls_per_core_total_cpu,
                v.step_cpu_ns_per_20ms / 1e6,
                v.total_cpu_ns_per_20ms / 1e6
            ));
            let on_cpu = v.step_cpu_ns_per_20ms / v.step_ns_per_20ms;
            if on_cpu < 0.9 {
                out.line(&format!(
                    "  NOTE: the thread had the CPU for only {:.0}% of the time inside step: this machine is busy, the wall-time figures include preemption; the CPU-time figures are the better estimate",
                    on_cpu * 100.0
                ));
            }
            out.line(&format!(
                "frames processed: {:.0} /s of lane time, {:.0} /s of wall time ({} x 20 ms in {:.2} s; a frame = one packet out)",
                v.frames_per_s_lane, v.frames_per_s_wall, v.iterations, r.window_s
            ));
        }
        (Mode::Virtual, None) => {}
    }
    if generator_limited {
        let lim = steps
            .iter()
            .filter(|r| !r.valid)
            .map(|r| r.calls)
            .min()
            .unwrap_or(0);
        out.line(&format!(
            "NOTE: the generator could not keep up at {lim} calls (twice in a row), so that count bounded the search: the result is the largest count at which both the lane and the generator kept up, a lower bound for the lane{}",
            if o.fifo { "" } else { " (try --fifo)" }
        ));
    }
    if let Some(r) = best {
        out.line(&format!(
            "tick processing time (lane {} of {}, {:.1} s window, {} ticks): p50 {}  p99 {}  p99.9 {}  max {}  (budget 10 ms per tick; limit p99.9 < {})",
            r.tick.lane,
            o.lanes,
            r.window_s,
            r.tick.count,
            ms(r.tick.p50),
            ms(r.tick.p99),
            ms(r.tick.p999),
            ms(r.tick.max),
            ms(limit_ns as u64)
        ));
        if o.mode == Mode::Paced {
            out.line(&format!(
                "deadline overruns: {}  ticks skipped: {}",
                r.lane.deadline_overruns, r.lane.ticks_skipped
            ));
        }
        let d: Vec<String> = r
            .drops
            .fields()
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        out.line(&format!("drops: {}  ({})", r.drops.total(), d.join(", ")));
        if r.pass && r.drops.total() > 0 {
            out.line("WARNING: the reported step passed the deadline criteria but the engine dropped packets or frames in its window");
        }
        out.line(&format!(
            "traffic in window: {} packets pushed, {} lost on purpose, {} refused at push, {} popped; engine: {} packets in ({} reordered, {} late, {} duplicates), {} frames decoded + {} relayed, {} with concealment, {} samples accelerated / {} expanded, {} frame periods with nothing to play, {} packets out",
            r.gen_sent,
            r.gen_lost,
            r.gen_push_errors,
            r.gen_popped,
            r.sess.rx_packets,
            r.sess.rx_reordered,
            r.sess.rx_late,
            r.sess.rx_duplicates + r.sess.jb_duplicates,
            r.sess.frames_decoded,
            r.sess.frames_relayed,
            r.sess.frames_concealed,
            r.sess.samples_accelerated,
            r.sess.samples_expanded,
            r.sess.frames_missing,
            r.sess.tx_packets,
        ));
        out.line(&format!(
            "jitter buffer at the end of the window, across sessions (p50 / p95 / max): target {} / {} / {} ms, level {} / {} / {} ms",
            r.jb_target[0], r.jb_target[1], r.jb_target[2], r.jb_level[0], r.jb_level[1], r.jb_level[2]
        ));
        out.line(&format!(
            "memory: RSS {:.1} MiB before the engine, +{:.1} MiB after building it and creating the calls (+{:.1} MiB after the window) -> {:.0} bytes per engine session slot ({} slots), {:.0} bytes per call (after the window {:.0})",
            r.rss_before as f64 / 1048576.0,
            r.rss_built.saturating_sub(r.rss_before) as f64 / 1048576.0,
            r.rss_after.saturating_sub(r.rss_before) as f64 / 1048576.0,
            r.rss_per_session(),
            r.capacity,
            r.rss_per_call(),
            r.rss_per_call_after()
        ));
        out.line(&format!(
            "hot state per engine session: {hot} bytes (per call: {} bytes)",
            2 * hot
        ));
        out.line(&match r.huge_pages {
            Some(h) => format!(
                "pages: use_huge_pages(true) after creating the calls: {:.1} MiB marked, {:.1} MiB collapsed, {} sparse 2 MiB page(s) left, {} refused; {:.1} MiB of anonymous memory in huge pages",
                h.advised_bytes as f64 / 1048576.0,
                h.collapsed_bytes as f64 / 1048576.0,
                h.sparse_pages,
                h.refused_pages,
                h.anon_huge_bytes as f64 / 1048576.0
            ),
            None => "pages: --no-huge-pages (memory on the pages the allocator gave it)".to_string(),
        });
        let goal = |l: &Latency| match (l.p99_ms <= 20.0, l.max_ms <= 20.0) {
            (true, true) => "met (p99 and max)",
            (true, false) => "met at p99, not at max",
            _ => "NOT met",
        };
        let clock = if o.mode == Mode::Virtual {
            " [virtual clock]"
        } else {
            ""
        };
        let show = |name: &str, l: &Latency, with_goal: bool| {
            format!(
                "{name}{clock}: p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms  (min {:.2} ms){}",
                l.p50_ms,
                l.p99_ms,
                l.max_ms,
                l.min_ms,
                if with_goal {
                    format!("; goal <= 20 ms: {}", goal(l))
                } else {
                    String::new()
                }
            )
        };
        match (r.total_latency, r.added_latency, r.added_nominal) {
            (Some(t), Some(a), Some(n)) => {
                out.line(&format!(
                    "engine latency, {} packets matched by source_timestamp ({} not matched: concealed or lost):",
                    r.matched, r.unmatched
                ));
                out.line(&show("  through the engine = pop - push", &t, false));
                out.line(&show(
                    "  added = pop - push - the session's jitter buffer target",
                    &a,
                    true,
                ));
                out.line(&format!(
                    "    (a packet that arrived earlier than the jitter the target covers waits that much longer, so this spreads by up to -{} ms)",
                    o.jitter_ms
                ));
                out.line(&show(
                    "  added vs unjittered arrival = pop - nominal send time - target",
                    &n,
                    true,
                ));
                match (r.after_jb, r.jb_delay, r.jb_over_target) {
                    (Some(a), Some(d), Some(t)) => {
                        out.line(&show(
                            "  after the jitter buffer = pop - the tick that played the frame",
                            &a,
                            true,
                        ));
                        out.line(&show(
                            "  the jitter buffer's own delay = that tick - push",
                            &d,
                            false,
                        ));
                        out.line(&show("    of which beyond its target", &t, false));
                    }
                    _ if o.mode == Mode::Virtual => out.line(
                        "  after the jitter buffer: paced mode only (here each step's frames are popped right after it)",
                    ),
                    _ => out.line("  after the jitter buffer: no frame carried a playout time"),
                }
                if r.tag_checked > 0 {
                    out.line(&format!(
                        "  cross-check: the frame number in the payload agreed with source_timestamp on {} of {} frames",
                        r.tag_checked - r.tag_mismatch,
                        r.tag_checked
                    ));
                }
            }
            _ => out.line("engine latency: no packet matched"),
        }
        if o.mode == Mode::Paced {
            out.line(&format!(
                "generator: late p99.9 {} max {}, slots late > {}: {}, busy {:.0}% of its core, priority raised: {}",
                ms(r.gen_late_p999_ns),
                ms(r.gen_late_max_ns),
                ms(GEN_LATE_LIMIT_NS),
                r.gen_late_slots,
                r.gen_busy * 100.0,
                r.gen_priority
            ));
            out.line(&format!(
                "setup: creating {} calls took {:.2} s ({} command-ring batches)",
                r.calls, r.create_s, r.create_flushes
            ));
        }
    }
    out.line(&format!(
        "baseline: {baseline_calls:.0} calls per core ({base_ns:.1} ns per call per 20 ms: {base_what})"
    ));
    out.line(&format!(
        "ratio = pipeline_sessions / baseline_sessions = {spc:.0} / {baseline_calls:.0} = {ratio:.4}"
    ));
    match &plotted {
        Ok(true) => out.line(&format!("plot: {}", plot_path.display())),
        Ok(false) => out.line(&format!(
            "plot: {} (no font found: no text; blue p50, orange p99, red p99.9, black = pass limit; x = calls, y = ms)",
            plot_path.display()
        )),
        Err(e) => out.line(&format!("plot failed: {e}")),
    }

    if o.json {
        println!(
            "{}",
            json(
                &o,
                &plan,
                cores_used,
                spc,
                best,
                &steps,
                baseline_calls,
                ratio,
                hot,
                plotted.is_ok().then_some(&plot_path),
                generator_limited
            )
        );
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn json(
    o: &Opts,
    plan: &CorePlan,
    cores_used: usize,
    spc: f64,
    best: Option<&StepResult>,
    steps: &[StepResult],
    baseline_calls: f64,
    ratio: f64,
    hot: usize,
    plot: Option<&PathBuf>,
    generator_limited: bool,
) -> String {
    let mut j = String::from("{");
    let _ = write!(j, "\"scenario\":{}", json_str(o.scenario.name));
    let _ = write!(
        j,
        ",\"mode\":{}",
        json_str(match o.mode {
            Mode::Paced => "paced",
            Mode::Virtual => "virtual",
        })
    );
    let _ = write!(j, ",\"topology\":{}", json_str(topo_name(o.topology)));
    let _ = write!(j, ",\"lanes\":{}", o.lanes);
    let cores: Vec<String> = match o.mode {
        Mode::Paced => plan.used.iter().map(|c| c.to_string()).collect(),
        Mode::Virtual => plan
            .used
            .first()
            .map(|c| c.to_string())
            .into_iter()
            .collect(),
    };
    let _ = write!(j, ",\"cores\":[{}]", cores.join(","));
    let _ = write!(j, ",\"cores_used\":{cores_used}");
    let _ = write!(
        j,
        ",\"generator_core\":{}",
        match (o.mode, plan.gen_core) {
            (Mode::Paced, Some(c)) => c.to_string(),
            _ => "null".into(),
        }
    );
    let _ = write!(j, ",\"sessions_per_core\":{}", json_f(spc));
    let _ = write!(j, ",\"calls\":{}", best.map_or(0, |r| r.calls));
    let _ = write!(
        j,
        ",\"window_s\":{},\"confirmed\":{}",
        json_f(best.map_or(0.0, |r| r.window_s)),
        best.is_some_and(|r| r.confirm)
    );
    let _ = write!(j, ",\"headroom\":{}", json_f(o.headroom));
    let _ = write!(j, ",\"strict\":{}", o.strict);
    let _ = write!(j, ",\"fifo\":{}", o.fifo);
    let _ = write!(j, ",\"half_plain\":{}", o.half_plain);
    let _ = write!(j, ",\"simd\":\"{}\"", o.simd);
    let _ = write!(j, ",\"tick_budget_ns\":{TICK_NS}");
    let t = best.map(|r| r.tick).unwrap_or_default();
    let _ = write!(
        j,
        ",\"tick_ns\":{{\"p50\":{},\"p99\":{},\"p999\":{},\"max\":{}}}",
        t.p50, t.p99, t.p999, t.max
    );
    if let Some(sl) = best.and_then(|r| r.slices.as_ref()) {
        let _ = write!(
            j,
            ",\"tick_slices\":{{\"slice_s\":0.5,\"median_p50_ns\":{},\"worst_p50_ns\":{},\"worst_at_s\":{},\"slow\":{},\"count\":{}}}",
            sl.median_p50,
            sl.worst_p50,
            json_f(sl.worst_at_s),
            sl.slow,
            sl.count
        );
    }
    let _ = write!(
        j,
        ",\"deadline_overruns\":{}",
        best.map_or(0, |r| r.lane.deadline_overruns)
    );
    let drops = best.map(|r| r.drops).unwrap_or_default();
    let _ = write!(j, ",\"drops\":{}", drops.total());
    let dd: Vec<String> = drops
        .fields()
        .iter()
        .map(|(k, v)| format!("{}:{v}", json_str(k)))
        .collect();
    let _ = write!(j, ",\"drops_detail\":{{{}}}", dd.join(","));
    match best {
        Some(r) => {
            let _ = write!(
                j,
                ",\"rss_bytes_per_session\":{{\"per_engine_session_slot\":{},\"per_call\":{},\"per_call_after_window\":{},\"engine_session_slots\":{}}}",
                json_f(r.rss_per_session()),
                json_f(r.rss_per_call()),
                json_f(r.rss_per_call_after()),
                r.capacity
            );
        }
        None => j.push_str(",\"rss_bytes_per_session\":null"),
    }
    let _ = write!(j, ",\"hot_state_bytes\":{hot}");
    match best.and_then(|r| r.huge_pages) {
        Some(h) => {
            let _ = write!(
                j,
                ",\"huge_pages\":{{\"advised_bytes\":{},\"collapsed_bytes\":{},\"sparse_pages\":{},\"refused_pages\":{},\"anon_huge_bytes\":{}}}",
                h.advised_bytes, h.collapsed_bytes, h.sparse_pages, h.refused_pages, h.anon_huge_bytes
            );
        }
        None => j.push_str(",\"huge_pages\":null"),
    }
    let lat = |j: &mut String, name: &str, l: Option<Latency>| match l {
        Some(l) => {
            let _ = write!(
                j,
                ",{}:{{\"p50\":{},\"p99\":{},\"max\":{},\"min\":{},\"samples\":{}}}",
                json_str(name),
                json_f(l.p50_ms),
                json_f(l.p99_ms),
                json_f(l.max_ms),
                json_f(l.min_ms),
                l.samples
            );
        }
        None => {
            let _ = write!(j, ",{}:null", json_str(name));
        }
    };
    lat(
        &mut j,
        "added_latency_ms",
        best.and_then(|r| r.added_latency),
    );
    lat(
        &mut j,
        "added_latency_vs_nominal_ms",
        best.and_then(|r| r.added_nominal),
    );
    lat(
        &mut j,
        "engine_latency_ms",
        best.and_then(|r| r.total_latency),
    );
    lat(
        &mut j,
        "latency_after_jitter_buffer_ms",
        best.and_then(|r| r.after_jb),
    );
    lat(
        &mut j,
        "jitter_buffer_delay_ms",
        best.and_then(|r| r.jb_delay),
    );
    lat(
        &mut j,
        "jitter_buffer_delay_beyond_target_ms",
        best.and_then(|r| r.jb_over_target),
    );
    if let Some(r) = best {
        let _ = write!(
            j,
            ",\"jitter_buffer_ms\":{{\"target\":[{},{},{}],\"level\":[{},{},{}]}}",
            r.jb_target[0],
            r.jb_target[1],
            r.jb_target[2],
            r.jb_level[0],
            r.jb_level[1],
            r.jb_level[2]
        );
    }
    let _ = write!(
        j,
        ",\"baseline_sessions_per_core\":{}",
        json_f(baseline_calls)
    );
    let _ = write!(j, ",\"ratio\":{}", json_f(ratio));
    let _ = write!(j, ",\"generator_limited\":{generator_limited}");
    if let Some(v) = best.and_then(|r| r.virt) {
        let _ = write!(
            j,
            ",\"virtual\":{{\"iterations\":{},\"step_ns_per_20ms\":{},\"total_ns_per_20ms\":{},\"step_cpu_ns_per_20ms\":{},\"total_cpu_ns_per_20ms\":{},\"sessions_per_core_step_cpu\":{},\"sessions_per_core_total_cpu\":{},\"frames_per_s_lane\":{},\"frames_per_s_wall\":{},\"sessions_per_core_step\":{},\"sessions_per_core_total\":{}}}",
            v.iterations,
            json_f(v.step_ns_per_20ms),
            json_f(v.total_ns_per_20ms),
            json_f(v.step_cpu_ns_per_20ms),
            json_f(v.total_cpu_ns_per_20ms),
            json_f(v.calls_per_core_step_cpu),
            json_f(v.calls_per_core_total_cpu),
            json_f(v.frames_per_s_lane),
            json_f(v.frames_per_s_wall),
            json_f(v.calls_per_core_step),
            json_f(v.calls_per_core_total)
        );
    }
    let st: Vec<String> = steps
        .iter()
        .map(|r| {
            format!(
                "{{\"calls\":{},\"confirm\":{},\"window_s\":{},\"pass\":{},\"valid\":{},\"p50_ns\":{},\"p99_ns\":{},\"p999_ns\":{},\"max_ns\":{},\"overruns\":{},\"drops\":{}}}",
                r.calls,
                r.confirm,
                json_f(r.window_s),
                r.pass,
                r.valid,
                r.tick.p50,
                r.tick.p99,
                r.tick.p999,
                r.tick.max,
                r.lane.deadline_overruns,
                r.drops.total()
            )
        })
        .collect();
    let _ = write!(j, ",\"steps\":[{}]", st.join(","));
    let _ = write!(
        j,
        ",\"plot\":{}",
        plot.map_or("null".into(), |p| json_str(&p.display().to_string()))
    );
    j.push('}');
    j
}
