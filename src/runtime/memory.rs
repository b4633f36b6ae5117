//! Page size of the process's memory: transparent huge pages for the session state.
//!
//! A lane with thousands of sessions touches tens of megabytes per tick in no order a
//! 4 KiB-page TLB covers, so every few sessions cost a page walk on top of the cache
//! misses. Measured on the development machine, virtual clock, 5,000 calls: relay-pcmu
//! 9,300-9,800 calls per core with the heap in 4 KiB pages, 12,100-13,700 with it in
//! 2 MiB pages (PERF.md). Kernels commonly run transparent huge pages in `madvise` mode,
//! where only memory a process marks gets them, and the allocator (glibc's, at least)
//! marks nothing unless told at start.
//!
//! [`use_huge_pages`] marks the private anonymous memory of the process (the heap,
//! allocator arenas, large allocations) with `MADV_HUGEPAGE`, 2 MiB page by 2 MiB page
//! where at least half of the page is in use (so sparse memory, such as thread stacks,
//! does not grow), and with `collapse` also asks the kernel to rebuild those pages as huge
//! pages at once (`MADV_COLLAPSE`, Linux 6.1+). Control plane only: it
//! reads `/proc/self/maps` and makes system calls, and a collapse copies memory that
//! lanes may be using (they wait on it meanwhile), so run it when lanes are idle, e.g.
//! after creating a batch of sessions before traffic. Elsewhere than Linux it does
//! nothing.

/// What [`use_huge_pages`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HugePages {
    /// Bytes marked for huge pages (whole 2 MiB pages at least half in use).
    pub advised_bytes: u64,
    /// Bytes of those the kernel collapsed into huge pages (with `collapse`).
    pub collapsed_bytes: u64,
    /// 2 MiB pages left alone because less than half of them was in use: a huge page
    /// there would add more resident memory than it saves in page walks (a collapse
    /// fills the whole 2 MiB).
    pub sparse_pages: u32,
    /// 2 MiB pages the kernel would not mark, or not collapse after [`COLLAPSE_TRIES`]
    /// tries (old kernel, huge pages disabled, no memory free to compact into a huge
    /// page, or pages busy); the rest still counts.
    pub refused_pages: u32,
    /// Anonymous memory of the process in huge pages afterwards (`AnonHugePages`).
    pub anon_huge_bytes: u64,
}

/// Size of a transparent huge page on x86-64 and most arm64 kernels.
const HUGE: u64 = 2 << 20;

/// Attempts per huge page before a collapse is given up (a page a running lane touches
/// may be busy for a moment).
pub const COLLAPSE_TRIES: usize = 3;

/// `MADV_COLLAPSE` (Linux 6.1, `include/uapi/asm-generic/mman-common.h`).
#[cfg(target_os = "linux")]
const MADV_COLLAPSE: libc::c_int = 25;

