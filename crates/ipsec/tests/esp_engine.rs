//! The ESP engine end to end: two IPsec stages, every transform, mode,
//! family and encapsulation, and each way a packet can be refused.
#![allow(clippy::unwrap_used)]

mod common;

use bitsgw_ipsec::crypto::{GcmBackend, Transform, TransformId};
use bitsgw_ipsec::sa::{Direction, LimitKind};
use bitsgw_ipsec::{Disposition, DropReason, Event};
use bitsgw_wire::{PacketBuf, Timestamp};
use common::*;

const T0: Timestamp = Timestamp::ZERO;

fn send(a: &mut bitsgw_ipsec::IpsecStage, pkt: &[u8]) -> PacketBuf {
    let mut buf = PacketBuf::from_slice(pkt);
    assert_eq!(a.handle_outbound(&mut buf, T0), Disposition::Forward);
    buf
}

#[test]
fn round_trip_every_transform_mode_family_and_encapsulation() {
    let mut combos = 0;
    for transform in transforms() {
        for tunnel in [false, true] {
            for inner_v6 in [false, true] {
                for outer_v6 in [false, true] {
                    if !tunnel && outer_v6 != inner_v6 {
                        continue;
                    }
                    for udp_encap in [None, Some((4500, 4500)), Some((4501, 14500))] {
                        for esn in [false, true] {
                            let spec = PairSpec {
                                transform,
                                tunnel,
                                inner_v6,
                                outer_v6,
                                udp_encap,
                                esn,
                                ..PairSpec::default()
                            };
                            let (mut a, mut b) = spec.stages();
                            let (ha, hb) = spec.inner();
                            for len in [0, 1, 13, 100, 1000] {
                                let pkt = udp_packet(ha, hb, 1111, 2222, len);
                                let mut buf = send(&mut a, &pkt);
                                let wire = buf.data().to_vec();
                                assert_ne!(wire, pkt);
                                let meta = bitsgw_wire::ip::parse(&wire).unwrap();
                                let want = if udp_encap.is_some() { 17 } else { 50 };
                                assert_eq!(meta.proto, want, "{spec:?}");
                                assert_eq!(
                                    b.handle_inbound(&mut buf, T0),
                                    Disposition::Deliver,
                                    "{spec:?} len {len}: {:?}",
                                    b.counters()
                                );
                                assert_eq!(buf.data(), &pkt[..], "{spec:?} len {len}");
                            }
                            combos += 1;
                        }
                    }
                }
            }
        }
    }
    assert_eq!(combos, 8 * 6 * 3 * 2);
}

#[test]
fn both_gcm_backends_interoperate() {
    for (ba, bb) in [("ring", "rustcrypto"), ("rustcrypto", "ring")] {
        let a = PairSpec {
            backend: ba,
            ..PairSpec::default()
        };
        let b = PairSpec {
            backend: bb,
            ..PairSpec::default()
        };
        let (mut sa, mut sb) = (a.stage(true), b.stage(false));
        let (ha, hb) = a.inner();
        let pkt = udp_packet(ha, hb, 1, 2, 300);
        let mut buf = send(&mut sa, &pkt);
        assert_eq!(sb.handle_inbound(&mut buf, T0), Disposition::Deliver);
        assert_eq!(buf.data(), &pkt[..]);
    }
}

#[test]
fn tampered_packets_fail_the_icv_and_are_counted() {
    let spec = PairSpec::default();
    let (mut a, mut b) = spec.stages();
    let (ha, hb) = spec.inner();
    let pkt = udp_packet(ha, hb, 1, 2, 64);
    let wire = send(&mut a, &pkt).data().to_vec();
    // Every byte after the outer header and SPI (changing the SPI makes it
    // an unknown SPI instead).
    for i in 24..wire.len() {
        let mut t = wire.clone();
        t[i] ^= 0x01;
        let mut buf = PacketBuf::from_slice(&t);
        assert_eq!(
            b.handle_inbound(&mut buf, T0),
            Disposition::Drop(DropReason::IcvFailure),
            "byte {i}"
        );
    }
    let n = (wire.len() - 24) as u64;
    assert_eq!(b.counters().drops(DropReason::IcvFailure), n);
    let sa = b.sad().by_name("in").unwrap();
    assert_eq!(b.sad().get(sa).unwrap().stats().icv_failures, n);
    // The genuine packet still gets through afterwards.
    let mut buf = PacketBuf::from_slice(&wire);
    assert_eq!(b.handle_inbound(&mut buf, T0), Disposition::Deliver);
}

