//! Sample-level effects: a fixed [`Gain`], a parametric equaliser of RBJ cookbook biquads
//! ([`eq`]) and a feed-forward compressor / limiter ([`compressor`]).

pub mod compressor;
pub mod eq;

/// A fixed linear gain with saturation, in Q12 fixed point (no float per sample).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gain {
    q12: i32,
}

impl Gain {
    /// A gain of `db` decibels (clamped to ±40 dB).
    pub fn from_db(db: f32) -> Self {
        let lin = 10f32.powf(db.clamp(-40.0, 40.0) / 20.0);
        Gain {
            q12: (lin * 4096.0).round() as i32,
        }
    }

    /// Applies the gain in place, saturating to the i16 range. Real-time safe.
    #[inline]
    pub fn apply(&self, frame: &mut [i16]) {
        for s in frame.iter_mut() {
            let v = (i32::from(*s) * self.q12) >> 12;
            *s = v.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn six_db_roughly_doubles_and_saturates() {
        let g = Gain::from_db(6.0206);
        let mut f = [1000i16, -1000, 30000, -30000];
        g.apply(&mut f);
        assert_eq!(f, [2000, -2000, i16::MAX, i16::MIN]);
    }
}
