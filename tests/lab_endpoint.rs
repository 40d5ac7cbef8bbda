//! The appliance's own addresses: a host, a bitsgw gateway inline in front
//! of it (veth pairs, AF_PACKET ports, two workers) and a router, each in
//! its own network namespace. The gateway has 192.0.2.2 on its host side
//! and 192.0.2.3 and 2001:db8::3 on its network side: the host pings the
//! host-side address, the router pings the network-side ones (ARP, NDP and
//! echo answered by the gateway's smoltcp stack), with no loss. The router
//! can not reach the host-side address, and TCP to the network-side one is
//! refused and counted.
//!
//! Needs root (CI runs as root), iproute2, iputils-ping and ethtool
//! (`scripts/setup-test-deps.sh`). Everything it creates it removes, also
//! when it fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{bitsgw, wait_for, Lab};
use std::path::PathBuf;
use std::process::Output;

fn build(lab: &Lab) {
    lab.link("h", "eth0", "g", "host");
    lab.link("g", "wan", "r", "ra");
    // The gateway's kernel has no addresses: its own stack is bitsgw's.
    lab.up("h", &["eth0"], false);
    lab.up("g", &["host", "wan"], false);
    lab.up("r", &["ra"], true);
    lab.exec("h", &["ip", "addr", "add", "192.0.2.10/24", "dev", "eth0"]);
    lab.exec("r", &["ip", "addr", "add", "192.0.2.1/24", "dev", "ra"]);
    lab.exec(
        "r",
        &["ip", "addr", "add", "2001:db8::1/64", "dev", "ra", "nodad"],
    );
}

fn config(lab: &Lab) -> PathBuf {
    let policy = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policies/site-to-site-a.json");
    let path = lab.dir.join("gw.json");
    let text = format!(
        r#"{{"role": "gateway", "policy": "{}",
  "ports": {{"host": {{"type": "af_packet", "interface": "host"}}, "network": {{"type": "af_packet", "interface": "wan"}}}},
  "addresses": {{"host": ["192.0.2.2/24"], "network": ["192.0.2.3/24", "2001:db8::3/64"]}},
  "workers": 2, "control_socket": "{}", "state_dir": "gw-state"}}"#,
        policy.display(),
        socket(lab).display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn socket(lab: &Lab) -> PathBuf {
    lab.dir.join("gw.sock")
}

fn ping(lab: &Lab, ns: &str, dst: &str) -> Output {
    lab.try_exec(ns, &["ping", "-c", "5", "-i", "0.2", "-W", "2", dst])
}

fn assert_no_loss(out: &Output, what: &str) {
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains(" 0% packet loss"),
        "{what}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_gateway_answers_pings_to_its_own_addresses() {
    let mut lab = Lab::new("e", &["h", "g", "r"]);
    build(&lab);
    let cfg = config(&lab);
    let gw = lab.spawn(
        "g",
        &[env!("CARGO_BIN_EXE_bitsgw"), "run", cfg.to_str().unwrap()],
    );
    wait_for(&socket(&lab));

    assert_no_loss(&ping(&lab, "h", "192.0.2.2"), "host -> host-side address");
    assert_no_loss(&ping(&lab, "r", "192.0.2.3"), "router -> network-side IPv4");
    assert_no_loss(
        &ping(&lab, "r", "2001:db8::3"),
        "router -> network-side IPv6",
    );
    // The host-side address is not reachable from the network.
    let out = lab.try_exec(
        "r",
        &["ping", "-c", "2", "-i", "0.2", "-W", "1", "192.0.2.2"],
    );
    assert!(
        !out.status.success(),
        "the network reached the host-side address"
    );
    // No services on the network side: TCP is dropped, not answered.
    let tcp = lab.try_exec(
        "r",
        &["timeout", "2", "bash", "-c", "echo > /dev/tcp/192.0.2.3/22"],
    );
    assert!(!tcp.status.success());

    let sock = socket(&lab);
    let counters = bitsgw(&[
        "show",
        "counters",
        "--json",
        "--socket",
        sock.to_str().unwrap(),
    ]);
    let c: serde_json::Value = serde_json::from_slice(&counters.stdout).unwrap();
    // 15 echo requests, at least one ARP or NDP exchange per peer.
    assert!(c["local_delivered"].as_u64().unwrap() >= 17, "{c}");
    assert!(c["drops"]["local_refused"].as_u64().unwrap() >= 1, "{c}");

    let (ok, _, log) = lab.terminate(gw);
    assert!(ok, "gateway failed: {log}");
}
