//! RTCP for one leg of an example transport (RFC 3550 §6): what the transport must track
//! beside media-core to report on a session and to learn from the peer's reports. Shared
//! by `common/udp_media.rs` (fixed legs) and `sip/media_io.rs` (the SIP gateway's legs).
//!
//! - received RTP -> [`RtcpLeg::on_rtp_in`]: the source and its extended highest
//!   sequence number ([`SourceTracker`]), which media-core's counters do not carry;
//! - sent RTP -> [`RtcpLeg::on_rtp_out`]: the sender report's packet and octet counts,
//!   per SSRC (they start again when the engine starts a new one, RFC 7160 / RFC 3550
//!   §6.4.1), and the RTP time of the newest timestamp;
//! - received RTCP (compound or reduced-size, RFC 5506) -> [`RtcpLeg::on_rtcp`]: the
//!   round-trip time (§6.4.1) and the loss the peer reports for our stream, which the
//!   caller feeds to `MediaEngine::set_round_trip` and `MediaEngine::set_peer_loss` (Opus
//!   adaptation follows it);
//! - [`RtcpLeg::write_report`]: an SR (or RR when nothing was sent since the last report)
//!   with a report block from the session's counters, SDES CNAME and an RFC 3611 VoIP
//!   Metrics block, and a BYE at the end.
//!
//! It never touches the engine itself: where the counters come from (the engine, or the
//! lane's ingress handle without the engine's lock) is the caller's choice.

#![allow(dead_code)] // each example uses a different part of this module

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use media_core::integration::rtcp::{
    self, round_trip_ms, Compound, NtpTime, ReceiveCounts, ReceptionState, Report, RtcpPacket,
    SenderInfo, SourceTracker,
};
use media_core::quality::xr::VoipMetrics;
use media_core::quality::SessionStats;
use media_core::rtp::{RtpHeader, RtpPacket};
use media_core::SessionId;

/// What a peer's report block said about the stream we send.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PeerReport {
    /// Fraction lost over the peer's last interval, × 256.
    pub fraction_lost: u8,
    /// Cumulative packets lost (RFC 3550 A.3; negative with duplicates).
    pub cumulative_lost: i32,
    /// The extended highest sequence number the peer received (for
    /// `MediaEngine::set_peer_loss`: it grows by the packets expected).
    pub highest_seq_ext: u32,
    /// Round-trip time from LSR/DLSR, ms (`None` before the peer heard an SR of ours).
    pub rtt_ms: Option<f64>,
}

/// The last report a peer gave about our stream, as counters the control plane reads.
#[derive(Debug, Default)]
pub struct PeerCounters {
    /// The last round-trip time, µs (0: none yet).
    pub rtt_us: AtomicU64,
    /// The last fraction lost of our stream, × 256.
    pub fraction_lost: AtomicU64,
    /// The last cumulative loss of our stream (RFC 3550 A.3, at least 0).
    pub cumulative_lost: AtomicU64,
}

impl PeerCounters {
    /// Keeps `r`'s figures (a round trip only if it had one).
    pub fn record(&self, r: &PeerReport) {
        self.fraction_lost
            .store(u64::from(r.fraction_lost), Ordering::Relaxed);
        self.cumulative_lost
            .store(r.cumulative_lost.max(0) as u64, Ordering::Relaxed);
        if let Some(rtt) = r.rtt_ms {
            self.rtt_us.store((rtt * 1000.0) as u64, Ordering::Relaxed);
        }
    }
}

/// What one received RTCP compound packet gave.
#[derive(Debug, Default)]
pub struct RtcpIn {
    /// The last report block about our stream in it.
    pub report: Option<PeerReport>,
    /// A BYE was in it.
    pub bye: bool,
    /// The peer's RFC 3611 VoIP Metrics block about the stream we send, if it sent one.
    pub voip_metrics: Option<VoipMetrics>,
}

