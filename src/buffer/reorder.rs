//! A fixed-delay reorder buffer keyed by RTP sequence number.
//!
//! Playout starts `delay_frames` frame periods after the first packet of a stream and then
//! advances one sequence number per frame period, returning the packet if it arrived in
//! time and [`Playout::Missing`] otherwise. Sequence arithmetic is modulo 2^16
//! (RFC 3550 §A.1), so wrap-around is invisible. Capacity is fixed at `N` entries.
//!
//! Pure logic: no clock, no threads. Items that leave the buffer other than by playout
//! (late, duplicate, flushed) are handed back to the caller, who owns their release.

/// What happened to an inserted item.
#[derive(Debug, PartialEq, Eq)]
pub enum InsertOutcome<T> {
    /// Stored for playout.
    Stored,
    /// Its playout time has passed; the item is handed back.
    Late(T),
    /// A packet with this sequence number is already held; the new one is handed back.
    Duplicate(T),
    /// The sequence number jumped out of the window: the buffer was flushed (those items
    /// went to the release callback) and restarted from this packet, which is stored.
    Resynced,
}

/// The result of one frame period's playout.
#[derive(Debug, PartialEq, Eq)]
pub enum Playout<T> {
    /// No stream, or still prebuffering: nothing to play and nothing lost.
    Idle,
    /// The packet for this frame period. `first` marks the first frame after (re)start.
    Packet {
        /// The item.
        item: T,
        /// First frame of a (re)started stream: the sender should set the marker bit.
        first: bool,
    },
    /// The packet for this frame period did not arrive in time.
    Missing,
}

#[derive(Debug)]
struct Entry<T> {
    seq: u16,
    item: T,
}

/// Fixed-capacity, fixed-delay reorder buffer (see module docs). `N` must be a power of two.
#[derive(Debug)]
pub struct ReorderBuffer<T, const N: usize = 32> {
    slots: [Option<Entry<T>>; N],
    /// Sequence number to play next (valid when `started`).
    next_seq: u16,
    started: bool,
    /// Frame periods still to wait before the first playout.
    prebuffer_left: u16,
    delay_frames: u16,
    /// Consecutive missing frames; after `idle_after` the stream is considered stopped.
    missing_run: u16,
    idle_after: u16,
    first_pending: bool,
    held: u16,
}

impl<T, const N: usize> ReorderBuffer<T, N> {
    const MASK: usize = N - 1;
    /// Packets this far behind the playout point count as late; further behind is a jump.
    const LATE_WINDOW: i32 = (N as i32) * 4;

    /// A buffer that waits `delay_frames` frame periods before playing (clamped to
    /// `N - 1`) and declares the stream idle after `idle_after_frames` missing frames in
    /// a row (it then restarts, prebuffering again, on the next packet).
    /// Control plane (the value is built inline; no allocation).
    pub fn new(delay_frames: u16, idle_after_frames: u16) -> Self {
        assert!(
            N.is_power_of_two() && N >= 2 && N <= 1 << 14,
            "N must be a power of two"
        );
        ReorderBuffer {
            slots: std::array::from_fn(|_| None),
            next_seq: 0,
            started: false,
            prebuffer_left: 0,
            delay_frames: delay_frames.min(N as u16 - 1),
            missing_run: 0,
            idle_after: idle_after_frames.max(1),
            first_pending: false,
            held: 0,
        }
    }

    /// Entries the buffer can hold.
    pub const fn capacity(&self) -> usize {
        N
    }

    /// Items currently held.
    pub fn len(&self) -> usize {
        self.held as usize
    }

    /// True when no item is held.
    pub fn is_empty(&self) -> bool {
        self.held == 0
    }

    /// The configured prebuffer delay in frames.
    pub fn delay_frames(&self) -> u16 {
        self.delay_frames
    }

    fn restart_at(&mut self, seq: u16) {
        self.started = true;
        self.next_seq = seq;
        self.prebuffer_left = self.delay_frames;
        self.missing_run = 0;
        self.first_pending = true;
    }

    /// Inserts the packet with sequence number `seq`. Items evicted by a resync go to
    /// `release`. Real-time safe.
    pub fn insert(&mut self, seq: u16, item: T, release: &mut impl FnMut(T)) -> InsertOutcome<T> {
        if !self.started {
            self.restart_at(seq);
            self.store(seq, item);
            return InsertOutcome::Stored;
        }
        let diff = i32::from(seq.wrapping_sub(self.next_seq) as i16);
        if diff < 0 {
            if diff >= -Self::LATE_WINDOW {
                return InsertOutcome::Late(item);
            }
            // Far behind: the sender restarted its sequence space.
            self.flush(release);
            self.restart_at(seq);
            self.store(seq, item);
            return InsertOutcome::Resynced;
        }
        if diff as usize >= N {
            self.flush(release);
            self.restart_at(seq);
            self.store(seq, item);
            return InsertOutcome::Resynced;
        }
        let idx = seq as usize & Self::MASK;
        if self.slots[idx].is_some() {
            return InsertOutcome::Duplicate(item);
        }
        self.store(seq, item);
        InsertOutcome::Stored
    }

    fn store(&mut self, seq: u16, item: T) {
        let idx = seq as usize & Self::MASK;
        // Invariant: callers checked the slot is free or flushed.
        debug_assert!(self.slots[idx].is_none());
        self.slots[idx] = Some(Entry { seq, item });
        self.held += 1;
    }

