//! The lab of the end-to-end benchmarks (`bench_e2e.rs`,
//! `bench_syscalls.rs`): two hosts, the router between them and, in the
//! wire on each side, a bitsgw gateway with AF_PACKET ports.

use crate::common::Lab;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Host A - [gateway A] - router - [gateway B] - host B; with `bumps`
/// false the hosts are linked to the router directly.
pub fn build(lab: &Lab, bumps: bool) {
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

pub fn config(lab: &Lab, side: &str, policy: &Path, tag: &str, pipeline: &str) -> PathBuf {
    let path = lab.dir.join(format!("gw-{side}-{tag}.json"));
    let text = format!(
        r#"{{"role": "gateway", "policy": "{}",
  "ports": {{"host": {{"type": "af_packet", "interface": "host"}}, "network": {{"type": "af_packet", "interface": "wan"}}}},
  {pipeline}, "control_socket": "{}", "state_dir": "gw-{side}-{tag}-state"}}"#,
        policy.display(),
        socket(lab, side, tag).display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

pub fn socket(lab: &Lab, side: &str, tag: &str) -> PathBuf {
    lab.dir.join(format!("gw-{side}-{tag}.sock"))
}

/// The PSK of the IKE-keyed rows.
pub const PSK: &str = "bench-e2e-only-not-a-secret";

/// Gateway A starts the IKE SA, B answers.
pub fn start(side: &str) -> &'static str {
    if side == "a" {
        "initiate"
    } else {
        "respond"
    }
}

/// Waits until a ping crosses the IKE-keyed tunnel: IKE_SA_INIT and
/// IKE_AUTH done, the SAs installed.
pub fn tunnel_up(lab: &Lab) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !lab
        .try_exec("hA", &["ping", "-c", "1", "-W", "1", "-q", "198.51.100.20"])
        .status
        .success()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the IKE-keyed tunnel never came up"
        );
    }
}

/// Writes a policy that BYPASSes everything both ways; its path.
pub fn bypass_policy(lab: &Lab) -> PathBuf {
    let path = lab.dir.join("bypass.json");
    std::fs::write(
        &path,
        r#"{"spd": {"outbound": [{"name": "all", "action": "bypass"}],
                    "inbound": [{"name": "all", "action": "bypass"}]}, "sad": []}"#,
    )
    .unwrap();
    path
}
