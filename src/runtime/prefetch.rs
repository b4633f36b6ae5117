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
    hint::<{ core::arch::x86_64::_MM_HINT_T0 }>(p as *const u8);
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Prefetches the cache line holding `p` into the second-level cache only, for data too
/// large to bring into the first level without pushing out what is being worked on.
#[inline(always)]
pub fn line_l2<T: ?Sized>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    hint::<{ core::arch::x86_64::_MM_HINT_T1 }>(p as *const u8);
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn hint<const LEVEL: i32>(p: *const u8) {
    // SAFETY: SSE is part of the x86-64 baseline, so the instruction exists; a prefetch
    // never dereferences in the language's sense (no fault, no read of the value, any
    // address allowed).
    unsafe { core::arch::x86_64::_mm_prefetch::<LEVEL>(p as *const i8) };
}

/// Like [`slice()`], into the second-level cache only (see [`line_l2`]).
#[inline(always)]
pub fn slice_l2<T>(s: &[T]) {
    lines(
        s.as_ptr() as *const u8,
        core::mem::size_of_val(s),
        line_l2::<u8>,
    );
}

/// Prefetches every cache line of `s` (without reading it).
#[inline(always)]
pub fn slice<T>(s: &[T]) {
    bytes(s.as_ptr() as *const u8, core::mem::size_of_val(s));
}

/// Prefetches every cache line of `*r` (without reading it).
#[inline(always)]
pub fn object<T>(r: &T) {
    bytes(r as *const T as *const u8, core::mem::size_of::<T>());
}

/// The bytes from the start of `first` to the end of `last`, as (address, length): a run
/// of fields of one struct (`repr(C)`, `first` declared before `last`), such as the ones
/// every frame reads, which may straddle a line boundary (empty when `last` lies before
/// `first`). For a caller that prefetches the same fields of many structs, at a fixed
/// offset from each, with no load of any of them (see [`range`]).
#[inline]
pub fn field_range<A, B>(first: &A, last: &B) -> (usize, usize) {
    let (p, len) = field_bytes(first, last);
    (p as usize, len)
}

/// Starts loading every line `len` bytes from `p` touch. A hint only: reads nothing, so
/// `p` may be any address (a prefetch never faults).
#[inline(always)]
pub fn range(p: *const u8, len: usize) {
    bytes(p, len);
}

/// The bytes [`field_range`] covers, as a pointer and a length.
#[inline(always)]
fn field_bytes<A, B>(first: &A, last: &B) -> (*const u8, usize) {
    let start = first as *const A as *const u8;
    let end = (last as *const B as usize).wrapping_add(core::mem::size_of::<B>());
    (start, end.saturating_sub(start as usize))
}

/// Prefetches every cache line that bytes `p..p + len` touch, the first and last included
/// when the range does not start or end on a line boundary.
#[inline(always)]
fn bytes(p: *const u8, len: usize) {
    lines(p, len, line::<u8>);
}

/// Calls `fetch` on the start of every cache line that bytes `p..p + len` touch.
#[inline(always)]
fn lines(p: *const u8, len: usize, fetch: impl Fn(*const u8)) {
    let (first, count) = span(p as usize, len);
    let start = p.wrapping_sub(p as usize - first);
    for k in 0..count {
        fetch(start.wrapping_add(k * LINE));
    }
}

/// How many separate buffers a [`Trickle`] holds (an echo canceller has about 25).
pub const TRICKLE_SPANS: usize = 32;

/// The fewest lines [`Trickle::step_share`] issues at a step.
pub const TRICKLE_MIN_STEP: usize = 8;

