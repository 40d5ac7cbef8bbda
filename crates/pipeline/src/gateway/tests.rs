//! The gateway's dispatch: which frames go to the appliance's endpoint,
//! the IPsec stage or the mobility stage, and which are dropped under
//! which reason, with exactly what leaves.

use super::*;
use crate::routed::{Route, RoutedConfig, RoutedSide};
use bitsgw_ipsec::config::parse_policy;
use bitsgw_ipsec::{DropReason, StageConfig};
use bitsgw_mobility::counters::MobilityEvent;
use bitsgw_mobility::ha::{HaConfig, HomeAgent, ServedNode, DEFAULT_NAT_REFRESH};
use bitsgw_wire::address_resolution::{self as ar, ARP_FRAME_LEN, ND_FRAME_LEN};
use bitsgw_wire::craft::{ip_packet, udp_packet};
use core::time::Duration;
use std::net::IpAddr;

const HOST_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const ROUTER_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
const OWN_HOST_MAC: [u8; 6] = [2, 0, 0, 0, 0xa, 1];
const OWN_NET_MAC: [u8; 6] = [2, 0, 0, 0, 0xa, 2];
const LLDP: u16 = 0x88cc;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Site A of the shipped site-to-site policy: 192.0.2.0/24 to
/// 198.51.100.0/24 is protected, the rest discarded.
fn gateway() -> Gateway {
    let text = include_str!("../../../../policies/site-to-site-a.json");
    let set = parse_policy(text, "site-to-site-a.json").unwrap();
    let mut stage = IpsecStage::new(StageConfig::default());
    set.apply(&mut stage, Timestamp::ZERO).unwrap();
    Gateway::new(stage)
}

fn eth(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A packet from site A's host to site B's (protected by the SPD).
fn protected() -> Vec<u8> {
    udp_packet(ip("192.0.2.10"), ip("198.51.100.20"), 1000, 2000, 64)
}

/// Handles `frame` from `from` at `now`: the outcome and what left.
fn run_at(
    gw: &mut Gateway,
    from: Side,
    frame: &[u8],
    now: Timestamp,
) -> (Outcome, Vec<(Side, Vec<u8>)>) {
    let mut out = Vec::new();
    let mut buf = PacketBuf::from_slice(frame);
    let o = gw.handle_frame(
        from,
        LinkType::Ethernet,
        &mut buf,
        now,
        &mut |side, f| out.push((side, f.to_vec())),
        &mut NoTap,
    );
    (o, out)
}

fn run(gw: &mut Gateway, from: Side, frame: &[u8]) -> (Outcome, Vec<(Side, Vec<u8>)>) {
    run_at(gw, from, frame, Timestamp::ZERO)
}

fn poll(gw: &mut Gateway, now: Timestamp) -> Vec<(Side, Vec<u8>)> {
    let mut out = Vec::new();
    gw.poll_endpoints(now, &mut |side, f| out.push((side, f.to_vec())), &mut NoTap);
    out
}

/// An endpoint that takes the frames of one EtherType and answers each
/// with a fixed frame.
struct Takes {
    ethertype: u16,
    addressed_to_me: bool,
    queued: usize,
}

const ANSWER: &[u8] = b"endpoint-answer-frame";

impl LocalEndpoint for Takes {
    fn handle_frame(&mut self, frame: &[u8], _: Timestamp) -> bool {
        let take = ether::ethertype(frame) == Some(self.ethertype);
        self.queued += usize::from(take);
        take
    }

    fn poll_transmit(&mut self, _: Timestamp, emit: &mut dyn FnMut(&[u8])) {
        for _ in 0..std::mem::take(&mut self.queued) {
            emit(ANSWER);
        }
    }

    fn is_addressed_to_me(&self, _: &[u8]) -> bool {
        self.addressed_to_me
    }
}

fn takes(ethertype: u16, addressed_to_me: bool) -> Box<dyn LocalEndpoint> {
    Box::new(Takes {
        ethertype,
        addressed_to_me,
        queued: 0,
    })
}

#[test]
fn inline_ip_goes_through_the_ipsec_stage_with_its_ethernet_header() {
    let mut gw = gateway();
    let frame = eth(ROUTER_MAC, HOST_MAC, ether::ETHERTYPE_IPV4, &protected());
    let (o, out) = run(&mut gw, Side::Host, &frame);
    assert_eq!(o, Outcome::Ipsec(Disposition::Forward));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, Side::Network);
    assert_eq!(&out[0].1[..14], &frame[..14], "the host's header, kept");
    assert_eq!(out[0].1[14 + 9], 50, "ESP");
    assert_eq!(gw.counters().host_rx.frames, 1);
    assert_eq!(gw.counters().net_tx.frames, 1);

    // Discarded by the SPD: the stage's reason, nothing leaves.
    let off_policy = udp_packet(ip("10.0.0.1"), ip("10.0.0.2"), 1, 2, 8);
    let frame = eth(ROUTER_MAC, HOST_MAC, ether::ETHERTYPE_IPV4, &off_policy);
    let (o, out) = run(&mut gw, Side::Host, &frame);
    assert_eq!(
        o,
        Outcome::Ipsec(Disposition::Drop(DropReason::PolicyDiscard))
    );
    assert!(out.is_empty());
}

