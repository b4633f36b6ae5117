//! A SIP back-to-back user agent (B2BUA) over UDP whose media runs through media-core: it
//! plays session-core's part, so real SIP phones (baresip, SIPp) talk through the engine.
//!
//! ```sh
//! cargo run --release --example sip_gateway -- --listen 127.0.0.1:5080 \
//!     --route b=127.0.0.1:5170 [--route USER=ADDR ...] [--media-ip 127.0.0.1] \
//!     [--rtp-ports 20000-29999] [--codecs pcmu,pcma,g722,opus] [--seconds 0] \
//!     [--stats-interval 5] [--lanes 1] [--vad] [--reinvite-b SECONDS:CODEC] \
//!     [--lane-cores 1] [--io-cores 0] [--fifo] [-v]
//! ```
//!
//! - SIP messages are parsed and written with the `rsip` crate; SDP is read and written by
//!   media-core's offer/answer ([`media_core::codec::negotiation`], on the `sdp` crate).
//! - An INVITE to `sip:USER@…` is forwarded to the address `--route USER=ADDR` names
//!   (404 otherwise). Leg A (the caller) is answered from media-core's negotiation of A's
//!   offer; leg B gets our offer (A's codec first, so equal codecs are relayed without
//!   decoding) and its codec comes from B's answer. No common codec with A: 488 with a
//!   `Warning: 305` naming both codec lists (RFC 3261 §20.43).
//! - Each call is two media-core sessions made by [`MediaEngine::create_call`]: same
//!   codec on both legs = pass-through, else transcoding; RFC 4733 events received on one
//!   leg are sent on the other by the engine.
//! - Handles INVITE/100/180/200/ACK/BYE/CANCEL (with UDP retransmission of INVITE, 2xx and
//!   BYE, RFC 3261 §17), OPTIONS, and re-INVITE from either side (hold with
//!   `a=sendonly`/`inactive`, codec change) through [`MediaEngine::update_media_session`].
//!   An INVITE without SDP (delayed offer, RFC 3261 §13.2.1) is offered to B with every
//!   codec we run and to A in our 2xx (B's codec first), A's ACK bringing the answer; a
//!   re-INVITE without SDP (a session-timer refresh) gets the leg's media as it is offered
//!   in the 2xx, its ACK the answer.
//!   `--reinvite-b S:CODEC` makes the gateway itself re-INVITE leg B to CODEC S seconds
//!   into each call (to measure the switch). A hold or resume (direction change) is passed
//!   on to the other phone by a re-INVITE of ours (A `sendonly` -> `sendonly` toward B);
//!   a codec change stays on its leg (the engine transcodes). Each offer/answer ends a
//!   "media period" whose per-leg packet counts are logged, so a hold can be checked. A
//!   re-INVITE while an offer of ours is open on the leg gets 491 (glare).
//! - Media (`sip/media_io.rs`): RTCP reports both ways (the peer's RTT enters the MOS, its
//!   loss reports Opus adaptation) and symmetric RTP for phones behind a NAT.
//! - `--fifo` starts the lane and media I/O threads under SCHED_FIFO (top real-time
//!   priority), `--lane-cores`/`--io-cores` pin them: SIPp or a build sharing the machine
//!   then cannot delay a tick.
//! - Engine events (DTMF, talkspurts with `--vad`, deadline overruns) and quality alerts
//!   ([`QualityMonitor`]) are logged on the control plane; each call prints a summary at
//!   its end (`CALL SUMMARY`), the gateway its totals at exit (`GATEWAY TOTALS`). A
//!   `STATS` line every few seconds gives the lanes' p99 load, overruns and drops and the
//!   calls' mean MOS over the seconds since the line before ([`QualityMonitor::report`]);
//!   the last one, at exit, over the whole calls.

#[path = "sip/media_io.rs"]
mod media_io;
#[path = "common/rtcp_leg.rs"]
mod rtcp_leg;
#[path = "common/sched.rs"]
mod sched;

use sched::set_fifo;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use media_core::codec::negotiation::{
    answer, answer_sections, negotiate_reoffer, process_answer, CodecKind, Direction,
    LocalCapabilities, MediaOffer, NegotiatedMedia,
};
use media_core::engine::{EngineEvent, EngineQuality, QualityMonitor};
use media_core::quality::monitor::{QualityEvent, QualityThresholds};
use media_core::{
    Codec, DialogId, EngineConfig, MediaEngine, MediaSessionParams, Ptime, SessionId,
};
use media_io::{LaneIo, LegCounters, LegMedia, LegQuality, NewLeg, SendPts};
use rsip::prelude::*;

type BoxError = Box<dyn std::error::Error>;

const USAGE: &str = "usage: sip_gateway --listen ADDR --route USER=ADDR [--route ...] \
[--media-ip IP] [--rtp-ports LO-HI] [--codecs pcmu,pcma,g722,opus] [--seconds S (0 = until \
Ctrl-C)] [--stats-interval S] [--lanes N] [--max-calls N] [--jitter-min-ms MS] [--jitter-max-ms MS] \
[--packet-slots-per-session N] [--opus-bitrate BPS] \
[--opus-loss-percent P] [--vad] [--dtx] [--keepalive-ms MS (default 5000, 0 = off)] \
[--media-timeout-ms MS (default 30000, 0 = off)] \
[--reinvite-b S:CODEC] [--lane-cores C,..] [--io-cores C,..] [--fifo] [-v]";

struct Args {
    listen: SocketAddr,
    routes: HashMap<String, SocketAddr>,
    media_ip: IpAddr,
    rtp_lo: u16,
    rtp_hi: u16,
    codecs: Vec<CodecKind>,
    seconds: f64,
    stats_interval: Duration,
    lanes: usize,
    max_calls: usize,
    /// A VAD on every leg's received audio (talkspurt events).
    vad: bool,
    /// DTX toward every peer that negotiated comfort noise (RFC 3389), driven by the
    /// other leg's VAD (on with it).
    dtx: bool,
    /// RTP keepalive toward each phone after this long without a packet to send
    /// (`MediaSessionParams::keepalive_ms`; 0: off).
    keepalive_ms: u32,
    /// A call whose leg (not on hold) receives no RTP for this long is hung up
    /// (`QualityThresholds::media_timeout_ms`; 0: off).
    media_timeout_ms: u32,
    jitter_min_ms: Option<u32>,
    jitter_max_ms: Option<u32>,
    /// Ingress packet slots per session (`EngineConfig::packet_slots_per_lane`).
    packet_slots_per_session: Option<usize>,
    opus_bitrate_bps: Option<i32>,
    opus_loss_percent: Option<i32>,
    reinvite_b: Option<(f64, CodecKind)>,
    /// Cores for the lane threads (`EngineConfig::cores`) and the media I/O threads.
    lane_cores: Vec<usize>,
    io_cores: Vec<usize>,
    /// Start lanes and media I/O under SCHED_FIFO (top real-time priority).
    fifo: bool,
    verbose: bool,
}

fn codec_kind(name: &str) -> Result<CodecKind, BoxError> {
    Ok(match name.trim().to_ascii_lowercase().as_str() {
        "pcmu" => CodecKind::Pcmu,
        "pcma" => CodecKind::Pcma,
        "g722" => CodecKind::G722,
        "opus" => CodecKind::Opus,
        other => return Err(format!("unknown codec {other:?} (pcmu, pcma, g722, opus)").into()),
    })
}

/// `0,1` -> [0, 1]; none -> [] (unpinned).
fn cores(list: Option<&str>) -> Result<Vec<usize>, BoxError> {
    list.map_or(Ok(Vec::new()), |l| {
        l.split(',')
            .map(|c| {
                c.trim()
                    .parse()
                    .map_err(|e| format!("core {c:?}: {e}").into())
            })
            .collect()
    })
}

fn resolve(s: &str) -> Result<SocketAddr, BoxError> {
    s.to_socket_addrs()?
        .next()
        .ok_or_else(|| format!("cannot resolve {s:?}").into())
}

fn parse_args() -> Result<Args, BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let has = |f: &str| args.iter().any(|a| a == f);
    if has("-h") || has("--help") {
        println!("{USAGE}");
        std::process::exit(0);
    }
    let opt = |f: &str| -> Result<Option<&str>, BoxError> {
        match args.iter().position(|a| a == f) {
            None => Ok(None),
            Some(i) => match args.get(i + 1) {
                Some(v) => Ok(Some(v.as_str())),
                None => Err(format!("{f} needs a value").into()),
            },
        }
    };
    let mut routes = HashMap::new();
    for (i, a) in args.iter().enumerate() {
        if a == "--route" {
            let v = args.get(i + 1).ok_or("--route needs USER=ADDR")?;
            let (user, addr) = v.split_once('=').ok_or("--route needs USER=ADDR")?;
            routes.insert(user.to_string(), resolve(addr)?);
        }
    }
    let listen =
        resolve(opt("--listen")?.ok_or_else(|| format!("--listen is required\n{USAGE}"))?)?;
    let media_ip: IpAddr = opt("--media-ip")?
        .map_or(Ok(listen.ip()), str::parse)
        .map_err(|e| format!("--media-ip: {e}"))?;
    let (rtp_lo, rtp_hi) = match opt("--rtp-ports")? {
        None => (20000, 29999),
        Some(v) => {
            let (lo, hi) = v.split_once('-').ok_or("--rtp-ports needs LO-HI")?;
            (lo.parse()?, hi.parse()?)
        }
    };
    if rtp_lo >= rtp_hi || rtp_hi == u16::MAX {
        return Err("--rtp-ports: LO must be below HI (and HI below 65535)".into());
    }
    let codecs = opt("--codecs")?
        .unwrap_or("pcmu,pcma,g722,opus")
        .split(',')
        .map(codec_kind)
        .collect::<Result<Vec<_>, _>>()?;
    let stats_s: f64 = opt("--stats-interval")?.map_or(Ok(5.0), str::parse)?;
    if !(stats_s.is_finite() && stats_s > 0.0) {
        return Err("--stats-interval must be positive".into());
    }
    let reinvite_b = match opt("--reinvite-b")? {
        None => None,
        Some(v) => {
            let (s, c) = v
                .split_once(':')
                .ok_or("--reinvite-b needs SECONDS:CODEC")?;
            Some((s.parse()?, codec_kind(c)?))
        }
    };
    Ok(Args {
        listen,
        routes,
        media_ip,
        rtp_lo,
        rtp_hi,
        codecs,
        seconds: opt("--seconds")?.map_or(Ok(0.0), str::parse)?,
        stats_interval: Duration::from_secs_f64(stats_s),
        lanes: opt("--lanes")?.map_or(Ok(1), str::parse)?,
        max_calls: opt("--max-calls")?.map_or(Ok(1000), str::parse)?,
        vad: has("--vad"),
        dtx: has("--dtx"),
        keepalive_ms: opt("--keepalive-ms")?
            .map(str::parse)
            .transpose()?
            .unwrap_or(5000),
        media_timeout_ms: opt("--media-timeout-ms")?
            .map(str::parse)
            .transpose()?
            .unwrap_or(30_000),
        jitter_min_ms: opt("--jitter-min-ms")?.map(str::parse).transpose()?,
        jitter_max_ms: opt("--jitter-max-ms")?.map(str::parse).transpose()?,
        packet_slots_per_session: opt("--packet-slots-per-session")?
            .map(str::parse)
            .transpose()?,
        opus_bitrate_bps: opt("--opus-bitrate")?.map(str::parse).transpose()?,
        opus_loss_percent: opt("--opus-loss-percent")?.map(str::parse).transpose()?,
        reinvite_b,
        lane_cores: cores(opt("--lane-cores")?)?,
        io_cores: cores(opt("--io-cores")?)?,
        fifo: has("--fifo"),
        verbose: has("-v") || has("--verbose"),
    })
}

/// Set by SIGINT/SIGTERM; the main loop polls it.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

fn install_signals() {
    let handler: extern "C" fn(libc::c_int) = on_signal;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe; the cast
    // to sighandler_t is how libc's `signal` takes a function pointer.
    unsafe {
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
        libc::signal(libc::SIGTERM, handler as libc::sighandler_t);
    }
}

fn init_logger(level: log::LevelFilter) {
    struct Stderr(Instant);
    impl log::Log for Stderr {
        fn enabled(&self, m: &log::Metadata) -> bool {
            m.level() <= log::max_level() && m.target().starts_with("sip_gateway")
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

/// Which side of a call a SIP message or media session belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Side {
    /// The caller (we are its UAS).
    A,
    /// The callee (we are its UAC).
    B,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::A => "A",
            Side::B => "B",
        }
    }

    fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// INVITE sent to B, no final answer yet.
    Inviting,
    /// 2xx sent to A, waiting for its ACK.
    AwaitAck,
    Established,
    /// A cancelled: waiting for B's final response to ACK (or BYE if it answered).
    Cancelled,
    /// Failed or ended: waiting for retransmissions to die down before removal.
    Done,
}

