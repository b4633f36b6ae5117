//! The `rfc4733` fuzz target: telephone-event payloads and streams.
//!
//! Every input is first read as a payload: [`EventPayload::parse`] must agree with
//! [`EventPayload::packed`] and round-trip through [`EventPayload::write`]. Then it is read
//! as a stream of packets (timestamp steps, marker, packed events, arrival times, polls)
//! into a [`DtmfReceiver`], whose reports must alternate per digit: a digit begins, then
//! ends once, before the next one begins, and `active_digit` tells the same story. A
//! [`DtmfSender`] driven with fuzzed requests feeds a second receiver, which must report
//! exactly the digits sent.

#[path = "input.rs"]
mod input;

use input::Input;
use media_core::codec::audio::telephone_event::{
    event_to_digit, DtmfEvent, DtmfReceiver, DtmfSender, EventPayload,
};

const MAX_OPS: usize = 4000;

/// Tracks one receiver's reports: each digit begins once and ends once.
#[derive(Default)]
struct Reports {
    open: Option<(char, u32)>,
    began: u64,
    ended: u64,
}

impl Reports {
    fn on(&mut self, ev: DtmfEvent) {
        match ev {
            DtmfEvent::Began { digit, ts } => {
                assert!(
                    self.open.is_none(),
                    "{digit} began while {:?} had not ended",
                    self.open
                );
                self.open = Some((digit, ts));
                self.began += 1;
            }
            DtmfEvent::Ended { digit, ts, .. } => {
                assert_eq!(
                    self.open,
                    Some((digit, ts)),
                    "ended a digit that had not begun"
                );
                self.open = None;
                self.ended += 1;
            }
            _ => {}
        }
    }

    fn check(&self, rx: &DtmfReceiver) {
        assert_eq!(
            rx.active_digit(),
            self.open.map(|(d, _)| d),
            "active digit disagrees with the reports"
        );
        assert_eq!(rx.next_timeout_ms().is_some(), self.open.is_some());
    }
}

/// Runs one input. Panics (the finding) when an invariant breaks.
pub fn run(data: &[u8]) {
    payloads(data);
    let mut inp = Input::new(data);
    receiver(&mut inp);
    sender(&mut inp);
}

fn payloads(data: &[u8]) {
    match EventPayload::parse(data) {
        Ok(p) => {
            let mut buf = [0u8; 4];
            assert_eq!(p.write(&mut buf), 4);
            assert_eq!(EventPayload::parse(&buf), Ok(p), "write/parse round trip");
            assert_eq!(buf[0], data[0]);
            assert_eq!(buf[1] & 0xBF, data[1] & 0xBF, "only the R bit may change");
            assert_eq!(buf[2..], data[2..4]);
            assert_eq!(p.digit(), event_to_digit(p.event));
        }
        Err(_) => assert!(data.len() < EventPayload::LEN),
    }
    let mut count = 0usize;
    let mut offset = 0u32;
    for (off, ev) in EventPayload::packed(data) {
        assert_eq!(off, offset, "packed events are contiguous");
        assert_eq!(Ok(ev), EventPayload::parse(&data[4 * count..]));
        offset = offset.wrapping_add(u32::from(ev.duration));
        count += 1;
    }
    assert_eq!(count, data.len() / 4, "every whole block is an event");
}

