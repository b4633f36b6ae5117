//! Endpoint applications (IVR, recorder): sessions attached to their lane's audio handle
//! (`MediaEngine::attach_audio`) instead of a bridged peer.

mod common;

use common::{babble, drain, line_echo, rtp, started_virtual_engine, tone_fit, ulaw_frame};
use media_core::codec::audio::g711;
use media_core::codec::audio::telephone_event::EventPayload;
use media_core::processing::audio::aec::AecConfig;
use media_core::runtime::lane::APP_QUEUE_FRAMES;
use media_core::runtime::msg::DtmfSource;
use media_core::{
    AudioHandle, ClockMode, CodecSpec, DialogId, EngineConfig, EngineEvent, Error, MediaEngine,
    MediaSessionParams, PayloadType, Ptime, SessionId,
};

fn pcmu() -> MediaSessionParams {
    MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_20)
}

/// RTP packet `k` of a PCMU stream (frame `k` of the common test signal).
fn ulaw_packet(k: u16, ssrc: u32, pkt: &mut Vec<u8>) {
    rtp(
        0,
        k,
        160 * u32::from(k),
        ssrc,
        k == 0,
        &ulaw_frame(k.into()),
        pkt,
    );
}

/// Every frame the handle holds now, as (session, samples).
fn read_all(audio: &mut AudioHandle) -> Vec<(SessionId, Vec<i16>)> {
    let mut v = Vec::new();
    while let Some(f) = audio.read() {
        let mut pcm = vec![0i16; f.len()];
        assert_eq!(f.copy_to(&mut pcm), Some(f.len()));
        v.push((f.session(), pcm));
    }
    v
}

/// 20 ms at 8 kHz of a 1 kHz tone, continuing from frame `k`.
fn tone_frame(k: usize, amplitude: f64) -> Vec<i16> {
    (0..160)
        .map(|i| {
            let t = (k * 160 + i) as f64 / 8000.0;
            ((2.0 * std::f64::consts::PI * 1000.0 * t).sin() * amplitude) as i16
        })
        .collect()
}

#[test]
fn a_recorder_reads_exactly_what_the_session_received() {
    let e = started_virtual_engine(4);
    let s = e.create_media_session(DialogId(1), pcmu()).unwrap();
    e.attach_audio(s.id).unwrap();
    let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
    let mut audio = e.take_audio_handle(0).unwrap();
    assert!(e.take_audio_handle(0).is_none(), "taken once");
    let mut pkt = Vec::new();
    let mut got = Vec::new();
    for k in 0..50u16 {
        ulaw_packet(k, 9, &mut pkt);
        ing.push(s.id, &pkt).unwrap();
        e.step(2).unwrap();
        got.extend(read_all(&mut audio));
    }
    e.step(10).unwrap();
    got.extend(read_all(&mut audio));
    assert!(got.iter().all(|(id, pcm)| *id == s.id && pcm.len() == 160));
    // The frames, in order, are the packets' decoded audio bit for bit (no loss, no
    // processing), once the jitter buffer has started playing.
    let first = got
        .iter()
        .position(|(_, pcm)| pcm.iter().any(|&x| x != 0))
        .expect("audio reached the application");
    let mut expected = [0i16; 160];
    for (k, (_, pcm)) in got[first..].iter().enumerate() {
        if k >= 50 {
            break;
        }
        g711::ulaw_decode(&ulaw_frame(k), &mut expected);
        assert_eq!(pcm[..], expected[..], "frame {k}");
    }
    assert!(got.len() - first >= 45, "{} frames read", got.len() - first);
    // An attached session nobody writes for sends nothing; a listen-only application is
    // no underrun.
    assert!(drain(&mut eg).is_empty());
    assert_eq!(e.session_stats(s.id).unwrap().no_sink, 0);
    let lane = e.lane_stats(0).unwrap();
    assert_eq!(lane.app_underruns, 0, "{lane:?}");
    assert_eq!((lane.app_in_dropped, lane.app_out_dropped), (0, 0));
}

