//! RFC 3550 receiver statistics for one synchronisation source (SSRC).
//!
//! [`RtpReceiveStats`] is fed once per received RTP packet on the real-time thread and
//! keeps what an RTCP receiver report block (RFC 3550 §6.4.1) needs: the extended
//! highest sequence number, cumulative and interval loss, and interarrival jitter. It
//! also counts duplicates and reordered packets, which the report block does not carry
//! but an operator wants.
//!
//! # What is computed, and from which clause
//! - **Sequence validation** is RFC 3550 Appendix A.1 `update_seq()` with its constants
//!   ([`MIN_SEQUENTIAL`], [`MAX_DROPOUT`], [`MAX_MISORDER`]): a new source is on
//!   probation until [`MIN_SEQUENTIAL`] packets arrive in sequence; a jump of more than
//!   [`MAX_DROPOUT`] ahead (or more than [`MAX_MISORDER`] behind) is ignored unless the
//!   next packet follows it, in which case the sender is assumed to have restarted and
//!   the statistics restart from there ([`PacketClass::Resync`]).
//! - **Loss** is Appendix A.3: `expected = extended_max - base_seq + 1`,
//!   `lost = expected - received`, and the interval fraction in 8-bit fixed point.
//!   As RFC 3550 §6.4.1 says, `received` includes late and duplicate packets, so the
//!   cumulative loss can be negative.
//! - **Jitter** is Appendix A.8: `J += (|D| - J) / 16` with `D` the change in relative
//!   transit time, in RTP timestamp units, arrival times being converted to the RTP
//!   clock. It is kept in fixed point (1/256 timestamp unit) so that the
//!   nanosecond-to-clock conversion loses no precision and no floating point runs per
//!   packet.
//!
//! # Choices beyond the RFC
//! - As in A.1, the packets that validate a source are not counted (`init_seq()` runs on
//!   the packet that ends probation, and it counts only that one), so after a clean start
//!   of `n` packets [`RtpReceiveStats::received`] is `n - 1` and nothing is lost.
//! - Duplicates are detected with a 128-packet window of sequence numbers seen behind
//!   the highest one. A.1 accepts packets at most `MAX_MISORDER - 1` = 99 behind, so the
//!   window covers every packet A.1 counts; a packet that was seen there is a
//!   [`PacketClass::Duplicate`], one that was not is [`PacketClass::Reordered`].
//! - The loss pattern: a position still unreceived when the highest sequence number is
//!   [`LOSS_WINDOW`] (64) ahead of it is lost, and a [`LossObserver`] given to
//!   [`RtpReceiveStats::on_packet_observed`] learns of it then, in order and in runs
//!   (the input of RFC 3611 burst/gap metrics and of G.107's burst ratio). The check is
//!   one mask test per in-order packet; the observer is called only for losses and at a
//!   stream's end.
//! - [`RtpReceiveStats::distinct_lost`] counts the sequence numbers never received:
//!   A.3's loss with the current stream's duplicates added back.
//! - Jitter skips duplicates (a copy of an old packet would read as a large transit
//!   change) and packets A.1 ignores; after a resync the transit reference starts afresh
//!   so the sender's new timestamp base does not read as one huge jitter sample.
//!
//! Everything here is fixed-size, allocation-free and panic-free for every input.

/// RFC 3550 A.1 `MIN_SEQUENTIAL`: packets in sequence that end a source's probation.
pub const MIN_SEQUENTIAL: u32 = 2;
/// RFC 3550 A.1 `MAX_DROPOUT`: the largest forward jump still taken as loss, not restart.
pub const MAX_DROPOUT: u16 = 3000;
/// RFC 3550 A.1 `MAX_MISORDER`: how far behind the highest sequence number a packet may
/// arrive and still be counted as late rather than as a possible restart.
pub const MAX_MISORDER: u16 = 100;

/// RFC 3550 A.1 `RTP_SEQ_MOD`.
const RTP_SEQ_MOD: u32 = 1 << 16;
/// `bad_seq` value meaning "no pending restart" (A.1 `init_seq()` uses `RTP_SEQ_MOD + 1`
/// so that it can never equal a real sequence number).
const NO_BAD_SEQ: u32 = RTP_SEQ_MOD + 1;
/// Bits in the duplicate-detection window (`u128`).
const SEEN_WINDOW: u16 = 128;

/// How far behind the highest sequence number a position is classified for the loss
/// pattern ([`LossObserver`]): one not received by then is taken as lost. 64 packets
/// (1.28 s of 20 ms packets) is longer than any jitter buffer holds a packet, so a
/// packet later than that was lost to the listener anyway, and short enough that the
/// pattern follows the call closely.
pub const LOSS_WINDOW: u16 = 64;
// The in-order test reads the window's low word (`update_seq`).
const _: () = assert!(LOSS_WINDOW >= 1 && LOSS_WINDOW <= 64);

/// Learns which sequence positions of a stream were lost, in order, as they leave the
/// reorder window ([`LOSS_WINDOW`] packets behind the highest sequence number): the input
/// of burst and gap metrics (RFC 3611 §4.7.2) and of the E-model's burst ratio (G.107
/// BurstR), which the loss count alone cannot give. Fed by
/// [`RtpReceiveStats::on_packet_observed`] on the real-time thread: implementations must
/// not allocate, block or panic.
pub trait LossObserver {
    /// `n` consecutive positions of the current stream, the first at `first` (0: the
    /// stream's first expected packet), were not received by the time they left the
    /// window. Positions come in increasing order; those between were received.
    fn lost(&mut self, first: u64, n: u64);
    /// The current stream ended (an RFC 3550 A.1 restart, or a reset for a new SSRC) after
    /// `expected` positions, every one not reported lost received. The next stream's
    /// positions count from 0 again.
    fn stream_end(&mut self, expected: u64);
}

/// No observer: [`RtpReceiveStats::on_packet`].
impl LossObserver for () {
    fn lost(&mut self, _first: u64, _n: u64) {}
    fn stream_end(&mut self, _expected: u64) {}
}

/// Lost positions gathered into runs of consecutive ones for a [`LossObserver`].
struct Runs<'a, O: ?Sized> {
    loss: &'a mut O,
    /// The open run: first position and length.
    run: Option<(u64, u64)>,
}

impl<O: LossObserver + ?Sized> Runs<'_, O> {
    /// `n` lost positions from `at` (after every position pushed before).
    fn push(&mut self, at: u64, n: u64) {
        match &mut self.run {
            Some((first, len)) if first.saturating_add(*len) == at => *len = len.saturating_add(n),
            _ => {
                self.flush();
                self.run = Some((at, n));
            }
        }
    }

    /// Reports the open run.
    fn flush(&mut self) {
        if let Some((first, n)) = self.run.take() {
            self.loss.lost(first, n);
        }
    }
}
/// Transit times are kept modulo 2^32 RTP timestamp units (the timestamp's own modulus)
/// in 1/16 units, i.e. modulo 2^36.
const TRANSIT_BITS: u32 = 36;
const TRANSIT_MASK: u64 = (1 << TRANSIT_BITS) - 1;
const NANOS_PER_SECOND: u128 = 1_000_000_000;