fn receiver(inp: &mut Input) {
    let timeout = match inp.u8() % 4 {
        0 => u32::from(inp.u16()),
        _ => DtmfReceiver::DEFAULT_TIMEOUT_MS,
    };
    let mut rx = DtmfReceiver::new(timeout);
    let mut reports = Reports::default();
    let mut ts = inp.u32();
    let mut now_ms = u64::from(inp.u32());
    let mut packets = 0u64;
    let mut ops = 0;
    while !inp.is_empty() && ops < MAX_OPS {
        ops += 1;
        match inp.u8() % 8 {
            0 => {
                now_ms = now_ms.saturating_add(u64::from(inp.u16()));
                if let Some(ev) = rx.poll(now_ms) {
                    reports.on(ev);
                }
            }
            1 => {
                rx.reset();
                reports.open = None;
            }
            _ => {
                ts = match inp.u8() % 8 {
                    0 => inp.u32(),
                    1 => ts.wrapping_add(0xFFFF),
                    2 => ts.wrapping_sub(u32::from(inp.u16())),
                    3 => ts.wrapping_add(u32::from(inp.u16())),
                    _ => ts,
                };
                let marker = inp.bool();
                now_ms = now_ms.saturating_add(u64::from(inp.u8()));
                let n = 1 + inp.below(3);
                let payload = inp.bytes(4 * n);
                for (off, ev) in EventPayload::packed(payload) {
                    packets += 1;
                    for r in rx.on_packet(ts.wrapping_add(off), marker && off == 0, &ev, now_ms) {
                        reports.on(r);
                    }
                }
            }
        }
        reports.check(&rx);
        let s = rx.stats();
        assert_eq!(s.packets, packets, "every packet counted");
        assert!(s.duplicates + s.stale + s.ignored <= s.packets);
    }
}

fn sender(inp: &mut Input) {
    let interval = match inp.u8() % 4 {
        0 => inp.u32(),
        _ => u32::from(inp.pick(&[160u16, 400, 800, 960, 2400])),
    };
    let Ok(mut tx) = DtmfSender::new(interval) else {
        return;
    };
    let mut rx = DtmfReceiver::new(DtmfReceiver::DEFAULT_TIMEOUT_MS);
    let mut reports = Reports::default();
    let mut media_ts = inp.u32();
    let mut now_ms = 0u64;
    let mut buf = [0u8; 4];
    let mut sent: Vec<char> = Vec::new();
    let mut heard: Vec<char> = Vec::new();
    let mut ops = 0;
    while !inp.is_empty() && ops < MAX_OPS {
        ops += 1;
        match inp.u8() % 8 {
            0 => {
                let event = inp.u8() % 20;
                let volume = inp.u8() % 70;
                let duration = match inp.u8() % 4 {
                    0 => None,
                    1 => Some(inp.u32()),
                    _ => Some(u32::from(inp.u16())),
                };
                if tx.start(event, volume, duration).is_ok() {
                    if let Some(d) = event_to_digit(event) {
                        sent.push(d);
                    }
                }
            }
            1 => tx.stop(),
            _ => {
                // One packet interval; the sender may not be cut short here, so the
                // receiver must see every digit begin.
                if let Some(p) = tx.poll(media_ts, &mut buf) {
                    assert_eq!(p.payload_len, EventPayload::LEN);
                    let ev = EventPayload::parse(&buf).expect("the sender writes 4 bytes");
                    assert_eq!(ev.end, p.end);
                    for r in rx.on_packet(p.timestamp, p.marker, &ev, now_ms) {
                        if let DtmfEvent::Began { digit, .. } = r {
                            heard.push(digit);
                        }
                        reports.on(r);
                    }
                }
                media_ts = media_ts.wrapping_add(interval);
                now_ms += u64::from(interval / 8).max(1);
            }
        }
        reports.check(&rx);
    }
    // Let the last event finish.
    tx.stop();
    for _ in 0..8 {
        if let Some(p) = tx.poll(media_ts, &mut buf) {
            let ev = EventPayload::parse(&buf).expect("4 bytes");
            for r in rx.on_packet(p.timestamp, p.marker, &ev, now_ms) {
                if let DtmfEvent::Began { digit, .. } = r {
                    heard.push(digit);
                }
                reports.on(r);
            }
        }
        media_ts = media_ts.wrapping_add(interval);
    }
    assert!(
        heard.len() <= sent.len(),
        "heard {heard:?}, more than sent {sent:?}"
    );
}
