//! How audio crosses a bridge from one session to another: relayed as it arrived (pass-
//! through: same codec both sides, no decode or encode) or decoded, converted to the other
//! side's rate and re-encoded. Decided on the control plane from the two sessions'
//! negotiated parameters ([`plan`]); the lane carries out the plan per frame (a relayed
//! frame still falls back to decode + encode when it cannot be passed on unchanged: a
//! concealed frame, processing on the receiving session, a time-scale change).
//!
//! Channels: sessions process mono; a stereo Opus stream is downmixed by libopus's
//! decoder and a stereo Opus sender duplicates the mono frame (see
//! [`OpusSettings`](super::OpusSettings)), so a plan never needs a channel mixer.

use crate::error::Error;
use crate::processing::format::resample::Resampler;
use crate::session::MediaSessionParams;

use super::Codec;

/// The path from one session's decoded audio to another session's encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TranscodePlan {
    /// Same codec both sides (and relaying enabled): payloads may pass through unchanged.
    pub relay_ok: bool,
    /// The destination's send codec.
    pub dst_codec: Codec,
    /// Sample-rate conversion `(from_hz, to_hz)` for decoded audio, `None` when the rates
    /// match.
    pub resample: Option<(u32, u32)>,
    /// Samples per frame of the source session (the converter's input size).
    pub src_frame_samples: usize,
}

/// Plans the path of audio received on `from` to `to`'s encoder. `relay_same_codec` is
/// the engine's setting ([`EngineConfig::relay_same_codec`](crate::EngineConfig::relay_same_codec)).
pub fn plan(
    from: &MediaSessionParams,
    to: &MediaSessionParams,
    relay_same_codec: bool,
) -> TranscodePlan {
    let (src, dst) = (from.sample_rate().hz(), to.sample_rate().hz());
    TranscodePlan {
        // The bitstream of G.711, G.722 and Opus does not depend on the receiver's
        // processing rate, so a codec match is enough to pass payloads on.
        relay_ok: relay_same_codec && from.tx.codec == to.tx.codec,
        dst_codec: to.tx.codec,
        resample: (src != dst).then_some((src, dst)),
        src_frame_samples: from.frame_samples(),
    }
}

impl TranscodePlan {
    /// Builds the rate converter the plan needs (control plane; allocates).
    ///
    /// Errors: [`Error::UnsupportedParameters`] when no converter exists between the rates.
    pub fn resampler(&self) -> Result<Option<Box<Resampler>>, Error> {
        let Some((from, to)) = self.resample else {
            return Ok(None);
        };
        Resampler::new(from, to, 1, self.src_frame_samples)
            .map(|r| Some(Box::new(r)))
            .map_err(|_| Error::UnsupportedParameters {
                codec: self.dst_codec,
                reason: "no sample-rate conversion between these codecs",
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{CodecSpec, OpusSettings};
    use crate::types::{Ptime, SampleRate};

    fn p(spec: CodecSpec) -> MediaSessionParams {
        MediaSessionParams::new(spec, Ptime::MS_20)
    }

    #[test]
    fn same_codec_relays_and_different_rates_resample() {
        let relay = plan(&p(CodecSpec::PCMU), &p(CodecSpec::PCMU), true);
        assert!(relay.relay_ok && relay.resample.is_none());
        assert!(!plan(&p(CodecSpec::PCMU), &p(CodecSpec::PCMU), false).relay_ok);
        let g = plan(&p(CodecSpec::G722), &p(CodecSpec::PCMA), true);
        assert!(!g.relay_ok);
        assert_eq!(g.resample, Some((16_000, 8_000)));
        assert_eq!(g.src_frame_samples, 320);
        assert!(g.resampler().unwrap().is_some());
        // Opus run at 8 kHz against G.711: no converter at all.
        let mut o = p(CodecSpec::OPUS);
        o.opus = OpusSettings {
            sample_rate: SampleRate::new(8000).unwrap(),
            ..OpusSettings::default()
        };
        let n = plan(&o, &p(CodecSpec::PCMU), true);
        assert_eq!(n.resample, None);
        assert!(n.resampler().unwrap().is_none());
        // Opus legs at different rates still relay (the bitstream is rate-independent).
        let full = plan(&p(CodecSpec::OPUS), &o, true);
        assert!(full.relay_ok);
        assert_eq!(full.resample, Some((48_000, 8_000)));
    }
}
