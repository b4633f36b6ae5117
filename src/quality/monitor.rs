//! Call quality as an operator reads it: per-session snapshots with an E-model MOS,
//! engine-wide aggregation, threshold events and adaptation suggestions.
//!
//! Everything here runs on the control plane from counter snapshots the lanes publish
//! (`SessionStats`, read through the seqlock modelled in `loom-tests/tests/stats.rs`), so
//! reading quality never stalls a lane.

use super::emodel::{mos_from_r, r_factor, CodecKind, EModelInput};
use super::xr::{
    rate_from_fraction, JitterBufferKind, LossPatternSnapshot, PlcKind, RxConfig, VoipMetrics,
    DEFAULT_GMIN,
};
use crate::runtime::stats::SessionStats;

/// Quality of one session's receive direction at one moment. The default is a session
/// that received nothing: zero counts, burst ratio 1 (random loss), R and MOS 0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QualitySnapshot {
    /// Packets received (RFC 3550 A.3, duplicates included).
    pub packets_received: u64,
    /// Every RTP packet the session was given: audio (`packets_received`), RFC 4733
    /// events, RFC 3389 SIDs and payload types it did not negotiate. What a media timeout
    /// ([`QualityThresholds::media_timeout_ms`]) watches: a peer in silence suppression
    /// sends SIDs only, one holding a key events only.
    pub packets_arrived: u64,
    /// Packets expected from the sequence range.
    pub packets_expected: u64,
    /// Packets lost in the network: sequence numbers never received (RFC 3550 A.3's
    /// count without the offset a duplicate would give it).
    pub packets_lost: u64,
    /// Network loss, percent of expected.
    pub loss_percent: f64,
    /// Packets that arrived too late to play.
    pub late_discards: u64,
    /// Duplicate packets: audio, and RFC 4733 event and RFC 3389 SID packets (which share
    /// the sequence space; `packets_received` counts audio only).
    pub duplicates: u64,
    /// Packets that arrived out of order (audio, event and SID packets).
    pub reordered: u64,
    /// RFC 3550 interarrival jitter, ms.
    pub jitter_ms: f64,
    /// Frames played (decoded or relayed, concealment included).
    pub frames_played: u64,
    /// Frames containing concealed audio.
    pub frames_concealed: u64,
    /// `frames_concealed / frames_played`.
    pub concealment_ratio: f64,
    /// Current jitter buffer level, ms.
    pub jb_current_ms: u32,
    /// Jitter buffer target delay, ms.
    pub jb_target_ms: u32,
    /// Round-trip time reported by the transport (RTCP), ms.
    pub round_trip_ms: Option<f64>,
    /// Estimated one-way mouth-to-ear delay used by the E-model, ms: packetisation,
    /// jitter buffer, half the round trip (or a 20 ms network assumption).
    pub one_way_delay_ms: f64,
    /// Loss as the listener experiences it (network loss + late discards), percent.
    pub effective_loss_percent: f64,
    /// The receive stream's loss pattern: RFC 3611 §4.7.2 burst and gap counts and the
    /// runs of consecutive losses, classified as sequence numbers fall 64 packets behind
    /// the newest (so the newest 1.28 s of a 20 ms stream are not in it yet). Network loss
    /// only: late discards are found after that window, by the jitter buffer. Default
    /// (empty) until [`Self::with_loss_pattern`].
    pub loss_pattern: LossPatternSnapshot,
    /// The E-model's burst ratio BurstR (G.107 §3.5) from `loss_pattern`: 1 for random
    /// loss, above 1 when losses come in bursts (which impair more than the same number
    /// spread out), below 1 when they are more spread out than random.
    pub burst_ratio: f64,
    /// ITU-T G.107 transmission rating.
    pub r_factor: f64,
    /// MOS-CQE estimate from R (G.107 Annex B).
    pub mos: f64,
    /// The E-model impairment class R and the MOS were computed for.
    pub codec: CodecKind,
    /// Echo return loss enhancement of the session's echo canceller, dB: the echo power
    /// it removes from the audio it receives, over the last whole second in which the
    /// audio it sends was active (capture over output energy, so near-end speech lowers
    /// it). `None` when the session cancels no echo, or before its canceller has measured
    /// a second. Not part of the E-model figures.
    pub echo_erle_db: Option<f64>,
}

impl Default for QualitySnapshot {
    fn default() -> Self {
        QualitySnapshot {
            packets_received: 0,
            packets_arrived: 0,
            packets_expected: 0,
            packets_lost: 0,
            loss_percent: 0.0,
            late_discards: 0,
            duplicates: 0,
            reordered: 0,
            jitter_ms: 0.0,
            frames_played: 0,
            frames_concealed: 0,
            concealment_ratio: 0.0,
            jb_current_ms: 0,
            jb_target_ms: 0,
            round_trip_ms: None,
            one_way_delay_ms: 0.0,
            effective_loss_percent: 0.0,
            loss_pattern: LossPatternSnapshot::default(),
            burst_ratio: 1.0,
            r_factor: 0.0,
            mos: 0.0,
            codec: CodecKind::default(),
            echo_erle_db: None,
        }
    }
}

