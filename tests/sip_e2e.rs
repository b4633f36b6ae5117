//! End-to-end SIP calls between two real phones (headless baresip) through the media-core
//! SIP gateway (`examples/sip_gateway.rs`), driven by `scripts/sip_call.sh`: the phones are
//! forced to different codecs so the gateway transcodes, B's recording is scored against
//! the input with PESQ (ITU-T P.862), and the DTMF digits A sends must be reported by B.
//!
//! Each call takes about 25 s of wall time plus a release build of the example, and PESQ
//! through three real-time processes moves with machine load, so these are ignored in the
//! default run: `cargo test --release --test sip_e2e -- --ignored`. The script prints SKIP
//! and succeeds where baresip cannot be installed (not root, no apt-get).
//!
//! CANCEL, hold/resume and a callee's codec change are driven by SIPp (Debian
//! `sip-tester`) with the scenarios in `scripts/sipp/`: SIPp fails a call on any message
//! the scenario does not expect (and checks SDP directions and codecs with `ereg`), and the
//! tests read the gateway's log and per-call summary for what happened to the media. They
//! install it from Debian when run as root with apt-get, and print SKIP and pass where
//! `sipp` is not installed and cannot be. All tests here hold one lock, so
//! `--test-threads` does not matter: calls in parallel on a small machine would measure
//! the machine.

use std::io::Write;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One call at a time (see the crate docs). A test harness lock, nowhere near a lane.
#[allow(clippy::disallowed_types)]
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[allow(clippy::disallowed_types)]
fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

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
    let _one_at_a_time = serial();
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
    let _one_at_a_time = serial();
    // No digits here: their silent lead-in would defeat the script's lag estimate.
    call_with("opus", "pcmu", "", 3.0, &["--reinvite-b", "6:pcma"]);
}

// ---- SIPp-driven calls: CANCEL, hold/resume, the callee's codec change ----

/// `target/release/examples/sip_gateway` beside this test binary, built (or brought up to
/// date: a no-op when it is) once per test run. `cargo test --test sip_e2e` does not build
/// examples, and a binary left from an older build would test old code.
fn gateway_binary() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("test binary path");
        // target/<profile>/deps/sip_e2e-HASH -> target/<profile>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test binary lives in target/<profile>/deps");
        let target = profile_dir.parent().expect("target dir");
        let ok = Command::new(env!("CARGO"))
            .args(["build", "--release", "--example", "sip_gateway"])
            .env("CARGO_TARGET_DIR", target)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "cargo build --example sip_gateway failed");
        profile_dir.join("examples/sip_gateway")
    })
    .clone()
}

