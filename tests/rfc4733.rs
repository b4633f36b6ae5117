//! RFC 4733 telephone events (sender, receiver, round trip over a lossy channel), the
//! in-band DTMF tone generator (`processing::audio::dtmf_detector`), and RFC 3389 comfort noise (payload, analysis and
//! synthesis), through the public API only.

use media_core::codec::audio::comfort_noise::{analyze, CnGenerator, CnPayload, MAX_ORDER};
use media_core::codec::audio::telephone_event::{
    digit_to_event, DtmfEvent, DtmfReceiver, DtmfSender, EndReason, EventPacket, EventPayload,
};
use media_core::processing::audio::dtmf_detector::{Digit, DtmfGenerator, DtmfGeneratorConfig};

/// 20 ms at 8 kHz.
const INTERVAL: u32 = 160;

/// Deterministic xorshift32, so lossy-channel tests are reproducible.
struct Rng(u32);

impl Rng {
    fn next(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        self.0
    }

    /// True with probability `percent` / 100.
    fn chance(&mut self, percent: u32) -> bool {
        self.next() % 100 < percent
    }
}

/// Every packet of the current event, polling once per interval from `media_ts`.
fn drain(tx: &mut DtmfSender, mut media_ts: u32) -> Vec<(EventPacket, EventPayload)> {
    let mut packets = Vec::new();
    let mut buf = [0u8; EventPayload::LEN];
    while let Some(p) = tx.poll(media_ts, &mut buf) {
        assert_eq!(p.payload_len, EventPayload::LEN);
        packets.push((p, EventPayload::parse(&buf).unwrap()));
        media_ts = media_ts.wrapping_add(tx.interval_ts());
        assert!(packets.len() < 10_000, "sender never went idle");
    }
    assert!(tx.is_idle());
    packets
}

fn began(events: &[DtmfEvent]) -> String {
    events
        .iter()
        .filter(|e| matches!(e, DtmfEvent::Began { .. }))
        .map(DtmfEvent::digit)
        .collect()
}

fn ended(events: &[DtmfEvent]) -> String {
    events
        .iter()
        .filter(|e| matches!(e, DtmfEvent::Ended { .. }))
        .map(DtmfEvent::digit)
        .collect()
}

// ---------------------------------------------------------------------------
// Sender
// ---------------------------------------------------------------------------

#[test]
fn sender_marks_only_the_first_packet_and_keeps_the_event_start_timestamp() {
    let mut tx = DtmfSender::new(INTERVAL).unwrap();
    tx.start(digit_to_event('1').unwrap(), 10, Some(800))
        .unwrap();
    let packets = drain(&mut tx, 48_000);

    let durations: Vec<u16> = packets.iter().map(|(_, p)| p.duration).collect();
    assert_eq!(durations, [160, 320, 480, 640, 800, 800, 800]);
    let markers: Vec<bool> = packets.iter().map(|(h, _)| h.marker).collect();
    assert_eq!(markers, [true, false, false, false, false, false, false]);
    assert!(packets.iter().all(|(h, _)| h.timestamp == 48_000));
    assert!(packets.iter().all(|(_, p)| p.event == 1 && p.volume == 10));
}

#[test]
fn sender_sends_the_final_packet_three_times_with_the_end_bit() {
    let mut tx = DtmfSender::new(INTERVAL).unwrap();
    tx.start(11, 6, Some(1000)).unwrap();
    let packets = drain(&mut tx, 0);
    let ends: Vec<_> = packets.iter().filter(|(_, p)| p.end).collect();
    assert_eq!(ends.len(), 3);
    // The three are identical and last; the final duration is exact, not rounded up to
    // a whole interval.
    assert!(ends
        .iter()
        .all(|(h, p)| p.duration == 1000 && h.end && !h.marker));
    assert!(packets[..packets.len() - 3].iter().all(|(_, p)| !p.end));
    let mut wire = [[0u8; 4]; 3];
    for (w, (_, p)) in wire.iter_mut().zip(&ends) {
        p.write(w);
    }
    assert_eq!(wire[0], wire[1]);
    assert_eq!(wire[1], wire[2]);
}

