//! UDP media transport for examples: one small I/O thread per lane plays the part of
//! rtp-core around media-core's lane handles.
//!
//! For every leg (one media-core session) it owns two non-blocking sockets, RTP on the
//! listen port and RTCP on port + 1 (RFC 3550 §11), and loops:
//! - received RTP -> [`IngressHandle::push`] (a full ring or an oversized packet is a
//!   counted drop); RTCP arriving on the RTP port is recognised (RFC 5761 §4) and handled
//!   as RTCP; datagrams that are neither are counted and dropped;
//! - [`EgressHandle::pop`] -> `send_to` the leg's peer;
//! - received RTCP (compound or reduced-size, RFC 5506) -> round-trip time (RFC 3550
//!   §6.4.1) fed to [`MediaEngine::set_round_trip`], the loss the peer reports for our
//!   stream to [`MediaEngine::set_peer_loss`] (and logged);
//! - every report interval, an SR (or RR when nothing was sent) with a report block, SDES
//!   CNAME and an RFC 3611 VoIP Metrics block per leg; a BYE at shutdown.
//!
//! A leg without a configured peer learns it from the first RTP packet it receives
//! (symmetric RTP, RFC 4961), its RTCP peer from the first RTCP packet (or RTP port + 1).
//! When idle the thread sleeps 1 ms. The thread never panics on network input.
//!
//! This is example code on purpose kept small; a production transport would use
//! `recvmmsg`/`sendmmsg` or io_uring and one thread per core.

#![allow(dead_code)] // each example uses a different part of this module

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::rtcp_leg::{PeerCounters, RtcpLeg};
use media_core::integration::rtcp;
use media_core::rtp::RtpPacket;
use media_core::{EgressHandle, IngressHandle, MediaEngine, SessionId};

/// One leg's transport settings.
#[derive(Debug, Clone)]
pub struct LegConfig {
    /// Name used in logs ("A", "B").
    pub name: String,
    /// The media-core session this leg feeds and drains.
    pub session: SessionId,
    /// Local RTP address; RTCP listens on its port + 1.
    pub listen: SocketAddr,
    /// Where to send RTP; `None` = learn it from the first RTP packet received.
    pub peer: Option<SocketAddr>,
    /// RTP clock rate of what this leg sends, Hz (for the SR's RTP timestamp).
    pub clock_rate_hz: u32,
    /// Payload types a first packet must carry to be latched on as the peer.
    pub latch_pts: Vec<u8>,
    /// The RFC 4733 telephone-event payload type received, if negotiated.
    pub event_pt: Option<u8>,
    /// Our RTCP CNAME.
    pub cname: String,
    /// The SSRC media-core was told to send with (`MediaSessionParams::tx_ssrc`), so RTCP
    /// uses it before the first RTP packet goes out; `None` = learn it from that packet.
    pub ssrc: Option<u32>,
}

/// Counters of one leg, written by its I/O thread, read by anyone.
#[derive(Debug, Default)]
pub struct LegCounters {
    /// RTP packets received and pushed into the lane.
    pub rtp_in: AtomicU64,
    /// RTP bytes received (whole packets).
    pub bytes_in: AtomicU64,
    /// RTP packets sent.
    pub rtp_out: AtomicU64,
    /// RTP bytes sent.
    pub bytes_out: AtomicU64,
    /// Datagrams on the RTP port that were neither RTP nor RTCP.
    pub not_rtp: AtomicU64,
    /// Packets the ingress handle refused (ring full, too large).
    pub ingress_drops: AtomicU64,
    /// Packets popped for this leg while its peer was still unknown.
    pub no_peer_drops: AtomicU64,
    /// `send_to` failures.
    pub send_errors: AtomicU64,
    /// RTCP compound packets received and valid.
    pub rtcp_in: AtomicU64,
    /// RTCP datagrams rejected by the parser.
    pub rtcp_bad: AtomicU64,
    /// RTCP compound packets sent.
    pub rtcp_out: AtomicU64,
    /// What the peer's last report said of our stream.
    pub peer: PeerCounters,
}

/// The running I/O thread of one lane.
pub struct LaneIo {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// Per-leg counters, in the order the legs were given.
    pub counters: Vec<Arc<LegCounters>>,
}

impl LaneIo {
    /// Binds every leg's sockets and starts the lane's I/O thread.
    pub fn spawn(
        engine: Arc<MediaEngine>,
        ingress: IngressHandle,
        egress: EgressHandle,
        legs: Vec<LegConfig>,
        report_interval: Duration,
    ) -> std::io::Result<LaneIo> {
        let mut states = Vec::with_capacity(legs.len());
        for cfg in legs {
            states.push(Leg::bind(cfg)?);
        }
        let counters = states.iter().map(|l| l.counters.clone()).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let mut io = Io {
            engine,
            ingress,
            egress,
            legs: states,
            report_interval,
            stop: stop.clone(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("udp-io-{}", io.ingress.lane()))
            .spawn(move || io.run())?;
        Ok(LaneIo {
            stop,
            thread: Some(thread),
            counters,
        })
    }

    /// Asks the thread to send a last report and BYE per leg, and waits for it.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                log::error!("udp I/O thread panicked");
            }
        }
    }
}

