//! The per-session voice processing chain run by the lane's DSP stage.
//!
//! Each component is a pure, preallocated processor with a control-plane config
//! (`XxxConfig`) and a real-time `process`. [`DspChain`] runs the enabled ones on a
//! session's received audio (the *capture* direction, heading to the bridged leg), in
//! this order:
//!
//! 1. echo canceller ([`aec`]), with the audio this session *sends* (its playback
//!    direction, fed by [`DspChain::push_reference`]) as the echo reference;
//! 2. DTMF detector ([`dtmf_detector`]), after echo removal so our own tones echoed back
//!    are not reported as the peer's digits, before anything that changes levels;
//! 3. noise suppressor ([`ns`]), then the optional RNN suppressor ([`rnn_ns`], 48 kHz
//!    only, 10 ms of delay);
//! 4. voice activity detector ([`vad`]): with a noise suppressor, on the suppressor's
//!    analysis of each block of the received audio (one windowed transform serves both,
//!    and the detector decides as it would on that audio alone), otherwise on the audio
//!    as it stands here;
//! 5. automatic gain control ([`agc`]), whose gain follows speech only (VAD-driven);
//! 6. a fixed gain (`rx_gain_db`).
//!
//! Digits and talkspurt changes are reported through the `events` callback as
//! [`DspEvent`]s (the lane turns them into engine events). Everything a session enables is
//! built (and checked) on the control plane; a session reconfigures at runtime by an
//! update through the command queue, which hands the lane a newly built chain.

pub mod aec;
pub mod agc;
pub mod config;
pub mod dtmf_detector;
pub mod ns;
pub mod plc;
pub mod rnn_ns;
pub mod tsm;
pub mod vad;

use super::effects::Gain;
use crate::runtime::prefetch::Trickle;
use std::ops::Range;

pub use config::DspConfigError;

/// The larger of `a` and `b`, and `b` when either is NaN: one SSE `maxps` in a
/// vectorised loop, where `f32::max` (which returns the number when the other is NaN)
/// takes four instructions. In the suppressor's per-bin loops that was about 550 of the
/// 10,000 instructions of a 10 ms block at 8 kHz. With a constant `b` a NaN `a` still
/// turns into a safe bound.
#[inline(always)]
pub(crate) fn fast_max(a: f32, b: f32) -> f32 {
    if a > b {
        a
    } else {
        b
    }
}

/// The smaller of `a` and `b`, and `b` when either is NaN: one `minps` (see
/// [`fast_max`]).
#[inline(always)]
pub(crate) fn fast_min(a: f32, b: f32) -> f32 {
    if a < b {
        a
    } else {
        b
    }
}

/// `y` rounded to the nearest integer (ties to even) and saturated to i16: the clamp
/// keeps it under 2²², where adding 1.5 · 2²³ rounds it into the low mantissa bits (the
/// default rounding mode), so no float-to-int conversion is needed. Rust's `as i16` is a
/// saturating conversion that SSE2 cannot do four at a time, and it kept the output loops
/// of the suppressor and the AGC scalar (a quarter of their instructions); this one
/// vectorises. NaN gives some value in range, never a panic.
#[inline]
pub(crate) fn round_to_i16(y: f32) -> i16 {
    const SHIFTER: f32 = 12_582_912.0;
    let r = y.clamp(-32_768.0, 32_767.0) + SHIFTER;
    (r.to_bits() as i32).wrapping_sub(SHIFTER.to_bits() as i32) as i16
}

/// Settings for a session's DSP chain (control plane). Each component is off when `None`;
/// its `sample_rate_hz` is replaced by the session's decoded rate when the chain is built.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct DspConfig {
    /// Linear gain in dB applied to received audio before it is re-encoded
    /// (0.0 = pass-through, which also allows payload relay).
    pub rx_gain_db: f32,
    /// Echo canceller.
    pub aec: Option<aec::AecConfig>,
    /// In-band DTMF detection (digits become engine events). On a session that negotiated
    /// telephone-event and has received RFC 4733 events since its current parameters took
    /// effect, digits are reported from those only: the tones such a peer may leave in its
    /// audio are not reported (or forwarded) a second time. A re-INVITE that drops
    /// telephone-event, or brings another peer, hears in-band digits again.
    pub dtmf: Option<dtmf_detector::DtmfDetectorConfig>,
    /// Noise suppression.
    pub ns: Option<ns::NsConfig>,
    /// RNN noise suppression (RNNoise through `nnnoiseless`; 48 kHz sessions only): the
    /// heavier tier for wideband calls, about 0.25 ms of CPU per 20 ms frame.
    pub ns_rnn: Option<rnn_ns::RnnNsConfig>,
    /// Voice activity detection (talkspurt events; drives the AGC).
    pub vad: Option<vad::VadConfig>,
    /// Automatic gain control.
    pub agc: Option<agc::AgcConfig>,
}

