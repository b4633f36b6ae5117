//! The receive channel of a session: adaptive jitter buffer, decode at playout,
//! concealment, comfort noise and time-scale modification, producing one frame per ptime.
//!
//! Decoded audio that is not yet played waits in a small sync buffer (as in NetEq), which
//! decouples packet durations from the session's frame size (ptime changes mid-stream) and
//! gives time-scale modification the 30 ms it needs. Everything is preallocated by
//! [`ReceiveChannel::new`] on the control plane.

use crate::buffer::adaptive::{Adapt, AdaptiveBuffer, Insert, JitterConfig, Next};
use crate::processing::audio::plc::PcmPlc;
use crate::processing::audio::tsm::TimeStretch;

/// Packet capacity of a session's jitter buffer.
pub const JITTER_PACKETS: usize = 32;

/// Time-scale modification state and scratch space shared by every session of a lane
/// (the decode stage processes one session at a time, so one set per sample rate is
/// enough and per-session state stays small). Built on the control plane.
#[derive(Debug)]
pub struct StretchPool {
    tsm: [TimeStretch; 6],
    scratch: Box<[i16]>,
}

const POOL_RATES: [u32; 6] = [8000, 12000, 16000, 24000, 32000, 48000];

impl StretchPool {
    /// A pool able to stretch inputs of up to `max_input_ms` at every supported rate.
    pub fn new(max_input_ms: u32) -> Self {
        let tsm = POOL_RATES.map(|r| TimeStretch::new(r, (r * max_input_ms / 1000) as usize));
        let longest = tsm.iter().map(|t| t.max_output_len()).max().unwrap_or(0);
        StretchPool {
            tsm,
            scratch: vec![0; longest].into_boxed_slice(),
        }
    }

    fn get(&mut self, rate: u32) -> (&mut TimeStretch, &mut [i16]) {
        let i = POOL_RATES
            .iter()
            .position(|&r| r >= rate)
            .unwrap_or(POOL_RATES.len() - 1);
        (&mut self.tsm[i], &mut self.scratch)
    }
}

/// How a receive channel turns packets into audio: decode a packet and, for codecs with
/// their own concealment (Opus), conceal a missing one.
pub trait PacketDecoder<T> {
    /// Decodes `item` into `out`; returns samples written (0 = undecodable).
    fn decode(&mut self, item: &T, out: &mut [i16]) -> usize;

    /// Fills `out` (the missing audio) with the codec's own concealment, using `next` (the
    /// packet that follows the gap, when buffered) for forward error correction. Returns
    /// false when the codec has none, so the generic PLC conceals instead.
    fn conceal(&mut self, next: Option<&T>, out: &mut [i16]) -> bool {
        let _ = (next, out);
        false
    }

    /// For a frame about to be relayed unchanged: hands `item`'s payload to `plc` without
    /// decoding it ([`PcmPlc::good_coded_frame`]) when the codec allows (G.711 carrying
    /// exactly `samples` samples). Returns false, doing nothing, when the caller must
    /// decode instead.
    fn feed_undecoded(&mut self, item: &T, samples: usize, plc: &mut PcmPlc) -> bool {
        let _ = (item, samples, plc);
        false
    }
}

impl<T, F: FnMut(&T, &mut [i16]) -> usize> PacketDecoder<T> for F {
    fn decode(&mut self, item: &T, out: &mut [i16]) -> usize {
        self(item, out)
    }
}

/// What one call of [`ReceiveChannel::get_frame`] did (for counters and routing).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FrameReport<T> {
    /// A frame was written to `out` (false while no stream is playing).
    pub produced: bool,
    /// Packets decoded into this frame.
    pub decoded: u32,
    /// Samples synthesised by concealment or comfort noise.
    pub concealed: u32,
    /// Samples removed by acceleration.
    pub accelerated: u32,
    /// Samples added by expansion.
    pub expanded: u32,
    /// Packets released because they were behind the decode point after a conceal.
    pub stale: u32,
    /// First frame of a talkspurt or restarted stream (send with the marker bit).
    pub marker: bool,
    /// Receive RTP timestamp of the frame's first sample (approximate across time-scale
    /// changes by at most one pitch period): what the frame carries, for latency measurement.
    pub src_ts: u32,
    /// When the frame is exactly one packet, decoded and unmodified, that packet is handed
    /// back here (instead of released) so the caller may relay its payload; the caller
    /// must release it.
    pub relay: Option<T>,
    /// The frame's audio was not decoded (`out` is not written): it is `relay`'s payload,
    /// which the concealer took as codes ([`PacketDecoder::feed_undecoded`]). The caller
    /// relays it, or decodes it if it cannot.
    pub undecoded: bool,
}

/// Outcome of [`ReceiveChannel::relay_frame`].
#[derive(Debug)]
pub enum RelayStep<T> {
    /// The packet that continues the timeline is exactly one frame: relay it (in
    /// `FrameReport::relay`), undecoded.
    Relay(FrameReport<T>),
    /// The audio due now is missing: nothing is produced (the far end, which receives the
    /// same codec, conceals with its own decoder, and with Opus recovers from the in-band
    /// FEC of the next packet, which a relay passes on intact); the timeline advanced.
    Gap(FrameReport<T>),
    /// Neither (the buffer is starting, or packets do not map onto frames): produce the
    /// frame with [`ReceiveChannel::get_frame`] (decoding).
    Decode,
}

/// Outcome of [`ReceiveChannel`]'s steady-state path.
enum Direct<T> {
    /// Not applicable; nothing was consumed.
    No,
    /// The frame was produced.
    Played(FrameReport<T>),
    /// A silent frame was dropped to shorten the delay; another must be produced.
    Dropped(FrameReport<T>),
}

/// Sizes and rates of a receive channel.
#[derive(Debug, Clone, Copy)]
pub struct ReceiveConfig {
    /// Jitter buffer settings (clock rate = the stream's RTP clock).
    pub jitter: JitterConfig,
    /// Output frame size in samples.
    pub frame_samples: usize,
    /// Decoded sample rate, Hz.
    pub sample_rate_hz: u32,
    /// Largest packet duration accepted, in samples (e.g. 60 ms).
    pub max_packet_samples: usize,
}

