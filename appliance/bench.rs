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

use aes::cipher::block_padding::NoPadding;
use aes::cipher::{BlockDecryptMut, BlockEncryptMut, InnerIvInit, KeyInit};
use aes_gcm::aead::AeadInPlace;
use bitsgw_ipsec::config::parse_policy;
use bitsgw_ipsec::crypto::GcmBackend;
use bitsgw_ipsec::crypto::TransformId;
use bitsgw_ipsec::{Disposition, IpsecStage, StageConfig};
use bitsgw_pipeline::port::{Port, PortError, RxPort, TxPort};
use bitsgw_pipeline::runner::{self, RunnerConfig};
use bitsgw_pipeline::LinkType;
use bitsgw_wire::craft::udp_packet;
use bitsgw_wire::{PacketBuf, Timestamp};
use hdrhistogram::Histogram;
use hmac::{Hmac, Mac};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey};
use serde_json::{json, Value};
use sha2::Sha256;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
}

impl Threads {
    /// Parses a worker count, or "rtc" / "run-to-completion".
    pub fn parse(s: &str) -> Result<Threads, String> {
        match s {
            "rtc" | "run-to-completion" => Ok(Threads::RunToCompletion),
            _ => match s.parse::<usize>() {
                Ok(n) if (1..=64).contains(&n) => Ok(Threads::Workers(n)),
                _ => Err(format!(
                    "workers {s:?}: a count from 1 to 64, or rtc (run to completion)"
                )),
            },
        }
    }

    /// "1", "2", ... or "rtc".
    fn name(self) -> String {
        match self {
            Threads::Workers(n) => n.to_string(),
            Threads::RunToCompletion => "rtc".into(),
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
    backend: GcmBackend,
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
                Threads::Workers(n) => n,
                // One thread per port, each with its own gateway.
                Threads::RunToCompletion => 2,
            },
            "pipeline": match self.workers {
                Threads::Workers(_) => "workers",
                Threads::RunToCompletion => "run-to-completion",
            },
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

fn hex(bytes: &[u8]) -> String {
    let mut s = String::from("0x");
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn host_a(flow: usize) -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, 10 + flow as u8)
}

fn host_b(flow: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 51, 100, 10 + flow as u8)
}

/// The policy of gateway A (`a`) or its peer B: `flows` host pairs, each
/// protected by its own SA pair. Outbound SAs come first in the SAD, so
/// the SAs of one direction spread over the workers (a frame goes to the
/// worker `SA index % workers`).
fn policy(a: bool, t: TransformId, mode: BenchMode, flows: usize) -> String {
    // Each SA has keys of its own (one key on two SAs is refused): the
    // bench key with the SPI in its first octets, the same on both sides.
    let key_for = |spi: usize, len: usize| {
        let mut k = KEY;
        k[..4].copy_from_slice(&(spi as u32).to_be_bytes());
        hex(&k[..len])
    };
    let (me_out, peer_out) = if a {
        (OUTER_A, OUTER_B)
    } else {
        (OUTER_B, OUTER_A)
    };
    let tunnel = match mode {
        BenchMode::Tunnel => {
            format!(
                r#""mode": "tunnel", "tunnel": {{"local": "{me_out}", "remote": "{peer_out}"}},"#
            )
        }
        BenchMode::Transport => r#""mode": "transport","#.to_string(),
    };
    let mut out = Vec::new();
    let mut inb = Vec::new();
    let mut sad_out = Vec::new();
    let mut sad_in = Vec::new();
    for f in 0..flows {
        let (me, peer) = if a {
            (host_a(f), host_b(f))
        } else {
            (host_b(f), host_a(f))
        };
        // A's SPIs 0x1000 + f outbound, 0x2000 + f inbound; B mirrored.
        let (spi_out, spi_in) = if a {
            (0x1000 + f, 0x2000 + f)
        } else {
            (0x2000 + f, 0x1000 + f)
        };
        out.push(format!(
            r#"{{"name": "out-{f}", "local": "{me}/32", "remote": "{peer}/32", "action": "protect", "sa": "sa-out-{f}"}}"#
        ));
        inb.push(format!(
            r#"{{"name": "in-{f}", "local": "{me}/32", "remote": "{peer}/32", "action": "protect", "sa": "sa-in-{f}"}}"#
        ));
        let sa = |name: String, dir: &str, spi: usize| {
            let enc = key_for(spi, t.enc_key_len());
            let auth = match t.auth_key_len() {
                0 => String::new(),
                n => format!(r#""auth_key": "{}","#, key_for(spi, n)),
            };
            format!(
                r#"{{"name": "{name}", "direction": "{dir}", "spi": {spi}, {tunnel} {auth}
                    "transform": "{t}", "enc_key": "{enc}", "replay_window": 0}}"#,
                t = t.name()
            )
        };
        sad_out.push(sa(format!("sa-out-{f}"), "outbound", spi_out));
        sad_in.push(sa(format!("sa-in-{f}"), "inbound", spi_in));
    }
    sad_out.extend(sad_in);
    format!(
        r#"{{"danger_static_keys_for_counter_mode": true, "spd": {{"outbound": [{}], "inbound": [{}]}}, "sad": [{}]}}"#,
        out.join(","),
        inb.join(","),
        sad_out.join(",")
    )
}

