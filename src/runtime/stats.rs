//! Counters the lanes publish and the control plane reads without stopping them.
//!
//! Each counter has exactly one writing thread (the stage that owns the event), so
//! writers use plain `load` + `store` (no read-modify-write, no lock prefix). Readers
//! load with `Relaxed`. Session counter blocks are reused when a session slot is
//! reused; a sequence word makes that safe to observe (a seqlock): the stage that
//! installs a new session writes an odd sequence, zeroes the block, then publishes
//! `2 * generation`. A snapshot is only returned if the sequence was even and equal to
//! `2 * generation` of the id asked for both before and after reading, so a reader never
//! sees another session's counts under its id. `loom-tests/tests/stats.rs` models it.

use super::sync::{fence, AtomicU64, Ordering};

/// A single-writer monotonic counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// A zeroed counter.
    pub fn new() -> Self {
        Counter(AtomicU64::new(0))
    }

    /// Adds `n`. Only the counter's one writer thread may call this (it is a load and a
    /// store, not an atomic add). Real-time safe.
    #[inline]
    pub fn add(&self, n: u64) {
        let v = self.0.load(Ordering::Relaxed);
        self.0.store(v.wrapping_add(n), Ordering::Relaxed);
    }

    /// Adds one. Same single-writer rule as [`Counter::add`].
    #[inline]
    pub fn inc(&self) {
        self.add(1)
    }

    /// Raises the value to `v` if larger (a high-water mark). Single writer.
    #[inline]
    pub fn max(&self, v: u64) {
        if v > self.0.load(Ordering::Relaxed) {
            self.0.store(v, Ordering::Relaxed);
        }
    }

    /// Overwrites the value (a gauge). Single writer.
    #[inline]
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }

    /// Reads the value from any thread.
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

macro_rules! counter_block {
    ($(#[$m:meta])* $name:ident / $snap:ident { $($(#[$fm:meta])* $field:ident),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Default)]
        pub struct $name { $($(#[$fm])* pub $field: Counter,)* }

        /// A point-in-time copy of the counters.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct $snap { $($(#[$fm])* pub $field: u64,)* }

        impl $name {
            /// Copies every counter (each read is atomic; the set is not a transaction).
            pub fn snapshot(&self) -> $snap {
                $snap { $($field: self.$field.get(),)* }
            }

            #[allow(dead_code)]
            fn zero(&self) {
                $(self.$field.set(0);)*
            }
        }
    };
}

counter_block! {
    /// Per-session counters; each field is written by one stage of the lane.
    SessionCounters / SessionStats {
        /// Packets accepted into the jitter stage (includes zero-length keepalives).
        rx_packets,
        /// Payload bytes accepted.
        rx_payload_bytes,
        /// Zero-length payloads (keepalives): counted, never decoded.
        rx_empty_payloads,
        /// Packets whose payload type is not negotiated for this session.
        rx_unsupported_pt,
        /// Packets that arrived after their playout time.
        rx_late,
        /// Packets already held or played.
        rx_duplicates,
        /// Times the receive stream was resynchronised (SSRC change, sequence jump).
        rx_resyncs,
        /// Frames decoded from packets.
        frames_decoded,
        /// Frames relayed without decoding (same codec both sides).
        frames_relayed,
        /// Frame periods with no packet to play (lost or not yet arrived).
        frames_missing,
        /// Payloads whose size did not match the frame (truncated or zero-padded).
        size_mismatches,
        /// Frames dropped because the frame slab was exhausted.
        slab_exhausted,
        /// Frames dropped because there was no peer to send them to.
        no_sink,
        /// Frames run through the DSP stage.
        frames_processed,
        /// RTP packets produced for sending.
        tx_packets,
        /// Payload bytes produced for sending.
        tx_payload_bytes,
        /// Packets not produced because the egress ring had no free slot.
        tx_egress_full,
        /// Encoder failures.
        codec_errors,
    }
}

counter_block! {
    /// Per-lane counters.
    LaneCounters / LaneStats {
        /// Ticks run.
        ticks,
        /// Ticks that finished after their deadline (the next tick's start).
        deadline_overruns,
        /// Ticks skipped entirely because the lane fell a whole period behind.
        ticks_skipped,
        /// Longest tick processing time seen, in nanoseconds.
        max_tick_ns,
        /// Processing time of the most recent tick, in nanoseconds.
        last_tick_ns,
        /// Packets for a session id that is not live on this lane.
        unknown_session,
        /// Packets that failed RTP parsing.
        malformed,
        /// Packets refused at the ingress handle because no packet slot was free.
        ingress_full,
        /// Packets refused at the ingress handle for exceeding `max_payload_bytes`.
        ingress_too_large,
        /// Internal ring pushes that failed (a sizing bug if ever non-zero).
        internal_ring_full,
        /// Concealment messages not sent because a downstream stage was backed up.
        stage_backlog_drops,
        /// Events dropped because the event ring was full.
        events_dropped,
        /// Frame slab slots currently free (gauge).
        frame_slots_free,
        /// Commands applied (creates, updates, destroys, bridges).
        commands_applied,
    }
}

/// The session counter block with its reuse sequence word (see module docs).
#[derive(Debug, Default)]
pub struct SessionCell {
    seq: AtomicU64,
    /// The counters.
    pub counters: SessionCounters,
}

impl SessionCell {
    /// Starts a new generation: zeroes the counters under an odd sequence, then publishes
    /// `2 * generation`. Called by the installing stage, when no other stage writes this
    /// block (slots are only reused after the previous session fully retired).
    pub fn begin_generation(&self, generation: u32) {
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s | 1, Ordering::Relaxed);
        fence(Ordering::Release);
        self.counters.zero();
        self.seq
            .store(u64::from(generation) << 1, Ordering::Release);
    }

    /// Marks the block as not belonging to any live session.
    pub fn end_generation(&self) {
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s | 1, Ordering::Release);
    }

    /// Returns the counters if they still belong to `generation`.
    pub fn snapshot(&self, generation: u32) -> Option<SessionStats> {
        let want = u64::from(generation) << 1;
        let s1 = self.seq.load(Ordering::Acquire);
        if s1 != want {
            return None;
        }
        let snap = self.counters.snapshot();
        fence(Ordering::Acquire);
        let s2 = self.seq.load(Ordering::Relaxed);
        (s2 == want).then_some(snap)
    }
}
