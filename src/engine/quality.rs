//! Quality reporting and adaptation on the control plane.

use super::{Error, MediaEngine, Result};
use crate::codec::{Codec, OpusTune};
use crate::quality::emodel::CodecKind;
use crate::quality::monitor::{
    evaluate, suggest, suggest_complexity, suggest_opus, QualityAdjustment, QualityEvent,
    QualitySnapshot, QualityThresholds, SessionFlags,
};
use crate::runtime::msg::{Bundle, Op, Tune};
use crate::runtime::stats::HistogramSnapshot;
use crate::types::{Ptime, SessionId};
use std::collections::HashMap;

/// One lane's load and health.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LaneQuality {
    /// Lane index.
    pub lane: usize,
    /// Live sessions.
    pub sessions: usize,
    /// p99 tick processing time since the lane started, ns.
    pub tick_p99_ns: u64,
    /// p99 tick time as a fraction of the 10 ms tick budget, since the lane started
    /// ([`QualityMonitor`] judges the recent ticks instead).
    pub load: f64,
    /// Ticks that overran their deadline.
    pub deadline_overruns: u64,
    /// Packets or frames dropped by the lane or at its rings (all causes).
    pub drops: u64,
}

/// The engine's quality at a glance.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineQuality {
    /// Per lane.
    pub lanes: Vec<LaneQuality>,
    /// Live sessions.
    pub sessions: usize,
    /// Sessions by MOS: `< 2.6`, `2.6–3.1`, `3.1–3.6`, `3.6–4.0`, `≥ 4.0` (ITU-T G.107
    /// user-satisfaction bands: nearly all / many / some dissatisfied, satisfied, very satisfied).
    /// Each session's MOS over its whole life so far ([`MediaEngine::session_quality`]); for
    /// alarms on how calls are doing now, [`QualityMonitor`] judges recent intervals.
    pub mos_histogram: [usize; 5],
    /// Mean MOS over sessions that have played audio.
    pub mean_mos: f64,
}

/// The E-model impairment class (ITU-T G.113) of a codec.
pub(crate) fn codec_kind(c: Codec) -> CodecKind {
    match c {
        Codec::Pcmu | Codec::Pcma => CodecKind::G711Plc,
        Codec::G722 => CodecKind::G722,
        Codec::Opus => CodecKind::Opus,
    }
}

impl MediaEngine {
    /// A session's receive quality now: loss, jitter, concealment, jitter buffer and an
    /// E-model MOS. Reads counters without stopping the lane.
    pub fn session_quality(&self, id: SessionId) -> Result<QualitySnapshot> {
        let (codec, ptime, rtt) = {
            let g = self.lock();
            let rec = g.sessions.get(&id).ok_or(Error::UnknownSession(id))?;
            let rx = rec.params.rx_codecs();
            let codec = rx.first().map(|c| c.codec).unwrap_or(rec.params.tx.codec);
            (codec, rec.params.ptime, rec.round_trip_ms)
        };
        let stats = self.session_stats(id)?;
        Ok(QualitySnapshot::from_stats(
            &stats,
            codec_kind(codec),
            codec.info().clock_rate_hz,
            ptime.ms(),
            rtt,
        ))
    }

    /// Feeds the round-trip time the transport measured (RTCP SR/RR, RFC 3550 §6.4.1) into
    /// the session's quality estimate.
    pub fn set_round_trip(&self, id: SessionId, round_trip_ms: f64) -> Result<()> {
        let mut g = self.lock();
        let rec = g.sessions.get_mut(&id).ok_or(Error::UnknownSession(id))?;
        rec.round_trip_ms = round_trip_ms.is_finite().then_some(round_trip_ms.max(0.0));
        Ok(())
    }

    /// Feeds what the peer's RTCP receiver reports say of the stream this session *sends*
    /// (RFC 3550 §6.4.1): `lost` = the cumulative number of packets lost, `expected` = any
    /// counter that grows by the packets expected, e.g. the extended highest sequence number
    /// received (only differences between reports are used). Opus adaptation then follows
    /// the loss our packets meet rather than the loss of the stream we receive.
    pub fn set_peer_loss(&self, id: SessionId, expected: u64, lost: u64) -> Result<()> {
        let mut g = self.lock();
        let rec = g.sessions.get_mut(&id).ok_or(Error::UnknownSession(id))?;
        rec.peer_loss = Some((expected, lost.min(expected)));
        Ok(())
    }

