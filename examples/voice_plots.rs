//! Voice processing curves, drawn as PNG plots for a person to look at.
//!
//! ```sh
//! cargo run --release --example voice_plots -- [OUT_DIR]   # default target/voice_plots
//! ```
//!
//! - `aec_erle.png`: [`EchoCanceller`] ERLE over time. The far end (speech1) goes through a
//!   synthetic echo path (30 ms delay, then 50 ms of exponentially decaying random taps,
//!   echo return loss 6 dB) plus white noise at −60 dBFS; the near end (speech2) talks from
//!   6 to 8 s (double talk, shaded). ERLE per 100 ms = echo-plus-noise power / output power
//!   over the 10 ms blocks where the echo is at least 10 dB above the noise (the far end is
//!   talking), with and without the residual echo suppressor. During double talk the output
//!   holds the near-end speech, so that ratio falls by design; a third curve shows the
//!   linear canceller's true residual there (its output minus the near-end speech).
//! - `agc_level.png`: [`Agc`] with the default settings (target −18 dBFS) on speech1 at
//!   −40 dBFS, then speech1 again at −6 dBFS (its peaks saturate i16 there). Input and output
//!   levels per 100 ms over active blocks (within 30 dB of the file's loudest 10 ms block, a
//!   stand-in for ITU-T P.56 activity), the target with a ±3 dB band, and below them the
//!   applied gain against the gain the measured input level calls for.
//!
//! Deterministic: the echo path and the noise come from fixed xorshift seeds. Prints the key
//! figures. Chart text needs a TrueType font: the usual DejaVu/Liberation paths are tried, or
//! set `VOICE_PLOTS_FONT=/path/to/font.ttf`.

use std::error::Error;
use std::ops::Range;
use std::path::{Path, PathBuf};

use media_core::processing::audio::aec::{AecConfig, EchoCanceller};
use media_core::processing::audio::agc::{Agc, AgcConfig};
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use SeriesLabelPosition::{LowerRight, UpperRight};

type Res<T> = Result<T, Box<dyn Error>>;
/// Points of a curve: time (s), value (`None` leaves a gap).
type Points = Vec<(f64, Option<f64>)>;
/// A plotted series: name, colour, dashed, points.
type Series<'a> = (&'a str, RGBColor, bool, Points);
type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

const RATE: usize = 8000;
/// 10 ms block, 20 ms frame (one tick) and 100 ms plot window, in samples.
const BLOCK: usize = RATE / 100;
const FRAME: usize = 2 * BLOCK;
const WINDOW: usize = 10 * BLOCK;
const DOUBLE_TALK_S: (f64, f64) = (6.0, 8.0);
/// 0 dBFS: RMS of a full-scale square wave (as in the AGC docs).
const FULL_SCALE: f64 = 32768.0;
const RED: RGBColor = RGBColor(200, 30, 30);
const BLUE: RGBColor = RGBColor(30, 100, 200);
const PALE_BLUE: RGBColor = RGBColor(140, 170, 220);
const GREY: RGBColor = RGBColor(120, 120, 120);

fn main() -> Res<()> {
    let arg = std::env::args().nth(1);
    let out_dir = PathBuf::from(arg.as_deref().unwrap_or("target/voice_plots"));
    std::fs::create_dir_all(&out_dir)?;
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/audio");
    let far = read_wav(&data.join("speech1_8000.wav"))?;
    let near = read_wav(&data.join("speech2_8000.wav"))?;
    load_font()?;
    aec_erle(&far, &near, &out_dir.join("aec_erle.png"))?;
    agc_level(&far, &out_dir.join("agc_level.png"))?;
    println!("plots written to {}", out_dir.display());
    Ok(())
}

