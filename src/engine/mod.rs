//! The control plane: [`MediaEngine`] creates, updates, bridges and destroys sessions.
//!
//! It is not real-time. It allocates every object a session needs, sends it to the
//! session's lane through the lane's command ring, and frees what lanes hand back on their
//! retire rings. No call waits on a lane, except [`MediaEngine::flush`] and
//! [`MediaEngine::stop`], which wait at most the timeout given (`flush`) or one tick plus
//! the drain of queued work (`stop`). So the engine is safe to use from async code: every
//! other call takes a short, uncontended mutex and returns.

// The control plane is not real-time: a short, uncontended mutex serialises its calls.
#![allow(clippy::disallowed_types)]

use arrayvec::ArrayVec;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::buffer::adaptive::JitterConfig;
use crate::codec::{supported_codecs, Codec, CodecInfo, OpusSettings};
use crate::integration::{AudioHandle, EgressHandle, IngressHandle};
use crate::runtime::lane::{self, Lane, LaneConfig, LaneControl};
use crate::runtime::msg::{Bundle, Op};
use crate::runtime::stats::{HistogramSnapshot, LaneStats, SessionStats};
use crate::runtime::sync::Ordering;
use crate::runtime::thread::{self, Running, ThreadPlan, ThreadStartHook};
use crate::runtime::{ClockMode, Topology};
use crate::session::{MediaSessionParams, Route, SessionParts};
use crate::types::{DialogId, Ptime, SessionId};
use crate::{Error, Result};

pub use crate::runtime::msg::LaneEvent as EngineEvent;

mod dtmf;
mod metrics;
mod quality;

pub use metrics::PrometheusOptions;
pub(crate) use quality::codec_kind;
pub use quality::{EngineQuality, LaneQuality, QualityMonitor};

/// Engine configuration. Every capacity is fixed when the engine is built.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Number of lanes (session shards, each with its own thread or threads).
    pub lanes: usize,
    /// Session slots per lane.
    pub sessions_per_lane: usize,
    /// Stage-to-thread mapping.
    pub topology: Topology,
    /// Real-time threads or a virtual clock stepped by the caller.
    pub clock: ClockMode,
    /// Cores to pin lane threads to, assigned in order (lane 0's thread(s) first); empty
    /// leaves threads unpinned.
    pub cores: Vec<usize>,
    /// Try to raise lane thread priority (failure is reported, not fatal).
    pub raise_priority: bool,
    /// Largest RTP payload accepted or produced, bytes.
    pub max_payload_bytes: usize,
    /// Largest frame in samples (all channels); default 1920 = 48 kHz stereo 20 ms.
    pub max_frame_samples: usize,
    /// Ingress packet slots per lane; `None` = 8 per session + 256 (jitter buffers hold
    /// packets: size this for the delay you allow).
    pub packet_slots_per_lane: Option<usize>,
    /// Frame slots per lane; `None` = enough for the topology.
    pub frame_slots_per_lane: Option<usize>,
    /// Egress packet slots per lane; `None` = 4 per session + 256.
    pub egress_slots_per_lane: Option<usize>,
    /// Application frame slots per lane, each way (the lane's [`AudioHandle`], for
    /// sessions attached with [`MediaEngine::attach_audio`]); `None` = 64. Frames the
    /// application has not read yet hold their slots (a reader that falls behind takes
    /// them all, and the lane then counts the frames it cannot hand over), and each
    /// session holds up to [`APP_QUEUE_FRAMES`](crate::runtime::lane::APP_QUEUE_FRAMES)
    /// written ahead: size this at about 4 per attached session for an application that
    /// reads every period and writes one frame ahead. An attached session also uses two
    /// frame slots per period instead of one (`frame_slots_per_lane`: the split topology's
    /// default holds one per session).
    pub app_frame_slots_per_lane: Option<usize>,
    /// Per-session ingress rate limit, applied by the lane's ingress handle before a packet
    /// takes a slot, so one flooding peer cannot take the slots of the lane's other
    /// sessions (see [`crate::integration::policer`]); `None` turns it off. Default:
    /// 500 packets/s with a burst of 64.
    pub ingress_limit: Option<crate::integration::policer::IngressLimit>,
    /// Commands in flight per lane.
    pub command_capacity: usize,
    /// Events buffered per lane and producing stage.
    pub event_capacity: usize,
    /// Default jitter buffer bounds and initial delay (clock rate is set per codec).
    pub jitter: JitterConfig,
    /// Relay payloads without decoding when both legs of a bridge use the same codec.
    pub relay_same_codec: bool,
    /// Run on each lane thread at start (e.g. allocation accounting in tests).
    pub on_thread_start: Option<ThreadStartHook>,
    /// Lock the process's memory at [`MediaEngine::start`] (`mlockall(MCL_CURRENT |
    /// MCL_FUTURE)`), so no lane ever waits on a page fault or swap-in. Needs
    /// `CAP_IPC_LOCK` or a large enough `RLIMIT_MEMLOCK`; failure is logged, never fatal
    /// (like pinning). Off by default: it locks the whole process, the embedding
    /// application included, which is the operator's call.
    pub lock_memory: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            lanes: 1,
            sessions_per_lane: 1024,
            topology: Topology::Fused,
            clock: ClockMode::Realtime,
            cores: Vec::new(),
            raise_priority: true,
            max_payload_bytes: 1280,
            max_frame_samples: 1920,
            packet_slots_per_lane: None,
            frame_slots_per_lane: None,
            egress_slots_per_lane: None,
            app_frame_slots_per_lane: None,
            ingress_limit: Some(crate::integration::policer::IngressLimit::default()),
            command_capacity: 1024,
            event_capacity: 4096,
            jitter: JitterConfig::default(),
            relay_same_codec: true,
            on_thread_start: None,
            lock_memory: false,
        }
    }
}

impl EngineConfig {
    fn lane_config(&self, lane: u16) -> LaneConfig {
        let s = self.sessions_per_lane;
        LaneConfig {
            lane,
            sessions: s,
            max_payload_bytes: self.max_payload_bytes,
            max_frame_samples: self.max_frame_samples,
            packet_slots: self.packet_slots_per_lane.unwrap_or(8 * s + 256),
            frame_slots: self.frame_slots_per_lane.unwrap_or(match self.topology {
                // A fused lane holds at most one chunk of frames per direction.
                Topology::Fused => 4 * lane::FUSED_CHUNK,
                // A split lane may have a whole tick of frames in flight.
                Topology::Split => 2 * s + 64,
            }),
            egress_slots: self.egress_slots_per_lane.unwrap_or(4 * s + 256),
            app_frame_slots: self.app_frame_slots_per_lane.unwrap_or(64),
            command_capacity: self.command_capacity,
            event_capacity: self.event_capacity,
        }
    }

    fn validate(&self) -> Result<()> {
        if self.lanes == 0 || self.lanes > usize::from(u16::MAX) {
            return Err(Error::InvalidConfig("lanes must be 1..=65535"));
        }
        if self.sessions_per_lane == 0 || self.sessions_per_lane >= 1 << 24 {
            return Err(Error::InvalidConfig("sessions_per_lane must be 1..2^24"));
        }
        if self.command_capacity < 4 {
            return Err(Error::InvalidConfig("command_capacity must be at least 4"));
        }
        if self.max_frame_samples < 80 || self.max_payload_bytes < 80 {
            return Err(Error::InvalidConfig(
                "max_frame_samples and max_payload_bytes must be at least 80",
            ));
        }
        if self.jitter.min_delay_ms > self.jitter.max_delay_ms {
            return Err(Error::InvalidConfig(
                "jitter min_delay_ms must not exceed max_delay_ms",
            ));
        }
        if self.frame_slots_per_lane == Some(0)
            || self.packet_slots_per_lane == Some(0)
            || self.egress_slots_per_lane == Some(0)
            || self.app_frame_slots_per_lane == Some(0)
        {
            return Err(Error::InvalidConfig("slot counts must be positive"));
        }
        if self.ingress_limit.is_some_and(|l| !l.is_valid()) {
            return Err(Error::InvalidConfig(
                "ingress_limit needs 1..=10^9 packets per second and a burst of at least 1",
            ));
        }
        Ok(())
    }
}

