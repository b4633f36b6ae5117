//! The ITU-T G.107 E-model: a transmission rating factor R from codec, loss and delay,
//! and the G.107 Annex B mapping from R to an estimated MOS (conversational quality).
//!
//! # What is implemented
//! `R = Ro − Is − Id − Ie,eff + A` (G.107 §3.1) with every parameter except those in
//! [`EModelInput`] at its G.107 default (§3.7: SLR 8 dB, RLR 2 dB, STMR 15 dB,
//! LSTR 18 dB, Ds = Dr = 3, TELR 65 dB, WEPL 110 dB, qdu 1, Nc −70 dBm0p,
//! Nfor −64 dBmp, Ps = Pr = 35 dB(A), A = 0).
//!
//! - **Ro** (§3.2, basic signal-to-noise ratio) and **Is** (§3.3, simultaneous
//!   impairments: Iolr + Ist + Iq) are evaluated with the full formulas. With the defaults
//!   they are Ro ≈ 94.77 and Is ≈ 1.41; together with the default delay impairment
//!   (Idle ≈ 0.15 at zero delay) this gives the well-known default **R ≈ 93.2**.
//! - **Id** (§3.4) is the full standard formula, not the simplified `0.024·Ta + …`
//!   approximation: `Id = Idte + Idle + Idd`, talker echo (Idte, from TELR and the echo
//!   path delay T), listener echo (Idle, from WEPL and the round-trip delay Tr) and
//!   absolute delay (Idd, zero up to Ta = 100 ms). Only one delay is an input here, the
//!   mouth-to-ear one-way delay; it is used as both T and Ta, with Tr = 2·T, which is the
//!   usual reading when only one delay is known (the echo path runs over the same
//!   network path as the speech, and the listener-echo loop is a round trip). The
//!   increase over zero delay agrees within 1 R with the widely used simplified formula
//!   of Cole & Rosenbluth, `Id ≈ 0.024·d + 0.11·(d − 177.3)·H(d − 177.3)`, from 0 to
//!   300 ms (see the tests); beyond that the linear fit keeps rising while G.107's Idd
//!   bends over (at 400 ms: 31.0 here, 34.1 from the fit).
//! - **Ie,eff** (§3.5): `Ie + (95 − Ie) · Ppl / (Ppl/BurstR + Bpl)`.
//! - **MOS** (Annex B): `1 + 0.035·R + R·(R − 60)·(100 − R)·7·10⁻⁶`, clamped to 1.0–4.5.
//!
//! Clause numbers are those of G.107 (03/2005).
//!
//! # Codec impairments
//! [`codec_impairment`] gives (Ie, Bpl) on the narrowband scale. G.711 values are ITU-T
//! G.113 Appendix I; the G.722 and Opus values are documented approximations (see
//! [`CodecKind`]).
//!
//! None of this allocates or panics; out-of-range and non-finite inputs are clamped or
//! replaced by G.107 defaults as each function documents, so the result is always finite.
//! It is cheap (a few dozen transcendental operations) but meant for report intervals,
//! not per packet.

/// G.107 §3.7 default values for the parameters not in [`EModelInput`].
mod defaults {
    /// Send loudness rating, dB.
    pub const SLR: f64 = 8.0;
    /// Receive loudness rating, dB.
    pub const RLR: f64 = 2.0;
    /// Sidetone masking rating, dB.
    pub const STMR: f64 = 15.0;
    /// Listener sidetone rating, dB.
    pub const LSTR: f64 = 18.0;
    /// D-value of the telephone, send side.
    pub const DS: f64 = 3.0;
    /// Talker echo loudness rating, dB.
    pub const TELR: f64 = 65.0;
    /// Weighted echo path loss, dB.
    pub const WEPL: f64 = 110.0;
    /// Number of quantizing distortion units.
    pub const QDU: f64 = 1.0;
    /// Circuit noise referred to the 0 dBr point, dBm0p.
    pub const NC: f64 = -70.0;
    /// Noise floor at the receive side, dBmp.
    pub const NFOR: f64 = -64.0;
    /// Room noise at the send side, dB(A).
    pub const PS: f64 = 35.0;
    /// Room noise at the receive side, dB(A).
    pub const PR: f64 = 35.0;
    /// Advantage factor.
    pub const A: f64 = 0.0;
    /// §3.4 Idd: delay up to which absolute delay is not impaired, ms (later editions
    /// of G.107 name it mT).
    pub const M_T: f64 = 100.0;
}

