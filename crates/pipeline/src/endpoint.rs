//! The appliance's own host stack on one side (its own addresses): what the
//! [`Gateway`](crate::Gateway) needs of it. `bitsgw-io` implements it on
//! smoltcp.
//!
//! What is offered to an endpoint:
//! - host side: every Ethernet frame; what the endpoint claims (addressed to
//!   one of its addresses or to its MAC, ARP and neighbor solicitations for
//!   its addresses) is consumed and never crosses the IPsec stage;
//! - network side: only ARP, ICMPv6 neighbor discovery and ICMP / ICMPv6
//!   echo requests. Anything else addressed to the appliance (TCP, UDP
//!   other than IKE and ESP in UDP, other ICMP) is dropped and counted as
//!   `local_refused`: the appliance offers no services to the unprotected
//!   network. ESP and UDP still go to the IPsec stage as before, so its SPD
//!   decides about them.
//!
//! Frames with VLAN tags are never offered: the endpoint has no VLANs.
//! Inline, a tagged IP packet goes through the SPD like any other;
//! routed, tagged frames are dropped.
//!
//! On raw-IP ports (TUN) an endpoint of that link type ([`LocalEndpoint::link`])
//! is offered:
//! - host side: every packet, as on Ethernet;
//! - network side: IKE addressed to it alone ([`NetworkKind::Ike`], when it
//!   runs IKE). There is no neighbor discovery to answer, and in the `ha` and
//!   `mn` roles the appliance's own addresses (the home agent's address, the
//!   care-of addresses) are also the ends of the mobility tunnels, whose
//!   packets belong to the mobility stage: everything else goes on as
//!   before, IKE never reaching the SPD or the mobility stage (RFC 4301 5.1
//!   and 6: IKE traffic of the gateway itself bypasses IPsec; RFC 4877 4.4:
//!   the mobile node's IKE runs between its care-of address and the home
//!   agent's address, outside the tunnel).

pub use bitsgw_wire::ether::ETHERTYPE_ARP;
use bitsgw_wire::ether::{self, LinkType, ETHERTYPE_IPV4, ETHERTYPE_IPV6};
use bitsgw_wire::{icmp, ip, proto, Timestamp};

/// The appliance's own host stack on one side.
pub trait LocalEndpoint: Send {
    /// Offers a frame that arrived on this side. Returns true if it was for
    /// the appliance itself (ARP request or NDP solicitation for one of its
    /// addresses, an IP packet to one of its addresses) and was consumed;
    /// the endpoint may then have frames to send.
    fn handle_frame(&mut self, frame: &[u8], now: Timestamp) -> bool;
    /// Frames the endpoint wants to send on this side (ARP/NDP replies,
    /// ICMP echo replies...).
    fn poll_transmit(&mut self, now: Timestamp, emit: &mut dyn FnMut(&[u8]));
    /// Whether `frame` is addressed to the appliance itself, without
    /// consuming it (frames the gateway refuses to hand over).
    fn is_addressed_to_me(&self, frame: &[u8]) -> bool;
    /// Whether it runs IKE: IKE addressed to the appliance on the network
    /// side ([`NetworkKind::Ike`]) is then offered to it instead of the
    /// IPsec stage.
    fn takes_ike(&self) -> bool {
        false
    }
    /// The link type of the frames it takes and sends: Ethernet frames,
    /// or IP packets alone on a raw-IP port (TUN). It is offered only
    /// frames of a port of its link type.
    fn link(&self) -> LinkType {
        LinkType::Ethernet
    }
}

/// What a network-side frame is, as far as the endpoint rule goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NetworkKind {
    /// ARP, ICMPv6 neighbor discovery, ICMP / ICMPv6 echo request: may be
    /// offered to the endpoint.
    Offer,
    /// ESP, UDP (ESP in UDP, and IKE when the endpoint runs none) or not
    /// IP at all: the pipeline as before.
    Pass,
    /// IKE: UDP to port 500, or to port 4500 starting with the non-ESP
    /// marker (RFC 3948 2.2); offered to an endpoint that runs IKE
    /// ([`LocalEndpoint::takes_ike`]), else passed.
    Ike,
    /// Anything else: dropped if addressed to the appliance.
    Other,
}

/// Classifies a frame of `link` that arrived on the network side.
pub(crate) fn network_kind(link: LinkType, frame: &[u8]) -> NetworkKind {
    if link == LinkType::RawIp {
        return ip_kind(frame);
    }
    let Some(ethertype) = ether::ethertype(frame) else {
        return NetworkKind::Pass;
    };
    if ethertype == ETHERTYPE_ARP {
        return NetworkKind::Offer;
    }
    if ethertype != ETHERTYPE_IPV4 && ethertype != ETHERTYPE_IPV6 {
        return NetworkKind::Pass;
    }
    ip_kind(&frame[ether::HEADER_LEN..])
}

