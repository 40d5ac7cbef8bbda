//! Address resolution frames on Ethernet: ARP (RFC 826) for IPv4 and
//! Neighbor Discovery (RFC 4861) for IPv6, written into fixed-size
//! caller-owned buffers.

use crate::ether::{self, ETHERTYPE_ARP, ETHERTYPE_IPV6};
use crate::icmp::{
    ND_OPT_SOURCE_LL, ND_OPT_TARGET_LL, V6_NEIGHBOR_ADVERTISEMENT, V6_NEIGHBOR_SOLICITATION,
};
use crate::{checksum, ip, proto};

/// Length of an ARP frame (Ethernet/IPv4, RFC 826).
pub const ARP_FRAME_LEN: usize = ether::HEADER_LEN + 28;
/// Length of a Neighbor Solicitation or Advertisement frame with one
/// link-layer address option.
pub const ND_FRAME_LEN: usize = ether::HEADER_LEN + 40 + ND_ICMP_LEN;
/// The ICMPv6 part of such a frame: 24 bytes of message, 8 of option.
const ND_ICMP_LEN: usize = 32;

/// The all-nodes multicast address ff02::1 (RFC 4291 2.7.1).
pub const ALL_NODES: [u8; 16] = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
/// The Ethernet address of the all-nodes group (RFC 2464 7).
pub const ALL_NODES_MAC: [u8; 6] = [0x33, 0x33, 0, 0, 0, 1];

/// RFC 826 opcodes.
const ARP_REQUEST: u8 = 1;
const ARP_REPLY: u8 = 2;
/// Hardware type Ethernet, protocol IPv4, their lengths.
const ARP_ETHERNET_IPV4: [u8; 6] = [0, 1, 8, 0, 6, 4];

/// Writes an ARP frame from `mac` to `to_mac`: `opcode`, sender
/// `sender_mac`/`sender_ip`, target `target_mac`/`target_ip`.
#[allow(clippy::too_many_arguments)] // the frame's fields, each its own
fn arp_frame(
    to_mac: [u8; 6],
    mac: [u8; 6],
    opcode: u8,
    sender_mac: [u8; 6],
    sender_ip: [u8; 4],
    target_mac: [u8; 6],
    target_ip: [u8; 4],
    out: &mut [u8; ARP_FRAME_LEN],
) {
    out[..6].copy_from_slice(&to_mac);
    out[6..12].copy_from_slice(&mac);
    out[12..14].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    out[14..20].copy_from_slice(&ARP_ETHERNET_IPV4);
    out[20..22].copy_from_slice(&[0, opcode]);
    out[22..28].copy_from_slice(&sender_mac);
    out[28..32].copy_from_slice(&sender_ip);
    out[32..38].copy_from_slice(&target_mac);
    out[38..42].copy_from_slice(&target_ip);
}

/// Writes a broadcast ARP request (RFC 826) from `mac`/`src` for `target`
/// into `out`.
pub fn arp_request(mac: [u8; 6], src: [u8; 4], target: [u8; 4], out: &mut [u8; ARP_FRAME_LEN]) {
    arp_frame([0xff; 6], mac, ARP_REQUEST, mac, src, [0; 6], target, out);
}

/// Writes a gratuitous ARP (a request for its own address, RFC 5227 3)
/// claiming `addr` for `mac` into `out`.
pub fn gratuitous_arp(mac: [u8; 6], addr: [u8; 4], out: &mut [u8; ARP_FRAME_LEN]) {
    arp_request(mac, addr, addr, out);
}

/// The target address of `frame` if it is an ARP request (RFC 826) for
/// Ethernet/IPv4.
pub fn arp_request_target(frame: &[u8]) -> Option<[u8; 4]> {
    if ether::ethertype(frame)? != ETHERTYPE_ARP {
        return None;
    }
    let arp = frame.get(ether::HEADER_LEN..ether::HEADER_LEN + 28)?;
    if arp[..6] != ARP_ETHERNET_IPV4 || arp[6..8] != [0, ARP_REQUEST] {
        return None;
    }
    arp[24..28].try_into().ok()
}

