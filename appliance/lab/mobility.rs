//! `bitsgw lab mobility`: the mobile host's journey between IPv6, public
//! IPv4 and a NAT, with the home agent and the correspondent.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::*;

pub(super) const HOA: &str = "2001:db8:1::100";
pub(super) const HOA4: &str = "192.0.2.100";
pub(super) const HA: &str = "2001:db8:1::1";
pub(super) const HA4: &str = "203.0.113.1";
pub(super) const COA_A: &str = "2001:db8:2::100";
pub(super) const COA_B: &str = "2001:db8:3::100";
pub(super) const COA_PUBLIC4: &str = "203.0.113.70";
pub(super) const COA_NAT: &str = "198.51.100.20";
pub(super) const NAT_PUBLIC: &str = "203.0.113.130";

/// The namespaces, links, addresses, routes and the NAT.
pub(super) fn build_mobility(n: &Netns) -> Result<()> {
    for ns in ["mn", "inet", "nat", "ha"] {
        n.sysctl_router(ns)?;
    }
    n.link("host", "eth0", "mn", "mn-host")?;
    n.link("mn", "mn-v6a", "inet", "in-v6a")?;
    n.link("mn", "mn-v6b", "inet", "in-v6b")?;
    n.link("mn", "mn-v4", "inet", "in-v4")?;
    n.link("mn", "mn-nat", "nat", "nat-in")?;
    n.link("nat", "nat-out", "inet", "in-nat")?;
    n.link("inet", "in-ha", "ha", "ha-inet")?;
    n.link("ha", "ha-home", "home", "eth0")?;
    n.link("mn", "mn-home", "ha", "ha-acc")?;
    // The unmodified hosts: the mobile host believes it is at home (its
    // link a small piece of the home prefix, the correspondent off-link),
    // the correspondent sits on the home network.
    n.script(
        "host",
        &[
            "sysctl -qw net.ipv6.conf.all.accept_dad=0",
            "sysctl -qw net.ipv6.conf.eth0.accept_dad=0",
            "ip addr add 2001:db8:1::100/112 dev eth0",
            "ip addr add 192.0.2.100/25 dev eth0",
            "ip link set eth0 mtu 1300",
            "ip -6 route add default via 2001:db8:1::fe",
            "ip route add default via 192.0.2.126",
        ],
    )?;
    n.script(
        "home",
        &[
            "sysctl -qw net.ipv6.conf.all.accept_dad=0",
            "sysctl -qw net.ipv6.conf.eth0.accept_dad=0",
            "ip addr add 2001:db8:1::1:77/112 dev eth0",
            "ip addr add 192.0.2.130/25 dev eth0",
            "ip link set eth0 mtu 1300",
            "ip -6 route add default via 2001:db8:1::1:1",
            "ip route add default via 192.0.2.129",
        ],
    )?;
    // The mobile node's namespace: the host's router on one side, the
    // visited networks on the other; the appliance's TUN ports between.
    n.script(
        "mn",
        &[
            "ip addr add 2001:db8:1::fe/112 dev mn-host",
            "ip addr add 192.0.2.126/25 dev mn-host",
            "ip addr add 2001:db8:2::2/64 dev mn-v6a",
            "ip addr add 2001:db8:3::2/64 dev mn-v6b",
            "ip addr add 203.0.113.66/26 dev mn-v4",
            "ip addr add 198.51.100.2/24 dev mn-nat",
            "ip addr add 2001:db8:1::2:2/112 dev mn-home",
            "ip tuntap add dev mnh mode tun",
            "ip tuntap add dev mnn mode tun",
            "ip link set mnh up",
            "ip link set mnn up",
            // The host's traffic into the appliance's host port.
            "ip -6 rule add iif mn-host from 2001:db8:1::100 lookup 100",
            "ip rule add iif mn-host from 192.0.2.100 lookup 100",
            "ip -6 route add default dev mnh table 100",
            "ip route add default dev mnh table 100",
            // What the appliance sends: by its source, the network the
            // care-of address belongs to (or the home link).
            "ip -6 rule add iif mnn from 2001:db8:2::100 lookup 101",
            "ip -6 route add default via 2001:db8:2::1 dev mn-v6a table 101",
            "ip -6 rule add iif mnn from 2001:db8:3::100 lookup 102",
            "ip -6 route add default via 2001:db8:3::1 dev mn-v6b table 102",
            "ip rule add iif mnn from 203.0.113.70 lookup 103",
            "ip route add default via 203.0.113.65 dev mn-v4 table 103",
            "ip rule add iif mnn from 198.51.100.20 lookup 104",
            "ip route add default via 198.51.100.1 dev mn-nat table 104",
            "ip -6 rule add iif mnn from 2001:db8:1::100 lookup 105",
            "ip -6 route add default via 2001:db8:1::2:1 dev mn-home table 105",
            // Packets to the care-of addresses (and, at home, to the home
            // address from the home link) into the network port.
            "ip -6 route add 2001:db8:2::100 dev mnn",
            "ip -6 route add 2001:db8:3::100 dev mnn",
            "ip route add 203.0.113.70 dev mnn",
            "ip route add 198.51.100.20 dev mnn",
            "ip -6 rule add iif mn-home to 2001:db8:1::100 lookup 106",
            "ip -6 route add default dev mnn table 106",
        ],
    )?;
    n.script(
        "inet",
        &[
            "ip addr add 2001:db8:2::1/64 dev in-v6a",
            "ip addr add 2001:db8:3::1/64 dev in-v6b",
            "ip addr add 203.0.113.65/26 dev in-v4",
            "ip addr add 203.0.113.129/26 dev in-nat",
            "ip addr add 2001:db8:f::1/64 dev in-ha",
            "ip addr add 203.0.113.62/26 dev in-ha",
            "ip -6 route add 2001:db8:2::100 via 2001:db8:2::2",
            "ip -6 route add 2001:db8:3::100 via 2001:db8:3::2",
            "ip route add 203.0.113.70 via 203.0.113.66",
            "ip -6 route add 2001:db8:1::1 via 2001:db8:f::2",
            "ip route add 203.0.113.1 via 203.0.113.61",
        ],
    )?;
    n.script(
        "nat",
        &[
            "ip addr add 198.51.100.1/24 dev nat-in",
            "ip addr add 203.0.113.130/26 dev nat-out",
            "ip route add default via 203.0.113.129",
            "ip route add 198.51.100.20 via 198.51.100.2",
        ],
    )?;
    nat_rule(n, "41000-41999")?;
    n.script(
        "ha",
        &[
            "ip addr add 2001:db8:f::2/64 dev ha-inet",
            "ip addr add 203.0.113.61/26 dev ha-inet",
            "ip -6 route add default via 2001:db8:f::1",
            "ip route add default via 203.0.113.62",
            "ip addr add 2001:db8:1::1:1/112 dev ha-home",
            "ip addr add 192.0.2.129/25 dev ha-home",
            "ip addr add 2001:db8:1::2:1/112 dev ha-acc",
            "ip tuntap add dev hah mode tun",
            "ip tuntap add dev han mode tun",
            "ip link set hah up",
            "ip link set han up",
            // The home agent's own addresses belong to the appliance.
            "ip -6 route add 2001:db8:1::1 dev han",
            "ip route add 203.0.113.1 dev han",
            // The home network's traffic for the mobile node into the host
            // port; what the appliance sends to the home address goes to
            // the home link (the node at home) or, encapsulated, out.
            "ip -6 rule add iif ha-home to 2001:db8:1::100 lookup 200",
            "ip rule add iif ha-home to 192.0.2.100 lookup 200",
            "ip -6 route add default dev hah table 200",
            "ip route add default dev hah table 200",
            "ip -6 route add 2001:db8:1::100 via 2001:db8:1::2:2 dev ha-acc",
            "ip route add 192.0.2.100 dev hah",
        ],
    )?;
    Ok(())
}

