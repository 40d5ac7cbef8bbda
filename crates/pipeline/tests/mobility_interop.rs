//! The home agent's and the mobile node's signalling against
//! implementations written elsewhere (../shared/PEERS.md), on the wire,
//! with the seed's host-wide policies (policies/dsmip-hostwide-*.json):
//!
//! 1. What our gateways send (BU, BA, MPS, MPA, HoTI, HoT; over an IPv6
//!    care-of address with the Home Address option and the type 2 routing
//!    header, RFC 3776 3.1 to 3.3, and over IPv4 in UDP port 4191 through a
//!    NAT, RFC 5555 4.1) is written to one capture that tshark decrypts with
//!    the SAs (every ESP ICV must be good) and dissects, and that scapy
//!    decrypts and parses, with the DSMIPv6 option classes of
//!    tests/peer/mh_peer.py. The fields must be those we meant.
//! 2. Binding Updates scapy builds and encrypts (IPv6 care-of address with
//!    HAO and Alternate Care-of Address; IPv4 care-of address in UDP with
//!    the IPv4 Care-of and IPv4 Home Address options, with and without a
//!    NAT on the path) are accepted by our home agent, whose Binding
//!    Acknowledgements scapy and tshark then open and check; a stale
//!    sequence number gets status 135 and a bad checksum a counted drop.
//!
//! Every signalling SA of the host-wide policies is AES-GCM (128 or 256),
//! which tshark 4.0 checks, and the test asserts that tshark left none of
//! them out. Tshark 4.0 could not check ChaCha20-Poly1305 (the IPv4 home
//! address payload SAs 0x2009/0x200a, which carry no signalling), AES-GMAC
//! or ESN SAs; scapy checks every SA.
//!
//! Each direction runs one python process (tests/peer/mh_peer.py, which
//! also answers tests/peer/esp_peer.py's ESP and tshark requests). Needs
//! the virtualenv of `scripts/setup-test-deps.sh` at `.venv` and tshark.
//! Without the virtualenv the tests are skipped with a message, unless the
//! environment variable CI is set, when they fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bitsgw_ipsec::{IpsecStage, StageConfig};
use bitsgw_mobility::counters::{MobilityDrop, MobilityEvent};
use bitsgw_mobility::ha::{HaConfig, HomeAgent, ServedNode, DEFAULT_NAT_REFRESH};
use bitsgw_mobility::mn::{Attachment, MnConfig, MnEvent, MobileNode};
use bitsgw_pipeline::{Gateway, LinkType, Mobility, NoTap, Outcome, Side};
use bitsgw_wire::mh::{emit_mh, mh_buffer_len, Message, MhPacket};
use bitsgw_wire::{PacketBuf, Timestamp};
use core::time::Duration;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

const HOA: &str = "2001:db8:1::100";
const HA: &str = "2001:db8:1::1";
const HA4: &str = "203.0.113.1";
const CN: &str = "2001:db8:1::77";
const HOA4: &str = "192.0.2.100";
const COA6: &str = "2001:db8:2::100";
const COA4: &str = "203.0.113.20";
const COA4_NAT_INSIDE: &str = "198.51.100.20";
const NAT_PUBLIC: &str = "203.0.113.99";
const NAT_PORT: u16 = 40001;
const T0: Timestamp = Timestamp(1_000_000_000);

fn v6(s: &str) -> [u8; 16] {
    s.parse::<Ipv6Addr>().unwrap().octets()
}