/// How [`RtpReceiveStats::on_packet`] classified one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketClass {
    /// The packet advanced the highest sequence number (possibly across a gap, which is
    /// loss, or across the 65535 → 0 wrap). Counted in `received`. The packet that ends
    /// a new source's probation is also `InOrder`.
    InOrder,
    /// The packet arrived behind the highest sequence number (by fewer than
    /// [`MAX_MISORDER`]) and had not been seen before. Counted in `received`; it fills a
    /// hole that was being counted as loss.
    Reordered,
    /// The packet's sequence number was already received (within the 128-packet window).
    /// Counted in `received`, as RFC 3550 §6.4.1 requires, and in `duplicates`.
    Duplicate,
    /// The packet followed a large jump and confirmed it: per A.1 the sender restarted
    /// its sequence, and the loss statistics restart at this packet.
    Resync,
    /// Not counted: either the source is still on probation (A.1, the first packet of a
    /// source, or a source whose first packets were not in sequence), or the packet made
    /// a jump larger than [`MAX_DROPOUT`] that a following packet has yet to confirm.
    Probation,
}

impl PacketClass {
    /// Whether RFC 3550 A.1 counts this packet in `received` (every class but
    /// [`PacketClass::Probation`]).
    pub const fn is_counted(self) -> bool {
        !matches!(self, PacketClass::Probation)
    }
}

/// What a packet does to the A.8 jitter estimate.
#[derive(Clone, Copy, PartialEq, Eq)]
enum JitterStep {
    /// Leave the estimate and the transit reference alone.
    Skip,
    /// Take this packet's transit as the new reference without a jitter sample.
    Reference,
    /// A jitter sample against the previous transit, then take this one as reference.
    Sample,
}

/// RFC 3550 receive statistics for one SSRC: A.1 sequence validation, A.3 loss, A.8
/// jitter, plus duplicate and reordering counts.
///
/// Fixed-size (no heap), `O(1)` per packet, never panics. Built on the control plane with
/// [`RtpReceiveStats::new`], updated on the real-time thread by
/// [`RtpReceiveStats::on_packet`].
///
/// ```
/// use media_core::quality::rtp_stats::{PacketClass, RtpReceiveStats};
///
/// let mut stats = RtpReceiveStats::new(8000);
/// // 20 ms of G.711 per packet: 160 timestamp units, 20_000_000 ns.
/// for i in 0..10u16 {
///     if i == 5 { continue; } // lost
///     stats.on_packet(i, u32::from(i) * 160, u64::from(i) * 20_000_000);
/// }
/// assert_eq!(stats.cumulative_lost(), 1);
/// assert_eq!(stats.jitter_ts(), 0);
/// ```
#[derive(Debug, Clone)]
// `repr(C)`: the fields every packet reads and writes first, in the first 64 bytes
// ([`RtpReceiveStats::HOT_BYTES`]), the ones only sequence jumps and reports touch after
// them: a lane with thousands of sessions loads one cache line of these per packet, not two.
#[repr(C)]
pub struct RtpReceiveStats {
    // --- Read or written for every packet ---
    /// Bit `i` set: sequence number `max_seq - i` was received (beyond the RFC).
    seen: u128,
    /// A.1 `cycles`: sequence number wraps, shifted (a multiple of 65536). `u64` so it
    /// cannot overflow where A.1's `u_int32` would after 2^32 packets.
    cycles: u64,
    /// A.1 `received`.
    received: u64,
    /// A.8: previous relative transit time, in 1/16 timestamp units modulo 2^36.
    transit_q4: u64,
    /// A.8: interarrival jitter in 1/256 timestamp units.
    jitter_q8: u64,
    clock_rate_hz: u32,
    /// A.1 `probation`: sequential packets still needed before the source is valid.
    probation: u32,
    /// A.1 `max_seq`: highest sequence number seen.
    max_seq: u16,
    /// A.1 `base_seq`.
    base_seq: u16,
    /// Whether any packet was seen since construction or reset.
    started: bool,
    has_transit: bool,
    /// Run A.1 probation on a new source (false for a source known from signalling).
    validate: bool,
    // --- Sequence jumps, duplicates and reports only ---
    /// A.1 `bad_seq`: last "bad" sequence number + 1, or [`NO_BAD_SEQ`].
    bad_seq: u32,
    /// Duplicates of the current stream (since the last A.1 (re)start): what
    /// [`Self::distinct_lost`] adds back to A.3's loss. `u32` (saturating) in the padding
    /// beside `bad_seq`, so the statistics stay 112 bytes.
    stream_duplicates: u32,
    /// A.3 `expected_prior`.
    expected_prior: u64,
    /// A.3 `received_prior`.
    received_prior: u64,
    duplicates: u64,
    reordered: u64,
    resyncs: u64,
}

impl RtpReceiveStats {
    /// Bytes at the start of the statistics that an ordinary in-order packet reads or
    /// writes ([`Self::on_packet`], [`Self::expected`], [`Self::cumulative_lost`],
    /// [`Self::jitter_ts`]): what a caller walking many streams should prefetch.
    pub const HOT_BYTES: usize = std::mem::offset_of!(RtpReceiveStats, bad_seq);

    /// Statistics for a source whose RTP clock runs at `clock_rate_hz` (8000 for G.711
    /// and G.722 per RFC 3551, 48000 for Opus per RFC 7587). The clock rate only scales
    /// jitter; with `0` jitter is not computed and stays 0.
    pub const fn new(clock_rate_hz: u32) -> Self {
        Self {
            clock_rate_hz,
            started: false,
            max_seq: 0,
            cycles: 0,
            base_seq: 0,
            bad_seq: NO_BAD_SEQ,
            probation: MIN_SEQUENTIAL,
            received: 0,
            expected_prior: 0,
            received_prior: 0,
            transit_q4: 0,
            has_transit: false,
            jitter_q8: 0,
            seen: 0,
            duplicates: 0,
            reordered: 0,
            resyncs: 0,
            stream_duplicates: 0,
            validate: true,
        }
    }

    /// Statistics for a source already known from signalling (its session was negotiated
    /// and packets are demultiplexed to it by the transport): no A.1 probation, so the
    /// first packet is counted and reordering at the very start is classified instead of
    /// restarting validation. RFC 3550 §6.2.1 ties probation to sources first seen on the
    /// wire; a media gateway's sessions are signalled.
    pub const fn signalled(clock_rate_hz: u32) -> Self {
        let mut s = Self::new(clock_rate_hz);
        s.validate = false;
        s
    }

    /// The RTP clock rate given at construction (or by [`Self::set_clock_rate`]).
    pub const fn clock_rate_hz(&self) -> u32 {
        self.clock_rate_hz
    }

    /// The source goes on at another RTP clock (a re-INVITE changed its codec, e.g.
    /// PCMU to Opus): the jitter estimate is carried over in the new timestamp units and
    /// the next packet starts a new transit reference (the timestamps before and after do
    /// not compare); the sequence counters go on. No effect at the same rate.
    ///
    /// Called on the real-time thread: no allocation, no panic.
    pub fn set_clock_rate(&mut self, clock_rate_hz: u32) {
        if clock_rate_hz == self.clock_rate_hz {
            return;
        }
        self.jitter_q8 = match self.clock_rate_hz {
            0 => 0,
            old => (u128::from(self.jitter_q8) * u128::from(clock_rate_hz) / u128::from(old))
                .min(u128::from(u64::MAX)) as u64,
        };
        self.clock_rate_hz = clock_rate_hz;
        self.has_transit = false;
    }

