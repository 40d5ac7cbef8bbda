//! AF_XDP ports (feature `af-xdp`) on a veth pair inside a namespace the
//! test creates, against an AF_PACKET port on the other end: bursts cross
//! both ways whole and in order, more frames than the UMEM lends either
//! direction at once.
#![cfg(feature = "af-xdp")]
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use bitsgw_io::{netns, Port};
use bitsgw_wire::PacketBuf;
use common::Netns;

/// A broadcast frame of a local experimental EtherType numbered `n`.
fn frame(n: u16) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    f.extend_from_slice(&0x88b5u16.to_be_bytes());
    f.extend_from_slice(&n.to_be_bytes());
    f.resize(60 + usize::from(n % 1000), 0x5a);
    f
}

/// Appends the test frames `to` has waiting (waiting at most `wait` for
/// the first) to `got`.
fn take(to: &mut Port, got: &mut Vec<Vec<u8>>, buf: &mut PacketBuf, wait: Duration) {
    let mut wait = wait;
    while to.rx.recv_within(buf, wait).unwrap() {
        if buf.data().get(12..14) == Some(&[0x88, 0xb5]) {
            got.push(buf.data().to_vec());
        }
        wait = Duration::ZERO;
    }
}

/// Sends `count` numbered frames in bursts of 32 and collects what `to`
/// receives of them.
fn cross(from: &mut Port, to: &mut Port, count: u16) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = PacketBuf::new();
    for chunk in (0..count).collect::<Vec<_>>().chunks(32) {
        for &n in chunk {
            from.tx.send(&frame(n)).unwrap();
        }
        assert_eq!(from.tx.flush(), 0);
        take(to, &mut got, &mut buf, Duration::from_millis(1));
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while got.len() < usize::from(count) && Instant::now() < deadline {
        take(to, &mut got, &mut buf, Duration::from_millis(10));
    }
    got
}

#[test]
fn frames_cross_a_veth_pair_both_ways_through_an_af_xdp_port() {
    let ns = Netns::new("afxdp");
    ns.veth_pair("xa0", "xb0");
    let (xdp, packet) = netns::run_in(&ns.name, || {
        (bitsgw_io::af_xdp("xa0"), bitsgw_io::af_packet("xb0"))
    })
    .unwrap();
    let (mut xdp, mut packet) = (xdp.unwrap(), packet.unwrap());
    // More than the 2048 frames each direction has.
    let count = 5000;
    let want: Vec<Vec<u8>> = (0..count).map(frame).collect();
    assert_eq!(
        cross(&mut xdp, &mut packet, count),
        want,
        "AF_XDP to AF_PACKET"
    );
    assert_eq!(
        cross(&mut packet, &mut xdp, count),
        want,
        "AF_PACKET to AF_XDP"
    );
    assert_eq!(xdp.rx.take_kernel_drops().unwrap(), 0);
}
