//! One lane: four stages (jitter → decode → DSP → encode) joined by SPSC rings.
//!
//! Each stage is plain state plus a `run`-style method that drains its input ring; none
//! of them spawns threads, sleeps or reads a clock, so the same code runs fused on one
//! thread ([`Lane::tick_fused`]), split over four threads (`runtime::thread`) or stepped
//! by a virtual clock. Commands travel the same rings as the data, so every stage applies
//! a command in order with the frames around it, and the last stage acknowledges it.
//!
//! Every push that carries a slab token or a command has ring space reserved for it by
//! construction (rings are sized to the token counts), so it cannot fail; pushes that
//! carry only "nothing to play" notices are skipped and counted when a stage is backed up.

use arrayvec::ArrayVec;
use rtrb::{Consumer, Producer, RingBuffer};

use super::live::LiveTable;
use super::msg::{
    AppFrame, AppFrameSlot, Arrival, Bundle, Downstream, DtmfSource, EgressSlot, FrameSid,
    FrameSlot, LaneEvent, Op, PacketSlot, PlayRange, ToDecode,
};
use super::prefetch;
use super::slab::{Slab, Token};
use super::stats::{LaneCounters, LossCell, SessionCell, SessionCounters, TickHistogram};
use super::sync::{Arc, AtomicBool, AtomicU32, AtomicU64, Ordering};
use crate::buffer::adaptive::Insert;
use crate::codec::audio::comfort_noise::{analyze, CnPayload};
use crate::codec::audio::g711::Law;
use crate::codec::audio::telephone_event::{digit_to_event, DtmfEvent, EventPayload};
use crate::codec::{AnyDecoder, Codec};
use crate::processing::audio::dtmf_detector::Digit;
use crate::processing::audio::plc::PcmPlc;
use crate::processing::audio::{DspEvent, DspScratch};
use crate::quality::rtp_stats::{LossObserver, PacketClass};
use crate::quality::xr::{LossPattern, LOSS_PATTERN_WORDS};
use crate::rtp::{write_header, RtpHeader, RtpPacket, RTP_HEADER_LEN};
use crate::session::receive::{PacketDecoder, RelayStep, StretchPool};
use crate::session::{
    DecodePart, DspPart, DtxFrame, EncodePart, JitterPart, Relayed, SidState, MAX_RX_CODECS,
};
use crate::types::{PayloadType, Ptime, SessionId};

/// Sessions played per chunk in a fused lane before the later stages drain, so frames
/// stay cache-hot and the frame slab need not hold a whole tick. callgrind's cache model
/// (48 KiB L1, relay-pcmu, 2,000 calls) counted L1 read misses of the lane for chunks of
/// 64 / 32 / 16 / 8: 11.74 / 11.47 / 10.89 / 10.63 M, instructions +0.4% at 16, +1% at 8.
pub const FUSED_CHUNK: usize = 16;

/// How far ahead in their input rings the stages start loading what the next items will
/// touch: a packet's ingest or insert is only ~100-150 ns of work, so one or two items
/// ahead left most of a memory access still to wait for. The jitter stage prefetches a
/// packet's slot and the session's state `INGRESS_AHEAD - 1` packets ahead (the ring item
/// names the session slot), and from the slot the packet's bytes half as far ahead; the
/// decode stage's inserts likewise. Virtual clock, this machine, alternated builds
/// (session 11): relay-pcmu 10,000 calls 18.4-18.5 k -> 19.8-20.4 k calls per core at 4 (2
/// before), when the session's state was found through the packet's slot; session 15,
/// found from the ring item: 8 ahead +6-9% over 4, 16 the same as 8.
const INGRESS_AHEAD: usize = 8;
/// See [`INGRESS_AHEAD`]. From the ring item alone since session 15 (the entry's fields at
/// fixed offsets, no load of the entry): 8 ahead +3-4% relay-pcmu and +9% pcmu-pcma over 4
/// (10,000 / 8,000 calls), 16 the same as 8.
const INSERT_AHEAD: usize = 8;
/// The encode stage starts loading a frame's send state this many frames ahead (1 before:
/// +1-3% relay-pcmu at 10,000 calls).
const ENCODE_AHEAD: usize = 3;

/// The decode stage starts loading a due session's headers (its entry's head, the jitter
/// buffer's header and first packet slots, the concealer's header) this many due
/// sessions before it plays, from the entry's address alone (no load), across play ranges;
/// the rings and the due packet's slot [`RINGS_AHEAD`] sessions ahead (reading those
/// headers), the packet's bytes [`BYTES_AHEAD`] ahead (reading that slot). Virtual clock,
/// relay-pcmu 10,000 calls, alternated (session 15): 6 / 3 / 1 +11% over the old three
/// steps at 3 / 2 / 1 (which read each entry to find its headers); then 6 / 4 / 2 +4%
/// over 6 / 3 / 1; 8 / 4, 4 / 2, 10 / 4 and 6 / 5 / 2, 6 / 4 / 3 no better: the lane is
/// then waiting on how many lines are in flight, not on when they were asked for.
const HEADERS_AHEAD: usize = 6;
/// See [`HEADERS_AHEAD`].
const RINGS_AHEAD: usize = 4;
/// See [`HEADERS_AHEAD`].
const BYTES_AHEAD: usize = 2;

/// Sizes of one lane's fixed resources.
#[derive(Debug, Clone, Copy)]
pub struct LaneConfig {
    /// Lane index.
    pub lane: u16,
    /// Session slots.
    pub sessions: usize,
    /// Largest RTP payload accepted and produced, bytes.
    pub max_payload_bytes: usize,
    /// Largest frame, samples (all channels).
    pub max_frame_samples: usize,
    /// Ingress packet slots.
    pub packet_slots: usize,
    /// Frame slots.
    pub frame_slots: usize,
    /// Egress packet slots.
    pub egress_slots: usize,
    /// Commands in flight.
    pub command_capacity: usize,
    /// Events buffered per producing stage.
    pub event_capacity: usize,
    /// Application frame slots, each way (the lane's [`AudioParts`]).
    pub app_frame_slots: usize,
}

/// Frames an application may queue ahead for one attached session (160 ms at 20 ms).
pub const APP_QUEUE_FRAMES: usize = 8;

/// The frames an application wrote for one session, waiting for the session's frame
/// periods (decode stage; one per session slot, touched only for attached sessions).
#[derive(Debug, Default)]
struct AppQueue {
    /// Generation of the session in the slot (set when it is created), to refuse frames
    /// written for an earlier session of the slot.
    generation: u32,
    /// The attachment its frames were written for (`Route::epoch`): a frame of another
    /// one empties the queue of the older frames first.
    epoch: u8,
    head: u8,
    len: u8,
    /// The application has written for the session since it was attached: from then on a
    /// period without a frame is an underrun (a listen-only recorder never counts one).
    started: bool,
    frames: [Option<Token>; APP_QUEUE_FRAMES],
}

impl AppQueue {
    /// Appends a frame; gives it back when the queue is full.
    fn push(&mut self, t: Token) -> Result<(), Token> {
        if usize::from(self.len) == APP_QUEUE_FRAMES {
            return Err(t);
        }
        let at = (usize::from(self.head) + usize::from(self.len)) % APP_QUEUE_FRAMES;
        self.frames[at] = Some(t);
        self.len += 1;
        self.started = true;
        Ok(())
    }

    /// The oldest frame.
    fn pop(&mut self) -> Option<Token> {
        if self.len == 0 {
            return None;
        }
        let t = self.frames[usize::from(self.head)].take();
        self.head = ((usize::from(self.head) + 1) % APP_QUEUE_FRAMES) as u8;
        self.len -= 1;
        t
    }
}

impl LaneConfig {
    /// Largest RTP packet accepted: payload plus the largest header (12 bytes, 15 CSRCs,
    /// and a generous extension allowance).
    pub fn max_packet_bytes(&self) -> usize {
        self.max_payload_bytes + RTP_HEADER_LEN + 60 + 4 + 256
    }
}

/// Bytes of per-session state a lane holds in its tables (the four stage parts and the
/// counter block), excluding slab slots in flight. This is the "hot state" walked each tick.
pub fn session_state_bytes() -> usize {
    std::mem::size_of::<Option<JitterPart>>()
        + std::mem::size_of::<Option<DecodePart<Token>>>()
        + std::mem::size_of::<Option<DspPart>>()
        + std::mem::size_of::<Option<EncodePart>>()
        + std::mem::size_of::<SessionCell>()
}

/// State shared between a lane's threads and the control plane.
#[derive(Debug)]
pub struct Shared {
    /// Lane index.
    pub lane: u16,
    /// Set by the control plane to stop the lane.
    pub stop: AtomicBool,
    /// Highest command sequence number the last stage applied.
    pub acked: AtomicU64,
    /// Per stage: set when the stage's thread has exited (split topology).
    pub stage_done: [AtomicBool; 4],
    /// Set when a lane thread panicked (the lane has stopped).
    pub failed: AtomicBool,
    /// Lane counters.
    pub counters: LaneCounters,
    /// Tick processing times (ns), written by the ticking thread.
    pub tick_ns: TickHistogram,
    /// Session counter blocks, one per slot.
    pub sessions: Box<[SessionCell]>,
    /// Per slot: the ERLE of the session's echo canceller over its last whole second of
    /// far-end activity, dB, as `f32` bits ([`NO_ERLE`] when it has none, or none yet).
    /// A gauge with one writer (the DSP stage, each frame it processes through a
    /// canceller, and when a command installs, replaces or removes a chain), read relaxed
    /// by the control plane: one independent value, no protocol. Outside the counter
    /// blocks so sessions without a canceller never touch it.
    pub echo_erle: Box<[AtomicU32]>,
    /// Per slot: the receive stream's loss pattern (see [`LossCell`]), guarded by the
    /// slot's [`SessionCell`] sequence.
    pub loss: Box<[LossCell]>,
    /// The live session of each slot, as the control plane set it: the ingress handle
    /// refuses packets for any other id before they take a slot.
    pub live: LiveTable,
    /// The session of each slot attached to the application audio handle, as the control
    /// plane set it (before it sends the route, so frames the application writes as soon
    /// as `attach_audio` returns are kept even where a stage thread takes them before the
    /// route arrives; cleared before a detaching route is sent). The audio handle refuses
    /// frames for any other id; the decode stage keeps frames for an attached id.
    pub attached: LiveTable,
}

impl Shared {
    fn new(lane: u16, sessions: usize) -> Self {
        Shared {
            lane,
            stop: AtomicBool::new(false),
            acked: AtomicU64::new(0),
            stage_done: std::array::from_fn(|_| AtomicBool::new(false)),
            failed: AtomicBool::new(false),
            counters: LaneCounters::default(),
            tick_ns: TickHistogram::default(),
            sessions: (0..sessions).map(|_| SessionCell::default()).collect(),
            echo_erle: (0..sessions).map(|_| AtomicU32::new(NO_ERLE)).collect(),
            loss: (0..sessions).map(|_| LossCell::default()).collect(),
            live: LiveTable::new(sessions),
            attached: LiveTable::new(sessions),
        }
    }

    /// Accounts one tick that took `ns` of processing (counters and histogram). Called by
    /// the ticking thread only (single writer).
    #[inline]
    pub fn record_tick(&self, ns: u64) {
        let c = &self.counters;
        c.ticks.inc();
        c.last_tick_ns.set(ns);
        c.max_tick_ns.max(ns);
        self.tick_ns.record(ns);
    }

    #[inline]
    fn sc(&self, slot: u32) -> &SessionCounters {
        &self.sessions[slot as usize].counters
    }

    /// The receive loss pattern of the session `generation` of `slot` (`None` once the
    /// slot is another's). Control plane.
    pub fn loss_pattern(&self, slot: u32, generation: u32) -> Option<LossPattern> {
        let cell = self.loss.get(slot as usize)?;
        // A store takes a few dozen nanoseconds and comes at most once a packet: a reader
        // that meets one a thousand times running is not going to see the cell settle.
        self.sessions
            .get(slot as usize)?
            .read_with(generation, || cell.load(1000))?
            .map(|w| LossPattern::from_words(&w))
    }

    /// The ERLE of `slot`'s echo canceller over its last whole second of far-end
    /// activity, dB (`None` without one, or before that second). Control plane.
    pub fn echo_erle_db(&self, slot: u32) -> Option<f32> {
        let bits = self.echo_erle.get(slot as usize)?.load(Ordering::Relaxed);
        Some(f32::from_bits(bits)).filter(|v| !v.is_nan())
    }
}

/// [`Shared::echo_erle`] of a slot without an echo canceller (a NaN's bits).
pub const NO_ERLE: u32 = 0x7fc0_0000;

/// Pushes a slot token back to its owner's free ring; a full ring (a sizing bug) is counted
/// and the slot is lost, never blocked on.
#[inline]
fn release_token(ring: &mut Producer<Token>, counters: &LaneCounters, t: Token) {
    if ring.push(t).is_err() {
        counters.internal_ring_full.inc_shared();
    }
}

/// [`release_token`] as a closure, for callbacks that hand tokens back (buffer flushes,
/// late packets) while other fields of the stage are borrowed.
#[inline]
fn releaser<'a>(
    ring: &'a mut Producer<Token>,
    counters: &'a LaneCounters,
) -> impl FnMut(Token) + 'a {
    move |t| release_token(ring, counters, t)
}

/// The control-plane event for something a DSP chain found in `session`'s audio.
fn dsp_event(session: SessionId, e: DspEvent) -> LaneEvent {
    match e {
        DspEvent::Digit { digit, ended_ms } => LaneEvent::Dtmf {
            session,
            digit,
            source: DtmfSource::InBand,
            ended_ms,
        },
        DspEvent::Talkspurt(speaking) => LaneEvent::Talkspurt { session, speaking },
    }
}

/// The control-plane event for an RFC 4733 digit report.
fn dtmf_event(session: SessionId, d: DtmfEvent, clock_khz: u32) -> LaneEvent {
    LaneEvent::Dtmf {
        session,
        digit: d.digit(),
        source: DtmfSource::Rfc4733,
        ended_ms: match d {
            DtmfEvent::Ended { duration_ts, .. } => Some(duration_ts / clock_khz),
            _ => None,
        },
    }
}

/// The jitter stage's [`LossObserver`] for a session: its slot's [`LossCell`], loaded,
/// updated and stored back on each call (calls come only when a loss leaves the sequence
/// window or a stream ends, never for a clean packet).
struct CellLoss<'a>(&'a LossCell);

impl LossObserver for CellLoss<'_> {
    fn lost(&mut self, first: u64, n: u64) {
        self.update(|p| p.lost(first, n));
    }

    fn stream_end(&mut self, expected: u64) {
        self.update(|p| p.stream_end(expected));
    }
}

impl CellLoss<'_> {
    fn update(&self, f: impl FnOnce(&mut LossPattern)) {
        // The stage is the cell's one writer: nothing stores meanwhile, the first try reads.
        let mut p = LossPattern::from_words(&self.0.load(1).unwrap_or_default());
        f(&mut p);
        self.0.store(&p.to_words());
    }
}

/// Sets the session's loss gauges after a packet's sequence number was counted (`class`).
/// On an RFC 3550 A.1 restart (the sender restarted its sequence; an audio, event or SID
/// packet may confirm it) the restart is counted (`rx_resyncs`) and the statistics start
/// over: what they counted before, which the gauges still hold, joins the earlier
/// streams' counts first.
#[inline]
fn set_loss_gauges(part: &mut JitterPart, sc: &SessionCounters, class: PacketClass) {
    match class {
        PacketClass::Resync => {
            sc.rx_resyncs.inc();
            part.earlier_streams = (sc.rx_expected.get(), sc.rx_lost.get());
        }
        // Audio, RFC 4733 event and RFC 3389 SID packets alike (they share the sequence
        // space): a late copy or a late original is counted whichever it carries.
        PacketClass::Reordered => sc.rx_reordered.inc(),
        PacketClass::Duplicate => sc.rx_duplicates.inc(),
        PacketClass::InOrder | PacketClass::Probation => {}
    }
    sc.rx_expected.set(part.expected());
    sc.rx_lost.set(part.lost());
}

