//! The smoltcp endpoint answers ARP, neighbor solicitations and echo
//! requests for its own addresses, and nothing else; with IKE open, it
//! hands IKE (UDP 500, 4500 behind the non-ESP marker) to the IKE side and
//! sends its replies from its address.
#![allow(clippy::unwrap_used)]

use bitsgw_io::SmoltcpEndpoint;
use bitsgw_pipeline::LocalEndpoint;
use bitsgw_wire::{checksum, craft, Timestamp};
use std::net::IpAddr;

const OUR_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn endpoint() -> SmoltcpEndpoint {
    SmoltcpEndpoint::new(OUR_MAC, &[(ip("192.0.2.1"), 24), (ip("2001:db8::1"), 64)]).unwrap()
}

fn eth(dst: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&PEER_MAC);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn arp_request(target: [u8; 4]) -> Vec<u8> {
    let mut a = vec![0, 1, 8, 0, 6, 4, 0, 1];
    a.extend_from_slice(&PEER_MAC);
    a.extend_from_slice(&[192, 0, 2, 2]);
    a.extend_from_slice(&[0; 6]);
    a.extend_from_slice(&target);
    eth([0xff; 6], 0x0806, &a)
}

fn echo_v4(dst: &str) -> Vec<u8> {
    let mut icmp = vec![8, 0, 0, 0, 0x12, 0x34, 0, 1];
    icmp.extend_from_slice(b"bitsgw ping payload");
    let c = checksum::finish(checksum::sum(0, &icmp));
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let pkt = craft::ip_packet(ip("192.0.2.2"), ip(dst), 1, &icmp, false);
    eth(OUR_MAC, 0x0800, &pkt)
}

fn sent(ep: &mut SmoltcpEndpoint) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    ep.poll_transmit(Timestamp(1_000_000), &mut |f| out.push(f.to_vec()));
    out
}

#[test]
fn answers_arp_for_its_address_only() {
    let mut ep = endpoint();
    assert!(!ep.handle_frame(&arp_request([192, 0, 2, 9]), Timestamp(0)));
    assert!(sent(&mut ep).is_empty());
    assert!(ep.handle_frame(&arp_request([192, 0, 2, 1]), Timestamp(0)));
    let out = sent(&mut ep);
    assert_eq!(out.len(), 1);
    let r = &out[0];
    assert_eq!(&r[0..6], &PEER_MAC);
    assert_eq!(&r[6..12], &OUR_MAC);
    assert_eq!(&r[12..14], &[0x08, 0x06]);
    let a = &r[14..];
    assert_eq!(&a[6..8], &[0, 2], "an ARP reply");
    assert_eq!(&a[8..14], &OUR_MAC);
    assert_eq!(&a[14..18], &[192, 0, 2, 1]);
    assert_eq!(&a[18..24], &PEER_MAC);
    assert_eq!(&a[24..28], &[192, 0, 2, 2]);
}

#[test]
fn answers_icmp_echo() {
    let mut ep = endpoint();
    // The request's sender is learnt from its ARP request first.
    assert!(ep.handle_frame(&arp_request([192, 0, 2, 1]), Timestamp(0)));
    let _ = sent(&mut ep);
    assert!(!ep.handle_frame(
        &eth(PEER_MAC, 0x0800, &echo_v4("192.0.2.9")[14..]),
        Timestamp(0)
    ));
    let req = echo_v4("192.0.2.1");
    assert!(ep.handle_frame(&req, Timestamp(0)));
    let out = sent(&mut ep);
    assert_eq!(out.len(), 1);
    let r = &out[0];
    assert_eq!(&r[0..6], &PEER_MAC);
    assert_eq!(&r[6..12], &OUR_MAC);
    let pkt = &r[14..];
    assert_eq!(pkt[9], 1, "ICMP");
    assert_eq!(&pkt[12..16], &[192, 0, 2, 1]);
    assert_eq!(&pkt[16..20], &[192, 0, 2, 2]);
    let icmp = &pkt[20..];
    assert_eq!(icmp[0], 0, "an echo reply");
    assert_eq!(checksum::finish(checksum::sum(0, icmp)), 0);
    assert_eq!(
        &icmp[4..],
        &req[14 + 20 + 4..],
        "same identifier, sequence and data"
    );
}

