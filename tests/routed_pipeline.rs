//! Routed mode over in-memory Ethernet frames: gateway A
//! (policies/site-to-site-a.json) is the router of two hosts on its host
//! side and a host behind a router on the network side, with its own
//! smoltcp endpoints answering ARP for its addresses. Gateway B
//! (site-to-site-b.json) is an inline bump in front of the far site.
#![allow(clippy::unwrap_used)]

use bitsgw_io::SmoltcpEndpoint;
use bitsgw_ipsec::config::parse_policy;
use bitsgw_ipsec::{IpsecStage, StageConfig};
use bitsgw_pipeline::neighbor::{MAX_HELD, MAX_SOLICIT};
use bitsgw_pipeline::routed::{Route, Routed, RoutedConfig, RoutedSide};
use bitsgw_pipeline::{Gateway, LinkType, NoTap, PipelineDrop, Side};
use bitsgw_wire::address_resolution;
use bitsgw_wire::craft::udp_packet;
use bitsgw_wire::{PacketBuf, Timestamp};
use std::net::IpAddr;
use std::path::PathBuf;

const A_HOST_MAC: [u8; 6] = [2, 0, 0, 0, 0xa, 1];
const A_NET_MAC: [u8; 6] = [2, 0, 0, 0, 0xa, 2];
const H1_MAC: [u8; 6] = [2, 0, 0, 0, 1, 0x10];
const H2_MAC: [u8; 6] = [2, 0, 0, 0, 1, 0x11];
const ROUTER_MAC: [u8; 6] = [2, 0, 0, 0, 0xfe, 0xfe];
const FAR_MAC: [u8; 6] = [2, 0, 0, 0, 0xb, 0x20];

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn stage(name: &str) -> IpsecStage {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("policies")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    let set = parse_policy(&text, &path.display().to_string()).unwrap();
    let mut stage = IpsecStage::new(StageConfig::default());
    set.apply(&mut stage, Timestamp::ZERO).unwrap();
    stage
}

/// Gateway A, routed, with its endpoints.
fn gateway_a() -> Gateway {
    let mut gw = Gateway::new(stage("site-to-site-a.json"));
    let host = vec![(ip("192.0.2.1"), 24)];
    let net = vec![(ip("203.0.113.1"), 24)];
    gw.set_endpoint(
        Side::Host,
        Box::new(SmoltcpEndpoint::new(A_HOST_MAC, &host).unwrap()),
    );
    gw.set_endpoint(
        Side::Network,
        Box::new(SmoltcpEndpoint::new(A_NET_MAC, &net).unwrap()),
    );
    gw.set_routed(Routed::new(RoutedConfig {
        host: RoutedSide {
            mac: A_HOST_MAC,
            addresses: host,
            routes: vec![Route {
                prefix: ip("192.0.2.0"),
                len: 24,
                via: None,
            }],
        },
        network: RoutedSide {
            mac: A_NET_MAC,
            addresses: net,
            routes: vec![Route {
                prefix: ip("0.0.0.0"),
                len: 0,
                via: Some(ip("203.0.113.254")),
            }],
        },
    }));
    gw
}

