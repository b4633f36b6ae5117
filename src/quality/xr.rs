//! RFC 3611 §4.7 VoIP Metrics Report Block (RTCP XR block type 7), and the §4.7.2
//! burst/gap classification that fills its loss fields.
//!
//! - [`VoipMetrics`] holds the block's fields in their wire units (8-bit fixed-point
//!   rates, milliseconds, MOS × 10, `None` for "127 = unavailable"), so that
//!   [`VoipMetrics::to_bytes`] and [`VoipMetrics::from_bytes`] round-trip exactly.
//!   Helpers convert from measured quantities: [`rate_from_counts`],
//!   [`rate_from_fraction`], [`r_factor_field`], [`mos_field`].
//! - [`BurstGapTracker`] is fed one outcome per expected packet (received, lost,
//!   discarded) on the real-time thread and yields the loss rate, discard rate, burst
//!   and gap densities and durations of §4.7.1–§4.7.2.
//!
//! # Burst/gap semantics (RFC 3611 §4.7.2, §4.7.6 Gmin)
//! A *burst* is the longest sequence that starts with a lost or discarded packet, does
//! not contain `Gmin` or more consecutive received (not discarded) packets, and ends with
//! a lost or discarded packet. *Gaps* are the periods between bursts (and before the first
//! and after the last). Within a gap every loss is therefore isolated, with at least
//! `Gmin` received packets before and after it (the Gmin description in §4.7.6; with
//! the recommended 16, a gap loses at most 1 packet in 17). The session is taken to be
//! preceded and followed by at least `Gmin` received packets, so a single loss never
//! forms a burst on its own.
//!
//! The tracker classifies exactly by this definition rather than estimating the same
//! quantities from the transition counts of the Markov model in RFC 3611 Appendix A.2:
//! it keeps the current loss *episode* (losses separated by fewer than `Gmin` received
//! packets) open until `Gmin` received packets close it; an episode with one loss is a
//! gap loss, one with two or more is a burst. A snapshot taken mid-episode classifies it
//! as if the stream continued cleanly, so losses within `Gmin` packets of a report may
//! be reclassified in a later report, as §4.7.6 warns.
//!
//! Durations count packet slots times the packet duration given at construction
//! (§4.7.2: a period lasts from its first packet's timestamp to its last packet's
//! timestamp plus that packet's duration).
//!
//! Everything here is fixed-size, allocation-free and panic-free for every input.

/// RFC 3611 §4.7: block type of the VoIP Metrics Report Block.
pub const BLOCK_TYPE: u8 = 7;
/// RFC 3611 §4.7: block length in 32-bit words minus one (the block is 9 words).
pub const BLOCK_LENGTH_WORDS: u16 = 8;
/// Size of the block on the wire, header included: 36 bytes.
pub const BLOCK_BYTES: usize = 36;
/// RFC 3611 §4.7.6: the recommended gap threshold Gmin.
pub const DEFAULT_GMIN: u8 = 16;
/// RFC 3611 §4.7.4–§4.7.5: the value of an 8-bit metric that is unavailable.
pub const UNAVAILABLE: u8 = 127;

/// RFC 3611 §4.7.1/§4.7.2 8-bit fixed-point rate `numerator / denominator` with the binary
/// point at the left edge: "multiplying the result of the division by 256, limiting the
/// maximum value to 255 (to avoid overflow), and taking the integer part". 0 when the
/// denominator is 0.
pub fn rate_from_counts(numerator: u64, denominator: u64) -> u8 {
    if denominator == 0 {
        return 0;
    }
    let scaled = (u128::from(numerator) << 8) / u128::from(denominator);
    scaled.min(255) as u8
}

/// [`rate_from_counts`] for a fraction already computed: `floor(fraction × 256)`, capped at
/// 255 (so 1.0 encodes as 255). Negative or NaN fractions encode as 0.
pub fn rate_from_fraction(fraction: f64) -> u8 {
    if fraction.is_nan() || fraction <= 0.0 {
        return 0;
    }
    // `as` saturates; the min makes 1.0 (256) the field's maximum 255.
    ((fraction * 256.0).floor() as u64).min(255) as u8
}

/// The fraction an 8-bit fixed-point rate field stands for (`value / 256`).
pub fn fraction_from_rate(rate: u8) -> f64 {
    f64::from(rate) / 256.0
}

/// RFC 3611 §4.7.5 R factor field for an E-model rating `r`: rounded and clamped to the
/// field's 0–100 range (the E-model's R can be slightly negative, and G.107's never
/// exceeds 100 for narrowband). `None` (sent as 127) for NaN.
pub fn r_factor_field(r: f64) -> Option<u8> {
    if r.is_nan() {
        return None;
    }
    Some(r.round().clamp(0.0, 100.0) as u8)
}

/// RFC 3611 §4.7.5 MOS-LQ / MOS-CQ field for a MOS on the 1–5 scale: MOS × 10, rounded
/// and clamped to the field's 10–50 range. `None` (sent as 127) for NaN.
pub fn mos_field(mos: f64) -> Option<u8> {
    if mos.is_nan() {
        return None;
    }
    Some((mos * 10.0).round().clamp(10.0, 50.0) as u8)
}

/// RFC 3611 §4.7.6 receiver configuration, packet loss concealment (PLC) bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PlcKind {
    /// `00`: unspecified.
    #[default]
    Unspecified = 0,
    /// `01`: disabled.
    Disabled = 1,
    /// `10`: enhanced.
    Enhanced = 2,
    /// `11`: standard.
    Standard = 3,
}

/// RFC 3611 §4.7.6 receiver configuration, jitter buffer adaptive (JBA) bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum JitterBufferKind {
    /// `00`: unknown.
    #[default]
    Unknown = 0,
    /// `01`: reserved by the RFC; carried so a received value round-trips.
    Reserved = 1,
    /// `10`: non-adaptive (fixed delay).
    NonAdaptive = 2,
    /// `11`: adaptive.
    Adaptive = 3,
}

/// RFC 3611 §4.7.6 "RX config" byte: `PLC (2 bits) | JBA (2 bits) | JB rate (4 bits)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct RxConfig {
    /// Packet loss concealment in use.
    pub plc: PlcKind,
    /// Whether the jitter buffer adapts.
    pub jitter_buffer: JitterBufferKind,
    /// Implementation-specific jitter-buffer adjustment rate, 0–15 (0 = unknown); only
    /// the low 4 bits are sent.
    pub jb_rate: u8,
}

impl RxConfig {
    /// The byte as sent.
    pub const fn to_byte(self) -> u8 {
        ((self.plc as u8) << 6) | ((self.jitter_buffer as u8) << 4) | (self.jb_rate & 0x0F)
    }

    /// Decodes the byte; every value is valid.
    pub const fn from_byte(byte: u8) -> Self {
        let plc = match byte >> 6 {
            1 => PlcKind::Disabled,
            2 => PlcKind::Enhanced,
            3 => PlcKind::Standard,
            _ => PlcKind::Unspecified,
        };
        let jitter_buffer = match (byte >> 4) & 0b11 {
            1 => JitterBufferKind::Reserved,
            2 => JitterBufferKind::NonAdaptive,
            3 => JitterBufferKind::Adaptive,
            _ => JitterBufferKind::Unknown,
        };
        Self {
            plc,
            jitter_buffer,
            jb_rate: byte & 0x0F,
        }
    }
}

