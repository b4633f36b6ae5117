//! UDP media transport for the SIP gateway: one I/O thread per lane, with legs added and
//! removed while it runs (calls come and go), unlike `common/udp_media.rs`, whose leg set
//! is fixed when its thread starts. The per-packet logic is the same: received RTP ->
//! [`IngressHandle::push`], [`EgressHandle::pop`] -> `send_to` the leg's peer.
//!
//! RTCP (received on RTP port + 1, RFC 3550 §11, or multiplexed on the RTP port, RFC
//! 5761; sent from port + 1) goes both ways (`common/rtcp_leg.rs`): each leg sends an SR or
//! RR with a report block, SDES CNAME and an RFC 3611 VoIP Metrics block about every 5 s
//! (randomised 0.5–1.5×, RFC 3550 §6.3.1, so legs set up together do not report together)
//! and a BYE when it is removed. The counters come from the lane's ingress handle, not the
//! engine (whose lock the control plane holds while it builds a session: this thread must
//! not wait on it); the peer's round-trip time and its loss reports go back to the control
//! plane through a ring ([`LaneIo::take_feedback`]), which feeds them to the engine (the
//! MOS, Opus adaptation). RTCP is taken only from the peer's IP.
//!
//! Symmetric RTP (RFC 4961; a phone behind a NAT): an RTP packet of a payload type
//! negotiated for the leg, from the IP its SDP or its SIP signalling came from but another
//! address, makes that address the leg's peer (RTCP then goes to its port + 1, or to where
//! the peer's RTCP comes from) when the leg has not heard its peer yet, or has not for a
//! second (a NAT binding that changed during a hold); a packet from the very address the
//! SDP gave always does. The SDP of a phone behind a NAT names its private address, where
//! nothing it sends to us can be answered. Other packets are dropped (counted in
//! `foreign_src`), so a stranger spraying RTP at the port range can neither take over a
//! talking leg nor speak into a call. A re-INVITE that names a new address starts this
//! over; one that repeats the old one (a refresh, a hold) keeps the latched peer. A leg's
//! sockets are emptied when its call is bridged (what a peer sent before, or a previous
//! call's late packets on a reused port, neither plays nor latches).
//!
//! A leg whose SDP direction says we must not send (hold: `recvonly`/`inactive` answer)
//! has its egress packets discarded (RFC 3264 §5.1) and counted.
//!
//! Readiness comes from one epoll set per thread (level-triggered, 1 ms timeout so the lane's
//! egress ring is drained at least every millisecond): only sockets with datagrams are read,
//! so the cost grows with packets, not with legs. (A first version polled every socket in
//! turn: with 1,000 calls that was 4,000 mostly empty `recvfrom` calls per pass, and the
//! thread saturated a core.) Each ready socket gives one datagram per wake-up: epoll is
//! level-triggered, so a socket with more is reported again at once, and the `recvfrom`
//! that would only have returned `EAGAIN` (one per packet at 50 packets/s per leg, half of
//! all receive calls) is saved. `recvmmsg`/`sendmmsg` would not batch here (one
//! datagram per socket per 20 ms); a production transport would share sockets or use
//! io_uring.

use std::collections::{HashMap, VecDeque};
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::rtcp_leg::{PeerCounters, RtcpLeg};
use media_core::integration::rtcp;
use media_core::quality::emodel::CodecKind;
use media_core::quality::monitor::QualitySnapshot;
use media_core::quality::rtp_stats::LOSS_WINDOW;
use media_core::rtp::RtpPacket;
use media_core::{Codec, EgressHandle, IngressHandle, SessionId};

