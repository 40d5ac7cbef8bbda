//! `make bench-e2e`: iperf3 TCP between two unmodified hosts in network
//! namespaces, over the same routed path, in one run:
//! 1. bare veth pairs (host - router - host);
//! 2. through two bitsgw gateways inline (AF_PACKET ports, two workers
//!    each) whose policies BYPASS everything;
//! 3. through the same gateways with ESP AES-GCM-128 in tunnel mode, the
//!    SAs keyed by IKEv2 (PSK; the peers of `tests/lab_ike.rs`);
//! 4. and 5. the same two, the gateways running to completion (`"pipeline":
//!    "run-to-completion"`: each port's receive thread handles its frames),
//!    and the ESP row once more with two receive queues per gateway
//!    running to completion (`"pipeline": "queues"`, the kernel steering
//!    each frame to the queue that owns its SA);
//! 6. through two strongSwan gateways (charon with kernel-libipsec, its
//!    userspace ESP: IKEv2 PSK, ESP AES-GCM-128 in tunnel mode, UDP-
//!    encapsulated on 4500) that are the hosts' routers;
//! 7. through two DPDK ipsec-secgw gateways in bitsgw's places, with the
//!    same ESP ([`secgw`]); skipped, saying why, where Debian's dpdk-doc
//!    and libdpdk-dev can not be had.
//!
//! A second benchmark, [`ping_latency_during_child_sa_rekeys`], measures
//! the data path's latency (a ping every 2 ms for 10 s through the two
//! bitsgw gateways' IKE-keyed tunnel) without rekeys and while CHILD_SAs
//! are rekeyed every 2 s (A starts them: B's 3 s lifetime never comes
//! first, each new CHILD_SA restarting both clocks): p50, p99, max, lost.
//!
//! Each path is measured three times in a row. The table gives the median
//! and range of each, its ratio to the bare path, and the ratios of
//! bitsgw's ESP to strongSwan's and to its own BYPASS. Ignored by `cargo
//! test` (it measures, and takes about two minutes); needs
//! root, iperf3 and strongSwan (`scripts/setup-test-deps.sh`), and says so
//! and returns without root. Run it with `cargo test --release --test
//! bench_e2e -- --ignored --nocapture --test-threads=1` (its two
//! benchmarks one after the other).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "bench_e2e/lab.rs"]
mod lab;
#[path = "bench_e2e/secgw.rs"]
mod secgw;

use common::ike::{
    gateway_with, router_answers_for_gateways, socket_with, QUEUES, RUN_TO_COMPLETION, WORKERS,
};
use common::{iperf3, is_root, start_charon, swanctl, wait_for, Lab, CHARON};
use lab::{build, bypass_policy, config, socket, start, tunnel_up, PSK};
use std::path::{Path, PathBuf};
use std::time::Duration;

const SECONDS: &str = "5";

/// iperf3 runs per path unless `BITSGW_E2E_RUNS` says otherwise; the
/// table gives their median (and range), so one disturbed run on the
/// shared cores does not decide a ratio.
const DEFAULT_RUNS: usize = 3;