#[test]
fn replayed_and_too_old_packets_are_dropped() {
    let spec = PairSpec {
        replay_window: 32,
        ..PairSpec::default()
    };
    let (mut a, mut b) = spec.stages();
    let (ha, hb) = spec.inner();
    let pkt = udp_packet(ha, hb, 1, 2, 10);
    let wires: Vec<Vec<u8>> = (0..40)
        .map(|_| send(&mut a, &pkt).data().to_vec())
        .collect();
    let mut deliver = |w: &[u8]| {
        let mut buf = PacketBuf::from_slice(w);
        b.handle_inbound(&mut buf, T0)
    };
    assert_eq!(deliver(&wires[39]), Disposition::Deliver); // seq 40
    assert_eq!(
        deliver(&wires[39]),
        Disposition::Drop(DropReason::ReplayDuplicate)
    );
    assert_eq!(deliver(&wires[8]), Disposition::Deliver); // seq 9: 40 - 9 = 31 < 32
    assert_eq!(
        deliver(&wires[7]),
        Disposition::Drop(DropReason::ReplayTooOld)
    ); // seq 8
    assert_eq!(
        deliver(&wires[8]),
        Disposition::Drop(DropReason::ReplayDuplicate)
    );
    let sa = b.sad().by_name("in").unwrap();
    assert_eq!(b.sad().get(sa).unwrap().stats().replay_drops, 3);
}

#[test]
fn wrong_key_unknown_spi_and_cleartext_are_refused() {
    let spec = PairSpec::default();
    let (mut a, _) = spec.stages();
    let (ha, hb) = spec.inner();
    let pkt = udp_packet(ha, hb, 1, 2, 10);
    let wire = send(&mut a, &pkt).data().to_vec();

    // B with other keys: the same SPI, a different key.
    let other = spec
        .policy(false)
        .replace(&key_for("aes-gcm-128", "enc")[2..10], "99999999");
    let set = bitsgw_ipsec::config::parse_policy(&other, "b.json").unwrap();
    let mut b = bitsgw_ipsec::IpsecStage::new(Default::default());
    set.apply(&mut b, T0).unwrap();
    let mut buf = PacketBuf::from_slice(&wire);
    assert_eq!(
        b.handle_inbound(&mut buf, T0),
        Disposition::Drop(DropReason::IcvFailure)
    );

    // Unknown SPI.
    let mut t = wire.clone();
    t[20..24].copy_from_slice(&0x4444u32.to_be_bytes());
    let mut buf = PacketBuf::from_slice(&t);
    assert_eq!(
        b.handle_inbound(&mut buf, T0),
        Disposition::Drop(DropReason::UnknownSpi)
    );

    // Cleartext that an inbound PROTECT entry covers (RFC 4301 5.2).
    let clear = udp_packet(ha, hb, 1, 2, 10);
    let mut buf = PacketBuf::from_slice(&clear);
    assert_eq!(
        b.handle_inbound(&mut buf, T0),
        Disposition::Drop(DropReason::UnprotectedTraffic)
    );

    // IKE is bypassed both ways; other traffic has no policy.
    let ike = udp_packet(hb, ha, 500, 500, 10);
    let mut buf = PacketBuf::from_slice(&ike);
    assert_eq!(b.handle_inbound(&mut buf, T0), Disposition::Deliver);
    let stray: std::net::IpAddr = "192.0.2.200".parse().unwrap();
    let mut buf = PacketBuf::from_slice(&udp_packet(stray, stray, 1, 2, 10));
    assert_eq!(
        b.handle_inbound(&mut buf, T0),
        Disposition::Drop(DropReason::NoPolicy)
    );
    let mut buf = PacketBuf::from_slice(&[0x45, 0, 0]);
    assert_eq!(
        b.handle_inbound(&mut buf, T0),
        Disposition::Drop(DropReason::Malformed)
    );
}

#[test]
fn inner_packet_outside_the_sa_selectors_is_dropped() {
    let spec = PairSpec::default();
    let mut a = spec.stage(true);
    // B accepts only 192.0.2.0/25 from A's side under this SA.
    let narrow = spec.policy(false).replace(
        r#""remote": "192.0.2.1/24", "action": "protect", "sa": "in""#,
        r#""remote": "192.0.2.0/25", "action": "protect", "sa": "in""#,
    );
    assert_ne!(narrow, spec.policy(false));
    let set = bitsgw_ipsec::config::parse_policy(&narrow, "b.json").unwrap();
    let mut b = bitsgw_ipsec::IpsecStage::new(Default::default());
    set.apply(&mut b, T0).unwrap();
    let hb = spec.inner().1;
    let ok = udp_packet("192.0.2.5".parse().unwrap(), hb, 1, 2, 10);
    let mut buf = send(&mut a, &ok);
    assert_eq!(b.handle_inbound(&mut buf, T0), Disposition::Deliver);
    let outside = udp_packet("192.0.2.200".parse().unwrap(), hb, 1, 2, 10);
    let mut buf = send(&mut a, &outside);
    assert_eq!(
        b.handle_inbound(&mut buf, T0),
        Disposition::Drop(DropReason::InnerSelectorMismatch)
    );
}

