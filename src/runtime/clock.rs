//! Time sources for lanes: the monotonic clock with absolute-deadline sleeps for real
//! time, and a virtual tick counter for tests, simulations and throughput runs.

use std::time::Duration;

/// Nanoseconds on the monotonic clock (`CLOCK_MONOTONIC`). Real-time safe (vDSO, no syscall
/// on Linux x86-64).
#[inline]
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC is always supported.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Sleeps until the monotonic clock reaches `deadline_ns` (an absolute deadline, so
/// sleeping never accumulates drift). This timed sleep is the only system call a lane
/// thread makes in steady state.
#[inline]
pub fn sleep_until_ns(deadline_ns: u64) {
    let ts = libc::timespec {
        tv_sec: (deadline_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (deadline_ns % 1_000_000_000) as libc::c_long,
    };
    loop {
        // SAFETY: valid timespec; a null remainder is allowed with TIMER_ABSTIME.
        let rc = unsafe {
            libc::clock_nanosleep(
                libc::CLOCK_MONOTONIC,
                libc::TIMER_ABSTIME,
                &ts,
                std::ptr::null_mut(),
            )
        };
        if rc != libc::EINTR {
            break;
        }
    }
}

/// How the engine's lanes are clocked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClockMode {
    /// Lane threads tick on the monotonic clock every [`Ptime::TICK_MS`](crate::types::Ptime::TICK_MS).
    #[default]
    Realtime,
    /// No threads: the caller advances time with
    /// [`MediaEngine::step`](crate::engine::MediaEngine::step), as fast as it likes,
    /// deterministically, on its own thread.
    Virtual,
}

/// The lane tick period.
pub const TICK: Duration = Duration::from_millis(crate::types::Ptime::TICK_MS as u64);