/// Longest one-way delay [`r_factor`] evaluates, ms. G.107's planning range ends well
/// below this; the cap only keeps the arithmetic finite for absurd inputs.
pub const MAX_DELAY_MS: f64 = 60_000.0;

/// The codecs this module has impairment values for. The caller maps its own codec
/// description onto one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CodecKind {
    /// G.711 (either law) with packet loss concealment as in G.711 Appendix I:
    /// Ie = 0, Bpl = 25.1 (G.113 Appendix I).
    #[default]
    G711Plc,
    /// G.711 without concealment (lost packets played as silence):
    /// Ie = 0, Bpl = 4.3 (G.113 Appendix I).
    G711NoPlc,
    /// G.722 at 64 kbit/s. G.113 rates it only on the wideband (extended, 0–129) scale,
    /// where a loss-free G.722 call scores well above a loss-free G.711 call. The
    /// narrowband scale tops out at G.711 toll quality, so the approximation used here
    /// is Ie = 0 (saturated at the scale's ceiling, never below G.711) and, for loss,
    /// Bpl = 25.1: G.722 calls are concealed (G.722 Appendix III/IV, or a generic
    /// waveform-substitution PLC), and G.711 Appendix I's value is the narrowband-scale
    /// figure for concealment of that kind. A caller wanting the wideband scale should
    /// use G.107.1 instead.
    G722,
    /// Opus (RFC 6716) at the wideband or better modes and ≥ 16 kbit/s VoIP deployments
    /// use. Opus is not in G.113. Published listening tests (e.g. Rämö & Toukomaa,
    /// "Voice quality characterization of IETF Opus codec", Interspeech 2011) rate it at
    /// these rates above narrowband toll quality, so on the narrowband scale it too
    /// saturates: Ie = 0. Its built-in concealment is taken as no worse than G.711
    /// Appendix I: Bpl = 25.1, with no credit for in-band FEC (which would only raise
    /// it). Below 16 kbit/s or in narrowband mode the caller should supply its own Ie.
    Opus,
}

/// Equipment impairment factor Ie and packet-loss robustness factor Bpl of `codec` on
/// the narrowband E-model scale, as `(ie, bpl)`. See [`CodecKind`] for the source of
/// each value.
pub const fn codec_impairment(codec: CodecKind) -> (f64, f64) {
    match codec {
        // G.113 Appendix I: G.711 Ie = 0; Bpl 25.1 with Appendix I PLC, 4.3 without.
        CodecKind::G711Plc => (0.0, 25.1),
        CodecKind::G711NoPlc => (0.0, 4.3),
        // Documented approximations (narrowband scale); see `CodecKind`.
        CodecKind::G722 => (0.0, 25.1),
        CodecKind::Opus => (0.0, 25.1),
    }
}

/// The E-model inputs a media engine measures; every other G.107 parameter is at its
/// default (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EModelInput {
    /// Equipment impairment factor Ie of the codec (G.113 Appendix I), 0–95.
    pub ie: f64,
    /// Packet-loss robustness factor Bpl of the codec and its concealment (G.113).
    pub bpl: f64,
    /// Packet-loss probability Ppl in percent (0–100), lost plus jitter-buffer discards.
    pub ppl_percent: f64,
    /// Burst ratio BurstR (G.107 §3.5): 1 for random loss, > 1 for bursty loss
    /// (mean observed burst length / mean burst length expected for random loss).
    pub burst_r: f64,
    /// Mean one-way (mouth-to-ear) delay in ms, used as G.107's T and Ta, with
    /// Tr = 2·T (see the module docs).
    pub one_way_delay_ms: f64,
}

