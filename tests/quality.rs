//! The quality figures an operator reads from the engine: the engine-wide report (lanes,
//! drops, sessions by MOS band), the round-trip time the transport feeds into a session's
//! E-model, Opus adaptation driven by the loss the peer reports for the stream we send,
//! and the monitor's lane-load event. On the virtual clock.

mod common;

use common::*;
use media_core::codec::OpusSettings;
use media_core::engine::{EngineQuality, QualityMonitor};
use media_core::quality::monitor::{QualityAdjustment, QualityEvent, QualityThresholds};
use media_core::{
    CodecSpec, DialogId, EgressHandle, Error, IngressHandle, MediaEngine, MediaSessionHandle,
    MediaSessionParams, Ptime, SessionId,
};

fn engine() -> MediaEngine {
    started_virtual_engine(8)
}

fn pcmu() -> MediaSessionParams {
    MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_20)
}

/// A call whose leg A sends Opus negotiated without FEC and B sends PCMU; returns the legs
/// and A's negotiated Opus settings.
fn opus_call(e: &MediaEngine) -> (MediaSessionHandle, MediaSessionHandle, OpusSettings) {
    let mut opus = MediaSessionParams::new(CodecSpec::OPUS, Ptime::MS_20);
    opus.opus.inband_fec = false;
    opus.opus.packet_loss_percent = 0;
    let negotiated = opus.opus;
    let (a, b) = e
        .create_call((DialogId(1), opus), (DialogId(2), pcmu()))
        .unwrap();
    (a, b, negotiated)
}

/// A monitor that never finds a lane loaded (lane load is not under test where it is used).
fn monitor_without_lane_load() -> QualityMonitor {
    QualityMonitor::new(QualityThresholds {
        lane_load_high: f64::INFINITY,
        ..Default::default()
    })
}

/// The Opus encoder settings `adj` suggests for `session`: bitrate, FEC, expected loss.
fn opus_settings_for(adj: &[QualityAdjustment], session: SessionId) -> Option<(i32, bool, i32)> {
    adj.iter().find_map(|x| match *x {
        QualityAdjustment::OpusEncoder {
            session: s,
            bitrate_bps,
            inband_fec,
            packet_loss_percent,
        } if s == session.to_u64() => Some((bitrate_bps, inband_fec, packet_loss_percent)),
        _ => None,
    })
}

/// Sends frames `k0..k0 + n` to each of `sessions` (PCMU, SSRC 100 + index), leaving out
/// those `lost(index, k)` names, stepping the engine a frame at a time.
fn send(
    e: &MediaEngine,
    ing: &mut IngressHandle,
    eg: &mut EgressHandle,
    sessions: &[SessionId],
    k0: usize,
    n: usize,
    lost: impl Fn(usize, usize) -> bool,
) {
    send_copies(e, ing, eg, sessions, k0, n, |i, k| usize::from(!lost(i, k)));
}

/// [`send`], each frame sent `copies(index, k)` times (0: lost, 2: duplicated).
fn send_copies(
    e: &MediaEngine,
    ing: &mut IngressHandle,
    eg: &mut EgressHandle,
    sessions: &[SessionId],
    k0: usize,
    n: usize,
    copies: impl Fn(usize, usize) -> usize,
) {
    let mut pkt = Vec::new();
    for k in k0..k0 + n {
        for (i, &id) in sessions.iter().enumerate() {
            rtp(
                0,
                k as u16,
                160 * k as u32,
                100 + i as u32,
                k == 0,
                &ulaw_frame(k),
                &mut pkt,
            );
            for _ in 0..copies(i, k) {
                ing.push(id, &pkt).unwrap();
            }
        }
        e.step(2).unwrap();
        drain(eg);
    }
}

/// Two PCMU calls (legs A-B and C-D, dialogs 1-4) on lane 0.
fn two_pcmu_calls(e: &MediaEngine) -> [SessionId; 4] {
    let (a, b) = e
        .create_call((DialogId(1), pcmu()), (DialogId(2), pcmu()))
        .unwrap();
    let (c, d) = e
        .create_call((DialogId(3), pcmu()), (DialogId(4), pcmu()))
        .unwrap();
    [a.id, b.id, c.id, d.id]
}

/// The report's bands, as `EngineQuality::mos_histogram` documents them (G.109 R edges).
fn band(r: f64) -> usize {
    [50.0, 60.0, 70.0, 80.0, 90.0]
        .iter()
        .filter(|&&edge| r >= edge)
        .count()
}

#[test]
fn the_quality_report_counts_every_session_and_bands_it_by_its_mos() {
    let e = engine();
    let [a, b, c, d] = two_pcmu_calls(&e);
    let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
    let ids = [a, b, c, d];
    // Session c receives with one packet in five lost, the others clean.
    send(&e, &mut ing, &mut eg, &ids, 0, 250, |i, k| {
        i == 2 && k % 5 == 2
    });
    // A malformed packet, refused or dropped on the lane: either way a counted drop.
    let _ = ing.push(a, &[0x80, 0]);
    e.step(2).unwrap();

    let report = e.quality_report();
    assert_eq!(report.sessions, 4);
    assert_eq!(report.lanes.len(), 1);
    let lane = &report.lanes[0];
    assert_eq!((lane.lane, lane.sessions), (0, 4));
    assert!(lane.drops >= 1, "the malformed packet is a drop: {lane:?}");
    assert!(lane.tick_p99_ns > 0 && lane.load > 0.0, "{lane:?}");

    let r: Vec<f64> = ids
        .iter()
        .map(|&id| e.session_quality(id).unwrap().r_factor)
        .collect();
    let mos: Vec<f64> = ids
        .iter()
        .map(|&id| e.session_quality(id).unwrap().mos)
        .collect();
    let lossy = e.session_quality(c).unwrap();
    assert!(
        (18.0..=22.0).contains(&lossy.loss_percent),
        "{}",
        lossy.loss_percent
    );
    // 20% loss costs G.711 with concealment far more than a band (G.107: Bpl 25.1).
    assert!(band(r[2]) + 2 <= band(r[0]), "{r:?}");
    let mut expected = [0usize; 6];
    for &x in &r {
        expected[band(x)] += 1;
    }
    assert_eq!(report.mos_histogram, expected, "{mos:?}");
    let mean = mos.iter().sum::<f64>() / 4.0;
    assert!((report.mean_mos - mean).abs() < 1e-9, "{report:?}");

    // An ended session leaves the report.
    e.destroy_media_session(d).unwrap();
    e.step(2).unwrap();
    let report = e.quality_report();
    assert_eq!(report.sessions, 3);
    assert_eq!(report.mos_histogram.iter().sum::<usize>(), 3);
}

