//! Voice processing inside the engine: the DSP chain on real lanes (in-band DTMF becomes
//! engine events, the echo canceller removes the echo of what a leg is sent, the VAD reports
//! talkspurts, bad settings are typed errors), on the virtual clock.

mod common;

use common::{babble, background_noise, drain, line_echo, rtp, started_virtual_engine, Out};
use media_core::codec::audio::g711;
use media_core::processing::audio::dtmf_detector::{Digit, DtmfGenerator, DtmfGeneratorConfig};
use media_core::processing::audio::{aec::AecConfig, DspConfig};
use media_core::runtime::msg::DtmfSource;
use media_core::{
    CodecSpec, DialogId, EngineEvent, Error, MediaEngine, MediaSessionParams, PayloadType, Ptime,
};

fn engine() -> MediaEngine {
    started_virtual_engine(8)
}

fn with_dsp(dsp: DspConfig) -> MediaSessionParams {
    let mut p = MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_20);
    p.dsp = dsp;
    p
}

#[test]
fn in_band_dtmf_in_received_audio_becomes_engine_events() {
    let e = engine();
    let dsp = DspConfig {
        dtmf: Some(Default::default()),
        ..Default::default()
    };
    let (a, _b) = e
        .create_call(
            (DialogId(1), with_dsp(dsp)),
            (
                DialogId(2),
                MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_20),
            ),
        )
        .unwrap();
    let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
    let mut generator = DtmfGenerator::new(DtmfGeneratorConfig::default()).unwrap();
    let digits = "4#7";
    let mut pkt = Vec::new();
    let mut pcm = [0i16; 160];
    let mut payload = [0u8; 160];
    let mut queue = digits.chars();
    let mut pause = 5;
    for k in 0..80u32 {
        // 100 ms digits at -10 dBm0 separated by 100 ms pauses.
        if !generator.fill(&mut pcm) {
            if pause > 0 {
                pause -= 1;
            } else if let Some(d) = queue.next() {
                generator.start(Digit::from_char(d).unwrap(), -10.0, 100);
                pause = 5;
                generator.fill(&mut pcm);
            }
        }
        g711::ulaw_encode(&pcm, &mut payload);
        rtp(0, k as u16, 160 * k, 3, k == 0, &payload, &mut pkt);
        ing.push(a.id, &pkt).unwrap();
        e.step(2).unwrap();
        drain(&mut eg);
    }
    let mut began = String::new();
    let mut durations = Vec::new();
    while let Some(ev) = e.poll_event() {
        if let EngineEvent::Dtmf {
            session,
            digit,
            source,
            ended_ms,
        } = ev
        {
            assert_eq!((session, source), (a.id, DtmfSource::InBand));
            match ended_ms {
                None => began.push(digit),
                Some(ms) => durations.push(ms),
            }
        }
    }
    assert_eq!(began, digits);
    assert_eq!(durations.len(), 3);
    for ms in durations {
        assert!((80..=120).contains(&ms), "{ms} ms");
    }
}

