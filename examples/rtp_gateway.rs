//! A real RTP gateway: one media-core gateway call bridging two UDP legs, with RTCP.
//!
//! ```sh
//! cargo run --release --example rtp_gateway -- \
//!     --a-listen 127.0.0.1:40000 [--a-peer ADDR] --a-codec pcmu \
//!     --b-listen 127.0.0.1:40010 [--b-peer ADDR] --b-codec opus \
//!     [--ptime 20] [--dtmf 101] [--cn 13 [--dtx]] [--vad --agc --ns --aec] [--stats-interval 5]
//!     [--seconds S] [-v]
//!     [--metrics-file PATH]   (Prometheus text format, rewritten every stats interval)
//! ```
//!
//! Codecs: `pcmu`, `pcma`, `g722`, `opus` (payload types 0, 8, 9, 111). A leg without
//! `--x-peer` learns its peer from the first RTP packet it receives (symmetric RTP), which
//! is what receivers such as ffmpeg need. RTCP listens and sends on the RTP port + 1. With
//! `--dtmf PT`, both legs negotiate RFC 4733 telephone events on PT, and digits received on
//! one leg are sent as telephone events on the other. With `--cn PT`, both legs negotiate
//! RFC 3389 comfort noise on PT: SID frames received set the comfort noise played through
//! the sender's silence, and with `--dtx` (and `--vad`) each leg sends SID frames instead
//! of audio through the silences the other leg's voice-activity detector finds. `--vad --agc --ns` turn on voice
//! processing of the audio each leg receives, and `--aec` an echo canceller on each leg (a
//! 128 ms tail, the audio sent to the leg's peer as its reference), whose ERLE over its last
//! second of far-end speech the statistics then print.
//!
//! Prints both legs' statistics every `--stats-interval` seconds and a summary on exit
//! (Ctrl-C or after `--seconds`). The UDP/RTP/RTCP I/O lives in `common/udp_media.rs`.

#[path = "common/rtcp_leg.rs"]
mod rtcp_leg;
#[path = "common/udp_media.rs"]
mod udp_media;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use media_core::engine::EngineEvent;
use media_core::processing::audio::DspConfig;
use media_core::runtime::msg::DtmfSource;
use media_core::{
    CodecSpec, DialogId, EngineConfig, MediaEngine, MediaSessionParams, PayloadType, Ptime,
    SessionId,
};
use udp_media::{LaneIo, LegConfig, LegCounters};

type BoxError = Box<dyn std::error::Error>;

struct Args {
    a_listen: SocketAddr,
    a_peer: Option<SocketAddr>,
    a_codec: CodecSpec,
    b_listen: SocketAddr,
    b_peer: Option<SocketAddr>,
    b_codec: CodecSpec,
    ptime: Ptime,
    dtmf: Option<PayloadType>,
    /// RFC 3389 comfort noise negotiated on both legs on this payload type (`--cn PT`).
    cn: Option<PayloadType>,
    /// Discontinuous transmission toward both peers (`--dtx`, needs `--cn` and `--vad`).
    dtx: bool,
    dsp: DspConfig,
    stats_interval: Duration,
    seconds: Option<f64>,
    verbose: bool,
    /// Write the engine's metrics (Prometheus text format) here every stats interval.
    metrics_file: Option<std::path::PathBuf>,
}

const USAGE: &str = "usage: rtp_gateway --a-listen ADDR [--a-peer ADDR] --a-codec C \
--b-listen ADDR [--b-peer ADDR] --b-codec C [--ptime MS] [--dtmf PT] [--cn PT [--dtx]] [--vad] [--agc] [--ns] [--aec] \
[--stats-interval S] [--metrics-file PATH] [--seconds S] [-v]   (C: pcmu, pcma, g722, opus)";

fn codec(name: &str) -> Result<CodecSpec, BoxError> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "pcmu" => CodecSpec::PCMU,
        "pcma" => CodecSpec::PCMA,
        "g722" => CodecSpec::G722,
        "opus" => CodecSpec::OPUS,
        other => return Err(format!("unknown codec {other:?} (pcmu, pcma, g722, opus)").into()),
    })
}