#[test]
fn the_round_trip_time_enters_the_mos_and_bad_values_are_not_kept() {
    let e = engine();
    let (a, b) = e
        .create_call((DialogId(1), pcmu()), (DialogId(2), pcmu()))
        .unwrap();
    let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
    send(&e, &mut ing, &mut eg, &[a.id, b.id], 0, 100, |_, _| false);

    // No report yet: a 20 ms network assumption.
    let q0 = e.session_quality(a.id).unwrap();
    assert_eq!(q0.round_trip_ms, None);
    // A 600 ms round trip: half of it one way instead of the 20 ms assumed. Past the
    // G.107 knee at 100 ms one way the delay impairment lowers the MOS.
    e.set_round_trip(a.id, 600.0).unwrap();
    let q1 = e.session_quality(a.id).unwrap();
    assert_eq!(q1.round_trip_ms, Some(600.0));
    assert!(
        (q1.one_way_delay_ms - q0.one_way_delay_ms - 280.0).abs() < 1e-9,
        "{} -> {}",
        q0.one_way_delay_ms,
        q1.one_way_delay_ms
    );
    assert!(q1.mos < q0.mos - 0.3, "{} -> {}", q0.mos, q1.mos);
    // The other leg keeps its own estimate.
    assert_eq!(e.session_quality(b.id).unwrap().round_trip_ms, None);
    // A negative time is clamped to 0; a NaN forgets the report.
    e.set_round_trip(a.id, -5.0).unwrap();
    assert_eq!(e.session_quality(a.id).unwrap().round_trip_ms, Some(0.0));
    e.set_round_trip(a.id, f64::NAN).unwrap();
    let q2 = e.session_quality(a.id).unwrap();
    assert_eq!(q2.round_trip_ms, None);
    assert_eq!(q2.mos, q0.mos);
    // Unknown sessions are typed errors.
    e.destroy_media_session(b.id).unwrap();
    assert!(matches!(
        e.set_round_trip(b.id, 50.0),
        Err(Error::UnknownSession(id)) if id == b.id
    ));
    assert!(matches!(
        e.set_peer_loss(b.id, 100, 1),
        Err(Error::UnknownSession(_))
    ));
}

/// A re-INVITE builds the encoder afresh with the negotiated settings, so what loss
/// adaptation had set is gone: at the same loss the monitor suggests it again. In review,
/// its flags survived the update and nothing was suggested while the loss went on.
#[test]
fn opus_adaptation_is_suggested_again_after_an_update_rebuilt_the_encoder() {
    let e = engine();
    let (a, _b, _) = opus_call(&e);
    let mut monitor = monitor_without_lane_load();
    let opus_for_a = |adj: &[QualityAdjustment]| opus_settings_for(adj, a.id);
    e.set_peer_loss(a.id, 1_000, 0).unwrap();
    assert_eq!(opus_for_a(&monitor.suggest_quality_adjustments(&e)), None);
    e.set_peer_loss(a.id, 1_100, 10).unwrap();
    let adj = monitor.suggest_quality_adjustments(&e);
    assert_eq!(opus_for_a(&adj), Some((24_000, true, 10)));
    for x in adj {
        e.adjust_quality(x).unwrap();
    }
    // The same loss goes on: nothing new while the encoder keeps the adjustment.
    e.set_peer_loss(a.id, 1_200, 20).unwrap();
    assert_eq!(opus_for_a(&monitor.suggest_quality_adjustments(&e)), None);
    // A re-INVITE (another ptime) rebuilds the encoder; the loss goes on.
    let mut p = MediaSessionParams::new(CodecSpec::OPUS, Ptime::MS_40);
    p.opus.inband_fec = false;
    p.opus.packet_loss_percent = 0;
    // The bridge's other leg sends 20 ms: move it too, as a re-INVITE of the call would.
    e.unbridge(a.id).unwrap();
    e.update_media_session(a.id, p).unwrap();
    e.set_peer_loss(a.id, 1_300, 30).unwrap();
    assert_eq!(
        opus_for_a(&monitor.suggest_quality_adjustments(&e)),
        Some((24_000, true, 10))
    );
}

