//! The home agent's protocol module on its own (RFC 6275 9.5.1, 10.3.1,
//! 10.3.2; RFC 5555 4.3.1): Binding Updates as the IPsec stage delivers
//! them, and the Binding Acknowledgements and Errors it answers with,
//! before they go back through IPsec.
#![allow(clippy::unwrap_used)]

mod common;

use bitsgw_mobility::counters::{MobilityDrop, MobilityEvent};
use bitsgw_mobility::ha::{Delivered, HaConfig, HomeAgent, ServedNode};
use bitsgw_mobility::keying::KeyManagement;
use bitsgw_mobility::packet::mh_packet;
use bitsgw_wire::mh::{
    ba_status, be_status, ipv4_ack_status, BindingUpdate, Message, MhOption, MhPacket, MhRepr,
};
use bitsgw_wire::{PacketBuf, Timestamp};
use core::time::Duration;
use std::net::Ipv4Addr;

use common::{mh_bytes, v6};

fn v4(s: &str) -> [u8; 4] {
    s.parse::<Ipv4Addr>().unwrap().octets()
}

const HA: &str = "2001:db8:1::1";
const HOA: &str = "2001:db8:1::100";
const HOA2: &str = "2001:db8:1::200";
const COA: &str = "2001:db8:2::100";

fn agent() -> HomeAgent {
    agent_with_key_management(false)
}

fn agent_with_key_management(key_management_mobility: bool) -> HomeAgent {
    HomeAgent::new(HaConfig {
        address: v6(HA),
        address_v4: Some(v4("203.0.113.1")),
        home_prefixes: vec![(v6("2001:db8:1::"), 64)],
        nodes: vec![
            ServedNode {
                home: v6(HOA),
                home_v4: None,
            },
            ServedNode {
                home: v6(HOA2),
                home_v4: Some(v4("192.0.2.200")),
            },
        ],
        ipv4_pool: vec![v4("192.0.2.150"), v4("192.0.2.151")],
        ipv4_prefix_len: 24,
        max_lifetime: Duration::from_secs(600),
        nat_refresh: Duration::from_secs(110),
        force_udp: false,
        key_management_mobility,
    })
}

fn bu(seq: u16, lifetime_units: u16, ack: bool) -> Message {
    Message::BindingUpdate(BindingUpdate {
        seq,
        ack,
        home_registration: true,
        link_local_compat: false,
        key_mgmt_compat: false,
        lifetime_units,
    })
}

