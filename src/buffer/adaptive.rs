//! An adaptive jitter buffer for encoded packets, in the spirit of WebRTC NetEq.
//!
//! It holds encoded packets keyed by RTP timestamp (so a decoder sees them in order and a
//! concealment stage can look ahead), measures arrival jitter, and tells its caller, once per
//! decode, what to do next: decode the packet that continues the timeline, conceal a packet
//! that is missing while later ones wait, fill an empty buffer, or wait while prebuffering.
//! It also exposes the held level ([`AdaptiveBuffer::held_ts`]) and the target delay
//! ([`AdaptiveBuffer::target_ts`]) from which the caller (the session's receive channel)
//! decides whether to shorten or lengthen audio ([`Adapt`]).
//!
//! The **target delay** is the `quantile` (default 97%) of the relative packet delay
//! distribution: each packet's delay relative to the fastest recent packet
//! (arrival − timestamp, minus a running minimum that may creep up 2% of elapsed media time so
//! a slow sender clock is followed), collected in 20 ms buckets with exponential forgetting.
//! It is clamped to `[min_delay_ms, max_delay_ms]`. Delay is *applied* without glitches:
//! at a talkspurt start (marker bit after the buffer ran dry) the timeline re-anchors and
//! prebuffers exactly the target, and during speech the caller accelerates or expands by
//! whole pitch periods.
//!
//! **Start-up settling.** The quantile needs many packets before it sees a jittery path's
//! spread (and the level it is compared with excludes the mean network delay), so a new stream
//! would otherwise start too short and grow late, packet by late packet, each one concealed in
//! speech. During a stream's first 50 packets (1 s at 20 ms) the buffer compares the playout
//! point with the highest relative delay seen so far and, when it falls short by more than a
//! packet, grows the delay by the whole shortfall in ONE step, once: in the next pause the
//! caller finds ([`AdaptiveBuffer::begin_settling`]), or at the next missing packet (waiting
//! for it rather than concealing it), whichever comes first. Later, the quantile target and
//! silence drops bring the delay down slowly. Lost packets never arrive, so they never count:
//! loss alone does not grow the delay.
//!
//! Everything is timestamp arithmetic modulo 2^32 (wrap-safe) in the stream's RTP clock.
//! Capacity is fixed (`N` packets); no allocation, no clock reads: pure logic.

/// Configuration of an [`AdaptiveBuffer`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JitterConfig {
    /// RTP clock rate of the stream, Hz.
    pub clock_rate_hz: u32,
    /// Lowest target delay, ms.
    pub min_delay_ms: u32,
    /// Highest target delay, ms.
    pub max_delay_ms: u32,
    /// Target delay before any jitter has been measured, ms.
    pub initial_delay_ms: u32,
    /// Quantile of the relative delay distribution used as target (0.5..0.999).
    pub quantile: f32,
    /// Per-packet forgetting factor of the delay histogram (closer to 1 = longer memory).
    pub forget_factor: f32,
    /// After this much continuous concealment with nothing buffered, the receive channel
    /// stops producing frames until packets return, so a sender's silence (hold, DTX
    /// without comfort noise) propagates to the other leg instead of being filled with
    /// synthetic audio. A silence the sender signalled with an RFC 3389 SID frame is not
    /// stopped: comfort noise at its level plays through it. 0 = never stop (an endpoint
    /// that must always play something: comfort noise fills every gap).
    pub max_conceal_ms: u32,
}

impl Default for JitterConfig {
    fn default() -> Self {
        JitterConfig {
            clock_rate_hz: 8000,
            min_delay_ms: 20,
            max_delay_ms: 500,
            initial_delay_ms: 60,
            quantile: 0.97,
            forget_factor: 0.995,
            max_conceal_ms: 100,
        }
    }
}

const BUCKET_MS: f64 = 20.0;
const BUCKETS: usize = 32;

/// Estimates the target playout delay from packet arrival times (see module docs).
#[derive(Debug, Clone)]
pub struct DelayManager {
    hist: [f32; BUCKETS],
    mass: f32,
    reference: Option<(u64, u32)>,
    ts_offset: i64,
    last_ts: u32,
    min_rel_ms: f64,
    /// Packets measured (only whether 8 have been is read; a `u32` beside `early_run`).
    packets: u32,
    target_ms: u32,
    /// Packets in a row far earlier than any before (see [`EARLY_RUN`]; in padding).
    early_run: u8,
    last_jitter_ms: f64,
    cfg: JitterConfig,
}

/// A packet arriving more than the highest delay earlier than the fastest before it (a
/// stray packet whose timestamp lies a second ahead) is not measured: it would drag the
/// running minimum down by that much, and every later packet would read as delayed by it
/// (the target pinned at its maximum for the 25 s the minimum takes to creep back). This
/// many in a row are the stream's timeline jumping ahead: measured from there.
const EARLY_RUN: u8 = 3;

impl DelayManager {
    /// A fresh estimator.
    pub fn new(mut cfg: JitterConfig) -> Self {
        // Bounds given the wrong way round are taken in order (as `set_bounds` does), so a
        // bad setting never panics a thread.
        let (lo, hi) = (cfg.min_delay_ms, cfg.max_delay_ms);
        cfg.min_delay_ms = lo.min(hi);
        cfg.max_delay_ms = hi.max(lo);
        DelayManager {
            hist: [0.0; BUCKETS],
            mass: 0.0,
            reference: None,
            ts_offset: 0,
            last_ts: 0,
            min_rel_ms: 0.0,
            packets: 0,
            target_ms: cfg
                .initial_delay_ms
                .clamp(cfg.min_delay_ms, cfg.max_delay_ms),
            early_run: 0,
            last_jitter_ms: 0.0,
            cfg,
        }
    }

    /// Records a packet with RTP timestamp `ts` arriving at `arrival_ns` (any monotonic
    /// timebase; 0 means unknown and is ignored), carrying `dur_ms` of audio.
    pub fn update(&mut self, ts: u32, arrival_ns: u64, dur_ms: f64) {
        if arrival_ns == 0 {
            return;
        }
        // The first packet since construction or since `reanchor` (a new stream, a
        // timestamp jump): relative delays start over from it. Not `packets == 0`, which
        // `reanchor` leaves at 8 to keep the learned distribution: continuing the old
        // stream's timestamp offset and minimum across the discontinuity read every later
        // packet as delayed by the jump (an SSRC change whose timestamps restarted held the
        // target at its maximum, the minimum rising 0.4 ms a packet).
        let fresh = self.reference.is_none();
        let (a0, t0) = *self.reference.get_or_insert((arrival_ns, ts));
        // Extend the timestamp relative to the reference through wraps.
        let step = i64::from(ts.wrapping_sub(self.last_ts) as i32);
        self.ts_offset = if fresh {
            i64::from(ts.wrapping_sub(t0) as i32)
        } else {
            self.ts_offset + step
        };
        self.last_ts = ts;
        let media_ms = self.ts_offset as f64 * 1000.0 / f64::from(self.cfg.clock_rate_hz);
        let wall_ms = arrival_ns.wrapping_sub(a0) as i64 as f64 / 1e6;
        let mut rel = wall_ms - media_ms;
        let mut fresh = fresh;
        let early = !fresh && self.min_rel_ms - rel > f64::from(self.cfg.max_delay_ms);
        self.early_run = if early {
            self.early_run.saturating_add(1)
        } else {
            0
        };
        if early && self.early_run < EARLY_RUN {
            // (The timestamp offset above follows it, so the next packet measures from
            // the right place.)
            self.last_jitter_ms = 0.0;
            return;
        }
        if early
            || !fresh
                && rel - self.min_rel_ms > f64::from(self.cfg.max_delay_ms) + REANCHOR_ABOVE_MS
        {
            // Far beyond any delay worth buffering for: not jitter but a timeline that
            // stood still while the wall clock went on (a sender's pause or hold whose
            // timestamps did not advance), or one that jumped ahead. Measure from here, or
            // the running minimum (rising 0.02 ms per ms of audio) would hold the target at
            // its maximum for minutes.
            self.reference = Some((arrival_ns, ts));
            self.ts_offset = 0;
            rel = 0.0;
            fresh = true;
        }
        self.min_rel_ms = if fresh {
            rel
        } else {
            rel.min(self.min_rel_ms + 0.02 * dur_ms.max(0.0))
        };
        self.packets = self.packets.saturating_add(1);
        let jitter = (rel - self.min_rel_ms).max(0.0);
        self.last_jitter_ms = jitter;
        let b = ((jitter / BUCKET_MS) as usize).min(BUCKETS - 1);
        let f = self.cfg.forget_factor;
        for h in self.hist.iter_mut() {
            *h *= f;
        }
        self.hist[b] += 1.0 - f;
        self.mass = self.mass * f + (1.0 - f);
        if self.packets >= 8 {
            let want = self.cfg.quantile * self.mass;
            let mut acc = 0.0;
            let mut k = BUCKETS - 1;
            for (i, h) in self.hist.iter().enumerate() {
                acc += h;
                if acc >= want {
                    k = i;
                    break;
                }
            }
            let q_ms = ((k + 1) as f64 * BUCKET_MS) as u32;
            self.target_ms = q_ms.clamp(self.cfg.min_delay_ms, self.cfg.max_delay_ms);
        }
    }

