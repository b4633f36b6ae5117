//! Zero-copy RTP (RFC 3550) packet view and header writer.
//!
//! [`RtpPacket::parse`] borrows a received datagram and validates every
//! length field against the buffer before anything is read: the fixed
//! header, the CSRC list, the header extension and the padding count. After a
//! successful parse every accessor is infallible and returns borrowed slices,
//! so the receive path neither allocates nor panics, whatever arrives from the
//! network. [`write_header`] is the send-side counterpart: it writes the
//! 12-byte fixed header into a caller-owned buffer.
//!
//! Header extensions are exposed raw ([`RtpExtension`]) and, for the RFC 8285
//! one-byte and two-byte forms, as an iterator of `(id, data)` elements
//! ([`RtpExtension::elements`]).
//!
//! Demultiplexing RTP from RTCP (RFC 5761 §4) or STUN/DTLS (RFC 7983) on a
//! shared port is the caller's job and happens before `parse`.

use core::iter::FusedIterator;

/// Length in bytes of the fixed RTP header (RFC 3550 §5.1), without CSRCs or
/// extension.
pub const RTP_HEADER_LEN: usize = 12;

/// The only RTP version media-core accepts (RFC 3550 §5.1).
const RTP_VERSION: u8 = 2;

/// Bytes per CSRC identifier and per extension length word.
const WORD_LEN: usize = 4;

/// Length of the extension header: 16-bit profile plus 16-bit length in words
/// (RFC 3550 §5.3.1).
const EXTENSION_HEADER_LEN: usize = 4;

/// "Defined by profile" value of the RFC 8285 §4.2 one-byte header form.
const ONE_BYTE_PROFILE: u16 = 0xBEDE;

/// RFC 8285 §4.3: the two-byte form is `0x100` in the top 12 bits; the low
/// four bits ("appbits") are application data.
const TWO_BYTE_PROFILE_MASK: u16 = 0xFFF0;
const TWO_BYTE_PROFILE: u16 = 0x1000;

/// RFC 8285 §4.2: one-byte ID 15 is reserved; parsing stops when it is seen.
const ONE_BYTE_RESERVED_ID: u8 = 15;

/// Fixed RTP header fields media-core reads and writes.
///
/// Version, padding, extension and CSRC count are not stored here: they are
/// derived from the packet layout on receive and fixed (version 2, none of
/// them present) by [`write_header`] on send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    /// Marker bit (M); for audio it flags the first packet of a talkspurt
    /// (RFC 3551 §4.1).
    pub marker: bool,
    /// Payload type, 0..=127 (7 bits).
    pub payload_type: u8,
    /// Sequence number; wraps at 2^16.
    pub sequence: u16,
    /// Media timestamp in clock-rate units; wraps at 2^32.
    pub timestamp: u32,
    /// Synchronisation source identifier.
    pub ssrc: u32,
}

