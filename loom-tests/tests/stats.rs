#![cfg(loom)]
use loom::thread;
use media_core::runtime::stats::SessionCell;
use media_core::runtime::sync::Arc;

#[test]
fn gen1_snapshot_vs_begin2() {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    loom::model(|| {
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let cell = Arc::new(SessionCell::default());
        cell.begin_generation(1);
        let w = {
            let cell = cell.clone();
            thread::spawn(move || {
                cell.counters.rx_packets.add(100);
                cell.begin_generation(2);
                cell.counters.tx_packets.add(1);
            })
        };
        if let Some(s) = cell.snapshot(1) {
            assert!(s.rx_packets == 0 || s.rx_packets == 100, "{s:?}");
            assert_eq!(s.tx_packets, 0, "{s:?}");
        }
        w.join().unwrap();
    });
    eprintln!(
        "iterations {}",
        N.load(std::sync::atomic::Ordering::Relaxed)
    );
}