/// Counters of one leg, written by its I/O thread, read by the control plane.
#[derive(Debug, Default)]
pub struct LegCounters {
    /// RTP packets received and pushed into the lane.
    pub rtp_in: AtomicU64,
    /// RTP packets sent.
    pub rtp_out: AtomicU64,
    /// RTP packets received from an address other than the leg's peer (or, before it was
    /// heard, from neither its SDP's nor its signalling's IP, or of a payload type not
    /// negotiated): dropped.
    pub foreign_src: AtomicU64,
    /// Datagrams on the RTP port that were not RTP.
    pub not_rtp: AtomicU64,
    /// Packets the ingress handle refused (ring full, unknown session, too large).
    pub ingress_drops: AtomicU64,
    /// Egress packets discarded because the leg is on hold (we must not send).
    pub held_drops: AtomicU64,
    /// `send_to` failures.
    pub send_errors: AtomicU64,
    /// Packets sent with a payload type the leg's SDP did not negotiate for sending
    /// (neither its voice codec nor telephone-event): a codec switch that did not reach
    /// the encoder shows here.
    pub tx_bad_pt: AtomicU64,
    /// RTCP compound packets received and valid.
    pub rtcp_in: AtomicU64,
    /// RTCP datagrams the parser rejected.
    pub rtcp_bad: AtomicU64,
    /// RTCP compound packets sent.
    pub rtcp_out: AtomicU64,
    /// Times the leg's peer was latched on to the source of its RTP (symmetric RTP).
    pub latched: AtomicU64,
    /// RTCP datagrams from an address other than the peer's, dropped.
    pub rtcp_foreign: AtomicU64,
    /// What the peer's last report said of our stream.
    pub peer: PeerCounters,
}

impl LegCounters {
    /// Reads one counter.
    pub fn get(a: &AtomicU64) -> u64 {
        a.load(Ordering::Relaxed)
    }
}

/// The payload types a leg may send (RFC 3264: the answer fixes them): voice and, if
/// negotiated, telephone-event (RFC 4733).
#[derive(Debug, Clone, Copy)]
pub struct SendPts {
    /// The voice codec's payload type.
    pub voice: u8,
    /// telephone-event's payload type.
    pub event: Option<u8>,
    /// Comfort noise's payload type (RFC 3389), if negotiated: DTX sends SID frames on it.
    pub cn: Option<u8>,
}

impl SendPts {
    /// What `media` sends on.
    pub fn of(media: &media_core::codec::negotiation::NegotiatedMedia) -> SendPts {
        SendPts {
            voice: media.send.pt,
            event: media.telephone_event_send,
            cn: media.cn,
        }
    }

    fn allows(&self, pt: u8) -> bool {
        // RFC 3389 comfort noise (static PT 13, or the negotiated one) is allowed as well:
        // the engine may send it.
        pt == self.voice || Some(pt) == self.event || pt == 13 || Some(pt) == self.cn
    }
}

/// A leg to add: its media-core session, bound sockets and where to send.
pub struct NewLeg {
    /// The session this leg feeds and drains.
    pub session: SessionId,
    /// RTP socket (bound by the control plane, so a busy port is its error).
    pub rtp: UdpSocket,
    /// RTCP socket (RTP port + 1).
    pub rtcp: UdpSocket,
    /// What the offer/answer set up.
    pub media: LegMedia,
    /// The IP the leg's SIP signalling came from (or went to): a phone behind a NAT sends
    /// its RTP from it.
    pub signal_ip: Option<IpAddr>,
    /// Our RTCP CNAME.
    pub cname: String,
    /// Counters shared with the control plane.
    pub counters: Arc<LegCounters>,
}

/// What an offer/answer set up on a leg (when the call is bridged, and again after each
/// re-INVITE: [`LaneIo::update`]).
#[derive(Debug, Clone)]
pub struct LegMedia {
    /// The peer's RTP address from its SDP.
    pub peer: SocketAddr,
    /// Whether we send on this leg (SDP direction).
    pub send: bool,
    /// Payload types we may send on this leg.
    pub pts: SendPts,
    /// RTP clock rate of what we send, Hz (the sender report's RTP time).
    pub clock_rate_hz: u32,
    /// telephone-event's payload type received, if negotiated.
    pub event_pt: Option<u8>,
    /// Payload types negotiated for receiving (voice, telephone-event, comfort noise):
    /// only these latch the leg.
    pub recv_pts: Vec<u8>,
    /// What the leg receives, for the VoIP Metrics block's E-model figures.
    pub quality: LegQuality,
}