/// Why a packet was rejected (or a header could not be written).
///
/// Every variant is `Copy` and carries only integers, so building one on the
/// real-time thread never allocates. On receive the recovery is always the
/// same: drop the packet, count it under the variant, and keep going; one bad
/// datagram says nothing about the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RtpError {
    /// The buffer ends before the fixed header or the CSRC list it announces
    /// (or, from [`write_header`], the output buffer is shorter than
    /// [`RTP_HEADER_LEN`]).
    ///
    /// Recovery: on receive, drop the packet and count it as truncated; on
    /// send, pass an output buffer of at least `needed` bytes.
    #[error("RTP buffer too short: needed {needed} bytes, have {actual}")]
    TooShort {
        /// Bytes the header requires up to the end of the part that failed.
        needed: usize,
        /// Bytes actually present.
        actual: usize,
    },
    /// The version field is not 2. This is usually not RTP at all (STUN,
    /// DTLS or garbage on the media port).
    ///
    /// Recovery: drop the packet and count it; if the port is shared,
    /// demultiplex (RFC 7983) before calling [`RtpPacket::parse`].
    #[error("unsupported RTP version {version}, expected 2")]
    BadVersion {
        /// The two version bits as received.
        version: u8,
    },
    /// The X bit is set but the extension header, or the number of 32-bit
    /// words its length field announces, runs past the end of the buffer.
    ///
    /// Recovery: drop the packet and count it as truncated; the payload
    /// offset cannot be trusted.
    #[error("RTP header extension truncated: needed {needed} bytes, have {actual}")]
    TruncatedExtension {
        /// Bytes the header plus extension requires.
        needed: usize,
        /// Bytes actually present.
        actual: usize,
    },
    /// The P bit is set but the pad count in the last byte is 0, or larger
    /// than the bytes that follow the header (RFC 3550 §5.1: the count
    /// includes itself, so it is at least 1).
    ///
    /// Recovery: drop the packet and count it; the payload length cannot be
    /// trusted.
    #[error("bad RTP padding: pad count {pad}, only {available} bytes after the header")]
    BadPadding {
        /// Pad count read from the last byte (0 when no byte follows the
        /// header at all).
        pad: usize,
        /// Bytes after the header and extension, padding included.
        available: usize,
    },
    /// [`write_header`] was given a payload type above 127, which would
    /// overwrite the marker bit.
    ///
    /// Recovery: a configuration bug on the send side; fix the negotiated
    /// payload type. Nothing was written.
    #[error("RTP payload type {payload_type} does not fit in 7 bits")]
    BadPayloadType {
        /// The rejected payload type.
        payload_type: u8,
    },
}

/// Location of the header extension inside the packet buffer.
#[derive(Debug, Clone, Copy)]
struct ExtensionRange {
    profile: u16,
    start: usize,
    end: usize,
}

/// A parsed view over a received packet.
///
/// Built only by [`RtpPacket::parse`], which has already checked every offset
/// this view holds against the buffer, so the accessors cannot fail.
#[derive(Debug, Clone, Copy)]
pub struct RtpPacket<'a> {
    buf: &'a [u8],
    header: RtpHeader,
    csrc_count: u8,
    extension: Option<ExtensionRange>,
    payload_offset: usize,
    padding_len: usize,
}

