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

/// A UDP header and `payload`; the checksum is left for
/// [`craft::ip_packet`] to fill in.
fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut udp = Vec::new();
    udp.extend_from_slice(&sport.to_be_bytes());
    udp.extend_from_slice(&dport.to_be_bytes());
    udp.extend_from_slice(&u16::try_from(8 + payload.len()).unwrap().to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    udp
}

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
        let packet = craft::ip_packet(
            remote,
            local,
            17,
            &udp(9999, lport, b"into the stack"),
            false,
        );
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

/// Source and destination ports of a UDP packet in raw IPv4, if it is one.
fn udp_ports(p: &[u8]) -> Option<(u16, u16)> {
    if p.first().map(|b| b >> 4) != Some(4) || p.get(9) != Some(&17) {
        return None;
    }
    let udp = p.get(usize::from(p[0] & 0x0f) * 4..)?;
    Some((
        u16::from_be_bytes([*udp.first()?, *udp.get(1)?]),
        u16::from_be_bytes([*udp.get(2)?, *udp.get(3)?]),
    ))
}

#[test]
fn a_multi_queue_tun_device_delivers_on_every_queue_and_loses_nothing() {
    const QUEUES: usize = 4;
    const FLOWS: u16 = 64;
    const PER_FLOW: usize = 4;
    let ns = Netns::new("tun-mq");
    let mut ports = netns::run_in(&ns.name, || bitsgw_io::tun_queues("bitsgw-mq", QUEUES))
        .unwrap()
        .unwrap();
    assert_eq!(ports.len(), QUEUES);
    assert!(ports.iter().all(|p| p.rx.name() == "bitsgw-mq"));
    ns.ip(&["link", "set", "bitsgw-mq", "up"]);
    ns.ip(&["addr", "add", "192.0.2.1/24", "dev", "bitsgw-mq"]);

    // Out of the stack: FLOWS flows (one socket, so one source port,
    // each), PER_FLOW datagrams each, to one remote port.
    let sockets: Vec<UdpSocket> = (0..FLOWS)
        .map(|_| {
            netns::run_in(&ns.name, || {
                UdpSocket::bind(SocketAddr::new(LOCAL4.into(), 0))
            })
            .unwrap()
            .unwrap()
        })
        .collect();
    for _ in 0..PER_FLOW {
        for s in &sockets {
            s.send_to(
                b"spread over the queues",
                SocketAddr::new(REMOTE4.into(), 9999),
            )
            .unwrap();
        }
    }
    let sent = usize::from(FLOWS) * PER_FLOW;
    let mut per_queue = [0usize; QUEUES];
    // The queue each flow (source port) was read on.
    let mut flow_queue = std::collections::HashMap::new();
    let mut buf = PacketBuf::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while per_queue.iter().sum::<usize>() < sent && Instant::now() < deadline {
        for (q, port) in ports.iter_mut().enumerate() {
            while port.rx.recv_nowait(&mut buf).unwrap() {
                let Some((sport, 9999)) = udp_ports(buf.data()) else {
                    continue;
                };
                per_queue[q] += 1;
                let first = *flow_queue.entry(sport).or_insert(q);
                assert_eq!(first, q, "flow {sport} read on queues {first} and {q}");
            }
        }
    }
    assert_eq!(
        per_queue.iter().sum::<usize>(),
        sent,
        "per queue: {per_queue:?}"
    );
    assert!(per_queue.iter().all(|&n| n > 0), "per queue: {per_queue:?}");

    // Into the stack: PER_FLOW datagrams written on every queue.
    let receiver = netns::run_in(&ns.name, || {
        UdpSocket::bind(SocketAddr::new(LOCAL4.into(), 0))
    })
    .unwrap()
    .unwrap();
    receiver
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let lport = receiver.local_addr().unwrap().port();
    for (q, port) in ports.iter_mut().enumerate() {
        for i in 0..PER_FLOW {
            let payload = [u8::try_from(q).unwrap(), u8::try_from(i).unwrap()];
            let datagram = udp(9999, lport, &payload);
            let packet = craft::ip_packet(REMOTE4.into(), LOCAL4.into(), 17, &datagram, false);
            port.tx.send(&packet).unwrap();
        }
    }
    let mut seen = std::collections::HashSet::new();
    let mut got = [0u8; 16];
    while seen.len() < QUEUES * PER_FLOW {
        let (n, _) = receiver.recv_from(&mut got).unwrap();
        assert_eq!(n, 2);
        assert!(seen.insert((got[0], got[1])), "twice: {:?}", &got[..2]);
    }
}

#[test]
fn a_tun_device_has_one_to_256_queues() {
    let ns = Netns::new("tun-mq0");
    for queues in [0, 257] {
        let err = netns::run_in(&ns.name, || bitsgw_io::tun_queues("bitsgw-mq0", queues))
            .unwrap()
            .err()
            .unwrap();
        assert!(
            err.to_string().contains("a TUN device has 1 to 256 queues"),
            "{err}"
        );
    }
}