/// Writes the ARP reply (RFC 826) to the request `request` (see
/// [`arp_request_target`]): its target address is at `mac`. `None` if
/// `request` is too short to be one.
pub fn arp_reply(request: &[u8], mac: [u8; 6], out: &mut [u8; ARP_FRAME_LEN]) -> Option<()> {
    let arp = request.get(ether::HEADER_LEN..ether::HEADER_LEN + 28)?;
    let requester_mac: [u8; 6] = arp[8..14].try_into().ok()?;
    let requester_ip: [u8; 4] = arp[14..18].try_into().ok()?;
    let target_ip: [u8; 4] = arp[24..28].try_into().ok()?;
    arp_frame(
        requester_mac,
        mac,
        ARP_REPLY,
        mac,
        target_ip,
        requester_mac,
        requester_ip,
        out,
    );
    Some(())
}

/// Writes a Neighbor Discovery frame from `mac`/`src` to `to_mac`/`dst`:
/// an ICMPv6 message of `icmp_type` with `flags` in its first byte after
/// the checksum, about `target`, with `mac` in an option of `option`
/// (RFC 4861 4.3, 4.4; hop limit 255, 7.1).
#[allow(clippy::too_many_arguments)] // the frame's fields, each its own
fn nd_frame(
    to_mac: [u8; 6],
    mac: [u8; 6],
    src: [u8; 16],
    dst: [u8; 16],
    icmp_type: u8,
    flags: u8,
    target: [u8; 16],
    option: u8,
    out: &mut [u8; ND_FRAME_LEN],
) {
    out[..6].copy_from_slice(&to_mac);
    out[6..12].copy_from_slice(&mac);
    out[12..14].copy_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
    ip::emit_ipv6_header(&mut out[14..54], src, dst, proto::ICMPV6, 32, 255, 0);
    let icmp = &mut out[54..];
    icmp.fill(0);
    icmp[0] = icmp_type;
    icmp[4] = flags;
    icmp[8..24].copy_from_slice(&target);
    icmp[24] = option;
    icmp[25] = 1;
    icmp[26..32].copy_from_slice(&mac);
    checksum::fill_icmpv6(&src, &dst, icmp);
}

/// Writes a Neighbor Solicitation (RFC 4861 4.3, 7.2.2) from `mac`/`src`
/// for `target`, to its solicited-node multicast address (RFC 4291
/// 2.7.1) and that group's MAC (RFC 2464 7), into `out`.
pub fn neighbor_solicitation(
    mac: [u8; 6],
    src: [u8; 16],
    target: [u8; 16],
    out: &mut [u8; ND_FRAME_LEN],
) {
    let mut dst = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 0];
    dst[13..].copy_from_slice(&target[13..]);
    let to_mac = [0x33, 0x33, dst[12], dst[13], dst[14], dst[15]];
    nd_frame(
        to_mac,
        mac,
        src,
        dst,
        V6_NEIGHBOR_SOLICITATION,
        0,
        target,
        ND_OPT_SOURCE_LL,
        out,
    );
}

/// The flags of a Neighbor Advertisement (RFC 4861 4.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AdvertisementFlags {
    /// S: an answer to a solicitation.
    pub solicited: bool,
    /// O: the advertised address replaces a cached one.
    pub override_flag: bool,
}

/// Writes a Neighbor Advertisement (RFC 4861 4.4) from `mac`/`src` to
/// `to_mac`/`dst` for `target`, with `mac` as its target link-layer
/// address, into `out`.
#[allow(clippy::too_many_arguments)] // the frame's fields, each its own
pub fn neighbor_advertisement(
    mac: [u8; 6],
    to_mac: [u8; 6],
    src: [u8; 16],
    dst: [u8; 16],
    target: [u8; 16],
    flags: AdvertisementFlags,
    out: &mut [u8; ND_FRAME_LEN],
) {
    let bits =
        (if flags.solicited { 0x40 } else { 0 }) | (if flags.override_flag { 0x20 } else { 0 });
    nd_frame(
        to_mac,
        mac,
        src,
        dst,
        V6_NEIGHBOR_ADVERTISEMENT,
        bits,
        target,
        ND_OPT_TARGET_LL,
        out,
    );
}

