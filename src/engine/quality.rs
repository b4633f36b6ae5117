//! Quality reporting and adaptation on the control plane.

use super::{Error, MediaEngine, Result};
use crate::codec::{Codec, OpusTune};
use crate::quality::emodel::CodecKind;
use crate::quality::monitor::{
    evaluate, suggest, suggest_complexity, suggest_opus, QualityAdjustment, QualityEvent,
    QualitySnapshot, QualityThresholds, SessionFlags,
};
use crate::quality::rtp_stats::LOSS_WINDOW;
use crate::runtime::msg::{Bundle, Op, Tune};
use crate::runtime::stats::HistogramSnapshot;
use crate::types::{Ptime, SessionId};
use std::collections::HashMap;

/// One lane's load and health over a report's span.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LaneQuality {
    /// Lane index.
    pub lane: usize,
    /// Live sessions.
    pub sessions: usize,
    /// p99 tick processing time over the report's span (since the lane started from
    /// [`MediaEngine::quality_report`], since the previous report from
    /// [`QualityMonitor::report`]), ns.
    pub tick_p99_ns: u64,
    /// `tick_p99_ns` as a fraction of the 10 ms tick budget.
    pub load: f64,
    /// Ticks that overran their deadline in the report's span.
    pub deadline_overruns: u64,
    /// Packets or frames dropped by the lane or at its rings in the report's span (all
    /// causes).
    pub drops: u64,
}

/// The engine's quality at a glance: whole-life figures from
/// [`MediaEngine::quality_report`], the last interval's from [`QualityMonitor::report`].
#[derive(Debug, Clone, PartialEq)]
pub struct EngineQuality {
    /// Per lane.
    pub lanes: Vec<LaneQuality>,
    /// Live sessions.
    pub sessions: usize,
    /// Sessions by the ITU-T G.109 / G.107 Annex B user-satisfaction category of their R
    /// factor: `< 50` not recommended, `50–60` nearly all users dissatisfied, `60–70`
    /// many, `70–80` some, `80–90` satisfied, `≥ 90` very satisfied (MOS `< 2.58`,
    /// `2.58–3.10`, `3.10–3.60`, `3.60–4.03`, `4.03–4.34`, `≥ 4.34`). Each session's
    /// figures over the report's span: its whole life so far from
    /// [`MediaEngine::quality_report`], the interval since the previous report from
    /// [`QualityMonitor::report`]. Sessions that played no audio, or received no packet,
    /// in the span are left out (nothing to rate: a call whose media stopped plays
    /// concealment, which would rate as a clean call).
    pub mos_histogram: [usize; 6],
    /// Mean MOS over the sessions banded.
    pub mean_mos: f64,
}

/// The E-model impairment class (ITU-T G.113) of a codec.
pub(crate) fn codec_kind(c: Codec) -> CodecKind {
    CodecKind::of(c)
}

/// Packets or frames a lane dropped, all causes ([`LaneQuality::drops`]).
fn lane_drops(st: &crate::runtime::stats::LaneStats) -> u64 {
    st.unknown_session
        + st.malformed
        + st.ingress_full
        + st.ingress_too_large
        + st.ingress_rate_limited
        + st.ingress_unknown
        + st.internal_ring_full
        + st.stage_backlog_drops
}

impl LaneQuality {
    fn new(lane: usize, sessions: usize, tick_p99_ns: u64, overruns: u64, drops: u64) -> Self {
        LaneQuality {
            lane,
            sessions,
            tick_p99_ns,
            load: tick_p99_ns as f64 / TICK_NS,
            deadline_overruns: overruns,
            drops,
        }
    }
}

/// A session's [`EngineQuality::mos_histogram`] band, from its R factor (G.109 edges).
fn mos_band(r: f64) -> usize {
    [50.0, 60.0, 70.0, 80.0, 90.0]
        .iter()
        .filter(|&&edge| r >= edge)
        .count()
}

impl EngineQuality {
    /// The report from the lanes' figures and the sessions' snapshots (those that played
    /// no audio or received no packet are left out of the bands and the mean).
    fn new(lanes: Vec<LaneQuality>, sessions: impl Iterator<Item = QualitySnapshot>) -> Self {
        let mut hist = [0usize; 6];
        let (mut sum, mut n) = (0.0, 0usize);
        for q in sessions.filter(|q| q.frames_played > 0 && q.packets_expected > 0) {
            hist[mos_band(q.r_factor)] += 1;
            sum += q.mos;
            n += 1;
        }
        EngineQuality {
            sessions: lanes.iter().map(|l| l.sessions).sum(),
            lanes,
            mos_histogram: hist,
            mean_mos: if n == 0 { 0.0 } else { sum / n as f64 },
        }
    }
}

