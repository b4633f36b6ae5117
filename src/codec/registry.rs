//! The control-plane side of codecs: which codecs exist and what they can do
//! ([`CodecRegistry`]), the payload-type bindings a gateway negotiated, and building a
//! codec's encoder and decoder ([`CodecManager::create_audio_codec`]) so the finished state
//! can be moved into a lane. Also the frame-level codec traits and the video seam.
//!
//! Nothing here runs on a lane: creating a codec allocates (libopus state, G.722 state).
//! The lane receives the built [`AnyEncoder`]/[`AnyDecoder`] and calls them through closed
//! enums (no per-frame dynamic dispatch).

use super::negotiation::{CodecKind, LocalCapabilities};
use super::{AnyDecoder, AnyEncoder, Codec, CodecError, CodecInfo, CodecSpec, OpusSettings};
use crate::error::Error;
use crate::types::{PayloadType, Ptime};

/// Encodes whole frames into caller-provided buffers (real-time safe implementations).
pub trait AudioEncoder {
    /// Encodes one frame of `pcm` into `out`; returns the payload length.
    /// Called on the real-time thread; never allocates.
    fn encode_frame(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, CodecError>;
    /// The codec.
    fn codec(&self) -> Codec;
}

/// Decodes whole payloads into caller-provided buffers (real-time safe implementations).
pub trait AudioDecoder {
    /// Decodes one payload into `out`; returns samples written.
    /// Called on the real-time thread; never allocates.
    fn decode_frame(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, CodecError>;
    /// Conceals `out.len()` missing samples with the codec's own concealment (using the
    /// next packet's forward error correction when given); false when the codec has none.
    fn conceal_frame(&mut self, next: Option<&[u8]>, out: &mut [i16]) -> bool;
    /// The codec.
    fn codec(&self) -> Codec;
}

impl AudioEncoder for AnyEncoder {
    fn encode_frame(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, CodecError> {
        self.encode(pcm, out)
    }
    fn codec(&self) -> Codec {
        AnyEncoder::codec(self)
    }
}

impl AudioDecoder for AnyDecoder {
    fn decode_frame(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
        self.decode(payload, out)
    }
    fn conceal_frame(&mut self, next: Option<&[u8]>, out: &mut [i16]) -> bool {
        self.conceal(next, out)
    }
    fn codec(&self) -> Codec {
        AnyDecoder::codec(self)
    }
}

/// What a codec can do, as the registry advertises it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodecCapabilities {
    /// Name, rates, channels and static payload type.
    pub info: &'static CodecInfo,
    /// Packetisation times media-core runs it at.
    pub ptimes: &'static [Ptime],
    /// The codec conceals lost frames itself (otherwise the generic PLC does).
    pub own_concealment: bool,
    /// In-band forward error correction (Opus LBRR).
    pub inband_fec: bool,
    /// Discontinuous transmission.
    pub dtx: bool,
    /// Bit rate range, bit/s (fixed-rate codecs: one value).
    pub bitrate_bps: (u32, u32),
}

const PTIMES: &[Ptime] = &[
    Ptime::MS_10,
    Ptime::MS_20,
    Ptime::MS_30,
    Ptime::MS_40,
    Ptime::MS_60,
];

/// The codecs a gateway offers, with their capabilities, in preference order. An operator
/// may remove codecs (e.g. to keep Opus off a trunk) before building a [`CodecManager`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecRegistry {
    entries: Vec<CodecCapabilities>,
}

impl Default for CodecRegistry {
    fn default() -> Self {
        Self::all()
    }
}

impl CodecRegistry {
    /// Every codec media-core runs: Opus, G.722, PCMU, PCMA (wideband first).
    pub fn all() -> Self {
        let cap = |codec: Codec| CodecCapabilities {
            info: codec.info(),
            ptimes: PTIMES,
            own_concealment: codec == Codec::Opus,
            inband_fec: codec == Codec::Opus,
            dtx: codec == Codec::Opus,
            bitrate_bps: match codec {
                Codec::Pcmu | Codec::Pcma | Codec::G722 => (64_000, 64_000),
                // RFC 7587 §6.1.
                Codec::Opus => (6_000, 510_000),
            },
        };
        CodecRegistry {
            entries: [Codec::Opus, Codec::G722, Codec::Pcmu, Codec::Pcma]
                .into_iter()
                .map(cap)
                .collect(),
        }
    }

    /// The registry without `codec`.
    pub fn without(mut self, codec: Codec) -> Self {
        self.entries.retain(|e| e.info.codec != codec);
        self
    }

