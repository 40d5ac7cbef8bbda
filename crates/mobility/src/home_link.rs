//! The home agent on the home link: proxy Neighbor Discovery and ARP
//! (RFC 6275 10.4.1, RFC 5555 4.3.2). While a mobile node is away, the
//! home agent answers for its home addresses, so that an unmodified
//! correspondent on the home link sends their packets to it, and it
//! tunnels them to the care-of address; when a node goes away it
//! announces that it now defends its home addresses.
//!
//! Sans-IO like the rest of the stage: [`HomeLink::handle_frame`] takes a
//! frame received on the home link, [`HomeLink::poll_transmit`] gives the
//! announcements to send; both hand frames to a callback and allocate
//! nothing.

use crate::ha::HomeAgent;
use bitsgw_wire::address_resolution::{
    self as ar, AdvertisementFlags, ALL_NODES, ALL_NODES_MAC, ARP_FRAME_LEN, ND_FRAME_LEN,
};

/// The home agent's presence on the home link (an Ethernet link).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HomeLink {
    mac: [u8; 6],
}

impl HomeLink {
    /// The home link, where the home agent's MAC is `mac`.
    pub fn new(mac: [u8; 6]) -> Self {
        HomeLink { mac }
    }

    /// The home agent's MAC on the home link.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// A frame received on the home link: if it is an ARP request or a
    /// Neighbor Solicitation for the home address of a node that is away,
    /// the answer goes to `emit` (counted) and the frame is taken (`true`).
    pub fn handle_frame(
        &self,
        ha: &mut HomeAgent,
        frame: &[u8],
        emit: &mut dyn FnMut(&[u8]),
    ) -> bool {
        let source = ha.config().address;
        let answered = proxy_reply(frame, self.mac, source, |a| ha.is_away(a), emit);
        if answered {
            ha.proxy_answered();
        }
        answered
    }

    /// RFC 6275 10.4.1: for each node newly away, a multicast Neighbor
    /// Advertisement (Override set) for its home address, and a
    /// gratuitous ARP for its IPv4 home address, to `emit`.
    pub fn poll_transmit(&self, ha: &mut HomeAgent, emit: &mut dyn FnMut(&[u8])) {
        let source = ha.config().address;
        let mut na = [0u8; ND_FRAME_LEN];
        let mut arp = [0u8; ARP_FRAME_LEN];
        while let Some((home, home_v4)) = ha.poll_newly_away() {
            let flags = AdvertisementFlags {
                solicited: false,
                override_flag: true,
            };
            let to = ALL_NODES_MAC;
            ar::neighbor_advertisement(self.mac, to, source, ALL_NODES, home, flags, &mut na);
            emit(&na);
            if let Some(v4) = home_v4 {
                ar::gratuitous_arp(self.mac, v4, &mut arp);
                emit(&arp);
            }
        }
    }
}