#[test]
fn lifetimes_soft_then_hard_by_packets_and_time() {
    let spec = PairSpec {
        lifetime: r#"{"soft": {"packets": 2, "seconds": 10}, "hard": {"packets": 3, "seconds": 20}}"#,
        ..PairSpec::default()
    };
    let (mut a, _) = spec.stages();
    let (ha, hb) = spec.inner();
    let pkt = udp_packet(ha, hb, 1, 2, 10);
    send(&mut a, &pkt);
    assert_eq!(a.poll_event(), None);
    send(&mut a, &pkt);
    assert!(matches!(a.poll_event(), Some(Event::SoftExpired { ref name, .. }) if name == "out"));
    send(&mut a, &pkt);
    assert!(
        matches!(a.poll_event(), Some(Event::HardExpired { ref name, direction: Direction::Outbound, .. }) if name == "out")
    );
    // Fail closed: the policy still PROTECTs, the SA is gone.
    let mut buf = PacketBuf::from_slice(&pkt);
    assert_eq!(
        a.handle_outbound(&mut buf, T0),
        Disposition::Drop(DropReason::NoSa)
    );
    assert_eq!(a.counters().drops(DropReason::NoSa), 1);

    // By time, driven by handle_timeout.
    let (_, mut b) = spec.stages();
    assert_eq!(b.poll_timeout(), Some(Timestamp::from_secs(10)));
    b.handle_timeout(Timestamp::from_secs(9));
    assert_eq!(b.poll_event(), None);
    b.handle_timeout(Timestamp::from_secs(10));
    let events: Vec<Event> = std::iter::from_fn(|| b.poll_event()).collect();
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(events.iter().all(|e| matches!(
        e,
        Event::SoftExpired {
            limit: LimitKind::Time,
            ..
        }
    )));
    assert_eq!(b.poll_timeout(), Some(Timestamp::from_secs(20)));
    b.handle_timeout(Timestamp::from_secs(25));
    let events: Vec<Event> = std::iter::from_fn(|| b.poll_event()).collect();
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(events.iter().all(|e| matches!(
        e,
        Event::HardExpired {
            limit: LimitKind::Time,
            ..
        }
    )));
    assert!(b.query().sa_by_name("in").is_none());
    assert!(b.query().sa_by_name("out").is_none());
    assert_eq!(b.poll_timeout(), None);
}

/// Builds an ESP packet (tunnel mode, IPv4 outer) by hand, for trailers the
/// engine itself would never produce.
fn crafted(spec: &PairSpec, seq: u32, inner: &[u8], pad: &[u8], next_header: u8) -> Vec<u8> {
    let id = TransformId::from_name(spec.transform).unwrap();
    let enc = hex::decode(&key_for(spec.transform, "enc")[2..]).unwrap();
    let t = Transform::new(id, GcmBackend::RustCrypto, &enc, &[]).unwrap();
    let mut esp = Vec::new();
    esp.extend_from_slice(&0x1001u32.to_be_bytes());
    esp.extend_from_slice(&seq.to_be_bytes());
    esp.extend_from_slice(&[0; 8]);
    esp.extend_from_slice(inner);
    esp.extend_from_slice(pad);
    esp.push(pad.len() as u8);
    esp.push(next_header);
    esp.extend_from_slice(&[0; 16]);
    t.seal(&mut esp, u64::from(seq), false).unwrap();
    let (oa, ob) = spec.outer();
    ip_packet(oa, ob, 50, &esp, false)
}

