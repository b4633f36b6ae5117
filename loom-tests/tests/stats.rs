#![cfg(loom)]
//! Models of `media_core::runtime::stats`: single-writer `Counter`s and the `SessionCell`
//! seqlock that guards a reused session counter block.
//!
//! The writer (the stage that installs sessions) is the main thread; the reader (the control
//! plane) is spawned and takes snapshots concurrently. Counts are chosen so that each
//! generation's contributions are distinguishable: 100 per event under generation 1, 1 per
//! event under generation 2.

use loom::thread;
use loom_tests::outcomes;
use media_core::runtime::stats::{SessionCell, SessionStats};
use media_core::runtime::sync::{fence, Arc, AtomicBool, AtomicU64, Ordering};
use std::collections::BTreeSet;

type RxTx = Option<(u64, u64)>;

fn rx_tx(s: Option<SessionStats>) -> RxTx {
    s.map(|s| (s.rx_packets, s.tx_packets))
}

/// A generation-2 snapshot never shows generation-1 counts (which `begin_generation(2)`
/// zeroed), and two generation-2 snapshots by one reader never go backwards.
///
/// Writer: `begin_generation(1)`, `rx_packets += 100`, `rx_late += 100`,
/// `begin_generation(2)`, `rx_packets += 1`, `tx_packets += 1`.
/// Reader: `snapshot(2)` twice.
#[test]
fn gen2_snapshot_never_shows_gen1_counts() {
    let (seen, _) = outcomes(|| {
        let cell = Arc::new(SessionCell::default());
        let reader = {
            let cell = cell.clone();
            thread::spawn(move || {
                let a = cell.snapshot(2);
                let b = cell.snapshot(2);
                for s in [a, b].into_iter().flatten() {
                    assert!(s.rx_packets <= 1, "gen-1 count under gen 2: {s:?}");
                    assert_eq!(s.rx_late, 0, "gen-1 count under gen 2: {s:?}");
                    assert!(s.tx_packets <= 1, "{s:?}");
                }
                if let (Some(a), Some(b)) = (a, b) {
                    assert!(
                        b.rx_packets >= a.rx_packets,
                        "went backwards: {a:?} then {b:?}"
                    );
                    assert!(
                        b.tx_packets >= a.tx_packets,
                        "went backwards: {a:?} then {b:?}"
                    );
                }
                (rx_tx(a), rx_tx(b))
            })
        };

        cell.begin_generation(1);
        cell.counters.rx_packets.add(100);
        cell.counters.rx_late.add(100);
        cell.begin_generation(2);
        cell.counters.rx_packets.add(1);
        cell.counters.tx_packets.inc();

        let seen = reader.join().unwrap();
        let end = cell.snapshot(2).expect("generation 2 is live");
        assert_eq!(
            end,
            SessionStats {
                rx_packets: 1,
                tx_packets: 1,
                ..SessionStats::default()
            }
        );
        assert_eq!(cell.snapshot(1), None);
        seen
    });

    // Every legal pair, and nothing else: the second snapshot is `Some` once the first was
    // and never smaller. Seeing all of them shows loom explored the race.
    let values = [(0, 0), (0, 1), (1, 0), (1, 1)];
    let mut expected = BTreeSet::new();
    for b in values.iter().copied().map(Some).chain([None]) {
        expected.insert((None, b));
    }
    for a in values {
        for b in values {
            if b.0 >= a.0 && b.1 >= a.1 {
                expected.insert((Some(a), Some(b)));
            }
        }
    }
    assert_eq!(seen, expected);
}

