//! What travels on a lane's rings: slot types of the three slabs, stage messages and
//! the command bundle.

use super::slab::Token;
use crate::codec::Codec;
use crate::processing::format::resample::Resampler;
use crate::rtp::RtpHeader;
use crate::session::{DecodePart, DspPart, EncodePart, JitterPart, Route};
use crate::types::SessionId;

/// A received packet, copied in by the ingress handle. The jitter stage fills the parsed fields.
#[derive(Debug)]
pub struct PacketSlot {
    /// Session the transport addressed it to (packed [`SessionId`]).
    pub session: u64,
    /// Arrival time reported by the transport (ns, transport's clock; 0 if unknown).
    pub arrival_ns: u64,
    /// Bytes used in `bytes`.
    pub len: usize,
    /// The raw RTP packet.
    pub bytes: Box<[u8]>,
    /// Parsed: payload offset in `bytes`.
    pub payload_offset: usize,
    /// Parsed: payload length (padding removed).
    pub payload_len: usize,
    /// Parsed: payload type.
    pub payload_type: u8,
}

impl PacketSlot {
    /// An empty slot able to hold `max_packet_bytes`. Control plane.
    pub fn new(max_packet_bytes: usize) -> Self {
        PacketSlot {
            session: 0,
            arrival_ns: 0,
            len: 0,
            bytes: touched(max_packet_bytes),
            payload_offset: 0,
            payload_len: 0,
            payload_type: 0,
        }
    }

    /// The parsed payload.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.bytes[self.payload_offset..self.payload_offset + self.payload_len]
    }
}

/// A frame of audio (or of relayed payload) between decode and encode.
#[derive(Debug)]
pub struct FrameSlot {
    /// PCM samples (the first `samples` are valid).
    pub pcm: Box<[i16]>,
    /// Valid samples.
    pub samples: usize,
    /// Encoded payload for relay (the first `payload_len` bytes are valid).
    pub payload: Box<[u8]>,
    /// Valid payload bytes; used when `relay` is set.
    pub payload_len: usize,
    /// The frame carries an encoded payload to relay instead of PCM.
    pub relay: bool,
    /// The codec of that payload (the encode stage relays it only to a session sending
    /// that codec: a re-INVITE may have changed the destination's since the route was
    /// read).
    pub relay_codec: Codec,
    /// The frame's stream goes to its destination undecoded (a G.722 or Opus relay) and
    /// its PCM is a talkspurt's first frame or has no packet decoded into it (comfort
    /// noise, concealment): the far end's decoder follows the source's encoder, so the
    /// destination's encoder, once it has been relaying (`EncodePart::relayed`), does not
    /// encode it.
    pub undecoded_stream: bool,
    /// The frame's part in a silence its source signalled with RFC 3389 SIDs, in a stream
    /// relayed (see [`FrameSid`]).
    pub sid: FrameSid,
    /// First frame of a talkspurt or (re)started stream.
    pub marker: bool,
    /// The source leg's voice-activity detector found no speech in it (DTX may send a
    /// comfort-noise SID frame or nothing in its place). False without a detector.
    pub silence: bool,
    /// Receive RTP timestamp of the audio in this frame (latency measurement).
    pub src_ts: u32,
    /// When this frame's audio left the jitter buffer: the start of the tick that played
    /// it, on the lane's clock (latency measurement).
    pub played_ns: u64,
    /// Where the frame comes from or goes when a session is attached to the lane's
    /// application audio handle instead of a bridged peer.
    pub app: AppFrame,
}

/// A frame's part in a silence its source signalled with RFC 3389 SIDs, in a stream relayed
/// to a destination sending the source's codec: what the destination forwards or holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FrameSid {
    /// Nothing of the kind.
    #[default]
    No,
    /// `payload[..payload_len]` is a SID the source sent (its level byte and up to 10
    /// reflection coefficients: RFC 3389 §3 lets the order be reduced), on the first frame
    /// period without a packet in the silence it begins (with no audio, `samples` 0, in a
    /// gap of the jitter buffer): a destination that negotiated comfort noise forwards it,
    /// so the far end plays the source's background instead of silence.
    Sid,
    /// Comfort noise played through that silence in a G.711 relay after the SID went with
    /// an earlier frame: a destination that forwarded it sends nothing (the far end plays
    /// it from the SID), one that did not encodes it. (An undecoded relay's frames of the
    /// kind are `undecoded_stream` already.)
    Silence,
}