#[test]
fn opus_adaptation_follows_the_loss_the_peer_reports_for_what_we_send() {
    let e = engine();
    let (a, b, negotiated) = opus_call(&e);
    let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
    // B receives PCMU (A's encoder has audio to send); nothing arrives for A, so the
    // stream A receives shows no loss at all.
    send(&e, &mut ing, &mut eg, &[b.id], 0, 100, |_, _| false);
    let mut monitor = monitor_without_lane_load();
    let opus_for_a = |adj: &[QualityAdjustment]| opus_settings_for(adj, a.id);
    assert_eq!(opus_for_a(&monitor.suggest_quality_adjustments(&e)), None);
    // The peer's receiver reports: cumulative counters, judged by their differences.
    e.set_peer_loss(a.id, 1_000, 0).unwrap();
    assert_eq!(opus_for_a(&monitor.suggest_quality_adjustments(&e)), None);
    e.set_peer_loss(a.id, 1_100, 10).unwrap();
    assert_eq!(
        opus_for_a(&monitor.suggest_quality_adjustments(&e)),
        Some((24_000, true, 10)),
        "10% lost on the way to the peer: in-band FEC on"
    );
    // Fewer than 50 more packets: not enough to judge, nothing changes, and the interval
    // is judged with the next one.
    e.set_peer_loss(a.id, 1_140, 10).unwrap();
    assert_eq!(opus_for_a(&monitor.suggest_quality_adjustments(&e)), None);
    // A clean interval: back to what was negotiated.
    e.set_peer_loss(a.id, 1_300, 10).unwrap();
    assert_eq!(
        opus_for_a(&monitor.suggest_quality_adjustments(&e)),
        Some((negotiated.bitrate_bps, false, 0))
    );
    // A report claiming more lost than expected counts as everything lost, no more.
    e.set_peer_loss(a.id, 1_400, 10_000).unwrap();
    assert_eq!(
        opus_for_a(&monitor.suggest_quality_adjustments(&e)),
        Some((20_000.min(negotiated.bitrate_bps), true, 30))
    );
    // Peer reports for a leg that sends PCMU change nothing there.
    e.set_peer_loss(b.id, 1_000, 500).unwrap();
    assert!(!monitor.suggest_quality_adjustments(&e).iter().any(
        |x| matches!(x, QualityAdjustment::OpusEncoder { session, .. } if *session == b.id.to_u64())
    ));
}

#[test]
fn a_lane_over_its_load_threshold_raises_one_event_not_one_per_poll() {
    let e = engine();
    let (a, b) = e
        .create_call((DialogId(1), pcmu()), (DialogId(2), pcmu()))
        .unwrap();
    let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
    // A window is 500 ticks (5 s): 260 frames are 520.
    send(&e, &mut ing, &mut eg, &[a.id, b.id], 0, 260, |_, _| false);
    let lane_events = |events: &[QualityEvent]| {
        events
            .iter()
            .filter(|ev| matches!(ev, QualityEvent::LaneNearDeadline { .. }))
            .count()
    };
    // Any tick at all is over a threshold of 0.
    let mut hot = QualityMonitor::new(QualityThresholds {
        lane_load_high: 0.0,
        ..Default::default()
    });
    let events = hot.poll(&e);
    assert_eq!(lane_events(&events), 1, "{events:?}");
    assert!(events
        .iter()
        .any(|ev| matches!(ev, QualityEvent::LaneNearDeadline { lane: 0, load } if *load > 0.0)));
    // Under a window later: not judged yet.
    send(&e, &mut ing, &mut eg, &[a.id, b.id], 260, 100, |_, _| false);
    assert_eq!(lane_events(&hot.poll(&e)), 0);
    send(&e, &mut ing, &mut eg, &[a.id, b.id], 360, 200, |_, _| false);
    assert_eq!(lane_events(&hot.poll(&e)), 0, "still hot: no new event");
    // The default threshold (a share of the 10 ms tick) is far above two calls' ticks.
    let mut calm = QualityMonitor::default();
    assert_eq!(lane_events(&calm.poll(&e)), 0);
}

#[test]
fn the_first_peer_report_starts_the_loss_interval_over() {
    let e = engine();
    let (a, b, _) = opus_call(&e);
    let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
    // Three clean seconds of Opus into A: the monitor judges A's loss from them (150
    // packets expected, none lost).
    let mut enc =
        opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip).unwrap();
    let mut pkt = Vec::new();
    for k in 0..150usize {
        let payload = opus_tone_packet(&mut enc, k, 6000.0);
        rtp(111, k as u16, 960 * k as u32, 9, k == 0, &payload, &mut pkt);
        ing.push(a.id, &pkt).unwrap();
        rtp(
            0,
            k as u16,
            160 * k as u32,
            10,
            k == 0,
            &ulaw_frame(k),
            &mut pkt,
        );
        ing.push(b.id, &pkt).unwrap();
        e.step(2).unwrap();
        drain(&mut eg);
    }
    let mut monitor = monitor_without_lane_load();
    let opus_for_a = |adj: &[QualityAdjustment]| opus_settings_for(adj, a.id);
    assert_eq!(opus_for_a(&monitor.suggest_quality_adjustments(&e)), None);
    assert!(e.session_quality(a.id).unwrap().packets_expected >= 140);
    // The peer's counters (its extended highest sequence number, from the random base we
    // started at) are below the received stream's count. Judged against that count, the
    // next interval would read 10 lost of 50 (20%: bitrate halved) instead of 10 of 100.
    e.set_peer_loss(a.id, 100, 0).unwrap();
    assert_eq!(opus_for_a(&monitor.suggest_quality_adjustments(&e)), None);
    e.set_peer_loss(a.id, 200, 10).unwrap();
    assert_eq!(
        opus_for_a(&monitor.suggest_quality_adjustments(&e)),
        Some((24_000, true, 10))
    );
}

