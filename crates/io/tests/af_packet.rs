//! AF_PACKET ports on a veth pair inside a namespace the test creates:
//! frames cross the pair unchanged, and frames this host transmits on an
//! interface (our own, or another socket's) are not received back there.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use bitsgw_io::{netns, Fanout, LinkType, OnLinkLoss, Port, PortError, SteerRule};
use bitsgw_wire::PacketBuf;
use common::Netns;

/// A broadcast frame of a local experimental EtherType carrying `tag`.
fn frame(tag: u8) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, tag]);
    f.extend_from_slice(&0x88b5u16.to_be_bytes());
    f.extend_from_slice(b"bitsgw-io test frame");
    f.push(tag);
    f.resize(60, 0);
    f
}

fn is_test_frame(data: &[u8]) -> bool {
    data.len() >= 14 && data[12..14] == [0x88, 0xb5]
}

/// Test frames `port` receives within `wait`, returning early once
/// `want` was among them.
fn receive(port: &mut Port, wait: Duration, want: Option<&[u8]>) -> Vec<Vec<u8>> {
    let mut buf = PacketBuf::new();
    let mut got = Vec::new();
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        if port.rx.recv(&mut buf).unwrap() && is_test_frame(buf.data()) {
            got.push(buf.data().to_vec());
            if want == Some(buf.data()) {
                break;
            }
        }
    }
    got
}

#[test]
fn frames_cross_a_veth_pair_and_outgoing_frames_are_not_received_back() {
    let ns = Netns::new("afp");
    ns.veth_pair("va0", "vb0");

    let (a, b, also_a) = netns::run_in(&ns.name, || {
        (
            bitsgw_io::af_packet("va0"),
            bitsgw_io::af_packet("vb0"),
            bitsgw_io::af_packet("va0"),
        )
    })
    .unwrap();
    let (mut a, mut b, mut also_a) = (a.unwrap(), b.unwrap(), also_a.unwrap());
    assert_eq!(a.rx.name(), "va0");
    assert_eq!(a.rx.link_type(), LinkType::Ethernet);
    assert_eq!(a.tx.link_type(), LinkType::Ethernet);

    // a -> b, unchanged; a does not see its own frame.
    let f1 = frame(1);
    a.tx.send(&f1).unwrap();
    assert_eq!(a.tx.flush(), 0);
    assert!(receive(&mut b, Duration::from_secs(2), Some(&f1)).contains(&f1));
    assert!(receive(&mut a, Duration::from_millis(300), None).is_empty());

    // Another socket on a transmits: b gets it; for both sockets on a it
    // is an outgoing frame, which they ignore.
    let f2 = frame(2);
    also_a.tx.send(&f2).unwrap();
    assert_eq!(also_a.tx.flush(), 0);
    assert!(receive(&mut b, Duration::from_secs(2), Some(&f2)).contains(&f2));
    assert!(receive(&mut a, Duration::from_millis(300), None).is_empty());
    assert!(receive(&mut also_a, Duration::from_millis(50), None).is_empty());

    // b -> a: both sockets on a receive it.
    let f3 = frame(3);
    b.tx.send(&f3).unwrap();
    assert_eq!(b.tx.flush(), 0);
    assert!(receive(&mut a, Duration::from_secs(2), Some(&f3)).contains(&f3));
    assert!(receive(&mut also_a, Duration::from_secs(2), Some(&f3)).contains(&f3));
    assert!(receive(&mut b, Duration::from_millis(300), None).is_empty());
}

/// Ports on both ends of a veth pair with a 9000-octet MTU, in a new
/// namespace (kept alive by the first value).
fn jumbo_pair(tag: &str) -> (Netns, Port, Port) {
    let ns = Netns::new(tag);
    ns.veth_pair("va0", "vb0");
    ns.ip(&["link", "set", "va0", "mtu", "9000"]);
    ns.ip(&["link", "set", "vb0", "mtu", "9000"]);
    let (a, b) = netns::run_in(&ns.name, || {
        (bitsgw_io::af_packet("va0"), bitsgw_io::af_packet("vb0"))
    })
    .unwrap();
    (ns, a.unwrap(), b.unwrap())
}