/// A frame's part in an application's audio (`MediaEngine::attach_audio`): both kinds
/// travel with `src == dst ==` the attached session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AppFrame {
    /// A bridged (or echo) session's frame: processed on `src`, encoded by `dst`.
    #[default]
    No,
    /// Audio received on the session, processed by its chain, then handed to the
    /// application (the encode stage copies it into an application frame slot).
    ToApp,
    /// Audio the application wrote for the session to send: no receive processing; the
    /// session's echo canceller takes it as its reference; then encoded and sent.
    FromApp,
}

/// One frame of PCM between a lane and an application's audio handle (either way).
#[derive(Debug)]
pub struct AppFrameSlot {
    /// The session (`SessionId::to_u64`).
    pub session: u64,
    /// Valid samples (all channels, interleaved).
    pub samples: usize,
    /// The attachment of the session it was written for (frames to the lane): the
    /// application table's epoch when it was written.
    pub epoch: u8,
    /// Samples.
    pub pcm: Box<[i16]>,
    /// Receive RTP timestamp of the audio (frames to the application).
    pub src_ts: u32,
    /// Start of the tick that played the audio out of the jitter buffer, lane clock
    /// (frames to the application).
    pub played_ns: u64,
}

impl AppFrameSlot {
    /// An empty slot for frames of up to `max_samples`. Control plane.
    pub fn new(max_samples: usize) -> Self {
        AppFrameSlot {
            session: 0,
            samples: 0,
            epoch: 0,
            pcm: touched(max_samples),
            src_ts: 0,
            played_ns: 0,
        }
    }
}

impl FrameSlot {
    /// The frame carries no audio: an undecoded relay's payload, or only a SID to forward.
    #[inline]
    pub fn no_audio(&self) -> bool {
        self.samples == 0 && (self.relay || self.sid == FrameSid::Sid)
    }

    /// An empty frame slot. Control plane.
    pub fn new(max_samples: usize, max_payload_bytes: usize) -> Self {
        FrameSlot {
            pcm: touched(max_samples),
            samples: 0,
            payload: touched(max_payload_bytes),
            payload_len: 0,
            relay: false,
            relay_codec: Codec::Pcmu,
            undecoded_stream: false,
            sid: FrameSid::No,
            marker: false,
            silence: false,
            src_ts: 0,
            played_ns: 0,
            app: AppFrame::No,
        }
    }
}

/// An RTP packet produced for sending.
#[derive(Debug)]
pub struct EgressSlot {
    /// The session it belongs to.
    pub session: SessionId,
    /// Its header fields.
    pub header: RtpHeader,
    /// Receive RTP timestamp (of the other leg) of the audio it carries.
    pub src_ts: u32,
    /// When that audio left the jitter buffer (the playing tick's start, lane clock).
    pub played_ns: u64,
    /// Bytes used in `bytes`.
    pub len: usize,
    /// The whole RTP packet (header + payload).
    pub bytes: Box<[u8]>,
}

impl EgressSlot {
    /// An empty slot. Control plane.
    pub fn new(max_packet_bytes: usize) -> Self {
        EgressSlot {
            session: SessionId::from_parts(0, 0, 0),
            header: RtpHeader {
                marker: false,
                payload_type: 0,
                sequence: 0,
                timestamp: 0,
                ssrc: 0,
            },
            src_ts: 0,
            played_ns: 0,
            len: 0,
            bytes: touched(max_packet_bytes),
        }
    }
}

/// What a command does at each stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Install a new session in `slot` (every part present).
    Create,
    /// Swap in the present parts, keeping the receive stream's identity and statistics
    /// and the RTP send state (the receive buffer is emptied: its packets may be of the old
    /// codec).
    Update,
    /// Remove the session; each stage moves its part into the bundle.
    Destroy,
    /// Set the decode route of `slot`.
    Route,
    /// No effect on sessions; used to wait for everything queued before it.
    Barrier,
    /// Retune a live session (jitter bounds, Opus encoder settings) without rebuilding it.
    Tune,
    /// Send an RFC 4733 telephone event on the session (encode stage).
    Dtmf,
    /// Fault injection: the decode stage panics when it applies this, as a codec bug
    /// would (tests and drills of the lane-failure policy).
    Fault,
}

/// The event an [`Op::Dtmf`] command sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtmfCommand {
    /// RFC 4733 event code (0-15: DTMF digits).
    pub event: u8,
    /// Volume, -dBm0 (0-63).
    pub volume: u8,
    /// Duration, ms.
    pub duration_ms: u32,
}

/// Settings a [`Op::Tune`] command changes in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tune {
    /// New jitter buffer minimum and maximum delay, ms (applied by the decode stage).
    pub jitter_ms: Option<(u32, u32)>,
    /// Opus encoder changes (applied by the encode stage; ignored for other codecs).
    pub opus: Option<crate::codec::OpusTune>,
}

