//! The seeds' example configurations in policies/ load, their two sides
//! interoperate, and the query API gives the answers the seed draft's
//! tunnel stage relies on (which SPI protects the BU, which selectors stand
//! behind an SPI, what changes when an SA is replaced).
#![allow(clippy::unwrap_used)]

mod common;

use bitsgw_ipsec::sa::{Direction, Mode};
use bitsgw_ipsec::selector::{proto, AddrSel, FlowKey, NextLayer, ProtoSel, Range16};
use bitsgw_ipsec::{Disposition, DropReason, IpsecStage, StageConfig};
use bitsgw_wire::{PacketBuf, Timestamp};
use common::ip_packet;
use std::net::IpAddr;
use std::path::PathBuf;

const T0: Timestamp = Timestamp::ZERO;
const HOA: &str = "2001:db8:1::100";
const HA: &str = "2001:db8:1::1";
const CN: &str = "2001:db8:77::5";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn load(name: &str) -> IpsecStage {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../policies")
        .join(name);
    let set = common::policy_file(&path);
    let mut stage = IpsecStage::new(StageConfig::default());
    set.apply(&mut stage, T0).unwrap();
    stage
}

fn mh(src: &str, dst: &str, mh_type: u8) -> Vec<u8> {
    bitsgw_wire::craft::mh_packet(ip(src), ip(dst), mh_type)
}

fn icmpv6(src: &str, dst: &str, ty: u8) -> Vec<u8> {
    ip_packet(
        ip(src),
        ip(dst),
        proto::ICMPV6,
        &[ty, 0, 0, 0, 0, 1, 0, 0],
        false,
    )
}

fn udp(src: &str, dst: &str) -> Vec<u8> {
    common::udp_packet(ip(src), ip(dst), 40000, 40001, 50)
}

/// Sends `pkt` out of `from` and into `to`; returns the wire packet.
fn carry(from: &mut IpsecStage, to: &mut IpsecStage, pkt: &[u8]) -> Vec<u8> {
    let mut buf = PacketBuf::from_slice(pkt);
    assert_eq!(from.handle_outbound(&mut buf, T0), Disposition::Forward);
    let wire = buf.data().to_vec();
    assert_eq!(
        to.handle_inbound(&mut buf, T0),
        Disposition::Deliver,
        "{:?}",
        to.counters()
    );
    assert_eq!(buf.data(), pkt);
    wire
}

fn spi_of(wire: &[u8]) -> u32 {
    let meta = bitsgw_wire::ip::parse(wire).unwrap();
    assert_eq!(meta.proto, proto::ESP);
    let at = meta.header_len;
    u32::from_be_bytes(wire[at..at + 4].try_into().unwrap())
}

fn outbound_spi(stage: &IpsecStage, entry: &str) -> u32 {
    let q = stage.query();
    q.outbound_sa(q.spd_entry(Direction::Outbound, entry).unwrap())
        .unwrap()
        .spi
}

/// RFC 3776 draft 5.2: every class of traffic the examples protect goes
/// from the mobile node to the home agent and back under the SA the
/// examples name, in the mode they name.
#[test]
fn rfc3776_examples_protect_each_class_with_its_sa() {
    let mut mn = load("rfc3776-mn.json");
    let mut ha = load("rfc3776-ha.json");
    // (packet, MN entry, expected mode is tunnel)
    let mn_to_ha = [
        (mh(HOA, HA, 5), "bu-out", false),        // 5.2.1 BU
        (mh(HOA, CN, 1), "hoti-out", true),       // 5.2.2 HoTI
        (icmpv6(HOA, HA, 146), "mps-out", false), // 5.2.3 MPS
        (udp(HOA, CN), "payload-out", true),      // 5.2.4 payload
    ];
    for (pkt, entry, tunnel) in &mn_to_ha {
        let wire = carry(&mut mn, &mut ha, pkt);
        assert_eq!(spi_of(&wire), outbound_spi(&mn, entry), "{entry}");
        let info = ha.query().inbound_sa(spi_of(&wire)).unwrap();
        assert_eq!(matches!(info.mode, Mode::Tunnel { .. }), *tunnel, "{entry}");
        if *tunnel {
            // Tunnel mode between the home address and the home agent.
            assert_eq!(&wire[8..24], &ip6(HOA));
            assert_eq!(&wire[24..40], &ip6(HA));
        }
    }
    let ha_to_mn = [
        (mh(HA, HOA, 6), "ba-out"),
        (mh(CN, HOA, 3), "hot-out"),
        (icmpv6(HA, HOA, 147), "mpa-out"),
        (udp(CN, HOA), "payload-out"),
    ];
    for (pkt, entry) in &ha_to_mn {
        let wire = carry(&mut ha, &mut mn, pkt);
        assert_eq!(spi_of(&wire), outbound_spi(&ha, entry), "{entry}");
    }
    // Cleartext signalling is refused (RFC 3776 4.3).
    let mut buf = PacketBuf::from_slice(&mh(HOA, HA, 5));
    assert_eq!(
        ha.handle_inbound(&mut buf, T0),
        Disposition::Drop(DropReason::UnprotectedTraffic)
    );
}

fn ip6(s: &str) -> [u8; 16] {
    match ip(s) {
        IpAddr::V6(a) => a.octets(),
        IpAddr::V4(_) => panic!(),
    }
}