/// A phone in "in-band and RFC 4733" mode sends each digit both ways: events, and the
/// tone left in its audio. With in-band detection on, each digit is reported once, from
/// its events (in review, every digit came twice, once per source, and the in-band copy
/// was forwarded to the bridged leg too).
#[test]
fn a_digit_sent_both_as_events_and_in_band_is_reported_once() {
    use media_core::codec::audio::telephone_event::{digit_to_event, DtmfSender};
    let e = engine();
    let mut pa = with_dsp(DspConfig {
        dtmf: Some(Default::default()),
        ..Default::default()
    });
    pa.telephone_event_pt = PayloadType::new(101);
    let (a, _b) = e
        .create_call(
            (DialogId(1), pa),
            (
                DialogId(2),
                MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_20),
            ),
        )
        .unwrap();
    let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
    let mut generator = DtmfGenerator::new(DtmfGeneratorConfig::default()).unwrap();
    let mut tx = DtmfSender::new(160).unwrap();
    let digits = "4#7";
    let (mut pkt, mut pcm, mut payload, mut ev) = (Vec::new(), [0i16; 160], [0u8; 160], [0u8; 4]);
    let mut queue = digits.chars();
    let (mut pause, mut seq) = (5, 0u16);
    for k in 0..80u32 {
        // 100 ms digits separated by 100 ms pauses, as tones and as events.
        if !generator.fill(&mut pcm) {
            if pause > 0 {
                pause -= 1;
            } else if let Some(d) = queue.next() {
                generator.start(Digit::from_char(d).unwrap(), -10.0, 100);
                tx.start(digit_to_event(d).unwrap(), 10, Some(800)).unwrap();
                pause = 5;
                generator.fill(&mut pcm);
            }
        }
        g711::ulaw_encode(&pcm, &mut payload);
        rtp(0, seq, 160 * k, 3, k == 0, &payload, &mut pkt);
        ing.push(a.id, &pkt).unwrap();
        seq = seq.wrapping_add(1);
        if let Some(h) = tx.poll(160 * k, &mut ev) {
            rtp(101, seq, h.timestamp, 3, h.marker, &ev, &mut pkt);
            ing.push(a.id, &pkt).unwrap();
            seq = seq.wrapping_add(1);
        }
        e.step(2).unwrap();
        drain(&mut eg);
    }
    let (mut began, mut ended) = (String::new(), 0);
    while let Some(ev) = e.poll_event() {
        if let EngineEvent::Dtmf {
            session,
            digit,
            source,
            ended_ms,
        } = ev
        {
            assert_eq!(session, a.id);
            assert_eq!(source, DtmfSource::Rfc4733, "{digit} {ended_ms:?}");
            match ended_ms {
                None => began.push(digit),
                Some(_) => ended += 1,
            }
        }
    }
    assert_eq!(began, digits);
    assert_eq!(ended, 3);

    // A re-INVITE drops telephone-event (a transfer to a phone that signals in-band
    // only): in-band digits are reported again. In review the events received before it
    // kept in-band detection silent for the rest of the call.
    e.update_media_session(
        a.id,
        with_dsp(DspConfig {
            dtmf: Some(Default::default()),
            ..Default::default()
        }),
    )
    .unwrap();
    generator.start(Digit::from_char('9').unwrap(), -10.0, 100);
    for k in 80..100u32 {
        pcm.fill(0);
        generator.fill(&mut pcm);
        g711::ulaw_encode(&pcm, &mut payload);
        rtp(0, seq, 160 * k, 3, false, &payload, &mut pkt);
        ing.push(a.id, &pkt).unwrap();
        seq = seq.wrapping_add(1);
        e.step(2).unwrap();
        drain(&mut eg);
    }
    let after: Vec<_> = std::iter::from_fn(|| e.poll_event())
        .filter_map(|ev| match ev {
            EngineEvent::Dtmf {
                digit,
                source,
                ended_ms: None,
                ..
            } => Some((digit, source)),
            _ => None,
        })
        .collect();
    assert_eq!(after, [('9', DtmfSource::InBand)]);
}

/// An Opus call relayed between sessions at different Opus rates (A 48 kHz, B 8 kHz with
/// an echo canceller): B's canceller takes what B is sent as its reference at B's rate,
/// and removes the echo of B's line. In review, the relayed frames' 48 kHz audio went to
/// the 8 kHz canceller unconverted (the last 3 ms of each frame read as 20 ms), and the
/// echo stayed.
#[test]
fn an_opus_relay_across_opus_rates_feeds_the_echo_canceller_at_its_rate() {
    use media_core::codec::OpusSettings;
    use media_core::SampleRate;
    let e = engine();
    let mut pb = MediaSessionParams::new(CodecSpec::OPUS, Ptime::MS_20);
    pb.opus = OpusSettings {
        sample_rate: SampleRate::HZ_8000,
        ..OpusSettings::default()
    };
    pb.dsp.aec = Some(AecConfig {
        tail_ms: 64,
        ..Default::default()
    });
    let (a, b) = e
        .create_call(
            (
                DialogId(1),
                MediaSessionParams::new(CodecSpec::OPUS, Ptime::MS_20),
            ),
            (DialogId(2), pb),
        )
        .unwrap();
    let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
    let mut enc_a =
        opus::Encoder::new(48000, opus::Channels::Mono, opus::Application::Voip).unwrap();
    let mut enc_line =
        opus::Encoder::new(8000, opus::Channels::Mono, opus::Application::Voip).unwrap();
    enc_line.set_bitrate(opus::Bitrate::Bits(32_000)).unwrap();
    let mut dec_line = opus::Decoder::new(8000, opus::Channels::Mono).unwrap();
    let talk = babble(48000 * 6, 7);
    let mut to_b: Vec<i16> = Vec::new();
    let (mut pkt, mut payload) = (Vec::new(), vec![0u8; 400]);
    let echo_path = [(80usize, 0.32f32), (88, 0.12), (102, -0.08)];
    let frames = talk.len() / 960;
    for k in 0..frames {
        let n = enc_a
            .encode(&talk[k * 960..(k + 1) * 960], &mut payload)
            .unwrap();
        rtp(
            111,
            k as u16,
            960 * k as u32,
            1,
            k == 0,
            &payload[..n],
            &mut pkt,
        );
        ing.push(a.id, &pkt).unwrap();
        // B's line: the echo of what it was sent, coded at 8 kHz.
        let mut echo = [0i16; 160];
        line_echo(&to_b, &echo_path, &mut echo);
        let n = enc_line.encode(&echo, &mut payload).unwrap();
        rtp(
            111,
            k as u16,
            960 * k as u32,
            2,
            k == 0,
            &payload[..n],
            &mut pkt,
        );
        ing.push(b.id, &pkt).unwrap();
        e.step(2).unwrap();
        for p in drain(&mut eg) {
            if p.session == b.id {
                let mut f = [0i16; 160];
                let got = dec_line.decode(p.payload(), &mut f, false).unwrap_or(0);
                to_b.extend_from_slice(&f[..got]);
            }
        }
    }
    let erle = e.session_quality(b.id).unwrap().echo_erle_db;
    assert!(erle.is_some_and(|d| d > 6.0), "ERLE {erle:?}");
}

