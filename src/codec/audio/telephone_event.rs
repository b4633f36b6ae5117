//! RFC 4733 telephone events (DTMF over RTP) and in-band DTMF tones.
//!
//! Three pieces, all pure state machines (time comes in as arguments, output goes into
//! caller-owned buffers):
//!
//! - [`EventPayload`]: the 4-byte payload of RFC 4733 §2.3, parsed and written.
//! - [`DtmfSender`]: what the encode stage asks each packet interval
//!   ([`DtmfSender::active_at`], then `poll` while a digit is being sent; audio otherwise,
//!   including the gap it keeps between digits). It decides marker, timestamp, duration,
//!   end bit, the three copies of
//!   the final packet and the segmentation of long events; the caller owns sequence
//!   numbers, SSRC and the socket.
//! - [`DtmfReceiver`]: turns received event packets (with their retransmissions, losses
//!   and reordering) into one [`DtmfEvent::Began`] and one [`DtmfEvent::Ended`] per digit.
//!
//! In-band DTMF (the ITU-T Q.23 tone pair as PCM, and its detection) lives in
//! [`crate::processing::audio::dtmf_detector`].
//!
//! Real-time contract: every method here is safe to call on the real-time thread. None
//! allocates (state is fixed-size and built by `new`), locks, or panics, for any input.
//!
//! # Example
//! A digit from a sender to a receiver, 20 ms packets at 8 kHz:
//! ```
//! use media_core::codec::audio::telephone_event::{
//!     DtmfEvent, DtmfReceiver, DtmfSender, EventPayload,
//! };
//!
//! let mut tx = DtmfSender::new(160)?; // one packet per 160 timestamp units (20 ms)
//! let mut rx = DtmfReceiver::new(DtmfReceiver::DEFAULT_TIMEOUT_MS);
//! tx.start(5, 10, Some(800))?; // digit '5', -10 dBm0, 100 ms
//!
//! let mut digits = String::new();
//! let mut buf = [0u8; EventPayload::LEN];
//! let mut media_ts = 16_000u32; // the timestamp the next audio frame would carry
//! while let Some(pkt) = tx.poll(media_ts, &mut buf) {
//!     // The caller would put `pkt.marker` and `pkt.timestamp` in the RTP header here.
//!     let payload = EventPayload::parse(&buf[..pkt.payload_len])?;
//!     for ev in rx.on_packet(pkt.timestamp, pkt.marker, &payload, u64::from(media_ts / 8)) {
//!         if let DtmfEvent::Began { digit, .. } = ev {
//!             digits.push(digit);
//!         }
//!     }
//!     media_ts += 160;
//! }
//! assert_eq!(digits, "5");
//! # Ok::<(), media_core::codec::audio::telephone_event::EventError>(())
//! ```

// ---------------------------------------------------------------------------
// Errors and digit codes
// ---------------------------------------------------------------------------

/// What can go wrong with telephone events. Cheap to build (no heap data).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    /// A payload shorter than one 4-byte event. Recover: drop the packet and count it.
    #[error("telephone-event payload too short: {actual} bytes, need {expected}")]
    TooShort {
        /// Bytes needed.
        expected: usize,
        /// Bytes offered.
        actual: usize,
    },
    /// A volume outside 0..=63 (-dBm0, RFC 4733 §2.3.4). Recover: clamp it.
    #[error("volume {0} out of range 0..=63 (-dBm0)")]
    InvalidVolume(u8),
    /// An event of zero duration was requested. Recover: ask for at least one packet
    /// interval (RFC 4733 events of 40 ms or more are what receivers expect).
    #[error("event duration must be at least one timestamp unit")]
    ZeroDuration,
    /// The event code is not a DTMF digit (0..=15) where a tone is needed.
    /// Recover: send it as an RFC 4733 event only, or drop it.
    #[error("event {0} is not a DTMF digit (0..=15)")]
    NotDtmf(u8),
    /// [`DtmfSender::start`] while an event is still being sent and not ending, or while
    /// one is already queued behind an ending event. Recover: `stop` the current one
    /// first (the next `start` is then queued), or wait until [`DtmfSender::is_idle`].
    #[error("an event is still being sent")]
    Busy,
    /// A packet interval outside 1..=32767 timestamp units. Recover: pass the ptime in
    /// timestamp units (160 for 20 ms at 8 kHz).
    #[error("packet interval {0} timestamp units out of range 1..=32767")]
    InvalidInterval(u32),
    /// A tone generator sample rate outside 8000..=96000 Hz. Recover: use 8, 16 or 48 kHz.
    #[error("unsupported sample rate {0} Hz")]
    UnsupportedSampleRate(u32),
    /// A tone level outside -63..=0 dBm0 (or NaN). Recover: use the default -10 dBm0.
    #[error("tone level out of range -63..=0 dBm0")]
    InvalidLevel,
}

/// RFC 4733 §3.2 event codes 0..=15 and the DTMF digits they name.
const DIGITS: [char; 16] = [
    '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', '*', '#', 'A', 'B', 'C', 'D',
];

/// The DTMF digit of an RFC 4733 event code (0..=9 → '0'..='9', 10 → '*', 11 → '#',
/// 12..=15 → 'A'..='D'); `None` for other events (flash, tones, ...).
///
/// ```
/// use media_core::codec::audio::telephone_event::event_to_digit;
/// assert_eq!(event_to_digit(11), Some('#'));
/// assert_eq!(event_to_digit(16), None);
/// ```
pub fn event_to_digit(event: u8) -> Option<char> {
    DIGITS.get(usize::from(event)).copied()
}

/// The RFC 4733 event code of a DTMF digit (case-insensitive for 'A'..='D').
///
/// ```
/// use media_core::codec::audio::telephone_event::digit_to_event;
/// assert_eq!(digit_to_event('*'), Some(10));
/// assert_eq!(digit_to_event('d'), Some(15));
/// assert_eq!(digit_to_event('x'), None);
/// ```
pub fn digit_to_event(digit: char) -> Option<u8> {
    let digit = digit.to_ascii_uppercase();
    DIGITS.iter().position(|&d| d == digit).map(|i| i as u8)
}

// ---------------------------------------------------------------------------
// Payload
// ---------------------------------------------------------------------------

/// One RFC 4733 §2.3 event: 8-bit event code, end bit, 6-bit volume, 16-bit duration.
///
/// ```text
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// |     event     |E|R| volume    |          duration             |
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EventPayload {
    /// Event code (RFC 4733 §3.2: 0..=15 are the DTMF digits, see [`event_to_digit`]).
    pub event: u8,
    /// E bit: this packet reports the end of the event (or of its last segment).
    pub end: bool,
    /// Tone power in -dBm0, 0..=63 (0 is loudest). Written masked to 6 bits.
    pub volume: u8,
    /// How long the event (or its current segment) has lasted so far, in RTP timestamp
    /// units from the packet's RTP timestamp.
    pub duration: u16,
}