fn v4(s: &str) -> [u8; 4] {
    s.parse::<Ipv4Addr>().unwrap().octets()
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

// ---------------------------------------------------------------------
// The two appliances (as in tests/mobility.rs)
// ---------------------------------------------------------------------

fn stage(name: &str) -> IpsecStage {
    let set = common::policy_file(&repo().join("policies").join(name));
    let mut stage = IpsecStage::new(StageConfig::default());
    set.apply(&mut stage, Timestamp::ZERO).unwrap();
    stage
}

fn home_agent() -> Gateway {
    let mut gw = Gateway::new(stage("dsmip-hostwide-ha.json"));
    gw.set_mobility(Mobility::HomeAgent(HomeAgent::new(HaConfig {
        address: v6(HA),
        address_v4: Some(v4(HA4)),
        home_prefixes: vec![(v6("2001:db8:1::"), 64)],
        nodes: vec![ServedNode {
            home: v6(HOA),
            home_v4: Some(v4(HOA4)),
        }],
        ipv4_pool: vec![],
        ipv4_prefix_len: 24,
        max_lifetime: Duration::from_secs(600),
        nat_refresh: DEFAULT_NAT_REFRESH,
        force_udp: false,
        key_management_mobility: false,
    })));
    gw
}

fn mobile_node() -> Gateway {
    let mut gw = Gateway::new(stage("dsmip-hostwide-mn.json"));
    let mut cfg = MnConfig::new(v6(HOA), v6(HA));
    cfg.home_agent_v4 = Some(v4(HA4));
    cfg.home_v4 = Some([0; 4]);
    gw.set_mobility(Mobility::MobileNode(MobileNode::new(cfg)));
    gw
}

fn mn(gw: &mut Gateway) -> &mut MobileNode {
    match gw.mobility_mut() {
        Some(Mobility::MobileNode(m)) => m,
        _ => unreachable!(),
    }
}

fn ha(gw: &Gateway) -> &HomeAgent {
    match gw.mobility() {
        Some(Mobility::HomeAgent(h)) => h,
        _ => unreachable!(),
    }
}

/// One frame into a gateway: the outcome and what it sent, by side.
fn run(gw: &mut Gateway, from: Side, pkt: &[u8]) -> (Outcome, Vec<(Side, Vec<u8>)>) {
    let mut out = Vec::new();
    let mut buf = PacketBuf::from_slice(pkt);
    let o = gw.handle_frame(
        from,
        LinkType::RawIp,
        &mut buf,
        T0,
        &mut |side, f| out.push((side, f.to_vec())),
        &mut NoTap,
    );
    (o, out)
}

/// What the gateway's mobility stage sends of its own accord.
fn poll(gw: &mut Gateway) -> Vec<(Side, Vec<u8>)> {
    let mut out = Vec::new();
    gw.handle_timeout(T0);
    gw.poll_endpoints(T0, &mut |side, f| out.push((side, f.to_vec())), &mut NoTap);
    out
}

fn only(out: Vec<(Side, Vec<u8>)>, side: Side) -> Vec<u8> {
    assert_eq!(out.len(), 1, "one packet expected, got {}", out.len());
    assert_eq!(out[0].0, side);
    out.into_iter().next().unwrap().1
}

fn csum(data: &[u8]) -> u16 {
    bitsgw_wire::checksum::checksum(data)
}

/// The NAT of the visited IPv4 network, both ways: inside address and
/// port 4191 <-> public address and NAT_PORT, checksums fixed as a NAT
/// does (RFC 3022 4.1).
fn nat(p: &[u8], outbound: bool) -> Vec<u8> {
    let mut p = p.to_vec();
    let ihl = usize::from(p[0] & 15) * 4;
    assert_eq!(p[9], 17, "only UDP through this NAT");
    if outbound {
        p[12..16].copy_from_slice(&v4(NAT_PUBLIC));
        p[ihl..ihl + 2].copy_from_slice(&NAT_PORT.to_be_bytes());
    } else {
        p[16..20].copy_from_slice(&v4(COA4_NAT_INSIDE));
        p[ihl + 2..ihl + 4].copy_from_slice(&4191u16.to_be_bytes());
    }
    p[10..12].fill(0);
    let c = csum(&p[..ihl]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    if p[ihl + 6..ihl + 8] != [0, 0] {
        p[ihl + 6..ihl + 8].fill(0);
        let udp_len = p.len() - ihl;
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&p[12..20]);
        pseudo.extend_from_slice(&[0, 17]);
        pseudo.extend_from_slice(&u16::try_from(udp_len).unwrap().to_be_bytes());
        pseudo.extend_from_slice(&p[ihl..]);
        let c = match csum(&pseudo) {
            0 => 0xffff,
            c => c,
        };
        p[ihl + 6..ihl + 8].copy_from_slice(&c.to_be_bytes());
    }
    p
}

/// A well-formed HoTI or HoT from the host or the correspondent (RFC 6275
/// 6.1.3, 6.1.5), checksum included.
fn rr_packet(src: &str, dst: &str, msg: &Message) -> Vec<u8> {
    let n = mh_buffer_len(msg, &[]);
    let mut p = vec![0u8; 40 + n];
    assert_eq!(emit_mh(&mut p[40..], msg, &[]), Ok(n));
    bitsgw_wire::ip::emit_ipv6_header(&mut p, v6(src), v6(dst), 135, n as u16, 64, 0);
    MhPacket::new_checked(&mut p[40..])
        .unwrap()
        .fill_checksum(&v6(src), &v6(dst));
    p
}

// ---------------------------------------------------------------------
// The peer
// ---------------------------------------------------------------------

/// The python of the virtualenv; `None` (skip) if it is missing outside
/// CI.
fn python() -> Option<PathBuf> {
    let python = repo().join(".venv/bin/python");
    if !python.exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "the peer's virtualenv is missing: run scripts/setup-test-deps.sh (make test does)"
        );
        eprintln!("SKIPPED: no .venv (run scripts/setup-test-deps.sh)");
        return None;
    }
    Some(python)
}

/// tests/peer/mh_peer.py in stream mode: one process, one JSON line per
/// batch of requests.
struct Peer {
    child: Child,
    out: BufReader<std::process::ChildStdout>,
}

impl Peer {
    fn start() -> Option<Peer> {
        let mut child = Command::new(python()?)
            .arg(repo().join("tests/peer/mh_peer.py"))
            .arg("--stream")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start mh_peer.py");
        let out = BufReader::new(child.stdout.take().unwrap());
        Some(Peer { child, out })
    }