/// Frames longer than a receive ring slot (jumbo frames on a 9000-octet
/// MTU) arrive whole, read from the socket, and in order with the short
/// ones around them.
#[test]
fn frames_longer_than_a_ring_slot_arrive_whole_and_in_order() {
    let (_ns, mut a, mut b) = jumbo_pair("afp-jumbo");
    let sizes = [60usize, 1514, 2100, 60, 9014, 4000, 1000];
    let sent: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &len)| {
            let mut f = frame(10 + i as u8);
            f.resize(len, 0);
            for (j, byte) in f[40..].iter_mut().enumerate() {
                *byte = (j * 7 + i) as u8;
            }
            f
        })
        .collect();
    // Short frames are staged and leave with a flush; a long one leaves at
    // once, after those staged before it.
    for f in &sent {
        a.tx.send(f).unwrap();
    }
    assert_eq!(a.tx.flush(), 0);
    let last = sent.last().unwrap();
    let got = receive(&mut b, Duration::from_secs(2), Some(last));
    assert_eq!(
        got.len(),
        sent.len(),
        "got {:?}",
        got.iter().map(Vec::len).collect::<Vec<_>>()
    );
    assert!(got == sent, "frames changed or reordered");
}

/// Many more frames than the receive ring has slots, read while they
/// come: the ring wraps around several times and every frame arrives once,
/// unchanged and in order.
#[test]
fn the_receive_ring_wraps_without_losing_or_reordering() {
    let ns = Netns::new("afp-wrap");
    ns.veth_pair("va0", "vb0");
    let (a, b) = netns::run_in(&ns.name, || {
        (bitsgw_io::af_packet("va0"), bitsgw_io::af_packet("vb0"))
    })
    .unwrap();
    let (mut a, mut b) = (a.unwrap(), b.unwrap());
    let total = 20_000u32;
    let chunk = 500u32;
    let mut buf = PacketBuf::new();
    let mut next = 0u32;
    for start in (0..total).step_by(chunk as usize) {
        for n in start..start + chunk {
            let mut f = frame(7);
            f.resize(100 + (n as usize % 1300), 0x33);
            f[40..44].copy_from_slice(&n.to_be_bytes());
            a.tx.send(&f).unwrap();
        }
        // More than one staging area's worth: most left as it filled.
        assert_eq!(a.tx.flush(), 0);
        let deadline = Instant::now() + Duration::from_secs(5);
        while next < start + chunk {
            assert!(Instant::now() < deadline, "frame {next} did not arrive");
            if !b.rx.recv(&mut buf).unwrap() || !is_test_frame(buf.data()) {
                continue;
            }
            let d = buf.data();
            assert_eq!(d.len(), 100 + (next as usize % 1300), "frame {next}");
            assert_eq!(u32::from_be_bytes([d[40], d[41], d[42], d[43]]), next);
            next += 1;
        }
    }
    assert_eq!(b.rx.take_kernel_drops().unwrap(), 0);
}

#[test]
fn unknown_and_non_ethernet_interfaces_are_refused() {
    let ns = Netns::new("afp-bad");
    let (missing, tun) = netns::run_in(&ns.name, || {
        let tun = bitsgw_io::tun("t0").unwrap();
        (
            bitsgw_io::af_packet("nosuchif0"),
            bitsgw_io::af_packet("t0").map(|_| tun),
        )
    })
    .unwrap();
    match missing {
        Err(e @ PortError::Open { .. }) => assert!(e.to_string().contains("nosuchif0"), "{e}"),
        other => panic!("expected Open error, got {other:?}"),
    }
    match tun {
        Err(e @ PortError::Open { .. }) => {
            assert!(e.to_string().contains("not an Ethernet"), "{e}")
        }
        other => panic!("expected Open error, got {other:?}"),
    }
}