#[test]
fn sender_durations_increase_until_stop_then_end_with_the_duration_so_far() {
    let mut tx = DtmfSender::new(INTERVAL).unwrap();
    tx.start(5, 10, None).unwrap();
    let mut buf = [0u8; 4];
    let mut ts = 1_000u32;
    let mut last = 0;
    for _ in 0..5 {
        let h = tx.poll(ts, &mut buf).unwrap();
        let p = EventPayload::parse(&buf).unwrap();
        assert!(p.duration > last && !p.end && h.timestamp == 1_000);
        last = p.duration;
        ts += INTERVAL;
    }
    tx.stop();
    let rest = drain(&mut tx, ts);
    assert_eq!(rest.len(), 3);
    assert!(rest
        .iter()
        .all(|(h, p)| p.end && p.duration == 800 && h.timestamp == 1_000));
}

#[test]
fn sender_splits_long_events_into_segments_with_new_timestamps_and_no_marker() {
    // 200 000 timestamp units (25 s at 8 kHz) > 3 × 0xFFFF; start near the u32 wrap.
    let start = u32::MAX - 1_000;
    let mut tx = DtmfSender::new(INTERVAL).unwrap();
    tx.start(0, 10, Some(200_000)).unwrap();
    let packets = drain(&mut tx, start);

    assert!(packets[0].0.marker);
    assert_eq!(packets.iter().filter(|(h, _)| h.marker).count(), 1);

    let mut segment_ts: Vec<u32> = packets.iter().map(|(h, _)| h.timestamp).collect();
    segment_ts.dedup();
    let expected: Vec<u32> = (0..4).map(|i| start.wrapping_add(i * 0xFFFF)).collect();
    assert_eq!(segment_ts, expected);

    for (i, &ts) in expected.iter().enumerate() {
        let seg: Vec<&EventPayload> = packets
            .iter()
            .filter(|(h, _)| h.timestamp == ts)
            .map(|(_, p)| p)
            .collect();
        assert!(seg.windows(2).all(|w| w[0].duration <= w[1].duration));
        let last3 = &seg[seg.len() - 3..];
        if i < 3 {
            // A full segment closes at exactly 0xFFFF, without E, three times.
            assert!(last3.iter().all(|p| p.duration == 0xFFFF && !p.end));
            assert!(seg.iter().all(|p| !p.end));
        } else {
            assert!(last3
                .iter()
                .all(|p| p.duration == (200_000 - 3 * 0xFFFF) as u16 && p.end));
        }
    }
}

#[test]
fn sender_works_at_wideband_clocks_and_larger_intervals() {
    // 20 ms at 48 kHz: 960 units per packet; 0.5 s digit.
    let mut tx = DtmfSender::new(960).unwrap();
    tx.start(12, 10, Some(24_000)).unwrap();
    let packets = drain(&mut tx, 7);
    assert_eq!(packets.len(), 25 + 2);
    assert_eq!(packets[0].1.duration, 960);
    assert_eq!(packets.last().unwrap().1.duration, 24_000);
}

// ---------------------------------------------------------------------------
// Receiver
// ---------------------------------------------------------------------------

/// Packets of one 100 ms event starting at `ts`: 5 updates (the 5th with E) + 2 repeats.
fn event_packets(event: u8, ts: u32) -> Vec<(EventPacket, EventPayload)> {
    let mut tx = DtmfSender::new(INTERVAL).unwrap();
    tx.start(event, 10, Some(800)).unwrap();
    drain(&mut tx, ts)
}

#[test]
fn receiver_times_out_an_event_whose_three_end_packets_are_all_lost() {
    let mut rx = DtmfReceiver::new(100);
    let mut events = Vec::new();
    let packets = event_packets(3, 8_000);
    let mut now = 1_000u64;
    for (h, p) in packets.iter().filter(|(_, p)| !p.end) {
        events.extend(rx.on_packet(h.timestamp, h.marker, p, now));
        assert_eq!(rx.poll(now), None);
        now += 20;
    }
    assert_eq!(rx.active_digit(), Some('3'));
    let last_packet = now - 20;
    assert_eq!(rx.next_timeout_ms(), Some(last_packet + 100));
    assert_eq!(rx.poll(last_packet + 99), None);
    let end = rx.poll(last_packet + 100).expect("timeout ends the digit");
    assert_eq!(
        end,
        DtmfEvent::Ended {
            digit: '3',
            ts: 8_000,
            duration_ts: 640,
            reason: EndReason::TimedOut
        }
    );
    events.push(end);
    assert_eq!(rx.poll(last_packet + 500), None, "reported once");
    assert_eq!(rx.active_digit(), None);

    // The next event, first packet lost too, is still detected by its new timestamp.
    now = last_packet + 500;
    for (h, p) in event_packets(4, 8_000 + 4_800).iter().skip(1) {
        events.extend(rx.on_packet(h.timestamp, h.marker, p, now));
        now += 20;
    }
    assert_eq!(began(&events), "34");
    assert_eq!(ended(&events), "34");
}