#[test]
fn an_ivr_sends_what_the_application_writes_and_nothing_in_its_gaps() {
    let e = started_virtual_engine(4);
    let s = e.create_media_session(DialogId(1), pcmu()).unwrap();
    e.attach_audio(s.id).unwrap();
    let (_ing, mut eg) = e.take_rtp_handles(0).unwrap();
    let mut audio = e.take_audio_handle(0).unwrap();
    let mut sent: Vec<media_core::rtp::RtpHeader> = Vec::new();
    let mut written = Vec::new();
    let mut heard = Vec::new();
    for k in 0..60usize {
        // Frames 30..35: the application has nothing (a prompt still loading).
        if !(30..35).contains(&k) {
            let f = tone_frame(k, 8000.0);
            audio.write(s.id, &f).unwrap();
            written.push(f);
        }
        e.step(2).unwrap();
        for p in drain(&mut eg) {
            assert_eq!(p.session, s.id);
            let mut f = [0i16; 160];
            g711::ulaw_decode(p.payload(), &mut f);
            heard.push(f);
            sent.push(p.header);
        }
    }
    assert_eq!(sent.len(), 55, "one packet per frame written");
    // Bit for bit the written frames, G.711-encoded.
    let mut codes = [0u8; 160];
    let mut expected = [0i16; 160];
    for (w, h) in written.iter().zip(&heard) {
        g711::ulaw_encode(w, &mut codes);
        g711::ulaw_decode(&codes, &mut expected);
        assert_eq!(h[..], expected[..]);
    }
    let (snr, _) = tone_fit(&heard.concat()[..160 * 30], 1000.0, 8000.0);
    assert!(snr > 30.0, "tone SNR {snr:.1} dB");
    // Sequence numbers run on; the timestamp jumps over the gap, which starts a new
    // talkspurt (marker), as does the first packet.
    for w in sent.windows(2) {
        assert_eq!(w[1].sequence, w[0].sequence.wrapping_add(1));
    }
    assert!(sent[0].marker && sent[30].marker);
    assert!(sent
        .iter()
        .enumerate()
        .all(|(i, h)| h.marker == (i == 0 || i == 30)));
    assert_eq!(sent[30].timestamp.wrapping_sub(sent[29].timestamp), 6 * 160);
    assert_eq!(e.lane_stats(0).unwrap().app_underruns, 5);
    assert_eq!(e.session_stats(s.id).unwrap().tx_packets, 55);
    // unbridge detaches too: frames are refused, nothing more is sent.
    e.unbridge(s.id).unwrap();
    assert_eq!(
        audio.write(s.id, &tone_frame(60, 8000.0)),
        Err(Error::NotAttached(s.id))
    );
    e.step(4).unwrap();
    assert!(drain(&mut eg).is_empty());
}

/// An IVR flushing its prompt on barge-in detaches and attaches again at once: the
/// frames it wrote before (still in the ring, or already queued at the lane) come back
/// unsent, counted, and only what it writes after the new attachment is sent. In review
/// the old prompt's frames played first, both ways.
#[test]
fn frames_written_before_a_detach_never_play_after_the_next_attach() {
    for queued in [false, true] {
        let e = started_virtual_engine(4);
        let s = e.create_media_session(DialogId(1), pcmu()).unwrap();
        e.attach_audio(s.id).unwrap();
        let (_ing, mut eg) = e.take_rtp_handles(0).unwrap();
        let mut audio = e.take_audio_handle(0).unwrap();
        for k in 0..4 {
            audio.write(s.id, &tone_frame(k, 8000.0)).unwrap();
        }
        if queued {
            // The lane takes them into the session's queue (and sends the first).
            e.step(1).unwrap();
        }
        let sent_before = drain(&mut eg).len();
        let dropped_before = e.lane_stats(0).unwrap().app_in_dropped;
        e.detach_audio(s.id).unwrap();
        e.attach_audio(s.id).unwrap();
        // The new prompt: silence-coded frames (all 0xFF on the wire).
        for _ in 0..2 {
            audio.write(s.id, &[0i16; 160]).unwrap();
        }
        e.step(10).unwrap();
        let out = drain(&mut eg);
        assert_eq!(
            out.len(),
            2,
            "queued {queued}: only the new frames are sent"
        );
        assert!(
            out.iter().all(|p| p.payload().iter().all(|&b| b == 0xFF)),
            "queued {queued}: an old frame was sent"
        );
        let dropped = e.lane_stats(0).unwrap().app_in_dropped - dropped_before;
        assert_eq!(dropped as usize + sent_before, 4, "queued {queued}");
    }
}

