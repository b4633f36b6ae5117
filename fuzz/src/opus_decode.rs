//! The `opus_decode` fuzz target: garbage Opus packets through the engine's decoder enum
//! (48 kHz mono: `samples_in`, `decode`, and `conceal` with and without a FEC packet, into
//! output buffers of any size) and through libopus decoders at every rate the engine
//! processes Opus at (8, 12, 16, 24, 48 kHz), mono and stereo, with FEC on and off and
//! packet loss concealment. Decoders must refuse or decode, never write past the buffer
//! and never report more than 120 ms of audio.

#[path = "input.rs"]
mod input;

use input::Input;
use media_core::codec::{AnyDecoder, Codec};

const RATES: [u32; 5] = [8000, 12000, 16000, 24000, 48000];
const MAX_OPS: usize = 1000;
/// 120 ms at 48 kHz: the longest Opus packet (RFC 6716 §3.2.5).
const MAX_PACKET_SAMPLES_48K: usize = 5760;

/// Runs one input. Panics (the finding) when an invariant breaks.
pub fn run(data: &[u8]) {
    let mut inp = Input::new(data);
    let mut any = AnyDecoder::new(Codec::Opus);
    let rate = inp.pick(&RATES);
    let stereo = inp.bool();
    let channels = if stereo {
        opus::Channels::Stereo
    } else {
        opus::Channels::Mono
    };
    let nch = if stereo { 2 } else { 1 };
    let mut lib = opus::Decoder::new(rate, channels).expect("valid libopus configuration");
    let mut out = vec![0i16; 2 * MAX_PACKET_SAMPLES_48K + 7];
    let mut ops = 0;
    while !inp.is_empty() && ops < MAX_OPS {
        ops += 1;
        let op = inp.u8();
        let len = match inp.u8() % 4 {
            0 => inp.below(1500),
            1 => inp.below(8),
            _ => inp.below(200),
        };
        let pkt = inp.bytes(len);
        let out_len = match inp.u8() % 4 {
            0 => inp.below(out.len() + 1),
            1 => 960,
            2 => 120 * (1 + inp.below(48)),
            _ => MAX_PACKET_SAMPLES_48K,
        };
        match op % 6 {
            0 | 1 => {
                let samples = any.samples_in(pkt);
                assert!(
                    samples <= MAX_PACKET_SAMPLES_48K,
                    "{samples} samples in one packet"
                );
                if let Ok(n) = any.decode(pkt, &mut out[..out_len]) {
                    assert!(n <= out_len, "wrote {n} samples into {out_len}");
                }
            }
            2 => {
                let next = if op & 0x80 != 0 { Some(pkt) } else { None };
                let _ = any.conceal(next, &mut out[..out_len]);
            }
            3 | 4 => {
                let frame = out_len / nch * nch;
                let fec = op & 0x80 != 0;
                if let Ok(n) = lib.decode(pkt, &mut out[..frame], fec) {
                    assert!(n * nch <= frame, "libopus wrote {n}x{nch} into {frame}");
                }
                if let Ok(n) = opus::packet::get_nb_samples(pkt, rate) {
                    assert!(n <= MAX_PACKET_SAMPLES_48K / (48_000 / rate as usize).max(1));
                }
                let _ = opus::packet::get_nb_frames(pkt);
                let _ = opus::packet::get_bandwidth(pkt);
                let _ = opus::packet::get_nb_channels(pkt);
            }
            _ => {
                // Packet loss concealment of a whole number of 2.5 ms.
                let quantum = rate as usize / 400 * nch;
                let frame = out_len / quantum * quantum;
                let _ = lib.decode(&[], &mut out[..frame], false);
                if op & 0x80 != 0 {
                    let _ = lib.reset_state();
                }
            }
        }
    }
}