/// The backends `auto` SAs use here, measured once per process as `run`
/// measures them.
fn gcm_preference() -> bitsgw_ipsec::gcm_choice::GcmPreference {
    static MEASURED: std::sync::OnceLock<bitsgw_ipsec::gcm_choice::GcmPreference> =
        std::sync::OnceLock::new();
    *MEASURED.get_or_init(|| {
        let c = crate::gcm_calibration::calibrate();
        tracing::info!(measured = %c.summary(), "AES-GCM backend for the pipeline's SAs");
        c.preference
    })
}

fn stage(text: &str) -> Result<IpsecStage, String> {
    let set = parse_policy(text, "bench").map_err(|e| e.to_string())?;
    let mut stage = IpsecStage::new(StageConfig {
        mtu: 9000,
        gcm: gcm_preference(),
        ..StageConfig::default()
    });
    set.apply(&mut stage, Timestamp::ZERO)
        .map_err(|e| e.to_string())?;
    Ok(stage)
}

fn eth(ip: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 14];
    f[..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0xaa]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0]);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    f.extend_from_slice(ip);
    f
}

/// The frames the generator cycles through, and the byte count of each
/// packet (inner IPv4 packet) for goodput.
fn frames(
    t: TransformId,
    mode: BenchMode,
    dir: Dir,
    size: Size,
    flows: usize,
) -> Result<Vec<(Vec<u8>, usize)>, String> {
    let mut peer = match dir {
        Dir::Encrypt => None,
        Dir::Decrypt => Some(stage(&policy(false, t, mode, flows))?),
    };
    let mut v = Vec::new();
    // Packet i: flow i % flows, size pattern[(i / flows) % len].
    for len in size.pattern() {
        for f in 0..flows {
            let (src, dst) = match dir {
                Dir::Encrypt => (host_a(f), host_b(f)),
                Dir::Decrypt => (host_b(f), host_a(f)),
            };
            let ip = udp_packet(IpAddr::V4(src), IpAddr::V4(dst), 4000, 5000, len - 28);
            let wire = match peer.as_mut() {
                None => ip,
                Some(p) => {
                    let mut buf = PacketBuf::from_slice(&ip);
                    match p.handle_outbound(&mut buf, Timestamp::ZERO) {
                        Disposition::Forward => buf.data().to_vec(),
                        other => return Err(format!("the peer did not seal: {other:?}")),
                    }
                }
            };
            v.push((eth(&wire), len));
        }
    }
    Ok(v)
}

/// A value on a cache line of its own (128 bytes: adjacent-line
/// prefetching pairs lines), so that counters written per packet by
/// different threads do not bounce one line between cores: the harness
/// would measure that, not the pipeline.
#[repr(align(128))]
struct OwnLine<T>(T);

impl<T> std::ops::Deref for OwnLine<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

struct Shared {
    origin: Instant,
    /// Packets the generator may hand over in total.
    target: AtomicU64,
    /// Packets handed over (written by the generator).
    generated: OwnLine<AtomicU64>,
    /// Packets emitted on the expected side (written by the emitters).
    emitted: OwnLine<AtomicU64>,
    /// Goodput bytes of the emitted packets (written by the emitters).
    bytes: OwnLine<AtomicU64>,
    /// Frames emitted on the wrong side.
    wrong: AtomicU64,
    /// Latency is recorded for packets numbered from here on.
    record_from: AtomicU64,
    /// Hand-over times (ns since `origin`) of sampled packets.
    stamps: Vec<AtomicU64>,
    latency: Mutex<Histogram<u64>>,
    closed: AtomicBool,
}