#[test]
fn receiver_ends_a_digit_with_lost_end_packets_when_the_next_one_begins() {
    let mut rx = DtmfReceiver::new(1_000);
    let mut events = Vec::new();
    let mut now = 0;
    for (h, p) in event_packets(7, 0).iter().filter(|(_, p)| !p.end) {
        events.extend(rx.on_packet(h.timestamp, h.marker, p, now));
        now += 20;
    }
    // Same digit again 60 ms later: a new timestamp makes it a new event.
    for (h, p) in &event_packets(7, 800 + 480) {
        events.extend(rx.on_packet(h.timestamp, h.marker, p, now));
        now += 20;
    }
    assert_eq!(
        events,
        [
            DtmfEvent::Began { digit: '7', ts: 0 },
            DtmfEvent::Ended {
                digit: '7',
                ts: 0,
                duration_ts: 640,
                reason: EndReason::Superseded
            },
            DtmfEvent::Began {
                digit: '7',
                ts: 1_280
            },
            DtmfEvent::Ended {
                digit: '7',
                ts: 1_280,
                duration_ts: 800,
                reason: EndReason::EndBit
            },
        ]
    );
}

#[test]
fn receiver_reports_duplicated_retransmissions_once() {
    let mut rx = DtmfReceiver::new(200);
    let mut events = Vec::new();
    let packets = event_packets(9, 123_456);
    for (i, (h, p)) in packets.iter().enumerate() {
        for _ in 0..3 {
            events.extend(rx.on_packet(h.timestamp, h.marker, p, i as u64 * 20));
        }
    }
    assert_eq!(began(&events), "9");
    assert_eq!(ended(&events), "9");
    assert_eq!(events.len(), 2);
    let stats = rx.stats();
    assert_eq!(stats.packets, 21);
    // 2 extra copies of each of the 7, plus the 2 repeats of the end packet.
    assert_eq!(stats.duplicates, 14 + 2);
    assert_eq!(
        rx.poll(10_000),
        None,
        "an ended digit does not time out again"
    );
}

#[test]
fn receiver_ignores_out_of_order_stale_updates_and_late_packets_of_older_events() {
    let mut rx = DtmfReceiver::new(200);
    let a = event_packets(1, 0);
    let b = event_packets(2, 1_600);
    let order = [
        &a[0], &a[2], &a[1], // update 320 arrives after 480
        &a[3], &a[4], &b[0], // B begins
        &a[5], &a[6], // late end repeats of A
        &b[1], &b[2], &b[3], &b[4],
    ];
    let mut events = Vec::new();
    for (i, (h, p)) in order.iter().enumerate() {
        events.extend(rx.on_packet(h.timestamp, h.marker, p, i as u64 * 20));
    }
    assert_eq!(began(&events), "12");
    assert_eq!(ended(&events), "12");
    assert!(matches!(
        events[1],
        DtmfEvent::Ended {
            digit: '1',
            duration_ts: 800,
            reason: EndReason::EndBit,
            ..
        }
    ));
    // The out-of-order update, and A's end repeats that arrived after B began.
    assert_eq!(rx.stats().stale, 3);
    assert_eq!(rx.stats().duplicates, 0);
}

