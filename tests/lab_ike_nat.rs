//! IKEv2 NAT traversal through a real nftables NAT (RFC 7296 2.23, RFC
//! 3948): site A sits behind a router `r` that masquerades everything
//! leaving toward site B to its own address 203.0.113.129 and to source
//! ports 40000-40999 (so port 500 and 4500 are both translated, as a
//! carrier-grade NAT would), site B is public at 203.0.113.130.
//!
//! ```text
//! hA 192.0.2.10 - gA 203.0.113.1 - ra [r: NAT] rb 203.0.113.129 - gB 203.0.113.130 - hB 198.51.100.20
//! ```
//!
//! gA and gB are bitsgw bumps or strongSwan's charon (a router with
//! kernel-libipsec, which carries ESP in UDP). Once NAT is detected, IKE
//! moves to UDP 4500 and the CHILD_SA is UDP-encapsulated: the wire between
//! the NAT and B, captured with tshark, carries UDP 500 and 4500 only,
//! never ESP (IP protocol 50) and nothing of the hosts in clear. The side
//! behind the NAT sends NAT-keepalives; CHILD_SA and IKE SA rekeys keep
//! the encapsulation; when the NAT forgets its mappings, B follows A's
//! next IKE message to the new one (RFC 7296 2.23).
//!
//! Needs root, nftables, conntrack, tshark, iperf3, iputils-ping (and
//! charon for the mixed tests; `scripts/setup-test-deps.sh` installs
//! them). Everything it creates it removes, also when it fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{bitsgw, find_sa, show, start_charon, swanctl, Lab, CHARON};
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// gA's address, behind the NAT.
const A: &str = "203.0.113.1";
/// The NAT's public address: A as B sees it.
const NAT: &str = "203.0.113.129";
/// B's address.
const B: &str = "203.0.113.130";
/// The ports the NAT maps A's sources to.
const NAT_PORTS: std::ops::RangeInclusive<u16> = 40000..=40999;
/// The ports of its new mappings once it forgot the first ones.
const REMAPPED: std::ops::RangeInclusive<u16> = 41000..=41999;
const PSK: &str = "bitsgw-nat-lab-only-not-a-secret";

/// What runs on one side.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Gw {
    Bitsgw,
    Charon,
}

/// One side of the lab: A behind the NAT, B public.
struct Side {
    name: &'static str,
    me: &'static str,
    /// The peer as this side sees it (B sees the NAT's address).
    peer: &'static str,
    net: &'static str,
    peer_net: &'static str,
    out: &'static str,
    inb: &'static str,
}

const SIDE_A: Side = Side {
    name: "a",
    me: A,
    peer: B,
    net: "192.0.2.0/24",
    peer_net: "198.51.100.0/24",
    out: "a-to-b",
    inb: "b-to-a",
};

const SIDE_B: Side = Side {
    name: "b",
    me: B,
    peer: NAT,
    net: "198.51.100.0/24",
    peer_net: "192.0.2.0/24",
    out: "b-to-a",
    inb: "a-to-b",
};