impl Shared {
    fn ns(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

struct GenRx {
    frames: Vec<(Vec<u8>, usize)>,
    next: u64,
    window: u64,
    /// `emitted` as last read: the shared count is read again only when
    /// the window looks full by this one.
    emitted_seen: u64,
    shared: Arc<Shared>,
}

impl GenRx {
    fn try_one(&mut self, buf: &mut PacketBuf) -> Result<bool, PortError> {
        let s = &*self.shared;
        if self.next >= s.target.load(Ordering::Acquire) {
            return Ok(false);
        }
        if self.next - self.emitted_seen >= self.window {
            self.emitted_seen = s.emitted.load(Ordering::Acquire);
            if self.next - self.emitted_seen >= self.window {
                return Ok(false);
            }
        }
        let n = self.next;
        let (frame, _) = &self.frames[(n % self.frames.len() as u64) as usize];
        buf.set(frame).map_err(|_| PortError::FrameTooLarge {
            port: "bench".into(),
            len: frame.len(),
            capacity: buf.capacity(),
        })?;
        // The packet's number in the source MAC (02:nn:nn:nn:nn:nn).
        buf.data_mut()[7..12].copy_from_slice(&n.to_be_bytes()[3..]);
        if n.is_multiple_of(SAMPLE) {
            s.stamps[(n / SAMPLE) as usize % RING].store(s.ns(), Ordering::Relaxed);
        }
        self.next += 1;
        s.generated.store(self.next, Ordering::Release);
        Ok(true)
    }
}

impl RxPort for GenRx {
    fn name(&self) -> &str {
        "bench-gen"
    }
    fn link_type(&self) -> LinkType {
        LinkType::Ethernet
    }
    /// With the window full, waits as a receive thread on an idle port
    /// does: briefly spinning, then sleeping, so the waiting generator
    /// does not take the CPU from the workers it waits for (on a machine
    /// with as many cores as pipeline threads, a spinning generator would
    /// measure the scheduler, not the pipeline).
    fn recv(&mut self, buf: &mut PacketBuf) -> Result<bool, PortError> {
        let mut deadline = None;
        let mut spins = 0u32;
        loop {
            if self.try_one(buf)? {
                return Ok(true);
            }
            if self.shared.closed.load(Ordering::Acquire) {
                return Err(PortError::Closed {
                    port: "bench-gen".into(),
                });
            }
            spins += 1;
            if spins < GEN_SPINS {
                std::hint::spin_loop();
                continue;
            }
            let deadline = *deadline.get_or_insert_with(|| Instant::now() + GEN_WAIT);
            if Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::sleep(GEN_NAP);
        }
    }
    fn recv_nowait(&mut self, buf: &mut PacketBuf) -> Result<bool, PortError> {
        self.try_one(buf)
    }
}

/// The receiving half of the side nothing arrives on.
struct IdleRx {
    shared: Arc<Shared>,
}

impl RxPort for IdleRx {
    fn name(&self) -> &str {
        "bench-idle"
    }
    fn link_type(&self) -> LinkType {
        LinkType::Ethernet
    }
    fn recv(&mut self, _buf: &mut PacketBuf) -> Result<bool, PortError> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(PortError::Closed {
                port: "bench-idle".into(),
            });
        }
        std::thread::sleep(Duration::from_millis(5));
        Ok(false)
    }
}

#[derive(Clone)]
struct CountTx {
    expected: bool,
    /// Goodput bytes per emitted frame (the inner packet), by frame index.
    goodput: Vec<usize>,
    shared: Arc<Shared>,
}

impl TxPort for CountTx {
    fn name(&self) -> &str {
        "bench-count"
    }
    fn link_type(&self) -> LinkType {
        LinkType::Ethernet
    }
    /// Each worker counts through its own handle (the counts are shared
    /// atomics), as it sends on its own handle of a packet socket.
    fn try_clone(&self) -> Option<Box<dyn TxPort>> {
        Some(Box::new(self.clone()))
    }

