//! UDP media transport for the SIP gateway: one I/O thread per lane, with legs added and
//! removed while it runs (calls come and go), unlike `common/udp_media.rs`, whose leg set
//! is fixed when its thread starts. The per-packet logic is the same: received RTP ->
//! [`IngressHandle::push`], [`EgressHandle::pop`] -> `send_to` the leg's peer.
//!
//! RTCP (RTP port + 1, RFC 3550 §11) is received and counted so peers get no ICMP errors,
//! but not interpreted here: call quality comes from media-core's own receive statistics.
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

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use media_core::rtp::RtpPacket;
use media_core::{EgressHandle, IngressHandle, SessionId};

/// Counters of one leg, written by its I/O thread, read by the control plane.
#[derive(Debug, Default)]
pub struct LegCounters {
    /// RTP packets received and pushed into the lane.
    pub rtp_in: AtomicU64,
    /// RTP packets sent.
    pub rtp_out: AtomicU64,
    /// RTP packets received from an address other than the leg's peer (still pushed).
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
    /// RTCP datagrams received.
    pub rtcp_in: AtomicU64,
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
    /// The peer's RTP address from its SDP.
    pub peer: SocketAddr,
    /// Whether we send on this leg (SDP direction).
    pub send: bool,
    /// Payload types we may send on this leg.
    pub pts: SendPts,
    /// Counters shared with the control plane.
    pub counters: Arc<LegCounters>,
}

enum Cmd {
    Add(Box<NewLeg>),
    Remove(SessionId),
    Update {
        session: SessionId,
        peer: SocketAddr,
        send: bool,
        pts: SendPts,
    },
}

/// The I/O thread of one lane.
pub struct LaneIo {
    tx: rtrb::Producer<Cmd>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl LaneIo {
    /// Starts the thread around a lane's transport handles.
    /// `core`: pin the thread there (like the lane's `EngineConfig::cores`), else unpinned.
    pub fn spawn(
        ingress: IngressHandle,
        egress: EgressHandle,
        core: Option<usize>,
    ) -> std::io::Result<LaneIo> {
        // The control plane talks to the thread through an SPSC ring, like it does to lanes.
        let (tx, rx) = rtrb::RingBuffer::new(CMD_CAPACITY);
        let stop = Arc::new(AtomicBool::new(false));
        let mut io = Io {
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

    /// Changes a leg's peer, whether we send and on which payload types (re-INVITE).
    pub fn update(&mut self, session: SessionId, peer: SocketAddr, send: bool, pts: SendPts) {
        self.command(Cmd::Update {
            session,
            peer,
            send,
            pts,
        });
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
    ingress: IngressHandle,
    egress: EgressHandle,
    legs: HashMap<SessionId, NewLeg>,
    epoll: Epoll,
    cmds: rtrb::Consumer<Cmd>,
    stop: Arc<AtomicBool>,
}

const MAX_DATAGRAM: usize = 2048;
/// Leg commands in flight to one I/O thread (it drains them every millisecond).
const CMD_CAPACITY: usize = 8192;

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
        }
        self.send_egress();
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
                    self.legs.insert(id, *leg);
                }
                Cmd::Remove(id) => {
                    // Dropping the sockets closes them, which takes them out of the set.
                    self.legs.remove(&id);
                }
                Cmd::Update {
                    session,
                    peer,
                    send,
                    pts,
                } => {
                    if let Some(l) = self.legs.get_mut(&session) {
                        l.peer = peer;
                        l.send = send;
                        l.pts = pts;
                    }
                }
            }
        }
    }

    fn receive(&mut self, id: SessionId, rtcp: bool, buf: &mut [u8]) {
        let Some(leg) = self.legs.get(&id) else {
            return;
        };
        // One datagram per readiness report (see the module docs): epoll reports the
        // socket again while more wait.
        if rtcp {
            if leg.rtcp.recv_from(buf).is_ok() {
                leg.counters.rtcp_in.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        let (n, from) = match leg.rtp.recv_from(buf) {
            Ok(r) => r,
            Err(e) => {
                // EAGAIN (another reader won) or ICMP port unreachable: not fatal.
                if e.kind() != ErrorKind::WouldBlock {
                    log::debug!("RTP recv: {e}");
                }
                return;
            }
        };
        let d = &buf[..n];
        if RtpPacket::parse(d).is_err() {
            leg.counters.not_rtp.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if from != leg.peer {
            leg.counters.foreign_src.fetch_add(1, Ordering::Relaxed);
        }
        match self.ingress.push(id, d) {
            Ok(()) => leg.counters.rtp_in.fetch_add(1, Ordering::Relaxed),
            Err(_) => leg.counters.ingress_drops.fetch_add(1, Ordering::Relaxed),
        };
    }

    fn send_egress(&mut self) -> bool {
        let mut any = false;
        while let Some(p) = self.egress.pop() {
            any = true;
            let Some(leg) = self.legs.get(&p.session()) else {
                continue;
            };
            if !leg.send {
                leg.counters.held_drops.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let sock = &leg.rtp;
            match p.with_bytes(|b| {
                // RFC 3550 §5.1: PT is the low 7 bits of the second byte.
                if b.len() > 1 && !leg.pts.allows(b[1] & 0x7f) {
                    leg.counters.tx_bad_pt.fetch_add(1, Ordering::Relaxed);
                }
                sock.send_to(b, leg.peer)
            }) {
                Ok(_) => leg.counters.rtp_out.fetch_add(1, Ordering::Relaxed),
                Err(_) => leg.counters.send_errors.fetch_add(1, Ordering::Relaxed),
            };
        }
        any
    }
}