/// Links hA-gA-r-gB-hB, addresses them for the kinds of gateway, and
/// makes `r` the NAT.
fn build(lab: &Lab, a: Gw, b: Gw) {
    common::link_two_sites(lab);
    let mut addrs = vec![
        ("hA", "eth0", "192.0.2.10/24"),
        ("hB", "eth0", "198.51.100.20/24"),
        ("r", "ra", "203.0.113.62/26"),
        ("r", "rb", "203.0.113.129/25"),
    ];
    // A bitsgw bump has no IP stack of its own: the host's next hop is
    // the router, which reaches the bump's address at the host's MAC.
    addrs.extend(match a {
        Gw::Bitsgw => vec![("r", "ra", "192.0.2.1/24")],
        Gw::Charon => vec![
            ("gA", "wan", "203.0.113.1/26"),
            ("gA", "host", "192.0.2.1/24"),
        ],
    });
    addrs.extend(match b {
        Gw::Bitsgw => vec![("r", "rb", "198.51.100.1/24")],
        Gw::Charon => vec![
            ("gB", "wan", "203.0.113.130/25"),
            ("gB", "host", "198.51.100.1/24"),
        ],
    });
    for (ns, dev, addr) in addrs {
        lab.exec(ns, &["ip", "addr", "add", addr, "dev", dev]);
    }
    let mut routes = vec![("hA", "192.0.2.1"), ("hB", "198.51.100.1")];
    if a == Gw::Charon {
        routes.push(("gA", "203.0.113.62"));
    }
    if b == Gw::Charon {
        routes.push(("gB", NAT));
    }
    for (ns, via) in routes {
        lab.exec(ns, &["ip", "route", "add", "default", "via", via]);
    }
    for h in ["hA", "hB"] {
        lab.exec(h, &["ip", "link", "set", "eth0", "mtu", "1400"]);
    }
    if a == Gw::Bitsgw {
        let mac = lab.mac("hA", "eth0");
        lab.exec("r", &["ip", "neigh", "add", A, "lladdr", &mac, "dev", "ra"]);
        // The bump asks for B on its /24: the router answers for it.
        lab.exec("r", &["sysctl", "-qw", "net.ipv4.conf.ra.proxy_arp=1"]);
    }
    if b == Gw::Bitsgw {
        let mac = lab.mac("hB", "eth0");
        lab.exec("r", &["ip", "neigh", "add", B, "lladdr", &mac, "dev", "rb"]);
    }
    for ns in ["r", "gA", "gB"] {
        for k in [
            "net.ipv4.ip_forward=1",
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
        ] {
            lab.exec(ns, &["sysctl", "-qw", k]);
        }
    }
    nat(lab, &NAT_PORTS);
}

/// The NAT: whatever leaves toward B from behind it takes the router's
/// address and a source port of `ports`. Again with other ports, the NAT
/// forgets its mappings (as one that rebooted) and makes new ones.
fn nat(lab: &Lab, ports: &std::ops::RangeInclusive<u16>) {
    let rules = lab.dir.join("nat.nft");
    std::fs::write(
        &rules,
        format!(
            "flush ruleset\ntable ip natlab {{\n  chain post {{\n    type nat hook postrouting priority srcnat;\n    oifname \"rb\" ip saddr 203.0.113.0/26 meta l4proto udp masquerade to :{}-{}\n    oifname \"rb\" ip saddr 203.0.113.0/26 masquerade\n  }}\n}}\n",
            ports.start(),
            ports.end()
        ),
    )
    .unwrap();
    lab.exec("r", &["nft", "-f", rules.to_str().unwrap()]);
    let _ = lab.try_exec("r", &["conntrack", "-F"]);
}

/// The policy of bitsgw on `side`: the sites protected by IKE-keyed
/// tunnel SAs between its address and its peer's as it sees it,
/// everything else discarded.
fn policy(side: &Side) -> String {
    let tunnel = json!({"local": side.me, "remote": side.peer});
    json!({
        "spd": {
            "outbound": [
                {"name": "sites-out", "local": side.net, "remote": side.peer_net, "action": "protect", "sa": side.out},
                {"name": "default-discard-out", "action": "discard"}
            ],
            "inbound": [
                {"name": "sites-in", "local": side.net, "remote": side.peer_net, "action": "protect", "sa": side.inb},
                {"name": "default-discard-in", "action": "discard"}
            ]
        },
        "sad": [
            {"name": side.out, "direction": "outbound", "keyed_by": "ike", "mode": "tunnel", "tunnel": tunnel},
            {"name": side.inb, "direction": "inbound", "keyed_by": "ike", "mode": "tunnel", "tunnel": tunnel, "replay_window": 1024}
        ]
    })
    .to_string()
}