/// With `keepalive_ms`, an application that stops writing leaves its session sending a
/// frame of encoded silence every keepalive period (a G.722 session here), so the caller's
/// phone does not time the call out; the application's frames resume the stream.
#[test]
fn an_application_that_stops_writing_leaves_keepalives() {
    let e = started_virtual_engine(4);
    let mut p = MediaSessionParams::new(CodecSpec::G722, Ptime::MS_20);
    p.keepalive_ms = 300;
    let s = e.create_media_session(DialogId(1), p).unwrap();
    e.attach_audio(s.id).unwrap();
    let (_ing, mut eg) = e.take_rtp_handles(0).unwrap();
    let mut audio = e.take_audio_handle(0).unwrap();
    let mut sent = Vec::new();
    let tone: Vec<i16> = (0..320)
        .map(|i| ((i as f64 * 0.3).sin() * 6000.0) as i16)
        .collect();
    for k in 0..150usize {
        // 1 s of prompt, 1.9 s with nothing written, then 0.1 s more.
        if !(50..145).contains(&k) {
            audio.write(s.id, &tone).unwrap();
        }
        e.step(2).unwrap();
        drop(read_all(&mut audio));
        sent.extend(drain(&mut eg));
    }
    // 50 + 5 frames written; in the 95 periods without, a keepalive every 15 (300 ms).
    let keepalives = e.lane_stats(0).unwrap().keepalives_sent;
    assert_eq!(keepalives, 6);
    assert_eq!(sent.len(), 55 + 6);
    for w in sent.windows(2) {
        assert_eq!(w[1].header.sequence, w[0].header.sequence.wrapping_add(1));
        let dt = w[1].header.timestamp.wrapping_sub(w[0].header.timestamp);
        // G.722's RTP clock runs at 8 kHz (RFC 3551 §4.5.2): 160 per 20 ms.
        assert!(
            dt == 160 || dt == 15 * 160 || w[1].header.marker,
            "step {dt}"
        );
    }
    // The far end decodes the stream in order: each keepalive is (next to) silence, at
    // least 30 dB below the prompt, once the codec's filters have let go of the prompt's
    // last samples (the first 5 ms of the first keepalive).
    let mut dec = media_core::codec::AnyDecoder::new(media_core::codec::Codec::G722);
    let mut pcm = vec![0i16; 320];
    let mut peaks = Vec::new();
    for w in sent.windows(2) {
        let n = dec.decode(w[1].payload(), &mut pcm).unwrap();
        let peak = pcm[n / 4..n]
            .iter()
            .map(|x| x.unsigned_abs())
            .max()
            .unwrap();
        if w[1].header.timestamp.wrapping_sub(w[0].header.timestamp) == 15 * 160 {
            assert!(w[1].header.marker && w[1].header.payload_type == 9);
            peaks.push(peak);
        }
    }
    assert_eq!(peaks.len(), 6);
    assert!(peaks.iter().all(|&p| p < 190), "keepalive peaks {peaks:?}");
}

#[test]
fn an_echo_application_returns_an_opus_callers_audio() {
    let e = started_virtual_engine(4);
    let s = e
        .create_media_session(
            DialogId(1),
            MediaSessionParams::new(CodecSpec::OPUS, Ptime::MS_20),
        )
        .unwrap();
    e.attach_audio(s.id).unwrap();
    let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
    let mut audio = e.take_audio_handle(0).unwrap();
    let mut enc =
        opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip).unwrap();
    let mut dec = opus::Decoder::new(48_000, opus::Channels::Mono).unwrap();
    let mut pkt = Vec::new();
    let mut back = Vec::new();
    for k in 0..100usize {
        let payload = common::opus_tone_packet(&mut enc, k, 8000.0);
        rtp(111, k as u16, 960 * k as u32, 3, k == 0, &payload, &mut pkt);
        ing.push(s.id, &pkt).unwrap();
        e.step(2).unwrap();
        // The application plays back what it hears (48 kHz frames of 20 ms).
        for (id, pcm) in read_all(&mut audio) {
            assert_eq!((id, pcm.len()), (s.id, 960));
            audio.write(id, &pcm).unwrap();
        }
        for p in drain(&mut eg) {
            assert_eq!(p.header.payload_type, 111);
            let mut f = [0i16; 960];
            let n = dec.decode(p.payload(), &mut f, false).unwrap();
            back.extend_from_slice(&f[..n]);
        }
    }
    // The caller hears its tone (550 Hz: 0.0576 rad per sample at 48 kHz) come back.
    let tail = &back[back.len() - 960 * 30..];
    let (snr, amp) = tone_fit(
        tail,
        0.0576 * 48_000.0 / (2.0 * std::f64::consts::PI),
        48_000.0,
    );
    eprintln!("echoed Opus tone: SNR {snr:.1} dB, amplitude {amp:.0}");
    assert!(
        snr > 15.0 && amp > 4000.0,
        "SNR {snr:.1} dB, amplitude {amp:.0}"
    );
}