/// Within one generation counts only grow across two snapshots by the same reader, and
/// after `end_generation` the generation's snapshots stop.
///
/// Writer: `begin_generation(1)` (before the reader exists), then `rx_packets += 100`
/// twice, `tx_packets += 100`, `end_generation()`. Reader: `snapshot(1)` twice.
#[test]
fn gen1_counts_monotonic_until_end() {
    let (seen, _) = outcomes(|| {
        let cell = Arc::new(SessionCell::default());
        cell.begin_generation(1);
        let reader = {
            let cell = cell.clone();
            thread::spawn(move || {
                let a = cell.snapshot(1);
                let b = cell.snapshot(1);
                for s in [a, b].into_iter().flatten() {
                    assert!(matches!(s.rx_packets, 0 | 100 | 200), "{s:?}");
                    assert!(matches!(s.tx_packets, 0 | 100), "{s:?}");
                }
                if let (Some(a), Some(b)) = (a, b) {
                    assert!(
                        b.rx_packets >= a.rx_packets,
                        "went backwards: {a:?} then {b:?}"
                    );
                    assert!(
                        b.tx_packets >= a.tx_packets,
                        "went backwards: {a:?} then {b:?}"
                    );
                }
                (rx_tx(a), rx_tx(b))
            })
        };

        cell.counters.rx_packets.add(100);
        cell.counters.rx_packets.add(100);
        cell.counters.tx_packets.add(100);
        cell.end_generation();

        let seen = reader.join().unwrap();
        assert_eq!(cell.snapshot(1), None, "ended generation still readable");
        assert_eq!(cell.counters.rx_packets.get(), 200);
        seen
    });

    // Witnesses that loom explored: a growing pair, a snapshot racing `end_generation`
    // (first `Some`, then `None`), and both complete and empty snapshots.
    assert!(seen.contains(&(Some((0, 0)), Some((200, 100)))), "{seen:?}");
    assert!(seen.contains(&(Some((100, 0)), None)), "{seen:?}");
    assert!(
        seen.contains(&(Some((200, 100)), Some((200, 100)))),
        "{seen:?}"
    );
    assert!(seen.contains(&(None, None)), "{seen:?}");
}

/// What the generation-1 race model needs from a counter block; implemented for the real
/// `SessionCell` and, as a negative control, for a copy of its protocol with a fence removed.
trait Block: Default + Send + Sync + 'static {
    fn begin_generation(&self, generation: u32);
    fn add_rx(&self, n: u64);
    fn add_tx(&self, n: u64);
    /// Reads every counter (not the sequence word).
    fn read_counters(&self);
    fn snapshot(&self, generation: u32) -> RxTx;
}

impl Block for SessionCell {
    fn begin_generation(&self, generation: u32) {
        SessionCell::begin_generation(self, generation)
    }
    fn add_rx(&self, n: u64) {
        self.counters.rx_packets.add(n)
    }
    fn add_tx(&self, n: u64) {
        self.counters.tx_packets.add(n)
    }
    fn read_counters(&self) {
        let _ = self.counters.snapshot();
    }
    fn snapshot(&self, generation: u32) -> RxTx {
        rx_tx(SessionCell::snapshot(self, generation))
    }
}

/// A generation-1 snapshot taken while `begin_generation(2)` runs never shows the zeroing
/// or generation-2 counts. This is the case the odd sequence word and the fence pair in
/// `begin_generation` / `snapshot` exist for.
///
/// Loom explores every store each relaxed load may return. `snapshot` reads all N session
/// counters, and once `begin_generation(2)` has re-zeroed the block each can return its
/// old or its zeroed value: 2^N executions per schedule, minutes per run with N = 18 and
/// growing with every counter added (see the ignored
/// `gen1_snapshot_never_shows_gen2_counts_exhaustive`). So the reader first reads every
/// counter (after the generation-1 writes, before `begin_generation(2)`, by a hand-off) and
/// yields: loom then never returns a counter value the reader already read once a newer one
/// exists. The sequence word is not pre-read, so stale sequence reads, which are what the
/// protocol must cope with, are all still explored. The negative controls below show this
/// shape catches a missing fence on either side.
fn gen1_race<B: Block>() -> BTreeSet<RxTx> {
    let (seen, _) = outcomes(|| {
        let cell = Arc::new(B::default());
        let gen1_done = Arc::new(AtomicBool::new(false));
        let pre_read = Arc::new(AtomicBool::new(false));
        let reader = {
            let (cell, gen1_done, pre_read) = (cell.clone(), gen1_done.clone(), pre_read.clone());
            thread::spawn(move || {
                while !gen1_done.load(Ordering::Acquire) {
                    thread::yield_now();
                }
                cell.read_counters();
                pre_read.store(true, Ordering::Release);
                thread::yield_now();
                let s = cell.snapshot(1);
                if let Some(s) = s {
                    assert_eq!(s, (100, 0), "generation-2 state under generation 1");
                }
                s
            })
        };

        cell.begin_generation(1);
        cell.add_rx(100);
        gen1_done.store(true, Ordering::Release);
        while !pre_read.load(Ordering::Acquire) {
            thread::yield_now();
        }
        cell.begin_generation(2);
        cell.add_rx(1);
        cell.add_tx(1);
        reader.join().unwrap()
    });
    seen
}