/// One session's receive path (see module docs).
#[derive(Debug)]
pub struct ReceiveChannel<T> {
    /// The packet buffer.
    pub buffer: AdaptiveBuffer<T, JITTER_PACKETS>,
    plc: PcmPlc,
    sync: Box<[i16]>,
    sync_len: usize,
    frame: usize,
    /// 30 ms in samples: the least input time-scale modification works on.
    min_stretch: usize,
    /// Samples per timestamp unit as a ratio (sample rate : clock rate).
    num: u32,
    den: u32,
    concealing: bool,
    /// Consecutive frames a relayed stream has been far above its target (see
    /// [`RELAY_SURPLUS_FRAMES`]).
    relay_surplus: u16,
    /// Concealment run (samples) after which an empty buffer produces no frames.
    conceal_limit: usize,
    /// Samples to play before the next time-scale change is allowed (spaces out stretches
    /// so a draining buffer is not expanded frame after frame).
    stretch_cooldown: usize,
    /// Time-scale changes refused in a row (each lengthens the next cooldown).
    stretch_refusals: u8,
    /// Smoothed pre-playout buffer level (timestamp units), so phase wobble between packet
    /// arrival and playout does not trigger time-scale changes.
    level_avg: f32,
    /// The stream's RTP clock rate, Hz.
    clock_rate_hz: u32,
    /// Samples concealed by the codec since the last decoded packet.
    codec_conceal_run: usize,
}

/// About -45 dBFS RMS (32768 · 10^(-45/20) ≈ 184), squared: below this a frame is a pause.
const QUIET_MEAN_SQUARE: f32 = 184.0 * 184.0;

/// 10 ms blocks that must have been quiet before a silent frame may be dropped: the drop
/// then falls in a pause between phrases (≥ 60 ms with the frame itself), not in the 20–40
/// ms gap of a stop consonant or between two words, where shortening the gap is heard as a
/// stumble (and costs up to 0.1 PESQ per cut, against < 0.01 inside a long pause).
const PAUSE_BLOCKS: usize = 4;

/// Audio played between two time-scale changes, ms.
const STRETCH_INTERVAL_MS: usize = 100;

/// Frames a relayed stream may stay far above its delay target (more than four frames plus
/// 10 ms, smoothed) before the surplus is removed anyway: relayed streams otherwise shorten
/// only by dropping silent frames, and audio that never pauses (music on hold, a tone, a
/// busy conference) would keep the delay a stall or burst left behind for the rest of the
/// call. 50 frames is 1 s at 20 ms. A decoded relay (G.711) is then time-scaled like a
/// transcoded stream (G.711 re-encodes to the same bytes elsewhere); an undecoded relay
/// (Opus, G.722) skips one packet per stretch interval, which the far end's decoder
/// conceals.
const RELAY_SURPLUS_FRAMES: u16 = 50;

impl<T> ReceiveChannel<T> {
    /// The per-frame fields of the jitter buffer (with its first packet slots) and of the
    /// concealer, which [`ReceiveChannel::prefetch_frame`] reads, as (address, length)
    /// pairs: for a caller that prefetches them in many channels at the same offsets, with
    /// no load of any channel.
    pub fn header_ranges(&self) -> [(usize, usize); 2] {
        [self.buffer.header_range(), self.plc.header_range()]
    }

    /// Starts loading what the next frame will touch: the concealer's rings (see
    /// [`PcmPlc::prefetch_frame`]). Returns the packet due next, if held, for the caller
    /// to prefetch from its slab. Reads only the buffer's and concealer's own fields
    /// (see [`ReceiveChannel::header_ranges`]). Called on the real-time thread.
    #[inline]
    pub fn prefetch_frame(&self) -> Option<&T> {
        self.plc.prefetch_frame(self.frame);
        self.buffer.peek_next()
    }

    /// Builds the channel. Control plane: allocates everything.
    pub fn new(cfg: ReceiveConfig) -> Self {
        let ms = (cfg.sample_rate_hz / 1000) as usize;
        let min_stretch = 30 * ms;
        // Most ever held: a fill target (a frame, or 30 ms to stretch), overshot by up to one
        // packet, plus one inserted pitch period (15 ms).
        let cap = cfg.frame_samples.max(min_stretch) + cfg.max_packet_samples + 15 * ms;
        let g = gcd(cfg.sample_rate_hz, cfg.jitter.clock_rate_hz.max(1));
        ReceiveChannel {
            buffer: AdaptiveBuffer::new(cfg.jitter),
            plc: PcmPlc::new(cfg.sample_rate_hz),
            sync: vec![0; cap].into_boxed_slice(),
            sync_len: 0,
            frame: cfg.frame_samples,
            min_stretch,
            num: cfg.sample_rate_hz / g,
            den: cfg.jitter.clock_rate_hz.max(1) / g,
            concealing: false,
            relay_surplus: 0,
            conceal_limit: (cfg.jitter.max_conceal_ms as usize * cfg.sample_rate_hz as usize)
                / 1000,
            stretch_cooldown: 0,
            stretch_refusals: 0,
            level_avg: 0.0,
            clock_rate_hz: cfg.jitter.clock_rate_hz.max(1),
            codec_conceal_run: 0,
        }
    }

    /// Samples → timestamp units.
    #[inline]
    pub fn samples_to_ts(&self, samples: usize) -> u32 {
        // Every supported pair of rates divides one by the other (8/16/48 kHz audio, 8 or
        // 48 kHz RTP clocks), so one side of the ratio is 1: a multiply, not a 64-bit
        // division, on the per-frame path.
        if self.num == 1 {
            (samples as u32).wrapping_mul(self.den)
        } else {
            (samples as u64 * u64::from(self.den) / u64::from(self.num)) as u32
        }
    }

    /// Timestamp units → samples.
    #[inline]
    pub fn ts_to_samples(&self, ts: u32) -> usize {
        if self.den == 1 {
            ts as usize * self.num as usize
        } else {
            (u64::from(ts) * u64::from(self.num) / u64::from(self.den)) as usize
        }
    }

    /// Decoded audio waiting to be played, in samples.
    pub fn pending_samples(&self) -> usize {
        self.sync_len
    }

    /// Current playout delay estimate in ms: buffered packets plus pending decoded audio.
    pub fn level_ms(&self) -> u32 {
        let ts = self.buffer.buffered_ts() + self.samples_to_ts(self.sync_len);
        (u64::from(ts) * 1000 / u64::from(self.clock_rate())) as u32
    }

    #[inline]
    fn clock_rate(&self) -> u32 {
        self.clock_rate_hz
    }

    /// Whether a packet of `samples` fits the channel: at most the longest packet it was
    /// built for (`ReceiveConfig::max_packet_samples`; the decode buffer has room for
    /// that much beyond a frame). A longer one would be cut short while the timeline
    /// moved its whole length. Derived from the buffer's size, so it costs no field.
    #[inline]
    pub fn takes_packet_of(&self, samples: usize) -> bool {
        // (15 ms is half `min_stretch`, 30 ms: no division per packet.)
        samples + self.frame.max(self.min_stretch) + self.min_stretch / 2 <= self.sync.len()
    }

