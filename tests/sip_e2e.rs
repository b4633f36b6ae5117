//! End-to-end SIP calls between two real phones (headless baresip) through the media-core
//! SIP gateway (`examples/sip_gateway.rs`), driven by `scripts/sip_call.sh`: the phones are
//! forced to different codecs so the gateway transcodes, B's recording is scored against
//! the input with PESQ (ITU-T P.862), and the DTMF digits A sends must be reported by B.
//!
//! Each call takes about 25 s of wall time plus a release build of the example, and PESQ
//! through three real-time processes moves with machine load, so these are ignored in the
//! default run: `cargo test --release --test sip_e2e -- --ignored`. The script prints SKIP
//! and succeeds where baresip cannot be installed (not root, no apt-get).

use std::path::Path;
use std::process::Command;

/// Runs one call and asserts the script's verdict, printing its report.
fn call(a: &str, b: &str, dtmf: &str, min_pesq: f64) {
    call_with(a, b, dtmf, min_pesq, &[]);
}

/// [`call`] with extra arguments for `scripts/sip_call.sh`.
fn call_with(a: &str, b: &str, dtmf: &str, min_pesq: f64, extra: &[&str]) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::env::temp_dir().join(format!("sip_e2e_{a}_{b}_{}.wav", std::process::id()));
    let res = Command::new("bash")
        .arg(root.join("scripts/sip_call.sh"))
        .arg(root.join("tests/data/audio/speech1_8000.wav"))
        .arg(&out)
        .args(["--a-codec", a, "--b-codec", b])
        .args(if dtmf.is_empty() {
            vec![]
        } else {
            vec!["--dtmf", dtmf]
        })
        .args(["--min-pesq", &min_pesq.to_string()])
        .args(extra)
        .current_dir(root)
        .output()
        .expect("bash runs scripts/sip_call.sh");
    let text =
        String::from_utf8_lossy(&res.stdout).into_owned() + &String::from_utf8_lossy(&res.stderr);
    println!("{text}");
    let _ = std::fs::remove_file(&out);
    assert!(
        res.status.success(),
        "sip_call.sh {a} -> {b} failed:\n{text}"
    );
    if !text.contains("SKIP") {
        assert!(text.contains("PASS"), "no PASS verdict:\n{text}");
        assert!(
            dtmf.is_empty() || text.contains(&format!("reported by B: {dtmf}")),
            "B did not report {dtmf}:\n{text}"
        );
    }
}

/// Both pairs in one test, one call after the other: two calls at once (four phones, two
/// gateways) on a small machine would measure the machine, not the gateway.
#[test]
#[ignore = "needs baresip; run scripts/sip_call.sh or cargo test -- --ignored"]
fn opus_to_pcmu_and_pcmu_to_g722_calls_through_the_gateway_keep_speech_and_dtmf_intact() {
    // PESQ floor 3.0: through the gateway these pairs measured 4.0-4.25 on an idle machine
    // (direct baresip calls: PCMU 4.34, G.722 3.88); under heavy machine load (load average
    // above 10 on 2 cores) scores fell to 2.5, which this floor reports.
    call("opus", "pcmu", "1234*#", 3.0);
    call("pcmu", "g722", "1234*#", 3.0);
}

/// A re-INVITE from the gateway moves leg B from PCMU to PCMA 6 s into the call: audio keeps
/// flowing (the script fails on more than 60 ms of silence at the switch where the input
/// speaks; measured 10-30 ms) and B's phone switches codec.
#[test]
#[ignore = "needs baresip; run scripts/sip_call.sh or cargo test -- --ignored"]
fn a_reinvite_that_changes_b_codec_mid_call_keeps_audio_flowing() {
    // No digits here: their silent lead-in would defeat the script's lag estimate.
    call_with("opus", "pcmu", "", 3.0, &["--reinvite-b", "6:pcma"]);
}
