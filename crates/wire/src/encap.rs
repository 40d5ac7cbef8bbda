//! IP-in-IP tunnelling for Dual-Stack Mobile IPv6: IPv6 or IPv4 packets in
//! an outer IPv6 (RFC 2473) or IPv4 (RFC 4213 3.5, RFC 2003) header, or in
//! IPv4 and UDP to the DSMIPv6 port with an optional TLV header
//! (RFC 5555 4.1). Both directions work in place on a [`PacketBuf`].

use crate::buf::PacketBuf;
use crate::esp::{emit_udp_header, UDP_HEADER_LEN};
use crate::ip::{self, IpVersion, IPV4_MIN_HEADER, IPV6_HEADER};
use crate::proto;

/// The UDP port of DSMIPv6 UDP encapsulation (RFC 5555 4.1, IANA 4191).
pub const DSMIP_UDP_PORT: u16 = 4191;
/// Length of the TLV header between UDP and the tunnelled packet
/// (RFC 5555 4.1): Type, Length, 16 reserved bits.
pub const TLV_HEADER_LEN: usize = 4;
/// TLV header Type for a tunnelled IP packet. Its high nibble is 0, which
/// is how a receiver tells a TLV header from a bare IPv4 or IPv6 header
/// (version nibble 4 or 6).
pub const TLV_TYPE_IP: u8 = 0;
/// Hop limit / TTL of outer headers.
pub const OUTER_HOP_LIMIT: u8 = 64;

/// Why a packet could not be encapsulated or decapsulated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncapError {
    /// Not enough headroom for the outer headers.
    #[error("no headroom for the outer headers")]
    NoSpace,
    /// The inner or outer packet is not well-formed IP, or the inner
    /// packet's version contradicts the outer header.
    #[error("malformed tunnelled packet")]
    Malformed,
    /// Not a tunnelled packet of a kind this module strips.
    #[error("not an encapsulated packet")]
    NotEncapsulated,
    /// The result would exceed the outer header's length field.
    #[error("encapsulated packet too big")]
    TooBig,
}

/// Outer header(s) to put in front of a packet; the family follows the
/// address type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outer {
    /// IPv6 (RFC 2473).
    V6 {
        /// Source (tunnel entry point).
        src: [u8; 16],
        /// Destination (tunnel exit point).
        dst: [u8; 16],
    },
    /// IPv4 (RFC 4213 3.5, RFC 2003).
    V4 {
        /// Source.
        src: [u8; 4],
        /// Destination.
        dst: [u8; 4],
    },
    /// IPv4 and UDP (RFC 5555 4.1), with a TLV header when `tlv`.
    V4Udp {
        /// Source.
        src: [u8; 4],
        /// Destination.
        dst: [u8; 4],
        /// UDP source port.
        src_port: u16,
        /// UDP destination port.
        dst_port: u16,
        /// A TLV header sits between UDP and the inner packet.
        tlv: bool,
    },
}

/// The inner packet's version, protocol number and length by its own
/// header (bytes past it are dropped).
fn inner_info(pkt: &[u8]) -> Result<(IpVersion, u8, usize), EncapError> {
    let version = ip::version(pkt).map_err(|_| EncapError::Malformed)?;
    let len = match version {
        IpVersion::V4 => {
            if pkt.len() < IPV4_MIN_HEADER {
                return Err(EncapError::Malformed);
            }
            usize::from(u16::from_be_bytes([pkt[2], pkt[3]]))
        }
        IpVersion::V6 => {
            if pkt.len() < IPV6_HEADER {
                return Err(EncapError::Malformed);
            }
            IPV6_HEADER + usize::from(u16::from_be_bytes([pkt[4], pkt[5]]))
        }
    };
    if len > pkt.len() || (version == IpVersion::V4 && len < IPV4_MIN_HEADER) {
        return Err(EncapError::Malformed);
    }
    let proto = match version {
        IpVersion::V4 => proto::IPV4,
        IpVersion::V6 => proto::IPV6,
    };
    Ok((version, proto, len))
}