/// The answer to `frame` if it is an ARP request or a Neighbor
/// Solicitation for an address `away` says belongs to a node that is away:
/// an ARP reply or a Neighbor Advertisement giving `mac`, sent from
/// `source` (the home agent's address on the home link), to `emit`.
/// Whether it answered.
fn proxy_reply(
    frame: &[u8],
    mac: [u8; 6],
    source: [u8; 16],
    away: impl Fn(&[u8]) -> bool,
    emit: &mut dyn FnMut(&[u8]),
) -> bool {
    if let Some(target) = ar::arp_request_target(frame) {
        let mut reply = [0u8; ARP_FRAME_LEN];
        if !away(&target) || ar::arp_reply(frame, mac, &mut reply).is_none() {
            return false;
        }
        emit(&reply);
        return true;
    }
    let Some((requester, target)) = ar::neighbor_solicitation_target(frame) else {
        return false;
    };
    if !away(&target) {
        return false;
    }
    // RFC 4861 7.2.4: to the solicitation's source, or to all nodes when
    // that is unspecified (then without S); S set and O clear, as 7.2.8
    // has proxies answer.
    let solicited = requester != [0; 16];
    let (to_mac, dst) = if solicited {
        let Ok(requester_mac) = <[u8; 6]>::try_from(&frame[6..12]) else {
            return false;
        };
        (requester_mac, requester)
    } else {
        (ALL_NODES_MAC, ALL_NODES)
    };
    let flags = AdvertisementFlags {
        solicited,
        override_flag: false,
    };
    let mut na = [0u8; ND_FRAME_LEN];
    ar::neighbor_advertisement(mac, to_mac, source, dst, target, flags, &mut na);
    emit(&na);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitsgw_wire::ether::{ETHERTYPE_ARP, ETHERTYPE_IPV6};
    use bitsgw_wire::icmp::{V6_NEIGHBOR_ADVERTISEMENT, V6_NEIGHBOR_SOLICITATION};
    use bitsgw_wire::{checksum, proto};

    const CN_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x77];
    const HA_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const HOA: [u8; 16] = [0x20, 1, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0];
    const HA: [u8; 16] = [0x20, 1, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    const CN: [u8; 16] = [0x20, 1, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x77];

    fn ns(src: [u8; 16], target: [u8; 16], hop_limit: u8) -> Vec<u8> {
        let mut icmp = vec![V6_NEIGHBOR_SOLICITATION, 0, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(&target);
        icmp.extend_from_slice(&[1, 1]);
        icmp.extend_from_slice(&CN_MAC);
        let dst = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 1, 0];
        let mut p =
            bitsgw_wire::craft::ip_packet(src.into(), dst.into(), proto::ICMPV6, &icmp, false);
        p[7] = hop_limit;
        let mut f = vec![0x33, 0x33, 0xff, 0, 1, 0];
        f.extend_from_slice(&CN_MAC);
        f.extend_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
        f.extend_from_slice(&p);
        f
    }

    /// The frames `proxy_reply` emits for `frame`.
    fn replies(frame: &[u8], away: impl Fn(&[u8]) -> bool) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let answered = proxy_reply(frame, HA_MAC, HA, away, &mut |f| out.push(f.to_vec()));
        assert_eq!(answered, !out.is_empty());
        out
    }

    #[test]
    fn answers_a_solicitation_for_an_away_home_address_only() {
        let away = |a: &[u8]| a == HOA;
        let out = replies(&ns(CN, HOA, 255), away);
        assert_eq!(out.len(), 1);
        let na = &out[0];
        assert_eq!(&na[..6], &CN_MAC);
        assert_eq!(&na[6..12], &HA_MAC);
        let pkt = &na[14..];
        assert_eq!(&pkt[8..24], &HA);
        assert_eq!(&pkt[24..40], &CN);
        assert_eq!(pkt[7], 255);
        let icmp = &pkt[40..];
        assert_eq!(icmp[0], V6_NEIGHBOR_ADVERTISEMENT);
        assert_eq!(icmp[4], 0x40, "solicited, not override");
        assert_eq!(&icmp[8..24], &HOA);
        assert_eq!(&icmp[26..32], &HA_MAC);
        let acc = checksum::pseudo_header(&HA, &CN, proto::ICMPV6, 32);
        assert_eq!(
            checksum::finish(checksum::sum(acc, icmp)),
            0,
            "checksum verifies"
        );
        assert!(replies(&ns(CN, CN, 255), away).is_empty(), "not away");
        assert!(
            replies(&ns(CN, HOA, 64), away).is_empty(),
            "RFC 4861 7.1.1: hop limit 255"
        );
    }

    #[test]
    fn answers_duplicate_address_detection_to_all_nodes() {
        let out = replies(&ns([0; 16], HOA, 255), |a| a == HOA);
        assert_eq!(out.len(), 1);
        let na = &out[0];
        assert_eq!(&na[..6], &ALL_NODES_MAC);
        assert_eq!(&na[14 + 24..14 + 40], &ALL_NODES);
        assert_eq!(na[14 + 40 + 4], 0, "RFC 4861 7.2.4: neither S nor O");
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
        let out = replies(&req, |a| a == hoa4);
        assert_eq!(out.len(), 1);
        let rep = &out[0];
        assert_eq!(&rep[..6], &CN_MAC);
        assert_eq!(&rep[20..22], &[0, 2], "reply");
        assert_eq!(&rep[22..28], &HA_MAC);
        assert_eq!(&rep[28..32], &hoa4);
        assert_eq!(&rep[32..38], &CN_MAC);
        assert_eq!(&rep[38..42], &[192, 0, 2, 77]);
        assert!(replies(&req, |_| false).is_empty());
    }
}