    fn send(&mut self, frame: &[u8]) -> Result<(), PortError> {
        let s = &*self.shared;
        if !self.expected || frame.len() < 14 {
            s.wrong.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let mut tag = [0u8; 8];
        tag[3..].copy_from_slice(&frame[7..12]);
        let n = u64::from_be_bytes(tag);
        if n.is_multiple_of(SAMPLE) && n >= s.record_from.load(Ordering::Relaxed) {
            let sent = s.stamps[(n / SAMPLE) as usize % RING].load(Ordering::Relaxed);
            let lat = s.ns().saturating_sub(sent).max(1);
            if let Ok(mut h) = s.latency.lock() {
                h.saturating_record(lat);
            }
        }
        let len = self.goodput[(n % self.goodput.len() as u64) as usize];
        s.bytes.fetch_add(len as u64, Ordering::Relaxed);
        s.emitted.fetch_add(1, Ordering::Release);
        Ok(())
    }
}

/// Runs one configuration through the threaded pipeline.
fn run_pipeline(
    opts: &Options,
    t: TransformId,
    mode: BenchMode,
    dir: Dir,
    size: Size,
    workers: Threads,
    tick: &dyn Fn(),
) -> Result<Row, String> {
    let frames = frames(t, mode, dir, size, opts.flows)?;
    let goodput: Vec<usize> = frames.iter().map(|(_, l)| *l).collect();
    let text = policy(true, t, mode, opts.flows);
    // Validate once, so the makers below can not fail.
    stage(&text)?;
    let latency = Histogram::new_with_bounds(1, 60_000_000_000, 3).map_err(|e| e.to_string())?;
    let shared = Arc::new(Shared {
        origin: Instant::now(),
        target: AtomicU64::new(0),
        generated: OwnLine(AtomicU64::new(0)),
        emitted: OwnLine(AtomicU64::new(0)),
        bytes: OwnLine(AtomicU64::new(0)),
        wrong: AtomicU64::new(0),
        record_from: AtomicU64::new(u64::MAX),
        stamps: (0..RING).map(|_| AtomicU64::new(0)).collect(),
        latency: Mutex::new(latency),
        closed: AtomicBool::new(false),
    });
    let gen: Box<dyn RxPort> = Box::new(GenRx {
        frames,
        next: 0,
        emitted_seen: 0,
        window: opts.window,
        shared: Arc::clone(&shared),
    });
    let idle: Box<dyn RxPort> = Box::new(IdleRx {
        shared: Arc::clone(&shared),
    });
    let counter = |expected| -> Box<dyn TxPort> {
        Box::new(CountTx {
            expected,
            goodput: goodput.clone(),
            shared: Arc::clone(&shared),
        })
    };
    let (host, network) = match dir {
        Dir::Encrypt => (
            Port {
                rx: gen,
                tx: counter(false),
            },
            Port {
                rx: idle,
                tx: counter(true),
            },
        ),
        Dir::Decrypt => (
            Port {
                rx: idle,
                tx: counter(true),
            },
            Port {
                rx: gen,
                tx: counter(false),
            },
        ),
    };
    let cfg = RunnerConfig {
        workers: match workers {
            Threads::Workers(n) => n,
            Threads::RunToCompletion => 1,
        },
        run_to_completion: workers == Threads::RunToCompletion,
        // In flight at most `window` frames: a queue of that many batches
        // can never be full.
        queue_depth: usize::try_from(opts.window).unwrap_or(usize::MAX),
    };
    let make = || stage(&text).unwrap_or_else(|_| IpsecStage::new(StageConfig::default()));
    let running = runner::start(&cfg, host, network, &make, None);

    // Wait until `emitted` reaches `n`, or fail on a stall.
    let wait_for = |n: u64| -> Result<(), String> {
        let mut last = shared.emitted.load(Ordering::Acquire);
        let mut since = Instant::now();
        while shared.emitted.load(Ordering::Acquire) < n {
            std::thread::sleep(Duration::from_micros(500));
            tick();
            let now = shared.emitted.load(Ordering::Acquire);
            if now != last {
                last = now;
                since = Instant::now();
            } else if since.elapsed() > STALL {
                return Err(format!(
                    "stalled: {} of {n} packets out, {} handed over",
                    now,
                    shared.generated.load(Ordering::Acquire)
                ));
            }
            if let Some(f) = running.failure() {
                return Err(f.to_string());
            }
        }
        Ok(())
    };

    let warm = match opts.seconds {
        Some(_) => 20_000,
        None => (opts.packets / 10).clamp(500, 20_000),
    };
    shared.target.store(warm, Ordering::Release);
    let result = wait_for(warm).and_then(|()| {
        let bytes0 = shared.bytes.load(Ordering::Acquire);
        shared.record_from.store(warm, Ordering::Release);
        let t0 = Instant::now();
        let (measured, bytes, elapsed) = match opts.seconds {
            None => {
                shared.target.store(warm + opts.packets, Ordering::Release);
                wait_for(warm + opts.packets)?;
                let el = t0.elapsed().as_secs_f64();
                (
                    opts.packets,
                    shared.bytes.load(Ordering::Acquire) - bytes0,
                    el,
                )
            }
            Some(secs) => {
                shared.target.store(u64::MAX, Ordering::Release);
                while t0.elapsed().as_secs_f64() < secs {
                    std::thread::sleep(Duration::from_millis(1));
                    tick();
                }
                let out = shared.emitted.load(Ordering::Acquire);
                let bytes = shared.bytes.load(Ordering::Acquire);
                let el = t0.elapsed().as_secs_f64();
                // Stop generating and let what is in flight drain.
                shared
                    .target
                    .store(shared.generated.load(Ordering::Acquire), Ordering::Release);
                std::thread::sleep(Duration::from_millis(1));
                wait_for(shared.generated.load(Ordering::Acquire))?;
                (out - warm, bytes - bytes0, el)
            }
        };
        Ok((measured, bytes, elapsed))
    });
    shared.closed.store(true, Ordering::Release);
    let (report, failure) = running.stop();
    let (measured, bytes, elapsed) = result?;
    if let Some(f) = failure {
        return Err(f.to_string());
    }
    let drops = report.stage.total_drops() + report.pipeline.total_drops();
    let h = shared
        .latency
        .lock()
        .map_err(|_| "latency histogram poisoned".to_string())?;
    Ok(Row {
        transform: t,
        mode,
        dir,
        size,
        workers,
        packets_in: shared.generated.load(Ordering::Acquire),
        packets_out: shared.emitted.load(Ordering::Acquire) + shared.wrong.load(Ordering::Acquire),
        drops,
        measured,
        elapsed,
        bytes,
        p50_ns: h.value_at_quantile(0.50),
        p99_ns: h.value_at_quantile(0.99),
        samples: h.len(),
        ceiling_ns: 0.0,
        ceilings: Vec::new(),
        backend: gcm_preference().for_transform(t),
    })
}

/// The raw crypto of a transform, called directly (one per configuration,
/// so the size of the CBC key schedules does not matter).
#[allow(clippy::large_enum_variant)]
enum Raw {
    Aead(LessSafeKey),
    RustGcm128(aes_gcm::Aes128Gcm),
    RustGcm256(aes_gcm::Aes256Gcm),
    Cbc128(aes::Aes128, Hmac<Sha256>),
    Cbc256(aes::Aes256, Hmac<Sha256>),
    Null(Hmac<Sha256>),
}

impl Raw {
    /// Every implementation the ESP engine has for `t`, by name.
    fn all(t: TransformId) -> Result<Vec<(&'static str, Raw)>, String> {
        let mut all = Vec::new();
        let rust_gcm = match t {
            TransformId::AesGcm128 | TransformId::AesGmac128 => Some(Raw::RustGcm128(
                aes_gcm::Aes128Gcm::new_from_slice(&KEY[..16]).map_err(|e| e.to_string())?,
            )),
            TransformId::AesGcm256 | TransformId::AesGmac256 => Some(Raw::RustGcm256(
                aes_gcm::Aes256Gcm::new_from_slice(&KEY[..32]).map_err(|e| e.to_string())?,
            )),
            _ => None,
        };
        let name = match t {
            TransformId::AesCbc128HmacSha256
            | TransformId::AesCbc256HmacSha256
            | TransformId::NullHmacSha256 => GcmBackend::RustCrypto.name(),
            _ => GcmBackend::Ring.name(),
        };
        all.push((name, Raw::new(t)?));
        if let Some(r) = rust_gcm {
            all.push((GcmBackend::RustCrypto.name(), r));
        }
        Ok(all)
    }

