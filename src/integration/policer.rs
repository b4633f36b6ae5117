//! Per-session ingress rate limit, applied by [`IngressHandle`](super::IngressHandle)
//! before a packet takes one of the lane's packet slots.
//!
//! The slots are shared by every session of a lane. Without a limit, one peer that floods
//! its RTP port (a looping or misconfigured endpoint, an attack on one port) fills them
//! between two lane ticks, and the packets of every other session on the lane are refused
//! as [`RingFull`](crate::Error::RingFull) until the lane drains the flood. With the limit,
//! each session may take at most `burst_packets` slots at once plus its sustained rate, so
//! the slots a flooding session holds are bounded (its jitter buffer then keeps at most 32
//! of them) and the other sessions on the lane keep their packets.
//!
//! The limit is the generic cell rate algorithm (GCRA, ITU-T I.371): one theoretical
//! arrival time per session, advanced by `1 / packets_per_second` for each packet let
//! through; a packet is refused when that time runs more than `burst_packets - 1`
//! intervals ahead of its arrival. Its state is 16 bytes per session slot, owned by the
//! transport thread (no atomics, no sharing) and allocated with the handle.

use crate::types::SessionId;

/// The per-session ingress limit ([`EngineConfig::ingress_limit`](crate::EngineConfig)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngressLimit {
    /// Sustained packets per second allowed per session.
    pub packets_per_second: u32,
    /// Packets a session may send at once above its sustained rate (after a network stall
    /// delivers a backlog, say).
    pub burst_packets: u32,
}

impl Default for IngressLimit {
    /// 500 packets/s and a burst of 64: above any legitimate audio stream (2.5 ms Opus
    /// frames are 400 packets/s, RFC 4733 end packets add three per digit), and twice the
    /// packets a session's jitter buffer holds, so a backlog the buffer could still use
    /// is never cut.
    fn default() -> Self {
        IngressLimit {
            packets_per_second: 500,
            burst_packets: 64,
        }
    }
}

impl IngressLimit {
    /// True when both figures are usable (each at least 1, the rate at most 10^9/s).
    pub fn is_valid(&self) -> bool {
        self.packets_per_second >= 1
            && self.packets_per_second <= 1_000_000_000
            && self.burst_packets >= 1
    }
}

/// One session slot's state.
#[derive(Debug, Clone, Copy, Default)]
struct Cell {
    /// Theoretical arrival time of the session's next packet, ns.
    tat_ns: u64,
    /// Generation of the session the state belongs to (a new session restarts it).
    generation: u32,
    /// Packets refused for this session (saturating).
    refused: u32,
}

/// The per-slot limit state of one lane.
#[derive(Debug)]
pub(crate) struct Policer {
    cells: Box<[Cell]>,
    interval_ns: u64,
    tolerance_ns: u64,
    on: bool,
}

impl Policer {
    /// State for `sessions` slots (control plane: allocates); `None` lets everything pass.
    pub(crate) fn new(sessions: usize, limit: Option<IngressLimit>) -> Self {
        match limit.filter(IngressLimit::is_valid) {
            Some(l) => {
                let interval_ns = 1_000_000_000 / u64::from(l.packets_per_second);
                Policer {
                    cells: vec![Cell::default(); sessions].into_boxed_slice(),
                    interval_ns,
                    tolerance_ns: interval_ns * u64::from(l.burst_packets - 1),
                    on: true,
                }
            }
            None => Policer {
                cells: Box::new([]),
                interval_ns: 0,
                tolerance_ns: 0,
                on: false,
            },
        }
    }

    /// Whether a packet of `session` arriving at `arrival_ns` may take a slot. Packets with
    /// no arrival time (0) pass. The handle has already refused ids no live session holds
    /// (`runtime::live`); a slot's state restarts with each new generation there.
    #[inline]
    pub(crate) fn admit(&mut self, session: SessionId, arrival_ns: u64) -> bool {
        if !self.on || arrival_ns == 0 {
            return true;
        }
        let Some(c) = self.cells.get_mut(session.slot() as usize) else {
            return true;
        };
        // While arrivals never go back, the theoretical time runs at most a burst and an
        // interval ahead of an arrival; further ahead, the arrival clock went back (a
        // transport's clock reset or step, or absurd times): start again from it rather
        // than refuse the session until the clock catches up (forever, from a time near
        // the end of the range; for the step's length, from a small one). A restart
        // grants at most one burst.
        let horizon = self.tolerance_ns.saturating_add(self.interval_ns);
        if c.generation != session.generation()
            || c.tat_ns == 0
            || c.tat_ns > arrival_ns.saturating_add(horizon)
        {
            let refused = if c.generation == session.generation() {
                c.refused
            } else {
                0
            };
            *c = Cell {
                tat_ns: arrival_ns,
                generation: session.generation(),
                refused,
            };
        }
        if c.tat_ns > arrival_ns.saturating_add(self.tolerance_ns) {
            c.refused = c.refused.saturating_add(1);
            return false;
        }
        c.tat_ns = c.tat_ns.max(arrival_ns).saturating_add(self.interval_ns);
        true
    }