/// RTCP state of one leg (one media-core session).
#[derive(Debug)]
pub struct RtcpLeg {
    session: SessionId,
    /// The source we receive and its extended highest sequence number.
    pub rx: SourceTracker,
    reception: ReceptionState,
    /// The SSRC media-core was told to send with, if any.
    configured_ssrc: Option<u32>,
    /// SSRC of the packets sent (from the newest one popped).
    tx_ssrc: Option<u32>,
    tx_packets: u32,
    tx_octets: u32,
    sent_since_report: bool,
    /// Last RTP timestamp sent and when, to place the SR's RTP timestamp (§6.4.1).
    last_tx: Option<(u32, Instant)>,
    /// RTP clock rate of what this leg sends, Hz.
    clock_rate_hz: u32,
    /// The RTP clock of each voice payload type sent (the current one and the one before
    /// a re-INVITE): the SR's RTP time follows the clock of the packets actually sent,
    /// whichever side of a codec change the lane is on.
    clocks: [Option<(u8, u32)>; 2],
    /// The RFC 4733 telephone-event payload type received, if negotiated.
    event_pt: Option<u8>,
    cname: String,
}

impl RtcpLeg {
    /// A leg for `session`, sending payload type `voice_pt` (if known) at `clock_rate_hz`
    /// (with `ssrc` if media-core was told one), receiving telephone-event on `event_pt`.
    pub fn new(
        session: SessionId,
        ssrc: Option<u32>,
        voice_pt: Option<u8>,
        clock_rate_hz: u32,
        event_pt: Option<u8>,
        cname: String,
    ) -> RtcpLeg {
        RtcpLeg {
            session,
            rx: SourceTracker::default(),
            reception: ReceptionState::new(),
            configured_ssrc: ssrc,
            tx_ssrc: None,
            tx_packets: 0,
            tx_octets: 0,
            sent_since_report: false,
            last_tx: None,
            clock_rate_hz,
            clocks: [voice_pt.map(|pt| (pt, clock_rate_hz)), None],
            event_pt,
            cname,
        }
    }

    /// A re-INVITE changed what the leg sends (voice payload type `voice_pt` at
    /// `clock_rate_hz`) or receives (telephone-event on `event_pt`). The SR's clock follows
    /// when the packets sent carry `voice_pt` (the lane switches at its next tick).
    pub fn renegotiated(&mut self, voice_pt: u8, clock_rate_hz: u32, event_pt: Option<u8>) {
        self.event_pt = event_pt;
        if self.clocks[0].is_some_and(|(pt, _)| pt != voice_pt) {
            self.clocks[1] = self.clocks[0];
        }
        self.clocks[0] = Some((voice_pt, clock_rate_hz));
    }

    /// Our SSRC for RTCP: the one media-core sends with, or one derived from the session
    /// before the first packet went out.
    pub fn ssrc(&self) -> u32 {
        self.tx_ssrc
            .or(self.configured_ssrc)
            .unwrap_or(self.session.to_u64() as u32 ^ 0x5EED_0000)
    }

    /// An RTP packet received for this leg.
    pub fn on_rtp_in(&mut self, pkt: &RtpPacket) {
        // (An audio packet's marker starts a stream; an event's starts an event.)
        let audio = Some(pkt.payload_type()) != self.event_pt;
        self.rx.on_packet(
            pkt.ssrc(),
            pkt.sequence(),
            pkt.timestamp(),
            audio,
            pkt.marker(),
        );
    }

    /// An RTP packet of `bytes` bytes (header included) sent on this leg.
    pub fn on_rtp_out(&mut self, h: &RtpHeader, bytes: usize) {
        if self.tx_ssrc != Some(h.ssrc) {
            // A new source (the engine starts one when the send clock changes, RFC 7160):
            // its sender report counts and RTP time start afresh (RFC 3550 §6.4.1).
            self.tx_ssrc = Some(h.ssrc);
            self.tx_packets = 0;
            self.tx_octets = 0;
            self.last_tx = None;
        }
        if let Some((_, hz)) = self
            .clocks
            .iter()
            .flatten()
            .find(|(pt, _)| *pt == h.payload_type)
        {
            self.clock_rate_hz = *hz;
        }
        // The sender report's RTP time is extrapolated from the newest timestamp sent:
        // RFC 4733 packets repeat their event's start timestamp for as long as the digit
        // lasts, so they must not move its wall-clock reference.
        if self
            .last_tx
            .is_none_or(|(ts, _)| (h.timestamp.wrapping_sub(ts) as i32) > 0)
        {
            self.last_tx = Some((h.timestamp, Instant::now()));
        }
        self.tx_packets = self.tx_packets.wrapping_add(1);
        self.tx_octets = self.tx_octets.wrapping_add(bytes.saturating_sub(12) as u32);
        self.sent_since_report = true;
    }

