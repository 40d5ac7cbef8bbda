//! `bitsgw bench`: throughput and latency of the real threaded pipeline
//! (`bitsgw_pipeline::runner`, the one `bitsgw run` uses), with the raw
//! crypto ceiling measured in the same process on buffers of the same size.
//!
//! Each configuration (transform x mode x direction x packet size x
//! workers) starts a runner between two bench ports:
//! - the generating port hands the pipeline prebuilt Ethernet frames
//!   (plaintext IPv4/UDP from the host side to encrypt; ESP sealed by a
//!   peer stage from the network side to decrypt), copying each into the
//!   pipeline's buffer as a NIC would, and keeps at most `window` frames in
//!   flight (generated and not yet emitted), so no queue ever overflows and
//!   every packet sent must come out;
//! - the counting port on the other side counts what the workers emit and,
//!   for every [`SAMPLE`]th packet, records the time from its hand-over to
//!   its emission in an HDR histogram. Packets are told apart by a number
//!   written into the source MAC address, which the gateway keeps.
//!
//! Traffic is spread over `flows` SA pairs (one inner host pair each), so
//! that several workers have SAs to own. The inbound SAs run with
//! `replay_window: 0` (RFC 4303 3.4.3 lets a receiver disable the check) so
//! the same prebuilt ESP packets can be decrypted again and again; the
//! network MTU is 9000 so that no packet size needs fragmenting.
//!
//! Packet sizes are those of the inner IPv4 packet (the plaintext);
//! throughput is goodput (inner packet bytes per second). The crypto
//! ceiling seals (encrypt) or opens (decrypt) buffers of the same sizes by
//! calling the crypto libraries directly, every implementation the ESP
//! engine has for the transform: AES-GCM (and GMAC) with ring's
//! `LessSafeKey` and with RustCrypto `aes-gcm`, ChaCha20-Poly1305 with
//! ring, AES-CBC with HMAC-SHA-256-128 and NULL with HMAC-SHA-256-128 with
//! RustCrypto `aes`/`cbc` and `hmac`. Each is reported; the ratio is taken
//! against the fastest. The pipeline's SAs are configured `auto` and use
//! the backend `run` would choose on this machine (the same start-up
//! measurement, reported as `backend`).

use bitsgw_ipsec::crypto::TransformId;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;

mod ceiling;
mod output;
mod pipeline;
mod traffic;

use ceiling::ceilings;
use output::{plot, table};
use pipeline::run_pipeline;
use traffic::{frames, policy, stage};

/// Every `SAMPLE`th packet has its latency recorded.
pub const SAMPLE: u64 = 16;
/// Hand-over times kept (of sampled packets); far more than can be in
/// flight.
const RING: usize = 1 << 16;
/// The IMIX pattern: 7 x 64, 4 x 576, 1 x 1500 octets, interleaved.
const IMIX: [usize; 12] = [64, 576, 64, 64, 576, 64, 1500, 64, 576, 64, 64, 576];
/// A run stalls if nothing comes out for this long.
const STALL: Duration = Duration::from_secs(10);

/// A generator with a full window spins this many times for a slot...
const GEN_SPINS: u32 = 256;
/// ...then naps this long between looks (the kernel's timer slack adds
/// about 50 µs; a 256-frame window at 1 Mpps lasts 256 µs, so the
/// pipeline does not run dry meanwhile)...
const GEN_NAP: Duration = Duration::from_micros(20);
/// ...and reports "nothing yet" after this long, as a port's receive does.
const GEN_WAIT: Duration = Duration::from_millis(10);

/// Key material: the first bytes the transform needs.
const KEY: [u8; 36] = [
    0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff,
    0x0f, 0x1e, 0x2d, 0x3c, 0x4b, 0x5a, 0x69, 0x78, 0x87, 0x96, 0xa5, 0xb4, 0xc3, 0xd2, 0xe1, 0xf0,
    0x0a, 0x0b, 0x0c, 0x0d,
];
const OUTER_A: &str = "203.0.113.1";
const OUTER_B: &str = "203.0.113.2";