impl<'a> RtpPacket<'a> {
    /// Validates `buf` as an RTP packet and returns a view over it.
    ///
    /// Checks, in order: at least 12 bytes; version 2; the CSRC list
    /// (counted once, 4 bytes each); if X is set, the 4-byte extension header
    /// and its length in 32-bit words; if P is set, a pad count in the last
    /// byte between 1 and the bytes after the header. A packet with an empty
    /// payload (a 12-byte keepalive) is valid.
    ///
    /// Called on the realtime thread: it never allocates and never panics,
    /// whatever `buf` holds.
    ///
    /// # Errors
    ///
    /// [`RtpError::TooShort`], [`RtpError::BadVersion`],
    /// [`RtpError::TruncatedExtension`] or [`RtpError::BadPadding`]; see each
    /// variant for how to recover.
    ///
    /// # Examples
    ///
    /// ```
    /// use media_core::rtp::{RtpError, RtpPacket};
    ///
    /// // V=2, P=1, PT 0, seq 7, ts 160, SSRC 0x1234_5678, 3 payload bytes
    /// // and 2 padding bytes (the last byte is the pad count).
    /// let buf = [
    ///     0xA0, 0x00, 0x00, 0x07, 0x00, 0x00, 0x00, 0xA0, 0x12, 0x34, 0x56, 0x78,
    ///     0xFF, 0xFE, 0xFD, 0x00, 0x02,
    /// ];
    /// let pkt = RtpPacket::parse(&buf)?;
    /// assert_eq!(pkt.sequence(), 7);
    /// assert_eq!(pkt.timestamp(), 160);
    /// assert_eq!(pkt.payload(), &[0xFF, 0xFE, 0xFD]);
    /// assert_eq!(pkt.padding_len(), 2);
    ///
    /// // Truncated input is an error, never a panic.
    /// assert_eq!(
    ///     RtpPacket::parse(&buf[..5]).unwrap_err(),
    ///     RtpError::TooShort { needed: 12, actual: 5 }
    /// );
    /// # Ok::<(), RtpError>(())
    /// ```
    pub fn parse(buf: &'a [u8]) -> Result<Self, RtpError> {
        let actual = buf.len();
        // Slice pattern instead of indexing: the length check and the reads
        // are one operation, so there is no index that could go out of bounds.
        let &[b0, b1, s0, s1, t0, t1, t2, t3, c0, c1, c2, c3, ..] = buf else {
            return Err(RtpError::TooShort {
                needed: RTP_HEADER_LEN,
                actual,
            });
        };

        let version = b0 >> 6;
        if version != RTP_VERSION {
            return Err(RtpError::BadVersion { version });
        }
        let has_padding = b0 & 0x20 != 0;
        let has_extension = b0 & 0x10 != 0;
        let csrc_count = b0 & 0x0F;

        let header = RtpHeader {
            marker: b1 & 0x80 != 0,
            payload_type: b1 & 0x7F,
            sequence: u16::from_be_bytes([s0, s1]),
            timestamp: u32::from_be_bytes([t0, t1, t2, t3]),
            ssrc: u32::from_be_bytes([c0, c1, c2, c3]),
        };

        // RFC 3550 §5.1: CC counts 32-bit CSRC identifiers following the
        // fixed header. They are counted here and only here; the extension
        // offset starts after them (FIELD-BUGS case 25).
        let csrc_end = usize::from(csrc_count)
            .checked_mul(WORD_LEN)
            .and_then(|n| n.checked_add(RTP_HEADER_LEN))
            .unwrap_or(usize::MAX);
        if csrc_end > actual {
            return Err(RtpError::TooShort {
                needed: csrc_end,
                actual,
            });
        }

        let (extension, header_end) = if has_extension {
            let range = parse_extension(buf, csrc_end)?;
            (Some(range), range.end)
        } else {
            (None, csrc_end)
        };

        // Bytes after the header: payload plus padding. Cannot underflow
        // because every offset above was checked against `actual`.
        let available = actual.saturating_sub(header_end);
        let padding_len = if has_padding {
            // RFC 3550 §5.1: the last octet counts the padding octets,
            // itself included, so 0 and anything past the header are
            // malformed (FIELD-BUGS case 24).
            let pad = match buf.last() {
                Some(&last) if available > 0 => usize::from(last),
                _ => return Err(RtpError::BadPadding { pad: 0, available }),
            };
            if pad == 0 || pad > available {
                return Err(RtpError::BadPadding { pad, available });
            }
            pad
        } else {
            0
        };

        Ok(Self {
            buf,
            header,
            csrc_count,
            extension,
            payload_offset: header_end,
            padding_len,
        })
    }

    /// The fixed header fields.
    pub fn header(&self) -> RtpHeader {
        self.header
    }

    /// Marker bit (M).
    pub fn marker(&self) -> bool {
        self.header.marker
    }

    /// Payload type, 0..=127.
    pub fn payload_type(&self) -> u8 {
        self.header.payload_type
    }

    /// Sequence number.
    pub fn sequence(&self) -> u16 {
        self.header.sequence
    }

    /// Media timestamp in clock-rate units.
    pub fn timestamp(&self) -> u32 {
        self.header.timestamp
    }

    /// Synchronisation source identifier.
    pub fn ssrc(&self) -> u32 {
        self.header.ssrc
    }

    /// Number of CSRC identifiers (the CC field, 0..=15).
    pub fn csrc_count(&self) -> usize {
        usize::from(self.csrc_count)
    }

