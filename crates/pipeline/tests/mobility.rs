//! The mobility stage around an unmodified IPsec stage, end to end in
//! memory: a home agent appliance and a mobile node appliance (each a
//! [`Gateway`] with the seed's host-wide policies), a correspondent on the
//! home link, and a simulated Internet between them with an IPv6 network, a
//! public IPv4 network and an IPv4 network behind a NAT.
//!
//! The named `seed_*` and `rfc3776_*` tests assert the exact header stack
//! at each processing step of the seeds (draft-laganier-mext-dsmipv6-ipsec
//! section "Processing Steps within a Node"; the RFC 3776 draft, section
//! 6). Steps that happen inside one stage (IPsec's own selector check) are
//! asserted through the stages' counters.
#![allow(clippy::unwrap_used)]

mod common;

use bitsgw_ipsec::{IpsecStage, StageConfig};
use bitsgw_mobility::counters::{MobilityDrop, MobilityEvent};
use bitsgw_mobility::ha::{HaConfig, HomeAgent, ServedNode, DEFAULT_NAT_REFRESH};
use bitsgw_mobility::mn::{Attachment, MnConfig, MnEvent, MobileNode};
use bitsgw_pipeline::{Gateway, LinkType, Mobility, NoTap, Outcome, Side};
use bitsgw_wire::{PacketBuf, Timestamp};
use core::time::Duration;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

const HOA: &str = "2001:db8:1::100";
const HA: &str = "2001:db8:1::1";
const HA4: &str = "203.0.113.1";
const CN: &str = "2001:db8:1::77";
const CN4: &str = "192.0.2.77";
const HOA4: &str = "192.0.2.100";
const COA6: &str = "2001:db8:2::100";
const COA6B: &str = "2001:db8:3::100";
const COA4: &str = "203.0.113.20";
const COA4_NAT_INSIDE: &str = "198.51.100.20";
const NAT_PUBLIC: &str = "203.0.113.99";

fn v6(s: &str) -> [u8; 16] {
    s.parse::<Ipv6Addr>().unwrap().octets()
}

fn v4(s: &str) -> [u8; 4] {
    s.parse::<Ipv4Addr>().unwrap().octets()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn stage(name: &str) -> IpsecStage {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../policies")
        .join(name);
    let set = common::policy_file(&path);
    let mut stage = IpsecStage::new(StageConfig::default());
    set.apply(&mut stage, Timestamp::ZERO).unwrap();
    stage
}

fn home_agent(force_udp: bool) -> Gateway {
    home_agent_with("dsmip-hostwide-ha.json", force_udp)
}

fn home_agent_with(policy: &str, force_udp: bool) -> Gateway {
    let mut gw = Gateway::new(stage(policy));
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
        force_udp,
        key_management_mobility: false,
    })));
    gw
}

fn mobile_node() -> Gateway {
    mobile_node_with("dsmip-hostwide-mn.json")
}

fn mobile_node_with(policy: &str) -> Gateway {
    let mut gw = Gateway::new(stage(policy));
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
fn run(
    gw: &mut Gateway,
    from: Side,
    pkt: &[u8],
    now: Timestamp,
) -> (Outcome, Vec<(Side, Vec<u8>)>) {
    let mut out = Vec::new();
    let mut buf = PacketBuf::from_slice(pkt);
    let o = gw.handle_frame(
        from,
        LinkType::RawIp,
        &mut buf,
        now,
        &mut |side, f| out.push((side, f.to_vec())),
        &mut NoTap,
    );
    (o, out)
}

/// What the gateway's mobility stage sends of its own accord.
fn poll(gw: &mut Gateway, now: Timestamp) -> Vec<(Side, Vec<u8>)> {
    let mut out = Vec::new();
    gw.handle_timeout(now);
    gw.poll_endpoints(now, &mut |side, f| out.push((side, f.to_vec())), &mut NoTap);
    out
}

fn only(out: Vec<(Side, Vec<u8>)>, side: Side) -> Vec<u8> {
    assert_eq!(out.len(), 1, "one packet expected, got {}", out.len());
    assert_eq!(out[0].0, side);
    out.into_iter().next().unwrap().1
}

// ---------------------------------------------------------------------
// Header stacks
// ---------------------------------------------------------------------

fn a6(b: &[u8]) -> String {
    Ipv6Addr::from(<[u8; 16]>::try_from(b).unwrap()).to_string()
}

fn a4(b: &[u8]) -> String {
    Ipv4Addr::from(<[u8; 4]>::try_from(b).unwrap()).to_string()
}

fn mh_name(t: u8) -> String {
    ["BRR", "HoTI", "CoTI", "HoT", "CoT", "BU", "BA", "BE"]
        .get(usize::from(t))
        .map_or(format!("MH type {t}"), |s| (*s).to_string())
}

/// The header stack of a packet, one line per header, as the seeds draw
/// them: `IPv6 src -> dst`, `HAO home`, `RH2 home`, `ESP spi`, `UDP s -> d`,
/// `MH BU` (with its options), `ICMPv6 t`.
fn stack(pkt: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    stack_into(pkt, &mut out);
    out
}

fn stack_into(pkt: &[u8], out: &mut Vec<String>) {
    match pkt[0] >> 4 {
        4 => {
            let ihl = usize::from(pkt[0] & 15) * 4;
            out.push(format!("IPv4 {} -> {}", a4(&pkt[12..16]), a4(&pkt[16..20])));
            let body = &pkt[ihl..];
            match pkt[9] {
                17 => {
                    let (s, d) = (
                        u16::from_be_bytes([body[0], body[1]]),
                        u16::from_be_bytes([body[2], body[3]]),
                    );
                    out.push(format!("UDP {s} -> {d}"));
                    stack_into(&body[8..], out);
                }
                41 | 4 => stack_into(body, out),
                p => out.push(format!("proto {p}")),
            }
        }
        6 => {
            out.push(format!("IPv6 {} -> {}", a6(&pkt[8..24]), a6(&pkt[24..40])));
            let mut next = pkt[6];
            let mut at = 40;
            loop {
                let h = &pkt[at..];
                match next {
                    60 => {
                        let len = (usize::from(h[1]) + 1) * 8;
                        let mut o = 2;
                        while o < len {
                            match h[o] {
                                0 => o += 1,
                                201 => {
                                    out.push(format!("DestOpt HAO {}", a6(&h[o + 2..o + 18])));
                                    o += 18;
                                }
                                _ => o += 2 + usize::from(h[o + 1]),
                            }
                        }
                        next = h[0];
                        at += len;
                    }
                    43 => {
                        assert_eq!(h[2], 2, "routing type 2");
                        out.push(format!("RH2 {} (segments left {})", a6(&h[8..24]), h[3]));
                        next = h[0];
                        at += (usize::from(h[1]) + 1) * 8;
                    }
                    50 => {
                        out.push(format!(
                            "ESP spi 0x{:08x}",
                            u32::from_be_bytes(h[..4].try_into().unwrap())
                        ));
                        return;
                    }
                    135 => {
                        let p = bitsgw_wire::mh::MhPacket::new_checked(h).unwrap();
                        let r = bitsgw_wire::mh::MhRepr::parse(&p).unwrap();
                        let mut s = format!("MH {}", mh_name(p.mh_type()));
                        for o in r.options() {
                            use bitsgw_wire::mh::MhOption::*;
                            match o {
                                AlternateCareOf(a) => s += &format!(" [AltCoA {}]", a6(&a)),
                                Ipv4CareOf(a) => s += &format!(" [IPv4 CoA {}]", a4(&a)),
                                Ipv4HomeAddress { addr, .. } => {
                                    s += &format!(" [IPv4 HoA {}]", a4(&addr))
                                }
                                Ipv4AddressAck { status, addr, .. } => {
                                    s += &format!(" [IPv4 Ack {status} {}]", a4(&addr))
                                }
                                NatDetection {
                                    udp_forced,
                                    refresh_time,
                                } => {
                                    s += &format!(
                                        " [NAT Detection F={udp_forced} refresh {refresh_time}]"
                                    )
                                }
                                _ => {}
                            }
                        }
                        out.push(s);
                        return;
                    }
                    58 => {
                        out.push(format!("ICMPv6 {}", h[0]));
                        return;
                    }
                    41 | 4 => return stack_into(h, out),
                    17 => {
                        out.push("UDP".into());
                        return;
                    }
                    p => {
                        out.push(format!("proto {p}"));
                        return;
                    }
                }
            }
        }
        v => out.push(format!("version {v}")),
    }
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| (*x).to_string()).collect()
}

/// The header stack of a Binding Update from COA6 under the SA `spi`
/// (RFC 3776 6.1 step 5: care-of address as source, HAO).
fn bu_from_coa6(spi: u32) -> Vec<String> {
    vec![
        format!("IPv6 {COA6} -> {HA}"),
        format!("DestOpt HAO {HOA}"),
        format!("ESP spi 0x{spi:08x}"),
    ]
}

/// The header stack of a Binding Acknowledgement to COA6 under the SA
/// `spi` (RFC 3776 6.3 step 5: type 2 routing header).
fn ba_to_coa6(spi: u32) -> Vec<String> {
    vec![
        format!("IPv6 {HA} -> {COA6}"),
        format!("RH2 {HOA} (segments left 1)"),
        format!("ESP spi 0x{spi:08x}"),
    ]
}

// ---------------------------------------------------------------------
// The simulated Internet
// ---------------------------------------------------------------------

/// Where the mobile node is attached, and the NAT's state.
struct Net {
    ha: Gateway,
    mn: Gateway,
    now: Timestamp,
    /// Networks the mobile node is reachable on (make-before-break keeps
    /// two), by its address on them.
    mn_at: Vec<String>,
    /// NAT mapping: inside port -> public port.
    nat_port: u16,
    /// Packets delivered to the correspondent (home link) and to the
    /// mobile host.
    to_cn: Vec<Vec<u8>>,
    to_host: Vec<Vec<u8>>,
    /// Network packets nobody took (lost).
    lost: Vec<Vec<u8>>,
}

fn udp(src: &str, dst: &str, n: usize) -> Vec<u8> {
    bitsgw_wire::craft::udp_packet(ip(src), ip(dst), 5000, 6000, n)
}

impl Net {
    fn new() -> Net {
        Net {
            ha: home_agent(false),
            mn: mobile_node(),
            now: Timestamp::from_secs(1),
            mn_at: vec![],
            nat_port: 40001,
            to_cn: vec![],
            to_host: vec![],
            lost: vec![],
        }
    }

    fn tick(&mut self, ms: u64) {
        self.now = Timestamp(self.now.0 + ms * 1_000_000);
    }

    /// Carries packets between the two appliances until nothing moves.
    fn settle(&mut self, mut from_mn: Vec<(Side, Vec<u8>)>, mut from_ha: Vec<(Side, Vec<u8>)>) {
        for _ in 0..20 {
            if from_mn.is_empty() && from_ha.is_empty() {
                return;
            }
            let mut next_mn = Vec::new();
            let mut next_ha = Vec::new();
            for (side, p) in from_mn.drain(..) {
                match side {
                    Side::Host => self.to_host.push(p),
                    Side::Network => {
                        if let Some(p) = self.mn_to_internet(p) {
                            next_ha.extend(run(&mut self.ha, Side::Network, &p, self.now).1);
                        }
                    }
                }
            }
            for (side, p) in from_ha.drain(..) {
                match side {
                    Side::Host => self.to_cn.push(p),
                    Side::Network => {
                        if let Some(p) = self.internet_to_mn(p) {
                            next_mn.extend(run(&mut self.mn, Side::Network, &p, self.now).1);
                        }
                    }
                }
            }
            from_mn = next_mn;
            from_ha = next_ha;
        }
        panic!("packets still moving after 20 rounds");
    }