#[test]
fn gen1_snapshot_never_shows_gen2_counts() {
    let seen = gen1_race::<SessionCell>();
    assert_eq!(seen, BTreeSet::from([None, Some((100, 0))]));
}

/// A copy of `SessionCell`'s protocol (sequence word, two counters and a few untouched
/// ones) with the writer's release fence (`W = false`) or the reader's acquire fence
/// (`R = false`) removed. Only used to show the race model can fail.
#[derive(Default)]
struct SeqlockCopy<const W: bool, const R: bool> {
    seq: AtomicU64,
    rx: AtomicU64,
    tx: AtomicU64,
    other: [AtomicU64; 4],
}

impl<const W: bool, const R: bool> SeqlockCopy<W, R> {
    fn counters(&self) -> impl Iterator<Item = &AtomicU64> {
        [&self.rx, &self.tx].into_iter().chain(&self.other)
    }
}

impl<const W: bool, const R: bool> Block for SeqlockCopy<W, R> {
    fn begin_generation(&self, generation: u32) {
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s | 1, Ordering::Relaxed);
        if W {
            fence(Ordering::Release);
        }
        self.counters().for_each(|c| c.store(0, Ordering::Relaxed));
        self.seq
            .store(u64::from(generation) << 1, Ordering::Release);
    }
    fn add_rx(&self, n: u64) {
        let v = self.rx.load(Ordering::Relaxed);
        self.rx.store(v + n, Ordering::Relaxed);
    }
    fn add_tx(&self, n: u64) {
        let v = self.tx.load(Ordering::Relaxed);
        self.tx.store(v + n, Ordering::Relaxed);
    }
    fn read_counters(&self) {
        self.counters().for_each(|c| {
            c.load(Ordering::Relaxed);
        });
    }
    fn snapshot(&self, generation: u32) -> RxTx {
        let want = u64::from(generation) << 1;
        if self.seq.load(Ordering::Acquire) != want {
            return None;
        }
        let snap = (
            self.rx.load(Ordering::Relaxed),
            self.tx.load(Ordering::Relaxed),
        );
        self.other.iter().for_each(|c| {
            c.load(Ordering::Relaxed);
        });
        if R {
            fence(Ordering::Acquire);
        }
        (self.seq.load(Ordering::Relaxed) == want).then_some(snap)
    }
}

#[test]
fn gen1_race_model_accepts_correct_copy() {
    let seen = gen1_race::<SeqlockCopy<true, true>>();
    assert_eq!(seen, BTreeSet::from([None, Some((100, 0))]));
}

#[test]
#[should_panic(expected = "generation-2 state under generation 1")]
fn gen1_race_model_catches_missing_release_fence() {
    gen1_race::<SeqlockCopy<false, true>>();
}

#[test]
#[should_panic(expected = "generation-2 state under generation 1")]
fn gen1_race_model_catches_missing_acquire_fence() {
    gen1_race::<SeqlockCopy<true, false>>();
}

/// The generation-1 race on the real `SessionCell` without the pre-read: every stale
/// counter value is explored. Passed with 18 session counters in ~2 minutes (4.2 million
/// executions) with `LOOM_MAX_PREEMPTIONS=1`; far longer with 2, and the cost doubles with
/// each counter added, hence ignored. Run with
/// `LOOM_MAX_PREEMPTIONS=1 ... -- --ignored gen1_snapshot_never_shows_gen2_counts_exhaustive`.
#[test]
#[ignore = "exhaustive: minutes under loom"]
fn gen1_snapshot_never_shows_gen2_counts_exhaustive() {
    let (seen, _) = outcomes(|| {
        let cell = Arc::new(SessionCell::default());
        let reader = {
            let cell = cell.clone();
            thread::spawn(move || {
                let s = cell.snapshot(1);
                if let Some(s) = s {
                    assert!(
                        matches!(s.rx_packets, 0 | 100),
                        "gen-2 value under gen 1: {s:?}"
                    );
                    assert_eq!(s.tx_packets, 0, "gen-2 count under gen 1: {s:?}");
                }
                rx_tx(s)
            })
        };
        cell.begin_generation(1);
        cell.counters.rx_packets.add(100);
        cell.begin_generation(2);
        cell.counters.rx_packets.add(1);
        cell.counters.tx_packets.inc();
        reader.join().unwrap()
    });
    assert!(seen.contains(&Some((100, 0))), "{seen:?}");
}

