//! Arbitrary bytes into every Mobile IPv6 parser: no input may panic.
//! 4 properties x 30,000 cases = 120,000 cases.

use bitsgw_wire::encap::{decapsulate, DSMIP_UDP_PORT};
use bitsgw_wire::mh::{MhPacket, MhRepr};
use bitsgw_wire::mip6;
use bitsgw_wire::PacketBuf;
use proptest::prelude::*;

const CASES: u32 = 30_000;

/// Bytes that look enough like a Mobility Header to get past the first
/// checks often: Payload Proto 59 and a small Header Len, most of the time.
fn mh_like() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<bool>(),
        0u8..6,
        0u8..10,
        proptest::collection::vec(any::<u8>(), 0..80),
    )
        .prop_map(|(fix, hlen, kind, mut v)| {
            if fix && v.len() >= 3 {
                v[0] = 59;
                v[1] = hlen;
                v[2] = kind;
            }
            v
        })
}

/// Bytes that start like an IPv6 packet with a consistent payload length
/// and a Next Header among the extension headers, most of the time.
fn ipv6_like() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<bool>(),
        prop_oneof![
            Just(0u8),
            Just(43),
            Just(60),
            Just(4),
            Just(41),
            Just(17),
            any::<u8>()
        ],
        proptest::collection::vec(any::<u8>(), 0..160),
    )
        .prop_map(|(fix, nh, mut v)| {
            if fix && v.len() >= 40 {
                v[0] = 0x60;
                let plen = (v.len() - 40) as u16;
                v[4..6].copy_from_slice(&plen.to_be_bytes());
                v[6] = nh;
            }
            v
        })
}

/// Like [`ipv6_like`], but IPv4 (IP-in-IP or UDP to the DSMIPv6 port)
/// about half the time.
fn ip_like() -> impl Strategy<Value = Vec<u8>> {
    (any::<bool>(), ipv6_like(), any::<bool>()).prop_map(|(v4, mut v, udp)| {
        if v4 && v.len() >= 28 {
            v[0] = 0x45;
            let total = v.len() as u16;
            v[2..4].copy_from_slice(&total.to_be_bytes());
            v[6] = 0;
            v[7] = 0;
            v[9] = if udp {
                17
            } else {
                [4, 41][usize::from(v[9] & 1)]
            };
            if udp {
                v[22..24].copy_from_slice(&DSMIP_UDP_PORT.to_be_bytes());
            }
        }
        v
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

    #[test]
    fn mh_parse_never_panics(bytes in mh_like()) {
        if let Ok(p) = MhPacket::new_checked(&bytes[..]) {
            let _ = p.verify_checksum(&[0; 16], &[1; 16]);
            let _ = (p.bu_flags(), p.ba_flags(), p.message_data().len());
            if let Ok(r) = MhRepr::parse(&p) {
                let mut at = 0;
                for o in r.options() {
                    at += o.wire_len();
                }
                // A validated area is consumed exactly by the iterator.
                prop_assert_eq!(at, r.options.len());
            }
        }
    }

    #[test]
    fn mip6_header_walks_never_panic(bytes in ipv6_like()) {
        let _ = mip6::find_home_address_option(&bytes);
        let _ = mip6::find_type2_routing_header(&bytes);
        let mut a = bytes.clone();
        let _ = mip6::swap_home_address(&mut a);
        let mut b = bytes.clone();
        let _ = mip6::process_type2_routing_header(&mut b);
        let mut buf = PacketBuf::from_slice(&bytes);
        let _ = mip6::remove_home_address_option(&mut buf);
        let _ = mip6::remove_type2_routing_header(&mut buf);
    }

    #[test]
    fn mip6_insert_then_find(bytes in ipv6_like()) {
        let mut buf = PacketBuf::from_slice(&bytes);
        if mip6::insert_home_address_option(&mut buf, [7; 16]).is_ok() {
            // A Home Address option found after insertion is ours (an
            // earlier one in the input may be found first only if the
            // input had one).
            if let (Ok(Some(at)), Ok(None)) = (
                mip6::find_home_address_option(buf.data()),
                mip6::find_home_address_option(&bytes),
            ) {
                prop_assert_eq!(&buf.data()[at..at + 16], &[7u8; 16][..]);
            }
        }
        let _ = mip6::MobilePrefixAdvertisement::parse(&bytes).map(|m| m.prefixes().count());
        let _ = mip6::MobilePrefixSolicitation::parse(&bytes);
    }

    #[test]
    fn decapsulate_never_panics(bytes in ip_like()) {
        let mut buf = PacketBuf::from_slice(&bytes);
        match decapsulate(&mut buf, DSMIP_UDP_PORT) {
            Ok(_) => prop_assert!(buf.len() < bytes.len()),
            Err(_) => prop_assert_eq!(buf.data(), &bytes[..]),
        }
    }
}
