//! RTCP for the transport (RFC 3550 §6, RFC 3611 §4.7): checked parsing of compound
//! packets, allocation-free building of compound reports, and the round-trip time from a
//! report block.
//!
//! media-core does not own sockets, so RTCP belongs to the transport that drives the lane
//! handles (rtp-core, or the `rtp_gateway` example). This module is the part of it that
//! knows the wire format:
//!
//! - [`Compound::parse`] validates a whole compound packet (RFC 3550 §6.1 and Appendix A.2:
//!   version 2, every length inside the datagram, padding only on the last packet, the
//!   lengths adding up to the datagram) and every known packet's body (SR, RR, SDES, BYE,
//!   XR), then [`Compound::packets`] walks it as typed [`RtcpPacket`]s. Unknown packet types
//!   and XR block types are skipped. Nothing panics or allocates on any input; a
//!   malformed packet is an [`RtcpError`].
//! - [`CompoundWriter`] appends SR or RR, SDES CNAME, BYE and an XR VoIP Metrics block
//!   ([`VoipMetrics`]) into a caller-provided `&mut [u8]`, returning lengths only; a buffer
//!   too small is an error and leaves nothing half-written behind the reported length.
//! - [`ReceptionState`] turns a session's receive counters ([`ReceiveCounts`], e.g. from
//!   [`SessionStats`]) and the last sender report heard into an RFC 3550 §6.4.1 report
//!   block: fraction lost over the interval (Appendix A.3), cumulative lost, extended
//!   highest sequence number, interarrival jitter, LSR and DLSR.
//! - [`round_trip`] computes RTT = A − LSR − DLSR (§6.4.1) from a received report block.
//! - [`SourceTracker`] follows, on the transport's side, the source a report block is
//!   about and its extended highest sequence number (which [`SessionStats`] does not
//!   carry).
//!
//! Times are NTP timestamps ([`NtpTime`], 32.32 fixed point seconds since 1900); LSR, DLSR
//! and the round trip use the middle 32 bits (16.16 seconds).

#![deny(missing_docs)]

use crate::quality::rtp_stats::RtpReceiveStats;
use crate::quality::xr::{self, VoipMetrics};
use crate::runtime::stats::SessionStats;

/// RFC 3550 §6.4.1: sender report packet type.
pub const PT_SR: u8 = 200;
/// RFC 3550 §6.4.2: receiver report packet type.
pub const PT_RR: u8 = 201;
/// RFC 3550 §6.5: source description packet type.
pub const PT_SDES: u8 = 202;
/// RFC 3550 §6.6: goodbye packet type.
pub const PT_BYE: u8 = 203;
/// RFC 3550 §6.7: application-defined packet type (parsed as unknown).
pub const PT_APP: u8 = 204;
/// RFC 3611 §2: extended report packet type.
pub const PT_XR: u8 = 207;
/// RFC 3550 §6.5.1: SDES item type of the canonical name.
pub const SDES_CNAME: u8 = 1;
/// Size of one RFC 3550 §6.4.1 report block.
pub const REPORT_BLOCK_BYTES: usize = 24;
/// Size of the RFC 3550 §6.4.1 sender info (NTP, RTP timestamp, packet and octet counts).
pub const SENDER_INFO_BYTES: usize = 20;
/// RFC 3550 §6.5.1: a CNAME is at most 255 bytes (its length is one octet).
pub const MAX_CNAME_BYTES: usize = 255;
/// Most report blocks one SR or RR carries (the 5-bit count).
pub const MAX_REPORT_BLOCKS: usize = 31;
/// Seconds from the NTP epoch (1900) to the Unix epoch (1970), RFC 868.
pub const NTP_UNIX_OFFSET_S: u64 = 2_208_988_800;

/// Why an RTCP packet was rejected or could not be written. Fields are sizes in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RtcpError {
    /// Fewer bytes than a header or a fixed part needs. Drop the datagram.
    #[error("RTCP packet too short: need {expected} bytes, have {actual}")]
    TooShort {
        /// Bytes needed.
        expected: usize,
        /// Bytes present.
        actual: usize,
    },
    /// The version field is not 2 (RFC 3550 §6.4.1). Drop the datagram; it may be
    /// another protocol multiplexed on the port (STUN, DTLS).
    #[error("RTCP version {actual}, expected 2")]
    BadVersion {
        /// The version found.
        actual: u8,
    },
    /// A packet's length field points past the end of the datagram. Drop the datagram.
    #[error("RTCP length field claims {declared} bytes, {available} remain")]
    LengthOverrun {
        /// Bytes the length field claims (header included).
        declared: usize,
        /// Bytes left in the datagram.
        available: usize,
    },
    /// A compound packet does not start with SR or RR (RFC 3550 §6.1, Appendix A.2).
    /// Drop the datagram.
    #[error("compound RTCP starts with packet type {packet_type}, not SR or RR")]
    NotReportFirst {
        /// The first packet's type.
        packet_type: u8,
    },
    /// The padding bit is set on a packet that is not the last of the compound, or its
    /// padding count is 0 or larger than the packet (RFC 3550 §6.4.1). Drop the datagram.
    #[error("bad RTCP padding")]
    BadPadding,
    /// The count field needs more bytes than the packet holds (report blocks, SDES
    /// chunks, BYE sources). Drop the datagram.
    #[error("packet type {packet_type} count {count} does not fit its length")]
    CountOverrun {
        /// The packet type.
        packet_type: u8,
        /// The count field.
        count: u8,
    },
    /// An SDES item or chunk, a BYE reason or an XR block runs past its packet. Drop the
    /// datagram.
    #[error("packet type {packet_type}: an item runs past the packet end")]
    ItemOverrun {
        /// The packet type.
        packet_type: u8,
    },
    /// The caller's output buffer is too small for what was asked to be written. Give a
    /// larger buffer (1500 bytes holds any report this module builds).
    #[error("output buffer too small: need {needed} bytes, have {available}")]
    BufferTooSmall {
        /// Bytes the write needs.
        needed: usize,
        /// Bytes left in the buffer.
        available: usize,
    },
    /// More than [`MAX_REPORT_BLOCKS`] report blocks, or a CNAME longer than
    /// [`MAX_CNAME_BYTES`], were asked to be written. Split or shorten them.
    #[error("too many items for one RTCP packet: {actual}, at most {limit}")]
    TooMany {
        /// The limit.
        limit: usize,
        /// What was asked.
        actual: usize,
    },
}

/// An NTP timestamp (RFC 5905): seconds since 1900 in the high 32 bits, fraction in the low.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct NtpTime(pub u64);

impl NtpTime {
    /// The NTP time of a wall-clock instant given as time since the Unix epoch.
    pub fn from_unix(since_unix: std::time::Duration) -> Self {
        let secs = since_unix.as_secs().wrapping_add(NTP_UNIX_OFFSET_S);
        // The fraction: nanoseconds × 2^32 / 10^9 (exact in u64: < 2^62).
        let frac = (u64::from(since_unix.subsec_nanos()) << 32) / 1_000_000_000;
        NtpTime((secs << 32) | frac)
    }

    /// The wall clock now (control plane: reads the system clock).
    pub fn now() -> Self {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Self::from_unix(d)
    }

    /// The middle 32 bits (16.16 seconds), the form LSR, DLSR and RTT take (§6.4.1).
    pub const fn middle32(self) -> u32 {
        (self.0 >> 16) as u32
    }
}

/// Converts a 16.16 fixed-point interval (units of 1/65536 s) to milliseconds.
pub fn compact_to_ms(compact: u32) -> f64 {
    f64::from(compact) * 1000.0 / 65536.0
}

