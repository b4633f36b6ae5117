//! Surfaces for the layers around media-core.
//!
//! rtp-core drives a lane through two handles: an [`IngressHandle`] to push received RTP
//! packets in and an [`EgressHandle`] to pop packets to send. Both are non-blocking, both
//! are single-threaded (`Send`, not `Clone`): one transport thread per lane owns them.
//! An endpoint application (IVR, recorder) reads and writes the audio of sessions it
//! attached through the lane's [`AudioHandle`] (see [`audio`]).

use crate::rtp::RtpHeader;
pub mod audio;
pub mod pipeline;
pub mod policer;
pub mod rtcp;
pub mod session_core;

use crate::runtime::lane::{EgressParts, IngressParts};
use crate::runtime::msg::{Arrival, EgressSlot};
use crate::runtime::slab::Token;
use crate::types::SessionId;
use crate::Error;
pub use audio::{AudioHandle, ReceivedAudio};
use policer::{IngressLimit, Policer};

/// Pushes received RTP packets into one lane. Owned by one transport thread.
pub struct IngressHandle {
    parts: IngressParts,
    policer: Policer,
    /// The lane runs on the virtual clock: [`IngressHandle::push`] limits rates on the
    /// lane's simulated time, not the wall clock.
    virtual_clock: bool,
    /// Pushes that took a slot, for refreshing the lane's free-slot gauge every 16.
    taken: u32,
    lane: u16,
}

impl IngressHandle {
    /// `sessions`: the lane's session slots; `limit`: the per-session rate limit
    /// (`None`: none). Control plane: allocates the limit's state.
    pub(crate) fn new(
        parts: IngressParts,
        lane: u16,
        sessions: usize,
        limit: Option<IngressLimit>,
        virtual_clock: bool,
    ) -> Self {
        let handle = IngressHandle {
            parts,
            policer: Policer::new(sessions, limit),
            virtual_clock,
            taken: 0,
            lane,
        };
        handle.publish_free_slots();
        handle
    }

    /// The lane this handle feeds. Push only packets of sessions whose
    /// [`SessionId::lane`] is this lane; others are counted as unknown-session drops.
    pub fn lane(&self) -> usize {
        self.lane as usize
    }

    /// The counters of session `id` of this lane, as [`crate::MediaEngine::session_stats`]
    /// reads them, but without the engine's lock: the transport builds its RTCP report
    /// blocks from them on its own thread, which must not wait while the control plane
    /// creates a session. `None` if `id` is not live on this lane (destroyed, never
    /// created, another lane's), and, where the engine gives zeros, before the lane has
    /// installed a session just created. Lock-free, allocation-free.
    pub fn session_stats(&self, id: SessionId) -> Option<crate::runtime::stats::SessionStats> {
        self.live_shared(id)?
            .sessions
            .get(id.slot as usize)?
            .snapshot(id.generation)
    }

    /// The receive loss pattern of session `id` of this lane (see
    /// [`crate::quality::monitor::QualitySnapshot::loss_pattern`]), without the engine's
    /// lock; `None` if `id` is not live on this lane. Lock-free; it may retry while the
    /// lane stores the pattern (a few dozen nanoseconds, at most once a packet).
    pub fn loss_pattern(&self, id: SessionId) -> Option<crate::quality::xr::LossPattern> {
        self.live_shared(id)?.loss_pattern(id.slot, id.generation)
    }

    /// The lane's shared state if `id` is a session live on it.
    fn live_shared(&self, id: SessionId) -> Option<&crate::runtime::lane::Shared> {
        let shared = &*self.parts.shared;
        (id.lane() == self.lane() && shared.live.is_live(id.slot, id.generation)).then_some(shared)
    }

    /// Largest packet (RTP header included) a slot holds.
    pub fn max_packet_bytes(&self) -> usize {
        self.parts.slab.with_capacity_hint()
    }