impl QualitySnapshot {
    /// Computes a snapshot from a session's counters. `codec` selects the G.113 impairment
    /// values; `clock_rate_hz` converts jitter; `ptime_ms` is the packetisation delay.
    pub fn from_stats(
        s: &SessionStats,
        codec: CodecKind,
        clock_rate_hz: u32,
        ptime_ms: u32,
        round_trip_ms: Option<f64>,
    ) -> Self {
        let expected = s.rx_expected.max(s.rx_packets);
        let lost = s.rx_lost;
        let pct = |n: u64, d: u64| {
            if d == 0 {
                0.0
            } else {
                100.0 * n as f64 / d as f64
            }
        };
        let loss_percent = pct(lost, expected);
        let effective_loss_percent = pct(lost + s.rx_late, expected).min(100.0);
        let frames_played = s.frames_decoded + s.frames_relayed;
        let jitter_ms = s.rx_jitter_ts as f64 * 1000.0 / f64::from(clock_rate_hz.max(1));
        let network = round_trip_ms.map(|r| r / 2.0).unwrap_or(20.0);
        let one_way = f64::from(ptime_ms) + s.jb_level_ms as f64 + network;
        let input = EModelInput::for_codec(codec, effective_loss_percent, 1.0, one_way);
        let r = r_factor(&input);
        QualitySnapshot {
            loss_pattern: LossPatternSnapshot::default(),
            burst_ratio: 1.0,
            packets_received: s.rx_packets,
            packets_arrived: s.rx_packets
                + s.rx_dtmf_packets
                + s.rx_cn_packets
                + s.rx_unsupported_pt,
            packets_expected: expected,
            packets_lost: lost,
            loss_percent,
            late_discards: s.rx_late,
            duplicates: s.rx_duplicates + s.jb_duplicates,
            reordered: s.rx_reordered,
            jitter_ms,
            frames_played,
            frames_concealed: s.frames_concealed,
            concealment_ratio: if frames_played == 0 {
                0.0
            } else {
                s.frames_concealed as f64 / frames_played as f64
            },
            jb_current_ms: s.jb_level_ms as u32,
            jb_target_ms: s.jb_target_ms as u32,
            round_trip_ms,
            one_way_delay_ms: one_way,
            effective_loss_percent,
            r_factor: r,
            mos: mos_from_r(r),
            codec,
            echo_erle_db: None,
        }
    }

    /// The same session over the interval since `earlier` (an earlier snapshot of it):
    /// packet, loss, late-discard and frame counts are the interval's, and so are the loss
    /// percentages, the concealment ratio, the burst ratio, R and the MOS (from the
    /// interval's effective loss and loss runs and this snapshot's delay); jitter, jitter
    /// buffer, round trip, echo ERLE and the loss pattern's burst/gap counts are this
    /// snapshot's. `None` when a counter went backwards (not the same stream's counts).
    pub fn since(&self, earlier: &QualitySnapshot) -> Option<QualitySnapshot> {
        let d = |now: u64, then: u64| now.checked_sub(then);
        let expected = d(self.packets_expected, earlier.packets_expected)?;
        let received = d(self.packets_received, earlier.packets_received)?;
        let played = d(self.frames_played, earlier.frames_played)?;
        let concealed = d(self.frames_concealed, earlier.frames_concealed)?;
        let late = d(self.late_discards, earlier.late_discards)?;
        // The loss can fall (a packet long late fills its hole, after the earlier
        // snapshot counted it lost): clamped.
        let lost = self
            .packets_lost
            .saturating_sub(earlier.packets_lost)
            .min(expected);
        let pct = |n: u64| {
            if expected == 0 {
                0.0
            } else {
                (100.0 * n as f64 / expected as f64).min(100.0)
            }
        };
        let effective_loss_percent = pct(lost + late);
        let burst_ratio = self
            .loss_pattern
            .burst_ratio_since(&earlier.loss_pattern)
            .unwrap_or(self.burst_ratio);
        let input = EModelInput::for_codec(
            self.codec,
            effective_loss_percent,
            burst_ratio,
            self.one_way_delay_ms,
        );
        let r = r_factor(&input);
        Some(QualitySnapshot {
            burst_ratio,
            packets_received: received,
            packets_arrived: self.packets_arrived.saturating_sub(earlier.packets_arrived),
            packets_expected: expected,
            packets_lost: lost,
            loss_percent: pct(lost),
            late_discards: late,
            duplicates: self.duplicates.saturating_sub(earlier.duplicates),
            reordered: self.reordered.saturating_sub(earlier.reordered),
            frames_played: played,
            frames_concealed: concealed,
            concealment_ratio: if played == 0 {
                0.0
            } else {
                concealed as f64 / played as f64
            },
            effective_loss_percent,
            r_factor: r,
            mos: mos_from_r(r),
            ..*self
        })
    }

    /// The snapshot with the stream's loss pattern: its burst/gap counts (durations in
    /// packets of `ptime_ms`), and R and the MOS rated with its burst ratio.
    pub fn with_loss_pattern(self, pattern: &LossPatternSnapshot, ptime_ms: u32) -> Self {
        let mut loss_pattern = *pattern;
        loss_pattern.burst_gap.packet_duration_ms = ptime_ms.min(u32::from(u16::MAX)) as u16;
        let burst_ratio = pattern.burst_ratio();
        let r = r_factor(&EModelInput::for_codec(
            self.codec,
            self.effective_loss_percent,
            burst_ratio,
            self.one_way_delay_ms,
        ));
        QualitySnapshot {
            loss_pattern,
            burst_ratio,
            r_factor: r,
            mos: mos_from_r(r),
            ..self
        }
    }