/// Prepends the outer header(s) (RFC 2473 3, RFC 4213 3.5, RFC 5555 4.1).
/// The protocol / next header is 41 for an IPv6 inner packet and 4 for an
/// IPv4 one; hop limit / TTL 64; the traffic class is copied from the
/// inner header. An IPv4 outer header gets DF when the inner packet is
/// IPv6 (RFC 4213 3.2) and the inner DF bit and identification otherwise.
/// With UDP, the UDP checksum is zero (RFC 768 allows it for IPv4, as
/// RFC 5555 4.1 does) and the TLV header is added when `tlv` is set.
pub fn encapsulate(buf: &mut PacketBuf, outer: &Outer) -> Result<(), EncapError> {
    let (version, proto, inner_len) = inner_info(buf.data())?;
    buf.truncate(inner_len);
    let tos = ip::traffic_class(buf.data());
    let (df, ident) = match version {
        IpVersion::V6 => (true, 0),
        IpVersion::V4 => {
            let p = buf.data();
            (p[6] & 0x40 != 0, u16::from_be_bytes([p[4], p[5]]))
        }
    };
    match *outer {
        Outer::V6 { src, dst } => {
            let payload = u16::try_from(inner_len).map_err(|_| EncapError::TooBig)?;
            let h = buf.prepend(IPV6_HEADER).map_err(|_| EncapError::NoSpace)?;
            ip::emit_ipv6_header(h, src, dst, proto, payload, OUTER_HOP_LIMIT, tos);
        }
        Outer::V4 { src, dst } => {
            let total =
                u16::try_from(IPV4_MIN_HEADER + inner_len).map_err(|_| EncapError::TooBig)?;
            let h = buf
                .prepend(IPV4_MIN_HEADER)
                .map_err(|_| EncapError::NoSpace)?;
            ip::emit_ipv4_header(h, src, dst, proto, total, OUTER_HOP_LIMIT, ident, tos, df);
        }
        Outer::V4Udp {
            src,
            dst,
            src_port,
            dst_port,
            tlv,
        } => {
            let tlv_len = if tlv { TLV_HEADER_LEN } else { 0 };
            let udp_len = u16::try_from(UDP_HEADER_LEN + tlv_len + inner_len)
                .map_err(|_| EncapError::TooBig)?;
            let total = u16::try_from(IPV4_MIN_HEADER + usize::from(udp_len))
                .map_err(|_| EncapError::TooBig)?;
            let h = buf
                .prepend(IPV4_MIN_HEADER + UDP_HEADER_LEN + tlv_len)
                .map_err(|_| EncapError::NoSpace)?;
            ip::emit_ipv4_header(
                h,
                src,
                dst,
                proto::UDP,
                total,
                OUTER_HOP_LIMIT,
                ident,
                tos,
                df,
            );
            let udp = &mut h[IPV4_MIN_HEADER..];
            emit_udp_header(udp, src_port, dst_port, udp_len);
            if tlv {
                let t = &mut udp[UDP_HEADER_LEN..UDP_HEADER_LEN + TLV_HEADER_LEN];
                t[0] = TLV_TYPE_IP;
                t[1] = TLV_HEADER_LEN as u8;
                t[2..4].fill(0);
            }
        }
    }
    Ok(())
}

/// What [`decapsulate`] stripped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decapsulated {
    /// The outer header's addresses (and ports, TLV header).
    pub outer: Outer,
}

/// Checks that the payload at `inner` is IP of the version `proto` names
/// (41: IPv6, 4: IPv4), or of either version when `proto` is `None`.
fn inner_matches(inner: &[u8], proto: Option<u8>) -> Result<(), EncapError> {
    let (_, p, _) = inner_info(inner)?;
    match proto {
        Some(want) if want != p => Err(EncapError::Malformed),
        _ => Ok(()),
    }
}