impl EventPayload {
    /// Size of one event on the wire.
    pub const LEN: usize = 4;

    /// Parses the first event of a telephone-event payload.
    ///
    /// Shorter than 4 bytes is an error. Bytes after the first 4 are not an error: RFC
    /// 4733 §2.5.1.5 lets a sender pack several consecutive events into one packet (and
    /// RFC 2198 redundancy arrives already split by the RED layer), so they are further
    /// events, which [`EventPayload::packed`] reads. The reserved R bit is ignored
    /// (§2.3.3: receivers must ignore it).
    ///
    /// Real-time safe; never panics.
    ///
    /// ```
    /// use media_core::codec::audio::telephone_event::EventPayload;
    /// let p = EventPayload::parse(&[1, 0x8A, 0x03, 0x20])?;
    /// assert_eq!(p, EventPayload { event: 1, end: true, volume: 10, duration: 800 });
    /// assert!(EventPayload::parse(&[1, 0x8A, 0x03]).is_err());
    /// # Ok::<(), media_core::codec::audio::telephone_event::EventError>(())
    /// ```
    pub fn parse(bytes: &[u8]) -> Result<Self, EventError> {
        match bytes {
            &[event, flags, d0, d1, ..] => Ok(Self {
                event,
                end: flags & 0x80 != 0,
                volume: flags & 0x3F,
                duration: u16::from_be_bytes([d0, d1]),
            }),
            _ => Err(EventError::TooShort {
                expected: Self::LEN,
                actual: bytes.len(),
            }),
        }
    }

    /// Writes the event into `out[..4]` and returns 4, or returns 0 and writes nothing
    /// when `out` is shorter than [`EventPayload::LEN`]. The R bit is written as zero
    /// (§2.3.3) and the volume is clamped to 63.
    ///
    /// Real-time safe; never panics.
    ///
    /// ```
    /// use media_core::codec::audio::telephone_event::EventPayload;
    /// let mut buf = [0u8; 4];
    /// let p = EventPayload { event: 11, end: false, volume: 10, duration: 160 };
    /// assert_eq!(p.write(&mut buf), 4);
    /// assert_eq!(buf, [11, 10, 0, 160]);
    /// ```
    pub fn write(&self, out: &mut [u8]) -> usize {
        let Some(dst) = out.get_mut(..Self::LEN) else {
            return 0;
        };
        let end_bit = if self.end { 0x80 } else { 0 };
        let [d0, d1] = self.duration.to_be_bytes();
        dst.copy_from_slice(&[self.event, end_bit | self.volume.min(63), d0, d1]);
        Self::LEN
    }

    /// Every whole 4-byte event of a payload, with the offset of its start from the
    /// packet's RTP timestamp.
    ///
    /// RFC 4733 §2.5.1.5 and §2.5.2.4: packed events are consecutive and contiguous,
    /// so each one starts where the previous one ended and its timestamp is the
    /// packet's plus the durations before it. A trailing partial block is ignored. Feed
    /// each one to [`DtmfReceiver::on_packet`] with `ts.wrapping_add(offset)`.
    ///
    /// ```
    /// use media_core::codec::audio::telephone_event::EventPayload;
    /// let bytes = [1, 0x8A, 0x03, 0x20, 2, 0x8A, 0x03, 0x20];
    /// let offsets: Vec<u32> = EventPayload::packed(&bytes).map(|(off, _)| off).collect();
    /// assert_eq!(offsets, [0, 800]);
    /// ```
    pub fn packed(bytes: &[u8]) -> PackedEvents<'_> {
        PackedEvents {
            chunks: bytes.chunks_exact(Self::LEN),
            offset: 0,
        }
    }

    /// The DTMF digit this event names, if it is one.
    pub fn digit(&self) -> Option<char> {
        event_to_digit(self.event)
    }
}

/// Iterator over the packed events of one payload; see [`EventPayload::packed`].
#[derive(Debug, Clone)]
pub struct PackedEvents<'a> {
    chunks: std::slice::ChunksExact<'a, u8>,
    offset: u32,
}

impl Iterator for PackedEvents<'_> {
    /// (start offset from the packet's RTP timestamp, event)
    type Item = (u32, EventPayload);

    fn next(&mut self) -> Option<Self::Item> {
        let payload = EventPayload::parse(self.chunks.next()?).ok()?;
        let offset = self.offset;
        self.offset = self.offset.wrapping_add(u32::from(payload.duration));
        Some((offset, payload))
    }
}

// ---------------------------------------------------------------------------
// Sender
// ---------------------------------------------------------------------------

/// The longest duration one packet can report; longer events are split into segments
/// (RFC 4733 §2.5.1.3).
const MAX_SEGMENT_TS: u64 = 0xFFFF;

/// How many times the final packet of an event (and of each long-event segment) is sent
/// in total (RFC 4733 §2.5.1.4).
const FINAL_PACKET_COPIES: u8 = 3;

/// Where to place one event packet the sender produced; the payload is in the caller's
/// buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventPacket {
    /// RTP marker bit: set on the first packet of an event only (RFC 4733 §2.2.2), not
    /// on later segments of a long event nor on retransmissions.
    pub marker: bool,
    /// Absolute RTP timestamp for the packet: the start of the event, or of the current
    /// segment of a long event. Constant across updates and retransmissions.
    pub timestamp: u32,
    /// Bytes written to the caller's buffer (always [`EventPayload::LEN`]).
    pub payload_len: usize,
    /// The payload's E bit (this is one of the three final packets).
    pub end: bool,
}

