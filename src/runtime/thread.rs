//! Lane threads: pinning, priority, and the tick loop around the pure stages.

use std::thread::JoinHandle;

use super::clock::{monotonic_ns, sleep_until_ns};
use super::lane::{DecodeStage, DspStage, EncodeStage, JitterStage, Lane, Shared};
use super::msg::LaneEvent;
use super::sync::Ordering;
use super::Topology;
use crate::types::Ptime;

/// Which stage(s) a lane thread runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageKind {
    /// All four stages (fused topology).
    Fused,
    /// Jitter stage (split topology; this thread keeps the tick).
    Jitter,
    /// Decode stage (split topology).
    Decode,
    /// DSP stage (split topology).
    Dsp,
    /// Encode stage (split topology).
    Encode,
}

/// Passed to [`ThreadStartHook`] on each lane thread before its loop starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaneThread {
    /// Lane index.
    pub lane: u16,
    /// Stage(s) run by this thread.
    pub stage: StageKind,
}

/// A function every lane thread calls once, on itself, after pinning and before its first
/// tick (e.g. to mark the thread for allocation accounting or to name it in a profiler).
pub type ThreadStartHook = fn(LaneThread);

/// Where and how to run one lane's threads.
#[derive(Debug, Clone)]
pub struct ThreadPlan {
    /// Lane index.
    pub lane: u16,
    /// Core for each thread, in stage order (one entry for fused); `None` leaves it floating.
    pub cores: Vec<Option<usize>>,
    /// Try to raise the thread priority.
    pub raise_priority: bool,
    /// Hook run on each thread at start.
    pub on_start: Option<ThreadStartHook>,
}

/// Handles of a running lane; joining gives the stages back so they are dropped (and
/// their memory freed) on the control thread, never on a lane thread.
pub enum Running {
    /// One thread.
    Fused(JoinHandle<Lane>),
    /// Four threads.
    Split {
        /// Jitter thread.
        jitter: JoinHandle<JitterStage>,
        /// Decode thread.
        decode: JoinHandle<DecodeStage>,
        /// DSP thread.
        dsp: JoinHandle<DspStage>,
        /// Encode thread.
        encode: JoinHandle<EncodeStage>,
    },
}

/// Result of setting up a lane thread.
struct Setup {
    pin_failed: Option<usize>,
    priority_failed: bool,
}

fn setup(plan: &ThreadPlan, index: usize, stage: StageKind) -> Setup {
    let mut out = Setup {
        pin_failed: None,
        priority_failed: false,
    };
    if let Some(core) = plan.cores.get(index).copied().flatten() {
        if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
            log::warn!(
                "lane {} {:?}: could not pin to core {core}; running unpinned",
                plan.lane,
                stage
            );
            out.pin_failed = Some(core);
        }
    }
    if plan.raise_priority {
        if let Err(e) =
            thread_priority::set_current_thread_priority(thread_priority::ThreadPriority::Max)
        {
            log::warn!(
                "lane {} {:?}: could not raise thread priority ({e:?}); running at normal priority",
                plan.lane,
                stage
            );
            out.priority_failed = true;
        }
    }
    // The RNN noise suppressor's FFTs keep per-thread caches filled on first use: fill
    // them now, before the first tick, so no session's first frame allocates here.
    crate::processing::audio::rnn_ns::RnnNoiseSuppressor::prepare_thread();
    if let Some(hook) = plan.on_start {
        hook(LaneThread {
            lane: plan.lane,
            stage,
        });
    }
    out
}

fn report(jitter: &mut JitterStage, lane: u16, s: &Setup) {
    if let Some(core) = s.pin_failed {
        jitter.push_event(LaneEvent::PinFailed { lane, core });
    }
    if s.priority_failed {
        jitter.push_event(LaneEvent::PriorityFailed { lane });
    }
}