/// Strips one outer layer in place: IPv6 with next header 41 or 4, IPv4
/// with protocol 41 or 4, or IPv4 and UDP to `udp_port` with or without a
/// TLV header (RFC 5555 4.1: a payload whose first nibble is 4 or 6 is a
/// bare IP packet, one whose first byte is the TLV Type for IP carries a
/// TLV header). Returns the outer addresses and ports.
///
/// [`EncapError::NotEncapsulated`] if the packet is none of these, and
/// [`EncapError::Malformed`] if it is but the inner packet is not IP of the
/// version named; the buffer is unchanged on every error.
pub fn decapsulate(buf: &mut PacketBuf, udp_port: u16) -> Result<Decapsulated, EncapError> {
    let pkt = buf.data();
    let meta = ip::parse(pkt).map_err(|_| EncapError::NotEncapsulated)?;
    if meta.frag.is_some() {
        return Err(EncapError::NotEncapsulated);
    }
    let total = meta.total_len;
    let hl = meta.header_len;
    let (strip, outer) = match (meta.version, meta.proto) {
        (IpVersion::V6, proto::IPV4 | proto::IPV6) => {
            inner_matches(&pkt[hl..total], Some(meta.proto))?;
            let mut src = [0u8; 16];
            let mut dst = [0u8; 16];
            src.copy_from_slice(&pkt[8..24]);
            dst.copy_from_slice(&pkt[24..40]);
            (hl, Outer::V6 { src, dst })
        }
        (IpVersion::V4, proto::IPV4 | proto::IPV6) => {
            inner_matches(&pkt[hl..total], Some(meta.proto))?;
            (hl, v4_outer(pkt))
        }
        (IpVersion::V4, proto::UDP) => {
            let udp = pkt.get(hl..total).ok_or(EncapError::NotEncapsulated)?;
            if udp.len() < UDP_HEADER_LEN {
                return Err(EncapError::NotEncapsulated);
            }
            let src_port = u16::from_be_bytes([udp[0], udp[1]]);
            let dst_port = u16::from_be_bytes([udp[2], udp[3]]);
            if dst_port != udp_port {
                return Err(EncapError::NotEncapsulated);
            }
            let udp_len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
            if udp_len < UDP_HEADER_LEN || udp_len > udp.len() {
                return Err(EncapError::Malformed);
            }
            let payload = &udp[UDP_HEADER_LEN..udp_len];
            let tlv = match payload.first().map(|b| b >> 4) {
                Some(4 | 6) => false,
                Some(_) if payload[0] == TLV_TYPE_IP && payload.len() > TLV_HEADER_LEN => true,
                _ => return Err(EncapError::NotEncapsulated),
            };
            let tlv_len = if tlv { TLV_HEADER_LEN } else { 0 };
            inner_matches(&payload[tlv_len..], None)?;
            let (src, dst) = match v4_outer(pkt) {
                Outer::V4 { src, dst } => (src, dst),
                _ => return Err(EncapError::Malformed),
            };
            let outer = Outer::V4Udp {
                src,
                dst,
                src_port,
                dst_port,
                tlv,
            };
            // Drop what follows the UDP datagram too.
            let end = hl + udp_len;
            buf.truncate(end);
            (hl + UDP_HEADER_LEN + tlv_len, outer)
        }
        _ => return Err(EncapError::NotEncapsulated),
    };
    buf.truncate(total);
    buf.trim_front(strip).map_err(|_| EncapError::Malformed)?;
    // The inner packet's own length decides where it ends.
    let (_, _, inner_len) = inner_info(buf.data())?;
    buf.truncate(inner_len);
    Ok(Decapsulated { outer })
}