/// RFC 3550 §6.4.1: round-trip time, in 1/65536 s, from a report block's `lsr` and `dlsr`
/// and the NTP time `arrival` at which the report carrying it arrived: `A − LSR − DLSR`,
/// modulo 2^32 like the fields. `None` when the reporter has heard no SR from us
/// (`lsr == 0`, "no reception of SR yet") or when the result is negative (clock error or
/// a report about an SR older than the 18-hour wrap), which must not be fed to a quality
/// estimate.
pub fn round_trip(arrival: NtpTime, lsr: u32, dlsr: u32) -> Option<u32> {
    if lsr == 0 {
        return None;
    }
    let rtt = arrival.middle32().wrapping_sub(lsr).wrapping_sub(dlsr);
    // A negative difference shows as a huge value; anything above half the range is one.
    (rtt < 0x8000_0000).then_some(rtt)
}

/// [`round_trip`] in milliseconds.
pub fn round_trip_ms(arrival: NtpTime, lsr: u32, dlsr: u32) -> Option<f64> {
    round_trip(arrival, lsr, dlsr).map(compact_to_ms)
}

/// RFC 3550 §6.4.1 report block: what one receiver says about one source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ReportBlock {
    /// SSRC of the source this block reports on.
    pub ssrc: u32,
    /// Fraction of packets lost since the previous report, 8-bit fixed point (× 256).
    pub fraction_lost: u8,
    /// Cumulative packets lost (24-bit signed on the wire: duplicates can make it
    /// negative); clamped to −2^23..2^23−1 when written.
    pub cumulative_lost: i32,
    /// Extended highest sequence number received (cycles in the high 16 bits).
    pub highest_seq_ext: u32,
    /// Interarrival jitter, RTP timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the last SR's NTP timestamp from this source; 0 if none.
    pub lsr: u32,
    /// Delay since that SR arrived, 1/65536 s; 0 if none.
    pub dlsr: u32,
}

impl ReportBlock {
    /// Parses a block from the first [`REPORT_BLOCK_BYTES`] of `b`.
    pub fn parse(b: &[u8]) -> Result<Self, RtcpError> {
        let Some(b) = b.first_chunk::<REPORT_BLOCK_BYTES>() else {
            return Err(RtcpError::TooShort {
                expected: REPORT_BLOCK_BYTES,
                actual: b.len(),
            });
        };
        // The 24-bit two's complement count, sign-extended through a shift.
        let lost = (i32::from_be_bytes([b[5], b[6], b[7], 0])) >> 8;
        Ok(ReportBlock {
            ssrc: be32(b, 0),
            fraction_lost: b[4],
            cumulative_lost: lost,
            highest_seq_ext: be32(b, 8),
            jitter: be32(b, 12),
            lsr: be32(b, 16),
            dlsr: be32(b, 20),
        })
    }

    /// Writes the block's 24 bytes.
    pub fn write(&self, out: &mut [u8; REPORT_BLOCK_BYTES]) {
        out[0..4].copy_from_slice(&self.ssrc.to_be_bytes());
        out[4] = self.fraction_lost;
        let lost = self.cumulative_lost.clamp(-0x80_0000, 0x7F_FFFF);
        out[5..8].copy_from_slice(&lost.to_be_bytes()[1..4]);
        out[8..12].copy_from_slice(&self.highest_seq_ext.to_be_bytes());
        out[12..16].copy_from_slice(&self.jitter.to_be_bytes());
        out[16..20].copy_from_slice(&self.lsr.to_be_bytes());
        out[20..24].copy_from_slice(&self.dlsr.to_be_bytes());
    }

    /// [`ReportBlock::fraction_lost`] as a fraction (0.0–0.996).
    pub fn fraction_lost_f64(&self) -> f64 {
        f64::from(self.fraction_lost) / 256.0
    }
}

/// RFC 3550 §6.4.1 sender info of an SR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SenderInfo {
    /// Wall-clock time the report was sent.
    pub ntp: NtpTime,
    /// The same instant on the sender's RTP timestamp clock.
    pub rtp_timestamp: u32,
    /// RTP packets sent since the sender started (wraps).
    pub packet_count: u32,
    /// RTP payload octets sent since the sender started (wraps).
    pub octet_count: u32,
}

impl SenderInfo {
    fn parse(b: &[u8; SENDER_INFO_BYTES]) -> Self {
        SenderInfo {
            ntp: NtpTime((u64::from(be32(b, 0)) << 32) | u64::from(be32(b, 4))),
            rtp_timestamp: be32(b, 8),
            packet_count: be32(b, 12),
            octet_count: be32(b, 16),
        }
    }

    fn write(&self, out: &mut [u8]) {
        out[0..8].copy_from_slice(&self.ntp.0.to_be_bytes());
        out[8..12].copy_from_slice(&self.rtp_timestamp.to_be_bytes());
        out[12..16].copy_from_slice(&self.packet_count.to_be_bytes());
        out[16..20].copy_from_slice(&self.octet_count.to_be_bytes());
    }
}

/// The report blocks of an SR or RR, read lazily from the packet bytes (already checked
/// to hold `count` whole blocks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportBlocks<'a> {
    bytes: &'a [u8],
}

impl<'a> ReportBlocks<'a> {
    /// Number of blocks.
    pub fn len(&self) -> usize {
        self.bytes.len() / REPORT_BLOCK_BYTES
    }

    /// True when the report carries no block.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The block about `ssrc`, if this report has one.
    pub fn about(&self, ssrc: u32) -> Option<ReportBlock> {
        self.iter().find(|b| b.ssrc == ssrc)
    }

    /// The blocks in order.
    pub fn iter(&self) -> impl Iterator<Item = ReportBlock> + 'a {
        self.bytes
            .chunks_exact(REPORT_BLOCK_BYTES)
            .filter_map(|c| ReportBlock::parse(c).ok())
    }
}

/// A parsed sender report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderReport<'a> {
    /// SSRC of the sender.
    pub ssrc: u32,
    /// Its sender info.
    pub info: SenderInfo,
    /// Its reception report blocks.
    pub blocks: ReportBlocks<'a>,
}

/// A parsed receiver report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiverReport<'a> {
    /// SSRC of the reporter.
    pub ssrc: u32,
    /// Its reception report blocks.
    pub blocks: ReportBlocks<'a>,
}

/// A parsed SDES packet; chunks are read lazily (already checked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sdes<'a> {
    count: u8,
    body: &'a [u8],
}

impl<'a> Sdes<'a> {
    /// `(ssrc, cname)` of every chunk that carries a CNAME item.
    pub fn cnames(&self) -> impl Iterator<Item = (u32, &'a [u8])> + 'a {
        let mut rest = self.body;
        let mut left = self.count;
        std::iter::from_fn(move || {
            while left > 0 {
                left -= 1;
                let (ssrc, items, next) = sdes_chunk(rest).ok()?;
                rest = next;
                let mut it = items;
                while let [ty, len, tail @ ..] = it {
                    let Some((value, after)) = tail.split_at_checked(usize::from(*len)) else {
                        break;
                    };
                    if *ty == SDES_CNAME {
                        return Some((ssrc, value));
                    }
                    it = after;
                }
            }
            None
        })
    }
}

/// A parsed BYE packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bye<'a> {
    ssrcs: &'a [u8],
    /// The reason for leaving, if given (UTF-8 by RFC 3550 §6.6, not checked here).
    pub reason: Option<&'a [u8]>,
}

