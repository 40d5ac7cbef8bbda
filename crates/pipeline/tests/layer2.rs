//! Layer 2 fails closed (issue 16): an IPv4 packet of a protected flow
//! (site A's `192.0.2.0/24` to site B's `198.51.100.0/24`,
//! `policies/site-to-site-a.json`) in each encapsulation a LAN may carry,
//! replayed through gateway A both ways. Behind 802.1Q and 802.1ad tags it
//! goes through the SPD and leaves as ESP with its tags (and gateway B
//! delivers it with them); in every other encapsulation it is dropped and
//! counted under its EtherType. No frame on the network side carries the
//! test payload in clear, and no cleartext reaches the host side.
#![allow(clippy::unwrap_used)]

mod common;

use bitsgw_ipsec::config::parse_policy;
use bitsgw_ipsec::{DropReason, IpsecStage, StageConfig};
use bitsgw_pipeline::replay::{self, ReplayInput};
use bitsgw_pipeline::{Gateway, Layer2Policy, LinkType, NoTap, PipelineDrop, Side};
use bitsgw_wire::{ip, Timestamp};
use common::*;

/// What must become of a frame.
#[derive(Debug, Clone, Copy)]
enum Want {
    /// IP behind `header_len` octets of Ethernet header and tags: it goes
    /// through the SPD and keeps the header.
    Ip { header_len: usize },
    /// Dropped and counted under this EtherType.
    Dropped { ethertype: u16 },
}

/// An encapsulation: its name, what comes between the MAC addresses and
/// the IPv4 packet, and what must become of it.
struct Encap {
    name: &'static str,
    between: fn(ip_len: usize) -> Vec<u8>,
    want: Want,
}

const C_TAG: [u8; 4] = [0x81, 0x00, 0x20, 0x0a];
const S_TAG: [u8; 4] = [0x88, 0xa8, 0x00, 0x64];
const IPV4: [u8; 2] = [0x08, 0x00];

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn encaps() -> Vec<Encap> {
    vec![
        Encap {
            name: "802.1Q",
            between: |_| cat(&[&C_TAG, &IPV4]),
            want: Want::Ip { header_len: 18 },
        },
        Encap {
            name: "802.1ad QinQ",
            between: |_| cat(&[&S_TAG, &C_TAG, &IPV4]),
            want: Want::Ip { header_len: 22 },
        },
        Encap {
            name: "802.1ad S-tag alone",
            between: |_| cat(&[&S_TAG, &IPV4]),
            want: Want::Ip { header_len: 18 },
        },
        Encap {
            name: "QinQ 0x9100",
            between: |_| cat(&[&[0x91, 0x00, 0x00, 0x64], &C_TAG, &IPV4]),
            want: Want::Dropped { ethertype: 0x9100 },
        },
        Encap {
            name: "two 802.1Q tags",
            between: |_| cat(&[&C_TAG, &C_TAG, &IPV4]),
            want: Want::Dropped { ethertype: 0x8100 },
        },
        Encap {
            name: "three tags",
            between: |_| cat(&[&S_TAG, &C_TAG, &C_TAG, &IPV4]),
            want: Want::Dropped { ethertype: 0x8100 },
        },
        Encap {
            name: "LLC/SNAP",
            // 802.3 length, LLC DSAP/SSAP 0xaa, UI, SNAP OUI 0 and the
            // EtherType (RFC 1042).
            between: |ip_len| {
                let len = u16::try_from(8 + ip_len).unwrap().to_be_bytes();
                cat(&[&len, &[0xaa, 0xaa, 0x03, 0, 0, 0], &IPV4])
            },
            want: Want::Dropped { ethertype: 0x0030 },
        },
        Encap {
            name: "PPPoE session",
            // RFC 2516 4: version/type, code 0, session, length; PPP
            // protocol 0x0021 (IPv4).
            between: |ip_len| {
                let len = u16::try_from(2 + ip_len).unwrap().to_be_bytes();
                cat(&[&[0x88, 0x64, 0x11, 0x00, 0x12, 0x34], &len, &[0x00, 0x21]])
            },
            want: Want::Dropped { ethertype: 0x8864 },
        },
        Encap {
            name: "MPLS",
            // RFC 3032: label 100, bottom of stack, TTL 64.
            between: |_| vec![0x88, 0x47, 0x00, 0x06, 0x41, 0x40],
            want: Want::Dropped { ethertype: 0x8847 },
        },
        Encap {
            name: "MPLS behind 802.1Q",
            between: |_| cat(&[&C_TAG, &[0x88, 0x47, 0x00, 0x06, 0x41, 0x40]]),
            want: Want::Dropped { ethertype: 0x8847 },
        },
        Encap {
            name: "unknown EtherType",
            between: |_| vec![0x12, 0x34],
            want: Want::Dropped { ethertype: 0x1234 },
        },
    ]
}