/// Why [`VoipMetrics::from_bytes`] refused a buffer. Cheap to build; nothing allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum XrParseError {
    /// Fewer than 36 bytes. Recover: drop the block (a truncated RTCP packet).
    #[error("VoIP metrics block too short: {actual} bytes, need {expected}")]
    TooShort {
        /// 36.
        expected: usize,
        /// Bytes offered.
        actual: usize,
    },
    /// The block type is not 7. Recover: hand the block to the parser for its type.
    #[error("not a VoIP metrics block: block type {actual}")]
    WrongBlockType {
        /// The block type found.
        actual: u8,
    },
    /// Block type 7 with a length other than 8 words. Recover: skip the block by its
    /// length field, as RFC 3611 §3 allows for blocks a receiver cannot interpret.
    #[error("VoIP metrics block length {actual}, expected {expected}")]
    WrongBlockLength {
        /// 8.
        expected: u16,
        /// The length field found.
        actual: u16,
    },
}

/// The fields of an RFC 3611 §4.7 VoIP Metrics Report Block, in wire units.
///
/// Fields that RFC 3611 marks unavailable with the value 127 are `Option`s: `None` is
/// sent as 127, and a value outside the field's valid range is sent as 127 too, since
/// §4.7.5 forbids sending anything but 127 or a value in range, and requires a receiver
/// to ignore such values: they decode as `None`.
///
/// [`VoipMetrics::default`] is a block with nothing measured: zero rates, delays and
/// jitter-buffer sizes, every optional metric unavailable, Gmin 16.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VoipMetrics {
    /// §4.7.1 loss rate: fraction of packets lost since the start of reception (after
    /// any FEC), 8-bit fixed point (× 256, capped at 255). See [`rate_from_counts`].
    pub loss_rate: u8,
    /// §4.7.1 discard rate: fraction of packets discarded (late, early, jitter-buffer
    /// overflow) since the start of reception, same encoding.
    pub discard_rate: u8,
    /// §4.7.2 burst density: fraction of the packets within bursts that were lost or
    /// discarded, same encoding.
    pub burst_density: u8,
    /// §4.7.2 gap density: fraction of the packets within gaps that were lost or
    /// discarded, same encoding.
    pub gap_density: u8,
    /// §4.7.2 mean burst duration, ms; 0 when there was no burst.
    pub burst_duration_ms: u16,
    /// §4.7.2 mean gap duration, ms; 0 when there was no gap.
    pub gap_duration_ms: u16,
    /// §4.7.3 most recently measured round trip delay between RTP interfaces, ms (e.g.
    /// from RTCP LSR/DLSR); 0 when none was measured.
    pub round_trip_delay_ms: u16,
    /// §4.7.3 end system delay (jitter buffer, codec, packetisation), ms.
    pub end_system_delay_ms: u16,
    /// §4.7.4 signal level of speech, dB relative to 0 dBm0 (two's complement).
    pub signal_level_dbm0: Option<i8>,
    /// §4.7.4 silent-period noise level, dB relative to 0 dBm0 (two's complement).
    pub noise_level_dbm0: Option<i8>,
    /// §4.7.4 residual echo return loss (ERL + ERLE), dB.
    pub rerl_db: Option<u8>,
    /// §4.7.6 gap threshold used for the burst metrics (16 recommended).
    pub gmin: u8,
    /// §4.7.5 R factor of this RTP session, 0–100 (see [`r_factor_field`]).
    pub r_factor: Option<u8>,
    /// §4.7.5 external R factor: quality of a connected segment outside this session
    /// (e.g. the other leg of a gateway call), 0–100.
    pub ext_r_factor: Option<u8>,
    /// §4.7.5 MOS-LQ (listening quality) × 10, 10–50 (see [`mos_field`]).
    pub mos_lq_x10: Option<u8>,
    /// §4.7.5 MOS-CQ (conversational quality) × 10, 10–50.
    pub mos_cq_x10: Option<u8>,
    /// §4.7.6 receiver configuration byte.
    pub rx_config: RxConfig,
    /// §4.7.7 current nominal jitter buffer delay, ms.
    pub jb_nominal_ms: u16,
    /// §4.7.7 current maximum jitter buffer delay, ms.
    pub jb_maximum_ms: u16,
    /// §4.7.7 absolute maximum delay the adaptive jitter buffer can reach, ms.
    pub jb_abs_max_ms: u16,
}

impl Default for VoipMetrics {
    fn default() -> Self {
        Self {
            loss_rate: 0,
            discard_rate: 0,
            burst_density: 0,
            gap_density: 0,
            burst_duration_ms: 0,
            gap_duration_ms: 0,
            round_trip_delay_ms: 0,
            end_system_delay_ms: 0,
            signal_level_dbm0: None,
            noise_level_dbm0: None,
            rerl_db: None,
            gmin: DEFAULT_GMIN,
            r_factor: None,
            ext_r_factor: None,
            mos_lq_x10: None,
            mos_cq_x10: None,
            rx_config: RxConfig::default(),
            jb_nominal_ms: 0,
            jb_maximum_ms: 0,
            jb_abs_max_ms: 0,
        }
    }
}

/// An optional signed level; 127 and `None` both mean unavailable.
fn level_byte(level: Option<i8>) -> u8 {
    match level {
        Some(v) => v as u8, // two's complement, as §4.7.4 specifies
        None => UNAVAILABLE,
    }
}

/// An optional field with a valid range; anything else is sent as 127.
fn ranged_byte(value: Option<u8>, min: u8, max: u8) -> u8 {
    match value {
        Some(v) if (min..=max).contains(&v) => v,
        _ => UNAVAILABLE,
    }
}

/// A received field with a valid range; 127 and out-of-range values are `None`.
fn ranged_value(byte: u8, min: u8, max: u8) -> Option<u8> {
    (byte != UNAVAILABLE && (min..=max).contains(&byte)).then_some(byte)
}