    fn new(t: TransformId) -> Result<Raw, String> {
        let mac = || <Hmac<Sha256> as Mac>::new_from_slice(&KEY[..32]).map_err(|e| e.to_string());
        let aead = |alg: &'static ring::aead::Algorithm, n: usize| {
            UnboundKey::new(alg, &KEY[..n])
                .map(|k| Raw::Aead(LessSafeKey::new(k)))
                .map_err(|_| "ring key".to_string())
        };
        match t {
            TransformId::AesGcm128 | TransformId::AesGmac128 => aead(&ring::aead::AES_128_GCM, 16),
            TransformId::AesGcm256 | TransformId::AesGmac256 => aead(&ring::aead::AES_256_GCM, 32),
            TransformId::ChaCha20Poly1305 => aead(&ring::aead::CHACHA20_POLY1305, 32),
            TransformId::AesCbc128HmacSha256 => Ok(Raw::Cbc128(
                aes::Aes128::new_from_slice(&KEY[..16]).map_err(|e| e.to_string())?,
                mac()?,
            )),
            TransformId::AesCbc256HmacSha256 => Ok(Raw::Cbc256(
                aes::Aes256::new_from_slice(&KEY[..32]).map_err(|e| e.to_string())?,
                mac()?,
            )),
            TransformId::NullHmacSha256 => Ok(Raw::Null(mac()?)),
        }
    }