    /// The capabilities of `codec`, if registered.
    pub fn get(&self, codec: Codec) -> Option<&CodecCapabilities> {
        self.entries.iter().find(|e| e.info.codec == codec)
    }

    /// Registered codecs in preference order.
    pub fn iter(&self) -> impl Iterator<Item = &CodecCapabilities> {
        self.entries.iter()
    }

    /// The registered codec an `a=rtpmap` names (encoding name compared
    /// case-insensitively, clock rate and channel count matched; Opus is always
    /// `opus/48000/2` in SDP, RFC 7587 §7).
    pub fn find(&self, encoding_name: &str, clock_rate_hz: u32, channels: u8) -> Option<Codec> {
        self.entries
            .iter()
            .find(|e| {
                let sdp_channels = if e.info.codec == Codec::Opus {
                    2
                } else {
                    e.info.channels
                };
                e.info.encoding_name.eq_ignore_ascii_case(encoding_name)
                    && e.info.clock_rate_hz == clock_rate_hz
                    && sdp_channels == channels
            })
            .map(|e| e.info.codec)
    }

    /// What offer/answer may use: the registered codecs plus telephone-event and comfort
    /// noise, in the registry's order.
    pub fn local_capabilities(&self) -> LocalCapabilities {
        let mut kinds: Vec<CodecKind> = self
            .entries
            .iter()
            .map(|e| match e.info.codec {
                Codec::Pcmu => CodecKind::Pcmu,
                Codec::Pcma => CodecKind::Pcma,
                Codec::G722 => CodecKind::G722,
                Codec::Opus => CodecKind::Opus,
            })
            .collect();
        kinds.push(CodecKind::TelephoneEvent);
        kinds.push(CodecKind::ComfortNoise);
        LocalCapabilities::new(&kinds)
    }
}

/// Parameters of a codec instance (control plane).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioCodecParams {
    /// Packetisation time.
    pub ptime: Ptime,
    /// Opus encoder settings (ignored by other codecs).
    pub opus: OpusSettings,
}

impl Default for AudioCodecParams {
    fn default() -> Self {
        AudioCodecParams {
            ptime: Ptime::MS_20,
            opus: OpusSettings::default(),
        }
    }
}

/// An encoder and decoder built on the control plane, ready to be moved into a lane.
#[derive(Debug)]
pub struct AudioCodec {
    /// The payload type and codec.
    pub spec: CodecSpec,
    /// Samples per frame at the codec's processing rate.
    pub frame_samples: usize,
    /// The encoder.
    pub encoder: AnyEncoder,
    /// The decoder.
    pub decoder: AnyDecoder,
}

/// Builds codec state from payload types: static ones (RFC 3551: 0, 8, 9) and the dynamic
/// ones a negotiation bound ([`CodecManager::bind`]).
#[derive(Debug, Clone, Default)]
pub struct CodecManager {
    registry: CodecRegistry,
    dynamic: Vec<(PayloadType, Codec)>,
}

impl CodecManager {
    /// A manager over `registry`.
    pub fn new(registry: CodecRegistry) -> Self {
        CodecManager {
            registry,
            dynamic: Vec::new(),
        }
    }

    /// The registry.
    pub fn registry(&self) -> &CodecRegistry {
        &self.registry
    }

    /// Binds a dynamic payload type (96–127) to a codec, as an `a=rtpmap` does.
    ///
    /// Errors: [`Error::UnsupportedParameters`] for a static or out-of-range number or an
    /// unregistered codec.
    pub fn bind(&mut self, payload_type: PayloadType, codec: Codec) -> Result<(), Error> {
        if !(96..=127).contains(&payload_type.get()) || self.registry.get(codec).is_none() {
            return Err(Error::UnsupportedParameters {
                codec,
                reason: "dynamic payload types are 96-127 and name a registered codec",
            });
        }
        self.dynamic.retain(|&(pt, _)| pt != payload_type);
        self.dynamic.push((payload_type, codec));
        Ok(())
    }

    /// The codec `payload_type` carries: a binding, else the static assignment.
    pub fn resolve(&self, payload_type: PayloadType) -> Option<Codec> {
        self.dynamic
            .iter()
            .find(|&&(pt, _)| pt == payload_type)
            .map(|&(_, c)| c)
            .or_else(|| CodecSpec::from_static(payload_type).ok().map(|s| s.codec))
            .filter(|&c| self.registry.get(c).is_some())
    }