/// Reports the end of a received digit that no end packet reported (RFC 4733 timeout, or
/// its source replaced): the engine event, and the end forwarded to the bridged leg as
/// when an end packet arrives (its sender was started without a duration and would
/// otherwise go on sending the digit, and refuse the next one, until the next end).
fn report_digit_end(
    events: &mut Producer<LaneEvent>,
    out: &mut Producer<ToDecode>,
    reserve: usize,
    shared: &Shared,
    slot: u32,
    part: &JitterPart,
    d: DtmfEvent,
) {
    let id = SessionId::from_parts(shared.lane, slot, part.generation);
    let clock_khz = (part.dtmf_clock_hz / 1000).max(1);
    push_event(events, &shared.counters, dtmf_event(id, d, clock_khz));
    if let Some(event) = digit_to_event(d.digit()) {
        let fwd = ToDecode::Dtmf {
            slot,
            event,
            begin: false,
            duration_ms: forwarded_duration_ms(&d, clock_khz),
        };
        push_tokenless(out, reserve, &shared.counters, fwd);
    }
}

/// The session's RFC 4733 events are `ssrc`'s from now on: the digit in progress of the
/// source followed so far ends (reported, and forwarded to the bridged leg) and the
/// receiver starts afresh, so the new source's first digit is never taken for a late one
/// of the old's.
fn follow_events(
    events: &mut Producer<LaneEvent>,
    out: &mut Producer<ToDecode>,
    reserve: usize,
    shared: &Shared,
    slot: u32,
    part: &mut JitterPart,
    ssrc: u32,
) {
    if let Some(d) = part.dtmf.finish() {
        report_digit_end(events, out, reserve, shared, slot, part, d);
    }
    part.follow_events_of(ssrc);
}

/// Pushes a message that holds no slab slot (a digit, a SID's level, a concealment notice)
/// on to the next stage, only while the ring keeps `reserve` free for the packets or frames
/// and commands whose room is reserved (every slot and the command capacity): a peer
/// flooding events or SIDs can then fill only the ring's own headroom, never cost a
/// command. Else counted (`stage_backlog_drops`); true when pushed.
fn push_tokenless<T>(
    out: &mut Producer<T>,
    reserve: usize,
    counters: &LaneCounters,
    msg: T,
) -> bool {
    let pushed = out.slots() > reserve && out.push(msg).is_ok();
    if !pushed {
        counters.stage_backlog_drops.inc_shared();
    }
    pushed
}

/// Events of one RFC 4733 payload looked at, at most (RFC 4733 §2.5.1.5: a packet
/// carries a few events, e.g. the end of one and the start of the next); the rest of an
/// absurd payload (a 1,280-byte one packs 320) is ignored, so one packet cannot turn into
/// hundreds of reports.
const MAX_PACKED_EVENTS: usize = 8;

/// Q.24's shortest digit a receiver must accept (40 ms): a forwarded digit is sent no
/// shorter, whatever arrived of it.
const MIN_FORWARDED_DIGIT_MS: u32 = 40;

/// The duration, ms, an end report carries on to the bridged leg (0 for a begin).
fn forwarded_duration_ms(d: &DtmfEvent, clock_khz: u32) -> u16 {
    match *d {
        DtmfEvent::Ended { duration_ts, .. } => {
            (duration_ts / clock_khz.max(1)).min(u32::from(u16::MAX)) as u16
        }
        DtmfEvent::Began { .. } => 0,
    }
}

fn push_event(events: &mut Producer<LaneEvent>, counters: &LaneCounters, ev: LaneEvent) {
    if events.push(ev).is_err() {
        counters.events_dropped.inc_shared();
    }
}

/// Pushes a bundle on; if that ever failed (a sizing bug) the bundle is leaked rather than
/// freed on the real-time thread, and counted.
fn push_cmd<T>(out: &mut Producer<T>, counters: &LaneCounters, msg: T) {
    if let Err(rtrb::PushError::Full(m)) = out.push(msg) {
        counters.internal_ring_full.inc_shared();
        std::mem::forget(m);
    }
}

/// Jitter stage: ingests packets (parse, route, filter, receive statistics), hands them to
/// the decode stage's jitter buffer at once, and schedules playout of due sessions.
pub struct JitterStage {
    tick: u64,
    /// When the current tick began (lane clock).
    tick_ns: u64,
    cursor: usize,
    /// `tick % n` for n = 0..=6 (index by a session's ptime in ticks), computed once per tick
    /// so the playout scan does no division.
    tick_mod: [u8; 7],
    /// Per slot: 0 when empty, else `ptime_ticks << 4 | phase`. A compact array so the
    /// playout scan touches one byte per slot and only due sessions' state.
    sched: Box<[u8]>,
    sessions: Box<[Option<JitterPart>]>,
    commands: Consumer<Box<Bundle>>,
    ingress: Consumer<Arrival>,
    packets: Arc<Slab<PacketSlot>>,
    released: Producer<Token>,
    out: Producer<ToDecode>,
    /// Room in `out` kept for packets and commands (see [`push_tokenless`]).
    reserve: usize,
    plays: Producer<PlayRange>,
    events: Producer<LaneEvent>,
    /// Some session has a telephone-event digit in progress whose end may time out.
    dtmf_pending: bool,
    shared: Arc<Shared>,
}

enum Ingest {
    Malformed,
    Packet {
        session: u64,
        seq: u16,
        ts: u32,
        ssrc: u32,
        pt: u8,
        marker: bool,
        len: usize,
        arrival_ns: u64,
    },
}

impl JitterStage {
    /// Starts tick `tick`, which began at `now_ns` on the lane's clock (the monotonic clock
    /// in real time, `tick` × 10 ms on the virtual clock): applies queued commands and
    /// ingests every queued packet. Frames played in this tick carry `now_ns` as the time
    /// their audio left the jitter buffer.
    /// Called on the real-time thread.
    pub fn begin_tick(&mut self, tick: u64, now_ns: u64) {
        self.tick = tick;
        self.tick_ns = now_ns;
        self.cursor = 0;
        self.tick_mod = tick_mods(tick);
        self.drain_commands();
        self.drain_ingress();
        if self.dtmf_pending {
            self.poll_dtmf_timeouts();
        }
    }

    /// RFC 4733 §2.5.2.2: ends digits whose packets stopped (all end packets lost). Scans
    /// only while some digit is in progress.
    fn poll_dtmf_timeouts(&mut self) {
        let now_ms = self.tick * u64::from(Ptime::TICK_MS);
        let mut pending = false;
        for (slot, part) in self.sessions.iter_mut().enumerate() {
            let Some(part) = part.as_mut().filter(|p| p.telephone_event_pt.is_some()) else {
                continue;
            };
            if let Some(d) = part.dtmf.poll(now_ms) {
                report_digit_end(
                    &mut self.events,
                    &mut self.out,
                    self.reserve,
                    &self.shared,
                    slot as u32,
                    part,
                    d,
                );
            }
            pending |= part.dtmf.next_timeout_ms().is_some();
        }
        self.dtmf_pending = pending;
    }

    fn drain_commands(&mut self) {
        while let Ok(b) = self.commands.pop() {
            self.apply(b);
        }
    }

    fn apply(&mut self, mut b: Box<Bundle>) {
        let slot = b.id.slot as usize;
        match b.op {
            Op::Create => {
                let loss = &self.shared.loss[slot];
                self.shared.sessions[slot].begin_generation_with(b.id.generation, || {
                    loss.store(&[0; LOSS_PATTERN_WORDS])
                });
                b.jitter = std::mem::replace(&mut self.sessions[slot], b.jitter.take());
            }
            Op::Update => {
                if let Some(mut new) = b.jitter.take() {
                    if let Some(cur) = self.sessions[slot].as_mut() {
                        // Keep the stream identity and its statistics across a re-INVITE
                        // (at the new codec's RTP clock: jitter in its units).
                        new.rx_ssrc = cur.rx_ssrc;
                        new.generation = cur.generation;
                        new.earlier_streams = cur.earlier_streams;
                        let clock = new.stats.clock_rate_hz();
                        std::mem::swap(&mut new.stats, &mut cur.stats);
                        new.stats.set_clock_rate(clock);
                        // A digit held across the re-INVITE: where events still come the
                        // same way (payload type and clock), the receiver and the source
                        // it follows go on (one begin, one end); else the digit ends here
                        // (reported and forwarded) rather than never.
                        if new.telephone_event_pt == cur.telephone_event_pt
                            && new.dtmf_clock_hz == cur.dtmf_clock_hz
                        {
                            std::mem::swap(&mut new.dtmf, &mut cur.dtmf);
                            new.dtmf_ssrc = cur.dtmf_ssrc;
                            new.dtmf_candidate = cur.dtmf_candidate;
                            b.digit_kept = true;
                        } else if let Some(d) = cur.dtmf.finish() {
                            report_digit_end(
                                &mut self.events,
                                &mut self.out,
                                self.reserve,
                                &self.shared,
                                slot as u32,
                                cur,
                                d,
                            );
                        }
                        b.jitter = Some(std::mem::replace(cur, new));
                    } else {
                        // Nothing to update (already gone): retire it unused, never
                        // free it here.
                        b.jitter = Some(new);
                    }
                }
            }
            Op::Destroy => b.jitter = self.sessions[slot].take(),
            Op::Route | Op::Barrier | Op::Tune | Op::Dtmf | Op::Fault => {}
        }
        self.sched[slot] = self.sessions[slot]
            .as_ref()
            .map(|p| sched_entry(u32::from(p.ptime_ticks), u32::from(p.phase)))
            .unwrap_or(0);
        push_cmd(&mut self.out, &self.shared.counters, ToDecode::Cmd(b));
    }

    fn release(&mut self, t: Token) {
        release_token(&mut self.released, &self.shared.counters, t);
    }

    fn lookup(&self, session: u64) -> Option<u32> {
        let id = SessionId::from_u64(session);
        let part = self.sessions.get(id.slot as usize)?.as_ref()?;
        (id.lane == self.shared.lane && part.generation & 0xFF_FFFF == id.generation)
            .then_some(id.slot)
    }

    /// Starts loading what the packets after the one being ingested will touch: packets
    /// arrive in no session order the hardware could follow, so without this every session's
    /// state is a wait on memory. [`INGRESS_AHEAD`] packets ahead: the packet slot and the
    /// session's jitter state and counters (the ring item names the session slot); half
    /// as far (its slot loaded by then): the packet's bytes.
    #[inline]
    fn prefetch_ingress(&mut self) {
        let (packets, sessions, cells) = (&self.packets, &self.sessions, &self.shared.sessions);
        // From the ring item alone (no load): the packet's slot, the session's state and
        // counters.
        prefetch::at(&mut self.ingress, INGRESS_AHEAD - 1, |a| {
            packets.prefetch(&a.token);
            let slot = a.slot as usize;
            if let (Some(part), Some(cell)) = (sessions.get(slot), cells.get(slot)) {
                // The part's hot fields only (an `Option` of it is the part itself: its
                // box is the niche, tested).
                prefetch::range(
                    (part as *const Option<JitterPart>).cast(),
                    JitterPart::HOT_BYTES,
                );
                prefetch::line(cell);
            }
        });
        // Through the slot (loaded by now): the packet's bytes.
        prefetch::at(&mut self.ingress, INGRESS_AHEAD / 2 - 1, |a| {
            packets.with(&a.token, |p| prefetch::line(p.bytes.as_ptr()));
        });
    }

    fn drain_ingress(&mut self) {
        let mut redrained = false;
        while let Ok(Arrival { token: mut tok, .. }) = self.ingress.pop() {
            self.prefetch_ingress();
            let verdict = self.packets.with_mut(&mut tok, |p| {
                let Some(bytes) = p.bytes.get(..p.len) else {
                    return Ingest::Malformed;
                };
                match RtpPacket::parse(bytes) {
                    Err(_) => Ingest::Malformed,
                    Ok(pkt) => {
                        p.payload_offset = pkt.payload_offset();
                        p.payload_len = pkt.payload().len();
                        p.payload_type = pkt.payload_type();
                        Ingest::Packet {
                            session: p.session,
                            seq: pkt.sequence(),
                            ts: pkt.timestamp(),
                            ssrc: pkt.ssrc(),
                            pt: pkt.payload_type(),
                            marker: pkt.marker(),
                            len: p.payload_len,
                            arrival_ns: p.arrival_ns,
                        }
                    }
                }
            });
            let Ingest::Packet {
                session,
                seq,
                ts,
                ssrc,
                pt,
                marker,
                len,
                arrival_ns,
            } = verdict
            else {
                self.shared.counters.malformed.inc();
                self.release(tok);
                continue;
            };
            let mut slot = self.lookup(session);
            if slot.is_none() && !redrained {
                // The create may have been queued after this tick drained commands.
                redrained = true;
                self.drain_commands();
                slot = self.lookup(session);
            }
            let Some(slot) = slot else {
                self.shared.counters.unknown_session.inc();
                self.release(tok);
                continue;
            };
            let sc = self.shared.sc(slot);
            // Invariant: `lookup` returned this slot because it holds a part.
            let Some(part) = self.sessions[slot as usize].as_mut() else {
                self.release(tok);
                continue;
            };
            let mut duplicate = false;
            if part.telephone_event_pt == Some(pt) || part.cn_pt == Some(pt) {
                // Events and SID frames share the stream's sequence numbers: count them
                // for loss (not for jitter), or every digit would read as lost audio.
                if part.rx_ssrc == Some(ssrc) || part.rx_ssrc.is_none() {
                    let class = part
                        .stats
                        .on_sequence_observed(seq, &mut CellLoss(&self.shared.loss[slot as usize]));
                    duplicate = class == PacketClass::Duplicate;
                    set_loss_gauges(part, sc, class);
                }
            }
            if part.telephone_event_pt == Some(pt) && part.dtmf_ssrc != Some(ssrc) {
                // Events of a source other than the one whose events are followed: it takes
                // over when it starts an event (a new source after a transfer, a gateway
                // sending DTMF under its own SSRC; see `events_take_over`), ending the
                // digit in progress and starting the receiver afresh (its first digit is
                // never taken for a late one of the old source's); otherwise (forked early
                // media, an old source overlapping a new one) its packets are dropped,
                // counted.
                if part.dtmf_ssrc.is_some() {
                    // An update of an event begun at most 200 ms ago (not an end packet).
                    let young_ms = 200 * (part.dtmf_clock_hz / 1000).max(1);
                    let young = self.packets.with(&tok, |p| {
                        EventPayload::parse(p.payload())
                            .is_ok_and(|e| !e.end && u32::from(e.duration) <= young_ms)
                    });
                    let idle = part.dtmf.active_digit().is_none();
                    if !part.events_take_over(ssrc, marker, young && idle) {
                        self.shared.counters.foreign_ssrc_drops.inc_shared();
                        self.release(tok);
                        continue;
                    }
                }
                follow_events(
                    &mut self.events,
                    &mut self.out,
                    self.reserve,
                    &self.shared,
                    slot,
                    part,
                    ssrc,
                );
            } else if part.telephone_event_pt == Some(pt) {
                // The followed source's event: another's run is broken.
                part.dtmf_candidate = ssrc;
            }
            if part.telephone_event_pt == Some(pt) {
                // RFC 4733 events are routed to DTMF handling, never into the audio buffer.
                sc.rx_dtmf_packets.inc();
                // The lane's tick clock (10 ms resolution) times digit ends.
                let now_ms = self.tick * u64::from(Ptime::TICK_MS);
                let id = SessionId::from_parts(self.shared.lane, slot, part.generation);
                let clock_khz = (part.dtmf_clock_hz / 1000).max(1);
                let events = &mut self.events;
                let counters = &self.shared.counters;
                let dtmf = &mut part.dtmf;
                self.dtmf_pending = true;
                let out = &mut self.out;
                let reserve = self.reserve;
                self.packets.with(&tok, |p| {
                    for (offset, ev) in EventPayload::packed(p.payload()).take(MAX_PACKED_EVENTS) {
                        let at = ts.wrapping_add(offset);
                        for d in dtmf.on_packet(at, marker && offset == 0, &ev, now_ms) {
                            push_event(events, counters, dtmf_event(id, d, clock_khz));
                            // On to the bridged leg (the decode stage knows the route).
                            // (The report's own digit: an end of the digit before,
                            // whose end packets were lost, can come with this packet.)
                            let fwd = ToDecode::Dtmf {
                                slot,
                                event: digit_to_event(d.digit()).unwrap_or(ev.event),
                                begin: matches!(d, DtmfEvent::Began { .. }),
                                duration_ms: forwarded_duration_ms(&d, clock_khz),
                            };
                            push_tokenless(out, reserve, counters, fwd);
                        }
                    }
                });
                self.release(tok);
                continue;
            }
            if part.cn_pt == Some(pt) {
                // RFC 3389 SID: the level of the sender's silence, for the comfort noise the
                // receive channel plays through it (never audio for the jitter buffer).
                sc.rx_cn_packets.inc();
                let sid = self.packets.with(&tok, |p| {
                    CnPayload::parse(p.payload()).ok().map(|c| {
                        let mut reflection = [0i8; 10];
                        let order = c.reflection.len().min(reflection.len());
                        reflection[..order].copy_from_slice(&c.reflection[..order]);
                        (c.level_dbov, c.rms(), reflection, order as u8)
                    })
                });
                self.release(tok);
                if let Some((level_dbov, rms, reflection, order)) = sid {
                    let msg = ToDecode::ComfortNoise {
                        slot,
                        ts,
                        duplicate,
                        level_dbov,
                        rms,
                        reflection,
                        order,
                    };
                    push_tokenless(&mut self.out, self.reserve, &self.shared.counters, msg);
                }
                continue;
            }
            if !part.accepts(pt) {
                sc.rx_unsupported_pt.inc();
                self.release(tok);
                continue;
            }
            let new_stream = part.rx_ssrc.is_some_and(|s| s != ssrc);
            if new_stream {
                // Another source on this session. It takes over when its packet starts a
                // stream (marker) or when two of its packets come in a row; until then its
                // packets are dropped, so two sources interleaved (forked early media, an
                // old and a new source overlapping at a transfer) do not restart the
                // buffer on every packet.
                let takes_over = marker || (part.ssrc_candidate == ssrc && part.candidate_run > 0);
                if !takes_over {
                    if part.ssrc_candidate != ssrc {
                        part.ssrc_candidate = ssrc;
                        part.candidate_run = 0;
                    }
                    part.candidate_run = part.candidate_run.saturating_add(1);
                    self.shared.counters.foreign_ssrc_drops.inc_shared();
                    self.release(tok);
                    continue;
                }
                // A new stream (RFC 3550 §8.2): its sequence and timestamp spaces are
                // unrelated.
                sc.rx_resyncs.inc();
                part.start_stream(&mut CellLoss(&self.shared.loss[slot as usize]));
                part.rx_ssrc = Some(ssrc);
                // The old source's digit in progress ends; the new source's events start
                // afresh (its first digit is never taken for a late one of the old). Not
                // when its events are already followed (it pressed a key before its audio
                // took over: that digit goes on).
                if part.dtmf_ssrc != Some(ssrc) {
                    follow_events(
                        &mut self.events,
                        &mut self.out,
                        self.reserve,
                        &self.shared,
                        slot,
                        part,
                        ssrc,
                    );
                }
                part.candidate_run = 0;
            } else if part.rx_ssrc.is_none() {
                part.rx_ssrc = Some(ssrc);
            } else {
                // The current source goes on: another's run is broken.
                part.candidate_run = 0;
            }
            sc.rx_packets.inc();
            sc.rx_payload_bytes.add(len as u64);
            let class = part.stats.on_packet_observed(
                seq,
                ts,
                arrival_ns,
                &mut CellLoss(&self.shared.loss[slot as usize]),
            );
            set_loss_gauges(part, sc, class);
            sc.rx_jitter_ts.set(u64::from(part.stats.jitter_ts()));
            if class == PacketClass::Duplicate {
                // Seen already (RFC 3550 sequence window): never buffer or play it twice.
                self.release(tok);
                continue;
            }
            if len == 0 {
                // A keepalive: it counts as received but there is nothing to decode.
                sc.rx_empty_payloads.inc();
                self.release(tok);
                continue;
            }
            let msg = ToDecode::Packet {
                slot,
                pkt: tok,
                ts,
                marker,
                new_stream,
                arrival_ns,
            };
            if let Err(rtrb::PushError::Full(ToDecode::Packet { pkt, .. })) = self.out.push(msg) {
                self.shared.counters.internal_ring_full.inc_shared();
                self.release(pkt);
            }
        }
    }

