//! A media session's state, split by the lane stage that owns each part.
//!
//! The control plane builds a [`SessionParts`] (every allocation happens there) and the
//! lane's stages each take their part: the jitter stage the receive buffer, the decode
//! stage the decoders and bridge route, the DSP stage the processing chain, the encode
//! stage the encoder and the RTP send state. In a split lane each part is touched by one
//! thread only; in a fused lane all by the same thread.

pub mod receive;

use arrayvec::ArrayVec;

use crate::buffer::adaptive::JitterConfig;
use crate::codec::audio::comfort_noise::level_dbov;
use crate::codec::audio::telephone_event::{DtmfReceiver, DtmfSender};
use crate::codec::negotiation::{CodecKind, NegotiatedMedia, RtpMap};
use crate::codec::{AnyDecoder, AnyEncoder, Codec, CodecSpec, OpusSettings};
use crate::error::Error;
use crate::processing::audio::dtmf_detector::{DtmfGenerator, DtmfGeneratorConfig};
use crate::processing::audio::{DspChain, DspConfig};
use crate::quality::rtp_stats::RtpReceiveStats;
use crate::types::{PayloadType, Ptime, SampleRate};
use receive::{ReceiveChannel, ReceiveConfig};

/// Most payload types one session accepts on receive (its negotiated rtpmap set).
pub const MAX_RX_CODECS: usize = 4;

/// What a session sends and receives (control plane input).
#[derive(Debug, Clone, PartialEq)]
pub struct MediaSessionParams {
    /// The codec and payload type this session sends.
    pub tx: CodecSpec,
    /// Payload types accepted on receive. Empty means "the same as `tx`". A sender may
    /// switch among these at any packet without signalling (RFC 3264 §5.1).
    pub rx: ArrayVec<CodecSpec, MAX_RX_CODECS>,
    /// Packetisation time of both directions.
    pub ptime: Ptime,
    /// SSRC to send with; `None` lets the engine pick one.
    pub tx_ssrc: Option<u32>,
    /// Jitter buffer delay bounds and initial delay; `None` uses the engine default. The
    /// clock rate field is ignored (it comes from the codec).
    pub jitter: Option<JitterConfig>,
    /// Payload type of RFC 4733 telephone events on receive, if negotiated. These packets
    /// are routed to DTMF handling, never into the audio jitter buffer.
    pub telephone_event_pt: Option<PayloadType>,
    /// Payload type of RFC 3389 comfort noise on receive, if negotiated: SID frames set the
    /// level of the comfort noise played through the sender's silence.
    pub comfort_noise_pt: Option<PayloadType>,
    /// Payload type to send RFC 4733 telephone events with
    /// ([`MediaEngine::send_dtmf`](crate::MediaEngine::send_dtmf)), if negotiated (the
    /// answer's number, which may differ from the receive one).
    pub telephone_event_send_pt: Option<PayloadType>,
    /// Payload type to send RFC 3389 comfort noise with, if negotiated (the answer's
    /// number): used by [`MediaSessionParams::dtx`], by keepalives, and to forward the
    /// SIDs of a bridged peer's stream this session relays (the far end's comfort noise
    /// then follows the source's). Through the source's signalled silence a relay that has
    /// it sends those SIDs and nothing else; without it, a G.722 or Opus stream relayed
    /// undecoded sends nothing there and a G.711 relay sends its own comfort noise,
    /// encoded. (A far end that negotiates comfort noise but does not play it hears
    /// silence: do not offer it such a peer.)
    pub comfort_noise_send_pt: Option<PayloadType>,
    /// Discontinuous transmission (RFC 3389): while the voice-activity detector of the
    /// leg whose audio this session sends (its bridged peer's `dsp.vad`) finds silence
    /// for 400 ms or more, send a comfort-noise SID frame (the noise's smoothed level and
    /// spectrum) then, when that level moves by 3 dB or more and at least every 500 ms,
    /// and no audio packets in between; the first audio packet after it has the marker
    /// bit.
    /// Needs `comfort_noise_send_pt`; not for Opus, which has its own DTX
    /// (`opus.dtx`). Off by default.
    pub dtx: bool,
    /// RTP keepalive, ms (0: off, the default). When this session has sent no packet for
    /// this long because the audio it sends has no source (a bridged peer that sends
    /// nothing: on hold, muted or in silence suppression without comfort noise; an
    /// application that stopped writing; a parked call), it sends one packet on its stream
    /// and starts counting again: an RFC 3389 SID frame at -127 dBov (silence) when
    /// `comfort_noise_send_pt` is negotiated, else one frame of the send codec's encoded
    /// silence, with the stream's next sequence number and timestamp; a G.722 or Opus
    /// stream relayed undecoded sends an empty payload instead (12 bytes: the far end's
    /// decoder follows the source's encoder state, and silence from this session's
    /// encoder would decode there as a decaying echo of the last sound). It keeps a far end's media timeout from ending the call (many phones and
    /// SBCs hang up after some seconds without RTP) and NAT bindings open. Rounded to whole
    /// frame periods (at least one); DTX's own SID refreshes and RFC 4733 events are
    /// packets sent, so they keep the stream alive by themselves.
    pub keepalive_ms: u32,
    /// Voice processing applied to audio received on this session.
    pub dsp: DspConfig,
    /// Opus encoder settings when `tx` is Opus (from the negotiated fmtp, or defaults).
    pub opus: OpusSettings,
}