/// What a leg receives, as the E-model rates it.
#[derive(Debug, Clone, Copy)]
pub struct LegQuality {
    /// The codec received.
    pub codec: Codec,
    /// Its RTP clock rate, Hz.
    pub clock_rate_hz: u32,
    /// The call's ptime, ms.
    pub ptime_ms: u32,
}

/// What a peer's RTCP said, for the control plane to give the engine
/// ([`LaneIo::take_feedback`]).
#[derive(Debug, Clone, Copy)]
pub struct Feedback {
    /// The leg's session.
    pub session: SessionId,
    /// Round-trip time, ms (`MediaEngine::set_round_trip`), if the report had one.
    pub rtt_ms: Option<f64>,
    /// The peer's extended highest sequence number received and cumulative loss of our
    /// stream (`MediaEngine::set_peer_loss`).
    pub peer_loss: (u64, u64),
}

/// A leg on the I/O thread.
struct Leg {
    new: NewLeg,
    /// The peer's RTP address as its SDP gave it (`new.media.peer` is where we send: this,
    /// the address latched on).
    sdp_peer: SocketAddr,
    /// The last round-trip time the peer's reports gave, ms.
    rtt_ms: Option<f64>,
    rtcp_peer: SocketAddr,
    /// The peer's RTP has been heard (from the SDP's address or one latched on) since the
    /// SDP last named it.
    latched: bool,
    /// When the peer's RTP was last heard.
    last_heard: Instant,
    /// RTCP was received from the peer since the SDP last named it (its address is kept).
    rtcp_heard: bool,
    report: RtcpLeg,
}

impl Leg {
    fn new(new: NewLeg) -> Leg {
        let report = RtcpLeg::new(
            new.session,
            None,
            Some(new.media.pts.voice),
            new.media.clock_rate_hz,
            new.media.event_pt,
            new.cname.clone(),
        );
        Leg {
            sdp_peer: new.media.peer,
            rtt_ms: None,
            rtcp_peer: rtcp_port_of(new.media.peer),
            new,
            latched: false,
            last_heard: Instant::now(),
            rtcp_heard: false,
            report,
        }
    }
}

/// RFC 3550 §11: RTCP on the RTP port + 1.
fn rtcp_port_of(mut rtp: SocketAddr) -> SocketAddr {
    rtp.set_port(rtp.port().wrapping_add(1));
    rtp
}

enum Cmd {
    Add(Box<NewLeg>),
    Remove(SessionId),
    Update(SessionId, Box<LegMedia>),
}

