//! SDP offer/answer for one audio stream (RFC 3264, RFC 3551, RFC 4733, RFC 7587).
//!
//! Control plane: everything here may allocate. The SIP layer hands in SDP text (or an
//! [`sdp`] crate description), gets back a [`NegotiatedMedia`] saying which payload type
//! to send with, which payload types to accept inbound, the packet time and the Opus
//! encoder settings, and writes the answer's `m=audio` section with
//! [`NegotiatedMedia::to_sdp_answer`] (with [`answer_sections`], one `m=` line per offered
//! section, the others rejected). [`answer`] refuses transports other than plain RTP.
//!
//! - Answerer side: [`MediaOffer::from_sdp`] then [`answer`] (or [`negotiate_reoffer`]
//!   for a re-INVITE of a running session).
//! - Offerer side: [`LocalCapabilities::create_offer`], then [`process_answer`] on the
//!   remote answer.
//!
//! The codecs this module can negotiate are one table, [`known_codecs`]: adding a codec
//! is adding an entry (and a [`CodecKind`] variant). SDP text is read and written with
//! the `sdp` crate; only attribute *values* (`rtpmap`, `fmtp`, `ptime`) are split here,
//! because the crate merges codecs across all media sections and rejects `fmtp` values
//! that contain a space after `;`.
//!
//! ```
//! use media_core::codec::negotiation::{answer, CodecKind, LocalCapabilities, MediaOffer};
//!
//! let offer = MediaOffer::from_sdp(
//!     "m=audio 4000 RTP/AVP 8 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=ptime:20\r\n",
//! )?;
//! let local = LocalCapabilities::new(&[CodecKind::Pcmu, CodecKind::Pcma]);
//! let media = answer(&offer, &local)?;
//! assert_eq!(media.send.pt, 8); // the offerer's first choice, PCMA on its static type
//! assert_eq!(media.telephone_event_send, Some(101));
//! let sdp = media.to_sdp_answer(5004);
//! assert!(sdp.starts_with("m=audio 5004 RTP/AVP 8 0 101\r\n"));
//! # Ok::<(), media_core::codec::negotiation::NegotiationError>(())
//! ```

use std::fmt;
use std::io::Cursor;

use sdp::description::media::{MediaDescription, MediaName, RangedPort};
use sdp::SessionDescription;

use crate::types::PayloadType;

/// What a negotiated payload type carries, independent of [`Codec`](crate::Codec) (the
/// engine maps it to its codec states).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CodecKind {
    /// ITU-T G.711 µ-law.
    Pcmu,
    /// ITU-T G.711 A-law.
    Pcma,
    /// ITU-T G.722 (RTP clock 8000 although it samples at 16 kHz, RFC 3551 §4.5.2).
    G722,
    /// Opus (RFC 7587): always `opus/48000/2` in SDP whatever it actually carries.
    Opus,
    /// RFC 4733 named telephone events (DTMF).
    TelephoneEvent,
    /// RFC 3389 comfort noise.
    ComfortNoise,
}

impl CodecKind {
    /// Whether this is a voice codec (something a stream can be sent with), as opposed to
    /// the companions telephone-event and comfort noise.
    pub fn is_audio(self) -> bool {
        !matches!(self, CodecKind::TelephoneEvent | CodecKind::ComfortNoise)
    }
}

/// One `encoding/clock/channels` this module can negotiate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownCodec {
    /// SDP encoding name in its registered spelling (compared case-insensitively,
    /// RFC 4855 §3).
    pub name: &'static str,
    /// RTP clock rate in Hz.
    pub clock_rate_hz: u32,
    /// Channels (an omitted rtpmap channel count means 1, RFC 4566 §6).
    pub channels: u8,
    /// The RFC 3551 static payload type, if the codec has one.
    pub static_pt: Option<u8>,
    /// What it is.
    pub kind: CodecKind,
}

/// The negotiable codecs, in the order [`LocalCapabilities::create_offer`] picks the
/// clock rates of companions from. A kind may appear at several rates (telephone-event,
/// comfort noise); the first entry of a kind is the one offered for it.
static KNOWN_CODECS: [KnownCodec; 11] = [
    known("PCMU", 8000, 1, Some(0), CodecKind::Pcmu),
    known("PCMA", 8000, 1, Some(8), CodecKind::Pcma),
    // RFC 3551 §4.5.2: G.722's RTP clock is 8000 although it samples at 16 kHz.
    known("G722", 8000, 1, Some(9), CodecKind::G722),
    // RFC 7587 §7: the rtpmap is always opus/48000/2.
    known("opus", 48000, 2, None, CodecKind::Opus),
    // RFC 4733 §2.1: the event clock follows the audio codec's clock.
    known("telephone-event", 8000, 1, None, CodecKind::TelephoneEvent),
    known("telephone-event", 16000, 1, None, CodecKind::TelephoneEvent),
    known("telephone-event", 32000, 1, None, CodecKind::TelephoneEvent),
    known("telephone-event", 48000, 1, None, CodecKind::TelephoneEvent),
    // RFC 3389 §5: CN/8000 has the static type 13; other rates need an rtpmap. No
    // CN/48000: Opus, the only 48 kHz codec, has its own DTX (RFC 7587 §3.1.3).
    known("CN", 8000, 1, Some(13), CodecKind::ComfortNoise),
    known("CN", 16000, 1, None, CodecKind::ComfortNoise),
    known("CN", 32000, 1, None, CodecKind::ComfortNoise),
];

const fn known(
    name: &'static str,
    clock_rate_hz: u32,
    channels: u8,
    static_pt: Option<u8>,
    kind: CodecKind,
) -> KnownCodec {
    KnownCodec {
        name,
        clock_rate_hz,
        channels,
        static_pt,
        kind,
    }
}

/// Every codec this module can negotiate.
pub fn known_codecs() -> &'static [KnownCodec] {
    &KNOWN_CODECS
}

impl KnownCodec {
    /// The table entry for an encoding, matching the name case-insensitively and the
    /// clock rate and channel count exactly (FIELD-BUGS 44, 46).
    pub fn find(name: &str, clock_rate_hz: u32, channels: u8) -> Option<&'static KnownCodec> {
        KNOWN_CODECS.iter().find(|k| {
            k.name.eq_ignore_ascii_case(name)
                && k.clock_rate_hz == clock_rate_hz
                && k.channels == channels
        })
    }

    /// The first (offered) entry of a kind.
    pub fn primary(kind: CodecKind) -> Option<&'static KnownCodec> {
        KNOWN_CODECS.iter().find(|k| k.kind == kind)
    }

    /// The entry of `kind` at `clock_rate_hz`.
    pub fn of_kind_at(kind: CodecKind, clock_rate_hz: u32) -> Option<&'static KnownCodec> {
        KNOWN_CODECS
            .iter()
            .find(|k| k.kind == kind && k.clock_rate_hz == clock_rate_hz)
    }

    /// `name/clock[/channels]`, as in an rtpmap.
    pub fn encoding(&self) -> String {
        encoding(self.name, self.clock_rate_hz, self.channels)
    }
}