impl DspConfig {
    /// Every voice-processing component on with its defaults (echo canceller, DTMF
    /// detection, noise suppression, VAD, AGC).
    pub fn voice() -> Self {
        DspConfig {
            rx_gain_db: 0.0,
            aec: Some(aec::AecConfig::default()),
            dtmf: Some(dtmf_detector::DtmfDetectorConfig::default()),
            ns: Some(ns::NsConfig::default()),
            ns_rnn: None,
            vad: Some(vad::VadConfig::default()),
            agc: Some(agc::AgcConfig::default()),
        }
    }

    /// True when the chain leaves audio untouched, so same-codec legs may relay payloads.
    /// Detectors alone (DTMF, VAD) do not change audio, but they need it decoded, which a
    /// G.711 relay does anyway; other codecs relay undecoded, so any component counts.
    pub fn is_passthrough(&self) -> bool {
        self.rx_gain_db == 0.0
            && self.aec.is_none()
            && self.dtmf.is_none()
            && self.ns.is_none()
            && self.ns_rnn.is_none()
            && self.vad.is_none()
            && self.agc.is_none()
    }

    /// Checks every enabled component at `sample_rate_hz` (control plane).
    pub fn validate(&self, sample_rate_hz: u32) -> Result<(), DspConfigError> {
        // Built for 10 ms and for 20 ms frames: the echo canceller's block, and so the
        // tables it needs, follow the session's frame (`aec::block_for`).
        let block = config::block_len(sample_rate_hz);
        DspChain::new(self, sample_rate_hz, block)?;
        DspChain::new(self, sample_rate_hz, 2 * block).map(|_| ())
    }
}

/// What the chain reports about the audio it processed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DspEvent {
    /// A DTMF digit began (`ended_ms: None`) or ended (`Some(duration)`).
    Digit {
        /// '0'..='9', '*', '#', 'A'..='D'.
        digit: char,
        /// `None` at the start, the tone's duration in ms at the end.
        ended_ms: Option<u32>,
    },
    /// Speech started (`true`) or stopped (`false`).
    Talkspurt(bool),
}

/// The last audio sent to the session's peer: the echo canceller's reference. A ring of
/// two maximum frames; the canceller takes the newest samples, as many as it processes.
#[derive(Debug)]
struct Reference {
    ring: Box<[i16]>,
    pos: usize,
    /// Samples in the last push (what the next frame will most likely read back).
    last: usize,
    /// Samples pushed since the last read (at most the ring's length): a read takes these
    /// and counts the rest of its frame as silence, so a period in which nothing was sent
    /// (the peer had nothing to play, an application underran, the route went away) is
    /// silence to the canceller, not the last frame sent read again.
    fresh: usize,
}

impl Reference {
    fn new(len: usize) -> Self {
        Reference {
            ring: vec![0; len.max(1)].into_boxed_slice(),
            pos: 0,
            last: 0,
            fresh: 0,
        }
    }

    /// The ring's indices of `k` samples (at most its length) from `start` (at most its
    /// length): the run up to its end, then the run from its beginning. Two runs instead
    /// of an index wrapped per sample (a division each).
    fn runs(&self, start: usize, k: usize) -> (Range<usize>, Range<usize>) {
        let first = (self.ring.len() - start).min(k);
        (start..start + first, 0..k - first)
    }

    fn push(&mut self, x: &[i16]) {
        let n = self.ring.len();
        let x = &x[x.len().saturating_sub(n)..];
        let (a, b) = self.runs(self.pos, x.len());
        let first = a.len();
        self.ring[a].copy_from_slice(&x[..first]);
        self.ring[b].copy_from_slice(&x[first..]);
        self.pos = (self.pos + x.len()) % n;
        self.last = x.len();
        self.fresh = (self.fresh + x.len()).min(n);
    }

