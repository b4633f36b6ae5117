//! Counters the lanes publish and the control plane reads without stopping them.
//!
//! Each counter has exactly one writing thread (the stage that owns the event), so
//! writers use plain `load` + `store` (no read-modify-write, no lock prefix). The
//! exceptions are three lane counters of rare faults that several stages (and the ingress
//! handle) report, `internal_ring_full`, `stage_backlog_drops` and `events_dropped`: their
//! writers use an atomic add ([`Counter::add_shared`]). Readers
//! load with `Relaxed`. Session counter blocks are reused when a session slot is
//! reused; a sequence word makes that safe to observe (a seqlock): the stage that
//! installs a new session writes an odd sequence, zeroes the block, then publishes
//! `2 * generation`. A snapshot is only returned if the sequence was even and equal to
//! `2 * generation` of the id asked for both before and after reading, so a reader never
//! sees another session's counts under its id. `loom-tests/tests/stats.rs` models it.

use super::sync::{fence, AtomicU64, Ordering};
use crate::quality::xr::LOSS_PATTERN_WORDS;

/// A single-writer monotonic counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// A zeroed counter.
    pub fn new() -> Self {
        Counter(AtomicU64::new(0))
    }

    /// Adds `n`. Only the counter's one writer thread may call this (it is a load and a
    /// store, not an atomic add). Real-time safe.
    #[inline]
    pub fn add(&self, n: u64) {
        let v = self.0.load(Ordering::Relaxed);
        self.0.store(v.wrapping_add(n), Ordering::Relaxed);
    }

    /// Adds one. Same single-writer rule as [`Counter::add`].
    #[inline]
    pub fn inc(&self) {
        self.add(1)
    }

    /// Adds `n` atomically, for a counter several threads write (a read-modify-write:
    /// kept to rare events). Real-time safe: lock-free, never blocks.
    #[inline]
    pub fn add_shared(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds one atomically; see [`Counter::add_shared`].
    #[inline]
    pub fn inc_shared(&self) {
        self.add_shared(1)
    }

    /// Raises the value to `v` if larger (a high-water mark). Single writer.
    #[inline]
    pub fn max(&self, v: u64) {
        if v > self.0.load(Ordering::Relaxed) {
            self.0.store(v, Ordering::Relaxed);
        }
    }

    /// Overwrites the value (a gauge). Single writer.
    #[inline]
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }

    /// Reads the value from any thread.
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

