//! The `jitter` fuzz target: the receive path of one session, driven by an adversarial
//! stream (sequence numbers, timestamps, SSRCs, arrival times, durations, markers) the way
//! the lane drives it: RFC 3550 sequence tracking drops duplicates and an SSRC change
//! resets the stream, then packets go into the [`ReceiveChannel`] and frames come out of
//! it once per ptime (decoded, or relayed undecoded). A second mode drives a small
//! [`AdaptiveBuffer`] directly (capacity 8, so overflow is easy to reach).
//!
//! Packets are numbered items; the target checks that each one is played (decoded) at
//! most once, ends exactly once (handed back by `insert`, released, relayed, or still
//! held), that the decoder and concealment only ever see packets still held, and that
//! the buffer never holds more than its capacity.

#[path = "input.rs"]
mod input;

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

use input::Input;
use media_core::buffer::adaptive::{AdaptiveBuffer, Insert, JitterConfig, Next};
use media_core::codec::audio::g711::Law;
use media_core::processing::audio::plc::PcmPlc;
use media_core::quality::rtp_stats::{PacketClass, RtpReceiveStats};
use media_core::session::receive::{
    PacketDecoder, ReceiveChannel, ReceiveConfig, RelayStep, StretchPool, JITTER_PACKETS,
};

const MAX_OPS: usize = 4000;
/// (decoded sample rate, RTP clock rate) pairs the engine runs: G.711, G.722, Opus.
const RATES: [(u32, u32); 7] = [
    (8000, 8000),
    (16000, 8000),
    (48000, 48000),
    (24000, 48000),
    (16000, 48000),
    (12000, 48000),
    (8000, 48000),
];
const PTIMES_MS: [u32; 5] = [10, 20, 30, 40, 60];

/// Every packet's fate, checked as the buffer reports it.
#[derive(Default)]
struct Ledger {
    /// Inserted and not yet ended (must equal what the buffer holds between calls).
    live: HashSet<u32>,
    /// Handed to the decoder (at most once each).
    decoded: HashSet<u32>,
    inserted: u64,
    returned: u64,
    released: u64,
    relayed: u64,
}

impl Ledger {
    fn end(&mut self, id: u32, how: &str) {
        assert!(
            self.live.remove(&id),
            "packet {id} {how}, but it is not held (twice, or never inserted)"
        );
    }

    fn release(&mut self, id: u32) {
        self.end(id, "released");
        self.released += 1;
    }

    /// The identity: inserted = returned by insert + released + relayed + held.
    fn check(&self, held: usize) {
        assert!(held <= JITTER_PACKETS, "buffer holds {held} > capacity");
        assert_eq!(self.live.len(), held, "held packets match the ledger");
        assert_eq!(
            self.inserted,
            self.returned + self.released + self.relayed + held as u64,
            "every packet ends exactly once"
        );
    }
}

struct Decoder<'a> {
    ledger: &'a RefCell<Ledger>,
    /// Samples each packet decodes to (fewer than its duration = a corrupt payload).
    decodes_to: &'a HashMap<u32, usize>,
    codec_conceals: bool,
    /// Takes G.711 codes undecoded when a frame is to be relayed (as the lane does).
    feeds_codes: bool,
}

impl PacketDecoder<u32> for Decoder<'_> {
    fn decode(&mut self, item: &u32, out: &mut [i16]) -> usize {
        let mut l = self.ledger.borrow_mut();
        assert!(
            l.live.contains(item),
            "decoding packet {item}, which is not held"
        );
        assert!(l.decoded.insert(*item), "packet {item} played twice");
        let n = self
            .decodes_to
            .get(item)
            .copied()
            .unwrap_or(0)
            .min(out.len());
        for (k, s) in out[..n].iter_mut().enumerate() {
            // A loud, periodic signal so time-scale modification has something to do.
            *s = if (k / 20 + *item as usize).is_multiple_of(2) {
                9000
            } else {
                -9000
            };
        }
        n
    }

    fn feed_undecoded(&mut self, item: &u32, samples: usize, plc: &mut PcmPlc) -> bool {
        if !self.feeds_codes || self.decodes_to.get(item).copied() != Some(samples) {
            return false;
        }
        let codes: Vec<u8> = (0..samples)
            .map(|k| (k as u32 * 37 + *item) as u8)
            .collect();
        let law = if item.is_multiple_of(2) {
            Law::Ulaw
        } else {
            Law::Alaw
        };
        if !plc.good_coded_frame(&codes, law) {
            return false;
        }
        let mut l = self.ledger.borrow_mut();
        assert!(
            l.live.contains(item),
            "feeding packet {item}, which is not held"
        );
        assert!(l.decoded.insert(*item), "packet {item} played twice");
        true
    }

    fn conceal(&mut self, next: Option<&u32>, out: &mut [i16]) -> bool {
        if let Some(n) = next {
            assert!(
                self.ledger.borrow().live.contains(n),
                "concealment looked at packet {n}, which is not held"
            );
        }
        if self.codec_conceals {
            out.fill(100);
        }
        self.codec_conceals
    }
}

