//! Traffic Selector payloads (RFC 7296 3.13) and their narrowing (2.9).

use super::header::read_u16;
use super::WireError;
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