    /// Schedules playout for up to `limit` due sessions from where the last call stopped
    /// (one message per chunk); returns true if due sessions remain in this tick. Called on
    /// the real-time thread.
    pub fn playout(&mut self, limit: usize) -> bool {
        let n = self.sessions.len();
        let from = self.cursor;
        let mut done = 0;
        while self.cursor < n && done < limit {
            let s = self.sched[self.cursor];
            self.cursor += 1;
            if is_due(s, &self.tick_mod) {
                done += 1;
            }
        }
        if done > 0 {
            let msg = PlayRange {
                tick: self.tick,
                at_ns: self.tick_ns,
                from: from as u32,
                to: self.cursor as u32,
            };
            if self.plays.push(msg).is_err() {
                // The decode stage is a whole ring of chunks behind: skip, counted.
                self.shared
                    .counters
                    .stage_backlog_drops
                    .add_shared(done as u64);
            }
        }
        self.cursor < n
    }

    /// Applies commands only (used while stopping).
    pub fn drain_commands_only(&mut self) {
        self.drain_commands();
    }

    /// Events from this stage (overruns, pinning) are pushed here.
    pub fn push_event(&mut self, ev: LaneEvent) {
        push_event(&mut self.events, &self.shared.counters, ev);
    }

    /// The lane's shared state.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
}

/// Decode stage: owns each session's receive channel (jitter buffer, decoders,
/// concealment, time-scale modification); produces one frame per due session and routes it
/// (or relays the payload when nothing had to change it).
pub struct DecodeStage {
    sessions: Box<[Option<DecodePart<Token>>]>,
    /// Per slot: the newest RFC 3389 SID the session received and its RTP timestamp, while
    /// `DecodePart::sid` (cold: touched only when one arrives and when a stream
    /// relayed undecoded forwards it).
    sids: Box<[(CnPayload, u32)]>,
    /// Per slot: 0 when empty, else `ptime_ticks << 4 | phase` (as in the jitter stage).
    sched: Box<[u8]>,
    input: Consumer<ToDecode>,
    plays: Consumer<PlayRange>,
    packets: Arc<Slab<PacketSlot>>,
    pkt_return: Producer<Token>,
    frames: Arc<Slab<FrameSlot>>,
    frame_free: Consumer<Token>,
    spare_frame: Option<Token>,
    /// Start of the tick whose play range is being served (lane clock).
    play_ns: u64,
    /// The tick of the play range being served and its `tick % k` (k = 1..=6), to tell
    /// which sessions are due.
    play_tick: u64,
    tick_mod: [u8; 7],
    /// Due sessions after the one playing whose headers were prefetched, in play order
    /// (`ahead[..ahead_len]`), and the slot the search for the next one resumes at.
    ahead: [u32; HEADERS_AHEAD],
    ahead_len: usize,
    ahead_next: usize,
    /// What [`DecodeStage::prefetch_headers`] loads, as (offset from a session's entry, length),
    /// taken from the first session created (the same for every entry).
    header_spans: [(u32, u32); 3],
    /// What [`DecodeStage::prefetch_insert`] loads, likewise: the entry's head, the jitter
    /// buffer's header and first slots, its delay estimator.
    insert_spans: [(u32, u32); 3],
    stretch: StretchPool,
    out: Producer<Downstream>,
    reserve: usize,
    /// A session's share of the packet slots (those beyond `slot_reserve`, divided by the
    /// session slots; 2..=32): what its jitter buffer may hold while `slots_low`.
    slot_share: usize,
    /// Fewer free packet slots than this (the transport's gauge) is `slots_low`.
    slot_reserve: u64,
    /// Few packet slots are free: jitter buffers hold at most `slot_share` packets, so
    /// sessions with a backlog give slots back before the others' packets are refused.
    slots_low: bool,
    /// Frames applications wrote for attached sessions, the ring they come on and the
    /// ring their slots go back on.
    app_queues: Box<[AppQueue]>,
    app_in: Consumer<Token>,
    app_in_return: Producer<Token>,
    app_in_slab: Arc<Slab<AppFrameSlot>>,
    /// Per source slot: the RFC 4733 digit forwarded to a peer's sender that has begun and
    /// not ended (destination slot, event), to end it when the route changes or the source
    /// goes, before the peer sends it forever.
    open_digits: Box<[Option<(u32, u8)>]>,
    shared: Arc<Shared>,
}

/// An egress slot for the next packet: the one the encode stage kept from a period that
/// sent nothing (`spare`), else a free one.
#[inline]
fn take_egress(
    spare: &mut Option<Token>,
    free: &mut Consumer<Token>,
    shared: &Shared,
) -> Option<Token> {
    match spare.take() {
        Some(t) => {
            shared.counters.egress_spare.set(0);
            Some(t)
        }
        None => free.pop().ok(),
    }
}

/// Keeps egress slot `et`, unused, for the encode stage's next packet (`spare`); it counts
/// as free (`EgressHandle::free_slots`).
#[inline]
fn keep_egress(spare: &mut Option<Token>, shared: &Shared, et: Token) {
    *spare = Some(et);
    shared.counters.egress_spare.set(1);
}

/// A frame slot to fill: the one a period that produced nothing left (`spare`), else a
/// free one.
#[inline]
fn take_frame(spare: &mut Option<Token>, free: &mut Consumer<Token>) -> Option<Token> {
    spare.take().or_else(|| free.pop().ok())
}

/// Ends at `dst` a forwarded digit its source will no longer end (route changed, chain
/// or session replaced or gone): a `Downstream::Dtmf` end, when the ring has room beyond
/// `reserve` (else counted: the peer's sender then ends it only with its next digit).
fn end_open_digit(
    out: &mut Producer<Downstream>,
    counters: &LaneCounters,
    reserve: usize,
    open: &mut Option<(u32, u8)>,
) {
    if let Some((dst, event)) = open.take() {
        let end = Downstream::Dtmf {
            dst,
            event,
            begin: false,
            duration_ms: 0,
        };
        push_tokenless(out, reserve, counters, end);
    }
}

impl DecodeStage {
    /// Drains the packet/command ring, then each play range (draining the packet ring again
    /// before each, so everything pushed before a range is applied first); returns messages
    /// handled. Called on the real-time thread.
    pub fn run(&mut self) -> usize {
        let mut n = self.drain_input() + self.drain_app_in();
        while let Ok(r) = self.plays.pop() {
            n += 1 + self.drain_input();
            self.play_ns = r.at_ns;
            if r.tick != self.play_tick {
                self.play_tick = r.tick;
                self.tick_mod = tick_mods(r.tick);
                self.ahead_len = 0;
                self.ahead_next = 0;
            }
            let to = (r.to as usize).min(self.sessions.len());
            for slot in (r.from as usize).min(to)..to {
                if self.is_due(slot) {
                    // What each one's frame will touch (its headers, its concealer's rings,
                    // its packet, at addresses the hardware cannot guess) loads while the
                    // ones before it play.
                    self.prefetch_ahead_of(slot);
                    self.play(slot as u32);
                }
            }
        }
        self.shared
            .counters
            .frame_slots_free
            .set((self.frame_free.slots() + usize::from(self.spare_frame.is_some())) as u64);
        n
    }

    /// True when the session in `slot` plays in the tick being served.
    #[inline]
    fn is_due(&self, slot: usize) -> bool {
        is_due(self.sched[slot], &self.tick_mod)
    }

    /// Keeps the prefetch for `play` ahead of `slot`, which is about to play: the next
    /// [`HEADERS_AHEAD`] due sessions of this tick (in this play range or the next ones)
    /// have their headers loading, the [`RINGS_AHEAD`]-th its rings and packet slot, the
    /// [`BYTES_AHEAD`]-th its packet's bytes. Three steps, so each step's loads have
    /// arrived when the next one reads them.
    #[inline]
    fn prefetch_ahead_of(&mut self, slot: usize) {
        if self.ahead_len > 0 && self.ahead[0] as usize == slot {
            self.ahead.copy_within(1..self.ahead_len, 0);
            self.ahead_len -= 1;
        } else {
            // The first of the tick, or the schedule changed under the queue: start over.
            self.ahead_len = 0;
            self.ahead_next = slot + 1;
        }
        let n = self.sched.len();
        while self.ahead_len < HEADERS_AHEAD && self.ahead_next < n {
            let s = self.ahead_next;
            self.ahead_next += 1;
            if self.is_due(s) {
                self.prefetch_headers(s);
                self.ahead[self.ahead_len] = s as u32;
                self.ahead_len += 1;
            }
        }
        if let Some(&s) = self.ahead[..self.ahead_len].get(RINGS_AHEAD - 1) {
            self.prefetch_play(s, PlayPrefetch::Rings);
        }
        if let Some(&s) = self.ahead[..self.ahead_len].get(BYTES_AHEAD - 1) {
            self.prefetch_play(s, PlayPrefetch::Bytes);
        }
    }

    /// Starts loading the headers of the entry in `slot` (its head, the jitter buffer's
    /// header and first packet slots, the concealer's header): addresses only, so nothing
    /// waits for the entry (an empty one gets a useless hint).
    #[inline]
    fn prefetch_headers(&self, slot: usize) {
        prefetch_spans(&self.sessions, slot, &self.header_spans);
    }

    /// One step of the prefetch for `play(slot)` (see [`PlayPrefetch`]).
    #[inline]
    fn prefetch_play(&self, slot: u32, step: PlayPrefetch) {
        let Some(part) = self.sessions.get(slot as usize).and_then(|p| p.as_ref()) else {
            return;
        };
        match step {
            PlayPrefetch::Rings => {
                if let Some(t) = part.receive.prefetch_frame() {
                    self.packets.prefetch(t);
                }
            }
            PlayPrefetch::Bytes => {
                if let Some(t) = part.receive.buffer.peek_next() {
                    self.packets.with(t, |p| {
                        let n = p.len.min(3 * prefetch::LINE);
                        prefetch::slice(p.bytes.get(..n).unwrap_or_default());
                    });
                }
            }
        }
    }

    /// Packets come in arrival order, so sessions in no order the hardware could guess:
    /// start loading what the next inserts touch while this one is inserted.
    /// [`INSERT_AHEAD`] packets ahead, from the ring item alone (no load): the packet's
    /// slot, the session entry's head (its decoders), the jitter buffer's header and first
    /// slots and its delay estimator, at the offsets every entry has. A hint only.
    #[inline]
    fn prefetch_insert(&mut self) {
        let (packets, sessions, spans) = (&self.packets, &self.sessions, &self.insert_spans);
        prefetch::at(&mut self.input, INSERT_AHEAD - 1, |msg| {
            if let ToDecode::Packet { slot, pkt, .. } = msg {
                packets.prefetch(pkt);
                prefetch_spans(sessions, *slot as usize, spans);
            }
        });
    }

    fn drain_input(&mut self) -> usize {
        let mut n = 0;
        while let Ok(msg) = self.input.pop() {
            if n == 0 {
                // Once per drain that has work (most drains of a fused tick find none):
                // low below the reserve, and low until twice the reserve is free again
                // (hysteresis, so the caps do not flap on and off with every drain).
                let free = self.shared.counters.packet_slots_free.get();
                self.slots_low = free < self.slot_reserve << u32::from(self.slots_low);
            }
            n += 1;
            self.prefetch_insert();
            match msg {
                ToDecode::Packet {
                    slot,
                    pkt,
                    ts,
                    marker,
                    new_stream,
                    arrival_ns,
                } => self.insert(slot, pkt, ts, marker, new_stream, arrival_ns),
                ToDecode::Dtmf {
                    slot,
                    event,
                    begin,
                    duration_ms,
                } => {
                    // An attached session's digits are for the application (engine
                    // events), not to be sent back to the peer that pressed them.
                    let route = self
                        .sessions
                        .get(slot as usize)
                        .and_then(|p| p.as_ref())
                        .and_then(|p| p.route)
                        .filter(|r| !r.app);
                    if let Some(r) = route {
                        let fwd = Downstream::Dtmf {
                            dst: r.dst_slot,
                            event,
                            begin,
                            duration_ms,
                        };
                        if push_tokenless(&mut self.out, self.reserve, &self.shared.counters, fwd) {
                            if let Some(open) = self.open_digits.get_mut(slot as usize) {
                                *open = begin.then_some((r.dst_slot, event));
                            }
                        }
                    }
                }
                ToDecode::ComfortNoise {
                    slot,
                    ts,
                    duplicate,
                    level_dbov,
                    rms,
                    reflection,
                    order,
                } => {
                    if let (Some(Some(p)), Some(fwd)) = (
                        self.sessions.get_mut(slot as usize),
                        self.sids.get_mut(slot as usize),
                    ) {
                        let mut k = [0f32; 10];
                        let n = usize::from(order).min(k.len());
                        for (k, &q) in k.iter_mut().zip(&reflection[..n]) {
                            *k = f32::from(q.max(-127)) / 128.0;
                        }
                        p.receive.set_comfort_noise(rms, &k[..n]);
                        // Kept for forwarding, should the stream be relayed undecoded
                        // (`play`): a newer one replaces one not yet forwarded, an older
                        // one (reordered) does not, and a duplicate (the network's, or a
                        // sender's retransmission) is not forwarded again.
                        let newer = ts.wrapping_sub(fwd.1) as i32;
                        let take = match p.sid {
                            SidState::None => true,
                            SidState::Pending => newer >= 0,
                            SidState::Forwarded => newer > 0,
                        };
                        if !duplicate && take {
                            fwd.0.level_dbov = level_dbov;
                            fwd.0.reflection.clear();
                            let _ = fwd.0.reflection.try_extend_from_slice(&reflection[..n]);
                            fwd.1 = ts;
                            p.sid = SidState::Pending;
                        }
                    }
                }
                ToDecode::Cmd(b) => self.apply(b),
            }
        }
        n
    }