/// Leg B's line echoes what B is sent (10 ms after the frame it arrived in, -10 dB, a
/// short dispersion); B's echo
/// canceller must remove it from what B sends on to A. Returns the echo power reduction (dB)
/// over the last second, A talking alone, and the ERLE B's quality snapshot reports.
fn echo_reduction_db(aec: bool) -> (f64, Option<f64>) {
    let e = engine();
    let dsp_b = DspConfig {
        aec: aec.then(|| AecConfig {
            tail_ms: 64,
            ..Default::default()
        }),
        ..Default::default()
    };
    let (a, b) = e
        .create_call(
            (
                DialogId(1),
                MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_20),
            ),
            (DialogId(2), with_dsp(dsp_b)),
        )
        .unwrap();
    let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
    let talk = babble(8000 * 6, 7);
    let mut to_b: Vec<i16> = Vec::new(); // what B's line receives, on its timeline
    let mut pkt = Vec::new();
    let mut payload = [0u8; 160];
    let (mut echo_in, mut echo_out) = (0.0f64, 0.0f64);
    let echo_path = [(80usize, 0.32f32), (88, 0.12), (102, -0.08)];
    let frames = talk.len() / 160;
    for k in 0..frames {
        g711::ulaw_encode(&talk[k * 160..(k + 1) * 160], &mut payload);
        rtp(0, k as u16, 160 * k as u32, 1, k == 0, &payload, &mut pkt);
        ing.push(a.id, &pkt).unwrap();
        // B's far end: the echo of what B was sent.
        // The line plays what it is sent as it arrives; what it returns in this frame is
        // the echo of its last frame's audio and earlier (timeline of `to_b`).
        let mut echo = [0i16; 160];
        line_echo(&to_b, &echo_path, &mut echo);
        g711::ulaw_encode(&echo, &mut payload);
        rtp(0, k as u16, 160 * k as u32, 2, k == 0, &payload, &mut pkt);
        ing.push(b.id, &pkt).unwrap();
        e.step(2).unwrap();
        for p in drain(&mut eg) {
            let mut f = [0i16; 160];
            g711::ulaw_decode(p.payload(), &mut f);
            if p.session == b.id {
                to_b.extend_from_slice(&f);
            } else if k >= frames - 50 {
                // Sent to A: B's echo after the canceller (last second).
                echo_out += f.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>();
            }
        }
        if k >= frames - 50 {
            echo_in += echo.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>();
        }
    }
    let erle = e.session_quality(b.id).unwrap().echo_erle_db;
    // The Prometheus export carries it for B alone.
    let text = e.render_prometheus(media_core::engine::PrometheusOptions { per_session: true });
    let samples = text
        .lines()
        .filter(|l| l.starts_with("media_core_session_echo_erle_db{"))
        .collect::<Vec<_>>();
    let expected = usize::from(erle.is_some());
    assert_eq!(samples.len(), expected, "{samples:?}");
    // Its family declared once, before its samples.
    for head in [
        "# HELP media_core_session_echo_erle_db ",
        "# TYPE media_core_session_echo_erle_db gauge",
    ] {
        let at: Vec<_> = text.match_indices(head).map(|(i, _)| i).collect();
        assert_eq!(at.len(), expected, "{head}");
        if let (Some(&i), Some(line)) = (at.first(), samples.first()) {
            assert!(
                i < text.find(line).unwrap_or(0),
                "{head} before the samples"
            );
        }
    }
    if let Some(line) = samples.first() {
        assert!(
            line.contains(&format!("slot=\"{}\"", b.id.slot())),
            "{line}"
        );
    }
    (10.0 * (echo_in / echo_out.max(1.0)).log10(), erle)
}

#[test]
fn the_echo_canceller_removes_the_echo_of_what_a_leg_is_sent() {
    let (without, no_erle) = echo_reduction_db(false);
    let (with, erle) = echo_reduction_db(true);
    // Without the canceller the echo passes (about 0 dB, PCMU noise aside).
    assert!(without.abs() < 3.0, "without AEC: {without:.1} dB");
    assert!(with > 20.0, "with AEC: {with:.1} dB of echo removed");
    // What the operator reads: the canceller's own meter, none without one.
    assert_eq!(no_erle, None);
    let erle = erle.expect("a canceller reports its ERLE");
    println!("PCMU leg: echo reduced {with:.1} dB, reported ERLE {erle:.1} dB");
    assert!(
        (erle - with).abs() < 5.0,
        "reported ERLE {erle:.1} dB, measured {with:.1} dB"
    );
}