fn parse_args() -> Result<Args, BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let has = |f: &str| args.iter().any(|a| a == f);
    let opt = |f: &str| -> Result<Option<&str>, BoxError> {
        match args.iter().position(|a| a == f) {
            None => Ok(None),
            Some(i) => match args.get(i + 1) {
                Some(v) => Ok(Some(v.as_str())),
                None => Err(format!("{f} needs a value").into()),
            },
        }
    };
    let req = |f: &str| -> Result<&str, BoxError> {
        opt(f)?.ok_or_else(|| format!("{f} is required\n{USAGE}").into())
    };
    if has("-h") || has("--help") {
        println!("{USAGE}");
        std::process::exit(0);
    }
    let addr = |s: &str| -> Result<SocketAddr, BoxError> {
        s.parse()
            .map_err(|e| format!("bad address {s:?}: {e}").into())
    };
    let ptime_ms: u32 = opt("--ptime")?.map_or(Ok(20), str::parse)?;
    let ptime = Ptime::from_ms(ptime_ms).ok_or("--ptime must be 10, 20, 30, 40 or 60")?;
    let dtmf = match opt("--dtmf")? {
        None => None,
        Some(v) => Some(PayloadType::new(v.parse()?).ok_or("--dtmf payload type must be 0..=127")?),
    };
    let cn = match opt("--cn")? {
        None => None,
        Some(v) => Some(PayloadType::new(v.parse()?).ok_or("--cn payload type must be 0..=127")?),
    };
    if has("--dtx") && !(cn.is_some() && has("--vad")) {
        return Err("--dtx needs --cn PT (the SID frames' payload type) and --vad".into());
    }
    let stats_s: f64 = opt("--stats-interval")?.map_or(Ok(5.0), str::parse)?;
    if !(stats_s.is_finite() && stats_s > 0.0) {
        return Err("--stats-interval must be positive".into());
    }
    let seconds = opt("--seconds")?.map(str::parse::<f64>).transpose()?;
    Ok(Args {
        a_listen: addr(req("--a-listen")?)?,
        a_peer: opt("--a-peer")?.map(addr).transpose()?,
        a_codec: codec(req("--a-codec")?)?,
        b_listen: addr(req("--b-listen")?)?,
        b_peer: opt("--b-peer")?.map(addr).transpose()?,
        b_codec: codec(req("--b-codec")?)?,
        ptime,
        dtmf,
        cn,
        dtx: has("--dtx"),
        dsp: DspConfig {
            vad: has("--vad").then(Default::default),
            agc: has("--agc").then(Default::default),
            ns: has("--ns").then(Default::default),
            aec: has("--aec").then(Default::default),
            ..Default::default()
        },
        stats_interval: Duration::from_secs_f64(stats_s),
        seconds,
        verbose: has("-v") || has("--verbose"),
        metrics_file: opt("--metrics-file")?.map(std::path::PathBuf::from),
    })
}

fn params(args: &Args, codec: CodecSpec, ssrc: u32) -> MediaSessionParams {
    let mut p = MediaSessionParams::new(codec, args.ptime);
    // Chosen here rather than by the engine so RTCP can name it before the first packet.
    p.tx_ssrc = Some(ssrc);
    p.telephone_event_pt = args.dtmf;
    p.telephone_event_send_pt = args.dtmf;
    p.comfort_noise_pt = args.cn;
    p.comfort_noise_send_pt = args.cn;
    // DTX is not for Opus legs, which have their own (`opus.dtx`).
    p.dtx = args.dtx && codec.codec != media_core::Codec::Opus;
    p.dsp = args.dsp;
    p
}

/// Set by SIGINT; the main loop polls it.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

fn install_sigint() {
    let handler: extern "C" fn(libc::c_int) = on_sigint;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe; the cast
    // to sighandler_t is how libc's `signal` takes a function pointer.
    unsafe {
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
    }
}