/// A message we retransmit until answered (RFC 3261 §17.1.1.2 Timer A / §13.3.1.4 2xx).
struct Retx {
    what: &'static str,
    text: String,
    to: SocketAddr,
    next: Instant,
    interval: Duration,
    left: u32,
}

impl Retx {
    fn new(what: &'static str, text: String, to: SocketAddr) -> Self {
        Retx {
            what,
            text,
            to,
            next: Instant::now() + T1,
            interval: T1,
            left: 6,
        }
    }
}

const T1: Duration = Duration::from_millis(500);

/// One SIP dialog side of a call plus its media leg.
struct Leg {
    call_id: String,
    /// Our tag in this dialog.
    local_tag: String,
    /// Header value naming us (From on requests we send), without tag.
    local_uri: String,
    /// Header value naming the peer (To on requests we send), with its tag once known.
    remote: String,
    /// Request-URI for in-dialog requests (the peer's Contact).
    target: String,
    /// Where in-dialog requests go.
    dest: SocketAddr,
    local_cseq: u32,
    rtp_port: u16,
    sockets: Option<(UdpSocket, UdpSocket)>,
    /// Leg B: our offer, to read B's answer against. Leg A: A's offer (its answer to ours
    /// after a delayed offer), and on either leg the peer's last offer after a re-INVITE
    /// of its own.
    offer: Option<MediaOffer>,
    media: Option<NegotiatedMedia>,
    session: Option<SessionId>,
    counters: Arc<LegCounters>,
    sdp_version: u64,
    dtmf: String,
    retx: Vec<Retx>,
    /// A re-INVITE we sent on this leg and await the answer to: its CSeq, our offer and
    /// its Via branch (a non-2xx ACK reuses it, RFC 3261 §17.1.1.3).
    reinvite: Option<(u32, MediaOffer, String)>,
    /// Our offer in the 2xx to the peer's re-INVITE without one (a session refresh, RFC
    /// 4028), with that re-INVITE's CSeq and the 2xx (for a retransmitted INVITE): the
    /// answer comes in the ACK of that CSeq (RFC 3261 §14.2).
    ack_offer: Option<(u32, MediaOffer, String)>,
    /// The IP the peer's SIP comes from (A's INVITE, B's 2xx): a phone behind a NAT sends
    /// its RTP from it.
    signal_ip: Option<IpAddr>,
    /// A hold or resume to pass on to this leg's peer (a re-INVITE offering that
    /// direction) once no offer is open on the leg, not before the instant: it met one of
    /// ours still open, or the peer's 491 (RFC 3261 §14.1: try again later).
    deferred: Option<(Direction, Instant)>,
    /// 491s our re-INVITEs met in a row on this leg (three end the retries).
    glare_tries: u8,
    /// The peer's last offer as sent (A's INVITE, a re-INVITE's): its `m=` lines shape
    /// every SDP of ours on the leg (RFC 3264 §8: a new offer keeps each one, those we do
    /// not take with port 0). `None` when our own offer set them (leg B, a delayed offer).
    peer_sdp: Option<String>,
    /// Counters at the start of the call's current media period (since the last
    /// offer/answer on either leg), so a hold or codec change can be checked per period.
    period: Period,
}

/// Where a leg's media period began: its counters then.
#[derive(Clone, Copy)]
struct Period {
    since: Instant,
    rx: u64,
    tx: u64,
    held: u64,
}

impl Period {
    fn start(c: &LegCounters) -> Period {
        Period {
            since: Instant::now(),
            rx: LegCounters::get(&c.rtp_in),
            tx: LegCounters::get(&c.rtp_out),
            held: LegCounters::get(&c.held_drops),
        }
    }

    /// `rx R tx T held-drops H over S s` since the period began.
    fn describe(&self, c: &LegCounters) -> String {
        format!(
            "rx {} tx {} held-drops {} over {:.1} s",
            LegCounters::get(&c.rtp_in).saturating_sub(self.rx),
            LegCounters::get(&c.rtp_out).saturating_sub(self.tx),
            LegCounters::get(&c.held_drops).saturating_sub(self.held),
            self.since.elapsed().as_secs_f64()
        )
    }
}

struct Call {
    state: State,
    answered: Option<Instant>,
    a: Leg,
    b: Leg,
    /// A's INVITE (responses copy its Via/From/To/Call-ID/CSeq) and where it came from.
    a_invite: rsip::Request,
    a_src: SocketAddr,
    /// Last final response to A's INVITE, for retransmitted INVITEs.
    a_final: Option<String>,
    /// Our INVITE to B (CANCEL and non-2xx ACK reuse its Via branch and CSeq).
    b_invite: rsip::Request,
    /// `--reinvite-b` was done (or is not due in this call).
    reinvite_done: bool,
    done_at: Option<Instant>,
    /// A sent its INVITE without an offer (RFC 3261 §13.2.1 delayed offer): our offer,
    /// sent in the 2xx, whose answer A's ACK brings (the sessions are made then), and B's
    /// media address.
    a_offered: Option<(MediaOffer, SocketAddr)>,
}

impl Call {
    /// The call's leg on `side`.
    fn leg(&self, side: Side) -> &Leg {
        match side {
            Side::A => &self.a,
            Side::B => &self.b,
        }
    }

    /// The call's leg on `side`, to change.
    fn leg_mut(&mut self, side: Side) -> &mut Leg {
        match side {
            Side::A => &mut self.a,
            Side::B => &mut self.b,
        }
    }
}

#[derive(Default)]
struct Totals {
    attempted: u64,
    completed: u64,
    failed: u64,
    rejected_488: u64,
    cancelled: u64,
    overruns: u64,
    dtmf: u64,
    reinvites: u64,
    /// Quality alerts on legs that receive media (a warning each).
    alerts: u64,
    /// Quality alerts on legs on hold (we asked the peer not to send): expected, not
    /// counted as failures.
    alerts_on_hold: u64,
    /// Calls hung up because a leg that should receive media got none for the monitor's
    /// media timeout (`QualityEvent::MediaTimeout`).
    media_timeouts: u64,
}

struct Gateway {
    args: Args,
    engine: Arc<MediaEngine>,
    /// Calls whose hold state changed since the last quality poll: their legs' media
    /// timeouts start over (a hold's silence does not count, and a leg that never resumes
    /// is still reported).
    hold_changed: Vec<u64>,
    ios: Vec<LaneIo>,
    sock: UdpSocket,
    contact: String,
    calls: HashMap<u64, Call>,
    by_call_id: HashMap<String, (u64, Side)>,
    by_session: HashMap<SessionId, (u64, Side)>,
    free_ports: Vec<u16>,
    /// The SDP session id (`o=`) of the leg on each RTP port, from `sdp_sessions`.
    sdp_ids: HashMap<u16, u64>,
    /// SDP sessions started so far.
    sdp_sessions: u64,
    next_call: u64,
    rng: u64,
    totals: Totals,
    started: Instant,
}

fn caps(kinds: &[CodecKind], ptime_ms: u32) -> LocalCapabilities {
    let mut c = LocalCapabilities::new(kinds);
    // The gateway's --codecs order is its preference when answering A.
    c.prefer_local_order = true;
    c.ptime_ms = ptime_ms;
    c
}

fn body_text(body: &[u8]) -> Option<String> {
    let t = String::from_utf8_lossy(body).into_owned();
    (!t.trim().is_empty()).then_some(t)
}

/// `name/clock[/ch] (PT n)` of what a leg sends.
fn describe(m: &NegotiatedMedia) -> String {
    format!("{} (PT {})", m.send.encoding(), m.send.pt)
}

/// The address a SIP URI points at (port 5060 when absent).
fn uri_addr(uri: &rsip::Uri) -> Option<SocketAddr> {
    let host = uri.host_with_port.host.to_string();
    let port = uri
        .host_with_port
        .port
        .as_ref()
        .map_or(5060, |p| *p.value());
    (host.as_str(), port).to_socket_addrs().ok()?.next()
}