/// Writes bitsgw's files for `side` (its peer's fields amended by
/// `peer_extra`) and starts it; its index in the lab's children.
fn start_bitsgw(lab: &mut Lab, side: &Side, initiate: bool, peer_extra: &Value) -> usize {
    let dir = lab.dir.clone();
    let n = side.name;
    std::fs::write(dir.join(format!("nat-{n}.json")), policy(side)).unwrap();
    let psk_file = dir.join(format!("nat-{n}.psk"));
    std::fs::write(&psk_file, format!("{PSK}\n")).unwrap();
    std::fs::set_permissions(&psk_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let other = if n == "a" { "b" } else { "a" };
    let mut peer = json!({
        "name": format!("site-{other}"), "local": side.me, "remote": side.peer,
        "local_id": format!("fqdn:gw-{n}.example"), "remote_id": format!("fqdn:gw-{other}.example"),
        "psk_file": format!("nat-{n}.psk"),
        "ike_proposals": ["aes128gcm16-prfsha256-ecp256"], "esp_proposals": ["aes128gcm16"],
        "start": if initiate { "initiate" } else { "respond" },
        "children": [{"outbound": side.out, "inbound": side.inb}]
    });
    for (k, v) in peer_extra.as_object().into_iter().flatten() {
        peer[k] = v.clone();
    }
    let cfg = json!({
        "role": "gateway", "policy": format!("nat-{n}.json"),
        "ports": {"host": {"type": "af_packet", "interface": "host"},
                  "network": {"type": "af_packet", "interface": "wan"}},
        "workers": 1, "pipeline": "run-to-completion",
        "control_socket": socket(lab, n), "state_dir": format!("nat-{n}-state"),
        "addresses": {"network": [format!("{}/24", side.me)]},
        "peers": [peer]
    });
    let path = dir.join(format!("nat-gw-{n}.json"));
    std::fs::write(&path, cfg.to_string()).unwrap();
    let ns = if n == "a" { "gA" } else { "gB" };
    let gw = lab.spawn(
        ns,
        &[env!("CARGO_BIN_EXE_bitsgw"), "run", path.to_str().unwrap()],
    );
    lab.wait_ready(gw, &socket(lab, n));
    gw
}

fn socket(lab: &Lab, side: &str) -> PathBuf {
    lab.dir.join(format!("nat-{side}.sock"))
}

/// charon's swanctl.conf for `side`: no forced encapsulation, so only the
/// NAT's translation makes it use UDP 4500.
fn charon_conf(side: &Side, initiate: bool) -> String {
    common::SwanConnection {
        side: side.name,
        local_addrs: side.me,
        remote_addrs: if initiate { side.peer } else { "%any" },
        local_ts: side.net,
        remote_ts: side.peer_net,
        encap: false,
        psk: PSK,
        proposals: ("aes128gcm16-prfsha256-ecp256", "aes128gcm16"),
        extra: ("", ""),
    }
    .conf()
}

/// tshark on the NAT's public link (`r:rb`), writing to a file.
struct Wire {
    index: usize,
    file: PathBuf,
}

impl Wire {
    fn start(lab: &mut Lab) -> Wire {
        let file = lab.dir.join("rb.pcap");
        let index = lab.spawn(
            "r",
            &["tshark", "-q", "-i", "rb", "-w", file.to_str().unwrap()],
        );
        // dumpcap makes the file once it captures.
        let deadline = Instant::now() + Duration::from_secs(15);
        while !file.exists() {
            assert!(Instant::now() < deadline, "tshark never started capturing");
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(300));
        Wire { index, file }
    }

    /// Stops the capture; its IPv4 frames.
    fn stop(self, lab: &mut Lab) -> Vec<Frame> {
        lab.terminate(self.index);
        let out = lab.exec(
            "r",
            &[
                "tshark",
                "-r",
                self.file.to_str().unwrap(),
                "-Y",
                "ip",
                "-T",
                "fields",
                "-E",
                "separator=|",
                "-e",
                "ip.src",
                "-e",
                "ip.dst",
                "-e",
                "ip.proto",
                "-e",
                "udp.srcport",
                "-e",
                "udp.dstport",
                "-e",
                "udp.payload",
            ],
        );
        out.lines().map(Frame::parse).collect()
    }
}

/// An IPv4 frame as tshark decoded it.
#[derive(Debug)]
struct Frame {
    src: String,
    dst: String,
    proto: u8,
    /// UDP source and destination ports.
    ports: Option<(u16, u16)>,
    payload: Vec<u8>,
}

impl Frame {
    fn parse(line: &str) -> Frame {
        let f: Vec<&str> = line.split('|').collect();
        let hex = f.get(5).copied().unwrap_or("").replace(':', "");
        let payload = (0..hex.len() / 2)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        Frame {
            src: f[0].into(),
            dst: f[1].into(),
            proto: f[2].split(',').next().unwrap().parse().unwrap(),
            ports: f[3]
                .parse()
                .ok()
                .and_then(|s| Some((s, f.get(4)?.parse().ok()?))),
            payload,
        }
    }

    /// A's end of the datagram (the NAT's address and port).
    fn nat_port(&self) -> Option<u16> {
        let (s, d) = self.ports?;
        if self.src == NAT {
            Some(s)
        } else if self.dst == NAT {
            Some(d)
        } else {
            None
        }
    }

    /// B's end of the datagram.
    fn b_port(&self) -> Option<u16> {
        let (s, d) = self.ports?;
        if self.src == B {
            Some(s)
        } else if self.dst == B {
            Some(d)
        } else {
            None
        }
    }

    fn is_esp_in_udp(&self) -> bool {
        self.b_port() == Some(4500) && self.payload.len() > 8 && self.payload[..4] != [0; 4]
    }

    fn is_keepalive_from_a(&self) -> bool {
        self.src == NAT && self.b_port() == Some(4500) && self.payload == [0xff]
    }
}

/// What crossed between the NAT and B: only UDP between the NAT's
/// translated ports and B's 500 or 4500, no ESP, nothing of the hosts;
/// IKE moved to 4500 and ESP ran in UDP. Returns the frames of ESP in
/// UDP and of keepalives.
fn check_wire(frames: &[Frame]) -> (usize, usize) {
    assert!(!frames.is_empty(), "nothing captured");
    for f in frames {
        assert_ne!(f.proto, 50, "plain ESP on the wire: {f:?}");
        assert_eq!(f.proto, 17, "not UDP: {f:?}");
        assert!(
            [f.src.as_str(), f.dst.as_str()] == [NAT, B]
                || [f.src.as_str(), f.dst.as_str()] == [B, NAT],
            "not between the NAT and B: {f:?}"
        );
        assert!(
            matches!(f.b_port(), Some(500 | 4500)),
            "not IKE or NAT-T: {f:?}"
        );
        let nat = f.nat_port().unwrap();
        assert!(NAT_PORTS.contains(&nat), "untranslated port: {f:?}");
    }
    let ike_4500: Vec<&Frame> = frames
        .iter()
        .filter(|f| f.b_port() == Some(4500) && f.payload.starts_with(&[0; 4]))
        .collect();
    assert!(ike_4500.len() >= 2, "IKE never moved to 4500: {frames:?}");
    // B's ESP goes to the NAT's mapping of A's port 4500, the one IKE
    // came through.
    let mapped: Vec<u16> = ike_4500.iter().filter_map(|f| f.nat_port()).collect();
    for f in frames.iter().filter(|f| f.src == B && f.is_esp_in_udp()) {
        assert!(
            mapped.contains(&f.nat_port().unwrap()),
            "ESP not to A's mapping {mapped:?}: {f:?}"
        );
    }
    let esp = frames.iter().filter(|f| f.is_esp_in_udp()).count();
    let keepalives = frames.iter().filter(|f| f.is_keepalive_from_a()).count();
    (esp, keepalives)
}

fn ping(lab: &Lab, from: &str, to: &str, count: &str) -> bool {
    lab.try_exec(from, &["ping", "-c", count, "-i", "0.2", "-W", "1", to])
        .status
        .success()
}

/// Stops the gateways; what they and charon logged.
fn logs(lab: &mut Lab, gateways: &[usize], charon: Option<&Path>) -> String {
    let mut logs = String::new();
    for gw in gateways {
        let (_, out, log) = lab.terminate(*gw);
        logs += &format!("bitsgw: {out}{log}\n");
    }
    if let Some(dir) = charon {
        logs += &std::fs::read_to_string(dir.join("charon.log")).unwrap_or_default();
    }
    logs
}

/// Waits (15 s at most) until hA reaches hB; panics with the logs else.
fn wait_for_tunnel(lab: &mut Lab, gateways: &[usize], charon: Option<&Path>) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !ping(lab, "hA", "198.51.100.20", "1") {
        if Instant::now() >= deadline {
            panic!("no ping through the NAT\n{}", logs(lab, gateways, charon));
        }
    }
}