#[test]
fn padding_dummy_packets_and_tfc() {
    let spec = PairSpec::default();
    let (_, mut b) = spec.stages();
    let (ha, hb) = spec.inner();
    let inner = udp_packet(ha, hb, 1, 2, 9); // 37 bytes
    let mut run = |pkt: Vec<u8>| {
        let mut buf = PacketBuf::from_slice(&pkt);
        let d = b.handle_inbound(&mut buf, T0);
        (d, buf.data().to_vec())
    };
    // Pad length 255 (RFC 4303 2.4 allows any up to 255): 37 + 255 + 2 = 294, not 4-aligned;
    // the AEAD transforms accept it since alignment is the sender's duty.
    let pad: Vec<u8> = (1..=255).collect();
    let (d, out) = run(crafted(&spec, 1, &inner, &pad, 4));
    assert_eq!(d, Disposition::Deliver);
    assert_eq!(out, inner);
    // Bad padding bytes.
    let (d, _) = run(crafted(&spec, 2, &inner, &[1, 2, 4], 4));
    assert_eq!(d, Disposition::Drop(DropReason::BadPadding));
    // Pad length past the payload.
    let mut short = crafted(&spec, 3, &[], &[], 4);
    // Re-craft with a pad length byte claiming more than there is.
    short.clear();
    let id = TransformId::AesGcm128;
    let enc = hex::decode(&key_for(spec.transform, "enc")[2..]).unwrap();
    let t = Transform::new(id, GcmBackend::RustCrypto, &enc, &[]).unwrap();
    let mut esp = vec![
        0, 0, 0x10, 0x01, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 9, 4,
    ];
    esp.extend_from_slice(&[0; 16]);
    t.seal(&mut esp, 3, false).unwrap();
    let (oa, ob) = spec.outer();
    let (d, _) = run(ip_packet(oa, ob, 50, &esp, false));
    assert_eq!(d, Disposition::Drop(DropReason::BadPadLength));
    // A dummy packet (next header 59) is dropped and counted.
    let (d, _) = run(crafted(&spec, 4, &[0xde, 0xad], &[1, 2, 3, 4, 5, 6], 59));
    assert_eq!(d, Disposition::Drop(DropReason::DummyPacket));
    // TFC padding after the inner packet in tunnel mode is tolerated.
    let mut tfc = inner.clone();
    tfc.extend_from_slice(&[0u8; 23]);
    let (d, out) = run(crafted(&spec, 5, &tfc, &[], 4));
    assert_eq!(d, Disposition::Deliver);
    assert_eq!(out, inner);
    // A next header the tunnel can not carry.
    let (d, _) = run(crafted(&spec, 6, &inner, &[1], 17));
    assert_eq!(d, Disposition::Drop(DropReason::BadInnerPacket));
}

#[test]
fn outbound_padding_is_monotonic_and_aligned() {
    for transform in ["aes-cbc-128-hmac-sha256", "null-hmac-sha256", "aes-gcm-128"] {
        let spec = PairSpec {
            transform,
            ..PairSpec::default()
        };
        let (mut a, _) = spec.stages();
        let (ha, hb) = spec.inner();
        let id = TransformId::from_name(transform).unwrap();
        for len in 0..40 {
            let pkt = udp_packet(ha, hb, 1, 2, len);
            let wire = send(&mut a, &pkt).data().to_vec();
            let esp_len = wire.len() - 20 - 8 - id.iv_len() - 16;
            assert_eq!(esp_len % id.block_align(), 0, "{transform} {len}");
            let pad = id.pad_len(pkt.len());
            assert_eq!(esp_len, pkt.len() + 2 + pad);
            if !id.encrypts() {
                // NULL encryption leaves the trailer readable on the wire:
                // padding 1, 2, 3..., pad length, next header 4 (IPv4).
                let trailer = &wire[wire.len() - 16 - pad - 2..wire.len() - 16];
                let expect: Vec<u8> = (1..=pad as u8).chain([pad as u8, 4]).collect();
                assert_eq!(trailer, &expect[..], "{transform} {len}");
            }
        }
    }
    // For the transforms that encrypt, scapy checks the padding bytes
    // (peer_interop.rs, padding_ok).
}

#[test]
fn nat_keepalive_and_ike_on_the_encapsulation_port() {
    let spec = PairSpec {
        udp_encap: Some((4500, 4500)),
        ..PairSpec::default()
    };
    let (_, mut b) = spec.stages();
    let (oa, ob) = spec.outer();
    let mut udp = vec![0x11, 0x94, 0x11, 0x94, 0, 9, 0, 0, 0xff];
    let mut buf = PacketBuf::from_slice(&ip_packet(oa, ob, 17, &udp, false));
    assert_eq!(
        b.handle_inbound(&mut buf, T0),
        Disposition::Drop(DropReason::NatKeepalive)
    );
    udp.truncate(8);
    udp.extend_from_slice(&[0, 0, 0, 0, 0x11, 0x22, 0x33, 0x44]);
    udp[5] = 16;
    let mut buf = PacketBuf::from_slice(&ip_packet(oa, ob, 17, &udp, false));
    assert_eq!(b.handle_inbound(&mut buf, T0), Disposition::ToIke);
    assert_eq!(b.counters().ike_passed, 1);
    udp.truncate(8);
    udp.extend_from_slice(&[1, 2, 3]);
    udp[5] = 11;
    let mut buf = PacketBuf::from_slice(&ip_packet(oa, ob, 17, &udp, false));
    assert_eq!(
        b.handle_inbound(&mut buf, T0),
        Disposition::Drop(DropReason::UdpEncapInvalid)
    );
}

