//! Writes a delivery trace (`send_index,arrival_ms,ssrc,marker`) from the seeded network
//! impairment model in `media_core::quality::impairment`, for tests and the file pipeline.
//!
//! ```text
//! cargo run --example make_trace -- OUT.csv --packets N [--loss PCT] [--burst MEAN]
//!     [--jitter normal|pareto|uniform] [--jitter-ms MS] [--pareto-shape K]
//!     [--base-delay-ms MS] [--reorder PCT] [--dup PCT] [--drift-ppm P] [--seed S]
//!     [--ptime-ms MS] [--ssrc N] [--ssrc-change INDEX:SSRC]... [--outage START_MS:DUR_MS]...
//!     [--stall AT_MS:N]...
//! ```
//!
//! `--loss` alone is i.i.d. loss; with `--burst` it is a Gilbert model with that mean
//! loss-burst length in packets. `--jitter-ms` is the standard deviation (normal, mean 0),
//! the scale (pareto, shape `--pareto-shape`, default 2.5) or the maximum (uniform) of the
//! delay added to `--base-delay-ms` (default 40). `tests/data/traces/README.md` lists the
//! commands that made the committed traces.

use std::error::Error;
use std::process::ExitCode;
use std::str::FromStr;

use media_core::quality::impairment::{
    simulate, write_trace, Delivery, ImpairmentConfig, JitterModel, LossModel,
};

const USAGE: &str = "usage: make_trace OUT.csv --packets N [--loss PCT] [--burst MEAN] \
[--jitter normal|pareto|uniform] [--jitter-ms MS] [--pareto-shape K] [--base-delay-ms MS] \
[--reorder PCT] [--dup PCT] [--drift-ppm P] [--seed S] [--ptime-ms MS] [--ssrc N] \
[--ssrc-change INDEX:SSRC]... [--outage START_MS:DUR_MS]... [--stall AT_MS:N]...";

struct Args {
    out: String,
    packets: usize,
    ptime_ms: f64,
    ssrc: u32,
    cfg: ImpairmentConfig,
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("make_trace: {e}\n{USAGE}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn Error>> {
    let args = parse(std::env::args().skip(1).filter(|a| a != "--"))?;
    let deliveries = simulate(&args.cfg, args.packets, args.ptime_ms, args.ssrc);
    std::fs::write(&args.out, write_trace(&deliveries))?;
    print_summary(&args, &deliveries);
    Ok(())
}

fn parse(mut it: impl Iterator<Item = String>) -> Result<Args, Box<dyn Error>> {
    let mut out = None;
    let mut packets = None;
    let mut loss_pct = None;
    let mut burst = None;
    let mut jitter_kind = String::from("normal");
    let mut jitter_ms = 0.0;
    let mut pareto_shape = 2.5;
    let mut ptime_ms = 20.0;
    let mut ssrc = 0x5EED_0001;
    let mut cfg = ImpairmentConfig {
        base_delay_ms: 40.0,
        ..Default::default()
    };
    while let Some(arg) = it.next() {
        if !arg.starts_with("--") {
            if out.replace(arg).is_some() {
                return Err("more than one output file".into());
            }
            continue;
        }
        let value = it.next().ok_or_else(|| format!("{arg} needs a value"))?;
        match arg.as_str() {
            "--packets" => packets = Some(num(&arg, &value)?),
            "--loss" => loss_pct = Some(num::<f64>(&arg, &value)?),
            "--burst" => burst = Some(num::<f64>(&arg, &value)?),
            "--jitter" => jitter_kind = value,
            "--jitter-ms" => jitter_ms = num(&arg, &value)?,
            "--pareto-shape" => pareto_shape = num(&arg, &value)?,
            "--base-delay-ms" => cfg.base_delay_ms = num(&arg, &value)?,
            "--reorder" => cfg.reorder_percent = num(&arg, &value)?,
            "--dup" => cfg.duplicate_percent = num(&arg, &value)?,
            "--drift-ppm" => cfg.drift_ppm = num(&arg, &value)?,
            "--seed" => cfg.seed = num(&arg, &value)?,
            "--ptime-ms" => ptime_ms = num(&arg, &value)?,
            "--ssrc" => ssrc = num(&arg, &value)?,
            "--ssrc-change" => cfg.ssrc_changes.push(pair(&arg, &value)?),
            "--outage" => cfg.outages.push(pair(&arg, &value)?),
            "--stall" => cfg.bursts.push(pair(&arg, &value)?),
            _ => return Err(format!("unknown option {arg}").into()),
        }
    }
    cfg.loss = match (loss_pct, burst) {
        (None | Some(0.0), None) => LossModel::None,
        (Some(percent), None) => LossModel::Iid { percent },
        (loss, Some(mean_burst)) => {
            LossModel::gilbert_elliott_from_mean(loss.unwrap_or(0.0), mean_burst)?
        }
    };
    cfg.jitter = match jitter_kind.as_str() {
        "normal" => JitterModel::Normal {
            mean_ms: 0.0,
            std_ms: jitter_ms,
        },
        "pareto" => JitterModel::Pareto {
            scale_ms: jitter_ms,
            shape: pareto_shape,
        },
        "uniform" => JitterModel::Uniform { max_ms: jitter_ms },
        other => return Err(format!("unknown jitter model {other:?}").into()),
    };
    if jitter_ms == 0.0 {
        cfg.jitter = JitterModel::None;
    }
    Ok(Args {
        out: out.ok_or("no output file given")?,
        packets: packets.ok_or("--packets is required")?,
        ptime_ms,
        ssrc,
        cfg,
    })
}

fn num<T: FromStr>(arg: &str, value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("bad value for {arg}: {value:?}"))
}

fn pair<A: FromStr, B: FromStr>(arg: &str, value: &str) -> Result<(A, B), String> {
    let (a, b) = value
        .split_once(':')
        .ok_or_else(|| format!("{arg} takes A:B, got {value:?}"))?;
    Ok((num(arg, a)?, num(arg, b)?))
}

fn print_summary(args: &Args, d: &[Delivery]) {
    let mut copies = vec![0u32; args.packets];
    let mut reordered = 0;
    let mut max_index = None;
    for p in d {
        copies[p.send_index] += 1;
        match max_index {
            Some(m) if p.send_index < m => reordered += 1,
            _ => max_index = Some(p.send_index),
        }
    }
    let lost = copies.iter().filter(|&&c| c == 0).count();
    let duplicated = copies.iter().filter(|&&c| c > 1).count();
    let delays: Vec<f64> = d.iter().map(|p| p.arrival_ms - p.send_ms).collect();
    let mean = delays.iter().sum::<f64>() / delays.len().max(1) as f64;
    let max = delays.iter().copied().fold(0.0, f64::max);
    println!(
        "{}: {} packets sent, {} rows; lost {} ({:.2} %), duplicated {}, reordered {}; \
         one-way delay mean {:.1} ms, max {:.1} ms",
        args.out,
        args.packets,
        d.len(),
        lost,
        100.0 * lost as f64 / args.packets.max(1) as f64,
        duplicated,
        reordered,
        mean,
        max
    );
}