/// The NAT: masquerade of the inside network to the public address, to
/// source ports in `ports`.
pub(super) fn nat_rule(n: &Netns, ports: &str) -> Result<()> {
    let _ = n.exec("nat", &["nft", "delete", "table", "ip", "lab"]);
    n.script(
        "nat",
        &[
            "nft add table ip lab",
            "nft add chain ip lab post { type nat hook postrouting priority 100 ; }",
        ],
    )?;
    let udp =
        format!("ip saddr 198.51.100.0/24 oifname nat-out meta l4proto udp masquerade to :{ports}");
    for rule in [
        udp.as_str(),
        "ip saddr 198.51.100.0/24 oifname nat-out masquerade",
    ] {
        let mut args = vec!["nft", "add", "rule", "ip", "lab", "post"];
        args.extend(rule.split_whitespace());
        n.exec("nat", &args)?;
    }
    Ok(())
}

/// The mobile node's identity and the home agent's, in IKE.
const MN_ID: &str = "fqdn:mn.example";
const HA_ID: &str = "fqdn:ha.example";

/// The CHILD_SAs of the IKE-keyed policies, by (outbound, inbound) SA on
/// the mobile node: the Binding Update / Acknowledgement pair (transport
/// mode, MH types BU and BA), the payload tunnel of the IPv6 and of the
/// IPv4 home address (RFC 4877 4.4, RFC 5555).
const MN_CHILDREN: [(&str, &str); 3] = [("sa1", "sa2"), ("sa7", "sa8"), ("sa9", "sa10")];

/// The `"peers"` of an appliance keyed by IKE: the mobile node's one
/// peer runs IKE from its care-of address to the home agent; the home
/// agent answers the mobile node's identity from any address on its IPv6
/// address, and on its IPv4 one from where an authentic registration says
/// the node is (an IPv4 care-of address or its NAT). Writes the pre-shared key file (mode 0600).
fn ike_peers(dir: &Path, role: &str, psk: &str) -> Result<String> {
    let psk_file = dir.join(format!("{role}.psk"));
    write_secret(&psk_file, psk)?;
    let children = |mn: bool| {
        MN_CHILDREN
            .iter()
            .map(|(o, i)| {
                let (o, i) = if mn { (o, i) } else { (i, o) };
                format!(r#"{{"outbound": "{o}", "inbound": "{i}"}}"#)
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let peer = |name: &str, local: &str, remote: &str, ids: (&str, &str), start: &str| {
        format!(
            r#"{{"name": "{name}", "local": "{local}", "remote": "{remote}",
    "local_id": "{}", "remote_id": "{}", "psk_file": "{}",
    "ike_proposals": ["aes128gcm16-prfsha256-ecp256"], "esp_proposals": ["aes128gcm16"],
    "start": "{start}", "children": [{}]}}"#,
            ids.0,
            ids.1,
            psk_file.display(),
            children(name == "ha"),
        )
    };
    Ok(if role == "mn" {
        format!(
            "[{}]",
            peer("ha", "care-of", HA, (MN_ID, HA_ID), "initiate")
        )
    } else {
        format!("[{}]", peer("mn", HA, "any", (HA_ID, MN_ID), "respond"))
    })
}

/// Where appliance `role` of an IKE-keyed run writes its CHILD_SAs' keys
/// for tshark (`"danger_wireshark_keys_file"`).
fn wireshark_keys_file(dir: &Path, role: &str) -> PathBuf {
    dir.join(format!("{role}.esp_sa"))
}

/// The appliance configurations of the two mobility appliances: every SA
/// keyed by IKEv2 (`ike`), or by hand from the seeds' policies.
pub(super) fn mobility_configs(dir: &Path, ike: bool) -> Result<(PathBuf, PathBuf)> {
    let psk = random_psk()?;
    let keying = |role: &str| -> Result<(PathBuf, String)> {
        Ok(if ike {
            (
                policy(dir, &format!("dsmip-hostwide-{role}-ike.json"))?,
                format!(
                    ",\n  \"peers\": {},\n  \"danger_wireshark_keys_file\": \"{}\"",
                    ike_peers(dir, role, &psk)?,
                    wireshark_keys_file(dir, role).display()
                ),
            )
        } else {
            (
                policy(dir, &format!("dsmip-hostwide-{role}.json"))?,
                String::new(),
            )
        })
    };
    let (ha_policy, ha_peers) = keying("ha")?;
    let (mn_policy, mn_peers) = keying("mn")?;
    // IKE runs from the care-of addresses: the appliance's own.
    let mn_addresses = if ike {
        format!(
            r#""addresses": {{"network": ["{COA_A}/64", "{COA_B}/64", "{COA_PUBLIC4}/26", "{COA_NAT}/24"]}},"#
        )
    } else {
        String::new()
    };
    let ha = dir.join("ha.json");
    write(
        &ha,
        &format!(
            r#"{{"role": "ha", "policy": "{policy}",
  "ports": {{"host": {{"type": "tun", "name": "hah"}}, "network": {{"type": "tun", "name": "han"}}}},
  "workers": 1, "control_socket": "{sock}", "state_dir": "ha-state",
  "mobility": {{"address": "{HA}", "address_v4": "{HA4}", "home_prefixes": ["2001:db8:1::/64"],
    "nodes": [{{"home": "{HOA}", "home_v4": "{HOA4}"}}], "max_lifetime_secs": 600, "nat_refresh_secs": 110}}{ha_peers}}}"#,
            policy = ha_policy.display(),
            sock = dir.join("ha.sock").display()
        ),
    )?;
    let mn = dir.join("mn.json");
    write(
        &mn,
        &format!(
            r#"{{"role": "mn", "policy": "{policy}",
  "ports": {{"host": {{"type": "tun", "name": "mnh"}}, "network": {{"type": "tun", "name": "mnn"}}}},
  "workers": 1, "control_socket": "{sock}", "state_dir": "mn-state", {mn_addresses}
  "mobility": {{"home_address": "{HOA}", "home_agent": "{HA}", "home_agent_v4": "{HA4}", "home_v4": "0.0.0.0",
    "lifetime_secs": 420, "attachment": "{COA_A}"}}{mn_peers}}}"#,
            policy = mn_policy.display(),
            sock = dir.join("mn.sock").display()
        ),
    )?;
    Ok((ha, mn))
}