struct Leg {
    cfg: LegConfig,
    rtp: UdpSocket,
    rtcp: UdpSocket,
    peer: Option<SocketAddr>,
    rtcp_peer: Option<SocketAddr>,
    counters: Arc<LegCounters>,
    report: RtcpLeg,
    next_report: Instant,
}

impl Leg {
    fn bind(cfg: LegConfig) -> std::io::Result<Leg> {
        let rtp = UdpSocket::bind(cfg.listen)?;
        let mut rtcp_addr = cfg.listen;
        rtcp_addr.set_port(cfg.listen.port().wrapping_add(1));
        let rtcp = UdpSocket::bind(rtcp_addr)?;
        rtp.set_nonblocking(true)?;
        rtcp.set_nonblocking(true)?;
        let rtcp_peer = cfg.peer.map(|mut p| {
            p.set_port(p.port().wrapping_add(1));
            p
        });
        let report = RtcpLeg::new(
            cfg.session,
            cfg.ssrc,
            None,
            cfg.clock_rate_hz,
            cfg.event_pt,
            cfg.cname.clone(),
        );
        Ok(Leg {
            peer: cfg.peer,
            rtcp_peer,
            cfg,
            rtp,
            rtcp,
            counters: Arc::new(LegCounters::default()),
            report,
            next_report: Instant::now(),
        })
    }
}

struct Io {
    engine: Arc<MediaEngine>,
    ingress: IngressHandle,
    egress: EgressHandle,
    legs: Vec<Leg>,
    report_interval: Duration,
    stop: Arc<AtomicBool>,
}

const MAX_DATAGRAM: usize = 2048;
/// Datagrams read per socket per loop, so one flooded socket cannot starve the others.
const BURST: usize = 64;

