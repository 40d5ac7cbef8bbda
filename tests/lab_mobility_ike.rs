//! IKEv2 in the mobility roles, as running appliances on TUN ports: the
//! mobile node (`mn`) keys the payload tunnel SA pair of the seed's
//! host-wide policy with its home agent (`ha`) by IKEv2 from its care-of
//! address (`"local": "care-of"`, RFC 4877 4.4), the Binding Update and
//! Acknowledgement SAs still keyed by hand. It registers over IPv6, moves
//! make-before-break to another IPv6 care-of address, to a public IPv4
//! one (RFC 5555) and to one behind a NAT (IKE on UDP 4500, the payload's
//! ESP inside the mobility tunnel's UDP), and its IKE follows each time:
//! a new IKE SA from the
//! new care-of address, its CHILD_SA installed before the old IKE SA
//! goes, while a correspondent on the home network pings the mobile host
//! without losing a packet. The home agent takes the node's IKE from where
//! its registrations (authentic Binding Updates) say it is. `show ike` on both appliances shows the IKE SA
//! between the home agent and the current care-of address. With the K bit
//! on both sides the IKE SA moves instead, its SPIs unchanged; CHILD_SA
//! rekeys during the moves lose nothing; the seed's Req #3 and #4 hold
//! with the BU and BA SAs keyed by IKE; a home agent with two `"remote":
//! "any"` peers refuses a node asking for another's home address.
//!
//! One namespace holds both appliances and routes between their network
//! ports (the Internet); the mobile host and the correspondent have one
//! namespace each. Needs root (CI runs as root) and iproute2. Everything
//! it creates it removes, also when it fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{bitsgw, Lab};
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const HOA: &str = "2001:db8:1::100";
const HA: &str = "2001:db8:1::1";
const HA4: &str = "203.0.113.1";
const COA_A: &str = "2001:db8:2::100";
const COA_B: &str = "2001:db8:3::100";
const COA_4: &str = "203.0.113.70";
/// Behind the NAT, and the NAT's public address.
const COA_NAT: &str = "198.51.100.20";
const NAT_PUBLIC: &str = "203.0.113.130";
/// The home agent's peer's configured remote address, which the mobile
/// node never has: the home agent takes IKE from where the first
/// registration says the node is.
const NOWHERE: &str = "2001:db8:9::1";
/// The second mobile node's home address and identity.
const HOA_2: &str = "2001:db8:1::200";
const MN2_ID: &str = "fqdn:mn2.example";
/// Where, beside the Internet, a second node's IKE comes from.
const MN2_COA: &str = "2001:db8:5::1";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The shipped host-wide policy of `role` with the payload tunnel SA pair
/// (`sa7`, `sa8`) keyed by IKE, written into the lab's folder.
fn ike_policy(lab: &Lab, role: &str) -> PathBuf {
    let path = repo().join(format!("policies/dsmip-hostwide-{role}.json"));
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    for sa in v["sad"].as_array_mut().unwrap() {
        if sa["name"] == "sa7" || sa["name"] == "sa8" {
            *sa = json!({
                "name": sa["name"], "direction": sa["direction"], "keyed_by": "ike",
                "mode": "tunnel", "tunnel": sa["tunnel"],
            });
        }
    }
    let out = lab.dir.join(format!("{role}-ike.json"));
    std::fs::write(&out, v.to_string()).unwrap();
    out
}

fn socket(lab: &Lab, role: &str) -> PathBuf {
    lab.dir.join(format!("{role}.sock"))
}

/// An appliance configuration of `role` on TUN ports `<role>h`, `<role>n`.
fn config(lab: &Lab, role: &str, extra: Value) -> PathBuf {
    let mut v = json!({
        "role": role,
        "policy": ike_policy(lab, role),
        "ports": {"host": {"type": "tun", "name": format!("{role}h")},
                  "network": {"type": "tun", "name": format!("{role}n")}},
        "workers": 1,
        "control_socket": socket(lab, role),
        "state_dir": format!("{role}-state"),
    });
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    let path = lab.dir.join(format!("{role}.json"));
    std::fs::write(&path, v.to_string()).unwrap();
    path
}

/// The peer fields both sides share.
fn peer(name: &str, local: &str, remote: &str, ids: (&str, &str), start: &str) -> Value {
    let (outbound, inbound) = if name == "ha" {
        ("sa7", "sa8")
    } else {
        ("sa8", "sa7")
    };
    json!({
        "name": name, "local": local, "remote": remote,
        "local_id": ids.0, "remote_id": ids.1, "psk_file": "k.psk",
        "ike_proposals": ["aes128gcm16-prfsha256-ecp256"], "esp_proposals": ["aes128gcm16"],
        "start": start, "children": [{"outbound": outbound, "inbound": inbound}],
    })
}