/// The I/O thread of one lane.
pub struct LaneIo {
    tx: rtrb::Producer<Cmd>,
    feedback: rtrb::Consumer<Feedback>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl LaneIo {
    /// Starts the thread around a lane's transport handles.
    /// `core`: pin the thread there (like the lane's `EngineConfig::cores`), else unpinned.
    /// `report_interval`: how often each leg sends RTCP on average (RFC 3550 §6.2: 5 s);
    /// `jb_max_ms`: the engine's largest jitter-buffer delay (the VoIP Metrics block's).
    pub fn spawn(
        ingress: IngressHandle,
        egress: EgressHandle,
        core: Option<usize>,
        report_interval: Duration,
        jb_max_ms: u16,
    ) -> std::io::Result<LaneIo> {
        // The control plane talks to the thread through an SPSC ring, like it does to lanes.
        let (tx, rx) = rtrb::RingBuffer::new(CMD_CAPACITY);
        let (feedback_tx, feedback) = rtrb::RingBuffer::new(FEEDBACK_CAPACITY);
        let stop = Arc::new(AtomicBool::new(false));
        let mut io = Io {
            feedback: feedback_tx,
            jb_max_ms,
            rng: 0x9E37_79B9_7F4A_7C15 ^ ingress.lane() as u64,
            report_interval,
            reports: VecDeque::new(),
            ingress,
            egress,
            legs: HashMap::new(),
            epoll: Epoll::new()?,
            cmds: rx,
            stop: stop.clone(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("sip-media-io-{}", io.ingress.lane()))
            .spawn(move || {
                if let Some(c) = core {
                    if !core_affinity::set_for_current(core_affinity::CoreId { id: c }) {
                        log::warn!("media I/O: could not pin to core {c}");
                    }
                }
                io.run()
            })?;
        Ok(LaneIo {
            tx,
            feedback,
            stop,
            thread: Some(thread),
        })
    }

    fn command(&mut self, c: Cmd) {
        if self.tx.push(c).is_err() {
            log::error!("media I/O command ring full: command lost");
        }
    }

    /// Adds a leg (takes effect on the thread's next loop, within ~1 ms).
    pub fn add(&mut self, leg: NewLeg) {
        self.command(Cmd::Add(Box::new(leg)));
    }

    /// Removes a leg; its sockets close.
    pub fn remove(&mut self, session: SessionId) {
        self.command(Cmd::Remove(session));
    }

    /// Applies a re-INVITE's outcome to `session`'s leg (takes effect within ~1 ms).
    pub fn update(&mut self, session: SessionId, media: LegMedia) {
        self.command(Cmd::Update(session, Box::new(media)));
    }

    /// Hands `apply` what the peers' RTCP reports said since the last call (round trip,
    /// loss of our streams), for the engine.
    pub fn take_feedback(&mut self, mut apply: impl FnMut(Feedback)) {
        while let Ok(f) = self.feedback.pop() {
            apply(f);
        }
    }

    /// Stops the thread and waits for it.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                log::error!("media I/O thread panicked");
            }
        }
    }
}

/// An epoll instance (Linux), closed on drop.
struct Epoll(libc::c_int);

/// Marks an epoll token as the RTCP socket of the leg (bit 63: above a lane index < 2^15).
const RTCP_FLAG: u64 = 1 << 63;

impl Epoll {
    fn new() -> std::io::Result<Epoll> {
        // SAFETY: plain system call without pointers.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Epoll(fd))
    }

    /// Watches `sock` for input, reporting `token`. A socket leaves the set when it is
    /// closed (dropped), so there is no removal call.
    fn add(&self, sock: &UdpSocket, token: u64) -> std::io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: `ev` is a valid epoll_event for the duration of the call; both fds are
        // open (the socket is borrowed, the epoll fd owned by self).
        let r = unsafe { libc::epoll_ctl(self.0, libc::EPOLL_CTL_ADD, sock.as_raw_fd(), &mut ev) };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits up to `timeout_ms` and returns how many entries of `out` were filled.
    fn wait(&self, out: &mut [libc::epoll_event], timeout_ms: i32) -> usize {
        let max = out.len().min(i32::MAX as usize) as i32;
        // SAFETY: `out` is a writable buffer of `max` epoll_event entries.
        let n = unsafe { libc::epoll_wait(self.0, out.as_mut_ptr(), max, timeout_ms) };
        usize::try_from(n).unwrap_or(0)
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: the fd is owned by this value and closed exactly once.
        unsafe {
            libc::close(self.0);
        }
    }
}

struct Io {
    /// Peer reports for the control plane.
    feedback: rtrb::Producer<Feedback>,
    jb_max_ms: u16,
    /// xorshift state for the report intervals' randomisation.
    rng: u64,
    report_interval: Duration,
    /// Legs by when their next report is due (every leg has the same interval, so a leg
    /// added or reported goes to the back and the front is always the next due).
    reports: VecDeque<(Instant, SessionId)>,
    ingress: IngressHandle,
    egress: EgressHandle,
    legs: HashMap<SessionId, Leg>,
    epoll: Epoll,
    cmds: rtrb::Consumer<Cmd>,
    stop: Arc<AtomicBool>,
}