fn eth(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An ARP request (op 1) or reply (op 2).
fn arp(op: u8, smac: [u8; 6], sip: [u8; 4], tmac: [u8; 6], tip: [u8; 4]) -> Vec<u8> {
    let mut p = vec![0, 1, 8, 0, 6, 4, 0, op];
    p.extend_from_slice(&smac);
    p.extend_from_slice(&sip);
    p.extend_from_slice(&tmac);
    p.extend_from_slice(&tip);
    let dst = if op == 1 { [0xff; 6] } else { tmac };
    eth(dst, smac, 0x0806, &p)
}

fn run(gw: &mut Gateway, from: Side, frame: &[u8], now: Timestamp) -> Vec<(Side, Vec<u8>)> {
    let mut out = Vec::new();
    let mut buf = PacketBuf::from_slice(frame);
    gw.handle_frame(
        from,
        LinkType::Ethernet,
        &mut buf,
        now,
        &mut |side, f| out.push((side, f.to_vec())),
        &mut NoTap,
    );
    out
}

fn poll(gw: &mut Gateway, now: Timestamp) -> Vec<(Side, Vec<u8>)> {
    if gw.poll_timeout().is_some_and(|t| t <= now) {
        gw.handle_timeout(now);
    }
    let mut out = Vec::new();
    gw.poll_endpoints(now, &mut |side, f| out.push((side, f.to_vec())), &mut NoTap);
    out
}

/// Whether `f` is an ARP request from `smac`/`sip` for `tip`.
fn is_arp_request(f: &[u8], smac: [u8; 6], sip: [u8; 4], tip: [u8; 4]) -> bool {
    f.len() >= 42
        && f[..6] == [0xff; 6]
        && f[6..12] == smac
        && f[12..14] == [8, 6]
        && f[20..22] == [0, 1]
        && f[22..28] == smac
        && f[28..32] == sip
        && f[38..42] == tip
}

#[test]
fn hosts_reach_the_far_site_through_a_routed_gateway() {
    let mut a = gateway_a();
    let mut b = Gateway::new(stage("site-to-site-b.json"));
    let t0 = Timestamp::from_secs(1);

    // Host 1 asks for its gateway: the endpoint answers, from A's MAC.
    let out = run(
        &mut a,
        Side::Host,
        &arp(1, H1_MAC, [192, 0, 2, 10], [0; 6], [192, 0, 2, 1]),
        t0,
    );
    assert_eq!(out.len(), 1, "{out:?}");
    let (side, reply) = &out[0];
    assert_eq!(*side, Side::Host);
    assert_eq!(&reply[..12], &[H1_MAC, A_HOST_MAC].concat()[..]);
    assert_eq!(&reply[20..22], &[0, 2], "an ARP reply");
    assert_eq!(&reply[22..28], &A_HOST_MAC);
    assert_eq!(&reply[28..32], &[192, 0, 2, 1]);
    assert_eq!(a.counters().local_delivered, 1);

    // Host 1 sends to the far site: held until the router is resolved.
    let inner = udp_packet(ip("192.0.2.10"), ip("198.51.100.20"), 1000, 2000, 64);
    let to_gw = eth(A_HOST_MAC, H1_MAC, 0x0800, &inner);
    let out = run(&mut a, Side::Host, &to_gw, t0);
    assert_eq!(out.len(), 1, "only the ARP request leaves: {out:?}");
    assert_eq!(out[0].0, Side::Network);
    assert!(is_arp_request(
        &out[0].1,
        A_NET_MAC,
        [203, 0, 113, 1],
        [203, 0, 113, 254]
    ));
    assert!(
        run(&mut a, Side::Host, &to_gw, t0).is_empty(),
        "held too, not asked again"
    );
    assert_eq!(a.counters().net_tx.frames, 1);

    // The router answers: both packets leave as ESP, from A's MAC to the
    // router's.
    let out = run(
        &mut a,
        Side::Network,
        &arp(
            2,
            ROUTER_MAC,
            [203, 0, 113, 254],
            A_NET_MAC,
            [203, 0, 113, 1],
        ),
        t0,
    );
    assert_eq!(out.len(), 2, "{out:?}");
    for (side, f) in &out {
        assert_eq!(*side, Side::Network);
        assert_eq!(&f[..6], &ROUTER_MAC);
        assert_eq!(&f[6..12], &A_NET_MAC);
        assert_eq!(&f[12..14], &[8, 0]);
        assert_eq!(f[14 + 9], 50, "ESP");
        assert_eq!(&f[14 + 12..14 + 20], &[203, 0, 113, 1, 203, 0, 113, 2]);
    }
    // Resolved now: the next packet leaves at once.
    let out = run(&mut a, Side::Host, &to_gw, t0);
    assert_eq!(out.len(), 1);
    assert_eq!(&out[0].1[..6], &ROUTER_MAC);

    // Gateway B (inline) decrypts it for the far host.
    let out_b = run(&mut b, Side::Network, &out[0].1, t0);
    assert_eq!(out_b.len(), 1);
    assert_eq!(&out_b[0].1[14..], &inner[..]);

    // The far host answers host 2: B protects it, A decrypts it and finds
    // host 2 by ARP on the host side.
    let back = udp_packet(ip("198.51.100.20"), ip("192.0.2.11"), 2000, 1000, 48);
    let out_b = run(
        &mut b,
        Side::Host,
        &eth(ROUTER_MAC, FAR_MAC, 0x0800, &back),
        t0,
    );
    let mut esp = out_b[0].1.clone();
    esp[..6].copy_from_slice(&A_NET_MAC);
    esp[6..12].copy_from_slice(&ROUTER_MAC);
    let out = run(&mut a, Side::Network, &esp, t0);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].0, Side::Host);
    assert!(is_arp_request(
        &out[0].1,
        A_HOST_MAC,
        [192, 0, 2, 1],
        [192, 0, 2, 11]
    ));
    let out = run(
        &mut a,
        Side::Host,
        &arp(2, H2_MAC, [192, 0, 2, 11], A_HOST_MAC, [192, 0, 2, 1]),
        t0,
    );
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].0, Side::Host);
    assert_eq!(&out[0].1[..12], &[H2_MAC, A_HOST_MAC].concat()[..]);
    assert_eq!(&out[0].1[14..], &back[..]);

    // Host 1 was learnt from its ARP request: no request for it.
    let back1 = udp_packet(ip("198.51.100.20"), ip("192.0.2.10"), 2000, 1000, 48);
    let out_b = run(
        &mut b,
        Side::Host,
        &eth(ROUTER_MAC, FAR_MAC, 0x0800, &back1),
        t0,
    );
    let mut esp = out_b[0].1.clone();
    esp[..6].copy_from_slice(&A_NET_MAC);
    let out = run(&mut a, Side::Network, &esp, t0);
    assert_eq!(out.len(), 1);
    assert_eq!(&out[0].1[..6], &H1_MAC);

    // Not forwarded: to another station's MAC, ARP between the hosts.
    let drops = a.counters().drops(PipelineDrop::NotRouted);
    let mut foreign = to_gw.clone();
    foreign[..6].copy_from_slice(&H2_MAC);
    assert!(run(&mut a, Side::Host, &foreign, t0).is_empty());
    assert!(run(
        &mut a,
        Side::Host,
        &arp(1, H1_MAC, [192, 0, 2, 10], [0; 6], [192, 0, 2, 11]),
        t0
    )
    .is_empty());
    assert_eq!(a.counters().drops(PipelineDrop::NotRouted), drops + 2);
    assert_eq!(a.counters().drops(PipelineDrop::NeighborUnresolved), 0);
}