impl MediaSessionParams {
    /// The session an offer/answer settled on: send the negotiated codec on the other
    /// side's payload type with its Opus fmtp applied to our encoder (`useinbandfec`,
    /// `usedtx`, `maxaveragebitrate` caps the bitrate), accept every negotiated voice payload type at
    /// the send codec's sample rate and RTP clock rate (a peer may switch among them
    /// without signalling; other rates need a new offer), RFC 4733 events on our receive payload type, and the
    /// negotiated ptime. No processing (set `dsp` afterwards).
    ///
    /// Errors: [`Error::UnsupportedParameters`] when the send codec is not a voice codec
    /// media-core runs or the ptime is not one it supports.
    pub fn from_negotiated(m: &NegotiatedMedia) -> Result<Self, Error> {
        let spec = |r: &RtpMap| -> Option<CodecSpec> {
            let codec = match r.kind()? {
                CodecKind::Pcmu => Codec::Pcmu,
                CodecKind::Pcma => Codec::Pcma,
                CodecKind::G722 => Codec::G722,
                CodecKind::Opus => Codec::Opus,
                _ => return None,
            };
            Some(CodecSpec {
                payload_type: PayloadType::new(r.pt)?,
                codec,
            })
        };
        let tx = spec(&m.send).ok_or(Error::UnsupportedParameters {
            codec: Codec::Pcmu,
            reason: "the negotiated send codec is not a voice codec media-core runs",
        })?;
        let ptime = Ptime::from_ms(m.ptime_ms).ok_or(Error::UnsupportedParameters {
            codec: tx.codec,
            reason: "negotiated ptime is not 10, 20, 30, 40 or 60 ms",
        })?;
        // Opus has no 30 ms packets (RFC 6716 frame sizes); ptime is only a preference
        // (RFC 4566 §6), so such a session sends 20 ms.
        let ptime = if tx.codec == Codec::Opus && ptime == Ptime::MS_30 {
            Ptime::MS_20
        } else {
            ptime
        };
        let mut p = MediaSessionParams::new(tx, ptime);
        if let (Codec::Opus, Some(o)) = (tx.codec, &m.opus) {
            // RFC 7587 §6.1: the peer plays back at most `maxplaybackrate` and captures at
            // most `sprop-maxcapturerate`; running the session above the larger of the two
            // carries nothing more, so decode and encode at the smallest Opus rate that
            // keeps both.
            p.opus.sample_rate = OpusSettings::rate_at_least(
                o.max_playback_rate_hz.max(o.sprop_max_capture_rate_hz),
            );
        }
        let rate = p.sample_rate();
        let clock = tx.codec.info().clock_rate_hz;
        for r in &m.receive {
            // One rate and one RTP clock per stream: a packet on another clock (PCMU's
            // 8 kHz beside Opus's 48 kHz in an Opus session narrowed to 8 kHz) would land
            // on the jitter buffer's timeline at the wrong place (measured: 42 of 50 PCMU
            // packets late). `MediaEngine` refuses such a receive set.
            if let Some(c) = spec(r)
                .filter(|c| p.decode_rate(c.codec) == rate && c.codec.info().clock_rate_hz == clock)
            {
                if !p.rx.is_full() && !p.rx.contains(&c) {
                    p.rx.push(c);
                }
            }
        }
        if !p.rx.is_empty() && !p.rx.iter().any(|c| c.codec == tx.codec) {
            // Invariant: fewer than MAX_RX_CODECS or it would have held tx's codec.
            let _ = p.rx.try_push(tx);
        }
        p.telephone_event_pt = m
            .telephone_event_recv
            .first()
            .and_then(|&pt| PayloadType::new(pt));
        p.telephone_event_send_pt = m.telephone_event_send.and_then(PayloadType::new);
        p.comfort_noise_send_pt = m.cn.and_then(PayloadType::new);
        p.comfort_noise_pt = m
            .receive
            .iter()
            .find(|r| r.kind() == Some(CodecKind::ComfortNoise))
            .and_then(|r| PayloadType::new(r.pt));
        if let Some(o) = &m.opus {
            p.opus = OpusSettings {
                inband_fec: o.use_inband_fec,
                dtx: o.use_dtx,
                bitrate_bps: o
                    .max_average_bitrate_bps
                    .map_or(p.opus.bitrate_bps, |b| p.opus.bitrate_bps.min(b as i32)),
                // `stereo=1` is a preference; mono is always acceptable (RFC 7587 §6.1).
                // The engine's audio is mono, so two identical channels would spend bits
                // on nothing: left off (set `opus.stereo` to send stereo anyway).
                ..p.opus
            };
        }
        Ok(p)
    }

    /// A session sending and receiving `codec` at `ptime`, no processing.
    pub fn new(codec: CodecSpec, ptime: Ptime) -> Self {
        MediaSessionParams {
            tx: codec,
            rx: ArrayVec::new(),
            ptime,
            tx_ssrc: None,
            jitter: None,
            telephone_event_pt: None,
            telephone_event_send_pt: None,
            comfort_noise_pt: None,
            comfort_noise_send_pt: None,
            dtx: false,
            keepalive_ms: 0,
            dsp: DspConfig::default(),
            opus: OpusSettings::default(),
        }
    }