impl Io {
    fn run(&mut self) {
        let start = Instant::now();
        for leg in &mut self.legs {
            leg.next_report = start + self.report_interval;
        }
        let mut buf = [0u8; MAX_DATAGRAM];
        while !self.stop.load(Ordering::Relaxed) {
            let mut busy = false;
            for i in 0..self.legs.len() {
                busy |= self.receive_rtp(i, &mut buf);
                busy |= self.receive_rtcp(i, &mut buf);
            }
            busy |= self.send_egress();
            let now = Instant::now();
            for i in 0..self.legs.len() {
                if now >= self.legs[i].next_report {
                    self.legs[i].next_report = now + self.report_interval;
                    self.send_report(i, false);
                }
            }
            if !busy {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        // Drain what the lane still produced, then say goodbye (RFC 3550 §6.6).
        self.send_egress();
        for i in 0..self.legs.len() {
            self.send_report(i, true);
        }
    }

    fn receive_rtp(&mut self, i: usize, buf: &mut [u8]) -> bool {
        let mut any = false;
        for _ in 0..BURST {
            let (n, from) = match self.legs[i].rtp.recv_from(buf) {
                Ok(r) => r,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => {
                    // ICMP port unreachable surfaces here on Linux: not fatal.
                    log::debug!("leg {}: RTP recv: {e}", self.legs[i].cfg.name);
                    continue;
                }
            };
            any = true;
            let d = &buf[..n];
            if rtcp::is_rtcp(d) {
                self.on_rtcp(i, d, from);
                continue;
            }
            let leg = &mut self.legs[i];
            let Ok(pkt) = RtpPacket::parse(d) else {
                leg.counters.not_rtp.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            if leg.peer.is_none() && leg.cfg.latch_pts.contains(&pkt.payload_type()) {
                log::info!("leg {}: peer learned from first RTP: {from}", leg.cfg.name);
                leg.peer = Some(from);
                if leg.rtcp_peer.is_none() {
                    let mut r = from;
                    r.set_port(from.port().wrapping_add(1));
                    leg.rtcp_peer = Some(r);
                }
            }
            leg.report.on_rtp_in(&pkt);
            leg.counters.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
            match self.ingress.push(leg.cfg.session, d) {
                Ok(()) => {
                    leg.counters.rtp_in.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    leg.counters.ingress_drops.fetch_add(1, Ordering::Relaxed);
                    log::debug!("leg {}: ingress drop: {e}", leg.cfg.name);
                }
            }
        }
        any
    }

    fn receive_rtcp(&mut self, i: usize, buf: &mut [u8]) -> bool {
        let mut any = false;
        for _ in 0..BURST {
            let (n, from) = match self.legs[i].rtcp.recv_from(buf) {
                Ok(r) => r,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => {
                    log::debug!("leg {}: RTCP recv: {e}", self.legs[i].cfg.name);
                    continue;
                }
            };
            any = true;
            self.on_rtcp(i, &buf[..n], from);
        }
        any
    }

    fn on_rtcp(&mut self, i: usize, d: &[u8], from: SocketAddr) {
        let leg = &mut self.legs[i];
        let got = match leg.report.on_rtcp(d) {
            Ok(got) => got,
            Err(e) => {
                leg.counters.rtcp_bad.fetch_add(1, Ordering::Relaxed);
                log::debug!("leg {}: bad RTCP from {from}: {e}", leg.cfg.name);
                return;
            }
        };
        leg.counters.rtcp_in.fetch_add(1, Ordering::Relaxed);
        if leg.rtcp_peer.is_none() {
            leg.rtcp_peer = Some(from);
        }
        if got.bye {
            log::info!("leg {}: BYE from {from}", leg.cfg.name);
        }
        if let Some(m) = got.voip_metrics {
            log::debug!("leg {}: peer XR VoIP metrics {m:?}", leg.cfg.name);
        }
        let Some(b) = got.report else {
            return;
        };
        // Opus adaptation (QualityMonitor) follows the loss our packets meet; the round
        // trip enters the session's E-model.
        let session = leg.cfg.session;
        let _ = self.engine.set_peer_loss(
            session,
            u64::from(b.highest_seq_ext),
            b.cumulative_lost.max(0) as u64,
        );
        if let Some(rtt) = b.rtt_ms {
            let _ = self.engine.set_round_trip(session, rtt);
        }
        leg.counters.peer.record(&b);
        log::info!(
            "leg {}: peer reports {:.1}% lost (cumulative {}), rtt {}",
            leg.cfg.name,
            f64::from(b.fraction_lost) / 2.56,
            b.cumulative_lost,
            b.rtt_ms.map_or("n/a".to_string(), |r| format!("{r:.1} ms"))
        );
    }

    fn send_egress(&mut self) -> bool {
        let mut any = false;
        while let Some(p) = self.egress.pop() {
            any = true;
            let session = p.session();
            let Some(leg) = self.legs.iter_mut().find(|l| l.cfg.session == session) else {
                continue;
            };
            let Some(peer) = leg.peer else {
                leg.counters.no_peer_drops.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let h = p.header();
            let sock = &leg.rtp;
            match p.with_bytes(|b| sock.send_to(b, peer)) {
                Ok(n) => {
                    leg.report.on_rtp_out(&h, n);
                    leg.counters.rtp_out.fetch_add(1, Ordering::Relaxed);
                    leg.counters
                        .bytes_out
                        .fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) => {
                    leg.counters.send_errors.fetch_add(1, Ordering::Relaxed);
                    log::debug!("leg {}: send: {e}", leg.cfg.name);
                }
            }
        }
        any
    }

    fn send_report(&mut self, i: usize, bye: bool) {
        let leg = &mut self.legs[i];
        let Some(to) = leg.rtcp_peer else {
            return;
        };
        let mut out = [0u8; 512];
        let session = leg.cfg.session;
        let stats = self.engine.session_stats(session).ok();
        let jb_max_ms = self.engine.config().jitter.max_delay_ms.min(65535) as u16;
        let voip = self
            .engine
            .session_quality(session)
            .ok()
            .map(|q| q.voip_metrics(jb_max_ms));
        let Some(n) = leg.report.write_report(stats.as_ref(), voip, bye, &mut out) else {
            log::warn!("leg {}: RTCP report did not fit", leg.cfg.name);
            return;
        };
        match leg.rtcp.send_to(&out[..n], to) {
            Ok(_) => {
                leg.counters.rtcp_out.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => log::debug!("leg {}: RTCP send: {e}", leg.cfg.name),
        }
    }
}

/// A tiny stderr logger for examples: `level` and above, with seconds since start.
pub fn init_logger(level: log::LevelFilter) {
    struct Stderr(Instant);
    impl log::Log for Stderr {
        fn enabled(&self, m: &log::Metadata) -> bool {
            m.level() <= log::max_level()
        }
        fn log(&self, r: &log::Record) {
            if self.enabled(r.metadata()) {
                eprintln!(
                    "[{:8.3} {:5}] {}",
                    self.0.elapsed().as_secs_f64(),
                    r.level(),
                    r.args()
                );
            }
        }
        fn flush(&self) {}
    }
    let logger = Box::leak(Box::new(Stderr(Instant::now())));
    if log::set_logger(logger).is_ok() {
        log::set_max_level(level);
    }
}