/// A packet size: fixed, or the IMIX mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    /// Every packet this many octets (inner IPv4 packet).
    Fixed(usize),
    /// 7:4:1 of 64, 576 and 1500 octets.
    Imix,
}

impl Size {
    /// Parses "64" or "imix".
    pub fn parse(s: &str) -> Result<Size, String> {
        if s.eq_ignore_ascii_case("imix") {
            return Ok(Size::Imix);
        }
        match s.parse::<usize>() {
            Ok(n) if (64..=8800).contains(&n) => Ok(Size::Fixed(n)),
            _ => Err(format!(
                "packet size {s:?}: give octets from 64 to 8800, or imix"
            )),
        }
    }

    fn name(self) -> String {
        match self {
            Size::Fixed(n) => n.to_string(),
            Size::Imix => "imix".into(),
        }
    }

    /// The sizes of one round of the pattern.
    fn pattern(self) -> Vec<usize> {
        match self {
            Size::Fixed(n) => vec![n],
            Size::Imix => IMIX.to_vec(),
        }
    }

    fn mean(self) -> f64 {
        let p = self.pattern();
        p.iter().sum::<usize>() as f64 / p.len() as f64
    }
}

/// Encrypt (host to network) or decrypt (network to host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Plaintext from the host side, ESP out to the network.
    Encrypt,
    /// ESP from the network side, plaintext out to the host.
    Decrypt,
}

impl Dir {
    /// Parses "encrypt" or "decrypt".
    pub fn parse(s: &str) -> Result<Dir, String> {
        match s {
            "encrypt" | "enc" | "outbound" => Ok(Dir::Encrypt),
            "decrypt" | "dec" | "inbound" => Ok(Dir::Decrypt),
            _ => Err(format!("direction {s:?}: encrypt or decrypt")),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Dir::Encrypt => "encrypt",
            Dir::Decrypt => "decrypt",
        }
    }
}

/// ESP mode of the SAs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchMode {
    /// Tunnel mode between the two gateways' outer addresses.
    Tunnel,
    /// Transport mode between the inner hosts.
    Transport,
}

/// How the runner's threads are arranged for one configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threads {
    /// Receive threads hand frames, by SA, to this many workers.
    Workers(usize),
    /// Each port's receive thread handles its own frames (`"pipeline":
    /// "run-to-completion"`).
    RunToCompletion,
    /// This many receive queues, each running to completion with its own
    /// generator (`"pipeline": "queues"`).
    Queues(usize),
}

impl Threads {
    /// Parses a worker count, "rtc" / "run-to-completion", or "q" and a
    /// queue count.
    pub fn parse(s: &str) -> Result<Threads, String> {
        let count = |n: &str| n.parse::<usize>().ok().filter(|n| (1..=64).contains(n));
        match s {
            "rtc" | "run-to-completion" => Ok(Threads::RunToCompletion),
            _ => match (s.strip_prefix('q').map(count), count(s)) {
                (Some(Some(n)), _) => Ok(Threads::Queues(n)),
                (None, Some(n)) => Ok(Threads::Workers(n)),
                _ => Err(format!(
                    "workers {s:?}: a count from 1 to 64, rtc (run to completion), or q and a count of queues (q2)"
                )),
            },
        }
    }

    /// "1", "2", ..., "rtc", or "q1", "q2", ...
    fn name(self) -> String {
        match self {
            Threads::Workers(n) => n.to_string(),
            Threads::RunToCompletion => "rtc".into(),
            Threads::Queues(n) => format!("q{n}"),
        }
    }
}

impl BenchMode {
    /// Parses "tunnel" or "transport".
    pub fn parse(s: &str) -> Result<BenchMode, String> {
        match s {
            "tunnel" => Ok(BenchMode::Tunnel),
            "transport" => Ok(BenchMode::Transport),
            _ => Err(format!("mode {s:?}: tunnel or transport")),
        }
    }

    fn name(self) -> &'static str {
        match self {
            BenchMode::Tunnel => "tunnel",
            BenchMode::Transport => "transport",
        }
    }
}