#[test]
fn inline_non_ip_passes_or_is_dropped_by_ethertype() {
    let mut gw = gateway();
    let arp = eth([0xff; 6], HOST_MAC, ether::ETHERTYPE_ARP, &[0; 28]);
    let (o, out) = run(&mut gw, Side::Host, &arp);
    assert_eq!(o, Outcome::Ipsec(Disposition::Forward));
    assert_eq!(out, vec![(Side::Network, arp.clone())]);
    let (o, out) = run(&mut gw, Side::Network, &arp);
    assert_eq!(o, Outcome::Ipsec(Disposition::Deliver));
    assert_eq!(out, vec![(Side::Host, arp.clone())]);
    assert_eq!(gw.counters().non_ip_passed, 2);

    let lldp = eth([1, 0x80, 0xc2, 0, 0, 0xe], HOST_MAC, LLDP, &[0; 32]);
    let (o, out) = run(&mut gw, Side::Host, &lldp);
    assert_eq!(o, Outcome::PipelineDrop(PipelineDrop::Layer2));
    assert!(out.is_empty());
    assert_eq!(gw.counters().drops(PipelineDrop::Layer2), 1);
    assert_eq!(gw.counters().layer2_dropped.get(LLDP), 1);

    gw.set_layer2_policy(Layer2Policy {
        pass_unknown: true,
        ..Layer2Policy::default()
    });
    let (o, out) = run(&mut gw, Side::Host, &lldp);
    assert_eq!(o, Outcome::Ipsec(Disposition::Forward));
    assert_eq!(out, vec![(Side::Network, lldp)]);
}

#[test]
fn a_frame_too_short_for_its_header_is_a_bad_frame() {
    let mut gw = gateway();
    let (o, out) = run(&mut gw, Side::Host, &[0xff; 10]);
    assert_eq!(o, Outcome::Ipsec(Disposition::Drop(DropReason::Malformed)));
    assert!(out.is_empty());
    assert_eq!(gw.counters().drops(PipelineDrop::BadFrame), 1);
}

#[test]
fn the_endpoint_takes_its_frames_first_and_untagged_only() {
    let mut gw = gateway();
    gw.set_endpoint(Side::Host, takes(ether::ETHERTYPE_IPV4, true));
    let frame = eth(ROUTER_MAC, HOST_MAC, ether::ETHERTYPE_IPV4, &protected());
    let (o, out) = run(&mut gw, Side::Host, &frame);
    assert_eq!(o, Outcome::Ipsec(Disposition::Deliver));
    assert_eq!(out, vec![(Side::Host, ANSWER.to_vec())], "its answer");
    assert_eq!(gw.counters().local_delivered, 1);

    // Behind a C-tag the endpoint never sees it: the IPsec stage does.
    let mut tagged = frame[..12].to_vec();
    tagged.extend_from_slice(&[0x81, 0, 0, 7]);
    tagged.extend_from_slice(&frame[12..]);
    let (o, out) = run(&mut gw, Side::Host, &tagged);
    assert_eq!(o, Outcome::Ipsec(Disposition::Forward));
    assert_eq!(out.len(), 1);
    assert_eq!(&out[0].1[12..16], &[0x81, 0, 0, 7], "leaves with its tag");
    assert_eq!(gw.counters().local_delivered, 1);
}

