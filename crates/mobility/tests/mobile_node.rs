//! The mobile node's protocol module on its own, as the home agent's has
//! its matrix in `home_agent.rs`: Binding Acknowledgements with every
//! status (RFC 6275 6.1.8, 11.7.3), with a wrong sequence number, Binding
//! Errors (11.3.6), Binding Refresh Requests (11.7.4), retransmission and
//! back-off (11.8), sequence number wrap (9.5.1), lifetime expiry, and the
//! IPv4 Address Acknowledgement of RFC 5555 (3.2.1). Packets are taken
//! before and after IPsec (the plaintext the protocol module emits and
//! takes), and every one that leaves is checked byte for byte.
#![allow(clippy::unwrap_used)]

mod common;

use bitsgw_mobility::counters::{MobilityDrop, MobilityEvent};
use bitsgw_mobility::ha::Delivered;
use bitsgw_mobility::keying::KeyManagement;
use bitsgw_mobility::mn::{Attachment, MnConfig, MnEvent, MobileNode};
use bitsgw_mobility::packet::mh_packet;
use bitsgw_wire::mh::{ba_status, be_status, ipv4_ack_status, BindingAck, Message, MhOption};
use bitsgw_wire::{PacketBuf, Timestamp};
use common::{mh_bytes, v6, SeedPolicy, BA_SPI, DATA_SPI};
use core::time::Duration;
use std::net::Ipv4Addr;

const HA: &str = "2001:db8:1::1";
const HOA: &str = "2001:db8:1::100";
const COA: &str = "2001:db8:2::100";
const CN: &str = "2001:db8:1::77";
const COA4: &str = "203.0.113.20";
const HA4: &str = "203.0.113.1";

fn v4(s: &str) -> [u8; 4] {
    s.parse::<Ipv4Addr>().unwrap().octets()
}

fn at(ms: u64) -> Timestamp {
    Timestamp(ms * 1_000_000)
}

fn node() -> MobileNode {
    let mut cfg = MnConfig::new(v6(HOA), v6(HA));
    cfg.home_agent_v4 = Some(v4(HA4));
    MobileNode::new(cfg)
}

/// The Binding Update a node at `COA` sends (RFC 6275 6.1.7, RFC 3776 3.1):
/// sequence number, A and H set, lifetime in 4 s units, then PadN(0) and
/// the Alternate Care-of Address option at 8n+6.
fn bu_v6(seq: u16, units: u16) -> Vec<u8> {
    let mut d = seq.to_be_bytes().to_vec();
    d.extend_from_slice(&[0xc0, 0x00]);
    d.extend_from_slice(&units.to_be_bytes());
    d.extend_from_slice(&[1, 0, 3, 16]);
    d.extend_from_slice(&v6(COA));
    mh_bytes(HOA, HA, 5, &d)
}

/// The next packet the protocol module sends, if any.
fn sent(mn: &mut MobileNode) -> Option<Vec<u8>> {
    let mut buf = PacketBuf::new();
    mn.poll_transmit(&mut buf).then(|| buf.data().to_vec())
}

/// `pkt` as IPsec delivers it, after the node's tunnel stage took the
/// ESP packet it came in under the SA with `spi`.
fn deliver_under(mn: &mut MobileNode, spi: u32, pkt: &[u8], now: Timestamp) -> Delivered {
    let mut esp = vec![0x60, 0, 0, 0, 0, 16, 50, 64];
    esp.extend_from_slice(&v6(HA));
    esp.extend_from_slice(&v6(HOA));
    esp.extend_from_slice(&spi.to_be_bytes());
    esp.extend_from_slice(&[0, 0, 0, 1, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a]);
    let mut buf = PacketBuf::from_slice(&esp);
    mn.handle_network(&SeedPolicy, &mut buf).unwrap();
    mn.handle_delivered(&PacketBuf::from_slice(pkt), now)
}

/// `pkt` as IPsec delivers it from the SA for Binding Acknowledgements.
fn deliver(mn: &mut MobileNode, pkt: &[u8], now: Timestamp) -> Delivered {
    deliver_under(mn, BA_SPI, pkt, now)
}

