//! The threaded pipeline with in-memory ports: two gateways back to back,
//! several workers, per-SA order kept, counters that reconcile, and a dead
//! worker stopping all forwarding.
#![allow(clippy::unwrap_used)]

mod common;

use bitsgw_ipsec::walked::ParseCounts;
use bitsgw_ipsec::{IpsecStage, StageConfig};
use bitsgw_pipeline::runner::{self, Failure, RunnerConfig};
use bitsgw_wire::craft::udp_packet;
use bitsgw_wire::Timestamp;
use crossbeam_channel::Receiver;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::chan::port;

fn stage_maker(name: &'static str) -> impl Fn() -> IpsecStage {
    move || {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../policies")
            .join(name);
        let set = common::policy_file(&path);
        let mut stage = IpsecStage::new(StageConfig::default());
        set.apply(&mut stage, Timestamp::ZERO).unwrap();
        stage
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn collect(rx: &Receiver<Vec<u8>>, n: usize) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut out = Vec::new();
    while out.len() < n {
        match rx.recv_deadline(deadline) {
            Ok(f) => out.push(f),
            Err(_) => break,
        }
    }
    out
}

#[test]
fn two_gateways_with_workers_keep_per_flow_order_and_reconcile() {
    back_to_back(&RunnerConfig {
        workers: 2,
        queue_depth: 1024,
        run_to_completion: false,
    });
}

/// Run to completion: each port's receive thread handles its frames with
/// its own gateway; the host side owns the outbound SAs, the network side
/// the inbound ones, and each SA is still reported once.
#[test]
fn two_gateways_running_to_completion_keep_order_and_reconcile() {
    back_to_back(&RunnerConfig {
        workers: 1,
        queue_depth: 1024,
        run_to_completion: true,
    });
}

fn back_to_back(cfg: &RunnerConfig) {
    let (a_host, a_host_in, _a_host_out) = port();
    let (a_net, _a_net_in, a_net_out) = port();
    let (b_host, _b_host_in, b_host_out) = port();
    let (b_net, b_net_in, _b_net_out) = port();
    let a = runner::start(
        cfg,
        a_host,
        a_net,
        &stage_maker("site-to-site-a.json"),
        None,
    );
    let b = runner::start(
        cfg,
        b_host,
        b_net,
        &stage_maker("site-to-site-b.json"),
        None,
    );
    // Two SAs (IPv4 and IPv6 sites), interleaved, numbered per flow.
    let mut sent = Vec::new();
    for n in 0..300u16 {
        let p = if n % 2 == 0 {
            udp_packet(ip("192.0.2.10"), ip("198.51.100.20"), 1000, n, 100)
        } else {
            udp_packet(ip("2001:db8:a::10"), ip("2001:db8:b::20"), 1000, n, 100)
        };
        sent.push(p.clone());
        a_host_in.send(p).unwrap();
    }
    // Carry A's wire to B's wire.
    let wire = collect(&a_net_out, 300);
    assert_eq!(wire.len(), 300);
    for f in &wire {
        assert!(f[9] == 50 || f[6] == 50, "only ESP on the wire");
        b_net_in.send(f.clone()).unwrap();
    }
    let got = collect(&b_host_out, 300);
    assert_eq!(got.len(), 300);
    // Per flow (per SA), the order is the order sent.
    for v6 in [false, true] {
        let flow = |v: &Vec<Vec<u8>>| -> Vec<Vec<u8>> {
            v.iter()
                .filter(|p| (p[0] >> 4 == 6) == v6)
                .cloned()
                .collect()
        };
        assert_eq!(flow(&got), flow(&sent));
    }
    let (ra, fa) = a.stop();
    let (rb, fb) = b.stop();
    assert_eq!((fa, fb), (None, None));
    // Parse once: each frame's IP header is walked once and its flow
    // classified by the SPD once, receive thread and worker together
    // (inbound ESP is matched by SPI and its SA's selectors, not the SPD).
    assert_eq!(
        ra.parse,
        ParseCounts {
            ip_walks: 300,
            spd_classifications: 300
        }
    );
    assert_eq!(
        rb.parse,
        ParseCounts {
            ip_walks: 300,
            spd_classifications: 0
        }
    );
    assert_eq!(ra.stage.outbound_protected, 300);
    assert_eq!(rb.stage.inbound_decrypted, 300);
    assert_eq!(rb.stage.total_drops(), 0);
    assert_eq!(ra.pipeline.host_rx.frames, 300);
    assert_eq!(ra.pipeline.net_tx.frames, 300);
    // Each SA reported once, by its owner, with its own count.
    let out_sas: Vec<_> = ra.sas.iter().filter(|s| s.stats.packets > 0).collect();
    assert_eq!(out_sas.len(), 2);
    assert!(out_sas
        .iter()
        .all(|s| s.stats.packets == 150 && s.seq == 150));
    assert_eq!(ra.sas.len(), 4);
    let in_sas: Vec<_> = rb.sas.iter().filter(|s| s.stats.packets > 0).collect();
    assert_eq!(in_sas.len(), 2);
    assert!(in_sas.iter().all(|s| s.stats.packets == 150));
    assert_eq!(rb.sas.len(), 4);
}

#[test]
fn a_dead_worker_stops_forwarding() {
    a_dead_thread_stops_forwarding(
        &RunnerConfig {
            workers: 2,
            queue_depth: 64,
            run_to_completion: false,
        },
        "bitsgw-worker-1",
    );
}

#[test]
fn a_dead_receive_thread_running_to_completion_stops_forwarding() {
    a_dead_thread_stops_forwarding(
        &RunnerConfig {
            workers: 1,
            queue_depth: 64,
            run_to_completion: true,
        },
        "bitsgw-rx-network",
    );
}

fn a_dead_thread_stops_forwarding(cfg: &RunnerConfig, victim: &'static str) {
    let (host, host_in, _host_out) = port();
    let (net, _net_in, net_out) = port();
    let r = runner::start(cfg, host, net, &stage_maker("site-to-site-a.json"), None);
    r.apply(Arc::new(move |_gw| {
        let name = std::thread::current().name().map(str::to_string);
        if name.is_some_and(|n| n == victim) {
            panic!("injected fault");
        }
    }));
    let deadline = Instant::now() + Duration::from_secs(5);
    while r.is_running() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!r.is_running());
    assert!(
        matches!(r.failure(), Some(Failure::WorkerDied(ref why)) if why.contains("injected fault"))
    );
    // The receive thread may already have let go of the port.
    let _ = host_in.send(udp_packet(ip("192.0.2.10"), ip("198.51.100.20"), 1, 2, 10));
    assert!(net_out.recv_timeout(Duration::from_millis(200)).is_err());
    let (_, failure) = r.stop();
    assert!(failure.is_some());
}