/// As [`echo_reduction_db`] with B an Opus leg (48 kHz, so its canceller runs 20 ms blocks
/// with the default 128 ms tail): B's line decodes what it is sent, echoes it (10 ms,
/// -10 dB, a short dispersion, at 48 kHz) and sends the echo back Opus-encoded. Returns
/// the echo power reduction (dB, mean square per sample) over the last second, and the
/// ERLE B's quality snapshot reports.
fn opus_echo_reduction_db(aec: bool) -> (f64, Option<f64>) {
    let e = engine();
    let mut b_params = MediaSessionParams::new(CodecSpec::OPUS, Ptime::MS_20);
    b_params.dsp = DspConfig {
        aec: aec.then(AecConfig::default),
        ..Default::default()
    };
    let (a, b) = e
        .create_call(
            (
                DialogId(1),
                MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_20),
            ),
            (DialogId(2), b_params),
        )
        .unwrap();
    let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
    let mut line_enc =
        opus::Encoder::new(48000, opus::Channels::Mono, opus::Application::Voip).unwrap();
    let mut line_dec = opus::Decoder::new(48000, opus::Channels::Mono).unwrap();
    let talk = babble(8000 * 6, 7);
    let mut to_b: Vec<i16> = Vec::new(); // what B's line plays, 48 kHz
    let mut pkt = Vec::new();
    let mut payload = [0u8; 160];
    let mut opus_out = [0u8; 1500];
    let (mut echo_in, mut echo_out) = (0.0f64, 0.0f64);
    let (mut in_samples, mut out_samples) = (0usize, 0usize);
    let echo_path = [(480usize, 0.32f32), (528, 0.12), (612, -0.08)];
    let frames = talk.len() / 160;
    for k in 0..frames {
        g711::ulaw_encode(&talk[k * 160..(k + 1) * 160], &mut payload);
        rtp(0, k as u16, 160 * k as u32, 1, k == 0, &payload, &mut pkt);
        ing.push(a.id, &pkt).unwrap();
        let mut echo = [0i16; 960];
        line_echo(&to_b, &echo_path, &mut echo);
        let len = line_enc.encode(&echo, &mut opus_out).unwrap();
        rtp(
            111,
            k as u16,
            960 * k as u32,
            2,
            k == 0,
            &opus_out[..len],
            &mut pkt,
        );
        ing.push(b.id, &pkt).unwrap();
        e.step(2).unwrap();
        for p in drain(&mut eg) {
            if p.session == b.id {
                let mut f = [0i16; 960];
                let n = line_dec.decode(p.payload(), &mut f, false).unwrap();
                to_b.extend_from_slice(&f[..n]);
            } else if k >= frames - 50 {
                // Sent to A: B's echo after the canceller (last second).
                let mut f = [0i16; 160];
                g711::ulaw_decode(p.payload(), &mut f);
                echo_out += f.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>();
                out_samples += f.len();
            }
        }
        if k >= frames - 50 {
            echo_in += echo.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>();
            in_samples += echo.len();
        }
    }
    assert!(in_samples > 0 && out_samples > 0, "echo flowed");
    let mean_in = echo_in / in_samples as f64;
    let mean_out = (echo_out / out_samples as f64).max(1e-3);
    let erle = e.session_quality(b.id).unwrap().echo_erle_db;
    (10.0 * (mean_in / mean_out).log10(), erle)
}

/// The 48 kHz canceller in 20 ms blocks (an Opus leg), in a lane, bridged to PCMU.
#[test]
fn the_echo_canceller_removes_the_echo_on_an_opus_leg() {
    let (without, no_erle) = opus_echo_reduction_db(false);
    let (with, erle) = opus_echo_reduction_db(true);
    println!(
        "Opus leg: echo reduced {without:.1} dB without, {with:.1} dB with the canceller \
         (reported ERLE {erle:?})"
    );
    assert!(without.abs() < 3.0, "without AEC: {without:.1} dB");
    assert!(with > 20.0, "with AEC: {with:.1} dB of echo removed");
    assert_eq!(no_erle, None);
    assert!(
        erle.is_some_and(|e| (e - with).abs() < 5.0),
        "reported ERLE {erle:?}, measured {with:.1} dB"
    );
}