fn aec_erle(far: &[f64], near_src: &[f64], png: &Path) -> Res<()> {
    let len = far.len() / WINDOW * WINDOW;
    // Echo path: 30 ms delay, then 50 ms of random taps decaying to −40 dB, scaled to an
    // echo return loss of 6 dB for white input.
    let (delay, taps) = (30 * RATE / 1000, 50 * RATE / 1000);
    let mut rng = XorShift(0x1234_5678);
    let mut h = vec![0.0; delay + taps];
    for (i, t) in h[delay..].iter_mut().enumerate() {
        *t = rng.uniform() * 0.01f64.powf(i as f64 / taps as f64);
    }
    let scale = (10f64.powf(-0.6) / energy(&h)).sqrt();
    h.iter_mut().for_each(|t| *t *= scale);
    let echo = convolve(&far[..len], &h);
    // White noise at −60 dBFS (uniform: RMS = amplitude / √3).
    let amp = FULL_SCALE * 10f64.powf(-60.0 / 20.0) * 3f64.sqrt();
    let mut rng = XorShift(0x9e37_79b9);
    let noise: Vec<f64> = (0..len).map(|_| amp * rng.uniform()).collect();
    // Near end from 1 s into its file, where the talker is already speaking.
    let mut near = vec![0.0; len];
    let dt = secs(DOUBLE_TALK_S.0)..secs(DOUBLE_TALK_S.1);
    near[dt.clone()].copy_from_slice(&near_src[RATE..RATE + dt.len()]);
    let capture: Vec<i16> = (0..len)
        .map(|i| to_i16(echo[i] + noise[i] + near[i]))
        .collect();
    let reference: Vec<i16> = far[..len].iter().map(|&v| to_i16(v)).collect();

    // Output and the canceller's own meter at the end.
    let run = |residual_suppression: bool| -> Res<(Vec<f64>, f32)> {
        // As a session at 20 ms ptime builds it (20 ms blocks).
        let config = AecConfig {
            sample_rate_hz: RATE as u32,
            tail_ms: 128,
            residual_suppression,
        };
        let mut aec = EchoCanceller::with_frame(config, FRAME)?;
        let mut out = capture.clone();
        for i in (0..len).step_by(FRAME) {
            aec.process(&mut out[i..i + FRAME], &reference[i..i + FRAME]);
        }
        Ok((to_f64(&out), aec.erle_db()))
    };
    let (full, full_meter) = run(true)?;
    let (linear, linear_meter) = run(false)?;
    let residual: Vec<f64> = linear.iter().zip(&near).map(|(o, s)| o - s).collect();
    // ERLE over the 10 ms blocks of `r` where the far end is heard (echo ≥ 10 dB over noise).
    let erle = |out: &[f64], r: Range<usize>| -> Option<f64> {
        let (mut num, mut den) = (0.0, 0.0);
        for b in (r.start / BLOCK..r.end / BLOCK).map(|b| b * BLOCK..(b + 1) * BLOCK) {
            if energy(&echo[b.clone()]) >= 10.0 * energy(&noise[b.clone()]) {
                num += b.clone().map(|i| (echo[i] + noise[i]).powi(2)).sum::<f64>();
                den += energy(&out[b]);
            }
        }
        (num > 0.0).then(|| 10.0 * (num / den.max(1e-9)).log10())
    };
    let full_curve = per_window(0..len, |r| erle(&full, r));
    let linear_curve = per_window(0..len, |r| erle(&linear, r));
    let residual_curve = per_window(dt.clone(), |r| erle(&residual, r));
    let residual_name = "linear only, true residual (output − near end)";
    let series = [
        ("linear + residual suppressor", RED, false, full_curve),
        ("linear only", BLUE, false, linear_curve),
        (residual_name, PALE_BLUE, false, residual_curve),
    ];
    let title = "Echo canceller ERLE: 8 kHz speech, echo path 30 ms delay + 50 ms, ERL 6 dB";
    let root = titled(png, (1200, 650), title)?;
    let end_s = len as f64 / RATE as f64;
    let axes = (end_s, 0.0, 60.0, "ERLE per 100 ms, dB (far-end talk only)");
    let shade = Some((DOUBLE_TALK_S.0, DOUBLE_TALK_S.1, "double talk"));
    chart(&root, axes, &series, shade, None, UpperRight)?;
    root.present()?;

    let db = |v: Option<f64>| v.map_or("n/a".into(), |v| format!("{v:5.1} dB"));
    println!("AEC ERLE (echo+noise power / output power, far-end talk blocks):");
    for (name, out) in [("with suppressor", &full), ("linear only", &linear)] {
        let before = db(erle(out, secs(2.0)..secs(6.0)));
        let during = db(erle(out, dt.clone()));
        let after = db(erle(out, secs(8.0)..len));
        println!("  {name:<16} 2-6 s {before}, 6-8 s (double talk) {during}, 8 s-end {after}");
    }
    let true_dt = db(erle(&residual, dt));
    println!("  linear only, true residual (output − near end) during double talk: {true_dt}");
    println!(
        "  erle_db() meter at the end: {full_meter:.1} dB with, {linear_meter:.1} dB without \
         suppressor"
    );
    Ok(())
}