    /// Inserts a packet carrying `samples` of audio. Real-time safe.
    pub fn insert(
        &mut self,
        ts: u32,
        samples: usize,
        marker: bool,
        arrival_ns: u64,
        item: T,
        release: &mut impl FnMut(T),
    ) -> Insert<T> {
        let dur = self.samples_to_ts(samples);
        self.buffer
            .insert(ts, dur, marker, arrival_ns, item, release)
    }

    /// The sender signalled (RFC 3389) the level of the silence that follows: comfort noise
    /// uses it until audio resumes. Real-time safe.
    pub fn set_comfort_noise_rms(&mut self, rms: f32) {
        self.plc.set_comfort_noise_rms(rms);
    }

    /// Like [`set_comfort_noise_rms`](Self::set_comfort_noise_rms), with the SID's
    /// reflection coefficients shaping the noise's spectrum (RFC 3389 §3.2).
    pub fn set_comfort_noise(&mut self, rms: f32, reflection: &[f32]) {
        self.plc.set_comfort_noise(rms, reflection);
    }

    /// Forgets the stream (SSRC change): releases buffered packets and resets concealment.
    pub fn reset(&mut self, release: &mut impl FnMut(T)) {
        self.buffer.reset(release);
        self.sync_len = 0;
        self.concealing = false;
        self.codec_conceal_run = 0;
        self.plc.reset();
    }

    /// Fills the sync buffer to at least `want` samples. `decode(item, out)` decodes a
    /// packet into `out` and returns samples written.
    fn fill(
        &mut self,
        want: usize,
        rep: &mut FrameReport<T>,
        decode: &mut impl PacketDecoder<T>,
        release: &mut impl FnMut(T),
    ) -> bool {
        let mut guard = 0;
        while self.sync_len < want && guard < 16 {
            guard += 1;
            let space = self.sync.len() - self.sync_len;
            let need_ts = self.samples_to_ts(want - self.sync_len).max(1);
            let next = self.buffer.next(need_ts);
            // A gap the timeline skips (not a wait where it stands still).
            let gap = matches!(next, Next::Conceal { .. });
            match next {
                Next::Wait => return false,
                Next::Decode {
                    item,
                    first,
                    dur_ts,
                    ..
                } => {
                    let was_empty = self.sync_len == 0;
                    let expect = self.ts_to_samples(dur_ts).min(space);
                    let dst = &mut self.sync[self.sync_len..];
                    let mut n = decode.decode(&item, dst).min(space);
                    if n < expect {
                        // Corrupt or short payload: conceal the remainder of its duration.
                        self.plc.comfort_noise(&mut dst[n..expect]);
                        rep.concealed += (expect - n) as u32;
                        n = expect;
                    }
                    let merged = self.concealing;
                    self.plc.good_frame(&mut dst[..n]);
                    self.concealing = false;
                    self.codec_conceal_run = 0;
                    self.sync_len += n;
                    rep.decoded += 1;
                    rep.marker |= first;
                    if was_empty
                        && !merged
                        && n == self.frame
                        && rep.relay.is_none()
                        && rep.decoded == 1
                    {
                        rep.relay = Some(item);
                    } else {
                        release(item);
                    }
                }
                Next::Conceal { dur_ts } | Next::Empty { dur_ts } => {
                    let n = self.ts_to_samples(dur_ts).clamp(1, space.max(1)).min(space);
                    let dst = &mut self.sync[self.sync_len..self.sync_len + n];
                    // The codec's own concealment first (Opus: PLC, or FEC from the packet
                    // after the gap when it is already here); its output continues the
                    // stream, so it feeds the generic PLC's history like real audio. FEC
                    // only for a gap the timeline skips: where it stands still (settling,
                    // `Empty`) the audio FEC rebuilds was played or is still to come.
                    let fec_from = if gap { self.buffer.peek_next() } else { None };
                    if decode.conceal(fec_from, dst) {
                        self.plc.good_frame(dst);
                        self.codec_conceal_run += n;
                    } else {
                        self.plc.comfort_noise(dst);
                        self.concealing = true;
                    }
                    self.sync_len += n;
                    rep.concealed += n as u32;
                    rep.stale += self.buffer.drop_stale(release) as u32;
                }
            }
        }
        self.sync_len >= want
    }

