//! The ICMP errors sent instead of fragmenting: ICMPv4 Fragmentation
//! Needed (RFC 792, RFC 1191) and ICMPv6 Packet Too Big (RFC 4443 3.2).

use bitsgw_wire::checksum;
use bitsgw_wire::icmp as icmp_type;
use bitsgw_wire::ip::{self, IpVersion, IPV4_MIN_HEADER, IPV6_HEADER};
use bitsgw_wire::{proto, PacketBuf};

use crate::FragDrop;

/// Largest ICMPv4 error datagram (RFC 1812 4.3.2.3).
const ICMPV4_ERROR_MAX: usize = 576;
/// Largest ICMPv6 error packet: the IPv6 minimum MTU (RFC 4443 2.4(c)).
const ICMPV6_ERROR_MAX: usize = 1280;
/// Hop limit / TTL of the ICMP errors built here.
const ICMP_HOP_LIMIT: u8 = 64;

/// Whether an IPv4 address names a single node that may get an ICMP error
/// (RFC 1812 4.3.2.7: not 0/8, loopback, multicast, class E, broadcast).
fn ipv4_unicast(a: [u8; 4]) -> bool {
    !matches!(a[0], 0 | 127 | 224..=255)
}

/// ICMPv4 Destination Unreachable, code 4 "fragmentation needed and DF
/// set" (RFC 792), with the next-hop MTU (RFC 1191 4), from `src` to the
/// original packet's source, quoting the original IP header and as much of
/// its data as keeps the error within 576 bytes (RFC 1812 4.3.2.3).
///
/// Refused with [`FragDrop::IcmpNotAllowed`] when RFC 1812 4.3.2.7 forbids
/// the error: the original is an ICMP error, a non-initial fragment, sent
/// to a multicast or broadcast address, or from an address that does not
/// name a single node.
pub fn icmpv4_frag_needed(
    original: &[u8],
    next_hop_mtu: u16,
    src: [u8; 4],
    out: &mut PacketBuf,
) -> Result<(), FragDrop> {
    let meta = ip::parse(original).map_err(|_| FragDrop::Malformed)?;
    if meta.version != IpVersion::V4 {
        return Err(FragDrop::Malformed);
    }
    let original = original.get(..meta.total_len).ok_or(FragDrop::Malformed)?;
    let mut orig_src = [0u8; 4];
    orig_src.copy_from_slice(&original[12..16]);
    let orig_dst = [original[16], original[17], original[18], original[19]];
    let icmp_error = meta.proto == proto::ICMP
        && !meta.is_later_fragment()
        && original.get(meta.header_len).is_some_and(|t| {
            matches!(
                *t,
                icmp_type::V4_DEST_UNREACHABLE
                    | icmp_type::V4_SOURCE_QUENCH
                    | icmp_type::V4_REDIRECT
                    | icmp_type::V4_TIME_EXCEEDED
                    | icmp_type::V4_PARAMETER_PROBLEM
            )
        });
    if meta.is_later_fragment() || icmp_error || !ipv4_unicast(orig_src) || !ipv4_unicast(orig_dst)
    {
        return Err(FragDrop::IcmpNotAllowed);
    }
    let quote = original.len().min(ICMPV4_ERROR_MAX - IPV4_MIN_HEADER - 8);
    let len = IPV4_MIN_HEADER + 8 + quote;
    let buf = out
        .reset_to_len(len)
        .map_err(|_| FragDrop::BufferTooSmall)?;
    // len <= 576.
    ip::emit_ipv4_header(
        buf,
        src,
        orig_src,
        proto::ICMP,
        len as u16,
        ICMP_HOP_LIMIT,
        0,
        0,
        false,
    );
    let icmp = &mut buf[IPV4_MIN_HEADER..];
    icmp[..4].copy_from_slice(&[
        icmp_type::V4_DEST_UNREACHABLE,
        icmp_type::V4_CODE_FRAG_NEEDED,
        0,
        0,
    ]);
    icmp[4..6].copy_from_slice(&[0, 0]);
    icmp[6..8].copy_from_slice(&next_hop_mtu.to_be_bytes());
    icmp[8..].copy_from_slice(&original[..quote]);
    let c = checksum::checksum(icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// ICMPv6 Packet Too Big (RFC 4443 3.2) with `mtu`, from `src` to the
/// original packet's source, quoting as much of the original as keeps the
/// error within 1280 bytes, checksummed with the pseudo-header (RFC 4443
/// 2.3).
///
/// Refused with [`FragDrop::IcmpNotAllowed`] when RFC 4443 2.4(e) forbids
/// it: the original is an ICMPv6 error, or its source is unspecified or
/// multicast. (Packet Too Big is allowed for multicast destinations.)
pub fn icmpv6_packet_too_big(
    original: &[u8],
    mtu: u32,
    src: [u8; 16],
    out: &mut PacketBuf,
) -> Result<(), FragDrop> {
    let meta = ip::parse(original).map_err(|_| FragDrop::Malformed)?;
    if meta.version != IpVersion::V6 {
        return Err(FragDrop::Malformed);
    }
    let original = original.get(..meta.total_len).ok_or(FragDrop::Malformed)?;
    let mut orig_src = [0u8; 16];
    orig_src.copy_from_slice(&original[8..24]);
    let icmp_error = meta.proto == proto::ICMPV6
        && !meta.is_later_fragment()
        && original
            .get(meta.header_len)
            .is_some_and(|t| *t < icmp_type::V6_FIRST_INFORMATIONAL);
    if icmp_error || orig_src == [0; 16] || orig_src[0] == 0xff {
        return Err(FragDrop::IcmpNotAllowed);
    }
    let quote = original.len().min(ICMPV6_ERROR_MAX - IPV6_HEADER - 8);
    let icmp_len = 8 + quote;
    let buf = out
        .reset_to_len(IPV6_HEADER + icmp_len)
        .map_err(|_| FragDrop::BufferTooSmall)?;
    // icmp_len <= 1240.
    ip::emit_ipv6_header(
        buf,
        src,
        orig_src,
        proto::ICMPV6,
        icmp_len as u16,
        ICMP_HOP_LIMIT,
        0,
    );
    let icmp = &mut buf[IPV6_HEADER..];
    icmp[..4].copy_from_slice(&[icmp_type::V6_PACKET_TOO_BIG, 0, 0, 0]);
    icmp[4..8].copy_from_slice(&mtu.to_be_bytes());
    icmp[8..].copy_from_slice(&original[..quote]);
    checksum::fill_icmpv6(&src, &orig_src, icmp);
    Ok(())
}