fn agc_level(speech: &[f64], png: &Path) -> Res<()> {
    let len = speech.len() / WINDOW * WINDOW;
    let speech = &speech[..len];
    // Active blocks: within 30 dB of the loudest (a stand-in for ITU-T P.56 activity), the
    // same blocks in both halves of the two-level stream.
    let block_db: Vec<f64> = speech.chunks_exact(BLOCK).map(level_dbfs).collect();
    let peak = block_db.iter().copied().fold(f64::MIN, f64::max);
    let mut active: Vec<bool> = block_db.iter().map(|&l| l >= peak - 30.0).collect();
    active.extend_from_within(..);
    // Level (dBFS) of the active blocks in `x[r]`.
    let level = |x: &[f64], r: Range<usize>| -> Option<f64> {
        let mut samples = Vec::new();
        for b in (r.start / BLOCK..r.end / BLOCK).filter(|&b| active[b]) {
            samples.extend_from_slice(&x[b * BLOCK..(b + 1) * BLOCK]);
        }
        (samples.len() >= 2 * BLOCK).then(|| level_dbfs(&samples))
    };
    let src_level = level(speech, 0..len).ok_or("speech1 has no active block")?;
    let levels = [-40.0, -6.0];
    let mut input = Vec::new();
    for l in levels {
        let scale = 10f64.powf((l - src_level) / 20.0);
        input.extend(speech.iter().map(|&s| to_i16(s * scale)));
    }
    let config = AgcConfig::default();
    let target = f64::from(config.target_level_dbfs);
    let mut agc = Agc::new(config)?;
    let mut output = input.clone();
    let mut gain = Vec::new();
    for (i, frame) in output.chunks_exact_mut(FRAME).enumerate() {
        agc.process(frame);
        let t = ((i + 1) * FRAME) as f64 / RATE as f64;
        gain.push((t, Some(f64::from(agc.gain_db()))));
    }
    let (input_f, output_f) = (to_f64(&input), to_f64(&output));
    // The gain each half calls for, from its measured level (at −6 dBFS the peaks saturate).
    let halves = [0..len, len..2 * len];
    let input_level = halves.clone().map(|r| level(&input_f, r).unwrap_or(-120.0));
    let cut = f64::from(config.max_attenuation_db);
    let boost = f64::from(config.max_gain_db);
    let wanted_db = input_level.map(|l| (target - l).clamp(-cut, boost));
    let half_s = len as f64 / RATE as f64;
    let (w0, w1) = (Some(wanted_db[0]), Some(wanted_db[1]));
    let wanted = vec![(0.0, w0), (half_s, w0), (half_s, w1), (2.0 * half_s, w1)];

    let title = "AGC (default settings, target −18 dBFS): speech1 at −40 dBFS, then at −6 dBFS";
    let root = titled(png, (1200, 900), title)?;
    let (top, bottom) = root.split_vertically(540);
    let target_line = vec![(0.0, Some(target)), (2.0 * half_s, Some(target))];
    let in_curve = per_window(0..2 * len, |r| level(&input_f, r));
    let out_curve = per_window(0..2 * len, |r| level(&output_f, r));
    let series = [
        ("target ±3 dB", BLACK, true, target_line),
        ("input level", GREY, false, in_curve),
        ("output level", RED, false, out_curve),
    ];
    let (end_s, desc) = (2.0 * half_s, "level per 100 ms, dBFS (active blocks)");
    let band = Some((target - 3.0, target + 3.0));
    let axes = (end_s, -60.0, 0.0, desc);
    chart(&top, axes, &series, None, band, LowerRight)?;
    let series = [
        ("target − input level", BLACK, true, wanted),
        ("applied gain", BLUE, false, gain.clone()),
    ];
    let axes = (end_s, -20.0, 30.0, "gain, dB");
    chart(&bottom, axes, &series, None, None, UpperRight)?;
    root.present()?;

    println!("AGC, target {target:.0} dBFS (settled: gain stays within 3 dB of target − input):");
    for (h, r) in halves.into_iter().enumerate() {
        let span = &gain[r.start / FRAME..r.end / FRAME];
        let off = |&(_, g): &(f64, Option<f64>)| g.is_some_and(|g| (g - wanted_db[h]).abs() > 3.0);
        let last_off = span.iter().rposition(off);
        let settled_s = last_off.map_or(0.0, |i| span[i].0 - h as f64 * half_s);
        let is_saturated = |v: &&i16| v.unsigned_abs() >= 32767;
        let saturated = input[r.clone()].iter().filter(is_saturated).count();
        let out_level = level(&output_f, r.start + secs(2.0)..r.end).unwrap_or(f64::NAN);
        println!(
            "  input {:.0} dBFS (measured {:.1}, {saturated} samples saturated): gain {:.1} dB \
             settled after {settled_s:.2} s; output level from +2 s {out_level:.1} dBFS",
            levels[h], input_level[h], wanted_db[h]
        );
    }
    Ok(())
}