/// Echo cancellers swapped in and out by commands while frames flow: the DSP stage keeps a
/// count of the chains that take an echo reference (it decides whether the stage prefetches
/// reference writes), and in builds with debug assertions it checks that count against a
/// recount after every command, so a count out of step fails this test there. Each change
/// is a different transition: a create with and without a canceller, an update adding one,
/// an update removing one, an update keeping one, a destroy of a session with one and of
/// one without.
#[test]
fn echo_cancellers_swapped_in_and_out_by_commands_keep_the_reference_count() {
    let e = engine();
    let aec = || {
        with_dsp(DspConfig {
            aec: Some(AecConfig {
                tail_ms: 64,
                ..Default::default()
            }),
            ..Default::default()
        })
    };
    let plain = || MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_20);
    let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
    // Each leg its own talker (a leg whose input were the audio it sends would have it
    // cancelled as echo, and its peer's canceller then a silent reference).
    let talkers: Vec<Vec<i16>> = (0..4).map(|i| babble(8000 * 4, 5 + i)).collect();
    let mut payload = [0u8; 160];
    let mut pkt = Vec::new();
    let mut seq = 0u16;
    let mut sent = 0usize;
    let mut got = 0usize;
    // 1.5 s a phase: the ERLE a canceller reports is its last whole second's.
    let mut run = |ids: &[media_core::SessionId], eg: &mut media_core::EgressHandle| {
        for _ in 0..75 {
            for (i, &id) in ids.iter().enumerate() {
                let talk = &talkers[i % talkers.len()];
                let at = (usize::from(seq) * 160) % (talk.len() - 160);
                g711::ulaw_encode(&talk[at..at + 160], &mut payload);
                rtp(
                    0,
                    seq,
                    160 * u32::from(seq),
                    10 + i as u32,
                    seq == 0,
                    &payload,
                    &mut pkt,
                );
                ing.push(id, &pkt).unwrap();
                sent += 1;
            }
            seq = seq.wrapping_add(1);
            e.step(2).unwrap();
            got += drain(eg).len();
        }
    };
    let (a, b) = e
        .create_call((DialogId(1), plain()), (DialogId(2), aec()))
        .unwrap();
    // The ERLE the quality snapshot reports follows: present while a canceller runs.
    let erle = |id| e.session_quality(id).unwrap().echo_erle_db;
    run(&[a.id, b.id], &mut eg);
    assert_eq!((erle(a.id).is_some(), erle(b.id).is_some()), (false, true));
    e.update_media_session(a.id, aec()).unwrap(); // adds one
    run(&[a.id, b.id], &mut eg);
    assert_eq!((erle(a.id).is_some(), erle(b.id).is_some()), (true, true));
    e.update_media_session(b.id, plain()).unwrap(); // removes one
    run(&[a.id, b.id], &mut eg);
    assert_eq!((erle(a.id).is_some(), erle(b.id).is_some()), (true, false));
    e.update_media_session(a.id, aec()).unwrap(); // keeps one
    run(&[a.id, b.id], &mut eg);
    assert!(erle(a.id).is_some());
    let (c, d) = e
        .create_call((DialogId(3), aec()), (DialogId(4), aec()))
        .unwrap();
    run(&[a.id, b.id, c.id, d.id], &mut eg);
    assert!(erle(c.id).is_some() && erle(d.id).is_some());
    e.destroy_media_session(a.id).unwrap(); // with a canceller
    e.destroy_media_session(b.id).unwrap(); // without
    run(&[c.id, d.id], &mut eg);
    // A plain call on the slots just freed (reused last-in first-out): nothing of A's
    // figure stays with its slot.
    let (f, g) = e
        .create_call((DialogId(5), plain()), (DialogId(6), plain()))
        .unwrap();
    assert!(
        [f.id.slot(), g.id.slot()].contains(&a.id.slot()),
        "the new call reuses A's slot"
    );
    assert_eq!((erle(f.id), erle(g.id)), (None, None));
    run(&[c.id, d.id, f.id, g.id], &mut eg);
    assert_eq!((erle(f.id), erle(g.id)), (None, None));
    e.destroy_media_session(f.id).unwrap();
    e.destroy_media_session(g.id).unwrap();
    e.destroy_media_session(c.id).unwrap();
    e.destroy_media_session(d.id).unwrap();
    e.step(4).unwrap();
    // Frames went through every configuration (each leg sends what the other receives,
    // after the jitter buffer's start-up delay).
    assert!(got > sent / 2, "{got} of {sent} packets sent on");
}

