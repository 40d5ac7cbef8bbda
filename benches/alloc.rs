//! Heap allocations per packet in steady state (DESIGN.md: "No heap
//! allocation per packet in steady state"), counted by a global allocator
//! that counts every thread (stats_alloc).
//!
//! 1. The sans-IO core: gateway B encrypts an Ethernet frame (tunnel-mode
//!    ESP, AES-GCM-128), gateway A decrypts it (replay window 64, so every
//!    packet is new), 1M times, frames copied into reused buffers.
//! 2. The threaded runner (`bitsgw_pipeline::runner`, one and two
//!    workers, and running to completion), host side to network side (encrypt), fed by a port that
//!    copies prebuilt frames into the runner's buffers and keeps a bounded
//!    number in flight, and emptied by a port that only counts: 1M packets.
//!
//! Each counts from after a warm-up (10 000 packets) to the end, and prints
//! allocations and bytes per packet. `cargo bench --bench alloc`.

use bitsgw_ipsec::config::parse_policy;
use bitsgw_ipsec::{IpsecStage, StageConfig};
use bitsgw_pipeline::port::{Port, PortError, RxPort, TxPort};
use bitsgw_pipeline::runner::{self, RunnerConfig};
use bitsgw_pipeline::{Gateway, LinkType, NoTap, Side};
use bitsgw_wire::craft::udp_packet;
use bitsgw_wire::{PacketBuf, Timestamp};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use std::alloc::System;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const PACKETS: u64 = 1_000_000;
const WARM: u64 = 10_000;
const FLOWS: usize = 4;

fn policy(a: bool, replay_window: u32) -> String {
    let (me_out, peer_out) = if a {
        ("203.0.113.1", "203.0.113.2")
    } else {
        ("203.0.113.2", "203.0.113.1")
    };
    let mut spd_out = Vec::new();
    let mut spd_in = Vec::new();
    let mut sad = Vec::new();
    let mut sad_in = Vec::new();
    for f in 0..FLOWS {
        let (me, peer) = if a {
            (
                format!("192.0.2.{}", 10 + f),
                format!("198.51.100.{}", 10 + f),
            )
        } else {
            (
                format!("198.51.100.{}", 10 + f),
                format!("192.0.2.{}", 10 + f),
            )
        };
        let (spi_out, spi_in) = if a {
            (0x1000 + f, 0x2000 + f)
        } else {
            (0x2000 + f, 0x1000 + f)
        };
        spd_out.push(format!(
            r#"{{"name": "o{f}", "local": "{me}/32", "remote": "{peer}/32", "action": "protect", "sa": "out{f}"}}"#
        ));
        spd_in.push(format!(
            r#"{{"name": "i{f}", "local": "{me}/32", "remote": "{peer}/32", "action": "protect", "sa": "in{f}"}}"#
        ));
        // Each SA has a key of its own (one key on two SAs is refused),
        // the same on both sides: the SPI in its first octets.
        let sa = |name: String, dir: &str, spi: usize| {
            let key = format!("0x{spi:08x}445566778899aabbccddeeff0a0b0c0d");
            format!(
                r#"{{"name": "{name}", "direction": "{dir}", "spi": {spi}, "mode": "tunnel",
                    "tunnel": {{"local": "{me_out}", "remote": "{peer_out}"}},
                    "transform": "aes-gcm-128", "enc_key": "{key}", "replay_window": {replay_window}}}"#
            )
        };
        sad.push(sa(format!("out{f}"), "outbound", spi_out));
        sad_in.push(sa(format!("in{f}"), "inbound", spi_in));
    }
    sad.extend(sad_in);
    format!(
        r#"{{"danger_static_keys_for_counter_mode": true, "spd": {{"outbound": [{}], "inbound": [{}]}}, "sad": [{}]}}"#,
        spd_out.join(","),
        spd_in.join(","),
        sad.join(",")
    )
}