/// What the engine can do (for SDP offers and capacity planning).
#[derive(Debug, Clone, PartialEq)]
pub struct MediaCapabilities {
    /// Codecs, in preference order.
    pub codecs: &'static [CodecInfo],
    /// Supported packetisation times.
    pub ptimes: &'static [Ptime],
    /// Total session slots.
    pub max_sessions: usize,
    /// Lanes.
    pub lanes: usize,
    /// Largest payload, bytes.
    pub max_payload_bytes: usize,
}

/// Where a new session goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Placement {
    /// The lane with the fewest live sessions (ties: lowest index).
    #[default]
    LeastLoaded,
    /// A given lane.
    Lane(usize),
    /// The lane of an existing session (the other leg of a call: bridged sessions must
    /// share a lane so audio never crosses cores).
    With(SessionId),
}

/// A created session: its id plus what it was created for. Plain data, cheap to clone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MediaSessionHandle {
    /// The session.
    pub id: SessionId,
    /// The dialog it serves.
    pub dialog: DialogId,
}

impl MediaSessionHandle {
    /// The lane the session runs on: push its packets through that lane's ingress handle.
    pub fn lane(&self) -> usize {
        self.id.lane()
    }
}

/// A route command's contents, built before it is queued.
struct PlannedRoute {
    route: Option<Route>,
    resampler: Option<Box<crate::processing::format::resample::Resampler>>,
}

/// A bridge's routes, each with the session it is sent for.
type BridgeRoutes = ArrayVec<(SessionId, PlannedRoute), 2>;

struct SessionRecord {
    dialog: DialogId,
    params: MediaSessionParams,
    peer: Option<SessionId>,
    /// Attached to its lane's application audio handle (then `peer` is `None`).
    app: bool,
    round_trip_ms: Option<f64>,
    /// Peer-reported (packets expected, packets lost) of the stream this session sends.
    peer_loss: Option<(u64, u64)>,
    /// Updates applied (each builds the session's encoder afresh from its parameters,
    /// undoing quality adjustments: the monitor re-applies them).
    updates: u32,
    /// Attachments to the application audio handle so far (mod 128): each tags the frames
    /// written for it, so those of an earlier one never play in a later one.
    attach_epoch: u8,
}

enum LaneRun {
    Idle(Box<Lane>),
    Threads(Running),
    /// Lost: a lane thread panicked.
    Gone,
}

struct LaneState {
    ctl: LaneControl,
    run: LaneRun,
    free_slots: Vec<u32>,
    generations: Vec<u32>,
    live: usize,
    next_seq: u64,
    retired_seq: u64,
    outstanding: usize,
    handles: Option<(IngressHandle, EgressHandle)>,
    audio: Option<AudioHandle>,
    /// The lane's failure (a panicked thread) has been reported and its sessions forgotten.
    failure_reported: bool,
}

struct Inner {
    lanes: Vec<LaneState>,
    sessions: HashMap<SessionId, SessionRecord>,
    dialogs: HashMap<DialogId, SessionId>,
    running: bool,
    events: VecDeque<EngineEvent>,
    rng: u64,
}

impl Inner {
    /// Frees what every lane retired and gathers their events (see [`MediaEngine::collect`]).
    fn collect_all(&mut self) {
        for i in 0..self.lanes.len() {
            let ls = &self.lanes[i];
            if !ls.failure_reported && ls.ctl.shared.failed.load(Ordering::Acquire) {
                self.fail_lane(i);
            }
            MediaEngine::collect(&mut self.lanes[i], &mut self.events);
        }
    }

    /// Lane-failure policy (see `runtime::thread`): a lane whose thread panicked is
    /// joined, its sessions are forgotten (each reported as stopped after a
    /// `LaneFailed` event) and it takes no new sessions; the other lanes run on.
    fn fail_lane(&mut self, i: usize) {
        let ls = &mut self.lanes[i];
        ls.failure_reported = true;
        if let LaneRun::Threads(r) = std::mem::replace(&mut ls.run, LaneRun::Gone) {
            // The panicking thread has exited and the lane's other threads stop (the
            // guard set their stop flag); what state comes back is dropped here, on
            // the control thread.
            drop(r.join());
        }
        // What the lane reported before it stopped comes first (a session's
        // `SessionStarted` before its `SessionStopped`), and its retired bundles are taken
        // before its slots are written off.
        MediaEngine::collect(&mut self.lanes[i], &mut self.events);
        let ls = &mut self.lanes[i];
        ls.live = 0;
        ls.free_slots.clear();
        let mut lost: Vec<SessionId> = self
            .sessions
            .keys()
            .filter(|id| id.lane() == i)
            .copied()
            .collect();
        lost.sort();
        tracing::error!(
            lane = i,
            sessions_lost = lost.len(),
            "lane thread panicked: lane stopped, its sessions are gone"
        );
        self.events.push_back(EngineEvent::LaneFailed {
            lane: i as u16,
            sessions_lost: lost.len() as u32,
        });
        for id in lost {
            self.lanes[i].ctl.shared.live.clear(id.slot);
            self.lanes[i].ctl.shared.attached.clear(id.slot);
            if let Some(rec) = self.sessions.remove(&id) {
                self.dialogs.remove(&rec.dialog);
            }
            self.events.push_back(EngineEvent::SessionStopped(id));
        }
    }
}