#[test]
fn too_big_fragments_or_answers_with_icmp() {
    for tunnel_v6 in [false, true] {
        let spec = PairSpec {
            outer_v6: tunnel_v6,
            ..PairSpec::default()
        };
        let (mut a, mut b) = spec.stages();
        let (ha, hb) = spec.inner();
        // DF clear: the outer packet is fragmented and B reassembles it.
        let pkt = ip_packet(ha, hb, 17, &vec![7u8; 1480], false);
        let mut buf = PacketBuf::from_slice(&pkt);
        let n = match a.handle_outbound(&mut buf, T0) {
            Disposition::Fragmented(n) => n,
            d => panic!("{d:?}"),
        };
        assert!(n >= 2);
        let mut frags = Vec::new();
        let mut out = PacketBuf::new();
        while a.poll_transmit(&mut out) {
            assert!(out.len() <= 1500);
            frags.push(out.data().to_vec());
        }
        assert_eq!(frags.len(), n);
        // Deliver them in reverse order.
        let mut last = Disposition::Held;
        for f in frags.iter().rev() {
            let mut buf = PacketBuf::from_slice(f);
            last = b.handle_inbound(&mut buf, T0);
            if last == Disposition::Deliver {
                assert_eq!(buf.data(), &pkt[..]);
            }
        }
        assert_eq!(last, Disposition::Deliver);
        assert_eq!(b.counters().reassembled, 1);
    }
    // A large datagram (ESP of 8000 bytes in 6 fragments) reassembles too,
    // twice in a row (the reassembly buffer survives being handed out).
    let spec = PairSpec {
        tunnel: false,
        ..PairSpec::default()
    };
    let (mut a, mut b) = spec.stages();
    let (ha, hb) = spec.inner();
    for _ in 0..2 {
        let pkt = ip_packet(ha, hb, 17, &vec![9u8; 8000], false);
        let mut buf = PacketBuf::from_slice(&pkt);
        assert!(matches!(
            a.handle_outbound(&mut buf, T0),
            Disposition::Fragmented(6)
        ));
        let mut out = PacketBuf::new();
        let mut last = Disposition::Held;
        while a.poll_transmit(&mut out) {
            last = b.handle_inbound(&mut out, T0);
        }
        assert_eq!(last, Disposition::Deliver);
        assert_eq!(out.data(), &pkt[..]);
    }
    // DF set: ICMP Fragmentation Needed back to the sender, no sequence
    // number spent.
    let spec = PairSpec::default();
    let (mut a, _) = spec.stages();
    let (ha, hb) = spec.inner();
    let pkt = ip_packet(ha, hb, 17, &vec![7u8; 1480], true);
    let mut buf = PacketBuf::from_slice(&pkt);
    assert_eq!(a.handle_outbound(&mut buf, T0), Disposition::IcmpError);
    let icmp = buf.data();
    assert_eq!(icmp[9], 1);
    assert_eq!(&icmp[16..20], &pkt[12..16]);
    assert_eq!((icmp[20], icmp[21]), (3, 4));
    let mtu = u16::from_be_bytes([icmp[26], icmp[27]]) as usize;
    // A packet of exactly that size fits once protected.
    let fits = ip_packet(ha, hb, 17, &vec![7u8; mtu - 20], true);
    let out = send(&mut a, &fits);
    assert!(out.len() <= 1500 && out.len() > 1500 - 4, "{}", out.len());
    assert_eq!(a.query().sa_by_name("out").map(|s| s.spi), Some(0x1001));
    // IPv6 inner: Packet Too Big.
    let spec = PairSpec {
        inner_v6: true,
        ..PairSpec::default()
    };
    let (mut a, _) = spec.stages();
    let (ha, hb) = spec.inner();
    let pkt = ip_packet(ha, hb, 17, &vec![7u8; 1452], false);
    let mut buf = PacketBuf::from_slice(&pkt);
    assert_eq!(a.handle_outbound(&mut buf, T0), Disposition::IcmpError);
    assert_eq!(buf.data()[6], 58);
    assert_eq!(buf.data()[40], 2);
}

