//! media-core: the real-time media engine of a VoIP stack.
//!
//! It sits between an RTP transport and a SIP stack and owns what happens to audio in
//! between: decode, jitter buffering, processing, encode.
//!
//! # Threading and real-time contract
//! - **Data plane**: lanes of worker threads, pinned to cores. Each lane runs four stages
//!   (jitter → decode → DSP → encode) joined by fixed-capacity SPSC rings carrying tokens
//!   for preallocated slots. After start, lane threads never allocate, free, lock or block;
//!   their only system call is the absolute-deadline sleep between 10 ms ticks.
//! - **Control plane**: [`MediaEngine`] builds everything a session needs, sends it to the
//!   lane on a command ring and frees what lanes hand back. It never waits on a lane except
//!   in [`MediaEngine::flush`] (bounded by its timeout) and [`MediaEngine::stop`].
//! - **Transport**: per lane, an [`IngressHandle`] pushes received RTP in and an
//!   [`EgressHandle`] pops RTP to send; both are non-blocking, and a full ring is a typed
//!   error plus a counted drop.
//! - **Applications**: a session is bridged to another on its lane (a gateway call), or
//!   attached ([`MediaEngine::attach_audio`]) to its lane's [`AudioHandle`], through which
//!   an endpoint application (IVR, recorder) reads the session's received audio and writes
//!   the audio it sends, with the same non-blocking slot hand-off. A session with neither
//!   (not yet bridged, or parked) still keeps its send side's time: digits go out, and with
//!   [`MediaSessionParams::keepalive_ms`] so do RTP keepalives when it has nothing to send.
//! - **Operators**: [`engine::QualityMonitor`] turns the sessions' counters into events
//!   (MOS and loss with hysteresis, a lane near its deadline, a stream that stops or never
//!   starts: [`quality::monitor::QualityEvent::MediaTimeout`]) and adaptation suggestions.
//!
//! # Example
//! A PCMU leg bridged to a PCMA leg, driven by the virtual clock:
//! ```
//! use media_core::{ClockMode, CodecSpec, DialogId, EngineConfig, MediaEngine, MediaSessionParams, Ptime};
//! use media_core::rtp::{write_header, RtpHeader};
//!
//! let engine = MediaEngine::new(EngineConfig { clock: ClockMode::Virtual, ..Default::default() })?;
//! engine.start()?;
//! let a = engine.create_media_session(DialogId(1), MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_20))?;
//! let b = engine.create_media_session(DialogId(2), MediaSessionParams::new(CodecSpec::PCMA, Ptime::MS_20))?;
//! engine.bridge(a.id, b.id)?;
//! let (mut ingress, mut egress) = engine.take_rtp_handles(0).unwrap();
//!
//! let mut pkt = [0xFFu8; 12 + 160]; // µ-law silence
//! for seq in 0..10u16 {
//!     let h = RtpHeader { marker: false, payload_type: 0, sequence: seq, timestamp: seq as u32 * 160, ssrc: 7 };
//!     write_header(&h, &mut pkt)?;
//!     ingress.push(a.id, &pkt)?;
//!     engine.step(2)?; // 20 ms
//! }
//! let out = egress.pop().expect("a PCMA packet for leg B");
//! assert_eq!(out.session(), b.id);
//! assert_eq!(out.header().payload_type, 8);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod buffer;
pub mod codec;
#[cfg(not(loom))]
pub mod engine;
pub mod error;
#[cfg(not(loom))]
pub mod integration;
pub mod processing;
pub mod quality;
pub mod rtp;
pub mod runtime;
pub mod session;
pub mod types;

pub use codec::{Codec, CodecInfo, CodecSpec};
#[cfg(not(loom))]
pub use engine::{
    EngineConfig, EngineEvent, MediaCapabilities, MediaEngine, MediaSessionHandle, Placement,
    PrometheusOptions,
};
pub use error::{Error, Result};
#[cfg(not(loom))]
pub use integration::{
    policer::IngressLimit, AudioHandle, EgressHandle, IngressHandle, MediaPacketHandler,
    OutboundPacket, ReceivedAudio, RtpPacketAdapter, RtpPacketSink,
};
pub use runtime::{ClockMode, Topology};
pub use session::MediaSessionParams;
pub use types::{DialogId, LaneId, PayloadType, Ptime, SampleRate, SessionId};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