/// Every worker holds every SA, so every worker sees its lifetimes run out;
/// the control plane hears of each expiry once, from the SA's owner.
#[test]
fn lifetime_events_are_reported_once() {
    lifetime_events_once(&RunnerConfig {
        workers: 3,
        queue_depth: 64,
        run_to_completion: false,
    });
}

#[test]
fn lifetime_events_are_reported_once_running_to_completion() {
    lifetime_events_once(&RunnerConfig {
        workers: 1,
        queue_depth: 64,
        run_to_completion: true,
    });
}

fn lifetime_events_once(cfg: &RunnerConfig) {
    let short = || {
        let path =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../policies/site-to-site-a.json");
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        for sa in v["sad"].as_array_mut().unwrap() {
            sa["lifetime"] = serde_json::json!({"hard": {"seconds": 1}});
        }
        let set = bitsgw_ipsec::config::parse_policy(&v.to_string(), "short.json").unwrap();
        let mut stage = IpsecStage::new(StageConfig::default());
        set.apply(&mut stage, Timestamp::ZERO).unwrap();
        stage
    };
    let sas = short().sad().len();
    let (host, _host_in, _host_out) = port();
    let (net, _net_in, _net_out) = port();
    let r = runner::start(cfg, host, net, &short, None);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut events = Vec::new();
    while events.len() < sas && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        events.extend(r.report(Duration::from_secs(2)).events);
    }
    std::thread::sleep(Duration::from_millis(300));
    let (last, failure) = r.stop();
    events.extend(last.events);
    assert_eq!(failure, None);
    assert_eq!(events.len(), sas, "{events:?}");
    assert!(events
        .iter()
        .all(|e| matches!(e, bitsgw_ipsec::Event::HardExpired { .. })));
}

