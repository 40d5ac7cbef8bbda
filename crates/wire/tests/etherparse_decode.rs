//! Every header `wire` emits, decoded by an independent implementation
//! (etherparse): IPv4 and IPv6 headers, UDP (with its checksum, and the
//! zero-checksum UDP of RFC 5555 and RFC 3948 encapsulation), IP-in-IP
//! outer headers, the Destination Options header with the Home Address
//! option (RFC 6275 6.3) and the type 2 routing header (RFC 6275 6.4).
//! Fields, lengths and checksums must agree with what was asked for.
#![allow(clippy::unwrap_used)]

use bitsgw_wire::encap::{self, Outer};
use bitsgw_wire::{craft, esp, ip, mip6, proto, PacketBuf};
use etherparse::{
    Ipv4HeaderSlice, Ipv4Slice, Ipv6ExtensionSlice, Ipv6HeaderSlice, Ipv6Slice, UdpSlice,
};
use proptest::prelude::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A unicast IPv6 address in the documentation prefix 2001:db8::/32.
fn doc_v6() -> impl Strategy<Value = [u8; 16]> {
    any::<[u8; 12]>().prop_map(|tail| {
        let mut a = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        a[4..].copy_from_slice(&tail);
        a
    })
}

/// An IPv4 address in one of the documentation networks.
fn doc_v4() -> impl Strategy<Value = [u8; 4]> {
    (
        prop_oneof![Just([192, 0, 2]), Just([198, 51, 100]), Just([203, 0, 113])],
        1u8..=254,
    )
        .prop_map(|(net, host)| [net[0], net[1], net[2], host])
}

/// The IPv4 header etherparse reads must be the one `emit_ipv4_header`
/// was asked for, with a checksum etherparse computes to the same value.
fn check_ipv4(pkt: &[u8]) -> Result<Ipv4Slice<'_>, TestCaseError> {
    let v4 = Ipv4Slice::from_slice(pkt).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let h = v4.header();
    prop_assert_eq!(h.header_checksum(), h.to_header().calc_header_checksum());
    Ok(v4)
}

