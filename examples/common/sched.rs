//! Scheduling policy for the examples' real-time runs (shared by `sessions_per_core`,
//! `sip_gateway` and `soak`).

/// Switches the calling thread to SCHED_FIFO at the lowest real-time priority (`on`) or back
/// to SCHED_OTHER. Threads it spawns meanwhile inherit the policy, and the engine's
/// `raise_priority` (`ThreadPriority::Max`) then lifts lane threads to that policy's top
/// priority, so other processes on the core cannot delay a lane tick (under SCHED_OTHER,
/// Max is only nice -20). Needs CAP_SYS_NICE.
pub fn set_fifo(on: bool) -> Result<(), String> {
    let param = libc::sched_param {
        sched_priority: i32::from(on),
    };
    let policy = if on {
        libc::SCHED_FIFO
    } else {
        libc::SCHED_OTHER
    };
    // SAFETY: `param` is a valid sched_param; pthread_self() is the calling thread.
    let rc = unsafe { libc::pthread_setschedparam(libc::pthread_self(), policy, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!(
            "could not switch to {} (error {rc}; SCHED_FIFO needs CAP_SYS_NICE)",
            if on { "SCHED_FIFO" } else { "SCHED_OTHER" }
        ))
    }
}