#[test]
fn esp_for_someone_else_follows_the_inbound_spd() {
    // A host behind the gateway runs its own IPsec: ESP with an SPI the
    // gateway does not know is subject to the inbound SPD.
    let spec = PairSpec::default();
    let text = spec.policy(false).replace(
        r#""inbound": ["#,
        r#""inbound": [{"name": "host-esp", "proto": "esp", "action": "bypass"},"#,
    );
    let set = bitsgw_ipsec::config::parse_policy(&text, "b.json").unwrap();
    let mut b = bitsgw_ipsec::IpsecStage::new(Default::default());
    set.apply(&mut b, T0).unwrap();
    let (ha, hb) = spec.inner();
    let esp = ip_packet(
        ha,
        hb,
        50,
        &[0, 0, 0x77, 0x77, 0, 0, 0, 1, 1, 2, 3, 4],
        false,
    );
    let mut buf = PacketBuf::from_slice(&esp);
    assert_eq!(b.handle_inbound(&mut buf, T0), Disposition::Deliver);
    assert_eq!(b.counters().inbound_bypassed, 1);
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        /// Any payload, any transform, mode, family pair, encapsulation and
        /// ESN setting: what A protects, B restores byte for byte.
        #[test]
        fn round_trip(transform in 0usize..8, tunnel: bool, inner_v6: bool, outer_v6: bool,
                      encap in 0usize..3, esn: bool, backend_ring: bool,
                      payload in prop::collection::vec(any::<u8>(), 0..1300),
                      count in 1usize..5) {
            let spec = PairSpec {
                transform: transforms()[transform],
                tunnel,
                inner_v6,
                outer_v6: if tunnel { outer_v6 } else { inner_v6 },
                udp_encap: [None, Some((4500, 4500)), Some((4501, 14500))][encap],
                esn,
                backend: if backend_ring { "ring" } else { "rustcrypto" },
                ..PairSpec::default()
            };
            let (mut a, mut b) = spec.stages();
            let (ha, hb) = spec.inner();
            let pkt = bitsgw_wire::craft::ip_packet(ha, hb, 253, &payload, false);
            for _ in 0..count {
                let mut buf = PacketBuf::from_slice(&pkt);
                prop_assert_eq!(a.handle_outbound(&mut buf, T0), Disposition::Forward);
                prop_assert_eq!(b.handle_inbound(&mut buf, T0), Disposition::Deliver);
                prop_assert_eq!(buf.data(), &pkt[..]);
            }
        }
    }
}