/// RFC 3551 §6 (tables 4 and 5): the static audio payload types, used for an `m=` line
/// format without an `a=rtpmap` (FIELD-BUGS 45). An rtpmap, when present, wins
/// (FIELD-BUGS 51).
static RFC3551_STATIC: [(u8, &str, u32, u8); 17] = [
    (0, "PCMU", 8000, 1),
    (3, "GSM", 8000, 1),
    (4, "G723", 8000, 1),
    (5, "DVI4", 8000, 1),
    (6, "DVI4", 16000, 1),
    (7, "LPC", 8000, 1),
    (8, "PCMA", 8000, 1),
    (9, "G722", 8000, 1),
    (10, "L16", 44100, 2),
    (11, "L16", 44100, 1),
    (12, "QCELP", 8000, 1),
    (13, "CN", 8000, 1),
    (14, "MPA", 90000, 1),
    (15, "G728", 8000, 1),
    (16, "DVI4", 11025, 1),
    (17, "DVI4", 22050, 1),
    (18, "G729", 8000, 1),
];

/// The RFC 3551 meaning of a static payload type, or `None` for an unassigned or
/// dynamic number.
pub fn static_payload_type(pt: u8) -> Option<RtpMap> {
    RFC3551_STATIC
        .iter()
        .find(|s| s.0 == pt)
        .map(|&(pt, name, clock_rate_hz, channels)| RtpMap::new(pt, name, clock_rate_hz, channels))
}

/// The first dynamic payload type (RFC 3551 §3).
pub const DYNAMIC_PT_MIN: u8 = 96;
/// The last dynamic payload type.
pub const DYNAMIC_PT_MAX: u8 = 127;

/// Packet times the engine can play (a session plays one frame per ptime, 10–60 ms).
pub const SUPPORTED_PTIMES_MS: [u32; 5] = [10, 20, 30, 40, 60];

/// The ptime used when the other side names none or one the engine cannot play.
pub const DEFAULT_PTIME_MS: u32 = 20;

/// The events a telephone-event entry is offered with: the DTMF digits (RFC 4733 §3.2;
/// also the default when the fmtp is absent, §2.4.1).
pub const TELEPHONE_EVENT_FMTP: &str = "0-15";

/// One payload type of an `m=` line: its `a=rtpmap` (or the RFC 3551 static meaning)
/// and its `a=fmtp` parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpMap {
    /// The RTP payload type number (0–127).
    pub pt: u8,
    /// The encoding name as written (matching ignores case).
    pub name: String,
    /// RTP clock rate in Hz.
    pub clock_rate_hz: u32,
    /// Channels; 1 when the rtpmap omits it (RFC 4566 §6).
    pub channels: u8,
    /// `a=fmtp` parameters in their order. A parameter without `=` (telephone-event's
    /// `0-15`) is stored with an empty value and written back without `=`.
    pub fmtp: Vec<(String, String)>,
}

impl RtpMap {
    /// An entry without fmtp parameters.
    pub fn new(pt: u8, name: impl Into<String>, clock_rate_hz: u32, channels: u8) -> Self {
        RtpMap {
            pt,
            name: name.into(),
            clock_rate_hz,
            channels,
            fmtp: Vec::new(),
        }
    }

    /// The same entry with `params` (an fmtp value without the payload type, e.g.
    /// `minptime=10;useinbandfec=1`) as its fmtp.
    pub fn with_fmtp(mut self, params: &str) -> Self {
        self.fmtp = parse_fmtp_params(params);
        self
    }

    /// Parses an `a=rtpmap` value: `<pt> <name>/<clock>[/<channels>]`. `None` when it is
    /// malformed (no clock rate, a payload type over 127, zero channels).
    pub fn parse_rtpmap(value: &str) -> Option<RtpMap> {
        let mut fields = value.split_whitespace();
        let pt = fields.next()?.parse::<u8>().ok().filter(|&pt| pt < 128)?;
        let mut encoding = fields.next()?.split('/');
        let name = encoding.next().filter(|n| !n.is_empty())?;
        let clock_rate_hz = encoding.next()?.parse::<u32>().ok().filter(|&c| c > 0)?;
        let channels = match encoding.next() {
            Some(c) => c.parse::<u8>().ok().filter(|&c| c > 0)?,
            None => 1,
        };
        Some(RtpMap::new(pt, name, clock_rate_hz, channels))
    }

    /// Whether both describe the same codec: name ignoring case (FIELD-BUGS 44), clock
    /// rate, and channels with an omitted count meaning 1 (FIELD-BUGS 46). Payload types
    /// and fmtp are not compared.
    pub fn same_codec(&self, other: &RtpMap) -> bool {
        self.name.eq_ignore_ascii_case(&other.name)
            && self.clock_rate_hz == other.clock_rate_hz
            && self.channels == other.channels
    }

    /// The table entry this encoding is, if it is one this module negotiates.
    pub fn known(&self) -> Option<&'static KnownCodec> {
        KnownCodec::find(&self.name, self.clock_rate_hz, self.channels)
    }

    /// The kind of codec, if known.
    pub fn kind(&self) -> Option<CodecKind> {
        self.known().map(|k| k.kind)
    }

    /// A fmtp parameter's value (the key compared case-insensitively, RFC 6838 §4.3).
    pub fn fmtp_value(&self, key: &str) -> Option<&str> {
        fmtp_lookup(&self.fmtp, key)
    }

    /// The fmtp parameters as written after the payload type: `a=b;c=d`.
    pub fn fmtp_string(&self) -> String {
        write_fmtp_params(&self.fmtp)
    }

    /// `name/clock[/channels]`, the channel count written only when it is not 1.
    pub fn encoding(&self) -> String {
        encoding(&self.name, self.clock_rate_hz, self.channels)
    }

    /// The payload type, `None` if `pt` was set over 127 by hand.
    pub fn payload_type(&self) -> Option<PayloadType> {
        PayloadType::new(self.pt)
    }

    fn same_codec_as_known(&self, k: &KnownCodec) -> bool {
        self.name.eq_ignore_ascii_case(k.name)
            && self.clock_rate_hz == k.clock_rate_hz
            && self.channels == k.channels
    }
}

impl fmt::Display for RtpMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.pt, self.encoding())
    }
}

fn encoding(name: &str, clock_rate_hz: u32, channels: u8) -> String {
    if channels == 1 {
        format!("{name}/{clock_rate_hz}")
    } else {
        format!("{name}/{clock_rate_hz}/{channels}")
    }
}

fn parse_fmtp_params(params: &str) -> Vec<(String, String)> {
    params
        .split(';')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.trim().to_string(), v.trim().to_string()),
            None => (p.to_string(), String::new()),
        })
        .collect()
}

fn write_fmtp_params(params: &[(String, String)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in params.iter().enumerate() {
        if i > 0 {
            out.push(';');
        }
        out.push_str(k);
        if !v.is_empty() {
            out.push('=');
            out.push_str(v);
        }
    }
    out
}

fn fmtp_lookup<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v.as_str())
}