    /// For a session that sends Opus: its negotiated Opus settings and the peer-reported
    /// loss counters, if any.
    fn opus_sender(
        &self,
        id: SessionId,
    ) -> Option<(crate::codec::OpusSettings, Option<(u64, u64)>)> {
        let g = self.lock();
        let rec = g.sessions.get(&id)?;
        (rec.params.tx.codec == Codec::Opus).then_some((rec.params.opus, rec.peer_loss))
    }

    /// Every live session's id (control plane; allocates).
    pub fn session_ids(&self) -> Vec<SessionId> {
        self.lock().sessions.keys().copied().collect()
    }

    /// Each lane's load and health, without the per-session pass of
    /// [`MediaEngine::quality_report`].
    fn lane_qualities(&self) -> Vec<LaneQuality> {
        let loads = self.lane_loads();
        let mut lanes = Vec::with_capacity(loads.len());
        for (i, &sessions) in loads.iter().enumerate() {
            let st = self.lane_stats(i).unwrap_or_default();
            let p99 = self
                .lane_tick_histogram(i)
                .map(|h| h.quantile(0.99))
                .unwrap_or(0);
            lanes.push(LaneQuality {
                lane: i,
                sessions,
                tick_p99_ns: p99,
                load: p99 as f64 / 10_000_000.0,
                deadline_overruns: st.deadline_overruns,
                drops: st.unknown_session
                    + st.malformed
                    + st.ingress_full
                    + st.ingress_too_large
                    + st.ingress_rate_limited
                    + st.ingress_unknown
                    + st.internal_ring_full
                    + st.stage_backlog_drops,
            });
        }
        lanes
    }

    /// Lane loads, drops and the MOS distribution over all sessions.
    pub fn quality_report(&self) -> EngineQuality {
        let lanes = self.lane_qualities();
        let sessions = lanes.iter().map(|l| l.sessions).sum();
        let mut hist = [0usize; 5];
        let (mut sum, mut n) = (0.0, 0usize);
        for id in self.session_ids() {
            if let Ok(q) = self.session_quality(id) {
                if q.frames_played == 0 {
                    continue;
                }
                let b = match q.mos {
                    m if m < 2.6 => 0,
                    m if m < 3.1 => 1,
                    m if m < 3.6 => 2,
                    m if m < 4.0 => 3,
                    _ => 4,
                };
                hist[b] += 1;
                sum += q.mos;
                n += 1;
            }
        }
        EngineQuality {
            lanes,
            sessions,
            mos_histogram: hist,
            mean_mos: if n == 0 { 0.0 } else { sum / n as f64 },
        }
    }

    /// Applies an adjustment through the session's lane command ring (never blocks).
    /// Errors: [`Error::UnknownSession`]; [`Error::InvalidConfig`] for an Opus adjustment
    /// to a session that does not send Opus.
    pub fn adjust_quality(&self, adj: QualityAdjustment) -> Result<()> {
        let (session, tune) = match adj {
            QualityAdjustment::JitterBounds {
                session,
                min_delay_ms,
                max_delay_ms,
            } => (
                session,
                Tune {
                    jitter_ms: Some((min_delay_ms, max_delay_ms)),
                    opus: None,
                },
            ),
            QualityAdjustment::OpusEncoder {
                session,
                bitrate_bps,
                inband_fec,
                packet_loss_percent,
            } => (
                session,
                Tune {
                    jitter_ms: None,
                    opus: Some(OpusTune {
                        bitrate_bps: Some(bitrate_bps),
                        inband_fec: Some(inband_fec),
                        packet_loss_percent: Some(packet_loss_percent),
                        complexity: None,
                    }),
                },
            ),
            QualityAdjustment::OpusComplexity {
                session,
                complexity,
            } => (
                session,
                Tune {
                    jitter_ms: None,
                    opus: Some(OpusTune {
                        complexity: Some(complexity),
                        ..Default::default()
                    }),
                },
            ),
        };
        let id = SessionId::from_u64(session);
        let mut g = self.lock();
        let rec = g.sessions.get(&id).ok_or(Error::UnknownSession(id))?;
        if tune.opus.is_some() && rec.params.tx.codec != Codec::Opus {
            return Err(Error::InvalidConfig(
                "Opus adjustment for a session that does not send Opus",
            ));
        }
        let ls = &mut g.lanes[id.lane()];
        ls.next_seq += 1;
        let mut b = Bundle::new(ls.next_seq, Op::Tune, id);
        b.tune = Some(tune);
        Self::send(ls, b)
    }
}