    /// A packet from the mobile node's network port into the Internet:
    /// the NAT translates the inside network's UDP; a source the node is
    /// not attached with goes nowhere.
    fn mn_to_internet(&mut self, mut p: Vec<u8>) -> Option<Vec<u8>> {
        let src = if p[0] >> 4 == 4 {
            a4(&p[12..16])
        } else {
            a6(&p[8..24])
        };
        if !self.mn_at.contains(&src) && src != HOA {
            self.lost.push(p);
            return None;
        }
        if src == COA4_NAT_INSIDE {
            if p[9] != 17 {
                // Only UDP gets through this NAT.
                self.lost.push(p);
                return None;
            }
            p[12..16].copy_from_slice(&v4(NAT_PUBLIC));
            p[20..22].copy_from_slice(&self.nat_port.to_be_bytes());
            p[10] = 0;
            p[11] = 0;
            bitsgw_wire::ip::ipv4_fill_checksum(&mut p);
        }
        Some(p)
    }

    fn internet_to_mn(&mut self, mut p: Vec<u8>) -> Option<Vec<u8>> {
        let dst = if p[0] >> 4 == 4 {
            a4(&p[16..20])
        } else {
            a6(&p[24..40])
        };
        if dst == NAT_PUBLIC && self.mn_at.iter().any(|a| a == COA4_NAT_INSIDE) {
            let port = u16::from_be_bytes([p[22], p[23]]);
            if p[9] != 17 || port != self.nat_port {
                self.lost.push(p);
                return None;
            }
            p[16..20].copy_from_slice(&v4(COA4_NAT_INSIDE));
            p[22..24].copy_from_slice(&4191u16.to_be_bytes());
            p[10] = 0;
            p[11] = 0;
            bitsgw_wire::ip::ipv4_fill_checksum(&mut p);
            return Some(p);
        }
        let home = dst == HOA && self.mn_at.is_empty();
        if self.mn_at.contains(&dst) || home {
            return Some(p);
        }
        self.lost.push(p);
        None
    }

    fn mn_sends_data(&mut self, n: usize) {
        for _ in 0..n {
            let (_, out) = run(&mut self.mn, Side::Host, &udp(HOA, CN, 100), self.now);
            self.settle(out, vec![]);
        }
    }

    fn cn_sends_data(&mut self, n: usize) {
        for _ in 0..n {
            let (_, out) = run(&mut self.ha, Side::Host, &udp(CN, HOA, 100), self.now);
            self.settle(vec![], out);
        }
    }

    /// The mobile node moves; returns the packets its move sent (the BU),
    /// not yet carried.
    fn move_to(
        &mut self,
        at: Attachment,
        addr: Option<&str>,
        keep_old: bool,
    ) -> Vec<(Side, Vec<u8>)> {
        if !keep_old {
            self.mn_at.clear();
        }
        match addr {
            Some(a) => self.mn_at.push(a.to_string()),
            None => self.mn_at.clear(),
        }
        let now = self.now;
        mn(&mut self.mn).handle_move(at, keep_old, now);
        poll(&mut self.mn, now)
    }

    fn events(&mut self) -> Vec<MnEvent> {
        let m = mn(&mut self.mn);
        std::iter::from_fn(|| m.poll_event()).collect()
    }
}

// ---------------------------------------------------------------------
// RFC 3776 draft, section 6: over IPv6
// ---------------------------------------------------------------------

/// RFC 3776 6.1 (BU to the HA) and 6.2 (BU from the MN), 6.3 and 6.4 (the
/// BA), over an IPv6 care-of address.
#[test]
fn rfc3776_6_1_to_6_4_binding_update_and_ack_over_ipv6() {
    let mut net = Net::new();
    // 6.1 step 1: the protocol module's BU, before IPsec.
    let out = net.move_to(Attachment::V6(v6(COA6)), Some(COA6), true);
    // 6.1 step 5: after IPsec (SPI of the BU SA) the tunnel stage put the
    // care-of address in the source and the home address in a HAO.
    let bu = only(out, Side::Network);
    assert_eq!(stack(&bu), bu_from_coa6(0x2001));
    // 6.2: at the HA the HAO is processed first (step 2), then ESP (step
    // 3), the selectors are checked (step 4) and the BU is delivered to the
    // protocol module (step 5), which answers.
    let (o, out) = run(&mut net.ha, Side::Network, &bu, net.now);
    assert_eq!(o, Outcome::MobilityConsumed);
    assert_eq!(ha(&net.ha).counters().events(MobilityEvent::BuAccepted), 1);
    let b = ha(&net.ha).bindings().get(&v6(HOA)).unwrap().clone();
    assert_eq!(b.care_of.to_string(), COA6);
    // 6.3 step 5: BA with a type 2 routing header to the care-of address.
    let ba = only(out, Side::Network);
    assert_eq!(stack(&ba), ba_to_coa6(0x2002));
    // 6.4: the MN processes the routing header (step 2), ESP (step 3), the
    // selectors (step 4) and gives the BA to its protocol module (step 5).
    let (o, out) = run(&mut net.mn, Side::Network, &ba, net.now);
    assert_eq!(o, Outcome::MobilityConsumed);
    assert!(out.is_empty());
    assert_eq!(mn(&mut net.mn).registered(), Some(Attachment::V6(v6(COA6))));
    let ev = net.events();
    assert!(
        ev.iter()
            .any(|e| matches!(e, MnEvent::Registered { nat: false, .. })),
        "{ev:?}"
    );
}

/// RFC 3776 6.13 to 6.16 (payload both ways, tunnel mode, re-addressed
/// outer header) and 6.5 to 6.8 (HoTI/HoT travel the same way).
#[test]
fn rfc3776_6_5_to_6_16_payload_and_return_routability_over_ipv6() {
    let mut net = Net::new();
    let bu = net.move_to(Attachment::V6(v6(COA6)), Some(COA6), true);
    net.settle(bu, vec![]);
    // 6.13/6.14: payload to the HA: outer source is the care-of address.
    let (_, out) = run(&mut net.mn, Side::Host, &udp(HOA, CN, 100), net.now);
    let p = only(out, Side::Network);
    assert_eq!(
        stack(&p),
        s(&[
            "IPv6 2001:db8:2::100 -> 2001:db8:1::1",
            "ESP spi 0x00002007"
        ])
    );
    let (o, out) = run(&mut net.ha, Side::Network, &p, net.now);
    assert_eq!(o.ipsec(), Some(bitsgw_ipsec::Disposition::Deliver));
    assert_eq!(only(out, Side::Host), udp(HOA, CN, 100));
    // 6.15/6.16: payload to the MN: outer destination is the care-of
    // address (Req #1: the SA still says the home address).
    let (_, out) = run(&mut net.ha, Side::Host, &udp(CN, HOA, 100), net.now);
    let p = only(out, Side::Network);
    assert_eq!(
        stack(&p),
        s(&[
            "IPv6 2001:db8:1::1 -> 2001:db8:2::100",
            "ESP spi 0x00002008"
        ])
    );
    let (_, out) = run(&mut net.mn, Side::Network, &p, net.now);
    assert_eq!(only(out, Side::Host), udp(CN, HOA, 100));
    // 6.5/6.6: HoTI in the tunnel to the HA, which forwards it to the CN.
    let hoti = bitsgw_wire::craft::mh_packet(ip(HOA), ip(CN), bitsgw_wire::mh::mh_type::HOTI);
    let (_, out) = run(&mut net.mn, Side::Host, &hoti, net.now);
    let p = only(out, Side::Network);
    assert_eq!(
        stack(&p),
        s(&[
            "IPv6 2001:db8:2::100 -> 2001:db8:1::1",
            "ESP spi 0x00002003"
        ])
    );
    let (_, out) = run(&mut net.ha, Side::Network, &p, net.now);
    assert_eq!(
        only(out, Side::Host),
        hoti,
        "6.6 step 4: forwarded to the CN"
    );
    // 6.7/6.8: HoT from the CN, tunnelled to the care-of address.
    let hot = bitsgw_wire::craft::mh_packet(ip(CN), ip(HOA), bitsgw_wire::mh::mh_type::HOT);
    let (_, out) = run(&mut net.ha, Side::Host, &hot, net.now);
    let p = only(out, Side::Network);
    assert_eq!(
        stack(&p),
        s(&[
            "IPv6 2001:db8:1::1 -> 2001:db8:2::100",
            "ESP spi 0x00002004"
        ])
    );
    let (_, out) = run(&mut net.mn, Side::Network, &p, net.now);
    assert_eq!(only(out, Side::Host), hot, "6.8 step 4: to the host");
}

// ---------------------------------------------------------------------
// The seed draft's processing steps: over IPv4, through a NAT
// ---------------------------------------------------------------------