impl<'a> Bye<'a> {
    /// The sources leaving.
    pub fn ssrcs(&self) -> impl Iterator<Item = u32> + 'a {
        self.ssrcs.chunks_exact(4).map(|c| be32(c, 0))
    }
}

/// One RFC 3611 §3 report block of an XR packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XrBlock<'a> {
    /// Block type (7 = VoIP Metrics).
    pub block_type: u8,
    /// The type-specific byte after the block type.
    pub type_specific: u8,
    /// The whole block, header included.
    pub bytes: &'a [u8],
}

/// A parsed XR packet (RFC 3611 §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Xr<'a> {
    /// SSRC of the reporter.
    pub ssrc: u32,
    blocks: &'a [u8],
}

impl<'a> Xr<'a> {
    /// The report blocks, in order (lengths already checked).
    pub fn blocks(&self) -> impl Iterator<Item = XrBlock<'a>> + 'a {
        let mut rest = self.blocks;
        std::iter::from_fn(move || {
            let (block, next) = xr_block(rest).ok()??;
            rest = next;
            Some(block)
        })
    }

    /// The first VoIP Metrics block (RFC 3611 §4.7): `(source ssrc, metrics)`. A block of
    /// type 7 with a wrong length is skipped.
    pub fn voip_metrics(&self) -> Option<(u32, VoipMetrics)> {
        self.blocks()
            .filter(|b| b.block_type == xr::BLOCK_TYPE)
            .find_map(|b| VoipMetrics::from_bytes(b.bytes).ok())
    }
}

/// One packet of a compound RTCP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RtcpPacket<'a> {
    /// Sender report.
    SenderReport(SenderReport<'a>),
    /// Receiver report.
    ReceiverReport(ReceiverReport<'a>),
    /// Source description.
    Sdes(Sdes<'a>),
    /// Goodbye.
    Bye(Bye<'a>),
    /// Extended report.
    Xr(Xr<'a>),
    /// Any other packet type (APP, feedback, ...), skipped by this module.
    Unknown {
        /// Its packet type.
        packet_type: u8,
        /// Its bytes after the 4-byte header, padding removed.
        body: &'a [u8],
    },
}

/// A compound RTCP packet whose structure and known bodies have been checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compound<'a> {
    bytes: &'a [u8],
}

impl<'a> Compound<'a> {
    /// Checks `datagram` as a compound RTCP packet (RFC 3550 §6.1, Appendix A.2) and the
    /// body of every SR, RR, SDES, BYE and XR in it. Never panics, never allocates.
    pub fn parse(datagram: &'a [u8]) -> Result<Self, RtcpError> {
        Self::check(datagram, true)
    }

    /// [`Self::parse`] with RFC 5506 §3.4.2's validity checks: a reduced-size
    /// (non-compound) RTCP packet may start with any packet type (a lone BYE, APP or
    /// feedback packet), everything else is checked as for a compound one. A receiver
    /// takes both kinds this way; baresip, offering `a=rtcp-rsize`, sends a lone APP at
    /// the start of a call and a lone BYE at its end.
    pub fn parse_reduced_size(datagram: &'a [u8]) -> Result<Self, RtcpError> {
        Self::check(datagram, false)
    }

    fn check(datagram: &'a [u8], report_first: bool) -> Result<Self, RtcpError> {
        let mut rest = datagram;
        let mut first = report_first;
        if datagram.is_empty() {
            return Err(RtcpError::TooShort {
                expected: 4,
                actual: 0,
            });
        }
        while !rest.is_empty() {
            let (pkt, next) = split_packet(rest)?;
            if first && pkt.packet_type != PT_SR && pkt.packet_type != PT_RR {
                return Err(RtcpError::NotReportFirst {
                    packet_type: pkt.packet_type,
                });
            }
            if pkt.padded && !next.is_empty() {
                return Err(RtcpError::BadPadding);
            }
            parse_body(&pkt)?;
            first = false;
            rest = next;
        }
        Ok(Compound { bytes: datagram })
    }

    /// The packets in order.
    pub fn packets(&self) -> impl Iterator<Item = RtcpPacket<'a>> + 'a {
        let mut rest = self.bytes;
        std::iter::from_fn(move || {
            // Checked in `parse`: neither call fails on these bytes.
            let (pkt, next) = split_packet(rest).ok()?;
            rest = next;
            parse_body(&pkt).ok()
        })
    }

    /// The datagram's bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }
}

/// Is this datagram RTCP rather than RTP when both share a port? RFC 5761 §4: RTCP
/// packet types 192–223 fall where RTP would carry marker-bit payload types 64–95, which
/// are never assigned for RTP.
pub fn is_rtcp(datagram: &[u8]) -> bool {
    matches!(datagram, [b0, b1, ..] if b0 >> 6 == 2 && (192..=223).contains(b1))
}

/// A packet's header fields and body slice.
struct RawPacket<'a> {
    count: u8,
    packet_type: u8,
    padded: bool,
    /// After the 4-byte header, padding removed.
    body: &'a [u8],
}

fn be32(b: &[u8], at: usize) -> u32 {
    match b.get(at..at + 4) {
        Some(&[x0, x1, x2, x3]) => u32::from_be_bytes([x0, x1, x2, x3]),
        _ => 0,
    }
}

/// Splits the first packet off `buf`, checking version, length and padding.
fn split_packet(buf: &[u8]) -> Result<(RawPacket<'_>, &[u8]), RtcpError> {
    let Some(&[b0, b1, l0, l1]) = buf.first_chunk::<4>() else {
        return Err(RtcpError::TooShort {
            expected: 4,
            actual: buf.len(),
        });
    };
    if b0 >> 6 != 2 {
        return Err(RtcpError::BadVersion { actual: b0 >> 6 });
    }
    let declared = (usize::from(u16::from_be_bytes([l0, l1])) + 1) * 4;
    let Some((pkt, next)) = buf.split_at_checked(declared) else {
        return Err(RtcpError::LengthOverrun {
            declared,
            available: buf.len(),
        });
    };
    let padded = b0 & 0x20 != 0;
    let mut body = &pkt[4..];
    if padded {
        // RFC 3550 §6.4.1: the last octet counts the padding octets, itself included.
        let pad = usize::from(*body.last().unwrap_or(&0));
        if pad == 0 || pad > body.len() {
            return Err(RtcpError::BadPadding);
        }
        body = &body[..body.len() - pad];
    }
    Ok((
        RawPacket {
            count: b0 & 0x1F,
            packet_type: b1,
            padded,
            body,
        },
        next,
    ))
}

/// Checks and types one packet's body.
fn parse_body<'a>(p: &RawPacket<'a>) -> Result<RtcpPacket<'a>, RtcpError> {
    let ty = p.packet_type;
    let count_overrun = RtcpError::CountOverrun {
        packet_type: ty,
        count: p.count,
    };
    let blocks_len = usize::from(p.count) * REPORT_BLOCK_BYTES;
    match ty {
        PT_SR => {
            let Some((head, rest)) = p.body.split_first_chunk::<{ 4 + SENDER_INFO_BYTES }>() else {
                return Err(RtcpError::TooShort {
                    expected: 4 + 4 + SENDER_INFO_BYTES,
                    actual: 4 + p.body.len(),
                });
            };
            // Bytes after the blocks are profile-specific extensions (§6.4.3): ignored.
            let blocks = rest.get(..blocks_len).ok_or(count_overrun)?;
            let info_bytes = head[4..].first_chunk::<SENDER_INFO_BYTES>();
            Ok(RtcpPacket::SenderReport(SenderReport {
                ssrc: be32(head, 0),
                info: info_bytes.map(SenderInfo::parse).unwrap_or_default(),
                blocks: ReportBlocks { bytes: blocks },
            }))
        }
        PT_RR => {
            let Some((head, rest)) = p.body.split_first_chunk::<4>() else {
                return Err(RtcpError::TooShort {
                    expected: 8,
                    actual: 4 + p.body.len(),
                });
            };
            let blocks = rest.get(..blocks_len).ok_or(count_overrun)?;
            Ok(RtcpPacket::ReceiverReport(ReceiverReport {
                ssrc: be32(head, 0),
                blocks: ReportBlocks { bytes: blocks },
            }))
        }
        PT_SDES => {
            let mut rest = p.body;
            for _ in 0..p.count {
                if rest.is_empty() {
                    return Err(count_overrun);
                }
                let (_, _, next) = sdes_chunk(rest)?;
                rest = next;
            }
            Ok(RtcpPacket::Sdes(Sdes {
                count: p.count,
                body: p.body,
            }))
        }
        PT_BYE => {
            let n = usize::from(p.count) * 4;
            let (ssrcs, rest) = p.body.split_at_checked(n).ok_or(count_overrun)?;
            let reason = match rest {
                [] => None,
                [len, tail @ ..] => Some(
                    tail.get(..usize::from(*len))
                        .ok_or(RtcpError::ItemOverrun { packet_type: ty })?,
                ),
            };
            Ok(RtcpPacket::Bye(Bye { ssrcs, reason }))
        }
        PT_XR => {
            let Some((head, blocks)) = p.body.split_first_chunk::<4>() else {
                return Err(RtcpError::TooShort {
                    expected: 8,
                    actual: 4 + p.body.len(),
                });
            };
            let mut rest = blocks;
            while let Some((_, next)) = xr_block(rest)? {
                rest = next;
            }
            Ok(RtcpPacket::Xr(Xr {
                ssrc: be32(head, 0),
                blocks,
            }))
        }
        _ => Ok(RtcpPacket::Unknown {
            packet_type: ty,
            body: p.body,
        }),
    }
}

