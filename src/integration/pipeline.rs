//! Sends a PCM signal through a real engine on the virtual clock, over a simulated or
//! recorded network, and returns what the far end would hear plus the quality figures.
//!
//! The same lanes, rings and receive path as production run here; only time is virtual.
//! Leg A receives the impaired RTP stream (its jitter buffer, concealment and decoder do
//! the work), leg B re-encodes (or relays) towards the far end, whose audio is decoded from
//! B's packets and placed on the input's timeline. Control plane: allocates freely.

use crate::buffer::adaptive::JitterConfig;
use crate::codec::{AnyDecoder, AnyEncoder, CodecSpec};
use crate::engine::MediaEngine;
use crate::quality::emodel::{mos_from_r, r_factor, EModelInput};
use crate::quality::impairment::Delivery;
use crate::rtp::{write_header, RtpHeader, RtpPacket};
use crate::runtime::stats::SessionStats;
use crate::session::MediaSessionParams;
use crate::types::{DialogId, Ptime};
use crate::{ClockMode, EngineConfig, EngineEvent, Error};

/// What to run.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Codec of the impaired leg (what the sender encodes).
    pub codec: CodecSpec,
    /// Codec towards the far end.
    pub to_codec: CodecSpec,
    /// Packetisation time.
    pub ptime: Ptime,
    /// Which packets arrive when (from `quality::impairment::simulate` or a trace).
    pub deliveries: Vec<Delivery>,
    /// Receive jitter buffer settings (clock rate is set from the codec).
    pub jitter: JitterConfig,
    /// Opus settings of the far leg's encoder (and of the sender when it is Opus).
    pub opus: crate::codec::OpusSettings,
    /// Voice processing on the impaired leg's received audio (VAD, AGC, NS, DTMF detection).
    pub dsp: crate::processing::audio::DspConfig,
    /// What the far end says (mono PCM at the far leg's rate), sent on the far leg every
    /// ptime over a clean network and played toward the impaired sender. With `dsp.aec`
    /// on, this is the echo canceller's reference: the input then carries its echo, as a
    /// phone's microphone picks up its loudspeaker. `None`: the far end is silent.
    pub far_end: Option<Vec<i16>>,
    /// DTX toward the far end (RFC 3389, comfort noise on payload type 13): while leg A's
    /// VAD (`dsp.vad`) finds silence, leg B sends SID frames instead of audio, and the far
    /// end plays comfort noise from them, as a receiving phone would.
    pub dtx: bool,
}

/// What came out.
#[derive(Debug, Clone)]
pub struct PipelineResult {
    /// Far-end audio on the input's timeline, same length as the input.
    pub output: Vec<i16>,
    /// Frames played towards the far end.
    pub frames_played: u64,
    /// Frames containing concealment.
    pub frames_concealed: u64,
    /// Packets discarded as late.
    pub late_discards: u64,
    /// Duplicate packets.
    pub duplicates: u64,
    /// Playout time minus send time of every played frame, ms (network delay included).
    pub playout_delay_ms: Vec<f64>,
    /// RFC 3550 interarrival jitter at the end, ms.
    pub jitter_ms: f64,
    /// Network loss, percent of packets sent.
    pub loss_percent: f64,
    /// E-model MOS from effective loss, its burst ratio and the mean playout delay.
    pub mos_estimate: f64,
    /// Leg A's counters at the end.
    pub stats: SessionStats,
    /// DTMF digits the engine reported on leg A (in-band detection or RFC 4733), in order.
    pub dtmf_digits: String,
    /// VAD talkspurts on leg A: (start, end) in ms of the simulated clock (`None`: still
    /// speaking at the end).
    pub talkspurts: Vec<(f64, Option<f64>)>,
    /// Packets leg B sent toward the far end, SID frames among them, and the frames it
    /// did not send (DTX).
    pub far_packets: u64,
    /// SID frames among [`PipelineResult::far_packets`].
    pub far_sids: u64,
    /// Frames leg B left unsent during silences (DTX).
    pub far_frames_skipped: u64,
    /// Leg A's echo canceller's ERLE at the end, dB (its last whole second of far-end
    /// activity; `None` without a canceller).
    pub echo_erle_db: Option<f64>,
}

