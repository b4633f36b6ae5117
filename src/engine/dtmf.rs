//! Sending DTMF on a session (RFC 4733 telephone events), from the control plane.

use super::{Error, MediaEngine, Result};
use crate::codec::audio::telephone_event::digit_to_event;
use crate::runtime::msg::{Bundle, DtmfCommand, Op};
use crate::types::SessionId;

impl MediaEngine {
    /// Sends DTMF `digit` ('0'-'9', '*', '#', 'A'-'D') on session `id` as RFC 4733
    /// telephone events lasting `duration_ms` (taken within 40 ms to 60 s): a marked first
    /// packet, duration updates every packet interval, the end packet three times
    /// (§2.5.1.4), long events segmented; the event packets replace the session's audio
    /// while they last. Through the command queue (never blocks). A digit asked for while
    /// one is being sent waits for its end packets and follows it 40 ms later (ITU-T Q.24),
    /// audio sent in the gap (one waits; a third is refused on the lane and counted,
    /// `tx_dtmf_refused`).
    ///
    /// Errors: [`Error::UnknownSession`]; [`Error::UnsupportedParameters`] when the session
    /// negotiated no telephone-event payload type to send with
    /// (`MediaSessionParams::telephone_event_send_pt`) or `digit` is not a DTMF digit;
    /// [`Error::RingFull`] when the lane's command ring is full; [`Error::LaneFailed`] when
    /// its lane has failed.
    pub fn send_dtmf(&self, id: SessionId, digit: char, duration_ms: u32) -> Result<()> {
        let mut g = self.lock();
        let rec = g.sessions.get(&id).ok_or(Error::UnknownSession(id))?;
        let codec = rec.params.tx.codec;
        if rec.params.telephone_event_send_pt.is_none() {
            return Err(Error::UnsupportedParameters {
                codec,
                reason: "no telephone-event payload type negotiated for sending",
            });
        }
        let event = digit_to_event(digit).ok_or(Error::UnsupportedParameters {
            codec,
            reason: "not a DTMF digit (0-9, *, #, A-D)",
        })?;
        let ls = &mut g.lanes[id.lane()];
        ls.next_seq += 1;
        let mut b = Bundle::new(ls.next_seq, Op::Dtmf, id);
        b.dtmf = Some(DtmfCommand {
            event,
            // RFC 4733 §2.3.4: volume in -dBm0; 10 is the usual level of a keypad tone.
            volume: 10,
            duration_ms: duration_ms.clamp(40, 60_000),
        });
        Self::send(ls, b)
    }
}