/// Watches an engine's sessions and lanes: threshold events with hysteresis and
/// adaptation suggestions. Control plane; call [`QualityMonitor::poll`] periodically
/// (e.g. every second).
#[derive(Debug, Default)]
pub struct QualityMonitor {
    thresholds: QualityThresholds,
    flags: HashMap<u64, SessionFlags>,
    lane_hot: HashMap<usize, bool>,
    /// Per lane, the load windows of [`QualityMonitor::poll`] and of
    /// [`QualityMonitor::suggest_quality_adjustments`] (each judges its own, whatever the
    /// other's cadence).
    lane_events: HashMap<usize, LaneWindow>,
    lane_adjust: HashMap<usize, LaneWindow>,
}

/// Ticks a lane-load window holds before its p99 is judged: 5 s of 10 ms ticks, so the
/// p99 is a window's fifth-slowest tick, not one stall of the host.
const LANE_WINDOW_TICKS: u64 = 500;

/// A lane's load over its recent ticks: the p99 tick time over the ticks since the last
/// judgement, as a share of the 10 ms tick (the lane's histogram counts since the lane
/// started, where a day of calm would hide an overload for many minutes, and a busy hour
/// would hold shed complexity long after it).
#[derive(Debug, Default)]
struct LaneWindow {
    /// The lane's tick histogram where the current window began (`None`: the lane's start).
    from: Option<HistogramSnapshot>,
    /// The load of the last window judged (0 before any).
    load: f64,
}

impl LaneWindow {
    /// Takes the lane's histogram now; returns the load and whether it was judged anew
    /// (the window since the last judgement held [`LANE_WINDOW_TICKS`]).
    fn update(&mut self, now: HistogramSnapshot) -> (f64, bool) {
        let window = match &self.from {
            Some(from) => now.since(from),
            None => now.clone(),
        };
        if window.count() < LANE_WINDOW_TICKS {
            return (self.load, false);
        }
        self.load = window.quantile(0.99) as f64 / TICK_NS;
        self.from = Some(now);
        (self.load, true)
    }
}

/// The lanes' tick period, ns (their budget per tick).
const TICK_NS: f64 = Ptime::TICK_MS as f64 * 1e6;

/// Moves each lane's window on; returns `(lane, load, judged anew)` for every lane.
fn lane_windows(
    engine: &MediaEngine,
    windows: &mut HashMap<usize, LaneWindow>,
) -> Vec<(usize, f64, bool)> {
    (0..engine.config().lanes)
        .filter_map(|lane| {
            let now = engine.lane_tick_histogram(lane)?;
            let (load, judged) = windows.entry(lane).or_default().update(now);
            Some((lane, load, judged))
        })
        .collect()
}

impl QualityMonitor {
    /// A monitor with the given thresholds.
    pub fn new(thresholds: QualityThresholds) -> Self {
        QualityMonitor {
            thresholds,
            ..Default::default()
        }
    }

    /// Drops the hysteresis state of sessions not in `ids` (the live ones).
    fn forget_ended(&mut self, ids: &[SessionId]) {
        let live: std::collections::HashSet<u64> = ids.iter().map(|i| i.to_u64()).collect();
        self.flags.retain(|k, _| live.contains(k));
    }

    /// Evaluates every session and lane; returns the threshold crossings since the last poll.
    /// A session's MOS and loss are judged over the packets since its last judgement, once
    /// they number [`QualityThresholds::window_packets`] (10 s of 20 ms packets by default),
    /// so the events follow the call's recent quality rather than its average since it
    /// began.
    pub fn poll(&mut self, engine: &MediaEngine) -> Vec<QualityEvent> {
        let mut events = Vec::new();
        let ids = engine.session_ids();
        self.forget_ended(&ids);
        for id in ids {
            if let Ok(q) = engine.session_quality(id) {
                let f = self.flags.entry(id.to_u64()).or_default();
                evaluate(&self.thresholds, id.to_u64(), &q, f, &mut events);
            }
        }
        for (lane, load, judged) in lane_windows(engine, &mut self.lane_events) {
            if !judged {
                continue;
            }
            let hot = self.lane_hot.entry(lane).or_default();
            let now_hot = load > self.thresholds.lane_load_high;
            if now_hot && !*hot {
                events.push(QualityEvent::LaneNearDeadline { lane, load });
            }
            *hot = now_hot;
        }
        events
    }