/// RFC 4733 sender: one event at a time, one packet per call of [`DtmfSender::poll`].
///
/// The encode stage calls `poll(media_ts, buf)` once per packet interval, where
/// `media_ts` is the RTP timestamp the audio frame of this interval would carry. While
/// an event is being sent, each call returns where to place one packet (marker,
/// timestamp) and writes its payload into `buf`; the caller sends it with the next
/// sequence number instead of (or besides) the audio frame. The sequence is:
///
/// 1. the first packet, marker set, timestamp = `media_ts` of the first poll (§2.2,
///    §2.5.1.2);
/// 2. one update per interval, same timestamp, duration growing to the end of the
///    interval being replaced (§2.5.1.2);
/// 3. the final packet, E bit set, with the final duration, sent three times in
///    total on consecutive polls (§2.5.1.4);
/// 4. for events longer than 0xFFFF timestamp units, each full segment ends with a
///    packet reporting 0xFFFF without the E bit (also sent three times), and the next
///    segment starts at the previous timestamp + 0xFFFF, without the marker (§2.5.1.3).
///
/// Then `poll` returns `None` and [`DtmfSender::is_idle`] is true (unless another digit is
/// queued). RFC 4733 receivers, and the tones they regenerate (ITU-T Q.24), need a pause of
/// about 40 ms or more between events: [`DtmfSender::with_min_gap`] keeps one before a
/// queued digit (the engine's sessions set 40 ms), otherwise the gap is the caller's.
#[derive(Debug, Clone)]
pub struct DtmfSender {
    interval_ts: u32,
    tx: Option<Transmission>,
    /// The next event, started when the current one's end packets are out: digits
    /// typed quickly (a phone leaves ~60 ms between keys, less than the end packets'
    /// three intervals) are queued rather than refused.
    pending: Option<Queued>,
    /// The least gap between one event's end and the next's start, timestamp units
    /// ([`DtmfSender::with_min_gap`]); 0: the next starts right after the end packets.
    min_gap_ts: u32,
    /// A queued event whose turn came while the gap after the last one was still open,
    /// and the timestamp it may start at: audio goes out meanwhile.
    waiting: Option<(Queued, u32)>,
}

/// An event waiting for the current one to finish.
#[derive(Debug, Clone, Copy)]
struct Queued {
    event: u8,
    volume: u8,
    duration_ts: Option<u32>,
    /// Its key already went up (`stop` while it waited).
    stopped: bool,
}

/// The event being sent.
#[derive(Debug, Clone)]
struct Transmission {
    event: u8,
    volume: u8,
    /// Duration asked for in `start`, timestamp units; `None`: until `stop`.
    requested_ts: Option<u64>,
    /// `stop` was called and the end is not fixed yet.
    stop_requested: bool,
    /// Event-relative end, fixed at the first poll after `stop`.
    stop_at: Option<u64>,
    /// The least event-relative end `stop` asked for (a forwarded digit's received
    /// duration); 0: none.
    min_end: u64,
    /// RTP timestamp of the event start, set by the first poll.
    start_ts: Option<u32>,
    /// Event-relative start of the current segment (a multiple of 0xFFFF).
    segment_offset: u64,
    /// Event-relative duration reported so far; 0 before the first packet.
    reported: u64,
    /// A final packet (of the event or of a segment) still to be repeated.
    repeat: Option<Repeat>,
}

#[derive(Debug, Clone, Copy)]
struct Repeat {
    payload: EventPayload,
    timestamp: u32,
    remaining: u8,
}

impl DtmfSender {
    /// A sender that is polled every `interval_ts` RTP timestamp units (the audio
    /// ptime in timestamp units: 160 for 20 ms at 8 kHz, 960 for 20 ms at 48 kHz).
    /// Built on the control plane; allocates nothing.
    pub fn new(interval_ts: u32) -> Result<Self, EventError> {
        if !(1..=0x7FFF).contains(&interval_ts) {
            return Err(EventError::InvalidInterval(interval_ts));
        }
        Ok(Self {
            interval_ts,
            tx: None,
            pending: None,
            min_gap_ts: 0,
            waiting: None,
        })
    }

    /// Leaves at least `gap_ts` timestamp units between one event's end and the next
    /// queued one's start (Q.24 wants 40 ms between digits; the three end packets alone
    /// leave two intervals: 20 ms at a 10 ms ptime). Audio goes out in the gap: drive the
    /// sender with [`DtmfSender::active_at`]. Control plane.
    pub fn with_min_gap(mut self, gap_ts: u32) -> Self {
        self.min_gap_ts = gap_ts;
        self
    }

    /// The packet interval in timestamp units.
    pub fn interval_ts(&self) -> u32 {
        self.interval_ts
    }

    /// Starts sending `event` (0..=15 for DTMF; any RFC 4733 code is accepted) at
    /// `volume` -dBm0 (0..=63; 10 is typical) for `duration_ts` timestamp units, or
    /// until [`DtmfSender::stop`] when `None`. The event starts at the next `poll`, or,
    /// when the current event is ending (stopped, or of fixed length), right after its
    /// end packets and the least gap ([`DtmfSender::with_min_gap`]): one event waits so
    /// quickly typed digits are not lost.
    ///
    /// Called on the real-time thread; never allocates or panics.
    pub fn start(
        &mut self,
        event: u8,
        volume: u8,
        duration_ts: Option<u32>,
    ) -> Result<(), EventError> {
        if volume > 63 {
            return Err(EventError::InvalidVolume(volume));
        }
        if duration_ts == Some(0) {
            return Err(EventError::ZeroDuration);
        }
        // Behind an event being sent, queued when that one is ending (or has a fixed
        // length); behind one waiting for its gap, always.
        let may_queue = match &self.tx {
            Some(tx) => {
                Some(tx.stop_requested || tx.stop_at.is_some() || tx.requested_ts.is_some())
            }
            None => self.waiting.is_some().then_some(true),
        };
        if let Some(may_queue) = may_queue {
            if !may_queue || self.pending.is_some() {
                return Err(EventError::Busy);
            }
            self.pending = Some(Queued {
                event,
                volume,
                duration_ts,
                stopped: false,
            });
            return Ok(());
        }
        self.begin(event, volume, duration_ts, false);
        Ok(())
    }

    fn begin(&mut self, event: u8, volume: u8, duration_ts: Option<u32>, stopped: bool) {
        self.tx = Some(Transmission {
            event,
            volume,
            requested_ts: duration_ts.map(u64::from),
            stop_requested: stopped,
            stop_at: None,
            min_end: 0,
            start_ts: None,
            segment_offset: 0,
            reported: 0,
            repeat: None,
        });
    }

    /// Ends the current event (key released): the next `poll` sends the final packet,
    /// with the duration up to that poll's `media_ts` (at least one interval, and never
    /// less than already reported), and the two after it repeat it. No effect when idle
    /// or already ending.
    ///
    /// Called on the real-time thread; never allocates or panics.
    pub fn stop(&mut self) {
        self.stop_no_shorter_than(0);
    }

    /// [`DtmfSender::stop`], with the event lasting at least `min_duration_ts` from its
    /// start: a forwarded digit whose end arrives with (or soon after) its begin, e.g. a
    /// source seen only by its end packets, goes out as long as it was received rather
    /// than one interval (too short for a Q.24 receiver). With 0, exactly `stop`.
    ///
    /// Called on the real-time thread; never allocates or panics.
    pub fn stop_no_shorter_than(&mut self, min_duration_ts: u32) {
        self.stop_matching(None, min_duration_ts);
    }