impl VoipMetrics {
    /// Writes the 36-byte VoIP Metrics Report Block (RFC 3611 §4.7) for media source
    /// `ssrc` into `out`: BT = 7, reserved 0, block length 8, then the fields in network
    /// byte order. Unavailable or out-of-range optional metrics are written as 127.
    ///
    /// Real-time safe: writes only into `out`, no allocation, no panic.
    pub fn to_bytes(&self, ssrc: u32, out: &mut [u8; BLOCK_BYTES]) {
        out[0] = BLOCK_TYPE;
        out[1] = 0; // reserved
        out[2..4].copy_from_slice(&BLOCK_LENGTH_WORDS.to_be_bytes());
        out[4..8].copy_from_slice(&ssrc.to_be_bytes());
        // §4.7.1, §4.7.2
        out[8] = self.loss_rate;
        out[9] = self.discard_rate;
        out[10] = self.burst_density;
        out[11] = self.gap_density;
        out[12..14].copy_from_slice(&self.burst_duration_ms.to_be_bytes());
        out[14..16].copy_from_slice(&self.gap_duration_ms.to_be_bytes());
        // §4.7.3
        out[16..18].copy_from_slice(&self.round_trip_delay_ms.to_be_bytes());
        out[18..20].copy_from_slice(&self.end_system_delay_ms.to_be_bytes());
        // §4.7.4
        out[20] = level_byte(self.signal_level_dbm0);
        out[21] = level_byte(self.noise_level_dbm0);
        out[22] = self.rerl_db.unwrap_or(UNAVAILABLE);
        // §4.7.6
        out[23] = self.gmin;
        // §4.7.5: R 0–100, MOS × 10 in 10–50, else 127.
        out[24] = ranged_byte(self.r_factor, 0, 100);
        out[25] = ranged_byte(self.ext_r_factor, 0, 100);
        out[26] = ranged_byte(self.mos_lq_x10, 10, 50);
        out[27] = ranged_byte(self.mos_cq_x10, 10, 50);
        // §4.7.6, §4.7.7
        out[28] = self.rx_config.to_byte();
        out[29] = 0; // reserved
        out[30..32].copy_from_slice(&self.jb_nominal_ms.to_be_bytes());
        out[32..34].copy_from_slice(&self.jb_maximum_ms.to_be_bytes());
        out[34..36].copy_from_slice(&self.jb_abs_max_ms.to_be_bytes());
    }

    /// Parses a VoIP Metrics Report Block from the start of `block` (further bytes are
    /// ignored), returning the SSRC of the media source it reports on and its fields.
    /// Reserved bits are ignored; 127 and out-of-range optional metrics decode as `None`.
    pub fn from_bytes(block: &[u8]) -> Result<(u32, VoipMetrics), XrParseError> {
        let Some(b) = block.first_chunk::<BLOCK_BYTES>() else {
            return Err(XrParseError::TooShort {
                expected: BLOCK_BYTES,
                actual: block.len(),
            });
        };
        if b[0] != BLOCK_TYPE {
            return Err(XrParseError::WrongBlockType { actual: b[0] });
        }
        let length = u16::from_be_bytes([b[2], b[3]]);
        if length != BLOCK_LENGTH_WORDS {
            return Err(XrParseError::WrongBlockLength {
                expected: BLOCK_LENGTH_WORDS,
                actual: length,
            });
        }
        let u16_at = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
        let level = |byte: u8| (byte != UNAVAILABLE).then_some(byte as i8);
        let ssrc = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
        let metrics = VoipMetrics {
            loss_rate: b[8],
            discard_rate: b[9],
            burst_density: b[10],
            gap_density: b[11],
            burst_duration_ms: u16_at(12),
            gap_duration_ms: u16_at(14),
            round_trip_delay_ms: u16_at(16),
            end_system_delay_ms: u16_at(18),
            signal_level_dbm0: level(b[20]),
            noise_level_dbm0: level(b[21]),
            rerl_db: (b[22] != UNAVAILABLE).then_some(b[22]),
            gmin: b[23],
            r_factor: ranged_value(b[24], 0, 100),
            ext_r_factor: ranged_value(b[25], 0, 100),
            mos_lq_x10: ranged_value(b[26], 10, 50),
            mos_cq_x10: ranged_value(b[27], 10, 50),
            rx_config: RxConfig::from_byte(b[28]),
            jb_nominal_ms: u16_at(30),
            jb_maximum_ms: u16_at(32),
            jb_abs_max_ms: u16_at(34),
        };
        Ok((ssrc, metrics))
    }
}

/// What happened to one expected packet, as [`BurstGapTracker`] needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketFate {
    /// Received and played (not discarded).
    Received,
    /// Never arrived (after any repair such as FEC or retransmission).
    Lost,
    /// Arrived but was discarded (too late or early, jitter-buffer overflow). Duplicates
    /// are not discards (§4.7.1) and should not be reported at all.
    Discarded,
}

/// Counts behind the RFC 3611 §4.7.1–§4.7.2 loss and burst metrics, as classified at
/// [`BurstGapTracker::snapshot`] time. Methods give the block's encoded fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct BurstGapSnapshot {
    /// Gap threshold in use.
    pub gmin: u8,
    /// Packet duration used for the period durations, ms.
    pub packet_duration_ms: u16,
    /// Packets received and not discarded.
    pub received: u64,
    /// Packets lost.
    pub lost: u64,
    /// Packets discarded.
    pub discarded: u64,
    /// Number of burst periods.
    pub bursts: u64,
    /// Packet slots within bursts (received, lost and discarded).
    pub burst_packets: u64,
    /// Lost or discarded packets within bursts.
    pub burst_losses: u64,
    /// Number of gap periods (with at least one packet).
    pub gaps: u64,
    /// Packet slots within gaps.
    pub gap_packets: u64,
    /// Lost or discarded packets within gaps (each isolated).
    pub gap_losses: u64,
}

impl BurstGapSnapshot {
    /// Packets expected: every slot observed.
    pub fn expected(&self) -> u64 {
        self.received
            .saturating_add(self.lost)
            .saturating_add(self.discarded)
    }

    /// §4.7.1 loss rate field.
    pub fn loss_rate(&self) -> u8 {
        rate_from_counts(self.lost, self.expected())
    }

    /// §4.7.1 discard rate field.
    pub fn discard_rate(&self) -> u8 {
        rate_from_counts(self.discarded, self.expected())
    }

    /// §4.7.2 burst density field (0 without bursts).
    pub fn burst_density(&self) -> u8 {
        rate_from_counts(self.burst_losses, self.burst_packets)
    }

    /// §4.7.2 gap density field (0 without gaps).
    pub fn gap_density(&self) -> u8 {
        rate_from_counts(self.gap_losses, self.gap_packets)
    }

    /// §4.7.2 mean burst duration, ms (0 without bursts, capped at 65535).
    pub fn burst_duration_ms(&self) -> u16 {
        mean_duration_ms(self.burst_packets, self.bursts, self.packet_duration_ms)
    }

    /// §4.7.2 mean gap duration, ms (0 without gaps, capped at 65535).
    pub fn gap_duration_ms(&self) -> u16 {
        mean_duration_ms(self.gap_packets, self.gaps, self.packet_duration_ms)
    }

    /// Writes the §4.7.1–§4.7.2 fields and Gmin into `metrics`, leaving the others.
    pub fn apply_to(&self, metrics: &mut VoipMetrics) {
        metrics.loss_rate = self.loss_rate();
        metrics.discard_rate = self.discard_rate();
        metrics.burst_density = self.burst_density();
        metrics.gap_density = self.gap_density();
        metrics.burst_duration_ms = self.burst_duration_ms();
        metrics.gap_duration_ms = self.gap_duration_ms();
        metrics.gmin = self.gmin;
    }
}

/// `packets × packet_ms / periods`, floored, capped at the 16-bit field.
fn mean_duration_ms(packets: u64, periods: u64, packet_ms: u16) -> u16 {
    if periods == 0 {
        return 0;
    }
    let ms = u128::from(packets) * u128::from(packet_ms) / u128::from(periods);
    u16::try_from(ms).unwrap_or(u16::MAX)
}