/// Ticks `f` every [`Ptime::TICK_MS`] against absolute deadlines until `shared.stop`.
/// Counts overruns and passes the previous tick's overrun (tick, ns late) to `f` so it can
/// report it; if the lane falls more than `MAX_BEHIND` ticks behind it re-anchors
/// (counting the skipped ticks) instead of bursting to catch up.
fn tick_loop(shared: &Shared, mut f: impl FnMut(u64, u64, Option<(u64, u64)>)) {
    let mut pending = None;
    const MAX_BEHIND: u64 = 10;
    let period = u64::from(Ptime::TICK_MS) * 1_000_000;
    let mut anchor = monotonic_ns() + period;
    // The lane's time goes on across a stop and start (its timers, such as an RFC 4733
    // digit's lost-end timeout, count in it): from the ticks run and skipped so far.
    let c = &shared.counters;
    let mut tick: u64 = c.ticks.get() + c.ticks_skipped.get();
    let mut n: u64 = 0;
    while !shared.stop.load(Ordering::Acquire) {
        let deadline = anchor + n * period;
        sleep_until_ns(deadline);
        let t0 = monotonic_ns();
        f(tick, t0, pending.take());
        let t1 = monotonic_ns();
        shared.record_tick(t1 - t0);
        let c = &shared.counters;
        let next = deadline + period;
        if t1 > next {
            c.deadline_overruns.inc();
            pending = Some((tick, t1 - next));
            let behind = (t1 - next) / period;
            if behind > MAX_BEHIND {
                c.ticks_skipped.add(behind);
                anchor = t1 + period;
                n = 0;
                tick += 1 + behind;
                continue;
            }
        }
        tick += 1;
        n += 1;
    }
}

/// Polls a downstream stage until its upstream stage is done and its input is drained.
fn poll_loop(shared: &Shared, upstream: usize, mine: usize, run: impl FnMut() -> usize) {
    super::shutdown::run_until_upstream_done(
        &shared.stage_done[upstream],
        &shared.stage_done[mine],
        run,
        |empty| {
            if empty < 2_000 {
                std::hint::spin_loop();
            } else {
                // Bounded back-off: a short timed sleep, never an unbounded block.
                sleep_until_ns(monotonic_ns() + 50_000);
            }
        },
    );
}

/// Lane-failure policy: a lane thread that panics (a bug, e.g. in a codec) takes only its
/// own lane down, loudly. Unwinding drops this guard, which marks the lane failed, stops
/// its other stages (split topology: their upstream is marked done so none waits
/// forever) and leaves the rest to the control plane, which reports
/// `LaneEvent::LaneFailed`, forgets the lane's sessions and places no new ones there.
/// Catching the panic per session instead would keep running a lane whose slabs and
/// rings may hold tokens the unwound code never returned.
struct FailGuard {
    shared: std::sync::Arc<super::lane::Shared>,
    stage: usize,
}

impl Drop for FailGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            super::shutdown::mark_failed(
                &self.shared.stop,
                &self.shared.stage_done[self.stage],
                &self.shared.failed,
            );
        }
    }
}

fn spawn<T: Send + 'static>(
    name: String,
    shared: &std::sync::Arc<super::lane::Shared>,
    stage: usize,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<JoinHandle<T>, crate::Error> {
    #[cfg(test)]
    if spawn_fault::take() {
        return Err(crate::Error::Spawn("thread spawn failed (injected)"));
    }
    let guard = FailGuard {
        shared: shared.clone(),
        stage,
    };
    std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            let _guard = guard;
            f()
        })
        .map_err(|_| crate::Error::Spawn("thread spawn failed"))
}

/// Marks a lane whose threads could not all be started as failed: its stop flag and
/// every stage's done flag are set, so the stages already started drain and exit instead
/// of waiting for an upstream that never ran, and the control plane reports the lane's
/// failure (its state went with the threads, or was dropped here).
fn abandon(shared: &super::lane::Shared) {
    shared.stop.store(true, Ordering::Release);
    for d in &shared.stage_done {
        d.store(true, Ordering::Release);
    }
    shared.failed.store(true, Ordering::Release);
}

/// Starts a lane's threads. Control plane. On [`crate::Error::Spawn`] the lane is marked
/// failed (see `abandon`).
pub fn start(lane: Lane, topology: Topology, plan: ThreadPlan) -> Result<Running, crate::Error> {
    let shared = lane.shared().clone();
    let r = start_threads(lane, topology, plan);
    if r.is_err() {
        abandon(&shared);
    }
    r
}