/// The media engine: control plane over a fixed set of lanes.
pub struct MediaEngine {
    config: EngineConfig,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for MediaEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaEngine")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

impl MediaEngine {
    /// Builds the engine and allocates every lane's slabs, rings and session tables.
    /// Nothing runs until [`MediaEngine::start`].
    pub fn new(config: EngineConfig) -> Result<Self> {
        config.validate()?;
        let mut lanes = Vec::with_capacity(config.lanes);
        for i in 0..config.lanes {
            let (lane, ctl, ing, eg, audio) = lane::build(&config.lane_config(i as u16));
            let s = config.sessions_per_lane;
            lanes.push(LaneState {
                ctl,
                run: LaneRun::Idle(Box::new(lane)),
                free_slots: (0..s as u32).rev().collect(),
                generations: vec![0; s],
                live: 0,
                next_seq: 0,
                retired_seq: 0,
                outstanding: 0,
                handles: Some((
                    IngressHandle::new(
                        ing,
                        i as u16,
                        s,
                        config.ingress_limit,
                        config.clock == ClockMode::Virtual,
                    ),
                    EgressHandle::new(eg),
                )),
                audio: Some(AudioHandle::new(audio, i as u16, config.max_frame_samples)),
                failure_reported: false,
            });
        }
        let seed = Instant::now().elapsed().as_nanos() as u64
            ^ (std::process::id() as u64) << 32
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0x9E37_79B9_7F4A_7C15);
        Ok(MediaEngine {
            config,
            inner: Mutex::new(Inner {
                lanes,
                sessions: HashMap::new(),
                dialogs: HashMap::new(),
                running: false,
                events: VecDeque::new(),
                rng: seed | 1,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The data behind the mutex stays consistent across a panic in a caller.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The configuration the engine was built with.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Takes lane `lane`'s transport handles (once; `None` afterwards or if out of range).
    pub fn take_rtp_handles(&self, lane: usize) -> Option<(IngressHandle, EgressHandle)> {
        self.lock().lanes.get_mut(lane)?.handles.take()
    }

    /// Takes lane `lane`'s application audio handle (once; `None` afterwards or if out of
    /// range): an endpoint application (IVR, recorder, conference mixer) reads the
    /// received audio of the lane's sessions attached with [`MediaEngine::attach_audio`]
    /// and writes the audio they send. Like the transport's handles it is owned by one
    /// thread and never blocks.
    pub fn take_audio_handle(&self, lane: usize) -> Option<AudioHandle> {
        self.lock().lanes.get_mut(lane)?.audio.take()
    }

    /// Attaches a session to its lane's [`AudioHandle`] instead of a bridged peer: from
    /// its next frame period its received audio, after its voice processing (`dsp`), is
    /// read with [`AudioHandle::read`], and what the application writes for it with
    /// [`AudioHandle::write`] is encoded and sent, one frame per period (its echo
    /// canceller, if any, takes that as its reference). Frames are one ptime of PCM at the
    /// session's rate: [`MediaSessionParams::frame_samples`] samples at
    /// [`MediaSessionParams::sample_rate`] (8 kHz for G.711, 16 kHz for G.722, Opus's
    /// configured rate, 48 kHz by default). A period the application has no frame for
    /// sends nothing (write silence to keep the stream, and NAT bindings, alive), and
    /// `MediaSessionParams::dtx` does not apply (no detector runs on what the
    /// application sends). A re-INVITE that changes the codec or ptime drops the frames
    /// queued for the old one. Its RFC 4733 and in-band digits arrive as
    /// [`EngineEvent::Dtmf`] events and are not sent back; [`MediaEngine::send_dtmf`]
    /// sends digits. A bridge the session
    /// was part of is dissolved; [`MediaEngine::detach_audio`] (or
    /// [`MediaEngine::unbridge`]) detaches it again, and [`MediaEngine::bridge`] replaces
    /// the attachment. Each attachment is new: frames written for an earlier one (a detach
    /// and attach to flush a prompt) never play in it; they come back counted
    /// (`app_in_dropped`).
    ///
    /// Errors: [`Error::UnknownSession`]; [`Error::RingFull`] if the lane's command ring
    /// has no room (nothing changed); [`Error::LaneFailed`] if its lane has failed.
    #[tracing::instrument(level = "debug", skip(self), err(Display))]
    pub fn attach_audio(&self, id: SessionId) -> Result<()> {
        let mut g = self.lock();
        let inner = &mut *g;
        let rec = inner.sessions.get(&id).ok_or(Error::UnknownSession(id))?;
        if rec.app {
            return Ok(());
        }
        let old = rec.peer.filter(|p| *p != id);
        let need = 1 + usize::from(old.is_some());
        Self::check_room(&mut inner.lanes[id.lane()], need)?;
        if let Some(old) = old {
            inner.sessions.get_mut(&old).expect("peer record").peer = None;
            self.route(inner, old, None)?;
        }
        // A new attachment: frames written for an earlier one (a detach and attach in
        // quick succession, as an IVR flushing a prompt) are not this one's.
        let epoch = {
            let rec = inner.sessions.get_mut(&id).expect("checked");
            rec.attach_epoch = rec.attach_epoch.wrapping_add(1) & 0x7F;
            rec.attach_epoch
        };
        // Before the route: frames written once this returns are the session's.
        inner.lanes[id.lane()]
            .ctl
            .shared
            .attached
            .set_with_epoch(id.slot, id.generation, epoch);
        let route = Route {
            dst_slot: id.slot,
            dst_codec: inner.sessions[&id].params.tx.codec,
            relay_ok: false,
            dst_needs_audio: true,
            app: true,
            epoch,
        };
        Self::send_route(
            inner,
            id,
            PlannedRoute {
                route: Some(route),
                resampler: None,
            },
        )?;
        let rec = inner.sessions.get_mut(&id).expect("checked");
        rec.peer = None;
        rec.app = true;
        Ok(())
    }

    /// Detaches a session from the application audio handle: from its next frame period
    /// its received audio goes nowhere and it sends no audio, until it is bridged or
    /// attached again; frames the application had queued for it come back unsent. No-op
    /// if it is not attached (a bridge is left as it is: [`MediaEngine::unbridge`]).
    ///
    /// Errors: [`Error::UnknownSession`]; [`Error::RingFull`] if the lane's command ring
    /// has no room (nothing changed); [`Error::LaneFailed`] if its lane has failed.
    pub fn detach_audio(&self, id: SessionId) -> Result<()> {
        let mut g = self.lock();
        let inner = &mut *g;
        let rec = inner.sessions.get(&id).ok_or(Error::UnknownSession(id))?;
        if rec.app {
            // Room first: the lane must not stay attached while the record says detached.
            Self::check_room(&mut inner.lanes[id.lane()], 1)?;
            Self::detach_locked(inner, id);
            self.route(inner, id, None)?;
        }
        Ok(())
    }

    /// Forgets `id`'s attachment to the application audio handle (before the route that
    /// ends it is sent: from here the handle refuses its frames).
    fn detach_locked(inner: &mut Inner, id: SessionId) {
        inner.lanes[id.lane()].ctl.shared.attached.clear(id.slot);
        if let Some(rec) = inner.sessions.get_mut(&id) {
            rec.app = false;
        }
    }

    /// Puts the process's anonymous memory, where sessions' state lives, on transparent
    /// huge pages: marks the 2 MiB pages that are at least half in use now
    /// (`MADV_HUGEPAGE`) and with `collapse` rebuilds them as huge pages (`MADV_COLLAPSE`,
    /// Linux 6.1+). Memory allocated afterwards, such as the state of sessions created
    /// later, is not covered: call it again after the next batch. Worth about a quarter more calls per core at thousands of sessions on a
    /// lane (PERF.md), where 4 KiB pages make every few sessions a page walk. A collapse
    /// copies memory the lanes may be using, which then wait for it: call it after
    /// creating a batch of sessions and before their traffic, or at a quiet moment.
    /// Control plane; see [`crate::runtime::memory`].
    pub fn use_huge_pages(&self, collapse: bool) -> crate::runtime::memory::HugePages {
        crate::runtime::memory::use_huge_pages(collapse)
    }

    /// Starts the lanes: spawns pinned threads (real-time clock) or readies them for
    /// [`MediaEngine::step`] (virtual clock).
    #[tracing::instrument(level = "info", skip_all, fields(lanes = self.config.lanes))]
    pub fn start(&self) -> Result<()> {
        let mut g = self.lock();
        if g.running {
            return Err(Error::EngineAlreadyRunning);
        }
        if self.config.lock_memory {
            // SAFETY: mlockall takes flags only and touches no Rust-managed memory.
            let rc = unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) };
            if rc != 0 {
                tracing::warn!(
                    error = %std::io::Error::last_os_error(),
                    "could not lock memory; lanes may take page faults"
                );
            }
        }
        if self.config.clock == ClockMode::Realtime {
            let per_lane = match self.config.topology {
                Topology::Fused => 1,
                Topology::Split => 4,
            };
            for i in 0..g.lanes.len() {
                let cores = (0..per_lane)
                    .map(|k| {
                        (!self.config.cores.is_empty()).then(|| {
                            self.config.cores[(i * per_lane + k) % self.config.cores.len()]
                        })
                    })
                    .collect();
                let plan = ThreadPlan {
                    lane: i as u16,
                    cores,
                    raise_priority: self.config.raise_priority,
                    on_start: self.config.on_thread_start,
                };
                let ls = &mut g.lanes[i];
                // Only a lane that is idle here starts: one that is gone (failed, or whose
                // start failed) keeps its stop flags set, so a thread of it still winding
                // down (a stage spawned before a sibling's spawn failed) sees them and ends.
                let LaneRun::Idle(lane) = std::mem::replace(&mut ls.run, LaneRun::Gone) else {
                    continue;
                };
                ls.ctl.shared.stop.store(false, Ordering::Release);
                for d in &ls.ctl.shared.stage_done {
                    d.store(false, Ordering::Release);
                }
                match thread::start(*lane, self.config.topology, plan) {
                    Ok(r) => ls.run = LaneRun::Threads(r),
                    Err(e) => {
                        // All or none: the lanes started so far stop and come back idle;
                        // this one's state went with its threads (it is reported failed,
                        // its sessions stopped, by `collect_all`).
                        Self::stop_lanes(&mut g.lanes[..i]);
                        g.collect_all();
                        return Err(e);
                    }
                }
            }
        }
        g.running = true;
        Ok(())
    }

    /// Stops the lanes: each applies its queued commands, drains its rings and exits; the
    /// threads are joined and their state comes back to this thread. Sessions survive a
    /// stop and resume on the next `start`.
    #[tracing::instrument(level = "info", skip_all)]
    pub fn stop(&self) -> Result<()> {
        let mut g = self.lock();
        if !g.running {
            return Err(Error::EngineNotRunning);
        }
        Self::stop_lanes(&mut g.lanes);
        g.running = false;
        let inner = &mut *g;
        inner.collect_all();
        Ok(())
    }

    /// Stops `lanes`: each thread-run lane applies its queued commands, drains and exits,
    /// and its state comes back idle (a panicked one, which gives nothing back, is gone and
    /// reported by `collect_all`); an idle (virtual-clock) lane is drained in place.
    fn stop_lanes(lanes: &mut [LaneState]) {
        for ls in lanes.iter_mut() {
            ls.ctl.shared.stop.store(true, Ordering::Release);
        }
        for ls in lanes.iter_mut() {
            if let LaneRun::Threads(_) = ls.run {
                let LaneRun::Threads(r) = std::mem::replace(&mut ls.run, LaneRun::Gone) else {
                    unreachable!()
                };
                ls.run = match r.join() {
                    Some(lane) => LaneRun::Idle(Box::new(lane)),
                    None => LaneRun::Gone,
                };
            } else if let LaneRun::Idle(lane) = &mut ls.run {
                lane.drain();
            }
        }
    }

    /// True between `start` and `stop`.
    pub fn is_running(&self) -> bool {
        self.lock().running
    }

    /// Virtual clock only: runs `ticks` lane ticks (each [`Ptime::TICK_MS`] of media time)
    /// on every lane, on the calling thread, as fast as possible.
    pub fn step(&self, ticks: u64) -> Result<()> {
        let mut g = self.lock();
        if !g.running {
            return Err(Error::EngineNotRunning);
        }
        if self.config.clock != ClockMode::Virtual {
            return Err(Error::InvalidConfig("step needs ClockMode::Virtual"));
        }
        let topology = self.config.topology;
        for ls in g.lanes.iter_mut() {
            if let LaneRun::Idle(lane) = &mut ls.run {
                for _ in 0..ticks {
                    let t = lane.shared().counters.ticks.get();
                    let t0 = crate::runtime::clock::monotonic_ns();
                    // The virtual clock: tick × 10 ms.
                    let now_ns = t * u64::from(crate::types::Ptime::TICK_MS) * 1_000_000;
                    match topology {
                        Topology::Fused => lane.tick_fused(t, now_ns),
                        Topology::Split => {
                            lane.jitter.begin_tick(t, now_ns);
                            lane.jitter.playout(usize::MAX);
                            lane.decode.run();
                            lane.dsp.run();
                            lane.encode.run();
                        }
                    }
                    lane.shared()
                        .record_tick(crate::runtime::clock::monotonic_ns() - t0);
                }
            }
            // Retired state is freed by the next control call, not here: `step` is the
            // lane's work and must not free (zero-allocation test).
        }
        Ok(())
    }

    /// Frees what a lane retired, returns slots of destroyed sessions and gathers events.
    fn collect(ls: &mut LaneState, events: &mut VecDeque<EngineEvent>) {
        Self::collect_retired(ls);
        for ring in ls.ctl.events.iter_mut() {
            while let Ok(e) = ring.pop() {
                if events.len() >= 65_536 {
                    // Nobody polls: the oldest goes, counted (the counter takes several
                    // writers).
                    events.pop_front();
                    ls.ctl.shared.counters.events_dropped.inc_shared();
                }
                events.push_back(e);
            }
        }
    }

    /// True if `lane` is running (not gone after a failure) with at least `free` free
    /// session slots.
    fn takes_sessions(lane: &LaneState, free: usize) -> bool {
        lane.free_slots.len() >= free && !matches!(lane.run, LaneRun::Gone)
    }

    /// The lane with the fewest live sessions among those that take `free` more
    /// ([`MediaEngine::takes_sessions`]).
    fn least_loaded(lanes: &[LaneState], free: usize) -> Option<usize> {
        lanes
            .iter()
            .enumerate()
            .filter(|(_, l)| Self::takes_sessions(l, free))
            .min_by_key(|(_, l)| l.live)
            .map(|(i, _)| i)
    }

    /// `Ok` if `need` more commands fit, else [`Error::RingFull`], or [`Error::LaneFailed`]
    /// for a lane that has failed (checked before an operation sends any of its commands,
    /// so a refused one changes nothing). A lane that
    /// is not running on threads (virtual clock, or stopped) applies its queued commands
    /// here to make room.
    fn check_room(ls: &mut LaneState, need: usize) -> Result<()> {
        if ls.ctl.shared.failed.load(Ordering::Acquire) {
            // Nobody reads its commands any more: refused, not queued and lost (a destroy
            // answered `Ok` whose session then never got its `SessionStopped`).
            return Err(Error::LaneFailed {
                lane: ls.ctl.shared.lane,
            });
        }
        let cap = ls.ctl.commands.buffer().capacity();
        if ls.outstanding + need > cap {
            if let LaneRun::Idle(lane) = &mut ls.run {
                lane.drain();
            }
            // What a running lane has applied and retired frees room too: without this a
            // caller issuing only destroys or updates saw a full ring until some other
            // call happened to collect (found by the soak test: destroys refused for 5 s).
            Self::collect_retired(ls);
        }
        if ls.outstanding + need <= cap {
            Ok(())
        } else {
            Err(Error::RingFull { ring: "commands" })
        }
    }

    fn collect_retired(ls: &mut LaneState) {
        while let Ok(b) = ls.ctl.retire.pop() {
            ls.outstanding -= 1;
            ls.retired_seq = ls.retired_seq.max(b.seq);
            if b.op == Op::Destroy {
                ls.free_slots.push(b.id.slot);
            }
            drop(b);
        }
    }

    fn send(ls: &mut LaneState, bundle: Box<Bundle>) -> Result<()> {
        Self::check_room(ls, 1)?;
        match ls.ctl.commands.push(bundle) {
            Ok(()) => {
                ls.outstanding += 1;
                Ok(())
            }
            Err(_) => Err(Error::RingFull { ring: "commands" }),
        }
    }

    pub(crate) fn check_params(&self, p: &MediaSessionParams) -> Result<()> {
        let tx = p.tx.codec;
        let rate = p.sample_rate();
        if tx == Codec::Opus && !OpusSettings::is_opus_rate(rate) {
            return Err(Error::UnsupportedParameters {
                codec: tx,
                reason: "Opus runs at 8, 12, 16, 24 or 48 kHz",
            });
        }
        if tx == Codec::Opus && p.ptime == Ptime::MS_30 {
            // RFC 6716 §2.1.4: Opus frames are 2.5-60 ms but 30 ms is not among the
            // durations one frame or packet of equal frames can carry at these settings.
            return Err(Error::UnsupportedParameters {
                codec: tx,
                reason: "Opus sends 10, 20, 40 or 60 ms packets",
            });
        }
        p.dsp.validate(rate.hz())?;
        if p.dtx && tx != Codec::Opus && p.comfort_noise_send_pt.is_none() {
            return Err(Error::UnsupportedParameters {
                codec: tx,
                reason: "dtx needs comfort_noise_send_pt (RFC 3389 negotiated)",
            });
        }
        if p.jitter.is_some_and(|j| j.min_delay_ms > j.max_delay_ms) {
            return Err(Error::InvalidConfig(
                "jitter min_delay_ms must not exceed max_delay_ms",
            ));
        }
        for spec in p.rx_codecs().iter().chain(std::iter::once(&p.tx)) {
            let c = spec.codec;
            // Frames are mono at the session's rate (a stereo Opus encoder interleaves
            // into its own buffer; a stereo stream is decoded to mono).
            let frame = p.decode_rate(c).samples_in(p.ptime);
            if frame > self.config.max_frame_samples {
                return Err(Error::PayloadTooLarge {
                    limit: self.config.max_frame_samples,
                    actual: frame,
                });
            }
            // Opus frames may be up to 1275 bytes, but libopus fits its output into the
            // buffer it is given and a larger received packet is a counted ingress drop, so
            // an Opus session needs room for twice its average frame at the configured
            // bitrate (VBR peaks), not for the format's maximum.
            let needed = match c {
                Codec::Opus => {
                    let avg = (p.opus.bitrate_bps.max(6_000) as usize * p.ptime.ms() as usize)
                        .div_ceil(8_000);
                    (2 * avg).min(c.max_payload_bytes(p.ptime))
                }
                _ => c.max_payload_bytes(p.ptime),
            };
            if needed > self.config.max_payload_bytes {
                return Err(Error::PayloadTooLarge {
                    limit: self.config.max_payload_bytes,
                    actual: needed,
                });
            }
            if p.decode_rate(c) != rate {
                return Err(Error::UnsupportedParameters {
                    codec: c,
                    reason: "receive and send codecs must share a sample rate",
                });
            }
            // The jitter buffer keeps one timeline in the send codec's RTP clock (RFC 7160:
            // a stream switching clocks has no defined timestamp relation).
            if c.info().clock_rate_hz != tx.info().clock_rate_hz {
                return Err(Error::UnsupportedParameters {
                    codec: c,
                    reason: "receive and send codecs must share an RTP clock rate",
                });
            }
        }
        Ok(())
    }

    /// Creates a session for `dialog` on the least-loaded lane and queues it there. Returns
    /// once queued (the lane installs it at its next tick; packets pushed from now on
    /// reach it).
    ///
    /// Errors: [`Error::EngineNotRunning`], [`Error::DuplicateDialog`],
    /// [`Error::CapacityExhausted`], [`Error::PayloadTooLarge`] (frame or payload beyond the
    /// configured slot sizes), [`Error::UnsupportedParameters`], [`Error::RingFull`].
    pub fn create_media_session(
        &self,
        dialog: DialogId,
        params: MediaSessionParams,
    ) -> Result<MediaSessionHandle> {
        self.create_media_session_at(dialog, params, Placement::LeastLoaded)
    }

    /// Creates both legs of a gateway call on one lane (the least-loaded with two free
    /// slots) and bridges them. Either both are created and bridged or neither: the whole
    /// call is made under one hold of the control-plane lock, with room for its four
    /// commands (two creates, two routes) checked first and held (only the lock's holder
    /// queues commands, and the room a lane frees only grows), and everything that can
    /// refuse the bridge after the creates (the ptimes, the rate conversion) refuses before
    /// anything is sent, so a refusal rolls back with the room the call did not use.
    pub fn create_call(
        &self,
        a: (DialogId, MediaSessionParams),
        b: (DialogId, MediaSessionParams),
    ) -> Result<(MediaSessionHandle, MediaSessionHandle)> {
        self.check_params(&a.1)?;
        self.check_params(&b.1)?;
        if a.0 == b.0 {
            return Err(Error::DuplicateDialog(b.0));
        }
        let mut g = self.lock();
        let inner = &mut *g;
        if !inner.running {
            return Err(Error::EngineNotRunning);
        }
        for d in [a.0, b.0] {
            if inner.dialogs.contains_key(&d) {
                return Err(Error::DuplicateDialog(d));
            }
        }
        inner.collect_all();
        let lane = Self::least_loaded(&inner.lanes, 2).ok_or(Error::CapacityExhausted {
            capacity: self.config.lanes * self.config.sessions_per_lane,
        })?;
        Self::check_room(&mut inner.lanes[lane], 4)?;
        let ha = self.create_locked(inner, a.0, a.1, Placement::Lane(lane))?;
        let hb = match self.create_locked(inner, b.0, b.1, Placement::Lane(lane)) {
            Ok(h) => h,
            Err(e) => {
                self.roll_back(inner, ha.id);
                return Err(e);
            }
        };
        if let Err(e) = self.bridge_locked(inner, ha.id, hb.id) {
            self.roll_back(inner, ha.id);
            self.roll_back(inner, hb.id);
            return Err(e);
        }
        Ok((ha, hb))
    }

    /// Destroys a leg of a call that could not be completed, under the same lock hold as
    /// its creation. The call's room covers it: a refused bridge sends nothing before it
    /// refuses, so the two destroys take the two route commands' room.
    fn roll_back(&self, inner: &mut Inner, id: SessionId) {
        match self.destroy_locked(inner, id) {
            Ok(()) => {}
            // Its lane failed meanwhile (found while making the other leg): the failure
            // took the session with it and reported it.
            Err(Error::UnknownSession(_)) if !inner.sessions.contains_key(&id) => {}
            // Its lane failed meanwhile, not yet reported: the session stays on record, so
            // the failure's report (when events are next polled) stops it.
            Err(Error::LaneFailed { .. }) => {}
            Err(e) => {
                // Invariant: the room was checked and held; reaching here is a bug.
                debug_assert!(false, "rollback of a half-made call failed: {e}");
                tracing::error!(session = %id, error = %e, "rollback of a half-made call failed");
            }
        }
    }

    /// Creates a session placed as `placement` says. See [`MediaEngine::create_media_session`].
    #[tracing::instrument(level = "debug", skip_all, err(Display),
        fields(dialog = dialog.0, codec = ?params.tx.codec, ?placement, session))]
    pub fn create_media_session_at(
        &self,
        dialog: DialogId,
        params: MediaSessionParams,
        placement: Placement,
    ) -> Result<MediaSessionHandle> {
        self.check_params(&params)?;
        let mut g = self.lock();
        self.create_locked(&mut g, dialog, params, placement)
    }