    /// The audio rate the session processes at: the send codec's rate, or for Opus the
    /// rate chosen in [`OpusSettings::sample_rate`] (the RTP clock is unaffected).
    pub fn sample_rate(&self) -> SampleRate {
        match self.tx.codec {
            Codec::Opus => self.opus.sample_rate,
            c => c.info().sample_rate,
        }
    }

    /// Samples in one frame at [`sample_rate`](Self::sample_rate).
    pub fn frame_samples(&self) -> usize {
        self.sample_rate().samples_in(self.ptime)
    }

    /// The rate a receive codec decodes to in this session: Opus decodes to the session's
    /// rate; the others have only their own.
    pub fn decode_rate(&self, codec: Codec) -> SampleRate {
        match codec {
            Codec::Opus => self.sample_rate(),
            c => c.info().sample_rate,
        }
    }

    /// Adds an accepted receive payload type (builder style).
    pub fn with_rx(mut self, spec: CodecSpec) -> Self {
        if !self.rx.contains(&spec) && !self.rx.is_full() {
            self.rx.push(spec);
        }
        self
    }

    /// The receive set, with the empty-means-tx rule applied.
    pub fn rx_codecs(&self) -> ArrayVec<CodecSpec, MAX_RX_CODECS> {
        if self.rx.is_empty() {
            let mut v = ArrayVec::new();
            v.push(self.tx);
            v
        } else {
            self.rx.clone()
        }
    }
}

/// Jitter-stage part: receive filtering, stream identity and the playout schedule.
///
/// `repr(C, align(64))`: the fields an ordinary packet reads, then the receive
/// statistics, whose own hot fields come first, so that a packet touches only the
/// first [`JitterPart::HOT_BYTES`] (two cache lines) of its session's part; the
/// statistics' cold fields fill the third line.
#[derive(Debug)]
#[repr(C, align(64))]
pub struct JitterPart {
    /// SSRC of the current receive stream (`None` until the first packet).
    pub rx_ssrc: Option<u32>,
    /// Accepted receive payload types.
    pub rx_pts: ArrayVec<u8, MAX_RX_CODECS>,
    /// RFC 4733 telephone-event payload type, if negotiated.
    pub telephone_event_pt: Option<u8>,
    /// RFC 3389 comfort-noise payload type, if negotiated.
    pub cn_pt: Option<u8>,
    /// Generation of the session this part belongs to.
    pub generation: u32,
    /// Frame period in lane ticks.
    pub ptime_ticks: u16,
    /// Which tick within the period this session plays on (spreads load).
    pub phase: u16,
    /// Packets of another source (`ssrc_candidate`) that came in a row since the current
    /// source's last: it takes over at two, or at one with the marker bit.
    pub candidate_run: u8,
    /// Telephone-event clock rate (the audio codec's RTP clock), Hz.
    pub dtmf_clock_hz: u32,
    /// RFC 4733 receiver (deduplication, end detection, lost-end timeout).
    pub dtmf: Box<DtmfReceiver>,
    /// Packets expected and lost by the streams before the current one (an SSRC change
    /// starts `stats` over): the session's counters are these plus the current stream's.
    pub earlier_streams: (u64, u64),
    /// RFC 3550 receive statistics of the current stream.
    pub stats: RtpReceiveStats,
    /// The other source seen on the session (see `candidate_run`; out of the per-packet
    /// lines: read only for another source's packets).
    pub ssrc_candidate: u32,
    /// The source whose RFC 4733 events the session follows (`None` until the first):
    /// the audio's, or a source that sends only events (gateways that send DTMF under an
    /// SSRC of its own). Another source's events take over when one starts an event
    /// (marker), or when two of its updates come in a row (its marker packet was lost);
    /// its other packets are dropped, so two sources' events never interleave.
    pub dtmf_ssrc: Option<u32>,
    /// The source whose event update was the last event packet, if not `dtmf_ssrc`'s;
    /// equal to `dtmf_ssrc` when there is none (see [`JitterPart::follow_events_of`]).
    pub dtmf_candidate: u32,
}

impl JitterPart {
    /// Packets expected over the session's streams (RFC 3550 A.3 for each).
    #[inline]
    pub fn expected(&self) -> u64 {
        self.earlier_streams.0 + self.stats.expected()
    }

    /// Packets lost over the session's streams: each stream's sequence numbers never
    /// received ([`RtpReceiveStats::distinct_lost`]: duplicates do not offset losses).
    #[inline]
    pub fn lost(&self) -> u64 {
        self.earlier_streams.1 + self.stats.distinct_lost()
    }

    /// A new stream starts (SSRC change): the current one's counts join the earlier ones
    /// and the statistics start over; `loss` classifies the old stream's last positions.
    pub fn start_stream(&mut self, loss: &mut impl crate::quality::rtp_stats::LossObserver) {
        self.earlier_streams = (self.expected(), self.lost());
        self.stats.reset_observed(loss);
    }