#[test]
fn receiver_joins_long_event_segments_even_without_their_closing_packets() {
    let mut tx = DtmfSender::new(INTERVAL).unwrap();
    tx.start(10, 10, Some(200_000)).unwrap();
    let packets = drain(&mut tx, 5);
    for drop_closing in [false, true] {
        let mut rx = DtmfReceiver::new(200);
        let mut events = Vec::new();
        for (i, (h, p)) in packets.iter().enumerate() {
            if drop_closing && p.duration == 0xFFFF {
                continue;
            }
            events.extend(rx.on_packet(h.timestamp, h.marker, p, i as u64 * 20));
            assert_eq!(rx.poll(i as u64 * 20), None);
        }
        assert_eq!(
            events,
            [
                DtmfEvent::Began { digit: '*', ts: 5 },
                DtmfEvent::Ended {
                    digit: '*',
                    ts: 5,
                    duration_ts: 200_000,
                    reason: EndReason::EndBit
                }
            ],
            "drop_closing = {drop_closing}"
        );
    }
}

/// A long digit whose packets stop for longer than the timeout and then go on (a network
/// outage mid-digit), the gap inside a segment or across a segment boundary (the first
/// packets of the next segment lost too): the timeout ends it, and what follows is the
/// same digit going on, not a second press. Before, its next segment began it again, so
/// one '*' read as "**".
#[test]
fn receiver_reports_a_long_digit_that_timed_out_and_went_on_once() {
    let mut tx = DtmfSender::new(INTERVAL).unwrap();
    tx.start(10, 10, Some(200_000)).unwrap();
    let packets = drain(&mut tx, 5);
    let first_of_segment_2 = packets
        .iter()
        .position(|(h, _)| h.timestamp == 5 + 0xFFFF)
        .expect("a second segment");
    for gap_from in [100, first_of_segment_2 - 10] {
        let mut rx = DtmfReceiver::new(200);
        let mut events = Vec::new();
        // 20 packets (400 ms) lost; the clock goes on.
        for (i, (h, p)) in packets.iter().enumerate() {
            let now = i as u64 * 20;
            events.extend(rx.poll(now));
            if (gap_from..gap_from + 20).contains(&i) {
                continue;
            }
            events.extend(rx.on_packet(h.timestamp, h.marker, p, now));
        }
        events.extend(rx.poll(packets.len() as u64 * 20 + 1_000));
        assert_eq!(
            began(&events),
            "*",
            "gap from packet {gap_from}: {events:?}"
        );
        assert_eq!(
            ended(&events),
            "*",
            "gap from packet {gap_from}: {events:?}"
        );
        assert!(
            matches!(
                events[1],
                DtmfEvent::Ended {
                    reason: EndReason::TimedOut,
                    ..
                }
            ),
            "gap from packet {gap_from}: {events:?}"
        );
        assert_eq!(rx.active_digit(), None);
        assert_eq!(rx.next_timeout_ms(), None);
    }
}

/// A short digit whose end packets were all lost, timed out, then the same key pressed
/// again with its first packet lost, its timestamp where a long digit's next segment
/// would start: a second digit, not the first going on.
#[test]
fn receiver_takes_a_short_timed_out_digit_for_ended_when_the_key_comes_again() {
    let mut rx = DtmfReceiver::new(200);
    let mut events = Vec::new();
    let mut now = 0;
    for (h, p) in event_packets(5, 1_000).iter().filter(|(_, p)| !p.end) {
        events.extend(rx.on_packet(h.timestamp, h.marker, p, now));
        now += 20;
    }
    events.extend(rx.poll(now + 8_000));
    for (h, p) in event_packets(5, 1_000 + 0xFFF0).iter().skip(1) {
        events.extend(rx.on_packet(h.timestamp, h.marker, p, now + 8_000));
    }
    assert_eq!(began(&events), "55", "{events:?}");
    assert_eq!(ended(&events), "55", "{events:?}");
}

#[test]
fn receiver_follows_a_duration_that_wraps_past_0xffff_on_one_timestamp() {
    // A sender that does not segment: same timestamp, duration counting mod 2^16.
    let mut rx = DtmfReceiver::new(200);
    let mut events = Vec::new();
    let total = 100_000u32;
    let mut d = 0;
    let mut now = 0;
    while d < total {
        d = (d + INTERVAL).min(total);
        let p = EventPayload {
            event: 8,
            end: d == total,
            volume: 10,
            duration: d as u16,
        };
        events.extend(rx.on_packet(777, d == INTERVAL, &p, now));
        now += 20;
    }
    assert_eq!(
        events.last(),
        Some(&DtmfEvent::Ended {
            digit: '8',
            ts: 777,
            duration_ts: total,
            reason: EndReason::EndBit
        })
    );
    assert_eq!(events.len(), 2);
}