#[test]
fn answers_neighbor_solicitation_and_icmpv6_echo() {
    let mut ep = endpoint();
    let peer = ip("2001:db8::2");
    // Neighbor solicitation for 2001:db8::1 with the source link-layer option.
    let mut ns = vec![135, 0, 0, 0, 0, 0, 0, 0];
    ns.extend_from_slice(
        &"2001:db8::1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    ns.extend_from_slice(&[1, 1]);
    ns.extend_from_slice(&PEER_MAC);
    let mut pkt = craft::ip_packet(peer, ip("ff02::1:ff00:1"), 58, &ns, false);
    pkt[7] = 255; // hop limit
    let f = eth([0x33, 0x33, 0xff, 0, 0, 1], 0x86dd, &pkt);
    assert!(ep.handle_frame(&f, Timestamp(0)));
    let out = sent(&mut ep);
    assert_eq!(out.len(), 1);
    let r = &out[0];
    assert_eq!(&r[0..6], &PEER_MAC);
    assert_eq!(r[14 + 40], 136, "a neighbor advertisement");

    let mut echo = vec![128, 0, 0, 0, 0, 7, 0, 1];
    echo.extend_from_slice(b"v6 payload");
    let mut pkt = craft::ip_packet(peer, ip("2001:db8::1"), 58, &echo, false);
    pkt[7] = 64;
    assert!(ep.handle_frame(&eth(OUR_MAC, 0x86dd, &pkt), Timestamp(0)));
    let out = sent(&mut ep);
    assert_eq!(out.len(), 1);
    let r = &out[0];
    assert_eq!(r[14 + 40], 129, "an echo reply");
    assert_eq!(&r[14 + 40 + 4..], &echo[4..]);
}

#[test]
fn refuses_bad_addresses() {
    assert!(SmoltcpEndpoint::new(OUR_MAC, &[(ip("192.0.2.1"), 33)]).is_err());
    let many: Vec<_> = (1..=9).map(|i| (ip(&format!("192.0.2.{i}")), 24)).collect();
    assert!(SmoltcpEndpoint::new(OUR_MAC, &many).is_err());
}

/// A UDP datagram from 192.0.2.2:`sport` to 192.0.2.1:`dport`, no
/// checksum (RFC 768 allows none over IPv4), in a frame to `dst`.
fn udp_v4(dst: [u8; 6], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut udp = sport.to_be_bytes().to_vec();
    udp.extend_from_slice(&dport.to_be_bytes());
    udp.extend_from_slice(&u16::try_from(8 + payload.len()).unwrap().to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    let pkt = craft::ip_packet(ip("192.0.2.2"), ip("192.0.2.1"), 17, &udp, false);
    eth(dst, 0x0800, &pkt)
}

#[test]
fn ike_datagrams_go_to_the_ike_port_and_replies_leave_from_the_address() {
    let mut ep = endpoint();
    assert!(!ep.takes_ike());
    let port = ep.open_ike(4);
    assert!(ep.takes_ike());
    // Port 500, to our MAC; port 4500 behind the non-ESP marker, to
    // another MAC (an inline bump's address is reached at a host's).
    assert!(ep.handle_frame(&udp_v4(OUR_MAC, 500, 500, b"ike-sa-init"), Timestamp(0)));
    let natt = [&[0u8, 0, 0, 0][..], b"ike-auth"].concat();
    assert!(ep.handle_frame(&udp_v4(PEER_MAC, 4500, 4500, &natt), Timestamp(0)));
    let first = port.received.try_recv().unwrap();
    assert_eq!(first.local, "192.0.2.1:500".parse().unwrap());
    assert_eq!(first.remote, "192.0.2.2:500".parse().unwrap());
    assert_eq!(first.data, b"ike-sa-init");
    let second = port.received.try_recv().unwrap();
    assert_eq!(second.local, "192.0.2.1:4500".parse().unwrap());
    assert_eq!(second.data, b"ike-auth", "the marker is removed");
    // A reply on 4500 leaves from our address with the marker put back.
    port.send
        .try_send(bitsgw_io::smoltcp_endpoint::IkeDatagram {
            local: "192.0.2.1:4500".parse().unwrap(),
            remote: "192.0.2.2:4500".parse().unwrap(),
            data: b"reply".to_vec(),
        })
        .unwrap();
    // It asks for the peer's MAC first.
    let asked = sent(&mut ep);
    assert!(asked.iter().any(|f| f[12..14] == [8, 6]), "{asked:02x?}");
    let mut arp = vec![0, 1, 8, 0, 6, 4, 0, 2];
    arp.extend_from_slice(&PEER_MAC);
    arp.extend_from_slice(&[192, 0, 2, 2]);
    arp.extend_from_slice(&OUR_MAC);
    arp.extend_from_slice(&[192, 0, 2, 1]);
    assert!(ep.handle_frame(&eth(OUR_MAC, 0x0806, &arp), Timestamp(1_000_000)));
    let out = sent(&mut ep);
    let reply = out
        .iter()
        .find(|f| f.len() > 42 && f[23] == 17)
        .unwrap_or_else(|| panic!("no UDP sent: {out:02x?}"));
    assert_eq!(&reply[..6], &PEER_MAC);
    assert_eq!(&reply[26..30], &[192, 0, 2, 1]);
    assert_eq!(&reply[34..38], &[0x11, 0x94, 0x11, 0x94]);
    assert_eq!(&reply[42..], [&[0u8, 0, 0, 0][..], b"reply"].concat());
    // A NAT-keepalive leaves from 4500 as the single octet 0xFF, without
    // the marker (RFC 3948 2.3).
    port.send
        .try_send(bitsgw_io::smoltcp_endpoint::IkeDatagram {
            local: "192.0.2.1:4500".parse().unwrap(),
            remote: "192.0.2.2:4500".parse().unwrap(),
            data: vec![0xff],
        })
        .unwrap();
    let out = sent(&mut ep);
    let keepalive = out
        .iter()
        .find(|f| f.len() > 42 && f[23] == 17)
        .unwrap_or_else(|| panic!("no keepalive sent: {out:02x?}"));
    assert_eq!(&keepalive[34..38], &[0x11, 0x94, 0x11, 0x94]);
    assert_eq!(&keepalive[42..], [0xff]);
    let drops = &port.drops;
    assert_eq!(
        drops.to_ike_full.load(std::sync::atomic::Ordering::Relaxed)
            + drops.send_failed.load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

/// A UDP datagram from `src`:`sport` to `dst`:`dport` with its checksum
/// (IPv6 requires one), as a bare IP packet.
fn udp_raw(src: &str, dst: &str, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let (s, d) = (ip(src), ip(dst));
    let octets = |a: IpAddr| match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    let mut udp = sport.to_be_bytes().to_vec();
    udp.extend_from_slice(&dport.to_be_bytes());
    let len = u16::try_from(8 + payload.len()).unwrap();
    udp.extend_from_slice(&len.to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    let acc = checksum::pseudo_header(&octets(s), &octets(d), 17, u32::from(len));
    let c = checksum::finish(checksum::sum(acc, &udp));
    udp[6..8].copy_from_slice(&c.to_be_bytes());
    craft::ip_packet(s, d, 17, &udp, false)
}

/// On a raw-IP port (TUN) the endpoint takes IKE to any of its addresses
/// as a bare IP packet, and its replies leave at once as bare IP packets
/// from that address to a peer on no network of its own (nothing to
/// resolve: the port's far side routes), over IPv6 and IPv4: a mobile
/// node's care-of addresses talking to its home agent.
#[test]
fn on_a_raw_ip_port_ike_comes_and_goes_as_bare_ip_packets() {
    let coa6 = "2001:db8:2::100";
    let coa4 = "203.0.113.70";
    let ha6 = "2001:db8:1::1";
    let ha4 = "203.0.113.1";
    let mut ep = SmoltcpEndpoint::new_raw_ip(&[(ip(coa6), 64), (ip(coa4), 26)]).unwrap();
    assert_eq!(ep.link(), bitsgw_pipeline::LinkType::RawIp);
    let port = ep.open_ike(4);
    // Not ours: refused without a look inside.
    assert!(!ep.handle_frame(
        &udp_raw(ha6, "2001:db8:3::100", 500, 500, b"x"),
        Timestamp(0)
    ));
    assert!(ep.handle_frame(&udp_raw(ha6, coa6, 500, 500, b"ike-sa-init"), Timestamp(0)));
    let natt = [&[0u8, 0, 0, 0][..], b"ike-auth"].concat();
    assert!(ep.handle_frame(&udp_raw(ha4, coa4, 4500, 4500, &natt), Timestamp(0)));
    let first = port.received.try_recv().unwrap();
    assert_eq!(first.local, format!("[{coa6}]:500").parse().unwrap());
    assert_eq!(first.remote, format!("[{ha6}]:500").parse().unwrap());
    assert_eq!(first.data, b"ike-sa-init");
    let second = port.received.try_recv().unwrap();
    assert_eq!(second.local, format!("{coa4}:4500").parse().unwrap());
    assert_eq!(second.data, b"ike-auth");
    for (local, remote) in [
        (format!("[{coa6}]:500"), format!("[{ha6}]:500")),
        (format!("{coa4}:4500"), format!("{ha4}:4500")),
    ] {
        port.send
            .try_send(bitsgw_io::smoltcp_endpoint::IkeDatagram {
                local: local.parse().unwrap(),
                remote: remote.parse().unwrap(),
                data: b"reply".to_vec(),
            })
            .unwrap();
    }
    let out = sent(&mut ep);
    assert_eq!(out.len(), 2, "{out:02x?}");
    let v6 = out.iter().find(|p| p[0] >> 4 == 6).unwrap();
    assert_eq!(v6[6], 17);
    assert_eq!(
        &v6[8..24],
        &coa6.parse::<std::net::Ipv6Addr>().unwrap().octets()
    );
    assert_eq!(
        &v6[24..40],
        &ha6.parse::<std::net::Ipv6Addr>().unwrap().octets()
    );
    assert_eq!(&v6[40..44], &[0x01, 0xf4, 0x01, 0xf4]);
    assert_eq!(&v6[48..], b"reply");
    let v4 = out.iter().find(|p| p[0] >> 4 == 4).unwrap();
    assert_eq!(&v4[12..16], &[203, 0, 113, 70]);
    assert_eq!(&v4[16..20], &[203, 0, 113, 1]);
    assert_eq!(&v4[20..24], &[0x11, 0x94, 0x11, 0x94]);
    assert_eq!(&v4[28..], [&[0u8, 0, 0, 0][..], b"reply"].concat());
    assert_eq!(
        port.drops
            .send_failed
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}