#[test]
fn an_unanswered_next_hop_is_asked_three_times_then_its_packets_dropped() {
    let mut a = gateway_a();
    let inner = udp_packet(ip("192.0.2.10"), ip("198.51.100.20"), 1000, 2000, 64);
    let to_gw = eth(A_HOST_MAC, H1_MAC, 0x0800, &inner);
    let t0 = Timestamp::from_secs(10);
    let mut requests = 0;
    for _ in 0..MAX_HELD + 2 {
        requests += run(&mut a, Side::Host, &to_gw, t0).len();
    }
    assert_eq!(requests, 1);
    assert_eq!(
        a.counters().drops(PipelineDrop::NeighborUnresolved),
        2,
        "the hold is bounded"
    );
    for ms in (0..4000).step_by(50) {
        let now = Timestamp(t0.0 + ms * 1_000_000);
        for (side, f) in poll(&mut a, now) {
            assert_eq!(side, Side::Network);
            assert!(is_arp_request(
                &f,
                A_NET_MAC,
                [203, 0, 113, 1],
                [203, 0, 113, 254]
            ));
            assert!(ms < 3000, "asked at {ms} ms");
            requests += 1;
        }
    }
    assert_eq!(requests, usize::from(MAX_SOLICIT));
    assert_eq!(
        a.counters().drops(PipelineDrop::NeighborUnresolved),
        2 + MAX_HELD as u64
    );
    let stats = a.routed().unwrap().neighbor_stats(Side::Network);
    assert_eq!(stats.dropped_timeout, MAX_HELD as u64);
    assert_eq!(a.counters().net_tx.frames, u64::from(MAX_SOLICIT));
}