/// What the quality monitor needs of an Opus sender.
struct OpusSender {
    /// Its negotiated encoder settings.
    negotiated: crate::codec::OpusSettings,
    /// Peer-reported (packets expected, packets lost) of its stream.
    peer_loss: Option<(u64, u64)>,
    /// Updates applied to the session (each rebuilds its encoder).
    updates: u32,
}

impl MediaEngine {
    /// A session's receive quality now: loss, jitter, concealment, jitter buffer and an
    /// E-model MOS. Reads counters without stopping the lane.
    pub fn session_quality(&self, id: SessionId) -> Result<QualitySnapshot> {
        // The counters before the loss pattern: the pattern is then at least as new, and a
        // loss it classified since is not counted received (its snapshot clamps).
        let stats = self.session_stats(id)?;
        let (codec, ptime, rtt, erle, pattern) = {
            let g = self.lock();
            let rec = g.sessions.get(&id).ok_or(Error::UnknownSession(id))?;
            let rx = rec.params.rx_codecs();
            let codec = rx.first().map(|c| c.codec).unwrap_or(rec.params.tx.codec);
            // Read while the id is live, so the slot is still this session's.
            let shared = &g.lanes[id.lane()].ctl.shared;
            let erle = shared.echo_erle_db(id.slot);
            let pattern = shared.loss_pattern(id.slot, id.generation);
            (codec, rec.params.ptime, rec.round_trip_ms, erle, pattern)
        };
        let q = QualitySnapshot {
            echo_erle_db: erle.map(f64::from),
            ..QualitySnapshot::from_stats(
                &stats,
                codec_kind(codec),
                codec.info().clock_rate_hz,
                ptime.ms(),
                rtt,
            )
        };
        Ok(match pattern {
            Some(p) => q.with_loss_pattern(
                &p.snapshot(stats.rx_expected, u64::from(LOSS_WINDOW)),
                ptime.ms(),
            ),
            None => q,
        })
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
    fn opus_sender(&self, id: SessionId) -> Option<OpusSender> {
        let g = self.lock();
        let rec = g.sessions.get(&id)?;
        (rec.params.tx.codec == Codec::Opus).then_some(OpusSender {
            negotiated: rec.params.opus,
            peer_loss: rec.peer_loss,
            updates: rec.updates,
        })
    }

    /// Every live session's id (control plane; allocates).
    pub fn session_ids(&self) -> Vec<SessionId> {
        self.lock().sessions.keys().copied().collect()
    }

    /// Each lane's load and health since it started, without the per-session pass of
    /// [`MediaEngine::quality_report`].
    fn lane_qualities(&self) -> Vec<LaneQuality> {
        self.lane_loads()
            .iter()
            .enumerate()
            .map(|(i, &sessions)| {
                let st = self.lane_stats(i).unwrap_or_default();
                let p99 = self
                    .lane_tick_histogram(i)
                    .map(|h| h.quantile(0.99))
                    .unwrap_or(0);
                LaneQuality::new(i, sessions, p99, st.deadline_overruns, lane_drops(&st))
            })
            .collect()
    }

    /// Lane loads, drops and the MOS distribution over all sessions, each since it began
    /// (a lane since it started, a session since it was created): what a call has been
    /// like so far. For what calls are like now, [`QualityMonitor::report`] gives the same
    /// figures over the interval since its previous report.
    pub fn quality_report(&self) -> EngineQuality {
        let lanes = self.lane_qualities();
        let mos = self
            .session_ids()
            .into_iter()
            .filter_map(|id| self.session_quality(id).ok());
        EngineQuality::new(lanes, mos)
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
    /// Where the last [`QualityMonitor::report`] left each session and lane.
    report_sessions: HashMap<u64, QualitySnapshot>,
    report_lanes: HashMap<usize, LaneMark>,
    /// Per session, what the media timeout watches (see [`MediaWatch`]).
    media: HashMap<u64, MediaWatch>,
    /// Per session, a media timeout of its own, ms (0: none), in place of
    /// [`QualityThresholds::media_timeout_ms`] ([`QualityMonitor::set_media_timeout`]).
    media_timeouts: HashMap<u64, u32>,
}

/// A session's packet arrivals as [`QualityMonitor::poll`] last saw them.
#[derive(Debug, Clone, Copy)]
struct MediaWatch {
    /// `QualitySnapshot::packets_arrived` then.
    arrived: u64,
    /// The lane tick of the first poll that saw that count (the first poll of the session:
    /// when it was first seen).
    since_tick: u64,
    /// A [`QualityEvent::MediaTimeout`] was raised and no packet has come since.
    timed_out: bool,
}

impl MediaWatch {
    /// Packets `arrived` so far, seen at lane tick `tick`.
    fn new(arrived: u64, tick: u64) -> Self {
        MediaWatch {
            arrived,
            since_tick: tick,
            timed_out: false,
        }
    }

    /// Takes the session's arrivals at lane tick `tick`; pushes a timeout or resumption.
    fn update(
        &mut self,
        session: u64,
        arrived: u64,
        tick: u64,
        timeout_ms: u32,
        events: &mut Vec<QualityEvent>,
    ) {
        let silent_ms = tick.saturating_sub(self.since_tick) * u64::from(Ptime::TICK_MS);
        if arrived != self.arrived {
            // (A count that went back is a new stream's: packets came all the same.)
            if self.timed_out {
                events.push(QualityEvent::MediaResumed { session, silent_ms });
            }
            *self = MediaWatch::new(arrived, tick);
        } else if timeout_ms > 0 && !self.timed_out && silent_ms >= u64::from(timeout_ms) {
            self.timed_out = true;
            events.push(QualityEvent::MediaTimeout { session, silent_ms });
        }
    }
}

/// A lane's figures at the last [`QualityMonitor::report`].
#[derive(Debug, Default)]
struct LaneMark {
    ticks: Option<HistogramSnapshot>,
    overruns: u64,
    drops: u64,
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
        self.media.retain(|k, _| live.contains(k));
        self.media_timeouts.retain(|k, _| live.contains(k));
    }

    /// Gives `session` a media timeout of its own, in ms (`Some(0)`: none), or back the
    /// thresholds' ([`QualityThresholds::media_timeout_ms`]) with `None`. For legs whose
    /// far end may rightly send nothing for longer than the rest (a trunk playing one-way
    /// announcements, a conference leg muted by a phone that sends no comfort noise) or
    /// that must be caught sooner. Taken at the next poll, counted from the last packet
    /// as before; a timeout already raised stays raised until packets come (or
    /// [`QualityMonitor::restart_media_timeout`]). Forgotten when the session ends.
    pub fn set_media_timeout(&mut self, session: SessionId, timeout_ms: Option<u32>) {
        match timeout_ms {
            Some(ms) => {
                self.media_timeouts.insert(session.to_u64(), ms);
            }
            None => {
                self.media_timeouts.remove(&session.to_u64());
            }
        }
    }

    /// Starts `session`'s media timeout over, as if it had just been created: the next
    /// poll takes its clock from there, and a timeout already raised is forgotten (so it
    /// can be raised again). For the signalling layer when a leg comes off hold, where its
    /// stream was allowed to stop: the hold's silence must not count toward the timeout,
    /// and a stream that never resumes must still be reported.
    pub fn restart_media_timeout(&mut self, session: SessionId) {
        self.media.remove(&session.to_u64());
    }

    /// Evaluates every session and lane; returns the threshold crossings since the last poll.
    /// A session's MOS and loss are judged over the packets since its last judgement, once
    /// they number [`QualityThresholds::window_packets`] (10 s of 20 ms packets by default),
    /// so the events follow the call's recent quality rather than its average since it
    /// began. A session given no RTP packet for [`QualityThresholds::media_timeout_ms`]
    /// by its lane's clock, or for its own ([`QualityMonitor::set_media_timeout`]), (since
    /// the last poll that saw one, or since the first poll that saw the session) raises
    /// [`QualityEvent::MediaTimeout`], and
    /// [`QualityEvent::MediaResumed`] at the first poll that sees packets again.
    pub fn poll(&mut self, engine: &MediaEngine) -> Vec<QualityEvent> {
        let mut events = Vec::new();
        let ids = engine.session_ids();
        self.forget_ended(&ids);
        // Each lane's clock, once per poll (its ticks, real or virtual time alike, and the
        // ticks it skipped when it fell too far behind: time passed in them too).
        let ticks: Vec<u64> = (0..engine.config().lanes)
            .map(|l| {
                engine
                    .lane_stats(l)
                    .map_or(0, |s| s.ticks + s.ticks_skipped)
            })
            .collect();
        for id in ids {
            if let Ok(q) = engine.session_quality(id) {
                let session = id.to_u64();
                let f = self.flags.entry(session).or_default();
                evaluate(&self.thresholds, session, &q, f, &mut events);
                let tick = ticks.get(id.lane()).copied().unwrap_or(0);
                let arrived = q.packets_arrived;
                let timeout_ms = self
                    .media_timeouts
                    .get(&session)
                    .copied()
                    .unwrap_or(self.thresholds.media_timeout_ms);
                self.media
                    .entry(session)
                    .or_insert(MediaWatch::new(arrived, tick))
                    .update(session, arrived, tick, timeout_ms, &mut events);
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

    /// The engine's quality over the interval since the previous call (the first call:
    /// since each lane started and each session began): per lane the p99 tick time and
    /// load over the ticks in between, and the deadline overruns and drops in it; per
    /// session its loss, concealment and MOS over the packets in between
    /// ([`QualitySnapshot::since`]), banded as [`EngineQuality::mos_histogram`] says. A
    /// session that played nothing, or received no packet, in the interval is left out of
    /// the bands and the mean;
    /// one whose counters started over (a new stream) counts from its new start.
    ///
    /// What an operator's dashboard wants every few seconds: [`MediaEngine::quality_report`]
    /// averages over each call's life, where ten clean minutes hide a bad minute now. Its
    /// own marks, independent of [`QualityMonitor::poll`]'s and
    /// [`QualityMonitor::suggest_quality_adjustments`]' intervals.
    pub fn report(&mut self, engine: &MediaEngine) -> EngineQuality {
        let lanes = engine
            .lane_loads()
            .iter()
            .enumerate()
            .map(|(i, &sessions)| {
                let st = engine.lane_stats(i).unwrap_or_default();
                let ticks = engine.lane_tick_histogram(i);
                let drops = lane_drops(&st);
                let mark = self.report_lanes.entry(i).or_default();
                let p99 = match (&ticks, &mark.ticks) {
                    (Some(now), Some(then)) => now.since(then).quantile(0.99),
                    (Some(now), None) => now.quantile(0.99),
                    (None, _) => 0,
                };
                let q = LaneQuality::new(
                    i,
                    sessions,
                    p99,
                    st.deadline_overruns.saturating_sub(mark.overruns),
                    drops.saturating_sub(mark.drops),
                );
                *mark = LaneMark {
                    ticks,
                    overruns: st.deadline_overruns,
                    drops,
                };
                q
            })
            .collect();
        let ids = engine.session_ids();
        let live: std::collections::HashSet<u64> = ids.iter().map(|i| i.to_u64()).collect();
        self.report_sessions.retain(|k, _| live.contains(k));
        let mut interval = Vec::with_capacity(ids.len());
        for id in ids {
            let Ok(now) = engine.session_quality(id) else {
                continue;
            };
            let q = match self.report_sessions.insert(id.to_u64(), now) {
                Some(then) => now.since(&then).unwrap_or(now),
                None => now,
            };
            interval.push(q);
        }
        EngineQuality::new(lanes, interval.into_iter())
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
            let Some(OpusSender {
                negotiated: opus,
                peer_loss: peer,
                updates,
            }) = engine.opus_sender(id)
            else {
                continue;
            };
            if f.updates_seen != updates {
                // A re-INVITE built the encoder afresh with the negotiated settings: what
                // was adjusted is undone, and is suggested again if still called for.
                f.updates_seen = updates;
                f.opus_loss_percent = None;
                f.complexity_lowered = false;
            }
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

    /// Bands follow G.109's R edges (a clean G.711 call at R 92.9 is "very satisfied",
    /// one at 2.9% loss, R 83, "satisfied": the old MOS edges called both the top band),
    /// and a session that received no packet in the span is not banded (its concealment
    /// would rate as a clean call).
    #[test]
    fn sessions_are_banded_by_g109_r_and_only_when_packets_came() {
        let q = |r_factor: f64, expected: u64| QualitySnapshot {
            r_factor,
            mos: crate::quality::emodel::mos_from_r(r_factor),
            packets_expected: expected,
            frames_played: 100,
            ..Default::default()
        };
        let report = EngineQuality::new(
            Vec::new(),
            [
                q(92.9, 50),
                q(83.0, 50),
                q(75.0, 50),
                q(65.0, 50),
                q(55.0, 50),
                q(40.0, 50),
                q(92.9, 0),
            ]
            .into_iter(),
        );
        assert_eq!(report.mos_histogram, [1, 1, 1, 1, 1, 1]);
    }

    #[test]
    fn a_sessions_own_media_timeout_is_forgotten_when_it_ends() {
        let mut m = QualityMonitor::default();
        let (ended, live) = (
            SessionId::from_parts(0, 1, 1),
            SessionId::from_parts(0, 2, 1),
        );
        m.set_media_timeout(ended, Some(3_000));
        m.set_media_timeout(live, Some(0));
        m.forget_ended(&[live]);
        assert_eq!(m.media_timeouts.len(), 1);
        assert_eq!(m.media_timeouts.get(&live.to_u64()), Some(&0));
        m.set_media_timeout(live, None);
        assert!(m.media_timeouts.is_empty());
    }

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