/// RFC 3611 §4.7.2 burst/gap classifier (see the module docs), fed once per expected
/// packet in sequence order.
///
/// Fixed-size, `O(1)` per packet, never panics; counters saturate.
///
/// ```
/// use media_core::quality::xr::{BurstGapTracker, PacketFate::*, VoipMetrics};
///
/// let mut tracker = BurstGapTracker::new(16, 20);
/// for fate in [Received; 30].into_iter().chain([Lost, Received, Lost]).chain([Received; 30]) {
///     tracker.on_packet(fate);
/// }
/// let snap = tracker.snapshot();
/// assert_eq!((snap.bursts, snap.burst_packets, snap.burst_losses), (1, 3, 2));
/// let mut block = VoipMetrics::default();
/// snap.apply_to(&mut block);
/// assert_eq!(block.burst_density, 170); // 2/3 × 256
/// assert_eq!(block.burst_duration_ms, 60);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BurstGapTracker {
    /// Committed counts (everything before the open episode and pending run).
    done: BurstGapSnapshot,
    /// Received packets since the last loss (or the start), not yet classified.
    pending_received: u64,
    /// Losses in the open episode (0: none open).
    episode_losses: u64,
    /// Packet slots in the open episode, from its first loss to its last.
    episode_packets: u64,
    /// Whether the last committed period was a gap (a new gap starts otherwise).
    in_gap: bool,
}

impl Default for BurstGapTracker {
    /// Gmin 16 and 20 ms packets.
    fn default() -> Self {
        Self::new(DEFAULT_GMIN, 20)
    }
}

impl BurstGapTracker {
    /// A tracker with gap threshold `gmin` (RFC 3611 recommends 16; 0 is taken as 1, the
    /// smallest meaningful threshold) for packets of `packet_duration_ms` each (frame
    /// duration × frames per packet).
    pub const fn new(gmin: u8, packet_duration_ms: u16) -> Self {
        let gmin = if gmin == 0 { 1 } else { gmin };
        Self {
            done: BurstGapSnapshot {
                gmin,
                packet_duration_ms,
                received: 0,
                lost: 0,
                discarded: 0,
                bursts: 0,
                burst_packets: 0,
                burst_losses: 0,
                gaps: 0,
                gap_packets: 0,
                gap_losses: 0,
            },
            pending_received: 0,
            episode_losses: 0,
            episode_packets: 0,
            in_gap: false,
        }
    }

    /// Accounts the next expected packet. Called on the real-time thread: `O(1)`, no
    /// allocation, no panic.
    pub fn on_packet(&mut self, fate: PacketFate) {
        match fate {
            PacketFate::Received => {
                self.done.received = self.done.received.saturating_add(1);
                self.pending_received = self.pending_received.saturating_add(1);
                return;
            }
            PacketFate::Lost => self.done.lost = self.done.lost.saturating_add(1),
            PacketFate::Discarded => self.done.discarded = self.done.discarded.saturating_add(1),
        }
        if self.episode_losses > 0 && self.pending_received < u64::from(self.done.gmin) {
            // Fewer than Gmin received since the previous loss: same episode.
            self.episode_packets = self
                .episode_packets
                .saturating_add(self.pending_received)
                .saturating_add(1);
            self.episode_losses = self.episode_losses.saturating_add(1);
        } else {
            // Gmin or more received (or no episode open): the previous episode is over,
            // the received run between is gap, and this loss opens a new episode.
            self.close_episode();
            self.commit_gap(self.pending_received, 0);
            self.episode_losses = 1;
            self.episode_packets = 1;
        }
        self.pending_received = 0;
    }

    /// Accounts `n` received packets in a row: [`Self::on_packet`] with
    /// [`PacketFate::Received`] `n` times, in `O(1)`.
    pub fn on_received_run(&mut self, n: u64) {
        self.done.received = self.done.received.saturating_add(n);
        self.pending_received = self.pending_received.saturating_add(n);
    }

    /// Accounts `n` lost packets in a row: [`Self::on_packet`] with [`PacketFate::Lost`]
    /// `n` times, in `O(1)` (after the first, each follows a loss with no received packet
    /// between, so it joins the same episode).
    pub fn on_lost_run(&mut self, n: u64) {
        if n == 0 {
            return;
        }
        self.on_packet(PacketFate::Lost);
        let more = n - 1;
        self.done.lost = self.done.lost.saturating_add(more);
        self.episode_losses = self.episode_losses.saturating_add(more);
        self.episode_packets = self.episode_packets.saturating_add(more);
    }

    /// Classifies the open episode: one loss is an isolated gap loss, more is a burst.
    fn close_episode(&mut self) {
        match self.episode_losses {
            0 => {}
            1 => self.commit_gap(1, 1),
            losses => {
                let d = &mut self.done;
                d.bursts = d.bursts.saturating_add(1);
                d.burst_packets = d.burst_packets.saturating_add(self.episode_packets);
                d.burst_losses = d.burst_losses.saturating_add(losses);
                self.in_gap = false;
            }
        }
        self.episode_losses = 0;
        self.episode_packets = 0;
    }

    fn commit_gap(&mut self, packets: u64, losses: u64) {
        if packets == 0 {
            return;
        }
        let d = &mut self.done;
        if !self.in_gap {
            d.gaps = d.gaps.saturating_add(1);
            self.in_gap = true;
        }
        d.gap_packets = d.gap_packets.saturating_add(packets);
        d.gap_losses = d.gap_losses.saturating_add(losses);
    }

    /// The counts as of now, with the open episode classified as if at least Gmin
    /// received packets followed (RFC 3611 §4.7.2's assumption at the edges). Does not
    /// change the tracker; later packets may reclassify the most recent losses.
    pub fn snapshot(&self) -> BurstGapSnapshot {
        let mut closing = *self;
        closing.close_episode();
        closing.commit_gap(closing.pending_received, 0);
        closing.done
    }

    /// Forgets everything, keeping Gmin and the packet duration.
    pub fn reset(&mut self) {
        *self = Self::new(self.done.gmin, self.done.packet_duration_ms);
    }
}

/// Words of a [`LossPattern`] as the lanes publish it ([`LossPattern::to_words`]).
pub const LOSS_PATTERN_WORDS: usize = 16;

/// A receive stream's loss pattern, fed by sequence tracking
/// ([`crate::quality::rtp_stats::LossObserver`]) as positions leave its reorder window:
/// the RFC 3611 §4.7.2 burst/gap classification ([`BurstGapTracker`], Gmin 16) and the
/// number of loss runs (maximal sequences of consecutive lost packets), from which the
/// E-model's burst ratio follows ([`LossPatternSnapshot::burst_ratio`]).
///
/// Fixed-size and `Copy`; every operation is `O(1)`, allocation-free and panic-free. A
/// lane keeps it as [`LOSS_PATTERN_WORDS`] atomic words ([`Self::to_words`],
/// [`Self::from_words`]) written only when a loss is classified or a stream ends, so a
/// clean stream never touches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LossPattern {
    tracker: BurstGapTracker,
    /// Position in the current stream of the first packet not yet accounted.
    next: u64,
    /// Positions of the streams before the current one.
    earlier: u64,
    /// Runs of consecutive lost packets.
    loss_runs: u64,
    /// The last position accounted was lost.
    prev_lost: bool,
}