/// The direction attribute of a media section (RFC 3264 §5.1), from the point of view
/// of whoever wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    /// `a=sendrecv` (also the default when none is written).
    #[default]
    SendRecv,
    /// `a=sendonly`.
    SendOnly,
    /// `a=recvonly`.
    RecvOnly,
    /// `a=inactive`.
    Inactive,
}

impl Direction {
    /// Whether the writer sends media.
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    /// Whether the writer receives media.
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    /// The direction with `sends` and `receives` as given.
    pub fn from_flags(sends: bool, receives: bool) -> Self {
        match (sends, receives) {
            (true, true) => Direction::SendRecv,
            (true, false) => Direction::SendOnly,
            (false, true) => Direction::RecvOnly,
            (false, false) => Direction::Inactive,
        }
    }

    /// Our direction given what we want (`self`) and what the other side wrote
    /// (RFC 3264 §6.1: sendonly is answered recvonly, recvonly sendonly, inactive
    /// inactive).
    pub fn answering(self, remote: Direction) -> Self {
        Direction::from_flags(
            self.sends() && remote.receives(),
            self.receives() && remote.sends(),
        )
    }

    /// The attribute name.
    pub fn attribute(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    fn from_attribute(key: &str) -> Option<Self> {
        [
            Direction::SendRecv,
            Direction::SendOnly,
            Direction::RecvOnly,
            Direction::Inactive,
        ]
        .into_iter()
        .find(|d| d.attribute().eq_ignore_ascii_case(key))
    }
}

/// Why an offer or answer could not be negotiated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NegotiationError {
    /// The SDP text is not valid SDP (the `sdp` crate's message). Recover: reject the
    /// offer (SIP 400) or, for an answer, end the call.
    #[error("invalid SDP: {0}")]
    InvalidSdp(String),
    /// The description has no `m=audio` section. Recover: answer without audio or
    /// reject (SIP 488).
    #[error("no m=audio section")]
    NoAudioMedia,
    /// The audio section has port 0: the stream is disabled (RFC 3264 §6, §8.2).
    /// Recover: answer it with port 0 too, or tear the media session down.
    #[error("audio stream disabled (port 0)")]
    MediaDisabled,
    /// The audio section's transport is not plain RTP (`RTP/AVP` or `RTP/AVPF`): e.g.
    /// `RTP/SAVP` with `a=crypto`, or DTLS-SRTP. media-core sends and receives plain RTP
    /// only; answering such an offer as if it were would give the peer an answer without
    /// keys (a failed call) or SRTP read as audio (noise). Recover: SIP 488 Not
    /// Acceptable Here, or answer the section with port 0.
    #[error("transport {0} not supported (plain RTP only: RTP/AVP, RTP/AVPF)")]
    UnsupportedTransport(String),
    /// No voice codec is on both sides. For [`answer`]: `offered` is the offer and
    /// `supported` our capabilities; for [`process_answer`]: `offered` is our offer and
    /// `supported` what the answer lists. Recover: SIP 488 Not Acceptable Here (with
    /// the lists in a Warning header for the operator).
    #[error(
        "no common codec: offered [{}], supported [{}]",
        .offered.join(", "),
        .supported.join(", ")
    )]
    NoCommonCodec {
        /// What the offer (or our offer) listed, as `name/clock[/channels]`.
        offered: Vec<String>,
        /// What we (or the answer) support, as `name/clock[/channels]`.
        supported: Vec<String>,
    },
}

/// A parsed audio media section: an offer, or an answer read back for
/// [`process_answer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaOffer {
    /// The RTP port; 0 means the stream is disabled.
    pub port: u16,
    /// The transport protocol, e.g. `RTP/AVP`.
    pub protocol: String,
    /// The connection address (media-level `c=`, else session-level), if any.
    pub connection_address: Option<String>,
    /// The payload types in `m=` line order (the writer's preference order). Formats
    /// that are neither in an rtpmap nor RFC 3551 static types are left out: nothing can
    /// be known about them.
    pub codecs: Vec<RtpMap>,
    /// `a=ptime`, in milliseconds.
    pub ptime_ms: Option<u32>,
    /// `a=maxptime`, in milliseconds.
    pub maxptime_ms: Option<u32>,
    /// The writer's direction (media level, else session level, else sendrecv).
    pub direction: Direction,
    /// Which `m=` section of the description this is (0 for the first, counting every
    /// media type): an answer has one `m=` line per offered section, in order (RFC 3264
    /// §6), the others rejected with port 0 ([`answer_sections`]).
    pub section: usize,
}

/// Plain RTP profiles (RFC 3551 AVP, RFC 4585 AVPF), whatever their case; not the secure
/// ones (SAVP, SAVPF, UDP/TLS/RTP/SAVPF).
fn is_plain_rtp(protocol: &str) -> bool {
    protocol.eq_ignore_ascii_case("RTP/AVP") || protocol.eq_ignore_ascii_case("RTP/AVPF")
}

impl MediaOffer {
    /// Reads the `m=audio` section of SDP text that media-core can answer: the first one
    /// enabled (port other than 0) on plain RTP (`RTP/AVP`, `RTP/AVPF`), else the first
    /// one (which [`answer`] then refuses, typed). So of an offer of SRTP with a plain RTP
    /// alternative after it, or a disabled stream before a live one, the section that can
    /// carry the call is read; which one it was is kept in [`MediaOffer::section`], for
    /// an answer with one `m=` line per offered section ([`answer_sections`], RFC 3264
    /// §6). The text may be a whole session description or just an `m=audio` section (its
    /// lines are then parsed under a placeholder session header). Lines may end in CRLF or
    /// LF; surrounding whitespace is ignored.
    ///
    /// Errors: [`NegotiationError::InvalidSdp`], [`NegotiationError::NoAudioMedia`].
    pub fn from_sdp(text: &str) -> Result<Self, NegotiationError> {
        let session = parse_sdp(text)?;
        let audio = || {
            session
                .media_descriptions
                .iter()
                .enumerate()
                .filter(|(_, m)| m.media_name.media == "audio")
        };
        let (section, media) = audio()
            .find(|(_, m)| {
                m.media_name.port.value != 0 && is_plain_rtp(&m.media_name.protos.join("/"))
            })
            .or_else(|| audio().next())
            .ok_or(NegotiationError::NoAudioMedia)?;
        let mut offer = Self::from_media_description(media, Some(&session))?;
        offer.section = section;
        Ok(offer)
    }

