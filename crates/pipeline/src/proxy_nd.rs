//! The home agent's proxy Neighbor Discovery and ARP on the home link (RFC
//! 6275 10.4.1, RFC 5555 4.3.2): while a mobile node is away, the home
//! agent answers for its home addresses, so that an unmodified
//! correspondent on the home link sends their packets to it, and it
//! tunnels them to the care-of address.

use crate::endpoint::ETHERTYPE_ARP;
use bitsgw_wire::checksum;
use bitsgw_wire::ether::{self, ETHERTYPE_IPV6};
use bitsgw_wire::icmp::{
    ND_OPT_TARGET_LL as OPT_TARGET_LL, V6_NEIGHBOR_ADVERTISEMENT as ICMPV6_NA,
    V6_NEIGHBOR_SOLICITATION as ICMPV6_NS,
};
use bitsgw_wire::{ip, proto};

/// The answer to `frame` if it is an ARP request or a Neighbor
/// Solicitation for an address `away` says belongs to a node that is away:
/// an ARP reply or a solicited Neighbor Advertisement (S set, O clear, as
/// RFC 4861 7.2.8 has proxies answer) giving `mac`, sent from `source`
/// (the home agent's address on the home link).
pub fn proxy_reply(
    frame: &[u8],
    mac: [u8; 6],
    source: [u8; 16],
    away: impl Fn(&[u8]) -> bool,
) -> Option<Vec<u8>> {
    match ether::ethertype(frame)? {
        ETHERTYPE_ARP => arp_reply(frame, mac, away),
        ETHERTYPE_IPV6 => na_reply(frame, mac, source, away),
        _ => None,
    }
}

/// RFC 826: a request (opcode 1) for Ethernet/IPv4 whose target is away.
fn arp_reply(frame: &[u8], mac: [u8; 6], away: impl Fn(&[u8]) -> bool) -> Option<Vec<u8>> {
    let arp = frame.get(ether::HEADER_LEN..ether::HEADER_LEN + 28)?;
    if arp[..8] != [0, 1, 8, 0, 6, 4, 0, 1] || !away(&arp[24..28]) {
        return None;
    }
    let mut out = Vec::with_capacity(42);
    out.extend_from_slice(&arp[8..14]); // to the requester's MAC
    out.extend_from_slice(&mac);
    out.extend_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    out.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 2]);
    out.extend_from_slice(&mac);
    out.extend_from_slice(&arp[24..28]);
    out.extend_from_slice(&arp[8..18]);
    Some(out)
}

/// RFC 4861 4.3/4.4: a Neighbor Solicitation (hop limit 255, code 0) whose
/// target is away; the answer goes to the solicitation's source, or to
/// all nodes when that is unspecified (7.2.4).
fn na_reply(
    frame: &[u8],
    mac: [u8; 6],
    source: [u8; 16],
    away: impl Fn(&[u8]) -> bool,
) -> Option<Vec<u8>> {
    let pkt = frame.get(ether::HEADER_LEN..)?;
    let meta = ip::parse(pkt).ok()?;
    let icmp = pkt.get(meta.header_len..meta.total_len)?;
    if meta.proto != proto::ICMPV6
        || meta.hop_limit != 255
        || icmp.len() < 24
        || icmp[0] != ICMPV6_NS
        || icmp[1] != 0
    {
        return None;
    }
    let target = &icmp[8..24];
    if !away(target) {
        return None;
    }
    let src: [u8; 16] = pkt[8..24].try_into().ok()?;
    let solicited = src != [0; 16];
    let dst: [u8; 16] = if solicited {
        src
    } else {
        [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]
    };
    Some(neighbor_advertisement(
        mac,
        if solicited {
            frame[6..12].try_into().ok()?
        } else {
            ALL_NODES_MAC
        },
        source,
        dst,
        target.try_into().ok()?,
        solicited,
        false,
    ))
}

/// The Ethernet address of the all-nodes group ff02::1 (RFC 2464 7).
pub const ALL_NODES_MAC: [u8; 6] = [0x33, 0x33, 0, 0, 0, 1];