    /// Takes the frames applications wrote into their sessions' queues; returns how many.
    /// A frame for a session that is gone, not attached, or of another length than the
    /// session's frames is counted and its slot goes straight back.
    fn drain_app_in(&mut self) -> usize {
        let mut n = 0;
        while let Ok(t) = self.app_in.pop() {
            n += 1;
            let (session, samples, epoch) = self
                .app_in_slab
                .with(&t, |a| (a.session, a.samples, a.epoch));
            let id = SessionId::from_u64(session);
            let slot = id.slot() as usize;
            let here = id.lane() == usize::from(self.shared.lane) && slot < self.sessions.len();
            // Written for the attachment the control plane has now (its create or route may
            // still be on the way to this stage, on real threads), not an earlier one.
            let flagged =
                here && self.shared.attached.live_epoch(id.slot(), id.generation()) == Some(epoch);
            let fits = match self.sessions.get(slot).and_then(|p| p.as_ref()) {
                Some(part) if here && self.app_queues[slot].generation == id.generation() => {
                    (flagged || part.route.is_some_and(|r| r.app && r.epoch == epoch))
                        && samples == part.frame_samples
                }
                // Not created here yet: kept for it (its length is checked when it plays).
                None if flagged => {
                    self.app_queues[slot].generation = id.generation();
                    true
                }
                _ => {
                    self.shared.counters.app_frames_unknown.inc();
                    release_token(&mut self.app_in_return, &self.shared.counters, t);
                    continue;
                }
            };
            if fits && self.app_queues[slot].epoch != epoch {
                // The first frame of a new attachment: the last one's frames go back.
                self.clear_app_queue(slot);
                self.app_queues[slot].epoch = epoch;
            }
            let refused = if fits {
                self.app_queues[slot].push(t).err()
            } else {
                Some(t)
            };
            if let Some(t) = refused {
                self.shared.counters.app_in_dropped.inc();
                release_token(&mut self.app_in_return, &self.shared.counters, t);
            }
        }
        n
    }

    /// Gives every frame queued for `slot` back to the application unplayed, counting them
    /// in `app_in_dropped`, and forgets that it ever wrote.
    fn clear_app_queue(&mut self, slot: usize) {
        while let Some(t) = self.app_queues[slot].pop() {
            self.shared.counters.app_in_dropped.inc();
            release_token(&mut self.app_in_return, &self.shared.counters, t);
        }
        self.app_queues[slot].started = false;
    }

    /// An attached session's frame period on its send side: the application's next frame
    /// goes to its encoder (its echo canceller's reference on the way), or, when the
    /// application has none, nothing is sent (counted, and the next frame sent starts a
    /// talkspurt).
    fn play_app_in(&mut self, slot: u32, frame_samples: usize) {
        let sc = &self.shared.sessions[slot as usize].counters;
        let Some(t) = self.app_queues[slot as usize].pop() else {
            if self.app_queues[slot as usize].started {
                self.shared.counters.app_underruns.inc();
            }
            self.push_missing(slot, slot);
            return;
        };
        let Some(mut frame) = take_frame(&mut self.spare_frame, &mut self.frame_free) else {
            sc.slab_exhausted.inc();
            release_token(&mut self.app_in_return, &self.shared.counters, t);
            self.push_missing(slot, slot);
            return;
        };
        let played_ns = self.play_ns;
        let frames = &self.frames;
        let copied = self.app_in_slab.with(&t, |a| {
            // Re-checked: an update may have changed the frame since it was queued.
            a.samples == frame_samples
                && frames.with_mut(&mut frame, |f| {
                    let (Some(dst), Some(src)) =
                        (f.pcm.get_mut(..frame_samples), a.pcm.get(..frame_samples))
                    else {
                        return false;
                    };
                    dst.copy_from_slice(src);
                    f.samples = frame_samples;
                    f.payload_len = 0;
                    f.relay = false;
                    f.undecoded_stream = false;
                    f.sid = FrameSid::No;
                    f.marker = false;
                    f.silence = false;
                    f.src_ts = 0;
                    f.played_ns = played_ns;
                    f.app = AppFrame::FromApp;
                    true
                })
        });
        release_token(&mut self.app_in_return, &self.shared.counters, t);
        if !copied {
            self.shared.counters.app_in_dropped.inc();
            self.spare_frame = Some(frame);
            self.push_missing(slot, slot);
            return;
        }
        let msg = Downstream::Frame {
            src: slot,
            dst: slot,
            frame,
        };
        if self.out.push(msg).is_err() {
            self.shared.counters.internal_ring_full.inc_shared();
        }
    }

    fn push_missing(&mut self, src: u32, dst: u32) {
        let msg = Downstream::Missing { src, dst };
        push_tokenless(&mut self.out, self.reserve, &self.shared.counters, msg);
    }

    fn apply(&mut self, mut b: Box<Bundle>) {
        let slot = b.id.slot as usize;
        let mut reframed = false;
        let mut stale_app = false;
        let pkt_return = &mut self.pkt_return;
        let counters = &self.shared.counters;
        let mut release = releaser(pkt_return, counters);
        match b.op {
            Op::Create => {
                b.decode = std::mem::replace(&mut self.sessions[slot], b.decode.take());
                if let Some(q) = self.app_queues.get_mut(slot) {
                    // Frames queued under another generation are an earlier session's
                    // (written as it was being destroyed): never this one's to send.
                    stale_app = q.generation != b.id.generation() && q.len > 0;
                    q.generation = b.id.generation();
                }
            }
            Op::Update => {
                if let Some(mut new) = b.decode.take() {
                    if let Some(cur) = self.sessions[slot].as_mut() {
                        // Frames an application wrote for the old codec or ptime are not
                        // this session's any more.
                        let codec =
                            |p: &DecodePart<Token>| p.decoders.first().map(|(_, d)| d.codec());
                        reframed =
                            new.frame_samples != cur.frame_samples || codec(&new) != codec(cur);
                        new.route = cur.route;
                        cur.receive.reset(&mut release);
                        b.decode = Some(std::mem::replace(cur, new));
                    } else {
                        // Nothing to update (already gone): retire it unused, never
                        // free it here.
                        b.decode = Some(new);
                    }
                }
            }
            Op::Destroy => {
                b.decode = self.sessions[slot].take();
                if let Some(old) = b.decode.as_mut() {
                    // Packet slots go back to the transport, never home in the bundle.
                    old.receive.reset(&mut release);
                }
            }
            Op::Route => {
                if let Some(part) = self.sessions[slot].as_mut() {
                    part.route = b.route;
                }
            }
            Op::Tune => {
                let bounds = b.tune.and_then(|t| t.jitter_ms);
                if let (Some(part), Some((lo, hi))) = (self.sessions[slot].as_mut(), bounds) {
                    part.receive.buffer.delay_mut().set_bounds(lo, hi);
                }
            }
            Op::Barrier | Op::Dtmf => {}
            // Invariant broken on purpose: the control plane asked for a drill of the
            // lane-failure policy (MediaEngine::inject_lane_fault).
            Op::Fault => panic!("lane {}: injected fault", self.shared.lane),
        }
        drop(release);
        if stale_app {
            self.clear_app_queue(slot);
        }
        // Not when the receiver went on across an update, nor when a route is refreshed
        // towards the same session (the update's bridge routes): the digit's own end
        // comes.
        let kept = match b.op {
            Op::Update => b.digit_kept,
            Op::Route => {
                let dst = self.sessions[slot]
                    .as_ref()
                    .and_then(|p| p.route)
                    .map(|r| r.dst_slot);
                self.open_digits
                    .get(slot)
                    .copied()
                    .flatten()
                    .is_some_and(|(open_dst, _)| Some(open_dst) == dst)
            }
            _ => false,
        };
        if matches!(b.op, Op::Create | Op::Update | Op::Destroy | Op::Route) && !kept {
            // A digit forwarded from this session that will now never see its end (the
            // route changed, the receiver was replaced, the session went) ends here.
            if let Some(open) = self.open_digits.get_mut(slot) {
                end_open_digit(&mut self.out, &self.shared.counters, self.reserve, open);
            }
        }
        // Frames written for a session that is gone or no longer attached go back (kept
        // while the control plane has it attached and its route is on the way).
        let q = &self.app_queues[slot];
        let attached = self.sessions[slot].as_ref().is_some_and(|p| {
            p.route.is_some_and(|r| r.app && r.epoch == q.epoch)
                || self.shared.attached.live_epoch(slot as u32, q.generation) == Some(q.epoch)
        });
        // (A session still attached keeps `started` unless its queue is cleared.)
        if !attached || (reframed && self.app_queues[slot].len > 0) {
            self.clear_app_queue(slot);
        }
        if self.header_spans[0].1 == 0 {
            if let Some((play, insert)) = header_spans(&self.sessions, slot) {
                self.header_spans = play;
                self.insert_spans = insert;
            }
        }
        self.sched[slot] = self.sessions[slot]
            .as_ref()
            .map(|p| sched_entry(p.ptime_ticks, p.phase))
            .unwrap_or(0);
        push_cmd(&mut self.out, &self.shared.counters, Downstream::Cmd(b));
    }

    fn return_packet(&mut self, pkt: Token) {
        release_token(&mut self.pkt_return, &self.shared.counters, pkt);
    }

    fn insert(
        &mut self,
        slot: u32,
        pkt: Token,
        ts: u32,
        marker: bool,
        new_stream: bool,
        arrival_ns: u64,
    ) {
        let Some(part) = self.sessions[slot as usize].as_mut() else {
            self.return_packet(pkt);
            return;
        };
        let sc = &self.shared.sessions[slot as usize].counters;
        let pkt_return = &mut self.pkt_return;
        let counters = &self.shared.counters;
        let mut release = releaser(pkt_return, counters);
        if new_stream {
            part.receive.reset(&mut release);
        }
        let samples = self.packets.with(&pkt, |p| {
            part.decoder(p.payload_type)
                .map(|d| d.samples_in(p.payload()))
                .unwrap_or(0)
        });
        if samples == 0 || !part.receive.takes_packet_of(samples) {
            sc.rx_undecodable.inc();
            release(pkt);
            return;
        }
        let low = self.slots_low;
        part.receive.buffer.set_cap(if low {
            self.slot_share
        } else {
            crate::session::receive::JITTER_PACKETS
        });
        match part
            .receive
            .insert(ts, samples, marker, arrival_ns, pkt, &mut release)
        {
            Insert::Stored => {}
            Insert::Late(t) => {
                sc.rx_late.inc();
                release(t);
            }
            Insert::Duplicate(t) => {
                sc.jb_duplicates.inc();
                release(t);
            }
            Insert::Resynced => sc.jb_resyncs.inc(),
            Insert::Overflowed(n) => {
                sc.jb_overflows.add(u64::from(n));
                if low {
                    counters.slot_share_drops.add(u64::from(n));
                }
            }
        }
    }

    fn play(&mut self, slot: u32) {
        let Some(part) = self.sessions[slot as usize].as_ref() else {
            return;
        };
        if part.route.is_some_and(|r| r.app) {
            // The send side of a session attached to an application first: its frame
            // reaches the session's echo canceller as the reference before the capture.
            let frame_samples = part.frame_samples;
            self.play_app_in(slot, frame_samples);
        }
        let Some(part) = self.sessions[slot as usize].as_mut() else {
            return;
        };
        let sc = &self.shared.sessions[slot as usize].counters;
        let route = part.route;
        // Whose send side this period passes for when it brings no frame: a bridged peer's.
        // A session with no route is nobody's destination (bridges are symmetric), so its
        // own send side passes the period with nothing to send (its timeline advances and
        // an RFC 4733 digit asked for, or one whose forwarder went away, still goes out).
        // An attached session's own send side was served above.
        let sink = match route {
            Some(r) if r.app => None,
            Some(r) => Some(r.dst_slot),
            None => Some(slot),
        };
        let Some(mut frame) = take_frame(&mut self.spare_frame, &mut self.frame_free) else {
            sc.slab_exhausted.inc();
            if let Some(dst) = sink {
                self.push_missing(slot, dst);
            }
            return;
        };
        let frame_samples = part.frame_samples;
        let packets = &self.packets;
        let pkt_return = &mut self.pkt_return;
        let counters = &self.shared.counters;
        let mut release = releaser(pkt_return, counters);
        // Relay is preferred when the destination sends the codec this stream arrives in.
        let relay_preferred = route.is_some_and(|r| r.relay_ok)
            && part.dsp_passthrough
            && route.is_some_and(|r| {
                part.decoders
                    .first()
                    .is_some_and(|(_, d)| d.codec() == r.dst_codec)
            });
        // Opus and G.722 relays pass payloads through undecoded (the far end conceals
        // with its own decoder and Opus FEC); G.711 relays keep PLC, feeding the
        // concealer the codes (decoded only when a loss needs them). Neither when the
        // destination's echo canceller needs the audio as its reference.
        let lazy_relay = relay_preferred && route.is_some_and(|r| !r.dst_needs_audio);
        let undecoded_relay = lazy_relay
            && part
                .decoders
                .first()
                .is_some_and(|(_, d)| !matches!(d.codec(), Codec::Pcmu | Codec::Pcma));
        let mut decode = SlabDecoder {
            packets,
            decoders: &mut part.decoders,
            relay_to: if lazy_relay {
                route.map(|r| r.dst_codec)
            } else {
                None
            },
            failed: 0,
        };
        let relay_allowed = route.is_some_and(|r| r.relay_ok) && part.dsp_passthrough;
        let stretch = &mut self.stretch;
        let sids = &self.sids;
        let played_ns = self.play_ns;
        // Set when the frame carries a SID to forward (`FrameSlot::sid`).
        let mut sid = false;
        // Decoded audio left from the packet before (one longer than the frame) plays first.
        let leftover = part.sid != SidState::None && part.receive.pending_samples() > 0;
        let rep = self.frames.with_mut(&mut frame, |f| {
            let step = if undecoded_relay {
                part.receive.relay_frame(frame_samples, &mut release)
            } else {
                RelayStep::Decode
            };
            let (rep, samples) = match step {
                // Undecoded: the frame carries no audio.
                RelayStep::Relay(r) | RelayStep::Gap(r) => (r, 0),
                RelayStep::Decode => (
                    part.receive.get_frame(
                        &mut f.pcm[..frame_samples],
                        stretch,
                        relay_preferred,
                        lazy_relay,
                        &mut decode,
                        &mut release,
                    ),
                    frame_samples,
                ),
            };
            f.samples = if rep.undecoded { 0 } else { samples };
            f.marker = rep.marker;
            f.src_ts = rep.src_ts;
            f.played_ns = played_ns;
            f.relay = false;
            // PCM the destination's encoder must not make for a stream it relays undecoded:
            // a talkspurt's first frame (the buffer's restart) and a frame with no packet
            // decoded into it (comfort noise once the buffer went idle, concealment).
            f.undecoded_stream = undecoded_relay && (rep.marker || rep.decoded == 0);
            f.sid = FrameSid::No;
            if part.sid != SidState::None {
                sid = attach_sid(
                    &mut part.sid,
                    f,
                    Played {
                        src_ts: rep.src_ts,
                        marker: rep.marker,
                        relayed: rep.relay.is_some(),
                        decoded: rep.decoded,
                        produced: rep.produced,
                        empty: part.receive.buffer.is_empty(),
                        leftover,
                    },
                    undecoded_relay,
                    lazy_relay,
                    sids.get(slot as usize),
                );
            }
            f.silence = false;
            f.app = if route.is_some_and(|r| r.app) {
                AppFrame::ToApp
            } else {
                AppFrame::No
            };
            rep
        });
        sc.jb_target_ms
            .set(u64::from(part.receive.buffer.delay().target_ms()));
        sc.jb_level_ms.set(u64::from(part.receive.level_ms()));
        if decode.failed > 0 {
            sc.rx_undecodable.add(u64::from(decode.failed));
        }
        if !rep.produced {
            sc.frames_missing.inc();
            // Unless it carries only a SID to forward.
            if !sid {
                // Ends the borrow of the packet return ring before `push_missing`.
                drop(release);
                self.spare_frame = Some(frame);
                if let Some(dst) = sink {
                    self.push_missing(slot, dst);
                }
                return;
            }
        }
        // (A packet the decoder refused is counted undecodable, not decoded.)
        sc.packets_decoded
            .add(u64::from(rep.decoded.saturating_sub(decode.failed)));
        if rep.concealed > 0 {
            sc.frames_concealed.inc();
            sc.samples_concealed.add(u64::from(rep.concealed));
        }
        sc.samples_accelerated.add(u64::from(rep.accelerated));
        sc.samples_expanded.add(u64::from(rep.expanded));
        sc.rx_late.add(u64::from(rep.stale));
        let Some(route) = route else {
            sc.no_sink.inc();
            if let Some(t) = rep.relay {
                release(t);
            }
            drop(release);
            self.spare_frame = Some(frame);
            self.push_missing(slot, slot);
            return;
        };
        if let Some(t) = rep.relay {
            // The frame is exactly this packet, unmodified: relay its payload when the
            // destination sends the same codec (no transcoding loss, no encode cost).
            let relayed = relay_allowed
                && packets.with(&t, |p| {
                    let same = decode
                        .decoders
                        .iter()
                        .find(|(q, _)| *q == p.payload_type)
                        .is_some_and(|(_, d)| d.codec() == route.dst_codec);
                    same && self.frames.with_mut(&mut frame, |f| {
                        let pl = p.payload();
                        match f.payload.get_mut(..pl.len()) {
                            Some(dst) => {
                                dst.copy_from_slice(pl);
                                f.payload_len = pl.len();
                                f.relay = true;
                                f.relay_codec = route.dst_codec;
                                true
                            }
                            None => false,
                        }
                    })
                });
            if !relayed && rep.undecoded {
                // Fed to the concealer as codes but not relayable after all (a payload
                // larger than the frame slot's): decode it now.
                self.frames.with_mut(&mut frame, |f| {
                    let pcm = &mut f.pcm[..frame_samples];
                    let n = decode.decode(&t, pcm).min(frame_samples);
                    pcm[n..].fill(0);
                    f.samples = frame_samples;
                });
            }
            // (A packet an undecoded relay took that is not relayable after all stays
            // unplayed, as a gap: its decoder never saw the relayed stream, so its audio
            // would reach the far end as a burst. Unreachable: every receive codec of a
            // G.722 or Opus session is that codec, and ingress refuses payloads larger
            // than a frame slot's.)
            release(t);
            if relayed {
                sc.frames_relayed.inc();
            } else {
                sc.frames_decoded.inc();
            }
        } else if rep.produced {
            sc.frames_decoded.inc();
        }
        let msg = Downstream::Frame {
            src: slot,
            dst: route.dst_slot,
            frame,
        };
        if self.out.push(msg).is_err() {
            self.shared.counters.internal_ring_full.inc_shared();
        }
    }
}