impl CodecKind {
    /// The impairment class of a media-core codec (G.711 is rated with concealment, as
    /// the engine conceals its losses).
    pub fn of(codec: crate::codec::Codec) -> CodecKind {
        use crate::codec::Codec;
        match codec {
            Codec::Pcmu | Codec::Pcma => CodecKind::G711Plc,
            Codec::G722 => CodecKind::G722,
            Codec::Opus => CodecKind::Opus,
        }
    }
}

impl Default for EModelInput {
    /// G.107 defaults: Ie 0, Bpl 1, Ppl 0 %, BurstR 1, no delay; R ≈ 93.2.
    fn default() -> Self {
        Self {
            ie: 0.0,
            bpl: 1.0,
            ppl_percent: 0.0,
            burst_r: 1.0,
            one_way_delay_ms: 0.0,
        }
    }
}

impl EModelInput {
    /// Inputs for `codec` (Ie and Bpl from [`codec_impairment`]) under the given loss,
    /// burstiness and one-way delay.
    pub const fn for_codec(
        codec: CodecKind,
        ppl_percent: f64,
        burst_r: f64,
        one_way_delay_ms: f64,
    ) -> Self {
        let (ie, bpl) = codec_impairment(codec);
        Self {
            ie,
            bpl,
            ppl_percent,
            burst_r,
            one_way_delay_ms,
        }
    }
}

/// The terms of `R = Ro − Is − Id − Ie,eff + A`, as [`r_factor_breakdown`] computed them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RFactorBreakdown {
    /// §3.2 basic signal-to-noise ratio Ro (≈ 94.77 with the defaults).
    pub ro: f64,
    /// §3.3 simultaneous impairment factor Is (≈ 1.41 with the defaults).
    pub is: f64,
    /// §3.4 talker echo impairment Idte.
    pub idte: f64,
    /// §3.4 listener echo impairment Idle.
    pub idle: f64,
    /// §3.4 absolute delay impairment Idd.
    pub idd: f64,
    /// §3.5 effective equipment impairment Ie,eff.
    pub ie_eff: f64,
    /// §3.6 advantage factor A (0, the default).
    pub a: f64,
    /// The rating R. Not clamped: heavy loss with long delay can take it below 0.
    pub r: f64,
}

impl RFactorBreakdown {
    /// §3.4 delay impairment `Id = Idte + Idle + Idd`.
    pub fn id(&self) -> f64 {
        self.idte + self.idle + self.idd
    }
}

/// G.107 transmission rating factor R for `params` (the other parameters at their G.107
/// defaults). Finite for every input; typically 0–93.2 (it can fall below 0 with heavy
/// loss and long delay). Feed it to [`mos_from_r`] for an estimated MOS.
///
/// ```
/// use media_core::quality::emodel::{r_factor, mos_from_r, CodecKind, EModelInput};
///
/// let clean = EModelInput::for_codec(CodecKind::G711Plc, 0.0, 1.0, 0.0);
/// assert!((r_factor(&clean) - 93.2).abs() < 0.05);
/// let lossy = EModelInput::for_codec(CodecKind::G711Plc, 5.0, 1.0, 150.0);
/// assert!((r_factor(&lossy) - 73.76).abs() < 0.05);
/// assert!((mos_from_r(r_factor(&lossy)) - 3.77).abs() < 0.01);
/// ```
pub fn r_factor(params: &EModelInput) -> f64 {
    r_factor_breakdown(params).r
}

/// [`r_factor`] with each term of the sum, for reports and for checking the arithmetic.
pub fn r_factor_breakdown(params: &EModelInput) -> RFactorBreakdown {
    let delay = sanitize(params.one_way_delay_ms, 0.0, 0.0, MAX_DELAY_MS);
    // T (echo path) = Ta (absolute) = one-way delay; Tr (listener echo loop) = 2·T.
    // Is depends on T only through STMRo (sidetone combined with early talker echo).
    let (ro, is, no) = ro_is_no(delay);
    let idte = talker_echo_impairment(delay, no);
    let idle = listener_echo_impairment(ro, 2.0 * delay);
    let idd = absolute_delay_impairment(delay);
    let ie_eff =
        effective_equipment_impairment(params.ie, params.bpl, params.ppl_percent, params.burst_r);
    let a = defaults::A;
    let r = ro - is - (idte + idle + idd) - ie_eff + a;
    RFactorBreakdown {
        ro,
        is,
        idte,
        idle,
        idd,
        ie_eff,
        a,
        r,
    }
}