    /// The session's RFC 4733 events are `ssrc`'s from now on (no other source's update
    /// pending).
    pub fn follow_events_of(&mut self, ssrc: u32) {
        self.dtmf_ssrc = Some(ssrc);
        self.dtmf_candidate = ssrc;
    }

    /// Another source's RFC 4733 packet (not `dtmf_ssrc`'s, which is `Some`): whether its
    /// events take over now. They do when it starts an event (`marker`), or at the second
    /// of two `fresh` packets of it in a row, with no packet of the followed source's
    /// events between: a new source whose marker packet was lost (a gateway sending
    /// events under an SSRC of its own). `fresh`: an update (not an end packet) of an
    /// event begun moments ago, while no digit of the followed source is held. So the
    /// packets of two sources sending at once (forked early media) interleave, an old
    /// source still holding a key after a new one took over (a transfer) never takes the
    /// events back (its digit would begin a second time), and a stray end packet or its
    /// repeats, back to back, start nothing.
    pub fn events_take_over(&mut self, ssrc: u32, marker: bool, fresh: bool) -> bool {
        if marker || (fresh && self.dtmf_candidate == ssrc) {
            return true;
        }
        self.dtmf_candidate = if fresh {
            ssrc
        } else {
            self.dtmf_ssrc.unwrap_or(ssrc)
        };
        false
    }
}

impl JitterPart {
    /// Bytes at the start of the part that an ordinary audio packet reads or writes: what
    /// the lane prefetches for a packet ahead.
    pub const HOT_BYTES: usize =
        std::mem::offset_of!(JitterPart, stats) + RtpReceiveStats::HOT_BYTES;

    /// True if `pt` is negotiated for receive audio.
    #[inline]
    pub fn accepts(&self, pt: u8) -> bool {
        self.rx_pts.contains(&pt)
    }
}

/// Where a session's decoded audio goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// Slot of the session whose encoder receives the audio (may be the same session: echo).
    pub dst_slot: u32,
    /// That session's send codec, to decide payload relay.
    pub dst_codec: Codec,
    /// True if the destination sends this stream's codec (and relaying is enabled), so
    /// payloads may pass through unchanged.
    pub relay_ok: bool,
    /// The destination's echo canceller takes this audio as its reference: a relayed
    /// frame must still carry it decoded (no undecoded relay).
    pub dst_needs_audio: bool,
    /// The session is attached to its lane's application audio handle
    /// (`MediaEngine::attach_audio`): `dst_slot` is its own slot, its received audio goes
    /// to the application and what the application writes for it is what it sends.
    pub app: bool,
    /// With `app`: which attachment of the session this is (the engine counts them), so
    /// frames written for an earlier one are not sent for this one. 0 otherwise.
    pub epoch: u8,
}

/// Marks a [`DecodePart`] as present, in its first bytes.
///
/// `Option<DecodePart>` stores `None` as an invalid value of one of the part's fields,
/// the one with the most invalid values. This one has all but one of a `u64`'s, more
/// than any other field (a `repr(u32)` marker lost to an option's tag widened to a
/// word inside the receive channel), so the decode stage's table tells a live slot from
/// an empty one at offset 0 of the entry, on the line its prefetches load first, and not
/// on line 17 inside the receive channel (a wait on memory for every packet at
/// thousands of sessions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum Present {
    /// The only value.
    Yes = 1,
}

/// Decode-stage part: the receive channel (jitter buffer, decoders, concealment).
///
/// `repr(C)`: [`Present`] first (see there), then the fields every packet and frame read.
#[derive(Debug)]
#[repr(C)]
pub struct DecodePart<T> {
    /// Always [`Present::Yes`]: where an empty slot's `None` is stored (see [`Present`]).
    pub present: Present,
    /// Frame period in lane ticks (the decode stage's copy of the schedule).
    pub ptime_ticks: u32,
    /// Tick within the period this session plays on.
    pub phase: u32,
    /// True when this session's DSP chain is the identity (relay allowed from here).
    pub dsp_passthrough: bool,
    /// The SIDs of the source's current silence, for a stream relayed undecoded to forward
    /// (the decode stage keeps the newest; see `FrameSlot::sid`).
    pub sid: SidState,
    /// Samples per frame.
    pub frame_samples: usize,
    /// Where decoded audio goes; `None` drops it (counted as no sink).
    pub route: Option<Route>,
    /// One decoder per accepted payload type (stateful codecs keep state per PT).
    pub decoders: ArrayVec<(u8, AnyDecoder), MAX_RX_CODECS>,
    /// Jitter buffer, concealment and time-scale modification.
    pub receive: ReceiveChannel<T>,
}

impl<T> DecodePart<T> {
    /// The decoder for payload type `pt`.
    #[inline]
    pub fn decoder(&mut self, pt: u8) -> Option<&mut AnyDecoder> {
        self.decoders
            .iter_mut()
            .find(|(p, _)| *p == pt)
            .map(|(_, d)| d)
    }
}