#[test]
fn loss_and_mos_events_follow_the_call_now_not_its_average() {
    let e = engine();
    let (a, b) = e
        .create_call((DialogId(1), pcmu()), (DialogId(2), pcmu()))
        .unwrap();
    let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
    let mut monitor = monitor_without_lane_load();
    let mut events = Vec::new();
    let ids = [a.id, b.id];
    // A minute clean, then 10 s with every fifth packet to A lost, then 20 s clean; the
    // monitor polled every second (it judges 10 s windows).
    let mut k = 0;
    for (seconds, lossy) in [(60, false), (10, true), (20, false)] {
        for _ in 0..seconds {
            send(&e, &mut ing, &mut eg, &ids, k, 50, |i, k| {
                lossy && i == 0 && k % 5 == 0
            });
            k += 50;
            events.extend(
                monitor
                    .poll(&e)
                    .into_iter()
                    .filter(|ev| !matches!(ev, QualityEvent::LaneNearDeadline { .. })),
            );
        }
        if lossy {
            // Over the whole call A lost 2.9%, under the 3% alarm; over the last 10 s, 20%.
            let whole = e.session_quality(a.id).unwrap();
            assert!(whole.loss_percent < 3.0 && whole.mos > 3.6, "{whole:?}");
            let a_id = a.id.to_u64();
            assert!(
                events.iter().any(
                    |ev| matches!(ev, QualityEvent::LossHigh { session, loss_percent }
                    if *session == a_id && *loss_percent > 15.0)
                ),
                "{events:?}"
            );
            assert!(
                events.iter().any(
                    |ev| matches!(ev, QualityEvent::MosLow { session, .. } if *session == a_id)
                ),
                "{events:?}"
            );
        }
    }
    // Both cleared once the loss stopped; nothing was raised for B.
    let kinds: Vec<_> = events
        .iter()
        .map(|ev| match ev {
            QualityEvent::MosLow { session, .. } => ("mos low", *session),
            QualityEvent::MosRecovered { session, .. } => ("mos recovered", *session),
            QualityEvent::LossHigh { session, .. } => ("loss high", *session),
            QualityEvent::LossRecovered { session, .. } => ("loss recovered", *session),
            _ => ("other", 0),
        })
        .collect();
    let a_id = a.id.to_u64();
    assert_eq!(
        kinds,
        [
            ("mos low", a_id),
            ("loss high", a_id),
            ("mos recovered", a_id),
            ("loss recovered", a_id)
        ],
        "{events:?}"
    );
}

/// The same loss rate impairs more in bursts than spread out, and the operator sees why:
/// the E-model's burst ratio from the stream's loss runs, the RFC 3611 burst and gap
/// figures of the XR block. Duplicates do not hide losses.
#[test]
fn bursty_loss_rates_lower_than_spread_loss_and_duplicates_do_not_hide_loss() {
    let e = engine();
    let [a, b, c, d] = two_pcmu_calls(&e);
    let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
    // A loses one packet in 25; B four in a row in every 100 (4% both); C one in 33 and
    // gets another one in 33 twice; D is clean. A minute of 20 ms packets.
    send_copies(
        &e,
        &mut ing,
        &mut eg,
        &[a, b, c, d],
        0,
        3000,
        |i, k| match i {
            0 => usize::from(k % 25 != 3),
            1 => usize::from(!(40..44).contains(&(k % 100))),
            2 => usize::from(k % 33 != 5) + usize::from(k % 33 == 20),
            _ => 1,
        },
    );
    let q = |id| e.session_quality(id).unwrap();
    let (spread, bursty, dup, clean) = (q(a), q(b), q(c), q(d));
    for s in [&spread, &bursty] {
        assert!((3.9..=4.1).contains(&s.loss_percent), "{s:?}");
    }
    // Burst ratio (lost/runs)·(1 − loss): 0.96 spread, 3.84 in runs of four (over what
    // left the 64-packet window: 2936 packets).
    assert!((spread.burst_ratio - 0.96).abs() < 0.01, "{spread:?}");
    assert!((bursty.burst_ratio - 3.84).abs() < 0.02, "{bursty:?}");
    assert_eq!(clean.burst_ratio, 1.0);
    // G.107 Ie,eff = 95·Ppl/(Ppl/BurstR + Bpl), Bpl 25.1 for G.711 with concealment:
    // 12.98 spread, 14.54 in bursts (1.56 R lower; the gap widens with the loss rate).
    assert!(
        (spread.r_factor - bursty.r_factor - 1.56).abs() < 0.1,
        "bursts {} vs spread {}",
        bursty.r_factor,
        spread.r_factor
    );
    // RFC 3611: A's losses are isolated (24 received between, Gmin 16), all gap; B's
    // are bursts of 4 × 20 ms, fully lost.
    let xa = spread.voip_metrics(200);
    let xb = bursty.voip_metrics(200);
    assert_eq!((xa.burst_density, xa.burst_duration_ms), (0, 0), "{xa:?}");
    assert_eq!(xa.gap_density, 10, "1/25 of 256: {xa:?}");
    assert_eq!(
        (xb.burst_density, xb.burst_duration_ms),
        (255, 80),
        "{xb:?}"
    );
    assert_eq!((xb.gap_density, xb.gmin), (0, 16), "{xb:?}");
    assert_eq!(spread.loss_pattern.burst_gap.lost, 118, "{spread:?}");
    assert_eq!(bursty.loss_pattern.loss_runs, 29, "{bursty:?}");
    // C: 91 of 3000 lost, 91 others twice: RFC 3550's count would read 0 lost.
    assert_eq!((dup.packets_lost, dup.duplicates), (91, 91), "{dup:?}");
    assert!((2.9..=3.1).contains(&dup.loss_percent), "{dup:?}");
    assert!(dup.mos < clean.mos - 0.3, "{dup:?} {clean:?}");
    // The transport reads the same figures through its ingress handle, without the
    // engine's lock: the counters, and the loss pattern that gives the XR block's.
    assert_eq!(ing.session_stats(b), Some(e.session_stats(b).unwrap()));
    let st = e.session_stats(b).unwrap();
    let p = ing.loss_pattern(b).unwrap().snapshot(st.rx_expected, 64);
    assert_eq!(p.burst_gap.bursts, bursty.loss_pattern.burst_gap.bursts);
    assert_eq!(p.loss_runs, 29);
    let other_lane = media_core::SessionId::from_parts(1, b.slot(), b.generation());
    assert_eq!(ing.session_stats(other_lane), None);
    e.destroy_media_session(d).unwrap();
    e.step(2).unwrap();
    assert_eq!((ing.session_stats(d), ing.loss_pattern(d)), (None, None));
    // The RTCP report block follows RFC 3550 A.3, where each copy counts as received.
    use media_core::integration::rtcp::{NtpTime, ReceiveCounts, ReceptionState};
    let stats = e.session_stats(c).unwrap();
    let counts = ReceiveCounts::from_session_stats(&stats, 2999);
    let block = ReceptionState::default().report_block(102, &counts, NtpTime(0));
    assert_eq!(block.cumulative_lost, 0, "{counts:?}");
}