    /// The values of an RTCP XR VoIP Metrics block (RFC 3611 §4.7) for this snapshot. The
    /// burst/gap fields come from the loss pattern (zero without one): network loss only
    /// (§4.7.2 counts discards too; late discards are found after the pattern's window)
    /// and up to its 64-packet window behind the newest, where the loss and discard rates
    /// count everything.
    pub fn voip_metrics(&self, jb_max_ms: u16) -> VoipMetrics {
        let expected = self.packets_expected.max(1) as f64;
        let bg = &self.loss_pattern.burst_gap;
        VoipMetrics {
            loss_rate: rate_from_fraction(self.packets_lost as f64 / expected),
            discard_rate: rate_from_fraction(self.late_discards as f64 / expected),
            round_trip_delay_ms: self
                .round_trip_ms
                .map(|r| r.clamp(0.0, 65535.0) as u16)
                .unwrap_or(0),
            end_system_delay_ms: (self.one_way_delay_ms
                - self.round_trip_ms.map(|r| r / 2.0).unwrap_or(20.0))
            .clamp(0.0, 65535.0) as u16,
            r_factor: super::xr::r_factor_field(self.r_factor),
            mos_cq_x10: super::xr::mos_field(self.mos),
            rx_config: RxConfig {
                plc: PlcKind::Enhanced,
                jitter_buffer: JitterBufferKind::Adaptive,
                jb_rate: 0,
            },
            jb_nominal_ms: self.jb_target_ms.min(65535) as u16,
            jb_maximum_ms: self.jb_current_ms.max(self.jb_target_ms).min(65535) as u16,
            jb_abs_max_ms: jb_max_ms,
            burst_density: bg.burst_density(),
            gap_density: bg.gap_density(),
            burst_duration_ms: bg.burst_duration_ms(),
            gap_duration_ms: bg.gap_duration_ms(),
            // A snapshot without a pattern keeps the block's default Gmin.
            gmin: if bg.gmin == 0 { DEFAULT_GMIN } else { bg.gmin },
            ..VoipMetrics::default()
        }
    }
}

/// Thresholds for quality events and adaptation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QualityThresholds {
    /// A session whose MOS falls below this raises [`QualityEvent::MosLow`].
    pub mos_low: f64,
    /// ... and clears when it rises above this (hysteresis).
    pub mos_recovered: f64,
    /// Loss (network + late, percent) above this raises [`QualityEvent::LossHigh`].
    pub loss_high_percent: f64,
    /// ... and clears below this.
    pub loss_recovered_percent: f64,
    /// A lane whose p99 tick time exceeds this fraction of its 10 ms budget is "near
    /// deadline" (suggest shedding work).
    pub lane_load_high: f64,
    /// Packets a session must have been expected to receive since its last judgement
    /// before the MOS and loss events judge it again, over those packets: the events
    /// follow the call's recent quality, not its average since it began (a long clean call
    /// would otherwise never raise an alarm for a bad minute, and an early burst would
    /// hold one long after it ended). 500: 10 s of 20 ms packets, where 1% random loss
    /// (5 expected) reaches the default 3% (16 lost) about once a day (Poisson tail
    /// 7·10⁻⁵ per window); 250 would cross it three times an hour.
    pub window_packets: u64,
    /// A session that has been given no RTP packet at all for this long (ms; judged by its
    /// lane's clock, at each poll) raises [`QualityEvent::MediaTimeout`], once, and
    /// [`QualityEvent::MediaResumed`] when packets come again. 0: off. Default 30,000: a
    /// stream that stops mid-call (a dead or unplugged phone, a NAT binding gone, a route
    /// change) or never starts (one-way audio: the peer's packets go elsewhere) is the
    /// commonest fault a gateway operator chases, and a call left up without media holds
    /// its resources and bills on; 30 s is longer than any silence a working peer leaves
    /// (comfort noise refreshes, RFC 6263 keepalives, RTCP aside). A leg the signalling put
    /// on hold with nothing to receive (`sendonly`, `inactive`) times out as well: the
    /// caller knows which legs those are.
    pub media_timeout_ms: u32,
}

impl Default for QualityThresholds {
    fn default() -> Self {
        QualityThresholds {
            mos_low: 3.6,
            mos_recovered: 3.8,
            loss_high_percent: 3.0,
            loss_recovered_percent: 1.0,
            lane_load_high: 0.7,
            window_packets: 500,
            media_timeout_ms: 30_000,
        }
    }
}

/// A threshold crossing, reported once per crossing (with hysteresis).
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum QualityEvent {
    /// MOS fell below `mos_low`.
    MosLow {
        /// Session (packed id, see `SessionId::to_u64`).
        session: u64,
        /// MOS now.
        mos: f64,
    },
    /// MOS is back above `mos_recovered`.
    MosRecovered {
        /// Session.
        session: u64,
        /// MOS now.
        mos: f64,
    },
    /// Loss rose above `loss_high_percent`.
    LossHigh {
        /// Session.
        session: u64,
        /// Effective loss, percent.
        loss_percent: f64,
    },
    /// Loss is back below `loss_recovered_percent`.
    LossRecovered {
        /// Session.
        session: u64,
        /// Effective loss, percent.
        loss_percent: f64,
    },
    /// The session has been given no RTP packet for `media_timeout_ms` (or since it was
    /// first polled, if it never had one): its stream stopped, or never reached us.
    MediaTimeout {
        /// Session.
        session: u64,
        /// How long it has had none, ms (at least `media_timeout_ms`; the poll's interval
        /// is the resolution).
        silent_ms: u64,
    },
    /// Packets reach a session that had timed out again.
    MediaResumed {
        /// Session.
        session: u64,
        /// How long it had none, ms (to the poll that saw packets again).
        silent_ms: u64,
    },
    /// A lane's p99 tick time exceeds `lane_load_high` of its budget.
    LaneNearDeadline {
        /// Lane.
        lane: usize,
        /// p99 tick time / tick budget.
        load: f64,
    },
}