    /// The contributing source identifiers, in packet order.
    pub fn csrcs(&self) -> impl Iterator<Item = u32> + 'a {
        let end = RTP_HEADER_LEN + self.csrc_count() * WORD_LEN;
        // `parse` checked `end <= buf.len()`; `get` keeps this panic-free
        // regardless and yields nothing if that invariant were ever broken.
        self.buf
            .get(RTP_HEADER_LEN..end)
            .unwrap_or_default()
            .chunks_exact(WORD_LEN)
            .filter_map(|w| <[u8; WORD_LEN]>::try_from(w).ok())
            .map(u32::from_be_bytes)
    }

    /// The payload, with padding removed. Empty for a keepalive packet.
    pub fn payload(&self) -> &'a [u8] {
        let end = self.buf.len().saturating_sub(self.padding_len);
        self.buf.get(self.payload_offset..end).unwrap_or_default()
    }

    /// Offset of the payload in the buffer given to [`RtpPacket::parse`]:
    /// 12 + 4·CC, plus 4 + 4·length when an extension is present.
    pub fn payload_offset(&self) -> usize {
        self.payload_offset
    }

    /// Number of padding bytes at the end of the packet, pad-count byte
    /// included; 0 when the P bit is clear.
    pub fn padding_len(&self) -> usize {
        self.padding_len
    }

    /// The header extension, if the X bit is set.
    pub fn extension(&self) -> Option<RtpExtension<'a>> {
        let range = self.extension?;
        Some(RtpExtension {
            profile: range.profile,
            data: self.buf.get(range.start..range.end).unwrap_or_default(),
        })
    }
}

/// Validates the extension that starts at `start` and returns where its data
/// lies. RFC 3550 §5.3.1: a 16-bit profile value, then a 16-bit length in
/// 32-bit words that excludes the 4-byte extension header itself.
fn parse_extension(buf: &[u8], start: usize) -> Result<ExtensionRange, RtpError> {
    let actual = buf.len();
    let data_start = start.saturating_add(EXTENSION_HEADER_LEN);
    let Some(&[p0, p1, l0, l1]) = buf.get(start..data_start) else {
        return Err(RtpError::TruncatedExtension {
            needed: data_start,
            actual,
        });
    };
    let words = usize::from(u16::from_be_bytes([l0, l1]));
    let end = words
        .checked_mul(WORD_LEN)
        .and_then(|n| n.checked_add(data_start));
    match end {
        Some(end) if end <= actual => Ok(ExtensionRange {
            profile: u16::from_be_bytes([p0, p1]),
            start: data_start,
            end,
        }),
        _ => Err(RtpError::TruncatedExtension {
            needed: end.unwrap_or(usize::MAX),
            actual,
        }),
    }
}

/// The raw header extension of a packet (RFC 3550 §5.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpExtension<'a> {
    /// The 16-bit "defined by profile" field: `0xBEDE` for RFC 8285 one-byte
    /// elements, `0x1000..=0x100F` for two-byte elements.
    pub profile: u16,
    /// Extension data after the 4-byte extension header; its length is a
    /// multiple of 4.
    pub data: &'a [u8],
}

impl<'a> RtpExtension<'a> {
    /// Iterates the RFC 8285 elements as `(id, data)` pairs.
    ///
    /// Handles the one-byte form (profile `0xBEDE`) and the two-byte form
    /// (profile `0x100X`). Padding bytes (`0x00`) between elements are
    /// skipped. In the one-byte form, ID 15 ends the iteration and the
    /// elements before it are kept (RFC 8285 §4.2). A malformed or truncated
    /// element ends the iteration. Any other profile yields nothing.
    ///
    /// Called on the realtime thread: never allocates, never panics.
    pub fn elements(&self) -> ExtensionElements<'a> {
        let form = if self.profile == ONE_BYTE_PROFILE {
            ElementForm::OneByte
        } else if self.profile & TWO_BYTE_PROFILE_MASK == TWO_BYTE_PROFILE {
            ElementForm::TwoByte
        } else {
            ElementForm::Unknown
        };
        ExtensionElements {
            rest: self.data,
            form,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ElementForm {
    OneByte,
    TwoByte,
    Unknown,
}

/// Iterator over RFC 8285 header extension elements, yielding
/// `(id, data)`; created by [`RtpExtension::elements`].
#[derive(Debug, Clone)]
pub struct ExtensionElements<'a> {
    rest: &'a [u8],
    form: ElementForm,
}

impl<'a> ExtensionElements<'a> {
    /// Stops the iteration for good.
    fn finish(&mut self) -> Option<(u8, &'a [u8])> {
        self.rest = &[];
        None
    }