struct LegView<'a> {
    name: &'static str,
    id: SessionId,
    codec: CodecSpec,
    io: &'a LegCounters,
}

fn print_leg(engine: &MediaEngine, l: &LegView<'_>, digits: &str) {
    let c = l.io;
    let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let q = engine.session_quality(l.id).unwrap_or_default();
    let rtt_us = get(&c.peer.rtt_us);
    let st = engine.session_stats(l.id).unwrap_or_default();
    println!(
        "  leg {} ({:?}): in {} pkts ({} B), out {} pkts ({} B) | rx loss {:.2}% ({} lost, {} late), jitter {:.1} ms, concealed {}/{} frames, jb {} ms, tsm -{}/+{} samples, MOS {} | rtt {} | peer says lost {:.1}% | drops: not-rtp {} ingress {} no-peer {} rtcp in/bad/out {}/{}/{}{}",
        l.name,
        l.codec.codec,
        get(&c.rtp_in),
        get(&c.bytes_in),
        get(&c.rtp_out),
        get(&c.bytes_out),
        q.loss_percent,
        q.packets_lost,
        q.late_discards,
        q.jitter_ms,
        q.frames_concealed,
        q.frames_played,
        q.jb_current_ms,
        st.samples_accelerated,
        st.samples_expanded,
        // The E-model rates a session that received nothing as perfect: say so instead.
        if q.packets_received == 0 {
            "n/a".to_string()
        } else {
            format!("{:.2}", q.mos)
        },
        if rtt_us == 0 {
            "n/a".to_string()
        } else {
            format!("{:.1} ms", rtt_us as f64 / 1000.0)
        },
        get(&c.peer.fraction_lost) as f64 * 100.0 / 256.0,
        get(&c.not_rtp),
        get(&c.ingress_drops),
        get(&c.no_peer_drops),
        get(&c.rtcp_in),
        get(&c.rtcp_bad),
        get(&c.rtcp_out),
        if digits.is_empty() {
            String::new()
        } else {
            format!(" | DTMF received: {digits}")
        }
    );
    if let Some(erle) = q.echo_erle_db {
        println!("    echo canceller: ERLE {erle:.1} dB over its last second of far-end speech");
    }
}