/// DSP-stage part.
#[derive(Debug)]
pub struct DspPart {
    /// Generation of the session this part belongs to (names it in events).
    pub generation: u32,
    /// The processing chain for audio received on this session.
    pub chain: DspChain,
    /// Converts this session's decoded audio to the bridged peer's sample rate (set with
    /// the route; `None` when the rates match).
    pub resampler: Option<Box<crate::processing::format::resample::Resampler>>,
    /// An in-band digit was reported begun and not yet ended (so its end is reported
    /// even after in-band reports stopped; see the DSP stage).
    pub inband_digit_open: bool,
    /// RFC 4733 telephone-event is negotiated for receive: once the peer sends events
    /// (beyond `events_base`), in-band digits are not reported a second time.
    pub events_negotiated: bool,
    /// The session's `rx_dtmf_packets` when these parameters took effect (0 at create;
    /// the DSP stage sets it on an update), so events before a re-INVITE (another peer
    /// after a transfer) do not silence in-band detection after it.
    pub events_base: u64,
}

/// Where a decode part stands with the RFC 3389 SIDs its source sends, for forwarding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SidState {
    /// None since the source's audio last played.
    None,
    /// One received, not yet forwarded.
    Pending,
    /// One forwarded in this silence: an older one arriving late is not forwarded after it.
    Forwarded,
}

/// What an encode part's stream last carried, as far as the far end's decoder state goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relayed {
    /// Nothing yet.
    Never,
    /// Audio of this session's encoder.
    No,
    /// A payload relayed from the source.
    Audio,
    /// A SID forwarded from the source (kept in the encode stage), after its relayed audio
    /// or as the first packet: keepalives repeat it, so the far end's comfort noise keeps
    /// the source's level rather than dropping to silence.
    Sid,
}

impl Relayed {
    /// The far end's decoder follows the source's encoder (or, after a SID forwarded
    /// first, will: nothing of this session's encoder went out).
    #[inline]
    pub fn any(self) -> bool {
        matches!(self, Relayed::Audio | Relayed::Sid)
    }
}

/// Encode-stage part: the encoder and the RTP send state media-core owns.
#[derive(Debug)]
pub struct EncodePart {
    /// Generation of the session this part belongs to.
    pub generation: u32,
    /// The encoder.
    pub encoder: AnyEncoder,
    /// Payload type sent.
    pub payload_type: PayloadType,
    /// SSRC sent.
    pub ssrc: u32,
    /// Next sequence number.
    pub sequence: u16,
    /// Timestamp of the next frame.
    pub timestamp: u32,
    /// Timestamp units per frame.
    pub timestamp_step: u32,
    /// Samples per frame.
    pub frame_samples: usize,
    /// Set the marker bit on the next packet (start of a talkspurt, RFC 3551 §4.1).
    pub marker_next: bool,
    /// RFC 4733 payload type to send telephone events with (`None`: not negotiated).
    pub dtmf_pt: Option<PayloadType>,
    /// The RFC 4733 sender (one event at a time; its packets replace audio meanwhile).
    pub dtmf: Box<DtmfSender>,
    /// RTP timestamp units per millisecond.
    pub ts_per_ms: u32,
    /// In-band DTMF toward a peer that negotiated no telephone-event: digits forwarded
    /// from the bridged leg are played as Q.23 tones in place of the audio (`None` when
    /// the session sends RFC 4733 instead).
    pub tones: Option<Box<ToneOut>>,
    /// A forwarded digit is playing from `tones` (set when one starts, cleared once its
    /// generator has finished): frames without one never touch the boxed generator, a
    /// cache miss per frame at thousands of sessions.
    pub tone_on: bool,
    /// Discontinuous transmission: the comfort-noise payload type SID frames go out with
    /// (`None`: audio is always sent). See [`MediaSessionParams::dtx`].
    pub dtx_pt: Option<PayloadType>,
    /// In a silence (DTX): the last frame was a SID or sent nothing.
    pub dtx_silent: bool,
    /// Level of the last SID sent, -dBov (what its payload carries).
    pub dtx_level: u8,
    /// The silence's smoothed level, 1/16 dB units of -dBov.
    pub dtx_avg: u16,
    /// Frames since the last SID (in a silence), or silent frames so far (before one).
    pub dtx_since_sid: u16,
    /// Frame periods without a packet after which a keepalive goes out
    /// ([`MediaSessionParams::keepalive_ms`]); 0: never.
    pub keepalive_frames: u16,
    /// Frame periods since the last packet sent (saturating).
    pub idle_frames: u16,
    /// Comfort noise negotiated for sending: keepalives go out as RFC 3389 SID frames with
    /// this payload type (else as a frame of encoded silence), and a stream relayed
    /// undecoded forwards its source's SIDs with it (`FrameSlot::sid`).
    pub cn_send_pt: Option<PayloadType>,
    /// Whether the last audio packet sent carried a relayed payload (the far end's decoder
    /// then follows the source's encoder, not this session's), and whether a SID
    /// forwarded from that source came after it.
    pub relayed: Relayed,
}

/// What [`EncodePart::dtx_frame`] decided for one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtxFrame {
    /// Send the audio (with the marker bit when `resumed`: the first after a silence).
    Audio {
        /// The frame ends a silence.
        resumed: bool,
    },
    /// Send a SID frame with this payload type.
    Sid(PayloadType),
    /// Send nothing (the timestamp still advances).
    Skip,
}