impl LossPattern {
    /// An empty pattern (Gmin 16).
    pub const fn new() -> Self {
        LossPattern {
            tracker: BurstGapTracker::new(DEFAULT_GMIN, 20),
            next: 0,
            earlier: 0,
            loss_runs: 0,
            prev_lost: false,
        }
    }

    /// The pattern as words for atomic publication; [`Self::from_words`] restores it
    /// exactly (all zeros is [`Self::new`]).
    pub fn to_words(&self) -> [u64; LOSS_PATTERN_WORDS] {
        let t = &self.tracker;
        let d = &t.done;
        [
            d.received,
            d.lost,
            d.discarded,
            d.bursts,
            d.burst_packets,
            d.burst_losses,
            d.gaps,
            d.gap_packets,
            d.gap_losses,
            t.pending_received,
            t.episode_losses,
            t.episode_packets,
            self.next,
            self.earlier,
            self.loss_runs,
            u64::from(t.in_gap) | u64::from(self.prev_lost) << 1,
        ]
    }

    /// The pattern [`Self::to_words`] wrote.
    pub fn from_words(w: &[u64; LOSS_PATTERN_WORDS]) -> Self {
        let mut p = Self::new();
        let t = &mut p.tracker;
        let d = &mut t.done;
        d.received = w[0];
        d.lost = w[1];
        d.discarded = w[2];
        d.bursts = w[3];
        d.burst_packets = w[4];
        d.burst_losses = w[5];
        d.gaps = w[6];
        d.gap_packets = w[7];
        d.gap_losses = w[8];
        t.pending_received = w[9];
        t.episode_losses = w[10];
        t.episode_packets = w[11];
        t.in_gap = w[15] & 1 != 0;
        p.next = w[12];
        p.earlier = w[13];
        p.loss_runs = w[14];
        p.prev_lost = w[15] & 2 != 0;
        p
    }

    /// The pattern as of a moment when the receive side had counted `expected` packets
    /// over all its streams (RFC 3550 A.3 each, summed: a session's `rx_expected`): the
    /// current stream's positions more than `window` behind its newest that were not
    /// reported lost are counted received (the newest `window` are not classified yet,
    /// as on the lane). Does not change the pattern.
    pub fn snapshot(&self, expected: u64, window: u64) -> LossPatternSnapshot {
        let classified = expected.saturating_sub(self.earlier).saturating_sub(window);
        let mut t = self.tracker;
        let received = classified.saturating_sub(self.next);
        t.on_received_run(received);
        LossPatternSnapshot {
            burst_gap: t.snapshot(),
            loss_runs: self.loss_runs,
            in_run: self.prev_lost && received == 0,
        }
    }
}

impl crate::quality::rtp_stats::LossObserver for LossPattern {
    fn lost(&mut self, first: u64, n: u64) {
        if n == 0 || first < self.next {
            // Positions come in order; one already accounted is never counted twice.
            return;
        }
        let received = first - self.next;
        if received > 0 {
            self.tracker.on_received_run(received);
            self.prev_lost = false;
        }
        if !self.prev_lost {
            self.loss_runs = self.loss_runs.saturating_add(1);
        }
        self.tracker.on_lost_run(n);
        self.prev_lost = true;
        self.next = first.saturating_add(n);
    }

    fn stream_end(&mut self, expected: u64) {
        self.tracker
            .on_received_run(expected.saturating_sub(self.next));
        self.earlier = self.earlier.saturating_add(expected.max(self.next));
        self.next = 0;
        // The next stream's first loss starts a run of its own.
        self.prev_lost = false;
    }
}

/// A [`LossPattern`] classified up to some moment: the RFC 3611 burst/gap counts and the
/// loss runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LossPatternSnapshot {
    /// RFC 3611 §4.7.2 counts (lost packets only: late discards are not in the pattern).
    pub burst_gap: BurstGapSnapshot,
    /// Runs of consecutive lost packets (each counted where it starts).
    pub loss_runs: u64,
    /// The last packet classified was lost: a run may go on past this snapshot.
    pub in_run: bool,
}

impl LossPatternSnapshot {
    /// The E-model's burst ratio (ITU-T G.107 §3.5, G.113 Appendix I): the mean length of
    /// the observed loss runs over the mean length random loss at the same rate would
    /// give, `(lost / runs) · (1 − lost / packets)`, which for a two-state Markov loss
    /// process is G.107's `1 / (p + q)`. 1 with no loss (random loss, the E-model's
    /// default); below 1 when losses are more spread out than random ones.
    pub fn burst_ratio(&self) -> f64 {
        burst_ratio(
            self.burst_gap.lost,
            self.loss_runs,
            self.burst_gap.expected(),
        )
    }

    /// [`Self::burst_ratio`] over the interval since `earlier` (a snapshot of the same
    /// stream), from the differences of the packet, loss and run counts. A run open at
    /// `earlier` is taken to go on into the interval (its losses there are one more run),
    /// so the tail of an outage that straddles the two reads as the burst it is, not as
    /// losses without a run: exact when no run starts in the interval, one run too many
    /// (never more runs than losses) when that run in fact ended at `earlier` and others
    /// start after. `None` when a count went backwards.
    pub fn burst_ratio_since(&self, earlier: &LossPatternSnapshot) -> Option<f64> {
        let lost = self.burst_gap.lost.checked_sub(earlier.burst_gap.lost)?;
        let started = self.loss_runs.checked_sub(earlier.loss_runs)?;
        // (At most one run per loss: a run open at `earlier` that ended right there
        // would otherwise count in an interval whose losses all start runs of their own.)
        Some(burst_ratio(
            lost,
            (started + u64::from(earlier.in_run && lost > 0)).min(lost),
            self.burst_gap
                .expected()
                .checked_sub(earlier.burst_gap.expected())?,
        ))
    }
}

/// `(lost / runs) · (1 − lost / packets)`, 1 where undefined.
fn burst_ratio(lost: u64, runs: u64, packets: u64) -> f64 {
    if lost == 0 || runs == 0 || packets == 0 || lost >= packets {
        // No loss: random by convention. All lost: no run structure to judge.
        return 1.0;
    }
    let lost = lost as f64;
    lost / runs as f64 * (1.0 - lost / packets as f64)
}

#[cfg(test)]
mod tests {
    use super::PacketFate::{Discarded as D, Lost as L, Received as R};
    use super::*;

    /// Runs a pattern given as (fate, repeat) pairs through a Gmin-16, 20 ms tracker.
    fn run(pattern: &[(PacketFate, usize)]) -> BurstGapTracker {
        let mut t = BurstGapTracker::new(16, 20);
        for &(fate, n) in pattern {
            for _ in 0..n {
                t.on_packet(fate);
            }
        }
        t
    }