#[test]
fn receiver_handles_packed_events_in_one_payload() {
    // RFC 4733 §2.5.1.5: consecutive events packed into one packet.
    let mut bytes = [0u8; 12];
    for (i, event) in [1u8, 2, 3].into_iter().enumerate() {
        let p = EventPayload {
            event,
            end: true,
            volume: 10,
            duration: 800,
        };
        p.write(&mut bytes[i * 4..]);
    }
    let mut rx = DtmfReceiver::new(200);
    let mut events = Vec::new();
    for (offset, p) in EventPayload::packed(&bytes) {
        events.extend(rx.on_packet(1_000u32.wrapping_add(offset), offset == 0, &p, 0));
    }
    assert_eq!(began(&events), "123");
    assert_eq!(ended(&events), "123");
    assert!(matches!(events[4], DtmfEvent::Began { ts: 2_600, .. }));
}

// ---------------------------------------------------------------------------
// Round trip
// ---------------------------------------------------------------------------

const ALL_DIGITS: &str = "1234567890*#ABCD";

/// What the channel does to the packets, decided by a seeded PRNG.
#[derive(Clone, Copy, Default)]
struct Channel {
    seed: u32,
    /// Share of packets dropped.
    loss_percent: u32,
    /// Packets are delayed by 0..=max_delay intervals (so they can overtake each other).
    max_delay: u32,
    /// Share of delivered packets that arrive twice.
    dup_percent: u32,
    /// Drop every packet with the E bit.
    drop_ends: bool,
}

/// Sends `digits` (100 ms each, 60 ms apart) through `channel`; returns the receiver's
/// reports and the number of packets dropped and sent.
fn round_trip(digits: &str, channel: Channel) -> (Vec<DtmfEvent>, usize, usize) {
    let mut rng = Rng(channel.seed);
    let mut tx = DtmfSender::new(INTERVAL).unwrap();
    let mut rx = DtmfReceiver::new(DtmfReceiver::DEFAULT_TIMEOUT_MS);
    let mut queue = digits.chars();
    let mut in_flight: Vec<(u64, EventPacket, EventPayload)> = Vec::new();
    let mut events = Vec::new();
    let (mut sent, mut dropped) = (0, 0);
    let mut gap = 0;
    let mut buf = [0u8; 4];
    for tick in 0..2_000u64 {
        let media_ts = 90_000u32.wrapping_add(tick as u32 * INTERVAL);
        let now_ms = tick * 20;
        if tx.is_idle() {
            if gap > 0 {
                gap -= 1;
            } else if let Some(d) = queue.next() {
                tx.start(digit_to_event(d).unwrap(), 10, Some(800)).unwrap();
                gap = 3; // 60 ms of audio after this digit
            }
        }
        if let Some(h) = tx.poll(media_ts, &mut buf) {
            sent += 1;
            let p = EventPayload::parse(&buf[..h.payload_len]).unwrap();
            if rng.chance(channel.loss_percent) || (channel.drop_ends && p.end) {
                dropped += 1;
            } else {
                let copies = if rng.chance(channel.dup_percent) {
                    2
                } else {
                    1
                };
                for _ in 0..copies {
                    let delay = u64::from(rng.next() % (channel.max_delay + 1));
                    in_flight.push((tick + delay, h, p));
                }
            }
        }
        // Deliver what is due, in arrival order (ties in send order).
        let mut due: Vec<_> = in_flight
            .iter()
            .filter(|(at, ..)| *at <= tick)
            .copied()
            .collect();
        in_flight.retain(|(at, ..)| *at > tick);
        due.sort_by_key(|(at, ..)| *at);
        for (_, h, p) in due {
            events.extend(rx.on_packet(h.timestamp, h.marker, &p, now_ms));
        }
        events.extend(rx.poll(now_ms));
    }
    (events, dropped, sent)
}