    /// Reads one media description parsed by the `sdp` crate; `session` supplies the
    /// session-level connection address and direction.
    ///
    /// Errors: [`NegotiationError::NoAudioMedia`] if it is not `m=audio`,
    /// [`NegotiationError::InvalidSdp`] for a port over 65535.
    pub fn from_media_description(
        media: &MediaDescription,
        session: Option<&SessionDescription>,
    ) -> Result<Self, NegotiationError> {
        if media.media_name.media != "audio" {
            return Err(NegotiationError::NoAudioMedia);
        }
        let port = u16::try_from(media.media_name.port.value).map_err(|_| {
            NegotiationError::InvalidSdp(format!("port {}", media.media_name.port.value))
        })?;
        let attr = |key: &'static str| attribute_values(media, key);

        let rtpmaps: Vec<RtpMap> = attr("rtpmap").filter_map(RtpMap::parse_rtpmap).collect();
        let mut codecs: Vec<RtpMap> = Vec::new();
        for format in &media.media_name.formats {
            let Some(pt) = format.parse::<u8>().ok().filter(|&pt| pt < 128) else {
                continue;
            };
            if codecs.iter().any(|c| c.pt == pt) {
                continue;
            }
            // An rtpmap wins over the static table, also for a static number
            // (FIELD-BUGS 51: a remote may map PT 10 to telephone-event).
            let entry = rtpmaps
                .iter()
                .find(|r| r.pt == pt)
                .cloned()
                .or_else(|| static_payload_type(pt));
            if let Some(mut entry) = entry {
                for value in attr("fmtp") {
                    if let Some((fmt_pt, params)) = split_pt(value) {
                        if fmt_pt == pt {
                            entry.fmtp.extend(parse_fmtp_params(params));
                        }
                    }
                }
                codecs.push(entry);
            }
        }

        let direction = media
            .attributes
            .iter()
            .find_map(|a| Direction::from_attribute(&a.key))
            .or_else(|| {
                session.and_then(|s| {
                    s.attributes
                        .iter()
                        .find_map(|a| Direction::from_attribute(&a.key))
                })
            })
            .unwrap_or_default();
        let connection_address = media
            .connection_information
            .as_ref()
            .or_else(|| session.and_then(|s| s.connection_information.as_ref()))
            .and_then(|c| c.address.as_ref())
            .map(|a| a.address.clone());

        Ok(MediaOffer {
            port,
            protocol: media.media_name.protos.join("/"),
            connection_address,
            codecs,
            ptime_ms: attr("ptime").find_map(parse_ms),
            maxptime_ms: attr("maxptime").find_map(parse_ms),
            direction,
            section: 0,
        })
    }

    /// The entry of payload type `pt`.
    pub fn codec(&self, pt: u8) -> Option<&RtpMap> {
        self.codecs.iter().find(|c| c.pt == pt)
    }

    /// Writes this section back as an `sdp` crate media description. Every entry gets an
    /// rtpmap, static ones included, so a peer that looks codecs up by rtpmap only still
    /// finds them.
    pub fn to_media_description(&self) -> MediaDescription {
        media_description(
            self.port,
            &self.protocol,
            &self.codecs,
            self.ptime_ms,
            self.maxptime_ms,
            self.direction,
        )
    }

    /// Writes this section as SDP lines (`m=audio …` and its `a=` lines, CRLF ended).
    pub fn to_sdp_media(&self) -> String {
        media_lines(&self.to_media_description())
    }

    fn encodings(&self) -> Vec<String> {
        self.codecs.iter().map(RtpMap::encoding).collect()
    }
}

fn attribute_values<'a>(
    media: &'a MediaDescription,
    key: &'a str,
) -> impl Iterator<Item = &'a str> + 'a {
    media
        .attributes
        .iter()
        .filter(move |a| a.key.eq_ignore_ascii_case(key))
        .filter_map(|a| a.value.as_deref())
}

fn split_pt(value: &str) -> Option<(u8, &str)> {
    let value = value.trim_start();
    let (pt, rest) = value.split_once(char::is_whitespace).unwrap_or((value, ""));
    Some((pt.parse::<u8>().ok()?, rest.trim()))
}

/// `a=ptime` is an integer in practice, but some stacks write `20.0`.
fn parse_ms(value: &str) -> Option<u32> {
    let value = value.trim();
    value.parse::<u32>().ok().or_else(|| {
        value
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 1.0 && *v <= 1000.0)
            .map(|v| v.round() as u32)
    })
}

/// Parses SDP text as [`MediaOffer::from_sdp`] reads it (a bare `m=` section under a
/// placeholder session header; CRLF or LF; whitespace trimmed).
fn parse_sdp(text: &str) -> Result<SessionDescription, NegotiationError> {
    let mut normalized = String::with_capacity(text.len() + 64);
    if text.trim_start().starts_with("m=") {
        normalized.push_str("v=0\r\no=- 0 0 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n");
    }
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        normalized.push_str(line);
        normalized.push_str("\r\n");
    }
    SessionDescription::unmarshal(&mut Cursor::new(normalized.as_bytes()))
        .map_err(|e| NegotiationError::InvalidSdp(e.to_string()))
}

/// The `m=` sections of an answer to the offer in `offer_sdp` (RFC 3264 §6: one per
/// offered section, in order): `answered` (the audio section media-core answers, e.g.
/// [`NegotiatedMedia::to_media_description`]) at the offer's [`MediaOffer::section`],
/// every other section rejected (port 0, its media, transport and formats as offered,
/// nothing else). An offer of audio and video, or of SRTP with a plain RTP alternative,
/// is then answered line for line.
///
/// Errors: [`NegotiationError::InvalidSdp`].
pub fn answer_sections(
    offer_sdp: &str,
    section: usize,
    answered: MediaDescription,
) -> Result<Vec<MediaDescription>, NegotiationError> {
    let session = parse_sdp(offer_sdp)?;
    let mut answered = Some(answered);
    let mut out: Vec<MediaDescription> = session
        .media_descriptions
        .iter()
        .enumerate()
        .map(|(i, m)| match answered.take_if(|_| i == section) {
            Some(a) => a,
            None => MediaDescription {
                media_name: MediaName {
                    media: m.media_name.media.clone(),
                    port: RangedPort {
                        value: 0,
                        range: None,
                    },
                    protos: m.media_name.protos.clone(),
                    formats: m.media_name.formats.clone(),
                },
                ..Default::default()
            },
        })
        .collect();
    // An offer with no such section (a bare one that did not parse as the caller's):
    // the answered section alone.
    if let Some(a) = answered {
        out = vec![a];
    }
    Ok(out)
}

fn media_description(
    port: u16,
    protocol: &str,
    entries: &[RtpMap],
    ptime_ms: Option<u32>,
    maxptime_ms: Option<u32>,
    direction: Direction,
) -> MediaDescription {
    let mut md = MediaDescription {
        media_name: MediaName {
            media: "audio".to_string(),
            port: RangedPort {
                // A u16 fits an isize on every target std supports.
                value: port as isize,
                range: None,
            },
            protos: protocol.split('/').map(str::to_string).collect(),
            formats: Vec::new(),
        },
        ..Default::default()
    };
    for e in entries {
        // The sdp crate writes `/channels` only when it is non-zero; one channel is
        // written without it (RFC 4566 §6).
        let channels = if e.channels == 1 {
            0
        } else {
            u16::from(e.channels)
        };
        md = md.with_codec(
            e.pt,
            e.name.clone(),
            e.clock_rate_hz,
            channels,
            e.fmtp_string(),
        );
    }
    if let Some(p) = ptime_ms {
        md = md.with_value_attribute("ptime".to_string(), p.to_string());
    }
    if let Some(p) = maxptime_ms {
        md = md.with_value_attribute("maxptime".to_string(), p.to_string());
    }
    md.with_property_attribute(direction.attribute().to_string())
}