#[test]
fn the_network_endpoint_refuses_services_addressed_to_it() {
    let mut gw = gateway();
    gw.set_endpoint(Side::Network, takes(ether::ETHERTYPE_IPV4, true));
    // TCP to the appliance from the unprotected side.
    let mut tcp = udp_packet(ip("203.0.113.2"), ip("203.0.113.1"), 1, 22, 20);
    tcp[9] = 6;
    let frame = eth(OWN_NET_MAC, ROUTER_MAC, ether::ETHERTYPE_IPV4, &tcp);
    let (o, out) = run(&mut gw, Side::Network, &frame);
    assert_eq!(o, Outcome::PipelineDrop(PipelineDrop::LocalRefused));
    assert!(out.is_empty());
    assert_eq!(gw.counters().drops(PipelineDrop::LocalRefused), 1);

    // ESP and UDP pass to the IPsec stage, whatever they are addressed to.
    let udp = udp_packet(ip("203.0.113.2"), ip("203.0.113.1"), 1, 9, 20);
    let frame = eth(OWN_NET_MAC, ROUTER_MAC, ether::ETHERTYPE_IPV4, &udp);
    let (o, _) = run(&mut gw, Side::Network, &frame);
    assert!(matches!(o, Outcome::Ipsec(_)), "{o:?}");
    assert_eq!(gw.counters().drops(PipelineDrop::LocalRefused), 1);
    assert_eq!(gw.counters().local_delivered, 0);
}

fn routed_config() -> RoutedConfig {
    RoutedConfig {
        host: RoutedSide {
            mac: OWN_HOST_MAC,
            addresses: vec![(ip("192.0.2.1"), 24)],
            routes: vec![Route {
                prefix: ip("192.0.2.0"),
                len: 24,
                via: None,
            }],
        },
        network: RoutedSide {
            mac: OWN_NET_MAC,
            addresses: vec![(ip("203.0.113.1"), 24)],
            routes: vec![Route {
                prefix: ip("0.0.0.0"),
                len: 0,
                via: Some(ip("203.0.113.254")),
            }],
        },
    }
}

/// The appliance's ARP request for the router.
fn router_arp_request() -> [u8; ARP_FRAME_LEN] {
    let mut request = [0u8; ARP_FRAME_LEN];
    let (own, router) = ([203, 0, 113, 1], [203, 0, 113, 254]);
    ar::arp_request(OWN_NET_MAC, own, router, &mut request);
    request
}

/// The router's answer to it.
fn router_arp_reply() -> Vec<u8> {
    let mut reply = [0u8; ARP_FRAME_LEN];
    ar::arp_reply(&router_arp_request(), ROUTER_MAC, &mut reply).unwrap();
    reply.to_vec()
}

#[test]
fn routed_forwards_only_ip_to_its_mac_and_resolves_the_next_hop() {
    let mut gw = gateway();
    gw.set_routed(Routed::new(routed_config()));
    let pkt = protected();

    let elsewhere = eth(HOST_MAC, HOST_MAC, ether::ETHERTYPE_IPV4, &pkt);
    let (o, out) = run(&mut gw, Side::Host, &elsewhere);
    assert_eq!(o, Outcome::PipelineDrop(PipelineDrop::NotRouted));
    assert!(out.is_empty());
    let arp = eth([0xff; 6], HOST_MAC, ether::ETHERTYPE_ARP, &[0; 28]);
    let (o, out) = run(&mut gw, Side::Host, &arp);
    assert_eq!(o, Outcome::PipelineDrop(PipelineDrop::NotRouted));
    assert!(out.is_empty(), "ARP never crosses");
    assert_eq!(gw.counters().drops(PipelineDrop::NotRouted), 2);

    let mut tagged = eth(OWN_HOST_MAC, HOST_MAC, 0x8100, &[0, 7, 8, 0]);
    tagged.extend_from_slice(&pkt);
    let (o, _) = run(&mut gw, Side::Host, &tagged);
    assert_eq!(o, Outcome::PipelineDrop(PipelineDrop::Layer2));
    assert_eq!(gw.counters().layer2_dropped.get(0x8100), 1);

    // To the appliance's MAC: protected, held while the router is asked for.
    let frame = eth(OWN_HOST_MAC, HOST_MAC, ether::ETHERTYPE_IPV4, &pkt);
    let (o, out) = run(&mut gw, Side::Host, &frame);
    assert_eq!(o, Outcome::Ipsec(Disposition::Forward));
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0], (Side::Network, router_arp_request().to_vec()));

    // The answer releases it, from the appliance's MAC to the router's.
    let (o, out) = run(&mut gw, Side::Network, &router_arp_reply());
    assert_eq!(o, Outcome::PipelineDrop(PipelineDrop::NotRouted));
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].0, Side::Network);
    assert_eq!(&out[0].1[..12], &[ROUTER_MAC, OWN_NET_MAC].concat()[..]);
    assert_eq!(out[0].1[14 + 9], 50, "ESP");
    let stats = gw.routed().unwrap().neighbor_stats(Side::Network);
    assert_eq!((stats.held, stats.released, stats.learned), (1, 1, 1));

    // Without a route on the network side: counted, nothing leaves.
    let mut config = routed_config();
    config.network.routes.clear();
    let mut gw = gateway();
    gw.set_routed(Routed::new(config));
    let (o, out) = run(&mut gw, Side::Host, &frame);
    assert_eq!(o, Outcome::Ipsec(Disposition::Forward));
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(gw.counters().drops(PipelineDrop::NoRoute), 1);
}