    #[test]
    fn clean_stream_is_one_gap_without_loss() {
        let s = run(&[(R, 100)]).snapshot();
        assert_eq!(
            (s.gaps, s.gap_packets, s.gap_losses, s.bursts),
            (1, 100, 0, 0)
        );
        assert_eq!(
            (s.loss_rate(), s.gap_density(), s.burst_density()),
            (0, 0, 0)
        );
        assert_eq!((s.gap_duration_ms(), s.burst_duration_ms()), (2000, 0));
    }

    #[test]
    fn isolated_loss_with_gmin_received_on_both_sides_is_a_gap_loss() {
        let s = run(&[(R, 20), (L, 1), (R, 20)]).snapshot();
        assert_eq!(s.bursts, 0);
        assert_eq!((s.gaps, s.gap_packets, s.gap_losses), (1, 41, 1));
        assert_eq!(s.gap_density(), (256 / 41) as u8); // 6
        assert_eq!(s.loss_rate(), 6);
        assert_eq!(s.gap_duration_ms(), 820);
        // The most a gap can lose: 1 in Gmin + 1 (Gmin received either side, §4.7.6).
        let s = run(&[(L, 1), (R, 16), (L, 1), (R, 16), (L, 1), (R, 16)]).snapshot();
        assert_eq!((s.bursts, s.gap_losses, s.gap_packets), (0, 3, 51));
    }

    #[test]
    fn losses_closer_than_gmin_form_one_burst_from_first_to_last_loss() {
        // 20 R, then L RRR L RRRRR L (11 slots, 3 lost), then 20 R.
        let s = run(&[(R, 20), (L, 1), (R, 3), (L, 1), (R, 5), (L, 1), (R, 20)]).snapshot();
        assert_eq!((s.bursts, s.burst_packets, s.burst_losses), (1, 11, 3));
        assert_eq!((s.gaps, s.gap_packets, s.gap_losses), (2, 40, 0));
        assert_eq!(s.burst_density(), (3 * 256 / 11) as u8); // 69
        assert_eq!(s.burst_duration_ms(), 220);
        assert_eq!(s.gap_duration_ms(), 400);
        assert_eq!(s.loss_rate(), (3 * 256 / 51) as u8); // 15
    }

    #[test]
    fn gmin_is_the_boundary_between_burst_and_gap() {
        // 15 received between two losses: still one burst of 17 slots.
        let s = run(&[(R, 20), (L, 1), (R, 15), (L, 1), (R, 20)]).snapshot();
        assert_eq!(
            (s.bursts, s.burst_packets, s.burst_losses, s.gap_losses),
            (1, 17, 2, 0)
        );
        // 16 received: two isolated gap losses, no burst.
        let s = run(&[(R, 20), (L, 1), (R, 16), (L, 1), (R, 20)]).snapshot();
        assert_eq!(
            (s.bursts, s.gaps, s.gap_packets, s.gap_losses),
            (0, 1, 58, 2)
        );
    }

    #[test]
    fn discards_count_as_burst_losses_but_have_their_own_rate() {
        let s = run(&[(R, 20), (L, 1), (D, 1), (R, 20)]).snapshot();
        assert_eq!((s.bursts, s.burst_packets, s.burst_losses), (1, 2, 2));
        // 2/2 × 256 = 256 is capped at 255.
        assert_eq!(s.burst_density(), 255);
        assert_eq!(s.loss_rate(), (256 / 42) as u8);
        assert_eq!(s.discard_rate(), (256 / 42) as u8);
    }

    #[test]
    fn several_bursts_average_their_durations_and_gaps_between_them() {
        // Gap 30, burst LL (2), gap 20, burst L R L R L (5), gap 30.
        let s = run(&[
            (R, 30),
            (L, 2),
            (R, 20),
            (L, 1),
            (R, 1),
            (L, 1),
            (R, 1),
            (L, 1),
            (R, 30),
        ])
        .snapshot();
        assert_eq!((s.bursts, s.burst_packets, s.burst_losses), (2, 7, 5));
        assert_eq!((s.gaps, s.gap_packets), (3, 80));
        assert_eq!(s.burst_duration_ms(), 70); // 7 × 20 / 2
        assert_eq!(s.gap_duration_ms(), 533); // 80 × 20 / 3, floored
        assert_eq!(s.burst_density(), (5 * 256 / 7) as u8);
    }

    #[test]
    fn recent_losses_are_reclassified_once_more_packets_arrive() {
        let mut t = run(&[(R, 20), (L, 1), (R, 3)]);
        // Assumed followed by Gmin received: an isolated gap loss for now.
        let s = t.snapshot();
        assert_eq!((s.bursts, s.gap_losses), (0, 1));
        // Another loss within Gmin: the two now form a burst (§4.7.6's reclassification).
        t.on_packet(L);
        let s = t.snapshot();
        assert_eq!(
            (s.bursts, s.burst_packets, s.burst_losses, s.gap_losses),
            (1, 5, 2, 0)
        );
        // The snapshot did not change the tracker.
        assert_eq!(t.snapshot(), s);
    }

    #[test]
    fn a_stream_starting_with_a_burst_has_no_leading_gap() {
        let s = run(&[(L, 2), (R, 20)]).snapshot();
        assert_eq!((s.bursts, s.burst_packets), (1, 2));
        assert_eq!((s.gaps, s.gap_packets), (1, 20));
        let s = run(&[(L, 5)]).snapshot();
        assert_eq!((s.bursts, s.burst_packets, s.gaps), (1, 5, 0));
        assert_eq!((s.burst_density(), s.gap_duration_ms()), (255, 0));
        assert_eq!(s.loss_rate(), 255);
    }

    #[test]
    fn snapshot_fills_the_block_and_durations_saturate() {
        let mut t = BurstGapTracker::new(0, 60_000); // Gmin 0 → 1
        for _ in 0..10 {
            t.on_packet(R);
        }
        let s = t.snapshot();
        assert_eq!(s.gmin, 1);
        assert_eq!(s.gap_duration_ms(), u16::MAX);
        let mut block = VoipMetrics::default();
        s.apply_to(&mut block);
        assert_eq!((block.gmin, block.gap_duration_ms), (1, u16::MAX));
        t.reset();
        assert_eq!(t.snapshot().expected(), 0);
        assert_eq!(t.snapshot().packet_duration_ms, 60_000);
    }

    fn sample_block() -> VoipMetrics {
        VoipMetrics {
            loss_rate: rate_from_counts(3, 100),
            discard_rate: rate_from_counts(1, 100),
            burst_density: 69,
            gap_density: 6,
            burst_duration_ms: 220,
            gap_duration_ms: 8_400,
            round_trip_delay_ms: 143,
            end_system_delay_ms: 61,
            signal_level_dbm0: Some(-18),
            noise_level_dbm0: Some(-62),
            rerl_db: Some(48),
            gmin: 16,
            r_factor: r_factor_field(73.76),
            ext_r_factor: Some(93),
            mos_lq_x10: mos_field(3.93),
            mos_cq_x10: mos_field(3.768),
            rx_config: RxConfig {
                plc: PlcKind::Enhanced,
                jitter_buffer: JitterBufferKind::Adaptive,
                jb_rate: 5,
            },
            jb_nominal_ms: 40,
            jb_maximum_ms: 80,
            jb_abs_max_ms: 300,
        }
    }