#[test]
fn bad_application_frames_get_typed_errors_or_counted_drops() {
    let e = MediaEngine::new(EngineConfig {
        clock: ClockMode::Virtual,
        sessions_per_lane: 4,
        app_frame_slots_per_lane: Some(16),
        ..Default::default()
    })
    .unwrap();
    e.start().unwrap();
    let s = e.create_media_session(DialogId(1), pcmu()).unwrap();
    let (a, b) = e
        .create_call((DialogId(2), pcmu()), (DialogId(3), pcmu()))
        .unwrap();
    e.attach_audio(s.id).unwrap();
    let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
    let mut audio = e.take_audio_handle(0).unwrap();
    assert_eq!((audio.capacity(), audio.free_write_slots()), (16, 16));
    let frame = tone_frame(0, 1000.0);
    // Typed refusals: too long, unknown or stale ids, another lane's.
    assert_eq!(
        audio.write(s.id, &vec![0; audio.max_frame_samples() + 1]),
        Err(Error::FrameTooLarge {
            limit: audio.max_frame_samples(),
            actual: audio.max_frame_samples() + 1
        })
    );
    let stale = SessionId::from_parts(0, s.id.slot(), s.id.generation() + 1);
    let other_lane = SessionId::from_parts(1, s.id.slot(), s.id.generation());
    for id in [stale, other_lane] {
        assert_eq!(audio.write(id, &frame), Err(Error::UnknownSession(id)));
    }
    // A bridged session's audio comes from its peer.
    assert_eq!(audio.write(a.id, &frame), Err(Error::NotAttached(a.id)));
    // Counted on the lane: a frame of the wrong length, and those beyond the session's
    // queue.
    audio.write(s.id, &frame[..100]).unwrap();
    for _ in 0..APP_QUEUE_FRAMES + 3 {
        audio.write(s.id, &frame).unwrap();
    }
    // Every slot taken (none drained yet): the ring is full.
    assert_eq!(audio.free_write_slots(), 16 - 1 - APP_QUEUE_FRAMES - 3);
    while audio.free_write_slots() > 0 {
        audio.write(s.id, &frame).unwrap();
    }
    assert_eq!(
        audio.write(s.id, &frame),
        Err(Error::RingFull { ring: "audio" })
    );
    e.step(1).unwrap();
    let st = e.session_stats(s.id).unwrap();
    // Dropped: 7 of S's 15 frames beyond its queue, and its frame of the wrong length.
    let lane = e.lane_stats(0).unwrap();
    assert_eq!(
        lane.app_in_dropped as usize,
        16 - APP_QUEUE_FRAMES,
        "{lane:?}"
    );
    // The queue's slots stay taken until played; the rest came back.
    let queued = APP_QUEUE_FRAMES - st.tx_packets as usize;
    assert_eq!(audio.free_write_slots(), 16 - queued);

    // An application that does not read: received frames beyond the slots are counted.
    // Meanwhile the bridged call next to it relays undisturbed.
    let mut pkt = Vec::new();
    let mut relayed = 0;
    for k in 0..40u16 {
        ulaw_packet(k, 5, &mut pkt);
        ing.push(s.id, &pkt).unwrap();
        ing.push(a.id, &pkt).unwrap();
        e.step(2).unwrap();
        relayed += drain(&mut eg).iter().filter(|p| p.session == b.id).count();
    }
    assert!(relayed >= 35, "{relayed} packets relayed to B");
    let st = e.session_stats(s.id).unwrap();
    let lane = e.lane_stats(0).unwrap();
    assert!(lane.app_out_dropped >= 10, "{lane:?}");
    assert_eq!(audio.pending(), 16);
    // Reading frees them: frames flow again.
    assert_eq!(read_all(&mut audio).len(), 16);
    e.step(2).unwrap();
    assert_eq!(audio.pending(), 1);
    // The application sent its queue, one frame per period, and nothing after it.
    assert_eq!(st.tx_packets as usize, APP_QUEUE_FRAMES);
    assert_eq!(audio.free_write_slots(), 16);
    assert_eq!(e.lane_stats(0).unwrap().internal_ring_full, 0);
}

