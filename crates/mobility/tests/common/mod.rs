//! What the mobility crate's tests share: an IPsec stage stood in for by
//! fixed answers to the query API, the only door the crate has into it.
#![allow(dead_code)]

use bitsgw_ipsec_query::sa::{Direction, Mode, SaState};
use bitsgw_ipsec_query::selector::{FlowKey, NextLayer};
use bitsgw_ipsec_query::{IpsecQuery, SaView, SpdEntryId, SpdEntryView};
use bitsgw_wire::mh::{mh_checksum, mh_type};
use bitsgw_wire::proto;
use std::net::{IpAddr, Ipv6Addr};

pub const HOME: &str = "2001:db8:1::100";
pub const HA: &str = "2001:db8:1::1";
/// The SPI of the transport-mode SA that protects "MH BU from HoA to HA".
pub const BU_SPI: u32 = 0x1001;
/// The SPI of the transport-mode SA that protects "MH BA from HA to HoA".
pub const BA_SPI: u32 = 0x1002;
/// The SPI of the tunnel-mode SA that protects the payload.
pub const DATA_SPI: u32 = 0x1003;
/// Where the inbound entries "MH BA from HA" and "payload" stand.
const BA_ENTRY: usize = 1;
const PAYLOAD_ENTRY: usize = 3;

pub fn v6(s: &str) -> [u8; 16] {
    s.parse::<Ipv6Addr>().unwrap().octets()
}

/// An IPv6 packet from `src` to `dst` with a Mobility Header whose type
/// is `mh_type` and whose message data (after the checksum) is `data`,
/// spelled out here byte by byte rather than by the emitter under test.
pub fn mh_bytes(src: &str, dst: &str, mh_type: u8, data: &[u8]) -> Vec<u8> {
    let len = 6 + data.len();
    assert_eq!(len % 8, 0, "a Mobility Header is a multiple of 8 bytes");
    let mut mh = vec![59, u8::try_from(len / 8 - 1).unwrap(), mh_type, 0, 0, 0];
    mh.extend_from_slice(data);
    let sum = mh_checksum(&v6(src), &v6(dst), &mh);
    mh[4..6].copy_from_slice(&sum.to_be_bytes());
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&u16::try_from(len).unwrap().to_be_bytes());
    p.extend_from_slice(&[135, 64]);
    p.extend_from_slice(&v6(src));
    p.extend_from_slice(&v6(dst));
    p.extend_from_slice(&mh);
    p
}

/// The answers an IPsec stage with the seed's host-wide policy gives: BUs
/// from the home address to the home agent go under [`BU_SPI`], anything
/// else under [`DATA_SPI`]; inbound, BAs match the entry [`BA_SPI`]'s SA
/// serves, anything else the payload entry.
pub struct SeedPolicy;

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

    fn tunnel() -> Mode {
        Mode::Tunnel {
            local: IpAddr::from(v6(HOME)).into(),
            remote: IpAddr::from(v6(HA)).into(),
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
    fn lookup(&self, direction: Direction, key: &FlowKey) -> Option<SpdEntryId> {
        let ba = key.proto == proto::MH && key.next == NextLayer::Mh { ty: mh_type::BA };
        (direction == Direction::Inbound).then_some(SpdEntryId {
            direction,
            index: if ba { BA_ENTRY } else { PAYLOAD_ENTRY },
        })
    }
    fn outbound_sa(&self, _: SpdEntryId) -> Option<SaView<'_>> {
        None
    }
    fn outbound_sa_for_flow(&self, key: &FlowKey) -> Option<SaView<'_>> {
        Some(match key.next {
            NextLayer::Mh { ty } if ty == mh_type::BU && key.proto == proto::MH => {
                Self::sa(BU_SPI, Mode::Transport)
            }
            _ => Self::sa(DATA_SPI, Self::tunnel()),
        })
    }
    fn inbound_sa(&self, spi: u32) -> Option<SaView<'_>> {
        let (mode, entries): (Mode, &'static [usize]) = match spi {
            BA_SPI => (Mode::Transport, &[BA_ENTRY]),
            DATA_SPI => (Self::tunnel(), &[PAYLOAD_ENTRY]),
            _ => return None,
        };
        Some(SaView {
            direction: Direction::Inbound,
            spd_entries: entries,
            ..Self::sa(spi, mode)
        })
    }
    fn sa_by_name(&self, _: &str) -> Option<SaView<'_>> {
        None
    }
}

/// An IKE message over UDP from `src`:`sport` to `dst`:`dport`, behind the
/// non-ESP marker on port 4500 (RFC 3948 2.2).
pub fn ike(src: &str, dst: &str, sport: u16, dport: u16) -> Vec<u8> {
    let mut p = bitsgw_wire::craft::udp_packet(
        src.parse().unwrap(),
        dst.parse().unwrap(),
        sport,
        dport,
        40,
    );
    if dport == 4500 {
        let at = if p[0] >> 4 == 4 { 28 } else { 48 };
        p[at..at + 4].fill(0);
    }
    p
}