/// A PCMU call (legs A and B, on the lane's RTP handles) after a minute of clean audio
/// both ways, and a monitor that has made its first report.
struct CleanCall {
    a: SessionId,
    b: SessionId,
    ing: IngressHandle,
    eg: EgressHandle,
    monitor: QualityMonitor,
    /// The monitor's first report: the calls' lives, both legs in the top band.
    first: EngineQuality,
}

fn clean_call(e: &MediaEngine) -> CleanCall {
    let (a, b) = e
        .create_call((DialogId(1), pcmu()), (DialogId(2), pcmu()))
        .unwrap();
    let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
    let mut monitor = monitor_without_lane_load();
    // SSRC 100 (A) and 101 (B).
    send(e, &mut ing, &mut eg, &[a.id, b.id], 0, 3000, |_, _| false);
    let first = monitor.report(e);
    assert_eq!(first.mos_histogram, [0, 0, 0, 0, 0, 2], "{first:?}");
    CleanCall {
        a: a.id,
        b: b.id,
        ing,
        eg,
        monitor,
        first,
    }
}

#[test]
fn the_monitors_report_gives_each_interval_its_own_figures() {
    let e = engine();
    // A minute clean: the first report covers the calls' lives, as the engine's does.
    let CleanCall {
        a,
        b,
        mut ing,
        mut eg,
        mut monitor,
        first,
    } = clean_call(&e);
    let ids = [a, b];
    assert_eq!(first, e.quality_report());
    let lane = first.lanes[0];
    assert!(lane.tick_p99_ns > 0 && lane.drops == 0, "{lane:?}");
    let (a_first, b_first) = (e.session_quality(a).unwrap(), e.session_quality(b).unwrap());

    // 10 s with every fifth packet to A lost, and one malformed packet on the lane.
    send(&e, &mut ing, &mut eg, &ids, 3000, 500, |i, k| {
        i == 0 && k % 5 == 0
    });
    let _ = ing.push(a, &[0x80, 0]);
    e.step(2).unwrap();
    let a_now = e.session_quality(a).unwrap();
    let b_now = e.session_quality(b).unwrap();
    let second = monitor.report(&e);
    // Over its life A lost 2.9% and rates "satisfied" (G.109: R 80-90); over these 10 s,
    // 20%.
    let whole = e.quality_report();
    assert_eq!(whole.mos_histogram, [0, 0, 0, 0, 1, 1], "{whole:?}");
    assert!(
        band(a_now.r_factor) == 4 && a_now.loss_percent < 3.0,
        "{a_now:?}"
    );
    assert!(
        second.mos_histogram[..2].iter().sum::<usize>() == 1 && second.mos_histogram[5] == 1,
        "{second:?}"
    );
    // The interval's MOS is what `since` makes of the snapshots at the two reports.
    let a_interval = a_now.since(&a_first).unwrap();
    let b_interval = b_now.since(&b_first).unwrap();
    assert!(
        band(a_interval.r_factor) <= 1 && (18.0..=22.0).contains(&a_interval.loss_percent),
        "{a_interval:?}"
    );
    let mean = (a_interval.mos + b_interval.mos) / 2.0;
    assert!((second.mean_mos - mean).abs() < 1e-9, "{second:?}");
    // The drop is this interval's; the lane's life holds it too.
    assert_eq!(second.lanes[0].drops, 1, "{second:?}");
    assert!(whole.lanes[0].drops >= 1);

    // 5 s clean: A is back in the top band, the lane dropped nothing in between, while
    // the whole-life report still holds the drop.
    send(&e, &mut ing, &mut eg, &ids, 3500, 250, |_, _| false);
    let third = monitor.report(&e);
    assert_eq!(third.mos_histogram, [0, 0, 0, 0, 0, 2], "{third:?}");
    assert_eq!(
        (third.lanes[0].drops, third.lanes[0].deadline_overruns),
        (0, 0)
    );
    assert!(e.quality_report().lanes[0].drops >= 1);

    // No traffic since: nothing played, so no session is banded; an ended call leaves.
    let idle = monitor.report(&e);
    assert_eq!((idle.sessions, idle.mos_histogram), (2, [0; 6]), "{idle:?}");
    assert_eq!(idle.mean_mos, 0.0);
    // A call created since counts from its start.
    e.destroy_media_session(b).unwrap();
    let (c, d) = e
        .create_call((DialogId(3), pcmu()), (DialogId(4), pcmu()))
        .unwrap();
    send(&e, &mut ing, &mut eg, &[c.id, d.id], 0, 50, |_, _| false);
    let after = monitor.report(&e);
    assert_eq!(
        (after.sessions, after.mos_histogram),
        (3, [0, 0, 0, 0, 0, 2]),
        "{after:?}"
    );
}