/// A full receive buffer loses frames in the kernel; the port reports how
/// many, so the pipeline can count them instead of losing them silently.
/// Waiting frames are taken without blocking, and an empty socket answers
/// at once.
#[test]
fn frames_dropped_by_a_full_receive_buffer_are_reported() {
    let ns = Netns::new("afp-drops");
    ns.veth_pair("va0", "vb0");
    let (a, b, mac) = netns::run_in(&ns.name, || {
        (
            bitsgw_io::af_packet("va0"),
            bitsgw_io::af_packet("vb0"),
            bitsgw_io::interface_mac("va0"),
        )
    })
    .unwrap();
    let (mut a, mut b) = (a.unwrap(), b.unwrap());
    let shown = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.name,
            "cat",
            "/sys/class/net/va0/address",
        ])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&shown.stdout);
    let want: Vec<String> = mac.unwrap().iter().map(|o| format!("{o:02x}")).collect();
    assert_eq!(shown.trim(), want.join(":"));

    let mut buf = PacketBuf::new();
    assert!(!a.rx.recv_nowait(&mut buf).unwrap());

    // Far more than the receive buffer holds, while nobody reads.
    let sent = 40_000u64;
    let mut f = frame(9);
    f.resize(1400, 0x5a);
    for _ in 0..sent {
        b.tx.send(&f).unwrap();
    }
    assert_eq!(b.tx.flush(), 0);
    let mut received = 0u64;
    while a.rx.recv_nowait(&mut buf).unwrap() {
        if is_test_frame(buf.data()) {
            assert_eq!(buf.data(), &f[..]);
            received += 1;
        }
    }
    let dropped = a.rx.take_kernel_drops().unwrap();
    assert!(
        received > 0 && dropped > 0,
        "received {received}, dropped {dropped}"
    );
    assert_eq!(
        received + dropped,
        sent,
        "received {received}, dropped {dropped}"
    );
    // The count was reset by reading it.
    assert_eq!(a.rx.take_kernel_drops().unwrap(), 0);
}

/// Calls `recv` until it fails or `wait` passes; the error, and how many
/// calls were made.
fn recv_until_error(port: &mut Port, wait: Duration) -> (Option<PortError>, u64) {
    let mut buf = PacketBuf::new();
    let deadline = Instant::now() + wait;
    let mut calls = 0;
    while Instant::now() < deadline {
        calls += 1;
        if let Err(e) = port.rx.recv(&mut buf) {
            return (Some(e), calls);
        }
    }
    (None, calls)
}

#[test]
fn an_interface_taken_down_is_waited_for_and_a_deleted_one_is_reported() {
    let ns = Netns::new("afp-loss");
    ns.veth_pair("va3", "vb3");
    let (a, b) = netns::run_in(&ns.name, || {
        (bitsgw_io::af_packet("va3"), bitsgw_io::af_packet("vb3"))
    })
    .unwrap();
    let (mut a, mut b) = (a.unwrap(), b.unwrap());

    // Down for a second: no error, and no busy loop over the socket's
    // pending ENETDOWN (a call waits for frames, about 10 ms, so a second
    // holds some 100 calls, not hundreds of thousands).
    ns.ip(&["link", "set", "va3", "down"]);
    let (err, calls) = recv_until_error(&mut a, Duration::from_secs(1));
    assert!(err.is_none(), "{err:?}");
    assert!(
        calls < 1000,
        "{calls} receive calls in a second: a busy loop"
    );
    // Up again: frames arrive as before.
    ns.ip(&["link", "set", "va3", "up"]);
    let f = frame(30);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got = Vec::new();
    while !got.contains(&f) && Instant::now() < deadline {
        let _ = b.tx.send(&f);
        let _ = b.tx.flush();
        got = receive(&mut a, Duration::from_millis(200), Some(&f));
    }
    assert!(got.contains(&f), "nothing received after the link came up");

    // Deleted: reported as lost, naming the interface, within a few
    // checks.
    ns.ip(&["link", "del", "va3"]);
    let (err, _) = recv_until_error(&mut a, Duration::from_secs(5));
    match err {
        Some(e @ PortError::LinkLost { .. }) => {
            assert_eq!(e.to_string(), "port va3: the interface is gone (deleted)")
        }
        other => panic!("expected the link lost, got {other:?}"),
    }
}