    /// Copies one received RTP packet for `session` into a preallocated slot and queues it.
    /// Never blocks and never allocates.
    ///
    /// Errors: [`Error::PayloadTooLarge`] if the packet exceeds the slot size,
    /// [`Error::UnknownSession`] if `session` is not live on this lane (destroyed, never
    /// created, another lane's id), [`Error::RateLimited`] if the session sends faster
    /// than the engine's [`IngressLimit`] allows (see [`policer`]), [`Error::RingFull`] if
    /// no slot is free (the lane is behind or the buffers are full). Each is also counted in the lane's
    /// counters; the packet is dropped.
    ///
    /// The packet's arrival time is the monotonic clock's now; on an engine on the virtual
    /// clock it is the end of the tick the lane runs next (its simulated time when it takes
    /// the packet in, and never 0, which means unknown).
    pub fn push(&mut self, session: SessionId, packet: &[u8]) -> Result<(), Error> {
        let now = if self.virtual_clock {
            // The lane's simulated time: packets pushed between two virtual ticks arrive
            // together, however fast the simulation runs. The wall clock would make the
            // jitter estimate read the simulation's speed (a clean stream stepped faster
            // than real time showed ~20 ms of interarrival jitter).
            let tick = self.parts.shared.counters.ticks.get() + 1;
            tick.saturating_mul(crate::runtime::clock::TICK.as_nanos() as u64)
        } else {
            crate::runtime::clock::monotonic_ns()
        };
        self.push_inner(session, packet, now, now)
    }

    /// Like [`IngressHandle::push`], with the packet's arrival time in nanoseconds on any
    /// monotonic timebase (the jitter estimate uses only differences; 0 means unknown).
    /// Simulations on the virtual clock pass their simulated arrival times here.
    ///
    /// The per-session rate limit runs on these arrival times.
    pub fn push_at(
        &mut self,
        session: SessionId,
        packet: &[u8],
        arrival_ns: u64,
    ) -> Result<(), Error> {
        self.push_inner(session, packet, arrival_ns, arrival_ns)
    }

    /// `arrival_ns` goes to the jitter estimate, `police_ns` to the rate limit.
    #[inline]
    fn push_inner(
        &mut self,
        session: SessionId,
        packet: &[u8],
        arrival_ns: u64,
        police_ns: u64,
    ) -> Result<(), Error> {
        let p = &mut self.parts;
        let limit = p.slab.with_capacity_hint();
        if packet.len() > limit {
            p.shared.counters.ingress_too_large.inc();
            return Err(Error::PayloadTooLarge {
                limit,
                actual: packet.len(),
            });
        }
        if session.lane() != usize::from(self.lane)
            || !p.shared.live.is_live(session.slot(), session.generation())
        {
            p.shared.counters.ingress_unknown.inc();
            return Err(Error::UnknownSession(session));
        }
        if !self.policer.admit(session, police_ns) {
            p.shared.counters.ingress_rate_limited.inc();
            return Err(Error::RateLimited);
        }
        let tok = match p.free_from_decode.pop() {
            Ok(t) => Ok(t),
            Err(_) => p.free_from_jitter.pop(),
        };
        let Ok(mut tok) = tok else {
            p.shared.counters.ingress_full.inc();
            p.shared.counters.packet_slots_free.set(0);
            return Err(Error::RingFull { ring: "ingress" });
        };
        p.slab.with_mut(&mut tok, |s| {
            s.session = session.to_u64();
            s.arrival_ns = arrival_ns;
            s.len = packet.len();
            s.bytes[..packet.len()].copy_from_slice(packet);
        });
        // Cannot fail: the ingress ring holds as many entries as there are slots.
        let arrival = Arrival {
            token: tok,
            slot: session.slot(),
        };
        if p.ingress.push(arrival).is_err() {
            p.shared.counters.internal_ring_full.inc_shared();
        }
        self.taken = self.taken.wrapping_add(1);
        // Every 16 pushes; every push while under a quarter of the slots are free.
        if self.taken.is_multiple_of(16)
            || p.shared.counters.packet_slots_free.get() < (p.slab.capacity() / 4) as u64
        {
            self.publish_free_slots();
        }
        Ok(())
    }

    /// Tells the lane how many packet slots are free (its jitter buffers hold back when
    /// few are: see `AdaptiveBuffer::set_cap`). Two atomic loads and a store.
    #[inline]
    fn publish_free_slots(&self) {
        self.parts
            .shared
            .counters
            .packet_slots_free
            .set(self.free_slots() as u64);
    }

    /// Packets of `session` refused by the per-session rate limit so far (0 once its slot
    /// serves another session). The lane's total is `LaneStats::ingress_rate_limited`.
    pub fn rate_limited(&self, session: SessionId) -> u32 {
        self.policer.refused(session)
    }

    /// Free packet slots right now.
    pub fn free_slots(&self) -> usize {
        self.parts.free_from_decode.slots() + self.parts.free_from_jitter.slots()
    }
}

/// Pops RTP packets to send from one lane. Owned by one transport thread.
pub struct EgressHandle {
    parts: EgressParts,
}

impl EgressHandle {
    pub(crate) fn new(parts: EgressParts) -> Self {
        EgressHandle { parts }
    }