/// A leg whose sender restarts its stream (a new SSRC, whose statistics start over) keeps
/// counting on top of the old stream: loss and MOS over the call and over the monitor's
/// interval are those of the packets sent, not a mix of two streams' counters; and the
/// restart's timestamp jump is not read as network delay.
#[test]
fn a_restarted_stream_adds_to_the_sessions_counts() {
    let e = engine();
    // A minute clean on SSRC 100 (A) and 101 (B).
    let CleanCall {
        a,
        b,
        mut ing,
        mut eg,
        mut monitor,
        ..
    } = clean_call(&e);
    let before = e.session_quality(a).unwrap();
    // A's sender restarts: SSRC 900, sequence numbers from 1000, every fifth packet lost.
    let mut pkt = Vec::new();
    for k in 0..500usize {
        if k % 5 != 2 {
            let frame = ulaw_frame(k);
            rtp(
                0,
                (1000 + k) as u16,
                160 * k as u32,
                900,
                k == 0,
                &frame,
                &mut pkt,
            );
            ing.push(a, &pkt).unwrap();
        }
        let frame = ulaw_frame(k);
        let (seq, ts) = ((3000 + k) as u16, 160 * (3000 + k) as u32);
        rtp(0, seq, ts, 101, false, &frame, &mut pkt);
        ing.push(b, &pkt).unwrap();
        e.step(2).unwrap();
        drain(&mut eg);
    }
    let now = e.session_quality(a).unwrap();
    assert_eq!(now.packets_received, before.packets_received + 400);
    assert_eq!(now.packets_expected, before.packets_expected + 500);
    assert_eq!(now.packets_lost, 100, "{now:?}");
    let interval = now.since(&before).unwrap();
    assert!((interval.loss_percent - 20.0).abs() < 1e-9, "{interval:?}");
    // The monitor's interval report bands A by the new stream's 20% loss.
    let second = monitor.report(&e);
    assert!(
        second.mos_histogram[..2].iter().sum::<usize>() == 1 && second.mos_histogram[5] == 1,
        "{second:?}"
    );
    // Then the sender jumps its sequence numbers (RFC 3550 A.1 restarts the statistics
    // once a second packet confirms the jump): 100 more packets, none lost.
    for k in 500..600usize {
        let frame = ulaw_frame(k);
        rtp(
            0,
            (30_000 + k) as u16,
            160 * k as u32,
            900,
            false,
            &frame,
            &mut pkt,
        );
        ing.push(a, &pkt).unwrap();
        e.step(2).unwrap();
        drain(&mut eg);
    }
    let after = e.session_quality(a).unwrap();
    assert_eq!(
        e.session_stats(a).unwrap().rx_resyncs,
        2,
        "the SSRC change and the jump"
    );
    // The packet that announced the jump is not in the restarted range (A.1's probation).
    assert!(
        (99..=100).contains(&(after.packets_expected - now.packets_expected)),
        "{after:?}"
    );
    assert_eq!(after.packets_lost, 100, "{after:?}");
    // Neither restart is read as delay: the jitter buffer keeps its 20 ms target (it
    // went to its 500 ms maximum when the delay estimator measured across the restart).
    assert_eq!(
        (before.jb_target_ms, now.jb_target_ms, after.jb_target_ms),
        (20, 20, 20)
    );
}

/// The RFC 3550 A.1 restart of a stream whose jump is confirmed by an RFC 4733 event
/// packet (which shares the audio's sequence numbers) rather than by audio: the counts
/// before the jump still join the session's, as they do when audio confirms it.
#[test]
fn a_restart_confirmed_by_an_event_packet_keeps_the_earlier_counts() {
    let e = engine();
    let mut pa = pcmu();
    pa.telephone_event_pt = media_core::PayloadType::new(101);
    let (a, b) = e
        .create_call((DialogId(1), pa), (DialogId(2), pcmu()))
        .unwrap();
    let (a, b) = (a.id, b.id);
    let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
    // 10 s clean both ways, then every tenth packet to A lost for 10 s.
    send(&e, &mut ing, &mut eg, &[a, b], 0, 500, |_, _| false);
    send(&e, &mut ing, &mut eg, &[a, b], 500, 500, |i, k| {
        i == 0 && k % 10 == 3
    });
    let before = e.session_quality(a).unwrap();
    assert_eq!(
        (before.packets_expected, before.packets_lost),
        (1000, 50),
        "{before:?}"
    );
    // A's sender restarts its sequence numbers (+20,000) and its timestamps (+2^30): the
    // first packet after the jump is audio, the one that confirms it a digit's first
    // event packet, then audio again.
    let mut pkt = Vec::new();
    for k in 1000..1100usize {
        let seq = (20_000 + k) as u16;
        let ts = (1u32 << 30).wrapping_add(160 * k as u32);
        if k == 1001 {
            // Event 5, not the end, volume 10, 160 samples so far.
            rtp(101, seq, ts, 100, true, &[5, 10, 0, 160], &mut pkt);
        } else {
            rtp(0, seq, ts, 100, false, &ulaw_frame(k), &mut pkt);
        }
        ing.push(a, &pkt).unwrap();
        rtp(
            0,
            k as u16,
            160 * k as u32,
            101,
            false,
            &ulaw_frame(k),
            &mut pkt,
        );
        ing.push(b, &pkt).unwrap();
        e.step(2).unwrap();
        drain(&mut eg);
    }
    let after = e.session_quality(a).unwrap();
    let stats = e.session_stats(a).unwrap();
    assert_eq!(stats.rx_resyncs, 1, "the jump");
    assert_eq!(stats.rx_dtmf_packets, 1);
    // The restarted range begins with the confirming packet (A.1's probation leaves the
    // one that announced the jump out): the earlier 1,000 expected and 50 lost stay.
    assert!((1099..=1100).contains(&after.packets_expected), "{after:?}");
    assert_eq!(after.packets_lost, 50, "{after:?}");
    // Packets pushed every 20 ms of the lane's clock, however fast the test runs: no
    // interarrival jitter (the wall clock read ~20 ms here); nor does the restart add any
    // (measured across it, the timestamp jump read as seconds of jitter).
    assert!(
        before.jitter_ms < 0.5 && after.jitter_ms < 0.5,
        "{before:?} {after:?}"
    );
}