    /// [`MediaEngine::create_media_session_at`] with the lock held and the parameters
    /// checked.
    fn create_locked(
        &self,
        inner: &mut Inner,
        dialog: DialogId,
        params: MediaSessionParams,
        placement: Placement,
    ) -> Result<MediaSessionHandle> {
        if !inner.running {
            return Err(Error::EngineNotRunning);
        }
        if inner.dialogs.contains_key(&dialog) {
            return Err(Error::DuplicateDialog(dialog));
        }
        inner.collect_all();
        let exhausted = Error::CapacityExhausted {
            capacity: self.config.lanes * self.config.sessions_per_lane,
        };
        let usable = |l: &LaneState| Self::takes_sessions(l, 1);
        let lane = match placement {
            Placement::LeastLoaded => Self::least_loaded(&inner.lanes, 1).ok_or(exhausted)?,
            Placement::Lane(i) => {
                let l = inner
                    .lanes
                    .get(i)
                    .ok_or(Error::InvalidConfig("no such lane"))?;
                if !usable(l) {
                    return Err(exhausted);
                }
                i
            }
            Placement::With(other) => {
                if !inner.sessions.contains_key(&other) {
                    return Err(Error::UnknownSession(other));
                }
                if !usable(&inner.lanes[other.lane()]) {
                    return Err(exhausted);
                }
                other.lane()
            }
        };
        let r1 = xorshift(&mut inner.rng);
        let ls = &mut inner.lanes[lane];
        Self::check_room(ls, 1)?;
        // Invariant: the filter above chose a lane with a free slot.
        let slot = ls.free_slots.pop().expect("lane has a free slot");
        let generation = (ls.generations[slot as usize] + 1) & 0xFF_FFFF;
        ls.generations[slot as usize] = generation;
        let id = SessionId::from_parts(lane as u16, slot, generation);
        ls.next_seq += 1;
        let mut b = Bundle::new(ls.next_seq, Op::Create, id);
        // RFC 3550 §5.1: SSRC, initial sequence number and timestamp are random.
        let ssrc = params.tx_ssrc.unwrap_or(r1 as u32);
        let parts = SessionParts::build(
            &params,
            generation,
            slot,
            self.config.jitter,
            ssrc,
            (r1 >> 32) as u16,
            (r1 >> 40) as u32 ^ (r1 as u32).rotate_left(7),
        );
        b.jitter = Some(parts.jitter);
        b.decode = Some(parts.decode);
        b.dsp = Some(parts.dsp);
        b.encode = Some(parts.encode);
        if let Err(e) = Self::send(ls, b) {
            ls.free_slots.push(slot);
            return Err(e);
        }
        // From here the transport's pushes for this id take packet slots.
        ls.ctl.shared.live.set(slot, generation);
        ls.live += 1;
        inner.sessions.insert(
            id,
            SessionRecord {
                dialog,
                params,
                peer: None,
                app: false,
                round_trip_ms: None,
                peer_loss: None,
                updates: 0,
                attach_epoch: 0,
            },
        );
        inner.dialogs.insert(dialog, id);
        tracing::Span::current().record("session", tracing::field::debug(id));
        Ok(MediaSessionHandle { id, dialog })
    }