    #[test]
    fn block_layout_matches_rfc_3611_section_4_7() {
        let mut out = [0xAAu8; BLOCK_BYTES];
        sample_block().to_bytes(0x1234_5678, &mut out);
        #[rustfmt::skip]
        let expected: [u8; 36] = [
            7, 0, 0, 8,                     // BT, reserved, block length
            0x12, 0x34, 0x56, 0x78,         // SSRC of source
            7, 2, 69, 6,                    // loss 3/100, discard 1/100, densities
            0x00, 0xDC, 0x20, 0xD0,         // burst 220 ms, gap 8400 ms
            0x00, 0x8F, 0x00, 0x3D,         // RTT 143 ms, end system 61 ms
            0xEE, 0xC2, 48, 16,             // −18 dBm0, −62 dBm0, RERL, Gmin
            74, 93, 39, 38,                 // R, ext R, MOS-LQ ×10, MOS-CQ ×10
            0b1011_0101, 0, 0x00, 40,       // RX config 10|11|0101, rsvd, JB nominal
            0x00, 80, 0x01, 0x2C,           // JB maximum, JB abs max
        ];
        assert_eq!(out, expected);
    }

    #[test]
    fn encode_decode_round_trips() {
        let block = sample_block();
        let mut out = [0u8; BLOCK_BYTES];
        block.to_bytes(0xDEAD_BEEF, &mut out);
        assert_eq!(VoipMetrics::from_bytes(&out), Ok((0xDEAD_BEEF, block)));
        // Trailing bytes (the next block) are ignored.
        let mut longer = [0u8; 48];
        longer[..BLOCK_BYTES].copy_from_slice(&out);
        assert_eq!(VoipMetrics::from_bytes(&longer), Ok((0xDEAD_BEEF, block)));
        // Nothing available round-trips as 127s.
        let empty = VoipMetrics::default();
        empty.to_bytes(1, &mut out);
        assert_eq!(&out[20..28], &[127, 127, 127, 16, 127, 127, 127, 127]);
        assert_eq!(VoipMetrics::from_bytes(&out), Ok((1, empty)));
    }

    #[test]
    fn every_rx_config_byte_round_trips() {
        for byte in 0..=255u8 {
            assert_eq!(RxConfig::from_byte(byte).to_byte(), byte);
        }
    }

    #[test]
    fn rate_scaling_edge_cases() {
        assert_eq!(rate_from_fraction(1.0), 255);
        assert_eq!(rate_from_fraction(2.0), 255);
        assert_eq!(rate_from_fraction(f64::INFINITY), 255);
        assert_eq!(rate_from_fraction(255.0 / 256.0), 255);
        assert_eq!(rate_from_fraction(254.9 / 256.0), 254);
        assert_eq!(rate_from_fraction(0.5), 128);
        assert_eq!(rate_from_fraction(1.0 / 256.0), 1);
        assert_eq!(rate_from_fraction(0.99 / 256.0), 0);
        assert_eq!(rate_from_fraction(0.0), 0);
        assert_eq!(rate_from_fraction(-0.5), 0);
        assert_eq!(rate_from_fraction(f64::NAN), 0);
        assert_eq!(rate_from_counts(1, 1), 255);
        assert_eq!(rate_from_counts(5, 0), 0);
        assert_eq!(rate_from_counts(1, 256), 1);
        assert_eq!(rate_from_counts(1, 257), 0);
        assert_eq!(rate_from_counts(u64::MAX, u64::MAX), 255);
        assert_eq!(rate_from_counts(u64::MAX, 1), 255);
        assert_eq!(fraction_from_rate(128), 0.5);
    }

    #[test]
    fn quality_field_scaling_and_ranges() {
        assert_eq!(r_factor_field(93.2), Some(93));
        assert_eq!(r_factor_field(-4.0), Some(0));
        assert_eq!(r_factor_field(120.0), Some(100));
        assert_eq!(r_factor_field(f64::NAN), None);
        assert_eq!(mos_field(4.41), Some(44));
        assert_eq!(mos_field(4.45), Some(45));
        assert_eq!(mos_field(1.0), Some(10));
        assert_eq!(mos_field(0.3), Some(10));
        assert_eq!(mos_field(5.0), Some(50));
        assert_eq!(mos_field(7.0), Some(50));
        assert_eq!(mos_field(f64::NAN), None);
        // Out-of-range values set by hand are sent as unavailable ...
        let block = VoipMetrics {
            r_factor: Some(101),
            ext_r_factor: Some(127),
            mos_lq_x10: Some(9),
            mos_cq_x10: Some(51),
            signal_level_dbm0: Some(127),
            ..VoipMetrics::default()
        };
        let mut out = [0u8; BLOCK_BYTES];
        block.to_bytes(9, &mut out);
        assert_eq!(&out[24..28], &[127; 4]);
        assert_eq!(out[20], 127);
        // ... and received ones are ignored.
        out[24] = 200;
        out[26] = 5;
        let (_, parsed) = VoipMetrics::from_bytes(&out).unwrap();
        assert_eq!((parsed.r_factor, parsed.mos_lq_x10), (None, None));
        // Signed levels use two's complement.
        out[20] = 0x80;
        assert_eq!(
            VoipMetrics::from_bytes(&out).unwrap().1.signal_level_dbm0,
            Some(-128)
        );
    }

    #[test]
    fn malformed_blocks_are_typed_errors() {
        let mut out = [0u8; BLOCK_BYTES];
        VoipMetrics::default().to_bytes(1, &mut out);
        assert_eq!(
            VoipMetrics::from_bytes(&out[..35]),
            Err(XrParseError::TooShort {
                expected: 36,
                actual: 35
            })
        );
        assert_eq!(
            VoipMetrics::from_bytes(&[]),
            Err(XrParseError::TooShort {
                expected: 36,
                actual: 0
            })
        );
        let mut wrong_type = out;
        wrong_type[0] = 6;
        assert_eq!(
            VoipMetrics::from_bytes(&wrong_type),
            Err(XrParseError::WrongBlockType { actual: 6 })
        );
        let mut wrong_len = out;
        wrong_len[3] = 9;
        assert_eq!(
            VoipMetrics::from_bytes(&wrong_len),
            Err(XrParseError::WrongBlockLength {
                expected: 8,
                actual: 9
            })
        );
        // Every single-byte corruption of a valid block parses or errors; none panics.
        for i in 0..BLOCK_BYTES {
            for v in [0u8, 1, 7, 8, 127, 128, 255] {
                let mut b = out;
                b[i] = v;
                let _ = VoipMetrics::from_bytes(&b);
            }
        }
    }

