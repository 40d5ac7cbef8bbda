//! Two unmodified hosts in network namespaces with a bitsgw gateway inline
//! in front of each (veth pairs, AF_PACKET ports) and a router between the
//! gateways (A hands frames to workers, B runs to completion): ping and a
//! TCP transfer go through ESP tunnel mode, the wire
//! between the gateways carries only ESP (captured on the router), `show`
//! and `ctl` work against the running appliances, and removing a
//! gateway's SA stops the traffic rather than leaking it in clear.
//!
//! Needs root (CI runs as root), iproute2, iputils-ping, ethtool and iperf3
//! (`scripts/setup-test-deps.sh`). Everything it creates it removes, also
//! when it fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{bitsgw, capture, gateway_socket as socket, iperf3, must, start_gateways, Lab};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[test]
fn two_gateways_inline_carry_ping_and_tcp_over_esp_only() {
    let mut lab = Lab::new("l", &["hA", "gA", "r", "gB", "hB"]);
    common::route_two_sites(&lab);
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let caps = [
        capture(lab.ns("r"), "ra", Arc::clone(&stop), Arc::clone(&seen)),
        capture(lab.ns("r"), "rb", Arc::clone(&stop), Arc::clone(&seen)),
    ];
    let (gw_a, gw_b) = start_gateways(&mut lab);

    // Ping across.
    let ping = lab.try_exec(
        "hA",
        &["ping", "-c", "5", "-i", "0.2", "-W", "2", "198.51.100.20"],
    );
    assert!(
        ping.status.success(),
        "ping: {}",
        String::from_utf8_lossy(&ping.stdout)
    );
    // A TCP transfer.
    let result = iperf3(&mut lab, "hA", "hB", "198.51.100.20", "2");
    let received = result["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0);
    assert!(received > 100_000, "TCP moved only {received} bytes");

    // SIGHUP reloads the policies; the unchanged SAs keep their state and
    // traffic flows on.
    let pid_b = lab.children[gw_b].id().to_string();
    must(&["kill", "-HUP", &pid_b]);
    std::thread::sleep(Duration::from_millis(300));
    let ping = lab.try_exec(
        "hA",
        &["ping", "-c", "3", "-i", "0.2", "-W", "2", "198.51.100.20"],
    );
    assert!(
        ping.status.success(),
        "ping after reload: {}",
        String::from_utf8_lossy(&ping.stdout)
    );
    // B's inbound SA renamed, its SPI kept: `ctl reload` installs it under
    // the new name and traffic flows on (issue 16: the SA went missing).
    let policy_b = lab.dir.join("site-to-site-b.json");
    let renamed = std::fs::read_to_string(&policy_b)
        .unwrap()
        .replace("\"a-to-b-v4\"", "\"from-a-v4\"");
    std::fs::write(&policy_b, renamed).unwrap();
    let sock_b = socket(&lab, "b");
    let reload = bitsgw(&["ctl", "reload", "--socket", sock_b.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&reload.stdout);
    assert!(
        reload.status.success(),
        "{}",
        String::from_utf8_lossy(&reload.stderr)
    );
    assert!(said.contains("1 installed, 1 removed"), "{said}");
    let ping = lab.try_exec(
        "hA",
        &["ping", "-c", "3", "-i", "0.2", "-W", "2", "198.51.100.20"],
    );
    assert!(
        ping.status.success(),
        "ping after renaming B's inbound SA: {}",
        String::from_utf8_lossy(&ping.stdout)
    );
    let sa_b = bitsgw(&["show", "sa", "--socket", sock_b.to_str().unwrap()]);
    let sa_b = String::from_utf8_lossy(&sa_b.stdout);
    assert!(
        sa_b.contains("from-a-v4: inbound spi 0x00003001") && !sa_b.contains("a-to-b-v4"),
        "{sa_b}"
    );

    // show and ctl against the running appliances.
    let sock_a = socket(&lab, "a");
    let out = bitsgw(&["show", "sa", "--json", "--socket", sock_a.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sas: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let out_sa = sas
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "a-to-b-v4")
        .unwrap();
    assert!(out_sa["packets"].as_u64().unwrap() > 100, "{out_sa}");
    let text = bitsgw(&["show", "counters", "--socket", sock_a.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("outbound_protected"));
    let sp = bitsgw(&["show", "sp", "--socket", sock_a.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&sp.stdout).contains("sites-v4-out"));

    // Remove A's outbound SA: traffic stops, nothing leaks.
    let ctl = bitsgw(&[
        "ctl",
        "remove-sa",
        "a-to-b-v4",
        "--socket",
        sock_a.to_str().unwrap(),
    ]);
    assert!(
        ctl.status.success(),
        "{}",
        String::from_utf8_lossy(&ctl.stderr)
    );
    std::thread::sleep(Duration::from_millis(200));
    let ping = lab.try_exec(
        "hA",
        &["ping", "-c", "3", "-i", "0.2", "-W", "1", "198.51.100.20"],
    );
    assert!(!ping.status.success(), "ping went through without an SA");
    let counters = bitsgw(&[
        "show",
        "counters",
        "--json",
        "--socket",
        sock_a.to_str().unwrap(),
    ]);
    let c: serde_json::Value = serde_json::from_slice(&counters.stdout).unwrap();
    assert!(c["drops"]["no_sa"].as_u64().unwrap() >= 3, "{c}");

    // Stop the gateways: they exit cleanly and print their counters.
    for gw in [gw_a, gw_b] {
        let (ok, out, log) = lab.terminate(gw);
        assert!(ok, "gateway failed: {out}{log}");
        assert!(out.contains("final counters"), "{out}");
        if gw == gw_b {
            assert!(log.contains("policies reloaded"), "{log}");
        }
    }
    stop.store(true, Ordering::SeqCst);
    for c in caps {
        c.join().unwrap();
    }

    // Between the gateways: ESP, ARP and nothing else of the hosts'.
    let frames = seen.lock().unwrap();
    let mut esp = 0;
    for f in frames.iter() {
        let ethertype = u16::from_be_bytes([f[12], f[13]]);
        if ethertype != 0x0800 {
            continue;
        }
        let ip = &f[14..];
        let (src, dst) = (&ip[12..16], &ip[16..20]);
        let hosts = [[192, 0, 2, 10], [198, 51, 100, 20]];
        assert!(
            !hosts.iter().any(|h| src == h || dst == h),
            "cleartext host traffic on the wire: {:02x?}",
            &ip[..20]
        );
        if ip[9] == 50 {
            esp += 1;
        }
    }
    assert!(esp > 200, "only {esp} ESP frames seen");
}