/// A Neighbor Advertisement frame for `target` with `mac` as its
/// link-layer address (RFC 4861 4.4): RFC 6275 10.4.1 has the home agent
/// multicast one with Override set when it starts to defend a home
/// address, and answer solicitations with Solicited set.
pub fn neighbor_advertisement(
    mac: [u8; 6],
    to_mac: [u8; 6],
    src: [u8; 16],
    dst: [u8; 16],
    target: [u8; 16],
    solicited: bool,
    override_flag: bool,
) -> Vec<u8> {
    let mut icmp = [0u8; 32];
    icmp[0] = ICMPV6_NA;
    icmp[4] = (if solicited { 0x40 } else { 0 }) | (if override_flag { 0x20 } else { 0 });
    icmp[8..24].copy_from_slice(&target);
    icmp[24] = OPT_TARGET_LL;
    icmp[25] = 1;
    icmp[26..32].copy_from_slice(&mac);
    checksum::fill_icmpv6(&src, &dst, &mut icmp);
    let mut out = Vec::with_capacity(ether::HEADER_LEN + 40 + 32);
    out.extend_from_slice(&to_mac);
    out.extend_from_slice(&mac);
    out.extend_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
    let mut h = [0u8; 40];
    ip::emit_ipv6_header(&mut h, src, dst, proto::ICMPV6, 32, 255, 0);
    out.extend_from_slice(&h);
    out.extend_from_slice(&icmp);
    out
}

/// A gratuitous ARP (a request for its own address, RFC 5227 3) claiming
/// `addr` for `mac`.
pub fn gratuitous_arp(mac: [u8; 6], addr: [u8; 4]) -> Vec<u8> {
    let mut out = Vec::with_capacity(42);
    out.extend_from_slice(&[0xff; 6]);
    out.extend_from_slice(&mac);
    out.extend_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    out.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    out.extend_from_slice(&mac);
    out.extend_from_slice(&addr);
    out.extend_from_slice(&[0; 6]);
    out.extend_from_slice(&addr);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CN_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x77];
    const HA_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const HOA: [u8; 16] = [0x20, 1, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0];
    const HA: [u8; 16] = [0x20, 1, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    const CN: [u8; 16] = [0x20, 1, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x77];

    fn ns(target: [u8; 16], hop_limit: u8) -> Vec<u8> {
        let mut icmp = vec![ICMPV6_NS, 0, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(&target);
        icmp.extend_from_slice(&[1, 1]);
        icmp.extend_from_slice(&CN_MAC);
        let dst = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 1, 0];
        let mut p =
            bitsgw_wire::craft::ip_packet(CN.into(), dst.into(), proto::ICMPV6, &icmp, false);
        p[7] = hop_limit;
        let mut f = vec![0x33, 0x33, 0xff, 0, 1, 0];
        f.extend_from_slice(&CN_MAC);
        f.extend_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
        f.extend_from_slice(&p);
        f
    }

    #[test]
    fn answers_a_solicitation_for_an_away_home_address_only() {
        let away = |a: &[u8]| a == HOA;
        let na = proxy_reply(&ns(HOA, 255), HA_MAC, HA, away).unwrap();
        assert_eq!(&na[..6], &CN_MAC);
        assert_eq!(&na[6..12], &HA_MAC);
        let pkt = &na[14..];
        assert_eq!(&pkt[8..24], &HA);
        assert_eq!(&pkt[24..40], &CN);
        assert_eq!(pkt[7], 255);
        let icmp = &pkt[40..];
        assert_eq!(icmp[0], ICMPV6_NA);
        assert_eq!(icmp[4], 0x40, "solicited, not override");
        assert_eq!(&icmp[8..24], &HOA);
        assert_eq!(&icmp[26..32], &HA_MAC);
        let acc = checksum::pseudo_header(&HA, &CN, proto::ICMPV6, 32);
        assert_eq!(
            checksum::finish(checksum::sum(acc, icmp)),
            0,
            "checksum verifies"
        );
        assert!(
            proxy_reply(&ns(CN, 255), HA_MAC, HA, away).is_none(),
            "not away"
        );
        assert!(
            proxy_reply(&ns(HOA, 64), HA_MAC, HA, away).is_none(),
            "RFC 4861 7.1.1: hop limit 255"
        );
    }

    #[test]
    fn answers_arp_for_an_away_ipv4_home_address() {
        let hoa4 = [192, 0, 2, 100];
        let mut req = vec![0xff; 6];
        req.extend_from_slice(&CN_MAC);
        req.extend_from_slice(&ETHERTYPE_ARP.to_be_bytes());
        req.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
        req.extend_from_slice(&CN_MAC);
        req.extend_from_slice(&[192, 0, 2, 77]);
        req.extend_from_slice(&[0; 6]);
        req.extend_from_slice(&hoa4);
        let rep = proxy_reply(&req, HA_MAC, HA, |a| a == hoa4).unwrap();
        assert_eq!(&rep[..6], &CN_MAC);
        assert_eq!(&rep[20..22], &[0, 2], "reply");
        assert_eq!(&rep[22..28], &HA_MAC);
        assert_eq!(&rep[28..32], &hoa4);
        assert_eq!(&rep[32..38], &CN_MAC);
        assert_eq!(&rep[38..42], &[192, 0, 2, 77]);
        assert!(proxy_reply(&req, HA_MAC, HA, |_| false).is_none());
    }
}