/// `ip` in `encap`, as sent from `from`.
fn frame(encap: &Encap, from: Side, ip: &[u8]) -> Vec<u8> {
    let plain = eth(from, ip);
    cat(&[&plain[..12], &(encap.between)(ip.len()), ip])
}

/// Frames out of each side of `gw` for `frames` in from `from`.
fn replay_through(gw: &mut Gateway, from: Side, frames: &[Vec<u8>]) -> replay::ReplayOutput {
    let input = ReplayInput {
        side: from,
        link: LinkType::Ethernet,
        frames: frames
            .iter()
            .enumerate()
            .map(|(i, f)| (Timestamp::from_millis(1_000 + i as u64), f.clone()))
            .collect(),
    };
    replay::run(gw, &[input], Vec::new(), &mut NoTap)
}

fn gateway_b() -> Gateway {
    Gateway::new(stage("site-to-site-b.json"))
}

#[test]
fn protected_ipv4_in_every_encapsulation_never_crosses_in_clear() {
    let out_ip = marked_udp(HOST_A, HOST_B, 64, true);
    let in_ip = marked_udp(HOST_B, HOST_A, 64, true);
    let mut problems = Vec::new();
    for encap in encaps() {
        let mut a = gateway_a();
        let mut b = gateway_b();
        let sent = frame(&encap, Side::Host, &out_ip);
        let to_net = replay_through(&mut a, Side::Host, std::slice::from_ref(&sent));
        let cleartext_in = frame(&encap, Side::Network, &in_ip);
        let to_host = replay_through(&mut a, Side::Network, std::slice::from_ref(&cleartext_in));
        let mut problem = |p: String| problems.push(format!("{}: {p}", encap.name));
        if to_net.network.iter().any(|f| carries_mark(&f.1)) {
            problem("the test payload left in clear".into());
        }
        if !to_host.host.is_empty() {
            problem(format!("{} frames injected host-ward", to_host.host.len()));
        }
        match encap.want {
            Want::Ip { header_len } => {
                let [(_, wire)] = &to_net.network[..] else {
                    problem(format!("{} frames to the network", to_net.network.len()));
                    continue;
                };
                if wire[..header_len] != sent[..header_len] {
                    problem("the tags were not kept".into());
                }
                if ip::parse(&wire[header_len..]).map(|m| m.proto).ok() != Some(50) {
                    problem("not ESP after the tags".into());
                }
                // Gateway B decrypts it and delivers it with its tags.
                let delivered = replay_through(&mut b, Side::Network, std::slice::from_ref(wire));
                if delivered.host.iter().map(|f| &f.1).ne([&sent]) {
                    problem(format!("B delivered {:?}", delivered.host));
                }
                // The cleartext A got from the network met the inbound SPD.
                if a.stage().counters().total_drops() != 1 {
                    problem("cleartext from the network was not dropped by the SPD".into());
                }
            }
            Want::Dropped { ethertype } => {
                if !to_net.network.is_empty() {
                    problem(format!("{} frames to the network", to_net.network.len()));
                }
                let c = a.counters();
                if c.drops(PipelineDrop::Layer2) != 2 || c.layer2_dropped.get(ethertype) != 2 {
                    problem(format!(
                        "counted {} layer-2 drops, {} under {ethertype:#06x}",
                        c.drops(PipelineDrop::Layer2),
                        c.layer2_dropped.get(ethertype)
                    ));
                }
                if c.non_ip_passed != 0 {
                    problem("counted as passed".into());
                }
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn arp_passes_with_or_without_tags_and_other_types_only_when_allowed() {
    let arp = [0u8; 28];
    let untagged = cat(&[&[0xff; 6], &HOST_MAC, &[0x08, 0x06], &arp]);
    let tagged = cat(&[&[0xff; 6], &HOST_MAC, &C_TAG, &[0x08, 0x06], &arp]);
    let qinq = cat(&[&[0xff; 6], &HOST_MAC, &S_TAG, &C_TAG, &[0x08, 0x06], &arp]);
    let lldp = cat(&[
        &[0x01, 0x80, 0xc2, 0, 0, 0x0e],
        &HOST_MAC,
        &[0x88, 0xcc],
        &[0; 32],
    ]);
    let pppoe = frame(
        &encaps()[7],
        Side::Host,
        &marked_udp(HOST_A, HOST_B, 64, true),
    );
    for side in [Side::Host, Side::Network] {
        let mut gw = gateway_a();
        let frames = [untagged.clone(), tagged.clone(), qinq.clone(), lldp.clone()];
        let out = replay_through(&mut gw, side, &frames);
        let passed = match side.other() {
            Side::Host => &out.host,
            Side::Network => &out.network,
        };
        let passed: Vec<&Vec<u8>> = passed.iter().map(|f| &f.1).collect();
        assert_eq!(passed, vec![&untagged, &tagged, &qinq], "{side:?}");
        assert_eq!(gw.counters().non_ip_passed, 3);
        assert_eq!(gw.counters().layer2_dropped.get(0x88cc), 1);

        // Allowed by EtherType: LLDP passes, PPPoE still does not.
        let mut gw = gateway_a();
        gw.set_layer2_policy(Layer2Policy {
            pass_unknown: false,
            allow: vec![0x88cc],
        });
        let out = replay_through(&mut gw, side, &[lldp.clone(), pppoe.clone()]);
        assert_eq!(out.host.len() + out.network.len(), 1, "{side:?}");
        assert_eq!(gw.counters().layer2_dropped.get(0x8864), 1);

        // pass_unknown: the bump is transparent to what it does not parse
        // (the choice `check` warns about).
        let mut gw = gateway_a();
        gw.set_layer2_policy(Layer2Policy {
            pass_unknown: true,
            allow: Vec::new(),
        });
        let out = replay_through(&mut gw, side, std::slice::from_ref(&pppoe));
        assert_eq!(out.host.len() + out.network.len(), 1, "{side:?}");
        assert_eq!(gw.counters().drops(PipelineDrop::Layer2), 0);
    }
}

/// An IPv4 packet that leaves as IPv6 ESP (an IPv4 flow through a tunnel
/// between IPv6 gateways) gets the IPv6 EtherType after its tags.
#[test]
fn the_inner_ethertype_follows_the_outer_family_behind_the_tags() {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies/site-to-site-a.json"),
    )
    .unwrap();
    let sa = text.find("\"name\": \"a-to-b-v4\"").unwrap();
    let tunnel = sa + text[sa..].find("\"local\": \"gw_a\"").unwrap();
    let end = tunnel + text[tunnel..].find('}').unwrap();
    let v6_tunnel = format!(
        "{}\"local\": \"2001:db8:f::1\", \"remote\": \"2001:db8:f::2\"{}",
        &text[..tunnel],
        &text[end..]
    );
    let mut stage = IpsecStage::new(StageConfig::default());
    parse_policy(&v6_tunnel, "v6-tunnel.json")
        .unwrap()
        .apply(&mut stage, Timestamp::ZERO)
        .unwrap();
    let mut gw = Gateway::new(stage);
    let sent = frame(
        &encaps()[1],
        Side::Host,
        &marked_udp(HOST_A, HOST_B, 64, true),
    );
    let out = replay_through(&mut gw, Side::Host, std::slice::from_ref(&sent));
    let [(_, wire)] = &out.network[..] else {
        panic!("{:?}, drops {:?}", out.network, gw.stage().counters());
    };
    assert_eq!(&wire[..20], &sent[..20], "MACs and both tags kept");
    assert_eq!(&wire[20..22], &[0x86, 0xdd]);
    assert_eq!(ip::parse(&wire[22..]).unwrap().proto, 50);
    assert_eq!(
        gw.stage().counters().drops(DropReason::NoSa),
        0,
        "the SA was used"
    );
}