#[test]
fn attaching_bridging_and_destroying_give_every_frame_slot_back() {
    let e = started_virtual_engine(4);
    let (a, b) = e
        .create_call((DialogId(1), pcmu()), (DialogId(2), pcmu()))
        .unwrap();
    let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
    let mut audio = e.take_audio_handle(0).unwrap();
    let cap = audio.capacity();
    let frame = tone_frame(0, 1000.0);
    let mut pkt = Vec::new();
    let mut seq = 0u16;
    let mut push = |ing: &mut media_core::IngressHandle, id| {
        seq += 1;
        rtp(
            0,
            seq,
            160 * u32::from(seq),
            7,
            false,
            &ulaw_frame(seq.into()),
            &mut pkt,
        );
        let _ = ing.push(id, &pkt);
    };
    // Attaching A dissolves its bridge: B no longer sends A's audio.
    e.attach_audio(a.id).unwrap();
    for _ in 0..20 {
        push(&mut ing, a.id);
        audio.write(a.id, &frame).unwrap();
        e.step(2).unwrap();
        assert!(drain(&mut eg).iter().all(|p| p.session == a.id));
        drop(read_all(&mut audio));
    }
    assert!(e.session_stats(b.id).unwrap().tx_packets == 0);
    // Frames queued, then a bridge replaces the attachment: they come back unsent.
    for _ in 0..4 {
        audio.write(a.id, &frame).unwrap();
    }
    e.bridge(a.id, b.id).unwrap();
    let before = e.session_stats(a.id).unwrap().tx_packets;
    for _ in 0..10 {
        push(&mut ing, a.id);
        e.step(2).unwrap();
        drain(&mut eg);
    }
    assert_eq!(
        audio.pending(),
        0,
        "a bridged session's audio goes to its peer"
    );
    assert!(e.session_stats(b.id).unwrap().tx_packets > 0);
    assert_eq!(e.session_stats(a.id).unwrap().tx_packets, before);
    assert_eq!(audio.free_write_slots(), cap);
    // Attached again, frames queued and read frames in hand, then destroyed.
    e.attach_audio(a.id).unwrap();
    e.attach_audio(a.id).unwrap(); // twice: no change
    for _ in 0..6 {
        push(&mut ing, a.id);
        e.step(2).unwrap();
    }
    assert!(audio.pending() > 0);
    for _ in 0..5 {
        audio.write(a.id, &frame).unwrap();
    }
    e.detach_audio(a.id).unwrap();
    e.detach_audio(a.id).unwrap(); // twice: no change
    assert_eq!(audio.write(a.id, &frame), Err(Error::NotAttached(a.id)));
    e.step(2).unwrap();
    assert_eq!(audio.free_write_slots(), cap);
    // Written while attached, taken by the lane after the bridge or detach: the 4 before
    // the bridge and the 5 before the detach.
    assert_eq!(e.lane_stats(0).unwrap().app_in_dropped, 9);
    e.attach_audio(a.id).unwrap();
    // Frames in the session's queue (taken in by a tick) and frames still in the ring when
    // it is destroyed: both come back.
    for _ in 0..5 {
        audio.write(a.id, &frame).unwrap();
    }
    e.step(1).unwrap();
    assert!(audio.free_write_slots() < cap, "frames queued");
    for _ in 0..5 {
        audio.write(a.id, &frame).unwrap();
    }
    e.destroy_media_session(a.id).unwrap();
    e.destroy_media_session(b.id).unwrap();
    assert_eq!(audio.write(a.id, &frame), Err(Error::UnknownSession(a.id)));
    e.step(4).unwrap();
    // Frames waiting to be read hold their slots; reading gives them back.
    let queued = audio.pending();
    assert!(queued > 0);
    assert_eq!(audio.free_read_slots() + queued, cap);
    drop(read_all(&mut audio));
    assert_eq!(audio.free_write_slots(), cap);
    assert_eq!(audio.free_read_slots(), cap);
    assert_eq!(audio.pending(), 0);
    assert_eq!(e.lane_stats(0).unwrap().app_frames_unknown, 5);
    assert_eq!(e.free_session_slots(), 4);
    assert_eq!(e.lane_stats(0).unwrap().internal_ring_full, 0);
    for id in [a.id, b.id] {
        assert_eq!(e.attach_audio(id), Err(Error::UnknownSession(id)));
    }
    // The count catches a slot that never comes back: a frame read and leaked.
    let c = e.create_media_session(DialogId(3), pcmu()).unwrap();
    e.attach_audio(c.id).unwrap();
    for _ in 0..6 {
        push(&mut ing, c.id);
        e.step(2).unwrap();
    }
    std::mem::forget(audio.read().unwrap());
    drop(read_all(&mut audio));
    assert_eq!(audio.free_read_slots(), cap - 1);
}

#[test]
fn an_attached_sessions_digits_are_events_and_not_sent_back() {
    let e = started_virtual_engine(4);
    let mut p = pcmu();
    p.telephone_event_pt = PayloadType::new(101);
    p.telephone_event_send_pt = PayloadType::new(101);
    p.dsp.dtmf = Some(Default::default());
    let s = e.create_media_session(DialogId(1), p).unwrap();
    e.attach_audio(s.id).unwrap();
    let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
    let mut audio = e.take_audio_handle(0).unwrap();
    let mut pkt = Vec::new();
    let mut ev = [0u8; 4];
    let silence = [0xFFu8; 160];
    let mut out = Vec::new();
    for k in 0..40u16 {
        let ts = 160 * u32::from(k);
        if (10..16).contains(&k) {
            // Digit 5 for 120 ms over RFC 4733, the end sent three times.
            let end = k >= 15;
            EventPayload {
                event: 5,
                end,
                volume: 10,
                duration: 160 * (k - 9),
            }
            .write(&mut ev);
            rtp(101, k, 1600, 4, k == 10, &ev, &mut pkt);
            for _ in 0..if end { 3 } else { 1 } {
                ing.push(s.id, &pkt).unwrap();
            }
        } else {
            rtp(0, k, ts, 4, k == 0, &silence, &mut pkt);
            ing.push(s.id, &pkt).unwrap();
        }
        // The application answers with silence.
        audio.write(s.id, &[0i16; 160]).unwrap();
        e.step(2).unwrap();
        drop(read_all(&mut audio));
        out.extend(drain(&mut eg));
    }
    let digits: Vec<_> = e
        .events()
        .filter_map(|ev| match ev {
            EngineEvent::Dtmf {
                session,
                digit,
                source: DtmfSource::Rfc4733,
                ended_ms: Some(_),
            } => Some((session, digit)),
            _ => None,
        })
        .collect();
    assert_eq!(digits, vec![(s.id, '5')]);
    assert!(
        out.iter().all(|p| p.header.payload_type == 0),
        "no telephone-event sent back to the caller"
    );
    assert_eq!(out.len(), 40);
}