    /// Produces the next frame into `out` (its first `frame_samples`). Real-time safe.
    ///
    /// `relay_preferred`: the caller can relay this stream's payloads unchanged when a frame
    /// is exactly one packet; delay is then adapted only by dropping silent frames (never by
    /// time-scale modification, which would break packet alignment and force transcoding).
    /// `undecoded_ok`: nothing but the relay needs the audio of a relayed frame, so it may
    /// stay undecoded ([`FrameReport::undecoded`]).
    pub fn get_frame(
        &mut self,
        out: &mut [i16],
        pool: &mut StretchPool,
        relay_preferred: bool,
        undecoded_ok: bool,
        decode: &mut impl PacketDecoder<T>,
        release: &mut impl FnMut(T),
    ) -> FrameReport<T> {
        let mut rep = FrameReport {
            produced: false,
            decoded: 0,
            concealed: 0,
            accelerated: 0,
            expanded: 0,
            stale: 0,
            marker: false,
            src_ts: 0,
            relay: None,
            undecoded: false,
        };
        let frame = self.frame.min(out.len());
        let frame_ts = self.samples_to_ts(frame);
        if self.buffer.settle_pending_ts() > 0 && self.pause_played(0) {
            // The buffer's start-up delay step (see `AdaptiveBuffer`): the whole growth at
            // once, here where the last 40 ms played were quiet, so it lengthens a pause
            // instead of cutting into speech.
            self.buffer.begin_settling();
        }
        let pending_ts = self.samples_to_ts(self.sync_len);
        let (advice, urgent) = self.advise(pending_ts, frame_ts, frame);
        let surplus_persists = relay_preferred && self.note_relay_surplus(frame_ts);
        // Time-scale modification only when dropping silence cannot keep up: a moderate
        // surplus waits for a pause (inaudible); relayed streams stretch only when a large
        // surplus has lasted (RELAY_SURPLUS_FRAMES).
        let stretch = match advice {
            Adapt::Shorten => urgent && (!relay_preferred || surplus_persists),
            Adapt::Lengthen => !relay_preferred,
            Adapt::Hold => false,
        };
        let mut advice = advice;
        if relay_preferred
            && self.sync_len > 0
            && self.sync_len < frame
            && self.buffer.held_ts() >= frame_ts + self.buffer.target_ts()
            && self.in_pause(self.sync_len)
        {
            // A time-scale change left a partial frame pending, so no packet lines up with
            // a frame and nothing can be relayed. In a pause (and with the target still
            // held) drop that sliver of silence: frames line up with packets again.
            rep.accelerated += self.sync_len as u32;
            self.sync_len = 0;
        }
        if !stretch && self.sync_len == 0 {
            let realigned = rep.accelerated;
            match self.direct_frame(
                &mut out[..frame],
                frame_ts,
                advice,
                relay_preferred && undecoded_ok,
                decode,
                release,
            ) {
                Direct::Played(mut r) => {
                    r.accelerated += realigned;
                    return r;
                }
                Direct::Dropped(r) => {
                    // A silent frame above target was dropped; the general path below
                    // produces the frame that replaces it.
                    rep = r;
                    rep.accelerated += realigned;
                    advice = Adapt::Hold;
                }
                Direct::No => {}
            }
        }
        let want = if stretch {
            frame.max(self.min_stretch)
        } else {
            frame
        };
        if !self.fill(want, &mut rep, decode, release) && self.sync_len < frame {
            if self.sync_len == 0 && !self.plc.comfort_noise_signalled() {
                if let Some(item) = rep.relay.take() {
                    release(item);
                }
                return rep;
            }
            // The stream stopped mid-frame, or went idle in a silence the sender signalled
            // (RFC 3389: comfort noise until its next packet, however long the silence):
            // finish the frame with concealment or comfort noise.
            let n = frame - self.sync_len;
            self.plc.comfort_noise(&mut self.sync[self.sync_len..frame]);
            self.sync_len = frame;
            rep.concealed += n as u32;
        }
        if advice == Adapt::Shorten && self.sync_len >= frame && self.in_pause(frame) {
            // Above target and this frame is silence: drop it (inaudible, and a relayed
            // stream stays packet-aligned when the sync buffer held exactly this frame).
            rep.accelerated += frame as u32;
            self.sync.copy_within(frame..self.sync_len, 0);
            self.sync_len -= frame;
            self.stretch_cooldown = self.default_stretch_interval();
            if let Some(item) = rep.relay.take() {
                release(item);
            }
            rep.decoded = 0;
            if !self.fill(frame, &mut rep, decode, release) && self.sync_len < frame {
                let n = frame - self.sync_len;
                self.plc.comfort_noise(&mut self.sync[self.sync_len..frame]);
                self.sync_len = frame;
                rep.concealed += n as u32;
            }
        }
        if self.sync_len >= self.min_stretch && stretch {
            let len = self.sync_len;
            let (tsm, scratch) = pool.get(self.plc.sample_rate_hz());
            let k = match advice {
                Adapt::Shorten => tsm.accelerate(&self.sync[..len], scratch),
                _ => tsm.expand(&self.sync[..len], scratch),
            };
            if k != len && k <= self.sync.len() {
                self.sync[..k].copy_from_slice(&scratch[..k]);
                if k < len {
                    rep.accelerated += (len - k) as u32;
                } else {
                    rep.expanded += (k - len) as u32;
                }
                self.sync_len = k;
                self.stretch_cooldown = self.stretch_interval(frame_ts, frame);
                if let Some(item) = rep.relay.take() {
                    release(item);
                }
            }
            if k == len {
                // Refused (not periodic enough): do not retry the analysis every frame,
                // and after refusals in a row (aperiodic audio: noise, music, unvoiced
                // stretches) wait longer, 2, 4, 8, then 16 frames: a stream that never
                // correlates costs one analysis (~22 k instructions at 8 kHz) per 320 ms
                // rather than per 60 ms.
                self.stretch_cooldown = (2 << self.stretch_refusals.min(3)) * frame;
                self.stretch_refusals = self.stretch_refusals.saturating_add(1);
            } else {
                self.stretch_refusals = 0;
            }
            if self.sync_len < frame {
                self.fill(frame, &mut rep, decode, release);
                if self.sync_len < frame {
                    let n = frame - self.sync_len;
                    self.plc.comfort_noise(&mut self.sync[self.sync_len..frame]);
                    self.sync_len = frame;
                    rep.concealed += n as u32;
                }
            }
        }
        if self.conceal_limit > 0
            && rep.decoded == 0
            && rep.concealed as usize >= frame
            && self.plc.concealed_run().max(self.codec_conceal_run) > self.conceal_limit
            && self.buffer.is_empty()
            && !self.plc.comfort_noise_signalled()
        {
            // A long gap with nothing buffered and no SID: the sender is silent (hold,
            // DTX without comfort noise) or gone. Stop producing so the silence
            // propagates; the timeline keeps advancing. A sender that signalled comfort
            // noise (RFC 3389) gets it played through its whole silence instead: the
            // destination leg never saw the SID, and stopping would give its listener
            // dead air instead of the background the sender described.
            self.sync_len = 0;
            return rep;
        }
        rep.src_ts = self
            .buffer
            .next_ts()
            .wrapping_sub(self.samples_to_ts(self.sync_len));
        out[..frame].copy_from_slice(&self.sync[..frame]);
        self.sync.copy_within(frame..self.sync_len, 0);
        self.sync_len -= frame;
        if self.sync_len != 0 {
            // The packet did not map onto exactly this frame.
            if let Some(item) = rep.relay.take() {
                release(item);
            }
        }
        if rep.decoded == 0 && self.plc.comfort_noise_signalled() {
            // Comfort noise the sender asked for (RFC 3389), not concealment of lost audio:
            // a DTX call's silences do not count as concealment.
            rep.concealed = 0;
        }
        rep.produced = true;
        rep
    }
}