    /// Accounts one received RTP packet: its sequence number, RTP timestamp, and arrival
    /// time in nanoseconds on any monotonic clock (only differences matter). Returns how
    /// RFC 3550 A.1 classified it.
    ///
    /// Called on the real-time thread: `O(1)`, no allocation, no panic for any input.
    pub fn on_packet(&mut self, seq: u16, rtp_ts: u32, arrival_ns: u64) -> PacketClass {
        self.on_packet_observed(seq, rtp_ts, arrival_ns, &mut ())
    }

    /// [`Self::on_packet`], telling `loss` which sequence positions of the stream left the
    /// reorder window unreceived (see [`LossObserver`]). `loss` is called only when a
    /// position leaves unreceived and when a stream ends (an A.1 restart), so an observer
    /// whose state is out of the per-packet cache lines costs nothing on a clean stream.
    pub fn on_packet_observed<O: LossObserver + ?Sized>(
        &mut self,
        seq: u16,
        rtp_ts: u32,
        arrival_ns: u64,
        loss: &mut O,
    ) -> PacketClass {
        let (class, step) = self.sequence(seq, loss);
        self.update_jitter(step, rtp_ts, arrival_ns);
        class
    }

    /// Counts a packet of the stream that carries no audio timing (an RFC 4733 event or
    /// RFC 3389 SID on the same SSRC shares the sequence space, so leaving it out would
    /// read as loss) without feeding the interarrival jitter, whose RTP timestamps an
    /// event repeats. Called on the real-time thread: `O(1)`, no allocation, no panic.
    pub fn on_sequence(&mut self, seq: u16) -> PacketClass {
        self.on_sequence_observed(seq, &mut ())
    }

    /// [`Self::on_sequence`] with a [`LossObserver`], as [`Self::on_packet_observed`].
    pub fn on_sequence_observed<O: LossObserver + ?Sized>(
        &mut self,
        seq: u16,
        loss: &mut O,
    ) -> PacketClass {
        let (class, step) = self.sequence(seq, loss);
        if step == JitterStep::Reference {
            // The stream restarted here: the next audio packet's transit is the new
            // reference (its timestamps may start anywhere), not a sample against the old
            // stream's.
            self.has_transit = false;
        }
        class
    }

    /// A.1 for one packet's sequence number: the first packet of a source, then
    /// `update_seq()`, and the class counters.
    fn sequence<O: LossObserver + ?Sized>(
        &mut self,
        seq: u16,
        loss: &mut O,
    ) -> (PacketClass, JitterStep) {
        if !self.started {
            // A.1: "init_seq(s, seq); s->max_seq = seq - 1; s->probation = MIN_SEQUENTIAL;"
            self.started = true;
            self.init_seq(seq);
            if !self.validate {
                self.probation = 0;
                self.received = 1;
                return (PacketClass::InOrder, JitterStep::Reference);
            }
            self.max_seq = seq.wrapping_sub(1);
            self.probation = MIN_SEQUENTIAL;
        }
        let (class, step) = self.update_seq(seq, loss);
        match class {
            PacketClass::Duplicate => {
                self.duplicates = self.duplicates.saturating_add(1);
                self.stream_duplicates = self.stream_duplicates.saturating_add(1);
            }
            PacketClass::Reordered => self.reordered = self.reordered.saturating_add(1),
            PacketClass::Resync => self.resyncs = self.resyncs.saturating_add(1),
            PacketClass::InOrder | PacketClass::Probation => {}
        }
        (class, step)
    }

    /// RFC 3550 A.1 `init_seq()`: the statistics restart with `seq` as base.
    fn init_seq(&mut self, seq: u16) {
        self.base_seq = seq;
        self.max_seq = seq;
        self.bad_seq = NO_BAD_SEQ;
        self.cycles = 0;
        self.received = 0;
        self.received_prior = 0;
        self.expected_prior = 0;
        // Not in A.1: the window restarts too (only this packet seen so far).
        self.seen = 1;
        self.stream_duplicates = 0;
    }

    /// RFC 3550 A.1 `update_seq()`, plus the duplicate window and the loss observer.
    fn update_seq<O: LossObserver + ?Sized>(
        &mut self,
        seq: u16,
        loss: &mut O,
    ) -> (PacketClass, JitterStep) {
        let udelta = seq.wrapping_sub(self.max_seq);
        if self.probation > 0 {
            // A.1: the source is not valid until MIN_SEQUENTIAL packets in sequence.
            if seq == self.max_seq.wrapping_add(1) {
                self.probation -= 1;
                self.max_seq = seq;
                if self.probation == 0 {
                    self.init_seq(seq);
                    self.received = self.received.saturating_add(1);
                    // The packet just before (the last probation one) was received too.
                    self.seen = 0b11;
                    return (PacketClass::InOrder, JitterStep::Sample);
                }
            } else {
                self.probation = MIN_SEQUENTIAL - 1;
                self.max_seq = seq;
            }
            return (PacketClass::Probation, JitterStep::Reference);
        }
        if udelta < MAX_DROPOUT {
            // A.1: in order, with permissible gap. `udelta == 0` also lands here in A.1
            // (and is counted); it is the highest packet again, i.e. a duplicate.
            self.received = self.received.saturating_add(1);
            if udelta == 0 {
                return (PacketClass::Duplicate, JitterStep::Skip);
            }
            if seq < self.max_seq {
                // A.1: sequence number wrapped, count another 64K cycle.
                self.cycles = self.cycles.saturating_add(u64::from(RTP_SEQ_MOD));
            }
            self.max_seq = seq;
            let before = self.seen;
            self.seen = if udelta >= SEEN_WINDOW {
                1
            } else {
                (before << udelta) | 1
            };
            // The positions that left the loss window: all received on a clean stream.
            // (The next in sequence, by far the commonest, moves one: bit 63, in the low
            // word.)
            let clean = match udelta {
                1 => ((before as u64) >> (LOSS_WINDOW - 1)) & 1 == 1,
                d if d <= LOSS_WINDOW => {
                    let leaving = ((1u128 << d) - 1) << (LOSS_WINDOW - d);
                    before & leaving == leaving
                }
                _ => false,
            };
            // (In a stream's first packets the positions leaving precede it: no loss.)
            if !clean && self.extended_max() >= u64::from(self.base_seq) + u64::from(LOSS_WINDOW) {
                self.classify_leaving(before, udelta, loss);
            }
            (PacketClass::InOrder, JitterStep::Sample)
        } else if u32::from(udelta) <= RTP_SEQ_MOD - u32::from(MAX_MISORDER) {
            // A.1: the sequence number made a very large jump.
            if u32::from(seq) == self.bad_seq {
                // A.1: two sequential packets; assume the other side restarted without
                // telling us, so just re-sync (treat this packet as the first one).
                self.end_stream(loss);
                self.init_seq(seq);
                self.received = self.received.saturating_add(1);
                // The packet that set `bad_seq` was received too.
                self.seen = 0b11;
                (PacketClass::Resync, JitterStep::Reference)
            } else {
                self.bad_seq = (u32::from(seq) + 1) & (RTP_SEQ_MOD - 1);
                (PacketClass::Probation, JitterStep::Skip)
            }
        } else {
            // A.1: duplicate or reordered packet, 1..MAX_MISORDER behind the highest.
            self.received = self.received.saturating_add(1);
            let behind = self.max_seq.wrapping_sub(seq);
            let bit = if behind < SEEN_WINDOW {
                1u128 << behind
            } else {
                0 // unreachable with MAX_MISORDER < SEEN_WINDOW; counted as reordered
            };
            if self.seen & bit != 0 {
                (PacketClass::Duplicate, JitterStep::Skip)
            } else {
                self.seen |= bit;
                (PacketClass::Reordered, JitterStep::Sample)
            }
        }
    }