/// Marks the process's private anonymous memory for transparent huge pages and, with
/// `collapse`, collapses what is in use now (see the module docs). Control plane only.
pub fn use_huge_pages(collapse: bool) -> HugePages {
    let mut r = HugePages::default();
    #[cfg(target_os = "linux")]
    {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
        let mut resident = vec![0u8; (HUGE / 4096) as usize];
        for (start, end) in anonymous_ranges(&maps) {
            // One huge page at a time: only pages mostly in use, and a page the kernel
            // cannot collapse now (a lane is using it: EAGAIN) costs that page only, and
            // is tried again.
            for page in (start..end).step_by(HUGE as usize) {
                let q = page as *mut libc::c_void;
                // SAFETY: `q..q + HUGE` lies inside a mapping of this process (from
                // /proc/self/maps) and `resident` has one byte per 4 KiB page of it;
                // mincore only reports which pages are resident.
                let known = unsafe { libc::mincore(q, HUGE as usize, resident.as_mut_ptr()) } == 0;
                let in_use = resident.iter().filter(|&&v| v & 1 != 0).count();
                if !known || 2 * in_use < resident.len() {
                    r.sparse_pages += 1;
                    continue;
                }
                // SAFETY: madvise with these advices only changes how the kernel backs
                // the range (no contents change, no mapping is added or removed; a
                // collapse copies pages and keeps their contents); the range lies inside
                // a mapping of this process.
                if unsafe { libc::madvise(q, HUGE as usize, libc::MADV_HUGEPAGE) } != 0 {
                    r.refused_pages += 1;
                    continue;
                }
                r.advised_bytes += HUGE;
                if !collapse {
                    continue;
                }
                let done = (0..COLLAPSE_TRIES)
                    // SAFETY: as above.
                    .any(|_| unsafe { libc::madvise(q, HUGE as usize, MADV_COLLAPSE) == 0 });
                if done {
                    r.collapsed_bytes += HUGE;
                } else {
                    r.refused_pages += 1;
                }
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = collapse;
    r.anon_huge_bytes = anon_huge_bytes();
    r
}

/// Anonymous memory of this process in transparent huge pages, bytes (0 where the
/// kernel does not say).
pub fn anon_huge_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("AnonHugePages:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// The whole 2 MiB-aligned ranges of the private anonymous read-write mappings in
/// `maps` (the format of `/proc/self/maps`): the heap and unnamed mappings (which include
/// other threads' stacks), not the main thread's stack, files or special mappings.
fn anonymous_ranges(maps: &str) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (Some(range), Some(perms), Some(_off), Some(_dev), Some(inode)) =
            (f.next(), f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        let name = f.next().unwrap_or("");
        if perms != "rw-p" || inode != "0" || !(name.is_empty() || name == "[heap]") {
            continue;
        }
        let Some((a, b)) = range.split_once('-') else {
            continue;
        };
        let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) else {
            continue;
        };
        let (start, end) = (a.div_ceil(HUGE) * HUGE, b / HUGE * HUGE);
        if end > start {
            out.push((start, end));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_whole_huge_pages_of_private_anonymous_memory_are_taken() {
        let maps = "\
55d000000000-55d000a00000 rw-p 00000000 00:00 0                          [heap]
7f0000100000-7f0000700000 rw-p 00000000 00:00 0 
7f0000800000-7f0000900000 rw-p 00000000 00:00 0 
7f0001000000-7f0001800000 r--p 00000000 08:01 1234                       /usr/lib/libc.so.6
7f0002000000-7f0002800000 rw-p 00000000 08:01 1234                       /usr/lib/libc.so.6
7ffc00000000-7ffc00800000 rw-p 00000000 00:00 0                          [stack]
garbage line
";
        assert_eq!(
            anonymous_ranges(maps),
            vec![
                // The heap, already aligned.
                (0x55d0_0000_0000, 0x55d0_00a0_0000),
                // 1 MiB .. 7 MiB: the whole pages 2 MiB .. 6 MiB.
                (0x7f00_0020_0000, 0x7f00_0060_0000),
            ]
        );
    }

    #[test]
    fn marking_the_heap_keeps_its_contents_and_reports_what_it_did() {
        // 16 MiB in use, touched page by page.
        let v: Vec<u64> = (0..2u64 << 20)
            .map(|i| i.wrapping_mul(0x9e37_79b9))
            .collect();
        let r = use_huge_pages(true);
        assert!(v
            .iter()
            .enumerate()
            .all(|(i, &x)| x == (i as u64).wrapping_mul(0x9e37_79b9)));
        assert!(r.collapsed_bytes <= r.advised_bytes);
        if cfg!(target_os = "linux") && r.collapsed_bytes > 0 {
            // What the kernel says it collapsed shows as huge pages.
            assert!(r.anon_huge_bytes > 0, "{r:?}");
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn memory_mostly_untouched_is_not_filled_in() {
        // 32 MiB reserved, one byte written per 2 MiB: 16 of its 8,192 pages in use.
        let mut v: Vec<u8> = Vec::with_capacity(32 << 20);
        {
            // A kernel in `transparent_hugepage=always` mode would back each first write
            // with a whole huge page; this test is about what `use_huge_pages` adds.
            let spare = v.spare_capacity_mut();
            let start = (spare.as_ptr() as usize).div_ceil(4096) * 4096;
            let len = (spare.as_ptr() as usize + spare.len()) / 4096 * 4096 - start;
            // SAFETY: the range lies inside `v`'s allocation; the advice only changes how
            // the kernel may back it.
            unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_NOHUGEPAGE) };
        }
        for chunk in v.spare_capacity_mut().chunks_mut(HUGE as usize) {
            chunk[0].write(1);
        }
        let r = use_huge_pages(true);
        assert!(r.sparse_pages >= 15, "{r:?}");
        let spare = v.spare_capacity_mut();
        let mut resident = vec![0u8; spare.len() / 4096];
        let start = (spare.as_ptr() as usize).div_ceil(4096) * 4096;
        // SAFETY: the range lies inside `v`'s allocation and `resident` has a byte per
        // 4 KiB page of it; mincore only reports residency.
        let rc = unsafe {
            libc::mincore(
                start as *mut libc::c_void,
                (resident.len() - 1) * 4096,
                resident.as_mut_ptr(),
            )
        };
        assert_eq!(rc, 0);
        let in_use = resident.iter().filter(|&&b| b & 1 != 0).count();
        assert!(
            in_use < resident.len() / 10,
            "{in_use} of {} pages",
            resident.len()
        );
    }
}