fn main() -> Result<(), BoxError> {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    udp_media::init_logger(if args.verbose {
        log::LevelFilter::Debug
    } else {
        log::LevelFilter::Info
    });
    install_sigint();

    let engine = Arc::new(MediaEngine::new(EngineConfig {
        lanes: 1,
        sessions_per_lane: 8,
        ..Default::default()
    })?);
    let (ingress, egress) = engine
        .take_rtp_handles(0)
        .ok_or("lane 0 transport handles already taken")?;
    engine.start()?;
    // RFC 3550 §8.1: SSRCs chosen at random (clock and pid mixed; not for security).
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        ^ (u64::from(std::process::id()) << 20);
    let ssrc_a = (seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as u32;
    let ssrc_b = ssrc_a ^ 0x5A5A_A5A5;
    let (a, b) = engine.create_call(
        (DialogId(1), params(&args, args.a_codec, ssrc_a)),
        (DialogId(2), params(&args, args.b_codec, ssrc_b)),
    )?;
    let leg = |name: &str, id: SessionId, listen, peer, codec: CodecSpec, ssrc| {
        let mut latch_pts = vec![codec.payload_type.get()];
        latch_pts.extend(args.dtmf.map(|p| p.get()));
        LegConfig {
            name: name.to_string(),
            session: id,
            listen,
            peer,
            clock_rate_hz: codec.codec.info().clock_rate_hz,
            latch_pts,
            event_pt: args.dtmf.map(|p| p.get()),
            cname: format!("rtp_gateway-{}@{listen}", std::process::id()),
            ssrc: Some(ssrc),
        }
    };
    let io = LaneIo::spawn(
        engine.clone(),
        ingress,
        egress,
        vec![
            leg("A", a.id, args.a_listen, args.a_peer, args.a_codec, ssrc_a),
            leg("B", b.id, args.b_listen, args.b_peer, args.b_codec, ssrc_b),
        ],
        args.stats_interval,
    )?;
    log::info!(
        "gateway up: A {} {:?} <-> B {} {:?}, ptime {} ms, dtmf {:?}",
        args.a_listen,
        args.a_codec.codec,
        args.b_listen,
        args.b_codec.codec,
        args.ptime.ms(),
        args.dtmf.map(|p| p.get())
    );

    let start = Instant::now();
    let deadline = args
        .seconds
        .map(|s| start + Duration::from_secs_f64(s.max(0.0)));
    let mut next_stats = start + args.stats_interval;
    // Digits per receiving session, in order, on their end events.
    let mut digits: BTreeMap<SessionId, String> = BTreeMap::new();
    let counters = io.counters.clone();
    let views = [
        LegView {
            name: "A",
            id: a.id,
            codec: args.a_codec,
            io: &counters[0],
        },
        LegView {
            name: "B",
            id: b.id,
            codec: args.b_codec,
            io: &counters[1],
        },
    ];
    loop {
        for ev in engine.events() {
            match ev {
                EngineEvent::Dtmf {
                    session,
                    digit,
                    source,
                    ended_ms: Some(ms),
                } => {
                    let leg = if session == a.id { "A" } else { "B" };
                    let how = match source {
                        DtmfSource::Rfc4733 => "RFC 4733",
                        DtmfSource::InBand => "in-band",
                    };
                    log::info!("leg {leg}: DTMF '{digit}' ({how}, {ms} ms)");
                    digits.entry(session).or_default().push(digit);
                }
                EngineEvent::Dtmf { .. }
                | EngineEvent::SessionStarted(_)
                | EngineEvent::Talkspurt { .. } => {}
                other => log::warn!("engine: {other:?}"),
            }
        }
        let now = Instant::now();
        if INTERRUPTED.load(Ordering::Relaxed) || deadline.is_some_and(|d| now >= d) {
            break;
        }
        if now >= next_stats {
            next_stats += args.stats_interval;
            println!("[{:.1} s]", start.elapsed().as_secs_f64());
            for v in &views {
                print_leg(&engine, v, digits.get(&v.id).map_or("", String::as_str));
            }
            if let Some(path) = &args.metrics_file {
                // Written whole then renamed, so a scraper (e.g. node_exporter's textfile
                // collector) never reads half a file.
                let text =
                    engine.render_prometheus(media_core::PrometheusOptions { per_session: true });
                let tmp = path.with_extension("tmp");
                if let Err(e) =
                    std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, path))
                {
                    log::warn!("metrics file {}: {e}", path.display());
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    io.stop();
    println!("summary after {:.1} s:", start.elapsed().as_secs_f64());
    for v in &views {
        print_leg(&engine, v, digits.get(&v.id).map_or("", String::as_str));
    }
    let lane = engine.lane_stats(0).unwrap_or_default();
    println!(
        "  lane: {} ticks, overruns {}, malformed {}, unknown-session {}, ingress-full {}, too-large {}, rate-limited {}",
        lane.ticks,
        lane.deadline_overruns,
        lane.malformed,
        lane.unknown_session + lane.ingress_unknown,
        lane.ingress_full,
        lane.ingress_too_large,
        lane.ingress_rate_limited
    );
    let all: String = [a.id, b.id]
        .iter()
        .map(|id| digits.get(id).map_or("", String::as_str))
        .collect::<Vec<_>>()
        .join("");
    println!(
        "  DTMF digits: {}",
        if all.is_empty() { "none" } else { &all }
    );
    engine.destroy_media_session(a.id)?;
    engine.destroy_media_session(b.id)?;
    engine.flush(Duration::from_secs(1))?;
    engine.stop()?;
    Ok(())
}