    /// Builds the encoder and decoder for `payload_type` (control plane: allocates).
    ///
    /// Errors: [`Error::UnsupportedPayloadType`] when the payload type is neither static nor
    /// bound to a registered codec; [`Error::UnsupportedParameters`] for a ptime the codec
    /// does not run at.
    pub fn create_audio_codec(
        &self,
        payload_type: PayloadType,
        params: &AudioCodecParams,
    ) -> Result<AudioCodec, Error> {
        let codec = self
            .resolve(payload_type)
            .ok_or(Error::UnsupportedPayloadType(payload_type))?;
        let caps = self
            .registry
            .get(codec)
            .ok_or(Error::UnsupportedPayloadType(payload_type))?;
        if !caps.ptimes.contains(&params.ptime) {
            return Err(Error::UnsupportedParameters {
                codec,
                reason: "ptime",
            });
        }
        Ok(AudioCodec {
            spec: CodecSpec {
                payload_type,
                codec,
            },
            frame_samples: codec.frame_samples(params.ptime),
            encoder: AnyEncoder::with_settings(codec, params.opus),
            decoder: AnyDecoder::new(codec),
        })
    }
}

/// One raw video picture in planar layout (e.g. I420), borrowed from the caller.
#[derive(Debug)]
pub struct VideoFrame<'a> {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Planes (Y, U, V for I420) and their strides in bytes.
    pub planes: [(&'a mut [u8], usize); 3],
}

/// The seam a video codec would implement (video is future work; nothing implements it
/// yet). Same contract as audio: whole frames into caller-provided buffers, built on the
/// control plane, no allocation per frame.
pub trait VideoCodec: Send {
    /// The SDP encoding name (`H264`, `VP8`, ...).
    fn encoding_name(&self) -> &'static str;
    /// Encodes one picture into `out`; returns the bytes written (one access unit, to be
    /// packetised by the caller).
    fn encode(&mut self, frame: &VideoFrame<'_>, out: &mut [u8]) -> Result<usize, CodecError>;
    /// Decodes one access unit into `frame`; returns whether a picture was produced.
    fn decode(&mut self, data: &[u8], frame: &mut VideoFrame<'_>) -> Result<bool, CodecError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_finds_codecs_by_rtpmap_whatever_the_case() {
        let r = CodecRegistry::all();
        assert_eq!(r.find("PCMU", 8000, 1), Some(Codec::Pcmu));
        assert_eq!(r.find("pcma", 8000, 1), Some(Codec::Pcma));
        assert_eq!(r.find("G722", 8000, 1), Some(Codec::G722));
        assert_eq!(r.find("OPUS", 48000, 2), Some(Codec::Opus));
        assert_eq!(r.find("opus", 48000, 1), None);
        assert_eq!(r.find("G729", 8000, 1), None);
        let no_opus = CodecRegistry::all().without(Codec::Opus);
        assert_eq!(no_opus.find("opus", 48000, 2), None);
        assert!(no_opus.get(Codec::Opus).is_none());
        assert!(r
            .get(Codec::Opus)
            .is_some_and(|c| c.inband_fec && c.own_concealment));
    }

    #[test]
    fn the_manager_builds_codecs_for_static_and_bound_payload_types() {
        let mut m = CodecManager::new(CodecRegistry::all());
        let pt = |n| PayloadType::new(n).unwrap();
        let c = m
            .create_audio_codec(pt(0), &AudioCodecParams::default())
            .unwrap();
        assert_eq!((c.spec.codec, c.frame_samples), (Codec::Pcmu, 160));
        assert!(matches!(
            m.create_audio_codec(pt(111), &AudioCodecParams::default()),
            Err(Error::UnsupportedPayloadType(_))
        ));
        m.bind(pt(111), Codec::Opus).unwrap();
        let mut c = m
            .create_audio_codec(pt(111), &AudioCodecParams::default())
            .unwrap();
        assert_eq!(c.frame_samples, 960);
        // The built pair works frame by frame through the traits.
        let pcm = vec![0i16; 960];
        let mut payload = [0u8; 400];
        let n = c.encoder.encode_frame(&pcm, &mut payload).unwrap();
        let mut out = vec![0i16; 960];
        assert_eq!(
            c.decoder.decode_frame(&payload[..n], &mut out).unwrap(),
            960
        );
        assert!(c.decoder.conceal_frame(None, &mut out));
        // Static numbers cannot be rebound; unregistered codecs cannot be bound.
        assert!(m.bind(pt(8), Codec::Opus).is_err());
        let mut g711_only = CodecManager::new(CodecRegistry::all().without(Codec::Opus));
        assert!(g711_only.bind(pt(111), Codec::Opus).is_err());
    }
}