    fn next_one_byte(&mut self) -> Option<(u8, &'a [u8])> {
        loop {
            let (&first, tail) = self.rest.split_first()?;
            if first == 0 {
                // RFC 8285 §4.2: a padding byte carries no ID or length; skip
                // it and read the next byte as a new element.
                self.rest = tail;
                continue;
            }
            let id = first >> 4;
            // RFC 8285 §4.2: the 4-bit length is the data length minus one.
            let len = usize::from(first & 0x0F) + 1;
            if id == ONE_BYTE_RESERVED_ID || id == 0 {
                // ID 15: stop, keep earlier elements (RFC 8285 §4.2). ID 0 is
                // reserved for padding, so 0x01..=0x0F is malformed; stop, as
                // libwebrtc's `RtpPacket::ParseBuffer` does, rather than guess
                // a length.
                return self.finish();
            }
            let Some((data, after)) = tail.split_at_checked(len) else {
                return self.finish();
            };
            self.rest = after;
            return Some((id, data));
        }
    }

    fn next_two_byte(&mut self) -> Option<(u8, &'a [u8])> {
        loop {
            let (&id, tail) = self.rest.split_first()?;
            if id == 0 {
                // RFC 8285 §4.3: padding bytes, as in the one-byte form.
                self.rest = tail;
                continue;
            }
            // RFC 8285 §4.3: an 8-bit length that is the data length itself;
            // zero-length elements are allowed.
            let Some((&len, tail)) = tail.split_first() else {
                return self.finish();
            };
            let Some((data, after)) = tail.split_at_checked(usize::from(len)) else {
                return self.finish();
            };
            self.rest = after;
            return Some((id, data));
        }
    }
}

impl<'a> Iterator for ExtensionElements<'a> {
    type Item = (u8, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        match self.form {
            ElementForm::OneByte => self.next_one_byte(),
            ElementForm::TwoByte => self.next_two_byte(),
            ElementForm::Unknown => None,
        }
    }
}

impl FusedIterator for ExtensionElements<'_> {}

/// Writes a 12-byte version-2 RTP header (no padding, extension or CSRC) into
/// `out[..12]` and returns the number of bytes written (always
/// [`RTP_HEADER_LEN`]). The payload goes in `out[12..]`.
///
/// Called on the realtime thread: it never allocates and never panics.
///
/// # Errors
///
/// [`RtpError::TooShort`] if `out` is shorter than 12 bytes;
/// [`RtpError::BadPayloadType`] if `h.payload_type > 127`. Nothing is written
/// on error.
///
/// # Examples
///
/// ```
/// use media_core::rtp::{write_header, RtpHeader, RtpPacket, RTP_HEADER_LEN};
///
/// let h = RtpHeader { marker: true, payload_type: 0, sequence: 1, timestamp: 160, ssrc: 42 };
/// let mut buf = [0u8; RTP_HEADER_LEN + 160];
/// let n = write_header(&h, &mut buf)?;
/// assert_eq!(n, RTP_HEADER_LEN);
///
/// let pkt = RtpPacket::parse(&buf)?;
/// assert_eq!(pkt.header(), h);
/// assert_eq!(pkt.payload().len(), 160);
/// # Ok::<(), media_core::rtp::RtpError>(())
/// ```
pub fn write_header(h: &RtpHeader, out: &mut [u8]) -> Result<usize, RtpError> {
    if h.payload_type > 0x7F {
        return Err(RtpError::BadPayloadType {
            payload_type: h.payload_type,
        });
    }
    let actual = out.len();
    let Some(dst) = out.get_mut(..RTP_HEADER_LEN) else {
        return Err(RtpError::TooShort {
            needed: RTP_HEADER_LEN,
            actual,
        });
    };
    let [s0, s1] = h.sequence.to_be_bytes();
    let [t0, t1, t2, t3] = h.timestamp.to_be_bytes();
    let [c0, c1, c2, c3] = h.ssrc.to_be_bytes();
    let b1 = (u8::from(h.marker) << 7) | h.payload_type;
    dst.copy_from_slice(&[RTP_VERSION << 6, b1, s0, s1, t0, t1, t2, t3, c0, c1, c2, c3]);
    Ok(RTP_HEADER_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header with the given first byte, PT 0, seq 0x0102, ts 0x03040506,
    /// SSRC 0x0708090A.
    fn fixed(b0: u8) -> [u8; 12] {
        [
            b0, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A,
        ]
    }

    #[test]
    fn fixed_header_fields_are_decoded() {
        let mut buf = fixed(0x80);
        buf[1] = 0x80 | 8;
        let pkt = RtpPacket::parse(&buf).unwrap();
        assert!(pkt.marker());
        assert_eq!(pkt.payload_type(), 8);
        assert_eq!(pkt.sequence(), 0x0102);
        assert_eq!(pkt.timestamp(), 0x0304_0506);
        assert_eq!(pkt.ssrc(), 0x0708_090A);
        assert_eq!(pkt.payload_offset(), 12);
        assert!(pkt.payload().is_empty());
        assert_eq!(pkt.padding_len(), 0);
        assert!(pkt.extension().is_none());
        assert_eq!(pkt.csrcs().count(), 0);
    }

    #[test]
    fn buffers_shorter_than_fixed_header_are_too_short() {
        let buf = fixed(0x80);
        for n in 0..RTP_HEADER_LEN {
            assert_eq!(
                RtpPacket::parse(&buf[..n]).unwrap_err(),
                RtpError::TooShort {
                    needed: 12,
                    actual: n
                }
            );
        }
    }

    #[test]
    fn versions_other_than_two_are_rejected() {
        for version in [0u8, 1, 3] {
            let buf = fixed(version << 6);
            assert_eq!(
                RtpPacket::parse(&buf).unwrap_err(),
                RtpError::BadVersion { version }
            );
        }
    }

    #[test]
    fn csrcs_are_read_in_order_and_counted_once() {
        let mut buf = fixed(0x82).to_vec();
        buf.extend_from_slice(&[0, 0, 0, 1, 0xDE, 0xAD, 0xBE, 0xEF, 0xAA]);
        let pkt = RtpPacket::parse(&buf).unwrap();
        assert_eq!(pkt.csrc_count(), 2);
        assert!(pkt.csrcs().eq([1, 0xDEAD_BEEF]));
        assert_eq!(pkt.payload_offset(), 20);
        assert_eq!(pkt.payload(), &[0xAA]);
    }

    #[test]
    fn csrc_list_past_end_is_too_short() {
        let mut buf = fixed(0x83).to_vec();
        buf.extend_from_slice(&[0; 11]);
        assert_eq!(
            RtpPacket::parse(&buf).unwrap_err(),
            RtpError::TooShort {
                needed: 24,
                actual: 23
            }
        );
    }

    #[test]
    fn extension_length_counts_words_after_csrcs() {
        let mut buf = fixed(0x91).to_vec();
        buf.extend_from_slice(&[0, 0, 0, 9]); // CSRC
        buf.extend_from_slice(&[0x12, 0x34, 0x00, 0x01]); // profile, 1 word
        buf.extend_from_slice(&[1, 2, 3, 4]); // ext data
        buf.extend_from_slice(&[0xEE]); // payload
        let pkt = RtpPacket::parse(&buf).unwrap();
        let ext = pkt.extension().unwrap();
        assert_eq!(ext.profile, 0x1234);
        assert_eq!(ext.data, &[1, 2, 3, 4]);
        assert_eq!(pkt.payload_offset(), 12 + 4 + 4 + 4);
        assert_eq!(pkt.payload(), &[0xEE]);
        assert_eq!(ext.elements().count(), 0, "unknown profile yields nothing");
    }

    #[test]
    fn extension_running_past_end_is_truncated() {
        let mut buf = fixed(0x90).to_vec();
        buf.extend_from_slice(&[0xBE, 0xDE, 0x00, 0x02, 0, 0, 0, 0]);
        assert_eq!(
            RtpPacket::parse(&buf).unwrap_err(),
            RtpError::TruncatedExtension {
                needed: 24,
                actual: 20
            }
        );
        // Maximum declared length must not overflow or read out of bounds.
        let mut buf = fixed(0x9F).to_vec();
        buf.extend_from_slice(&[0u8; 60]);
        buf.extend_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF]);
        assert!(matches!(
            RtpPacket::parse(&buf),
            Err(RtpError::TruncatedExtension {
                needed: 262_216,
                ..
            })
        ));
        // X set with not even the extension header present.
        assert!(matches!(
            RtpPacket::parse(&fixed(0x90)),
            Err(RtpError::TruncatedExtension {
                needed: 16,
                actual: 12
            })
        ));
    }

