#![cfg(loom)]
use loom::thread;
use media_core::runtime::stats::SessionCell;
use media_core::runtime::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

#[test]
fn gen1_snapshot_vs_begin2() {
    static N: AtomicUsize = AtomicUsize::new(0);
    loom::model(|| {
        N.fetch_add(1, Relaxed);
        let cell = Arc::new(SessionCell::default());
        cell.begin_generation(1);
        cell.counters.rx_packets.add(100);
        let w = {
            let cell = cell.clone();
            thread::spawn(move || {
                cell.begin_generation(2);
            })
        };
        if let Some(s) = cell.snapshot(1) {
            assert!(s.rx_packets == 100, "{s:?}");
        }
        w.join().unwrap();
    });
    eprintln!("iterations {}", N.load(Relaxed));
}
