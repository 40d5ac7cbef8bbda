//! Mobile IPv6 extension headers and ICMPv6 messages: the Home Address
//! destination option (RFC 6275 6.3), the type 2 routing header (6.4), and
//! Mobile Prefix Solicitation / Advertisement (6.7, 6.8).
//!
//! The header functions work in place on whole IPv6 packets; none of them
//! panics on malformed input.

use crate::buf::PacketBuf;
use crate::checksum;
use crate::ip::{self, ExtHeader, IpError, IPV6_HEADER};
use crate::proto;

/// Option Type of the Home Address option (RFC 6275 6.3).
pub const HOME_ADDRESS_OPTION: u8 = 201;
/// ICMPv6 type of Mobile Prefix Solicitation (RFC 6275 6.7).
pub const ICMPV6_MPS: u8 = 146;
/// ICMPv6 type of Mobile Prefix Advertisement (RFC 6275 6.8).
pub const ICMPV6_MPA: u8 = 147;
/// Routing Type of the type 2 routing header (RFC 6275 6.4).
pub const ROUTING_TYPE_2: u8 = 2;
/// Bytes of the Destination Options header that
/// [`insert_home_address_option`] writes.
pub const HAO_HEADER_LEN: usize = 24;
/// Bytes of a type 2 routing header.
pub const RH2_LEN: usize = 24;

/// Why a Mobile IPv6 header operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Mip6Error {
    /// The packet is not IPv6.
    #[error("not an IPv6 packet")]
    NotIpv6,
    /// A header or option is malformed (wrong length, bad option layout,
    /// wrong ICMPv6 type or code).
    #[error("malformed mobile IPv6 header or message")]
    Malformed,
    /// No Home Address option in the packet.
    #[error("no home address option")]
    NoHomeAddressOption,
    /// No type 2 routing header in the packet.
    #[error("no type 2 routing header")]
    NoType2RoutingHeader,
    /// The type 2 routing header's Segments Left is not 1 (RFC 6275 6.4).
    #[error("type 2 routing header segments left is not 1")]
    BadSegmentsLeft,
    /// Not enough room in the buffer.
    #[error("no space in the buffer")]
    NoSpace,
    /// Shorter than its headers say.
    #[error("packet shorter than its headers")]
    Truncated,
    /// The packet would exceed the IPv6 payload length limit.
    #[error("packet too big for the IPv6 payload length")]
    TooBig,
}

/// The IPv6 total length (header + payload) of `pkt`, checked against the
/// buffer.
fn v6_total(pkt: &[u8]) -> Result<usize, Mip6Error> {
    if pkt.first().map(|b| b >> 4) != Some(6) {
        return Err(Mip6Error::NotIpv6);
    }
    if pkt.len() < IPV6_HEADER {
        return Err(Mip6Error::Truncated);
    }
    let total = IPV6_HEADER + usize::from(u16::from_be_bytes([pkt[4], pkt[5]]));
    if total > pkt.len() {
        return Err(Mip6Error::Truncated);
    }
    Ok(total)
}

/// Walks the Hop-by-Hop, Routing and Destination Options headers in front
/// of the upper layer (or ESP, or a Fragment header), calling `f` on each
/// until it returns a value.
fn walk<R>(
    pkt: &[u8],
    mut f: impl FnMut(&ExtHeader) -> Result<Option<R>, Mip6Error>,
) -> Result<Option<R>, Mip6Error> {
    let total = v6_total(pkt)?;
    let headers = ip::Ipv6ExtHeaders::new(&pkt[..total]).map_err(walk_error)?;
    for h in headers {
        let h = h.map_err(walk_error)?;
        if h.kind == proto::IPV6_FRAGMENT {
            return Ok(None);
        }
        if let Some(r) = f(&h)? {
            return Ok(Some(r));
        }
    }
    Ok(None)
}

fn walk_error(e: IpError) -> Mip6Error {
    match e {
        IpError::Truncated => Mip6Error::Truncated,
        _ => Mip6Error::Malformed,
    }
}

