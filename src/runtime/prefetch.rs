//! Software prefetch: asks the core to start loading a session's state into cache while
//! the previous packet or session is being processed, so a lane walking thousands of
//! sessions in arrival order overlaps their memory latency instead of waiting on each line
//! in turn. A hint only: it never faults, changes no state and is a no-op off x86-64.

/// Cache line size assumed for prefetch strides.
pub const LINE: usize = 64;

/// Prefetches the cache line holding `p` into all cache levels.
#[inline(always)]
pub fn line<T: ?Sized>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE is part of the x86-64 baseline, so the instruction exists; a prefetch
    // never dereferences in the language's sense (no fault, no read of the value, any
    // address allowed).
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p as *const i8)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Prefetches every cache line of `s` (without reading it).
#[inline(always)]
pub fn slice<T>(s: &[T]) {
    let p = s.as_ptr() as *const u8;
    let mut off = 0;
    while off < core::mem::size_of_val(s) {
        line(p.wrapping_add(off));
        off += LINE;
    }
}

/// Prefetches every cache line of `*r` (without reading it).
#[inline(always)]
pub fn object<T>(r: &T) {
    let p = r as *const T as *const u8;
    let mut off = 0;
    while off < core::mem::size_of::<T>() {
        line(p.wrapping_add(off));
        off += LINE;
    }
}
