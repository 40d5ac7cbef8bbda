//! One SA, one owner, under churn: a gateway with several workers sends
//! over many SAs and bundles while SAs are replaced, removed and re-added
//! through controls, and every ESP packet that leaves is opened layer by
//! layer: no (SPI, key, sequence number) is ever sent twice, which with
//! AES-GCM would be a reused nonce.
#![allow(clippy::unwrap_used)]

mod common;

use bitsgw_ipsec::anti_replay::ReplayWindow;
use bitsgw_ipsec::config::parse_policy;
use bitsgw_ipsec::crypto::{GcmBackend, Transform, TransformId};
use bitsgw_ipsec::sa::SaParams;
use bitsgw_ipsec::{IpsecStage, StageConfig};
use bitsgw_pipeline::runner::{self, RunnerConfig};
use bitsgw_wire::craft::udp_packet;
use bitsgw_wire::Timestamp;
use common::chan::port;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// SAs used alone, one flow each.
const SINGLES: u32 = 6;
/// Bundles of two SAs (inner, outer), one flow each.
const BUNDLES: u32 = 4;
/// How long SAs are changed under traffic.
const CHURN: Duration = Duration::from_secs(5);

/// A distinct AES-GCM-128 key (and salt) per SPI, so the SPI names the key.
fn key(spi: u32) -> Vec<u8> {
    [
        spi,
        spi.wrapping_mul(2_654_435_761),
        spi ^ 0x5a5a_5a5a,
        spi.rotate_left(9) | 1,
        spi.wrapping_add(0x0101_0101),
    ]
    .iter()
    .flat_map(|w| w.to_be_bytes())
    .collect()
}

fn sa_json(name: &str, spi: u32, remote: &str) -> String {
    let hex: String = key(spi).iter().map(|b| format!("{b:02x}")).collect();
    format!(
        r#"{{"name": "{name}", "direction": "outbound", "spi": {spi}, "mode": "tunnel",
             "tunnel": {{"local": "192.0.2.1", "remote": "{remote}"}},
             "transform": "aes-gcm-128", "enc_key": "0x{hex}"}}"#
    )
}

/// Single SA `s{k}` protects traffic to 198.51.100.{k+1}; bundle `b{j}`
/// (inner `bi{j}` to 192.0.2.200, outer `bo{j}` to 203.0.113.{j+1})
/// protects traffic to 198.51.100.{100+j}.
fn policy() -> String {
    let mut entries = Vec::new();
    let mut sas = Vec::new();
    for k in 0..SINGLES {
        entries.push(format!(
            r#"{{"name": "s{k}", "remote": "198.51.100.{}/32", "action": "protect", "sa": "s{k}"}}"#,
            k + 1
        ));
        sas.push(sa_json(&format!("s{k}"), 0x1000 + k, "203.0.113.200"));
    }
    for j in 0..BUNDLES {
        entries.push(format!(
            r#"{{"name": "b{j}", "remote": "198.51.100.{}/32", "action": "protect", "sa": ["bi{j}", "bo{j}"]}}"#,
            100 + j
        ));
        sas.push(sa_json(&format!("bi{j}"), 0x2000 + j, "192.0.2.200"));
        sas.push(sa_json(
            &format!("bo{j}"),
            0x3000 + j,
            &format!("203.0.113.{}", j + 1),
        ));
    }
    entries.push(r#"{"name": "rest", "action": "discard"}"#.into());
    format!(
        r#"{{"danger_static_keys_for_counter_mode": true,
            "spd": {{"outbound": [{}], "inbound": []}},
            "sad": [{}]}}"#,
        entries.join(","),
        sas.join(",")
    )
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// What the checker saw on the wire.
#[derive(Default)]
struct Seen {
    /// Every (SPI, sequence number) sealed, at every layer.
    sealed: HashSet<(u32, u32)>,
    /// The peer's replay window per SPI.
    windows: HashMap<u32, ReplayWindow>,
    /// Pairs sent twice.
    repeats: Vec<(u32, u32)>,
    /// Duplicates a peer's window would have refused.
    refused_by_window: u64,
    /// Packets that did not open with the key of their SPI.
    unopened: u64,
    /// ESP layers checked.
    layers: u64,
    /// Each SPI's transform, made when first seen.
    transforms: HashMap<u32, Transform>,
}