/// Classifies an IP packet that arrived on the network side.
fn ip_kind(pkt: &[u8]) -> NetworkKind {
    let Ok(meta) = ip::parse(pkt) else {
        return NetworkKind::Other;
    };
    let icmp_type = if meta.is_later_fragment() {
        None
    } else {
        pkt.get(meta.header_len).copied()
    };
    if meta.proto == proto::UDP && !meta.is_later_fragment() && is_ike(&pkt[meta.header_len..]) {
        return NetworkKind::Ike;
    }
    match (meta.proto, icmp_type) {
        (proto::ESP | proto::UDP, _) => NetworkKind::Pass,
        (proto::ICMP, Some(icmp::V4_ECHO_REQUEST)) => NetworkKind::Offer,
        // Router and neighbor solicitation and advertisement.
        (
            proto::ICMPV6,
            Some(
                icmp::V6_ECHO_REQUEST
                | icmp::V6_ROUTER_SOLICITATION..=icmp::V6_NEIGHBOR_ADVERTISEMENT,
            ),
        ) => NetworkKind::Offer,
        _ => NetworkKind::Other,
    }
}

/// Whether a UDP datagram (header first) is IKE: to port 500, or to port
/// 4500 with the four-octet zero non-ESP marker (RFC 3948 2.2), which an
/// ESP SPI can never be (RFC 4303 2.1).
fn is_ike(udp: &[u8]) -> bool {
    let Some(dst) = udp.get(2..4) else {
        return false;
    };
    match u16::from_be_bytes([dst[0], dst[1]]) {
        500 => true,
        4500 => udp.get(8..12) == Some(&[0, 0, 0, 0]),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitsgw_wire::craft;

    fn frame(ethertype: u16, pkt: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(pkt);
        f
    }

    #[test]
    fn network_kinds() {
        let v4 = |p: u8, upper: &[u8]| {
            frame(
                ETHERTYPE_IPV4,
                &craft::ip_packet(
                    "192.0.2.2".parse().unwrap(),
                    "192.0.2.1".parse().unwrap(),
                    p,
                    upper,
                    false,
                ),
            )
        };
        let v6 = |p: u8, upper: &[u8]| {
            frame(
                ETHERTYPE_IPV6,
                &craft::ip_packet(
                    "2001:db8::2".parse().unwrap(),
                    "2001:db8::1".parse().unwrap(),
                    p,
                    upper,
                    false,
                ),
            )
        };
        assert_eq!(
            network_kind(LinkType::Ethernet, &frame(ETHERTYPE_ARP, &[0; 28])),
            NetworkKind::Offer
        );
        assert_eq!(
            network_kind(LinkType::Ethernet, &v4(1, &[8, 0, 0, 0, 0, 0, 0, 0])),
            NetworkKind::Offer
        );
        assert_eq!(
            network_kind(LinkType::Ethernet, &v4(1, &[0, 0, 0, 0, 0, 0, 0, 0])),
            NetworkKind::Other
        );
        assert_eq!(
            network_kind(LinkType::Ethernet, &v4(6, &[0; 20])),
            NetworkKind::Other
        );
        assert_eq!(
            network_kind(LinkType::Ethernet, &v4(proto::ESP, &[0; 20])),
            NetworkKind::Pass
        );
        assert_eq!(
            network_kind(LinkType::Ethernet, &v4(proto::UDP, &[0; 20])),
            NetworkKind::Pass
        );
        let udp_to = |port: u16, first: u8| {
            let mut d = vec![0u8; 20];
            d[0..2].copy_from_slice(&4500u16.to_be_bytes());
            d[2..4].copy_from_slice(&port.to_be_bytes());
            d[8] = first;
            d
        };
        assert_eq!(
            network_kind(LinkType::Ethernet, &v4(proto::UDP, &udp_to(500, 1))),
            NetworkKind::Ike
        );
        assert_eq!(
            network_kind(LinkType::Ethernet, &v4(proto::UDP, &udp_to(4500, 0))),
            NetworkKind::Ike
        );
        // ESP in UDP (an SPI, never zero) stays with the IPsec stage.
        assert_eq!(
            network_kind(LinkType::Ethernet, &v4(proto::UDP, &udp_to(4500, 1))),
            NetworkKind::Pass
        );
        assert_eq!(
            network_kind(LinkType::Ethernet, &v6(proto::ICMPV6, &[135, 0, 0, 0])),
            NetworkKind::Offer
        );
        assert_eq!(
            network_kind(LinkType::Ethernet, &v6(proto::ICMPV6, &[128, 0, 0, 0])),
            NetworkKind::Offer
        );
        assert_eq!(
            network_kind(LinkType::Ethernet, &v6(proto::ICMPV6, &[1, 0, 0, 0])),
            NetworkKind::Other
        );
        assert_eq!(
            network_kind(LinkType::Ethernet, &frame(0x88cc, &[0; 20])),
            NetworkKind::Pass
        );
        // Raw IP: the packet alone, the same rule; DSMIPv6's UDP 4191 is
        // never IKE.
        let raw = |f: Vec<u8>| network_kind(LinkType::RawIp, &f[14..]);
        assert_eq!(raw(v4(proto::UDP, &udp_to(500, 1))), NetworkKind::Ike);
        assert_eq!(raw(v6(proto::UDP, &udp_to(4500, 0))), NetworkKind::Ike);
        assert_eq!(raw(v4(proto::UDP, &udp_to(4500, 1))), NetworkKind::Pass);
        assert_eq!(raw(v4(proto::UDP, &udp_to(4191, 0))), NetworkKind::Pass);
    }
}