    /// Where the newest `k` samples (at most the ring's length) lie.
    fn newest(&self, k: usize) -> (Range<usize>, Range<usize>) {
        let n = self.ring.len();
        self.runs((self.pos + n - k) % n, k)
    }

    /// Queues on `t` the newest samples a frame as long as the last one pushed reads
    /// back ([`Self::latest`]). Reads no samples.
    fn queue_prefetch(&self, t: &mut Trickle) {
        let (a, b) = self.newest(self.last.min(self.ring.len()));
        t.queue(&self.ring[a]);
        t.queue(&self.ring[b]);
    }

    /// Starts loading the samples the next push as long as the last one writes. A hint
    /// only: reads no samples.
    fn prefetch_write(&self) {
        let n = self.ring.len();
        let (a, b) = self.runs(self.pos.min(n), self.last.min(n));
        crate::runtime::prefetch::slice(&self.ring[a]);
        crate::runtime::prefetch::slice(&self.ring[b]);
    }

    /// Writes the newest `out.len()` samples of what was sent, where nothing sent since
    /// the last read counts as silence: the samples pushed since then, newest last, after
    /// zeros for the rest; then starts a new read period.
    fn take_latest(&mut self, out: &mut [i16]) {
        let k = out.len().min(self.fresh);
        let pad = out.len() - k;
        out[..pad].fill(0);
        let (a, b) = self.newest(k);
        let first = a.len();
        out[pad..pad + first].copy_from_slice(&self.ring[a]);
        out[pad + first..].copy_from_slice(&self.ring[b]);
        self.fresh = 0;
    }
}

/// A session's DSP chain, processing one frame in place per call (see module docs).
/// The voice-processing components live behind one box, so a session without them keeps
/// its hot state small (two words).
#[derive(Debug)]
pub struct DspChain {
    gain: Option<Gain>,
    /// Whether the chain has an echo canceller, kept beside the box so the lane can ask
    /// for every frame it sends without touching the box.
    wants_reference: bool,
    voice: Option<Box<Voice>>,
}

/// Work buffers a thread lends to every chain it runs ([`DspChain::process`]).
///
/// Components whose buffers are rewritten from scratch every block (the analysis window,
/// spectrum and periodogram that the noise suppressor and the VAD share, the suppressor's
/// per-bin gains, the VAD's per-band powers and noise) take them from here rather than
/// each owning a set: a lane runs thousands of chains one after another, and one set
/// stays in the cache where thousands would each be fetched from memory per frame. Built
/// on the control plane for every supported rate; one per thread (the lane's DSP stage
/// owns one).
#[derive(Clone)]
pub struct DspScratch {
    ns: ns::NsWork,
    vad: vad::VadWork,
    /// One echo canceller work space per block length of `fft::SIZES`: 80, 160, 320, 480
    /// and 960 samples (10 ms at each supported rate, which includes 20 ms at 8 kHz, and
    /// 20 ms at 16 and 48 kHz; see [`aec::block_for`]).
    aec: Box<[aec::AecWork]>,
    /// The next chain's echo canceller state, issued for prefetch in steps by the one
    /// processed before it (see [`DspChain::prefetch`]).
    trickle: Trickle,
}

impl DspScratch {
    /// Allocates the work buffers for chains at any of
    /// [`config::SUPPORTED_RATES_HZ`]. Control plane.
    pub fn new() -> Self {
        DspScratch {
            ns: ns::NsWork::for_rates(&config::SUPPORTED_RATES_HZ),
            vad: vad::VadWork::for_rates(&config::SUPPORTED_RATES_HZ),
            aec: crate::processing::fft::SIZES
                .into_iter()
                .filter_map(aec::AecWork::new)
                .collect(),
            trickle: Trickle::new(),
        }
    }

    /// Issues every line still queued for prefetch (see [`DspChain::prefetch`]), for a
    /// caller about to process a chain that will not issue them in steps (one without an
    /// echo canceller). Called on the real-time thread.
    #[inline]
    pub(crate) fn flush_prefetch(&mut self) {
        self.trickle.flush();
    }
}