/// What [`attach_sid`] needs of a frame's `FrameReport` (by value: a reference would keep
/// the whole report in memory on the common path).
#[derive(Clone, Copy)]
struct Played {
    src_ts: u32,
    marker: bool,
    relayed: bool,
    decoded: u32,
    produced: bool,
    /// The session's jitter buffer holds nothing.
    empty: bool,
    /// The frame began with decoded audio left from the packet before.
    leftover: bool,
}

/// With a SID of the source's current silence (`state`: `DecodePart::sid`; `kept`: the
/// newest and its timestamp), attaches the SID to frame `f` being played (`rep`: what the
/// play reported) and returns true when it goes with this frame.
///
/// The source's newest SID, not yet forwarded, goes with the first frame period without a
/// packet or decoded audio in it (a gap, or comfort noise once the buffer went idle) of a
/// stream relayed (undecoded, or a G.711 relay, whose later frames of comfort noise are then
/// marked `FrameSid::Silence`) once the source's silence has begun: the frame is at or after
/// the SID's timestamp, or nothing is buffered (the audio the buffer held when it came
/// played first; a gap's timeline stands still). It is for a destination that negotiated
/// comfort noise, to send as is (its own encoder may not make that frame; see
/// `EncodeStage::encode`); in a gap the frame carries only the SID (`samples` 0). Audio of
/// the source's at or after its timestamp (relayed or decoded), or a talkspurt's restart,
/// ends the silence: a SID still waiting is stale. On a stream not relayed the SIDs were
/// for this session's own comfort noise only.
#[cold]
#[inline(never)]
fn attach_sid(
    state: &mut SidState,
    f: &mut FrameSlot,
    rep: Played,
    undecoded_relay: bool,
    lazy_relay: bool,
    kept: Option<&(CnPayload, u32)>,
) -> bool {
    // (`undecoded_relay` implies `lazy_relay`; a G.711 relay is lazy, not undecoded.)
    let Some((cn, sid_ts)) = kept.filter(|_| lazy_relay) else {
        *state = SidState::None;
        return false;
    };
    let reached = rep.src_ts.wrapping_sub(*sid_ts) as i32 >= 0;
    let audio = rep.relayed || rep.decoded > 0;
    if rep.marker || (audio && reached) {
        *state = SidState::None;
        return false;
    }
    if *state == SidState::Forwarded {
        // The signalled silence goes on: a G.711 relay's comfort noise is not sent either
        // where the SID went out (an undecoded relay's frames are marked already).
        if !undecoded_relay && !audio {
            f.sid = FrameSid::Silence;
        }
        return false;
    }
    if *state != SidState::Pending || audio || rep.leftover || !(reached || rep.empty) {
        return false;
    }
    *state = SidState::Forwarded;
    let n = cn.write(&mut f.payload);
    f.payload_len = n;
    if n == 0 {
        return false;
    }
    f.sid = FrameSid::Sid;
    if !rep.produced {
        f.samples = 0;
    }
    true
}

/// `tick % k` for k = 1..=6 (index 0 unused): where `tick` falls in each frame period, so
/// that [`is_due`] tells which sessions play in it.
fn tick_mods(tick: u64) -> [u8; 7] {
    let mut m = [0u8; 7];
    for (k, m) in m.iter_mut().enumerate().skip(1) {
        *m = (tick % k as u64) as u8;
    }
    m
}

/// A session's schedule entry, as both stages that play sessions keep it: 0 for an empty
/// slot, else `ptime_ticks << 4 | phase`.
fn sched_entry(ptime_ticks: u32, phase: u32) -> u8 {
    ((ptime_ticks as u8) << 4) | (phase as u8 & 0xF)
}

/// True when the session scheduled as `s` (see [`sched_entry`]) plays in the tick whose
/// [`tick_mods`] are `m`.
#[inline]
fn is_due(s: u8, m: &[u8; 7]) -> bool {
    s != 0 && m[usize::from(s >> 4)] == s & 0xF
}

/// Starts loading `spans` (offsets and lengths) of the entry in `slot`: addresses only,
/// nothing read (an empty entry gets a useless hint, a slot out of range none).
#[inline]
fn prefetch_spans<T>(entries: &[T], slot: usize, spans: &[(u32, u32)]) {
    if slot >= entries.len() {
        return;
    }
    let entry = entries.as_ptr().wrapping_add(slot) as *const u8;
    for &(offset, len) in spans {
        prefetch::range(entry.wrapping_add(offset as usize), len as usize);
    }
}

/// [`DecodeStage::header_spans`] and [`DecodeStage::insert_spans`] taken from the session
/// in `slot` (the same offsets in every entry), if there is one.
#[allow(clippy::type_complexity)]
fn header_spans(
    sessions: &[Option<DecodePart<Token>>],
    slot: usize,
) -> Option<([(u32, u32); 3], [(u32, u32); 3])> {
    let entry = sessions.get(slot)?;
    let base = entry as *const _ as usize;
    let part = entry.as_ref()?;
    let span = |(addr, len): (usize, usize)| ((addr - base) as u32, len as u32);
    let head = span((base, &part.receive as *const _ as usize - base));
    let [jb, plc] = part.receive.header_ranges();
    let delay = part.receive.buffer.delay_range();
    Some(([head, span(jb), span(plc)], [head, span(jb), span(delay)]))
}

/// The steps of the playout prefetch after the headers ([`DecodeStage::prefetch_headers`]:
/// the entry's head, the jitter buffer's and the concealer's per-frame fields), each
/// issued sessions after the one before, so that what a step reads was loaded by the
/// previous one.
#[derive(Clone, Copy)]
enum PlayPrefetch {
    /// The concealer's rings at the write position (its background ring's too), and the
    /// slot of the packet due (read from the headers).
    Rings,
    /// The bytes of the packet due (through its slot, loaded by `Rings`).
    Bytes,
}

/// Decodes packets from the slab with the session's decoders (by payload type), and
/// conceals with the codec's own PLC/FEC where it has one (the first decoder's codec).
struct SlabDecoder<'a> {
    packets: &'a Slab<PacketSlot>,
    decoders: &'a mut ArrayVec<(u8, AnyDecoder), MAX_RX_CODECS>,
    /// The codec the destination sends, when nothing but the relay needs this stream's
    /// audio: only packets of that codec may stay undecoded (they are then relayed).
    relay_to: Option<Codec>,
    /// Packets the decoder refused (a corrupt payload that passed the sizing): counted in
    /// `rx_undecodable` once the frame is made.
    failed: u32,
}

impl PacketDecoder<Token> for SlabDecoder<'_> {
    fn feed_undecoded(&mut self, t: &Token, samples: usize, plc: &mut PcmPlc) -> bool {
        let decoders = &*self.decoders;
        let Some(relay_to) = self.relay_to else {
            return false;
        };
        self.packets.with(t, |p| {
            let law = match decoders.iter().find(|(q, _)| *q == p.payload_type) {
                Some((_, d)) if d.codec() != relay_to => return false,
                Some((_, AnyDecoder::Pcmu)) => Law::Ulaw,
                Some((_, AnyDecoder::Pcma)) => Law::Alaw,
                _ => return false,
            };
            let payload = p.payload();
            payload.len() == samples && plc.good_coded_frame(payload, law)
        })
    }

    fn decode(&mut self, t: &Token, out: &mut [i16]) -> usize {
        let decoders = &mut *self.decoders;
        let failed = &mut self.failed;
        self.packets.with(t, |p| {
            let pt = p.payload_type;
            match decoders.iter_mut().find(|(q, _)| *q == pt) {
                Some((_, d)) => d.decode(p.payload(), out).unwrap_or_else(|_| {
                    *failed += 1;
                    0
                }),
                None => 0,
            }
        })
    }

    fn conceal(&mut self, next: Option<&Token>, out: &mut [i16]) -> bool {
        let decoders = &mut *self.decoders;
        let Some((pt0, _)) = decoders.first() else {
            return false;
        };
        let pt0 = *pt0;
        match next {
            Some(t) => self.packets.with(t, |p| {
                // FEC only from a packet of the same codec's payload type.
                let fec = (p.payload_type == pt0).then(|| p.payload());
                decoders[0].1.conceal(fec, out)
            }),
            None => decoders[0].1.conceal(None, out),
        }
    }
}

/// DSP stage: runs each received frame through its session's processing chain.
pub struct DspStage {
    sessions: Box<[Option<DspPart>]>,
    /// Output of sample-rate conversion before it is copied back into the frame.
    scratch: Box<[i16]>,
    /// Work buffers every session's chain borrows in turn (they stay in cache).
    work: DspScratch,
    input: Consumer<Downstream>,
    frames: Arc<Slab<FrameSlot>>,
    out: Producer<Downstream>,
    /// Digits and talkspurt changes found in the audio.
    events: Producer<LaneEvent>,
    shared: Arc<Shared>,
    /// Sessions whose chain takes an echo reference (kept as commands swap chains in and
    /// out): with none, the stage prefetches no reference writes.
    reference_chains: usize,
    /// Per source slot: an in-band digit forwarded as RFC 4733 that has begun and not
    /// ended (destination slot, event), as the decode stage's `open_digits`.
    open_digits: Box<[Option<(u32, u8)>]>,
}

/// Gives the audio in `frame`, which session `dst` sends, to `dst`'s echo canceller as its
/// reference (if it has one).
#[inline]
fn feed_reference(
    sessions: &mut [Option<DspPart>],
    frames: &Slab<FrameSlot>,
    dst: usize,
    frame: &mut Token,
) {
    if let Some(d) = sessions.get_mut(dst).and_then(|d| d.as_mut()) {
        if d.chain.wants_reference() {
            frames.with_mut(frame, |f| d.chain.push_reference(&f.pcm[..f.samples]));
        }
    }
}

/// Where in its input ring (0: the frame after the one being processed) the DSP stage
/// prefetches a session's chain box and the frame's counter, and where the components'
/// buffers (see [`DspStage::prefetch_ahead`]). One frame deeper (2 and 1, or 3 and 2)
/// measured no better (PERF.md, session 12).
const DSP_BOX_AHEAD: usize = 1;
const DSP_BUFFERS_AHEAD: usize = 0;

/// For a frame that becomes the echo reference of its destination's canceller (session
/// `dst`): starts loading where it will be written, in the two steps of
/// [`DspChain::prefetch_reference`] (another session's chain, not walked in order). Not
/// inlined: inlined in the DSP stage's prefetch closure it changed how that closure was
/// compiled, and lanes without cancellers, which never call it, measured slower
/// (PERF.md, session 18).
#[inline(never)]
fn prefetch_reference_write(sessions: &[Option<DspPart>], dst: usize, first: bool) {
    if let Some(d) = sessions.get(dst).and_then(|d| d.as_ref()) {
        if d.chain.wants_reference() {
            d.chain.prefetch_reference(first);
        }
    }
}

impl DspStage {
    /// Starts loading the processing state of the next two frames' sessions (a voice chain
    /// is kilobytes per session, at addresses the hardware cannot guess): the chain's box
    /// two frames ahead, its components' buffers one ahead; two ahead too, the counter
    /// the frame is counted in. An undecoded relay touches only that counter. A hint only.
    #[inline]
    fn prefetch_ahead(&mut self) {
        let (sessions, frames, cells) = (&self.sessions, &self.frames, &self.shared.sessions);
        let reference_chains = self.reference_chains;
        let work = &mut self.work;
        // The item at DSP_BOX_AHEAD: its chain's box and counter; the one at
        // DSP_BUFFERS_AHEAD (whose box was loaded a frame ago): its components' buffers.
        // Each read by position (`prefetch::at`) rather than by walking the items before.
        let mut visit = |msg: &Downstream, first: bool| {
            let Downstream::Frame { src, dst, frame } = msg else {
                return;
            };
            if frames.with(frame, |f| f.no_audio()) {
                return;
            }
            if reference_chains > 0 {
                prefetch_reference_write(sessions, *dst as usize, first);
            }
            if first {
                if let Some(cell) = cells.get(*src as usize) {
                    prefetch::line(&cell.counters.frames_processed);
                }
            }
            if let Some(p) = sessions.get(*src as usize).and_then(|p| p.as_ref()) {
                p.chain.prefetch(first, work);
            }
        };
        prefetch::at(&mut self.input, DSP_BOX_AHEAD, |m| visit(m, true));
        prefetch::at(&mut self.input, DSP_BUFFERS_AHEAD, |m| visit(m, false));
    }