fn media_lines(md: &MediaDescription) -> String {
    let mut out = format!("m={}\r\n", md.media_name);
    for a in &md.attributes {
        out.push_str(&format!("a={a}\r\n"));
    }
    out
}

/// Opus parameters from the remote side's `a=fmtp` (RFC 7587 §6.1): how it wants to
/// *receive*, so what our encoder is configured from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpusParams {
    /// `useinbandfec=1`: the receiver decodes in-band FEC, so encode with it.
    pub use_inband_fec: bool,
    /// `usedtx=1`: the receiver prefers discontinuous transmission.
    pub use_dtx: bool,
    /// `maxplaybackrate`: the highest audio rate worth encoding (8000–48000 Hz).
    pub max_playback_rate_hz: u32,
    /// `sprop-maxcapturerate`: the highest rate the remote captures at (8000–48000 Hz).
    pub sprop_max_capture_rate_hz: u32,
    /// `stereo=1`: the receiver prefers stereo.
    pub stereo: bool,
    /// `sprop-stereo=1`: the remote may send stereo.
    pub sprop_stereo: bool,
    /// `maxaveragebitrate`, clamped to 6000–510000 bit/s; `None` when absent or invalid.
    pub max_average_bitrate_bps: Option<u32>,
    /// `cbr=1`: the receiver prefers constant bitrate.
    pub cbr: bool,
}

impl Default for OpusParams {
    /// The RFC 7587 §6.1 defaults (what an absent fmtp means).
    fn default() -> Self {
        OpusParams {
            use_inband_fec: false,
            use_dtx: false,
            max_playback_rate_hz: 48000,
            sprop_max_capture_rate_hz: 48000,
            stereo: false,
            sprop_stereo: false,
            max_average_bitrate_bps: None,
            cbr: false,
        }
    }
}

impl OpusParams {
    /// Reads the parameters, keeping the default for any absent or malformed one.
    pub fn from_fmtp(params: &[(String, String)]) -> Self {
        let d = OpusParams::default();
        let flag = |key: &str, default: bool| match fmtp_lookup(params, key) {
            Some("1") => true,
            Some("0") => false,
            _ => default,
        };
        let rate = |key: &str, default: u32| {
            fmtp_lookup(params, key)
                .and_then(|v| v.parse::<u32>().ok())
                .map_or(default, |r| r.clamp(8000, 48000))
        };
        OpusParams {
            use_inband_fec: flag("useinbandfec", d.use_inband_fec),
            use_dtx: flag("usedtx", d.use_dtx),
            max_playback_rate_hz: rate("maxplaybackrate", d.max_playback_rate_hz),
            sprop_max_capture_rate_hz: rate("sprop-maxcapturerate", d.sprop_max_capture_rate_hz),
            stereo: flag("stereo", d.stereo),
            sprop_stereo: flag("sprop-stereo", d.sprop_stereo),
            // RFC 7587 §6.1: 6000 to 510000 bit/s.
            max_average_bitrate_bps: fmtp_lookup(params, "maxaveragebitrate")
                .and_then(|v| v.parse::<u32>().ok())
                .map(|b| b.clamp(6000, 510_000)),
            cbr: flag("cbr", d.cbr),
        }
    }
}

/// One codec we support and how we like it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalCodec {
    /// The codec.
    pub kind: CodecKind,
    /// Lower is preferred; used for our offers and when
    /// [`LocalCapabilities::prefer_local_order`] is set. Ties keep list order.
    pub preference: u8,
    /// The fmtp we write for it (our receive preferences, e.g. Opus `useinbandfec=1`).
    pub fmtp: Vec<(String, String)>,
}

impl LocalCodec {
    /// A codec with the default fmtp for its kind (Opus: `minptime=10;useinbandfec=1`;
    /// telephone-event: `0-15`; others none).
    pub fn new(kind: CodecKind, preference: u8) -> Self {
        let fmtp = match kind {
            CodecKind::Opus => parse_fmtp_params("minptime=10;useinbandfec=1"),
            CodecKind::TelephoneEvent => parse_fmtp_params(TELEPHONE_EVENT_FMTP),
            _ => Vec::new(),
        };
        LocalCodec {
            kind,
            preference,
            fmtp,
        }
    }
}

/// What this side can do, for answering and offering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalCapabilities {
    /// Supported codecs (voice codecs and [`CodecKind::ComfortNoise`]).
    pub codecs: Vec<LocalCodec>,
    /// Answer in our preference order instead of the offerer's (RFC 3264 §6.1 lets
    /// the answerer choose; the default keeps the offerer's order).
    pub prefer_local_order: bool,
    /// Negotiate RFC 4733 telephone-event (DTMF). A
    /// [`CodecKind::TelephoneEvent`] entry in `codecs` turns it on as well.
    pub telephone_event: bool,
    /// The ptime we send with when the other side names none, or one the engine
    /// cannot play (still capped by its maxptime).
    pub ptime_ms: u32,
    /// The direction we want (sendrecv unless on hold).
    pub direction: Direction,
}

impl Default for LocalCapabilities {
    /// What the engine plays today: PCMU, PCMA and telephone-event, 20 ms.
    fn default() -> Self {
        LocalCapabilities::new(&[CodecKind::Pcmu, CodecKind::Pcma])
    }
}

impl LocalCapabilities {
    /// `kinds` in preference order, with default fmtp, telephone-event on, 20 ms,
    /// sendrecv, the offerer's order kept when answering.
    pub fn new(kinds: &[CodecKind]) -> Self {
        LocalCapabilities {
            codecs: kinds
                .iter()
                .enumerate()
                .map(|(i, &k)| LocalCodec::new(k, u8::try_from(i).unwrap_or(u8::MAX)))
                .collect(),
            prefer_local_order: false,
            telephone_event: true,
            ptime_ms: DEFAULT_PTIME_MS,
            direction: Direction::SendRecv,
        }
    }

    /// Our entry for `kind`.
    pub fn codec(&self, kind: CodecKind) -> Option<&LocalCodec> {
        self.codecs.iter().find(|c| c.kind == kind)
    }

    fn telephone_event_enabled(&self) -> bool {
        self.telephone_event || self.codec(CodecKind::TelephoneEvent).is_some()
    }

    /// Our voice codecs in preference order (stable for ties).
    fn audio_by_preference(&self) -> Vec<&LocalCodec> {
        let mut audio: Vec<&LocalCodec> =
            self.codecs.iter().filter(|c| c.kind.is_audio()).collect();
        audio.sort_by_key(|c| c.preference);
        audio
    }

