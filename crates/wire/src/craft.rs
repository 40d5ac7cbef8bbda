//! Building whole packets from parts, for tests, examples and synthetic
//! traffic (the benchmarks and the demo): not for the per-packet path,
//! since it allocates.

use crate::{checksum, proto};
use std::net::IpAddr;

/// Where the checksum of an upper-layer protocol sits, if it has one that
/// covers the pseudo-header (UDP, TCP, ICMPv6, Mobility Header).
fn checksum_field(upper: u8) -> Option<usize> {
    match upper {
        proto::UDP => Some(6),
        proto::TCP => Some(16),
        proto::ICMPV6 => Some(2),
        proto::MH => Some(4),
        _ => None,
    }
}

/// An IPv4 or IPv6 packet (no options or extension headers) carrying
/// `upper` as protocol `proto`, with the upper layer's checksum filled in
/// (RFC 768, RFC 793, RFC 4443 2.3, RFC 6275 6.1.1) and, for IPv4, DF as
/// asked. Panics if `src` and `dst` are of different families.
pub fn ip_packet(src: IpAddr, dst: IpAddr, proto: u8, upper: &[u8], df: bool) -> Vec<u8> {
    let (s, d): (Vec<u8>, Vec<u8>) = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => (s.octets().to_vec(), d.octets().to_vec()),
        (IpAddr::V6(s), IpAddr::V6(d)) => (s.octets().to_vec(), d.octets().to_vec()),
        _ => panic!("ip_packet: source and destination of different families"),
    };
    let mut upper = upper.to_vec();
    if let Some(f) = checksum_field(proto) {
        if upper.len() >= f + 2 {
            upper[f] = 0;
            upper[f + 1] = 0;
            let len = u32::try_from(upper.len()).unwrap_or(u32::MAX);
            let acc = checksum::pseudo_header(&s, &d, proto, len);
            let c = match checksum::finish(checksum::sum(acc, &upper)) {
                // A computed UDP checksum of zero is sent as all ones: zero
                // means "no checksum" (RFC 768), which IPv6 forbids (RFC
                // 8200 8.1).
                0 if proto == proto::UDP => 0xffff,
                c => c,
            };
            upper[f..f + 2].copy_from_slice(&c.to_be_bytes());
        }
    }
    let mut p = vec![0u8; if s.len() == 4 { 20 } else { 40 }];
    if s.len() == 4 {
        let total = u16::try_from(20 + upper.len()).unwrap_or(u16::MAX);
        crate::ip::emit_ipv4_header(&mut p, to4(&s), to4(&d), proto, total, 64, 0x1234, 0, df);
    } else {
        let len = u16::try_from(upper.len()).unwrap_or(u16::MAX);
        crate::ip::emit_ipv6_header(&mut p, to16(&s), to16(&d), proto, len, 64, 0);
    }
    p.extend_from_slice(&upper);
    p
}

fn to4(b: &[u8]) -> [u8; 4] {
    let mut a = [0u8; 4];
    a.copy_from_slice(b);
    a
}

fn to16(b: &[u8]) -> [u8; 16] {
    let mut a = [0u8; 16];
    a.copy_from_slice(b);
    a
}

/// A UDP datagram in IP, DF set for IPv4, with `payload_len` bytes of a
/// fixed pattern.
pub fn udp_packet(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, payload_len: usize) -> Vec<u8> {
    let udp_len = 8 + payload_len;
    let mut udp = vec![0u8; udp_len];
    udp[0..2].copy_from_slice(&sport.to_be_bytes());
    udp[2..4].copy_from_slice(&dport.to_be_bytes());
    udp[4..6].copy_from_slice(&u16::try_from(udp_len).unwrap_or(u16::MAX).to_be_bytes());
    for (i, b) in udp[8..].iter_mut().enumerate() {
        *b = (i * 7 + 3) as u8;
    }
    ip_packet(src, dst, proto::UDP, &udp, true)
}

/// A Mobility Header message (RFC 6275 6.1) of `mh_type` with an 8-byte
/// message body (for a BU: sequence 7, flags A and H, lifetime 16 units),
/// Payload Proto 59 and the checksum of RFC 6275 6.1.1.
pub fn mh_packet(src: IpAddr, dst: IpAddr, mh_type: u8) -> Vec<u8> {
    let mut m = [0, 1, mh_type, 0, 0, 0, 0, 7, 0xc0, 0, 0, 0x10, 1, 0, 0, 0];
    m[0] = proto::NO_NEXT_HEADER; // Payload Proto
    ip_packet(src, dst, proto::MH, &m, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_verify() {
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let b: IpAddr = "2001:db8::2".parse().unwrap();
        for p in [mh_packet(a, b, 5), udp_packet(a, b, 1, 2, 33)] {
            let acc = checksum::pseudo_header(&p[8..24], &p[24..40], p[6], (p.len() - 40) as u32);
            assert_eq!(checksum::finish(checksum::sum(acc, &p[40..])), 0);
        }
        let v4 = udp_packet(
            "192.0.2.1".parse().unwrap(),
            "192.0.2.2".parse().unwrap(),
            1,
            2,
            5,
        );
        assert_eq!(checksum::checksum(&v4[..20]), 0);
        assert_eq!(v4[6] & 0x40, 0x40);
    }

    /// A UDP datagram whose checksum computes to zero carries 0xffff: the
    /// source port is chosen so that the sum is all ones.
    #[test]
    fn udp_checksum_of_zero_is_sent_as_all_ones() {
        let (src, dst): (IpAddr, IpAddr) = (
            "2001:db8::1".parse().unwrap(),
            "2001:db8::2".parse().unwrap(),
        );
        let probe = udp_packet(src, dst, 0, 9, 3);
        let sum_without_port = !u16::from_be_bytes([probe[46], probe[47]]);
        let sport = !sum_without_port;
        let p = udp_packet(src, dst, sport, 9, 3);
        assert_eq!(&p[46..48], &[0xff, 0xff]);
        let acc = checksum::pseudo_header(&p[8..24], &p[24..40], proto::UDP, 11);
        assert_eq!(checksum::finish(checksum::sum(acc, &p[40..])), 0);
    }
}