/// Parses a transform name; "null" is NULL with HMAC-SHA-256-128 and
/// "aes-cbc-hmac-sha256" AES-CBC-128 with it.
pub fn parse_transform(s: &str) -> Result<TransformId, String> {
    let name = match s {
        "null" => "null-hmac-sha256",
        "aes-cbc-hmac-sha256" | "aes-cbc" => "aes-cbc-128-hmac-sha256",
        "chacha20" | "chacha" => "chacha20-poly1305",
        other => other,
    };
    TransformId::from_name(name).ok_or_else(|| {
        let known: Vec<_> = TransformId::ALL.iter().map(|t| t.name()).collect();
        format!("transform {s:?}: known are {}, null", known.join(", "))
    })
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct Options {
    /// Packet sizes.
    pub sizes: Vec<Size>,
    /// Transforms.
    pub transforms: Vec<TransformId>,
    /// Modes.
    pub modes: Vec<BenchMode>,
    /// Directions.
    pub directions: Vec<Dir>,
    /// Worker counts, or run to completion.
    pub workers: Vec<Threads>,
    /// Packets per configuration (after warm-up), unless `seconds`.
    pub packets: u64,
    /// Seconds per configuration instead of a packet count.
    pub seconds: Option<f64>,
    /// SA pairs (flows) the traffic is spread over.
    pub flows: usize,
    /// Frames in flight at most.
    pub window: u64,
    /// Queues: encrypted flows spread by a hash of their addresses (the
    /// kernel's flow hash) instead of steered to their SA's owner.
    pub flow_hash: bool,
    /// Print JSON.
    pub json: bool,
    /// Write an SVG plot here.
    pub plot: Option<PathBuf>,
}

/// One configuration's figures.
#[derive(Debug, Clone)]
struct Row {
    transform: TransformId,
    mode: BenchMode,
    dir: Dir,
    size: Size,
    workers: Threads,
    packets_in: u64,
    packets_out: u64,
    drops: u64,
    measured: u64,
    elapsed: f64,
    bytes: u64,
    p50_ns: u64,
    p99_ns: u64,
    samples: u64,
    /// The fastest raw implementation's ns per packet.
    ceiling_ns: f64,
    /// Every raw implementation's ns per packet, by name.
    ceilings: Vec<(&'static str, f64)>,
    /// The GCM backend the pipeline's SAs used.
    backend: bitsgw_ipsec::crypto::GcmBackend,
    /// Frames a queue handed to the queue that owns their SA.
    handed_over: u64,
}

impl Row {
    fn mpps(&self) -> f64 {
        self.measured as f64 / self.elapsed / 1e6
    }
    fn gbps(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.elapsed / 1e9
    }
    fn ns_per_packet(&self) -> f64 {
        self.elapsed * 1e9 / self.measured.max(1) as f64
    }
    fn ceiling_gbps(&self) -> f64 {
        self.size.mean() * 8.0 / self.ceiling_ns
    }
    /// The fastest raw implementation.
    fn ceiling_name(&self) -> &'static str {
        self.ceilings
            .iter()
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map_or("?", |c| c.0)
    }
    fn ratio(&self) -> f64 {
        self.gbps() / self.ceiling_gbps()
    }

    fn to_json(&self) -> Value {
        json!({
            "transform": self.transform.name(),
            "mode": self.mode.name(),
            "direction": self.dir.name(),
            "size": self.size.name(),
            "mean_size": self.size.mean(),
            "workers": match self.workers {
                Threads::Workers(n) | Threads::Queues(n) => n,
                // One thread per port, each with its own gateway.
                Threads::RunToCompletion => 2,
            },
            "pipeline": match self.workers {
                Threads::Workers(_) => "workers",
                Threads::RunToCompletion => "run-to-completion",
                Threads::Queues(_) => "queues",
            },
            "handed_over": self.handed_over,
            "packets_in": self.packets_in,
            "packets_out": self.packets_out,
            "drops": self.drops,
            "measured_packets": self.measured,
            "elapsed_s": self.elapsed,
            "mpps": self.mpps(),
            "gbps": self.gbps(),
            "ns_per_packet": self.ns_per_packet(),
            "latency_ns": {"p50": self.p50_ns, "p99": self.p99_ns, "samples": self.samples},
            "backend": self.backend.name(),
            "ceiling": {
                "implementation": self.ceiling_name(),
                "gbps": self.ceiling_gbps(),
                "ns_per_packet": self.ceiling_ns,
                "mpps": 1e3 / self.ceiling_ns,
            },
            "ceilings": self.ceilings.iter().map(|(name, ns)| (name.to_string(), json!({
                "gbps": self.size.mean() * 8.0 / ns,
                "ns_per_packet": ns,
                "mpps": 1e3 / ns,
            }))).collect::<serde_json::Map<_, _>>(),
            "ratio_to_ceiling": self.ratio(),
        })
    }
}

fn load_average() -> Vec<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| {
            s.split_whitespace()
                .take(3)
                .filter_map(|x| x.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Runs the benchmark and returns what to print.
pub fn run(opts: &Options) -> Result<String, String> {
    if opts.flows == 0 || opts.flows > 200 {
        return Err("--flows: from 1 to 200".into());
    }
    if opts.window == 0 {
        return Err("--window: at least 1".into());
    }
    let mut configs = Vec::new();
    for &t in &opts.transforms {
        for &mode in &opts.modes {
            for &dir in &opts.directions {
                for &w in &opts.workers {
                    for &size in &opts.sizes {
                        configs.push((t, mode, dir, w, size));
                    }
                }
            }
        }
    }
    let load_before = load_average();
    tracing::info!(
        configurations = configs.len(),
        packets = opts.packets,
        seconds = opts.seconds,
        load = ?load_before,
        "bench starting"
    );
    let bar = indicatif::ProgressBar::new(configs.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {elapsed} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let tick = || bar.tick();
    type Measured = Vec<(&'static str, f64)>;
    let mut ceilings: Vec<((TransformId, Dir, Size), Measured)> = Vec::new();
    let mut rows = Vec::new();
    for (t, mode, dir, w, size) in configs {
        bar.set_message(format!(
            "{} {} {} {} B {}w",
            t.name(),
            mode.name(),
            dir.name(),
            size.name(),
            w.name()
        ));
        let c = match ceilings.iter().find(|(k, _)| *k == (t, dir, size)) {
            Some((_, c)) => c.clone(),
            None => {
                let c = self::ceilings(t, dir, size, opts, &tick)?;
                ceilings.push(((t, dir, size), c.clone()));
                c
            }
        };
        let mut row = run_pipeline(opts, t, mode, dir, size, w, &tick).map_err(|e| {
            format!(
                "{} {} {} {}: {e}",
                t.name(),
                mode.name(),
                dir.name(),
                size.name()
            )
        })?;
        row.ceiling_ns = c.iter().map(|x| x.1).fold(f64::INFINITY, f64::min);
        row.ceilings = c;
        tracing::debug!(
            transform = t.name(),
            mode = mode.name(),
            direction = dir.name(),
            size = %size.name(),
            workers = %w.name(),
            mpps = row.mpps(),
            "configuration done"
        );
        rows.push(row);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let load_after = load_average();
    if let Some(path) = &opts.plot {
        plot(path, &rows)?;
        tracing::info!(file = %path.display(), "plot written");
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if opts.json {
        let v = json!({
            "cpus": cpus,
            "load_average_before": load_before,
            "load_average_after": load_after,
            "packets": opts.seconds.is_none().then_some(opts.packets),
            "seconds": opts.seconds,
            "flows": opts.flows,
            "window": opts.window,
            "latency_sample_every": SAMPLE,
            "results": rows.iter().map(Row::to_json).collect::<Vec<_>>(),
        });
        return Ok(format!("{v:#}\n"));
    }
    Ok(table(&rows, cpus, &load_before, &load_after, opts))
}