#[test]
fn a_port_that_waits_binds_to_its_interface_when_it_returns() {
    let ns = Netns::new("afp-wait");
    ns.veth_pair("va4", "vb4");
    let (mut a, watch) = netns::run_in(&ns.name, || {
        bitsgw_io::af_packet_with("va4", bitsgw_io::OnLinkLoss::Wait)
    })
    .unwrap()
    .unwrap();
    ns.ip(&["link", "del", "va4"]);
    let (err, calls) = recv_until_error(&mut a, Duration::from_secs(2));
    assert!(err.is_none(), "{err:?}");
    assert!(calls < 1000, "{calls} receive calls in 2 s: a busy loop");
    assert_eq!((watch.losses(), watch.returns()), (1, 0));

    // A new interface of the same name: the port takes its frames.
    ns.veth_pair("va4", "vb4");
    let mut b = netns::run_in(&ns.name, || bitsgw_io::af_packet("vb4"))
        .unwrap()
        .unwrap();
    let f = frame(40);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got = Vec::new();
    while !got.contains(&f) && Instant::now() < deadline {
        b.tx.send(&f).unwrap();
        assert_eq!(b.tx.flush(), 0);
        got = receive(&mut a, Duration::from_millis(200), Some(&f));
    }
    assert!(
        got.contains(&f),
        "nothing received after the interface returned: {} {}",
        watch.losses(),
        watch.returns()
    );
    assert_eq!((watch.losses(), watch.returns()), (1, 1));
    // And it sends through the new interface too.
    let g = frame(41);
    a.tx.send(&g).unwrap();
    assert_eq!(a.tx.flush(), 0);
    assert!(receive(&mut b, Duration::from_secs(2), Some(&g)).contains(&g));
}

/// `frame(tag)` of `len` octets behind `tags` (each TPID and TCI), with a
/// pattern after the tags so a misplaced tag shows.
fn tagged_frame(tag: u8, tags: &[[u8; 4]], len: usize) -> Vec<u8> {
    let plain = frame(tag);
    let mut f = plain[..12].to_vec();
    for t in tags {
        f.extend_from_slice(t);
    }
    f.extend_from_slice(&plain[12..]);
    f.resize(len, 0);
    for (j, byte) in f[40..].iter_mut().enumerate() {
        *byte = (j * 5 + usize::from(tag)) as u8;
    }
    f
}

/// Linux takes the outer VLAN tag out of each frame it receives before a
/// packet socket sees it; the port puts it back, from the ring slot's
/// header and, for frames longer than a slot, from `PACKET_AUXDATA`. An
/// 802.1Q tag, an 802.1ad S-tag over a C-tag, and a `0x9100` tag (which
/// the kernel leaves in place) all arrive as they were sent.
#[test]
fn vlan_tags_the_kernel_strips_are_put_back() {
    let (_ns, mut a, mut b) = jumbo_pair("afp-vlan");
    let ctag = [0x81, 0x00, 0x20, 0x05];
    let stag = [0x88, 0xa8, 0x00, 0x64];
    let old_qinq = [0x91, 0x00, 0x00, 0x07];
    let sent = vec![
        tagged_frame(1, &[ctag], 64),
        tagged_frame(2, &[stag, ctag], 68),
        tagged_frame(3, &[old_qinq, ctag], 68),
        tagged_frame(4, &[[0x81, 0x00, 0x00, 0x00]], 64),
        // Longer than a ring slot: read from the socket.
        tagged_frame(5, &[ctag], 4000),
        tagged_frame(6, &[stag, ctag], 9014),
        tagged_frame(7, &[], 60),
    ];
    for f in &sent {
        a.tx.send(f).unwrap();
    }
    assert_eq!(a.tx.flush(), 0);
    let mut buf = PacketBuf::new();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    while got.len() < sent.len() && Instant::now() < deadline {
        // Only the test's frames: they come from 02:00:00:00:00:xx.
        if b.rx.recv(&mut buf).unwrap() && buf.data().get(6..11) == Some(&[2, 0, 0, 0, 0]) {
            got.push(buf.data().to_vec());
        }
    }
    for (g, s) in got.iter().zip(&sent) {
        assert_eq!(g.len(), s.len(), "frame {}", s[11]);
        assert_eq!(&g[..26], &s[..26], "frame {}", s[11]);
        assert!(g == s, "frame {} changed", s[11]);
    }
    assert_eq!(got.len(), sent.len());
}