/// A BU as IPsec delivers it from an IPv6 care-of address: source the
/// home address, the Alternate Care-of Address option inside.
fn deliver(
    ha: &mut HomeAgent,
    home: &str,
    msg: &Message,
    opts: &[MhOption<'_>],
    now: u64,
) -> Delivered {
    let pkt = mh_packet(v6(home), v6(HA), msg, opts);
    ha.handle_delivered(&PacketBuf::from_slice(&pkt), Timestamp::from_secs(now))
}

/// The answers waiting, as (message, options) of each.
fn answers(ha: &mut HomeAgent) -> Vec<(Vec<u8>, Message, Vec<String>)> {
    let mut out = Vec::new();
    let mut buf = PacketBuf::new();
    while ha.poll_transmit(&mut buf) {
        let p = buf.data().to_vec();
        let mh = MhPacket::new_checked(&p[40..]).unwrap();
        assert!(mh.verify_checksum(
            &p[8..24].try_into().unwrap(),
            &p[24..40].try_into().unwrap()
        ));
        let repr = MhRepr::parse(&mh).unwrap();
        let opts = repr.options().map(|o| format!("{o:?}")).collect();
        out.push((p[24..40].to_vec(), repr.message, opts));
    }
    out
}

fn ba_of(a: &(Vec<u8>, Message, Vec<String>)) -> (u8, u16, u16) {
    match a.1 {
        Message::BindingAck(b) => (b.status, b.seq, b.lifetime_units),
        ref m => panic!("not a BA: {m:?}"),
    }
}

fn coa_opt() -> [MhOption<'static>; 1] {
    [MhOption::AlternateCareOf(v6(COA))]
}

/// RFC 6275 9.5.1: the sequence number matrix against an existing
/// binding with number 100 (and one at 65535 for the wrap).
#[test]
fn sequence_number_matrix() {
    let cases: &[(u16, u16, u8, u16, &str)] = &[
        (100, 101, ba_status::ACCEPTED, 101, "+1"),
        (100, 100 + 32767, ba_status::ACCEPTED, 100 + 32767, "+32767"),
        (
            100,
            100 + 32768,
            ba_status::SEQ_OUT_OF_WINDOW,
            100,
            "+32768",
        ),
        (100, 100, ba_status::SEQ_OUT_OF_WINDOW, 100, "equal"),
        (100, 99, ba_status::SEQ_OUT_OF_WINDOW, 100, "less"),
        (65535, 0, ba_status::ACCEPTED, 0, "wrap 65535 -> 0"),
        (65535, 5, ba_status::ACCEPTED, 5, "wrap 65535 -> 5"),
        (5, 65535, ba_status::SEQ_OUT_OF_WINDOW, 5, "wrap backwards"),
    ];
    for &(first, next, status, ba_seq, what) in cases {
        let mut ha = agent();
        assert_eq!(
            deliver(&mut ha, HOA, &bu(first, 10, true), &coa_opt(), 1),
            Delivered::Consumed
        );
        assert_eq!(ba_of(&answers(&mut ha)[0]).0, ba_status::ACCEPTED, "{what}");
        assert_eq!(
            deliver(&mut ha, HOA, &bu(next, 10, true), &coa_opt(), 2),
            Delivered::Consumed
        );
        let a = answers(&mut ha);
        assert_eq!(a.len(), 1, "{what}");
        let (st, seq, _) = ba_of(&a[0]);
        assert_eq!((st, seq), (status, ba_seq), "{what}");
        assert_eq!(
            ha.bindings().get(&v6(HOA)).unwrap().seq,
            if status == 0 { next } else { first },
            "{what}"
        );
    }
}

/// RFC 6275 10.3.1: the statuses a home agent answers with.
#[test]
fn status_codes() {
    let mut ha = agent();
    // 132: not in a home prefix.
    deliver(&mut ha, "2001:db8:9::1", &bu(1, 10, true), &coa_opt(), 1);
    // 133: in the prefix, but not a node this home agent serves.
    deliver(&mut ha, "2001:db8:1::999", &bu(1, 10, true), &coa_opt(), 1);
    // 129: not a home registration (no H flag): no route optimisation here.
    let mut no_h = bu(1, 10, true);
    if let Message::BindingUpdate(b) = &mut no_h {
        b.home_registration = false;
    }
    deliver(&mut ha, HOA, &no_h, &coa_opt(), 1);
    let st: Vec<u8> = answers(&mut ha).iter().map(|a| ba_of(a).0).collect();
    assert_eq!(
        st,
        vec![
            ba_status::NOT_HOME_SUBNET,
            ba_status::NOT_HOME_AGENT,
            ba_status::ADMIN_PROHIBITED
        ]
    );
    assert!(ha.bindings().is_empty());
    assert_eq!(ha.counters().events(MobilityEvent::BuRejected), 3);
}

/// RFC 6275 10.3.1: a BA only when A is set, or on error.
#[test]
fn ba_only_when_asked_or_on_error() {
    let mut ha = agent();
    deliver(&mut ha, HOA, &bu(1, 10, false), &coa_opt(), 1);
    assert!(answers(&mut ha).is_empty(), "accepted without A: no BA");
    assert!(ha.bindings().get(&v6(HOA)).is_some());
    deliver(&mut ha, HOA, &bu(1, 10, false), &coa_opt(), 2);
    let a = answers(&mut ha);
    assert_eq!(
        ba_of(&a[0]).0,
        ba_status::SEQ_OUT_OF_WINDOW,
        "an error is always answered"
    );
}

/// Lifetimes: capped by configuration, expiring by `now`; lifetime 0 and
/// CoA = HoA de-register (RFC 6275 10.3.1, 10.3.2).
#[test]
fn lifetimes_and_deregistration() {
    let mut ha = agent();
    // 4000 units = 16000 s asked, 600 s granted (150 units).
    deliver(&mut ha, HOA, &bu(1, 4000, true), &coa_opt(), 10);
    assert_eq!(ba_of(&answers(&mut ha)[0]).2, 150);
    let b = ha.bindings().get(&v6(HOA)).unwrap();
    assert_eq!(b.expires, Timestamp::from_secs(610));
    assert_eq!(ha.poll_timeout(), Some(Timestamp::from_secs(610)));
    ha.handle_timeout(Timestamp::from_secs(609));
    assert!(ha.bindings().get(&v6(HOA)).is_some());
    ha.handle_timeout(Timestamp::from_secs(610));
    assert!(ha.bindings().get(&v6(HOA)).is_none());
    assert_eq!(ha.counters().events(MobilityEvent::BindingExpired), 1);
    // Lifetime 0 de-registers.
    deliver(&mut ha, HOA, &bu(2, 10, true), &coa_opt(), 700);
    deliver(&mut ha, HOA, &bu(3, 0, true), &coa_opt(), 701);
    let a = answers(&mut ha);
    assert_eq!(ba_of(&a[1]), (ba_status::ACCEPTED, 3, 0));
    assert!(ha.bindings().is_empty());
    // CoA = HoA de-registers too (the node is home).
    deliver(&mut ha, HOA, &bu(4, 10, true), &coa_opt(), 702);
    deliver(
        &mut ha,
        HOA,
        &bu(5, 10, true),
        &[MhOption::AlternateCareOf(v6(HOA))],
        703,
    );
    assert!(ha.bindings().is_empty());
    assert_eq!(ha.counters().events(MobilityEvent::BindingDeleted), 2);
}

/// RFC 6275 10.3.2: a de-registration (lifetime 0, or care-of address =
/// home address) for a home address with no binding is rejected with 133,
/// the bytes of the BA checked; nothing is created or deleted.
#[test]
fn deregistration_without_a_binding_is_rejected_with_133() {
    let mut ha = agent();
    deliver(&mut ha, HOA, &bu(7, 0, true), &coa_opt(), 10);
    // The BA on the wire, to the care-of address the BU came from: MH
    // type 6, status 133 at offset 6 of the MH, the sequence number at 8
    // (RFC 6275 6.1.8).
    let mut buf = PacketBuf::new();
    assert!(ha.poll_transmit(&mut buf));
    let mh = &buf.data()[40..];
    assert_eq!((mh[2], mh[6]), (6, 133));
    assert_eq!(u16::from_be_bytes([mh[8], mh[9]]), 7);
    assert!(!ha.poll_transmit(&mut buf));
    deliver(
        &mut ha,
        HOA,
        &bu(8, 10, true),
        &[MhOption::AlternateCareOf(v6(HOA))],
        11,
    );
    let a = answers(&mut ha);
    assert_eq!(a.len(), 1);
    assert_eq!(ba_of(&a[0]), (ba_status::NOT_HOME_AGENT, 8, 0));
    assert!(ha.bindings().is_empty());
    assert_eq!(ha.counters().events(MobilityEvent::BindingDeleted), 0);
    assert_eq!(ha.counters().events(MobilityEvent::BuRejected), 2);
    // With a binding, the same de-registration is accepted.
    deliver(&mut ha, HOA, &bu(9, 10, true), &coa_opt(), 12);
    deliver(&mut ha, HOA, &bu(10, 0, true), &coa_opt(), 13);
    let a = answers(&mut ha);
    assert_eq!(ba_of(&a[1]), (ba_status::ACCEPTED, 10, 0));
    assert!(ha.bindings().is_empty());
}

/// RFC 6275 9.2: an unknown MH type is answered with a Binding Error,
/// status 2; a BA sent to the home agent is not for it.
#[test]
fn unknown_mh_type_gets_binding_error() {
    let mut ha = agent();
    let mut pkt = mh_packet(v6(HOA), v6(HA), &bu(1, 10, true), &[]);
    // Turn the BU into MH type 42, checksum refilled.
    pkt[40 + 2] = 42;
    {
        let mut mh = MhPacket::new_checked(&mut pkt[40..]).unwrap();
        mh.fill_checksum(&v6(HOA), &v6(HA));
    }
    assert_eq!(
        ha.handle_delivered(&PacketBuf::from_slice(&pkt), Timestamp::ZERO),
        Delivered::Consumed
    );
    let a = answers(&mut ha);
    assert!(
        matches!(a[0].1, Message::BindingError { status, .. } if status == be_status::UNKNOWN_MH_TYPE)
    );
    assert_eq!(a[0].0, v6(HOA).to_vec(), "to the sender");
    let ba = mh_packet(
        v6(HOA),
        v6(HA),
        &Message::BindingAck(bitsgw_wire::mh::BindingAck {
            status: 0,
            key_mgmt_compat: false,
            seq: 1,
            lifetime_units: 1,
        }),
        &[],
    );
    assert_eq!(
        ha.handle_delivered(&PacketBuf::from_slice(&ba), Timestamp::ZERO),
        Delivered::Drop(MobilityDrop::UnexpectedMh)
    );
}

/// RFC 5555 3.1.1, 4.3.1: IPv4 home addresses: the configured one for
/// 0.0.0.0, from the pool for a node without one, refused when taken.
#[test]
fn ipv4_home_address_assignment() {
    let mut ha = agent();
    let ask = |a: &str| {
        [
            MhOption::AlternateCareOf(v6(COA)),
            MhOption::Ipv4HomeAddress {
                prefix_len: 0,
                request_prefix: false,
                addr: v4(a),
            },
        ]
    };
    deliver(&mut ha, HOA2, &bu(1, 10, true), &ask("0.0.0.0"), 1);
    deliver(&mut ha, HOA, &bu(1, 10, true), &ask("0.0.0.0"), 1);
    deliver(&mut ha, HOA, &bu(2, 10, true), &ask("192.0.2.200"), 2);
    let a = answers(&mut ha);
    assert!(
        a[0].2.iter().any(|o| o.contains("Ipv4AddressAck")
            && o.contains("[192, 0, 2, 200]")
            && o.contains("status: 0")),
        "{:?}",
        a[0].2
    );
    assert!(
        a[1].2
            .iter()
            .any(|o| o.contains("[192, 0, 2, 150]") && o.contains("status: 0")),
        "{:?}",
        a[1].2
    );
    let incorrect = format!("status: {}", ipv4_ack_status::INCORRECT_IPV4_HOA);
    assert!(
        a[2].2.iter().any(|o| o.contains(&incorrect)),
        "{:?}",
        a[2].2
    );
    assert_eq!(
        ba_of(&a[2]).0,
        ba_status::ACCEPTED,
        "the IPv6 binding still holds"
    );
    assert_eq!(
        ha.bindings().get(&v6(HOA)).unwrap().home_v4,
        Some(v4("192.0.2.150"))
    );
    assert!(ha.is_away(&v4("192.0.2.150")));
    // De-registration gives the pool address back.
    deliver(&mut ha, HOA, &bu(3, 0, true), &[], 3);
    assert!(!ha.is_away(&v4("192.0.2.150")));
}

/// Malformed Mobility Headers: bad checksum, bad length, truncated or
/// misaligned options, a payload piggybacked (payload proto not 59): a
/// counted drop, never a panic, never an answer.
#[test]
fn malformed_mobility_headers_are_counted_drops() {
    let good = mh_packet(v6(HOA), v6(HA), &bu(1, 10, true), &coa_opt());
    let mut cases: Vec<(&str, Vec<u8>, MobilityDrop)> = Vec::new();
    let mut p = good.clone();
    p[40 + 4] ^= 0xff;
    cases.push(("bad checksum", p, MobilityDrop::MhBadChecksum));
    let mut p = good.clone();
    p[40 + 1] = 30; // header length past the packet
    cases.push(("length past the end", p, MobilityDrop::MhMalformed));
    let mut p = good.clone();
    p[40] = 6; // payload proto TCP: piggybacking is not allowed (RFC 6275 6.1.1)
    cases.push(("piggybacked payload", p, MobilityDrop::MhMalformed));
    let mut p = good.clone();
    // An option whose length runs past the header: first option byte after
    // the 12 bytes of BU (6 fixed + 6 fields).
    let opt_at = 40 + 12;
    p[opt_at] = 3;
    p[opt_at + 1] = 200;
    cases.push(("option past the end", p, MobilityDrop::MhMalformed));
    // The Alternate Care-of Address option moved off its 8n+6 alignment:
    // the PadN(2) in front of it becomes a Pad1, and a Pad1 at the end
    // keeps the length.
    let misaligned = {
        let mut p = good.clone();
        let opts = 40 + 12;
        assert_eq!(
            p[opts..opts + 4],
            [1, 0, 3, 16],
            "PadN(2), then AltCoA at 14 = 8+6"
        );
        p.remove(opts);
        p[opts] = 0;
        p.push(0);
        p
    };
    cases.push(("misaligned option", misaligned, MobilityDrop::MhMalformed));
    for (what, mut p, want) in cases {
        // The view fills the checksum over the length the header claims, so
        // only cases whose length is sound get a fresh one.
        if want != MobilityDrop::MhBadChecksum && what != "length past the end" {
            let mut mh = MhPacket::new_unchecked(&mut p[40..]);
            mh.fill_checksum(&v6(HOA), &v6(HA));
        }
        let mut ha = agent();
        let d = ha.handle_delivered(&PacketBuf::from_slice(&p), Timestamp::ZERO);
        assert_eq!(d, Delivered::Drop(want), "{what}");
        assert_eq!(ha.counters().drops(want), 1, "{what}");
        assert!(answers(&mut ha).is_empty(), "{what}: no answer");
        assert!(ha.bindings().is_empty(), "{what}");
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(20_000))]
    /// Arbitrary bytes after an IPv6 header to the home agent, as MH or
    /// ICMPv6: the protocol module never panics, and whatever it does not
    /// take is counted.
    #[test]
    fn arbitrary_delivered_packets_never_panic(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..120), proto in proptest::sample::select(vec![135u8, 58])) {
        let mut ha = agent();
        let p = bitsgw_wire::craft::ip_packet(v6(HOA).into(), v6(HA).into(), proto, &body, false);
        let d = ha.handle_delivered(&PacketBuf::from_slice(&p), Timestamp::ZERO);
        if let Delivered::Drop(r) = d {
            proptest::prop_assert_eq!(ha.counters().drops(r), 1);
        }
    }
}