/// A concrete change the engine can apply (through the lane's command ring) to improve a
/// session or protect a lane.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum QualityAdjustment {
    /// Change a session's jitter buffer bounds.
    JitterBounds {
        /// Session (packed id).
        session: u64,
        /// New minimum delay, ms.
        min_delay_ms: u32,
        /// New maximum delay, ms.
        max_delay_ms: u32,
    },
    /// Change an Opus sender's bitrate, in-band FEC and expected loss (from the loss its
    /// stream meets), or restore the negotiated settings.
    OpusEncoder {
        /// Session (packed id).
        session: u64,
        /// Target bitrate, bit/s.
        bitrate_bps: i32,
        /// In-band FEC (LBRR).
        inband_fec: bool,
        /// Expected packet loss, percent.
        packet_loss_percent: i32,
    },
    /// Change an Opus sender's complexity: lowered while its lane is near its deadline
    /// budget (Opus encoding is most of such a lane's work), restored when it is not.
    OpusComplexity {
        /// Session (packed id).
        session: u64,
        /// Complexity 0..=10.
        complexity: i32,
    },
}

/// Per-session hysteresis state.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SessionFlags {
    /// MOS currently below threshold.
    pub mos_low: bool,
    /// Loss currently above threshold.
    pub loss_high: bool,
    /// Late discards seen at the last poll (to spot rising late loss).
    pub late_seen: u64,
    /// Jitter bounds were widened.
    pub widened: bool,
    /// Packets expected and lost at the last suggestion pass (interval loss for Opus).
    pub expected_seen: u64,
    /// See `expected_seen`.
    pub lost_seen: u64,
    /// `expected_seen` and `lost_seen` are the peer's RTCP counters rather than those of
    /// the stream received: a change of source starts the interval over (the two count
    /// from different bases).
    pub loss_from_peer: bool,
    /// The expected-loss percent the Opus encoder was last set to for loss (`None`: the
    /// negotiated settings are in force).
    pub opus_loss_percent: Option<i32>,
    /// The Opus complexity was lowered for lane load.
    pub complexity_lowered: bool,
    /// The session's update count when its Opus flags were last valid: an update
    /// rebuilds the encoder with the negotiated settings, so the flags start over.
    pub updates_seen: u32,
    /// Where the events' current interval began: the snapshot of their last judgement
    /// (`None`: the session's start).
    pub judged: Option<QualitySnapshot>,
    /// Packets expected at the last suggestion pass (the late-discard rate's interval).
    pub adjust_expected_seen: u64,
    /// Packets expected when late discards were last seen (or the bounds widened): the
    /// bounds are restored after [`RESTORE_CLEAN_PACKETS`] more without one.
    pub late_free_since: u64,
}

impl SessionFlags {
    /// Starts [`suggest_opus`]'s next loss interval at these cumulative counters.
    pub fn start_loss_interval(&mut self, expected: u64, lost: u64) {
        self.expected_seen = expected;
        self.lost_seen = lost;
    }
}

/// Packets an interval of [`suggest`] holds at least (2 s of 20 ms packets) before it
/// judges the late-discard rate over it: one late packet in a short interval is no rate.
pub const LATE_INTERVAL_PACKETS: u64 = 100;

/// Packets without a late discard (10 s of 20 ms packets) after which widened jitter
/// buffer bounds are restored: longer than the interval they were widened on, so that a
/// network whose jitter comes in bursts does not flap them.
pub const RESTORE_CLEAN_PACKETS: u64 = 500;

/// Complexity an Opus sender runs at while its lane is near its deadline: libopus at 2
/// costs about half of 5 and keeps speech quality close (its SILK low-complexity modes).
pub const SHED_COMPLEXITY: i32 = 2;

/// Bitrate floor of the heavy-loss halving while FEC is on: at 48 kHz libopus leaves LBRR
/// out below about 20 kbit/s at 15-30% expected loss (measured in the codec tests: a lost
/// frame recovered at 22 dB SNR at 20 kbit/s, not at all at 16 or 12).
const FEC_MIN_BITRATE_BPS: i32 = 20_000;

