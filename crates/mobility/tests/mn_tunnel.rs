//! The mobile node's tunnel stage on its own, over the query API: Req #3
//! of the seed (the Binding Update's ESP told from data by SPI) and the
//! fragments of ESP packets, which carry no SPI past the first. The IPsec
//! stage is stood in for by a fixed answer to the query API, the only door
//! the mobility crate has into it.
#![allow(clippy::unwrap_used)]

use bitsgw_ipsec_query::sa::{Direction, Mode, SaState};
use bitsgw_ipsec_query::selector::{FlowKey, NextLayer};
use bitsgw_ipsec_query::{IpsecQuery, SaView, SpdEntryId, SpdEntryView};
use bitsgw_mobility::classify::{ClassifierMode, EspClass};
use bitsgw_mobility::tunnel::{MnPaths, MnTunnel, Path};
use bitsgw_wire::mh::mh_type;
use bitsgw_wire::{craft, proto, PacketBuf};
use std::net::{IpAddr, Ipv6Addr};

const HOME: &str = "2001:db8:1::100";
const HA: &str = "2001:db8:1::1";
const OLD_COA: &str = "2001:db8:2::100";
const NEW_COA: &str = "2001:db8:3::100";
/// The SPI of the transport-mode SA that protects "MH BU from HoA to HA".
const BU_SPI: u32 = 0x1001;
/// The SPI of the tunnel-mode SA that protects the payload.
const DATA_SPI: u32 = 0x1003;

fn v6(s: &str) -> [u8; 16] {
    s.parse::<Ipv6Addr>().unwrap().octets()
}

/// The answers an IPsec stage with the seed's host-wide policy gives: BUs
/// from the home address to the home agent go under [`BU_SPI`], anything
/// else under [`DATA_SPI`].
struct SeedPolicy;

impl SeedPolicy {
    fn sa(spi: u32, mode: Mode) -> SaView<'static> {
        SaView {
            slot: spi as usize,
            name: "sa",
            spi,
            direction: Direction::Outbound,
            mode,
            udp_encap: None,
            selectors: &[],
            spd_entries: &[],
            state: SaState::Active,
        }
    }
}

impl IpsecQuery for SeedPolicy {
    fn generation(&self) -> u64 {
        1
    }
    fn spd_entry(&self, _: Direction, _: &str) -> Option<SpdEntryId> {
        None
    }
    fn entry(&self, _: SpdEntryId) -> Option<SpdEntryView<'_>> {
        None
    }
    fn lookup(&self, _: Direction, _: &FlowKey) -> Option<SpdEntryId> {
        None
    }
    fn outbound_sa(&self, _: SpdEntryId) -> Option<SaView<'_>> {
        None
    }
    fn outbound_sa_for_flow(&self, key: &FlowKey) -> Option<SaView<'_>> {
        Some(match key.next {
            NextLayer::Mh { ty } if ty == mh_type::BU && key.proto == proto::MH => {
                Self::sa(BU_SPI, Mode::Transport)
            }
            _ => Self::sa(
                DATA_SPI,
                Mode::Tunnel {
                    local: IpAddr::from(v6(HOME)).into(),
                    remote: IpAddr::from(v6(HA)).into(),
                },
            ),
        })
    }
    fn inbound_sa(&self, _: u32) -> Option<SaView<'_>> {
        None
    }
    fn sa_by_name(&self, _: &str) -> Option<SaView<'_>> {
        None
    }
}

/// Registered at the old care-of address, a Binding Update for the new one
/// in flight (make-before-break).
fn paths() -> MnPaths {
    MnPaths {
        home: v6(HOME),
        ha: v6(HA),
        ha_v4: None,
        active: Some(Path::V6 { coa: v6(OLD_COA) }),
        registering: Some(Path::V6 { coa: v6(NEW_COA) }),
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