    /// [`DtmfSender::stop_no_shorter_than`] for the event `event` only: a forwarded
    /// digit's end stops that digit, never another one sent or queued beside it (a digit
    /// of the API waiting behind a fixed-length one). No effect when neither the queued
    /// nor the current event is `event`.
    ///
    /// Called on the real-time thread; never allocates or panics.
    pub fn stop_event(&mut self, event: u8, min_duration_ts: u32) {
        self.stop_matching(Some(event), min_duration_ts);
    }

    fn stop_matching(&mut self, event: Option<u8>, min_duration_ts: u32) {
        let Some(event) = event else {
            // `stop`: the newest event (the queued one's key went up, else the current's).
            if let Some(q) = self
                .pending
                .as_mut()
                .or(self.waiting.as_mut().map(|(q, _)| q))
            {
                Self::stop_queued(q, min_duration_ts);
            } else if let Some(tx) = self.tx.as_mut() {
                Self::stop_current(tx, min_duration_ts);
            }
            return;
        };
        // `stop_event`: the open-ended event of that code (a forwarded digit, started
        // until its end), oldest first; never one of fixed length beside it (the API's),
        // which ends on its own.
        if let Some(tx) = self.tx.as_mut().filter(|tx| {
            tx.event == event
                && tx.requested_ts.is_none()
                && !tx.stop_requested
                && tx.stop_at.is_none()
        }) {
            Self::stop_current(tx, min_duration_ts);
            return;
        }
        let open = |q: &&mut Queued| q.event == event && q.duration_ts.is_none() && !q.stopped;
        if let Some(q) = self.waiting.as_mut().map(|(q, _)| q).filter(open) {
            Self::stop_queued(q, min_duration_ts);
        } else if let Some(q) = self.pending.as_mut().filter(open) {
            Self::stop_queued(q, min_duration_ts);
        }
    }

    /// A queued event's key went up: it will be sent as a short event, or as one of the
    /// given length.
    fn stop_queued(q: &mut Queued, min_duration_ts: u32) {
        if min_duration_ts > 0 && q.duration_ts.is_none() {
            q.duration_ts = Some(min_duration_ts);
        } else {
            q.stopped = true;
        }
    }

    fn stop_current(tx: &mut Transmission, min_duration_ts: u32) {
        if tx.stop_at.is_none() {
            tx.stop_requested = true;
            tx.min_end = tx.min_end.max(u64::from(min_duration_ts));
        }
    }

    /// Drops the current event at once, without end packets (session torn down or
    /// re-keyed). Prefer [`DtmfSender::stop`] otherwise.
    pub fn reset(&mut self) {
        self.tx = None;
        self.pending = None;
        self.waiting = None;
    }

    /// Nothing to send: no event being sent, none waiting for its gap or queued.
    pub fn is_idle(&self) -> bool {
        self.tx.is_none() && self.waiting.is_none() && self.pending.is_none()
    }

    /// An event is being sent: its packets take the audio's place (`poll` each interval).
    pub fn is_sending(&self) -> bool {
        self.tx.is_some()
    }

    /// [`DtmfSender::is_sending`] for the interval whose audio would carry `media_ts`,
    /// starting the event that waits for its gap once `media_ts` reached its time (RFC
    /// 3550 timestamp order). Call it each interval, before `poll`; when false, send
    /// audio.
    ///
    /// Called on the real-time thread; never allocates or panics.
    pub fn active_at(&mut self, media_ts: u32) -> bool {
        if self.tx.is_none() {
            if let Some((q, at)) = self.waiting {
                if media_ts.wrapping_sub(at) < 0x8000_0000 {
                    self.waiting = None;
                    self.begin(q.event, q.volume, q.duration_ts, q.stopped);
                }
            }
        }
        self.tx.is_some()
    }

    /// Produces the packet for the interval whose audio would carry `media_ts`, writing
    /// its payload into `out`, or returns `None` when no event is being sent (idle, or one
    /// waiting for its gap: see [`DtmfSender::active_at`]). See the type's docs for the
    /// sequence. When `out` is shorter than [`EventPayload::LEN`], nothing is written,
    /// the state does not advance and `None` is returned.
    ///
    /// Called on the real-time thread, once per packet interval; never allocates or
    /// panics, for any `media_ts` (a timestamp that goes backwards counts as no time
    /// passing).
    pub fn poll(&mut self, media_ts: u32, out: &mut [u8]) -> Option<EventPacket> {
        if out.len() < EventPayload::LEN {
            return None;
        }
        let interval = u64::from(self.interval_ts);
        let tx = self.tx.as_mut()?;

        // RFC 4733 §2.5.1.4: the final packet of the event or segment goes out three
        // times, at the update interval, identical (and without the marker).
        if let Some(rep) = &mut tx.repeat {
            let packet = EventPacket {
                marker: false,
                timestamp: rep.timestamp,
                payload_len: rep.payload.write(out),
                end: rep.payload.end,
            };
            rep.remaining = rep.remaining.saturating_sub(1);
            if rep.remaining == 0 {
                let event_over = rep.payload.end;
                let end = rep.timestamp.wrapping_add(u32::from(rep.payload.duration));
                tx.repeat = None;
                if event_over {
                    self.tx = None;
                    if let Some(q) = self.pending.take() {
                        if self.min_gap_ts == 0 {
                            self.begin(q.event, q.volume, q.duration_ts, q.stopped);
                        } else {
                            self.waiting = Some((q, end.wrapping_add(self.min_gap_ts)));
                        }
                    }
                }
            }
            return Some(packet);
        }

        let start_ts = *tx.start_ts.get_or_insert(media_ts);
        let first = tx.reported == 0;
        // Timestamp units since the event start; a timestamp that went backwards (a
        // caller bug) counts as no time passing. (Events are far shorter than the 2^31
        // units this leaves them: 12 hours at 48 kHz.)
        let since_start = match media_ts.wrapping_sub(start_ts) {
            d if d > i32::MAX as u32 => 0,
            d => u64::from(d),
        };
        if tx.requested_ts.is_none()
            && !tx.stop_requested
            && since_start >= MAX_OPEN_INTERVALS * interval
        {
            // An open-ended event (a forwarded digit) whose end never came (lost upstream,
            // or dropped in a flood): the key goes up by itself, as an in-band tone's does.
            tx.stop_requested = true;
        }
        if tx.stop_requested && tx.stop_at.is_none() {
            // The key went up before this interval: the event lasted until now, but never
            // less than what was already reported, and never an empty (segment) end.
            let mut end = since_start.max(tx.reported).max(tx.min_end);
            if end <= tx.segment_offset {
                end = tx.segment_offset + interval;
            }
            tx.stop_at = Some(end);
        }
        // An update reports the event up to the end of the interval it replaces.
        let mut target = (since_start + interval).max(tx.reported);
        let mut ended = false;
        if let Some(end) = tx.stop_at.or(tx.requested_ts) {
            if target >= end {
                target = end;
                ended = true;
            }
        }
        let segment_len = target.saturating_sub(tx.segment_offset);
        if segment_len == 0 {
            // Only reachable when `media_ts` stood still right after a segment boundary:
            // nothing new to report, and a zero duration is not worth a packet.
            return None;
        }
        let timestamp = start_ts.wrapping_add(tx.segment_offset as u32);
        // RFC 4733 §2.5.1.3: a segment that reaches 0xFFFF is closed with a packet
        // reporting exactly 0xFFFF and no E bit; the event goes on in a new segment.
        let closes_segment =
            segment_len > MAX_SEGMENT_TS || (segment_len == MAX_SEGMENT_TS && !ended);
        let payload = EventPayload {
            event: tx.event,
            end: ended && !closes_segment,
            volume: tx.volume,
            duration: segment_len.min(MAX_SEGMENT_TS) as u16,
        };
        let payload_len = payload.write(out);
        tx.reported = tx.segment_offset + u64::from(payload.duration);
        if closes_segment || payload.end {
            tx.repeat = Some(Repeat {
                payload,
                timestamp,
                remaining: FINAL_PACKET_COPIES - 1,
            });
        }
        if closes_segment {
            tx.segment_offset += MAX_SEGMENT_TS;
        }
        Some(EventPacket {
            marker: first,
            timestamp,
            payload_len,
            end: payload.end,
        })
    }
}

