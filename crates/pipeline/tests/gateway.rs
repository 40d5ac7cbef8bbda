//! The gateway role end to end over in-memory frames: two gateways
//! (policies/site-to-site-a.json and -b.json) between two hosts.
#![allow(clippy::unwrap_used)]

mod common;

use bitsgw_ipsec::{Disposition, DropReason, IpsecStage, StageConfig};
use bitsgw_pipeline::replay::{self, ReplayInput, ScheduledEvent};
use bitsgw_pipeline::{Gateway, LinkType, NoTap, Side, Tap, TapPoint};
use bitsgw_wire::craft::udp_packet;
use bitsgw_wire::{PacketBuf, Timestamp};
use std::net::IpAddr;
use std::path::PathBuf;

fn gateway(name: &str) -> Gateway {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../policies")
        .join(name);
    let set = common::policy_file(&path);
    let mut stage = IpsecStage::new(StageConfig::default());
    set.apply(&mut stage, Timestamp::ZERO).unwrap();
    Gateway::new(stage)
}

const HOST_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const ROUTER_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];

fn eth(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn run(gw: &mut Gateway, from: Side, frame: &[u8]) -> (Disposition, Vec<(Side, Vec<u8>)>) {
    let mut out = Vec::new();
    let mut buf = PacketBuf::from_slice(frame);
    let d = gw.handle_frame(
        from,
        LinkType::Ethernet,
        &mut buf,
        Timestamp::ZERO,
        &mut |side, f| out.push((side, f.to_vec())),
        &mut NoTap,
    );
    (d.ipsec().expect("the frame ends in the IPsec stage"), out)
}

#[test]
fn ethernet_frames_keep_their_header_and_non_ip_passes() {
    let mut a = gateway("site-to-site-a.json");
    let mut b = gateway("site-to-site-b.json");
    let inner = udp_packet(ip("192.0.2.10"), ip("198.51.100.20"), 1000, 2000, 64);
    let frame = eth(ROUTER_MAC, HOST_MAC, 0x0800, &inner);
    let (d, out) = run(&mut a, Side::Host, &frame);
    assert_eq!(d, Disposition::Forward);
    assert_eq!(out.len(), 1);
    let (side, wire) = &out[0];
    assert_eq!(*side, Side::Network);
    assert_eq!(&wire[..12], &frame[..12], "MACs kept");
    assert_eq!(wire[14 + 9], 50, "ESP on the wire");
    let (d, out) = run(&mut b, Side::Network, wire);
    assert_eq!(d, Disposition::Deliver);
    assert_eq!(out, vec![(Side::Host, frame.clone())]);
    // ARP crosses untouched, both ways.
    let arp = eth([0xff; 6], HOST_MAC, 0x0806, &[0u8; 28]);
    assert_eq!(
        run(&mut a, Side::Host, &arp).1,
        vec![(Side::Network, arp.clone())]
    );
    assert_eq!(
        run(&mut a, Side::Network, &arp).1,
        vec![(Side::Host, arp.clone())]
    );
    assert_eq!(a.counters().non_ip_passed, 2);
    // A runt frame is counted, not passed.
    let (d, out) = run(&mut a, Side::Host, &[1, 2, 3]);
    assert!(matches!(d, Disposition::Drop(_)));
    assert!(out.is_empty());
    assert_eq!(
        a.counters().drops(bitsgw_pipeline::PipelineDrop::BadFrame),
        1
    );
}

#[test]
fn protected_traffic_never_leaves_in_clear() {
    let mut a = gateway("site-to-site-a.json");
    let inner = udp_packet(ip("192.0.2.10"), ip("198.51.100.20"), 1000, 2000, 64);
    let frame = eth(ROUTER_MAC, HOST_MAC, 0x0800, &inner);
    // Remove the SA: the policy still says PROTECT, so the packet is dropped.
    let id = a.stage().sad().by_name("a-to-b-v4").unwrap();
    a.stage_mut().remove_sa(id);
    let (d, out) = run(&mut a, Side::Host, &frame);
    assert_eq!(d, Disposition::Drop(DropReason::NoSa));
    assert!(out.is_empty());
    // Traffic to the peer site outside the tunnel selectors is discarded.
    let stray = udp_packet(ip("203.0.113.77"), ip("198.51.100.20"), 1, 2, 10);
    let (d, out) = run(
        &mut a,
        Side::Host,
        &eth(ROUTER_MAC, HOST_MAC, 0x0800, &stray),
    );
    assert_eq!(d, Disposition::Drop(DropReason::PolicyDiscard));
    assert!(out.is_empty());
}

#[test]
fn too_big_goes_back_to_the_host_with_swapped_macs() {
    let mut a = gateway("site-to-site-a.json");
    let inner = bitsgw_wire::craft::ip_packet(
        ip("192.0.2.10"),
        ip("198.51.100.20"),
        17,
        &[0u8; 1470],
        true,
    );
    let (d, out) = run(
        &mut a,
        Side::Host,
        &eth(ROUTER_MAC, HOST_MAC, 0x0800, &inner),
    );
    assert_eq!(d, Disposition::IcmpError);
    let (side, icmp) = &out[0];
    assert_eq!(*side, Side::Host);
    assert_eq!(&icmp[..6], &HOST_MAC);
    assert_eq!(&icmp[6..12], &ROUTER_MAC);
    assert_eq!(icmp[14 + 20], 3, "ICMP destination unreachable");
}

#[derive(Default)]
struct Collect(Vec<(TapPoint, Vec<u8>)>);

impl Tap for Collect {
    fn tap(&mut self, point: TapPoint, _: Timestamp, _: LinkType, frame: &[u8]) {
        self.0.push((point, frame.to_vec()));
    }
}

#[test]
fn replay_is_deterministic_and_taps_every_boundary() {
    let inner = |n: u16| udp_packet(ip("192.0.2.10"), ip("198.51.100.20"), 1000 + n, 2000, 64);
    let host: Vec<(Timestamp, Vec<u8>)> = (0..20)
        .map(|n| {
            (
                Timestamp::from_millis(u64::from(n) * 10),
                eth(ROUTER_MAC, HOST_MAC, 0x0800, &inner(n)),
            )
        })
        .collect();
    let inputs = vec![ReplayInput {
        side: Side::Host,
        link: LinkType::Ethernet,
        frames: host,
    }];
    let run_once = || {
        let mut a = gateway("site-to-site-a.json");
        let mut tap = Collect::default();
        // At 100 ms the SA is removed: from then on nothing leaves.
        let events = vec![ScheduledEvent {
            at: Timestamp::from_millis(100),
            action: Box::new(|gw: &mut Gateway| {
                let id = gw.stage().sad().by_name("a-to-b-v4").unwrap();
                gw.stage_mut().remove_sa(id);
            }),
        }];
        let out = replay::run(&mut a, &inputs, events, &mut tap);
        (out, tap.0, a.stage().counters().drops(DropReason::NoSa))
    };
    let (first, taps, no_sa) = run_once();
    let (second, _, _) = run_once();
    assert_eq!(first, second, "byte-identical output");
    assert_eq!(first.network.len(), 10);
    assert_eq!(no_sa, 10);
    assert!(first.host.is_empty());
    let count = |p| taps.iter().filter(|(q, _)| *q == p).count();
    assert_eq!(count(TapPoint::Host), 20);
    assert_eq!(count(TapPoint::AfterIpsec), 10);
    assert_eq!(count(TapPoint::Wire), 10);
}

/// Claims IPv4 packets to 192.0.2.1 (and 203.0.113.1) and answers each
/// with the frame, MACs swapped.
struct FakeEndpoint {
    offered: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    queued: Vec<Vec<u8>>,
}

impl FakeEndpoint {
    fn mine(frame: &[u8]) -> bool {
        frame.len() >= 34
            && frame[12..14] == [8, 0]
            && (frame[30..34] == [192, 0, 2, 1] || frame[30..34] == [203, 0, 113, 1])
    }
}

impl bitsgw_pipeline::LocalEndpoint for FakeEndpoint {
    fn handle_frame(&mut self, frame: &[u8], _: Timestamp) -> bool {
        self.offered
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if !Self::mine(frame) {
            return false;
        }
        let mut reply = frame.to_vec();
        reply[..6].copy_from_slice(&frame[6..12]);
        reply[6..12].copy_from_slice(&frame[..6]);
        self.queued.push(reply);
        true
    }

    fn poll_transmit(&mut self, _: Timestamp, emit: &mut dyn FnMut(&[u8])) {
        for f in self.queued.drain(..) {
            emit(&f);
        }
    }

    fn is_addressed_to_me(&self, frame: &[u8]) -> bool {
        Self::mine(frame)
    }
}

#[derive(Default)]
struct CountingTap(Vec<TapPoint>);

impl Tap for CountingTap {
    fn tap(&mut self, point: TapPoint, _: Timestamp, _: LinkType, _: &[u8]) {
        self.0.push(point);
    }
}

#[test]
fn frames_for_the_endpoint_skip_ipsec_and_replies_go_back() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let mut a = gateway("site-to-site-a.json");
    let host_offered = std::sync::Arc::new(AtomicUsize::new(0));
    let net_offered = std::sync::Arc::new(AtomicUsize::new(0));
    for (side, offered) in [(Side::Host, &host_offered), (Side::Network, &net_offered)] {
        a.set_endpoint(
            side,
            Box::new(FakeEndpoint {
                offered: std::sync::Arc::clone(offered),
                queued: Vec::new(),
            }),
        );
    }
    // Host side: a packet to the appliance's own address (it would be
    // protected otherwise: 192.0.2.0/24 -> 198.51.100.0/24 is not, but no
    // ESP may leave for it either way).
    let to_me = eth(
        ROUTER_MAC,
        HOST_MAC,
        0x0800,
        &udp_packet(ip("192.0.2.10"), ip("192.0.2.1"), 1000, 7, 32),
    );
    let mut tap = CountingTap::default();
    let mut out = Vec::new();
    let mut buf = PacketBuf::from_slice(&to_me);
    let d = a.handle_frame(
        Side::Host,
        LinkType::Ethernet,
        &mut buf,
        Timestamp::ZERO,
        &mut |side, f| out.push((side, f.to_vec())),
        &mut tap,
    );
    assert_eq!(d.ipsec(), Some(Disposition::Deliver));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, Side::Host, "the reply goes back on the same side");
    assert_eq!(&out[0].1[..6], &HOST_MAC);
    assert_eq!(
        tap.0,
        vec![TapPoint::Host, TapPoint::Host],
        "in and reply tapped"
    );
    assert_eq!(a.counters().local_delivered, 1);
    assert_eq!(a.counters().host_tx.frames, 1);
    assert_eq!(a.stage().counters().outbound_protected, 0);
    assert_eq!(a.stage().counters().outbound_bypassed, 0);

    // Traffic through the appliance is offered, declined, and protected.
    let through = eth(
        ROUTER_MAC,
        HOST_MAC,
        0x0800,
        &udp_packet(ip("192.0.2.10"), ip("198.51.100.20"), 1000, 2000, 64),
    );
    let (d, out) = run(&mut a, Side::Host, &through);
    assert_eq!(d, Disposition::Forward);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].1[14 + 9], 50);
    assert_eq!(host_offered.load(Ordering::SeqCst), 2);

    // Network side: an echo request to the appliance is answered there.
    let mut icmp = vec![8, 0, 0, 0, 0, 1, 0, 1];
    icmp.extend_from_slice(&[0; 8]);
    let echo = bitsgw_wire::craft::ip_packet(ip("203.0.113.2"), ip("203.0.113.1"), 1, &icmp, false);
    let (d, out) = run(
        &mut a,
        Side::Network,
        &eth(HOST_MAC, ROUTER_MAC, 0x0800, &echo),
    );
    assert_eq!(d, Disposition::Deliver);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, Side::Network);
    assert_eq!(a.counters().local_delivered, 2);
    assert_eq!(net_offered.load(Ordering::SeqCst), 1);
    // Anything else to it from the network is refused, not even offered.
    let udp = udp_packet(ip("203.0.113.2"), ip("203.0.113.1"), 1000, 7, 32);
    let mut tcp = udp.clone();
    tcp[9] = 6;
    let mut out = Vec::new();
    let mut buf = PacketBuf::from_slice(&eth(HOST_MAC, ROUTER_MAC, 0x0800, &tcp));
    let o = a.handle_frame(
        Side::Network,
        LinkType::Ethernet,
        &mut buf,
        Timestamp::ZERO,
        &mut |side, f| out.push((side, f.to_vec())),
        &mut NoTap,
    );
    // The pipeline's drop, not an IPsec one.
    assert_eq!(
        o,
        bitsgw_pipeline::Outcome::PipelineDrop(bitsgw_pipeline::PipelineDrop::LocalRefused)
    );
    assert!(out.is_empty());
    assert_eq!(
        a.counters()
            .drops(bitsgw_pipeline::PipelineDrop::LocalRefused),
        1
    );
    assert_eq!(net_offered.load(Ordering::SeqCst), 1);
    // UDP (IKE, ESP in UDP) still goes to the IPsec stage, whose SPD
    // decides.
    let seen = |g: &Gateway| {
        let c = g.stage().counters();
        c.inbound_bypassed + c.ike_passed + c.total_drops()
    };
    let before = seen(&a);
    let _ = run(
        &mut a,
        Side::Network,
        &eth(HOST_MAC, ROUTER_MAC, 0x0800, &udp),
    );
    assert_eq!(seen(&a), before + 1);
    assert_eq!(net_offered.load(Ordering::SeqCst), 1);
    assert_eq!(a.counters().local_delivered, 2);
}