#[test]
fn voice_activity_is_reported_as_talkspurt_events() {
    let e = engine();
    let dsp = DspConfig {
        vad: Some(Default::default()),
        ..Default::default()
    };
    let (a, _b) = e
        .create_call(
            (DialogId(1), with_dsp(dsp)),
            (
                DialogId(2),
                MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_20),
            ),
        )
        .unwrap();
    let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
    let talk = babble(8000, 3);
    let mut pkt = Vec::new();
    let mut payload = [0u8; 160];
    // 1 s silence, 1 s talk, 1 s silence.
    for k in 0..150usize {
        let pcm: Vec<i16> = if (50..100).contains(&k) {
            talk[(k - 50) * 160..(k - 49) * 160].to_vec()
        } else {
            vec![0; 160]
        };
        g711::ulaw_encode(&pcm, &mut payload);
        rtp(0, k as u16, 160 * k as u32, 4, k == 0, &payload, &mut pkt);
        ing.push(a.id, &pkt).unwrap();
        e.step(2).unwrap();
        drain(&mut eg);
    }
    let mut seen = Vec::new();
    while let Some(ev) = e.poll_event() {
        if let EngineEvent::Talkspurt { session, speaking } = ev {
            assert_eq!(session, a.id);
            seen.push(speaking);
        }
    }
    assert_eq!(seen, [true, false]);
}

#[test]
fn dtx_sends_comfort_noise_sid_frames_through_the_peers_silence_and_resumes_with_a_marker() {
    use media_core::codec::audio::comfort_noise::CnPayload;
    let e = engine();
    // A's audio is judged by A's detector; B sends it, with DTX on (CN on PT 13).
    let a_params = with_dsp(DspConfig {
        vad: Some(Default::default()),
        ..Default::default()
    });
    let mut b_params = MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_20);
    b_params.comfort_noise_send_pt = PayloadType::new(13);
    b_params.dtx = true;
    let (a, b) = e
        .create_call((DialogId(1), a_params), (DialogId(2), b_params))
        .unwrap();
    let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
    let talk = babble(8000 * 2, 5);
    // Quiet background noise (about -66 dBov) between the talk.
    let noise = background_noise(160 * 100, 30, 0x2545_F491);
    let mut pkt = Vec::new();
    let mut payload = [0u8; 160];
    let mut out = Vec::new();
    // 1 s talk, 2 s background, 1 s talk.
    for k in 0..200usize {
        let pcm: Vec<i16> = match k {
            0..=49 => talk[k * 160..(k + 1) * 160].to_vec(),
            150..=199 => talk[(k - 100) * 160..(k - 99) * 160].to_vec(),
            _ => noise[(k - 50) * 160..(k - 49) * 160].to_vec(),
        };
        g711::ulaw_encode(&pcm, &mut payload);
        rtp(0, k as u16, 160 * k as u32, 4, k == 0, &payload, &mut pkt);
        ing.push(a.id, &pkt).unwrap();
        e.step(2).unwrap();
        out.extend(drain(&mut eg).into_iter().filter(|p| p.session == b.id));
    }
    e.step(20).unwrap();
    out.extend(drain(&mut eg).into_iter().filter(|p| p.session == b.id));

    let sids: Vec<&Out> = out.iter().filter(|p| p.header.payload_type == 13).collect();
    let audio = out.iter().filter(|p| p.header.payload_type == 0).count();
    // Two seconds of background: a SID once 400 ms of it are past, then one every 500
    // ms (the level holds); none inside the talk (pauses between words go out as audio:
    // every SID carries the background's level).
    assert!((4..=6).contains(&sids.len()), "{} SIDs", sids.len());
    assert!(audio < 150, "{audio} audio packets for 200 frames");
    for s in &sids {
        let p = CnPayload::parse(s.payload()).unwrap();
        assert!(
            (55..=80).contains(&p.level_dbov),
            "SID level {}",
            p.level_dbov
        );
        assert_eq!(p.reflection.len(), 4);
        assert!(!s.header.marker);
    }
    // One stream: sequence numbers without a gap, timestamps on the 20 ms grid and
    // rising, audio resumed with the marker bit after the SIDs.
    for w in out.windows(2) {
        assert_eq!(w[1].header.sequence, w[0].header.sequence.wrapping_add(1));
        let dt = w[1].header.timestamp.wrapping_sub(w[0].header.timestamp);
        assert!(dt > 0 && dt % 160 == 0, "timestamp step {dt}");
    }
    let last_sid = out
        .iter()
        .rposition(|p| p.header.payload_type == 13)
        .unwrap();
    let resumed = &out[last_sid + 1];
    assert_eq!(resumed.header.payload_type, 0);
    assert!(
        resumed.header.marker,
        "the first audio after the silence is marked"
    );
    let st = e.session_stats(b.id).unwrap();
    assert_eq!(st.tx_cn_packets, sids.len() as u64);
    assert!(st.frames_dtx >= 60, "{st:?}");

    // DTX needs the comfort-noise payload type.
    let mut bad = MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_20);
    bad.dtx = true;
    assert!(matches!(
        e.create_media_session(DialogId(9), bad),
        Err(Error::UnsupportedParameters { .. })
    ));
}