/// RFC 4733 event and RFC 3389 SID packets share the audio's sequence numbers, so a copy
/// of one is a duplicate and a late one is reordered, as for audio: counted in the
/// session's `rx_duplicates` and `rx_reordered` (they were left out), with no loss read.
#[test]
fn duplicate_and_reordered_event_and_sid_packets_are_counted() {
    let e = engine();
    let mut pa = pcmu();
    pa.telephone_event_pt = media_core::PayloadType::new(101);
    pa.comfort_noise_pt = media_core::PayloadType::new(13);
    let (a, b) = e
        .create_call((DialogId(1), pa), (DialogId(2), pcmu()))
        .unwrap();
    let (a, b) = (a.id, b.id);
    let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
    send(&e, &mut ing, &mut eg, &[a, b], 0, 100, |_, _| false);
    let mut pkt = Vec::new();
    let audio = |k: usize, pkt: &mut Vec<u8>| {
        rtp(0, k as u16, 160 * k as u32, 100, false, &ulaw_frame(k), pkt)
    };
    // k = 100: an event packet, then its copy. k = 101 and 102: audio. k = 103: a SID
    // sent after k = 104's audio (late). Then audio on to 120.
    let mut order: Vec<(usize, &str)> = vec![(100, "event"), (100, "event"), (101, "a")];
    order.extend([(102, "a"), (104, "a"), (103, "sid")]);
    order.extend((105..120).map(|k| (k, "a")));
    for (j, (k, kind)) in order.into_iter().enumerate() {
        match kind {
            // Event 7, not the end, volume 10, 160 samples so far.
            "event" => rtp(
                101,
                k as u16,
                160 * 100,
                100,
                true,
                &[7, 10, 0, 160],
                &mut pkt,
            ),
            // RFC 3389: noise level 60 -dBov, no spectral information.
            "sid" => rtp(13, k as u16, 160 * k as u32, 100, false, &[60], &mut pkt),
            _ => audio(k, &mut pkt),
        }
        ing.push(a, &pkt).unwrap();
        // B's stream goes on in order.
        let kb = 100 + j;
        rtp(
            0,
            kb as u16,
            160 * kb as u32,
            101,
            false,
            &ulaw_frame(kb),
            &mut pkt,
        );
        ing.push(b, &pkt).unwrap();
        e.step(2).unwrap();
        drain(&mut eg);
    }
    let stats = e.session_stats(a).unwrap();
    assert_eq!(stats.rx_duplicates, 1, "the event's copy: {stats:?}");
    assert_eq!(stats.rx_reordered, 1, "the late SID: {stats:?}");
    assert_eq!(stats.rx_dtmf_packets, 2, "{stats:?}");
    assert_eq!(stats.rx_cn_packets, 1, "{stats:?}");
    let q = e.session_quality(a).unwrap();
    assert_eq!((q.packets_expected, q.packets_lost), (120, 0), "{q:?}");
    assert_eq!(q.duplicates, 1, "{q:?}");
    assert_eq!(q.reordered, 1, "{q:?}");
    // The RTCP report block built from the session's counts reads no loss either: the
    // event and SID packets were expected (they share the sequence space), so they count
    // as received too; the copy counts as received as well (RFC 3550 A.3), so the
    // cumulative loss is -1.
    use media_core::integration::rtcp::{NtpTime, ReceiveCounts, ReceptionState};
    let counts = ReceiveCounts::from_session_stats(&stats, 119);
    let block = ReceptionState::default().report_block(100, &counts, NtpTime(0));
    assert_eq!(
        (block.cumulative_lost, block.fraction_lost),
        (-1, 0),
        "{counts:?} {stats:?}"
    );
    // B's stream, all audio in order, has neither.
    let sb = e.session_stats(b).unwrap();
    assert_eq!((sb.rx_duplicates, sb.rx_reordered), (0, 0), "{sb:?}");
}