/// Staged frames the kernel refuses (the interface is down) are counted by
/// the flush, each once, and the next flush starts from zero.
#[test]
fn staged_frames_refused_at_flush_are_counted() {
    let ns = Netns::new("afp-refuse");
    ns.veth_pair("va5", "vb5");
    let mut a = netns::run_in(&ns.name, || bitsgw_io::af_packet("va5"))
        .unwrap()
        .unwrap();
    ns.ip(&["link", "set", "va5", "down"]);
    for i in 0..3 {
        a.tx.send(&frame(50 + i)).unwrap();
    }
    assert_eq!(a.tx.flush(), 3);
    assert_eq!(a.tx.flush(), 0);
}

/// A sending handle dropped with frames staged sends them first.
#[test]
fn staged_frames_leave_when_the_handle_is_dropped() {
    let ns = Netns::new("afp-drop");
    ns.veth_pair("va6", "vb6");
    let (a, b) = netns::run_in(&ns.name, || {
        (bitsgw_io::af_packet("va6"), bitsgw_io::af_packet("vb6"))
    })
    .unwrap();
    let (a, mut b) = (a.unwrap(), b.unwrap());
    let f = frame(60);
    let mut tx = a.tx;
    tx.send(&f).unwrap();
    drop(tx);
    assert!(receive(&mut b, Duration::from_secs(2), Some(&f)).contains(&f));
}

/// An Ethernet frame carrying `ip` (IPv4 or IPv6 by its version).
fn ether(ip: &[u8]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x42]);
    let ethertype: u16 = if ip[0] >> 4 == 6 { 0x86dd } else { 0x0800 };
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(ip);
    f
}

/// An ESP packet of `spi` (RFC 4303 2.1: SPI, sequence number, payload)
/// between the documentation addresses `src` and `dst`.
fn esp(src: &str, dst: &str, spi: u32, seq: u32) -> Vec<u8> {
    let mut body = spi.to_be_bytes().to_vec();
    body.extend_from_slice(&seq.to_be_bytes());
    body.resize(64, 0xab);
    bitsgw_wire::craft::ip_packet(src.parse().unwrap(), dst.parse().unwrap(), 50, &body, false)
}

/// ESP in UDP to port 4500 (RFC 3948), or IKE there (a zero non-ESP
/// marker) when `spi` is 0.
fn esp_in_udp(spi: u32) -> Vec<u8> {
    let mut udp = vec![0u8; 8];
    udp[0..2].copy_from_slice(&4500u16.to_be_bytes());
    udp[2..4].copy_from_slice(&4500u16.to_be_bytes());
    udp.extend_from_slice(&spi.to_be_bytes());
    udp.extend_from_slice(&1u32.to_be_bytes());
    udp.resize(64, 0xcd);
    let len = udp.len() as u16;
    udp[4..6].copy_from_slice(&len.to_be_bytes());
    bitsgw_wire::craft::ip_packet(
        "203.0.113.1".parse().unwrap(),
        "203.0.113.2".parse().unwrap(),
        17,
        &udp,
        false,
    )
}