    #[test]
    fn long_random_streams_keep_the_counts_consistent() {
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut t = BurstGapTracker::default();
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let fate = match x % 100 {
                0..=3 => L,
                4 => D,
                _ => R,
            };
            t.on_packet(fate);
            if x.is_multiple_of(997) {
                let s = t.snapshot();
                // Every slot is in exactly one burst or gap.
                assert_eq!(s.burst_packets + s.gap_packets, s.expected());
                assert_eq!(s.burst_losses + s.gap_losses, s.lost + s.discarded);
                assert!(s.burst_losses >= 2 * s.bursts);
                // Every gap loss but one at the very start follows Gmin received
                // packets of its own gap (else it would have joined a burst).
                assert!(17 * s.gap_losses <= s.gap_packets + 16);
            }
        }
    }

    /// A two-state (Gilbert) loss process: loses the next packet with probability
    /// `p` after a received one and keeps losing with `1 - q`.
    fn gilbert(n: usize, p: f64, q: f64, seed: u64) -> Vec<PacketFate> {
        let mut x = seed;
        let mut uniform = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 11) as f64 / (1u64 << 53) as f64
        };
        let mut lost = false;
        (0..n)
            .map(|_| {
                lost = if lost { uniform() >= q } else { uniform() < p };
                if lost {
                    L
                } else {
                    R
                }
            })
            .collect()
    }

    /// Feeds `fates` to a pattern as sequence tracking would: lost runs by position, the
    /// stream's end after `fates.len()` positions.
    fn pattern_of(fates: &[PacketFate]) -> LossPattern {
        use crate::quality::rtp_stats::LossObserver;
        let mut p = LossPattern::new();
        let mut i = 0;
        while i < fates.len() {
            if fates[i] == L {
                let n = fates[i..].iter().take_while(|f| **f == L).count();
                // Split some runs over two calls, as two packets' arrivals would.
                if n > 1 && i % 2 == 0 {
                    p.lost(i as u64, 1);
                    p.lost(i as u64 + 1, n as u64 - 1);
                } else {
                    p.lost(i as u64, n as u64);
                }
                i += n;
            } else {
                i += 1;
            }
        }
        p.stream_end(fates.len() as u64);
        p
    }

    #[test]
    fn a_loss_pattern_classifies_as_the_tracker_does_packet_by_packet() {
        for (p, q, seed) in [
            (0.01, 0.9, 1),
            (0.05, 0.3, 2),
            (0.2, 0.5, 3),
            (0.001, 0.05, 4),
        ] {
            let fates = gilbert(20_000, p, q, seed);
            let mut t = BurstGapTracker::default();
            fates.iter().for_each(|f| t.on_packet(*f));
            let pattern = pattern_of(&fates);
            let snap = pattern.snapshot(fates.len() as u64, 0);
            assert_eq!(snap.burst_gap, t.snapshot(), "p {p} q {q}");
            let runs = fates.windows(2).filter(|w| w[0] == R && w[1] == L).count()
                + usize::from(fates[0] == L);
            assert_eq!(snap.loss_runs, runs as u64);
            // Published as words and read back, it is the same pattern.
            assert_eq!(LossPattern::from_words(&pattern.to_words()), pattern);
        }
        assert_eq!(
            LossPattern::from_words(&[0; LOSS_PATTERN_WORDS]),
            LossPattern::new()
        );
    }

    #[test]
    fn the_burst_ratio_estimates_the_gilbert_model_and_is_one_for_random_loss() {
        // G.107's BurstR = 1 / (p + q) for a two-state Markov loss process.
        for (p, q) in [(0.02, 0.25), (0.01, 0.5), (0.05, 0.2), (0.03, 0.97)] {
            let fates = gilbert(400_000, p, q, 7);
            let r = pattern_of(&fates).snapshot(400_000, 0).burst_ratio();
            let want = 1.0 / (p + q);
            assert!((r - want).abs() < 0.08 * want, "p {p} q {q}: {r} vs {want}");
        }
        // Independent loss (q = 1 - p) is random: 1.
        let fates = gilbert(400_000, 0.05, 0.95, 8);
        let r = pattern_of(&fates).snapshot(400_000, 0).burst_ratio();
        assert!((r - 1.0).abs() < 0.03, "{r}");
        // No loss, or nothing but loss: 1 by convention.
        assert_eq!(LossPatternSnapshot::default().burst_ratio(), 1.0);
        assert_eq!(pattern_of(&[L; 10]).snapshot(10, 0).burst_ratio(), 1.0);
    }

    #[test]
    fn a_snapshot_counts_classified_positions_as_received_and_leaves_the_window_out() {
        use crate::quality::rtp_stats::LossObserver;
        let mut p = LossPattern::new();
        p.lost(100, 3);
        // 500 expected, 64 of them still in the window: 436 classified, 3 lost.
        let s = p.snapshot(500, 64);
        assert_eq!((s.burst_gap.expected(), s.burst_gap.lost), (436, 3));
        assert_eq!((s.burst_gap.bursts, s.loss_runs), (1, 1));
        // Less expected than already accounted (counters read before the pattern).
        assert_eq!(p.snapshot(50, 64).burst_gap.expected(), 103);
        // A second stream: positions count from 0 again after the first's 700.
        p.stream_end(700);
        p.lost(10, 1);
        let s = p.snapshot(700 + 200, 64);
        assert_eq!((s.burst_gap.expected(), s.burst_gap.lost), (700 + 136, 4));
        assert_eq!(s.loss_runs, 2);
        // Interval burst ratio: one run of 3 in 436, then one loss in the next 400.
        let a = LossPattern::new().snapshot(0, 0);
        let mut q = LossPattern::new();
        q.lost(100, 3);
        let early = q.snapshot(436, 0);
        q.lost(600, 1);
        let late = q.snapshot(836, 0);
        let whole = late.burst_ratio_since(&a).unwrap();
        assert!(
            (whole - 4.0 / 2.0 * (1.0 - 4.0 / 836.0)).abs() < 1e-12,
            "{whole}"
        );
        let second = late.burst_ratio_since(&early).unwrap();
        assert!((second - (1.0 - 1.0 / 400.0)).abs() < 1e-12, "{second}");
        assert_eq!(early.burst_ratio_since(&late), None);
        // A 200-packet outage whose last 33 losses fall after a snapshot: the interval's
        // losses are a run of 33 and two isolated ones, three runs.
        let mut o = LossPattern::new();
        o.lost(1000, 167);
        let mid = o.snapshot(1167, 0);
        assert!(mid.in_run);
        o.lost(1167, 33);
        o.lost(1400, 1);
        o.lost(1600, 1);
        let after = o.snapshot(1667, 0);
        assert!(!after.in_run);
        let tail = after.burst_ratio_since(&mid).unwrap();
        assert!(
            (tail - 35.0 / 3.0 * (1.0 - 35.0 / 500.0)).abs() < 1e-12,
            "{tail}"
        );
        // A run open at a snapshot that ended right there, then one isolated loss: never
        // more runs than losses (a mean run shorter than one packet).
        let mut e = LossPattern::new();
        e.lost(1000, 167);
        let at_end = e.snapshot(1167, 0);
        e.lost(1400, 1);
        let one = e.snapshot(1500, 0).burst_ratio_since(&at_end).unwrap();
        assert!((one - (1.0 - 1.0 / 333.0)).abs() < 1e-12, "{one}");
    }
}
