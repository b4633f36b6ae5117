//! A seeded network impairment model for tests, simulations and the file pipeline.
//!
//! [`simulate`] turns a stream of packets sent every `ptime_ms` into the deliveries a
//! receiver would see after loss (i.i.d. or Gilbert–Elliott bursts), delay jitter (normal,
//! heavy-tailed or uniform), extra reordering, duplication, sender clock drift, SSRC
//! changes, outages and link stalls. [`write_trace`] and [`read_trace`] store such a
//! delivery list as a small CSV file, so a recorded or generated network condition can be
//! replayed (`tests/data/traces/`, `examples/make_trace.rs`).
//!
//! This is control-plane / test code: it allocates freely and is never called on a lane
//! thread. It is deterministic: the same [`ImpairmentConfig`] (seed included) always gives
//! the same deliveries, on every platform, with no external random number crate.
//!
//! Each impairment draws from its own random stream derived from the seed, and draws the
//! same amount for every packet whether or not the impairment applies to it. So turning
//! loss on does not change the delay of the packets that survive, and adding duplicates
//! does not move the losses: scenarios differ only in what was changed.
//!
//! ```
//! use media_core::quality::impairment::{simulate, ImpairmentConfig, JitterModel, LossModel};
//!
//! let cfg = ImpairmentConfig {
//!     seed: 7,
//!     loss: LossModel::gilbert_elliott_from_mean(3.0, 3.0)?,
//!     jitter: JitterModel::Normal { mean_ms: 0.0, std_ms: 30.0 },
//!     base_delay_ms: 100.0,
//!     ..Default::default()
//! };
//! let deliveries = simulate(&cfg, 1500, 20.0, 0x1234);
//! assert!(deliveries.len() < 1500); // some were lost
//! assert!(deliveries.windows(2).all(|w| w[0].arrival_ms <= w[1].arrival_ms));
//! # Ok::<(), media_core::quality::impairment::InvalidParameter>(())
//! ```

use std::fmt;

/// How packets are lost (besides outages, which are always total).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum LossModel {
    /// No random loss.
    #[default]
    None,
    /// Every packet is lost independently with probability `percent / 100`.
    Iid {
        /// Loss probability in percent (0–100).
        percent: f64,
    },
    /// The Gilbert–Elliott two-state Markov chain: a good and a bad state, each with its
    /// own loss probability, and a transition after every packet. Losses come in bursts
    /// whose mean length (with `loss_in_bad = 1`, `loss_in_good = 0`) is
    /// `1 / p_bad_to_good` packets. All four fields are probabilities in 0–1.
    /// The chain starts in a state drawn from its stationary distribution, so the
    /// expected loss is the same from the first packet on.
    GilbertElliott {
        /// Probability of moving from the good to the bad state after a packet.
        p_good_to_bad: f64,
        /// Probability of moving from the bad to the good state after a packet.
        p_bad_to_good: f64,
        /// Probability that a packet sent in the good state is lost.
        loss_in_good: f64,
        /// Probability that a packet sent in the bad state is lost.
        loss_in_bad: f64,
    },
}

/// A parameter given to a model constructor is out of its range. Recover: fix the
/// parameter; nothing was built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid impairment parameter `{name}`: {reason}")]
pub struct InvalidParameter {
    /// The parameter concerned.
    pub name: &'static str,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl LossModel {
    /// The simple Gilbert model (every packet lost in the bad state, none in the good
    /// state) with a given long-run loss and mean loss-burst length:
    /// `p_bad_to_good = 1 / mean_burst_packets` and
    /// `p_good_to_bad = loss · p_bad_to_good / (1 − loss)`.
    ///
    /// Fails when `loss_percent` is outside 0–100 (100 excluded), when
    /// `mean_burst_packets < 1`, or when the pair is unreachable (a high loss with short
    /// bursts needs `p_good_to_bad > 1`: the loss fraction over its complement must not
    /// exceed the mean burst length).
    ///
    /// ```
    /// use media_core::quality::impairment::LossModel;
    /// let m = LossModel::gilbert_elliott_from_mean(5.0, 4.0)?;
    /// assert!((m.expected_loss_percent() - 5.0).abs() < 1e-9);
    /// assert!(LossModel::gilbert_elliott_from_mean(80.0, 1.0).is_err());
    /// # Ok::<(), media_core::quality::impairment::InvalidParameter>(())
    /// ```
    pub fn gilbert_elliott_from_mean(
        loss_percent: f64,
        mean_burst_packets: f64,
    ) -> Result<Self, InvalidParameter> {
        if !(0.0..100.0).contains(&loss_percent) {
            return Err(InvalidParameter {
                name: "loss_percent",
                reason: "must be at least 0 and below 100",
            });
        }
        if !(mean_burst_packets >= 1.0 && mean_burst_packets.is_finite()) {
            return Err(InvalidParameter {
                name: "mean_burst_packets",
                reason: "must be a finite number of at least 1",
            });
        }
        let loss = loss_percent / 100.0;
        let p_bad_to_good = 1.0 / mean_burst_packets;
        let p_good_to_bad = loss * p_bad_to_good / (1.0 - loss);
        if p_good_to_bad > 1.0 {
            return Err(InvalidParameter {
                name: "loss_percent",
                reason: "too high for this mean burst length (needs p_good_to_bad > 1)",
            });
        }
        Ok(LossModel::GilbertElliott {
            p_good_to_bad,
            p_bad_to_good,
            loss_in_good: 0.0,
            loss_in_bad: 1.0,
        })
    }

    /// The long-run loss of this model in percent (outages not included).
    pub fn expected_loss_percent(&self) -> f64 {
        match *self {
            LossModel::None => 0.0,
            LossModel::Iid { percent } => percent.clamp(0.0, 100.0),
            LossModel::GilbertElliott {
                p_good_to_bad,
                p_bad_to_good,
                loss_in_good,
                loss_in_bad,
            } => {
                100.0 * {
                    let pi_bad = stationary_bad(p_good_to_bad, p_bad_to_good);
                    (1.0 - pi_bad) * loss_in_good.clamp(0.0, 1.0)
                        + pi_bad * loss_in_bad.clamp(0.0, 1.0)
                }
            }
        }
    }
}