/// G.107 §3.5 effective equipment impairment
/// `Ie,eff = Ie + (95 − Ie) · Ppl / (Ppl/BurstR + Bpl)`.
///
/// Inputs are sanitised rather than rejected: `ie` is clamped to 0–95; `ppl_percent` to
/// 0–100 (NaN → 0); a non-finite or negative `bpl` becomes the G.107 default 1; a
/// non-finite or non-positive `burst_r` becomes 1 (random loss).
pub fn effective_equipment_impairment(ie: f64, bpl: f64, ppl_percent: f64, burst_r: f64) -> f64 {
    let ie = sanitize(ie, 0.0, 0.0, 95.0);
    let ppl = sanitize(ppl_percent, 0.0, 0.0, 100.0);
    let bpl = if bpl.is_finite() && bpl >= 0.0 {
        bpl
    } else {
        1.0
    };
    let burst_r = if burst_r.is_finite() && burst_r > 0.0 {
        burst_r
    } else {
        1.0
    };
    if ppl == 0.0 {
        return ie;
    }
    // ppl > 0 and burst_r > 0, so the denominator is > 0.
    ie + (95.0 - ie) * ppl / (ppl / burst_r + bpl)
}

/// G.107 §3.4 delay impairment `Id = Idte + Idle + Idd` for a one-way delay (used as T
/// and Ta, with Tr = 2·T) and the default echo parameters. Negative or NaN delay counts
/// as 0; delay is capped at [`MAX_DELAY_MS`].
pub fn delay_impairment(one_way_delay_ms: f64) -> f64 {
    let b = r_factor_breakdown(&EModelInput {
        one_way_delay_ms,
        ..EModelInput::default()
    });
    b.id()
}

/// G.107 Annex B: estimated MOS (conversational quality, MOS-CQE) from R:
/// 1 for R < 0, `1 + 0.035·R + R·(R − 60)·(100 − R)·7·10⁻⁶` for 0 ≤ R ≤ 100, 4.5 above,
/// and always within 1.0–4.5 (the polynomial dips just below 1 for R < 6.5; NaN gives 1).
pub fn mos_from_r(r: f64) -> f64 {
    if r.is_nan() || r <= 0.0 {
        return 1.0;
    }
    if r >= 100.0 {
        return 4.5;
    }
    let mos = 1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7.0e-6;
    mos.clamp(1.0, 4.5)
}

/// `value` clamped to `min..=max`, with NaN replaced by `nan_default`.
fn sanitize(value: f64, nan_default: f64, min: f64, max: f64) -> f64 {
    if value.is_nan() {
        nan_default
    } else {
        value.clamp(min, max)
    }
}

/// `(1 + x^n)^(1/n)`, the smooth-maximum form G.107 uses throughout.
fn soft(x: f64, n: f64) -> f64 {
    (1.0 + x.powf(n)).powf(1.0 / n)
}

