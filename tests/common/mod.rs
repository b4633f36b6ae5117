//! Helpers shared by the integration tests.
#![allow(dead_code)]

use media_core::codec::audio::g711;
use media_core::rtp::{write_header, RtpHeader};

/// Builds an RTP packet into `out`.
pub fn rtp(pt: u8, seq: u16, ts: u32, ssrc: u32, marker: bool, payload: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.resize(12 + payload.len(), 0);
    let h = RtpHeader {
        marker,
        payload_type: pt,
        sequence: seq,
        timestamp: ts,
        ssrc,
    };
    write_header(&h, out).unwrap();
    out[12..].copy_from_slice(payload);
}

/// `n` samples of white background noise, uniform in `-amplitude..=amplitude`, from an
/// xorshift32 sequence seeded with `seed` (not 0).
pub fn background_noise(n: usize, amplitude: u16, seed: u32) -> Vec<i16> {
    let mut x = seed;
    let span = 2 * u32::from(amplitude) + 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x % span) as i16 - amplitude as i16
        })
        .collect()
}

/// A started engine on the virtual clock, one lane of `sessions_per_lane` slots, the
/// other settings at their defaults.
pub fn started_virtual_engine(sessions_per_lane: usize) -> media_core::MediaEngine {
    let e = media_core::MediaEngine::new(media_core::EngineConfig {
        clock: media_core::ClockMode::Virtual,
        sessions_per_lane,
        ..Default::default()
    })
    .unwrap();
    e.start().unwrap();
    e
}

/// A deterministic test signal: a 440 Hz-ish tone plus a slow sweep, 8 kHz, `n` samples from `start`.
pub fn signal(start: usize, n: usize) -> Vec<i16> {
    (start..start + n)
        .map(|i| {
            let t = i as f64 / 8000.0;
            let v = (2.0 * std::f64::consts::PI * 440.0 * t).sin() * 8000.0
                + (2.0 * std::f64::consts::PI * (200.0 + (i % 8000) as f64 * 0.1) * t).sin()
                    * 3000.0;
            v as i16
        })
        .collect()
}

/// µ-law payload of frame `k` (160 samples) of [`signal`].
pub fn ulaw_frame(k: usize) -> Vec<u8> {
    let pcm = signal(k * 160, 160);
    let mut out = vec![0u8; 160];
    g711::ulaw_encode(&pcm, &mut out);
    out
}

/// A-law payload of frame `k` of [`signal`].
pub fn alaw_frame(k: usize) -> Vec<u8> {
    let pcm = signal(k * 160, 160);
    let mut out = vec![0u8; 160];
    g711::alaw_encode(&pcm, &mut out);
    out
}

/// A packet popped from egress, copied out.
#[derive(Debug, Clone)]
pub struct Out {
    pub session: media_core::SessionId,
    pub header: RtpHeader,
    pub bytes: Vec<u8>,
}

impl Out {
    pub fn payload(&self) -> &[u8] {
        &self.bytes[12..]
    }
}

pub fn drain(egress: &mut media_core::EgressHandle) -> Vec<Out> {
    let mut v = Vec::new();
    while let Some(p) = egress.pop() {
        let mut bytes = vec![0u8; p.len()];
        p.copy_to(&mut bytes).unwrap();
        v.push(Out {
            session: p.session(),
            header: p.header(),
            bytes,
        });
    }
    v
}

/// Fits a sinusoid of `freq_hz` (amplitude and phase, least squares) to `pcm` sampled at
/// `rate_hz`; returns the SNR in dB of the fit against the residual, and the amplitude.
pub fn tone_fit(pcm: &[i16], freq_hz: f64, rate_hz: f64) -> (f64, f64) {
    let w = 2.0 * std::f64::consts::PI * freq_hz / rate_hz;
    let (mut c, mut s) = (0.0, 0.0);
    for (i, &x) in pcm.iter().enumerate() {
        c += f64::from(x) * (w * i as f64).cos();
        s += f64::from(x) * (w * i as f64).sin();
    }
    let n = pcm.len() as f64;
    let (a_c, a_s) = (2.0 * c / n, 2.0 * s / n);
    let (mut sig, mut err) = (0.0, 0.0);
    for (i, &x) in pcm.iter().enumerate() {
        let fit = a_c * (w * i as f64).cos() + a_s * (w * i as f64).sin();
        sig += fit * fit;
        err += (f64::from(x) - fit).powi(2);
    }
    (10.0 * (sig / err).log10(), (a_c * a_c + a_s * a_s).sqrt())
}

/// Frame `k` of a tone (peak `amplitude`) as an Opus packet: 48 kHz mono, 20 ms, encoded
/// by `enc` (so frames encoded in order continue one stream).
pub fn opus_tone_packet(enc: &mut opus::Encoder, k: usize, amplitude: f64) -> Vec<u8> {
    let pcm: Vec<i16> = (0..960)
        .map(|i| (((k * 960 + i) as f64 * 0.0576).sin() * amplitude) as i16)
        .collect();
    let mut payload = vec![0u8; 400];
    let n = enc.encode(&pcm, &mut payload).unwrap();
    payload.truncate(n);
    payload
}

/// Deterministic speech-like noise: a low-passed xorshift sequence with a syllable envelope.
pub fn babble(n: usize, seed: u32) -> Vec<i16> {
    let mut s = seed.max(1);
    let mut lp = 0.0f32;
    (0..n)
        .map(|i| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            let w = (s as f32 / u32::MAX as f32) - 0.5;
            lp = 0.85 * lp + 0.15 * w;
            let env =
                (0.5 + 0.5 * (i as f32 * 2.0 * std::f32::consts::PI * 4.0 / 8000.0).sin()).max(0.1);
            (lp * 40_000.0 * env) as i16
        })
        .collect()
}

/// The echo a line returns in one frame (`echo.len()` samples) of what it has played
/// (`played`, its timeline): the echo of its last frame's audio and earlier, through
/// `path`'s taps (delay in samples, gain).
pub fn line_echo(played: &[i16], path: &[(usize, f32)], echo: &mut [i16]) {
    let base = played.len() as isize - echo.len() as isize;
    for (i, x) in echo.iter_mut().enumerate() {
        let mut v = 0.0f32;
        for &(d, g) in path {
            let t = base + i as isize - d as isize;
            if t >= 0 {
                v += g * f32::from(played[t as usize]);
            }
        }
        *x = v as i16;
    }
}