fn stage(a: bool, replay_window: u32) -> IpsecStage {
    let text = policy(a, replay_window);
    let set = parse_policy(&text, "alloc-bench").unwrap_or_else(|e| panic!("{e}"));
    let mut stage = IpsecStage::new(StageConfig::default());
    set.apply(&mut stage, Timestamp::ZERO)
        .unwrap_or_else(|e| panic!("{e}"));
    stage
}

/// Ethernet frames of 512-byte UDP packets from the host behind `a` (or
/// behind B), one per flow.
fn frames(from_a: bool) -> Vec<Vec<u8>> {
    (0..FLOWS)
        .map(|f| {
            let (src, dst) = (
                format!("192.0.2.{}", 10 + f),
                format!("198.51.100.{}", 10 + f),
            );
            let (src, dst) = if from_a { (src, dst) } else { (dst, src) };
            let ip = udp_packet(
                src.parse().unwrap_or_else(|e| panic!("{e}")),
                dst.parse().unwrap_or_else(|e| panic!("{e}")),
                4000,
                5000,
                484,
            );
            let mut eth = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
            eth.extend_from_slice(&ip);
            eth
        })
        .collect()
}

struct Counts {
    allocs: usize,
    reallocs: usize,
    bytes: usize,
}

fn report(what: &str, packets: u64, c: &Counts) {
    println!(
        "{what:<44} {packets:>8} packets: {:>8} allocations ({:.6}/packet), {:>6} reallocations, {:>10} bytes ({:.3}/packet)",
        c.allocs,
        c.allocs as f64 / packets as f64,
        c.reallocs,
        c.bytes,
        c.bytes as f64 / packets as f64,
    );
}

fn core() {
    let mut b = Gateway::new(stage(false, 64));
    let mut a = Gateway::new(stage(true, 64));
    let inputs = frames(false);
    let mut buf = PacketBuf::new();
    let mut wire = PacketBuf::new();
    let mut delivered = 0u64;
    let mut run = |n: u64, delivered: &mut u64| {
        for i in 0..n {
            let now = Timestamp(i * 1_000);
            let _ = buf.set(&inputs[(i % FLOWS as u64) as usize]);
            let mut emitted = false;
            let _ = b.handle_frame(
                Side::Host,
                LinkType::Ethernet,
                &mut buf,
                now,
                &mut |side, frame| {
                    if side == Side::Network {
                        emitted = wire.set(frame).is_ok();
                    }
                },
                &mut NoTap,
            );
            if !emitted {
                continue;
            }
            let _ = a.handle_frame(
                Side::Network,
                LinkType::Ethernet,
                &mut wire,
                now,
                &mut |side, _| {
                    if side == Side::Host {
                        *delivered += 1;
                    }
                },
                &mut NoTap,
            );
        }
    };
    run(WARM, &mut delivered);
    let region = Region::new(GLOBAL);
    run(PACKETS, &mut delivered);
    let s = region.change();
    assert_eq!(delivered, WARM + PACKETS, "every packet decrypted");
    report(
        "gateway core (encrypt at B + decrypt at A)",
        PACKETS,
        &Counts {
            allocs: s.allocations,
            reallocs: s.reallocations,
            bytes: s.bytes_allocated,
        },
    );
}

struct Shared {
    target: AtomicU64,
    emitted: AtomicU64,
    closed: AtomicBool,
}

struct Gen {
    frames: Vec<Vec<u8>>,
    next: u64,
    window: u64,
    shared: Arc<Shared>,
}

impl Gen {
    fn one(&mut self, buf: &mut PacketBuf) -> bool {
        let s = &*self.shared;
        if self.next >= s.target.load(Ordering::Acquire)
            || self.next - s.emitted.load(Ordering::Acquire) >= self.window
        {
            return false;
        }
        let f = &self.frames[(self.next % self.frames.len() as u64) as usize];
        let ok = buf.set(f).is_ok();
        self.next += 1;
        ok
    }
}

