//! An endpoint application's audio: the lane ring handle an IVR, recorder or conference
//! mixer uses instead of bridging a session to another.
//!
//! [`MediaEngine::attach_audio`](crate::MediaEngine::attach_audio) attaches a session to
//! its lane's [`AudioHandle`]. Then each frame period the lane hands the application the
//! session's received audio (decoded, concealed, processed by the session's `dsp` chain)
//! and encodes and sends the next frame the application wrote for it. Frames travel as
//! tokens of two preallocated slabs (one each way) over SPSC rings, the same hand-off as
//! the transport's packets: the application copies into and out of slots, nothing is
//! allocated and nothing blocks on either side.
//!
//! What can go wrong is a typed error at [`AudioHandle::write`] (too long, unknown
//! session, no free slot) or a counted drop on the lane (`LaneStats::app_underruns`,
//! `app_in_dropped`, `app_out_dropped`, `app_frames_unknown`: lane totals, as a session's
//! counter block has no room left within the 2 KiB hot-state budget).

use crate::runtime::lane::AudioParts;
use crate::runtime::msg::AppFrameSlot;
use crate::runtime::slab::Token;
use crate::types::SessionId;
use crate::Error;

/// Reads the received audio of a lane's attached sessions and writes the audio they send.
/// Owned by one application thread (`Send`, not `Clone`); never blocks, never allocates.
pub struct AudioHandle {
    parts: AudioParts,
    lane: u16,
    max_samples: usize,
}

impl AudioHandle {
    pub(crate) fn new(parts: AudioParts, lane: u16, max_samples: usize) -> Self {
        AudioHandle {
            parts,
            lane,
            max_samples,
        }
    }

    /// The lane served: attach and write only sessions whose [`SessionId::lane`] is this.
    pub fn lane(&self) -> usize {
        usize::from(self.lane)
    }

    /// The longest frame a slot holds, samples (the engine's `max_frame_samples`).
    pub fn max_frame_samples(&self) -> usize {
        self.max_samples
    }

    /// The next frame of received audio of an attached session, if any: one per frame
    /// period in which the session had audio to play (received, concealed or comfort
    /// noise); a period with none (before its first packet, after an outage longer than
    /// concealment covers) hands over no frame, so place frames in time by
    /// [`ReceivedAudio::played_ns`]. Its slot returns to the lane when the
    /// [`ReceivedAudio`] is dropped: read promptly, or the lane counts the frames it had no
    /// slot for in the lane's `app_out_dropped`.
    pub fn read(&mut self) -> Option<ReceivedAudio<'_>> {
        let token = self.parts.to_app.pop().ok()?;
        Some(ReceivedAudio {
            token: Some(token),
            handle: self,
        })
    }

    /// Frames waiting to be read.
    pub fn pending(&self) -> usize {
        self.parts.to_app.slots()
    }

    /// Queues one frame for attached session `session` to send: exactly one ptime of PCM
    /// at the session's rate ([`MediaSessionParams::frame_samples`](crate::MediaSessionParams::frame_samples)
    /// samples). The lane sends the frames it
    /// holds for a session one per frame period, in order, and holds up to
    /// [`APP_QUEUE_FRAMES`](crate::runtime::lane::APP_QUEUE_FRAMES); write about one
    /// frame ahead of the session's period.
    ///
    /// Errors: [`Error::FrameTooLarge`] beyond [`AudioHandle::max_frame_samples`];
    /// [`Error::UnknownSession`] if `session` is not live on this lane;
    /// [`Error::NotAttached`] if it is not attached
    /// ([`MediaEngine::attach_audio`](crate::MediaEngine::attach_audio)); [`Error::RingFull`]
    /// if every frame slot is taken (the application writes far ahead, or the lane is
    /// stalled). A frame that is not the session's length, or beyond its queue, or one the
    /// lane takes after the session was detached, or one written for an earlier
    /// attachment of the session (each attach has its epoch), is dropped by the lane and
    /// counted in the lane's `app_in_dropped`.
    pub fn write(&mut self, session: SessionId, pcm: &[i16]) -> Result<(), Error> {
        if pcm.len() > self.max_samples {
            return Err(Error::FrameTooLarge {
                limit: self.max_samples,
                actual: pcm.len(),
            });
        }
        let p = &mut self.parts;
        if session.lane() != usize::from(self.lane)
            || !p.shared.live.is_live(session.slot(), session.generation())
        {
            return Err(Error::UnknownSession(session));
        }
        let Some(epoch) = p
            .shared
            .attached
            .live_epoch(session.slot(), session.generation())
        else {
            return Err(Error::NotAttached(session));
        };
        let Ok(mut t) = p.from_app_free.pop() else {
            return Err(Error::RingFull { ring: "audio" });
        };
        p.from_app_slab.with_mut(&mut t, |a| {
            a.session = session.to_u64();
            a.samples = pcm.len();
            a.epoch = epoch;
            a.pcm[..pcm.len()].copy_from_slice(pcm);
        });
        // Cannot fail: the ring holds every slot.
        let _ = p.from_app.push(t);
        Ok(())
    }

    /// Frame slots free for [`AudioHandle::write`] right now.
    pub fn free_write_slots(&self) -> usize {
        self.parts.from_app_free.slots()
    }

    /// Frame slots free for the lane to hand received audio over in right now: those not
    /// waiting to be read ([`AudioHandle::pending`]) nor held in a [`ReceivedAudio`] nor
    /// being filled by the lane. With the lane idle and every [`ReceivedAudio`] dropped,
    /// `free_read_slots() + pending()` is [`AudioHandle::capacity`]: a check that no slot
    /// was lost.
    pub fn free_read_slots(&self) -> usize {
        let ring = &self.parts.to_app_free;
        ring.buffer().capacity() - ring.slots()
    }

    /// Frame slots each way.
    pub fn capacity(&self) -> usize {
        self.parts.from_app_slab.capacity()
    }
}