/// Where new Mobile IPv6 headers go: after the Hop-by-Hop header and, with
/// `after_routing`, after routing headers too (RFC 8200 4.1, RFC 6275 6.3).
/// Returns the offset and the offset of the Next Header field to chain.
fn insertion_point(pkt: &[u8], after_routing: bool) -> Result<(usize, usize), Mip6Error> {
    let mut point = (IPV6_HEADER, 6);
    walk(pkt, |h| {
        let skip =
            h.kind == proto::IPV6_HOP_BY_HOP || (after_routing && h.kind == proto::IPV6_ROUTING);
        if skip {
            point = (h.at + h.len, h.at);
            Ok(None)
        } else {
            Ok(Some(()))
        }
    })?;
    Ok(point)
}

/// Opens `n` bytes at the insertion point, chains them in with Next Header
/// value `kind`, and fixes the payload length. Returns the new header's
/// bytes; its Next Header byte is already set.
fn insert_header(
    buf: &mut PacketBuf,
    n: usize,
    kind: u8,
    after_routing: bool,
) -> Result<&mut [u8], Mip6Error> {
    let total = v6_total(buf.data())?;
    if total + n - IPV6_HEADER > usize::from(u16::MAX) {
        return Err(Mip6Error::TooBig);
    }
    let (at, field) = insertion_point(buf.data(), after_routing)?;
    let next = buf.data()[field];
    buf.insert_gap(at, n).map_err(|_| Mip6Error::NoSpace)?;
    let pkt = buf.data_mut();
    pkt[field] = kind;
    ip::ipv6_set_payload_len(pkt, total + n);
    pkt[at] = next;
    Ok(&mut pkt[at..at + n])
}

/// Removes the extension header `h`, chaining its Next Header into the
/// field before it and fixing the payload length.
fn remove_header(buf: &mut PacketBuf, h: &ExtHeader) -> Result<(), Mip6Error> {
    let total = v6_total(buf.data())?;
    let next = buf.data()[h.at];
    buf.data_mut()[h.prev_field] = next;
    buf.remove_range(h.at, h.len)
        .map_err(|_| Mip6Error::Truncated)?;
    ip::ipv6_set_payload_len(buf.data_mut(), total - h.len);
    Ok(())
}

/// Inserts a Destination Options header holding only a Home Address option
/// (RFC 6275 6.3), aligned 8n+6 with a PadN, after the IPv6 header (and
/// after a Hop-by-Hop or routing header, so before any Fragment header, AH
/// or ESP: RFC 6275 6.3, RFC 3776 3.1). Chains the Next Header fields and
/// fixes the payload length. 24 bytes.
pub fn insert_home_address_option(buf: &mut PacketBuf, home: [u8; 16]) -> Result<(), Mip6Error> {
    let h = insert_header(buf, HAO_HEADER_LEN, proto::IPV6_DEST_OPTS, true)?;
    h[1] = (HAO_HEADER_LEN / 8 - 1) as u8;
    // PadN of 4 bytes puts the option's Type at offset 6 (8n+6).
    h[2..6].copy_from_slice(&[1, 2, 0, 0]);
    h[6] = HOME_ADDRESS_OPTION;
    h[7] = 16;
    h[8..24].copy_from_slice(&home);
    Ok(())
}

/// Where the Home Address option is: the Destination Options header that
/// holds it, and the offset of the option's Type byte.
fn locate_hao(pkt: &[u8]) -> Result<Option<(ExtHeader, usize)>, Mip6Error> {
    walk(pkt, |h| {
        if h.kind != proto::IPV6_DEST_OPTS {
            return Ok(None);
        }
        let end = h.at + h.len;
        let mut at = h.at + 2;
        while at < end {
            let kind = pkt[at];
            if kind == 0 {
                at += 1;
                continue;
            }
            let len = usize::from(*pkt.get(at + 1).ok_or(Mip6Error::Malformed)?);
            if at + 2 + len > end {
                return Err(Mip6Error::Malformed);
            }
            if kind == HOME_ADDRESS_OPTION {
                if len != 16 {
                    return Err(Mip6Error::Malformed);
                }
                return Ok(Some((*h, at)));
            }
            at += 2 + len;
        }
        Ok(None)
    })
}

/// Finds the Home Address option (RFC 6275 6.3) in the Destination Options
/// header(s) in front of the upper layer or ESP: the offset in the packet
/// of its 16-byte address.
pub fn find_home_address_option(pkt: &[u8]) -> Result<Option<usize>, Mip6Error> {
    Ok(locate_hao(pkt)?.map(|(_, at)| at + 2))
}