    /// Our voice codecs as `name/clock[/channels]`, in preference order.
    pub fn supported_encodings(&self) -> Vec<String> {
        self.audio_by_preference()
            .iter()
            .filter_map(|c| KnownCodec::primary(c.kind))
            .map(KnownCodec::encoding)
            .collect()
    }

    /// Builds our offer on `port`: voice codecs in preference order on their static
    /// payload types or dynamic ones from 96, then comfort noise and telephone-event at
    /// each voice clock rate. Telephone-event only ever gets a dynamic type
    /// (FIELD-BUGS 51: PT 10 is L16). For a re-offer pass the session's `previous`
    /// result: a codec it already receives keeps its payload type (RFC 3264 §8.3.2).
    /// Capabilities without a voice codec give a disabled stream (port 0, RFC 3264 §5.1);
    /// an unplayable `ptime_ms` is offered as the default 20 ms.
    pub fn create_offer(&self, port: u16, previous: Option<&NegotiatedMedia>) -> MediaOffer {
        let mut wanted: Vec<(&'static KnownCodec, Vec<(String, String)>)> = Vec::new();
        let audio = self.audio_by_preference();
        for c in &audio {
            if let Some(k) = KnownCodec::primary(c.kind) {
                wanted.push((k, c.fmtp.clone()));
            }
        }
        let mut rates: Vec<u32> = Vec::new();
        for (k, _) in &wanted {
            if !rates.contains(&k.clock_rate_hz) {
                rates.push(k.clock_rate_hz);
            }
        }
        if let Some(cn) = self.codec(CodecKind::ComfortNoise) {
            for &rate in &rates {
                if let Some(k) = KnownCodec::of_kind_at(CodecKind::ComfortNoise, rate) {
                    wanted.push((k, cn.fmtp.clone()));
                }
            }
        }
        if self.telephone_event_enabled() {
            let fmtp = self
                .codec(CodecKind::TelephoneEvent)
                .map(|c| c.fmtp.clone())
                .unwrap_or_else(|| parse_fmtp_params(TELEPHONE_EVENT_FMTP));
            for &rate in &rates {
                if let Some(k) = KnownCodec::of_kind_at(CodecKind::TelephoneEvent, rate) {
                    wanted.push((k, fmtp.clone()));
                }
            }
        }

        // First pass: payload types the session already uses, then static ones.
        let mut pts: Vec<Option<u8>> = wanted
            .iter()
            .map(|(k, _)| {
                previous
                    .and_then(|p| p.receive.iter().find(|r| r.same_codec_as_known(k)))
                    .map(|r| r.pt)
                    .or(k.static_pt)
            })
            .collect();
        // Two codecs cannot share one number (a stale previous mapping could collide).
        for i in 0..pts.len() {
            if pts[i].is_some() && pts[..i].contains(&pts[i]) {
                pts[i] = None;
            }
        }
        // Second pass: dynamic numbers for the rest.
        let mut next = DYNAMIC_PT_MIN;
        for i in 0..pts.len() {
            if pts[i].is_none() {
                while next <= DYNAMIC_PT_MAX && pts.contains(&Some(next)) {
                    next += 1;
                }
                if next <= DYNAMIC_PT_MAX {
                    pts[i] = Some(next);
                }
            }
        }
        let mut port = port;
        let mut codecs: Vec<RtpMap> = wanted
            .iter()
            .zip(pts)
            .filter_map(|((k, fmtp), pt)| {
                Some(RtpMap {
                    pt: pt?,
                    name: k.name.to_string(),
                    clock_rate_hz: k.clock_rate_hz,
                    channels: k.channels,
                    fmtp: fmtp.clone(),
                })
            })
            .collect();
        if !codecs
            .iter()
            .any(|c| c.kind().is_some_and(CodecKind::is_audio))
        {
            // Nothing to offer: RFC 3264 §5.1 offers such a stream with port 0, and SDP
            // still needs one format on the m= line (RFC 4566 §5.14): PCMU, never used.
            port = 0;
            codecs = vec![RtpMap {
                pt: 0,
                name: "PCMU".to_string(),
                clock_rate_hz: 8000,
                channels: 1,
                fmtp: Vec::new(),
            }];
        }
        // A ptime we cannot play is never offered (it would also exceed our maxptime).
        let ptime = if SUPPORTED_PTIMES_MS.contains(&self.ptime_ms) {
            self.ptime_ms
        } else {
            DEFAULT_PTIME_MS
        };
        MediaOffer {
            port,
            protocol: "RTP/AVP".to_string(),
            connection_address: None,
            codecs,
            ptime_ms: Some(ptime),
            maxptime_ms: SUPPORTED_PTIMES_MS.last().copied(),
            direction: self.direction,
            section: 0,
        }
    }
}

/// The outcome of a negotiation: what to send and what to accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NegotiatedMedia {
    /// The voice codec to send and the payload type to send it with (the number the
    /// other side receives it on), with the *other side's* fmtp.
    pub send: RtpMap,
    /// Every payload type we accept inbound (voice codecs, then comfort noise and
    /// telephone-event), with our fmtp. On the answerer side this is exactly the
    /// answer's `m=` line.
    pub receive: Vec<RtpMap>,
    /// The payload type to send telephone-events with, if DTMF was negotiated.
    pub telephone_event_send: Option<u8>,
    /// The payload types inbound telephone-events may carry.
    pub telephone_event_recv: Vec<u8>,
    /// The telephone-event RTP clock (the voice codec's, or 8000 as fallback).
    pub telephone_event_clock_rate_hz: Option<u32>,
    /// The packet time to send with, in milliseconds.
    pub ptime_ms: u32,
    /// Opus encoder settings when `send` is Opus.
    pub opus: Option<OpusParams>,
    /// The payload type to send comfort noise with, if negotiated.
    pub cn: Option<u8>,
    /// Our direction.
    pub direction: Direction,
    /// The transport protocol of the section, e.g. `RTP/AVP`.
    pub protocol: String,
}

impl NegotiatedMedia {
    /// The kind of the codec we send.
    pub fn send_kind(&self) -> Option<CodecKind> {
        self.send.kind()
    }

    /// The inbound entry of payload type `pt`; `None` means the packet is not
    /// negotiated and is dropped.
    pub fn receive_codec(&self, pt: u8) -> Option<&RtpMap> {
        self.receive.iter().find(|r| r.pt == pt)
    }

    /// The kind an inbound payload type carries. Every packet is resolved on its own,
    /// so a sender may switch between negotiated types without signalling
    /// (FIELD-BUGS 50).
    pub fn receive_kind(&self, pt: u8) -> Option<CodecKind> {
        self.receive_codec(pt).and_then(RtpMap::kind)
    }

    /// The answer's audio section as an `sdp` crate media description on `port`.
    pub fn to_media_description(&self, port: u16) -> MediaDescription {
        media_description(
            port,
            &self.protocol,
            &self.receive,
            Some(self.ptime_ms),
            SUPPORTED_PTIMES_MS.last().copied(),
            self.direction,
        )
    }