/// State kept beside the counter block and guarded by its sequence (a slot's `LossCell`:
/// zeroed in `begin_generation_with`, read in `read_with`) follows the same rule: a
/// generation-2 read never returns generation-1 state, a generation-1 read racing
/// `begin_generation_with(2)` never returns the zeroing or generation-2 state, and one
/// reader's generation-2 reads never go backwards. One word stands for the cell (its words
/// are written and read alike, one relaxed access each).
///
/// Writer: `begin_generation_with(1, w = 7)`, `w = 100`, `begin_generation_with(2, w = 0)`,
/// `w = 1`. Reader: `read_with(1)`, then `read_with(2)` twice.
#[test]
fn state_beside_the_block_follows_its_generation() {
    type Seen = (Option<u64>, Option<u64>, Option<u64>);
    let (seen, _) = outcomes(|| -> Seen {
        let cell = Arc::new(SessionCell::default());
        let word = Arc::new(AtomicU64::new(0));
        let reader = {
            let (cell, word) = (cell.clone(), word.clone());
            thread::spawn(move || {
                let load = || word.load(Ordering::Relaxed);
                let g1 = cell.read_with(1, load);
                let a = cell.read_with(2, load);
                let b = cell.read_with(2, load);
                assert!(
                    matches!(g1, None | Some(7) | Some(100)),
                    "gen 1 read {g1:?}"
                );
                for v in [a, b].into_iter().flatten() {
                    assert!(v <= 1, "gen-1 state under gen 2: {v}");
                }
                if let (Some(a), Some(b)) = (a, b) {
                    assert!(b >= a, "went backwards: {a} then {b}");
                }
                (g1, a, b)
            })
        };
        cell.begin_generation_with(1, || word.store(7, Ordering::Relaxed));
        word.store(100, Ordering::Relaxed);
        cell.begin_generation_with(2, || word.store(0, Ordering::Relaxed));
        word.store(1, Ordering::Relaxed);
        let seen = reader.join().unwrap();
        assert_eq!(cell.read_with(2, || word.load(Ordering::Relaxed)), Some(1));
        assert_eq!(cell.read_with(1, || 0), None);
        seen
    });
    // Loom explored the races: a gen-1 read of the gen-1 state, gen-2 reads before and
    // after its write, and reads that found another generation.
    assert!(seen.iter().any(|s| s.0 == Some(100)), "{seen:?}");
    assert!(
        seen.iter().any(|s| s.1 == Some(0) && s.2 == Some(1)),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|s| s.0.is_none() && s.1.is_none()),
        "{seen:?}"
    );
}

/// `SeqWords` (a slot's `LossCell`, here two words) is read whole: a reader racing the
/// writer's stores gets one store's words or none, never a word of each, and a second read
/// never returns an older store than the first.
///
/// Writer: `store([1, 1])`, `store([2, 2])`. Reader: `load(2)` twice.
#[test]
fn seq_words_are_read_whole() {
    use media_core::runtime::stats::SeqWords;
    let (seen, _) = outcomes(|| {
        let cell = Arc::new(SeqWords::<2>::default());
        let reader = {
            let cell = cell.clone();
            thread::spawn(move || {
                let a = cell.load(2);
                let b = cell.load(2);
                for w in [a, b].into_iter().flatten() {
                    assert_eq!(w[0], w[1], "torn read: {w:?}");
                }
                if let (Some(a), Some(b)) = (a, b) {
                    assert!(b[0] >= a[0], "went backwards: {a:?} then {b:?}");
                }
                (a.map(|w| w[0]), b.map(|w| w[0]))
            })
        };
        cell.store(&[1, 1]);
        cell.store(&[2, 2]);
        let seen = reader.join().unwrap();
        assert_eq!(cell.load(1), Some([2, 2]));
        seen
    });
    // Loom explored reads of each store, and reads that gave up while one was under way.
    for v in [0, 1, 2] {
        assert!(seen.iter().any(|s| s.0 == Some(v)), "{seen:?}");
    }
    assert!(
        seen.iter().any(|s| s.0.is_none() || s.1.is_none()),
        "{seen:?}"
    );
}