impl Seen {
    /// Records one ESP layer; returns its plaintext's bounds in `esp`.
    fn layer(&mut self, keys: &Mutex<HashMap<u32, Vec<u8>>>, esp: &mut [u8]) -> Option<usize> {
        let spi = u32::from_be_bytes(esp.get(0..4)?.try_into().ok()?);
        let seq = u32::from_be_bytes(esp.get(4..8)?.try_into().ok()?);
        if !self.transforms.contains_key(&spi) {
            let keys = keys.lock().unwrap();
            let Some(k) = keys.get(&spi) else {
                self.unopened += 1;
                return None;
            };
            let t = Transform::new(TransformId::AesGcm128, GcmBackend::Ring, k, &[]).unwrap();
            self.transforms.insert(spi, t);
        }
        let t = &self.transforms[&spi];
        if t.open(esp, u64::from(seq), false).is_err() {
            self.unopened += 1;
            return None;
        }
        self.layers += 1;
        if !self.sealed.insert((spi, seq)) {
            self.repeats.push((spi, seq));
        }
        let window = self
            .windows
            .entry(spi)
            .or_insert_with(|| ReplayWindow::new(1 << 14, false));
        if window.check_and_update(u64::from(seq)).is_err() {
            self.refused_by_window += 1;
        }
        // The plaintext follows the ESP header (8) and the IV (8).
        Some(16)
    }

    /// Opens every ESP layer of an outer IPv4 tunnel packet.
    fn frame(&mut self, keys: &Mutex<HashMap<u32, Vec<u8>>>, mut frame: Vec<u8>) {
        let mut at = 0;
        // An IPv4 header of 20 octets carrying ESP, then maybe another.
        while frame.get(at + 9) == Some(&50) {
            let total = usize::from(u16::from_be_bytes([frame[at + 2], frame[at + 3]]));
            let Some(esp) = frame.get_mut(at + 20..at + total) else {
                self.unopened += 1;
                return;
            };
            let Some(start) = self.layer(keys, esp) else {
                return;
            };
            at += 20 + start;
        }
    }
}