impl<T> ReceiveChannel<T> {
    /// Pass-through without decoding, for a stream relayed to a leg of the same codec with
    /// nothing processing its audio, when the codec conceals better at the far end than a
    /// re-encoded concealment would (Opus, G.722): no decode per frame, so an Opus relay
    /// costs no more than a G.711 one. Delay then adapts only at talkspurt starts (the
    /// buffer re-anchors on the marker bit), never by dropping or stretching audio.
    /// Real-time safe.
    pub fn relay_frame(
        &mut self,
        frame_samples: usize,
        release: &mut impl FnMut(T),
    ) -> RelayStep<T> {
        let frame_ts = self.samples_to_ts(frame_samples);
        if self.sync_len != 0 || !self.buffer.is_playing() {
            return RelayStep::Decode;
        }
        let mut rep = FrameReport {
            produced: false,
            decoded: 0,
            concealed: 0,
            accelerated: 0,
            expanded: 0,
            stale: 0,
            marker: false,
            src_ts: self.buffer.next_ts(),
            relay: None,
            undecoded: false,
        };
        match self.buffer.continuing_dur() {
            Some(d) if d == frame_ts => {}
            Some(_) => return RelayStep::Decode,
            // Missing, and the buffer would jump ahead to a packet that is not one frame
            // (a new source of another ptime): decode it rather than lose it.
            None if self
                .buffer
                .jump_ahead_dur(frame_ts)
                .is_some_and(|d| d != frame_ts) =>
            {
                return RelayStep::Decode;
            }
            None => {
                // Missing: let the timeline pass the gap (Conceal/Empty), as concealment would.
                if let Next::Decode {
                    item,
                    ts,
                    first,
                    dur_ts,
                } = self.buffer.next(frame_ts)
                {
                    // The stream jumped ahead (a marked packet well past the missing audio,
                    // a source switched on the same SSRC): the buffer went to it. Relay it,
                    // its marker with it. (One of another duration was decoded instead,
                    // above; should one still come, it is dropped, counted stale.)
                    if dur_ts == frame_ts {
                        return self.relayed(rep, item, ts, first);
                    }
                    release(item);
                    rep.stale = 1;
                }
                rep.stale += self.buffer.drop_stale(release) as u32;
                self.concealing = true;
                return RelayStep::Gap(rep);
            }
        }
        // Updates the smoothed level and the cooldown (its advice is not needed here).
        let _ = self.advise(0, frame_ts, frame_samples);
        if self.note_relay_surplus(frame_ts) {
            // A large surplus has lasted: skip this packet (the far end conceals a splice
            // of one frame) and relay the next one now, one frame sooner.
            if let Next::Decode { item, .. } = self.buffer.next(frame_ts) {
                release(item);
                rep.accelerated = frame_samples as u32;
                self.stretch_cooldown = self.default_stretch_interval();
            }
            if self.buffer.continuing_dur() != Some(frame_ts) {
                return RelayStep::Gap(rep);
            }
        }
        if let Next::Decode {
            item, ts, first, ..
        } = self.buffer.next(frame_ts)
        {
            return self.relayed(rep, item, ts, first);
        }
        RelayStep::Gap(rep)
    }

    /// `item` (timestamp `ts`, starting a talkspurt if `first`) goes out as this frame,
    /// undecoded.
    fn relayed(&mut self, mut rep: FrameReport<T>, item: T, ts: u32, first: bool) -> RelayStep<T> {
        rep.produced = true;
        rep.marker = first;
        rep.src_ts = ts;
        rep.relay = Some(item);
        self.concealing = false;
        RelayStep::Relay(rep)
    }

    /// [`STRETCH_INTERVAL_MS`] in samples: the spacing between two time-scale changes.
    fn default_stretch_interval(&self) -> usize {
        STRETCH_INTERVAL_MS * self.plc.sample_rate_hz() as usize / 1000
    }

    /// Samples to play before the next time-scale change: [`STRETCH_INTERVAL_MS`], or one
    /// frame while the smoothed level is more than four frames over target (a stall or
    /// burst left a surplus that would otherwise take seconds to remove, NetEq-style).
    fn stretch_interval(&self, frame_ts: u32, frame: usize) -> usize {
        let target = self.buffer.target_ts() as f32;
        if self.level_avg > target + 4.0 * frame_ts as f32 {
            frame
        } else {
            self.default_stretch_interval()
        }
    }

    /// Counts frames of a relayed stream spent far above target (the smoothed level more
    /// than four frames plus 10 ms over it); true once
    /// that has lasted [`RELAY_SURPLUS_FRAMES`] and no stretch cooldown runs. Call after
    /// `advise` (which updates the smoothed level).
    fn note_relay_surplus(&mut self, frame_ts: u32) -> bool {
        let target = self.buffer.target_ts() as f32;
        let ms10 = self.clock_rate() as f32 / 100.0;
        if self.buffer.is_playing() && self.level_avg > target + 4.0 * frame_ts as f32 + ms10 {
            self.relay_surplus = self.relay_surplus.saturating_add(1);
        } else {
            self.relay_surplus = 0;
        }
        self.relay_surplus >= RELAY_SURPLUS_FRAMES && self.stretch_cooldown == 0
    }

    /// The steady-state path: nothing pending and the packet that continues the timeline is
    /// exactly one frame long, so it is decoded straight into `out` (no sync-buffer round
    /// trip) and offered for relay. Above target (`advice` is `Shorten`) a silent frame is
    /// dropped instead of played. `Direct::No` (nothing consumed) when the path does not apply.
    #[inline]
    fn direct_frame(
        &mut self,
        out: &mut [i16],
        frame_ts: u32,
        advice: Adapt,
        undecoded_ok: bool,
        decode: &mut impl PacketDecoder<T>,
        release: &mut impl FnMut(T),
    ) -> Direct<T> {
        if self.buffer.continuing_dur() != Some(frame_ts) {
            return Direct::No;
        }
        let Next::Decode {
            item, ts, first, ..
        } = self.buffer.next(frame_ts)
        else {
            // Unreachable: the buffer is playing and holds the continuing packet; if it ever
            // differs, nothing was taken and the general path handles the frame.
            return Direct::No;
        };
        let mut rep = FrameReport {
            produced: true,
            decoded: 1,
            concealed: 0,
            accelerated: 0,
            expanded: 0,
            stale: 0,
            marker: first,
            src_ts: ts,
            relay: None,
            undecoded: false,
        };
        // Relayed as it came (`undecoded`): the concealer keeps the codes, nothing is decoded.
        let undecoded = undecoded_ok
            && !self.concealing
            && decode.feed_undecoded(&item, out.len(), &mut self.plc);
        let relayable = undecoded || {
            let n = decode.decode(&item, out).min(out.len());
            if n < out.len() {
                // Corrupt or short payload: conceal the remainder of its duration.
                self.plc.comfort_noise(&mut out[n..]);
                rep.concealed = (out.len() - n) as u32;
            }
            let merged = self.concealing;
            self.plc.good_frame(out);
            self.concealing = false;
            !merged && n == out.len()
        };
        self.codec_conceal_run = 0;
        // The frame is already in the concealer's history: the pause check covers it.
        if advice == Adapt::Shorten && !self.buffer.is_empty() && self.pause_played(out.len()) {
            // Above target and this frame is silence: drop it (inaudible); what is buffered
            // (or its concealment) replaces it.
            release(item);
            rep.produced = false;
            rep.decoded = 0;
            rep.accelerated = out.len() as u32;
            self.stretch_cooldown = self.default_stretch_interval();
            return Direct::Dropped(rep);
        }
        if relayable {
            rep.relay = Some(item);
            rep.undecoded = undecoded;
        } else {
            release(item);
        }
        Direct::Played(rep)
    }