/// "MN sends Binding Update to the Home Agent over IPv4" (steps 1 to 4),
/// "Binding Update from the Mobile Node over IPv4" (steps 1 to 6, NAT
/// detection by the SPI's selectors before IPsec: Req #4), "Binding
/// Acknowledgement to the Mobile Node over IPv4" (steps 1 to 4) and
/// "Binding Acknowledgement from the Home Agent over IPv4" (steps 1 to 6).
#[test]
fn seed_binding_update_and_ack_over_ipv4_behind_a_nat() {
    let mut net = Net::new();
    let out = net.move_to(
        Attachment::V4(v4(COA4_NAT_INSIDE)),
        Some(COA4_NAT_INSIDE),
        false,
    );
    // MN step 4: IPv4 (coa_4 -> ha_4), UDP (mn_port -> 4191), IPv6 (hoa_6
    // -> ha_6), ESP (spi_a).
    let bu = only(out, Side::Network);
    assert_eq!(
        stack(&bu),
        s(&[
            "IPv4 198.51.100.20 -> 203.0.113.1",
            "UDP 4191 -> 4191",
            "IPv6 2001:db8:1::100 -> 2001:db8:1::1",
            "ESP spi 0x00002001",
        ])
    );
    // HA step 1: through the NAT, the outer source is nat_4:nat_port.
    let bu = net.mn_to_internet(bu).unwrap();
    assert_eq!(stack(&bu)[0], "IPv4 203.0.113.99 -> 203.0.113.1");
    assert_eq!(stack(&bu)[1], "UDP 40001 -> 4191");
    // Steps 2 to 6: decapsulated with a note of nat_4:nat_port, decrypted,
    // checked, and compared with the IPv4 CoA option: a NAT.
    let (o, out) = run(&mut net.ha, Side::Network, &bu, net.now);
    assert_eq!(o, Outcome::MobilityConsumed);
    let h = ha(&net.ha);
    assert_eq!(h.counters().events(MobilityEvent::NatDetected), 1);
    let b = h.bindings().get(&v6(HOA)).unwrap();
    assert!(b.nat);
    assert_eq!(
        b.care_of.to_string(),
        "198.51.100.20 udp 203.0.113.99:40001"
    );
    assert_eq!(b.home_v4, Some(v4(HOA4)));
    // BA step 4: IPv4 (ha_4 -> nat_4), UDP (4191 -> nat_port), IPv6 (ha_6
    // -> hoa_6), ESP (spi_b).
    let ba = only(out, Side::Network);
    assert_eq!(
        stack(&ba),
        s(&[
            "IPv4 203.0.113.1 -> 203.0.113.99",
            "UDP 4191 -> 40001",
            "IPv6 2001:db8:1::1 -> 2001:db8:1::100",
            "ESP spi 0x00002002",
        ])
    );
    // MN side: steps 1 to 6, the NAT Detection option tells of the NAT.
    let ba = net.internet_to_mn(ba).unwrap();
    let (o, _) = run(&mut net.mn, Side::Network, &ba, net.now);
    assert_eq!(o, Outcome::MobilityConsumed);
    let ev = net.events();
    assert!(
        ev.iter().any(|e| matches!(e, MnEvent::Registered { nat: true, home_v4: Some(a), .. } if *a == v4(HOA4))),
        "{ev:?}"
    );
    // From now on data goes in UDP both ways, through the NAT.
    let (_, out) = run(&mut net.mn, Side::Host, &udp(HOA, CN, 100), net.now);
    let p = only(out, Side::Network);
    assert_eq!(
        stack(&p),
        s(&[
            "IPv4 198.51.100.20 -> 203.0.113.1",
            "UDP 4191 -> 4191",
            "IPv6 2001:db8:1::100 -> 2001:db8:1::1",
            "ESP spi 0x00002007",
        ])
    );
    net.settle(vec![(Side::Network, p)], vec![]);
    assert_eq!(net.to_cn, vec![udp(HOA, CN, 100)]);
    net.cn_sends_data(1);
    assert_eq!(net.to_host, vec![udp(CN, HOA, 100)]);
    // IPv4 traffic of the IPv4 home address goes the same way.
    let (_, out) = run(&mut net.ha, Side::Host, &udp(CN4, HOA4, 60), net.now);
    net.settle(vec![], out);
    assert_eq!(net.to_host.last().unwrap(), &udp(CN4, HOA4, 60));
}

/// Public IPv4 without a NAT: the BU still comes in UDP, no NAT is seen,
/// and data is carried in IPv4 directly (RFC 5555 4.1).
#[test]
fn seed_public_ipv4_without_nat_uses_ip_in_ip_for_data() {
    let mut net = Net::new();
    let bu = net.move_to(Attachment::V4(v4(COA4)), Some(COA4), false);
    net.settle(bu, vec![]);
    assert!(!ha(&net.ha).bindings().get(&v6(HOA)).unwrap().nat);
    assert!(!mn(&mut net.mn).behind_nat());
    let (_, out) = run(&mut net.ha, Side::Host, &udp(CN, HOA, 100), net.now);
    let p = only(out, Side::Network);
    assert_eq!(
        stack(&p),
        s(&[
            "IPv4 203.0.113.1 -> 203.0.113.20",
            "IPv6 2001:db8:1::1 -> 2001:db8:1::100",
            "ESP spi 0x00002008",
        ])
    );
    net.settle(vec![], vec![(Side::Network, p)]);
    assert_eq!(net.to_host, vec![udp(CN, HOA, 100)]);
}

// ---------------------------------------------------------------------
// Req #3: make-before-break handover, and the whole journey
// ---------------------------------------------------------------------

/// Sends data both ways while the BU is in flight (before its BA arrives)
/// and returns how many of those data packets were lost.
fn handover(net: &mut Net, at: Attachment, addr: Option<&str>) -> (usize, usize) {
    let (cn0, host0, lost0) = (net.to_cn.len(), net.to_host.len(), net.lost.len());
    let bu = net.move_to(at, addr, true);
    assert_eq!(bu.len(), 1, "one BU");
    // The BU is on its way; data keeps flowing on the old path.
    net.mn_sends_data(5);
    net.cn_sends_data(5);
    net.tick(10);
    net.settle(bu, vec![]);
    net.tick(10);
    // And after the BA, on the new path.
    net.mn_sends_data(5);
    net.cn_sends_data(5);
    let delivered = (net.to_cn.len() - cn0) + (net.to_host.len() - host0);
    let _ = lost0;
    (20 - delivered, net.lost.len() - lost0)
}

/// The whole journey of the issue, in memory: IPv6 -> public IPv4 -> IPv4
/// behind a NAT -> NAT rebinding -> IPv6 -> home, data both ways
/// throughout, make-before-break: no data packet lost at any handover.
#[test]
fn journey_ipv6_ipv4_nat_rebinding_ipv6_home_loses_nothing() {
    let mut net = Net::new();
    let bu = net.move_to(Attachment::V6(v6(COA6)), Some(COA6), true);
    net.settle(bu, vec![]);
    assert_eq!(mn(&mut net.mn).registered(), Some(Attachment::V6(v6(COA6))));
    let mut report = Vec::new();
    for (name, at, addr) in [
        ("ipv4 public", Attachment::V4(v4(COA4)), Some(COA4)),
        (
            "ipv4 behind nat",
            Attachment::V4(v4(COA4_NAT_INSIDE)),
            Some(COA4_NAT_INSIDE),
        ),
        ("ipv6 again", Attachment::V6(v6(COA6B)), Some(COA6B)),
    ] {
        let (lost, _) = handover(&mut net, at, addr);
        assert_eq!(mn(&mut net.mn).registered(), Some(at), "{name}");
        report.push((name, lost));
        if name == "ipv4 behind nat" {
            assert!(mn(&mut net.mn).behind_nat());
            // NAT rebinding: the mapping changes; the MN's next refresh
            // (the NAT keepalive) brings the HA along.
            net.nat_port = 40777;
            let lost_before = net.lost.len();
            net.cn_sends_data(1);
            assert_eq!(net.lost.len(), lost_before + 1, "old mapping is gone");
            let now = net.now;
            mn(&mut net.mn).refresh(now);
            let bu = poll(&mut net.mn, now);
            net.settle(bu, vec![]);
            let b = ha(&net.ha).bindings().get(&v6(HOA)).unwrap();
            assert_eq!(
                b.care_of.to_string(),
                "198.51.100.20 udp 203.0.113.99:40777"
            );
            let host_before = net.to_host.len();
            net.cn_sends_data(3);
            assert_eq!(
                net.to_host.len(),
                host_before + 3,
                "the HA follows the rebinding"
            );
        }
    }
    assert_eq!(
        report,
        vec![
            ("ipv4 public", 0),
            ("ipv4 behind nat", 0),
            ("ipv6 again", 0)
        ]
    );
    // Return home: de-registration from the home address.
    let bu = net.move_to(Attachment::Home, None, false);
    assert_eq!(
        stack(&bu[0].1),
        s(&[
            "IPv6 2001:db8:1::100 -> 2001:db8:1::1",
            "ESP spi 0x00002001"
        ])
    );
    net.settle(bu, vec![]);
    assert!(ha(&net.ha).bindings().is_empty());
    assert!(net.events().contains(&MnEvent::Deregistered));
    assert_eq!(mn(&mut net.mn).counters().total_drops(), 0);
}

/// Break-before-make (RFC 3776 4.3): the old network is gone at once, and
/// data the host sends right after the BU already leaves by the new
/// care-of address (ESP, never in clear), before the BA; the home agent
/// takes it from there. Nothing is dropped for want of a care-of address.
#[test]
fn rfc3776_4_3_break_before_make_sends_data_by_the_new_care_of_address_at_once() {
    let mut net = Net::new();
    let bu = net.move_to(Attachment::V6(v6(COA6)), Some(COA6), true);
    net.settle(bu, vec![]);
    let bu = net.move_to(Attachment::V6(v6(COA6B)), Some(COA6B), false);
    let (o, out) = run(&mut net.mn, Side::Host, &udp(HOA, CN, 100), net.now);
    assert_eq!(o, Outcome::Ipsec(bitsgw_ipsec::Disposition::Forward));
    let data = only(out, Side::Network);
    assert_eq!(
        stack(&data),
        s(&[
            "IPv6 2001:db8:3::100 -> 2001:db8:1::1",
            "ESP spi 0x00002007"
        ])
    );
    net.settle(vec![(Side::Network, data)], vec![]);
    assert_eq!(net.to_cn.len(), 1, "taken by the home agent before the BU");
    net.settle(bu, vec![]);
    assert_eq!(
        mn(&mut net.mn).registered(),
        Some(Attachment::V6(v6(COA6B)))
    );
    net.mn_sends_data(1);
    net.cn_sends_data(1);
    assert_eq!((net.to_cn.len(), net.to_host.len()), (2, 1));
    assert_eq!(mn(&mut net.mn).counters().drops(MobilityDrop::NoCareOf), 0);
}

/// RFC 6275 11.8: no BA, so the BU goes again after 1.5 s (first
/// registration), then 3 s, 6 s ... up to 32 s, each with a new number.
#[test]
fn bu_retransmission_backs_off_exponentially() {
    let mut net = Net::new();
    let t0 = net.now;
    let first = net.move_to(Attachment::V6(v6(COA6)), Some(COA6), true);
    assert_eq!(first.len(), 1);
    let m = mn(&mut net.mn);
    let mut sent_at = vec![];
    let mut t = t0;
    for _ in 0..8 {
        t = m.poll_timeout().unwrap();
        m.handle_timeout(t);
        sent_at.push(t.saturating_since(t0).as_millis());
    }
    assert_eq!(
        sent_at,
        vec![1500, 4500, 10500, 22500, 46500, 78500, 110500, 142500]
    );
    assert_eq!(m.counters().events(MobilityEvent::BuRetransmitted), 8);
    let seqs: Vec<u16> = std::iter::from_fn(|| m.poll_event())
        .filter_map(|e| match e {
            MnEvent::BindingUpdateSent { seq, .. } => Some(seq),
            _ => None,
        })
        .collect();
    assert_eq!(seqs, (1..=9).collect::<Vec<u16>>());
    let _ = t;
}

// ---------------------------------------------------------------------
// RFC 3776 4.2: one mobile node can not move another's binding
// ---------------------------------------------------------------------

const HOA2: &str = "2001:db8:1::200";
const COA2: &str = "2001:db8:5::200";
const MN2_KEY: &str = "0x00112233445566778899aabbccddeeff01020304";

/// The home agent's policies with a second mobile node (HOA2) whose BU SA
/// (SPI 0x2101) is its own.
fn two_node_home_agent() -> Gateway {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../policies/dsmip-hostwide-ha.json");
    let mut doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    doc["addresses"]["home_address_2"] = HOA2.into();
    let inbound = doc["spd"]["inbound"].as_array_mut().unwrap();
    inbound.insert(
        2,
        serde_json::json!({"name": "bu-in-2", "local": "home_agent_1", "remote": "home_address_2",
            "proto": "mh", "mh_type": "bu", "action": "protect", "sa": "sa1-2"}),
    );
    doc["sad"].as_array_mut().unwrap().push(serde_json::json!({
        "name": "sa1-2", "direction": "inbound", "spi": "0x00002101", "mode": "transport",
        "transform": "aes-gcm-128", "enc_key": MN2_KEY, "replay_window": 64, "esn": false}));
    let set = bitsgw_ipsec::config::parse_policy(&doc.to_string(), "two-nodes.json").unwrap();
    let mut stage = IpsecStage::new(StageConfig::default());
    set.apply(&mut stage, Timestamp::ZERO).unwrap();
    let mut gw = Gateway::new(stage);
    let mut cfg = ha(&home_agent(false)).config().clone();
    cfg.nodes.push(ServedNode {
        home: v6(HOA2),
        home_v4: None,
    });
    gw.set_mobility(Mobility::HomeAgent(HomeAgent::new(cfg)));
    gw
}