/// Swaps the IPv6 source address and the Home Address option's address in
/// place (RFC 6275 9.3.1, RFC 3776 6.2 step 2). Returns the new source,
/// the home address.
pub fn swap_home_address(pkt: &mut [u8]) -> Result<[u8; 16], Mip6Error> {
    let at = find_home_address_option(pkt)?.ok_or(Mip6Error::NoHomeAddressOption)?;
    let mut src = [0u8; 16];
    src.copy_from_slice(&pkt[8..24]);
    pkt.copy_within(at..at + 16, 8);
    pkt[at..at + 16].copy_from_slice(&src);
    let mut home = [0u8; 16];
    home.copy_from_slice(&pkt[8..24]);
    Ok(home)
}

/// Removes the Home Address option: the whole Destination Options header
/// if it holds nothing else but padding, otherwise the option alone, which
/// becomes a PadN so the other options keep their place. Fixes the lengths
/// and Next Header chain.
pub fn remove_home_address_option(buf: &mut PacketBuf) -> Result<(), Mip6Error> {
    let (h, opt) = locate_hao(buf.data())?.ok_or(Mip6Error::NoHomeAddressOption)?;
    let pkt = buf.data_mut();
    // 18 bytes of PadN in place of the option.
    pkt[opt] = 1;
    pkt[opt + 1] = 16;
    pkt[opt + 2..opt + 18].fill(0);
    let only_padding = {
        let mut at = h.at + 2;
        let end = h.at + h.len;
        let mut pad = true;
        while at < end {
            match pkt[at] {
                0 => at += 1,
                1 => at += 2 + usize::from(pkt.get(at + 1).copied().unwrap_or(0)),
                _ => {
                    pad = false;
                    break;
                }
            }
        }
        pad
    };
    if only_padding {
        remove_header(buf, &h)?;
    }
    Ok(())
}

/// Inserts a type 2 routing header (RFC 6275 6.4), Segments Left 1, holding
/// `home`, after the IPv6 header (after a Hop-by-Hop header if there is
/// one). 24 bytes.
pub fn insert_type2_routing_header(buf: &mut PacketBuf, home: [u8; 16]) -> Result<(), Mip6Error> {
    let h = insert_header(buf, RH2_LEN, proto::IPV6_ROUTING, false)?;
    h[1] = (RH2_LEN / 8 - 1) as u8;
    h[2] = ROUTING_TYPE_2;
    h[3] = 1;
    h[4..8].fill(0);
    h[8..24].copy_from_slice(&home);
    Ok(())
}

/// The type 2 routing header, if any.
fn locate_rh2(pkt: &[u8]) -> Result<Option<ExtHeader>, Mip6Error> {
    walk(pkt, |h| {
        if h.kind != proto::IPV6_ROUTING || pkt[h.at + 2] != ROUTING_TYPE_2 {
            return Ok(None);
        }
        // RFC 6275 6.4: Hdr Ext Len 2, one address.
        if h.len != RH2_LEN {
            return Err(Mip6Error::Malformed);
        }
        Ok(Some(*h))
    })
}

/// Finds the type 2 routing header: the offset of its address.
pub fn find_type2_routing_header(pkt: &[u8]) -> Result<Option<usize>, Mip6Error> {
    Ok(locate_rh2(pkt)?.map(|h| h.at + 8))
}

/// Processes the type 2 routing header (RFC 6275 9.6 / 6.4, RFC 3776 6.4
/// step 2): Segments Left must be 1, the destination and the header's
/// address are swapped, and Segments Left becomes 0. Returns the home
/// address, the new destination.
pub fn process_type2_routing_header(pkt: &mut [u8]) -> Result<[u8; 16], Mip6Error> {
    let h = locate_rh2(pkt)?.ok_or(Mip6Error::NoType2RoutingHeader)?;
    if pkt[h.at + 3] != 1 {
        return Err(Mip6Error::BadSegmentsLeft);
    }
    let at = h.at + 8;
    let mut dst = [0u8; 16];
    dst.copy_from_slice(&pkt[24..40]);
    pkt.copy_within(at..at + 16, 24);
    pkt[at..at + 16].copy_from_slice(&dst);
    pkt[h.at + 3] = 0;
    let mut home = [0u8; 16];
    home.copy_from_slice(&pkt[24..40]);
    Ok(home)
}