    /// Time-scale advice from the smoothed buffer level (hysteresis of a frame plus 10 ms
    /// above target, half a frame below), with a cooldown between changes.
    /// Also says whether the surplus is large (more than two frames plus 10 ms above target),
    /// which justifies stretching speech rather than waiting for silence.
    fn advise(&mut self, pending_ts: u32, frame_ts: u32, frame: usize) -> (Adapt, bool) {
        if !self.buffer.is_playing() {
            self.level_avg = 0.0;
            return (Adapt::Hold, false);
        }
        let level = (self.buffer.held_ts() + pending_ts) as f32;
        if self.level_avg == 0.0 {
            self.level_avg = level;
        }
        // Time constant ~0.5 s of audio.
        let alpha = (frame_ts as f32 / (0.5 * self.clock_rate() as f32)).min(1.0);
        self.level_avg += (level - self.level_avg) * alpha;
        if self.stretch_cooldown > 0 {
            self.stretch_cooldown = self.stretch_cooldown.saturating_sub(frame);
            return (Adapt::Hold, false);
        }
        let target = self.buffer.target_ts() as f32;
        let ms10 = self.clock_rate() as f32 / 100.0;
        let f = frame_ts as f32;
        if self.level_avg > target + f + ms10 && level > target + f {
            (Adapt::Shorten, self.level_avg > target + 2.0 * f + ms10)
        } else if self.level_avg + f / 2.0 < target
            && level < target
            && level >= self.samples_to_ts(self.min_stretch) as f32
        {
            // (Only with the 30 ms a stretch works on at hand: with less, the rest would
            // be concealment in mid-speech, counted as loss, no packet lost.)
            (Adapt::Lengthen, true)
        } else {
            (Adapt::Hold, false)
        }
    }

    /// True when the first `n` pending samples are below about -45 dBFS RMS and so was the
    /// audio decoded before them for [`PAUSE_BLOCKS`] blocks (a pause, not a gap in a word).
    fn in_pause(&self, n: usize) -> bool {
        self.is_quiet(n) && self.pause_played(n)
    }

    /// True when the last `n` samples' worth of 10 ms blocks given to the concealer, and
    /// the [`PAUSE_BLOCKS`] before them, were all below about -45 dBFS.
    fn pause_played(&self, n: usize) -> bool {
        let blocks = (n * 100).div_ceil(self.plc.sample_rate_hz().max(1) as usize);
        self.plc
            .recent_blocks_below(blocks + PAUSE_BLOCKS, QUIET_MEAN_SQUARE)
    }

    /// True when the first `n` pending samples are below about -45 dBFS RMS.
    fn is_quiet(&self, n: usize) -> bool {
        let e: i64 = self.sync[..n]
            .iter()
            .map(|&x| i64::from(x) * i64::from(x))
            .sum();
        // 32768 * 10^(-45/20) ≈ 184.
        e < 184 * 184 * n as i64
    }
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chan() -> ReceiveChannel<u32> {
        ReceiveChannel::new(ReceiveConfig {
            jitter: JitterConfig {
                initial_delay_ms: 40,
                ..Default::default()
            },
            frame_samples: 160,
            sample_rate_hz: 8000,
            max_packet_samples: 480,
        })
    }

    /// "Decodes" packet k as 160 samples of value k.
    fn dec(item: &u32, out: &mut [i16]) -> usize {
        out[..160].fill(*item as i16 * 100);
        160
    }

    #[test]
    fn steady_stream_plays_every_packet_once_and_offers_it_for_relay() {
        let mut c = chan();
        let mut pool = StretchPool::new(120);
        let mut out = [0i16; 160];
        let mut released = vec![];
        let mut played = vec![];
        for k in 0..50u32 {
            c.insert(160 * k, 160, k == 0, 0, k, &mut |i| released.push(i));
            let r = c.get_frame(&mut out, &mut pool, false, false, &mut dec, &mut |i| {
                released.push(i)
            });
            if r.produced {
                played.push(out[0] / 100);
                if let Some(i) = r.relay {
                    released.push(i);
                }
            }
        }
        assert!(played.windows(2).all(|w| w[1] == w[0] + 1), "{played:?}");
        assert_eq!(played.len() + c.buffer.len(), 50);
        assert_eq!(released.len(), played.len());
    }

    /// A G.711 decoder that may hand relayed codes to the concealer undecoded, counting
    /// what it does.
    struct CodesDecoder {
        decoded: u32,
        fed: u32,
    }

    impl PacketDecoder<u32> for CodesDecoder {
        fn decode(&mut self, item: &u32, out: &mut [i16]) -> usize {
            self.decoded += 1;
            dec(item, out)
        }

        fn feed_undecoded(&mut self, item: &u32, samples: usize, plc: &mut PcmPlc) -> bool {
            let codes = [*item as u8; 160];
            let fed = samples == 160
                && plc.good_coded_frame(&codes, crate::codec::audio::g711::Law::Ulaw);
            self.fed += u32::from(fed);
            fed
        }
    }

    #[test]
    fn a_relayed_stream_is_fed_as_codes_and_decoded_only_around_a_loss() {
        for undecoded_ok in [true, false] {
            let mut c = chan();
            let mut pool = StretchPool::new(120);
            let mut out = [0i16; 160];
            let mut d = CodesDecoder { decoded: 0, fed: 0 };
            let (mut relayed, mut undecoded, mut concealed) = (0, 0, 0);
            for k in 0..60u32 {
                if k != 30 {
                    c.insert(160 * k, 160, k == 0, 0, k, &mut |_| {});
                }
                let r = c.get_frame(&mut out, &mut pool, true, undecoded_ok, &mut d, &mut |_| {});
                concealed += r.concealed;
                if r.relay.is_some() {
                    relayed += 1;
                    undecoded += u32::from(r.undecoded);
                }
                // Every undecoded frame is a relay (the caller must send its payload).
                assert!(!r.undecoded || r.relay.is_some());
            }
            assert_eq!(concealed, 160, "the loss is concealed either way");
            if undecoded_ok {
                // Start-up and the frame merged after the loss are decoded; the rest is not.
                assert!(d.decoded <= 3, "{} decoded", d.decoded);
                assert!(
                    d.fed >= 50 && undecoded == d.fed,
                    "{} fed, {undecoded}",
                    d.fed
                );
            } else {
                assert_eq!((d.fed, undecoded), (0, 0));
                assert!(d.decoded >= 55, "{} decoded", d.decoded);
            }
            assert!(relayed >= 50, "{relayed} relayed");
        }
    }