/// `f` over each 100 ms window of `span` (samples), at the window's centre time.
fn per_window(span: Range<usize>, f: impl Fn(Range<usize>) -> Option<f64>) -> Points {
    let point = |w: usize| ((w as f64 + 0.5) / 10.0, f(w * WINDOW..(w + 1) * WINDOW));
    let windows = span.start / WINDOW..span.end / WINDOW;
    windows.map(point).collect()
}

/// A white PNG canvas with `title` on top.
fn titled<'a>(png: &'a Path, size: (u32, u32), title: &str) -> Res<Area<'a>> {
    let root = BitMapBackend::new(png, size).into_drawing_area();
    root.fill(&WHITE)?;
    Ok(root.titled(title, ("sans-serif", 22))?)
}

/// One time chart, `axes` = (end time, y range, y label): `series` (split at gaps, clamped
/// to the y range so off-scale values show at its edge), a labelled shaded time span and a
/// shaded y band.
fn chart(
    area: &Area,
    (x_end, y0, y1, y_desc): (f64, f64, f64, &str),
    series: &[Series],
    shade: Option<(f64, f64, &str)>,
    band: Option<(f64, f64)>,
    legend: SeriesLabelPosition,
) -> Res<()> {
    let mut ch = ChartBuilder::on(area)
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_end, y0..y1)?;
    ch.configure_mesh()
        .x_desc("time, s")
        .y_desc(y_desc)
        .y_label_formatter(&|y| format!("{y:.0}"))
        .label_style(("sans-serif", 15))
        .draw()?;
    if let Some((a, b, label)) = shade {
        let orange = RGBColor(255, 200, 120).mix(0.35).filled();
        ch.draw_series([Rectangle::new([(a, y0), (b, y1)], orange)])?;
        let font = ("sans-serif", 15).into_font().color(&BLACK);
        let style = font.pos(Pos::new(HPos::Center, VPos::Center));
        let at = ((a + b) / 2.0, y1 - (y1 - y0) * 0.04);
        ch.draw_series([Text::new(label.to_string(), at, style)])?;
    }
    if let Some((a, b)) = band {
        let green = RGBColor(60, 170, 60).mix(0.15).filled();
        ch.draw_series([Rectangle::new([(0.0, a), (x_end, b)], green)])?;
    }
    for (name, color, dashed, points) in series {
        let mut segments = vec![Vec::new()];
        for &(t, v) in points {
            match (v, segments.last_mut()) {
                (Some(v), Some(last)) => last.push((t, v.clamp(y0, y1))),
                (None, Some(last)) if !last.is_empty() => segments.push(vec![]),
                _ => {}
            }
        }
        let style = color.stroke_width(2);
        let segments = segments.into_iter();
        let anno = if *dashed {
            ch.draw_series(segments.map(|s| DashedPathElement::new(s, 8, 6, style)))?
        } else {
            ch.draw_series(segments.map(|s| PathElement::new(s, style)))?
        };
        let sample = move |(x, y): (i32, i32)| PathElement::new([(x, y), (x + 20, y)], style);
        anno.label(*name).legend(sample);
    }
    ch.configure_series_labels()
        .position(legend)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .draw()?;
    Ok(())
}

