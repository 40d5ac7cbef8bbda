//! Building and reading the signalling packets the protocol modules
//! originate and consume. Signalling is rare, so these may allocate; the
//! data path never comes here.

use bitsgw_wire::ip::{self, IpVersion};
use bitsgw_wire::mh::{self, Message, MhOption, MhPacket, MhRepr};
use bitsgw_wire::mip6;
use bitsgw_wire::proto;
use std::net::IpAddr;

/// An IPv6 packet from `src` to `dst` carrying `message` with `options`,
/// its checksum computed over the pseudo-header (RFC 6275 6.1.1).
pub fn mh_packet(
    src: [u8; 16],
    dst: [u8; 16],
    message: &Message,
    options: &[MhOption<'_>],
) -> Vec<u8> {
    let mut body = vec![0u8; mh::mh_buffer_len(message, options)];
    // The buffer is sized by mh_buffer_len, so emit has the room it needs.
    let n = mh::emit_mh(&mut body, message, options).unwrap_or(0);
    body.truncate(n);
    bitsgw_wire::craft::ip_packet(
        IpAddr::from(src),
        IpAddr::from(dst),
        proto::MH,
        &body,
        false,
    )
}

/// The Mobility Header type of a packet [`mh_packet`] built (no extension
/// headers), if it is one.
pub fn mh_type_of(pkt: &[u8]) -> Option<u8> {
    (pkt.get(6) == Some(&proto::MH))
        .then(|| pkt.get(ip::IPV6_HEADER + 2).copied())
        .flatten()
}

/// An IPv6 packet carrying an ICMPv6 message already emitted (checksum
/// included) in `icmp`.
pub fn icmpv6_packet(src: [u8; 16], dst: [u8; 16], icmp: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; ip::IPV6_HEADER];
    let len = u16::try_from(icmp.len()).unwrap_or(u16::MAX);
    ip::emit_ipv6_header(&mut p, src, dst, proto::ICMPV6, len, 64, 0);
    p.extend_from_slice(icmp);
    p
}

/// What a delivered IPv6 packet carries, for the protocol modules.
#[derive(Debug)]
pub enum Upper<'a> {
    /// A Mobility Header whose checksum verified.
    Mh {
        /// Source address (the home address for a BU, after RFC 3776 6.2).
        src: [u8; 16],
        /// Destination.
        dst: [u8; 16],
        /// The Home Address option's address (the care-of address, after
        /// the tunnel stage swapped it in), if the packet has one.
        hao: Option<[u8; 16]>,
        /// The parsed message.
        repr: MhRepr<'a>,
    },
    /// A Mobility Header that did not parse.
    BadMh,
    /// A Mobility Header whose checksum is wrong.
    BadMhChecksum,
    /// An ICMPv6 message.
    Icmpv6 {
        /// Source.
        src: [u8; 16],
        /// Destination.
        dst: [u8; 16],
        /// The ICMPv6 message.
        icmp: &'a [u8],
    },
    /// Something else.
    Other,
}

/// Looks at a delivered packet; only packets that `mine(src, dst)` says
/// are for the protocol module are parsed further (a Mobility Header
/// between the host and a correspondent is the host's business).
pub fn upper(pkt: &[u8], mine: impl Fn(&[u8; 16], &[u8; 16]) -> bool) -> Upper<'_> {
    let Ok(meta) = ip::parse(pkt) else {
        return Upper::Other;
    };
    if meta.version != IpVersion::V6 || meta.frag.is_some() {
        return Upper::Other;
    }
    let (Some(src), Some(dst)) = (arr16(pkt, 8), arr16(pkt, 24)) else {
        return Upper::Other;
    };
    if !mine(&src, &dst) {
        return Upper::Other;
    }
    let body = pkt.get(meta.header_len..meta.total_len).unwrap_or(&[]);
    match meta.proto {
        proto::MH => {
            let Ok(p) = MhPacket::new_checked(body) else {
                return Upper::BadMh;
            };
            if !p.verify_checksum(&src, &dst) {
                return Upper::BadMhChecksum;
            }
            let Ok(repr) = MhRepr::parse(&p) else {
                return Upper::BadMh;
            };
            if !options_aligned(&repr) {
                return Upper::BadMh;
            }
            let hao = match mip6::find_home_address_option(pkt) {
                Ok(Some(at)) => arr16(pkt, at),
                _ => None,
            };
            Upper::Mh {
                src,
                dst,
                hao,
                repr,
            }
        }
        proto::ICMPV6 => Upper::Icmpv6 {
            src,
            dst,
            icmp: body,
        },
        _ => Upper::Other,
    }
}

/// Whether every option sits at its alignment (RFC 6275 6.2: xn+y from
/// the start of the Mobility Header). A sender MUST align them; this
/// receiver takes a misaligned one for a malformed message.
fn options_aligned(repr: &MhRepr<'_>) -> bool {
    let mut at = mh::MH_FIXED_LEN + repr.message.fields_len();
    repr.options().all(|o| {
        let (n, k) = o.alignment();
        let ok = at % n == k;
        at += o.wire_len();
        ok
    })
}

/// The 16 bytes at `at`, if the packet has them.
pub(crate) fn arr16(pkt: &[u8], at: usize) -> Option<[u8; 16]> {
    pkt.get(at..at + 16)?.try_into().ok()
}