impl Default for DspScratch {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for DspScratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DspScratch").finish_non_exhaustive()
    }
}

/// The enabled voice-processing components of a chain.
#[derive(Debug)]
struct Voice {
    aec: Option<aec::EchoCanceller>,
    reference: Option<Reference>,
    ref_frame: Box<[i16]>,
    dtmf: Option<dtmf_detector::DtmfDetector>,
    ns: Option<ns::NsCore>,
    ns_rnn: Option<rnn_ns::RnnNoiseSuppressor>,
    /// Handed the noise suppressor's analysis of each block when there is one (see
    /// [`Voice::process`]), so it keeps no samples and computes no transform of its own.
    vad: Option<vad::VadCore>,
    agc: Option<agc::Agc>,
    speaking: bool,
}

/// Longest frame a chain processes: 60 ms at 48 kHz.
const MAX_FRAME: usize = 2880;

impl DspChain {
    /// Starts loading the state the next [`DspChain::process`] will touch, in two steps a
    /// caller walking many chains spaces out: `first`, the chain's box; then (its pointers
    /// loaded by then) each component's buffers. An echo canceller's buffers (about
    /// 30 KB) are queued in `scratch` instead, for the chain processed before this one
    /// to issue a few lines at a time ([`Trickle`]); whatever an earlier call left
    /// queued is issued first. A hint only: reads the components' buffer addresses,
    /// never their contents.
    /// Called on the real-time thread.
    #[inline]
    pub fn prefetch(&self, first: bool, scratch: &mut DspScratch) {
        let Some(v) = self.voice.as_deref() else {
            return;
        };
        if first {
            crate::runtime::prefetch::object(v);
            return;
        }
        if let Some(aec) = &v.aec {
            let t = &mut scratch.trickle;
            t.flush();
            // In the order the frame touches them: the reference, copied out, then the
            // canceller's state.
            if let Some(r) = &v.reference {
                r.queue_prefetch(t);
                t.queue(&v.ref_frame[..r.last.min(v.ref_frame.len())]);
            }
            aec.queue_prefetch(t);
        }
        if let Some(ns) = &v.ns {
            ns.prefetch();
        }
        if let Some(vad) = &v.vad {
            vad.prefetch();
        }
        if let Some(d) = &v.dtmf {
            d.prefetch();
        }
    }

    /// Starts loading what [`DspChain::push_reference`] of a frame as long as the last
    /// will write, in the two steps of [`DspChain::prefetch`]: `first`, the line holding
    /// the reference ring's position; then the ring's lines at that position. A hint
    /// only. Called on the real-time thread.
    #[inline]
    pub fn prefetch_reference(&self, first: bool) {
        let Some(v) = self.voice.as_deref() else {
            return;
        };
        if first {
            crate::runtime::prefetch::line(&v.reference);
        } else if let Some(r) = &v.reference {
            r.prefetch_write();
        }
    }

    /// Offsets the chain's periodic work by `k` blocks (see [`vad::VadCore::stagger`]), so
    /// that chains built together do not all do it in the same tick. Control plane.
    pub(crate) fn stagger(&mut self, k: u32) {
        if let Some(vad) = self.voice.as_mut().and_then(|v| v.vad.as_mut()) {
            vad.stagger(k);
        }
    }

