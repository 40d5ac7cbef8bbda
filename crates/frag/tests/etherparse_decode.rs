//! The headers the fragmenter and the ICMP error builders emit, decoded
//! by an independent implementation (etherparse): IPv4 fragments (flags,
//! offsets, identification, header checksum), IPv6 Fragment headers behind
//! the unfragmentable part, ICMPv4 Fragmentation Needed and ICMPv6 Packet
//! Too Big with their checksums.
#![allow(clippy::unwrap_used)]

use bitsgw_frag::{fragment_ipv4, fragment_ipv6, icmpv4_frag_needed, icmpv6_packet_too_big};
use bitsgw_wire::{craft, mip6, proto, PacketBuf};
use etherparse::icmpv4::DestUnreachableHeader;
use etherparse::{
    Icmpv4Slice, Icmpv4Type, Icmpv6Slice, Icmpv6Type, Ipv4Slice, Ipv6FragmentHeaderSlice,
    Ipv6HeaderSlice, Ipv6RawExtHeaderSlice, Ipv6Slice,
};
use proptest::prelude::*;
use std::net::{Ipv4Addr, Ipv6Addr};

fn doc_v6(host: u16) -> [u8; 16] {
    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, host).octets()
}

fn doc_v4(host: u8) -> [u8; 4] {
    [192, 0, 2, host]
}