// ---------------------------------------------------------------------------
// Receiver
// ---------------------------------------------------------------------------

/// Why a digit was reported as ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// A packet with the E bit arrived.
    EndBit,
    /// No packet of the event arrived for the receiver's timeout.
    TimedOut,
    /// A newer event began before the end of this one was seen (its end packets were
    /// lost); the duration is the last one reported.
    Superseded,
}

/// A digit report from [`DtmfReceiver`]: each digit begins once and ends once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DtmfEvent {
    /// A digit began.
    Began {
        /// The digit: '0'..='9', '*', '#', 'A'..='D'.
        digit: char,
        /// RTP timestamp of the event start (of the first packet seen).
        ts: u32,
    },
    /// The digit that began last has ended.
    Ended {
        /// The digit.
        digit: char,
        /// RTP timestamp of the event start, as in `Began`.
        ts: u32,
        /// Total duration in timestamp units, across long-event segments.
        duration_ts: u32,
        /// How the end was learnt.
        reason: EndReason,
    },
}

impl DtmfEvent {
    /// The digit reported.
    pub fn digit(&self) -> char {
        match *self {
            DtmfEvent::Began { digit, .. } | DtmfEvent::Ended { digit, .. } => digit,
        }
    }
}

/// The reports one packet produced (at most three: the end of an event whose end packets
/// were lost, then the begin and, for an event seen only by its end packet, the end of
/// the new one). An iterator; fixed-size, no allocation.
#[derive(Debug, Clone)]
#[must_use = "digit reports are only delivered here"]
pub struct DtmfEvents {
    items: [Option<DtmfEvent>; 3],
    next: usize,
}

impl DtmfEvents {
    fn none() -> Self {
        Self {
            items: [None; 3],
            next: 0,
        }
    }

    fn push(&mut self, event: DtmfEvent) {
        // Each slot is written by one fixed step of `on_packet`, in order; a full set is
        // the three-report case above, so there is always a free slot.
        if let Some(slot) = self.items.iter_mut().find(|s| s.is_none()) {
            *slot = Some(event);
        }
    }
}

impl Iterator for DtmfEvents {
    type Item = DtmfEvent;

    fn next(&mut self) -> Option<DtmfEvent> {
        let item = self.items.get_mut(self.next)?.take();
        self.next += 1;
        item
    }
}

/// Counters of a [`DtmfReceiver`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DtmfReceiverStats {
    /// Packets given to `on_packet`.
    pub packets: u64,
    /// Retransmissions and repeated end packets (same event, nothing new).
    pub duplicates: u64,
    /// Late packets: an older duration of the current event, or an older event.
    pub stale: u64,
    /// Events that are not DTMF digits (codes 16 and up).
    pub ignored: u64,
}

/// An open-ended event ([`DtmfSender::start`] without a duration: a forwarded digit,
/// sent until its end arrives) ends by itself after this many update intervals (10 s at
/// 20 ms), so an end lost upstream never holds the far end's key for the rest of the call.
const MAX_OPEN_INTERVALS: u64 = 500;

/// A long-event segment starts at most this far short of 0xFFFF after the previous one
/// (senders close segments at 0xFFFF exactly, RFC 4733 §2.5.1.3; this tolerates ones that
/// stop at the last whole packet interval).
const MIN_SEGMENT_STEP_TS: u32 = 0xF000;

/// How far back (timestamp units) a packet counts as a late one of an earlier event
/// rather than the sender's timestamps having jumped backwards.
const STALE_WINDOW_TS: u32 = 1 << 20;

/// RFC 4733 receiver: reports each digit once when it begins and once when it ends.
///
/// Call [`DtmfReceiver::on_packet`] for each received telephone-event packet (each
/// packed event, see [`EventPayload::packed`]) and [`DtmfReceiver::poll`] on every tick
/// for timeouts. It
/// - drops retransmissions and the repeated end packets (§2.5.1.4), and late updates
///   that report less than already seen;
/// - recognises a new event by its new RTP timestamp (§2.2.1, §2.5.2.2), so a digit
///   whose end packets were all lost is ended ([`EndReason::Superseded`]) when the next
///   one begins, or by the timeout ([`EndReason::TimedOut`]) if none comes;
/// - joins the segments of a long event (§2.5.2.3: new timestamp + 0xFFFF, no marker)
///   and durations that wrap past 0xFFFF on one timestamp (senders that do not segment);
/// - ignores late packets of earlier events and events that are not digits.
///
/// Time is `now_ms`, any monotonic millisecond clock the caller keeps.
#[derive(Debug, Clone)]
pub struct DtmfReceiver {
    timeout_ms: u64,
    current: Option<Incoming>,
    stats: DtmfReceiverStats,
}

#[derive(Debug, Clone, Copy)]
struct Incoming {
    event: u8,
    digit: char,
    start_ts: u32,
    segment_ts: u32,
    /// Duration of completed segments and 16-bit wraps.
    base: u64,
    last_duration: u16,
    /// The sender's end packet was seen: later packets of the segment are repeats.
    end_bit: bool,
    /// The digit's end was reported (end packet, timeout or the next event): never
    /// again, even if a digit that timed out goes on (its updates or next segment come
    /// after a gap longer than the timeout).
    reported: bool,
    last_packet_ms: u64,
}

