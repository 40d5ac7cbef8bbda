//! TUN ports inside a namespace the test creates: what the namespace's
//! stack routes into the device is received as raw IP, and packets sent
//! into it are delivered to the stack, for IPv4 and IPv6.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use bitsgw_io::{netns, LinkType, Port};
use bitsgw_wire::{craft, PacketBuf};
use common::Netns;

const LOCAL4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const REMOTE4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const LOCAL6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
const REMOTE6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);

/// The first UDP packet to `dst`:`dport` the port receives within 2 s.
fn receive_udp(port: &mut Port, dst: IpAddr, dport: u16) -> Vec<u8> {
    let mut buf = PacketBuf::new();
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if !port.rx.recv(&mut buf).unwrap() {
            continue;
        }
        let p = buf.data();
        let (proto, addr, udp) = match p.first().map(|b| b >> 4) {
            Some(4) if p.len() >= 28 => (
                p[9],
                IpAddr::from(<[u8; 4]>::try_from(&p[16..20]).unwrap()),
                &p[20..],
            ),
            Some(6) if p.len() >= 48 => (
                p[6],
                IpAddr::from(<[u8; 16]>::try_from(&p[24..40]).unwrap()),
                &p[40..],
            ),
            _ => continue,
        };
        if proto == 17 && addr == dst && udp[2..4] == dport.to_be_bytes() {
            return p.to_vec();
        }
    }
    panic!("no UDP packet to {dst}:{dport} came out of the TUN device");
}

#[test]
fn ip_packets_both_ways_through_a_tun_device() {
    let ns = Netns::new("tun");
    let mut port = netns::run_in(&ns.name, || bitsgw_io::tun("bitsgw-t0"))
        .unwrap()
        .unwrap();
    assert_eq!(port.rx.name(), "bitsgw-t0");
    assert_eq!(port.rx.link_type(), LinkType::RawIp);
    assert_eq!(port.tx.link_type(), LinkType::RawIp);
    ns.ip(&["link", "set", "bitsgw-t0", "up"]);
    ns.ip(&["addr", "add", "192.0.2.1/24", "dev", "bitsgw-t0"]);
    ns.ip(&["addr", "add", "2001:db8::1/64", "dev", "bitsgw-t0", "nodad"]);

    for (local, remote) in [
        (IpAddr::V4(LOCAL4), IpAddr::V4(REMOTE4)),
        (IpAddr::V6(LOCAL6), IpAddr::V6(REMOTE6)),
    ] {
        let socket = netns::run_in(&ns.name, || UdpSocket::bind(SocketAddr::new(local, 0)))
            .unwrap()
            .unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let lport = socket.local_addr().unwrap().port();

        // The stack routes a datagram to the remote address into the TUN.
        socket
            .send_to(b"out of the stack", SocketAddr::new(remote, 9999))
            .unwrap();
        let p = receive_udp(&mut port, remote, 9999);
        assert!(p.ends_with(b"out of the stack"), "{p:02x?}");

        // A datagram written into the TUN reaches the socket.
        let payload = b"into the stack";
        let mut udp = Vec::new();
        udp.extend_from_slice(&9999u16.to_be_bytes());
        udp.extend_from_slice(&lport.to_be_bytes());
        udp.extend_from_slice(&u16::try_from(8 + payload.len()).unwrap().to_be_bytes());
        udp.extend_from_slice(&[0, 0]);
        udp.extend_from_slice(payload);
        let packet = craft::ip_packet(remote, local, 17, &udp, false);
        port.tx.send(&packet).unwrap();
        let mut got = [0u8; 64];
        let (n, from) = socket.recv_from(&mut got).unwrap();
        assert_eq!(&got[..n], b"into the stack");
        assert_eq!(from, SocketAddr::new(remote, 9999));
    }
}

#[test]
fn a_deleted_tun_device_is_reported_as_lost() {
    let ns = Netns::new("tun-del");
    let mut port = netns::run_in(&ns.name, || bitsgw_io::tun("bitsgw-t1"))
        .unwrap()
        .unwrap();
    ns.ip(&["link", "set", "bitsgw-t1", "up"]);
    ns.ip(&["link", "del", "bitsgw-t1"]);
    let mut buf = PacketBuf::new();
    let deadline = Instant::now() + Duration::from_secs(2);
    let err = loop {
        match port.rx.recv(&mut buf) {
            Err(e) => break e,
            Ok(_) => assert!(Instant::now() < deadline, "the deletion went unnoticed"),
        }
    };
    assert!(
        matches!(err, bitsgw_io::PortError::LinkLost { .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "port bitsgw-t1: the interface is gone (deleted)"
    );
}