    /// Concrete adjustments for sessions whose quality calls for one (with hysteresis, so
    /// repeated calls do not flap; call it every second or so). Apply them with
    /// [`MediaEngine::adjust_quality`]:
    /// - jitter buffer bounds widened while late discards keep coming, restored after;
    /// - for Opus senders, FEC / expected loss / bitrate from the loss on the path
    ///   ([`suggest_opus`]): the loss the peer reported for our stream
    ///   ([`MediaEngine::set_peer_loss`], from its RTCP receiver reports) when known,
    ///   else the loss of the stream we receive from it;
    /// - for Opus senders on a lane whose p99 tick time exceeds
    ///   [`QualityThresholds::lane_load_high`] of its budget, lower complexity until the
    ///   load falls ([`suggest_complexity`]).
    pub fn suggest_quality_adjustments(&mut self, engine: &MediaEngine) -> Vec<QualityAdjustment> {
        let mut out = Vec::new();
        let j = engine.config().jitter;
        let loads: HashMap<usize, f64> = lane_windows(engine, &mut self.lane_adjust)
            .into_iter()
            .map(|(lane, load, _)| (lane, load))
            .collect();
        let ids = engine.session_ids();
        // Callers may use this without `poll`.
        self.forget_ended(&ids);
        for id in ids {
            let Ok(q) = engine.session_quality(id) else {
                continue;
            };
            let f = self.flags.entry(id.to_u64()).or_default();
            suggest(id.to_u64(), &q, f, j.min_delay_ms, j.max_delay_ms, &mut out);
            let Some((opus, peer)) = engine.opus_sender(id) else {
                continue;
            };
            let (expected, lost) = peer.unwrap_or((q.packets_expected, q.packets_lost));
            if f.loss_from_peer != peer.is_some() {
                // The first receiver report: its counters count from another base than
                // the received stream's, so the interval starts here.
                f.loss_from_peer = peer.is_some();
                f.start_loss_interval(expected, lost);
            }
            suggest_opus(id.to_u64(), expected, lost, f, &opus, &mut out);
            let load = loads.get(&id.lane()).copied().unwrap_or(0.0);
            suggest_complexity(
                id.to_u64(),
                load,
                self.thresholds.lane_load_high,
                f,
                &opus,
                &mut out,
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::stats::TickHistogram;

    #[test]
    fn a_lane_window_judges_the_recent_ticks_not_the_lanes_life() {
        let h = TickHistogram::default();
        let mut w = LaneWindow::default();
        // A calm day: 100,000 ticks of 1 ms.
        for _ in 0..100_000 {
            h.record(1_000_000);
        }
        let (load, judged) = w.update(h.snapshot());
        assert!(judged && (0.09..0.12).contains(&load), "{load}");
        // Then 5 s at 9 ms a tick: the lane's whole-life p99 still reads 1 ms (500 of
        // 100,500 ticks), the window reads 9 ms at once.
        for _ in 0..500 {
            h.record(9_000_000);
        }
        assert!(h.snapshot().quantile(0.99) < 1_100_000);
        let (load, judged) = w.update(h.snapshot());
        assert!(judged && load > 0.85, "{load}");
        // Fewer than a window's ticks since: not judged, the last load stands.
        for _ in 0..250 {
            h.record(1_000_000);
        }
        assert_eq!(w.update(h.snapshot()), (load, false));
        // Calm seconds after the busy ones, with one stall of 9 ms among them: back down
        // (a stall is not a load), though the lane's life now holds 0.5% of 9 ms ticks.
        h.record(9_000_000);
        for _ in 0..249 {
            h.record(1_000_000);
        }
        let (load, judged) = w.update(h.snapshot());
        assert!(judged && load < 0.12, "{load}");
    }
}