    /// Drains the input ring as far as the output has room. Called on the real-time thread.
    pub fn run(&mut self) -> usize {
        let mut n = 0;
        while self.out.slots() > 0 {
            let Ok(mut msg) = self.input.pop() else { break };
            n += 1;
            self.prefetch_ahead();
            match &mut msg {
                Downstream::Frame { src, dst, frame } => {
                    let (src, dst) = (*src as usize, *dst as usize);
                    let (relay, no_audio, app) =
                        self.frames.with(frame, |f| (f.relay, f.no_audio(), f.app));
                    if app == AppFrame::FromApp {
                        // What an application wrote for `dst` to send: no receive
                        // processing; it is the reference of `dst`'s echo canceller.
                        self.work.flush_prefetch();
                        feed_reference(&mut self.sessions, &self.frames, dst, frame);
                        push_cmd(&mut self.out, &self.shared.counters, msg);
                        continue;
                    }
                    // A frame that runs no echo canceller issues none of the next one's
                    // state in steps (`DspChain::prefetch`): ask for what is queued now, a
                    // frame ahead. (A chain runs its canceller on every frame it processes,
                    // and it processes every frame that is not a relay.)
                    let runs_canceller = !relay
                        && self
                            .sessions
                            .get(src)
                            .and_then(|p| p.as_ref())
                            .is_some_and(|p| p.chain.wants_reference());
                    if !runs_canceller {
                        self.work.flush_prefetch();
                    }
                    if no_audio {
                        // An undecoded relay (or a SID it forwards in a gap): no audio to
                        // process or to give an echo canceller as its reference, so neither
                        // session's DSP state nor its counters are touched (three cache
                        // lines per frame at thousands of sessions; the decode stage
                        // counted it relayed, or missing).
                        // (Its part exists: frames travel behind the session's create and
                        // ahead of its destroy in this ring.)
                        push_cmd(&mut self.out, &self.shared.counters, msg);
                        continue;
                    }
                    let mut digits: ArrayVec<(u8, bool), 4> = ArrayVec::new();
                    if let Some(part) = self.sessions[src].as_mut() {
                        let scratch = &mut self.scratch;
                        let work = &mut self.work;
                        let events = &mut self.events;
                        let shared = &self.shared;
                        let id = SessionId::from_parts(shared.lane, src as u32, part.generation);
                        let digits = &mut digits;
                        let open = &mut part.inband_digit_open;
                        let (events_negotiated, events_base) =
                            (part.events_negotiated, part.events_base);
                        let mut emit = |e: DspEvent| {
                            if let DspEvent::Digit { digit, ended_ms } = e {
                                // A peer that sends RFC 4733 events is heard through them:
                                // its digits are not reported (or forwarded) again from the
                                // tones many such phones leave in the audio. A digit begun
                                // in-band before the first event still gets its end.
                                let begin = ended_ms.is_none();
                                if begin
                                    && events_negotiated
                                    && shared.sc(src as u32).rx_dtmf_packets.get() > events_base
                                {
                                    return;
                                }
                                if !begin && !std::mem::replace(open, false) {
                                    return;
                                }
                                *open = begin;
                                // In-band digits go on to the bridged leg as RFC 4733.
                                if let Some(event) = digit_to_event(digit) {
                                    let _ = digits.try_push((event, begin));
                                }
                            }
                            push_event(events, &shared.counters, dsp_event(id, e));
                        };
                        self.frames.with_mut(frame, |f| {
                            if !f.relay {
                                part.chain.process(&mut f.pcm[..f.samples], work, &mut emit);
                                f.silence = part.chain.speaking() == Some(false);
                                if let (Some(erle), Some(g)) =
                                    (part.chain.erle_db(), shared.echo_erle.get(src))
                                {
                                    g.store(erle.to_bits(), Ordering::Relaxed);
                                }
                            }
                            // To the peer's rate (e.g. G.722 16 kHz -> PCMU 8 kHz); also a
                            // relayed payload decoded all the same (the peer's echo
                            // canceller takes it as its reference; Opus relays between
                            // sessions at different Opus rates), or the reference would be
                            // 48 kHz audio read as 8 kHz.
                            if let Some(r) = part.resampler.as_mut() {
                                if !f.relay || f.samples > 0 {
                                    let n =
                                        r.process(&f.pcm[..f.samples], scratch).min(f.pcm.len());
                                    f.pcm[..n].copy_from_slice(&scratch[..n]);
                                    f.samples = n;
                                } else {
                                    // A payload relayed undecoded: the audio stream breaks
                                    // here, so the next decoded frame (a loss concealed
                                    // between relayed ones) starts afresh instead of after
                                    // audio from before the relay (a burst of stale speech
                                    // the filter's length long).
                                    r.reset();
                                }
                            }
                        });
                        self.shared.sc(src as u32).frames_processed.inc();
                    }
                    // An attached session's digits are for the application (engine
                    // events), never sent back to the peer that played them; nor is its
                    // received audio its own canceller's reference.
                    if app == AppFrame::ToApp {
                        push_cmd(&mut self.out, &self.shared.counters, msg);
                        continue;
                    }
                    for &(event, begin) in &digits {
                        let fwd = Downstream::Dtmf {
                            dst: dst as u32,
                            event,
                            begin,
                            duration_ms: 0,
                        };
                        // Keep the last slot for the frame itself (checked by the loop).
                        if self.out.slots() < 2 || self.out.push(fwd).is_err() {
                            self.shared.counters.internal_ring_full.inc_shared();
                        } else if let Some(open) = self.open_digits.get_mut(src) {
                            *open = begin.then_some((dst as u32, event));
                        }
                    }
                    // What goes to `dst`'s peer is the echo reference of `dst`'s canceller
                    // (decoded audio: relays to a session with an echo canceller are
                    // decoded, see `DecodeStage::play`).
                    feed_reference(&mut self.sessions, &self.frames, dst, frame);
                }
                Downstream::Missing { .. } | Downstream::Dtmf { .. } => {
                    self.work.flush_prefetch();
                }
                Downstream::Cmd(b) => {
                    self.work.flush_prefetch();
                    let slot = b.id.slot as usize;
                    if matches!(b.op, Op::Create | Op::Update | Op::Destroy | Op::Route) {
                        // An in-band digit forwarded from this session that its (replaced
                        // or departing) detector or route will never end ends here, keeping
                        // the last slot for the command itself.
                        if let Some(open) = self.open_digits.get_mut(slot) {
                            end_open_digit(&mut self.out, &self.shared.counters, 1, open);
                        }
                    }
                    let wants_reference =
                        |p: &Option<DspPart>| p.as_ref().is_some_and(|p| p.chain.wants_reference());
                    let before = self.sessions.get(slot).is_some_and(wants_reference);
                    match b.op {
                        Op::Create => {
                            b.dsp = std::mem::replace(&mut self.sessions[slot], b.dsp.take())
                        }
                        Op::Update => {
                            if let Some(mut new) = b.dsp.take() {
                                if let Some(cur) = self.sessions[slot].as_mut() {
                                    // The route (and its converter) outlives a re-INVITE.
                                    std::mem::swap(&mut new.resampler, &mut cur.resampler);
                                    new.events_base =
                                        self.shared.sc(slot as u32).rx_dtmf_packets.get();
                                    b.dsp = Some(std::mem::replace(cur, new));
                                } else {
                                    // Nothing to update (already gone): retire it unused, never
                                    // free it here.
                                    b.dsp = Some(new);
                                }
                            }
                        }
                        Op::Destroy => b.dsp = self.sessions[slot].take(),
                        Op::Route => {
                            if let Some(part) = self.sessions[slot].as_mut() {
                                // New converter in, old one back home in the bundle.
                                std::mem::swap(&mut part.resampler, &mut b.resampler);
                            }
                        }
                        Op::Barrier | Op::Tune | Op::Dtmf | Op::Fault => {}
                    }
                    let after = self.sessions.get(slot).is_some_and(wants_reference);
                    self.reference_chains = (self.reference_chains + usize::from(after))
                        .saturating_sub(usize::from(before));
                    if matches!(b.op, Op::Create | Op::Update | Op::Destroy) {
                        // A new chain (or none): no ERLE until its canceller has measured a
                        // second.
                        if let Some(g) = self.shared.echo_erle.get(slot) {
                            g.store(NO_ERLE, Ordering::Relaxed);
                        }
                    }
                    // The count against a recount, in builds with debug assertions only (a
                    // walk of every slot; commands are rare and not on the frame path).
                    debug_assert_eq!(
                        self.reference_chains,
                        self.sessions.iter().filter(|p| wants_reference(p)).count(),
                        "the DSP stage's count of chains taking a reference is out of step"
                    );
                }
            }
            // Cannot fail: checked for room above and this is the only producer.
            push_cmd(&mut self.out, &self.shared.counters, msg);
        }
        n
    }
}

/// Encode stage: encodes (or copies relayed payloads) into egress packets, owns the RTP
/// send state, acknowledges commands and retires what the stages removed.
pub struct EncodeStage {
    sessions: Box<[Option<EncodePart>]>,
    /// Per slot: the SID last forwarded (`Relayed::Sid`), for keepalives to
    /// repeat (cold: touched only by those).
    fwd_sids: Box<[ArrayVec<u8, 16>]>,
    input: Consumer<Downstream>,
    frames: Arc<Slab<FrameSlot>>,
    frame_return: Producer<Token>,
    egress_free: Consumer<Token>,
    egress: Producer<Token>,
    egress_slab: Arc<Slab<EgressSlot>>,
    spare: Option<Token>,
    /// Received frames of attached sessions, on to the application, and their slots.
    app_out: Producer<Token>,
    app_out_free: Consumer<Token>,
    app_out_slab: Arc<Slab<AppFrameSlot>>,
    retire: Producer<Box<Bundle>>,
    events: Producer<LaneEvent>,
    shared: Arc<Shared>,
    /// A frame of silence, the longest a session has: encoded as a keepalive.
    silence: Box<[i16]>,
}

impl EncodeStage {
    /// Drains the input ring; returns messages handled. Called on the real-time thread.
    pub fn run(&mut self) -> usize {
        let mut n = 0;
        while let Ok(msg) = self.input.pop() {
            n += 1;
            self.prefetch_next();
            match msg {
                Downstream::Frame { dst, frame, .. } => {
                    if self.frames.with(&frame, |f| f.app == AppFrame::ToApp) {
                        self.deliver_to_app(dst, &frame);
                    } else {
                        self.encode(dst, Some(&frame));
                    }
                    release_token(&mut self.frame_return, &self.shared.counters, frame);
                }
                Downstream::Missing { dst, .. } => {
                    // A telephone event goes on even when no audio comes (senders often
                    // mute audio while a key is pressed).
                    // The flag first: sessions with no digit playing never touch the box.
                    let tone = self.sessions[dst as usize].as_ref().is_some_and(|p| {
                        p.tone_on && p.tones.as_ref().is_some_and(|t| t.generator.is_active())
                    });
                    if tone {
                        // A forwarded digit plays in-band even without audio.
                        self.encode(dst, None);
                    } else if !self.dtmf_in_place_of_audio(dst) && !self.keepalive(dst) {
                        if let Some(part) = self.sessions[dst as usize].as_mut() {
                            part.skip_frame();
                            // Audio resumes as a new talkspurt (RFC 3551 §4.1).
                            part.marker_next = true;
                        }
                    }
                }
                Downstream::Dtmf {
                    dst,
                    event,
                    begin,
                    duration_ms,
                } => {
                    // A forwarded digit lasts as long as it was received, and never less
                    // than Q.24's shortest accepted digit.
                    let min_ms = u32::from(duration_ms).max(MIN_FORWARDED_DIGIT_MS);
                    if let Some(part) = self.sessions[dst as usize].as_mut() {
                        if let (Some(t), Some(d)) =
                            (part.tones.as_mut(), Digit::from_event_code(event))
                        {
                            // No telephone-event toward this peer: play the digit in-band
                            // (-10 dBm0 per tone, until its end is forwarded; 10 s at most).
                            if begin {
                                t.generator.start(d, -10.0, 10_000);
                                part.tone_on = true;
                            } else {
                                t.generator.stop_no_shorter_than(min_ms);
                                part.tone_on = t.generator.is_active();
                            }
                        }
                        if part.dtmf_pt.is_some() {
                            if begin {
                                // Until the end arrives; a digit still being sent is
                                // finished first (counted).
                                if part.dtmf.start(event, 10, None).is_err() {
                                    self.shared.sessions[dst as usize]
                                        .counters
                                        .tx_dtmf_refused
                                        .inc();
                                }
                            } else {
                                // Only this digit: not one of the API's queued beside it.
                                part.dtmf
                                    .stop_event(event, min_ms.saturating_mul(part.ts_per_ms));
                            }
                        }
                    }
                }
                Downstream::Cmd(b) => self.apply(b),
            }
        }
        n
    }

    /// Starts loading what the next frames' packets will touch: their sessions' send state
    /// ([`ENCODE_AHEAD`] frames ahead) and the egress slots they will be written to (the
    /// free ring's next ones, a different slot each time), in two steps: two slots ahead
    /// the slot itself, one ahead (its header loaded by then) its bytes. A hint only.
    #[inline]
    fn prefetch_next(&mut self) {
        let sessions = &self.sessions;
        prefetch::at(&mut self.input, ENCODE_AHEAD - 1, |msg| {
            if let Downstream::Frame { dst, .. } = msg {
                if let Some(part) = sessions.get(*dst as usize) {
                    prefetch::object(part);
                }
            }
        });
        let slab = &self.egress_slab;
        prefetch::ahead(&mut self.egress_free, |i, t| {
            if i == 1 {
                slab.prefetch(t);
            } else {
                slab.with(t, |e| {
                    prefetch::slice(e.bytes.get(..3 * prefetch::LINE).unwrap_or(&e.bytes));
                });
            }
        });
    }

    fn apply(&mut self, mut b: Box<Bundle>) {
        let slot = b.id.slot as usize;
        let counters = &self.shared.counters;
        match b.op {
            Op::Create => {
                b.encode = std::mem::replace(&mut self.sessions[slot], b.encode.take());
                push_event(&mut self.events, counters, LaneEvent::SessionStarted(b.id));
            }
            Op::Update => {
                if let Some(mut new) = b.encode.take() {
                    if let Some(cur) = self.sessions[slot].as_mut() {
                        // RTP send state continues across a codec change (RFC 3550 §5.1:
                        // sequence numbers stay contiguous; same SSRC), unless the send
                        // clock changed (a new stream, as built: RFC 7160 §4.1). An SSRC
                        // the update gave is the one sent from now on.
                        if !b.new_stream {
                            if !b.ssrc_given {
                                new.ssrc = cur.ssrc;
                            }
                            new.sequence = cur.sequence;
                            new.timestamp = cur.timestamp;
                        }
                        new.generation = cur.generation;
                        new.marker_next = true;
                        // The far end's decoder still follows whoever made the last
                        // packet (the source, if it was relayed) while the codec stays.
                        new.relayed = if new.encoder.codec() == cur.encoder.codec() {
                            cur.relayed
                        } else {
                            Relayed::No
                        };
                        // A digit going out finishes (its end packets, or the rest of its
                        // tone) where the new parameters send it the same way: the far
                        // end would otherwise hold the key until its own timeout. Not
                        // across an SSRC change: the new stream's packets of it would
                        // carry no marker, the old stream's end never come.
                        if !cur.dtmf.is_idle()
                            && new.ssrc == cur.ssrc
                            && new.dtmf_pt == cur.dtmf_pt
                            && new.ts_per_ms == cur.ts_per_ms
                            && new.dtmf.interval_ts() == cur.dtmf.interval_ts()
                        {
                            std::mem::swap(&mut new.dtmf, &mut cur.dtmf);
                        }
                        if cur.tone_on
                            && cur.tones.is_some()
                            && new.tones.is_some()
                            && new.frame_samples == cur.frame_samples
                            && new.encoder.codec() == cur.encoder.codec()
                        {
                            std::mem::swap(&mut new.tones, &mut cur.tones);
                            new.tone_on = true;
                        }
                        b.encode = Some(std::mem::replace(cur, new));
                    } else {
                        // Nothing to update (already gone): retire it unused, never
                        // free it here.
                        b.encode = Some(new);
                    }
                }
            }
            Op::Destroy => {
                b.encode = self.sessions[slot].take();
                push_event(&mut self.events, counters, LaneEvent::SessionStopped(b.id));
            }
            Op::Dtmf => {
                if let (Some(part), Some(d)) = (self.sessions[slot].as_mut(), b.dtmf) {
                    let duration_ts = d.duration_ms.saturating_mul(part.ts_per_ms);
                    if part.dtmf_pt.is_none()
                        || part
                            .dtmf
                            .start(d.event, d.volume, Some(duration_ts.max(1)))
                            .is_err()
                    {
                        // Not negotiated, or a digit is still being sent: counted, dropped.
                        self.shared.sessions[slot].counters.tx_dtmf_refused.inc();
                    }
                }
            }
            Op::Tune => {
                let opus = b.tune.and_then(|t| t.opus);
                if let (Some(part), Some(t)) = (self.sessions[slot].as_mut(), opus) {
                    // A non-Opus encoder ignores it (the control plane only sends it to
                    // Opus senders); libopus clamps what it can.
                    let _ = part.encoder.tune_opus(t);
                }
            }
            Op::Route => {
                // Whose silence a forwarded SID described is no longer certain (a call
                // parked or bridged elsewhere): keepalives stop repeating it.
                if let Some(p) = self.sessions[slot].as_mut() {
                    if p.relayed == Relayed::Sid {
                        p.relayed = Relayed::Audio;
                    }
                }
            }
            Op::Barrier | Op::Fault => {}
        }
        counters.commands_applied.inc();
        let seq = b.seq;
        push_cmd(&mut self.retire, counters, b);
        self.shared.acked.store(seq, Ordering::Release);
    }