    /// Builds the chain for `config` at `sample_rate_hz` (the session's decoded rate), for
    /// frames of `frame_samples` (the session's ptime; the echo canceller works in the
    /// longest blocks they allow, [`aec::block_for`]). Control plane: allocates everything.
    pub fn new(
        config: &DspConfig,
        sample_rate_hz: u32,
        frame_samples: usize,
    ) -> Result<Self, DspConfigError> {
        let aec = config
            .aec
            .map(|c| {
                // Its work space is the lane's (`DspScratch`), lent to each frame.
                aec::EchoCanceller::for_lane(
                    aec::AecConfig {
                        sample_rate_hz,
                        ..c
                    },
                    frame_samples,
                )
            })
            .transpose()?;
        let dtmf = config
            .dtmf
            .map(|c| {
                dtmf_detector::DtmfDetector::new(dtmf_detector::DtmfDetectorConfig {
                    sample_rate_hz,
                    ..c
                })
            })
            .transpose()?;
        let ns = config
            .ns
            .map(|c| {
                ns::NsCore::new(ns::NsConfig {
                    sample_rate_hz,
                    ..c
                })
            })
            .transpose()?;
        let ns_rnn = config
            .ns_rnn
            .map(|c| {
                rnn_ns::RnnNoiseSuppressor::new(rnn_ns::RnnNsConfig {
                    sample_rate_hz,
                    ..c
                })
            })
            .transpose()?;
        let vad = config
            .vad
            .map(|c| {
                vad::VadCore::new(
                    vad::VadConfig {
                        sample_rate_hz,
                        ..c
                    },
                    ns.is_none(),
                )
            })
            .transpose()?;
        let agc = config
            .agc
            .map(|c| {
                agc::Agc::new(agc::AgcConfig {
                    sample_rate_hz,
                    ..c
                })
            })
            .transpose()?;
        let with_aec = aec.is_some();
        let any = with_aec
            || dtmf.is_some()
            || ns.is_some()
            || ns_rnn.is_some()
            || vad.is_some()
            || agc.is_some();
        Ok(DspChain {
            gain: (config.rx_gain_db != 0.0).then(|| Gain::from_db(config.rx_gain_db)),
            wants_reference: with_aec,
            voice: any.then(|| {
                Box::new(Voice {
                    aec,
                    reference: with_aec.then(|| Reference::new(2 * MAX_FRAME)),
                    ref_frame: vec![0; if with_aec { MAX_FRAME } else { 0 }].into_boxed_slice(),
                    dtmf,
                    ns,
                    ns_rnn,
                    vad,
                    agc,
                    speaking: false,
                })
            }),
        })
    }

    /// A chain that does nothing.
    pub fn passthrough() -> Self {
        DspChain {
            gain: None,
            wants_reference: false,
            voice: None,
        }
    }

    /// True when `process` is the identity.
    pub fn is_passthrough(&self) -> bool {
        self.gain.is_none() && self.voice.is_none()
    }

    /// The voice-activity detector's decision on the last frame processed: `None` when
    /// the chain has no detector. Drives DTX on the leg that sends this audio.
    #[inline]
    pub fn speaking(&self) -> Option<bool> {
        self.voice
            .as_ref()
            .filter(|v| v.vad.is_some())
            .map(|v| v.speaking)
    }

    /// The echo canceller's ERLE over its last whole second of far-end activity, dB
    /// ([`aec::EchoCanceller::erle_measured_db`]): `None` when the chain has no
    /// canceller, or before that second. Called on the real-time thread.
    #[inline]
    pub fn erle_db(&self) -> Option<f32> {
        self.voice.as_ref()?.aec.as_ref()?.erle_measured_db()
    }

    /// True when the chain wants the audio sent to the session's peer
    /// ([`DspChain::push_reference`]).
    #[inline]
    pub fn wants_reference(&self) -> bool {
        self.wants_reference
    }

    /// Records audio sent to this session's peer (the echo canceller's reference).
    /// Called on the real-time thread; never allocates.
    #[inline]
    pub fn push_reference(&mut self, sent: &[i16]) {
        if let Some(r) = self.voice.as_mut().and_then(|v| v.reference.as_mut()) {
            r.push(sent);
        }
    }

    /// Processes one received frame in place with the thread's work buffers `scratch`,
    /// reporting digits and talkspurt changes to `events`. Called on the real-time
    /// thread; never allocates.
    #[inline]
    pub fn process(
        &mut self,
        frame: &mut [i16],
        scratch: &mut DspScratch,
        events: &mut impl FnMut(DspEvent),
    ) {
        if let Some(v) = self.voice.as_mut() {
            v.process(frame, scratch, events);
        }
        if let Some(g) = &self.gain {
            g.apply(frame);
        }
    }
}