/// Ro, Is and No for echo-path delay `t_ms` (G.107 §3.2, §3.3). Only Ist depends on T.
fn ro_is_no(t_ms: f64) -> (f64, f64, f64) {
    use defaults::*;
    let olr = SLR + RLR;
    // §3.2: noise sources summed as powers.
    let nfo = NFOR + RLR;
    let pre = PR + 10.0 * (1.0 + 10f64.powf((10.0 - LSTR) / 10.0)).log10();
    let nor = RLR - 121.0 + pre + 0.008 * (pre - 35.0).powi(2);
    let nos = PS - SLR - DS - 100.0 + 0.004 * (PS - olr - DS - 14.0).powi(2);
    let no = 10.0
        * (10f64.powf(NC / 10.0)
            + 10f64.powf(nos / 10.0)
            + 10f64.powf(nor / 10.0)
            + 10f64.powf(nfo / 10.0))
        .log10();
    let ro = 15.0 - 1.5 * (SLR + no);

    // §3.3: Is = Iolr + Ist + Iq.
    let xolr = olr + 0.2 * (64.0 + no - RLR);
    let iolr = 20.0 * (soft(xolr / 8.0, 8.0) - xolr / 8.0);
    let ist = ist(stmr_o(t_ms));
    let q = 37.0 - 15.0 * QDU.log10();
    let g = 1.07 + 0.258 * q + 0.0602 * q * q;
    let y = (ro - 100.0) / 15.0 + 46.0 / 8.4 - g / 9.0;
    let z = 46.0 / 30.0 - g / 40.0;
    let iq = 15.0 * (1.0 + 10f64.powf(y) + 10f64.powf(z)).log10();
    (ro, iolr + ist + iq, no)
}

/// §3.3 STMRo: sidetone masking combined with talker echo arriving after T ms.
fn stmr_o(t_ms: f64) -> f64 {
    use defaults::*;
    -10.0 * (10f64.powf(-STMR / 10.0) + (-t_ms / 4.0).exp() * 10f64.powf(-TELR / 10.0)).log10()
}

/// §3.3 Ist, the sidetone impairment, from STMRo.
fn ist(stmr_o: f64) -> f64 {
    12.0 * soft((stmr_o - 13.0) / 6.0, 8.0)
        - 28.0 * soft((stmr_o + 1.0) / 19.4, 35.0)
        - 13.0 * soft((stmr_o - 3.0) / 33.0, 13.0)
        + 29.0
}

/// §3.4 Idte, talker echo, for echo path delay `t_ms`. G.107's TERV correction for
/// STMR < 9 dB (adding Ist/2) does not apply at the default STMR of 15 dB.
fn talker_echo_impairment(t_ms: f64, no: f64) -> f64 {
    use defaults::*;
    let roe = -1.5 * (no - RLR);
    let terv = TELR - 40.0 * ((1.0 + t_ms / 10.0) / (1.0 + t_ms / 150.0)).log10()
        + 6.0 * (-0.3 * t_ms * t_ms).exp();
    let re = 80.0 + 2.5 * (terv - 14.0);
    let d = roe - re;
    (d / 2.0 + (d * d / 4.0 + 100.0).sqrt() - 1.0) * (1.0 - (-t_ms).exp())
}

/// §3.4 Idle, listener echo, for round-trip delay `tr_ms`.
fn listener_echo_impairment(ro: f64, tr_ms: f64) -> f64 {
    let rle = 10.5 * (defaults::WEPL + 7.0) * (tr_ms + 1.0).powf(-0.25);
    let d = ro - rle;
    d / 2.0 + (d * d / 4.0 + 169.0).sqrt()
}

