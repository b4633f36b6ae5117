//! Core value types shared by every layer: identifiers, payload types, rates and frame timing.
//!
//! Everything here is `Copy`, small, and free of allocation so it can cross the
//! control-plane / data-plane boundary by value.

use std::fmt;

/// Identifies one media session inside one [`MediaEngine`](crate::engine::MediaEngine).
///
/// It packs the lane, the session slot on that lane and the slot's generation, so
/// a stale id (a destroyed session whose slot was reused) is detected on the real-time
/// side by one comparison and counted as an unknown-session drop instead of reaching
/// the new occupant of the slot.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId {
    pub(crate) lane: u16,
    pub(crate) slot: u32,
    pub(crate) generation: u32,
}

impl SessionId {
    /// Builds an id from its parts. Mostly useful in tests; ids handed out by the
    /// engine are the only ones that address live sessions.
    pub const fn from_parts(lane: u16, slot: u32, generation: u32) -> Self {
        Self {
            lane,
            slot,
            generation,
        }
    }

    /// The lane (worker group) this session runs on. Packets for the session must be
    /// pushed through that lane's ingress handle.
    pub const fn lane(&self) -> usize {
        self.lane as usize
    }

    /// The session slot on its lane.
    pub const fn slot(&self) -> u32 {
        self.slot
    }

    /// The slot generation: bumped each time the slot is reused.
    pub const fn generation(&self) -> u32 {
        self.generation
    }

    /// Packs the id into one `u64` (lane in the top 16 bits, then 24 bits of slot,
    /// then 24 bits of generation), convenient as a map key in transports.
    pub const fn to_u64(&self) -> u64 {
        ((self.lane as u64) << 48)
            | (((self.slot as u64) & 0xFF_FFFF) << 24)
            | ((self.generation as u64) & 0xFF_FFFF)
    }

    /// Inverse of [`SessionId::to_u64`].
    pub const fn from_u64(v: u64) -> Self {
        Self {
            lane: (v >> 48) as u16,
            slot: ((v >> 24) & 0xFF_FFFF) as u32,
            generation: (v & 0xFF_FFFF) as u32,
        }
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SessionId({}:{}#{})",
            self.lane, self.slot, self.generation
        )
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}#{}", self.lane, self.slot, self.generation)
    }
}

/// Identifies the SIP dialog a session serves (opaque to media-core; session-core
/// chooses it, e.g. a hash of Call-ID and tags). At most one live session per dialog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DialogId(pub u64);

impl fmt::Display for DialogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "dialog-{:x}", self.0)
    }
}

/// An RTP payload type number (RFC 3550 §5.1: 7 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PayloadType(u8);

impl PayloadType {
    /// PCMU, static payload type 0 (RFC 3551 §6).
    pub const PCMU: PayloadType = PayloadType(0);
    /// PCMA, static payload type 8 (RFC 3551 §6).
    pub const PCMA: PayloadType = PayloadType(8);
    /// G722, static payload type 9 (RFC 3551 §6).
    pub const G722: PayloadType = PayloadType(9);
    /// The dynamic payload type media-core offers Opus on by default (negotiation may
    /// choose another; RFC 7587 has no static type).
    pub const OPUS_DEFAULT: PayloadType = PayloadType(111);

    /// Returns the payload type, or `None` when `pt` does not fit in 7 bits.
    pub const fn new(pt: u8) -> Option<Self> {
        if pt < 128 {
            Some(PayloadType(pt))
        } else {
            None
        }
    }

    /// The 7-bit value.
    pub const fn get(self) -> u8 {
        self.0
    }
}

/// An audio sampling rate in Hz.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SampleRate(u32);

impl SampleRate {
    /// 8 kHz (narrowband telephony).
    pub const HZ_8000: SampleRate = SampleRate(8000);
    /// 12 kHz (Opus mediumband).
    pub const HZ_12000: SampleRate = SampleRate(12000);
    /// 16 kHz (wideband).
    pub const HZ_16000: SampleRate = SampleRate(16000);
    /// 24 kHz.
    pub const HZ_24000: SampleRate = SampleRate(24000);
    /// 32 kHz.
    pub const HZ_32000: SampleRate = SampleRate(32000);
    /// 48 kHz (fullband).
    pub const HZ_48000: SampleRate = SampleRate(48000);

    /// Returns the rate when it is one media-core processes (8, 12, 16, 24, 32 or 48 kHz).
    pub const fn new(hz: u32) -> Option<Self> {
        match hz {
            8000 | 12000 | 16000 | 24000 | 32000 | 48000 => Some(SampleRate(hz)),
            _ => None,
        }
    }

    /// The rate in Hz.
    pub const fn hz(self) -> u32 {
        self.0
    }

    /// Samples per channel in `ptime`.
    pub const fn samples_in(self, ptime: Ptime) -> usize {
        (self.0 as usize / 1000) * ptime.ms() as usize
    }
}

/// Packetisation time: the audio duration carried by one RTP packet and processed
/// per session per frame. media-core supports 10, 20, 30, 40 and 60 ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ptime(u8);

impl Ptime {
    /// The lane tick granularity: every supported ptime is a multiple of it.
    pub const TICK_MS: u32 = 10;
    /// 10 ms.
    pub const MS_10: Ptime = Ptime(10);
    /// 20 ms, the telephony default (RFC 3551 §4.5).
    pub const MS_20: Ptime = Ptime(20);
    /// 30 ms.
    pub const MS_30: Ptime = Ptime(30);
    /// 40 ms.
    pub const MS_40: Ptime = Ptime(40);
    /// 60 ms.
    pub const MS_60: Ptime = Ptime(60);

    /// Returns the ptime when it is supported.
    pub const fn from_ms(ms: u32) -> Option<Self> {
        match ms {
            10 | 20 | 30 | 40 | 60 => Some(Ptime(ms as u8)),
            _ => None,
        }
    }

    /// Milliseconds.
    pub const fn ms(self) -> u32 {
        self.0 as u32
    }

    /// How many lane ticks ([`Ptime::TICK_MS`]) one frame spans.
    pub const fn ticks(self) -> u32 {
        self.0 as u32 / Self::TICK_MS
    }
}

impl Default for Ptime {
    fn default() -> Self {
        Ptime::MS_20
    }
}

/// Identifies one lane (a shard of sessions with its own worker thread or threads).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LaneId(pub u16);