    #[test]
    fn padding_is_removed_from_payload() {
        let mut buf = fixed(0xA0).to_vec();
        buf.extend_from_slice(&[9, 9, 0, 0, 3]);
        let pkt = RtpPacket::parse(&buf).unwrap();
        assert_eq!(pkt.payload(), &[9, 9]);
        assert_eq!(pkt.padding_len(), 3);
    }

    #[test]
    fn padding_may_fill_all_bytes_after_header() {
        let mut buf = fixed(0xA0).to_vec();
        buf.extend_from_slice(&[0, 0, 0, 4]);
        let pkt = RtpPacket::parse(&buf).unwrap();
        assert!(pkt.payload().is_empty());
        assert_eq!(pkt.padding_len(), 4);
    }

    #[test]
    fn zero_pad_count_is_rejected() {
        let mut buf = fixed(0xA0).to_vec();
        buf.extend_from_slice(&[1, 2, 0]);
        assert_eq!(
            RtpPacket::parse(&buf).unwrap_err(),
            RtpError::BadPadding {
                pad: 0,
                available: 3
            }
        );
    }

    #[test]
    fn padding_bit_without_bytes_after_header_is_rejected() {
        assert_eq!(
            RtpPacket::parse(&fixed(0xA0)).unwrap_err(),
            RtpError::BadPadding {
                pad: 0,
                available: 0
            }
        );
    }