fn ba(status: u8, seq: u16, units: u16, opts: &[MhOption<'_>]) -> Vec<u8> {
    let msg = Message::BindingAck(BindingAck {
        status,
        key_mgmt_compat: false,
        seq,
        lifetime_units: units,
    });
    mh_packet(v6(HA), v6(HOA), &msg, opts)
}

fn events(mn: &mut MobileNode) -> Vec<MnEvent> {
    std::iter::from_fn(|| mn.poll_event()).collect()
}

/// A node registered at `COA` (BU 1 accepted with 105 units) at 1 s.
fn registered() -> MobileNode {
    let mut mn = node();
    mn.handle_move(Attachment::V6(v6(COA)), true, at(0));
    assert_eq!(sent(&mut mn).unwrap(), bu_v6(1, 105));
    assert_eq!(
        deliver(&mut mn, &ba(0, 1, 105, &[]), at(1000)),
        Delivered::Consumed
    );
    assert_eq!(mn.registered(), Some(Attachment::V6(v6(COA))));
    events(&mut mn);
    mn
}

fn be(from: &str, to: &str, status: u8, home: &str) -> Vec<u8> {
    let msg = Message::BindingError {
        status,
        home_address: v6(home),
    };
    mh_packet(v6(from), v6(to), &msg, &[])
}

/// RFC 6275 11.7.3 and 6.1.8: what the node does with each status of
/// the BA to its first registration. 0 registers; 1 registers and asks
/// for the prefixes (a Mobile Prefix Solicitation, 11.4.2); 135 goes on
/// from the home agent's number with a new BU; every refusal (128-134,
/// 136 and above) ends the attempt: nothing registered, nothing sent,
/// no retransmission armed.
#[test]
fn binding_ack_status_matrix() {
    let mut statuses = vec![0u8, 1];
    statuses.extend(128..=139);
    statuses.extend([174, 255]);
    for status in statuses {
        let mut mn = node();
        mn.handle_move(Attachment::V6(v6(COA)), true, at(0));
        assert_eq!(sent(&mut mn).unwrap(), bu_v6(1, 105), "status {status}");
        events(&mut mn);
        // For 135 the BA carries the home agent's last accepted number.
        let seq = if status == ba_status::SEQ_OUT_OF_WINDOW {
            700
        } else {
            1
        };
        let o = deliver(&mut mn, &ba(status, seq, 105, &[]), at(20));
        assert_eq!(o, Delivered::Consumed, "status {status}");
        let ev = events(&mut mn);
        match status {
            0 | 1 => {
                assert_eq!(mn.registered(), Some(Attachment::V6(v6(COA))));
                assert!(ev.contains(&MnEvent::Registered {
                    attachment: Attachment::V6(v6(COA)),
                    lifetime: Duration::from_secs(420),
                    nat: false,
                    home_v4: None,
                }));
                // Refresh at 80 % of the lifetime.
                assert_eq!(mn.poll_timeout(), Some(at(20 + 336_000)));
                if status == 1 {
                    // ICMPv6 146, code 0, checksum, identifier 1, reserved.
                    let mps = sent(&mut mn).unwrap();
                    assert_eq!(&mps[..8], &[0x60, 0, 0, 0, 0, 8, 58, 64]);
                    assert_eq!(&mps[8..40], &[v6(HOA), v6(HA)].concat()[..]);
                    assert_eq!(
                        (mps[40], mps[41], &mps[44..48]),
                        (146, 0, &[0, 1, 0, 0][..])
                    );
                }
                assert_eq!(sent(&mut mn), None, "status {status}");
            }
            135 => {
                assert_eq!(sent(&mut mn).unwrap(), bu_v6(701, 105));
                assert_eq!(mn.registering(), Some(Attachment::V6(v6(COA))));
                assert_eq!(mn.registered(), None);
            }
            _ => {
                assert_eq!(ev, vec![MnEvent::RegistrationFailed { status }]);
                assert_eq!(mn.registered(), None, "status {status}");
                assert_eq!(mn.registering(), None, "status {status}");
                assert_eq!(sent(&mut mn), None, "status {status}");
                assert_eq!(mn.poll_timeout(), None, "status {status}");
                assert_eq!(mn.counters().events(MobilityEvent::RegistrationFailed), 1);
            }
        }
    }
}

/// RFC 6275 11.7.3: a BA whose sequence number is not the BU's is not
/// for it: dropped and counted, the BU still retransmitted; a BA with no
/// BU in flight likewise.
#[test]
fn binding_ack_with_a_wrong_sequence_number_is_dropped() {
    let mut mn = node();
    mn.handle_move(Attachment::V6(v6(COA)), true, at(0));
    assert_eq!(sent(&mut mn).unwrap(), bu_v6(1, 105));
    for wrong in [0u16, 2, 0x8001] {
        assert_eq!(
            deliver(&mut mn, &ba(0, wrong, 105, &[]), at(10)),
            Delivered::Drop(MobilityDrop::UnexpectedBa)
        );
    }
    assert_eq!(mn.counters().drops(MobilityDrop::UnexpectedBa), 3);
    assert_eq!(mn.registered(), None);
    mn.handle_timeout(at(1500));
    assert_eq!(sent(&mut mn).unwrap(), bu_v6(2, 105));
    assert_eq!(
        deliver(&mut mn, &ba(0, 2, 105, &[]), at(1600)),
        Delivered::Consumed
    );
    assert_eq!(
        deliver(&mut mn, &ba(0, 2, 105, &[]), at(1700)),
        Delivered::Drop(MobilityDrop::UnexpectedBa),
        "no BU in flight"
    );
}

/// RFC 3776 4.1 and RFC 6275 11.7.3: a BA that IPsec delivered from
/// another SA than the one for BAs (here the payload SA, whose selectors
/// also cover it) registers nothing: dropped and counted, the BU still
/// retransmitted; taken from the SA for BAs it registers.
#[test]
fn binding_ack_from_the_wrong_sa_is_dropped() {
    let mut mn = node();
    mn.handle_move(Attachment::V6(v6(COA)), true, at(0));
    assert_eq!(sent(&mut mn).unwrap(), bu_v6(1, 105));
    assert_eq!(
        deliver_under(&mut mn, DATA_SPI, &ba(0, 1, 105, &[]), at(10)),
        Delivered::Drop(MobilityDrop::BaOutsideItsSa)
    );
    assert_eq!(mn.counters().drops(MobilityDrop::BaOutsideItsSa), 1);
    assert_eq!(mn.registered(), None);
    assert_eq!(mn.registering(), Some(Attachment::V6(v6(COA))));
    assert_eq!(sent(&mut mn), None);
    assert_eq!(
        deliver(&mut mn, &ba(0, 1, 105, &[]), at(20)),
        Delivered::Consumed
    );
    assert_eq!(mn.registered(), Some(Attachment::V6(v6(COA))));
}

/// RFC 6275 11.3.6: a Binding Error from the home agent (which is on the
/// Binding Update List) with status 1, to the care-of address or the
/// home address, says the home agent has no binding: the node registers
/// again at once (a BU with the next number, A and H set). It is taken,
/// never passed to the host.
#[test]
fn binding_error_status_1_from_the_home_agent_registers_again() {
    for to in [COA, HOA] {
        let mut mn = registered();
        let o = deliver(
            &mut mn,
            &be(HA, to, be_status::UNKNOWN_HAO_BINDING, HOA),
            at(5000),
        );
        assert_eq!(o, Delivered::Consumed, "to {to}");
        assert_eq!(sent(&mut mn).unwrap(), bu_v6(2, 105), "to {to}");
        assert_eq!(sent(&mut mn), None);
        assert_eq!(
            events(&mut mn),
            vec![
                MnEvent::BindingError { status: 1 },
                MnEvent::BindingUpdateSent {
                    attachment: Attachment::V6(v6(COA)),
                    seq: 2,
                    retransmission: false,
                }
            ]
        );
        assert_eq!(mn.counters().events(MobilityEvent::BeReceived), 1);
    }
}

/// RFC 6275 11.3.6: status 2 (the home agent did not know an MH type the
/// node sent) is taken and noted; the registration stands and nothing is
/// sent. A status 1 about another home address moves nothing either.
#[test]
fn binding_error_status_2_from_the_home_agent_is_taken_and_noted() {
    let mut mn = registered();
    let o = deliver(
        &mut mn,
        &be(HA, COA, be_status::UNKNOWN_MH_TYPE, HOA),
        at(5000),
    );
    assert_eq!(o, Delivered::Consumed);
    assert_eq!(sent(&mut mn), None);
    assert_eq!(events(&mut mn), vec![MnEvent::BindingError { status: 2 }]);
    assert_eq!(mn.registered(), Some(Attachment::V6(v6(COA))));
    let o = deliver(
        &mut mn,
        &be(HA, COA, be_status::UNKNOWN_HAO_BINDING, "2001:db8:1::200"),
        at(5100),
    );
    assert_eq!(o, Delivered::Consumed);
    assert_eq!(sent(&mut mn), None);
}

/// RFC 6275 11.3.6: a Binding Error from a node the mobile node has no
/// Binding Update List entry for (a correspondent; or the home agent
/// while the node is home and registers nothing) is ignored: dropped and
/// counted, nothing sent, never passed to the host.
#[test]
fn binding_error_without_an_update_list_entry_is_ignored() {
    let mut mn = registered();
    for status in [1, 2] {
        for to in [COA, HOA] {
            assert_eq!(
                deliver(&mut mn, &be(CN, to, status, HOA), at(5000)),
                Delivered::Drop(MobilityDrop::NoBindingUpdateListEntry)
            );
        }
    }
    assert_eq!(sent(&mut mn), None);
    assert_eq!(mn.registered(), Some(Attachment::V6(v6(COA))));
    let mut home = node();
    assert_eq!(
        deliver(&mut home, &be(HA, HOA, 1, HOA), at(0)),
        Delivered::Drop(MobilityDrop::NoBindingUpdateListEntry)
    );
    assert_eq!(sent(&mut home), None);
    assert_eq!(
        mn.counters().drops(MobilityDrop::NoBindingUpdateListEntry),
        4
    );
    assert_eq!(mn.counters().events(MobilityEvent::BeReceived), 0);
}

/// RFC 6275 11.7.4 and 6.1.2: a Binding Refresh Request from the home
/// agent is answered with a Binding Update (the next sequence number, A
/// and H set, the configured lifetime) and taken, not passed to the host;
/// its BA refreshes the registration. From a node without a Binding
/// Update List entry it is ignored.
#[test]
fn binding_refresh_request_is_answered_with_a_binding_update() {
    let mut mn = registered();
    let brr = mh_bytes(HA, HOA, 0, &[0, 0]);
    assert_eq!(deliver(&mut mn, &brr, at(60_000)), Delivered::Consumed);
    assert_eq!(sent(&mut mn).unwrap(), bu_v6(2, 105));
    assert_eq!(mn.counters().events(MobilityEvent::BrrAnswered), 1);
    assert!(events(&mut mn).contains(&MnEvent::RefreshRequested));
    // A second request while that BU is in flight: the BU answers both.
    assert_eq!(deliver(&mut mn, &brr, at(60_100)), Delivered::Consumed);
    assert_eq!(sent(&mut mn), None);
    assert_eq!(
        deliver(&mut mn, &ba(0, 2, 105, &[]), at(60_200)),
        Delivered::Consumed
    );
    assert_eq!(mn.poll_timeout(), Some(at(60_200 + 336_000)));
    let from_cn = mh_bytes(CN, HOA, 0, &[0, 0]);
    assert_eq!(
        deliver(&mut mn, &from_cn, at(61_000)),
        Delivered::Drop(MobilityDrop::NoBindingUpdateListEntry)
    );
    let mut home = node();
    assert_eq!(
        deliver(&mut home, &brr, at(0)),
        Delivered::Drop(MobilityDrop::NoBindingUpdateListEntry)
    );
    assert_eq!(sent(&mut mn), None);
    assert_eq!(sent(&mut home), None);
}

/// RFC 6275 11.8 and 12: after the first registration (which starts at
/// InitialBindackTimeoutFirstReg, 1.5 s), a BU left unanswered goes again
/// after INITIAL_BINDACK_TIMEOUT (1 s), then 2, 4, 8, 16 and 32 s, where
/// it stays (MAX_BINDACK_TIMEOUT), each time with the next number.
#[test]
fn retransmission_starts_at_1s_and_doubles_up_to_32s() {
    let mut mn = registered();
    mn.handle_move(Attachment::V6(v6("2001:db8:3::100")), true, at(10_000));
    let first = sent(&mut mn).unwrap();
    assert_eq!(u16::from_be_bytes([first[46], first[47]]), 2);
    let mut times = Vec::new();
    for seq in 3..=10u16 {
        let t = mn.poll_timeout().unwrap();
        mn.handle_timeout(t);
        times.push(t.saturating_since(at(10_000)).as_millis());
        let p = sent(&mut mn).unwrap();
        // The same BU each time but for its number (and checksum).
        assert_eq!(u16::from_be_bytes([p[46], p[47]]), seq);
        assert_eq!((&p[..44], &p[48..]), (&first[..44], &first[48..]));
        assert_eq!(sent(&mut mn), None);
    }
    let gaps: Vec<u128> = times
        .iter()
        .scan(0, |last, t| {
            let gap = t - *last;
            *last = *t;
            Some(gap)
        })
        .collect();
    assert_eq!(
        gaps,
        vec![1000, 2000, 4000, 8000, 16000, 32000, 32000, 32000]
    );
    assert_eq!(mn.counters().events(MobilityEvent::BuRetransmitted), 8);
}

/// RFC 6275 9.5.1: sequence numbers are modulo 2^16: after 65535 comes 0
/// (here reached through a BA with status 135 carrying 65535), and a BA
/// for 0 is the right one.
#[test]
fn sequence_number_wraps_from_65535_to_0() {
    let mut mn = node();
    mn.handle_move(Attachment::V6(v6(COA)), true, at(0));
    assert_eq!(sent(&mut mn).unwrap(), bu_v6(1, 105));
    deliver(
        &mut mn,
        &ba(ba_status::SEQ_OUT_OF_WINDOW, 65535, 0, &[]),
        at(10),
    );
    assert_eq!(sent(&mut mn).unwrap(), bu_v6(0, 105));
    assert_eq!(
        deliver(&mut mn, &ba(0, 65535, 105, &[]), at(20)),
        Delivered::Drop(MobilityDrop::UnexpectedBa)
    );
    assert_eq!(
        deliver(&mut mn, &ba(0, 0, 105, &[]), at(30)),
        Delivered::Consumed
    );
    assert_eq!(mn.registered(), Some(Attachment::V6(v6(COA))));
    mn.refresh(at(40));
    assert_eq!(sent(&mut mn).unwrap(), bu_v6(1, 105));
}

/// RFC 6275 11.7.1: a refresh goes out before the lifetime ends (at 80 %);
/// if no BA answers any of its retransmissions, the registration ends
/// with its lifetime, and the BU goes on being retransmitted.
#[test]
fn lifetime_expiry_without_a_refresh_ends_the_registration() {
    let mut mn = node();
    mn.handle_move(Attachment::V6(v6(COA)), true, at(0));
    sent(&mut mn).unwrap();
    // The home agent grants 2 units (8 s).
    deliver(&mut mn, &ba(0, 1, 2, &[]), at(1000));
    assert_eq!(mn.poll_timeout(), Some(at(1000 + 6400)));
    mn.handle_timeout(at(7400));
    assert_eq!(sent(&mut mn).unwrap(), bu_v6(2, 105), "the refresh");
    let mut last = 2;
    while let Some(t) = mn.poll_timeout().filter(|t| *t < at(9000)) {
        mn.handle_timeout(t);
        if let Some(p) = sent(&mut mn) {
            last += 1;
            assert_eq!(p, bu_v6(last, 105));
        }
        assert_eq!(mn.registered(), Some(Attachment::V6(v6(COA))), "at {t:?}");
    }
    mn.handle_timeout(at(9000));
    assert_eq!(mn.registered(), None, "lifetime over");
    assert_eq!(mn.registering(), Some(Attachment::V6(v6(COA))));
    let t = mn.poll_timeout().unwrap();
    mn.handle_timeout(t);
    assert_eq!(sent(&mut mn).unwrap(), bu_v6(last + 1, 105));
}

/// RFC 5555 3.2.1 and 4.1: the IPv4 Address Acknowledgement in the BA of
/// an IPv4 care-of address registration. Success gives the node its IPv4
/// home address (asked for with 0.0.0.0, and then by that address in the
/// next BU); each failure status (128-133) is reported and leaves it
/// without one, while the IPv6 registration itself stands.
#[test]
fn ipv4_address_acknowledgement_statuses() {
    let mut statuses = vec![ipv4_ack_status::SUCCESS];
    statuses.extend(128..=133);
    for status in statuses {
        let mut cfg = MnConfig::new(v6(HOA), v6(HA));
        cfg.home_agent_v4 = Some(v4(HA4));
        cfg.home_v4 = Some([0; 4]);
        let mut mn = MobileNode::new(cfg);
        mn.handle_move(Attachment::V4(v4(COA4)), true, at(0));
        // BU, then IPv4 Care-of Address (type 32, 4n) and IPv4 Home
        // Address 0.0.0.0 (type 29, 4n), then PadN to 8n.
        let bu = |seq: u16, home4: [u8; 4]| {
            let mut d = seq.to_be_bytes().to_vec();
            d.extend_from_slice(&[0xc0, 0, 0, 105, 32, 6, 0, 0]);
            d.extend_from_slice(&v4(COA4));
            d.extend_from_slice(&[29, 6, 0, 0]);
            d.extend_from_slice(&home4);
            d.extend_from_slice(&[1, 2, 0, 0]);
            mh_bytes(HOA, HA, 5, &d)
        };
        assert_eq!(sent(&mut mn).unwrap(), bu(1, [0; 4]));
        let given = v4("192.0.2.100");
        let ack = MhOption::Ipv4AddressAck {
            status,
            prefix_len: 24,
            addr: if status == 0 { given } else { [0; 4] },
        };
        assert_eq!(
            deliver(&mut mn, &ba(0, 1, 105, &[ack]), at(10)),
            Delivered::Consumed
        );
        assert_eq!(mn.registered(), Some(Attachment::V4(v4(COA4))));
        let ev = events(&mut mn);
        if status == 0 {
            assert_eq!(mn.home_v4(), Some(given));
            assert!(!ev
                .iter()
                .any(|e| matches!(e, MnEvent::HomeV4Refused { .. })));
            mn.refresh(at(20));
            assert_eq!(sent(&mut mn).unwrap(), bu(2, given));
        } else {
            assert_eq!(mn.home_v4(), None, "status {status}");
            assert!(ev.contains(&MnEvent::HomeV4Refused { status }));
        }
    }
}

/// A BU from `HOA` to `HA` for the IPv6 care-of address `coa`: sequence
/// number, `flags` (the high octet of the flags word: 0xc0 is A and H,
/// 0xd0 adds K), lifetime, PadN(0) and the Alternate Care-of Address.
fn bu_v6_flags(seq: u16, flags: u8, units: u16, coa: &str) -> Vec<u8> {
    let mut d = seq.to_be_bytes().to_vec();
    d.extend_from_slice(&[flags, 0x00]);
    d.extend_from_slice(&units.to_be_bytes());
    d.extend_from_slice(&[1, 0, 3, 16]);
    d.extend_from_slice(&v6(coa));
    mh_bytes(HOA, HA, 5, &d)
}

/// A BA from `HA` to `HOA`, status 0: `flags` (0x80 is K), sequence
/// number, lifetime, PadN(2).
fn ba_flags(flags: u8, seq: u16, units: u16) -> Vec<u8> {
    let mut d = vec![0, flags];
    d.extend_from_slice(&seq.to_be_bytes());
    d.extend_from_slice(&units.to_be_bytes());
    d.extend_from_slice(&[1, 2, 0, 0]);
    mh_bytes(HA, HOA, 6, &d)
}

fn key_management(mn: &mut MobileNode) -> Vec<KeyManagement> {
    std::iter::from_fn(|| mn.poll_key_management()).collect()
}

/// RFC 6275 6.1.7, 11.7.1, 11.7.3 (and RFC 4877 4.4): a node whose IKE SA
/// survives movement sets K in its Binding Updates once that IKE SA
/// exists; a BA with K moves the IKE SA to the new care-of address, a BA
/// without it has the IKE SA established again from there; a refresh
/// moves nothing; at home K is cleared; a node configured without it never
/// sets K.
#[test]
fn rfc6275_11_7_k_bit_in_binding_updates_and_the_reaction_to_the_ba() {
    const COA2: &str = "2001:db8:3::100";
    let home = v6(HOA);
    let mut cfg = MnConfig::new(v6(HOA), v6(HA));
    cfg.home_agent_v4 = Some(v4(HA4));
    cfg.key_management_mobility = true;
    let mut mn = MobileNode::new(cfg);
    // No IKE SA yet: no K.
    mn.handle_move(Attachment::V6(v6(COA)), true, at(0));
    assert_eq!(sent(&mut mn).unwrap(), bu_v6_flags(1, 0xc0, 105, COA));
    deliver(&mut mn, &ba_flags(0, 1, 105), at(100));
    assert_eq!(mn.registered(), Some(Attachment::V6(v6(COA))));
    assert!(key_management(&mut mn).is_empty());
    // The IKE SA exists: K, and the home agent's K moves it.
    mn.set_ike_sa(true);
    mn.handle_move(Attachment::V6(v6(COA2)), true, at(200));
    assert_eq!(sent(&mut mn).unwrap(), bu_v6_flags(2, 0xd0, 105, COA2));
    deliver(&mut mn, &ba_flags(0x80, 2, 105), at(300));
    assert_eq!(mn.registered(), Some(Attachment::V6(v6(COA2))));
    assert_eq!(
        key_management(&mut mn),
        [KeyManagement::Move {
            home,
            home_agent: HA.parse().unwrap(),
            care_of: COA2.parse().unwrap()
        }]
    );
    // A refresh of the same care-of address moves nothing.
    mn.refresh(at(400));
    assert_eq!(sent(&mut mn).unwrap(), bu_v6_flags(3, 0xd0, 105, COA2));
    deliver(&mut mn, &ba_flags(0x80, 3, 105), at(500));
    assert!(key_management(&mut mn).is_empty());
    // To an IPv4 care-of address (RFC 5555) with a home agent whose key
    // management does not move: the IKE SA is established again.
    mn.handle_move(Attachment::V4(v4(COA4)), true, at(600));
    let bu = sent(&mut mn).unwrap();
    assert_eq!(bu[40 + 8], 0xd0, "A, H and K: {bu:02x?}");
    deliver(&mut mn, &ba_flags(0, 4, 105), at(700));
    assert_eq!(mn.registered(), Some(Attachment::V4(v4(COA4))));
    assert_eq!(
        key_management(&mut mn),
        [KeyManagement::Reestablish {
            home,
            home_agent: HA4.parse().unwrap(),
            care_of: COA4.parse().unwrap()
        }]
    );
    // At home K is cleared: nothing moves to the home address.
    mn.handle_move(Attachment::Home, false, at(800));
    let bu = sent(&mut mn).unwrap();
    assert_eq!(bu[40 + 8], 0xc0, "A and H alone: {bu:02x?}");
    deliver(&mut mn, &ba_flags(0, 5, 0), at(900));
    assert!(key_management(&mut mn).is_empty());
    // Configured without it, no K even with the IKE SA up.
    let mut plain = node();
    plain.set_ike_sa(true);
    plain.handle_move(Attachment::V6(v6(COA)), true, at(0));
    assert_eq!(sent(&mut plain).unwrap(), bu_v6_flags(1, 0xc0, 105, COA));
    deliver(&mut plain, &ba_flags(0x80, 1, 105), at(100));
    assert!(key_management(&mut plain).is_empty());
}

/// A BA with K from `HA` to `HOA`, status 0, with the NAT Detection
/// option (RFC 5555 3.2.2: F clear, refresh time 110 s) and PadN(2).
fn ba_k_nat_detection(seq: u16, units: u16) -> Vec<u8> {
    let mut d = vec![0, 0x80];
    d.extend_from_slice(&seq.to_be_bytes());
    d.extend_from_slice(&units.to_be_bytes());
    d.extend_from_slice(&[31, 6, 0, 0]);
    d.extend_from_slice(&110u32.to_be_bytes());
    d.extend_from_slice(&[1, 2, 0, 0]);
    mh_bytes(HA, HOA, 6, &d)
}

/// A registration over UDP (the BA's NAT Detection option: the care-of
/// address behind a NAT, RFC 5555 4.1) has the IKE SA established again
/// even with K in both the BU and the BA: the IKE SA's NAT state and the
/// NAT's port for its IKE come only from an exchange (RFC 7296 2.23), and
/// the home agent reports no move for it either (`crate::keying`).
#[test]
fn with_k_a_registration_behind_a_nat_has_the_ike_sa_established_again() {
    let mut cfg = MnConfig::new(v6(HOA), v6(HA));
    cfg.home_agent_v4 = Some(v4(HA4));
    cfg.key_management_mobility = true;
    let mut mn = MobileNode::new(cfg);
    mn.set_ike_sa(true);
    mn.handle_move(Attachment::V6(v6(COA)), true, at(0));
    assert_eq!(sent(&mut mn).unwrap(), bu_v6_flags(1, 0xd0, 105, COA));
    deliver(&mut mn, &ba_flags(0x80, 1, 105), at(100));
    assert!(matches!(
        key_management(&mut mn)[..],
        [KeyManagement::Move { .. }]
    ));
    mn.handle_move(Attachment::V4(v4(COA4)), true, at(200));
    let bu = sent(&mut mn).unwrap();
    assert_eq!(bu[40 + 8], 0xd0, "A, H and K: {bu:02x?}");
    deliver(&mut mn, &ba_k_nat_detection(2, 105), at(300));
    assert_eq!(mn.registered(), Some(Attachment::V4(v4(COA4))));
    assert!(mn.behind_nat());
    assert_eq!(
        key_management(&mut mn),
        [KeyManagement::Reestablish {
            home: v6(HOA),
            home_agent: HA4.parse().unwrap(),
            care_of: COA4.parse().unwrap()
        }]
    );
}

/// RFC 4877 4.4: IKE between the home agent and the node's care-of
/// addresses (IPv6, and IPv4 on either port) is never a tunnel's packet:
/// the tunnel stage passes it on unchanged, counting nothing (the
/// appliance's host stack takes it before the stage).
#[test]
fn the_tunnel_stage_never_takes_ike_to_a_care_of_address() {
    let mut mn = registered();
    for (attachment, pkt) in [
        (Attachment::V6(v6(COA)), common::ike(HA, COA, 500, 500)),
        (Attachment::V4(v4(COA4)), common::ike(HA4, COA4, 4500, 4500)),
        (Attachment::V4(v4(COA4)), common::ike(HA4, COA4, 500, 500)),
    ] {
        mn.handle_move(attachment, true, at(2000));
        let mut buf = PacketBuf::from_slice(&pkt);
        assert_eq!(mn.handle_network(&SeedPolicy, &mut buf), Ok(()));
        assert_eq!(buf.data(), &pkt[..], "passed on unchanged");
    }
    assert_eq!(mn.counters().total_drops(), 0);
    assert_eq!(mn.counters().events(MobilityEvent::Decapsulated), 0);
}