    /// Copies a received frame of attached session `dst` into an application frame slot
    /// and queues it for the application; counted and dropped when it holds every slot.
    fn deliver_to_app(&mut self, dst: u32, frame: &Token) {
        let Some(part) = self.sessions[dst as usize].as_ref() else {
            return;
        };
        let session = SessionId::from_parts(self.shared.lane, dst, part.generation).to_u64();
        let Ok(mut t) = self.app_out_free.pop() else {
            self.shared.counters.app_out_dropped.inc();
            return;
        };
        let slab = &self.app_out_slab;
        self.frames.with(frame, |f| {
            slab.with_mut(&mut t, |a| {
                let n = f.samples.min(a.pcm.len()).min(f.pcm.len());
                a.pcm[..n].copy_from_slice(&f.pcm[..n]);
                a.samples = n;
                a.session = session;
                a.src_ts = f.src_ts;
                a.played_ns = f.played_ns;
            })
        });
        // Cannot fail: the ring holds every application frame slot.
        if self.app_out.push(t).is_err() {
            self.shared.counters.internal_ring_full.inc_shared();
        }
    }

    /// RFC 4733 §2.5.1.2: while session `dst` sends an event, its packets replace the
    /// audio, one per frame period. Returns whether a frame period was used so.
    fn dtmf_in_place_of_audio(&mut self, dst: u32) -> bool {
        let Some(part) = self.sessions[dst as usize].as_mut() else {
            return false;
        };
        let media_ts = part.timestamp;
        let Some(pt) = part.dtmf_pt.filter(|_| part.dtmf.active_at(media_ts)) else {
            return false;
        };
        let sc = &self.shared.sessions[dst as usize].counters;
        let Some(mut et) = take_egress(&mut self.spare, &mut self.egress_free, &self.shared) else {
            sc.tx_egress_full.inc();
            part.skip_frame();
            return true;
        };
        if Self::send_dtmf_packet(
            part,
            pt,
            &mut et,
            &self.egress_slab,
            self.shared.lane,
            dst,
            sc,
        ) {
            if self.egress.push(et).is_err() {
                self.shared.counters.internal_ring_full.inc_shared();
            }
        } else {
            keep_egress(&mut self.spare, &self.shared, et);
        }
        true
    }

    /// Sends a keepalive for `dst` when one is due in this frame period with nothing to
    /// send ([`MediaSessionParams::keepalive_ms`](crate::MediaSessionParams)): an RFC 3389
    /// SID frame at -127 dBov (or, in a stream relayed undecoded whose last packet was a SID
    /// forwarded from the source, that SID again), a frame of encoded silence, or (a G.722
    /// or Opus stream relayed undecoded) an empty payload. True when one went out.
    #[inline]
    fn keepalive(&mut self, dst: u32) -> bool {
        self.sessions[dst as usize]
            .as_ref()
            .is_some_and(|p| p.keepalive_due())
            && self.send_keepalive(dst)
    }

    /// [`EncodeStage::keepalive`] once one is due (rare: kept out of the paths that ask).
    #[cold]
    #[inline(never)]
    fn send_keepalive(&mut self, dst: u32) -> bool {
        let Some(part) = self.sessions[dst as usize].as_mut() else {
            return false;
        };
        let sc = &self.shared.sessions[dst as usize].counters;
        let Some(mut et) = take_egress(&mut self.spare, &mut self.egress_free, &self.shared) else {
            sc.tx_egress_full.inc();
            return false;
        };
        let silence = &self.silence;
        let lane = self.shared.lane;
        // The forwarded SID repeated: the source's comfort noise goes on at its level.
        let repeat = part.relayed == Relayed::Sid;
        let kept = self.fwd_sids.get(dst as usize);
        let sent = self.egress_slab.with_mut(&mut et, |e| {
            let body = &mut e.bytes[RTP_HEADER_LEN..];
            let (n, pt) = match part.cn_send_pt {
                Some(pt) if repeat => {
                    let sid = kept.filter(|k| !k.is_empty())?;
                    body.get_mut(..sid.len())?.copy_from_slice(sid);
                    (sid.len(), pt)
                }
                Some(pt) => {
                    let sid = CnPayload {
                        level_dbov: 127,
                        reflection: ArrayVec::new(),
                    };
                    (Some(sid.write(body)).filter(|&n| n > 0)?, pt)
                }
                // The far end decodes this stream with the source's encoder state: silence
                // from this session's (idle) encoder would play there as a decaying echo
                // of the last sound (a G.722 relay: the first 5 ms at the tone's level),
                // and the source's next packet would decode off its state. An empty
                // payload keeps the stream alive and touches no decoder.
                None if part.relayed.any()
                    && matches!(part.encoder.codec(), Codec::G722 | Codec::Opus) =>
                {
                    (0, part.payload_type)
                }
                None => {
                    let pcm = silence.get(..part.frame_samples)?;
                    let n = part.encoder.encode(pcm, body).ok().filter(|&n| n > 0)?;
                    (n, part.payload_type)
                }
            };
            // After the silence before it: the start of a talkspurt (RFC 3551 §4.1); a
            // repeated SID is still the silence (the marker waits for the audio).
            let h = if repeat {
                part.next_header_in_silence(pt)
            } else {
                part.next_header_as(pt, true)
            };
            write_header(&h, &mut e.bytes).ok()?;
            e.header = h;
            e.src_ts = 0;
            e.played_ns = 0;
            e.len = RTP_HEADER_LEN + n;
            e.session = SessionId::from_parts(lane, dst, part.generation);
            Some(n)
        });
        let Some(n) = sent else {
            sc.codec_errors.inc();
            keep_egress(&mut self.spare, &self.shared, et);
            return false;
        };
        sc.tx_packets.inc();
        sc.tx_payload_bytes.add(n as u64);
        if part.cn_send_pt.is_some() {
            sc.tx_cn_packets.inc();
            if !repeat {
                // The level the far end now plays: DTX's next silence sends its own SID
                // at once (a level step), not after the refresh interval.
                part.dtx_level = 127;
            }
        }
        // What follows (audio, or more silence) is a new talkspurt again.
        part.marker_next = true;
        self.shared.counters.keepalives_sent.inc();
        if self.egress.push(et).is_err() {
            self.shared.counters.internal_ring_full.inc_shared();
        }
        true
    }

    /// Writes the next RFC 4733 packet of `part`'s event into `et` (the sender is active;
    /// false when it had nothing to send, leaving `et` unused):
    /// event timestamp and marker from the sender, the session's sequence, SSRC and
    /// payload type; the audio timeline advances by one frame as if audio had been sent.
    fn send_dtmf_packet(
        part: &mut EncodePart,
        pt: PayloadType,
        et: &mut Token,
        egress_slab: &Slab<EgressSlot>,
        lane: u16,
        dst: u32,
        sc: &SessionCounters,
    ) -> bool {
        let media_ts = part.timestamp;
        let written = egress_slab.with_mut(et, |e| {
            let body = &mut e.bytes[RTP_HEADER_LEN..];
            let Some(ev) = part.dtmf.poll(media_ts, body) else {
                return false;
            };
            let h = RtpHeader {
                marker: ev.marker,
                payload_type: pt.get(),
                sequence: part.sequence,
                timestamp: ev.timestamp,
                ssrc: part.ssrc,
            };
            if write_header(&h, &mut e.bytes).is_err() {
                return false;
            }
            e.header = h;
            e.src_ts = 0;
            e.played_ns = 0;
            e.len = RTP_HEADER_LEN + ev.payload_len;
            e.session = SessionId::from_parts(lane, dst, part.generation);
            sc.tx_dtmf_packets.inc();
            // RTP packets of the stream like any other (an RTCP sender report counts them).
            sc.tx_packets.inc();
            sc.tx_payload_bytes.add(ev.payload_len as u64);
            true
        });
        part.skip_frame();
        if written {
            part.sequence = part.sequence.wrapping_add(1);
            // A packet went out: the stream is alive (see `keepalive_due`).
            part.idle_frames = 0;
        }
        if !part.dtmf.is_sending() {
            // Audio after the event starts a new talkspurt.
            part.marker_next = true;
        }
        written
    }

    /// Encodes (or relays) `frame` for session `dst` into an egress packet; a forwarded
    /// digit playing in-band replaces the audio, and with `frame` `None` (no audio this
    /// period) only such a tone is sent. While an RFC 4733 event is sent its packets take
    /// the frame's place.
    fn encode(&mut self, dst: u32, frame: Option<&Token>) {
        // `dtmf_pt` first: sessions without telephone-event never touch the boxed sender.
        if self.sessions[dst as usize].as_mut().is_some_and(|p| {
            let media_ts = p.timestamp;
            p.dtmf_pt.is_some() && p.dtmf.active_at(media_ts)
        }) {
            self.dtmf_in_place_of_audio(dst);
            return;
        }
        let Some(part) = self.sessions[dst as usize].as_mut() else {
            return;
        };
        let sc = &self.shared.sessions[dst as usize].counters;
        // DTX: only sessions with it read the frame's voice-activity flag here, and a
        // forwarded digit playing in-band is sent whatever the detector says.
        let (mut sid, mut resumed) = (None, false);
        if let (Some(_), false, Some(t)) = (part.dtx_pt, part.tone_on, frame) {
            match self
                .frames
                .with(t, |f| part.dtx_frame(f.silence, &f.pcm[..f.samples]))
            {
                DtxFrame::Audio { resumed: r } => resumed = r,
                DtxFrame::Sid(pt) => sid = Some(pt),
                DtxFrame::Skip => {
                    sc.frames_dtx.inc();
                    part.skip_frame();
                    return;
                }
            }
        }
        let Some(mut et) = take_egress(&mut self.spare, &mut self.egress_free, &self.shared) else {
            sc.tx_egress_full.inc();
            part.skip_frame();
            // The first audio after a DTX silence keeps its marker for the next packet.
            part.marker_next |= resumed;
            return;
        };
        let lane = self.shared.lane;
        let egress_slab = &self.egress_slab;
        // Set when a frame of PCM is held back from a stream the far end decodes with the
        // source's encoder state (below).
        let mut held = false;
        // Set when the frame's SID from the source is forwarded (`FrameSlot::sid`).
        let mut forwarded = false;
        // Set when Opus DTX left the frame unsent.
        let mut opus_dtx = false;
        let mut write = |f: Option<&FrameSlot>| {
            egress_slab.with_mut(&mut et, |e| {
                let body = &mut e.bytes[RTP_HEADER_LEN..];
                // A forwarded digit plays in place of the audio (relayed or not).
                let tone = match part.tones.as_mut() {
                    Some(t) if part.tone_on && t.generator.is_active() => {
                        part.tone_on = t.generator.fill(&mut t.pcm);
                        Some(&t.pcm[..])
                    }
                    _ => {
                        part.tone_on = false;
                        None
                    }
                };
                let (n, marker) = match (tone, f) {
                    (None, Some(f)) if sid.is_some() => {
                        // RFC 3389 SID: the silence's smoothed level and this frame's
                        // spectral envelope.
                        let mut sid = analyze(&f.pcm[..f.samples], SID_ORDER);
                        sid.level_dbov = part.dtx_level;
                        let n = sid.write(body);
                        (Some(n).filter(|&n| n > 0)?, false)
                    }
                    (Some(pcm), f) => {
                        part.relayed = Relayed::No;
                        (
                            part.encoder.encode(pcm, body).ok()?,
                            f.is_some_and(|f| f.marker),
                        )
                    }
                    // A relayed payload of another codec, or PCM of another frame size: the
                    // frame was made for this session's parameters before a re-INVITE
                    // changed them (its update reached the lane ahead of the route that
                    // follows it). Not sent; the next frame starts a talkspurt.
                    (None, Some(f))
                        if (f.relay && f.relay_codec != part.encoder.codec())
                            || (!f.relay && f.samples != 0 && f.samples != part.frame_samples) =>
                    {
                        held = true;
                        return None;
                    }
                    (None, Some(f)) if f.relay => {
                        let dst = body.get_mut(..f.payload_len)?;
                        dst.copy_from_slice(&f.payload[..f.payload_len]);
                        part.relayed = Relayed::Audio;
                        (f.payload_len, f.marker)
                    }
                    // The source's SID where its comfort noise begins, forwarded as is
                    // (the far end's comfort noise then follows the source's) when this
                    // session negotiated comfort noise and the far end's decoder follows
                    // the source's encoder, or nothing was sent yet (a bridge made in a
                    // silence): the comfort noise after it is then held back too, not
                    // encoded. Not where this session's encoder makes the stream (a source
                    // whose packets do not match the frame: the frames around a silence
                    // carry decoded speech that must go out). Without comfort noise
                    // negotiated, held like the rest below. (Kept for keepalives below,
                    // out of this closure.)
                    (None, Some(f))
                        if f.sid == FrameSid::Sid
                            && part.cn_send_pt.is_some()
                            && part.relayed != Relayed::No =>
                    {
                        let n = f.payload_len;
                        body.get_mut(..n)?.copy_from_slice(f.payload.get(..n)?);
                        part.relayed = Relayed::Sid;
                        // Audio after DTX's silence (a route change) is still marked.
                        part.marker_next |= resumed;
                        sid = part.cn_send_pt;
                        forwarded = true;
                        (n, false)
                    }
                    // PCM in a G.722 or Opus stream relayed undecoded, of the kinds `play`
                    // marks (a talkspurt's first frame: the jitter buffer's restart after a
                    // gap; comfort noise or concealment, no packet in it), while the far
                    // end's decoder follows the source's encoder: this encoder's frame
                    // would decode there as a burst (+12 dB over the source's level at a
                    // restart and where comfort noise began, measured), and leave that
                    // decoder off the source's state when the relayed packets resume.
                    // Nothing is sent; the far end conceals or plays its own comfort noise,
                    // as through any gap of a relayed stream. Decoded audio that goes on as
                    // PCM (a source whose packets stopped matching the frame) is encoded,
                    // this encoder then making the stream. (`play` marks only streams it
                    // relays undecoded, to a destination sending their codec.)
                    (None, Some(f)) if part.relayed.any() && f.undecoded_stream => {
                        held = true;
                        return None;
                    }
                    // Comfort noise through the source's signalled silence in a G.711
                    // relay whose SID this session forwarded: the far end plays it.
                    (None, Some(f))
                        if part.relayed == Relayed::Sid && f.sid == FrameSid::Silence =>
                    {
                        held = true;
                        return None;
                    }
                    // Only a SID in a frame period without audio, for a destination that
                    // does not forward it: nothing this period.
                    (None, Some(f)) if f.samples == 0 => {
                        held = true;
                        return None;
                    }
                    (None, Some(f)) => {
                        part.relayed = Relayed::No;
                        let n = part.encoder.encode(&f.pcm[..f.samples], body).ok()?;
                        if part.encoder.is_untransmitted_dtx(n) {
                            // Opus DTX: not sent; the audio after it starts a talkspurt.
                            opus_dtx = true;
                            held = true;
                            return None;
                        }
                        (n, f.marker)
                    }
                    (None, None) => return None,
                };
                let (src_ts, played_ns) = f.map_or((0, 0), |f| (f.src_ts, f.played_ns));
                let h = match sid {
                    // A forwarded SID leaves a talkspurt's marker to the audio after it.
                    Some(pt) if forwarded => part.next_header_in_silence(pt),
                    Some(pt) => part.next_header_as(pt, false),
                    None => part.next_header(marker || resumed),
                };
                // Cannot fail: slots are at least header-sized by construction.
                write_header(&h, &mut e.bytes).ok()?;
                e.header = h;
                e.src_ts = src_ts;
                e.played_ns = played_ns;
                e.len = RTP_HEADER_LEN + n;
                e.session = SessionId::from_parts(lane, dst, part.generation);
                Some(n)
            })
        };
        let ok = match frame {
            Some(t) => self.frames.with(t, |f| write(Some(f))),
            None => write(None),
        };
        match ok {
            Some(n) => {
                sc.tx_packets.inc();
                sc.tx_payload_bytes.add(n as u64);
                if sid.is_some() {
                    sc.tx_cn_packets.inc();
                }
                if forwarded {
                    if let (Some(t), Some(kept)) = (frame, self.fwd_sids.get_mut(dst as usize)) {
                        self.frames.with(t, |f| {
                            kept.clear();
                            let _ = kept.try_extend_from_slice(
                                f.payload.get(..f.payload_len).unwrap_or_default(),
                            );
                        });
                    }
                }
                if self.egress.push(et).is_err() {
                    self.shared.counters.internal_ring_full.inc_shared();
                }
            }
            None => {
                keep_egress(&mut self.spare, &self.shared, et);
                if held {
                    if opus_dtx {
                        sc.frames_dtx.inc();
                    }
                    // Audio resumes as a new talkspurt.
                    part.marker_next = true;
                    // Nothing sent this period, as when no frame came: a keepalive may be
                    // due (a source in comfort noise that this session does not forward).
                    if !self.keepalive(dst) {
                        if let Some(part) = self.sessions[dst as usize].as_mut() {
                            part.skip_frame();
                        }
                    }
                } else {
                    sc.codec_errors.inc();
                    part.skip_frame();
                    part.marker_next |= resumed;
                }
            }
        }
    }
}