/// Silence the detector must report before DTX starts, ms: shorter pauses (between
/// words, the detector's own misses inside speech) are sent as audio. 400 ms: speech with
/// pink background noise through PCMU lost 0.03-0.14 PESQ to DTX with it, 0.18-0.31 with
/// 200 ms (PERF.md, voice section).
const DTX_HANGOVER_MS: u32 = 400;
/// SID refresh interval during a silence, ms.
const SID_REFRESH_MS: u32 = 500;
/// Level change that sends a new SID, dB.
const SID_LEVEL_STEP_DB: u8 = 3;

/// In-band tone generation state of an encode part (boxed: used only while a forwarded
/// digit plays).
#[derive(Debug)]
pub struct ToneOut {
    /// The Q.23 generator at the session's sample rate.
    pub generator: DtmfGenerator,
    /// One frame of tone, encoded in place of the audio.
    pub pcm: Box<[i16]>,
}

impl EncodePart {
    /// Decides what to send for a frame (DTX, see [`MediaSessionParams::dtx`]): `silence`
    /// is the source leg's voice-activity decision, `pcm` the frame. Audio when DTX is
    /// off. Called on the real-time thread; never allocates.
    #[inline]
    pub fn dtx_frame(&mut self, silence: bool, pcm: &[i16]) -> DtxFrame {
        let Some(pt) = self.dtx_pt else {
            return DtxFrame::Audio { resumed: false };
        };
        if !silence {
            self.dtx_since_sid = 0;
            let resumed = std::mem::take(&mut self.dtx_silent);
            return DtxFrame::Audio { resumed };
        }
        // The background's level, smoothed over the silence (from its first frame, the
        // hangover's included): one 20 ms frame of noise is several dB off its mean, and
        // each SID that followed it would step the far end's comfort noise.
        let level16 = u16::from(level_dbov(pcm)) * 16;
        if !self.dtx_silent && self.dtx_since_sid == 0 {
            self.dtx_avg = level16;
        } else {
            let a = i32::from(self.dtx_avg);
            self.dtx_avg = (a + (i32::from(level16) - a) / 8) as u16;
        }
        // Before the silence: counts its frames until the hangover has passed (pauses
        // between words go out as audio); in it: frames since the last SID.
        let elapsed_ts = (u32::from(self.dtx_since_sid) + 1) * self.timestamp_step;
        if !self.dtx_silent && elapsed_ts < DTX_HANGOVER_MS * self.ts_per_ms {
            self.dtx_since_sid += 1;
            return DtxFrame::Audio { resumed: false };
        }
        let level = ((self.dtx_avg + 8) / 16) as u8;
        let refresh = elapsed_ts >= SID_REFRESH_MS * self.ts_per_ms;
        if !self.dtx_silent || refresh || level.abs_diff(self.dtx_level) >= SID_LEVEL_STEP_DB {
            if !self.dtx_silent {
                // The last audio packet went out before the hangover's frames: none lost.
                self.dtx_silent = true;
            }
            self.dtx_level = level;
            self.dtx_since_sid = 0;
            DtxFrame::Sid(pt)
        } else {
            self.dtx_since_sid = self.dtx_since_sid.saturating_add(1);
            DtxFrame::Skip
        }
    }

    /// Returns the header fields for the next packet and advances sequence and timestamp.
    #[inline]
    pub fn next_header(&mut self, marker: bool) -> crate::rtp::RtpHeader {
        self.next_header_as(self.payload_type, marker)
    }

    /// [`EncodePart::next_header`] for a packet of payload type `pt` on the same stream
    /// (a comfort-noise SID frame).
    #[inline]
    pub fn next_header_as(&mut self, pt: PayloadType, marker: bool) -> crate::rtp::RtpHeader {
        let pending = std::mem::take(&mut self.marker_next);
        self.idle_frames = 0;
        let h = crate::rtp::RtpHeader {
            marker: marker || pending,
            payload_type: pt.get(),
            sequence: self.sequence,
            timestamp: self.timestamp,
            ssrc: self.ssrc,
        };
        self.sequence = self.sequence.wrapping_add(1);
        self.timestamp = self.timestamp.wrapping_add(self.timestamp_step);
        h
    }

    /// [`EncodePart::next_header_as`] for a SID inside a silence this session passes on (one
    /// forwarded from the source, or a keepalive repeating it): unmarked, and a marker
    /// pending for the talkspurt after the silence stays pending for its audio.
    #[inline]
    pub fn next_header_in_silence(&mut self, pt: PayloadType) -> crate::rtp::RtpHeader {
        let audio_marker = std::mem::take(&mut self.marker_next);
        let h = self.next_header_as(pt, false);
        self.marker_next = audio_marker;
        h
    }

    /// Advances the timestamp over a frame period that sends nothing (a lost frame), so
    /// the receiver sees the gap (RFC 3550 §5.1: timestamps track sampling time).
    #[inline]
    pub fn skip_frame(&mut self) {
        self.timestamp = self.timestamp.wrapping_add(self.timestamp_step);
        self.idle_frames = self.idle_frames.saturating_add(1);
    }

    /// True when this frame period, which has nothing to send, should send a keepalive
    /// instead ([`MediaSessionParams::keepalive_ms`]).
    #[inline]
    pub fn keepalive_due(&self) -> bool {
        self.keepalive_frames != 0 && self.idle_frames.saturating_add(1) >= self.keepalive_frames
    }
}