/// The packets the mobility stage originates take the routed path too: a
/// mobile node's Binding Update waits for the IPv6 router's Neighbor
/// Advertisement, then leaves from the appliance's MAC to the router's
/// (inline on Ethernet it would have had no header to reuse).
#[test]
fn a_binding_update_leaves_to_the_resolved_ipv6_router() {
    use bitsgw_mobility::mn::{Attachment, MnConfig, MobileNode};
    use bitsgw_pipeline::Mobility;
    const MN_HOST_MAC: [u8; 6] = [2, 0, 0, 0, 0xc, 1];
    const MN_NET_MAC: [u8; 6] = [2, 0, 0, 0, 0xc, 2];
    let v6 = |s: &str| s.parse::<std::net::Ipv6Addr>().unwrap().octets();
    let mut gw = Gateway::new(stage("dsmip-hostwide-mn.json"));
    let coa = ip("2001:db8:2::100");
    let router = ip("2001:db8:2::1");
    gw.set_endpoint(
        Side::Network,
        Box::new(SmoltcpEndpoint::new(MN_NET_MAC, &[(coa, 64)]).unwrap()),
    );
    gw.set_routed(Routed::new(RoutedConfig {
        host: RoutedSide {
            mac: MN_HOST_MAC,
            addresses: vec![(ip("2001:db8:1::2"), 64)],
            routes: vec![Route {
                prefix: ip("2001:db8:1::"),
                len: 64,
                via: None,
            }],
        },
        network: RoutedSide {
            mac: MN_NET_MAC,
            addresses: vec![(coa, 64)],
            routes: vec![Route {
                prefix: ip("::"),
                len: 0,
                via: Some(router),
            }],
        },
    }));
    let mut mn = MobileNode::new(MnConfig::new(v6("2001:db8:1::100"), v6("2001:db8:1::1")));
    let t0 = Timestamp::from_secs(1);
    mn.handle_move(Attachment::V6(v6("2001:db8:2::100")), true, t0);
    gw.set_mobility(Mobility::MobileNode(mn));

    let out = poll(&mut gw, t0);
    assert_eq!(out.len(), 1, "only the solicitation leaves: {out:?}");
    let (side, ns) = &out[0];
    assert_eq!(*side, Side::Network);
    assert_eq!(
        &ns[..12],
        &[[0x33, 0x33, 0xff, 0, 0, 1], MN_NET_MAC].concat()[..]
    );
    assert_eq!(
        &ns[14 + 8..14 + 24],
        &v6("2001:db8:2::100"),
        "from the care-of address"
    );
    assert_eq!(ns[14 + 40], 135, "a Neighbor Solicitation");
    assert_eq!(
        &ns[14 + 48..14 + 64],
        &v6("2001:db8:2::1"),
        "for the router"
    );

    let mut na = [0u8; address_resolution::ND_FRAME_LEN];
    let flags = address_resolution::AdvertisementFlags {
        solicited: true,
        override_flag: true,
    };
    address_resolution::neighbor_advertisement(
        ROUTER_MAC,
        MN_NET_MAC,
        v6("2001:db8:2::1"),
        v6("2001:db8:2::100"),
        v6("2001:db8:2::1"),
        flags,
        &mut na,
    );
    let out = run(&mut gw, Side::Network, &na, t0);
    assert_eq!(out.len(), 1, "the Binding Update: {out:?}");
    let (side, bu) = &out[0];
    assert_eq!(*side, Side::Network);
    assert_eq!(
        &bu[..14],
        &[&ROUTER_MAC[..], &MN_NET_MAC, &[0x86, 0xdd]].concat()[..]
    );
    assert_eq!(&bu[14 + 8..14 + 24], &v6("2001:db8:2::100"));
    assert_eq!(
        &bu[14 + 24..14 + 40],
        &v6("2001:db8:1::1"),
        "to the home agent"
    );
}

/// Routed mode has no VLANs: a tagged frame, even one to the appliance's
/// MAC carrying IP for the far site or ARP for its own address, is neither
/// forwarded nor answered; it is dropped and counted under its outer
/// tag's TPID.
#[test]
fn routed_mode_drops_tagged_frames_and_counts_them() {
    let mut a = gateway_a();
    let t0 = Timestamp::from_secs(1);
    let tag = |f: &[u8], tpid: u16| -> Vec<u8> {
        let mut t = f[..12].to_vec();
        t.extend_from_slice(&tpid.to_be_bytes());
        t.extend_from_slice(&[0, 7]);
        t.extend_from_slice(&f[12..]);
        t
    };
    let to_far = udp_packet(ip("192.0.2.10"), ip("198.51.100.20"), 1000, 2000, 64);
    let ip_frame = eth(A_HOST_MAC, H1_MAC, 0x0800, &to_far);
    let arp_for_a = arp(1, H1_MAC, [192, 0, 2, 10], [0; 6], [192, 0, 2, 1]);
    // Untagged, the ARP request is answered.
    assert_eq!(run(&mut a, Side::Host, &arp_for_a, t0).len(), 1);
    for (from, frame, tpid) in [
        (Side::Host, &ip_frame, 0x8100),
        (Side::Host, &arp_for_a, 0x8100),
        (Side::Host, &ip_frame, 0x88a8),
        (Side::Network, &ip_frame, 0x8100),
    ] {
        let out = run(&mut a, from, &tag(frame, tpid), t0);
        assert!(out.is_empty(), "{from:?} {tpid:#x}: {out:?}");
        assert!(poll(&mut a, t0).is_empty());
    }
    let c = a.counters();
    assert_eq!(c.drops(PipelineDrop::Layer2), 4);
    assert_eq!(c.layer2_dropped.get(0x8100), 3);
    assert_eq!(c.layer2_dropped.get(0x88a8), 1);
    assert_eq!(c.drops(PipelineDrop::NotRouted), 0);
}