    /// Replaces a session's codecs, ptime or processing (a re-INVITE). The receive
    /// stream's SSRC, statistics and loss counts continue, as does a digit being received
    /// where events come the same way; the send stream's SSRC, sequence numbers and
    /// timestamps continue too, unless the send clock rate changes (PCMU to Opus) and no
    /// `tx_ssrc` was given: a new stream then starts, its own SSRC, sequence and
    /// timestamp (RFC 7160 §4.1). A `tx_ssrc` given is the SSRC sent from then on (the
    /// sequence and timestamp continue). The receive side starts a new playout (packets
    /// buffered for the old parameters are dropped), the codecs and voice processing start
    /// afresh, and jitter bounds set by quality adaptation give way to the parameters'.
    /// Bridged peers are re-routed. Parameters equal to the session's current ones change
    /// nothing (a session-timer refresh or a re-INVITE that only changes direction): the
    /// call goes on untouched, its echo canceller converged, its digit in flight, and
    /// jitter bounds set by quality adaptation stay.
    #[tracing::instrument(level = "debug", skip_all, err(Display),
        fields(session = ?id, codec = ?params.tx.codec))]
    pub fn update_media_session(&self, id: SessionId, params: MediaSessionParams) -> Result<()> {
        self.check_params(&params)?;
        let mut g = self.lock();
        let inner = &mut *g;
        let rec = inner.sessions.get(&id).ok_or(Error::UnknownSession(id))?;
        if rec.params == params {
            return Ok(());
        }
        if let Some(peer) = rec.peer.filter(|p| *p != id) {
            let pp = &inner.sessions[&peer].params;
            if pp.ptime != params.ptime {
                return Err(Error::BridgeMismatch {
                    a: id,
                    b: peer,
                    reason: "update would change the ptime of a bridged session",
                });
            }
        }
        let peer = rec.peer;
        // All or nothing, as create_call: the update and its bridge's refreshed routes
        // (the peer's audio now feeds a different encoder; this session's may now come at
        // another rate) are planned first, with the new parameters in place, and queued
        // only if all of them fit; a refusal leaves the record as it was.
        let need = 1 + peer.map_or(0, |p| 1 + usize::from(p != id));
        Self::check_room(&mut inner.lanes[id.lane()], need)?;
        // RFC 7160 §4.1: a send clock rate change (PCMU's 8 kHz to Opus's 48 kHz) starts a
        // new RTP stream, its SSRC, sequence and timestamp random (RFC 3550 §5.1), so the
        // peer's jitter and loss figures never mix the two clocks. Unless the SSRC was
        // given (`tx_ssrc`): the stream then continues.
        let clock = |p: &MediaSessionParams| p.tx.codec.info().clock_rate_hz;
        let new_stream = clock(&rec.params) != clock(&params) && params.tx_ssrc.is_none();
        let r = xorshift(&mut inner.rng);
        let parts = SessionParts::build(
            &params,
            id.generation,
            id.slot,
            self.config.jitter,
            params.tx_ssrc.unwrap_or(r as u32),
            (r >> 32) as u16,
            (r >> 40) as u32 ^ (r as u32).rotate_left(7),
        );
        let ssrc_given = params.tx_ssrc.is_some();
        // Invariant: checked above.
        let old = std::mem::replace(
            &mut inner.sessions.get_mut(&id).expect("record exists").params,
            params,
        );
        let routes = match peer.map(|peer| self.plan_bridge(inner, peer, id)) {
            Some(Err(e)) => {
                inner.sessions.get_mut(&id).expect("record exists").params = old;
                return Err(e);
            }
            Some(Ok(routes)) => Some(routes),
            None => None,
        };
        let ls = &mut inner.lanes[id.lane()];
        ls.next_seq += 1;
        let mut b = Bundle::new(ls.next_seq, Op::Update, id);
        b.new_stream = new_stream;
        b.ssrc_given = ssrc_given;
        b.jitter = Some(parts.jitter);
        b.decode = Some(parts.decode);
        b.dsp = Some(parts.dsp);
        b.encode = Some(parts.encode);
        if let Err(e) = Self::send(ls, b) {
            // Not expected (the room is held); the record stays as the lane has it.
            inner.sessions.get_mut(&id).expect("record exists").params = old;
            return Err(e);
        }
        let rec = inner.sessions.get_mut(&id).expect("record exists");
        rec.updates = rec.updates.wrapping_add(1);
        match routes {
            Some(routes) => Self::send_bridge(inner, routes),
            None => Ok(()),
        }
    }

    fn route(&self, inner: &mut Inner, from: SessionId, to: Option<SessionId>) -> Result<()> {
        let planned = self.plan_route(inner, from, to)?;
        Self::send_route(inner, from, planned)
    }

    /// What [`MediaEngine::route`] sends, built without sending it: the fallible part
    /// (the rate converter), so a caller can refuse before queueing anything.
    fn plan_route(
        &self,
        inner: &Inner,
        from: SessionId,
        to: Option<SessionId>,
    ) -> Result<PlannedRoute> {
        // Relay or transcode, and the rate conversion on the way (codec::transcoding).
        let plan = to.map(|t| {
            crate::codec::transcoding::plan(
                &inner.sessions[&from].params,
                &inner.sessions[&t].params,
                self.config.relay_same_codec,
            )
        });
        let route = to.zip(plan).map(|(t, p)| Route {
            dst_slot: t.slot,
            dst_codec: p.dst_codec,
            relay_ok: p.relay_ok,
            dst_needs_audio: inner.sessions[&t].params.dsp.aec.is_some(),
            app: false,
            epoch: 0,
        });
        let resampler = match plan {
            Some(p) => p.resampler()?,
            None => None,
        };
        Ok(PlannedRoute { route, resampler })
    }

    fn send_route(inner: &mut Inner, from: SessionId, planned: PlannedRoute) -> Result<()> {
        let ls = &mut inner.lanes[from.lane()];
        ls.next_seq += 1;
        let mut b = Bundle::new(ls.next_seq, Op::Route, from);
        b.route = planned.route;
        b.resampler = planned.resampler;
        Self::send(ls, b)
    }

    /// The two routes of a bridge between `a` and `b` (`a` → `b`, then `b` → `a`; one
    /// when `a == b`, an echo session), planned from the sessions' current records.
    fn plan_bridge(&self, inner: &Inner, a: SessionId, b: SessionId) -> Result<BridgeRoutes> {
        let mut routes = BridgeRoutes::new();
        routes.push((a, self.plan_route(inner, a, Some(b))?));
        if a != b {
            routes.push((b, self.plan_route(inner, b, Some(a))?));
        }
        Ok(routes)
    }

    fn send_bridge(inner: &mut Inner, routes: BridgeRoutes) -> Result<()> {
        for (from, planned) in routes {
            Self::send_route(inner, from, planned)?;
        }
        Ok(())
    }

    /// Bridges two sessions on the same lane into a call: each one's decoded audio feeds
    /// the other's encoder (relayed without decoding when codecs match). `a == b` makes
    /// an echo session. Existing bridges of either session are dissolved first. Nothing is
    /// queued unless all of it fits and every route could be built.
    #[tracing::instrument(level = "debug", skip(self), err(Display))]
    pub fn bridge(&self, a: SessionId, b: SessionId) -> Result<()> {
        let mut g = self.lock();
        self.bridge_locked(&mut g, a, b)
    }

    fn bridge_locked(&self, inner: &mut Inner, a: SessionId, b: SessionId) -> Result<()> {
        let ra = inner.sessions.get(&a).ok_or(Error::UnknownSession(a))?;
        let rb = inner.sessions.get(&b).ok_or(Error::UnknownSession(b))?;
        if a.lane != b.lane {
            return Err(Error::BridgeMismatch {
                a,
                b,
                reason: "sessions are on different lanes",
            });
        }
        if ra.params.ptime != rb.params.ptime {
            return Err(Error::BridgeMismatch {
                a,
                b,
                reason: "different ptime (repacketisation not supported)",
            });
        }
        let routes = self.plan_bridge(inner, a, b)?;
        // Old peers of either session that this bridge leaves (each gets its route cleared).
        let mut olds = [None; 2];
        for (i, s) in [a, b].into_iter().enumerate() {
            olds[i] = inner.sessions[&s].peer.filter(|o| *o != a && *o != b);
        }
        if olds[0] == olds[1] {
            olds[1] = None;
        }
        let need = olds.iter().flatten().count() + routes.len();
        Self::check_room(&mut inner.lanes[a.lane()], need)?;
        for old in olds.into_iter().flatten() {
            inner.sessions.get_mut(&old).expect("peer record").peer = None;
            self.route(inner, old, None)?;
        }
        for s in [a, b] {
            if inner.sessions[&s].app {
                Self::detach_locked(inner, s);
            }
        }
        Self::send_bridge(inner, routes)?;
        for (s, peer) in [(a, b), (b, a)] {
            inner.sessions.get_mut(&s).expect("checked").peer = Some(peer);
        }
        Ok(())
    }

    /// Dissolves the bridge `id` is part of (both directions), or detaches it from the
    /// application audio handle ([`MediaEngine::attach_audio`]). No-op if neither.
    ///
    /// A session with no peer and no application (so too one created and not yet bridged)
    /// keeps receiving, with its audio counted as `no_sink`, and sends no audio; its send
    /// side's frame periods go on all the same, so a digit sent on it
    /// ([`MediaEngine::send_dtmf`]), or one its former peer was forwarding, goes out (or
    /// ends) at once, and the audio it sends when bridged again starts a new talkspurt whose
    /// RTP timestamp counts the time that passed (RFC 3550 §5.1).
    ///
    /// Errors: [`Error::UnknownSession`]; [`Error::LaneFailed`] if its lane has failed;
    /// [`Error::RingFull`] if the lane's command ring has no room for both routes (nothing changed: a bridge half dissolved would leave
    /// the peer still sending its audio to `id`).
    pub fn unbridge(&self, id: SessionId) -> Result<()> {
        let mut g = self.lock();
        let inner = &mut *g;
        let rec = inner.sessions.get(&id).ok_or(Error::UnknownSession(id))?;
        let peer = rec.peer;
        let need = usize::from(rec.app) + peer.map_or(0, |p| 1 + usize::from(p != id));
        Self::check_room(&mut inner.lanes[id.lane()], need)?;
        if rec.app {
            Self::detach_locked(inner, id);
            self.route(inner, id, None)?;
        }
        if let Some(p) = peer {
            self.route(inner, id, None)?;
            inner.sessions.get_mut(&id).expect("checked").peer = None;
            if p != id {
                self.route(inner, p, None)?;
                if let Some(r) = inner.sessions.get_mut(&p) {
                    r.peer = None;
                }
            }
        }
        Ok(())
    }

    /// Destroys a session. Its slot is reused only after the lane hands the session's state
    /// back, so late packets for the old id can never reach a new session.
    #[tracing::instrument(level = "debug", skip(self), err(Display))]
    pub fn destroy_media_session(&self, id: SessionId) -> Result<()> {
        let mut g = self.lock();
        self.destroy_locked(&mut g, id)
    }

    fn destroy_locked(&self, inner: &mut Inner, id: SessionId) -> Result<()> {
        let rec = inner.sessions.get(&id).ok_or(Error::UnknownSession(id))?;
        let peer = rec.peer.filter(|p| *p != id);
        let ls = &mut inner.lanes[id.lane()];
        Self::check_room(ls, 1 + usize::from(peer.is_some()))?;
        if let Some(p) = peer {
            self.route(inner, p, None)?;
            if let Some(r) = inner.sessions.get_mut(&p) {
                r.peer = None;
            }
        }
        let ls = &mut inner.lanes[id.lane()];
        // Before the destroy (room was checked, so it is sent): an application frame that
        // reached the lane after it would otherwise be kept for the slot's next session.
        ls.ctl.shared.attached.clear(id.slot);
        ls.next_seq += 1;
        let b = Bundle::new(ls.next_seq, Op::Destroy, id);
        Self::send(ls, b)?;
        // From here the transport's pushes for this id are refused before taking a slot.
        ls.ctl.shared.live.clear(id.slot);
        ls.live -= 1;
        let rec = inner.sessions.remove(&id).expect("checked");
        inner.dialogs.remove(&rec.dialog);
        Ok(())
    }

    /// Fault drill: makes lane `lane` panic as a codec bug would, to exercise the
    /// lane-failure policy (a `LaneFailed` event, the lane's sessions gone, the other
    /// lanes unaffected). Not for production use.
    #[doc(hidden)]
    pub fn inject_lane_fault(&self, lane: usize) -> Result<()> {
        let mut g = self.lock();
        let ls = g
            .lanes
            .get_mut(lane)
            .ok_or(Error::InvalidConfig("no such lane"))?;
        ls.next_seq += 1;
        let b = Bundle::new(
            ls.next_seq,
            Op::Fault,
            SessionId::from_parts(lane as u16, 0, 0),
        );
        Self::send(ls, b)
    }

    /// The session serving `dialog`, if any.
    pub fn session_for_dialog(&self, dialog: DialogId) -> Option<SessionId> {
        self.lock().dialogs.get(&dialog).copied()
    }

    /// Waits until every lane has applied every command queued so far, at most `timeout`
    /// per call (virtual clock: applies them immediately). Then frees retired state. A
    /// lane that failed meanwhile is reported (`LaneFailed`) and not waited for.
    pub fn flush(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut g = self.lock();
            let inner = &mut *g;
            for ls in inner.lanes.iter_mut() {
                if let LaneRun::Idle(lane) = &mut ls.run {
                    lane.drain();
                }
            }
            inner.collect_all();
            let pending = inner
                .lanes
                .iter()
                .position(|ls| ls.outstanding > 0 && matches!(ls.run, LaneRun::Threads(_)));
            let Some(lane) = pending else { return Ok(()) };
            drop(g);
            if Instant::now() >= deadline {
                return Err(Error::AckTimeout {
                    lane,
                    waited_ms: timeout.as_millis() as u64,
                });
            }
            std::thread::sleep(Duration::from_micros(500));
        }
    }

    /// Codecs this engine supports, in preference order.
    pub fn get_supported_codecs(&self) -> &'static [CodecInfo] {
        supported_codecs()
    }

    /// What this engine can do.
    pub fn get_media_capabilities(&self) -> MediaCapabilities {
        const PTIMES: [Ptime; 5] = [
            Ptime::MS_10,
            Ptime::MS_20,
            Ptime::MS_30,
            Ptime::MS_40,
            Ptime::MS_60,
        ];
        MediaCapabilities {
            codecs: supported_codecs(),
            ptimes: &PTIMES,
            max_sessions: self.config.lanes * self.config.sessions_per_lane,
            lanes: self.config.lanes,
            max_payload_bytes: self.config.max_payload_bytes,
        }
    }

    /// Counters of a live session, read without stopping its lane. A session created but
    /// not yet installed by its lane reads as all zeros.
    pub fn session_stats(&self, id: SessionId) -> Result<SessionStats> {
        let g = self.lock();
        if !g.sessions.contains_key(&id) {
            return Err(Error::UnknownSession(id));
        }
        let cell = &g.lanes[id.lane()].ctl.shared.sessions[id.slot as usize];
        Ok(cell.snapshot(id.generation).unwrap_or_default())
    }

    /// Counters of a lane, read without stopping it. `None` if out of range.
    pub fn lane_stats(&self, lane: usize) -> Option<LaneStats> {
        Some(self.lock().lanes.get(lane)?.ctl.shared.counters.snapshot())
    }

    /// Distribution of a lane's tick processing times (ns) since it was built; take two
    /// snapshots and [`HistogramSnapshot::since`] for a window. `None` if out of range.
    pub fn lane_tick_histogram(&self, lane: usize) -> Option<HistogramSnapshot> {
        Some(self.lock().lanes.get(lane)?.ctl.shared.tick_ns.snapshot())
    }

    /// Live sessions per lane.
    pub fn lane_loads(&self) -> Vec<usize> {
        self.lock().lanes.iter().map(|l| l.live).collect()
    }

    /// Live sessions.
    pub fn session_count(&self) -> usize {
        self.lock().sessions.len()
    }

    /// Free session slots (slots of destroyed sessions come back once their lane retires them).
    pub fn free_session_slots(&self) -> usize {
        let mut g = self.lock();
        let inner = &mut *g;
        inner.collect_all();
        inner.lanes.iter().map(|l| l.free_slots.len()).sum()
    }

    /// Takes the next lane event (session started/stopped, overruns, pinning failures).
    pub fn poll_event(&self) -> Option<EngineEvent> {
        let mut g = self.lock();
        if g.events.is_empty() {
            let inner = &mut *g;
            inner.collect_all();
        }
        g.events.pop_front()
    }

    /// Drains every pending event.
    pub fn events(&self) -> impl Iterator<Item = EngineEvent> + '_ {
        std::iter::from_fn(move || self.poll_event())
    }
}