#[test]
fn routed_workers_learn_from_each_other() {
    let routed = Routed::new(routed_config());
    let mut a = gateway();
    let mut b = gateway();
    a.set_routed(routed.clone());
    b.set_routed(routed.clone());
    drop(routed);
    // Both join the bus before anything is learned.
    assert!(poll(&mut a, Timestamp::ZERO).is_empty());
    assert!(poll(&mut b, Timestamp::ZERO).is_empty());

    let frame = eth(OWN_HOST_MAC, HOST_MAC, ether::ETHERTYPE_IPV4, &protected());
    let (_, out) = run(&mut a, Side::Host, &frame);
    assert_eq!(out.len(), 1, "A asks for the router: {out:?}");
    // The answer reaches B (non-IP frames go to one worker).
    let (_, out) = run(&mut b, Side::Network, &router_arp_reply());
    assert!(out.is_empty(), "B holds nothing: {out:?}");
    // A learns it through the bus on its next loop and releases.
    let out = poll(&mut a, Timestamp::ZERO);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(&out[0].1[..12], &[ROUTER_MAC, OWN_NET_MAC].concat()[..]);
    // B sends its own traffic without asking.
    let (_, out) = run(&mut b, Side::Host, &frame);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(&out[0].1[..12], &[ROUTER_MAC, OWN_NET_MAC].concat()[..]);
    assert_eq!(
        b.routed()
            .unwrap()
            .neighbor_stats(Side::Network)
            .solicitations,
        0
    );
}

const HA: &str = "2001:db8:1::1";
const HOA: &str = "2001:db8:1::100";

fn v6(s: &str) -> [u8; 16] {
    s.parse::<std::net::Ipv6Addr>().unwrap().octets()
}

/// A home agent for one node, its home link on the host side.
fn home_agent() -> Gateway {
    let mut gw = gateway();
    gw.set_mobility(Mobility::HomeAgent(HomeAgent::new(HaConfig {
        address: v6(HA),
        address_v4: None,
        home_prefixes: vec![(v6("2001:db8:1::"), 64)],
        nodes: vec![ServedNode {
            home: v6(HOA),
            home_v4: None,
        }],
        ipv4_pool: vec![],
        ipv4_prefix_len: 24,
        max_lifetime: Duration::from_secs(600),
        nat_refresh: DEFAULT_NAT_REFRESH,
        force_udp: false,
        key_management_mobility: false,
    })));
    gw.set_home_link_mac(OWN_HOST_MAC);
    gw
}

#[test]
fn the_mobility_stage_has_network_packets_before_the_ipsec_stage() {
    let mut gw = home_agent();
    // Tunnelled to the home agent from an address no binding names.
    let inner = udp_packet(ip(HOA), ip("2001:db8:b::1"), 1, 2, 8);
    let outer = ip_packet(ip("2001:db8:2::100"), ip(HA), 41, &inner, false);
    let frame = eth(OWN_NET_MAC, ROUTER_MAC, ether::ETHERTYPE_IPV6, &outer);
    let (o, out) = run(&mut gw, Side::Network, &frame);
    assert_eq!(o, Outcome::MobilityDrop(MobilityDrop::UnknownTunnelPeer));
    assert!(out.is_empty());
    let counters = gw.mobility().unwrap().counters();
    assert_eq!(counters.drops(MobilityDrop::UnknownTunnelPeer), 1);
    assert_eq!(gw.stage().counters().total_drops(), 0, "IPsec never saw it");
}

#[test]
fn the_home_link_proxy_leaves_a_node_at_home_alone() {
    let mut gw = home_agent();
    let mut ns = [0u8; ND_FRAME_LEN];
    ar::neighbor_solicitation(HOST_MAC, v6("2001:db8:1::77"), v6(HOA), &mut ns);
    let (o, out) = run(&mut gw, Side::Host, &ns);
    assert_eq!(
        o,
        Outcome::Ipsec(Disposition::Forward),
        "the SPD's ND bypass"
    );
    assert_eq!(out, vec![(Side::Network, ns.to_vec())]);
    let counters = gw.mobility().unwrap().counters();
    assert_eq!(counters.events(MobilityEvent::ProxyAnswered), 0);
}