    /// A received RTCP packet (compound or reduced-size): the sender report's time for
    /// our next report block, and what the peer's report block about our stream says.
    pub fn on_rtcp(&mut self, d: &[u8]) -> Result<RtcpIn, rtcp::RtcpError> {
        let now = NtpTime::now();
        // Compound or reduced-size (RFC 5506): a lone APP or BYE is a valid packet too.
        let c = Compound::parse_reduced_size(d)?;
        let ours = self.ssrc();
        let mut got = RtcpIn::default();
        for p in c.packets() {
            let blocks = match p {
                RtcpPacket::SenderReport(sr) => {
                    if Some(sr.ssrc) == self.rx.ssrc() {
                        self.reception.on_sender_report(&sr.info, now);
                    }
                    sr.blocks
                }
                RtcpPacket::ReceiverReport(rr) => rr.blocks,
                RtcpPacket::Bye(_) => {
                    got.bye = true;
                    continue;
                }
                RtcpPacket::Xr(x) => {
                    got.voip_metrics = x
                        .voip_metrics()
                        .filter(|(about, _)| *about == ours)
                        .map(|(_, m)| m)
                        .or(got.voip_metrics);
                    continue;
                }
                _ => continue,
            };
            let Some(b) = blocks.about(ours) else {
                continue;
            };
            got.report = Some(PeerReport {
                fraction_lost: b.fraction_lost,
                cumulative_lost: b.cumulative_lost,
                highest_seq_ext: b.highest_seq_ext,
                rtt_ms: round_trip_ms(now, b.lsr, b.dlsr),
            });
        }
        Ok(got)
    }

    /// Writes this leg's report into `out` (SR or RR, a report block from the session's
    /// counters `stats` if it has a source, CNAME, `voip_metrics` if given, and a BYE if
    /// `bye`); returns its length, `None` if it did not fit.
    pub fn write_report(
        &mut self,
        stats: Option<&SessionStats>,
        voip_metrics: Option<VoipMetrics>,
        bye: bool,
        out: &mut [u8],
    ) -> Option<usize> {
        let now_ntp = NtpTime::now();
        let block = match (self.rx.ssrc(), stats) {
            (Some(src), Some(stats)) => {
                let counts = ReceiveCounts::from_session_stats(stats, self.rx.highest_seq_ext());
                Some(self.reception.report_block(src, &counts, now_ntp))
            }
            _ => None,
        };
        let sender = match (self.sent_since_report, self.last_tx) {
            (true, Some((ts, at))) => {
                // The RTP timestamp corresponding to "now" (§6.4.1), extrapolated from the
                // last packet sent.
                let elapsed = at.elapsed().as_secs_f64() * f64::from(self.clock_rate_hz);
                Some(SenderInfo {
                    ntp: now_ntp,
                    rtp_timestamp: ts.wrapping_add(elapsed as u32),
                    packet_count: self.tx_packets,
                    octet_count: self.tx_octets,
                })
            }
            _ => None,
        };
        self.sent_since_report = false;
        let ssrc = self.ssrc();
        let report = Report {
            ssrc,
            sender,
            block,
            cname: self.cname.as_bytes(),
            voip_metrics,
        };
        let n = rtcp::write_report(out, &report).ok()?;
        let mut w = rtcp::CompoundWriter::new(&mut out[n..]);
        if bye {
            w.bye(ssrc).ok()?;
        }
        Some(n + w.finish())
    }
}