    #[test]
    fn pad_count_cannot_reach_into_extension() {
        // The last byte's pad count (5) would eat into the extension data.
        let mut buf = fixed(0xB0).to_vec();
        buf.extend_from_slice(&[0xBE, 0xDE, 0x00, 0x01, 0x10, 0xAA, 0, 0]);
        buf.extend_from_slice(&[0, 0, 0, 4 + 1]);
        assert_eq!(
            RtpPacket::parse(&buf).unwrap_err(),
            RtpError::BadPadding {
                pad: 5,
                available: 4
            }
        );
    }

    #[test]
    fn one_byte_elements_are_iterated() {
        let ext = RtpExtension {
            profile: 0xBEDE,
            // id 1 len 1, pad, pad, id 2 len 3, trailing pad
            data: &[
                0x10, 0xAA, 0x00, 0x00, 0x22, 1, 2, 3, 0x00, 0x00, 0x00, 0x00,
            ],
        };
        let got: Vec<_> = ext.elements().collect();
        assert_eq!(got, vec![(1, &[0xAA][..]), (2, &[1, 2, 3][..])]);
    }

    #[test]
    fn one_byte_element_with_id_zero_and_nonzero_length_stops() {
        let ext = RtpExtension {
            profile: 0xBEDE,
            data: &[0x10, 0xAA, 0x01, 0x20, 0xBB, 0x00],
        };
        let got: Vec<_> = ext.elements().collect();
        assert_eq!(got, vec![(1, &[0xAA][..])]);
    }