#[test]
fn reload_keeps_unchanged_sas_with_their_state() {
    let spec = PairSpec::default();
    let (mut a, mut b) = spec.stages();
    let (ha, hb) = spec.inner();
    let pkt = udp_packet(ha, hb, 1, 2, 10);
    let first = send(&mut a, &pkt).data().to_vec();
    let mut buf = PacketBuf::from_slice(&first);
    assert_eq!(b.handle_inbound(&mut buf, T0), Disposition::Deliver);
    // The same policies again: nothing changes, the window remembers.
    let same = bitsgw_ipsec::config::parse_policy(&spec.policy(false), "b.json").unwrap();
    let summary = same.reload(&mut b, T0).unwrap();
    assert_eq!(
        (summary.kept, summary.installed, summary.removed),
        (2, 0, 0)
    );
    let mut buf = PacketBuf::from_slice(&first);
    assert_eq!(
        b.handle_inbound(&mut buf, T0),
        Disposition::Drop(DropReason::ReplayDuplicate)
    );
    // New policies with an extra bypass entry and the outbound SA rekeyed:
    // the inbound SA (unchanged) keeps working without a gap.
    let text = spec
        .policy(false)
        .replace(r#""outbound": ["#, r#""outbound": [{"name": "dns", "proto": "udp", "remote_port": 53, "action": "bypass"},"#)
        .replacen(&key_for("aes-gcm-128", "enc")[2..12], "9999999999", 1);
    let changed = bitsgw_ipsec::config::parse_policy(&text, "b.json").unwrap();
    let summary = changed.reload(&mut b, T0).unwrap();
    assert_eq!(
        (summary.kept, summary.installed, summary.removed),
        (1, 1, 0)
    );
    let second = send(&mut a, &pkt).data().to_vec();
    let mut buf = PacketBuf::from_slice(&second);
    assert_eq!(b.handle_inbound(&mut buf, T0), Disposition::Deliver);
    // Policies without the inbound SA's entry: the SA goes.
    let text = spec.policy(false).replace(
        r#", "action": "protect", "sa": "in"}"#,
        r#", "action": "discard"}"#,
    );
    let text = text.replacen(
        r#"{"name": "in", "direction": "inbound""#,
        r#"{"name": "in-unused", "direction": "outbound""#,
        1,
    );
    let fewer = bitsgw_ipsec::config::parse_policy(&text, "b.json").unwrap();
    let summary = fewer.reload(&mut b, T0).unwrap();
    // "out" goes back to its first key, "in-unused" is new, "in" is gone.
    assert_eq!((summary.installed, summary.removed), (2, 1));
    assert!(b.query().sa_by_name("in").is_none());
    let mut buf = PacketBuf::from_slice(send(&mut a, &pkt).data());
    assert_eq!(
        b.handle_inbound(&mut buf, T0),
        Disposition::Drop(DropReason::UnknownSpi)
    );
}

/// Renaming an inbound SA while keeping its SPI (issue 16): the renamed SA
/// takes the SPI over, the SPD's entry has it, and traffic flows on.
#[test]
fn reload_renaming_an_inbound_sa_with_its_spi_replaces_it() {
    let spec = PairSpec::default();
    let (mut a, mut b) = spec.stages();
    let (ha, hb) = spec.inner();
    let pkt = udp_packet(ha, hb, 1, 2, 10);
    let text = spec
        .policy(false)
        .replace(r#""sa": "in"}"#, r#""sa": "in-renamed"}"#)
        .replace(r#"{"name": "in", "#, r#"{"name": "in-renamed", "#);
    let renamed = bitsgw_ipsec::config::parse_policy(&text, "b.json").unwrap();
    let summary = renamed.reload(&mut b, T0).unwrap();
    assert_eq!(
        (summary.kept, summary.installed, summary.removed),
        (1, 1, 1)
    );
    assert!(b.query().sa_by_name("in").is_none());
    let sa = b.query().sa_by_name("in-renamed").unwrap();
    assert_eq!(sa.spi, 0x1001);
    assert_eq!(sa.selectors.len(), 1, "the SPD entry's selectors");
    assert_eq!(b.query().inbound_sa(0x1001).unwrap().name, "in-renamed");
    let mut buf = PacketBuf::from_slice(send(&mut a, &pkt).data());
    assert_eq!(b.handle_inbound(&mut buf, T0), Disposition::Deliver);
    assert_eq!(buf.data(), &pkt[..]);
}

/// A reload that can not be applied changes nothing: not the SPD, not
/// the SAs (before, the SPD was replaced and the SAs half installed).
#[test]
fn reload_refused_leaves_the_stage_as_it_was() {
    let spec = PairSpec::default();
    let (mut a, mut b) = spec.stages();
    let (ha, hb) = spec.inner();
    let pkt = udp_packet(ha, hb, 1, 2, 10);
    let first = send(&mut a, &pkt).data().to_vec();
    let mut buf = PacketBuf::from_slice(&first);
    assert_eq!(b.handle_inbound(&mut buf, T0), Disposition::Deliver);
    let generation = b.query().generation();
    // An extra SPD entry, the outbound SA rekeyed, and the inbound SA
    // changed to a key its transform refuses.
    let text = spec
        .policy(false)
        .replace(r#""outbound": ["#, r#""outbound": [{"name": "dns", "proto": "udp", "remote_port": 53, "action": "bypass"},"#)
        .replacen(&key_for("aes-gcm-128", "enc")[2..12], "9999999999", 1);
    let mut bad = bitsgw_ipsec::config::parse_policy(&text, "b.json").unwrap();
    let inbound = bad.sas.iter_mut().find(|s| s.name == "in").unwrap();
    inbound.enc_key = zeroize::Zeroizing::new(vec![0x11; 3]);
    let err = bad.reload(&mut b, T0).unwrap_err();
    assert_eq!(err.entry, r#"sad[1] "in""#, "{err}");
    assert_eq!(b.query().generation(), generation);
    assert_eq!(b.spd(Direction::Outbound).len(), 2);
    // The inbound SA kept its window, the outbound SA its key and counter.
    let mut buf = PacketBuf::from_slice(&first);
    assert_eq!(
        b.handle_inbound(&mut buf, T0),
        Disposition::Drop(DropReason::ReplayDuplicate)
    );
    let mut buf = PacketBuf::from_slice(send(&mut b, &udp_packet(hb, ha, 2, 1, 10)).data());
    assert_eq!(a.handle_inbound(&mut buf, T0), Disposition::Deliver);
}

/// An SA bundle (RFC 4301 4.5): ESP in ESP, the first SA innermost.
#[test]
fn sa_bundle_nests_esp_and_unwraps_it() {
    let sa = |name: &str, dir: &str, spi: u32, local: &str, remote: &str, t: &str, key: &str| {
        format!(
            r#"{{"name": "{name}", "direction": "{dir}", "spi": {spi}, "mode": "tunnel",
                "tunnel": {{"local": "{local}", "remote": "{remote}"}}, "transform": "{t}", "enc_key": "{key}"}}"#
        )
    };
    // Keys per SA: A to B, then B to A (one key on two SAs is refused).
    let one_octet_off = |k: String| format!("{}5a{}", &k[..12], &k[14..]);
    let ab = (
        key_for("aes-gcm-128", "enc"),
        key_for("chacha20-poly1305", "enc"),
    );
    let ba = (one_octet_off(ab.0.clone()), one_octet_off(ab.1.clone()));
    let side = |me: &str, peer: &str, a: bool| {
        let ((k1, k2), (k1_in, k2_in)) = if a { (&ab, &ba) } else { (&ba, &ab) };
        let (o1, o2, i1, i2) = if a {
            (4001, 4002, 5001, 5002)
        } else {
            (5001, 5002, 4001, 4002)
        };
        let (lnet, rnet) = if a {
            ("192.0.2.0/24", "198.51.100.0/24")
        } else {
            ("198.51.100.0/24", "192.0.2.0/24")
        };
        format!(
            r#"{{"danger_static_keys_for_counter_mode": true, "spd": {{
              "outbound": [{{"name": "b", "local": "{lnet}", "remote": "{rnet}", "action": "protect", "sa": ["o-inner", "o-outer"]}}],
              "inbound":  [{{"name": "b", "local": "{lnet}", "remote": "{rnet}", "action": "protect", "sa": ["i-inner", "i-outer"]}}]}},
              "sad": [{}, {}, {}, {}]}}"#,
            sa("o-inner", "outbound", o1, me, peer, "aes-gcm-128", k1),
            sa("o-outer", "outbound", o2, me, peer, "chacha20-poly1305", k2),
            sa("i-inner", "inbound", i1, me, peer, "aes-gcm-128", k1_in),
            sa(
                "i-outer",
                "inbound",
                i2,
                me,
                peer,
                "chacha20-poly1305",
                k2_in
            ),
        )
    };
    let load = |text: String| {
        let set = bitsgw_ipsec::config::parse_policy(&text, "bundle.json").unwrap();
        let mut s = bitsgw_ipsec::IpsecStage::new(Default::default());
        set.apply(&mut s, T0).unwrap();
        s
    };
    let mut a = load(side("203.0.113.1", "203.0.113.2", true));
    let mut b = load(side("203.0.113.2", "203.0.113.1", false));
    let pkt = udp_packet(
        "192.0.2.7".parse().unwrap(),
        "198.51.100.9".parse().unwrap(),
        1,
        2,
        100,
    );
    let mut buf = send(&mut a, &pkt);
    // Outer ESP carries the outer SA's SPI; inside it, IPv4 with ESP again.
    let wire = buf.data().to_vec();
    assert_eq!(wire[9], 50);
    assert_eq!(u32::from_be_bytes(wire[20..24].try_into().unwrap()), 4002);
    assert_eq!(
        b.handle_inbound(&mut buf, T0),
        Disposition::Deliver,
        "{:?}",
        b.counters()
    );
    assert_eq!(buf.data(), &pkt[..]);
    // Query: the SPI on the wire is the outermost SA's.
    let q = a.query();
    let e = q.spd_entry(Direction::Outbound, "b").unwrap();
    assert_eq!(q.outbound_sa(e).unwrap().spi, 4002);
}