fn assert_digit_sequence(events: &[DtmfEvent], digits: &str) {
    assert_eq!(began(events), digits);
    assert_eq!(ended(events), digits);
    // Each digit ends before the next begins.
    for pair in events.chunks(2) {
        assert!(matches!(pair[0], DtmfEvent::Began { .. }), "{pair:?}");
        assert!(matches!(pair[1], DtmfEvent::Ended { .. }), "{pair:?}");
        assert_eq!(pair[0].digit(), pair[1].digit());
    }
}

#[test]
fn round_trip_over_a_clean_channel_reports_every_digit_with_its_duration() {
    let (events, dropped, _) = round_trip(ALL_DIGITS, Channel::default());
    assert_eq!(dropped, 0);
    assert_digit_sequence(&events, ALL_DIGITS);
    for e in &events {
        if let DtmfEvent::Ended {
            duration_ts,
            reason,
            ..
        } = *e
        {
            assert_eq!((duration_ts, reason), (800, EndReason::EndBit));
        }
    }
}

#[test]
fn round_trip_over_a_channel_dropping_20_percent_reports_1234567890_star_hash_abcd() {
    for seed in [1, 2, 3, 0xDEAD_BEEF] {
        let channel = Channel {
            seed,
            loss_percent: 20,
            ..Default::default()
        };
        let (events, dropped, sent) = round_trip(ALL_DIGITS, channel);
        // The channel really lost about a fifth of the 112 packets.
        assert!(
            (15..=35).contains(&dropped),
            "seed {seed}: {dropped} of {sent}"
        );
        assert_digit_sequence(&events, ALL_DIGITS);
    }
}

#[test]
fn round_trip_survives_loss_reordering_and_duplication_together() {
    for seed in [7, 8, 9] {
        let channel = Channel {
            seed,
            loss_percent: 20,
            max_delay: 2,
            dup_percent: 10,
            ..Default::default()
        };
        let (events, _, _) = round_trip(ALL_DIGITS, channel);
        assert_digit_sequence(&events, ALL_DIGITS);
    }
}

#[test]
fn round_trip_without_any_end_packet_ends_each_digit_when_the_next_begins_and_the_last_by_timeout()
{
    let channel = Channel {
        seed: 4,
        loss_percent: 20,
        drop_ends: true,
        ..Default::default()
    };
    let (events, _, _) = round_trip(ALL_DIGITS, channel);
    assert_digit_sequence(&events, ALL_DIGITS);
    let reasons: Vec<EndReason> = events
        .iter()
        .filter_map(|e| match *e {
            DtmfEvent::Ended { reason, .. } => Some(reason),
            _ => None,
        })
        .collect();
    assert!(reasons[..15].iter().all(|&r| r == EndReason::Superseded));
    assert_eq!(reasons[15], EndReason::TimedOut);
}

// ---------------------------------------------------------------------------
// In-band tones
// ---------------------------------------------------------------------------

/// Amplitude of the component of `x` at `freq_hz`: Goertzel's recurrence evaluated at
/// exactly that frequency (no bin scalloping) on a Hann-windowed block, so the leakage of
/// a tone 70 Hz away is far below -30 dB.
fn amplitude_at(x: &[i16], freq_hz: f64, sample_rate_hz: u32) -> f64 {
    let n = x.len();
    let w = 2.0 * std::f64::consts::PI * freq_hz / f64::from(sample_rate_hz);
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    let mut window_sum = 0.0;
    for (i, &v) in x.iter().enumerate() {
        let hann = 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / n as f64).cos();
        window_sum += hann;
        let s = f64::from(v) * hann + coeff * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    2.0 * power.max(0.0).sqrt() / window_sum
}

const ALL_DTMF_HZ: [f64; 8] = [697.0, 770.0, 852.0, 941.0, 1209.0, 1336.0, 1477.0, 1633.0];

/// 0 dBm0 sine peak on the G.711 16-bit scale (µ-law overload +3.17 dBm0 at 32636).
const DBM0_PEAK: f64 = 22_657.0;

/// The Q.23 pair of an RFC 4733 event code, Hz.
fn dtmf_frequencies_hz(event: u8) -> Option<(f64, f64)> {
    let (low, high) = Digit::from_event_code(event)?.frequencies_hz();
    Some((f64::from(low), f64::from(high)))
}