#[test]
fn no_sa_is_ever_sealed_by_two_workers_while_sas_change() {
    let set = parse_policy(&policy(), "churn.json").unwrap();
    let maker = {
        let set = set.clone();
        move || {
            let mut stage = IpsecStage::new(StageConfig::default());
            set.apply(&mut stage, Timestamp::ZERO).unwrap();
            stage
        }
    };
    let params: HashMap<String, SaParams> = set
        .sas
        .iter()
        .map(|p| (p.name.clone(), p.clone()))
        .collect();
    let keys: Arc<Mutex<HashMap<u32, Vec<u8>>>> = Arc::new(Mutex::new(
        set.sas.iter().map(|p| (p.spi, key(p.spi))).collect(),
    ));
    let (host, host_in, _host_out) = port();
    let (net, _net_in, net_out) = port();
    let cfg = RunnerConfig {
        workers: 3,
        queue_depth: 256,
        run_to_completion: false,
    };
    let running = runner::start(&cfg, host, net, &maker, None);
    let stop = Arc::new(AtomicBool::new(false));

    // Traffic to every flow, as fast as the workers take it.
    let feeder = {
        let stop = Arc::clone(&stop);
        let backlog = net_out.clone();
        std::thread::spawn(move || {
            let mut dsts: Vec<IpAddr> = (0..SINGLES)
                .map(|k| ip(&format!("198.51.100.{}", k + 1)))
                .collect();
            dsts.extend((0..BUNDLES).map(|j| ip(&format!("198.51.100.{}", 100 + j))));
            let mut n = 0u16;
            while !stop.load(Ordering::Relaxed) {
                if host_in.len() > 2000 || backlog.len() > 2000 {
                    std::thread::sleep(Duration::from_micros(200));
                    continue;
                }
                for d in &dsts {
                    let _ = host_in.send(udp_packet(ip("192.0.2.10"), *d, 1000, n, 64));
                }
                n = n.wrapping_add(1);
            }
        })
    };

    // Every packet on the wire, opened as it comes.
    let checker = {
        let stop = Arc::clone(&stop);
        let keys = Arc::clone(&keys);
        std::thread::spawn(move || {
            let mut seen = Seen::default();
            let mut quiet_since = None;
            loop {
                match net_out.recv_timeout(Duration::from_millis(50)) {
                    Ok(f) => {
                        quiet_since = None;
                        seen.frame(&keys, f);
                    }
                    Err(_) if stop.load(Ordering::Relaxed) => {
                        let since = *quiet_since.get_or_insert_with(Instant::now);
                        if since.elapsed() > Duration::from_millis(500) {
                            return seen;
                        }
                    }
                    Err(_) => {}
                }
            }
        })
    };

    // Replace, remove and re-add SAs, each time under a new SPI and key.
    let mut next_spi = 0x10_000u32;
    let mut removed: Option<String> = None;
    let started = Instant::now();
    let mut rounds = 0u32;
    while started.elapsed() < CHURN {
        rounds += 1;
        let name = match rounds % 4 {
            0 => format!("bo{}", rounds % BUNDLES),
            1 => format!("bi{}", rounds % BUNDLES),
            2 => format!("s{}", rounds % SINGLES),
            _ => match removed.take() {
                // Re-added below under a new key.
                Some(name) => name,
                None => {
                    let name = format!("s{}", (rounds / 4) % SINGLES);
                    let gone = name.clone();
                    running.apply(Arc::new(move |gw| {
                        if let Some(id) = gw.stage().sad().by_name(&gone) {
                            gw.stage_mut().remove_sa(id);
                        }
                    }));
                    removed = Some(name);
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                }
            },
        };
        let mut p = params[&name].clone();
        p.spi = next_spi;
        p.enc_key = key(next_spi).into();
        keys.lock().unwrap().insert(next_spi, key(next_spi));
        next_spi += 1;
        let now = running.now();
        running.apply(Arc::new(move |gw| {
            gw.stage_mut().install_sa(p.clone(), now).unwrap();
        }));
        std::thread::sleep(Duration::from_millis(2));
    }
    stop.store(true, Ordering::Relaxed);
    feeder.join().unwrap();
    let seen = checker.join().unwrap();
    let (report, failure) = running.stop();
    assert_eq!(failure, None);

    assert!(
        seen.repeats.is_empty(),
        "{} (SPI, sequence number) pairs sealed twice, e.g. {:x?}",
        seen.repeats.len(),
        &seen.repeats[..seen.repeats.len().min(5)]
    );
    assert_eq!(seen.refused_by_window, 0);
    assert_eq!(seen.unopened, 0, "every packet opens with its SPI's key");
    // Not vacuous: much traffic went through SAs installed under churn.
    let churned = seen
        .sealed
        .iter()
        .filter(|(spi, _)| *spi >= 0x10_000)
        .count();
    assert!(rounds > 100, "{rounds} rounds of changes");
    assert!(seen.layers > 10_000, "{} ESP layers checked", seen.layers);
    assert!(churned > 1_000, "{churned} packets under replaced SAs");
    assert!(report.stage.outbound_protected > 5_000);
}

