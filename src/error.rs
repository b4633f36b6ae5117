//! The control-plane error type.
//!
//! The real-time side never returns these: what goes wrong there (a malformed packet,
//! a full ring, an exhausted slab) is a counted drop visible in the counters and events.
//! Every variant is cheap to build (no heap data) and says how a caller recovers.

use crate::codec::Codec;
use crate::types::{DialogId, PayloadType, SessionId};

/// Errors returned by [`MediaEngine`](crate::engine::MediaEngine) and the ingress handle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No live session has this id (never created, destroyed, or its slot was reused).
    /// Recover: drop whatever referred to it; re-create the session if the dialog lives on.
    #[error("unknown session {0}")]
    UnknownSession(SessionId),
    /// The session's lane has stopped (a thread of it panicked): nothing can be sent to
    /// it. Its sessions are gone; the engine reports each (`SessionStopped`, after
    /// `LaneFailed`) when events are next polled. Recover: end the calls it carried; new
    /// sessions go to the other lanes.
    #[error("lane {lane} has failed: its sessions are gone")]
    LaneFailed {
        /// The lane.
        lane: u16,
    },
    /// The dialog already has a live session. Recover: update or destroy that one.
    #[error("{0} already has a media session")]
    DuplicateDialog(DialogId),
    /// Every lane is at its fixed session capacity (set at engine construction).
    /// Recover: reject the call (SIP 503) or destroy idle sessions.
    #[error("capacity exhausted: all {capacity} session slots in use")]
    CapacityExhausted {
        /// Total session slots of the engine.
        capacity: usize,
    },
    /// A packet or frame is larger than the preallocated slot size.
    /// Recover: drop it; raise `max_payload_bytes` / `max_frame_samples` if it is legitimate.
    #[error("payload too large: {actual} bytes, limit {limit}")]
    PayloadTooLarge {
        /// The configured limit.
        limit: usize,
        /// The offered size.
        actual: usize,
    },
    /// An application wrote audio for a session that is not attached to the application
    /// audio handle. Recover: `MediaEngine::attach_audio` it first (a bridged session's
    /// audio comes from its peer).
    #[error("session {0} is not attached to the application audio handle")]
    NotAttached(SessionId),
    /// An application audio frame is longer than the lane's frame slots.
    /// Recover: write one ptime of audio at the session's codec rate; raise
    /// `max_frame_samples` if it is legitimate.
    #[error("frame too large: {actual} samples, limit {limit}")]
    FrameTooLarge {
        /// The configured limit (`max_frame_samples`).
        limit: usize,
        /// The offered length.
        actual: usize,
    },
    /// The payload type or codec is not one this engine can process.
    /// Recover: negotiate another codec (answer without it, or SIP 488).
    #[error("unsupported payload type {0:?}")]
    UnsupportedPayloadType(PayloadType),
    /// A codec exists but not with these parameters (rate, channels, ptime).
    /// Recover: negotiate other parameters.
    #[error("unsupported parameters for {codec:?}: {reason}")]
    UnsupportedParameters {
        /// The codec concerned.
        codec: Codec,
        /// Which parameter was refused.
        reason: &'static str,
    },
    /// Offer/answer failed (no common codec, disabled media, malformed SDP); the inner
    /// error names both sides' codec lists where relevant. Recover: answer 488.
    #[error("negotiation: {0}")]
    Negotiation(#[from] crate::codec::negotiation::NegotiationError),
    /// A voice-processing setting of the session was refused (see the component and
    /// reason). Recover: correct that setting.
    #[error("voice processing: {0}")]
    Dsp(#[from] crate::processing::audio::DspConfigError),
    /// A fixed-capacity ring (commands, ingress) is full. Nothing was queued.
    /// Recover: retry later; persistent fullness means the lane is overloaded.
    #[error("ring full: {ring}")]
    RingFull {
        /// Which ring.
        ring: &'static str,
    },
    /// The packet's session sends faster than the engine's per-session ingress limit
    /// allows (`EngineConfig::ingress_limit`); the packet was dropped and counted.
    /// Recover: nothing on the receive path; a session that keeps hitting this has a
    /// flooding or looping peer.
    #[error("session over its ingress rate limit")]
    RateLimited,
    /// The engine is not running (not started, or stopped). Recover: `start()` it.
    #[error("engine not running")]
    EngineNotRunning,
    /// The engine is already running. Recover: nothing to do, or `stop()` first.
    #[error("engine already running")]
    EngineAlreadyRunning,
    /// The two sessions cannot be bridged (different lanes, or frame durations or
    /// clock rates that need a transcoder this engine does not have).
    /// Recover: create both sessions with matching ptime, or on the same lane.
    #[error("cannot bridge {a} and {b}: {reason}")]
    BridgeMismatch {
        /// First session.
        a: SessionId,
        /// Second session.
        b: SessionId,
        /// Why.
        reason: &'static str,
    },
    /// The engine configuration is invalid. Recover: fix the named field.
    #[error("invalid configuration: {0}")]
    InvalidConfig(&'static str),
    /// A lane did not acknowledge queued commands within the bound.
    /// The commands stay queued and will still be applied.
    #[error("lane {lane} did not acknowledge within {waited_ms} ms")]
    AckTimeout {
        /// The lane.
        lane: usize,
        /// How long the caller waited.
        waited_ms: u64,
    },
    /// Spawning a lane thread failed (OS resource limits). Recover: lower the lane count.
    #[error("could not spawn lane thread: {0}")]
    Spawn(&'static str),
}

/// Result alias for media-core's control plane.
pub type Result<T> = std::result::Result<T, Error>;
