//! `make bench-e2e`: iperf3 TCP between two unmodified hosts in network
//! namespaces, over the same routed path three ways, in one run:
//! 1. bare veth pairs (host - router - host);
//! 2. through two bitsgw gateways inline (AF_PACKET ports, two workers
//!    each) whose policies BYPASS everything;
//! 3. through the same gateways with ESP AES-GCM-128 in tunnel mode
//!    (`policies/site-to-site-{a,b}.json`).
//!
//! Prints a table with each throughput and its ratio to the bare path.
//! Ignored by `cargo test` (it measures, and takes about 30 s); needs root
//! and iperf3, and says so and returns without root. Run it with
//! `cargo test --release --test bench_e2e -- --ignored --nocapture`.
//! strongSwan's userspace ESP (PEERS.md) is not part of it yet.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{is_root, wait_for, Lab};
use std::path::{Path, PathBuf};
use std::time::Duration;

const SECONDS: &str = "5";

/// Host A - [gateway A] - router - [gateway B] - host B; with `bumps`
/// false the hosts are linked to the router directly.
fn build(lab: &Lab, bumps: bool) {
    if bumps {
        lab.link("hA", "eth0", "gA", "host");
        lab.link("gA", "wan", "r", "ra");
        lab.link("r", "rb", "gB", "wan");
        lab.link("gB", "host", "hB", "eth0");
        lab.up("gA", &["host", "wan"], false);
        lab.up("gB", &["host", "wan"], false);
    } else {
        lab.link("hA", "eth0", "r", "ra");
        lab.link("r", "rb", "hB", "eth0");
    }
    lab.up("hA", &["eth0"], false);
    lab.up("r", &["ra", "rb"], false);
    lab.up("hB", &["eth0"], false);
    for (h, addr, gw) in [
        ("hA", "192.0.2.10/24", "192.0.2.1"),
        ("hB", "198.51.100.20/24", "198.51.100.1"),
    ] {
        lab.exec(h, &["ip", "addr", "add", addr, "dev", "eth0"]);
        // Room for the ESP overhead on the same 1500-octet links.
        lab.exec(h, &["ip", "link", "set", "eth0", "mtu", "1400"]);
        lab.exec(h, &["ip", "route", "add", "default", "via", gw]);
    }
    lab.exec("r", &["ip", "addr", "add", "192.0.2.1/24", "dev", "ra"]);
    lab.exec("r", &["ip", "addr", "add", "198.51.100.1/24", "dev", "rb"]);
    for k in [
        "net.ipv4.ip_forward=1",
        "net.ipv4.conf.all.rp_filter=0",
        "net.ipv4.conf.ra.rp_filter=0",
        "net.ipv4.conf.rb.rp_filter=0",
    ] {
        lab.exec("r", &["sysctl", "-qw", k]);
    }
    if bumps {
        // The tunnel endpoints live in the bumps, which have no IP stack:
        // the router reaches them at the hosts' MAC addresses.
        for (addr, dev, host) in [("203.0.113.1", "ra", "hA"), ("203.0.113.2", "rb", "hB")] {
            let mac = lab.mac(host, "eth0");
            lab.exec(
                "r",
                &["ip", "route", "add", &format!("{addr}/32"), "dev", dev],
            );
            lab.exec(
                "r",
                &["ip", "neigh", "add", addr, "lladdr", &mac, "dev", dev],
            );
        }
    }
}

fn config(lab: &Lab, side: &str, policy: &Path, tag: &str) -> PathBuf {
    let path = lab.dir.join(format!("gw-{side}-{tag}.json"));
    let text = format!(
        r#"{{"role": "gateway", "policy": "{}",
  "ports": {{"host": {{"type": "af_packet", "interface": "host"}}, "network": {{"type": "af_packet", "interface": "wan"}}}},
  "workers": 2, "control_socket": "{}"}}"#,
        policy.display(),
        socket(lab, side, tag).display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn socket(lab: &Lab, side: &str, tag: &str) -> PathBuf {
    lab.dir.join(format!("gw-{side}-{tag}.sock"))
}

/// An iperf3 TCP run from host A to host B: (Gbit/s received,
/// retransmits).
fn iperf(lab: &mut Lab) -> (f64, u64) {
    let server = lab.spawn("hB", &["iperf3", "-s", "-1", "-B", "198.51.100.20"]);
    let mut client = lab.try_exec("hA", &["true"]);
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(300));
        client = lab.try_exec(
            "hA",
            &["iperf3", "-c", "198.51.100.20", "-t", SECONDS, "-J"],
        );
        if client.status.success() {
            break;
        }
    }
    assert!(
        client.status.success(),
        "iperf3: {}",
        String::from_utf8_lossy(&client.stdout)
    );
    let v: serde_json::Value = serde_json::from_slice(&client.stdout).unwrap();
    let _ = lab.children[server].wait();
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
fn iperf3_bare_bypass_and_esp() {
    if !is_root() {
        eprintln!("bench-e2e skipped: it needs root (network namespaces)");
        return;
    }
    let load_before = load();
    let mut rows: Vec<(&str, f64, u64)> = Vec::new();
    {
        let mut lab = Lab::new("eb", &["hA", "r", "hB"]);
        build(&lab, false);
        let (g, re) = iperf(&mut lab);
        rows.push(("bare veth path", g, re));
    }
    let mut lab = Lab::new("eg", &["hA", "gA", "r", "gB", "hB"]);
    build(&lab, true);
    let bypass = lab.dir.join("bypass.json");
    std::fs::write(
        &bypass,
        r#"{"spd": {"outbound": [{"name": "all", "action": "bypass"}],
                    "inbound": [{"name": "all", "action": "bypass"}]}, "sad": []}"#,
    )
    .unwrap();
    let policies = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policies");
    for (tag, label, a, b) in [
        (
            "bypass",
            "bitsgw x2, BYPASS",
            bypass.clone(),
            bypass.clone(),
        ),
        (
            "esp",
            "bitsgw x2, ESP AES-GCM-128 tunnel",
            policies.join("site-to-site-a.json"),
            policies.join("site-to-site-b.json"),
        ),
    ] {
        let (ca, cb) = (config(&lab, "a", &a, tag), config(&lab, "b", &b, tag));
        let exe = env!("CARGO_BIN_EXE_bitsgw");
        let ga = lab.spawn("gA", &[exe, "run", ca.to_str().unwrap()]);
        let gb = lab.spawn("gB", &[exe, "run", cb.to_str().unwrap()]);
        wait_for(&socket(&lab, "a", tag));
        wait_for(&socket(&lab, "b", tag));
        let (g, re) = iperf(&mut lab);
        rows.push((label, g, re));
        lab.terminate(ga);
        lab.terminate(gb);
    }
    let bare = rows[0].1;
    println!(
        "\nbench-e2e: iperf3 TCP, {SECONDS} s each, host MTU 1400; load average {load_before} (before) / {} (after)",
        load()
    );
    println!(
        "{:<36} {:>9} {:>12} {:>8}",
        "path", "Gbit/s", "retransmits", "ratio"
    );
    for (label, g, re) in &rows {
        println!("{label:<36} {g:>9.3} {re:>12} {:>8.3}", g / bare);
    }
    for (label, g, _) in &rows {
        assert!(*g > 0.0, "{label}: no throughput");
    }
}