/// RFC 6275 10.6.2: after the home prefixes change, a registered node's
/// next BA has status 1 (accepted, prefix discovery necessary), once.
#[test]
fn changed_home_prefixes_give_status_1_once() {
    let mut ha = agent();
    deliver(&mut ha, HOA, &bu(1, 10, true), &coa_opt(), 1);
    ha.set_home_prefixes(vec![(v6("2001:db8:1::"), 64), (v6("2001:db8:1:1::"), 64)]);
    deliver(&mut ha, HOA, &bu(2, 10, true), &coa_opt(), 2);
    deliver(&mut ha, HOA, &bu(3, 10, true), &coa_opt(), 3);
    let st: Vec<u8> = answers(&mut ha).iter().map(|a| ba_of(a).0).collect();
    assert_eq!(
        st,
        vec![
            ba_status::ACCEPTED,
            ba_status::ACCEPTED_PREFIX_DISCOVERY,
            ba_status::ACCEPTED
        ]
    );
}

/// A BU with K (RFC 6275 6.1.7).
fn bu_with_k(seq: u16) -> Message {
    Message::BindingUpdate(BindingUpdate {
        seq,
        ack: true,
        home_registration: true,
        link_local_compat: false,
        key_mgmt_compat: true,
        lifetime_units: 100,
    })
}