/// Media timeout: with the monitor polled every second, a leg whose peer stops sending
/// raises one `MediaTimeout` 30 s later (the other leg, still receiving, none), and one
/// `MediaResumed` when packets come again; a leg that never receives anything (one-way
/// audio) times out 30 s after it was first polled; a peer in silence suppression that
/// sends only comfort-noise SIDs is alive; with `media_timeout_ms: 0`, nothing.
#[test]
fn a_stream_that_stops_or_never_starts_raises_one_media_timeout() {
    for timeout_ms in [30_000u32, 0] {
        let e = engine();
        let mut pb = pcmu();
        pb.comfort_noise_pt = media_core::PayloadType::new(13);
        let (a, b) = e
            .create_call((DialogId(1), pcmu()), (DialogId(2), pb))
            .unwrap();
        let c = e.create_media_session(DialogId(3), pcmu()).unwrap();
        let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
        let mut monitor = QualityMonitor::new(QualityThresholds {
            lane_load_high: f64::INFINITY,
            media_timeout_ms: timeout_ms,
            ..Default::default()
        });
        // (second polled, event)
        let mut events = Vec::new();
        let mut pkt = Vec::new();
        for second in 0..60u32 {
            for f in 0..50u32 {
                let k = second * 50 + f;
                // Frame `k` of a peer's speech, on its stream `ssrc`, into session `id`.
                let mut talk = |id, ssrc| {
                    let frame = ulaw_frame(k as usize);
                    rtp(0, k as u16, 160 * k, ssrc, false, &frame, &mut pkt);
                    ing.push(id, &pkt).unwrap();
                };
                // A's peer talks for 10 s, is gone for 40 s, then talks again.
                if !(10..50).contains(&second) {
                    talk(a.id, 7);
                }
                // B's peer talks for 2 s, then sends only a SID every 200 ms (DTX).
                if second < 2 {
                    talk(b.id, 8);
                } else if f % 10 == 0 {
                    rtp(13, k as u16, 160 * k, 8, false, &[60], &mut pkt);
                    ing.push(b.id, &pkt).unwrap();
                }
                e.step(2).unwrap();
                drop(drain(&mut eg));
            }
            events.extend(monitor.poll(&e).into_iter().map(|ev| (second, ev)));
        }
        let media: Vec<_> = events
            .iter()
            .filter(|(_, ev)| {
                matches!(
                    ev,
                    QualityEvent::MediaTimeout { .. } | QualityEvent::MediaResumed { .. }
                )
            })
            .collect();
        if timeout_ms == 0 {
            assert!(media.is_empty(), "{media:?}");
            continue;
        }
        let (ida, idc) = (a.id.to_u64(), c.id.to_u64());
        // A: its last packet in second 9's poll; 30 s later, at second 39's poll, timed
        // out (30,000 ms of lane time); back at second 50's poll, after 40 s.
        // C: never a packet; first polled at second 0, timed out at second 30's.
        assert_eq!(
            media,
            [
                &(
                    30,
                    QualityEvent::MediaTimeout {
                        session: idc,
                        silent_ms: 30_000
                    }
                ),
                &(
                    39,
                    QualityEvent::MediaTimeout {
                        session: ida,
                        silent_ms: 30_000
                    }
                ),
                &(
                    50,
                    QualityEvent::MediaResumed {
                        session: ida,
                        silent_ms: 41_000
                    }
                ),
            ],
            "B (SIDs only) must stay alive"
        );
        let _ = b;
    }
}

/// `restart_media_timeout` (for a leg coming off hold): the silence before it does not
/// count, and a stream that stays silent after it times out again.
#[test]
fn a_restarted_media_timeout_counts_from_the_restart_and_fires_again() {
    let e = engine();
    let s = e.create_media_session(DialogId(1), pcmu()).unwrap();
    let mut monitor = QualityMonitor::new(QualityThresholds {
        lane_load_high: f64::INFINITY,
        media_timeout_ms: 10_000,
        ..Default::default()
    });
    let mut events = Vec::new();
    for second in 0..40u32 {
        if second == 15 {
            // Off hold: start over (its timeout at 10 s was raised already).
            monitor.restart_media_timeout(s.id);
        }
        e.step(100).unwrap();
        events.extend(
            monitor
                .poll(&e)
                .into_iter()
                .filter(|ev| matches!(ev, QualityEvent::MediaTimeout { .. }))
                .map(|ev| (second, ev)),
        );
    }
    let id = s.id.to_u64();
    let at = |second, silent_ms| {
        (
            second,
            QualityEvent::MediaTimeout {
                session: id,
                silent_ms,
            },
        )
    };
    // First polled at second 0; after the restart, first polled again at second 15.
    assert_eq!(events, [at(10, 10_000), at(25, 10_000),]);
}

/// Per-session media timeouts (`set_media_timeout`): three silent sessions under a 10 s
/// threshold, one given 3 s, one none (`Some(0)`), one given 25 s and then the threshold's
/// back (`None`) at second 12 (by then silent 12 s: raised at once); a session created
/// after one with its own ended takes the threshold's.
#[test]
fn a_session_can_have_a_media_timeout_of_its_own() {
    let e = engine();
    let short = e.create_media_session(DialogId(1), pcmu()).unwrap();
    let off = e.create_media_session(DialogId(2), pcmu()).unwrap();
    let back = e.create_media_session(DialogId(3), pcmu()).unwrap();
    let plain = e.create_media_session(DialogId(4), pcmu()).unwrap();
    let mut monitor = QualityMonitor::new(QualityThresholds {
        lane_load_high: f64::INFINITY,
        media_timeout_ms: 10_000,
        ..Default::default()
    });
    monitor.set_media_timeout(short.id, Some(3_000));
    monitor.set_media_timeout(off.id, Some(0));
    monitor.set_media_timeout(back.id, Some(25_000));
    let mut events = Vec::new();
    for second in 0..40u32 {
        if second == 12 {
            monitor.set_media_timeout(back.id, None);
        }
        e.step(100).unwrap();
        events.extend(monitor.poll(&e).into_iter().filter_map(|ev| match ev {
            QualityEvent::MediaTimeout { session, silent_ms } => Some((second, session, silent_ms)),
            _ => None,
        }));
    }
    assert_eq!(
        events,
        [
            (3, short.id.to_u64(), 3_000),
            (10, plain.id.to_u64(), 10_000),
            (12, back.id.to_u64(), 12_000),
        ]
    );
    // A session given a timeout of its own ends; the next one takes the threshold's.
    e.destroy_media_session(short.id).unwrap();
    let _ = monitor.poll(&e);
    let again = e.create_media_session(DialogId(5), pcmu()).unwrap();
    let mut later = Vec::new();
    for second in 0..12u32 {
        e.step(100).unwrap();
        later.extend(monitor.poll(&e).into_iter().filter_map(|ev| match ev {
            QualityEvent::MediaTimeout { session, .. } if session == again.id.to_u64() => {
                Some(second)
            }
            _ => None,
        }));
    }
    assert_eq!(later, [10]);
}
