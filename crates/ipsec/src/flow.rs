//! Building the [`FlowKey`] a packet is matched on (RFC 4301 4.4.1.1).

use crate::sa::Direction;
use crate::selector::{proto, Addr, Family, FlowKey, NextLayer};
use bitsgw_wire::ip::{IpMeta, IpVersion};

/// Reads an address of `len` bytes at `range` of `pkt`.
pub(crate) fn read_addr(pkt: &[u8], version: IpVersion, at: core::ops::Range<usize>) -> Addr {
    let bytes = pkt.get(at).unwrap_or(&[]);
    match version {
        IpVersion::V4 => {
            let mut b = [0u8; 4];
            if bytes.len() == 4 {
                b.copy_from_slice(bytes);
            }
            Addr {
                family: Family::V4,
                bits: u128::from(u32::from_be_bytes(b)),
            }
        }
        IpVersion::V6 => {
            let mut b = [0u8; 16];
            if bytes.len() == 16 {
                b.copy_from_slice(bytes);
            }
            Addr {
                family: Family::V6,
                bits: u128::from_be_bytes(b),
            }
        }
    }
}

/// Source and destination addresses of a parsed packet.
pub(crate) fn addresses(pkt: &[u8], meta: &IpMeta) -> (Addr, Addr) {
    (
        read_addr(pkt, meta.version, meta.src_range()),
        read_addr(pkt, meta.version, meta.dst_range()),
    )
}

/// The flow key of `pkt` as seen by the SPD of `direction`: outbound, the
/// source is local; inbound, the destination is.
pub fn flow_key(pkt: &[u8], meta: &IpMeta, direction: Direction) -> FlowKey {
    let (src, dst) = addresses(pkt, meta);
    let upper = pkt.get(meta.header_len..meta.total_len).unwrap_or(&[]);
    let next = if meta.is_later_fragment() {
        NextLayer::Opaque
    } else {
        match meta.proto {
            proto::TCP | proto::UDP | proto::SCTP => match upper {
                [a, b, c, d, ..] => {
                    let sport = u16::from_be_bytes([*a, *b]);
                    let dport = u16::from_be_bytes([*c, *d]);
                    match direction {
                        Direction::Outbound => NextLayer::Ports {
                            local: sport,
                            remote: dport,
                        },
                        Direction::Inbound => NextLayer::Ports {
                            local: dport,
                            remote: sport,
                        },
                    }
                }
                _ => NextLayer::Opaque,
            },
            proto::ICMP | proto::ICMPV6 => match upper {
                [ty, code, ..] => NextLayer::Icmp {
                    ty: *ty,
                    code: *code,
                },
                _ => NextLayer::Opaque,
            },
            // RFC 6275 6.1.1: Payload Proto, Header Len, MH Type.
            proto::MH => match upper {
                [_, _, ty, ..] => NextLayer::Mh { ty: *ty },
                _ => NextLayer::Opaque,
            },
            _ => NextLayer::None,
        }
    };
    let (local, remote) = match direction {
        Direction::Outbound => (src, dst),
        Direction::Inbound => (dst, src),
    };
    FlowKey {
        local,
        remote,
        proto: meta.proto,
        next,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_ports_follow_direction() {
        let pkt = [
            0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 192, 0, 2, 1, 198, 51, 100, 2, 0x30, 0x39,
            0x00, 0x35, 0, 8, 0, 0,
        ];
        let meta = bitsgw_wire::ip::parse(&pkt).unwrap();
        let out = flow_key(&pkt, &meta, Direction::Outbound);
        assert_eq!(
            out.next,
            NextLayer::Ports {
                local: 12345,
                remote: 53
            }
        );
        assert_eq!(out.local.to_string(), "192.0.2.1");
        let inb = flow_key(&pkt, &meta, Direction::Inbound);
        assert_eq!(
            inb.next,
            NextLayer::Ports {
                local: 53,
                remote: 12345
            }
        );
        assert_eq!(inb.local.to_string(), "198.51.100.2");
    }

    #[test]
    fn truncated_transport_header_is_opaque() {
        let pkt = [
            0x45, 0, 0, 22, 0, 0, 0, 0, 64, 6, 0, 0, 192, 0, 2, 1, 198, 51, 100, 2, 0x30, 0x39,
        ];
        let meta = bitsgw_wire::ip::parse(&pkt).unwrap();
        assert_eq!(
            flow_key(&pkt, &meta, Direction::Outbound).next,
            NextLayer::Opaque
        );
    }
}