pub(super) fn mn_state(sock: &Path) -> Result<serde_json::Value> {
    json(&bitsgw(&[
        "show",
        "bindings",
        "--json",
        "--socket",
        &sock.to_string_lossy(),
    ])?)
}

/// A mobility counter of an appliance (`show counters --json`: events
/// under `mobility`, drops under `drops`).
pub(super) fn counter(sock: &Path, name: &str) -> Result<u64> {
    let c = json(&bitsgw(&[
        "show",
        "counters",
        "--json",
        "--socket",
        &sock.to_string_lossy(),
    ])?)?;
    Ok(c["mobility"][name]
        .as_u64()
        .or_else(|| c["drops"][name].as_u64())
        .unwrap_or(0))
}

/// How many bindings the home agent has.
pub(super) fn ha_bindings(sock: &Path) -> Result<u64> {
    let b = json(&bitsgw(&[
        "show",
        "bindings",
        "--json",
        "--socket",
        &sock.to_string_lossy(),
    ])?)?;
    Ok(b["bindings"].as_array().map_or(0, |a| a.len() as u64))
}

/// The mobile node's IKE after a phase: the line the phase prints, and
/// the SPIs of its Binding Update / Acknowledgement CHILD_SA.
pub(super) struct IkePhase {
    line: String,
    bu_spi: Option<u32>,
    ba_spi: Option<u32>,
}