/// A control-plane command travelling down the lane with the data, so it is applied
/// by each stage in order with the frames around it. The bundle returns to the control
/// plane on the retire ring, carrying whatever the stages retired, and is freed there.
#[derive(Debug)]
pub struct Bundle {
    /// Command sequence number (acknowledged by the last stage).
    pub seq: u64,
    /// Operation.
    pub op: Op,
    /// Session id concerned.
    pub id: SessionId,
    /// Jitter part (in: new; out: retired).
    pub jitter: Option<JitterPart>,
    /// Decode part.
    pub decode: Option<DecodePart<Token>>,
    /// DSP part.
    pub dsp: Option<DspPart>,
    /// Encode part.
    pub encode: Option<EncodePart>,
    /// For [`Op::Route`]: the new route.
    pub route: Option<Route>,
    /// For [`Op::Tune`]: the new settings.
    pub tune: Option<Tune>,
    /// For [`Op::Dtmf`]: the event to send.
    pub dtmf: Option<DtmfCommand>,
    /// For [`Op::Route`]: the sample-rate converter towards the new destination (in), the
    /// previous one (out, retired).
    pub resampler: Option<Box<Resampler>>,
    /// For [`Op::Update`]: the encode part starts a new RTP stream (its own SSRC, sequence
    /// and timestamp, as built) instead of continuing the session's: the send clock rate
    /// changed (RFC 7160 §4.1).
    pub new_stream: bool,
    /// For [`Op::Update`]: the SSRC was given (`tx_ssrc`), so the encode part sends with
    /// the one it was built with even where the stream continues (sequence, timestamp).
    pub ssrc_given: bool,
    /// For [`Op::Update`], set by the jitter stage: the RFC 4733 receiver went on across
    /// the update (events come the same way), so a digit being received and forwarded
    /// goes on too: the decode stage leaves it open for its own end.
    pub digit_kept: bool,
}

impl Bundle {
    /// An empty bundle for `op` on `id`. Control plane.
    pub fn new(seq: u64, op: Op, id: SessionId) -> Box<Self> {
        Box::new(Bundle {
            seq,
            op,
            id,
            jitter: None,
            decode: None,
            dsp: None,
            encode: None,
            route: None,
            tune: None,
            dtmf: None,
            resampler: None,
            new_stream: false,
            ssrc_given: false,
            digit_kept: false,
        })
    }
}

/// Jitter stage → decode stage.
#[derive(Debug)]
pub enum ToDecode {
    /// A received packet for session `slot`'s jitter buffer.
    Packet {
        /// Session slot.
        slot: u32,
        /// Packet slot.
        pkt: Token,
        /// RTP timestamp.
        ts: u32,
        /// RTP marker bit.
        marker: bool,
        /// The SSRC changed: a new stream starts with this packet.
        new_stream: bool,
        /// Arrival time (ns, transport's monotonic clock; 0 if unknown).
        arrival_ns: u64,
    },
    /// An RFC 4733 digit began (`begin`) or ended on session `slot`: forwarded to the
    /// bridged leg's sender.
    Dtmf {
        /// Session slot the digit arrived on.
        slot: u32,
        /// RFC 4733 event code.
        event: u8,
        /// True when it began, false when it ended.
        begin: bool,
        /// On an end: the digit's duration as received, ms (0: not known); the
        /// forwarded digit lasts at least this long.
        duration_ms: u16,
    },
    /// An RFC 3389 SID frame on session `slot`: the comfort-noise level (RMS, sample
    /// units) and spectrum for the silence that follows.
    ComfortNoise {
        /// Session slot.
        slot: u32,
        /// Its RTP timestamp: where the sender's silence begins.
        ts: u32,
        /// Its sequence number was already received (not to be forwarded again).
        duplicate: bool,
        /// The level byte as received (-dBov, 0..=127), for forwarding.
        level_dbov: u8,
        /// Signalled noise RMS.
        rms: f32,
        /// Reflection coefficients in Q7 (RFC 3389 §3.2, `round(128 k)`); `order` used.
        reflection: [i8; 10],
        /// Coefficients present (0: level only, keep the estimated shape).
        order: u8,
    },
    /// A command.
    Cmd(Box<Bundle>),
}

/// Transport → jitter stage: a received packet's slot and the session slot the transport
/// addressed it to (as in the packet slot's `session`), so that the stage can start
/// loading the session's state from this ring item alone, without first waiting for the
/// packet's slot. The slot's `session` stays the authority (lane and generation checked).
#[derive(Debug)]
pub struct Arrival {
    /// The packet's slot in the ingress slab.
    pub token: Token,
    /// Session slot within the lane (a hint for prefetching only).
    pub slot: u32,
}