/// The queue whose port received `frame` within `wait`.
fn queue_of(queues: &mut [Port], frame: &[u8], wait: Duration) -> Option<usize> {
    let mut buf = PacketBuf::new();
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        for (q, port) in queues.iter_mut().enumerate() {
            if port.rx.recv_nowait(&mut buf).unwrap() && buf.data() == frame {
                return Some(q);
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    None
}

/// A fanout group steered by SPI: ESP over IPv4 and IPv6 and ESP in UDP
/// reach the queue the table names (not the SPI's own modulo), SPIs not in
/// the table go by the modulo, IKE's zero marker is not taken for an SPI,
/// and a new table takes effect.
#[test]
fn esp_reaches_the_queue_that_owns_its_spi() {
    let ns = Netns::new("fanout");
    ns.veth_pair("vf0", "vf1");
    let (sender, queues) = netns::run_in(&ns.name, || {
        (
            bitsgw_io::af_packet("vf0"),
            bitsgw_io::af_packet_fanout("vf1", OnLinkLoss::Fail, 2, Fanout::BySpi),
        )
    })
    .unwrap();
    let mut sender = sender.unwrap();
    let mut queues: Vec<Port> = queues.unwrap().into_iter().map(|(p, _)| p).collect();
    // Each SPI owned by the queue its modulo does not name.
    let table: Vec<(u32, u32)> = (0x100..0x108).map(|spi| (spi, (spi + 1) % 2)).collect();
    queues[0].rx.steer_by_spi(&table).unwrap();
    let send_and_find = |sender: &mut Port, queues: &mut [Port], ip: Vec<u8>| {
        let frame = ether(&ip);
        sender.tx.send(&frame).unwrap();
        assert_eq!(sender.tx.flush(), 0);
        queue_of(queues, &frame, Duration::from_secs(2))
    };
    for (spi, owner) in &table {
        for (seq, ip) in [
            esp("203.0.113.1", "203.0.113.2", *spi, 1),
            esp("2001:db8::1", "2001:db8::2", *spi, 2),
            esp_in_udp(*spi),
        ]
        .into_iter()
        .enumerate()
        {
            let got = send_and_find(&mut sender, &mut queues, ip);
            assert_eq!(got, Some(*owner as usize), "SPI {spi:#x}, packet {seq}");
        }
    }
    for spi in [0x2000u32, 0x2001] {
        let got = send_and_find(
            &mut sender,
            &mut queues,
            esp("203.0.113.1", "203.0.113.2", spi, 1),
        );
        assert_eq!(got, Some(spi as usize % 2), "SPI {spi:#x} by its modulo");
    }
    // Fragments go by their addresses, so a datagram's fragments meet on
    // one queue to be reassembled: the first (MF set) and a later one
    // (an offset) of a steered SPI go where IKE below goes.
    let addr_hash =
        (u32::from_be_bytes([203, 0, 113, 1]) ^ u32::from_be_bytes([203, 0, 113, 2])) % 2;
    for flags in [0x2000u16, 0x0010] {
        let mut frag = esp("203.0.113.1", "203.0.113.2", table[addr_hash as usize].0, 1);
        frag[6..8].copy_from_slice(&flags.to_be_bytes());
        let got = send_and_find(&mut sender, &mut queues, frag);
        assert_eq!(got, Some(addr_hash as usize), "fragment, flags {flags:#x}");
    }
    // IKE on 4500 goes by the addresses (the same pair as the ESP above),
    // never by its zero marker as if it were SPI 0.
    let ike_queue = send_and_find(&mut sender, &mut queues, esp_in_udp(0));
    let addr_hash =
        (u32::from_be_bytes([203, 0, 113, 1]) ^ u32::from_be_bytes([203, 0, 113, 2])) % 2;
    assert_eq!(ike_queue, Some(addr_hash as usize));
    // A new table replaces the old one for the whole group.
    let flipped: Vec<(u32, u32)> = table.iter().map(|(s, q)| (*s, 1 - q)).collect();
    queues[1].rx.steer_by_spi(&flipped).unwrap();
    for (spi, owner) in &flipped {
        let got = send_and_find(
            &mut sender,
            &mut queues,
            esp("203.0.113.1", "203.0.113.2", *spi, 9),
        );
        assert_eq!(got, Some(*owner as usize), "SPI {spi:#x} after the change");
    }
}

/// A fanout group steered by rules: IPv4 reaches the queue of the first
/// rule its addresses and protocol match, a rule without a queue and no
/// rule at all go by the addresses' hash.
#[test]
fn ipv4_reaches_the_queue_of_the_first_rule_it_matches() {
    let ns = Netns::new("fanrule");
    ns.veth_pair("vr0", "vr1");
    let (sender, queues) = netns::run_in(&ns.name, || {
        (
            bitsgw_io::af_packet("vr0"),
            bitsgw_io::af_packet_fanout("vr1", OnLinkLoss::Fail, 2, Fanout::ByRules),
        )
    })
    .unwrap();
    let mut sender = sender.unwrap();
    let mut queues: Vec<Port> = queues.unwrap().into_iter().map(|(p, _)| p).collect();
    let v4 = |s: &str| u32::from(s.parse::<std::net::Ipv4Addr>().unwrap());
    let range = |lo: &str, hi: &str| Some((v4(lo), v4(hi)));
    let rules = [
        // UDP from one host to a /24: queue 1.
        SteerRule {
            src: range("192.0.2.10", "192.0.2.10"),
            dst: range("198.51.100.0", "198.51.100.255"),
            proto: Some(17),
            queue: Some(1),
        },
        // Anything else from that host to 198.51.100.7: queue 0.
        SteerRule {
            src: range("192.0.2.10", "192.0.2.10"),
            dst: range("198.51.100.7", "198.51.100.7"),
            proto: None,
            queue: Some(0),
        },
        // From 192.0.2.20 anywhere: by the hash.
        SteerRule {
            src: range("192.0.2.20", "192.0.2.20"),
            dst: None,
            proto: None,
            queue: None,
        },
        // Everything else from the /24: queue 1.
        SteerRule {
            src: range("192.0.2.0", "192.0.2.255"),
            dst: None,
            proto: None,
            queue: Some(1),
        },
    ];
    queues[1].rx.steer_by_rules(&rules).unwrap();
    let hash = |s: &str, d: &str| (v4(s) ^ v4(d)) as usize % 2;
    let udp = |s: &str, d: &str| {
        bitsgw_wire::craft::udp_packet(s.parse().unwrap(), d.parse().unwrap(), 1000, 2000, 32)
    };
    let cases = [
        (udp("192.0.2.10", "198.51.100.7"), Some(1)),
        (esp("192.0.2.10", "198.51.100.7", 0x100, 1), Some(0)),
        (esp("192.0.2.10", "198.51.100.8", 0x100, 1), Some(1)),
        (
            udp("192.0.2.20", "203.0.113.9"),
            Some(hash("192.0.2.20", "203.0.113.9")),
        ),
        (
            udp("192.0.2.20", "203.0.113.8"),
            Some(hash("192.0.2.20", "203.0.113.8")),
        ),
        (udp("192.0.2.30", "203.0.113.9"), Some(1)),
        (
            udp("198.51.100.1", "203.0.113.9"),
            Some(hash("198.51.100.1", "203.0.113.9")),
        ),
        (
            udp("198.51.100.1", "203.0.113.8"),
            Some(hash("198.51.100.1", "203.0.113.8")),
        ),
    ];
    for (i, (ip, want)) in cases.into_iter().enumerate() {
        let frame = ether(&ip);
        sender.tx.send(&frame).unwrap();
        assert_eq!(sender.tx.flush(), 0);
        let got = queue_of(&mut queues, &frame, Duration::from_secs(2));
        assert_eq!(got, want, "case {i}");
    }
}