/// The source address and target of `frame` if it is a Neighbor
/// Solicitation (RFC 4861 4.3) valid by 7.1.1's checks that matter to an
/// answer: hop limit 255, code 0, long enough to hold the target.
pub fn neighbor_solicitation_target(frame: &[u8]) -> Option<([u8; 16], [u8; 16])> {
    if ether::ethertype(frame)? != ETHERTYPE_IPV6 {
        return None;
    }
    let pkt = frame.get(ether::HEADER_LEN..)?;
    let meta = ip::parse(pkt).ok()?;
    let icmp = pkt.get(meta.header_len..meta.total_len)?;
    if meta.proto != proto::ICMPV6
        || meta.hop_limit != 255
        || icmp.len() < 24
        || icmp[0] != V6_NEIGHBOR_SOLICITATION
        || icmp[1] != 0
    {
        return None;
    }
    Some((pkt[8..24].try_into().ok()?, icmp[8..24].try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const PEER_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x77];

    fn verifies(frame: &[u8]) -> bool {
        let pkt = &frame[ether::HEADER_LEN..];
        let acc = checksum::pseudo_header(&pkt[8..24], &pkt[24..40], proto::ICMPV6, 32);
        checksum::finish(checksum::sum(acc, &pkt[40..])) == 0
    }

    #[test]
    fn arp_request_reply_and_gratuitous() {
        let mut req = [0u8; ARP_FRAME_LEN];
        arp_request(PEER_MAC, [192, 0, 2, 77], [192, 0, 2, 9], &mut req);
        assert_eq!(&req[..6], &[0xff; 6]);
        assert_eq!(arp_request_target(&req), Some([192, 0, 2, 9]));
        let mut rep = [0u8; ARP_FRAME_LEN];
        arp_reply(&req, MAC, &mut rep).unwrap();
        assert_eq!(&rep[..6], &PEER_MAC);
        assert_eq!(&rep[6..12], &MAC);
        assert_eq!(&rep[20..22], &[0, 2]);
        assert_eq!(&rep[22..28], &MAC);
        assert_eq!(&rep[28..32], &[192, 0, 2, 9]);
        assert_eq!(&rep[32..38], &PEER_MAC);
        assert_eq!(&rep[38..42], &[192, 0, 2, 77]);
        assert_eq!(arp_request_target(&rep), None, "a reply asks nothing");
        assert_eq!(arp_request_target(&req[..30]), None);
        assert_eq!(arp_reply(&req[..30], MAC, &mut rep), None);

        let mut g = [0u8; ARP_FRAME_LEN];
        gratuitous_arp(MAC, [192, 0, 2, 100], &mut g);
        assert_eq!(&g[28..32], &[192, 0, 2, 100]);
        assert_eq!(&g[38..42], &[192, 0, 2, 100]);
        assert_eq!(&g[32..38], &[0; 6]);
    }

    #[test]
    fn solicitation_and_advertisement() {
        let src = [0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9];
        let target = [0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let mut ns = [0u8; ND_FRAME_LEN];
        neighbor_solicitation(MAC, src, target, &mut ns);
        assert_eq!(&ns[..6], &[0x33, 0x33, 0xff, 0, 0, 1]);
        assert!(verifies(&ns));
        assert_eq!(neighbor_solicitation_target(&ns), Some((src, target)));
        let mut low_hop = ns;
        low_hop[14 + 7] = 64;
        assert_eq!(neighbor_solicitation_target(&low_hop), None);

        let mut na = [0u8; ND_FRAME_LEN];
        let flags = AdvertisementFlags {
            solicited: true,
            override_flag: false,
        };
        neighbor_advertisement(MAC, PEER_MAC, target, src, target, flags, &mut na);
        assert!(verifies(&na));
        assert_eq!(na[54], V6_NEIGHBOR_ADVERTISEMENT);
        assert_eq!(na[54 + 4], 0x40);
        assert_eq!(na[54 + 24], ND_OPT_TARGET_LL);
        assert_eq!(&na[54 + 26..], &MAC);
        assert_eq!(neighbor_solicitation_target(&na), None);
    }
}