    /// The answer's `m=audio` section on `port` as SDP lines (CRLF ended), for the SIP
    /// layer to put under its session header.
    pub fn to_sdp_answer(&self, port: u16) -> String {
        media_lines(&self.to_media_description(port))
    }
}

/// Chooses the ptime: the offered one if the engine plays it, else `preferred_ms` (or
/// 20 if that is not playable either), never above `maxptime_ms` (RFC 4566 §6).
pub fn choose_ptime(offered_ms: Option<u32>, maxptime_ms: Option<u32>, preferred_ms: u32) -> u32 {
    let playable = |p: &u32| SUPPORTED_PTIMES_MS.contains(p);
    let base = offered_ms
        .filter(playable)
        .or(Some(preferred_ms).filter(playable))
        .unwrap_or(DEFAULT_PTIME_MS);
    match maxptime_ms {
        Some(max) if base > max => SUPPORTED_PTIMES_MS
            .iter()
            .rev()
            .find(|&&p| p <= max)
            .copied()
            // A maxptime below 10 ms cannot be met; send the shortest we can.
            .unwrap_or(SUPPORTED_PTIMES_MS[0]),
        _ => base,
    }
}

/// Finds the companion entry (telephone-event or comfort noise) for a voice codec at
/// `clock_rate_hz`: the entry at that rate, else for telephone-event one at 8000
/// (FIELD-BUGS 48: DTMF is kept even when only /8000 is offered alongside Opus).
fn companion<'a>(
    entries: impl Iterator<Item = &'a RtpMap> + Clone,
    kind: CodecKind,
    clock_rate_hz: u32,
) -> Option<&'a RtpMap> {
    let of_kind = move |rate: u32| {
        entries
            .clone()
            .find(move |e| e.kind() == Some(kind) && e.clock_rate_hz == rate)
    };
    of_kind(clock_rate_hz).or_else(|| match kind {
        CodecKind::TelephoneEvent => of_kind(8000),
        _ => None,
    })
}

/// Whether voice codecs `a` and `b` can share one received stream: the same RTP clock
/// and the same audio rate (G.722 samples at 16 kHz on an 8 kHz clock; Opus, the only
/// codec on a 48 kHz clock, at the rate its session chooses).
fn same_stream_rate(a: &RtpMap, b: &RtpMap) -> bool {
    let audio_rate = |e: &RtpMap| match e.kind() {
        Some(CodecKind::G722) => 16_000,
        _ => e.clock_rate_hz,
    };
    a.clock_rate_hz == b.clock_rate_hz && audio_rate(a) == audio_rate(b)
}

/// Answers an offer (RFC 3264 §6.1). Voice codecs we support are answered on the
/// offerer's payload types (static 0/8/9 and dynamic 96–127 alike), in the offerer's
/// order unless [`LocalCapabilities::prefer_local_order`]; the first is sent, and only
/// those on its RTP clock and audio rate are listed with it (what its session receives:
/// PCMU with PCMA, never G.722 or Opus beside G.711). Comfort
/// noise and telephone-event are added at the sent codec's clock rate (telephone-event
/// falls back to 8000). The answer echoes the offerer's spelling of each encoding name.
///
/// Errors: [`NegotiationError::MediaDisabled`] for port 0,
/// [`NegotiationError::UnsupportedTransport`] for a transport other than plain RTP,
/// [`NegotiationError::NoCommonCodec`] when no voice codec is shared.
pub fn answer(
    offer: &MediaOffer,
    local: &LocalCapabilities,
) -> Result<NegotiatedMedia, NegotiationError> {
    if offer.port == 0 {
        return Err(NegotiationError::MediaDisabled);
    }
    if !is_plain_rtp(&offer.protocol) {
        return Err(NegotiationError::UnsupportedTransport(
            offer.protocol.clone(),
        ));
    }
    let mut common: Vec<(usize, &RtpMap, &LocalCodec)> = offer
        .codecs
        .iter()
        .enumerate()
        .filter_map(|(i, entry)| {
            let kind = entry.kind().filter(|k| k.is_audio())?;
            Some((i, entry, local.codec(kind)?))
        })
        .collect();
    if local.prefer_local_order {
        common.sort_by_key(|&(i, _, lc)| (lc.preference, i));
    }
    let Some(&(_, chosen, _)) = common.first() else {
        return Err(NegotiationError::NoCommonCodec {
            offered: offer.encodings(),
            supported: local.supported_encodings(),
        });
    };
    // Listed in the answer is what we receive: the offerer may switch to any of them
    // without signalling (RFC 3264 §6.1). A session receives only codecs on the sent
    // codec's RTP clock and audio rate (one timeline, one frame size), so only those are
    // listed; a peer sending another would be heard as nothing.
    common.retain(|&(_, entry, _)| same_stream_rate(entry, chosen));

    let mut receive: Vec<RtpMap> = common
        .iter()
        .map(|&(_, entry, lc)| RtpMap {
            fmtp: lc.fmtp.clone(),
            ..entry.clone()
        })
        .collect();

    let mut cn = None;
    if let Some(lc) = local.codec(CodecKind::ComfortNoise) {
        if let Some(e) = companion(
            offer.codecs.iter(),
            CodecKind::ComfortNoise,
            chosen.clock_rate_hz,
        ) {
            cn = Some(e.pt);
            receive.push(RtpMap {
                fmtp: lc.fmtp.clone(),
                ..e.clone()
            });
        }
    }

    let mut te = None;
    if local.telephone_event_enabled() {
        if let Some(e) = companion(
            offer.codecs.iter(),
            CodecKind::TelephoneEvent,
            chosen.clock_rate_hz,
        ) {
            te = Some((e.pt, e.clock_rate_hz));
            // Echo the offered events (absent means 0-15, RFC 4733 §2.4.1).
            receive.push(e.clone());
        }
    }

    Ok(NegotiatedMedia {
        send: chosen.clone(),
        receive,
        telephone_event_send: te.map(|t| t.0),
        telephone_event_recv: te.map(|t| t.0).into_iter().collect(),
        telephone_event_clock_rate_hz: te.map(|t| t.1),
        ptime_ms: choose_ptime(offer.ptime_ms, offer.maxptime_ms, local.ptime_ms),
        opus: (chosen.kind() == Some(CodecKind::Opus)).then(|| OpusParams::from_fmtp(&chosen.fmtp)),
        cn,
        direction: local.direction.answering(offer.direction),
        protocol: offer.protocol.clone(),
    })
}