    /// Takes the next packet to send, if any. The slot returns to the lane when the
    /// returned [`OutboundPacket`] is dropped. Never blocks.
    pub fn pop(&mut self) -> Option<OutboundPacket<'_>> {
        let token = self.parts.egress.pop().ok()?;
        Some(OutboundPacket {
            token: Some(token),
            handle: self,
        })
    }

    /// Packets waiting to be popped.
    pub fn pending(&self) -> usize {
        self.parts.egress.slots()
    }

    /// Free egress slots (available to the lane's encoder): those in the free ring, and
    /// the one the encoder may keep unused for its next packet.
    pub fn free_slots(&self) -> usize {
        // Items in the free ring = its capacity (the slot count) minus its free space.
        self.parts.slab.capacity() - self.parts.free.slots()
            + self.parts.shared.counters.egress_spare.get() as usize
    }

    /// Total egress slots.
    pub fn capacity(&self) -> usize {
        self.parts.slab.capacity()
    }
}

/// rtp-core's receive side as a trait, for transports that hand packets to a handler
/// object rather than hold ring handles: media-core's [`IngressHandle`] (and
/// [`RtpPacketAdapter`]) implement it. Same contract as [`IngressHandle::push`]: never
/// blocks, never allocates, a full ring is a typed, counted refusal.
pub trait MediaPacketHandler {
    /// Hands one received RTP packet of `session` to media-core.
    fn handle_rtp_packet(&mut self, session: SessionId, packet: &[u8]) -> Result<(), Error>;
}

impl MediaPacketHandler for IngressHandle {
    fn handle_rtp_packet(&mut self, session: SessionId, packet: &[u8]) -> Result<(), Error> {
        self.push(session, packet)
    }
}

/// rtp-core's send side as a trait: implemented by the transport, called by
/// [`EgressHandle::drain_to`] for each packet media-core produced.
pub trait RtpPacketSink {
    /// Sends one RTP packet (header and payload) of `session` to its peer. The bytes are
    /// borrowed from a preallocated slot that returns to the lane after the call.
    fn send_rtp_packet(&mut self, session: SessionId, packet: &[u8]);
}

impl EgressHandle {
    /// Pops every packet waiting (at most `limit`) and hands each to `sink`; returns how
    /// many. Never blocks, never allocates.
    pub fn drain_to(&mut self, sink: &mut impl RtpPacketSink, limit: usize) -> usize {
        let mut n = 0;
        while n < limit {
            let Some(p) = self.pop() else { break };
            let session = p.session();
            p.with_bytes(|b| sink.send_rtp_packet(session, b));
            n += 1;
        }
        n
    }
}

/// One lane's two ring handles behind the trait interface: packets in through
/// [`MediaPacketHandler`], packets out to an [`RtpPacketSink`] with [`poll`](Self::poll).
pub struct RtpPacketAdapter {
    ingress: IngressHandle,
    egress: EgressHandle,
}

impl RtpPacketAdapter {
    /// Wraps a lane's handles (from [`MediaEngine::take_rtp_handles`](crate::MediaEngine::take_rtp_handles)).
    pub fn new(ingress: IngressHandle, egress: EgressHandle) -> Self {
        RtpPacketAdapter { ingress, egress }
    }

    /// The lane served.
    pub fn lane(&self) -> usize {
        self.ingress.lane()
    }

    /// Sends everything the lane produced to `sink` (at most `limit` packets); returns how
    /// many were sent.
    pub fn poll(&mut self, sink: &mut impl RtpPacketSink, limit: usize) -> usize {
        self.egress.drain_to(sink, limit)
    }

    /// The handles back.
    pub fn into_handles(self) -> (IngressHandle, EgressHandle) {
        (self.ingress, self.egress)
    }
}

impl MediaPacketHandler for RtpPacketAdapter {
    fn handle_rtp_packet(&mut self, session: SessionId, packet: &[u8]) -> Result<(), Error> {
        self.ingress.push(session, packet)
    }
}

/// A packet ready to send; borrows its preallocated slot until dropped.
pub struct OutboundPacket<'a> {
    token: Option<Token>,
    handle: &'a mut EgressHandle,
}