    /// Forgets the timing reference (new stream, or a talkspurt after the buffer went idle
    /// or dry: the sender's timestamps need not have followed the wall clock through its
    /// pause) but keeps the learned distribution.
    pub fn reanchor(&mut self) {
        self.reference = None;
        self.packets = self.packets.min(8);
        self.ts_offset = 0;
    }

    /// Starts over from the initial delay (a timeline that moved back: the late packets
    /// that showed it read as jitter, which would hold the target up), keeping the bounds.
    pub fn restart(&mut self) {
        *self = DelayManager::new(self.cfg);
    }

    /// Current target delay, ms.
    pub fn target_ms(&self) -> u32 {
        self.target_ms
    }

    /// Highest target delay (`JitterConfig::max_delay_ms`, or as `set_bounds` set it), ms.
    pub fn max_ms(&self) -> u32 {
        self.cfg.max_delay_ms
    }

    /// Relative delay of the most recent packet above the running minimum, ms.
    pub fn last_jitter_ms(&self) -> f64 {
        self.last_jitter_ms
    }

    /// Overrides the bounds (quality adaptation). The current target is re-clamped.
    pub fn set_bounds(&mut self, min_ms: u32, max_ms: u32) {
        self.cfg.min_delay_ms = min_ms.min(max_ms);
        self.cfg.max_delay_ms = max_ms.max(min_ms);
        self.target_ms = self
            .target_ms
            .clamp(self.cfg.min_delay_ms, self.cfg.max_delay_ms);
    }
}

/// What happened to an inserted packet.
#[derive(Debug, PartialEq, Eq)]
pub enum Insert<T> {
    /// Stored for playout.
    Stored,
    /// Its audio has already been played or concealed; handed back.
    Late(T),
    /// A packet with this timestamp is already held; the new one is handed back.
    Duplicate(T),
    /// Stored after the stream was resynchronised (timestamp jump, restart); older items
    /// went to the release callback.
    Resynced,
    /// The buffer was full: this many of the oldest packets were dropped (to release), the
    /// new one among them when it was the oldest (a reordered packet), and their audio
    /// will be skipped; the new one stored otherwise.
    Overflowed(u32),
}

/// What the caller should do to produce more audio.
#[derive(Debug, PartialEq, Eq)]
pub enum Next<T> {
    /// Nothing to play yet (no stream, or prebuffering): output silence or comfort noise,
    /// and do not count it as loss.
    Wait,
    /// Decode this packet; it continues the timeline.
    Decode {
        /// The packet.
        item: T,
        /// Its RTP timestamp.
        ts: u32,
        /// Its duration in timestamp units.
        dur_ts: u32,
        /// First packet of a talkspurt or (re)started stream.
        first: bool,
    },
    /// The packet due now is missing while later ones are buffered: conceal `dur_ts`.
    Conceal {
        /// Duration to conceal, timestamp units.
        dur_ts: u32,
    },
    /// Nothing is buffered, or the start-up delay step is in progress: conceal (or fill)
    /// `dur_ts` while the timeline waits for the audio due now (a late packet still plays;
    /// the delay grows instead).
    Empty {
        /// Duration to fill, timestamp units.
        dur_ts: u32,
    },
}

/// Time-scale advice from the buffer level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adapt {
    /// Level near target.
    Hold,
    /// Level above target: remove audio (accelerate, or drop silence).
    Shorten,
    /// Level below target: add audio (preemptive expand).
    Lengthen,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No stream yet, or stream stopped and waiting for the next talkspurt.
    Idle,
    /// Anchored at `next_ts`, waiting until `waited_ts` reaches the target.
    Prebuffer,
    /// Playing.
    Playing,
}

/// A packet's relative delay this far (ms) above the largest target
/// (`JitterConfig::max_delay_ms`) starts the delay measurement over (see
/// [`DelayManager::update`]).
const REANCHOR_ABOVE_MS: f64 = 1000.0;

/// Late packets in a row (none stored or played between them) whose lateness has not
/// shrunk over the last half of this many mean the stream's timeline moved back: the
/// buffer follows the new timeline. A backlog after a stall arrives ever less late as it
/// catches up (it is left to drain, its packets dropped as late until it has). The window
/// slides: while the buffer runs dry its playout point stands still for up to the target
/// delay (which the late packets themselves raise, reading as delay), so even a timeline
/// that moved back looks less late for a while before its lateness settles.
const LATE_RUN_PACKETS: u8 = 16;

/// Packet slots [`AdaptiveBuffer::header_range`] covers (16 bytes each for a slab token: one
/// line).
const HEADER_SLOTS: usize = 4;

/// Adaptive jitter buffer of encoded packets (see module docs). `N` is the packet capacity.
#[derive(Debug)]
///
/// Packets are kept in slots with an occupancy bit mask: the per-frame scans read one
/// `u64` and the few packets actually held (lowest free slot first, so they share a cache
/// line), not every slot (with
/// thousands of sessions per lane, touching 32 slots per frame was the lane's largest
/// cache-miss cost). `N` is at most 64.
#[repr(C)]
pub struct AdaptiveBuffer<T, const N: usize = 32> {
    // Declared in the order of use (`repr(C)` keeps it): what every insert and every frame
    // reads and writes first, so a session's buffer costs a few cache lines per frame.
    /// Bit i set: slot i holds a packet.
    occ: u64,
    /// Bit i set: the packet in slot i starts a talkspurt or stream.
    first: u64,
    state: State,
    /// Late packets in a row (see [`LATE_RUN_PACKETS`]; in what was padding).
    late_run: u8,
    /// How late the one halfway through [`LATE_RUN_PACKETS`] was, ms.
    late_mid_ms: u16,
    next_ts: u32,
    waited_ts: u32,
    empty_run_ts: u32,
    /// Longest recent packet duration (decays toward the current one).
    packet_ts: u32,
    /// Growth decided but not yet started, timestamp units.
    grow_ts: u32,
    /// Rest of a growth in progress: the timeline stands still this much longer.
    wait_left_ts: u32,
    /// Packets measured since the stream (re)started, up to [`SETTLE_PACKETS`].
    settle_packets: u8,
    /// The start-up growth has been applied: no second one.
    settled: bool,
    /// Packets held at most (1..=`N`): below `N` while the lane's packet slots run low
    /// (see [`AdaptiveBuffer::set_cap`]). Beside `settled`, in what was padding.
    cap: u8,
    /// Highest relative delay (above the running minimum) among those packets, ms
    /// (`NEG_INFINITY`: none yet).
    peak_jitter_ms: f32,
    clock_rate: u32,
    /// Beyond this many ms behind the playout point a packet is a restarted stream, not late.
    late_window_ts: u32,
    /// Beyond this many ms ahead of the playout point a packet resynchronises the stream.
    ahead_window_ts: u32,
    /// After this long with nothing buffered, the next packet starts a new talkspurt.
    idle_after_ts: u32,
    /// The packets, slot by slot (lowest free slot first, so the few held share a line).
    slots: [Held<T>; N],
    delay: DelayManager,
}

/// One buffered packet: its timestamp and duration beside it, so finding and taking it
/// touches one cache line.
#[derive(Debug)]
struct Held<T> {
    ts: u32,
    dur: u32,
    item: Option<T>,
}

/// Packets (from a stream's start) during which the delay is settled from the peak
/// relative delay: 1 s at 20 ms. Long enough to see the spread of a jittery path (the
/// quantile target needs far longer and underestimates it at first), short enough that a
/// later one-off stall (Wi-Fi scan, handover) is left to the normal adaptation.
const SETTLE_PACKETS: u8 = 50;

/// Iterates the indices of the set bits of `mask`, lowest first.
#[inline]
fn bits(mut mask: u64) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        if mask == 0 {
            return None;
        }
        let i = mask.trailing_zeros() as usize;
        mask &= mask - 1;
        Some(i)
    })
}

impl<T, const N: usize> AdaptiveBuffer<T, N> {
    const CAPACITY_FITS_THE_MASK: () = assert!(N > 0 && N <= 64, "capacity must be 1..=64");