#[test]
fn the_file_pipeline_plays_comfort_noise_where_dtx_sent_nothing() {
    use media_core::integration::pipeline::{run, PipelineConfig};
    use media_core::quality::impairment::{simulate, ImpairmentConfig};
    // 1 s talk, 2 s background at about -50 dBov, 1 s talk.
    let talk = babble(8000 * 2, 9);
    let noise = background_noise(8000 * 2, 100, 0x1357_9BDF);
    let input: Vec<i16> = (0..8000 * 4)
        .map(|i| match i {
            0..=7999 => talk[i],
            24000.. => talk[i - 16000],
            _ => noise[i - 8000],
        })
        .collect();
    let cfg = |dtx| PipelineConfig {
        codec: CodecSpec::PCMU,
        to_codec: CodecSpec::PCMU,
        ptime: Ptime::MS_20,
        deliveries: simulate(&ImpairmentConfig::default(), input.len() / 160, 20.0, 1),
        jitter: Default::default(),
        opus: Default::default(),
        dsp: DspConfig {
            vad: Some(Default::default()),
            ..Default::default()
        },
        far_end: None,
        dtx,
    };
    let plain = run(&input, &cfg(false)).unwrap();
    let r = run(&input, &cfg(true)).unwrap();
    assert_eq!((plain.far_sids, plain.far_frames_skipped), (0, 0));
    assert!(r.far_sids >= 2, "{} SIDs", r.far_sids);
    assert!(
        r.far_frames_skipped >= 50,
        "{} frames not sent",
        r.far_frames_skipped
    );
    assert!(r.far_packets < plain.far_packets);
    // Through the background the far end hears noise at about the background's level,
    // not the silence of frames never sent: the last second of it, within 3 dB.
    let rms =
        |v: &[i16]| (v.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / v.len() as f64).sqrt();
    let span = 8000 * 2..8000 * 3;
    let (want, got) = (rms(&plain.output[span.clone()]), rms(&r.output[span]));
    let db = 20.0 * (got / want).log10();
    assert!(
        db.abs() < 3.0,
        "comfort noise {got:.1} against background {want:.1} ({db:.1} dB)"
    );
}

#[test]
fn invalid_voice_processing_settings_are_typed_errors() {
    let e = engine();
    let dsp = DspConfig {
        aec: Some(AecConfig {
            tail_ms: 5_000,
            ..Default::default()
        }),
        ..Default::default()
    };
    let err = e
        .create_media_session(DialogId(9), with_dsp(dsp))
        .unwrap_err();
    assert!(matches!(err, Error::Dsp(_)), "{err:?}");
}

#[test]
fn the_file_pipeline_reports_the_digits_of_the_dtmf_recording_through_pcmu() {
    use media_core::integration::pipeline::{run, PipelineConfig};
    use media_core::quality::impairment::{simulate, ImpairmentConfig};
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/audio/dtmf_digits_8000.wav"
    );
    let input: Vec<i16> = hound::WavReader::open(path)
        .unwrap()
        .samples::<i16>()
        .collect::<Result<_, _>>()
        .unwrap();
    let frames = input.len() / 160;
    let r = run(
        &input,
        &PipelineConfig {
            codec: CodecSpec::PCMU,
            to_codec: CodecSpec::PCMA,
            ptime: Ptime::MS_20,
            deliveries: simulate(&ImpairmentConfig::default(), frames, 20.0, 1),
            jitter: Default::default(),
            opus: Default::default(),
            dsp: DspConfig {
                dtmf: Some(Default::default()),
                vad: Some(Default::default()),
                ..Default::default()
            },
            far_end: None,
            dtx: false,
        },
    )
    .unwrap();
    assert_eq!(r.dtmf_digits, "1234567890*#ABCD");
    // The file: 200 ms of digital silence, then 16 tones of 60 ms, 60 ms apart. Every
    // talkspurt is closed, none starts in the leading silence, and the middle of every
    // tone (shifted by when the first talkspurt began) lies in one. Whether the VAD bridges
    // a 60 ms gap is its smoothing's business (a hangover would bridge it too), so the
    // count is not fixed: 1 to 16.
    let ts = &r.talkspurts;
    assert!((1..=16).contains(&ts.len()), "{ts:?}");
    assert!(ts.iter().all(|&(a, b)| b.is_some_and(|b| b > a)), "{ts:?}");
    let offset = ts[0].0 - 200.0;
    assert!(
        (0.0..=80.0).contains(&offset),
        "first talkspurt at {} ms",
        ts[0].0
    );
    for k in 0..16 {
        let mid = 230.0 + 120.0 * k as f64 + offset;
        assert!(
            ts.iter()
                .any(|&(a, b)| a <= mid && b.is_some_and(|b| mid <= b)),
            "tone {k} (mid {mid} ms) outside every talkspurt: {ts:?}"
        );
    }
    assert!(r.to_json().contains("\"dtmf_digits\":\"1234567890*#ABCD\""));
}