/// The stationary probability of the bad state; a chain that never moves stays good.
fn stationary_bad(p_good_to_bad: f64, p_bad_to_good: f64) -> f64 {
    let g = p_good_to_bad.clamp(0.0, 1.0);
    let b = p_bad_to_good.clamp(0.0, 1.0);
    if g + b > 0.0 {
        g / (g + b)
    } else {
        0.0
    }
}

/// The random part of each packet's one-way delay, added to
/// [`ImpairmentConfig::base_delay_ms`]. The total delay is clamped at zero, so keep
/// `base_delay_ms` a few deviations above any negative excursion to keep the
/// distribution's shape.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum JitterModel {
    /// No jitter: every packet takes exactly the base delay.
    #[default]
    None,
    /// Normally distributed extra delay.
    Normal {
        /// Mean of the extra delay.
        mean_ms: f64,
        /// Standard deviation of the extra delay.
        std_ms: f64,
    },
    /// Heavy-tailed extra delay: a Pareto distribution shifted to start at zero (Lomax),
    /// `P(extra > x) = (1 + x / scale_ms)^(−shape)`. Its mean is `scale_ms / (shape − 1)`
    /// for `shape > 1` and its variance is finite only for `shape > 2`; smaller shapes
    /// give rarer but longer delay spikes (Wi-Fi retransmissions, bufferbloat).
    Pareto {
        /// Scale of the tail.
        scale_ms: f64,
        /// Tail index; must be positive (others give no extra delay).
        shape: f64,
    },
    /// Extra delay uniformly distributed in `[0, max_ms)`.
    Uniform {
        /// Upper bound of the extra delay.
        max_ms: f64,
    },
}

/// Everything that happens to a packet stream on its way to the receiver.
///
/// Percentages are 0–100, probabilities 0–1; values outside saturate (never panic).
/// Non-finite parameters give meaningless but panic-free output.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ImpairmentConfig {
    /// Seed of every random stream; the same config always gives the same deliveries.
    pub seed: u64,
    /// Random packet loss.
    pub loss: LossModel,
    /// Random extra delay.
    pub jitter: JitterModel,
    /// Fixed one-way delay of every packet.
    pub base_delay_ms: f64,
    /// Chance, in percent, that a packet is additionally held until just after the next
    /// packet would arrive (reordering independent of jitter).
    pub reorder_percent: f64,
    /// Chance, in percent, that a delivered packet is delivered a second time, less than
    /// one ptime after the original.
    pub duplicate_percent: f64,
    /// Sender clock error: packet `i` leaves at `i · ptime_ms · (1 + drift_ppm / 10⁶)` on
    /// the receiver's clock. Positive values space arrivals wider than nominal (the
    /// receiver gets fewer packets than it plays out and its jitter buffer drains);
    /// negative values bunch them (the buffer fills).
    pub drift_ppm: f64,
    /// `(from_send_index, new_ssrc)`: from that packet on, the sender uses a new SSRC (a
    /// re-INVITE to another media server, a B2BUA switching legs). The first packet of
    /// each SSRC carries the RTP marker bit.
    pub ssrc_changes: Vec<(usize, u32)>,
    /// `(start_ms, duration_ms)`: every packet sent in `[start, start + duration)` is lost.
    pub outages: Vec<(f64, f64)>,
    /// `(at_ms, n)`: the link stalls at `at_ms`; the next `n` packets to arrive at or
    /// after it are held and delivered together when the last of them arrives.
    pub bursts: Vec<(f64, usize)>,
}

/// One packet as the receiver gets it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Delivery {
    /// Position in the sent stream (0-based); derive the RTP sequence number and
    /// timestamp from it.
    pub send_index: usize,
    /// When the packet left the sender, on the receiver's clock (drift included).
    pub send_ms: f64,
    /// When the packet reaches the receiver.
    pub arrival_ms: f64,
    /// The SSRC it carries.
    pub ssrc: u32,
    /// The RTP marker bit: set on the first packet of each SSRC.
    pub marker: bool,
}

// Stream ids for the independent random streams of one simulation.
const STREAM_LOSS: u64 = 1;
const STREAM_JITTER: u64 = 2;
const STREAM_REORDER: u64 = 3;
const STREAM_DUPLICATE: u64 = 4;

/// Simulates `packets` packets sent every `ptime_ms` with `default_ssrc` (until the first
/// SSRC change) through the impairments of `cfg`.
///
/// Returns the deliveries sorted by arrival time; ties keep send order (a duplicate
/// follows its original). Lost packets are absent, duplicated ones appear twice.
///
/// ```
/// use media_core::quality::impairment::{simulate, ImpairmentConfig};
///
/// let cfg = ImpairmentConfig { base_delay_ms: 40.0, outages: vec![(100.0, 40.0)], ..Default::default() };
/// let d = simulate(&cfg, 10, 20.0, 1);
/// let indices: Vec<usize> = d.iter().map(|d| d.send_index).collect();
/// assert_eq!(indices, [0, 1, 2, 3, 4, 7, 8, 9]); // sent at 100 and 120 ms: lost
/// assert_eq!(d[0].arrival_ms, 40.0);
/// assert!(d[0].marker && !d[1].marker);
/// ```
pub fn simulate(
    cfg: &ImpairmentConfig,
    packets: usize,
    ptime_ms: f64,
    default_ssrc: u32,
) -> Vec<Delivery> {
    let mut loss_rng = Rng::new(cfg.seed, STREAM_LOSS);
    let mut jitter_rng = Rng::new(cfg.seed, STREAM_JITTER);
    let mut reorder_rng = Rng::new(cfg.seed, STREAM_REORDER);
    let mut dup_rng = Rng::new(cfg.seed, STREAM_DUPLICATE);
    let mut loss = LossState::new(&cfg.loss, &mut loss_rng);

    let spacing_ms = ptime_ms * (1.0 + cfg.drift_ppm / 1e6);
    let send_ms = |i: usize| i as f64 * spacing_ms;

    // Arrival of every packet before reordering, lost ones included, so that "behind the
    // next packet" is defined even when the next one is lost.
    let base: Vec<f64> = (0..packets)
        .map(|i| {
            let extra = cfg.jitter.sample(&mut jitter_rng);
            send_ms(i) + (cfg.base_delay_ms + extra).max(0.0)
        })
        .collect();

    let mut changes = cfg.ssrc_changes.clone();
    changes.sort_by_key(|&(from, _)| from); // stable: the later entry for an index wins
    let mut next_change = 0;
    let mut ssrc = default_ssrc;

    let mut out = Vec::with_capacity(packets + packets / 16);
    for i in 0..packets {
        let mut marker = i == 0;
        while let Some(&(from, new_ssrc)) = changes.get(next_change) {
            if from > i {
                break;
            }
            ssrc = new_ssrc;
            marker |= from == i;
            next_change += 1;
        }

        // Every stream draws the same amount per packet whatever happens to it.
        let randomly_lost = loss.next_lost(&mut loss_rng);
        let reorder = reorder_rng.chance(cfg.reorder_percent / 100.0);
        let reorder_gap = reorder_rng.open_unit() * ptime_ms / 2.0;
        let duplicate = dup_rng.chance(cfg.duplicate_percent / 100.0);
        let duplicate_gap = dup_rng.unit() * ptime_ms;

        let sent = send_ms(i);
        let in_outage = cfg
            .outages
            .iter()
            .any(|&(start, duration)| sent >= start && sent < start + duration);
        if randomly_lost || in_outage {
            continue;
        }
        let mut arrival_ms = base[i];
        if reorder {
            if let Some(&next) = base.get(i + 1) {
                arrival_ms = arrival_ms.max(next) + reorder_gap;
            }
        }
        let delivery = Delivery {
            send_index: i,
            send_ms: sent,
            arrival_ms,
            ssrc,
            marker,
        };
        out.push(delivery);
        if duplicate {
            out.push(Delivery {
                arrival_ms: arrival_ms + duplicate_gap,
                ..delivery
            });
        }
    }
    out.sort_by(|a, b| a.arrival_ms.total_cmp(&b.arrival_ms)); // stable

    let mut bursts = cfg.bursts.clone();
    bursts.sort_by(|a, b| a.0.total_cmp(&b.0));
    for (at_ms, n) in bursts {
        let first = out.partition_point(|d| d.arrival_ms < at_ms);
        let end = first.saturating_add(n).min(out.len());
        if first < end {
            // Sorted, so the last held packet arrives latest; raising the others to its
            // time keeps the list sorted and their order.
            let release_ms = out[end - 1].arrival_ms;
            for d in &mut out[first..end] {
                d.arrival_ms = release_ms;
            }
        }
    }
    out
}