    /// The stream position (0: its first expected packet) of the packet `behind` the
    /// highest sequence number, if it is one of the stream's (not before its start).
    fn position(&self, behind: u64) -> Option<u64> {
        self.extended_max()
            .checked_sub(behind)?
            .checked_sub(u64::from(self.base_seq))
    }

    /// The highest sequence number advanced by `udelta` from a window that was `before`:
    /// the positions that crossed [`LOSS_WINDOW`] unreceived, oldest first, in runs. Off
    /// the per-packet path: a clean stream never comes here.
    #[cold]
    fn classify_leaving<O: LossObserver + ?Sized>(
        &mut self,
        before: u128,
        udelta: u16,
        loss: &mut O,
    ) {
        let w = u64::from(LOSS_WINDOW);
        let d = u64::from(udelta);
        let mut runs = Runs { loss, run: None };
        // Old positions q in [max(0, w - d), w): now q + d behind.
        self.push_unreceived(before, w.saturating_sub(d)..w, d, &mut runs);
        // The gap's positions that went past the window at once (d - 1 down to w behind,
        // oldest first): never received.
        if d > w {
            let base = u64::from(self.base_seq);
            let newest = self.extended_max().saturating_sub(w);
            let oldest = self.extended_max().saturating_sub(d - 1).max(base);
            if oldest <= newest {
                runs.push(oldest - base, newest - oldest + 1);
            }
        }
        runs.flush();
    }

    /// The current stream ends (A.1 restart, or [`Self::reset_observed`]): every position
    /// still in the loss window is classified, then `loss` learns the stream's length.
    fn end_stream<O: LossObserver + ?Sized>(&mut self, loss: &mut O) {
        if !self.is_valid() {
            return;
        }
        let mut runs = Runs { loss, run: None };
        self.push_unreceived(self.seen, 0..u64::from(LOSS_WINDOW), 0, &mut runs);
        runs.flush();
        runs.loss.stream_end(self.expected());
    }

    /// Pushes to `runs` the positions of window `bits` whose bit `q` (for `q` in `qs`) is
    /// clear, each `q + shift` behind the highest sequence number, oldest (largest `q`)
    /// first; those before the stream's start are not its.
    fn push_unreceived<O: LossObserver + ?Sized>(
        &self,
        bits: u128,
        qs: std::ops::Range<u64>,
        shift: u64,
        runs: &mut Runs<'_, O>,
    ) {
        for q in qs.rev() {
            if bits & (1u128 << q) == 0 {
                if let Some(at) = self.position(q + shift) {
                    runs.push(at, 1);
                }
            }
        }
    }

    /// RFC 3550 A.8 interarrival jitter, in fixed point.
    fn update_jitter(&mut self, step: JitterStep, rtp_ts: u32, arrival_ns: u64) {
        if step == JitterStep::Skip || self.clock_rate_hz == 0 {
            return;
        }
        // A.8: "arrival" is the arrival time in RTP timestamp units. Convert in 1/16
        // units so the fraction survives; u128 holds 2^64 ns × 2^32 Hz × 16 exactly.
        let arrival_q4 = (u128::from(arrival_ns) * u128::from(self.clock_rate_hz) * 16
            / NANOS_PER_SECOND) as u64; // truncation keeps the low bits: only the value
                                        // modulo 2^36 matters below
        let transit = arrival_q4.wrapping_sub(u64::from(rtp_ts) << 4) & TRANSIT_MASK;
        if step == JitterStep::Sample && self.has_transit {
            // A.8: d = transit - s->transit; if (d < 0) d = -d; both modulo 2^32 units.
            let diff = transit.wrapping_sub(self.transit_q4) & TRANSIT_MASK;
            let d_q4 = if diff >= 1 << (TRANSIT_BITS - 1) {
                (1 << TRANSIT_BITS) - diff
            } else {
                diff
            };
            // A.8: s->jitter += d - ((s->jitter + 8) >> 4), here with J in 1/256 units
            // and d in 1/16 units, which is the same recurrence J += (|D| - J)/16.
            let decay = (self.jitter_q8.saturating_add(8)) >> 4;
            self.jitter_q8 = self.jitter_q8.saturating_sub(decay).saturating_add(d_q4);
        }
        self.transit_q4 = transit;
        self.has_transit = true;
    }

    /// Whether the source has passed A.1 probation (the counters below are meaningful).
    pub const fn is_valid(&self) -> bool {
        self.started && self.probation == 0
    }

    /// A.1 extended highest sequence number as a 64-bit value (cycles + max_seq).
    fn extended_max(&self) -> u64 {
        self.cycles.saturating_add(u64::from(self.max_seq))
    }

    /// RFC 3550 A.3: packets expected, `extended_max - base_seq + 1`; 0 while the source
    /// is on probation.
    pub fn expected(&self) -> u64 {
        if !self.is_valid() {
            return 0;
        }
        // extended_max >= base_seq: max_seq only moves forward from base_seq, and every
        // wrap adds 65536 to cycles.
        self.extended_max()
            .saturating_add(1)
            .saturating_sub(u64::from(self.base_seq))
    }

    /// RFC 3550 A.1 `received`: packets counted since the source became valid (or last
    /// resynchronised), including late and duplicate ones.
    pub const fn received(&self) -> u64 {
        self.received
    }

    /// RFC 3550 A.3 cumulative number of packets lost, `expected - received`. Negative
    /// when duplicates outnumber losses (RFC 3550 §6.4.1).
    pub fn cumulative_lost(&self) -> i64 {
        let expected = i64::try_from(self.expected()).unwrap_or(i64::MAX);
        let received = i64::try_from(self.received).unwrap_or(i64::MAX);
        expected.saturating_sub(received)
    }

    /// [`RtpReceiveStats::cumulative_lost`] clamped to the 24-bit signed field of the
    /// RTCP report block (RFC 3550 §6.4.1, A.3: `0x7fffff` / `-0x800000`).
    pub fn cumulative_lost_rtcp(&self) -> i32 {
        // The clamp makes the value fit in i32.
        self.cumulative_lost().clamp(-0x80_0000, 0x7f_ffff) as i32
    }

    /// Packets of the current stream never received: A.3's cumulative loss with the
    /// duplicates the window caught added back (A.3 counts a duplicate as received, so 3%
    /// loss beside 3% duplicates reads 0 there). Never negative: a packet from before the
    /// stream's first, arriving late, counts as received but was not expected.
    pub fn distinct_lost(&self) -> u64 {
        u64::try_from(
            self.cumulative_lost()
                .saturating_add(i64::from(self.stream_duplicates)),
        )
        .unwrap_or(0)
    }