impl Incoming {
    fn duration_ts(&self) -> u32 {
        let total = self.base + u64::from(self.last_duration);
        u32::try_from(total).unwrap_or(u32::MAX)
    }

    /// The digit's end report, the first time only.
    fn end_report(&mut self, reason: EndReason) -> Option<DtmfEvent> {
        if self.reported {
            return None;
        }
        self.reported = true;
        Some(DtmfEvent::Ended {
            digit: self.digit,
            ts: self.start_ts,
            duration_ts: self.duration_ts(),
            reason,
        })
    }

    /// The sender's end packet: the end report, unless the digit's end was already
    /// reported.
    fn end_bit(&mut self, out: &mut DtmfEvents) {
        self.end_bit = true;
        if let Some(ev) = self.end_report(EndReason::EndBit) {
            out.push(ev);
        }
    }
}

impl DtmfReceiver {
    /// A default timeout: about three update intervals of the common 50 ms senders plus
    /// jitter, and ten of 20 ms ones.
    pub const DEFAULT_TIMEOUT_MS: u32 = 200;

    /// A receiver that ends a digit when no packet of it arrived for `timeout_ms`.
    /// Built on the control plane; allocates nothing.
    pub fn new(timeout_ms: u32) -> Self {
        Self {
            timeout_ms: u64::from(timeout_ms),
            current: None,
            stats: DtmfReceiverStats::default(),
        }
    }

    /// Handles one event from a packet with RTP timestamp `ts` and marker bit `marker`,
    /// received at `now_ms`, and returns the digit reports it produced (usually none).
    ///
    /// Called on the real-time thread; never allocates or panics.
    pub fn on_packet(
        &mut self,
        ts: u32,
        marker: bool,
        payload: &EventPayload,
        now_ms: u64,
    ) -> DtmfEvents {
        let mut out = DtmfEvents::none();
        self.stats.packets += 1;
        let Some(digit) = payload.digit() else {
            self.stats.ignored += 1;
            return out;
        };

        if let Some(cur) = &mut self.current {
            let delta = ts.wrapping_sub(cur.segment_ts);
            if delta == 0 && cur.event == payload.event {
                // The current segment: an update, a retransmission or an end packet
                // (an update after the digit timed out is followed, unreported).
                if cur.end_bit {
                    self.stats.duplicates += 1;
                    return out;
                }
                cur.last_packet_ms = now_ms;
                // Durations compared as 16-bit serial numbers, so a sender that keeps
                // counting past 0xFFFF on one timestamp is followed across the wrap.
                let step = payload.duration.wrapping_sub(cur.last_duration);
                if step != 0 && step < 0x8000 {
                    if payload.duration < cur.last_duration {
                        cur.base += 0x1_0000;
                    }
                    cur.last_duration = payload.duration;
                } else if !payload.end {
                    if step == 0 {
                        self.stats.duplicates += 1;
                    } else {
                        self.stats.stale += 1;
                    }
                    return out;
                }
                if payload.end {
                    cur.end_bit(&mut out);
                }
                return out;
            }
            // (A digit that timed out may go on in a next segment: not a new digit, as
            // long as its segment had run at least half its length, or it was already in
            // a later segment. A shorter digit whose
            // end packets were lost is not taken to go on there: that would be a press
            // of the same key whose marker packet was lost.)
            if !cur.end_bit
                && (!cur.reported || cur.last_duration >= 0x8000 || cur.base > 0)
                && cur.event == payload.event
                && !marker
                && (MIN_SEGMENT_STEP_TS..=0xFFFF).contains(&delta)
                && delta >= u32::from(cur.last_duration)
            {
                // RFC 4733 §2.5.1.3: the next segment of a long event starts where the
                // previous one ended, without the marker.
                cur.base += u64::from(delta);
                cur.segment_ts = ts;
                cur.last_duration = payload.duration;
                cur.last_packet_ms = now_ms;
                if payload.end {
                    cur.end_bit(&mut out);
                }
                return out;
            }
            if delta > i32::MAX as u32 && delta.wrapping_neg() <= STALE_WINDOW_TS {
                // Older than the current segment: a late packet of an earlier event or
                // segment, already reported.
                self.stats.stale += 1;
                return out;
            }
            // A new timestamp: a new event (RFC 4733 §2.2.1), even if the previous one
            // never showed its end.
            if let Some(ev) = cur.end_report(EndReason::Superseded) {
                out.push(ev);
            }
        }

        let mut new = Incoming {
            event: payload.event,
            digit,
            start_ts: ts,
            segment_ts: ts,
            base: 0,
            last_duration: payload.duration,
            end_bit: false,
            reported: false,
            last_packet_ms: now_ms,
        };
        out.push(DtmfEvent::Began { digit, ts });
        if payload.end {
            new.end_bit(&mut out);
        }
        self.current = Some(new);
        out
    }

    /// Reports the end of a digit whose packets stopped arriving `timeout_ms` ago, once.
    /// Call it on every tick (or at [`DtmfReceiver::next_timeout_ms`]).
    ///
    /// Called on the real-time thread; never allocates or panics.
    pub fn poll(&mut self, now_ms: u64) -> Option<DtmfEvent> {
        let cur = self.current.as_mut()?;
        if cur.reported || now_ms.saturating_sub(cur.last_packet_ms) < self.timeout_ms {
            return None;
        }
        cur.end_report(EndReason::TimedOut)
    }

    /// When `poll` will next have something to report, if a digit is in progress.
    pub fn next_timeout_ms(&self) -> Option<u64> {
        self.current
            .filter(|c| !c.reported)
            .map(|c| c.last_packet_ms.saturating_add(self.timeout_ms))
    }

    /// The digit currently held down (began, not yet ended).
    pub fn active_digit(&self) -> Option<char> {
        self.current.filter(|c| !c.reported).map(|c| c.digit)
    }

    /// Counters since construction.
    pub fn stats(&self) -> DtmfReceiverStats {
        self.stats
    }

    /// Ends the digit in progress, if any (its end report, `Superseded`), and forgets
    /// it: a new source (SSRC change) starts with no event, so its first digit is never
    /// taken for a late packet of the old source's. Counters are kept.
    ///
    /// Called on the real-time thread; never allocates or panics.
    pub fn finish(&mut self) -> Option<DtmfEvent> {
        self.current.take()?.end_report(EndReason::Superseded)
    }