/// The one answer waiting, as the Mobility Header on the wire.
fn ba_bytes(ha: &mut HomeAgent) -> Vec<u8> {
    let mut buf = PacketBuf::new();
    assert!(ha.poll_transmit(&mut buf));
    assert!(!ha.poll_transmit(&mut buf), "one answer");
    buf.data()[40..].to_vec()
}

/// The BA `HA` sends `HOA`, status 0: `flags` (0x80 is K), sequence
/// number, lifetime, PadN(2), spelled out.
fn ba_mh(flags: u8, seq: u16, units: u16) -> Vec<u8> {
    let mut d = vec![0, flags];
    d.extend_from_slice(&seq.to_be_bytes());
    d.extend_from_slice(&units.to_be_bytes());
    d.extend_from_slice(&[1, 2, 0, 0]);
    mh_bytes(HA, HOA, 6, &d)[40..].to_vec()
}

/// RFC 6275 6.1.8, 10.3.1, 10.3.2: a home agent whose key management
/// survives movement echoes K in the BA to a BU with K, and when the
/// care-of address of a binding changes under K its IKE SA follows; a BU
/// without K gets none, and the IKE SA is expected from the new care-of
/// address; a de-registration clears K; a home agent without the
/// capability never sets it.
#[test]
fn rfc6275_10_3_1_k_bit_echoed_in_the_ba_and_the_ike_sa_follows() {
    const COA2: &str = "2001:db8:3::100";
    let mut ha = agent_with_key_management(true);
    deliver(&mut ha, HOA, &bu_with_k(1), &coa_opt(), 10);
    assert_eq!(ba_bytes(&mut ha), ba_mh(0x80, 1, 100));
    // A first registration: the IKE SA is where it came from (a move
    // that changes nothing).
    assert_eq!(
        ha.poll_key_management(),
        Some(KeyManagement::Move {
            home: v6(HOA),
            home_agent: HA.parse().unwrap(),
            care_of: COA.parse().unwrap()
        })
    );
    deliver(
        &mut ha,
        HOA,
        &bu_with_k(2),
        &[MhOption::AlternateCareOf(v6(COA2))],
        11,
    );
    assert_eq!(ba_bytes(&mut ha), ba_mh(0x80, 2, 100));
    assert_eq!(
        ha.poll_key_management(),
        Some(KeyManagement::Move {
            home: v6(HOA),
            home_agent: HA.parse().unwrap(),
            care_of: COA2.parse().unwrap()
        })
    );
    assert_eq!(ha.poll_key_management(), None);
    // Without K: no K back; the mobile node establishes its IKE SA again
    // from the new care-of address, where it is expected.
    deliver(&mut ha, HOA, &bu(3, 100, true), &coa_opt(), 12);
    assert_eq!(ba_bytes(&mut ha), ba_mh(0, 3, 100));
    assert_eq!(
        ha.poll_key_management(),
        Some(KeyManagement::Expect {
            home: v6(HOA),
            home_agent: HA.parse().unwrap(),
            care_of: COA.parse().unwrap()
        })
    );
    // De-registration: K cleared.
    let dereg = Message::BindingUpdate(BindingUpdate {
        lifetime_units: 0,
        ..match bu_with_k(4) {
            Message::BindingUpdate(b) => b,
            _ => unreachable!(),
        }
    });
    deliver(&mut ha, HOA, &dereg, &coa_opt(), 13);
    assert_eq!(ba_bytes(&mut ha), ba_mh(0, 4, 0));
    assert_eq!(ha.poll_key_management(), None);
    // A home agent without the capability.
    let mut plain = agent_with_key_management(false);
    deliver(&mut plain, HOA, &bu_with_k(1), &coa_opt(), 10);
    assert_eq!(ba_bytes(&mut plain), ba_mh(0, 1, 100));
    deliver(
        &mut plain,
        HOA,
        &bu_with_k(2),
        &[MhOption::AlternateCareOf(v6(COA2))],
        11,
    );
    assert_eq!(ba_bytes(&mut plain), ba_mh(0, 2, 100));
    // Never a move: the IKE SA is expected from each care-of address.
    let expected: Vec<_> = std::iter::from_fn(|| plain.poll_key_management()).collect();
    assert_eq!(
        expected,
        [COA, COA2].map(|c| KeyManagement::Expect {
            home: v6(HOA),
            home_agent: HA.parse().unwrap(),
            care_of: c.parse().unwrap()
        })
    );
}

/// RFC 4301 5.1, RFC 4877 4.4: IKE to the home agent's own addresses is
/// never a tunnel's packet: the tunnel stage passes it on unchanged
/// (where the appliance's host stack does not take it first), over IPv6
/// and over IPv4 on either port, counting nothing.
#[test]
fn the_tunnel_stage_never_takes_ike_to_the_home_agent() {
    let mut ha = agent();
    for pkt in [
        common::ike(COA, HA, 500, 500),
        common::ike("203.0.113.130", "203.0.113.1", 41000, 4500),
        common::ike("203.0.113.70", "203.0.113.1", 500, 500),
    ] {
        let mut buf = PacketBuf::from_slice(&pkt);
        assert_eq!(
            ha.handle_network(&common::SeedPolicy, &mut buf, Timestamp::from_secs(1)),
            Ok(())
        );
        assert_eq!(buf.data(), &pkt[..], "passed on unchanged");
    }
    assert_eq!(ha.counters().total_drops(), 0);
    assert!(ha.counters().all_events().all(|(_, n)| n == 0));
}
