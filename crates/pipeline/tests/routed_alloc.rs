//! Routed mode allocates nothing per packet once its next hop is known
//! (DESIGN.md), also while the workers pass each other what they learn: a
//! counting allocator (allocation-counter, the calling thread only)
//! watches two workers' gateways on one thread.
#![allow(clippy::unwrap_used)]

mod common;

use bitsgw_pipeline::routed::{Route, Routed, RoutedConfig, RoutedSide};
use bitsgw_pipeline::{Gateway, LinkType, NoTap, Outcome, Side};
use bitsgw_wire::address_resolution::{arp_reply, arp_request, ARP_FRAME_LEN};
use bitsgw_wire::{PacketBuf, Timestamp};
use common::*;

const OWN_HOST_MAC: [u8; 6] = [2, 0, 0, 0, 0xa, 1];
const OWN_NET_MAC: [u8; 6] = [2, 0, 0, 0, 0xa, 2];

fn routed() -> Routed {
    Routed::new(RoutedConfig {
        host: RoutedSide {
            mac: OWN_HOST_MAC,
            addresses: vec![(addr("192.0.2.1"), 24)],
            routes: vec![Route {
                prefix: addr("192.0.2.0"),
                len: 24,
                via: None,
            }],
        },
        network: RoutedSide {
            mac: OWN_NET_MAC,
            addresses: vec![(addr("203.0.113.1"), 24)],
            routes: vec![Route {
                prefix: addr("0.0.0.0"),
                len: 0,
                via: Some(addr(GW_B)),
            }],
        },
    })
}

/// The peer gateway's answer to the appliance's ARP request for it.
fn peer_arp_reply() -> [u8; ARP_FRAME_LEN] {
    let mut request = [0u8; ARP_FRAME_LEN];
    arp_request(
        OWN_NET_MAC,
        [203, 0, 113, 1],
        [203, 0, 113, 2],
        &mut request,
    );
    let mut reply = [0u8; ARP_FRAME_LEN];
    arp_reply(&request, ROUTER_MAC, &mut reply).unwrap();
    reply
}

fn handle(
    gw: &mut Gateway,
    from: Side,
    frame: &[u8],
    buf: &mut PacketBuf,
    sent: &mut u64,
) -> Outcome {
    buf.set(frame).unwrap();
    gw.handle_frame(
        from,
        LinkType::Ethernet,
        buf,
        Timestamp::ZERO,
        &mut |_, _| *sent += 1,
        &mut NoTap,
    )
}

#[test]
fn the_counter_sees_an_allocation() {
    let info = allocation_counter::measure(|| {
        std::hint::black_box(Vec::<u8>::with_capacity(10));
    });
    assert_eq!(info.count_total, 1);
}

#[test]
fn routed_forwarding_and_learning_allocate_nothing_per_packet() {
    let template = routed();
    let mut a = gateway_a();
    let mut b = gateway_a();
    a.set_routed(template.clone());
    b.set_routed(template.clone());
    let mut host_frame = eth(Side::Host, &marked_udp(HOST_A, HOST_B, 200, false));
    host_frame[..6].copy_from_slice(&OWN_HOST_MAC);
    let reply = peer_arp_reply();
    let mut buf = PacketBuf::new();
    let mut sent = 0u64;
    // Warm up: both join the bus, A resolves the peer, B learns it.
    for gw in [&mut a, &mut b] {
        gw.poll_endpoints(Timestamp::ZERO, &mut |_, _| {}, &mut NoTap);
    }
    handle(&mut a, Side::Host, &host_frame, &mut buf, &mut sent);
    handle(&mut a, Side::Network, &reply, &mut buf, &mut sent);
    for _ in 0..4 {
        handle(&mut a, Side::Host, &host_frame, &mut buf, &mut sent);
        handle(&mut b, Side::Host, &host_frame, &mut buf, &mut sent);
    }
    sent = 0;
    let info = allocation_counter::measure(|| {
        for i in 0..1000 {
            let o = handle(&mut a, Side::Host, &host_frame, &mut buf, &mut sent);
            assert_eq!(o, Outcome::Ipsec(bitsgw_ipsec::Disposition::Forward));
            handle(&mut b, Side::Host, &host_frame, &mut buf, &mut sent);
            if i % 100 == 0 {
                // A learns again and tells B, which takes it in.
                handle(&mut a, Side::Network, &reply, &mut buf, &mut sent);
                b.poll_endpoints(Timestamp::ZERO, &mut |_, _| sent += 1, &mut NoTap);
            }
        }
    });
    assert_eq!(info.count_total, 0, "{} allocations", info.count_total);
    assert_eq!(sent, 2000, "every packet left, nothing else did");
    let stats = b.routed().unwrap().neighbor_stats(Side::Network);
    assert_eq!(stats.solicitations, 0, "B never had to ask");
    assert!(stats.learned > 10, "B learned through the bus: {stats:?}");
}