const MAX_DATAGRAM: usize = 2048;
/// Leg commands in flight to one I/O thread (it drains them every millisecond).
const CMD_CAPACITY: usize = 8192;
/// Peer reports in flight to the control plane (it drains them every 10 ms or sooner).
const FEEDBACK_CAPACITY: usize = 4096;
/// Reports one pass of the loop sends at most (the rest go on the next pass, 1 ms on).
const REPORTS_PER_PASS: usize = 32;
/// A leg whose peer has not been heard this long may latch on to another source
/// (see the module docs).
const RELATCH_AFTER: Duration = Duration::from_secs(1);

impl Io {
    fn run(&mut self) {
        // Like the lane threads: packets delayed here are jitter for every call of the lane.
        if let Err(e) =
            thread_priority::set_current_thread_priority(thread_priority::ThreadPriority::Max)
        {
            log::warn!("media I/O: could not raise thread priority ({e:?})");
        }
        let mut buf = [0u8; MAX_DATAGRAM];
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 512];
        let lane_bits = (self.ingress.lane() as u64) << 48;
        while !self.stop.load(Ordering::Relaxed) {
            self.commands();
            let n = self.epoll.wait(&mut events, 1);
            for ev in &events[..n] {
                let token = ev.u64;
                let id = SessionId::from_u64((token & !(RTCP_FLAG | (0xFFFF << 48))) | lane_bits);
                self.receive(id, token & RTCP_FLAG != 0, &mut buf);
            }
            self.send_egress();
            self.due_reports();
        }
        self.send_egress();
        let ids: Vec<SessionId> = self.legs.keys().copied().collect();
        for id in ids {
            self.send_report(id, true);
        }
    }

    /// The next report interval: the configured one times a uniform 0.5–1.5 (RFC 3550
    /// §6.3.1), so legs set up together spread out.
    fn next_interval(&mut self) -> Duration {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let f = 0.5 + (self.rng >> 11) as f64 / (1u64 << 53) as f64;
        self.report_interval.mul_f64(f)
    }

    /// Sends the reports that are due, at most [`REPORTS_PER_PASS`].
    fn due_reports(&mut self) {
        let now = Instant::now();
        for _ in 0..REPORTS_PER_PASS {
            let Some(&(due, id)) = self.reports.front() else {
                break;
            };
            if due > now {
                break;
            }
            self.reports.pop_front();
            if self.legs.contains_key(&id) {
                self.send_report(id, false);
                self.schedule(now, id);
            }
        }
    }

    /// Queues `id`'s next report one randomised interval after `now`, in due order
    /// (intervals differ, so not always at the back).
    fn schedule(&mut self, now: Instant, id: SessionId) {
        let due = now + self.next_interval();
        let at = self.reports.partition_point(|&(d, _)| d <= due);
        self.reports.insert(at, (due, id));
    }

    fn send_report(&mut self, id: SessionId, bye: bool) {
        let Some(leg) = self.legs.get_mut(&id) else {
            return;
        };
        // From the lane's counters through the ingress handle: no engine lock here.
        let stats = self.ingress.session_stats(id);
        let voip = stats.as_ref().map(|st| {
            let q = leg.new.media.quality;
            let snap = QualitySnapshot::from_stats(
                st,
                CodecKind::of(q.codec),
                q.clock_rate_hz,
                q.ptime_ms,
                leg.rtt_ms,
            );
            let snap = match self.ingress.loss_pattern(id) {
                Some(p) => snap.with_loss_pattern(
                    &p.snapshot(st.rx_expected, u64::from(LOSS_WINDOW)),
                    q.ptime_ms,
                ),
                None => snap,
            };
            snap.voip_metrics(self.jb_max_ms)
        });
        let mut out = [0u8; 512];
        let Some(n) = leg.report.write_report(stats.as_ref(), voip, bye, &mut out) else {
            log::warn!("media I/O: RTCP report did not fit");
            return;
        };
        if leg.new.rtcp.send_to(&out[..n], leg.rtcp_peer).is_ok() {
            leg.new.counters.rtcp_out.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn on_rtcp(&mut self, id: SessionId, d: &[u8], from: SocketAddr) {
        let Some(leg) = self.legs.get_mut(&id) else {
            return;
        };
        let c = &leg.new.counters;
        // Only the peer reports on the call (a spoofed report would steer Opus and the
        // MOS): from its RTP's IP once heard, else from its SDP's or signalling's.
        let known = if leg.latched {
            from.ip() == leg.new.media.peer.ip()
        } else {
            from.ip() == leg.sdp_peer.ip() || Some(from.ip()) == leg.new.signal_ip
        };
        if !known {
            c.rtcp_foreign.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let got = match leg.report.on_rtcp(d) {
            Ok(got) => got,
            Err(e) => {
                c.rtcp_bad.fetch_add(1, Ordering::Relaxed);
                log::debug!("RTCP from {from}: {e}");
                return;
            }
        };
        c.rtcp_in.fetch_add(1, Ordering::Relaxed);
        if !leg.rtcp_heard {
            // Its RTCP's own source (a NAT maps it apart from the RTP's): reports go back
            // there.
            leg.rtcp_heard = true;
            leg.rtcp_peer = from;
        }
        if let Some(b) = got.report {
            c.peer.record(&b);
            leg.rtt_ms = b.rtt_ms.or(leg.rtt_ms);
            let f = Feedback {
                session: id,
                rtt_ms: b.rtt_ms,
                peer_loss: (
                    u64::from(b.highest_seq_ext),
                    b.cumulative_lost.max(0) as u64,
                ),
            };
            // A full ring (the control plane stalled) loses a report; the next one follows.
            let _ = self.feedback.push(f);
        }
    }

    fn commands(&mut self) {
        while let Ok(c) = self.cmds.pop() {
            match c {
                Cmd::Add(leg) => {
                    if leg.rtp.set_nonblocking(true).is_err()
                        || leg.rtcp.set_nonblocking(true).is_err()
                    {
                        log::warn!("media I/O: cannot make sockets non-blocking");
                        continue;
                    }
                    // What waited on the sockets (the peer's media before the call was
                    // bridged, a previous call's late packets) is not this call's.
                    let mut scratch = [0u8; MAX_DATAGRAM];
                    for sock in [&leg.rtp, &leg.rtcp] {
                        for _ in 0..10_000 {
                            if sock.recv_from(&mut scratch).is_err() {
                                break;
                            }
                        }
                    }
                    let id = leg.session;
                    let token = id.to_u64() & !(0xFFFF << 48);
                    if let Err(e) = self
                        .epoll
                        .add(&leg.rtp, token)
                        .and_then(|()| self.epoll.add(&leg.rtcp, token | RTCP_FLAG))
                    {
                        log::warn!("media I/O: epoll: {e}");
                        continue;
                    }
                    self.legs.insert(id, Leg::new(*leg));
                    self.schedule(Instant::now(), id);
                }
                Cmd::Remove(id) => {
                    // RFC 3550 §6.6: a BYE, then dropping the sockets closes them, which
                    // takes them out of the set.
                    self.send_report(id, true);
                    self.legs.remove(&id);
                }
                Cmd::Update(session, u) => {
                    if let Some(l) = self.legs.get_mut(&session) {
                        // Where we send: a new address from the SDP (latching starts over
                        // from it), or, when it repeats the old one (a refresh, a hold),
                        // the address latched on.
                        let send_to = if l.sdp_peer != u.peer {
                            l.sdp_peer = u.peer;
                            l.rtcp_peer = rtcp_port_of(u.peer);
                            l.latched = false;
                            l.rtcp_heard = false;
                            u.peer
                        } else {
                            l.new.media.peer
                        };
                        l.new.media = *u;
                        l.new.media.peer = send_to;
                        let m = &l.new.media;
                        l.report
                            .renegotiated(m.pts.voice, m.clock_rate_hz, m.event_pt);
                    }
                }
            }
        }
    }

    fn receive(&mut self, id: SessionId, rtcp: bool, buf: &mut [u8]) {
        let Some(leg) = self.legs.get_mut(&id) else {
            return;
        };
        // One datagram per readiness report (see the module docs): epoll reports the
        // socket again while more wait.
        let sock = if rtcp { &leg.new.rtcp } else { &leg.new.rtp };
        let (n, from) = match sock.recv_from(buf) {
            Ok(r) => r,
            Err(e) => {
                // EAGAIN (another reader won) or ICMP port unreachable: not fatal.
                if e.kind() != ErrorKind::WouldBlock {
                    log::debug!("RTP/RTCP recv: {e}");
                }
                return;
            }
        };
        let d = &buf[..n];
        if rtcp || rtcp::is_rtcp(d) {
            // RTCP on its port, or multiplexed on the RTP port (RFC 5761 §4).
            self.on_rtcp(id, d, from);
            return;
        }
        let Ok(pkt) = RtpPacket::parse(d) else {
            leg.new.counters.not_rtp.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let now = Instant::now();
        if from != leg.new.media.peer {
            // Symmetric RTP (see the module docs): the SDP's own address, or, while the
            // peer is unheard, its RTP from its SDP's or its signalling's IP with a
            // negotiated payload type.
            let unheard = !leg.latched || now.duration_since(leg.last_heard) >= RELATCH_AFTER;
            let latch = from == leg.sdp_peer
                || unheard
                    && (from.ip() == leg.sdp_peer.ip() || Some(from.ip()) == leg.new.signal_ip)
                    && leg.new.media.recv_pts.contains(&pkt.payload_type());
            if !latch {
                leg.new.counters.foreign_src.fetch_add(1, Ordering::Relaxed);
                return;
            }
            log::info!(
                "media: leg {id} latched on {from} (SDP said {})",
                leg.sdp_peer
            );
            leg.new.media.peer = from;
            if leg.latched {
                // A source switch (a NAT binding renewed): its RTCP moved with it.
                leg.rtcp_heard = false;
            }
            if !leg.rtcp_heard {
                leg.rtcp_peer = rtcp_port_of(from);
            }
            leg.new.counters.latched.fetch_add(1, Ordering::Relaxed);
        }
        leg.latched = true;
        leg.last_heard = now;
        leg.report.on_rtp_in(&pkt);
        match self.ingress.push(id, d) {
            Ok(()) => leg.new.counters.rtp_in.fetch_add(1, Ordering::Relaxed),
            Err(_) => leg
                .new
                .counters
                .ingress_drops
                .fetch_add(1, Ordering::Relaxed),
        };
    }

    fn send_egress(&mut self) -> bool {
        let mut any = false;
        while let Some(p) = self.egress.pop() {
            any = true;
            let Some(leg) = self.legs.get_mut(&p.session()) else {
                continue;
            };
            let c = &leg.new.counters;
            if !leg.new.media.send {
                c.held_drops.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let (sock, peer, pts) = (&leg.new.rtp, leg.new.media.peer, leg.new.media.pts);
            match p.with_bytes(|b| {
                // RFC 3550 §5.1: PT is the low 7 bits of the second byte.
                if b.len() > 1 && !pts.allows(b[1] & 0x7f) {
                    c.tx_bad_pt.fetch_add(1, Ordering::Relaxed);
                }
                sock.send_to(b, peer)
            }) {
                Ok(n) => {
                    c.rtp_out.fetch_add(1, Ordering::Relaxed);
                    leg.report.on_rtp_out(&p.header(), n);
                }
                Err(_) => {
                    c.send_errors.fetch_add(1, Ordering::Relaxed);
                }
            };
        }
        any
    }
}