/// One SDES chunk (RFC 3550 §6.5): SSRC, items, a null item and padding to 32 bits.
/// Returns `(ssrc, items before the terminator, rest after the chunk)`.
fn sdes_chunk(buf: &[u8]) -> Result<(u32, &[u8], &[u8]), RtcpError> {
    let overrun = RtcpError::ItemOverrun {
        packet_type: PT_SDES,
    };
    let Some((ssrc, items)) = buf.split_first_chunk::<4>() else {
        return Err(overrun);
    };
    let mut i = 0;
    loop {
        match items.get(i) {
            None => return Err(overrun),
            Some(0) => break,
            Some(_) => {
                let len = usize::from(*items.get(i + 1).ok_or(overrun)?);
                i += 2 + len;
                if i > items.len() {
                    return Err(overrun);
                }
            }
        }
    }
    // The chunk ends after the terminating null, padded to the next 32-bit boundary
    // (4 bytes of SSRC are already aligned).
    let end = (i + 1).div_ceil(4) * 4;
    let rest = items.get(end..).ok_or(overrun)?;
    Ok((u32::from_be_bytes(*ssrc), &items[..i], rest))
}

/// One XR block (RFC 3611 §3): `None` at the end of the blocks.
fn xr_block(buf: &[u8]) -> Result<Option<(XrBlock<'_>, &[u8])>, RtcpError> {
    if buf.is_empty() {
        return Ok(None);
    }
    let Some(&[bt, ts, l0, l1]) = buf.first_chunk::<4>() else {
        return Err(RtcpError::ItemOverrun { packet_type: PT_XR });
    };
    let len = (usize::from(u16::from_be_bytes([l0, l1])) + 1) * 4;
    let (bytes, rest) = buf
        .split_at_checked(len)
        .ok_or(RtcpError::ItemOverrun { packet_type: PT_XR })?;
    Ok(Some((
        XrBlock {
            block_type: bt,
            type_specific: ts,
            bytes,
        },
        rest,
    )))
}

/// Appends RTCP packets into a caller-provided buffer, building one compound packet.
/// Every method either writes a whole packet or nothing. Never allocates.
#[derive(Debug)]
pub struct CompoundWriter<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> CompoundWriter<'a> {
    /// A writer over `buf`, empty.
    pub fn new(buf: &'a mut [u8]) -> Self {
        CompoundWriter { buf, len: 0 }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True before anything was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The compound packet written so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Ends the compound packet, returning its length.
    pub fn finish(self) -> usize {
        self.len
    }

    /// Reserves `size` bytes (a multiple of 4) for one packet and writes its header.
    fn packet(&mut self, count: u8, packet_type: u8, size: usize) -> Result<&mut [u8], RtcpError> {
        let available = self.buf.len() - self.len;
        let out = self
            .buf
            .get_mut(self.len..self.len + size)
            .ok_or(RtcpError::BufferTooSmall {
                needed: size,
                available,
            })?;
        out[0] = 0x80 | (count & 0x1F);
        out[1] = packet_type;
        // Callers keep sizes under 2^18 bytes, so the word count fits 16 bits.
        out[2..4].copy_from_slice(&((size / 4 - 1) as u16).to_be_bytes());
        self.len += size;
        Ok(out)
    }

    fn check_blocks(blocks: &[ReportBlock]) -> Result<(), RtcpError> {
        if blocks.len() > MAX_REPORT_BLOCKS {
            return Err(RtcpError::TooMany {
                limit: MAX_REPORT_BLOCKS,
                actual: blocks.len(),
            });
        }
        Ok(())
    }

    /// Appends a sender report (RFC 3550 §6.4.1) from `ssrc` with `blocks` (at most 31).
    pub fn sender_report(
        &mut self,
        ssrc: u32,
        info: &SenderInfo,
        blocks: &[ReportBlock],
    ) -> Result<(), RtcpError> {
        Self::check_blocks(blocks)?;
        let size = 8 + SENDER_INFO_BYTES + blocks.len() * REPORT_BLOCK_BYTES;
        let out = self.packet(blocks.len() as u8, PT_SR, size)?;
        out[4..8].copy_from_slice(&ssrc.to_be_bytes());
        info.write(&mut out[8..8 + SENDER_INFO_BYTES]);
        write_blocks(&mut out[8 + SENDER_INFO_BYTES..], blocks);
        Ok(())
    }

    /// Appends a receiver report (RFC 3550 §6.4.2) from `ssrc` with `blocks` (at most 31).
    pub fn receiver_report(&mut self, ssrc: u32, blocks: &[ReportBlock]) -> Result<(), RtcpError> {
        Self::check_blocks(blocks)?;
        let size = 8 + blocks.len() * REPORT_BLOCK_BYTES;
        let out = self.packet(blocks.len() as u8, PT_RR, size)?;
        out[4..8].copy_from_slice(&ssrc.to_be_bytes());
        write_blocks(&mut out[8..], blocks);
        Ok(())
    }

    /// Appends an SDES packet with one chunk: `ssrc` and its CNAME item (RFC 3550 §6.5.1),
    /// every compound packet must carry one.
    pub fn sdes_cname(&mut self, ssrc: u32, cname: &[u8]) -> Result<(), RtcpError> {
        if cname.len() > MAX_CNAME_BYTES {
            return Err(RtcpError::TooMany {
                limit: MAX_CNAME_BYTES,
                actual: cname.len(),
            });
        }
        // SSRC, type, length, the name, then at least one null octet up to a 32-bit
        // boundary (§6.5: the item list ends with a null item, the chunk is padded).
        let chunk = (4 + 2 + cname.len() + 1).div_ceil(4) * 4;
        let out = self.packet(1, PT_SDES, 4 + chunk)?;
        out[4..8].copy_from_slice(&ssrc.to_be_bytes());
        out[8] = SDES_CNAME;
        out[9] = cname.len() as u8;
        out[10..10 + cname.len()].copy_from_slice(cname);
        out[10 + cname.len()..].fill(0);
        Ok(())
    }

    /// Appends a BYE (RFC 3550 §6.6) for `ssrc`, without a reason.
    pub fn bye(&mut self, ssrc: u32) -> Result<(), RtcpError> {
        let out = self.packet(1, PT_BYE, 8)?;
        out[4..8].copy_from_slice(&ssrc.to_be_bytes());
        Ok(())
    }

    /// Appends an XR packet (RFC 3611 §2) from `ssrc` carrying one VoIP Metrics block
    /// (§4.7) about the source `source_ssrc`.
    pub fn xr_voip_metrics(
        &mut self,
        ssrc: u32,
        source_ssrc: u32,
        metrics: &VoipMetrics,
    ) -> Result<(), RtcpError> {
        let out = self.packet(0, PT_XR, 8 + xr::BLOCK_BYTES)?;
        out[4..8].copy_from_slice(&ssrc.to_be_bytes());
        let mut block = [0u8; xr::BLOCK_BYTES];
        metrics.to_bytes(source_ssrc, &mut block);
        out[8..].copy_from_slice(&block);
        Ok(())
    }
}