/// Runs one input. Panics (the finding) when an invariant breaks.
pub fn run(data: &[u8]) {
    let mut inp = Input::new(data);
    if inp.u8().is_multiple_of(4) {
        run_buffer(&mut inp);
    } else {
        run_channel(&mut inp);
    }
}

fn jitter_config(inp: &mut Input, clock_rate_hz: u32) -> JitterConfig {
    let (a, b) = (inp.below(200) as u32, inp.below(1000) as u32);
    JitterConfig {
        clock_rate_hz,
        // min <= max: `DelayManager::new` panics otherwise (a reported bug, pinned by
        // `tests/fuzz_regressions.rs`); ordered here so the target can go past it.
        min_delay_ms: a.min(b),
        max_delay_ms: a.max(b),
        initial_delay_ms: inp.below(500) as u32,
        quantile: inp.pick(&[0.5, 0.9, 0.97, 0.999]),
        forget_factor: inp.pick(&[0.9, 0.995, 0.9999]),
        max_conceal_ms: inp.pick(&[0, 20, 100, 300]),
    }
}

fn run_channel(inp: &mut Input) {
    let (rate, clock) = inp.pick(&RATES);
    let ptime_ms = inp.pick(&PTIMES_MS);
    let frame = (rate / 1000 * ptime_ms) as usize;
    let cfg = ReceiveConfig {
        jitter: jitter_config(inp, clock),
        frame_samples: frame,
        sample_rate_hz: rate,
        max_packet_samples: (rate / 1000 * 60) as usize,
    };
    let relay = inp.bool();
    let relay_preferred = inp.bool();
    let codec_conceals = inp.bool();
    let feeds_codes = inp.bool();
    let mut ch: ReceiveChannel<u32> = ReceiveChannel::new(cfg);
    let mut pool = StretchPool::new(60);
    let mut stats = RtpReceiveStats::new(clock);
    let mut rx_ssrc: Option<u32> = None;
    let ledger = RefCell::new(Ledger::default());
    let mut decodes_to: HashMap<u32, usize> = HashMap::new();
    let mut out = vec![0i16; frame];
    let (mut seq, mut ts, mut ssrc) = (inp.u16(), inp.u32(), inp.u32());
    let ts_per_ms = clock / 1000;
    let mut now_ns = 1_000_000_000u64;
    let mut next_id = 0u32;
    let mut ops = 0;
    while !inp.is_empty() && ops < MAX_OPS {
        ops += 1;
        match inp.u8() % 8 {
            0..=2 => {
                // One frame period: what the lane's play step does.
                now_ns += u64::from(ptime_ms) * 1_000_000;
                let mut release = |id: u32| ledger.borrow_mut().release(id);
                let mut dec = Decoder {
                    ledger: &ledger,
                    decodes_to: &decodes_to,
                    codec_conceals,
                    feeds_codes,
                };
                let step = if relay {
                    ch.relay_frame(frame, &mut release)
                } else {
                    RelayStep::Decode
                };
                let rep = match step {
                    RelayStep::Relay(r) | RelayStep::Gap(r) => r,
                    RelayStep::Decode => ch.get_frame(
                        &mut out,
                        &mut pool,
                        relay_preferred,
                        relay_preferred,
                        &mut dec,
                        &mut release,
                    ),
                };
                if let Some(id) = rep.relay {
                    let mut l = ledger.borrow_mut();
                    l.end(id, "relayed");
                    l.relayed += 1;
                }
            }
            3 => {
                // A comfort-noise level (RFC 3389 SID), sometimes absurd.
                let rms = f32::from_bits(inp.u32());
                if rms.is_finite() {
                    ch.set_comfort_noise_rms(rms);
                }
            }
            _ => {
                // One packet, mostly continuing the stream.
                let dseq = match inp.u8() % 8 {
                    0 => inp.u16(),
                    1 => (inp.u8() as i8) as u16,
                    2 => 0,
                    _ => 1,
                };
                seq = seq.wrapping_add(dseq);
                let dur_ms = inp.pick(&[ptime_ms, ptime_ms, 10, 20, 60, 120, 0, 5]);
                let samples = match inp.u8() % 16 {
                    0 => inp.below(3000),
                    _ => (rate / 1000 * dur_ms) as usize,
                };
                let dts = match inp.u8() % 8 {
                    0 => inp.u32(),
                    1 => (i32::from(inp.u8() as i8) * (ts_per_ms * ptime_ms) as i32) as u32,
                    2 => 0,
                    _ => ts_per_ms * ptime_ms,
                };
                ts = ts.wrapping_add(dts);
                if inp.u8().is_multiple_of(32) {
                    ssrc = inp.u32();
                }
                let marker = inp.u8().is_multiple_of(8);
                let arrival = match inp.u8() % 8 {
                    0 => 0,
                    1 => now_ns.wrapping_add(u64::from(inp.u16()) * 100_000),
                    2 => inp.u64(),
                    _ => now_ns,
                };
                let mut release = |id: u32| ledger.borrow_mut().release(id);
                // As the lane does: an SSRC change is a new stream (RFC 3550 §8.2).
                if rx_ssrc.is_some_and(|s| s != ssrc) {
                    stats.reset();
                    ch.reset(&mut release);
                }
                rx_ssrc = Some(ssrc);
                if stats.on_packet(seq, ts, arrival) == PacketClass::Duplicate {
                    continue;
                }
                if samples == 0 {
                    // The lane counts a codec error and never inserts it.
                    continue;
                }
                let id = next_id;
                next_id += 1;
                // Sometimes a corrupt payload that decodes short (or to nothing).
                let decodes = match inp.u8() % 16 {
                    0 => inp.below(samples + 1),
                    _ => samples,
                };
                decodes_to.insert(id, decodes);
                {
                    let mut l = ledger.borrow_mut();
                    l.live.insert(id);
                    l.inserted += 1;
                }
                match ch.insert(ts, samples, marker, arrival, id, &mut release) {
                    Insert::Late(t) | Insert::Duplicate(t) => {
                        assert_eq!(t, id, "insert handed back another packet");
                        let mut l = ledger.borrow_mut();
                        l.end(t, "handed back by insert");
                        l.returned += 1;
                    }
                    Insert::Stored | Insert::Resynced | Insert::Overflowed(_) => {}
                }
            }
        }
        ledger.borrow().check(ch.buffer.len());
        let _ = ch.level_ms();
    }
}