impl OutboundPacket<'_> {
    fn with<R>(&self, f: impl FnOnce(&EgressSlot) -> R) -> R {
        // Invariant: the token is only taken in `drop`.
        let t = self.token.as_ref().expect("token present until drop");
        self.handle.parts.slab.with(t, f)
    }

    /// The session that sends it.
    pub fn session(&self) -> SessionId {
        self.with(|s| s.session)
    }

    /// The RTP header fields media-core chose (payload type, sequence, timestamp, SSRC, marker).
    pub fn header(&self) -> RtpHeader {
        self.with(|s| s.header)
    }

    /// The RTP timestamp, on the *receiving* leg's stream, of the audio this packet carries
    /// (the bridged peer's timestamp for a gateway call). Lets a transport or test measure
    /// the engine's latency per packet; not sent on the wire.
    pub fn source_timestamp(&self) -> u32 {
        self.with(|s| s.src_ts)
    }

    /// When the audio this packet carries left the jitter buffer: the start of the lane
    /// tick that played it, on the lane's clock (the monotonic clock of
    /// [`monotonic_ns`](crate::runtime::clock::monotonic_ns) in real time, so comparable with
    /// [`IngressHandle::push`] arrival times; tick × 10 ms on the virtual clock); 0 for
    /// packets carrying no received audio (RFC 4733 events). `now - played_ns()` is the
    /// latency the engine adds after its jitter buffer (decode, processing, encode, stage
    /// hand-offs, the egress ring); not sent on the wire.
    pub fn played_ns(&self) -> u64 {
        self.with(|s| s.played_ns)
    }

    /// Copies the whole RTP packet (header and payload) into `out`, returning its length,
    /// or `None` if `out` is too small.
    pub fn copy_to(&self, out: &mut [u8]) -> Option<usize> {
        self.with(|s| {
            let dst = out.get_mut(..s.len)?;
            dst.copy_from_slice(&s.bytes[..s.len]);
            Some(s.len)
        })
    }

    /// Runs `f` over the packet bytes without copying (e.g. to hand them to `send_to`).
    pub fn with_bytes<R>(&self, f: impl FnOnce(&[u8]) -> R) -> R {
        self.with(|s| f(&s.bytes[..s.len]))
    }

    /// Packet length in bytes.
    pub fn len(&self) -> usize {
        self.with(|s| s.len)
    }

    /// True for a packet with no bytes (never produced by media-core).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for OutboundPacket<'_> {
    fn drop(&mut self) {
        if let Some(t) = self.token.take() {
            // Cannot fail: the free ring holds as many entries as there are slots.
            let _ = self.handle.parts.free.push(t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::ClockMode;
    use crate::{CodecSpec, DialogId, EngineConfig, MediaEngine, MediaSessionParams, Ptime};

    struct Collect(Vec<(SessionId, Vec<u8>)>);

    impl RtpPacketSink for Collect {
        fn send_rtp_packet(&mut self, session: SessionId, packet: &[u8]) {
            self.0.push((session, packet.to_vec()));
        }
    }

    #[test]
    fn the_trait_adapter_carries_packets_in_and_out_like_the_handles() {
        let e = MediaEngine::new(EngineConfig {
            clock: ClockMode::Virtual,
            sessions_per_lane: 4,
            ..Default::default()
        })
        .unwrap();
        e.start().unwrap();
        let (a, b) = e
            .create_call(
                (
                    DialogId(1),
                    MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_20),
                ),
                (
                    DialogId(2),
                    MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_20),
                ),
            )
            .unwrap();
        let (ing, eg) = e.take_rtp_handles(a.lane()).unwrap();
        let mut io = RtpPacketAdapter::new(ing, eg);
        let mut sink = Collect(Vec::new());
        let mut pkt = [0u8; 12 + 160];
        for k in 0..20u16 {
            let h = RtpHeader {
                marker: k == 0,
                payload_type: 0,
                sequence: k,
                timestamp: 160 * u32::from(k),
                ssrc: 7,
            };
            crate::rtp::write_header(&h, &mut pkt).unwrap();
            pkt[12..].fill(0x55 ^ k as u8);
            io.handle_rtp_packet(a.id, &pkt).unwrap();
            e.step(2).unwrap();
            io.poll(&mut sink, usize::MAX);
        }
        e.step(20).unwrap();
        io.poll(&mut sink, usize::MAX);
        // Leg B sends what leg A received (relayed PCMU), once the buffer starts playing.
        assert!(sink.0.len() >= 10, "{} packets out", sink.0.len());
        assert!(sink.0.iter().all(|(s, p)| *s == b.id && p.len() == 172));
        assert_eq!(
            io.handle_rtp_packet(a.id, &[0u8; 4000]),
            Err(Error::PayloadTooLarge {
                limit: io.ingress.max_packet_bytes(),
                actual: 4000
            })
        );
        e.stop().unwrap();
    }
}