    /// RFC 3550 A.3 fraction lost since the previous call (or since the source became
    /// valid), in 8-bit fixed point (lost × 256 / expected, 0 when nothing was lost or
    /// duplicates outnumber losses), then starts a new interval. This is the report
    /// block's "fraction lost"; call it once per RTCP report.
    ///
    /// Real-time safe: `O(1)`, no allocation, no panic.
    pub fn fraction_lost_since_last(&mut self) -> u8 {
        let expected = self.expected();
        let expected_interval = expected.saturating_sub(self.expected_prior);
        self.expected_prior = expected;
        let received_interval = self.received.saturating_sub(self.received_prior);
        self.received_prior = self.received;
        let lost_interval = expected_interval.saturating_sub(received_interval);
        if expected_interval == 0 || lost_interval == 0 {
            return 0;
        }
        // A.3: (lost_interval << 8) / expected_interval; lost <= expected so <= 256,
        // and 256 (nothing received) is clamped to the field's maximum.
        let fraction = (u128::from(lost_interval) << 8) / u128::from(expected_interval);
        fraction.min(255) as u8
    }

    /// RFC 3550 A.8 interarrival jitter in RTP timestamp units, truncated as A.8's
    /// `s->jitter >> 4` is: the report block's "interarrival jitter".
    pub fn jitter_ts(&self) -> u32 {
        u32::try_from(self.jitter_q8 >> 8).unwrap_or(u32::MAX)
    }

    /// RFC 3550 A.8 interarrival jitter in milliseconds (unrounded). 0 when the clock
    /// rate is 0.
    pub fn jitter_ms(&self) -> f64 {
        if self.clock_rate_hz == 0 {
            return 0.0;
        }
        self.jitter_q8 as f64 / 256.0 * 1000.0 / f64::from(self.clock_rate_hz)
    }

    /// Packets received more than once (within the 128-packet window), over the
    /// lifetime of this object (not reset by a resync).
    pub const fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Packets that arrived behind the highest sequence number without being duplicates,
    /// over the lifetime of this object (not reset by a resync).
    pub const fn reordered(&self) -> u64 {
        self.reordered
    }

    /// How many times A.1 resynchronised to a restarted sequence.
    pub const fn resyncs(&self) -> u64 {
        self.resyncs
    }

    /// RFC 3550 §6.4.1 "extended highest sequence number received": the cycle count in
    /// the high 16 bits and the highest sequence number in the low 16 (wrapping after
    /// 2^32 packets, as the 32-bit field does). 0 while the source is on probation.
    pub fn highest_seq_ext(&self) -> u32 {
        if !self.is_valid() {
            return 0;
        }
        self.extended_max() as u32 // wraps like the 32-bit report field
    }

    /// [`Self::reset`], first ending the stream for `loss` (its positions still in the
    /// loss window are classified).
    pub fn reset_observed<O: LossObserver + ?Sized>(&mut self, loss: &mut O) {
        self.end_stream(loss);
        self.reset();
    }