fn write_blocks(out: &mut [u8], blocks: &[ReportBlock]) {
    for (chunk, b) in out.chunks_exact_mut(REPORT_BLOCK_BYTES).zip(blocks) {
        if let Some(c) = chunk.first_chunk_mut::<REPORT_BLOCK_BYTES>() {
            b.write(c);
        }
    }
}

/// What one periodic report says, for [`write_report`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Report<'n> {
    /// Our SSRC (the reporter).
    pub ssrc: u32,
    /// `Some` when we sent RTP since the last report: an SR, else an RR (§6.4).
    pub sender: Option<SenderInfo>,
    /// The reception report about the source we receive, if we have heard one.
    pub block: Option<ReportBlock>,
    /// Our CNAME (§6.5.1), at most 255 bytes.
    pub cname: &'n [u8],
    /// An XR VoIP Metrics block about `block`'s source (RFC 3611 §4.7), if any.
    pub voip_metrics: Option<VoipMetrics>,
}

/// Writes a whole compound report into `out`: SR or RR, SDES CNAME, then XR VoIP
/// Metrics when given (RFC 3550 §6.1 order: report first, SDES next). Returns its length.
pub fn write_report(out: &mut [u8], r: &Report<'_>) -> Result<usize, RtcpError> {
    let mut w = CompoundWriter::new(out);
    let blocks: &[ReportBlock] = match &r.block {
        Some(b) => std::slice::from_ref(b),
        None => &[],
    };
    match &r.sender {
        Some(info) => w.sender_report(r.ssrc, info, blocks)?,
        None => w.receiver_report(r.ssrc, blocks)?,
    }
    w.sdes_cname(r.ssrc, r.cname)?;
    if let (Some(m), Some(b)) = (&r.voip_metrics, &r.block) {
        w.xr_voip_metrics(r.ssrc, b.ssrc, m)?;
    }
    Ok(w.finish())
}

/// RFC 3550 Appendix A.3 receive counts of one source, as a report block needs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReceiveCounts {
    /// Packets expected from the extended sequence range.
    pub expected: u64,
    /// Packets received (duplicates included, as A.3 counts them).
    pub received: u64,
    /// Extended highest sequence number received.
    pub highest_seq_ext: u32,
    /// Interarrival jitter, RTP timestamp units.
    pub jitter_ts: u32,
}

impl ReceiveCounts {
    /// The counts of a media-core session. [`SessionStats`] does not carry the extended
    /// highest sequence number, so the transport passes the one it tracked itself
    /// ([`SourceTracker::highest_seq_ext`]).
    ///
    /// `received` is taken as `rx_expected - rx_lost`, both from the session's RFC 3550
    /// sequence tracking, which counts every packet of the stream: audio, keepalives,
    /// RFC 4733 events and RFC 3389 SIDs alike. (`rx_packets` counts audio and
    /// keepalives only, and packets still on probation, so with it every event or SID
    /// packet would read as lost.) `rx_lost` counts the sequence numbers never received;
    /// A.3, which the report's loss fields follow (RFC 3550 §6.4.1), counts duplicates as
    /// received too, so the duplicates sequence tracking caught (`rx_duplicates`) are
    /// added back: with more copies than losses the cumulative loss is negative, as
    /// §6.4.1 allows. (The engine's own quality figures use the losses without that
    /// offset.)
    pub fn from_session_stats(s: &SessionStats, highest_seq_ext: u32) -> Self {
        ReceiveCounts {
            expected: s.rx_expected,
            received: s
                .rx_expected
                .saturating_sub(s.rx_lost)
                .saturating_add(s.rx_duplicates),
            highest_seq_ext,
            jitter_ts: s.rx_jitter_ts.min(u64::from(u32::MAX)) as u32,
        }
    }
}

/// The source a report block is about, tracked by the transport from the RTP packets it
/// hands the engine: its SSRC and RFC 3550 Appendix A.1 extended highest sequence number
/// (probation, `bad_seq` resync on a sequence restart, cycles), which
/// [`SessionStats`] does not publish. Like the lane, another SSRC takes over only with an
/// audio packet that starts a stream (marker) or with two of its packets in a row, so a
/// second source interleaved with the first (forked early media, two sources overlapping
/// at a transfer) does not flip the report's SSRC and sequence between them.
#[derive(Debug, Clone)]
pub struct SourceTracker {
    ssrc: Option<u32>,
    candidate: Option<u32>,
    stats: RtpReceiveStats,
}

impl Default for SourceTracker {
    fn default() -> Self {
        Self {
            ssrc: None,
            candidate: None,
            // The clock only scales jitter, which this tracker does not report.
            stats: RtpReceiveStats::new(8000),
        }
    }
}

impl SourceTracker {
    /// Accounts one received RTP packet: `audio` when it is not an RFC 4733 event (whose
    /// marker starts an event, not a stream: the lane's audio never follows a source for
    /// its events, so another source's events neither take over nor count towards it),
    /// `marker` its marker bit.
    pub fn on_packet(&mut self, ssrc: u32, seq: u16, ts: u32, audio: bool, marker: bool) {
        if self.ssrc.is_some_and(|s| s != ssrc) {
            if !audio {
                return;
            }
            if !marker && self.candidate != Some(ssrc) {
                self.candidate = Some(ssrc);
                return;
            }
            self.stats = RtpReceiveStats::new(8000);
        }
        self.ssrc = Some(ssrc);
        self.candidate = None;
        let _ = self.stats.on_packet(seq, ts, 0);
    }

    /// The source followed, once a packet arrived.
    pub fn ssrc(&self) -> Option<u32> {
        self.ssrc
    }

    /// Its extended highest sequence number (0 until the source is valid).
    pub fn highest_seq_ext(&self) -> u32 {
        self.stats.highest_seq_ext()
    }
}

/// Per-source receiver state behind report blocks: the counts at the previous report
/// (for the interval's fraction lost, Appendix A.3) and the last SR heard (LSR, DLSR).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReceptionState {
    expected_prior: u64,
    received_prior: u64,
    lsr: u32,
    sr_arrival: Option<NtpTime>,
}