/// Under sequence leases, an outbound SA that a reload installs (here the
/// SA removed and the same set reloaded, as `ctl remove-sa` and SIGHUP do)
/// starts with nothing leased, like one installed at start: it sends
/// nothing, and asks, until its lease is granted, so it can not start
/// again from sequence number 1 under its old key.
#[test]
fn an_sa_a_reload_installs_waits_for_its_lease() {
    let spec = PairSpec::default();
    let set = bitsgw_ipsec::config::parse_policy(&spec.policy(true), "a.json").unwrap();
    let mut a = bitsgw_ipsec::IpsecStage::new(bitsgw_ipsec::StageConfig {
        sequence_leases: true,
        ..Default::default()
    });
    set.apply(&mut a, T0).unwrap();
    let grant_all = |a: &mut bitsgw_ipsec::IpsecStage, floor: u64| {
        let mut reqs = Vec::new();
        a.take_lease_requests(&mut reqs);
        assert_eq!(reqs.len(), 1);
        assert!(a.grant_lease(reqs[0].sa, floor, floor + 1000));
    };
    grant_all(&mut a, 0);
    let (ha, hb) = spec.inner();
    let pkt = udp_packet(ha, hb, 1, 2, 10);
    let mut buf = PacketBuf::from_slice(&pkt);
    assert_eq!(a.handle_outbound(&mut buf, T0), Disposition::Forward);
    let out = a.sad().by_name("out").unwrap();
    a.remove_sa(out);
    set.reload(&mut a, T0).unwrap();
    assert!(a.wants_leases());
    let mut buf = PacketBuf::from_slice(&pkt);
    assert_eq!(
        a.handle_outbound(&mut buf, T0),
        Disposition::Drop(DropReason::SeqLeaseExhausted)
    );
    grant_all(&mut a, 1000);
    let mut buf = PacketBuf::from_slice(&pkt);
    assert_eq!(a.handle_outbound(&mut buf, T0), Disposition::Forward);
    let seq = u32::from_be_bytes(buf.data()[24..28].try_into().unwrap());
    assert!(seq > 1000, "sequence number {seq}");
}