impl JitterModel {
    /// One extra delay; draws the same number of values whatever the parameters.
    fn sample(&self, rng: &mut Rng) -> f64 {
        match *self {
            JitterModel::None => 0.0,
            JitterModel::Normal { mean_ms, std_ms } => mean_ms + std_ms * rng.standard_normal(),
            JitterModel::Pareto { scale_ms, shape } => {
                let u = rng.open_unit();
                if shape > 0.0 {
                    // Inverse CDF of the Lomax distribution; u in (0, 1] keeps it finite.
                    scale_ms * (u.powf(-1.0 / shape) - 1.0)
                } else {
                    0.0
                }
            }
            JitterModel::Uniform { max_ms } => rng.unit() * max_ms,
        }
    }
}

/// The running state of a loss model.
enum LossState {
    None,
    Iid {
        p: f64,
    },
    Markov {
        bad: bool,
        p_good_to_bad: f64,
        p_bad_to_good: f64,
        loss_in_good: f64,
        loss_in_bad: f64,
    },
}

impl LossState {
    fn new(model: &LossModel, rng: &mut Rng) -> Self {
        match *model {
            LossModel::None => LossState::None,
            LossModel::Iid { percent } => LossState::Iid { p: percent / 100.0 },
            LossModel::GilbertElliott {
                p_good_to_bad,
                p_bad_to_good,
                loss_in_good,
                loss_in_bad,
            } => LossState::Markov {
                bad: rng.chance(stationary_bad(p_good_to_bad, p_bad_to_good)),
                p_good_to_bad,
                p_bad_to_good,
                loss_in_good,
                loss_in_bad,
            },
        }
    }

    /// Whether the next packet is lost; then steps the chain.
    fn next_lost(&mut self, rng: &mut Rng) -> bool {
        match self {
            LossState::None => false,
            LossState::Iid { p } => rng.chance(*p),
            LossState::Markov {
                bad,
                p_good_to_bad,
                p_bad_to_good,
                loss_in_good,
                loss_in_bad,
            } => {
                let lost = rng.chance(if *bad { *loss_in_bad } else { *loss_in_good });
                let flip = rng.chance(if *bad { *p_bad_to_good } else { *p_good_to_bad });
                *bad ^= flip;
                lost
            }
        }
    }
}

/// xoshiro256** seeded through SplitMix64 (Blackman & Vigna): small, fast, and
/// reproducible on every platform. Not for cryptography.
#[derive(Debug, Clone)]
struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator for one `stream` of `seed`; different streams are independent.
    fn new(seed: u64, stream: u64) -> Self {
        let mut sm = seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03);
        let mut s = [0u64; 4];
        for word in &mut s {
            *word = splitmix64(&mut sm);
        }
        // Four consecutive SplitMix64 outputs are never all zero (it is a bijection of a
        // counter), so xoshiro's one forbidden state cannot occur.
        Rng { s }
    }

    fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `(0, 1]`: safe for `ln` and negative powers.
    fn open_unit(&mut self) -> f64 {
        1.0 - self.unit()
    }

    /// True with probability `p` (saturating outside 0–1; NaN is never).
    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Standard normal by the Box–Muller transform (two draws per sample).
    fn standard_normal(&mut self) -> f64 {
        let r = (-2.0 * self.open_unit().ln()).sqrt();
        let theta = std::f64::consts::TAU * self.unit();
        r * theta.cos()
    }
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The packet time a trace's send indices are assumed to be spaced by: [`read_trace`]
/// sets `send_ms = send_index · 20`. Rescale `send_ms` for another ptime.
pub const TRACE_PTIME_MS: f64 = 20.0;

/// The SSRC [`read_trace`] gives rows of a two-column trace.
pub const TRACE_DEFAULT_SSRC: u32 = 0x5EED_0001;

const HEADER_SHORT: [&str; 2] = ["send_index", "arrival_ms"];
const HEADER_FULL: [&str; 4] = ["send_index", "arrival_ms", "ssrc", "marker"];

/// A trace file could not be read: the 1-based line and what is wrong with it.
/// Recover: fix that line of the file; nothing was returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceError {
    line: usize,
    reason: &'static str,
}