macro_rules! counter_block {
    ($(#[$m:meta])* $name:ident / $snap:ident { $($(#[$fm:meta])* $field:ident),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Default)]
        #[repr(C)]
        pub struct $name { $($(#[$fm])* pub $field: Counter,)* }

        /// A point-in-time copy of the counters.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct $snap { $($(#[$fm])* pub $field: u64,)* }

        impl $snap {
            /// Every field as `(name, value)`, in declaration order (for exporters).
            pub fn fields(&self) -> impl Iterator<Item = (&'static str, u64)> {
                [$((stringify!($field), self.$field),)*].into_iter()
            }
        }

        impl $name {
            /// Copies every counter (each read is atomic; the set is not a transaction).
            pub fn snapshot(&self) -> $snap {
                $snap { $($field: self.$field.get(),)* }
            }

            #[allow(dead_code)]
            fn zero(&self) {
                $(self.$field.set(0);)*
            }
        }
    };
}

counter_block! {
    /// Per-session counters. Each field is written by exactly one stage of the lane (a
    /// counter's add is a load and a store, so two writer threads, as in the split
    /// topology, would lose counts): where two stages see the same kind of event, each has
    /// its own field (`rx_duplicates` / `jb_duplicates`, `rx_resyncs` / `jb_resyncs`,
    /// `rx_undecodable` / `codec_errors`). Declared in groups by the stage that writes them
    /// every packet or frame, each group one cache line of the 64-byte aligned
    /// [`SessionCell`]: per packet or frame, the jitter and decode stages each dirty one
    /// line of their own, and the DSP and encode stages one line between them.
    SessionCounters / SessionStats {
        // Written by the jitter stage every packet (one line with the sequence word).
        /// Packets accepted into the jitter stage (includes zero-length keepalives).
        rx_packets,
        /// Payload bytes accepted.
        rx_payload_bytes,
        /// Packets expected from the extended sequence range (RFC 3550 A.3); gauge.
        rx_expected,
        /// Packets lost: sequence numbers of the session's streams never received (RFC 3550
        /// A.3's count, except that a duplicate does not offset a loss); gauge.
        rx_lost,
        /// RFC 3550 interarrival jitter in timestamp units; gauge.
        rx_jitter_ts,
        /// Packets that arrived out of order (RFC 3550 sequence tracking; audio, RFC 4733
        /// event and RFC 3389 SID packets, which share the sequence space).
        rx_reordered,
        /// Times the receive stream was resynchronised (SSRC change, or an RFC 3550 A.1
        /// sequence restart that an audio, RFC 4733 event or RFC 3389 SID packet
        /// confirmed; jitter stage).
        rx_resyncs,
        // Written by the decode stage, every frame.
        /// Jitter buffer target delay, ms; gauge.
        jb_target_ms,
        /// Jitter buffer current level (buffered + pending decoded audio), ms; gauge.
        jb_level_ms,
        /// Packets played into frames (a frame may hold several short packets or part of a
        /// long one): decoded, or, for a G.711 relay, taken as codes by the concealer (which
        /// decodes them only if a loss needs them). Undecoded Opus and G.722 relays, whose
        /// packets never reach a decoder or the concealer, are not counted.
        packets_decoded,
        /// Frames relayed without decoding (same codec both sides).
        frames_relayed,
        /// Frames produced from decoded audio (not relayed).
        frames_decoded,
        /// Samples removed by time compression (accelerate).
        samples_accelerated,
        /// Samples added by time expansion.
        samples_expanded,
        /// Packets that arrived after their audio was played or concealed.
        rx_late,
        // Written by the DSP and encode stages every frame (in the split topology two
        // threads share this line; each counter still has one writer).
        /// Frames run through the session's DSP chain (undecoded relays pass the DSP stage
        /// untouched and count in `frames_relayed` only).
        frames_processed,
        /// RTP packets produced for sending: audio, SID frames, keepalives and RFC 4733
        /// events (what an RTCP sender report counts).
        tx_packets,
        /// Payload bytes produced for sending (of the same packets).
        tx_payload_bytes,
        /// Encoder failures (encode stage).
        codec_errors,
        /// Packets not produced because the egress ring had no free slot.
        tx_egress_full,
        // Written on rarer events (concealment, errors, control) by any stage.
        /// Frames that contain concealed (or comfort noise) audio.
        frames_concealed,
        /// Samples synthesised by concealment or comfort noise.
        samples_concealed,
        /// Frame periods with nothing to play (no stream yet, prebuffering, or stopped).
        frames_missing,
        /// Zero-length payloads (keepalives): counted, never decoded.
        rx_empty_payloads,
        /// Packets whose payload type is not negotiated for this session.
        rx_unsupported_pt,
        /// Packets already seen by RFC 3550 sequence tracking (jitter stage; audio, RFC 4733
        /// event and RFC 3389 SID packets).
        rx_duplicates,
        /// Packets the jitter buffer already held or played that sequence tracking let
        /// through (decode stage; total duplicates = `rx_duplicates + jb_duplicates`).
        jb_duplicates,
        /// Times the jitter buffer re-anchored on a timestamp jump (decode stage).
        jb_resyncs,
        /// Packets whose payload the decoder could not size or decode (decode stage): a
        /// corrupt payload plays as concealment for its length. Also packets longer than
        /// the session takes (120 ms), dropped whole: their gap is concealed.
        rx_undecodable,
        /// RFC 4733 telephone-event packets received (routed to DTMF handling).
        rx_dtmf_packets,
        /// RFC 3389 comfort-noise (SID) packets received.
        rx_cn_packets,
        /// RFC 4733 telephone-event packets sent.
        tx_dtmf_packets,
        /// RFC 3389 comfort-noise SID frames sent: DTX's, keepalives', and those forwarded
        /// from the source of a stream relayed undecoded.
        tx_cn_packets,
        /// Frames not sent during a silence (DTX).
        frames_dtx,
        /// `send_dtmf` requests refused on the lane (a digit still being sent).
        tx_dtmf_refused,
        /// Packets dropped because the jitter buffer was full (oldest dropped).
        jb_overflows,
        /// Frames dropped because the frame slab was exhausted.
        slab_exhausted,
        /// Frames dropped because there was no peer to send them to.
        no_sink,
    }
}

counter_block! {
    /// Per-lane counters.
    LaneCounters / LaneStats {
        /// Ticks run.
        ticks,
        /// Ticks that finished after their deadline (the next tick's start).
        deadline_overruns,
        /// Ticks skipped entirely because the lane fell a whole period behind.
        ticks_skipped,
        /// Longest tick processing time seen, in nanoseconds.
        max_tick_ns,
        /// Processing time of the most recent tick, in nanoseconds.
        last_tick_ns,
        /// Packets for a session id that is not live on this lane.
        unknown_session,
        /// Packets that failed RTP parsing.
        malformed,
        /// Packets refused at the ingress handle because no packet slot was free.
        ingress_full,
        /// Packets refused at the ingress handle for exceeding `max_payload_bytes`.
        ingress_too_large,
        /// Packets refused at the ingress handle because their session sent faster than
        /// the engine's per-session `ingress_limit` (a flooding peer).
        ingress_rate_limited,
        /// Packets refused at the ingress handle because their id names no session live on
        /// this lane (destroyed, never created, another lane's): they take no packet slot.
        /// Packets for an unknown id that reach the lane anyway (pushed while the session
        /// was being created or destroyed) are counted in `unknown_session`.
        ingress_unknown,
        /// Audio packets of a second source (another SSRC) on a session, dropped until
        /// that source took over (two of its packets in a row, or one with the marker
        /// bit): forked early media, or two sources overlapping at a transfer; and RFC
        /// 4733 event packets of a source other than the one whose events are followed
        /// that start no event (jitter stage).
        foreign_ssrc_drops,
        /// Internal ring pushes that failed (a sizing bug if ever non-zero).
        internal_ring_full,
        /// Messages that hold no slab slot (concealment notices, digit reports, SID
        /// levels) not sent because a downstream stage was backed up or a peer flooded
        /// them: only the ring's headroom beyond the packets' and commands' is theirs.
        stage_backlog_drops,
        /// Events dropped because the event ring was full, or because the control plane
        /// already held 65,536 events nobody had polled (the oldest went, counted on the
        /// lane whose events were being taken in, whichever lane it came from).
        events_dropped,
        /// Frame slab slots currently free (gauge).
        frame_slots_free,
        /// Egress slots the encode stage keeps, unused, for its next packet (a period that
        /// sent nothing left it): 0 or 1 (gauge; free, as `EgressHandle::free_slots`
        /// counts it).
        egress_spare,
        /// Ingress packet slots free, as the transport's ingress handle last saw them
        /// (gauge, refreshed every 16 pushes and on every refusal for want of a slot).
        packet_slots_free,
        /// Packets dropped from a jitter buffer that held more than its session's share
        /// of the lane's packet slots while few were free (the oldest go; the session
        /// counts them in `jb_overflows` too).
        slot_share_drops,
        /// Commands applied (creates, updates, destroys, bridges).
        commands_applied,
        /// RTP keepalives sent (`MediaSessionParams::keepalive_ms`): packets of silence or
        /// comfort noise for sessions whose audio had no source for that long (encode
        /// stage; counted in the session's `tx_packets` too).
        keepalives_sent,
        // The application audio handle's (`integration::audio`). Lane totals, not per
        // session: a session's counter block is exactly five cache lines, the hot-state
        // budget's (2 KiB per session) last whole line.
        /// Frame periods in which a session attached to the application audio handle had
        /// no application frame to send, so sent nothing, once the application had
        /// written for it (a listen-only application counts none; decode stage).
        app_underruns,
        /// Application frames dropped by the lane: the session's queue was full (the
        /// application writes ahead of real time), the frame's length was not the
        /// session's frame, the session was detached or bridged, or a re-INVITE changed
        /// its codec or ptime with frames queued (decode stage).
        app_in_dropped,
        /// Application frames whose session id names no session of this lane by the time
        /// the lane took them (destroyed meanwhile): returned unused (decode stage).
        app_frames_unknown,
        /// Received frames of attached sessions not handed to the application because
        /// every application frame slot was taken (it does not read in time; encode
        /// stage).
        app_out_dropped,
    }
}

/// The session counter block with its reuse sequence word (see module docs). Aligned to a
/// cache line so the counter groups of [`SessionCounters`] fall on line boundaries.
#[derive(Debug, Default)]
#[repr(C, align(64))]
pub struct SessionCell {
    seq: AtomicU64,
    /// The counters.
    pub counters: SessionCounters,
}

impl SessionCell {
    /// Starts a new generation: zeroes the counters under an odd sequence, then publishes
    /// `2 * generation`. Called by the installing stage, when no other stage writes this
    /// block (slots are only reused after the previous session fully retired).
    pub fn begin_generation(&self, generation: u32) {
        self.begin_generation_with(generation, || {});
    }

    /// [`Self::begin_generation`], running `also` where the counters are zeroed: for state
    /// of the slot kept outside this block (its [`LossCell`]) that [`Self::read_with`]
    /// guards with the same sequence.
    pub fn begin_generation_with(&self, generation: u32, also: impl FnOnce()) {
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s | 1, Ordering::Relaxed);
        fence(Ordering::Release);
        self.counters.zero();
        also();
        self.seq
            .store(u64::from(generation) << 1, Ordering::Release);
    }

    /// Marks the block as not belonging to any live session.
    pub fn end_generation(&self) {
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s | 1, Ordering::Release);
    }

    /// Returns the counters if they still belong to `generation`.
    pub fn snapshot(&self, generation: u32) -> Option<SessionStats> {
        self.read_with(generation, || self.counters.snapshot())
    }

    /// Runs `read` (relaxed loads of this slot's counters, or of state
    /// [`Self::begin_generation_with`] zeroes with them) and returns what it read if the
    /// slot belonged to `generation` throughout.
    pub fn read_with<R>(&self, generation: u32, read: impl FnOnce() -> R) -> Option<R> {
        let want = u64::from(generation) << 1;
        let s1 = self.seq.load(Ordering::Acquire);
        if s1 != want {
            return None;
        }
        let value = read();
        fence(Ordering::Acquire);
        let s2 = self.seq.load(Ordering::Relaxed);
        (s2 == want).then_some(value)
    }
}

/// `N` words with one writer, published as a whole: a version word odd while the writer
/// stores (a seqlock), so a reader never takes half of one store and half of another.
/// `loom-tests/tests/stats.rs` models it.
#[derive(Debug)]
#[repr(C, align(64))]
pub struct SeqWords<const N: usize> {
    version: AtomicU64,
    words: [AtomicU64; N],
}

impl<const N: usize> Default for SeqWords<N> {
    fn default() -> Self {
        SeqWords {
            version: AtomicU64::new(0),
            words: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl<const N: usize> SeqWords<N> {
    /// Overwrites the words. Single writer. Real-time safe: stores only.
    pub fn store(&self, words: &[u64; N]) {
        let v = self.version.load(Ordering::Relaxed);
        self.version.store(v.wrapping_add(1) | 1, Ordering::Relaxed);
        fence(Ordering::Release);
        for (cell, &w) in self.words.iter().zip(words) {
            cell.store(w, Ordering::Relaxed);
        }
        self.version
            .store((v | 1).wrapping_add(1), Ordering::Release);
    }

    /// The words of one whole store (or the initial zeros); `None` if the writer was
    /// storing on each of `tries` attempts.
    pub fn load(&self, tries: usize) -> Option<[u64; N]> {
        for _ in 0..tries {
            let v1 = self.version.load(Ordering::Acquire);
            if v1 & 1 == 1 {
                super::sync::spin_loop();
                continue;
            }
            let words = std::array::from_fn(|i| self.words[i].load(Ordering::Relaxed));
            fence(Ordering::Acquire);
            if self.version.load(Ordering::Relaxed) == v1 {
                return Some(words);
            }
            super::sync::spin_loop();
        }
        None
    }
}

/// A session slot's receive loss pattern ([`crate::quality::xr::LossPattern`]): the
/// jitter stage stores it when a loss is classified or a stream ends (never per packet, so
/// it is not per-session hot state) and zeroes it in [`SessionCell::begin_generation_with`];
/// the control plane reads it whole ([`SeqWords::load`]) under that cell's sequence
/// ([`SessionCell::read_with`]), which tells it the slot's session.
pub type LossCell = SeqWords<LOSS_PATTERN_WORDS>;

/// Sub-buckets per power of two in [`TickHistogram`] (relative precision 1/16 ≈ 6%).
const SUB: usize = 16;
/// Buckets: values up to 2^44 ns (~4.9 hours) are distinguished.
const BUCKETS: usize = SUB * 42;

/// A log-linear histogram of tick processing times in nanoseconds, written by the lane's
/// ticking thread only (single writer, like [`Counter`]) and read by anyone. Recording is
/// two loads and two stores; no allocation after construction.
#[derive(Debug)]
pub struct TickHistogram {
    buckets: Box<[Counter]>,
    /// The values recorded, summed (a Prometheus summary's `_sum`).
    sum: Counter,
}

impl Default for TickHistogram {
    fn default() -> Self {
        TickHistogram {
            buckets: (0..BUCKETS).map(|_| Counter::new()).collect(),
            sum: Counter::new(),
        }
    }
}

fn bucket_of(v: u64) -> usize {
    if v < SUB as u64 {
        return v as usize;
    }
    let msb = 63 - v.leading_zeros() as usize; // >= 4
    let shift = msb - 4;
    let sub = ((v >> shift) as usize) & (SUB - 1);
    ((shift + 1) * SUB + sub).min(BUCKETS - 1)
}

/// The largest value that falls in bucket `i`.
fn bucket_high(i: usize) -> u64 {
    if i < SUB {
        return i as u64;
    }
    let shift = i / SUB - 1;
    let sub = (i % SUB) as u64;
    (((SUB as u64) | sub) << shift) + (1u64 << shift) - 1
}

impl TickHistogram {
    /// Records one value. Single writer. Real-time safe.
    #[inline]
    pub fn record(&self, ns: u64) {
        self.buckets[bucket_of(ns)].inc();
        self.sum.add(ns);
    }

    /// Copies the bucket counts (each read atomic).
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            counts: self.buckets.iter().map(|c| c.get()).collect(),
            sum: self.sum.get(),
        }
    }
}

/// A copy of a [`TickHistogram`], for percentiles and differences between two moments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistogramSnapshot {
    counts: Vec<u64>,
    sum: u64,
}

impl HistogramSnapshot {
    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The values recorded, summed (exact, unlike the quantiles).
    pub fn sum(&self) -> u64 {
        self.sum
    }

    /// The value at quantile `q` (0.0..=1.0), as the upper edge of its bucket (so an
    /// over-estimate by at most 1/16); 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        let total = self.count();
        if total == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return bucket_high(i);
            }
        }
        bucket_high(BUCKETS - 1)
    }

    /// The largest recorded value's bucket edge; 0 when empty.
    pub fn max(&self) -> u64 {
        self.counts
            .iter()
            .rposition(|&c| c > 0)
            .map(bucket_high)
            .unwrap_or(0)
    }

    /// What was recorded after `earlier` (both from the same histogram).
    pub fn since(&self, earlier: &HistogramSnapshot) -> HistogramSnapshot {
        HistogramSnapshot {
            counts: self
                .counts
                .iter()
                .zip(&earlier.counts)
                .map(|(a, b)| a.saturating_sub(*b))
                .collect(),
            sum: self.sum.saturating_sub(earlier.sum),
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_sums_exactly_what_it_recorded_and_its_difference_does_too() {
        let h = TickHistogram::default();
        for v in [1_000u64, 2_500, 3_333_333] {
            h.record(v);
        }
        let a = h.snapshot();
        assert_eq!((a.count(), a.sum()), (3, 3_336_833));
        h.record(7);
        let b = h.snapshot();
        assert_eq!((b.since(&a).count(), b.since(&a).sum()), (1, 7));
    }

    #[test]
    fn histogram_buckets_are_monotonic_and_within_six_percent() {
        let mut last = 0;
        for v in (0..2_000_000u64).step_by(37).chain([1 << 40, u64::MAX / 2]) {
            let b = bucket_of(v);
            assert!(b >= last || v > 1 << 43, "monotonic at {v}");
            last = b;
            let hi = bucket_high(b);
            if v < 1 << 43 {
                assert!(hi >= v, "{v} within bucket {b} (high {hi})");
                assert!(
                    (hi - v) as f64 <= v as f64 / 16.0 + 1.0,
                    "{v}: edge {hi} too far"
                );
            }
        }
    }

    #[test]
    fn quantiles_follow_recorded_values() {
        let h = TickHistogram::default();
        for v in 1..=1000u64 {
            h.record(v * 1000);
        }
        let s = h.snapshot();
        assert_eq!(s.count(), 1000);
        let p50 = s.quantile(0.5);
        assert!((500_000..=532_000).contains(&p50), "p50 {p50}");
        let p999 = s.quantile(0.999);
        assert!((999_000..=1_065_000).contains(&p999), "p99.9 {p999}");
        assert!(s.max() >= 1_000_000);
        h.record(5);
        assert_eq!(h.snapshot().since(&s).count(), 1);
    }
}
