//! IPv4 (RFC 791) and IPv6 (RFC 8200) header parsing for the packet path:
//! one bounded walk that finds the addresses, the upper-layer protocol past
//! the IPv6 extension headers, and fragmentation state. Nothing here panics
//! on short or malformed input.

use crate::proto;
use core::ops::Range;

/// Length of the fixed IPv4 header without options.
pub const IPV4_MIN_HEADER: usize = 20;
/// Length of the fixed IPv6 header.
pub const IPV6_HEADER: usize = 40;
/// Length of the IPv6 Fragment header (RFC 8200 4.5).
pub const IPV6_FRAGMENT_HEADER: usize = 8;
/// Most extension headers the walk follows before it gives up, so a chain
/// of empty headers can not make it loop long.
const MAX_EXT_HEADERS: usize = 16;

/// IP version of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpVersion {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

/// Why a packet could not be parsed as IP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum IpError {
    /// Shorter than its headers say.
    Truncated,
    /// Version field neither 4 nor 6.
    BadVersion,
    /// IPv4 IHL below 5, or a length field inconsistent with the header.
    BadHeaderLength,
    /// More extension headers than the walk follows.
    TooManyExtensionHeaders,
}

impl core::fmt::Display for IpError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            IpError::Truncated => "packet shorter than its IP headers",
            IpError::BadVersion => "IP version is neither 4 nor 6",
            IpError::BadHeaderLength => "IP header length field is invalid",
            IpError::TooManyExtensionHeaders => "too many IPv6 extension headers",
        })
    }
}

impl std::error::Error for IpError {}

/// Fragmentation state of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragInfo {
    /// Offset of this fragment's data in the original payload, in bytes.
    pub offset: u32,
    /// More fragments follow.
    pub more: bool,
    /// Identification (16 bits for IPv4, 32 for IPv6).
    pub ident: u32,
    /// IPv6: offset of the Fragment header in the packet.
    pub header_at: usize,
}

/// What one walk over an IP packet found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpMeta {
    /// Version.
    pub version: IpVersion,
    /// Bytes from the start of the packet to the upper-layer header: the
    /// IPv4 header with options, or the IPv6 header with every extension
    /// header the walk stepped over.
    pub header_len: usize,
    /// The upper-layer protocol (for a non-initial fragment, the protocol
    /// named before the fragment's data).
    pub proto: u8,
    /// Offset of the byte that holds `proto` (IPv4 protocol field, IPv6 Next
    /// Header of the fixed header or of the last extension header).
    pub proto_field: usize,
    /// Packet length according to the IP header (never more than the
    /// buffer; bytes past it are link-layer padding).
    pub total_len: usize,
    /// Set if the packet is a fragment (MF set or offset non-zero).
    pub frag: Option<FragInfo>,
    /// Hop limit / TTL.
    pub hop_limit: u8,
}

impl IpMeta {
    /// Range of the source address.
    pub fn src_range(&self) -> Range<usize> {
        match self.version {
            IpVersion::V4 => 12..16,
            IpVersion::V6 => 8..24,
        }
    }

    /// Range of the destination address.
    pub fn dst_range(&self) -> Range<usize> {
        match self.version {
            IpVersion::V4 => 16..20,
            IpVersion::V6 => 24..40,
        }
    }

    /// Whether this is a fragment other than the first (no upper-layer
    /// header available).
    pub fn is_later_fragment(&self) -> bool {
        self.frag.is_some_and(|f| f.offset != 0)
    }

    /// Length of the fixed header (20 + IPv4 options, or 40).
    pub fn fixed_header_len(&self, pkt: &[u8]) -> usize {
        match self.version {
            IpVersion::V4 => usize::from(pkt.first().map_or(5, |b| b & 0x0f)) * 4,
            IpVersion::V6 => IPV6_HEADER,
        }
    }
}

/// The version nibble of a packet, if it is 4 or 6.
pub fn version(pkt: &[u8]) -> Result<IpVersion, IpError> {
    match pkt.first().map(|b| b >> 4) {
        Some(4) => Ok(IpVersion::V4),
        Some(6) => Ok(IpVersion::V6),
        Some(_) => Err(IpError::BadVersion),
        None => Err(IpError::Truncated),
    }
}