/// Removes the type 2 routing header, fixing the lengths and Next Header
/// chain.
pub fn remove_type2_routing_header(buf: &mut PacketBuf) -> Result<(), Mip6Error> {
    let h = locate_rh2(buf.data())?.ok_or(Mip6Error::NoType2RoutingHeader)?;
    remove_header(buf, &h)
}

/// Whether the ICMPv6 checksum of `icmp` verifies between `src` and `dst`
/// (RFC 4443 2.3).
pub fn verify_icmpv6_checksum(src: &[u8; 16], dst: &[u8; 16], icmp: &[u8]) -> bool {
    let len = u32::try_from(icmp.len()).unwrap_or(u32::MAX);
    let acc = checksum::pseudo_header(src, dst, proto::ICMPV6, len);
    checksum::finish(checksum::sum(acc, icmp)) == 0
}

/// Mobile Prefix Solicitation (RFC 6275 6.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MobilePrefixSolicitation {
    /// Identifier, echoed in the advertisement.
    pub identifier: u16,
}

/// Length of a Mobile Prefix Solicitation.
pub const MPS_LEN: usize = 8;
/// Length of the fixed part of a Mobile Prefix Advertisement.
pub const MPA_FIXED_LEN: usize = 8;
/// Neighbor Discovery option type of Prefix Information (RFC 4861 4.6.2).
pub const ND_OPT_PREFIX_INFO: u8 = 3;
/// Length of a Prefix Information option.
pub const PREFIX_INFO_LEN: usize = 32;

impl MobilePrefixSolicitation {
    /// Parses an ICMPv6 Mobile Prefix Solicitation (type 146, code 0).
    /// Does not check the checksum (see [`verify_icmpv6_checksum`]).
    pub fn parse(icmp: &[u8]) -> Result<Self, Mip6Error> {
        if icmp.len() < MPS_LEN {
            return Err(Mip6Error::Truncated);
        }
        if icmp[0] != ICMPV6_MPS || icmp[1] != 0 {
            return Err(Mip6Error::Malformed);
        }
        Ok(MobilePrefixSolicitation {
            identifier: u16::from_be_bytes([icmp[4], icmp[5]]),
        })
    }

    /// Bytes [`MobilePrefixSolicitation::emit`] writes.
    pub fn buffer_len(&self) -> usize {
        MPS_LEN
    }

    /// Writes the message with its checksum between `src` and `dst`.
    pub fn emit(&self, out: &mut [u8], src: &[u8; 16], dst: &[u8; 16]) -> Result<usize, Mip6Error> {
        let m = out.get_mut(..MPS_LEN).ok_or(Mip6Error::NoSpace)?;
        m[0] = ICMPV6_MPS;
        m[1] = 0;
        m[4..6].copy_from_slice(&self.identifier.to_be_bytes());
        m[6..8].fill(0);
        checksum::fill_icmpv6(src, dst, m);
        Ok(MPS_LEN)
    }
}

/// A Prefix Information option (RFC 4861 4.6.2) with the Router Address
/// flag of RFC 6275 7.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefixInfo {
    /// Prefix Length.
    pub prefix_len: u8,
    /// L: on-link.
    pub on_link: bool,
    /// A: autonomous address configuration.
    pub autonomous: bool,
    /// R (RFC 6275 7.2): `prefix` holds the router's whole address.
    pub router_address: bool,
    /// Valid Lifetime, seconds.
    pub valid_lifetime: u32,
    /// Preferred Lifetime, seconds.
    pub preferred_lifetime: u32,
    /// Prefix (or the router address with R).
    pub prefix: [u8; 16],
}

impl PrefixInfo {
    /// Parses a 32-byte Prefix Information option.
    fn parse(o: &[u8]) -> Option<Self> {
        if o.len() != PREFIX_INFO_LEN || o[0] != ND_OPT_PREFIX_INFO {
            return None;
        }
        let mut prefix = [0u8; 16];
        prefix.copy_from_slice(&o[16..32]);
        Some(PrefixInfo {
            prefix_len: o[2],
            on_link: o[3] & 0x80 != 0,
            autonomous: o[3] & 0x40 != 0,
            router_address: o[3] & 0x20 != 0,
            valid_lifetime: u32::from_be_bytes([o[4], o[5], o[6], o[7]]),
            preferred_lifetime: u32::from_be_bytes([o[8], o[9], o[10], o[11]]),
            prefix,
        })
    }