/// Mobile node 2's IPsec, set up to protect whatever MH it sends to the
/// HA with its own BU SA, even a BU that claims node 1's home address.
fn rogue_sender() -> IpsecStage {
    let doc = serde_json::json!({
        "danger_static_keys_for_counter_mode": true,
        "addresses": {"home_agent_1": HA},
        "spd": {"outbound": [{"name": "claimed-mh-out", "local": HOA, "remote": "home_agent_1",
                               "proto": "mh", "action": "protect", "sa": "sa1-2"},
                              {"name": "own-mh-out", "local": HOA2, "remote": "home_agent_1",
                               "proto": "mh", "action": "protect", "sa": "sa1-2"}],
                "inbound": [{"name": "all-in", "action": "discard"}]},
        "sad": [{"name": "sa1-2", "direction": "outbound", "spi": "0x00002101", "mode": "transport",
                 "transform": "aes-gcm-128", "enc_key": MN2_KEY, "replay_window": 64, "esn": false}]
    });
    let set = bitsgw_ipsec::config::parse_policy(&doc.to_string(), "rogue.json").unwrap();
    let mut stage = IpsecStage::new(StageConfig::default());
    set.apply(&mut stage, Timestamp::ZERO).unwrap();
    stage
}

fn bu_for(home: &str, coa: &str, seq: u16) -> Vec<u8> {
    use bitsgw_wire::mh::{BindingUpdate, Message, MhOption};
    let bu = Message::BindingUpdate(BindingUpdate {
        seq,
        ack: true,
        home_registration: true,
        link_local_compat: false,
        key_mgmt_compat: false,
        lifetime_units: 100,
    });
    bitsgw_mobility::packet::mh_packet(v6(home), v6(HA), &bu, &[MhOption::AlternateCareOf(v6(coa))])
}

#[test]
fn rfc3776_4_2_a_bu_under_another_nodes_sa_moves_nothing() {
    let mut net = Net::new();
    net.ha = two_node_home_agent();
    let bu = net.move_to(Attachment::V6(v6(COA6)), Some(COA6), true);
    net.settle(bu, vec![]);
    let before = ha(&net.ha).bindings().get(&v6(HOA)).unwrap().clone();
    let mut rogue = rogue_sender();
    let now = net.now;
    // Node 2 sends "BU for HOA, care-of COA2" under its own SA.
    let mut buf = PacketBuf::from_slice(&bu_for(HOA, COA2, 9));
    assert_eq!(
        rogue.handle_outbound(&mut buf, now),
        bitsgw_ipsec::Disposition::Forward
    );
    let esp = buf.data().to_vec();
    // (a) From an IPv6 care-of address, with a Home Address option: the
    // tunnel stage sees by the SPI's selectors that this SA is node 2's,
    // and that node 1's binding is elsewhere: dropped, Binding Error sent.
    let mut with_hao = PacketBuf::from_slice(&esp);
    bitsgw_wire::mip6::insert_home_address_option(&mut with_hao, v6(HOA)).unwrap();
    with_hao.data_mut()[8..24].copy_from_slice(&v6(COA2));
    let (o, _) = run(&mut net.ha, Side::Network, with_hao.data(), now);
    assert_eq!(o, Outcome::MobilityDrop(MobilityDrop::HaoWithoutBinding));
    // (b) Over IPv4/UDP (no HAO): IPsec decrypts with node 2's SA and its
    // selectors (remote = HOA2) refuse the inner packet (RFC 4301 5.2).
    let mut in_udp = PacketBuf::from_slice(&esp);
    bitsgw_wire::encap::encapsulate(
        &mut in_udp,
        &bitsgw_wire::encap::Outer::V4Udp {
            src: v4("203.0.113.66"),
            dst: v4(HA4),
            src_port: 4191,
            dst_port: 4191,
            tlv: false,
        },
    )
    .unwrap();
    let (o, _) = run(&mut net.ha, Side::Network, in_udp.data(), now);
    assert_eq!(
        o,
        Outcome::Ipsec(bitsgw_ipsec::Disposition::Drop(
            bitsgw_ipsec::DropReason::InnerSelectorMismatch
        ))
    );
    assert_eq!(
        ha(&net.ha).bindings().get(&v6(HOA)).unwrap(),
        &before,
        "node 1's binding unmoved"
    );
    // Node 2's BU for its own home address is fine.
    let mut buf = PacketBuf::from_slice(&bu_for(HOA2, COA2, 1));
    assert_eq!(
        rogue.handle_outbound(&mut buf, now),
        bitsgw_ipsec::Disposition::Forward
    );
    bitsgw_wire::mip6::insert_home_address_option(&mut buf, v6(HOA2)).unwrap();
    buf.data_mut()[8..24].copy_from_slice(&v6(COA2));
    let (o, _) = run(&mut net.ha, Side::Network, buf.data(), now);
    assert_eq!(o, Outcome::MobilityConsumed);
    assert_eq!(
        ha(&net.ha)
            .bindings()
            .get(&v6(HOA2))
            .unwrap()
            .care_of
            .to_string(),
        COA2
    );
}

// ---------------------------------------------------------------------
// Req #3: the API classifier against the "heuristic and locking" one
// ---------------------------------------------------------------------

fn heuristic_net() -> Net {
    let mut net = Net::new();
    let mut gw = Gateway::new(stage("dsmip-hostwide-mn.json"));
    let mut cfg = mn(&mut net.mn).config().clone();
    cfg.classifier = bitsgw_mobility::classify::ClassifierMode::Heuristic;
    gw.set_mobility(Mobility::MobileNode(MobileNode::new(cfg)));
    net.mn = gw;
    net
}

/// Where the two agree: data on one SPI, then a BU. The heuristic locks on
/// the data SPI and takes the one packet with another SPI for the BU, as
/// the API does.
#[test]
fn heuristic_classifier_agrees_when_data_uses_one_spi() {
    for mut net in [Net::new(), heuristic_net()] {
        let bu = net.move_to(Attachment::V6(v6(COA6)), Some(COA6), true);
        net.settle(bu, vec![]);
        net.mn_sends_data(3);
        let (lost, _) = handover(
            &mut net,
            Attachment::V4(v4(COA4_NAT_INSIDE)),
            Some(COA4_NAT_INSIDE),
        );
        assert_eq!(lost, 0);
        assert!(
            mn(&mut net.mn).behind_nat(),
            "NAT detected: the BU went in UDP"
        );
    }
}

/// Where the heuristic goes wrong: the host also sends IPv4 traffic (its
/// own SA, another SPI) between the movement and the BU. The heuristic
/// takes that packet for the BU and sends the real BU down the old tunnel
/// as if it were tunnel-mode data: without its Home Address option and
/// outside UDP, so the home agent's IPsec refuses it (its source is not the
/// home address the BU SA's selectors name) and the registration fails;
/// the API classifier is not fooled.
#[test]
fn heuristic_classifier_is_fooled_by_a_second_data_spi() {
    let mut results = Vec::new();
    for mut net in [Net::new(), heuristic_net()] {
        let bu = net.move_to(Attachment::V6(v6(COA6)), Some(COA6), true);
        net.settle(bu, vec![]);
        net.mn_sends_data(3);
        net.mn_at.push(COA4_NAT_INSIDE.into());
        let now = net.now;
        mn(&mut net.mn).handle_move(Attachment::V4(v4(COA4_NAT_INSIDE)), true, now);
        // An IPv4 packet of the IPv4 home address reaches IPsec before
        // the BU leaves (payload-v4 SA, SPI 0x2009).
        // (The gateway sends what the protocol module queued right after
        // the frame it is handling, so the data packet goes first.)
        let (_, mut out) = run(&mut net.mn, Side::Host, &udp(HOA4, CN4, 40), now);
        assert_eq!(out.len(), 2, "the data packet, then the BU");
        let bu = out.split_off(1);
        let first_hop = stack(&bu[0].1)[0].clone();
        net.settle(out, vec![]);
        net.settle(bu, vec![]);
        let refused = net
            .ha
            .stage()
            .counters()
            .drops(bitsgw_ipsec::DropReason::InnerSelectorMismatch);
        results.push((first_hop, mn(&mut net.mn).registered(), refused));
    }
    assert_eq!(
        results[0],
        (
            "IPv4 198.51.100.20 -> 203.0.113.1".to_string(),
            Some(Attachment::V4(v4(COA4_NAT_INSIDE))),
            0
        ),
        "API: the BU leaves by the new address and registers"
    );
    assert_eq!(
        results[1],
        (
            "IPv6 2001:db8:2::100 -> 2001:db8:1::1".to_string(),
            Some(Attachment::V6(v6(COA6))),
            1
        ),
        "heuristic: the BU leaves by the old tunnel and is refused"
    );
}

// ---------------------------------------------------------------------
// RFC 6275 10.4.1: the home agent defends the home address on the home link
// ---------------------------------------------------------------------

#[test]
fn home_agent_proxies_neighbor_discovery_for_an_away_node() {
    const HA_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const CN_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x77];
    let mut net = Net::new();
    net.ha.set_home_link_mac(HA_MAC);
    let ns = |target: &str| {
        let mut icmp = vec![135, 0, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(&v6(target));
        let mut p = bitsgw_wire::craft::ip_packet(ip(CN), ip("ff02::1:ff00:100"), 58, &icmp, false);
        p[7] = 255;
        let mut f = vec![0x33, 0x33, 0xff, 0, 1, 0];
        f.extend_from_slice(&CN_MAC);
        f.extend_from_slice(&[0x86, 0xdd]);
        f.extend_from_slice(&p);
        f
    };
    let solicit = |net: &mut Net| {
        let mut out = Vec::new();
        let mut buf = PacketBuf::from_slice(&ns(HOA));
        let o = net.ha.handle_frame(
            Side::Host,
            LinkType::Ethernet,
            &mut buf,
            net.now,
            &mut |side, f| out.push((side, f.to_vec())),
            &mut NoTap,
        );
        (o, out)
    };
    // At home: not answered by the home agent (the node answers itself; the
    // solicitation crosses the bump like any neighbor discovery).
    let (o, _) = solicit(&mut net);
    assert_ne!(o, Outcome::MobilityConsumed);
    // The node goes away: on registration the home agent announces itself
    // for the home address (Override set) and for the IPv4 home address.
    let bu = net.move_to(Attachment::V6(v6(COA6)), Some(COA6), true);
    let (_, out) = run(&mut net.ha, Side::Network, &bu[0].1, net.now);
    let host: Vec<&Vec<u8>> = out
        .iter()
        .filter(|(s, _)| *s == Side::Host)
        .map(|(_, f)| f)
        .collect();
    assert_eq!(host.len(), 2, "unsolicited NA and gratuitous ARP");
    assert_eq!(&host[0][..6], &[0x33, 0x33, 0, 0, 0, 1]);
    assert_eq!(host[0][14 + 40], 136);
    assert_eq!(host[0][14 + 40 + 4], 0x20, "Override");
    assert_eq!(&host[0][14 + 40 + 8..14 + 40 + 24], &v6(HOA));
    assert_eq!(&host[1][12..14], &[0x08, 0x06]);
    assert_eq!(&host[1][14 + 14..14 + 18], &v4(HOA4));
    // Now a solicitation for the home address is answered with its MAC.
    let (o, out) = solicit(&mut net);
    assert_eq!(o, Outcome::MobilityConsumed);
    assert_eq!(out.len(), 1);
    let na = &out[0].1;
    assert_eq!(&na[..6], &CN_MAC);
    assert_eq!(&na[14 + 40 + 26..14 + 40 + 32], &HA_MAC);
    let m = ha(&net.ha).counters();
    assert_eq!(
        (
            m.events(MobilityEvent::ProxyAnnounced),
            m.events(MobilityEvent::ProxyAnswered)
        ),
        (1, 1)
    );
}