/// Walks the IP headers of `pkt` (RFC 791 3.1, RFC 8200 4).
pub fn parse(pkt: &[u8]) -> Result<IpMeta, IpError> {
    match version(pkt)? {
        IpVersion::V4 => parse_v4(pkt),
        IpVersion::V6 => parse_v6(pkt),
    }
}

fn parse_v4(pkt: &[u8]) -> Result<IpMeta, IpError> {
    if pkt.len() < IPV4_MIN_HEADER {
        return Err(IpError::Truncated);
    }
    let ihl = usize::from(pkt[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([pkt[2], pkt[3]]));
    if ihl < IPV4_MIN_HEADER || total < ihl {
        return Err(IpError::BadHeaderLength);
    }
    if pkt.len() < total {
        return Err(IpError::Truncated);
    }
    let flags_frag = u16::from_be_bytes([pkt[6], pkt[7]]);
    let more = flags_frag & 0x2000 != 0;
    let offset = u32::from(flags_frag & 0x1fff) * 8;
    let frag = (more || offset != 0).then(|| FragInfo {
        offset,
        more,
        ident: u32::from(u16::from_be_bytes([pkt[4], pkt[5]])),
        header_at: 0,
    });
    Ok(IpMeta {
        version: IpVersion::V4,
        header_len: ihl,
        proto: pkt[9],
        proto_field: 9,
        total_len: total,
        frag,
        hop_limit: pkt[8],
    })
}

fn parse_v6(pkt: &[u8]) -> Result<IpMeta, IpError> {
    if pkt.len() < IPV6_HEADER {
        return Err(IpError::Truncated);
    }
    let payload = usize::from(u16::from_be_bytes([pkt[4], pkt[5]]));
    // Payload length 0 with a Jumbo option (RFC 2675) is not supported:
    // such a packet reads as header only and its upper layer as truncated.
    let total = IPV6_HEADER + payload;
    // The headers must lie within the IP length, not just the buffer:
    // bytes past the length are link-layer padding.
    let pkt = pkt.get(..total).ok_or(IpError::Truncated)?;
    let mut walk = Ipv6ExtHeaders::new(pkt)?;
    let mut frag = None;
    for header in walk.by_ref() {
        let header = header?;
        if header.kind == proto::IPV6_FRAGMENT {
            let info = fragment_header_info(pkt, header.at);
            // An atomic fragment (offset 0, M clear, RFC 6946) is a whole
            // packet and is processed as one.
            if info.offset != 0 || info.more {
                frag = Some(info);
            }
        }
    }
    Ok(IpMeta {
        version: IpVersion::V6,
        header_len: walk.offset(),
        proto: walk.next_header(),
        proto_field: walk.next_header_field(),
        total_len: total,
        frag,
        hop_limit: pkt[7],
    })
}

/// The fields of the Fragment header at `at` (RFC 8200 4.5), which the
/// caller has checked lies within `pkt`.
fn fragment_header_info(pkt: &[u8], at: usize) -> FragInfo {
    let hdr = &pkt[at..at + IPV6_FRAGMENT_HEADER];
    let off_flags = u16::from_be_bytes([hdr[2], hdr[3]]);
    FragInfo {
        offset: u32::from(off_flags >> 3) * 8,
        more: off_flags & 1 != 0,
        ident: u32::from_be_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]),
        header_at: at,
    }
}

/// One IPv6 extension header met by [`Ipv6ExtHeaders`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtHeader {
    /// Its Next Header value: [`proto::IPV6_HOP_BY_HOP`],
    /// [`proto::IPV6_ROUTING`], [`proto::IPV6_DEST_OPTS`] or
    /// [`proto::IPV6_FRAGMENT`].
    pub kind: u8,
    /// Offset of the header in the packet.
    pub at: usize,
    /// Its length in bytes.
    pub len: usize,
    /// Offset of the Next Header field that names it (6, the fixed
    /// header's, for the first).
    pub prev_field: usize,
}