/// The UDP datagram at the start of `udp`, its checksum checked against
/// etherparse's over the IPv4 or IPv6 pseudo-header.
fn check_udp_checksum(udp: &UdpSlice<'_>, src: &[u8], dst: &[u8]) -> Result<(), TestCaseError> {
    let header = udp.to_header();
    let want = match (<[u8; 4]>::try_from(src), <[u8; 16]>::try_from(src)) {
        (Ok(s), _) => header
            .calc_checksum_ipv4_raw(s, dst.try_into().unwrap(), udp.payload())
            .unwrap(),
        (_, Ok(s)) => header
            .calc_checksum_ipv6_raw(s, dst.try_into().unwrap(), udp.payload())
            .unwrap(),
        _ => return Err(TestCaseError::fail("address of neither family")),
    };
    prop_assert_eq!(udp.checksum(), want);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn ipv4_header_fields_and_checksum(
        src in doc_v4(),
        dst in doc_v4(),
        protocol: u8,
        payload in 0u16..=(u16::MAX - 20),
        ttl: u8,
        ident: u16,
        tos: u8,
        df: bool,
    ) {
        let mut h = [0u8; 20];
        ip::emit_ipv4_header(&mut h, src, dst, protocol, 20 + payload, ttl, ident, tos, df);
        let e = Ipv4HeaderSlice::from_slice(&h).unwrap();
        prop_assert_eq!((e.version(), e.ihl()), (4, 5));
        prop_assert_eq!((e.source(), e.destination()), (src, dst));
        prop_assert_eq!(e.protocol().0, protocol);
        prop_assert_eq!(e.total_len(), 20 + payload);
        prop_assert_eq!((e.ttl(), e.identification()), (ttl, ident));
        prop_assert_eq!((e.dcp().value(), e.ecn().value()), (tos >> 2, tos & 3));
        prop_assert_eq!(e.dont_fragment(), df);
        prop_assert!(!e.more_fragments());
        prop_assert_eq!(e.fragments_offset().value(), 0);
        prop_assert_eq!(e.header_checksum(), e.to_header().calc_header_checksum());
        prop_assert!(e.options().is_empty());
    }

    #[test]
    fn ipv6_header_fields(
        src in doc_v6(),
        dst in doc_v6(),
        next: u8,
        payload: u16,
        hop_limit: u8,
        traffic_class: u8,
    ) {
        let mut h = [0u8; 40];
        ip::emit_ipv6_header(&mut h, src, dst, next, payload, hop_limit, traffic_class);
        let e = Ipv6HeaderSlice::from_slice(&h).unwrap();
        prop_assert_eq!(e.version(), 6);
        prop_assert_eq!((e.source(), e.destination()), (src, dst));
        prop_assert_eq!(e.next_header().0, next);
        prop_assert_eq!(e.payload_length(), payload);
        prop_assert_eq!(e.hop_limit(), hop_limit);
        prop_assert_eq!(e.traffic_class(), traffic_class);
        prop_assert_eq!(e.flow_label().value(), 0);
    }

    #[test]
    fn udp_over_ipv4_and_ipv6(
        v6: bool,
        src4 in doc_v4(),
        dst4 in doc_v4(),
        src6 in doc_v6(),
        dst6 in doc_v6(),
        sport: u16,
        dport: u16,
        len in 0usize..1400,
    ) {
        let (src, dst): (IpAddr, IpAddr) = if v6 {
            (Ipv6Addr::from(src6).into(), Ipv6Addr::from(dst6).into())
        } else {
            (Ipv4Addr::from(src4).into(), Ipv4Addr::from(dst4).into())
        };
        let p = craft::udp_packet(src, dst, sport, dport, len);
        let meta = ip::parse(&p).unwrap();
        let (udp_bytes, s, d): (&[u8], Vec<u8>, Vec<u8>) = if v6 {
            let e = Ipv6Slice::from_slice(&p).unwrap();
            prop_assert_eq!(e.header().next_header().0, proto::UDP);
            prop_assert_eq!(usize::from(e.header().payload_length()), 8 + len);
            prop_assert!(e.extensions().is_empty());
            (e.payload().payload, src6.to_vec(), dst6.to_vec())
        } else {
            let e = check_ipv4(&p)?;
            prop_assert!(e.header().dont_fragment());
            prop_assert_eq!(e.header().protocol().0, proto::UDP);
            (e.payload().payload, src4.to_vec(), dst4.to_vec())
        };
        prop_assert_eq!(meta.header_len, p.len() - udp_bytes.len());
        let udp = UdpSlice::from_slice(udp_bytes).unwrap();
        prop_assert_eq!((udp.source_port(), udp.destination_port()), (sport, dport));
        prop_assert_eq!(usize::from(udp.length()), 8 + len);
        prop_assert_eq!(udp.payload().len(), len);
        check_udp_checksum(&udp, &s, &d)?;
        // The checksum `esp::udp_checksum` gives an IPv6 ESP-in-UDP
        // datagram is the one etherparse computes.
        let mut zeroed = udp_bytes.to_vec();
        zeroed[6..8].fill(0);
        let ours = esp::udp_checksum(&s, &d, &zeroed);
        prop_assert_eq!(ours, udp.checksum());
    }

    #[test]
    fn tunnel_outer_headers(
        inner_v6: bool,
        kind in 0u8..3,
        tlv: bool,
        src4 in doc_v4(),
        dst4 in doc_v4(),
        src6 in doc_v6(),
        dst6 in doc_v6(),
        sport: u16,
        dport: u16,
        len in 0usize..1200,
    ) {
        let inner = if inner_v6 {
            craft::udp_packet(Ipv6Addr::from(dst6).into(), Ipv6Addr::from(src6).into(), 7, 9, len)
        } else {
            craft::udp_packet(Ipv4Addr::from(dst4).into(), Ipv4Addr::from(src4).into(), 7, 9, len)
        };
        let inner_proto = if inner_v6 { proto::IPV6 } else { proto::IPV4 };
        let outer = match kind {
            0 => Outer::V6 { src: src6, dst: dst6 },
            1 => Outer::V4 { src: src4, dst: dst4 },
            _ => Outer::V4Udp { src: src4, dst: dst4, src_port: sport, dst_port: dport, tlv },
        };
        let mut buf = PacketBuf::with_capacity(4096, 128);
        buf.set(&inner).unwrap();
        encap::encapsulate(&mut buf, &outer).unwrap();
        let p = buf.data();
        let carried = match outer {
            Outer::V6 { .. } => {
                let e = Ipv6Slice::from_slice(p).unwrap();
                let h = e.header();
                prop_assert_eq!((h.source(), h.destination()), (src6, dst6));
                prop_assert_eq!(h.next_header().0, inner_proto);
                prop_assert_eq!(usize::from(h.payload_length()), inner.len());
                e.payload().payload
            }
            Outer::V4 { .. } => {
                let e = check_ipv4(p)?;
                let h = e.header();
                prop_assert_eq!((h.source(), h.destination()), (src4, dst4));
                prop_assert_eq!(h.protocol().0, inner_proto);
                prop_assert_eq!(usize::from(h.total_len()), 20 + inner.len());
                e.payload().payload
            }
            Outer::V4Udp { .. } => {
                let e = check_ipv4(p)?;
                prop_assert_eq!(e.header().protocol().0, proto::UDP);
                let udp = UdpSlice::from_slice(e.payload().payload).unwrap();
                prop_assert_eq!((udp.source_port(), udp.destination_port()), (sport, dport));
                let tlv_len = if tlv { encap::TLV_HEADER_LEN } else { 0 };
                prop_assert_eq!(usize::from(udp.length()), 8 + tlv_len + inner.len());
                // RFC 5555 4.1 and RFC 768: no checksum over IPv4.
                prop_assert_eq!(udp.checksum(), 0);
                &udp.payload()[tlv_len..]
            }
        };
        prop_assert_eq!(carried, &inner[..]);
    }

    #[test]
    fn home_address_option_and_type2_routing_header(
        src in doc_v6(),
        dst in doc_v6(),
        home in doc_v6(),
        with_hao: bool,
        with_rh2: bool,
        len in 0usize..1200,
    ) {
        let p = craft::udp_packet(Ipv6Addr::from(src).into(), Ipv6Addr::from(dst).into(), 7, 9, len);
        let mut buf = PacketBuf::with_capacity(4096, 128);
        buf.set(&p).unwrap();
        if with_rh2 {
            mip6::insert_type2_routing_header(&mut buf, home).unwrap();
        }
        if with_hao {
            mip6::insert_home_address_option(&mut buf, home).unwrap();
        }
        let e = Ipv6Slice::from_slice(buf.data()).unwrap();
        let mut kinds = Vec::new();
        for ext in e.extensions().clone().into_iter() {
            match ext {
                Ipv6ExtensionSlice::DestinationOptions(d) => {
                    kinds.push(proto::IPV6_DEST_OPTS);
                    // PadN of 2 bytes of padding puts the option at 8n+6,
                    // then Type 201, length 16, the home address.
                    let opts = d.payload();
                    prop_assert_eq!(opts.len(), mip6::HAO_HEADER_LEN - 2);
                    prop_assert_eq!(&opts[..4], &[1, 2, 0, 0]);
                    prop_assert_eq!(&opts[4..6], &[mip6::HOME_ADDRESS_OPTION, 16]);
                    prop_assert_eq!(&opts[6..22], &home);
                }
                Ipv6ExtensionSlice::Routing(r) => {
                    kinds.push(proto::IPV6_ROUTING);
                    let body = r.payload();
                    prop_assert_eq!(body.len(), mip6::RH2_LEN - 2);
                    // Routing Type 2, Segments Left 1, reserved, address.
                    prop_assert_eq!(&body[..6], &[mip6::ROUTING_TYPE_2, 1, 0, 0, 0, 0]);
                    prop_assert_eq!(&body[6..22], &home);
                }
                other => prop_assert!(false, "unexpected extension header {other:?}"),
            }
        }
        // RFC 6275 6.3: the Destination Options header follows a routing
        // header.
        let mut want = Vec::new();
        if with_rh2 {
            want.push(proto::IPV6_ROUTING);
        }
        if with_hao {
            want.push(proto::IPV6_DEST_OPTS);
        }
        prop_assert_eq!(kinds, want);
        prop_assert_eq!(e.payload().ip_number.0, proto::UDP);
        prop_assert_eq!(e.payload().payload, &p[40..]);
        prop_assert_eq!(usize::from(e.header().payload_length()), buf.len() - 40);
        let meta = ip::parse(buf.data()).unwrap();
        prop_assert_eq!((meta.header_len, meta.proto), (buf.len() - (p.len() - 40), proto::UDP));
    }
}