impl PipelineResult {
    /// Mean of [`PipelineResult::playout_delay_ms`].
    pub fn mean_playout_delay_ms(&self) -> f64 {
        let v = &self.playout_delay_ms;
        if v.is_empty() {
            0.0
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    }

    /// 95th percentile of [`PipelineResult::playout_delay_ms`].
    pub fn p95_playout_delay_ms(&self) -> f64 {
        let mut v = self.playout_delay_ms.clone();
        if v.is_empty() {
            return 0.0;
        }
        v.sort_by(|a, b| a.total_cmp(b));
        v[((v.len() as f64 * 0.95).ceil() as usize).clamp(1, v.len()) - 1]
    }

    /// The `--json` summary with its stable field names.
    pub fn to_json(&self) -> String {
        format!(
            "{{\"frames_played\":{},\"frames_concealed\":{},\"late_discards\":{},\"duplicates\":{},\
             \"mean_playout_delay_ms\":{:.2},\"p95_playout_delay_ms\":{:.2},\"jitter_ms\":{:.2},\
             \"loss_percent\":{:.3},\"mos_estimate\":{:.3},\"samples_accelerated\":{},\"samples_expanded\":{},\
             \"jb_target_ms\":{},\"dtmf_digits\":\"{}\",\"talkspurts\":[{}],\
             \"far_packets\":{},\"far_sids\":{},\"far_frames_skipped\":{},\"echo_erle_db\":{}}}",
            self.frames_played,
            self.frames_concealed,
            self.late_discards,
            self.duplicates,
            self.mean_playout_delay_ms(),
            self.p95_playout_delay_ms(),
            self.jitter_ms,
            self.loss_percent,
            self.mos_estimate,
            self.stats.samples_accelerated,
            self.stats.samples_expanded,
            self.stats.jb_target_ms,
            self.dtmf_digits,
            self.talkspurts
                .iter()
                .map(|(a, b)| match b {
                    Some(b) => format!("[{a:.0},{b:.0}]"),
                    None => format!("[{a:.0},null]"),
                })
                .collect::<Vec<_>>()
                .join(","),
            self.far_packets,
            self.far_sids,
            self.far_frames_skipped,
            self.echo_erle_db
                .map_or_else(|| "null".to_string(), |v| format!("{v:.1}")),
        )
    }
}

/// The far leg's sender: encodes its audio frame by frame and pushes it as RTP.
struct FarEnd {
    payloads: Vec<Vec<u8>>,
    pt: u8,
    ts_step: u32,
    k: usize,
    next_ms: f64,
    pkt: Vec<u8>,
}

impl FarEnd {
    fn new(
        pcm: &[i16],
        spec: CodecSpec,
        rate: crate::types::SampleRate,
        ptime: Ptime,
        opus: crate::codec::OpusSettings,
    ) -> Result<Self, Error> {
        let frame = rate.samples_in(ptime);
        let mut enc = AnyEncoder::with_settings(spec.codec, opus);
        let mut buf = vec![0u8; spec.codec.max_payload_bytes(ptime)];
        let payloads = pcm
            .chunks_exact(frame)
            .map(|f| {
                enc.encode(f, &mut buf)
                    .map(|n| buf[..n].to_vec())
                    .map_err(|_| Error::InvalidConfig("far-end encoder failed"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(FarEnd {
            payloads,
            pt: spec.payload_type.get(),
            ts_step: spec.codec.timestamp_step(ptime),
            k: 0,
            next_ms: 0.0,
            pkt: Vec::new(),
        })
    }

    fn send(
        &mut self,
        to: crate::types::SessionId,
        ing: &mut crate::IngressHandle,
    ) -> Result<(), Error> {
        let Some(p) = self.payloads.get(self.k) else {
            return Ok(());
        };
        let h = RtpHeader {
            marker: self.k == 0,
            payload_type: self.pt,
            sequence: self.k as u16,
            timestamp: (self.k as u32).wrapping_mul(self.ts_step),
            ssrc: 0xFA2E_0001,
        };
        self.pkt.resize(12 + p.len(), 0);
        write_header(&h, &mut self.pkt).map_err(|_| Error::InvalidConfig("header"))?;
        self.pkt[12..].copy_from_slice(p);
        let _ = ing.push(to, &self.pkt);
        self.k += 1;
        Ok(())
    }
}

/// Payload type of comfort noise toward the far end when [`PipelineConfig::dtx`] is on.
const DTX_CN_PT: u8 = 13;

/// Fills `out` with comfort noise from `cn`, a frame at a time (as a receiver plays it).
fn comfort_noise(
    cn: &mut crate::codec::audio::comfort_noise::CnGenerator,
    out: &mut [i16],
    frame: usize,
) {
    for chunk in out.chunks_mut(frame.max(1)) {
        cn.generate(chunk);
    }
}

/// Runs `input` (mono PCM at the codec's rate) through the engine. See module docs.
pub fn run(input: &[i16], cfg: &PipelineConfig) -> Result<PipelineResult, Error> {
    let codec = cfg.codec.codec;
    let mut pa = MediaSessionParams::new(cfg.codec, cfg.ptime);
    pa.opus = cfg.opus;
    let rate = pa.sample_rate().hz();
    let frame = pa.frame_samples();
    let ptime_ms = f64::from(cfg.ptime.ms());
    let engine = MediaEngine::new(EngineConfig {
        clock: ClockMode::Virtual,
        sessions_per_lane: 4,
        jitter: cfg.jitter,
        ..Default::default()
    })?;
    engine.start()?;
    // An endpoint view: keep playing (concealment, then comfort noise) through gaps.
    pa.jitter = Some(JitterConfig {
        max_conceal_ms: 0,
        ..cfg.jitter
    });
    pa.dsp = cfg.dsp;
    let mut pb = MediaSessionParams::new(cfg.to_codec, cfg.ptime);
    pb.opus = cfg.opus;
    if cfg.dtx && cfg.to_codec.codec != crate::codec::Codec::Opus {
        pb.comfort_noise_send_pt = crate::types::PayloadType::new(DTX_CN_PT);
        pb.dtx = true;
    }
    let (b_rate_sr, b_frame) = (pb.sample_rate(), pb.frame_samples());
    let (a, b) = engine.create_call((DialogId(1), pa), (DialogId(2), pb))?;
    let (mut ing, mut eg) = engine
        .take_rtp_handles(a.lane())
        .ok_or(Error::InvalidConfig("handles taken"))?;

    // Encode every frame once (the sender).
    let frames = input.len() / frame;
    let mut enc = AnyEncoder::with_settings(codec, cfg.opus);
    let mut payloads = Vec::with_capacity(frames);
    let mut buf = vec![0u8; codec.max_payload_bytes(cfg.ptime)];
    for k in 0..frames {
        let n = enc
            .encode(&input[k * frame..(k + 1) * frame], &mut buf)
            .map_err(|_| Error::InvalidConfig("encoder failed"))?;
        payloads.push(buf[..n].to_vec());
    }
    let ts_step = codec.timestamp_step(cfg.ptime);

    let mut deliveries: Vec<&Delivery> = cfg
        .deliveries
        .iter()
        .filter(|d| d.send_index < frames)
        .collect();
    deliveries.sort_by(|x, y| x.arrival_ms.total_cmp(&y.arrival_ms));
    let end_ms = deliveries
        .last()
        .map(|d| d.arrival_ms)
        .unwrap_or(0.0)
        .max(frames as f64 * ptime_ms)
        + 1000.0;
    let mut pkt = Vec::new();
    let mut next = 0;
    let b_rate = b_rate_sr.hz();
    let mut dec = AnyDecoder::with_rate(cfg.to_codec.codec, b_rate_sr);
    let mut pcm = vec![0i16; frame];
    // The far end's audio comes back at the input's rate (e.g. PCMU 8 kHz -> 16 kHz).
    let b_ts_step = cfg.to_codec.codec.timestamp_step(cfg.ptime).max(1);
    let mut back = (b_rate != rate)
        .then(|| crate::processing::format::resample::Resampler::new(b_rate, rate, 1, b_frame))
        .transpose()
        .map_err(|_| Error::InvalidConfig("no resampler for these rates"))?;
    let mut pcm_b = vec![0i16; b_frame.max(frame)];
    let mut output = vec![0i16; input.len()];
    let clock = codec.info().clock_rate_hz;
    let mut at_end = None;
    let mut b_origin: Option<(u32, usize)> = None;
    let mut delays = Vec::new();
    let mut played = 0u64;
    let mut dtmf_digits = String::new();
    let mut talkspurts: Vec<(f64, Option<f64>)> = Vec::new();
    // The far end's comfort-noise generator (DTX), and where its noise runs from.
    let mut cn = crate::codec::audio::comfort_noise::CnGenerator::new(7);
    // Where the output after the last frame written runs on as comfort noise (that frame
    // was a SID), until the next packet.
    let mut cn_from: Option<usize> = None;
    let mut far = match &cfg.far_end {
        Some(pcm) => Some(FarEnd::new(
            pcm,
            cfg.to_codec,
            b_rate_sr,
            cfg.ptime,
            cfg.opus,
        )?),
        None => None,
    };
    let mut t_ms = 0.0;
    while t_ms <= end_ms {
        while next < deliveries.len() && deliveries[next].arrival_ms <= t_ms {
            let d = deliveries[next];
            let h = RtpHeader {
                marker: d.marker,
                payload_type: cfg.codec.payload_type.get(),
                sequence: d.send_index as u16,
                timestamp: (d.send_index as u32).wrapping_mul(ts_step),
                ssrc: d.ssrc,
            };
            pkt.resize(12 + payloads[d.send_index].len(), 0);
            write_header(&h, &mut pkt).map_err(|_| Error::InvalidConfig("header"))?;
            pkt[12..].copy_from_slice(&payloads[d.send_index]);
            // Arrival on the simulated clock, in ns (never 0: 0 means "unknown").
            let arrival_ns = (d.arrival_ms * 1e6) as u64 + 1;
            let _ = ing.push_at(a.id, &pkt, arrival_ns);
            next += 1;
        }
        if let Some(far) = far.as_mut() {
            // The far end sends one frame per ptime, on time.
            if t_ms >= far.next_ms {
                far.send(b.id, &mut ing)?;
                far.next_ms += ptime_ms;
            }
        }
        engine.step(1)?;
        t_ms += 10.0;
        while let Some(ev) = engine.poll_event() {
            match ev {
                EngineEvent::Dtmf {
                    session,
                    digit,
                    ended_ms: None,
                    ..
                } if session == a.id => dtmf_digits.push(digit),
                EngineEvent::Talkspurt { session, speaking } if session == a.id => {
                    if speaking {
                        talkspurts.push((t_ms, None));
                    } else if let Some(last) = talkspurts.last_mut() {
                        last.1 = Some(t_ms);
                    }
                }
                _ => {}
            }
        }
        while let Some(p) = eg.pop() {
            if p.session() != b.id {
                continue;
            }
            // The far end plays B's packets by B's own timestamps; the first one is placed
            // where its audio came from in the input (its source timestamp, since the sender
            // stamped frame k with k * ts_step), so output and input start aligned and drift
            // only by the jitter buffer's delay changes, as a listener would hear it.
            let src = p.source_timestamp();
            let mut bytes = vec![0u8; p.len()];
            p.copy_to(&mut bytes);
            drop(p);
            let Ok(rtp) = RtpPacket::parse(&bytes) else {
                continue;
            };
            let sid = rtp.payload_type() == DTX_CN_PT;
            let n = if sid {
                // The far end's comfort noise: this SID's level and spectrum, for its own
                // frame and (below) for the frames not sent after it.
                if let Ok(p) = crate::codec::audio::comfort_noise::CnPayload::parse(rtp.payload()) {
                    cn.update(&p);
                }
                cn.generate(&mut pcm[..frame]);
                frame
            } else {
                match back.as_mut() {
                    Some(r) => {
                        let m = dec
                            .decode(rtp.payload(), &mut pcm_b)
                            .unwrap_or(0)
                            .min(b_frame);
                        r.process(&pcm_b[..m], &mut pcm).min(frame)
                    }
                    None => dec.decode(rtp.payload(), &mut pcm).unwrap_or(0).min(frame),
                }
            };
            let src_pos = (u64::from(src) * u64::from(rate) / u64::from(clock)) as usize;
            if b_origin.is_none() && src_pos > input.len() {
                continue; // no audio origin yet (comfort noise before the first packet)
            }
            let (b_ts0, p0) = *b_origin.get_or_insert((rtp.timestamp(), src_pos));
            // B's timestamps are in B's clock (Opus 48 kHz against G.711's 8 kHz).
            let pos = p0 + (rtp.timestamp().wrapping_sub(b_ts0) / b_ts_step) as usize * frame;
            if pos < input.len() && at_end.is_none() {
                played += 1;
                if let Some(from) = cn_from {
                    // The frames DTX left unsent since the last SID.
                    comfort_noise(&mut cn, &mut output[from.min(pos)..pos], frame);
                }
                let m = n.min(input.len() - pos);
                output[pos..pos + m].copy_from_slice(&pcm[..m]);
                cn_from = sid.then_some(pos + m);
                if src_pos <= input.len() {
                    delays.push(t_ms - 10.0 - src_pos as f64 * 1000.0 / f64::from(rate));
                }
                if (src_pos + frame >= frames * frame || pos + frame >= frames * frame)
                    && at_end.is_none()
                {
                    at_end = Some(engine.session_stats(a.id)?);
                }
            }
        }
    }
    if let Some(from) = cn_from {
        // A silence that lasted to the end of the input.
        let end = output.len();
        comfort_noise(&mut cn, &mut output[from.min(end)..], frame);
    }
    let far_stats = engine.session_stats(b.id)?;
    // Counters as they stood when the input's last frame played (not the trailing comfort
    // noise after the stream ended).
    let stats = match at_end {
        Some(s) => s,
        None => engine.session_stats(a.id)?,
    };
    let q = engine.session_quality(a.id)?;
    let sent = frames.max(1) as f64;
    let distinct: std::collections::BTreeSet<usize> = cfg
        .deliveries
        .iter()
        .map(|d| d.send_index)
        .filter(|&i| i < frames)
        .collect();
    let loss_percent = 100.0 * (sent - distinct.len() as f64) / sent;
    let mut r = PipelineResult {
        output,
        frames_played: played,
        frames_concealed: stats.frames_concealed,
        late_discards: stats.rx_late,
        duplicates: stats.rx_duplicates + stats.jb_duplicates,
        playout_delay_ms: delays,
        jitter_ms: q.jitter_ms,
        loss_percent,
        mos_estimate: 0.0,
        stats,
        dtmf_digits,
        talkspurts,
        far_packets: far_stats.tx_packets,
        far_sids: far_stats.tx_cn_packets,
        far_frames_skipped: far_stats.frames_dtx,
        echo_erle_db: q.echo_erle_db,
    };
    let eff = loss_percent + 100.0 * r.late_discards as f64 / sent;
    let kind = crate::engine::codec_kind(codec);
    r.mos_estimate = mos_from_r(r_factor(&EModelInput::for_codec(
        kind,
        eff,
        // The burstiness of the loss the session classified (its last 64 packets are not
        // in it yet; 1 with none).
        q.burst_ratio,
        r.mean_playout_delay_ms(),
    )));
    let _ = rate;
    engine.stop()?;
    Ok(r)
}