/// One frame of an attached session's received audio; borrows its slot until dropped.
pub struct ReceivedAudio<'a> {
    token: Option<Token>,
    handle: &'a mut AudioHandle,
}

impl ReceivedAudio<'_> {
    fn with<R>(&self, f: impl FnOnce(&AppFrameSlot) -> R) -> R {
        // Invariant: the token is only taken in `drop`.
        let t = self.token.as_ref().expect("token present until drop");
        self.handle.parts.to_app_slab.with(t, f)
    }

    /// The session that received it.
    pub fn session(&self) -> SessionId {
        self.with(|a| SessionId::from_u64(a.session))
    }

    /// Samples in the frame (one ptime at the session's rate).
    pub fn len(&self) -> usize {
        self.with(|a| a.samples)
    }

    /// True for a frame without samples (never produced by media-core).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Runs `f` over the samples without copying.
    pub fn with_pcm<R>(&self, f: impl FnOnce(&[i16]) -> R) -> R {
        self.with(|a| f(&a.pcm[..a.samples]))
    }

    /// Copies the samples into `out`, returning how many, or `None` if `out` is too small.
    pub fn copy_to(&self, out: &mut [i16]) -> Option<usize> {
        self.with(|a| {
            out.get_mut(..a.samples)?
                .copy_from_slice(&a.pcm[..a.samples]);
            Some(a.samples)
        })
    }

    /// The RTP timestamp of the received audio's first sample (of the packet it was
    /// played from; concealed audio continues the last one's timeline).
    pub fn source_timestamp(&self) -> u32 {
        self.with(|a| a.src_ts)
    }

    /// When the audio left the jitter buffer: the start of the lane tick that played it,
    /// on the lane's clock (as [`OutboundPacket::played_ns`](super::OutboundPacket::played_ns)).
    pub fn played_ns(&self) -> u64 {
        self.with(|a| a.played_ns)
    }
}

impl Drop for ReceivedAudio<'_> {
    fn drop(&mut self) {
        if let Some(t) = self.token.take() {
            // Cannot fail: the free ring holds as many entries as there are slots.
            let _ = self.handle.parts.to_app_free.push(t);
        }
    }
}