fn start_threads(
    lane: Lane,
    topology: Topology,
    plan: ThreadPlan,
) -> Result<Running, crate::Error> {
    let id = plan.lane;
    match topology {
        Topology::Fused => {
            let fused_shared = lane.shared().clone();
            let h = spawn(format!("mc-lane{id}"), &fused_shared, 0, move || {
                let mut lane = lane;
                let s = setup(&plan, 0, StageKind::Fused);
                report(&mut lane.jitter, id, &s);
                let shared = lane.shared().clone();
                tick_loop(&shared, |t, now_ns, overrun| {
                    if let Some((tick, late_ns)) = overrun {
                        lane.jitter.push_event(LaneEvent::DeadlineOverrun {
                            lane: id,
                            tick,
                            late_ns,
                        });
                    }
                    lane.tick_fused(t, now_ns)
                });
                lane.drain();
                lane
            })?;
            Ok(Running::Fused(h))
        }
        Topology::Split => {
            let Lane {
                jitter,
                decode,
                dsp,
                encode,
            } = lane;
            let shared = jitter.shared().clone();
            let (p1, p2, p3) = (plan.clone(), plan.clone(), plan.clone());
            let (s1, s2, s3) = (shared.clone(), shared.clone(), shared.clone());
            let encode = spawn(format!("mc-lane{id}-enc"), &shared, 3, move || {
                let mut st = encode;
                setup(&p3, 3, StageKind::Encode);
                poll_loop(&s3, 2, 3, || st.run());
                st
            })?;
            let dsp = spawn(format!("mc-lane{id}-dsp"), &shared, 2, move || {
                let mut st = dsp;
                setup(&p2, 2, StageKind::Dsp);
                poll_loop(&s2, 1, 2, || st.run());
                st
            })?;
            let decode = spawn(format!("mc-lane{id}-dec"), &shared, 1, move || {
                let mut st = decode;
                setup(&p1, 1, StageKind::Decode);
                poll_loop(&s1, 0, 1, || st.run());
                st
            })?;
            let jitter = spawn(format!("mc-lane{id}-jit"), &shared.clone(), 0, move || {
                let mut st = jitter;
                let s = setup(&plan, 0, StageKind::Jitter);
                report(&mut st, id, &s);
                tick_loop(&shared, |t, now_ns, overrun| {
                    if let Some((tick, late_ns)) = overrun {
                        st.push_event(LaneEvent::DeadlineOverrun {
                            lane: id,
                            tick,
                            late_ns,
                        });
                    }
                    st.begin_tick(t, now_ns);
                    st.playout(usize::MAX);
                });
                st.drain_commands_only();
                shared.stage_done[0].store(true, Ordering::Release);
                st
            })?;
            Ok(Running::Split {
                jitter,
                decode,
                dsp,
                encode,
            })
        }
    }
}

impl Running {
    /// Joins the threads (after `stop` was set) and returns the lane's stages.
    /// A lane thread that panicked is reported as `None` (its stages are lost).
    pub fn join(self) -> Option<Lane> {
        match self {
            Running::Fused(h) => h.join().ok(),
            Running::Split {
                jitter,
                decode,
                dsp,
                encode,
            } => {
                let j = jitter.join().ok();
                let d = decode.join().ok();
                let p = dsp.join().ok();
                let e = encode.join().ok();
                Some(Lane {
                    jitter: j?,
                    decode: d?,
                    dsp: p?,
                    encode: e?,
                })
            }
        }
    }
}

/// Test-only fault injection: the calling (control) thread's `n`th lane-thread spawn from
/// now fails, as an exhausted thread limit would.
#[cfg(test)]
pub(crate) mod spawn_fault {
    use std::cell::Cell;

    thread_local!(static COUNTDOWN: Cell<Option<u32>> = const { Cell::new(None) });

    /// The `n`th spawn (1-based) on this thread fails; the others succeed.
    pub(crate) fn fail_nth(n: u32) {
        COUNTDOWN.with(|c| c.set(n.checked_sub(1)));
    }

    pub(super) fn take() -> bool {
        COUNTDOWN.with(|c| match c.get() {
            Some(0) => {
                c.set(None);
                true
            }
            Some(k) => {
                c.set(Some(k - 1));
                false
            }
            None => false,
        })
    }
}
