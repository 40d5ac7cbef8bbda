//! The mobile node's tunnel stage on its own, over the query API: Req #3
//! of the seed (the Binding Update's ESP told from data by SPI) and the
//! fragments of ESP packets, which carry no SPI past the first. The IPsec
//! stage is stood in for by a fixed answer to the query API, the only door
//! the mobility crate has into it.
#![allow(clippy::unwrap_used)]

mod common;

use bitsgw_mobility::classify::{ClassifierMode, EspClass};
use bitsgw_mobility::tunnel::{MnPaths, MnTunnel, Path};
use bitsgw_wire::{craft, proto, PacketBuf};
use common::{v6, SeedPolicy, BU_SPI, DATA_SPI, HA, HOME};

const OLD_COA: &str = "2001:db8:2::100";
const NEW_COA: &str = "2001:db8:3::100";

/// Registered at the old care-of address, a Binding Update for the new one
/// in flight (make-before-break).
fn paths() -> MnPaths {
    MnPaths {
        home: v6(HOME),
        ha: v6(HA),
        ha_v4: None,
        active: Some(Path::V6 { coa: v6(OLD_COA) }),
        registering: Some(Path::V6 { coa: v6(NEW_COA) }),
        own_bu: true,
    }
}

/// An IPv6 packet from the home address to the home agent carrying
/// `upper` as `next`.
fn from_home(next: u8, upper: &[u8]) -> PacketBuf {
    let pkt = craft::ip_packet(v6(HOME).into(), v6(HA).into(), next, upper, false);
    PacketBuf::from_slice(&pkt)
}

fn esp(spi: u32) -> Vec<u8> {
    let mut e = spi.to_be_bytes().to_vec();
    e.extend_from_slice(&[0, 0, 0, 1]);
    e.extend_from_slice(&[0x5a; 40]);
    e
}

fn outbound(buf: &mut PacketBuf) -> Option<EspClass> {
    MnTunnel::default()
        .handle_outbound(&SeedPolicy, &paths(), ClassifierMode::Api, buf)
        .unwrap()
}

/// Req #3: the BU's ESP leaves by the care-of address being registered
/// (with a Home Address option: RFC 3776 3.1), data by the registered one.
#[test]
fn the_binding_update_leaves_by_the_new_care_of_address_and_data_by_the_old() {
    let mut bu = from_home(proto::ESP, &esp(BU_SPI));
    assert_eq!(outbound(&mut bu), Some(EspClass::BindingUpdate));
    assert_eq!(bu.data()[8..24], v6(NEW_COA));
    assert_eq!(bu.data()[6], proto::IPV6_DEST_OPTS, "Home Address option");
    let mut data = from_home(proto::ESP, &esp(DATA_SPI));
    assert_eq!(outbound(&mut data), Some(EspClass::Data));
    assert_eq!(data.data()[8..24], v6(OLD_COA));
    assert_eq!(data.data()[6], proto::ESP);
}

/// A fragment of an ESP packet other than the first has no ESP header
/// (RFC 8200 4.5): bytes that happen to read as the BU SA's SPI do not make
/// it a Binding Update. It is data, and follows the first fragment on the
/// registered path, with no Home Address option.
#[test]
fn a_later_fragment_of_esp_is_data_whatever_its_first_bytes() {
    // Fragment header: next header ESP, offset 1448 octets (181 units), M=0.
    let offset_field = (181u16 << 3).to_be_bytes();
    let mut later = vec![proto::ESP, 0, offset_field[0], offset_field[1], 0, 0, 0, 7];
    later.extend_from_slice(&esp(BU_SPI));
    let mut buf = from_home(proto::IPV6_FRAGMENT, &later);
    assert_eq!(outbound(&mut buf), Some(EspClass::Data));
    assert_eq!(buf.data()[8..24], v6(OLD_COA));
    assert_eq!(
        buf.data()[6],
        proto::IPV6_FRAGMENT,
        "no Home Address option"
    );
    // The first fragment has the ESP header and is classified by its SPI.
    let mut first = vec![proto::ESP, 0, 0, 1, 0, 0, 0, 7];
    first.extend_from_slice(&esp(DATA_SPI));
    let mut buf = from_home(proto::IPV6_FRAGMENT, &first);
    assert_eq!(outbound(&mut buf), Some(EspClass::Data));
    assert_eq!(buf.data()[8..24], v6(OLD_COA));
}