fn run_buffer(inp: &mut Input) {
    const N: usize = 8;
    let clock = inp.pick(&[8000, 48000]);
    let mut buf: AdaptiveBuffer<u32, N> = AdaptiveBuffer::new(jitter_config(inp, clock));
    let ledger = RefCell::new(Ledger::default());
    let mut ts = inp.u32();
    let step = clock / 50;
    let mut next_id = 0u32;
    let mut ops = 0;
    while !inp.is_empty() && ops < MAX_OPS {
        ops += 1;
        let mut release = |id: u32| ledger.borrow_mut().release(id);
        match inp.u8() % 8 {
            0 | 1 => {
                let want = match inp.u8() % 4 {
                    0 => inp.u32(),
                    _ => step,
                };
                match buf.next(want) {
                    Next::Decode { item, .. } => {
                        let mut l = ledger.borrow_mut();
                        assert!(l.decoded.insert(item), "packet {item} played twice");
                        l.end(item, "decoded");
                        l.relayed += 1;
                    }
                    Next::Wait | Next::Conceal { .. } | Next::Empty { .. } => {}
                }
                buf.drop_stale(&mut release);
            }
            2 => {
                if inp.u8().is_multiple_of(8) {
                    buf.reset(&mut release);
                } else {
                    let _ = (buf.buffered_ts(), buf.held_ts(), buf.target_ts());
                    if let Some(&p) = buf.peek_next() {
                        assert!(ledger.borrow().live.contains(&p), "peeked an ended packet");
                    }
                }
            }
            _ => {
                let dts = match inp.u8() % 4 {
                    0 => inp.u32(),
                    1 => (i32::from(inp.u8() as i8) * step as i32) as u32,
                    _ => step,
                };
                ts = ts.wrapping_add(dts);
                let dur = match inp.u8() % 8 {
                    0 => inp.u32(),
                    1 => inp.below(4 * step as usize) as u32,
                    _ => step,
                };
                let marker = inp.u8().is_multiple_of(8);
                let arrival = inp.u64();
                let id = next_id;
                next_id += 1;
                {
                    let mut l = ledger.borrow_mut();
                    l.live.insert(id);
                    l.inserted += 1;
                }
                match buf.insert(ts, dur, marker, arrival, id, &mut release) {
                    Insert::Late(t) | Insert::Duplicate(t) => {
                        assert_eq!(t, id, "insert handed back another packet");
                        let mut l = ledger.borrow_mut();
                        l.end(t, "handed back by insert");
                        l.returned += 1;
                    }
                    Insert::Stored | Insert::Resynced | Insert::Overflowed(_) => {}
                }
            }
        }
        let held = buf.len();
        assert!(held <= N, "buffer holds {held} > capacity {N}");
        let l = ledger.borrow();
        assert_eq!(l.live.len(), held, "held packets match the ledger");
        assert_eq!(
            l.inserted,
            l.returned + l.released + l.relayed + held as u64,
            "every packet ends exactly once"
        );
    }
}
