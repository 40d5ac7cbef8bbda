//! Traffic Selector payloads (RFC 7296 3.13) and their narrowing (2.9).

use super::header::read_u16;
use super::WireError;
use bitsgw_wire::proto;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Traffic selector types (RFC 7296 3.13.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TsType {
    /// TS_IPV4_ADDR_RANGE (7).
    Ipv4Range,
    /// TS_IPV6_ADDR_RANGE (8).
    Ipv6Range,
}

/// One traffic selector: an address range, an IP protocol (0: any) and a
/// port range (RFC 7296 3.13.1).
///
/// ICMP and ICMPv6 type and code, and the Mobility Header's message type,
/// travel in the port fields (RFC 4301 4.4.1.1, RFC 7296 3.13.1): each
/// port is one 16-bit number with the type in its most significant eight
/// bits and the ICMP code, or for the MH zero, in the least significant
/// eight. A range of such numbers is then a range of types (and codes),
/// so narrowing (2.9) intersects them as it does ports. strongSwan
/// encodes ICMP and ICMPv6 this way (its selector constructor,
/// `traffic_selector_create`, moves a type given as a port below 256 into
/// the high octet) but not the MH: its swanctl configuration writes an MH
/// type as that 16-bit number (`[mobility-header/1280]` for type 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TrafficSelector {
    /// IP protocol, 0 for any.
    pub protocol: u8,
    /// First port.
    pub start_port: u16,
    /// Last port.
    pub end_port: u16,
    /// First address.
    pub start: IpAddr,
    /// Last address (same family as `start`).
    pub end: IpAddr,
}

impl TrafficSelector {
    /// Every address of a prefix, any protocol and port.
    pub fn prefix(addr: IpAddr, len: u8) -> TrafficSelector {
        let (start, end) = match addr {
            IpAddr::V4(a) => {
                let bits = u32::from(a);
                let host = u32::MAX.checked_shr(u32::from(len.min(32))).unwrap_or(0);
                (
                    IpAddr::V4(Ipv4Addr::from(bits & !host)),
                    IpAddr::V4(Ipv4Addr::from(bits | host)),
                )
            }
            IpAddr::V6(a) => {
                let bits = u128::from(a);
                let host = u128::MAX.checked_shr(u32::from(len.min(128))).unwrap_or(0);
                (
                    IpAddr::V6(Ipv6Addr::from(bits & !host)),
                    IpAddr::V6(Ipv6Addr::from(bits | host)),
                )
            }
        };
        TrafficSelector {
            protocol: 0,
            start_port: 0,
            end_port: u16::MAX,
            start,
            end,
        }
    }

    /// The same addresses, the Mobility Header (RFC 6275 6.1.1) of message
    /// types `lo` to `hi` only: `lo` in the most significant eight bits of
    /// the start port, `hi` in those of the end port, the others zero (RFC
    /// 7296 3.13.1, RFC 4301 4.4.1.1). RFC 4877 selects Binding Updates (5)
    /// and Acknowledgements (6) this way for their transport-mode SAs.
    pub fn with_mh_types(self, lo: u8, hi: u8) -> TrafficSelector {
        TrafficSelector {
            protocol: proto::MH,
            start_port: u16::from(lo) << 8,
            end_port: u16::from(hi) << 8,
            ..self
        }
    }

    /// The same addresses, ICMP or ICMPv6 (`protocol`) of types `types`
    /// and codes `codes` (RFC 4301 4.4.1.1: a single type with a range of
    /// codes, or a range of types with every code): the type in the most
    /// significant eight bits of each port, the code in the least (RFC
    /// 7296 3.13.1). A range of types with only some codes has no such
    /// encoding; it is widened to every code of those types.
    pub fn with_icmp(self, protocol: u8, types: (u8, u8), codes: (u8, u8)) -> TrafficSelector {
        let (codes_lo, codes_hi) = if types.0 == types.1 { codes } else { (0, 0xff) };
        TrafficSelector {
            protocol,
            start_port: u16::from(types.0) << 8 | u16::from(codes_lo),
            end_port: u16::from(types.1) << 8 | u16::from(codes_hi),
            ..self
        }
    }

    /// The Mobility Header types it selects, lowest and highest, if it is
    /// of the MH (all of them for the full port range).
    pub fn mh_types(&self) -> Option<(u8, u8)> {
        (self.protocol == proto::MH).then(|| {
            let [lo, _] = self.start_port.to_be_bytes();
            let [hi, _] = self.end_port.to_be_bytes();
            (lo, hi)
        })
    }

    /// Its type.
    pub fn ts_type(&self) -> TsType {
        match self.start {
            IpAddr::V4(_) => TsType::Ipv4Range,
            IpAddr::V6(_) => TsType::Ipv6Range,
        }
    }

    fn len(&self) -> usize {
        match self.ts_type() {
            TsType::Ipv4Range => 16,
            TsType::Ipv6Range => 40,
        }
    }

    /// Whether it selects nothing (a start after its end).
    pub fn is_empty(&self) -> bool {
        self.start_port > self.end_port || addr_bits(self.start) > addr_bits(self.end)
    }