/// Registers a TrueType font for the chart text: `VOICE_PLOTS_FONT`, else common paths.
fn load_font() -> Res<()> {
    let mut paths: Vec<String> = std::env::var("VOICE_PLOTS_FONT").into_iter().collect();
    paths.extend(
        [
            "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
            "/System/Library/Fonts/Supplemental/Arial.ttf",
        ]
        .map(String::from),
    );
    for bytes in paths.iter().filter_map(|p| std::fs::read(p).ok()) {
        // plotters keeps the font for the life of the process.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
            return Ok(());
        }
    }
    Err("no TrueType font found: set VOICE_PLOTS_FONT=/path/to/font.ttf".into())
}

fn read_wav(path: &Path) -> Res<Vec<f64>> {
    let mut reader = hound::WavReader::open(path)?;
    let spec = reader.spec();
    if spec.channels != 1 || spec.sample_rate != RATE as u32 || spec.bits_per_sample != 16 {
        return Err(format!("{}: need 8 kHz mono 16-bit, got {spec:?}", path.display()).into());
    }
    let samples = reader.samples::<i16>().collect::<Result<Vec<_>, _>>()?;
    Ok(to_f64(&samples))
}

/// Linear convolution of `x` with `h`, truncated to the length of `x`.
fn convolve(x: &[f64], h: &[f64]) -> Vec<f64> {
    let mut y = vec![0.0; x.len()];
    for (i, &v) in x.iter().enumerate() {
        for (y, &t) in y[i..].iter_mut().zip(h) {
            *y += v * t;
        }
    }
    y
}

/// Deterministic xorshift32 noise.
struct XorShift(u32);

impl XorShift {
    /// Uniform in [-1, 1].
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        f64::from(self.0) / f64::from(u32::MAX) * 2.0 - 1.0
    }
}

fn secs(s: f64) -> usize {
    (s * RATE as f64) as usize
}

fn energy(x: &[f64]) -> f64 {
    x.iter().map(|v| v * v).sum()
}

/// RMS level in dBFS (−120 for silence).
fn level_dbfs(x: &[f64]) -> f64 {
    let ms = energy(x) / x.len().max(1) as f64;
    (10.0 * (ms / (FULL_SCALE * FULL_SCALE)).log10()).max(-120.0)
}

fn to_f64(x: &[i16]) -> Vec<f64> {
    x.iter().map(|&v| f64::from(v)).collect()
}

fn to_i16(v: f64) -> i16 {
    v.round().clamp(-32768.0, 32767.0) as i16
}