    #[test]
    fn truncated_one_byte_element_ends_iteration() {
        let ext = RtpExtension {
            profile: 0xBEDE,
            data: &[0x10, 0xAA, 0x2F, 1, 2],
        };
        let mut it = ext.elements();
        assert_eq!(it.next(), Some((1, &[0xAA][..])));
        assert_eq!(it.next(), None);
        assert_eq!(it.next(), None);
    }

    #[test]
    fn two_byte_elements_are_iterated() {
        let ext = RtpExtension {
            profile: 0x1005,
            // id 1 len 0, pad, id 15 len 2, id 200 len 1
            data: &[1, 0, 0, 15, 2, 0xAB, 0xCD, 200, 1, 0x7F, 0, 0],
        };
        let got: Vec<_> = ext.elements().collect();
        assert_eq!(
            got,
            vec![(1, &[][..]), (15, &[0xAB, 0xCD][..]), (200, &[0x7F][..])]
        );
    }

    #[test]
    fn truncated_two_byte_element_ends_iteration() {
        for data in [&[1u8, 1, 9, 2][..], &[1, 1, 9, 2, 5, 6, 7][..]] {
            let ext = RtpExtension {
                profile: 0x1000,
                data,
            };
            let got: Vec<_> = ext.elements().collect();
            assert_eq!(got, vec![(1, &[9][..])]);
        }
    }

    #[test]
    fn write_header_round_trips_through_parse() {
        let cases = [
            RtpHeader {
                marker: false,
                payload_type: 0,
                sequence: 0,
                timestamp: 0,
                ssrc: 0,
            },
            RtpHeader {
                marker: true,
                payload_type: 127,
                sequence: u16::MAX,
                timestamp: u32::MAX,
                ssrc: u32::MAX,
            },
            RtpHeader {
                marker: true,
                payload_type: 101,
                sequence: 0xBEEF,
                timestamp: 0x1234_5678,
                ssrc: 0x9ABC_DEF0,
            },
        ];
        for h in cases {
            let mut buf = [0x55u8; 12 + 3];
            assert_eq!(write_header(&h, &mut buf), Ok(12));
            let pkt = RtpPacket::parse(&buf).unwrap();
            assert_eq!(pkt.header(), h);
            assert_eq!(pkt.payload(), &[0x55; 3]);
            assert_eq!(buf[0], 0x80, "V=2, no P, X or CC");
        }
    }

    #[test]
    fn write_header_rejects_short_buffer_and_wide_payload_type() {
        let h = RtpHeader {
            marker: false,
            payload_type: 0,
            sequence: 1,
            timestamp: 2,
            ssrc: 3,
        };
        let mut short = [0u8; 11];
        assert_eq!(
            write_header(&h, &mut short),
            Err(RtpError::TooShort {
                needed: 12,
                actual: 11
            })
        );
        assert_eq!(short, [0; 11], "nothing written on error");
        let mut buf = [0u8; 12];
        let wide = RtpHeader {
            payload_type: 128,
            ..h
        };
        assert_eq!(
            write_header(&wide, &mut buf),
            Err(RtpError::BadPayloadType { payload_type: 128 })
        );
        assert_eq!(buf, [0; 12]);
    }
}