/// bitsgw's IKE SA and CHILD_SA as `show ike` lists them: NAT detected
/// on the expected side, the CHILD_SA UDP-encapsulated from 4500 to the
/// peer's port as seen (one `peer_port` accepts).
fn check_encapsulated(lab: &Lab, side: &Side, peer_port: impl Fn(u16) -> bool) {
    let ike = show(&socket(lab, side.name), "ike");
    let peer = &ike["peers"][0];
    let nat = if side.name == "a" {
        "nat_local"
    } else {
        "nat_remote"
    };
    assert_eq!(peer["ike_sas"][0][nat], true, "{ike}");
    let child = &peer["child_sas"][0];
    assert_eq!(child["udp_encapsulation"], true, "{ike}");
    assert_eq!(child["udp_ports"][0], 4500, "{ike}");
    let port = u16::try_from(child["udp_ports"][1].as_u64().unwrap()).unwrap();
    assert!(peer_port(port), "{ike}");
    let sock = socket(lab, side.name);
    let text = bitsgw(&["show", "ike", "--socket", sock.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains(", NAT,"), "{text}");
    assert!(
        text.contains(&format!("UDP-encapsulated 4500 -> {port}")),
        "{text}"
    );
}

/// Pings both ways and a short iperf3 flow from A to B.
fn traffic_crosses(lab: &mut Lab) {
    assert!(ping(lab, "hA", "198.51.100.20", "5"), "pings from A lost");
    assert!(ping(lab, "hB", "192.0.2.10", "5"), "pings from B lost");
    let report = common::iperf3(lab, "hA", "hB", "198.51.100.20", "1");
    let bytes = report["end"]["sum_received"]["bytes"].as_f64().unwrap();
    assert!(bytes > 0.0, "{report}");
}

fn needs(tag: &str, charon: bool) -> bool {
    if !common::is_root() {
        eprintln!("skipped: needs root");
        return false;
    }
    if charon && !Path::new(CHARON).exists() {
        eprintln!("SKIPPED {tag}: strongSwan's charon is not installed at {CHARON} (scripts/setup-test-deps.sh installs it)");
        return false;
    }
    true
}

#[test]
fn bitsgw_behind_a_nat_initiates_with_strongswan() {
    if !needs("nb", true) {
        return;
    }
    let mut lab = Lab::new("nb", &["hA", "gA", "r", "gB", "hB"]);
    build(&lab, Gw::Bitsgw, Gw::Charon);
    let swan = lab.dir.join("swan");
    start_charon(&mut lab, "gB", &swan, &charon_conf(&SIDE_B, false));
    let wire = Wire::start(&mut lab);
    let gw = start_bitsgw(&mut lab, &SIDE_A, true, &json!({"nat_keepalive_secs": 1}));
    wait_for_tunnel(&mut lab, &[gw], Some(&swan));
    traffic_crosses(&mut lab);
    check_encapsulated(&lab, &SIDE_A, |p| p == 4500);
    // Keepalives every second from behind the NAT.
    std::thread::sleep(Duration::from_secs(3));
    let frames = wire.stop(&mut lab);
    let (esp, keepalives) = check_wire(&frames);
    assert!(esp >= 20, "only {esp} ESP-in-UDP frames: {frames:?}");
    assert!(keepalives >= 2, "only {keepalives} NAT-keepalives");
    let (ok, out, log) = lab.terminate(gw);
    assert!(ok, "bitsgw failed: {out}{log}");
    assert!(!log.contains(PSK), "PSK in the log");
}

#[test]
fn strongswan_behind_a_nat_initiates_to_bitsgw() {
    if !needs("nc", true) {
        return;
    }
    let mut lab = Lab::new("nc", &["hA", "gA", "r", "gB", "hB"]);
    build(&lab, Gw::Charon, Gw::Bitsgw);
    let wire = Wire::start(&mut lab);
    let gw = start_bitsgw(&mut lab, &SIDE_B, false, &json!({}));
    let swan = lab.dir.join("swan");
    start_charon(&mut lab, "gA", &swan, &charon_conf(&SIDE_A, true));
    swanctl(
        &lab,
        "gA",
        &swan,
        &["--initiate", "--child", "net", "--timeout", "15"],
    );
    wait_for_tunnel(&mut lab, &[gw], Some(&swan));
    traffic_crosses(&mut lab);
    // bitsgw, the responder, encapsulates toward the NAT's mapping of
    // charon's port 4500.
    check_encapsulated(&lab, &SIDE_B, |p| NAT_PORTS.contains(&p));
    let frames = wire.stop(&mut lab);
    let (esp, _) = check_wire(&frames);
    assert!(esp >= 20, "only {esp} ESP-in-UDP frames: {frames:?}");
    let (ok, out, log) = lab.terminate(gw);
    assert!(ok, "bitsgw failed: {out}{log}");
}

/// bitsgw A behind the NAT initiating (its peer fields amended by
/// `extra_a`) and bitsgw B responding in the lab [`build`] made; the
/// tunnel up.
fn two_bitsgw(lab: &mut Lab, extra_a: &Value) -> [usize; 2] {
    let gw_b = start_bitsgw(lab, &SIDE_B, false, &json!({}));
    let gw_a = start_bitsgw(lab, &SIDE_A, true, extra_a);
    wait_for_tunnel(lab, &[gw_a, gw_b], None);
    [gw_a, gw_b]
}

#[test]
fn two_bitsgw_key_their_tunnel_through_a_nat() {
    if !needs("n2", false) {
        return;
    }
    let mut lab = Lab::new("n2", &["hA", "gA", "r", "gB", "hB"]);
    build(&lab, Gw::Bitsgw, Gw::Bitsgw);
    let wire = Wire::start(&mut lab);
    let [gw_a, gw_b] = two_bitsgw(&mut lab, &json!({"nat_keepalive_secs": 1}));
    traffic_crosses(&mut lab);
    check_encapsulated(&lab, &SIDE_A, |p| p == 4500);
    check_encapsulated(&lab, &SIDE_B, |p| NAT_PORTS.contains(&p));
    std::thread::sleep(Duration::from_secs(3));
    let frames = wire.stop(&mut lab);
    let (esp, keepalives) = check_wire(&frames);
    assert!(esp >= 40, "only {esp} ESP-in-UDP frames: {frames:?}");
    assert!(keepalives >= 2, "only {keepalives} NAT-keepalives");
    // B, not behind the NAT, sends none; its stage took A's.
    assert!(!frames.iter().any(|f| f.src == B && f.payload == [0xff]));
    let counters = show(&socket(&lab, "b"), "counters");
    assert!(
        counters["drops"]["nat_keepalive"].as_u64().unwrap() >= 2,
        "{counters}"
    );
    let ike_a = show(&socket(&lab, "a"), "ike");
    let sent = &ike_a["peers"][0]["counters"]["nat_keepalives_sent"];
    assert!(sent.as_u64().unwrap() >= keepalives as u64, "{ike_a}");
    for gw in [gw_a, gw_b] {
        let (ok, out, log) = lab.terminate(gw);
        assert!(ok, "bitsgw failed: {out}{log}");
        assert!(!log.contains(PSK), "PSK in the log");
    }
}

#[test]
fn through_a_nat_rekeys_keep_the_encapsulation() {
    if !needs("nr", false) {
        return;
    }
    let mut lab = Lab::new("nr", &["hA", "gA", "r", "gB", "hB"]);
    build(&lab, Gw::Bitsgw, Gw::Bitsgw);
    // A rekeys its CHILD_SA every 3 s and its IKE SA after 5 s (RFC 7296
    // 2.8).
    let [gw_a, gw_b] = two_bitsgw(
        &mut lab,
        &json!({"child_lifetime_secs": 3, "ike_lifetime_secs": 5}),
    );
    let first = find_sa(&show(&socket(&lab, "b"), "sa"), "b-to-a");
    let out = lab.try_exec(
        "hA",
        &["ping", "-c", "40", "-i", "0.2", "-W", "1", "198.51.100.20"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(" 0% packet loss"), "{text}");
    let now = find_sa(&show(&socket(&lab, "b"), "sa"), "b-to-a");
    assert_ne!(first["spi"], now["spi"], "no rekey: {now}");
    check_encapsulated(&lab, &SIDE_A, |p| p == 4500);
    check_encapsulated(&lab, &SIDE_B, |p| NAT_PORTS.contains(&p));
    let (_, _, log_a) = lab.terminate(gw_a);
    let (_, _, log_b) = lab.terminate(gw_b);
    assert!(log_a.matches("rekeys=Some").count() >= 2, "{log_a}");
    assert!(log_a.contains("IKE SA rekeyed"), "{log_a}");
    assert!(!log_b.contains("SA not installed"), "{log_b}");
}

#[test]
fn the_public_side_follows_the_nats_new_mapping() {
    if !needs("nm", false) {
        return;
    }
    let mut lab = Lab::new("nm", &["hA", "gA", "r", "gB", "hB"]);
    build(&lab, Gw::Bitsgw, Gw::Bitsgw);
    // A checks liveness every 2 s; its CHILD_SA is not rekeyed meanwhile.
    let [gw_a, gw_b] = two_bitsgw(&mut lab, &json!({"liveness_secs": 2}));
    assert!(ping(&lab, "hB", "192.0.2.10", "3"), "pings from B lost");
    let spi = find_sa(&show(&socket(&lab, "b"), "sa"), "b-to-a")["spi"].clone();
    // The NAT forgets its mappings: A's next IKE message (a liveness
    // check) comes through a new one, B follows it (RFC 7296 2.23) and its
    // ESP on the same SA goes there.
    nat(&lab, &REMAPPED);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ike = show(&socket(&lab, "b"), "ike");
        let port = ike["peers"][0]["child_sas"][0]["udp_ports"][1]
            .as_u64()
            .unwrap_or(0);
        if REMAPPED.contains(&u16::try_from(port).unwrap()) {
            break;
        }
        if Instant::now() >= deadline {
            panic!(
                "B did not follow: {ike}\n{}",
                logs(&mut lab, &[gw_a, gw_b], None)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = lab.try_exec(
        "hB",
        &["ping", "-c", "5", "-i", "0.2", "-W", "1", "192.0.2.10"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(" 0% packet loss"), "{text}");
    assert!(ping(&lab, "hA", "198.51.100.20", "3"), "pings from A lost");
    let now = find_sa(&show(&socket(&lab, "b"), "sa"), "b-to-a");
    assert_eq!(now["spi"], spi, "the SA was replaced, not moved: {now}");
    let (_, _, log_b) = lab.terminate(gw_b);
    lab.terminate(gw_a);
    assert!(log_b.contains("the peer moved"), "{log_b}");
}