    /// A relayed stream that jumps 1 s ahead with the marker bit while packets flow (a
    /// source switched on one SSRC): the marked packet the buffer goes to is relayed, its
    /// marker with it. Before, `relay_frame` took it from the buffer and released it
    /// (lost, counted nowhere), and the far end never saw the marker.
    #[test]
    fn a_relayed_stream_that_jumps_ahead_relays_the_marked_packet() {
        let mut c = chan();
        let mut pool = StretchPool::new(120);
        let mut out = [0i16; 160];
        let mut d = CodesDecoder { decoded: 0, fed: 0 };
        let mut relayed = vec![];
        for k in 0..160u32 {
            let ts = if k < 100 { 160 * k } else { 160 * k + 8_000 };
            c.insert(
                ts,
                160,
                k == 0 || k == 100,
                1 + u64::from(k) * 20_000_000,
                k,
                &mut |_| {},
            );
            match c.relay_frame(160, &mut |_| {}) {
                RelayStep::Relay(r) => relayed.push((r.relay.unwrap(), r.marker)),
                RelayStep::Gap(_) => {}
                RelayStep::Decode => {
                    let r = c.get_frame(&mut out, &mut pool, true, true, &mut d, &mut |_| {});
                    if let Some(item) = r.relay {
                        relayed.push((item, r.marker));
                    }
                }
            }
        }
        let marked: Vec<u32> = relayed.iter().filter(|r| r.1).map(|r| r.0).collect();
        assert!(marked.ends_with(&[100]), "{relayed:?}");
        let after: Vec<u32> = relayed.iter().map(|r| r.0).filter(|&k| k >= 100).collect();
        assert_eq!(
            after[..50],
            (100..150).collect::<Vec<_>>()[..],
            "{relayed:?}"
        );
    }

    /// The target rises above what the buffer holds (quality adaptation raised the lowest
    /// delay) while packets come one a frame, on time: nothing is concealed, as nothing was
    /// lost. Before, a lengthening with one 20 ms packet held asked for 30 ms, decoded the
    /// 20 and concealed 10 in mid-speech, frame after frame, counted as loss.
    #[test]
    fn a_target_above_one_packet_held_conceals_nothing_in_speech() {
        // Started at a 20 ms delay: each packet is the only one held when its frame plays.
        let mut c = ReceiveChannel::new(ReceiveConfig {
            jitter: JitterConfig {
                initial_delay_ms: 20,
                min_delay_ms: 20,
                ..Default::default()
            },
            frame_samples: 160,
            sample_rate_hz: 8000,
            max_packet_samples: 480,
        });
        let mut pool = StretchPool::new(120);
        let mut out = [0i16; 160];
        let mut d = CodesDecoder { decoded: 0, fed: 0 };
        let mut concealed = 0;
        for k in 0..200u32 {
            if k == 50 {
                c.buffer.delay_mut().set_bounds(80, 500);
            }
            c.insert(
                160 * k,
                160,
                k == 0,
                1 + u64::from(k) * 20_000_000,
                k,
                &mut |_| {},
            );
            let r = c.get_frame(&mut out, &mut pool, false, false, &mut d, &mut |_| {});
            if k >= 50 {
                concealed += r.concealed;
            }
        }
        assert_eq!(concealed, 0);
    }

    /// The same jump ahead, to a new source sending 40 ms packets into 20 ms frames: the
    /// marked packet cannot be relayed as one frame, so it is decoded, not lost. (In
    /// review, `relay_frame` took it from the buffer and dropped it.)
    #[test]
    fn a_relayed_stream_that_jumps_ahead_to_another_ptime_decodes_the_marked_packet() {
        struct Recorder(Vec<u32>);
        impl PacketDecoder<u32> for Recorder {
            fn decode(&mut self, item: &u32, out: &mut [i16]) -> usize {
                self.0.push(*item);
                let n = if *item >= 100 { 320 } else { 160 };
                out[..n].fill(*item as i16 * 100);
                n
            }
        }
        let mut c = chan();
        let mut pool = StretchPool::new(120);
        let mut out = [0i16; 160];
        let mut d = Recorder(vec![]);
        let mut relayed = vec![];
        for k in 0..200u32 {
            let arrival = 1 + u64::from(k) * 20_000_000;
            if k < 100 {
                c.insert(160 * k, 160, k == 0, arrival, k, &mut |_| {});
            } else if k % 2 == 0 {
                let n = 100 + (k - 100) / 2;
                let ts = 16_000 + 8_000 + 320 * (n - 100);
                c.insert(ts, 320, n == 100, arrival, n, &mut |_| {});
            }
            match c.relay_frame(160, &mut |_| {}) {
                RelayStep::Relay(r) => relayed.push(r.relay.unwrap()),
                RelayStep::Gap(_) => {}
                RelayStep::Decode => {
                    let r = c.get_frame(&mut out, &mut pool, true, true, &mut d, &mut |_| {});
                    relayed.extend(r.relay);
                }
            }
        }
        assert!(d.0.contains(&100), "decoded {:?}, relayed {relayed:?}", d.0);
        assert!(
            d.0.contains(&101) && d.0.contains(&140),
            "decoded {:?}",
            d.0
        );
    }

    /// "Decodes" packet k as 160 samples of loud white noise (nothing periodic to splice).
    fn dec_noise(item: &u32, out: &mut [i16]) -> usize {
        let mut x = item.wrapping_mul(2_654_435_761) | 1;
        for v in &mut out[..160] {
            x = crate::processing::audio::plc::xorshift32(x);
            *v = (x >> 16) as i16 / 4;
        }
        160
    }

    #[test]
    fn refused_time_scale_changes_back_off_on_aperiodic_audio() {
        let mut c = chan();
        let mut pool = StretchPool::new(120);
        let mut out = [0i16; 160];
        // A 400 ms surplus of noise, then one packet per frame: the buffer stays far above
        // target, so each frame may shorten, and the analysis refuses every time.
        let mut next = 0u32;
        for _ in 0..20 {
            c.insert(160 * next, 160, next == 0, 0, next, &mut |_| {});
            next += 1;
        }
        let mut attempts = vec![];
        for f in 0..120u32 {
            c.insert(160 * next, 160, false, 0, next, &mut |_| {});
            next += 1;
            let before = c.stretch_refusals;
            let r = c.get_frame(
                &mut out,
                &mut pool,
                false,
                false,
                &mut dec_noise,
                &mut |_| {},
            );
            assert_eq!(r.accelerated, 0, "noise never splices");
            if c.stretch_refusals != before {
                attempts.push(f);
            }
        }
        let gaps: Vec<u32> = attempts.windows(2).map(|w| w[1] - w[0]).collect();
        // Cooldowns of 2, 4, 8, then 16 frames between analyses.
        assert!(gaps.len() >= 6, "{attempts:?}");
        assert_eq!(&gaps[..4], &[3, 5, 9, 17], "{attempts:?}");
        assert!(gaps[4..].iter().all(|&g| g == 17), "{attempts:?}");
    }

    #[test]
    fn a_lost_packet_is_concealed_in_place() {
        let mut c = chan();
        let mut pool = StretchPool::new(120);
        let mut out = [0i16; 160];
        let mut conceal = 0;
        for k in 0..30u32 {
            if k != 10 {
                c.insert(160 * k, 160, false, 0, k, &mut |_| {});
            }
            let r = c.get_frame(&mut out, &mut pool, false, false, &mut dec, &mut |_| {});
            conceal += r.concealed;
        }
        assert_eq!(conceal, 160);
    }

