//! Operational metrics in the Prometheus text exposition format (version 0.0.4), rendered
//! on the control plane from the same lock-free counters the lanes write.
//!
//! A small renderer rather than the `metrics`/`prometheus` crates: every figure already
//! lives in per-lane and per-session atomic counters, so exporting is formatting, and a
//! registry crate would add a second copy of each value to keep in step. Names follow the
//! Prometheus conventions (`media_core_` prefix, `_total` on counters, base units, except
//! the echo canceller's ERLE in dB, the unit it is read and set in);
//! every lane counter is labelled `lane`, every session series `lane`, `slot` and
//! `dialog` (the SIP dialog's id as the caller gave it).
//!
//! Per-session series are optional: a gateway with 10,000 sessions would export
//! hundreds of thousands of series, so operators usually scrape the engine and lane
//! series often and session series on demand (or for the worst sessions only).

use std::fmt::Write as _;

use super::MediaEngine;

/// What [`MediaEngine::render_prometheus`] includes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PrometheusOptions {
    /// Add every live session's counters and quality (MOS, R, loss, jitter once a packet
    /// came; the concealment ratio; the echo canceller's ERLE where one runs).
    pub per_session: bool,
}

/// A per-session quality gauge: name, help text, and how to read it from a snapshot.
type QualityGauge = (
    &'static str,
    &'static str,
    fn(&crate::quality::monitor::QualitySnapshot) -> f64,
);

/// Lane counters that are gauges (a current value), not monotonic counters.
const LANE_GAUGES: &[&str] = &[
    "max_tick_ns",
    "last_tick_ns",
    "frame_slots_free",
    "egress_spare",
    "packet_slots_free",
];
/// Session counters that are gauges.
const SESSION_GAUGES: &[&str] = &[
    "rx_expected",
    "rx_lost",
    "rx_jitter_ts",
    "jb_target_ms",
    "jb_level_ms",
];

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// `media_core_<scope>_<field>[_total]` and its type for a counter-block field.
fn series_name(scope: &str, field: &str, gauges: &[&str]) -> (String, &'static str) {
    if gauges.contains(&field) {
        (format!("media_core_{scope}_{field}"), "gauge")
    } else {
        (format!("media_core_{scope}_{field}_total"), "counter")
    }
}

impl MediaEngine {
    /// The engine's metrics in the Prometheus text format: engine totals, every lane's
    /// counters and tick-time quantiles (as a summary, seconds), and with
    /// `options.per_session` every live session's counters, E-model quality and echo
    /// canceller ERLE.
    /// Serve it from an HTTP `/metrics` handler. Control plane; allocates.
    pub fn render_prometheus(&self, options: PrometheusOptions) -> String {
        let mut out = String::with_capacity(8 * 1024);
        let lanes = self.config.lanes;
        let loads = self.lane_loads();

        family(
            &mut out,
            "media_core_sessions",
            "gauge",
            "Live media sessions.",
        );
        let _ = writeln!(out, "media_core_sessions {}", self.session_count());
        family(
            &mut out,
            "media_core_session_slots_free",
            "gauge",
            "Session slots free for new sessions, all lanes.",
        );
        let _ = writeln!(
            out,
            "media_core_session_slots_free {}",
            self.free_session_slots()
        );
        family(
            &mut out,
            "media_core_lane_sessions",
            "gauge",
            "Live sessions per lane.",
        );
        for (lane, n) in loads.iter().enumerate() {
            let _ = writeln!(out, "media_core_lane_sessions{{lane=\"{lane}\"}} {n}");
        }

        // Lane counters, one family per field.
        let stats: Vec<_> = (0..lanes).filter_map(|l| self.lane_stats(l)).collect();
        if let Some(first) = stats.first() {
            for (i, (field, _)) in first.fields().enumerate() {
                let (name, kind) = series_name("lane", field, LANE_GAUGES);
                family(&mut out, &name, kind, &format!("Lane counter `{field}`."));
                for (lane, s) in stats.iter().enumerate() {
                    let v = s.fields().nth(i).map_or(0, |(_, v)| v);
                    let _ = writeln!(out, "{name}{{lane=\"{lane}\"}} {v}");
                }
            }
        }

        // Tick processing time as a summary (quantiles of everything since start).
        family(
            &mut out,
            "media_core_lane_tick_seconds",
            "summary",
            "Lane tick processing time (all stages of every session due), seconds.",
        );
        for lane in 0..lanes {
            let Some(h) = self.lane_tick_histogram(lane) else {
                continue;
            };
            for q in [0.5, 0.99, 0.999] {
                let _ = writeln!(
                    out,
                    "media_core_lane_tick_seconds{{lane=\"{lane}\",quantile=\"{q}\"}} {}",
                    h.quantile(q) as f64 * 1e-9
                );
            }
            let _ = writeln!(
                out,
                "media_core_lane_tick_seconds_sum{{lane=\"{lane}\"}} {}",
                h.sum() as f64 * 1e-9
            );
            let _ = writeln!(
                out,
                "media_core_lane_tick_seconds_count{{lane=\"{lane}\"}} {}",
                h.count()
            );
        }

        if options.per_session {
            self.render_sessions(&mut out);
        }
        out
    }

