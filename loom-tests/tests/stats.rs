#![cfg(loom)]
//! Models of `media_core::runtime::stats`: single-writer [`Counter`]s and the
//! [`SessionCell`] seqlock that guards a reused session counter block.
//!
//! A writer thread (the stage that installs sessions) starts generations and counts; the
//! reader (the control plane) takes snapshots concurrently. Counts are chosen so that each
//! generation's contributions are distinguishable: 100 per event under generation 1, 1 per
//! event under generation 2.
//!
//! [`Counter`]: media_core::runtime::stats::Counter

use loom::thread;
use media_core::runtime::stats::{SessionCell, SessionStats};
use media_core::runtime::sync::Arc;

/// A generation-2 snapshot never shows generation-1 counts (which `begin_generation(2)`
/// zeroed), and two generation-2 snapshots by one reader never go backwards.
///
/// Writer: `begin_generation(1)`, `rx_packets += 100`, `rx_late += 100`,
/// `begin_generation(2)`, `rx_packets += 1`, `tx_packets += 1`.
/// Reader: `snapshot(2)` twice.
#[test]
fn gen2_snapshot_never_shows_gen1_counts() {
    loom_tests::model(|| {
        let cell = Arc::new(SessionCell::default());
        let writer = {
            let cell = cell.clone();
            thread::spawn(move || {
                cell.begin_generation(1);
                cell.counters.rx_packets.add(100);
                cell.counters.rx_late.add(100);
                cell.begin_generation(2);
                cell.counters.rx_packets.add(1);
                cell.counters.tx_packets.inc();
            })
        };

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

        writer.join().unwrap();
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
    });
}

/// Within one generation counts only grow, across two snapshots by the same reader, and
/// `end_generation` stops further snapshots of that generation.
///
/// Writer: `begin_generation(1)` (before the reader starts), then `rx_packets += 100`
/// twice, `tx_packets += 100`, `end_generation()`. Reader: `snapshot(1)` twice.
#[test]
fn gen1_counts_monotonic_until_end() {
    loom_tests::model(|| {
        let cell = Arc::new(SessionCell::default());
        cell.begin_generation(1);
        let writer = {
            let cell = cell.clone();
            thread::spawn(move || {
                cell.counters.rx_packets.add(100);
                cell.counters.rx_packets.add(100);
                cell.counters.tx_packets.add(100);
                cell.end_generation();
            })
        };

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

        writer.join().unwrap();
        assert_eq!(cell.snapshot(1), None, "ended generation still readable");
        assert_eq!(cell.counters.rx_packets.get(), 200);
    });
}

/// A generation-1 snapshot taken while `begin_generation(2)` runs never shows the zeroing
/// or generation-2 counts. This is the case the odd sequence word and the fence pair in
/// `begin_generation` / `snapshot` exist for.
///
/// Ignored by default because it is expensive under loom, not because it fails: loom
/// explores every store each relaxed load may return, and `snapshot` reads all 18 session
/// counters, each of which can return its generation-1 or its zeroed value once the writer
/// has re-zeroed the block (2^18 combinations per schedule). It takes ~1.5 min with
/// `LOOM_MAX_PREEMPTIONS=2`; run it with `-- --ignored`.
#[test]
#[ignore = "exhaustive: ~1.5 min under loom; run with --ignored"]
fn gen1_snapshot_never_shows_gen2_counts() {
    loom_tests::model(|| {
        let cell = Arc::new(SessionCell::default());
        let writer = {
            let cell = cell.clone();
            thread::spawn(move || {
                cell.begin_generation(1);
                cell.counters.rx_packets.add(100);
                cell.begin_generation(2);
                cell.counters.rx_packets.add(1);
                cell.counters.tx_packets.inc();
            })
        };

        if let Some(s) = cell.snapshot(1) {
            assert!(
                matches!(s.rx_packets, 0 | 100),
                "gen-2 value under gen 1: {s:?}"
            );
            assert_eq!(s.tx_packets, 0, "gen-2 count under gen 1: {s:?}");
        }

        writer.join().unwrap();
    });
}