/// The application plays a prompt; the caller's line echoes it (10 ms, -10 dB, a short
/// dispersion). The session's canceller takes what the application sent as its
/// reference, so what the application reads is the caller's line with the echo removed.
#[test]
fn an_attached_sessions_canceller_removes_the_echo_of_the_prompt() {
    let reduction = |aec: bool| {
        let e = started_virtual_engine(4);
        let mut p = pcmu();
        p.dsp.aec = aec.then(|| AecConfig {
            tail_ms: 64,
            ..Default::default()
        });
        let s = e.create_media_session(DialogId(1), p).unwrap();
        e.attach_audio(s.id).unwrap();
        let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
        let mut audio = e.take_audio_handle(0).unwrap();
        let prompt = babble(8000 * 6, 11);
        let echo_path = [(80usize, 0.32f32), (88, 0.12), (102, -0.08)];
        let mut line: Vec<i16> = Vec::new(); // what the caller's line has played
        let (mut echo_in, mut echo_out) = (0.0f64, 0.0f64);
        let (mut pkt, mut payload) = (Vec::new(), [0u8; 160]);
        let frames = prompt.len() / 160;
        for k in 0..frames {
            audio.write(s.id, &prompt[k * 160..(k + 1) * 160]).unwrap();
            let mut echo = [0i16; 160];
            line_echo(&line, &echo_path, &mut echo);
            g711::ulaw_encode(&echo, &mut payload);
            rtp(0, k as u16, 160 * k as u32, 6, k == 0, &payload, &mut pkt);
            ing.push(s.id, &pkt).unwrap();
            e.step(2).unwrap();
            for p in drain(&mut eg) {
                let mut f = [0i16; 160];
                g711::ulaw_decode(p.payload(), &mut f);
                line.extend_from_slice(&f);
            }
            for (_, pcm) in read_all(&mut audio) {
                if k >= frames - 50 {
                    echo_out += pcm.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>();
                }
            }
            if k >= frames - 50 {
                echo_in += echo.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>();
            }
        }
        (
            10.0 * (echo_in / echo_out.max(1.0)).log10(),
            e.session_quality(s.id).unwrap().echo_erle_db,
        )
    };
    let (with, erle) = reduction(true);
    let (without, none) = reduction(false);
    eprintln!("prompt echo reduced {with:.1} dB (reported ERLE {erle:?}), {without:.1} dB without");
    assert!(with >= 30.0, "echo reduced {with:.1} dB with the canceller");
    assert!(without.abs() < 3.0, "{without:.1} dB without");
    assert_eq!(none, None);
    let erle = erle.expect("the canceller reports its ERLE");
    assert!(
        (erle - with).abs() < 5.0,
        "reported {erle:.1} dB, measured {with:.1}"
    );
}

/// The application plays a prompt for 3 s, then stops writing (an underrun: nothing is
/// sent) while the caller talks. The canceller must take the silence as its reference, not
/// the last prompt frame read again every period, which it would "cancel" from the caller's
/// voice (19.2 dB tone SNR before that was fixed, 1.7 dB with a 2 s prompt; 33.1 dB now,
/// as without a canceller).
#[test]
fn an_application_that_stops_writing_leaves_the_callers_voice_intact() {
    let e = started_virtual_engine(4);
    let mut p = pcmu();
    p.dsp.aec = Some(AecConfig::default());
    let s = e.create_media_session(DialogId(1), p).unwrap();
    e.attach_audio(s.id).unwrap();
    let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
    let mut audio = e.take_audio_handle(0).unwrap();
    let prompt = babble(8000 * 3, 5);
    let echo_path = [(80usize, 0.32f32), (88, 0.12)];
    let mut line: Vec<i16> = Vec::new();
    let (mut pkt, mut payload) = (Vec::new(), [0u8; 160]);
    let mut heard = Vec::new();
    for k in 0..250usize {
        if k < 150 {
            audio.write(s.id, &prompt[k * 160..(k + 1) * 160]).unwrap();
        }
        // The caller: the echo of what its line played, and from 3 s its voice (a tone).
        let mut up = [0i16; 160];
        line_echo(&line, &echo_path, &mut up);
        if k >= 150 {
            for (x, t) in up.iter_mut().zip(tone_frame(k, 6000.0)) {
                *x = x.saturating_add(t);
            }
        }
        g711::ulaw_encode(&up, &mut payload);
        rtp(0, k as u16, 160 * k as u32, 6, k == 0, &payload, &mut pkt);
        ing.push(s.id, &pkt).unwrap();
        e.step(2).unwrap();
        // The line plays what it is sent, and silence in a period it is sent nothing.
        let mut f = [0i16; 160];
        for p in drain(&mut eg) {
            g711::ulaw_decode(p.payload(), &mut f);
        }
        line.extend_from_slice(&f);
        for (_, pcm) in read_all(&mut audio) {
            if k >= 200 {
                heard.extend_from_slice(&pcm);
            }
        }
    }
    let (snr, amp) = tone_fit(&heard, 1000.0, 8000.0);
    eprintln!("caller's tone after the prompt stopped: SNR {snr:.1} dB, amplitude {amp:.0}");
    assert!(
        snr > 30.0 && amp > 4500.0,
        "SNR {snr:.1} dB, amplitude {amp:.0}"
    );
    assert!(e.lane_stats(0).unwrap().app_underruns >= 100);
}