    /// Forgets everything, as if newly constructed with the same clock rate (e.g. when
    /// the SSRC changes).
    pub fn reset(&mut self) {
        let validate = self.validate;
        *self = Self::new(self.clock_rate_hz);
        self.validate = validate;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signalled_source_counts_from_the_first_packet_and_classifies_early_reordering() {
        let mut s = RtpReceiveStats::signalled(8000);
        for (i, k) in [0u16, 2, 1, 3, 5, 4, 7, 8].into_iter().enumerate() {
            s.on_packet(100 + k, 160 * u32::from(k), 1 + i as u64 * 20_000_000);
        }
        assert_eq!(s.received(), 8);
        assert_eq!(s.expected(), 9);
        assert_eq!(s.cumulative_lost(), 1);
        assert_eq!(s.reordered(), 2);
        s.reset();
        assert_eq!(
            s.on_packet(7, 0, 1),
            PacketClass::InOrder,
            "reset keeps the mode"
        );
    }

    const TS_20MS: u32 = 160;
    const NS_20MS: u64 = 20_000_000;

    /// Feeds `seqs` as a perfectly paced 8 kHz, 20 ms stream (timestamp and arrival
    /// derived from the sequence number itself).
    fn feed(stats: &mut RtpReceiveStats, seqs: &[u16]) -> Vec<PacketClass> {
        seqs.iter()
            .map(|&s| stats.on_packet(s, u32::from(s) * TS_20MS, u64::from(s) * NS_20MS))
            .collect()
    }

    #[test]
    fn two_sequential_packets_end_probation_and_the_first_is_not_counted() {
        let mut stats = RtpReceiveStats::new(8000);
        assert_eq!(stats.on_packet(100, 0, 0), PacketClass::Probation);
        assert!(!stats.is_valid());
        assert_eq!(stats.expected(), 0);
        assert_eq!(stats.highest_seq_ext(), 0);
        assert_eq!(stats.on_packet(101, 160, NS_20MS), PacketClass::InOrder);
        assert!(stats.is_valid());
        // A.1: init_seq() on the validating packet, which is the only one counted.
        assert_eq!(stats.received(), 1);
        assert_eq!(stats.expected(), 1);
        assert_eq!(stats.cumulative_lost(), 0);
        assert_eq!(stats.highest_seq_ext(), 101);
    }

    #[test]
    fn out_of_sequence_start_restarts_probation() {
        let mut stats = RtpReceiveStats::new(8000);
        assert_eq!(stats.on_packet(10, 0, 0), PacketClass::Probation);
        assert_eq!(stats.on_packet(12, 0, 0), PacketClass::Probation);
        assert_eq!(stats.on_packet(20, 0, 0), PacketClass::Probation);
        assert_eq!(stats.on_packet(21, 0, 0), PacketClass::InOrder);
        assert_eq!(stats.highest_seq_ext(), 21);
    }

    #[test]
    fn sequence_wrap_from_65535_to_0_adds_a_cycle() {
        let mut stats = RtpReceiveStats::new(8000);
        let classes = feed(&mut stats, &[65533, 65534, 65535, 0, 1, 2]);
        assert_eq!(classes[0], PacketClass::Probation);
        assert!(classes[1..].iter().all(|&c| c == PacketClass::InOrder));
        assert_eq!(stats.highest_seq_ext(), 65536 + 2);
        assert_eq!(stats.expected(), 5); // 65534 ..= 65536+2
        assert_eq!(stats.received(), 5);
        assert_eq!(stats.cumulative_lost(), 0);
    }

    #[test]
    fn loss_across_the_wrap_is_counted_once() {
        let mut stats = RtpReceiveStats::new(8000);
        feed(&mut stats, &[65530, 65531, 65532, 3, 4]); // 65533..=2 lost: 6 packets
        assert_eq!(stats.highest_seq_ext(), 65536 + 4);
        assert_eq!(stats.cumulative_lost(), 6);
    }

    #[test]
    fn reordered_packet_fills_its_hole_and_is_counted_as_reordered() {
        let mut stats = RtpReceiveStats::new(8000);
        let classes = feed(&mut stats, &[1, 2, 3, 5, 6, 4, 7]);
        assert_eq!(classes[5], PacketClass::Reordered);
        assert_eq!(stats.reordered(), 1);
        assert_eq!(stats.duplicates(), 0);
        assert_eq!(stats.cumulative_lost(), 0);
        assert_eq!(stats.highest_seq_ext(), 7);
    }

    #[test]
    fn reordering_across_the_wrap_keeps_the_cycle_count() {
        let mut stats = RtpReceiveStats::new(8000);
        let classes = feed(&mut stats, &[65533, 65534, 0, 65535, 1]);
        assert_eq!(classes[3], PacketClass::Reordered);
        assert_eq!(stats.highest_seq_ext(), 65536 + 1);
        assert_eq!(stats.cumulative_lost(), 0);
    }

    #[test]
    fn duplicates_of_the_highest_and_of_older_packets_are_detected() {
        let mut stats = RtpReceiveStats::new(8000);
        let classes = feed(&mut stats, &[1, 2, 3, 3, 4, 5, 2, 5, 4]);
        assert_eq!(classes[3], PacketClass::Duplicate); // highest again
        assert_eq!(classes[6], PacketClass::Duplicate); // older one again
        assert_eq!(classes[7], PacketClass::Duplicate);
        assert_eq!(classes[8], PacketClass::Duplicate);
        assert_eq!(stats.duplicates(), 4);
        assert_eq!(stats.reordered(), 0);
        // RFC 3550 §6.4.1: duplicates count as received, so loss goes negative.
        assert_eq!(stats.expected(), 4); // 2..=5
        assert_eq!(stats.received(), 8);
        assert_eq!(stats.cumulative_lost(), -4);
        assert_eq!(stats.cumulative_lost_rtcp(), -4);
    }

    #[test]
    fn a_reordered_packet_seen_twice_is_a_duplicate_the_second_time() {
        let mut stats = RtpReceiveStats::new(8000);
        let classes = feed(&mut stats, &[1, 2, 4, 3, 3]);
        assert_eq!(classes[3], PacketClass::Reordered);
        assert_eq!(classes[4], PacketClass::Duplicate);
    }

    #[test]
    fn late_packets_up_to_99_behind_are_counted_and_further_ones_are_not() {
        let mut stats = RtpReceiveStats::new(8000);
        let mut seqs: Vec<u16> = (1000..1200).collect();
        seqs.retain(|&s| s != 1101 && s != 1050);
        feed(&mut stats, &seqs);
        assert_eq!(stats.cumulative_lost(), 2);
        // 1101 is 98 behind 1199: late but counted.
        assert_eq!(stats.on_packet(1101, 0, 0), PacketClass::Reordered);
        // 1050 is 149 behind: A.1 treats it as a possible restart and ignores it.
        assert_eq!(stats.on_packet(1050, 0, 0), PacketClass::Probation);
        assert_eq!(stats.cumulative_lost(), 1);
    }

    #[test]
    fn huge_jump_resyncs_only_after_a_second_sequential_packet() {
        let mut stats = RtpReceiveStats::new(8000);
        feed(&mut stats, &[10, 11, 12, 13]);
        assert_eq!(stats.received(), 3);
        // Sender restarts at 40000: the first packet is held back ...
        assert_eq!(stats.on_packet(40000, 0, 0), PacketClass::Probation);
        assert_eq!(stats.highest_seq_ext(), 13);
        assert_eq!(stats.received(), 3);
        // ... and the next one in sequence confirms the restart (A.1 bad_seq).
        assert_eq!(stats.on_packet(40001, 160, NS_20MS), PacketClass::Resync);
        assert_eq!(stats.resyncs(), 1);
        assert_eq!(stats.highest_seq_ext(), 40001);
        assert_eq!(stats.received(), 1);
        assert_eq!(stats.expected(), 1);
        assert_eq!(stats.cumulative_lost(), 0);
        assert_eq!(
            stats.on_packet(40002, 320, 2 * NS_20MS),
            PacketClass::InOrder
        );
        // The packet that announced the restart was seen: its copy is a duplicate.
        assert_eq!(stats.on_packet(40000, 0, 0), PacketClass::Duplicate);
    }

    #[test]
    fn a_single_stray_packet_does_not_disturb_the_stream() {
        let mut stats = RtpReceiveStats::new(8000);
        feed(&mut stats, &[10, 11, 12]);
        assert_eq!(stats.on_packet(30000, 0, 0), PacketClass::Probation);
        let classes = feed(&mut stats, &[13, 14]);
        assert_eq!(classes, [PacketClass::InOrder, PacketClass::InOrder]);
        assert_eq!(stats.highest_seq_ext(), 14);
        assert_eq!(stats.cumulative_lost(), 0);
        assert_eq!(stats.resyncs(), 0);
    }

    #[test]
    fn backward_jump_beyond_misorder_also_needs_confirmation() {
        let mut stats = RtpReceiveStats::new(8000);
        feed(&mut stats, &[5000, 5001, 5002]);
        assert_eq!(stats.on_packet(100, 0, 0), PacketClass::Probation);
        assert_eq!(stats.on_packet(101, 0, 0), PacketClass::Resync);
        assert_eq!(stats.highest_seq_ext(), 101);
    }

    #[test]
    fn fraction_lost_covers_the_interval_since_the_previous_call() {
        let mut stats = RtpReceiveStats::new(8000);
        // Validated at 1; 2..=11 expected in the next interval, 9 and 10 lost.
        feed(&mut stats, &[0, 1]);
        assert_eq!(stats.fraction_lost_since_last(), 0);
        feed(&mut stats, &[2, 3, 4, 5, 6, 7, 8, 11]);
        assert_eq!(stats.fraction_lost_since_last(), (2 * 256 / 10) as u8); // 51
        feed(&mut stats, &[12, 13]);
        assert_eq!(stats.fraction_lost_since_last(), 0);
        // Reordered arrivals of 9 and 10 make the interval's loss negative: reported 0.
        feed(&mut stats, &[10, 9, 14]);
        assert_eq!(stats.fraction_lost_since_last(), 0);
        assert_eq!(stats.cumulative_lost(), 0);
        // No packet at all in an interval: nothing expected, fraction 0.
        assert_eq!(stats.fraction_lost_since_last(), 0);
    }

    #[test]
    fn fraction_lost_saturates_at_255() {
        let mut stats = RtpReceiveStats::new(8000);
        feed(&mut stats, &[0, 1]);
        stats.fraction_lost_since_last();
        // 2..=1001 expected, only 1001 received: 999/1000 lost.
        feed(&mut stats, &[1001]);
        assert_eq!(stats.fraction_lost_since_last(), 255);
    }

    #[test]
    fn perfectly_paced_stream_has_zero_jitter() {
        for (clock, ts_step, ns_step) in [
            (8000u32, 160u32, NS_20MS),
            (48000, 960, NS_20MS),
            (16000, 480, 30_000_000),
        ] {
            let mut stats = RtpReceiveStats::new(clock);
            // Arbitrary epoch-scale arrival clock and a timestamp base close to the
            // 32-bit wrap, so both wrap paths are exercised.
            let t0 = 1_700_000_000_123_456_789u64;
            let ts0 = u32::MAX - 10 * ts_step;
            for i in 0..1000u32 {
                stats.on_packet(
                    (60000 + i) as u16,
                    ts0.wrapping_add(i * ts_step),
                    t0 + u64::from(i) * ns_step,
                );
            }
            assert_eq!(stats.jitter_ts(), 0, "clock {clock}");
            assert_eq!(stats.jitter_ms(), 0.0, "clock {clock}");
        }
    }

    #[test]
    fn jitter_matches_a_hand_computation_of_rfc_3550_a8() {
        // Transit times (arrival in 8 kHz units minus timestamp) 0, 0, 40, 0, 0:
        // packet 2 arrives 5 ms late. A.8 in floating point, J += (|D| - J)/16:
        //   packet 1: D = 0              J = 0
        //   packet 2: D = 40             J = 40/16                = 2.5
        //   packet 3: D = 40             J = 2.5 + (40 - 2.5)/16  = 4.84375
        //   packet 4: D = 0              J = 4.84375 × 15/16      = 4.541015625
        // A.8's integer form (J×16 += D - ((J×16 + 8) >> 4)) gives 40, 77, 72 → 72>>4 = 4.
        let mut stats = RtpReceiveStats::new(8000);
        let arrivals_ms = [0u64, 20, 45, 60, 80];
        for (i, ms) in arrivals_ms.iter().enumerate() {
            stats.on_packet(i as u16, i as u32 * 160, ms * 1_000_000);
        }
        assert_eq!(stats.jitter_ts(), 4);
        let expected_ms = 4.541015625 / 8.0;
        assert!(
            (stats.jitter_ms() - expected_ms).abs() < 0.001,
            "{}",
            stats.jitter_ms()
        );
    }

    /// Packets 0..n of an 8 kHz stream, 20 ms apart, arriving alternately on time and
    /// 10 ms late: |D| = 80 units on every packet.
    fn feed_alternating_delay(stats: &mut RtpReceiveStats, n: u32) {
        for i in 0..n {
            let late_ns = if i % 2 == 1 { 10_000_000 } else { 0 };
            stats.on_packet(i as u16, i * 160, u64::from(i) * NS_20MS + late_ns);
        }
    }

    #[test]
    fn jitter_converges_to_the_mean_deviation_of_alternating_delay() {
        // J converges to 80 (10 ms at 8 kHz).
        let mut stats = RtpReceiveStats::new(8000);
        feed_alternating_delay(&mut stats, 500);
        assert!(
            (stats.jitter_ms() - 10.0).abs() < 0.01,
            "{}",
            stats.jitter_ms()
        );
        assert!((79..=80).contains(&stats.jitter_ts()));
    }

    #[test]
    fn a_clock_change_keeps_the_jitter_in_the_new_units_and_compares_no_timestamps_across_it() {
        // 10 ms of jitter at 8 kHz, then the source goes on at 48 kHz (a re-INVITE from
        // PCMU to Opus), its timestamps restarting elsewhere, arrivals on time.
        let mut stats = RtpReceiveStats::new(8000);
        feed_alternating_delay(&mut stats, 500);
        let before_ms = stats.jitter_ms();
        let expected_before = stats.expected();
        stats.set_clock_rate(48_000);
        assert_eq!(stats.clock_rate_hz(), 48_000);
        assert!(
            (stats.jitter_ms() - before_ms).abs() < 1e-9,
            "same time, new units"
        );
        assert!((479..=480).contains(&stats.jitter_ts()));
        let base = 7_777_777u32;
        for i in 500..520u32 {
            let k = i - 500;
            stats.on_packet(i as u16, base + k * 960, u64::from(i) * NS_20MS);
        }
        // On-time packets only decay it: no jump from comparing 8 kHz and 48 kHz
        // timestamps (one would add ~46 M units), nor from counting 48 kHz steps on the
        // 8 kHz clock (800 units a packet).
        let decayed = 480.0 * (15.0f64 / 16.0).powi(19);
        assert!(
            (f64::from(stats.jitter_ts()) - decayed).abs() < 2.0,
            "{} vs {decayed}",
            stats.jitter_ts()
        );
        assert_eq!(
            stats.expected(),
            expected_before + 20,
            "the sequence goes on"
        );
        // The same rate again changes nothing.
        let j = stats.jitter_ts();
        stats.set_clock_rate(48_000);
        assert_eq!(stats.jitter_ts(), j);
    }

    #[test]
    fn duplicates_and_resync_do_not_feed_jitter() {
        let mut stats = RtpReceiveStats::new(8000);
        feed(&mut stats, &[0, 1, 2, 3]);
        // A copy of packet 1 arriving much later.
        stats.on_packet(1, 160, 500 * NS_20MS);
        assert_eq!(stats.jitter_ts(), 0);
        // Sender restarts with a new sequence and timestamp base.
        stats.on_packet(30000, 123_456_789, 4 * NS_20MS);
        stats.on_packet(30001, 123_456_789 + 160, 5 * NS_20MS);
        stats.on_packet(30002, 123_456_789 + 320, 6 * NS_20MS);
        assert_eq!(stats.resyncs(), 1);
        assert_eq!(stats.jitter_ts(), 0);
    }

    #[test]
    fn zero_clock_rate_leaves_jitter_at_zero() {
        let mut stats = RtpReceiveStats::new(0);
        for i in 0..10u16 {
            stats.on_packet(i, u32::from(i) * 7919, u64::from(i) * 12_345_678);
        }
        assert_eq!(stats.jitter_ts(), 0);
        assert_eq!(stats.jitter_ms(), 0.0);
        assert_eq!(stats.received(), 9);
    }

    #[test]
    fn reset_forgets_everything_but_the_clock_rate() {
        let mut stats = RtpReceiveStats::new(48000);
        feed(&mut stats, &[1, 2, 2, 4, 3]);
        stats.reset();
        assert_eq!(stats.clock_rate_hz(), 48000);
        assert!(!stats.is_valid());
        assert_eq!(
            (stats.received(), stats.expected(), stats.duplicates()),
            (0, 0, 0)
        );
        assert_eq!(stats.on_packet(7, 0, 0), PacketClass::Probation);
    }

    #[test]
    fn arbitrary_input_never_panics_and_keeps_invariants() {
        // Deterministic xorshift stream of wild sequence numbers, timestamps and times.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for clock in [0u32, 1, 8000, 48000, u32::MAX] {
            let mut stats = RtpReceiveStats::new(clock);
            let mut seq = 0u16;
            for _ in 0..20_000 {
                let r = next();
                seq = match r % 8 {
                    0 => r as u16,                                  // anywhere
                    1 => seq.wrapping_sub((r >> 8) as u16 % 200),   // behind
                    2 => seq,                                       // duplicate
                    _ => seq.wrapping_add(1 + (r >> 8) as u16 % 3), // forward
                };
                stats.on_packet(seq, (r >> 16) as u32, next());
                let _ = stats.fraction_lost_since_last();
                let _ = (
                    stats.jitter_ms(),
                    stats.jitter_ts(),
                    stats.cumulative_lost_rtcp(),
                );
                assert!(stats.expected() <= u64::from(u32::MAX) * 2);
            }
        }
    }