/// SIPp is installed, or was just installed from Debian (`sip-tester`) where the tests run
/// as root with apt-get, as `scripts/sip_call.sh` installs baresip. Tried once per run.
fn have_sipp() -> bool {
    static HAVE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAVE.get_or_init(|| {
        let present = || {
            Command::new("sipp")
                .arg("-v")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok()
        };
        if present() {
            return true;
        }
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0"));
        if root {
            println!("installing sip-tester (SIPp) ...");
            let _ = Command::new("sh")
                .args([
                    "-c",
                    "apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
                     apt-get install -y -qq --no-install-recommends sip-tester",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        present()
    })
}

/// A base port with `count` free UDP ports above it on loopback (checked by binding them;
/// another program could still take one before we do, which only fails the test).
fn free_ports(count: u16) -> u16 {
    let seed = u64::from(std::process::id())
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(7, |d| d.as_nanos() as u64);
    for i in 0..200u64 {
        let base =
            40_000 + ((seed.wrapping_mul(2654435761).wrapping_add(i * 7919)) % 2000) as u16 * 10;
        let socks: Vec<_> = (0..count)
            .map_while(|k| UdpSocket::bind(("127.0.0.1", base + k)).ok())
            .collect();
        if socks.len() == usize::from(count) {
            return base;
        }
    }
    panic!("no {count} free UDP ports on 127.0.0.1");
}

/// The test speech as headerless G.711 (mu-law and A-law): SIPp's `rtp_stream` plays the
/// payload bytes as they are, 160 per 20 ms packet.
fn write_g711(dir: &Path) {
    let wav = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/audio/speech1_8000.wav");
    let mut r = hound::WavReader::open(&wav).expect("speech1_8000.wav");
    let pcm: Vec<i16> = r.samples::<i16>().map(|s| s.expect("sample")).collect();
    let mut u = vec![0u8; pcm.len()];
    let mut a = vec![0u8; pcm.len()];
    media_core::codec::audio::g711::ulaw_encode(&pcm, &mut u);
    media_core::codec::audio::g711::alaw_encode(&pcm, &mut a);
    std::fs::write(dir.join("pcmu.raw"), u).expect("write pcmu.raw");
    std::fs::write(dir.join("pcma.raw"), a).expect("write pcma.raw");
}

/// What one SIPp call through the gateway left behind.
struct Run {
    uac_ok: bool,
    uas_ok: bool,
    /// SIPp's output and error logs, for failure messages.
    sipp: String,
    /// The gateway's stdout (summaries, totals) and stderr (the log).
    gw_out: String,
    gw_log: String,
}

impl Run {
    fn context(&self) -> String {
        format!(
            "--- gateway stdout\n{}\n--- gateway log\n{}\n--- SIPp\n{}",
            self.gw_out, self.gw_log, self.sipp
        )
    }

    /// The number after `key` in the first line containing all of `must`.
    fn number(&self, must: &[&str], key: &str) -> u64 {
        let text = format!("{}\n{}", self.gw_log, self.gw_out);
        let line = text
            .lines()
            .find(|l| must.iter().all(|m| l.contains(m)))
            .unwrap_or_else(|| panic!("no line with {must:?}\n{}", self.context()));
        let at = line
            .find(key)
            .unwrap_or_else(|| panic!("no {key:?} in {line:?}"));
        line[at + key.len()..]
            .split(|c: char| !c.is_ascii_digit())
            .find(|t| !t.is_empty())
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("no number after {key:?} in {line:?}"))
    }
}

impl Run {
    /// Both legs' last media period (in the call summary) was sendrecv and carried at least
    /// `min` packets each way; `when` names it in the failure message.
    fn assert_last_period_flows(&self, min: u64, when: &str) {
        for leg in [
            "leg A last media period (sendrecv",
            "leg B last media period (sendrecv",
        ] {
            let rx = self.number(&[leg], "): rx ");
            let tx = self.number(&[leg], " tx ");
            assert!(
                rx >= min && tx >= min,
                "{leg}: rx {rx} tx {tx} {when}\n{}",
                self.context()
            );
        }
    }

    /// `(rx, tx)` of leg `leg` in the first `media period ended` line containing `must`.
    fn period(&self, must: &[&str], leg: &str) -> (u64, u64) {
        let line = self
            .gw_log
            .lines()
            .find(|l| must.iter().all(|m| l.contains(m)))
            .unwrap_or_else(|| panic!("no line with {must:?}\n{}", self.context()));
        let part = line
            .split(&format!("leg {leg} rx "))
            .nth(1)
            .unwrap_or_else(|| panic!("no leg {leg} in {line:?}"));
        let nums: Vec<u64> = part
            .split(|c: char| !c.is_ascii_digit())
            .filter(|t| !t.is_empty())
            .take(2)
            .filter_map(|t| t.parse().ok())
            .collect();
        match nums[..] {
            [rx, tx] => (rx, tx),
            _ => panic!("no rx/tx for leg {leg} in {line:?}"),
        }
    }
}

fn kill_term(child: &Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
}

/// Waits for `child` up to `limit`, then kills it; returns whether it exited 0.
fn wait_ok(child: &mut Child, limit: Duration) -> bool {
    let end = Instant::now() + limit;
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return st.success();
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Gateway between SIPp as B (`uas`, answering on its own port) and SIPp as A (`uac`,
/// calling `b` through the gateway), one call; `uac_args` are extra SIPp arguments. Each
/// SIPp gets 30 s (`-timeout`) and the whole run stays well under 60 s.
fn sipp_call(name: &str, uas: &str, uac: &str, uac_args: &[&str], gw_args: &[&str]) -> Option<Run> {
    sipp_call_beside(name, uas, uac, uac_args, gw_args, |_| ()).map(|(run, ())| run)
}

/// [`sipp_call`], with `beside(first RTP port of the gateway's block)` called once the
/// gateway runs, before the call; what it returns (something running beside the call) is
/// handed back with the run.
fn sipp_call_beside<S>(
    name: &str,
    uas: &str,
    uac: &str,
    uac_args: &[&str],
    gw_args: &[&str],
    beside: impl FnOnce(u16) -> S,
) -> Option<(Run, S)> {
    if !have_sipp() {
        println!("SKIP: sipp (Debian package sip-tester) is not installed");
        return None;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::temp_dir().join(format!("sip_e2e_{name}_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    write_g711(&dir);
    // SIP: gateway, B, A; RTP: the gateway's block, then B's and A's rtp_stream ports.
    let base = free_ports(40);
    let (gw_sip, b_sip, a_sip) = (base, base + 2, base + 4);
    let (gw_rtp, b_rtp, a_rtp) = (base + 10, base + 30, base + 36);
    let gw_out = std::fs::File::create(dir.join("gw.out")).expect("gw.out");
    let gw_log = std::fs::File::create(dir.join("gw.log")).expect("gw.log");
    let mut gw = Command::new(gateway_binary())
        .args(["--listen", &format!("127.0.0.1:{gw_sip}")])
        .args(["--route", &format!("b=127.0.0.1:{b_sip}")])
        .args(["--rtp-ports", &format!("{gw_rtp}-{}", gw_rtp + 19)])
        .args(["--stats-interval", "60"])
        .args(gw_args)
        .stdout(gw_out)
        .stderr(gw_log)
        .spawn()
        .expect("start sip_gateway");
    let beside = beside(gw_rtp);
    let sipp = |scenario: &str, role_args: Vec<String>, log: &str| {
        let out = std::fs::File::create(dir.join(log)).expect("sipp log");
        Command::new("timeout")
            .args(["-k", "2", "40", "sipp", "-sf"])
            .arg(root.join("scripts/sipp").join(scenario))
            .args(role_args)
            .args(["-i", "127.0.0.1", "-mi", "127.0.0.1", "-m", "1", "-nostdin"])
            .args(["-timeout", "30", "-trace_err", "-trace_screen"])
            .current_dir(&dir)
            .stdout(out.try_clone().expect("log fd"))
            .stderr(out)
            .spawn()
            .expect("start sipp")
    };
    let mut b = sipp(
        uas,
        vec![
            "-p".into(),
            b_sip.to_string(),
            "-mp".into(),
            b_rtp.to_string(),
        ],
        "uas.out",
    );
    std::thread::sleep(Duration::from_millis(500));
    let mut a_args = vec![
        format!("127.0.0.1:{gw_sip}"),
        "-s".into(),
        "b".into(),
        "-p".into(),
        a_sip.to_string(),
        "-mp".into(),
        a_rtp.to_string(),
        "-timeout_error".into(),
    ];
    a_args.extend(uac_args.iter().map(|s| s.to_string()));
    let mut a = sipp(uac, a_args, "uac.out");
    let uac_ok = wait_ok(&mut a, Duration::from_secs(45));
    let uas_ok = wait_ok(&mut b, Duration::from_secs(10));
    // Let the gateway finish the BYE/ACK exchange, then stop it: it prints its state.
    std::thread::sleep(Duration::from_millis(300));
    kill_term(&gw);
    let gw_ok = wait_ok(&mut gw, Duration::from_secs(10));
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
    let mut sipp_text = String::new();
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.ends_with(".out") && n != "gw.out" || n.ends_with("errors.log") {
                sipp_text += &format!("[{n}]\n{}\n", read(&n));
            }
        }
    }
    let run = Run {
        uac_ok,
        uas_ok,
        sipp: sipp_text,
        gw_out: read("gw.out"),
        gw_log: read("gw.log"),
    };
    assert!(
        gw_ok,
        "gateway did not exit cleanly on SIGTERM\n{}",
        run.context()
    );
    let _ = std::io::stdout().flush();
    println!("{}", run.gw_out);
    let _ = std::fs::remove_dir_all(&dir);
    Some((run, beside))
}

/// The gateway ended with no call, media session or RTP port left over.
fn assert_nothing_left(run: &Run) {
    assert!(
        run.gw_out.contains(
            "GATEWAY STATE at exit: calls live 0 | media sessions 0 | RTP port pairs in use 0"
        ),
        "calls, sessions or ports left over\n{}",
        run.context()
    );
}

/// A calls, B rings (180) and never answers, A CANCELs: A gets 200 for the CANCEL and 487
/// for the INVITE (checked by SIPp on the CSeq method), B gets the gateway's CANCEL (its
/// scenario waits for it and answers 200 + 487, which the gateway ACKs), the gateway counts
/// the call cancelled, never bridged media, and holds no session or RTP port afterwards.
#[test]
#[ignore = "needs sipp; run cargo test --release --test sip_e2e -- --ignored"]
fn a_cancel_while_b_rings_is_passed_on_and_releases_everything() {
    let _one_at_a_time = serial();
    let Some(run) = sipp_call("cancel", "cancel_uas.xml", "cancel_uac.xml", &[], &[]) else {
        return;
    };
    assert!(
        run.uac_ok,
        "A: CANCEL not answered 200 + 487\n{}",
        run.context()
    );
    assert!(
        run.uas_ok,
        "B: no CANCEL or no ACK for its 487\n{}",
        run.context()
    );
    assert!(run.gw_log.contains("CANCEL from A"), "{}", run.context());
    assert!(
        !run.gw_log.contains("connected:"),
        "media was bridged\n{}",
        run.context()
    );
    assert_eq!(
        run.number(&["GATEWAY TOTALS"], "cancelled "),
        1,
        "{}",
        run.context()
    );
    assert_eq!(
        run.number(&["GATEWAY TOTALS"], "completed "),
        0,
        "{}",
        run.context()
    );
    assert_nothing_left(&run);
}

/// A puts the call on hold (re-INVITE `a=sendonly`), the gateway answers `a=recvonly`
/// (SIPp checks) and passes the hold on to B (`a=sendonly`, B answers `a=recvonly` and
/// stops sending; B's scenario checks). During the hold nothing is sent toward A while A's
/// audio still reaches B, and the quiet leg raises no quality alert; after A resumes
/// (`a=sendrecv`, passed on to B) RTP flows both ways on both legs again.
#[test]
#[ignore = "needs sipp; run cargo test --release --test sip_e2e -- --ignored"]
fn hold_from_a_is_passed_on_to_b_and_audio_flows_both_ways_after_resume() {
    let _one_at_a_time = serial();
    let Some(run) = sipp_call("hold", "hold_uas.xml", "hold_uac.xml", &[], &[]) else {
        return;
    };
    assert!(
        run.uac_ok,
        "A: hold or resume answer wrong\n{}",
        run.context()
    );
    assert!(
        run.uas_ok,
        "B: hold or resume not passed on\n{}",
        run.context()
    );
    // The hold period: from B's switch to sendonly until A's resume re-INVITE.
    let hold = [
        "media period ended",
        "re-INVITE from A",
        "our direction recvonly -> sendrecv",
    ];
    let (a_rx, a_tx) = run.period(&hold, "A");
    let (b_rx, b_tx) = run.period(&hold, "B");
    // 2 s of hold = 100 packets of 20 ms. A keeps sending (sendonly), B stops (recvonly):
    // at most a few packets in flight at the switch.
    assert!(
        a_rx >= 50,
        "A's audio stopped during hold: rx {a_rx}\n{}",
        run.context()
    );
    assert!(
        a_tx <= 3,
        "{a_tx} packets sent toward held A\n{}",
        run.context()
    );
    assert!(
        b_rx <= 5,
        "B kept sending during hold: {b_rx}\n{}",
        run.context()
    );
    assert!(
        b_tx >= 50,
        "A's audio did not reach B during hold: {b_tx}\n{}",
        run.context()
    );
    // After resume (the summary's last period, 2 s): both ways on both legs.
    run.assert_last_period_flows(50, "after resume");
    assert_eq!(
        run.number(&["GATEWAY TOTALS"], "quality alerts "),
        0,
        "{}",
        run.context()
    );
    assert_eq!(
        run.number(&["GATEWAY TOTALS"], "re-INVITEs "),
        4,
        "{}",
        run.context()
    );
    assert_nothing_left(&run);
}

/// B (the callee) re-INVITEs offering only PCMA in a PCMU call: the gateway answers PCMA
/// (SIPp checks the answer's m= line), keeps A on PCMU (A's scenario fails on any request
/// from the gateway) and transcodes; audio flows both ways on both legs afterwards and
/// every packet toward B carries a negotiated payload type.
#[test]
#[ignore = "needs sipp; run cargo test --release --test sip_e2e -- --ignored"]
fn a_codec_change_by_b_reinvite_is_absorbed_by_transcoding() {
    let _one_at_a_time = serial();
    let Some(run) = sipp_call(
        "codec",
        "codec_uas.xml",
        "call_uac.xml",
        &["-d", "6000"],
        &[],
    ) else {
        return;
    };
    assert!(run.uac_ok, "A's call failed\n{}", run.context());
    assert!(
        run.uas_ok,
        "B: re-INVITE not answered with PCMA\n{}",
        run.context()
    );
    assert!(
        run.gw_log
            .contains("re-INVITE from B: PCMU/8000 (PT 0) -> PCMA/8000 (PT 8)"),
        "{}",
        run.context()
    );
    assert!(
        run.gw_out
            .contains("A PCMU/8000 (PT 0) <-> B PCMA/8000 (PT 8) (transcoding)"),
        "{}",
        run.context()
    );
    // 4 s after the switch = 200 packets each way.
    run.assert_last_period_flows(100, "after the switch");
    let bad_b = run.number(&["  leg B PCMA"], "tx-unnegotiated-pt ");
    let bad_a = run.number(&["  leg A PCMU"], "tx-unnegotiated-pt ");
    // The lane switches codec at its next tick after the update, the I/O thread's PT list
    // within a millisecond: a packet or two of the old codec may be counted at the switch.
    assert!(
        bad_a == 0 && bad_b <= 2,
        "unnegotiated PTs sent: A {bad_a} B {bad_b}\n{}",
        run.context()
    );
    assert_eq!(
        run.number(&["GATEWAY TOTALS"], "quality alerts "),
        0,
        "{}",
        run.context()
    );
    assert_nothing_left(&run);
}

/// B answers and its media never arrives (a phone that died after answering, a NAT that
/// drops its packets): with `--media-timeout-ms 3000`, the engine's quality monitor reports
/// B's session without media 3 s in, and the gateway hangs the call up, BYE to both phones
/// (each scenario waits for it and fails without it), and releases everything. A's
/// session, which receives, does not time out.
#[test]
#[ignore = "needs sipp; run cargo test --release --test sip_e2e -- --ignored"]
fn a_leg_without_media_is_hung_up_after_the_media_timeout() {
    let _one_at_a_time = serial();
    let Some(run) = sipp_call(
        "timeout",
        "silent_uas.xml",
        "hung_up_uac.xml",
        &[],
        &["--media-timeout-ms", "3000"],
    ) else {
        return;
    };
    assert!(run.uac_ok, "A got no BYE\n{}", run.context());
    assert!(run.uas_ok, "B got no BYE\n{}", run.context());
    assert!(
        run.gw_log.contains("leg B: no media: MediaTimeout"),
        "{}",
        run.context()
    );
    assert!(
        !run.gw_log.contains("leg A: no media"),
        "A received media: {}",
        run.context()
    );
    assert_eq!(
        run.number(&["GATEWAY TOTALS"], "calls ended by a media timeout "),
        1,
        "{}",
        run.context()
    );
    assert_eq!(
        run.number(&["GATEWAY TOTALS"], "completed "),
        1,
        "{}",
        run.context()
    );
    assert_nothing_left(&run);
}

/// B's SDP names a port its RTP does not come from (a phone behind a NAT): the gateway
/// latches leg B on to the RTP's source once B's first packet arrives (symmetric RTP) and
/// sends there; A's SDP is right, so leg A never latches. Both legs send RTCP reports.
#[test]
#[ignore = "needs sipp; run cargo test --release --test sip_e2e -- --ignored"]
fn a_leg_whose_sdp_address_is_not_its_source_is_latched_on_to_its_rtp() {
    let _one_at_a_time = serial();
    let Some(run) = sipp_call(
        "latch",
        "latch_uas.xml",
        "call_uac.xml",
        &["-d", "7000"],
        &[],
    ) else {
        return;
    };
    assert!(run.uac_ok, "A's call failed\n{}", run.context());
    assert!(run.uas_ok, "B's call failed\n{}", run.context());
    assert!(
        run.gw_log.contains("latched on 127.0.0.1:"),
        "{}",
        run.context()
    );
    assert_eq!(
        run.number(&["  leg B PCMU"], "latched "),
        1,
        "{}",
        run.context()
    );
    assert_eq!(
        run.number(&["  leg A PCMU"], "latched "),
        0,
        "{}",
        run.context()
    );
    for leg in ["  leg A PCMU", "  leg B PCMU"] {
        assert_eq!(run.number(&[leg], "send-err "), 0, "{}", run.context());
        // 7 s of call, a report every 5 s (the BYE goes after the summary).
        assert!(
            run.number(&[leg], " out ") >= 1,
            "{leg}: no RTCP sent\n{}",
            run.context()
        );
    }
    // After the latch every packet toward B went to its real port: audio flowed both ways.
    run.assert_last_period_flows(100, "after the latch");
    assert_nothing_left(&run);
}

/// A calls with a delayed offer (an INVITE without SDP, RFC 3261 §13.2.1): the gateway
/// offers B every codec it runs, offers A in its 2xx with B's answered codec first though
/// the gateway prefers another (SIPp checks), takes A's answer from the ACK and bridges the
/// call then, relaying; audio flows both ways.
#[test]
#[ignore = "needs sipp; run cargo test --release --test sip_e2e -- --ignored"]
fn a_delayed_offer_is_offered_in_the_2xx_and_answered_in_the_ack() {
    let _one_at_a_time = serial();
    let Some(run) = sipp_call(
        "delayed",
        "answer_uas.xml",
        "delayed_uac.xml",
        &["-d", "5000"],
        // G.722 preferred: B's PCMU must still come first in the offer to A.
        &["--codecs", "g722,pcmu"],
    ) else {
        return;
    };
    assert!(
        run.uac_ok,
        "A: no offer with PCMU first in the 2xx\n{}",
        run.context()
    );
    assert!(run.uas_ok, "B's call failed\n{}", run.context());
    assert!(
        run.gw_log.contains("A offers [none: a delayed offer]"),
        "{}",
        run.context()
    );
    assert!(run.gw_log.contains("(delayed offer)"), "{}", run.context());
    assert!(
        run.gw_out
            .contains("A PCMU/8000 (PT 0) <-> B PCMU/8000 (PT 0) (pass-through)"),
        "{}",
        run.context()
    );
    run.assert_last_period_flows(100, "after the ACK's answer");
    assert_nothing_left(&run);
}

/// A refreshes the session with a re-INVITE without SDP (RFC 4028 session timers): the
/// gateway answers 200 with an offer of the call's media as it is (SIPp checks PCMU, and
/// the video line A offered and the gateway refused, still there with port 0),
/// takes A's answer from the ACK, and audio goes on both ways. (It answered 488, and a
/// refreshing phone ends the call when its session timer runs out.)
#[test]
#[ignore = "needs sipp; run cargo test --release --test sip_e2e -- --ignored"]
fn a_reinvite_without_an_offer_is_offered_the_media_as_it_is() {
    let _one_at_a_time = serial();
    let Some(run) = sipp_call("refresh", "answer_uas.xml", "refresh_uac.xml", &[], &[]) else {
        return;
    };
    assert!(
        run.uac_ok,
        "A: no 200 with an offer to its refresh\n{}",
        run.context()
    );
    assert!(run.uas_ok, "B's call failed\n{}", run.context());
    assert!(
        run.gw_log
            .contains("re-INVITE from A without an offer: offering its media as it is"),
        "{}",
        run.context()
    );
    assert!(
        run.gw_log.contains("switched by the answer in its ACK"),
        "{}",
        run.context()
    );
    // The last period starts at the ACK's answer: 2 s, 100 packets each way.
    run.assert_last_period_flows(60, "after the refresh");
    assert_nothing_left(&run);
}

/// A stranger on another address (127.0.0.2) spraying the gateway's whole RTP port block
/// with PCMU and RTCP BYEs every 20 ms, from before the call until after it.
struct Stranger {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<(u64, u64)>,
}

impl Stranger {
    fn start(gw_rtp: u16) -> Stranger {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let sock = std::net::UdpSocket::bind("127.0.0.2:0").expect("bind 127.0.0.2");
            sock.set_nonblocking(true).expect("nonblocking");
            let mut rtp = vec![0x80u8, 0, 0, 0, 0, 0, 0, 0, 0x5E, 0xED, 0xBE, 0xEF];
            rtp.extend([0x55u8; 160]);
            let bye = [0x81u8, 203, 0, 1, 0x5E, 0xED, 0xBE, 0xEF];
            let (mut sent, mut received, mut seq) = (0u64, 0u64, 0u16);
            let mut buf = [0u8; 2048];
            while !flag.load(Ordering::Relaxed) {
                seq = seq.wrapping_add(1);
                rtp[2..4].copy_from_slice(&seq.to_be_bytes());
                rtp[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
                for port in gw_rtp..gw_rtp + 20 {
                    for d in [&rtp[..], &bye[..]] {
                        if sock.send_to(d, ("127.0.0.1", port)).is_ok() {
                            sent += 1;
                        }
                    }
                }
                while sock.recv_from(&mut buf).is_ok() {
                    received += 1;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (sent, received)
        });
        Stranger { stop, thread }
    }

    /// Stops it: (datagrams sent, datagrams it received back).
    fn stop(self) -> (u64, u64) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().expect("stranger thread")
    }
}

/// A stranger on another IP sprays RTP and RTCP BYEs at the gateway's whole RTP port block
/// through a call whose B is behind a NAT (its SDP port is not its RTP's) and silent for
/// the first 1.5 s, while its leg has heard nobody and would latch on to a source from
/// B's IP: the stranger takes over neither leg (no latch on it, nothing sent to it), its
/// packets are dropped and counted on both legs, its BYEs end nothing, B's leg latches on
/// to B's RTP when it comes, and audio flows both ways to the real phones.
#[test]
#[ignore = "needs sipp; run cargo test --release --test sip_e2e -- --ignored"]
fn a_stranger_spraying_the_rtp_ports_takes_over_nothing() {
    let _one_at_a_time = serial();
    let Some((run, stranger)) = sipp_call_beside(
        "stranger",
        "slow_latch_uas.xml",
        "call_uac.xml",
        &["-d", "7000"],
        &[],
        Stranger::start,
    ) else {
        return;
    };
    let (sent, received) = stranger.stop();
    assert!(run.uac_ok, "A's call failed\n{}", run.context());
    assert!(run.uas_ok, "B's call failed\n{}", run.context());
    assert!(sent > 1000, "the stranger sent only {sent}");
    assert_eq!(
        received,
        0,
        "the gateway sent to the stranger\n{}",
        run.context()
    );
    assert!(
        !run.gw_log.contains("latched on 127.0.0.2"),
        "{}",
        run.context()
    );
    assert!(
        run.gw_log.contains("latched on 127.0.0.1:"),
        "B's RTP not latched on to\n{}",
        run.context()
    );
    for (leg, latched) in [("  leg A PCMU", 0), ("  leg B PCMU", 1)] {
        assert_eq!(run.number(&[leg], "latched "), latched, "{}", run.context());
        assert!(
            run.number(&[leg], "foreign-src ") >= 100,
            "{leg}: the stranger's RTP not dropped as foreign\n{}",
            run.context()
        );
        assert!(
            run.number(&[leg], " foreign ") >= 100,
            "{leg}: the stranger's RTCP not dropped as foreign\n{}",
            run.context()
        );
        assert_eq!(run.number(&[leg], "send-err "), 0, "{}", run.context());
    }
    run.assert_last_period_flows(200, "with a stranger spraying the ports");
    assert_nothing_left(&run);
}