    #[test]
    fn ptime_change_mid_stream_keeps_frames_continuous() {
        let mut c = chan();
        let mut pool = StretchPool::new(120);
        let mut out = [0i16; 160];
        // 20 ms packets, then 30 ms, then 10 ms, then 60 ms: packets sent on their own
        // timeline (a packet leaves when its last sample exists), frames pulled every 20 ms.
        let mut packets = vec![];
        let mut ts = 0u32;
        for &(dur, n) in &[(160u32, 15), (240, 10), (80, 30), (480, 5)] {
            for _ in 0..n {
                packets.push((ts, dur));
                ts += dur;
            }
        }
        let total_ts = ts;
        let mut dec_any = |item: &u32, o: &mut [i16]| {
            let n = (*item as usize).min(o.len());
            o[..n].fill(1000);
            n
        };
        let (mut next, mut produced, mut concealed) = (0usize, 0u32, 0u32);
        for tick in 0..((total_ts / 80) + 40) {
            let now_ts = tick * 80; // 10 ms ticks
            while next < packets.len() && packets[next].0 + packets[next].1 <= now_ts {
                let (pts, dur) = packets[next];
                c.insert(pts, dur as usize, next == 0, 0, dur, &mut |_| {});
                next += 1;
            }
            if tick % 2 == 0 {
                let r = c.get_frame(&mut out, &mut pool, false, false, &mut dec_any, &mut |_| {});
                if r.produced {
                    produced += 160;
                    if next < packets.len() {
                        concealed += r.concealed;
                    }
                }
            }
        }
        assert!(
            produced >= total_ts,
            "all audio played ({produced} of {total_ts})"
        );
        // Switching to 60 ms packets with a 40 ms buffer can underrun once (the first long
        // packet is not complete when its audio is due); the target then covers the packet.
        assert!(
            concealed <= 480,
            "concealment only at the switch to longer packets ({concealed})"
        );
    }

    #[test]
    fn a_start_up_delay_step_waits_for_a_pause_and_fills_it_with_quiet() {
        // Packet 3 takes 100 ms more than the others: the 40 ms start-up delay is short of
        // it, so the buffer decides to grow. Nothing else goes missing, so the step waits
        // for the pause of packets 10-14 and lengthens it, not the speech around it.
        let loud = |k: u32| !(10..=14).contains(&k);
        let mut c = chan();
        let mut pool = StretchPool::new(120);
        let mut out = [0i16; 160];
        let (mut late, mut decoded) = (vec![], vec![]);
        // Per frame: the last packet decoded for it (None: concealed or filled), peak level.
        let mut frames: Vec<(Option<u32>, i16)> = vec![];
        let arrival_ms = |k: u32| f64::from(20 * k) + if k == 3 { 105.0 } else { 5.0 };
        for tick in 0..60u32 {
            for k in 0..40u32 {
                let at = arrival_ms(k);
                if at > f64::from(20 * tick) - 20.0 && at <= f64::from(20 * tick) {
                    let ns = (at * 1e6) as u64 + 1;
                    if let Insert::Late(i) = c.insert(160 * k, 160, k == 0, ns, k, &mut drop) {
                        late.push(i);
                    }
                }
            }
            let before = decoded.len();
            let mut dec = |item: &u32, out: &mut [i16]| {
                decoded.push(*item);
                out[..160].fill(if loud(*item) { 3000 } else { 0 });
                160
            };
            let r = c.get_frame(&mut out, &mut pool, false, false, &mut dec, &mut drop);
            if r.produced {
                let peak = out.iter().map(|x| x.saturating_abs()).max().unwrap_or(0);
                frames.push((decoded[before..].last().copied(), peak));
            }
        }
        assert_eq!(late, vec![3]);
        let want: Vec<u32> = (0..40).filter(|&k| k != 3).collect();
        assert_eq!(
            decoded, want,
            "every packet but the late one plays, in order"
        );
        let at = |k: u32| frames.iter().position(|f| f.0 == Some(k)).unwrap_or(0);
        let step = &frames[at(11) + 1..at(12)];
        assert!(step.len() >= 3, "a step of at least 60 ms, got {step:?}");
        assert!(step.iter().all(|f| f.0.is_none() && f.1 < 184), "{step:?}");
    }

    /// A codec with its own concealment (as Opus) that records which packet each FEC
    /// request would rebuild from; packets 10-14 are quiet (a pause).
    #[derive(Default)]
    struct FecDecoder {
        decoded: Vec<u32>,
        fec_from: Vec<u32>,
    }

    impl PacketDecoder<u32> for FecDecoder {
        fn decode(&mut self, item: &u32, out: &mut [i16]) -> usize {
            self.decoded.push(*item);
            out[..160].fill(if (10..=14).contains(item) { 0 } else { 3000 });
            160
        }

        fn conceal(&mut self, next: Option<&u32>, out: &mut [i16]) -> bool {
            if let Some(&k) = next {
                self.fec_from.push(k);
            }
            out.fill(0);
            true
        }
    }

    /// FEC rebuilds the audio of a gap the timeline skips, never where it stands still:
    /// while the start-up delay step lengthens a pause (the buffer settles, `Empty`) the
    /// packets after it are all there, and FEC from the next one would rebuild audio that
    /// already played. In review, the settling wait decoded that FEC.
    #[test]
    fn fec_is_not_decoded_while_the_timeline_stands_still() {
        let mut c = chan();
        let mut pool = StretchPool::new(120);
        let mut out = [0i16; 160];
        let mut d = FecDecoder::default();
        // Packet 3 comes 100 ms late: the buffer decides to grow, in the pause of 10-14.
        let arrival_ms = |k: u32| f64::from(20 * k) + if k == 3 { 105.0 } else { 5.0 };
        let mut settled = false;
        for tick in 0..60u32 {
            for k in 0..40u32 {
                let at = arrival_ms(k);
                if at > f64::from(20 * tick) - 20.0 && at <= f64::from(20 * tick) {
                    let ns = (at * 1e6) as u64 + 1;
                    let _ = c.insert(160 * k, 160, k == 0, ns, k, &mut drop);
                }
            }
            let before = d.decoded.len();
            let r = c.get_frame(&mut out, &mut pool, false, false, &mut d, &mut drop);
            settled |= r.produced && d.decoded.len() == before && tick > 12;
        }
        assert!(settled, "the step was taken");
        let want: Vec<u32> = (0..40).filter(|&k| k != 3).collect();
        assert_eq!(d.decoded, want);
        // Only the gap left by packet 3 may be rebuilt from FEC (from packet 4).
        assert!(d.fec_from.iter().all(|&k| k == 4), "{:?}", d.fec_from);
    }
}