// ---------------------------------------------------------------------
// RFC 3776 3.3, 6.9 to 6.12: prefix discovery in transport mode
// ---------------------------------------------------------------------

/// With the RFC 3776 section 5.2 policies (transport-mode SAs for MPS and
/// MPA), the solicitation carries a Home Address option and the
/// advertisement a type 2 routing header, like the BU and BA.
#[test]
fn rfc3776_6_9_to_6_12_prefix_discovery_over_ipv6() {
    let mut net = Net::new();
    net.ha = {
        let mut gw = Gateway::new(stage("rfc3776-ha.json"));
        let mut cfg = ha(&net.ha).config().clone();
        cfg.nodes[0].home_v4 = None;
        gw.set_mobility(Mobility::HomeAgent(HomeAgent::new(cfg)));
        gw
    };
    net.mn = {
        let mut gw = Gateway::new(stage("rfc3776-mn.json"));
        let mut cfg = mn(&mut net.mn).config().clone();
        cfg.home_v4 = None;
        gw.set_mobility(Mobility::MobileNode(MobileNode::new(cfg)));
        gw
    };
    let bu = net.move_to(Attachment::V6(v6(COA6)), Some(COA6), true);
    assert_eq!(stack(&bu[0].1)[2], "ESP spi 0x00001001");
    net.settle(bu, vec![]);
    assert_eq!(mn(&mut net.mn).registered(), Some(Attachment::V6(v6(COA6))));
    mn(&mut net.mn).solicit_prefixes();
    let mps = poll(&mut net.mn, net.now);
    // 6.9 (as 6.1): care-of source, HAO, ESP of the MPS SA.
    assert_eq!(
        stack(&mps[0].1),
        s(&[
            "IPv6 2001:db8:2::100 -> 2001:db8:1::1",
            "DestOpt HAO 2001:db8:1::100",
            "ESP spi 0x00001005"
        ])
    );
    // 6.10 (as 6.2) and 6.11 (as 6.3): RH2 and the MPA SA.
    let (o, out) = run(&mut net.ha, Side::Network, &mps[0].1, net.now);
    assert_eq!(o, Outcome::MobilityConsumed);
    let mpa = only(out, Side::Network);
    assert_eq!(
        stack(&mpa),
        s(&[
            "IPv6 2001:db8:1::1 -> 2001:db8:2::100",
            "RH2 2001:db8:1::100 (segments left 1)",
            "ESP spi 0x00001006"
        ])
    );
    // 6.12 (as 6.4): the MN learns the home prefix.
    let (o, _) = run(&mut net.mn, Side::Network, &mpa, net.now);
    assert_eq!(o, Outcome::MobilityConsumed);
    assert!(net
        .events()
        .contains(&MnEvent::Prefixes(vec![(v6("2001:db8:1::"), 64)])));
}

/// A mobile node that lost its binding update list (restarted, its SAs
/// kept) starts again at sequence number 1: the home agent refuses it with
/// status 135 and the last number it accepted, sends that BA to where the
/// BU came from (RFC 6275 9.5.4, not the old care-of address of the
/// binding), and the node goes on from that number (11.7.3).
#[test]
fn restarted_mobile_node_resynchronises_its_sequence_number() {
    let mut net = Net::new();
    for _ in 0..3 {
        let now = net.now;
        let bu = net.move_to(Attachment::V6(v6(COA6)), Some(COA6), true);
        net.settle(bu, vec![]);
        net.now = now.saturating_add(Duration::from_secs(1));
    }
    assert_eq!(ha(&net.ha).bindings().get(&v6(HOA)).unwrap().seq, 3);
    let cfg = mn(&mut net.mn).config().clone();
    net.mn
        .set_mobility(Mobility::MobileNode(MobileNode::new(cfg)));
    let bu = net.move_to(Attachment::V6(v6(COA6B)), Some(COA6B), false);
    let (o, out) = run(&mut net.ha, Side::Network, &bu[0].1, net.now);
    assert_eq!(o, Outcome::MobilityConsumed);
    let ba = only(out, Side::Network);
    assert_eq!(
        stack(&ba)[0],
        "IPv6 2001:db8:1::1 -> 2001:db8:3::100",
        "to the BU's source"
    );
    net.settle(vec![], vec![(Side::Network, ba)]);
    let ev = net.events();
    assert!(
        ev.iter().any(|e| matches!(
            e,
            MnEvent::BindingUpdateSent {
                seq: 4,
                retransmission: true,
                ..
            }
        )),
        "{ev:?}"
    );
    assert_eq!(
        mn(&mut net.mn).registered(),
        Some(Attachment::V6(v6(COA6B)))
    );
    assert_eq!(ha(&net.ha).bindings().get(&v6(HOA)).unwrap().seq, 4);
}

/// Make-before-break keeps what is in flight: packets the home agent sent
/// to the old (IPv4) care-of address before it switched still arrive and
/// are taken after the BA, for a grace period; after it the old address is
/// no longer the node's.
#[test]
fn packets_in_flight_to_the_old_care_of_address_are_still_taken() {
    let mut net = Net::new();
    let bu = net.move_to(Attachment::V4(v4(COA4)), Some(COA4), true);
    net.settle(bu, vec![]);
    let bu = net.move_to(
        Attachment::V4(v4(COA4_NAT_INSIDE)),
        Some(COA4_NAT_INSIDE),
        true,
    );
    // Two packets leave the home agent before it sees the BU.
    let (_, a) = run(&mut net.ha, Side::Host, &udp(CN, HOA, 10), net.now);
    let (_, b) = run(&mut net.ha, Side::Host, &udp(CN, HOA, 20), net.now);
    assert_eq!(stack(&a[0].1)[0], "IPv4 203.0.113.1 -> 203.0.113.20");
    net.settle(bu, vec![]);
    assert_eq!(
        mn(&mut net.mn).registered(),
        Some(Attachment::V4(v4(COA4_NAT_INSIDE)))
    );
    let (_, out) = run(&mut net.mn, Side::Network, &a[0].1, net.now);
    assert_eq!(
        only(out, Side::Host),
        udp(CN, HOA, 10),
        "taken within the grace period"
    );
    net.tick(2500);
    let _ = poll(&mut net.mn, net.now);
    let (o, out) = run(&mut net.mn, Side::Network, &b[0].1, net.now);
    assert!(out.is_empty(), "{o:?}");
}

// ---------------------------------------------------------------------
// Faults: handover storms, the BU SA replaced
// ---------------------------------------------------------------------

/// Many movements faster than BAs come back (all networks stay up): the
/// home agent ends on the last care-of address whatever order the BUs
/// arrive in, the mobile node takes only the BA of its newest BU (older
/// ones are counted as unexpected), and data keeps flowing on the
/// registered path throughout.
#[test]
fn handover_storm_ends_on_the_last_care_of_address() {
    for reversed in [false, true] {
        let mut net = Net::new();
        let bu = net.move_to(Attachment::V6(v6(COA6)), Some(COA6), true);
        net.settle(bu, vec![]);
        let targets = [
            (Attachment::V4(v4(COA4)), COA4),
            (Attachment::V6(v6(COA6B)), COA6B),
            (Attachment::V4(v4(COA4_NAT_INSIDE)), COA4_NAT_INSIDE),
            (Attachment::V6(v6("2001:db8:4::100")), "2001:db8:4::100"),
        ];
        let mut bus = Vec::new();
        for (at, addr) in targets {
            bus.extend(net.move_to(at, Some(addr), true));
            net.mn_sends_data(1);
            net.cn_sends_data(1);
        }
        assert_eq!(bus.len(), 4);
        if reversed {
            bus.reverse();
        }
        for b in bus {
            net.settle(vec![b], vec![]);
        }
        // Whatever the order, the newest BU wins (a reordered older one is
        // refused with 135, which only makes the node re-register).
        for _ in 0..3 {
            let now = net.now;
            let out = poll(&mut net.mn, now);
            net.settle(out, vec![]);
            net.tick(1600);
        }
        let last = Attachment::V6(v6("2001:db8:4::100"));
        assert_eq!(
            mn(&mut net.mn).registered(),
            Some(last),
            "reversed={reversed}"
        );
        assert_eq!(
            ha(&net.ha)
                .bindings()
                .get(&v6(HOA))
                .unwrap()
                .care_of
                .to_string(),
            "2001:db8:4::100"
        );
        assert_eq!(net.to_cn.len(), 4, "data from the host all arrived");
        assert_eq!(net.to_host.len(), 4, "data to the host all arrived");
        net.mn_sends_data(2);
        net.cn_sends_data(2);
        assert_eq!((net.to_cn.len(), net.to_host.len()), (6, 6));
    }
}

/// The BU SA is replaced (new SPI and key, on both sides) while the node
/// is registered: the tunnel stages ask the query API again (its
/// generation changed), so the next BU is still told from data and still
/// gets its Home Address option, and the home agent still notes it.
#[test]
fn a_replaced_bu_sa_is_followed_by_the_classifier() {
    let mut net = Net::new();
    let bu = net.move_to(Attachment::V6(v6(COA6)), Some(COA6), true);
    net.settle(bu, vec![]);
    for (gw, file) in [
        (&mut net.mn, "dsmip-hostwide-mn.json"),
        (&mut net.ha, "dsmip-hostwide-ha.json"),
    ] {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../policies")
            .join(file);
        let text = std::fs::read_to_string(path)
            .unwrap()
            .replace("0x00002001", "0x00002101")
            .replace(
                "0x13505bbea1f85f05154d02ffe7b361286095a311",
                "0x0a0b0c0d0e0f101112131415161718191a1b1c1d",
            );
        let set = bitsgw_ipsec::config::parse_policy(&text, file).unwrap();
        let summary = set.reload(gw.stage_mut(), Timestamp::ZERO).unwrap();
        assert_eq!(summary.installed, 1, "only the BU SA changed");
    }
    let bu = net.move_to(Attachment::V6(v6(COA6B)), Some(COA6B), true);
    assert_eq!(
        stack(&bu[0].1),
        s(&[
            "IPv6 2001:db8:3::100 -> 2001:db8:1::1",
            "DestOpt HAO 2001:db8:1::100",
            "ESP spi 0x00002101"
        ])
    );
    net.settle(bu, vec![]);
    assert_eq!(
        mn(&mut net.mn).registered(),
        Some(Attachment::V6(v6(COA6B)))
    );
    // Behind the NAT, the home agent's Req #4 note still finds the BU.
    let bu = net.move_to(
        Attachment::V4(v4(COA4_NAT_INSIDE)),
        Some(COA4_NAT_INSIDE),
        true,
    );
    net.settle(bu, vec![]);
    assert!(mn(&mut net.mn).behind_nat());
}