impl Voice {
    fn process(
        &mut self,
        frame: &mut [i16],
        scratch: &mut DspScratch,
        events: &mut impl FnMut(DspEvent),
    ) {
        if let (Some(aec), Some(r)) = (self.aec.as_mut(), self.reference.as_mut()) {
            let n = frame.len().min(self.ref_frame.len());
            r.take_latest(&mut self.ref_frame[..n]);
            if let Some(work) = aec.work_in(&mut scratch.aec) {
                aec.process_with(
                    &mut frame[..n],
                    &self.ref_frame[..n],
                    work,
                    &mut scratch.trickle,
                );
            }
        }
        if let Some(d) = self.dtmf.as_mut() {
            d.process(frame, |e| {
                events(match e {
                    dtmf_detector::DtmfEvent::Began { digit, .. } => DspEvent::Digit {
                        digit: digit.to_char(),
                        ended_ms: None,
                    },
                    dtmf_detector::DtmfEvent::Ended {
                        digit, duration_ms, ..
                    } => DspEvent::Digit {
                        digit: digit.to_char(),
                        ended_ms: Some(duration_ms),
                    },
                })
            });
        }
        // The VAD's decision on this frame, when there is a VAD.
        let mut speech = None;
        match (self.ns.as_mut(), self.vad.as_mut()) {
            (Some(ns), Some(vad)) => {
                // The detector judges each block on the suppressor's analysis of it (the
                // received audio, windowed and transformed once for both), before the
                // suppression: the decision a detector on its own would make on this
                // audio, for the cost of the detection alone.
                let (mut blocks, mut any) = (0, false);
                for block in frame.chunks_exact_mut(ns.block_len()) {
                    if ns.process_block(block, &mut scratch.ns, true) {
                        any |= vad.analysed_block(&scratch.ns, &mut scratch.vad);
                        blocks += 1;
                    }
                }
                speech = Some(vad.end_frame(blocks, any).speech);
            }
            (Some(ns), None) => ns.process(frame, &mut scratch.ns),
            (None, _) => {}
        }
        if let Some(rnn) = self.ns_rnn.as_mut() {
            rnn.process(frame);
        }
        if self.ns.is_none() {
            if let Some(vad) = self.vad.as_mut() {
                speech = Some(vad.process(frame, &mut scratch.ns, &mut scratch.vad).speech);
            }
        }
        if let Some(speech) = speech {
            if speech != self.speaking {
                self.speaking = speech;
                events(DspEvent::Talkspurt(speech));
            }
        }
        if let Some(agc) = self.agc.as_mut() {
            match speech {
                Some(speech) => agc.process_with_vad(frame, speech),
                None => agc.process(frame),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lane's scratch lends work space to every canceller a session can build: each
    /// block length `aec::block_for` picks, at every rate, tail and ptime (a canceller
    /// without one would be skipped in `Voice::process`, silently).
    #[test]
    fn the_scratch_has_work_space_for_every_canceller_block() {
        let mut scratch = DspScratch::new();
        for rate in config::SUPPORTED_RATES_HZ {
            for tail_ms in [aec::MIN_TAIL_MS, 96, 97, aec::MAX_TAIL_MS] {
                for ms in [10, 20, 30, 40, 60] {
                    let config = aec::AecConfig {
                        sample_rate_hz: rate,
                        tail_ms,
                        residual_suppression: true,
                    };
                    let frame = rate as usize * ms / 1000;
                    let canceller = aec::EchoCanceller::for_lane(config, frame).expect("valid");
                    assert!(
                        canceller.work_in(&mut scratch.aec).is_some(),
                        "{rate} Hz, {tail_ms} ms tail, {ms} ms frames: block {}",
                        canceller.block_samples()
                    );
                }
            }
        }
    }

    /// The echo reference ring against a plain history: whatever lengths are pushed and
    /// read, a read gives the newest samples pushed since the previous read, in order, with
    /// zeros before them for the part of its frame nothing was pushed for (and zeros before
    /// anything was pushed); a read with no push since is all zeros.
    #[test]
    fn the_reference_ring_gives_what_was_sent_since_the_last_read() {
        let n = 37;
        let mut ring = Reference::new(n);
        let mut history = vec![0i16; n];
        let mut next = 1i16;
        for step in 0..200usize {
            let len = (step * 7 + 3) % 50;
            let chunk: Vec<i16> = (0..len)
                .map(|_| {
                    next = next.wrapping_add(1);
                    next
                })
                .collect();
            ring.push(&chunk);
            history.extend_from_slice(&chunk);
            // The prefetch covers the samples a frame as long as this chunk reads back: at
            // least their bytes' worth of lines, at most one more per piece of the ring.
            let mut t = Trickle::new();
            ring.queue_prefetch(&mut t);
            let bytes = 2 * len.min(n);
            assert!(t.pending() >= bytes.div_ceil(64), "step {step}");
            assert!(t.pending() <= bytes.div_ceil(64) + 2, "step {step}");
            let k = [0, 1, 5, 20, n - 1, n, n + 3][step % 7];
            let fresh = len.min(n).min(k);
            let mut out = vec![-1i16; k];
            ring.take_latest(&mut out);
            assert!(
                out[..k - fresh].iter().all(|&x| x == 0),
                "step {step}, {k} samples"
            );
            assert_eq!(
                out[k - fresh..],
                history[history.len() - fresh..],
                "step {step}"
            );
            // Nothing pushed since: silence.
            let mut again = vec![-1i16; k];
            ring.take_latest(&mut again);
            assert!(again.iter().all(|&x| x == 0), "step {step}: read twice");
        }
    }

    #[test]
    fn round_to_i16_rounds_to_nearest_and_saturates_at_the_rails() {
        // Every quarter step over the whole range and beyond: the nearest integer (ties
        // to even), clamped to i16.
        for q in -4 * 40_000..=4 * 40_000 {
            let y = q as f32 / 4.0;
            let want = (f64::from(y).round_ties_even()).clamp(-32_768.0, 32_767.0) as i16;
            assert_eq!(round_to_i16(y), want, "{y}");
        }
        assert_eq!(round_to_i16(1e30), i16::MAX);
        assert_eq!(round_to_i16(-1e30), i16::MIN);
        assert_eq!(round_to_i16(f32::INFINITY), i16::MAX);
        assert_eq!(round_to_i16(f32::NEG_INFINITY), i16::MIN);
        // NaN: any value, no panic.
        let _ = round_to_i16(f32::NAN);
    }

    /// 3 s at 8 kHz: noise, with bursts of a two-harmonic "voice" 0.3 s long every 0.7 s.
    fn bursts() -> Vec<i16> {
        let mut state = 0x1234_5678u32;
        (0..24_000)
            .map(|n| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                let noise = (state >> 16) as f32 / 65_536.0 - 0.5;
                let t = n as f32 / 8000.0;
                let voiced = if n % 5600 < 2400 {
                    let w = 2.0 * std::f32::consts::PI * 180.0 * t;
                    3000.0 * (w.sin() + 0.5 * (3.0 * w).sin())
                } else {
                    0.0
                };
                (voiced + 400.0 * noise) as i16
            })
            .collect()
    }

    #[test]
    fn a_vad_reading_the_suppressors_analysis_decides_as_one_alone() {
        let config = DspConfig {
            ns: Some(ns::NsConfig::default()),
            vad: Some(vad::VadConfig::default()),
            ..DspConfig::default()
        };
        let mut chain = DspChain::new(&config, 8000, 160).expect("valid config");
        let mut scratch = DspScratch::new();
        let mut alone = vad::Vad::new(vad::VadConfig::default()).expect("valid config");
        let (mut speaking, mut changes) = (false, 0);
        for (i, frame) in bursts().chunks_exact(160).enumerate() {
            let expected = alone.process(frame).speech;
            let mut f = frame.to_vec();
            chain.process(&mut f, &mut scratch, &mut |e| {
                if let DspEvent::Talkspurt(s) = e {
                    speaking = s;
                    changes += 1;
                }
            });
            assert_eq!(speaking, expected, "frame {i}");
        }
        // Four bursts: four starts and at least three ends.
        assert!(changes >= 7, "{changes} talkspurt changes");
    }

    #[test]
    fn per_session_voice_state_is_small() {
        let ns = ns::NsCore::new(ns::NsConfig::default()).expect("valid config");
        let vad = vad::VadCore::new(vad::VadConfig::default(), false).expect("valid config");
        eprintln!(
            "8 kHz per session: noise suppressor {} B, VAD {} B on the heap; chain box {} B",
            ns.state_bytes(),
            vad.state_bytes(),
            std::mem::size_of::<Voice>()
        );
        // Was 2,616 + 4,200 B of buffers before the VAD shared the analysis and the
        // suppressor kept five arrays in bfloat16.
        assert!(ns.state_bytes() + vad.state_bytes() <= 3_200);
    }
}