/// Loss-driven Opus adaptation for one sender, with hysteresis: `lost`/`expected` are the
/// cumulative counters of the stream it *receives* on the same path (RFC 3550; a peer's
/// RTCP receiver report says the same of the stream it sends, when the transport has one),
/// so the interval since the last pass is what counts. At >= 2% loss over >= 50 packets:
/// FEC on, expected loss rounded up to 5% steps (at most 30%), at the negotiated bitrate;
/// at >= 15% the bitrate is halved (heavy loss is usually congestion, and FEC alone does
/// not help a full link), but not below 20 kbit/s, where libopus still has room for LBRR
/// (at 12 or 16 kbit/s it leaves FEC out just when the loss is heaviest). Never above the
/// negotiated bitrate, which holds the peer's `maxaveragebitrate` (RFC 7587 §6.1: the
/// most it wants to receive). Raised at once, lowered only
/// when the step would fall by 10 points, and the negotiated settings come back below 0.5%.
/// Counters that go backwards (a new SSRC's, or the counts of another source) start the
/// interval over from their new values instead of waiting until they pass the old ones.
pub fn suggest_opus(
    session: u64,
    expected: u64,
    lost: u64,
    flags: &mut SessionFlags,
    negotiated: &crate::codec::OpusSettings,
    out: &mut Vec<QualityAdjustment>,
) {
    if expected < flags.expected_seen {
        flags.start_loss_interval(expected, lost);
        return;
    }
    let d_expected = expected - flags.expected_seen;
    if d_expected < 50 {
        return; // a second of packets at least before judging
    }
    let d_lost = lost.saturating_sub(flags.lost_seen).min(d_expected);
    flags.start_loss_interval(expected, lost);
    let loss = 100.0 * d_lost as f64 / d_expected as f64;
    let step = (((loss / 5.0).ceil() * 5.0) as i32).clamp(5, 30);
    let settings = |percent: i32| {
        let cap = negotiated.bitrate_bps;
        let bitrate = if loss >= 15.0 {
            (cap / 2).max(FEC_MIN_BITRATE_BPS).min(cap)
        } else {
            cap
        };
        QualityAdjustment::OpusEncoder {
            session,
            bitrate_bps: bitrate,
            inband_fec: true,
            packet_loss_percent: percent,
        }
    };
    match flags.opus_loss_percent {
        None if loss >= 2.0 => {
            flags.opus_loss_percent = Some(step);
            out.push(settings(step));
        }
        Some(_) if loss < 0.5 => {
            flags.opus_loss_percent = None;
            out.push(QualityAdjustment::OpusEncoder {
                session,
                bitrate_bps: negotiated.bitrate_bps,
                inband_fec: negotiated.inband_fec,
                packet_loss_percent: negotiated.packet_loss_percent,
            });
        }
        Some(c) if loss >= 2.0 && (step > c || step + 10 <= c) => {
            flags.opus_loss_percent = Some(step);
            out.push(settings(step));
        }
        _ => {}
    }
}

/// Lane-load-driven complexity for one Opus sender, with hysteresis: lowered to
/// [`SHED_COMPLEXITY`] when its lane's load exceeds `high`, restored to the negotiated
/// complexity once the load is below 60% of `high`.
pub fn suggest_complexity(
    session: u64,
    lane_load: f64,
    high: f64,
    flags: &mut SessionFlags,
    negotiated: &crate::codec::OpusSettings,
    out: &mut Vec<QualityAdjustment>,
) {
    if !flags.complexity_lowered && lane_load > high && negotiated.complexity > SHED_COMPLEXITY {
        flags.complexity_lowered = true;
        out.push(QualityAdjustment::OpusComplexity {
            session,
            complexity: SHED_COMPLEXITY,
        });
    } else if flags.complexity_lowered && lane_load < 0.6 * high {
        flags.complexity_lowered = false;
        out.push(QualityAdjustment::OpusComplexity {
            session,
            complexity: negotiated.complexity,
        });
    }
}

/// Applies the hysteresis rules to one session; pushes crossing events. `now` is its
/// current (cumulative) snapshot; it is judged over the interval since the last judgement
/// ([`QualitySnapshot::since`] the snapshot kept in `flags`), once that interval holds
/// [`QualityThresholds::window_packets`] expected packets.
pub fn evaluate(
    t: &QualityThresholds,
    session: u64,
    now: &QualitySnapshot,
    flags: &mut SessionFlags,
    events: &mut Vec<QualityEvent>,
) {
    let Some(q) = now.since(&flags.judged.unwrap_or_default()) else {
        // Counters from another start (a re-created stream): judge from here on.
        flags.judged = Some(*now);
        return;
    };
    if q.packets_expected < t.window_packets.max(1) {
        return; // too few packets since the last judgement: wait for more
    }
    flags.judged = Some(*now);
    if !flags.mos_low && q.mos < t.mos_low {
        flags.mos_low = true;
        events.push(QualityEvent::MosLow {
            session,
            mos: q.mos,
        });
    } else if flags.mos_low && q.mos > t.mos_recovered {
        flags.mos_low = false;
        events.push(QualityEvent::MosRecovered {
            session,
            mos: q.mos,
        });
    }
    if !flags.loss_high && q.effective_loss_percent > t.loss_high_percent {
        flags.loss_high = true;
        events.push(QualityEvent::LossHigh {
            session,
            loss_percent: q.effective_loss_percent,
        });
    } else if flags.loss_high && q.effective_loss_percent < t.loss_recovered_percent {
        flags.loss_high = false;
        events.push(QualityEvent::LossRecovered {
            session,
            loss_percent: q.effective_loss_percent,
        });
    }
}