impl Drop for MediaEngine {
    fn drop(&mut self) {
        if self.lock().running {
            let _ = self.stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::CodecSpec;
    use crate::types::Ptime;

    /// An update refused for room (a 6-command ring, four of them just taken by a call
    /// before the running lane drains them: room for the update but not for both of its
    /// bridge's routes) queues nothing and leaves the session's record as it was;
    /// once there is room it goes through whole.
    #[test]
    fn an_update_refused_for_room_changes_nothing() {
        let e = MediaEngine::new(EngineConfig {
            sessions_per_lane: 64,
            command_capacity: 6,
            raise_priority: false,
            ..Default::default()
        })
        .unwrap();
        e.start().unwrap();
        let pcmu = || MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_20);
        let pcma = || MediaSessionParams::new(CodecSpec::PCMA, Ptime::MS_20);
        let mut refused = 0;
        for i in 0..20u64 {
            let Ok((a, b)) =
                e.create_call((DialogId(2 * i), pcmu()), (DialogId(2 * i + 1), pcmu()))
            else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            match e.update_media_session(a.id, pcma()) {
                Err(Error::RingFull { .. }) => {
                    refused += 1;
                    let g = e.lock();
                    assert_eq!(g.sessions[&a.id].params, pcmu(), "the record moved");
                    assert_eq!(g.sessions[&a.id].peer, Some(b.id));
                }
                Ok(()) => {}
                Err(other) => panic!("unexpected {other:?}"),
            }
            // With room again, the update goes through and the record follows.
            let deadline = Instant::now() + Duration::from_secs(2);
            loop {
                match e.update_media_session(a.id, pcma()) {
                    Ok(()) => break,
                    Err(Error::RingFull { .. }) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(other) => panic!("unexpected {other:?}"),
                }
            }
            assert_eq!(e.lock().sessions[&a.id].params, pcma());
            for id in [a.id, b.id] {
                while e.destroy_media_session(id).is_err() {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        assert!(refused > 0, "no update met a full ring");
        e.stop().unwrap();
    }

    /// A lane whose threads cannot be started fails `start()` all or none: the lanes
    /// started before it are stopped and come back idle with their sessions, the engine
    /// is not running, and the lane that failed is reported (`LaneFailed`, its sessions
    /// stopped). The next `start()` runs the lanes that are left.
    #[test]
    fn a_start_that_cannot_spawn_a_lane_starts_none() {
        let e = MediaEngine::new(EngineConfig {
            lanes: 2,
            sessions_per_lane: 8,
            raise_priority: false,
            ..Default::default()
        })
        .unwrap();
        e.start().unwrap();
        let params = || MediaSessionParams::new(CodecSpec::PCMU, Ptime::MS_20);
        let a = e
            .create_media_session_at(DialogId(1), params(), Placement::Lane(0))
            .unwrap();
        let b = e
            .create_media_session_at(DialogId(2), params(), Placement::Lane(1))
            .unwrap();
        e.stop().unwrap();
        while e.poll_event().is_some() {}

        // Lane 0's thread starts; lane 1's spawn fails.
        crate::runtime::thread::spawn_fault::fail_nth(2);
        assert!(matches!(e.start(), Err(Error::Spawn(_))));
        assert!(!e.is_running());
        {
            let g = e.lock();
            assert!(
                matches!(g.lanes[0].run, LaneRun::Idle(_)),
                "lane 0 was left running"
            );
            assert!(matches!(g.lanes[1].run, LaneRun::Gone));
            assert!(g.sessions.contains_key(&a.id));
            assert!(!g.sessions.contains_key(&b.id));
        }
        let events: Vec<_> = e.events().collect();
        assert!(
            events.iter().any(|ev| matches!(
                ev,
                EngineEvent::LaneFailed {
                    lane: 1,
                    sessions_lost: 1
                }
            )),
            "{events:?}"
        );
        assert!(
            events.contains(&EngineEvent::SessionStopped(b.id)),
            "{events:?}"
        );
        assert!(
            !events.contains(&EngineEvent::SessionStopped(a.id)),
            "{events:?}"
        );

        // What is left starts, keeps its session and takes new ones on lane 0 only.
        e.start().unwrap();
        assert_eq!(e.session_count(), 1);
        let c = e.create_media_session(DialogId(3), params()).unwrap();
        assert_eq!(c.id.lane(), 0);
        e.stop().unwrap();
    }
}
