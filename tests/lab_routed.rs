//! Routed mode in network namespaces: two unmodified hosts on one LAN (a
//! Linux bridge) behind bitsgw gateway A, routed (its host-side address is
//! their default gateway), a router, and a routed bitsgw gateway B in
//! front of a third host. Nothing is configured by hand on the gateways'
//! neighbors: the hosts and the router find the gateways by ARP, and the
//! gateways find them the same way. Ping and a TCP transfer from both LAN
//! hosts go through ESP tunnel mode, and the wire between the gateways
//! carries only ESP (and ARP).
//!
//! Needs root, iproute2, iputils-ping, ethtool and iperf3
//! (`scripts/setup-test-deps.sh`). Everything it creates it removes, also
//! when it fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{bitsgw, capture, iperf3, wait_for, Lab};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

const LAN_HOSTS: [(&str, &str); 2] = [("h1", "192.0.2.10"), ("h2", "192.0.2.11")];
const FAR_HOST: &str = "198.51.100.20";

fn build(lab: &Lab) {
    // The LAN: a bridge in its own namespace, the two hosts and gateway A.
    lab.exec("sw", &["ip", "link", "add", "br0", "type", "bridge"]);
    lab.link("h1", "eth0", "sw", "p1");
    lab.link("h2", "eth0", "sw", "p2");
    lab.link("gA", "host", "sw", "pg");
    lab.link("gA", "wan", "r", "ra");
    lab.link("r", "rb", "gB", "wan");
    lab.link("gB", "host", "hB", "eth0");
    for p in ["p1", "p2", "pg"] {
        lab.exec("sw", &["ip", "link", "set", p, "master", "br0"]);
    }
    lab.up("sw", &["br0", "p1", "p2", "pg"], false);
    lab.up("h1", &["eth0"], false);
    lab.up("h2", &["eth0"], false);
    lab.up("gA", &["host", "wan"], false);
    lab.up("r", &["ra", "rb"], false);
    lab.up("gB", &["host", "wan"], false);
    lab.up("hB", &["eth0"], false);
    for (h, addr) in LAN_HOSTS {
        lab.exec(
            h,
            &["ip", "addr", "add", &format!("{addr}/24"), "dev", "eth0"],
        );
        lab.exec(h, &["ip", "link", "set", "eth0", "mtu", "1400"]);
        lab.exec(h, &["ip", "route", "add", "default", "via", "192.0.2.1"]);
    }
    lab.exec(
        "hB",
        &[
            "ip",
            "addr",
            "add",
            &format!("{FAR_HOST}/24"),
            "dev",
            "eth0",
        ],
    );
    lab.exec("hB", &["ip", "link", "set", "eth0", "mtu", "1400"]);
    lab.exec(
        "hB",
        &["ip", "route", "add", "default", "via", "198.51.100.1"],
    );
    // The router: one address towards each gateway, a host route to each.
    lab.exec("r", &["ip", "addr", "add", "203.0.113.254/32", "dev", "ra"]);
    lab.exec("r", &["ip", "addr", "add", "203.0.113.253/32", "dev", "rb"]);
    lab.exec("r", &["ip", "route", "add", "203.0.113.1/32", "dev", "ra"]);
    lab.exec("r", &["ip", "route", "add", "203.0.113.2/32", "dev", "rb"]);
    for k in [
        "net.ipv4.ip_forward=1",
        "net.ipv4.conf.all.rp_filter=0",
        "net.ipv4.conf.ra.rp_filter=0",
        "net.ipv4.conf.rb.rp_filter=0",
    ] {
        lab.exec("r", &["sysctl", "-qw", k]);
    }
}

fn config(lab: &Lab, side: &str) -> PathBuf {
    let policy = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("policies/site-to-site-{side}.json"));
    let (host, net, via) = match side {
        "a" => ("192.0.2.1/24", "203.0.113.1/24", "203.0.113.254"),
        _ => ("198.51.100.1/24", "203.0.113.2/24", "203.0.113.253"),
    };
    let path = lab.dir.join(format!("gw-{side}.json"));
    let text = format!(
        r#"{{"role": "gateway", "policy": "{}", "mode": "routed",
  "ports": {{"host": {{"type": "af_packet", "interface": "host"}}, "network": {{"type": "af_packet", "interface": "wan"}}}},
  "addresses": {{"host": ["{host}"], "network": ["{net}"]}},
  "routes": {{"network": {{"default_via": "{via}"}}}},
  "workers": 2, "control_socket": "{}", "state_dir": "gw-{side}-state"}}"#,
        policy.display(),
        socket(lab, side).display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn socket(lab: &Lab, side: &str) -> PathBuf {
    lab.dir.join(format!("gw-{side}.sock"))
}

