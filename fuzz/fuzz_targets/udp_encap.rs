#![no_main]
//! ESP-in-UDP (RFC 3948): the classification of the UDP payload, then the
//! whole packet through B's inbound path with an encapsulating SA. Byte 0
//! picks the configuration (only encapsulating ones), byte 1 the source
//! and destination ports, the rest is the UDP payload; if the payload is
//! long enough and byte 1's top bit is set it is sealed as authentic ESP.

mod common;

use bitsgw_wire::esp::{classify_udp_encap, UdpEncapKind};
use bitsgw_wire::PacketBuf;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [pick, ports, rest @ ..] = data else {
        return;
    };
    let (shape, mut b) = common::stage(*pick, false);
    let Some((pa, pb)) = shape.encap else { return };
    let kind = classify_udp_encap(rest);
    if kind == UdpEncapKind::Esp {
        assert!(rest.len() >= 8);
    }
    let pkt = if ports & 0x80 != 0 {
        shape.sealed(u32::from(ports & 0x3f), rest)
    } else {
        let (sport, dport) = match ports & 3 {
            0 => (pa, pb),
            1 => (4500, 4500),
            2 => (pb, pa),
            _ => (u16::from(*ports), 4500),
        };
        let mut udp = Vec::with_capacity(8 + rest.len());
        udp.extend_from_slice(&sport.to_be_bytes());
        udp.extend_from_slice(&dport.to_be_bytes());
        let len = if ports & 4 != 0 {
            (8 + rest.len()) as u16
        } else {
            u16::from(*ports)
        };
        udp.extend_from_slice(&len.to_be_bytes());
        udp.extend_from_slice(&[0, 0]);
        udp.extend_from_slice(rest);
        let (oa, ob) = shape.outer();
        common::ip_packet(oa, ob, 17, &udp)
    };
    let before = b.counters().clone();
    let mut buf = PacketBuf::from_slice(&pkt);
    let d = b.handle_inbound(&mut buf, common::T0);
    common::check_drop(&before, b.counters(), d);
});