    /// Writes the option into `o[..32]`.
    fn emit(&self, o: &mut [u8]) {
        o[0] = ND_OPT_PREFIX_INFO;
        o[1] = (PREFIX_INFO_LEN / 8) as u8;
        o[2] = self.prefix_len;
        o[3] = (if self.on_link { 0x80 } else { 0 })
            | (if self.autonomous { 0x40 } else { 0 })
            | (if self.router_address { 0x20 } else { 0 });
        o[4..8].copy_from_slice(&self.valid_lifetime.to_be_bytes());
        o[8..12].copy_from_slice(&self.preferred_lifetime.to_be_bytes());
        o[12..16].fill(0);
        o[16..32].copy_from_slice(&self.prefix);
    }
}

/// Mobile Prefix Advertisement (RFC 6275 6.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MobilePrefixAdvertisement<'a> {
    /// Identifier, copied from the solicitation.
    pub identifier: u16,
    /// M: managed address configuration.
    pub managed: bool,
    /// O: other stateful configuration.
    pub other: bool,
    /// The Neighbor Discovery options (validated by parse).
    pub options: &'a [u8],
}

impl<'a> MobilePrefixAdvertisement<'a> {
    /// Parses an ICMPv6 Mobile Prefix Advertisement (type 147, code 0) and
    /// validates its options' layout (RFC 4861 4.6: length non-zero, inside
    /// the message). Does not check the checksum.
    pub fn parse(icmp: &'a [u8]) -> Result<Self, Mip6Error> {
        if icmp.len() < MPA_FIXED_LEN {
            return Err(Mip6Error::Truncated);
        }
        if icmp[0] != ICMPV6_MPA || icmp[1] != 0 {
            return Err(Mip6Error::Malformed);
        }
        let options = &icmp[MPA_FIXED_LEN..];
        let mut at = 0;
        while at < options.len() {
            let len = usize::from(*options.get(at + 1).ok_or(Mip6Error::Malformed)?) * 8;
            if len == 0 || at + len > options.len() {
                return Err(Mip6Error::Malformed);
            }
            if options[at] == ND_OPT_PREFIX_INFO && len != PREFIX_INFO_LEN {
                return Err(Mip6Error::Malformed);
            }
            at += len;
        }
        Ok(MobilePrefixAdvertisement {
            identifier: u16::from_be_bytes([icmp[4], icmp[5]]),
            managed: icmp[6] & 0x80 != 0,
            other: icmp[6] & 0x40 != 0,
            options,
        })
    }

    /// The Prefix Information options, in order (other options skipped).
    pub fn prefixes(&self) -> PrefixIter<'a> {
        PrefixIter { rest: self.options }
    }

    /// Bytes [`MobilePrefixAdvertisement::emit`] writes for `prefixes`.
    pub fn buffer_len(prefixes: &[PrefixInfo]) -> usize {
        MPA_FIXED_LEN + PREFIX_INFO_LEN * prefixes.len()
    }

    /// Writes the advertisement: this identifier and M/O flags and
    /// `prefixes` as Prefix Information options (`self.options` is not
    /// written), with the checksum between `src` and `dst`.
    pub fn emit(
        &self,
        prefixes: &[PrefixInfo],
        out: &mut [u8],
        src: &[u8; 16],
        dst: &[u8; 16],
    ) -> Result<usize, Mip6Error> {
        let n = Self::buffer_len(prefixes);
        if n > usize::from(u16::MAX) {
            return Err(Mip6Error::TooBig);
        }
        let m = out.get_mut(..n).ok_or(Mip6Error::NoSpace)?;
        m[0] = ICMPV6_MPA;
        m[1] = 0;
        m[4..6].copy_from_slice(&self.identifier.to_be_bytes());
        m[6] = (if self.managed { 0x80 } else { 0 }) | (if self.other { 0x40 } else { 0 });
        m[7] = 0;
        for (p, o) in prefixes
            .iter()
            .zip(m[MPA_FIXED_LEN..].chunks_exact_mut(PREFIX_INFO_LEN))
        {
            p.emit(o);
        }
        checksum::fill_icmpv6(src, dst, m);
        Ok(n)
    }
}