/// The one walk over an IPv6 packet's extension header chain (RFC 8200 4):
/// the Hop-by-Hop, Routing, Destination Options and Fragment headers in
/// order, each checked to lie within the packet.
///
/// The walk ends at the first other Next Header value (the upper layer,
/// ESP, AH, No Next Header, or a header it does not know) and after the
/// Fragment header of a non-first fragment, whose rest is fragment data,
/// not headers. It follows at most 16 headers, so a chain of empty headers
/// can not make it loop long. Where it ended, [`Ipv6ExtHeaders::offset`],
/// [`Ipv6ExtHeaders::next_header`] and
/// [`Ipv6ExtHeaders::next_header_field`] say.
#[derive(Debug, Clone)]
pub struct Ipv6ExtHeaders<'a> {
    pkt: &'a [u8],
    next: u8,
    field: usize,
    at: usize,
    steps: usize,
    done: bool,
}

impl<'a> Ipv6ExtHeaders<'a> {
    /// A walk over `pkt`, an IPv6 packet cut to its length (header and
    /// payload).
    #[inline]
    pub fn new(pkt: &'a [u8]) -> Result<Self, IpError> {
        if pkt.len() < IPV6_HEADER {
            return Err(IpError::Truncated);
        }
        Ok(Ipv6ExtHeaders {
            pkt,
            next: pkt[6],
            field: 6,
            at: IPV6_HEADER,
            steps: 0,
            done: false,
        })
    }

    /// Offset of the header after the ones walked so far: once the walk
    /// has ended, the upper-layer header (or a later fragment's data).
    #[inline]
    pub fn offset(&self) -> usize {
        self.at
    }

    /// The Next Header value that names the header at
    /// [`Ipv6ExtHeaders::offset`].
    #[inline]
    pub fn next_header(&self) -> u8 {
        self.next
    }

    /// Offset of the field holding [`Ipv6ExtHeaders::next_header`].
    #[inline]
    pub fn next_header_field(&self) -> usize {
        self.field
    }

    #[inline]
    fn fail(&mut self, error: IpError) -> Option<Result<ExtHeader, IpError>> {
        self.done = true;
        Some(Err(error))
    }
}

impl Iterator for Ipv6ExtHeaders<'_> {
    type Item = Result<ExtHeader, IpError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let at = self.at;
        let kind = self.next;
        let len = match kind {
            proto::IPV6_HOP_BY_HOP | proto::IPV6_ROUTING | proto::IPV6_DEST_OPTS => {
                match self.pkt.get(at + 1) {
                    Some(&n) => (usize::from(n) + 1) * 8,
                    None => return self.fail(IpError::Truncated),
                }
            }
            proto::IPV6_FRAGMENT => IPV6_FRAGMENT_HEADER,
            _ => {
                self.done = true;
                return None;
            }
        };
        let Some(header) = self.pkt.get(at..at + len) else {
            return self.fail(IpError::Truncated);
        };
        if self.steps == MAX_EXT_HEADERS {
            return self.fail(IpError::TooManyExtensionHeaders);
        }
        // After the Fragment header of a later fragment comes data.
        if kind == proto::IPV6_FRAGMENT && u16::from_be_bytes([header[2], header[3]]) & !7 != 0 {
            self.done = true;
        }
        let prev_field = self.field;
        self.next = header[0];
        self.field = at;
        self.at = at + len;
        self.steps += 1;
        Some(Ok(ExtHeader {
            kind,
            at,
            len,
            prev_field,
        }))
    }
}

/// Sets the IPv4 total length and recomputes the header checksum.
pub fn ipv4_set_total_len(pkt: &mut [u8], len: u16) {
    if pkt.len() < IPV4_MIN_HEADER {
        return;
    }
    pkt[2..4].copy_from_slice(&len.to_be_bytes());
    ipv4_fill_checksum(pkt);
}