#[test]
fn in_band_digits_on_one_leg_leave_the_other_as_rfc4733() {
    use media_core::codec::audio::telephone_event::EventPayload;
    let e = engine();
    let dsp = DspConfig {
        dtmf: Some(Default::default()),
        ..Default::default()
    };
    let mut pb = MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_20);
    pb.telephone_event_send_pt = media_core::PayloadType::new(101);
    let (a, b) = e
        .create_call((DialogId(1), with_dsp(dsp)), (DialogId(2), pb))
        .unwrap();
    let (mut ing, mut eg) = e.take_rtp_handles(0).unwrap();
    let mut generator = DtmfGenerator::new(DtmfGeneratorConfig::default()).unwrap();
    let mut pkt = Vec::new();
    let mut pcm = [0i16; 160];
    let mut payload = [0u8; 160];
    let mut out = Vec::new();
    for k in 0..60u32 {
        if k == 10 {
            generator.start(Digit::from_char('6').unwrap(), -10.0, 200);
        }
        if !generator.fill(&mut pcm) {
            pcm.fill(0);
        }
        g711::ulaw_encode(&pcm, &mut payload);
        rtp(0, k as u16, 160 * k, 3, k == 0, &payload, &mut pkt);
        ing.push(a.id, &pkt).unwrap();
        e.step(2).unwrap();
        out.extend(drain(&mut eg).into_iter().filter(|p| p.session == b.id));
    }
    let events: Vec<_> = out
        .iter()
        .filter(|p| p.header.payload_type == 101)
        .map(|p| EventPayload::parse(p.payload()).unwrap())
        .collect();
    assert!(events.len() >= 5, "{} RFC 4733 packets on B", events.len());
    assert!(events.iter().all(|p| p.event == 6));
    assert_eq!(events.iter().filter(|p| p.end).count(), 3);
    // The event lasted about as long as the tone (within the detector's latency).
    let last = events.last().unwrap().duration;
    assert!(
        (1200..=1900).contains(&last),
        "duration {last} (1600 = 200 ms)"
    );
}

/// `wav_pipeline --aec ECHO_REF.wav`: the far end's speech goes out on the far leg, the
/// input is its echo (a line/room path: 20-32 ms of delay, three taps), and the echo
/// canceller on the received audio removes it.
#[test]
fn the_file_pipeline_cancels_the_echo_of_the_far_end_it_sends() {
    use media_core::integration::pipeline::{run, PipelineConfig};
    use media_core::quality::impairment::{simulate, ImpairmentConfig};
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/audio/speech2_8000.wav"
    );
    let far: Vec<i16> = hound::WavReader::open(path)
        .unwrap()
        .samples::<i16>()
        .take(8000 * 8)
        .collect::<Result<_, _>>()
        .unwrap();
    let echo: Vec<i16> = (0..far.len())
        .map(|i| {
            let tap = |d: usize, g: f32| {
                if i >= d {
                    g * f32::from(far[i - d])
                } else {
                    0.0
                }
            };
            (tap(160, 0.4) + tap(200, -0.2) + tap(260, 0.1)) as i16
        })
        .collect();
    let frames = echo.len() / 160;
    let out = |aec: bool| {
        run(
            &echo,
            &PipelineConfig {
                codec: CodecSpec::PCMU,
                to_codec: CodecSpec::PCMU,
                ptime: Ptime::MS_20,
                deliveries: simulate(&ImpairmentConfig::default(), frames, 20.0, 1),
                jitter: Default::default(),
                opus: Default::default(),
                dsp: DspConfig {
                    aec: aec.then(Default::default),
                    ..Default::default()
                },
                far_end: Some(far.clone()),
                dtx: false,
            },
        )
        .unwrap()
    };
    let energy = |x: &[i16]| x.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>();
    let (with, without) = (out(true), out(false));
    // The summary reports the canceller's meter (`--json`: `echo_erle_db`), none without.
    assert!(without.to_json().ends_with("\"echo_erle_db\":null}"));
    let meter = with.echo_erle_db.expect("a canceller's ERLE");
    println!("wav pipeline: reported ERLE {meter:.1} dB");
    assert!(meter > 25.0, "reported ERLE {meter:.1} dB");
    assert!(with
        .to_json()
        .contains(&format!("\"echo_erle_db\":{meter:.1}")));
    let (with, without) = (with.output, without.output);
    // Over the last 4 s (after convergence), the echo is attenuated by at least 25 dB
    // (measured 42 dB on the whole file with `wav_pipeline --aec`).
    let tail = 8000 * 4..with.len();
    let erle = 10.0 * (energy(&without[tail.clone()]) / energy(&with[tail]).max(1.0)).log10();
    assert!(erle > 25.0, "ERLE {erle:.1} dB");
}