/// Lines queued for prefetch and issued a few at a time, for state too large to ask for
/// at once. A core keeps only a few dozen misses in flight; asked for 30 KB (an echo
/// canceller: about 470 lines) in one burst, it drops or stalls on most of them, so a
/// lane queues the next session's state here and the session being processed issues it
/// in steps of about ten lines as its own work goes on ([`Trickle::step`]). The lines are
/// asked for into the second-level cache only ([`line_l2`]): an echo canceller's state
/// (30-36 KB) and the one being processed do not fit a 32 KB first level together, and
/// on a Zen 4 core aec-pcmu at 500 calls ran +20% (10 ms blocks) and +44% (20 ms blocks)
/// faster than with the lines asked for into every level (PERF.md, session 21; session
/// 17 had measured every level 2-4% faster on a Zen 5 core, whose first level is 48 KB,
/// with 10 ms blocks). The spans are issued in the order queued:
/// queue what is touched first, first. A hint only: holds addresses, never reads through
/// them. Real-time safe: fixed capacity, no allocation.
#[derive(Debug, Clone, Default)]
pub struct Trickle {
    /// (address of the next line to issue, lines left), in queue order.
    spans: arrayvec::ArrayVec<(usize, usize), TRICKLE_SPANS>,
    /// The first span with lines left.
    next: usize,
    /// Lines queued since the last [`Trickle::flush`].
    total: usize,
}

impl Trickle {
    /// An empty queue.
    pub const fn new() -> Self {
        Trickle {
            spans: arrayvec::ArrayVec::new_const(),
            next: 0,
            total: 0,
        }
    }

    /// Queues every line of `s`. When the queue is full the lines are issued at once
    /// instead (nothing queued is ever lost, only issued earlier).
    #[inline]
    pub fn queue<T>(&mut self, s: &[T]) {
        let (first, count) = span(s.as_ptr() as usize, core::mem::size_of_val(s));
        if count == 0 {
            return;
        }
        if self.spans.try_push((first, count)).is_err() {
            lines(first as *const u8, count * LINE, line_l2::<u8>);
        } else {
            self.total += count;
        }
    }

    /// Issues the next `1/parts` of the lines queued since the last flush (at least
    /// [`TRICKLE_MIN_STEP`]): a caller that steps `parts` times through its own work
    /// spreads the next one's state evenly across it, whatever its size.
    #[inline]
    pub fn step_share(&mut self, parts: usize) {
        self.step(self.total.div_ceil(parts.max(1)).max(TRICKLE_MIN_STEP));
    }

    /// Issues up to `count` more of the queued lines.
    #[inline]
    pub fn step(&mut self, mut count: usize) {
        while count > 0 {
            let Some((addr, left)) = self.spans.get_mut(self.next) else {
                return;
            };
            let n = count.min(*left);
            lines(*addr as *const u8, n * LINE, line_l2::<u8>);
            *addr += n * LINE;
            *left -= n;
            count -= n;
            if *left == 0 {
                self.next += 1;
            }
        }
    }

    /// Lines queued and not yet issued.
    pub fn pending(&self) -> usize {
        self.spans
            .iter()
            .skip(self.next)
            .map(|&(_, left)| left)
            .sum()
    }

    /// Issues every line still queued and empties the queue.
    #[inline]
    pub fn flush(&mut self) {
        self.step(usize::MAX);
        self.spans.clear();
        self.next = 0;
        self.total = 0;
    }
}

/// Shows `visit` the next two items queued in `ring` (the next one as 0), without taking
/// them: how a stage looks ahead to prefetch for the items it will pop next.
#[inline(always)]
pub fn ahead<T>(ring: &mut rtrb::Consumer<T>, mut visit: impl FnMut(usize, &T)) {
    let n = ring.slots().min(2);
    // Cannot fail: `n` items are available. Dropping the chunk uncommitted takes nothing.
    if let Ok(chunk) = ring.read_chunk(n) {
        let (a, b) = chunk.as_slices();
        for (i, item) in a.iter().chain(b).enumerate() {
            visit(i, item);
        }
    }
}

