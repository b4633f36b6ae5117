//! The `g722_decode` fuzz target: garbage G.722 payloads in every mode (64, 56 and
//! 48 kbit/s), into output buffers of any size (odd, short, empty), through the decoder
//! itself and through the engine's decoder enum, interleaved with resets and with the
//! generic concealment the engine uses for G.722 ([`PcmPlc`] at 16 kHz: good frames,
//! lost frames, comfort noise). G.722 has no invalid codes: every octet must decode.

#[path = "input.rs"]
mod input;

use input::Input;
use media_core::codec::audio::g722::{G722Decoder, G722Mode};
use media_core::codec::{AnyDecoder, Codec};
use media_core::processing::audio::plc::PcmPlc;

const MODES: [G722Mode; 3] = [G722Mode::Rate64k, G722Mode::Rate56k, G722Mode::Rate48k];
const MAX_OPS: usize = 2000;

/// Runs one input. Panics (the finding) when an invariant breaks.
pub fn run(data: &[u8]) {
    let mut inp = Input::new(data);
    let mut decoders = MODES.map(G722Decoder::new);
    let mut any = AnyDecoder::new(Codec::G722);
    let mut plc = PcmPlc::new(16_000);
    let mut out = vec![0i16; 4096];
    let mut ops = 0;
    while !inp.is_empty() && ops < MAX_OPS {
        ops += 1;
        let op = inp.u8();
        let out_len = match inp.u8() % 4 {
            0 => inp.below(out.len() + 1),
            1 => 0,
            _ => 320,
        };
        match op % 8 {
            0..=3 => {
                let len = inp.below(1500);
                let codes = inp.bytes(len);
                let d = &mut decoders[usize::from(op % 3)];
                let n = d.decode(codes, &mut out[..out_len]);
                assert_eq!(n, 2 * codes.len().min(out_len / 2), "samples written");
                assert_eq!(G722Decoder::output_len(codes.len()), 2 * codes.len());
                plc.good_frame(&mut out[..n]);
            }
            4 => {
                let len = inp.below(1500);
                let codes = inp.bytes(len);
                assert_eq!(any.samples_in(codes), 2 * codes.len());
                let n = any
                    .decode(codes, &mut out[..out_len])
                    .expect("every G.722 payload decodes");
                assert!(n <= out_len, "wrote {n} samples into {out_len}");
                assert!(
                    !any.conceal(Some(codes), &mut out[..out_len]),
                    "G.722 has no codec concealment (the generic PLC runs)"
                );
            }
            5 => plc.conceal(&mut out[..out_len]),
            6 => plc.comfort_noise(&mut out[..out_len]),
            _ => {
                let d = &mut decoders[usize::from(op >> 3) % 3];
                let mode = d.mode();
                d.reset();
                assert_eq!(d.mode(), mode, "reset keeps the mode");
                if op & 0x80 != 0 {
                    plc.reset();
                }
                let _ = (plc.concealed_run(), plc.pitch_period());
            }
        }
    }
}