/// A caller holds a key on leg A of a call (RFC 4733 begin, no end yet) while the gateway
/// attaches leg B to an IVR: B's sender, which was forwarding the digit, gets its end and
/// goes on to send what the application writes, instead of telephone-event forever (which
/// it did before: found in review). When the source, A, is attached instead, B is left
/// with no source: it still sends the digit's end (its own frame periods go on without a
/// source; before, it never did and its peer had to time the digit out), then nothing.
#[test]
fn a_digit_held_across_an_attachment_ends_at_the_peer() {
    for attach_destination in [true, false] {
        let e = started_virtual_engine(4);
        let mut p = pcmu();
        p.telephone_event_pt = PayloadType::new(101);
        p.telephone_event_send_pt = PayloadType::new(101);
        let (a, b) = e
            .create_call((DialogId(1), p.clone()), (DialogId(2), p))
            .unwrap();
        let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
        let mut audio = e.take_audio_handle(0).unwrap();
        let (mut pkt, mut ev) = (Vec::new(), [0u8; 4]);
        let mut after = Vec::new();
        for k in 0..60u16 {
            if k < 10 {
                ulaw_packet(k, 3, &mut pkt);
            } else {
                // Digit 5 held from 200 ms on: begin packets, never an end.
                EventPayload {
                    event: 5,
                    end: false,
                    volume: 10,
                    duration: 160 * (k - 9),
                }
                .write(&mut ev);
                rtp(101, k, 1600, 3, k == 10, &ev, &mut pkt);
            }
            ing.push(a.id, &pkt).unwrap();
            if k == 25 {
                let held = drain(&mut eg);
                assert!(
                    held.iter()
                        .any(|p| p.session == b.id && p.header.payload_type == 101),
                    "B forwards the held digit"
                );
                e.attach_audio(if attach_destination { b.id } else { a.id })
                    .unwrap();
            }
            if k >= 25 && attach_destination {
                audio.write(b.id, &tone_frame(k.into(), 3000.0)).unwrap();
            }
            e.step(2).unwrap();
            drop(read_all(&mut audio));
            if k > 25 {
                after.extend(drain(&mut eg).into_iter().filter(|p| p.session == b.id));
            }
        }
        let events: Vec<_> = after
            .iter()
            .filter(|p| p.header.payload_type == 101)
            .map(|p| EventPayload::parse(p.payload()).unwrap())
            .collect();
        let audio_after = after.iter().filter(|p| p.header.payload_type == 0).count();
        if attach_destination {
            // B ends the digit (end bit set; RFC 4733 sends the end three times), then
            // sends what the application writes.
            assert!(
                !events.is_empty() && events.len() <= 6 && events.last().unwrap().end,
                "B's events after its attachment: {events:?}"
            );
            assert!(
                audio_after >= 25,
                "B sends the application's frames: {audio_after}"
            );
        } else {
            // B has no source any more: it ends the digit (the end three times, RFC 4733
            // §2.5.1.4), then sends nothing.
            let ends = events.iter().filter(|p| p.end).count();
            assert!(
                ends == 3 && events.len() <= 6 && events.last().unwrap().end,
                "B's events after A's attachment: {events:?}"
            );
            assert_eq!(audio_after, 0);
        }
    }
}