/// The addresses of an IPv4 header (at least 20 bytes, checked by the
/// caller's parse).
fn v4_outer(pkt: &[u8]) -> Outer {
    let mut src = [0u8; 4];
    let mut dst = [0u8; 4];
    src.copy_from_slice(&pkt[12..16]);
    dst.copy_from_slice(&pkt[16..20]);
    Outer::V4 { src, dst }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::craft;
    use std::net::IpAddr;

    fn inner_v6() -> Vec<u8> {
        let a: IpAddr = "2001:db8:1::5".parse().unwrap();
        let b: IpAddr = "2001:db8:2::9".parse().unwrap();
        craft::udp_packet(a, b, 1000, 2000, 33)
    }

    fn inner_v4() -> Vec<u8> {
        let a: IpAddr = "10.0.0.5".parse().unwrap();
        let b: IpAddr = "10.1.0.9".parse().unwrap();
        craft::udp_packet(a, b, 1000, 2000, 21)
    }

    fn outers() -> [Outer; 4] {
        [
            Outer::V6 {
                src: [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                dst: [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
            },
            Outer::V4 {
                src: [192, 0, 2, 1],
                dst: [198, 51, 100, 2],
            },
            Outer::V4Udp {
                src: [192, 0, 2, 1],
                dst: [198, 51, 100, 2],
                src_port: 40000,
                dst_port: DSMIP_UDP_PORT,
                tlv: false,
            },
            Outer::V4Udp {
                src: [192, 0, 2, 1],
                dst: [198, 51, 100, 2],
                src_port: 40000,
                dst_port: DSMIP_UDP_PORT,
                tlv: true,
            },
        ]
    }

    #[test]
    fn round_trips_every_outer_with_both_inner_families() {
        for inner in [inner_v6(), inner_v4()] {
            let inner_proto = if inner[0] >> 4 == 6 {
                proto::IPV6
            } else {
                proto::IPV4
            };
            for outer in outers() {
                let mut buf = PacketBuf::from_slice(&inner);
                encapsulate(&mut buf, &outer).unwrap();
                let p = buf.data().to_vec();
                let meta = ip::parse(&p).unwrap();
                assert_eq!(meta.total_len, p.len());
                assert_eq!(meta.hop_limit, OUTER_HOP_LIMIT);
                match outer {
                    Outer::V6 { .. } => assert_eq!(meta.proto, inner_proto),
                    Outer::V4 { .. } | Outer::V4Udp { .. } => {
                        assert_eq!(crate::checksum::checksum(&p[..20]), 0);
                        // DF on the outer header: inner IPv6, or copied
                        // from the inner IPv4 (build sets it).
                        assert_eq!(p[6] & 0x40, 0x40);
                    }
                }
                if let Outer::V4Udp { tlv, .. } = outer {
                    assert_eq!(meta.proto, proto::UDP);
                    assert_eq!(
                        usize::from(u16::from_be_bytes([p[24], p[25]])),
                        p.len() - 20
                    );
                    assert_eq!(&p[26..28], &[0, 0]);
                    assert_eq!(u16::from_be_bytes([p[22], p[23]]), DSMIP_UDP_PORT);
                    if tlv {
                        assert_eq!(&p[28..32], &[TLV_TYPE_IP, 4, 0, 0]);
                    }
                } else if let Outer::V4 { .. } = outer {
                    assert_eq!(meta.proto, inner_proto);
                }
                let d = decapsulate(&mut buf, DSMIP_UDP_PORT).unwrap();
                assert_eq!(d.outer, outer);
                assert_eq!(buf.data(), &inner[..]);
            }
        }
    }

    #[test]
    fn plain_packets_are_left_alone() {
        for p in [inner_v4(), inner_v6()] {
            let mut buf = PacketBuf::from_slice(&p);
            assert_eq!(
                decapsulate(&mut buf, DSMIP_UDP_PORT),
                Err(EncapError::NotEncapsulated)
            );
            assert_eq!(buf.data(), &p[..]);
        }
        // UDP to another port.
        let mut buf = PacketBuf::from_slice(&inner_v6());
        encapsulate(&mut buf, &outers()[2]).unwrap();
        let before = buf.data().to_vec();
        assert_eq!(
            decapsulate(&mut buf, 4500),
            Err(EncapError::NotEncapsulated)
        );
        assert_eq!(buf.data(), &before[..]);
        // Protocol 41 with an IPv4 packet inside.
        let mut buf = PacketBuf::from_slice(&inner_v4());
        encapsulate(&mut buf, &outers()[1]).unwrap();
        buf.data_mut()[9] = proto::IPV6;
        ip::ipv4_fill_checksum(buf.data_mut());
        let before = buf.data().to_vec();
        assert_eq!(
            decapsulate(&mut buf, DSMIP_UDP_PORT),
            Err(EncapError::Malformed)
        );
        assert_eq!(buf.data(), &before[..]);
    }

    #[test]
    fn encapsulate_errors() {
        let mut buf = PacketBuf::from_slice(&[1, 2, 3]);
        assert_eq!(
            encapsulate(&mut buf, &outers()[0]),
            Err(EncapError::Malformed)
        );
        let inner = inner_v6();
        let mut buf = PacketBuf::with_capacity(inner.len() + 30, 30);
        buf.set(&inner).unwrap();
        assert_eq!(buf.headroom(), 30);
        assert_eq!(
            encapsulate(&mut buf, &outers()[0]),
            Err(EncapError::NoSpace)
        );
    }
}