/// Reflection coefficients a DTX SID frame carries (RFC 3389 §3.2: the noise's spectral
/// envelope; 4 is enough for background noise and within every decoder's order).
const SID_ORDER: usize = 4;

/// The four stages of a lane.
pub struct Lane {
    /// Jitter stage.
    pub jitter: JitterStage,
    /// Decode stage.
    pub decode: DecodeStage,
    /// DSP stage.
    pub dsp: DspStage,
    /// Encode stage.
    pub encode: EncodeStage,
}

impl Lane {
    /// Runs one tick with every stage on the calling thread, in chunks of
    /// [`FUSED_CHUNK`] sessions. Called on the real-time thread.
    pub fn tick_fused(&mut self, tick: u64, now_ns: u64) {
        self.jitter.begin_tick(tick, now_ns);
        loop {
            let more = self.jitter.playout(FUSED_CHUNK);
            self.decode.run();
            self.dsp.run();
            self.encode.run();
            if !more {
                break;
            }
        }
    }

    /// Runs the later stages until every ring is empty (commands applied and acknowledged).
    pub fn drain(&mut self) {
        self.jitter.drain_commands_only();
        while self.decode.run() + self.dsp.run() + self.encode.run() > 0 {}
    }

    /// The lane's shared state.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.jitter.shared
    }
}

/// The control plane's end of a lane.
pub struct LaneControl {
    /// Commands to the jitter stage.
    pub commands: Producer<Box<Bundle>>,
    /// Bundles coming back.
    pub retire: Consumer<Box<Bundle>>,
    /// Events from the ticking stage and from the encode stage.
    pub events: [Consumer<LaneEvent>; 3],
    /// Shared state.
    pub shared: Arc<Shared>,
}

/// The transport's receive end: free packet slots come back on two rings.
pub struct IngressParts {
    /// Packets to the jitter stage.
    pub ingress: Producer<Arrival>,
    /// Slots released by the jitter stage (late, duplicate, malformed, flushed).
    pub free_from_jitter: Consumer<Token>,
    /// Slots returned by the decode stage after playout.
    pub free_from_decode: Consumer<Token>,
    /// Packet storage.
    pub slab: Arc<Slab<PacketSlot>>,
    /// Shared state.
    pub shared: Arc<Shared>,
}

/// The transport's send end.
pub struct EgressParts {
    /// Packets from the encode stage.
    pub egress: Consumer<Token>,
    /// Slots back to the encode stage.
    pub free: Producer<Token>,
    /// Packet storage.
    pub slab: Arc<Slab<EgressSlot>>,
    /// The lane's shared state (the encode stage's kept slot, `egress_spare`).
    pub shared: Arc<Shared>,
}

/// An application's ends of a lane's audio rings (`integration::AudioHandle`).
pub struct AudioParts {
    /// Received frames of attached sessions, from the encode stage.
    pub to_app: Consumer<Token>,
    /// Their slots, back to the encode stage.
    pub to_app_free: Producer<Token>,
    /// Storage of frames to the application.
    pub to_app_slab: Arc<Slab<AppFrameSlot>>,
    /// Frames to send, to the decode stage.
    pub from_app: Producer<Token>,
    /// Their slots, back from the decode stage.
    pub from_app_free: Consumer<Token>,
    /// Storage of frames from the application.
    pub from_app_slab: Arc<Slab<AppFrameSlot>>,
    /// Shared state.
    pub shared: Arc<Shared>,
}

/// A ring holding exactly `tokens`, all of a slab's slots, queued on it: where a slab's
/// free slots start.
fn free_ring(tokens: Vec<Token>) -> (Producer<Token>, Consumer<Token>) {
    let (mut tx, rx) = RingBuffer::new(tokens.len());
    for t in tokens {
        // Cannot fail: the ring holds exactly the slab's slots.
        let _ = tx.push(t);
    }
    (tx, rx)
}

fn none_table<T>(n: usize) -> Box<[Option<T>]> {
    (0..n).map(|_| None).collect()
}

/// Builds a lane and the ends of its rings. Control plane: allocates everything the lane
/// will ever use.
pub fn build(cfg: &LaneConfig) -> (Lane, LaneControl, IngressParts, EgressParts, AudioParts) {
    let shared = Arc::new(Shared::new(cfg.lane, cfg.sessions));
    let max_packet = cfg.max_packet_bytes();
    let (mut packets, pkt_tokens) = Slab::new(cfg.packet_slots, |_| PacketSlot::new(max_packet));
    packets.set_hint(max_packet);
    let packets = Arc::new(packets);
    let (frames, frame_tokens) = Slab::new(cfg.frame_slots, |_| {
        FrameSlot::new(cfg.max_frame_samples, cfg.max_payload_bytes)
    });
    let frames = Arc::new(frames);
    let egress_bytes = RTP_HEADER_LEN + cfg.max_payload_bytes;
    let (egress_slab, egress_tokens) =
        Slab::new(cfg.egress_slots, |_| EgressSlot::new(egress_bytes));
    let egress_slab = Arc::new(egress_slab);

    let cmd = cfg.command_capacity;
    let (cmd_tx, cmd_rx) = RingBuffer::new(cmd);
    let (retire_tx, retire_rx) = RingBuffer::new(cmd);
    let (ev_j_tx, ev_j_rx) = RingBuffer::new(cfg.event_capacity);
    let (ev_e_tx, ev_e_rx) = RingBuffer::new(cfg.event_capacity);
    let (ev_d_tx, ev_d_rx) = RingBuffer::new(cfg.event_capacity);
    let (ing_tx, ing_rx) = RingBuffer::new(cfg.packet_slots);
    // All packet slots start free, on the jitter release ring.
    let (rel_j_tx, free_from_jitter) = free_ring(pkt_tokens);
    let (rel_d_tx, rel_d_rx) = RingBuffer::new(cfg.packet_slots);
    // Packets and commands: bounded by the packet tokens and the command capacity, so a
    // push never fails. Digits and SIDs (no token) use only the headroom beyond them.
    let jd_reserve = cfg.packet_slots + cmd;
    let (jd_tx, jd_rx) = RingBuffer::new(jd_reserve + cfg.sessions + 64);
    // Play ranges: one per chunk of sessions per tick; room for several ticks of backlog.
    let (play_tx, play_rx) = RingBuffer::new(8 * (cfg.sessions / FUSED_CHUNK + 2) + 64);
    // Frames (bounded by frame tokens), commands, and up to four ticks of "nothing this
    // period" notices for every session.
    let down_reserve = cfg.frame_slots + cmd;
    let (dp_tx, dp_rx) = RingBuffer::new(down_reserve + 4 * cfg.sessions + 64);
    let (pe_tx, pe_rx) = RingBuffer::new(down_reserve + 4 * cfg.sessions + 64);
    let (fr_tx, fr_rx) = free_ring(frame_tokens);
    let (eg_free_tx, eg_free_rx) = free_ring(egress_tokens);
    let (eg_tx, eg_rx) = RingBuffer::new(cfg.egress_slots);
    // Application frames, each way: slots start free on the ring toward their producer.
    let app_slots = cfg.app_frame_slots;
    let (to_app_slab, to_app_tokens) =
        Slab::new(app_slots, |_| AppFrameSlot::new(cfg.max_frame_samples));
    let (from_app_slab, from_app_tokens) =
        Slab::new(app_slots, |_| AppFrameSlot::new(cfg.max_frame_samples));
    let (to_app_slab, from_app_slab) = (Arc::new(to_app_slab), Arc::new(from_app_slab));
    let (to_app_tx, to_app_rx) = RingBuffer::new(app_slots);
    let (to_app_free_tx, to_app_free_rx) = free_ring(to_app_tokens);
    let (from_app_tx, from_app_rx) = RingBuffer::new(app_slots);
    let (from_app_free_tx, from_app_free_rx) = free_ring(from_app_tokens);

    // Packet slots kept free for the packets arriving between two drains (an eighth: with
    // the default 8 per session + 256, two ticks' worth of every session's packets at
    // 20 ms), and each session's share of the rest.
    let slot_reserve = (cfg.packet_slots / 8).max(4);
    let slot_share = (cfg.packet_slots.saturating_sub(slot_reserve) / cfg.sessions.max(1))
        .clamp(2, crate::session::receive::JITTER_PACKETS);
    let lane = Lane {
        jitter: JitterStage {
            tick: 0,
            tick_ns: 0,
            cursor: 0,
            tick_mod: [0; 7],
            sched: vec![0; cfg.sessions].into_boxed_slice(),
            sessions: (0..cfg.sessions).map(|_| None).collect(),
            commands: cmd_rx,
            ingress: ing_rx,
            packets: packets.clone(),
            released: rel_j_tx,
            out: jd_tx,
            reserve: jd_reserve,
            plays: play_tx,
            events: ev_j_tx,
            dtmf_pending: false,
            shared: shared.clone(),
        },
        decode: DecodeStage {
            sessions: none_table(cfg.sessions),
            sids: (0..cfg.sessions)
                .map(|_| (CnPayload::default(), 0))
                .collect(),
            sched: vec![0; cfg.sessions].into_boxed_slice(),
            input: jd_rx,
            plays: play_rx,
            packets: packets.clone(),
            pkt_return: rel_d_tx,
            frames: frames.clone(),
            frame_free: fr_rx,
            spare_frame: None,
            play_ns: 0,
            play_tick: u64::MAX,
            tick_mod: [0; 7],
            ahead: [0; HEADERS_AHEAD],
            ahead_len: 0,
            ahead_next: 0,
            header_spans: [(0, 0); 3],
            insert_spans: [(0, 0); 3],
            // What a session's decode buffer holds at most (`ReceiveChannel::new`): a fill
            // target (a frame of up to 60 ms, or 30 ms), one 120 ms packet and 15 ms.
            stretch: StretchPool::new(195),
            out: dp_tx,
            reserve: down_reserve,
            slot_share,
            slot_reserve: slot_reserve as u64,
            slots_low: false,
            app_queues: (0..cfg.sessions).map(|_| AppQueue::default()).collect(),
            app_in: from_app_rx,
            app_in_return: from_app_free_tx,
            app_in_slab: from_app_slab.clone(),
            open_digits: vec![None; cfg.sessions].into_boxed_slice(),
            shared: shared.clone(),
        },
        dsp: DspStage {
            sessions: none_table(cfg.sessions),
            // Resampled frames: up to 6x a frame (8 -> 48 kHz), never more than a slot.
            scratch: vec![0; cfg.max_frame_samples * 6].into_boxed_slice(),
            work: DspScratch::new(),
            input: dp_rx,
            frames: frames.clone(),
            out: pe_tx,
            events: ev_d_tx,
            shared: shared.clone(),
            reference_chains: 0,
            open_digits: vec![None; cfg.sessions].into_boxed_slice(),
        },
        encode: EncodeStage {
            sessions: none_table(cfg.sessions),
            fwd_sids: (0..cfg.sessions).map(|_| ArrayVec::new()).collect(),
            input: pe_rx,
            frames,
            frame_return: fr_tx,
            egress_free: eg_free_rx,
            egress: eg_tx,
            egress_slab: egress_slab.clone(),
            spare: None,
            app_out: to_app_tx,
            app_out_free: to_app_free_rx,
            app_out_slab: to_app_slab.clone(),
            retire: retire_tx,
            events: ev_e_tx,
            shared: shared.clone(),
            silence: vec![0; cfg.max_frame_samples].into_boxed_slice(),
        },
    };
    shared.counters.frame_slots_free.set(cfg.frame_slots as u64);
    let control = LaneControl {
        commands: cmd_tx,
        retire: retire_rx,
        events: [ev_j_rx, ev_e_rx, ev_d_rx],
        shared: shared.clone(),
    };
    let audio = AudioParts {
        to_app: to_app_rx,
        to_app_free: to_app_free_tx,
        to_app_slab,
        from_app: from_app_tx,
        from_app_free: from_app_free_rx,
        from_app_slab,
        shared: shared.clone(),
    };
    let egress = EgressParts {
        egress: eg_rx,
        free: eg_free_tx,
        slab: egress_slab,
        shared: shared.clone(),
    };
    let ingress = IngressParts {
        ingress: ing_tx,
        free_from_jitter,
        free_from_decode: rel_d_rx,
        slab: packets,
        shared,
    };
    (lane, control, ingress, egress, audio)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::JitterConfig;
    use crate::codec::CodecSpec;
    use crate::session::{MediaSessionParams, SessionParts};
    use crate::types::Ptime;

    #[test]
    fn an_application_queue_keeps_order_refuses_when_full_and_wraps() {
        let (_slab, tokens) = Slab::new(4 * APP_QUEUE_FRAMES, |_| 0u8);
        let mut tokens = tokens.into_iter();
        let mut q = AppQueue::default();
        let mut expect = std::collections::VecDeque::new();
        for round in 0..3 {
            // Fill (the last refused and handed back), then take half: the ring wraps.
            for _ in 0..APP_QUEUE_FRAMES {
                let t = tokens.next().unwrap();
                let i = t.index();
                if q.push(t).is_ok() {
                    expect.push_back(i);
                }
            }
            let extra = tokens.next().unwrap();
            let i = extra.index();
            assert_eq!(
                q.push(extra).map_err(|t| t.index()),
                Err(i),
                "round {round}"
            );
            for _ in 0..APP_QUEUE_FRAMES / 2 {
                assert_eq!(q.pop().map(|t| t.index()), expect.pop_front());
            }
        }
        while let Some(t) = q.pop() {
            assert_eq!(Some(t.index()), expect.pop_front());
        }
        assert!(expect.is_empty() && q.len == 0 && q.pop().is_none());
    }

    #[test]
    fn header_spans_lie_in_the_entry_and_cover_what_a_frame_reads_first() {
        let params = MediaSessionParams::new(CodecSpec::PCMU, Ptime::from_ms(20).unwrap());
        let parts = SessionParts::<Token>::build(&params, 1, 0, JitterConfig::default(), 1, 0, 0);
        let sessions = vec![None, Some(parts.decode)];
        assert_eq!(header_spans(&sessions, 0), None, "an empty slot has none");
        let (spans, insert) = header_spans(&sessions, 1).unwrap();
        let size = std::mem::size_of::<Option<DecodePart<Token>>>();
        assert_eq!(
            spans[0].0, 0,
            "the head starts at the entry (its Present marker)"
        );
        for (offset, len) in spans.into_iter().chain(insert) {
            assert!(
                len > 0 && (offset + len) as usize <= size,
                "{offset} + {len} > {size}"
            );
        }
        // The offsets are the fields' own: the same span measured on the part itself.
        let base = &sessions[1] as *const _ as usize;
        let part = sessions[1].as_ref().unwrap();
        let [jb, plc] = part.receive.header_ranges();
        assert_eq!(spans[1], ((jb.0 - base) as u32, jb.1 as u32));
        assert_eq!(spans[2], ((plc.0 - base) as u32, plc.1 as u32));
        assert_eq!(
            spans[0].1 as usize,
            &part.receive as *const _ as usize - base
        );
        let delay = part.receive.buffer.delay_range();
        let delay = ((delay.0 - base) as u32, delay.1 as u32);
        assert_eq!(insert, [spans[0], spans[1], delay]);
    }
}