/// Recomputes the IPv4 header checksum.
pub fn ipv4_fill_checksum(pkt: &mut [u8]) {
    let ihl = usize::from(pkt.first().map_or(0, |b| b & 0x0f)) * 4;
    if ihl < IPV4_MIN_HEADER || pkt.len() < ihl {
        return;
    }
    pkt[10] = 0;
    pkt[11] = 0;
    let c = crate::checksum::checksum(&pkt[..ihl]);
    pkt[10..12].copy_from_slice(&c.to_be_bytes());
}

/// Sets the IPv6 payload length from the packet's total length.
pub fn ipv6_set_payload_len(pkt: &mut [u8], total_len: usize) {
    if pkt.len() < IPV6_HEADER {
        return;
    }
    let payload = u16::try_from(total_len.saturating_sub(IPV6_HEADER)).unwrap_or(u16::MAX);
    pkt[4..6].copy_from_slice(&payload.to_be_bytes());
}

/// Sets the length field of an IP packet of either version to `total_len`
/// (and the IPv4 header checksum).
pub fn set_total_len(pkt: &mut [u8], total_len: usize) {
    match version(pkt) {
        Ok(IpVersion::V4) => {
            ipv4_set_total_len(pkt, u16::try_from(total_len).unwrap_or(u16::MAX));
        }
        Ok(IpVersion::V6) => ipv6_set_payload_len(pkt, total_len),
        Err(_) => {}
    }
}

/// Writes a fixed IPv4 header (no options) into `out[..20]`: identification
/// `ident`, DF as asked, no fragment offset, checksum filled.
///
/// The checksum is summed from the field values (RFC 1071), not read back
/// from `out`: loading the just-stored bytes as wider words would wait on
/// store forwarding, which costs more than the sum itself.
#[allow(clippy::too_many_arguments)] // the fields of the header, each named
pub fn emit_ipv4_header(
    out: &mut [u8],
    src: [u8; 4],
    dst: [u8; 4],
    proto: u8,
    total_len: u16,
    ttl: u8,
    ident: u16,
    tos: u8,
    df: bool,
) {
    let flags: u16 = if df { 0x4000 } else { 0 };
    let words = [
        0x4500 | u16::from(tos),
        total_len,
        ident,
        flags,
        u16::from_be_bytes([ttl, proto]),
        u16::from_be_bytes([src[0], src[1]]),
        u16::from_be_bytes([src[2], src[3]]),
        u16::from_be_bytes([dst[0], dst[1]]),
        u16::from_be_bytes([dst[2], dst[3]]),
    ];
    let header_checksum = crate::checksum::finish(words.iter().map(|w| u32::from(*w)).sum());
    out[0] = 0x45;
    out[1] = tos;
    out[2..4].copy_from_slice(&total_len.to_be_bytes());
    out[4..6].copy_from_slice(&ident.to_be_bytes());
    out[6..8].copy_from_slice(&flags.to_be_bytes());
    out[8] = ttl;
    out[9] = proto;
    out[10..12].copy_from_slice(&header_checksum.to_be_bytes());
    out[12..16].copy_from_slice(&src);
    out[16..20].copy_from_slice(&dst);
}

/// Writes a fixed IPv6 header into `out[..40]`.
pub fn emit_ipv6_header(
    out: &mut [u8],
    src: [u8; 16],
    dst: [u8; 16],
    next: u8,
    payload_len: u16,
    hop_limit: u8,
    traffic_class: u8,
) {
    out[0] = 0x60 | (traffic_class >> 4);
    out[1] = traffic_class << 4;
    out[2] = 0;
    out[3] = 0;
    out[4..6].copy_from_slice(&payload_len.to_be_bytes());
    out[6] = next;
    out[7] = hop_limit;
    out[8..24].copy_from_slice(&src);
    out[24..40].copy_from_slice(&dst);
}