    fn render_sessions(&self, out: &mut String) {
        let ids = self.session_ids();
        let dialogs: Vec<_> = {
            let g = self.lock();
            ids.iter()
                .map(|id| g.sessions.get(id).map(|r| r.dialog.0))
                .collect()
        };
        // Gather first (sessions may end meanwhile: those are skipped), then write one
        // family at a time as the format requires.
        let rows: Vec<_> = ids
            .iter()
            .zip(dialogs)
            .filter_map(|(&id, dialog)| {
                let stats = self.session_stats(id).ok()?;
                let quality = self.session_quality(id).ok()?;
                let labels = format!(
                    "lane=\"{}\",slot=\"{}\",dialog=\"{}\"",
                    id.lane(),
                    id.slot(),
                    dialog?
                );
                Some((labels, stats, quality))
            })
            .collect();
        let Some((_, first, _)) = rows.first() else {
            return;
        };
        for (i, (field, _)) in first.fields().enumerate() {
            let (name, kind) = series_name("session", field, SESSION_GAUGES);
            family(out, &name, kind, &format!("Session counter `{field}`."));
            for (labels, s, _) in &rows {
                let v = s.fields().nth(i).map_or(0, |(_, v)| v);
                let _ = writeln!(out, "{name}{{{labels}}} {v}");
            }
        }
        let quality: [QualityGauge; 6] = [
            (
                "media_core_session_mos",
                "E-model (ITU-T G.107) MOS estimate.",
                |q| q.mos,
            ),
            ("media_core_session_r_factor", "E-model R factor.", |q| {
                q.r_factor
            }),
            (
                "media_core_session_loss_ratio",
                "Packets never received over packets expected (RFC 3550 sequence numbers).",
                |q| q.loss_percent / 100.0,
            ),
            (
                "media_core_session_loss_burst_ratio",
                "E-model burst ratio of the loss (G.107 BurstR: 1 random, above 1 bursty).",
                |q| q.burst_ratio,
            ),
            (
                "media_core_session_jitter_seconds",
                "RFC 3550 interarrival jitter.",
                |q| q.jitter_ms / 1000.0,
            ),
            (
                "media_core_session_concealment_ratio",
                "Frames played with concealment over frames played.",
                |q| q.concealment_ratio,
            ),
        ];
        for (name, help, get) in quality {
            family(out, name, "gauge", help);
            for (labels, _, q) in &rows {
                // No packet yet: nothing to rate (a MOS of a clean call would be exported
                // for a call whose media never came).
                if q.packets_expected == 0 && name != "media_core_session_concealment_ratio" {
                    continue;
                }
                let _ = writeln!(out, "{name}{{{labels}}} {}", get(q));
            }
        }
        // Sessions that cancel echo only.
        if rows.iter().any(|(_, _, q)| q.echo_erle_db.is_some()) {
            let name = "media_core_session_echo_erle_db";
            let help = "Echo return loss enhancement of the session's echo canceller, dB.";
            family(out, name, "gauge", help);
            for (labels, _, q) in &rows {
                if let Some(erle) = q.echo_erle_db {
                    let _ = writeln!(out, "{name}{{{labels}}} {erle}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::ClockMode;
    use crate::{CodecSpec, DialogId, EngineConfig, MediaSessionParams, Ptime};

    /// Every sample line is `name{labels} value` with a parseable value, and every family
    /// is declared once with HELP and TYPE before its samples.
    fn check_format(text: &str) {
        let mut declared = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap();
                assert!(declared.insert(name.to_string()), "{name} declared twice");
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap();
            value.parse::<f64>().unwrap();
            let name = series.split('{').next().unwrap();
            let family = name
                .strip_suffix("_count")
                .or_else(|| name.strip_suffix("_sum"))
                .filter(|f| declared.contains(*f))
                .unwrap_or(name);
            assert!(declared.contains(family), "{name} has no TYPE line");
        }
    }

    #[test]
    fn metrics_render_engine_lane_and_session_series_in_the_text_format() {
        let e = MediaEngine::new(EngineConfig {
            clock: ClockMode::Virtual,
            lanes: 2,
            sessions_per_lane: 4,
            ..Default::default()
        })
        .unwrap();
        e.start().unwrap();
        let (a, _b) = e
            .create_call(
                (
                    DialogId(7),
                    MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_20),
                ),
                (
                    DialogId(8),
                    MediaSessionParams::new(CodecSpec::PCMA, Ptime::MS_20),
                ),
            )
            .unwrap();
        e.step(10).unwrap();
        let lean = e.render_prometheus(PrometheusOptions::default());
        check_format(&lean);
        assert!(lean.contains("media_core_sessions 2\n"));
        assert!(lean.contains("# TYPE media_core_lane_ticks_total counter"));
        assert!(lean.contains("# TYPE media_core_lane_frame_slots_free gauge"));
        assert!(lean.contains("media_core_lane_ticks_total{lane=\"1\"}"));
        assert!(lean.contains("media_core_lane_tick_seconds{lane=\"0\",quantile=\"0.99\"}"));
        // A summary has its sum (a mean tick time is sum / count), and it is not zero once
        // ticks ran.
        let sum_line = lean
            .lines()
            .find(|l| l.starts_with("media_core_lane_tick_seconds_sum{lane=\"0\"}"))
            .expect("the summary's _sum");
        assert!(sum_line.rsplit_once(' ').unwrap().1.parse::<f64>().unwrap() > 0.0);
        assert!(!lean.contains("media_core_session_rx_packets_total"));

        let full = e.render_prometheus(PrometheusOptions { per_session: true });
        check_format(&full);
        let labels = format!(
            "lane=\"{}\",slot=\"{}\",dialog=\"7\"",
            a.lane(),
            a.id.slot()
        );
        assert!(full.contains(&format!(
            "media_core_session_rx_packets_total{{{labels}}} 0"
        )));
        // No packet yet: no MOS to export (it would read as a clean call).
        assert!(!full.contains(&format!("media_core_session_mos{{{labels}}}")));
        assert!(full.contains("# TYPE media_core_session_jb_target_ms gauge"));
        // Gauges that go down are not exported as counters.
        for g in ["egress_spare", "packet_slots_free"] {
            assert!(
                full.contains(&format!("# TYPE media_core_lane_{g} gauge")),
                "{g}"
            );
        }
        let (mut ing, _eg) = e.take_rtp_handles(a.lane()).unwrap();
        for k in 0..5u16 {
            let mut pkt = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];
            pkt[2..4].copy_from_slice(&k.to_be_bytes());
            pkt[4..8].copy_from_slice(&(160 * u32::from(k)).to_be_bytes());
            pkt.extend([0xFFu8; 160]);
            ing.push(a.id, &pkt).unwrap();
            e.step(2).unwrap();
        }
        let full = e.render_prometheus(PrometheusOptions { per_session: true });
        check_format(&full);
        assert!(full.contains(&format!("media_core_session_mos{{{labels}}}")));
        // A clean stream's loss is random by convention: burst ratio 1.
        assert!(full.contains(&format!(
            "media_core_session_loss_burst_ratio{{{labels}}} 1\n"
        )));
        e.stop().unwrap();
    }
}