/// Suggests adjustments for one session with hysteresis: when late discards exceed 1% of
/// the packets expected since the last judgement (an interval of at least
/// [`LATE_INTERVAL_PACKETS`]), widen the minimum delay (late packets mean
/// the target is too tight for this network); once [`RESTORE_CLEAN_PACKETS`] more have been
/// expected without a late discard, restore. Network loss does not hold the wider bounds (a
/// deeper buffer does not help it). `q` is the session's current (cumulative) snapshot.
pub fn suggest(
    session: u64,
    q: &QualitySnapshot,
    flags: &mut SessionFlags,
    default_min_ms: u32,
    default_max_ms: u32,
    out: &mut Vec<QualityAdjustment>,
) {
    if q.packets_expected < flags.adjust_expected_seen || q.late_discards < flags.late_seen {
        // Counters from another start: count from here.
        flags.adjust_expected_seen = q.packets_expected;
        flags.late_seen = q.late_discards;
        flags.late_free_since = q.packets_expected;
        return;
    }
    let new_expected = q.packets_expected - flags.adjust_expected_seen;
    if new_expected < LATE_INTERVAL_PACKETS {
        return; // too few packets to judge a rate: the interval goes on
    }
    let new_late = q.late_discards - flags.late_seen;
    flags.late_seen = q.late_discards;
    flags.adjust_expected_seen = q.packets_expected;
    if new_late > 0 {
        flags.late_free_since = q.packets_expected;
    }
    if !flags.widened && new_late * 100 > new_expected {
        flags.widened = true;
        out.push(QualityAdjustment::JitterBounds {
            session,
            min_delay_ms: (q.jb_target_ms + 40).min(default_max_ms),
            max_delay_ms: default_max_ms,
        });
    } else if flags.widened && q.packets_expected - flags.late_free_since >= RESTORE_CLEAN_PACKETS {
        flags.widened = false;
        out.push(QualityAdjustment::JitterBounds {
            session,
            min_delay_ms: default_min_ms,
            max_delay_ms: default_max_ms,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(rx: u64, lost: u64, late: u64, played: u64, concealed: u64) -> SessionStats {
        SessionStats {
            rx_packets: rx,
            rx_expected: rx + lost,
            rx_lost: lost,
            rx_late: late,
            frames_decoded: played,
            frames_concealed: concealed,
            jb_level_ms: 40,
            jb_target_ms: 40,
            rx_jitter_ts: 80,
            ..Default::default()
        }
    }

    #[test]
    fn opus_loss_counters_that_go_backwards_start_the_interval_over() {
        let neg = crate::codec::OpusSettings::default();
        let mut f = SessionFlags::default();
        let mut out = Vec::new();
        suggest_opus(7, 5_000, 0, &mut f, &neg, &mut out);
        assert!(out.is_empty());
        // A new SSRC: its extended sequence numbers start far below the old ones. The
        // interval restarts there, judged at once on the next 100 packets (10% lost),
        // rather than only after 4,900 more packets pass the old count.
        suggest_opus(7, 100, 0, &mut f, &neg, &mut out);
        assert!(out.is_empty());
        assert_eq!((f.expected_seen, f.lost_seen), (100, 0));
        suggest_opus(7, 200, 10, &mut f, &neg, &mut out);
        assert_eq!(
            out,
            [QualityAdjustment::OpusEncoder {
                session: 7,
                bitrate_bps: neg.bitrate_bps,
                inband_fec: true,
                packet_loss_percent: 10,
            }]
        );
    }

    #[test]
    fn opus_loss_adaptation_raises_at_once_lowers_with_hysteresis_and_restores() {
        let neg = crate::codec::OpusSettings {
            inband_fec: false,
            packet_loss_percent: 0,
            ..Default::default()
        };
        let mut f = SessionFlags::default();
        let mut out = Vec::new();
        let mut step = |expected: u64, lost: u64, f: &mut SessionFlags| {
            out.clear();
            suggest_opus(7, expected, lost, f, &neg, &mut out);
            out.first().copied()
        };
        let enc = |b, fec, p| {
            Some(QualityAdjustment::OpusEncoder {
                session: 7,
                bitrate_bps: b,
                inband_fec: fec,
                packet_loss_percent: p,
            })
        };
        // Too few packets: no judgement, counters not consumed.
        assert_eq!(step(40, 20, &mut f), None);
        // 1% over 100 packets: below the 2% trigger.
        assert_eq!(step(100, 1, &mut f), None);
        // 3% (interval 100 -> 200): FEC on for 5%.
        assert_eq!(step(200, 4, &mut f), enc(24_000, true, 5));
        // 4% again: same step, nothing new.
        assert_eq!(step(300, 8, &mut f), None);
        // 12%: raised at once to 15%.
        assert_eq!(step(400, 20, &mut f), enc(24_000, true, 15));
        // 8% -> step 10: only 5 below 15, kept.
        assert_eq!(step(500, 28, &mut f), None);
        // 20%: congestion, bitrate lowered, but not below where FEC still fits.
        assert_eq!(step(600, 48, &mut f), enc(FEC_MIN_BITRATE_BPS, true, 20));
        // 3% -> step 5: 15 below, lowered.
        assert_eq!(step(700, 51, &mut f), enc(24_000, true, 5));
        // Clean: the negotiated settings come back.
        assert_eq!(step(800, 51, &mut f), enc(24_000, false, 0));
        assert_eq!(f.opus_loss_percent, None);
    }

    /// A peer's `maxaveragebitrate` below the FEC floor is never exceeded (RFC 7587 §6.1),
    /// at moderate or heavy loss. In review, 10 kbit/s became 16 and 12.
    #[test]
    fn opus_loss_adaptation_never_exceeds_the_negotiated_bitrate() {
        let neg = crate::codec::OpusSettings {
            bitrate_bps: 10_000,
            ..Default::default()
        };
        for lost in [5, 25] {
            let mut f = SessionFlags::default();
            let mut out = Vec::new();
            suggest_opus(7, 100, 0, &mut f, &neg, &mut out);
            suggest_opus(7, 200, lost, &mut f, &neg, &mut out);
            assert!(
                matches!(
                    out[..],
                    [QualityAdjustment::OpusEncoder {
                        bitrate_bps: 10_000,
                        inband_fec: true,
                        ..
                    }]
                ),
                "{lost}% lost: {out:?}"
            );
        }
    }

    #[test]
    fn opus_complexity_is_shed_on_a_hot_lane_and_restored_when_it_cools() {
        let neg = crate::codec::OpusSettings::default();
        let mut f = SessionFlags::default();
        let mut out = Vec::new();
        suggest_complexity(3, 0.5, 0.7, &mut f, &neg, &mut out);
        assert!(out.is_empty());
        suggest_complexity(3, 0.8, 0.7, &mut f, &neg, &mut out);
        assert_eq!(
            out.pop(),
            Some(QualityAdjustment::OpusComplexity {
                session: 3,
                complexity: SHED_COMPLEXITY
            })
        );
        // Between 60% of the threshold and the threshold: held.
        suggest_complexity(3, 0.5, 0.7, &mut f, &neg, &mut out);
        assert!(out.is_empty());
        suggest_complexity(3, 0.3, 0.7, &mut f, &neg, &mut out);
        assert_eq!(
            out.pop(),
            Some(QualityAdjustment::OpusComplexity {
                session: 3,
                complexity: neg.complexity
            })
        );
        // Already at or below the shed level: nothing to shed.
        let low = crate::codec::OpusSettings {
            complexity: 1,
            ..Default::default()
        };
        let mut f = SessionFlags::default();
        suggest_complexity(3, 0.9, 0.7, &mut f, &low, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn clean_g711_call_scores_above_four() {
        let q = QualitySnapshot::from_stats(
            &stats(1000, 0, 0, 1000, 0),
            CodecKind::G711Plc,
            8000,
            20,
            None,
        );
        assert!(q.mos > 4.2, "{}", q.mos);
        assert_eq!(q.loss_percent, 0.0);
        assert!((q.jitter_ms - 10.0).abs() < 1e-9);
    }

    #[test]
    fn loss_and_late_discards_lower_the_mos_and_raise_events_with_hysteresis() {
        let t = QualityThresholds::default();
        let mut flags = SessionFlags::default();
        let mut ev = vec![];
        let bad = QualitySnapshot::from_stats(
            &stats(900, 80, 20, 1000, 100),
            CodecKind::G711Plc,
            8000,
            20,
            Some(200.0),
        );
        assert!(bad.mos < 3.6, "{}", bad.mos);
        evaluate(&t, 1, &bad, &mut flags, &mut ev);
        assert_eq!(ev.len(), 2);
        evaluate(&t, 1, &bad, &mut flags, &mut ev);
        assert_eq!(ev.len(), 2, "no repeat while still bad");
        // 10,000 more packets with 5 lost (the counters go on from `bad`'s).
        let good = QualitySnapshot::from_stats(
            &stats(10_900, 85, 20, 11_000, 105),
            CodecKind::G711Plc,
            8000,
            20,
            None,
        );
        evaluate(&t, 1, &good, &mut flags, &mut ev);
        assert!(matches!(ev[2], QualityEvent::MosRecovered { .. }));
        assert!(matches!(ev[3], QualityEvent::LossRecovered { .. }));
    }

    #[test]
    fn events_follow_the_recent_interval_not_the_average_since_the_call_began() {
        let t = QualityThresholds::default();
        let mut flags = SessionFlags::default();
        let mut ev = vec![];
        let at = |rx, lost, played, concealed| {
            QualitySnapshot::from_stats(
                &stats(rx, lost, 0, played, concealed),
                CodecKind::G711Plc,
                8000,
                20,
                None,
            )
        };
        // 30 clean minutes.
        evaluate(&t, 1, &at(90_000, 0, 90_000, 0), &mut flags, &mut ev);
        assert!(ev.is_empty());
        // Then a minute with 10% lost: 0.3% of the whole call, but 10% of this minute.
        let bad = at(92_700, 300, 93_000, 300);
        assert!(bad.loss_percent < 0.5 && bad.mos > 4.0, "{bad:?}");
        evaluate(&t, 1, &bad, &mut flags, &mut ev);
        assert!(
            matches!(ev[..], [QualityEvent::MosLow { mos, .. }, QualityEvent::LossHigh { loss_percent, .. }]
                if mos < 3.6 && (loss_percent - 10.0).abs() < 1e-9),
            "{ev:?}"
        );
        // Under a window (500 packets) later: not judged yet, even though clean.
        evaluate(&t, 1, &at(92_900, 300, 93_200, 300), &mut flags, &mut ev);
        assert_eq!(ev.len(), 2);
        // A clean minute after it: both recover (the whole call is still at 0.3%).
        evaluate(&t, 1, &at(95_700, 300, 96_000, 300), &mut flags, &mut ev);
        assert!(
            matches!(
                ev[2..],
                [
                    QualityEvent::MosRecovered { .. },
                    QualityEvent::LossRecovered { .. }
                ]
            ),
            "{ev:?}"
        );
        // A re-created stream (counters from zero) is judged from its own start.
        evaluate(&t, 1, &at(100, 0, 100, 0), &mut flags, &mut ev);
        evaluate(&t, 1, &at(500, 100, 600, 100), &mut flags, &mut ev);
        assert!(matches!(ev[4], QualityEvent::MosLow { .. }), "{ev:?}");
    }

    #[test]
    fn an_interval_snapshot_counts_only_the_interval() {
        let a = QualitySnapshot::from_stats(
            &stats(1_000, 0, 0, 1_000, 0),
            CodecKind::G711Plc,
            8000,
            20,
            Some(100.0),
        );
        let b = QualitySnapshot::from_stats(
            &stats(1_900, 100, 20, 2_000, 100),
            CodecKind::G711Plc,
            8000,
            20,
            Some(100.0),
        );
        let iv = b.since(&a).unwrap();
        assert_eq!(
            (
                iv.packets_expected,
                iv.packets_lost,
                iv.late_discards,
                iv.frames_played
            ),
            (1_000, 100, 20, 1_000)
        );
        assert!((iv.loss_percent - 10.0).abs() < 1e-9);
        assert!((iv.effective_loss_percent - 12.0).abs() < 1e-9);
        assert!((iv.concealment_ratio - 0.1).abs() < 1e-9);
        assert_eq!(
            (iv.one_way_delay_ms, iv.round_trip_ms),
            (b.one_way_delay_ms, b.round_trip_ms)
        );
        // The interval's MOS is what a snapshot with only the interval's counts gives.
        let alone = QualitySnapshot::from_stats(
            &stats(900, 100, 20, 1_000, 100),
            CodecKind::G711Plc,
            8000,
            20,
            Some(100.0),
        );
        assert!(
            (iv.mos - alone.mos).abs() < 1e-12,
            "{} {}",
            iv.mos,
            alone.mos
        );
        assert!(iv.mos < b.mos);
        // Since itself: an empty interval; since a later snapshot: none.
        assert_eq!(b.since(&b).unwrap().packets_expected, 0);
        assert_eq!(a.since(&b), None);
    }

    #[test]
    fn rising_late_discards_widen_the_jitter_buffer_then_restore() {
        let mut flags = SessionFlags::default();
        let mut adj = vec![];
        let late = QualitySnapshot::from_stats(
            &stats(1000, 0, 30, 1000, 30),
            CodecKind::G711Plc,
            8000,
            20,
            None,
        );
        suggest(1, &late, &mut flags, 20, 500, &mut adj);
        assert_eq!(
            adj,
            vec![QualityAdjustment::JitterBounds {
                session: 1,
                min_delay_ms: 80,
                max_delay_ms: 500
            }]
        );
        suggest(1, &late, &mut flags, 20, 500, &mut adj);
        assert_eq!(adj.len(), 1, "no new late discards: no flapping");
        let clean = QualitySnapshot::from_stats(
            &stats(10_000, 0, 30, 10_000, 30),
            CodecKind::G711Plc,
            8000,
            20,
            None,
        );
        suggest(1, &clean, &mut flags, 20, 500, &mut adj);
        assert!(matches!(
            adj[1],
            QualityAdjustment::JitterBounds {
                min_delay_ms: 20,
                ..
            }
        ));
    }

    #[test]
    fn widened_bounds_come_back_after_a_clean_stretch_whatever_the_network_loss() {
        let mut f = SessionFlags::default();
        let mut adj = vec![];
        // rx, lost, late: cumulative counters, 2% network loss throughout.
        let at = |rx: u64, late: u64| {
            QualitySnapshot::from_stats(
                &stats(rx, rx / 49, late, rx, rx / 49),
                CodecKind::G711Plc,
                8000,
                20,
                None,
            )
        };
        // One late packet in 50: too short an interval to call it a rate; the interval
        // goes on, and over 200 packets the one is 0.5%: no widening.
        suggest(1, &at(49, 1), &mut f, 20, 500, &mut adj);
        suggest(1, &at(196, 1), &mut f, 20, 500, &mut adj);
        assert!(adj.is_empty(), "{adj:?}");
        // 5 late in the next 100: widened.
        suggest(1, &at(294, 6), &mut f, 20, 500, &mut adj);
        assert_eq!(adj.len(), 1);
        assert!(f.widened);
        // 400 clean packets later: still widened; 500: restored, under 2% network loss.
        suggest(1, &at(686, 6), &mut f, 20, 500, &mut adj);
        assert_eq!(adj.len(), 1);
        suggest(1, &at(784, 6), &mut f, 20, 500, &mut adj);
        assert_eq!(
            adj[1],
            QualityAdjustment::JitterBounds {
                session: 1,
                min_delay_ms: 20,
                max_delay_ms: 500
            }
        );
    }

    #[test]
    fn voip_metrics_carry_the_snapshot() {
        let q = QualitySnapshot::from_stats(
            &stats(900, 100, 0, 900, 100),
            CodecKind::G711Plc,
            8000,
            20,
            Some(100.0),
        );
        let m = q.voip_metrics(500);
        assert_eq!(m.loss_rate, 25); // 10% of 256, truncated (RFC 3611 §4.7.1)
        assert_eq!(m.round_trip_delay_ms, 100);
        assert_eq!(m.jb_abs_max_ms, 500);
        assert!(m.mos_cq_x10.is_some());
    }
}
