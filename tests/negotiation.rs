//! SDP offer/answer: FIELD-BUGS.md cases 44–51 (negotiation), plus order, ptime, Opus
//! fmtp, the no-common-codec error, and a full SDP text round trip.

use media_core::codec::negotiation::{
    answer, negotiate_reoffer, process_answer, CodecKind, Direction, LocalCapabilities, LocalCodec,
    MediaOffer, NegotiationError, OpusParams, RtpMap,
};

use CodecKind::{ComfortNoise, Opus, Pcma, Pcmu, TelephoneEvent, G722};

/// Parses an `m=audio` section (lines joined with CRLF).
fn offer(lines: &[&str]) -> MediaOffer {
    let text: String = lines.iter().map(|l| format!("{l}\r\n")).collect();
    MediaOffer::from_sdp(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn caps(kinds: &[CodecKind]) -> LocalCapabilities {
    LocalCapabilities::new(kinds)
}

fn receive_pts(media: &media_core::codec::negotiation::NegotiatedMedia) -> Vec<u8> {
    media.receive.iter().map(|r| r.pt).collect()
}

// ---- FIELD-BUGS 44–51 ------------------------------------------------------------

#[test]
fn encoding_names_match_whatever_their_case() {
    // FIELD-BUGS 44: `pcma/8000`, `OPUS/48000/2`, `g722/8000` each match their codec.
    for (line, kind, pt) in [
        ("a=rtpmap:8 pcma/8000", Pcma, 8),
        ("a=rtpmap:111 OPUS/48000/2", Opus, 111),
        ("a=rtpmap:9 g722/8000", G722, 9),
    ] {
        let o = offer(&[&format!("m=audio 4000 RTP/AVP {pt}"), line]);
        let media = answer(&o, &caps(&[kind])).expect(line);
        assert_eq!(media.send.pt, pt, "{line}");
        assert_eq!(media.send_kind(), Some(kind), "{line}");
        // The answer echoes the offerer's spelling: peers that compare names
        // case-sensitively find their own string again.
        let first_rtpmap = media
            .to_sdp_answer(5000)
            .lines()
            .nth(1)
            .unwrap()
            .to_string();
        assert_eq!(first_rtpmap, line, "{line}");
    }

    // Offerer side: an answer spelled differently from our offer still matches.
    let ours = caps(&[Opus, G722, Pcma]).create_offer(5000, None);
    let opus_pt = ours.codecs[0].pt;
    let theirs = offer(&[
        &format!("m=audio 6000 RTP/AVP {opus_pt} 9 8"),
        &format!("a=rtpmap:{opus_pt} OPUS/48000/2"),
        "a=rtpmap:9 g722/8000",
        "a=rtpmap:8 pcma/8000",
    ]);
    let media = process_answer(&ours, &theirs).unwrap();
    assert_eq!(media.send_kind(), Some(Opus));
    assert_eq!(
        receive_pts(&media)
            .iter()
            .map(|&pt| media.receive_kind(pt).unwrap())
            .collect::<Vec<_>>(),
        vec![Opus, G722, Pcma]
    );
}

#[test]
fn static_payload_types_without_rtpmap_resolve_to_pcmu_pcma_and_g722() {
    // FIELD-BUGS 45.
    let o = offer(&[
        "m=audio 4000 RTP/AVP 0 8 9 101",
        "a=rtpmap:101 telephone-event/8000",
    ]);
    let resolved: Vec<(u8, &str, u32, u8)> = o
        .codecs
        .iter()
        .map(|c| (c.pt, c.name.as_str(), c.clock_rate_hz, c.channels))
        .collect();
    assert_eq!(
        resolved,
        vec![
            (0, "PCMU", 8000, 1),
            (8, "PCMA", 8000, 1),
            (9, "G722", 8000, 1),
            (101, "telephone-event", 8000, 1),
        ]
    );
    let media = answer(&o, &caps(&[G722, Pcma, Pcmu])).unwrap();
    assert_eq!(media.send.pt, 0);
    // G.722 is left out of the answer: it samples at 16 kHz, and a PCMU session receives
    // only codecs on its clock and audio rate.
    assert_eq!(receive_pts(&media), vec![0, 8, 101]);
    assert_eq!(media.receive_kind(8), Some(Pcma));
    assert_eq!(media.telephone_event_send, Some(101));
    // With G.722 chosen, our answer writes the rtpmap the offer left out.
    let mut local = caps(&[G722, Pcma, Pcmu]);
    local.prefer_local_order = true;
    let media = answer(&o, &local).unwrap();
    assert_eq!(receive_pts(&media), vec![9, 101]);
    assert_eq!(media.receive_kind(9), Some(G722));
    let text = media.to_sdp_answer(5000);
    assert!(text.contains("a=rtpmap:9 G722/8000\r\n"), "{text}");
}

#[test]
fn omitted_channel_count_means_one_and_one_does_not_match_two() {
    // FIELD-BUGS 46: `AMR/8000` vs `AMR/8000/1` match; `/1` vs `/2` do not.
    let amr = RtpMap::parse_rtpmap("96 AMR/8000").unwrap();
    let amr_1 = RtpMap::parse_rtpmap("97 AMR/8000/1").unwrap();
    let amr_2 = RtpMap::parse_rtpmap("98 AMR/8000/2").unwrap();
    assert!(amr.same_codec(&amr_1));
    assert!(!amr_1.same_codec(&amr_2));
    assert!(!amr.same_codec(&amr_2));

    // Through a whole offer/answer on the offerer side: we offer AMR/8000 and the
    // answer spells it AMR/8000/1.
    let ours = offer(&["m=audio 5000 RTP/AVP 96", "a=rtpmap:96 AMR/8000"]);
    let theirs = offer(&["m=audio 6000 RTP/AVP 96", "a=rtpmap:96 AMR/8000/1"]);
    assert_eq!(process_answer(&ours, &theirs).unwrap().send.pt, 96);
    let theirs_stereo = offer(&["m=audio 6000 RTP/AVP 96", "a=rtpmap:96 AMR/8000/2"]);
    assert!(matches!(
        process_answer(&ours, &theirs_stereo),
        Err(NegotiationError::NoCommonCodec { .. })
    ));

    // Likewise `PCMU/8000/1` is PCMU, and Opus needs its `/2` (RFC 7587).
    let o = offer(&[
        "m=audio 4000 RTP/AVP 0 111",
        "a=rtpmap:0 PCMU/8000/1",
        "a=rtpmap:111 opus/48000/1",
    ]);
    assert_eq!(o.codecs[0].kind(), Some(Pcmu));
    assert_eq!(o.codecs[1].kind(), None);
    let media = answer(&o, &caps(&[Opus, Pcmu])).unwrap();
    assert_eq!(media.send_kind(), Some(Pcmu));
    assert_eq!(receive_pts(&media), vec![0]);
}

#[test]
fn asymmetric_telephone_event_pt_sends_with_the_answers_pt_and_accepts_ours_inbound() {
    // FIELD-BUGS 47: our offer has telephone-event at 110; the answer uses 101.
    let ours = offer(&[
        "m=audio 5000 RTP/AVP 0 110",
        "a=rtpmap:110 telephone-event/8000",
        "a=fmtp:110 0-15",
    ]);
    let theirs = offer(&[
        "m=audio 6000 RTP/AVP 0 101",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-15",
    ]);
    let media = process_answer(&ours, &theirs).unwrap();
    assert_eq!(media.send.pt, 0);
    // Send with 101, the number the answerer receives on; do not strip the codec.
    assert_eq!(media.telephone_event_send, Some(101));
    assert_eq!(media.telephone_event_clock_rate_hz, Some(8000));
    // Accept 110 (our offer) inbound; 101 as well, for peers that send with their own
    // numbering, since nothing else in our offer uses it.
    assert!(media.telephone_event_recv.contains(&110));
    assert_eq!(media.receive_kind(110), Some(TelephoneEvent));
    assert_eq!(media.receive_kind(101), Some(TelephoneEvent));

    // The same asymmetry for a voice codec: Opus offered on 96, answered on 111.
    let ours = caps(&[Opus]).create_offer(5000, None);
    assert_eq!(ours.codecs[0].pt, 96);
    let theirs = offer(&["m=audio 6000 RTP/AVP 111", "a=rtpmap:111 opus/48000/2"]);
    let media = process_answer(&ours, &theirs).unwrap();
    assert_eq!(media.send.pt, 111);
    assert_eq!(media.receive_kind(96), Some(Opus));
}

#[test]
fn telephone_event_follows_the_chosen_codecs_clock_rate_and_falls_back_to_8000() {
    // FIELD-BUGS 48: 110/48000, 112/32000, 113/16000 and 126/8000 alongside Opus.
    let all_rates = offer(&[
        "m=audio 4000 RTP/AVP 111 0 110 112 113 126",
        "a=rtpmap:111 opus/48000/2",
        "a=rtpmap:110 telephone-event/48000",
        "a=rtpmap:112 telephone-event/32000",
        "a=rtpmap:113 telephone-event/16000",
        "a=rtpmap:126 telephone-event/8000",
    ]);
    let media = answer(&all_rates, &caps(&[Opus, Pcmu])).unwrap();
    assert_eq!(media.send_kind(), Some(Opus));
    assert_eq!(media.telephone_event_send, Some(110));
    assert_eq!(media.telephone_event_recv, vec![110]);
    assert_eq!(media.telephone_event_clock_rate_hz, Some(48000));
    // Exactly one telephone-event in the answer, and no PCMU beside Opus (another RTP
    // clock: the Opus session would not receive it).
    assert_eq!(receive_pts(&media), vec![111, 110]);

    // With PCMU chosen, the 8000 one.
    let media = answer(&all_rates, &caps(&[Pcmu])).unwrap();
    assert_eq!(media.telephone_event_send, Some(126));

    // Only /8000 offered: Opus still keeps DTMF, at 8000.
    let only_8k = offer(&[
        "m=audio 4000 RTP/AVP 111 126",
        "a=rtpmap:111 opus/48000/2",
        "a=rtpmap:126 telephone-event/8000",
    ]);
    let media = answer(&only_8k, &caps(&[Opus])).unwrap();
    assert_eq!(media.telephone_event_send, Some(126));
    assert_eq!(media.telephone_event_clock_rate_hz, Some(8000));

    // Offerer side: we offered both rates; the answer picks Opus with /8000 only.
    let ours = caps(&[Opus, Pcmu]).create_offer(5000, None);
    let te_8k = ours
        .codecs
        .iter()
        .find(|c| c.kind() == Some(TelephoneEvent) && c.clock_rate_hz == 8000)
        .unwrap()
        .pt;
    let theirs = offer(&[
        "m=audio 6000 RTP/AVP 96 101",
        "a=rtpmap:96 opus/48000/2",
        "a=rtpmap:101 telephone-event/8000",
    ]);
    let media = process_answer(&ours, &theirs).unwrap();
    assert_eq!(media.telephone_event_send, Some(101));
    assert!(media.telephone_event_recv.contains(&te_8k));
}

#[test]
fn codec_changing_reoffer_answers_the_new_codec_never_the_cached_one() {
    // FIELD-BUGS 49: the call runs PCMU; the re-offer has only PCMA.
    let local = caps(&[Pcmu, Pcma]);
    let initial = answer(
        &offer(&[
            "m=audio 4000 RTP/AVP 0 101",
            "a=rtpmap:101 telephone-event/8000",
        ]),
        &local,
    )
    .unwrap();
    assert_eq!(initial.send_kind(), Some(Pcmu));

    let reoffer = offer(&[
        "m=audio 4000 RTP/AVP 8 101",
        "a=rtpmap:101 telephone-event/8000",
    ]);
    let media = negotiate_reoffer(&initial, &reoffer, &local).unwrap();
    assert_eq!(media.send.pt, 8);
    assert_eq!(media.send_kind(), Some(Pcma));
    assert_eq!(media.receive_kind(0), None, "PCMU must not linger");
    assert_eq!(receive_pts(&media), vec![8, 101]);
    let text = media.to_sdp_answer(5000);
    assert!(text.starts_with("m=audio 5000 RTP/AVP 8 101\r\n"), "{text}");
    assert!(!text.contains("PCMU"), "{text}");

    // A re-offer with nothing we support is an error (SIP 488), not the cached codec.
    let g729_only = offer(&["m=audio 4000 RTP/AVP 18"]);
    assert!(matches!(
        negotiate_reoffer(&initial, &g729_only, &local),
        Err(NegotiationError::NoCommonCodec { .. })
    ));
}

#[test]
fn reoffer_keeps_the_dynamic_payload_numbers_the_session_already_uses() {
    // FIELD-BUGS 49, second half: the PT→codec map stays stable across re-offers.
    let local = caps(&[Opus, Pcmu]);
    let initial = answer(
        &offer(&[
            "m=audio 4000 RTP/AVP 96 0 101",
            "a=rtpmap:96 opus/48000/2",
            "a=rtpmap:101 telephone-event/48000",
        ]),
        &local,
    )
    .unwrap();

    // Same mapping re-offered: nothing moves.
    let same = offer(&[
        "m=audio 4000 RTP/AVP 96 0 101",
        "a=rtpmap:96 opus/48000/2",
        "a=rtpmap:101 telephone-event/48000",
    ]);
    let media = negotiate_reoffer(&initial, &same, &local).unwrap();
    // (PCMU is not answered beside Opus: another RTP clock.)
    assert_eq!(receive_pts(&media), vec![96, 101]);

    // A re-offer (e.g. rebuilt by a B2BUA) moves Opus to 97 and telephone-event to 100:
    // we keep receiving them on 96 and 101, and send on the new numbers.
    let moved = offer(&[
        "m=audio 4000 RTP/AVP 97 0 100",
        "a=rtpmap:97 opus/48000/2",
        "a=rtpmap:100 telephone-event/48000",
    ]);
    let media = negotiate_reoffer(&initial, &moved, &local).unwrap();
    assert_eq!(media.send.pt, 97);
    assert_eq!(media.telephone_event_send, Some(100));
    assert_eq!(receive_pts(&media), vec![96, 101]);
    assert_eq!(media.telephone_event_recv, vec![101]);
    assert_eq!(media.receive_kind(96), Some(Opus));

    // The old number is not kept when the re-offer uses it for something else; the
    // companions still keep theirs.
    let clash = offer(&[
        "m=audio 4000 RTP/AVP 97 96",
        "a=rtpmap:97 opus/48000/2",
        "a=rtpmap:96 telephone-event/48000",
    ]);
    let media = negotiate_reoffer(&initial, &clash, &local).unwrap();
    assert_eq!(receive_pts(&media), vec![97, 101]);
    assert_eq!(media.receive_kind(97), Some(Opus));
    assert_eq!(media.receive_kind(101), Some(TelephoneEvent));
    assert_eq!(media.telephone_event_send, Some(96));

    // Our own re-offer keeps the numbers the session receives on.
    let ours = local.create_offer(5000, Some(&media));
    assert_eq!(ours.codec(97).and_then(RtpMap::kind), Some(Opus));
    assert_eq!(
        ours.codec(101).map(RtpMap::encoding).as_deref(),
        Some("telephone-event/48000")
    );
}

#[test]
fn both_negotiated_static_types_resolve_per_packet_so_a_pt_switch_needs_no_signalling() {
    // FIELD-BUGS 50: both 0 and 8 negotiated; packets switch from PT 0 to PT 8.
    let media = answer(&offer(&["m=audio 4000 RTP/AVP 0 8"]), &caps(&[Pcmu, Pcma])).unwrap();
    assert_eq!(media.send.pt, 0);
    let per_packet: Vec<Option<CodecKind>> = [0u8, 0, 8, 8, 0, 13, 96]
        .iter()
        .map(|&pt| media.receive_kind(pt))
        .collect();
    assert_eq!(
        per_packet,
        vec![
            Some(Pcmu),
            Some(Pcmu),
            Some(Pcma),
            Some(Pcma),
            Some(Pcmu),
            None,
            None
        ]
    );
}

#[test]
fn remote_rtpmap_putting_telephone_event_on_pt_10_is_honoured() {
    // FIELD-BUGS 51: PT 10 is L16 in RFC 3551, but the remote's rtpmap wins.
    let o = offer(&[
        "m=audio 4000 RTP/AVP 0 10",
        "a=rtpmap:10 telephone-event/8000",
    ]);
    assert_eq!(o.codec(10).and_then(RtpMap::kind), Some(TelephoneEvent));
    let media = answer(&o, &caps(&[Pcmu])).unwrap();
    assert_eq!(media.telephone_event_send, Some(10));
    assert_eq!(media.receive_kind(10), Some(TelephoneEvent));

    // Without the rtpmap, 10 is L16/44100/2, which we do not answer.
    let o = offer(&["m=audio 4000 RTP/AVP 0 10"]);
    assert_eq!(o.codec(10).unwrap().encoding(), "L16/44100/2");
    let media = answer(&o, &caps(&[Pcmu])).unwrap();
    assert_eq!(media.telephone_event_send, None);
    assert_eq!(receive_pts(&media), vec![0]);
}

#[test]
fn our_offer_never_puts_telephone_event_on_a_static_pt() {
    // FIELD-BUGS 51: never offer telephone-event on a static number such as 10.
    let mut local = caps(&[Opus, G722, Pcmu, Pcma, ComfortNoise]);
    local.codecs.push(LocalCodec::new(TelephoneEvent, 9));
    let ours = local.create_offer(5000, None);
    let te: Vec<&RtpMap> = ours
        .codecs
        .iter()
        .filter(|c| c.kind() == Some(TelephoneEvent))
        .collect();
    assert_eq!(te.len(), 2, "one per voice clock rate (48000 and 8000)");
    assert!(te.iter().all(|c| (96..=127).contains(&c.pt)), "{te:?}");
    // Static codecs keep their static numbers; the payload numbers are unique.
    assert_eq!(ours.codec(0).and_then(RtpMap::kind), Some(Pcmu));
    assert_eq!(ours.codec(8).and_then(RtpMap::kind), Some(Pcma));
    assert_eq!(ours.codec(9).and_then(RtpMap::kind), Some(G722));
    assert_eq!(ours.codec(13).and_then(RtpMap::kind), Some(ComfortNoise));
    let mut pts: Vec<u8> = ours.codecs.iter().map(|c| c.pt).collect();
    pts.sort_unstable();
    pts.dedup();
    assert_eq!(pts.len(), ours.codecs.len());
    // And the written offer parses back to the same thing.
    assert_eq!(MediaOffer::from_sdp(&ours.to_sdp_media()).unwrap(), ours);
}

// ---- Order, ptime, Opus, errors --------------------------------------------------

#[test]
fn answer_keeps_the_offerers_order() {
    let o = offer(&["m=audio 4000 RTP/AVP 8 9 0"]);
    let media = answer(&o, &caps(&[Pcmu, G722, Pcma])).unwrap();
    assert_eq!(media.send_kind(), Some(Pcma));
    // G.722 (16 kHz) is not listed beside G.711: a PCMA session does not receive it.
    assert_eq!(receive_pts(&media), vec![8, 0]);
    // The offerer's order, whatever ours.
    let o = offer(&["m=audio 4000 RTP/AVP 0 9 8"]);
    assert_eq!(
        receive_pts(&answer(&o, &caps(&[Pcma, G722, Pcmu])).unwrap()),
        vec![0, 8]
    );
}

#[test]
fn prefer_local_order_answers_in_our_preference_order() {
    let o = offer(&[
        "m=audio 4000 RTP/AVP 8 9 0 111",
        "a=rtpmap:111 opus/48000/2",
    ]);
    let mut local = caps(&[Opus, Pcmu, G722, Pcma]);
    local.prefer_local_order = true;
    let media = answer(&o, &local).unwrap();
    assert_eq!(media.send.pt, 111);
    // Nothing else beside Opus (48 kHz clock).
    assert_eq!(receive_pts(&media), vec![111]);
    // The preference field decides, not the list position.
    local
        .codecs
        .iter_mut()
        .find(|c| c.kind == Pcma)
        .unwrap()
        .preference = 0;
    local
        .codecs
        .iter_mut()
        .find(|c| c.kind == Opus)
        .unwrap()
        .preference = 5;
    let media = answer(&o, &local).unwrap();
    // PCMA first by preference, then PCMU (G.722 and Opus are not received beside it).
    assert_eq!(receive_pts(&media), vec![8, 0]);
}

#[test]
fn ptime_is_the_offered_one_when_playable_and_never_exceeds_maxptime() {
    let local = caps(&[Pcmu]);
    let with = |extra: &[&str]| {
        let mut lines = vec!["m=audio 4000 RTP/AVP 0"];
        lines.extend_from_slice(extra);
        answer(&offer(&lines), &local).unwrap().ptime_ms
    };
    assert_eq!(with(&[]), 20);
    assert_eq!(with(&["a=ptime:30"]), 30);
    assert_eq!(with(&["a=ptime:10"]), 10);
    assert_eq!(with(&["a=ptime:60"]), 60);
    assert_eq!(with(&["a=ptime:25"]), 20, "not playable: 20");
    assert_eq!(with(&["a=ptime:20.0"]), 20);
    assert_eq!(with(&["a=ptime:60", "a=maxptime:40"]), 40);
    assert_eq!(with(&["a=maxptime:10"]), 10);
    assert_eq!(with(&["a=maxptime:35"]), 20);

    let mut long = caps(&[Pcmu]);
    long.ptime_ms = 40;
    let o = offer(&["m=audio 4000 RTP/AVP 0", "a=maxptime:30"]);
    assert_eq!(answer(&o, &long).unwrap().ptime_ms, 30);

    let text = answer(&offer(&["m=audio 4000 RTP/AVP 0", "a=ptime:30"]), &local)
        .unwrap()
        .to_sdp_answer(5000);
    assert!(text.contains("a=ptime:30\r\n"), "{text}");
}

#[test]
fn opus_fmtp_of_the_offer_configures_the_encoder_and_ours_goes_in_the_answer() {
    let o = offer(&[
        "m=audio 4000 RTP/AVP 111",
        "a=rtpmap:111 opus/48000/2",
        "a=fmtp:111 minptime=10; useinbandfec=1;usedtx=1;maxplaybackrate=16000;sprop-maxcapturerate=24000;stereo=1;maxaveragebitrate=24000",
    ]);
    let media = answer(&o, &caps(&[Opus])).unwrap();
    assert_eq!(
        media.opus,
        Some(OpusParams {
            use_inband_fec: true,
            use_dtx: true,
            max_playback_rate_hz: 16000,
            sprop_max_capture_rate_hz: 24000,
            stereo: true,
            sprop_stereo: false,
            max_average_bitrate_bps: Some(24000),
            cbr: false,
        })
    );
    // The answer carries our receive preferences, not an echo of theirs.
    let text = media.to_sdp_answer(5000);
    assert!(
        text.contains("a=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n"),
        "{text}"
    );

    // Absent fmtp: the RFC 7587 defaults. Out-of-range values are clamped, junk ignored.
    let bare = offer(&["m=audio 4000 RTP/AVP 111", "a=rtpmap:111 opus/48000/2"]);
    assert_eq!(
        answer(&bare, &caps(&[Opus])).unwrap().opus,
        Some(OpusParams::default())
    );
    let odd = offer(&[
        "m=audio 4000 RTP/AVP 111",
        "a=rtpmap:111 opus/48000/2",
        "a=fmtp:111 maxaveragebitrate=1000000;maxplaybackrate=96000;usedtx=yes",
    ]);
    let p = answer(&odd, &caps(&[Opus])).unwrap().opus.unwrap();
    assert_eq!(p.max_average_bitrate_bps, Some(510_000));
    assert_eq!(p.max_playback_rate_hz, 48000);
    assert!(!p.use_dtx);

    // Not Opus: no Opus parameters.
    let pcmu = answer(&offer(&["m=audio 4000 RTP/AVP 0"]), &caps(&[Pcmu])).unwrap();
    assert_eq!(pcmu.opus, None);
}

#[test]
fn no_common_codec_error_text_lists_both_sides() {
    let o = offer(&[
        "m=audio 4000 RTP/AVP 18 3 101",
        "a=rtpmap:101 telephone-event/8000",
    ]);
    let err = answer(&o, &caps(&[Opus, Pcmu, Pcma])).unwrap_err();
    assert_eq!(
        err,
        NegotiationError::NoCommonCodec {
            offered: vec![
                "G729/8000".to_string(),
                "GSM/8000".to_string(),
                "telephone-event/8000".to_string()
            ],
            supported: vec![
                "opus/48000/2".to_string(),
                "PCMU/8000".to_string(),
                "PCMA/8000".to_string()
            ],
        }
    );
    assert_eq!(
        err.to_string(),
        "no common codec: offered [G729/8000, GSM/8000, telephone-event/8000], \
         supported [opus/48000/2, PCMU/8000, PCMA/8000]"
    );
}

#[test]
fn direction_is_answered_per_rfc_3264() {
    for (offered, answered) in [
        ("a=sendrecv", Direction::SendRecv),
        ("a=sendonly", Direction::RecvOnly),
        ("a=recvonly", Direction::SendOnly),
        ("a=inactive", Direction::Inactive),
    ] {
        let media = answer(&offer(&["m=audio 4000 RTP/AVP 0", offered]), &caps(&[Pcmu])).unwrap();
        assert_eq!(media.direction, answered, "{offered}");
        assert!(media
            .to_sdp_answer(5000)
            .ends_with(&format!("a={}\r\n", answered.attribute())));
    }
}

/// Secure transports are refused, typed (media-core sends plain RTP; in review an
/// `RTP/SAVP` offer with `a=crypto` was answered `RTP/SAVP` without keys), and of several
/// audio sections the one that can carry the call is read: the first enabled plain-RTP
/// one (in review, the first section whatever its port or profile).
#[test]
fn secure_transports_are_refused_and_the_usable_audio_section_is_read() {
    for proto in ["RTP/SAVP", "RTP/SAVPF", "UDP/TLS/RTP/SAVPF"] {
        let o = offer(&[
            &format!("m=audio 4000 {proto} 0"),
            "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz",
        ]);
        assert_eq!(
            answer(&o, &caps(&[Pcmu])).unwrap_err(),
            NegotiationError::UnsupportedTransport(proto.to_string())
        );
    }
    for proto in ["RTP/AVP", "RTP/AVPF"] {
        assert!(answer(
            &offer(&[&format!("m=audio 4000 {proto} 0")]),
            &caps(&[Pcmu])
        )
        .is_ok());
    }
    // A disabled section, then SRTP, then plain RTP: the plain one is answered.
    let o = offer(&[
        "m=audio 0 RTP/AVP 0",
        "m=audio 4000 RTP/SAVP 8",
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz",
        "m=audio 4002 RTP/AVP 0 8",
    ]);
    assert_eq!((o.port, o.protocol.as_str()), (4002, "RTP/AVP"));
    let m = answer(&o, &caps(&[Pcmu, Pcma])).unwrap();
    assert_eq!(m.send.pt, 0);
    // With none usable, the first section is read and refused as before.
    let o = offer(&["m=audio 0 RTP/AVP 0", "m=audio 0 RTP/AVP 8"]);
    assert_eq!(
        answer(&o, &caps(&[Pcmu])).unwrap_err(),
        NegotiationError::MediaDisabled
    );
}

/// An answer has one `m=` line per offered section, in order (RFC 3264 §6): the audio
/// section media-core answers where it was offered, the others rejected with port 0.
#[test]
fn an_answer_has_one_section_per_offered_section() {
    use media_core::codec::negotiation::answer_sections;
    let text = [
        "v=0",
        "o=- 1 1 IN IP4 10.0.0.1",
        "s=-",
        "c=IN IP4 10.0.0.1",
        "t=0 0",
        "m=audio 4000 RTP/SAVP 0",
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz",
        "m=audio 4002 RTP/AVP 0 8",
        "m=video 4004 RTP/AVP 96",
        "a=rtpmap:96 H264/90000",
        "",
    ]
    .join("\r\n");
    let o = MediaOffer::from_sdp(&text).unwrap();
    assert_eq!(o.section, 1);
    let m = answer(&o, &caps(&[Pcmu])).unwrap();
    let sections = answer_sections(&text, o.section, m.to_media_description(5000)).unwrap();
    let lines: Vec<String> = sections
        .iter()
        .map(|s| {
            format!(
                "{} {} {} {}",
                s.media_name.media,
                s.media_name.port.value,
                s.media_name.protos.join("/"),
                s.media_name.formats.join(" ")
            )
        })
        .collect();
    assert_eq!(
        lines,
        [
            "audio 0 RTP/SAVP 0",
            "audio 5000 RTP/AVP 0",
            "video 0 RTP/AVP 96"
        ]
    );
    // The rejected sections carry nothing else (no crypto, no rtpmap).
    assert!(sections[0].attributes.is_empty() && sections[2].attributes.is_empty());
    // A lone section: the answer alone.
    let o = offer(&["m=audio 4000 RTP/AVP 0"]);
    let m = answer(&o, &caps(&[Pcmu])).unwrap();
    let one = answer_sections(
        "m=audio 4000 RTP/AVP 0",
        o.section,
        m.to_media_description(5000),
    );
    assert_eq!(one.unwrap().len(), 1);
}

#[test]
fn disabled_streams_and_malformed_sdp_are_errors_not_panics() {
    assert_eq!(
        answer(&offer(&["m=audio 0 RTP/AVP 0"]), &caps(&[Pcmu])).unwrap_err(),
        NegotiationError::MediaDisabled
    );
    let ours = caps(&[Pcmu]).create_offer(5000, None);
    assert_eq!(
        process_answer(&ours, &offer(&["m=audio 0 RTP/AVP 0"])).unwrap_err(),
        NegotiationError::MediaDisabled
    );
    assert_eq!(
        MediaOffer::from_sdp(
            "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 4000 RTP/AVP 96\r\n"
        )
        .unwrap_err(),
        NegotiationError::NoAudioMedia
    );
    for junk in [
        "",
        "garbage",
        "v=1\r\n",
        "m=audio x RTP/AVP 0",
        "m=audio 99999 RTP/AVP 0",
        "m=audio 4000",
        "m=audio 4000 RTP/AVP 0\r\nzz=1",
    ] {
        assert!(
            matches!(
                MediaOffer::from_sdp(junk),
                Err(NegotiationError::InvalidSdp(_) | NegotiationError::NoAudioMedia)
            ),
            "{junk:?}"
        );
    }
    // Malformed attributes lose only themselves.
    let o = offer(&[
        "m=audio 4000 RTP/AVP 0 96 97 300 abc",
        "a=rtpmap:96 broken",
        "a=rtpmap:97 telephone-event/8000",
        "a=fmtp:97",
        "a=fmtp:x 1",
        "a=ptime:soon",
    ]);
    assert_eq!(
        o.codecs.iter().map(|c| c.pt).collect::<Vec<_>>(),
        vec![0, 97]
    );
    assert_eq!(o.ptime_ms, None);
}

// ---- Full SDP text round trip ----------------------------------------------------

const OFFER: &str = "v=0\r
o=alice 2890844526 2890844526 IN IP4 192.0.2.10\r
s=call\r
c=IN IP4 192.0.2.10\r
t=0 0\r
m=audio 49170 RTP/AVP 111 9 0 8 13 110 101\r
a=rtpmap:111 opus/48000/2\r
a=fmtp:111 minptime=10;useinbandfec=1;maxaveragebitrate=32000\r
a=rtpmap:9 G722/8000\r
a=rtpmap:0 PCMU/8000\r
a=rtpmap:8 PCMA/8000\r
a=rtpmap:13 CN/8000\r
a=rtpmap:110 telephone-event/48000\r
a=fmtp:110 0-15\r
a=rtpmap:101 telephone-event/8000\r
a=fmtp:101 0-16\r
a=ptime:20\r
a=maxptime:60\r
a=sendrecv\r
m=video 0 RTP/AVP 96\r
";

#[test]
fn sdp_offer_text_round_trips_through_the_answer_text() {
    // Answerer: parse the offer text, answer, write the answer's m=audio section.
    let offer = MediaOffer::from_sdp(OFFER).unwrap();
    assert_eq!(offer.port, 49170);
    assert_eq!(offer.protocol, "RTP/AVP");
    assert_eq!(offer.connection_address.as_deref(), Some("192.0.2.10"));
    assert_eq!(
        offer.codecs.iter().map(|c| c.pt).collect::<Vec<_>>(),
        vec![111, 9, 0, 8, 13, 110, 101]
    );
    assert_eq!(offer.codec(101).unwrap().fmtp_value("0-16"), Some(""));

    let local = caps(&[Pcma, Pcmu, Opus, ComfortNoise]);
    let media = answer(&offer, &local).unwrap();
    let section = media.to_sdp_answer(30000);
    assert_eq!(
        section,
        "m=audio 30000 RTP/AVP 111 110\r\n\
         a=rtpmap:111 opus/48000/2\r\n\
         a=fmtp:111 minptime=10;useinbandfec=1\r\n\
         a=rtpmap:110 telephone-event/48000\r\n\
         a=fmtp:110 0-15\r\n\
         a=ptime:20\r\n\
         a=maxptime:60\r\n\
         a=sendrecv\r\n"
    );
    // No CN: Opus was chosen and CN is only offered at 8000.
    assert_eq!(media.cn, None);

    // The SIP layer puts it under its session header; parse the whole answer back.
    let answer_text = format!(
        "v=0\r\no=bob 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\n{section}"
    );
    let parsed = MediaOffer::from_sdp(&answer_text).unwrap();
    assert_eq!(parsed.port, 30000);
    assert_eq!(parsed.connection_address.as_deref(), Some("198.51.100.7"));
    assert_eq!(parsed.codecs, media.receive);
    assert_eq!(parsed.ptime_ms, Some(20));
    assert_eq!(parsed.maxptime_ms, Some(60));
    assert_eq!(parsed.direction, Direction::SendRecv);
    // The sdp crate reads it as well (its own codec lookup).
    let session = sdp::SessionDescription::try_from(answer_text.clone()).unwrap();
    let opus = session.get_codec_for_payload_type(111).unwrap();
    assert_eq!((opus.name.as_str(), opus.clock_rate), ("opus", 48000));

    // Offerer: the original offer plus this answer give the mirror image.
    let ours = process_answer(&offer, &parsed).unwrap();
    assert_eq!(ours.send.pt, 111);
    assert_eq!(
        ours.opus.map(|o| o.use_inband_fec),
        Some(true),
        "from the answer's fmtp"
    );
    assert_eq!(ours.opus.and_then(|o| o.max_average_bitrate_bps), None);
    assert_eq!(ours.telephone_event_send, Some(110));
    assert_eq!(ours.telephone_event_recv, vec![110]);
    assert_eq!(
        ours.receive.iter().map(|r| r.pt).collect::<Vec<_>>(),
        vec![111, 110]
    );
    assert_eq!(ours.ptime_ms, 20);

    // With PCMU preferred and CN supported, CN/8000 joins the answer.
    let mut local = caps(&[Pcmu, ComfortNoise]);
    local.prefer_local_order = true;
    let media = answer(&offer, &local).unwrap();
    assert_eq!(media.cn, Some(13));
    assert_eq!(
        media.to_sdp_answer(30000).lines().next(),
        Some("m=audio 30000 RTP/AVP 0 13 101")
    );
}

#[test]
fn mutated_offers_never_panic() {
    // A small deterministic fuzz: byte substitutions in a real offer. Whatever parses
    // must negotiate (or fail) without panicking, and whatever answer comes out must
    // parse back.
    const ALPHABET: &[u8] = b"0123456789 /:=;-\r\nmaopPCMUtelphon";
    let local = caps(&[Opus, G722, Pcmu, Pcma, ComfortNoise]);
    let ours = local.create_offer(5000, None);
    let mut answered = 0;
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        // xorshift64
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..3000 {
        let mut bytes = OFFER.as_bytes().to_vec();
        for _ in 0..1 + next() % 4 {
            let at = (next() % bytes.len() as u64) as usize;
            bytes[at] = ALPHABET[(next() % ALPHABET.len() as u64) as usize];
        }
        let text = String::from_utf8(bytes).expect("ASCII in, ASCII out");
        let Ok(o) = MediaOffer::from_sdp(&text) else {
            continue;
        };
        let _ = process_answer(&ours, &o);
        if let Ok(media) = answer(&o, &local) {
            let back = MediaOffer::from_sdp(&media.to_sdp_answer(5000))
                .unwrap_or_else(|e| panic!("{e}: answer to {text:?}"));
            assert_eq!(back.codecs, media.receive, "{text:?}");
            answered += 1;
        }
    }
    // Most single-byte damage leaves an answerable offer; the sweep is not vacuous.
    assert!(answered > 1000, "only {answered} of 3000 answered");
}

#[test]
fn a_negotiated_answer_becomes_session_parameters_the_engine_runs() {
    use media_core::{
        ClockMode, CodecSpec, DialogId, EngineConfig, MediaEngine, MediaSessionParams, Ptime,
    };
    let o = offer(&[
        "m=audio 4000 RTP/AVP 111 0 8 101",
        "a=rtpmap:111 opus/48000/2",
        "a=fmtp:111 useinbandfec=1;usedtx=1;maxaveragebitrate=20000",
        "a=rtpmap:101 telephone-event/48000",
        "a=fmtp:101 0-15",
        "a=ptime:20",
    ]);
    let media = answer(&o, &caps(&[Opus, Pcmu, Pcma, TelephoneEvent])).unwrap();
    let p = MediaSessionParams::from_negotiated(&media).unwrap();
    assert_eq!(p.tx.payload_type.get(), 111);
    assert_eq!(p.tx.codec, media_core::codec::Codec::Opus);
    assert_eq!(p.ptime, Ptime::MS_20);
    // The offerer's fmtp reaches our encoder; its bitrate cap lowers our default.
    assert!(p.opus.inband_fec && p.opus.dtx);
    assert_eq!(p.opus.bitrate_bps, 20_000);
    // Telephone events at Opus's clock, on the payload type we receive them with.
    assert_eq!(p.telephone_event_pt.map(|t| t.get()), Some(101));
    // G.711 shares no sample rate with Opus, so only Opus is accepted on this session.
    assert!(p
        .rx
        .iter()
        .all(|c| c.codec == media_core::codec::Codec::Opus));
    let e = MediaEngine::new(EngineConfig {
        clock: ClockMode::Virtual,
        sessions_per_lane: 2,
        max_frame_samples: 960,
        ..Default::default()
    })
    .unwrap();
    e.start().unwrap();
    e.create_media_session(DialogId(1), p).unwrap();

    // A G.711 answer accepts both laws on their payload types (a peer may switch).
    let o = offer(&["m=audio 4000 RTP/AVP 8 0", "a=ptime:30"]);
    let p =
        MediaSessionParams::from_negotiated(&answer(&o, &caps(&[Pcmu, Pcma])).unwrap()).unwrap();
    assert_eq!(p.tx, CodecSpec::PCMA);
    assert_eq!(p.ptime, Ptime::MS_30);
    assert!(p.rx.contains(&CodecSpec::PCMU) && p.rx.contains(&CodecSpec::PCMA));
}

#[test]
fn the_engine_answers_an_offer_and_runs_the_session_through_the_session_core_traits() {
    use media_core::integration::session_core::{MediaCapabilityProvider, MediaSessionProvider};
    use media_core::{ClockMode, DialogId, EngineConfig, Error, MediaEngine};
    let e = MediaEngine::new(EngineConfig {
        clock: ClockMode::Virtual,
        sessions_per_lane: 4,
        max_frame_samples: 960,
        ..Default::default()
    })
    .unwrap();
    e.start().unwrap();
    // The capabilities name every codec media-core runs, and the DTMF/CN companions.
    let encodings = e.audio_capabilities().supported_encodings();
    for name in ["opus/48000/2", "G722/8000", "PCMU/8000", "PCMA/8000"] {
        assert!(
            encodings.iter().any(|x| x.eq_ignore_ascii_case(name)),
            "{name} in {encodings:?}"
        );
    }
    // A phone offering G.722 and PCMU with telephone-event.
    let o = offer(&[
        "m=audio 4000 RTP/AVP 9 0 101",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-16",
    ]);
    let (media, params) = e.negotiate_media(&o).unwrap();
    assert_eq!(media.send.pt, 9);
    assert!(media.to_sdp_answer(5000).contains("G722/8000"));
    let s = e.create_session(DialogId(7), params.clone()).unwrap();
    e.update_session(s.id, params).unwrap();
    e.destroy_session(s.id).unwrap();
    // No common codec: a typed error naming both lists.
    let o = offer(&["m=audio 4000 RTP/AVP 18", "a=rtpmap:18 G729/8000"]);
    match e.negotiate_media(&o) {
        Err(Error::Negotiation(n)) => assert!(n.to_string().contains("G729"), "{n}"),
        other => panic!("{other:?}"),
    }
}

/// An Opus offer asking for 60 ms packets, answered by an engine whose frame slots hold
/// 40 ms at 48 kHz (the default): the answer says 40 ms and the session it implies is
/// created. In review, 60 ms was answered and the session then refused
/// (`PayloadTooLarge`) after the answer had gone out. An engine with room answers 60 ms.
#[test]
fn a_ptime_the_engine_cannot_hold_is_answered_with_the_longest_that_fits() {
    use media_core::integration::session_core::{MediaCapabilityProvider, MediaSessionProvider};
    use media_core::{ClockMode, DialogId, EngineConfig, MediaEngine, Ptime};
    let o = offer(&[
        "m=audio 4000 RTP/AVP 111",
        "a=rtpmap:111 opus/48000/2",
        "a=ptime:60",
    ]);
    for (max_frame_samples, want) in [(1920, Ptime::MS_40), (2880, Ptime::MS_60)] {
        let e = MediaEngine::new(EngineConfig {
            clock: ClockMode::Virtual,
            sessions_per_lane: 4,
            max_frame_samples,
            ..Default::default()
        })
        .unwrap();
        e.start().unwrap();
        let (media, params) = e.negotiate_media(&o).unwrap();
        assert_eq!(params.ptime, want);
        assert_eq!(media.ptime_ms, want.ms());
        assert!(
            media
                .to_sdp_answer(5000)
                .contains(&format!("a=ptime:{}", want.ms())),
            "{}",
            media.to_sdp_answer(5000)
        );
        e.create_session(DialogId(1), params).unwrap();
    }
}

#[test]
fn opus_runs_at_the_lowest_rate_that_keeps_what_the_peer_plays_and_captures() {
    use media_core::{MediaSessionParams, SampleRate};
    let params = |fmtp: &str| {
        let o = offer(&[
            "m=audio 4000 RTP/AVP 111",
            "a=rtpmap:111 opus/48000/2",
            fmtp,
            "a=ptime:20",
        ]);
        MediaSessionParams::from_negotiated(&answer(&o, &caps(&[Opus])).unwrap()).unwrap()
    };
    // RFC 7587 §6.1: a wideband peer (plays and captures at most 16 kHz).
    let p = params("a=fmtp:111 maxplaybackrate=16000;sprop-maxcapturerate=16000");
    assert_eq!(p.sample_rate(), SampleRate::HZ_16000);
    assert_eq!(p.frame_samples(), 320);
    // A narrowband peer.
    let p = params("a=fmtp:111 maxplaybackrate=8000;sprop-maxcapturerate=8000");
    assert_eq!(p.sample_rate(), SampleRate::new(8000).unwrap());
    // Playback limited but capture fullband: keep fullband (what it sends is worth decoding).
    let p = params("a=fmtp:111 maxplaybackrate=8000");
    assert_eq!(p.sample_rate(), SampleRate::HZ_48000);
    // A narrowband peer that also offers PCMU: G.711 shares the 8 kHz audio rate but not
    // Opus's 48 kHz RTP clock, so only Opus is received on this session (the engine
    // refuses a receive set on two clocks).
    let o = offer(&[
        "m=audio 4000 RTP/AVP 111 0",
        "a=rtpmap:111 opus/48000/2",
        "a=fmtp:111 maxplaybackrate=8000;sprop-maxcapturerate=8000",
        "a=ptime:20",
    ]);
    let p =
        MediaSessionParams::from_negotiated(&answer(&o, &caps(&[Opus, Pcmu])).unwrap()).unwrap();
    assert_eq!(p.sample_rate(), SampleRate::new(8000).unwrap());
    assert!(
        p.rx_codecs()
            .iter()
            .all(|c| c.codec == media_core::codec::Codec::Opus),
        "{:?}",
        p.rx
    );
    // 12 kHz (mediumband) is an Opus rate too.
    let p = params("a=fmtp:111 maxplaybackrate=12000;sprop-maxcapturerate=11025");
    assert_eq!(p.sample_rate(), SampleRate::HZ_12000);
    // stereo=1 is a preference; the engine's audio is mono, so it sends mono.
    let p = params("a=fmtp:111 stereo=1");
    assert!(!p.opus.stereo);
    // Opus has no 30 ms packets: a 30 ms ptime preference becomes 20 ms.
    let o = offer(&[
        "m=audio 4000 RTP/AVP 111",
        "a=rtpmap:111 opus/48000/2",
        "a=ptime:30",
    ]);
    let p = MediaSessionParams::from_negotiated(&answer(&o, &caps(&[Opus])).unwrap()).unwrap();
    assert_eq!(p.ptime, media_core::Ptime::MS_20);
}