/// A generator at `sample_rate_hz` (3 ms ramps) playing `event` for an hour.
fn generator(event: u8, sample_rate_hz: u32, level_dbm0: f32) -> DtmfGenerator {
    let mut g = DtmfGenerator::new(DtmfGeneratorConfig {
        sample_rate_hz,
        ..Default::default()
    })
    .unwrap();
    g.start(
        Digit::from_event_code(event).unwrap(),
        level_dbm0,
        3_600_000,
    );
    g
}

fn tone(event: u8, sample_rate_hz: u32, level_dbm0: f32, frame: usize, samples: usize) -> Vec<i16> {
    let mut g = generator(event, sample_rate_hz, level_dbm0);
    let mut out = vec![0i16; samples];
    for chunk in out.chunks_mut(frame) {
        assert!(g.fill(chunk));
    }
    out
}

#[test]
fn tone_pairs_stand_30_db_above_every_other_dtmf_frequency_at_8_16_and_48_khz() {
    for rate in [8_000u32, 16_000, 48_000] {
        let frame = rate as usize / 50;
        for (event, digit) in ALL_DIGITS.chars().map(|d| (digit_to_event(d).unwrap(), d)) {
            let x = tone(event, rate, -10.0, frame, rate as usize / 5);
            // Skip the 3 ms ramp in.
            let steady = &x[rate as usize / 100..];
            let (low, high) = dtmf_frequencies_hz(event).unwrap();
            let a_low = amplitude_at(steady, low, rate);
            let a_high = amplitude_at(steady, high, rate);
            for f in ALL_DTMF_HZ.iter().filter(|&&f| f != low && f != high) {
                let other = amplitude_at(steady, *f, rate).max(1e-9);
                let margin_db = 20.0 * (a_low.min(a_high) / other).log10();
                assert!(
                    margin_db >= 30.0,
                    "{digit} at {rate} Hz: {f} Hz only {margin_db:.1} dB down"
                );
            }
        }
    }
}

#[test]
fn tone_level_is_the_dbm0_asked_for_per_tone() {
    for rate in [8_000u32, 16_000, 48_000] {
        for level in [-10.0f32, -20.0, -3.0] {
            let x = tone(5, rate, level, 160, rate as usize / 4);
            let steady = &x[rate as usize / 100..];
            let (low, high) = dtmf_frequencies_hz(5).unwrap();
            for f in [low, high] {
                let db = 20.0 * (amplitude_at(steady, f, rate) / DBM0_PEAK).log10();
                assert!(
                    (db - f64::from(level)).abs() < 0.1,
                    "{rate} Hz, {f} Hz: {db:.2} dBm0"
                );
            }
        }
    }
}

#[test]
fn tone_is_phase_continuous_whatever_the_frame_size() {
    let whole = tone(13, 16_000, -10.0, 3_200, 3_200);
    for frame in [1, 37, 320] {
        let framed = tone(13, 16_000, -10.0, frame, 3_200);
        let worst = whole
            .iter()
            .zip(&framed)
            .map(|(a, b)| (a - b).abs())
            .max()
            .unwrap();
        assert!(worst <= 2, "frame {frame}: {worst}");
    }
}

#[test]
fn tone_amplitude_does_not_drift_over_a_minute() {
    let mut g = generator(15, 48_000, -10.0);
    let mut frame = vec![0i16; 960];
    for _ in 0..3_000 {
        g.fill(&mut frame);
    }
    let (low, high) = dtmf_frequencies_hz(15).unwrap();
    for f in [low, high] {
        let db = 20.0 * (amplitude_at(&frame, f, 48_000) / DBM0_PEAK).log10();
        assert!((db + 10.0).abs() < 0.1, "{f} Hz after 60 s: {db:.2} dBm0");
    }
}

// ---------------------------------------------------------------------------
// Comfort noise (RFC 3389)
// ---------------------------------------------------------------------------

fn rms_db(x: &[i16]) -> f64 {
    let power = x.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / x.len() as f64;
    10.0 * (power / (32768.0 * 32768.0)).log10()
}

/// Normalised autocorrelation at `lag`.
fn autocorrelation(x: &[i16], lag: usize) -> f64 {
    let r = |l: usize| -> f64 {
        x.iter()
            .zip(&x[l..])
            .map(|(&a, &b)| f64::from(a) * f64::from(b))
            .sum()
    };
    r(lag) / r(0)
}