impl TraceError {
    /// The 1-based line number (the header is line 1 unless comments precede it).
    pub fn line(&self) -> usize {
        self.line
    }

    /// What is wrong with the line.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

impl fmt::Display for TraceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "trace line {}: {}", self.line, self.reason)
    }
}

impl std::error::Error for TraceError {}

/// Reads a delivery trace.
///
/// Format: a header line, `send_index,arrival_ms` or `send_index,arrival_ms,ssrc,marker`,
/// then one row per delivered packet with the header's columns, in arrival order. A
/// missing index is a lost packet, a repeated one a duplicate, an index below an earlier
/// one reordering. `arrival_ms` is a finite non-negative number, `ssrc` a decimal or
/// `0x` hexadecimal `u32`, `marker` `0` or `1`. Blank lines and lines starting with `#`
/// are skipped. Rows of a two-column trace get [`TRACE_DEFAULT_SSRC`] and a marker on
/// index 0. `send_ms` is `send_index ·` [`TRACE_PTIME_MS`].
///
/// The result is sorted by arrival time, ties in file order. Malformed input is a
/// [`TraceError`] naming the line; it never panics.
///
/// ```
/// use media_core::quality::impairment::read_trace;
///
/// let d = read_trace("send_index,arrival_ms\n0,40\n2,81.5\n1,82\n")?;
/// assert_eq!(d.iter().map(|d| d.send_index).collect::<Vec<_>>(), [0, 2, 1]);
/// assert_eq!(d[1].send_ms, 40.0);
///
/// let err = read_trace("send_index,arrival_ms\n0,40\n1,soon\n").unwrap_err();
/// assert_eq!(err.line(), 3);
/// # Ok::<(), media_core::quality::impairment::TraceError>(())
/// ```
pub fn read_trace(csv: &str) -> Result<Vec<Delivery>, TraceError> {
    let mut columns = None;
    let mut out = Vec::new();
    let mut last_line = 0;
    for (n, raw) in csv.lines().enumerate() {
        let line = n + 1;
        last_line = line;
        let text = raw.trim();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        let fields = text.split(',').map(str::trim);
        let Some(columns) = columns else {
            let header: Vec<&str> = fields.collect();
            columns = if header == HEADER_SHORT {
                Some(2)
            } else if header == HEADER_FULL {
                Some(4)
            } else {
                return Err(TraceError {
                    line,
                    reason: "header must be `send_index,arrival_ms` or `send_index,arrival_ms,ssrc,marker`",
                });
            };
            continue;
        };
        out.push(parse_row(fields, columns).map_err(|reason| TraceError { line, reason })?);
    }
    if columns.is_none() {
        return Err(TraceError {
            line: last_line.max(1),
            reason: "missing header line",
        });
    }
    out.sort_by(|a, b| a.arrival_ms.total_cmp(&b.arrival_ms)); // stable
    Ok(out)
}

fn parse_row<'a>(
    mut fields: impl Iterator<Item = &'a str>,
    columns: usize,
) -> Result<Delivery, &'static str> {
    const FIELD_COUNT: &str = "row has a different number of fields than the header";
    let send_index: usize = fields
        .next()
        .ok_or(FIELD_COUNT)?
        .parse()
        .map_err(|_| "send_index is not a non-negative integer")?;
    let arrival_ms: f64 = fields
        .next()
        .ok_or(FIELD_COUNT)?
        .parse()
        .map_err(|_| "arrival_ms is not a number")?;
    if !arrival_ms.is_finite() {
        return Err("arrival_ms is not finite");
    }
    if arrival_ms < 0.0 {
        return Err("arrival_ms is negative");
    }
    let (ssrc, marker) = if columns == 4 {
        let ssrc_text = fields.next().ok_or(FIELD_COUNT)?;
        let ssrc = match ssrc_text
            .strip_prefix("0x")
            .or_else(|| ssrc_text.strip_prefix("0X"))
        {
            Some(hex) => u32::from_str_radix(hex, 16),
            None => ssrc_text.parse(),
        }
        .map_err(|_| "ssrc is not a 32-bit unsigned integer")?;
        let marker = match fields.next().ok_or(FIELD_COUNT)? {
            "0" => false,
            "1" => true,
            _ => return Err("marker must be 0 or 1"),
        };
        (ssrc, marker)
    } else {
        (TRACE_DEFAULT_SSRC, send_index == 0)
    };
    if fields.next().is_some() {
        return Err(FIELD_COUNT);
    }
    Ok(Delivery {
        send_index,
        send_ms: send_index as f64 * TRACE_PTIME_MS,
        arrival_ms,
        ssrc,
        marker,
    })
}