/// A report says when each SA's time limits fall due, on the pipeline's
/// clock, which it gives too.
#[test]
fn reports_give_the_time_limits_of_each_sa() {
    let report_with = |lifetime: Option<serde_json::Value>| {
        let maker = move || {
            let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../policies/site-to-site-a.json");
            let mut v: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
            for sa in v["sad"].as_array_mut().unwrap() {
                match &lifetime {
                    Some(l) => sa["lifetime"] = l.clone(),
                    None => {
                        sa.as_object_mut().unwrap().remove("lifetime");
                    }
                }
            }
            let set = bitsgw_ipsec::config::parse_policy(&v.to_string(), "limits.json").unwrap();
            let mut stage = IpsecStage::new(StageConfig::default());
            set.apply(&mut stage, Timestamp::ZERO).unwrap();
            stage
        };
        let (host, _host_in, _host_out) = port();
        let (net, _net_in, _net_out) = port();
        let cfg = RunnerConfig {
            workers: 2,
            queue_depth: 64,
            run_to_completion: false,
        };
        let r = runner::start(&cfg, host, net, &maker, None);
        let report = r.report(Duration::from_secs(2));
        let _ = r.stop();
        assert!(!report.sas.is_empty());
        report
    };
    let at = |s| Some(Timestamp::ZERO.saturating_add(Duration::from_secs(s)));
    let report = report_with(Some(
        serde_json::json!({"soft": {"seconds": 300}, "hard": {"seconds": 600}}),
    ));
    assert!(report.now < Timestamp::ZERO.saturating_add(Duration::from_secs(60)));
    assert!(report.now > Timestamp::ZERO);
    for sa in &report.sas {
        assert_eq!((sa.soft_expiry, sa.hard_expiry), (at(300), at(600)));
    }
    let report = report_with(None);
    assert!(report
        .sas
        .iter()
        .all(|sa| sa.soft_expiry.is_none() && sa.hard_expiry.is_none()));
}

/// The heartbeats the watchdog is fed from: every thread is live while
/// idle, a receive thread stuck in one turn is named once its heartbeat is
/// older than the bound, and is live again when it goes round again.
#[test]
fn a_stuck_receive_thread_is_reported_stalled_and_live_again_after() {
    let (mut host, _host_in, _host_out) = port();
    let (net, _net_in, _net_out) = port();
    let stall = Arc::new(std::sync::atomic::AtomicBool::new(false));
    host.rx = Box::new(StallingRx {
        inner: host.rx,
        stall: Arc::clone(&stall),
    });
    let cfg = RunnerConfig {
        workers: 2,
        queue_depth: 64,
        run_to_completion: false,
    };
    let r = runner::start(&cfg, host, net, &stage_maker("site-to-site-a.json"), None);
    let bound = Duration::from_millis(500);
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(r.stalled(bound), None, "idle threads still go round");
    stall.store(true, std::sync::atomic::Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = None;
    while seen.is_none() && Instant::now() < deadline {
        seen = r.stalled(bound).map(str::to_string);
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(seen.as_deref(), Some("bitsgw-rx-host"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while r.stalled(bound).is_some() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(r.stalled(bound), None, "the thread went round again");
    assert!(r.is_running());
    let (_, failure) = r.stop();
    assert!(failure.is_none());
}

/// A receive port that, once told, blocks its thread in one receive for
/// 1.5 s (a stuck driver).
struct StallingRx {
    inner: Box<dyn bitsgw_pipeline::port::RxPort>,
    stall: Arc<std::sync::atomic::AtomicBool>,
}

impl bitsgw_pipeline::port::RxPort for StallingRx {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn link_type(&self) -> bitsgw_pipeline::LinkType {
        self.inner.link_type()
    }
    fn recv(
        &mut self,
        buf: &mut bitsgw_wire::PacketBuf,
    ) -> Result<bool, bitsgw_pipeline::port::PortError> {
        if self.stall.swap(false, std::sync::atomic::Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1500));
        }
        self.inner.recv(buf)
    }
    fn recv_nowait(
        &mut self,
        buf: &mut bitsgw_wire::PacketBuf,
    ) -> Result<bool, bitsgw_pipeline::port::PortError> {
        self.inner.recv_nowait(buf)
    }
}