/// All parts of one session, as built by the control plane.
#[derive(Debug)]
pub struct SessionParts<T> {
    /// Jitter-stage part.
    pub jitter: JitterPart,
    /// Decode-stage part.
    pub decode: DecodePart<T>,
    /// DSP-stage part.
    pub dsp: DspPart,
    /// Encode-stage part.
    pub encode: EncodePart,
}

impl<T> SessionParts<T> {
    /// Builds every part for `params` (control plane: may allocate).
    pub fn build(
        params: &MediaSessionParams,
        generation: u32,
        phase: u32,
        default_jitter: JitterConfig,
        ssrc: u32,
        initial_seq: u16,
        initial_ts: u32,
    ) -> Self {
        let rx = params.rx_codecs();
        let tx = params.tx.codec;
        // The engine validated `params.dsp` at this rate (`DspConfig::validate`) before
        // building; should that ever differ, the session runs unprocessed rather than fail.
        let rate = params.sample_rate();
        let frame = params.frame_samples();
        let mut dsp = DspChain::new(&params.dsp, rate.hz(), frame)
            .unwrap_or_else(|_| DspChain::passthrough());
        // `phase` is the slot: sessions built in a batch spread their periodic work.
        dsp.stagger(phase);
        SessionParts {
            jitter: JitterPart {
                generation,
                rx_pts: rx.iter().map(|s| s.payload_type.get()).collect(),
                telephone_event_pt: params.telephone_event_pt.map(|p| p.get()),
                cn_pt: params.comfort_noise_pt.map(|p| p.get()),
                rx_ssrc: None,
                ssrc_candidate: 0,
                dtmf_ssrc: None,
                dtmf_candidate: 0,
                candidate_run: 0,
                stats: RtpReceiveStats::signalled(tx.info().clock_rate_hz),
                ptime_ticks: params.ptime.ticks() as u16,
                phase: (phase % params.ptime.ticks()) as u16,
                // RFC 4733 §2.5.2.2: a digit whose packets stop is ended after a timeout;
                // senders update every 50 ms, so 200 ms is four updates lost.
                // Boxed: touched only by telephone-event packets, so it stays out of the
                // hot state every packet walks.
                dtmf: Box::new(DtmfReceiver::new(200)),
                dtmf_clock_hz: tx.info().clock_rate_hz,
                earlier_streams: (0, 0),
            },
            decode: DecodePart {
                present: Present::Yes,
                decoders: rx
                    .iter()
                    .map(|s| {
                        let r = params.decode_rate(s.codec);
                        (s.payload_type.get(), AnyDecoder::with_rate(s.codec, r))
                    })
                    .collect(),
                receive: ReceiveChannel::new(ReceiveConfig {
                    jitter: JitterConfig {
                        clock_rate_hz: tx.info().clock_rate_hz,
                        ..params.jitter.unwrap_or(default_jitter)
                    },
                    frame_samples: frame,
                    sample_rate_hz: rate.hz(),
                    // 120 ms: the longest Opus packet (RFC 7587 §4.2), and as long as
                    // G.711 and G.722 senders go; longer packets are refused, counted.
                    max_packet_samples: 2 * rate.samples_in(Ptime::MS_60),
                }),
                frame_samples: frame,
                route: None,
                dsp_passthrough: dsp.is_passthrough(),
                sid: SidState::None,
                ptime_ticks: params.ptime.ticks(),
                phase: phase % params.ptime.ticks(),
            },
            dsp: DspPart {
                generation,
                chain: dsp,
                resampler: None,
                inband_digit_open: false,
                events_negotiated: params.telephone_event_pt.is_some(),
                events_base: 0,
            },
            encode: EncodePart {
                generation,
                encoder: AnyEncoder::with_settings(tx, params.opus),
                payload_type: params.tx.payload_type,
                ssrc,
                sequence: initial_seq,
                timestamp: initial_ts,
                timestamp_step: tx.timestamp_step(params.ptime),
                frame_samples: frame,
                marker_next: true,
                dtmf_pt: params.telephone_event_send_pt,
                // Invariant: a frame's timestamp step is never zero (ptime >= 10 ms).
                // Q.24's 40 ms between digits sent back to back.
                dtmf: Box::new(
                    DtmfSender::new(tx.timestamp_step(params.ptime).max(1))
                        .expect("non-zero packet interval")
                        .with_min_gap(40 * (tx.info().clock_rate_hz / 1000).max(1)),
                ),
                ts_per_ms: (tx.info().clock_rate_hz / 1000).max(1),
                tones: match params.telephone_event_send_pt {
                    Some(_) => None,
                    None => DtmfGenerator::new(DtmfGeneratorConfig {
                        sample_rate_hz: rate.hz(),
                        ..Default::default()
                    })
                    .ok()
                    .map(|generator| {
                        Box::new(ToneOut {
                            generator,
                            pcm: vec![0; frame].into_boxed_slice(),
                        })
                    }),
                },
                tone_on: false,
                dtx_pt: params
                    .comfort_noise_send_pt
                    .filter(|_| params.dtx && tx != Codec::Opus),
                dtx_silent: false,
                dtx_level: 127,
                dtx_avg: 127 * 16,
                dtx_since_sid: 0,
                keepalive_frames: match params.keepalive_ms {
                    0 => 0,
                    ms => ms.div_ceil(params.ptime.ms()).clamp(1, u32::from(u16::MAX)) as u16,
                },
                idle_frames: 0,
                cn_send_pt: params.comfort_noise_send_pt,
                relayed: Relayed::Never,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::slab::Token;

    fn dtx_part() -> EncodePart {
        let mut p = MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_20);
        p.comfort_noise_send_pt = PayloadType::new(13);
        p.dtx = true;
        SessionParts::<Token>::build(&p, 1, 0, JitterConfig::default(), 7, 0, 0).encode
    }

    /// What the lane's ingest prefetch assumes of the jitter part's layout: an `Option`
    /// of it is the part itself (its box is the niche), and a packet's fields lie in its
    /// first two cache lines.
    #[test]
    fn a_packet_reads_the_first_two_lines_of_its_jitter_part() {
        use std::mem::{align_of, size_of};
        assert_eq!(size_of::<Option<JitterPart>>(), size_of::<JitterPart>());
        assert_eq!(align_of::<JitterPart>(), 64);
        const { assert!(RtpReceiveStats::HOT_BYTES <= 64) };
        const { assert!(JitterPart::HOT_BYTES <= 128) };
        // The option's first byte is the part's.
        let part = SessionParts::<Token>::build(
            &MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_20),
            1,
            0,
            JitterConfig::default(),
            7,
            0,
            0,
        )
        .jitter;
        let slot = Some(part);
        let inner = slot.as_ref().map(|p| p as *const JitterPart as usize);
        assert_eq!(inner, Some(&slot as *const Option<JitterPart> as usize));
    }

    /// 20 ms at 8 kHz of a square wave of amplitude `a`.
    fn frame(a: i16) -> Vec<i16> {
        (0..160).map(|i| if i % 2 == 0 { a } else { -a }).collect()
    }

    #[test]
    fn dtx_waits_out_the_hangover_then_sends_sids_on_level_steps_and_every_500_ms() {
        let mut e = dtx_part();
        let (quiet, louder) = (frame(100), frame(400)); // -50 and -38 dBov
        assert_eq!(
            e.dtx_frame(false, &frame(8000)),
            DtxFrame::Audio { resumed: false }
        );
        // 400 ms of silence go out as audio (19 frames), the 20th starts the silence.
        for _ in 0..19 {
            assert_eq!(
                e.dtx_frame(true, &quiet),
                DtxFrame::Audio { resumed: false }
            );
        }
        let sid = DtxFrame::Sid(PayloadType::new(13).unwrap());
        assert_eq!(e.dtx_frame(true, &quiet), sid);
        assert_eq!(e.dtx_level, 50);
        assert_eq!(e.dtx_frame(true, &quiet), DtxFrame::Skip);
        // A 12 dB step: the smoothed level crosses 3 dB within a few frames, a new SID.
        let mut skipped = 0;
        while e.dtx_frame(true, &louder) == DtxFrame::Skip {
            skipped += 1;
            assert!(skipped < 5, "a level step is signalled within 100 ms");
        }
        assert!((44..=47).contains(&e.dtx_level), "{}", e.dtx_level);
        // It settles at the new level (SIDs on the way), then: nothing until the 500 ms
        // refresh.
        for _ in 0..40 {
            e.dtx_frame(true, &louder);
        }
        assert_eq!(e.dtx_level, 38);
        let mut skipped = 0;
        while e.dtx_frame(true, &louder) == DtxFrame::Skip {
            skipped += 1;
        }
        assert!(
            skipped <= 24,
            "refreshed at least every 500 ms ({skipped} skipped)"
        );
        // Speech again: audio, marked as resuming once.
        assert_eq!(
            e.dtx_frame(false, &frame(8000)),
            DtxFrame::Audio { resumed: true }
        );
        assert_eq!(
            e.dtx_frame(false, &frame(8000)),
            DtxFrame::Audio { resumed: false }
        );
        // A pause shorter than the hangover is sent as audio.
        for _ in 0..10 {
            assert_eq!(
                e.dtx_frame(true, &quiet),
                DtxFrame::Audio { resumed: false }
            );
        }
        assert_eq!(
            e.dtx_frame(false, &frame(8000)),
            DtxFrame::Audio { resumed: false }
        );
    }

    #[test]
    fn dtx_is_off_without_its_payload_type_and_for_opus() {
        let mut p = MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_20);
        p.dtx = true;
        let mut e = SessionParts::<Token>::build(&p, 1, 0, JitterConfig::default(), 7, 0, 0).encode;
        assert_eq!(
            e.dtx_frame(true, &[0; 160]),
            DtxFrame::Audio { resumed: false }
        );
        let mut p = MediaSessionParams::new(CodecSpec::OPUS, Ptime::MS_20);
        p.comfort_noise_send_pt = PayloadType::new(13);
        p.dtx = true;
        let e = SessionParts::<Token>::build(&p, 1, 0, JitterConfig::default(), 7, 0, 0).encode;
        assert_eq!(e.dtx_pt, None);
    }
}