/// Shows `visit` the item `k` places ahead in `ring` (the next one as 0), if that many
/// are queued, without taking it: how a stage prefetches for an item further ahead.
#[inline(always)]
pub fn at<T>(ring: &mut rtrb::Consumer<T>, k: usize, visit: impl FnOnce(&T)) {
    if ring.slots() <= k {
        return;
    }
    // Cannot fail: `k + 1` items are available. Dropping the chunk uncommitted takes
    // nothing.
    if let Ok(chunk) = ring.read_chunk(k + 1) {
        let (a, b) = chunk.as_slices();
        if let Some(item) = a.get(k).or_else(|| b.get(k - a.len())) {
            visit(item);
        }
    }
}

/// The start of the first cache line bytes `addr..addr + len` touch, and how many lines.
#[inline(always)]
fn span(addr: usize, len: usize) -> (usize, usize) {
    if len == 0 {
        return (addr, 0);
    }
    let first = addr - addr % LINE;
    let last = (addr + (len - 1)) / LINE * LINE;
    (first, (last - first) / LINE + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_a_range_touches_is_counted_aligned_or_not() {
        assert_eq!(span(128, 64), (128, 1));
        // A 64-byte object starting mid-line straddles two lines.
        assert_eq!(span(136, 64), (128, 2));
        assert_eq!(span(191, 2), (128, 2));
        assert_eq!(span(192, 1), (192, 1));
        assert_eq!(span(100, 0).1, 0);
        // 1.4 KB from an 8-byte aligned address: 23 lines, or 24 when it straddles.
        assert_eq!(span(64, 1464).1, 23);
        assert_eq!(span(64 + 56, 1464).1, 24);
    }

    #[test]
    fn a_trickle_issues_each_queued_line_once_in_steps_and_never_loses_one() {
        let a = [0u8; 64 * 5];
        let b = [0u32; 40];
        let mut t = Trickle::new();
        t.queue(&a);
        t.queue(&b);
        t.queue::<u8>(&[]);
        let (_, la) = span(a.as_ptr() as usize, a.len());
        let (_, lb) = span(b.as_ptr() as usize, 160);
        assert_eq!(t.pending(), la + lb);
        t.step(3);
        assert_eq!(t.pending(), la + lb - 3);
        // A step past the end of one span goes on into the next.
        t.step(la);
        assert_eq!(t.pending(), lb - 3);
        t.step(usize::MAX);
        assert_eq!(t.pending(), 0);
        t.step(5);
        assert_eq!(t.pending(), 0);
        // Shares: a tenth of what was queued at each step, the last one the remainder.
        t.flush();
        let c = [0u8; 64 * 100];
        t.queue(&c);
        let lc = t.pending();
        t.step_share(10);
        assert_eq!(t.pending(), lc - lc.div_ceil(10));
        for _ in 0..9 {
            t.step_share(10);
        }
        assert_eq!(t.pending(), 0);
        // Full: what does not fit is issued at once, and the queue keeps its capacity.
        for _ in 0..TRICKLE_SPANS + 3 {
            t.queue(&a);
        }
        assert_eq!(t.spans.len(), TRICKLE_SPANS);
        t.flush();
        assert_eq!(t.pending(), 0);
        assert!(t.spans.is_empty());
    }

    #[test]
    fn a_run_of_fields_covers_the_first_to_the_end_of_the_last() {
        #[repr(C)]
        struct S {
            a: u32,
            b: [u8; 70],
            c: u64,
            d: u16,
        }
        let s = S {
            a: 1,
            b: [0; 70],
            c: 2,
            d: 3,
        };
        let base = &s as *const S as usize;
        let (p, len) = field_bytes(&s.b, &s.c);
        assert_eq!(p as usize, base + 4);
        // b at 4..74, c at 80..88 (aligned): 84 bytes, two lines from an aligned struct.
        assert_eq!(len, 84);
        assert_eq!(field_bytes(&s.a, &s.d).1, 90);
        assert_eq!(field_bytes(&s.d, &s.a).1, 0);
        let _ = (s.a, s.b, s.c, s.d);
    }
}