/// The same with the digit detected in A's audio (in-band, forwarded to B as RFC 4733):
/// held across B's attachment, B's sender still gets its end.
#[test]
fn an_in_band_digit_held_across_an_attachment_ends_at_the_peer() {
    use media_core::processing::audio::dtmf_detector::{Digit, DtmfGenerator, DtmfGeneratorConfig};
    let e = started_virtual_engine(4);
    let mut pa = pcmu();
    pa.dsp.dtmf = Some(Default::default());
    let mut pb = pcmu();
    pb.telephone_event_send_pt = PayloadType::new(101);
    let (a, b) = e.create_call((DialogId(1), pa), (DialogId(2), pb)).unwrap();
    let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
    let mut audio = e.take_audio_handle(0).unwrap();
    let mut generator = DtmfGenerator::new(DtmfGeneratorConfig::default()).unwrap();
    generator.start(Digit::from_char('8').unwrap(), -10.0, 5_000);
    let (mut pkt, mut pcm, mut payload) = (Vec::new(), [0i16; 160], [0u8; 160]);
    let mut before = 0;
    let mut after = Vec::new();
    for k in 0..80u16 {
        // Digit 8 held for the whole run (5 s of tone).
        generator.fill(&mut pcm);
        g711::ulaw_encode(&pcm, &mut payload);
        rtp(0, k, 160 * u32::from(k), 3, k == 0, &payload, &mut pkt);
        ing.push(a.id, &pkt).unwrap();
        if k == 30 {
            e.attach_audio(b.id).unwrap();
        }
        if k >= 30 {
            audio.write(b.id, &tone_frame(k.into(), 3000.0)).unwrap();
        }
        e.step(2).unwrap();
        drop(read_all(&mut audio));
        for p in drain(&mut eg).into_iter().filter(|p| p.session == b.id) {
            if k <= 30 {
                before += usize::from(p.header.payload_type == 101);
            } else {
                after.push(p);
            }
        }
    }
    assert!(
        before > 5,
        "B forwarded the held digit as RFC 4733 ({before} packets)"
    );
    let events: Vec<_> = after
        .iter()
        .filter(|p| p.header.payload_type == 101)
        .map(|p| EventPayload::parse(p.payload()).unwrap())
        .collect();
    assert!(
        !events.is_empty() && events.len() <= 6 && events.last().unwrap().end,
        "B's events after its attachment: {events:?}"
    );
    let audio_after = after.iter().filter(|p| p.header.payload_type == 0).count();
    assert!(
        audio_after >= 40,
        "B sends the application's frames: {audio_after}"
    );
}

/// On real lane threads, split across four (the decode stage takes application frames as
/// they come, while the attaching route waits for the jitter stage's next tick): frames
/// written as soon as `attach_audio` returns are the session's, not dropped.
#[test]
fn frames_written_right_after_attaching_are_sent_on_real_threads() {
    for topology in [media_core::Topology::Split, media_core::Topology::Fused] {
        let e = MediaEngine::new(EngineConfig {
            topology,
            sessions_per_lane: 4,
            raise_priority: false,
            ..Default::default()
        })
        .unwrap();
        let mut audio = e.take_audio_handle(0).unwrap();
        let (_ing, mut eg) = e.take_rtp_handles(0).unwrap();
        e.start().unwrap();
        let mut sent = 0;
        for round in 0..5u64 {
            let s = e.create_media_session(DialogId(round + 1), pcmu()).unwrap();
            e.attach_audio(s.id).unwrap();
            for k in 0..4 {
                audio.write(s.id, &tone_frame(k, 3000.0)).unwrap();
            }
            std::thread::sleep(std::time::Duration::from_millis(150));
            sent += drain(&mut eg).iter().filter(|p| p.session == s.id).count();
            e.destroy_media_session(s.id).unwrap();
        }
        let lane = e.lane_stats(0).unwrap();
        e.stop().unwrap();
        assert_eq!(
            lane.app_in_dropped + lane.app_frames_unknown,
            0,
            "{topology:?}: {lane:?}"
        );
        assert_eq!(sent, 20, "{topology:?}: every frame written was sent");
    }
}

/// A re-INVITE from PCMU to G.722 while the application has PCMU frames queued: those are
/// dropped (counted), and its G.722 frames go out from the next period, not after the old
/// queue has drained one refused frame per period.
#[test]
fn a_reinvite_drops_the_frames_written_for_the_old_codec() {
    let e = started_virtual_engine(4);
    let s = e.create_media_session(DialogId(1), pcmu()).unwrap();
    e.attach_audio(s.id).unwrap();
    let (_ing, mut eg) = e.take_rtp_handles(0).unwrap();
    let mut audio = e.take_audio_handle(0).unwrap();
    for k in 0..6 {
        audio.write(s.id, &tone_frame(k, 3000.0)).unwrap();
    }
    e.step(2).unwrap();
    assert_eq!(drain(&mut eg).len(), 1, "one PCMU frame sent, five queued");
    let g722 = MediaSessionParams::new(CodecSpec::G722, Ptime::MS_20);
    assert_eq!(g722.frame_samples(), 320);
    e.update_media_session(s.id, g722).unwrap();
    let wide = [500i16; 320];
    let mut sent = Vec::new();
    for _ in 0..5 {
        audio.write(s.id, &wide).unwrap();
        e.step(2).unwrap();
        sent.extend(drain(&mut eg));
    }
    assert_eq!(
        sent.len(),
        5,
        "a G.722 packet every period from the update on"
    );
    assert!(sent.iter().all(|p| p.header.payload_type == 9));
    assert_eq!(e.lane_stats(0).unwrap().app_in_dropped, 5);
    assert_eq!(e.lane_stats(0).unwrap().app_underruns, 0);
}