/// §3.4 Idd, absolute delay: 0 up to mT = 100 ms, then
/// `25·{(1 + X⁶)^(1/6) − 3·(1 + (X/3)⁶)^(1/6) + 2}` with `X = log2(Ta/100)`.
fn absolute_delay_impairment(ta_ms: f64) -> f64 {
    if ta_ms <= defaults::M_T {
        return 0.0;
    }
    let x = (ta_ms / defaults::M_T).log2();
    25.0 * (soft(x, 6.0) - 3.0 * soft(x / 3.0, 6.0) + 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(actual: f64, expected: f64, tol: f64) {
        assert!(
            (actual - expected).abs() <= tol,
            "expected {expected} ± {tol}, got {actual}"
        );
    }

    #[test]
    fn defaults_give_the_textbook_ro_is_and_r() {
        let b = r_factor_breakdown(&EModelInput::default());
        close(b.ro, 94.77, 0.01);
        close(b.is, 1.41, 0.01);
        close(b.idte, 0.0, 1e-12);
        close(b.idle, 0.149, 0.001);
        close(b.idd, 0.0, 0.0);
        close(b.r, 93.2, 0.05);
    }

    #[test]
    fn loss_free_g711_at_low_delay_rates_about_93_and_mos_4_41() {
        for codec in [CodecKind::G711Plc, CodecKind::G711NoPlc] {
            let r0 = r_factor(&EModelInput::for_codec(codec, 0.0, 1.0, 0.0));
            close(r0, 93.2, 0.05);
            close(mos_from_r(r0), 4.41, 0.005);
            // 20 ms one-way: a little echo and listener-echo impairment, still ≈ 93.
            let r20 = r_factor(&EModelInput::for_codec(codec, 0.0, 1.0, 20.0));
            close(r20, 92.53, 0.05);
            assert!(r20 < r0);
        }
    }

    #[test]
    fn five_percent_random_loss_g711_plc_at_150_ms_matches_hand_computation() {
        // Hand computation (G.107 defaults, T = Ta = 150 ms, Tr = 300 ms):
        //   Ro = 94.77, Is = 1.41
        //   Idte: TERV = 65 − 40·log10(16/2) + 0 = 28.88, Re = 80 + 2.5·14.88 = 117.2,
        //         Roe = 94.77, Idte = (−22.4/2 + √(125.4 + 100) − 1)·1 = 2.81
        //   Idle: Rle = 10.5·117·301^−0.25 = 294.9, Idle = −100.9 + √(10171 + 169) = 0.84
        //   Idd:  X = log2(1.5) = 0.585, Idd = 25·(1.00656 − 3.0000275 + 2) = 0.16
        //   Ie,eff = 0 + 95·5/(5/1 + 25.1) = 15.78
        //   R = 94.77 − 1.41 − 3.82 − 15.78 = 73.76
        let b = r_factor_breakdown(&EModelInput::for_codec(CodecKind::G711Plc, 5.0, 1.0, 150.0));
        close(b.idte, 2.81, 0.01);
        close(b.idle, 0.84, 0.01);
        close(b.idd, 0.16, 0.01);
        close(b.ie_eff, 15.78, 0.01);
        close(b.r, 73.76, 1.0);
        close(b.r, 73.76, 0.02);
        // Annex B: 1 + 0.035·73.76 + 73.76·13.76·26.24·7e-6 = 3.768.
        close(mos_from_r(b.r), 3.768, 0.005);
    }

    #[test]
    fn g711_without_plc_suffers_far_more_from_the_same_loss() {
        let plc = r_factor(&EModelInput::for_codec(CodecKind::G711Plc, 2.0, 1.0, 0.0));
        let no_plc = r_factor(&EModelInput::for_codec(CodecKind::G711NoPlc, 2.0, 1.0, 0.0));
        // Ie,eff = 95·2/(2 + 25.1) = 7.01 vs 95·2/(2 + 4.3) = 30.16.
        close(93.206 - plc, 7.01, 0.02);
        close(93.206 - no_plc, 30.16, 0.02);
    }

    #[test]
    fn bursty_loss_impairs_more_than_random_loss() {
        let random = effective_equipment_impairment(0.0, 25.1, 3.0, 1.0);
        let bursty = effective_equipment_impairment(0.0, 25.1, 3.0, 2.0);
        close(random, 95.0 * 3.0 / (3.0 + 25.1), 1e-9);
        close(bursty, 95.0 * 3.0 / (1.5 + 25.1), 1e-9);
        assert!(bursty > random);
        // Total loss with any codec approaches the G.107 ceiling of 95.
        assert!(effective_equipment_impairment(0.0, 25.1, 100.0, 1.0) > 75.0);
    }

    #[test]
    fn full_delay_impairment_tracks_the_simplified_idd_formula() {
        // Cole & Rosenbluth's fit to G.107 (default echo parameters):
        // Id ≈ 0.024·d + 0.11·(d − 177.3)·H(d − 177.3).
        for d in [0.0f64, 25.0, 50.0, 100.0, 150.0, 177.3, 200.0, 250.0, 300.0] {
            let simplified = 0.024 * d + if d > 177.3 { 0.11 * (d - 177.3) } else { 0.0 };
            // Compare impairment relative to zero delay (the simplified form has Id(0) = 0).
            let full = delay_impairment(d) - delay_impairment(0.0);
            close(full, simplified, 1.0);
        }
        // Beyond 300 ms the fit overshoots the standard's bending Idd.
        close(delay_impairment(400.0) - delay_impairment(0.0), 30.96, 0.05);
    }

    #[test]
    fn absolute_delay_is_free_up_to_100_ms_and_grows_beyond() {
        close(absolute_delay_impairment(100.0), 0.0, 0.0);
        close(
            absolute_delay_impairment(200.0),
            25.0 * (2f64.powf(1.0 / 6.0) - 3.0 * (1.0 + 1.0 / 729.0f64).powf(1.0 / 6.0) + 2.0),
            1e-9,
        );
        assert!(absolute_delay_impairment(400.0) > absolute_delay_impairment(300.0));
    }

    #[test]
    fn mos_is_clamped_to_1_and_4_5() {
        assert_eq!(mos_from_r(-20.0), 1.0);
        assert_eq!(mos_from_r(0.0), 1.0);
        // The Annex B polynomial dips below 1 just above R = 0.
        assert_eq!(mos_from_r(3.0), 1.0);
        assert_eq!(mos_from_r(100.0), 4.5);
        assert_eq!(mos_from_r(150.0), 4.5);
        assert_eq!(mos_from_r(f64::NAN), 1.0);
        assert_eq!(mos_from_r(f64::INFINITY), 4.5);
        assert_eq!(mos_from_r(f64::NEG_INFINITY), 1.0);
        close(
            mos_from_r(50.0),
            1.0 + 1.75 + 50.0 * -10.0 * 50.0 * 7e-6,
            1e-12,
        );
        // Monotonic over the useful range.
        let mut prev = 0.0;
        for r in 7..=100 {
            let m = mos_from_r(f64::from(r));
            assert!(m >= prev, "MOS not monotonic at R = {r}");
            prev = m;
        }
    }

    #[test]
    fn codec_table_matches_g113_for_g711() {
        assert_eq!(codec_impairment(CodecKind::G711Plc), (0.0, 25.1));
        assert_eq!(codec_impairment(CodecKind::G711NoPlc), (0.0, 4.3));
        // Wideband codecs saturate the narrowband scale: never rated below G.711.
        for codec in [CodecKind::G722, CodecKind::Opus] {
            let (ie, bpl) = codec_impairment(codec);
            assert_eq!(ie, 0.0);
            assert!(bpl >= codec_impairment(CodecKind::G711Plc).1);
        }
    }

    #[test]
    fn absurd_inputs_give_finite_results() {
        let cases = [
            EModelInput {
                ie: f64::NAN,
                bpl: f64::NAN,
                ppl_percent: f64::NAN,
                burst_r: f64::NAN,
                one_way_delay_ms: f64::NAN,
            },
            EModelInput {
                ie: 1e9,
                bpl: -5.0,
                ppl_percent: 1e9,
                burst_r: 0.0,
                one_way_delay_ms: f64::INFINITY,
            },
            EModelInput {
                ie: -1e9,
                bpl: 0.0,
                ppl_percent: -3.0,
                burst_r: -1.0,
                one_way_delay_ms: -100.0,
            },
            EModelInput {
                ie: 0.0,
                bpl: 0.0,
                ppl_percent: 100.0,
                burst_r: f64::INFINITY,
                one_way_delay_ms: 1e300,
            },
        ];
        for input in cases {
            let r = r_factor(&input);
            assert!(r.is_finite(), "{input:?} gave {r}");
            let mos = mos_from_r(r);
            assert!((1.0..=4.5).contains(&mos));
        }
        // NaN delay counts as none.
        close(
            r_factor(&EModelInput {
                one_way_delay_ms: f64::NAN,
                ..EModelInput::default()
            }),
            93.2,
            0.05,
        );
    }
}