/// Answers a re-offer within a running session (RFC 3264 §8). The offer is negotiated
/// from scratch, exactly as [`answer`] does: nothing of `previous` is reused but payload
/// numbers, so a codec dropped from the re-offer is never answered from a cache
/// (FIELD-BUGS 49). A codec the session already receives keeps its inbound payload
/// type when the re-offer moved it to another number and the old one is free (not used
/// by anything in the re-offer or the answer), so the PT→codec map of the session stays
/// stable (RFC 3264 §8.3.2); we still send on the re-offer's numbers.
///
/// Errors: as [`answer`].
pub fn negotiate_reoffer(
    previous: &NegotiatedMedia,
    offer: &MediaOffer,
    local: &LocalCapabilities,
) -> Result<NegotiatedMedia, NegotiationError> {
    let mut media = answer(offer, local)?;
    for i in 0..media.receive.len() {
        let current = media.receive[i].pt;
        let Some(old) = previous
            .receive
            .iter()
            .find(|p| p.same_codec(&media.receive[i]))
            .map(|p| p.pt)
        else {
            continue;
        };
        let free = old != current
            && old >= DYNAMIC_PT_MIN
            && offer.codec(old).is_none()
            && media.receive.iter().all(|r| r.pt != old);
        if free {
            media.receive[i].pt = old;
            for pt in &mut media.telephone_event_recv {
                if *pt == current {
                    *pt = old;
                }
            }
        }
    }
    Ok(media)
}

/// Applies the remote answer to our offer (offerer side, RFC 3264 §6.1 and §7). We send
/// the first voice codec of the answer that we offered, on the answer's payload type
/// (the number the answerer receives on, which may differ from ours: FIELD-BUGS 47),
/// and accept inbound every answered codec on the payload type of our offer, plus on
/// the answer's number when that does not clash with our offer (for peers that send
/// with their own numbering). Telephone-event and comfort noise are matched as in
/// [`answer`].
///
/// Errors: [`NegotiationError::MediaDisabled`] when the answer has port 0 (the stream
/// was rejected), [`NegotiationError::NoCommonCodec`] when it names no voice codec we
/// offered.
pub fn process_answer(
    our_offer: &MediaOffer,
    their_answer: &MediaOffer,
) -> Result<NegotiatedMedia, NegotiationError> {
    if their_answer.port == 0 {
        return Err(NegotiationError::MediaDisabled);
    }
    // Each answered entry with the entry of our offer it corresponds to: the same
    // number and codec first, else the same codec on another number.
    let pairs: Vec<(&RtpMap, &RtpMap)> = their_answer
        .codecs
        .iter()
        .filter_map(|theirs| {
            our_offer
                .codecs
                .iter()
                .find(|o| o.pt == theirs.pt && o.same_codec(theirs))
                .or_else(|| our_offer.codecs.iter().find(|o| o.same_codec(theirs)))
                .map(|ours| (theirs, ours))
        })
        .collect();
    let is_audio = |e: &RtpMap| e.kind().is_none_or(CodecKind::is_audio);
    let Some(&(send, _)) = pairs.iter().find(|(theirs, _)| is_audio(theirs)) else {
        return Err(NegotiationError::NoCommonCodec {
            offered: our_offer.encodings(),
            supported: their_answer.encodings(),
        });
    };

    let mut receive: Vec<RtpMap> = Vec::new();
    let accept = |receive: &mut Vec<RtpMap>, theirs: &RtpMap, ours: &RtpMap| -> Vec<u8> {
        let mut pts = vec![ours.pt];
        if receive.iter().all(|r| r.pt != ours.pt) {
            receive.push(ours.clone());
        }
        let clash =
            our_offer.codec(theirs.pt).is_some() || receive.iter().any(|r| r.pt == theirs.pt);
        if theirs.pt != ours.pt && !clash {
            receive.push(RtpMap {
                pt: theirs.pt,
                ..ours.clone()
            });
            pts.push(theirs.pt);
        }
        pts
    };
    for &(theirs, ours) in pairs.iter().filter(|(t, _)| is_audio(t)) {
        accept(&mut receive, theirs, ours);
    }
    let rate = send.clock_rate_hz;
    let answered = || pairs.iter().map(|(t, _)| *t);
    let our_entry = |theirs: &RtpMap| {
        pairs
            .iter()
            .find(|(t, _)| t.pt == theirs.pt)
            .map(|(_, o)| *o)
    };

    let mut cn = None;
    if let Some(theirs) = companion(answered(), CodecKind::ComfortNoise, rate) {
        if let Some(ours) = our_entry(theirs) {
            cn = Some(theirs.pt);
            accept(&mut receive, theirs, ours);
        }
    }
    let mut te = None;
    let mut te_recv = Vec::new();
    if let Some(theirs) = companion(answered(), CodecKind::TelephoneEvent, rate) {
        if let Some(ours) = our_entry(theirs) {
            te = Some((theirs.pt, theirs.clock_rate_hz));
            te_recv = accept(&mut receive, theirs, ours);
        }
    }

    Ok(NegotiatedMedia {
        send: send.clone(),
        receive,
        telephone_event_send: te.map(|t| t.0),
        telephone_event_recv: te_recv,
        telephone_event_clock_rate_hz: te.map(|t| t.1),
        ptime_ms: choose_ptime(
            their_answer.ptime_ms,
            their_answer.maxptime_ms,
            our_offer.ptime_ms.unwrap_or(DEFAULT_PTIME_MS),
        ),
        opus: (send.kind() == Some(CodecKind::Opus)).then(|| OpusParams::from_fmtp(&send.fmtp)),
        cn,
        direction: our_offer.direction.answering(their_answer.direction),
        protocol: our_offer.protocol.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtpmap_values_parse_and_malformed_ones_are_none() {
        let m = RtpMap::parse_rtpmap("111 opus/48000/2").unwrap();
        assert_eq!(
            (m.pt, m.name.as_str(), m.clock_rate_hz, m.channels),
            (111, "opus", 48000, 2)
        );
        assert_eq!(RtpMap::parse_rtpmap("0 PCMU/8000").unwrap().channels, 1);
        for bad in [
            "",
            "96",
            "96 AMR",
            "96 AMR/x",
            "200 AMR/8000",
            "96 /8000",
            "96 AMR/8000/0",
            "96 AMR/0",
        ] {
            assert!(RtpMap::parse_rtpmap(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn fmtp_params_round_trip_including_bare_tokens() {
        let p = parse_fmtp_params("minptime=10; useinbandfec=1");
        assert_eq!(write_fmtp_params(&p), "minptime=10;useinbandfec=1");
        assert_eq!(write_fmtp_params(&parse_fmtp_params("0-15")), "0-15");
    }

    #[test]
    fn ptime_choice_follows_offer_playable_set_and_maxptime() {
        assert_eq!(choose_ptime(Some(30), None, 20), 30);
        assert_eq!(choose_ptime(Some(25), None, 20), 20);
        assert_eq!(choose_ptime(None, None, 40), 40);
        assert_eq!(choose_ptime(Some(60), Some(40), 20), 40);
        assert_eq!(choose_ptime(None, Some(35), 40), 30);
        assert_eq!(choose_ptime(None, Some(5), 20), 10);
    }

    #[test]
    fn every_table_kind_has_a_primary_entry_and_static_numbers_are_consistent() {
        for k in known_codecs() {
            assert!(KnownCodec::primary(k.kind).is_some());
            if let Some(pt) = k.static_pt {
                let s = static_payload_type(pt).unwrap();
                assert!(s.same_codec_as_known(k), "{k:?}");
            }
        }
    }
}