fn runs() -> usize {
    std::env::var("BITSGW_E2E_RUNS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(DEFAULT_RUNS)
}

/// One path's runs.
#[derive(Debug, Clone, Copy)]
struct Measured {
    /// Median Gbit/s received.
    median: f64,
    /// Slowest run.
    min: f64,
    /// Fastest run.
    max: f64,
    /// TCP retransmits, all runs together.
    retransmits: u64,
}

/// Host A - gateway A - router - gateway B - host B, the gateways being
/// IP routers (the hosts' default gateways) for strongSwan; the tunnel
/// runs between their router-side addresses 203.0.113.1 and 203.0.113.6.
fn build_routed(lab: &Lab) {
    lab.link("hA", "eth0", "gA", "host");
    lab.link("gA", "wan", "r", "ra");
    lab.link("r", "rb", "gB", "wan");
    lab.link("gB", "host", "hB", "eth0");
    for (ns, devs) in [
        ("hA", &["eth0"][..]),
        ("gA", &["host", "wan"][..]),
        ("r", &["ra", "rb"][..]),
        ("gB", &["host", "wan"][..]),
        ("hB", &["eth0"][..]),
    ] {
        lab.up(ns, devs, false);
    }
    for (h, addr, gw) in [
        ("hA", "192.0.2.10/24", "192.0.2.1"),
        ("hB", "198.51.100.20/24", "198.51.100.1"),
    ] {
        lab.exec(h, &["ip", "addr", "add", addr, "dev", "eth0"]);
        lab.exec(h, &["ip", "link", "set", "eth0", "mtu", "1400"]);
        lab.exec(h, &["ip", "route", "add", "default", "via", gw]);
    }
    for (ns, dev, addr) in [
        ("gA", "host", "192.0.2.1/24"),
        ("gA", "wan", "203.0.113.1/30"),
        ("r", "ra", "203.0.113.2/30"),
        ("r", "rb", "203.0.113.5/30"),
        ("gB", "wan", "203.0.113.6/30"),
        ("gB", "host", "198.51.100.1/24"),
    ] {
        lab.exec(ns, &["ip", "addr", "add", addr, "dev", dev]);
    }
    lab.exec(
        "gA",
        &["ip", "route", "add", "default", "via", "203.0.113.2"],
    );
    lab.exec(
        "gB",
        &["ip", "route", "add", "default", "via", "203.0.113.5"],
    );
    for ns in ["gA", "r", "gB"] {
        for k in [
            "net.ipv4.ip_forward=1",
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
        ] {
            lab.exec(ns, &["sysctl", "-qw", k]);
        }
    }
}

/// The folder of one charon instance, `lab.dir/swan-<side>`, and its
/// swanctl.conf.
fn swan_config(
    lab: &Lab,
    side: &str,
    local: &str,
    remote: &str,
    ts: (&str, &str),
) -> (PathBuf, String) {
    let dir = lab.dir.join(format!("swan-{side}"));
    std::fs::create_dir_all(dir.join("run")).unwrap();
    let (me, peer) = if side == "a" {
        ("gw-a.example", "gw-b.example")
    } else {
        ("gw-b.example", "gw-a.example")
    };
    let swanctl = format!(
        r#"connections {{
  bench {{
    version = 2
    local_addrs = {local}
    remote_addrs = {remote}
    proposals = aes128gcm16-prfsha256-ecp256
    encap = yes
    local {{
      auth = psk
      id = {me}
    }}
    remote {{
      auth = psk
      id = {peer}
    }}
    children {{
      net {{
        local_ts = {}
        remote_ts = {}
        mode = tunnel
        esp_proposals = aes128gcm16
      }}
    }}
  }}
}}
secrets {{
  ike-bench {{
    id-a = gw-a.example
    id-b = gw-b.example
    secret = "bench-e2e-only-not-a-secret"
  }}
}}
"#,
        ts.0, ts.1
    );
    (dir, swanctl)
}