/// Writes deliveries as a four-column trace ([`read_trace`]'s format), in the given order,
/// arrival times to the microsecond. `send_ms` is not stored: it follows from the index.
///
/// ```
/// use media_core::quality::impairment::{read_trace, simulate, write_trace, ImpairmentConfig};
///
/// let d = simulate(&ImpairmentConfig { base_delay_ms: 30.0, ..Default::default() }, 3, 20.0, 9);
/// let csv = write_trace(&d);
/// assert_eq!(csv, "send_index,arrival_ms,ssrc,marker\n0,30.000,9,1\n1,50.000,9,0\n2,70.000,9,0\n");
/// assert_eq!(read_trace(&csv)?, d);
/// # Ok::<(), media_core::quality::impairment::TraceError>(())
/// ```
pub fn write_trace(d: &[Delivery]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(40 + d.len() * 28);
    s.push_str("send_index,arrival_ms,ssrc,marker\n");
    for p in d {
        // Writing into a String cannot fail.
        let _ = writeln!(
            s,
            "{},{:.3},{},{}",
            p.send_index,
            p.arrival_ms,
            p.ssrc,
            u8::from(p.marker)
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const PTIME: f64 = 20.0;

    fn cfg() -> ImpairmentConfig {
        ImpairmentConfig {
            seed: 42,
            base_delay_ms: 100.0,
            ..Default::default()
        }
    }

    fn lost_count(d: &[Delivery], packets: usize) -> usize {
        let mut seen = vec![false; packets];
        for p in d {
            seen[p.send_index] = true;
        }
        seen.iter().filter(|s| !**s).count()
    }

    /// Lengths of runs of consecutive lost send indices.
    fn loss_bursts(d: &[Delivery], packets: usize) -> Vec<usize> {
        let mut seen = vec![false; packets];
        for p in d {
            seen[p.send_index] = true;
        }
        let mut bursts = Vec::new();
        let mut run = 0;
        for s in seen {
            if s {
                if run > 0 {
                    bursts.push(run);
                }
                run = 0;
            } else {
                run += 1;
            }
        }
        if run > 0 {
            bursts.push(run);
        }
        bursts
    }

    fn mean_std(x: &[f64]) -> (f64, f64) {
        let n = x.len() as f64;
        let mean = x.iter().sum::<f64>() / n;
        let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
        (mean, var.sqrt())
    }

    fn extra_delays(c: &ImpairmentConfig, packets: usize) -> Vec<f64> {
        simulate(c, packets, PTIME, 1)
            .iter()
            .map(|d| d.arrival_ms - d.send_ms - c.base_delay_ms)
            .collect()
    }

    #[test]
    fn xoshiro_matches_reference_sequence() {
        // xoshiro256** reference: state {1, 2, 3, 4} gives 11520, 0, 1509978240, 1215971899390074240.
        let mut r = Rng { s: [1, 2, 3, 4] };
        let got: Vec<u64> = (0..4).map(|_| r.next_u64()).collect();
        assert_eq!(got, [11520, 0, 1509978240, 1215971899390074240]);
        // SplitMix64 reference: seed 1234567 gives 6457827717110365317 first.
        let mut sm = 1234567;
        assert_eq!(splitmix64(&mut sm), 6457827717110365317);
    }

    #[test]
    fn same_seed_gives_same_deliveries_and_different_seed_differs() {
        let c = ImpairmentConfig {
            loss: LossModel::gilbert_elliott_from_mean(5.0, 3.0).unwrap(),
            jitter: JitterModel::Pareto {
                scale_ms: 15.0,
                shape: 2.5,
            },
            reorder_percent: 2.0,
            duplicate_percent: 1.0,
            ..cfg()
        };
        let a = simulate(&c, 5000, PTIME, 1);
        assert_eq!(a, simulate(&c, 5000, PTIME, 1));
        let b = simulate(
            &ImpairmentConfig {
                seed: 43,
                ..c.clone()
            },
            5000,
            PTIME,
            1,
        );
        assert_ne!(a, b);
        assert_ne!(lost_count(&a, 5000), 0);
    }

    #[test]
    fn no_impairment_delivers_every_packet_after_the_base_delay_in_order() {
        let d = simulate(&cfg(), 100, PTIME, 5);
        assert_eq!(d.len(), 100);
        for (i, p) in d.iter().enumerate() {
            assert_eq!(p.send_index, i);
            assert_eq!(p.send_ms, i as f64 * PTIME);
            assert_eq!(p.arrival_ms, p.send_ms + 100.0);
            assert_eq!(p.ssrc, 5);
            assert_eq!(p.marker, i == 0);
        }
        assert!(simulate(&cfg(), 0, PTIME, 5).is_empty());
    }

    #[test]
    fn iid_loss_rate_is_within_statistical_tolerance_over_100k_packets() {
        const N: usize = 100_000;
        for seed in 0..4 {
            let c = ImpairmentConfig {
                seed,
                loss: LossModel::Iid { percent: 5.0 },
                ..cfg()
            };
            let rate = lost_count(&simulate(&c, N, PTIME, 1), N) as f64 / N as f64 * 100.0;
            // σ = sqrt(p(1−p)/N) ≈ 0.069 %; allow ~4.5σ.
            assert!((rate - 5.0).abs() < 0.3, "seed {seed}: loss {rate} %");
        }
    }

    #[test]
    fn gilbert_elliott_mean_loss_and_burst_length_match_the_parameters() {
        const N: usize = 200_000;
        for seed in 0..4 {
            let c = ImpairmentConfig {
                seed,
                loss: LossModel::gilbert_elliott_from_mean(5.0, 4.0).unwrap(),
                ..cfg()
            };
            let d = simulate(&c, N, PTIME, 1);
            let rate = lost_count(&d, N) as f64 / N as f64 * 100.0;
            let bursts = loss_bursts(&d, N);
            let mean_burst = bursts.iter().sum::<usize>() as f64 / bursts.len() as f64;
            // ~2,500 geometric bursts, σ of the mean ≈ 0.07; the loss rate is correlated
            // over bursts so its σ is ≈ 0.17 %.
            assert!(
                (mean_burst - 4.0).abs() < 0.3,
                "seed {seed}: burst {mean_burst}"
            );
            assert!((rate - 5.0).abs() < 0.6, "seed {seed}: loss {rate} %");
        }
        // An i.i.d. process at the same loss has bursts of mean 1/(1−p) ≈ 1.05.
        let c = ImpairmentConfig {
            loss: LossModel::Iid { percent: 5.0 },
            ..cfg()
        };
        let bursts = loss_bursts(&simulate(&c, N, PTIME, 1), N);
        let mean_burst = bursts.iter().sum::<usize>() as f64 / bursts.len() as f64;
        assert!(mean_burst < 1.1);
    }

    #[test]
    fn gilbert_elliott_with_partial_losses_matches_its_expected_loss() {
        const N: usize = 200_000;
        let model = LossModel::GilbertElliott {
            p_good_to_bad: 0.02,
            p_bad_to_good: 0.2,
            loss_in_good: 0.01,
            loss_in_bad: 0.5,
        };
        let expected = model.expected_loss_percent(); // (10/11)·1 % + (1/11)·50 % ≈ 5.45 %
        assert!((expected - 5.4545).abs() < 1e-3);
        let c = ImpairmentConfig {
            loss: model,
            ..cfg()
        };
        let rate = lost_count(&simulate(&c, N, PTIME, 1), N) as f64 / N as f64 * 100.0;
        assert!((rate - expected).abs() < 0.5, "loss {rate} %");
    }

    #[test]
    fn gilbert_elliott_constructor_rejects_impossible_parameters() {
        assert!(LossModel::gilbert_elliott_from_mean(-1.0, 2.0).is_err());
        assert!(LossModel::gilbert_elliott_from_mean(100.0, 2.0).is_err());
        assert!(LossModel::gilbert_elliott_from_mean(f64::NAN, 2.0).is_err());
        assert!(LossModel::gilbert_elliott_from_mean(5.0, 0.5).is_err());
        assert!(LossModel::gilbert_elliott_from_mean(5.0, f64::INFINITY).is_err());
        assert!(LossModel::gilbert_elliott_from_mean(60.0, 1.0).is_err());
        assert!(LossModel::gilbert_elliott_from_mean(50.0, 1.0).is_ok());
        assert_eq!(
            LossModel::gilbert_elliott_from_mean(0.0, 3.0)
                .unwrap()
                .expected_loss_percent(),
            0.0
        );
    }

    #[test]
    fn normal_jitter_has_the_configured_mean_and_deviation() {
        let c = ImpairmentConfig {
            jitter: JitterModel::Normal {
                mean_ms: 40.0,
                std_ms: 10.0,
            },
            ..cfg()
        };
        let (mean, std) = mean_std(&extra_delays(&c, 100_000));
        // σ of the mean ≈ 0.03, of the deviation ≈ 0.02.
        assert!((mean - 40.0).abs() < 0.2, "mean {mean}");
        assert!((std - 10.0).abs() < 0.2, "std {std}");
    }

    #[test]
    fn uniform_jitter_has_the_moments_of_a_uniform_distribution() {
        let c = ImpairmentConfig {
            jitter: JitterModel::Uniform { max_ms: 30.0 },
            ..cfg()
        };
        let x = extra_delays(&c, 100_000);
        let (mean, std) = mean_std(&x);
        assert!((mean - 15.0).abs() < 0.2, "mean {mean}");
        assert!((std - 30.0 / 12f64.sqrt()).abs() < 0.2, "std {std}");
        assert!(x.iter().all(|&v| (0.0..30.0).contains(&v)));
    }

    #[test]
    fn pareto_jitter_has_the_lomax_mean_median_and_tail() {
        let (scale, shape) = (20.0, 3.0);
        let c = ImpairmentConfig {
            jitter: JitterModel::Pareto {
                scale_ms: scale,
                shape,
            },
            ..cfg()
        };
        let mut x = extra_delays(&c, 100_000);
        let (mean, _) = mean_std(&x);
        // Lomax: mean = scale/(shape−1) = 10, σ ≈ 17.3, σ of the mean ≈ 0.055.
        assert!((mean - 10.0).abs() < 0.4, "mean {mean}");
        x.sort_by(f64::total_cmp);
        let median = x[x.len() / 2];
        let expected_median = scale * (2f64.powf(1.0 / shape) - 1.0);
        assert!((median - expected_median).abs() < 0.2, "median {median}");
        assert!(x[0] >= 0.0);
        // Heavy tail: P(X > 40) = 3^−3 ≈ 3.7 %, far above a normal with the same σ.
        let tail = x.iter().filter(|&&v| v > 40.0).count() as f64 / x.len() as f64;
        assert!((tail - 1.0 / 27.0).abs() < 0.003, "tail {tail}");
    }

    #[test]
    fn total_delay_never_goes_below_zero() {
        let c = ImpairmentConfig {
            base_delay_ms: 5.0,
            jitter: JitterModel::Normal {
                mean_ms: 0.0,
                std_ms: 30.0,
            },
            ..cfg()
        };
        let d = simulate(&c, 10_000, PTIME, 1);
        assert!(d.iter().all(|p| p.arrival_ms >= p.send_ms));
    }

    fn reordered(d: &[Delivery]) -> usize {
        let mut max_seen = None;
        let mut count = 0;
        for p in d {
            match max_seen {
                Some(m) if p.send_index < m => count += 1,
                _ => max_seen = Some(p.send_index),
            }
        }
        count
    }

    #[test]
    fn jitter_larger_than_ptime_reorders_packets() {
        let c = ImpairmentConfig {
            jitter: JitterModel::Normal {
                mean_ms: 0.0,
                std_ms: 30.0,
            },
            ..cfg()
        };
        let d = simulate(&c, 10_000, PTIME, 1);
        assert!(reordered(&d) > 1000, "{} reordered", reordered(&d));
        // Jitter well below the ptime never reorders.
        let c = ImpairmentConfig {
            jitter: JitterModel::Uniform { max_ms: 19.0 },
            ..cfg()
        };
        assert_eq!(reordered(&simulate(&c, 10_000, PTIME, 1)), 0);
    }

    #[test]
    fn reorder_percent_delays_packets_behind_the_next_one() {
        const N: usize = 100_000;
        let c = ImpairmentConfig {
            reorder_percent: 10.0,
            ..cfg()
        };
        let d = simulate(&c, N, PTIME, 1);
        assert_eq!(d.len(), N);
        // Each held packet swaps with its successor (held successors chain, so count
        // the held packets: those arriving later than their unimpaired time).
        let held = d
            .iter()
            .filter(|p| p.arrival_ms > p.send_ms + c.base_delay_ms)
            .count() as f64;
        assert!((held / N as f64 * 100.0 - 10.0).abs() < 0.4, "{held} held");
        assert!(reordered(&d) > N / 20);
        for p in d.iter().filter(|p| p.arrival_ms > p.send_ms + 100.0) {
            // Held past the next packet's arrival, by less than half a ptime more.
            let extra = p.arrival_ms - (p.send_ms + 100.0);
            assert!(extra > PTIME && extra <= 1.5 * PTIME, "extra {extra}");
        }
    }

    #[test]
    fn duplicates_appear_twice_shortly_after_the_original() {
        const N: usize = 20_000;
        let c = ImpairmentConfig {
            duplicate_percent: 10.0,
            loss: LossModel::Iid { percent: 3.0 },
            ..cfg()
        };
        let d = simulate(&c, N, PTIME, 1);
        let mut copies = vec![Vec::new(); N];
        for p in &d {
            copies[p.send_index].push(p.arrival_ms);
        }
        assert!(copies.iter().all(|c| c.len() <= 2));
        let dups = copies.iter().filter(|c| c.len() == 2).count() as f64;
        let delivered = copies.iter().filter(|c| !c.is_empty()).count() as f64;
        assert!(
            (dups / delivered * 100.0 - 10.0).abs() < 0.7,
            "{dups} duplicated"
        );
        for c in copies.iter().filter(|c| c.len() == 2) {
            let gap = c[1] - c[0];
            assert!((0.0..PTIME).contains(&gap), "gap {gap}");
        }
    }

    #[test]
    fn impairments_use_independent_streams() {
        let jitter_only = ImpairmentConfig {
            jitter: JitterModel::Normal {
                mean_ms: 0.0,
                std_ms: 20.0,
            },
            ..cfg()
        };
        let with_loss = ImpairmentConfig {
            loss: LossModel::Iid { percent: 20.0 },
            ..jitter_only.clone()
        };
        let a = simulate(&jitter_only, 2000, PTIME, 1);
        let b = simulate(&with_loss, 2000, PTIME, 1);
        assert!(b.len() < a.len());
        // Survivors keep exactly the delay they had without loss.
        for p in &b {
            let q = a.iter().find(|q| q.send_index == p.send_index).unwrap();
            assert_eq!(p.arrival_ms, q.arrival_ms);
        }
        // Adding duplicates does not move the losses.
        let with_dups = ImpairmentConfig {
            duplicate_percent: 30.0,
            ..with_loss.clone()
        };
        let c = simulate(&with_dups, 2000, PTIME, 1);
        assert_eq!(lost_count(&b, 2000), lost_count(&c, 2000));
        assert_eq!(loss_bursts(&b, 2000), loss_bursts(&c, 2000));
    }

    #[test]
    fn drift_stretches_arrival_spacing_by_the_ppm() {
        for ppm in [1000.0, -500.0, 50.0] {
            let c = ImpairmentConfig {
                drift_ppm: ppm,
                ..cfg()
            };
            let d = simulate(&c, 1500, PTIME, 1);
            let expected = PTIME * (1.0 + ppm / 1e6);
            for w in d.windows(2) {
                assert!((w[1].arrival_ms - w[0].arrival_ms - expected).abs() < 1e-9);
            }
            let last = d.last().unwrap();
            assert!((last.arrival_ms - (1499.0 * expected + 100.0)).abs() < 1e-6);
        }
    }

    #[test]
    fn outage_drops_exactly_the_packets_sent_in_the_window() {
        let c = ImpairmentConfig {
            jitter: JitterModel::Normal {
                mean_ms: 0.0,
                std_ms: 10.0,
            },
            outages: vec![(1000.0, 200.0), (5010.0, 30.0)],
            ..cfg()
        };
        let d = simulate(&c, 1500, PTIME, 1);
        let mut present = [false; 1500];
        for p in &d {
            present[p.send_index] = true;
        }
        let lost: Vec<usize> = (0..1500).filter(|&i| !present[i]).collect();
        // [1000, 1200) holds sends 50..=59; [5010, 5040) holds 5020 (251) only.
        let mut expected: Vec<usize> = (50..60).collect();
        expected.push(251);
        assert_eq!(lost, expected);
    }

    #[test]
    fn stall_delivers_n_packets_at_the_same_arrival_time() {
        let c = ImpairmentConfig {
            base_delay_ms: 0.0,
            bursts: vec![(1000.0, 5), (29_990.0, 10)],
            ..cfg()
        };
        let d = simulate(&c, 1500, PTIME, 1);
        assert_eq!(d.len(), 1500);
        for p in &d[50..55] {
            assert_eq!(p.arrival_ms, 1080.0);
        }
        assert_eq!(
            d[50..55].iter().map(|p| p.send_index).collect::<Vec<_>>(),
            [50, 51, 52, 53, 54]
        );
        assert_eq!(d[49].arrival_ms, 980.0);
        assert_eq!(d[55].arrival_ms, 1100.0);
        // A stall after the last arrival holds nothing.
        assert!(d[1499].arrival_ms == 29_980.0 && d[1498].arrival_ms == 29_960.0);
        assert!(d.windows(2).all(|w| w[0].arrival_ms <= w[1].arrival_ms));

        let c = ImpairmentConfig {
            bursts: vec![(29_950.0, 10)],
            ..c
        };
        let d = simulate(&c, 1500, PTIME, 1);
        // Fewer than n packets left: the rest are released with the last.
        assert!(d[1498..].iter().all(|p| p.arrival_ms == 29_980.0));
        assert_eq!(d[1497].arrival_ms, 29_940.0);
    }

    #[test]
    fn ssrc_changes_switch_ssrc_and_set_the_marker() {
        let c = ImpairmentConfig {
            ssrc_changes: vec![(300, 0xBEEF), (100, 0xCAFE)],
            ..cfg()
        };
        let d = simulate(&c, 500, PTIME, 7);
        for p in &d {
            let want = match p.send_index {
                0..=99 => 7,
                100..=299 => 0xCAFE,
                _ => 0xBEEF,
            };
            assert_eq!(p.ssrc, want);
            assert_eq!(p.marker, [0, 100, 300].contains(&p.send_index));
        }
    }

    #[test]
    fn hostile_parameters_do_not_panic() {
        let c = ImpairmentConfig {
            loss: LossModel::GilbertElliott {
                p_good_to_bad: f64::NAN,
                p_bad_to_good: -3.0,
                loss_in_good: 7.0,
                loss_in_bad: f64::INFINITY,
            },
            jitter: JitterModel::Pareto {
                scale_ms: f64::NAN,
                shape: -1.0,
            },
            base_delay_ms: f64::NEG_INFINITY,
            reorder_percent: 1e9,
            duplicate_percent: f64::NAN,
            drift_ppm: -2e6,
            ssrc_changes: vec![(usize::MAX, 1)],
            outages: vec![(f64::NAN, f64::INFINITY)],
            bursts: vec![(f64::NAN, usize::MAX), (0.0, usize::MAX)],
            ..cfg()
        };
        let _ = simulate(&c, 1000, f64::NAN, 1);
        let _ = simulate(&c, 1000, -20.0, 1);
        let _ = write_trace(&simulate(&c, 1000, 20.0, 1));
    }

    #[test]
    fn trace_write_then_read_round_trips() {
        let c = ImpairmentConfig {
            loss: LossModel::gilbert_elliott_from_mean(3.0, 3.0).unwrap(),
            jitter: JitterModel::Normal {
                mean_ms: 0.0,
                std_ms: 30.0,
            },
            reorder_percent: 2.0,
            duplicate_percent: 1.0,
            ssrc_changes: vec![(700, 0xFFFF_FFFF)],
            bursts: vec![(9000.0, 6)],
            ..cfg()
        };
        let d = simulate(&c, 1500, PTIME, 0x1234_5678);
        let csv = write_trace(&d);
        let back = read_trace(&csv).unwrap();
        assert_eq!(back.len(), d.len());
        for (a, b) in d.iter().zip(&back) {
            assert_eq!(a.send_index, b.send_index);
            assert_eq!(a.send_ms, b.send_ms);
            assert!((a.arrival_ms - b.arrival_ms).abs() <= 0.0005 + 1e-9);
            assert_eq!((a.ssrc, a.marker), (b.ssrc, b.marker));
        }
        // Once rounded to the microsecond, the trace is a fixed point.
        assert_eq!(write_trace(&back), csv);
        assert_eq!(read_trace(&write_trace(&[])).unwrap(), []);
    }

    #[test]
    fn two_column_traces_get_the_default_ssrc_and_sort_by_arrival() {
        let d = read_trace(
            "# a comment\r\n\r\nsend_index, arrival_ms\r\n0,40\r\n3,100\r\n1,70\r\n1,70\r\n# end\r\n",
        )
        .unwrap();
        let got: Vec<(usize, f64, bool)> = d
            .iter()
            .map(|p| (p.send_index, p.arrival_ms, p.marker))
            .collect();
        assert_eq!(
            got,
            [
                (0, 40.0, true),
                (1, 70.0, false),
                (1, 70.0, false),
                (3, 100.0, false)
            ]
        );
        assert!(d.iter().all(|p| p.ssrc == TRACE_DEFAULT_SSRC));
        let hex = read_trace("send_index,arrival_ms,ssrc,marker\n0,1,0xDEADbeef,1\n").unwrap();
        assert_eq!(hex[0].ssrc, 0xDEAD_BEEF);
    }

    #[test]
    fn malformed_trace_lines_give_the_line_number() {
        let full = "send_index,arrival_ms,ssrc,marker\n0,40,1,1\n";
        let cases: &[(&str, usize, &str)] = &[
            ("", 1, "missing header line"),
            ("\n\n# only comments\n", 3, "missing header line"),
            ("0,40\n1,60\n", 1, "header must be"),
            ("send_index,arrival\n", 1, "header must be"),
            ("send_index,arrival_ms\n0,40\n-1,60\n", 3, "send_index"),
            ("send_index,arrival_ms\n0,40\n1.5,60\n", 3, "send_index"),
            (
                "send_index,arrival_ms\n0,40\n99999999999999999999999,60\n",
                3,
                "send_index",
            ),
            (
                "send_index,arrival_ms\n0,40\n\n2,\n",
                4,
                "arrival_ms is not a number",
            ),
            ("send_index,arrival_ms\n0,NaN\n", 2, "not finite"),
            ("send_index,arrival_ms\n0,inf\n", 2, "not finite"),
            ("send_index,arrival_ms\n0,-1\n", 2, "negative"),
            ("send_index,arrival_ms\n0\n", 2, "number of fields"),
            ("send_index,arrival_ms\n0,1,2\n", 2, "number of fields"),
            ("send_index,arrival_ms\n0,1,\n", 2, "number of fields"),
            (
                "send_index,arrival_ms,ssrc,marker\n0,40,1\n",
                2,
                "number of fields",
            ),
            (
                "send_index,arrival_ms,ssrc,marker\n0,40,1,1,1\n",
                2,
                "number of fields",
            ),
            (
                "send_index,arrival_ms,ssrc,marker\n0,40,4294967296,1\n",
                2,
                "ssrc",
            ),
            ("send_index,arrival_ms,ssrc,marker\n0,40,0x,1\n", 2, "ssrc"),
            ("send_index,arrival_ms,ssrc,marker\n0,40,-1,1\n", 2, "ssrc"),
            (
                "send_index,arrival_ms,ssrc,marker\n0,40,1,true\n",
                2,
                "marker",
            ),
            ("send_index,arrival_ms,ssrc,marker\n0,40,1,2\n", 2, "marker"),
        ];
        for &(csv, line, reason) in cases {
            let err = read_trace(csv).expect_err(csv);
            assert_eq!(err.line(), line, "{csv:?}: {err}");
            assert!(err.reason().contains(reason), "{csv:?}: {err}");
            assert!(err.to_string().starts_with(&format!("trace line {line}: ")));
        }
        assert!(read_trace(full).is_ok());
        assert_eq!(read_trace("send_index,arrival_ms\n").unwrap(), []);
    }

    #[test]
    fn random_garbage_never_panics_the_reader() {
        let mut rng = Rng::new(99, 0);
        let alphabet = b"0123456789,.-+eExX#\n\r \tinfNaAM\xC3\xA9";
        let valid = write_trace(&simulate(&cfg(), 20, PTIME, 3));
        for round in 0..5000 {
            let text = if round % 2 == 0 {
                // Random bytes from a CSV-ish alphabet, lossily made UTF-8.
                let len = (rng.next_u64() % 200) as usize;
                let bytes: Vec<u8> = (0..len)
                    .map(|_| alphabet[(rng.next_u64() % alphabet.len() as u64) as usize])
                    .collect();
                String::from_utf8_lossy(&bytes).into_owned()
            } else {
                // A valid trace with a few bytes overwritten.
                let mut bytes = valid.clone().into_bytes();
                for _ in 0..3 {
                    let at = (rng.next_u64() % bytes.len() as u64) as usize;
                    bytes[at] = alphabet[(rng.next_u64() % 19) as usize];
                }
                String::from_utf8_lossy(&bytes).into_owned()
            };
            if let Err(e) = read_trace(&text) {
                assert!(e.line() >= 1 && e.line() <= text.lines().count().max(1));
            }
        }
    }

    /// The committed traces parse and carry the conditions their README describes.
    #[test]
    fn committed_traces_parse_and_match_their_descriptions() {
        let traces = [
            (
                include_str!("../../tests/data/traces/wifi_bursty.csv"),
                1.5..5.0,
            ),
            (
                include_str!("../../tests/data/traces/cellular_jittery.csv"),
                0.3..2.0,
            ),
            (
                include_str!("../../tests/data/traces/clean_lan.csv"),
                0.0..0.001,
            ),
        ];
        for (csv, loss_range) in traces {
            let d = read_trace(csv).unwrap();
            let sent = d.iter().map(|p| p.send_index).max().unwrap() + 1;
            assert!((1490..=1500).contains(&sent));
            let loss = lost_count(&d, sent) as f64 / sent as f64 * 100.0;
            assert!(loss_range.contains(&loss), "loss {loss} %");
            assert_eq!(write_trace(&d), csv, "written by write_trace");
        }
    }
}