/// Queues mode: two queues each receive frames of every SA (as the
/// kernel's flow hash spreads one SA's flows over the queues); each SA is
/// still sealed by its owner alone, the other queue hands its frames over,
/// and every frame comes out once.
#[test]
fn queues_hand_each_frame_to_the_owner_of_its_sa() {
    let set = parse_policy(&policy(), "queues.json").unwrap();
    let maker = move || {
        let mut stage = IpsecStage::new(StageConfig::default());
        set.apply(&mut stage, Timestamp::ZERO).unwrap();
        stage
    };
    let keys: Mutex<HashMap<u32, Vec<u8>>> = Mutex::new(
        parse_policy(&policy(), "queues.json")
            .unwrap()
            .sas
            .iter()
            .map(|p| (p.spi, key(p.spi)))
            .collect(),
    );
    let mut queues = Vec::new();
    let mut inputs = Vec::new();
    let mut outputs = Vec::new();
    for _ in 0..2 {
        let (host, host_in, _host_out) = port();
        let (network, _net_in, net_out) = port();
        queues.push(runner::QueuePorts { host, network });
        inputs.push(host_in);
        outputs.push(net_out);
    }
    // An inbox of a batch per frame sent can never be full, however the
    // queues are scheduled (a full one drops, counted: the next test).
    let running = runner::start_queues(
        &runner::QueueConfig { inbox_depth: 5000 },
        queues,
        &maker,
        &|_| None,
        &|_| {},
        None,
    );
    let mut dsts: Vec<IpAddr> = (0..SINGLES)
        .map(|k| ip(&format!("198.51.100.{}", k + 1)))
        .collect();
    dsts.extend((0..BUNDLES).map(|j| ip(&format!("198.51.100.{}", 100 + j))));
    const ROUNDS: u16 = 500;
    let mut seen = Seen::default();
    let mut out = 0u64;
    for n in 0..ROUNDS {
        for (i, d) in dsts.iter().enumerate() {
            // Two source ports per destination: two flows of one SA, one on
            // each queue.
            let queue = (i + usize::from(n)) % 2;
            inputs[queue]
                .send(udp_packet(ip("192.0.2.10"), *d, 1000 + queue as u16, n, 64))
                .unwrap();
        }
        for o in &outputs {
            while let Ok(f) = o.try_recv() {
                out += 1;
                seen.frame(&keys, f);
            }
        }
    }
    let expected = u64::from(ROUNDS) * dsts.len() as u64;
    let deadline = Instant::now() + Duration::from_secs(20);
    while out < expected && Instant::now() < deadline {
        let before = out;
        for o in &outputs {
            while let Ok(f) = o.try_recv() {
                out += 1;
                seen.frame(&keys, f);
            }
        }
        if out == before {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let (report, failure) = running.stop();
    assert_eq!(failure, None);
    assert_eq!(out, expected, "every frame out once: {:?}", report.pipeline);
    assert!(
        seen.repeats.is_empty(),
        "pairs sealed twice: {:x?}",
        seen.repeats
    );
    assert_eq!(seen.unopened, 0);
    assert_eq!(report.stage.total_drops(), 0, "{:?}", report.stage);
    assert_eq!(report.pipeline.total_drops(), 0, "{:?}", report.pipeline);
    assert_eq!(report.stage.outbound_protected, expected);
    // Both queues' frames went both ways: each queue received half of
    // every SA's frames, and the owner took those of the other.
    assert!(
        report.pipeline.handed_over > expected / 4,
        "{:?}",
        report.pipeline
    );
    assert!(
        report.pipeline.handed_over < expected * 3 / 4,
        "{:?}",
        report.pipeline
    );
    let owners: HashSet<_> = report.sas.iter().map(|s| s.name.clone()).collect();
    assert_eq!(
        owners.len(),
        report.sas.len(),
        "each SA reported by one owner"
    );
}

/// Queues mode, fail closed: while the owner of half the SAs is stuck, the
/// frames handed to it beyond its inbox are dropped and counted as
/// `queue_full`; every frame sent is either out or counted.
#[test]
fn a_full_inbox_drops_what_is_handed_over_and_counts_it() {
    let set = parse_policy(&policy(), "queues.json").unwrap();
    let maker = move || {
        let mut stage = IpsecStage::new(StageConfig::default());
        set.apply(&mut stage, Timestamp::ZERO).unwrap();
        stage
    };
    let mut queues = Vec::new();
    let mut inputs = Vec::new();
    let mut outputs = Vec::new();
    for _ in 0..2 {
        let (host, host_in, _host_out) = port();
        let (network, _net_in, net_out) = port();
        queues.push(runner::QueuePorts { host, network });
        inputs.push(host_in);
        outputs.push(net_out);
    }
    let running = runner::start_queues(
        &runner::QueueConfig { inbox_depth: 2 },
        queues,
        &maker,
        &|_| None,
        &|_| {},
        None,
    );
    running.stall("bitsgw-queue-1", Duration::from_millis(1500));
    std::thread::sleep(Duration::from_millis(100));
    let dsts: Vec<IpAddr> = (0..SINGLES)
        .map(|k| ip(&format!("198.51.100.{}", k + 1)))
        .collect();
    let mut sent = 0u64;
    for n in 0..400u16 {
        for d in &dsts {
            inputs[0]
                .send(udp_packet(ip("192.0.2.10"), *d, 1000, n, 64))
                .unwrap();
            sent += 1;
        }
        if n % 20 == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let mut out = 0u64;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut quiet = Instant::now();
    while Instant::now() < deadline && quiet.elapsed() < Duration::from_millis(2500) {
        for o in &outputs {
            while o.try_recv().is_ok() {
                out += 1;
                quiet = Instant::now();
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let (report, failure) = running.stop();
    assert_eq!(failure, None);
    let full = report
        .pipeline
        .drops(bitsgw_pipeline::counters::PipelineDrop::QueueFull);
    assert!(full > 0, "{:?}", report.pipeline);
    assert!(report.pipeline.handed_over > 0, "{:?}", report.pipeline);
    assert_eq!(out + full, sent, "out {out}, queue_full {full}");
    assert_eq!(report.stage.total_drops(), 0, "{:?}", report.stage);
}