/// iperf3 through two charon instances with kernel-libipsec.
fn strongswan_row(lab: &mut Lab) -> Measured {
    build_routed(lab);
    assert!(
        Path::new(CHARON).exists(),
        "{CHARON} missing: run scripts/setup-test-deps.sh"
    );
    let mut sides = Vec::new();
    for (side, ns, local, remote, ts) in [
        (
            "a",
            "gA",
            "203.0.113.1",
            "203.0.113.6",
            ("192.0.2.0/24", "198.51.100.0/24"),
        ),
        (
            "b",
            "gB",
            "203.0.113.6",
            "203.0.113.1",
            ("198.51.100.0/24", "192.0.2.0/24"),
        ),
    ] {
        let (dir, conf) = swan_config(lab, side, local, remote, ts);
        let pid = start_charon(lab, ns, &dir, &conf);
        sides.push((ns, dir, pid));
    }
    swanctl(
        lab,
        "gA",
        &sides[0].1,
        &["--initiate", "--child", "net", "--timeout", "20"],
    );
    for (ns, dir, _) in &sides {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            let sas = swanctl(lab, ns, dir, &["--list-sas"]);
            if sas.contains("INSTALLED") {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{ns}: CHILD_SA never installed: {sas}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let row = iperf(lab);
    for (_, _, pid) in &sides {
        lab.terminate(*pid);
    }
    row
}

/// [`runs`] iperf3 TCP runs from host A to host B, one after the other.
fn iperf(lab: &mut Lab) -> Measured {
    let n = runs();
    let mut runs: Vec<(f64, u64)> = (0..n).map(|_| iperf_once(lab)).collect();
    runs.sort_by(|a, b| a.0.total_cmp(&b.0));
    Measured {
        median: runs[n / 2].0,
        min: runs[0].0,
        max: runs[n - 1].0,
        retransmits: runs.iter().map(|r| r.1).sum(),
    }
}

/// One iperf3 TCP run from host A to host B: (Gbit/s received,
/// retransmits).
fn iperf_once(lab: &mut Lab) -> (f64, u64) {
    let v = iperf3(lab, "hA", "hB", "198.51.100.20", SECONDS);
    (
        v["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .unwrap_or(0.0)
            / 1e9,
        v["end"]["sum_sent"]["retransmits"].as_u64().unwrap_or(0),
    )
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
#[ignore = "a benchmark: make bench-e2e"]
fn iperf3_bare_bypass_esp_and_strongswan() {
    if !is_root() {
        eprintln!("bench-e2e skipped: it needs root (network namespaces)");
        return;
    }
    let load_before = load();
    let mut rows: Vec<(&str, Measured)> = Vec::new();
    {
        let mut lab = Lab::new("eb", &["hA", "r", "hB"]);
        build(&lab, false);
        rows.push(("bare veth path", iperf(&mut lab)));
    }
    {
        let mut lab = Lab::new("eg", &["hA", "gA", "r", "gB", "hB"]);
        build(&lab, true);
        let bypass = bypass_policy(&lab);
        router_answers_for_gateways(&lab);
        // ESP rows: SAs keyed by IKEv2 (PSK, AES-GCM-128 and P-256 for IKE,
        // AES-GCM-128 for ESP), CHILD_SAs not rekeyed within the run.
        for (tag, label, ike, pipeline) in [
            ("bypass", "bitsgw x2, BYPASS", false, WORKERS),
            ("esp", "bitsgw x2, ESP AES-GCM-128 (IKE)", true, WORKERS),
            (
                "bypass-rtc",
                "bitsgw x2 rtc, BYPASS",
                false,
                RUN_TO_COMPLETION,
            ),
            (
                "esp-rtc",
                "bitsgw x2 rtc, ESP AES-GCM-128 (IKE)",
                true,
                RUN_TO_COMPLETION,
            ),
            (
                "esp-queues",
                "bitsgw x2 queues, ESP AES-GCM-128 (IKE)",
                true,
                QUEUES,
            ),
        ] {
            let [(ca, sa), (cb, sb)] = ["a", "b"].map(|side| {
                if ike {
                    (
                        gateway_with(&lab, side, tag, pipeline, (Some(PSK), "", start(side))),
                        socket_with(&lab, side, tag),
                    )
                } else {
                    (
                        config(&lab, side, &bypass, tag, pipeline),
                        socket(&lab, side, tag),
                    )
                }
            });
            let exe = env!("CARGO_BIN_EXE_bitsgw");
            // The responder first, so the initiator's first IKE_SA_INIT is
            // heard.
            let gb = lab.spawn("gB", &[exe, "run", cb.to_str().unwrap()]);
            wait_for(&sb);
            let ga = lab.spawn("gA", &[exe, "run", ca.to_str().unwrap()]);
            wait_for(&sa);
            if ike {
                tunnel_up(&lab);
            }
            rows.push((label, iperf(&mut lab)));
            lab.terminate(ga);
            lab.terminate(gb);
        }
    }
    {
        let mut lab = Lab::new("es", &["hA", "gA", "r", "gB", "hB"]);
        rows.push((
            "strongSwan x2, kernel-libipsec ESP",
            strongswan_row(&mut lab),
        ));
    }
    let secgw = match secgw::build_secgw() {
        Ok(binary) => {
            let mut lab = Lab::new("ed", &["hA", "gA", "r", "gB", "hB"]);
            rows.push((
                "DPDK ipsec-secgw x2, ESP AES-GCM-128",
                secgw::secgw_row(&mut lab, &binary),
            ));
            true
        }
        Err(why) => {
            eprintln!("bench-e2e: the DPDK ipsec-secgw row is skipped: {why}");
            false
        }
    };
    let g = |i: usize| rows[i].1.median;
    let bare = g(0);
    println!(
        "\nbench-e2e: iperf3 TCP, {} runs of {SECONDS} s per path, host MTU 1400; load average {load_before} (before) / {} (after)",
        runs(),
        load()
    );
    println!(
        "{:<36} {:>9} {:>15} {:>12} {:>8}",
        "path", "Gbit/s", "min..max", "retransmits", "ratio"
    );
    for (label, m) in &rows {
        println!(
            "{label:<36} {:>9.3} {:>15} {:>12} {:>8.3}",
            m.median,
            format!("{:.3}..{:.3}", m.min, m.max),
            m.retransmits,
            m.median / bare
        );
    }
    println!("(Gbit/s: the median run; ratios from the medians)");
    println!(
        "bitsgw ESP / strongSwan userspace ESP: {:.2} (workers), {:.2} (run to completion), {:.2} (queues)",
        g(2) / g(6),
        g(4) / g(6),
        g(5) / g(6)
    );
    if secgw {
        println!(
            "bitsgw ESP / DPDK ipsec-secgw ESP: {:.2} (workers), {:.2} (run to completion), {:.2} (queues)",
            g(2) / g(7),
            g(4) / g(7),
            g(5) / g(7)
        );
    }
    println!(
        "bitsgw ESP / bitsgw BYPASS: {:.2} (workers), {:.2} (run to completion)",
        g(2) / g(1),
        g(4) / g(3)
    );
    for (label, m) in &rows {
        assert!(m.min > 0.0, "{label}: no throughput");
    }
}

/// Round-trip times of one ping run and how many of its requests were
/// lost.
struct Pings {
    rtts_ms: Vec<f64>,
    sent: usize,
}

impl Pings {
    fn percentile(&self, p: f64) -> f64 {
        if self.rtts_ms.is_empty() {
            return f64::NAN;
        }
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let at = ((self.rtts_ms.len() - 1) as f64 * p).round() as usize;
        self.rtts_ms[at]
    }

    fn lost(&self) -> usize {
        self.sent - self.rtts_ms.len()
    }
}

/// A ping every 2 ms for 10 s from host A to host B; the round trips in
/// order of size. Duplicates (none expected) count once.
fn ping_flood(lab: &Lab) -> Pings {
    const COUNT: usize = 5000;
    let out = lab.try_exec(
        "hA",
        &[
            "ping",
            "-n",
            "-i",
            "0.002",
            "-c",
            &COUNT.to_string(),
            "-W",
            "1",
            "198.51.100.20",
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut seen = std::collections::HashSet::new();
    let mut rtts_ms: Vec<f64> = text
        .lines()
        .filter_map(|l| {
            let seq = l.split("icmp_seq=").nth(1)?.split_whitespace().next()?;
            let ms = l.split("time=").nth(1)?.split_whitespace().next()?;
            seen.insert(seq.to_string())
                .then(|| ms.parse::<f64>().ok())
                .flatten()
        })
        .collect();
    rtts_ms.sort_by(f64::total_cmp);
    Pings {
        rtts_ms,
        sent: COUNT,
    }
}

#[test]
#[ignore = "a benchmark: make bench-e2e"]
fn ping_latency_during_child_sa_rekeys() {
    if !is_root() {
        eprintln!("bench-e2e skipped: it needs root (network namespaces)");
        return;
    }
    let load_before = load();
    let mut lab = Lab::new("el", &["hA", "gA", "r", "gB", "hB"]);
    build(&lab, true);
    router_answers_for_gateways(&lab);
    let mut rows = Vec::new();
    for (tag, label, extra_a, extra_b) in [
        ("steady", "no rekeys", "", ""),
        (
            "rekeying",
            "CHILD_SA rekeys every 2 s, started by A",
            r#""child_lifetime_secs": 2, "#,
            r#""child_lifetime_secs": 3, "#,
        ),
    ] {
        let ca = gateway_with(&lab, "a", tag, WORKERS, (Some(PSK), extra_a, start("a")));
        let cb = gateway_with(&lab, "b", tag, WORKERS, (Some(PSK), extra_b, start("b")));
        let exe = env!("CARGO_BIN_EXE_bitsgw");
        let gb = lab.spawn("gB", &[exe, "run", cb.to_str().unwrap()]);
        wait_for(&socket_with(&lab, "b", tag));
        let ga = lab.spawn("gA", &[exe, "run", ca.to_str().unwrap()]);
        wait_for(&socket_with(&lab, "a", tag));
        tunnel_up(&lab);
        let pings = ping_flood(&lab);
        let (_, _, log_a) = lab.terminate(ga);
        let (_, _, log_b) = lab.terminate(gb);
        // CHILD_SAs each side made by rekeying (as initiator or responder).
        let rekeys = (
            log_a.matches("rekeys=Some").count(),
            log_b.matches("rekeys=Some").count(),
        );
        if !extra_a.is_empty() {
            assert!(
                rekeys.0 >= 3,
                "too few rekeys to measure: {rekeys:?}\n{log_a}"
            );
        }
        rows.push((label, pings, rekeys));
    }
    println!(
        "\nbench-e2e: ping every 2 ms for 10 s through bitsgw x2 (IKE-keyed ESP AES-GCM-128, two workers each); load average {load_before} (before) / {} (after)",
        load()
    );
    println!(
        "{:<44} {:>8} {:>8} {:>8} {:>6} {:>10}",
        "run", "p50 ms", "p99 ms", "max ms", "lost", "CHILD_SAs"
    );
    for (label, p, rekeys) in &rows {
        println!(
            "{label:<44} {:>8.3} {:>8.3} {:>8.3} {:>6} {:>10}",
            p.percentile(0.5),
            p.percentile(0.99),
            p.percentile(1.0),
            p.lost(),
            format!("{}/{}", rekeys.0, rekeys.1)
        );
    }
    println!("(CHILD_SAs: those made by rekeying, as A and B logged them)");
    for (label, p, _) in &rows {
        assert!(!p.rtts_ms.is_empty(), "{label}: no ping came back");
    }
}