/// Iterator over the Prefix Information options of an advertisement.
#[derive(Debug, Clone)]
pub struct PrefixIter<'a> {
    rest: &'a [u8],
}

impl Iterator for PrefixIter<'_> {
    type Item = PrefixInfo;

    fn next(&mut self) -> Option<PrefixInfo> {
        loop {
            let len = usize::from(*self.rest.get(1)?) * 8;
            if len == 0 || len > self.rest.len() {
                self.rest = &[];
                return None;
            }
            let (opt, rest) = self.rest.split_at(len);
            self.rest = rest;
            if let Some(p) = PrefixInfo::parse(opt) {
                return Some(p);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COA: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    const CN: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    const HOME: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5];
    const ESP: [u8; 8] = [0, 0, 0x10, 0x01, 0, 0, 0, 1];

    /// IPv6 2001:db8::1 -> 2001:db8::2 carrying an ESP header.
    fn esp_packet(src: [u8; 16], dst: [u8; 16]) -> Vec<u8> {
        let mut p = vec![0u8; 40];
        ip::emit_ipv6_header(&mut p, src, dst, proto::ESP, ESP.len() as u16, 64, 0);
        p.extend_from_slice(&ESP);
        p
    }

    /// The same packet with a Home Address option, as scapy 2.8 builds it
    /// (IPv6ExtHdrDestOpt(options=[HAO(hoa=2001:db8:1::5)])).
    const SCAPY_HAO_TAIL: [u8; 24] = [
        0x32, 0x02, 0x01, 0x02, 0x00, 0x00, 0xc9, 0x10, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x01, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05,
    ];

    #[test]
    fn hao_insert_find_swap_remove() {
        let orig = esp_packet(COA, CN);
        let mut buf = PacketBuf::from_slice(&orig);
        insert_home_address_option(&mut buf, HOME).unwrap();
        let p = buf.data();
        assert_eq!(p.len(), orig.len() + 24);
        assert_eq!((p[6], u16::from_be_bytes([p[4], p[5]])), (60, 32));
        assert_eq!(&p[40..64], &SCAPY_HAO_TAIL);
        assert_eq!(&p[64..], &ESP);
        // The option's Type sits at 8n+6 within the header.
        assert_eq!((p[46], 46 - 40), (HOME_ADDRESS_OPTION, 6));
        assert_eq!(find_home_address_option(p), Ok(Some(48)));
        assert_eq!(swap_home_address(buf.data_mut()), Ok(HOME));
        assert_eq!(&buf.data()[8..24], &HOME);
        assert_eq!(&buf.data()[48..64], &COA);
        remove_home_address_option(&mut buf).unwrap();
        assert_eq!(buf.data(), &esp_packet(HOME, CN)[..]);
        assert_eq!(find_home_address_option(buf.data()), Ok(None));
        assert_eq!(
            swap_home_address(buf.data_mut()),
            Err(Mip6Error::NoHomeAddressOption)
        );
    }

    #[test]
    fn hao_goes_after_hop_by_hop_and_routing() {
        let mut buf = PacketBuf::from_slice(&esp_packet(COA, CN));
        insert_type2_routing_header(&mut buf, HOME).unwrap();
        insert_home_address_option(&mut buf, HOME).unwrap();
        let p = buf.data();
        assert_eq!((p[6], p[40], p[64]), (43, 60, 50));
        assert_eq!(find_type2_routing_header(p), Ok(Some(48)));
        assert_eq!(find_home_address_option(p), Ok(Some(72)));
    }

    #[test]
    fn hao_kept_header_with_other_options() {
        let mut buf = PacketBuf::from_slice(&esp_packet(COA, CN));
        insert_home_address_option(&mut buf, HOME).unwrap();
        // Turn the PadN into an unknown option (type 0x1e, skippable).
        buf.data_mut()[42] = 0x1e;
        remove_home_address_option(&mut buf).unwrap();
        let p = buf.data();
        assert_eq!(p.len(), 40 + 24 + 8);
        assert_eq!(&p[42..48], &[0x1e, 2, 0, 0, 1, 16]);
        assert_eq!(find_home_address_option(p), Ok(None));
    }

    #[test]
    fn rh2_insert_find_process_remove() {
        let orig = esp_packet(CN, COA);
        let mut buf = PacketBuf::from_slice(&orig);
        insert_type2_routing_header(&mut buf, HOME).unwrap();
        let p = buf.data();
        assert_eq!(&p[40..48], &[50, 2, 2, 1, 0, 0, 0, 0]);
        assert_eq!((p[6], u16::from_be_bytes([p[4], p[5]])), (43, 32));
        assert_eq!(find_type2_routing_header(p), Ok(Some(48)));
        assert_eq!(process_type2_routing_header(buf.data_mut()), Ok(HOME));
        assert_eq!(buf.data()[43], 0);
        assert_eq!(&buf.data()[48..64], &COA);
        assert_eq!(
            process_type2_routing_header(buf.data_mut()),
            Err(Mip6Error::BadSegmentsLeft)
        );
        remove_type2_routing_header(&mut buf).unwrap();
        assert_eq!(buf.data(), &esp_packet(CN, HOME)[..]);
        assert_eq!(
            remove_type2_routing_header(&mut buf),
            Err(Mip6Error::NoType2RoutingHeader)
        );
    }

    #[test]
    fn malformed_packets_are_errors() {
        assert_eq!(
            find_home_address_option(&[0x45; 40]),
            Err(Mip6Error::NotIpv6)
        );
        assert_eq!(
            find_home_address_option(&[0x60; 10]),
            Err(Mip6Error::Truncated)
        );
        let mut buf = PacketBuf::from_slice(&esp_packet(COA, CN));
        insert_home_address_option(&mut buf, HOME).unwrap();
        let mut p = buf.data().to_vec();
        p[47] = 17; // HAO length not 16, runs past the header
        assert_eq!(find_home_address_option(&p), Err(Mip6Error::Malformed));
        let mut p = buf.data().to_vec();
        p[41] = 9; // header longer than the packet
        assert_eq!(find_home_address_option(&p), Err(Mip6Error::Truncated));
        let mut full = PacketBuf::with_capacity(70, 10);
        full.set(&esp_packet(COA, CN)).unwrap();
        assert_eq!(
            insert_home_address_option(&mut full, HOME),
            Err(Mip6Error::NoSpace)
        );
    }

    #[test]
    fn mobile_prefix_messages_round_trip() {
        let mut out = [0u8; 8];
        let mps = MobilePrefixSolicitation { identifier: 0xbeef };
        assert_eq!(mps.emit(&mut out, &COA, &CN), Ok(8));
        assert!(verify_icmpv6_checksum(&COA, &CN, &out));
        assert_eq!(MobilePrefixSolicitation::parse(&out), Ok(mps));
        let prefixes = [
            PrefixInfo {
                prefix_len: 64,
                on_link: true,
                autonomous: true,
                router_address: false,
                valid_lifetime: 86400,
                preferred_lifetime: 14400,
                prefix: HOME,
            },
            PrefixInfo {
                prefix_len: 64,
                on_link: false,
                autonomous: false,
                router_address: true,
                valid_lifetime: u32::MAX,
                preferred_lifetime: 0,
                prefix: CN,
            },
        ];
        let mpa = MobilePrefixAdvertisement {
            identifier: 0xbeef,
            managed: true,
            other: false,
            options: &[],
        };
        let mut out = [0u8; 72];
        assert_eq!(mpa.emit(&prefixes, &mut out, &CN, &COA), Ok(72));
        assert!(verify_icmpv6_checksum(&CN, &COA, &out));
        assert_eq!(out[3 + 8 + 32 - 3 + 3], 0x20); // R flag of the second
        let back = MobilePrefixAdvertisement::parse(&out).unwrap();
        assert_eq!(
            (back.identifier, back.managed, back.other),
            (0xbeef, true, false)
        );
        assert_eq!(back.prefixes().collect::<Vec<_>>(), prefixes);
        assert_eq!(
            MobilePrefixAdvertisement::parse(&out[..50]),
            Err(Mip6Error::Malformed)
        );
        assert_eq!(
            MobilePrefixSolicitation::parse(&out),
            Err(Mip6Error::Malformed)
        );
    }
}