    /// Buffer length for a payload of `len` octets (CBC: whole blocks).
    fn buf_len(&self, len: usize) -> usize {
        match self {
            Raw::Cbc128(..) | Raw::Cbc256(..) => len.div_ceil(16) * 16,
            _ => len,
        }
    }

    fn seal(&self, buf: &mut [u8], tag: &mut [u8; 16]) {
        const AAD: [u8; 8] = [0, 0, 0x10, 0x01, 0, 0, 0, 1];
        const NONCE: [u8; 12] = [0x0a, 0x0b, 0x0c, 0x0d, 0, 0, 0, 0, 0, 0, 0, 1];
        let len = buf.len();
        match self {
            Raw::Aead(k) => {
                if let Ok(t) = k.seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(NONCE),
                    Aad::from(&AAD),
                    buf,
                ) {
                    tag.copy_from_slice(t.as_ref());
                }
            }
            Raw::Cbc128(c, mac) => {
                let _ = cbc::Encryptor::<aes::Aes128>::inner_iv_init(c.clone(), &[7u8; 16].into())
                    .encrypt_padded_mut::<NoPadding>(buf, len);
                hmac_into(mac, buf, tag);
            }
            Raw::Cbc256(c, mac) => {
                let _ = cbc::Encryptor::<aes::Aes256>::inner_iv_init(c.clone(), &[7u8; 16].into())
                    .encrypt_padded_mut::<NoPadding>(buf, len);
                hmac_into(mac, buf, tag);
            }
            Raw::Null(mac) => hmac_into(mac, buf, tag),
            Raw::RustGcm128(k) => {
                if let Ok(t) = k.encrypt_in_place_detached(&NONCE.into(), &AAD, buf) {
                    tag.copy_from_slice(&t);
                }
            }
            Raw::RustGcm256(k) => {
                if let Ok(t) = k.encrypt_in_place_detached(&NONCE.into(), &AAD, buf) {
                    tag.copy_from_slice(&t);
                }
            }
        }
    }

    /// Verifies and decrypts what `seal` produced (the tag after the
    /// ciphertext in `buf`).
    fn open(&self, buf: &mut [u8]) -> bool {
        const AAD: [u8; 8] = [0, 0, 0x10, 0x01, 0, 0, 0, 1];
        const NONCE: [u8; 12] = [0x0a, 0x0b, 0x0c, 0x0d, 0, 0, 0, 0, 0, 0, 0, 1];
        if let Raw::Aead(k) = self {
            // ring takes ciphertext || tag, as `buf` holds them.
            return k
                .open_in_place(Nonce::assume_unique_for_key(NONCE), Aad::from(&AAD), buf)
                .is_ok();
        }
        let (body, tag) = buf.split_at_mut(buf.len() - 16);
        let mut expect = [0u8; 16];
        match self {
            Raw::Cbc128(c, mac) => {
                hmac_into(mac, body, &mut expect);
                let _ = cbc::Decryptor::<aes::Aes128>::inner_iv_init(c.clone(), &[7u8; 16].into())
                    .decrypt_padded_mut::<NoPadding>(body);
            }
            Raw::Cbc256(c, mac) => {
                hmac_into(mac, body, &mut expect);
                let _ = cbc::Decryptor::<aes::Aes256>::inner_iv_init(c.clone(), &[7u8; 16].into())
                    .decrypt_padded_mut::<NoPadding>(body);
            }
            Raw::Null(mac) => hmac_into(mac, body, &mut expect),
            Raw::RustGcm128(k) => {
                return k
                    .decrypt_in_place_detached(&NONCE.into(), &AAD, body, (&*tag).into())
                    .is_ok()
            }
            Raw::RustGcm256(k) => {
                return k
                    .decrypt_in_place_detached(&NONCE.into(), &AAD, body, (&*tag).into())
                    .is_ok()
            }
            Raw::Aead(_) => {}
        }
        expect == *tag
    }
}

