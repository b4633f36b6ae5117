//! Sample format conversion.
//!
//! `bit_depth` converts between i16 and u8, 24-bit, i32 and f32 (with optional TPDF
//! dither), `channels` mixes channel layouts, `resample` changes the sample rate, and
//! `converter`'s `FormatConverter` runs all three in one call.

pub mod bit_depth;
pub mod channels;
pub mod converter;
pub mod resample;

/// Converts i16 samples to f32 in [-1, 1). Real-time safe; processes `min` of the lengths.
#[inline]
pub fn i16_to_f32(input: &[i16], out: &mut [f32]) -> usize {
    let n = input.len().min(out.len());
    for (o, &i) in out[..n].iter_mut().zip(&input[..n]) {
        *o = f32::from(i) * (1.0 / 32768.0);
    }
    n
}

/// Converts f32 samples to i16 with rounding and saturation. Real-time safe.
#[inline]
pub fn f32_to_i16(input: &[f32], out: &mut [i16]) -> usize {
    let n = input.len().min(out.len());
    for (o, &i) in out[..n].iter_mut().zip(&input[..n]) {
        *o = (i * 32768.0).round().clamp(-32768.0, 32767.0) as i16;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_is_exact_for_every_i16() {
        let all: Vec<i16> = (i16::MIN..=i16::MAX).collect();
        let mut f = vec![0f32; all.len()];
        let mut back = vec![0i16; all.len()];
        i16_to_f32(&all, &mut f);
        f32_to_i16(&f, &mut back);
        assert_eq!(all, back);
    }
}