    /// Packets of `session` refused so far (0 for a session not seen, or replaced).
    pub(crate) fn refused(&self, session: SessionId) -> u32 {
        match self.cells.get(session.slot() as usize) {
            Some(c) if c.generation == session.generation() => c.refused,
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn id(slot: u32, generation: u32) -> SessionId {
        SessionId::from_parts(0, slot, generation)
    }

    #[test]
    fn a_burst_passes_then_only_the_sustained_rate() {
        let mut p = Policer::new(
            4,
            Some(IngressLimit {
                packets_per_second: 100,
                burst_packets: 8,
            }),
        );
        let s = id(1, 3);
        let t0 = 5_000 * MS;
        // Twenty packets at one instant: the burst of eight passes, the rest are refused.
        let passed = (0..20).filter(|_| p.admit(s, t0)).count();
        assert_eq!(passed, 8);
        assert_eq!(p.refused(s), 12);
        // Then one packet per 10 ms passes, and a second in the same 10 ms does not.
        let mut more = 0;
        for k in 1..=50u64 {
            more += usize::from(p.admit(s, t0 + k * 10 * MS));
            more += usize::from(p.admit(s, t0 + k * 10 * MS + MS));
        }
        assert_eq!(more, 50);
        // A quiet second refills the burst.
        let t1 = t0 + 1_600 * MS;
        assert_eq!((0..20).filter(|_| p.admit(s, t1)).count(), 8);
    }

    /// Arrival times at the end of the range do not overflow (found by the ingress fuzz
    /// target with debug assertions), and a clock that goes back restarts the limit
    /// instead of refusing the session until it catches up.
    #[test]
    fn absurd_or_backward_arrival_times_neither_overflow_nor_lock_a_session_out() {
        let mut p = Policer::new(2, Some(IngressLimit::default()));
        let s = id(0, 1);
        for t in [u64::MAX, u64::MAX - 1, u64::MAX] {
            let _ = p.admit(s, t);
        }
        // Back to an ordinary clock: a stream at its rate passes again at once.
        for k in 0..100u64 {
            assert!(p.admit(s, 1_000 * MS + k * 20 * MS), "packet {k}");
        }
        // A clock that steps back 2 s mid-stream: the stream goes on.
        for k in 0..100u64 {
            assert!(
                p.admit(s, 500 * MS + k * 20 * MS),
                "after the step, packet {k}"
            );
        }
        // And the limit still holds: a burst at one instant passes its 64 only.
        let t = 9_000 * MS;
        let passed = (0..200).filter(|_| p.admit(s, t)).count();
        assert_eq!(passed, 64);
        // A step back shorter than a second (in review, every packet until the clock had
        // caught up was refused: 18 of a 20 ms stream for a 500 ms step).
        let mut p = Policer::new(2, Some(IngressLimit::default()));
        let t0 = 1_000 * MS;
        for k in 0..500u64 {
            assert!(p.admit(s, t0 + k * 20 * MS), "packet {k}");
        }
        let back = t0 + 500 * 20 * MS - 500 * MS;
        for k in 0..50u64 {
            assert!(p.admit(s, back + k * 20 * MS), "after the step, packet {k}");
        }
        assert_eq!(p.refused(s), 0);
    }

    #[test]
    fn a_stream_at_its_rate_with_jitter_loses_nothing() {
        let mut p = Policer::new(2, Some(IngressLimit::default()));
        let s = id(0, 1);
        // 20 ms packets arriving up to 60 ms late, delivered in clumps: nothing refused.
        let mut x = 0x1234_5678u32;
        for k in 0..10_000u64 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let t = 1_000 * MS + k * 20 * MS + u64::from(x % 60) * MS;
            assert!(p.admit(s, t), "packet {k}");
        }
        assert_eq!(p.refused(s), 0);
    }

    #[test]
    fn sessions_are_limited_apart_and_a_new_generation_starts_afresh() {
        let mut p = Policer::new(
            4,
            Some(IngressLimit {
                packets_per_second: 50,
                burst_packets: 4,
            }),
        );
        let t = 10 * MS;
        let (a, b) = (id(0, 1), id(1, 1));
        assert_eq!((0..10).filter(|_| p.admit(a, t)).count(), 4);
        assert_eq!(
            (0..3).filter(|_| p.admit(b, t)).count(),
            3,
            "b has its own budget"
        );
        assert_eq!(p.refused(a), 6);
        assert_eq!(p.refused(b), 0);
        // Slot 0 reused by a new session: its budget is whole and its count starts at 0.
        let a2 = id(0, 2);
        assert_eq!(p.refused(a2), 0);
        assert_eq!((0..4).filter(|_| p.admit(a2, t)).count(), 4);
        assert_eq!(p.refused(a), 0, "the old id no longer names the slot");
    }

    #[test]
    fn no_limit_unknown_times_and_foreign_slots_pass() {
        let mut off = Policer::new(4, None);
        assert!((0..1000).all(|_| off.admit(id(0, 1), 7)));
        let mut bad = Policer::new(
            4,
            Some(IngressLimit {
                packets_per_second: 0,
                burst_packets: 1,
            }),
        );
        assert!(
            (0..1000).all(|_| bad.admit(id(0, 1), 7)),
            "an invalid limit is off"
        );
        let mut p = Policer::new(
            2,
            Some(IngressLimit {
                packets_per_second: 1,
                burst_packets: 1,
            }),
        );
        assert!((0..100).all(|_| p.admit(id(0, 1), 0)), "no arrival time");
        assert!(
            (0..100).all(|_| p.admit(id(9, 1), MS)),
            "slot beyond the lane"
        );
        assert!(p.admit(id(1, 1), MS));
        assert!(!p.admit(id(1, 1), MS));
        assert!(!IngressLimit {
            packets_per_second: 5,
            burst_packets: 0
        }
        .is_valid());
        assert!(IngressLimit::default().is_valid());
    }
}