    /// Forgets the event in progress without reporting its end (SSRC change, session
    /// re-keyed). Counters are kept.
    pub fn reset(&mut self) {
        self.current = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send_all(tx: &mut DtmfSender, mut ts: u32, step: u32) -> Vec<(EventPacket, EventPayload)> {
        let mut v = Vec::new();
        let mut buf = [0u8; 4];
        while let Some(p) = tx.poll(ts, &mut buf) {
            v.push((p, EventPayload::parse(&buf).unwrap()));
            ts = ts.wrapping_add(step);
            assert!(v.len() < 100_000);
        }
        v
    }

    #[test]
    fn payload_round_trips_every_field() {
        for &(event, end, volume, duration) in &[
            (0u8, false, 0u8, 0u16),
            (15, true, 63, 0xFFFF),
            (255, true, 7, 1234),
        ] {
            let p = EventPayload {
                event,
                end,
                volume,
                duration,
            };
            let mut b = [0u8; 6];
            assert_eq!(p.write(&mut b), 4);
            assert_eq!(EventPayload::parse(&b).unwrap(), p);
        }
    }

    #[test]
    fn reserved_bit_is_ignored_and_short_payloads_rejected() {
        let p = EventPayload::parse(&[3, 0x40 | 0x05, 0, 80]).unwrap();
        assert_eq!((p.end, p.volume), (false, 5));
        assert_eq!(
            EventPayload::parse(&[]),
            Err(EventError::TooShort {
                expected: 4,
                actual: 0
            })
        );
        assert_eq!(EventPayload::default().write(&mut [0u8; 3]), 0);
    }

    #[test]
    fn digit_codes_map_both_ways() {
        for (i, d) in "0123456789*#ABCD".chars().enumerate() {
            assert_eq!(event_to_digit(i as u8), Some(d));
            assert_eq!(digit_to_event(d), Some(i as u8));
        }
        assert_eq!(event_to_digit(16), None);
    }

    /// An open-ended event (a forwarded digit) whose stop never comes ends by itself after
    /// 10 s of 20 ms intervals: its end packets go out and the sender goes idle.
    #[test]
    fn an_open_ended_event_whose_stop_never_comes_ends_after_ten_seconds() {
        let mut tx = DtmfSender::new(160).unwrap();
        tx.start(5, 10, None).unwrap();
        let packets = send_all(&mut tx, 0, 160);
        let last = packets.last().unwrap().1;
        assert!(last.end);
        let total: u64 = packets
            .iter()
            .filter(|(_, p)| p.end)
            .map(|(h, p)| u64::from(h.timestamp) + u64::from(p.duration))
            .max()
            .unwrap();
        assert_eq!(total, 500 * 160, "10 s at 8 kHz");
        assert!(tx.is_idle());
    }

    #[test]
    fn short_event_is_one_marked_end_packet_sent_three_times() {
        let mut tx = DtmfSender::new(160).unwrap();
        tx.start(1, 10, Some(100)).unwrap();
        let v = send_all(&mut tx, 0, 160);
        assert_eq!(v.len(), 3);
        assert!(v[0].0.marker && !v[1].0.marker && !v[2].0.marker);
        assert!(v.iter().all(|(_, p)| p.end && p.duration == 100));
    }

    #[test]
    fn stop_before_first_poll_sends_one_interval() {
        let mut tx = DtmfSender::new(160).unwrap();
        tx.start(2, 10, None).unwrap();
        tx.stop();
        let v = send_all(&mut tx, 0, 160);
        assert_eq!(v.len(), 3);
        assert!(v.iter().all(|(_, p)| p.end && p.duration == 160));
    }

    #[test]
    fn a_stop_with_a_least_duration_lasts_that_long_and_stops_only_its_event() {
        // Stopped before the first poll but received as 120 ms: 960 units, not 160.
        let mut tx = DtmfSender::new(160).unwrap();
        tx.start(2, 10, None).unwrap();
        tx.stop_event(2, 960);
        let v = send_all(&mut tx, 0, 160);
        let ends: Vec<_> = v.iter().filter(|(_, p)| p.end).collect();
        assert_eq!(ends.len(), 3);
        assert!(ends.iter().all(|(_, p)| p.duration == 960), "{v:?}");
        // Already longer than asked: ends where it stands.
        let mut tx = DtmfSender::new(160).unwrap();
        tx.start(3, 10, None).unwrap();
        for k in 0..10 {
            tx.poll(160 * k, &mut [0u8; 4]).unwrap();
        }
        tx.stop_no_shorter_than(320);
        let v = send_all(&mut tx, 1600, 160);
        assert!(v.iter().all(|(_, p)| p.end && p.duration == 1600), "{v:?}");
        // Another event's end stops nothing: the API's queued digit keeps its length.
        let mut tx = DtmfSender::new(160).unwrap();
        tx.start(1, 10, Some(800)).unwrap();
        tx.start(4, 10, Some(800)).unwrap();
        tx.stop_event(9, 0);
        let v = send_all(&mut tx, 0, 160);
        let ends: Vec<_> = v
            .iter()
            .filter(|(_, p)| p.end)
            .map(|(_, p)| (p.event, p.duration))
            .collect();
        assert_eq!(
            ends,
            [(1, 800), (1, 800), (1, 800), (4, 800), (4, 800), (4, 800)]
        );
        // A queued digit stopped with a least duration is sent that long.
        let mut tx = DtmfSender::new(160).unwrap();
        tx.start(1, 10, Some(160)).unwrap();
        tx.start(4, 10, None).unwrap();
        tx.stop_event(4, 640);
        let v = send_all(&mut tx, 0, 160);
        assert!(
            v.iter()
                .any(|(_, p)| p.event == 4 && p.end && p.duration == 640),
            "{v:?}"
        );
    }

    /// Two digits typed back to back at a 10 ms ptime: the end packets alone leave 20 ms
    /// between them; with a 40 ms least gap the second starts 40 ms after the first ends,
    /// audio (no poll) in between. Without a gap the old timing holds.
    /// The review's case: a forwarded '5' (open-ended) waits behind an API digit while
    /// the API queues a '5' of its own; the forwarded end stops the forwarded '5', and the
    /// API's plays its full length. Before, the end marked the API's stopped and the
    /// forwarded one was sent for ever.
    #[test]
    fn a_forwarded_end_stops_the_open_ended_digit_not_the_apis() {
        let mut tx = DtmfSender::new(80).unwrap().with_min_gap(320);
        tx.start(3, 10, Some(800)).unwrap();
        tx.start(5, 10, None).unwrap();
        let mut buf = [0u8; 4];
        let mut ts = 0u32;
        let mut step = |tx: &mut DtmfSender, ts: &mut u32| {
            let out = if tx.active_at(*ts) {
                tx.poll(*ts, &mut buf)
                    .map(|p| (p.timestamp, EventPayload::parse(&buf).unwrap()))
            } else {
                None
            };
            *ts += 80;
            out
        };
        // Until '3' is over and the forwarded '5' waits for its gap.
        while tx.is_sending() {
            step(&mut tx, &mut ts);
        }
        tx.start(5, 10, Some(800)).unwrap();
        tx.stop_event(5, 800);
        let mut ends = vec![];
        for _ in 0..5_000 {
            if let Some((_, p)) = step(&mut tx, &mut ts) {
                if p.end {
                    ends.push((p.event, p.duration));
                }
            }
        }
        assert!(tx.is_idle(), "a digit is still being sent");
        assert_eq!(
            ends,
            [(5, 800), (5, 800), (5, 800), (5, 800), (5, 800), (5, 800)]
        );
    }

    #[test]
    fn back_to_back_digits_leave_the_least_gap_between_them() {
        for (gap, want) in [(320u32, 320u32), (0, 160)] {
            let mut tx = DtmfSender::new(80).unwrap().with_min_gap(gap);
            tx.start(5, 10, Some(800)).unwrap();
            tx.start(7, 10, Some(800)).unwrap();
            let mut starts = vec![];
            let mut audio = 0;
            let mut buf = [0u8; 4];
            for k in 0..60u32 {
                let ts = 1000 + 80 * k;
                if tx.active_at(ts) {
                    if let Some(p) = tx.poll(ts, &mut buf) {
                        if p.marker {
                            starts.push(p.timestamp);
                        }
                    }
                } else if !tx.is_idle() {
                    audio += 1;
                }
            }
            assert_eq!(starts.len(), 2, "gap {gap}");
            // The first ends at its start + 800.
            assert_eq!(starts[1] - (starts[0] + 800), want, "gap {gap}");
            assert_eq!(audio > 0, gap > 0, "audio in the gap: {audio}");
            assert!(tx.is_idle());
        }
    }

    #[test]
    fn sender_rejects_bad_arguments() {
        assert_eq!(
            DtmfSender::new(0).unwrap_err(),
            EventError::InvalidInterval(0)
        );
        let mut tx = DtmfSender::new(160).unwrap();
        assert_eq!(tx.start(1, 64, None), Err(EventError::InvalidVolume(64)));
        assert_eq!(tx.start(1, 10, Some(0)), Err(EventError::ZeroDuration));
        tx.start(1, 10, None).unwrap();
        assert_eq!(tx.start(2, 10, None), Err(EventError::Busy));
        assert_eq!(tx.poll(0, &mut [0u8; 2]), None);
    }

    #[test]
    fn a_digit_typed_while_the_last_ones_end_packets_go_out_is_queued_not_lost() {
        let mut tx = DtmfSender::new(160).unwrap();
        let mut buf = [0u8; 4];
        let mut sent = Vec::new();
        let mut ts = 0u32;
        let mut poll = |tx: &mut DtmfSender, sent: &mut Vec<(bool, EventPayload)>| {
            if let Some(p) = tx.poll(ts, &mut buf) {
                sent.push((p.marker, EventPayload::parse(&buf).unwrap()));
            }
            ts += 160;
        };
        tx.start(1, 10, None).unwrap();
        for _ in 0..3 {
            poll(&mut tx, &mut sent);
        }
        tx.stop();
        poll(&mut tx, &mut sent); // the end packet
                                  // The next key goes down and up while digit 1's end is being repeated.
        tx.start(2, 10, None).unwrap();
        assert_eq!(
            tx.start(3, 10, None),
            Err(EventError::Busy),
            "one digit waits"
        );
        tx.stop();
        for _ in 0..8 {
            poll(&mut tx, &mut sent);
        }
        assert!(tx.is_idle());
        let ends: Vec<u8> = sent
            .iter()
            .filter(|(_, p)| p.end)
            .map(|(_, p)| p.event)
            .collect();
        assert_eq!(
            ends,
            [1, 1, 1, 2, 2, 2],
            "each digit ends three times, in order"
        );
        let starts: Vec<u8> = sent
            .iter()
            .filter(|(m, _)| *m)
            .map(|(_, p)| p.event)
            .collect();
        assert_eq!(starts, [1, 2], "each digit starts with the marker");
    }

    #[test]
    fn timestamp_going_backwards_does_not_shrink_duration() {
        let mut tx = DtmfSender::new(160).unwrap();
        tx.start(1, 10, None).unwrap();
        let mut buf = [0u8; 4];
        tx.poll(1000, &mut buf).unwrap();
        tx.poll(1160, &mut buf).unwrap();
        tx.poll(500, &mut buf).unwrap();
        assert_eq!(EventPayload::parse(&buf).unwrap().duration, 320);
    }

    #[test]
    fn receiver_sees_end_only_event_as_began_and_ended() {
        let mut rx = DtmfReceiver::new(200);
        let p = EventPayload {
            event: 9,
            end: true,
            volume: 10,
            duration: 800,
        };
        let ev: Vec<_> = rx.on_packet(5000, false, &p, 0).collect();
        assert_eq!(
            ev,
            [
                DtmfEvent::Began {
                    digit: '9',
                    ts: 5000
                },
                DtmfEvent::Ended {
                    digit: '9',
                    ts: 5000,
                    duration_ts: 800,
                    reason: EndReason::EndBit
                }
            ]
        );
    }

    #[test]
    fn superseded_event_and_new_end_only_event_give_three_reports() {
        let mut rx = DtmfReceiver::new(200);
        let mut p = EventPayload {
            event: 1,
            end: false,
            volume: 10,
            duration: 160,
        };
        assert_eq!(rx.on_packet(0, true, &p, 0).count(), 1);
        p.event = 2;
        p.end = true;
        let ev: Vec<_> = rx.on_packet(2000, false, &p, 250).collect();
        assert_eq!(ev.len(), 3);
        assert!(matches!(
            ev[0],
            DtmfEvent::Ended {
                digit: '1',
                reason: EndReason::Superseded,
                ..
            }
        ));
        assert!(matches!(ev[1], DtmfEvent::Began { digit: '2', .. }));
        assert!(matches!(ev[2], DtmfEvent::Ended { digit: '2', .. }));
    }

    #[test]
    fn non_dtmf_events_are_ignored() {
        let mut rx = DtmfReceiver::new(200);
        let p = EventPayload {
            event: 16,
            end: false,
            volume: 0,
            duration: 160,
        };
        assert_eq!(rx.on_packet(0, true, &p, 0).count(), 0);
        assert_eq!(rx.stats().ignored, 1);
    }
}