/// A BA the mobile node never asked for (no BU outstanding, or another
/// sequence number) is dropped and counted, and changes nothing.
#[test]
fn unsolicited_ba_is_counted_and_ignored() {
    let mut net = Net::new();
    let bu = net.move_to(Attachment::V6(v6(COA6)), Some(COA6), true);
    let (_, out) = run(&mut net.ha, Side::Network, &bu[0].1, net.now);
    let ba = only(out, Side::Network);
    let (o, _) = run(&mut net.mn, Side::Network, &ba, net.now);
    assert_eq!(o, Outcome::MobilityConsumed);
    // A BA for a BU the protocol module never sent: the node's IPsec seals
    // one behind its back, the home agent answers it.
    let mut buf = PacketBuf::from_slice(&bu_for(HOA, COA6, 40));
    let o = net.mn.stage_mut().handle_outbound(&mut buf, net.now);
    assert_eq!(o, bitsgw_ipsec::Disposition::Forward);
    bitsgw_wire::mip6::insert_home_address_option(&mut buf, v6(HOA)).unwrap();
    buf.data_mut()[8..24].copy_from_slice(&v6(COA6));
    let (_, out) = run(&mut net.ha, Side::Network, buf.data(), net.now);
    let stray = only(out, Side::Network);
    let (o, _) = run(&mut net.mn, Side::Network, &stray, net.now);
    assert_eq!(o, Outcome::MobilityDrop(MobilityDrop::UnexpectedBa));
    assert_eq!(
        mn(&mut net.mn).counters().drops(MobilityDrop::UnexpectedBa),
        1
    );
    assert_eq!(mn(&mut net.mn).registered(), Some(Attachment::V6(v6(COA6))));
}

/// Traffic for the home address that a home agent's SPD lets through in
/// clear is tunnelled in IPv6 to the care-of address (RFC 6275 10.4.1) and
/// decapsulated by the mobile node (11.3.4), whose own SPD then decides:
/// the host-wide policies protect everything of the home address, so it
/// is dropped and counted there, never delivered in clear.
#[test]
fn ipv6_in_ipv6_from_the_home_agent_is_decapsulated_and_judged_by_the_spd() {
    let mut net = Net::new();
    let bu = net.move_to(Attachment::V6(v6(COA6)), Some(COA6), true);
    net.settle(bu, vec![]);
    let clear = udp(CN, HOA, 30);
    let mut tunnelled = PacketBuf::from_slice(&clear);
    bitsgw_wire::encap::encapsulate(
        &mut tunnelled,
        &bitsgw_wire::encap::Outer::V6 {
            src: v6(HA),
            dst: v6(COA6),
        },
    )
    .unwrap();
    let (o, out) = run(&mut net.mn, Side::Network, tunnelled.data(), net.now);
    assert!(out.is_empty());
    assert_eq!(
        o,
        Outcome::Ipsec(bitsgw_ipsec::Disposition::Drop(
            bitsgw_ipsec::DropReason::UnprotectedTraffic
        ))
    );
    assert_eq!(
        mn(&mut net.mn)
            .counters()
            .events(MobilityEvent::Decapsulated),
        1
    );
}

// ---------------------------------------------------------------------
// Binding Errors and Binding Refresh Requests on the wire
// ---------------------------------------------------------------------

/// An IPv6 packet from `src` to `dst` with a Mobility Header of type
/// `mh_type` and message data `data`, spelled out byte by byte.
fn mh_bytes(src: &str, dst: &str, mh_type: u8, data: &[u8]) -> Vec<u8> {
    let len = 6 + data.len();
    let mut mh = vec![59, u8::try_from(len / 8 - 1).unwrap(), mh_type, 0, 0, 0];
    mh.extend_from_slice(data);
    let sum = bitsgw_wire::mh::mh_checksum(&v6(src), &v6(dst), &mh);
    mh[4..6].copy_from_slice(&sum.to_be_bytes());
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&u16::try_from(len).unwrap().to_be_bytes());
    p.extend_from_slice(&[135, 64]);
    p.extend_from_slice(&v6(src));
    p.extend_from_slice(&v6(dst));
    p.extend_from_slice(&mh);
    p
}

/// A Binding Error as it leaves the home agent: status, reserved, the
/// Home Address field (RFC 6275 6.1.9).
fn binding_error(to: &str, status: u8, home: &str) -> Vec<u8> {
    let mut d = vec![status, 0];
    d.extend_from_slice(&v6(home));
    mh_bytes(HA, to, 7, &d)
}

/// The mobile node (registered at COA6) takes `pkt` from the network and
/// answers with a Binding Update, which this returns.
fn answered_with_a_bu(net: &mut Net, pkt: &[u8]) -> Vec<u8> {
    let (o, out) = run(&mut net.mn, Side::Network, pkt, net.now);
    assert_eq!(o, Outcome::MobilityConsumed);
    let bu = only(out, Side::Network);
    assert_eq!(stack(&bu), bu_from_coa6(0x2001));
    bu
}

/// RFC 6275 9.2 and 9.3.3 with the RFC 3776 pair (whose BU SA carries any
/// MH type): an MH type the home agent does not know, from the care-of
/// address with a Home Address option, is answered with a Binding Error,
/// status 2, sent to the care-of address the packet came from, with the
/// home address from the option in its Home Address field. No SA reaches
/// a care-of address, so it leaves in clear (the `be-bypass-out` entry).
/// The mobile node takes it (it comes from its home agent, which is on its
/// Binding Update List, RFC 6275 11.3.6) and passes nothing to the host.
#[test]
fn rfc6275_9_3_3_binding_error_goes_in_clear_to_the_care_of_address_with_the_home_address() {
    let mut net = Net::new();
    net.ha = home_agent_with("rfc3776-ha.json", false);
    net.mn = mobile_node_with("rfc3776-mn.json");
    let bu = net.move_to(Attachment::V6(v6(COA6)), Some(COA6), true);
    net.settle(bu, vec![]);
    assert_eq!(mn(&mut net.mn).registered(), Some(Attachment::V6(v6(COA6))));
    net.events();
    let now = net.now;
    // MH type 42, sealed by the mobile node's BU SA (proto MH, any type),
    // from the care-of address with a Home Address option.
    let mut buf = PacketBuf::from_slice(&mh_bytes(HOA, HA, 42, &[0, 0]));
    assert_eq!(
        net.mn.stage_mut().handle_outbound(&mut buf, now),
        bitsgw_ipsec::Disposition::Forward
    );
    bitsgw_wire::mip6::insert_home_address_option(&mut buf, v6(HOA)).unwrap();
    buf.data_mut()[8..24].copy_from_slice(&v6(COA6));
    assert_eq!(stack(buf.data()), bu_from_coa6(0x1001));
    let (o, out) = run(&mut net.ha, Side::Network, buf.data(), now);
    assert_eq!(o, Outcome::MobilityConsumed);
    let be = only(out, Side::Network);
    assert_eq!(be, binding_error(COA6, 2, HOA));
    assert_eq!(ha(&net.ha).counters().events(MobilityEvent::BeSent), 1);
    let (o, out) = run(&mut net.mn, Side::Network, &be, now);
    assert_eq!(o, Outcome::MobilityConsumed);
    assert!(out.is_empty(), "nothing for the host");
    assert_eq!(net.events(), vec![MnEvent::BindingError { status: 2 }]);
    assert_eq!(
        mn(&mut net.mn).counters().events(MobilityEvent::BeReceived),
        1
    );
}

/// RFC 6275 9.3.1 and 11.3.6, both ends: a home agent that lost its
/// binding (restarted) answers a packet with a Home Address option with a
/// Binding Error, status 1, in clear to the care-of address, about the
/// home address; the mobile node, whose home agent it is, registers again
/// at once, and the binding is back. The same Binding Error from another
/// node is ignored and counted, and never reaches the host.
#[test]
fn rfc6275_11_3_6_binding_error_status_1_brings_the_binding_back() {
    let mut net = Net::new();
    let bu = net.move_to(Attachment::V6(v6(COA6)), Some(COA6), true);
    net.settle(bu, vec![]);
    net.events();
    net.ha = home_agent(false);
    let now = net.now;
    let mut probe = PacketBuf::from_slice(&udp(HOA, HA, 10));
    bitsgw_wire::mip6::insert_home_address_option(&mut probe, v6(HOA)).unwrap();
    probe.data_mut()[8..24].copy_from_slice(&v6(COA6));
    let (o, out) = run(&mut net.ha, Side::Network, probe.data(), now);
    assert_eq!(o, Outcome::MobilityDrop(MobilityDrop::HaoWithoutBinding));
    let be = only(out, Side::Network);
    assert_eq!(be, binding_error(COA6, 1, HOA));
    // From a correspondent: ignored.
    let mut spoofed = be.clone();
    spoofed[8..24].copy_from_slice(&v6(CN));
    let sum = bitsgw_wire::mh::mh_checksum(&v6(CN), &v6(COA6), &{
        let mut mh = spoofed[40..].to_vec();
        mh[4..6].fill(0);
        mh
    });
    spoofed[44..46].copy_from_slice(&sum.to_be_bytes());
    let (o, out) = run(&mut net.mn, Side::Network, &spoofed, now);
    assert_eq!(
        o,
        Outcome::MobilityDrop(MobilityDrop::NoBindingUpdateListEntry)
    );
    assert!(out.is_empty());
    // From the home agent: a new BU at once.
    let again = answered_with_a_bu(&mut net, &be);
    net.settle(vec![(Side::Network, again)], vec![]);
    let b = ha(&net.ha).bindings().get(&v6(HOA)).unwrap();
    assert_eq!((b.care_of.to_string(), b.seq), (COA6.to_string(), 2));
    assert_eq!(
        net.events()
            .into_iter()
            .filter(|e| matches!(e, MnEvent::BindingError { status: 1 }))
            .count(),
        1
    );
}