/// The traffic class / TOS byte of a packet (DSCP and ECN), for copying to
/// an outer header (RFC 4301 5.1.2.1).
pub fn traffic_class(pkt: &[u8]) -> u8 {
    match version(pkt) {
        Ok(IpVersion::V4) => pkt.get(1).copied().unwrap_or(0),
        Ok(IpVersion::V6) if pkt.len() >= 2 => (pkt[0] << 4) | (pkt[1] >> 4),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// IPv4 UDP 192.0.2.1 -> 198.51.100.2, 8 bytes of UDP header only.
    const V4_UDP: [u8; 28] = [
        0x45, 0x00, 0x00, 0x1c, 0x12, 0x34, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 192, 0, 2, 1, 198,
        51, 100, 2, 0x10, 0x00, 0x00, 0x35, 0x00, 0x08, 0x00, 0x00,
    ];

    fn v6_with(next: u8, ext: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; 40];
        p[0] = 0x60;
        let payload = ext.len() as u16;
        p[4..6].copy_from_slice(&payload.to_be_bytes());
        p[6] = next;
        p[7] = 64;
        p[8..24].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        p[24..40].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        p.extend_from_slice(ext);
        p
    }

    #[test]
    fn ipv4_basic() {
        let m = parse(&V4_UDP).unwrap();
        assert_eq!(m.version, IpVersion::V4);
        assert_eq!((m.header_len, m.proto, m.total_len), (20, 17, 28));
        assert_eq!(m.frag, None);
        assert_eq!(&V4_UDP[m.src_range()], &[192, 0, 2, 1]);
    }

    #[test]
    fn ipv4_fragment_and_errors() {
        let mut p = V4_UDP;
        p[6] = 0x20; // MF
        assert!(parse(&p).unwrap().frag.unwrap().more);
        p[6] = 0x00;
        p[7] = 0x03; // offset 24
        let m = parse(&p).unwrap();
        assert!(m.is_later_fragment());
        assert_eq!(m.frag.unwrap().offset, 24);
        assert_eq!(parse(&V4_UDP[..27]), Err(IpError::Truncated));
        let mut bad = V4_UDP;
        bad[0] = 0x44;
        assert_eq!(parse(&bad), Err(IpError::BadHeaderLength));
        assert_eq!(parse(&[0x50]), Err(IpError::BadVersion));
        assert_eq!(parse(&[]), Err(IpError::Truncated));
    }

    #[test]
    fn ipv6_walks_destination_options_to_esp() {
        // Destination Options (8 bytes, next = ESP 50), then 8 bytes of ESP.
        let mut ext = vec![50, 0, 1, 4, 0, 0, 0, 0];
        ext.extend_from_slice(&[0, 0, 0x10, 0x01, 0, 0, 0, 1]);
        let p = v6_with(proto::IPV6_DEST_OPTS, &ext);
        let m = parse(&p).unwrap();
        assert_eq!((m.header_len, m.proto, m.proto_field), (48, 50, 40));
    }

    #[test]
    fn ipv6_later_fragment_is_opaque() {
        let frag = [17, 0, 0x00, 0x08, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4];
        let p = v6_with(proto::IPV6_FRAGMENT, &frag);
        let m = parse(&p).unwrap();
        assert!(m.is_later_fragment());
        assert_eq!(m.frag.unwrap().ident, 0xdeadbeef);
        assert_eq!(m.proto, 17);
    }

    #[test]
    fn ipv6_extension_loop_is_bounded() {
        let mut ext = Vec::new();
        for _ in 0..20 {
            ext.extend_from_slice(&[60, 0, 1, 4, 0, 0, 0, 0]);
        }
        let p = v6_with(proto::IPV6_DEST_OPTS, &ext);
        assert_eq!(parse(&p), Err(IpError::TooManyExtensionHeaders));
    }

    /// The one walk names every header of a Hop-by-Hop, Routing,
    /// Destination Options, Fragment chain with the field that names it,
    /// and stops after a later fragment's Fragment header.
    #[test]
    fn ipv6_extension_walk_names_each_header() {
        let mut ext = vec![proto::IPV6_ROUTING, 0, 1, 4, 0, 0, 0, 0];
        ext.extend_from_slice(&[proto::IPV6_DEST_OPTS, 2, 2, 0, 1, 0, 0, 0]);
        ext.extend_from_slice(&[0; 16]);
        ext.extend_from_slice(&[proto::IPV6_FRAGMENT, 0, 1, 4, 0, 0, 0, 0]);
        ext.extend_from_slice(&[proto::UDP, 0, 0x00, 0x10, 0, 0, 0, 9]);
        ext.extend_from_slice(&[0xaa; 8]);
        let p = v6_with(proto::IPV6_HOP_BY_HOP, &ext);
        let mut walk = Ipv6ExtHeaders::new(&p).unwrap();
        let headers: Vec<_> = walk.by_ref().map(Result::unwrap).collect();
        let seen: Vec<_> = headers
            .iter()
            .map(|h| (h.kind, h.at, h.len, h.prev_field))
            .collect();
        assert_eq!(
            seen,
            [
                (proto::IPV6_HOP_BY_HOP, 40, 8, 6),
                (proto::IPV6_ROUTING, 48, 24, 40),
                (proto::IPV6_DEST_OPTS, 72, 8, 48),
                (proto::IPV6_FRAGMENT, 80, 8, 72),
            ]
        );
        // The later fragment's data is not read as a header.
        assert_eq!(
            (walk.offset(), walk.next_header(), walk.next_header_field()),
            (88, proto::UDP, 80)
        );
        let m = parse(&p).unwrap();
        assert_eq!((m.header_len, m.proto, m.proto_field), (88, proto::UDP, 80));
        assert_eq!(
            m.frag.map(|f| (f.offset, f.ident, f.header_at)),
            Some((16, 9, 80))
        );
        let cut = &p[..60];
        let last = Ipv6ExtHeaders::new(cut).unwrap().last();
        assert_eq!(last, Some(Err(IpError::Truncated)));
    }

    #[test]
    fn ipv6_truncated_extension() {
        let p = v6_with(proto::IPV6_DEST_OPTS, &[17, 1, 0, 0]);
        assert_eq!(parse(&p), Err(IpError::Truncated));
    }

    /// A Fragment header past the Payload Length (in trailing link-layer
    /// bytes) is not read: it used to be, giving a header length beyond
    /// the packet's total length.
    #[test]
    fn ipv6_fragment_header_past_payload_length() {
        let mut p = v6_with(proto::IPV6_FRAGMENT, &[]);
        p.extend_from_slice(&[17, 0, 0x00, 0x08, 0, 0, 0, 1]);
        assert_eq!(parse(&p), Err(IpError::Truncated));
        // The same header inside the payload is a later fragment.
        let p = v6_with(proto::IPV6_FRAGMENT, &[17, 0, 0x00, 0x08, 0, 0, 0, 1]);
        let m = parse(&p).unwrap();
        assert!(m.header_len <= m.total_len);
        assert!(m.is_later_fragment());
    }

    proptest::proptest! {
        /// The checksum summed from the fields is the one RFC 791 defines
        /// over the written header: the header verifies to zero, and
        /// refilling it from the bytes changes nothing.
        #[test]
        fn emitted_ipv4_header_checksum_verifies(
            src in proptest::prelude::any::<[u8; 4]>(),
            dst in proptest::prelude::any::<[u8; 4]>(),
            proto in proptest::prelude::any::<u8>(),
            total_len in proptest::prelude::any::<u16>(),
            ttl in proptest::prelude::any::<u8>(),
            ident in proptest::prelude::any::<u16>(),
            tos in proptest::prelude::any::<u8>(),
            df in proptest::prelude::any::<bool>(),
        ) {
            let mut h = [0xa5u8; 20];
            emit_ipv4_header(&mut h, src, dst, proto, total_len, ttl, ident, tos, df);
            proptest::prop_assert_eq!(crate::checksum::checksum(&h), 0);
            proptest::prop_assert_eq!(h[6] & 0x40 != 0, df);
            proptest::prop_assert_eq!(u16::from_be_bytes([h[6], h[7]]) & !0x4000, 0);
            let written = h;
            ipv4_fill_checksum(&mut h);
            proptest::prop_assert_eq!(h, written);
        }
    }

    #[test]
    fn set_len_updates_checksum() {
        let mut p = V4_UDP;
        ipv4_set_total_len(&mut p, 28);
        assert_eq!(crate::checksum::checksum(&p[..20]), 0);
    }
}
