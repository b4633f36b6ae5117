//! FIELD-BUGS.md cases 23–27 (RTP parsing), plus brute-force no-panic sweeps
//! over crafted and pseudo-random buffers.

use media_core::rtp::{write_header, RtpError, RtpHeader, RtpPacket, RTP_HEADER_LEN};

/// A PCMU (PT 0) header with the given first byte (V/P/X/CC).
fn header(b0: u8, sequence: u16, timestamp: u32) -> Vec<u8> {
    let mut buf = vec![0u8; RTP_HEADER_LEN];
    let h = RtpHeader {
        marker: false,
        payload_type: 0,
        sequence,
        timestamp,
        ssrc: 0x1122_3344,
    };
    write_header(&h, &mut buf).expect("buffer is RTP_HEADER_LEN long");
    buf[0] = b0;
    buf
}

/// Checks the layout invariant every successful parse must satisfy, and
/// walks every accessor so a panic anywhere in them would surface.
fn check_consistent(buf: &[u8], pkt: &RtpPacket<'_>) {
    assert_eq!(
        pkt.payload_offset() + pkt.payload().len() + pkt.padding_len(),
        buf.len(),
        "layout does not add up for {buf:02x?}"
    );
    assert_eq!(pkt.csrcs().count(), pkt.csrc_count());
    if let Some(ext) = pkt.extension() {
        assert_eq!(ext.data.len() % 4, 0);
        let mut consumed = 0;
        for (id, data) in ext.elements() {
            assert_ne!(id, 0);
            consumed += data.len();
        }
        assert!(consumed <= ext.data.len());
    }
}

/// Case 23 (pjproject#388, #3283, curl#20744).
#[test]
fn zero_length_payload_keepalive_is_accepted_with_empty_payload() {
    let mut audio = header(0x80, 1000, 16_000);
    audio.extend_from_slice(&[0xFF; 160]);
    let first = RtpPacket::parse(&audio).unwrap();
    assert_eq!(first.payload().len(), 160);

    // Seq contiguous, ts +160, nothing after the 12-byte header.
    let keepalive = header(0x80, 1001, 16_160);
    let pkt = RtpPacket::parse(&keepalive).expect("a keepalive is valid RTP");
    assert_eq!(pkt.payload_type(), 0);
    assert_eq!(pkt.sequence(), first.sequence().wrapping_add(1));
    assert_eq!(pkt.timestamp(), first.timestamp().wrapping_add(160));
    assert_eq!(pkt.payload_offset(), 12);
    assert!(pkt.payload().is_empty());
    assert_eq!(pkt.padding_len(), 0);
}

/// Case 24 (pion/rtp#59, sipsorcery#608, str0m#212).
#[test]
fn padding_is_stripped_and_pad_count_larger_than_packet_is_rejected() {
    let mut padded = header(0xA0, 1, 160);
    padded.extend_from_slice(&[0x55; 160]);
    padded.extend_from_slice(&[0x00, 0x00, 0x00, 0x04]);
    let pkt = RtpPacket::parse(&padded).unwrap();
    assert_eq!(pkt.payload(), &[0x55; 160][..]);
    assert_eq!(pkt.padding_len(), 4);

    // Evil: P=1, empty payload, pad count 0xFF.
    let mut evil = header(0xA0, 2, 320);
    evil.push(0xFF);
    assert_eq!(
        RtpPacket::parse(&evil).unwrap_err(),
        RtpError::BadPadding {
            pad: 255,
            available: 1
        }
    );
    // Same, with not even the pad-count byte.
    let bare = header(0xA0, 3, 480);
    assert!(matches!(
        RtpPacket::parse(&bare),
        Err(RtpError::BadPadding { available: 0, .. })
    ));
}

/// Case 25 (pjproject#952, dholroyd/rtp-rs#1, team-telnyx/freeswitch#610).
#[test]
fn extension_length_counts_words_and_csrcs_are_counted_once() {
    // X=1, ext len=0: payload right after the 4-byte extension header.
    let mut empty_ext = header(0x90, 1, 160);
    empty_ext.extend_from_slice(&[0xBE, 0xDE, 0x00, 0x00]);
    empty_ext.extend_from_slice(&[0x77; 160]);
    let pkt = RtpPacket::parse(&empty_ext).unwrap();
    assert_eq!(pkt.payload_offset(), 16);
    assert_eq!(pkt.payload().len(), 160);
    assert!(pkt.extension().unwrap().data.is_empty());

    // CC=2, X=1, len=3: 12 + 8 + 4 + 12 = 36.
    let mut both = header(0x92, 2, 320);
    both.extend_from_slice(&[0, 0, 0, 0xA1, 0, 0, 0, 0xA2]);
    both.extend_from_slice(&[0x12, 0x34, 0x00, 0x03]);
    both.extend_from_slice(&[0xEE; 12]);
    both.extend_from_slice(&[0x77; 160]);
    let pkt = RtpPacket::parse(&both).unwrap();
    assert_eq!(pkt.payload_offset(), 36);
    assert!(pkt.csrcs().eq([0xA1, 0xA2]));
    let ext = pkt.extension().unwrap();
    assert_eq!(ext.profile, 0x1234);
    assert_eq!(ext.data, &[0xEE; 12][..]);
    assert_eq!(pkt.payload(), &[0x77; 160][..]);
}