/// Jitter stage → decode stage, on its own ring: play the sessions due at `tick` among
/// slots `from..to`. One message covers a whole chunk of sessions; the decode stage applies
/// everything on the packet ring first, so packets and commands pushed before it are seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlayRange {
    /// Lane tick.
    pub tick: u64,
    /// When the tick started, on the lane's clock (see [`crate::runtime::lane::JitterStage::begin_tick`]).
    pub at_ns: u64,
    /// First slot.
    pub from: u32,
    /// One past the last slot.
    pub to: u32,
}

/// Decode → DSP → encode.
#[derive(Debug)]
pub enum Downstream {
    /// A frame from session `src` for the encoder of session `dst`.
    Frame {
        /// Receiving session.
        src: u32,
        /// Sending session.
        dst: u32,
        /// Frame slot.
        frame: Token,
    },
    /// Nothing this period from `src` for `dst`.
    Missing {
        /// Receiving session.
        src: u32,
        /// Sending session.
        dst: u32,
    },
    /// A telephone event from `src`'s stream to be sent on by `dst` (RFC 4733 → RFC 4733
    /// when `dst` negotiated telephone-event).
    Dtmf {
        /// Sending session.
        dst: u32,
        /// RFC 4733 event code.
        event: u8,
        /// True when it began, false when it ended.
        begin: bool,
        /// On an end: the digit's duration as received, ms (0: not known); the
        /// forwarded digit lasts at least this long.
        duration_ms: u16,
    },
    /// A command.
    Cmd(Box<Bundle>),
}

/// What lanes report to the control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LaneEvent {
    /// A session was installed on its lane and is processing.
    SessionStarted(SessionId),
    /// A session was removed from its lane; its final counters are still readable until
    /// its slot is reused.
    SessionStopped(SessionId),
    /// A tick finished after its deadline.
    DeadlineOverrun {
        /// Lane.
        lane: u16,
        /// Tick number.
        tick: u64,
        /// How late it finished, ns.
        late_ns: u64,
    },
    /// The lane could not be pinned to its core (reported once; the lane still runs).
    PinFailed {
        /// Lane.
        lane: u16,
        /// The core requested.
        core: usize,
    },
    /// The lane could not raise its thread priority (reported once; the lane still runs).
    PriorityFailed {
        /// Lane.
        lane: u16,
    },
    /// A lane thread panicked (a bug, e.g. in a codec): the lane stopped, its sessions
    /// are gone (each reported by a [`LaneEvent::SessionStopped`] after this event), and no
    /// new session is placed on it. The other lanes run on. The control plane re-creates
    /// the calls it still wants; they land on the remaining lanes.
    LaneFailed {
        /// Lane.
        lane: u16,
        /// Sessions that were live on it.
        sessions_lost: u32,
    },
    /// A DTMF digit began or ended on a session's receive stream.
    Dtmf {
        /// The session.
        session: SessionId,
        /// '0'..='9', '*', '#', 'A'..='D'.
        digit: char,
        /// Where the digit was found.
        source: DtmfSource,
        /// `None` when the digit began; its duration in ms when it ended.
        ended_ms: Option<u32>,
    },
    /// Voice activity on a session's received audio started or stopped (sessions whose
    /// DSP chain runs a VAD).
    Talkspurt {
        /// The session.
        session: SessionId,
        /// True at the start of speech, false at its end.
        speaking: bool,
    },
}

/// How a DTMF digit reached media-core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtmfSource {
    /// RFC 4733 telephone-event packets.
    Rfc4733,
    /// Tones in the audio, found by the session's DTMF detector (ITU-T Q.24).
    InBand,
}

/// A zeroed buffer whose pages are already mapped: `vec![0; n]` may come from fresh
/// zero pages the kernel maps only on first write, which would then happen on a lane
/// thread (a page fault per 4 KiB in real time). Each page is written here, on the
/// control plane; the stored value is opaque to the optimiser so the writes are kept.
pub(crate) fn touched<T: Copy + Default>(n: usize) -> Box<[T]> {
    let mut v = vec![T::default(); n].into_boxed_slice();
    let stride = (4096 / std::mem::size_of::<T>().max(1)).max(1);
    let mut i = 0;
    while i < n {
        v[i] = std::hint::black_box(T::default());
        i += stride;
    }
    if let Some(last) = v.last_mut() {
        // A small buffer may straddle a page boundary.
        *last = std::hint::black_box(T::default());
    }
    v
}