    /// The selector both `self` and `other` select, if any (RFC 7296 2.9:
    /// the responder narrows to a subset of what was proposed).
    pub fn intersect(&self, other: &TrafficSelector) -> Option<TrafficSelector> {
        if self.ts_type() != other.ts_type() {
            return None;
        }
        let protocol = match (self.protocol, other.protocol) {
            (0, p) | (p, 0) => p,
            (a, b) if a == b => a,
            _ => return None,
        };
        let start = if addr_bits(self.start) >= addr_bits(other.start) {
            self.start
        } else {
            other.start
        };
        let end = if addr_bits(self.end) <= addr_bits(other.end) {
            self.end
        } else {
            other.end
        };
        let ts = TrafficSelector {
            protocol,
            start_port: self.start_port.max(other.start_port),
            end_port: self.end_port.min(other.end_port),
            start,
            end,
        };
        (!ts.is_empty()).then_some(ts)
    }

    /// Whether everything `self` selects `other` selects too.
    pub fn is_subset_of(&self, other: &TrafficSelector) -> bool {
        self.intersect(other) == Some(*self)
    }

    /// Parses a TSi/TSr payload body.
    pub fn parse_payload(b: &[u8]) -> Result<Vec<TrafficSelector>, WireError> {
        if b.len() < 4 {
            return Err(WireError::Truncated("TS payload"));
        }
        let count = b[0] as usize;
        let mut rest = &b[4..];
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            if rest.len() < 8 {
                return Err(WireError::Truncated("traffic selector"));
            }
            let len = read_u16(&rest[2..]) as usize;
            let alen = match (rest[0], len) {
                (7, 16) => 4,
                (8, 40) => 16,
                (7 | 8, _) => return Err(WireError::BadLength("traffic selector")),
                _ => return Err(WireError::Invalid("traffic selector type")),
            };
            let Some(ts) = rest.get(..len) else {
                return Err(WireError::Truncated("traffic selector"));
            };
            let addr = |at: usize| -> IpAddr {
                if alen == 4 {
                    IpAddr::V4(Ipv4Addr::new(ts[at], ts[at + 1], ts[at + 2], ts[at + 3]))
                } else {
                    let mut a = [0u8; 16];
                    a.copy_from_slice(&ts[at..at + 16]);
                    IpAddr::V6(Ipv6Addr::from(a))
                }
            };
            out.push(TrafficSelector {
                protocol: ts[1],
                start_port: read_u16(&ts[4..]),
                end_port: read_u16(&ts[6..]),
                start: addr(8),
                end: addr(8 + alen),
            });
            rest = &rest[len..];
        }
        if !rest.is_empty() {
            return Err(WireError::BadLength("TS payload"));
        }
        Ok(out)
    }

    /// Octets of a TSi/TSr payload body holding `list`.
    pub fn payload_len(list: &[TrafficSelector]) -> usize {
        4 + list.iter().map(TrafficSelector::len).sum::<usize>()
    }

    /// Writes a TSi/TSr payload body of exactly [`Self::payload_len`].
    pub fn emit_payload(list: &[TrafficSelector], buf: &mut [u8]) {
        buf[0] = u8::try_from(list.len()).unwrap_or(u8::MAX);
        buf[1..4].fill(0);
        let mut at = 4;
        for ts in list {
            let len = ts.len();
            let o = &mut buf[at..at + len];
            o[0] = match ts.ts_type() {
                TsType::Ipv4Range => 7,
                TsType::Ipv6Range => 8,
            };
            o[1] = ts.protocol;
            o[2..4].copy_from_slice(&u16::try_from(len).unwrap_or(0).to_be_bytes());
            o[4..6].copy_from_slice(&ts.start_port.to_be_bytes());
            o[6..8].copy_from_slice(&ts.end_port.to_be_bytes());
            let half = (len - 8) / 2;
            write_addr(ts.start, &mut o[8..8 + half]);
            write_addr(ts.end, &mut o[8 + half..]);
            at += len;
        }
    }
}

fn write_addr(a: IpAddr, out: &mut [u8]) {
    match a {
        IpAddr::V4(a) => out.copy_from_slice(&a.octets()),
        // A v6 end with a v4 start (or the reverse) cannot be built by
        // parse; emit writes what fits so it never panics.
        IpAddr::V6(a) => {
            let o = a.octets();
            let n = out.len().min(16);
            out[..n].copy_from_slice(&o[16 - n..]);
        }
    }
}