/// The seed draft's Req #3: the tunnel stage tells an ESP-protected BU from
/// ESP-protected data by asking which SPI protects the BU policy.
#[test]
fn query_tells_the_bu_spi_from_the_payload_spi() {
    let mut mn = load("dsmip-hostwide-mn.json");
    let q = mn.query();
    let bu_entry = q.spd_entry(Direction::Outbound, "bu-out").unwrap();
    let bu_spi = q.outbound_sa(bu_entry).unwrap().spi;
    let key = FlowKey {
        local: ip(HOA).into(),
        remote: ip(HA).into(),
        proto: proto::MH,
        next: NextLayer::Mh { ty: 5 },
    };
    assert_eq!(q.outbound_sa_for_flow(&key).unwrap().spi, bu_spi);
    // A BRR (MH type 0) is not a BU: host-wide, it falls to the payload entry.
    let brr = FlowKey {
        next: NextLayer::Mh { ty: 0 },
        ..key
    };
    let payload_spi = outbound_spi(&mn, "payload-out");
    assert_ne!(payload_spi, bu_spi);
    assert_eq!(
        mn.query().outbound_sa_for_flow(&brr).unwrap().spi,
        payload_spi
    );
    // On the wire, the BU's ESP packet carries the BU SPI and data the
    // payload SPI: exactly what the tunnel stage compares.
    let mut buf = PacketBuf::from_slice(&mh(HOA, HA, 5));
    assert_eq!(mn.handle_outbound(&mut buf, T0), Disposition::Forward);
    assert_eq!(spi_of(buf.data()), bu_spi);
    let mut buf = PacketBuf::from_slice(&udp(HOA, CN));
    assert_eq!(mn.handle_outbound(&mut buf, T0), Disposition::Forward);
    assert_eq!(spi_of(buf.data()), payload_spi);
}

/// The seed draft's Req #4: before IPsec, the home agent asks which
/// selectors stand behind a packet's SPI; the BU SA's are "MH BU from the
/// home address to the home agent".
#[test]
fn query_gives_the_selectors_behind_an_spi() {
    let mut mn = load("dsmip-hostwide-mn.json");
    let mut ha = load("dsmip-hostwide-ha.json");
    let wire = carry(&mut mn, &mut ha, &mh(HOA, HA, 5));
    let info = ha.query().inbound_sa(spi_of(&wire)).unwrap();
    assert_eq!(info.direction, Direction::Inbound);
    assert_eq!(info.selectors.len(), 1);
    let s = info.selectors[0];
    assert_eq!(s.remote, AddrSel::single(ip(HOA)));
    assert_eq!(s.local, AddrSel::single(ip(HA)));
    assert_eq!(s.proto, ProtoSel::Is(proto::MH));
    assert_eq!(s.mh_type, Range16::single(5));
    let entry = ha.spd(Direction::Inbound).get(info.spd_entries[0]).unwrap();
    assert_eq!(&*entry.name, "bu-in");
    // The payload SA's selectors are the home address alone.
    let data = carry(&mut mn, &mut ha, &udp(HOA, CN));
    let p = ha.query().inbound_sa(spi_of(&data)).unwrap();
    assert_eq!(p.selectors[0].remote, AddrSel::single(ip(HOA)));
    assert_eq!(p.selectors[0].local, AddrSel::Any);
    // A BA is refused by the home agent's own policy if it comes back in.
    assert!(ha.query().inbound_sa(0xdead).is_none());
}

/// Replacing an SA changes the generation and the answers; the SPD entry
/// stays the same.
#[test]
fn replacing_an_sa_changes_generation_and_spi() {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../policies/dsmip-hostwide-mn.json");
    let set = common::policy_file(&path);
    let mut mn = IpsecStage::new(StageConfig::default());
    set.apply(&mut mn, T0).unwrap();
    let gen = mn.query().generation();
    let old = outbound_spi(&mn, "bu-out");
    let mut sa1 = set.sas.iter().find(|s| s.name == "sa1").unwrap().clone();
    sa1.spi = 0x9999;
    mn.install_sa(sa1, T0).unwrap();
    assert_ne!(mn.query().generation(), gen);
    assert_eq!(outbound_spi(&mn, "bu-out"), 0x9999);
    assert_ne!(old, 0x9999);
    let mut buf = PacketBuf::from_slice(&mh(HOA, HA, 5));
    assert_eq!(mn.handle_outbound(&mut buf, T0), Disposition::Forward);
    assert_eq!(spi_of(buf.data()), 0x9999);
}

/// The host-wide and site-to-site pairs interoperate too.
#[test]
fn hostwide_and_site_to_site_pairs_interoperate() {
    let mut mn = load("dsmip-hostwide-mn.json");
    let mut ha = load("dsmip-hostwide-ha.json");
    carry(&mut mn, &mut ha, &mh(HOA, HA, 5));
    carry(&mut ha, &mut mn, &mh(HA, HOA, 6));
    carry(&mut mn, &mut ha, &mh(HOA, CN, 1));
    carry(&mut ha, &mut mn, &mh(CN, HOA, 3));
    carry(&mut mn, &mut ha, &udp(HOA, CN));
    carry(&mut ha, &mut mn, &udp(CN, HOA));
    carry(
        &mut mn,
        &mut ha,
        &common::udp_packet(ip("192.0.2.100"), ip("198.51.100.9"), 1, 2, 30),
    );
    let mut a = load("site-to-site-a.json");
    let mut b = load("site-to-site-b.json");
    for (s, d) in [
        ("192.0.2.10", "198.51.100.20"),
        ("2001:db8:a::10", "2001:db8:b::20"),
    ] {
        let w = carry(&mut a, &mut b, &common::udp_packet(ip(s), ip(d), 1, 2, 100));
        assert_eq!(w[0] >> 4, 4, "outer IPv4 for both families");
        carry(&mut b, &mut a, &common::udp_packet(ip(d), ip(s), 2, 1, 100));
    }
}