impl Gateway {
    fn rand(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    fn token(&mut self) -> String {
        format!("{:012x}", self.rand() & 0xffff_ffff_ffff)
    }

    fn send(&self, text: &str, to: SocketAddr) {
        log::debug!("-> {to}\n{text}");
        if let Err(e) = self.sock.send_to(text.as_bytes(), to) {
            log::warn!("SIP send to {to}: {e}");
        }
    }

    fn sdp(&self, media_lines: sdp::description::media::MediaDescription, version: u64) -> String {
        self.sdp_sections(vec![media_lines], version)
    }

    /// An answer to the offer in `offer_sdp`: `answered` (our audio section) where the
    /// offer's `section` was, every other offered section rejected with port 0 (RFC 3264
    /// §6: one `m=` line per offered one, in order).
    fn answer_sdp(
        &self,
        offer_sdp: &str,
        section: usize,
        answered: sdp::description::media::MediaDescription,
        version: u64,
    ) -> String {
        let sections = answer_sections(offer_sdp, section, answered.clone())
            .unwrap_or_else(|_| vec![answered]);
        self.sdp_sections(sections, version)
    }

    /// An offer of ours on a leg: `ours` where the audio was, with every other `m=` line
    /// the session has had (`shape`: the peer's last offer and its audio section) kept
    /// with port 0 (RFC 3264 §8: a new offer keeps each line).
    fn offer_sdp(
        &self,
        shape: Option<(String, usize)>,
        ours: sdp::description::media::MediaDescription,
        version: u64,
    ) -> String {
        match shape {
            Some((text, section)) => self.answer_sdp(&text, section, ours, version),
            None => self.sdp(ours, version),
        }
    }

    fn sdp_sections(
        &self,
        media_lines: Vec<sdp::description::media::MediaDescription>,
        version: u64,
    ) -> String {
        use sdp::description::common::{Address, ConnectionInformation};
        let leg_port = media_lines
            .iter()
            .map(|m| m.media_name.port.value.clamp(0, 65_535) as u16)
            .find(|&p| p != 0)
            .unwrap_or(0);
        use sdp::description::session::{Origin, TimeDescription, Timing};
        let ip = self.args.media_ip.to_string();
        let addr_type = if self.args.media_ip.is_ipv4() {
            "IP4"
        } else {
            "IP6"
        };
        let sd = sdp::SessionDescription {
            version: 0,
            origin: Origin {
                username: "media-core".into(),
                // RFC 3264 §8: one session id for all of a leg's descriptions (given
                // when its port was), the version bumped by the caller.
                session_id: (u64::from(std::process::id()) << 32)
                    ^ self.sdp_ids.get(&leg_port).copied().unwrap_or(0)
                    ^ 0x5bd1e995,
                session_version: version,
                network_type: "IN".into(),
                address_type: addr_type.into(),
                unicast_address: ip.clone(),
            },
            session_name: "media-core sip_gateway".into(),
            connection_information: Some(ConnectionInformation {
                network_type: "IN".into(),
                address_type: addr_type.into(),
                address: Some(Address {
                    address: ip,
                    ttl: None,
                    range: None,
                }),
            }),
            time_descriptions: vec![TimeDescription {
                timing: Timing {
                    start_time: 0,
                    stop_time: 0,
                },
                repeat_times: Vec::new(),
            }],
            media_descriptions: media_lines,
            ..Default::default()
        };
        sd.marshal()
    }

    /// A response to `req` (RFC 3261 §8.2.6.2: Via, From, To, Call-ID, CSeq copied).
    fn response(
        &self,
        req: &rsip::Request,
        code: u16,
        to_tag: Option<&str>,
        extra: Vec<rsip::Header>,
        body: Option<String>,
    ) -> String {
        let mut headers = rsip::Headers::default();
        for h in req.headers.iter() {
            match h {
                rsip::Header::Via(_)
                | rsip::Header::From(_)
                | rsip::Header::CallId(_)
                | rsip::Header::CSeq(_) => headers.push(h.clone()),
                rsip::Header::To(t) => {
                    let has_tag = t.tag().ok().flatten().is_some();
                    match to_tag {
                        Some(tag) if !has_tag => headers.push(
                            rsip::headers::To::new(format!("{};tag={tag}", t.value())).into(),
                        ),
                        _ => headers.push(h.clone()),
                    }
                }
                _ => {}
            }
        }
        if (101..300).contains(&code) {
            headers.push(rsip::headers::Contact::new(self.contact.clone()).into());
        }
        headers.push(rsip::headers::UserAgent::new("media-core sip_gateway").into());
        for h in extra {
            headers.push(h);
        }
        let body = body.unwrap_or_default().into_bytes();
        if !body.is_empty() {
            headers.push(rsip::headers::ContentType::new("application/sdp").into());
        }
        headers.push(rsip::headers::ContentLength::new(body.len().to_string()).into());
        rsip::Response {
            status_code: code.into(),
            version: rsip::Version::V2,
            headers,
            body,
        }
        .to_string()
    }

    /// A request from us: new Via branch; `from`/`to` are header values.
    #[allow(clippy::too_many_arguments)]
    fn request(
        &mut self,
        method: rsip::Method,
        uri: &str,
        branch: Option<&str>,
        from: &str,
        to: &str,
        call_id: &str,
        cseq: u32,
        body: Option<String>,
    ) -> Result<rsip::Request, BoxError> {
        let branch = match branch {
            Some(b) => b.to_string(),
            None => format!("z9hG4bK{}", self.token()),
        };
        let mut headers = rsip::Headers::default();
        headers.push(
            rsip::headers::Via::new(format!(
                "SIP/2.0/UDP {};rport;branch={branch}",
                self.args.listen
            ))
            .into(),
        );
        headers.push(rsip::headers::MaxForwards::new("70").into());
        headers.push(rsip::headers::From::new(from).into());
        headers.push(rsip::headers::To::new(to).into());
        headers.push(rsip::headers::CallId::new(call_id).into());
        headers.push(rsip::headers::CSeq::new(format!("{cseq} {method}")).into());
        if matches!(method, rsip::Method::Invite) {
            headers.push(rsip::headers::Contact::new(self.contact.clone()).into());
        }
        headers.push(rsip::headers::UserAgent::new("media-core sip_gateway").into());
        let body = body.unwrap_or_default().into_bytes();
        if !body.is_empty() {
            headers.push(rsip::headers::ContentType::new("application/sdp").into());
        }
        headers.push(rsip::headers::ContentLength::new(body.len().to_string()).into());
        Ok(rsip::Request {
            method,
            uri: rsip::Uri::try_from(uri)?,
            version: rsip::Version::V2,
            headers,
            body,
        })
    }

    /// `--opus-bitrate` / `--opus-loss-percent` on an Opus session (the bitrate still
    /// capped by the peer's `maxaveragebitrate`, RFC 7587 §6.1).
    fn opus_overrides(&self, p: &mut MediaSessionParams, m: &NegotiatedMedia) {
        if let Some(b) = self.args.opus_bitrate_bps {
            let cap = m
                .opus
                .and_then(|o| o.max_average_bitrate_bps)
                .map_or(i32::MAX, |c| i32::try_from(c).unwrap_or(i32::MAX));
            p.opus.bitrate_bps = b.min(cap);
        }
        if let Some(l) = self.args.opus_loss_percent {
            p.opus.packet_loss_percent = l;
            p.opus.inband_fec = p.opus.inband_fec && l > 0;
        }
    }

    /// `--vad` / `--dtx` / `--keepalive-ms` on a leg's session, at creation and on every
    /// re-INVITE (an update replaces the whole parameter set). DTX goes only toward a peer
    /// that negotiated comfort noise, and never on Opus (its own DTX is `usedtx`).
    fn voice_settings(&self, p: &mut MediaSessionParams) {
        p.keepalive_ms = self.args.keepalive_ms;
        if self.args.vad || self.args.dtx {
            p.dsp.vad = Some(Default::default());
        }
        p.dtx = self.args.dtx
            && p.comfort_noise_send_pt.is_some()
            && p.tx.codec != media_core::codec::Codec::Opus;
    }

    fn alloc_port(&mut self) -> Option<(u16, UdpSocket, UdpSocket)> {
        for _ in 0..self.free_ports.len() {
            let p = self.free_ports.pop()?;
            let rtp = UdpSocket::bind((self.args.media_ip, p));
            let rtcp = UdpSocket::bind((self.args.media_ip, p + 1));
            if let (Ok(r), Ok(c)) = (rtp, rtcp) {
                // A new leg on this port: a new SDP session id (RFC 4566 §5.2), kept for
                // all of its descriptions.
                self.sdp_sessions += 1;
                self.sdp_ids.insert(p, self.sdp_sessions);
                return Some((p, r, c));
            }
            // Busy (another program): try it again later.
            self.free_ports.insert(0, p);
        }
        None
    }

    fn on_datagram(&mut self, data: &[u8], src: SocketAddr) {
        if data.iter().all(|b| b.is_ascii_whitespace()) {
            return; // keep-alive (RFC 5626 §3.5.1)
        }
        let msg = match rsip::SipMessage::try_from(data) {
            Ok(m) => m,
            Err(e) => {
                log::warn!("unparsable SIP from {src}: {e}");
                return;
            }
        };
        log::debug!("<- {src}\n{msg}");
        let res = match msg {
            rsip::SipMessage::Request(r) => self.on_request(r, src),
            rsip::SipMessage::Response(r) => self.on_response(r, src),
        };
        if let Err(e) = res {
            log::warn!("SIP from {src}: {e}");
        }
    }

    fn on_request(&mut self, req: rsip::Request, src: SocketAddr) -> Result<(), BoxError> {
        let call_id = req.call_id_header()?.value().to_string();
        let known = self.by_call_id.get(&call_id).copied();
        match (&req.method, known) {
            (rsip::Method::Invite, None) => {
                if req.to_header()?.tag()?.is_some() {
                    let r = self.response(&req, 481, None, vec![], None);
                    self.send(&r, src);
                    return Ok(());
                }
                self.on_new_invite(req, src)
            }
            (rsip::Method::Invite, Some((n, side))) => self.on_reinvite(n, side, req, src),
            (rsip::Method::Ack, Some((n, side))) => {
                let Some(c) = self.calls.get_mut(&n) else {
                    return Ok(());
                };
                let leg = c.leg_mut(side);
                let cseq = req.cseq_header()?.typed()?.seq;
                if leg.ack_offer.as_ref().is_some_and(|(c, _, _)| *c == cseq) {
                    // The answer to the offer in our 2xx to its offer-less re-INVITE.
                    leg.retx.retain(|r| r.what != "200/re-INVITE");
                    let Some((_, offer, _)) = leg.ack_offer.take() else {
                        return Ok(());
                    };
                    let applied = body_text(&req.body)
                        .ok_or_else(|| BoxError::from("no SDP answer"))
                        .and_then(|t| {
                            self.apply_answer(n, side, &offer, &t, "the answer in its ACK")
                        });
                    if let Err(e) = applied {
                        log::warn!("call {n}: ACK from {}: {e}", side.name());
                    }
                    return Ok(());
                }
                // Leg A's other ACKs are the 2xx's to its INVITE (its CSeq) and those of
                // non-2xx answers to its re-INVITEs (a 491), which end nothing here.
                if side == Side::B || cseq != c.a_invite.cseq_header()?.typed()?.seq {
                    return Ok(());
                }
                c.a.retx.retain(|r| r.what != "200/INVITE");
                if c.state != State::AwaitAck {
                    return Ok(());
                }
                c.state = State::Established;
                if c.a_offered.is_some() {
                    if let Err(e) = self.on_ack_answer(n, &req) {
                        // The dialog is up, its media never was: a failed call.
                        log::warn!("call {n}: A's answer in its ACK: {e}; hanging up");
                        self.hang_up(n, None);
                        return Ok(());
                    }
                }
                log::info!("call {n}: established (ACK from A)");
                Ok(())
            }
            (rsip::Method::Ack, _) => Ok(()),
            (rsip::Method::Bye, Some((n, side))) => {
                let r = self.response(&req, 200, None, vec![], None);
                self.send(&r, src);
                log::info!("call {n}: BYE from {}", side.name());
                self.hang_up(n, Some(side));
                Ok(())
            }
            (rsip::Method::Cancel, Some((n, Side::A))) => {
                let r = self.response(&req, 200, None, vec![], None);
                self.send(&r, src);
                self.on_cancel(n);
                Ok(())
            }
            (rsip::Method::Options, _) => {
                let tag = self.token();
                let allow = rsip::headers::Allow::new("INVITE, ACK, BYE, CANCEL, OPTIONS").into();
                let r = self.response(&req, 200, Some(&tag), vec![allow], None);
                self.send(&r, src);
                Ok(())
            }
            (rsip::Method::Bye | rsip::Method::Cancel, None) => {
                let r = self.response(&req, 481, None, vec![], None);
                self.send(&r, src);
                Ok(())
            }
            _ => {
                let r = self.response(&req, 501, None, vec![], None);
                self.send(&r, src);
                Ok(())
            }
        }
    }

    fn reject(&mut self, req: &rsip::Request, src: SocketAddr, code: u16, warning: &str) {
        let tag = self.token();
        let extra = if warning.is_empty() {
            vec![]
        } else {
            // RFC 3261 §20.43: 305 = incompatible media format; 399 = miscellaneous.
            let wcode = if code == 488 { 305 } else { 399 };
            vec![rsip::headers::Warning::new(format!(
                "{wcode} {} \"{}\"",
                self.args.listen,
                warning.replace('"', "'")
            ))
            .into()]
        };
        let r = self.response(req, code, Some(&tag), extra, None);
        self.send(&r, src);
    }

    /// Parses and answers A's offer (fitted to the engine's slots); on failure rejects
    /// the INVITE (400 bad SDP, 488 nothing in common or nothing the engine runs) and
    /// returns `None`.
    fn answer_a(
        &mut self,
        req: &rsip::Request,
        src: SocketAddr,
        sdp_text: &str,
    ) -> Option<(MediaOffer, NegotiatedMedia)> {
        let offer = match MediaOffer::from_sdp(sdp_text) {
            Ok(o) => o,
            Err(e) => {
                self.totals.failed += 1;
                self.reject(req, src, 400, &format!("bad SDP: {e}"));
                return None;
            }
        };
        let local = caps(&self.args.codecs, 20);
        let mut a_media = match answer(&offer, &local) {
            Ok(m) => m,
            Err(e) => {
                self.totals.failed += 1;
                self.totals.rejected_488 += 1;
                log::warn!("INVITE from {src} rejected: {e}");
                self.reject(req, src, 488, &e.to_string());
                return None;
            }
        };
        // What the engine can run, the ptime fitted to its slots (an Opus `a=ptime:60` at
        // 48 kHz is answered 40 ms), checked now rather than when B has already answered.
        match MediaSessionParams::from_negotiated(&a_media)
            .and_then(|mut p| self.engine.fit_ptime(&mut p).map(|()| p))
        {
            Ok(p) => a_media.ptime_ms = p.ptime.ms(),
            Err(e) => {
                self.totals.failed += 1;
                self.totals.rejected_488 += 1;
                self.reject(req, src, 488, &e.to_string());
                return None;
            }
        }
        Some((offer, a_media))
    }

    /// Our codecs, `first` (if we run it) ahead of the others.
    fn codecs_preferring(&self, first: Option<CodecKind>) -> Vec<CodecKind> {
        let mut kinds: Vec<CodecKind> = first.into_iter().collect();
        for k in &self.args.codecs {
            if !kinds.contains(k) {
                kinds.push(*k);
            }
        }
        kinds
    }

    fn on_new_invite(&mut self, req: rsip::Request, src: SocketAddr) -> Result<(), BoxError> {
        self.totals.attempted += 1;
        let trying = self.response(&req, 100, None, vec![], None);
        self.send(&trying, src);
        let user = req.uri.user().unwrap_or_default().to_string();
        let Some(&dest) = self.args.routes.get(&user) else {
            self.totals.failed += 1;
            self.reject(&req, src, 404, &format!("no --route for user {user:?}"));
            return Ok(());
        };
        // No body: a delayed offer (RFC 3261 §13.2.1). B gets our offer of every codec we
        // run; A gets one in our 2xx, B's codec first, and answers it in its ACK.
        let (offer, a_media) = match body_text(&req.body) {
            None => (None, None),
            Some(sdp_text) => match self.answer_a(&req, src, &sdp_text) {
                Some((offer, media)) => (Some(offer), Some(media)),
                None => return Ok(()),
            },
        };
        if self.calls.len() >= self.args.max_calls {
            self.totals.failed += 1;
            self.reject(&req, src, 503, "gateway at --max-calls");
            return Ok(());
        }
        let Some((a_port, a_rtp, a_rtcp)) = self.alloc_port() else {
            self.totals.failed += 1;
            self.reject(&req, src, 503, "no free RTP port");
            return Ok(());
        };
        let Some((b_port, b_rtp, b_rtcp)) = self.alloc_port() else {
            self.free_ports.push(a_port);
            self.totals.failed += 1;
            self.reject(&req, src, 503, "no free RTP port");
            return Ok(());
        };

        // Our offer to B: A's codec first (relay when B takes it), then our preference.
        let kinds = self.codecs_preferring(a_media.as_ref().and_then(|m| m.send_kind()));
        let ptime_ms = a_media.as_ref().map_or(20, |m| m.ptime_ms);
        let b_offer = caps(&kinds, ptime_ms).create_offer(b_port, None);
        let b_sdp = self.sdp(b_offer.to_media_description(), 1);

        let n = self.next_call;
        self.next_call += 1;
        let a_contact = req
            .contact_header()
            .ok()
            .and_then(|c| c.uri().ok())
            .unwrap_or_else(|| req.from_header().and_then(|f| f.uri()).unwrap_or_default());
        let from_user = req
            .from_header()?
            .uri()?
            .user()
            .unwrap_or("gateway")
            .to_string();
        let b_uri = format!("sip:{user}@{dest}");
        let b_tag = self.token();
        let b_call_id = format!("{}-b@{}", self.token(), self.args.listen);
        let b_from = format!("<sip:{from_user}@{}>", self.args.listen);
        let b_invite = self.request(
            rsip::Method::Invite,
            &b_uri,
            None,
            &format!("{b_from};tag={b_tag}"),
            &format!("<{b_uri}>"),
            &b_call_id,
            1,
            Some(b_sdp),
        )?;
        let a_tag = self.token();
        let a = Leg {
            call_id: req.call_id_header()?.value().to_string(),
            local_tag: a_tag,
            local_uri: req.to_header()?.value().to_string(),
            remote: req.from_header()?.value().to_string(),
            target: a_contact.to_string(),
            dest: uri_addr(&a_contact).unwrap_or(src),
            local_cseq: 0,
            rtp_port: a_port,
            sockets: Some((a_rtp, a_rtcp)),
            offer,
            media: a_media,
            session: None,
            counters: Arc::default(),
            sdp_version: 1,
            dtmf: String::new(),
            retx: Vec::new(),
            reinvite: None,
            ack_offer: None,
            signal_ip: Some(src.ip()),
            peer_sdp: body_text(&req.body),
            deferred: None,
            glare_tries: 0,
            period: Period::start(&LegCounters::default()),
        };
        let b = Leg {
            call_id: b_call_id.clone(),
            local_tag: b_tag,
            local_uri: b_from,
            remote: format!("<{b_uri}>"),
            target: b_uri.clone(),
            dest,
            local_cseq: 1,
            rtp_port: b_port,
            sockets: Some((b_rtp, b_rtcp)),
            offer: Some(b_offer),
            media: None,
            session: None,
            counters: Arc::default(),
            sdp_version: 1,
            dtmf: String::new(),
            retx: vec![Retx::new("INVITE", b_invite.to_string(), dest)],
            reinvite: None,
            ack_offer: None,
            signal_ip: None,
            peer_sdp: None,
            deferred: None,
            glare_tries: 0,
            period: Period::start(&LegCounters::default()),
        };
        self.send(&b_invite.to_string(), dest);
        log::info!(
            "call {n}: INVITE {} from {src} -> {b_uri}; A offers [{}]",
            req.uri,
            a.offer
                .as_ref()
                .map(|o| o
                    .codecs
                    .iter()
                    .map(|c| c.encoding())
                    .collect::<Vec<_>>()
                    .join(", "))
                .unwrap_or_else(|| "none: a delayed offer".into())
        );
        self.by_call_id.insert(a.call_id.clone(), (n, Side::A));
        self.by_call_id.insert(b_call_id, (n, Side::B));
        self.calls.insert(
            n,
            Call {
                state: State::Inviting,
                answered: None,
                a,
                b,
                a_invite: req,
                a_src: src,
                a_final: None,
                b_invite,
                reinvite_done: false,
                done_at: None,
                a_offered: None,
            },
        );
        Ok(())
    }

    fn on_response(&mut self, resp: rsip::Response, src: SocketAddr) -> Result<(), BoxError> {
        let call_id = resp.call_id_header()?.value().to_string();
        let Some(&(n, side)) = self.by_call_id.get(&call_id) else {
            return Ok(());
        };
        let cseq = resp.cseq_header()?.typed()?;
        let code = resp.status_code.code();
        let Some(call) = self.calls.get_mut(&n) else {
            return Ok(());
        };
        let leg = call.leg_mut(side);
        // Any response stops retransmitting the request it answers.
        let what: &'static str = match cseq.method {
            rsip::Method::Invite => "INVITE",
            rsip::Method::Bye => "BYE",
            rsip::Method::Cancel => "CANCEL",
            _ => "",
        };
        leg.retx.retain(|r| r.what != what);
        match (side, cseq.method) {
            (Side::B, rsip::Method::Invite) if cseq.seq == 1 => {
                self.on_b_invite_response(n, resp, src)
            }
            (_, rsip::Method::Invite) => self.on_reinvite_response(n, side, resp, cseq.seq),
            (_, rsip::Method::Bye) => {
                log::debug!("call {n}: BYE answered {code} by {}", side.name());
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// The ACK for a final response to an INVITE we sent on `side`. `non2xx`: the
    /// Request-URI and Via branch of that INVITE, since a non-2xx ACK belongs to the
    /// INVITE transaction (RFC 3261 §17.1.1.3); a 2xx ACK is a new transaction to the
    /// peer's Contact (§13.2.2.4).
    fn ack_for(
        &mut self,
        n: u64,
        side: Side,
        resp: &rsip::Response,
        non2xx: Option<(String, Option<String>)>,
    ) -> Result<Option<(String, SocketAddr)>, BoxError> {
        let Some(c) = self.calls.get(&n) else {
            return Ok(None);
        };
        let leg = c.leg(side);
        let to = resp.to_header()?.value().to_string();
        let cseq = resp.cseq_header()?.typed()?.seq;
        let (uri, branch) = non2xx.unwrap_or_else(|| (leg.target.clone(), None));
        let from = format!("{};tag={}", leg.local_uri, leg.local_tag);
        let call_id = leg.call_id.clone();
        let dest = leg.dest;
        let ack = self.request(
            rsip::Method::Ack,
            &uri,
            branch.as_deref(),
            &from,
            &to,
            &call_id,
            cseq,
            None,
        )?;
        Ok(Some((ack.to_string(), dest)))
    }

    fn on_b_invite_response(
        &mut self,
        n: u64,
        resp: rsip::Response,
        src: SocketAddr,
    ) -> Result<(), BoxError> {
        let code = resp.status_code.code();
        if (200..300).contains(&code) {
            if let Some(c) = self.calls.get_mut(&n) {
                c.b.signal_ip = Some(src.ip());
            }
        }
        let Some(call) = self.calls.get(&n) else {
            return Ok(());
        };
        if code < 200 {
            if (code == 180 || code == 183) && call.state == State::Inviting {
                let r = self.response(&call.a_invite, 180, Some(&call.a.local_tag), vec![], None);
                self.send(&r, call.a_src);
            }
            return Ok(());
        }
        if code >= 300 {
            let branch = call
                .b_invite
                .via_header()?
                .typed()?
                .branch()
                .map(|b| b.to_string());
            let non2xx = Some((call.b_invite.uri.to_string(), branch));
            if let Some((ack, dest)) = self.ack_for(n, Side::B, &resp, non2xx)? {
                self.send(&ack, dest);
            }
            let Some(call) = self.calls.get_mut(&n) else {
                return Ok(());
            };
            if call.state == State::Inviting {
                log::info!("call {n}: B answered {}", resp.status_code);
                call.state = State::Done;
                call.done_at = Some(Instant::now());
                self.totals.failed += 1;
                let tag = call.a.local_tag.clone();
                let mut extra = Vec::new();
                for h in resp.headers.iter() {
                    if let rsip::Header::Warning(_) = h {
                        extra.push(h.clone());
                    }
                }
                let req = call.a_invite.clone();
                let to = call.a_src;
                let r = self.response(&req, code, Some(&tag), extra, None);
                if let Some(c) = self.calls.get_mut(&n) {
                    c.a_final = Some(r.clone());
                }
                self.send(&r, to);
                self.release_media(n);
            } else if call.state == State::Cancelled {
                call.state = State::Done;
                call.done_at = Some(Instant::now());
                self.release_media(n);
            }
            return Ok(());
        }
        // 2xx: B's dialog is confirmed; a retransmission only needs its ACK again.
        let b_tag = resp.to_header()?.tag()?.map(|t| t.to_string());
        let b_contact = resp.contact_header().ok().and_then(|c| c.uri().ok());
        {
            let call = self.calls.get_mut(&n).ok_or("call vanished")?;
            call.b.remote = resp.to_header()?.value().to_string();
            if let Some(uri) = &b_contact {
                call.b.target = uri.to_string();
                if let Some(a) = uri_addr(uri) {
                    call.b.dest = a;
                }
            }
            log::debug!("call {n}: B tag {b_tag:?}");
        }
        if let Some((ack, dest)) = self.ack_for(n, Side::B, &resp, None)? {
            self.send(&ack, dest);
        }
        let state = self.calls[&n].state;
        if state == State::Cancelled {
            // Answered while being cancelled: end B's dialog at once (RFC 3261 §9.1).
            self.send_bye(n, Side::B);
            let call = self.calls.get_mut(&n).ok_or("call vanished")?;
            call.state = State::Done;
            call.done_at = Some(Instant::now());
            self.release_media(n);
            return Ok(());
        }
        if state != State::Inviting {
            return Ok(());
        }
        match self.connect(n, &resp) {
            Ok(()) => Ok(()),
            Err(e) => {
                log::warn!("call {n}: cannot connect media: {e}");
                self.send_bye(n, Side::B);
                if let Some(call) = self.calls.get_mut(&n) {
                    let tag = call.a.local_tag.clone();
                    let (code, w) = if e.to_string().contains("common codec") {
                        (488, e.to_string())
                    } else {
                        (500, e.to_string())
                    };
                    let req = call.a_invite.clone();
                    let src = call.a_src;
                    let extra = vec![rsip::headers::Warning::new(format!(
                        "399 {} \"{}\"",
                        self.args.listen,
                        w.replace('"', "'")
                    ))
                    .into()];
                    let r = self.response(&req, code, Some(&tag), extra, None);
                    self.send(&r, src);
                    if let Some(c) = self.calls.get_mut(&n) {
                        c.state = State::Done;
                        c.done_at = Some(Instant::now());
                        c.a_final = Some(r);
                    }
                }
                self.totals.failed += 1;
                self.release_media(n);
                Ok(())
            }
        }
    }

    /// B answered: negotiate B's leg, create and bridge both sessions, answer A (or, for
    /// a delayed offer, offer to A).
    fn connect(&mut self, n: u64, resp: &rsip::Response) -> Result<(), BoxError> {
        let call = self.calls.get_mut(&n).ok_or("call vanished")?;
        let text = body_text(&resp.body).ok_or("B's 200 OK has no SDP answer")?;
        let b_answer = MediaOffer::from_sdp(&text)?;
        let b_offer = call.b.offer.as_ref().ok_or("no offer to B")?;
        let b_media = process_answer(b_offer, &b_answer)?;
        let b_peer = peer_addr(Some(&b_answer), self.args.media_ip)?;
        let Some(a_media) = call.a.media.clone() else {
            return self.offer_to_a(n, b_media, b_peer);
        };
        let a_offer = call.a.offer.clone();
        let a_peer = peer_addr(a_offer.as_ref(), self.args.media_ip)?;
        let a_media = self.bridge(n, a_media, a_peer, b_media, b_peer)?;
        let call = self.calls.get_mut(&n).ok_or("call vanished")?;
        call.state = State::AwaitAck;
        call.answered = Some(Instant::now());
        let port = call.a.rtp_port;
        let offer_text = body_text(&call.a_invite.body).unwrap_or_default();
        let section = a_offer.as_ref().map_or(0, |o| o.section);
        let sdp = self.answer_sdp(&offer_text, section, a_media.to_media_description(port), 1);
        self.final_ok_to_a(n, sdp)
    }

    /// Sends A the 2xx to its INVITE with `sdp`, retransmitted until A's ACK.
    fn final_ok_to_a(&mut self, n: u64, sdp: String) -> Result<(), BoxError> {
        let call = self.calls.get(&n).ok_or("call vanished")?;
        let tag = call.a.local_tag.clone();
        let req = call.a_invite.clone();
        let src = call.a_src;
        let ok = self.response(&req, 200, Some(&tag), vec![], Some(sdp));
        self.send(&ok, src);
        let call = self.calls.get_mut(&n).ok_or("call vanished")?;
        call.a_final = Some(ok.clone());
        call.a.retx.push(Retx::new("200/INVITE", ok, src));
        Ok(())
    }

    /// A delayed offer (A's INVITE had none): B has answered; our offer goes to A in the
    /// 2xx, B's codec first (relay when A takes it) at the call's ptime. The sessions are
    /// made when A's ACK brings the answer ([`Self::on_ack_answer`]).
    fn offer_to_a(
        &mut self,
        n: u64,
        b_media: NegotiatedMedia,
        b_peer: SocketAddr,
    ) -> Result<(), BoxError> {
        let mut pb = MediaSessionParams::from_negotiated(&b_media)?;
        self.engine.fit_ptime(&mut pb)?;
        let kinds = self.codecs_preferring(b_media.send_kind());
        let call = self.calls.get_mut(&n).ok_or("call vanished")?;
        let offer = caps(&kinds, pb.ptime.ms()).create_offer(call.a.rtp_port, None);
        log::info!(
            "call {n}: B answered {}; offering A [{}] in the 2xx (delayed offer)",
            describe(&b_media),
            offer
                .codecs
                .iter()
                .map(|c| c.encoding())
                .collect::<Vec<_>>()
                .join(", ")
        );
        let sdp_body = offer.to_media_description();
        call.b.media = Some(b_media);
        call.a_offered = Some((offer, b_peer));
        call.state = State::AwaitAck;
        call.answered = Some(Instant::now());
        let sdp = self.sdp(sdp_body, 1);
        self.final_ok_to_a(n, sdp)
    }

    /// A's ACK to a 2xx that carried our offer: its answer completes the negotiation and
    /// the call's sessions are made and bridged. An ACK without an acceptable answer ends
    /// the call (RFC 3261 §13.3.1.4: the dialog is up, so a BYE each way).
    fn on_ack_answer(&mut self, n: u64, req: &rsip::Request) -> Result<(), BoxError> {
        let call = self.calls.get_mut(&n).ok_or("call vanished")?;
        let Some((offer, b_peer)) = call.a_offered.take() else {
            return Ok(());
        };
        let b_media = call.b.media.clone().ok_or("no media on leg B")?;
        let text = body_text(&req.body).ok_or("A's ACK has no SDP answer")?;
        let answer = MediaOffer::from_sdp(&text)?;
        let a_media = process_answer(&offer, &answer)?;
        let a_peer = peer_addr(Some(&answer), self.args.media_ip)?;
        call.a.offer = Some(answer);
        self.bridge(n, a_media, a_peer, b_media, b_peer)?;
        Ok(())
    }

    /// Makes and bridges the call's two sessions and hands their sockets to the media I/O
    /// thread; returns A's media at the call's ptime.
    fn bridge(
        &mut self,
        n: u64,
        mut a_media: NegotiatedMedia,
        a_peer: SocketAddr,
        mut b_media: NegotiatedMedia,
        b_peer: SocketAddr,
    ) -> Result<NegotiatedMedia, BoxError> {
        let mut pa = MediaSessionParams::from_negotiated(&a_media)?;
        let mut pb = MediaSessionParams::from_negotiated(&b_media)?;
        // Bridged sessions share one ptime (no repacketisation): the shorter of the two
        // legs' (each fitted to the engine's slots), and never 30 ms beside Opus (RFC 6716
        // has no 30 ms packets). Both answers and both legs' records say it, so a later
        // re-INVITE keeps it.
        self.engine.fit_ptime(&mut pa)?;
        self.engine.fit_ptime(&mut pb)?;
        let mut ptime = pa.ptime.min(pb.ptime);
        if ptime == Ptime::MS_30 && (pa.tx.codec == Codec::Opus || pb.tx.codec == Codec::Opus) {
            ptime = Ptime::MS_20;
        }
        (pa.ptime, pb.ptime) = (ptime, ptime);
        a_media.ptime_ms = ptime.ms();
        b_media.ptime_ms = ptime.ms();
        self.opus_overrides(&mut pa, &a_media);
        self.opus_overrides(&mut pb, &b_media);
        self.voice_settings(&mut pa);
        self.voice_settings(&mut pb);
        let (ha, hb) = self.engine.create_call(
            (DialogId(2 * n), pa.clone()),
            (DialogId(2 * n + 1), pb.clone()),
        )?;
        let call = self.calls.get_mut(&n).ok_or("call vanished")?;
        call.a.session = Some(ha.id);
        call.b.session = Some(hb.id);
        let relay = pa.tx.codec == pb.tx.codec;
        log::info!(
            "call {n}: connected: A {} <-> B {} ({}), ptime {} ms, DTMF PT A {:?} B {:?}",
            describe(&a_media),
            describe(&b_media),
            if relay { "pass-through" } else { "transcoding" },
            pa.ptime.ms(),
            a_media.telephone_event_send,
            b_media.telephone_event_send
        );
        let io = &mut self.ios[ha.lane()];
        let (a_signal, b_signal) = (call.a.signal_ip, call.b.signal_ip);
        for (leg, id, peer, media, params, signal) in [
            (&mut call.a, ha.id, a_peer, &a_media, &pa, a_signal),
            (&mut call.b, hb.id, b_peer, &b_media, &pb, b_signal),
        ] {
            leg.period = Period::start(&leg.counters);
            if let Some((rtp, rtcp)) = leg.sockets.take() {
                io.add(NewLeg {
                    session: id,
                    rtp,
                    rtcp,
                    media: leg_media(peer, media, leg_quality(params)),
                    signal_ip: signal,
                    cname: format!("media-core-gw-{n}@{}", self.args.media_ip),
                    counters: leg.counters.clone(),
                });
            }
        }
        call.a.media = Some(a_media.clone());
        call.b.media = Some(b_media);
        self.by_session.insert(ha.id, (n, Side::A));
        self.by_session.insert(hb.id, (n, Side::B));
        Ok(a_media)
    }

    fn on_cancel(&mut self, n: u64) {
        let Some(call) = self.calls.get_mut(&n) else {
            return;
        };
        if call.state != State::Inviting {
            return; // already answered: CANCEL has no effect (RFC 3261 §9.2)
        }
        log::info!("call {n}: CANCEL from A");
        call.state = State::Cancelled;
        self.totals.cancelled += 1;
        let tag = call.a.local_tag.clone();
        let req = call.a_invite.clone();
        let src = call.a_src;
        let r = self.response(&req, 487, Some(&tag), vec![], None);
        self.send(&r, src);
        // CANCEL to B: same Request-URI, Call-ID, From, To, branch and CSeq number as
        // our INVITE (RFC 3261 §9.1).
        let Some(call) = self.calls.get_mut(&n) else {
            return;
        };
        call.a_final = Some(r);
        let inv = call.b_invite.clone();
        let dest = call.b.dest;
        let branch = inv
            .via_header()
            .ok()
            .and_then(|v| v.typed().ok())
            .and_then(|v| v.branch().map(|b| b.to_string()));
        let from = inv.from_header().map(|h| h.value().to_string());
        let to = inv.to_header().map(|h| h.value().to_string());
        let cid = inv.call_id_header().map(|h| h.value().to_string());
        if let (Ok(from), Ok(to), Ok(cid)) = (from, to, cid) {
            match self.request(
                rsip::Method::Cancel,
                &inv.uri.to_string(),
                branch.as_deref(),
                &from,
                &to,
                &cid,
                1,
                None,
            ) {
                Ok(c) => {
                    let text = c.to_string();
                    self.send(&text, dest);
                    if let Some(call) = self.calls.get_mut(&n) {
                        call.b.retx.push(Retx::new("CANCEL", text, dest));
                    }
                }
                Err(e) => log::warn!("call {n}: CANCEL: {e}"),
            }
        }
    }

    fn send_bye(&mut self, n: u64, side: Side) {
        let Some(call) = self.calls.get_mut(&n) else {
            return;
        };
        let leg = call.leg_mut(side);
        leg.local_cseq += 1;
        let (target, from, to, cid, cseq, dest) = (
            leg.target.clone(),
            format!("{};tag={}", leg.local_uri, leg.local_tag),
            leg.remote.clone(),
            leg.call_id.clone(),
            leg.local_cseq,
            leg.dest,
        );
        match self.request(
            rsip::Method::Bye,
            &target,
            None,
            &from,
            &to,
            &cid,
            cseq,
            None,
        ) {
            Ok(r) => {
                let text = r.to_string();
                self.send(&text, dest);
                if let Some(call) = self.calls.get_mut(&n) {
                    let leg = call.leg_mut(side);
                    leg.retx.push(Retx::new("BYE", text, dest));
                }
            }
            Err(e) => log::warn!("call {n}: BYE: {e}"),
        }
    }

    /// Ends an established call: BYE to the side that did not hang up, summary, teardown.
    fn hang_up(&mut self, n: u64, from: Option<Side>) {
        let Some(call) = self.calls.get(&n) else {
            return;
        };
        if matches!(call.state, State::Done) {
            return;
        }
        let state = call.state;
        let bridged = call.a.session.is_some();
        for side in [Side::A, Side::B] {
            if Some(side) != from && matches!(state, State::Established | State::AwaitAck) {
                self.send_bye(n, side);
            }
        }
        // Completed: answered, and its media was bridged. A delayed offer's call that ends
        // before A's ACK brought a usable answer (a bad answer, no ACK, a BYE first) was
        // answered but never carried media: failed.
        if matches!(state, State::Established | State::AwaitAck) {
            if bridged {
                self.totals.completed += 1;
                self.summary(n);
            } else {
                self.totals.failed += 1;
            }
        }
        if let Some(call) = self.calls.get_mut(&n) {
            call.state = State::Done;
            call.done_at = Some(Instant::now());
            // Nothing but our BYEs goes on, on either leg; no offer of ours stays open.
            for leg in [&mut call.a, &mut call.b] {
                leg.retx.retain(|r| r.what == "BYE");
                leg.ack_offer = None;
                leg.reinvite = None;
                leg.deferred = None;
            }
        }
        self.release_media(n);
    }

    fn release_media(&mut self, n: u64) {
        let Some(call) = self.calls.get_mut(&n) else {
            return;
        };
        let mut ports = Vec::new();
        for leg in [&mut call.a, &mut call.b] {
            if let Some(id) = leg.session.take() {
                self.ios[id.lane()].remove(id);
                self.by_session.remove(&id);
                if let Err(e) = self.engine.destroy_media_session(id) {
                    log::warn!("call {n}: destroy {id:?}: {e}");
                }
            }
            leg.sockets = None;
            if leg.rtp_port != 0 {
                ports.push(leg.rtp_port);
                leg.rtp_port = 0;
            }
        }
        // Reused last, so a late packet of this call does not land in the next one.
        for p in ports {
            self.free_ports.insert(0, p);
        }
    }

    fn summary(&self, n: u64) {
        let Some(call) = self.calls.get(&n) else {
            return;
        };
        let dur = call.answered.map_or(0.0, |t| t.elapsed().as_secs_f64());
        let codec = |l: &Leg| l.media.as_ref().map_or("-".to_string(), describe);
        let relay = match (&call.a.media, &call.b.media) {
            (Some(a), Some(b)) if a.send.same_codec(&b.send) => "pass-through",
            _ => "transcoding",
        };
        println!(
            "CALL SUMMARY call {n}: {:.1} s, A {} <-> B {} ({relay})",
            dur,
            codec(&call.a),
            codec(&call.b)
        );
        for (side, leg) in [(Side::A, &call.a), (Side::B, &call.b)] {
            let Some(id) = leg.session else {
                continue;
            };
            let q = self.engine.session_quality(id).unwrap_or_default();
            let st = self.engine.session_stats(id).unwrap_or_default();
            let c = &leg.counters;
            let g = LegCounters::get;
            println!(
                "  leg {} {}: rx {} pkts, tx {} pkts | MOS {} | loss {:.2}% ({} lost, {} late) | jitter {:.1} ms | concealed {}/{} frames | jb {} ms | DTMF seen: {} (sent {} pkts, refused {}) | drops: ingress {} not-rtp {} foreign-src {} held {} send-err {} | tx-unnegotiated-pt {} | rtcp in {} out {} bad {} foreign {} | peer reports {} | latched {}",
                side.name(),
                codec(leg),
                g(&c.rtp_in),
                g(&c.rtp_out),
                if q.packets_received == 0 {
                    "n/a".to_string()
                } else {
                    format!("{:.2}", q.mos)
                },
                q.loss_percent,
                q.packets_lost,
                q.late_discards,
                q.jitter_ms,
                q.frames_concealed,
                q.frames_played,
                q.jb_current_ms,
                if leg.dtmf.is_empty() { "none" } else { &leg.dtmf },
                st.tx_dtmf_packets,
                st.tx_dtmf_refused,
                g(&c.ingress_drops),
                g(&c.not_rtp),
                g(&c.foreign_src),
                g(&c.held_drops),
                g(&c.send_errors),
                g(&c.tx_bad_pt),
                g(&c.rtcp_in),
                g(&c.rtcp_out),
                g(&c.rtcp_bad),
                g(&c.rtcp_foreign),
                if g(&c.rtcp_in) == 0 {
                    "none".to_string()
                } else {
                    format!(
                        "{:.1}% lost (cumulative {}), rtt {}",
                        g(&c.peer.fraction_lost) as f64 / 2.56,
                        g(&c.peer.cumulative_lost),
                        match g(&c.peer.rtt_us) {
                            0 => "n/a".to_string(),
                            us => format!("{:.1} ms", us as f64 / 1000.0),
                        }
                    )
                },
                g(&c.latched),
            );
            if let Some(m) = &leg.media {
                println!(
                    "  leg {} last media period ({}, since the last offer/answer): {}",
                    side.name(),
                    m.direction.attribute(),
                    leg.period.describe(c)
                );
            }
        }
    }

    fn on_reinvite(
        &mut self,
        n: u64,
        side: Side,
        req: rsip::Request,
        src: SocketAddr,
    ) -> Result<(), BoxError> {
        let Some(call) = self.calls.get_mut(&n) else {
            return Ok(());
        };
        if side == Side::A && req.to_header()?.tag()?.is_none() {
            // A retransmission of A's initial INVITE: repeat what we said.
            if let Some(f) = call.a_final.clone() {
                self.send(&f, src);
            } else {
                let r = self.response(&req, 100, None, vec![], None);
                self.send(&r, src);
            }
            return Ok(());
        }
        if !matches!(call.state, State::Established | State::AwaitAck) {
            let r = self.response(&req, 491, None, vec![], None);
            self.send(&r, src);
            return Ok(());
        }
        let cseq = req.cseq_header()?.typed()?.seq;
        let delayed = call.a_offered.is_some();
        let leg = call.leg_mut(side);
        if let Some((_, _, ok)) = leg.ack_offer.as_ref().filter(|(c, _, _)| *c == cseq) {
            // A retransmission of the offer-less re-INVITE answered with our offer.
            let ok = ok.clone();
            self.send(&ok, src);
            return Ok(());
        }
        if delayed || leg.session.is_none() || leg.reinvite.is_some() || leg.ack_offer.is_some() {
            // An offer/answer of ours is still open on the leg (our re-INVITE, our offer
            // awaiting its ACK, or the call's first offer in a delayed-offer 2xx): glare
            // (RFC 3261 §14.2), try again later.
            let r = self.response(&req, 491, None, vec![], None);
            self.send(&r, src);
            return Ok(());
        }
        self.totals.reinvites += 1;
        let codecs = self.args.codecs.clone();
        let call = self.calls.get_mut(&n).ok_or("call vanished")?;
        let leg = call.leg_mut(side);
        let Some(text) = body_text(&req.body) else {
            // No offer (a session refresh, RFC 4028, or a peer asking for ours): our offer
            // is the leg's media as it is, in the 2xx; the ACK brings the answer (RFC 3261
            // §14.2). A 488 here made refreshing phones end the call when its session
            // timer ran out.
            let prev = leg.media.clone().ok_or("no media on the leg")?;
            let kind = prev.send_kind().ok_or("leg has no voice codec")?;
            let mut local = caps(&[kind], prev.ptime_ms);
            local.direction = prev.direction;
            let offer = local.create_offer(leg.rtp_port, Some(&prev));
            leg.sdp_version += 1;
            let (version, tag) = (leg.sdp_version, leg.local_tag.clone());
            let shape = leg_shape(leg);
            let sdp = self.offer_sdp(shape, offer.to_media_description(), version);
            log::info!(
                "call {n}: re-INVITE from {} without an offer: offering its media as it is",
                side.name()
            );
            let r = self.response(&req, 200, Some(&tag), vec![], Some(sdp));
            self.send(&r, src);
            let call = self.calls.get_mut(&n).ok_or("call vanished")?;
            let leg = call.leg_mut(side);
            // Retransmitted until the ACK (RFC 3261 §13.3.1.4).
            leg.retx.push(Retx::new("200/re-INVITE", r.clone(), src));
            leg.ack_offer = Some((cseq, offer, r));
            return Ok(());
        };
        let offer = match MediaOffer::from_sdp(&text) {
            Ok(o) => o,
            Err(e) => {
                let r = self.response(&req, 400, None, vec![], None);
                log::warn!("call {n}: re-INVITE from {}: bad SDP: {e}", side.name());
                self.send(&r, src);
                return Ok(());
            }
        };
        let prev = leg.media.clone().ok_or("no media")?;
        let id = leg.session.ok_or("no session")?;
        // The peer's order wins in a re-offer, so a codec change it asks for is taken.
        let mut local = caps(&codecs, prev.ptime_ms);
        local.prefer_local_order = false;
        let result = negotiate_reoffer(&prev, &offer, &local)
            .map_err(BoxError::from)
            .and_then(|mut m| {
                let mut p = MediaSessionParams::from_negotiated(&m)?;
                // The call's ptime stays (bridged legs share one), and the answer says it.
                p.ptime = MediaSessionParams::from_negotiated(&prev)?.ptime;
                m.ptime_ms = p.ptime.ms();
                self.opus_overrides(&mut p, &m);
                self.voice_settings(&mut p);
                // What the engine cannot run is refused here, before anything changed.
                self.engine.fit_ptime(&mut p)?;
                if p.ptime.ms() != m.ptime_ms {
                    return Err("the re-offer's codec cannot run at the call's ptime".into());
                }
                Ok((m, p))
            });
        let (media, params) = match result {
            Ok(x) => x,
            Err(e) => {
                let r = self.response(
                    &req,
                    488,
                    None,
                    vec![rsip::headers::Warning::new(format!(
                        "305 {} \"{}\"",
                        self.args.listen,
                        e.to_string().replace('"', "'")
                    ))
                    .into()],
                    None,
                );
                self.send(&r, src);
                return Ok(());
            }
        };
        let t = Instant::now();
        let quality = leg_quality(&params);
        let applied = peer_addr(Some(&offer), self.args.media_ip)
            .and_then(|peer| Ok((peer, self.engine.update_media_session(id, params)?)));
        let peer = match applied {
            Ok((peer, ())) => peer,
            Err(e) => {
                // Answered whatever happened (a re-INVITE left unanswered is retransmitted
                // until the peer ends the dialog); the call goes on as it was.
                log::warn!("call {n}: re-INVITE from {} refused: {e}", side.name());
                let w = rsip::headers::Warning::new(format!(
                    "399 {} \"{}\"",
                    self.args.listen,
                    e.to_string().replace('"', "'")
                ));
                let r = self.response(&req, 488, None, vec![w.into()], None);
                self.send(&r, src);
                return Ok(());
            }
        };
        self.ios[id.lane()].update(id, leg_media(peer, &media, quality));
        if prev.direction != media.direction {
            self.hold_changed.push(n);
        }
        let call = self.calls.get_mut(&n).ok_or("call vanished")?;
        let leg = call.leg_mut(side);
        let what = format!(
            "re-INVITE from {}: {} -> {}, our direction {} -> {}",
            side.name(),
            describe(&prev),
            describe(&media),
            prev.direction.attribute(),
            media.direction.attribute(),
        );
        log::info!(
            "call {n}: {what}, applied in {:.2} ms",
            t.elapsed().as_secs_f64() * 1000.0
        );
        // A hold or resume (direction change) is passed on to the other phone, so it stops
        // (or restarts) sending media nobody will play: what the offerer sends we send
        // on, what it will not receive we ask the other side not to send (RFC 3264 §8.4).
        // A codec change stays on its leg: the engine transcodes.
        let forward = (prev.direction != media.direction)
            .then(|| Direction::from_flags(offer.direction.sends(), offer.direction.receives()));
        leg.sdp_version += 1;
        let section = offer.section;
        leg.offer = Some(offer);
        leg.peer_sdp = Some(text.clone());
        let (port, version, tag) = (leg.rtp_port, leg.sdp_version, leg.local_tag.clone());
        let sdp = self.answer_sdp(&text, section, media.to_media_description(port), version);
        let call = self.calls.get_mut(&n).ok_or("call vanished")?;
        let leg = call.leg_mut(side);
        leg.media = Some(media);
        let r = self.response(&req, 200, Some(&tag), vec![], Some(sdp));
        self.send(&r, src);
        self.new_period(n, &what);
        if let Some(dir) = forward {
            self.pass_on_direction(n, side.other(), dir);
        }
        Ok(())
    }

    /// Passes a hold or resume on to `side`'s peer: a re-INVITE offering `dir` now, or,
    /// while an offer is open on that leg, as soon as none is (`Leg::deferred`).
    fn pass_on_direction(&mut self, n: u64, side: Side, dir: Direction) {
        let Some(call) = self.calls.get_mut(&n) else {
            return;
        };
        if call.state != State::Established {
            return;
        }
        let leg = call.leg_mut(side);
        let now = Instant::now();
        if leg.reinvite.is_some()
            || leg.ack_offer.is_some()
            || leg.deferred.is_some_and(|d| d.1 > now)
        {
            log::info!(
                "call {n}: hold/resume for {} waits for the offer open on its leg",
                side.name()
            );
            // The newest direction, not before a 491's wait already running.
            let at = leg.deferred.map_or(now, |d| d.1.max(now));
            leg.deferred = Some((dir, at));
            return;
        }
        leg.deferred = None;
        if let Err(e) = self.send_reinvite(n, side, None, dir) {
            log::warn!(
                "call {n}: passing the hold/resume on to {}: {e}",
                side.name()
            );
        }
    }

    /// Sends a re-INVITE on `side`'s dialog: our offer on the leg's port with only `kind`
    /// (`--reinvite-b`, a codec switch) or only the leg's current codec (`None`), and
    /// `direction` (hold: `sendonly`/`inactive`, resume: `sendrecv`). One at a time per
    /// leg (RFC 3261 §14.1: no second INVITE while one is pending).
    fn send_reinvite(
        &mut self,
        n: u64,
        side: Side,
        kind: Option<CodecKind>,
        direction: Direction,
    ) -> Result<(), BoxError> {
        let call = self.calls.get_mut(&n).ok_or("call vanished")?;
        let leg = call.leg_mut(side);
        if leg.reinvite.is_some() || leg.ack_offer.is_some() {
            return Err("an offer on this leg is still open".into());
        }
        let prev = leg.media.clone().ok_or("no media on the leg")?;
        let kind = kind.or(prev.send_kind()).ok_or("leg has no voice codec")?;
        let mut local = caps(&[kind], prev.ptime_ms);
        local.direction = direction;
        let offer = local.create_offer(leg.rtp_port, Some(&prev));
        leg.local_cseq += 1;
        leg.sdp_version += 1;
        let (target, from, to, cid, cseq, dest, version) = (
            leg.target.clone(),
            format!("{};tag={}", leg.local_uri, leg.local_tag),
            leg.remote.clone(),
            leg.call_id.clone(),
            leg.local_cseq,
            leg.dest,
            leg.sdp_version,
        );
        let shape = leg_shape(leg);
        let sdp = self.offer_sdp(shape, offer.to_media_description(), version);
        let r = self.request(
            rsip::Method::Invite,
            &target,
            None,
            &from,
            &to,
            &cid,
            cseq,
            Some(sdp),
        )?;
        let branch = r
            .via_header()?
            .typed()?
            .branch()
            .map(|b| b.to_string())
            .unwrap_or_default();
        log::info!(
            "call {n}: re-INVITE to {} offering {kind:?}, {}",
            side.name(),
            direction.attribute()
        );
        let text = r.to_string();
        self.send(&text, dest);
        let call = self.calls.get_mut(&n).ok_or("call vanished")?;
        let leg = call.leg_mut(side);
        leg.reinvite = Some((cseq, offer, branch));
        leg.retx.push(Retx::new("INVITE", text, dest));
        Ok(())
    }

    /// A final answer to our re-INVITE on `side`: ACK it and apply the new media.
    fn on_reinvite_response(
        &mut self,
        n: u64,
        side: Side,
        resp: rsip::Response,
        seq: u32,
    ) -> Result<(), BoxError> {
        let code = resp.status_code.code();
        if code < 200 {
            return Ok(());
        }
        let call = self.calls.get_mut(&n).ok_or("call vanished")?;
        let leg = call.leg_mut(side);
        let pending = match &leg.reinvite {
            Some((want, _, _)) if *want == seq => leg.reinvite.take(),
            _ => None,
        };
        let non2xx = (code >= 300).then(|| {
            let branch = pending.as_ref().map(|(_, _, b)| b.clone());
            (leg.target.clone(), branch)
        });
        if let Some((ack, dest)) = self.ack_for(n, side, &resp, non2xx)? {
            self.send(&ack, dest);
        }
        let Some((_, offer, _)) = pending else {
            return Ok(()); // a retransmitted final response: ACKed above
        };
        if code >= 300 {
            log::warn!(
                "call {n}: {} refused our re-INVITE: {}",
                side.name(),
                resp.status_code
            );
            if code == 491 {
                // Glare: the peer had an offer of its own open. A hold or resume is tried
                // again later (RFC 3261 §14.1: 2.1-4 s on leg B, whose Call-ID we made,
                // 0-2 s on leg A; spread by the call's number), three times at most; a
                // newer direction waiting meanwhile goes instead.
                let spread = n % 1900;
                let wait = Duration::from_millis(match side {
                    Side::B => 2100 + spread,
                    Side::A => spread,
                });
                if let Some(call) = self.calls.get_mut(&n) {
                    let leg = call.leg_mut(side);
                    let prev = leg.media.as_ref().map(|m| m.send_kind());
                    leg.glare_tries = leg.glare_tries.saturating_add(1);
                    if leg.glare_tries > 3 {
                        log::warn!(
                            "call {n}: {} refused our re-INVITE three times; giving up",
                            side.name()
                        );
                        leg.deferred = None;
                        leg.glare_tries = 0;
                    } else if offer.codecs.first().map(|c| c.kind()) == prev {
                        let dir = leg.deferred.map_or(offer.direction, |d| d.0);
                        leg.deferred = Some((dir, Instant::now() + wait));
                    }
                }
            }
            return Ok(());
        }
        if let Some(call) = self.calls.get_mut(&n) {
            call.leg_mut(side).glare_tries = 0;
        }
        let text = body_text(&resp.body).ok_or("no SDP in re-INVITE answer")?;
        self.apply_answer(n, side, &offer, &text, "our re-INVITE")?;
        self.totals.reinvites += 1;
        Ok(())
    }

    /// The answer `text` to our `offer` on `side` (in the 2xx to our re-INVITE, or in the
    /// ACK to our 2xx to an offer-less re-INVITE): the leg's session and I/O follow it.
    fn apply_answer(
        &mut self,
        n: u64,
        side: Side,
        offer: &MediaOffer,
        text: &str,
        how: &str,
    ) -> Result<(), BoxError> {
        let call = self.calls.get_mut(&n).ok_or("call vanished")?;
        let leg = call.leg_mut(side);
        let ans = MediaOffer::from_sdp(text)?;
        let mut media = process_answer(offer, &ans)?;
        let id = leg.session.ok_or("no session on the leg")?;
        let prev = leg.media.clone().ok_or("no media on the leg")?;
        let mut params = MediaSessionParams::from_negotiated(&media)?;
        // The call's ptime stays (bridged legs share one), and the leg's record says it.
        params.ptime = MediaSessionParams::from_negotiated(&prev)?.ptime;
        media.ptime_ms = params.ptime.ms();
        self.opus_overrides(&mut params, &media);
        self.voice_settings(&mut params);
        let t = Instant::now();
        let quality = leg_quality(&params);
        self.engine.update_media_session(id, params)?;
        let peer = peer_addr(Some(&ans), self.args.media_ip)?;
        self.ios[id.lane()].update(id, leg_media(peer, &media, quality));
        if prev.direction != media.direction {
            self.hold_changed.push(n);
        }
        let call = self.calls.get_mut(&n).ok_or("call vanished")?;
        let leg = call.leg_mut(side);
        let what = format!(
            "leg {} switched by {how}: {} -> {}, our direction {} -> {}",
            side.name(),
            describe(&prev),
            describe(&media),
            prev.direction.attribute(),
            media.direction.attribute(),
        );
        log::info!(
            "call {n}: {what} (update {:.2} ms)",
            t.elapsed().as_secs_f64() * 1000.0
        );
        leg.media = Some(media);
        self.new_period(n, &what);
        Ok(())
    }

    /// Ends the call's media period (an offer/answer changed a leg): logs what each leg
    /// received and sent in it and starts the next, so a hold (nothing sent toward the
    /// held phone) and what follows a resume or codec change can be checked.
    fn new_period(&mut self, n: u64, why: &str) {
        let Some(c) = self.calls.get_mut(&n) else {
            return;
        };
        log::info!(
            "call {n}: media period ended ({why}): leg A {} | leg B {}",
            c.a.period.describe(&c.a.counters),
            c.b.period.describe(&c.b.counters)
        );
        c.a.period = Period::start(&c.a.counters);
        c.b.period = Period::start(&c.b.counters);
    }

    fn on_engine_event(&mut self, ev: EngineEvent) {
        match ev {
            EngineEvent::Dtmf {
                session,
                digit,
                ended_ms,
                source,
            } => {
                let Some(&(n, side)) = self.by_session.get(&session) else {
                    return;
                };
                match ended_ms {
                    None => log::info!("call {n}: leg {}: DTMF '{digit}' begins", side.name()),
                    Some(ms) => {
                        log::info!(
                            "call {n}: leg {}: DTMF '{digit}' ({source:?}, {ms} ms), relayed to leg {}",
                            side.name(),
                            side.other().name()
                        );
                        self.totals.dtmf += 1;
                        if let Some(c) = self.calls.get_mut(&n) {
                            c.leg_mut(side).dtmf.push(digit);
                        }
                    }
                }
            }
            EngineEvent::Talkspurt { session, speaking } => {
                if let Some(&(n, side)) = self.by_session.get(&session) {
                    log::info!(
                        "call {n}: leg {}: talkspurt {}",
                        side.name(),
                        if speaking { "starts" } else { "ends" }
                    );
                }
            }
            EngineEvent::DeadlineOverrun {
                lane,
                tick,
                late_ns,
            } => {
                self.totals.overruns += 1;
                if self.totals.overruns <= 10 || self.totals.overruns.is_power_of_two() {
                    log::warn!(
                        "lane {lane}: tick {tick} overran its deadline by {:.2} ms (overruns so far: {})",
                        late_ns as f64 / 1e6,
                        self.totals.overruns
                    );
                }
            }
            EngineEvent::SessionStarted(_) | EngineEvent::SessionStopped(_) => {}
            other => log::warn!("engine: {other:?}"),
        }
    }

    fn timers(&mut self) {
        let now = Instant::now();
        let mut resend = Vec::new();
        let mut timed_out = Vec::new();
        let mut remove = Vec::new();
        let mut reinvites = Vec::new();
        let mut deferred = Vec::new();
        for (n, c) in &mut self.calls {
            for (side, leg) in [(Side::A, &mut c.a), (Side::B, &mut c.b)] {
                for r in &mut leg.retx {
                    if now >= r.next {
                        if r.left == 0 {
                            timed_out.push((*n, side, r.what));
                            continue;
                        }
                        r.left -= 1;
                        r.interval = (r.interval * 2).min(Duration::from_secs(4));
                        r.next = now + r.interval;
                        resend.push((r.text.clone(), r.to));
                    }
                }
                leg.retx.retain(|r| r.left > 0 || now < r.next);
            }
            if c.done_at.is_some_and(|t| now >= t + Duration::from_secs(8)) {
                remove.push(*n);
            }
            if c.state == State::Established {
                for (side, leg) in [(Side::A, &c.a), (Side::B, &c.b)] {
                    if let Some((dir, at)) = leg.deferred {
                        if now >= at && leg.reinvite.is_none() && leg.ack_offer.is_none() {
                            deferred.push((*n, side, dir));
                        }
                    }
                }
            }
            if let Some((at, _)) = self.args.reinvite_b {
                let due = c
                    .answered
                    .is_some_and(|t| now >= t + Duration::from_secs_f64(at));
                if c.state == State::Established && !c.reinvite_done && due {
                    c.reinvite_done = true;
                    reinvites.push(*n);
                }
            }
        }
        for (text, to) in resend {
            self.send(&text, to);
        }
        if let Some((_, kind)) = self.args.reinvite_b {
            for n in reinvites {
                let dir = self
                    .calls
                    .get(&n)
                    .and_then(|c| c.b.media.as_ref())
                    .map_or(Direction::SendRecv, |m| m.direction);
                if let Err(e) = self.send_reinvite(n, Side::B, Some(kind), dir) {
                    log::warn!("call {n}: re-INVITE to B: {e}");
                }
            }
        }
        for (n, side, what) in timed_out {
            log::warn!("call {n}: no answer from {} to {what}", side.name());
            let state = self.calls.get(&n).map(|c| c.state);
            match (what, state) {
                ("INVITE", Some(State::Inviting)) => {
                    if let Some(c) = self.calls.get_mut(&n) {
                        let tag = c.a.local_tag.clone();
                        let req = c.a_invite.clone();
                        let src = c.a_src;
                        let r = self.response(&req, 408, Some(&tag), vec![], None);
                        self.send(&r, src);
                    }
                    self.totals.failed += 1;
                    if let Some(c) = self.calls.get_mut(&n) {
                        c.state = State::Done;
                        c.done_at = Some(now);
                    }
                    self.release_media(n);
                }
                ("200/INVITE", Some(State::AwaitAck)) => self.hang_up(n, None),
                ("200/re-INVITE", Some(_)) => {
                    // Our offer in a 2xx never got its ACK: the session's state is unknown
                    // to both sides (RFC 3261 §13.3.1.4: end the dialog).
                    log::warn!(
                        "call {n}: no ACK from {} to our offer in a 2xx; hanging up",
                        side.name()
                    );
                    self.hang_up(n, None);
                }
                ("INVITE", Some(_)) => {
                    // Our re-INVITE went unanswered: the leg keeps its media; allow another.
                    if let Some(c) = self.calls.get_mut(&n) {
                        c.leg_mut(side).reinvite = None;
                    }
                }
                _ => {}
            }
        }
        // Last: a call the timeouts above ended gets no deferred re-INVITE.
        for (n, side, dir) in deferred {
            self.pass_on_direction(n, side, dir);
        }
        for n in remove {
            if let Some(c) = self.calls.remove(&n) {
                self.by_call_id.remove(&c.a.call_id);
                self.by_call_id.remove(&c.b.call_id);
            }
        }
    }

    /// A quality alert: a warning, unless its leg is on hold (we told the peer not to
    /// send, so a receive stream that stops is expected, RFC 3264 §8.4). A media timeout
    /// on a leg that should receive ends the call (BYE to both phones): its media is dead
    /// (a phone gone without a BYE, a NAT binding lost, one-way audio), and a call left up
    /// holds its ports and sessions.
    fn on_quality_event(&mut self, ev: QualityEvent) {
        let session = match ev {
            QualityEvent::MosLow { session, .. }
            | QualityEvent::MosRecovered { session, .. }
            | QualityEvent::LossHigh { session, .. }
            | QualityEvent::LossRecovered { session, .. }
            | QualityEvent::MediaTimeout { session, .. }
            | QualityEvent::MediaResumed { session, .. } => Some(SessionId::from_u64(session)),
            _ => None,
        };
        let leg = session.and_then(|id| {
            let &(n, side) = self.by_session.get(&id)?;
            let c = self.calls.get(&n)?;
            let leg = c.leg(side);
            Some((n, side, leg.media.as_ref().map(|m| m.direction)))
        });
        // A call on hold from either side (a leg not sendrecv) may carry no media at all
        // (a holder without music on hold sends nothing on its sendonly leg): its
        // timeouts are expected.
        let held_call = |n: u64| {
            self.calls.get(&n).is_some_and(|c| {
                [&c.a, &c.b].iter().any(|l| {
                    l.media
                        .as_ref()
                        .is_some_and(|m| m.direction != Direction::SendRecv)
                })
            })
        };
        match leg {
            Some((n, side, _))
                if matches!(ev, QualityEvent::MediaTimeout { .. }) && held_call(n) =>
            {
                self.totals.alerts_on_hold += 1;
                log::info!(
                    "call {n}: on hold: leg {} without media expected: {ev:?}",
                    side.name()
                );
            }
            Some((n, side, Some(dir))) if !dir.receives() => {
                self.totals.alerts_on_hold += 1;
                log::info!(
                    "call {n}: leg {} on hold ({}): quality alert expected: {ev:?}",
                    side.name(),
                    dir.attribute()
                );
            }
            Some((n, side, _)) if matches!(ev, QualityEvent::MediaTimeout { .. }) => {
                self.totals.media_timeouts += 1;
                log::warn!(
                    "call {n}: leg {}: no media: {ev:?}; hanging up",
                    side.name()
                );
                self.hang_up(n, None);
            }
            Some((n, side, _)) => {
                self.totals.alerts += 1;
                log::warn!("call {n}: leg {}: quality alert: {ev:?}", side.name());
            }
            // The other leg of a call a timeout just ended (both legs timed out in one poll).
            None if matches!(
                ev,
                QualityEvent::MediaTimeout { .. } | QualityEvent::MediaResumed { .. }
            ) =>
            {
                log::debug!("media event for a call already ended: {ev:?}");
            }
            None => {
                self.totals.alerts += 1;
                log::warn!("quality alert: {ev:?}");
            }
        }
    }

    /// One `STATS` line: the calls so far, and the engine's quality `q` over `span`.
    fn stats_line(&self, q: &EngineQuality, span: &str) {
        let lanes: Vec<String> = q
            .lanes
            .iter()
            .map(|l| {
                format!(
                    "lane {}: {} sessions, p99 tick {:.2} ms = load {:.0}%, overruns {}, drops {}",
                    l.lane,
                    l.sessions,
                    l.tick_p99_ns as f64 / 1e6,
                    l.load * 100.0,
                    l.deadline_overruns,
                    l.drops
                )
            })
            .collect();
        let active = self
            .calls
            .values()
            .filter(|c| matches!(c.state, State::Established | State::AwaitAck))
            .count();
        println!(
            "STATS t={:.1}s calls: active {active} attempted {} completed {} failed {} (488: {}) cancelled {} | {span}: mean MOS {:.2} | {}",
            self.started.elapsed().as_secs_f64(),
            self.totals.attempted,
            self.totals.completed,
            self.totals.failed,
            self.totals.rejected_488,
            self.totals.cancelled,
            q.mean_mos,
            lanes.join("; ")
        );
    }
}

/// The peer's last offer and its audio section, which shape our offers on `leg`.
fn leg_shape(leg: &Leg) -> Option<(String, usize)> {
    let section = leg.offer.as_ref().map_or(0, |o| o.section);
    leg.peer_sdp.clone().map(|t| (t, section))
}

/// The payload types `media` receives (voice, telephone-event, comfort noise): those that
/// may latch its leg's peer (`sip/media_io.rs`).
fn recv_pts(media: &NegotiatedMedia) -> Vec<u8> {
    let mut pts: Vec<u8> = media.receive.iter().map(|r| r.pt).collect();
    pts.extend(media.telephone_event_recv.iter().copied());
    pts.extend(media.cn);
    pts.push(13); // RFC 3389 comfort noise's static type
    pts
}

/// What a leg with `params` receives, for its XR block's E-model figures.
fn leg_quality(params: &MediaSessionParams) -> LegQuality {
    let codec = params
        .rx_codecs()
        .first()
        .map_or(params.tx.codec, |c| c.codec);
    LegQuality {
        codec,
        clock_rate_hz: codec.info().clock_rate_hz,
        ptime_ms: params.ptime.ms(),
    }
}

/// What the media I/O needs of a leg's offer/answer.
fn leg_media(peer: SocketAddr, media: &NegotiatedMedia, quality: LegQuality) -> LegMedia {
    LegMedia {
        peer,
        send: media.direction.sends(),
        pts: SendPts::of(media),
        clock_rate_hz: media.send.clock_rate_hz,
        event_pt: media.telephone_event_recv.first().copied(),
        recv_pts: recv_pts(media),
        quality,
    }
}

/// Where the peer of an SDP wants RTP: its `c=` address (else `fallback`) and `m=` port.
fn peer_addr(offer: Option<&MediaOffer>, fallback: IpAddr) -> Result<SocketAddr, BoxError> {
    let o = offer.ok_or("no SDP")?;
    let ip = match &o.connection_address {
        Some(a) => a.parse::<IpAddr>().unwrap_or(fallback),
        None => fallback,
    };
    Ok(SocketAddr::new(ip, o.port))
}

fn main() -> Result<(), BoxError> {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    init_logger(if args.verbose {
        log::LevelFilter::Debug
    } else {
        log::LevelFilter::Info
    });
    install_signals();
    let lanes = args.lanes.max(1);
    let mut jitter = media_core::buffer::JitterConfig::default();
    if let Some(ms) = args.jitter_min_ms {
        jitter.min_delay_ms = ms;
        jitter.initial_delay_ms = jitter.initial_delay_ms.max(ms);
    }
    if let Some(ms) = args.jitter_max_ms {
        jitter.max_delay_ms = ms.max(jitter.min_delay_ms);
        jitter.initial_delay_ms = jitter.initial_delay_ms.min(jitter.max_delay_ms);
    }
    let sessions_per_lane = (2 * args.max_calls).div_ceil(lanes).max(2) + 8;
    let engine = Arc::new(MediaEngine::new(EngineConfig {
        lanes,
        jitter,
        sessions_per_lane,
        packet_slots_per_lane: args
            .packet_slots_per_session
            .map(|n| n * sessions_per_lane + 256),
        cores: args.lane_cores.clone(),
        ..Default::default()
    })?);
    if args.fifo {
        if let Err(e) = set_fifo(true) {
            log::warn!("--fifo: {e}; lanes run at normal priority");
        }
    }
    let mut ios = Vec::new();
    for lane in 0..lanes {
        let (ingress, egress) = engine
            .take_rtp_handles(lane)
            .ok_or("transport handles already taken")?;
        let core = args
            .io_cores
            .get(lane % args.io_cores.len().max(1))
            .copied();
        ios.push(LaneIo::spawn(
            ingress,
            egress,
            core,
            Duration::from_secs(5),
            engine.config().jitter.max_delay_ms.min(65535) as u16,
        )?);
    }
    engine.start()?;
    if args.fifo {
        // Only the lanes and I/O threads stay real-time: SIP handling is not.
        let _ = set_fifo(false);
    }
    let sock = UdpSocket::bind(args.listen)?;
    sock.set_read_timeout(Some(Duration::from_millis(10)))?;
    let free_ports: Vec<u16> = (args.rtp_lo..args.rtp_hi)
        .step_by(2)
        .map(|p| p + (p & 1))
        .filter(|p| *p < args.rtp_hi)
        .rev()
        .collect();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        ^ (u64::from(std::process::id()) << 24)
        | 1;
    log::info!(
        "sip_gateway listening on udp:{}, media on {} ports {}-{}, codecs {:?}, routes {:?}",
        args.listen,
        args.media_ip,
        args.rtp_lo,
        args.rtp_hi,
        args.codecs,
        args.routes
    );
    let contact = format!("<sip:gw@{}>", args.listen);
    let deadline =
        (args.seconds > 0.0).then(|| Instant::now() + Duration::from_secs_f64(args.seconds));
    let stats_interval = args.stats_interval;
    let mut gw = Gateway {
        args,
        engine: engine.clone(),
        ios,
        sock,
        contact,
        calls: HashMap::new(),
        by_call_id: HashMap::new(),
        by_session: HashMap::new(),
        free_ports,
        sdp_ids: HashMap::new(),
        sdp_sessions: 0,
        next_call: 1,
        rng: seed,
        totals: Totals::default(),
        hold_changed: Vec::new(),
        started: Instant::now(),
    };
    let mut monitor = QualityMonitor::new(QualityThresholds {
        media_timeout_ms: gw.args.media_timeout_ms,
        ..Default::default()
    });
    // The STATS lines' interval reports (their own marks, whatever the poll's cadence).
    let mut reporter = QualityMonitor::default();
    let mut next_stats = Instant::now() + stats_interval;
    let mut next_monitor = Instant::now() + Duration::from_secs(1);
    let mut buf = vec![0u8; 65536];
    loop {
        // Drain every datagram waiting, then housekeeping.
        loop {
            match gw.sock.recv_from(&mut buf) {
                Ok((len, src)) => {
                    let data = buf[..len].to_vec();
                    gw.on_datagram(&data, src);
                    gw.sock.set_nonblocking(true)?;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                Err(e) => {
                    log::debug!("SIP recv: {e}");
                    break;
                }
            }
        }
        gw.sock.set_nonblocking(false)?;
        // What the peers' RTCP said (round trip: the MOS; loss of our streams: Opus
        // adaptation), from the media I/O threads, which do not take the engine's lock.
        for io in &mut gw.ios {
            io.take_feedback(|f| {
                if let Some(rtt) = f.rtt_ms {
                    let _ = engine.set_round_trip(f.session, rtt);
                }
                let _ = engine.set_peer_loss(f.session, f.peer_loss.0, f.peer_loss.1);
            });
        }
        while let Some(ev) = engine.poll_event() {
            gw.on_engine_event(ev);
        }
        gw.timers();
        let now = Instant::now();
        if now >= next_monitor {
            next_monitor = now + Duration::from_secs(1);
            let t = Instant::now();
            for n in std::mem::take(&mut gw.hold_changed) {
                if let Some(c) = gw.calls.get(&n) {
                    for id in [c.a.session, c.b.session].into_iter().flatten() {
                        monitor.restart_media_timeout(id);
                    }
                }
            }
            for ev in monitor.poll(&engine) {
                gw.on_quality_event(ev);
            }
            // Adaptation: jitter bounds, Opus FEC/bitrate from loss, Opus complexity on a
            // hot lane; each applied through the lane's command ring.
            for adj in monitor.suggest_quality_adjustments(&engine) {
                match engine.adjust_quality(adj) {
                    Ok(()) => log::info!("quality adjustment applied: {adj:?}"),
                    Err(e) => log::warn!("quality adjustment {adj:?} refused: {e}"),
                }
            }
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            if ms > 20.0 {
                log::info!("quality monitor poll took {ms:.1} ms");
            }
        }
        if now >= next_stats {
            next_stats = now + stats_interval;
            // What the calls are like now: the interval since the last line (the
            // engine's own report averages over each call's life).
            let span = format!("last {:.0} s", stats_interval.as_secs_f64());
            gw.stats_line(&reporter.report(&engine), &span);
        }
        if INTERRUPTED.load(Ordering::Relaxed) || deadline.is_some_and(|d| now >= d) {
            break;
        }
    }
    // What is left before shutdown ends live calls: a call that ended (BYE, CANCEL,
    // failure) must have given back its media sessions and RTP ports by now.
    let port_pairs = (gw.args.rtp_lo..gw.args.rtp_hi)
        .step_by(2)
        .map(|p| p + (p & 1))
        .filter(|p| *p < gw.args.rtp_hi)
        .count();
    println!(
        "GATEWAY STATE at exit: calls live {} | media sessions {} | RTP port pairs in use {}",
        gw.calls
            .values()
            .filter(|c| !matches!(c.state, State::Done))
            .count(),
        engine.session_ids().len(),
        port_pairs - gw.free_ports.len()
    );
    // Shut down: end live calls, then totals.
    let live: Vec<u64> = gw
        .calls
        .iter()
        .filter(|(_, c)| !matches!(c.state, State::Done))
        .map(|(n, _)| *n)
        .collect();
    for n in live {
        gw.hang_up(n, None);
    }
    let q = engine.quality_report();
    gw.stats_line(&q, "whole calls");
    let (overruns, drops): (u64, u64) = q
        .lanes
        .iter()
        .fold((0, 0), |(o, d), l| (o + l.deadline_overruns, d + l.drops));
    // What the lane drops were: packets for a session already destroyed (a phone still
    // sending after BYE: harmless) or real losses (no free packet slot, backlog).
    let mut why = [0u64; 4];
    let (mut skipped, mut max_tick_ns) = (0u64, 0u64);
    for lane in 0..gw.ios.len() {
        if let Some(st) = engine.lane_stats(lane) {
            skipped += st.ticks_skipped;
            max_tick_ns = max_tick_ns.max(st.max_tick_ns);
            why[0] += st.unknown_session + st.ingress_unknown;
            why[1] += st.ingress_full + st.ingress_rate_limited;
            why[2] += st.stage_backlog_drops;
            why[3] += st.malformed + st.ingress_too_large + st.internal_ring_full;
        }
    }
    println!(
        "GATEWAY TOTALS calls attempted {} completed {} failed {} rejected-488 {} cancelled {} re-INVITEs {} DTMF digits {} | quality alerts {} (on held legs {}) | calls ended by a media timeout {} | deadline overruns {} ticks skipped {} longest tick {:.1} ms drops {} (after session end {}, no packet slot or over the rate limit {}, stage backlog {}, other {}) | uptime {:.1} s",
        gw.totals.attempted,
        gw.totals.completed,
        gw.totals.failed,
        gw.totals.rejected_488,
        gw.totals.cancelled,
        gw.totals.reinvites,
        gw.totals.dtmf,
        gw.totals.alerts,
        gw.totals.alerts_on_hold,
        gw.totals.media_timeouts,
        overruns.max(gw.totals.overruns),
        skipped,
        max_tick_ns as f64 / 1e6,
        drops,
        why[0],
        why[1],
        why[2],
        why[3],
        gw.started.elapsed().as_secs_f64()
    );
    let _ = engine.flush(Duration::from_secs(1));
    for io in gw.ios.drain(..) {
        io.stop();
    }
    engine.stop()?;
    Ok(())
}