/// RFC 6275 11.7.4 and 6.1.2: a Binding Refresh Request the home agent
/// sends to the home address (protected as the host-wide policies say:
/// the payload SA, tunnelled to the care-of address) is decrypted by the
/// mobile node and answered with a Binding Update (the next sequence
/// number, A and H set), which the home agent accepts; the host never
/// sees the request.
#[test]
fn rfc6275_11_7_4_binding_refresh_request_is_answered_with_a_binding_update() {
    let mut net = Net::new();
    let bu = net.move_to(Attachment::V6(v6(COA6)), Some(COA6), true);
    net.settle(bu, vec![]);
    let now = net.now;
    let brr = mh_bytes(HA, HOA, 0, &[0, 0]);
    let (o, out) = run(&mut net.ha, Side::Host, &brr, now);
    assert_eq!(o, Outcome::Ipsec(bitsgw_ipsec::Disposition::Forward));
    let sealed = only(out, Side::Network);
    assert_eq!(
        stack(&sealed),
        s(&[
            "IPv6 2001:db8:1::1 -> 2001:db8:2::100",
            "ESP spi 0x00002008"
        ])
    );
    let host_before = net.to_host.len();
    let bu = answered_with_a_bu(&mut net, &sealed);
    // What the home agent decrypts: BU number 2 with A and H.
    let mut clear = PacketBuf::from_slice(&bu);
    bitsgw_wire::mip6::swap_home_address(clear.data_mut()).unwrap();
    let mut ha_ipsec = stage("dsmip-hostwide-ha.json");
    assert_eq!(
        ha_ipsec.handle_inbound(&mut clear, now),
        bitsgw_ipsec::Disposition::Deliver
    );
    match bitsgw_mobility::packet::upper(clear.data(), |_, _| true) {
        bitsgw_mobility::packet::Upper::Mh { repr, .. } => {
            assert_eq!(
                repr.message,
                bitsgw_wire::mh::Message::BindingUpdate(bitsgw_wire::mh::BindingUpdate {
                    seq: 2,
                    ack: true,
                    home_registration: true,
                    link_local_compat: false,
                    key_mgmt_compat: false,
                    lifetime_units: 105,
                })
            );
        }
        other => panic!("not a BU: {other:?}"),
    }
    net.settle(vec![(Side::Network, bu)], vec![]);
    assert_eq!(net.to_host.len(), host_before);
    assert_eq!(ha(&net.ha).bindings().get(&v6(HOA)).unwrap().seq, 2);
    assert_eq!(
        mn(&mut net.mn)
            .counters()
            .events(MobilityEvent::BrrAnswered),
        1
    );
}

/// RFC 5555 4.3.1: a Binding Update that reaches the home agent in UDP
/// over IPv4 without the IPv4 Care-of Address option is refused with
/// status 174 (Invalid Care-of Address, RFC 6275 6.1.8), answered in UDP to where it came
/// from; it is not a de-registration, so the binding stays.
#[test]
fn rfc5555_4_3_1_a_udp_binding_update_without_the_ipv4_care_of_option_is_refused() {
    use bitsgw_wire::mh::{BindingUpdate, Message};
    let mut net = Net::new();
    let bu = net.move_to(Attachment::V6(v6(COA6)), Some(COA6), true);
    net.settle(bu, vec![]);
    let now = net.now;
    let msg = Message::BindingUpdate(BindingUpdate {
        seq: 9,
        ack: true,
        home_registration: true,
        link_local_compat: false,
        key_mgmt_compat: false,
        lifetime_units: 100,
    });
    let plain = bitsgw_mobility::packet::mh_packet(v6(HOA), v6(HA), &msg, &[]);
    let mut buf = PacketBuf::from_slice(&plain);
    assert_eq!(
        net.mn.stage_mut().handle_outbound(&mut buf, now),
        bitsgw_ipsec::Disposition::Forward
    );
    bitsgw_wire::encap::encapsulate(
        &mut buf,
        &bitsgw_wire::encap::Outer::V4Udp {
            src: v4(COA4),
            dst: v4(HA4),
            src_port: 4191,
            dst_port: 4191,
            tlv: false,
        },
    )
    .unwrap();
    let (o, out) = run(&mut net.ha, Side::Network, buf.data(), now);
    assert_eq!(o, Outcome::MobilityConsumed);
    let ba = only(out, Side::Network);
    assert_eq!(
        stack(&ba),
        s(&[
            "IPv4 203.0.113.1 -> 203.0.113.20",
            "UDP 4191 -> 4191",
            "IPv6 2001:db8:1::1 -> 2001:db8:1::100",
            "ESP spi 0x00002002",
        ])
    );
    let mut inner = PacketBuf::from_slice(&ba);
    bitsgw_wire::encap::decapsulate(&mut inner, 4191).unwrap();
    assert_eq!(
        net.mn.stage_mut().handle_inbound(&mut inner, now),
        bitsgw_ipsec::Disposition::Deliver
    );
    let mh = &inner.data()[40..];
    assert_eq!((mh[2], mh[6], &mh[8..12]), (6, 174, &[0, 9, 0, 0][..]));
    assert_eq!(
        ha(&net.ha)
            .bindings()
            .get(&v6(HOA))
            .unwrap()
            .care_of
            .to_string(),
        COA6
    );
    assert_eq!(ha(&net.ha).counters().events(MobilityEvent::BuRejected), 1);
}

/// RFC 3776 4.1 and RFC 6275 11.7.3: the BA must come under the SA for
/// BAs. A BA sealed with the home agent's payload SA (tunnel mode, SPI
/// 0x2008, whose selectors also cover it), with the right sequence number,
/// registers nothing: the tunnel stage noted the SPI it came under, and the
/// query API says that SA does not serve the BA entry.
#[test]
fn rfc3776_a_binding_ack_under_the_payload_sa_registers_nothing() {
    let mut net = Net::new();
    let bu = net.move_to(Attachment::V6(v6(COA6)), Some(COA6), true);
    assert_eq!(bu.len(), 1);
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../policies/dsmip-hostwide-ha.json");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let sa8 = doc["sad"]
        .as_array()
        .unwrap()
        .iter()
        .find(|sa| sa["name"] == "sa8")
        .unwrap()
        .clone();
    let wrong = serde_json::json!({
        "danger_static_keys_for_counter_mode": true,
        "addresses": doc["addresses"],
        "spd": {"outbound": [{"name": "ba-under-payload-sa", "local": "home_agent_1",
                               "remote": "home_address_1", "proto": "mh",
                               "action": "protect", "sa": "sa8"}],
                "inbound": [{"name": "all-in", "action": "discard"}]},
        "sad": [sa8]
    });
    let set = bitsgw_ipsec::config::parse_policy(&wrong.to_string(), "wrong-sa.json").unwrap();
    let mut sender = IpsecStage::new(StageConfig::default());
    set.apply(&mut sender, Timestamp::ZERO).unwrap();
    let ba = bitsgw_mobility::packet::mh_packet(
        v6(HA),
        v6(HOA),
        &bitsgw_wire::mh::Message::BindingAck(bitsgw_wire::mh::BindingAck {
            status: 0,
            key_mgmt_compat: false,
            seq: 1,
            lifetime_units: 105,
        }),
        &[],
    );
    let mut buf = PacketBuf::from_slice(&ba);
    assert_eq!(
        sender.handle_outbound(&mut buf, net.now),
        bitsgw_ipsec::Disposition::Forward
    );
    buf.data_mut()[24..40].copy_from_slice(&v6(COA6));
    assert_eq!(
        stack(buf.data()),
        s(&[
            "IPv6 2001:db8:1::1 -> 2001:db8:2::100",
            "ESP spi 0x00002008"
        ])
    );
    let (o, out) = run(&mut net.mn, Side::Network, buf.data(), net.now);
    assert!(out.is_empty());
    assert_eq!(o, Outcome::MobilityDrop(MobilityDrop::BaOutsideItsSa));
    assert_eq!(mn(&mut net.mn).registered(), None);
    assert_eq!(
        mn(&mut net.mn).registering(),
        Some(Attachment::V6(v6(COA6)))
    );
}

/// RFC 6275 6.1 with the RFC 3776 pair, whose BU and BA SAs carry any MH
/// type: only the Binding Update gets a Home Address option and only the
/// Binding Acknowledgement a type 2 routing header. Another MH message
/// from the home address (here one the host sends, of a type nobody
/// knows) goes in an IPv6 tunnel from the care-of address (RFC 6275
/// 11.3.1), which the home agent takes only from the binding's care-of
/// address (10.4.5); the Binding Error it answers to the home address goes
/// in an IPv6 tunnel to the care-of address, and the mobile node takes it.
#[test]
fn rfc6275_6_1_home_address_option_and_routing_header_only_on_bu_and_ba() {
    let mut net = Net::new();
    net.ha = home_agent_with("rfc3776-ha.json", false);
    net.mn = mobile_node_with("rfc3776-mn.json");
    let bu = net.move_to(Attachment::V6(v6(COA6)), Some(COA6), true);
    let bu = only(bu, Side::Network);
    assert_eq!(stack(&bu), bu_from_coa6(0x1001));
    let (_, out) = run(&mut net.ha, Side::Network, &bu, net.now);
    let ba = only(out, Side::Network);
    assert_eq!(stack(&ba), ba_to_coa6(0x1002));
    let (o, _) = run(&mut net.mn, Side::Network, &ba, net.now);
    assert_eq!(o, Outcome::MobilityConsumed);
    net.events();
    let (o, out) = run(
        &mut net.mn,
        Side::Host,
        &mh_bytes(HOA, HA, 42, &[0, 0]),
        net.now,
    );
    assert_eq!(o, Outcome::Ipsec(bitsgw_ipsec::Disposition::Forward));
    let other = only(out, Side::Network);
    assert_eq!(
        stack(&other),
        s(&[
            "IPv6 2001:db8:2::100 -> 2001:db8:1::1",
            "IPv6 2001:db8:1::100 -> 2001:db8:1::1",
            "ESP spi 0x00001001",
        ])
    );
    // From anywhere but the binding's care-of address, the tunnel is refused.
    let mut elsewhere = other.clone();
    elsewhere[8..24].copy_from_slice(&v6(COA6B));
    let (o, _) = run(&mut net.ha, Side::Network, &elsewhere, net.now);
    assert_eq!(o, Outcome::MobilityDrop(MobilityDrop::UnknownTunnelPeer));
    let (o, out) = run(&mut net.ha, Side::Network, &other, net.now);
    assert_eq!(o, Outcome::MobilityConsumed);
    let be = only(out, Side::Network);
    assert_eq!(
        stack(&be),
        s(&[
            "IPv6 2001:db8:1::1 -> 2001:db8:2::100",
            "IPv6 2001:db8:1::1 -> 2001:db8:1::100",
            "ESP spi 0x00001002",
        ])
    );
    let (o, out) = run(&mut net.mn, Side::Network, &be, net.now);
    assert_eq!(o, Outcome::MobilityConsumed);
    assert!(out.is_empty());
    assert_eq!(net.events(), vec![MnEvent::BindingError { status: 2 }]);
    // The next refresh is a BU again, with its Home Address option.
    let now = net.now;
    mn(&mut net.mn).refresh(now);
    let bu = only(poll(&mut net.mn, now), Side::Network);
    assert_eq!(stack(&bu)[1], "DestOpt HAO 2001:db8:1::100");
}