    /// Plays one frame period. Real-time safe.
    pub fn playout(&mut self) -> Playout<T> {
        if !self.started {
            return Playout::Idle;
        }
        if self.prebuffer_left > 0 {
            self.prebuffer_left -= 1;
            return Playout::Idle;
        }
        let idx = self.next_seq as usize & Self::MASK;
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        match self.slots[idx].take() {
            Some(e) if e.seq == seq => {
                self.held -= 1;
                self.missing_run = 0;
                let first = std::mem::take(&mut self.first_pending);
                Playout::Packet {
                    item: e.item,
                    first,
                }
            }
            other => {
                // Invariant: entries are only stored within N of next_seq, so a stored
                // entry at this index always has this sequence number.
                debug_assert!(other.is_none());
                self.slots[idx] = other;
                self.missing_run += 1;
                if self.missing_run >= self.idle_after && self.held == 0 {
                    // The stream stopped (hold, DTX, outage): stop producing frames and
                    // prebuffer again when it comes back.
                    self.started = false;
                    return Playout::Idle;
                }
                Playout::Missing
            }
        }
    }

    /// Hands every held item to `release` and forgets the stream. Real-time safe.
    pub fn flush(&mut self, release: &mut impl FnMut(T)) {
        for slot in self.slots.iter_mut() {
            if let Some(e) = slot.take() {
                release(e.item);
            }
        }
        self.held = 0;
        self.started = false;
    }

    /// Forces a restart on the next packet (e.g. after an SSRC change), releasing held items.
    pub fn reset(&mut self, release: &mut impl FnMut(T)) {
        self.flush(release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(b: &mut ReorderBuffer<u32, 8>, n: usize) -> Vec<Option<u32>> {
        (0..n)
            .filter_map(|_| match b.playout() {
                Playout::Idle => None,
                Playout::Packet { item, .. } => Some(Some(item)),
                Playout::Missing => Some(None),
            })
            .collect()
    }

    #[test]
    fn reordered_packets_play_in_sequence_order_after_the_delay() {
        let mut b = ReorderBuffer::<u32, 8>::new(2, 5);
        let mut rel = |_| panic!("nothing released");
        for s in [10u16, 12, 11, 13] {
            assert_eq!(b.insert(s, u32::from(s), &mut rel), InsertOutcome::Stored);
        }
        assert_eq!(b.playout(), Playout::Idle);
        assert_eq!(b.playout(), Playout::Idle);
        assert_eq!(
            drain(&mut b, 4),
            vec![Some(10), Some(11), Some(12), Some(13)]
        );
    }

    #[test]
    fn late_and_duplicate_packets_are_handed_back() {
        let mut b = ReorderBuffer::<u32, 8>::new(0, 5);
        let mut rel = |_| panic!("nothing released");
        b.insert(1, 1, &mut rel);
        assert_eq!(b.insert(1, 99, &mut rel), InsertOutcome::Duplicate(99));
        assert!(matches!(
            b.playout(),
            Playout::Packet {
                item: 1,
                first: true
            }
        ));
        assert_eq!(b.insert(1, 7, &mut rel), InsertOutcome::Late(7));
        assert_eq!(b.insert(0, 8, &mut rel), InsertOutcome::Late(8));
    }

    #[test]
    fn sequence_wrap_is_continuous() {
        let mut b = ReorderBuffer::<u32, 8>::new(0, 5);
        let mut rel = |_| panic!("nothing released");
        for s in [65534u16, 65535, 0, 1] {
            assert_eq!(b.insert(s, u32::from(s), &mut rel), InsertOutcome::Stored);
        }
        assert_eq!(
            drain(&mut b, 4),
            vec![Some(65534), Some(65535), Some(0), Some(1)]
        );
    }

    #[test]
    fn absurd_jump_resynchronises_and_releases_held_items() {
        let mut b = ReorderBuffer::<u32, 8>::new(1, 5);
        let mut released = Vec::new();
        b.insert(100, 100, &mut |i| released.push(i));
        b.insert(101, 101, &mut |i| released.push(i));
        assert_eq!(
            b.insert(30000, 7, &mut |i| released.push(i)),
            InsertOutcome::Resynced
        );
        released.sort();
        assert_eq!(released, vec![100, 101]);
        assert_eq!(b.len(), 1);
        assert_eq!(b.playout(), Playout::Idle);
        assert!(matches!(
            b.playout(),
            Playout::Packet {
                item: 7,
                first: true
            }
        ));
        // A far-backwards jump also resyncs rather than being late forever.
        assert_eq!(
            b.insert(40, 40, &mut |i| released.push(i)),
            InsertOutcome::Resynced
        );
    }

    #[test]
    fn gaps_are_missing_and_a_stopped_stream_goes_idle_then_restarts() {
        let mut b = ReorderBuffer::<u32, 8>::new(0, 3);
        let mut rel = |_| panic!("nothing released");
        b.insert(5, 5, &mut rel);
        b.insert(7, 7, &mut rel);
        assert_eq!(drain(&mut b, 3), vec![Some(5), None, Some(7)]);
        assert_eq!(b.playout(), Playout::Missing);
        assert_eq!(b.playout(), Playout::Missing);
        assert_eq!(b.playout(), Playout::Idle);
        assert_eq!(b.playout(), Playout::Idle);
        b.insert(500, 500, &mut rel);
        assert!(matches!(
            b.playout(),
            Playout::Packet {
                item: 500,
                first: true
            }
        ));
    }
}