/// Coloured noise: white noise through a resonant all-pole filter (poles at 0.9, ±~30°),
/// scaled to `level_dbov`.
fn shaped_noise(samples: usize, level_dbov: f64, seed: u32) -> Vec<i16> {
    let mut rng = Rng(seed);
    let mut y = vec![0f64; samples];
    let (mut y1, mut y2) = (0.0, 0.0);
    for v in y.iter_mut() {
        let e = (rng.next() as i32) as f64 / 2_147_483_648.0;
        let s = e + 1.56 * y1 - 0.81 * y2;
        y2 = y1;
        y1 = s;
        *v = s;
    }
    let power = y.iter().map(|v| v * v).sum::<f64>() / samples as f64;
    let scale = 32768.0 * 10f64.powf(-level_dbov / 20.0) / power.sqrt();
    y.iter().map(|v| (v * scale).round() as i16).collect()
}

#[test]
fn cn_payload_round_trips_through_the_wire_format() {
    let mut p = CnPayload {
        level_dbov: 57,
        ..Default::default()
    };
    p.reflection.extend([-127i8, -64, 0, 1, 64, 127]);
    let mut buf = [0u8; 1 + MAX_ORDER];
    let n = p.write(&mut buf);
    assert_eq!(n, 7);
    assert_eq!(&buf[..n], &[57, 0, 63, 127, 128, 191, 254]);
    assert_eq!(CnPayload::parse(&buf[..n]).unwrap(), p);
    // Level only (the original RFC 1890 draft form) is valid too.
    assert!(CnPayload::parse(&[70]).unwrap().reflection.is_empty());
}

#[test]
fn analyze_then_generate_keeps_the_level_of_shaped_noise_within_1_db() {
    for level in [30.0, 50.0, 70.0] {
        let input = shaped_noise(16_000, level, 42);
        let input_db = rms_db(&input);

        // As on a lane: one SID per 20 ms frame, the generator following them.
        let mut g = CnGenerator::new(99);
        let mut output = vec![0i16; input.len()];
        for (frame_in, frame_out) in input.chunks(160).zip(output.chunks_mut(160)) {
            g.update(&analyze(frame_in, 10));
            g.generate(frame_out);
        }
        let framed_db = rms_db(&output);
        assert!(
            (framed_db - input_db).abs() < 1.0,
            "-{level} dBov: in {input_db:.2}, out {framed_db:.2}"
        );

        // One SID for the whole second, two seconds of noise from it.
        let sid = analyze(&input, 10);
        assert_eq!(sid.reflection.len(), 10);
        let mut g = CnGenerator::new(5);
        g.update(&sid);
        let mut output = vec![0i16; 16_000];
        for frame in output.chunks_mut(160) {
            g.generate(frame);
        }
        let out_db = rms_db(&output);
        assert!(
            (out_db - input_db).abs() < 1.0,
            "-{level} dBov: in {input_db:.2}, out {out_db:.2}"
        );

        // And it is shaped like the input, where white noise at that level is not.
        for lag in [1, 2, 4] {
            let (a_in, a_out) = (autocorrelation(&input, lag), autocorrelation(&output, lag));
            assert!(
                (a_in - a_out).abs() < 0.1,
                "lag {lag}: in {a_in:.3}, out {a_out:.3}"
            );
        }
        let mut white = CnGenerator::new(5);
        white.update(&CnPayload {
            level_dbov: sid.level_dbov,
            ..Default::default()
        });
        white.generate(&mut output);
        assert!(autocorrelation(&output, 1).abs() < 0.2);
    }
}

#[test]
fn cn_level_changes_glide_instead_of_stepping() {
    let mut g = CnGenerator::new(11);
    g.update(&CnPayload::parse(&[60]).unwrap());
    let mut frame = [0i16; 160];
    g.generate(&mut frame);
    g.update(&CnPayload::parse(&[30]).unwrap());
    g.generate(&mut frame);
    // The gain ramps across the frame: the first quarter is much quieter than the last.
    assert!(rms_db(&frame[..40]) + 10.0 < rms_db(&frame[120..]));
    g.generate(&mut frame);
    assert!((rms_db(&frame) + 30.0).abs() < 2.0);
}