    /// What a [`LossObserver`] was told.
    #[derive(Debug, Default)]
    struct Told {
        lost: Vec<(u64, u64)>,
        ends: Vec<u64>,
    }

    impl LossObserver for Told {
        fn lost(&mut self, first: u64, n: u64) {
            assert!(n > 0);
            if let Some(&(f, k)) = self.lost.last().filter(|r| r.0 != u64::MAX) {
                // In order; a run may go on in the next call (the caller joins them).
                assert!(f + k <= first, "runs out of order: {f}+{k} then {first}");
            }
            self.lost.push((first, n));
        }
        fn stream_end(&mut self, expected: u64) {
            self.ends.push(expected);
            self.lost.push((u64::MAX, 0)); // a marker: positions restart
        }
    }

    #[test]
    fn a_loss_is_reported_when_it_falls_out_of_the_window_and_a_clean_stream_reports_none() {
        let mut s = RtpReceiveStats::signalled(8000);
        let mut told = Told::default();
        let w = u64::from(LOSS_WINDOW);
        for k in 0..300u16 {
            if k != 10 {
                s.on_packet_observed(k, 0, 0, &mut told);
            }
            let expect: &[(u64, u64)] = if u64::from(k) >= 10 + w {
                &[(10, 1)]
            } else {
                &[]
            };
            assert_eq!(told.lost, expect, "after {k}");
        }
        // A packet reordered inside the window is never reported.
        let mut s = RtpReceiveStats::signalled(8000);
        let mut told = Told::default();
        for k in (0..300u16).map(|k| {
            if k % 7 == 3 {
                k + 2
            } else if k % 7 == 5 {
                k - 2
            } else {
                k
            }
        }) {
            s.on_packet_observed(k, 0, 0, &mut told);
        }
        s.reset_observed(&mut told);
        assert_eq!(told.lost, [(u64::MAX, 0)]);
        assert_eq!(told.ends, [300]);
    }