/// Case 26 (eisenzopf/rvoip#19, jitsi-rtp#18).
#[test]
fn one_byte_extension_skips_pad_bytes_and_stops_at_id_15_keeping_earlier_elements() {
    let mut buf = header(0x90, 1, 160);
    buf.extend_from_slice(&[0xBE, 0xDE, 0x00, 0x03]);
    buf.extend_from_slice(&[
        0x10, 0xAA, // id 1, 1 byte
        0x00, // pad byte between elements
        0x21, 0xBB, 0xCC, // id 2, 2 bytes
        0xF3, 0x01, 0x02, 0x03, // id 15: stop here
        0x30, 0xDD, // id 3 after the stop: never yielded
    ]);
    buf.extend_from_slice(&[0x77; 160]);
    let pkt = RtpPacket::parse(&buf).expect("ID 15 is not a packet error");
    let ext = pkt.extension().unwrap();
    let elements: Vec<(u8, &[u8])> = ext.elements().collect();
    assert_eq!(elements, vec![(1, &[0xAA][..]), (2, &[0xBB, 0xCC][..])]);
    assert_eq!(pkt.payload().len(), 160);
}

/// Case 27 (dholroyd/rtp-rs#1, pion/rtp#12).
#[test]
fn truncated_header_is_an_error_not_a_panic() {
    // 13 bytes with X=1: the extension header needs bytes 12..16.
    let mut thirteen = header(0x90, 1, 160);
    thirteen.push(0xBE);
    assert_eq!(
        RtpPacket::parse(&thirteen).unwrap_err(),
        RtpError::TruncatedExtension {
            needed: 16,
            actual: 13
        }
    );

    // CC=15 in a 20-byte packet: the CSRC list alone needs 72 bytes.
    let mut cc15 = header(0x8F, 1, 160);
    cc15.resize(20, 0xAB);
    assert_eq!(
        RtpPacket::parse(&cc15).unwrap_err(),
        RtpError::TooShort {
            needed: 72,
            actual: 20
        }
    );
}

/// Packets that exercise every optional part of the header.
fn crafted_packets() -> Vec<Vec<u8>> {
    let mut packets = Vec::new();

    let mut p = header(0x80, 1, 160);
    p.extend_from_slice(&[0x55; 160]);
    packets.push(p);

    let mut p = header(0xA0, 2, 320);
    p.extend_from_slice(&[0x55; 160]);
    p.extend_from_slice(&[0, 0, 0, 4]);
    packets.push(p);

    let mut p = header(0xB2, 3, 480);
    p.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 2]);
    p.extend_from_slice(&[
        0xBE, 0xDE, 0x00, 0x02, 0x10, 0xAA, 0x00, 0x21, 0xBB, 0xCC, 0xF0, 0,
    ]);
    p.extend_from_slice(&[0x55; 20]);
    p.extend_from_slice(&[0, 2]);
    packets.push(p);

    let mut p = header(0x9F, 4, 640);
    p.extend_from_slice(&[0x01; 60]);
    p.extend_from_slice(&[0x10, 0x00, 0x00, 0x02, 1, 0, 2, 2, 0xAB, 0xCD, 0, 0]);
    p.extend_from_slice(&[0x55; 8]);
    packets.push(p);

    // Maximal extension length word with a short buffer behind it.
    let mut p = header(0x90, 5, 800);
    p.extend_from_slice(&[0xBE, 0xDE, 0xFF, 0xFF, 0x10, 0xAA]);
    packets.push(p);

    // Pad count 0xFF after a tiny payload.
    let mut p = header(0xA0, 6, 960);
    p.extend_from_slice(&[0x55, 0x55, 0xFF]);
    packets.push(p);

    packets
}

#[test]
fn no_prefix_of_crafted_packets_panics() {
    for packet in crafted_packets() {
        let full = RtpPacket::parse(&packet);
        for len in 0..=packet.len() {
            let prefix = &packet[..len];
            if let Ok(pkt) = RtpPacket::parse(prefix) {
                check_consistent(prefix, &pkt);
            }
        }
        if let Ok(pkt) = full {
            check_consistent(&packet, &pkt);
        }
    }
}

/// xorshift64 (Marsaglia 2003): deterministic, no extra crates.
struct XorShift64(u64);

impl XorShift64 {
    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

#[test]
fn random_buffers_never_panic_and_lengths_add_up() {
    const BUFFERS: usize = 200_000;
    let mut rng = XorShift64(0x9E37_79B9_7F4A_7C15);
    let mut buf = [0u8; 64];
    let mut parsed = 0usize;
    for i in 0..BUFFERS {
        let len = (rng.next_u64() % 64) as usize;
        for chunk in buf[..len].chunks_mut(8) {
            let bytes = rng.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        if i % 2 == 0 {
            if let Some(b0) = buf[..len].first_mut() {
                *b0 = (*b0 & 0x3F) | 0x80;
            }
        }
        let input = &buf[..len];
        if let Ok(pkt) = RtpPacket::parse(input) {
            parsed += 1;
            check_consistent(input, &pkt);
        }
    }
    // Guard against a sweep that silently tests only the reject path.
    assert!(parsed > BUFFERS / 50, "only {parsed} buffers parsed");
}