impl ReceptionState {
    /// Nothing heard yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records an SR from the source, received at `arrival` (for LSR/DLSR).
    pub fn on_sender_report(&mut self, info: &SenderInfo, arrival: NtpTime) {
        self.lsr = info.ntp.middle32();
        self.sr_arrival = Some(arrival);
    }

    /// The report block about source `ssrc` at time `now`, and starts a new interval.
    pub fn report_block(&mut self, ssrc: u32, c: &ReceiveCounts, now: NtpTime) -> ReportBlock {
        // Appendix A.3: fraction lost over the interval since the previous report.
        let expected_interval = c.expected.saturating_sub(self.expected_prior);
        let received_interval = c.received.saturating_sub(self.received_prior);
        self.expected_prior = c.expected;
        self.received_prior = c.received;
        let lost_interval = expected_interval.saturating_sub(received_interval);
        let fraction_lost = if expected_interval == 0 || lost_interval == 0 {
            0
        } else {
            ((lost_interval << 8) / expected_interval).min(255) as u8
        };
        let cumulative = c.expected as i64 - c.received as i64;
        let dlsr = match self.sr_arrival {
            Some(t) => now.middle32().wrapping_sub(t.middle32()),
            None => 0,
        };
        ReportBlock {
            ssrc,
            fraction_lost,
            cumulative_lost: cumulative.clamp(-0x80_0000, 0x7F_FFFF) as i32,
            highest_seq_ext: c.highest_seq_ext,
            jitter: c.jitter_ts,
            lsr: self.lsr,
            dlsr,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> VoipMetrics {
        VoipMetrics {
            loss_rate: 12,
            discard_rate: 3,
            round_trip_delay_ms: 42,
            end_system_delay_ms: 60,
            r_factor: Some(88),
            mos_cq_x10: Some(41),
            jb_nominal_ms: 40,
            jb_maximum_ms: 60,
            jb_abs_max_ms: 200,
            ..VoipMetrics::default()
        }
    }

    fn block() -> ReportBlock {
        ReportBlock {
            ssrc: 0xCAFE_BABE,
            fraction_lost: 25,
            cumulative_lost: -3,
            highest_seq_ext: 0x0001_0005,
            jitter: 77,
            lsr: 0xB705_2000,
            dlsr: 0x0005_4000,
        }
    }

    #[test]
    fn round_trip_matches_the_worked_example_of_rfc3550_section_6_4_1() {
        // RFC 3550 §6.4.1 figure: A = 0xb710:8000 (46864.500 s), LSR = 0xb705:2000
        // (46853.125 s), DLSR = 0x0005:4000 (5.250 s) -> delay 0x0006:2000 (6.125 s).
        let arrival = NtpTime(0xB710_8000u64 << 16);
        assert_eq!(
            round_trip(arrival, 0xB705_2000, 0x0005_4000),
            Some(0x0006_2000)
        );
        let ms = round_trip_ms(arrival, 0xB705_2000, 0x0005_4000).unwrap();
        assert!((ms - 6125.0).abs() < 1e-9, "{ms}");
    }

    #[test]
    fn round_trip_is_none_without_an_sr_or_when_negative() {
        let arrival = NtpTime(0x1000_0000u64 << 16);
        assert_eq!(round_trip(arrival, 0, 0), None);
        // DLSR longer than the time since the SR: clocks disagree.
        assert_eq!(round_trip(arrival, 0x0FFF_0000, 0x0002_0000), None);
        // Wrapping across the 16.16 range is fine: 1 s round trip.
        let arrival = NtpTime(0x0000_8000u64 << 16);
        assert_eq!(round_trip(arrival, 0xFFFF_8000, 0), Some(0x0001_0000));
    }

    #[test]
    fn ntp_time_from_unix_epoch_and_half_second() {
        let t = NtpTime::from_unix(std::time::Duration::new(0, 500_000_000));
        assert_eq!(t.0 >> 32, NTP_UNIX_OFFSET_S);
        assert_eq!(t.0 as u32, 0x8000_0000);
        assert_eq!(t.middle32() & 0xFFFF, 0x8000);
    }

    #[test]
    fn a_source_tracker_follows_a_restart_and_ignores_an_interleaved_source() {
        let mut t = SourceTracker::default();
        for s in [100u16, 101, 102, 40000, 40001, 40002] {
            t.on_packet(7, s, 0, true, false);
        }
        assert_eq!(t.highest_seq_ext() & 0xFFFF, 40002, "A.1 bad_seq resync");
        // A second source interleaved packet by packet never takes over.
        for s in 0..20u16 {
            t.on_packet(9, 500 + s, 0, true, false);
            t.on_packet(7, 40003 + s, 0, true, false);
        }
        assert_eq!((t.ssrc(), t.highest_seq_ext() & 0xFFFF), (Some(7), 40022));
        // Two in a row take over (a new source), as does a marker.
        t.on_packet(9, 600, 0, true, false);
        t.on_packet(9, 601, 0, true, false);
        assert_eq!(t.ssrc(), Some(9));
        t.on_packet(11, 5, 0, true, true);
        assert_eq!(t.ssrc(), Some(11));
        // Another source's events never take over, marker or not, nor count towards it.
        for s in 0..4u16 {
            t.on_packet(12, 100 + s, 0, false, s == 0);
        }
        assert_eq!(t.ssrc(), Some(11));
        // Wraps count cycles.
        let mut t = SourceTracker::default();
        for s in (65530..=65535u16).chain(0..5) {
            t.on_packet(1, s, 0, true, false);
        }
        assert_eq!(t.highest_seq_ext(), 0x1_0004);
    }

    #[test]
    fn report_block_bytes_match_a_block_written_by_hand() {
        let mut out = [0u8; REPORT_BLOCK_BYTES];
        block().write(&mut out);
        #[rustfmt::skip]
        let want = [
            0xCA, 0xFE, 0xBA, 0xBE, // SSRC_1
            25, 0xFF, 0xFF, 0xFD,   // fraction lost, cumulative lost -3 (24-bit)
            0x00, 0x01, 0x00, 0x05, // extended highest sequence number
            0, 0, 0, 77,            // interarrival jitter
            0xB7, 0x05, 0x20, 0x00, // LSR
            0x00, 0x05, 0x40, 0x00, // DLSR
        ];
        assert_eq!(out, want);
        assert_eq!(ReportBlock::parse(&out), Ok(block()));
    }

    #[test]
    fn cumulative_lost_is_clamped_to_24_bits_and_sign_extended() {
        for (v, want) in [(10_000_000, 0x7F_FFFF), (-10_000_000, -0x80_0000), (-1, -1)] {
            let mut out = [0u8; REPORT_BLOCK_BYTES];
            ReportBlock {
                cumulative_lost: v,
                ..block()
            }
            .write(&mut out);
            assert_eq!(ReportBlock::parse(&out).unwrap().cumulative_lost, want);
        }
    }

    #[test]
    fn compound_rr_sdes_xr_matches_bytes_written_by_hand_from_the_rfc_layout() {
        let mut buf = [0u8; 200];
        let n = write_report(
            &mut buf,
            &Report {
                ssrc: 0x0102_0304,
                sender: None,
                block: Some(block()),
                cname: b"gw@h",
                voip_metrics: Some(metrics()),
            },
        )
        .unwrap();
        #[rustfmt::skip]
        let rr = [
            0x81, 201, 0x00, 0x07,  // V=2 P=0 RC=1, PT=RR, length 7 (32 bytes)
            0x01, 0x02, 0x03, 0x04, // SSRC of packet sender
        ];
        #[rustfmt::skip]
        let sdes = [
            0x81, 202, 0x00, 0x03,  // V=2 SC=1, PT=SDES, length 3 (16 bytes)
            0x01, 0x02, 0x03, 0x04, // SSRC/CSRC_1
            1, 4, b'g', b'w',       // CNAME=1, length 4, "gw@h"
            b'@', b'h', 0, 0,       // null item terminator + padding to 32 bits
        ];
        #[rustfmt::skip]
        let xr_head = [
            0x80, 207, 0x00, 0x0A,  // V=2, PT=XR, length 10 (44 bytes)
            0x01, 0x02, 0x03, 0x04, // SSRC of the reporter
            7, 0, 0x00, 0x08,       // BT=7 VoIP metrics, reserved, block length 8
            0xCA, 0xFE, 0xBA, 0xBE, // SSRC of source
            12, 3, 0, 0,            // loss rate, discard rate, burst and gap density
        ];
        let mut rb = [0u8; REPORT_BLOCK_BYTES];
        block().write(&mut rb);
        assert_eq!(n, 32 + 16 + 44);
        assert_eq!(&buf[..8], &rr);
        assert_eq!(&buf[8..32], &rb);
        assert_eq!(&buf[32..48], &sdes);
        assert_eq!(&buf[48..68], &xr_head);
        // Burst and gap durations 0, then RTT 42 ms and end system delay 60 ms
        // (bytes 8..16 of the block, after the 8-byte XR header).
        assert_eq!(&buf[68..72], &[0, 0, 0, 0]);
        assert_eq!(&buf[72..76], &[0, 42, 0, 60]);
    }

    #[test]
    fn sender_report_round_trips_through_parse() {
        let info = SenderInfo {
            ntp: NtpTime(0xB710_8000_1234_5678),
            rtp_timestamp: 160_000,
            packet_count: 1000,
            octet_count: 160_000,
        };
        let mut buf = [0u8; 200];
        let n = write_report(
            &mut buf,
            &Report {
                ssrc: 9,
                sender: Some(info),
                block: Some(block()),
                cname: b"media-core",
                voip_metrics: Some(metrics()),
            },
        )
        .unwrap();
        let c = Compound::parse(&buf[..n]).unwrap();
        let pkts: Vec<_> = c.packets().collect();
        assert_eq!(pkts.len(), 3);
        let RtcpPacket::SenderReport(sr) = pkts[0] else {
            panic!("SR first: {:?}", pkts[0]);
        };
        assert_eq!((sr.ssrc, sr.info), (9, info));
        assert_eq!(sr.blocks.len(), 1);
        assert_eq!(sr.blocks.about(0xCAFE_BABE), Some(block()));
        let RtcpPacket::Sdes(sdes) = pkts[1] else {
            panic!("SDES second");
        };
        assert_eq!(sdes.cnames().collect::<Vec<_>>(), [(9, &b"media-core"[..])]);
        let RtcpPacket::Xr(x) = pkts[2] else {
            panic!("XR third");
        };
        assert_eq!(x.ssrc, 9);
        assert_eq!(x.voip_metrics(), Some((0xCAFE_BABE, metrics())));
    }

    #[test]
    fn cnames_of_every_length_pad_to_32_bits_and_round_trip() {
        for len in 0..=MAX_CNAME_BYTES {
            let name = vec![b'x'; len];
            let mut buf = [0u8; 400];
            let mut w = CompoundWriter::new(&mut buf);
            w.receiver_report(1, &[]).unwrap();
            w.sdes_cname(1, &name).unwrap();
            let n = w.finish();
            assert_eq!(n % 4, 0);
            let c = Compound::parse(&buf[..n]).unwrap();
            let got: Vec<_> = c
                .packets()
                .filter_map(|p| match p {
                    RtcpPacket::Sdes(s) => s.cnames().next(),
                    _ => None,
                })
                .collect();
            assert_eq!(got, [(1, &name[..])], "length {len}");
        }
        let mut buf = [0u8; 400];
        let long = [b'y'; 256];
        assert!(matches!(
            CompoundWriter::new(&mut buf).sdes_cname(1, &long),
            Err(RtcpError::TooMany { limit: 255, .. })
        ));
    }

    #[test]
    fn a_buffer_too_small_is_an_error_and_writes_no_partial_packet() {
        let mut buf = [0u8; 40];
        let mut w = CompoundWriter::new(&mut buf);
        w.receiver_report(1, &[block()]).unwrap();
        assert_eq!(
            w.sdes_cname(1, b"a-long-enough-name"),
            Err(RtcpError::BufferTooSmall {
                needed: 32,
                available: 8
            })
        );
        assert_eq!(w.len(), 32);
        assert!(Compound::parse(w.as_bytes()).is_ok());
        let too_many = [block(); 32];
        assert!(matches!(
            w.receiver_report(1, &too_many),
            Err(RtcpError::TooMany { limit: 31, .. })
        ));
    }

    #[test]
    fn bye_and_unknown_packets_parse_and_unknown_types_are_skipped() {
        #[rustfmt::skip]
        let pkt = [
            0x80, 201, 0, 1, 0, 0, 0, 5,               // RR, no blocks
            0x80, 204, 0, 2, 0, 0, 0, 5, b'n', b'a', b'm', b'e', // APP
            0x81, 203, 0, 2, 0, 0, 0, 5, 3, b'b', b'y', b'e',     // BYE with reason
        ];
        let c = Compound::parse(&pkt).unwrap();
        let v: Vec<_> = c.packets().collect();
        assert!(matches!(
            v[1],
            RtcpPacket::Unknown {
                packet_type: 204,
                ..
            }
        ));
        let RtcpPacket::Bye(b) = v[2] else {
            panic!("BYE")
        };
        assert_eq!(b.ssrcs().collect::<Vec<_>>(), [5]);
        assert_eq!(b.reason, Some(&b"bye"[..]));
    }

    /// RFC 5506 reduced-size RTCP (a lone BYE or APP, as baresip sends them) is taken by
    /// `parse_reduced_size` and refused by the compound check; the other checks stay.
    #[test]
    fn reduced_size_rtcp_starts_with_any_packet_type() {
        #[rustfmt::skip]
        let bye = [0x81, 203, 0, 1, 0, 0, 0, 9];
        #[rustfmt::skip]
        let app = [0x80, 204, 0, 2, 0, 0, 0, 9, b'P', b'I', b'N', b'G'];
        for d in [&bye[..], &app[..]] {
            assert_eq!(
                Compound::parse(d),
                Err(RtcpError::NotReportFirst { packet_type: d[1] })
            );
            let c = Compound::parse_reduced_size(d).unwrap();
            assert_eq!(c.packets().count(), 1);
        }
        let RtcpPacket::Bye(b) = Compound::parse_reduced_size(&bye)
            .unwrap()
            .packets()
            .next()
            .unwrap()
        else {
            panic!("BYE")
        };
        assert_eq!(b.ssrcs().collect::<Vec<_>>(), [9]);
        // Still checked: version, lengths, padding only on the last packet.
        let mut v1 = bye;
        v1[0] = 0x41;
        assert!(Compound::parse_reduced_size(&v1).is_err());
        assert!(Compound::parse_reduced_size(&bye[..6]).is_err());
        let mut padded_first = [0u8; 20];
        padded_first[..8].copy_from_slice(&bye);
        padded_first[0] |= 0x20; // padding bit on a packet that is not the last
        padded_first[8..].copy_from_slice(&app);
        assert!(Compound::parse_reduced_size(&padded_first).is_err());
        // A compound one is taken as well.
        let mut rr = [0u8; 32];
        let n = CompoundWriter::new(&mut rr)
            .receiver_report(1, &[block()])
            .map(|_| 32)
            .unwrap();
        assert!(Compound::parse_reduced_size(&rr[..n]).is_ok());
    }

    #[test]
    fn malformed_compounds_are_typed_errors() {
        let mut rr = [0u8; 32];
        CompoundWriter::new(&mut rr)
            .receiver_report(1, &[block()])
            .unwrap();
        // Truncated at every length.
        for n in 0..rr.len() {
            assert!(Compound::parse(&rr[..n]).is_err(), "length {n}");
        }
        let mut bad = rr;
        bad[0] = 0x41; // version 1
        assert_eq!(
            Compound::parse(&bad),
            Err(RtcpError::BadVersion { actual: 1 })
        );
        let mut bad = rr;
        bad[0] = 0x82; // two blocks claimed, one present
        assert_eq!(
            Compound::parse(&bad),
            Err(RtcpError::CountOverrun {
                packet_type: PT_RR,
                count: 2
            })
        );
        let mut bad = rr;
        bad[3] = 9; // length past the datagram
        assert_eq!(
            Compound::parse(&bad),
            Err(RtcpError::LengthOverrun {
                declared: 40,
                available: 32
            })
        );
        // SDES first is not a valid compound.
        let mut s = [0u8; 16];
        CompoundWriter::new(&mut s).sdes_cname(1, b"ab").unwrap();
        assert_eq!(
            Compound::parse(&s),
            Err(RtcpError::NotReportFirst {
                packet_type: PT_SDES
            })
        );
        // Padding on the first of two packets, and padding larger than the packet.
        let mut two = [0u8; 64];
        let n = {
            let mut w = CompoundWriter::new(&mut two);
            w.receiver_report(1, &[block()]).unwrap();
            w.bye(1).unwrap();
            w.finish()
        };
        two[0] |= 0x20;
        two[31] = 4;
        assert_eq!(Compound::parse(&two[..n]), Err(RtcpError::BadPadding));
        let mut last = [0x80 | 0x20, 201, 0, 1, 0, 0, 0, 9];
        assert_eq!(Compound::parse(&last), Err(RtcpError::BadPadding));
        last[7] = 4; // four bytes of padding: the SSRC is gone
        assert!(matches!(
            Compound::parse(&last),
            Err(RtcpError::TooShort { .. })
        ));
    }

    #[test]
    fn an_xr_block_past_its_packet_is_an_error_and_a_bad_voip_block_is_skipped() {
        let mut buf = [0u8; 128];
        let n = {
            let mut w = CompoundWriter::new(&mut buf);
            w.receiver_report(1, &[]).unwrap();
            w.xr_voip_metrics(1, 2, &metrics()).unwrap();
            w.finish()
        };
        let mut bad = buf;
        bad[8 + 8 + 3] = 9; // block length 9 words: past the packet
        assert_eq!(
            Compound::parse(&bad[..n]),
            Err(RtcpError::ItemOverrun { packet_type: PT_XR })
        );
        // A type-7 block of the wrong (but in-bounds) length: parsed, metrics skipped.
        #[rustfmt::skip]
        let short = [0x80, 201, 0, 1, 0, 0, 0, 1,  0x80, 207, 0, 2, 0, 0, 0, 1,  7, 0, 0, 0];
        let c = Compound::parse(&short).unwrap();
        let xr = c.packets().find_map(|p| match p {
            RtcpPacket::Xr(x) => Some(x),
            _ => None,
        });
        assert_eq!(xr.map(|x| x.blocks().count()), Some(1));
        assert_eq!(xr.and_then(|x| x.voip_metrics()), None);
    }

    #[test]
    fn garbage_never_panics_and_accepted_garbage_walks_cleanly() {
        // xorshift: deterministic pseudo-random datagrams, many shaped like RTCP.
        let mut s = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let mut accepted = 0;
        for i in 0..20_000 {
            let len = (next() % 96) as usize;
            let mut buf = [0u8; 96];
            for b in buf.iter_mut() {
                *b = next() as u8;
            }
            if i % 2 == 0 && len >= 4 {
                // Make half of them plausible: version 2, an RTCP type, small lengths.
                buf[0] = 0x80 | (buf[0] & 0x3F);
                buf[1] = 200 + (buf[1] % 8);
                buf[2] = 0;
                buf[3] %= (len / 4) as u8 + 1;
            }
            let d = &buf[..len];
            let _ = is_rtcp(d);
            if let Ok(c) = Compound::parse(d) {
                accepted += 1;
                for p in c.packets() {
                    match p {
                        RtcpPacket::SenderReport(r) => assert!(r.blocks.iter().count() <= 31),
                        RtcpPacket::ReceiverReport(r) => assert!(r.blocks.iter().count() <= 31),
                        RtcpPacket::Sdes(x) => {
                            let _ = x.cnames().count();
                        }
                        RtcpPacket::Bye(b) => {
                            let _ = b.ssrcs().count();
                        }
                        RtcpPacket::Xr(x) => {
                            let _ = (x.blocks().count(), x.voip_metrics());
                        }
                        RtcpPacket::Unknown { .. } => {}
                    }
                }
            }
        }
        assert!(accepted > 0, "some plausible datagrams should parse");
    }

    #[test]
    fn reception_state_reports_interval_fraction_lost_lsr_and_dlsr() {
        let mut st = ReceptionState::new();
        let t0 = NtpTime(1000u64 << 32);
        let c1 = ReceiveCounts {
            expected: 100,
            received: 90,
            highest_seq_ext: 0x0001_0063,
            jitter_ts: 40,
        };
        let b1 = st.report_block(7, &c1, t0);
        assert_eq!(b1.fraction_lost, (10 * 256 / 100) as u8); // 25
        assert_eq!(b1.cumulative_lost, 10);
        assert_eq!((b1.lsr, b1.dlsr), (0, 0), "no SR heard yet");
        assert_eq!((b1.highest_seq_ext, b1.jitter), (0x0001_0063, 40));
        // An SR arrives at t0 + 1 s; the next report goes out 0.5 s later.
        let sr = SenderInfo {
            ntp: NtpTime(0xB705_2000u64 << 16),
            ..SenderInfo::default()
        };
        st.on_sender_report(&sr, NtpTime(t0.0 + (1 << 32)));
        let c2 = ReceiveCounts {
            expected: 200,
            received: 190,
            ..c1
        };
        let b2 = st.report_block(7, &c2, NtpTime(t0.0 + (3 << 31)));
        assert_eq!(b2.fraction_lost, 0, "no loss in the second interval");
        assert_eq!(b2.cumulative_lost, 10);
        assert_eq!(b2.lsr, 0xB705_2000);
        assert_eq!(b2.dlsr, 0x8000, "0.5 s in 1/65536 s");
        // Duplicates beyond the expected count: negative cumulative loss, fraction 0.
        let c3 = ReceiveCounts {
            expected: 210,
            received: 215,
            ..c1
        };
        let b3 = st.report_block(7, &c3, t0);
        assert_eq!((b3.fraction_lost, b3.cumulative_lost), (0, -5));
    }

    #[test]
    fn is_rtcp_separates_rtcp_from_rtp_on_a_shared_port() {
        assert!(is_rtcp(&[0x81, 201, 0, 1]));
        assert!(is_rtcp(&[0x80, 200]));
        assert!(!is_rtcp(&[0x80, 0, 0, 1])); // RTP PCMU
        assert!(!is_rtcp(&[0x80, 0x80 | 8])); // RTP PCMA with marker
        assert!(!is_rtcp(&[0x81]));
        assert!(!is_rtcp(&[0x00, 201]));
    }
}