/// An IPv4 header etherparse reads, with its checksum checked.
fn ipv4(pkt: &[u8]) -> Result<Ipv4Slice<'_>, TestCaseError> {
    let v4 = Ipv4Slice::from_slice(pkt).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let h = v4.header();
    prop_assert_eq!(h.header_checksum(), h.to_header().calc_header_checksum());
    Ok(v4)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn ipv4_fragments(len in 1usize..4000, mtu in 68usize..1500, host in 1u8..=254) {
        let mut p = craft::udp_packet(
            Ipv4Addr::from(doc_v4(host)).into(),
            Ipv4Addr::from([198, 51, 100, 7]).into(),
            4500,
            4500,
            len,
        );
        p[6] &= !0x40; // clear DF: this packet may be fragmented
        bitsgw_wire::ip::ipv4_fill_checksum(&mut p);
        let ident = u16::from_be_bytes([p[4], p[5]]);
        let mut frags = Vec::new();
        let mut scratch = PacketBuf::with_capacity(4096, 0);
        fragment_ipv4(&p, mtu, &mut scratch, &mut |f| frags.push(f.to_vec())).unwrap();
        let mut data = Vec::new();
        for (i, f) in frags.iter().enumerate() {
            prop_assert!(f.len() <= mtu);
            let e = ipv4(f)?;
            let h = e.header();
            prop_assert_eq!(h.identification(), ident);
            prop_assert_eq!(h.protocol().0, proto::UDP);
            prop_assert_eq!(usize::from(h.total_len()), f.len());
            prop_assert_eq!(h.more_fragments(), i + 1 < frags.len());
            prop_assert_eq!(usize::from(h.fragments_offset().byte_offset()), data.len());
            data.extend_from_slice(e.payload().payload);
        }
        prop_assert_eq!(&data[..], &p[20..]);
    }

    #[test]
    fn ipv6_fragment_headers(
        len in 1usize..4000,
        mtu in 1280usize..1500,
        ident: u32,
        with_rh2: bool,
        with_hao: bool,
    ) {
        let p = craft::udp_packet(
            Ipv6Addr::from(doc_v6(1)).into(),
            Ipv6Addr::from(doc_v6(2)).into(),
            7,
            9,
            len,
        );
        let mut buf = PacketBuf::with_capacity(8192, 128);
        buf.set(&p).unwrap();
        if with_rh2 {
            mip6::insert_type2_routing_header(&mut buf, doc_v6(3)).unwrap();
        }
        if with_hao {
            mip6::insert_home_address_option(&mut buf, doc_v6(4)).unwrap();
        }
        let whole = buf.data().to_vec();
        // The unfragmentable part: the IPv6 header and a routing header
        // (RFC 8200 4.5); the Destination Options header after it is
        // fragmentable.
        let unfrag = 40 + if with_rh2 { mip6::RH2_LEN } else { 0 };
        let first_next = if with_hao { proto::IPV6_DEST_OPTS } else { proto::UDP };
        let mut frags = Vec::new();
        let mut scratch = PacketBuf::with_capacity(8192, 0);
        fragment_ipv6(&whole, mtu, ident, &mut scratch, &mut |f| frags.push(f.to_vec())).unwrap();
        let mut data = Vec::new();
        for (i, f) in frags.iter().enumerate() {
            prop_assert!(f.len() <= mtu);
            if frags.len() == 1 {
                prop_assert_eq!(f, &whole);
                return Ok(());
            }
            // Header by header: etherparse's whole-packet slicer reads on
            // past the Fragment header of a later fragment when the data
            // starts with what would be a Destination Options header.
            let h = Ipv6HeaderSlice::from_slice(f).unwrap();
            prop_assert_eq!(usize::from(h.payload_length()) + 40, f.len());
            prop_assert_eq!((h.source(), h.destination()), (doc_v6(1), doc_v6(2)));
            let mut next = h.next_header();
            if with_rh2 {
                prop_assert_eq!(next.0, proto::IPV6_ROUTING);
                let rh = Ipv6RawExtHeaderSlice::from_slice(&f[40..]).unwrap();
                // Repeated whole; only its Next Header now names the
                // Fragment header.
                prop_assert_eq!(rh.payload(), &whole[42..unfrag]);
                next = rh.next_header();
            }
            prop_assert_eq!(next.0, proto::IPV6_FRAGMENT);
            let fh = Ipv6FragmentHeaderSlice::from_slice(&f[unfrag..]).unwrap();
            prop_assert_eq!(fh.next_header().0, first_next);
            prop_assert_eq!(fh.identification(), ident);
            prop_assert_eq!(fh.more_fragments(), i + 1 < frags.len());
            prop_assert_eq!(usize::from(fh.fragment_offset().byte_offset()), data.len());
            let fragment_data = &f[unfrag + 8..];
            if i == 0 && with_hao {
                let d = Ipv6RawExtHeaderSlice::from_slice(fragment_data).unwrap();
                prop_assert_eq!(d.next_header().0, proto::UDP);
                prop_assert_eq!(&d.payload()[4..6], &[mip6::HOME_ADDRESS_OPTION, 16]);
            }
            data.extend_from_slice(fragment_data);
        }
        prop_assert_eq!(&data[..], &whole[unfrag..]);
    }

    #[test]
    fn icmpv4_fragmentation_needed_errors(len in 0usize..1400, mtu in 68u16..1500, host in 1u8..=254) {
        let original = craft::udp_packet(
            Ipv4Addr::from(doc_v4(host)).into(),
            Ipv4Addr::from([198, 51, 100, 7]).into(),
            1000,
            2000,
            len,
        );
        let gateway = [203, 0, 113, 1];
        let mut out = PacketBuf::with_capacity(2048, 0);
        icmpv4_frag_needed(&original, mtu, gateway, &mut out).unwrap();
        let e = ipv4(out.data())?;
        let h = e.header();
        prop_assert_eq!((h.source(), h.destination()), (gateway, doc_v4(host)));
        prop_assert_eq!(h.protocol().0, proto::ICMP);
        prop_assert!(out.len() <= 576);
        let icmp = Icmpv4Slice::from_slice(e.payload().payload).unwrap();
        prop_assert_eq!(
            icmp.icmp_type(),
            Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::FragmentationNeeded {
                next_hop_mtu: mtu
            })
        );
        prop_assert_eq!(icmp.checksum(), icmp.icmp_type().calc_checksum(icmp.payload()));
        prop_assert_eq!(icmp.payload(), &original[..icmp.payload().len()]);
    }

    #[test]
    fn icmpv6_packet_too_big_errors(len in 0usize..1400, mtu in 1280u32..9000) {
        let original = craft::udp_packet(
            Ipv6Addr::from(doc_v6(1)).into(),
            Ipv6Addr::from(doc_v6(2)).into(),
            1000,
            2000,
            len,
        );
        let gateway = doc_v6(0xff);
        let mut out = PacketBuf::with_capacity(2048, 0);
        icmpv6_packet_too_big(&original, mtu, gateway, &mut out).unwrap();
        let e = Ipv6Slice::from_slice(out.data()).unwrap();
        let h = e.header();
        prop_assert_eq!((h.source(), h.destination()), (gateway, doc_v6(1)));
        prop_assert_eq!(h.next_header().0, proto::ICMPV6);
        prop_assert!(out.len() <= 1280);
        let icmp = Icmpv6Slice::from_slice(e.payload().payload).unwrap();
        prop_assert_eq!(icmp.icmp_type(), Icmpv6Type::PacketTooBig { mtu });
        prop_assert!(icmp.is_checksum_valid(gateway, doc_v6(1)));
        prop_assert_eq!(icmp.payload(), &original[..icmp.payload().len()]);
    }
}