impl RxPort for Gen {
    fn name(&self) -> &str {
        "gen"
    }
    fn link_type(&self) -> LinkType {
        LinkType::Ethernet
    }
    fn recv(&mut self, buf: &mut PacketBuf) -> Result<bool, PortError> {
        let deadline = Instant::now() + Duration::from_millis(10);
        loop {
            if self.one(buf) {
                return Ok(true);
            }
            if self.shared.closed.load(Ordering::Acquire) {
                return Err(PortError::Closed { port: "gen".into() });
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::yield_now();
        }
    }
    fn recv_nowait(&mut self, buf: &mut PacketBuf) -> Result<bool, PortError> {
        Ok(self.one(buf))
    }
}

struct Idle(Arc<Shared>);

impl RxPort for Idle {
    fn name(&self) -> &str {
        "idle"
    }
    fn link_type(&self) -> LinkType {
        LinkType::Ethernet
    }
    fn recv(&mut self, _: &mut PacketBuf) -> Result<bool, PortError> {
        if self.0.closed.load(Ordering::Acquire) {
            return Err(PortError::Closed {
                port: "idle".into(),
            });
        }
        std::thread::sleep(Duration::from_millis(5));
        Ok(false)
    }
}

struct Count(Arc<Shared>);

impl TxPort for Count {
    fn name(&self) -> &str {
        "count"
    }
    fn link_type(&self) -> LinkType {
        LinkType::Ethernet
    }
    fn send(&mut self, _: &[u8]) -> Result<(), PortError> {
        self.0.emitted.fetch_add(1, Ordering::Release);
        Ok(())
    }
}

fn threaded(workers: usize) {
    let shared = Arc::new(Shared {
        target: AtomicU64::new(0),
        emitted: AtomicU64::new(0),
        closed: AtomicBool::new(false),
    });
    let window = 256;
    let host = Port {
        rx: Box::new(Gen {
            frames: frames(true),
            next: 0,
            window,
            shared: Arc::clone(&shared),
        }),
        tx: Box::new(Count(Arc::new(Shared {
            target: AtomicU64::new(0),
            emitted: AtomicU64::new(0),
            closed: AtomicBool::new(false),
        }))),
    };
    let network = Port {
        rx: Box::new(Idle(Arc::clone(&shared))),
        tx: Box::new(Count(Arc::clone(&shared))),
    };
    // 0 workers: run to completion (each port's receive thread handles its
    // own frames).
    let cfg = RunnerConfig {
        workers: workers.max(1),
        queue_depth: window as usize,
        run_to_completion: workers == 0,
    };
    let running = runner::start(&cfg, host, network, &|| stage(true, 64), None);
    let wait = |n: u64| {
        let deadline = Instant::now() + Duration::from_secs(120);
        while shared.emitted.load(Ordering::Acquire) < n {
            assert!(Instant::now() < deadline, "stalled");
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    shared.target.store(WARM, Ordering::Release);
    wait(WARM);
    let region = Region::new(GLOBAL);
    shared.target.store(WARM + PACKETS, Ordering::Release);
    wait(WARM + PACKETS);
    let s = region.change();
    shared.closed.store(true, Ordering::Release);
    let (report_, failure) = running.stop();
    assert!(failure.is_none(), "{failure:?}");
    assert_eq!(
        report_.stage.total_drops() + report_.pipeline.total_drops(),
        0,
        "no drops"
    );
    report(
        &if workers == 0 {
            "threaded runner, run to completion, encrypt".to_string()
        } else {
            format!("threaded runner, {workers} worker(s), encrypt")
        },
        PACKETS,
        &Counts {
            allocs: s.allocations,
            reallocs: s.reallocations,
            bytes: s.bytes_allocated,
        },
    );
}

fn main() {
    // `cargo test --benches` runs this with `--test`-less args too; the
    // whole run takes a few seconds either way.
    core();
    threaded(1);
    threaded(2);
    threaded(0);
}