    fn ask(&mut self, requests: &[Value]) -> Vec<Value> {
        let stdin = self.child.stdin.as_mut().unwrap();
        let mut line = serde_json::to_string(requests).unwrap();
        line.push('\n');
        stdin.write_all(line.as_bytes()).unwrap();
        stdin.flush().unwrap();
        let mut answer = String::new();
        self.out.read_line(&mut answer).unwrap();
        let answers: Vec<Value> = serde_json::from_str(&answer)
            .unwrap_or_else(|e| panic!("peer answered no JSON list ({e}): {answer}"));
        assert_eq!(answers.len(), requests.len());
        for a in &answers {
            assert!(a.get("error").is_none(), "peer error: {a}");
        }
        answers
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// An SA of a policy file in the peer's notation (keys and transforms
/// straight from the file).
fn peer_sa(policy: &str, spi: u32) -> Value {
    let text = std::fs::read_to_string(repo().join("policies").join(policy)).unwrap();
    let set: Value = serde_json::from_str(&text).unwrap();
    let addr = |n: &Value| -> String {
        let n = n.as_str().unwrap();
        set["addresses"]
            .get(n)
            .and_then(Value::as_str)
            .unwrap_or(n)
            .to_string()
    };
    let sa = set["sad"]
        .as_array()
        .unwrap()
        .iter()
        .find(|sa| u32::from_str_radix(&sa["spi"].as_str().unwrap()[2..], 16).unwrap() == spi)
        .unwrap_or_else(|| panic!("no SA 0x{spi:x} in {policy}"));
    let key = |k: &str| {
        sa.get(k)
            .and_then(Value::as_str)
            .map(|s| s[2..].to_string())
    };
    let mut v = json!({
        "spi": spi,
        "transform": sa["transform"],
        "enc_key": key("enc_key"),
        "auth_key": key("auth_key"),
        "mode": sa["mode"],
        "esn": sa["esn"],
    });
    if sa["mode"] == "tunnel" {
        v["tunnel_src"] = json!(addr(&sa["tunnel"]["local"]));
        v["tunnel_dst"] = json!(addr(&sa["tunnel"]["remote"]));
    }
    v
}

/// The tshark fields the checks read.
const TSHARK_FIELDS: &[&str] = &[
    "ipv6.opt.mipv6.home_address",
    "ipv6.routing.type",
    "ipv6.routing.segleft",
    "ipv6.routing.mipv6.home_address",
    "mip6.mhtype",
    "mip6.bu.seqnr",
    "mip6.bu.a_flag",
    "mip6.bu.h_flag",
    "mip6.bu.l_flag",
    "mip6.bu.k_flag",
    "mip6.bu.lifetime",
    "mip6.acoa.acoa",
    "mip6.ipv4coa.addr",
    "mip6.ipv4ha.ha",
    "mip6.ipv4ha.preflen",
    "mip6.ipv4ha.p_flag",
    "mip6.ba.status",
    "mip6.ba.k_flag",
    "mip6.ba.seqnr",
    "mip6.ba.lifetime",
    "mip6.ipv4aa.sts",
    "mip6.natd.f_flag",
    "mip6.natd.refresh_t",
    "mip6.hoti.cookie",
    "mip6.hot.nindex",
    "mip6.hot.cookie",
    "mip6.hot.token",
    "icmpv6.type",
    "icmpv6.code",
    "icmpv6.checksum.status",
    "icmpv6.mip6.identifier",
    "icmpv6.opt.prefix",
    "icmpv6.opt.prefix.length",
    "icmpv6.opt.prefix.flag.l",
    "icmpv6.opt.prefix.flag.a",
    "icmpv6.opt.prefix.valid_lifetime",
    "icmpv6.opt.prefix.preferred_lifetime",
];

/// A packet off the wire, what it should say, and whose SA opens it.
struct Captured {
    what: String,
    wire: Vec<u8>,
    /// Policy file and SPI of the receiver's inbound SA.
    sa: (&'static str, u32),
    /// Outer IPv4/UDP: (src, dst, sport, dport).
    outer4: Option<(&'static str, &'static str, u16, u16)>,
    /// The IPv6 header in front of ESP: source, destination.
    ipv6: (&'static str, &'static str),
    hao: Option<&'static str>,
    rh2: Option<&'static str>,
    /// Tunnel mode: the inner header's source and destination.
    inner: Option<(&'static str, &'static str)>,
    /// The MH message in mh_peer.py's notation.
    mh: Option<Value>,
    /// MPS or MPA: (type, identifier).
    icmp: Option<(u8, u16)>,
    /// tshark fields and their values (every occurrence).
    tshark: Vec<(&'static str, Vec<String>)>,
}

fn f(name: &'static str, vals: &[&str]) -> (&'static str, Vec<String>) {
    (name, vals.iter().map(|s| (*s).to_string()).collect())
}

fn opens(a: &Value, c: &Captured) -> usize {
    let what = &c.what;
    let mut checked = 0;
    assert_eq!(a["esp"]["ok"], json!(true), "{what}: scapy: {a}");
    assert_eq!(a["esp"]["spi"], json!(c.sa.1), "{what}");
    assert_eq!(a["esp"]["padding_ok"], json!(true), "{what}");
    match c.outer4 {
        Some((src, dst, sport, dport)) => {
            let o = &a["outer4"];
            assert_eq!(o["src"], json!(src), "{what}");
            assert_eq!(o["dst"], json!(dst), "{what}");
            assert_eq!(o["sport"], json!(sport), "{what}");
            assert_eq!(o["dport"], json!(dport), "{what}");
            assert_eq!(o["udp_cksum_ok"], json!(true), "{what}: {o}");
            assert_eq!(o["udp_len_ok"], json!(true), "{what}: {o}");
            checked += 6;
        }
        None => assert_eq!(a["outer4"], Value::Null, "{what}"),
    }
    let x = &a["ipv6"];
    assert_eq!(x["src"], json!(c.ipv6.0), "{what}");
    assert_eq!(x["dst"], json!(c.ipv6.1), "{what}");
    assert_eq!(x["plen_ok"], json!(true), "{what}");
    assert_eq!(x["hao"], json!(c.hao), "{what}");
    assert_eq!(x["rh2"], json!(c.rh2), "{what}");
    let mut chain = vec![];
    if c.rh2.is_some() {
        chain.push(43);
        assert_eq!(x["segleft"], json!(1), "{what}");
    }
    if c.hao.is_some() {
        chain.push(60);
    }
    chain.push(50);
    assert_eq!(x["chain"], json!(chain), "{what}");
    checked += 7;
    if let Some((src, dst)) = c.inner {
        assert_eq!(a["inner"]["src"], json!(src), "{what}");
        assert_eq!(a["inner"]["dst"], json!(dst), "{what}");
        checked += 2;
    }
    match &c.mh {
        Some(msg) => {
            let m = &a["mh"];
            assert_eq!(&m["msg"], msg, "{what}: scapy's reading");
            assert_eq!(m["cksum_rfc_ok"], json!(true), "{what}: MH checksum");
            // Scapy's own checksum is wrong behind a PadN (mh_peer.py).
            if c.hao.is_none() {
                assert_eq!(m["cksum_ok"], json!(true), "{what}: scapy's MH checksum");
            }
            checked +=
                2 + msg.as_object().unwrap().len() + msg["options"].as_array().unwrap().len();
        }
        None => assert_eq!(a["mh"], Value::Null, "{what}"),
    }
    if let Some((ty, id)) = c.icmp {
        let i = &a["icmpv6"];
        assert_eq!(i["type"], json!(ty), "{what}");
        assert_eq!(i["code"], json!(0), "{what}");
        assert_eq!(i["id"], json!(id), "{what}");
        assert_eq!(i["cksum_ok"], json!(true), "{what}");
        checked += 4;
        if ty == 147 {
            assert_eq!(i["m"], json!(false), "{what}");
            assert_eq!(i["o"], json!(false), "{what}");
            assert_eq!(
                i["prefixes"],
                json!([{"prefix": "2001:db8:1::", "plen": 64, "l": true, "a": true,
                        "r": false, "valid": 600, "preferred": 600}]),
                "{what}"
            );
            checked += 9;
        }
    }
    checked
}

fn reads(t: &Value, c: &Captured) -> usize {
    let what = &c.what;
    assert_eq!(t["icv_good"], json!(true), "{what}: tshark: {t}");
    let fields = &t["fields"];
    let esp_spi = format!("0x{:08x}", c.sa.1);
    assert_eq!(fields["esp.spi"], json!([esp_spi]), "{what}");
    let proto = if c.inner.is_some() {
        "0x29"
    } else if c.mh.is_some() {
        "0x87"
    } else {
        "0x3a"
    };
    assert_eq!(fields["esp.protocol"], json!([proto]), "{what}");
    for (name, want) in &c.tshark {
        assert_eq!(&fields[*name], &json!(want), "{what}: tshark {name}: {t}");
    }
    assert_eq!(fields["_ws.malformed"], json!([]), "{what}: {t}");
    3 + c.tshark.len()
}

// ---------------------------------------------------------------------
// 1. Our signalling, read by scapy and tshark
// ---------------------------------------------------------------------

fn bu_seq(gw: &mut Gateway) -> u16 {
    let m = mn(gw);
    std::iter::from_fn(|| m.poll_event())
        .find_map(|e| match e {
            MnEvent::BindingUpdateSent { seq, .. } => Some(seq),
            _ => None,
        })
        .unwrap()
}

const COOKIE: [u8; 8] = [0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88];
const TOKEN: [u8; 8] = [0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xf0, 0x0f];

/// The packets of one visit (IPv6 care-of address, or IPv4 behind the
/// NAT): BU, BA, MPS, MPA, HoTI, HoT, as they leave the gateways.
fn visit(over_v4: bool) -> Vec<Captured> {
    let mut ha_gw = home_agent();
    let mut mn_gw = mobile_node();
    let mut out = Vec::new();
    let at = if over_v4 {
        Attachment::V4(v4(COA4_NAT_INSIDE))
    } else {
        Attachment::V6(v6(COA6))
    };
    mn(&mut mn_gw).handle_move(at, !over_v4, T0);
    let bu = only(poll(&mut mn_gw), Side::Network);
    let seq = bu_seq(&mut mn_gw);
    let seq_s = seq.to_string();
    let via = if over_v4 {
        "IPv4/UDP behind a NAT"
    } else {
        "IPv6 care-of address"
    };
    // Up: the MN's packets leave from the care-of address (through the NAT).
    let up4 = over_v4.then_some((COA4_NAT_INSIDE, HA4, 4191, 4191));
    let down4 = over_v4.then_some((HA4, NAT_PUBLIC, 4191, NAT_PORT));
    let to_ha = |p: &[u8]| if over_v4 { nat(p, true) } else { p.to_vec() };
    let to_mn = |p: &[u8]| if over_v4 { nat(p, false) } else { p.to_vec() };
    // Transport-mode signalling, seen from outside.
    let (bu_v6, ba_v6) = if over_v4 {
        ((HOA, HA), (HA, HOA))
    } else {
        ((COA6, HA), (HA, COA6))
    };
    let (tun_up, tun_down) = if over_v4 {
        ((HOA, HA), (HA, HOA))
    } else {
        ((COA6, HA), (HA, COA6))
    };
    let mut bu_opts = vec![];
    let mut bu_tshark = vec![
        f("mip6.mhtype", &["5"]),
        f("mip6.bu.seqnr", &[&seq_s]),
        f("mip6.bu.a_flag", &["1"]),
        f("mip6.bu.h_flag", &["1"]),
        f("mip6.bu.l_flag", &["0"]),
        f("mip6.bu.k_flag", &["0"]),
        f("mip6.bu.lifetime", &["105"]),
    ];
    if over_v4 {
        bu_opts.push(json!({"t": 32, "addr": COA4_NAT_INSIDE}));
        bu_tshark.push(f("mip6.ipv4coa.addr", &[COA4_NAT_INSIDE]));
        bu_tshark.push(f("ipv6.opt.mipv6.home_address", &[]));
        bu_tshark.push(f("mip6.acoa.acoa", &[]));
    } else {
        bu_opts.push(json!({"t": 3, "addr": COA6}));
        bu_tshark.push(f("mip6.acoa.acoa", &[COA6]));
        bu_tshark.push(f("ipv6.opt.mipv6.home_address", &[HOA]));
    }
    bu_opts.push(json!({"t": 29, "plen": 0, "p": false, "addr": "0.0.0.0"}));
    bu_tshark.push(f("mip6.ipv4ha.ha", &["0.0.0.0"]));
    bu_tshark.push(f("mip6.ipv4ha.preflen", &["0"]));
    bu_tshark.push(f("mip6.ipv4ha.p_flag", &["0"]));
    out.push(Captured {
        what: format!("BU over {via}"),
        wire: bu.clone(),
        sa: ("dsmip-hostwide-ha.json", 0x2001),
        outer4: up4,
        ipv6: bu_v6,
        hao: (!over_v4).then_some(HOA),
        rh2: None,
        inner: None,
        mh: Some(
            json!({"type": 5, "seq": seq, "a": true, "h": true, "l": false,
                        "k": false, "f": false, "lifetime": 105, "options": bu_opts}),
        ),
        icmp: None,
        tshark: bu_tshark,
    });

    let (o, sent) = run(&mut ha_gw, Side::Network, &to_ha(&bu));
    assert_eq!(o, Outcome::MobilityConsumed);
    let ba = only(sent, Side::Network);
    let mut ba_opts = vec![json!({"t": 30, "status": 0, "plen": 24, "addr": HOA4})];
    let mut ba_tshark = vec![
        f("mip6.mhtype", &["6"]),
        f("mip6.ba.status", &["0"]),
        f("mip6.ba.k_flag", &["0"]),
        f("mip6.ba.seqnr", &[&seq_s]),
        f("mip6.ba.lifetime", &["105"]),
        f("mip6.ipv4aa.sts", &["0"]),
    ];
    if over_v4 {
        ba_opts.push(json!({"t": 31, "f": false, "refresh": 110}));
        ba_tshark.push(f("mip6.natd.f_flag", &["0"]));
        ba_tshark.push(f("mip6.natd.refresh_t", &["110"]));
        ba_tshark.push(f("ipv6.routing.mipv6.home_address", &[]));
    } else {
        ba_tshark.push(f("mip6.natd.refresh_t", &[]));
        ba_tshark.push(f("ipv6.routing.type", &["2"]));
        ba_tshark.push(f("ipv6.routing.segleft", &["1"]));
        ba_tshark.push(f("ipv6.routing.mipv6.home_address", &[HOA]));
    }
    out.push(Captured {
        what: format!("BA over {via}"),
        wire: ba.clone(),
        sa: ("dsmip-hostwide-mn.json", 0x2002),
        outer4: down4,
        ipv6: ba_v6,
        hao: None,
        rh2: (!over_v4).then_some(HOA),
        inner: None,
        mh: Some(
            json!({"type": 6, "status": 0, "k": false, "seq": seq, "lifetime": 105,
                        "options": ba_opts}),
        ),
        icmp: None,
        tshark: ba_tshark,
    });
    let (o, _) = run(&mut mn_gw, Side::Network, &to_mn(&ba));
    assert_eq!(o, Outcome::MobilityConsumed);
    assert_eq!(mn(&mut mn_gw).registered(), Some(at));

    // Mobile prefix discovery (RFC 6275 11.4.2, 10.6.3), in the tunnel.
    mn(&mut mn_gw).solicit_prefixes();
    let mps = only(poll(&mut mn_gw), Side::Network);
    out.push(Captured {
        what: format!("MPS over {via}"),
        wire: mps.clone(),
        sa: ("dsmip-hostwide-ha.json", 0x2007),
        outer4: up4,
        ipv6: tun_up,
        hao: None,
        rh2: None,
        inner: Some((HOA, HA)),
        mh: None,
        icmp: Some((146, 1)),
        tshark: vec![
            f("icmpv6.type", &["146"]),
            f("icmpv6.code", &["0"]),
            f("icmpv6.mip6.identifier", &["1"]),
            f("icmpv6.checksum.status", &["1"]),
        ],
    });
    let (o, sent) = run(&mut ha_gw, Side::Network, &to_ha(&mps));
    assert_eq!(o, Outcome::MobilityConsumed);
    let mpa = only(sent, Side::Network);
    out.push(Captured {
        what: format!("MPA over {via}"),
        wire: mpa.clone(),
        sa: ("dsmip-hostwide-mn.json", 0x2008),
        outer4: down4,
        ipv6: tun_down,
        hao: None,
        rh2: None,
        inner: Some((HA, HOA)),
        mh: None,
        icmp: Some((147, 1)),
        tshark: vec![
            f("icmpv6.type", &["147"]),
            f("icmpv6.mip6.identifier", &["1"]),
            f("icmpv6.checksum.status", &["1"]),
            f("icmpv6.opt.prefix", &["2001:db8:1::"]),
            f("icmpv6.opt.prefix.length", &["64"]),
            f("icmpv6.opt.prefix.flag.l", &["1"]),
            f("icmpv6.opt.prefix.flag.a", &["1"]),
            f("icmpv6.opt.prefix.valid_lifetime", &["600"]),
            f("icmpv6.opt.prefix.preferred_lifetime", &["600"]),
        ],
    });
    let (o, _) = run(&mut mn_gw, Side::Network, &to_mn(&mpa));
    assert_eq!(o, Outcome::MobilityConsumed);

    // Return routability from the host, through the reverse tunnel.
    let hoti = rr_packet(HOA, CN, &Message::HomeTestInit { cookie: COOKIE });
    let (_, sent) = run(&mut mn_gw, Side::Host, &hoti);
    let hoti_wire = only(sent, Side::Network);
    let cookie = format!("0x{}", hex::encode(COOKIE));
    let token = format!("0x{}", hex::encode(TOKEN));
    out.push(Captured {
        what: format!("HoTI over {via}"),
        wire: hoti_wire.clone(),
        sa: ("dsmip-hostwide-ha.json", 0x2003),
        outer4: up4,
        ipv6: tun_up,
        hao: None,
        rh2: None,
        inner: Some((HOA, CN)),
        mh: Some(json!({"type": 1, "cookie": hex::encode(COOKIE), "options": []})),
        icmp: None,
        tshark: vec![f("mip6.mhtype", &["1"]), f("mip6.hoti.cookie", &[&cookie])],
    });
    let (_, sent) = run(&mut ha_gw, Side::Network, &to_ha(&hoti_wire));
    assert_eq!(only(sent, Side::Host), hoti);
    let hot = rr_packet(
        CN,
        HOA,
        &Message::HomeTest {
            nonce_index: 0x0102,
            cookie: COOKIE,
            keygen_token: TOKEN,
        },
    );
    let (_, sent) = run(&mut ha_gw, Side::Host, &hot);
    let hot_wire = only(sent, Side::Network);
    out.push(Captured {
        what: format!("HoT over {via}"),
        wire: hot_wire.clone(),
        sa: ("dsmip-hostwide-mn.json", 0x2004),
        outer4: down4,
        ipv6: tun_down,
        hao: None,
        rh2: None,
        inner: Some((CN, HOA)),
        mh: Some(
            json!({"type": 3, "index": 0x0102, "cookie": hex::encode(COOKIE),
                        "token": hex::encode(TOKEN), "options": []}),
        ),
        icmp: None,
        tshark: vec![
            f("mip6.mhtype", &["3"]),
            f("mip6.hot.nindex", &["258"]),
            f("mip6.hot.cookie", &[&cookie]),
            f("mip6.hot.token", &[&token]),
        ],
    });
    let (_, sent) = run(&mut mn_gw, Side::Network, &to_mn(&hot_wire));
    assert_eq!(only(sent, Side::Host), hot);
    out
}

/// Writes the capture of what went over the wire (LINKTYPE_RAW), for a
/// person to look at with the SAs of the policies.
fn write_pcap(name: &str, packets: &[&[u8]]) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let path = dir.join(name);
    // Magic, version 2.4, thiszone, sigfigs, snaplen, link type.
    let mut b = 0xa1b2_c3d4u32.to_le_bytes().to_vec();
    b.extend_from_slice(&[2, 0, 4, 0]);
    for v in [0u32, 0, 65535, 101] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    for (i, p) in packets.iter().enumerate() {
        let n = u32::try_from(p.len()).unwrap();
        for v in [1_700_000_000 + u32::try_from(i).unwrap(), 0, n, n] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(p);
    }
    std::fs::write(&path, b).unwrap();
    path
}

#[test]
fn our_signalling_is_read_by_tshark_and_scapy() {
    let mut caps = visit(false);
    caps.extend(visit(true));
    let Some(mut peer) = Peer::start() else {
        return;
    };
    let mut requests: Vec<Value> = caps
        .iter()
        .map(|c| json!({"op": "open", "hex": hex::encode(&c.wire), "sa": peer_sa(c.sa.0, c.sa.1)}))
        .collect();
    let mut sas: Vec<(&str, u32)> = caps.iter().map(|c| c.sa).collect();
    sas.sort_unstable();
    sas.dedup();
    let sas: Vec<Value> = sas.iter().map(|(p, s)| peer_sa(p, *s)).collect();
    requests.push(json!({
        "op": "tshark",
        "sa": sas[0],
        "more_sas": sas[1..],
        "decode_as": ["udp.port==4191,ipv6"],
        "packets": caps.iter().map(|c| json!({"hex": hex::encode(&c.wire)})).collect::<Vec<_>>(),
        "fields": TSHARK_FIELDS,
    }));
    let answers = peer.ask(&requests);
    let pcap = write_pcap(
        "mobility_interop_ours.pcap",
        &caps.iter().map(|c| &c.wire[..]).collect::<Vec<_>>(),
    );
    let tshark = &answers[caps.len()];
    assert_eq!(
        tshark["unsupported_sas"],
        json!({}),
        "every signalling SA is AES-GCM"
    );
    let mut by_scapy = 0;
    let mut by_tshark = 0;
    for (i, c) in caps.iter().enumerate() {
        by_scapy += opens(&answers[i], c);
        by_tshark += reads(&tshark["packets"][i], c);
    }
    eprintln!(
        "{} packets ({}): scapy confirmed {by_scapy} fields, tshark {by_tshark} fields and {} ICVs",
        caps.len(),
        pcap.display(),
        caps.len()
    );
}

// ---------------------------------------------------------------------
// 2. Scapy's Binding Updates, accepted by our home agent
// ---------------------------------------------------------------------

/// A BU in mh_peer.py's notation: A and H set, lifetime in 4 s units.
fn bu_msg(seq: u16, lifetime: u16, options: Value) -> Value {
    json!({"type": 5, "seq": seq, "a": true, "h": true, "l": false, "k": false,
           "f": false, "lifetime": lifetime, "options": options})
}

fn seal(
    msg: Value,
    esp_seq: u32,
    coa6: Option<&str>,
    outer4: Option<(&str, u16)>,
    bad: bool,
) -> Value {
    json!({
        "op": "seal_bu", "home": HOA, "ha": HA, "msg": msg,
        "sa": peer_sa("dsmip-hostwide-mn.json", 0x2001), "seq": esp_seq,
        "coa6": coa6,
        "outer4": outer4.map(|(src, sport)| json!({"src": src, "dst": HA4, "sport": sport, "dport": 4191})),
        "bad_cksum": bad,
    })
}

#[test]
fn scapy_binding_updates_are_accepted_by_our_home_agent() {
    let Some(mut peer) = Peer::start() else {
        return;
    };
    let v4_opts = |coa: &str| json!([{"t": 32, "addr": coa}, {"t": 29, "plen": 0, "p": false, "addr": "0.0.0.0"}]);
    let built = peer.ask(&[
        // IPv6 care-of address: HAO and Alternate Care-of Address.
        seal(
            bu_msg(100, 100, json!([{"t": 3, "addr": COA6}])),
            1,
            Some(COA6),
            None,
            false,
        ),
        // The same node again with an older sequence number.
        seal(
            bu_msg(99, 100, json!([{"t": 3, "addr": COA6}])),
            2,
            Some(COA6),
            None,
            false,
        ),
        // And with a bad MH checksum.
        seal(
            bu_msg(101, 100, json!([{"t": 3, "addr": COA6}])),
            3,
            Some(COA6),
            None,
            true,
        ),
        // IPv4 care-of address behind a NAT (lifetime above the HA's 600 s).
        seal(
            bu_msg(7, 200, v4_opts(COA4_NAT_INSIDE)),
            1,
            None,
            Some((NAT_PUBLIC, NAT_PORT)),
            false,
        ),
        // Public IPv4 care-of address, no NAT.
        seal(
            bu_msg(7, 100, v4_opts(COA4)),
            1,
            None,
            Some((COA4, 4191)),
            false,
        ),
    ]);
    let wire = |i: usize| hex::decode(built[i]["hex"].as_str().unwrap()).unwrap();
    let mut bas: Vec<(String, Vec<u8>, Value)> = Vec::new();

    // IPv6: accepted, binding to the care-of address, BA with RH2.
    let mut ha6 = home_agent();
    let (o, sent) = run(&mut ha6, Side::Network, &wire(0));
    assert_eq!(o, Outcome::MobilityConsumed);
    let b = ha(&ha6).bindings().get(&v6(HOA)).unwrap().clone();
    assert_eq!(b.care_of.to_string(), COA6);
    assert_eq!(b.seq, 100);
    assert!(!b.nat);
    bas.push((
        "BA to scapy's IPv6 BU".into(),
        only(sent, Side::Network),
        json!({"outer4": null, "src": HA, "dst": COA6, "rh2": HOA, "status": 0, "seq": 100,
               "lifetime": 100, "options": []}),
    ));
    // Stale sequence number: status 135 with the last accepted number.
    let (o, sent) = run(&mut ha6, Side::Network, &wire(1));
    assert_eq!(o, Outcome::MobilityConsumed);
    assert_eq!(ha(&ha6).bindings().get(&v6(HOA)).unwrap().seq, 100);
    bas.push((
        "BA to scapy's stale BU".into(),
        only(sent, Side::Network),
        json!({"outer4": null, "src": HA, "dst": COA6, "rh2": HOA, "status": 135, "seq": 100,
               "lifetime": 0, "options": []}),
    ));
    // Bad checksum: dropped and counted, no answer.
    let (o, sent) = run(&mut ha6, Side::Network, &wire(2));
    assert_eq!(o, Outcome::MobilityDrop(MobilityDrop::MhBadChecksum));
    assert!(sent.is_empty());
    let c = ha(&ha6).counters();
    assert_eq!(c.drops(MobilityDrop::MhBadChecksum), 1);
    assert_eq!(MobilityDrop::MhBadChecksum.name(), "mh_bad_checksum");
    assert_eq!(c.events(MobilityEvent::BuAccepted), 1);
    assert_eq!(c.events(MobilityEvent::BuRejected), 1);
    assert_eq!(ha(&ha6).bindings().get(&v6(HOA)).unwrap().seq, 100);

    // IPv4 behind a NAT: the outer source is not the IPv4 CoA option.
    let mut ha_nat = home_agent();
    let (o, sent) = run(&mut ha_nat, Side::Network, &wire(3));
    assert_eq!(o, Outcome::MobilityConsumed);
    let h = ha(&ha_nat);
    assert_eq!(h.counters().events(MobilityEvent::NatDetected), 1);
    let b = h.bindings().get(&v6(HOA)).unwrap();
    assert!(b.nat);
    assert_eq!(
        b.care_of.to_string(),
        "198.51.100.20 udp 203.0.113.99:40001"
    );
    assert_eq!(b.home_v4, Some(v4(HOA4)));
    assert_eq!(b.lifetime, Duration::from_secs(600));
    bas.push((
        "BA to scapy's IPv4 BU through a NAT".into(),
        only(sent, Side::Network),
        json!({"outer4": {"src": HA4, "dst": NAT_PUBLIC, "sport": 4191, "dport": NAT_PORT},
               "src": HA, "dst": HOA, "rh2": null, "status": 0, "seq": 7, "lifetime": 150,
               "options": [{"t": 30, "status": 0, "plen": 24, "addr": HOA4},
                           {"t": 31, "f": false, "refresh": 110}]}),
    ));

    // Public IPv4: no NAT, no NAT Detection option.
    let mut ha4 = home_agent();
    let (o, sent) = run(&mut ha4, Side::Network, &wire(4));
    assert_eq!(o, Outcome::MobilityConsumed);
    let h = ha(&ha4);
    assert_eq!(h.counters().events(MobilityEvent::NatDetected), 0);
    let b = h.bindings().get(&v6(HOA)).unwrap();
    assert!(!b.nat);
    assert_eq!(b.care_of.to_string(), COA4);
    assert_eq!(b.home_v4, Some(v4(HOA4)));
    bas.push((
        "BA to scapy's IPv4 BU without a NAT".into(),
        only(sent, Side::Network),
        json!({"outer4": {"src": HA4, "dst": COA4, "sport": 4191, "dport": 4191},
               "src": HA, "dst": HOA, "rh2": null, "status": 0, "seq": 7, "lifetime": 100,
               "options": [{"t": 30, "status": 0, "plen": 24, "addr": HOA4}]}),
    ));

    // Scapy opens each BA with the BA SA; tshark reads them too.
    let sa = peer_sa("dsmip-hostwide-mn.json", 0x2002);
    let mut requests: Vec<Value> = bas
        .iter()
        .map(|(_, w, _)| json!({"op": "open", "hex": hex::encode(w), "sa": sa}))
        .collect();
    requests.push(json!({
        "op": "tshark", "sa": sa, "decode_as": ["udp.port==4191,ipv6"],
        "packets": bas.iter().map(|(_, w, _)| json!({"hex": hex::encode(w)})).collect::<Vec<_>>(),
        "fields": TSHARK_FIELDS,
    }));
    let answers = peer.ask(&requests);
    let tshark = &answers[bas.len()];
    for (i, (what, _, want)) in bas.iter().enumerate() {
        let a = &answers[i];
        assert_eq!(a["esp"]["ok"], json!(true), "{what}: {a}");
        assert_eq!(a["esp"]["spi"], json!(0x2002), "{what}");
        match want["outer4"].as_object() {
            Some(o) => {
                for k in ["src", "dst", "sport", "dport"] {
                    assert_eq!(a["outer4"][k], o[k], "{what}: outer {k}");
                }
                assert_eq!(a["outer4"]["udp_cksum_ok"], json!(true), "{what}");
            }
            None => assert_eq!(a["outer4"], Value::Null, "{what}"),
        }
        assert_eq!(a["ipv6"]["src"], want["src"], "{what}");
        assert_eq!(a["ipv6"]["dst"], want["dst"], "{what}");
        assert_eq!(a["ipv6"]["rh2"], want["rh2"], "{what}");
        let m = &a["mh"];
        assert_eq!(m["cksum_rfc_ok"], json!(true), "{what}");
        assert_eq!(
            m["msg"],
            json!({"type": 6, "status": want["status"], "k": false, "seq": want["seq"],
                   "lifetime": want["lifetime"], "options": want["options"]}),
            "{what}"
        );
        let t = &tshark["packets"][i];
        assert_eq!(t["icv_good"], json!(true), "{what}: tshark: {t}");
        let fv = &t["fields"];
        assert_eq!(
            fv["mip6.ba.status"],
            json!([want["status"].to_string()]),
            "{what}"
        );
        assert_eq!(
            fv["mip6.ba.seqnr"],
            json!([want["seq"].to_string()]),
            "{what}"
        );
        assert_eq!(
            fv["mip6.ba.lifetime"],
            json!([want["lifetime"].to_string()]),
            "{what}"
        );
        let natd = want["options"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["t"] == 31);
        assert_eq!(
            fv["mip6.natd.refresh_t"].as_array().unwrap().len(),
            usize::from(natd),
            "{what}"
        );
    }
    eprintln!(
        "our home agent accepted scapy's BUs over IPv6, IPv4 and IPv4 behind a NAT, refused a \
         stale one (135) and dropped one with a bad checksum; scapy and tshark checked {} BAs",
        bas.len()
    );
}

// ---------------------------------------------------------------------
// 3. Binding Errors and Binding Refresh Requests, both ways
// ---------------------------------------------------------------------

/// RFC 6275 9.3.1, 9.3.3 and 11.3.6, with scapy on the other end: the
/// Binding Error our home agent sends (status 1, in clear, to the care-of
/// address the offending packet came from, about the home address of its
/// Home Address option) is read by scapy as such, checksum included; a
/// Binding Error scapy builds from the home agent's address makes our
/// registered mobile node register again (never reaching the host), and
/// the same from a correspondent is ignored and counted.
#[test]
fn scapy_reads_our_binding_error_and_ours_takes_scapys() {
    let mut ha_gw = home_agent();
    let mut mn_gw = mobile_node();
    mn(&mut mn_gw).handle_move(Attachment::V6(v6(COA6)), true, T0);
    let bu = only(poll(&mut mn_gw), Side::Network);
    let (_, out) = run(&mut ha_gw, Side::Network, &bu);
    let ba = only(out, Side::Network);
    let (o, _) = run(&mut mn_gw, Side::Network, &ba);
    assert_eq!(o, Outcome::MobilityConsumed);
    // A home agent that lost its binding (restarted) meets a packet with
    // a Home Address option from the care-of address.
    let mut fresh_ha = home_agent();
    let mut probe = PacketBuf::from_slice(&bitsgw_wire::craft::udp_packet(
        v6(HOA).into(),
        v6(HA).into(),
        5000,
        6000,
        10,
    ));
    bitsgw_wire::mip6::insert_home_address_option(&mut probe, v6(HOA)).unwrap();
    probe.data_mut()[8..24].copy_from_slice(&v6(COA6));
    let (o, out) = run(&mut fresh_ha, Side::Network, probe.data());
    assert_eq!(o, Outcome::MobilityDrop(MobilityDrop::HaoWithoutBinding));
    let be = only(out, Side::Network);
    assert_eq!(ha(&fresh_ha).counters().events(MobilityEvent::BeSent), 1);
    let Some(mut peer) = Peer::start() else {
        return;
    };
    let be_msg = |home: &str| json!({"type": 7, "status": 1, "home": home, "options": []});
    let answers = peer.ask(&[
        json!({"op": "dissect_mh", "hex": hex::encode(&be)}),
        json!({"op": "dissect_ext", "hex": hex::encode(&be)}),
        json!({"op": "build_mh", "src": CN, "dst": COA6, "msg": be_msg(HOA)}),
        json!({"op": "build_mh", "src": HA, "dst": COA6, "msg": be_msg(HOA)}),
    ]);
    assert_eq!(answers[0]["msg"], be_msg(HOA), "scapy's reading");
    assert_eq!(answers[0]["cksum_ok"], json!(true));
    assert_eq!(answers[1]["src"], json!(HA));
    assert_eq!(answers[1]["dst"], json!(COA6));
    assert_eq!(answers[1]["chain"], json!([135]), "in clear");
    let from_cn = hex::decode(answers[2]["hex"].as_str().unwrap()).unwrap();
    let (o, out) = run(&mut mn_gw, Side::Network, &from_cn);
    assert_eq!(
        o,
        Outcome::MobilityDrop(MobilityDrop::NoBindingUpdateListEntry)
    );
    assert!(out.is_empty());
    let from_ha = hex::decode(answers[3]["hex"].as_str().unwrap()).unwrap();
    let (o, out) = run(&mut mn_gw, Side::Network, &from_ha);
    assert_eq!(o, Outcome::MobilityConsumed);
    let again = only(out, Side::Network);
    // (Its BA is not carried back: the restarted home agent's static-key
    // SA starts its sequence numbers again, which the node's replay
    // window rightly refuses.)
    let (o, _) = run(&mut fresh_ha, Side::Network, &again);
    assert_eq!(o, Outcome::MobilityConsumed);
    assert_eq!(
        ha(&fresh_ha)
            .bindings()
            .get(&v6(HOA))
            .unwrap()
            .care_of
            .to_string(),
        COA6
    );
    let m = mn(&mut mn_gw);
    assert!(std::iter::from_fn(|| m.poll_event()).any(|e| e == MnEvent::BindingError { status: 1 }));
}