    /// A buffer for one receive stream. Control plane (built inline, no allocation).
    pub fn new(cfg: JitterConfig) -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::CAPACITY_FITS_THE_MASK;
        let ms = |v: u32| v.saturating_mul(cfg.clock_rate_hz / 1000);
        AdaptiveBuffer {
            occ: 0,
            first: 0,
            slots: std::array::from_fn(|_| Held {
                ts: 0,
                dur: 0,
                item: None,
            }),
            state: State::Idle,
            late_run: 0,
            late_mid_ms: 0,
            next_ts: 0,
            waited_ts: 0,
            empty_run_ts: 0,
            delay: DelayManager::new(cfg),
            clock_rate: cfg.clock_rate_hz,
            late_window_ts: ms(3000),
            ahead_window_ts: ms(cfg.max_delay_ms.max(1000) + 1000),
            idle_after_ts: ms(200),
            packet_ts: 0,
            settle_packets: 0,
            peak_jitter_ms: f32::NEG_INFINITY,
            grow_ts: 0,
            wait_left_ts: 0,
            settled: false,
            cap: N as u8,
        }
    }

    /// Holds at most `cap` packets from the next insert on (clamped to 1..=`N`): an insert
    /// into a buffer holding that many drops the oldest first, as a full buffer does
    /// ([`Insert::Overflowed`]). The lane lowers it to a session's share of the packet
    /// slots while few are free, so one session's backlog cannot take the slots the
    /// others' next packets need. Real-time safe.
    #[inline]
    pub fn set_cap(&mut self, cap: usize) {
        self.cap = cap.clamp(1, N) as u8;
    }

    /// The packet limit set by [`AdaptiveBuffer::set_cap`] (`N` unless lowered).
    pub fn cap(&self) -> usize {
        usize::from(self.cap)
    }

    fn ts_per_ms(&self) -> u32 {
        (self.clock_rate / 1000).max(1)
    }

    /// Duration (timestamp units) of the packet that continues the timeline, when playing
    /// and it is held: what [`AdaptiveBuffer::next`] would decode next.
    #[inline]
    pub fn continuing_dur(&self) -> Option<u32> {
        if self.state != State::Playing || self.wait_left_ts > 0 {
            return None;
        }
        bits(self.occ)
            .find(|&i| self.slots[i].ts == self.next_ts)
            .map(|i| self.slots[i].dur)
    }

    /// The packet that continues the timeline, if held (not taken): after a gap was
    /// concealed, the packet that follows it (whose FEC data may rebuild the gap).
    #[inline]
    pub fn peek_next(&self) -> Option<&T> {
        bits(self.occ)
            .find(|&i| self.slots[i].ts == self.next_ts)
            .and_then(|i| self.slots[i].item.as_ref())
    }

    /// The bytes every frame and every insert read first, as (address, length): the
    /// header (from `occ` to `idle_after_ts`, which may straddle two lines) and the first
    /// packet slots (a buffer holds its packets in the lowest free slots, so a few packets
    /// are in the first line). For a caller that prefetches them at the same offset in
    /// many buffers without loading any (the lane's decode stage).
    pub fn header_range(&self) -> (usize, usize) {
        use crate::runtime::prefetch::field_range;
        match self.slots.get(N.min(HEADER_SLOTS).wrapping_sub(1)) {
            Some(last) => field_range(&self.occ, last),
            None => field_range(&self.occ, &self.idle_after_ts),
        }
    }

    /// The delay estimator's bytes (what an insert touches besides
    /// [`AdaptiveBuffer::header_range`]), as (address, length).
    pub fn delay_range(&self) -> (usize, usize) {
        (
            &self.delay as *const DelayManager as usize,
            core::mem::size_of::<DelayManager>(),
        )
    }

    /// Packets held.
    pub fn len(&self) -> usize {
        self.occ.count_ones() as usize
    }

    /// True when no packet is held.
    pub fn is_empty(&self) -> bool {
        self.occ == 0
    }

    /// Takes the packet out of slot `i` (which must be occupied).
    fn take(&mut self, i: usize) -> Option<T> {
        self.occ &= !(1 << i);
        self.first &= !(1 << i);
        self.slots[i].item.take()
    }

    /// The delay estimator.
    pub fn delay(&self) -> &DelayManager {
        &self.delay
    }

    /// The delay estimator, mutably (bounds adaptation).
    pub fn delay_mut(&mut self) -> &mut DelayManager {
        &mut self.delay
    }

    /// Target delay in timestamp units: the delay manager's target, but never less than
    /// the longest recent packet (a packet can only be played once it has fully arrived).
    pub fn target_ts(&self) -> u32 {
        (self.delay.target_ms() * self.ts_per_ms()).max(self.packet_ts)
    }

    /// True while playing (not idle or prebuffering).
    pub fn is_playing(&self) -> bool {
        self.state == State::Playing
    }

    /// Timestamp of the next audio to decode (meaningful once started).
    pub fn next_ts(&self) -> u32 {
        self.next_ts
    }

    /// Audio buffered ahead of the decode point, in timestamp units: from `next_ts` to the
    /// end of the newest packet (gaps included: they will be filled or concealed).
    pub fn buffered_ts(&self) -> u32 {
        let mut end = 0u32;
        for i in bits(self.occ) {
            let d = self.slots[i]
                .ts
                .wrapping_add(self.slots[i].dur)
                .wrapping_sub(self.next_ts);
            if (d as i32) > 0 {
                end = end.max(d);
            }
        }
        end
    }

    /// Audio actually held ahead of the decode point, in timestamp units: the sum of the
    /// buffered packets' durations (gaps not counted, unlike [`AdaptiveBuffer::buffered_ts`]).
    /// This is the level the delay is controlled by: with reordering the newest packet can be
    /// far ahead while the ones due next are still missing. Saturates at `u32::MAX` (the
    /// durations are the caller's: absurd ones must not overflow).
    pub fn held_ts(&self) -> u32 {
        bits(self.occ)
            .filter(|&i| {
                (self.slots[i]
                    .ts
                    .wrapping_add(self.slots[i].dur)
                    .wrapping_sub(self.next_ts) as i32)
                    > 0
            })
            .fold(0u32, |sum, i| sum.saturating_add(self.slots[i].dur))
    }

    fn store(&mut self, ts: u32, dur: u32, first: bool, item: T) {
        // Invariant: the caller made room (`occ` has a clear bit below N).
        let free = (!self.occ).trailing_zeros() as usize;
        if free < N {
            self.occ |= 1 << free;
            self.first |= u64::from(first) << free;
            self.slots[free].ts = ts;
            self.slots[free].dur = dur;
            self.slots[free].item = Some(item);
        }
    }

    /// Hands every held packet to `release` and returns to idle (SSRC change, destroy).
    pub fn flush(&mut self, release: &mut impl FnMut(T)) {
        for i in bits(self.occ) {
            if let Some(item) = self.take(i) {
                release(item);
            }
        }
        self.state = State::Idle;
    }

    /// Starts a new stream: flushes and forgets the timing reference, keeping the learned
    /// jitter distribution.
    pub fn reset(&mut self, release: &mut impl FnMut(T)) {
        self.flush(release);
        self.delay.reanchor();
        self.restart_settling();
    }

    /// A new stream: its start-up delay is settled afresh.
    fn restart_settling(&mut self) {
        self.settle_packets = 0;
        self.peak_jitter_ms = f32::NEG_INFINITY;
        self.grow_ts = 0;
        self.wait_left_ts = 0;
        self.settled = false;
    }

    /// Start-up growth decided and waiting for a pause, timestamp units (0: none); see the
    /// module docs. Called on the real-time thread; never allocates.
    pub fn settle_pending_ts(&self) -> u32 {
        if self.state == State::Playing {
            self.grow_ts
        } else {
            0
        }
    }

    /// Applies the pending start-up growth now (the caller found a pause): the timeline
    /// stands still for it ([`Next::Empty`]) while the caller fills. Once per stream.
    /// Called on the real-time thread; never allocates.
    pub fn begin_settling(&mut self) {
        self.wait_left_ts = self.wait_left_ts.saturating_add(self.grow_ts);
        self.grow_ts = 0;
        self.settled = true;
    }

    /// Start-up settling (the first [`SETTLE_PACKETS`] of a stream): after the delay
    /// manager measured a packet of timestamp `ts`, compares the playout point with the
    /// highest relative delay seen so far, and when it falls short by more than a packet
    /// decides to grow the delay by the whole shortfall in one step (one early jump rather
    /// than a ramp of late packets, each concealed in speech). Relative delays are taken
    /// above the delay manager's running minimum, so sender clock drift does not count.
    fn settle(&mut self, ts: u32) {
        if self.settle_packets >= SETTLE_PACKETS || self.settled {
            return;
        }
        self.settle_packets += 1;
        let jitter = self.delay.last_jitter_ms();
        self.peak_jitter_ms = self.peak_jitter_ms.max(jitter as f32);
        if self.state != State::Playing {
            return;
        }
        let per_ms = f64::from(self.ts_per_ms());
        // When this packet plays, relative to its own arrival (negative: late); this
        // packet's relative delay plus that is the playout point's.
        let slack_ms = f64::from(ts.wrapping_sub(self.next_ts) as i32) / per_ms;
        // No margin: the slack counts from the decode point, so it is short of the real
        // one by the wait for the next frame tick (half a packet on average). Never past
        // the highest delay allowed: one packet delayed a second is not followed there.
        let delay_ms = jitter + slack_ms;
        let short_ms = (f64::from(self.peak_jitter_ms) - delay_ms)
            .min(f64::from(self.delay.max_ms()) - delay_ms);
        let step = self.packet_ts.max(1);
        if short_ms * per_ms > f64::from(step) {
            let frames = (short_ms * per_ms / f64::from(step)).ceil() as u32;
            self.grow_ts = self.grow_ts.max(frames.saturating_mul(step));
        }
    }

    fn anchor(&mut self, ts: u32) {
        self.state = State::Prebuffer;
        self.next_ts = ts;
        self.waited_ts = 0;
        self.empty_run_ts = 0;
        self.late_run = 0;
    }

    /// Notes a late packet, `behind_ts` behind the playout point; true once
    /// [`LATE_RUN_PACKETS`] have come in a row and the latest is no less late than the
    /// one half a window back (within a packet and 10 ms): the timeline moved back.
    fn late_run_moved_back(&mut self, behind_ts: u32) -> bool {
        let per_ms = self.ts_per_ms().max(1);
        let behind_ms = (behind_ts / per_ms).min(u32::from(u16::MAX)) as u16;
        self.late_run = self.late_run.saturating_add(1);
        if self.late_run == LATE_RUN_PACKETS / 2 {
            self.late_mid_ms = behind_ms;
        }
        if self.late_run < LATE_RUN_PACKETS {
            return false;
        }
        let slack_ms = (self.packet_ts / per_ms + 10).min(1000) as u16;
        if behind_ms.saturating_add(slack_ms) >= self.late_mid_ms {
            return true;
        }
        // Still catching up: slide the window half on.
        self.late_run = LATE_RUN_PACKETS / 2;
        self.late_mid_ms = behind_ms;
        false
    }

    /// Inserts a packet of `dur_ts` timestamp units. `marker` is the RTP marker bit
    /// (start of a talkspurt). Real-time safe.
    pub fn insert(
        &mut self,
        ts: u32,
        dur_ts: u32,
        marker: bool,
        arrival_ns: u64,
        item: T,
        release: &mut impl FnMut(T),
    ) -> Insert<T> {
        let dur_ms = f64::from(dur_ts) * 1000.0 / f64::from(self.clock_rate.max(1));
        let mut outcome = Insert::Stored;
        // The packet starts the playout (see below), though others are held.
        let mut starts = false;
        match self.state {
            State::Idle => {
                // New talkspurt or first packet: adapt delay here, where it is inaudible.
                self.flush(release);
                self.delay.reanchor();
                self.anchor(ts);
            }
            State::Prebuffer | State::Playing => {
                let dry = self.occ == 0 && self.empty_run_ts > 0;
                if dry && !marker {
                    // We concealed longer than the target delay while the timeline stood
                    // still: the audio of that excess has had its time. Skip it, so a stall
                    // followed by a burst returns to the target delay instead of playing the
                    // whole backlog late.
                    let skip = self.empty_run_ts.saturating_sub(self.target_ts());
                    self.next_ts = self.next_ts.wrapping_add(skip);
                    self.empty_run_ts -= skip;
                }
                let d = ts.wrapping_sub(self.next_ts) as i32;
                if d < 0
                    && self.state == State::Prebuffer
                    && d.unsigned_abs() <= dur_ts.max(self.packet_ts).saturating_mul(3)
                {
                    // Nothing of this playout has played yet and the packet lies just
                    // before the first held (at most three packets): the first packets
                    // came reordered. The playout starts at this one rather than losing
                    // it. (An older one, a late packet of the talkspurt before, is late.)
                    self.next_ts = ts;
                    starts = true;
                } else if d < 0 {
                    let behind = d.unsigned_abs();
                    // Talkspurt start after the buffer ran dry: re-anchor instead of
                    // discarding it as late (the sender's silence was shorter than ours).
                    // Likewise when late packets keep coming: the timeline moved back.
                    let moved_back = self.late_run_moved_back(behind);
                    if behind > self.late_window_ts || (marker && dry) || moved_back {
                        self.flush(release);
                        if moved_back {
                            self.delay.restart();
                        }
                        self.delay.reanchor();
                        self.restart_settling();
                        self.anchor(ts);
                        outcome = Insert::Resynced;
                    } else {
                        self.delay.update(ts, arrival_ns, dur_ms);
                        if arrival_ns != 0 {
                            self.settle(ts);
                        }
                        return Insert::Late(item);
                    }
                } else if d as u32 > self.ahead_window_ts {
                    self.flush(release);
                    self.delay.reanchor();
                    self.restart_settling();
                    self.anchor(ts);
                    outcome = Insert::Resynced;
                } else if marker && dry {
                    // A new talkspurt after the buffer ran dry (silence, DTX): apply the
                    // current target delay here, where re-timing is inaudible.
                    self.delay.reanchor();
                    self.anchor(ts);
                } else if dry {
                    // The buffer ran dry and we concealed `empty_run_ts` while the timeline
                    // stood still at the missing audio. That much of the gap has been played:
                    // skip it (the rest, if any, is audio still to come).
                    self.next_ts = self.next_ts.wrapping_add((d as u32).min(self.empty_run_ts));
                }
            }
        }
        if bits(self.occ).any(|i| self.slots[i].ts == ts) {
            return Insert::Duplicate(item);
        }
        self.delay.update(ts, arrival_ns, dur_ms);
        if arrival_ns != 0 {
            self.settle(ts);
        }
        // Follow ptime changes: jump up at once, come down slowly.
        self.packet_ts = if dur_ts >= self.packet_ts {
            dur_ts
        } else {
            self.packet_ts - (self.packet_ts - dur_ts) / 16
        };
        // Full (or at a lowered cap, possibly beyond it): drop the oldest packets; their
        // audio is skipped.
        let limit = usize::from(self.cap).min(N);
        let mut dropped = 0;
        let item = if self.len() < limit {
            item
        } else {
            match self.shed(ts, dur_ts, item, limit, release) {
                (Some(item), n) => {
                    dropped = n;
                    item
                }
                (None, n) => {
                    self.late_run = 0;
                    return Insert::Overflowed(n);
                }
            }
        };
        if dropped > 0 && matches!(outcome, Insert::Stored) {
            outcome = Insert::Overflowed(dropped);
        }
        if starts {
            // The playout starts at this packet (see above): the talkspurt's first bit
            // moves to it.
            self.first = 0;
        }
        let first = marker || starts || self.state == State::Prebuffer && self.occ == 0;
        self.store(ts, dur_ts, first, item);
        self.empty_run_ts = 0;
        self.late_run = 0;
        outcome
    }

    /// Drops the oldest packets of a buffer at or over `limit` (the insert's slow path):
    /// down to one under it while the new packet (`item`, at `ts`) is to be stored, to
    /// it once the new one is dropped itself, which it is when it is older than every
    /// packet held (reordered: the audio due next; dropping a held one instead would
    /// leave it behind the playout point, lost as well). Returns the new packet unless
    /// dropped, and how many were dropped.
    #[cold]
    fn shed(
        &mut self,
        ts: u32,
        dur_ts: u32,
        item: T,
        limit: usize,
        release: &mut impl FnMut(T),
    ) -> (Option<T>, u32) {
        let mut dropped = 0;
        let mut item = Some(item);
        while self.len() + usize::from(item.is_some()) > limit {
            let oldest =
                bits(self.occ).min_by_key(|&i| self.slots[i].ts.wrapping_sub(self.next_ts) as i32);
            let Some(i) = oldest else { break };
            let (ets, edur) = (self.slots[i].ts, self.slots[i].dur);
            let d = ts.wrapping_sub(self.next_ts) as i32;
            if item.is_some() && d < ets.wrapping_sub(self.next_ts) as i32 {
                if d >= 0 {
                    self.next_ts = ts.wrapping_add(dur_ts);
                }
                if let Some(new) = item.take() {
                    release(new);
                }
                dropped += 1;
                continue;
            }
            if let Some(old) = self.take(i) {
                if (ets.wrapping_sub(self.next_ts) as i32) >= 0 {
                    self.next_ts = ets.wrapping_add(edur);
                }
                release(old);
                dropped += 1;
            }
        }
        (item, dropped)
    }

    /// Says what to do to produce the next `want_ts` of audio (one frame, or what is still
    /// missing of it). Real-time safe.
    pub fn next(&mut self, want_ts: u32) -> Next<T> {
        match self.state {
            State::Idle => return Next::Wait,
            State::Prebuffer => {
                let level = self.buffered_ts();
                if level >= self.target_ts() || self.waited_ts >= self.target_ts() {
                    self.state = State::Playing;
                } else {
                    self.waited_ts = self.waited_ts.saturating_add(want_ts);
                    return Next::Wait;
                }
            }
            State::Playing => {}
        }
        if self.wait_left_ts > 0 {
            // Start-up settling in progress: the timeline stands still (the caller conceals
            // or fills) while the clock runs, so the delay grows by the whole step at once.
            let dur = want_ts.min(self.wait_left_ts);
            self.wait_left_ts -= dur;
            return Next::Empty { dur_ts: dur };
        }
        // The packet that continues the timeline.
        let at = self.next_ts;
        if let Some(i) = bits(self.occ).find(|&i| self.slots[i].ts == at) {
            let (dur, first) = (self.slots[i].dur, self.first & (1 << i) != 0);
            if let Some(item) = self.take(i) {
                self.next_ts = at.wrapping_add(dur);
                self.empty_run_ts = 0;
                // Audio plays: late packets before it were not a timeline that moved.
                self.late_run = 0;
                return Next::Decode {
                    item,
                    ts: at,
                    dur_ts: dur,
                    first,
                };
            }
        }
        // A packet overlapping the decode point (ptime change or odd timestamps): play the
        // earliest packet ahead instead of concealing a sliver.
        if self.occ != 0 {
            if self.grow_ts > 0 {
                // Start-up growth pending and the audio due now is missing while later audio
                // waits: wait for it (it is likely only late) for the whole growth at once,
                // instead of concealing it and discarding it when it comes.
                self.begin_settling();
                let dur = want_ts.min(self.wait_left_ts);
                self.wait_left_ts -= dur;
                return Next::Empty { dur_ts: dur };
            }
            let ahead = self.next_ahead();
            if let Some(i) = self.jump_ahead(want_ts) {
                let (ts, dur) = (self.slots[i].ts, self.slots[i].dur);
                if let Some(item) = self.take(i) {
                    self.next_ts = ts.wrapping_add(dur);
                    self.empty_run_ts = 0;
                    return Next::Decode {
                        item,
                        ts,
                        dur_ts: dur,
                        first: true,
                    };
                }
            }
            let dur = match ahead {
                Some((d, _)) => d.min(want_ts.max(1)),
                None => want_ts,
            };
            self.next_ts = at.wrapping_add(dur);
            // Anything now entirely behind the decode point can never play.
            return Next::Conceal { dur_ts: dur };
        }
        if self.grow_ts > 0 {
            // Start-up growth pending and the timeline waits anyway: make it the whole step.
            self.begin_settling();
        }
        // Nothing buffered: conceal, but keep the timeline at the missing audio so a late
        // packet still plays (the delay grows instead of audio being discarded).
        self.empty_run_ts = self.empty_run_ts.saturating_add(want_ts);
        if self.empty_run_ts >= self.idle_after_ts.saturating_mul(10) {
            // Long outage: stop the timeline; the next packet re-anchors it.
            self.state = State::Idle;
        }
        Next::Empty { dur_ts: want_ts }
    }

    /// The held packet nearest ahead of the decode point: (its distance, its slot).
    fn next_ahead(&self) -> Option<(u32, usize)> {
        bits(self.occ)
            .map(|i| (self.slots[i].ts.wrapping_sub(self.next_ts), i))
            .filter(|&(d, _)| (d as i32) > 0)
            .min_by_key(|&(d, _)| d)
    }

    /// The slot of the packet [`AdaptiveBuffer::next`] jumps to when the audio due now is
    /// missing: the next packet starts a stream (marker) further ahead than the buffer's
    /// delay explains, while packets were still coming: not a talkspurt after a silence
    /// (the buffer would have run dry) but the stream jumping forward (a source switched
    /// on the same SSRC). It goes there rather than concealing the whole jump frame by
    /// frame. (Beyond what it holds, too: above target after a burst, a short pause
    /// between talkspurts is shortened by time-scaling, not skipped whole.)
    fn jump_ahead(&self, want_ts: u32) -> Option<usize> {
        let (d, i) = self.next_ahead()?;
        (self.first & (1 << i) != 0
            && d > self
                .target_ts()
                .max(self.held_ts())
                .saturating_add(want_ts.saturating_mul(2)))
        .then_some(i)
    }

    /// When the audio due now is missing and [`AdaptiveBuffer::next`] would jump ahead to
    /// a packet that starts a stream (see there), that packet's duration. Real-time safe.
    pub fn jump_ahead_dur(&self, want_ts: u32) -> Option<u32> {
        if self.state != State::Playing || self.wait_left_ts > 0 || self.grow_ts > 0 {
            return None;
        }
        self.jump_ahead(want_ts).map(|i| self.slots[i].dur)
    }

    /// Releases packets that lie entirely behind the decode point (after a conceal skipped
    /// past them). Returns how many were released.
    pub fn drop_stale(&mut self, release: &mut impl FnMut(T)) -> usize {
        let mut n = 0;
        for i in bits(self.occ) {
            let end = self.slots[i].ts.wrapping_add(self.slots[i].dur);
            if (end.wrapping_sub(self.next_ts) as i32) <= 0 {
                if let Some(item) = self.take(i) {
                    release(item);
                    n += 1;
                }
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type B = AdaptiveBuffer<u32, 16>;

    fn cfg() -> JitterConfig {
        JitterConfig {
            initial_delay_ms: 40,
            min_delay_ms: 20,
            ..Default::default()
        }
    }

    fn no_release(_: u32) {
        panic!("nothing should be released");
    }

    /// A stream whose timestamps jump (a new SSRC starting from 0, a sender's restart)
    /// is re-anchored: its delays are measured afresh, not across the jump.
    #[test]
    fn a_reanchored_stream_measures_its_delays_afresh() {
        for jump in [-1_000_000i64, -160, 5_000_000] {
            let mut d = DelayManager::new(JitterConfig::default());
            let ms = |k: u64| 1 + k * 20_000_000;
            for k in 0..3000u64 {
                d.update((160 * k) as u32, ms(k), 20.0);
            }
            assert_eq!(d.target_ms(), JitterConfig::default().min_delay_ms.max(20));
            let low = d.target_ms();
            d.reanchor();
            let ts0 = (160 * 3000i64 + jump) as u32;
            for k in 0..500u64 {
                d.update(ts0.wrapping_add((160 * k) as u32), ms(3000 + k), 20.0);
                assert!(
                    d.last_jitter_ms() < 1.0,
                    "jump {jump}, packet {k}: {}",
                    d.last_jitter_ms()
                );
            }
            assert_eq!(d.target_ms(), low, "jump {jump}");
        }
    }

    #[test]
    fn prebuffers_the_initial_delay_then_plays_in_timestamp_order() {
        let mut b = B::new(cfg());
        for (i, ts) in [0u32, 320, 160, 480].into_iter().enumerate() {
            assert_eq!(
                b.insert(ts, 160, i == 0, 1, ts, &mut no_release),
                Insert::Stored
            );
        }
        // 640 ts of audio buffered >= 40 ms target: plays at once.
        let mut got = vec![];
        for _ in 0..4 {
            match b.next(160) {
                Next::Decode { item, .. } => got.push(item),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(got, vec![0, 160, 320, 480]);
    }

    #[test]
    fn a_missing_packet_is_concealed_and_arrives_late_afterwards() {
        let mut b = B::new(cfg());
        for ts in [0u32, 160, 480, 640] {
            b.insert(ts, 160, false, 0, ts, &mut no_release);
        }
        assert!(matches!(b.next(160), Next::Decode { item: 0, .. }));
        assert!(matches!(b.next(160), Next::Decode { item: 160, .. }));
        assert_eq!(b.next(160), Next::Conceal { dur_ts: 160 });
        assert_eq!(
            b.insert(320, 160, false, 0, 320, &mut no_release),
            Insert::Late(320)
        );
        assert!(matches!(b.next(160), Next::Decode { item: 480, .. }));
    }

    #[test]
    fn duplicates_are_handed_back() {
        let mut b = B::new(cfg());
        b.insert(0, 160, false, 0, 1, &mut no_release);
        assert_eq!(
            b.insert(0, 160, false, 0, 2, &mut no_release),
            Insert::Duplicate(2)
        );
    }

    #[test]
    fn timestamp_wrap_is_continuous() {
        let mut b = B::new(cfg());
        let start = u32::MAX - 159 - 160;
        for k in 0..4u32 {
            b.insert(
                start.wrapping_add(160 * k),
                160,
                false,
                0,
                k,
                &mut no_release,
            );
        }
        let got: Vec<u32> = (0..4)
            .map(|_| match b.next(160) {
                Next::Decode { item, .. } => item,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(got, vec![0, 1, 2, 3]);
    }

    #[test]
    fn a_huge_jump_resynchronises() {
        let mut b = B::new(cfg());
        let mut released = vec![];
        b.insert(0, 160, false, 0, 0, &mut |i| released.push(i));
        b.insert(160, 160, false, 0, 1, &mut |i| released.push(i));
        assert_eq!(
            b.insert(50_000_000, 160, false, 0, 2, &mut |i| released.push(i)),
            Insert::Resynced
        );
        assert_eq!(released, vec![0, 1]);
        // Far behind (a restarted sender) also resyncs rather than being late forever.
        assert_eq!(
            b.insert(7, 160, false, 0, 3, &mut |i| released.push(i)),
            Insert::Resynced
        );
    }

    #[test]
    fn overflow_drops_the_oldest_and_skips_its_audio() {
        let mut b = AdaptiveBuffer::<u32, 4>::new(cfg());
        let mut released = vec![];
        for k in 0..5u32 {
            b.insert(160 * k, 160, false, 0, k, &mut |i| released.push(i));
        }
        assert_eq!(released, vec![0]);
        assert_eq!(b.len(), 4);
        assert!(matches!(b.next(160), Next::Decode { item: 1, .. }));
    }

    /// A full buffer waiting for the packet due next (reordered), which then comes: that
    /// one packet's audio is skipped, the held ones play. Before, the oldest held packet
    /// was dropped and the playout point moved past it, so the late one, stored behind it,
    /// was lost as well: two packets for one.
    #[test]
    fn a_reordered_packet_into_a_full_buffer_costs_one_packet_not_two() {
        let mut b = AdaptiveBuffer::<u32, 4>::new(cfg());
        let mut released = vec![];
        b.insert(0, 160, true, 0, 0, &mut |i| released.push(i));
        for k in 2..5u32 {
            b.insert(160 * k, 160, false, 0, k, &mut |i| released.push(i));
        }
        assert!(matches!(b.next(160), Next::Decode { item: 0, .. }));
        b.insert(160 * 5, 160, false, 0, 5, &mut |i| released.push(i));
        assert_eq!(b.len(), 4);
        // Packet 1 comes last, into a full buffer.
        let out = b.insert(160, 160, false, 0, 1, &mut |i| released.push(i));
        assert_eq!(out, Insert::Overflowed(1));
        assert_eq!(released, vec![1]);
        let played: Vec<u32> = (0..4)
            .filter_map(|_| match b.next(160) {
                Next::Decode { item, .. } => Some(item),
                _ => None,
            })
            .collect();
        assert_eq!(played, vec![2, 3, 4, 5]);
    }

    /// A talkspurt's first two packets arrive swapped, the marked one second: it starts
    /// the playout and both play, the marker forwarded once. Before, the buffer had
    /// anchored on the first to arrive, and the marked one was dropped as late though
    /// nothing had played.
    #[test]
    fn a_talkspurt_whose_first_packets_come_swapped_plays_both() {
        for marked_first in [true, false] {
            let mut b = B::new(cfg());
            assert_eq!(
                b.insert(160, 160, false, 1, 1, &mut no_release),
                Insert::Stored
            );
            assert_eq!(
                b.insert(0, 160, marked_first, 2, 0, &mut no_release),
                Insert::Stored,
                "marker {marked_first}"
            );
            b.insert(320, 160, false, 3, 2, &mut no_release);
            let mut played = vec![];
            for _ in 0..6 {
                if let Next::Decode { item, first, .. } = b.next(160) {
                    played.push((item, first));
                }
            }
            assert_eq!(played, vec![(0, true), (1, false), (2, false)]);
        }
        // A late packet of an earlier talkspurt, marked, a second before this one's
        // start: late, not a new start.
        let mut b = B::new(cfg());
        b.insert(80_000, 160, true, 1, 1, &mut no_release);
        assert_eq!(
            b.insert(72_000, 160, true, 2, 0, &mut no_release),
            Insert::Late(0)
        );
    }

    /// The packet due next arriving into a buffer above a lowered cap: it is dropped and
    /// the buffer still sheds down to the cap (in review the first version returned
    /// early, still over it); a talkspurt's reordered first packet dropped that way leaves
    /// the first flag where it was.
    #[test]
    fn a_reordered_packet_above_a_lowered_cap_still_sheds_to_the_cap() {
        let mut b = B::new(cfg());
        let mut released = vec![];
        b.insert(0, 160, true, 0, 0, &mut |i| released.push(i));
        for k in 2..12u32 {
            b.insert(160 * k, 160, false, 0, k, &mut |i| released.push(i));
        }
        assert!(matches!(b.next(160), Next::Decode { item: 0, .. }));
        b.set_cap(4);
        let out = b.insert(160, 160, false, 0, 1, &mut |i| released.push(i));
        assert_eq!(out, Insert::Overflowed(7));
        assert_eq!(released, (1..8).collect::<Vec<_>>());
        assert_eq!(b.len(), 4);
        assert!(matches!(b.next(160), Next::Decode { item: 8, .. }));

        let mut b = B::new(cfg());
        b.insert(160, 160, true, 1, 1, &mut no_release);
        b.insert(320, 160, false, 2, 2, &mut no_release);
        b.set_cap(2);
        released.clear();
        let out = b.insert(0, 160, false, 3, 0, &mut |i| released.push(i));
        assert_eq!(
            (out, released.as_slice()),
            (Insert::Overflowed(1), &[0][..])
        );
        let first: Vec<(u32, bool)> = (0..8)
            .filter_map(|_| match b.next(160) {
                Next::Decode { item, first, .. } => Some((item, first)),
                _ => None,
            })
            .collect();
        assert_eq!(first, vec![(1, true), (2, false)]);
    }

    #[test]
    fn a_lowered_cap_keeps_the_newest_packets_and_lifting_it_holds_more_again() {
        let mut b = B::new(cfg());
        let mut released = vec![];
        for k in 0..10u32 {
            b.insert(160 * k, 160, false, 0, k, &mut |i| released.push(i));
        }
        assert!(released.is_empty());
        assert_eq!((b.len(), b.cap()), (10, 16));
        // Lowered to 4: the next insert drops the seven oldest (10 + 1 held would be 11).
        b.set_cap(4);
        let out = b.insert(1600, 160, false, 0, 10, &mut |i| released.push(i));
        assert_eq!(out, Insert::Overflowed(7), "each packet dropped counted");
        assert_eq!(released, (0..7).collect::<Vec<_>>());
        assert_eq!(b.len(), 4);
        // Their audio is skipped: playout goes on from the oldest kept.
        assert!(matches!(b.next(160), Next::Decode { item: 7, .. }));
        // Lifted again (and clamped to the capacity): nothing more is dropped.
        b.set_cap(1000);
        assert_eq!(b.cap(), 16);
        released.clear();
        for k in 11..20u32 {
            b.insert(160 * k, 160, false, 0, k, &mut |i| released.push(i));
        }
        assert!(released.is_empty());
        b.set_cap(0);
        assert_eq!(b.cap(), 1, "at least one packet is always held");
    }

    #[test]
    fn empty_buffer_fills_and_long_outage_goes_idle_then_reanchors() {
        let mut b = B::new(cfg());
        b.insert(0, 160, true, 0, 0, &mut no_release);
        b.insert(160, 160, false, 0, 1, &mut no_release);
        b.insert(320, 160, false, 0, 2, &mut no_release);
        for _ in 0..3 {
            assert!(matches!(b.next(160), Next::Decode { .. }));
        }
        let mut empties = 0;
        while let Next::Empty { .. } = b.next(160) {
            empties += 1;
            assert!(empties < 1000);
        }
        assert!(
            empties >= 100,
            "conceals through 2 s before giving up ({empties})"
        );
        // After the outage a packet far ahead starts a new timeline without being late.
        assert_eq!(
            b.insert(160 * 400, 160, false, 0, 9, &mut no_release),
            Insert::Stored
        );
    }

    #[test]
    fn talkspurt_after_silence_re_anchors_at_the_target_delay() {
        for (gap_frames, behind) in [(8u32, false), (2, true)] {
            let mut b = B::new(cfg());
            b.insert(0, 160, true, 0, 0, &mut no_release);
            b.insert(160, 160, false, 0, 1, &mut no_release);
            b.insert(320, 160, false, 0, 2, &mut no_release);
            for _ in 0..3 {
                b.next(160);
            }
            for _ in 0..5 {
                assert!(matches!(b.next(160), Next::Empty { .. }));
            }
            // DTX: the next talkspurt starts after `gap_frames` of sender silence; with a
            // short gap its timestamp is even behind the audio we concealed meanwhile.
            let ts = 480 + 160 * gap_frames;
            let ts = if behind { ts - 480 } else { ts };
            let r = b.insert(ts, 160, true, 0, 7, &mut no_release);
            assert!(matches!(r, Insert::Stored | Insert::Resynced), "{r:?}");
            // It prebuffers the target (40 ms) then plays, not late and not after the gap.
            assert_eq!(b.next(160), Next::Wait);
            assert_eq!(b.next(160), Next::Wait);
            assert!(matches!(
                b.next(160),
                Next::Decode {
                    item: 7,
                    first: true,
                    ..
                }
            ));
        }
    }

    #[test]
    fn a_late_packet_after_an_underrun_still_plays_and_the_delay_grows() {
        let mut b = B::new(cfg());
        for k in 0..3u32 {
            b.insert(160 * k, 160, false, 0, k, &mut no_release);
        }
        for _ in 0..3 {
            assert!(matches!(b.next(160), Next::Decode { .. }));
        }
        // Packet 3 is 40 ms late: two frames concealed while it is awaited.
        assert!(matches!(b.next(160), Next::Empty { .. }));
        assert!(matches!(b.next(160), Next::Empty { .. }));
        assert_eq!(
            b.insert(480, 160, false, 0, 3, &mut no_release),
            Insert::Stored
        );
        assert_eq!(
            b.insert(640, 160, false, 0, 4, &mut no_release),
            Insert::Stored
        );
        assert!(
            matches!(b.next(160), Next::Decode { .. }),
            "the late packet plays"
        );
    }

    /// Drives `b` in real time, one 20 ms frame period per entry of `packets` (the packet
    /// that arrives in it, if any: timestamp and marker), each arriving on time; returns
    /// the late count and the packets played after period `from`.
    fn run_periods(b: &mut B, packets: &[Option<(u32, bool)>], from: usize) -> (usize, usize) {
        let (mut late, mut played) = (0, 0);
        for (k, p) in packets.iter().enumerate() {
            if let Some((ts, marker)) = *p {
                let at = 1 + k as u64 * 20_000_000;
                match b.insert(ts, 160, marker, at, ts, &mut |_| {}) {
                    Insert::Late(_) if k >= from => late += 1,
                    _ => {}
                }
            }
            if let Next::Decode { .. } = b.next(160) {
                if k >= from {
                    played += 1;
                }
            }
        }
        (late, played)
    }

    /// 100 packets on time, `pause` frame periods without any, then 200 packets whose
    /// timestamps go on where they stopped (the first marked if `marker`).
    fn stream_paused(pause: usize, marker: bool) -> Vec<Option<(u32, bool)>> {
        let mut packets: Vec<Option<(u32, bool)>> =
            (0..100u32).map(|k| Some((160 * k, k == 0))).collect();
        packets.extend((0..pause).map(|_| None));
        packets.extend((0..200u32).map(|k| Some((160 * (100 + k), marker && k == 0))));
        packets
    }

    /// A sender on hold for 3 s whose timestamps stood still meanwhile (they resume one
    /// packet on, not 3 s on), with and without a marker on the first packet after it:
    /// the pause is no jitter. Before, the delay manager measured the resumed packets
    /// against the old timeline (3 s of extra relative delay, its running minimum rising
    /// 0.4 ms a packet), and the target sat at its maximum, 500 ms, for minutes.
    #[test]
    fn a_pause_whose_timestamps_stood_still_does_not_raise_the_target() {
        for marker in [true, false] {
            let mut b = B::new(JitterConfig::default());
            let (late, played) = run_periods(&mut b, &stream_paused(150, marker), 250);
            assert_eq!(late, 0, "marker {marker}");
            assert!(played >= 190, "marker {marker}: {played} played");
            assert!(
                b.delay().target_ms() <= 60,
                "marker {marker}: target {} ms",
                b.delay().target_ms()
            );
        }
    }

    /// A stream whose timestamps step 1 s back mid-call, same SSRC and sequence, no
    /// marker (an SBC or media server switching what it sends on one stream), every packet
    /// on time afterwards: the buffer follows the new timeline. Before, each packet was 1 s
    /// behind the playout point, inside the 3 s late window, and was dropped as late; the
    /// buffer, dry, moved its playout point on as fast as the packets came, so all were
    /// late for as long as the stream lasted.
    #[test]
    fn a_stream_that_steps_back_in_time_is_followed_not_dropped_as_late() {
        for back_ms in [600u32, 1000, 2500] {
            let mut b = B::new(JitterConfig::default());
            let back = back_ms * 8;
            let packets: Vec<Option<(u32, bool)>> = (0..400u32)
                .map(|k| {
                    let ts = if k < 100 {
                        160 * k
                    } else {
                        (160 * k).wrapping_sub(back)
                    };
                    Some((ts, k == 0))
                })
                .collect();
            let (late, played) = run_periods(&mut b, &packets, 100);
            // The switch costs some packets (those that arrive before the buffer gives
            // up on the old timeline: their lateness must have settled), not the rest of
            // the call.
            assert!(late <= 48, "{back_ms} ms back: {late} late");
            assert!(played >= 245, "{back_ms} ms back: {played} played of 300");
        }
    }

    /// A stream that jumps 0.5-1.5 s ahead mid-call with the marker bit, same SSRC, while
    /// its packets were coming (a source switched): the buffer goes to the new packets.
    /// Before, it concealed the jump frame by frame (14 frames at 500 ms ahead) and
    /// played what came after it that much later.
    #[test]
    fn a_marked_jump_ahead_while_packets_flow_is_followed_not_concealed() {
        for ahead_ms in [500u32, 1000, 1500] {
            let mut b = B::new(JitterConfig::default());
            let (mut concealed, mut played) = (0, 0);
            for k in 0..300u32 {
                let ts = if k < 100 {
                    160 * k
                } else {
                    160 * k + ahead_ms * 8
                };
                let at = 1 + u64::from(k) * 20_000_000;
                b.insert(ts, 160, k == 0 || k == 100, at, ts, &mut |_| {});
                match b.next(160) {
                    Next::Conceal { .. } if k >= 100 => concealed += 1,
                    Next::Decode { .. } if k >= 100 => played += 1,
                    _ => {}
                }
            }
            assert!(concealed <= 2, "{ahead_ms} ms ahead: {concealed} concealed");
            assert!(played >= 195, "{ahead_ms} ms ahead: {played} played of 200");
            assert!(
                b.held_ts() <= 160 * 8,
                "{ahead_ms} ms ahead: {} ts held",
                b.held_ts()
            );
        }
    }

    /// A 1 s stall whose backlog then drains at twice real time (two packets a period until
    /// it has caught up), arrival times real: the packets past their time are dropped as
    /// late and the buffer catches up; the run of late packets, arriving ever less late,
    /// does not restart the stream (which would re-anchor on a stale packet and add its
    /// lateness to the call's delay). A first, time-based version of the step-back rule
    /// restarted it here.
    #[test]
    fn a_backlog_draining_after_a_stall_is_not_taken_for_a_timeline_that_moved_back() {
        for per_period in [2u32, 4] {
            let mut b = B::new(JitterConfig::default());
            let (mut resynced, mut late, mut sent) = (0, 0, 0u32);
            for k in 0..400u32 {
                let at = 1 + u64::from(k) * 20_000_000;
                // Packets 0..100 on time; none during periods 100..150; then the backlog.
                let due = if k < 100 {
                    k + 1
                } else if k < 150 {
                    100
                } else {
                    (100 + (k - 149) * per_period).min(k + 1)
                };
                while sent < due {
                    match b.insert(160 * sent, 160, sent == 0, at, sent, &mut |_| {}) {
                        Insert::Resynced => resynced += 1,
                        Insert::Late(_) => late += 1,
                        _ => {}
                    }
                    sent += 1;
                }
                b.next(160);
            }
            assert_eq!(resynced, 0, "{per_period} a period");
            assert!(late >= 20, "{per_period} a period: {late} late");
        }
    }

    /// A 1.8 s pause (short of going idle) whose timestamps stood still, no marker after
    /// it: the relative delay jumps 1.8 s, past the largest target by more than 1 s, and
    /// the delay measurement starts over there instead of holding the target at its
    /// maximum. (The buffer, dry, takes the pause for a stall and skips ahead of the
    /// resumed packets; they are late until the step-back rule follows them, 16 packets.)
    #[test]
    fn a_pause_short_of_idle_whose_timestamps_stood_still_does_not_raise_the_target() {
        let mut b = B::new(JitterConfig::default());
        let (_, played) = run_periods(&mut b, &stream_paused(90, false), 190);
        assert!(played >= 175, "{played} played");
        assert!(
            b.delay().target_ms() <= 60,
            "target {} ms",
            b.delay().target_ms()
        );
    }

    /// Packets arriving in a burst after a stall, the oldest of them past their time: they
    /// are late and skipped (the buffer returns to its target), and the burst does not
    /// restart the stream (which would play the whole backlog late).
    #[test]
    fn a_burst_after_a_stall_drops_what_is_past_its_time_and_keeps_the_rest() {
        let mut b = B::new(JitterConfig::default());
        let mut late = 0;
        for k in 0..100u32 {
            b.insert(
                160 * k,
                160,
                k == 0,
                1 + u64::from(k) * 20_000_000,
                k,
                &mut |_| {},
            );
            b.next(160);
        }
        // 1 s without packets (50 periods), then the 50 held back at once.
        for _ in 0..50 {
            b.next(160);
        }
        let at = 1 + 150 * 20_000_000;
        for k in 100..150u32 {
            if let Insert::Late(_) = b.insert(160 * k, 160, false, at, k, &mut |_| {}) {
                late += 1;
            }
        }
        assert!(late >= 40, "{late} late of 50");
        assert!(b.held_ts() <= 160 * 10, "{} ts held", b.held_ts());
    }

    #[test]
    fn delay_target_follows_jitter_and_stays_in_bounds() {
        let mut d = DelayManager::new(JitterConfig::default());
        // Paced packets: target falls to the minimum.
        for k in 0..500u64 {
            d.update((160 * k) as u32, 1 + k * 20_000_000, 20.0);
        }
        assert_eq!(d.target_ms(), 20);
        // Every 5th packet 80 ms late: the 95% quantile reaches ~90 ms.
        let mut d = DelayManager::new(JitterConfig::default());
        for k in 0..2000u64 {
            let late = if k % 5 == 0 { 80_000_000 } else { 0 };
            d.update((160 * k) as u32, 1 + k * 20_000_000 + late, 20.0);
        }
        assert!(
            (80..=100).contains(&d.target_ms()),
            "target {}",
            d.target_ms()
        );
    }

    /// One stray packet whose timestamp lies 1 s ahead, no marker, in a steady stream: the
    /// target stays low. Before, it dragged the running minimum down 1 s and every later
    /// packet read as 1 s of jitter: the target went to its maximum for half a minute.
    /// Three in a row are a timeline that jumped ahead, measured from there.
    #[test]
    fn a_stray_packet_far_ahead_does_not_pin_the_target() {
        let mut d = DelayManager::new(JitterConfig::default());
        for k in 0..600u64 {
            let ts = if k == 100 { 160 * k + 8_000 } else { 160 * k };
            d.update(ts as u32, 1 + k * 20_000_000, 20.0);
        }
        assert!(d.target_ms() <= 60, "target {}", d.target_ms());
        // A timeline 1 s ahead from packet 700 on.
        for k in 600..1200u64 {
            let ts = if k < 700 { 160 * k } else { 160 * k + 8_000 };
            d.update(ts as u32, 1 + k * 20_000_000, 20.0);
        }
        assert!(d.target_ms() <= 60, "target {}", d.target_ms());
        assert!(d.last_jitter_ms() < 1.0, "{}", d.last_jitter_ms());
    }

    #[test]
    fn a_slow_sender_clock_does_not_inflate_the_target() {
        // Sender 1% slow: packets arrive 20.2 ms apart for 20 ms of media.
        let mut d = DelayManager::new(JitterConfig::default());
        for k in 0..30_000u64 {
            d.update((160 * k) as u32, 1 + k * 20_200_000, 20.0);
        }
        assert!(d.target_ms() <= 30, "target {}", d.target_ms());
    }

    type Played = (Vec<Option<u32>>, Vec<u32>);

    /// Plays `packets` 20 ms packets (8 kHz) sent every 20 ms and arriving `delay_ms(k)`
    /// later (`None`: lost), one `next` per 20 ms tick; returns per tick what the buffer
    /// said (`Some(k)`: decoded packet k, `None`: concealed or filled) and the packets
    /// handed back late.
    fn play(packets: u32, delay_ms: impl Fn(u32) -> Option<f64>) -> Played {
        let mut b = B::new(cfg());
        let mut arrivals: Vec<(f64, u32)> = (0..packets)
            .filter_map(|k| delay_ms(k).map(|d| (f64::from(k) * 20.0 + d, k)))
            .collect();
        arrivals.sort_by(|x, y| x.0.total_cmp(&y.0));
        let (mut out, mut late, mut next) = (Vec::new(), Vec::new(), 0);
        for tick in 0..packets + 40 {
            let now = f64::from(tick) * 20.0;
            while next < arrivals.len() && arrivals[next].0 <= now {
                let (at, k) = arrivals[next];
                let ns = (at * 1e6) as u64 + 1;
                if let Insert::Late(k) = b.insert(160 * k, 160, k == 0, ns, k, &mut no_release) {
                    late.push(k);
                }
                next += 1;
            }
            match b.next(160) {
                Next::Decode { item, .. } => out.push(Some(item)),
                Next::Conceal { .. } | Next::Empty { .. } => out.push(None),
                Next::Wait => {}
            }
        }
        (out, late)
    }

    #[test]
    fn an_early_delay_peak_is_settled_in_one_step_at_the_next_missing_packet() {
        // Packet 3 takes 100 ms more than the others: the 40 ms start-up delay is 60 ms
        // short. Packet 12 then comes 10 ms after its turn: instead of concealing it (and
        // discarding it when it comes), the buffer waits for it and grows the whole
        // shortfall at once.
        let (out, late) = play(60, |k| match k {
            3 => Some(105.0),
            12 => Some(50.0),
            _ => Some(5.0),
        });
        assert_eq!(late, vec![3], "only the peak itself is late");
        let at = out
            .iter()
            .position(|&p| p == Some(12))
            .expect("packet 12 plays");
        assert_eq!(out[at - 1], None);
        let gap = out[..at].iter().rev().take_while(|p| p.is_none()).count();
        assert!(
            (3..=4).contains(&gap),
            "one step of 60-80 ms, got {gap} frames"
        );
        // Before the step only packet 3 is missing; after it, every packet plays in order.
        assert_eq!(out[..at - gap].iter().filter(|p| p.is_none()).count(), 1);
        let after: Vec<u32> = out[at..].iter().map_while(|&p| p).collect();
        assert_eq!(after, (12..60).collect::<Vec<_>>());
    }

    /// One packet of the first second 900 ms late (past the 300 ms highest delay, short of
    /// restarting the delay measurement), then one 90 ms late: the start-up step, taken at
    /// that one, is no more than the highest delay allows. Before, it was the whole 900 ms
    /// (a 43-frame gap, the buffer overflowing while it waited, then seconds of sped-up
    /// speech to come back down).
    #[test]
    fn the_start_up_step_never_goes_past_the_highest_delay() {
        // (Room for 300 ms and the packets that come meanwhile, as the lane's buffers.)
        let mut b = AdaptiveBuffer::<u32, 32>::new(JitterConfig {
            max_delay_ms: 300,
            ..cfg()
        });
        let delay_ms = |k: u32| match k {
            5 => 905.0,
            60 => 95.0,
            _ => 5.0,
        };
        let mut arrivals: Vec<(f64, u32)> = (0..100u32)
            .map(|k| (f64::from(k) * 20.0 + delay_ms(k), k))
            .collect();
        arrivals.sort_by(|x, y| x.0.total_cmp(&y.0));
        let (mut out, mut released, mut next) = (Vec::new(), 0, 0);
        for tick in 0..140u32 {
            let now = f64::from(tick) * 20.0;
            while next < arrivals.len() && arrivals[next].0 <= now {
                let (at, k) = arrivals[next];
                let ns = (at * 1e6) as u64 + 1;
                b.insert(160 * k, 160, k == 0, ns, k, &mut |_| released += 1);
                next += 1;
            }
            out.push(match b.next(160) {
                Next::Decode { item, .. } => Some(item),
                _ => None,
            });
        }
        assert_eq!(released, 0, "the buffer overflowed while it waited");
        let at = out
            .iter()
            .position(|&p| p == Some(60))
            .expect("packet 60 plays");
        let gap = out[..at].iter().rev().take_while(|p| p.is_none()).count();
        assert!(
            (5..=15).contains(&gap),
            "a step of at most 300 ms, got {gap} frames"
        );
    }

    #[test]
    fn loss_without_jitter_never_grows_the_start_up_delay() {
        // Every 7th packet lost, the rest on time: each loss is one concealed frame in
        // place, never a wait (lost packets are not late ones).
        let (out, late) = play(60, |k| (k % 7 != 3).then_some(5.0));
        assert!(late.is_empty());
        let first = out.iter().position(Option::is_some).unwrap_or(0);
        for (i, p) in out[first..].iter().take(59).enumerate() {
            let k = i as u32;
            assert_eq!(*p, (k % 7 != 3).then_some(k), "frame {i}");
        }
    }
}