#[test]
fn two_lan_hosts_behind_a_routed_gateway_reach_the_far_site_over_esp_only() {
    let mut lab = Lab::new("rt", &["sw", "h1", "h2", "gA", "r", "gB", "hB"]);
    build(&lab);
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let caps = [
        capture(lab.ns("r"), "ra", Arc::clone(&stop), Arc::clone(&seen)),
        capture(lab.ns("r"), "rb", Arc::clone(&stop), Arc::clone(&seen)),
    ];
    let (cfg_a, cfg_b) = (config(&lab, "a"), config(&lab, "b"));
    let check = bitsgw(&["check", cfg_a.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{text}");
    assert!(text.contains("mode routed"), "{text}");
    assert!(
        text.contains("route network 0.0.0.0/0 via 203.0.113.254"),
        "{text}"
    );
    let gw_a = lab.spawn(
        "gA",
        &[env!("CARGO_BIN_EXE_bitsgw"), "run", cfg_a.to_str().unwrap()],
    );
    let gw_b = lab.spawn(
        "gB",
        &[env!("CARGO_BIN_EXE_bitsgw"), "run", cfg_b.to_str().unwrap()],
    );
    wait_for(&socket(&lab, "a"));
    wait_for(&socket(&lab, "b"));

    for (h, addr) in LAN_HOSTS {
        // The gateway answers for itself...
        let ping = lab.try_exec(h, &["ping", "-c", "2", "-i", "0.2", "-W", "2", "192.0.2.1"]);
        assert!(
            ping.status.success(),
            "{h} -> its gateway: {}",
            String::from_utf8_lossy(&ping.stdout)
        );
        // ...and routes across, the first packets held while the router
        // and the far host are resolved.
        let ping = lab.try_exec(h, &["ping", "-c", "5", "-i", "0.2", "-W", "3", FAR_HOST]);
        assert!(
            ping.status.success(),
            "{h} ({addr}) -> {FAR_HOST}: {}",
            String::from_utf8_lossy(&ping.stdout)
        );
    }
    // The far host answers both; its gateway knows them from the traffic.
    for (_, addr) in LAN_HOSTS {
        let ping = lab.try_exec("hB", &["ping", "-c", "3", "-i", "0.2", "-W", "2", addr]);
        assert!(
            ping.status.success(),
            "{FAR_HOST} -> {addr}: {}",
            String::from_utf8_lossy(&ping.stdout)
        );
    }
    // A TCP transfer from each LAN host.
    for (h, _) in LAN_HOSTS {
        let result = iperf3(&mut lab, h, "hB", FAR_HOST, "2");
        let received = result["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0);
        assert!(
            received > 100_000,
            "TCP from {h} moved only {received} bytes"
        );
    }

    let counters = bitsgw(&[
        "show",
        "counters",
        "--json",
        "--socket",
        socket(&lab, "a").to_str().unwrap(),
    ]);
    let c: serde_json::Value = serde_json::from_slice(&counters.stdout).unwrap();
    assert_eq!(c["drops"]["no_route"], 0, "{c}");
    assert_eq!(c["drops"]["neighbor_unresolved"], 0, "{c}");

    for gw in [gw_a, gw_b] {
        let (ok, out, log) = lab.terminate(gw);
        assert!(ok, "gateway failed: {out}{log}");
        assert!(out.contains("final counters"), "{out}");
    }
    stop.store(true, Ordering::SeqCst);
    for c in caps {
        c.join().unwrap();
    }

    // Between the gateways: ESP and ARP, nothing of the hosts' in clear,
    // every IPv4 frame between the gateways' and the router's addresses.
    let frames = seen.lock().unwrap();
    let mut esp = 0;
    let mut arp = 0;
    for f in frames.iter() {
        match u16::from_be_bytes([f[12], f[13]]) {
            0x0806 => arp += 1,
            0x0800 => {
                let ip = &f[14..];
                let (src, dst) = (&ip[12..16], &ip[16..20]);
                assert_eq!(src[..3], [203, 0, 113], "{:02x?}", &ip[..20]);
                assert_eq!(dst[..3], [203, 0, 113], "{:02x?}", &ip[..20]);
                assert_eq!(ip[9], 50, "not ESP on the wire: {:02x?}", &ip[..20]);
                esp += 1;
            }
            other => panic!("unexpected frame of EtherType {other:#06x} on the wire"),
        }
    }
    assert!(esp > 200, "only {esp} ESP frames seen");
    assert!(
        arp >= 2,
        "the gateways resolved the router: {arp} ARP frames"
    );
}
