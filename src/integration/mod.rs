//! Surfaces for the layers around media-core.
//!
//! rtp-core drives a lane through two handles: an [`IngressHandle`] to push received RTP
//! packets in and an [`EgressHandle`] to pop packets to send. Both are non-blocking, both
//! are single-threaded (`Send`, not `Clone`): one transport thread per lane owns them.

use crate::rtp::RtpHeader;
pub mod pipeline;
pub mod rtcp;
pub mod session_core;

use crate::runtime::lane::{EgressParts, IngressParts};
use crate::runtime::msg::EgressSlot;
use crate::runtime::slab::Token;
use crate::types::SessionId;
use crate::Error;

/// Pushes received RTP packets into one lane. Owned by one transport thread.
pub struct IngressHandle {
    parts: IngressParts,
    lane: u16,
}

impl IngressHandle {
    pub(crate) fn new(parts: IngressParts, lane: u16) -> Self {
        IngressHandle { parts, lane }
    }

    /// The lane this handle feeds. Push only packets of sessions whose
    /// [`SessionId::lane`] is this lane; others are counted as unknown-session drops.
    pub fn lane(&self) -> usize {
        self.lane as usize
    }

    /// Largest packet (RTP header included) a slot holds.
    pub fn max_packet_bytes(&self) -> usize {
        self.parts.slab.with_capacity_hint()
    }

    /// Copies one received RTP packet for `session` into a preallocated slot and queues it.
    /// Never blocks and never allocates.
    ///
    /// Errors: [`Error::PayloadTooLarge`] if the packet exceeds the slot size,
    /// [`Error::RingFull`] if no slot is free (the lane is behind or the buffers are
    /// full). Both are also counted in the lane's counters; the packet is dropped.
    pub fn push(&mut self, session: SessionId, packet: &[u8]) -> Result<(), Error> {
        self.push_at(session, packet, crate::runtime::clock::monotonic_ns())
    }

    /// Like [`IngressHandle::push`], with the packet's arrival time in nanoseconds on any
    /// monotonic timebase (the jitter estimate uses only differences; 0 means unknown).
    /// Simulations on the virtual clock pass their simulated arrival times here.
    pub fn push_at(
        &mut self,
        session: SessionId,
        packet: &[u8],
        arrival_ns: u64,
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
        let tok = match p.free_from_decode.pop() {
            Ok(t) => Ok(t),
            Err(_) => p.free_from_jitter.pop(),
        };
        let Ok(mut tok) = tok else {
            p.shared.counters.ingress_full.inc();
            return Err(Error::RingFull { ring: "ingress" });
        };
        p.slab.with_mut(&mut tok, |s| {
            s.session = session.to_u64();
            s.arrival_ns = arrival_ns;
            s.len = packet.len();
            s.bytes[..packet.len()].copy_from_slice(packet);
        });
        // Cannot fail: the ingress ring holds as many entries as there are slots.
        if p.ingress.push(tok).is_err() {
            p.shared.counters.internal_ring_full.inc();
        }
        Ok(())
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

    /// Free egress slots (available to the lane's encoder).
    pub fn free_slots(&self) -> usize {
        // Items in the free ring = its capacity (the slot count) minus its free space.
        self.parts.slab.capacity() - self.parts.free.slots()
    }

    /// Total egress slots.
    pub fn capacity(&self) -> usize {
        self.parts.slab.capacity()
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