fn json_of(socket: &Path, what: &str) -> Value {
    let s = socket.to_str().unwrap();
    let o = bitsgw(&["show", what, "--json", "--socket", s]);
    assert!(
        o.status.success(),
        "show {what}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Waits (at most 20 s) until `f` holds for `show WHAT --json`.
fn until(socket: &Path, what: &str, why: &str, f: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = json_of(socket, what);
        if f(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{why}: never happened: {v:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether `show ike` has exactly one IKE SA, between `local` and
/// `remote` (its addresses shown with their ports), and one CHILD_SA.
fn one_ike_sa(v: &Value, local: &str, remote: &str) -> bool {
    let p = &v["peers"][0];
    let sas = p["ike_sas"].as_array().map_or(&[][..], Vec::as_slice);
    let ip = |a: &Value| {
        a.as_str()
            .and_then(|s| s.parse::<std::net::SocketAddr>().ok())
            .map(|s| s.ip().to_string())
    };
    p["local"] == local
        && p["remote"] == remote
        && sas.len() == 1
        && ip(&sas[0]["local"]).as_deref() == Some(local)
        && ip(&sas[0]["remote"]).as_deref() == Some(remote)
        && p["child_sas"].as_array().map_or(0, Vec::len) == 1
}

fn ctl(socket: &Path, args: &[&str]) {
    let mut full = args.to_vec();
    full.extend_from_slice(&["--socket", socket.to_str().unwrap()]);
    let o = bitsgw(&full);
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Starts `count` pings from the correspondent to the mobile host, one
/// every 50 ms.
fn start_pings(lab: &mut Lab, count: u32) -> usize {
    let count = count.to_string();
    lab.spawn(
        "home",
        &[
            "ping", "-6", "-n", "-i", "0.05", "-c", &count, "-W", "2", HOA,
        ],
    )
}

/// Waits for the pings of `index`; (sent, received) and ping's output.
fn finish_pings(lab: &mut Lab, index: usize) -> (u64, u64, String) {
    use std::io::Read;
    let deadline = Instant::now() + Duration::from_secs(60);
    let child = &mut lab.children[index];
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "ping did not finish");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let line = out
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("no summary: {out}"));
    let n: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|s| s.parse().ok())
        .take(2)
        .collect();
    (n[0], n[1], out)
}

/// Moves the mobile node to `care_of` (make-before-break) while 120 pings
/// go to the mobile host; waits until it is registered there and its IKE
/// SA runs from there alone to `ha_local`, the home agent's seen from
/// `ha_sees` (the care-of address, or the NAT's in front of it); every
/// ping answered.
fn move_without_loss(lab: &mut Lab, care_of: &str, ha_local: &str, ha_sees: &str) {
    let (mn, ha) = (socket(lab, "mn"), socket(lab, "ha"));
    let pings = start_pings(lab, 120);
    std::thread::sleep(Duration::from_millis(1000));
    ctl(&mn, &["ctl", "move", care_of]);
    until(&mn, "bindings", "registration", |v| {
        v["registered"] == care_of && v["registering"].is_null()
    });
    until(
        &mn,
        "ike",
        "the mobile node's IKE SA from the care-of address",
        |v| one_ike_sa(v, care_of, ha_local),
    );
    until(
        &ha,
        "ike",
        "the home agent's IKE SA to the care-of address",
        |v| one_ike_sa(v, ha_local, ha_sees),
    );
    let (sent, received, out) = finish_pings(lab, pings);
    assert_eq!(
        (sent, received),
        (120, 120),
        "pings lost moving to {care_of}: {out}"
    );
}

/// The mobile host, the correspondent, and the two appliances between
/// them in a namespace that routes; `key_management_mobility` on both
/// appliances or on neither. The lab and the appliances' indexes (mobile
/// node, home agent).
/// `peer_fields` go into both appliances' peers.
fn lab_with_appliances(
    tag: &str,
    key_management_mobility: bool,
    peer_fields: &Value,
) -> (Lab, usize, usize) {
    lab_edited(tag, key_management_mobility, peer_fields, |_, _, _| {})
}

/// [`lab_with_appliances`], `edit` given the lab and the home agent's and
/// the mobile node's configurations before they start.
fn lab_edited(
    tag: &str,
    key_management_mobility: bool,
    peer_fields: &Value,
    edit: impl FnOnce(&Lab, &Path, &Path),
) -> (Lab, usize, usize) {
    let mut lab = Lab::new(tag, &["n", "host", "home", "nat"]);
    let psk = lab.dir.join("k.psk");
    std::fs::write(&psk, "a sixteen-octet or longer key\n").unwrap();
    std::fs::set_permissions(&psk, std::fs::Permissions::from_mode(0o600)).unwrap();
    let ids = ("fqdn:ha.example", "fqdn:mn.example");
    let with_fields = |mut p: Value| {
        for (k, x) in peer_fields.as_object().unwrap() {
            p[k] = x.clone();
        }
        p
    };
    let ha_cfg = config(
        &lab,
        "ha",
        json!({
            "mobility": {"address": "home_agent_1", "address_v4": HA4,
                "home_prefixes": ["2001:db8:1::/64"],
                "nodes": [{"home": "home_address_1", "home_v4": "home_address_v4_1"}],
                "key_management_mobility": key_management_mobility},
            "peers": [with_fields(peer("mn", "home_agent_1", NOWHERE, ids, "respond"))],
        }),
    );
    let mn_cfg = config(
        &lab,
        "mn",
        json!({
            "addresses": {"network": [format!("{COA_A}/64"), format!("{COA_B}/64"), format!("{COA_4}/26"), format!("{COA_NAT}/24")]},
            "mobility": {"home_address": "home_address_1", "home_agent": "home_agent_1",
                "home_agent_v4": HA4, "home_v4": "0.0.0.0",
                "key_management_mobility": key_management_mobility},
            "peers": [with_fields(peer("ha", "care-of", "home_agent_1", (ids.1, ids.0), "initiate"))],
        }),
    );
    edit(&lab, &ha_cfg, &mn_cfg);
    // The hosts: the mobile host on its piece of the home prefix, the
    // correspondent on the home network.
    lab.link("host", "eth0", "n", "mn-host");
    lab.link("home", "eth0", "n", "ha-home");
    for (ns, addr, via) in [
        ("host", "2001:db8:1::100/112", "2001:db8:1::fe"),
        ("home", "2001:db8:1::1:77/112", "2001:db8:1::1:1"),
    ] {
        lab.exec(ns, &["sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0"]);
        lab.exec(ns, &["sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0"]);
        lab.exec(ns, &["ip", "link", "set", "lo", "up"]);
        lab.exec(ns, &["ip", "link", "set", "eth0", "up"]);
        lab.exec(ns, &["ip", "addr", "add", addr, "dev", "eth0", "nodad"]);
        lab.exec(ns, &["ip", "-6", "route", "add", "default", "via", via]);
    }
    for s in [
        "net.ipv6.conf.all.forwarding=1",
        "net.ipv4.ip_forward=1",
        "net.ipv6.conf.all.accept_dad=0",
        "net.ipv6.conf.default.accept_dad=0",
        "net.ipv4.conf.all.rp_filter=0",
        "net.ipv4.conf.default.rp_filter=0",
    ] {
        lab.exec("n", &["sysctl", "-qw", s]);
    }
    lab.exec("n", &["ip", "link", "set", "lo", "up"]);
    for (dev, addr) in [
        ("mn-host", "2001:db8:1::fe/112"),
        ("ha-home", "2001:db8:1::1:1/112"),
    ] {
        lab.exec("n", &["ip", "link", "set", dev, "up"]);
        lab.exec("n", &["ip", "addr", "add", addr, "dev", dev, "nodad"]);
    }
    let bin = env!("CARGO_BIN_EXE_bitsgw");
    let ha = lab.spawn("n", &[bin, "run", ha_cfg.to_str().unwrap()]);
    lab.wait_ready(ha, &socket(&lab, "ha"));
    let mn = lab.spawn("n", &[bin, "run", mn_cfg.to_str().unwrap()]);
    lab.wait_ready(mn, &socket(&lab, "mn"));
    for dev in ["hah", "han", "mnh", "mnn"] {
        lab.exec("n", &["ip", "link", "set", dev, "up"]);
    }
    // The Internet between the network ports; the hosts' traffic into
    // the host ports.
    run_each(
        &lab,
        "n",
        "ip",
        &[
            "-6 route add 2001:db8:1::1/128 dev han",
            "route add 203.0.113.1/32 dev han",
            "-6 route add 2001:db8:2::100/128 dev mnn",
            "-6 route add 2001:db8:3::100/128 dev mnn",
            "route add 203.0.113.70/32 dev mnn",
            "-6 rule add iif mn-host from 2001:db8:1::100 lookup 100",
            "-6 route add default dev mnh table 100",
            "-6 rule add iif ha-home to 2001:db8:1::100 lookup 200",
            "-6 route add default dev hah table 200",
        ],
    );
    nat(&lab);
    (lab, mn, ha)
}

/// The home agent's policy and configuration with a second mobile node:
/// its home address `HOA_2` with IKE-keyed payload SAs of its own
/// (`sa7b`, `sa8b`), its peer `mn2` (`fqdn:mn2.example`) and the first
/// node's `mn` both `"remote": "any"`, chosen by the identity IKE_AUTH
/// proves.
fn with_second_node(lab: &Lab, ha_cfg: &Path) {
    let policy = lab.dir.join("ha-ike.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&policy).unwrap()).unwrap();
    v["addresses"]["home_address_2"] = json!(HOA_2);
    for (dir, sa) in [("outbound", "sa8b"), ("inbound", "sa7b")] {
        let entries = v["spd"][dir].as_array_mut().unwrap();
        let at = entries.len() - 1;
        entries.insert(
            at,
            json!({"name": format!("payload2-{dir}"), "remote": "home_address_2", "action": "protect", "sa": sa}),
        );
        v["sad"].as_array_mut().unwrap().push(json!({
            "name": sa, "direction": dir, "keyed_by": "ike", "mode": "tunnel",
            "tunnel": {"local": "home_agent_1", "remote": "home_address_2"},
        }));
    }
    std::fs::write(&policy, v.to_string()).unwrap();
    let mut c: Value = serde_json::from_str(&std::fs::read_to_string(ha_cfg).unwrap()).unwrap();
    c["peers"][0]["remote"] = json!("any");
    let mut second = c["peers"][0].clone();
    second["name"] = json!("mn2");
    second["remote_id"] = json!(MN2_ID);
    second["children"] = json!([{"outbound": "sa8b", "inbound": "sa7b"}]);
    c["peers"].as_array_mut().unwrap().push(second);
    std::fs::write(ha_cfg, c.to_string()).unwrap();
}

/// A NAT beside the Internet: what the mobile node sends from `COA_NAT`
/// goes through namespace `nat`, which masquerades it to `NAT_PUBLIC`,
/// and comes back to be routed on; the answers take the way back.
fn nat(lab: &Lab) {
    lab.link("n", "to-nat", "nat", "nat-in");
    lab.link("nat", "nat-out", "n", "from-nat");
    for (ns, dev, addr) in [
        ("n", "to-nat", "198.51.100.1/30"),
        ("nat", "nat-in", "198.51.100.2/30"),
        ("nat", "nat-out", "203.0.113.130/30"),
        ("n", "from-nat", "203.0.113.129/30"),
    ] {
        lab.exec(ns, &["ip", "addr", "add", addr, "dev", dev]);
        lab.exec(ns, &["ip", "link", "set", dev, "up"]);
    }
    for s in [
        "net.ipv4.ip_forward=1",
        "net.ipv4.conf.all.rp_filter=0",
        "net.ipv4.conf.default.rp_filter=0",
    ] {
        lab.exec("nat", &["sysctl", "-qw", s]);
    }
    lab.exec("nat", &["ip", "link", "set", "lo", "up"]);
    run_each(
        lab,
        "nat",
        "ip",
        &[
            "route add default via 203.0.113.129",
            "route add 198.51.100.20/32 via 198.51.100.1",
        ],
    );
    run_each(
        lab,
        "nat",
        "nft",
        &[
            "add table ip lab",
            "add chain ip lab post { type nat hook postrouting priority 100 ; }",
            "add rule ip lab post ip saddr 198.51.100.0/24 oifname nat-out masquerade",
        ],
    );
    run_each(
        lab,
        "n",
        "ip",
        &[
            "route add 198.51.100.20/32 dev mnn",
            "rule add iif mnn from 198.51.100.20 lookup 300",
            "route add default via 198.51.100.2 dev to-nat table 300",
        ],
    );
}

/// Runs `command` with each of `lines` (its arguments, split at spaces)
/// in namespace `ns`.
fn run_each(lab: &Lab, ns: &str, command: &str, lines: &[&str]) {
    for line in lines {
        let mut args = vec![command];
        args.extend(line.split(' '));
        lab.exec(ns, &args);
    }
}

/// Registers at `COA_A`: the IKE SA from there on both sides, pings
/// through the IKE-keyed payload SAs.
fn register(lab: &mut Lab) {
    let (mn_sock, ha_sock) = (socket(lab, "mn"), socket(lab, "ha"));
    // At home the care-of peer waits for a care-of address.
    let v = json_of(&mn_sock, "ike");
    assert!(
        v["peers"][0]["ike_sas"].as_array().unwrap().is_empty(),
        "{v:#}"
    );
    ctl(&mn_sock, &["ctl", "move", COA_A]);
    until(&mn_sock, "bindings", "registration", |v| {
        v["registered"] == COA_A
    });
    until(&mn_sock, "ike", "the mobile node's IKE SA", |v| {
        one_ike_sa(v, COA_A, HA)
    });
    until(&ha_sock, "ike", "the home agent's IKE SA", |v| {
        one_ike_sa(v, HA, COA_A)
    });
    let first = start_pings(lab, 20);
    let (sent, received, out) = finish_pings(lab, first);
    assert_eq!((sent, received), (20, 20), "{out}");
}

#[test]
fn ike_follows_the_mobile_node_make_before_break_without_loss() {
    let (mut lab, mn, ha) = lab_with_appliances("mi", false, &json!({}));
    let (mn_sock, ha_sock) = (socket(&lab, "mn"), socket(&lab, "ha"));
    register(&mut lab);
    // IKE could not run from a care-of address the appliance does not have.
    let o = bitsgw(&[
        "ctl",
        "move",
        "2001:db8:9::100",
        "--socket",
        mn_sock.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("addresses.network"),
        "{err}"
    );
    // Make-before-break to another IPv6 care-of address, then to a public
    // IPv4 one: IKE follows, not a ping lost.
    move_without_loss(&mut lab, COA_B, HA, COA_B);
    move_without_loss(&mut lab, COA_4, HA4, COA_4);
    let v = json_of(&mn_sock, "ike");
    assert!(one_ike_sa(&v, COA_4, HA4), "{v:#}");
    let v = json_of(&ha_sock, "ike");
    assert!(one_ike_sa(&v, HA4, COA_4), "{v:#}");
    // Behind a NAT (RFC 5555 4.1): IKE moves to UDP 4500, the payload's
    // ESP crosses the NAT inside the mobility tunnel's UDP.
    move_without_loss(&mut lab, COA_NAT, HA4, NAT_PUBLIC);
    let v = json_of(&mn_sock, "ike");
    let sa = &v["peers"][0]["ike_sas"][0];
    assert_eq!(sa["nat_local"], true, "{v:#}");
    let v = json_of(&mn_sock, "bindings");
    assert_eq!(v["nat"], true, "{v:#}");
    let (_, _, err) = lab.terminate(mn);
    assert!(!err.contains("panicked"), "{err}");
    let (_, _, err) = lab.terminate(ha);
    assert!(!err.contains("panicked"), "{err}");
}

/// The only IKE SA's SPIs in `show ike` (initiator's, responder's).
fn ike_spis(v: &Value) -> (String, String) {
    let sa = &v["peers"][0]["ike_sas"][0];
    let spi = |k: &str| {
        sa[k]
            .as_str()
            .unwrap_or_else(|| panic!("{v:#}"))
            .to_string()
    };
    (spi("spi_i"), spi("spi_r"))
}

/// The inbound SPIs of the CHILD_SAs in `show ike`.
fn child_spis(v: &Value) -> Vec<String> {
    v["peers"][0]["child_sas"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["inbound_spi"].as_str().map(str::to_string))
        .collect()
}

/// `show ike`'s count of IKE datagrams the peer received.
fn ike_received(v: &Value) -> u64 {
    v["peers"][0]["counters"]["datagrams_received"]
        .as_u64()
        .unwrap_or_else(|| panic!("{v:#}"))
}

/// RFC 6275 6.1.7, 6.1.8, 10.3.1, 11.7.3 with both appliances' key
/// management mobile: once the IKE SA exists the mobile node's Binding
/// Updates carry K, the home agent's BA echoes it, and both ends move the
/// IKE SA to the new care-of address with no IKE exchange (RFC 4877
/// 4.4): the same SPIs before and after, its addresses in `show ike` the
/// new ones on both sides, not a ping lost; over the moved IKE SA the
/// liveness checks (every second, two tries) keep it up and the CHILD_SA
/// is rekeyed. To another address family or behind a NAT it is
/// established again instead, as both ends decide alike.
#[test]
fn with_the_k_bit_both_ends_move_the_ike_sa_without_an_exchange() {
    let fields = json!({"liveness_secs": 1, "retransmit_tries": 2, "child_lifetime_secs": 6});
    let (mut lab, mn, ha) = lab_with_appliances("mk", true, &fields);
    let (mn_sock, ha_sock) = (socket(&lab, "mn"), socket(&lab, "ha"));
    register(&mut lab);
    let before = (
        ike_spis(&json_of(&mn_sock, "ike")),
        ike_spis(&json_of(&ha_sock, "ike")),
    );
    assert_eq!(before.0, before.1, "one IKE SA, seen from both ends");
    move_without_loss(&mut lab, COA_B, HA, COA_B);
    let (mn_ike, ha_ike) = (json_of(&mn_sock, "ike"), json_of(&ha_sock, "ike"));
    assert_eq!(ike_spis(&mn_ike), before.0, "no new IKE SA: {mn_ike:#}");
    assert_eq!(ike_spis(&ha_ike), before.1, "no new IKE SA: {ha_ike:#}");
    // Still up over the new addresses: liveness answered, the CHILD_SA
    // rekeyed between them, the IKE SA the same.
    let (received, children) = (ike_received(&ha_ike), child_spis(&mn_ike));
    let v = until(&mn_sock, "ike", "a CHILD_SA rekey after the move", |v| {
        let now = child_spis(v);
        one_ike_sa(v, COA_B, HA) && !now.is_empty() && now.iter().all(|s| !children.contains(s))
    });
    assert_eq!(ike_spis(&v), before.0, "{v:#}");
    let v = until(
        &ha_sock,
        "ike",
        "liveness checks to the moved IKE SA",
        |v| ike_received(v) >= received + 3 && one_ike_sa(v, HA, COA_B),
    );
    assert_eq!(ike_spis(&v), before.1, "{v:#}");
    let pings = start_pings(&mut lab, 20);
    let (sent, answered, out) = finish_pings(&mut lab, pings);
    assert_eq!((sent, answered), (20, 20), "{out}");
    // To IPv4 (RFC 5555) the IKE SA does not move across address
    // families, and behind a NAT (the BA's NAT Detection option) it can
    // not: both ends agree that the mobile node establishes it again,
    // make-before-break.
    let mut spis = before.0;
    for (care_of, ha_sees) in [(COA_4, COA_4), (COA_NAT, NAT_PUBLIC)] {
        move_without_loss(&mut lab, care_of, HA4, ha_sees);
        let now = ike_spis(&json_of(&mn_sock, "ike"));
        assert_ne!(now, spis, "a new IKE SA from {care_of}");
        assert_eq!(now, ike_spis(&json_of(&ha_sock, "ike")));
        spis = now;
    }
    let (_, _, mn_log) = lab.terminate(mn);
    let (_, _, ha_log) = lab.terminate(ha);
    let moved = |log: &str| {
        log.lines().any(|l| {
            l.contains("registration: IKE SA")
                && l.contains("Move {")
                && l.contains(&format!("care_of: {COA_B}"))
        })
    };
    assert!(moved(&mn_log), "the mobile node's K: {mn_log}");
    assert!(moved(&ha_log), "the home agent's K: {ha_log}");
    for log in [&mn_log, &ha_log] {
        assert!(log.contains(&format!("follows {COA_B}")), "{log}");
        assert!(!log.contains("panicked"), "{log}");
    }
    for (log, role) in [(&mn_log, "re-established"), (&ha_log, "expected")] {
        let lines = |what: &str| log.lines().filter(|l| l.contains(what)).count();
        assert_eq!(lines(&format!("is {role} from {COA_B}")), 0, "{log}");
        assert!(
            lines(&format!("is {role} (another address family) from {COA_4}")) > 0,
            "{log}"
        );
    }
    assert!(
        mn_log.contains(&format!("is re-established from {COA_NAT}")),
        "{mn_log}"
    );
    assert!(
        ha_log.contains(&format!("is expected from {NAT_PUBLIC}")),
        "{ha_log}"
    );
}

/// A CHILD_SA rekeyed while the node moves: with a three-second CHILD_SA
/// lifetime the payload SAs are rekeyed (RFC 7296 2.8) again and again
/// while the mobile node moves make-before-break between its IPv6
/// care-of addresses and establishes its IKE SA again from each, the
/// correspondent's pings going on; not one is lost, the rekeys happen
/// between the moves (new SPIs replacing the old ones on the same IKE
/// SA) and the binding stays.
#[test]
fn a_child_sa_rekeyed_during_make_before_break_moves_loses_nothing() {
    let (mut lab, mn, ha) = lab_with_appliances("mr", false, &json!({"child_lifetime_secs": 3}));
    let (mn_sock, ha_sock) = (socket(&lab, "mn"), socket(&lab, "ha"));
    register(&mut lab);
    for care_of in [COA_B, COA_A, COA_B] {
        move_without_loss(&mut lab, care_of, HA, care_of);
    }
    // Rekeyed on the IKE SA from the last care-of address too.
    let spis = ike_spis(&json_of(&mn_sock, "ike"));
    let children = child_spis(&json_of(&mn_sock, "ike"));
    let v = until(&mn_sock, "ike", "a rekey after the moves", |v| {
        let now = child_spis(v);
        one_ike_sa(v, COA_B, HA) && !now.is_empty() && now.iter().all(|s| !children.contains(s))
    });
    assert_eq!(ike_spis(&v), spis, "{v:#}");
    let v = json_of(&mn_sock, "bindings");
    assert_eq!(v["registered"], COA_B, "{v:#}");
    // The home agent's side: one IKE SA from there (with the CHILD_SAs
    // rekeyed every three seconds, polled until no rekey is half done).
    until(&ha_sock, "ike", "the home agent's one IKE SA", |v| {
        one_ike_sa(v, HA, COA_B)
    });
    let pings = start_pings(&mut lab, 20);
    let (sent, answered, out) = finish_pings(&mut lab, pings);
    assert_eq!((sent, answered), (20, 20), "{out}");
    let (_, _, mn_log) = lab.terminate(mn);
    let (_, _, ha_log) = lab.terminate(ha);
    for log in [&mn_log, &ha_log] {
        assert!(!log.contains("panicked"), "{log}");
    }
    // Between the moves (each establishes the IKE SA again from its
    // care-of address), CHILD_SAs rekeyed; the registration's IKE SA
    // lives too short for its CHILD_SA's first rekey.
    let lines: Vec<&str> = mn_log.lines().collect();
    let moves: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].contains("peer \"ha\" re-established from"))
        .collect();
    assert_eq!(moves.len(), 4, "registration and three moves: {mn_log}");
    for w in moves[1..].windows(2) {
        let rekeys = lines[w[0]..w[1]]
            .iter()
            .filter(|l| l.contains("CHILD_SA established") && l.contains("rekeys=Some"))
            .count();
        assert!(rekeys >= 1, "no rekey between two moves: {mn_log}");
    }
}

/// `ike-udp-peer` (crates/ike's IKE driver), built when a narrow test run
/// did not build it.
fn ike_udp_peer() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_bitsgw")).with_file_name("ike-udp-peer");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let o = std::process::Command::new(cargo)
            .args(["build", "-p", "bitsgw-ike", "--bin", "ike-udp-peer"])
            .current_dir(repo())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    bin
}

/// RFC 4877 4.4, RFC 7296 2.9: the home agent authorizes each mobile
/// node for its own home address. It has two `"remote": "any"` peers, the
/// first node's and a second's (another identity, another home address
/// in its child's SPD entries); the second, authenticated with its own
/// identity, asks for the first node's home address: its CHILD_SA is
/// refused with TS_UNACCEPTABLE, none of its SAs is keyed, and the first
/// node's IKE SA, CHILD_SA and traffic go on untouched.
#[test]
fn the_home_agent_refuses_a_node_asking_for_another_nodes_home_address() {
    let (mut lab, mn, ha) = lab_edited("ma", false, &json!({}), |lab, ha, _| {
        with_second_node(lab, ha);
    });
    let (mn_sock, ha_sock) = (socket(&lab, "mn"), socket(&lab, "ha"));
    ctl(&mn_sock, &["ctl", "move", COA_A]);
    until(&mn_sock, "ike", "the mobile node's IKE SA", |v| {
        one_ike_sa(v, COA_A, HA)
    });
    let first = until(&ha_sock, "ike", "the first node's IKE SA", |v| {
        let p = &v["peers"][0];
        p["ike_sas"].as_array().map_or(0, Vec::len) == 1
            && p["child_sas"].as_array().map_or(0, Vec::len) == 1
    });
    let pings = start_pings(&mut lab, 20);
    let (sent, answered, out) = finish_pings(&mut lab, pings);
    assert_eq!((sent, answered), (20, 20), "{out}");
    // The second node, beside the Internet, claims the first's home
    // address in its traffic selectors.
    lab.exec(
        "n",
        &[
            "ip",
            "addr",
            "add",
            &format!("{MN2_COA}/128"),
            "dev",
            "lo",
            "nodad",
        ],
    );
    let psk = lab.dir.join("k.psk");
    let peer = ike_udp_peer();
    let impostor = lab.spawn(
        "n",
        &[
            peer.to_str().unwrap(),
            "--role",
            "initiator",
            "--local",
            &format!("[{MN2_COA}]:500"),
            "--remote",
            &format!("[{HA}]:500"),
            "--local-id",
            MN2_ID,
            "--remote-id",
            "fqdn:ha.example",
            "--psk-file",
            psk.to_str().unwrap(),
            "--ike",
            "aes128gcm16-prfsha256-ecp256",
            "--esp",
            "aes128gcm16",
            "--local-ts",
            &format!("{HOA}/128"),
            "--remote-ts",
            "::/0",
            "--mode",
            "tunnel",
            "--exit-after",
            "4",
        ],
    );
    until(&ha_sock, "ike", "the second node's IKE SA", |v| {
        v["peers"][1]["ike_sas"].as_array().map_or(0, Vec::len) == 1
    });
    // Its answer on the way: what it printed of it.
    std::thread::sleep(Duration::from_millis(500));
    let (_, events, _) = lab.terminate(impostor);
    assert!(
        events.lines().any(|l| l.starts_with("IKE_SA_UP")),
        "authenticated as itself: {events}"
    );
    assert!(
        events
            .lines()
            .any(|l| l.starts_with("CHILD_SA_FAILED") && l.contains("TsUnacceptable")),
        "{events}"
    );
    assert!(!events.contains("CHILD_SA_UP"), "{events}");
    let v = json_of(&ha_sock, "ike");
    assert_eq!(
        v["peers"][1]["child_sas"].as_array().map_or(0, Vec::len),
        0,
        "{v:#}"
    );
    let refused = &v["peers"][1]["counters"]["notify_sent"]["TsUnacceptable"];
    assert!(refused.as_u64().unwrap_or(0) >= 1, "{v:#}");
    let sas = json_of(&ha_sock, "sa");
    assert!(
        !sas.as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "sa7b" || s["name"] == "sa8b"),
        "{sas:#}"
    );
    // The first node (the second's INITIAL_CONTACT, RFC 7296 2.4, is
    // about its own identity): the same IKE SA and CHILD_SA, its traffic
    // untouched.
    assert_eq!(child_spis(&v), child_spis(&first), "{v:#}");
    assert_eq!(ike_spis(&v), ike_spis(&first), "{v:#}");
    for name in ["sa7", "sa8"] {
        assert!(
            sas.as_array().unwrap().iter().any(|s| s["name"] == name),
            "{sas:#}"
        );
    }
    let pings = start_pings(&mut lab, 20);
    let (sent, answered, out) = finish_pings(&mut lab, pings);
    assert_eq!((sent, answered), (20, 20), "{out}");
    let (_, _, err) = lab.terminate(mn);
    assert!(!err.contains("panicked"), "{err}");
    let (_, _, err) = lab.terminate(ha);
    assert!(!err.contains("panicked"), "{err}");
}

/// The Binding Update and Acknowledgement SAs (`sa1`, `sa2`, transport
/// mode, MH type selectors) keyed by IKE too, as a second child of each
/// peer (RFC 4877 4.4, 4.5); the home agent's peer `"remote": "any"`,
/// since no registration can say where the node is before those SAs
/// exist.
fn signalling_by_ike(lab: &Lab, ha_cfg: &Path, mn_cfg: &Path) {
    for (role, cfg, child) in [
        ("ha", ha_cfg, json!({"outbound": "sa2", "inbound": "sa1"})),
        ("mn", mn_cfg, json!({"outbound": "sa1", "inbound": "sa2"})),
    ] {
        let policy = lab.dir.join(format!("{role}-ike.json"));
        let mut v: Value =
            serde_json::from_str(&std::fs::read_to_string(&policy).unwrap()).unwrap();
        for sa in v["sad"].as_array_mut().unwrap() {
            if sa["name"] == "sa1" || sa["name"] == "sa2" {
                *sa = json!({
                    "name": sa["name"], "direction": sa["direction"], "keyed_by": "ike",
                    "mode": "transport",
                });
            }
        }
        std::fs::write(&policy, v.to_string()).unwrap();
        let mut c: Value = serde_json::from_str(&std::fs::read_to_string(cfg).unwrap()).unwrap();
        c["peers"][0]["children"]
            .as_array_mut()
            .unwrap()
            .push(child);
        if role == "ha" {
            c["peers"][0]["remote"] = json!("any");
        }
        std::fs::write(cfg, c.to_string()).unwrap();
    }
}

/// The outbound SPI IKE negotiated for `child` (its outbound SA's name)
/// in `show ike`.
fn outbound_spi(v: &Value, child: &str) -> u32 {
    spi_of_child(v, child, "outbound_spi")
}

/// The inbound SPI of `child` (its outbound SA's name) in `show ike`.
fn inbound_spi(v: &Value, child: &str) -> u32 {
    spi_of_child(v, child, "inbound_spi")
}

fn spi_of_child(v: &Value, child: &str, which: &str) -> u32 {
    let c = v["peers"][0]["child_sas"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["outbound"] == child)
        .unwrap_or_else(|| panic!("no CHILD_SA {child}: {v:#}"));
    u32::from_str_radix(c[which].as_str().unwrap(), 16).unwrap()
}

/// The seed's Req #3 (draft-laganier-mext-dsmipv6-ipsec, DSMIPv6 outbound
/// processing on the mobile node) on SPIs IKE negotiated: the Binding
/// Update's SA and the payload's both keyed by IKE, the mobile node's
/// tunnel stage asks the IPsec stage's query API which SPI protects the
/// Binding Update and tells it from data by that SPI. Moving
/// make-before-break, the Binding Update's ESP (the IKE-negotiated BU
/// SPI, not the policy file's) leaves from the care-of address being
/// registered while the data's ESP (the IKE-negotiated payload SPI)
/// leaves from the registered one, as a capture on the mobile node's
/// network port shows; not a ping lost, and the home agent takes the
/// registration. Then Req #4 (DSMIPv6 inbound processing on the home
/// agent) on such SAs: moved behind a NAT, the home agent finds the NAT
/// from the outer IPv4 source of a BU its IPsec stage took IKE-keyed ESP
/// off, and the pings go on.
#[test]
fn seed_req3_tells_the_binding_update_from_data_by_spis_ike_negotiated() {
    let (mut lab, mn, ha) = lab_edited("mq", false, &json!({}), signalling_by_ike);
    let (mn_sock, ha_sock) = (socket(&lab, "mn"), socket(&lab, "ha"));
    ctl(&mn_sock, &["ctl", "move", COA_A]);
    let two_children = |v: &Value| v["peers"][0]["child_sas"].as_array().map_or(0, Vec::len) == 2;
    let ike = until(
        &mn_sock,
        "ike",
        "the BU's and the payload's CHILD_SAs",
        |v| two_children(v) && v["peers"][0]["ike_sas"].as_array().map_or(0, Vec::len) == 1,
    );
    until(
        &mn_sock,
        "bindings",
        "registration by the IKE-keyed BU SA",
        |v| v["registered"] == COA_A && v["registering"].is_null(),
    );
    let (bu_spi, data_spi) = (outbound_spi(&ike, "sa1"), outbound_spi(&ike, "sa7"));
    let ba_spi = inbound_spi(&ike, "sa1");
    assert_ne!(bu_spi, 0x2001, "the policy file's SPI");
    assert_ne!(data_spi, 0x2007, "the policy file's SPI");
    let sas = json_of(&mn_sock, "sa");
    let spi_of = |name: &str| {
        let sa = common::find_sa(&sas, name);
        let s = sa["spi"]
            .as_str()
            .map(str::to_string)
            .unwrap_or(sa["spi"].to_string());
        let s = s.trim_start_matches("0x");
        u32::from_str_radix(s, 16).unwrap_or_else(|_| s.parse().unwrap())
    };
    assert_eq!(
        (spi_of("sa1"), spi_of("sa7")),
        (bu_spi, data_spi),
        "{sas:#}"
    );
    let before = json_of(&mn_sock, "counters");
    // Every ESP packet the mobile node sends: source and SPI.
    let capture = lab.spawn(
        "n",
        &[
            "tshark", "-i", "mnn", "-n", "-l", "-Y", "esp", "-T", "fields", "-e", "ipv6.src", "-e",
            "esp.spi",
        ],
    );
    std::thread::sleep(Duration::from_secs(2));
    let pings = start_pings(&mut lab, 120);
    std::thread::sleep(Duration::from_millis(1000));
    ctl(&mn_sock, &["ctl", "move", COA_B]);
    until(
        &mn_sock,
        "bindings",
        "registration at the new care-of address",
        |v| v["registered"] == COA_B && v["registering"].is_null(),
    );
    let (sent, answered, out) = finish_pings(&mut lab, pings);
    assert_eq!((sent, answered), (120, 120), "{out}");
    let (_, captured, _) = lab.terminate(capture);
    let esp: Vec<(String, u32)> = captured
        .lines()
        .filter_map(|l| {
            let (src, spi) = l.split_once('\t')?;
            let spi = spi.trim().trim_start_matches("0x");
            Some((src.to_string(), u32::from_str_radix(spi, 16).ok()?))
        })
        .collect();
    // The BU (from the new care-of address, on the BU SA's SPI) and the
    // BA answering it (from the home agent, on the BA SA's SPI).
    let at = |spi: u32, src: &str| {
        esp.iter()
            .position(|e| e == &(src.to_string(), spi))
            .unwrap_or_else(|| panic!("no ESP {spi:08x} from {src}: {captured}"))
    };
    let (bu, ba) = (at(bu_spi, COA_B), at(ba_spi, HA));
    assert!(bu < ba, "{captured}");
    assert!(
        esp.iter().all(|e| e.1 != bu_spi || e.0 == COA_B),
        "the BU only by the care-of address being registered: {captured}"
    );
    // Data until the BA by the registered care-of address, the old one;
    // then by the new one (on the same SA until the CHILD_SA of the IKE
    // SA from there replaces it).
    let data: Vec<(usize, &str)> = (0..esp.len())
        .filter(|&i| esp[i].1 == data_spi)
        .map(|i| (i, esp[i].0.as_str()))
        .collect();
    assert!(data.iter().any(|d| d.0 < bu), "{captured}");
    // Once the BA is on the wire the node may still send a packet or two
    // before it has taken it: from then on the old address, then the new
    // one, never back.
    let mut switched = false;
    for (i, src) in data {
        switched |= src == COA_B;
        let registered = if i < ba || !switched { COA_A } else { COA_B };
        assert_eq!(src, registered, "data ESP #{i}: {captured}");
    }
    assert!(switched, "{captured}");
    let after = json_of(&mn_sock, "counters");
    let grew =
        |k: &str| after["mobility"][k].as_u64().unwrap() - before["mobility"][k].as_u64().unwrap();
    assert!(grew("classified_binding_update") >= 1, "{after:#}");
    assert!(grew("classified_data") >= 100, "{after:#}");
    let cache = json_of(&ha_sock, "bindings");
    assert!(cache.to_string().contains(COA_B), "{cache:#}");
    // Req #4 on the same SAs: behind a NAT the BU comes in UDP over IPv4
    // (RFC 5555 4.1), and the home agent, after the IPsec stage took off
    // its IKE-keyed ESP, compares the outer source with the IPv4 care-of
    // address option and finds the NAT.
    let pings = start_pings(&mut lab, 60);
    std::thread::sleep(Duration::from_millis(500));
    ctl(&mn_sock, &["ctl", "move", COA_NAT]);
    until(&mn_sock, "bindings", "registration behind the NAT", |v| {
        v["registered"] == COA_NAT && v["registering"].is_null() && v["nat"] == true
    });
    let cache = until(&ha_sock, "bindings", "the NAT in the Binding Cache", |v| {
        let s = v.to_string();
        s.contains(NAT_PUBLIC) && s.contains(r#""nat":true"#)
    });
    let (sent, answered, out) = finish_pings(&mut lab, pings);
    assert_eq!((sent, answered), (60, 60), "{out} {cache:#}");
    // The IKE SA established again from behind the NAT (UDP 4500), to the
    // home agent's IPv4 address, which its `"any"` peer takes from the
    // registration on (what comes before it is `no_peer`, and sent
    // again); both CHILD_SAs new.
    let ike = until(&mn_sock, "ike", "both CHILD_SAs from behind the NAT", |v| {
        let sas = v["peers"][0]["ike_sas"]
            .as_array()
            .map_or(&[][..], Vec::as_slice);
        two_children(v) && sas.len() == 1 && sas[0]["nat_local"] == true
    });
    assert_ne!(outbound_spi(&ike, "sa1"), bu_spi, "{ike:#}");
    until(
        &ha_sock,
        "ike",
        "the home agent's IKE SA from the NAT",
        |v| {
            let p = &v["peers"][0];
            let sas = p["ike_sas"].as_array().map_or(&[][..], Vec::as_slice);
            sas.len() == 1
                && sas[0]["remote"]
                    .as_str()
                    .is_some_and(|r| r.starts_with(NAT_PUBLIC))
                && p["child_sas"].as_array().map_or(0, Vec::len) == 2
        },
    );
    let pings = start_pings(&mut lab, 20);
    let (sent, answered, out) = finish_pings(&mut lab, pings);
    assert_eq!((sent, answered), (20, 20), "{out}");
    let (_, _, err) = lab.terminate(mn);
    assert!(!err.contains("panicked"), "{err}");
    let (_, _, err) = lab.terminate(ha);
    assert!(!err.contains("panicked"), "{err}");
}