/// RFC 3776 4.2: once the node is home and de-registered, the SPD entries
/// of the tunnel between the home address and the home agent are
/// inactive: payload goes as it would without mobility, in clear, both
/// ways, byte for byte what the hosts sent. Every other entry still
/// applies (a BU still goes under its transport-mode SA, traffic of other
/// addresses is still discarded), and once away again the tunnel is back.
#[test]
fn rfc3776_4_2_at_home_traffic_goes_as_without_mobility() {
    let mut net = Net::new();
    let bu = net.move_to(Attachment::V6(v6(COA6)), Some(COA6), true);
    net.settle(bu, vec![]);
    let bu = net.move_to(Attachment::Home, None, false);
    net.settle(bu, vec![]);
    assert!(ha(&net.ha).bindings().is_empty());
    let up = udp(HOA, CN, 100);
    let (o, out) = run(&mut net.mn, Side::Host, &up, net.now);
    assert_eq!(o, Outcome::Ipsec(bitsgw_ipsec::Disposition::Forward));
    assert_eq!(only(out, Side::Network), up, "in clear, unchanged");
    let down = udp(CN, HOA, 100);
    let (o, out) = run(&mut net.ha, Side::Host, &down, net.now);
    assert_eq!(o, Outcome::Ipsec(bitsgw_ipsec::Disposition::Forward));
    let down_wire = only(out, Side::Network);
    assert_eq!(down_wire, down, "in clear, unchanged");
    let (o, out) = run(&mut net.mn, Side::Network, &down_wire, net.now);
    assert_eq!(o, Outcome::Ipsec(bitsgw_ipsec::Disposition::Deliver));
    assert_eq!(only(out, Side::Host), down);
    let untunnelled = |gw: &Gateway| {
        gw.mobility()
            .unwrap()
            .counters()
            .events(MobilityEvent::AtHomeUntunnelled)
    };
    assert_eq!((untunnelled(&net.mn), untunnelled(&net.ha)), (2, 1));
    // Other entries still apply.
    let (_, out) = run(
        &mut net.mn,
        Side::Host,
        &mh_bytes(HOA, HA, 5, &[0; 10]),
        net.now,
    );
    assert_eq!(
        stack(&only(out, Side::Network)),
        s(&[
            "IPv6 2001:db8:1::100 -> 2001:db8:1::1",
            "ESP spi 0x00002001"
        ])
    );
    let (o, out) = run(&mut net.mn, Side::Host, &udp(COA6, CN, 100), net.now);
    assert!(out.is_empty());
    assert_eq!(
        o,
        Outcome::Ipsec(bitsgw_ipsec::Disposition::Drop(
            bitsgw_ipsec::DropReason::PolicyDiscard
        ))
    );
    // Away again: the tunnel is back.
    let bu = net.move_to(Attachment::V6(v6(COA6B)), Some(COA6B), true);
    net.settle(bu, vec![]);
    let (_, out) = run(&mut net.mn, Side::Host, &up, net.now);
    assert_eq!(
        stack(&only(out, Side::Network)),
        s(&[
            "IPv6 2001:db8:3::100 -> 2001:db8:1::1",
            "ESP spi 0x00002007"
        ])
    );
}

/// The appliance's own host stack on a raw-IP port, as far as the
/// pipeline sees it: it takes IKE to its addresses (what it took is
/// kept for the test to see) and answers each with a datagram back from
/// that address; `sends` are datagrams it originates (an IKE thread's).
struct IkeHost {
    addresses: Vec<IpAddr>,
    took: Arc<Mutex<Vec<Vec<u8>>>>,
    sends: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl bitsgw_pipeline::LocalEndpoint for IkeHost {
    fn handle_frame(&mut self, pkt: &[u8], _: Timestamp) -> bool {
        if !self.is_addressed_to_me(pkt) {
            return false;
        }
        let (src, dst) = addresses_of(pkt);
        let v4 = pkt[0] >> 4 == 4;
        let udp = &pkt[if v4 { 20 } else { 40 }..];
        let (sport, dport) = (
            u16::from_be_bytes([udp[0], udp[1]]),
            u16::from_be_bytes([udp[2], udp[3]]),
        );
        self.took.lock().unwrap().push(pkt.to_vec());
        self.sends
            .lock()
            .unwrap()
            .push(bitsgw_wire::craft::udp_packet(dst, src, dport, sport, 12));
        true
    }

    fn poll_transmit(&mut self, _: Timestamp, emit: &mut dyn FnMut(&[u8])) {
        for p in std::mem::take(&mut *self.sends.lock().unwrap()) {
            emit(&p);
        }
    }

    fn is_addressed_to_me(&self, pkt: &[u8]) -> bool {
        self.addresses.contains(&addresses_of(pkt).1)
    }

    fn takes_ike(&self) -> bool {
        true
    }

    fn link(&self) -> LinkType {
        LinkType::RawIp
    }
}

/// Source and destination of an IP packet.
fn addresses_of(pkt: &[u8]) -> (IpAddr, IpAddr) {
    if pkt[0] >> 4 == 4 {
        let a = |at: usize| IpAddr::from(<[u8; 4]>::try_from(&pkt[at..at + 4]).unwrap());
        (a(12), a(16))
    } else {
        let a = |at: usize| IpAddr::from(<[u8; 16]>::try_from(&pkt[at..at + 16]).unwrap());
        (a(8), a(24))
    }
}

/// `gw` with an [`IkeHost`] for `addresses` on its network side; what it
/// took and what it is to send.
#[allow(clippy::type_complexity)]
fn with_ike_host(
    gw: &mut Gateway,
    addresses: &[&str],
) -> (Arc<Mutex<Vec<Vec<u8>>>>, Arc<Mutex<Vec<Vec<u8>>>>) {
    let took = Arc::default();
    let sends = Arc::default();
    gw.set_endpoint(
        Side::Network,
        Box::new(IkeHost {
            addresses: addresses.iter().map(|a| ip(a)).collect(),
            took: Arc::clone(&took),
            sends: Arc::clone(&sends),
        }),
    );
    (took, sends)
}

/// An IKE message from `src`:`sport` to `dst`:`dport`; on port 4500
/// behind the non-ESP marker (RFC 3948 2.2).
fn ike(src: &str, dst: &str, sport: u16, dport: u16) -> Vec<u8> {
    let mut p = bitsgw_wire::craft::udp_packet(ip(src), ip(dst), sport, dport, 40);
    if dport == 4500 {
        let at = if p[0] >> 4 == 4 { 28 } else { 48 };
        p[at..at + 4].fill(0);
    }
    p
}

/// Asserts that the network side's [`IkeHost`] took `pkt` unchanged and
/// its answer to `answer_to` alone left, on the network side.
fn answers_ike(gw: &mut Gateway, took: &Mutex<Vec<Vec<u8>>>, pkt: Vec<u8>, answer_to: &str) {
    let (o, out) = run(gw, Side::Network, &pkt, Timestamp::ZERO);
    assert_eq!(o, Outcome::Ipsec(bitsgw_ipsec::Disposition::Deliver));
    assert_eq!(addresses_of(&only(out, Side::Network)).1, ip(answer_to));
    assert_eq!(took.lock().unwrap().last(), Some(&pkt), "taken unchanged");
}

/// Asserts that what the [`IkeHost`] originates leaves on the network
/// side unchanged.
fn sends_ike(gw: &mut Gateway, sends: &Mutex<Vec<Vec<u8>>>, pkt: Vec<u8>) {
    sends.lock().unwrap().push(pkt.clone());
    assert_eq!(only(poll(gw, Timestamp::ZERO), Side::Network), pkt);
}

/// Asserts that neither the IPsec stage nor the mobility stage has seen a
/// packet.
fn untouched(gw: &Gateway) {
    let c = gw.stage().counters();
    assert_eq!(c.total_drops(), 0);
    assert_eq!(
        (c.outbound_protected, c.outbound_bypassed),
        (0, 0),
        "IPsec sent nothing"
    );
    assert_eq!(
        (c.inbound_decrypted, c.inbound_bypassed, c.ike_passed),
        (0, 0, 0),
        "IPsec received nothing"
    );
    let m = gw.mobility().unwrap().counters();
    assert_eq!(m.total_drops(), 0);
    assert_eq!(m.all_events().map(|(_, n)| n).sum::<u64>(), 0);
}

/// RFC 4301 5.1 and 6, RFC 4877 4.4: on a TUN port the home agent's IKE
/// (to its IPv6 address on port 500, to its IPv4 address on 4500 behind a
/// NAT) reaches its own host stack before the mobility stage, and the
/// answers leave as they were made, through neither stage; ESP in UDP on
/// 4500 and DSMIPv6's UDP 4191 still go to the stages.
#[test]
fn home_agent_ike_on_a_tun_port_bypasses_the_mobility_and_ipsec_stages() {
    let mut gw = home_agent(false);
    let (took, sends) = with_ike_host(&mut gw, &[HA, HA4]);
    answers_ike(&mut gw, &took, ike(COA6, HA, 500, 500), COA6);
    answers_ike(
        &mut gw,
        &took,
        ike(NAT_PUBLIC, HA4, 41000, 4500),
        NAT_PUBLIC,
    );
    // What the IKE side originates leaves on the network port unchanged.
    sends_ike(&mut gw, &sends, ike(HA, COA6B, 500, 500));
    untouched(&gw);
    // Not IKE, or not to the appliance: the stages as before.
    let mut esp_in_udp = ike(NAT_PUBLIC, HA4, 41000, 4500);
    esp_in_udp[28..32].copy_from_slice(&0x2001u32.to_be_bytes());
    let dsmip = bitsgw_wire::craft::udp_packet(ip(COA4), ip(HA4), 4191, 4191, 40);
    let elsewhere = ike(COA6, CN, 500, 500);
    for pkt in [esp_in_udp, dsmip, elsewhere] {
        let (o, _) = run(&mut gw, Side::Network, &pkt, Timestamp::ZERO);
        assert_ne!(o, Outcome::Ipsec(bitsgw_ipsec::Disposition::Deliver));
    }
    assert_eq!(took.lock().unwrap().len(), 2);
    let seen =
        gw.stage().counters().total_drops() + gw.mobility().unwrap().counters().total_drops();
    assert_eq!(seen, 3, "each judged by a stage");
}

/// The mobile node's IKE from its care-of addresses (IPv6, and IPv4 for
/// DSMIPv6) reaches its host stack on the TUN port before the mobility
/// stage, away from home, and its IKE leaves through neither stage.
#[test]
fn mobile_node_ike_on_a_tun_port_bypasses_the_mobility_and_ipsec_stages() {
    let mut gw = mobile_node();
    let (took, sends) = with_ike_host(&mut gw, &[COA6, COA4_NAT_INSIDE]);
    answers_ike(&mut gw, &took, ike(HA, COA6, 500, 500), HA);
    answers_ike(&mut gw, &took, ike(HA4, COA4_NAT_INSIDE, 4500, 4500), HA4);
    sends_ike(&mut gw, &sends, ike(COA6, HA, 500, 500));
    untouched(&gw);
    // Registered at a care-of address, the node's IKE still bypasses
    // the tunnel.
    mn(&mut gw).handle_move(Attachment::V6(v6(COA6)), true, Timestamp::ZERO);
    let (o, out) = run(
        &mut gw,
        Side::Network,
        &ike(HA, COA6, 500, 500),
        Timestamp::ZERO,
    );
    assert_eq!(o, Outcome::Ipsec(bitsgw_ipsec::Disposition::Deliver));
    let answer = out.iter().find(|(_, p)| p[6] == 17).unwrap();
    assert_eq!(answer.0, Side::Network);
    assert_eq!(addresses_of(&answer.1), (ip(COA6), ip(HA)));
    assert_eq!(took.lock().unwrap().len(), 3);
}
