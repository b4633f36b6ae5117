//! Which session holds each slot of a lane, for the transport's ingress handle.
//!
//! A packet whose id names no live session (destroyed a moment ago, never created, another
//! lane's) used to take a packet slot and be dropped by the lane at its next tick. A
//! transport that keeps sending for such an id (a peer still streaming at a released
//! port, a stale mapping in a transport bug) could then fill the lane's shared slots
//! between two ticks, like a flood, while the per-session rate limit, keyed by slot and
//! generation, restarted for every new generation it saw. With this table the ingress
//! handle refuses such packets before they take a slot.
//!
//! One `AtomicU32` per slot: `LIVE | generation` while the control plane has a session
//! there (bits 24-30 may carry an epoch: the application audio table's attachment count),
//! 0 otherwise. Only the control plane stores (when a create is sent and when a
//! destroy is sent, or the lane fails); the transport loads. Nothing is handed over
//! through it, so a stale load costs at most one packet's fate: a packet pushed while a
//! create is being sent may be refused as if it had come before the session existed, and
//! one pushed while a destroy is being sent may still reach the lane, which checks every
//! packet's id itself. What the ordering does guarantee (Release stores, Acquire loads,
//! modelled in `loom-tests/tests/live.rs`): once `create_media_session` has returned, a
//! push that happens after it sees the session; once `destroy_media_session` has
//! returned, a push that happens after it refuses the id.

use super::sync::{AtomicU32, Ordering};

/// Marks an entry as holding a session (generations are 24 bits).
const LIVE: u32 = 1 << 31;

/// Bits 24..31 of an entry: an epoch the control plane may tag it with (the application
/// audio table's attachment count, so frames written for an earlier attachment of the
/// same session are told apart). `is_live` ignores them.
const EPOCH_SHIFT: u32 = 24;
const EPOCH_MASK: u32 = 0x7F << EPOCH_SHIFT;

/// The live session of each slot of one lane.
#[derive(Debug)]
pub struct LiveTable {
    slots: Box<[AtomicU32]>,
}

impl LiveTable {
    /// A table of `slots` empty slots. Control plane: allocates.
    pub fn new(slots: usize) -> Self {
        LiveTable {
            slots: (0..slots).map(|_| AtomicU32::new(0)).collect(),
        }
    }

    /// Records that `slot` now holds the session of `generation`. Control plane.
    pub fn set(&self, slot: u32, generation: u32) {
        if let Some(s) = self.slots.get(slot as usize) {
            s.store(LIVE | (generation & 0xFF_FFFF), Ordering::Release);
        }
    }

    /// Records that `slot` holds the session of `generation`, tagged with `epoch` (its low
    /// 7 bits). Control plane.
    pub fn set_with_epoch(&self, slot: u32, generation: u32, epoch: u8) {
        if let Some(s) = self.slots.get(slot as usize) {
            let tag = (u32::from(epoch) << EPOCH_SHIFT) & EPOCH_MASK;
            s.store(LIVE | tag | (generation & 0xFF_FFFF), Ordering::Release);
        }
    }

    /// The epoch `slot` is tagged with when it holds the session of `generation`; `None`
    /// otherwise, and for a generation past 24 bits, which no session has (an id built by
    /// hand with high bits set is not taken for the session whose low bits it shares:
    /// the ingress policer, which keys on the whole generation, would take it for a new
    /// session and grant it a fresh burst). Real-time safe: one load.
    #[inline]
    pub fn live_epoch(&self, slot: u32, generation: u32) -> Option<u8> {
        if generation > 0xFF_FFFF {
            return None;
        }
        let v = self.slots.get(slot as usize)?.load(Ordering::Acquire);
        (v & !EPOCH_MASK == LIVE | generation).then_some(((v & EPOCH_MASK) >> EPOCH_SHIFT) as u8)
    }

    /// Records that `slot` holds no session. Control plane.
    pub fn clear(&self, slot: u32) {
        if let Some(s) = self.slots.get(slot as usize) {
            s.store(0, Ordering::Release);
        }
    }

    /// True when `slot` holds the session of `generation`. Real-time safe: one load.
    #[inline]
    pub fn is_live(&self, slot: u32, generation: u32) -> bool {
        self.live_epoch(slot, generation).is_some()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_generation_past_24_bits_is_never_live() {
        let t = LiveTable::new(4);
        t.set(1, 5);
        assert!(t.is_live(1, 5));
        assert!(!t.is_live(1, 5 | 1 << 24));
        assert!(!t.is_live(1, 5 | 1 << 31));
    }

    #[test]
    fn only_the_recorded_generation_of_a_slot_is_live() {
        let t = LiveTable::new(4);
        assert!(
            !t.is_live(1, 0),
            "an empty slot holds no generation, not even 0"
        );
        t.set(1, 7);
        assert!(t.is_live(1, 7));
        assert!(!t.is_live(1, 8) && !t.is_live(2, 7) && !t.is_live(9, 7));
        t.set(1, 8);
        assert!(!t.is_live(1, 7) && t.is_live(1, 8));
        t.clear(1);
        assert!(!t.is_live(1, 8));
        // Out of range: ignored, never live.
        t.set(4, 1);
        assert!(!t.is_live(4, 1));
        // An epoch tags an entry without changing who is live.
        t.set_with_epoch(2, 0xFF_FFFF, 200);
        assert!(t.is_live(2, 0xFF_FFFF));
        assert_eq!(t.live_epoch(2, 0xFF_FFFF), Some(200 & 0x7F));
        assert_eq!(t.live_epoch(2, 5), None);
        t.set(2, 5);
        assert_eq!(t.live_epoch(2, 5), Some(0));
        t.clear(2);
        assert_eq!(t.live_epoch(2, 5), None);
    }
}