fn addr_bits(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TS payload body for 192.0.2.0/24: one IPv4 range, any protocol,
    /// all ports.
    const TS_V4: [u8; 20] = [
        1, 0, 0, 0, 7, 0, 0, 16, 0, 0, 0xff, 0xff, 192, 0, 2, 0, 192, 0, 2, 255,
    ];

    #[test]
    fn parses_and_emits_an_ipv4_range() {
        let list = TrafficSelector::parse_payload(&TS_V4).unwrap();
        assert_eq!(
            list,
            vec![TrafficSelector::prefix("192.0.2.77".parse().unwrap(), 24)]
        );
        let mut out = [0u8; 20];
        TrafficSelector::emit_payload(&list, &mut out);
        assert_eq!(out, TS_V4);
    }

    #[test]
    fn ipv6_round_trips() {
        let list = vec![
            TrafficSelector::prefix("2001:db8:a::".parse().unwrap(), 48),
            TrafficSelector {
                protocol: 17,
                start_port: 500,
                end_port: 500,
                ..TrafficSelector::prefix("2001:db8::1".parse().unwrap(), 128)
            },
        ];
        let mut out = vec![0u8; TrafficSelector::payload_len(&list)];
        TrafficSelector::emit_payload(&list, &mut out);
        assert_eq!(TrafficSelector::parse_payload(&out).unwrap(), list);
    }

    #[test]
    fn narrows_to_the_intersection() {
        let wide = TrafficSelector::prefix("192.0.2.0".parse().unwrap(), 23);
        let narrow = TrafficSelector::prefix("192.0.3.0".parse().unwrap(), 25);
        assert_eq!(wide.intersect(&narrow), Some(narrow));
        assert!(narrow.is_subset_of(&wide));
        assert!(!wide.is_subset_of(&narrow));
        let other = TrafficSelector::prefix("198.51.100.0".parse().unwrap(), 24);
        assert_eq!(wide.intersect(&other), None);
        let tcp = TrafficSelector {
            protocol: 6,
            ..wide
        };
        let udp = TrafficSelector {
            protocol: 17,
            ..wide
        };
        assert_eq!(tcp.intersect(&udp), None);
        assert_eq!(wide.intersect(&tcp), Some(tcp));
        let v6 = TrafficSelector::prefix("2001:db8::".parse().unwrap(), 32);
        assert_eq!(wide.intersect(&v6), None);
    }

    /// A TS payload body for the Binding Updates of 2001:db8:1::100: one
    /// IPv6 range, protocol 135, ports 0x0500 to 0x0500.
    const TS_MH_BU: [u8; 44] = [
        1, 0, 0, 0, // one selector
        8, 135, 0, 40, // TS_IPV6_ADDR_RANGE, MH, length
        0x05, 0x00, 0x05, 0x00, // MH type 5 in the high octet of both ports
        0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x00, //
        0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x00,
    ];

    #[test]
    fn an_mh_type_selector_has_its_type_in_the_high_octet_of_the_ports() {
        let bu =
            TrafficSelector::prefix("2001:db8:1::100".parse().unwrap(), 128).with_mh_types(5, 5);
        let mut out = [0u8; 44];
        TrafficSelector::emit_payload(&[bu], &mut out);
        assert_eq!(out, TS_MH_BU);
        let back = TrafficSelector::parse_payload(&TS_MH_BU).unwrap();
        assert_eq!(back, vec![bu]);
        assert_eq!(back[0].mh_types(), Some((5, 5)));
        // strongSwan's [135/1280] is the same selector.
        assert_eq!((bu.start_port, bu.end_port), (1280, 1280));
    }

    #[test]
    fn mh_and_icmp_types_narrow_like_ports() {
        let hoa = TrafficSelector::prefix("2001:db8:1::100".parse().unwrap(), 128);
        let signalling = hoa.with_mh_types(5, 6);
        let bu = hoa.with_mh_types(5, 5);
        let hoti = hoa.with_mh_types(1, 1);
        assert_eq!(signalling.intersect(&bu), Some(bu));
        assert_eq!(bu.intersect(&hoti), None);
        // Any protocol narrows to the MH type asked for.
        assert_eq!(hoa.intersect(&bu), Some(bu));
        assert_eq!(hoa.mh_types(), None);
        assert_eq!(hoa.with_mh_types(0, 255).mh_types(), Some((0, 255)));
        // ICMPv6 146 (Mobile Prefix Solicitation), any code, against a
        // selector of type 146 code 0: the code narrows too.
        let mps = hoa.with_icmp(proto::ICMPV6, (146, 146), (0, 255));
        let mps0 = hoa.with_icmp(proto::ICMPV6, (146, 146), (0, 0));
        assert_eq!((mps.start_port, mps.end_port), (0x9200, 0x92ff));
        assert_eq!(mps.intersect(&mps0), Some(mps0));
        // An MH type never matches an ICMP type of the same number.
        assert_eq!(
            bu.intersect(&hoa.with_icmp(proto::ICMPV6, (5, 5), (0, 0))),
            None
        );
        // Types 1 to 2 with code 3 only: every code of those types.
        let wide = hoa.with_icmp(proto::ICMP, (1, 2), (3, 3));
        assert_eq!((wide.start_port, wide.end_port), (0x0100, 0x02ff));
    }

    #[test]
    fn refuses_bad_selectors() {
        let mut count = TS_V4;
        count[0] = 2;
        assert!(TrafficSelector::parse_payload(&count).is_err());
        let mut kind = TS_V4;
        kind[4] = 9;
        assert!(TrafficSelector::parse_payload(&kind).is_err());
        let mut len = TS_V4;
        len[7] = 40;
        assert!(TrafficSelector::parse_payload(&len).is_err());
        assert!(TrafficSelector::parse_payload(&TS_V4[..19]).is_err());
    }
}