    #[test]
    fn a_jump_reports_the_window_and_the_gap_as_runs_and_a_restart_ends_the_stream() {
        let mut s = RtpReceiveStats::signalled(8000);
        let mut told = Told::default();
        // Start near the wrap: 65500, then 65501..=65530 with 65520..=65522 lost.
        let start = 65_500u16;
        for k in 0..31u16 {
            if !(20..=22).contains(&k) {
                s.on_packet_observed(start.wrapping_add(k), 0, 0, &mut told);
            }
        }
        assert!(told.lost.is_empty());
        // A jump of 200 (across the wrap): positions 31..=199 never came. Positions
        // 20..=22 leave the window with it, then the gap up to 64 behind the new highest.
        s.on_packet_observed(start.wrapping_add(230), 0, 0, &mut told);
        assert_eq!(told.lost, [(20, 3), (31, 230 - 64 - 31 + 1)]);
        // The rest of the gap is reported at the restart, with the stream's length.
        for k in [40_000u16, 40_001] {
            s.on_packet_observed(k, 0, 0, &mut told);
        }
        assert_eq!(
            told.lost,
            [(20, 3), (31, 136), (167, 63), (u64::MAX, 0)],
            "the gap's last 63 positions, then the end"
        );
        assert_eq!(told.ends, [231]);
        // The new stream counts from 0 at 40,001 (the packet that confirmed the restart;
        // A.1 does not count the one before): 40,002 is its position 1.
        for k in [40_003u16, 40_200] {
            s.on_packet_observed(k, 0, 0, &mut told);
        }
        assert_eq!(told.lost[4..], [(1, 1), (3, 199 - 64 - 3 + 1)]);
    }

    #[test]
    fn a_source_on_probation_reports_no_position_before_it_was_valid() {
        let mut s = RtpReceiveStats::new(8000);
        let mut told = Told::default();
        for k in (1000..1200u16).filter(|k| *k != 1100) {
            s.on_packet_observed(k, 0, 0, &mut told);
        }
        s.reset_observed(&mut told);
        // Probation took 1000; 1001 is position 0, so 1100 is position 99.
        assert_eq!(told.lost, [(99, 1), (u64::MAX, 0)]);
        assert_eq!(told.ends, [199]);
        // Resetting again ends nothing (no valid stream).
        s.reset_observed(&mut told);
        assert_eq!(told.ends, [199]);
    }

    /// Against a direct model: a position is lost when it has not arrived by the time the
    /// highest sequence number is [`LOSS_WINDOW`] ahead of it (or the stream ends).
    #[test]
    fn classification_matches_a_model_under_loss_bursts_reordering_and_duplicates() {
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..40 {
            let n = 3000u64;
            let start = (next() % 65_536) as u16;
            // (arrival key, position): position 0 first; others lost at 3% with bursts,
            // delayed by 0..=90 positions now and then, duplicated at 2%.
            let mut arrivals = vec![(0u64, 0u64)];
            let mut burst = 0;
            for p in 1..n {
                let r = next();
                if burst > 0 || r % 100 < 3 {
                    if burst == 0 && r % 3 == 0 {
                        burst = 1 + (r >> 8) % if round % 2 == 0 { 4 } else { 120 };
                    }
                    burst = burst.saturating_sub(1);
                    continue;
                }
                let delay = if (r >> 16) % 10 == 0 {
                    (r >> 24) % 91
                } else {
                    0
                };
                arrivals.push((4 * (p + delay) + 1, p));
                if (r >> 32) % 50 == 0 {
                    arrivals.push((4 * (p + delay) + 3, p));
                }
            }
            arrivals.sort();
            let mut s = RtpReceiveStats::signalled(8000);
            let mut told = Told::default();
            let mut arrived = vec![false; n as usize];
            let mut model = vec![false; n as usize]; // lost
            let mut max = 0u64;
            let w = u64::from(LOSS_WINDOW);
            for &(_, p) in &arrivals {
                s.on_packet_observed(start.wrapping_add(p as u16), 0, 0, &mut told);
                if p > max {
                    for q in (max + 1).saturating_sub(w)..(p + 1).saturating_sub(w) {
                        model[q as usize] = !arrived[q as usize];
                    }
                    max = p;
                }
                arrived[p as usize] = true;
            }
            for q in (max + 1).saturating_sub(w)..=max {
                model[q as usize] = !arrived[q as usize];
            }
            s.reset_observed(&mut told);
            assert_eq!(told.ends, [max + 1]);
            let mut reported = vec![false; n as usize];
            for &(f, k) in told.lost.iter().filter(|r| r.0 != u64::MAX) {
                for q in f..f + k {
                    assert!(!reported[q as usize], "position {q} reported twice");
                    reported[q as usize] = true;
                }
            }
            assert_eq!(
                reported[..=max as usize],
                model[..=max as usize],
                "round {round}"
            );
        }
    }

    #[test]
    fn distinct_loss_is_not_offset_by_duplicates() {
        let mut s = RtpReceiveStats::signalled(8000);
        // 100 packets, 3 lost and 3 others sent twice.
        for k in 0..100u16 {
            if [10, 40, 70].contains(&k) {
                continue;
            }
            s.on_packet(k, 0, 0);
            if [20, 50, 80].contains(&k) {
                s.on_packet(k, 0, 0);
            }
        }
        assert_eq!(s.cumulative_lost(), 0, "RFC 3550 A.3 counts the copies");
        assert_eq!(s.distinct_lost(), 3);
        // A restart starts the count over, duplicates too.
        s.on_packet(30_000, 0, 0);
        s.on_packet(30_001, 0, 0);
        s.on_packet(30_001, 0, 0);
        s.on_packet(30_003, 0, 0);
        assert_eq!((s.cumulative_lost(), s.distinct_lost()), (0, 1));
    }
}