/// Waits until the mobile node's IKE runs from `care_of`: every CHILD_SA
/// on its IKE SA from there, and (`alone`) the IKE SA it replaced deleted
/// (`show ike --json`). After a break the replaced IKE SA's deletion
/// waits for the old network to answer or for its retransmissions to end.
pub(super) fn wait_ike(n: &mut Netns, sock: &Path, care_of: &str, alone: bool) -> Result<IkePhase> {
    let t0 = Instant::now();
    loop {
        n.check_alive()?;
        n.interrupted()?;
        let v = json(&bitsgw(&[
            "show",
            "ike",
            "--json",
            "--socket",
            &sock.to_string_lossy(),
        ])?)?;
        let peer = &v["peers"][0];
        let sas = peer["ike_sas"].as_array().map_or(&[][..], Vec::as_slice);
        let children = peer["child_sas"].as_array().map_or(&[][..], Vec::as_slice);
        let from = |sa: &serde_json::Value| {
            sa["local"]
                .as_str()
                .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
                .map(|a| a.ip().to_string())
        };
        let on_one_ike_sa = children
            .windows(2)
            .all(|w| w[0]["ike_sa"] == w[1]["ike_sa"]);
        let sa = sas.iter().find(|sa| from(sa).as_deref() == Some(care_of));
        if let Some(sa) = sa {
            if (sas.len() == 1 || !alone) && children.len() == MN_CHILDREN.len() && on_one_ike_sa {
                return Ok(ike_phase(sa, children));
            }
        }
        if t0.elapsed() > Duration::from_secs(15) {
            return Err(err(format!(
                "the mobile node's IKE not from {care_of} alone after 15 s: {v}"
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What a phase prints of the mobile node's IKE SA and CHILD_SAs.
fn ike_phase(sa: &serde_json::Value, children: &[serde_json::Value]) -> IkePhase {
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("?").to_string();
    let spi = |v: &serde_json::Value| v.as_str().and_then(|s| u32::from_str_radix(s, 16).ok());
    let mut line = format!(
        "IKE SA {}/{} {} -> {}{}; CHILD_SAs (out/in)",
        text(&sa["spi_i"]),
        text(&sa["spi_r"]),
        text(&sa["local"]),
        text(&sa["remote"]),
        if sa["nat_local"] == true {
            ", behind a NAT"
        } else {
            ""
        },
    );
    let (mut bu_spi, mut ba_spi) = (None, None);
    for (outbound, _) in MN_CHILDREN {
        let Some(c) = children.iter().find(|c| c["child"] == outbound) else {
            continue;
        };
        let what = match outbound {
            "sa1" => {
                (bu_spi, ba_spi) = (spi(&c["outbound_spi"]), spi(&c["inbound_spi"]));
                "BU/BA"
            }
            "sa7" => "payload",
            _ => "payload IPv4",
        };
        let _ = write!(
            line,
            " {what} {}/{}",
            text(&c["outbound_spi"]),
            text(&c["inbound_spi"])
        );
    }
    IkePhase {
        line,
        bu_spi,
        ba_spi,
    }
}

/// How many SAs of an appliance are not keyed by IKE (`show sa --json`).
fn static_sas(sock: &Path) -> Result<u64> {
    let v = json(&bitsgw(&[
        "show",
        "sa",
        "--json",
        "--socket",
        &sock.to_string_lossy(),
    ])?)?;
    let sas = v
        .as_array()
        .ok_or_else(|| err(format!("show sa --json without SAs: {v}")))?;
    Ok(sas.iter().filter(|sa| sa["keyed_by"] != "ike").count() as u64)
}

/// Waits until the mobile node has registered `care_of` (or is home).
pub(super) fn wait_registered(n: &mut Netns, sock: &Path, care_of: &str) -> Result<Duration> {
    let t0 = Instant::now();
    loop {
        n.check_alive()?;
        n.interrupted()?;
        let s = mn_state(sock)?;
        let registering = !s["registering"].is_null();
        let done = if care_of == "home" {
            s["attachment"] == "home" && s["registered"].is_null() && !registering
        } else {
            s["registered"] == care_of && !registering
        };
        if done {
            return Ok(t0.elapsed());
        }
        if t0.elapsed() > Duration::from_secs(15) {
            return Err(err(format!("no registration of {care_of} after 15 s: {s}")));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts a ping from the correspondent to the host: `count` requests
/// every `interval_ms`. Returns the label of the process.
pub(super) fn start_ping(
    n: &mut Netns,
    label: &str,
    count: u32,
    interval_ms: u32,
    v4: bool,
) -> Result<()> {
    let interval = format!("{}", f64::from(interval_ms) / 1000.0);
    let count = count.to_string();
    let dst = if v4 { HOA4 } else { HOA };
    n.spawn(
        "home",
        label,
        &[
            "ping", "-n", "-q", "-i", &interval, "-c", &count, "-W", "1", dst,
        ],
    )
}

/// Waits for a ping started with [`start_ping`]; (sent, received).
pub(super) fn finish_ping(n: &mut Netns, label: &str) -> Result<(u64, u64)> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        n.interrupted()?;
        let done = n
            .children
            .iter_mut()
            .find(|(l, _)| l == label)
            .map(|(_, c)| matches!(c.try_wait(), Ok(Some(_))))
            .unwrap_or(true);
        if done {
            break;
        }
        if Instant::now() > deadline {
            return Err(err(format!("{label} did not finish")));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    n.end(label);
    let log = std::fs::read_to_string(n.dir.join(format!("{label}.log"))).unwrap_or_default();
    // "N packets transmitted, M received"
    let line = log
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .ok_or_else(|| err(format!("{label}: no summary in: {log}")))?;
    let nums: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .take(2)
        .filter_map(|s| s.parse().ok())
        .collect();
    match nums.as_slice() {
        [sent, recv] => Ok((*sent, *recv)),
        _ => Err(err(format!("{label}: can not read {line}"))),
    }
}

/// iperf3 from the correspondent to the host for `secs`: bits per second.
pub(super) fn tcp(n: &mut Netns, label: &str, secs: u32) -> Result<f64> {
    n.spawn(
        "host",
        &format!("{label}-server"),
        &["iperf3", "-s", "-1", "-B", HOA],
    )?;
    let t = secs.to_string();
    let mut last = String::new();
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(200));
        n.interrupted()?;
        match n.exec("home", &["iperf3", "-c", HOA, "-t", &t, "-J", "-M", "1200"]) {
            Ok(out) => {
                n.end(&format!("{label}-server"));
                let v = json(&out)?;
                return v["end"]["sum_received"]["bits_per_second"]
                    .as_f64()
                    .ok_or_else(|| err(format!("iperf3 without a result: {out}")));
            }
            Err(e) => last = e.0,
        }
    }
    n.end(&format!("{label}-server"));
    Err(err(format!("iperf3 never connected: {last}")))
}

/// Runs the mobility scenario; prints as it goes into `out`.
pub(super) fn run_mobility(
    n: &mut Netns,
    opts: &LabOptions,
    out: &mut dyn FnMut(&str),
) -> Result<LabReport> {
    build_mobility(n)?;
    out("topology: host - mn ~ {IPv6 A, IPv6 B, public IPv4, NAT} ~ inet - ha - home (cn)\n");
    out(if opts.manual_keys {
        "every SA keyed by hand (the seeds' policies)\n"
    } else {
        "every SA keyed by IKEv2 (pre-shared key): the mobile node's IKE runs from its care-of address\n"
    });
    let ike = !opts.manual_keys;
    let (ha_cfg, mn_cfg) = mobility_configs(&n.dir, ike)?;
    let trace_ha = n.dir.join("trace-ha");
    let trace_mn = n.dir.join("trace-mn");
    let (ha_sock, mn_sock) = (n.dir.join("ha.sock"), n.dir.join("mn.sock"));
    // A kept folder may hold the sockets and keys of an earlier run.
    let keys_files = ["ha", "mn"].map(|role| wireshark_keys_file(&n.dir, role));
    for stale in [&ha_sock, &mn_sock].into_iter().chain(&keys_files) {
        let _ = std::fs::remove_file(stale);
    }
    // The wire between the Internet and the home agent.
    let pcap = n.dir.join("wire-inet-ha.pcap");
    n.spawn(
        "inet",
        "capture",
        &["tshark", "-q", "-i", "in-ha", "-w", &pcap.to_string_lossy()],
    )?;
    std::thread::sleep(Duration::from_millis(1500));
    let exe = std::env::current_exe().map_err(|e| err(e.to_string()))?;
    let exe = exe.to_string_lossy().into_owned();
    n.spawn(
        "ha",
        "bitsgw-ha",
        &[
            &exe,
            "run",
            &ha_cfg.to_string_lossy(),
            "--trace",
            &trace_ha.to_string_lossy(),
        ],
    )?;
    wait_for_socket(n, &ha_sock)?;
    n.spawn(
        "mn",
        "bitsgw-mn",
        &[
            &exe,
            "run",
            &mn_cfg.to_string_lossy(),
            "--trace",
            &trace_mn.to_string_lossy(),
        ],
    )?;
    wait_for_socket(n, &mn_sock)?;
    let mut report = LabReport::default();
    // The SPIs of every Binding Update / Acknowledgement CHILD_SA.
    let (mut bu_spis, mut ba_spis) = (Vec::new(), Vec::new());
    let mut ike_after = |n: &mut Netns, care_of: &str, alone: bool| -> Result<String> {
        if !ike {
            return Ok(String::new());
        }
        let p = wait_ike(n, &mn_sock, care_of, alone)?;
        bu_spis.extend(p.bu_spi);
        ba_spis.extend(p.ba_spi);
        Ok(p.line)
    };

    // Phase 1: registration over IPv6.
    let took = wait_registered(n, &mn_sock, COA_A)?;
    out(&format!(
        "[1] registration over IPv6: care-of {COA_A}, BU/BA in {} ms{}\n",
        took.as_millis(),
        if ike {
            " (the first BU waits for its CHILD_SA)"
        } else {
            ""
        }
    ));
    let ike_1 = ike_after(n, COA_A, true)?;
    if ike {
        out(&format!("    {ike_1}\n"));
    }
    let (pings, interval) = if opts.short {
        (100u32, 10u32)
    } else {
        (300, 10)
    };
    let secs = if opts.short { 2 } else { 5 };
    start_ping(n, "ping-1", 20, 20, false)?;
    let (s, r) = finish_ping(n, "ping-1")?;
    let bps = tcp(n, "tcp-1", secs)?;
    out(&format!(
        "    ping cn -> host: {r}/{s} answered; TCP cn -> host {:.1} Mbit/s\n",
        bps / 1e6
    ));
    report.tcp.push(("ipv6".into(), bps));
    report.phases.push(PhaseReport {
        name: "register over IPv6".into(),
        care_of: COA_A.into(),
        encapsulation: "IPv6 (HAO/RH2 signalling)".into(),
        bu_sent: counter(&mn_sock, "bu_sent")? + counter(&mn_sock, "bu_retransmitted")?,
        ba_taken: counter(&mn_sock, "ba_accepted")?,
        pings_sent: s,
        pings_received: r,
        registration_ms: took.as_millis() as u64,
        ike: ike_1,
        ..Default::default()
    });
    report.bindings.push(ha_bindings(&ha_sock)?);

    // The handovers, make-before-break: the old network stays up.
    let moves: [(&str, &str, &str, bool); 4] = [
        (
            "handover to public IPv4",
            COA_PUBLIC4,
            "IPv4 (protocol 41), BU in UDP",
            false,
        ),
        (
            "handover behind the NAT",
            COA_NAT,
            "IPv4/UDP 4191 via NAT",
            true,
        ),
        ("back to IPv6", COA_B, "IPv6 (HAO/RH2 signalling)", false),
        (
            "break-before-make to IPv6 A",
            COA_A,
            "IPv6 (HAO/RH2 signalling)",
            false,
        ),
    ];
    for (i, (name, coa, encap, nat)) in moves.into_iter().enumerate() {
        n.interrupted()?;
        let phase = i + 2;
        let bu0 = counter(&mn_sock, "bu_sent")? + counter(&mn_sock, "bu_retransmitted")?;
        let ba0 = counter(&mn_sock, "ba_accepted")?;
        let label = format!("ping-{phase}");
        start_ping(n, &label, pings, interval, phase % 2 == 1)?;
        std::thread::sleep(Duration::from_millis(u64::from(pings * interval) / 3));
        let breaking = name.starts_with("break");
        let mut args = vec!["ctl", "move", coa];
        if breaking {
            args.push("--break");
            // The old network goes away with the move.
            n.exec("mn", &["ip", "link", "set", "mn-v6b", "down"])?;
        }
        let sock = mn_sock.to_string_lossy().into_owned();
        args.extend(["--socket", &sock]);
        bitsgw(&args)?;
        let took = wait_registered(n, &mn_sock, coa)?;
        let (s, r) = finish_ping(n, &label)?;
        if breaking {
            n.exec("mn", &["ip", "link", "set", "mn-v6b", "up"])?;
            // The link's route went with it.
            n.exec(
                "mn",
                &[
                    "ip",
                    "-6",
                    "route",
                    "replace",
                    "default",
                    "via",
                    "2001:db8:3::1",
                    "dev",
                    "mn-v6b",
                    "onlink",
                    "table",
                    "102",
                ],
            )?;
        }
        let bu = counter(&mn_sock, "bu_sent")? + counter(&mn_sock, "bu_retransmitted")? - bu0;
        let ba = counter(&mn_sock, "ba_accepted")? - ba0;
        let st = mn_state(&mn_sock)?;
        let seen_nat = st
            .get("nat")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false);
        let lost = s.saturating_sub(r);
        let ike_line = ike_after(n, coa, !breaking)?;
        out(&format!(
            "[{phase}] {name}: care-of {coa}, {encap}; BU sent {bu}, BA taken {ba} ({} ms); NAT {}; pings {r}/{s}, lost {lost}{}\n",
            took.as_millis(),
            if seen_nat { "detected" } else { "not seen" },
            if breaking { format!(", interruption ~{} ms", lost * u64::from(interval)) } else { String::new() },
        ));
        if ike {
            out(&format!("    {ike_line}\n"));
        }
        if seen_nat != nat {
            return Err(err(format!(
                "{name}: NAT {} but expected {}",
                seen_nat, nat
            )));
        }
        report.phases.push(PhaseReport {
            name: name.into(),
            care_of: coa.into(),
            encapsulation: encap.into(),
            nat: seen_nat,
            bu_sent: bu,
            ba_taken: ba,
            pings_sent: s,
            pings_received: r,
            interruption_ms: lost * u64::from(interval),
            registration_ms: took.as_millis() as u64,
            ike: ike_line,
        });
        report.bindings.push(ha_bindings(&ha_sock)?);
        if nat {
            let bps = tcp(n, "tcp-nat", secs)?;
            out(&format!(
                "    TCP cn -> host behind the NAT {:.1} Mbit/s\n",
                bps / 1e6
            ));
            report.tcp.push(("behind nat".into(), bps));
            // NAT rebinding: new port range, old mappings forgotten; the
            // mobile node's next refresh (its NAT keepalive) brings the
            // home agent along.
            nat_rule(n, "42000-42999")?;
            let _ = n.exec("nat", &["conntrack", "-F"]);
            let sock = mn_sock.to_string_lossy().into_owned();
            bitsgw(&["ctl", "refresh", "--socket", &sock])?;
            std::thread::sleep(Duration::from_millis(300));
            let b = json(&bitsgw(&[
                "show",
                "bindings",
                "--json",
                "--socket",
                &ha_sock.to_string_lossy(),
            ])?)?;
            let path = b.to_string();
            start_ping(n, "ping-rebind", 20, 20, false)?;
            let (s, r) = finish_ping(n, "ping-rebind")?;
            out(&format!(
                "    NAT rebinding ({NAT_PUBLIC}, new port range): the home agent now sends to {}; pings {r}/{s}\n",
                if path.contains(":42") { "the new NAT port" } else { "the OLD NAT port" }
            ));
            if !path.contains(":42") {
                return Err(err(format!(
                    "the home agent did not follow the NAT rebinding: {b}"
                )));
            }
        }
    }

    // Return home.
    let sock = mn_sock.to_string_lossy().into_owned();
    bitsgw(&["ctl", "move", "home", "--socket", &sock])?;
    let took = wait_registered(n, &mn_sock, "home")?;
    let b = json(&bitsgw(&[
        "show",
        "bindings",
        "--json",
        "--socket",
        &ha_sock.to_string_lossy(),
    ])?)?;
    start_ping(n, "ping-home", 20, 20, false)?;
    let (s, r) = finish_ping(n, "ping-home")?;
    out(&format!(
        "[6] return home: de-registered in {} ms, bindings at the home agent: {}; pings {r}/{s}\n",
        took.as_millis(),
        b.as_array().map_or(0, Vec::len)
    ));
    report.phases.push(PhaseReport {
        name: "return home".into(),
        care_of: "home".into(),
        encapsulation: "none (home link)".into(),
        pings_sent: s,
        pings_received: r,
        registration_ms: took.as_millis() as u64,
        ..Default::default()
    });
    report.bindings.push(ha_bindings(&ha_sock)?);

    out(&summary(&report.phases));

    // Counters, then the wire.
    for (who, sock) in [("home agent", &ha_sock), ("mobile node", &mn_sock)] {
        out(&format!("\n{who}: security associations\n"));
        out(&bitsgw(&[
            "show",
            "sa",
            "--socket",
            &sock.to_string_lossy(),
        ])?);
        out(&format!("{who}: counters\n"));
        out(&bitsgw(&[
            "show",
            "counters",
            "--socket",
            &sock.to_string_lossy(),
        ])?);
    }
    for sock in [&ha_sock, &mn_sock] {
        report.static_sas += static_sas(sock)?;
    }
    if ike {
        out(&format!(
            "\nSAs not keyed by IKE on the two appliances: {}\n",
            report.static_sas
        ));
    }
    // The capture ends with the appliances still up, so that their
    // bindings and IKE SAs end the demo.
    std::thread::sleep(Duration::from_millis(500));
    n.end("capture");
    let esp_keys = if ike {
        esp_sa_options(&keys_files)?
    } else {
        esp_sa_options_of_policy(&n.dir.join("dsmip-hostwide-ha.json"))?
    };
    let wire = wire_check(&pcap, &bu_spis, &ba_spis, &esp_keys)?;
    report.wire_frames = wire.frames;
    report.wire_cleartext = wire.clear;
    report.wire_ike = wire.ike;
    report.bu_frames = wire.bu;
    report.ba_frames = wire.ba;
    report.ike_exchanges = wire.exchanges;
    report.bu_decoded = wire.bu_decoded.len() as u64;
    report.ba_decoded = wire.ba_decoded.len() as u64;
    out(&format!(
        "\nwire between the Internet and the home agent: {} frames captured, {} in clear (besides ARP and neighbor discovery), {} of IKE (UDP 500 and 4500)\n",
        wire.frames, wire.clear, wire.ike
    ));
    if ike {
        out(&ike_on_the_wire(&pcap, &report, &bu_spis, &ba_spis)?);
    }
    out(&format!(
        "tshark, given {}, decrypted {} Binding Updates and {} Binding Acknowledgements; the first of each:\n",
        if ike {
            format!(
                "the keys the appliances wrote to {} and {} (danger_wireshark_keys_file)",
                keys_files[0].display(),
                keys_files[1].display()
            )
        } else {
            "the home agent's policy file's keys".to_string()
        },
        report.bu_decoded,
        report.ba_decoded
    ));
    for m in wire
        .bu_decoded
        .first()
        .into_iter()
        .chain(wire.ba_decoded.first())
    {
        out(&format!("{m}\n"));
    }
    for (who, sock) in [("home agent", &ha_sock), ("mobile node", &mn_sock)] {
        // Keyed by hand, the appliances have no IKE to show.
        let shown: &[&str] = if ike {
            &["bindings", "ike"]
        } else {
            &["bindings"]
        };
        for what in shown {
            out(&format!("\n{who}: show {what}\n"));
            out(&bitsgw(&[
                "show",
                what,
                "--socket",
                &sock.to_string_lossy(),
            ])?);
        }
    }
    n.end("bitsgw-mn");
    n.end("bitsgw-ha");
    if wire.clear != 0 {
        return Err(err(format!(
            "{} frames in clear on the wire: see {}",
            wire.clear,
            pcap.display()
        )));
    }
    Ok(report)
}

/// What tshark shows of IKE in the capture: the exchanges it decoded,
/// the first registration's IKE messages, and the ESP frames on the
/// Binding Update / Acknowledgement CHILD_SAs' SPIs (tshark decrypts
/// them only with the keys of `"danger_wireshark_keys_file"`).
fn ike_on_the_wire(
    pcap: &Path,
    report: &LabReport,
    bu_spis: &[u32],
    ba_spis: &[u32],
) -> Result<String> {
    let mut t = String::from("IKE exchanges tshark decoded:");
    for (name, messages) in &report.ike_exchanges {
        let _ = write!(t, " {name} {messages}");
    }
    t.push('\n');
    let pcap = pcap.to_string_lossy();
    // The first registration's IKE: IKE_SA_INIT, IKE_AUTH and two
    // CREATE_CHILD_SA exchanges.
    let decoded = run_cmd(&["tshark", "-r", &pcap, "-Y", "isakmp"])?;
    for line in decoded.lines().take(8) {
        let _ = writeln!(t, "{line}");
    }
    let spis = |spis: &[u32]| {
        spis.iter()
            .map(|s| format!("esp.spi == 0x{s:08x}"))
            .collect::<Vec<_>>()
            .join(" || ")
    };
    let _ = writeln!(
        t,
        "Binding Updates (ESP on the BU/BA CHILD_SAs' outbound SPIs {}): {} frames; Binding Acknowledgements (their inbound SPIs {}): {} frames; the first of each:",
        spi_list(bu_spis),
        report.bu_frames,
        spi_list(ba_spis),
        report.ba_frames
    );
    for filter in [spis(bu_spis), spis(ba_spis)] {
        if filter.is_empty() {
            continue;
        }
        let frames = run_cmd(&[
            "tshark",
            "-r",
            &pcap,
            "-d",
            "udp.port==4191,ipv6",
            "-Y",
            &filter,
        ])?;
        if let Some(first) = frames.lines().next() {
            let _ = writeln!(t, "{first}");
        }
    }
    Ok(t)
}

fn spi_list(spis: &[u32]) -> String {
    spis.iter()
        .map(|s| format!("{s:08x}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The table of phases.
pub(super) fn summary(phases: &[PhaseReport]) -> String {
    let mut t = String::from("\nphase                          care-of            encapsulation                 NAT  BU  BA  pings     lost  interruption\n");
    for p in phases {
        let _ = writeln!(
            t,
            "{:<30} {:<18} {:<29} {:<4} {:>2}  {:>2}  {:>4}/{:<4} {:>4}  {}",
            p.name,
            p.care_of,
            p.encapsulation,
            if p.nat { "yes" } else { "no" },
            p.bu_sent,
            p.ba_taken,
            p.pings_received,
            p.pings_sent,
            p.pings_sent.saturating_sub(p.pings_received),
            if p.interruption_ms > 0 {
                format!("~{} ms", p.interruption_ms)
            } else {
                "-".into()
            },
        );
    }
    t
}

/// What the capture between the Internet and the home agent holds.
pub(super) struct Wire {
    frames: u64,
    /// Frames that are neither ESP nor IKE, ARP or neighbor discovery.
    clear: u64,
    /// IKE's frames (UDP 500, and 4500 with NAT-keepalives).
    ike: u64,
    /// The IKE exchanges by name, in order of first appearance.
    exchanges: Vec<(String, u64)>,
    /// ESP frames on the given Binding Update and Acknowledgement SPIs.
    bu: u64,
    ba: u64,
    /// The Binding Updates and Acknowledgements tshark decrypted.
    bu_decoded: Vec<MobilityMessage>,
    ba_decoded: Vec<MobilityMessage>,
}

/// Reads the capture with tshark: every IP frame must carry ESP (in IPv6,
/// in IPv4, or in UDP 4191) or be IKE (RFC 7296: on UDP 500 and 4500; all
/// but IKE_SA_INIT encrypted). With `esp_keys` ([`esp_sa_options`]) tshark
/// decrypts the ESP and finds the Binding Updates and Acknowledgements in
/// it.
pub(super) fn wire_check(
    pcap: &Path,
    bu_spis: &[u32],
    ba_spis: &[u32],
    esp_keys: &[String],
) -> Result<Wire> {
    let text = run_cmd(&[
        "tshark",
        "-r",
        &pcap.to_string_lossy(),
        "-d",
        "udp.port==4191,ipv6",
        "-T",
        "fields",
        "-e",
        "frame.protocols",
        "-e",
        "icmpv6.type",
        "-e",
        "esp.spi",
        "-e",
        "isakmp.exchangetype",
    ])?;
    let mut w = Wire {
        frames: 0,
        clear: 0,
        ike: 0,
        exchanges: Vec::new(),
        bu: 0,
        ba: 0,
        bu_decoded: Vec::new(),
        ba_decoded: Vec::new(),
    };
    if !esp_keys.is_empty() {
        for m in mobility_messages(pcap, esp_keys)? {
            match m.mh_type {
                MH_BINDING_UPDATE => w.bu_decoded.push(m),
                MH_BINDING_ACK => w.ba_decoded.push(m),
                _ => {}
            }
        }
    }
    for line in text.lines() {
        w.frames += 1;
        let mut f = line.split('\t');
        let protos = f.next().unwrap_or("");
        let icmp6 = f.next().unwrap_or("");
        let spi = f.next().unwrap_or("");
        let exchange = f.next().unwrap_or("");
        // Link-local control: router and neighbor discovery, MLD.
        let nd = matches!(
            icmp6,
            "130" | "131" | "132" | "133" | "134" | "135" | "136" | "143"
        );
        let ike = protos.contains(":isakmp") || protos.ends_with(":udpencap");
        if ike {
            w.ike += 1;
        }
        if let Some(name) = exchange_name(exchange) {
            match w.exchanges.iter_mut().find(|(n, _)| n == name) {
                Some((_, count)) => *count += 1,
                None => w.exchanges.push((name.into(), 1)),
            }
        }
        let spi = u32::from_str_radix(spi.trim_start_matches("0x"), 16).ok();
        if spi.is_some_and(|s| bu_spis.contains(&s)) {
            w.bu += 1;
        }
        if spi.is_some_and(|s| ba_spis.contains(&s)) {
            w.ba += 1;
        }
        if !(protos.contains(":esp") || ike || protos.ends_with(":arp") || nd) {
            w.clear += 1;
        }
    }
    Ok(w)
}

/// An IKEv2 exchange type's name (RFC 7296 3.1).
fn exchange_name(number: &str) -> Option<&'static str> {
    Some(match number {
        "34" => "IKE_SA_INIT",
        "35" => "IKE_AUTH",
        "36" => "CREATE_CHILD_SA",
        "37" => "INFORMATIONAL",
        _ => return None,
    })
}

/// The Mobility Header types of a Binding Update and a Binding
/// Acknowledgement (RFC 6275 6.1.7, 6.1.8).
const MH_BINDING_UPDATE: u8 = 5;
const MH_BINDING_ACK: u8 = 6;

/// tshark's options that decrypt the ESP of the capture: one ESP SA table
/// record for each line the appliances wrote to their keys `files`
/// (each record once: both appliances write every SA).
fn esp_sa_options(files: &[PathBuf]) -> Result<Vec<String>> {
    let mut records: Vec<String> = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).map_err(|e| err(format!("{}: {e}", f.display())))?;
        for line in text.lines().filter(|l| !l.is_empty()) {
            if !records.iter().any(|r| r == line) {
                records.push(line.to_string());
            }
        }
    }
    if records.is_empty() {
        return Err(err(format!(
            "no keys in {}: the appliances installed no CHILD_SA",
            files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(esp_decode_options(records))
}

/// tshark's options that decrypt the ESP of every SA of the policy file
/// `policy` (a `--manual-keys` run's keys, which the policy holds) that
/// tshark has names for. The SAs' IP version is not in the SA alone: a
/// record for each.
fn esp_sa_options_of_policy(policy: &Path) -> Result<Vec<String>> {
    use crate::ike::wireshark_keys::esp_sa_line;
    use bitsgw_ipsec::selector::Family;
    let set = crate::config::load_policy_file(policy).map_err(|e| err(e.to_string()))?;
    // An SA of a transform tshark has no name for stays encrypted.
    let records = set
        .sas
        .iter()
        .flat_map(|sa| {
            [Family::V4, Family::V6].map(|family| {
                esp_sa_line(family, sa.spi, sa.transform, &[&sa.enc_key], &sa.auth_key)
            })
        })
        .flatten()
        .map(|line| line.as_str().to_string())
        .collect();
    Ok(esp_decode_options(records))
}

/// tshark's options that decrypt ESP with the ESP SA table `records`.
fn esp_decode_options(records: Vec<String>) -> Vec<String> {
    let mut options = vec!["-o".into(), "esp.enable_encryption_decode:TRUE".into()];
    for r in records {
        options.extend(["-o".into(), format!("uat:esp_sa:{r}")]);
    }
    options
}

/// One Binding Update or Acknowledgement as tshark decoded it.
pub(super) struct MobilityMessage {
    frame: String,
    src: String,
    dst: String,
    mh_type: u8,
    sequence: String,
    /// In units of 4 seconds (RFC 6275 6.1.7).
    lifetime: u64,
    /// The Binding Acknowledgement's status (RFC 6275 6.1.8).
    status: String,
    flags: Vec<&'static str>,
}

impl std::fmt::Display for MobilityMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = if self.mh_type == MH_BINDING_UPDATE {
            "Binding Update"
        } else {
            "Binding Acknowledgement"
        };
        write!(
            f,
            "  frame {}: {name} {} -> {}, MH type {}, sequence {}, lifetime {} ({} s)",
            self.frame,
            self.src,
            self.dst,
            self.mh_type,
            self.sequence,
            self.lifetime,
            self.lifetime * 4
        )?;
        if self.mh_type == MH_BINDING_ACK {
            write!(f, ", status {}", self.status)?;
        }
        if self.flags.is_empty() {
            write!(f, ", no flags")
        } else {
            write!(f, ", flags {}", self.flags.join(" "))
        }
    }
}

/// The Mobility Headers tshark finds in the capture once it decrypts the
/// ESP with `esp_keys` ([`esp_sa_options`]), in capture order.
fn mobility_messages(pcap: &Path, esp_keys: &[String]) -> Result<Vec<MobilityMessage>> {
    const BU_FLAGS: [(&str, &str); 4] = [
        ("mip6.bu.a_flag", "A"),
        ("mip6.bu.h_flag", "H"),
        ("mip6.bu.l_flag", "L"),
        ("mip6.bu.k_flag", "K"),
    ];
    let mut args: Vec<String> = ["-r", &pcap.to_string_lossy(), "-d", "udp.port==4191,ipv6"]
        .map(String::from)
        .to_vec();
    args.extend_from_slice(esp_keys);
    let fields = [
        "frame.number",
        "ipv6.src",
        "ipv6.dst",
        "mip6.mhtype",
        "mip6.bu.seqnr",
        "mip6.bu.lifetime",
        "mip6.ba.status",
        "mip6.ba.seqnr",
        "mip6.ba.lifetime",
        "mip6.ba.k_flag",
    ];
    for f in fields.iter().chain(BU_FLAGS.iter().map(|(f, _)| f)) {
        args.extend(["-e".into(), (*f).into()]);
    }
    // The innermost IPv6 header's addresses: the one the Mobility Header
    // is in, not a tunnel's.
    args.extend(["-T", "fields", "-E", "occurrence=l", "-Y", "mip6.mhtype"].map(String::from));
    let out = std::process::Command::new("tshark")
        .args(&args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| err(format!("tshark: {e}")))?;
    // The arguments hold keys: the error shows tshark's words alone.
    if !out.status.success() {
        return Err(err(format!(
            "tshark decrypting {}: {}",
            pcap.display(),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let set = |v: &str| v == "1" || v == "True";
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            let at = |i: usize| f.get(i).copied().unwrap_or("");
            let mh_type: u8 = at(3).parse().ok()?;
            let bu = mh_type == MH_BINDING_UPDATE;
            let mut flags: Vec<&'static str> = if bu {
                BU_FLAGS
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| set(at(fields.len() + i)))
                    .map(|(_, (_, name))| *name)
                    .collect()
            } else {
                Vec::new()
            };
            if !bu && set(at(9)) {
                flags.push("K");
            }
            let (sequence, lifetime) = if bu { (at(4), at(5)) } else { (at(7), at(8)) };
            Some(MobilityMessage {
                frame: at(0).into(),
                src: at(1).into(),
                dst: at(2).into(),
                mh_type,
                sequence: sequence.into(),
                lifetime: lifetime.parse().unwrap_or(0),
                status: at(6).into(),
                flags,
            })
        })
        .collect())
}