fn hmac_into(mac: &Hmac<Sha256>, data: &[u8], tag: &mut [u8; 16]) {
    let mut m = mac.clone();
    m.update(data);
    tag.copy_from_slice(&m.finalize().into_bytes()[..16]);
}

/// Mean ns per packet of the raw crypto over the size pattern, `count`
/// packets (or `seconds`).
/// Every raw implementation's mean ns per packet over the size pattern.
fn ceilings(
    t: TransformId,
    dir: Dir,
    size: Size,
    opts: &Options,
    tick: &dyn Fn(),
) -> Result<Vec<(&'static str, f64)>, String> {
    Raw::all(t)?
        .into_iter()
        .map(|(name, raw)| Ok((name, ceiling(&raw, t, dir, size, opts, tick)?)))
        .collect()
}

fn ceiling(
    raw: &Raw,
    t: TransformId,
    dir: Dir,
    size: Size,
    opts: &Options,
    tick: &dyn Fn(),
) -> Result<f64, String> {
    let pattern = size.pattern();
    // Sealed buffers (ciphertext || tag), one per pattern size.
    let mut bufs: Vec<Vec<u8>> = pattern
        .iter()
        .map(|&len| {
            let mut b = vec![0x5au8; raw.buf_len(len) + 16];
            let (body, tag) = b.split_at_mut(raw.buf_len(len));
            let mut t16 = [0u8; 16];
            raw.seal(body, &mut t16);
            tag.copy_from_slice(&t16);
            b
        })
        .collect();
    let originals = bufs.clone();
    let mut tag = [0u8; 16];
    let mut one = |i: usize| -> bool {
        let k = i % bufs.len();
        match dir {
            Dir::Encrypt => {
                let n = bufs[k].len() - 16;
                raw.seal(black_box(&mut bufs[k][..n]), &mut tag);
                true
            }
            Dir::Decrypt => {
                bufs[k].copy_from_slice(&originals[k]);
                raw.open(black_box(&mut bufs[k]))
            }
        }
    };
    // Warm up, then measure.
    for i in 0..1000 {
        if !one(i) {
            return Err(format!("{}: raw open failed", t.name()));
        }
    }
    let t0 = Instant::now();
    let mut done = 0u64;
    match opts.seconds {
        None => {
            while done < opts.packets {
                for _ in 0..256 {
                    black_box(one(done as usize));
                    done += 1;
                }
                tick();
            }
        }
        Some(s) => {
            while t0.elapsed().as_secs_f64() < s {
                for _ in 0..256 {
                    black_box(one(done as usize));
                    done += 1;
                }
                tick();
            }
        }
    }
    black_box(tag);
    Ok(t0.elapsed().as_secs_f64() * 1e9 / done as f64)
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

fn table(rows: &[Row], cpus: usize, before: &[f64], after: &[f64], opts: &Options) -> String {
    let fmt_load = |l: &[f64]| {
        l.iter()
            .map(|x| format!("{x:.2}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut s = format!(
        "bitsgw bench: {} CPUs, load average {} (before) / {} (after); {}, {} flows, window {}\n",
        cpus,
        fmt_load(before),
        fmt_load(after),
        match opts.seconds {
            Some(x) => format!("{x} s per configuration"),
            None => format!("{} packets per configuration", opts.packets),
        },
        opts.flows,
        opts.window,
    );
    s.push_str(&format!(
        "{:<24} {:<9} {:<7} {:>5} {:>2} {:>7} {:>7} {:>8} {:>9} {:>9} {:>8} {:>6}  {:<21} {}\n",
        "transform",
        "mode",
        "dir",
        "size",
        "w",
        "Mpps",
        "Gbit/s",
        "ns/pkt",
        "p50 µs",
        "p99 µs",
        "ceil Gb/s",
        "ratio",
        "backend / fastest raw",
        "in/out/drops"
    ));
    for r in rows {
        s.push_str(&format!(
            "{:<24} {:<9} {:<7} {:>5} {:>3} {:>7.3} {:>7.3} {:>8.0} {:>9.1} {:>9.1} {:>8.3} {:>6.2}  {:<21} {}/{}/{}\n",
            r.transform.name(),
            r.mode.name(),
            r.dir.name(),
            r.size.name(),
            r.workers.name(),
            r.mpps(),
            r.gbps(),
            r.ns_per_packet(),
            r.p50_ns as f64 / 1e3,
            r.p99_ns as f64 / 1e3,
            r.ceiling_gbps(),
            r.ratio(),
            format!("{} / {}", r.backend.name(), r.ceiling_name()),
            r.packets_in,
            r.packets_out,
            r.drops
        ));
    }
    s.push_str(
        "(sizes: inner IPv4 packet; Gbit/s: goodput; latency: hand-over to emission, every 16th packet, at saturation;\n ratio: pipeline Gbit/s / the fastest raw crypto's Gbit/s on the same sizes, every implementation measured in this run;\n backend: the pipeline's AES-GCM backend, chosen by the same measurement as `run`'s)\n",
    );
    s
}

/// Throughput against packet size, one line per configuration, the raw
/// crypto ceilings dashed.
fn plot(path: &std::path::Path, rows: &[Row]) -> Result<(), String> {
    use plotters::prelude::*;
    let err = |e: &dyn std::fmt::Display| format!("plot {}: {e}", path.display());
    let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    let mut ceilings: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    let add = |set: &mut Vec<(String, Vec<(f64, f64)>)>, key: String, x: f64, y: f64| match set
        .iter_mut()
        .find(|(k, _)| *k == key)
    {
        Some((_, v)) => v.push((x, y)),
        None => set.push((key, vec![(x, y)])),
    };
    for r in rows {
        let x = r.size.mean();
        add(
            &mut series,
            format!(
                "{} {} {} {}w",
                r.transform.name(),
                r.mode.name(),
                r.dir.name(),
                r.workers.name()
            ),
            x,
            r.gbps(),
        );
        let ckey = format!("ceiling {} {}", r.transform.name(), r.dir.name());
        if !ceilings
            .iter()
            .any(|(k, v)| *k == ckey && v.iter().any(|(cx, _)| *cx == x))
        {
            add(&mut ceilings, ckey, x, r.ceiling_gbps());
        }
    }
    for (_, v) in series.iter_mut().chain(ceilings.iter_mut()) {
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    let xmax = rows.iter().map(|r| r.size.mean()).fold(100.0, f64::max) * 1.1;
    let ymax = rows
        .iter()
        .map(|r| r.gbps().max(r.ceiling_gbps()))
        .fold(0.1, f64::max)
        * 1.15;
    let lines = series.len() + ceilings.len();
    let height = 480 + 18 * lines as u32;
    let root = SVGBackend::new(path, (960, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "bitsgw bench: goodput against packet size",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..xmax, 0f64..ymax)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("inner packet size (octets; IMIX at its mean)")
        .y_desc("Gbit/s")
        .draw()
        .map_err(|e| err(&e))?;
    for (i, (name, pts)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
            });
        chart
            .draw_series(pts.iter().map(|p| Circle::new(*p, 3, color.filled())))
            .map_err(|e| err(&e))?;
    }
    for (i, (name, pts)) in ceilings.iter().enumerate() {
        let color = Palette99::pick(i + series.len()).to_rgba();
        chart
            .draw_series(DashedLineSeries::new(
                pts.iter().copied(),
                6,
                4,
                color.stroke_width(1),
            ))
            .map_err(|e| err(&e))?
            .label(name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(1))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
